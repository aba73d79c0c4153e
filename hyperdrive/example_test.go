package hyperdrive_test

import (
	"context"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
)

// Create an archive, publish two versions and a tag, and read old versions.
func Example() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	store, err := hyperdrive.OpenStore(dir)
	if err != nil {
		log.Fatal(err)
	}
	a, err := store.Create(hyperdrive.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()

	publish := func(path, content string) uint64 {
		w, err := a.Begin(context.Background())
		if err != nil {
			log.Fatal(err)
		}
		defer w.Close()
		c, _, err := w.WriteContent(strings.NewReader(content))
		if err != nil {
			log.Fatal(err)
		}
		w.Put(path, hyperdrive.FileMeta{Mode: 0o644, Size: uint64(len(content))}, c)
		v, err := w.Commit()
		if err != nil {
			log.Fatal(err)
		}
		return v
	}
	v1 := publish("/index.html", "<h1>first</h1>")
	w, _ := a.Begin(context.Background())
	w.Tag("1.0.0", "launch")
	w.Commit()
	w.Close()
	publish("/index.html", "<h1>second</h1>")

	old, _ := a.Resolve("@1.0.0")
	s, _ := a.Checkout(old)
	b, _ := fs.ReadFile(s, "index.html")
	fmt.Println(old == v1, string(b))
	b, _ = fs.ReadFile(a.Latest(), "index.html")
	fmt.Println(string(b))
	// Output:
	// true <h1>first</h1>
	// <h1>second</h1>
}

// Prove that an entry belongs to a signed version, as a peer would check it.
func ExampleProof() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	kp, _ := hyperdrive.GenerateKeyPair()
	a, err := hyperdrive.Create(filepath.Join(dir, "a"), kp, hyperdrive.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	proof, _ := a.ProveEntry(0, a.Version())
	entry, _ := a.EntryBytes(0)
	_, err = proof.Verify(kp.Public, entry)
	fmt.Println("valid:", err == nil)
	entry[len(entry)-1] ^= 1
	_, err = proof.Verify(kp.Public, entry)
	fmt.Println("tampered:", err != nil)
	// Output:
	// valid: true
	// tampered: true
}
