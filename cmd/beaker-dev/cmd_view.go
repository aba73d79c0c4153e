package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
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
)

// defaultViewPort is view's port unless --port says otherwise; when it is
// taken (another view), a free port is used instead.
const defaultViewPort = 8283

type viewOptions struct {
	url      string
	front    frontOptions
	portSet  bool
	open     bool
	save     bool
	timeout  time.Duration
	peerWait time.Duration
}

func viewCommand(g *globalOptions) *cli.Command {
	var o viewOptions
	return &cli.Command{
		Name:      "view",
		Usage:     "serve a remote site here with live reload driven by the swarm; works offline from the cache",
		ArgsUsage: "URL",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "port", Value: defaultViewPort, Usage: "HTTP port", Destination: &o.front.port},
			&cli.BoolFlag{Name: "no-lan", Usage: "listen on this machine only (no LAN URLs, no mDNS)", Destination: &o.front.noLAN},
			&cli.StringFlag{Name: "mdns-name", Usage: "NAME for http://NAME.local:PORT/ (default: from the site's title)", Destination: &o.front.mdnsName},
			&cli.BoolFlag{Name: "open", Usage: "open the page in the default browser", Destination: &o.open},
			&cli.BoolFlag{Name: "save", Usage: "keep the site for good (gc frees sites that were only viewed)", Destination: &o.save},
			&cli.DurationFlag{Name: "timeout", Value: time.Minute, Usage: "give up if a site not seen before has no peer for this long", Destination: &o.timeout},
		},
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1)
			if err != nil {
				return err
			}
			o.url = a[0]
			o.portSet = c.IsSet("port")
			o.front.noMDNS = g.net.noMDNS // --no-mdns: no mDNS at all, neither discovery nor advertising
			return runView(c.Context, g, o)
		},
	}
}

// remoteSite is what view serves: the newest version whose changed files
// are here (shown), and any stored version at /+N/ and /@TAG/. Files are
// fetched from peers as pages ask for them.
type remoteSite struct {
	a       *hyperdrive.Archive
	feed    *swarm.Feed
	shown   atomic.Uint64
	ctx     context.Context // the view's lifetime: fetches end with it
	maxWait time.Duration   // for one file's chunks
}

func (r *remoteSite) files(v uint64, immutable bool) (devserver.Files, error) {
	snap, err := r.a.Checkout(v)
	if err != nil {
		return devserver.Files{}, err
	}
	return devserver.Files{FS: fetchingFS{Snapshot: snap, site: r}, Version: strconv.FormatUint(v, 10), Immutable: immutable}, nil
}

func (r *remoteSite) Current() devserver.Files {
	f, err := r.files(r.shown.Load(), false)
	if err != nil {
		f, _ = r.files(r.a.Version(), false)
	}
	return f
}

func (r *remoteSite) Checkout(spec string) (devserver.Files, error) {
	v, err := r.a.Resolve(spec)
	if err == nil {
		var f devserver.Files
		if f, err = r.files(v, true); err == nil {
			return f, nil
		}
	}
	return devserver.Files{}, fmt.Errorf("%w: %s", devserver.ErrVersion, clean(err))
}

// prefetchLimit: files up to this size are fetched whole before a response
// starts, so a missing chunk is a clear 504, not a response cut short;
// bigger ones (video) stream, fetching as they are read.
const prefetchLimit = 16 << 20

// fetchingFS is a version of a remote site whose files are fetched from
// peers, verified, when opened.
type fetchingFS struct {
	*hyperdrive.Snapshot
	site *remoteSite
}

func (f fetchingFS) Open(name string) (fs.File, error) {
	file, err := f.Snapshot.Open(name)
	if err != nil {
		return nil, err
	}
	if hf, ok := file.(*hyperdrive.File); ok && hf.Size() <= prefetchLimit {
		if err := f.site.prefetch(hf.Content()); err != nil {
			return nil, fmt.Errorf("%w: %s", devserver.ErrUnavailable, clean(err))
		}
	}
	return file, nil
}

func (f fetchingFS) ReadFile(name string) ([]byte, error) {
	file, err := f.Open(name)
	if err != nil {
		return nil, err
	}
	file.Close()
	return f.Snapshot.ReadFile(name)
}

func (r *remoteSite) prefetch(c hyperdrive.Content) error {
	ctx, cancel := context.WithTimeout(r.ctx, r.maxWait)
	defer cancel()
	return r.feed.Prefetch(ctx, c)
}

// runView serves a remote archive: it joins the swarm (downloading the
// latest version in the background), serves what it has at once, and
// reloads the open pages whenever a new version's changed files are here.
func runView(ctx context.Context, g *globalOptions, o viewOptions) error {
	out := newPrinter(g)
	u, err := g.parseURL(ctx, o.url)
	if err != nil {
		return err
	}
	store, err := g.store()
	if err != nil {
		return err
	}
	a, err := store.OpenReplica(u.Key, hyperdrive.Options{})
	if err != nil {
		return err
	}
	defer a.Close()
	if o.save {
		if err := store.SetSaved(u.Key, true); err != nil {
			return err
		}
	}
	n, err := g.startNetwork(ctx)
	if err != nil {
		return err
	}
	defer n.Close()
	site := &remoteSite{a: a, ctx: ctx, maxWait: 20 * time.Second}
	f, err := n.swarm.Join(a, swarm.JoinOptions{Announce: true, Lookup: true, Download: swarm.Latest, Peers: n.peers})
	if err != nil {
		return err
	}
	site.feed = f

	// A site never seen before needs its log first; a cached one is served
	// as it is, and updates follow.
	if a.Version() == 0 {
		out.event(nil, fmt.Sprintf("Looking for peers of %s (discovery: %s)…", u.Key.URL(), n.sources()))
		wctx, cancel := context.WithTimeout(ctx, o.timeout)
		err := waitLog(wctx, f)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return noPeersError(u.Key.URL(), n, err)
		}
	}
	site.shown.Store(a.Version())
	title := remoteTitle(a, u.Key)
	devOpts := devserver.Options{
		Site:   site,
		URL:    u.Key.URL(),
		Title:  title,
		Status: func() devserver.Status { return archiveStatus(a, n) },
		Events: func(e devserver.Event) {
			printDevEvent(out, e)
			if p, ok := e.(devserver.PaintEvent); ok {
				reportPaint(f, p)
			}
		},
	}
	front, err := startFront(out, o.front, devOpts)
	if errors.Is(err, devserver.ErrPortInUse) && !o.portSet {
		o.front.port = 0 // another view has the default port: take a free one
		front, err = startFront(out, o.front, devOpts)
	}
	if err != nil {
		return err
	}
	saved := "cached until gc (--save keeps it)"
	if store.Saved(u.Key) {
		saved = "saved"
	}
	front.printListening(out, fmt.Sprintf("Viewing %s, version %d, %s", title, a.Version(), saved), a, n, "saved", store.Saved(u.Key))
	if o.open {
		openBrowser(front.srv.LocalURL() + versionPath(u.Version))
	}
	loopErr := viewLoop(ctx, out, front.srv, site, f, u.Key)
	if err := front.close(); err != nil {
		return err
	}
	if errors.Is(loopErr, context.Canceled) || ctx.Err() != nil {
		out.event(nil, "Stopped.")
		return nil
	}
	return loopErr
}

// versionPath turns a URL's version into the dev server's path form.
func versionPath(spec string) string {
	if spec == "" || spec == "+latest" {
		return ""
	}
	return spec + "/"
}

// reportPaint passes a page's paint on to the peers, so the author sees it.
func reportPaint(f *swarm.Feed, p devserver.PaintEvent) {
	v, err := strconv.ParseUint(p.Version, 10, 64)
	if err != nil {
		return
	}
	var flags byte
	if p.Swap {
		flags |= wire.PaintSwap
	}
	device := p.Device
	if len(device) > wire.MaxDevice {
		device = device[:wire.MaxDevice]
	}
	device = strings.ToValidUTF8(device, "")
	f.ReportPaint(wire.Paint{Version: v, Millis: uint64(p.SaveToPaint.Milliseconds()), Flags: flags, Device: device})
}

// waitLog waits until the feed holds some version and every version peers
// have advertised so far (entries only: chunks come as pages ask).
func waitLog(ctx context.Context, f *swarm.Feed) error {
	for {
		ch := f.Changed()
		st := f.Stats()
		if st.Version > 0 && st.Version >= st.RemoteVersion {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// remoteTitle is the site's dat.json title, else a short key.
func remoteTitle(a *hyperdrive.Archive, key hyperdrive.PublicKey) string {
	if b, err := a.Latest().ReadFile(strings.TrimPrefix(hyperdrive.SiteManifestFile, "/")); err == nil {
		if m, err := hyperdrive.ParseSiteManifest(b); err == nil && strings.TrimSpace(m.Title) != "" {
			return strings.TrimSpace(m.Title)
		}
	}
	return key.String()[:12]
}

// viewLoop follows the swarm: a new version's changed files are fetched,
// then the open pages reload (or swap styles); synced is reported once a
// version is complete here; losing every peer is said once.
func viewLoop(ctx context.Context, out *printer, srv *devserver.Server, site *remoteSite, f *swarm.Feed, key hyperdrive.PublicKey) error {
	var synced uint64
	peers := 0
	for {
		ch := f.Changed()
		st := f.Stats()
		if shown := site.shown.Load(); st.Version > shown {
			if err := showVersion(ctx, out, srv, site, shown, st.Version); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				out.warn("version %d of %s: %s", st.Version, key.URL(), clean(err))
			}
			continue
		}
		if st.Wanted == 0 && st.Version > 0 && st.Version >= st.RemoteVersion && synced != st.Version {
			synced = st.Version
			out.event(map[string]any{"event": "synced", "version": st.Version},
				fmt.Sprintf("Synced version %d: the whole site is here, for offline use", st.Version))
		}
		switch {
		case st.Peers > 0 && peers == 0:
			out.event(map[string]any{"event": "peers", "peers": st.Peers}, fmt.Sprintf("Connected to %d peer(s)", st.Peers))
		case st.Peers == 0 && peers > 0:
			if st.Wanted > 0 {
				out.warn("lost the last peer of %s with %d chunk(s) of version %d still missing: what arrived is kept and served; the rest comes when a peer returns",
					key.URL(), st.Wanted, st.Version)
			} else {
				out.event(map[string]any{"event": "peers", "peers": 0}, fmt.Sprintf("No peers now: serving version %d from the cache", st.Version))
			}
		}
		peers = st.Peers
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// showVersion fetches the files that changed from version from to to, then
// tells the pages.
func showVersion(ctx context.Context, out *printer, srv *devserver.Server, site *remoteSite, from, to uint64) error {
	a := site.a
	newSnap, err := a.Checkout(to)
	if err != nil {
		return err
	}
	var paths []string
	if from == 0 {
		paths = []string{"/"}
	} else {
		oldSnap, err := a.Checkout(from)
		if err != nil {
			return err
		}
		diffs, err := hyperdrive.Diff(oldSnap, newSnap)
		if err != nil {
			return err
		}
		for _, d := range diffs {
			paths = append(paths, d.Path)
		}
		if len(paths) == 0 {
			site.shown.Store(to) // a tag: no file changed, no page reloads
			return nil
		}
	}
	// Fetch what changed (as pages will ask for it) before they reload.
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, len(paths))
	sem := make(chan struct{}, 8)
	for _, p := range paths {
		e, err := newSnap.Entry(p)
		if err != nil || e.File.Size > prefetchLimit {
			continue // removed, a folder, or streamed on demand
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := site.prefetch(e.Content); err != nil {
				errs <- fmt.Errorf("%s: %w", p, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		out.warn("fetching %s (pages will fetch it on demand)", clean(err))
		break
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	site.shown.Store(to)
	// The author's commit time starts the save-to-paint clock; a clock
	// that disagrees with ours by much falls back to when we heard of it.
	saved := a.CommitTime(to - 1)
	if saved.IsZero() || saved.After(start) || start.Sub(saved) > time.Minute {
		saved = start
	}
	v := strconv.FormatUint(to, 10)
	n := srv.Broadcast(devserver.Update{Version: v, Paths: paths, SavedAt: saved})
	out.event(map[string]any{"event": "reload", "version": to, "paths": paths, "clients": n},
		fmt.Sprintf("Version %d arrived: %s; reloaded %d page(s)", to, summarize(paths, 4), n))
	return nil
}
