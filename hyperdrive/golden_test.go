package hyperdrive

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The golden vectors of docs/FORMAT.md §9. If one of these changes, the
// format changed: bump the format version and say so in FORMAT.md.

// vectorStream is the chunking vector's input: n bytes of
// SHA-256("beaker-dev chunk vector" ‖ u64be(i)) for i = 0, 1, ...
func vectorStream(n int) []byte {
	var out []byte
	for i := uint64(0); len(out) < n; i++ {
		b := binary.BigEndian.AppendUint64([]byte("beaker-dev chunk vector"), i)
		h := sha256.Sum256(b)
		out = append(out, h[:]...)
	}
	return out[:n]
}

// vectorArchive builds the tiny archive of the vectors: the manifest
// created at 2026-01-02T03:04:06Z and one put of /index.html.
func vectorArchive(t *testing.T) *Archive {
	a, err := Create(filepath.Join(t.TempDir(), "a"), fixedKey(t), Options{Now: fixedClock()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	w, err := a.Begin(nil)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte("<h1>Hello, Beaker</h1>\n")
	c, _, err := w.WriteContent(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Put("/index.html", FileMeta{Mode: 0o644, Size: uint64(len(body)), MTime: 1767323045000000000}, c); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	return a
}

func hx(b []byte) string { return hex.EncodeToString(b) }

func TestGoldenVectors(t *testing.T) {
	kp := fixedKey(t)
	check := func(name, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("%s:\n got  %s\n want %s", name, got, want)
		}
	}
	check("public key", kp.Public.String(), "79b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664")
	check("discovery key", kp.Public.DiscoveryKey().String(), goldenDiscovery)

	a := vectorArchive(t)
	e0, _ := a.EntryBytes(0)
	e1, _ := a.EntryBytes(1)
	check("entry 0 (manifest)", hx(e0), goldenEntry0)
	check("entry 1 (put /index.html)", hx(e1), goldenEntry1)
	l0, l1 := leafNode(0, e0), leafNode(1, e1)
	check("leaf 0", hx(l0.Hash[:]), goldenLeaf0)
	check("leaf 1", hx(l1.Hash[:]), goldenLeaf1)
	p := parentNode(l0, l1)
	check("parent 1", hx(p.Hash[:]), goldenParent1)
	sr := a.SignedRoot()
	check("tree hash, length 2", hx(sr.TreeHash[:]), goldenTree2)
	check("signature, length 2", hx(sr.Signature[:]), goldenSig2)
	if sr.Length != 2 || TreeHash([]Node{p}) != sr.TreeHash {
		t.Errorf("signed root %+v does not cover the parent", sr)
	}

	data := vectorStream(1 << 20)
	cw := newContentWriter(DefaultChunkParams)
	sink := memSink{}
	c, _, err := cw.write(bytes.NewReader(data), sink)
	if err != nil {
		t.Fatal(err)
	}
	var sizes []uint64
	h := sha256.New()
	for _, r := range c.Refs {
		sizes = append(sizes, r.Size)
		h.Write(r.Hash[:])
	}
	check("chunk count of the 1 MiB vector stream", itoa(len(c.Refs)), goldenChunkCount)
	check("first chunk sizes", itoaSlice(sizes[:4]), goldenFirstSizes)
	check("SHA-256 of the concatenated chunk hashes", hx(h.Sum(nil)), goldenChunkList)

	if os.Getenv("GOLDEN_PRINT") != "" {
		t.Logf("discovery %s\nentry0 %s\nentry1 %s\nleaf0 %s\nleaf1 %s\nparent %s\ntree %s\nsig %s\ncount %d sizes %v list %s",
			kp.Public.DiscoveryKey(), hx(e0), hx(e1), hx(l0.Hash[:]), hx(l1.Hash[:]), hx(p.Hash[:]), hx(sr.TreeHash[:]), hx(sr.Signature[:]),
			len(c.Refs), sizes[:4], hx(h.Sum(nil)))
	}
}

type memSink map[Hash][]byte

func (m memSink) putChunk(h Hash, d []byte) (bool, error) {
	if _, ok := m[h]; ok {
		return false, nil
	}
	m[h] = append([]byte(nil), d...)
	return true, nil
}

func itoa(n int) string { return strconv.Itoa(n) }

func itoaSlice(v []uint64) string {
	parts := make([]string, len(v))
	for i, n := range v {
		parts[i] = strconv.FormatUint(n, 10)
	}
	return strings.Join(parts, ",")
}

const (
	goldenDiscovery  = "95caa73c52e5c42fd0f99a8853c7a3b96c3541d4733b3fe4507ff7bc67cd3c2e"
	goldenEntry0     = "01010101003da3358b4dc17380408080040d0880f08783cbbce58631"
	goldenEntry1     = "01020b2f696e6465782e68746d6ca4031780c8b1c9c3bce5863100011548863f057560eeb60e95876ffb083ef67b8d9508d55c301f855994dd0a97e117"
	goldenLeaf0      = "4a902cdc7697e0369e9da3f3929f7c651f706ba478ec576f432eff4d4cda07bc"
	goldenLeaf1      = "8643a8367a141bc170a4f8650137bf7d621e813abaf4c3a5e68455bc341aee8c"
	goldenParent1    = "0b09c12d20ee762eb2436628fa8430ace12236762117ee262195fb0eed9bf514"
	goldenTree2      = "ef13553d559af5071e8371b67339c6411b5b0ba3cbc18cfdc068e0ab3f3607b9"
	goldenSig2       = "f21d87e408c6acb0bf5910fbf6becc041afd738e5db075c4a1dd4fb63487160b424042b83688f98f3b0c073aa294ce33cd2b0ef7d944b94b45401699c3d03405"
	goldenChunkCount = "58"
	goldenFirstSizes = "27669,11071,8208,20375"
	goldenChunkList  = "f7969d46755fbc601ed2cab9d5a05096f6caa6d374e711e3b8a1e516a770e43c"
)

func decodeHex(s string) ([]byte, error) { return hex.DecodeString(s) }

// TestFormatDocHasVectors keeps docs/FORMAT.md and these vectors in step.
func TestFormatDocHasVectors(t *testing.T) {
	doc, err := os.ReadFile("../docs/FORMAT.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{goldenDiscovery, goldenEntry0, goldenEntry1, goldenLeaf0, goldenLeaf1, goldenParent1,
		goldenTree2, goldenSig2, goldenChunkList, fixedKey(t).Public.String(),
		"gives " + goldenChunkCount + " chunks", strings.ReplaceAll(goldenFirstSizes, ",", ", ")} {
		if !bytes.Contains(doc, []byte(v)) {
			t.Errorf("docs/FORMAT.md does not state %q", v)
		}
	}
}
