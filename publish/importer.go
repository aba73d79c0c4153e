package publish

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
)

// ImportOptions tune Import.
type ImportOptions struct {
	// Workers read and chunk files in parallel; 0 means GOMAXPROCS.
	Workers int
	// Progress, if set, is called from worker goroutines with the bytes read
	// so far and the bytes to read in all.
	Progress func(done, total int64)
	// Cache remembers, between imports by one process, files already found
	// unchanged, so a file touched without changing is read once, not on
	// every import. Optional.
	Cache *StatCache
	// LockWait is how long to wait for another writer's lock before failing
	// with a *hyperdrive.LockedError. Zero means do not wait.
	LockWait time.Duration
	// Paths limits the import to these slash-separated paths relative to
	// the root (files or folders, as a watcher reports them): a folder is
	// scanned whole, and a path that no longer exists is deleted from the
	// archive with everything below it. nil means the whole folder.
	Paths []string
}

// ImportResult says what an import did.
type ImportResult struct {
	Version   uint64   // the archive's version after the import
	Committed bool     // whether the import added a version
	Files     int      // files in the version
	Bytes     uint64   // bytes in the version
	Changed   []string // archive paths put or deleted, sorted
	Deleted   []string // of those, the deleted ones
	ReadBytes uint64   // bytes read from the folder
	NewBytes  uint64   // bytes of chunks not stored before
	NewChunks int      // chunks not stored before
	Skipped   []string // paths left out, with the reason
	Duration  time.Duration
}

// racyWindow: a file whose mtime lies this close to the moment it was last
// read may have changed again within the same timestamp tick (coarse file
// system clocks), so size and mtime alone cannot prove it unchanged.
const racyWindow = 2 * time.Second

// StatCache remembers, per archive path, the stat of a file that was read
// and found to match the archive's entry Seq.
type StatCache struct {
	mu sync.Mutex
	m  map[string]statRecord
}

type statRecord struct {
	seq      uint64
	size     int64
	mtime    int64
	mode     fs.FileMode
	verified time.Time
}

// NewStatCache returns an empty cache.
func NewStatCache() *StatCache { return &StatCache{m: map[string]statRecord{}} }

func (c *StatCache) get(p string) (statRecord, bool) {
	if c == nil {
		return statRecord{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.m[p]
	return r, ok
}

func (c *StatCache) put(p string, r statRecord) {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.m[p] = r
	c.mu.Unlock()
}

// scanned is one regular file found in the folder.
type scanned struct {
	rel   string // slash-separated, relative to the root
	size  int64
	mtime int64
	mode  fs.FileMode
}

// Import publishes the folder root as a new version of a (one commit), or
// adds nothing if nothing changed. Only files whose size, mtime or mode
// differ from the latest version are read, in parallel; only chunks the
// archive lacks are stored. Files are read through an os.Root, so a symlink
// cannot make Import read outside root.
func Import(ctx context.Context, a *hyperdrive.Archive, root string, opts ImportOptions) (*ImportResult, error) {
	start := time.Now()
	lockCtx, cancel := context.WithTimeout(ctx, max(opts.LockWait, time.Millisecond))
	w, err := a.Begin(lockCtx)
	cancel()
	if err != nil {
		return nil, err
	}
	defer w.Close()

	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	res := &ImportResult{}
	var files []scanned
	covered := func(string) bool { return true }
	if opts.Paths == nil {
		files, err = scan(ctx, r, res)
	} else {
		files, covered, err = scanPaths(ctx, r, opts.Paths, res)
	}
	if err != nil {
		return nil, err
	}

	latest := a.Latest()
	var jobs []scanned
	present := make(map[string]bool, len(files))
	for _, f := range files {
		p := "/" + f.rel
		present[p] = true
		if unchanged(a, latest, opts.Cache, p, f) {
			continue
		}
		jobs = append(jobs, f)
	}
	// Biggest first, so one large file does not finish alone at the end.
	sort.SliceStable(jobs, func(i, j int) bool { return jobs[i].size > jobs[j].size })

	puts, err := readAll(ctx, w, r, latest, jobs, opts, res)
	if err != nil {
		return nil, err
	}
	for _, p := range latest.Paths() {
		if !present[p] && covered(p) {
			res.Deleted = append(res.Deleted, p)
		}
	}
	type staged struct {
		path string
		put  *put
	}
	var all []staged
	for i := range puts {
		all = append(all, staged{puts[i].path, &puts[i]})
	}
	for _, p := range res.Deleted {
		all = append(all, staged{path: p})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].path < all[j].path })
	for _, s := range all {
		if s.put != nil {
			err = w.Put(s.path, s.put.meta, s.put.content)
		} else {
			err = w.Delete(s.path)
		}
		if err != nil {
			return nil, err
		}
		res.Changed = append(res.Changed, s.path)
	}
	v, err := w.Commit()
	if err != nil {
		return nil, err
	}
	res.Version = v
	res.Committed = len(all) > 0
	snap := a.Latest()
	res.Files, res.Bytes = snap.Len(), snap.Bytes()
	res.Duration = time.Since(start)
	return res, nil
}

// unchanged reports whether the file at archive path p can be taken as the
// same as in the latest version without reading it.
func unchanged(a *hyperdrive.Archive, latest *hyperdrive.Snapshot, cache *StatCache, p string, f scanned) bool {
	st, ok := latest.File(p)
	if !ok || int64(st.Size) != f.size || st.MTime != f.mtime || st.Mode != f.mode {
		if c, ok := cache.get(p); ok && c.seq == st.Seq && c.size == f.size && c.mtime == f.mtime && c.mode == f.mode &&
			time.Unix(0, f.mtime).Before(c.verified.Add(-racyWindow)) {
			return true
		}
		return false
	}
	// Same stat. Trust it unless the mtime was within the racy window of
	// when the entry was written.
	written := a.CommitTime(st.Seq)
	if time.Unix(0, f.mtime).Before(written.Add(-racyWindow)) {
		return true
	}
	if c, ok := cache.get(p); ok && c.seq == st.Seq && c.size == f.size && c.mtime == f.mtime &&
		time.Unix(0, f.mtime).Before(c.verified.Add(-racyWindow)) {
		return true
	}
	return false
}

type put struct {
	path    string
	meta    hyperdrive.FileMeta
	content hyperdrive.Content
}

// readAll chunks the files of jobs with a pool of workers and returns the
// puts for files whose content or mode changed.
func readAll(ctx context.Context, w *hyperdrive.Writer, r *os.Root, latest *hyperdrive.Snapshot, jobs []scanned, opts ImportOptions, res *ImportResult) ([]put, error) {
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var total int64
	for _, j := range jobs {
		total += j.size
	}
	var done atomic.Int64
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	queue := make(chan scanned)
	var mu sync.Mutex
	var puts []put
	var wg sync.WaitGroup
	for range min(workers, max(len(jobs), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for job := range queue {
				began := time.Now()
				p, st, changed, err := readOne(w, r, latest, job, func(n int) {
					d := done.Add(int64(n))
					if opts.Progress != nil {
						opts.Progress(d, total)
					}
				})
				mu.Lock()
				res.ReadBytes += st.Bytes
				res.NewBytes += st.NewBytes
				res.NewChunks += st.NewChunks
				switch {
				case errors.Is(err, fs.ErrNotExist):
					// Deleted since the scan: the next import records it.
				case err != nil:
					cancel(fmt.Errorf("publish: %s: %w", job.rel, err))
				case changed:
					puts = append(puts, p)
				default:
					if old, ok := latest.File(p.path); ok {
						opts.Cache.put(p.path, statRecord{seq: old.Seq, size: int64(p.meta.Size), mtime: p.meta.MTime, mode: p.meta.Mode, verified: began})
					}
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for _, j := range jobs {
		select {
		case queue <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(queue)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return puts, nil
}

// readOne chunks one file and compares it with the latest version.
func readOne(w *hyperdrive.Writer, r *os.Root, latest *hyperdrive.Snapshot, job scanned, progress func(int)) (put, hyperdrive.ContentStats, bool, error) {
	f, err := r.Open(job.rel)
	if err != nil {
		return put{}, hyperdrive.ContentStats{}, false, err
	}
	defer f.Close()
	c, st, err := w.WriteContent(&countingReader{r: f, progress: progress})
	if err != nil {
		return put{}, st, false, err
	}
	p := put{path: "/" + job.rel, meta: hyperdrive.FileMeta{Mode: job.mode, Size: st.Bytes, MTime: job.mtime}, content: c}
	// The stat may have moved on while we read; record what was read with
	// the stat taken after reading, so a later change shows as a new mtime.
	if fi, err := f.Stat(); err == nil {
		p.meta.MTime = fi.ModTime().UnixNano()
		p.meta.Mode = fi.Mode().Perm()
	}
	// Same bytes and mode, whatever the mtime: no new entry (a save that
	// changes nothing adds no version).
	if old, ok := latest.File(p.path); ok && old.Mode == p.meta.Mode {
		if e, err := latest.Entry(p.path); err == nil && e.Content.Equal(c) {
			return p, st, false, nil
		}
	}
	return p, st, true, nil
}

type countingReader struct {
	r        io.Reader
	progress func(int)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.progress(n)
	}
	return n, err
}

// scan walks the whole folder through r, applying the ignore rules, and
// returns its regular files sorted by path.
func scan(ctx context.Context, r *os.Root, res *ImportResult) ([]scanned, error) {
	var files []scanned
	if err := walk(ctx, r, NewIgnore(), "", res, &files); err != nil {
		return nil, err
	}
	sortScanned(files)
	return files, nil
}

// scanPaths scans only the given paths (files or folders) and returns their
// files and a function telling which archive paths the scan covered, so
// that only those can be found deleted.
func scanPaths(ctx context.Context, r *os.Root, paths []string, res *ImportResult) ([]scanned, func(string) bool, error) {
	clean := make([]string, 0, len(paths))
	for _, p := range paths {
		p = strings.Trim(path.Clean("/"+p), "/")
		if p != "" {
			clean = append(clean, p)
		} else {
			files, err := scan(ctx, r, res)
			return files, func(string) bool { return true }, err
		}
	}
	// The rules that apply to a path come from the .datignore files of its
	// folders, parents first.
	ig := NewIgnore()
	dirs := map[string]bool{"": true}
	for _, p := range clean {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	ordered := make([]string, 0, len(dirs))
	for d := range dirs {
		ordered = append(ordered, d)
	}
	sort.Slice(ordered, func(i, j int) bool {
		di, dj := strings.Count(ordered[i], "/"), strings.Count(ordered[j], "/")
		if ordered[i] == "" || ordered[j] == "" {
			return ordered[i] == ""
		}
		if di != dj {
			return di < dj
		}
		return ordered[i] < ordered[j]
	})
	fsys := r.FS()
	for _, d := range ordered {
		name := d
		if name == "" {
			name = "."
		}
		if b, err := fs.ReadFile(fsys, path.Join(name, IgnoreFile)); err == nil {
			ig.Add(d, b)
		}
	}
	var files []scanned
	seen := map[string]bool{}
	for _, p := range clean {
		if seen[p] {
			continue
		}
		seen[p] = true
		fi, err := fs.Lstat(fsys, p)
		if err != nil {
			continue // gone: covered, so the archive drops it
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			if fi, err = fs.Stat(fsys, p); err != nil || fi.IsDir() {
				res.Skipped = append(res.Skipped, p+": symlink to outside the site, to a folder or to nothing")
				continue
			}
		}
		if ig.Match(p, fi.IsDir()) {
			continue
		}
		if fi.IsDir() {
			if err := walk(ctx, r, ig, p, res, &files); err != nil {
				return nil, nil, err
			}
			continue
		}
		if f, ok := regularFile(p, fi, res); ok {
			files = append(files, f)
		}
	}
	sortScanned(files)
	prefixes := make([]string, len(clean))
	for i, p := range clean {
		prefixes[i] = "/" + p
	}
	covered := func(ap string) bool {
		for _, p := range prefixes {
			if ap == p || strings.HasPrefix(ap, p+"/") {
				return true
			}
		}
		return false
	}
	return files, covered, nil
}

// walk adds the regular files of folder dir (relative to the root; "" for
// the root) and below to files, applying ig and the .datignore files met.
func walk(ctx context.Context, r *os.Root, ig *Ignore, dir string, res *ImportResult, files *[]scanned) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	name := dir
	if name == "" {
		name = "."
	}
	d, err := r.Open(name)
	if err != nil {
		if dir == "" {
			return err
		}
		res.Skipped = append(res.Skipped, dir+": "+err.Error())
		return nil
	}
	ents, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		res.Skipped = append(res.Skipped, name+": "+err.Error())
		return nil
	}
	fsys := r.FS()
	if b, err := fs.ReadFile(fsys, path.Join(name, IgnoreFile)); err == nil {
		ig.Add(dir, b)
	}
	for _, e := range ents {
		rel := path.Join(dir, e.Name())
		var fi fs.FileInfo
		if e.Type()&fs.ModeSymlink != 0 {
			// Follow the link, but only inside the root.
			if fi, err = fs.Stat(fsys, rel); err != nil {
				res.Skipped = append(res.Skipped, rel+": symlink to outside the site or to nothing")
				continue
			}
			if fi.IsDir() {
				res.Skipped = append(res.Skipped, rel+": symlink to a folder (not followed)")
				continue
			}
		}
		isDir := e.IsDir()
		if ig.Match(rel, isDir) {
			continue
		}
		if isDir {
			if err := walk(ctx, r, ig, rel, res, files); err != nil {
				return err
			}
			continue
		}
		if fi == nil {
			if !e.Type().IsRegular() {
				continue // sockets, devices, pipes
			}
			if fi, err = e.Info(); err != nil {
				continue // gone since ReadDir
			}
		}
		if f, ok := regularFile(rel, fi, res); ok {
			*files = append(*files, f)
		}
	}
	return nil
}

// regularFile turns a stat into a scanned file, or explains why not.
func regularFile(rel string, fi fs.FileInfo, res *ImportResult) (scanned, bool) {
	if !fi.Mode().IsRegular() {
		return scanned{}, false
	}
	if err := hyperdrive.ValidatePath("/" + rel); err != nil {
		res.Skipped = append(res.Skipped, rel+": "+err.Error())
		return scanned{}, false
	}
	return scanned{rel: rel, size: fi.Size(), mtime: fi.ModTime().UnixNano(), mode: fi.Mode().Perm()}, true
}

func sortScanned(files []scanned) {
	slices.SortFunc(files, func(a, b scanned) int { return strings.Compare(a.rel, b.rel) })
}
