package swarm

// Faults: seeders that die or come back in the middle of a transfer, and a
// connection that dies while a reader waits for a chunk.

import (
	"bytes"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
	"github.com/beaker-dev/beaker-dev/hyperdrive/wire"
)

// bigSite is a site that takes a moment to download: ~29 MB, ~1800 chunks.
func bigSite(seed uint64) map[string][]byte { return makeSite(seed, 48, 600_000) }

// waitMidTransfer waits until a third of total bytes have arrived and
// fails if the download is (nearly) over already: a kill then would not be
// in the middle.
func waitMidTransfer(t *testing.T, f *Feed, total int64) int64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := f.Stats().Bytes
		if got >= total/3 {
			if got > total*9/10 {
				t.Fatalf("%d of %d bytes already: too fast to stop in the middle", got, total)
			}
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d bytes after 30s", got, total)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestFaultSeederKilled: two seeders, the author and a complete replica;
// one is closed in the middle of a download, which completes from the other.
func TestFaultSeederKilled(t *testing.T) {
	files := bigSite(10)
	total := siteBytes(files)
	a := author(t, files)
	// A complete replica, to be the second seeder.
	c := replica(t, a.Key())
	func() {
		s1, s2 := newSwarm(t, "tcp"), newSwarm(t, "tcp")
		defer s1.Close()
		defer s2.Close()
		mustJoin(t, s1, a, JoinOptions{})
		fc := mustJoin(t, s2, c, JoinOptions{Download: All, Peers: []netip.AddrPort{addr(s1)}})
		waitSynced(t, fc, a.Version())
	}()
	for _, victim := range []string{"author", "replica seeder"} {
		t.Run(victim+" killed", func(t *testing.T) {
			before := runtime.NumGoroutine()
			start := time.Now()
			sa, sc := newSwarm(t, "tcp"), newSwarm(t, "tcp")
			fa := mustJoin(t, sa, a, JoinOptions{})
			fc := mustJoin(t, sc, c, JoinOptions{Download: All})
			sb := newSwarm(t, "tcp")
			r := replica(t, a.Key())
			f := mustJoin(t, sb, r, JoinOptions{Download: Latest, Peers: []netip.AddrPort{addr(sa), addr(sc)}})
			dead, deadFeed, alive := sa, fa, fc
			if victim != "author" {
				dead, deadFeed, alive = sc, fc, fa
			}
			got := waitMidTransfer(t, f, total)
			sent := deadFeed.Stats().Uploaded
			dead.Close()
			t.Logf("closed the %s at %d/%d bytes, after it sent %d", victim, got, total, sent)
			if sent == 0 {
				t.Errorf("the %s had sent nothing: not a kill in the middle of its transfer", victim)
			}
			waitSynced(t, f, a.Version())
			sameFiles(t, a, r)
			t.Logf("done in %v; the other seeder sent %d bytes", time.Since(start).Round(time.Millisecond), alive.Stats().Uploaded)
			sb.Close()
			verifyReplica(t, r, false, a.Version())
			sa.Close()
			sc.Close()
			checkGoroutines(t, before)
		})
	}
}

// TestFaultSeederComesBack: the only seeder goes away mid-transfer and a new
// process serves the same archive on the same port; the replica, which has
// it as a --peer, dials again after back-off and completes.
func TestFaultSeederComesBack(t *testing.T) {
	before := runtime.NumGoroutine()
	start := time.Now()
	files := bigSite(20)
	total := siteBytes(files)
	a := author(t, files)
	sa := newSwarm(t, "tcp")
	fa := mustJoin(t, sa, a, JoinOptions{})
	seeder := addr(sa)
	sb := newSwarm(t, "tcp")
	r := replica(t, a.Key())
	f := mustJoin(t, sb, r, JoinOptions{Download: Latest, Peers: []netip.AddrPort{seeder}})
	got := waitMidTransfer(t, f, total)
	sent := fa.Stats().Uploaded
	sa.Close()
	// The replica notices, dials again, fails, and backs off.
	waitUntil(t, 10*time.Second, "a failed dial of the closed seeder", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		c := f.candidates[seeder]
		return c != nil && c.failures > 0 && !c.dialing
	})
	down := time.Now()
	sa2, err := New(Config{Listen: seeder.String(), Transport: "tcp"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sa2.Close() })
	fa2 := mustJoin(t, sa2, a, JoinOptions{})
	waitSynced(t, f, a.Version())
	sameFiles(t, a, r)
	t.Logf("seeder closed at %d/%d bytes after sending %d; back on %s; the replica completed %v later (the new process sent %d bytes), %v in all",
		got, total, sent, seeder, time.Since(down).Round(time.Millisecond), fa2.Stats().Uploaded, time.Since(start).Round(time.Millisecond))
	if fa2.Stats().Uploaded == 0 {
		t.Errorf("the seeder that came back sent nothing")
	}
	sb.Close()
	verifyReplica(t, r, false, a.Version())
	sa2.Close()
	checkGoroutines(t, before)
}

// withholdingPeer serves the log honestly but never answers a chunk
// request; asked is closed at the first one.
func withholdingPeer(t *testing.T, a *hyperdrive.Archive) *fakePeer {
	return startFake(t, fakeConfig{key: a.Key(), src: a, script: func(s *session) {
		s.send(statusOf(a))
		s.serve(func(r wire.Request) bool {
			if r.Kind != wire.KindChunk {
				return false
			}
			s.misdeed() // withheld
			return true
		})
	}})
}

// readOnDemand starts a read of p through the replica's files, which fetches
// what it lacks, and returns where the result will arrive.
func readOnDemand(r *hyperdrive.Archive, p string, off int64, n int) <-chan readResult {
	ch := make(chan readResult, 1)
	go func() {
		start := time.Now()
		file, err := r.Latest().OpenFile(p)
		if err != nil {
			ch <- readResult{err: err}
			return
		}
		buf := make([]byte, n)
		_, err = file.ReadAt(buf, off)
		ch <- readResult{buf, err, time.Since(start)}
	}()
	return ch
}

type readResult struct {
	data []byte
	err  error
	took time.Duration
}

// onDemandSetup: a sparse replica that got the log from a peer that will
// withhold every chunk, and optionally an honest seeder behind a gate.
func onDemandSetup(t *testing.T, withSeeder bool) (files map[string][]byte, r *hyperdrive.Archive, fp *fakePeer, g *gate) {
	files = siteFiles(10, 200_000)
	a := author(t, files)
	sa := newSwarm(t, "tcp")
	mustJoin(t, sa, a, JoinOptions{})
	fp = withholdingPeer(t, a)
	peers := []netip.AddrPort{fp.Addr()}
	if withSeeder {
		g = newGate(t, addr(sa))
		peers = append(peers, g.Addr())
	}
	sb := newSwarm(t, "tcp")
	r = replica(t, a.Key())
	f := mustJoin(t, sb, r, JoinOptions{Download: OnDemand, Peers: peers})
	if !waitVersion(f, r, a.Version(), 10*time.Second) {
		t.Fatalf("no version from the withholding peer (%v)", fp)
	}
	return files, r, fp, g
}

// TestFaultOnDemandConnectionDies: a reader waits for a chunk asked of a
// peer whose connection dies; another peer then serves it.
func TestFaultOnDemandConnectionDies(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("read", func(t *testing.T) { // its cleanups close everything
		files, r, fp, g := onDemandSetup(t, true)
		const p, off, n = "/d0/f000.bin", 50_000, 1000
		res := readOnDemand(r, p, off, n)
		fp.waitExercised(t, 10*time.Second) // the reader's chunk is asked of the withholding peer
		fp.Close()                          // the connection dies
		g.Open()                            // another peer comes
		select {
		case rr := <-res:
			if rr.err != nil {
				t.Fatalf("the read failed although another peer has the chunk: %v (after %v)", rr.err, rr.took)
			}
			if !bytes.Equal(rr.data, files[p][off:off+n]) {
				t.Fatal("the read returned other bytes")
			}
			t.Logf("read in %v, from the other peer (%v)", rr.took.Round(time.Millisecond), fp)
		case <-time.After(20 * time.Second):
			t.Fatal("the read hangs after the connection died")
		}
	})
	checkGoroutines(t, before)
}

// runOnDemandNoPeer: the only peer dies while a reader waits for a chunk
// asked of it; the read must fail within a bounded time, not hang.
func runOnDemandNoPeer(t *testing.T) {
	_, r, fp, _ := onDemandSetup(t, false)
	res := readOnDemand(r, "/d0/f000.bin", 50_000, 1000)
	fp.waitExercised(t, 10*time.Second)
	fp.Close()
	died := time.Now()
	select {
	case rr := <-res:
		if rr.err == nil {
			t.Fatal("the read succeeded with no peer to send the chunk")
		}
		t.Logf("the read failed %v after the connection died: %v", time.Since(died).Round(time.Millisecond), rr.err)
	case <-time.After(45 * time.Second):
		t.Fatal("the read hangs after the only peer died")
	}
}

// runIdleConnection: two peers with nothing to say keep their connection:
// each sends a keepalive after 10 s without a message, and only 35 s of
// silence ends a connection (PROTOCOL.md §5).
func runIdleConnection(t *testing.T) {
	a := author(t, siteFiles(4, 20_000))
	sa := newSwarm(t, "tcp")
	fa := mustJoin(t, sa, a, JoinOptions{})
	sb := newSwarm(t, "tcp")
	r := replica(t, a.Key())
	f := mustJoin(t, sb, r, JoinOptions{Download: Latest, Peers: []netip.AddrPort{addr(sa)}})
	waitSynced(t, f, a.Version())
	first, n := onlyPeer(f)
	time.Sleep(idleTimeout + keepalive/2)
	now, n2 := onlyPeer(f)
	if first == nil || now != first || first.closedNow() {
		t.Errorf("the idle connection was dropped and dialed again (%d peers, then %d; the first closed: %v, why: %v): keepalives do not keep a connection up",
			n, n2, first != nil && first.closedNow(), lastErr(f))
	}
	if fa.Stats().Peers != 1 {
		t.Errorf("the seeder has %d peers", fa.Stats().Peers)
	}
}

// onlyPeer returns the feed's peer when it has exactly one.
func onlyPeer(f *Feed) (*peer, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for p := range f.peers {
		if len(f.peers) == 1 {
			return p, 1
		}
	}
	return nil, len(f.peers)
}

// TestRequestTimeouts groups the cases that take requestTimeout (20 s) or
// idleTimeout (35 s) to play out. They run at once, each in its own
// goroutine (t.Parallel would hold them to GOMAXPROCS at a time).
func TestRequestTimeouts(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 40 seconds")
	}
	before := runtime.NumGoroutine()
	cases := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"silent log peer", runSilentLogPeer},
		{"late log answer", runLateLogAnswer},
		{"on demand, no other peer", runOnDemandNoPeer},
		{"idle connection", runIdleConnection},
	}
	var wg sync.WaitGroup
	for _, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(c.name, c.run)
		}()
	}
	wg.Wait()
	checkGoroutines(t, before)
}
