package swarm

// The hostile-peer suite: a replica downloads an archive from an honest
// seeder while a fake peer, speaking the wire protocol over real loopback
// sockets, misbehaves in one way per case. Every case checks that the honest
// download completes byte-exact, that nothing bad was stored (Verify), that
// the fake peer really did its misdeed, and, where the misdeed can be told
// from honest behaviour, that its address is banned.
//
// Bans are per IP address, so the fake peer listens on 127.0.0.2 and the
// honest seeder is reached through 127.0.0.1 or a gate on 127.0.0.3: banning
// the fake must not ban the seeder.

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flynn/noise"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
	"github.com/beaker-dev/beaker-dev/hyperdrive/wire"
)

// Loopback addresses of their own for the fake peer and the gate.
const (
	fakeIP = "127.0.0.2"
	gateIP = "127.0.0.3"
)

// msgConn is what a fake peer talks through: a *wire.Conn, or a rawConn
// when it must put on the stream what wire.Conn refuses to send.
type msgConn interface {
	ReadMessage() (wire.Message, error)
	WriteMessage(wire.Message) error
	HandshakeHash() [32]byte
}

// fakeConfig describes a fake peer.
type fakeConfig struct {
	key hyperdrive.PublicKey
	src *hyperdrive.Archive // the data it serves, read-only
	// raw makes it speak through rawConn instead of wire.Server.
	raw bool
	// hold, if set, delays the handshake of every connection until closed.
	hold chan struct{}
	// badOpen answers the replica's Open with a wrong capability.
	badOpen bool
	// script runs once the Open exchange is done.
	script func(s *session)
}

// fakePeer is a hostile peer. It accepts the replica's dials on fakeIP.
type fakePeer struct {
	t testing.TB
	fakeConfig
	id wire.Identity
	ln net.Listener

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	problems []string

	sessions  atomic.Int64    // connections that got past the Open exchange
	requests  [4]atomic.Int64 // requests received, by kind
	sent      atomic.Int64    // messages sent
	bad       atomic.Int64    // misdeeds done (bad messages sent, stalls, ...)
	hangups   atomic.Int64    // sessions the replica ended
	exercised chan struct{}   // closed at the first misdeed
	exOnce    sync.Once
	hungUp    chan struct{} // closed when the replica first ends a session
	huOnce    sync.Once
}

func startFake(t testing.TB, cfg fakeConfig) *fakePeer {
	t.Helper()
	ln, err := net.Listen("tcp", fakeIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	id, err := wire.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	fp := &fakePeer{t: t, fakeConfig: cfg, id: id, ln: ln, conns: map[net.Conn]struct{}{},
		exercised: make(chan struct{}), hungUp: make(chan struct{})}
	fp.ctx, fp.cancel = context.WithCancel(context.Background())
	fp.wg.Add(1)
	go fp.acceptLoop()
	t.Cleanup(fp.Close)
	return fp
}

func (fp *fakePeer) Addr() netip.AddrPort { return netip.MustParseAddrPort(fp.ln.Addr().String()) }

// Close kills the fake peer: its listener and every connection.
func (fp *fakePeer) Close() {
	fp.once.Do(func() {
		fp.cancel()
		fp.ln.Close()
		fp.mu.Lock()
		for c := range fp.conns {
			c.Close()
		}
		fp.mu.Unlock()
		fp.wg.Wait()
	})
}

func (fp *fakePeer) problem(format string, args ...any) {
	fp.mu.Lock()
	fp.problems = append(fp.problems, fmt.Sprintf(format, args...))
	fp.mu.Unlock()
}

// check fails the test if the fake peer saw the replica break the protocol.
func (fp *fakePeer) check(t testing.TB) {
	t.Helper()
	fp.mu.Lock()
	defer fp.mu.Unlock()
	for _, p := range fp.problems {
		t.Errorf("fake peer: %s", p)
	}
}

func (fp *fakePeer) String() string {
	return fmt.Sprintf("fake peer %s: %d sessions, asked %d entries / %d chunks / %d signatures, sent %d messages, %d misdeeds, %d hang-ups by the replica",
		fp.Addr(), fp.sessions.Load(), fp.requests[wire.KindEntries].Load(), fp.requests[wire.KindChunk].Load(),
		fp.requests[wire.KindSignatures].Load(), fp.sent.Load(), fp.bad.Load(), fp.hangups.Load())
}

// waitExercised waits for the first misdeed.
func (fp *fakePeer) waitExercised(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case <-fp.exercised:
	case <-time.After(d):
		t.Fatalf("the fake peer never got to misbehave in %v (%v)", d, fp)
	}
}

func (fp *fakePeer) acceptLoop() {
	defer fp.wg.Done()
	for {
		c, err := fp.ln.Accept()
		if err != nil {
			return
		}
		fp.mu.Lock()
		if fp.ctx.Err() != nil {
			fp.mu.Unlock()
			c.Close()
			return
		}
		fp.conns[c] = struct{}{}
		fp.mu.Unlock()
		fp.wg.Add(1)
		go func() {
			defer fp.wg.Done()
			defer func() {
				c.Close()
				fp.mu.Lock()
				delete(fp.conns, c)
				fp.mu.Unlock()
			}()
			fp.handle(c)
		}()
	}
}

func (fp *fakePeer) handle(nc net.Conn) {
	if fp.hold != nil {
		select {
		case <-fp.hold:
		case <-fp.ctx.Done():
			return
		}
	}
	var c msgConn
	var rc *rawConn
	if fp.raw {
		var err error
		if rc, err = rawServer(nc); err != nil {
			return
		}
		c = rc
	} else {
		wc, err := wire.Server(fp.ctx, nc, fp.id)
		if err != nil {
			return
		}
		c = wc
	}
	nc.SetReadDeadline(time.Now().Add(wire.HandshakeTimeout))
	m, err := c.ReadMessage()
	if err != nil {
		return
	}
	open, ok := m.(wire.Open)
	dk := [32]byte(fp.key.DiscoveryKey())
	if !ok || open.DiscoveryKey != dk {
		fp.problem("the replica's first message is %#v, not an Open of the archive", m)
		return
	}
	hash := c.HandshakeHash()
	if open.Capability != wire.Capability(fp.key, hash, true) {
		fp.problem("the replica's capability is wrong")
		return
	}
	nc.SetReadDeadline(time.Time{})
	s := &session{fp: fp, c: c, rc: rc, nc: nc}
	ours := wire.Capability(fp.key, hash, false)
	if fp.badOpen {
		ours[0] ^= 1
		s.sendBad(wire.Open{DiscoveryKey: dk, Capability: ours})
		s.drain()
		return
	}
	if s.send(wire.Open{DiscoveryKey: dk, Capability: ours}) != nil {
		return
	}
	fp.sessions.Add(1)
	fp.script(s)
}

// session is one connection of a fake peer, run by one goroutine.
type session struct {
	fp   *fakePeer
	c    msgConn
	rc   *rawConn // set when the fake peer speaks raw
	nc   net.Conn
	mute bool // stalled: answer nothing more
}

func (s *session) send(m wire.Message) error {
	s.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	err := s.c.WriteMessage(m)
	if err == nil {
		s.fp.sent.Add(1)
	}
	return err
}

// misdeed counts a misbehaviour done.
func (s *session) misdeed() {
	s.fp.bad.Add(1)
	s.fp.exOnce.Do(func() { close(s.fp.exercised) })
}

func (s *session) sendBad(m wire.Message) error {
	s.misdeed()
	return s.send(m)
}

// ended records that the replica ended the session (not us).
func (s *session) ended() {
	if s.fp.ctx.Err() != nil {
		return
	}
	s.fp.hangups.Add(1)
	s.fp.huOnce.Do(func() { close(s.fp.hungUp) })
}

// drain reads and drops what the replica sends until it hangs up.
func (s *session) drain() {
	for {
		if _, err := s.c.ReadMessage(); err != nil {
			s.ended()
			return
		}
	}
}

// serve answers the replica's requests: hook first (true: handled), the
// honest answer from the source archive otherwise. It returns when the
// connection ends.
func (s *session) serve(hook func(r wire.Request) bool) {
	for {
		m, err := s.c.ReadMessage()
		if err != nil {
			s.ended()
			return
		}
		r, ok := m.(wire.Request)
		if !ok {
			continue
		}
		if int(r.Kind) < len(s.fp.requests) {
			s.fp.requests[r.Kind].Add(1)
		}
		if s.mute || hook != nil && hook(r) {
			continue
		}
		if s.send(answer(s.fp.src, r)) != nil {
			return
		}
	}
}

// statusOf is an archive's honest Status: complete and live.
func statusOf(a *hyperdrive.Archive) wire.Status {
	v := a.Version()
	sr, _ := a.SignedRootAt(v)
	roots, _ := a.RootsAt(v)
	st := wire.Status{Length: v, Time: sr.Time, Signature: sr.Signature, Flags: wire.StatusComplete | wire.StatusLive}
	for _, r := range roots {
		st.Roots = append(st.Roots, wire.Node{Hash: r.Hash, Size: r.Size})
	}
	return st
}

// answer is the honest answer to a request, from archive a.
func answer(a *hyperdrive.Archive, r wire.Request) wire.Message {
	switch r.Kind {
	case wire.KindChunk:
		data, err := a.Chunk(r.Hash)
		if err != nil {
			return wire.NotHave{ID: r.ID}
		}
		return wire.Chunk{ID: r.ID, Data: data}
	case wire.KindSignatures:
		m := wire.Signatures{ID: r.ID}
		for _, s := range a.Versions() {
			if s.Length > r.After && len(m.Roots) < wire.MaxSignatures {
				m.Roots = append(m.Roots, wire.SignedRoot{Length: s.Length, Time: s.Time, TreeHash: s.TreeHash, Signature: s.Signature})
			}
		}
		return m
	default:
		return entriesAnswer(a, r, r.End-r.Start)
	}
}

// entriesAnswer answers an entries request with at most max entries (a
// peer may send fewer than asked) and the upgrade nodes they need.
func entriesAnswer(a *hyperdrive.Archive, r wire.Request, max uint64) wire.Message {
	if _, ok := a.SignedRootAt(r.Upgrade); !ok || r.Upgrade > a.Version() {
		return wire.NotHave{ID: r.ID}
	}
	m := wire.Entries{ID: r.ID, Start: r.Start, Upgrade: r.Upgrade}
	size := 0
	for seq := r.Start; seq < min(r.End, r.Start+max) && size < entriesBudget; seq++ {
		b, err := a.EntryBytes(seq)
		if err != nil {
			return wire.NotHave{ID: r.ID}
		}
		m.Entries = append(m.Entries, slices.Clone(b))
		size += len(b)
	}
	nodes, err := a.UpgradeNodes(r.Start+uint64(len(m.Entries)), r.Upgrade)
	if err != nil {
		return wire.NotHave{ID: r.ID}
	}
	for _, n := range nodes {
		m.Nodes = append(m.Nodes, wire.Node{Hash: n.Hash, Size: n.Size})
	}
	return m
}

// rawConn is the accepting side of the wire protocol written again from
// docs/PROTOCOL.md §2 with flynn/noise, so a fake peer can put on the
// message stream what wire.Conn would never send: an oversize length, half
// a message.
type rawConn struct {
	nc         net.Conn
	br         *bufio.Reader
	send, recv *noise.CipherState
	hash       [32]byte
	plain      []byte
}

func rawServer(nc net.Conn) (*rawConn, error) {
	nc.SetDeadline(time.Now().Add(wire.HandshakeTimeout))
	defer nc.SetDeadline(time.Time{})
	br := bufio.NewReader(nc)
	mine := []byte{'b', 'e', 'a', 'k', 'e', 'r', 'd', 'v', wire.Version, 0}
	theirs := make([]byte, len(mine))
	if _, err := io.ReadFull(br, theirs); err != nil {
		return nil, err
	}
	if _, err := nc.Write(mine); err != nil {
		return nil, err
	}
	suite := noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s)
	kp, err := suite.GenerateKeypair(rand.Reader)
	if err != nil {
		return nil, err
	}
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite: suite, Random: rand.Reader, Pattern: noise.HandshakeXX,
		Prologue: slices.Concat(theirs, mine), StaticKeypair: kp,
	})
	if err != nil {
		return nil, err
	}
	readMsg := func() ([]byte, error) {
		var hdr [2]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return nil, err
		}
		msg := make([]byte, binary.BigEndian.Uint16(hdr[:]))
		_, err := io.ReadFull(br, msg)
		return msg, err
	}
	m1, err := readMsg() // -> e
	if err != nil {
		return nil, err
	}
	if _, _, _, err := hs.ReadMessage(nil, m1); err != nil {
		return nil, err
	}
	m2, _, _, err := hs.WriteMessage(nil, nil) // <- e, ee, s, es
	if err != nil {
		return nil, err
	}
	if _, err := nc.Write(binary.BigEndian.AppendUint16(nil, uint16(len(m2)))); err != nil {
		return nil, err
	}
	if _, err := nc.Write(m2); err != nil {
		return nil, err
	}
	m3, err := readMsg() // -> s, se
	if err != nil {
		return nil, err
	}
	_, cs1, cs2, err := hs.ReadMessage(nil, m3)
	if err != nil {
		return nil, err
	}
	rc := &rawConn{nc: nc, br: br, send: cs2, recv: cs1}
	copy(rc.hash[:], hs.ChannelBinding())
	return rc, nil
}

func (rc *rawConn) HandshakeHash() [32]byte { return rc.hash }

// writePlain puts bytes on the message stream, in as many frames as needed.
func (rc *rawConn) writePlain(p []byte) error {
	for len(p) > 0 {
		n := min(len(p), 65535-16)
		ct, err := rc.send.Encrypt(nil, nil, p[:n])
		if err != nil {
			return err
		}
		if _, err := rc.nc.Write(slices.Concat(binary.BigEndian.AppendUint16(nil, uint16(len(ct))), ct)); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

func (rc *rawConn) WriteMessage(m wire.Message) error {
	body := wire.Encode(m)
	return rc.writePlain(append(binary.AppendUvarint(nil, uint64(len(body))), body...))
}

func (rc *rawConn) ReadMessage() (wire.Message, error) {
	for {
		n, k := binary.Uvarint(rc.plain)
		switch {
		case k < 0 || k == 0 && len(rc.plain) >= binary.MaxVarintLen64:
			return nil, wire.ErrMalformed
		case k > 0 && n == 0:
			rc.plain = rc.plain[k:]
			continue
		case k > 0 && n > wire.MaxMessage:
			return nil, wire.ErrTooBig
		case k > 0 && uint64(len(rc.plain)-k) >= n:
			body := rc.plain[k : k+int(n)]
			rc.plain = rc.plain[k+int(n):]
			return wire.Decode(body)
		}
		var hdr [2]byte
		if _, err := io.ReadFull(rc.br, hdr[:]); err != nil {
			return nil, err
		}
		ct := make([]byte, binary.BigEndian.Uint16(hdr[:]))
		if _, err := io.ReadFull(rc.br, ct); err != nil {
			return nil, err
		}
		pt, err := rc.recv.Decrypt(nil, nil, ct)
		if err != nil {
			return nil, err
		}
		rc.plain = append(rc.plain, pt...)
	}
}

// gate is a TCP proxy to an honest seeder that holds every connection
// until opened: the replica has the seeder as a --peer from the start, but
// the fake peer gets first dibs.
type gate struct {
	ln     net.Listener
	target string
	open   chan struct{}
	oOnce  sync.Once
	done   chan struct{}
	cOnce  sync.Once
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
}

func newGate(t testing.TB, target netip.AddrPort) *gate {
	t.Helper()
	ln, err := net.Listen("tcp", gateIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{ln: ln, target: target.String(), open: make(chan struct{}), done: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	g.wg.Add(1)
	go g.acceptLoop()
	t.Cleanup(g.Close)
	return g
}

func (g *gate) Addr() netip.AddrPort { return netip.MustParseAddrPort(g.ln.Addr().String()) }

// Open lets connections through.
func (g *gate) Open() { g.oOnce.Do(func() { close(g.open) }) }

func (g *gate) Close() {
	g.cOnce.Do(func() {
		close(g.done)
		g.ln.Close()
		g.mu.Lock()
		for c := range g.conns {
			c.Close()
		}
		g.mu.Unlock()
		g.wg.Wait()
	})
}

func (g *gate) track(c net.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.done:
		c.Close()
		return false
	default:
	}
	g.conns[c] = struct{}{}
	return true
}

func (g *gate) acceptLoop() {
	defer g.wg.Done()
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		if !g.track(c) {
			return
		}
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			defer c.Close()
			select {
			case <-g.open:
			case <-g.done:
				return
			}
			up, err := net.Dial("tcp", g.target)
			if err != nil || !g.track(up) {
				return
			}
			defer up.Close()
			var pipes sync.WaitGroup
			pipes.Add(2)
			for _, p := range [][2]net.Conn{{up, c}, {c, up}} {
				go func() {
					defer pipes.Done()
					io.Copy(p[0], p[1])
					p[0].Close()
					p[1].Close()
				}()
			}
			pipes.Wait()
		}()
	}
}

// Helpers shared with faults_test.go.

// authorKP is author with the key pair returned, to sign a fork with.
func authorKP(t testing.TB, files map[string][]byte) (*hyperdrive.Archive, hyperdrive.KeyPair) {
	t.Helper()
	kp, err := hyperdrive.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	return createWithKey(t, kp, "author", files), kp
}

func createWithKey(t testing.TB, kp hyperdrive.KeyPair, name string, files map[string][]byte) *hyperdrive.Archive {
	t.Helper()
	a, err := hyperdrive.Create(filepath.Join(t.TempDir(), name), kp, hyperdrive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	commit(t, a, files)
	return a
}

// makeSite is n files of about size bytes each, distinct for each seed.
func makeSite(seed uint64, n, size int) map[string][]byte {
	files := map[string][]byte{}
	for i := 0; i < n; i++ {
		var s [32]byte
		binary.BigEndian.PutUint64(s[:], seed)
		binary.BigEndian.PutUint64(s[8:], uint64(i))
		b := make([]byte, size/2+(i*size)/n)
		mrand.NewChaCha8(s).Read(b)
		files[fmt.Sprintf("/s%d/d%d/f%03d.bin", seed, i%4, i)] = b
	}
	return files
}

func siteBytes(files map[string][]byte) int64 {
	n := int64(0)
	for _, b := range files {
		n += int64(len(b))
	}
	return n
}

func mustJoin(t testing.TB, s *Swarm, a *hyperdrive.Archive, opts JoinOptions) *Feed {
	t.Helper()
	f, err := s.Join(a, opts)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// waitUntil polls cond until it holds or d passes.
func waitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// verifyReplica checks a replica's files from scratch (its swarm must be
// closed, so every chunk is flushed).
func verifyReplica(t testing.TB, r *hyperdrive.Archive, sparse bool, version uint64) {
	t.Helper()
	rep, err := hyperdrive.Verify(context.Background(), r.Dir(), r.Key(), hyperdrive.VerifyOptions{Sparse: sparse})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rep.Problems {
		t.Errorf("verify: %v", p)
	}
	if rep.LastVersion != version || len(rep.TornTails) > 0 {
		t.Errorf("verify: last version %d (want %d), torn tails %q", rep.LastVersion, version, rep.TornTails)
	}
}

// checkGoroutines fails if more than a few goroutines outlive the test's
// swarms.
func checkGoroutines(t testing.TB, before int) {
	t.Helper()
	for i := 0; i < 250 && runtime.NumGoroutine() > before+3; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > before+3 {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after Close, %d before\n%s", g, before, buf[:runtime.Stack(buf, true)])
	}
}

func fakeBanned(s *Swarm, fp *fakePeer) bool { return s.isBanned(fp.Addr().Addr()) }

// hostileCase is a misbehaviour the fake peer shows while the replica has
// the honest seeder as a --peer too, held at the gate until the fake peer
// has misbehaved.
type hostileCase struct {
	name       string
	raw        bool
	badOpen    bool
	detectable bool // the replica can tell, and bans the address
	script     func(s *session)
}

// stallOnChunk runs do at the first chunk request, then mutes the session.
func stallOnChunk(do func(s *session, r wire.Request)) func(s *session) {
	return func(s *session) {
		s.send(statusOf(s.fp.src))
		s.serve(func(r wire.Request) bool {
			if r.Kind != wire.KindChunk {
				return false
			}
			s.misdeed()
			do(s, r)
			s.mute = true
			return true
		})
	}
}

var hostileCases = []hostileCase{
	{
		name: "wrong chunk", detectable: true,
		script: func(s *session) {
			s.send(statusOf(s.fp.src))
			s.serve(func(r wire.Request) bool {
				if r.Kind != wire.KindChunk {
					return false
				}
				data, err := s.fp.src.Chunk(r.Hash)
				if err != nil {
					return false
				}
				data[len(data)/2] ^= 0x01 // the same length, other bytes
				s.sendBad(wire.Chunk{ID: r.ID, Data: data})
				return true
			})
		},
	},
	{
		name: "wrong proof/upgrade node", detectable: true,
		script: func(s *session) {
			s.send(statusOf(s.fp.src))
			s.serve(func(r wire.Request) bool {
				if r.Kind != wire.KindEntries || r.End-r.Start < 2 {
					return false
				}
				// Half the entries asked, so upgrade nodes are needed.
				m, ok := entriesAnswer(s.fp.src, r, (r.End-r.Start)/2).(wire.Entries)
				if !ok || len(m.Nodes) == 0 {
					return false
				}
				m.Nodes[0].Hash[7] ^= 0x80
				s.sendBad(m)
				return true
			})
		},
	},
	{
		name: "wrong proof/entry", detectable: true,
		script: func(s *session) {
			s.send(statusOf(s.fp.src))
			s.serve(func(r wire.Request) bool {
				if r.Kind != wire.KindEntries {
					return false
				}
				m, ok := entriesAnswer(s.fp.src, r, r.End-r.Start).(wire.Entries)
				if !ok {
					return false
				}
				last := m.Entries[len(m.Entries)-1]
				last[len(last)-1] ^= 0x02
				s.sendBad(m)
				return true
			})
		},
	},
	{
		name: "bad signature/status", detectable: true,
		script: func(s *session) {
			st := statusOf(s.fp.src)
			st.Signature[17] ^= 0x04
			s.sendBad(st)
			s.serve(nil)
		},
	},
	{
		name: "bad signature/status beyond the real length", detectable: true,
		script: func(s *session) {
			st := statusOf(s.fp.src)
			st.Length += 3
			st.Roots = nil
			for i := range fullRootIndexes(st.Length) {
				st.Roots = append(st.Roots, wire.Node{Hash: sha256.Sum256([]byte{byte(i)}), Size: 4096})
			}
			st.Signature[63] ^= 0x01
			s.sendBad(st)
			s.serve(nil)
		},
	},
	{
		name: "bad signature/signatures answer", detectable: true,
		script: func(s *session) {
			s.send(statusOf(s.fp.src))
			s.serve(func(r wire.Request) bool {
				if r.Kind != wire.KindSignatures {
					return false
				}
				m := answer(s.fp.src, r).(wire.Signatures)
				if len(m.Roots) == 0 {
					return false
				}
				m.Roots[len(m.Roots)-1].Signature[5] ^= 0x10
				s.sendBad(m)
				return true
			})
		},
	},
	{
		name: "oversize message/just over", raw: true, detectable: true,
		script: func(s *session) {
			s.send(statusOf(s.fp.src))
			s.misdeed()
			s.rc.writePlain(append(binary.AppendUvarint(nil, wire.MaxMessage+1), make([]byte, 1000)...))
			s.drain()
		},
	},
	{
		name: "oversize message/a terabyte", raw: true, detectable: true,
		script: func(s *session) {
			s.send(statusOf(s.fp.src))
			s.misdeed()
			s.rc.writePlain(binary.AppendUvarint(nil, 1<<40))
			s.drain()
		},
	},
	{
		// Half a transport frame: a header announcing 1000 bytes, then 500.
		name: "stall/half a frame",
		script: stallOnChunk(func(s *session, r wire.Request) {
			s.nc.Write(append([]byte{0x03, 0xe8}, make([]byte, 500)...))
		}),
	},
	{
		// Half a message: a whole frame holding the first half of the chunk
		// answer.
		name: "stall/half a message", raw: true,
		script: stallOnChunk(func(s *session, r wire.Request) {
			data, _ := s.fp.src.Chunk(r.Hash)
			body := wire.Encode(wire.Chunk{ID: r.ID, Data: data})
			msg := append(binary.AppendUvarint(nil, uint64(len(body))), body...)
			s.rc.writePlain(msg[:len(msg)/2])
		}),
	},
	{
		// Claims to be complete, has nothing. Not a lie a replica can prove
		// (a peer may lose data), so no ban.
		name: "complete but NotHave",
		script: func(s *session) {
			s.send(statusOf(s.fp.src))
			s.serve(func(r wire.Request) bool {
				if r.Kind != wire.KindChunk {
					return false
				}
				s.sendBad(wire.NotHave{ID: r.ID})
				return true
			})
		},
	},
	{
		// Answers Open with a capability that does not prove the key.
		name: "wrong capability", badOpen: true,
	},
}

func TestHostilePeers(t *testing.T) {
	for _, hc := range hostileCases {
		t.Run(hc.name, func(t *testing.T) { runHostile(t, hc) })
	}
	// The replica has 16 entries (15 files); the fork has as many.
	t.Run("forked history/same length", func(t *testing.T) { runFork(t, 15, 0, true) })
	// The fork has 20: its signed roots are [0,16) and [16,20), and the
	// first contradicts the replica's tree.
	t.Run("forked history/longer", func(t *testing.T) { runFork(t, 15, 4, true) })
	// The replica has 17 entries, the fork 32: its one signed root covers
	// entries the replica lacks, so only the entries show the lie, and no
	// signed evidence can be kept.
	t.Run("forked history/much longer", func(t *testing.T) { runFork(t, 16, 15, false) })
	t.Run("endless wants", runEndlessWants)
}

func runHostile(t *testing.T, hc hostileCase) {
	before := runtime.NumGoroutine()
	start := time.Now()
	a := author(t, siteFiles(24, 120_000))
	sa := newSwarm(t, "tcp")
	mustJoin(t, sa, a, JoinOptions{})
	fp := startFake(t, fakeConfig{key: a.Key(), src: a, raw: hc.raw, badOpen: hc.badOpen, script: hc.script})
	g := newGate(t, addr(sa))
	sb := newSwarm(t, "tcp")
	r := replica(t, a.Key())
	f := mustJoin(t, sb, r, JoinOptions{Download: Latest, Peers: []netip.AddrPort{fp.Addr(), g.Addr()}})

	// The fake peer has first dibs; the seeder waits at the gate.
	fp.waitExercised(t, 10*time.Second)
	if hc.detectable {
		waitUntil(t, 10*time.Second, "the replica bans the fake peer", func() bool { return fakeBanned(sb, fp) })
		select {
		case <-fp.hungUp:
		case <-time.After(5 * time.Second):
			t.Errorf("the replica keeps the connection of a banned peer")
		}
	}
	g.Open()
	waitSynced(t, f, a.Version())
	sameFiles(t, a, r)
	if !hc.detectable && fakeBanned(sb, fp) {
		t.Logf("note: the replica banned the fake peer")
	}
	t.Logf("%v; banned %v; replica %+v; %v", fp, fakeBanned(sb, fp), f.Stats(), time.Since(start).Round(time.Millisecond))
	fp.check(t)
	sb.Close()
	verifyReplica(t, r, false, a.Version())
	sa.Close()
	fp.Close()
	g.Close()
	checkGoroutines(t, before)
}

// runFork: the author's key signed two histories. The replica first gets
// the honest one (n files) from the author; then a peer serves the other
// (the same files changed, and extra more), correctly signed. The replica
// must refuse it, keep its history and, when the fork's signed roots
// contradict its tree, the evidence.
func runFork(t *testing.T, n, extra int, wantEvidence bool) {
	before := runtime.NumGoroutine()
	files := siteFiles(n, 60_000)
	a, kp := authorKP(t, files)
	forkFiles := map[string][]byte{}
	for p, b := range files {
		forkFiles[p] = append(slices.Clone(b), "forked"...)
	}
	for i := 0; i < extra; i++ {
		forkFiles[fmt.Sprintf("/fork%02d.html", i)] = []byte("more of the fork")
	}
	b := createWithKey(t, kp, "fork", forkFiles)
	if b.Version() != a.Version()+uint64(extra) {
		t.Fatalf("fork at %d, honest at %d", b.Version(), a.Version())
	}
	sa := newSwarm(t, "tcp")
	mustJoin(t, sa, a, JoinOptions{})
	hold := make(chan struct{})
	fp := startFake(t, fakeConfig{key: a.Key(), src: b, hold: hold, script: func(s *session) {
		s.sendBad(statusOf(b)) // the fork, signed by the archive's key
		s.serve(nil)           // and everything else of it, as asked
	}})
	sb := newSwarm(t, "tcp")
	r := replica(t, a.Key())
	f := mustJoin(t, sb, r, JoinOptions{Download: Latest, Peers: []netip.AddrPort{addr(sa), fp.Addr()}})
	waitSynced(t, f, a.Version())
	close(hold)
	fp.waitExercised(t, 15*time.Second)
	waitUntil(t, 10*time.Second, "the replica bans the peer with the fork", func() bool { return fakeBanned(sb, fp) })
	t.Logf("%v; replica %+v", fp, f.Stats())

	if r.Version() != a.Version() {
		t.Errorf("the replica is at %d, the honest history at %d", r.Version(), a.Version())
	}
	sameFiles(t, a, r)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := f.WaitSynced(ctx, a.Version())
	cancel()
	if err != nil {
		t.Errorf("after refusing the fork the replica is not synced: %v (stats %+v): the fork's signed length still counts as a version to get", err, f.Stats())
	}
	ev, err := r.Forks()
	if err != nil {
		t.Fatal(err)
	}
	switch found := forkEvidence(t, ev, b); {
	case wantEvidence && !found:
		t.Errorf("no evidence of the fork in the forks file (%q), though the fork's signed root at %d has a root over entries the replica has, which differs", ev, b.Version())
	case !wantEvidence:
		t.Logf("evidence kept: %v", found)
	}
	fp.check(t)
	sb.Close()
	verifyReplica(t, r, false, a.Version())
	sa.Close()
	fp.Close()
	checkGoroutines(t, before)
}

// forkEvidence reports whether the forks file holds a signed root of the
// fork archive b.
func forkEvidence(t testing.TB, ev []byte, b *hyperdrive.Archive) bool {
	for _, line := range strings.Split(strings.TrimSpace(string(ev)), "\n") {
		if line == "" {
			continue
		}
		var rec struct {
			Length uint64
			Theirs struct {
				Length    uint64
				Tree      string
				Signature string
			}
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("forks file: %v: %q", err, line)
			continue
		}
		sr, ok := b.SignedRootAt(rec.Theirs.Length)
		if ok && rec.Theirs.Tree == fmt.Sprintf("%x", sr.TreeHash[:]) && rec.Theirs.Signature == fmt.Sprintf("%x", sr.Signature[:]) {
			return true
		}
	}
	return false
}

// chunkHashes lists the chunks of an archive's latest version (index
// blocks included).
func chunkHashes(t testing.TB, a *hyperdrive.Archive) []hyperdrive.Hash {
	t.Helper()
	var out []hyperdrive.Hash
	var walk func(level uint8, refs []hyperdrive.Ref)
	walk = func(level uint8, refs []hyperdrive.Ref) {
		for _, r := range refs {
			out = append(out, r.Hash)
			if level > 0 {
				b, err := a.Chunk(r.Hash)
				if err != nil {
					t.Fatal(err)
				}
				kids, err := hyperdrive.DecodeIndexBlock(b, level-1)
				if err != nil {
					t.Fatal(err)
				}
				walk(level-1, kids)
			}
		}
	}
	snap := a.Latest()
	for _, p := range snap.Paths() {
		e, err := snap.Entry(p)
		if err != nil {
			t.Fatal(err)
		}
		walk(e.Content.Level, e.Content.Refs)
	}
	return out
}

func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// runEndlessWants: a peer floods the replica with requests for what it has
// and never reads an answer, while the replica downloads a new version from
// the seeder. The replica must slow it down, not buffer for it.
func runEndlessWants(t *testing.T) {
	before := runtime.NumGoroutine()
	a := author(t, makeSite(1, 40, 100_000))
	v1 := a.Version()
	hashes := chunkHashes(t, a)
	sa := newSwarm(t, "tcp")
	mustJoin(t, sa, a, JoinOptions{})
	const floodSize = 20_000
	flood := make(chan struct{})
	fp := startFake(t, fakeConfig{key: a.Key(), src: a, script: func(s *session) {
		s.send(wire.Status{Flags: wire.StatusLive}) // a leecher with nothing
		select {
		case <-flood:
		case <-s.fp.ctx.Done():
			return
		}
		s.nc.SetWriteDeadline(time.Time{})
		for i := 0; i < floodSize; i++ {
			// Chunks the replica has (big answers), entries, and chunks it
			// lacks (NotHave: small answers, many of them).
			r := wire.Request{ID: uint64(i + 1), Kind: wire.KindChunk, Hash: hashes[i%len(hashes)]}
			switch i % 10 {
			case 9:
				r = wire.Request{ID: uint64(i + 1), Kind: wire.KindEntries, Start: 0, End: v1, Upgrade: v1}
			case 1, 4, 7:
				r.Hash = sha256.Sum256(binary.AppendUvarint(nil, uint64(i)))
			}
			s.misdeed()
			if s.c.WriteMessage(r) != nil {
				return
			}
		}
		<-s.fp.ctx.Done() // and never read an answer
	}})
	sb := newSwarm(t, "tcp")
	r := replica(t, a.Key())
	f := mustJoin(t, sb, r, JoinOptions{Download: Latest, Peers: []netip.AddrPort{addr(sa), fp.Addr()}})
	waitSynced(t, f, v1)
	waitUntil(t, 10*time.Second, "the fake peer connects", func() bool { return fp.sessions.Load() > 0 })

	base := liveHeap()
	close(flood)
	waitUntil(t, 10*time.Second, "the flood is served", func() bool { return f.Stats().Uploaded > 0 })
	var peak atomic.Uint64
	stop, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			peak.Store(max(peak.Load(), liveHeap()))
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	v2 := commit(t, a, makeSite(2, 30, 300_000))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	err := f.WaitSynced(ctx, v2)
	cancel()
	took := time.Since(start)
	close(stop)
	<-sampled
	st := f.Stats()
	if err != nil {
		// Measure anyway: the heap and the queue are checked below.
		t.Errorf("the download of v2 stalled while a peer floods: %v (stats %+v, honest seeder has %d requests in flight)", err, st, inflightAt(f, addr(sa)))
	} else {
		sameFiles(t, a, r)
	}
	growth := int64(peak.Load()) - int64(base)
	t.Logf("%v; v2 (%d KiB) in %v while flooded; live heap %d MiB at the start, %+d MiB at the peak; replica uploaded %d KiB to the flooder",
		fp, siteBytes(makeSite(2, 30, 300_000))>>10, took.Round(time.Millisecond), base>>20, growth>>20, st.Uploaded>>10)
	if fp.bad.Load() < 5000 {
		t.Errorf("the flood was only %d requests", fp.bad.Load())
	}
	if growth > 64<<20 {
		t.Errorf("the live heap grew by %d MiB under the flood", growth>>20)
	}
	if st.Uploaded > 32<<20 {
		t.Errorf("the replica queued %d MiB for a peer that reads nothing", st.Uploaded>>20)
	}
	fp.check(t)
	sb.Close()
	if err == nil {
		verifyReplica(t, r, false, v2)
	}
	sa.Close()
	fp.Close()
	checkGoroutines(t, before)
}

// inflightAt is how many chunk requests the feed has in flight at the peer
// dialed at a (-1: not connected).
func inflightAt(f *Feed, a netip.AddrPort) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	for p := range f.peers {
		if p.addr == a {
			return p.inflightCount()
		}
	}
	return -1
}

// keepalives sends a keepalive every few seconds until stop: a peer that
// answers nothing but is not silent enough for the idle timeout.
func keepalives(s *session, stop <-chan struct{}) {
	defer s.fp.wg.Done()
	wc, ok := s.c.(*wire.Conn)
	if !ok {
		return
	}
	for {
		select {
		case <-stop:
			return
		case <-time.After(keepalive / 2):
		}
		s.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if wc.WriteKeepalive() != nil {
			return
		}
	}
}

// runSilentLogPeer: the peer the replica asks for the log (signed roots,
// entries) never answers, and keeps the connection alive. PROTOCOL.md §5:
// an unanswered request is given to another peer after 20 seconds.
func runSilentLogPeer(t *testing.T) {
	a := author(t, siteFiles(24, 120_000))
	sa := newSwarm(t, "tcp")
	mustJoin(t, sa, a, JoinOptions{})
	fp := startFake(t, fakeConfig{key: a.Key(), src: a, script: func(s *session) {
		s.send(statusOf(a))
		stop := make(chan struct{})
		defer close(stop)
		s.fp.wg.Add(1)
		go keepalives(s, stop)
		s.serve(func(r wire.Request) bool {
			if r.Kind == wire.KindChunk {
				return false
			}
			s.misdeed() // and silence
			return true
		})
	}})
	g := newGate(t, addr(sa))
	sb := newSwarm(t, "tcp")
	r := replica(t, a.Key())
	f := mustJoin(t, sb, r, JoinOptions{Download: Latest, Peers: []netip.AddrPort{fp.Addr(), g.Addr()}})
	fp.waitExercised(t, 10*time.Second)
	g.Open()
	start := time.Now()
	// The request expires at the first tick after requestTimeout; the idle
	// timeout (35 s) must not be what rescues the download: the silent peer
	// sends keepalives.
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout+requestTimeout/4+5*time.Second)
	defer cancel()
	if err := f.WaitSynced(ctx, a.Version()); err != nil {
		t.Errorf("the log is still asked of a peer that never answers, %v after the honest seeder connected, although requests expire after %v: %v (stats %+v; %v)",
			time.Since(start).Round(time.Second), requestTimeout, err, f.Stats(), fp)
		return
	}
	t.Logf("synced %v after the honest seeder connected; %v", time.Since(start).Round(time.Millisecond), fp)
	sameFiles(t, a, r)
}

// runLateLogAnswer: a peer answers the signed-roots request correctly, but
// after the request timed out. It is slow, not lying: it must not be
// banned, and the log must not wait for it.
func runLateLogAnswer(t *testing.T) {
	a := author(t, siteFiles(24, 120_000))
	sa := newSwarm(t, "tcp")
	mustJoin(t, sa, a, JoinOptions{})
	late := requestTimeout + requestTimeout/4 + time.Second // surely after the expiry tick
	answered := make(chan struct{})
	var once atomic.Bool
	fp := startFake(t, fakeConfig{key: a.Key(), src: a, script: func(s *session) {
		s.send(statusOf(a))
		s.serve(func(r wire.Request) bool {
			if r.Kind != wire.KindSignatures || !once.CompareAndSwap(false, true) {
				return false
			}
			s.misdeed()
			s.fp.wg.Add(1)
			go func() {
				defer s.fp.wg.Done()
				select {
				case <-time.After(late):
					s.send(answer(a, r))
					close(answered)
				case <-s.fp.ctx.Done():
				}
			}()
			return true
		})
	}})
	g := newGate(t, addr(sa))
	sb := newSwarm(t, "tcp")
	r := replica(t, a.Key())
	f := mustJoin(t, sb, r, JoinOptions{Download: Latest, Peers: []netip.AddrPort{fp.Addr(), g.Addr()}})
	fp.waitExercised(t, 10*time.Second)
	g.Open()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), late+15*time.Second)
	defer cancel()
	if err := f.WaitSynced(ctx, a.Version()); err != nil {
		t.Fatalf("no sync: %v (stats %+v; %v)", err, f.Stats(), fp)
	}
	took := time.Since(start)
	sameFiles(t, a, r)
	select {
	case <-answered:
	case <-time.After(late + 5*time.Second):
		t.Fatal("the late answer was never sent")
	}
	time.Sleep(500 * time.Millisecond) // for the replica to read it
	t.Logf("synced %v after the honest seeder connected, the late answer went %v after the request; %v",
		took.Round(time.Millisecond), late, fp)
	if took > late {
		t.Errorf("the log waited for the late answer (%v) instead of asking another peer after %v", took.Round(time.Second), requestTimeout)
	}
	if fakeBanned(sb, fp) {
		t.Errorf("a peer that answered correctly but after the request timeout is banned (%v)", lastErr(f))
	}
}

// lastErr is the last problem the feed had with a peer.
func lastErr(f *Feed) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastErr
}
