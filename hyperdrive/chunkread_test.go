package hyperdrive

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"
)

// writerOnly hides bytes.Buffer's AvailableBuffer, so File.WriteTo takes
// its allocating path.
type writerOnly struct{ w io.Writer }

func (w writerOnly) Write(p []byte) (int, error) { return w.w.Write(p) }

// TestWriteToPaths reads a file that needs index blocks through each read
// path: WriteTo into a buffer that lends its free space (chunks read
// straight into it), WriteTo into a plain writer, and small Reads.
func TestWriteToPaths(t *testing.T) {
	a := newArchive(t)
	want := randomBytes(21, 24<<20) // ~1500 chunks: more refs than fit inline
	put(t, a, map[string][]byte{"/big": want, "/small": []byte("tiny")})
	s := a.Latest()
	open := func() *File {
		f, err := s.OpenFile("/big")
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	if open().Content().Level == 0 {
		t.Fatalf("test file has no index level; make it larger")
	}
	var direct bytes.Buffer
	direct.Grow(64 << 10) // far less than the file: most chunks still fit
	if _, err := io.Copy(&direct, open()); err != nil {
		t.Fatal(err)
	}
	var plain bytes.Buffer
	if _, err := io.Copy(writerOnly{&plain}, open()); err != nil {
		t.Fatal(err)
	}
	small, err := io.ReadAll(iotest.OneByteReader(io.LimitReader(open(), 100_000)))
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case !bytes.Equal(direct.Bytes(), want):
		t.Fatal("WriteTo into a bytes.Buffer differs from the file")
	case !bytes.Equal(plain.Bytes(), want):
		t.Fatal("WriteTo into a plain writer differs from the file")
	case !bytes.Equal(small, want[:100_000]):
		t.Fatal("one-byte reads differ from the file")
	}
}

// TestStoredChunksAreCheckedOnRead flips a byte of a stored chunk while no
// process has the archive open: the next process's first read of it, on
// every read path, is a CorruptError, never the wrong bytes. (Chunks this
// process wrote or has already checked are not hashed again.)
func TestStoredChunksAreCheckedOnRead(t *testing.T) {
	a := newArchive(t)
	content := randomBytes(22, 200_000)
	put(t, a, map[string][]byte{"/f": content})
	dir, key := a.Dir(), a.Key()
	a.Close()
	path := filepath.Join(dir, chunksFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, read := range map[string]func(io.Reader) error{
		"bytes.Buffer": func(r io.Reader) error { _, err := io.Copy(new(bytes.Buffer), r); return err },
		"plain writer": func(r io.Reader) error { _, err := io.Copy(writerOnly{io.Discard}, r); return err },
		"ReadAll":      func(r io.Reader) error { _, err := io.ReadAll(iotest.OneByteReader(r)); return err },
	} {
		r, err := Open(dir, key, Options{})
		if err != nil {
			t.Fatal(err)
		}
		f, err := r.Latest().OpenFile("/f")
		if err != nil {
			t.Fatal(err)
		}
		err = read(f)
		var ce *CorruptError
		if !errors.As(err, &ce) || ce.File != chunksFile {
			t.Errorf("%s: reading a file with a flipped chunk byte gave %v, want a CorruptError in %s", name, err, chunksFile)
		}
		if _, err := r.Chunk(hashOfChunkAt(t, b, len(b)/2)); !errors.As(err, &ce) {
			t.Errorf("%s: Chunk of the flipped chunk gave %v, want a CorruptError", name, err)
		}
		r.Close()
	}
}

// hashOfChunkAt returns the address in the record header of the chunk
// whose data holds byte off of a chunks file.
func hashOfChunkAt(t *testing.T, file []byte, off int) Hash {
	t.Helper()
	pos := headerSize
	for pos < len(file) {
		h, n, err := DecodeChunkHeader(file[pos : pos+chunkHeaderSize])
		if err != nil {
			t.Fatal(err)
		}
		end := pos + chunkHeaderSize + int(n)
		if off < end {
			return h
		}
		pos = end
	}
	t.Fatalf("offset %d is past the chunks", off)
	return Hash{}
}
