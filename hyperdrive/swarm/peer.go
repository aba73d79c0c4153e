package swarm

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
	"github.com/beaker-dev/beaker-dev/hyperdrive/wire"
)

// peer is one connection for one archive. Its reader runs in the goroutine
// that called loop; its writer is a goroutine it owns. close ends both.
type peer struct {
	f         *Feed
	c         *wire.Conn
	addr      netip.AddrPort
	transport string
	dialed    bool

	out    chan wire.Message
	queued atomic.Int64 // bytes of responses queued
	done   chan struct{}
	once   sync.Once
	writer sync.WaitGroup

	mu         sync.Mutex
	err        error
	nextID     uint64
	requests   map[uint64]*request
	byHash     map[hyperdrive.Hash]uint64
	remote     uint64 // the peer's advertised length
	advertised bool   // its Status arrived
	flags      byte
	roots      map[uint64][]hyperdrive.Node
	expired    map[uint64]bool // requests that timed out: their late answers are dropped
	slowLog    bool            // a log request timed out here

	lastPaint time.Time // reader goroutine only: paint reports are rate-limited
}

// paintInterval is the least time between two paint reports from one peer
// that are passed on; a peer that floods them only loses its own reports.
const paintInterval = 20 * time.Millisecond

type request struct {
	req  wire.Request
	sent time.Time
}

func newPeer(f *Feed, c *wire.Conn, addr netip.AddrPort, transport string, dialed bool) *peer {
	return &peer{
		f: f, c: c, addr: addr, transport: transport, dialed: dialed,
		out: make(chan wire.Message, 256), done: make(chan struct{}),
		requests: map[uint64]*request{}, byHash: map[hyperdrive.Hash]uint64{}, roots: map[uint64][]hyperdrive.Node{},
	}
}

// close ends the connection; err, if any, says why (and bans the address
// when the peer misbehaved).
func (p *peer) close(err error) {
	p.once.Do(func() {
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
		p.c.Close()
	})
}

func (p *peer) closedNow() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for the writer goroutine.
func (p *peer) wait() { p.writer.Wait() }

func (p *peer) setStatus(length uint64, flags byte) {
	p.mu.Lock()
	p.remote, p.flags, p.advertised = max(p.remote, length), flags, true
	p.mu.Unlock()
}

// hasAdvertised reports whether the peer has sent its Status.
func (p *peer) hasAdvertised() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.advertised
}

func (p *peer) isSlowLog() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.slowLog
}

func (p *peer) length() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.remote
}

// askedHashes lists the chunks asked of the peer and not answered.
func (p *peer) askedHashes() []hyperdrive.Hash {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]hyperdrive.Hash, 0, len(p.byHash))
	for h := range p.byHash {
		out = append(out, h)
	}
	return out
}

func (p *peer) inflightCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.byHash)
}

// trySend queues a message without blocking; false if the queue is full.
func (p *peer) trySend(m wire.Message) bool {
	select {
	case p.out <- m:
		return true
	case <-p.done:
		return false
	default:
		return false
	}
}

// send queues a response, waiting while too many bytes are queued for the
// peer: a peer that asks faster than it reads is slowed, not buffered.
func (p *peer) send(m wire.Message, size int) bool {
	for p.queued.Load() > maxQueuedBytes {
		select {
		case <-p.done:
			return false
		case <-time.After(time.Millisecond):
		}
	}
	p.queued.Add(int64(size))
	select {
	case p.out <- m:
		return true
	case <-p.done:
		return false
	}
}

// request sends a request and remembers it.
func (p *peer) request(r wire.Request) bool {
	p.mu.Lock()
	p.nextID++
	r.ID = p.nextID
	p.requests[r.ID] = &request{req: r, sent: time.Now()}
	if r.Kind == wire.KindChunk {
		p.byHash[r.Hash] = r.ID
	}
	p.mu.Unlock()
	if !p.trySend(r) {
		p.mu.Lock()
		delete(p.requests, r.ID)
		if r.Kind == wire.KindChunk {
			delete(p.byHash, r.Hash)
		}
		p.mu.Unlock()
		return false
	}
	return true
}

func (p *peer) requestChunk(h hyperdrive.Hash) bool {
	p.mu.Lock()
	_, asked := p.byHash[h]
	p.mu.Unlock()
	if asked {
		return false
	}
	return p.request(wire.Request{Kind: wire.KindChunk, Hash: h})
}

// cancel withdraws a chunk request.
func (p *peer) cancel(h hyperdrive.Hash) {
	p.mu.Lock()
	id, ok := p.byHash[h]
	if ok {
		delete(p.byHash, h)
		delete(p.requests, id)
	}
	p.mu.Unlock()
	if ok {
		p.trySend(wire.Cancel{ID: id})
	}
}

// wasExpired reports (once) an answer to a request that timed out.
func (p *peer) wasExpired(id uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	ok := p.expired[id]
	delete(p.expired, id)
	return ok
}

// take removes and returns the request a response answers.
func (p *peer) take(id uint64) *request {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.requests[id]
	if r == nil {
		return nil
	}
	delete(p.requests, id)
	if r.req.Kind == wire.KindChunk {
		delete(p.byHash, r.req.Hash)
	}
	return r
}

// writeLoop sends queued messages, and keepalives when idle.
func (p *peer) writeLoop() {
	defer p.writer.Done()
	t := time.NewTimer(keepalive)
	defer t.Stop()
	batchBuf := make([]wire.Message, 0, 64)
	for {
		select {
		case <-p.done:
			return
		case m := <-p.out:
			// Send whatever else is queued with it, in one flush.
			batch := append(batchBuf[:0], m)
		more:
			for len(batch) < 64 {
				select {
				case m := <-p.out:
					batch = append(batch, m)
				default:
					break more
				}
			}
			p.c.SetWriteDeadline(time.Now().Add(idleTimeout))
			err := p.c.WriteMessages(batch...)
			for _, m := range batch {
				if c, ok := m.(wire.Chunk); ok {
					p.queued.Add(-int64(len(c.Data)))
					// Written (encrypted into a frame): the buffer can be reused.
					if cap(c.Data) >= hyperdrive.MaxChunkSize {
						b := c.Data[:0]
						p.f.s.chunkBufs.Put(&b)
					}
				} else if e, ok := m.(wire.Entries); ok {
					p.queued.Add(-int64(entriesSize(e)))
				}
			}
			if err != nil {
				p.close(nil)
				return
			}
			t.Reset(keepalive)
		case <-t.C:
			p.c.SetWriteDeadline(time.Now().Add(idleTimeout))
			if p.c.WriteKeepalive() != nil {
				p.close(nil)
				return
			}
			t.Reset(keepalive)
		}
	}
}

func entriesSize(e wire.Entries) int {
	n := 0
	for _, x := range e.Entries {
		n += len(x)
	}
	return n
}

// errMisbehaved wraps errors that are the peer's fault.
var errMisbehaved = errors.New("swarm: peer misbehaved")

// loop reads messages until the connection ends.
func (p *peer) loop() {
	p.writer.Add(1)
	go p.writeLoop()
	timeouts := time.NewTicker(requestTimeout / 4)
	defer timeouts.Stop()
	// The reader decrypts up to 32 messages ahead of the handler (which
	// hashes and stores chunks): with an unbuffered hand-off each message
	// parked one goroutine or the other, and a clone ran 20% slower. Bounded:
	// a handler blocked on a slow peer stops the reader 32 messages later.
	msgs := make(chan wire.Message, 32)
	readErr := make(chan error, 1)
	p.c.SetIdleTimeout(idleTimeout)
	p.writer.Add(1)
	go func() {
		defer p.writer.Done()
		for {
			p.c.SetReadDeadline(time.Now().Add(idleTimeout))
			m, err := p.c.ReadMessage()
			if err != nil {
				readErr <- err
				return
			}
			select {
			case msgs <- m:
			case <-p.done:
				return
			}
		}
	}()
	var err error
loop:
	for {
		select {
		case m := <-msgs:
			if err = p.handle(m); err != nil {
				break loop
			}
		case err = <-readErr:
			if wireFault(err) {
				err = fmt.Errorf("%w: %v", errMisbehaved, err)
			} else {
				err = nil // the connection ended
			}
			break loop
		case <-timeouts.C:
			p.expire()
			p.f.askAgain(p) // it may have fetched what it lacked
		case <-p.done:
			break loop
		}
	}
	if err != nil {
		if errors.Is(err, errMisbehaved) || isBadData(err) {
			p.f.s.ban(p.addr.Addr(), err)
			p.f.forgetRoots(p)
		}
		p.f.fail(fmt.Errorf("peer %s: %w", p.addr, err))
	}
	p.close(err)
	p.writer.Wait()
}

func wireFault(err error) bool {
	return errors.Is(err, wire.ErrMalformed) || errors.Is(err, wire.ErrTooBig)
}

// isBadData reports data that failed verification: the peer lied.
func isBadData(err error) bool {
	return errors.Is(err, hyperdrive.ErrBadProof) || errors.Is(err, hyperdrive.ErrBadSignature) ||
		errors.Is(err, hyperdrive.ErrMalformed) || errors.Is(err, hyperdrive.ErrForked)
}

// expire gives requests that went unanswered too long to other peers.
func (p *peer) expire() {
	now := time.Now()
	var late []hyperdrive.Hash
	logLate := false
	p.mu.Lock()
	for id, r := range p.requests {
		if now.Sub(r.sent) > requestTimeout {
			delete(p.requests, id)
			if p.expired == nil {
				p.expired = map[uint64]bool{}
			}
			p.expired[id] = true
			if r.req.Kind == wire.KindChunk {
				delete(p.byHash, r.req.Hash)
				late = append(late, r.req.Hash)
			} else {
				logLate = true
				p.slowLog = true
			}
		}
	}
	p.mu.Unlock()
	for _, h := range late {
		p.f.onTimeout(p, h)
	}
	if logLate {
		p.f.mu.Lock()
		if p.f.logReq == p {
			p.f.logReq = nil
		}
		p.f.scheduleLocked()
		p.f.mu.Unlock()
	}
}

// handle processes one message from the peer. An error ends the
// connection.
func (p *peer) handle(m wire.Message) error {
	f := p.f
	switch m := m.(type) {
	case wire.Status:
		return f.onStatus(p, m)
	case wire.Request:
		return p.serve(m)
	case wire.Cancel:
		return nil // answers go out in order and fast; nothing to withdraw
	case wire.Entries:
		if p.wasExpired(m.ID) {
			return nil
		}
		if r := p.take(m.ID); r == nil || r.req.Kind != wire.KindEntries || m.Start != r.req.Start || m.Upgrade != r.req.Upgrade {
			return fmt.Errorf("%w: unrequested entries", errMisbehaved)
		} else if len(m.Entries) == 0 && m.Start < r.req.End {
			return fmt.Errorf("%w: empty entries answer", errMisbehaved)
		}
		return f.onEntries(p, m)
	case wire.Chunk:
		r := p.take(m.ID)
		if r == nil {
			return nil // cancelled, or timed out and asked elsewhere
		}
		if r.req.Kind != wire.KindChunk {
			return fmt.Errorf("%w: a chunk for another request", errMisbehaved)
		}
		return f.onChunk(p, r.req.Hash, m.Data)
	case wire.Signatures:
		if p.wasExpired(m.ID) {
			return nil
		}
		if r := p.take(m.ID); r == nil || r.req.Kind != wire.KindSignatures {
			return fmt.Errorf("%w: unrequested signatures", errMisbehaved)
		}
		return f.onSignatures(p, m)
	case wire.NotHave:
		r := p.take(m.ID)
		if r == nil {
			return nil
		}
		switch r.req.Kind {
		case wire.KindChunk:
			f.onNotHave(p, r.req.Hash)
		default:
			f.mu.Lock()
			if f.logReq == p {
				f.logReq = nil
			}
			f.mu.Unlock()
		}
		return nil
	case wire.Paint:
		if f.opts.OnPaint != nil && time.Since(p.lastPaint) >= paintInterval {
			p.lastPaint = time.Now()
			f.opts.OnPaint(p.addr, m)
		}
		return nil
	case wire.Close:
		return nil
	case wire.Open:
		return fmt.Errorf("%w: a second open", errMisbehaved)
	}
	return nil
}

// serve answers a request from the peer.
func (p *peer) serve(r wire.Request) error {
	a := p.f.a
	switch r.Kind {
	case wire.KindChunk:
		buf := p.f.s.chunkBufs.Get().(*[]byte)
		data, err := a.ChunkInto(r.Hash, (*buf)[:0])
		if err != nil {
			p.f.s.chunkBufs.Put(buf)
			p.send(wire.NotHave{ID: r.ID}, 0)
			return nil
		}
		p.f.mu.Lock()
		p.f.got.Uploaded += int64(len(data))
		p.f.mu.Unlock()
		p.send(wire.Chunk{ID: r.ID, Data: data}, len(data))
	case wire.KindSignatures:
		var roots []wire.SignedRoot
		for _, s := range a.Versions() {
			if s.Length > r.After && len(roots) < wire.MaxSignatures {
				roots = append(roots, wire.SignedRoot{Length: s.Length, Time: s.Time, TreeHash: s.TreeHash, Signature: s.Signature})
			}
		}
		p.send(wire.Signatures{ID: r.ID, Roots: roots}, 0)
	case wire.KindEntries:
		if _, ok := a.SignedRootAt(r.Upgrade); !ok || r.Upgrade > a.Version() {
			p.send(wire.NotHave{ID: r.ID}, 0)
			return nil
		}
		resp := wire.Entries{ID: r.ID, Start: r.Start, Upgrade: r.Upgrade}
		size := 0
		for seq := r.Start; seq < r.End && size < entriesBudget; seq++ {
			b, err := a.EntryBytes(seq)
			if err != nil {
				p.send(wire.NotHave{ID: r.ID}, 0)
				return nil
			}
			resp.Entries = append(resp.Entries, b)
			size += len(b)
		}
		nodes, err := a.UpgradeNodes(r.Start+uint64(len(resp.Entries)), r.Upgrade)
		if err != nil {
			p.send(wire.NotHave{ID: r.ID}, 0)
			return nil
		}
		for _, n := range nodes {
			resp.Nodes = append(resp.Nodes, wire.Node{Hash: n.Hash, Size: n.Size})
		}
		p.send(resp, size)
	}
	return nil
}
