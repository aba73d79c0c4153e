// Package swarm replicates archives with peers. It listens on TCP and uTP
// (one port for both, the uTP socket shared with the DHT), finds peers
// through discovery sources, speaks the wire protocol with each, checks
// everything it receives before storing it, pushes new versions to
// connected peers at once, and spreads downloads over every peer that has
// the data.
//
// A Swarm owns every goroutine it starts; Close stops them and waits.
package swarm

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/anacrolix/utp"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
	"github.com/beaker-dev/beaker-dev/hyperdrive/wire"
)

// DefaultPort is Dat's swarm port.
const DefaultPort = 3282

// Config configures a Swarm.
type Config struct {
	// Listen is the host:port for both TCP and uTP. "" means
	// 0.0.0.0:3282, or a free port when that one is taken.
	Listen string
	// Transport is "tcp", "utp" or "both" (the default): which ones to
	// accept and dial. With both, a dial tries both at once and keeps the
	// first that completes the handshake.
	Transport string
	// MaxPeers bounds the connections per archive; 0 means 8. Candidates
	// beyond it are kept in reserve.
	MaxPeers int
	// Warn receives one-line warnings (a discovery source that cannot work);
	// nil discards them.
	Warn func(msg string)
	// Logf receives debug logging; nil discards it.
	Logf func(format string, args ...any)
}

// Source finds peers of an archive by its discovery key and announces
// ours. The DHT, DNS discovery, mDNS and --peer addresses are sources.
type Source interface {
	Name() string
	// Announce keeps announcing that this swarm (on port) has dk until ctx
	// is done.
	Announce(ctx context.Context, dk [32]byte, port int)
	// Lookup returns the peers known for dk now.
	Lookup(ctx context.Context, dk [32]byte) ([]netip.AddrPort, error)
}

// Swarm is a running replication node.
type Swarm struct {
	cfg  Config
	id   wire.Identity
	port int

	tcp net.Listener
	udp *utp.Socket

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	feeds   map[hyperdrive.DiscoveryKey]*Feed
	sources []Source
	banned  map[netip.Addr]time.Time
	closed  bool

	// chunkBufs recycles the buffers chunks are read into to answer
	// requests: a seeder serves a whole site in 16 KiB pieces, and
	// allocating each one costs more than reading it.
	chunkBufs sync.Pool
}

// ErrClosed is returned after Close.
var ErrClosed = errors.New("swarm: closed")

// New opens the listeners and starts accepting peers.
func New(cfg Config) (*Swarm, error) {
	switch cfg.Transport {
	case "":
		cfg.Transport = "both"
	case "tcp", "utp", "both":
	default:
		return nil, fmt.Errorf("swarm: transport %q: use tcp, utp or both", cfg.Transport)
	}
	if cfg.MaxPeers <= 0 {
		cfg.MaxPeers = 8
	}
	id, err := wire.NewIdentity()
	if err != nil {
		return nil, err
	}
	s := &Swarm{cfg: cfg, id: id, feeds: map[hyperdrive.DiscoveryKey]*Feed{}, banned: map[netip.Addr]time.Time{}}
	s.chunkBufs.New = func() any { b := make([]byte, 0, hyperdrive.MaxChunkSize); return &b }
	addr := cfg.Listen
	fallback := false
	if addr == "" {
		addr, fallback = ":"+strconv.Itoa(DefaultPort), true
	}
	if err := s.listen(addr); err != nil {
		if !fallback || !errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("swarm: listening on %s: %w", addr, err)
		}
		if err := s.listen(":0"); err != nil {
			return nil, fmt.Errorf("swarm: listening: %w", err)
		}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if cfg.Transport != "utp" {
		s.wg.Add(1)
		go s.acceptLoop(s.tcp, "tcp")
	}
	if cfg.Transport != "tcp" {
		s.wg.Add(1)
		go s.acceptLoop(s.udp, "utp")
	}
	return s, nil
}

// listen binds TCP and UDP to the same port.
func (s *Swarm) listen(addr string) error {
	tcp, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	port := tcp.Addr().(*net.TCPAddr).Port
	host, _, _ := net.SplitHostPort(addr)
	pc, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		tcp.Close()
		return err
	}
	// uTP has no congestion control and a fixed window: with the default
	// receive buffer it overflows and collapses (p2p-libraries.md §2).
	if uc, ok := pc.(*net.UDPConn); ok {
		uc.SetReadBuffer(4 << 20)
		uc.SetWriteBuffer(4 << 20)
	}
	u, err := utp.NewSocketFromPacketConn(pc)
	if err != nil {
		tcp.Close()
		pc.Close()
		return err
	}
	s.tcp, s.udp, s.port = tcp, u, port
	return nil
}

// Port returns the swarm's port (TCP and UDP).
func (s *Swarm) Port() int { return s.port }

// Addr returns host:port of the TCP listener.
func (s *Swarm) Addr() string { return s.tcp.Addr().String() }

// PacketConn is the swarm's UDP socket, for a DHT to share: it yields the
// datagrams that are not uTP.
func (s *Swarm) PacketConn() net.PacketConn { return s.udp }

// AddSource adds a discovery source; archives joined with Announce or
// Lookup use it from then on.
func (s *Swarm) AddSource(src Source) {
	s.mu.Lock()
	s.sources = append(s.sources, src)
	feeds := make([]*Feed, 0, len(s.feeds))
	for _, f := range s.feeds {
		feeds = append(feeds, f)
	}
	s.mu.Unlock()
	for _, f := range feeds {
		f.useSource(src)
	}
}

// Close disconnects every peer, stops every goroutine and closes the
// listeners. Archives are left open: they belong to the caller.
func (s *Swarm) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	feeds := make([]*Feed, 0, len(s.feeds))
	for _, f := range s.feeds {
		feeds = append(feeds, f)
	}
	s.mu.Unlock()
	s.cancel()
	s.tcp.Close()
	s.udp.CloseNow() // close a DHT sharing it first: it must not see the socket fail
	for _, f := range feeds {
		f.close()
	}
	s.wg.Wait()
	return nil
}

func (s *Swarm) logf(format string, args ...any) {
	if s.cfg.Logf != nil {
		s.cfg.Logf(format, args...)
	}
}

func (s *Swarm) warn(format string, args ...any) {
	if s.cfg.Warn != nil {
		s.cfg.Warn(fmt.Sprintf(format, args...))
	}
}

// ban keeps a misbehaving peer's address away for a while.
func (s *Swarm) ban(a netip.Addr, why error) {
	s.mu.Lock()
	s.banned[a] = time.Now().Add(banTime)
	s.mu.Unlock()
	s.logf("swarm: banned %s for %v: %v", a, banTime, why)
}

const banTime = 10 * time.Minute

func (s *Swarm) isBanned(a netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	until, ok := s.banned[a]
	if ok && time.Now().After(until) {
		delete(s.banned, a)
		return false
	}
	return ok
}

// Feed returns the feed of the archive with public key k, or nil when it
// has not joined.
func (s *Swarm) Feed(k hyperdrive.PublicKey) *Feed {
	return s.feed([32]byte(k.DiscoveryKey()))
}

func (s *Swarm) feed(dk [32]byte) *Feed {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.feeds[hyperdrive.DiscoveryKey(dk)]
}

// acceptLoop accepts connections and runs the responder side of the
// handshake for each.
func (s *Swarm) acceptLoop(ln net.Listener, transport string) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			s.logf("swarm: accept (%s): %v", transport, err)
			select {
			case <-time.After(100 * time.Millisecond):
				continue
			case <-s.ctx.Done():
				return
			}
		}
		ap := addrPort(c.RemoteAddr())
		if s.isBanned(ap.Addr()) {
			c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(c, transport)
		}()
	}
}

// serveConn completes an incoming connection: handshake, then the dialer's
// Open names the archive and proves it knows the key.
func (s *Swarm) serveConn(raw net.Conn, transport string) {
	c, err := wire.Server(s.ctx, raw, s.id)
	if err != nil {
		raw.Close()
		return
	}
	c.SetReadDeadline(time.Now().Add(wire.HandshakeTimeout))
	m, err := c.ReadMessage()
	if err != nil {
		c.Close()
		return
	}
	open, ok := m.(wire.Open)
	if !ok {
		c.Close()
		return
	}
	f := s.feed(open.DiscoveryKey)
	if f == nil {
		// An archive we do not have: say nothing about which we do.
		c.WriteMessage(wire.Close{Reason: "unknown archive"})
		c.Close()
		return
	}
	key := [32]byte(f.a.Key())
	if !c.CheckCapability(key, open.Capability) {
		s.ban(addrPort(raw.RemoteAddr()).Addr(), errors.New("bad capability"))
		c.Close()
		return
	}
	if err := c.WriteMessage(wire.Open{DiscoveryKey: open.DiscoveryKey, Capability: c.LocalCapability(key)}); err != nil {
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	f.run(c, addrPort(raw.RemoteAddr()), transport, false)
}

// dial connects to addr for feed f over the configured transports: with
// both, TCP and uTP race and the first to finish the handshake and the
// Open exchange wins; the other is closed.
func (s *Swarm) dial(ctx context.Context, f *Feed, addr netip.AddrPort) (*wire.Conn, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*wire.HandshakeTimeout)
	defer cancel()
	type result struct {
		c         *wire.Conn
		transport string
		err       error
	}
	var transports []string
	if s.cfg.Transport != "utp" {
		transports = append(transports, "tcp")
	}
	if s.cfg.Transport != "tcp" {
		transports = append(transports, "utp")
	}
	results := make(chan result, len(transports))
	for _, t := range transports {
		go func() {
			c, err := s.dialOne(ctx, f, addr, t)
			results <- result{c, t, err}
		}()
	}
	var firstErr error
	var won *wire.Conn
	wonTransport := ""
	for range transports {
		r := <-results
		switch {
		case r.err != nil:
			if firstErr == nil {
				firstErr = r.err
			}
		case won == nil:
			won, wonTransport = r.c, r.transport
			cancel() // abort the slower dial
		default:
			r.c.Close()
		}
	}
	if won != nil {
		return won, wonTransport, nil
	}
	return nil, "", firstErr
}

func (s *Swarm) dialOne(ctx context.Context, f *Feed, addr netip.AddrPort, transport string) (*wire.Conn, error) {
	var raw net.Conn
	var err error
	if transport == "tcp" {
		var d net.Dialer
		raw, err = d.DialContext(ctx, "tcp", addr.String())
	} else {
		raw, err = s.udp.DialContext(ctx, "udp", addr.String())
	}
	if err != nil {
		return nil, err
	}
	c, err := wire.Client(ctx, raw, s.id)
	if err != nil {
		raw.Close()
		return nil, err
	}
	key := [32]byte(f.a.Key())
	if err := c.WriteMessage(wire.Open{DiscoveryKey: f.dk, Capability: c.LocalCapability(key)}); err != nil {
		c.Close()
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	c.SetReadDeadline(time.Now().Add(wire.HandshakeTimeout))
	m, err := c.ReadMessage()
	stop()
	if err != nil {
		c.Close()
		return nil, err
	}
	switch m := m.(type) {
	case wire.Open:
		if m.DiscoveryKey != f.dk || !c.CheckCapability(key, m.Capability) {
			c.Close()
			return nil, errors.New("swarm: the peer does not hold the archive key")
		}
	case wire.Close:
		c.Close()
		return nil, fmt.Errorf("swarm: peer closed: %s", m.Reason)
	default:
		c.Close()
		return nil, errors.New("swarm: the peer did not open the archive")
	}
	c.SetReadDeadline(time.Time{})
	return c, nil
}

func addrPort(a net.Addr) netip.AddrPort {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// jitter spreads timers so peers do not act in lockstep.
func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d)))
}
