package swarm

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"runtime"
	"sort"
	"testing"
	"time"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
)

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed+1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// author makes an archive with files and returns it.
func author(t testing.TB, files map[string][]byte) *hyperdrive.Archive {
	t.Helper()
	kp, _ := hyperdrive.GenerateKeyPair()
	a, err := hyperdrive.Create(filepath.Join(t.TempDir(), "author"), kp, hyperdrive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	commit(t, a, files)
	return a
}

func commit(t testing.TB, a *hyperdrive.Archive, files map[string][]byte) uint64 {
	t.Helper()
	w, err := a.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		c, _, err := w.WriteContent(bytes.NewReader(files[p]))
		if err != nil {
			t.Fatal(err)
		}
		w.Put(p, hyperdrive.FileMeta{Mode: 0o644, Size: uint64(len(files[p]))}, c)
	}
	v, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func replica(t testing.TB, key hyperdrive.PublicKey) *hyperdrive.Archive {
	t.Helper()
	r, err := hyperdrive.CreateReplica(filepath.Join(t.TempDir(), "replica"), key, hyperdrive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func newSwarm(t testing.TB, transport string) *Swarm {
	t.Helper()
	s, err := New(Config{Listen: "127.0.0.1:0", Transport: transport, Logf: func(f string, a ...any) {
		if testing.Verbose() {
			t.Logf(f, a...)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func addr(s *Swarm) netip.AddrPort { return netip.MustParseAddrPort(s.Addr()) }

func sameFiles(t testing.TB, a, b *hyperdrive.Archive) {
	t.Helper()
	sa, sb := a.Latest(), b.Latest()
	if sa.Version() != sb.Version() || sa.Len() != sb.Len() {
		t.Fatalf("versions %d/%d, %d/%d files", sa.Version(), sb.Version(), sa.Len(), sb.Len())
	}
	for _, p := range sa.Paths() {
		fa, _ := sa.OpenFile(p)
		fb, err := sb.OpenFile(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		da, _ := io.ReadAll(fa)
		db, err := io.ReadAll(fb)
		if err != nil || !bytes.Equal(da, db) {
			t.Fatalf("%s differs: %v", p, err)
		}
	}
}

func waitSynced(t testing.TB, f *Feed, v uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.WaitSynced(ctx, v); err != nil {
		t.Fatalf("sync: %v (stats %+v)", err, f.Stats())
	}
}

func siteFiles(n int, size int) map[string][]byte {
	files := map[string][]byte{}
	for i := 0; i < n; i++ {
		files[fmt.Sprintf("/d%d/f%03d.bin", i%5, i)] = randBytes(uint64(i), size/2+i*size/n)
	}
	return files
}

func TestTwoPeers(t *testing.T) {
	for _, transport := range []string{"tcp", "utp", "both"} {
		t.Run(transport, func(t *testing.T) {
			before := runtime.NumGoroutine()
			a := author(t, siteFiles(30, 60_000))
			sa, sb := newSwarm(t, transport), newSwarm(t, transport)
			if _, err := sa.Join(a, JoinOptions{}); err != nil {
				t.Fatal(err)
			}
			r := replica(t, a.Key())
			f, err := sb.Join(r, JoinOptions{Download: Latest, Peers: []netip.AddrPort{addr(sa)}})
			if err != nil {
				t.Fatal(err)
			}
			waitSynced(t, f, a.Version())
			sameFiles(t, a, r)
			// A new version reaches the connected peer by itself.
			v := commit(t, a, map[string][]byte{"/new.html": []byte("new")})
			waitSynced(t, f, v)
			sameFiles(t, a, r)
			sa.Close()
			sb.Close()
			for i := 0; i < 100 && runtime.NumGoroutine() > before+3; i++ {
				time.Sleep(20 * time.Millisecond)
			}
			if g := runtime.NumGoroutine(); g > before+3 {
				buf := make([]byte, 1<<16)
				t.Fatalf("%d goroutines after Close, %d before\n%s", g, before, buf[:runtime.Stack(buf, true)])
			}
		})
	}
}

// TestThreePeersReshare: C reaches only B, which re-shares what it got from A.
func TestThreePeersReshare(t *testing.T) {
	a := author(t, siteFiles(20, 40_000))
	sa, sb, sc := newSwarm(t, "tcp"), newSwarm(t, "tcp"), newSwarm(t, "tcp")
	sa.Join(a, JoinOptions{})
	rb, rc := replica(t, a.Key()), replica(t, a.Key())
	fb, _ := sb.Join(rb, JoinOptions{Download: All, Peers: []netip.AddrPort{addr(sa)}})
	waitSynced(t, fb, a.Version())
	fc, _ := sc.Join(rc, JoinOptions{Download: Latest, Peers: []netip.AddrPort{addr(sb)}})
	waitSynced(t, fc, a.Version())
	sameFiles(t, a, rc)
	// Live: a new version travels A -> B -> C.
	v := commit(t, a, map[string][]byte{"/live.html": []byte("live")})
	waitSynced(t, fc, v)
	sameFiles(t, a, rc)
}

// TestOnDemand: a reader of a sparse replica gets exactly what it reads.
func TestOnDemand(t *testing.T) {
	files := siteFiles(10, 200_000)
	a := author(t, files)
	sa, sb := newSwarm(t, "tcp"), newSwarm(t, "tcp")
	sa.Join(a, JoinOptions{})
	r := replica(t, a.Key())
	f, _ := sb.Join(r, JoinOptions{Download: OnDemand, Peers: []netip.AddrPort{addr(sa)}})
	if !waitVersion(f, r, a.Version(), 20*time.Second) {
		t.Fatal("no version")
	}
	p := "/d0/f000.bin"
	file, err := r.Latest().OpenFile(p)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1000)
	if _, err := file.ReadAt(buf, 50_000); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, files[p][50_000:51_000]) {
		t.Fatal("on-demand read differs")
	}
	if st := f.Stats(); st.Bytes > 200_000 {
		t.Fatalf("fetched %d bytes for a 1000-byte read", st.Bytes)
	}
}

// waitVersion waits until r has stored version v, which f fetches. The
// change channel is taken before the version is checked: the other order
// misses a version stored in between, and waits for a change that may never
// come.
func waitVersion(f *Feed, r *hyperdrive.Archive, v uint64, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		changed := f.Changed()
		if r.Version() >= v {
			return true
		}
		select {
		case <-changed:
		case <-deadline:
			return false
		}
	}
}
