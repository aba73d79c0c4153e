// Command gensite writes a deterministic test site for benchmarks: a given
// number of files and total size, with skewed (log-normal) file sizes like a
// real site's (many small pages and styles, a few large images and videos),
// spread over nested folders. Half the files hold text-like content, half
// random bytes like compressed media. The same flags give the same bytes.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
)

func main() {
	out := flag.String("out", "site", "folder to write (created)")
	files := flag.Int("files", 2000, "number of files")
	total := flag.Int64("size", 256<<20, "total bytes")
	maxFile := flag.Int64("max", 32<<20, "largest file in bytes")
	seed := flag.Uint64("seed", 1, "random seed")
	flag.Parse()
	if err := generate(*out, *files, *total, *maxFile, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "gensite:", err)
		os.Exit(1)
	}
}

// sizes draws n log-normally distributed sizes scaled to sum exactly to total.
func sizes(rng *rand.Rand, n int, total, maxFile int64) []int64 {
	raw := make([]float64, n)
	var sum float64
	for i := range raw {
		// Log-normal, sigma 2.2: most files small, a long tail of large ones.
		raw[i] = math.Exp(2.2 * rng.NormFloat64())
		sum += raw[i]
	}
	// Scale to total; files over the cap are clipped and the excess is
	// shared among the others in proportion to their size, until it fits.
	capped := make([]bool, n)
	scale := float64(total) / sum
	for iter := 0; iter < 50; iter++ {
		var free, fixed float64
		for i, r := range raw {
			if capped[i] {
				fixed += float64(maxFile)
			} else {
				free += r
			}
		}
		scale = (float64(total) - fixed) / free
		changed := false
		for i, r := range raw {
			if !capped[i] && r*scale > float64(maxFile) {
				capped[i], changed = true, true
			}
		}
		if !changed {
			break
		}
	}
	out := make([]int64, n)
	var got int64
	for i, r := range raw {
		out[i] = max(1, int64(r*scale))
		if capped[i] {
			out[i] = maxFile
		}
		got += out[i]
	}
	// Rounding leftovers go to the largest uncapped file.
	big := -1
	for i := range out {
		if !capped[i] && (big < 0 || out[i] > out[big]) {
			big = i
		}
	}
	if big >= 0 {
		out[big] += total - got
	}
	return out
}

var words = []string{"peer", "site", "archive", "version", "beaker", "the", "of", "and", "a", "to", "in", "is", "you",
	"that", "it", "he", "was", "for", "on", "are", "as", "with", "his", "they", "at", "be", "this", "have", "from",
	"network", "chunk", "merkle", "publish", "reload", "browser", "swarm", "key", "hash", "tree", "page", "style"}

func generate(dir string, n int, total, maxFile int64, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, seed*7919))
	exts := []string{".html", ".css", ".js", ".json", ".svg", ".png", ".jpg", ".woff2", ".mp4", ".txt"}
	for i, size := range sizes(rng, n, total, maxFile) {
		depth := rng.IntN(4)
		p := dir
		for d := 0; d < depth; d++ {
			p = filepath.Join(p, fmt.Sprintf("dir%d", rng.IntN(6)))
		}
		ext := exts[rng.IntN(len(exts))]
		p = filepath.Join(p, fmt.Sprintf("file%04d%s", i, ext))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := writeFile(p, size, rng, i%2 == 0); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(p string, size int64, rng *rand.Rand, text bool) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var written int64
	var buf [8]byte
	for written < size {
		if text {
			word := words[rng.IntN(len(words))]
			s := word + " "
			if rng.IntN(12) == 0 {
				s = word + ".\n"
			}
			n := min(int64(len(s)), size-written)
			w.WriteString(s[:n])
			written += n
			continue
		}
		v := rng.Uint64()
		for j := range buf {
			buf[j] = byte(v >> (8 * j))
		}
		n := min(8, size-written)
		w.Write(buf[:n])
		written += n
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
