package publish

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
)

// newSite makes a store, an archive and an empty site folder linked to it.
func newSite(t testing.TB) (*hyperdrive.Store, *hyperdrive.Archive, string) {
	t.Helper()
	store, err := hyperdrive.OpenStore(filepath.Join(t.TempDir(), "data"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := store.Create(hyperdrive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	dir := filepath.Join(t.TempDir(), "site")
	if _, err := LinkSite(dir, a.Key()); err != nil {
		t.Fatal(err)
	}
	return store, a, dir
}

func fill(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// randomTree writes n random files under dir with skewed sizes, plus some
// that the default ignore rules leave out.
func randomTree(t testing.TB, rng *rand.Rand, dir string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		depth := rng.IntN(4)
		parts := []string{}
		for d := 0; d < depth; d++ {
			parts = append(parts, fmt.Sprintf("d%d", rng.IntN(4)))
		}
		parts = append(parts, fmt.Sprintf("f%d.%s", i, []string{"html", "css", "js", "png", "bin"}[rng.IntN(5)]))
		size := int(rng.ExpFloat64() * 20000)
		if rng.IntN(20) == 0 {
			size = 0
		}
		writeFile(t, filepath.Join(append([]string{dir}, parts...)...), fill(rng, size))
	}
	writeFile(t, filepath.Join(dir, ".env"), []byte("SECRET=1"))
	writeFile(t, filepath.Join(dir, "node_modules", "x", "index.js"), []byte("x"))
	writeFile(t, filepath.Join(dir, ".git", "HEAD"), []byte("ref"))
}

func writeFile(t testing.TB, p string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// published reads the files of dir that an import publishes.
func published(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	ig := NewIgnore()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if rel == "." {
			return nil
		}
		if ig.Match(rel, d.IsDir()) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.IsDir() {
			b, _ := os.ReadFile(p)
			out[rel] = b
		}
		return nil
	})
	return out
}

func exported(t testing.TB, s *hyperdrive.Snapshot) map[string][]byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "export")
	if _, err := Export(context.Background(), s, out, ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	return published(t, out)
}

func sameTree(t testing.TB, what string, got, want map[string][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d files, want %d", what, len(got), len(want))
	}
	for p, b := range want {
		if !bytes.Equal(got[p], b) {
			t.Fatalf("%s: %s differs", what, p)
		}
	}
}

func TestImportExportRoundTrip(t *testing.T) {
	_, a, dir := newSite(t)
	rng := rand.New(rand.NewPCG(11, 12))
	randomTree(t, rng, dir, 120)
	ctx := context.Background()
	want := map[uint64]map[string][]byte{}
	tags := map[string]uint64{}
	for round := 0; round < 5; round++ {
		res, err := Import(ctx, a, dir, ImportOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Committed {
			t.Fatalf("round %d: nothing committed", round)
		}
		want[res.Version] = published(t, dir)
		if round%2 == 0 {
			w, _ := a.Begin(ctx)
			name, err := w.Tag(fmt.Sprintf("1.%d.0", round), "")
			if err != nil {
				t.Fatal(err)
			}
			w.Commit()
			w.Close()
			tags[name] = res.Version
		}
		// Change some files, delete some, add some, touch some.
		files := published(t, dir)
		i := 0
		for rel := range files {
			p := filepath.Join(dir, filepath.FromSlash(rel))
			switch i % 9 {
			case 0:
				os.WriteFile(p, fill(rng, rng.IntN(50000)), 0o644)
			case 1:
				os.Remove(p)
			case 2:
				future := time.Now().Add(time.Duration(rng.IntN(1000)) * time.Second)
				os.Chtimes(p, future, future) // touched, same bytes
			}
			i++
		}
		randomTree(t, rng, dir, 10)
	}
	for v, files := range want {
		s, err := a.Checkout(v)
		if err != nil {
			t.Fatal(err)
		}
		sameTree(t, fmt.Sprintf("version %d", v), exported(t, s), files)
	}
	for name, v := range tags {
		got, err := a.Resolve("@" + name)
		if err != nil || got != v {
			t.Fatalf("@%s = %d, %v, want %d", name, got, err, v)
		}
	}
	s := a.Latest()
	for _, p := range []string{"/.env", "/node_modules/x/index.js", "/.git/HEAD"} {
		if _, ok := s.File(p); ok {
			t.Fatalf("%s was published", p)
		}
	}
}

func TestImportIsIncremental(t *testing.T) {
	_, a, dir := newSite(t)
	rng := rand.New(rand.NewPCG(1, 1))
	randomTree(t, rng, dir, 50)
	big := fill(rng, 3<<20)
	writeFile(t, filepath.Join(dir, "big.bin"), big)
	// Make every mtime old enough not to be racy.
	old := time.Now().Add(-time.Hour)
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error { os.Chtimes(p, old, old); return nil })
	ctx := context.Background()
	cache := NewStatCache()
	first, err := Import(ctx, a, dir, ImportOptions{Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	again, err := Import(ctx, a, dir, ImportOptions{Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	if again.Committed || again.Version != first.Version || again.ReadBytes != 0 {
		t.Fatalf("unchanged folder: committed=%v version %d->%d read %d bytes", again.Committed, first.Version, again.Version, again.ReadBytes)
	}
	// Touch without changing: read once, no version; then not read again.
	now := time.Now().Add(-time.Minute)
	os.Chtimes(filepath.Join(dir, "big.bin"), now, now)
	touched, _ := Import(ctx, a, dir, ImportOptions{Cache: cache})
	if touched.Committed || touched.ReadBytes != uint64(len(big)) {
		t.Fatalf("touched file: committed=%v read %d", touched.Committed, touched.ReadBytes)
	}
	if again, _ := Import(ctx, a, dir, ImportOptions{Cache: cache}); again.ReadBytes != 0 {
		t.Fatalf("touched file read again: %d bytes", again.ReadBytes)
	}
	// A one-byte change in the middle of the big file: only it is read, and
	// only the chunks around the change are new.
	big[len(big)/2] ^= 1
	writeFile(t, filepath.Join(dir, "big.bin"), big)
	one, err := Import(ctx, a, dir, ImportOptions{Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	if !one.Committed || one.ReadBytes != uint64(len(big)) || len(one.Changed) != 1 || one.NewBytes > 128<<10 {
		t.Fatalf("one-byte edit: committed=%v read %d changed %v new %d", one.Committed, one.ReadBytes, one.Changed, one.NewBytes)
	}
}

func TestImportSkipsEscapingSymlinks(t *testing.T) {
	_, a, dir := newSite(t)
	secret := filepath.Join(t.TempDir(), "id_rsa")
	os.WriteFile(secret, []byte("PRIVATE"), 0o600)
	writeFile(t, filepath.Join(dir, "index.html"), []byte("hi"))
	os.Symlink(secret, filepath.Join(dir, "leak.txt"))
	os.Symlink("index.html", filepath.Join(dir, "alias.html"))
	res, err := Import(context.Background(), a, dir, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := a.Latest()
	if _, ok := s.File("/leak.txt"); ok {
		t.Fatal("a symlink out of the site was published")
	}
	if _, ok := s.File("/alias.html"); !ok {
		t.Fatal("a symlink inside the site was not published")
	}
	if !strings.Contains(strings.Join(res.Skipped, "\n"), "leak.txt") {
		t.Fatalf("skipped = %v", res.Skipped)
	}
}

func TestSiteErrors(t *testing.T) {
	if _, err := OpenSite(t.TempDir()); !errors.Is(err, ErrNotSite) {
		t.Fatalf("OpenSite(empty) = %v", err)
	}
	site := t.TempDir()
	if err := CheckDataDir(site, filepath.Join(site, "data")); !errors.Is(err, ErrDataDirInSite) {
		t.Fatalf("data dir inside site: %v", err)
	}
	if err := CheckDataDir(site, filepath.Join(site, ".dat", "home")); err != nil {
		t.Fatalf("data dir inside .dat: %v", err)
	}
	if err := CheckDataDir(site, t.TempDir()); err != nil {
		t.Fatal(err)
	}
}

func TestExportRefusesNonEmpty(t *testing.T) {
	_, a, _ := newSite(t)
	out := t.TempDir()
	os.WriteFile(filepath.Join(out, "x"), nil, 0o644)
	if _, err := Export(context.Background(), a.Latest(), out, ExportOptions{}); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("Export into non-empty = %v", err)
	}
}

func TestImportPaths(t *testing.T) {
	_, a, dir := newSite(t)
	rng := rand.New(rand.NewPCG(21, 22))
	randomTree(t, rng, dir, 40)
	writeFile(t, filepath.Join(dir, "keep.html"), []byte("keep"))
	writeFile(t, filepath.Join(dir, "gone.html"), []byte("gone"))
	writeFile(t, filepath.Join(dir, "old", "a.html"), []byte("a"))
	writeFile(t, filepath.Join(dir, "old", "b.html"), []byte("b"))
	ctx := context.Background()
	if _, err := Import(ctx, a, dir, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	// Changes the partial import is told about...
	writeFile(t, filepath.Join(dir, "keep.html"), []byte("kept, edited"))
	os.Remove(filepath.Join(dir, "gone.html"))
	os.RemoveAll(filepath.Join(dir, "old"))
	writeFile(t, filepath.Join(dir, "new", "deep", "c.html"), []byte("c"))
	writeFile(t, filepath.Join(dir, "node_modules", "x.js"), []byte("x"))
	// ...and one it is not: it must stay as it was in the archive.
	writeFile(t, filepath.Join(dir, "unreported.html"), []byte("later"))
	res, err := Import(ctx, a, dir, ImportOptions{Paths: []string{"keep.html", "gone.html", "old", "new", "node_modules/x.js"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/gone.html", "/keep.html", "/new/deep/c.html", "/old/a.html", "/old/b.html"}
	if fmt.Sprint(res.Changed) != fmt.Sprint(want) {
		t.Fatalf("changed %v, want %v", res.Changed, want)
	}
	s := a.Latest()
	if _, ok := s.File("/unreported.html"); ok {
		t.Fatal("a path outside the batch was imported")
	}
	if _, ok := s.File("/node_modules/x.js"); ok {
		t.Fatal("an ignored path was imported")
	}
	// A full import picks up the rest.
	res, _ = Import(ctx, a, dir, ImportOptions{})
	if fmt.Sprint(res.Changed) != "[/unreported.html]" {
		t.Fatalf("full import changed %v", res.Changed)
	}
}
