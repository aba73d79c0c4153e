package publish

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
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
}

// Export writes every file of a snapshot into dir, with its mode and mtime.
// Each file is written to a temporary name and renamed into place, and dir
// is accessed through an os.Root, so a symlink inside dir cannot redirect a
// write outside it.
func Export(ctx context.Context, s *hyperdrive.Snapshot, dir string, opts ExportOptions) (*ExportResult, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if !opts.Overwrite {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil, err
		}
		if len(ents) > 0 {
			return nil, fmt.Errorf("%w: %s", ErrNotEmpty, dir)
		}
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	res := &ExportResult{}
	total := int64(s.Bytes())
	var done int64
	for _, p := range s.Paths() {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		rel := p[1:]
		if d := path.Dir(rel); d != "." {
			if err := r.MkdirAll(d, 0o755); err != nil {
				return res, err
			}
		}
		n, err := exportFile(r, s, p, rel)
		if err != nil {
			return res, fmt.Errorf("publish: exporting %s: %w", p, err)
		}
		res.Files++
		res.Bytes += uint64(n)
		done += n
		if opts.Progress != nil {
			opts.Progress(done, total)
		}
	}
	return res, nil
}

func exportFile(r *os.Root, s *hyperdrive.Snapshot, p, rel string) (int64, error) {
	src, err := s.OpenFile(p)
	if err != nil {
		return 0, err
	}
	st, _ := s.File(p)
	tmp := rel + ".beaker-dev-tmp"
	dst, err := r.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, st.Mode|0o200)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(dst, src)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = r.Chmod(tmp, st.Mode)
	}
	if err == nil {
		mt := time.Unix(0, st.MTime)
		err = r.Chtimes(tmp, mt, mt)
	}
	if err == nil {
		err = r.Rename(tmp, rel)
	}
	if err != nil {
		r.Remove(tmp)
		return n, err
	}
	return n, nil
}
