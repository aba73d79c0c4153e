package publish

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"
)

func TestFolderFSHidesWhatIsNotPublished(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(t.TempDir(), "secret.txt")
	os.WriteFile(secret, []byte("SECRET"), 0o600)
	writeFile(t, filepath.Join(dir, "index.html"), []byte("hi"))
	writeFile(t, filepath.Join(dir, "css", "a.css"), []byte("a"))
	writeFile(t, filepath.Join(dir, ".env"), []byte("KEY=1"))
	writeFile(t, filepath.Join(dir, ".git", "config"), []byte("x"))
	writeFile(t, filepath.Join(dir, ".dat", "archive.json"), []byte("{}"))
	writeFile(t, filepath.Join(dir, "node_modules", "m", "i.js"), []byte("m"))
	writeFile(t, filepath.Join(dir, "drafts", "d.html"), []byte("d"))
	writeFile(t, filepath.Join(dir, ".datignore"), []byte("drafts/\n"))
	writeFile(t, filepath.Join(dir, ".well-known", "dat"), []byte("dat://x"))
	os.Symlink(secret, filepath.Join(dir, "leak.txt"))
	os.Symlink(filepath.Dir(secret), filepath.Join(dir, "leakdir"))
	os.Symlink("css", filepath.Join(dir, "styles"))
	os.Symlink("index.html", filepath.Join(dir, "home.html"))
	f, err := NewFolderFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, hidden := range []string{".env", ".git/config", ".dat/archive.json", "node_modules/m/i.js", "drafts/d.html",
		"leak.txt", "leakdir/secret.txt", "styles/a.css", ".datignore", "../secret.txt", "css/../../x"} {
		if _, err := fs.ReadFile(f, hidden); err == nil {
			t.Errorf("%s is readable", hidden)
		}
	}
	if _, err := f.Open("a\\b"); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("backslash path: %v", err)
	}
	if err := fstest.TestFS(f, "index.html", "css/a.css", ".well-known/dat", "home.html"); err != nil {
		t.Fatal(err)
	}
	// Ignore rules are re-read after Invalidate.
	writeFile(t, filepath.Join(dir, ".datignore"), []byte("css/\n"))
	f.Invalidate()
	if _, err := fs.ReadFile(f, "css/a.css"); err == nil {
		t.Fatal("css/ still visible after the rules changed")
	}
	if _, err := fs.ReadFile(f, "drafts/d.html"); err != nil {
		t.Fatal("drafts/ still hidden after the rules changed")
	}
}
