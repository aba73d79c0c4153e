package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
	"github.com/beaker-dev/beaker-dev/hyperdrive/names"
)

type resolveOptions struct {
	name string
}

func resolveCommand(g *globalOptions) *cli.Command {
	var o resolveOptions
	return &cli.Command{
		Name:      "resolve",
		Usage:     "look up the dat:// URL a DNS name publishes (https://NAME/.well-known/dat, DNS TXT datkey=)",
		ArgsUsage: "NAME",
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1)
			if err != nil {
				return err
			}
			o.name = a[0]
			return runResolve(c.Context, g, o)
		},
	}
}

type resolveResult struct {
	URL     string `json:"url"`
	Key     string `json:"key"`
	Name    string `json:"name"`
	Source  string `json:"source"`            // https, dns, cache, or key (NAME was a key)
	Origin  string `json:"origin,omitempty"`  // https or dns: where the key first came from
	TTL     int64  `json:"ttl"`               // seconds the answer is cached for
	Fetched string `json:"fetched,omitempty"` // when Origin gave it (RFC 3339)
	Stale   bool   `json:"stale"`             // the lookup failed; an expired cache entry was used
}

// runResolve prints the dat:// URL that NAME (a DNS name, or a dat:// URL
// with one, whose version and path are kept) publishes.
func runResolve(ctx context.Context, g *globalOptions, o resolveOptions) error {
	u, err := hyperdrive.ParseURL(o.name)
	if err != nil {
		return err
	}
	r, err := g.nameResolver(g.resolver)
	if err != nil {
		return err
	}
	res, err := r.Resolve(ctx, u.Host)
	if err != nil {
		return err
	}
	g.warnStale(res)
	u.Key, u.Host = res.Key, res.Key.String()
	out := resolveResult{URL: u.String(), Key: res.Key.String(), Name: res.Name, Source: string(res.Source),
		TTL: int64(res.TTL / time.Second), Stale: res.Stale}
	if res.Source != names.SourceKey {
		out.Origin, out.Fetched = string(res.Origin), res.Fetched.UTC().Format(time.RFC3339)
	}
	return g.emit(out, func(w io.Writer) { fmt.Fprintln(w, out.URL) })
}

// nameResolver returns a resolver caching in the data directory and asking
// server (HOST:PORT, or HOST for port 53; "" for the system's resolvers).
func (g *globalOptions) nameResolver(server string) (*names.Resolver, error) {
	if server != "" {
		host, port, err := net.SplitHostPort(server)
		if err != nil {
			host, port = server, "53"
		}
		if n, perr := strconv.ParseUint(port, 10, 16); host == "" || perr != nil || n == 0 {
			return nil, usagef("--resolver %q: want HOST:PORT, such as 127.0.0.1:53", server)
		}
		server = net.JoinHostPort(host, port)
	}
	store, err := g.store()
	if err != nil {
		return nil, err
	}
	return names.New(names.Options{CacheDir: store.Dir(), DNSServer: server, Warn: func(m string) { g.warn("%s", m) }}), nil
}

// resolveURL turns a dat:// URL naming a DNS name into one naming its key
// (keeping version and path); a URL with a key is returned as it is. This
// is what every command taking a URL uses for names.
func (g *globalOptions) resolveURL(ctx context.Context, u hyperdrive.URL) (hyperdrive.URL, error) {
	if !u.IsName() {
		return u, nil
	}
	r, err := g.nameResolver(g.resolver)
	if err != nil {
		return u, err
	}
	res, err := r.Resolve(ctx, u.Host)
	if err != nil {
		return u, err
	}
	g.warnStale(res)
	u.Key, u.Host = res.Key, res.Key.String()
	return u, nil
}

// parseURL parses a URL argument (dat://KEY[+V|@TAG]/path, a bare key, or
// either with a DNS name for the key), resolving a name to its key.
func (g *globalOptions) parseURL(ctx context.Context, s string) (hyperdrive.URL, error) {
	u, err := hyperdrive.ParseURL(s)
	if err != nil {
		return u, err
	}
	return g.resolveURL(ctx, u)
}

// warnStale says when a name's answer comes from an expired cache entry.
func (g *globalOptions) warnStale(res names.Result) {
	if res.Stale {
		g.warn("%s: using the key cached %s ago, as looking it up failed (%s)", res.Name,
			time.Since(res.Fetched).Round(time.Second), clean(res.StaleReason))
	}
}
