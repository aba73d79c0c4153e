package hyperdrive

import (
	"bytes"
	"errors"
	"testing"
)

// flipEach calls f with b with each single bit flipped in turn.
func flipEach(b []byte, f func(i int, flipped []byte)) {
	c := bytes.Clone(b)
	for i := 0; i < len(b)*8; i++ {
		c[i/8] ^= 1 << (i % 8)
		f(i, c)
		c[i/8] ^= 1 << (i % 8)
	}
}

func TestEntryProofs(t *testing.T) {
	a := newArchive(t)
	var versions []uint64
	for i := 0; i < 7; i++ {
		files := map[string][]byte{}
		for j := 0; j <= i; j++ {
			files["/v"+itoa(i)+"/f"+itoa(j)] = randomBytes(uint64(i*10+j), 100+j*50)
		}
		versions = append(versions, put(t, a, files))
	}
	key := a.Key()
	for _, v := range versions {
		for seq := uint64(0); seq < v; seq++ {
			p, err := a.ProveEntry(seq, v)
			if err != nil {
				t.Fatal(err)
			}
			entry, _ := a.EntryBytes(seq)
			enc, err := p.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var q Proof
			if err := q.UnmarshalBinary(enc); err != nil {
				t.Fatalf("decoding proof of %d in %d: %v", seq, v, err)
			}
			if _, err := q.Verify(key, entry); err != nil {
				t.Fatalf("proof of entry %d in version %d: %v", seq, v, err)
			}
		}
	}
	// Single-bit flips of one proof, its entry and its signature.
	v := versions[len(versions)-1]
	seq := v / 2
	p, _ := a.ProveEntry(seq, v)
	entry, _ := a.EntryBytes(seq)
	enc, _ := p.MarshalBinary()
	flipEach(enc, func(i int, b []byte) {
		var q Proof
		if err := q.UnmarshalBinary(b); err != nil {
			return
		}
		if _, err := q.Verify(key, entry); err == nil {
			t.Fatalf("proof with bit %d flipped verifies", i)
		}
	})
	flipEach(entry, func(i int, b []byte) {
		if _, err := p.Verify(key, b); !errors.Is(err, ErrBadProof) {
			t.Fatalf("entry with bit %d flipped: %v", i, err)
		}
	})
	sr := a.SignedRoot()
	flipEach(sr.Signature[:], func(i int, b []byte) {
		s := sr
		copy(s.Signature[:], b)
		if s.Verify(key) == nil {
			t.Fatalf("signature with bit %d flipped verifies", i)
		}
	})
}

func TestChunkProofs(t *testing.T) {
	a := newArchive(t)
	big := randomBytes(21, 24<<20) // index blocks
	small := randomBytes(22, 70_000)
	put(t, a, map[string][]byte{"/big": big, "/small": small, "/tiny": randomBytes(23, 600)})
	s := a.Latest()
	key := a.Key()
	for _, tc := range []struct {
		path string
		off  uint64
	}{{"/small", 0}, {"/small", 69_999}, {"/big", 0}, {"/big", 12 << 20}, {"/big", 24<<20 - 1}} {
		cp, data, err := s.ProveChunk(tc.path, tc.off)
		if err != nil {
			t.Fatal(err)
		}
		enc, err := cp.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var q ChunkProof
		if err := q.UnmarshalBinary(enc); err != nil {
			t.Fatal(err)
		}
		e, err := q.Verify(key, data)
		if err != nil {
			t.Fatalf("%s@%d: %v", tc.path, tc.off, err)
		}
		if e.Path != tc.path {
			t.Fatalf("proof names %s, want %s", e.Path, tc.path)
		}
		if tc.path == "/big" && len(cp.Blocks) == 0 {
			t.Fatal("a chunk of a large file should be proven through index blocks")
		}
	}
	// Every single-bit flip of a small file's chunk proof and of its chunk
	// is rejected.
	cp, data, _ := s.ProveChunk("/tiny", 0)
	enc, _ := cp.MarshalBinary()
	flipEach(enc, func(i int, b []byte) {
		var q ChunkProof
		if q.UnmarshalBinary(b) != nil {
			return
		}
		if _, err := q.Verify(key, data); err == nil {
			t.Fatalf("chunk proof with bit %d flipped verifies", i)
		}
	})
	flipEach(data, func(i int, b []byte) {
		if _, err := cp.Verify(key, b); !errors.Is(err, ErrBadProof) {
			t.Fatalf("chunk with bit %d flipped: %v", i, err)
		}
	})
	// For a large file's proof (tens of kilobytes of index blocks), every
	// bit of the entry proof and signature, and a stride of the rest.
	cp, data, _ = s.ProveChunk("/big", 5<<20)
	enc, _ = cp.MarshalBinary()
	pb, _ := cp.Proof.MarshalBinary()
	proofAt := bytes.Index(enc, pb)
	checked := 0
	flipEach(enc, func(i int, b []byte) {
		inProof := i/8 >= proofAt && i/8 < proofAt+len(pb)
		if !inProof && i%211 != 0 {
			return
		}
		checked++
		var q ChunkProof
		if q.UnmarshalBinary(b) != nil {
			return
		}
		if _, err := q.Verify(key, data); err == nil {
			t.Fatalf("chunk proof with bit %d flipped verifies", i)
		}
	})
	t.Logf("checked %d flips of a %d-byte chunk proof", checked, len(enc))
	// A chunk of another file does not pass as this one's.
	_, other, _ := s.ProveChunk("/small", 0)
	if _, err := cp.Verify(key, other); !errors.Is(err, ErrBadProof) {
		t.Fatalf("foreign chunk: %v", err)
	}
}
