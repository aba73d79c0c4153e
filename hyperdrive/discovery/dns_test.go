package discovery

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/beaker-dev/beaker-dev/hyperdrive/names/namestest"
)

// dnsCheckLeaks fails the test if a goroutine of a DNSServer or DNSClient
// is still running once the test's other cleanups (which close them) ran.
// Call it first, so that its cleanup runs last.
func dnsCheckLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			leaked := dnsGoroutines()
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%d goroutines leaked:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// dnsGoroutines returns the stacks of the goroutines running code of the
// DNS server or client.
func dnsGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "discovery.(*DNSServer)") || strings.Contains(g, "discovery.(*DNSClient)") {
			out = append(out, g)
		}
	}
	return out
}

func startDNSServer(t *testing.T, opts DNSServerOptions) (*DNSServer, netip.AddrPort) {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	s, err := ListenDNS("127.0.0.1:0", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s, s.Addr().(*net.UDPAddr).AddrPort()
}

func newTestDNSClient(t *testing.T, opts DNSClientOptions) *DNSClient {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	c, err := NewDNSClientWithOptions(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

func testDNSID(name string) string {
	key := sha256.Sum256([]byte(name))
	return DNSID(key[:])
}

func dnsMustLookup(t *testing.T, c *DNSClient, id string) []netip.AddrPort {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	peers, err := c.Lookup(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return peers
}

// eventually polls cond for up to 5 s.
func dnsEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func dnsRecvPeer(t *testing.T, ch <-chan netip.AddrPort, want netip.AddrPort) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case p, ok := <-ch:
			if !ok {
				t.Fatalf("subscription closed before %v arrived", want)
			}
			if p == want {
				return
			}
			t.Logf("subscription: %v (waiting for %v)", p, want)
		case <-timeout:
			t.Fatalf("timed out waiting for %v on the subscription", want)
		}
	}
}

// dnsTestMsg is a query for name with, when kv is given, the additional
// TXT record of dns-discovery's clients (strings written as given).
func dnsTestMsg(name string, qtype uint16, kv ...string) *dns.Msg {
	m := new(dns.Msg)
	m.RecursionDesired = true
	m.Question = []dns.Question{{Name: dns.Fqdn(name), Qtype: qtype, Qclass: dns.ClassINET}}
	if len(kv) > 0 {
		var txt []string
		for i := 0; i+1 < len(kv); i += 2 {
			txt = append(txt, kv[i]+"="+kv[i+1])
		}
		m.Extra = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: txt}}
	}
	return m
}

// rawDNS is a bare UDP socket that talks DNS to a server, to send what our
// client never would.
type rawDNS struct {
	t    *testing.T
	conn *net.UDPConn
	to   netip.AddrPort
	id   uint16
}

func newRawDNS(t *testing.T, to netip.AddrPort) *rawDNS {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawDNS{t: t, conn: conn, to: to, id: 100}
}

func (r *rawDNS) addr() netip.AddrPort { return r.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (r *rawDNS) sendBytes(pkt []byte) {
	r.t.Helper()
	if _, err := r.conn.WriteToUDPAddrPort(pkt, r.to); err != nil {
		r.t.Fatal(err)
	}
}

// query sends m and returns the response with its ID, skipping pushes.
func (r *rawDNS) query(m *dns.Msg) *dns.Msg {
	r.t.Helper()
	r.id++
	m.Id = r.id
	pkt, err := m.Pack()
	if err != nil {
		r.t.Fatal(err)
	}
	r.sendBytes(pkt)
	for {
		resp, _ := r.read(3 * time.Second)
		if resp == nil {
			r.t.Fatalf("no response to %v", m.Question)
		}
		if resp.Response && resp.Id == m.Id {
			return resp
		}
	}
}

// read returns the next DNS message and its raw bytes, or nil after d.
func (r *rawDNS) read(d time.Duration) (*dns.Msg, []byte) {
	r.t.Helper()
	buf := make([]byte, 65536)
	r.conn.SetReadDeadline(time.Now().Add(d))
	n, err := r.conn.Read(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, nil
		}
		r.t.Fatal(err)
	}
	m := new(dns.Msg)
	if err := m.Unpack(buf[:n]); err != nil {
		r.t.Fatalf("unpack: %v", err)
	}
	return m, buf[:n]
}

// probe returns the token the server gives this socket.
func (r *rawDNS) probe() string {
	r.t.Helper()
	resp := r.query(dnsTestMsg("dat.local", dns.TypeTXT))
	data := dnsFirstTXT(resp)
	if data["token"].val == "" {
		r.t.Fatalf("probe: no token in %v", resp)
	}
	return data["token"].val
}

func (s *DNSServer) testToken(prev bool, host netip.Addr) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if prev {
		return dnsToken(&s.secrets[0], host)
	}
	return dnsToken(&s.secrets[1], host)
}

func (s *DNSServer) testRotate() {
	s.mu.Lock()
	s.rotateSecretsLocked()
	s.mu.Unlock()
}

func (s *DNSServer) testCounts(id string) (announces, subs int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.announces.expire(now)
	s.subs.expire(now)
	return s.announces.count(id), s.subs.count(id)
}

func (s *DNSServer) testPeers(id string) []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.announces.sample(id, 1<<20, time.Now())
	slices.SortFunc(p, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return p
}

// dnsLo is 127.0.0.1:port.
func dnsLo(port int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port))
}

// TestDNSWireFormat checks the bytes of our server's answers against the
// layouts read from dns-discovery's source.
func TestDNSWireFormat(t *testing.T) {
	dnsCheckLeaks(t)
	s, addr := startDNSServer(t, DNSServerOptions{})
	r := newRawDNS(t, addr)
	id := testDNSID("wire")

	// The probe: token, host, port, in that order, in one TXT record named
	// as asked, TTL 0; the response has the query's ID and questions and
	// only the QR flag.
	q := dnsTestMsg("Dat.Local", dns.TypeTXT)
	resp := r.query(q)
	pkt, _ := resp.Pack()
	if flags := binary.BigEndian.Uint16(pkt[2:4]); flags != 0x8000 {
		t.Errorf("flags %#04x, want 0x8000 (QR only)", flags)
	}
	if len(resp.Question) != 1 || resp.Question[0] != q.Question[0] {
		t.Errorf("questions %v, want %v echoed", resp.Question, q.Question)
	}
	if len(resp.Answer) != 1 {
		t.Fatalf("answers %v", resp.Answer)
	}
	txt := resp.Answer[0].(*dns.TXT)
	tok := s.testToken(false, dnsLo(0).Addr())
	want := []string{"token=" + tok, "host=127.0.0.1", "port=" + strconv.Itoa(int(r.addr().Port()))}
	if txt.Hdr.Name != "Dat.Local." || txt.Hdr.Ttl != 0 || txt.Hdr.Class != dns.ClassINET || !slices.Equal(txt.Txt, want) {
		t.Errorf("probe answer %v, want TXT %q named Dat.Local. TTL 0", txt, want)
	}
	// The token is base64(sha256(secret || "127.0.0.1")).
	s.mu.Lock()
	h := sha256.Sum256(append(s.secrets[1][:], "127.0.0.1"...))
	s.mu.Unlock()
	if tok != base64.StdEncoding.EncodeToString(h[:]) {
		t.Errorf("token %q is not base64(sha256(secret || host))", tok)
	}

	// An announce: its answer lists no peer yet (answers come first).
	resp = r.query(dnsTestMsg(id+".dat.local", dns.TypeTXT, "subscribe", "true", "token", tok, "announce", "7000"))
	if got := resp.Answer[0].(*dns.TXT).Txt; !slices.Equal(got, []string{"token=" + tok}) {
		t.Errorf("announce answer %q, want only the token", got)
	}
	// A lookup: peers= is base64 of 127.0.0.1 and port 7000 (0x1b58).
	resp = r.query(dnsTestMsg(id+".dat.local", dns.TypeTXT))
	wantPeers := base64.StdEncoding.EncodeToString([]byte{127, 0, 0, 1, 0x1b, 0x58})
	if got := resp.Answer[0].(*dns.TXT).Txt; !slices.Equal(got, []string{"token=" + tok, "peers=" + wantPeers}) {
		t.Errorf("lookup answer %q, want token and peers=%s", got, wantPeers)
	}
	// A and SRV questions list the peers as records.
	resp = r.query(dnsTestMsg(id+".dat.local", dns.TypeA))
	if len(resp.Answer) != 1 || resp.Answer[0].(*dns.A).A.String() != "127.0.0.1" {
		t.Errorf("A answer %v", resp.Answer)
	}
	resp = r.query(dnsTestMsg(id+".dat.local", dns.TypeSRV))
	if len(resp.Answer) != 1 || resp.Answer[0].(*dns.SRV).Port != 7000 || resp.Answer[0].(*dns.SRV).Target != "127.0.0.1." {
		t.Errorf("SRV answer %v", resp.Answer)
	}
	// Other names get an empty response.
	resp = r.query(dnsTestMsg("example.com", dns.TypeTXT))
	if len(resp.Answer) != 0 {
		t.Errorf("answer outside the domain: %v", resp.Answer)
	}

	// A push: a query with RD, no question and one SRV record for the ID,
	// resent twice while unacknowledged.
	c := newTestDNSClient(t, DNSClientOptions{Servers: []string{addr.String()}})
	if err := c.Announce(context.Background(), id, 7001); err != nil {
		t.Fatal(err)
	}
	var ids []uint16
	for len(ids) < 4 {
		wait := 2500 * time.Millisecond
		if len(ids) == 3 {
			wait = time.Second // no fourth
		}
		m, raw := r.read(wait)
		if m == nil {
			break
		}
		if flags := binary.BigEndian.Uint16(raw[2:4]); flags != 0x0100 {
			t.Errorf("push flags %#04x, want 0x0100 (RD)", flags)
		}
		srv, ok := m.Extra[0].(*dns.SRV)
		if m.Response || len(m.Question) != 0 || len(m.Extra) != 1 || !ok ||
			srv.Hdr.Name != id+".dat.local." || srv.Port != 7001 || srv.Target != "127.0.0.1." || srv.Priority != 0 || srv.Weight != 0 {
			t.Errorf("push %v", m)
		}
		ids = append(ids, m.Id)
	}
	if len(ids) != 3 || ids[0] != ids[1] || ids[1] != ids[2] {
		t.Errorf("push IDs %v, want one push sent 3 times", ids)
	}
}

// TestDNSLoopback runs our client against our server: announce, lookup,
// implied port, unannounce when the context ends.
func TestDNSLoopback(t *testing.T) {
	dnsCheckLeaks(t)
	s, addr := startDNSServer(t, DNSServerOptions{})
	a := newTestDNSClient(t, DNSClientOptions{Servers: []string{addr.String()}})
	b := newTestDNSClient(t, DNSClientOptions{Servers: []string{addr.String()}, Domain: "dat.local"})
	id := testDNSID("dnsLo(0).Addr()")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := a.Announce(ctx, id, 7100); err != nil {
		t.Fatal(err)
	}
	implied, cancelImplied := context.WithCancel(context.Background())
	defer cancelImplied()
	if err := a.Announce(implied, id, 0); err != nil {
		t.Fatal(err)
	}
	impliedPeer := dnsLo(int(a.LocalAddr().Port()))
	got := dnsMustLookup(t, b, id)
	if len(got) != 2 || !slices.Contains(got, impliedPeer) || !slices.Contains(got, dnsLo(7100)) {
		t.Fatalf("lookup %v, want 127.0.0.1:7100 and %v", got, impliedPeer)
	}
	if got := dnsMustLookup(t, b, testDNSID("nobody")); len(got) != 0 {
		t.Errorf("lookup of an unknown id: %v", got)
	}

	cancel()
	dnsEventually(t, "the unannounce", func() bool { return !slices.Contains(s.testPeers(id), dnsLo(7100)) })
	if got := dnsMustLookup(t, b, id); !slices.Equal(got, []netip.AddrPort{impliedPeer}) {
		t.Errorf("lookup after unannounce %v, want [%v]", got, impliedPeer)
	}
	// Close unannounces what is still announced.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	dnsEventually(t, "the unannounce on Close", func() bool { return len(s.testPeers(id)) == 0 })
	if err := a.Announce(context.Background(), id, 1); err == nil {
		t.Error("Announce on a closed client succeeded")
	}
}

// TestDNSTokens checks that only a token issued to the announcer's own
// address, under the current or the previous secret, is accepted.
func TestDNSTokens(t *testing.T) {
	dnsCheckLeaks(t)
	s, addr := startDNSServer(t, DNSServerOptions{})
	r := newRawDNS(t, addr)
	id := testDNSID("tokens")
	announce := func(kv ...string) {
		r.query(dnsTestMsg(id+".dat.local", dns.TypeTXT, kv...))
	}
	forged := []struct {
		name string
		kv   []string
	}{
		{"no token", []string{"announce", "7200", "subscribe", "true"}},
		{"forged token", []string{"token", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "announce", "7200", "subscribe", "true"}},
		{"token of another address", []string{"token", s.testToken(false, netip.MustParseAddr("10.0.0.1")), "announce", "7200", "subscribe", "true"}},
		{"empty token", []string{"token", "", "announce", "7200", "subscribe", "true"}},
	}
	for _, f := range forged {
		announce(f.kv...)
		if n, subs := s.testCounts(id); n != 0 || subs != 0 {
			t.Fatalf("%s: accepted (%d announces, %d subscriptions)", f.name, n, subs)
		}
	}
	// A bare "token" string is JavaScript's true, never a token.
	m := dnsTestMsg(id+".dat.local", dns.TypeTXT)
	m.Extra = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: id + ".dat.local.", Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: []string{"token", "announce=7200"}}}
	r.query(m)
	if n, _ := s.testCounts(id); n != 0 {
		t.Fatal("bare token accepted")
	}

	tok := r.probe()
	announce("token", tok, "announce", "7200")
	if got := s.testPeers(id); !slices.Equal(got, []netip.AddrPort{dnsLo(7200)}) {
		t.Fatalf("valid token: peers %v", got)
	}
	// After one rotation the token is the previous secret's: still valid.
	s.testRotate()
	announce("token", tok, "announce", "7201")
	if got := s.testPeers(id); !slices.Contains(got, dnsLo(7201)) {
		t.Fatalf("token of the previous secret refused: %v", got)
	}
	// After two it is refused.
	s.testRotate()
	announce("token", tok, "announce", "7202")
	if got := s.testPeers(id); slices.Contains(got, dnsLo(7202)) {
		t.Fatalf("token older than two rotations accepted: %v", got)
	}
	// An unannounce needs a valid token too.
	announce("token", "forged", "unannounce", "7200")
	if got := s.testPeers(id); !slices.Contains(got, dnsLo(7200)) {
		t.Fatalf("unannounce with a forged token: %v", got)
	}
	announce("token", r.probe(), "unannounce", "7200")
	if got := s.testPeers(id); slices.Contains(got, dnsLo(7200)) {
		t.Fatalf("unannounce with a valid token ignored: %v", got)
	}
}

// TestDNSClientNewToken: when a server no longer accepts the client's token
// (it restarted, or the token is older than two rotations), the answer's
// new token makes the client send the announce again at once.
func TestDNSClientNewToken(t *testing.T) {
	dnsCheckLeaks(t)
	s, addr := startDNSServer(t, DNSServerOptions{})
	c := newTestDNSClient(t, DNSClientOptions{Servers: []string{addr.String()}, AnnounceInterval: 200 * time.Millisecond})
	id := testDNSID("new token")
	if err := c.Announce(context.Background(), id, 7300); err != nil {
		t.Fatal(err)
	}
	s.testRotate()
	s.testRotate()
	s.mu.Lock()
	s.announces.remove(id, dnsLo(7300))
	s.mu.Unlock()
	dnsEventually(t, "the announce with the new token", func() bool {
		return slices.Equal(s.testPeers(id), []netip.AddrPort{dnsLo(7300)})
	})
}

// TestDNSExpiry: announces and subscriptions expire without renewal, and
// the client's renewals keep them.
func TestDNSExpiry(t *testing.T) {
	dnsCheckLeaks(t)
	ttl := 400 * time.Millisecond
	s, addr := startDNSServer(t, DNSServerOptions{TTL: ttl, SubscriptionTTL: ttl})
	r := newRawDNS(t, addr)
	id := testDNSID("expiry")
	r.query(dnsTestMsg(id+".dat.local", dns.TypeTXT, "subscribe", "true", "token", r.probe(), "announce", "7400"))
	if n, subs := s.testCounts(id); n != 1 || subs != 1 {
		t.Fatalf("%d announces, %d subscriptions, want 1 and 1", n, subs)
	}
	// The maintenance goroutine sweeps them without being asked.
	start := time.Now()
	dnsEventually(t, "the sweep", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.announces.len()+s.subs.len() == 0
	})
	if d := time.Since(start); d < ttl/2 {
		t.Errorf("swept after %v, before the TTL", d)
	}
	if n, subs := s.testCounts(id); n != 0 || subs != 0 {
		t.Fatalf("after the TTL: %d announces, %d subscriptions, want none", n, subs)
	}

	c := newTestDNSClient(t, DNSClientOptions{
		Servers:           []string{addr.String()},
		AnnounceInterval:  ttl / 4,
		SubscribeInterval: ttl / 4,
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := c.Announce(ctx, id, 7401); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Subscribe(ctx, id); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * ttl)
	if n, subs := s.testCounts(id); n != 1 || subs != 1 {
		t.Fatalf("with renewals: %d announces, %d subscriptions, want 1 and 1", n, subs)
	}
	// Ending the subscription unsubscribes at once.
	cancel()
	dnsEventually(t, "the unsubscribe", func() bool { _, subs := s.testCounts(id); return subs == 0 })
}

// TestDNSUnannounce: unannounce=PORT removes an announce, unannounce=0 the
// implied one.
func TestDNSUnannounce(t *testing.T) {
	dnsCheckLeaks(t)
	s, addr := startDNSServer(t, DNSServerOptions{})
	r := newRawDNS(t, addr)
	id := testDNSID("unannounce")
	tok := r.probe()
	name := id + ".dat.local"
	r.query(dnsTestMsg(name, dns.TypeTXT, "token", tok, "announce", "7500"))
	r.query(dnsTestMsg(name, dns.TypeTXT, "token", tok, "announce", "0"))
	want := []netip.AddrPort{r.addr(), dnsLo(7500)}
	slices.SortFunc(want, func(a, b netip.AddrPort) int { return a.Compare(b) })
	if got := s.testPeers(id); !slices.Equal(got, want) {
		t.Fatalf("peers %v, want %v", got, want)
	}
	r.query(dnsTestMsg(name, dns.TypeTXT, "token", tok, "unannounce", "0"))
	r.query(dnsTestMsg(name, dns.TypeTXT, "token", tok, "unannounce", "7500"))
	if got := s.testPeers(id); len(got) != 0 {
		t.Fatalf("peers after unannounce: %v", got)
	}
}

// TestDNSMalformed sends what no client should; the server must neither
// crash nor store anything, and keep answering.
func TestDNSMalformed(t *testing.T) {
	dnsCheckLeaks(t)
	s, addr := startDNSServer(t, DNSServerOptions{})
	r := newRawDNS(t, addr)
	tok := r.probe()
	id := testDNSID("malformed")
	name := id + ".dat.local"

	good, _ := dnsTestMsg(name, dns.TypeTXT, "token", tok, "announce", "7600").Pack()
	for _, pkt := range [][]byte{
		nil,
		{0},
		[]byte("definitely not DNS"),
		good[:12],
		good[:len(good)-3],
		append(slices.Clone(good[:4]), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), // huge counts
		// A compression loop in the question name.
		{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 16, 0, 1},
	} {
		r.sendBytes(pkt)
	}
	bad := [][]string{
		{"token", tok, "announce", "99999"},
		{"token", tok, "announce", "123456"},
		{"token", tok, "announce", "-1"},
		{"token", tok, "announce", "0x50"},
		{"token", tok, "announce", " 80"},
		{"token", tok, "announce", ""},
		{"token", tok, "unannounce", "abc"},
	}
	for _, kv := range bad {
		r.query(dnsTestMsg(name, dns.TypeTXT, kv...))
	}
	// A record under another domain or at the apex announces nothing.
	r.query(dnsTestMsg(id+".example.com", dns.TypeTXT, "token", tok, "announce", "7600"))
	r.query(dnsTestMsg("dat.local", dns.TypeTXT, "token", tok, "announce", "7600"))
	// A response is never answered.
	resp := dnsTestMsg(name, dns.TypeTXT, "token", tok, "announce", "7600")
	resp.Response = true
	pkt, _ := resp.Pack()
	r.sendBytes(pkt)
	// Too many questions: dropped.
	many := dnsTestMsg(name, dns.TypeTXT)
	for range dnsMaxQuestions {
		many.Question = append(many.Question, many.Question[0])
	}
	pkt, _ = many.Pack()
	r.sendBytes(pkt)
	if m, _ := r.read(300 * time.Millisecond); m != nil {
		t.Errorf("answered a response or an oversized query: %v", m)
	}
	if n, _ := s.testCounts(id); n != 0 {
		t.Errorf("malformed announces stored: %v", s.testPeers(id))
	}
	// Still alive, and an escaped TXT string decodes as it is sent.
	r.query(dnsTestMsg(name, dns.TypeTXT, "token", tok, "announce", `76\048\048`))
	if got := s.testPeers(id); !slices.Equal(got, []netip.AddrPort{dnsLo(7600)}) {
		t.Errorf("after malformed packets: peers %v, want [127.0.0.1:7600]", got)
	}
}

// TestDNSCaps fills the store from many addresses through the handler and
// checks the caps and which entries make room.
func TestDNSCaps(t *testing.T) {
	s, err := newDNSServer(DNSServerOptions{MaxAnnounces: 10, MaxPerID: 4, MaxPerHost: 3})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	announce := func(from netip.AddrPort, id string, port int) {
		t.Helper()
		m := dnsTestMsg(id+".dat.local", dns.TypeTXT, "subscribe", "true", "token", s.testToken(false, from.Addr()), "announce", strconv.Itoa(port))
		pkt, _ := m.Pack()
		now = now.Add(time.Millisecond)
		if reply, _ := s.handle(pkt, from, now); reply == nil {
			t.Fatal("no reply")
		}
	}
	host := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}) }

	// One host, many ports: it keeps its 3 newest.
	a := testDNSID("caps a")
	for port := 1; port <= 10; port++ {
		announce(netip.AddrPortFrom(host(1), 5000), a, port)
	}
	got := s.testPeers(a)
	want := []netip.AddrPort{netip.AddrPortFrom(host(1), 8), netip.AddrPortFrom(host(1), 9), netip.AddrPortFrom(host(1), 10)}
	if !slices.Equal(got, want) {
		t.Errorf("one host: %v, want %v", got, want)
	}
	// Many hosts, one ID: it keeps its 4 newest.
	b := testDNSID("caps b")
	for i := 10; i < 20; i++ {
		announce(netip.AddrPortFrom(host(i), 5000), b, 80)
	}
	if got := s.testPeers(b); len(got) != 4 || got[0].Addr() != host(16) {
		t.Errorf("one id: %v, want hosts 16 to 19", got)
	}
	// In all at most 10, the oldest making room.
	for i := 100; i < 120; i++ {
		announce(netip.AddrPortFrom(host(i), 5000), testDNSID(fmt.Sprint("caps c", i)), 80)
	}
	s.mu.Lock()
	total, subs := s.announces.len(), s.subs.len()
	s.mu.Unlock()
	if total != 10 || subs != 10 {
		t.Errorf("%d announces, %d subscriptions, want 10 and 10", total, subs)
	}
	if n, _ := s.testCounts(testDNSID("caps c119")); n != 1 {
		t.Error("the newest announce made no room")
	}
	if n, _ := s.testCounts(a); n != 0 {
		t.Error("the oldest announces were kept")
	}
	// A refresh is not a new entry: it moves to the back.
	s2, _ := newDNSServer(DNSServerOptions{MaxPerHost: 2})
	s = s2
	announce(netip.AddrPortFrom(host(1), 5000), a, 1)
	announce(netip.AddrPortFrom(host(1), 5000), a, 2)
	announce(netip.AddrPortFrom(host(1), 5000), a, 1)
	announce(netip.AddrPortFrom(host(1), 5000), a, 3)
	if got := s.testPeers(a); !slices.Equal(got, []netip.AddrPort{netip.AddrPortFrom(host(1), 1), netip.AddrPortFrom(host(1), 3)}) {
		t.Errorf("after a refresh: %v, want ports 1 and 3", got)
	}
	// At most 31 peers in a TXT answer: more would overflow its 255-byte
	// string, as dns-discovery's 100 do.
	s3, _ := newDNSServer(DNSServerOptions{})
	s = s3
	for i := range 50 {
		announce(netip.AddrPortFrom(host(i), 5000), b, 80)
	}
	pkt, _ := dnsTestMsg(b+".dat.local", dns.TypeTXT).Pack()
	reply, _ := s.handle(pkt, dnsLo(1), time.Now())
	var m dns.Msg
	if err := m.Unpack(reply); err != nil {
		t.Fatal(err)
	}
	if peers := dnsDecodePeersTXT(dnsFirstTXT(&m)["peers"].val, dnsLo(0).Addr()); len(peers) != dnsMaxTXTPeers {
		t.Errorf("%d peers in a TXT answer, want %d", len(peers), dnsMaxTXTPeers)
	}
	// Pushes go to at most 16 subscribers.
	_, out := s.handle(func() []byte {
		from := netip.AddrPortFrom(host(999), 5000)
		p, _ := dnsTestMsg(b+".dat.local", dns.TypeTXT, "token", s.testToken(false, from.Addr()), "announce", "81").Pack()
		return p
	}(), netip.AddrPortFrom(host(999), 5000), time.Now())
	if len(out) != dnsMaxPushes {
		t.Errorf("%d pushes, want %d", len(out), dnsMaxPushes)
	}
}

// TestDNSSubscribe: lookup results first, then pushes; a push arrives from
// our server when another client announces.
func TestDNSSubscribe(t *testing.T) {
	dnsCheckLeaks(t)
	s, addr := startDNSServer(t, DNSServerOptions{})
	a := newTestDNSClient(t, DNSClientOptions{Servers: []string{addr.String()}})
	b := newTestDNSClient(t, DNSClientOptions{Servers: []string{addr.String()}})
	id := testDNSID("subscribe")
	if err := b.Announce(context.Background(), id, 7700); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := a.Subscribe(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-ch:
		if p != dnsLo(7700) {
			t.Fatalf("first peer %v, want the lookup's 127.0.0.1:7700", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no lookup result")
	}
	// a's own announce keeps it subscribed (subscribe=true rides along).
	if err := a.Announce(ctx, id, 7701); err != nil {
		t.Fatal(err)
	}
	if _, subs := s.testCounts(id); subs != 1 {
		t.Fatalf("%d subscriptions after the subscriber's announce, want 1", subs)
	}
	if err := b.Announce(context.Background(), id, 7702); err != nil {
		t.Fatal(err)
	}
	dnsRecvPeer(t, ch, dnsLo(7702))
	// The client acknowledged the push: nothing is left to resend.
	dnsEventually(t, "the acknowledgement", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.pushes) == 0
	})
	cancel()
	for range ch {
	}
}

// TestDNSWhoami: two servers that agree give host and port, one gives the
// host only.
func TestDNSWhoami(t *testing.T) {
	dnsCheckLeaks(t)
	_, addr1 := startDNSServer(t, DNSServerOptions{})
	_, addr2 := startDNSServer(t, DNSServerOptions{})
	ctx := context.Background()
	c := newTestDNSClient(t, DNSClientOptions{Servers: []string{addr1.String(), addr2.String()}})
	if me, err := c.Whoami(ctx); err != nil || me != dnsLo(int(c.LocalAddr().Port())) {
		t.Errorf("whoami with two servers: %v %v, want 127.0.0.1:%d", me, err, c.LocalAddr().Port())
	}
	c1 := newTestDNSClient(t, DNSClientOptions{Servers: []string{addr1.String()}})
	if me, err := c1.Whoami(ctx); err != nil || me != dnsLo(0) {
		t.Errorf("whoami with one server: %v %v, want 127.0.0.1:0", me, err)
	}
}

// TestDNSSecondaryPort: "host:port,port2" falls back to port2 when the
// first port does not answer, as dns-discovery's clients do.
func TestDNSSecondaryPort(t *testing.T) {
	dnsCheckLeaks(t)
	_, addr := startDNSServer(t, DNSServerOptions{})
	dead, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close() // bound and silent
	spec := fmt.Sprintf("127.0.0.1:%d,%d", dead.LocalAddr().(*net.UDPAddr).Port, addr.Port())
	c := newTestDNSClient(t, DNSClientOptions{Servers: []string{spec}, Timeout: 600 * time.Millisecond})
	id := testDNSID("secondary")
	if err := c.Announce(context.Background(), id, 7800); err != nil {
		t.Fatal(err)
	}
	if got := dnsMustLookup(t, c, id); !slices.Equal(got, []netip.AddrPort{dnsLo(7800)}) {
		t.Errorf("lookup %v", got)
	}
}

func TestDNSParseServer(t *testing.T) {
	for _, tc := range []struct {
		in              string
		host            string
		port, secondary uint16
	}{
		{"discovery1.datprotocol.com", "discovery1.datprotocol.com", 5300, 53},
		{"127.0.0.1:5300", "127.0.0.1", 5300, 0},
		{"example.com:9090,53", "example.com", 9090, 53},
		{"[127.0.0.1]:53", "127.0.0.1", 53, 0},
	} {
		s, err := dnsParseServer(tc.in)
		if err != nil || s.host != tc.host || s.port != tc.port || s.secondary != tc.secondary {
			t.Errorf("%q: %+v %v", tc.in, s, err)
		}
	}
	for _, bad := range []string{"", ":53", "host:0", "host:99999", "host:x", "host:53,x", "a:b:c", "[::1]:53", "::1"} {
		if _, err := dnsParseServer(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	if _, err := NewDNSClient(nil, ""); err == nil {
		t.Error("a client without servers")
	}
	for _, bad := range []string{"bad domain", "a..b", "x\\.y", strings.Repeat("a", 64) + ".local"} {
		if c, err := NewDNSClient([]string{"127.0.0.1:1"}, bad); err == nil {
			c.Close()
			t.Errorf("a client with the invalid domain %q", bad)
		}
		if _, err := ListenDNS("127.0.0.1:0", DNSServerOptions{Domain: bad}); err == nil {
			t.Errorf("a server with the invalid domain %q", bad)
		}
	}
}

// TestDNSPeersTXT checks the peers= decoder, including Node's lenient
// base64 (the outputs of Buffer.from(s, 'base64') in Node 20).
func TestDNSPeersTXT(t *testing.T) {
	server := netip.MustParseAddr("192.0.2.1")
	enc := func(b ...byte) string { return base64.StdEncoding.EncodeToString(b) }
	for _, tc := range []struct {
		in   string
		want []netip.AddrPort
	}{
		{"", nil},
		{enc(1, 2, 3, 4, 0, 80), []netip.AddrPort{netip.MustParseAddrPort("1.2.3.4:80")}},
		{strings.TrimRight(enc(1, 2, 3, 4, 0, 80), "="), []netip.AddrPort{netip.MustParseAddrPort("1.2.3.4:80")}},
		{enc(0, 0, 0, 0, 1, 0), []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:256")}}, // 0.0.0.0: the server
		{enc(1, 2, 3, 4, 0, 0), nil}, // port 0
		{enc(1, 2, 3, 4, 0, 80, 1, 2, 3, 4, 0, 80), []netip.AddrPort{netip.MustParseAddrPort("1.2.3.4:80")}},
		{enc(1, 2, 3, 4, 0, 80, 9, 9, 9), []netip.AddrPort{netip.MustParseAddrPort("1.2.3.4:80")}}, // partial record
		{"AQID BABQ", []netip.AddrPort{netip.MustParseAddrPort("1.2.3.4:80")}},                     // stray characters skipped
		{"AQIDBABQ=AQIDBABR", []netip.AddrPort{netip.MustParseAddrPort("1.2.3.4:80")}},             // '=' ends the data
		{"_-_-_-_-", []netip.AddrPort{netip.MustParseAddrPort("255.239.254.255:61438")}},           // URL alphabet
		{"!!!!", nil},
	} {
		if got := dnsDecodePeersTXT(tc.in, server); !slices.Equal(got, tc.want) {
			t.Errorf("%q: %v, want %v", tc.in, got, tc.want)
		}
	}
	// Node 20's Buffer.from(s, 'base64') for each of these.
	for in, want := range map[string][]byte{
		"QUJD": {0x41, 0x42, 0x43}, "QU JD": {0x41, 0x42, 0x43}, "QUJ": {0x41, 0x42},
		"QQ": {0x41}, "Q": {}, "QR": {0x41}, "QUJD-_": {0x41, 0x42, 0x43, 0xfb},
		"QQ==QQ==": {0x41}, "QUJD=QUJD": {0x41, 0x42, 0x43},
	} {
		if got := dnsNodeBase64(in); !slices.Equal(got, want) {
			t.Errorf("base64 %q: %x, want %x", in, got, want)
		}
	}
}

// TestDNSCloseStopsGoroutines counts goroutines around a busy server and
// clients.
func TestDNSCloseStopsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	s, err := ListenDNS("127.0.0.1:0", DNSServerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Addr().String()
	var clients []*DNSClient
	for i := range 3 {
		c, err := NewDNSClient([]string{addr}, "")
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		id := testDNSID("close")
		if err := c.Announce(context.Background(), id, 7900+i); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Subscribe(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	// The server's reader and maintainer; each client's reader, announce
	// renewer and subscription.
	if n := len(dnsGoroutines()); n != 2+3*3 {
		t.Errorf("%d DNS goroutines running, want %d:\n%s", n, 2+3*3, strings.Join(dnsGoroutines(), "\n\n"))
	}
	for _, c := range clients {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
		if err := c.Close(); err != nil { // twice is fine
			t.Error(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
	// Close waited for them; they may still be returning from their
	// deferred calls.
	dnsEventually(t, "the DNS goroutines to end", func() bool { return len(dnsGoroutines()) == 0 })
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, strings.Join(dnsGoroutines(), "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// --- interop with the npm dns-discovery package ---

// dnsJSDir is where the package is installed, pinned by package.json and
// package-lock.json.
const dnsJSDir = "testdata/dns-discovery"

// needDNSDiscoveryJS makes sure node and the package are there, running
// `npm ci` when node_modules is missing.
func needDNSDiscoveryJS(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		namestest.SkipOrFail(t, "node not found (apt-get install nodejs npm): %v", err)
	}
	marker := filepath.Join(dnsJSDir, "node_modules", "dns-discovery", "package.json")
	if _, err := os.Stat(marker); err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = dnsJSDir
		out, npmErr := cmd.CombinedOutput()
		if _, err := os.Stat(marker); err != nil {
			namestest.SkipOrFail(t, "dns-discovery is not installed and npm ci failed (%v):\n%s\nrun: (cd hyperdrive/discovery/%s && npm ci)", npmErr, out, dnsJSDir)
		}
	}
	return node
}

// jsDiscovery is a node process running testdata/dns-discovery/peer.js.
type jsDiscovery struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{} // the reader finished

	mu      sync.Mutex
	seq     int
	replies map[int]chan map[string]any
	peers   []map[string]any
}

func startJSDiscovery(t *testing.T) *jsDiscovery {
	t.Helper()
	node := needDNSDiscoveryJS(t)
	cmd := exec.Command(node, "peer.js", "--domain", "dat.local")
	cmd.Dir = dnsJSDir
	cmd.Stderr = &dnsTestLogWriter{t: t}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	js := &jsDiscovery{t: t, cmd: cmd, stdin: stdin, done: make(chan struct{}), replies: make(map[int]chan map[string]any)}
	go js.read(stdout)
	t.Cleanup(func() {
		js.send(map[string]any{"op": "close", "seq": -1})
		stdin.Close()
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		<-js.done
	})
	return js
}

type dnsTestLogWriter struct{ t *testing.T }

func (w *dnsTestLogWriter) Write(p []byte) (int, error) {
	w.t.Logf("node: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (js *jsDiscovery) read(r io.Reader) {
	defer close(js.done)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var msg map[string]any
		if err := json.Unmarshal(sc.Bytes(), &msg); err != nil {
			js.t.Logf("node: %s", sc.Text())
			continue
		}
		js.mu.Lock()
		if msg["event"] == "peer" {
			js.peers = append(js.peers, msg)
		} else if seq, ok := msg["seq"].(float64); ok {
			if ch := js.replies[int(seq)]; ch != nil {
				ch <- msg
				delete(js.replies, int(seq))
			}
		} else {
			js.t.Logf("node: %s", sc.Text())
		}
		js.mu.Unlock()
	}
}

func (js *jsDiscovery) send(cmd map[string]any) {
	b, _ := json.Marshal(cmd)
	js.stdin.Write(append(b, '\n'))
}

// call runs a command and returns its reply, failing on an error.
func (js *jsDiscovery) call(op string, args map[string]any) map[string]any {
	js.t.Helper()
	cmd := map[string]any{"op": op}
	for k, v := range args {
		cmd[k] = v
	}
	ch := make(chan map[string]any, 1)
	js.mu.Lock()
	js.seq++
	cmd["seq"] = js.seq
	js.replies[js.seq] = ch
	js.mu.Unlock()
	js.send(cmd)
	select {
	case r := <-ch:
		if e, ok := r["error"]; ok {
			js.t.Fatalf("dns-discovery %s %v: %v", op, args, e)
		}
		return r
	case <-time.After(20 * time.Second):
		js.t.Fatalf("dns-discovery %s %v: no reply", op, args)
		return nil
	}
}

// hasPeer tells whether instance name emitted a peer event for id and p.
func (js *jsDiscovery) hasPeer(name, id string, p netip.AddrPort) bool {
	js.mu.Lock()
	defer js.mu.Unlock()
	for _, e := range js.peers {
		if e["name"] == name && e["id"] == id && e["host"] == p.Addr().String() && e["port"] == float64(p.Port()) {
			return true
		}
	}
	return false
}

// TestDNSInteropJSServer runs our client against dns-discovery's server.
func TestDNSInteropJSServer(t *testing.T) {
	dnsCheckLeaks(t)
	js := startJSDiscovery(t)
	server := fmt.Sprintf("127.0.0.1:%v", js.call("server", nil)["port"])
	c := newTestDNSClient(t, DNSClientOptions{Servers: []string{server}})
	ctx := context.Background()

	// Our announce; our lookup and theirs find it.
	id := testDNSID("js server")
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := c.Announce(actx, id, 8001); err != nil {
		t.Fatal(err)
	}
	if got := dnsMustLookup(t, c, id); !slices.Equal(got, []netip.AddrPort{dnsLo(8001)}) {
		t.Errorf("our lookup: %v, want [127.0.0.1:8001]", got)
	}
	js.call("client", map[string]any{"name": "js", "server": server})
	js.call("lookup", map[string]any{"name": "js", "id": id})
	dnsEventually(t, "dns-discovery's lookup to find our announce", func() bool { return js.hasPeer("js", id, dnsLo(8001)) })

	// Port 0: their server stores our socket's port (impliedPort).
	implied := testDNSID("js server implied")
	if err := c.Announce(ctx, implied, 0); err != nil {
		t.Fatal(err)
	}
	if got := dnsMustLookup(t, c, implied); !slices.Equal(got, []netip.AddrPort{dnsLo(int(c.LocalAddr().Port()))}) {
		t.Errorf("implied port: %v, want [127.0.0.1:%d]", got, c.LocalAddr().Port())
	}

	// Whoami: their probe tells our address.
	_, ourAddr := startDNSServer(t, DNSServerOptions{})
	w := newTestDNSClient(t, DNSClientOptions{Servers: []string{server, ourAddr.String()}})
	if me, err := w.Whoami(ctx); err != nil || me != dnsLo(int(w.LocalAddr().Port())) {
		t.Errorf("whoami via their server and ours: %v %v, want 127.0.0.1:%d", me, err, w.LocalAddr().Port())
	}

	// A push from their server: we subscribe, they announce.
	pushed := testDNSID("js server push")
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	ch, err := c.Subscribe(sctx, pushed)
	if err != nil {
		t.Fatal(err)
	}
	js.call("announce", map[string]any{"name": "js", "id": pushed, "port": 8002})
	dnsRecvPeer(t, ch, dnsLo(8002))
	// And their push reaches their client when we announce.
	pushed2 := testDNSID("js server push 2")
	js.call("lookup", map[string]any{"name": "js", "id": pushed2}) // subscribes
	if err := c.Announce(ctx, pushed2, 8003); err != nil {
		t.Fatal(err)
	}
	dnsEventually(t, "the push of our announce to their client", func() bool { return js.hasPeer("js", pushed2, dnsLo(8003)) })

	// Unannounce when the context ends.
	cancel()
	dnsEventually(t, "the unannounce", func() bool {
		got, err := c.Lookup(ctx, id)
		return err == nil && len(got) == 0
	})
}

// TestDNSInteropJSClient runs dns-discovery's client against our server.
func TestDNSInteropJSClient(t *testing.T) {
	dnsCheckLeaks(t)
	s, addr := startDNSServer(t, DNSServerOptions{})
	js := startJSDiscovery(t)
	jsPort := js.call("client", map[string]any{"name": "a", "server": addr.String()})["port"].(float64)
	js.call("client", map[string]any{"name": "b", "server": addr.String()})
	c := newTestDNSClient(t, DNSClientOptions{Servers: []string{addr.String()}})
	ctx := context.Background()

	// Their announce; our lookup finds it.
	id := testDNSID("js client")
	js.call("announce", map[string]any{"name": "a", "id": id, "port": 8101})
	if got := dnsMustLookup(t, c, id); !slices.Equal(got, []netip.AddrPort{dnsLo(8101)}) {
		t.Errorf("our lookup of their announce: %v", got)
	}
	// Their impliedPort announce: we store their socket's port.
	implied := testDNSID("js client implied")
	js.call("announce", map[string]any{"name": "a", "id": implied, "port": 9999, "implied": true})
	if got := dnsMustLookup(t, c, implied); !slices.Equal(got, []netip.AddrPort{dnsLo(int(jsPort))}) {
		t.Errorf("their implied port: %v, want [127.0.0.1:%v]", got, jsPort)
	}
	// Their unannounce.
	js.call("unannounce", map[string]any{"name": "a", "id": id, "port": 8101})
	if got := dnsMustLookup(t, c, id); len(got) != 0 {
		t.Errorf("after their unannounce: %v", got)
	}

	// Our announce; their lookup finds it.
	id2 := testDNSID("js client 2")
	if err := c.Announce(ctx, id2, 8102); err != nil {
		t.Fatal(err)
	}
	js.call("lookup", map[string]any{"name": "b", "id": id2})
	dnsEventually(t, "their lookup to find our announce", func() bool { return js.hasPeer("b", id2, dnsLo(8102)) })

	// Their whoami through our probe.
	me := js.call("whoami", map[string]any{"name": "b"})
	if me["host"] != "127.0.0.1" || me["port"] != float64(0) {
		t.Errorf("their whoami: %v, want host 127.0.0.1 port 0 (one server)", me)
	}

	// Our push to their client: they look up (and so subscribe), we announce.
	pushed := testDNSID("js client push")
	js.call("lookup", map[string]any{"name": "b", "id": pushed})
	if err := c.Announce(ctx, pushed, 8103); err != nil {
		t.Fatal(err)
	}
	dnsEventually(t, "our push to their client", func() bool { return js.hasPeer("b", pushed, dnsLo(8103)) })
	dnsEventually(t, "their acknowledgement", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.pushes) == 0
	})

	// Our server's push of their announce to our subscription.
	pushed2 := testDNSID("js client push 2")
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	ch, err := c.Subscribe(sctx, pushed2)
	if err != nil {
		t.Fatal(err)
	}
	js.call("announce", map[string]any{"name": "a", "id": pushed2, "port": 8104})
	dnsRecvPeer(t, ch, dnsLo(8104))
}

// --- fuzzing ---

// FuzzDNSServerQuery feeds arbitrary bytes to the server's handler as a
// packet from 127.0.0.1 (which holds a valid token, so announces get in):
// it must not panic, its replies and pushes must be valid DNS, and the
// store must stay within its caps.
func FuzzDNSServerQuery(f *testing.F) {
	s, err := newDNSServer(DNSServerOptions{MaxAnnounces: 64, MaxPerID: 16, MaxPerHost: 32})
	if err != nil {
		f.Fatal(err)
	}
	from := dnsLo(5555)
	tok := s.testToken(false, from.Addr())
	id := testDNSID("fuzz")
	for _, m := range []*dns.Msg{
		dnsTestMsg("dat.local", dns.TypeTXT),
		dnsTestMsg(id+".dat.local", dns.TypeTXT),
		dnsTestMsg(id+".dat.local", dns.TypeA),
		dnsTestMsg(id+".dat.local", dns.TypeSRV),
		dnsTestMsg(id+".dat.local", dns.TypeTXT, "subscribe", "true", "token", tok, "announce", "8080"),
		dnsTestMsg(id+".dat.local", dns.TypeTXT, "subscribe", "true", "token", tok, "announce", "0"),
		dnsTestMsg(id+".dat.local", dns.TypeTXT, "token", tok, "unannounce", "8080"),
		dnsTestMsg(id+".dat.local", dns.TypeTXT, "token", tok, "announce", "99999"),
	} {
		m.Id = 1
		pkt, _ := m.Pack()
		f.Add(pkt)
	}
	f.Add([]byte{})
	f.Add([]byte("\x00\x01\x80\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		now := time.Now()
		reply, out := s.handle(pkt, from, now)
		if reply != nil {
			var m dns.Msg
			if err := m.Unpack(reply); err != nil || !m.Response {
				t.Fatalf("bad reply %x: %v", reply, err)
			}
		}
		for _, p := range out {
			var m dns.Msg
			if err := m.Unpack(p.pkt); err != nil || m.Response || len(m.Extra) != 1 {
				t.Fatalf("bad push %x: %v", p.pkt, err)
			}
		}
		s.tick(now)
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.announces.len() > 64 || s.subs.len() > 64 || len(s.pushes) > dnsMaxPendingPushes {
			t.Fatalf("caps exceeded: %d announces, %d subscriptions, %d pushes", s.announces.len(), s.subs.len(), len(s.pushes))
		}
	})
}

// FuzzPeersTXT feeds arbitrary peers= values to the decoder: it must not
// panic, must return only usable IPv4 peers, at most one per 8 characters,
// and what it returns must survive encoding and decoding.
func FuzzPeersTXT(f *testing.F) {
	f.Add("")
	f.Add("fwAAAR+Q")
	f.Add("AAAAAB+QfwAAAR+Q")
	f.Add("fwAAAR+Q=fwAAAR+Q")
	f.Add("_-_-_-_-")
	f.Add("f w A A A R + Q")
	server := netip.MustParseAddr("192.0.2.1")
	f.Fuzz(func(t *testing.T, value string) {
		peers := dnsDecodePeersTXT(value, server)
		if len(peers) > len(value)/8 {
			t.Fatalf("%d peers from %d characters", len(peers), len(value))
		}
		for _, p := range peers {
			if !p.Addr().Is4() || p.Addr().IsUnspecified() || p.Port() == 0 {
				t.Fatalf("unusable peer %v", p)
			}
		}
		again := dnsDecodePeersTXT(base64.StdEncoding.EncodeToString(dnsEncodePeers(peers)), server)
		if !slices.Equal(again, peers) {
			t.Fatalf("round trip: %v became %v", peers, again)
		}
	})
}

// FuzzDNSClientPacket feeds arbitrary bytes to the client's packet handler
// as if from its server (so pushes are taken), with a subscription open.
func FuzzDNSClientPacket(f *testing.F) {
	c, err := NewDNSClient([]string{"127.0.0.1:1"}, "")
	if err != nil {
		f.Fatal(err)
	}
	defer c.Close()
	from := dnsLo(1) // nothing listens there: acknowledgements go nowhere
	id := testDNSID("fuzz client")
	sub := &dnsSubscription{in: make(chan netip.AddrPort, 4)}
	c.mu.Lock()
	c.serverIPs[from.Addr()] = struct{}{}
	c.subs[id] = map[*dnsSubscription]struct{}{sub: {}}
	c.mu.Unlock()
	push := new(dns.Msg)
	push.Id = 7
	push.RecursionDesired = true
	push.Extra = []dns.RR{&dns.SRV{Hdr: dns.RR_Header{Name: id + ".dat.local.", Rrtype: dns.TypeSRV, Class: dns.ClassINET}, Port: 80, Target: "1.2.3.4."}}
	pkt, _ := push.Pack()
	f.Add(pkt)
	answer := dnsTestMsg(id+".dat.local", dns.TypeTXT)
	answer.Response = true
	answer.Answer = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: id + ".dat.local.", Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: []string{"token=abc", "peers=fwAAAR+Q"}}}
	pkt, _ = answer.Pack()
	f.Add(pkt)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		c.handlePacket(pkt, from)
		for len(sub.in) > 0 {
			if p := <-sub.in; !p.Addr().Is4() || p.Port() == 0 {
				t.Fatalf("pushed peer %v", p)
			}
		}
		var m dns.Msg
		if m.Unpack(pkt) == nil {
			data := dnsFirstTXT(&m)
			dnsDecodePeersTXT(data["peers"].val, from.Addr())
			dnsParsePort(data["port"])
		}
	})
}
