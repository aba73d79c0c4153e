package main

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"
)

func gcCommand(g *globalOptions) *cli.Command {
	return &cli.Command{
		Name:  "gc",
		Usage: "free cached sites that were never saved, and chunks no version references",
		Action: func(c *cli.Context) error {
			if _, err := args(c, 0, 0); err != nil {
				return err
			}
			return runGC(c.Context, g)
		},
	}
}

type gcResult struct {
	Removed   []string `json:"removed"`   // dat:// URLs of the cached sites freed
	Compacted []string `json:"compacted"` // sites whose unreferenced chunks were freed
	Skipped   []string `json:"skipped"`   // sites open in a running beaker-dev, left alone
	Chunks    int      `json:"chunks"`
	Freed     int64    `json:"freed_bytes"`
}

// runGC frees what no one needs: sites viewed but never saved (clone, seed
// and fork save theirs; an author's own sites are always kept) and chunks of
// imports that never committed. Sites in use by another process are skipped.
func runGC(ctx context.Context, g *globalOptions) error {
	store, err := g.store()
	if err != nil {
		return err
	}
	rep, err := store.GC(ctx)
	if err != nil {
		return err
	}
	res := gcResult{Removed: []string{}, Compacted: []string{}, Skipped: []string{}, Chunks: rep.Chunks, Freed: rep.Freed}
	for _, k := range rep.Removed {
		res.Removed = append(res.Removed, k.URL())
	}
	for _, k := range rep.Compacted {
		res.Compacted = append(res.Compacted, k.URL())
	}
	for _, k := range rep.Skipped {
		res.Skipped = append(res.Skipped, k.URL())
	}
	return g.emit(res, func(w io.Writer) {
		fmt.Fprintf(w, "Freed %s: %d cached site(s) never saved, %d unreferenced chunk(s) in %d site(s).\n",
			humanBytes(uint64(rep.Freed)), len(rep.Removed), rep.Chunks, len(rep.Compacted))
		for _, u := range res.Skipped {
			fmt.Fprintf(w, "  skipped %s: in use by a running beaker-dev\n", u)
		}
	})
}
