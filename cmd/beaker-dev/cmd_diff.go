package main

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
)

type diffOptions struct {
	from, to, target string
}

func diffCommand(g *globalOptions) *cli.Command {
	return &cli.Command{
		Name:      "diff",
		Usage:     "list paths added, changed and removed between two versions or tags",
		ArgsUsage: "FROM TO [DIR|URL]",
		Action: func(c *cli.Context) error {
			a, err := args(c, 2, 3)
			if err != nil {
				return err
			}
			o := diffOptions{from: a[0], to: a[1], target: argOr(a, 2, "")}
			return runDiff(c.Context, g, o)
		},
	}
}

type diffEntry struct {
	Path    string `json:"path"`
	Change  string `json:"change"`
	OldSize uint64 `json:"old_size"`
	NewSize uint64 `json:"new_size"`
}

func runDiff(ctx context.Context, g *globalOptions, o diffOptions) error {
	t, err := g.openTarget(o.target)
	if err != nil {
		return err
	}
	defer t.Close()
	from, err := t.snapshot(o.from)
	if err != nil {
		return err
	}
	to, err := t.snapshot(o.to)
	if err != nil {
		return err
	}
	d, err := hyperdrive.Diff(from, to)
	if err != nil {
		return err
	}
	out := make([]diffEntry, 0, len(d))
	for _, x := range d {
		out = append(out, diffEntry{Path: x.Path, Change: string(x.Kind), OldSize: x.OldSize, NewSize: x.NewSize})
	}
	return g.emit(out, func(w io.Writer) {
		if len(out) == 0 {
			fmt.Fprintf(w, "No differences between version %d and version %d\n", from.Version(), to.Version())
		}
		mark := map[string]string{"added": "+", "changed": "~", "removed": "-"}
		for _, x := range out {
			fmt.Fprintf(w, "%s %s\n", mark[x.Change], x.Path)
		}
	})
}
