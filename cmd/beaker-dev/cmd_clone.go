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
	u, err := hyperdrive.ParseURL(o.url)
	if err != nil {
		return err
	}
	if u.IsName() {
		return fmt.Errorf("%w: %s is a name; give the site's dat://KEY URL", hyperdrive.ErrBadURL, u.Host)
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
	n, err := g.startNetwork(ctx)
	if err != nil {
		return err
	}
	defer n.Close()
	f, err := n.swarm.Join(a, swarm.JoinOptions{Announce: true, Lookup: true, Download: swarm.Latest, Peers: n.peers})
	if err != nil {
		return err
	}
	progress, done := g.progress("cloning")
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
	// Wait for the version asked for (or the newest a peer has), with every
	// chunk of it; a peer must answer within the timeout.
	var want uint64
	if strings.HasPrefix(u.Version, "+") && u.Version != "+latest" {
		fmt.Sscan(u.Version[1:], &want)
	}
	wctx, cancel := context.WithTimeout(ctx, o.timeout)
	err = waitSyncedOrTag(wctx, f, a, want, u.Version)
	cancel()
	done()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if f.Stats().Peers == 0 && a.Version() == 0 {
			return noPeersError(u.Key.URL(), n, err)
		}
		return &userError{code: exitNetwork, msg: fmt.Sprintf("cloning %s did not finish: %s; what arrived is kept, run clone again to go on", u.Key.URL(), clean(err)), err: err}
	}
	spec := u.Version
	if spec == "" {
		spec = "latest"
	}
	v, err := a.Resolve(spec)
	if err != nil {
		return err
	}
	snap, err := a.Checkout(v)
	if err != nil {
		return err
	}
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
	st := f.Stats()
	out := cloneResult{URL: u.Key.URL(), Key: u.Key.String(), Version: v, Dir: abs, Files: res.Files, Bytes: res.Bytes,
		NewBytes: st.Bytes, Peers: st.Peers, MS: float64(time.Since(start).Microseconds()) / 1000}
	return g.emit(out, func(w io.Writer) {
		fmt.Fprintf(w, "Cloned version %d of %s into %s: %d files, %s (%s from %d peer(s))\n", v, u.Key.URL(), dir, res.Files, humanBytes(res.Bytes), humanBytes(uint64(st.Bytes)), st.Peers)
	})
}

// waitSyncedOrTag waits for the feed to hold version want (0: the newest a
// peer advertises) or, for an @TAG URL, the tag.
func waitSyncedOrTag(ctx context.Context, f *swarm.Feed, a *hyperdrive.Archive, want uint64, spec string) error {
	if err := f.WaitSynced(ctx, want); err != nil {
		return err
	}
	if strings.HasPrefix(spec, "@") {
		if _, err := a.Resolve(spec); err != nil {
			if errors.Is(err, hyperdrive.ErrNoTag) {
				return err
			}
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
