package discovery

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/mdns"
	"github.com/miekg/dns"
)

// MDNSService is the DNS-SD service type beaker-dev processes advertise on
// the LAN: one instance a process, with a TXT string "dk=HEX" for each
// archive it announces (never the public key).
const MDNSService = "_beaker-dev._tcp"

// maxMDNSKeys bounds the discovery keys one process advertises, so its TXT
// record stays within an mDNS packet.
const maxMDNSKeys = 100

// MDNS finds peers on the LAN by multicast DNS (hashicorp/mdns). Announce
// adds a discovery key to this process's service; Lookup browses the
// service and keeps the instances that list the key.
type MDNS struct {
	instance string
	logf     func(string, ...any)
	// IPs are the addresses advertised; nil means every IPv4 address of
	// this machine. A swarm listening on one address sets it to that one.
	IPs []net.IP

	mu     sync.Mutex
	port   int
	keys   map[string]int // hex discovery key -> announcers
	server *mdns.Server
	closed bool
}

// NewMDNS makes an mDNS source. It starts answering queries at the first
// Announce.
func NewMDNS(logf func(string, ...any)) *MDNS {
	b := make([]byte, 6)
	rand.Read(b)
	return &MDNS{instance: "beaker-dev-" + hex.EncodeToString(b), keys: map[string]int{}, logf: logf}
}

// Name implements the swarm's Source.
func (m *MDNS) Name() string { return "mdns" }

// Announce advertises dk on port until ctx is done.
func (m *MDNS) Announce(ctx context.Context, dk [32]byte, port int) {
	key := hex.EncodeToString(dk[:])
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.port = port
	m.keys[key]++
	err := m.startLocked()
	m.mu.Unlock()
	if err != nil && m.logf != nil {
		m.logf("discovery: mdns: %v", err)
	}
	<-ctx.Done()
	m.mu.Lock()
	if m.keys[key]--; m.keys[key] <= 0 {
		delete(m.keys, key)
	}
	m.mu.Unlock()
}

// startLocked starts the responder once. Its zone is read at every query,
// so keys announced later are answered without a restart.
func (m *MDNS) startLocked() error {
	if m.server != nil {
		return nil
	}
	srv, err := mdns.NewServer(&mdns.Config{Zone: zone{m}, Logger: discardLogger()})
	if err != nil {
		return fmt.Errorf("discovery: mdns: %w", err)
	}
	m.server = srv
	return nil
}

// zone answers with the current service record.
type zone struct{ m *MDNS }

func (z zone) Records(q dns.Question) []dns.RR {
	svc := z.m.service()
	if svc == nil {
		return nil
	}
	return svc.Records(q)
}

func (m *MDNS) service() *mdns.MDNSService {
	m.mu.Lock()
	txt := make([]string, 0, len(m.keys))
	for k := range m.keys {
		if len(txt) == maxMDNSKeys {
			break
		}
		txt = append(txt, "dk="+k)
	}
	port := m.port
	m.mu.Unlock()
	if len(txt) == 0 {
		return nil
	}
	ips := m.IPs
	if len(ips) == 0 {
		ips = localIPs()
	}
	svc, err := mdns.NewMDNSService(m.instance, MDNSService, "local.", m.instance+".local.", port, ips, txt)
	if err != nil {
		return nil
	}
	return svc
}

// localIPs lists this machine's IPv4 addresses, loopback first: the
// hashicorp/mdns client keeps the last A record of an answer, which must be
// a LAN address for other machines (one without a LAN gets loopback).
func localIPs() []net.IP {
	var out, lo []net.IP
	ifaces, _ := net.Interfaces()
	for _, ifi := range ifaces {
		if ifi.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, _ := ifi.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.To4() == nil {
				continue
			}
			if ipn.IP.IsLoopback() {
				lo = append(lo, ipn.IP)
			} else if !ipn.IP.IsLinkLocalUnicast() {
				out = append(out, ipn.IP)
			}
		}
	}
	return append(lo, out...)
}

// Lookup browses the LAN for the service and returns the addresses of the
// instances that list dk.
func (m *MDNS) Lookup(ctx context.Context, dk [32]byte) ([]netip.AddrPort, error) {
	want := "dk=" + hex.EncodeToString(dk[:])
	entries := make(chan *mdns.ServiceEntry, 64)
	params := mdns.DefaultParams(MDNSService)
	params.Entries = entries
	params.DisableIPv6 = true
	params.Timeout = 700 * time.Millisecond
	params.Logger = discardLogger()
	qctx, cancel := context.WithTimeout(ctx, params.Timeout)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		errc <- mdns.QueryContext(qctx, params)
		close(entries)
	}()
	seen := map[netip.AddrPort]bool{}
	var out []netip.AddrPort
	for e := range entries {
		if e.Name == m.instance+"."+MDNSService+".local." || !hasTXT(e.InfoFields, want) {
			continue
		}
		ip, ok := netip.AddrFromSlice(e.AddrV4.To4())
		if !ok || e.Port <= 0 || e.Port > 65535 {
			continue
		}
		ap := netip.AddrPortFrom(ip, uint16(e.Port))
		if !seen[ap] {
			seen[ap] = true
			out = append(out, ap)
		}
	}
	if err := <-errc; err != nil && ctx.Err() == nil && !strings.Contains(err.Error(), "context") {
		return out, fmt.Errorf("discovery: mdns: %w", err)
	}
	return out, nil
}

func hasTXT(fields []string, want string) bool {
	for _, f := range fields {
		if f == want {
			return true
		}
	}
	return false
}

// Close stops answering queries.
func (m *MDNS) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	if m.server != nil {
		err := m.server.Shutdown()
		m.server = nil
		return err
	}
	return nil
}
