package discovery

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anacrolix/dht/v2"
	"github.com/anacrolix/dht/v2/int160"
	k_nearest_nodes "github.com/anacrolix/dht/v2/k-nearest-nodes"
	"github.com/anacrolix/dht/v2/krpc"
	peer_store "github.com/anacrolix/dht/v2/peer-store"
	"github.com/anacrolix/dht/v2/traversal"
	"github.com/anacrolix/dht/v2/types"
	"github.com/anacrolix/log"
	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/utp"
	"golang.org/x/time/rate"
)

// Defaults of DHTConfig.
const (
	defaultAnnounceInterval = 15 * time.Minute
	defaultBootstrapRetry   = 10 * time.Second
	maxBootstrapRetry       = 5 * time.Minute
	defaultSendRate         = 250 // packets per second
	// resolveTimeout bounds the DNS look-ups of bootstrap host names.
	resolveTimeout = 10 * time.Second
	// resolveCacheTTL: the library asks for the starting nodes whenever a
	// traversal starts on an empty routing table, which is every look-up
	// while the network is unreachable; the cache keeps that from becoming
	// a flood of DNS queries.
	resolveCacheTTL = 5 * time.Minute
	// verifyEvery: a node that sent us a query is pinged, at most this
	// often, so that it becomes "good" (BEP 5) and we hand it out.
	verifyEvery = 15 * time.Minute
	// maxVerifying bounds the pings of queriers in flight.
	maxVerifying = 8
	// maxVerified bounds the memory of when each querier was pinged.
	maxVerified = 4096
	// minGoodNodes: below this many live nodes in its routing table (one
	// bucket's worth, K in BEP 5), a node bootstraps again.
	minGoodNodes = 8
	// maxItems bounds the BEP 44 items stored for others.
	maxItems = 1000
	// readerExitWait bounds how long Close waits for the library's read
	// loop to return (see serverConn.waitReader).
	readerExitWait = time.Second
)

// DHTConfig configures a DHT node.
type DHTConfig struct {
	// Conn is the UDP socket to use, typically a *utp.Socket (so the DHT and
	// uTP share one port); nil means listen on Addr. The DHT takes ownership:
	// Close closes it. A *utp.Socket closes lazily, when its last uTP
	// connection closes.
	Conn net.PacketConn
	// Addr is the UDP address to listen on when Conn is nil, e.g.
	// "0.0.0.0:3282" or "127.0.0.1:0". Empty means ":0".
	Addr string
	// Bootstrap lists host:port of nodes to join through. nil means the public
	// Mainline routers (dht.DefaultGlobalBootstrapHostPorts). An empty, non-nil
	// slice means none (a node others bootstrap from, like `beaker-dev
	// bootstrap --dht`).
	Bootstrap []string
	// AnnounceInterval is the re-announce period: announce_peer tokens
	// rotate (every 5 minutes for anacrolix, 5–10 for others) and stored
	// peers expire (30 minutes here), so an announce must be renewed.
	// 0 means 15 minutes.
	AnnounceInterval time.Duration
	// QueryTimeout is the per-query resend delay, which with one send per
	// query is the time a query waits for its reply. 0 means the library's
	// 2s, right for the Internet; tests on loopback use ~200ms.
	QueryTimeout time.Duration
	// BootstrapRetry is how often the node checks that its routing table
	// holds enough live nodes (8), and the first wait before bootstrapping
	// again when it holds fewer; while it does, the wait doubles up to 5
	// minutes. 0 means 10s.
	BootstrapRetry time.Duration
	// SendRate caps the packets this node sends per second, its queries and
	// its replies together (replies over the cap are dropped). Each node has
	// its own limiter: the library's default, dht.DefaultSendLimiter, is one
	// 25/s limiter shared by every node of the process. 0 means 250/s;
	// rate.Inf means no cap.
	SendRate rate.Limit
	// PeerStore bounds the peers this node stores for others.
	PeerStore PeerStoreConfig
	// Warn receives one-line warnings, e.g. "DHT: cannot reach the
	// bootstrap routers (…); peers will be found by other means": things a
	// user should know that are never errors. nil discards them.
	Warn func(msg string)
	// Logf receives debug logging, the library's included. nil discards it.
	Logf func(format string, args ...any)
}

// DHT is a Mainline DHT (BEP 5) node: it answers other nodes, and
// announces and looks up archives by the first 20 bytes of their discovery
// key. It is safe for concurrent use.
type DHT struct {
	cfg   DHTConfig
	srv   *dht.Server
	conn  *serverConn
	peers *PeerStore
	wants []krpc.Want // BEP 32: the address families we ask nodes for

	// ctx is done when the node shuts down (Close, or StartDHT's ctx).
	ctx         context.Context
	cancel      context.CancelFunc
	stopCtxHook func() bool

	mu      sync.Mutex
	closing bool
	wg      sync.WaitGroup // every goroutine the DHT starts

	closeOnce sync.Once
	closeErr  error

	verify chan net.Addr // queriers to ping; see verifyQueriers

	resolveMu     sync.Mutex
	resolved      []dht.Addr
	resolvedUntil time.Time
}

// DHTID returns the DHT id (BEP 5 infohash) under which an archive is
// announced and looked up: the first 20 bytes of its discovery key. The
// discovery key, not the archive key, so that the DHT learns nothing that
// lets anyone read the archive.
func DHTID(discoveryKey [32]byte) [20]byte {
	return [20]byte(discoveryKey[:20])
}

// errClosed is what a closed DHT returns: it wraps net.ErrClosed.
func errClosed() error {
	return fmt.Errorf("discovery: dht: %w", net.ErrClosed)
}

// StartDHT starts a node and bootstraps it in the background: failing to reach
// the bootstrap nodes is a warning (Warn), not an error, and the node keeps
// retrying while its routing table holds few live nodes (see
// BootstrapRetry).
//
// ctx bounds the node's life: when it is done, the node shuts down as if
// closed. Call Close anyway, to wait for its goroutines.
func StartDHT(ctx context.Context, cfg DHTConfig) (*DHT, error) {
	if cfg.AnnounceInterval <= 0 {
		cfg.AnnounceInterval = defaultAnnounceInterval
	}
	if cfg.BootstrapRetry <= 0 {
		cfg.BootstrapRetry = defaultBootstrapRetry
	}
	if cfg.SendRate == 0 {
		cfg.SendRate = defaultSendRate
	} else if cfg.SendRate < 0 {
		return nil, fmt.Errorf("discovery: dht: negative SendRate %v", cfg.SendRate)
	}
	for _, hp := range cfg.Bootstrap {
		if err := checkHostPort(hp); err != nil {
			return nil, fmt.Errorf("discovery: dht: bootstrap node %q: %w", hp, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("discovery: dht: %w", err)
	}
	pc := cfg.Conn
	if pc == nil {
		addr := cfg.Addr
		if addr == "" {
			addr = ":0"
		}
		var err error
		pc, err = net.ListenPacket("udp", addr)
		if err != nil {
			return nil, fmt.Errorf("discovery: dht: %w", err)
		}
	}
	d := &DHT{
		cfg:    cfg,
		peers:  NewPeerStore(cfg.PeerStore),
		verify: make(chan net.Addr, 64),
	}
	d.conn = newServerConn(pc, d.warn, d.logf)
	d.wants = wantsFor(pc.LocalAddr())
	d.ctx, d.cancel = context.WithCancel(context.Background())

	burst := 1
	if cfg.SendRate != rate.Inf && cfg.SendRate > 1 {
		burst = int(cfg.SendRate)
	}
	sc := &dht.ServerConfig{
		Conn: d.conn,
		// BEP 42 ties a node id to its IP. Enforcing it would drop the many
		// public nodes that ignore it, and every node of a test on
		// public-looking addresses; our own id is random, as most are.
		NoSecurity:    true,
		StartingNodes: d.startingNodes,
		PeerStore:     d.peers,
		Store:         newItemStore(maxItems),
		// With Exp 0 the BEP 44 wrapper takes every item for expired.
		Exp:         2 * time.Hour,
		SendLimiter: rate.NewLimiter(cfg.SendRate, burst),
		Logger:      d.libLogger(),
		DefaultWant: d.wants,
		OnQuery:     d.onQuery,
	}
	if cfg.QueryTimeout > 0 {
		timeout := cfg.QueryTimeout
		sc.QueryResendDelay = func() time.Duration { return timeout }
	}
	if cfg.Logf != nil {
		sc.OnAnnouncePeer = func(ih peer_store.InfoHash, ip net.IP, port int, portOk bool) {
			d.logf("DHT: %s announced %x", net.JoinHostPort(ip.String(), strconv.Itoa(port)), [20]byte(ih))
		}
	}
	srv, err := dht.NewServer(sc)
	if err != nil {
		d.conn.Close()
		return nil, fmt.Errorf("discovery: dht: %w", err)
	}
	d.srv = srv
	d.stopCtxHook = context.AfterFunc(ctx, d.shutdown)
	d.spawn(d.verifyQueriers)
	d.spawn(d.maintain)
	return d, nil
}

// ListenUTP opens a UDP socket for uTP and the DHT to share (pass it as
// DHTConfig.Conn): one port to open in firewalls and NATs, and a peer's
// announced implied port is then its uTP port. It raises the socket's
// receive buffer to 4 MiB first: uTP v0.2.0 has no congestion control, and
// with the default buffer (about 208 KiB) its bursts overflow it and
// connections stall.
func ListenUTP(addr string) (*utp.Socket, error) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("discovery: utp: %w", err)
	}
	if uc, ok := pc.(*net.UDPConn); ok {
		// Capped by net.core.rmem_max; a smaller buffer still works.
		_ = uc.SetReadBuffer(4 << 20)
	}
	s, err := utp.NewSocketFromPacketConn(pc)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("discovery: utp: %w", err)
	}
	return s, nil
}

// Announce announces (id, port) now and every AnnounceInterval until ctx is
// done or the DHT closes. impliedPort: peers should use the UDP source port
// (when the swarm's uTP shares the DHT socket, that is the port); a port of
// 0 implies it too. A round that reaches no node (the node is still
// joining, or offline) is retried sooner, after 1s, 2s, 4s… up to the
// interval.
func (d *DHT) Announce(ctx context.Context, id [20]byte, port int, impliedPort bool) {
	if port < 0 || port > 0xffff {
		d.warn(fmt.Sprintf("DHT: not announcing %x: bad port %d", id, port))
		return
	}
	if port == 0 {
		impliedPort = true
	}
	if impliedPort {
		// The port field is still sent, and some nodes check its range.
		if ap, ok := addrPortOf(d.Addr()); ok {
			port = int(ap.Port())
		}
	}
	d.spawn(func() { d.announceLoop(ctx, id, port, impliedPort) })
}

func (d *DHT) announceLoop(ctx context.Context, id [20]byte, port int, impliedPort bool) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(d.ctx, cancel)()
	retry := time.Second
	for {
		wait := d.cfg.AnnounceInterval
		if d.announceOnce(ctx, id, port, impliedPort) {
			retry = time.Second
		} else {
			wait = min(retry, wait)
			retry = min(2*retry, d.cfg.AnnounceInterval)
		}
		// ±10%, so that nodes started together do not stay in step.
		wait += time.Duration((rand.Float64() - 0.5) * 0.2 * float64(wait))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// announceOnce runs one get_peers traversal toward id and sends
// announce_peer to the closest nodes that gave a token (BEP 5). It reports
// whether any node took the announce.
func (d *DHT) announceOnce(ctx context.Context, id [20]byte, port int, impliedPort bool) bool {
	op, err := d.traverse(ctx, id, func(ctx context.Context, addr krpc.NodeAddr) traversal.QueryResult {
		return d.getPeers(ctx, addr, id).TraversalQueryResult(addr)
	}, func(data any) bool { // the node gave a token
		token, ok := data.(string)
		return ok && token != ""
	})
	if err != nil {
		d.logf("DHT: announce %x: %v", id, err)
		return false
	}
	var wg sync.WaitGroup
	var took atomic.Int32
	op.Closest().Range(func(e k_nearest_nodes.Elem) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := d.srv.Query(ctx, dht.NewAddr(e.Addr.UDP()), "announce_peer", dht.QueryInput{
				MsgArgs: krpc.MsgArgs{
					InfoHash:    id,
					Port:        &port,
					ImpliedPort: impliedPort,
					Token:       e.Data.(string),
				},
			})
			if err := res.ToError(); err != nil {
				d.logf("DHT: announce_peer %x to %v: %v", id, e.Addr, err)
				return
			}
			took.Add(1)
		}()
	})
	wg.Wait()
	d.logf("DHT: announced %x port %d (implied %v): %d nodes replied, %d took the announce",
		id, port, impliedPort, atomic.LoadUint32(&op.Stats().NumResponses), took.Load())
	return took.Load() > 0
}

// Lookup runs one get_peers traversal and returns the peers found, and
// those announced to this node, without duplicates. They may include this
// node's own announce. On an error (ctx ended first, the DHT closed: an
// error wrapping net.ErrClosed, or the node knows no node to ask) it
// returns the peers found so far with it.
func (d *DHT) Lookup(ctx context.Context, id [20]byte) ([]netip.AddrPort, error) {
	if d.ctx.Err() != nil {
		return nil, errClosed()
	}
	var peers []netip.AddrPort
	seen := make(map[netip.AddrPort]bool)
	add := func(p krpc.NodeAddr) {
		// Values come from anyone: drop malformed ones.
		if ap, ok := peerAddrPort(p); ok && !seen[ap] {
			seen[ap] = true
			peers = append(peers, ap)
		}
	}
	// Announces to this node count too: a traversal queries only others,
	// and this node may be among the closest to id.
	for _, p := range d.peers.GetPeers(id) {
		add(p)
	}
	var mu sync.Mutex
	_, err := d.traverse(ctx, id, func(ctx context.Context, addr krpc.NodeAddr) traversal.QueryResult {
		res := d.getPeers(ctx, addr, id)
		if r := res.Reply.R; r != nil && len(r.Values) > 0 {
			mu.Lock()
			for _, p := range r.Values {
				add(p)
			}
			mu.Unlock()
		}
		return res.TraversalQueryResult(addr)
	}, nil)
	// traverse waited for the queries to end: peers is complete.
	switch {
	case err == nil:
		return peers, nil
	case errors.Is(err, net.ErrClosed):
		return peers, err
	default:
		return peers, fmt.Errorf("discovery: dht: lookup %x: %w", id, err)
	}
}

// Addr returns the node's UDP address.
func (d *DHT) Addr() net.Addr { return d.conn.LocalAddr() }

// Nodes returns the routing table size.
func (d *DHT) Nodes() int { return d.srv.NumNodes() }

// Peers returns the store of the peers announced to this node.
func (d *DHT) Peers() *PeerStore { return d.peers }

// Close stops every goroutine (announcers, maintainer, bootstrap retries)
// and waits for them, and closes the socket.
func (d *DHT) Close() error {
	d.closeOnce.Do(func() {
		d.stopCtxHook()
		d.shutdown()
		d.wg.Wait()
		d.conn.waitReader(readerExitWait)
		d.closeErr = d.conn.Close() // done by shutdown: this gets its error
		if errors.Is(d.closeErr, net.ErrClosed) {
			d.closeErr = nil
		}
		if d.closeErr != nil {
			d.closeErr = fmt.Errorf("discovery: dht: %w", d.closeErr)
		}
	})
	return d.closeErr
}

// shutdown stops the node without waiting. The server must be closed before
// its socket: the library's read loop panics on a read error unless the
// server is already closed.
func (d *DHT) shutdown() {
	d.mu.Lock()
	if d.closing {
		d.mu.Unlock()
		return
	}
	d.closing = true
	d.mu.Unlock()
	d.cancel()
	d.srv.Close()
	d.conn.Close()
}

// spawn runs f in a goroutine that Close waits for, unless the DHT is
// closing.
func (d *DHT) spawn(f func()) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closing {
		return false
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		f()
	}()
	return true
}

// maintain joins the DHT and keeps the node joined: while the routing
// table has fewer than minGoodNodes live ("good") nodes, it pings the
// bootstrap nodes and runs a bootstrap traversal, at growing intervals. A
// bootstrap node hands out only the nodes it has verified, so nodes that
// join at the same time first learn little more than the bootstrap node;
// the later attempts fill their tables. It also starts the library's
// TableMaintainer, which refreshes buckets and pings questionable nodes,
// but bootstraps only every 30 minutes, and only from the nodes in the
// table, dead or not.
func (d *DHT) maintain() {
	joining := len(d.bootstrapHostPorts()) > 0
	delay := d.cfg.BootstrapRetry
	warned := false
	maintaining := false
	for {
		if joining && d.srv.Stats().GoodNodes < minGoodNodes {
			reason := d.bootstrap()
			if d.ctx.Err() != nil {
				return
			}
			switch {
			case reason == "":
				if warned {
					d.logf("DHT: joined through the bootstrap %s: %d nodes", d.bootstrapKind(), d.Nodes())
				}
				warned = false
			case !warned:
				hosts := d.bootstrapHostPorts()
				list := strings.Join(hosts, ", ")
				if len(hosts) > 3 {
					list = fmt.Sprintf("%s and %d more", strings.Join(hosts[:2], ", "), len(hosts)-2)
				}
				d.warn(fmt.Sprintf("DHT: cannot reach the bootstrap %s (%s): %s; peers will be found by other means",
					d.bootstrapKind(), list, strings.ReplaceAll(reason, "\n", " ")))
				warned = true
			}
			if d.srv.Stats().GoodNodes < minGoodNodes {
				// Unreachable, or a small network: try again, less often.
				delay = min(2*delay, maxBootstrapRetry)
			} else {
				delay = d.cfg.BootstrapRetry
			}
		}
		// The TableMaintainer bootstraps as it starts, and in v2.23.0 a
		// bootstrap with an empty table and no starting node leaks a
		// goroutine (it returns without stopping its traversal). Nodes
		// never leave the table, only get replaced: once it has one, it
		// is never empty again.
		if !maintaining && d.srv.NumNodes() > 0 {
			maintaining = d.spawn(d.srv.TableMaintainer)
		}
		t := time.NewTimer(delay)
		select {
		case <-d.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// bootstrap pings the bootstrap nodes (a node that replies enters the
// routing table even if the table holds only dead nodes, which the
// library's bootstrap would start from instead) and runs a find_node
// traversal toward our own id. It returns why no node replied, or "".
func (d *DHT) bootstrap() string {
	addrs, err := d.startingNodes()
	if len(addrs) == 0 {
		if err == nil {
			err = errors.New("no address")
		}
		return err.Error()
	}
	var wg sync.WaitGroup
	for _, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.srv.Query(d.ctx, a, "ping", dht.QueryInput{})
		}()
	}
	wg.Wait()
	if d.srv.NumNodes() == 0 {
		return "no reply"
	}
	if err := d.findNodes(d.ctx); err != nil {
		d.logf("DHT: bootstrap: %v", err)
	}
	if d.srv.Stats().GoodNodes == 0 {
		return "no reply"
	}
	return ""
}

// findNodes runs a find_node traversal toward our own id, which fills the
// routing table with the nodes closest to us (the server adds every node
// that replies), as a bootstrap does.
func (d *DHT) findNodes(ctx context.Context) error {
	self := d.srv.ID()
	op, err := d.traverse(ctx, self, func(ctx context.Context, addr krpc.NodeAddr) traversal.QueryResult {
		return d.srv.Query(ctx, dht.NewAddr(addr.UDP()), "find_node", dht.QueryInput{
			MsgArgs: krpc.MsgArgs{Target: self, Want: d.wants},
		}).TraversalQueryResult(addr)
	}, nil)
	if err != nil {
		return err
	}
	d.logf("DHT: find_node traversal: %d nodes queried, %d replied; %d in the table",
		atomic.LoadUint32(&op.Stats().NumAddrsTried), atomic.LoadUint32(&op.Stats().NumResponses), d.Nodes())
	return nil
}

func (d *DHT) getPeers(ctx context.Context, addr krpc.NodeAddr, id [20]byte) dht.QueryResult {
	return d.srv.GetPeers(ctx, dht.NewAddr(addr.UDP()), int160.FromByteArray(id), false, dht.QueryRateLimiting{})
}

// traverse runs an iterative traversal toward target (BEP 5: query the
// closest nodes known, learn closer ones from their replies, until no
// closer node is left) from the routing table, or from the bootstrap nodes
// when it is empty, and returns it stopped, or ctx's error (or the DHT's
// closing) when that ends it first.
//
// It replaces the library's AnnounceTraversal and Bootstrap, which in
// v2.23.0 start the traversal before adding its first nodes and then wait
// for it to stall: the traversal may have stalled already, on no nodes, so
// that a look-up, an announce or a bootstrap sometimes ends at once without
// sending a query. Here a stall before any query is taken as that stale one,
// and the real one is awaited. It also leaves out this node itself, which
// others return among the nodes closest to a target.
func (d *DHT) traverse(ctx context.Context, target [20]byte, query func(context.Context, krpc.NodeAddr) traversal.QueryResult, dataFilter func(any) bool) (*traversal.Operation, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(d.ctx, cancel)()
	self := int160.FromByteArray(d.srv.ID())
	op := traversal.Start(traversal.OperationInput{
		Target:  target,
		DoQuery: query,
		NodeFilter: func(n types.AddrMaybeId) bool {
			return !(n.Id.Ok && n.Id.Value == self) && d.srv.TraversalNodeFilter(n)
		},
		DataFilter: dataFilter,
	})
	defer func() {
		op.Stop()
		<-op.Stopped()
	}()
	nodes, err := d.srv.TraversalStartingNodes()
	if err != nil {
		return op, err
	}
	op.AddNodes(nodes)
	for stalls := 0; ; stalls++ {
		select {
		case <-ctx.Done():
			if d.ctx.Err() != nil {
				return op, errClosed()
			}
			return op, ctx.Err()
		case <-op.Stalled():
		}
		if stalls > 0 || atomic.LoadUint32(&op.Stats().NumAddrsTried) > 0 {
			return op, nil
		}
	}
}

func (d *DHT) bootstrapHostPorts() []string {
	if d.cfg.Bootstrap == nil {
		return dht.DefaultGlobalBootstrapHostPorts
	}
	return d.cfg.Bootstrap
}

func (d *DHT) bootstrapKind() string {
	if d.cfg.Bootstrap == nil {
		return "routers"
	}
	return "nodes"
}

// startingNodes resolves the bootstrap nodes: the library calls it when a
// traversal starts on an empty routing table. It uses its own resolver and
// cache, not dht.GlobalBootstrapAddrs, which starts a process-wide DNS
// refresh goroutine that never stops.
func (d *DHT) startingNodes() ([]dht.Addr, error) {
	d.resolveMu.Lock()
	defer d.resolveMu.Unlock()
	if time.Now().Before(d.resolvedUntil) {
		return d.resolved, nil
	}
	hostPorts := d.bootstrapHostPorts()
	if len(hostPorts) == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(d.ctx, resolveTimeout)
	defer cancel()
	results := make([][]dht.Addr, len(hostPorts))
	errs := make([]error, len(hostPorts))
	var wg sync.WaitGroup
	for i, hp := range hostPorts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = resolveHostPort(ctx, hp)
		}()
	}
	wg.Wait()
	var addrs []dht.Addr
	for _, r := range results {
		addrs = append(addrs, r...)
	}
	if len(addrs) == 0 {
		var msgs []string
		for _, err := range errs {
			if err != nil {
				msgs = append(msgs, err.Error())
			}
		}
		// One reason is enough: they are usually all the same (offline).
		more := ""
		if len(msgs) > 1 {
			more = fmt.Sprintf(" (and %d more)", len(msgs)-1)
		}
		if len(msgs) == 0 {
			msgs = []string{"no addresses"}
		}
		return nil, fmt.Errorf("resolving the bootstrap nodes: %s%s", msgs[0], more)
	}
	d.resolved, d.resolvedUntil = addrs, time.Now().Add(resolveCacheTTL)
	return addrs, nil
}

func resolveHostPort(ctx context.Context, hostPort string) ([]dht.Addr, error) {
	host, portStr, err := net.SplitHostPort(hostPort)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, err
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else if ips, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host); err != nil {
		return nil, err
	}
	addrs := make([]dht.Addr, 0, len(ips))
	for _, ip := range ips {
		addrs = append(addrs, dht.NewAddr(net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip.Unmap(), uint16(port)))))
	}
	return addrs, nil
}

func checkHostPort(hostPort string) error {
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		return err
	}
	if host == "" {
		return errors.New("no host")
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("bad port %q", port)
	}
	return nil
}

// onQuery sees every query before the library handles it, with the
// server's lock held, and fixes two things:
//
//   - anacrolix/dht v2.23.0 answers find_node (and BEP 44 get) with the
//     nodes closest to the query's info_hash, which those queries leave
//     empty, not to its target (server.go, setReturnNodes): nodes that
//     bootstrap through one of ours would learn nobody. It points
//     info_hash at the target.
//   - A node that queries us enters our routing table, but the library
//     hands out only "good" nodes, ones that have replied to us: a node
//     that only answers (a bootstrap node above all) would never introduce
//     the nodes that contact it to each other. So queriers are pinged, by
//     verifyQueriers: here we must not block.
func (d *DHT) onQuery(m *krpc.Msg, source net.Addr) bool {
	if a := m.A; a != nil && (m.Q == "find_node" || m.Q == "get") {
		a.InfoHash = a.Target
	}
	if !m.ReadOnly { // BEP 43: read-only nodes stay out of tables
		select {
		case d.verify <- source:
		default: // busy: a later query will do
		}
	}
	return true
}

// verifyQueriers pings the nodes onQuery passes, each at most every
// verifyEvery and at most maxVerifying at a time.
func (d *DHT) verifyQueriers() {
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, maxVerifying)
	pinged := make(map[string]time.Time)
	for {
		var a net.Addr
		select {
		case <-d.ctx.Done():
			return
		case a = <-d.verify:
		}
		now := time.Now()
		key := a.String()
		if t, ok := pinged[key]; ok && now.Sub(t) < verifyEvery {
			continue
		}
		if len(pinged) >= maxVerified {
			for k, t := range pinged {
				if now.Sub(t) >= verifyEvery {
					delete(pinged, k)
				}
			}
			if len(pinged) >= maxVerified {
				clear(pinged)
			}
		}
		select {
		case sem <- struct{}{}:
		default:
			continue
		}
		pinged[key] = now
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d.srv.Query(d.ctx, dht.NewAddr(a), "ping", dht.QueryInput{})
		}()
	}
}

func (d *DHT) warn(msg string) {
	if d.cfg.Warn != nil {
		d.cfg.Warn(msg)
	}
}

func (d *DHT) logf(format string, args ...any) {
	if d.cfg.Logf != nil {
		d.cfg.Logf(format, args...)
	}
}

// libLogger routes the library's logging to Logf, Info and above (its
// Debug level logs every packet).
func (d *DHT) libLogger() log.Logger {
	l := log.NewLogger("dht")
	l.SetHandlers(logHandler{d.cfg.Logf})
	if d.cfg.Logf == nil {
		return l.WithFilterLevel(log.Critical)
	}
	return l.WithFilterLevel(log.Info)
}

type logHandler struct{ logf func(string, ...any) }

func (h logHandler) Handle(r log.Record) {
	if h.logf != nil {
		h.logf("DHT: anacrolix/dht %s: %s", r.Level.LogString(), r.Msg.Text())
	}
}

// wantsFor returns what a node on local address a asks for in find_node
// and get_peers (BEP 32): an IPv4 socket cannot reach IPv6 nodes, so it
// should not be sent them.
func wantsFor(a net.Addr) []krpc.Want {
	ap, ok := addrPortOf(a)
	switch {
	case !ok:
	case ap.Addr().Unmap().Is4():
		return []krpc.Want{krpc.WantNodes}
	case !ap.Addr().IsUnspecified():
		return []krpc.Want{krpc.WantNodes6}
	}
	return []krpc.Want{krpc.WantNodes, krpc.WantNodes6} // dual-stack [::]
}

func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := ua.AddrPort()
	return ap, ap.IsValid()
}

// serverConn is the socket as the library's server sees it. It shields
// the server's read loop, which brings the whole process down on three
// occasions:
//
//   - It panics if ReadFrom fails before the server is closed. serverConn
//     returns an error from ReadFrom only once closed.
//   - A *utp.Socket's ReadFrom never fails, not even once the socket is
//     closed, so that loop would block forever. Close unblocks it with a
//     read deadline.
//   - In v2.23.0, decoding a KRPC message with a compact address shorter
//     than 2 bytes (in "ip", "values"…) panics (krpc.NodeAddr.
//     UnmarshalBinary makes a slice of negative length, and bencode
//     re-panics runtime errors), in the read loop: one UDP packet from
//     anyone would kill the process. serverConn decodes each packet first,
//     under recover, and drops the ones that panic.
type serverConn struct {
	net.PacketConn
	warn func(string)
	logf func(string, ...any)

	closing   chan struct{}
	closeOnce sync.Once
	closeErr  error

	readerDone chan struct{}
	doneOnce   sync.Once
	warnOnce   sync.Once

	poisoned atomic.Int64 // packets dropped because decoding them panics
}

func newServerConn(pc net.PacketConn, warn func(string), logf func(string, ...any)) *serverConn {
	return &serverConn{
		PacketConn: pc,
		warn:       warn,
		logf:       logf,
		closing:    make(chan struct{}),
		readerDone: make(chan struct{}),
	}
}

func (c *serverConn) closed() bool {
	select {
	case <-c.closing:
		c.doneOnce.Do(func() { close(c.readerDone) })
		return true
	default:
		return false
	}
}

func (c *serverConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		if c.closed() {
			return 0, nil, net.ErrClosed
		}
		n, addr, err := c.PacketConn.ReadFrom(p)
		if c.closed() {
			return 0, nil, net.ErrClosed
		}
		if err == nil {
			if decodePanics(p[:n]) {
				c.poisoned.Add(1)
				c.logf("DHT: dropped a packet from %v that would crash the DHT library", addr)
				continue
			}
			return n, addr, nil
		}
		if errors.Is(err, net.ErrClosed) {
			// Closed under us (by its other user?): wait for Close.
			c.warnOnce.Do(func() { c.warn("DHT: its socket was closed; the node is deaf until closed") })
			<-c.closing
			continue
		}
		// Transient, e.g. a read deadline set by another user of a shared
		// socket: retry, gently.
		t := time.NewTimer(10 * time.Millisecond)
		select {
		case <-c.closing:
			t.Stop()
		case <-t.C:
		}
	}
}

// decodePanics reports whether decoding b as the library does panics.
// Errors are the library's business: it drops such packets itself.
func decodePanics(b []byte) (panics bool) {
	if len(b) < 2 || b[0] != 'd' { // the library ignores non-dicts
		return false
	}
	defer func() {
		if recover() != nil {
			panics = true
		}
	}()
	var m krpc.Msg
	_ = bencode.Unmarshal(b, &m)
	return false
}

func (c *serverConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closing)
		_ = c.PacketConn.SetReadDeadline(time.Now())
		c.closeErr = c.PacketConn.Close()
	})
	return c.closeErr
}

// waitReader waits for the library's read loop to see the close, at most d:
// it sees it unless it was between a read and its closed-server check,
// where it returns without reading again.
func (c *serverConn) waitReader(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.readerDone:
	case <-t.C:
	}
}
