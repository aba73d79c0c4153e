package hyperdrive

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// Fuzz targets for every decoder that reads bytes from disk or the network.
// Each checks that decoding never panics and that whatever decodes
// re-encodes to the same bytes (encodings are canonical).

func FuzzEntry(f *testing.F) {
	for _, s := range []string{goldenEntry0, goldenEntry1} {
		b, _ := decodeHex(s)
		f.Add(b)
	}
	tag, _ := (&Entry{Type: EntryTag, Tag: TagInfo{Name: "2.1.0", Target: 3, Time: 5, Message: "hi"}}).MarshalBinary()
	del, _ := (&Entry{Type: EntryDelete, Path: "/a/b"}).MarshalBinary()
	f.Add(tag)
	f.Add(del)
	f.Fuzz(func(t *testing.T, b []byte) {
		var e Entry
		if err := e.UnmarshalBinary(b); err != nil {
			return
		}
		out, err := e.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded entry does not encode: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("non-canonical encoding accepted:\n in  %x\n out %x", b, out)
		}
	})
}

func FuzzProof(f *testing.F) {
	a := newArchive(f)
	put(f, a, map[string][]byte{"/a": []byte("a"), "/b": []byte("b"), "/c": []byte("c")})
	for seq := uint64(0); seq < a.Version(); seq++ {
		p, _ := a.ProveEntry(seq, a.Version())
		b, _ := p.MarshalBinary()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Proof
		if err := p.UnmarshalBinary(b); err != nil {
			return
		}
		out, err := p.MarshalBinary()
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("proof does not round-trip: %v", err)
		}
		p.Verify(a.Key(), []byte("entry"))
	})
}

func FuzzChunkProof(f *testing.F) {
	a := newArchive(f)
	put(f, a, map[string][]byte{"/a": randomBytes(1, 40_000)})
	cp, _, _ := a.Latest().ProveChunk("/a", 0)
	b, _ := cp.MarshalBinary()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		var cp ChunkProof
		if err := cp.UnmarshalBinary(b); err != nil {
			return
		}
		out, err := cp.MarshalBinary()
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("chunk proof does not round-trip: %v", err)
		}
		cp.Verify(a.Key(), []byte("chunk"))
	})
}

func FuzzSignedRoot(f *testing.F) {
	f.Add(encodeSignedRoot(SignedRoot{Length: 2, Time: 7}))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeSignedRoot(b)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeSignedRoot(s), b) {
			t.Fatal("signature record does not round-trip")
		}
	})
}

func FuzzIndexRecord(f *testing.F) {
	f.Add(encodeIndexRecord(Hash{1}, chunkLoc{off: 100, n: 5}))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, off, n, err := DecodeIndexRecord(b)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeIndexRecord(h, chunkLoc{off: off, n: n}), b) {
			t.Fatal("index record does not round-trip")
		}
	})
}

func FuzzChunkHeader(f *testing.F) {
	f.Add(appendChunkRecord(nil, Hash{2}, []byte("abc"))[:chunkHeaderSize])
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := DecodeChunkHeader(b)
		if err != nil {
			return
		}
		if !bytes.Equal(appendChunkRecord(nil, h, make([]byte, n))[:chunkHeaderSize], b) {
			t.Fatal("chunk header does not round-trip")
		}
	})
}

func FuzzIndexBlock(f *testing.F) {
	f.Add(appendIndexBlock(nil, []Ref{{Hash: Hash{1}, Size: 10}, {Hash: Hash{2}, Size: 65536}}), uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, level uint8) {
		refs, err := DecodeIndexBlock(b, level%4)
		if err != nil {
			return
		}
		if !bytes.Equal(appendIndexBlock(nil, refs), b) {
			t.Fatal("index block does not round-trip")
		}
	})
}

// FuzzEntryRecord feeds arbitrary bytes to the entries-file record reader.
func FuzzEntryRecord(f *testing.F) {
	e1, _ := decodeHex(goldenEntry1)
	f.Add(appendEntryRecord(nil, e1))
	f.Fuzz(func(t *testing.T, b []byte) {
		payload, next, err := readEntryRecord(bytes.NewReader(b), 0, int64(len(b)), 0, nil)
		if err != nil {
			return
		}
		if next > int64(len(b)) || len(payload) > MaxEntrySize {
			t.Fatal("record runs past its input")
		}
		if binary.BigEndian.Uint32(b) != uint32(len(payload)) {
			t.Fatal("length mismatch")
		}
	})
}

func FuzzKeyPair(f *testing.F) {
	b, _ := fixedKey(f).MarshalText()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		kp, err := ParseKeyPair(b)
		if err != nil {
			return
		}
		if _, err := kp.MarshalText(); err != nil {
			t.Fatal(err)
		}
	})
}
