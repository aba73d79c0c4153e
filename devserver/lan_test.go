package devserver

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

func lanIPNet(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return n
}

func lanFakeIface(index int, name string, flags net.Flags, cidrs ...string) lanInterface {
	li := lanInterface{Name: name, Index: index, Flags: flags}
	for _, c := range cidrs {
		li.Addrs = append(li.Addrs, lanIPNet(c))
	}
	return li
}

func lanAddrStrings(addrs []LANAddr) []string {
	var out []string
	for _, a := range addrs {
		s := a.Interface + " " + a.IP.String()
		if a.Default {
			s += " default"
		}
		out = append(out, s)
	}
	return out
}

func TestLANOrderAddrs(t *testing.T) {
	up := net.FlagUp | net.FlagBroadcast | net.FlagMulticast
	ifaces := []lanInterface{
		lanFakeIface(1, "lo", net.FlagUp|net.FlagLoopback, "127.0.0.1/8", "::1/128"),
		lanFakeIface(2, "docker0", up, "172.17.0.1/16", "fe80::42:1/64"),
		lanFakeIface(3, "eth0", up, "192.168.1.10/24", "fe80::1/64", "2001:db8::10/64"),
		lanFakeIface(4, "eth1", net.FlagBroadcast|net.FlagMulticast, "192.168.2.1/24"), // down
		lanFakeIface(5, "br-0a1b2c", up, "172.18.0.1/16"),
		lanFakeIface(6, "ppp0", net.FlagUp|net.FlagPointToPoint, "10.64.0.2/32"),
		lanFakeIface(7, "enp3s0", up, "169.254.7.7/16", "10.1.2.3/8"),
		lanFakeIface(8, "wlan0", up, "192.168.1.20/24", "fd12:3456::20/64"),
		lanFakeIface(9, "tailscale0", up, "100.101.102.103/32"),
		lanFakeIface(10, "veth1234", up, "fe80::9/64"),
		{Name: "tun0", Index: 11, Flags: up, Addrs: []net.Addr{&net.IPAddr{IP: net.ParseIP("10.8.0.1")}}},
		lanFakeIface(12, "VirtualBox", up, "0.0.0.0/0", "224.0.0.1/32"),
	}
	got := lanAddrStrings(orderLANAddrs(ifaces, "wlan0"))
	want := []string{
		"wlan0 192.168.1.20 default",
		"eth0 192.168.1.10",
		"enp3s0 10.1.2.3",
		"docker0 172.17.0.1",
		"br-0a1b2c 172.18.0.1",
		"ppp0 10.64.0.2", // point-to-point: virtual
		"tailscale0 100.101.102.103",
		"tun0 10.8.0.1",
		"enp3s0 169.254.7.7", // IPv4 link-local after the other IPv4
		"wlan0 fd12:3456::20 default",
		"eth0 2001:db8::10",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("orderLANAddrs:\n got %q\nwant %q", got, want)
	}

	// No default route: physical interfaces keep kernel order.
	got = lanAddrStrings(orderLANAddrs(ifaces[:4], ""))
	want = []string{"eth0 192.168.1.10", "docker0 172.17.0.1", "eth0 2001:db8::10"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("without default:\n got %q\nwant %q", got, want)
	}

	// A virtual interface carrying the default route (a full-tunnel VPN)
	// still comes first.
	got = lanAddrStrings(orderLANAddrs(ifaces[:4], "docker0"))
	want = []string{"docker0 172.17.0.1 default", "eth0 192.168.1.10", "eth0 2001:db8::10"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("virtual default:\n got %q\nwant %q", got, want)
	}

	// IPs are 4-byte for IPv4 and copies, not the interface's slices.
	addrs := orderLANAddrs(ifaces, "wlan0")
	if len(addrs[0].IP) != net.IPv4len {
		t.Errorf("IPv4 address has %d bytes", len(addrs[0].IP))
	}
	addrs[0].IP[0] = 1
	if ifaces[7].Addrs[0].(*net.IPNet).IP.To4()[0] != 192 {
		t.Error("orderLANAddrs returned the interface's own IP slice")
	}
}

func TestLANVirtualInterfaceNames(t *testing.T) {
	for _, name := range []string{"docker0", "br-1a2b", "veth0a1b", "virbr0", "vboxnet0", "vmnet8", "tun0", "tap1", "wg0", "zt5u4y", "tailscale0", "lxcbr0", "cni0", "flannel.1", "Docker0", "utun3"} {
		if !isVirtualInterface(name, net.FlagUp) {
			t.Errorf("%s: not virtual", name)
		}
	}
	for _, name := range []string{"eth0", "wlan0", "enp3s0", "wlp2s0", "en0", "br0", "bond0", "Wi-Fi", "Ethernet"} {
		if isVirtualInterface(name, net.FlagUp|net.FlagMulticast) {
			t.Errorf("%s: virtual", name)
		}
	}
}

func TestLANParseProcNetRoute(t *testing.T) {
	const table = `Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
docker0	000011AC	00000000	0001	0	0	0	0000FFFF	0	0	0
wlan0	00000000	0101A8C0	0003	0	0	600	00000000	0	0	0
eth0	00000000	0101A8C0	0003	0	0	100	00000000	0	0	0
tun0	00000000	00000000	0000	0	0	0	00000000	0	0	0
eth0	0001A8C0	00000000	0001	0	0	100	00FFFFFF	0	0	0
`
	got, err := parseProcNetRoute(bufio.NewScanner(strings.NewReader(table)))
	if err != nil || got != "eth0" {
		t.Errorf("parseProcNetRoute = %q, %v; want eth0 (lowest metric, tun0 is down)", got, err)
	}
	got, _ = parseProcNetRoute(bufio.NewScanner(strings.NewReader(strings.SplitN(table, "\n", 3)[0] + "\n" + strings.SplitN(table, "\n", 3)[1])))
	if got != "" {
		t.Errorf("no default route: got %q", got)
	}
}

// TestLANAddrsHere checks LANAddrs' invariants on whatever machine runs it.
func TestLANAddrsHere(t *testing.T) {
	addrs, err := LANAddrs()
	if err != nil {
		t.Fatal(err)
	}
	seenV6, seenNonDefault := false, false
	for _, a := range addrs {
		t.Logf("%s %s default=%v", a.Interface, a.IP, a.Default)
		if a.IP.IsLoopback() || a.IP.IsUnspecified() || a.IP.IsMulticast() {
			t.Errorf("%s: not a LAN address", a.IP)
		}
		if a.IP.To4() == nil {
			if a.IP.IsLinkLocalUnicast() {
				t.Errorf("%s: IPv6 link-local", a.IP)
			}
			seenV6, seenNonDefault = true, false
			continue
		}
		if seenV6 {
			t.Errorf("IPv4 %s after IPv6", a.IP)
		}
		if a.Default && seenNonDefault {
			t.Errorf("default-route address %s after others", a.IP)
		}
		if !a.Default {
			seenNonDefault = true
		}
	}
}

// TestLANAddrsNetns runs LANAddrs in a network namespace with known
// interfaces (see testLANSetup), reading the default route from
// /proc/net/route and, with that file hidden, from a UDP "connection".
func TestLANAddrsNetns(t *testing.T) {
	if !enterTestLAN(t) {
		return
	}
	want := []string{
		"wlan5 198.51.100.2 default",
		"eth9 203.0.113.9",
		"docker9 198.18.0.1", // virtual last; eth8 is down
		"eth9 2001:db8::9",
	}
	for _, route := range []string{procNetRoute, filepath.Join(t.TempDir(), "absent")} {
		old := procNetRoute
		procNetRoute = route
		addrs, err := LANAddrs()
		procNetRoute = old
		if err != nil {
			t.Fatal(err)
		}
		if got := lanAddrStrings(addrs); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("with route table %s:\n got %q\nwant %q", route, got, want)
		}
	}
}

// The test LAN: the tests that need real interfaces re-run themselves in
// new network and mount namespaces (unshare; as root, or in a user
// namespace where the kernel allows that), where testLANSetup creates:
//
//	wlan5    198.51.100.2/24, default route: "this machine's Wi-Fi"; its
//	         veth peer wlan5p (198.51.100.3/24) is in the named network
//	         namespace "peer": "another machine on the LAN" (a phone)
//	eth9     203.0.113.9/24 and 2001:db8::9/64
//	docker9  198.18.0.1/24
//	eth8     203.0.113.8/24, down
//
// All addresses are documentation/benchmark ranges and exist only in these
// namespaces, which vanish with the test process, and with them every
// process it started; /run is a private tmpfs there (for `ip netns` and
// avahi-daemon's pid file).
const testLANSetup = `set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/netns /run/avahi-daemon
ip link set lo up
ip link add eth9 type veth peer name eth9p
ip link add docker9 type veth peer name docker9p
ip link add eth8 type veth peer name eth8p
ip link add wlan5 type veth peer name wlan5p
ip addr add 203.0.113.9/24 dev eth9
ip -6 addr add 2001:db8::9/64 dev eth9 nodad
ip addr add 198.18.0.1/24 dev docker9
ip addr add 203.0.113.8/24 dev eth8
ip addr add 198.51.100.2/24 dev wlan5
for i in eth9 eth9p docker9 docker9p wlan5; do ip link set "$i" up; done
ip route add default via 198.51.100.1 dev wlan5
ip netns add peer
ip link set wlan5p netns peer
ip -n peer link set lo up
ip -n peer addr add 198.51.100.3/24 dev wlan5p
ip -n peer link set wlan5p up
ip -n peer route add default via 198.51.100.1 dev wlan5p
echo TESTLAN-READY
exec "$@"
`

const (
	testLANEnv    = "BEAKER_DEVSERVER_TESTLAN"
	testLANIface  = "wlan5"
	testLANPeerNS = "peer"
)

var (
	testLANIP   = net.IPv4(198, 51, 100, 2).To4()
	testLANPeer = net.IPv4(198, 51, 100, 3).To4()
)

// testLANSkipOrFail skips the test, or fails it under CI (CI=true), where every
// component the tests need must be installed.
func testLANSkipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// enterTestLAN makes the calling test run in the test LAN. In the test
// process it re-runs the test in new namespaces, reports its outcome and
// returns false: the caller returns. In the re-run it returns true.
func enterTestLAN(t *testing.T) bool {
	t.Helper()
	if os.Getenv(testLANEnv) == "1" {
		ifi, err := net.InterfaceByName(testLANIface)
		if err != nil {
			t.Fatalf("%s set but no test LAN here: %v", testLANEnv, err)
		}
		if ips := ipsOnInterface(*ifi, []net.IP{testLANIP}); len(ips) != 1 {
			t.Fatalf("%s lacks %s", testLANIface, testLANIP)
		}
		return true
	}
	if runtime.GOOS != "linux" {
		t.Skip("the test LAN needs Linux network namespaces")
	}
	for _, tool := range []string{"unshare", "ip", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			testLANSkipOrFail(t, "the test LAN needs %s: apt-get install util-linux iproute2 mount", tool)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// A PID namespace too, its init being the re-run test: when that
	// ends, or unshare is killed (--kill-child), the kernel ends every
	// process the test started there (avahi-daemon, dbus-daemon, node).
	args := []string{"--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"}
	if os.Geteuid() != 0 {
		args = append([]string{"--user", "--map-root-user"}, args...)
	}
	args = append(args, "sh", "-c", testLANSetup, "sh", exe,
		"-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.v", "-test.count=1", "-test.timeout=4m")
	if testing.Short() {
		args = append(args, "-test.short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", args...)
	cmd.Env = append(os.Environ(), testLANEnv+"=1")
	out, err := cmd.CombinedOutput()
	text := string(out)
	switch {
	case !strings.Contains(text, "TESTLAN-READY"):
		testLANSkipOrFail(t, "cannot make the test LAN (needs root, or unprivileged user namespaces): %v\n%s", err, text)
	case strings.Contains(text, "--- SKIP: "+t.Name()):
		t.Skipf("in the test LAN:\n%s", text)
	case err != nil || !strings.Contains(text, "--- PASS: "+t.Name()):
		t.Fatalf("in the test LAN: %v\n%s", err, text)
	case testing.Verbose():
		t.Logf("in the test LAN:\n%s", text)
	}
	return false
}
