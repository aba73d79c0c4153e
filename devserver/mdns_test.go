package devserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/mdns"
	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
)

func TestMDNSName(t *testing.T) {
	for _, tc := range []struct{ title, want string }{
		{"my-site", "my-site"},
		{"Ann's Blog", "anns-blog"},
		{"Ann’s  Blog!!", "anns-blog"},
		{"  --Hello, World--  ", "hello-world"},
		{"Café Müller", "cafe-muller"},
		{"Straße 42", "strasse-42"},
		{"ÆON Œuvre", "aeon-oeuvre"},
		{"日本語のサイト", "beaker-dev"},
		{"日本 site", "site"},
		{"", "beaker-dev"},
		{"---", "beaker-dev"},
		{"a.b_c d", "a-b-c-d"},
		{"v1.0", "v1-0"},
		{"UPPER lower 123", "upper-lower-123"},
		{strings.Repeat("a", 70), strings.Repeat("a", 63)},
		{strings.Repeat("a", 62) + " b", strings.Repeat("a", 62)}, // no trailing '-' after the cut
		{strings.Repeat("é", 40), strings.Repeat("e", 40)},
	} {
		got := MDNSName(tc.title)
		if got != tc.want {
			t.Errorf("MDNSName(%q) = %q, want %q", tc.title, got, tc.want)
		}
		if !validHostLabel(got) || got != strings.ToLower(got) {
			t.Errorf("MDNSName(%q) = %q: not a valid lowercase host label", tc.title, got)
		}
	}
}

func TestMDNSInstanceName(t *testing.T) {
	for _, tc := range []struct{ title, label, presentation string }{
		{"Ann's Blog", "Ann's Blog", `Ann\'s\ Blog`},
		{"  Ann's\n\tBlog  ", "Ann's Blog", `Ann\'s\ Blog`},
		{"café", "café", `caf\195\169`},
		{"v1.0 (beta)", "v1.0 (beta)", `v1\.0\ \(beta\)`},
		{strings.Repeat("é", 40), strings.Repeat("é", 31), strings.Repeat(`\195\169`, 31)}, // cut on a rune boundary
	} {
		label := instanceLabel(tc.title)
		if label != tc.label {
			t.Errorf("instanceLabel(%q) = %q, want %q", tc.title, label, tc.label)
		}
		p, err := presentationLabel(label)
		if err != nil || p != tc.presentation {
			t.Errorf("presentationLabel(%q) = %q, %v; want %q", label, p, err, tc.presentation)
		}
	}
}

func TestAdvertiseOptions(t *testing.T) {
	for _, opts := range []MDNSOptions{
		{Name: "site", Port: 0, IPs: []net.IP{testLANIP}},
		{Name: "site", Port: 70000, IPs: []net.IP{testLANIP}},
		{Name: "my site", Port: 80, IPs: []net.IP{testLANIP}},
		{Name: "site.local", Port: 80, IPs: []net.IP{testLANIP}},
		{Name: "-site", Port: 80, IPs: []net.IP{testLANIP}},
		{Name: "site", Port: 80, IPs: []net.IP{net.IPv4zero, net.ParseIP("fe80::1"), net.IPv4(224, 0, 0, 1)}},
	} {
		if a, err := Advertise(opts); err == nil {
			a.Close()
			t.Errorf("Advertise(%+v) succeeded", opts)
		}
	}
}

// The advertiser of the mDNS tests, in the test LAN (see testLANSetup).
const (
	testMDNSName     = "beaker-test-site"
	testMDNSHost     = testMDNSName + ".local."
	testMDNSInstance = "Ann's Blog — café" // spaces, an apostrophe, UTF-8
	testMDNSPort     = 8123
)

// testMDNSInstanceName is the instance's full name as github.com/miekg/dns
// shows names it unpacks, computed without the code under test.
func testMDNSInstanceName(t *testing.T) string {
	t.Helper()
	buf := make([]byte, 512)
	n, err := dns.PackDomainName(testMDNSInstance+"._http._tcp.local.", buf, 0, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	name, _, err := dns.UnpackDomainName(buf[:n], 0)
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// startTestAdvertiser advertises the test site with the addresses LANAddrs
// finds in the test LAN, and closes it at the end of the test.
func startTestAdvertiser(t *testing.T) *Advertiser {
	t.Helper()
	addrs, err := LANAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var ips []net.IP
	for _, a := range addrs {
		ips = append(ips, a.IP)
	}
	a, err := Advertise(MDNSOptions{Name: testMDNSName, Instance: testMDNSInstance, Port: testMDNSPort, IPs: ips})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return a
}

// waitAnnounced waits until the start-up announcements are over, so they
// cannot be taken for answers.
func waitAnnounced() { time.Sleep(mdnsAnnounceGap + 300*time.Millisecond) }

func testLANInterface(t *testing.T) *net.Interface {
	t.Helper()
	ifi, err := net.InterfaceByName(testLANIface)
	if err != nil {
		t.Fatal(err)
	}
	return ifi
}

// listenMDNSGroup opens a socket like a real mDNS querier's: bound to port
// 5353 (of any address, as Go binds multicast listeners) and joined to the
// group on the test LAN interface, so what it sends comes from port 5353.
func listenMDNSGroup(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenMulticastUDP("udp4", testLANInterface(t), mdnsGroup)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// ListenMulticastUDP turns loopback off; the advertiser is on this
	// same machine, so our queries must loop back to it.
	if err := ipv4.NewPacketConn(c).SetMulticastLoopback(true); err != nil {
		t.Fatal(err)
	}
	return c
}

func sendMDNS(t *testing.T, c *net.UDPConn, m *dns.Msg, to *net.UDPAddr) {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteToUDP(b, to); err != nil {
		t.Fatal(err)
	}
}

// mdnsReply is a response read by a test querier.
type mdnsReply struct {
	*dns.Msg
	from      *net.UDPAddr
	multicast bool // sent to the group, not to the querier's address
}

// readMDNS returns the first response read from c within d that accept
// takes, or nil.
func readMDNS(t *testing.T, c *net.UDPConn, d time.Duration, accept func(mdnsReply) bool) *mdnsReply {
	t.Helper()
	pc := ipv4.NewPacketConn(c)
	if err := pc.SetControlMessage(ipv4.FlagDst, true); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	for {
		n, cm, from, err := pc.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil
			}
			t.Fatal(err)
		}
		m := new(dns.Msg)
		if m.Unpack(buf[:n]) != nil || !m.Response {
			continue
		}
		r := mdnsReply{Msg: m, from: from.(*net.UDPAddr), multicast: cm != nil && cm.Dst.IsMulticast()}
		if accept == nil || accept(r) {
			return &r
		}
	}
}

// drainMDNS reads and drops what c has received, until it is quiet.
func drainMDNS(t *testing.T, c *net.UDPConn) {
	t.Helper()
	for readMDNS(t, c, 150*time.Millisecond, nil) != nil {
	}
}

func mdnsQuery(name string, qtype uint16, qu bool) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = false
	if qu {
		m.Question[0].Qclass |= mdnsUnicastBit
	}
	return m
}

// mdnsARecords lists the addresses of the A records for the test host in recs.
func mdnsARecords(recs []dns.RR) []string {
	var out []string
	for _, rr := range recs {
		if a, ok := rr.(*dns.A); ok && strings.EqualFold(a.Hdr.Name, testMDNSHost) {
			out = append(out, a.A.String())
		}
	}
	return out
}

func mdnsFindRR(recs []dns.RR, rrtype uint16, name string) dns.RR {
	for _, rr := range recs {
		if rr.Header().Rrtype == rrtype && strings.EqualFold(rr.Header().Name, name) {
			return rr
		}
	}
	return nil
}

// TestMDNSHashicorpClient looks the service up with hashicorp/mdns's own
// client, which queries from a random port (a legacy unicast query) and
// reads the unicast answer.
func TestMDNSHashicorpClient(t *testing.T) {
	if !enterTestLAN(t) {
		return
	}
	startTestAdvertiser(t)
	entries := make(chan *mdns.ServiceEntry, 16)
	err := mdns.QueryContext(context.Background(), &mdns.QueryParam{
		Service:     "_http._tcp",
		Domain:      "local",
		Timeout:     1500 * time.Millisecond,
		Entries:     entries,
		DisableIPv6: true,
		Logger:      log.New(mdnsLogWriter{t}, "hashicorp/mdns: ", 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	close(entries)
	want := testMDNSInstanceName(t)
	var found bool
	for e := range entries {
		t.Logf("entry: %+v", *e)
		if e.Name != want {
			continue
		}
		found = true
		if e.Host != testMDNSHost || e.Port != testMDNSPort || !e.AddrV4.Equal(testLANIP) ||
			len(e.InfoFields) != 1 || e.InfoFields[0] != "path=/" {
			t.Errorf("entry %+v: want host %s, port %d, address %s, TXT [path=/]", *e, testMDNSHost, testMDNSPort, testLANIP)
		}
	}
	if !found {
		t.Errorf("hashicorp/mdns client did not find %q", want)
	}
}

type mdnsLogWriter struct{ t *testing.T }

func (w mdnsLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestMDNSQueries sends queries as a real resolver would, from port 5353 to
// the group, and as a legacy resolver would, from another port, and checks
// how the answers come back.
func TestMDNSQueries(t *testing.T) {
	if !enterTestLAN(t) {
		return
	}
	a := startTestAdvertiser(t)
	group := listenMDNSGroup(t)
	waitAnnounced()
	drainMDNS(t, group)
	// answers takes the advertiser's responses with an answer (or a
	// negative answer) about name and qtype.
	answers := func(name string, qtype uint16) func(mdnsReply) bool {
		return func(r mdnsReply) bool {
			return r.from.IP.Equal(testLANIP) &&
				(mdnsFindRR(r.Answer, qtype, name) != nil || mdnsFindRR(r.Answer, dns.TypeNSEC, name) != nil)
		}
	}

	t.Run("multicast A", func(t *testing.T) {
		// Upper case: names are case-insensitive.
		sendMDNS(t, group, mdnsQuery("BEAKER-Test-Site.LOCAL.", dns.TypeA, false), mdnsGroup)
		r := readMDNS(t, group, 2*time.Second, answers(testMDNSHost, dns.TypeA))
		if r == nil {
			t.Fatal("no answer")
		}
		if !r.multicast || r.from.Port != mdnsPort {
			t.Errorf("answer from %v, multicast %v; want multicast from port 5353", r.from, r.multicast)
		}
		if r.Id != 0 || !r.Authoritative || len(r.Question) != 0 {
			t.Errorf("multicast answer header: %v", r.Msg)
		}
		// Only the address of the interface asked on: not eth9's or
		// docker9's, which phones on wlan5 cannot reach.
		if got := mdnsARecords(r.Answer); len(got) != 1 || got[0] != testLANIP.String() {
			t.Errorf("A records %v, want [%v]", got, testLANIP)
		}
		rr := mdnsFindRR(r.Answer, dns.TypeA, testMDNSHost)
		if rr.Header().Class != dns.ClassINET|mdnsCacheFlushBit || rr.Header().Ttl != mdnsTTL {
			t.Errorf("A record %v: want cache-flush class and TTL %d", rr, mdnsTTL)
		}
		nsec, ok := mdnsFindRR(r.Extra, dns.TypeNSEC, testMDNSHost).(*dns.NSEC)
		if !ok || len(nsec.TypeBitMap) != 1 || nsec.TypeBitMap[0] != dns.TypeA {
			t.Errorf("want an NSEC saying the host has only A records; additional: %v", r.Extra)
		}
	})

	t.Run("multicast AAAA", func(t *testing.T) {
		sendMDNS(t, group, mdnsQuery(testMDNSHost, dns.TypeAAAA, false), mdnsGroup)
		r := readMDNS(t, group, 2*time.Second, answers(testMDNSHost, dns.TypeAAAA))
		if r == nil {
			t.Fatal("no answer")
		}
		if !r.multicast || mdnsFindRR(r.Answer, dns.TypeNSEC, testMDNSHost) == nil || mdnsFindRR(r.Answer, dns.TypeAAAA, testMDNSHost) != nil {
			t.Errorf("want a negative (NSEC) answer by multicast: %v", r.Msg)
		}
		if got := mdnsARecords(r.Extra); len(got) != 1 {
			t.Errorf("want the A record as additional: %v", r.Extra)
		}
	})

	t.Run("multicast PTR", func(t *testing.T) {
		instance := testMDNSInstanceName(t)
		sendMDNS(t, group, mdnsQuery("_http._tcp.local.", dns.TypePTR, false), mdnsGroup)
		r := readMDNS(t, group, 2*time.Second, answers("_http._tcp.local.", dns.TypePTR))
		if r == nil {
			t.Fatal("no answer")
		}
		if !r.multicast {
			t.Error("answer not multicast")
		}
		ptr := mdnsFindRR(r.Answer, dns.TypePTR, "_http._tcp.local.").(*dns.PTR)
		if ptr.Ptr != instance || ptr.Hdr.Class != dns.ClassINET {
			t.Errorf("PTR %v: want %q, shared (no cache-flush)", ptr, instance)
		}
		srv, _ := mdnsFindRR(r.Extra, dns.TypeSRV, instance).(*dns.SRV)
		txt, _ := mdnsFindRR(r.Extra, dns.TypeTXT, instance).(*dns.TXT)
		if srv == nil || srv.Port != testMDNSPort || srv.Target != testMDNSHost {
			t.Errorf("SRV %v: want port %d, target %s", srv, testMDNSPort, testMDNSHost)
		}
		if txt == nil || len(txt.Txt) != 1 || txt.Txt[0] != "path=/" {
			t.Errorf("TXT %v: want path=/", txt)
		}
		if got := mdnsARecords(r.Extra); len(got) != 1 || got[0] != testLANIP.String() {
			t.Errorf("additional A records %v, want [%v]", got, testLANIP)
		}
	})

	t.Run("known answer suppression", func(t *testing.T) {
		instance := testMDNSInstanceName(t)
		q := mdnsQuery("_http._tcp.local.", dns.TypePTR, false)
		q.Answer = []dns.RR{&dns.PTR{
			Hdr: dns.RR_Header{Name: "_http._tcp.local.", Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: mdnsTTL - 10},
			Ptr: instance,
		}}
		sendMDNS(t, group, q, mdnsGroup)
		if r := readMDNS(t, group, 700*time.Millisecond, answers("_http._tcp.local.", dns.TypePTR)); r != nil {
			t.Errorf("answered a query that listed the answer as known: %v", r.Msg)
		}
		// A known answer with less than half its TTL left is refreshed.
		q.Answer[0].Header().Ttl = mdnsTTL/2 - 1
		sendMDNS(t, group, q, mdnsGroup)
		if r := readMDNS(t, group, 2*time.Second, answers("_http._tcp.local.", dns.TypePTR)); r == nil {
			t.Error("no answer when the known answer was about to expire")
		}
	})

	t.Run("legacy unicast", func(t *testing.T) {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// The instance name, with its space and UTF-8, over the wire.
		instance := testMDNSInstanceName(t)
		q := mdnsQuery(instance, dns.TypeSRV, false)
		q.Id = 4242
		sendMDNS(t, c, q, mdnsGroup)
		r := readMDNS(t, c, 2*time.Second, nil)
		if r == nil {
			t.Fatal("no unicast answer to a query from a port other than 5353")
		}
		if r.multicast || r.from.Port != mdnsPort || !r.from.IP.Equal(testLANIP) {
			t.Errorf("answer from %v, multicast %v; want unicast from %v:5353", r.from, r.multicast, testLANIP)
		}
		if r.Id != 4242 || len(r.Question) != 1 || r.Question[0].Name != instance {
			t.Errorf("legacy answer must repeat the ID and question: %v", r.Msg)
		}
		srv, _ := mdnsFindRR(r.Answer, dns.TypeSRV, instance).(*dns.SRV)
		if srv == nil || srv.Port != testMDNSPort {
			t.Fatalf("no SRV answer: %v", r.Msg)
		}
		for _, rr := range append(r.Answer, r.Extra...) {
			if h := rr.Header(); h.Ttl > mdnsLegacyMaxTTL || h.Class&mdnsCacheFlushBit != 0 {
				t.Errorf("legacy answer record %v: want TTL <= %d and no cache-flush bit", rr, mdnsLegacyMaxTTL)
			}
		}
		if got := mdnsARecords(r.Extra); len(got) != 1 || got[0] != testLANIP.String() {
			t.Errorf("additional A records %v, want [%v]", got, testLANIP)
		}

		sendMDNS(t, c, mdnsQuery(testMDNSHost, dns.TypeA, false), mdnsGroup)
		if r = readMDNS(t, c, 2*time.Second, nil); r == nil || len(mdnsARecords(r.Answer)) != 1 {
			t.Fatalf("legacy A query: %v", r)
		}
		// Nothing was multicast for the legacy queries.
		if r := readMDNS(t, group, 300*time.Millisecond, answers(testMDNSHost, dns.TypeA)); r != nil {
			t.Errorf("legacy query answered by multicast too: %v", r.Msg)
		}
	})

	t.Run("QU", func(t *testing.T) {
		drainMDNS(t, group)
		sendMDNS(t, group, mdnsQuery(testMDNSHost, dns.TypeA, true), mdnsGroup)
		r := readMDNS(t, group, 2*time.Second, answers(testMDNSHost, dns.TypeA))
		if r == nil {
			t.Fatal("no answer to a QU question")
		}
		if r.multicast || r.from.Port != mdnsPort || len(mdnsARecords(r.Answer)) != 1 {
			t.Errorf("QU question: want a unicast answer from port 5353, got multicast=%v from %v: %v", r.multicast, r.from, r.Msg)
		}
		if r := readMDNS(t, group, 300*time.Millisecond, answers(testMDNSHost, dns.TypeA)); r != nil {
			t.Errorf("QU question answered twice: %v", r.Msg)
		}

		// When the records were not multicast for a quarter of their TTL,
		// a QU question gets a multicast answer, refreshing all caches.
		a.mu.Lock()
		for _, iz := range a.ifaces {
			iz.lastMulticast = time.Now().Add(-time.Hour)
		}
		a.mu.Unlock()
		sendMDNS(t, group, mdnsQuery(testMDNSHost, dns.TypeA, true), mdnsGroup)
		if r := readMDNS(t, group, 2*time.Second, answers(testMDNSHost, dns.TypeA)); r == nil || !r.multicast {
			t.Errorf("stale records: want the QU question answered by multicast, got %v", r)
		}
	})

	t.Run("not ours", func(t *testing.T) {
		drainMDNS(t, group)
		sendMDNS(t, group, mdnsQuery("other-host.local.", dns.TypeA, false), mdnsGroup)
		sendMDNS(t, group, mdnsQuery("_ipp._tcp.local.", dns.TypePTR, false), mdnsGroup)
		sendMDNS(t, group, mdnsQuery(testMDNSInstanceName(t), dns.TypeA, false), mdnsGroup)
		if r := readMDNS(t, group, 500*time.Millisecond, func(r mdnsReply) bool { return r.from.IP.Equal(testLANIP) }); r != nil {
			t.Errorf("answered a query for records it does not have: %v", r.Msg)
		}
	})
}

// TestMDNSAnnounceAndGoodbye listens to the group while an Advertiser
// starts and stops: two announcements a second apart, then goodbyes.
func TestMDNSAnnounceAndGoodbye(t *testing.T) {
	if !enterTestLAN(t) {
		return
	}
	group := listenMDNSGroup(t)
	start := time.Now()
	a := startTestAdvertiser(t)
	instance := testMDNSInstanceName(t)
	announcement := func(ttl uint32) func(mdnsReply) bool {
		return func(r mdnsReply) bool {
			ptr := mdnsFindRR(r.Answer, dns.TypePTR, "_http._tcp.local.")
			// Announcements go out on every interface; take wlan5's.
			addrs := mdnsARecords(r.Answer)
			return r.multicast && ptr != nil && ptr.Header().Ttl == ttl && len(addrs) == 1 && addrs[0] == testLANIP.String()
		}
	}
	var times []time.Duration
	for i := 0; i < 2; i++ {
		r := readMDNS(t, group, 3*time.Second, announcement(mdnsTTL))
		if r == nil {
			t.Fatalf("announcement %d missing", i+1)
		}
		times = append(times, time.Since(start))
		for _, want := range []struct {
			t    uint16
			name string
		}{{dns.TypePTR, "_http._tcp.local."}, {dns.TypeSRV, instance}, {dns.TypeTXT, instance}, {dns.TypeA, testMDNSHost}, {dns.TypePTR, "_services._dns-sd._udp.local."}} {
			if mdnsFindRR(r.Answer, want.t, want.name) == nil {
				t.Errorf("announcement lacks %s %s: %v", dns.TypeToString[want.t], want.name, r.Msg)
			}
		}
	}
	if gap := times[1] - times[0]; gap < 800*time.Millisecond || gap > 1500*time.Millisecond {
		t.Errorf("announcements %v apart, want about 1s", gap)
	}
	if readMDNS(t, group, mdnsAnnounceGap+500*time.Millisecond, announcement(mdnsTTL)) != nil {
		t.Error("more than two announcements")
	}

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	r := readMDNS(t, group, 2*time.Second, announcement(0))
	if r == nil {
		t.Fatal("no goodbye")
	}
	for _, rr := range r.Answer {
		if rr.Header().Ttl != 0 || rr.Header().Class != dns.ClassINET {
			t.Errorf("goodbye record %v: want TTL 0, no cache-flush bit", rr)
		}
	}
	// Closed: no more answers.
	drainMDNS(t, group)
	sendMDNS(t, group, mdnsQuery(testMDNSHost, dns.TypeA, false), mdnsGroup)
	if r := readMDNS(t, group, 500*time.Millisecond, func(r mdnsReply) bool { return len(mdnsARecords(r.Answer)) > 0 }); r != nil {
		t.Errorf("answered after Close: %v", r.Msg)
	}
}

// mdnsWaitGoroutines waits a little for the goroutine count to fall to base:
// a goroutine that signalled it is done may still be exiting.
func mdnsWaitGoroutines(t *testing.T, base int) {
	t.Helper()
	n := 0
	for i := 0; i < 100; i++ {
		if n = runtime.NumGoroutine(); n <= base {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	buf := make([]byte, 1<<16)
	t.Fatalf("%d goroutines after Close, %d before Advertise:\n%s", n, base, buf[:runtime.Stack(buf, true)])
}

// TestAdvertiserCloseStopsEverything closes Advertisers in the middle of
// their announcements: Close must return at once, end every goroutine,
// free the socket and be safe to call again.
func TestAdvertiserCloseStopsEverything(t *testing.T) {
	if !enterTestLAN(t) {
		return
	}
	base := runtime.NumGoroutine()
	for i := 0; i < 3; i++ {
		a, err := Advertise(MDNSOptions{Name: testMDNSName, Instance: testMDNSInstance, Port: testMDNSPort, IPs: []net.IP{testLANIP}})
		if err != nil {
			t.Fatal(err)
		}
		if n := runtime.NumGoroutine(); n < base+2 {
			t.Errorf("%d goroutines running, %d before Advertise: want a reader and an announcer", n, base)
		}
		time.Sleep(100 * time.Millisecond)
		start := time.Now()
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Errorf("Close took %v", d)
		}
		if err := a.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		mdnsWaitGoroutines(t, base)
	}
	// With Iface set it listens on that interface only.
	a, err := Advertise(MDNSOptions{Name: testMDNSName, Port: testMDNSPort, IPs: []net.IP{testLANIP}, Iface: testLANInterface(t)})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.ifaces) != 1 || a.ifaces[0].ifi.Name != testLANIface {
		t.Errorf("Iface %s: listening on %v", testLANIface, a.ifaces)
	}
	time.Sleep(2 * mdnsAnnounceGap) // let the announcer finish by itself
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	mdnsWaitGoroutines(t, base)
}

// ---- Interoperability with other mDNS implementations ----

// testMDNSInteropNeeds skips (or under CI fails) a test whose tools are
// missing; interop tests also skip in -short mode.
func testMDNSInteropNeeds(t *testing.T, install string, tools ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("interoperability test: runs without -short")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			testLANSkipOrFail(t, "%s not found: %s", tool, install)
		}
	}
}

// testLANCommand runs name in the named network namespace ("" for this one).
func testLANCommand(ctx context.Context, netns, name string, args ...string) *exec.Cmd {
	if netns == "" {
		return exec.CommandContext(ctx, name, args...)
	}
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", netns, name}, args...)...)
}

// testMDNSQueriers are where the other implementations run: on another
// machine of the LAN (the peer namespace, through the veth link) and on
// this one, beside the Advertiser.
var testMDNSQueriers = []struct {
	name, netns, iface string
	ip                 net.IP
}{
	{"other host", testLANPeerNS, "wlan5p", testLANPeer},
	{"same host", "", testLANIface, testLANIP},
}

// mdnsLockedBuffer is a bytes.Buffer safe to read while a process writes it.
type mdnsLockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *mdnsLockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *mdnsLockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// mdnsStartBackground starts cmd and stops it (SIGTERM, then SIGKILL) when the
// test ends.
func mdnsStartBackground(t *testing.T, cmd *exec.Cmd, out *mdnsLockedBuffer) {
	t.Helper()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
}

// startAvahi runs a private D-Bus system bus and avahi-daemon in netns on
// iface, and returns the environment avahi-browse and avahi-resolve need.
func startAvahi(t *testing.T, netns, iface, hostName string) []string {
	t.Helper()
	dir := t.TempDir()
	bus := filepath.Join(dir, "bus")
	busConf := filepath.Join(dir, "bus.conf")
	avahiConf := filepath.Join(dir, "avahi-daemon.conf")
	writeFile := func(name, text string) {
		if err := os.WriteFile(name, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(busConf, `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=`+bus+`</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
`)
	writeFile(avahiConf, `[server]
host-name=`+hostName+`
use-ipv4=yes
use-ipv6=no
allow-interfaces=`+iface+`
enable-dbus=yes
[wide-area]
enable-wide-area=no
[publish]
disable-publishing=yes
[reflector]
enable-reflector=no
`)
	var busOut mdnsLockedBuffer
	mdnsStartBackground(t, exec.Command("dbus-daemon", "--config-file="+busConf, "--nofork", "--nopidfile", "--nosyslog"), &busOut)
	for i := 0; ; i++ {
		if _, err := os.Stat(bus); err == nil {
			break
		}
		if i == 100 {
			t.Fatalf("dbus-daemon did not start:\n%s", busOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	env := append(os.Environ(), "DBUS_SYSTEM_BUS_ADDRESS=unix:path="+bus)

	var avahiOut mdnsLockedBuffer
	cmd := testLANCommand(context.Background(), netns, "avahi-daemon", "-f", avahiConf, "--no-drop-root", "--no-chroot", "--no-rlimits", "--no-proc-title")
	cmd.Env = env
	mdnsStartBackground(t, cmd, &avahiOut)
	for i := 0; !strings.Contains(avahiOut.String(), "Server startup complete"); i++ {
		if i == 200 || cmd.ProcessState != nil {
			t.Fatalf("avahi-daemon did not start:\n%s", avahiOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("avahi-daemon output:\n%s", avahiOut.String())
		}
	})
	return env
}

// unescapeAvahi undoes avahi's escaping of labels (\DDD and \c).
func unescapeAvahi(s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 >= len(s) {
			b = append(b, s[i])
			continue
		}
		if i+3 < len(s) {
			if n, err := strconv.Atoi(s[i+1 : i+4]); err == nil && n < 256 {
				b = append(b, byte(n))
				i += 3
				continue
			}
		}
		b = append(b, s[i+1])
		i++
	}
	return string(b)
}

// TestMDNSAvahi resolves the host name and browses the service with
// Avahi's command-line tools, from another host and from this one.
func TestMDNSAvahi(t *testing.T) {
	testMDNSInteropNeeds(t, "apt-get install avahi-daemon avahi-utils dbus-daemon",
		"avahi-daemon", "avahi-browse", "avahi-resolve", "dbus-daemon")
	if os.Geteuid() != 0 {
		// In a user namespace avahi-daemon cannot give its runtime
		// directory to the avahi user.
		testLANSkipOrFail(t, "the Avahi test needs root")
	}
	if !enterTestLAN(t) {
		return
	}
	for _, where := range testMDNSQueriers {
		t.Run(where.name, func(t *testing.T) {
			var env []string
			avahiName := "avahi-" + strings.ReplaceAll(where.name, " ", "-")
			if where.netns == "" {
				// On this host, Avahi first, as on a desktop where it
				// runs from boot: its socket is then bound to port 5353
				// before ours, so unicast answers to port 5353 would
				// reach our socket, not Avahi's; only multicast answers
				// reach both. It also hears the announcements.
				env = startAvahi(t, where.netns, where.iface, avahiName)
				startTestAdvertiser(t)
			} else {
				// On the other host, Avahi after the announcements: all
				// it learns comes from answers to its queries.
				startTestAdvertiser(t)
				waitAnnounced()
				env = startAvahi(t, where.netns, where.iface, avahiName)
			}
			run := func(args ...string) (string, error) {
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, args[0], args[1:]...)
				cmd.Env = env
				out, err := cmd.CombinedOutput()
				return string(out), err
			}

			wantResolve := testMDNSName + ".local\t" + testLANIP.String()
			var out string
			for deadline := time.Now().Add(20 * time.Second); ; {
				var err error
				out, err = run("avahi-resolve", "-4", "-n", testMDNSName+".local")
				if err == nil && strings.TrimSpace(out) == wantResolve {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("avahi-resolve -4 -n %s.local: %v\n%s", testMDNSName, err, out)
				}
				time.Sleep(300 * time.Millisecond)
			}

			// -r resolve, -p parsable, -t terminate after the cache
			// is dumped, -k no service type lookup.
			// =;iface;proto;name;type;domain;host;address;port;txt
			for deadline := time.Now().Add(20 * time.Second); ; {
				var err error
				out, err = run("avahi-browse", "-rptk", "_http._tcp")
				ok := false
				for _, line := range strings.Split(out, "\n") {
					f := strings.Split(line, ";")
					if len(f) < 10 || f[0] != "=" {
						continue
					}
					if unescapeAvahi(f[3]) == testMDNSInstance {
						ok = true
						want := []string{testMDNSName + ".local", testLANIP.String(), strconv.Itoa(testMDNSPort), `"path=/"`}
						if got := f[6:10]; strings.Join(got, ";") != strings.Join(want, ";") {
							t.Errorf("avahi-browse: %q\nwant host;address;port;txt %q", line, want)
						}
					}
				}
				if ok {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("avahi-browse -rptk _http._tcp did not list %q: %v\n%s", testMDNSInstance, err, out)
				}
				time.Sleep(300 * time.Millisecond)
			}
		})
	}
}

// testMDNSNodeScript queries like a Node.js app using the npm package
// multicast-dns (bonjour-service and others build on it): from port 5353,
// answers expected by multicast. It prints what it found as JSON.
const testMDNSNodeScript = `
const [host, iface] = process.argv.slice(2)
const mdns = require('multicast-dns')({ interface: iface, bind: '0.0.0.0' })
const found = { a: [], instance: null, srv: {}, txt: {}, from: [] }
let listening = false
function done () {
  const i = found.instance
  return found.a.length > 0 && i && found.srv[i] && found.txt[i]
}
mdns.on('response', (res, rinfo) => {
  if (!listening) return
  for (const rr of res.answers.concat(res.additionals)) {
    if (rr.type === 'A' && rr.name.toLowerCase() === host && !found.a.includes(rr.data)) found.a.push(rr.data)
    if (rr.type === 'PTR' && rr.name === '_http._tcp.local') found.instance = rr.data
    if (rr.type === 'SRV') found.srv[rr.name] = rr.data
    if (rr.type === 'TXT') found.txt[rr.name] = rr.data.map(b => b.toString())
  }
  if (!found.from.includes(rinfo.address + ':' + rinfo.port)) found.from.push(rinfo.address + ':' + rinfo.port)
  if (done()) {
    console.log(JSON.stringify(found))
    mdns.destroy()
    process.exit(0)
  }
})
mdns.on('warning', (e) => console.error('warning', e.message))
function ask () {
  mdns.query([{ name: host, type: 'A' }])
  mdns.query([{ name: '_http._tcp.local', type: 'PTR' }])
}
// Bound to port 5353; wait for "go" on stdin before asking and listening.
mdns.on('ready', () => {
  console.error('ready')
  process.stdin.once('data', () => {
    listening = true
    ask()
    setInterval(ask, 1000)
    setTimeout(() => { console.log(JSON.stringify(found)); process.exit(1) }, 8000)
  })
})
`

// mdnsNodeModulesWith finds the node_modules folder holding pkg: NODE_PATH's,
// then npm's global one.
func mdnsNodeModulesWith(pkg string) string {
	dirs := filepath.SplitList(os.Getenv("NODE_PATH"))
	if out, err := exec.Command("npm", "root", "-g").Output(); err == nil {
		dirs = append(dirs, strings.TrimSpace(string(out)))
	}
	dirs = append(dirs, "/usr/local/lib/node_modules", "/usr/lib/node_modules")
	for _, d := range dirs {
		if d == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, pkg, "package.json")); err == nil {
			return d
		}
	}
	return ""
}

// TestMDNSNodeMulticastDNS resolves the host name and browses the service
// with the npm package multicast-dns, from another host and from this one.
func TestMDNSNodeMulticastDNS(t *testing.T) {
	testMDNSInteropNeeds(t, "apt-get install nodejs", "node")
	modules := mdnsNodeModulesWith("multicast-dns")
	if modules == "" {
		testLANSkipOrFail(t, "npm package multicast-dns not found in NODE_PATH or npm's global folder: npm install -g multicast-dns@7")
	}
	if !enterTestLAN(t) {
		return
	}
	script := filepath.Join(t.TempDir(), "query.js")
	if err := os.WriteFile(script, []byte(testMDNSNodeScript), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, where := range testMDNSQueriers {
		t.Run(where.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := testLANCommand(ctx, where.netns, "node", script, testMDNSName+".local", where.ip.String())
			cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
			var stdout, stderr mdnsLockedBuffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// The querier's socket is bound before ours (see TestMDNSAvahi).
			for i := 0; !strings.Contains(stderr.String(), "ready"); i++ {
				if i == 200 {
					cancel()
					cmd.Wait()
					t.Fatalf("node did not start:\n%s", stderr.String())
				}
				time.Sleep(25 * time.Millisecond)
			}
			startTestAdvertiser(t)
			// Only then does it ask, and takes note of what it hears:
			// answers to its queries, not the announcements.
			waitAnnounced()
			if _, err := io.WriteString(stdin, "go\n"); err != nil {
				t.Fatal(err)
			}
			err = cmd.Wait()
			out := []byte(stdout.String())
			if err != nil {
				t.Fatalf("node: %v\nfound: %s\n%s", err, out, stderr.String())
			}
			var found struct {
				A        []string
				Instance string
				SRV      map[string]struct {
					Port   int
					Target string
				}
				TXT  map[string][]string
				From []string
			}
			if err := json.Unmarshal(out, &found); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			t.Logf("multicast-dns found %s", out)
			wantInstance := testMDNSInstance + "._http._tcp.local"
			srv := found.SRV[wantInstance]
			if found.Instance != wantInstance || srv.Port != testMDNSPort || srv.Target != testMDNSName+".local" ||
				fmt.Sprint(found.TXT[wantInstance]) != "[path=/]" {
				t.Errorf("multicast-dns found %s\nwant instance %q, port %d, target %s.local, TXT [path=/]",
					out, wantInstance, testMDNSPort, testMDNSName)
			}
			// Another host gets the address of the link it is on. On this
			// host, the announcements made on the other interfaces loop
			// back too, and their addresses are as good: all are ours.
			wantA := map[string]bool{testLANIP.String(): true}
			if where.netns == "" {
				addrs, _ := LANAddrs()
				for _, a := range addrs {
					wantA[a.IP.String()] = true
				}
			}
			for _, a := range found.A {
				if !wantA[a] {
					t.Errorf("A record %s: not an address of %s's link", a, where.name)
				}
			}
			if len(found.A) == 0 || (where.netns != "" && len(found.A) != 1) {
				t.Errorf("A records %v, want [%s]", found.A, testLANIP)
			}
		})
	}
}
