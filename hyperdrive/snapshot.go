package hyperdrive

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Snapshot is one version of an archive, read-only. It implements fs.FS
// (with fs.StatFS, fs.ReadDirFS and fs.ReadFileFS): names are unrooted and
// slash-separated as io/fs requires ("css/site.css", "." for the root).
// Directories are implied by the files below them.
type Snapshot struct {
	a       *Archive
	version uint64
	files   map[string]FileState // archive path -> state; never mutated

	dirsOnce sync.Once
	dirs     map[string][]string // archive dir path -> sorted child names
}

// Latest returns the latest committed version.
func (a *Archive) Latest() *Snapshot {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return &Snapshot{a: a, version: a.length, files: a.files}
}

// Checkout returns version v, which must be a committed version (the length
// of the log after some commit).
func (a *Archive) Checkout(v uint64) (*Snapshot, error) {
	a.mu.RLock()
	if v == a.length {
		s := &Snapshot{a: a, version: v, files: a.files}
		a.mu.RUnlock()
		return s, nil
	}
	if !a.isVersionLocked(v) {
		err := a.noVersionLocked(v)
		a.mu.RUnlock()
		return nil, err
	}
	for _, s := range a.snapCache {
		if s.version == v {
			a.mu.RUnlock()
			return s, nil
		}
	}
	offsets := a.offsets[:v+1]
	a.mu.RUnlock()

	// Replay the log up to v.
	st := &logState{files: map[string]FileState{}, tags: map[string]Tag{}}
	iw := &indexWriter{s: st, filesOwn: true, tagsOwn: true}
	var buf []byte
	for seq := uint64(0); seq < v; seq++ {
		payload, _, err := readEntryRecord(a.entries, offsets[seq], offsets[seq+1], seq, buf)
		if err != nil {
			return nil, err
		}
		buf = payload
		var e Entry
		if err := e.UnmarshalBinary(payload); err != nil {
			return nil, &CorruptError{File: entriesFile, Record: seq, Offset: offsets[seq], Reason: reason(err)}
		}
		if err := iw.apply(seq, &e); err != nil {
			return nil, &CorruptError{File: entriesFile, Record: seq, Offset: offsets[seq], Reason: reason(err)}
		}
	}
	s := &Snapshot{a: a, version: v, files: st.files}
	a.mu.Lock()
	a.snapCache = append(a.snapCache, s)
	if len(a.snapCache) > 4 {
		a.snapCache = a.snapCache[1:]
	}
	a.mu.Unlock()
	return s, nil
}

func (a *Archive) isVersionLocked(v uint64) bool {
	_, ok := slices.BinarySearchFunc(a.signed, v, func(s SignedRoot, v uint64) int {
		switch {
		case s.Length < v:
			return -1
		case s.Length > v:
			return 1
		}
		return 0
	})
	return ok
}

// noVersionLocked explains why v is not a version, naming its neighbours.
func (a *Archive) noVersionLocked(v uint64) error {
	if v > a.length {
		return fmt.Errorf("%w: %d (the latest version is %d)", ErrNoVersion, v, a.length)
	}
	i, _ := slices.BinarySearchFunc(a.signed, v, func(s SignedRoot, v uint64) int {
		if s.Length < v {
			return -1
		}
		return 1
	})
	var near []string
	if i > 0 {
		near = append(near, fmt.Sprint(a.signed[i-1].Length))
	}
	if i < len(a.signed) {
		near = append(near, fmt.Sprint(a.signed[i].Length))
	}
	return fmt.Errorf("%w: %d is not a published version (nearest: %s)", ErrNoVersion, v, strings.Join(near, ", "))
}

// Version returns the version this snapshot shows.
func (s *Snapshot) Version() uint64 { return s.version }

// Archive returns the archive the snapshot belongs to.
func (s *Snapshot) Archive() *Archive { return s.a }

// Len returns the number of files.
func (s *Snapshot) Len() int { return len(s.files) }

// Paths returns every file's archive path, sorted.
func (s *Snapshot) Paths() []string {
	out := make([]string, 0, len(s.files))
	for p := range s.files {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// File returns the state of the file at archive path p ("/css/site.css").
func (s *Snapshot) File(p string) (FileState, bool) {
	f, ok := s.files[p]
	return f, ok
}

// Bytes returns the total size of the snapshot's files.
func (s *Snapshot) Bytes() uint64 {
	var n uint64
	for _, f := range s.files {
		n += f.Size
	}
	return n
}

// toArchivePath maps an io/fs name to an archive path.
func toArchivePath(op, name string) (string, error) {
	if !fs.ValidPath(name) {
		return "", &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	if name == "." {
		return "/", nil
	}
	return "/" + name, nil
}

func (s *Snapshot) buildDirs() {
	s.dirsOnce.Do(func() {
		sets := map[string]map[string]bool{"/": {}}
		for p := range s.files {
			for {
				dir, name := path.Split(p)
				dir = path.Clean(dir)
				if sets[dir] == nil {
					sets[dir] = map[string]bool{}
				}
				seen := sets[dir][name]
				sets[dir][name] = true
				if seen || dir == "/" {
					break
				}
				p = dir
			}
		}
		s.dirs = make(map[string][]string, len(sets))
		for d, names := range sets {
			list := make([]string, 0, len(names))
			for n := range names {
				list = append(list, n)
			}
			sort.Strings(list)
			s.dirs[d] = list
		}
	})
}

// Stat implements fs.StatFS.
func (s *Snapshot) Stat(name string) (fs.FileInfo, error) {
	p, err := toArchivePath("stat", name)
	if err != nil {
		return nil, err
	}
	if f, ok := s.files[p]; ok {
		return fileInfo{name: path.Base(p), st: f}, nil
	}
	s.buildDirs()
	if _, ok := s.dirs[p]; ok {
		return fileInfo{name: path.Base(p), dir: true}, nil
	}
	return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrNotExist}
}

// ReadDir implements fs.ReadDirFS.
func (s *Snapshot) ReadDir(name string) ([]fs.DirEntry, error) {
	p, err := toArchivePath("readdir", name)
	if err != nil {
		return nil, err
	}
	s.buildDirs()
	names, ok := s.dirs[p]
	if !ok {
		if _, isFile := s.files[p]; isFile {
			return nil, &fs.PathError{Op: "readdir", Path: name, Err: errors.New("not a directory")}
		}
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrNotExist}
	}
	out := make([]fs.DirEntry, 0, len(names))
	for _, n := range names {
		child := path.Join(p, n)
		if f, ok := s.files[child]; ok {
			out = append(out, fs.FileInfoToDirEntry(fileInfo{name: n, st: f}))
		} else {
			out = append(out, fs.FileInfoToDirEntry(fileInfo{name: n, dir: true}))
		}
	}
	return out, nil
}

// ReadFile implements fs.ReadFileFS.
func (s *Snapshot) ReadFile(name string) ([]byte, error) {
	f, err := s.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, ok := f.(*File)
	if !ok {
		return nil, &fs.PathError{Op: "read", Path: name, Err: errors.New("is a directory")}
	}
	b := make([]byte, r.Size())
	if _, err := r.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b, nil
}

// Open implements fs.FS. Files are *File; directories implement
// fs.ReadDirFile.
func (s *Snapshot) Open(name string) (fs.File, error) {
	p, err := toArchivePath("open", name)
	if err != nil {
		return nil, err
	}
	if _, ok := s.files[p]; ok {
		return s.OpenFile(p)
	}
	s.buildDirs()
	if _, ok := s.dirs[p]; ok {
		entries, _ := s.ReadDir(name)
		return &dirFile{info: fileInfo{name: path.Base(p), dir: true}, entries: entries}, nil
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}

// OpenFile opens the file at archive path p for verified random access.
func (s *Snapshot) OpenFile(p string) (*File, error) {
	st, ok := s.files[p]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
	}
	e, err := s.a.Entry(st.Seq)
	if err != nil {
		return nil, err
	}
	return newFile(s.a, fileInfo{name: path.Base(p), st: st}, e.Content), nil
}

// Entry returns the put entry of the file at archive path p.
func (s *Snapshot) Entry(p string) (Entry, error) {
	st, ok := s.files[p]
	if !ok {
		return Entry{}, &fs.PathError{Op: "entry", Path: p, Err: fs.ErrNotExist}
	}
	return s.a.Entry(st.Seq)
}

// fileInfo implements fs.FileInfo for files and implied directories.
type fileInfo struct {
	name string
	st   FileState
	dir  bool
}

func (fi fileInfo) Name() string {
	if fi.name == "" {
		return "/"
	}
	return fi.name
}
func (fi fileInfo) Size() int64 { return int64(fi.st.Size) }
func (fi fileInfo) Mode() fs.FileMode {
	if fi.dir {
		return fs.ModeDir | 0o755
	}
	return fi.st.Mode
}
func (fi fileInfo) ModTime() time.Time {
	if fi.dir {
		return time.Time{}
	}
	return time.Unix(0, fi.st.MTime)
}
func (fi fileInfo) IsDir() bool { return fi.dir }

// Sys returns the FileState for files, nil for directories.
func (fi fileInfo) Sys() any {
	if fi.dir {
		return nil
	}
	return fi.st
}

type dirFile struct {
	info    fileInfo
	entries []fs.DirEntry
	pos     int
}

func (d *dirFile) Stat() (fs.FileInfo, error) { return d.info, nil }
func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.info.name, Err: errors.New("is a directory")}
}
func (d *dirFile) Close() error { return nil }
func (d *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	rest := d.entries[d.pos:]
	if n <= 0 {
		d.pos = len(d.entries)
		return rest, nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	n = min(n, len(rest))
	d.pos += n
	return rest[:n], nil
}

// Missing counts the chunks of this version's files that are not stored
// (a partial replica); 0 means every file can be read without peers. An
// index block that is missing counts once: its children are unknown.
func (s *Snapshot) Missing() (int, error) {
	n := 0
	var walk func(level uint8, refs []Ref) error
	walk = func(level uint8, refs []Ref) error {
		for _, r := range refs {
			if !s.a.HasChunk(r.Hash) {
				n++
				continue
			}
			if level == 0 {
				continue
			}
			b, err := s.a.readLocalChunk(r.Hash)
			if err != nil {
				return err
			}
			kids, err := DecodeIndexBlock(b, level-1)
			if err != nil {
				return err
			}
			if err := walk(level-1, kids); err != nil {
				return err
			}
		}
		return nil
	}
	for _, p := range s.Paths() {
		e, err := s.Entry(p)
		if err != nil {
			return 0, err
		}
		if err := walk(e.Content.Level, e.Content.Refs); err != nil {
			return 0, err
		}
	}
	return n, nil
}
