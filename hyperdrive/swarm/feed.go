package swarm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
	"github.com/beaker-dev/beaker-dev/hyperdrive/wire"
)

// Mode says which chunks a feed downloads by itself.
type Mode int

const (
	// OnDemand fetches only chunks a reader asks for (Fetch).
	OnDemand Mode = iota
	// Latest fetches every chunk of the latest version (clone, and what a
	// viewer syncs in the background for offline use).
	Latest
	// All fetches every chunk of every version (seed).
	All
)

// JoinOptions say what to do with an archive.
type JoinOptions struct {
	Announce bool             // tell the discovery sources we have it
	Lookup   bool             // ask the discovery sources for peers
	Download Mode             // what to fetch unasked
	Peers    []netip.AddrPort // peers to dial whatever the sources say
	// OnPaint receives the paint reports of viewers' pages (the author
	// shows them). It runs in a peer's reader goroutine: keep it short.
	OnPaint func(from netip.AddrPort, p wire.Paint)
	// PeerWait is how long a reader waiting for a chunk waits for a first
	// peer to connect before it gets ErrNoPeers (default 5 s).
	PeerWait time.Duration
}

// Per-peer limits.
const (
	maxInflight     = 48               // our requests outstanding at one peer
	maxQueuedBytes  = 4 << 20          // responses queued for a peer before we stop reading its requests
	keepalive       = 10 * time.Second // idle time before a keepalive
	idleTimeout     = 35 * time.Second // silence that ends a connection
	requestTimeout  = 20 * time.Second // a request unanswered this long is given to another peer
	maxPendingBytes = 256 << 20        // verified entries held in memory before a signed root covers them
	entriesBudget   = 192 << 10        // entry bytes per Entries message
)

// Feed is one archive in the swarm: its peers, what it is fetching, what it
// serves.
type Feed struct {
	s    *Swarm
	a    *hyperdrive.Archive
	dk   [32]byte
	opts JoinOptions
	w    *hyperdrive.Writer // receives verified data; nil for an author's archive

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the feed's own goroutines (not its peers')
	kick   chan struct{}  // wakes the connector
	gained chan struct{}  // the download caught up: tell peers (watchArchive)

	mu         sync.Mutex
	closed     bool
	peers      map[*peer]struct{}
	candidates map[netip.AddrPort]*candidate
	signed     map[uint64]hyperdrive.SignedRoot // verified roots beyond the stored log
	pending    [][]byte                         // verified entries not stored yet
	pendBytes  int
	pendRoots  []hyperdrive.Node // roots of the log with the pending entries
	logReq     *peer             // the peer we are fetching entries or roots from
	sigsAsked  map[*peer]uint64  // the length after which we asked a peer for roots
	want       map[hyperdrive.Hash]*want
	queue      []hyperdrive.Hash         // wanted chunks not asked of anyone, first come first asked
	urgent     []hyperdrive.Hash         // the same for chunks a reader waits for
	stuck      []hyperdrive.Hash         // wanted chunks no connected peer has
	asked      map[hyperdrive.Hash]*want // wanted chunks asked of some peer
	waiters    map[hyperdrive.Hash][]chan fetchResult
	changed    chan struct{} // closed and replaced on every change, for waiters
	peersMoved chan struct{} // closed and replaced when a peer comes or goes
	lastErr    error
	got        Stats
}

// want is a chunk to get.
type want struct {
	level    uint8 // 0 a data chunk; above, an index block of that level
	size     uint64
	asked    []*peer // peers asked and not answered yet
	notHave  map[*peer]bool
	priority bool // a reader waits for it
}

type fetchResult struct {
	data []byte
	err  error
}

// Stats describe a feed's state.
type Stats struct {
	Peers         int
	Version       uint64 // stored version
	RemoteVersion uint64 // the highest signed version a peer advertised
	Wanted        int    // chunks still to get
	Chunks        int    // chunks received
	Bytes         int64  // chunk bytes received
	Uploaded      int64  // chunk bytes sent
	Advertised    int    // connected peers whose Status (their version) arrived
}

// Join adds an archive to the swarm. A replica (an archive without its
// secret key) is filled with what peers send; an author's archive is served
// and its new versions are pushed to peers.
func (s *Swarm) Join(a *hyperdrive.Archive, opts JoinOptions) (*Feed, error) {
	dk := [32]byte(a.Key().DiscoveryKey())
	f := &Feed{
		s: s, a: a, dk: dk, opts: opts, kick: make(chan struct{}, 1), gained: make(chan struct{}, 1),
		peers: map[*peer]struct{}{}, candidates: map[netip.AddrPort]*candidate{},
		signed: map[uint64]hyperdrive.SignedRoot{}, sigsAsked: map[*peer]uint64{},
		want: map[hyperdrive.Hash]*want{}, asked: map[hyperdrive.Hash]*want{}, waiters: map[hyperdrive.Hash][]chan fetchResult{},
		changed: make(chan struct{}), peersMoved: make(chan struct{}),
	}
	if !a.Writable() {
		// Not ours: a replica, filled with what peers send.
		w, err := a.BeginSync(context.Background())
		if err != nil {
			if errors.Is(err, hyperdrive.ErrReadOnly) {
				return nil, fmt.Errorf("swarm: %s is open read-only: open it as a replica to sync it", a.Key().URL())
			}
			return nil, err
		}
		f.w = w
		a.SetFetcher(f.fetchHook)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		if f.w != nil {
			f.w.Close()
		}
		return nil, ErrClosed
	}
	if _, ok := s.feeds[dk]; ok {
		s.mu.Unlock()
		if f.w != nil {
			f.w.Close()
		}
		return nil, fmt.Errorf("swarm: %s is joined already", a.Key().URL())
	}
	s.feeds[dk] = f
	sources := slices.Clone(s.sources)
	s.mu.Unlock()
	f.ctx, f.cancel = context.WithCancel(s.ctx)
	roots, err := a.RootsAt(a.Version())
	if err != nil {
		f.close()
		return nil, err
	}
	f.pendRoots = roots
	for _, p := range opts.Peers {
		f.addCandidate(p, "peer", true)
	}
	f.mu.Lock()
	f.wantVersionLocked()
	f.mu.Unlock()
	f.wg.Add(2)
	go f.connector()
	go f.watchArchive()
	for _, src := range sources {
		f.useSource(src)
	}
	return f, nil
}

// Archive returns the feed's archive.
func (f *Feed) Archive() *hyperdrive.Archive { return f.a }

// Leave removes the archive from the swarm and disconnects its peers.
func (f *Feed) Leave() {
	f.s.mu.Lock()
	if f.s.feeds[f.dk] == f {
		delete(f.s.feeds, f.dk)
	}
	f.s.mu.Unlock()
	f.close()
}

func (f *Feed) close() {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.closed = true
	peers := make([]*peer, 0, len(f.peers))
	for p := range f.peers {
		peers = append(peers, p)
	}
	for h, ws := range f.waiters {
		for _, ch := range ws {
			ch <- fetchResult{err: ErrClosed}
		}
		delete(f.waiters, h)
	}
	f.mu.Unlock()
	if f.cancel != nil {
		f.cancel()
	}
	for _, p := range peers {
		p.close(nil)
	}
	f.wg.Wait()
	for _, p := range peers {
		p.wait()
	}
	if f.w != nil {
		f.a.SetFetcher(nil)
		f.w.Close()
	}
}

// Stats returns the feed's state.
func (f *Feed) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.got
	st.Peers = len(f.peers)
	for p := range f.peers {
		if p.hasAdvertised() {
			st.Advertised++
		}
	}
	st.Version = f.a.Version()
	st.RemoteVersion = f.remoteVersionLocked()
	st.Wanted = len(f.want)
	return st
}

// Peers returns the addresses of connected peers.
func (f *Feed) Peers() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.peers))
	for p := range f.peers {
		out = append(out, p.addr.String()+" ("+p.transport+")")
	}
	sort.Strings(out)
	return out
}

func (f *Feed) remoteVersionLocked() uint64 {
	v := uint64(0)
	for l := range f.signed {
		v = max(v, l)
	}
	return max(v, f.a.Version())
}

// notifyLocked wakes everyone waiting for a change.
func (f *Feed) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *Feed) peersMovedLocked() {
	close(f.peersMoved)
	f.peersMoved = make(chan struct{})
}

// Changed returns a channel closed at the next change of the feed: a
// version stored, a chunk received, a peer come or gone.
func (f *Feed) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// WaitSynced waits until the feed has stored a version at least min (or,
// with min 0, the highest version any peer advertised, once one has) and
// every chunk its mode wants. It returns the error that stopped the last
// exchange if ctx ends first.
func (f *Feed) WaitSynced(ctx context.Context, min uint64) error {
	for {
		f.mu.Lock()
		target := max(min, f.remoteVersionLocked())
		done := f.a.Version() >= target && target > 0 && len(f.want) == 0 && len(f.pending) == 0
		ch, last := f.changed, f.lastErr
		f.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%w (last problem: %v)", ctx.Err(), last)
			}
			return ctx.Err()
		}
	}
}

// fetchHook is the archive's Fetcher: a reader needs a chunk we lack.
func (f *Feed) fetchHook(h hyperdrive.Hash) ([]byte, error) {
	ctx, cancel := context.WithTimeout(f.ctx, 30*time.Second)
	defer cancel()
	return f.Fetch(ctx, h)
}

// ErrNoPeers is returned (wrapped) to a reader waiting for a chunk when no
// peer is connected to get it from.
var ErrNoPeers = errors.New("swarm: no peer connected")

// Fetch gets one chunk from peers, stores it and returns it.
func (f *Feed) Fetch(ctx context.Context, h hyperdrive.Hash) ([]byte, error) {
	if data, err := f.a.Chunk(h); err == nil {
		return data, nil
	}
	chs, err := f.wantNow([]hyperdrive.Ref{{Hash: h}}, 0)
	if err != nil {
		return nil, err
	}
	return f.await(ctx, h, chs[0])
}

// Prefetch gets every chunk of c that is not stored yet, readers' priority,
// and returns when all are stored: a viewer calls it so that a page reloads
// only once the files it shows are local.
func (f *Feed) Prefetch(ctx context.Context, c hyperdrive.Content) error {
	level, refs := c.Level, c.Refs
	for {
		var missing []hyperdrive.Ref
		for _, r := range refs {
			if !f.a.HasChunk(r.Hash) {
				missing = append(missing, r)
			}
		}
		if len(missing) > 0 {
			chs, err := f.wantNow(missing, level)
			if err != nil {
				return err
			}
			for i, ch := range chs {
				if _, err := f.await(ctx, missing[i].Hash, ch); err != nil {
					return err
				}
			}
		}
		if level == 0 {
			return nil
		}
		var kids []hyperdrive.Ref
		for _, r := range refs {
			b, err := f.a.Chunk(r.Hash)
			if err != nil {
				return err
			}
			k, err := hyperdrive.DecodeIndexBlock(b, level-1)
			if err != nil {
				return err
			}
			kids = append(kids, k...)
		}
		refs, level = kids, level-1
	}
}

// wantNow wants refs ahead of the background download and returns one
// channel per ref that gets its result.
func (f *Feed) wantNow(refs []hyperdrive.Ref, level uint8) ([]chan fetchResult, error) {
	if f.w == nil {
		return nil, hyperdrive.ErrChunkMissing // an author's archive has all it will have
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, ErrClosed
	}
	chs := make([]chan fetchResult, len(refs))
	for i, r := range refs {
		ch := make(chan fetchResult, 1)
		chs[i] = ch
		f.waiters[r.Hash] = append(f.waiters[r.Hash], ch)
		w := f.addWantLocked(r.Hash, level, r.Size)
		if !w.priority {
			w.priority = true
			f.urgent = append(f.urgent, r.Hash)
		}
	}
	f.scheduleLocked()
	return chs, nil
}

// await waits for a wanted chunk's result. With no peer connected for
// PeerWait it gives up with ErrNoPeers rather than leave a page hanging.
func (f *Feed) await(ctx context.Context, h hyperdrive.Hash, ch chan fetchResult) ([]byte, error) {
	wait := f.opts.PeerWait
	if wait <= 0 {
		wait = 5 * time.Second
	}
	var alone *time.Timer
	defer func() {
		if alone != nil {
			alone.Stop()
		}
	}()
	for {
		f.mu.Lock()
		peers, moved := len(f.peers), f.peersMoved
		f.mu.Unlock()
		var giveUp <-chan time.Time
		switch {
		case peers > 0 && alone != nil:
			alone.Stop()
			alone = nil
		case peers == 0 && alone == nil:
			alone = time.NewTimer(wait)
		}
		if alone != nil {
			giveUp = alone.C
		}
		select {
		case r := <-ch:
			return r.data, r.err
		case <-moved:
			// a peer came or went: look again
		case <-giveUp:
			f.dropWaiter(h, ch)
			return nil, fmt.Errorf("%w to get chunk %x from", ErrNoPeers, h[:8])
		case <-ctx.Done():
			f.dropWaiter(h, ch)
			return nil, fmt.Errorf("swarm: no peer sent chunk %x in time: %w", h[:8], ctx.Err())
		}
	}
}

func (f *Feed) dropWaiter(h hyperdrive.Hash, ch chan fetchResult) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.waiters[h] = slices.DeleteFunc(f.waiters[h], func(c chan fetchResult) bool { return c == ch })
	if len(f.waiters[h]) == 0 {
		delete(f.waiters, h)
	}
}

// ReportPaint tells every connected peer that one of our pages painted a
// version (see wire.Paint).
func (f *Feed) ReportPaint(p wire.Paint) {
	f.mu.Lock()
	peers := make([]*peer, 0, len(f.peers))
	for q := range f.peers {
		peers = append(peers, q)
	}
	f.mu.Unlock()
	for _, q := range peers {
		q.trySend(p)
	}
}

func (f *Feed) addWantLocked(h hyperdrive.Hash, level uint8, size uint64) *want {
	if w, ok := f.want[h]; ok {
		return w
	}
	w := &want{level: level, size: size, notHave: map[*peer]bool{}}
	f.want[h] = w
	f.queue = append(f.queue, h)
	return w
}

// requeueLocked puts a wanted chunk no peer is working on back in line.
func (f *Feed) requeueLocked(h hyperdrive.Hash, w *want) {
	if len(w.asked) > 0 {
		return
	}
	delete(f.asked, h)
	if w.priority {
		f.urgent = append(f.urgent, h)
	} else {
		f.queue = append(f.queue, h)
	}
}

// wantVersionLocked adds the chunks the feed's mode wants of what is stored.
func (f *Feed) wantVersionLocked() {
	if f.w == nil || f.opts.Download == OnDemand {
		return
	}
	var contents []hyperdrive.Content
	if f.opts.Download == Latest {
		snap := f.a.Latest()
		for _, p := range snap.Paths() {
			if e, err := snap.Entry(p); err == nil {
				contents = append(contents, e.Content)
			}
		}
	} else {
		for seq := uint64(0); seq < f.a.Version(); seq++ {
			if e, err := f.a.Entry(seq); err == nil && e.Type == hyperdrive.EntryPut {
				contents = append(contents, e.Content)
			}
		}
	}
	for _, c := range contents {
		f.wantRefsLocked(c.Level, c.Refs)
	}
}

// wantRefsLocked wants every ref not stored; index blocks that are stored
// are read to want their children.
func (f *Feed) wantRefsLocked(level uint8, refs []hyperdrive.Ref) {
	for _, r := range refs {
		if !f.a.HasChunk(r.Hash) {
			f.addWantLocked(r.Hash, level, r.Size)
			continue
		}
		if level > 0 {
			if b, err := f.a.Chunk(r.Hash); err == nil {
				if kids, err := hyperdrive.DecodeIndexBlock(b, level-1); err == nil {
					f.wantRefsLocked(level-1, kids)
				}
			}
		}
	}
}

// status is our Status message.
func (f *Feed) status() (wire.Status, error) {
	v := f.a.Version()
	st := wire.Status{Length: v}
	if v == 0 {
		return st, nil
	}
	sr, ok := f.a.SignedRootAt(v)
	if !ok {
		return st, fmt.Errorf("swarm: no signed root for version %d", v)
	}
	roots, err := f.a.RootsAt(v)
	if err != nil {
		return st, err
	}
	st.Time, st.Signature = sr.Time, sr.Signature
	for _, r := range roots {
		st.Roots = append(st.Roots, wire.Node{Hash: r.Hash, Size: r.Size})
	}
	f.mu.Lock()
	complete := f.w == nil || f.opts.Download == All && len(f.want) == 0
	f.mu.Unlock()
	if complete {
		st.Flags |= wire.StatusComplete
	}
	st.Flags |= wire.StatusLive
	return st, nil
}

// broadcastStatus pushes our latest version to every peer.
func (f *Feed) broadcastStatus() {
	st, err := f.status()
	if err != nil {
		f.s.logf("swarm: %v", err)
		return
	}
	f.mu.Lock()
	peers := make([]*peer, 0, len(f.peers))
	for p := range f.peers {
		peers = append(peers, p)
	}
	f.mu.Unlock()
	for _, p := range peers {
		p.trySend(st)
	}
}

// watchArchive pushes new versions to peers as they are committed: by this
// process (Subscribe) or, for an author, by another (beaker-dev tag while
// serve runs), noticed by watching the signatures file.
func (f *Feed) watchArchive() {
	defer f.wg.Done()
	ch, stop := f.a.Subscribe()
	defer stop()
	external := f.watchSignatures(f.ctx, f.a)
	last := f.a.Version()
	for {
		select {
		case <-f.ctx.Done():
			return
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-external:
			f.a.Refresh()
		case <-f.gained:
			// Every wanted chunk is here now: peers that asked for one
			// before it came (a viewer behind us) ask again.
			f.broadcastStatus()
			continue
		}
		v := f.a.Version()
		if v == last {
			continue
		}
		last = v
		if f.w == nil {
			// A version leaves the machine only once it is on disk, so a
			// power cut cannot make us sign another history at this length.
			if err := f.a.Sync(); err != nil {
				f.s.warn("syncing %s to disk: %v", f.a.Key().URL(), err)
			}
		}
		f.broadcastStatus()
		f.mu.Lock()
		f.wantVersionLocked()
		f.scheduleLocked()
		f.notifyLocked()
		f.mu.Unlock()
	}
}

// run serves one connected peer until it goes: it is called by the accept
// or dial goroutine, which it blocks.
func (f *Feed) run(c *wire.Conn, addr netip.AddrPort, transport string, dialed bool) {
	if string(c.RemoteIdentity()) == string(f.s.id.Public()) {
		c.Close() // ourselves, found through our own announcement
		return
	}
	p := newPeer(f, c, addr, transport, dialed)
	if !f.addPeer(p) {
		c.Close()
		return
	}
	st, err := f.status()
	if err == nil {
		p.trySend(st)
	}
	p.loop()
	f.removePeer(p)
}

// addPeer registers a peer, refusing a second connection with the same
// process: of two, the one dialed by the process with the smaller identity
// stays, so both ends keep the same one.
func (f *Feed) addPeer(p *peer) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	dialer := func(x *peer) []byte {
		if x.dialed {
			return f.s.id.Public()
		}
		return x.c.RemoteIdentity()
	}
	for q := range f.peers {
		if !bytes.Equal(q.c.RemoteIdentity(), p.c.RemoteIdentity()) {
			continue
		}
		if c := bytes.Compare(dialer(q), dialer(p)); c <= 0 {
			return false // keep the connection we have
		}
		q.close(errors.New("duplicate connection"))
	}
	f.peers[p] = struct{}{}
	if c := f.candidates[p.addr]; c != nil {
		c.connected = true
	}
	// A new peer may have what nobody had.
	f.queue = append(f.queue, f.stuck...)
	f.stuck = nil
	f.notifyLocked()
	f.peersMovedLocked()
	return true
}

func (f *Feed) removePeer(p *peer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.peers[p]; !ok {
		return
	}
	delete(f.peers, p)
	delete(f.sigsAsked, p)
	if c := f.candidates[p.addr]; c != nil {
		c.connected = false
		c.lastTry = time.Now()
	}
	// Requests in flight at the peer go to others.
	for _, h := range p.askedHashes() {
		if w := f.want[h]; w != nil {
			w.asked = slices.DeleteFunc(w.asked, func(q *peer) bool { return q == p })
			f.requeueLocked(h, w)
		}
	}
	if f.logReq == p {
		f.logReq = nil
	}
	f.scheduleLocked()
	f.notifyLocked()
	f.peersMovedLocked()
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// onStatus handles a peer's advertised version.
func (f *Feed) onStatus(p *peer, m wire.Status) error {
	if m.Length == 0 {
		p.setStatus(0, m.Flags)
		f.mu.Lock()
		f.notifyLocked()
		f.mu.Unlock()
		return nil
	}
	defer f.askAgain(p)
	roots := make([]hyperdrive.Node, len(m.Roots))
	for i, r := range m.Roots {
		roots[i] = hyperdrive.Node{Hash: r.Hash, Size: r.Size}
	}
	idx := fullRootIndexes(m.Length)
	if len(idx) != len(roots) {
		return fmt.Errorf("%w: %d roots for length %d", hyperdrive.ErrBadProof, len(roots), m.Length)
	}
	for i := range roots {
		roots[i].Index = idx[i]
	}
	sr := hyperdrive.SignedRoot{Length: m.Length, Time: m.Time, TreeHash: hyperdrive.TreeHash(roots), Signature: m.Signature}
	if err := f.a.CheckSignedRoot(sr); err != nil {
		return err
	}
	if err := f.a.CheckRoots(sr, roots); err != nil {
		return err
	}
	p.setStatus(m.Length, m.Flags)
	f.mu.Lock()
	defer f.mu.Unlock()
	if m.Length > f.a.Version() {
		f.signed[m.Length] = sr
		p.roots[m.Length] = roots
	}
	f.scheduleLocked()
	f.notifyLocked()
	return nil
}

// onSignatures records the signed roots a peer sent.
func (f *Feed) onSignatures(p *peer, m wire.Signatures) error {
	for _, r := range m.Roots {
		sr := hyperdrive.SignedRoot{Length: r.Length, Time: r.Time, TreeHash: r.TreeHash, Signature: r.Signature}
		if err := f.a.CheckSignedRoot(sr); err != nil {
			return err
		}
		f.mu.Lock()
		if sr.Length > f.a.Version() {
			f.signed[sr.Length] = sr
		}
		f.mu.Unlock()
	}
	f.mu.Lock()
	if f.logReq == p {
		f.logReq = nil
	}
	f.scheduleLocked()
	f.mu.Unlock()
	return nil
}

// onEntries verifies entries a peer sent against the signed root they are
// proven to, keeps them, and stores what signed roots cover.
func (f *Feed) onEntries(p *peer, m wire.Entries) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.logReq == p {
		f.logReq = nil
	}
	local := f.a.Version() + uint64(len(f.pending))
	if m.Start != local || f.w == nil {
		f.scheduleLocked()
		return nil // stale: we moved on since asking
	}
	sr, ok := f.signed[m.Upgrade]
	if !ok {
		return fmt.Errorf("%w: entries proven to an unknown length %d", hyperdrive.ErrBadProof, m.Upgrade)
	}
	roots := slices.Clone(f.pendRoots)
	for i, e := range m.Entries {
		roots = hyperdrive.PushLeaf(roots, m.Start+uint64(i), e)
	}
	_ = roots
	nodes := make([]hyperdrive.Node, len(m.Nodes))
	for i, n := range m.Nodes {
		nodes[i] = hyperdrive.Node{Hash: n.Hash, Size: n.Size}
	}
	end := m.Start + uint64(len(m.Entries))
	up, err := hyperdrive.ApplyUpgrade(roots, end, m.Upgrade, nodes)
	if err != nil {
		return err
	}
	if hyperdrive.TreeHash(up) != sr.TreeHash {
		return fmt.Errorf("%w: entries %d..%d do not lead to the root signed for %d", hyperdrive.ErrBadProof, m.Start, end, m.Upgrade)
	}
	for _, e := range m.Entries {
		f.pendBytes += len(e)
	}
	if f.pendBytes > maxPendingBytes {
		return fmt.Errorf("swarm: more than %d MiB of entries between two signed versions", maxPendingBytes>>20)
	}
	f.pending = append(f.pending, m.Entries...)
	f.pendRoots = roots
	// Store what signed roots cover.
	var reach []hyperdrive.SignedRoot
	for l, s := range f.signed {
		if l <= end {
			reach = append(reach, s)
		}
	}
	if len(reach) > 0 {
		n, err := f.w.AppendVerified(f.pending, reach)
		for _, e := range f.pending[:n] {
			f.pendBytes -= len(e)
		}
		f.pending = f.pending[n:]
		for l := range f.signed {
			if l <= f.a.Version() {
				delete(f.signed, l)
			}
		}
		if err != nil {
			return err
		}
		if n > 0 {
			f.wantVersionLocked()
			f.notifyLocked()
			go f.broadcastStatus() // re-share
		}
	}
	f.got.Version = f.a.Version()
	f.scheduleLocked()
	return nil
}

// onChunk stores a chunk a peer sent, if it is the one asked for.
func (f *Feed) onChunk(p *peer, h hyperdrive.Hash, data []byte) error {
	if f.w == nil {
		return nil
	}
	if _, err := f.w.PutChunk(h, data); err != nil {
		return err // a chunk that is not what was asked: the peer lies
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got.Chunks++
	f.got.Bytes += int64(len(data))
	w := f.want[h]
	if w != nil {
		delete(f.want, h)
		delete(f.asked, h)
		if len(f.want) == 0 {
			select {
			case f.gained <- struct{}{}:
			default:
			}
		}
		for _, q := range w.asked {
			if q != p {
				q.cancel(h) // the end-game duplicate lost the race
			}
		}
		if w.level > 0 {
			if kids, err := hyperdrive.DecodeIndexBlock(data, w.level-1); err == nil {
				f.wantRefsLocked(w.level-1, kids)
			}
		}
	}
	for _, ch := range f.waiters[h] {
		ch <- fetchResult{data: data}
	}
	delete(f.waiters, h)
	f.scheduleLocked()
	f.notifyLocked()
	return nil
}

// onNotHave notes that p lacks a chunk.
func (f *Feed) onNotHave(p *peer, h hyperdrive.Hash) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if w := f.want[h]; w != nil {
		w.notHave[p] = true
		w.asked = slices.DeleteFunc(w.asked, func(q *peer) bool { return q == p })
		f.requeueLocked(h, w)
		if f.noneHaveLocked(w) {
			for _, ch := range f.waiters[h] {
				ch <- fetchResult{err: fmt.Errorf("swarm: no connected peer has chunk %x", h[:8])}
			}
			delete(f.waiters, h)
		}
	}
	f.scheduleLocked()
}

// askAgain forgets which wanted chunks p said it lacked: p sent a Status,
// so it may have them now (a peer re-sharing what it is still fetching).
// The peer loop also calls it now and then, for peers that never say.
func (f *Feed) askAgain(p *peer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	again := false
	for _, w := range f.want {
		if w.notHave[p] {
			delete(w.notHave, p)
			again = true
		}
	}
	if !again {
		return
	}
	f.queue = append(f.queue, f.stuck...)
	f.stuck = nil
	f.scheduleLocked()
}

func (f *Feed) noneHaveLocked(w *want) bool {
	for p := range f.peers {
		if !w.notHave[p] {
			return false
		}
	}
	return true
}

// onTimeout gives a request that went unanswered to another peer.
func (f *Feed) onTimeout(p *peer, h hyperdrive.Hash) {
	f.onNotHave(p, h)
}

// scheduleLocked sends what requests can be sent: the log first (signed
// roots, then entries, from one peer at a time), then chunks, spread over
// peers with room, readers' chunks first; with nothing left to hand out,
// idle peers duplicate requests still in flight (the end game).
func (f *Feed) scheduleLocked() {
	if f.closed || f.w == nil {
		return
	}
	f.scheduleLogLocked()
	if len(f.want) == 0 || len(f.peers) == 0 {
		return
	}
	peers := make([]*peer, 0, len(f.peers))
	for p := range f.peers {
		if !p.closedNow() {
			peers = append(peers, p)
		}
	}
	rand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
	// pick finds the least loaded peer with room that may have w.
	pick := func(w *want) *peer {
		var best *peer
		bestLoad := maxInflight
		for _, p := range peers {
			if w.notHave[p] || slices.Contains(w.asked, p) || len(p.out) == cap(p.out) {
				continue
			}
			if n := p.inflightCount(); n < bestLoad {
				best, bestLoad = p, n
			}
		}
		return best
	}
	room := func() bool {
		for _, p := range peers {
			if p.inflightCount() < maxInflight {
				return true
			}
		}
		return false
	}
	// pop takes the next chunk nobody is working on: readers' first.
	pop := func() (hyperdrive.Hash, *want, bool) {
		for _, q := range []*[]hyperdrive.Hash{&f.urgent, &f.queue} {
			for len(*q) > 0 {
				h := (*q)[0]
				*q = (*q)[1:]
				if w := f.want[h]; w != nil && len(w.asked) == 0 {
					return h, w, true
				}
			}
		}
		return hyperdrive.Hash{}, nil, false
	}
	var skipped []hyperdrive.Hash
	for room() {
		h, w, ok := pop()
		if !ok {
			break
		}
		p := pick(w)
		if p == nil {
			skipped = append(skipped, h) // every peer with room lacks it
			continue
		}
		if p.requestChunk(h) {
			w.asked = append(w.asked, p)
			f.asked[h] = w
		} else {
			skipped = append(skipped, h)
		}
	}
	// What no peer with room could take waits for one that can.
	for _, h := range skipped {
		if w := f.want[h]; w != nil && f.noneHaveLocked(w) {
			f.stuck = append(f.stuck, h)
		} else {
			f.queue = append([]hyperdrive.Hash{h}, f.queue...)
		}
	}
	if len(f.queue)+len(f.urgent) > 0 {
		return
	}
	// End game: nothing left to hand out; idle peers duplicate requests
	// still in flight elsewhere, and the slower answer is cancelled.
	for h, w := range f.asked {
		if len(w.asked) != 1 {
			continue
		}
		if p := pick(w); p != nil && p.inflightCount() < maxInflight/4 {
			if p.requestChunk(h) {
				w.asked = append(w.asked, p)
			}
		}
	}
}

// scheduleLogLocked asks for the signed roots and entries we lack.
func (f *Feed) scheduleLogLocked() {
	if f.logReq != nil && !f.logReq.closedNow() {
		return
	}
	f.logReq = nil
	local := f.a.Version()
	have := local + uint64(len(f.pending))
	target := uint64(0)
	for l := range f.signed {
		target = max(target, l)
	}
	if target <= have && len(f.pending) == 0 {
		return
	}
	// The best source: a connected peer at the highest length.
	var best *peer
	for p := range f.peers {
		if l := p.length(); l >= target && !p.closedNow() && (best == nil || l > best.length() || best.isSlowLog() && !p.isSlowLog()) {
			best = p
		}
	}
	if best == nil {
		return
	}
	// First the signed roots between ours and theirs (the history), once.
	if asked, ok := f.sigsAsked[best]; !ok || asked < local {
		if best.request(wire.Request{Kind: wire.KindSignatures, After: local}) {
			f.sigsAsked[best] = local
			f.logReq = best
		}
		return
	}
	if have >= target {
		return
	}
	// Then entries, proven to the nearest signed root we know past them.
	upgrade := target
	for l := range f.signed {
		if l > have && l < upgrade {
			upgrade = l
		}
	}
	if best.request(wire.Request{Kind: wire.KindEntries, Start: have, End: upgrade, Upgrade: upgrade}) {
		f.logReq = best
	}
}

// fail records a problem with a peer for WaitSynced's error.
func (f *Feed) fail(err error) {
	f.mu.Lock()
	f.lastErr = err
	f.notifyLocked()
	f.mu.Unlock()
}

func fullRootIndexes(length uint64) []uint64 {
	var out []uint64
	leaves := length
	var offset uint64
	for leaves > 0 {
		factor := uint64(1)
		for factor*2 <= leaves {
			factor *= 2
		}
		out = append(out, offset+factor-1)
		offset += 2 * factor
		leaves -= factor
	}
	return out
}

// forgetRoots drops the signed roots only a lying peer advertised.
func (f *Feed) forgetRoots(p *peer) {
	p.mu.Lock()
	var ls []uint64
	for l := range p.roots {
		ls = append(ls, l)
	}
	p.mu.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range ls {
		vouched := false
		for q := range f.peers {
			if q != p && q.length() >= l {
				vouched = true
			}
		}
		if !vouched {
			delete(f.signed, l)
		}
	}
	f.notifyLocked()
}
