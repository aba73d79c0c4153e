package flattree

import (
	"slices"
	"testing"
)

// The vectors come from mafintosh/flat-tree's test.js (see
// ../shared/notes/dat-hyperdrive-background.md section 1 and docs/FORMAT.md).
func TestReferenceVectors(t *testing.T) {
	eq := func(name string, got, want uint64) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	eqs := func(name string, got, want []uint64) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	eq("index(0,0)", Index(0, 0), 0)
	eq("index(0,1)", Index(0, 1), 2)
	eq("index(0,2)", Index(0, 2), 4)
	eq("index(1,0)", Index(1, 0), 1)
	eq("index(1,1)", Index(1, 1), 5)
	eq("index(2,0)", Index(2, 0), 3)
	eq("parent(0)", Parent(0), 1)
	eq("parent(2)", Parent(2), 1)
	eq("parent(1)", Parent(1), 3)
	l, r, ok := Children(3)
	eqs("children(3)", []uint64{l, r}, []uint64{1, 5})
	l, r, _ = Children(9)
	eqs("children(9)", []uint64{l, r}, []uint64{8, 10})
	l, r, _ = Children(1)
	eqs("children(1)", []uint64{l, r}, []uint64{0, 2})
	if _, _, ok = Children(0); ok {
		t.Error("children(0) should not exist")
	}
	if _, ok := LeftChild(0); ok {
		t.Error("leftChild(0) should not exist")
	}
	if c, _ := RightChild(3); c != 5 {
		t.Errorf("rightChild(3) = %d", c)
	}
	eq("sibling(0)", Sibling(0), 2)
	eq("sibling(2)", Sibling(2), 0)
	eq("sibling(1)", Sibling(1), 5)
	eq("sibling(5)", Sibling(5), 1)
	for i, want := range []uint64{0, 1, 0, 2, 0} {
		eq("depth", Depth(uint64(i)), want)
	}
	for i, want := range []uint64{0, 0, 1, 0, 2} {
		eq("offset", Offset(uint64(i)), want)
	}
	eqs("fullRoots(0)", FullRoots(nil, 0), nil)
	eqs("fullRoots(2)", FullRoots(nil, 2), []uint64{0})
	eqs("fullRoots(8)", FullRoots(nil, 8), []uint64{3})
	eqs("fullRoots(16)", FullRoots(nil, 16), []uint64{7})
	eqs("fullRoots(18)", FullRoots(nil, 18), []uint64{7, 16})
	eqs("fullRoots(20)", FullRoots(nil, 20), []uint64{7, 17})
	span := func(i uint64) []uint64 { a, b := Spans(i); return []uint64{a, b} }
	eqs("spans(0)", span(0), []uint64{0, 0})
	eqs("spans(1)", span(1), []uint64{0, 2})
	eqs("spans(3)", span(3), []uint64{0, 6})
	eqs("spans(23)", span(23), []uint64{16, 30})
	eqs("spans(27)", span(27), []uint64{24, 30})
	eq("leftSpan(27)", LeftSpan(27), 24)
	eq("rightSpan(23)", RightSpan(23), 30)
	eq("count(0)", Count(0), 1)
	eq("count(1)", Count(1), 3)
	eq("count(5)", Count(5), 3)
	eq("count(23)", Count(23), 15)
	eq("count(27)", Count(27), 7)
	eq("countLeaves(27)", CountLeaves(27), 4)
	eq("nextLeaf(7)", NextLeaf(7), 16)
	eq("nextLeaf(15)", NextLeaf(15), 32)
	eqs("futureRoots(12)", FutureRoots(nil, 12), []uint64{7, 11})
	eqs("patch(2,8)", Patch(nil, 2, 8), []uint64{2, 1, 5, 3})
	eq("parent(10000000000)", Parent(10000000000), 10000000001)
	child := uint64(0)
	for range 50 {
		child = Parent(child)
	}
	eq("parent^50(0)", child, 1125899906842623)
	for range 50 {
		child, _ = LeftChild(child)
	}
	eq("leftChild^50", child, 0)
}

// TestRootsCoverLeaves checks FullRoots against its definition for every
// tree size up to 4096 leaves: disjoint perfect subtrees, left to right,
// covering exactly the leaves.
func TestRootsCoverLeaves(t *testing.T) {
	for n := uint64(0); n <= 4096; n++ {
		next := uint64(0)
		for _, r := range FullRoots(nil, 2*n) {
			lo, hi := Spans(r)
			if lo != next {
				t.Fatalf("n=%d: root %d starts at %d, want %d", n, r, lo, next)
			}
			next = hi + 2
		}
		if next != 2*n {
			t.Fatalf("n=%d: roots end at %d", n, next)
		}
	}
}

// TestPatchRebuildsRoots checks that the siblings Patch lists, with the old
// roots, are exactly enough to compute the new roots.
func TestPatchRebuildsRoots(t *testing.T) {
	for from := uint64(1); from <= 64; from++ {
		for to := from + 1; to <= 64; to++ {
			have := map[uint64]bool{}
			for _, r := range FullRoots(nil, 2*from) {
				have[r] = true
			}
			for _, n := range Patch(nil, 2*from, 2*to) {
				if l, r, ok := Children(n); ok && have[l] && have[r] {
					have[n] = true
					continue
				}
				have[n] = true // a sibling supplied by the peer
			}
			for _, r := range FullRoots(nil, 2*to) {
				if !have[r] {
					t.Fatalf("patch(%d,%d) leaves root %d unknown", 2*from, 2*to, r)
				}
			}
		}
	}
}

func FuzzParentChild(f *testing.F) {
	f.Add(uint64(0))
	f.Add(uint64(1<<40 + 7))
	f.Fuzz(func(t *testing.T, i uint64) {
		if Depth(i) >= 62 {
			return
		}
		p := Parent(i)
		l, r, ok := Children(p)
		if !ok || (l != i && r != i) {
			t.Fatalf("children(parent(%d)) = %d,%d", i, l, r)
		}
		if Sibling(Sibling(i)) != i {
			t.Fatalf("sibling not an involution at %d", i)
		}
		if Index(Depth(i), Offset(i)) != i {
			t.Fatalf("index(depth, offset) != %d", i)
		}
	})
}
