package hyperdrive

import (
	"context"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"
)

// heapWatcher is a reader of n pseudo-random bytes that samples the live
// heap as it is consumed.
type heapWatcher struct {
	rng  *rand.ChaCha8
	left int64
	read int64
	peak uint64
}

func (h *heapWatcher) Read(p []byte) (int, error) {
	if h.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > h.left {
		p = p[:h.left]
	}
	h.rng.Read(p)
	h.left -= int64(len(p))
	before := h.read
	h.read += int64(len(p))
	if h.read>>26 != before>>26 { // every 64 MiB
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		h.peak = max(h.peak, m.HeapAlloc)
	}
	return len(p), nil
}

// TestLargeFileMemoryBounded imports a 1 GiB file and checks the heap never
// holds more than a small, fixed amount of it.
func TestLargeFileMemoryBounded(t *testing.T) {
	size := int64(1 << 30)
	if testing.Short() {
		size = 256 << 20
	}
	a := newArchive(t)
	w, err := a.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	src := &heapWatcher{rng: rand.NewChaCha8([32]byte{1}), left: size}
	c, st, err := w.WriteContent(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Put("/big.bin", FileMeta{Mode: 0o644, Size: st.Bytes}, c); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	grew := int64(src.peak) - int64(base.HeapAlloc)
	t.Logf("%d MiB in %d chunks, content level %d, live heap grew by at most %.1f MiB", size>>20, st.Chunks, c.Level, float64(grew)/(1<<20))
	// The race detector's instrumentation allocates on its own account.
	if !raceEnabled && grew > 32<<20 {
		t.Fatalf("live heap grew by %d MiB while importing a %d MiB file", grew>>20, size>>20)
	}
	if c.Level == 0 {
		t.Fatal("a 1 GiB file should spill its chunk list into index blocks")
	}
}
