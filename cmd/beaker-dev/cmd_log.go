package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
)

func logCommand(g *globalOptions) *cli.Command {
	return &cli.Command{
		Name:      "log",
		Usage:     "list versions, newest first: when, what changed, tags",
		ArgsUsage: "[DIR|URL]",
		Action: func(c *cli.Context) error {
			a, err := args(c, 0, 1)
			if err != nil {
				return err
			}
			return runLog(c.Context, g, argOr(a, 0, ""))
		},
	}
}

type logChange struct {
	Op   string `json:"op"`
	Path string `json:"path,omitempty"`
	Size uint64 `json:"size,omitempty"`
	Tag  string `json:"tag,omitempty"`
}

type logVersion struct {
	Version uint64      `json:"version"`
	Time    time.Time   `json:"time"`
	Tags    []string    `json:"tags"`
	Changes []logChange `json:"changes"`
}

func runLog(ctx context.Context, g *globalOptions, arg string) error {
	t, err := g.openTarget(arg)
	if err != nil {
		return err
	}
	defer t.Close()
	hist, err := t.archive.History()
	if err != nil {
		return err
	}
	out := make([]logVersion, 0, len(hist))
	for _, c := range slices.Backward(hist) {
		v := logVersion{Version: c.Version, Time: c.Time.UTC(), Tags: c.Tags, Changes: []logChange{}}
		if v.Tags == nil {
			v.Tags = []string{}
		}
		for _, ch := range c.Changes {
			v.Changes = append(v.Changes, logChange{Op: ch.Type.String(), Path: ch.Path, Size: ch.Size, Tag: ch.Tag})
		}
		out = append(out, v)
	}
	return g.emit(out, func(w io.Writer) {
		for _, v := range out {
			tags := ""
			if len(v.Tags) > 0 {
				tags = " (tag: " + strings.Join(v.Tags, ", ") + ")"
			}
			fmt.Fprintf(w, "version %d%s  %s\n", v.Version, tags, v.Time.Local().Format("2006-01-02 15:04:05"))
			for _, ch := range v.Changes {
				switch ch.Op {
				case hyperdrive.EntryPut.String():
					fmt.Fprintf(w, "  put    %s (%s)\n", ch.Path, humanBytes(ch.Size))
				case hyperdrive.EntryDelete.String():
					fmt.Fprintf(w, "  delete %s\n", ch.Path)
				case hyperdrive.EntryTag.String():
					fmt.Fprintf(w, "  tag    %s\n", ch.Tag)
				default:
					fmt.Fprintf(w, "  %s\n", ch.Op)
				}
			}
		}
	})
}
