package hyperdrive

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"

	"github.com/beaker-dev/beaker-dev/hyperdrive/flattree"
)

// Hash is a SHA-256 digest.
type Hash [sha256.Size]byte

// Node is one node of the flat in-order Merkle tree over the log entries:
// leaf 2*seq hashes entry seq; a parent hashes its two children. Size is the
// number of entry bytes the node covers, so the tree also commits to every
// entry's length.
type Node struct {
	Index uint64
	Hash  Hash
	Size  uint64
}

// Type bytes that separate the three hash constructions (FORMAT.md §3), so a
// leaf can never be read as a parent or a root and vice versa.
const (
	leafType   = 0x00
	parentType = 0x01
	rootType   = 0x02
)

// signatureNamespace prefixes every signed message so an archive signature
// can never be replayed as a signature over anything else (FORMAT.md §3).
var signatureNamespace = sha256.Sum256([]byte("beaker-dev/signature/v1"))

// leafNode returns the tree node of entry seq whose encoding is data.
func leafNode(seq uint64, data []byte) Node {
	h := sha256.New()
	var hdr [9]byte
	hdr[0] = leafType
	binary.BigEndian.PutUint64(hdr[1:], uint64(len(data)))
	h.Write(hdr[:])
	h.Write(data)
	n := Node{Index: 2 * seq, Size: uint64(len(data))}
	h.Sum(n.Hash[:0])
	return n
}

// parentNode combines two sibling nodes, left first.
func parentNode(left, right Node) Node {
	var buf [1 + 8 + 2*sha256.Size]byte
	size := left.Size + right.Size
	buf[0] = parentType
	binary.BigEndian.PutUint64(buf[1:], size)
	copy(buf[9:], left.Hash[:])
	copy(buf[9+sha256.Size:], right.Hash[:])
	return Node{Index: flattree.Parent(left.Index), Hash: sha256.Sum256(buf[:]), Size: size}
}

// pushLeaf appends a leaf to the full roots of a tree and merges roots of
// equal depth into their parents. It returns the new roots, and nodes with
// the leaf and every parent created appended.
func pushLeaf(roots, nodes []Node, leaf Node) ([]Node, []Node) {
	roots = append(roots, leaf)
	nodes = append(nodes, leaf)
	for len(roots) >= 2 && flattree.Depth(roots[len(roots)-1].Index) == flattree.Depth(roots[len(roots)-2].Index) {
		p := parentNode(roots[len(roots)-2], roots[len(roots)-1])
		roots = append(roots[:len(roots)-2], p)
		nodes = append(nodes, p)
	}
	return roots, nodes
}

// TreeHash hashes the full roots of a tree, left to right, with their indexes
// and sizes, which pins down the tree's shape and so its length.
func TreeHash(roots []Node) Hash {
	h := sha256.New()
	h.Write([]byte{rootType})
	var b [16]byte
	for _, r := range roots {
		h.Write(r.Hash[:])
		binary.BigEndian.PutUint64(b[:8], r.Index)
		binary.BigEndian.PutUint64(b[8:], r.Size)
		h.Write(b[:])
	}
	var out Hash
	h.Sum(out[:0])
	return out
}

// signable is the exact message an archive's key signs for a length:
// namespace ‖ tree hash ‖ u64be(length), 72 bytes.
func signable(tree Hash, length uint64) []byte {
	b := make([]byte, 0, 72)
	b = append(b, signatureNamespace[:]...)
	b = append(b, tree[:]...)
	return binary.BigEndian.AppendUint64(b, length)
}

// SignedRoot is a signed statement "the log of this archive has this length
// and these roots": the unit of trust of the format. Time is when the writer
// committed it (unix nanoseconds); it is not signed and only informs history.
type SignedRoot struct {
	Length    uint64
	Time      int64
	TreeHash  Hash
	Signature [ed25519.SignatureSize]byte
}

// Verify checks the signature under key.
func (s SignedRoot) Verify(key PublicKey) error {
	if !ed25519.Verify(key[:], signable(s.TreeHash, s.Length), s.Signature[:]) {
		return ErrBadSignature
	}
	return nil
}

// sign produces the signed root for a tree.
func sign(secret ed25519.PrivateKey, roots []Node, length uint64, now int64) SignedRoot {
	s := SignedRoot{Length: length, Time: now, TreeHash: TreeHash(roots)}
	copy(s.Signature[:], ed25519.Sign(secret, signable(s.TreeHash, length)))
	return s
}

// rootsMatchLength reports whether roots are exactly the full roots of a log
// of length entries, in order.
func rootsMatchLength(roots []Node, length uint64) bool {
	var scratch [64]uint64
	want := flattree.FullRoots(scratch[:0], 2*length)
	if len(want) != len(roots) {
		return false
	}
	for i, r := range roots {
		if r.Index != want[i] {
			return false
		}
	}
	return true
}

// PushLeaf adds entry seq (its encoding) to the full roots of the tree
// before it and returns the roots after it.
func PushLeaf(roots []Node, seq uint64, entry []byte) []Node {
	roots, _ = pushLeaf(roots, nil, leafNode(seq, entry))
	return roots
}
