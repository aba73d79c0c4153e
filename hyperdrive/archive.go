package hyperdrive

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/beaker-dev/beaker-dev/hyperdrive/flattree"
)

// Options configure how an archive is opened or created.
type Options struct {
	// Secret makes the archive writable. It must match the archive's key.
	Secret ed25519.PrivateKey
	// Sync makes every commit fsync the storage files before it returns, so
	// a committed version survives power loss, not only a killed process.
	Sync bool
	// Now is the clock for commits and tags; nil means time.Now.
	Now func() time.Time
	// LockHolder describes this process in the lock file while it writes;
	// empty means its pid, host and command line.
	LockHolder string
	// Chunking is used by Create; the zero value means DefaultChunkParams.
	Chunking ChunkParams
	// Replica opens an archive without its secret key for writing what
	// peers send: verified entries, signed roots and chunks (BeginSync).
	Replica bool

	// inUseHeld: the caller (gc) holds the in-use lock exclusively already.
	inUseHeld bool
}

func (o *Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// Archive is one signed, versioned archive on disk: a log of entries hashed
// into a flat Merkle tree, the signed roots of every committed version, and a
// content-addressed chunk store. Readers see committed versions only; one
// Writer at a time (across processes) appends.
//
// An Archive is safe for concurrent use.
type Archive struct {
	key      PublicKey
	dir      string
	opts     Options
	writable bool // the files are open for writing (a secret key, or a replica)

	entries, tree, sigFile, chunks, chunkIdx *os.File
	inUse                                    *os.File // shared flock while open (see gc.go)

	// mu guards the committed state below. Writers build the next state
	// outside it and swap it in.
	mu        sync.RWMutex
	closed    bool
	length    uint64       // committed log length: the latest version
	signed    []SignedRoot // every committed version, ascending
	offsets   []int64      // offsets[i]: entries-file offset of entry i; len == length+1
	roots     []Node       // full roots of the committed tree
	manifest  Manifest
	files     map[string]FileState // files of the latest version; replaced, never mutated
	tags      map[string]Tag       // replaced, never mutated
	rolled    int                  // signed versions dropped at open because their data was missing
	fetcher   Fetcher              // gets missing chunks from peers; nil for none
	writing   bool                 // a Writer of this handle holds the lock
	snapCache []*Snapshot

	chunkMu                    sync.Mutex // guards the chunk index and chunk appends
	chunkMap                   map[Hash]chunkLoc
	chunksEnd                  int64      // end of the chunk records, buffered ones included
	chunksFlush                int64      // end of the chunk records written to the file
	idxEnd                     int64      // end of the index records written to chunks.idx
	chunkBuf                   []byte     // pending chunk records
	idxBuf                     []byte     // pending index records
	spareChunkBuf, spareIdxBuf []byte     // the buffers of the last flush, for reuse
	flushMu                    sync.Mutex // one flush at a time, in order
	contentPool                sync.Pool
	writeMu                    sync.Mutex // one Writer at a time in this process
	notify                     notifier
	sigEnd                     int64 // end of the signatures file
	sigsBadAfter               int64 // offset of a bad record found at open, or 0
}

// FileState is what a version records about one file.
type FileState struct {
	Seq   uint64 // the put entry that set it
	Size  uint64
	Mode  os.FileMode
	MTime int64
}

// Tag is a named version.
type Tag struct {
	Name    string
	Version uint64 // the tagged version
	Seq     uint64 // the tag entry
	Time    time.Time
	Message string
}

// Create makes a new archive in dir (which must not hold one) for the key
// pair, writes its manifest as entry 0 and commits version 1.
func Create(dir string, kp KeyPair, opts Options) (*Archive, error) {
	if len(kp.Secret) != ed25519.PrivateKeySize {
		return nil, ErrNoKey
	}
	if _, err := os.Stat(filepath.Join(dir, signaturesFile)); err == nil {
		return nil, fmt.Errorf("hyperdrive: %s already holds an archive", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	opts.Secret = kp.Secret
	a, err := open(dir, kp.Public, opts, true)
	if err != nil {
		return nil, err
	}
	chunking := opts.Chunking
	if chunking == (ChunkParams{}) {
		chunking = DefaultChunkParams
	}
	w, err := a.begin(nil)
	if err != nil {
		a.Close()
		return nil, err
	}
	defer w.Close()
	w.staged = append(w.staged, Entry{Type: EntryManifest, Manifest: Manifest{
		Format: archiveFormat, Chunking: chunking, Created: opts.now().UnixNano(),
	}})
	if _, err := w.Commit(); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

// Open opens the archive in dir whose public key is key. With opts.Secret
// set it can be written. It opens at the last complete version: records cut
// short by a crash are ignored (and cut off by the next writer).
func Open(dir string, key PublicKey, opts Options) (*Archive, error) {
	if _, err := os.Stat(filepath.Join(dir, signaturesFile)); err != nil {
		if isNotExist(err) {
			return nil, fmt.Errorf("%w: %s", ErrNoArchive, dir)
		}
		return nil, err
	}
	return open(dir, key, opts, opts.Secret != nil || opts.Replica)
}

func open(dir string, key PublicKey, opts Options, writable bool) (*Archive, error) {
	if opts.Secret != nil {
		if len(opts.Secret) != ed25519.PrivateKeySize || !slices.Equal(opts.Secret.Public().(ed25519.PublicKey), key[:]) {
			return nil, fmt.Errorf("%w: the secret key given does not belong to %s", ErrNoKey, key.URL())
		}
	}
	a := &Archive{key: key, dir: dir, opts: opts, writable: writable, offsets: []int64{headerSize},
		files: map[string]FileState{}, tags: map[string]Tag{}, chunkMap: map[Hash]chunkLoc{}}
	var err error
	open := func(name string) (*os.File, int64) {
		if err != nil {
			return nil, 0
		}
		var f *os.File
		var size int64
		f, size, err = openStorageFile(dir, name, writable, writable)
		return f, size
	}
	if !opts.inUseHeld {
		if a.inUse, err = holdInUse(dir); err != nil {
			return nil, err
		}
	}
	a.entries, _ = open(entriesFile)
	a.tree, _ = open(treeFile)
	a.sigFile, _ = open(signaturesFile)
	a.chunks, _ = open(chunksFile)
	a.chunkIdx, _ = open(chunkIndexFile)
	if err != nil {
		a.closeFiles()
		return nil, err
	}
	// load reads the chunk index from its start.
	a.idxEnd, a.chunksEnd, a.chunksFlush = headerSize, headerSize, headerSize
	if err := a.load(false); err != nil {
		a.closeFiles()
		return nil, err
	}
	return a, nil
}

// load brings the in-memory state up to the last complete version on disk,
// reading only what was appended since the previous load. Callers hold no
// locks; it takes a.mu itself. While a Writer of this handle is open nobody
// else can append, so only the Writer's own Begin loads then.
func (a *Archive) load(fromWriter bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return ErrClosed
	}
	if a.writing && !fromWriter {
		return nil
	}
	if err := a.loadSignedLocked(); err != nil {
		return err
	}
	if err := a.loadChunkIndex(); err != nil {
		return err
	}
	return nil
}

func (a *Archive) loadSignedLocked() error {
	st, err := a.sigFile.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	off := headerSize + int64(len(a.signed))*sigRecordSize
	var fresh []SignedRoot
	buf := make([]byte, sigRecordSize)
	for ; off+sigRecordSize <= size; off += sigRecordSize {
		if _, err := a.sigFile.ReadAt(buf, off); err != nil {
			return err
		}
		s, err := DecodeSignedRoot(buf)
		if err != nil {
			if off+2*sigRecordSize <= size {
				// Good-length records follow: not a torn tail.
				return &CorruptError{File: signaturesFile, Record: uint64((off - headerSize) / sigRecordSize), Offset: off, Reason: reason(err)}
			}
			break // a torn last record
		}
		prev := a.length
		if len(fresh) > 0 {
			prev = fresh[len(fresh)-1].Length
		}
		if s.Length <= prev {
			return &CorruptError{File: signaturesFile, Record: uint64((off - headerSize) / sigRecordSize), Offset: off,
				Reason: fmt.Sprintf("length %d does not grow past %d", s.Length, prev)}
		}
		fresh = append(fresh, s)
	}
	a.sigEnd = off
	if len(fresh) == 0 {
		return nil
	}
	// Read the entries the new signed roots cover. A root whose entries or
	// tree nodes are not all there (a crash that reordered writes) is
	// dropped: the archive opens at the last version it can prove.
	target := fresh[len(fresh)-1].Length
	next, err := a.readEntriesLocked(target)
	if err != nil {
		return err
	}
	var roots []Node
	for len(fresh) > 0 {
		s := fresh[len(fresh)-1]
		if s.Length > next.length {
			// Its entries never reached the disk: a crash reordered writes.
			fresh = fresh[:len(fresh)-1]
			a.rolled++
			continue
		}
		rec := uint64(len(a.signed) + len(fresh) - 1)
		recOff := headerSize + int64(rec)*sigRecordSize
		roots, err = a.readRoots(s.Length)
		if err != nil || TreeHash(roots) != s.TreeHash {
			// The tree file is derived data: recompute it from the entries.
			roots, err = a.rebuildTreeLocked(s.Length, next.offsets)
			if err != nil {
				return err
			}
			if TreeHash(roots) != s.TreeHash {
				return &CorruptError{File: signaturesFile, Record: rec, Offset: recOff,
					Reason: fmt.Sprintf("signed tree hash does not match entries 0..%d", s.Length-1)}
			}
		}
		if err := s.Verify(a.key); err != nil {
			return &CorruptError{File: signaturesFile, Record: rec, Offset: recOff,
				Reason: "signature does not verify under the archive key"}
		}
		break
	}
	// Dropped roots are not part of the archive: the next writer cuts them
	// (and a later load reads them again, should their entries appear).
	a.sigEnd = headerSize + int64(len(a.signed)+len(fresh))*sigRecordSize
	if len(fresh) == 0 {
		return nil
	}
	if target != fresh[len(fresh)-1].Length {
		target = fresh[len(fresh)-1].Length
		if next, err = a.readEntriesLocked(target); err != nil {
			return err
		}
	}
	a.signed = append(a.signed, fresh...)
	a.length = target
	a.offsets = next.offsets[:target+1]
	a.roots = roots
	a.files = next.files
	a.tags = next.tags
	a.manifest = next.manifest
	a.snapCache = nil
	return nil
}

// logState is the committed state derived from entries.
type logState struct {
	length   uint64
	offsets  []int64
	files    map[string]FileState
	tags     map[string]Tag
	manifest Manifest
}

// readEntriesLocked reads entries from the current length up to target (or
// as many as are complete on disk) and returns the state they lead to.
func (a *Archive) readEntriesLocked(target uint64) (*logState, error) {
	st, err := a.entries.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	s := &logState{length: a.length, offsets: slices.Clone(a.offsets), files: a.files, tags: a.tags, manifest: a.manifest}
	cow := newIndexWriter(s)
	var buf []byte
	for s.length < target {
		off := s.offsets[len(s.offsets)-1]
		payload, next, err := readEntryRecord(a.entries, off, size, s.length, buf)
		if err != nil {
			var ce *CorruptError
			if errors.As(err, &ce) {
				break // what follows is missing or torn: the caller drops the roots that need it
			}
			return nil, err
		}
		buf = payload
		var e Entry
		if err := e.UnmarshalBinary(payload); err != nil {
			return nil, &CorruptError{File: entriesFile, Record: s.length, Offset: off, Reason: reason(err)}
		}
		if err := cow.apply(s.length, &e); err != nil {
			return nil, &CorruptError{File: entriesFile, Record: s.length, Offset: off, Reason: reason(err)}
		}
		s.length++
		s.offsets = append(s.offsets, next)
	}
	return s, nil
}

// indexWriter applies entries to a logState copy-on-write: the maps of the
// previous state are copied the first time they change, so snapshots that
// share them never see a change.
type indexWriter struct {
	s                 *logState
	filesOwn, tagsOwn bool
}

func newIndexWriter(s *logState) *indexWriter { return &indexWriter{s: s} }

// apply checks an entry against the log so far (FORMAT.md §4 rules that span
// entries) and records it.
func (w *indexWriter) apply(seq uint64, e *Entry) error {
	if (seq == 0) != (e.Type == EntryManifest) {
		return fmt.Errorf("entry %d is a %s entry; entry 0 and only entry 0 is the manifest", seq, e.Type)
	}
	switch e.Type {
	case EntryManifest:
		w.s.manifest = e.Manifest
	case EntryPut:
		w.ownFiles()
		w.s.files[e.Path] = FileState{Seq: seq, Size: e.File.Size, Mode: e.File.Mode, MTime: e.File.MTime}
	case EntryDelete:
		if _, ok := w.s.files[e.Path]; !ok {
			return fmt.Errorf("delete of %s, which does not exist", e.Path)
		}
		w.ownFiles()
		delete(w.s.files, e.Path)
	case EntryTag:
		if _, ok := w.s.tags[e.Tag.Name]; ok {
			return fmt.Errorf("%w: %s", ErrTagExists, e.Tag.Name)
		}
		if e.Tag.Target == 0 || e.Tag.Target > seq {
			return fmt.Errorf("tag %s names version %d, which is not before it", e.Tag.Name, e.Tag.Target)
		}
		if !w.tagsOwn {
			w.s.tags = cloneMap(w.s.tags)
			w.tagsOwn = true
		}
		w.s.tags[e.Tag.Name] = Tag{Name: e.Tag.Name, Version: e.Tag.Target, Seq: seq,
			Time: time.Unix(0, e.Tag.Time), Message: e.Tag.Message}
	}
	return nil
}

func (w *indexWriter) ownFiles() {
	if !w.filesOwn {
		w.s.files = cloneMap(w.s.files)
		w.filesOwn = true
	}
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	c := make(map[K]V, len(m)+1)
	for k, v := range m {
		c[k] = v
	}
	return c
}

// readRoots reads the full roots of a tree of length leaves.
func (a *Archive) readRoots(length uint64) ([]Node, error) {
	var scratch [64]uint64
	idx := flattree.FullRoots(scratch[:0], 2*length)
	roots := make([]Node, 0, len(idx))
	for _, i := range idx {
		n, err := a.node(i)
		if err != nil {
			return nil, err
		}
		roots = append(roots, n)
	}
	return roots, nil
}

// node reads tree node i.
func (a *Archive) node(i uint64) (Node, error) {
	var b [nodeRecordSize]byte
	if _, err := a.tree.ReadAt(b[:], nodeOffset(i)); err != nil {
		if errors.Is(err, io.EOF) {
			return Node{}, &CorruptError{File: treeFile, Record: i, Offset: nodeOffset(i), Reason: "node missing"}
		}
		return Node{}, err
	}
	n, ok := decodeNode(i, b[:])
	if !ok {
		return Node{}, &CorruptError{File: treeFile, Record: i, Offset: nodeOffset(i), Reason: "node missing"}
	}
	return n, nil
}

// loadChunkIndex reads index records appended since the last load. A torn
// last record, or records pointing past the end of the chunks file, end it.
func (a *Archive) loadChunkIndex() error {
	a.chunkMu.Lock()
	defer a.chunkMu.Unlock()
	if len(a.chunkBuf) > 0 || len(a.idxBuf) > 0 {
		return nil // this process is writing: nobody else can have appended
	}
	ist, err := a.chunkIdx.Stat()
	if err != nil {
		return err
	}
	cst, err := a.chunks.Stat()
	if err != nil {
		return err
	}
	isize, csize := ist.Size(), cst.Size()
	n := (isize - a.idxEnd) / indexRecordSize
	if n <= 0 {
		return nil
	}
	buf := make([]byte, n*indexRecordSize)
	if _, err := a.chunkIdx.ReadAt(buf, a.idxEnd); err != nil {
		return err
	}
	for i := int64(0); i < n; i++ {
		rec := buf[i*indexRecordSize : (i+1)*indexRecordSize]
		h, off, ln, err := DecodeIndexRecord(rec)
		if err != nil || off+int64(ln) > csize {
			if i < n-1 && err != nil {
				return &CorruptError{File: chunkIndexFile, Record: uint64((a.idxEnd - headerSize) / indexRecordSize),
					Offset: a.idxEnd, Reason: reason(err)}
			}
			break
		}
		a.chunkMap[h] = chunkLoc{off: off, n: ln}
		a.idxEnd += indexRecordSize
		if end := off + int64(ln); end > a.chunksEnd {
			a.chunksEnd = end
		}
	}
	a.chunksFlush = a.chunksEnd
	return nil
}

// Key returns the archive's public key.
func (a *Archive) Key() PublicKey { return a.key }

// Dir returns the directory holding the archive's storage.
func (a *Archive) Dir() string { return a.dir }

// Writable reports whether this handle holds the secret key.
func (a *Archive) Writable() bool { return a.opts.Secret != nil }

// Version returns the latest committed version (log length).
func (a *Archive) Version() uint64 {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.length
}

// CommitTime returns when the version holding entry seq was committed, or
// the zero time if seq is beyond the log.
func (a *Archive) CommitTime(seq uint64) time.Time {
	a.mu.RLock()
	defer a.mu.RUnlock()
	i, _ := slices.BinarySearchFunc(a.signed, seq+1, func(s SignedRoot, l uint64) int {
		switch {
		case s.Length < l:
			return -1
		case s.Length > l:
			return 1
		}
		return 0
	})
	if i < len(a.signed) {
		return time.Unix(0, a.signed[i].Time)
	}
	return time.Time{}
}

// RolledBack reports how many signed versions Open dropped because a crash
// had left their data incomplete (only possible after power loss without
// Options.Sync: a killed process never loses a committed version).
func (a *Archive) RolledBack() int {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.rolled
}

// Manifest returns entry 0.
func (a *Archive) Manifest() Manifest {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.manifest
}

// SignedRoot returns the signed root of the latest version.
func (a *Archive) SignedRoot() SignedRoot {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if len(a.signed) == 0 {
		return SignedRoot{}
	}
	return a.signed[len(a.signed)-1]
}

// Versions returns the signed root of every committed version, oldest first.
func (a *Archive) Versions() []SignedRoot {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return slices.Clone(a.signed)
}

// Tags returns the archive's tags ordered by the version they name.
func (a *Archive) Tags() []Tag {
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := make([]Tag, 0, len(a.tags))
	for _, t := range a.tags {
		out = append(out, t)
	}
	slices.SortFunc(out, func(x, y Tag) int {
		if x.Version != y.Version {
			return int(int64(x.Version) - int64(y.Version))
		}
		return int(int64(x.Seq) - int64(y.Seq))
	})
	return out
}

// Refresh loads versions that another process committed since this handle
// last looked.
func (a *Archive) Refresh() error { return a.load(false) }

// Entry reads and decodes log entry seq of the committed log.
func (a *Archive) Entry(seq uint64) (Entry, error) {
	b, err := a.EntryBytes(seq)
	if err != nil {
		return Entry{}, err
	}
	var e Entry
	if err := e.UnmarshalBinary(b); err != nil {
		return Entry{}, &CorruptError{File: entriesFile, Record: seq, Reason: reason(err)}
	}
	return e, nil
}

// EntryBytes returns the encoding of log entry seq of the committed log.
func (a *Archive) EntryBytes(seq uint64) ([]byte, error) {
	a.mu.RLock()
	if seq >= a.length {
		a.mu.RUnlock()
		return nil, fmt.Errorf("%w: entry %d is beyond the log (length %d)", ErrNoVersion, seq, a.length)
	}
	off, end := a.offsets[seq], a.offsets[seq+1]
	a.mu.RUnlock()
	b, _, err := readEntryRecord(a.entries, off, end, seq, nil)
	return b, err
}

// Sync flushes pending chunks and fsyncs every storage file. Call it before
// telling anyone else about a version, so a power loss cannot make the
// archive sign a different history at the same length.
func (a *Archive) Sync() error {
	if err := a.flushChunks(); err != nil {
		return err
	}
	for _, f := range []*os.File{a.chunks, a.chunkIdx, a.entries, a.tree, a.sigFile} {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	return nil
}

// Close releases the archive's files. Snapshots taken from it stop working.
func (a *Archive) Close() error {
	flushErr := a.flushChunks()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true
	a.notify.close()
	err := a.closeFiles()
	if flushErr != nil {
		return flushErr
	}
	return err
}

func (a *Archive) closeFiles() error {
	var first error
	for _, f := range []*os.File{a.entries, a.tree, a.sigFile, a.chunks, a.chunkIdx, a.inUse} {
		if f != nil {
			if err := f.Close(); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}
