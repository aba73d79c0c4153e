package publish

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
)

// BenchmarkImport imports a whole folder into a fresh archive: the folder
// named by $BEAKER_DEV_BENCH_SITE (bench/publish.sh generates the 256 MiB,
// 2000-file site there), else a generated 64 MiB tree.
func BenchmarkImport(b *testing.B) {
	dir := os.Getenv("BEAKER_DEV_BENCH_SITE")
	if dir == "" {
		dir = filepath.Join(b.TempDir(), "site")
		rng := rand.New(rand.NewPCG(5, 5))
		randomTree(b, rng, dir, 500)
		for i := 0; i < 8; i++ {
			writeFile(b, filepath.Join(dir, "media", "v"+itoa(i)+".bin"), fill(rng, 6<<20))
		}
	}
	var size int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, _ error) error {
		if fi != nil && fi.Mode().IsRegular() {
			size += fi.Size()
		}
		return nil
	})
	b.SetBytes(size)
	for range b.N {
		b.StopTimer()
		store, _ := hyperdrive.OpenStore(b.TempDir())
		a, err := store.Create(hyperdrive.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		res, err := Import(context.Background(), a, dir, ImportOptions{})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		b.ReportMetric(float64(res.NewChunks), "chunks/op")
		a.Close()
		os.RemoveAll(store.Dir())
		b.StartTimer()
	}
}

// BenchmarkReimportOneFile measures publishing a one-file change to an
// imported folder: the scan, the stat comparisons, reading the one file.
func BenchmarkReimportOneFile(b *testing.B) {
	dir := os.Getenv("BEAKER_DEV_BENCH_SITE")
	if dir == "" {
		dir = filepath.Join(b.TempDir(), "site")
		randomTree(b, rand.New(rand.NewPCG(6, 6)), dir, 2000)
	}
	store, _ := hyperdrive.OpenStore(b.TempDir())
	a, err := store.Create(hyperdrive.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	if _, err := Import(context.Background(), a, dir, ImportOptions{}); err != nil {
		b.Fatal(err)
	}
	edit := filepath.Join(dir, "bench-edit.html")
	defer os.Remove(edit)
	b.ResetTimer()
	for i := range b.N {
		os.WriteFile(edit, []byte(itoa(i)), 0o644)
		res, err := Import(context.Background(), a, dir, ImportOptions{})
		if err != nil || !res.Committed {
			b.Fatal(err)
		}
	}
}
