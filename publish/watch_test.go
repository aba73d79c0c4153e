package publish

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// noLeaks fails the test if, once its later cleanups (closing watchers) have
// run, more goroutines are left than when it was called.
func noLeaks(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(2 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Fatalf("%d goroutines left over (%d before):\n%s", runtime.NumGoroutine(), before, buf[:n])
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// startWatch watches dir for the rest of the test and checks that closing
// the watcher leaves no goroutine behind.
func startWatch(t *testing.T, dir string, opts WatchOptions) *Watcher {
	t.Helper()
	noLeaks(t)
	w, err := Watch(context.Background(), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Error(err)
		}
	})
	return w
}

// recorder reads a watcher's batches and keeps them all.
type recorder struct {
	t       *testing.T
	w       *Watcher
	batches []Batch
	seen    map[string]bool
	// check, if set, runs on every batch as it arrives, as the caller
	// would (stat the paths, import).
	check func(Batch)
}

func newRecorder(t *testing.T, w *Watcher) *recorder {
	return &recorder{t: t, w: w, seen: map[string]bool{}}
}

func (r *recorder) take(b Batch) {
	r.t.Helper()
	if !slices.IsSorted(b.Paths) || len(slices.Compact(slices.Clone(b.Paths))) != len(b.Paths) {
		r.t.Fatalf("batch paths not sorted and unique: %q", b.Paths)
	}
	if len(b.Paths) == 0 && !b.Full {
		r.t.Fatal("empty batch")
	}
	r.batches = append(r.batches, b)
	for _, p := range b.Paths {
		r.seen[p] = true
	}
	if r.check != nil {
		r.check(b)
	}
}

// until reads batches until cond holds for the batches seen so far.
func (r *recorder) until(what string, cond func() bool) {
	r.t.Helper()
	timeout := time.After(10 * time.Second)
	for !cond() {
		select {
		case b, ok := <-r.w.Batches():
			if !ok {
				r.t.Fatalf("waiting for %s: batches closed", what)
			}
			r.take(b)
		case <-timeout:
			r.t.Fatalf("waiting for %s: not seen; batches so far: %+v", what, r.batches)
		}
	}
}

// untilPaths waits until every path has been reported.
func (r *recorder) untilPaths(paths ...string) {
	r.t.Helper()
	r.until(fmt.Sprint(paths), func() bool {
		for _, p := range paths {
			if !r.seen[p] {
				return false
			}
		}
		return true
	})
}

// untilFull waits for a Full batch after the ones seen so far.
func (r *recorder) untilFull(what string) {
	r.t.Helper()
	n := len(r.batches)
	r.until(what, func() bool {
		for _, b := range r.batches[n:] {
			if b.Full {
				return true
			}
		}
		return false
	})
}

// quiet reads batches until none came for d.
func (r *recorder) quiet(d time.Duration) {
	r.t.Helper()
	for {
		select {
		case b, ok := <-r.w.Batches():
			if !ok {
				return
			}
			r.take(b)
		case <-time.After(d):
			return
		}
	}
}

// reset forgets the batches seen so far.
func (r *recorder) reset() {
	r.batches = nil
	r.seen = map[string]bool{}
}

func mustNot(t *testing.T, r *recorder, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if r.seen[p] {
			t.Errorf("%s was reported; batches: %+v", p, r.batches)
		}
	}
}

// Editors save by renaming and replacing. The caller stats every reported
// path when the batch arrives; the real file must then exist with the new
// content (a change, not a deletion), and the temporary names must not
// appear at all.
func TestWatchEditorSaves(t *testing.T) {
	saves := map[string]func(t *testing.T, p string, content []byte){
		// vim with writebackup: probe file 4913, rename to f~, create f,
		// write, chmod to the old mode, remove f~.
		"vim": func(t *testing.T, p string, content []byte) {
			probe := filepath.Join(filepath.Dir(p), "4913")
			must(t, os.WriteFile(probe, nil, 0o644))
			must(t, os.Remove(probe))
			must(t, os.Rename(p, p+"~"))
			must(t, os.WriteFile(p, content, 0o644))
			must(t, os.Chmod(p, 0o644))
			must(t, os.Remove(p+"~"))
		},
		// JetBrains "safe write".
		"jetbrains": func(t *testing.T, p string, content []byte) {
			must(t, os.WriteFile(p+"___jb_tmp___", content, 0o644))
			must(t, os.Rename(p, p+"___jb_old___"))
			must(t, os.Rename(p+"___jb_tmp___", p))
			must(t, os.Remove(p+"___jb_old___"))
		},
		// Write a hidden temporary file, rename it over the real one
		// (VS Code, Sublime, most atomic-write libraries).
		"temp+rename": func(t *testing.T, p string, content []byte) {
			tmp := filepath.Join(filepath.Dir(p), "."+filepath.Base(p)+".tmp")
			must(t, os.WriteFile(tmp, content, 0o644))
			must(t, os.Rename(tmp, p))
		},
	}
	for name, save := range saves {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			for _, rel := range []string{"index.html", "posts/hello.html"} {
				writeFile(t, filepath.Join(dir, rel), []byte("v0"))
			}
			w := startWatch(t, dir, WatchOptions{})
			r := newRecorder(t, w)
			var want string
			r.check = func(b Batch) {
				for _, p := range b.Paths {
					got, err := os.ReadFile(filepath.Join(dir, p))
					if err != nil {
						t.Errorf("%s reported while it does not exist (the caller would delete it): %v", p, err)
					} else if string(got) != want {
						t.Errorf("%s reported with %q, want %q (batch emitted mid-save)", p, got, want)
					}
				}
			}
			for i := 1; i <= 3; i++ {
				for _, rel := range []string{"index.html", "posts/hello.html"} {
					r.reset()
					want = fmt.Sprintf("v%d of %s", i, rel)
					save(t, filepath.Join(dir, rel), []byte(want))
					r.untilPaths(rel)
					r.quiet(50 * time.Millisecond)
					for p := range r.seen {
						if p != rel {
							t.Errorf("save %d of %s reported %s too", i, rel, p)
						}
					}
				}
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// A folder that appears already holding files makes no event for them
// (they were written before the watch on it existed), so the watcher walks
// it. Folders moved within the tree keep being watched under their new name.
func TestWatchNewFolders(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "index.html"), []byte("x"))
	w := startWatch(t, dir, WatchOptions{})
	r := newRecorder(t, w)

	// Built elsewhere, then moved in.
	outside := filepath.Join(t.TempDir(), "incoming")
	for _, rel := range []string{"a.html", "sub/b.html", "sub/deeper/c.html", "node_modules/x/y.js", ".git/HEAD"} {
		writeFile(t, filepath.Join(outside, rel), []byte(rel))
	}
	must(t, os.Rename(outside, filepath.Join(dir, "incoming")))
	r.untilPaths("incoming/a.html", "incoming/sub/b.html", "incoming/sub/deeper/c.html")
	writeFile(t, filepath.Join(dir, "incoming/sub/deeper/d.html"), []byte("d"))
	r.untilPaths("incoming/sub/deeper/d.html")

	// mkdir -p and write at once, before the watcher can add watches.
	for _, rel := range []string{"fresh/top.html", "fresh/x/y/1.html", "fresh/x/y/2.html", "fresh/x/z/3.html"} {
		writeFile(t, filepath.Join(dir, rel), []byte(rel))
	}
	r.untilPaths("fresh/top.html", "fresh/x/y/1.html", "fresh/x/y/2.html", "fresh/x/z/3.html")

	// Moved within the tree: the old name is reported (everything below it
	// may be gone), the files under the new one, and later changes come
	// under the new name only.
	must(t, os.Rename(filepath.Join(dir, "incoming"), filepath.Join(dir, "moved")))
	r.untilPaths("incoming", "moved/a.html", "moved/sub/b.html", "moved/sub/deeper/c.html", "moved/sub/deeper/d.html")
	r.reset()
	writeFile(t, filepath.Join(dir, "moved/sub/deeper/e.html"), []byte("e"))
	r.untilPaths("moved/sub/deeper/e.html")

	// Moved out of the tree: reported, and its watches no longer report.
	away := filepath.Join(t.TempDir(), "away")
	must(t, os.Rename(filepath.Join(dir, "moved"), away))
	r.untilPaths("moved")
	writeFile(t, filepath.Join(away, "sub/deeper/f.html"), []byte("f"))
	writeFile(t, filepath.Join(dir, "sentinel.html"), []byte("s"))
	r.untilPaths("sentinel.html")
	r.quiet(50 * time.Millisecond)
	for p := range r.seen {
		if strings.Contains(p, "f.html") {
			t.Errorf("a change outside the tree was reported as %s", p)
		}
		if strings.Contains(p, "node_modules") || strings.Contains(p, ".git") {
			t.Errorf("ignored %s reported", p)
		}
	}
	if got := w.WatchedFolders(); got != 5 { // root, fresh, fresh/x, fresh/x/y, fresh/x/z
		t.Errorf("watching %d folders, want 5", got)
	}
}

func TestWatchDeletes(t *testing.T) {
	dir := t.TempDir()
	for _, rel := range []string{"a.html", "b.html", "sub/b.html", "sub/c/d.html"} {
		writeFile(t, filepath.Join(dir, rel), []byte(rel))
	}
	w := startWatch(t, dir, WatchOptions{})
	r := newRecorder(t, w)
	must(t, os.Remove(filepath.Join(dir, "a.html")))
	r.untilPaths("a.html")
	must(t, os.RemoveAll(filepath.Join(dir, "sub")))
	r.untilPaths("sub")
	for p := range r.seen {
		if _, err := os.Stat(filepath.Join(dir, p)); err == nil {
			t.Errorf("%s reported but not deleted", p)
		}
	}
	// The folder comes back: watched again.
	writeFile(t, filepath.Join(dir, "sub/c/new.html"), []byte("new"))
	r.untilPaths("sub/c/new.html")
	writeFile(t, filepath.Join(dir, "sub/c/new2.html"), []byte("new"))
	r.untilPaths("sub/c/new2.html")
	mustNot(t, r, "b.html")
}

// nestedTree writes files files in each of fanout³ folders three deep
// (1,111 folders and 10,000 files for 10 and 10).
func nestedTree(t *testing.T, dir string, fanout, files int) {
	t.Helper()
	for i := range fanout {
		for j := range fanout {
			for k := range fanout {
				d := filepath.Join(dir, fmt.Sprintf("d%d/d%d/d%d", i, j, k))
				must(t, os.MkdirAll(d, 0o755))
				for f := range files {
					must(t, os.WriteFile(filepath.Join(d, fmt.Sprintf("f%d.html", f)), []byte("x"), 0o644))
				}
			}
		}
	}
}

func TestWatchLargeTree(t *testing.T) {
	dir := t.TempDir()
	start := time.Now()
	nestedTree(t, dir, 10, 10)
	// A node_modules must not cost a single watch.
	for i := range 50 {
		d := filepath.Join(dir, "node_modules", fmt.Sprintf("pkg%d/lib", i))
		must(t, os.MkdirAll(d, 0o755))
		for f := range 4 {
			must(t, os.WriteFile(filepath.Join(d, fmt.Sprintf("%d.js", f)), []byte("x"), 0o644))
		}
	}
	t.Logf("writing the tree took %s", time.Since(start))
	noLeaks(t)
	start = time.Now()
	w, err := Watch(context.Background(), dir, WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Cleanup(func() { w.Close() })
	t.Logf("watching 10,000 files in %d folders took %s to start", w.WatchedFolders(), took)
	if w.Polling() {
		t.Fatal("fell back to polling")
	}
	if got := w.WatchedFolders(); got != 1111 {
		t.Errorf("watching %d folders, want 1111 (none in node_modules)", got)
	}
	if took > 5*time.Second {
		t.Errorf("starting took %s", took)
	}
	r := newRecorder(t, w)
	writeFile(t, filepath.Join(dir, "d9/d8/d7/f3.html"), []byte("changed"))
	writeFile(t, filepath.Join(dir, "d0/d0/d0/new.html"), []byte("new"))
	writeFile(t, filepath.Join(dir, "node_modules/pkg7/lib/3.js"), []byte("changed"))
	writeFile(t, filepath.Join(dir, "node_modules/pkg7/new.js"), []byte("new"))
	r.untilPaths("d9/d8/d7/f3.html", "d0/d0/d0/new.html")
	r.quiet(50 * time.Millisecond)
	mustNot(t, r, "node_modules/pkg7/lib/3.js", "node_modules/pkg7/new.js")
	start = time.Now()
	must(t, w.Close())
	t.Logf("closing took %s", time.Since(start))
}

// 200 saves over about 100 ms must come out as one or a few batches, not
// 200 imports and reloads.
func TestWatchBurst(t *testing.T) {
	dir := t.TempDir()
	w := startWatch(t, dir, WatchOptions{})
	r := newRecorder(t, w)
	p := filepath.Join(dir, "burst.html")
	start := time.Now()
	for i := range 200 {
		must(t, os.WriteFile(p, []byte(fmt.Sprint("save ", i)), 0o644))
		// One save every 500µs, as far as the disk keeps up.
		if ahead := time.Until(start.Add(time.Duration(i+1) * 500 * time.Microsecond)); ahead > 0 {
			time.Sleep(ahead)
		}
	}
	took := time.Since(start)
	r.untilPaths("burst.html")
	r.quiet(200 * time.Millisecond)
	t.Logf("200 saves in %s gave %d batches", took, len(r.batches))
	limit := 5
	if took > time.Second {
		// A very slow disk stretches the burst; MaxDelay then rightly
		// cuts it into batches.
		limit = int(took/defaultMaxDelay) + 2
	}
	if len(r.batches) > limit {
		t.Errorf("%d batches for one burst of %s, want at most %d", len(r.batches), took, limit)
	}
}

// A steady stream of writes still produces batches, at most MaxDelay apart.
func TestWatchMaxDelay(t *testing.T) {
	dir := t.TempDir()
	w := startWatch(t, dir, WatchOptions{Debounce: 50 * time.Millisecond, MaxDelay: 100 * time.Millisecond})
	p := filepath.Join(dir, "log.html")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				os.WriteFile(p, []byte(fmt.Sprint(i)), 0o644)
			}
		}
	}()
	start := time.Now()
	var arrivals []time.Duration
	for len(arrivals) < 3 {
		select {
		case <-w.Batches():
			arrivals = append(arrivals, time.Since(start))
		case <-time.After(5 * time.Second):
			t.Fatalf("batches at %v, then none while writes kept coming", arrivals)
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("batches at %v", arrivals)
	if arrivals[2] > 2*time.Second {
		t.Errorf("3 batches took %v with MaxDelay 100ms", arrivals[2])
	}
}

func TestWatchIgnored(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, IgnoreFile), []byte("drafts/\n*.log\n"))
	writeFile(t, filepath.Join(dir, "docs", IgnoreFile), []byte("private.html\n"))
	writeFile(t, filepath.Join(dir, "node_modules/pkg/lib/index.js"), []byte("x"))
	writeFile(t, filepath.Join(dir, "drafts/old.html"), []byte("x"))
	writeFile(t, filepath.Join(dir, ".git/HEAD"), []byte("ref"))
	w := startWatch(t, dir, WatchOptions{})
	if got := w.WatchedFolders(); got != 2 { // the root and docs
		t.Errorf("watching %d folders, want 2", got)
	}
	r := newRecorder(t, w)
	ignored := []string{
		"node_modules/x.js", "node_modules/pkg/lib/index.js", "node_modules/new/y.js",
		".git/HEAD", ".git/objects/ab/cdef", ".env", ".index.html.swp", "index.html.swp",
		"drafts/post.html", "drafts/new/post.html", "debug.log", "docs/private.html", "4913",
	}
	for _, rel := range ignored {
		writeFile(t, filepath.Join(dir, rel), []byte("ignored"))
	}
	must(t, os.RemoveAll(filepath.Join(dir, "drafts")))
	must(t, os.RemoveAll(filepath.Join(dir, "node_modules")))
	writeFile(t, filepath.Join(dir, "docs/public.html"), []byte("x"))
	r.untilPaths("docs/public.html")
	r.quiet(100 * time.Millisecond)
	mustNot(t, r, append(ignored, "drafts", "node_modules", ".git")...)
	for _, b := range r.batches {
		if b.Full {
			t.Errorf("Full batch without a rule change: %+v", b)
		}
	}
}

// Changing a .datignore can hide or reveal whole folders: the watcher
// rescans and asks the caller to rescan too.
func TestWatchDatignoreChange(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, IgnoreFile), []byte("drafts/\n"))
	writeFile(t, filepath.Join(dir, "drafts/a.html"), []byte("a"))
	w := startWatch(t, dir, WatchOptions{})
	r := newRecorder(t, w)

	writeFile(t, filepath.Join(dir, "drafts/b.html"), []byte("b"))
	writeFile(t, filepath.Join(dir, "s1.html"), []byte("s"))
	r.untilPaths("s1.html")
	mustNot(t, r, "drafts/b.html")

	// Un-ignore drafts: Full, and drafts is watched from now on.
	writeFile(t, filepath.Join(dir, IgnoreFile), []byte("# nothing\n"))
	r.untilFull("a Full batch after emptying .datignore")
	r.reset()
	writeFile(t, filepath.Join(dir, "drafts/c.html"), []byte("c"))
	r.untilPaths("drafts/c.html")

	// Ignore it again: Full, and drafts is no longer reported.
	writeFile(t, filepath.Join(dir, IgnoreFile), []byte("drafts/\n"))
	r.untilFull("a Full batch after restoring .datignore")
	r.reset()
	writeFile(t, filepath.Join(dir, "drafts/d.html"), []byte("d"))
	writeFile(t, filepath.Join(dir, "s2.html"), []byte("s"))
	r.untilPaths("s2.html")
	r.quiet(50 * time.Millisecond)
	mustNot(t, r, "drafts/d.html")
	if got := w.WatchedFolders(); got != 1 {
		t.Errorf("watching %d folders, want 1", got)
	}

	// A folder moved in with its own .datignore: its rules apply at once.
	outside := filepath.Join(t.TempDir(), "theme")
	writeFile(t, filepath.Join(outside, IgnoreFile), []byte("*.scss\nsrc/\n"))
	writeFile(t, filepath.Join(outside, "main.scss"), []byte("x"))
	writeFile(t, filepath.Join(outside, "src/x.html"), []byte("x"))
	writeFile(t, filepath.Join(outside, "main.css"), []byte("x"))
	must(t, os.Rename(outside, filepath.Join(dir, "theme")))
	r.untilFull("a Full batch for a folder with a .datignore moved in")
	r.reset()
	writeFile(t, filepath.Join(dir, "theme/other.scss"), []byte("x"))
	writeFile(t, filepath.Join(dir, "theme/src/y.html"), []byte("x"))
	writeFile(t, filepath.Join(dir, "theme/main.css"), []byte("y"))
	r.untilPaths("theme/main.css")
	r.quiet(50 * time.Millisecond)
	mustNot(t, r, "theme/other.scss", "theme/src/y.html", "theme/main.scss", "theme/src/x.html")
}

func TestWatchClose(t *testing.T) {
	dir := t.TempDir()
	nestedTree(t, dir, 5, 2)
	t.Run("Close", func(t *testing.T) {
		noLeaks(t)
		w, err := Watch(context.Background(), dir, WatchOptions{})
		must(t, err)
		writeFile(t, filepath.Join(dir, "d1/d1/d1/x.html"), []byte("x"))
		start := time.Now()
		must(t, w.Close())
		t.Logf("Close took %s", time.Since(start))
		if took := time.Since(start); took > time.Second {
			t.Errorf("Close took %s", took)
		}
		if _, ok := <-w.Batches(); ok {
			// At most the batch that was ready; then closed.
			if _, ok := <-w.Batches(); ok {
				t.Error("batches still coming after Close")
			}
		}
		must(t, w.Close()) // twice is fine
	})
	t.Run("context", func(t *testing.T) {
		noLeaks(t)
		ctx, cancel := context.WithCancel(context.Background())
		w, err := Watch(ctx, dir, WatchOptions{})
		must(t, err)
		writeFile(t, filepath.Join(dir, "d2/d2/d2/x.html"), []byte("x"))
		start := time.Now()
		cancel()
		for range w.Batches() {
		}
		t.Logf("stopping took %s", time.Since(start))
		must(t, w.Close())
	})
	t.Run("polling", func(t *testing.T) {
		noLeaks(t)
		w, err := Watch(context.Background(), dir, WatchOptions{Poll: true, PollInterval: time.Millisecond})
		must(t, err)
		time.Sleep(20 * time.Millisecond)
		start := time.Now()
		must(t, w.Close())
		if took := time.Since(start); took > time.Second {
			t.Errorf("Close took %s", took)
		}
	})
	t.Run("missing root", func(t *testing.T) {
		noLeaks(t)
		if _, err := Watch(context.Background(), filepath.Join(dir, "nope"), WatchOptions{}); err == nil || !strings.Contains(err.Error(), "publish: watching") {
			t.Errorf("Watch of a missing folder: %v", err)
		}
	})
}

// pollingCases checks a watcher that polls: sizes, mtimes, modes,
// creations and deletions show up, ignored paths do not, rule changes give
// Full.
func pollingCases(t *testing.T, w *Watcher, dir string) {
	t.Helper()
	r := newRecorder(t, w)
	writeFile(t, filepath.Join(dir, "new.html"), []byte("new"))
	writeFile(t, filepath.Join(dir, "fresh/x/y.html"), []byte("y"))
	writeFile(t, filepath.Join(dir, "node_modules/x.js"), []byte("x"))
	writeFile(t, filepath.Join(dir, "a.swp"), []byte("x"))
	r.untilPaths("new.html", "fresh/x/y.html")

	must(t, os.WriteFile(filepath.Join(dir, "new.html"), []byte("longer content"), 0o644))
	r.reset()
	r.untilPaths("new.html")
	future := time.Now().Add(time.Hour)
	must(t, os.Chtimes(filepath.Join(dir, "fresh/x/y.html"), future, future)) // same size
	r.untilPaths("fresh/x/y.html")
	must(t, os.Chmod(filepath.Join(dir, "new.html"), 0o755))
	r.reset()
	r.untilPaths("new.html")
	must(t, os.Remove(filepath.Join(dir, "new.html")))
	r.reset()
	r.untilPaths("new.html")
	writeFile(t, filepath.Join(dir, IgnoreFile), []byte("fresh/\n"))
	r.untilFull("Full after a .datignore change")
	mustNot(t, r, "node_modules/x.js", "a.swp", IgnoreFile)
}

func TestWatchPolling(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "index.html"), []byte("x"))
	var mu sync.Mutex
	var warnings []string
	w := startWatch(t, dir, WatchOptions{Poll: true, PollInterval: 20 * time.Millisecond, Warn: func(m string) {
		mu.Lock()
		warnings = append(warnings, m)
		mu.Unlock()
	}})
	if !w.Polling() {
		t.Fatal("not polling")
	}
	r := newRecorder(t, w)
	r.untilFull("the Full batch polling starts with")
	pollingCases(t, w, dir)
	mu.Lock()
	defer mu.Unlock()
	if len(warnings) != 0 {
		t.Errorf("polling on request warned: %q", warnings)
	}
}

// setInotifySysctl writes one of /proc/sys/fs/inotify's limits and returns
// a function that restores it (also run at cleanup). The write needs root;
// without it the test is skipped, except in CI.
func setInotifySysctl(t *testing.T, name string, v int) (restore func()) {
	t.Helper()
	file := "/proc/sys/fs/inotify/" + name
	old, err := os.ReadFile(file)
	if err == nil {
		err = os.WriteFile(file, []byte(fmt.Sprint(v)), 0o644)
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("cannot lower %s: %v", file, err)
		}
		t.Skipf("cannot lower %s (needs root on Linux): %v", file, err)
	}
	var once sync.Once
	restore = func() {
		once.Do(func() {
			if err := os.WriteFile(file, old, 0o644); err != nil {
				t.Errorf("restoring %s: %v", file, err)
			}
		})
	}
	t.Cleanup(restore)
	return restore
}

// Running out of inotify watches (ENOSPC) falls back to polling with a
// warning that gives the commands to fix it.
func TestWatchLimitFallsBackToPolling(t *testing.T) {
	dir := t.TempDir()
	for _, rel := range []string{"a/x.html", "b/x.html", "c/d/x.html", "index.html"} {
		writeFile(t, filepath.Join(dir, rel), []byte("x"))
	}
	warnings := make(chan string, 10)
	opts := WatchOptions{PollInterval: 20 * time.Millisecond, Warn: func(m string) { warnings <- m }}
	// The limit is per user and shared with every process: lower it only
	// for as long as Watch takes to hit it.
	restore := setInotifySysctl(t, "max_user_watches", 1)
	w := startWatch(t, dir, opts)
	restore()
	if !w.Polling() {
		t.Fatal("not polling with max_user_watches=1")
	}
	select {
	case m := <-warnings:
		t.Logf("warning: %s", m)
		for _, want := range []string{"max_user_watches", "sudo sysctl fs.inotify.max_user_watches=", "/etc/sysctl.d/", "polling", dir} {
			if !strings.Contains(m, want) {
				t.Errorf("warning lacks %q", want)
			}
		}
		if strings.Contains(m, "\n") {
			t.Error("warning is more than one line")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no warning")
	}
	if w.WatchedFolders() != 0 {
		t.Errorf("%d folders watched while polling", w.WatchedFolders())
	}
	r := newRecorder(t, w)
	r.untilFull("the Full batch polling starts with")
	pollingCases(t, w, dir)
}

// A kernel queue overflow loses events: the caller must rescan. The queue
// fills while the watcher is busy adding watches on a big folder that was
// moved in (an unpacked archive, an npm install) and writes keep coming.
func TestWatchOverflowGivesFull(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "big")
	nestedTree(t, outside, 8, 0)
	restore := setInotifySysctl(t, "max_queued_events", 16)
	stall := make(chan struct{})
	w := startWatch(t, dir, WatchOptions{stall: stall})
	restore()
	r := newRecorder(t, w)
	// Nobody reads the kernel's queue while the watcher is held: it
	// overflows for sure.
	must(t, os.Rename(outside, filepath.Join(dir, "big")))
	for i := range 500 {
		must(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d.html", i)), nil, 0o644))
	}
	close(stall)
	r.untilFull("a Full batch after overflowing a 16-event queue")
	if w.Polling() {
		t.Fatal("fell back to polling")
	}
	// The watches survive an overflow, and the folders whose creation was
	// lost are watched after the rescan.
	r.reset()
	writeFile(t, filepath.Join(dir, "later/x.html"), []byte("x"))
	writeFile(t, filepath.Join(dir, "big/d7/d7/d7/x.html"), []byte("x"))
	r.untilPaths("later/x.html", "big/d7/d7/d7/x.html")
}

func TestRemoteFileSystems(t *testing.T) {
	for magic, remote := range map[uint32]bool{
		0x6969: true, 0x517B: true, 0xFF534D42: true, 0xFE534D42: true, 0x01021997: true,
		0x65735546: true, 0x786F4256: true, 0x00C36400: true, 0x5346414F: true,
		0xEF53: false, 0x58465342: false, 0x9123683E: false, 0x01021994: false, // ext4, xfs, btrfs, tmpfs
	} {
		if got := remoteFSName(magic) != ""; got != remote {
			t.Errorf("0x%X: remote = %v, want %v", magic, got, remote)
		}
	}
	if magic, ok := fsMagic(t.TempDir()); ok {
		t.Logf("the temp folder is on file system 0x%X (%q)", magic, remoteFSName(magic))
	} else if runtime.GOOS == "linux" {
		t.Error("no statfs on Linux")
	}
}

// BenchmarkWatchLatency measures a save until its batch arrives, with the
// default options: about the debounce.
func BenchmarkWatchLatency(b *testing.B) {
	dir := b.TempDir()
	w, err := Watch(context.Background(), dir, WatchOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	p := filepath.Join(dir, "index.html")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := os.WriteFile(p, []byte(fmt.Sprint(i)), 0o644); err != nil {
			b.Fatal(err)
		}
		for batch := range w.Batches() {
			if slices.Contains(batch.Paths, "index.html") {
				break
			}
		}
	}
}
