package devserver

import (
	"bufio"
	"errors"
	"io/fs"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
)

// LANAddr is one address phones on the LAN can reach this machine at.
type LANAddr struct {
	IP        net.IP
	Interface string // e.g. "eth0", "wlan0"
	Default   bool   // the interface of the default route
}

// LANAddrs lists this machine's non-loopback unicast IPv4 addresses (IPv6
// link-local excluded; global IPv6 optional, after IPv4), the default-route
// interface's first, then physical-looking interfaces, then virtual ones
// (docker*, br-*, veth*, virbr*, vboxnet*, vmnet*, tun*, tap*, wg*, zt*,
// tailscale*, lxc*, cni*, flannel*) last. Interfaces that are down are
// skipped.
//
// The default-route interface is read from /proc/net/route (the IPv4 route
// to 0.0.0.0/0 with the lowest metric). Where that file does not exist (not
// Linux), it is the interface owning the local address the kernel picks for
// a UDP "connection" to 192.0.2.1:9; connecting a UDP socket sends no packet.
//
// Within one class, interfaces keep the kernel's order (by index) and each
// interface's addresses keep theirs. IPv4 link-local addresses (169.254/16)
// come after the other IPv4 addresses, since a phone that got its address
// by DHCP cannot reach them.
func LANAddrs() ([]LANAddr, error) {
	ifis, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	list := make([]lanInterface, 0, len(ifis))
	for _, ifi := range ifis {
		li := lanInterface{Name: ifi.Name, Index: ifi.Index, Flags: ifi.Flags}
		if ifi.Flags&net.FlagUp != 0 {
			// An interface whose addresses cannot be read contributes none.
			li.Addrs, _ = ifi.Addrs()
		}
		list = append(list, li)
	}
	return orderLANAddrs(list, defaultRouteInterface(list)), nil
}

// lanInterface is the part of a net.Interface that orderLANAddrs needs, so
// tests can fabricate interfaces.
type lanInterface struct {
	Name  string
	Index int
	Flags net.Flags
	Addrs []net.Addr // *net.IPNet or *net.IPAddr
}

// virtualPrefixes name interfaces made by container runtimes, hypervisors and
// VPNs: phones on the LAN are rarely on the other side of them. Matched
// case-insensitively.
var virtualPrefixes = []string{
	"docker", "br-", "veth", "virbr", "vboxnet", "vmnet", "tun", "tap",
	"wg", "zt", "tailscale", "lxc", "cni", "flannel",
	// Not in the usual Linux list but the same kind of thing elsewhere.
	"podman", "utun", "vethernet", "cali", "kube-",
}

// isVirtualInterface reports whether an interface looks like a virtual one:
// by name, or because it is a point-to-point link (VPNs, PPP tunnels).
func isVirtualInterface(name string, flags net.Flags) bool {
	lower := strings.ToLower(name)
	for _, p := range virtualPrefixes {
		if strings.HasPrefix(lower, p) {
			return true
		}
	}
	return flags&net.FlagPointToPoint != 0
}

// orderLANAddrs is the pure part of LANAddrs: it picks the usable addresses
// of ifaces and orders them, defaultIface (may be "") first.
func orderLANAddrs(ifaces []lanInterface, defaultIface string) []LANAddr {
	type ranked struct {
		addr    LANAddr
		family  int // 0 IPv4, 1 IPv4 link-local, 2 IPv6
		class   int // 0 default route, 1 physical, 2 virtual
		ifOrder int
		order   int
	}
	var all []ranked
	for i, ifi := range ifaces {
		if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagLoopback != 0 {
			continue
		}
		class := 1
		switch {
		case defaultIface != "" && ifi.Name == defaultIface:
			class = 0
		case isVirtualInterface(ifi.Name, ifi.Flags):
			class = 2
		}
		for j, a := range ifi.Addrs {
			var ip net.IP
			switch a := a.(type) {
			case *net.IPNet:
				ip = a.IP
			case *net.IPAddr:
				ip = a.IP
			}
			family := -1
			if ip4 := ip.To4(); ip4 != nil {
				ip = ip4
				switch {
				case ip.IsLinkLocalUnicast():
					family = 1
				case ip.IsGlobalUnicast():
					family = 0
				}
			} else if len(ip) == net.IPv6len && ip.IsGlobalUnicast() {
				// IsGlobalUnicast excludes loopback, link-local,
				// multicast and unspecified; unique local (fc00::/7)
				// addresses stay, being reachable on the LAN.
				family = 2
			}
			if family < 0 {
				continue
			}
			all = append(all, ranked{
				addr:    LANAddr{IP: append(net.IP(nil), ip...), Interface: ifi.Name, Default: class == 0},
				family:  family,
				class:   class,
				ifOrder: i,
				order:   j,
			})
		}
	}
	sort.SliceStable(all, func(i, j int) bool {
		a, b := all[i], all[j]
		if a.family != b.family {
			return a.family < b.family
		}
		if a.class != b.class {
			return a.class < b.class
		}
		if a.ifOrder != b.ifOrder {
			return a.ifOrder < b.ifOrder
		}
		return a.order < b.order
	})
	out := make([]LANAddr, len(all))
	for i, r := range all {
		out[i] = r.addr
	}
	return out
}

// procNetRoute is where Linux lists the IPv4 routing table; a variable so
// tests can point it elsewhere.
var procNetRoute = "/proc/net/route"

// defaultRouteInterface names the interface of the IPv4 default route, or ""
// when there is none.
func defaultRouteInterface(ifaces []lanInterface) string {
	f, err := os.Open(procNetRoute)
	if err == nil {
		defer f.Close()
		name, _ := parseProcNetRoute(bufio.NewScanner(f))
		return name
	}
	if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, fs.ErrPermission) {
		return ""
	}
	// No /proc (macOS, BSD, Windows): ask the kernel which source address
	// it would use to reach a (documentation) address outside the LAN. A
	// UDP "connection" only sets the socket's default peer; nothing is sent.
	c, err := net.Dial("udp4", "192.0.2.1:9")
	if err != nil {
		return ""
	}
	defer c.Close()
	local, ok := c.LocalAddr().(*net.UDPAddr)
	if !ok {
		return ""
	}
	return interfaceWithIP(ifaces, local.IP)
}

// parseProcNetRoute returns the interface of the default route (destination
// and mask 00000000, flag RTF_UP) with the lowest metric in the text of
// /proc/net/route.
func parseProcNetRoute(sc *bufio.Scanner) (string, error) {
	const rtfUp = 0x1
	best, bestMetric := "", int64(-1)
	first := true
	for sc.Scan() {
		if first { // header line
			first = false
			continue
		}
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 {
			continue
		}
		iface, dest, flagsHex, metricStr, mask := fields[0], fields[1], fields[3], fields[6], fields[7]
		if dest != "00000000" || mask != "00000000" {
			continue
		}
		flags, err := strconv.ParseUint(flagsHex, 16, 32)
		if err != nil || flags&rtfUp == 0 {
			continue
		}
		metric, err := strconv.ParseInt(metricStr, 10, 64)
		if err != nil {
			continue
		}
		if bestMetric < 0 || metric < bestMetric {
			best, bestMetric = iface, metric
		}
	}
	return best, sc.Err()
}

// interfaceWithIP names the interface of ifaces that has ip, or "".
func interfaceWithIP(ifaces []lanInterface, ip net.IP) string {
	for _, ifi := range ifaces {
		for _, a := range ifi.Addrs {
			var aip net.IP
			switch a := a.(type) {
			case *net.IPNet:
				aip = a.IP
			case *net.IPAddr:
				aip = a.IP
			}
			if aip != nil && aip.Equal(ip) {
				return ifi.Name
			}
		}
	}
	return ""
}
