package hyperdrive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"testing/fstest"
	"time"
)

// fixedKey is the key pair of the golden vectors: seed 0x01 0x02 ... 0x20.
func fixedKey(t testing.TB) KeyPair {
	seed := make([]byte, 32)
	for i := range seed {
		seed[i] = byte(i + 1)
	}
	kp, err := KeyPairFromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// fixedClock returns 2026-01-02T03:04:05Z plus one second a call.
func fixedClock() func() time.Time {
	t := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return func() time.Time { t = t.Add(time.Second); return t }
}

func newArchive(t testing.TB) *Archive {
	t.Helper()
	a, err := Create(filepath.Join(t.TempDir(), "archive"), fixedKey(t), Options{Now: fixedClock()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// randomBytes returns n bytes from a seeded generator.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// put writes files (archive path -> content) in one commit.
func put(t testing.TB, a *Archive, files map[string][]byte, deletes ...string) uint64 {
	t.Helper()
	w, err := a.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		c, _, err := w.WriteContent(bytes.NewReader(files[p]))
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Put(p, FileMeta{Mode: 0o644, Size: uint64(len(files[p])), MTime: 1}, c); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range deletes {
		if err := w.Delete(p); err != nil {
			t.Fatal(err)
		}
	}
	v, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func readAll(t testing.TB, s *Snapshot, p string) []byte {
	t.Helper()
	f, err := s.OpenFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("reading %s: %v", p, err)
	}
	return b
}

func TestVersionsRoundTrip(t *testing.T) {
	a := newArchive(t)
	rng := rand.New(rand.NewPCG(1, 2))
	want := map[uint64]map[string][]byte{}
	cur := map[string][]byte{}
	for round := 0; round < 8; round++ {
		changes := map[string][]byte{}
		for i := 0; i < 1+rng.IntN(10); i++ {
			p := fmt.Sprintf("/d%d/f%d.bin", rng.IntN(3), rng.IntN(20))
			changes[p] = randomBytes(rng.Uint64(), rng.IntN(200_000))
		}
		var dels []string
		for p := range cur {
			if _, changed := changes[p]; !changed && rng.IntN(6) == 0 {
				dels = append(dels, p)
			}
		}
		v := put(t, a, changes, dels...)
		for p, b := range changes {
			cur[p] = b
		}
		for _, p := range dels {
			delete(cur, p)
		}
		snap := map[string][]byte{}
		for p, b := range cur {
			snap[p] = b
		}
		want[v] = snap
		if round%3 == 1 {
			w, _ := a.Begin(context.Background())
			if _, err := w.Tag(fmt.Sprintf("v1.%d.0", round), "release"); err != nil {
				t.Fatal(err)
			}
			if _, err := w.Commit(); err != nil {
				t.Fatal(err)
			}
			w.Close()
		}
	}
	// Reopen from disk and check every version and tag.
	dir := a.Dir()
	a.Close()
	b, err := Open(dir, fixedKey(t).Public, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for v, files := range want {
		s, err := b.Checkout(v)
		if err != nil {
			t.Fatalf("checkout %d: %v", v, err)
		}
		if s.Len() != len(files) {
			t.Fatalf("version %d has %d files, want %d", v, s.Len(), len(files))
		}
		for p, content := range files {
			if got := readAll(t, s, p); !bytes.Equal(got, content) {
				t.Fatalf("version %d %s: content differs", v, p)
			}
		}
	}
	for _, tag := range b.Tags() {
		v, err := b.Resolve("@" + tag.Name)
		if err != nil || v != tag.Version {
			t.Fatalf("resolve @%s = %d, %v; want %d", tag.Name, v, err, tag.Version)
		}
		if _, ok := want[v]; !ok {
			t.Fatalf("tag %s names %d, which is not a version", tag.Name, v)
		}
	}
	if len(b.Tags()) != 3 {
		t.Fatalf("%d tags, want 3", len(b.Tags()))
	}
	rep, err := Verify(context.Background(), dir, b.Key(), VerifyOptions{})
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %v %v", err, rep.Problems)
	}
}

func TestRandomAccessReads(t *testing.T) {
	a := newArchive(t)
	rng := rand.New(rand.NewPCG(3, 4))
	files := map[string][]byte{
		"/empty":  {},
		"/small":  []byte("hello"),
		"/medium": randomBytes(5, 300_000),
		// > 1024 chunks: the content spills into index blocks.
		"/large": randomBytes(6, 24<<20),
	}
	v1 := put(t, a, files)
	edited := slices.Clone(files["/large"])
	copy(edited[12<<20:], bytes.Repeat([]byte("x"), 100))
	v2 := put(t, a, map[string][]byte{"/large": edited})

	for _, tc := range []struct {
		v     uint64
		path  string
		bytes []byte
	}{{v1, "/medium", files["/medium"]}, {v1, "/large", files["/large"]}, {v2, "/large", edited}, {v1, "/small", files["/small"]}} {
		s, err := a.Checkout(tc.v)
		if err != nil {
			t.Fatal(err)
		}
		f, err := s.OpenFile(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		if tc.path == "/large" && f.Content().Level == 0 {
			t.Fatal("a 24 MiB file should use index blocks")
		}
		for i := 0; i < 200; i++ {
			off := rng.IntN(len(tc.bytes))
			n := rng.IntN(100_000)
			buf := make([]byte, n)
			got, err := f.ReadAt(buf, int64(off))
			wantN := min(n, len(tc.bytes)-off)
			if got != wantN || (err != nil && err != io.EOF) || (got < n && err != io.EOF) {
				t.Fatalf("ReadAt(%d, %d) = %d, %v; want %d", n, off, got, err, wantN)
			}
			if !bytes.Equal(buf[:got], tc.bytes[off:off+got]) {
				t.Fatalf("version %d %s: bytes at %d differ", tc.v, tc.path, off)
			}
		}
	}
	s, _ := a.Checkout(v1)
	if b := readAll(t, s, "/empty"); len(b) != 0 {
		t.Fatalf("empty file read %d bytes", len(b))
	}
	// fstest reads every file a few bytes at a time; the large one is
	// covered by the random reads above.
	snap := a.Latest()
	small, _ := fs.Sub(fsWithout{snap, "large"}, ".")
	if err := fstest.TestFS(small, "small", "medium", "empty"); err != nil {
		t.Fatal(err)
	}
}

// TestSmallEditStoresLittle: a 100-byte edit in the middle of a large file
// stores at most 128 KiB of new data (issue: chunk and index-block locality).
func TestSmallEditStoresLittle(t *testing.T) {
	a := newArchive(t)
	size := 64 << 20
	if testing.Short() {
		size = 24 << 20 // still more chunks than an entry holds inline
	}
	data := randomBytes(7, size)
	put(t, a, map[string][]byte{"/big.bin": data})
	for _, off := range []int{1 << 20, size / 2, size - 1<<20} {
		edited := slices.Clone(data)
		copy(edited[off:], bytes.Repeat([]byte{'e'}, 100))
		w, err := a.Begin(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		c, st, err := w.WriteContent(bytes.NewReader(edited))
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Put("/big.bin", FileMeta{Mode: 0o644, Size: uint64(len(edited))}, c); err != nil {
			t.Fatal(err)
		}
		entrySize := 0
		if b, err := (&Entry{Type: EntryPut, Path: "/big.bin", File: FileMeta{Mode: 0o644, Size: uint64(len(edited))}, Content: c}).MarshalBinary(); err == nil {
			entrySize = len(b)
		}
		w.Commit()
		w.Close()
		total := st.NewBytes + uint64(entrySize)
		t.Logf("100-byte edit at %d MiB: %d new chunks, %d new bytes + %d-byte entry", off>>20, st.NewChunks, st.NewBytes, entrySize)
		if total > 128<<10 {
			t.Fatalf("100-byte edit stored %d bytes, want <= 128 KiB", total)
		}
		data = edited
	}
}

func TestDedupAcrossFilesAndVersions(t *testing.T) {
	a := newArchive(t)
	data := randomBytes(8, 1<<20)
	w, _ := a.Begin(context.Background())
	_, st1, _ := w.WriteContent(bytes.NewReader(data))
	_, st2, _ := w.WriteContent(bytes.NewReader(data))
	w.Close()
	if st1.NewBytes != uint64(len(data)) || st2.NewBytes != 0 || st2.NewChunks != 0 {
		t.Fatalf("first write stored %d bytes, second %d; want %d and 0", st1.NewBytes, st2.NewBytes, len(data))
	}
}

func TestTagsAndVersionErrors(t *testing.T) {
	a := newArchive(t)
	v := put(t, a, map[string][]byte{"/index.html": []byte("<h1>hi</h1>")})
	w, _ := a.Begin(context.Background())
	defer w.Close()
	if name, err := w.Tag("v2.1.0", "first"); err != nil || name != "2.1.0" {
		t.Fatalf("Tag(v2.1.0) = %q, %v", name, err)
	}
	if _, err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"2.1", "latest", "2.1.0+build", "banana", ""} {
		if _, err := w.Tag(bad, ""); !errors.Is(err, ErrInvalidTag) {
			t.Errorf("Tag(%q) = %v, want ErrInvalidTag", bad, err)
		}
	}
	if _, err := w.Tag("2.1.0", ""); !errors.Is(err, ErrTagExists) {
		t.Errorf("duplicate tag: %v, want ErrTagExists", err)
	}
	if got, err := a.Resolve("@2.1.0"); err != nil || got != v {
		t.Errorf("Resolve(@2.1.0) = %d, %v; want %d", got, err, v)
	}
	if got, err := a.Resolve("v2.1.0"); err != nil || got != v {
		t.Errorf("Resolve(v2.1.0) = %d, %v; want %d", got, err, v)
	}
	if _, err := a.Resolve("@9.9.9"); !errors.Is(err, ErrNoTag) {
		t.Errorf("Resolve(@9.9.9) = %v, want ErrNoTag", err)
	}
	if _, err := a.Resolve("+999"); !errors.Is(err, ErrNoVersion) {
		t.Errorf("Resolve(+999) = %v, want ErrNoVersion", err)
	}
	if _, err := a.Checkout(0); !errors.Is(err, ErrNoVersion) {
		t.Errorf("Checkout(0) = %v, want ErrNoVersion", err)
	}
	if got, _ := a.Resolve("latest"); got != a.Version() {
		t.Errorf("latest = %d, want %d", got, a.Version())
	}
}

func TestDiffAndHistory(t *testing.T) {
	a := newArchive(t)
	v1 := put(t, a, map[string][]byte{"/a": []byte("1"), "/b": []byte("2"), "/c": []byte("3")})
	v2 := put(t, a, map[string][]byte{"/b": []byte("22"), "/d": []byte("4"), "/a": []byte("1")}, "/c")
	s1, _ := a.Checkout(v1)
	s2, _ := a.Checkout(v2)
	d, err := Diff(s1, s2)
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(d)
	want := "[{/b changed 1 2} {/c removed 1 0} {/d added 0 1}]"
	if got != want {
		t.Fatalf("diff = %s, want %s", got, want)
	}
	h, err := a.History()
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 3 || h[0].Changes[0].Type != EntryManifest || h[2].Version != v2 || len(h[2].Changes) != 4 {
		t.Fatalf("history = %+v", h)
	}
}

func TestSecondWriterIsRefused(t *testing.T) {
	a := newArchive(t)
	b, err := Open(a.Dir(), a.Key(), Options{Secret: fixedKey(t).Secret, LockHolder: "the other writer"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	w, err := b.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = a.Begin(ctx)
	var le *LockedError
	if !errors.As(err, &le) || le.Holder != "the other writer" {
		t.Fatalf("second Begin = %v, want a LockedError naming the holder", err)
	}
	w.Close()
	w2, err := a.Begin(context.Background())
	if err != nil {
		t.Fatalf("Begin after release: %v", err)
	}
	w2.Close()
}

func TestReaderSeesOtherHandlesCommits(t *testing.T) {
	a := newArchive(t)
	r, err := Open(a.Dir(), a.Key(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	v := put(t, a, map[string][]byte{"/x": []byte("x")})
	if r.Version() == v {
		t.Fatal("reader saw the commit before refreshing")
	}
	if err := r.Refresh(); err != nil {
		t.Fatal(err)
	}
	if r.Version() != v || !bytes.Equal(readAll(t, r.Latest(), "/x"), []byte("x")) {
		t.Fatalf("after refresh version %d, want %d", r.Version(), v)
	}
	if _, err := r.Begin(context.Background()); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Begin on a read-only handle = %v", err)
	}
}

func TestSubscribe(t *testing.T) {
	a := newArchive(t)
	ch, stop := a.Subscribe()
	defer stop()
	v := put(t, a, map[string][]byte{"/x": []byte("x")})
	select {
	case got := <-ch:
		if got != v {
			t.Fatalf("notified %d, want %d", got, v)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no notification")
	}
}

// TestTornTailsAreCut appends garbage after a committed version, as a
// killed writer would, and checks the archive opens at that version and the
// next writer cuts the garbage and commits on top.
func TestTornTailsAreCut(t *testing.T) {
	a := newArchive(t)
	v := put(t, a, map[string][]byte{"/a": randomBytes(9, 100_000)})
	dir := a.Dir()
	a.Close()
	for _, name := range []string{entriesFile, signaturesFile, chunksFile, chunkIndexFile} {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte{0, 0, 1, 7, 9})
		f.Close()
	}
	b, err := Open(dir, fixedKey(t).Public, Options{Secret: fixedKey(t).Secret})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Version() != v {
		t.Fatalf("opened at %d, want %d", b.Version(), v)
	}
	v2 := put(t, b, map[string][]byte{"/b": []byte("b")})
	rep, err := Verify(context.Background(), dir, b.Key(), VerifyOptions{})
	if err != nil || !rep.OK() || len(rep.TornTails) != 0 {
		t.Fatalf("verify after repair: %v %v %v", err, rep.Problems, rep.TornTails)
	}
	if v2 <= v {
		t.Fatal("no new version")
	}
}

// TestVerifyNamesFlippedBytes flips one byte in each storage file and checks
// Verify reports a problem in that file.
func TestVerifyNamesFlippedBytes(t *testing.T) {
	for _, name := range []string{entriesFile, treeFile, signaturesFile, chunksFile, chunkIndexFile} {
		t.Run(name, func(t *testing.T) {
			a := newArchive(t)
			put(t, a, map[string][]byte{"/a": randomBytes(10, 50_000), "/b": []byte("bee")})
			put(t, a, map[string][]byte{"/c": randomBytes(11, 20_000)})
			dir, key := a.Dir(), a.Key()
			a.Close()
			path := filepath.Join(dir, name)
			b, _ := os.ReadFile(path)
			b[headerSize+len(b[headerSize:])/3] ^= 0x10
			os.WriteFile(path, b, 0o600)
			rep, err := Verify(context.Background(), dir, key, VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK() {
				t.Fatalf("flipped byte in %s not found", name)
			}
			t.Logf("first problem: %v", rep.Problems[0])
		})
	}
}

var _ fs.FS = (*Snapshot)(nil)

// fsWithout hides one root file of a snapshot from fstest.
type fsWithout struct {
	s    *Snapshot
	hide string
}

func (f fsWithout) Open(name string) (fs.File, error) {
	if name == f.hide {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	file, err := f.s.Open(name)
	if err != nil || name != "." {
		return file, err
	}
	d := file.(*dirFile)
	var kept []fs.DirEntry
	for _, e := range d.entries {
		if e.Name() != f.hide {
			kept = append(kept, e)
		}
	}
	d.entries = kept
	return d, nil
}
