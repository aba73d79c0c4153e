// Package flattree maps a binary tree onto a flat, in-order list of uint64
// indexes, the layout hypercore and beaker-dev use for their Merkle trees.
//
// Leaves sit at even indexes (leaf n at 2n); parents at odd indexes between
// their children. The depth of a node is the number of trailing one bits of its
// index. Every function is pure and allocation-free except those returning
// slices, so the tree can be addressed on disk at fixed offsets (index*size).
package flattree

import "math/bits"

// Index returns the flat index of the node at depth d and offset o
// (the o-th node of that depth, counting from the left).
func Index(depth, offset uint64) uint64 {
	return (offset<<1+1)<<depth - 1
}

// Depth returns the depth of node i: leaves are at depth 0.
func Depth(i uint64) uint64 {
	return uint64(bits.TrailingZeros64(^i))
}

// Offset returns the position of node i among the nodes of its depth.
func Offset(i uint64) uint64 {
	d := Depth(i)
	if d == 0 {
		return i >> 1
	}
	return ((i+1)>>d - 1) >> 1
}

// Parent returns the index of i's parent.
func Parent(i uint64) uint64 {
	d := Depth(i)
	return Index(d+1, Offset(i)>>1)
}

// Sibling returns the index of the other child of i's parent.
func Sibling(i uint64) uint64 {
	d := Depth(i)
	return Index(d, Offset(i)^1)
}

// Uncle returns the sibling of i's parent.
func Uncle(i uint64) uint64 {
	return Sibling(Parent(i))
}

// Children returns the two children of i. ok is false for a leaf.
func Children(i uint64) (left, right uint64, ok bool) {
	d := Depth(i)
	if d == 0 {
		return 0, 0, false
	}
	o := Offset(i) << 1
	return Index(d-1, o), Index(d-1, o+1), true
}

// LeftChild returns i's left child; ok is false for a leaf.
func LeftChild(i uint64) (uint64, bool) {
	l, _, ok := Children(i)
	return l, ok
}

// RightChild returns i's right child; ok is false for a leaf.
func RightChild(i uint64) (uint64, bool) {
	_, r, ok := Children(i)
	return r, ok
}

// Spans returns the leftmost and rightmost leaf indexes under i.
func Spans(i uint64) (left, right uint64) {
	d := Depth(i)
	if d == 0 {
		return i, i
	}
	o := Offset(i)
	return o << (d + 1), (o+1)<<(d+1) - 2
}

// LeftSpan returns the leftmost leaf index under i.
func LeftSpan(i uint64) uint64 { l, _ := Spans(i); return l }

// RightSpan returns the rightmost leaf index under i.
func RightSpan(i uint64) uint64 { _, r := Spans(i); return r }

// Count returns how many nodes (leaves and parents) the subtree at i holds.
func Count(i uint64) uint64 {
	return 2<<Depth(i) - 1
}

// CountLeaves returns how many leaves the subtree at i holds.
func CountLeaves(i uint64) uint64 {
	return (Count(i) + 1) / 2
}

// FullRoots returns the roots of the perfect subtrees that together cover the
// leaves before leaf index i, left to right. i must be even (a leaf index);
// FullRoots(2n) decomposes a tree of n leaves. It appends to dst.
func FullRoots(dst []uint64, i uint64) []uint64 {
	if i&1 != 0 {
		panic("flattree: FullRoots of an odd index")
	}
	leaves := i >> 1
	var offset uint64
	for leaves > 0 {
		// The largest power of two not above leaves.
		factor := uint64(1) << (63 - bits.LeadingZeros64(leaves))
		dst = append(dst, offset+factor-1)
		offset += 2 * factor
		leaves -= factor
	}
	return dst
}

// NextLeaf returns the index of the first leaf right of the subtree at i.
func NextLeaf(i uint64) uint64 {
	return RightSpan(i) + 2
}

// FutureRoots returns the nodes under which leaf i will be hashed together
// with the tree that ends just before it: the parents of FullRoots(i), left to
// right. i must be even. It appends to dst.
func FutureRoots(dst []uint64, i uint64) []uint64 {
	var scratch [64]uint64
	for _, r := range FullRoots(scratch[:0], i) {
		dst = append(dst, Parent(r))
	}
	return dst
}

// Patch lists the nodes that take a tree of from/2 leaves to one of to/2
// leaves (both arguments are leaf indexes, as for FullRoots): climbing from the
// last root of the old tree, each sibling that the old tree does not hold,
// followed by the parent it forms, until a root of the new tree is reached;
// then the new roots right of it. A verifier holding the old roots needs exactly the listed siblings to compute
// the listed parents. With from == 0 it is FullRoots(to).
func Patch(dst []uint64, from, to uint64) []uint64 {
	if from == 0 {
		return FullRoots(dst, to)
	}
	if from >= to {
		return dst
	}
	var a, b [64]uint64
	old := FullRoots(a[:0], from)
	roots := FullRoots(b[:0], to)
	rootAt := func(n uint64) int {
		for i, r := range roots {
			if r == n {
				return i
			}
		}
		return -1
	}
	known := len(old) - 1
	node := old[known]
	for rootAt(node) < 0 {
		sib := Sibling(node)
		if known > 0 && sib == old[known-1] {
			known--
		} else {
			dst = append(dst, sib)
		}
		node = Parent(node)
		dst = append(dst, node)
	}
	// Roots right of the one reached are wholly new.
	return append(dst, roots[rootAt(node)+1:]...)
}
