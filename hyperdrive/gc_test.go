package hyperdrive

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// storeWithGarbage makes a store holding: an author's archive with the
// chunks of an import that never committed, a saved replica and a cached
// (unsaved) replica of it.
func storeWithGarbage(t *testing.T) (*Store, *Archive, map[string][]byte, int) {
	t.Helper()
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.Create(Options{})
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"/index.html": randomBytes(1, 50_000), "/big.bin": randomBytes(2, 3<<20)}
	put(t, a, files)
	put(t, a, map[string][]byte{"/index.html": randomBytes(3, 60_000)}) // the old index.html stays referenced by version 3
	files["/index.html"] = randomBytes(3, 60_000)

	// An import that stored chunks and died before committing.
	w, err := a.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, st, err := w.WriteContent(bytes.NewReader(randomBytes(4, 1<<20)))
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if st.NewChunks == 0 {
		t.Fatal("the aborted import stored nothing")
	}
	return s, a, files, st.NewChunks
}

func TestGC(t *testing.T) {
	s, a, files, garbage := storeWithGarbage(t)
	// One cached archive (no key in the store, not saved) and one saved.
	kp, _ := GenerateKeyPair()
	c, err := Create(s.ArchiveDir(kp.Public), kp, Options{})
	if err != nil {
		t.Fatal(err)
	}
	put(t, c, map[string][]byte{"/a.txt": []byte("cached")})
	c.Close()
	kp2, _ := GenerateKeyPair()
	c2, err := Create(s.ArchiveDir(kp2.Public), kp2, Options{})
	if err != nil {
		t.Fatal(err)
	}
	c2.Close()
	if err := s.SetSaved(kp2.Public, true); err != nil {
		t.Fatal(err)
	}
	if s.Saved(kp.Public) || !s.Saved(kp2.Public) || !s.Saved(a.Key()) {
		t.Fatal("saved marks wrong")
	}

	// While the author's archive is open, gc leaves it alone.
	rep, err := s.GC(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(rep.Skipped, a.Key()) || !slices.Contains(rep.Removed, kp.Public) || slices.Contains(rep.Removed, kp2.Public) {
		t.Fatalf("with the author's archive open: %+v", rep)
	}
	if s.HasArchive(kp.Public) || !s.HasArchive(kp2.Public) {
		t.Fatal("the cached archive was kept or the saved one removed")
	}
	if rep.Freed <= 0 {
		t.Fatalf("freed %d bytes", rep.Freed)
	}

	before := dirSizeT(t, a.Dir())
	a.Close()
	rep, err = s.GC(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Chunks != garbage || !slices.Contains(rep.Compacted, a.Key()) {
		t.Fatalf("freed %d chunks, want %d: %+v", rep.Chunks, garbage, rep)
	}
	after := dirSizeT(t, a.Dir())
	if before-after < 1<<20 || rep.Freed < 1<<20 {
		t.Fatalf("archive %d -> %d bytes, report says %d freed", before, after, rep.Freed)
	}
	a2, err := s.Open(a.Key(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a2.Close()
	for p, want := range files {
		if got := readAll(t, a2.Latest(), p); !bytes.Equal(got, want) {
			t.Fatalf("%s differs after gc", p)
		}
	}
	old, err := a2.Checkout(3)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, old, "/index.html"); !bytes.Equal(got, randomBytes(1, 50_000)) {
		t.Fatal("an older version lost its chunks")
	}
	vr, err := Verify(context.Background(), a2.Dir(), a2.Key(), VerifyOptions{})
	if err != nil || len(vr.Problems) > 0 {
		t.Fatalf("verify after gc: %v %v", err, vr.Problems)
	}
	// Writing goes on after a compaction.
	put(t, a2, map[string][]byte{"/new.txt": []byte("after gc")})
	if got := readAll(t, a2.Latest(), "/new.txt"); string(got) != "after gc" {
		t.Fatal("write after gc")
	}
	// A second gc finds nothing.
	a2.Close()
	rep, err = s.GC(context.Background())
	if err != nil || rep.Chunks != 0 || rep.Freed != 0 {
		t.Fatalf("second gc: %+v %v", rep, err)
	}
}

// TestGCInterrupted covers a gc killed after its commit point (the mark
// exists: the next open finishes it) and before it (the .compact files are
// thrown away).
func TestGCInterrupted(t *testing.T) {
	s, a, files, _ := storeWithGarbage(t)
	a.Close()
	dir := a.Dir()

	// What a finished compaction produces, made on a copy.
	cp := filepath.Join(t.TempDir(), "copy")
	copyDir(t, dir, cp)
	if n, _, err := compact(cp, a.Key()); err != nil || n == 0 {
		t.Fatalf("compact: %d %v", n, err)
	}

	for _, committed := range []bool{true, false} {
		work := filepath.Join(t.TempDir(), "work")
		copyDir(t, dir, work)
		for _, name := range []string{chunksFile, chunkIndexFile} {
			b, err := os.ReadFile(filepath.Join(cp, name))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(work, name+compactSuffix), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if committed {
			os.WriteFile(filepath.Join(work, compactMark), nil, 0o600)
		}
		kp, err := s.LoadKey(a.Key())
		if err != nil {
			t.Fatal(err)
		}
		b, err := Open(work, a.Key(), Options{Secret: kp.Secret})
		if err != nil {
			t.Fatalf("committed=%v: %v", committed, err)
		}
		for p, want := range files {
			if got := readAll(t, b.Latest(), p); !bytes.Equal(got, want) {
				t.Fatalf("committed=%v: %s differs", committed, p)
			}
		}
		b.Close()
		_, markErr := os.Stat(filepath.Join(work, compactMark))
		size := fileSize(t, filepath.Join(work, chunksFile))
		if committed && (markErr == nil || size != fileSize(t, filepath.Join(cp, chunksFile))) {
			t.Fatalf("an interrupted, committed gc was not finished at open (mark: %v, chunks %d bytes)", markErr, size)
		}
		if !committed && size != fileSize(t, filepath.Join(dir, chunksFile)) {
			t.Fatal("an uncommitted gc changed the chunks")
		}
		vr, err := Verify(context.Background(), work, a.Key(), VerifyOptions{})
		if err != nil || len(vr.Problems) > 0 {
			t.Fatalf("committed=%v: verify: %v %v", committed, err, vr.Problems)
		}
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.CopyFS(to, os.DirFS(from)); err != nil {
		t.Fatal(err)
	}
}

func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func dirSizeT(t *testing.T, dir string) int64 {
	t.Helper()
	n, err := dirSize(dir)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
