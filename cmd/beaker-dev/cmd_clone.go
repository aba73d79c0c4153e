package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
	"github.com/beaker-dev/beaker-dev/publish"
)

type cloneOptions struct {
	url     string
	dir     string
	timeout time.Duration
}

func cloneCommand(g *globalOptions) *cli.Command {
	var o cloneOptions
	return &cli.Command{
		Name:      "clone",
		Usage:     "download every file of a version, verified, into a folder; keep the archive for offline use and seeding",
		ArgsUsage: "URL [DIR]",
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "timeout", Value: 2 * time.Minute, Usage: "give up if no peer answers for this long", Destination: &o.timeout},
		},
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 2)
			if err != nil {
				return err
			}
			o.url, o.dir = a[0], argOr(a, 1, "")
			return runClone(c.Context, g, o)
		},
	}
}

type cloneResult struct {
	URL      string  `json:"url"`
	Key      string  `json:"key"`
	Version  uint64  `json:"version"`
	Dir      string  `json:"dir"`
	Files    int     `json:"files"`
	Bytes    uint64  `json:"bytes"`
	NewBytes int64   `json:"new_bytes"`
	Peers    int     `json:"peers"`
	MS       float64 `json:"ms"`
}

// runClone fetches the archive (every chunk of the wanted version), checks
// everything on arrival, keeps the replica in the data directory and
// writes the files to DIR, linked to the archive.
func runClone(ctx context.Context, g *globalOptions, o cloneOptions) error {
	start := time.Now()
	u, err := g.parseURL(ctx, o.url)
	if err != nil {
		return err
	}
	store, err := g.store()
	if err != nil {
		return err
	}
	a, err := openSaved(store, u.Key)
	if err != nil {
		return err
	}
	defer a.Close()
	fx, err := g.startFetching(ctx, a, u, o.timeout, "cloning", false)
	if err != nil {
		return err
	}
	defer fx.close()
	snap := fx.snap
	dir := o.dir
	if dir == "" {
		dir = defaultCloneDir(snap, u.Key)
	}
	// Files are written as their chunks arrive, while the rest downloads.
	res, err := publish.Export(ctx, snap, dir, publish.ExportOptions{Fetch: fx.prefetch})
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, publish.ErrNotEmpty) {
			err = fx.failure(ctx, err)
		}
		return err
	}
	if err := fx.finish(ctx); err != nil {
		return err
	}
	if _, err := publish.LinkSite(dir, u.Key); err != nil {
		return err
	}
	abs, _ := filepath.Abs(dir)
	got, peers := fx.stats()
	out := cloneResult{URL: u.Key.URL(), Key: u.Key.String(), Version: snap.Version(), Dir: abs, Files: res.Files, Bytes: res.Bytes,
		NewBytes: got, Peers: peers, MS: float64(time.Since(start).Microseconds()) / 1000}
	return g.emit(out, func(w io.Writer) {
		fmt.Fprintf(w, "Cloned version %d of %s into %s: %d files, %s (%s from %d peer(s))\n", snap.Version(), u.Key.URL(), dir, res.Files, humanBytes(res.Bytes), humanBytes(uint64(got)), peers)
	})
}

// defaultCloneDir names a clone after the site's title, else its key.
func defaultCloneDir(s *hyperdrive.Snapshot, key hyperdrive.PublicKey) string {
	if b, err := s.ReadFile("dat.json"); err == nil {
		if m, err := hyperdrive.ParseSiteManifest(b); err == nil {
			if name := slug(m.Title); name != "" {
				return name
			}
		}
	}
	return key.String()[:12]
}

func slug(title string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(title) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
			dash = false
		case !dash && b.Len() > 0:
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.Trim(b.String(), "-")
}
