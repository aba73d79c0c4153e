package hyperdrive

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"sync"
)

// File reads one file of a snapshot. Every chunk it returns has been checked
// against its SHA-256 address, which the signed log commits to. ReadAt may be
// called concurrently; Read and Seek share a position like an *os.File's.
type File struct {
	a       *Archive
	info    fileInfo
	content Content
	top     refList

	mu        sync.Mutex
	pos       int64
	blocks    map[Hash]refList // decoded index blocks
	last      Hash             // the chunk last read, kept for sequential reads
	data      []byte
	lastStart uint64 // file offset of data
}

// refList is a level of refs with the cumulative byte offset of each end.
type refList struct {
	refs []Ref
	ends []uint64
}

func newRefList(refs []Ref) refList {
	l := refList{refs: refs, ends: make([]uint64, len(refs))}
	var sum uint64
	for i, r := range refs {
		sum += r.Size
		l.ends[i] = sum
	}
	return l
}

func newFile(a *Archive, info fileInfo, c Content) *File {
	return &File{a: a, info: info, content: c, top: newRefList(c.Refs)}
}

// Stat returns the file's metadata; Sys() is its FileState.
func (f *File) Stat() (fs.FileInfo, error) { return f.info, nil }

// Size returns the file's length in bytes.
func (f *File) Size() int64 { return int64(f.info.st.Size) }

// Content returns the file's chunk list.
func (f *File) Content() Content { return f.content }

// Close implements fs.File.
func (f *File) Close() error { return nil }

// Read implements io.Reader.
func (f *File) Read(p []byte) (int, error) {
	f.mu.Lock()
	off := f.pos
	f.mu.Unlock()
	n, err := f.ReadAt(p, off)
	f.mu.Lock()
	f.pos = off + int64(n)
	f.mu.Unlock()
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// Seek implements io.Seeker.
func (f *File) Seek(offset int64, whence int) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.pos
	case io.SeekEnd:
		offset += f.Size()
	default:
		return 0, errors.New("hyperdrive: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("hyperdrive: negative position")
	}
	f.pos = offset
	return offset, nil
}

// ReadAt implements io.ReaderAt, fetching only the chunks that cover
// [off, off+len(p)).
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("hyperdrive: negative offset")
	}
	size := f.Size()
	n := 0
	for n < len(p) && off < size {
		data, start, err := f.cachedChunkAt(uint64(off))
		if err != nil {
			return n, err
		}
		c := copy(p[n:], data[off-int64(start):])
		n += c
		off += int64(c)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteTo implements io.WriterTo so io.Copy streams chunk by chunk. When w
// offers its free buffer (bufio.Writer, bytes.Buffer), stored chunks are
// read straight into it: no allocation and one copy less per chunk, which
// is what exporting a clone spends its time on.
func (f *File) WriteTo(w io.Writer) (int64, error) {
	f.mu.Lock()
	off := f.pos
	f.mu.Unlock()
	ab, direct := w.(interface{ AvailableBuffer() []byte })
	var total int64
	for off < f.Size() {
		var data []byte
		var start uint64
		var err error
		if direct {
			var ref Ref
			ref, start, err = f.refAt(uint64(off))
			if err == nil {
				data, err = f.a.readChunkInto(ref.Hash, ab.AvailableBuffer())
			}
			if err == nil && uint64(len(data)) != ref.Size {
				err = fmt.Errorf("%w: chunk %x is %d bytes, its ref says %d", ErrMalformed, ref.Hash[:8], len(data), ref.Size)
			}
		} else {
			data, start, err = f.cachedChunkAt(uint64(off))
		}
		if err != nil {
			return total, err
		}
		n, err := w.Write(data[off-int64(start):])
		total += int64(n)
		off += int64(n)
		if err != nil {
			return total, err
		}
	}
	f.mu.Lock()
	f.pos = off
	f.mu.Unlock()
	return total, nil
}

// cachedChunkAt is chunkAt with a fast path for reads inside the chunk read
// last, which small sequential reads hit almost always.
func (f *File) cachedChunkAt(off uint64) ([]byte, uint64, error) {
	f.mu.Lock()
	if f.data != nil && off >= f.lastStart && off < f.lastStart+uint64(len(f.data)) {
		d, s := f.data, f.lastStart
		f.mu.Unlock()
		return d, s, nil
	}
	f.mu.Unlock()
	data, start, err := f.chunkAt(off)
	if err == nil {
		f.mu.Lock()
		f.lastStart = start
		f.mu.Unlock()
	}
	return data, start, err
}

// chunkAt returns the data chunk holding byte off and the file offset where
// that chunk starts.
func (f *File) chunkAt(off uint64) ([]byte, uint64, error) {
	ref, start, err := f.refAt(off)
	if err != nil {
		return nil, 0, err
	}
	data, err := f.chunk(ref)
	return data, start, err
}

// refAt returns the ref of the data chunk holding byte off and the file
// offset where that chunk starts, reading index blocks on the way down.
func (f *File) refAt(off uint64) (Ref, uint64, error) {
	list := f.top
	level := f.content.Level
	var base uint64
	for {
		i := sort.Search(len(list.ends), func(i int) bool { return list.ends[i] > off-base })
		if i == len(list.ends) {
			return Ref{}, 0, fmt.Errorf("%w: offset %d beyond the refs of %s", ErrMalformed, off, f.info.name)
		}
		start := base
		if i > 0 {
			start += list.ends[i-1]
		}
		ref := list.refs[i]
		if level == 0 {
			return ref, start, nil
		}
		next, err := f.index(ref, level-1)
		if err != nil {
			return Ref{}, 0, err
		}
		list, base, level = next, start, level-1
	}
}

func (f *File) chunk(ref Ref) ([]byte, error) {
	f.mu.Lock()
	if f.data != nil && f.last == ref.Hash {
		d := f.data
		f.mu.Unlock()
		return d, nil
	}
	f.mu.Unlock()
	data, err := f.a.readChunk(ref.Hash)
	if err != nil {
		return nil, err
	}
	if uint64(len(data)) != ref.Size {
		return nil, fmt.Errorf("%w: chunk %x is %d bytes, its ref says %d", ErrMalformed, ref.Hash[:8], len(data), ref.Size)
	}
	f.mu.Lock()
	f.last, f.data = ref.Hash, data
	f.mu.Unlock()
	return data, nil
}

func (f *File) index(ref Ref, childLevel uint8) (refList, error) {
	f.mu.Lock()
	if l, ok := f.blocks[ref.Hash]; ok {
		f.mu.Unlock()
		return l, nil
	}
	f.mu.Unlock()
	b, err := f.a.readChunk(ref.Hash)
	if err != nil {
		return refList{}, err
	}
	refs, err := DecodeIndexBlock(b, childLevel)
	if err != nil {
		return refList{}, err
	}
	l := newRefList(refs)
	if l.ends[len(l.ends)-1] != ref.Size {
		return refList{}, fmt.Errorf("%w: index block %x covers %d bytes, its ref says %d", ErrMalformed, ref.Hash[:8], l.ends[len(l.ends)-1], ref.Size)
	}
	f.mu.Lock()
	if f.blocks == nil {
		f.blocks = map[Hash]refList{}
	}
	if len(f.blocks) > 64 {
		clear(f.blocks)
	}
	f.blocks[ref.Hash] = l
	f.mu.Unlock()
	return l, nil
}

// readChunk returns the bytes addressed by h, checked against h: stored
// ones, or, for a replica that lacks them, fetched from peers.
func (a *Archive) readChunk(h Hash) ([]byte, error) { return a.readChunkInto(h, nil) }

// readChunkInto is readChunk reading stored bytes into buf's spare capacity
// when they fit (the result then shares buf's array).
func (a *Archive) readChunkInto(h Hash, buf []byte) ([]byte, error) {
	data, err := a.readLocalChunkInto(h, buf)
	if !errors.Is(err, ErrChunkMissing) {
		return data, err
	}
	a.mu.RLock()
	fetch := a.fetcher
	a.mu.RUnlock()
	if fetch == nil {
		return nil, err
	}
	data, err = fetch(h)
	if err != nil {
		return nil, fmt.Errorf("%w: %x: %w", ErrChunkMissing, h[:8], err)
	}
	if Hash(sha256Sum(data)) != h {
		return nil, fmt.Errorf("%w: fetched chunk %x does not match its address", ErrBadProof, h[:8])
	}
	return data, nil
}

// readLocalChunk returns the stored bytes addressed by h, checked against h.
func (a *Archive) readLocalChunk(h Hash) ([]byte, error) { return a.readLocalChunkInto(h, nil) }

// readLocalChunkInto is readLocalChunk reading into buf's spare capacity
// when the chunk fits there.
func (a *Archive) readLocalChunkInto(h Hash, buf []byte) ([]byte, error) {
	a.chunkMu.Lock()
	loc, ok := a.chunkMap[h]
	pending := ok && loc.off+int64(loc.n) > a.chunksFlush
	a.chunkMu.Unlock()
	if pending {
		if err := a.flushChunks(); err != nil {
			return nil, err
		}
	}
	if !ok {
		// Another process may have stored it since we loaded the index.
		if err := a.loadChunkIndex(); err != nil {
			return nil, err
		}
		a.chunkMu.Lock()
		loc, ok = a.chunkMap[h]
		a.chunkMu.Unlock()
		if !ok {
			return nil, fmt.Errorf("%w: %x", ErrChunkMissing, h)
		}
	}
	var data []byte
	if cap(buf)-len(buf) >= int(loc.n) {
		data = buf[len(buf) : len(buf)+int(loc.n)]
	} else {
		data = make([]byte, loc.n)
	}
	if _, err := a.chunks.ReadAt(data, loc.off); err != nil {
		return nil, err
	}
	if loc.checked {
		return data, nil
	}
	if Hash(sha256Sum(data)) != h {
		return nil, &CorruptError{File: chunksFile, Offset: loc.off - chunkHeaderSize,
			Record: 0, Reason: fmt.Sprintf("chunk %x does not match its SHA-256 address", h[:8])}
	}
	// Checked once per process: a seeder serving many peers, or a clone
	// exporting what it just verified, hashes each chunk once, not per read.
	a.chunkMu.Lock()
	if cur, ok := a.chunkMap[h]; ok && cur.off == loc.off {
		cur.checked = true
		a.chunkMap[h] = cur
	}
	a.chunkMu.Unlock()
	return data, nil
}
