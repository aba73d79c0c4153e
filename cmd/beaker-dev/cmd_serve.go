package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/beaker-dev/beaker-dev/devserver"
	"github.com/beaker-dev/beaker-dev/hyperdrive"
	"github.com/beaker-dev/beaker-dev/hyperdrive/swarm"
	"github.com/beaker-dev/beaker-dev/hyperdrive/wire"
	"github.com/beaker-dev/beaker-dev/publish"
)

// defaultPort is serve's port unless --port says otherwise. It stays the
// same from run to run, so bookmarks and phones keep working.
const defaultPort = 8282

type serveOptions struct {
	dir       string
	port      int
	noLAN     bool
	noPublish bool
	noMDNS    bool
	open      bool
	mdnsName  string
	poll      bool
}

func serveCommand(g *globalOptions) *cli.Command {
	var o serveOptions
	return &cli.Command{
		Name:      "serve",
		Usage:     "live-reload preview on this machine and the LAN; publish every save",
		ArgsUsage: "[DIR]",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "port", Value: defaultPort, Usage: "HTTP port", Destination: &o.port},
			&cli.BoolFlag{Name: "no-lan", Usage: "listen on this machine only (no LAN URLs, no mDNS)", Destination: &o.noLAN},
			&cli.BoolFlag{Name: "no-publish", Usage: "preview only: do not publish saves as versions", Destination: &o.noPublish},
			&cli.BoolFlag{Name: "no-mdns", Usage: "do not advertise on the LAN by mDNS", Destination: &o.noMDNS},
			&cli.BoolFlag{Name: "open", Usage: "open the preview in the default browser", Destination: &o.open},
			&cli.StringFlag{Name: "mdns-name", Usage: "NAME for http://NAME.local:PORT/ (default: from the site's title)", Destination: &o.mdnsName},
			&cli.BoolFlag{Name: "poll", Usage: "watch by polling instead of inotify (network file systems)", Destination: &o.poll},
		},
		Action: func(c *cli.Context) error {
			a, err := args(c, 0, 1)
			if err != nil {
				return err
			}
			o.dir = argOr(a, 0, ".")
			// serve's --no-mdns shadows the global flag: it means no mDNS at
			// all, neither advertising the preview nor finding peers.
			g.net.noMDNS = g.net.noMDNS || o.noMDNS
			return runServe(c.Context, g, o)
		},
	}
}

// preview is what serve shows: the folder as it will be published at plain
// paths, and the archive's versions at /+N/ and /@TAG/.
type preview struct {
	folder     *publish.FolderFS
	archive    *hyperdrive.Archive
	publishing bool
	run        string        // this run's id, for preview stamps
	stamp      atomic.Uint64 // bumped on every change when not publishing
	saves      saveClock
}

// saveClock remembers when the saves behind each published version began,
// so that a remote viewer's paint report (wire.Paint, which arrives through
// the swarm) becomes a save-to-paint time on this machine's clock.
type saveClock struct {
	mu  sync.Mutex
	at  map[uint64]time.Time
	srv atomic.Pointer[devserver.Server]
}

const keptSaveTimes = 256

func (c *saveClock) record(v uint64, t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at == nil {
		c.at = map[uint64]time.Time{}
	}
	c.at[v] = t
	for old := range c.at {
		if old+keptSaveTimes < v {
			delete(c.at, old)
		}
	}
}

// onPaint is the feed's OnPaint: it runs in a peer's reader goroutine.
func (c *saveClock) onPaint(from netip.AddrPort, p wire.Paint) {
	c.mu.Lock()
	t, ok := c.at[p.Version]
	c.mu.Unlock()
	srv := c.srv.Load()
	if !ok || srv == nil {
		return // a version published before this run, or not ours
	}
	device := p.Device
	if device == "" {
		device = "a browser"
	}
	srv.RemotePaint(devserver.PaintEvent{Device: device + " at " + from.Addr().String(), Version: strconv.FormatUint(p.Version, 10),
		Swap: p.Flags&wire.PaintSwap != 0, SaveToPaint: time.Since(t)})
}

func (p *preview) Current() devserver.Files {
	if p.publishing {
		return devserver.Files{FS: p.folder, Version: strconv.FormatUint(p.archive.Version(), 10)}
	}
	return devserver.Files{FS: p.folder, Version: p.run + "." + strconv.FormatUint(p.stamp.Load(), 10)}
}

func (p *preview) Checkout(spec string) (devserver.Files, error) {
	v, err := p.archive.Resolve(spec)
	if errors.Is(err, hyperdrive.ErrNoTag) || errors.Is(err, hyperdrive.ErrNoVersion) {
		// Perhaps another process (beaker-dev tag) just added it.
		if rerr := p.archive.Refresh(); rerr == nil {
			v, err = p.archive.Resolve(spec)
		}
	}
	if err != nil {
		return devserver.Files{}, fmt.Errorf("%w: %s", devserver.ErrVersion, clean(err))
	}
	snap, err := p.archive.Checkout(v)
	if err != nil {
		return devserver.Files{}, fmt.Errorf("%w: %s", devserver.ErrVersion, clean(err))
	}
	return devserver.Files{FS: snap, Version: strconv.FormatUint(v, 10), Immutable: true}, nil
}

// printer writes serve's output from several goroutines: lines for people,
// or one JSON object a line with --json.
type printer struct {
	mu   sync.Mutex
	g    *globalOptions
	json *json.Encoder
}

func newPrinter(g *globalOptions) *printer {
	p := &printer{g: g}
	if g.json {
		p.json = json.NewEncoder(g.stdout)
		p.json.SetEscapeHTML(false)
	}
	return p
}

// event prints a JSON event (with --json) or the text line.
func (p *printer) event(v map[string]any, text string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.json != nil {
		if v != nil {
			p.json.Encode(v)
		}
		return
	}
	if text != "" {
		fmt.Fprintln(p.g.stdout, text)
	}
}

// warn always goes to stderr.
func (p *printer) warn(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.g.stderr, "beaker-dev: warning: "+format+"\n", args...)
}

func runServe(ctx context.Context, g *globalOptions, o serveOptions) error {
	out := newPrinter(g)
	abs, err := filepath.Abs(o.dir)
	if err != nil {
		return err
	}
	if st, err := os.Stat(abs); err != nil || !st.IsDir() {
		return fmt.Errorf("%w: %s is not a folder", publish.ErrNotSite, o.dir)
	}
	t, err := g.openTarget(abs)
	if errors.Is(err, publish.ErrNotSite) {
		// A folder with no archive yet gets one, as init would make it.
		if t, err = g.createArchive(ctx, abs); err == nil {
			out.event(nil, fmt.Sprintf("Created %s for %s (keys in %s)", t.archive.Key().URL(), o.dir, t.store.Dir()))
		}
	}
	if err != nil {
		return err
	}
	defer t.Close()
	a := t.archive
	publishing := !o.noPublish
	if publishing && !a.Writable() {
		return &userError{code: exitNotFound, msg: fmt.Sprintf("no secret key for %s in %s: this machine cannot publish it; use --no-publish to preview only, or import the key (beaker-dev keys import)", a.Key().URL(), t.store.Dir()),
			err: hyperdrive.ErrNoKey}
	}

	folder, err := publish.NewFolderFS(abs)
	if err != nil {
		return err
	}
	defer folder.Close()
	pv := &preview{folder: folder, archive: a, publishing: publishing, run: strconv.FormatInt(time.Now().UnixNano()%1e9, 36)}
	cache := publish.NewStatCache()
	// Watch before the first import, so no save falls between the two.
	watcher, err := publish.Watch(ctx, abs, publish.WatchOptions{Poll: o.poll, Warn: func(msg string) { out.warn("%s", msg) }})
	if err != nil {
		return err
	}
	defer watcher.Close()
	if publishing {
		res, err := publish.Import(ctx, a, abs, publish.ImportOptions{Cache: cache, LockWait: 10 * time.Second})
		if err != nil {
			return err
		}
		if res.Committed {
			out.event(map[string]any{"event": "published", "version": res.Version, "changed": res.Changed, "ms": ms(res.Duration)},
				fmt.Sprintf("Published version %d: %d changed since the last publish (%s)", res.Version, len(res.Changed), res.Duration.Round(time.Millisecond)))
		}
	}
	// Announce and seed the site while it is previewed.
	var n *network
	if a.Writable() {
		if n, err = g.startNetwork(ctx); err != nil {
			return err
		}
		defer n.Close()
		if _, err := n.swarm.Join(a, swarm.JoinOptions{Announce: true, Lookup: true, Peers: n.peers, OnPaint: pv.saves.onPaint}); err != nil {
			return err
		}
	}
	title := siteTitle(folder, abs)
	front, err := startFront(out, frontOptions{port: o.port, noLAN: o.noLAN, noMDNS: o.noMDNS, mdnsName: o.mdnsName}, devserver.Options{
		Site:   pv,
		URL:    a.Key().URL(),
		Title:  title,
		Status: func() devserver.Status { return archiveStatus(a, n) },
		Events: func(e devserver.Event) { printDevEvent(out, e) },
	})
	if err != nil {
		return err
	}
	pv.saves.srv.Store(front.srv)
	front.printListening(out, "Serving "+abs, a, n)
	if o.open {
		openBrowser(front.srv.LocalURL())
	}

	loopErr := watchLoop(ctx, out, front.srv, pv, watcher, abs, cache)
	watcher.Close()
	if err := front.close(); err != nil {
		return err
	}
	if errors.Is(loopErr, context.Canceled) || ctx.Err() != nil {
		out.event(nil, "Stopped.")
		return nil
	}
	return loopErr
}

// watchLoop publishes each batch of saves and tells the pages.
func watchLoop(ctx context.Context, out *printer, srv *devserver.Server, pv *preview, w *publish.Watcher, dir string, cache *publish.StatCache) error {
	for {
		var b publish.Batch
		var ok bool
		select {
		case <-ctx.Done():
			return ctx.Err()
		case b, ok = <-w.Batches():
			if !ok {
				return ctx.Err()
			}
		}
		saved := b.First
		if saved.IsZero() {
			saved = time.Now()
		}
		pv.folder.Invalidate() // the folder changed: re-read ignore rules and folder types

		if !pv.publishing {
			pv.stamp.Add(1)
			paths := make([]string, 0, len(b.Paths))
			for _, p := range b.Paths {
				paths = append(paths, "/"+p)
			}
			if b.Full {
				paths = append(paths, "/") // unknown changes: reload everything
			}
			v := pv.Current().Version
			n := srv.Broadcast(devserver.Update{Version: v, Paths: paths, SavedAt: saved})
			out.event(map[string]any{"event": "reload", "version": v, "paths": paths, "clients": n},
				fmt.Sprintf("Reloaded %d page(s): %s", n, summarize(paths, 4)))
			continue
		}
		opts := publish.ImportOptions{Cache: cache, LockWait: 10 * time.Second}
		if !b.Full {
			opts.Paths = b.Paths
		}
		res, err := publish.Import(ctx, pv.archive, dir, opts)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			_, msg := exitCode(err)
			out.warn("publishing failed: %s", msg)
			srv.Fail("Publishing failed", msg)
			continue
		}
		if !res.Committed {
			continue // a save that changed nothing reloads nothing
		}
		out.event(map[string]any{"event": "published", "version": res.Version, "changed": res.Changed, "ms": ms(res.Duration)},
			fmt.Sprintf("Published version %d: %s (%s)", res.Version, summarize(res.Changed, 4), res.Duration.Round(100*time.Microsecond)))
		pv.saves.record(res.Version, saved)
		v := strconv.FormatUint(res.Version, 10)
		n := srv.Broadcast(devserver.Update{Version: v, Paths: res.Changed, SavedAt: saved})
		out.event(map[string]any{"event": "reload", "version": res.Version, "paths": res.Changed, "clients": n}, "")
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// siteTitle reads the title from dat.json, else names the folder.
func siteTitle(fsys *publish.FolderFS, dir string) string {
	if b, err := fs.ReadFile(fsys, "dat.json"); err == nil {
		if m, err := hyperdrive.ParseSiteManifest(b); err == nil && strings.TrimSpace(m.Title) != "" {
			return strings.TrimSpace(m.Title)
		}
	}
	return titleFromDir(dir)
}

func openBrowser(url string) {
	for _, c := range []string{"xdg-open", "open"} {
		if p, err := exec.LookPath(c); err == nil {
			cmd := exec.Command(p, url)
			cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
			if cmd.Start() == nil {
				cmd.Process.Release() // the browser outlives us
			}
			return
		}
	}
}
