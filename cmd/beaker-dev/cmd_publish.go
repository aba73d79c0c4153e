package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
	"github.com/beaker-dev/beaker-dev/hyperdrive/swarm"
	"github.com/beaker-dev/beaker-dev/publish"
)

type publishOptions struct {
	dir  string
	seed bool
}

func publishCommand(g *globalOptions) *cli.Command {
	var o publishOptions
	return &cli.Command{
		Name:      "publish",
		Usage:     "import the folder as a new signed version (nothing happens if nothing changed)",
		ArgsUsage: "[DIR]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "seed", Usage: "stay online afterwards, hosting the site for others", Destination: &o.seed},
		},
		Action: func(c *cli.Context) error {
			a, err := args(c, 0, 1)
			if err != nil {
				return err
			}
			o.dir = argOr(a, 0, ".")
			return runPublish(c.Context, g, o)
		},
	}
}

type publishResult struct {
	URL       string   `json:"url"`
	Key       string   `json:"key"`
	Version   uint64   `json:"version"`
	Committed bool     `json:"committed"`
	Files     int      `json:"files"`
	Bytes     uint64   `json:"bytes"`
	NewBytes  uint64   `json:"new_bytes"`
	Chunks    int      `json:"chunks"`
	ReadBytes uint64   `json:"read_bytes"`
	Changed   []string `json:"changed"`
	Skipped   []string `json:"skipped,omitempty"`
	MS        float64  `json:"ms"`
}

func runPublish(ctx context.Context, g *globalOptions, o publishOptions) error {
	start := time.Now()
	t, err := g.openWritableSite(o.dir)
	if err != nil {
		return err
	}
	defer t.Close()
	progress, done := g.progress("publishing")
	res, err := publish.Import(ctx, t.archive, t.site.Dir, publish.ImportOptions{Progress: progress, LockWait: 5 * time.Second})
	done()
	if err != nil {
		return err
	}
	key := t.archive.Key()
	out := publishResult{
		URL: key.URL(), Key: key.String(), Version: res.Version, Committed: res.Committed,
		Files: res.Files, Bytes: res.Bytes, NewBytes: res.NewBytes, Chunks: res.NewChunks,
		ReadBytes: res.ReadBytes, Changed: res.Changed, Skipped: res.Skipped,
		MS: float64(time.Since(start).Microseconds()) / 1000,
	}
	if out.Changed == nil {
		out.Changed = []string{}
	}
	for _, s := range res.Skipped {
		g.warn("skipped %s", s)
	}
	if err := g.emit(out, func(w io.Writer) {
		if !res.Committed {
			fmt.Fprintf(w, "Nothing changed: %s is at version %d (%d files, %s)\n", key.URL(), res.Version, res.Files, humanBytes(res.Bytes))
			return
		}
		fmt.Fprintf(w, "Published version %d of %s\n", res.Version, key.URL())
		fmt.Fprintf(w, "  %d changed: %s\n", len(res.Changed), summarize(res.Changed, 6))
		fmt.Fprintf(w, "  %d files, %s; %s new in %d chunks; %.0f ms\n", res.Files, humanBytes(res.Bytes), humanBytes(res.NewBytes), res.NewChunks, out.MS)
	}); err != nil || !o.seed {
		return err
	}
	return seedArchives(ctx, g, t.archive)
}

// seedArchives hosts open archives until interrupted.
func seedArchives(ctx context.Context, g *globalOptions, archives ...*hyperdrive.Archive) error {
	n, err := g.startNetwork(ctx)
	if err != nil {
		return err
	}
	defer n.Close()
	out := newPrinter(g)
	var feeds []*swarm.Feed
	for _, a := range archives {
		f, err := n.swarm.Join(a, swarm.JoinOptions{Announce: true, Lookup: true, Download: swarm.All, Peers: n.peers})
		if err != nil {
			return err
		}
		feeds = append(feeds, f)
		out.event(map[string]any{"event": "seeding", "url": a.Key().URL(), "version": a.Version(), "swarm": n.swarm.Addr()},
			fmt.Sprintf("Seeding %s (version %d) on %s, discovery: %s", a.Key().URL(), a.Version(), n.swarm.Addr(), n.sources()))
	}
	return seedLoop(ctx, out, feeds)
}

// summarize lists up to n items and says how many more there are.
func summarize(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, " ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:n], " "), len(items)-n)
}
