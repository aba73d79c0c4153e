package hyperdrive

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// VerifyOptions tune Verify.
type VerifyOptions struct {
	// Sparse accepts chunks that are referenced but not stored, as in a
	// partial copy of someone else's archive.
	Sparse bool
	// Progress, if set, is called with the bytes of chunk data checked so far.
	Progress func(done, total int64)
}

// VerifyReport says what Verify checked and what it found.
type VerifyReport struct {
	Versions    int
	Entries     uint64
	Chunks      int
	ChunkBytes  int64
	Missing     int             // referenced chunks not stored (Sparse)
	Problems    []*CorruptError // every fault, in the order found
	TornTails   []string        // leftovers of an interrupted write, which the next writer cuts
	LastVersion uint64
}

// OK reports whether no problem was found.
func (r *VerifyReport) OK() bool { return len(r.Problems) == 0 }

// maxProblems bounds the report on a badly damaged archive.
const maxProblems = 100

// Verify re-checks an archive directory from its raw files, without trusting
// any of them: every signature record, entry record, Merkle node, index
// record and chunk. It reads the files directly rather than through Open, so
// it can report on archives that no longer open. Its error is only for I/O
// failures; faults in the data are the report's Problems.
func Verify(ctx context.Context, dir string, key PublicKey, opts VerifyOptions) (*VerifyReport, error) {
	v := &verifier{dir: dir, key: key, opts: opts, rep: &VerifyReport{}}
	if err := v.run(ctx); err != nil {
		return v.rep, err
	}
	return v.rep, nil
}

type verifier struct {
	dir  string
	key  PublicKey
	opts VerifyOptions
	rep  *VerifyReport

	signed   []SignedRoot
	sigOffs  []int64
	refs     map[Hash]uint8 // referenced chunk -> level of what it holds (0 data, >0 index)
	chunkLoc map[Hash]chunkLoc
}

func (v *verifier) problem(file string, record uint64, off int64, format string, args ...any) {
	if len(v.rep.Problems) < maxProblems {
		v.rep.Problems = append(v.rep.Problems, &CorruptError{File: file, Record: record, Offset: off, Reason: fmt.Sprintf(format, args...)})
	}
}

func (v *verifier) open(name string) (*os.File, int64, bool) {
	f, err := os.Open(filepath.Join(v.dir, name))
	if err != nil {
		v.problem(name, 0, 0, "cannot open: %v", err)
		return nil, 0, false
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		v.problem(name, 0, 0, "cannot stat: %v", err)
		return nil, 0, false
	}
	hdr := make([]byte, headerSize)
	if _, err := f.ReadAt(hdr, 0); err != nil || string(hdr[:8]) != fileMagic || hdr[8] != fileKinds[name] || hdr[9] != storageFormat {
		f.Close()
		v.problem(name, 0, 0, "bad file header (not a beaker-dev %s file of format %d)", name, storageFormat)
		return nil, 0, false
	}
	return f, st.Size(), true
}

func (v *verifier) run(ctx context.Context) error {
	if err := v.signatures(); err != nil {
		return err
	}
	if err := v.log(ctx); err != nil {
		return err
	}
	return v.chunks(ctx)
}

func (v *verifier) signatures() error {
	f, size, ok := v.open(signaturesFile)
	if !ok {
		return nil
	}
	defer f.Close()
	buf := make([]byte, sigRecordSize)
	var prev uint64
	off := int64(headerSize)
	for ; off+sigRecordSize <= size; off += sigRecordSize {
		rec := uint64((off - headerSize) / sigRecordSize)
		if _, err := f.ReadAt(buf, off); err != nil {
			return err
		}
		s, err := DecodeSignedRoot(buf)
		if err != nil {
			v.problem(signaturesFile, rec, off, "%s", reason(err))
			continue
		}
		if s.Length <= prev {
			v.problem(signaturesFile, rec, off, "length %d does not grow past %d", s.Length, prev)
			continue
		}
		if err := s.Verify(v.key); err != nil {
			v.problem(signaturesFile, rec, off, "signature does not verify under %s", v.key.URL())
		}
		prev = s.Length
		v.signed = append(v.signed, s)
		v.sigOffs = append(v.sigOffs, off)
	}
	if off != size {
		v.rep.TornTails = append(v.rep.TornTails, fmt.Sprintf("%s: %d bytes of a record cut short at byte %d", signaturesFile, size-off, off))
	}
	v.rep.Versions = len(v.signed)
	if len(v.signed) > 0 {
		v.rep.LastVersion = v.signed[len(v.signed)-1].Length
	}
	return nil
}

// log checks every entry up to the last signed length, recomputes the Merkle
// tree and compares it with the tree file and with every signed root.
func (v *verifier) log(ctx context.Context) error {
	ef, esize, ok := v.open(entriesFile)
	if !ok {
		return nil
	}
	defer ef.Close()
	tf, tsize, tok := v.open(treeFile)
	if tok {
		defer tf.Close()
	}
	v.refs = map[Hash]uint8{}
	st := &logState{files: map[string]FileState{}, tags: map[string]Tag{}}
	iw := &indexWriter{s: st, filesOwn: true, tagsOwn: true}
	var roots []Node
	next := 0 // next signed root to check
	target := v.rep.LastVersion
	off := int64(headerSize)
	var buf []byte
	nodeBuf := make([]byte, nodeRecordSize)
	checkNode := func(n Node) error {
		if !tok {
			return nil
		}
		at := nodeOffset(n.Index)
		if at+nodeRecordSize > tsize {
			v.problem(treeFile, n.Index, at, "node missing")
			return nil
		}
		if _, err := tf.ReadAt(nodeBuf, at); err != nil {
			return err
		}
		stored, _ := decodeNode(n.Index, nodeBuf)
		if stored.Hash != n.Hash || stored.Size != n.Size {
			v.problem(treeFile, n.Index, at, "node does not match the entries it covers")
		}
		return nil
	}
	for seq := uint64(0); seq < target; seq++ {
		if seq%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		payload, nextOff, err := readEntryRecord(ef, off, esize, seq, buf)
		if err != nil {
			var ce *CorruptError
			if errors.As(err, &ce) {
				v.rep.Problems = append(v.rep.Problems, ce)
				return nil // later offsets are unknown
			}
			return err
		}
		buf = payload
		var e Entry
		if err := e.UnmarshalBinary(payload); err != nil {
			v.problem(entriesFile, seq, off, "%s", reason(err))
		} else if err := iw.apply(seq, &e); err != nil {
			v.problem(entriesFile, seq, off, "%s", reason(err))
		} else if e.Type == EntryPut {
			for _, r := range e.Content.Refs {
				v.refs[r.Hash] = e.Content.Level
			}
		}
		var made []Node
		roots, made = pushLeaf(roots, made[:0], leafNode(seq, payload))
		for _, n := range made {
			if err := checkNode(n); err != nil {
				return err
			}
		}
		for next < len(v.signed) && v.signed[next].Length == seq+1 {
			s := v.signed[next]
			if TreeHash(roots) != s.TreeHash {
				v.problem(signaturesFile, uint64(next), v.sigOffs[next], "tree hash for length %d does not match the entries", s.Length)
			}
			next++
		}
		off = nextOff
		v.rep.Entries++
	}
	if off < esize {
		v.rep.TornTails = append(v.rep.TornTails, fmt.Sprintf("%s: %d bytes after the last signed entry (an uncommitted import)", entriesFile, esize-off))
	}
	return nil
}

// chunks checks the chunk index against the chunk file, every chunk against
// its address, and that every referenced chunk is stored.
func (v *verifier) chunks(ctx context.Context) error {
	cf, csize, ok := v.open(chunksFile)
	if !ok {
		return nil
	}
	defer cf.Close()
	v.chunkLoc = map[Hash]chunkLoc{}
	// Walk the chunk file record by record.
	r := bufio.NewReaderSize(io.NewSectionReader(cf, headerSize, csize-headerSize), 1<<20)
	off := int64(headerSize)
	hdr := make([]byte, chunkHeaderSize)
	data := make([]byte, MaxChunkSize)
	var rec uint64
	for off < csize {
		if rec%1024 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		if off+chunkHeaderSize > csize {
			v.rep.TornTails = append(v.rep.TornTails, fmt.Sprintf("%s: %d bytes of a record header cut short", chunksFile, csize-off))
			break
		}
		if _, err := io.ReadFull(r, hdr); err != nil {
			return err
		}
		h, n, err := DecodeChunkHeader(hdr)
		if err != nil {
			v.problem(chunksFile, rec, off, "%s", reason(err))
			break // record boundaries are lost
		}
		if off+chunkHeaderSize+int64(n) > csize {
			v.rep.TornTails = append(v.rep.TornTails, fmt.Sprintf("%s: last record cut short at byte %d", chunksFile, off))
			break
		}
		d := data[:n]
		if _, err := io.ReadFull(r, d); err != nil {
			return err
		}
		if Hash(sha256Sum(d)) != h {
			v.problem(chunksFile, rec, off, "chunk %x does not match its SHA-256 address", h[:8])
		} else {
			if _, dup := v.chunkLoc[h]; !dup {
				v.chunkLoc[h] = chunkLoc{off: off + chunkHeaderSize, n: n}
			}
			v.rep.Chunks++
			v.rep.ChunkBytes += int64(n)
		}
		off += chunkHeaderSize + int64(n)
		rec++
		if v.opts.Progress != nil && rec%256 == 0 {
			v.opts.Progress(off, csize)
		}
	}
	if v.opts.Progress != nil {
		v.opts.Progress(csize, csize)
	}
	if err := v.index(csize); err != nil {
		return err
	}
	if err := v.indexBlocks(cf); err != nil {
		return err
	}
	for h := range v.refs {
		if _, ok := v.chunkLoc[h]; !ok {
			if v.opts.Sparse {
				v.rep.Missing++
				continue
			}
			v.problem(chunksFile, 0, 0, "chunk %x is referenced but not stored", h[:8])
		}
	}
	return nil
}

// indexBlocks decodes every referenced index block, adding the chunks it
// references, level by level, until no new references appear.
func (v *verifier) indexBlocks(cf *os.File) error {
	done := map[Hash]bool{}
	for changed := true; changed; {
		changed = false
		for h, lvl := range v.refs {
			if lvl == 0 || done[h] {
				continue
			}
			done[h] = true
			loc, ok := v.chunkLoc[h]
			if !ok {
				continue
			}
			b := make([]byte, loc.n)
			if _, err := cf.ReadAt(b, loc.off); err != nil {
				return err
			}
			refs, err := DecodeIndexBlock(b, lvl-1)
			if err != nil {
				v.problem(chunksFile, 0, loc.off-chunkHeaderSize, "index block %x: %v", h[:8], err)
				continue
			}
			for _, c := range refs {
				if _, seen := v.refs[c.Hash]; !seen {
					v.refs[c.Hash] = lvl - 1
					changed = true
				}
			}
		}
	}
	return nil
}

// index checks chunks.idx: each record's checksum, and that it points at the
// stored chunk it names.
func (v *verifier) index(csize int64) error {
	f, size, ok := v.open(chunkIndexFile)
	if !ok {
		return nil
	}
	defer f.Close()
	r := bufio.NewReaderSize(io.NewSectionReader(f, headerSize, size-headerSize), 1<<20)
	buf := make([]byte, indexRecordSize)
	off := int64(headerSize)
	for ; off+indexRecordSize <= size; off += indexRecordSize {
		rec := uint64((off - headerSize) / indexRecordSize)
		if _, err := io.ReadFull(r, buf); err != nil {
			return err
		}
		h, at, n, err := DecodeIndexRecord(buf)
		if err != nil {
			v.problem(chunkIndexFile, rec, off, "%s", reason(err))
			continue
		}
		loc, ok := v.chunkLoc[h]
		if !ok || loc.off != at || loc.n != n {
			if at+int64(n) > csize {
				v.problem(chunkIndexFile, rec, off, "points past the end of %s", chunksFile)
			} else {
				v.problem(chunkIndexFile, rec, off, "chunk %x is not stored where the record says", h[:8])
			}
		}
	}
	if off != size {
		v.rep.TornTails = append(v.rep.TornTails, fmt.Sprintf("%s: %d bytes of a record cut short", chunkIndexFile, size-off))
	}
	return nil
}
