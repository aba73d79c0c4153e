package hyperdrive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"path/filepath"
	"testing"

	"github.com/restic/chunker"
)

// Benchmarks of the import pipeline's stages, to know where the time goes:
// Rabin chunking alone, SHA-256 alone, and chunk+hash+store together.

const benchSize = 64 << 20

func BenchmarkRabinChunker(b *testing.B) {
	data := randomBytes(1, benchSize)
	p := DefaultChunkParams
	c := chunker.NewWithBoundaries(bytes.NewReader(nil), chunker.Pol(p.Polynomial), uint(p.Min), uint(p.Max))
	buf := make([]byte, p.Max)
	b.SetBytes(benchSize)
	b.ResetTimer()
	for range b.N {
		c.ResetWithBoundaries(bytes.NewReader(data), chunker.Pol(p.Polynomial), uint(p.Min), uint(p.Max))
		c.SetAverageBits(int(p.AvgBits))
		for {
			if _, err := c.Next(buf); err == io.EOF {
				break
			}
		}
	}
}

func BenchmarkSHA256Chunks(b *testing.B) {
	data := randomBytes(2, 16<<10)
	b.SetBytes(int64(len(data)))
	for range b.N {
		sha256.Sum256(data)
	}
}

// BenchmarkWriteContent measures chunking, hashing and appending to the
// chunk store of one goroutine (the work one import worker does).
func BenchmarkWriteContent(b *testing.B) {
	data := randomBytes(3, benchSize)
	b.SetBytes(benchSize)
	for range b.N {
		b.StopTimer()
		a, err := Create(filepath.Join(b.TempDir(), "a"), fixedKey(b), Options{})
		if err != nil {
			b.Fatal(err)
		}
		w, _ := a.Begin(context.Background())
		b.StartTimer()
		if _, _, err := w.WriteContent(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		w.Close()
		a.Close()
		b.StartTimer()
	}
}

// BenchmarkCommit measures appending and signing one version of n puts.
func BenchmarkCommit(b *testing.B) {
	for _, n := range []int{1, 2000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			a, err := Create(filepath.Join(b.TempDir(), "a"), fixedKey(b), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer a.Close()
			w, _ := a.Begin(context.Background())
			defer w.Close()
			c, _, _ := w.WriteContent(bytes.NewReader([]byte("hello")))
			b.ResetTimer()
			for i := range b.N {
				for j := range n {
					w.Put(fmt.Sprintf("/dir%d/file%d.html", j%10, i*n+j), FileMeta{Mode: 0o644, Size: 5}, c)
				}
				if _, err := w.Commit(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReadFile measures verified sequential reads.
func BenchmarkReadFile(b *testing.B) {
	a, err := Create(filepath.Join(b.TempDir(), "a"), fixedKey(b), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	data := randomBytes(4, 16<<20)
	put(b, a, map[string][]byte{"/f": data})
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for range b.N {
		f, _ := a.Latest().OpenFile("/f")
		io.Copy(io.Discard, f)
	}
}
