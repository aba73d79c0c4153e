package hyperdrive

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"

	"github.com/beaker-dev/beaker-dev/hyperdrive/flattree"
)

// Proof shows that log entry Seq belongs to the version Length signed by the
// archive key. Nodes holds, in this order, the sibling of each node on the
// path from the entry's leaf up to the full root covering it, then the other
// full roots of the tree, left to right. Node indexes are implied by Seq and
// Length, so the encoding carries only hashes and sizes (FORMAT.md §7).
type Proof struct {
	Seq       uint64
	Length    uint64
	Nodes     []Node
	Signature [ed25519.SignatureSize]byte
}

const proofFormat = 1

// proofShape returns the node indexes a proof for seq in a tree of length
// leaves carries: path siblings bottom-up, then the other roots.
func proofShape(seq, length uint64) (path []uint64, roots []uint64, covering int) {
	var scratch [64]uint64
	all := flattree.FullRoots(scratch[:0], 2*length)
	leaf := 2 * seq
	covering = -1
	for i, r := range all {
		lo, hi := flattree.Spans(r)
		if leaf >= lo && leaf <= hi {
			covering = i
			break
		}
	}
	for n := leaf; covering >= 0 && n != all[covering]; n = flattree.Parent(n) {
		path = append(path, flattree.Sibling(n))
	}
	for i, r := range all {
		if i != covering {
			roots = append(roots, r)
		}
	}
	return path, roots, covering
}

// ProveEntry returns the proof that entry seq belongs to version (a
// committed version after seq).
func (a *Archive) ProveEntry(seq, version uint64) (Proof, error) {
	a.mu.RLock()
	var sr SignedRoot
	found := false
	for i := len(a.signed) - 1; i >= 0; i-- {
		if a.signed[i].Length == version {
			sr, found = a.signed[i], true
			break
		}
	}
	a.mu.RUnlock()
	if !found {
		return Proof{}, fmt.Errorf("%w: %d", ErrNoVersion, version)
	}
	if seq >= version {
		return Proof{}, fmt.Errorf("%w: entry %d is not in version %d", ErrNoVersion, seq, version)
	}
	path, roots, _ := proofShape(seq, version)
	p := Proof{Seq: seq, Length: version, Signature: sr.Signature}
	for _, i := range append(path, roots...) {
		n, err := a.node(i)
		if err != nil {
			return Proof{}, err
		}
		p.Nodes = append(p.Nodes, n)
	}
	return p, nil
}

// Verify checks that entry (the encoded entry) is entry p.Seq of version
// p.Length of the archive whose key is key, and returns the verified tree
// roots of that version.
func (p Proof) Verify(key PublicKey, entry []byte) ([]Node, error) {
	if p.Seq >= p.Length {
		return nil, fmt.Errorf("%w: entry %d is not in a log of length %d", ErrBadProof, p.Seq, p.Length)
	}
	path, others, covering := proofShape(p.Seq, p.Length)
	if len(p.Nodes) != len(path)+len(others) {
		return nil, fmt.Errorf("%w: %d nodes, want %d", ErrBadProof, len(p.Nodes), len(path)+len(others))
	}
	node := leafNode(p.Seq, entry)
	for i, idx := range path {
		sib := p.Nodes[i]
		sib.Index = idx
		if idx < node.Index {
			node = parentNode(sib, node)
		} else {
			node = parentNode(node, sib)
		}
	}
	roots := make([]Node, 0, len(others)+1)
	k := len(path)
	for i := 0; i < len(others)+1; i++ {
		if i == covering {
			roots = append(roots, node)
			continue
		}
		r := p.Nodes[k]
		r.Index = others[k-len(path)]
		roots = append(roots, r)
		k++
	}
	if !ed25519.Verify(key[:], signable(TreeHash(roots), p.Length), p.Signature[:]) {
		return nil, fmt.Errorf("%w: entry %d does not lead to a root signed for length %d", ErrBadProof, p.Seq, p.Length)
	}
	return roots, nil
}

// MarshalBinary encodes a proof: u8 format ‖ uvarint seq ‖ uvarint length ‖
// u8 node count ‖ nodes (hash ‖ u64be size) ‖ signature.
func (p Proof) MarshalBinary() ([]byte, error) {
	b := []byte{proofFormat}
	b = binary.AppendUvarint(b, p.Seq)
	b = binary.AppendUvarint(b, p.Length)
	if len(p.Nodes) > 128 {
		return nil, fmt.Errorf("%w: %d proof nodes", ErrMalformed, len(p.Nodes))
	}
	b = append(b, byte(len(p.Nodes)))
	for _, n := range p.Nodes {
		b = append(b, n.Hash[:]...)
		b = binary.BigEndian.AppendUint64(b, n.Size)
	}
	return append(b, p.Signature[:]...), nil
}

// UnmarshalBinary decodes a proof, refusing any encoding but the canonical one.
func (p *Proof) UnmarshalBinary(b []byte) error {
	d := decoder{b: b}
	if f := d.byte(); f != proofFormat && d.err == nil {
		d.fail("proof format %d", f)
	}
	*p = Proof{Seq: d.uvarint(), Length: d.uvarint()}
	n := int(d.byte())
	if d.err == nil && p.Seq >= p.Length {
		d.fail("entry %d is not in a log of length %d", p.Seq, p.Length)
	}
	if d.err == nil {
		path, others, _ := proofShape(p.Seq, p.Length)
		if n != len(path)+len(others) {
			d.fail("%d proof nodes, want %d", n, len(path)+len(others))
		}
		for i := 0; i < n && d.err == nil; i++ {
			var nd Node
			copy(nd.Hash[:], d.bytes(32))
			nd.Size = d.uint64()
			if i < len(path) {
				nd.Index = path[i]
			} else {
				nd.Index = others[i-len(path)]
			}
			p.Nodes = append(p.Nodes, nd)
		}
	}
	copy(p.Signature[:], d.bytes(ed25519.SignatureSize))
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes after proof", ErrMalformed, len(d.b))
	}
	return nil
}

// ChunkProof shows that a chunk belongs to a file of a signed version: the
// proof of the file's put entry, the entry itself, and the index blocks from
// the entry's refs down to the level-0 ref of the chunk.
type ChunkProof struct {
	Entry  []byte
	Proof  Proof
	Blocks [][]byte
}

// ProveChunk returns the proof for the data chunk holding byte off of the
// file at archive path p, and that chunk's bytes.
func (s *Snapshot) ProveChunk(p string, off uint64) (ChunkProof, []byte, error) {
	st, ok := s.files[p]
	if !ok {
		return ChunkProof{}, nil, fmt.Errorf("%w: %s", ErrNotFound, p)
	}
	if off >= st.Size {
		return ChunkProof{}, nil, fmt.Errorf("%w: offset %d beyond %s (%d bytes)", ErrNotFound, off, p, st.Size)
	}
	entry, err := s.a.EntryBytes(st.Seq)
	if err != nil {
		return ChunkProof{}, nil, err
	}
	proof, err := s.a.ProveEntry(st.Seq, s.version)
	if err != nil {
		return ChunkProof{}, nil, err
	}
	var e Entry
	if err := e.UnmarshalBinary(entry); err != nil {
		return ChunkProof{}, nil, err
	}
	cp := ChunkProof{Entry: entry, Proof: proof}
	refs, level, base := e.Content.Refs, e.Content.Level, uint64(0)
	for {
		l := newRefList(refs)
		i := 0
		for i < len(l.ends) && l.ends[i] <= off-base {
			i++
		}
		if i == len(l.ends) {
			return ChunkProof{}, nil, fmt.Errorf("%w: refs of %s end before %d", ErrMalformed, p, off)
		}
		if i > 0 {
			base += l.ends[i-1]
		}
		data, err := s.a.readChunk(refs[i].Hash)
		if err != nil {
			return ChunkProof{}, nil, err
		}
		if level == 0 {
			return cp, data, nil
		}
		cp.Blocks = append(cp.Blocks, data)
		if refs, err = DecodeIndexBlock(data, level-1); err != nil {
			return ChunkProof{}, nil, err
		}
		level--
	}
}

// Verify checks that data is a chunk of the file the proof's entry puts, in
// a version signed by key. It returns the decoded entry.
func (cp ChunkProof) Verify(key PublicKey, data []byte) (Entry, error) {
	if _, err := cp.Proof.Verify(key, cp.Entry); err != nil {
		return Entry{}, err
	}
	var e Entry
	if err := e.UnmarshalBinary(cp.Entry); err != nil {
		return Entry{}, err
	}
	if e.Type != EntryPut {
		return Entry{}, fmt.Errorf("%w: entry %d is a %s entry, not a file", ErrBadProof, cp.Proof.Seq, e.Type)
	}
	if int(e.Content.Level) != len(cp.Blocks) {
		return Entry{}, fmt.Errorf("%w: %d index blocks for content level %d", ErrBadProof, len(cp.Blocks), e.Content.Level)
	}
	refs, level := e.Content.Refs, e.Content.Level
	for _, blk := range cp.Blocks {
		if !hasRef(refs, Hash(sha256Sum(blk)), uint64(0), false) {
			return Entry{}, fmt.Errorf("%w: index block is not referenced", ErrBadProof)
		}
		var err error
		if refs, err = DecodeIndexBlock(blk, level-1); err != nil {
			return Entry{}, fmt.Errorf("%w: %v", ErrBadProof, err)
		}
		level--
	}
	if !hasRef(refs, Hash(sha256Sum(data)), uint64(len(data)), true) {
		return Entry{}, fmt.Errorf("%w: chunk is not referenced by %s", ErrBadProof, e.Path)
	}
	return e, nil
}

func hasRef(refs []Ref, h Hash, size uint64, checkSize bool) bool {
	for _, r := range refs {
		if r.Hash == h && (!checkSize || r.Size == size) {
			return true
		}
	}
	return false
}

// MarshalBinary encodes a chunk proof: u8 format ‖ uvarint len ‖ entry ‖
// uvarint len ‖ proof ‖ u8 block count ‖ (uvarint len ‖ block)*.
func (cp ChunkProof) MarshalBinary() ([]byte, error) {
	pb, err := cp.Proof.MarshalBinary()
	if err != nil {
		return nil, err
	}
	b := []byte{proofFormat}
	b = binary.AppendUvarint(b, uint64(len(cp.Entry)))
	b = append(b, cp.Entry...)
	b = binary.AppendUvarint(b, uint64(len(pb)))
	b = append(b, pb...)
	b = append(b, byte(len(cp.Blocks)))
	for _, blk := range cp.Blocks {
		b = binary.AppendUvarint(b, uint64(len(blk)))
		b = append(b, blk...)
	}
	return b, nil
}

// UnmarshalBinary decodes a chunk proof.
func (cp *ChunkProof) UnmarshalBinary(b []byte) error {
	d := decoder{b: b}
	if f := d.byte(); f != proofFormat && d.err == nil {
		d.fail("chunk proof format %d", f)
	}
	*cp = ChunkProof{}
	cp.Entry = append([]byte(nil), d.bytes(int(d.uvarintMax(MaxEntrySize)))...)
	pb := d.bytes(int(d.uvarintMax(64 << 10)))
	n := int(d.byte())
	if d.err == nil && n > maxContentLevel {
		d.fail("%d index blocks", n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		cp.Blocks = append(cp.Blocks, append([]byte(nil), d.bytes(int(d.uvarintMax(MaxChunkSize)))...))
	}
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes after chunk proof", ErrMalformed, len(d.b))
	}
	return cp.Proof.UnmarshalBinary(pb)
}
