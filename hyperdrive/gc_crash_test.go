package hyperdrive

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The gc crash test re-runs this test binary as a child that runs Store.GC
// on a copy of a store, and kills it with SIGKILL at a random instant.
const gcCrashEnv = "BEAKER_DEV_GC_CRASH_STORE"

// TestGCCrashChild is the child: it collects the store named by
// $BEAKER_DEV_GC_CRASH_STORE, saying "start" before and "done ..." after.
func TestGCCrashChild(t *testing.T) {
	dir := os.Getenv(gcCrashEnv)
	if dir == "" {
		t.Skip("the child of TestGCCrash")
	}
	s, err := OpenStore(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open store:", err)
		os.Exit(2)
	}
	fmt.Println("start")
	rep, err := s.GC(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "gc:", err)
		os.Exit(3)
	}
	fmt.Printf("done chunks=%d removed=%d compacted=%d skipped=%d\n", rep.Chunks, len(rep.Removed), len(rep.Compacted), len(rep.Skipped))
	os.Exit(0)
}

// Small chunks, so a few MiB make thousands of them and the larger files
// need index blocks.
var gcCrashChunking = ChunkParams{Polynomial: DefaultChunkParams.Polynomial, Min: 1 << 10, Max: 32 << 10, AvgBits: 11, IndexBits: 6}

// gcCrashFixture is the template store every trial starts from a copy of.
type gcCrashFixture struct {
	dir            string
	author, cached PublicKey
	expect         map[uint64]map[string][]byte // committed version -> its files
	cachedFiles    map[string]int64             // the cached archive's files and sizes
	garbage        int                          // chunks of the imports that never committed
	revive         []byte                       // the last aborted import's content
	reviveChunks   int                          // chunks (index blocks included) it stored
	chunks, idx    int64                        // sizes of chunks and chunks.idx before gc
	chunksGC       int64                        // ... and after a complete gc
	idxGC          int64
}

func newGCCrashFixture(t *testing.T, dir string) *gcCrashFixture {
	t.Helper()
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.Create(Options{Chunking: gcCrashChunking})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	fx := &gcCrashFixture{dir: dir, author: a.Key(), expect: map[uint64]map[string][]byte{}}
	cur := map[string][]byte{}
	fx.expect[a.Version()] = maps.Clone(cur)
	commit := func(changes map[string][]byte, deletes ...string) {
		v := put(t, a, changes, deletes...)
		maps.Copy(cur, changes)
		for _, p := range deletes {
			delete(cur, p)
		}
		fx.expect[v] = maps.Clone(cur)
	}
	// abort stores contents the way an import does and dies before Commit.
	abort := func(contents ...[]byte) (newChunks []int) {
		w, err := a.Begin(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for i, b := range contents {
			c, st, err := w.WriteContent(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Put(fmt.Sprintf("/aborted/%d", i), FileMeta{Mode: 0o644, Size: uint64(len(b))}, c); err != nil {
				t.Fatal(err)
			}
			newChunks = append(newChunks, st.NewChunks)
		}
		w.Close()
		return newChunks
	}

	commit(map[string][]byte{
		"/index.html":        randomBytes(11, 40_000),
		"/big.bin":           randomBytes(12, 3<<20),
		"/assets/app.js":     randomBytes(13, 300_000),
		"/assets/style.css":  randomBytes(14, 80_000),
		"/data/d0.bin":       randomBytes(15, 600_000),
		"/data/empty.txt":    {},
		"/deep/a/b/c/d.html": []byte("<p>deep</p>\n"),
	})
	edited := slices.Clone(cur["/big.bin"])
	copy(edited[3<<19:], randomBytes(16, 100_000)) // an edit in the middle: most chunks are shared
	commit(map[string][]byte{"/big.bin": edited, "/index.html": randomBytes(17, 45_000), "/data/d1.bin": randomBytes(18, 1<<20)})
	// An import that died: one of its files comes back in the next version
	// (its chunks become referenced), the other stays garbage, between
	// chunks that versions use.
	revived := randomBytes(100, 700_000)
	fx.garbage += abort(revived, randomBytes(101, 1<<20))[1]
	commit(map[string][]byte{"/data/revived.bin": revived, "/notes.txt": []byte("notes\n")}, "/data/d0.bin")
	w, err := a.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Tag("1.0.0", "before the append"); err != nil {
		t.Fatal(err)
	}
	v, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	fx.expect[v] = maps.Clone(cur)
	commit(map[string][]byte{"/big.bin": append(slices.Clone(edited), randomBytes(19, 400_000)...)})
	// A large import that died last: garbage index blocks too.
	fx.revive = randomBytes(102, 2<<20)
	fx.reviveChunks = abort(fx.revive)[0]
	fx.garbage += fx.reviveChunks
	if f, err := a.Latest().OpenFile("/big.bin"); err != nil || f.Content().Level == 0 {
		t.Fatalf("/big.bin should use index blocks: %v", err)
	}
	vr, err := Verify(context.Background(), a.Dir(), a.Key(), VerifyOptions{})
	if err != nil || !vr.OK() || len(vr.TornTails) > 0 {
		t.Fatalf("template: %v %v %v", err, vr.Problems, vr.TornTails)
	}

	// A cached archive of someone else, which gc removes. Its key sorts
	// after the author's, so gc removes it after the compaction.
	var kp KeyPair
	for kp.Public.String() <= fx.author.String() {
		if kp, err = GenerateKeyPair(); err != nil {
			t.Fatal(err)
		}
	}
	fx.cached = kp.Public
	c, err := Create(s.ArchiveDir(kp.Public), kp, Options{})
	if err != nil {
		t.Fatal(err)
	}
	put(t, c, map[string][]byte{"/index.html": randomBytes(20, 30_000), "/b.bin": randomBytes(21, 200_000)})
	c.Close()
	if s.Saved(fx.cached) || !s.Saved(fx.author) {
		t.Fatal("saved marks wrong")
	}
	fx.cachedFiles = dirFiles(t, s.ArchiveDir(fx.cached))
	fx.chunks = fileSize(t, filepath.Join(a.Dir(), chunksFile))
	fx.idx = fileSize(t, filepath.Join(a.Dir(), chunkIndexFile))
	return fx
}

// dirFiles returns the regular files in dir and their sizes (nil if dir
// does not exist).
func dirFiles(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = fi.Size()
	}
	return out
}

// The instants a kill can land in, in the order gc passes them.
const (
	phStartup     = iota // the child had not said "start"; nothing touched
	phScan               // gc runs, nothing written yet (open, walking references)
	phWriteChunks        // chunks.compact being written
	phWriteIdx           // chunks.compact complete, chunks.idx.compact being written
	phSync               // both complete, no mark yet (fsyncs)
	phMarked             // the mark exists, nothing renamed yet
	phRenamed1           // the mark exists, chunks renamed, chunks.idx not
	phRenamed2           // the mark exists, both renamed
	phCompacted          // compaction finished, the cached archive untouched
	phRemoving           // the cached archive half removed
	phRemoved            // the cached archive gone, gc not finished
	phFinished           // the child finished before the kill
	numPhases
)

var phaseNames = [numPhases]string{"startup", "scan", "write chunks.compact", "write chunks.idx.compact", "sync (before commit)",
	"committed, no rename", "committed, chunks renamed", "committed, both renamed", "compacted", "removing cached", "cached removed", "finished"}

// phase tells from the files where gc was when it was killed.
func (fx *gcCrashFixture) phase(t *testing.T, store string, sawStart, finished bool) int {
	t.Helper()
	author := dirFiles(t, filepath.Join(store, "archives", fx.author.String()))
	cached := dirFiles(t, filepath.Join(store, "archives", fx.cached.String()))
	ctmp, hasCtmp := author[chunksFile+compactSuffix]
	itmp, hasItmp := author[chunkIndexFile+compactSuffix]
	_, marked := author[compactMark]
	switch {
	case finished:
		return phFinished
	case marked && hasCtmp:
		return phMarked
	case marked && hasItmp:
		return phRenamed1
	case marked:
		return phRenamed2
	case hasCtmp && (ctmp < fx.chunksGC || !hasItmp):
		return phWriteChunks
	case hasCtmp && itmp < fx.idxGC:
		return phWriteIdx
	case hasCtmp:
		return phSync
	case author[chunksFile] == fx.chunksGC && cached == nil:
		return phRemoved
	case author[chunksFile] == fx.chunksGC && maps.Equal(cached, fx.cachedFiles):
		return phCompacted
	case author[chunksFile] == fx.chunksGC:
		return phRemoving
	case author[chunksFile] != fx.chunks || author[chunkIndexFile] != fx.idx || !maps.Equal(cached, fx.cachedFiles):
		t.Fatalf("killed gc left a state no phase explains: author %v, cached %v", author, cached)
	case sawStart:
		return phScan
	}
	return phStartup
}

// check opens the author's archive (which finishes a committed compaction),
// reads every file of every version back and verifies the archive.
func (fx *gcCrashFixture) check(t *testing.T, s *Store, extra map[uint64]map[string][]byte, when string) {
	t.Helper()
	a, err := s.Open(fx.author, Options{})
	if err != nil {
		t.Fatalf("%s: open: %v", when, err)
	}
	defer a.Close()
	if _, err := os.Stat(filepath.Join(a.Dir(), compactMark)); err == nil {
		t.Fatalf("%s: the compact mark is still there after open", when)
	}
	if a.RolledBack() != 0 {
		t.Fatalf("%s: open rolled back %d versions", when, a.RolledBack())
	}
	// Verify (which reads the files as they are, now that the open has
	// finished any committed compaction) runs while the versions are read.
	var vr *VerifyReport
	var verr error
	verified := make(chan struct{})
	go func() {
		defer close(verified)
		vr, verr = Verify(context.Background(), a.Dir(), a.Key(), VerifyOptions{})
	}()
	defer func() { <-verified }() // never leave it running past a Fatal
	vs := a.Versions()
	if len(vs) != len(fx.expect)+len(extra) {
		t.Fatalf("%s: %d versions, want %d", when, len(vs), len(fx.expect)+len(extra))
	}
	read := map[uint64][]byte{} // put entry -> the bytes it read back as
	for _, sr := range vs {
		want, ok := fx.expect[sr.Length]
		if !ok {
			want, ok = extra[sr.Length]
		}
		if !ok {
			t.Fatalf("%s: unexpected version %d", when, sr.Length)
		}
		snap, err := a.Checkout(sr.Length)
		if err != nil {
			t.Fatalf("%s: checkout %d: %v", when, sr.Length, err)
		}
		if got := snap.Paths(); !slices.Equal(got, slices.Sorted(maps.Keys(want))) {
			t.Fatalf("%s: version %d holds %v, want %v", when, sr.Length, got, slices.Sorted(maps.Keys(want)))
		}
		for p, b := range want {
			st, _ := snap.File(p)
			got, ok := read[st.Seq]
			if !ok {
				got = readAll(t, snap, p)
				read[st.Seq] = got
			}
			if !bytes.Equal(got, b) {
				t.Fatalf("%s: version %d: %s reads back different (%d bytes, want %d)", when, sr.Length, p, len(got), len(b))
			}
		}
	}
	<-verified
	if verr != nil {
		t.Fatalf("%s: verify: %v", when, verr)
	}
	if !vr.OK() || len(vr.TornTails) > 0 {
		t.Fatalf("%s: verify: %v (torn tails %v)", when, vr.Problems, vr.TornTails)
	}
}

// write commits a new version after recovery, adds it and its files to
// extra and reads it back through a new handle.
func (fx *gcCrashFixture) write(t *testing.T, s *Store, extra map[uint64]map[string][]byte, changes map[string][]byte, when string) {
	t.Helper()
	a, err := s.Open(fx.author, Options{})
	if err != nil {
		t.Fatalf("%s: open to write: %v", when, err)
	}
	v := put(t, a, changes)
	a.Close()
	latest := uint64(0)
	for l := range fx.expect {
		latest = max(latest, l)
	}
	for l := range extra {
		latest = max(latest, l)
	}
	files := maps.Clone(fx.expect[latest])
	if files == nil {
		files = maps.Clone(extra[latest])
	}
	maps.Copy(files, changes)
	extra[v] = files
	b, err := s.Open(fx.author, Options{})
	if err != nil {
		t.Fatalf("%s: reopen after write: %v", when, err)
	}
	defer b.Close()
	if b.Version() != v {
		t.Fatalf("%s: reopened at version %d, committed %d", when, b.Version(), v)
	}
	for p, want := range changes {
		if got := readAll(t, b.Latest(), p); !bytes.Equal(got, want) {
			t.Fatalf("%s: %s written after recovery reads back different", when, p)
		}
	}
}

type gcChildResult struct {
	sawStart, finished bool
	elapsed            time.Duration // until "done", if it came before the kill
	triggered          time.Duration // until trigger said yes, if it did
	doneLine           string
}

// runGCChild runs gc in a child on the store in dir and kills it delay
// after it started (never, if delay < 0) or, with a trigger, delay after
// the trigger first reports true (it is polled in a busy loop).
func runGCChild(t *testing.T, dir string, delay time.Duration, trigger func() bool) gcChildResult {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestGCCrashChild$")
	cmd.Env = append(os.Environ(), gcCrashEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	started, done, eof := make(chan struct{}), make(chan string, 1), make(chan []string, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	go func() {
		var other []string
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			switch line := sc.Text(); {
			case line == "start":
				close(started)
			case strings.HasPrefix(line, "done"):
				done <- line
			default:
				other = append(other, line)
			}
		}
		eof <- other
	}()
	var res gcChildResult
	finish := func() { res.doneLine, res.elapsed = <-done, time.Since(began) }
	if delay >= 0 && trigger != nil {
	poll:
		for !trigger() {
			select {
			case res.doneLine = <-done:
				res.elapsed = time.Since(began)
				break poll
			default:
				if time.Since(began) > time.Minute {
					t.Fatal("the trigger never fired")
				}
			}
		}
		if res.doneLine == "" {
			res.triggered = time.Since(began)
		}
	}
	killed := false
	if res.doneLine == "" {
		if delay < 0 {
			finish()
		} else {
			timer := time.NewTimer(delay)
			select {
			case res.doneLine = <-done:
				res.elapsed = time.Since(began)
			case <-timer.C:
				cmd.Process.Signal(syscall.SIGKILL)
				killed = true
			}
			timer.Stop()
		}
	}
	select {
	case <-started:
		res.sawStart = true
	default:
	}
	other := <-eof
	err = cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
		res.finished = true
	case killed && errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL:
	default:
		t.Fatalf("gc child failed: %v\n%s\n%s", err, strings.Join(other, "\n"), stderr.Bytes())
	}
	if res.finished && res.doneLine == "" {
		select {
		case res.doneLine = <-done:
		default:
			t.Fatalf("gc child exited without saying done:\n%s\n%s", strings.Join(other, "\n"), stderr.Bytes())
		}
	}
	return res
}

// recoverAndCheck checks the store in dir after gc was killed in phase ph:
// every committed version is there, reads back the same and verifies; the
// next gc finishes the job and leaves nothing behind; the archive takes a
// new version (written before that gc or after it, by mode). It returns the
// cached archive's files if the kill left it half removed.
func (fx *gcCrashFixture) recoverAndCheck(t *testing.T, dir string, ph, mode int, when string) (half []string) {
	t.Helper()
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	cachedDir := s.ArchiveDir(fx.cached)
	cachedAfterKill := dirFiles(t, cachedDir)
	if cachedAfterKill != nil && !maps.Equal(cachedAfterKill, fx.cachedFiles) {
		half = slices.Sorted(maps.Keys(cachedAfterKill))
	}
	keys, err := s.Archives()
	if err != nil {
		t.Fatalf("%s: archives: %v", when, err)
	}
	want := []PublicKey{fx.author}
	if cachedAfterKill != nil {
		want = append(want, fx.cached)
	}
	if !slices.Equal(keys, want) {
		t.Fatalf("%s: archives %v, want %v", when, keys, want)
	}

	// Every committed version is there, reads back the same, verifies.
	extra := map[uint64]map[string][]byte{}
	fx.check(t, s, extra, when+", after the kill")
	if ph >= phMarked {
		for name := range dirFiles(t, s.ArchiveDir(fx.author)) {
			if strings.HasSuffix(name, compactSuffix) {
				t.Fatalf("%s: open left %s of a committed compaction", when, name)
			}
		}
	}

	// Write before the next gc (mode 2: the content of the last aborted
	// import, whose chunks, if not freed yet, are reused), or after it.
	changes := map[string][]byte{"/trial/new.bin": randomBytes(uint64(len(when)), 150_000), "/index.html": []byte(when)}
	if mode == 2 {
		changes = map[string][]byte{"/trial/revived.bin": fx.revive}
	}
	if mode != 0 {
		fx.write(t, s, extra, changes, when+", writing before the next gc")
	}

	// The next gc finishes the job.
	rep, err := s.GC(context.Background())
	if err != nil {
		t.Fatalf("%s: gc after the kill: %v", when, err)
	}
	wantChunks := 0
	if ph <= phSync {
		wantChunks = fx.garbage
		if mode == 2 {
			wantChunks -= fx.reviveChunks
		}
	}
	if rep.Chunks != wantChunks || len(rep.Skipped) != 0 || len(rep.Removed) != len(keys)-1 || rep.KeptArchive != 1 {
		t.Fatalf("%s: the gc after it freed %d chunks (want %d), removed %d, kept %d, skipped %d", when,
			rep.Chunks, wantChunks, len(rep.Removed), rep.KeptArchive, len(rep.Skipped))
	}
	for name := range dirFiles(t, s.ArchiveDir(fx.author)) {
		if name == compactMark || strings.HasSuffix(name, compactSuffix) {
			t.Fatalf("%s: %s left after a complete gc", when, name)
		}
	}
	if _, err := os.Stat(cachedDir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s: the cached archive survived a complete gc: %v", when, err)
	}
	if keys, err := s.Archives(); err != nil || !slices.Equal(keys, []PublicKey{fx.author}) {
		t.Fatalf("%s: archives after gc: %v %v", when, keys, err)
	}
	if mode == 0 {
		fx.write(t, s, extra, changes, when+", writing after the next gc")
	}
	fx.check(t, s, extra, when+", after the next gc")
	return half
}

// TestGCCrash kills gc with SIGKILL at random instants and checks that no
// committed version is lost, the archive verifies and reads back the same,
// the next gc finishes the job and the archive can be written again.
func TestGCCrash(t *testing.T) {
	trials := 50
	if testing.Short() {
		trials = 10
	}
	began := time.Now()
	root := t.TempDir()
	fx := newGCCrashFixture(t, filepath.Join(root, "template"))

	// Calibrate on two copies: how long does a whole gc take (the child's
	// start included), and what does a complete compaction leave?
	var span time.Duration
	var compacted [2][]byte // chunks and chunks.idx after a complete gc
	for i := range 2 {
		dir := filepath.Join(root, fmt.Sprint("calibrate", i))
		copyDir(t, fx.dir, dir)
		res := runGCChild(t, dir, -1, nil)
		if want := fmt.Sprintf("done chunks=%d removed=1 compacted=1 skipped=0", fx.garbage); res.doneLine != want {
			t.Fatalf("calibration gc said %q, want %q", res.doneLine, want)
		}
		span = res.elapsed
		for j, name := range []string{chunksFile, chunkIndexFile} {
			b, err := os.ReadFile(filepath.Join(dir, "archives", fx.author.String(), name))
			if err != nil {
				t.Fatal(err)
			}
			if i > 0 && !bytes.Equal(b, compacted[j]) {
				t.Fatalf("two complete gcs of the same store wrote different %s", name)
			}
			compacted[j] = b
		}
		os.RemoveAll(dir)
	}
	fx.chunksGC, fx.idxGC = int64(len(compacted[0])), int64(len(compacted[1]))
	t.Logf("template: %d versions, chunks %d -> %d bytes, %d garbage chunks; one gc (child start included) takes %v; setup %v",
		len(fx.expect), fx.chunks, fx.chunksGC, fx.garbage, span, time.Since(began).Round(time.Millisecond))

	// The instants too short for a kill to hit reliably, made by hand.
	t.Run("states", func(t *testing.T) { fx.killStates(t, filepath.Join(root, "states"), compacted[0], compacted[1]) })

	// Uniform trials spread kills over [0, 1.2 x span] after the child
	// starts. The fsyncs, the commit mark and the renames take a few
	// milliseconds of a run, and when they come varies from run to run by
	// more than that, so two kinds of triggered trials (a quarter as many
	// each) watch the archive's files and kill at a random instant of
	// [0, 1.2 x tail] after chunks.idx.compact is complete (the last write
	// before the fsyncs), tail being how long the rest of gc takes, or of
	// [0, 0.6 ms] after the "compact" mark appears (it lives for about a
	// millisecond).
	type kind struct {
		name   string
		want   int
		file   string        // the trigger: this file of the author's archive ...
		size   int64         // ... at this size (-1: exists)
		est    time.Duration // how long gc takes after the trigger (the start)
		fixed  bool          // est does not adapt
		n      int
		count  [numPhases]int
		delays [numPhases]time.Duration
	}
	uniform := &kind{name: "uniform", want: trials, est: span}
	kinds := []*kind{uniform,
		{name: "triggered by a complete chunks.idx.compact", want: trials / 4, file: chunkIndexFile + compactSuffix, size: fx.idxGC, est: span / 4},
		{name: "triggered by the compact mark", want: trials / 4, file: compactMark, size: -1, est: 500 * time.Microsecond, fixed: true}}
	inCompaction := func(k *kind) int {
		n := 0
		for ph := phWriteChunks; ph <= phRenamed2; ph++ {
			n += k.count[ph]
		}
		return n
	}
	budget := 30 * time.Second
	if raceEnabled {
		budget *= 4
	}
	rng := rand.New(rand.NewPCG(2026, 6))
	var halfCached []string
	for trial := 0; ; trial++ {
		// At least `trials` uniform trials and more (up to 3x, within the
		// time budget) until a quarter of them killed gc in the compaction's
		// writes and renames; the triggered ones in between.
		var k *kind
		for _, c := range kinds[1:] {
			if c.n < c.want && (trial%3 == 2 || uniform.n >= trials) && (k == nil || c.n < k.n) {
				k = c
			}
		}
		if k == nil && (uniform.n < trials || (inCompaction(uniform) < trials/4 && uniform.n < 3*trials && time.Since(began) < budget)) {
			k = uniform
		}
		if k == nil {
			break
		}
		k.n++
		dir := filepath.Join(root, fmt.Sprintf("trial%03d", trial))
		copyDir(t, fx.dir, dir)
		var trigger func() bool
		if k.file != "" {
			path := filepath.Join(dir, "archives", fx.author.String(), k.file)
			trigger = func() bool {
				fi, err := os.Stat(path)
				return err == nil && (k.size < 0 || fi.Size() == k.size)
			}
		}
		delay := time.Duration(rng.Int64N(int64(max(k.est*12/10, 100*time.Microsecond))))
		res := runGCChild(t, dir, delay, trigger)
		ph := fx.phase(t, dir, res.sawStart, res.finished)
		k.count[ph]++
		k.delays[ph] += delay
		// The windows follow the machine: a finished gc tells how long one
		// (or the rest of it after the trigger) takes; one still running
		// late in the window, that it takes longer.
		switch {
		case k.fixed:
		case res.elapsed == 0: // killed, or it exited as the kill came
			if !res.finished && delay > k.est {
				k.est = (k.est + delay*11/10) / 2
			}
		case trigger == nil:
			k.est = (k.est + res.elapsed) / 2
		case res.triggered > 0:
			k.est = (k.est + res.elapsed - res.triggered) / 2
		}
		when := fmt.Sprintf("trial %d (killed %v after the start, %s)", trial, delay.Round(time.Microsecond), phaseNames[ph])
		if trigger != nil {
			when = fmt.Sprintf("trial %d (killed %v after %s, %s)", trial, delay.Round(time.Microsecond), k.file, phaseNames[ph])
		}
		if half := fx.recoverAndCheck(t, dir, ph, trial%3, when); half != nil {
			halfCached = append(halfCached, fmt.Sprintf("%s: %v", when, half))
		}
		os.RemoveAll(dir)
	}

	n := 0
	for _, k := range kinds {
		var dist []string
		for ph := range numPhases {
			if k.count[ph] > 0 {
				dist = append(dist, fmt.Sprintf("%s %d (mean delay %v)", phaseNames[ph], k.count[ph], (k.delays[ph]/time.Duration(k.count[ph])).Round(100*time.Microsecond)))
			}
		}
		t.Logf("%d kills %s (final window %v), %d in the compaction's writes and renames: %s", k.n, k.name,
			(k.est * 12 / 10).Round(100*time.Microsecond), inCompaction(k), strings.Join(dist, ", "))
		n += k.n
	}
	t.Logf("%d trials in %v", n, time.Since(began).Round(time.Millisecond))
	t.Logf("%d kills left the cached archive half removed %v", len(halfCached), halfCached)
	if n := inCompaction(uniform); n < trials/5 {
		t.Fatalf("only %d of %d uniform kills landed in the compaction's writes and renames", n, uniform.n)
	}
}

// stateDir makes a copy of the template in dir whose author's archive holds
// files (name -> content) in place of the template's.
func (fx *gcCrashFixture) stateDir(t *testing.T, dir string, files map[string][]byte) string {
	t.Helper()
	copyDir(t, fx.dir, dir)
	ad := filepath.Join(dir, "archives", fx.author.String())
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(ad, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// killStates makes, on copies of the template, the files a kill leaves at
// each instant of a compaction (as compact and finishCompaction write them),
// and recovers from each as from a real kill. It also reports what Verify
// says of each before anything opens the archive.
func (fx *gcCrashFixture) killStates(t *testing.T, root string, chunks, idx []byte) {
	ctmp, itmp := chunksFile+compactSuffix, chunkIndexFile+compactSuffix
	half := func(b []byte) []byte { return b[:len(b)/2+7] } // cut mid-record
	for i, st := range []struct {
		ph    int
		files map[string][]byte
	}{
		{phWriteChunks, map[string][]byte{ctmp: half(chunks), itmp: {}}},
		{phWriteIdx, map[string][]byte{ctmp: chunks, itmp: half(idx)}},
		{phSync, map[string][]byte{ctmp: chunks, itmp: idx}},
		{phMarked, map[string][]byte{ctmp: chunks, itmp: idx, compactMark: {}}},
		{phRenamed1, map[string][]byte{chunksFile: chunks, itmp: idx, compactMark: {}}},
		{phRenamed2, map[string][]byte{chunksFile: chunks, chunkIndexFile: idx, compactMark: {}}},
		{phCompacted, map[string][]byte{chunksFile: chunks, chunkIndexFile: idx}},
	} {
		dir := fx.stateDir(t, filepath.Join(root, fmt.Sprint(i)), st.files)
		if ph := fx.phase(t, dir, true, false); ph != st.ph {
			t.Fatalf("state %d reads as %q, made as %q", i, phaseNames[ph], phaseNames[st.ph])
		}
		vr, err := Verify(context.Background(), filepath.Join(dir, "archives", fx.author.String()), fx.author, VerifyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		verdict := "OK"
		if !vr.OK() {
			verdict = fmt.Sprintf("%d problems, the first: %v", len(vr.Problems), vr.Problems[0])
		}
		t.Logf("made %q: Verify before the open finishes it: %s", phaseNames[st.ph], verdict)
		fx.recoverAndCheck(t, dir, st.ph, i%3, fmt.Sprintf("made state %q", phaseNames[st.ph]))
		os.RemoveAll(dir)
	}
}

// TestGCCrashHalfRemovedCache covers a kill in the middle of gc's
// os.RemoveAll of a cached archive, which the kills of TestGCCrash rarely
// hit: the files left are every prefix of the order the directory lists
// them in (os.RemoveAll's), and (unless -short) every single file missing
// or left alone. Store.Archives, gc and the author's archive must not mind;
// and a viewer that opens the half-removed archive before the next gc (view
// and seed use OpenReplica) and replicates it must be able to open it again.
func TestGCCrashHalfRemovedCache(t *testing.T) {
	root := t.TempDir()
	fx := newGCCrashFixture(t, filepath.Join(root, "template"))
	// What a complete gc leaves of the author's archive.
	dir := filepath.Join(root, "gc")
	copyDir(t, fx.dir, dir)
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := s.GC(context.Background()); err != nil || rep.Chunks != fx.garbage || len(rep.Removed) != 1 {
		t.Fatalf("gc: %+v %v", rep, err)
	}
	var compacted [2][]byte
	for j, name := range []string{chunksFile, chunkIndexFile} {
		if compacted[j], err = os.ReadFile(filepath.Join(s.ArchiveDir(fx.author), name)); err != nil {
			t.Fatal(err)
		}
	}
	fx.chunksGC, fx.idxGC = int64(len(compacted[0])), int64(len(compacted[1]))
	fx.halfRemoved(t, filepath.Join(root, "half"), compacted[0], compacted[1])
}

// halfRemoved leaves the cached archive half removed, after a complete
// compaction, in each way TestGCCrashHalfRemovedCache says, reports (and
// checks) what opening and replicating that archive does, then recovers as
// from a real kill.
func (fx *gcCrashFixture) halfRemoved(t *testing.T, root string, chunks, idx []byte) {
	var names []string
	{
		d, err := os.Open(filepath.Join(fx.stateDir(t, filepath.Join(root, "order"), nil), "archives", fx.cached.String()))
		if err != nil {
			t.Fatal(err)
		}
		names, err = d.Readdirnames(-1)
		d.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	var cases [][]string // the files removed
	for i := 1; i <= len(names); i++ {
		cases = append(cases, names[:i])
	}
	if !testing.Short() {
		for i, n := range names {
			cases = append(cases, []string{n}, slices.Delete(slices.Clone(names), i, i+1))
		}
	}
	seen := map[string]bool{}
	for i, removed := range cases {
		if k := strings.Join(slices.Sorted(slices.Values(removed)), " "); seen[k] {
			continue
		} else {
			seen[k] = true
		}
		dir := fx.stateDir(t, filepath.Join(root, fmt.Sprint(i)), map[string][]byte{chunksFile: chunks, chunkIndexFile: idx})
		cd := filepath.Join(dir, "archives", fx.cached.String())
		for _, n := range removed {
			if err := os.Remove(filepath.Join(cd, n)); err != nil {
				t.Fatal(err)
			}
		}
		left := slices.Sorted(maps.Keys(dirFiles(t, cd)))
		s, err := OpenStore(dir)
		if err != nil {
			t.Fatal(err)
		}
		// What a viewer finds: Store.Open (read-only), then OpenReplica
		// (what view and seed use), which may create files.
		var found []string
		if a, err := s.Open(fx.cached, Options{}); err != nil {
			found = append(found, "Open: "+err.Error())
		} else {
			found = append(found, fmt.Sprintf("Open: version %d, rolled back %d", a.Version(), a.RolledBack()))
			a.Close()
		}
		if a, err := s.OpenReplica(fx.cached, Options{}); err != nil {
			found = append(found, "OpenReplica: "+err.Error())
		} else {
			rolledAt, rolled := a.Version(), a.RolledBack()
			found = append(found, fmt.Sprintf("OpenReplica: version %d, rolled back %d", rolledAt, rolled))
			// The viewer gets the log from a peer: here, the template's copy.
			src, err := Open(filepath.Join(fx.dir, "archives", fx.cached.String()), fx.cached, Options{})
			if err != nil {
				t.Fatal(err)
			}
			var entries [][]byte
			for seq := a.Version(); seq < src.Version(); seq++ {
				b, err := src.EntryBytes(seq)
				if err != nil {
					t.Fatal(err)
				}
				entries = append(entries, b)
			}
			w, err := a.BeginSync(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			n, err := w.AppendVerified(entries, src.Versions())
			found = append(found, fmt.Sprintf("replicated %d entries (%v)", n, err))
			w.Close()
			a.Close()
			want := src.Version()
			src.Close()
			if b, err := s.OpenReplica(fx.cached, Options{}); err != nil {
				found = append(found, "reopen: "+err.Error())
				t.Errorf("cached archive left with %v by a killed gc: a viewer's OpenReplica opened it at version %d (%d signed versions rolled back), "+
					"replicated it from a peer, and now it does not open: %v", left, rolledAt, rolled, err)
			} else {
				found = append(found, fmt.Sprintf("reopen: version %d (want %d)", b.Version(), want))
				if b.Version() != want {
					t.Errorf("cached archive left with %v by a killed gc: replicated to version %d, reopens at %d", left, want, b.Version())
				}
				b.Close()
			}
		}
		t.Logf("cached archive left with %v: %s", left, strings.Join(found, "; "))
		fx.recoverAndCheck(t, dir, phRemoving, i%3, fmt.Sprintf("cached archive left with %v", left))
		os.RemoveAll(dir)
	}
}
