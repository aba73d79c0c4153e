package publish

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sync"
	"time"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
)

// ErrNotEmpty: export refuses to mix a version into a folder that holds files.
var ErrNotEmpty = errors.New("publish: output folder is not empty")

// ExportResult says what Export wrote.
type ExportResult struct {
	Files int
	Bytes uint64
}

// ExportOptions tune Export.
type ExportOptions struct {
	// Overwrite allows writing into a folder that already holds files;
	// files of the version replace files of the same name.
	Overwrite bool
	// Progress, if set, is called with the bytes written so far and in all.
	Progress func(done, total int64)
	// Fetch, if set, is called before a file is read, with its content:
	// clone passes the swarm's Prefetch, so files are written as soon as
	// their chunks arrive, while the rest downloads.
	Fetch func(ctx context.Context, c hyperdrive.Content) error
	// Workers is how many files are written at once (default 4: file
	// creation waits on the file system more than on the CPU).
	Workers int
}

// exportBuffer is the write buffer of one exported file.
const exportBuffer = 256 << 10

// Export writes every file of a snapshot into dir, with its mode and mtime.
// dir is accessed through an os.Root, so a symlink inside dir cannot
// redirect a write outside it. Into a folder that held files (Overwrite),
// each file is written to a temporary name and renamed into place; a new or
// empty folder is written directly. Files are written by several workers.
func Export(ctx context.Context, s *hyperdrive.Snapshot, dir string, opts ExportOptions) (*ExportResult, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	fresh := len(ents) == 0
	if !fresh && !opts.Overwrite {
		return nil, fmt.Errorf("%w: %s", ErrNotEmpty, dir)
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	paths := s.Paths()
	// Folders first, once each, so the workers only write files.
	made := map[string]bool{}
	for _, p := range paths {
		if d := path.Dir(p[1:]); d != "." && !made[d] {
			if err := r.MkdirAll(d, 0o755); err != nil {
				return nil, err
			}
			for ; d != "."; d = path.Dir(d) {
				made[d] = true
			}
		}
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = 4
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu    sync.Mutex
		res   = &ExportResult{}
		done  int64
		first error
		next  int
		wg    sync.WaitGroup
	)
	total := int64(s.Bytes())
	fail := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
			cancel()
		}
		mu.Unlock()
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := bufio.NewWriterSize(nil, exportBuffer)
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= len(paths) || ctx.Err() != nil {
					return
				}
				p := paths[i]
				n, err := exportFile(ctx, r, s, p, fresh, buf, opts.Fetch)
				if err != nil {
					fail(fmt.Errorf("publish: exporting %s: %w", p, err))
					return
				}
				mu.Lock()
				res.Files++
				res.Bytes += uint64(n)
				done += n
				if opts.Progress != nil {
					opts.Progress(done, total)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return res, first
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	return res, nil
}

func exportFile(ctx context.Context, r *os.Root, s *hyperdrive.Snapshot, p string, fresh bool, buf *bufio.Writer, fetch func(context.Context, hyperdrive.Content) error) (int64, error) {
	src, err := s.OpenFile(p)
	if err != nil {
		return 0, err
	}
	if fetch != nil {
		if err := fetch(ctx, src.Content()); err != nil {
			return 0, err
		}
	}
	st, _ := s.File(p)
	rel := p[1:]
	name, flags := rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL
	if !fresh {
		name, flags = rel+".beaker-dev-tmp", os.O_WRONLY|os.O_CREATE|os.O_TRUNC
	}
	dst, err := r.OpenFile(name, flags, st.Mode|0o200)
	if err != nil {
		return 0, err
	}
	buf.Reset(dst)
	n, err := io.Copy(buf, src)
	if err == nil {
		err = buf.Flush()
	}
	if err == nil {
		err = dst.Chmod(st.Mode) // what the umask took away, or the write bit added above
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		mt := time.Unix(0, st.MTime)
		err = r.Chtimes(name, mt, mt)
	}
	if err == nil && !fresh {
		err = r.Rename(name, rel)
	}
	if err != nil {
		r.Remove(name)
		return n, err
	}
	return n, nil
}
