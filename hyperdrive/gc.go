package hyperdrive

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Garbage collection (Store.GC) frees two things: archives cached by
// viewing that were never saved (no secret key, no "saved" mark), and
// chunks that no entry of any version references (left by imports that
// failed or were killed before they committed).
//
// Both need the archive closed everywhere. Every open handle holds a shared
// flock(2) on the archive's "inuse" file; gc takes it exclusively and skips
// an archive it cannot get, so a running serve, view or seed is never
// disturbed. The kernel drops the lock of a killed process.
//
// Compaction writes chunks.compact and chunks.idx.compact beside the old
// files, syncs them, and then creates the "compact" mark: from that instant
// the compaction is committed. It renames the two files over the old ones
// and removes the mark. An open that finds the mark (gc was killed) does the
// renames itself; .compact files without a mark are an unfinished attempt
// and are removed. So a kill at any instant loses nothing.
const (
	inUseFile      = "inuse"
	savedFile      = "saved"
	compactMark    = "compact"
	compactSuffix  = ".compact"
	inUseRetries   = 50
	inUseRetryWait = 10 * time.Millisecond
	trashPrefix    = ".gc-" // an archive directory being removed
)

// ErrInUse is returned (wrapped) when an archive is open in another process.
var ErrInUse = errors.New("hyperdrive: archive in use")

// holdInUse takes the shared in-use lock of the archive in dir, finishing a
// compaction that gc left half done. It returns a nil file when the
// directory is not writable (a read-only copy nobody can gc).
func holdInUse(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, inUseFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return nil, nil
		}
		return nil, err
	}
	fd := int(f.Fd())
	for try := 0; ; try++ {
		if err := flock(fd, syscall.LOCK_SH); err != nil {
			f.Close()
			return nil, err
		}
		if _, err := os.Stat(filepath.Join(dir, compactMark)); errors.Is(err, fs.ErrNotExist) {
			return f, nil
		}
		// gc died after committing a compaction: finish it, which needs the
		// lock to ourselves (other openers wait, then see no mark).
		if err := flock(fd, syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
			err = finishCompaction(dir)
			if err == nil {
				err = flock(fd, syscall.LOCK_SH)
			}
			if err != nil {
				f.Close()
				return nil, err
			}
			return f, nil
		}
		if try == inUseRetries {
			f.Close()
			return nil, fmt.Errorf("%w: %s: an interrupted gc must be finished by the first process to open it; close the others", ErrInUse, dir)
		}
		flock(fd, syscall.LOCK_UN)
		time.Sleep(inUseRetryWait)
	}
}

func flock(fd, how int) error {
	for {
		err := syscall.Flock(fd, how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// finishCompaction completes a committed compaction (the mark exists).
func finishCompaction(dir string) error {
	for _, name := range []string{chunksFile, chunkIndexFile} {
		tmp := filepath.Join(dir, name+compactSuffix)
		if _, err := os.Stat(tmp); err == nil {
			if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
				return err
			}
		}
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(dir, compactMark)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// SetSaved marks (or unmarks) archive k as saved: gc keeps saved archives.
// clone and seed save what they fetch; view only caches it.
func (s *Store) SetSaved(k PublicKey, saved bool) error {
	path := filepath.Join(s.ArchiveDir(k), savedFile)
	if !saved {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	return os.WriteFile(path, []byte("kept by beaker-dev: gc does not free this archive\n"), 0o600)
}

// Saved reports whether gc keeps archive k: it is marked saved, or the store
// holds its secret key (an archive this user writes is never freed).
func (s *Store) Saved(k PublicKey) bool {
	if _, err := os.Stat(filepath.Join(s.ArchiveDir(k), savedFile)); err == nil {
		return true
	}
	_, err := os.Stat(s.keyPath(k))
	return err == nil
}

// GCReport says what Store.GC did.
type GCReport struct {
	Removed     []PublicKey // cached archives freed
	Compacted   []PublicKey // archives whose unreferenced chunks were freed
	Skipped     []PublicKey // archives in use by a running process, left alone
	Chunks      int         // unreferenced chunks freed
	Freed       int64       // bytes freed on disk
	KeptArchive int         // archives kept
}

// GC frees cached archives that were never saved and, in the archives it
// keeps, chunks that no version references. Archives open in any process
// are skipped.
func (s *Store) GC(ctx context.Context) (GCReport, error) {
	var rep GCReport
	keys, err := s.Archives()
	if err != nil {
		return rep, err
	}
	// What an earlier gc renamed away and was killed before removing.
	if ents, err := os.ReadDir(filepath.Join(s.dir, "archives")); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), trashPrefix) {
				os.RemoveAll(filepath.Join(s.dir, "archives", e.Name()))
			}
		}
	}
	for _, k := range keys {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		dir := s.ArchiveDir(k)
		lock, err := os.OpenFile(filepath.Join(dir, inUseFile), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return rep, err
		}
		if err := flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			lock.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				rep.Skipped = append(rep.Skipped, k)
				continue
			}
			return rep, err
		}
		err = s.gcOne(k, dir, &rep)
		lock.Close()
		if err != nil {
			return rep, fmt.Errorf("gc %s: %w", k.URL(), err)
		}
	}
	return rep, nil
}

// gcOne collects one archive; the caller holds its in-use lock exclusively.
func (s *Store) gcOne(k PublicKey, dir string, rep *GCReport) error {
	if !s.Saved(k) {
		size, err := dirSize(dir)
		if err != nil {
			return err
		}
		// Renamed away first, in one step, so a kill never leaves half an
		// archive under its key; what the rename leaves is removed now or
		// by the next gc.
		trash := filepath.Join(s.dir, "archives", trashPrefix+k.String())
		if err := os.Rename(dir, trash); err != nil {
			return err
		}
		if err := syncDir(filepath.Join(s.dir, "archives")); err != nil {
			return err
		}
		if err := os.RemoveAll(trash); err != nil {
			return err
		}
		rep.Removed = append(rep.Removed, k)
		rep.Freed += size
		return nil
	}
	rep.KeptArchive++
	if _, err := os.Stat(filepath.Join(dir, compactMark)); err == nil {
		if err := finishCompaction(dir); err != nil {
			return err
		}
	} else {
		for _, name := range []string{chunksFile, chunkIndexFile} {
			os.Remove(filepath.Join(dir, name+compactSuffix)) // an attempt that never committed
		}
	}
	if !s.HasArchive(k) {
		return nil
	}
	n, freed, err := compact(dir, k)
	if err != nil {
		return err
	}
	if n > 0 {
		rep.Compacted = append(rep.Compacted, k)
		rep.Chunks += n
		rep.Freed += freed
	}
	return nil
}

// compact rewrites the chunk files of the archive in dir without the chunks
// no entry references, returning how many chunks and bytes it freed.
func compact(dir string, k PublicKey) (int, int64, error) {
	a, err := open(dir, k, Options{inUseHeld: true}, false)
	if err != nil {
		return 0, 0, err
	}
	defer a.Close()
	referenced, err := a.referencedChunks()
	if err != nil {
		return 0, 0, err
	}
	a.chunkMu.Lock()
	type rec struct {
		h   Hash
		loc chunkLoc
	}
	keep := make([]rec, 0, len(referenced))
	var drop int
	var dropBytes int64
	for h, loc := range a.chunkMap {
		if referenced[h] {
			keep = append(keep, rec{h, loc})
		} else {
			drop++
			dropBytes += chunkHeaderSize + int64(loc.n) + indexRecordSize
		}
	}
	a.chunkMu.Unlock()
	if drop == 0 {
		return 0, 0, nil
	}
	slices.SortFunc(keep, func(x, y rec) int { return int(x.loc.off - y.loc.off) })

	chunksTmp := filepath.Join(dir, chunksFile+compactSuffix)
	idxTmp := filepath.Join(dir, chunkIndexFile+compactSuffix)
	cf, err := os.OpenFile(chunksTmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, 0, err
	}
	defer cf.Close()
	xf, err := os.OpenFile(idxTmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, 0, err
	}
	defer xf.Close()
	cbuf := fileHeader(chunksFile)
	xbuf := fileHeader(chunkIndexFile)
	off := int64(len(cbuf))
	flush := func() error {
		if _, err := cf.Write(cbuf); err != nil {
			return err
		}
		cbuf = cbuf[:0]
		return nil
	}
	for _, r := range keep {
		data, err := a.readLocalChunk(r.h)
		if err != nil {
			return 0, 0, err // a stored chunk that does not match: verify says more
		}
		cbuf = appendChunkRecord(cbuf, r.h, data)
		xbuf = append(xbuf, encodeIndexRecord(r.h, chunkLoc{off: off + chunkHeaderSize, n: r.loc.n})...)
		off += chunkHeaderSize + int64(r.loc.n)
		if len(cbuf) >= 4<<20 {
			if err := flush(); err != nil {
				return 0, 0, err
			}
		}
	}
	if err := flush(); err != nil {
		return 0, 0, err
	}
	if _, err := xf.Write(xbuf); err != nil {
		return 0, 0, err
	}
	if err := cf.Sync(); err != nil {
		return 0, 0, err
	}
	if err := xf.Sync(); err != nil {
		return 0, 0, err
	}
	if err := syncDir(dir); err != nil {
		return 0, 0, err
	}
	// The commit point.
	mark, err := os.OpenFile(filepath.Join(dir, compactMark), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return 0, 0, err
	}
	if err := mark.Sync(); err != nil {
		mark.Close()
		return 0, 0, err
	}
	mark.Close()
	if err := syncDir(dir); err != nil {
		return 0, 0, err
	}
	if err := finishCompaction(dir); err != nil {
		return 0, 0, err
	}
	return drop, dropBytes, nil
}

// referencedChunks returns every chunk any entry of the log references,
// data chunks and index blocks, as far as the stored index blocks tell.
func (a *Archive) referencedChunks() (map[Hash]bool, error) {
	seen := map[Hash]bool{}
	var walk func(level uint8, refs []Ref) error
	walk = func(level uint8, refs []Ref) error {
		for _, r := range refs {
			if seen[r.Hash] {
				continue
			}
			seen[r.Hash] = true
			if level == 0 {
				continue
			}
			b, err := a.readLocalChunk(r.Hash)
			if errors.Is(err, ErrChunkMissing) {
				continue // a replica that never fetched it holds none of its children either
			}
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
	for seq := uint64(0); seq < a.Version(); seq++ {
		e, err := a.Entry(seq)
		if err != nil {
			return nil, err
		}
		if e.Type == EntryPut {
			if err := walk(e.Content.Level, e.Content.Refs); err != nil {
				return nil, err
			}
		}
	}
	return seen, nil
}

func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n, err
}
