package publish

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"strings"
	"sync"
)

// FolderFS is a site folder as it would be published, for previews: files
// the ignore rules leave out do not exist in it, nor do paths through
// symlinked folders (the importer does not follow them), and everything is
// read through an os.Root, so no path, encoded or symlinked, leads outside
// the folder. It implements fs.FS, fs.StatFS and fs.ReadDirFS and is safe
// for concurrent use.
type FolderFS struct {
	root *os.Root
	fsys fs.FS

	mu     sync.RWMutex
	ig     *Ignore
	loaded map[string]bool // folders whose .datignore has been read
	real   map[string]bool // folders known not to be (or lie under) symlinks
}

// NewFolderFS opens dir.
func NewFolderFS(dir string) (*FolderFS, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	return &FolderFS{root: r, fsys: r.FS(), ig: NewIgnore(), loaded: map[string]bool{}, real: map[string]bool{}}, nil
}

// Close releases the folder.
func (f *FolderFS) Close() error { return f.root.Close() }

// Invalidate forgets what it learned about the folder (the ignore rules,
// which folders are real folders); call it when files change.
func (f *FolderFS) Invalidate() {
	f.mu.Lock()
	f.ig, f.loaded, f.real = NewIgnore(), map[string]bool{}, map[string]bool{}
	f.mu.Unlock()
}

// realDir reports whether folder d (and every folder above it) is a real
// folder, not a symlink, remembering the answer until Invalidate.
func (f *FolderFS) realDir(d string) bool {
	f.mu.RLock()
	ok := f.real[d]
	f.mu.RUnlock()
	if ok {
		return true
	}
	if parent := path.Dir(d); parent != "." && !f.realDir(parent) {
		return false
	}
	fi, err := fs.Lstat(f.fsys, d)
	if err != nil || !fi.IsDir() {
		return false
	}
	f.mu.Lock()
	f.real[d] = true
	f.mu.Unlock()
	return true
}

// ignored reports whether name (an fs.FS name) is left out, loading the
// .datignore files of its folders, parents first, as needed.
func (f *FolderFS) ignored(name string, isDir bool) bool {
	if name == "." {
		return false
	}
	dirs := []string{""}
	for d := path.Dir(name); d != "."; d = path.Dir(d) {
		dirs = append(dirs, d)
	}
	f.mu.RLock()
	missing := false
	for _, d := range dirs {
		if !f.loaded[d] {
			missing = true
			break
		}
	}
	if !missing {
		ig := f.ig.Match(name, isDir)
		f.mu.RUnlock()
		return ig
	}
	f.mu.RUnlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	// Root first, then down the path: a folder's rules come after its
	// parents', so they take precedence.
	order := make([]string, 0, len(dirs))
	order = append(order, "")
	for i := len(dirs) - 1; i >= 1; i-- {
		order = append(order, dirs[i])
	}
	for _, d := range order {
		if f.loaded[d] {
			continue
		}
		f.loaded[d] = true
		dn := d
		if dn == "" {
			dn = "."
		}
		if b, err := fs.ReadFile(f.fsys, path.Join(dn, IgnoreFile)); err == nil {
			f.ig.Add(d, b)
		}
	}
	return f.ig.Match(name, isDir)
}

// check refuses names that are ignored or lead through a symlinked folder.
func (f *FolderFS) check(op, name string) (fs.FileInfo, error) {
	if !fs.ValidPath(name) || strings.Contains(name, "\\") {
		return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	notExist := &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
	if d := path.Dir(name); name != "." && d != "." && !f.realDir(d) {
		return nil, notExist
	}
	fi, err := fs.Lstat(f.fsys, name)
	if err != nil {
		return nil, notExist
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		if fi, err = fs.Stat(f.fsys, name); err != nil || fi.IsDir() {
			return nil, notExist // outside the root, dangling, or a folder
		}
	}
	if !fi.IsDir() && !fi.Mode().IsRegular() {
		return nil, notExist
	}
	if f.ignored(name, fi.IsDir()) {
		return nil, notExist
	}
	return fi, nil
}

// Open implements fs.FS.
func (f *FolderFS) Open(name string) (fs.File, error) {
	if _, err := f.check("open", name); err != nil {
		return nil, err
	}
	file, err := f.root.Open(name)
	if err != nil {
		return nil, err
	}
	return &folderFile{File: file, fs: f, name: name}, nil
}

// Stat implements fs.StatFS.
func (f *FolderFS) Stat(name string) (fs.FileInfo, error) {
	return f.check("stat", name)
}

// ReadDir implements fs.ReadDirFS, leaving out ignored entries and
// symlinked folders.
func (f *FolderFS) ReadDir(name string) ([]fs.DirEntry, error) {
	fi, err := f.check("readdir", name)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: errors.New("not a directory")}
	}
	ents, err := fs.ReadDir(f.fsys, name)
	if err != nil {
		return nil, err
	}
	return f.filter(name, ents), nil
}

func (f *FolderFS) filter(dir string, ents []fs.DirEntry) []fs.DirEntry {
	out := ents[:0]
	for _, e := range ents {
		child := path.Join(dir, e.Name())
		if e.Type()&fs.ModeSymlink != 0 {
			fi, err := fs.Stat(f.fsys, child)
			if err != nil || fi.IsDir() || !fi.Mode().IsRegular() {
				continue
			}
			e = fs.FileInfoToDirEntry(fi)
		} else if !e.IsDir() && !e.Type().IsRegular() {
			continue
		}
		if f.ignored(child, e.IsDir()) {
			continue
		}
		out = append(out, e)
	}
	return out
}

// folderFile filters ReadDir on an open folder the same way.
type folderFile struct {
	*os.File
	fs   *FolderFS
	name string
}

func (d *folderFile) ReadDir(n int) ([]fs.DirEntry, error) {
	ents, err := d.File.ReadDir(n)
	return d.fs.filter(d.name, ents), err
}
