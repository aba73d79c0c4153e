package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
	"github.com/beaker-dev/beaker-dev/publish"
)

type forkOptions struct {
	src     string
	dir     string
	timeout time.Duration
}

func forkCommand(g *globalOptions) *cli.Command {
	var o forkOptions
	return &cli.Command{
		Name:      "fork",
		Usage:     "make a new site (new key pair) from the files of another; dat.json records forkOf",
		ArgsUsage: "SRC [DIR]",
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "timeout", Value: 2 * time.Minute, Usage: "give up fetching a remote SRC if no peer answers for this long", Destination: &o.timeout},
		},
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 2)
			if err != nil {
				return err
			}
			o.src, o.dir = a[0], argOr(a, 1, "")
			return runFork(c.Context, g, o)
		},
	}
}

type forkResult struct {
	URL     string  `json:"url"`
	Key     string  `json:"key"`
	Version uint64  `json:"version"`
	Dir     string  `json:"dir"`
	ForkOf  string  `json:"fork_of"`
	Files   int     `json:"files"`
	Bytes   uint64  `json:"bytes"`
	MS      float64 `json:"ms"`
}

// runFork copies a version of SRC (a site folder's archive, or a URL from
// the cache or the swarm) into DIR as a new site with its own key pair; its
// dat.json keeps the source's fields and records forkOf.
func runFork(ctx context.Context, g *globalOptions, o forkOptions) error {
	start := time.Now()
	snap, fetch, closeSrc, err := g.forkSource(ctx, o)
	if err != nil {
		return err
	}
	defer closeSrc()
	src := snap.Archive().Key()
	forkOf := fmt.Sprintf("dat://%s+%d/", src, snap.Version())
	dir := o.dir
	if dir == "" {
		dir = defaultCloneDir(snap, src) + "-fork"
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	store, err := g.store()
	if err != nil {
		return err
	}
	if err := publish.CheckDataDir(abs, store.Dir()); err != nil {
		return err
	}
	if _, err := publish.Export(ctx, snap, abs, publish.ExportOptions{Fetch: fetch}); err != nil {
		return err
	}
	// The new manifest replaces the source's dat.json (which publish
	// exported as it was).
	manifestPath := filepath.Join(abs, strings.TrimPrefix(hyperdrive.SiteManifestFile, "/"))
	old, err := os.ReadFile(manifestPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	m, err := hyperdrive.ForkManifest(old, forkOf)
	if err != nil {
		return fmt.Errorf("%w: the source's %s", err, hyperdrive.SiteManifestFile)
	}
	if err := os.WriteFile(manifestPath, m, 0o644); err != nil {
		return err
	}
	t, err := g.createArchive(ctx, abs)
	if err != nil {
		return err
	}
	defer t.Close()
	imp, err := publish.Import(ctx, t.archive, abs, publish.ImportOptions{})
	if err != nil {
		return err
	}
	key := t.archive.Key()
	res := forkResult{URL: key.URL(), Key: key.String(), Version: imp.Version, Dir: abs, ForkOf: forkOf, Files: imp.Files, Bytes: imp.Bytes,
		MS: float64(time.Since(start).Microseconds()) / 1000}
	return g.emit(res, func(w io.Writer) {
		fmt.Fprintf(w, "Forked %s into %s: %s, %d files, %s\n", forkOf, dir, key.URL(), imp.Files, humanBytes(imp.Bytes))
		fmt.Fprintf(w, "Its secret key is in %s; back it up with: beaker-dev keys export %s\n", t.store.Dir(), dir)
	})
}

// forkSource opens the version to fork: a site folder's latest published
// version, or the version a URL names (the cache's, else the swarm's, whose
// files fetch gets as they are written out).
func (g *globalOptions) forkSource(ctx context.Context, o forkOptions) (*hyperdrive.Snapshot, func(context.Context, hyperdrive.Content) error, func(), error) {
	if !looksLikeURL(o.src) {
		t, err := g.openTarget(o.src)
		if err != nil {
			return nil, nil, nil, err
		}
		snap, err := t.snapshot("")
		if err != nil {
			t.Close()
			return nil, nil, nil, err
		}
		return snap, nil, func() { t.Close() }, nil
	}
	u, err := g.parseURL(ctx, o.src)
	if err != nil {
		return nil, nil, nil, err
	}
	store, err := g.store()
	if err != nil {
		return nil, nil, nil, err
	}
	a, err := store.OpenReplica(u.Key, hyperdrive.Options{})
	if err != nil {
		return nil, nil, nil, err
	}
	fx, err := g.startFetching(ctx, a, u, o.timeout, "fetching", true)
	if err != nil {
		a.Close()
		return nil, nil, nil, err
	}
	return fx.snap, fx.prefetch, func() { fx.close(); a.Close() }, nil
}
