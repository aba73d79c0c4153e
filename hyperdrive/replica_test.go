package hyperdrive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
)

// replicate copies author's log and chunks into a new replica the way the
// swarm does: signed roots first, entries in pieces, then every chunk.
func replicate(t *testing.T, author *Archive, piece int) *Archive {
	t.Helper()
	r, err := CreateReplica(filepath.Join(t.TempDir(), "replica"), author.Key(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	w, err := r.BeginSync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	signed := author.Versions()
	var pending [][]byte
	for seq := uint64(0); seq < author.Version(); seq++ {
		b, _ := author.EntryBytes(seq)
		pending = append(pending, b)
		if len(pending) >= piece || seq == author.Version()-1 {
			n, err := w.AppendVerified(pending, signed)
			if err != nil {
				t.Fatalf("append at %d: %v", seq, err)
			}
			pending = pending[n:]
		}
	}
	if len(pending) != 0 || r.Version() != author.Version() {
		t.Fatalf("replica at %d with %d pending, author at %d", r.Version(), len(pending), author.Version())
	}
	for _, p := range author.Latest().Paths() {
		f, _ := author.Latest().OpenFile(p)
		copyChunks(t, author, w, f.Content())
	}
	return r
}

func copyChunks(t *testing.T, from *Archive, w *Writer, c Content) {
	t.Helper()
	for _, ref := range c.Refs {
		data, err := from.Chunk(ref.Hash)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.PutChunk(ref.Hash, data); err != nil {
			t.Fatal(err)
		}
		if c.Level > 0 {
			refs, _ := DecodeIndexBlock(data, c.Level-1)
			copyChunks(t, from, w, Content{Level: c.Level - 1, Refs: refs})
		}
	}
}

func TestReplicaAppendVerified(t *testing.T) {
	a := newArchive(t)
	for i := 0; i < 5; i++ {
		files := map[string][]byte{}
		for j := 0; j < 7; j++ {
			files[fmt.Sprintf("/v%d/f%d", i, j)] = randomBytes(uint64(i*7+j), 3000+j*10000)
		}
		put(t, a, files)
	}
	for _, piece := range []int{1, 3, 1000} {
		r := replicate(t, a, piece)
		for _, p := range a.Latest().Paths() {
			if !bytes.Equal(readAll(t, r.Latest(), p), readAll(t, a.Latest(), p)) {
				t.Fatalf("piece %d: %s differs", piece, p)
			}
		}
		if len(r.Versions()) != len(a.Versions()) {
			t.Fatalf("replica has %d versions, author %d", len(r.Versions()), len(a.Versions()))
		}
		rep, err := Verify(context.Background(), r.Dir(), r.Key(), VerifyOptions{})
		if err != nil || !rep.OK() {
			t.Fatalf("verify replica: %v %v", err, rep.Problems)
		}
	}
}

func TestReplicaRefusesBadData(t *testing.T) {
	a := newArchive(t)
	put(t, a, map[string][]byte{"/a": []byte("a"), "/b": []byte("b")})
	r, _ := CreateReplica(filepath.Join(t.TempDir(), "r"), a.Key(), Options{})
	defer r.Close()
	w, _ := r.BeginSync(context.Background())
	defer w.Close()
	var entries [][]byte
	for seq := uint64(0); seq < a.Version(); seq++ {
		b, _ := a.EntryBytes(seq)
		entries = append(entries, b)
	}
	signed := a.Versions()
	// A flipped bit in an entry.
	bad := bytes.Clone(entries[2])
	bad[len(bad)-1] ^= 1
	tampered := append(append([][]byte{}, entries[:2]...), bad)
	tampered = append(tampered, entries[3:]...)
	if n, err := w.AppendVerified(tampered, signed); !errors.Is(err, ErrBadProof) && !errors.Is(err, ErrMalformed) {
		t.Fatalf("tampered entry: stored %d, err %v", n, err)
	}
	// A flipped bit in a signature.
	badSig := append([]SignedRoot{}, signed...)
	badSig[len(badSig)-1].Signature[5] ^= 1
	have := r.Version() // the tampered call stored the verified prefix
	n, err := w.AppendVerified(entries[have:], badSig)
	if !errors.Is(err, ErrBadSignature) {
		t.Fatalf("bad signature: %v", err)
	}
	if uint64(n)+have != signed[len(signed)-2].Length || r.Version() != signed[len(signed)-2].Length {
		t.Fatalf("stored %d entries (version %d); the verified prefix is %d", n, r.Version(), signed[len(signed)-2].Length)
	}
	// A chunk that is not what it claims.
	if _, err := w.PutChunk(Hash{1}, []byte("not it")); !errors.Is(err, ErrBadProof) {
		t.Fatalf("bad chunk: %v", err)
	}
	// Writing as an author is refused.
	if err := w.Put("/x", FileMeta{}, Content{}); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Put on a sync writer: %v", err)
	}
}

func TestForkDetection(t *testing.T) {
	a := newArchive(t)
	put(t, a, map[string][]byte{"/a": []byte("a")})
	// A second archive under the same key with another history: what a
	// copied key or restored backup produces.
	b, err := Create(filepath.Join(t.TempDir(), "b"), fixedKey(t), Options{Now: fixedClock()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	put(t, b, map[string][]byte{"/a": []byte("different")})
	theirs := b.SignedRoot()
	err = a.CheckSignedRoot(theirs)
	var fe *ForkError
	if !errors.As(err, &fe) || !errors.Is(err, ErrForked) || fe.Length != theirs.Length {
		t.Fatalf("CheckSignedRoot of a fork = %v", err)
	}
	if ev, _ := a.Forks(); !bytes.Contains(ev, []byte(fmt.Sprintf("%x", theirs.Signature[:]))) {
		t.Fatalf("no evidence kept: %s", ev)
	}
	// Consistent roots pass; forged ones fail.
	if err := a.CheckSignedRoot(a.SignedRoot()); err != nil {
		t.Fatal(err)
	}
	forged := a.SignedRoot()
	forged.Length++
	if err := a.CheckSignedRoot(forged); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("forged root: %v", err)
	}
}

func TestUpgradeProofs(t *testing.T) {
	a := newArchive(t)
	files := map[string][]byte{}
	for i := 0; i < 40; i++ {
		files[fmt.Sprintf("/f%02d", i)] = []byte{byte(i)}
	}
	// One commit per file, so every length is a version.
	for i := 0; i < 40; i++ {
		p := fmt.Sprintf("/f%02d", i)
		put(t, a, map[string][]byte{p: files[p]})
	}
	key := a.Key()
	for from := uint64(0); from <= a.Version(); from++ {
		for to := from; to <= a.Version(); to++ {
			sr, ok := a.SignedRootAt(to)
			if !ok {
				continue
			}
			old, err := a.RootsAt(from)
			if err != nil {
				t.Fatal(err)
			}
			nodes, err := a.UpgradeNodes(from, to)
			if err != nil {
				t.Fatal(err)
			}
			roots, err := ApplyUpgrade(old, from, to, nodes)
			if err != nil {
				t.Fatalf("upgrade %d->%d: %v", from, to, err)
			}
			if TreeHash(roots) != sr.TreeHash || sr.Verify(key) != nil {
				t.Fatalf("upgrade %d->%d gives the wrong roots", from, to)
			}
			if len(nodes) > 0 {
				bad := append([]Node{}, nodes...)
				bad[0].Hash[0] ^= 1
				if r, err := ApplyUpgrade(old, from, to, bad); err == nil && TreeHash(r) == sr.TreeHash {
					t.Fatalf("a tampered upgrade %d->%d verifies", from, to)
				}
			}
		}
	}
}
