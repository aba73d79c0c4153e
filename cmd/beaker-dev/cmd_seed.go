package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
	"github.com/beaker-dev/beaker-dev/hyperdrive/discovery"
	"github.com/beaker-dev/beaker-dev/hyperdrive/swarm"
)

func seedCommand(g *globalOptions) *cli.Command {
	return &cli.Command{
		Name:      "seed",
		Usage:     "stay online hosting sites for others: your own folders and other sites by URL (every version, kept in the data directory)",
		ArgsUsage: "[DIR|URL]...",
		Action: func(c *cli.Context) error {
			targets := c.Args().Slice()
			if len(targets) == 0 {
				targets = []string{"."}
			}
			return runSeed(c.Context, g, targets)
		},
	}
}

// runSeed hosts every target until interrupted.
func runSeed(ctx context.Context, g *globalOptions, targets []string) error {
	store, err := g.store()
	if err != nil {
		return err
	}
	var archives []*hyperdrive.Archive
	defer func() {
		for _, a := range archives {
			a.Close()
		}
	}()
	for _, t := range targets {
		a, err := g.openSeedTarget(store, t)
		if err != nil {
			return err
		}
		archives = append(archives, a)
	}
	return seedArchives(ctx, g, archives...)
}

// openSeedTarget opens a site folder's archive, or a replica by URL.
func (g *globalOptions) openSeedTarget(store *hyperdrive.Store, t string) (*hyperdrive.Archive, error) {
	if looksLikeURL(t) {
		u, err := g.parseURL(context.Background(), t)
		if err != nil {
			return nil, err
		}
		return openSaved(store, u.Key)
	}
	tg, err := g.openTarget(t)
	if err != nil {
		return nil, err
	}
	a := tg.archive
	if !a.Writable() {
		// A cloned folder: seed the replica.
		a.Close()
		return store.OpenReplica(tg.site.Key, hyperdrive.Options{})
	}
	return a, nil
}

// openSaved opens the store's replica of key, marked saved: clone and seed
// keep what they fetch, where view only caches it until gc.
func openSaved(store *hyperdrive.Store, key hyperdrive.PublicKey) (*hyperdrive.Archive, error) {
	a, err := store.OpenReplica(key, hyperdrive.Options{})
	if err != nil {
		return nil, err
	}
	if err := store.SetSaved(key, true); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

// seedLoop prints what happens to the feeds until ctx ends.
func seedLoop(ctx context.Context, out *printer, feeds []*swarm.Feed) error {
	type state struct{ peers, version int }
	last := make([]state, len(feeds))
	for {
		chans := make([]<-chan struct{}, len(feeds))
		for i, f := range feeds {
			chans[i] = f.Changed()
		}
		for i, f := range feeds {
			st := f.Stats()
			now := state{st.Peers, int(st.Version)}
			if now != last[i] {
				url := f.Archive().Key().URL()
				if now.version != last[i].version && last[i].version != 0 {
					out.event(map[string]any{"event": "synced", "url": url, "version": st.Version},
						fmt.Sprintf("%s: version %d", url, st.Version))
				}
				if now.peers != last[i].peers {
					out.event(map[string]any{"event": "peers", "url": url, "peers": st.Peers, "uploaded": st.Uploaded},
						fmt.Sprintf("%s: %d peer(s), %s uploaded", url, st.Peers, humanBytes(uint64(st.Uploaded))))
				}
				last[i] = now
			}
		}
		if err := waitAny(ctx, chans); err != nil {
			out.event(nil, "Stopped.")
			return nil
		}
	}
}

// waitAny waits until one channel closes or ctx ends.
func waitAny(ctx context.Context, chans []<-chan struct{}) error {
	done := make(chan struct{})
	stop := make(chan struct{})
	defer close(stop)
	for _, ch := range chans {
		go func() {
			select {
			case <-ch:
				select {
				case done <- struct{}{}:
				case <-stop:
				}
			case <-stop:
			}
		}()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

type bootstrapOptions struct {
	dht, dns string
}

func bootstrapCommand(g *globalOptions) *cli.Command {
	var o bootstrapOptions
	return &cli.Command{
		Name:  "bootstrap",
		Usage: "run discovery infrastructure: a DHT bootstrap node and/or a DNS discovery server (both by default)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dht", Usage: "DHT node address HOST:PORT (default :6881 when neither flag is given)", Destination: &o.dht},
			&cli.StringFlag{Name: "dns", Usage: "DNS discovery server address HOST:PORT (default :53 when neither flag is given)", Destination: &o.dns},
		},
		Action: func(c *cli.Context) error {
			if _, err := args(c, 0, 0); err != nil {
				return err
			}
			if o.dht == "" && o.dns == "" {
				o.dht, o.dns = ":6881", ":53"
			}
			return runBootstrap(c.Context, g, o)
		},
	}
}

func runBootstrap(ctx context.Context, g *globalOptions, o bootstrapOptions) error {
	ev := map[string]any{"event": "listening"}
	var lines []string
	if o.dht != "" {
		d, err := discovery.StartDHT(ctx, discovery.DHTConfig{Addr: o.dht, Bootstrap: []string{}, Warn: func(m string) { g.warn("%s", m) }})
		if err != nil {
			return &userError{code: exitInvalid, msg: fmt.Sprintf("cannot run a DHT node on %s: %s", o.dht, clean(err)), err: err}
		}
		defer d.Close()
		ev["dht"] = d.Addr().String()
		lines = append(lines, "DHT bootstrap node on "+d.Addr().String()+" (use --bootstrap "+d.Addr().String()+")")
	}
	if o.dns != "" {
		s, err := discovery.ListenDNS(o.dns, discovery.DNSServerOptions{})
		if err != nil {
			return &userError{code: exitInvalid, msg: fmt.Sprintf("cannot run a DNS discovery server on %s: %s", o.dns, clean(err)), err: err}
		}
		defer s.Close()
		ev["dns"] = s.Addr().String()
		lines = append(lines, "DNS discovery server on "+s.Addr().String()+" (use --dns-discovery "+s.Addr().String()+")")
	}
	out := newPrinter(g)
	out.event(ev, strings.Join(lines, "\n"))
	<-ctx.Done()
	out.event(nil, "Stopped.")
	return nil
}
