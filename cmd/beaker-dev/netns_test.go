package main

// Multi-host tests: each host is a Linux network namespace wired by a veth
// pair to a bridge that lives in a namespace of its own, so nothing of the
// machine's own network (interfaces, routes, the root namespace) is
// touched. Each host runs the real binary under `ip netns exec` with a data
// directory of its own.
//
// Names are unique per process and per test (namespaces bdn<pid>-<n>-a,
// -b, ..., -br; subnet 10.78.<n>.0/24), so these tests can run next to
// other namespace tests (hyperdrive/discovery uses br-dht and h1..h5).
// Namespaces left by a test binary that was killed are removed by the next
// run.

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
	"github.com/beaker-dev/beaker-dev/hyperdrive/discovery"
	"github.com/beaker-dev/beaker-dev/hyperdrive/names/namestest"
)

// netnsLab is a set of hosts on one LAN segment.
type netnsLab struct {
	t      testing.TB
	prefix string // bdn<pid>-<n>
	bridge string // the namespace holding the bridge br0
	subnet int    // 10.78.<subnet>.0/24
	hosts  int
}

// nsHost is one machine: a namespace with eth0 on the lab's bridge.
type nsHost struct {
	t    testing.TB
	ns   string
	ip   netip.Addr
	home string // --data-dir
	dir  string // working directory
}

var netnsSeq atomic.Int32

// netnsPrereqs skips the test (fails it under CI=true) when namespaces
// cannot be made here, saying what is missing.
func netnsPrereqs(t testing.TB) {
	t.Helper()
	if runtime.GOOS != "linux" {
		namestest.SkipOrFail(t, "network namespace tests need Linux")
	}
	if os.Geteuid() != 0 {
		namestest.SkipOrFail(t, "network namespace tests need root: run them as root (sudo -E go test -run Netns ./cmd/beaker-dev/), or in CI")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		namestest.SkipOrFail(t, "network namespace tests need the ip command: apt-get install iproute2")
	}
}

// newNetnsLab makes the bridge namespace; cleanup removes every namespace
// of the lab, even when the test fails.
func newNetnsLab(t testing.TB) *netnsLab {
	t.Helper()
	netnsPrereqs(t)
	removeStaleNetns()
	n := int(netnsSeq.Add(1))
	l := &netnsLab{t: t, prefix: fmt.Sprintf("bdn%d-%d", os.Getpid(), n), subnet: 1 + (n-1)%250}
	l.bridge = l.prefix + "-br"
	t.Cleanup(l.cleanup)
	if out, err := exec.Command("ip", "netns", "add", l.bridge).CombinedOutput(); err != nil {
		namestest.SkipOrFail(t, "cannot make a network namespace (ip netns add: %v: %s); run as root on a kernel with network namespaces", err, bytes.TrimSpace(out))
	}
	l.ip("-n", l.bridge, "link", "set", "lo", "up")
	l.ip("-n", l.bridge, "link", "add", "br0", "type", "bridge", "stp_state", "0", "mcast_snooping", "0")
	l.ip("-n", l.bridge, "link", "set", "br0", "up")
	return l
}

func (l *netnsLab) ip(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func (l *netnsLab) namespaces() []string {
	ns := []string{l.bridge}
	for i := range l.hosts {
		ns = append(ns, fmt.Sprintf("%s-%c", l.prefix, 'a'+i))
	}
	return ns
}

func (l *netnsLab) cleanup() {
	for _, ns := range l.namespaces() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
			l.t.Errorf("ip netns del %s: %v: %s", ns, err, out)
		}
	}
}

// removeStaleNetns deletes the namespaces of test processes that no longer
// run (killed by a timeout before their cleanup ran).
func removeStaleNetns() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, "bdn")
		if !ok {
			continue
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // still running
		}
		exec.Command("ip", "netns", "del", name).Run()
	}
}

// host adds a machine: a namespace with lo up and eth0 (10.78.S.N/24,
// multicast routed to it for mDNS) on the bridge.
func (l *netnsLab) host() *nsHost {
	l.t.Helper()
	i := l.hosts
	l.hosts++
	ns := fmt.Sprintf("%s-%c", l.prefix, 'a'+i)
	veth := fmt.Sprintf("v%c", 'a'+i)
	addr := netip.AddrFrom4([4]byte{10, 78, byte(l.subnet), byte(i + 1)})
	l.ip("netns", "add", ns)
	l.ip("-n", ns, "link", "set", "lo", "up")
	l.ip("-n", l.bridge, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
	l.ip("-n", l.bridge, "link", "set", veth, "master", "br0", "multicast", "on", "up")
	l.ip("-n", ns, "addr", "add", addr.String()+"/24", "dev", "eth0")
	l.ip("-n", ns, "link", "set", "eth0", "multicast", "on", "up")
	l.ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
	return &nsHost{t: l.t, ns: ns, ip: addr, home: filepath.Join(l.t.TempDir(), "data"), dir: l.t.TempDir()}
}

// command is the binary run on the host with its data dir.
func (h *nsHost) command(args ...string) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.ns, binary}, append(args, "--data-dir", h.home)...)...)
	cmd.Dir = h.dir
	// ip netns exec execs the binary, so it gets the signals (stop's
	// SIGINT) and dies with the test binary if that is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// ok runs a command that must succeed and decodes its JSON output.
func (h *nsHost) ok(v any, args ...string) {
	h.t.Helper()
	if err := h.try(v, args...); err != nil {
		h.t.Fatal(err)
	}
}

// try runs a command with --json and decodes its output; it says what went
// wrong if the command fails.
func (h *nsHost) try(v any, args ...string) error {
	cmd := h.command(append(args, "--json")...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %v: %v: %s%s", h.ns, args, err, errb.String(), out.String())
	}
	if v != nil {
		if err := json.Unmarshal(out.Bytes(), v); err != nil {
			return fmt.Errorf("%s: %v: output is not JSON: %v\n%s", h.ns, args, err, out.String())
		}
	}
	return nil
}

// start runs a long-running command (seed, bootstrap) whose JSON events
// the test reads; it is stopped with SIGINT at the end of the test.
func (h *nsHost) start(args ...string) *daemon {
	h.t.Helper()
	cmd := h.command(append(args, "--json")...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		h.t.Fatal(err)
	}
	d := &daemon{t: h.t, cmd: cmd, events: make(chan map[string]any, 64), stderr: &lockedBuffer{}}
	cmd.Stderr = d.stderr
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				d.events <- ev
			}
		}
		close(d.events)
	}()
	h.t.Cleanup(d.stop)
	return d
}

// snmp reads the host's kernel counters (per namespace) named like
// "Tcp OutSegs" or "Udp OutDatagrams".
func (h *nsHost) snmp(names ...string) map[string]int64 {
	h.t.Helper()
	out, err := exec.Command("ip", "netns", "exec", h.ns, "cat", "/proc/net/snmp").Output()
	if err != nil {
		h.t.Fatalf("reading /proc/net/snmp in %s: %v", h.ns, err)
	}
	lines := strings.Split(string(out), "\n")
	got := map[string]int64{}
	for i := 0; i+1 < len(lines); i += 2 {
		head, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(head) == 0 || len(head) != len(vals) {
			continue
		}
		proto := strings.TrimSuffix(head[0], ":")
		for j := 1; j < len(head); j++ {
			v, _ := strconv.ParseInt(vals[j], 10, 64)
			got[proto+" "+head[j]] = v
		}
	}
	for _, n := range names {
		if _, ok := got[n]; !ok {
			h.t.Fatalf("no %q in /proc/net/snmp of %s", n, h.ns)
		}
	}
	return got
}

// mdnsBrowse sends one mDNS query for beaker-dev's service from namespace
// ns and returns, in the order they came, the IPv4 addresses and TXT
// strings of the answers that arrive within a second.
func mdnsBrowse(ns string) (addrs []netip.Addr, txt []string, err error) {
	pc, err := listenUDPIn(ns)
	if err != nil {
		return nil, nil, err
	}
	defer pc.Close()
	q := new(dns.Msg)
	q.SetQuestion(discovery.MDNSService+".local.", dns.TypePTR)
	q.RecursionDesired = false
	b, err := q.Pack()
	if err != nil {
		return nil, nil, err
	}
	if _, err := pc.WriteTo(b, &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353}); err != nil {
		return nil, nil, err
	}
	pc.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 9000)
	for {
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			return addrs, txt, nil // the deadline: done
		}
		var m dns.Msg
		if m.Unpack(buf[:n]) != nil || !m.Response {
			continue
		}
		for _, rr := range append(m.Answer, m.Extra...) {
			switch rr := rr.(type) {
			case *dns.A:
				if a, ok := netip.AddrFromSlice(rr.A.To4()); ok {
					addrs = append(addrs, a)
				}
			case *dns.TXT:
				txt = append(txt, rr.Txt...)
			}
		}
	}
}

// sysSetns is setns(2)'s number (the syscall package lacks it; this spares
// a dependency on golang.org/x/sys).
var sysSetns = map[string]uintptr{
	"amd64": 308, "386": 346, "arm64": 268, "riscv64": 268, "loong64": 268,
	"arm": 375, "ppc64": 350, "ppc64le": 350, "s390x": 339,
}

// listenUDPIn opens a UDP socket inside namespace ns, for the test itself
// to talk to a host: the socket is made on a thread moved into ns for the
// moment, then moved back. (The thread must not end: daemons started from
// it would get their Pdeathsig.)
func listenUDPIn(ns string) (net.PacketConn, error) {
	trap, ok := sysSetns[runtime.GOARCH]
	if !ok {
		return nil, fmt.Errorf("setns: syscall number unknown on %s", runtime.GOARCH)
	}
	setns := func(f *os.File) error {
		if _, _, e := syscall.RawSyscall(trap, f.Fd(), syscall.CLONE_NEWNET, 0); e != 0 {
			return fmt.Errorf("setns %s: %w", f.Name(), e)
		}
		return nil
	}
	target, err := os.Open("/run/netns/" + ns)
	if err != nil {
		return nil, err
	}
	defer target.Close()
	type result struct {
		pc  net.PacketConn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", syscall.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer home.Close()
		if err := setns(target); err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		pc, err := net.ListenPacket("udp4", ":0")
		if err := setns(home); err != nil {
			// Stuck in ns: the thread stays locked and ends with this
			// goroutine.
			if pc != nil {
				pc.Close()
			}
			ch <- result{nil, err}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{pc, err}
	}()
	r := <-ch
	return r.pc, r.err
}

// dhtPeers sends a read-only (BEP 43) get_peers for infohash to a DHT node
// from a socket in namespace ns and returns the peers it answers with.
func dhtPeers(ns string, node netip.AddrPort, infohash [20]byte) ([]netip.AddrPort, error) {
	pc, err := listenUDPIn(ns)
	if err != nil {
		return nil, err
	}
	defer pc.Close()
	id := make([]byte, 20)
	for i := range id {
		id[i] = byte(rand.IntN(256))
	}
	q := fmt.Sprintf("d1:ad2:id20:%s9:info_hash20:%se1:q9:get_peers2:roi1e1:t2:bd1:y1:qe", id, infohash[:])
	if _, err := pc.WriteTo([]byte(q), net.UDPAddrFromAddrPort(node)); err != nil {
		return nil, err
	}
	pc.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 2048)
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		return nil, err
	}
	resp := buf[:n]
	// The values are a list of 6-byte compact peers: "6:values" "l" ("6:" 6 bytes)* "e".
	i := bytes.Index(resp, []byte("6:valuesl"))
	if i < 0 {
		return nil, nil
	}
	var peers []netip.AddrPort
	for rest := resp[i+len("6:valuesl"):]; len(rest) >= 8 && string(rest[:2]) == "6:"; rest = rest[8:] {
		peers = append(peers, netip.AddrPortFrom(netip.AddrFrom4([4]byte(rest[2:6])), uint16(rest[6])<<8|uint16(rest[7])))
	}
	return peers, nil
}

// writeNetnsSite writes a site of about 4 MiB of incompressible bytes:
// one file over 1 MiB, a few of some hundred KiB, small pages.
func writeNetnsSite(t *testing.T, dir string) {
	t.Helper()
	r := rand.New(rand.NewPCG(7, 11))
	files := map[string]int{
		"index.html":           2_000,
		"about.html":           5_000,
		"css/site.css":         9_000,
		"media/big.bin":        2_500_000,
		"media/photo1.jpg":     400_000,
		"media/photo2.jpg":     350_000,
		"media/clip.webm":      700_000,
		"docs/manual.pdf":      300_000,
		"docs/notes/deep.html": 40_000,
	}
	for name, size := range files {
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// seededNetnsSite makes a site on h, publishes it and seeds it with the
// given network flags; it returns the site's folder, URL, number of files
// and the seeder's swarm address.
func seededNetnsSite(t *testing.T, h *nsHost, flags ...string) (site, url string, files int, addr netip.AddrPort) {
	t.Helper()
	site = filepath.Join(h.dir, "site")
	writeNetnsSite(t, site)
	var ini initResult
	h.ok(&ini, "init", "site")
	seeder := h.start(append([]string{"seed", "site"}, flags...)...)
	ev := seeder.wait("seeding")
	if ev["url"] != ini.URL {
		t.Fatalf("seeding %v, want %s", ev["url"], ini.URL)
	}
	swarmAddr, _ := ev["swarm"].(string)
	_, portStr, err := net.SplitHostPort(swarmAddr)
	if err != nil {
		t.Fatalf("seeding event: swarm %q: %v", swarmAddr, err)
	}
	port, _ := strconv.Atoi(portStr)
	return site, ini.URL, ini.Files, netip.AddrPortFrom(h.ip, uint16(port))
}

// TestNetnsTransports: a clone on host B from a seeder on host A given by
// --peer, over TCP alone and over uTP alone, is byte-identical, and really
// went over the transport asked for.
func TestNetnsTransports(t *testing.T) {
	for _, transport := range []string{"tcp", "utp"} {
		t.Run(transport, func(t *testing.T) {
			lab := newNetnsLab(t)
			a, b := lab.host(), lab.host()
			site, url, files, addr := seededNetnsSite(t, a, "--no-dht", "--no-mdns")
			before := a.snmp("Tcp OutSegs", "Udp OutDatagrams")
			start := time.Now()
			var res cloneResult
			b.ok(&res, "clone", url, "copy", "--peer", addr.String(), "--transport", transport, "--no-dht", "--no-mdns", "--timeout", "30s")
			took := time.Since(start)
			after := a.snmp("Tcp OutSegs", "Udp OutDatagrams")
			if res.Peers != 1 || res.Files != files || res.Bytes < 4<<20 {
				t.Fatalf("clone = %+v, want %d files", res, files)
			}
			size := int64(res.Bytes)
			sameDirs(t, site, filepath.Join(b.dir, "copy"))
			// The CLI does not say which transport a connection used; the
			// seeder's kernel counters do. Every packet is at most one
			// 1500-byte frame, so sending size bytes takes at least
			// size/1500 of them.
			tcpSegs := after["Tcp OutSegs"] - before["Tcp OutSegs"]
			udpDgrams := after["Udp OutDatagrams"] - before["Udp OutDatagrams"]
			t.Logf("%s: %d bytes in %v; the seeder sent %d TCP segments, %d UDP datagrams", transport, size, took.Round(time.Millisecond), tcpSegs, udpDgrams)
			used, other := tcpSegs, udpDgrams
			if transport == "utp" {
				used, other = udpDgrams, tcpSegs
			}
			if used < size/1500 || other > 50 {
				t.Fatalf("--transport %s: the seeder sent %d TCP segments and %d UDP datagrams for %d bytes", transport, tcpSegs, udpDgrams, size)
			}
		})
	}
}

// TestNetnsMDNS: a clone on host B finds the seeder on host A by mDNS alone.
func TestNetnsMDNS(t *testing.T) {
	lab := newNetnsLab(t)
	a, b := lab.host(), lab.host()
	site, url, _, addr := seededNetnsSite(t, a, "--no-dht")
	u, err := hyperdrive.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	dk := u.Key.DiscoveryKey()
	want := "dk=" + hex.EncodeToString(dk[:])
	// Wait until the seeder's responder answers across the LAN, so that
	// the clone's first lookup can find it, and to tell a LAN that drops
	// multicast from a discovery bug.
	var addrs []netip.Addr
	for deadline := time.Now().Add(10 * time.Second); ; {
		var txt []string
		addrs, txt, err = mdnsBrowse(b.ns)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(txt, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the seeder does not answer mDNS queries from the LAN (got %v %q)", addrs, txt)
		}
	}
	var res cloneResult
	if err := b.try(&res, "clone", url, "copy", "--no-dht", "--timeout", "20s"); err != nil {
		t.Fatalf("%v\nthe seeder (%s) answers mDNS with the addresses %v, in this order (hashicorp/mdns clients keep the last)", err, addr, addrs)
	}
	if res.Peers != 1 {
		t.Fatalf("clone = %+v (seeder at %s)", res, addr)
	}
	sameDirs(t, site, filepath.Join(b.dir, "copy"))
}

// TestNetnsDHT: with a DHT bootstrap node on host C, a clone on host B
// finds the seeder on host A through the DHT alone.
func TestNetnsDHT(t *testing.T) {
	lab := newNetnsLab(t)
	a, b, c := lab.host(), lab.host(), lab.host()
	boot := c.start("bootstrap", "--dht", netip.AddrPortFrom(c.ip, 6881).String())
	ev := boot.wait("listening")
	node, err := netip.ParseAddrPort(fmt.Sprint(ev["dht"]))
	if err != nil || node.Addr() != c.ip {
		t.Fatalf("bootstrap listening on %v, want %s", ev["dht"], c.ip)
	}
	dhtFlags := []string{"--bootstrap", node.String(), "--no-mdns"}
	site, url, _, addr := seededNetnsSite(t, a, dhtFlags...)
	// Wait for the seeder's announce to reach the bootstrap node, so that
	// the clone's first lookup can find it, and to tell an announce that
	// never arrives from a lookup that fails.
	u, err := hyperdrive.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	dk := u.Key.DiscoveryKey()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		peers, err := dhtPeers(b.ns, node, [20]byte(dk[:20]))
		if err == nil && len(peers) > 0 {
			if !slices.Contains(peers, addr) {
				t.Fatalf("the DHT gives %v for the site, want the seeder %s", peers, addr)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the seeder's announce never reached the DHT node (last: %v %v)", peers, err)
		}
	}
	var res cloneResult
	b.ok(&res, append([]string{"clone", url, "copy", "--timeout", "30s"}, dhtFlags...)...)
	if res.Peers != 1 {
		t.Fatalf("clone = %+v", res)
	}
	sameDirs(t, site, filepath.Join(b.dir, "copy"))
}
