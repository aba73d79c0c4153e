package publish

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Defaults of WatchOptions. The debounce is short because the serve command
// imports and reloads browsers after every batch and the whole save→reload
// path must stay well under 50 ms; it only has to be longer than the gaps
// inside one editor save (rename, create, write, remove: microseconds).
const (
	defaultDebounce     = 4 * time.Millisecond
	defaultMaxDelay     = 250 * time.Millisecond
	defaultPollInterval = 500 * time.Millisecond
)

// WatchOptions tune Watch.
type WatchOptions struct {
	Debounce     time.Duration // trailing quiet time before a batch is emitted; 0 means 4ms
	MaxDelay     time.Duration // a batch is emitted at most this long after its first event even if events keep coming; 0 means 250ms
	Poll         bool          // poll instead of using inotify
	PollInterval time.Duration // 0 means 500ms
	// Warn is called (from the watcher goroutine) with a one-line message when
	// watching degrades, e.g. inotify's watch limit is hit or the folder is on a
	// network file system, saying exactly why and what to do (for the watch limit:
	// the exact `sudo sysctl fs.inotify.max_user_watches=...` command and how to make it
	// permanent), and that beaker-dev falls back to polling. May be nil.
	Warn func(msg string)

	// stall, in tests, holds the watcher before it reads its first event
	// until the channel is closed, so the kernel's queue can be made to
	// overflow deterministically.
	stall chan struct{}
}

// Batch is one debounced set of changes.
type Batch struct {
	// Paths are slash-separated paths relative to the root that may have
	// changed: created, written, removed or renamed; sorted, unique, ignored
	// paths already dropped. A path may no longer exist (the caller stats
	// it, so an editor's rename-and-replace save is simply a change). A
	// folder that was removed or renamed away is reported as the folder's
	// own path: everything below it may be gone. A folder that appeared is
	// reported as the files already inside it.
	Paths []string
	// Full says the watcher lost track (event queue overflow, the ignore
	// rules changed, polling just started): the caller must rescan the whole
	// folder. Paths may still list some of the changes.
	Full bool
	// First is when the first event of the batch arrived: about when the
	// save happened, for save-to-paint times.
	First time.Time
}

// Watcher watches a folder tree. It owns one goroutine (plus fsnotify's
// reader while inotify is in use); Close or the end of the context passed to
// Watch stops both.
type Watcher struct {
	batches chan Batch
	cancel  context.CancelFunc
	done    chan struct{} // closed when the goroutine has returned
	err     error         // from closing fsnotify; read after done
	polling atomic.Bool
	folders atomic.Int64
}

// Batches returns the debounced batches. It is closed when the watcher
// stops. A batch that the caller is slow to take keeps absorbing later
// changes, so a busy caller gets fewer, larger batches and loses nothing.
func (w *Watcher) Batches() <-chan Batch { return w.batches }

// Polling reports whether the watcher fell back to polling (or was asked
// to poll).
func (w *Watcher) Polling() bool { return w.polling.Load() }

// WatchedFolders is the number of folders with an inotify watch, for
// status lines ("watching 1,204 folders"); 0 while polling.
func (w *Watcher) WatchedFolders() int { return int(w.folders.Load()) }

// Close stops the watcher and waits for its goroutines. It may be called
// more than once, and after the context ended.
func (w *Watcher) Close() error {
	w.cancel()
	<-w.done
	return w.err
}

// Watch starts watching root (recursively) until ctx is done or Close is
// called. The watches are in place when it returns: a change made after
// Watch returns is reported.
func Watch(ctx context.Context, root string, opts WatchOptions) (*Watcher, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("publish: watching %s: %w", root, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("publish: watching %s: %w", root, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("publish: watching %s: not a folder", root)
	}
	if opts.Debounce <= 0 {
		opts.Debounce = defaultDebounce
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = defaultMaxDelay
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = defaultPollInterval
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &Watcher{batches: make(chan Batch), cancel: cancel, done: make(chan struct{})}
	l := &watchLoop{
		w:       w,
		root:    abs,
		prefix:  strings.TrimSuffix(abs, string(filepath.Separator)) + string(filepath.Separator),
		opts:    opts,
		ig:      NewIgnore(),
		dirs:    map[string]bool{},
		ignored: map[string]bool{},
		rules:   map[string]bool{},
		pending: map[string]bool{},
		timer:   time.NewTimer(time.Hour),
	}
	l.timer.Stop()
	if err := l.start(ctx); err != nil {
		cancel()
		return nil, err
	}
	go func() {
		defer close(w.done)
		w.err = l.run(ctx)
	}()
	return w, nil
}

// watchLoop is the state of one watcher. After Watch returns, only the
// watcher goroutine touches it, so it needs no locks.
type watchLoop struct {
	w      *Watcher
	root   string // absolute
	prefix string // root with a trailing separator, to cut event names
	opts   WatchOptions

	fsw     *fsnotify.Watcher // nil while polling
	ig      *Ignore
	dirs    map[string]bool // folders with a watch, "" for the root
	ignored map[string]bool // ignored folders seen in watched ones: their removal is not reported
	rules   map[string]bool // watched folders holding a .datignore

	// Polling state.
	pollTimer *time.Timer // nil unless polling
	snap      map[string]pollStat
	ruleText  string // every .datignore, to notice rule changes

	// The batch being collected, and the one waiting for the caller.
	pending map[string]bool
	full    bool
	resync  bool // rescan the tree (new rules, lost events) before emitting
	armed   bool // the timer runs for the pending batch
	first   time.Time
	timer   *time.Timer
	ready   *Batch

	started  bool     // the goroutine runs: Warn may be called
	warnings []string // said before it ran
}

type pollStat struct {
	size  int64
	mtime int64
	mode  fs.FileMode
}

// start sets up inotify, or polling when inotify cannot serve this folder.
func (l *watchLoop) start(ctx context.Context) error {
	if l.opts.Poll {
		l.startPolling(ctx)
		return nil
	}
	if magic, ok := fsMagic(l.root); ok {
		if kind := remoteFSName(magic); kind != "" {
			l.fallback(ctx, fmt.Sprintf("publish: watching %s: the folder is on %s (file system type 0x%X), where inotify misses changes made from the other side, so beaker-dev polls it every %s instead, which notices changes later; for instant reloads keep the site on a local disk (on WSL2: in the Linux file system, e.g. under ~, not under /mnt/c)",
				l.root, kind, magic, l.opts.PollInterval))
			return nil
		}
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		l.fallback(ctx, l.noInotifyMessage(err))
		return nil
	}
	l.fsw = fsw
	if err := l.rescan(ctx); err != nil {
		if isLimit(err) {
			l.fallback(ctx, l.noInotifyMessage(err))
			return nil
		}
		fsw.Close()
		return err
	}
	return nil
}

// run is the watcher goroutine: one select drains fsnotify's events and
// errors, fires the debounce and poll timers and hands batches over, so no
// channel can fill up and stall the kernel queue behind it.
func (l *watchLoop) run(ctx context.Context) error {
	defer close(l.w.batches)
	defer l.timer.Stop()
	l.started = true
	for _, m := range l.warnings {
		l.warn(m)
	}
	l.warnings = nil
	if l.opts.stall != nil {
		select {
		case <-l.opts.stall:
		case <-ctx.Done():
		}
	}
	for {
		var events <-chan fsnotify.Event
		var errs <-chan error
		if l.fsw != nil {
			events, errs = l.fsw.Events, l.fsw.Errors
		}
		var poll <-chan time.Time
		if l.pollTimer != nil {
			poll = l.pollTimer.C
		}
		var out chan<- Batch
		var b Batch
		if l.ready != nil {
			out, b = l.w.batches, *l.ready
		}
		select {
		case <-ctx.Done():
			if l.pollTimer != nil {
				l.pollTimer.Stop()
			}
			if l.fsw != nil {
				if err := l.fsw.Close(); err != nil {
					return fmt.Errorf("publish: watching %s: %w", l.root, err)
				}
			}
			return nil
		case ev, ok := <-events:
			if !ok {
				l.fallback(ctx, fmt.Sprintf("publish: watching %s: inotify stopped unexpectedly, so beaker-dev falls back to polling every %s", l.root, l.opts.PollInterval))
				continue
			}
			l.handle(ctx, ev)
		case err, ok := <-errs:
			switch {
			case !ok:
				l.fallback(ctx, fmt.Sprintf("publish: watching %s: inotify stopped unexpectedly, so beaker-dev falls back to polling every %s", l.root, l.opts.PollInterval))
			case errors.Is(err, fsnotify.ErrEventOverflow):
				// Events were dropped, folder creations among them
				// perhaps: rescan to add the missing watches.
				l.resync = true
				l.markFull()
			default:
				l.warn(fmt.Sprintf("publish: watching %s: %v", l.root, err))
			}
		case <-l.timer.C:
			l.flush(ctx)
		case <-poll:
			l.poll(ctx)
			if l.pollTimer != nil {
				l.pollTimer.Reset(l.opts.PollInterval)
			}
		case out <- b:
			l.ready = nil
		}
	}
}

// handle turns one fsnotify event into pending paths.
func (l *watchLoop) handle(ctx context.Context, ev fsnotify.Event) {
	// Chmod alone: touch, chmod, or a hard link's count changing. The
	// content is the same.
	if ev.Op&^fsnotify.Chmod == 0 {
		return
	}
	rel, ok := l.rel(ev.Name)
	if !ok {
		return
	}
	if rel == "" {
		// The root itself was removed or moved away.
		l.markFull()
		return
	}
	parent := path.Dir(rel)
	if parent == "." {
		parent = ""
	}
	if !l.dirs[parent] {
		// Queued by a watch already removed (its folder was moved away or
		// became ignored): a rescan or the new folder's walk covers it.
		return
	}
	if path.Base(rel) == IgnoreFile {
		// New rules can hide or reveal whole folders: rescan once the
		// burst is over and have the caller rescan too.
		l.resync = true
		l.markFull()
		return
	}
	if ev.Has(fsnotify.Create) {
		if fi, err := os.Lstat(ev.Name); err == nil && fi.IsDir() {
			if l.ig.Match(rel, true) {
				l.ignored[rel] = true
				return
			}
			// Files written into the folder before its watch is added
			// make no event: walk it now and report what is there.
			if err := l.addTree(ctx, rel); err != nil && isLimit(err) {
				l.fallback(ctx, l.noInotifyMessage(err))
			}
			return
		}
	}
	if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
		if l.dirs[rel] {
			l.dropTree(rel)
			l.note(rel)
			return
		}
		if l.ignored[rel] {
			delete(l.ignored, rel)
			return
		}
	}
	// A file written, created, removed or renamed (either end: a rename
	// away is reported too, and the caller finds out by stat whether the
	// editor put a new file in its place).
	if !l.ig.Match(rel, false) {
		l.note(rel)
	}
}

// rel converts an event's name to a slash-separated path relative to the
// root ("" for the root itself).
func (l *watchLoop) rel(name string) (string, bool) {
	if name == l.root {
		return "", true
	}
	if !strings.HasPrefix(name, l.prefix) {
		return "", false
	}
	return filepath.ToSlash(name[len(l.prefix):]), true
}

func (l *watchLoop) abs(rel string) string {
	return filepath.Join(l.root, filepath.FromSlash(rel))
}

// addWatch adds an inotify watch on folder rel. It returns false without
// an error when the folder vanished or cannot be read (it is then left
// out, as the importer leaves it out), and an error for the root or for a
// limit, which makes the caller fall back to polling.
func (l *watchLoop) addWatch(rel string) (bool, error) {
	err := l.fsw.Add(l.abs(rel))
	switch {
	case err == nil:
		return true, nil
	case isLimit(err):
		return false, fmt.Errorf("publish: watching %s: %w", l.abs(rel), err)
	case rel == "":
		return false, fmt.Errorf("publish: watching %s: %w", l.root, err)
	}
	return false, nil
}

// addTree watches a folder that appeared (created, or moved in) and every
// folder below it, and reports the files already there. The watch goes on
// before the listing, so a file is either listed or makes an event.
func (l *watchLoop) addTree(ctx context.Context, rel string) error {
	newRules := false
	err := walkTree(ctx, l.root, rel, l.ig, treeVisitor{
		dir: func(d string) (bool, error) {
			ok, err := l.addWatch(d)
			if ok {
				l.dirs[d] = true
			}
			return ok, err
		},
		file:       func(f string, _ fs.DirEntry) { l.note(f) },
		ignoredDir: func(d string) { l.ignored[d] = true },
		rules: func(d string, _ []byte) {
			l.rules[d] = true
			newRules = true
		},
	})
	l.w.folders.Store(int64(len(l.dirs)))
	if newRules {
		l.resync = true
		l.markFull()
	}
	return err
}

// dropTree forgets folder rel and the folders below it, which were removed
// or moved away. Watches on folders moved out of the tree would otherwise
// keep reporting under their old names.
func (l *watchLoop) dropTree(rel string) {
	under := rel + "/"
	for d := range l.dirs {
		if d == rel || strings.HasPrefix(d, under) {
			delete(l.dirs, d)
			// Fails harmlessly when the kernel already dropped it.
			l.fsw.Remove(l.abs(d))
			if l.rules[d] {
				delete(l.rules, d)
				l.resync = true
				l.markFull()
			}
		}
	}
	for d := range l.ignored {
		if strings.HasPrefix(d, under) {
			delete(l.ignored, d)
		}
	}
	l.w.folders.Store(int64(len(l.dirs)))
}

// rescan walks the whole tree with freshly read rules, the way the importer
// does, adds watches on folders that lack one and removes those on folders
// now ignored.
func (l *watchLoop) rescan(ctx context.Context) error {
	ig := NewIgnore()
	dirs := map[string]bool{}
	ignored := map[string]bool{}
	rules := map[string]bool{}
	err := walkTree(ctx, l.root, "", ig, treeVisitor{
		dir: func(d string) (bool, error) {
			if !l.dirs[d] {
				if ok, err := l.addWatch(d); !ok {
					return false, err
				}
			}
			dirs[d] = true
			return true, nil
		},
		ignoredDir: func(d string) { ignored[d] = true },
		rules:      func(d string, _ []byte) { rules[d] = true },
	})
	if err != nil {
		if isLimit(err) {
			l.dirs = dirs // for the count in the fallback's message
		}
		return err
	}
	for d := range l.dirs {
		if !dirs[d] {
			l.fsw.Remove(l.abs(d))
		}
	}
	l.ig, l.dirs, l.ignored, l.rules = ig, dirs, ignored, rules
	l.w.folders.Store(int64(len(dirs)))
	return nil
}

// note adds a changed path to the pending batch.
func (l *watchLoop) note(rel string) {
	l.pending[rel] = true
	l.arm()
}

func (l *watchLoop) markFull() {
	l.full = true
	l.arm()
}

// arm (re)starts the debounce timer: Debounce after this event, but no
// later than MaxDelay after the batch's first event, so a steady stream of
// writes (a build tool, a log) still reloads now and then.
func (l *watchLoop) arm() {
	now := time.Now()
	if !l.armed {
		l.first, l.armed = now, true
	}
	wait := min(l.opts.Debounce, l.first.Add(l.opts.MaxDelay).Sub(now))
	l.timer.Reset(wait)
}

// flush moves the pending changes into the batch waiting for the caller.
func (l *watchLoop) flush(ctx context.Context) {
	l.armed = false
	if l.resync && l.fsw != nil {
		l.resync = false
		if err := l.rescan(ctx); err != nil {
			if isLimit(err) {
				l.fallback(ctx, l.noInotifyMessage(err))
			} else {
				l.warn(err.Error())
			}
		}
		// The rules changed: drop what they now exclude.
		for p := range l.pending {
			if l.ig.Match(p, l.dirs[p] || l.ignored[p]) {
				delete(l.pending, p)
			}
		}
	}
	l.resync = false
	if len(l.pending) == 0 && !l.full {
		return
	}
	paths := make([]string, 0, len(l.pending))
	for p := range l.pending {
		paths = append(paths, p)
	}
	full, first := l.full, l.first
	clear(l.pending)
	l.full = false
	if l.ready != nil {
		// The caller has not taken the last batch yet: it gets both in one.
		paths = append(paths, l.ready.Paths...)
		full = full || l.ready.Full
		first = l.ready.First
	}
	slices.Sort(paths)
	l.ready = &Batch{Paths: slices.Compact(paths), Full: full, First: first}
}

// fallback gives up on inotify for polling and says why.
func (l *watchLoop) fallback(ctx context.Context, msg string) {
	if l.fsw != nil {
		l.fsw.Close()
		l.fsw = nil
	}
	clear(l.dirs)
	clear(l.ignored)
	clear(l.rules)
	l.w.folders.Store(0)
	l.warn(msg)
	l.startPolling(ctx)
}

func (l *watchLoop) warn(msg string) {
	if !l.started {
		l.warnings = append(l.warnings, msg)
		return
	}
	if l.opts.Warn != nil {
		l.opts.Warn(msg)
	}
}

// startPolling takes the snapshot later polls compare with. Changes made
// before it may have been missed, so the first batch is Full.
func (l *watchLoop) startPolling(ctx context.Context) {
	l.w.polling.Store(true)
	l.resync = false
	snap, text, ig, err := l.snapshot(ctx)
	if err != nil {
		snap = map[string]pollStat{}
	}
	l.snap, l.ruleText, l.ig = snap, text, ig
	l.pollTimer = time.NewTimer(l.opts.PollInterval)
	l.markFull()
}

// poll compares the tree with the last snapshot.
func (l *watchLoop) poll(ctx context.Context) {
	snap, text, ig, err := l.snapshot(ctx)
	if err != nil {
		// The root cannot be read (a network hiccup, or it is gone):
		// keep the old snapshot rather than report every file deleted.
		return
	}
	if text != l.ruleText {
		l.markFull()
	}
	for p, st := range snap {
		if old, ok := l.snap[p]; !ok || old != st {
			l.note(p)
		}
	}
	for p := range l.snap {
		if _, ok := snap[p]; !ok {
			l.note(p)
		}
	}
	l.snap, l.ruleText, l.ig = snap, text, ig
}

// snapshot stats every file the importer would publish.
func (l *watchLoop) snapshot(ctx context.Context) (map[string]pollStat, string, *Ignore, error) {
	ig := NewIgnore()
	snap := make(map[string]pollStat, len(l.snap))
	var text strings.Builder
	err := walkTree(ctx, l.root, "", ig, treeVisitor{
		file: func(rel string, e fs.DirEntry) {
			var fi fs.FileInfo
			var err error
			if e.Type()&fs.ModeSymlink != 0 {
				fi, err = os.Stat(l.abs(rel))
			} else {
				fi, err = e.Info()
			}
			if err != nil || !fi.Mode().IsRegular() {
				return
			}
			snap[rel] = pollStat{size: fi.Size(), mtime: fi.ModTime().UnixNano(), mode: fi.Mode()}
		},
		rules: func(d string, b []byte) {
			text.WriteString(d)
			text.WriteByte(0)
			text.Write(b)
			text.WriteByte(0)
		},
	})
	return snap, text.String(), ig, err
}

// treeVisitor receives what walkTree finds. Nil fields are skipped.
type treeVisitor struct {
	dir        func(rel string) (descend bool, err error) // a folder, before it is listed
	file       func(rel string, e fs.DirEntry)            // a regular file or symlink
	ignoredDir func(rel string)                           // an ignored folder, not entered
	rules      func(rel string, content []byte)           // a folder's .datignore, already added to ig
}

// walkTree walks folder rel of root and the folders below it that ig does
// not exclude, as the importer's scan does: a folder's .datignore is added
// to ig before its entries are matched, so parents come before children.
// Ignored folders are never entered (node_modules can be huge). A folder
// that cannot be listed is skipped, except the root.
func walkTree(ctx context.Context, root, rel string, ig *Ignore, v treeVisitor) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if v.dir != nil {
		descend, err := v.dir(rel)
		if err != nil || !descend {
			return err
		}
	}
	abs := filepath.Join(root, filepath.FromSlash(rel))
	ents, err := os.ReadDir(abs)
	if err != nil {
		if rel == "" {
			return fmt.Errorf("publish: watching %s: %w", root, err)
		}
		return nil
	}
	for _, e := range ents {
		if e.Name() == IgnoreFile && !e.IsDir() {
			if b, err := os.ReadFile(filepath.Join(abs, IgnoreFile)); err == nil {
				ig.Add(rel, b)
				if v.rules != nil {
					v.rules(rel, b)
				}
			}
			break
		}
	}
	for _, e := range ents {
		crel := path.Join(rel, e.Name())
		isDir := e.IsDir()
		if ig.Match(crel, isDir) {
			if isDir && v.ignoredDir != nil {
				v.ignoredDir(crel)
			}
			continue
		}
		switch {
		case isDir:
			if err := walkTree(ctx, root, crel, ig, v); err != nil {
				return err
			}
		case e.Type().IsRegular() || e.Type()&fs.ModeSymlink != 0:
			if v.file != nil {
				v.file(crel, e)
			}
		}
		// Sockets, pipes and devices are never published.
	}
	return nil
}

// isLimit reports whether err is inotify running out of watches (ENOSPC,
// "no space left on device") or of instances or descriptors (EMFILE).
func isLimit(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EMFILE)
}

// noInotifyMessage explains why inotify cannot be used, with the commands
// that fix it where there are any.
func (l *watchLoop) noInotifyMessage(err error) string {
	every := l.opts.PollInterval
	switch {
	case errors.Is(err, syscall.ENOSPC):
		cur := inotifySysctl("max_user_watches")
		want := max(524288, 2*cur)
		return fmt.Sprintf("publish: watching %s: inotify's watch limit is reached (fs.inotify.max_user_watches = %s; the site needs one watch per folder, %d so far, and other programs share the limit), so beaker-dev falls back to polling every %s, which notices changes later; to fix it run `sudo sysctl fs.inotify.max_user_watches=%d`, make it permanent with `echo fs.inotify.max_user_watches=%d | sudo tee /etc/sysctl.d/60-beaker-dev.conf`, and restart beaker-dev",
			l.root, sysctlString(cur), len(l.dirs), every, want, want)
	case errors.Is(err, syscall.EMFILE):
		cur := inotifySysctl("max_user_instances")
		want := max(1024, 2*cur)
		return fmt.Sprintf("publish: watching %s: inotify's instance limit is reached (fs.inotify.max_user_instances = %s, or this process's open-files limit, ulimit -n), so beaker-dev falls back to polling every %s, which notices changes later; to fix it run `sudo sysctl fs.inotify.max_user_instances=%d`, make it permanent with `echo fs.inotify.max_user_instances=%d | sudo tee /etc/sysctl.d/60-beaker-dev.conf`, and restart beaker-dev",
			l.root, sysctlString(cur), every, want, want)
	}
	return fmt.Sprintf("publish: watching %s: cannot use inotify (%v), so beaker-dev falls back to polling every %s, which notices changes later", l.root, err, every)
}

// inotifySysctl reads one of Linux's inotify limits; 0 if unknown.
func inotifySysctl(name string) int {
	b, err := os.ReadFile("/proc/sys/fs/inotify/" + name)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

func sysctlString(n int) string {
	if n == 0 {
		return "unknown"
	}
	return strconv.Itoa(n)
}

// remoteFSName names the network and virtual file systems, by their Linux
// statfs f_type, on which inotify sees only the changes made through this
// machine's mount, not those made by the server, the Windows side of WSL2
// or a VM's host. "" for the others.
func remoteFSName(magic uint32) string {
	switch magic {
	case 0x6969:
		return "an NFS share"
	case 0x517B, 0xFF534D42, 0xFE534D42:
		return "an SMB/CIFS share"
	case 0x01021997:
		return "a 9p share (WSL2's /mnt/c, or a VM's shared folder)"
	case 0x65735546:
		return "a FUSE file system (sshfs, rclone, a container's host folder, ...)"
	case 0x786F4256:
		return "a VirtualBox shared folder"
	case 0x00C36400:
		return "a Ceph file system"
	case 0x5346414F:
		return "an AFS file system"
	}
	return ""
}

// platform carries the methods only some systems have (watch_linux.go).
// Asking for them with a type assertion keeps the rest of the package
// building elsewhere without a stub file per system.
type platform struct{}

// fsMagic returns the statfs f_type of the file system holding dir, where
// the system reports Linux magic numbers.
func fsMagic(dir string) (uint32, bool) {
	p, ok := any(platform{}).(interface {
		statfsMagic(dir string) (uint32, error)
	})
	if !ok {
		return 0, false
	}
	m, err := p.statfsMagic(dir)
	return m, err == nil
}
