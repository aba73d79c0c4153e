package discovery

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anacrolix/dht/v2"
	"github.com/anacrolix/dht/v2/bep44"
	"github.com/anacrolix/dht/v2/krpc"
	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/utp"
	"golang.org/x/time/rate"

	"github.com/beaker-dev/beaker-dev/hyperdrive/names/namestest"
)

// The tests run real DHT nodes over UDP on loopback addresses (all of
// 127/8 is on lo, so each node gets an IP of its own, as on separate
// hosts), and in network namespaces (TestDHTMultiHost). They never send to
// any other address: every node is bootstrapped explicitly, never from the
// public routers.

// dhtDebug reports whether BEAKER_DHT_DEBUG=1 asks for the nodes' debug
// logging (to stderr).
func dhtDebug() bool { return os.Getenv("BEAKER_DHT_DEBUG") == "1" }

// dhtWarnings records a node's warnings.
type dhtWarnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *dhtWarnings) add(msg string) {
	if dhtDebug() {
		fmt.Fprintln(os.Stderr, "WARN", msg)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msg)
}

func (w *dhtWarnings) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.msgs)
}

// dhtTestConfig is a node's configuration for loopback tests: fast timeouts
// and retries, no send cap.
func dhtTestConfig(addr string, bootstrap []string, w *dhtWarnings) DHTConfig {
	cfg := DHTConfig{
		Addr:           addr,
		Bootstrap:      bootstrap,
		QueryTimeout:   200 * time.Millisecond,
		BootstrapRetry: 200 * time.Millisecond,
		SendRate:       rate.Inf,
	}
	if w != nil {
		cfg.Warn = w.add
	}
	if dhtDebug() {
		cfg.Logf = func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, addr+" "+format+"\n", args...)
		}
	}
	return cfg
}

// startDHTNode starts a node and closes it at the end of the test.
func startDHTNode(t testing.TB, cfg DHTConfig) *DHT {
	t.Helper()
	d, err := StartDHT(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

// startDHTNetwork starts n nodes on 127.0.0.<base+i>: node 0 is the bootstrap
// node (no bootstrap of its own), the others join through it. It returns
// once every node knows at least min(n-1, 3) others.
func startDHTNetwork(t testing.TB, base, n int, mod func(*DHTConfig)) []*DHT {
	t.Helper()
	var logs dhtLog
	nodes := make([]*DHT, n)
	for i := range nodes {
		var bootstrap []string
		if i == 0 {
			bootstrap = []string{}
		} else {
			bootstrap = []string{nodes[0].Addr().String()}
		}
		cfg := dhtTestConfig(fmt.Sprintf("127.0.0.%d:0", base+i), bootstrap, nil)
		if cfg.Logf == nil {
			cfg.Logf = logs.logf(cfg.Addr)
		}
		if mod != nil {
			mod(&cfg)
		}
		nodes[i] = startDHTNode(t, cfg)
	}
	want := min(n-1, 3)
	dhtWaitFor(t, 10*time.Second, func() bool {
		for _, d := range nodes {
			if d.Nodes() < want {
				return false
			}
		}
		return true
	}, func() string {
		var sizes []int
		var status strings.Builder
		for _, d := range nodes {
			sizes = append(sizes, d.Nodes())
			d.srv.WriteStatus(&status)
		}
		return fmt.Sprintf("routing tables never reached %d nodes: %v\n%s\nlog:\n%s", want, sizes, status.String(), logs.String())
	})
	return nodes
}

// dhtLog keeps the debug log of nodes, to show when a test fails.
type dhtLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *dhtLog) logf(prefix string) func(string, ...any) {
	return func(format string, args ...any) {
		line := time.Now().Format("15:04:05.000 ") + prefix + " " + fmt.Sprintf(format, args...)
		l.mu.Lock()
		defer l.mu.Unlock()
		if len(l.lines) < 10000 {
			l.lines = append(l.lines, line)
		}
	}
}

func (l *dhtLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func dhtWaitFor(t testing.TB, timeout time.Duration, cond func() bool, why func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(why())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dhtCheckGoroutines fails the test if, once its cleanups are done, more
// goroutines run than at the start (allowing a few seconds for exiting
// ones). Call it first, so that its cleanup runs after the nodes' Close.
func dhtCheckGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutine leak: %d goroutines, %d before the test\n%s", runtime.NumGoroutine(), before, buf)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// dhtTestID is the DHT id of a made-up archive: a discovery key is a
// 32-byte hash.
func dhtTestID(name string) [20]byte {
	return DHTID(sha256.Sum256([]byte("beaker-dev discovery test " + name)))
}

// dhtRawQuery sends one KRPC query from a socket of its own to addr and
// returns the reply.
func dhtRawQuery(t testing.TB, addr net.Addr, q string, args krpc.MsgArgs) krpc.Msg {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	args.ID = krpc.RandomNodeID()
	b, err := bencode.Marshal(krpc.Msg{T: "tq", Y: "q", Q: q, A: &args})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.WriteTo(b, addr); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 65536)
	for {
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("%s to %v: %v", q, addr, err)
		}
		var m krpc.Msg
		if err := bencode.Unmarshal(buf[:n], &m); err != nil || m.T != "tq" || m.Y == "q" {
			continue // e.g. the node verifying us with a ping
		}
		return m
	}
}

func dhtAddrPort(t testing.TB, a net.Addr) netip.AddrPort {
	t.Helper()
	ap, ok := addrPortOf(a)
	if !ok {
		t.Fatalf("not a UDP address: %v", a)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// dhtLookupUntil looks id up from d until want is among the peers found.
func dhtLookupUntil(t testing.TB, d *DHT, id [20]byte, want netip.AddrPort, timeout time.Duration) []netip.AddrPort {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		peers, err := d.Lookup(ctx, id)
		cancel()
		if slices.Contains(peers, want) {
			return peers
		}
		if time.Now().After(deadline) {
			t.Fatalf("lookup of %x from %v: %v not found in %v (err %v)", id, d.Addr(), want, peers, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestPeerStore(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	ih := [20]byte{1}
	na := func(s string) krpc.NodeAddr {
		ap := netip.MustParseAddrPort(s)
		return krpc.NodeAddr{IP: ap.Addr().AsSlice(), Port: int(ap.Port())}
	}
	strs := func(peers []krpc.NodeAddr) []string {
		var s []string
		for _, p := range peers {
			s = append(s, p.String())
		}
		slices.Sort(s)
		return s
	}

	t.Run("ip:port", func(t *testing.T) {
		s := NewPeerStore(PeerStoreConfig{Now: clock})
		s.AddPeer(ih, na("192.0.2.1:1000"))
		s.AddPeer(ih, na("192.0.2.1:2000")) // same IP: both kept
		s.AddPeer(ih, na("192.0.2.1:1000")) // re-announce: still one
		// A dual-stack socket reports IPv4 peers as IPv4-mapped IPv6.
		s.AddPeer(ih, krpc.NodeAddr{IP: net.ParseIP("::ffff:192.0.2.2"), Port: 3000})
		s.AddPeer(ih, na("[2001:db8::1]:4000"))
		got := strs(s.GetPeers(ih))
		want := []string{"192.0.2.1:1000", "192.0.2.1:2000", "192.0.2.2:3000", "[2001:db8::1]:4000"}
		if !slices.Equal(got, want) {
			t.Errorf("GetPeers = %v, want %v", got, want)
		}
		for _, p := range s.GetPeers(ih) {
			if p.IP.To4() != nil && len(p.IP) != net.IPv4len {
				t.Errorf("%v: IPv4 peer as %d bytes; get_peers values must be 6-byte compact", p, len(p.IP))
			}
		}
		if got := s.GetPeers([20]byte{2}); len(got) != 0 {
			t.Errorf("GetPeers(other) = %v", got)
		}
	})

	t.Run("malformed", func(t *testing.T) {
		s := NewPeerStore(PeerStoreConfig{Now: clock})
		for _, p := range []krpc.NodeAddr{
			{IP: net.IP{1, 2, 3}, Port: 1},
			{IP: net.IPv4(192, 0, 2, 1), Port: 0},
			{IP: net.IPv4(192, 0, 2, 1), Port: 70000},
			{IP: net.IPv4zero, Port: 1},
			{IP: net.IPv4(224, 0, 0, 1), Port: 1},
			{IP: nil, Port: 1},
		} {
			s.AddPeer(ih, p)
		}
		if n := s.Len(); n != 0 {
			t.Errorf("stored %d malformed peers: %v", n, s.GetPeers(ih))
		}
	})

	t.Run("expiry", func(t *testing.T) {
		now := now
		s := NewPeerStore(PeerStoreConfig{TTL: time.Minute, Now: func() time.Time { return now }})
		s.AddPeer(ih, na("192.0.2.1:1"))
		s.AddPeer(ih, na("192.0.2.2:1"))
		now = now.Add(40 * time.Second)
		s.AddPeer(ih, na("192.0.2.1:1")) // refreshed: lives 60s from here
		if got := strs(s.GetPeers(ih)); !slices.Equal(got, []string{"192.0.2.1:1", "192.0.2.2:1"}) {
			t.Errorf("after 40s: %v", got)
		}
		now = now.Add(30 * time.Second)
		if got := strs(s.GetPeers(ih)); !slices.Equal(got, []string{"192.0.2.1:1"}) {
			t.Errorf("after 70s: %v", got)
		}
		now = now.Add(time.Hour)
		if n := s.Len(); n != 0 {
			t.Errorf("after an hour: %d peers", n)
		}
		if len(s.hashes) != 0 {
			t.Errorf("empty infohashes kept: %d", len(s.hashes))
		}
	})

	t.Run("caps", func(t *testing.T) {
		now := now
		s := NewPeerStore(PeerStoreConfig{
			TTL: time.Minute, MaxPerInfoHash: 10, MaxPerIP: 3, MaxTotal: 25, MaxReturned: 4,
			Now: func() time.Time { return now },
		})
		// One IP, many ports: at most MaxPerIP, the latest always in.
		for port := 1; port <= 100; port++ {
			s.AddPeer(ih, na(fmt.Sprintf("192.0.2.1:%d", port)))
		}
		if n := s.Len(); n != 3 {
			t.Errorf("one IP holds %d entries, want 3", n)
		}
		if _, ok := s.lastSeen(ih, netip.MustParseAddrPort("192.0.2.1:100")); !ok {
			t.Error("the last announce of a full IP was dropped")
		}
		// Many IPs: at most MaxPerInfoHash, the latest always in.
		for i := range 200 {
			s.AddPeer(ih, na(fmt.Sprintf("198.51.%d.%d:1", i/250, i%250+1)))
		}
		if n := len(s.hashes[ih]); n != 10 {
			t.Errorf("infohash holds %d entries, want 10", n)
		}
		if _, ok := s.lastSeen(ih, netip.MustParseAddrPort("198.51.0.200:1")); !ok {
			t.Error("the last announce of a full infohash was dropped")
		}
		if got := s.GetPeers(ih); len(got) != 4 {
			t.Errorf("GetPeers returned %d peers, want MaxReturned 4", len(got))
		}
		// Many infohashes: at most MaxTotal, then new ones are ignored...
		for i := range 100 {
			s.AddPeer([20]byte{byte(i), 9}, na(fmt.Sprintf("203.0.113.%d:1", i+1)))
		}
		if n := s.Len(); n != 25 {
			t.Errorf("store holds %d entries, want MaxTotal 25", n)
		}
		// ...but still refreshed, and a full infohash still takes
		// replacements.
		s.AddPeer(ih, na("198.51.0.201:1"))
		if _, ok := s.lastSeen(ih, netip.MustParseAddrPort("198.51.0.201:1")); !ok {
			t.Error("a full store refused a replacement in a full infohash")
		}
		// ...until entries expire.
		now = now.Add(2 * time.Minute)
		s.AddPeer([20]byte{7, 7}, na("203.0.113.250:1"))
		if n := s.Len(); n != 1 {
			t.Errorf("after expiry the store holds %d entries, want 1", n)
		}
	})
}

func TestItemStoreBounded(t *testing.T) {
	s := newItemStore(10)
	for i := range 100 {
		if err := s.Put(&bep44.Item{V: fmt.Sprintf("value %d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(s.items); n != 10 {
		t.Errorf("store holds %d items, want 10", n)
	}
	last := &bep44.Item{V: "value 99"}
	if _, err := s.Get(last.Target()); err != nil {
		t.Errorf("newest item: %v", err)
	}
}

func TestStartDHTErrors(t *testing.T) {
	for _, bootstrap := range [][]string{{"127.0.0.1"}, {"127.0.0.1:0"}, {":6881"}, {"127.0.0.1:99999"}} {
		cfg := dhtTestConfig("127.0.0.1:0", bootstrap, nil)
		if d, err := StartDHT(context.Background(), cfg); err == nil {
			d.Close()
			t.Errorf("StartDHT with bootstrap %q succeeded", bootstrap)
		} else if !strings.HasPrefix(err.Error(), "discovery: dht: ") {
			t.Errorf("error not wrapped: %v", err)
		}
	}
	cfg := dhtTestConfig("127.0.0.1:0", []string{}, nil)
	cfg.SendRate = -1
	if d, err := StartDHT(context.Background(), cfg); err == nil {
		d.Close()
		t.Error("StartDHT with a negative SendRate succeeded")
	}
	if d, err := StartDHT(context.Background(), dhtTestConfig("256.0.0.1:0", []string{}, nil)); err == nil {
		d.Close()
		t.Error("StartDHT on a bad address succeeded")
	}
}

// TestDHTTenNodes: in a 10-node DHT, node A announces (implied port, and
// an explicit port from another node) and node J finds both by lookups.
func TestDHTTenNodes(t *testing.T) {
	dhtCheckGoroutines(t)
	nodes := startDHTNetwork(t, 10, 10, nil)
	a, b, j := nodes[1], nodes[2], nodes[9]
	idA, idB := dhtTestID("ten A"), dhtTestID("ten B")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a.Announce(ctx, idA, 0, true)
	b.Announce(ctx, idB, 4242, false)

	start := time.Now()
	peers := dhtLookupUntil(t, j, idA, dhtAddrPort(t, a.Addr()), 10*time.Second)
	t.Logf("J found A (%v) in %v: %v", a.Addr(), time.Since(start), peers)
	// Every node finds A, those that A did not announce to (it announces
	// to the 8 closest) through the get_peers replies of others.
	remote := 0
	for _, d := range nodes {
		if _, ok := d.Peers().lastSeen(idA, dhtAddrPort(t, a.Addr())); !ok && d != a {
			remote++
		}
		dhtLookupUntil(t, d, idA, dhtAddrPort(t, a.Addr()), 5*time.Second)
	}
	t.Logf("%d nodes found A through others", remote)
	wantB := netip.AddrPortFrom(dhtAddrPort(t, b.Addr()).Addr(), 4242)
	dhtLookupUntil(t, j, idB, wantB, 10*time.Second)

	// Timing of one lookup in a formed network.
	start = time.Now()
	peers, err := j.Lookup(context.Background(), idA)
	t.Logf("one lookup: %v, %d peers, err %v", time.Since(start), len(peers), err)

	if peers, err := j.Lookup(context.Background(), dhtTestID("nobody")); err != nil || len(peers) != 0 {
		t.Errorf("lookup of an unannounced id: %v, %v", peers, err)
	}

	// find_node answers with the nodes closest to its target (anacrolix/dht
	// v2.23.0 alone uses the empty info_hash instead; see onQuery).
	for _, d := range nodes[1:] {
		id := d.srv.ID()
		m := dhtRawQuery(t, nodes[0].Addr(), "find_node", krpc.MsgArgs{Target: id, Want: []krpc.Want{krpc.WantNodes}})
		if m.R == nil || !slices.ContainsFunc(m.R.Nodes, func(ni krpc.NodeInfo) bool { return ni.ID == id }) {
			t.Errorf("find_node for %x: reply %+v lacks it", id, m.R)
		}
	}
}

// dhtPoison returns packets that panic the decoder of anacrolix/dht
// v2.23.0.
func dhtPoison() []string {
	return []string{
		"d2:ip1:x1:t2:aa1:y1:q1:q4:pinge",                             // a query with a 1-byte "ip"
		"d1:rd2:id20:aaaaaaaaaaaaaaaaaaaa6:valuesl0:ee1:t2:aa1:y1:re", // a reply with an empty value
	}
}

func TestDecodePanics(t *testing.T) {
	for _, p := range dhtPoison() {
		if !decodePanics([]byte(p)) {
			t.Errorf("decodePanics(%q) = false", p)
		}
	}
	for _, p := range []string{"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q4:ping1:t2:aa1:y1:qe", "garbage", "d1:x", ""} {
		if decodePanics([]byte(p)) {
			t.Errorf("decodePanics(%q) = true", p)
		}
	}
}

// TestDHTPoisonPackets: packets that would crash the process through the
// library's decoder are dropped, and the node goes on.
func TestDHTPoisonPackets(t *testing.T) {
	dhtCheckGoroutines(t)
	nodes := startDHTNetwork(t, 100, 3, nil)
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, p := range dhtPoison() {
		if _, err := pc.WriteTo([]byte(p), nodes[0].Addr()); err != nil {
			t.Fatal(err)
		}
	}
	dhtWaitFor(t, 5*time.Second, func() bool { return nodes[0].conn.poisoned.Load() == int64(len(dhtPoison())) },
		func() string { return fmt.Sprintf("%d packets dropped", nodes[0].conn.poisoned.Load()) })
	if m := dhtRawQuery(t, nodes[0].Addr(), "ping", krpc.MsgArgs{}); m.R == nil {
		t.Errorf("no reply to a ping after the poison: %+v", m)
	}
}

// TestDHTMalformedValues: a node that answers get_peers with malformed
// peer addresses; Lookup returns only the good ones.
func TestDHTMalformedValues(t *testing.T) {
	dhtCheckGoroutines(t)
	pc, err := net.ListenPacket("udp4", "127.0.0.110:0")
	if err != nil {
		t.Fatal(err)
	}
	fakeID := krpc.RandomNodeID()
	token := "token"
	values := []krpc.NodeAddr{
		{IP: net.IP{1}, Port: 5},                       // 3 bytes
		{IP: net.IPv4(192, 0, 2, 7).To4(), Port: 1234}, // good
		{IP: net.IPv4(192, 0, 2, 8).To4(), Port: 0},    // no port
		{IP: net.IPv4zero.To4(), Port: 80},             // unspecified
		{IP: net.ParseIP("2001:db8::7"), Port: 80},     // good, IPv6
		{IP: net.IPv4(192, 0, 2, 7).To4(), Port: 1234}, // duplicate
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var q krpc.Msg
			if bencode.Unmarshal(buf[:n], &q) != nil || q.Y != "q" {
				continue
			}
			b, _ := bencode.Marshal(krpc.Msg{T: q.T, Y: "r", R: &krpc.Return{ID: fakeID, Token: &token, Values: values}})
			pc.WriteTo(b, from)
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-served
	})
	d := startDHTNode(t, dhtTestConfig("127.0.0.111:0", []string{pc.LocalAddr().String()}, nil))
	dhtWaitFor(t, 5*time.Second, func() bool { return d.Nodes() > 0 }, func() string { return "never joined" })
	peers, err := d.Lookup(context.Background(), dhtTestID("malformed"))
	want := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.7:1234"), netip.MustParseAddrPort("[2001:db8::7]:80")}
	if err != nil || !slices.Equal(peers, want) {
		t.Errorf("Lookup = %v, %v; want %v", peers, err, want)
	}
}

// TestDHTOwnSendLimiter: nodes do not use the library's process-wide
// limiter (25 packets/s for all of them), but one each.
func TestDHTOwnSendLimiter(t *testing.T) {
	dhtCheckGoroutines(t)
	before := dht.DefaultSendLimiter.Tokens()
	nodes := startDHTNetwork(t, 120, 5, func(cfg *DHTConfig) { cfg.SendRate = 0 })
	for range 20 {
		nodes[4].Lookup(context.Background(), dhtTestID("limiter"))
	}
	if after := dht.DefaultSendLimiter.Tokens(); after < before-0.5 {
		t.Errorf("the global limiter went from %.1f to %.1f tokens", before, after)
	}
}

// TestDHTWithoutBootstrapNode: the bootstrap node is shut down once the
// nodes have joined, and the others still find each other.
func TestDHTWithoutBootstrapNode(t *testing.T) {
	dhtCheckGoroutines(t)
	nodes := startDHTNetwork(t, 20, 10, nil)
	if err := nodes[0].Close(); err != nil {
		t.Fatal(err)
	}
	bootstrap := dhtAddrPort(t, nodes[0].Addr())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, pair := range [][2]int{{1, 9}, {5, 3}, {8, 2}} {
		a, j := nodes[pair[0]], nodes[pair[1]]
		id := dhtTestID(fmt.Sprintf("no bootstrap %d", pair[0]))
		a.Announce(ctx, id, 0, true)
		peers := dhtLookupUntil(t, j, id, dhtAddrPort(t, a.Addr()), 10*time.Second)
		if slices.Contains(peers, bootstrap) {
			t.Errorf("found the bootstrap node")
		}
	}
	// A node that joins now, through a node other than the dead bootstrap
	// node, finds them too.
	late := startDHTNode(t, dhtTestConfig("127.0.0.30:0", []string{nodes[4].Addr().String()}, nil))
	dhtLookupUntil(t, late, dhtTestID("no bootstrap 1"), dhtAddrPort(t, nodes[1].Addr()), 10*time.Second)
}

// TestDHTReannounce: Announce renews the announce every AnnounceInterval,
// until its ctx is done; then the peer expires from the others' stores.
func TestDHTReannounce(t *testing.T) {
	dhtCheckGoroutines(t)
	const ttl = 1500 * time.Millisecond
	nodes := startDHTNetwork(t, 40, 5, func(cfg *DHTConfig) {
		cfg.AnnounceInterval = 250 * time.Millisecond
		cfg.PeerStore.TTL = ttl
	})
	a, j := nodes[1], nodes[4]
	id := dhtTestID("reannounce")
	addrA := dhtAddrPort(t, a.Addr())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a.Announce(ctx, id, 0, true)

	// Watch the stores of the other nodes: each announce to a node moves
	// its last-seen time.
	seen := make(map[time.Time]bool)
	deadline := time.Now().Add(5 * time.Second)
	for len(seen) < 4 && time.Now().Before(deadline) {
		for _, d := range nodes {
			if d != a {
				if ts, ok := d.Peers().lastSeen(id, addrA); ok {
					seen[ts] = true
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(seen) < 4 {
		t.Fatalf("saw %d announces in 5s with a 250ms interval", len(seen))
	}
	dhtLookupUntil(t, j, id, addrA, 5*time.Second)

	cancel()
	time.Sleep(300 * time.Millisecond) // a round in flight ends
	var last time.Time
	for _, d := range nodes {
		if ts, ok := d.Peers().lastSeen(id, addrA); ok && ts.After(last) {
			last = ts
		}
	}
	time.Sleep(ttl + 200*time.Millisecond)
	for _, d := range nodes {
		if ts, ok := d.Peers().lastSeen(id, addrA); ok && ts.After(last) {
			t.Errorf("%v got an announce after ctx was done", d.Addr())
		}
	}
	if peers, err := j.Lookup(context.Background(), id); slices.Contains(peers, addrA) || err != nil {
		t.Errorf("after the TTL A is still found: %v, %v", peers, err)
	}
}

// TestDHTUnreachableBootstrap: StartDHT with bootstrap addresses where no
// node answers succeeds and warns, once; the node keeps trying, and joins
// when a node appears there.
func TestDHTUnreachableBootstrap(t *testing.T) {
	dhtCheckGoroutines(t)
	// An address to start a bootstrap node on later.
	pc, err := net.ListenPacket("udp", "127.0.0.51:0")
	if err != nil {
		t.Fatal(err)
	}
	later := pc.LocalAddr().String()
	pc.Close()
	// localhost is in /etc/hosts: no DNS query leaves the machine.
	bootstrap := []string{"127.0.0.52:1", "localhost:9", later}

	var w dhtWarnings
	start := time.Now()
	d := startDHTNode(t, dhtTestConfig("127.0.0.50:0", bootstrap, &w))
	if el := time.Since(start); el > 500*time.Millisecond {
		t.Errorf("StartDHT took %v: it must not wait for the bootstrap", el)
	}
	dhtWaitFor(t, 5*time.Second, func() bool { return len(w.all()) > 0 }, func() string { return "no warning" })
	msg := w.all()[0]
	t.Logf("warning after %v: %s", time.Since(start), msg)
	if !strings.HasPrefix(msg, "DHT: cannot reach the bootstrap nodes (") || !strings.Contains(msg, later) || strings.Contains(msg, "\n") {
		t.Errorf("warning: %q", msg)
	}
	// A look-up with no node reachable ends, empty, after its queries time
	// out.
	lstart := time.Now()
	peers, err := d.Lookup(context.Background(), dhtTestID("x"))
	if el := time.Since(lstart); len(peers) != 0 || el > 2*time.Second {
		t.Errorf("lookup with no node reachable: %v in %v", peers, el)
	}
	t.Logf("lookup with no node reachable: err %v", err)

	// The bootstrap node appears; the node joins at its next attempt.
	time.Sleep(time.Second)
	bootStart := time.Now()
	boot := startDHTNode(t, dhtTestConfig(later, []string{}, nil))
	dhtWaitFor(t, 10*time.Second, func() bool { return d.Nodes() > 0 }, func() string { return "never joined" })
	t.Logf("joined %v after the bootstrap node started", time.Since(bootStart))
	if n := len(w.all()); n != 1 {
		t.Errorf("%d warnings, want 1: %q", n, w.all())
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	id := dhtTestID("unreachable")
	d.Announce(ctx, id, 0, true)
	dhtLookupUntil(t, boot, id, dhtAddrPort(t, d.Addr()), 5*time.Second)

	// Close returns promptly while retries are pending.
	d2 := startDHTNode(t, dhtTestConfig("127.0.0.53:0", []string{"127.0.0.52:1"}, nil))
	time.Sleep(300 * time.Millisecond)
	start = time.Now()
	d2.Close()
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Close took %v", el)
	}
}

// TestDHTContext: StartDHT's ctx ends the node; Lookup's ctx ends the
// lookup.
func TestDHTContext(t *testing.T) {
	dhtCheckGoroutines(t)
	nodes := startDHTNetwork(t, 60, 3, nil)
	ctx, cancel := context.WithCancel(context.Background())
	d, err := StartDHT(ctx, dhtTestConfig("127.0.0.63:0", []string{nodes[0].Addr().String()}, nil))
	if err != nil {
		t.Fatal(err)
	}
	d.Announce(context.Background(), dhtTestID("ctx"), 0, true)
	cancel()
	dhtWaitFor(t, 2*time.Second, func() bool {
		_, err := d.Lookup(context.Background(), dhtTestID("ctx"))
		return errors.Is(err, net.ErrClosed)
	}, func() string { return "the node outlived its ctx" })
	if err := d.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	lctx, lcancel := context.WithCancel(context.Background())
	lcancel()
	if _, err := nodes[1].Lookup(lctx, dhtTestID("ctx")); !errors.Is(err, context.Canceled) {
		t.Errorf("Lookup with a done ctx: %v", err)
	}
	if _, err := StartDHT(lctx, dhtTestConfig("127.0.0.64:0", []string{}, nil)); !errors.Is(err, context.Canceled) {
		t.Errorf("StartDHT with a done ctx: %v", err)
	}
}

// TestDHTSharedUTPSocket: the DHT and uTP share one UDP socket. B announces
// with the implied port, A finds B's address by a lookup and dials it with
// uTP over A's own shared socket, and they exchange bytes both ways; the
// DHTs still work afterwards.
func TestDHTSharedUTPSocket(t *testing.T) {
	dhtCheckGoroutines(t)
	boot := startDHTNode(t, dhtTestConfig("127.0.0.70:0", []string{}, nil))
	shared := func(addr string) (*DHT, *utp.Socket) {
		s, err := ListenUTP(addr)
		if err != nil {
			t.Fatal(err)
		}
		cfg := dhtTestConfig("", []string{boot.Addr().String()}, nil)
		cfg.Conn = s
		return startDHTNode(t, cfg), s
	}
	dhtA, sockA := shared("127.0.0.71:0")
	dhtB, sockB := shared("127.0.0.72:0")
	if dhtB.Addr().String() != sockB.Addr().String() {
		t.Fatalf("DHT on %v, uTP on %v", dhtB.Addr(), sockB.Addr())
	}
	id := dhtTestID("utp")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dhtB.Announce(ctx, id, 0, true)
	peers := dhtLookupUntil(t, dhtA, id, dhtAddrPort(t, sockB.Addr()), 10*time.Second)
	t.Logf("A found %v", peers)

	payload := make([]byte, 1<<20)
	rand.Read(payload)
	reply := make([]byte, 256<<10)
	rand.Read(reply)
	type result struct {
		got []byte
		err error
	}
	served := make(chan result, 1)
	go func() {
		c, err := sockB.Accept()
		if err != nil {
			served <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		got := make([]byte, len(payload))
		if _, err := io.ReadFull(c, got); err != nil {
			served <- result{err: err}
			return
		}
		_, err = c.Write(reply)
		served <- result{got: got, err: err}
	}()
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	start := time.Now()
	c, err := sockA.DialContext(dctx, "udp", dhtAddrPort(t, sockB.Addr()).String())
	if err != nil {
		t.Fatalf("uTP dial to the address the DHT gave: %v", err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(reply))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	c.Close()
	r := <-served
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !bytes.Equal(r.got, payload) || !bytes.Equal(got, reply) {
		t.Fatal("bytes differ")
	}
	t.Logf("uTP exchanged %d+%d bytes in %v (%.1f MB/s)", len(payload), len(reply), el,
		float64(len(payload)+len(reply))/el.Seconds()/1e6)

	// The DHT on the shared sockets still works.
	id2 := dhtTestID("utp 2")
	dhtA.Announce(ctx, id2, 0, true)
	dhtLookupUntil(t, dhtB, id2, dhtAddrPort(t, sockA.Addr()), 10*time.Second)
}

// --- Interoperability with bittorrent-dht (WebTorrent's BEP 5 node) ---

// dhtJSDir holds the Node project of the bittorrent-dht node.
const dhtJSDir = "testdata/bittorrent-dht"

// bittorrentDHTScript returns the path of the Node script, installing its
// npm dependencies (`npm ci`) when node_modules is missing and npm can
// reach the registry; otherwise it skips (fails under CI) with the
// command to run.
func bittorrentDHTScript(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(dhtJSDir)
	if err != nil {
		t.Fatal(err)
	}
	install := "(cd hyperdrive/discovery/" + dhtJSDir + " && npm ci)  # bittorrent-dht@11.0.12"
	if _, err := exec.LookPath("node"); err != nil {
		namestest.SkipOrFail(t, "the interoperability test needs Node.js (apt-get install nodejs npm), then: %s", install)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "bittorrent-dht", "package.json")); err != nil {
		if _, err := os.Stat(filepath.Join(dir, "node_modules")); err == nil {
			namestest.SkipOrFail(t, "%s/node_modules lacks bittorrent-dht; run: %s", dhtJSDir, install)
		}
		if _, err := exec.LookPath("npm"); err != nil {
			namestest.SkipOrFail(t, "bittorrent-dht is not installed and npm is missing; run: %s", install)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			os.RemoveAll(filepath.Join(dir, "node_modules"))
			namestest.SkipOrFail(t, "cannot install bittorrent-dht (%v); run: %s\n%s", err, install, out)
		}
		t.Logf("installed bittorrent-dht into %s/node_modules", dhtJSDir)
	}
	return filepath.Join(dir, "node.mjs")
}

// dhtJSNode is a running bittorrent_dht_node.mjs.
type dhtJSNode struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events chan map[string]any
	stderr bytes.Buffer
	done   chan error
}

func startDHTJSNode(t *testing.T, script, bootstrap, host string) *dhtJSNode {
	t.Helper()
	n := &dhtJSNode{events: make(chan map[string]any, 100), done: make(chan error, 1)}
	n.cmd = exec.Command("node", script, bootstrap, host)
	if dhtDebug() {
		n.cmd.Env = append(os.Environ(), "DEBUG=bittorrent-dht,k-rpc")
	}
	n.cmd.Stderr = &n.stderr
	var err error
	if n.stdin, err = n.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := n.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev map[string]any
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				ev = map[string]any{"event": "garbage", "line": sc.Text()}
			}
			n.events <- ev
		}
		close(n.events)
		n.done <- n.cmd.Wait()
	}()
	t.Cleanup(func() {
		n.stdin.Close()
		select {
		case err := <-n.done:
			if err != nil {
				t.Errorf("node exited: %v\n%s", err, n.stderr.String())
			}
		case <-time.After(5 * time.Second):
			n.cmd.Process.Kill()
			<-n.done
			t.Errorf("node did not exit when its stdin closed")
		}
	})
	return n
}

func (n *dhtJSNode) send(t *testing.T, cmd map[string]any) {
	t.Helper()
	b, _ := json.Marshal(cmd)
	if _, err := n.stdin.Write(append(b, '\n')); err != nil {
		t.Fatal(err)
	}
}

// await returns the next event named name, recording the others in seen.
func (n *dhtJSNode) await(t *testing.T, name string, timeout time.Duration, seen *[]map[string]any) map[string]any {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-n.events:
			if !ok {
				t.Fatalf("node exited waiting for %q\n%s", name, n.stderr.String())
			}
			if ev["event"] == "error" {
				t.Fatalf("node: %v", ev["error"])
			}
			if ev["event"] == name {
				return ev
			}
			if seen != nil {
				*seen = append(*seen, ev)
			}
		case <-timer.C:
			t.Fatalf("no %q event from the node within %v\n%s", name, timeout, n.stderr.String())
		}
	}
}

// TestDHTInteropBittorrentDHT checks both directions against a real BEP 5
// implementation: a bittorrent-dht node joins our DHT through our bootstrap
// node; it finds what our node announces (through our get_peers replies,
// and our announce_peer reaches it with its token), and our node finds what
// it announces, with an explicit and with an implied port.
func TestDHTInteropBittorrentDHT(t *testing.T) {
	script := bittorrentDHTScript(t)
	nodes := startDHTNetwork(t, 80, 4, nil)
	js := startDHTJSNode(t, script, nodes[0].Addr().String(), "127.0.0.1")
	ready := js.await(t, "ready", 10*time.Second, nil)
	jsPort := int(ready["port"].(float64))
	t.Logf("bittorrent-dht node on 127.0.0.1:%d, %v nodes after bootstrap", jsPort, ready["nodes"])
	goAddrs := make(map[string]bool)
	for _, d := range nodes {
		goAddrs[dhtAddrPort(t, d.Addr()).String()] = true
	}

	// Our node announces; the JS node's lookup finds it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := nodes[1]
	idGo := dhtTestID("interop go")
	wantA := dhtAddrPort(t, a.Addr())
	a.Announce(ctx, idGo, 0, true)
	var seen []map[string]any
	deadline := time.Now().Add(15 * time.Second)
	for found := false; !found; {
		if time.Now().After(deadline) {
			t.Fatalf("the bittorrent-dht node never found %v", wantA)
		}
		js.send(t, map[string]any{"cmd": "lookup", "id": hex.EncodeToString(idGo[:])})
		ev := js.await(t, "lookup", 10*time.Second, &seen)
		for _, p := range ev["peers"].([]any) {
			p := p.(map[string]any)
			from, _ := p["from"].(string)
			addr := net.JoinHostPort(p["host"].(string), strconv.Itoa(int(p["port"].(float64))))
			// Require a value from one of our get_peers replies, not only
			// the JS node's own store.
			if addr == wantA.String() && goAddrs[from] {
				t.Logf("bittorrent-dht found %s through our node %s", addr, from)
				found = true
			}
		}
		if !found {
			time.Sleep(200 * time.Millisecond)
		}
	}
	// Our announce_peer, with the token the JS node gave us, was accepted.
	gotAnnounce := false
	for _, ev := range seen {
		if ev["event"] == "announce_peer" && ev["id"] == hex.EncodeToString(idGo[:]) &&
			ev["host"] == wantA.Addr().String() && int(ev["port"].(float64)) == int(wantA.Port()) {
			gotAnnounce = true
		}
	}
	if !gotAnnounce {
		t.Errorf("the bittorrent-dht node never accepted our announce_peer; events: %v", seen)
	}

	// The JS node announces (explicit port, then implied); ours finds it.
	j := nodes[3]
	idJS, idJSImplied := dhtTestID("interop js"), dhtTestID("interop js implied")
	js.send(t, map[string]any{"cmd": "announce", "id": hex.EncodeToString(idJS[:]), "port": 6789})
	if ev := js.await(t, "announced", 10*time.Second, nil); ev["error"] != nil {
		t.Fatalf("bittorrent-dht announce: %v", ev["error"])
	}
	dhtLookupUntil(t, j, idJS, netip.MustParseAddrPort("127.0.0.1:6789"), 10*time.Second)
	js.send(t, map[string]any{"cmd": "announce", "id": hex.EncodeToString(idJSImplied[:]), "port": 0})
	if ev := js.await(t, "announced", 10*time.Second, nil); ev["error"] != nil {
		t.Fatalf("bittorrent-dht announce: %v", ev["error"])
	}
	dhtLookupUntil(t, j, idJSImplied, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(jsPort)), 10*time.Second)
}

// --- Multi-host: nodes in separate network namespaces ---

// The DHT lab: TestDHTMultiHost re-runs itself in new network, mount and
// PID namespaces (unshare), where dhtLabSetup makes five "hosts", network
// namespaces h1…h5 with 10.77.0.1…5/24 on eth0, all on one bridge. Every
// node runs in its own process (the test binary, as TestDHTLabNode) in its
// host, on the same port 6881, as on separate machines. Everything exists
// only in those namespaces and vanishes with the test process, and with it
// every process it started.
const dhtLabSetup = `set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/netns
ip link set lo up
ip link add br-dht type bridge
ip link set br-dht up
for i in 1 2 3 4 5; do
	ip netns add h$i
	ip link add veth$i type veth peer name eth0 netns h$i
	ip link set veth$i master br-dht up
	ip -n h$i link set lo up
	ip -n h$i addr add 10.77.0.$i/24 dev eth0
	ip -n h$i link set eth0 up
done
echo DHTLAB-READY
exec "$@"
`

const (
	dhtLabEnv     = "BEAKER_DHT_LAB"      // set in the re-run test process
	dhtLabNodeEnv = "BEAKER_DHT_LAB_NODE" // set in a node process: its addr
	dhtLabBootEnv = "BEAKER_DHT_LAB_BOOTSTRAP"
	dhtLabHosts   = 5
	dhtLabPort    = 6881
)

// enterDHTLab makes the calling test run in the DHT lab. In the test
// process it re-runs the test in new namespaces, reports its outcome and
// returns false: the caller returns. In the re-run it returns true.
func enterDHTLab(t *testing.T) bool {
	t.Helper()
	if os.Getenv(dhtLabEnv) == "1" {
		if _, err := net.InterfaceByName("br-dht"); err != nil {
			t.Fatalf("%s set but no DHT lab here: %v", dhtLabEnv, err)
		}
		t.Cleanup(func() {
			for i := 1; i <= dhtLabHosts; i++ {
				exec.Command("ip", "netns", "del", fmt.Sprintf("h%d", i)).Run()
			}
			exec.Command("ip", "link", "del", "br-dht").Run()
		})
		return true
	}
	if runtime.GOOS != "linux" {
		namestest.SkipOrFail(t, "the DHT lab needs Linux network namespaces")
	}
	for _, tool := range []string{"unshare", "ip", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			namestest.SkipOrFail(t, "the DHT lab needs %s: apt-get install util-linux iproute2 mount", tool)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"}
	if os.Geteuid() != 0 {
		args = append([]string{"--user", "--map-root-user"}, args...)
	}
	args = append(args, "sh", "-c", dhtLabSetup, "sh", exe,
		"-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.v", "-test.count=1", "-test.timeout=3m")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", args...)
	cmd.Env = append(os.Environ(), dhtLabEnv+"=1")
	out, err := cmd.CombinedOutput()
	text := string(out)
	switch {
	case !strings.Contains(text, "DHTLAB-READY"):
		namestest.SkipOrFail(t, "cannot make the DHT lab (needs root, or unprivileged user namespaces): %v\n%s", err, text)
	case strings.Contains(text, "--- SKIP: "+t.Name()):
		t.Skipf("in the DHT lab:\n%s", text)
	case err != nil || !strings.Contains(text, "--- PASS: "+t.Name()):
		t.Fatalf("in the DHT lab: %v\n%s", err, text)
	case testing.Verbose():
		t.Logf("in the DHT lab:\n%s", text)
	}
	return false
}

// dhtLabNode is a node process in the DHT lab.
type dhtLabNode struct {
	name  string
	addr  netip.AddrPort
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	out   *dhtLockedBuffer
	done  chan error
}

type dhtLockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *dhtLockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *dhtLockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func startDHTLabNode(t *testing.T, host int, bootstrap string) *dhtLabNode {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	n := &dhtLabNode{
		name:  fmt.Sprintf("h%d", host),
		addr:  netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 77, 0, byte(host)}), dhtLabPort),
		lines: make(chan string, 100),
		out:   &dhtLockedBuffer{},
		done:  make(chan error, 1),
	}
	n.cmd = exec.Command("ip", "netns", "exec", n.name, exe, "-test.run=^TestDHTLabNode$", "-test.v", "-test.count=1")
	n.cmd.Env = append(os.Environ(), dhtLabNodeEnv+"="+n.addr.String(), dhtLabBootEnv+"="+bootstrap)
	n.cmd.Stderr = n.out
	if n.stdin, err = n.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := n.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(n.out, line)
			if strings.HasPrefix(line, "LAB-") {
				n.lines <- line
			}
		}
		close(n.lines)
		n.done <- n.cmd.Wait()
	}()
	t.Cleanup(func() { n.stop(t) })
	if line := n.await(t, "LAB-READY", 10*time.Second); line != "LAB-READY "+n.addr.String() {
		t.Fatalf("%s: %s", n.name, line)
	}
	return n
}

// stop closes the node's stdin, which closes its DHT, and checks that its
// test passed (no goroutine leak either).
func (n *dhtLabNode) stop(t *testing.T) {
	t.Helper()
	if n.stdin == nil {
		return
	}
	n.stdin.Close()
	n.stdin = nil
	select {
	case err := <-n.done:
		if out := n.out.String(); err != nil || !strings.Contains(out, "--- PASS: TestDHTLabNode") {
			t.Errorf("%s: %v\n%s", n.name, err, out)
		}
	case <-time.After(15 * time.Second):
		n.cmd.Process.Kill()
		t.Errorf("%s did not stop\n%s", n.name, n.out.String())
	}
}

func (n *dhtLabNode) send(t *testing.T, format string, args ...any) {
	t.Helper()
	if _, err := fmt.Fprintf(n.stdin, format+"\n", args...); err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
}

func (n *dhtLabNode) await(t *testing.T, prefix string, timeout time.Duration) string {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case line, ok := <-n.lines:
			if !ok {
				t.Fatalf("%s exited waiting for %s\n%s", n.name, prefix, n.out.String())
			}
			if strings.HasPrefix(line, prefix) {
				return line
			}
		case <-timer.C:
			t.Fatalf("%s: no %s within %v\n%s", n.name, prefix, timeout, n.out.String())
		}
	}
}

func (n *dhtLabNode) nodes(t *testing.T) int {
	t.Helper()
	n.send(t, "nodes")
	v, err := strconv.Atoi(strings.TrimPrefix(n.await(t, "LAB-NODES ", 5*time.Second), "LAB-NODES "))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// dhtLookupUntil looks id up from n until want is found.
func (n *dhtLabNode) dhtLookupUntil(t *testing.T, id [20]byte, want netip.AddrPort, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n.send(t, "lookup %x", id)
		line := n.await(t, "LAB-LOOKUP ", 10*time.Second)
		if strings.Contains(" "+line+" ", " "+want.String()+" ") {
			t.Logf("%s found %v: %s", n.name, want, line)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never found %v: %s", n.name, want, line)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDHTMultiHost runs DHT nodes on five hosts (network namespaces, one
// process each, all on port 6881): h1 is the bootstrap node; announces from
// one host are found from another, with implied and explicit ports; then
// the bootstrap host goes away and the others still find each other.
func TestDHTMultiHost(t *testing.T) {
	if !enterDHTLab(t) {
		return
	}
	hosts := make([]*dhtLabNode, dhtLabHosts+1) // 1-based
	hosts[1] = startDHTLabNode(t, 1, "")
	for i := 2; i <= dhtLabHosts; i++ {
		hosts[i] = startDHTLabNode(t, i, hosts[1].addr.String())
	}
	dhtWaitFor(t, 10*time.Second, func() bool {
		for _, h := range hosts[2:] {
			if h.nodes(t) < 3 {
				return false
			}
		}
		return true
	}, func() string { return "the hosts never learnt of each other" })

	idA, idB, idC := dhtTestID("lab A"), dhtTestID("lab B"), dhtTestID("lab C")
	hosts[2].send(t, "announce %x implied", idA)
	hosts[5].dhtLookupUntil(t, idA, hosts[2].addr, 10*time.Second)
	hosts[3].send(t, "announce %x 7000", idB)
	hosts[4].dhtLookupUntil(t, idB, netip.AddrPortFrom(hosts[3].addr.Addr(), 7000), 10*time.Second)

	hosts[1].stop(t)
	hosts[4].send(t, "announce %x implied", idC)
	hosts[2].dhtLookupUntil(t, idC, hosts[4].addr, 10*time.Second)
	hosts[5].dhtLookupUntil(t, idA, hosts[2].addr, 10*time.Second)
}

// TestDHTLabNode is a node process of TestDHTMultiHost; it runs only
// there. It serves commands from stdin (nodes; announce <hex> <port|implied>;
// lookup <hex>) and closes its DHT at the end of stdin.
func TestDHTLabNode(t *testing.T) {
	addr := os.Getenv(dhtLabNodeEnv)
	if addr == "" {
		t.Skip("a node process of TestDHTMultiHost")
	}
	dhtCheckGoroutines(t)
	bootstrap := []string{}
	if b := os.Getenv(dhtLabBootEnv); b != "" {
		bootstrap = []string{b}
	}
	var w dhtWarnings
	d := startDHTNode(t, dhtTestConfig(addr, bootstrap, &w))
	fmt.Printf("LAB-READY %v\n", dhtAddrPort(t, d.Addr()))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		var id [20]byte
		if len(f) > 1 {
			if b, err := hex.DecodeString(f[1]); err != nil || len(b) != 20 {
				t.Fatalf("bad id in %q", sc.Text())
			} else {
				id = [20]byte(b)
			}
		}
		switch {
		case f[0] == "nodes":
			fmt.Printf("LAB-NODES %d\n", d.Nodes())
		case f[0] == "announce" && len(f) == 3:
			port, _ := strconv.Atoi(f[2])
			d.Announce(ctx, id, port, f[2] == "implied")
		case f[0] == "lookup" && len(f) == 2:
			lctx, lcancel := context.WithTimeout(ctx, 5*time.Second)
			peers, err := d.Lookup(lctx, id)
			lcancel()
			var s []string
			for _, p := range peers {
				s = append(s, p.String())
			}
			fmt.Printf("LAB-LOOKUP %x %s err=%v\n", id, strings.Join(s, " "), err)
		default:
			t.Fatalf("bad command %q", sc.Text())
		}
	}
	for _, msg := range w.all() {
		t.Logf("warning: %s", msg)
	}
}

// BenchmarkDHTLookup measures one Lookup (a whole get_peers traversal that
// finds one peer) in a 10-node loopback DHT.
func BenchmarkDHTLookup(b *testing.B) {
	nodes := startDHTNetwork(b, 90, 10, nil)
	a, j := nodes[1], nodes[9]
	id := dhtTestID("bench")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a.Announce(ctx, id, 0, true)
	want := dhtAddrPort(b, a.Addr())
	dhtLookupUntil(b, j, id, want, 10*time.Second)
	b.ReportAllocs()
	for b.Loop() {
		peers, err := j.Lookup(context.Background(), id)
		if err != nil || !slices.Contains(peers, want) {
			b.Fatalf("lookup: %v, %v", peers, err)
		}
	}
}
