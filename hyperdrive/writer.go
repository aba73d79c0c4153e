package hyperdrive

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
)

// Writer appends to an archive. It holds the archive's writer lock, across
// processes, from Begin to Close: content written through it goes straight
// to the chunk store, entries are staged, and Commit appends them as one new
// signed version.
type Writer struct {
	a      *Archive
	lock   *writerLock
	staged []Entry
	closed bool
	sync   bool // BeginSync: appends only what peers send, verified
}

// Begin takes the writer lock, waiting until ctx is done if another process
// holds it (then it fails with a *LockedError naming the holder), and loads
// whatever other writers committed in the meantime.
func (a *Archive) Begin(ctx context.Context) (*Writer, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	return a.begin(ctx)
}

func (a *Archive) begin(ctx context.Context) (*Writer, error) {
	if a.opts.Secret == nil {
		return nil, ErrReadOnly
	}
	return a.lockWriter(ctx, false)
}

// BeginSync takes the writer lock of a replica (or any writable archive) to
// append what peers send: entries that extend the log and the signed roots
// they reach (AppendVerified), and chunks (PutChunk). Everything is checked
// before it is stored; nothing else can be written through it.
func (a *Archive) BeginSync(ctx context.Context) (*Writer, error) {
	if !a.writable {
		return nil, ErrReadOnly
	}
	return a.lockWriter(ctx, true)
}

func (a *Archive) lockWriter(ctx context.Context, sync bool) (*Writer, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	a.writeMu.Lock()
	holder := a.opts.LockHolder
	if holder == "" {
		holder = defaultHolder()
	}
	lock, err := acquireLock(ctx, a.dir, holder)
	if err != nil {
		a.writeMu.Unlock()
		return nil, err
	}
	w := &Writer{a: a, lock: lock, sync: sync}
	a.mu.Lock()
	a.writing = true
	a.mu.Unlock()
	if err := a.load(true); err != nil {
		w.Close()
		return nil, err
	}
	if err := a.truncateTails(); err != nil {
		w.Close()
		return nil, err
	}
	return w, nil
}

// truncateTails cuts whatever a crashed writer left after the last complete
// version: uncommitted entries, a torn signature record, torn chunk records.
// Complete chunk records that lost their index record are indexed again, so
// an interrupted import does not store its chunks twice.
func (a *Archive) truncateTails() error {
	a.mu.RLock()
	entriesEnd := a.offsets[len(a.offsets)-1]
	sigEnd := a.sigEnd
	a.mu.RUnlock()
	if err := a.entries.Truncate(entriesEnd); err != nil {
		return err
	}
	if err := a.sigFile.Truncate(sigEnd); err != nil {
		return err
	}
	if err := a.reindexChunkTail(); err != nil {
		return err
	}
	return a.flushChunks()
}

// reindexChunkTail indexes complete chunk records after the last indexed
// one and cuts a torn record at the end of the chunks file.
func (a *Archive) reindexChunkTail() error {
	a.chunkMu.Lock()
	defer a.chunkMu.Unlock()
	if err := a.chunkIdx.Truncate(a.idxEnd); err != nil {
		return err
	}
	st, err := a.chunks.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	off := a.chunksEnd
	var hdr [chunkHeaderSize]byte
	data := make([]byte, MaxChunkSize)
	for off+chunkHeaderSize <= size {
		if _, err := a.chunks.ReadAt(hdr[:], off); err != nil {
			return err
		}
		h, n, err := DecodeChunkHeader(hdr[:])
		if err != nil || off+chunkHeaderSize+int64(n) > size {
			break
		}
		d := data[:n]
		if _, err := a.chunks.ReadAt(d, off+chunkHeaderSize); err != nil {
			return err
		}
		if Hash(sha256Sum(d)) != h {
			break // torn
		}
		loc := chunkLoc{off: off + chunkHeaderSize, n: n, checked: true}
		if _, ok := a.chunkMap[h]; !ok {
			a.chunkMap[h] = loc
			a.idxBuf = append(a.idxBuf, encodeIndexRecord(h, loc)...)
		}
		off += chunkHeaderSize + int64(n)
	}
	if err := a.chunks.Truncate(off); err != nil {
		return err
	}
	a.chunksEnd, a.chunksFlush = off, off
	return nil
}

// WriteContent cuts r into chunks, stores the new ones and returns the
// Content addressing them. It may be called from several goroutines at once.
func (w *Writer) WriteContent(r io.Reader) (Content, ContentStats, error) {
	if w.closed {
		return Content{}, ContentStats{}, ErrClosed
	}
	if w.sync {
		return Content{}, ContentStats{}, ErrReadOnly
	}
	a := w.a
	cw, _ := a.contentPool.Get().(*contentWriter)
	params := a.Manifest().Chunking
	if params == (ChunkParams{}) {
		params = DefaultChunkParams
	}
	if cw == nil || cw.params != params {
		cw = newContentWriter(params)
	}
	defer a.contentPool.Put(cw)
	return cw.write(r, a)
}

// putChunk stores a chunk unless it is stored already. Chunks are buffered
// and written a megabyte at a time, outside chunkMu, so other workers keep
// chunking while one writes.
func (a *Archive) putChunk(h Hash, data []byte) (bool, error) {
	a.chunkMu.Lock()
	if _, ok := a.chunkMap[h]; ok {
		a.chunkMu.Unlock()
		return false, nil
	}
	// Callers hashed data (the writer cut it, a replica verified it).
	loc := chunkLoc{off: a.chunksEnd + chunkHeaderSize, n: uint32(len(data)), checked: true}
	a.chunkBuf = appendChunkRecord(a.chunkBuf, h, data)
	a.idxBuf = append(a.idxBuf, encodeIndexRecord(h, loc)...)
	a.chunkMap[h] = loc
	a.chunksEnd = loc.off + int64(loc.n)
	full := len(a.chunkBuf) >= 1<<20
	a.chunkMu.Unlock()
	if full {
		return true, a.flushChunks()
	}
	return true, nil
}

// flushChunks writes buffered chunk records, then their index records: an
// index record never reaches the disk before the chunk it points to, and
// flushes happen one at a time, in order, so the chunks file never has a
// hole before a complete record.
func (a *Archive) flushChunks() error {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	a.chunkMu.Lock()
	chunks, idx := a.chunkBuf, a.idxBuf
	a.chunkBuf, a.idxBuf = a.spareChunkBuf[:0], a.spareIdxBuf[:0]
	chunkOff, idxOff := a.chunksFlush, a.idxEnd
	a.chunkMu.Unlock()
	var err error
	if len(chunks) > 0 {
		_, err = a.chunks.WriteAt(chunks, chunkOff)
	}
	if err == nil && len(idx) > 0 {
		_, err = a.chunkIdx.WriteAt(idx, idxOff)
	}
	a.chunkMu.Lock()
	defer a.chunkMu.Unlock()
	if err != nil {
		// Put the records back in front of anything buffered since, so a
		// later flush retries them in order.
		a.chunkBuf = append(chunks, a.chunkBuf...)
		a.idxBuf = append(idx, a.idxBuf...)
		return err
	}
	a.chunksFlush += int64(len(chunks))
	a.idxEnd += int64(len(idx))
	a.spareChunkBuf, a.spareIdxBuf = chunks, idx
	return nil
}

// Put stages a put entry for path.
func (w *Writer) Put(path string, meta FileMeta, c Content) error {
	if w.sync {
		return ErrReadOnly
	}
	e := Entry{Type: EntryPut, Path: path, File: meta, Content: c}
	if err := e.validate(); err != nil {
		return err
	}
	w.staged = append(w.staged, e)
	return nil
}

// Delete stages the removal of path.
func (w *Writer) Delete(path string) error {
	if w.sync {
		return ErrReadOnly
	}
	e := Entry{Type: EntryDelete, Path: path}
	if err := e.validate(); err != nil {
		return err
	}
	w.staged = append(w.staged, e)
	return nil
}

// Tag stages a tag naming the latest committed version. name is a semantic
// version ("2.1.0"; "v2.1.0" is accepted and stored without the "v").
func (w *Writer) Tag(name, message string) (string, error) {
	if w.sync {
		return "", ErrReadOnly
	}
	canon, err := CanonicalTag(name)
	if err != nil {
		return "", err
	}
	a := w.a
	a.mu.RLock()
	existing, exists := a.tags[canon]
	version := a.length
	a.mu.RUnlock()
	if exists {
		return "", fmt.Errorf("%w: %s names version %d; tags never move, choose a new version number", ErrTagExists, canon, existing.Version)
	}
	for _, e := range w.staged {
		if e.Type == EntryTag && e.Tag.Name == canon {
			return "", fmt.Errorf("%w: %s", ErrTagExists, canon)
		}
	}
	e := Entry{Type: EntryTag, Tag: TagInfo{Name: canon, Target: version, Time: a.opts.now().UnixNano(), Message: message}}
	if err := e.validate(); err != nil {
		return "", err
	}
	w.staged = append(w.staged, e)
	return canon, nil
}

// Staged returns how many entries wait for Commit.
func (w *Writer) Staged() int { return len(w.staged) }

// Commit appends the staged entries as one new version, signs its root and
// returns the version. With nothing staged it returns the current version
// and writes nothing. Readers never see part of a commit: the signature
// record, written last, is what makes it exist.
func (w *Writer) Commit() (uint64, error) {
	if w.closed {
		return 0, ErrClosed
	}
	if w.sync {
		return 0, ErrReadOnly
	}
	a := w.a
	a.mu.RLock()
	length, roots, offsets := a.length, slices.Clone(a.roots), a.offsets
	sigEnd := a.sigEnd
	state := &logState{length: a.length, files: a.files, tags: a.tags, manifest: a.manifest}
	a.mu.RUnlock()
	if len(w.staged) == 0 {
		return length, nil
	}
	if err := a.flushChunks(); err != nil {
		return 0, err
	}

	now := a.opts.now()
	cow := newIndexWriter(state)
	var records []byte
	var nodes []Node
	newOffsets := slices.Clone(offsets)
	end := offsets[len(offsets)-1]
	for i := range w.staged {
		e := &w.staged[i]
		seq := length + uint64(i)
		if err := cow.apply(seq, e); err != nil {
			return 0, err
		}
		b, err := e.MarshalBinary()
		if err != nil {
			return 0, err
		}
		records = appendEntryRecord(records, b)
		end += entryHeaderSize + int64(len(b))
		newOffsets = append(newOffsets, end)
		roots, nodes = pushLeaf(roots, nodes, leafNode(seq, b))
	}
	newLength := length + uint64(len(w.staged))
	if _, err := a.entries.WriteAt(records, offsets[len(offsets)-1]); err != nil {
		return 0, err
	}
	if err := a.writeNodes(nodes); err != nil {
		return 0, err
	}
	if a.opts.Sync {
		for _, f := range []*os.File{a.chunks, a.chunkIdx, a.entries, a.tree} {
			if err := f.Sync(); err != nil {
				return 0, err
			}
		}
	}
	sr := sign(a.opts.Secret, roots, newLength, now.UnixNano())
	if _, err := a.sigFile.WriteAt(encodeSignedRoot(sr), sigEnd); err != nil {
		return 0, err
	}
	if a.opts.Sync {
		if err := a.sigFile.Sync(); err != nil {
			return 0, err
		}
	}

	a.mu.Lock()
	a.length = newLength
	a.signed = append(a.signed, sr)
	a.offsets = newOffsets
	a.roots = roots
	a.sigEnd = sigEnd + sigRecordSize
	a.files, a.tags, a.manifest = state.files, state.tags, state.manifest
	a.mu.Unlock()
	w.staged = w.staged[:0]
	a.notify.publish(newLength)
	return newLength, nil
}

// writeNodes writes tree nodes, coalescing adjacent slots into one write.
func (a *Archive) writeNodes(nodes []Node) error {
	slices.SortFunc(nodes, func(x, y Node) int {
		switch {
		case x.Index < y.Index:
			return -1
		case x.Index > y.Index:
			return 1
		}
		return 0
	})
	var buf []byte
	start := uint64(0)
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		_, err := a.tree.WriteAt(buf, nodeOffset(start))
		buf = buf[:0]
		return err
	}
	for i, n := range nodes {
		if i > 0 && n.Index != nodes[i-1].Index+1 {
			if err := flush(); err != nil {
				return err
			}
		}
		if len(buf) == 0 {
			start = n.Index
		}
		buf = append(buf, encodeNode(n)...)
	}
	return flush()
}

// rebuildTreeLocked recomputes the tree of the first length entries from the
// entries themselves, rewrites its nodes when the archive is writable, and
// returns its roots. Used when the tree file does not match a signed root.
func (a *Archive) rebuildTreeLocked(length uint64, offsets []int64) ([]Node, error) {
	var roots, nodes []Node
	var buf []byte
	for seq := uint64(0); seq < length; seq++ {
		payload, _, err := readEntryRecord(a.entries, offsets[seq], offsets[seq+1], seq, buf)
		if err != nil {
			return nil, err
		}
		buf = payload
		roots, nodes = pushLeaf(roots, nodes, leafNode(seq, payload))
		if len(nodes) >= 4096 && a.writable {
			if err := a.writeNodes(nodes); err != nil {
				return nil, err
			}
			nodes = nodes[:0]
		}
	}
	if a.writable {
		if err := a.writeNodes(nodes); err != nil {
			return nil, err
		}
	}
	return roots, nil
}

// Close releases the writer lock. Staged entries that were not committed
// are dropped; chunks written stay stored and serve the next import.
func (w *Writer) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	a := w.a
	err := a.flushChunks()
	if lerr := w.lock.release(); err == nil {
		err = lerr
	}
	a.mu.Lock()
	a.writing = false
	a.mu.Unlock()
	a.writeMu.Unlock()
	return err
}

// notifier tells subscribers about new versions. Each subscriber has a
// one-slot channel that always holds the newest version not yet read, so a
// slow subscriber skips versions instead of blocking the writer.
type notifier struct {
	mu     sync.Mutex
	subs   map[chan uint64]struct{}
	closed bool
}

func (n *notifier) subscribe() chan uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	ch := make(chan uint64, 1)
	if n.closed {
		close(ch)
		return ch
	}
	if n.subs == nil {
		n.subs = map[chan uint64]struct{}{}
	}
	n.subs[ch] = struct{}{}
	return ch
}

func (n *notifier) unsubscribe(ch chan uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.subs[ch]; ok {
		delete(n.subs, ch)
		close(ch)
	}
}

func (n *notifier) publish(v uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for ch := range n.subs {
		select {
		case <-ch:
		default:
		}
		ch <- v
	}
}

func (n *notifier) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closed = true
	for ch := range n.subs {
		close(ch)
	}
	n.subs = nil
}

// Subscribe returns a channel that receives the archive's version each time
// a commit made through this handle lands (the newest one if several landed
// since the last receive), and a function that stops the subscription. The
// channel is closed when the archive or the subscription is closed.
func (a *Archive) Subscribe() (<-chan uint64, func()) {
	ch := a.notify.subscribe()
	return ch, func() { a.notify.unsubscribe(ch) }
}
