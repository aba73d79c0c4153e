package swarm

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"time"
)

// candidate is an address a source gave for the archive.
type candidate struct {
	addr      netip.AddrPort
	source    string
	static    bool // a --peer address: never given up on
	connected bool
	dialing   bool
	failures  int
	lastTry   time.Time
}

// Retry policy for addresses that do not answer.
const (
	maxFailures  = 6                // a discovered address is dropped after this many failures in a row
	maxBackoff   = 5 * time.Minute  // between tries of one address
	maxDialing   = 4                // dials at once per archive
	lookupPeriod = 30 * time.Second // between lookups while short of peers
)

func (c *candidate) ready(now time.Time) bool {
	if c.connected || c.dialing {
		return false
	}
	if c.failures == 0 {
		return true
	}
	backoff := time.Second << min(c.failures-1, 9)
	return now.Sub(c.lastTry) >= min(backoff, maxBackoff)
}

// addCandidate records an address for the archive and wakes the connector.
func (f *Feed) addCandidate(a netip.AddrPort, source string, static bool) {
	if !a.IsValid() || a.Port() == 0 {
		return
	}
	a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
	f.mu.Lock()
	c, ok := f.candidates[a]
	if !ok {
		c = &candidate{addr: a, source: source}
		f.candidates[a] = c
	}
	c.static = c.static || static
	f.mu.Unlock()
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// AddPeer adds an address to try for the archive.
func (f *Feed) AddPeer(a netip.AddrPort) { f.addCandidate(a, "peer", true) }

// connector keeps the archive connected to up to MaxPeers peers, chosen at
// random among the candidates, retrying with back-off and giving up on
// discovered addresses that keep failing.
func (f *Feed) connector() {
	defer f.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-f.kick:
		case <-tick.C:
		}
		for _, c := range f.pickCandidates() {
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.connect(c)
			}()
		}
	}
}

// pickCandidates chooses addresses to dial now.
func (f *Feed) pickCandidates() []*candidate {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	dialing := 0
	var ready []*candidate
	now := time.Now()
	for _, c := range f.candidates {
		if c.dialing {
			dialing++
		}
		if c.ready(now) && !f.s.isBanned(c.addr.Addr()) {
			ready = append(ready, c)
		}
	}
	room := min(f.s.cfg.MaxPeers-len(f.peers)-dialing, maxDialing-dialing)
	if room <= 0 {
		return nil
	}
	rand.Shuffle(len(ready), func(i, j int) { ready[i], ready[j] = ready[j], ready[i] })
	if len(ready) > room {
		ready = ready[:room]
	}
	for _, c := range ready {
		c.dialing = true
	}
	return ready
}

// connect dials one candidate and serves the connection until it ends.
func (f *Feed) connect(c *candidate) {
	conn, transport, err := f.s.dial(f.ctx, f, c.addr)
	f.mu.Lock()
	c.dialing = false
	c.lastTry = time.Now()
	if err != nil {
		c.failures++
		if c.failures >= maxFailures && !c.static {
			delete(f.candidates, c.addr) // a dead source
		}
		f.mu.Unlock()
		f.s.logf("swarm: dialing %s: %v", c.addr, err)
		return
	}
	c.failures = 0
	f.mu.Unlock()
	f.run(conn, c.addr, transport, true)
}

// useSource starts announcing on and looking up with a discovery source,
// as the feed's options say.
func (f *Feed) useSource(src Source) {
	if f.ctx == nil || f.ctx.Err() != nil {
		return
	}
	if f.opts.Announce {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			src.Announce(f.ctx, f.dk, f.s.port)
		}()
	}
	if f.opts.Lookup {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.lookupLoop(src)
		}()
	}
}

// lookupLoop asks a source for peers now, then again while the archive has
// fewer than it could use: every lookupPeriod, or sooner (1 s, doubling)
// while lookups find nobody, as they do while a DHT is still joining or
// before the author's first announce has spread.
func (f *Feed) lookupLoop(src Source) {
	wait := time.Duration(0)
	fast := time.Second
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-time.After(wait):
		}
		f.mu.Lock()
		short := len(f.peers) < f.s.cfg.MaxPeers
		f.mu.Unlock()
		if short {
			ctx, cancel := context.WithTimeout(f.ctx, 20*time.Second)
			addrs, err := src.Lookup(ctx, f.dk)
			cancel()
			if err != nil && f.ctx.Err() == nil {
				f.s.logf("swarm: %s lookup: %v", src.Name(), err)
			}
			for _, a := range addrs {
				f.addCandidate(a, src.Name(), false)
			}
			if len(addrs) == 0 {
				wait, fast = jitter(fast), min(2*fast, lookupPeriod)
				continue
			}
		}
		wait = jitter(lookupPeriod)
	}
}
