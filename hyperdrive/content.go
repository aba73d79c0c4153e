package hyperdrive

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/restic/chunker"
)

// chunkSink stores a chunk under its hash and says whether it was new.
type chunkSink interface {
	putChunk(h Hash, data []byte) (stored bool, err error)
}

// ContentStats counts what writing one file's content did.
type ContentStats struct {
	Bytes     uint64 // bytes read from the source
	Chunks    int    // chunks (data and index) the content references
	NewChunks int    // of those, chunks not stored before
	NewBytes  uint64 // bytes of the new chunks
}

// contentWriter cuts a stream into Rabin chunks, stores them and builds the
// Content that addresses them. One per goroutine: it owns the chunker's
// 512 KiB read buffer and a chunk buffer, reused from file to file.
type contentWriter struct {
	params ChunkParams
	rabin  *chunker.Chunker
	buf    []byte
}

func newContentWriter(p ChunkParams) *contentWriter {
	return &contentWriter{
		params: p,
		rabin:  chunker.NewWithBoundaries(eofReader{}, chunker.Pol(p.Polynomial), uint(p.Min), uint(p.Max)),
		buf:    make([]byte, p.Max),
	}
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// write chunks r to the end and stores every chunk in sink.
func (cw *contentWriter) write(r io.Reader, sink chunkSink) (Content, ContentStats, error) {
	var st ContentStats
	cw.rabin.ResetWithBoundaries(r, chunker.Pol(cw.params.Polynomial), uint(cw.params.Min), uint(cw.params.Max))
	cw.rabin.SetAverageBits(int(cw.params.AvgBits))
	b := newRefBuilder(cw.params, sink, &st)
	for {
		c, err := cw.rabin.Next(cw.buf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Content{}, st, err
		}
		st.Bytes += uint64(c.Length)
		h := Hash(sha256.Sum256(c.Data))
		if err := storeCounted(sink, h, c.Data, &st); err != nil {
			return Content{}, st, err
		}
		if err := b.add(Ref{Hash: h, Size: uint64(c.Length)}); err != nil {
			return Content{}, st, err
		}
	}
	c, err := b.finish()
	return c, st, err
}

func storeCounted(sink chunkSink, h Hash, data []byte, st *ContentStats) error {
	st.Chunks++
	stored, err := sink.putChunk(h, data)
	if err != nil {
		return err
	}
	if stored {
		st.NewChunks++
		st.NewBytes += uint64(len(data))
	}
	return nil
}

// refBuilder turns a stream of level-0 refs into a Content. Up to
// maxInlineRefs refs stay inline in the entry; beyond that they are grouped
// into index blocks at content-defined boundaries (a ref whose hash ends a
// group, or maxInlineRefs refs), so that an edit in the middle of a large
// file rewrites only the index block around it. Levels stack as needed.
// Memory stays bounded: a level keeps at most maxInlineRefs+1 refs before it
// knows it must spill, and one open group after.
type refBuilder struct {
	params  ChunkParams
	sink    chunkSink
	st      *ContentStats
	levels  []*refLevel
	scratch []byte
}

type refLevel struct {
	refs    []Ref // pending refs of this level
	spilled bool  // whether groups of this level have been written as index blocks
}

func newRefBuilder(p ChunkParams, sink chunkSink, st *ContentStats) *refBuilder {
	return &refBuilder{params: p, sink: sink, st: st, levels: []*refLevel{{}}}
}

func (b *refBuilder) add(r Ref) error { return b.addAt(0, r) }

func (b *refBuilder) addAt(level int, r Ref) error {
	if level > maxContentLevel {
		return fmt.Errorf("hyperdrive: file needs more than %d index levels", maxContentLevel)
	}
	for len(b.levels) <= level {
		b.levels = append(b.levels, &refLevel{})
	}
	l := b.levels[level]
	l.refs = append(l.refs, r)
	if l.spilled {
		if len(l.refs) == maxInlineRefs || b.endsGroup(r) {
			return b.flushGroup(level, len(l.refs))
		}
		return nil
	}
	if len(l.refs) <= maxInlineRefs {
		return nil
	}
	// This level no longer fits inline: cut its pending refs into groups
	// from the start, exactly as if it had been spilling all along.
	l.spilled = true
	start := 0
	for i := range l.refs {
		if i-start+1 == maxInlineRefs || b.endsGroup(l.refs[i]) {
			if err := b.writeGroup(level, l.refs[start:i+1]); err != nil {
				return err
			}
			start = i + 1
		}
	}
	l.refs = append(l.refs[:0], l.refs[start:]...)
	return nil
}

// flushGroup writes the first n pending refs of level as one index block.
func (b *refBuilder) flushGroup(level, n int) error {
	l := b.levels[level]
	if err := b.writeGroup(level, l.refs[:n]); err != nil {
		return err
	}
	l.refs = append(l.refs[:0], l.refs[n:]...)
	return nil
}

func (b *refBuilder) endsGroup(r Ref) bool {
	mask := uint32(1)<<b.params.IndexBits - 1
	return binary.BigEndian.Uint32(r.Hash[28:])&mask == 0
}

// writeGroup stores refs as an index block and adds its ref one level up.
func (b *refBuilder) writeGroup(level int, refs []Ref) error {
	b.scratch = appendIndexBlock(b.scratch[:0], refs)
	h := Hash(sha256.Sum256(b.scratch))
	var size uint64
	for _, r := range refs {
		size += r.Size
	}
	if err := storeCounted(b.sink, h, b.scratch, b.st); err != nil {
		return err
	}
	return b.addAt(level+1, Ref{Hash: h, Size: size})
}

// finish flushes the open groups and returns the top level's refs.
func (b *refBuilder) finish() (Content, error) {
	for level := 0; level < len(b.levels); level++ {
		l := b.levels[level]
		if !l.spilled {
			// The top: everything fits inline.
			return Content{Level: uint8(level), Refs: append([]Ref(nil), l.refs...)}, nil
		}
		if len(l.refs) > 0 {
			if err := b.flushGroup(level, len(l.refs)); err != nil {
				return Content{}, err
			}
		}
	}
	panic("unreachable: the top level never spills")
}

// Index block encoding (FORMAT.md §5): 0x01 ‖ uvarint(n) ‖ n × (hash ‖ uvarint size).
const indexBlockType = 0x01

func appendIndexBlock(b []byte, refs []Ref) []byte {
	b = append(b, indexBlockType)
	b = binary.AppendUvarint(b, uint64(len(refs)))
	for _, r := range refs {
		b = append(b, r.Hash[:]...)
		b = binary.AppendUvarint(b, r.Size)
	}
	return b
}

// DecodeIndexBlock decodes an index block whose refs are of the given level
// (level 0: data chunks, whose sizes are bounded by MaxChunkSize).
func DecodeIndexBlock(b []byte, childLevel uint8) ([]Ref, error) {
	if len(b) > MaxChunkSize {
		return nil, fmt.Errorf("%w: index block of %d bytes", ErrMalformed, len(b))
	}
	d := decoder{b: b}
	if t := d.byte(); t != indexBlockType && d.err == nil {
		d.fail("index block type %d", t)
	}
	c := Content{Level: childLevel}
	n := d.uvarintMax(maxInlineRefs)
	if d.err == nil && n == 0 {
		d.fail("empty index block")
	}
	if d.err == nil && uint64(len(d.b)) < n*33 {
		d.fail("truncated index block")
	}
	if d.err != nil {
		return nil, d.err
	}
	c.Refs = make([]Ref, n)
	for i := range c.Refs {
		copy(c.Refs[i].Hash[:], d.bytes(32))
		c.Refs[i].Size = d.uvarint()
		if d.err == nil && (c.Refs[i].Size == 0 || (childLevel == 0 && c.Refs[i].Size > MaxChunkSize) || c.Refs[i].Size > maxFileSize) {
			d.fail("ref size %d out of range", c.Refs[i].Size)
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes after index block", ErrMalformed, len(d.b))
	}
	return c.Refs, nil
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }
