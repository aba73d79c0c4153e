package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/beaker-dev/beaker-dev/publish"
)

type exportOptions struct {
	target, out, version string
}

func exportCommand(g *globalOptions) *cli.Command {
	var o exportOptions
	return &cli.Command{
		Name:      "export",
		Usage:     "write the files of a version to a folder",
		ArgsUsage: "[DIR|URL] OUT",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "version", Usage: "version number, tag or latest", Destination: &o.version},
		},
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 2)
			if err != nil {
				return err
			}
			o.out = a[len(a)-1]
			if len(a) == 2 {
				o.target = a[0]
			}
			return runExport(c.Context, g, o)
		},
	}
}

type exportResult struct {
	URL     string  `json:"url"`
	Key     string  `json:"key"`
	Version uint64  `json:"version"`
	Out     string  `json:"out"`
	Files   int     `json:"files"`
	Bytes   uint64  `json:"bytes"`
	MS      float64 `json:"ms"`
}

func runExport(ctx context.Context, g *globalOptions, o exportOptions) error {
	start := time.Now()
	t, err := g.openTarget(o.target)
	if err != nil {
		return err
	}
	defer t.Close()
	s, err := t.snapshot(o.version)
	if err != nil {
		return err
	}
	progress, done := g.progress("exporting")
	res, err := publish.Export(ctx, s, o.out, publish.ExportOptions{Progress: progress})
	done()
	if err != nil {
		return err
	}
	key := t.archive.Key()
	out := exportResult{URL: key.URL(), Key: key.String(), Version: s.Version(), Out: o.out, Files: res.Files, Bytes: res.Bytes,
		MS: float64(time.Since(start).Microseconds()) / 1000}
	return g.emit(out, func(w io.Writer) {
		fmt.Fprintf(w, "Wrote version %d of %s to %s: %d files, %s\n", s.Version(), key.URL(), o.out, res.Files, humanBytes(res.Bytes))
	})
}
