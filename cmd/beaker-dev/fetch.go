package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
	"github.com/beaker-dev/beaker-dev/hyperdrive/swarm"
)

// fetching is a version of a remote archive on its way here, for clone and
// fork: its log is stored (so its files can be listed and written out as
// their chunks arrive) while the chunks download in the background.
type fetching struct {
	g       *globalOptions
	a       *hyperdrive.Archive
	u       hyperdrive.URL
	snap    *hyperdrive.Snapshot
	feed    *swarm.Feed // nil: complete in the cache, no network needed
	net     *network
	stall   time.Duration
	what    string
	endBar  func()
	stopBar chan struct{}
	ctx     context.Context // ends when the caller's does, or when peers stall
	cancel  context.CancelFunc
}

// errStalled: no peer sent anything for the --timeout.
var errStalled = errors.New("no peer sent anything")

// startFetching finds the version u names. A fixed version (+N, @TAG)
// already complete in the cache needs no network at all; with cached set,
// neither does the newest version the cache holds. Otherwise it joins the
// swarm and returns once the log is here; a peer must answer within
// timeout.
func (g *globalOptions) startFetching(ctx context.Context, a *hyperdrive.Archive, u hyperdrive.URL, timeout time.Duration, what string, cached bool) (*fetching, error) {
	spec := u.Version
	if spec == "" {
		spec = "latest"
	}
	fx := &fetching{g: g, a: a, u: u, stall: timeout, what: what, endBar: func() {}}
	if a.Version() > 0 && (cached || (spec != "latest" && spec != "+latest")) {
		if snap, err := completeVersion(a, spec); err == nil {
			fx.snap = snap
			return fx, nil
		}
	}
	n, err := g.startNetwork(ctx)
	if err != nil {
		return nil, err
	}
	fx.net = n
	f, err := n.swarm.Join(a, swarm.JoinOptions{Announce: true, Lookup: true, Download: swarm.Latest, Peers: n.peers})
	if err != nil {
		n.Close()
		return nil, err
	}
	fx.feed = f
	if progress, done := g.progress(what); progress != nil {
		fx.endBar, fx.stopBar = done, make(chan struct{})
		go func() {
			for {
				select {
				case <-fx.stopBar:
					return
				case <-f.Changed():
					st := f.Stats()
					progress(st.Bytes, st.Bytes+int64(st.Wanted)*16<<10)
				}
			}
		}()
	}
	fx.ctx, fx.cancel = fx.watch(ctx)
	err = waitAdvertisedLog(fx.ctx, f)
	if err == nil {
		var v uint64
		if v, err = a.Resolve(spec); err != nil {
			fx.close()
			return nil, fmt.Errorf("%w (the newest version peers have is %d)", err, a.Version())
		}
		if fx.snap, err = a.Checkout(v); err == nil {
			return fx, nil
		}
	}
	// Offline, but the cache may hold the version whole.
	if st := f.Stats(); st.Peers == 0 && ctx.Err() == nil {
		if snap, cerr := completeVersion(a, spec); cerr == nil && snap.Version() > 0 {
			fx.snap = snap
			return fx, nil
		}
	}
	defer fx.close()
	return nil, fx.failure(ctx, err)
}

// waitAdvertisedLog waits until a peer has said which version it has and
// the log holds every version peers advertised (entries only).
func waitAdvertisedLog(ctx context.Context, f *swarm.Feed) error {
	for {
		ch := f.Changed()
		st := f.Stats()
		if st.Advertised > 0 && st.Version > 0 && st.Version >= st.RemoteVersion {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// completeVersion returns the version spec names if every chunk of it is
// stored.
func completeVersion(a *hyperdrive.Archive, spec string) (*hyperdrive.Snapshot, error) {
	v, err := a.Resolve(spec)
	if err != nil {
		return nil, err
	}
	snap, err := a.Checkout(v)
	if err != nil {
		return nil, err
	}
	if n, err := snap.Missing(); err != nil || n > 0 {
		return nil, fmt.Errorf("%d chunks of version %d are not here", n, v)
	}
	return snap, nil
}

// watch returns a context that ends when ctx does or when the feed makes
// no progress (no version, chunk or peer) for the stall timeout. One watch
// serves the whole fetch.
func (fx *fetching) watch(ctx context.Context) (context.Context, context.CancelFunc) {
	wctx, cancel := context.WithCancelCause(ctx)
	go func() {
		timer := time.NewTimer(fx.stall)
		defer timer.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-fx.feed.Changed():
				timer.Reset(fx.stall)
			case <-timer.C:
				cancel(fmt.Errorf("%w for %v", errStalled, fx.stall))
				return
			}
		}
	}()
	return wctx, func() { cancel(context.Canceled) }
}

// prefetch gets a file's chunks before it is written out (export's Fetch).
func (fx *fetching) prefetch(ctx context.Context, c hyperdrive.Content) error {
	if fx.feed == nil {
		return nil
	}
	mctx, cancel := mergeDone(ctx, fx.ctx)
	defer cancel()
	err := fx.feed.Prefetch(mctx, c)
	if err != nil && fx.ctx.Err() != nil && ctx.Err() == nil {
		return context.Cause(fx.ctx)
	}
	return err
}

// finish waits until the newest version is complete here (what clone keeps
// for offline use and seeding), and the fetched version too.
func (fx *fetching) finish(ctx context.Context) error {
	if fx.feed == nil {
		return nil
	}
	wctx, cancel := mergeDone(ctx, fx.ctx)
	defer cancel()
	err := fx.feed.WaitSynced(wctx, 0)
	if err == nil {
		err = prefetchAll(wctx, fx.feed, fx.snap)
	}
	if err != nil {
		if fx.ctx.Err() != nil && ctx.Err() == nil {
			err = context.Cause(fx.ctx)
		}
		return fx.failure(ctx, err)
	}
	return nil
}

// failure turns what stopped a fetch into the error a user sees.
func (fx *fetching) failure(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var st swarm.Stats
	if fx.feed != nil {
		st = fx.feed.Stats()
	}
	if errors.Is(err, hyperdrive.ErrNoTag) || errors.Is(err, hyperdrive.ErrNoVersion) {
		return err
	}
	if st.Peers == 0 && fx.a.Version() == 0 {
		return noPeersError(fx.u.Key.URL(), fx.net, err)
	}
	return &userError{code: exitNetwork, msg: fmt.Sprintf("%s %s did not finish: %s; what arrived is kept, run it again to go on",
		fx.what, fx.u.Key.URL(), strings.TrimPrefix(clean(err), "context canceled: ")), err: err}
}

// stats says how much came from peers, and from how many.
func (fx *fetching) stats() (int64, int) {
	if fx.feed == nil {
		return 0, 0
	}
	st := fx.feed.Stats()
	return st.Bytes, st.Peers
}

func (fx *fetching) close() {
	if fx.cancel != nil {
		fx.cancel()
	}
	if fx.stopBar != nil {
		close(fx.stopBar)
		fx.stopBar = nil
	}
	fx.endBar()
	if fx.net != nil {
		fx.net.Close()
		fx.net = nil
	}
}

// mergeDone returns a whose Done also closes when b's does. The fetch's
// watch context b already ends with the command's context; a is the one
// the caller passed (Export's, which ends when a worker fails).
func mergeDone(a, b context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(a)
	stop := context.AfterFunc(b, func() { cancel(context.Cause(b)) })
	return ctx, func() { stop(); cancel(context.Canceled) }
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
