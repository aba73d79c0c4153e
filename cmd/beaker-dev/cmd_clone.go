package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
	"github.com/beaker-dev/beaker-dev/hyperdrive/swarm"
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
	got, err := g.download(ctx, a, u, o.timeout, "cloning", false)
	if err != nil {
		return err
	}
	snap := got.snap
	dir := o.dir
	if dir == "" {
		dir = defaultCloneDir(snap, u.Key)
	}
	res, err := publish.Export(ctx, snap, dir, publish.ExportOptions{})
	if err != nil {
		return err
	}
	if _, err := publish.LinkSite(dir, u.Key); err != nil {
		return err
	}
	abs, _ := filepath.Abs(dir)
	out := cloneResult{URL: u.Key.URL(), Key: u.Key.String(), Version: snap.Version(), Dir: abs, Files: res.Files, Bytes: res.Bytes,
		NewBytes: got.bytes, Peers: got.peers, MS: float64(time.Since(start).Microseconds()) / 1000}
	return g.emit(out, func(w io.Writer) {
		fmt.Fprintf(w, "Cloned version %d of %s into %s: %d files, %s (%s from %d peer(s))\n", snap.Version(), u.Key.URL(), dir, res.Files, humanBytes(res.Bytes), humanBytes(uint64(got.bytes)), got.peers)
	})
}

// downloaded is a version of a remote archive with every chunk stored.
type downloaded struct {
	snap  *hyperdrive.Snapshot
	bytes int64 // fetched from peers now
	peers int
}

// download makes the version u names complete in a, from the swarm. A
// fixed version (+N, @TAG) already complete in the cache needs no network
// at all; with cached set, neither does the latest version the cache holds.
func (g *globalOptions) download(ctx context.Context, a *hyperdrive.Archive, u hyperdrive.URL, timeout time.Duration, what string, cached bool) (*downloaded, error) {
	spec := u.Version
	if spec == "" {
		spec = "latest"
	}
	if a.Version() > 0 && (cached || (spec != "latest" && spec != "+latest")) {
		if v, err := a.Resolve(spec); err == nil {
			if snap, err := a.Checkout(v); err == nil {
				if n, err := snap.Missing(); err == nil && n == 0 {
					return &downloaded{snap: snap}, nil
				}
			}
		}
	}
	n, err := g.startNetwork(ctx)
	if err != nil {
		return nil, err
	}
	defer n.Close()
	f, err := n.swarm.Join(a, swarm.JoinOptions{Announce: true, Lookup: true, Download: swarm.Latest, Peers: n.peers})
	if err != nil {
		return nil, err
	}
	progress, done := g.progress(what)
	if progress != nil {
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-f.Changed():
					st := f.Stats()
					progress(st.Bytes, st.Bytes+int64(st.Wanted)*16<<10)
				}
			}
		}()
	}
	// Wait for the newest version a peer has, with every chunk of it (a
	// peer must answer within the timeout); then an older version asked
	// for gets the chunks it does not share with the newest.
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err = f.WaitSynced(wctx, 0)
	var snap *hyperdrive.Snapshot
	if err == nil {
		var v uint64
		if v, err = a.Resolve(spec); err != nil {
			done()
			return nil, fmt.Errorf("%w (the newest version peers have is %d)", err, a.Version())
		}
		if snap, err = a.Checkout(v); err == nil {
			err = prefetchAll(wctx, f, snap)
		}
	}
	done()
	st := f.Stats()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if v, rerr := a.Resolve(spec); rerr == nil && v > 0 && st.Peers == 0 {
			// Offline, but the cache may hold the version whole.
			if snap, cerr := a.Checkout(v); cerr == nil {
				if m, merr := snap.Missing(); merr == nil && m == 0 {
					return &downloaded{snap: snap}, nil
				}
			}
		}
		if st.Peers == 0 && a.Version() == 0 {
			return nil, noPeersError(u.Key.URL(), n, err)
		}
		return nil, &userError{code: exitNetwork, msg: fmt.Sprintf("%s %s did not finish: %s; what arrived is kept, run it again to go on", what, u.Key.URL(), clean(err)), err: err}
	}
	return &downloaded{snap: snap, bytes: st.Bytes, peers: st.Peers}, nil
}

// prefetchAll gets every chunk of the snapshot's files.
func prefetchAll(ctx context.Context, f *swarm.Feed, snap *hyperdrive.Snapshot) error {
	for _, p := range snap.Paths() {
		e, err := snap.Entry(p)
		if err != nil {
			return err
		}
		if err := f.Prefetch(ctx, e.Content); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
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
