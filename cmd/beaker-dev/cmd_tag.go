package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"
)

type tagOptions struct {
	name    string
	dir     string
	message string
}

func tagCommand(g *globalOptions) *cli.Command {
	var o tagOptions
	return &cli.Command{
		Name:      "tag",
		Usage:     "sign a release tag (semantic version) for the current version",
		ArgsUsage: "VERSION [DIR]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "message", Aliases: []string{"m"}, Usage: "release note stored with the tag", Destination: &o.message},
		},
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 2)
			if err != nil {
				return err
			}
			o.name, o.dir = a[0], argOr(a, 1, ".")
			return runTag(c.Context, g, o)
		},
	}
}

type tagResult struct {
	URL            string `json:"url"`
	Key            string `json:"key"`
	Tag            string `json:"tag"`
	Version        uint64 `json:"version"`
	ArchiveVersion uint64 `json:"archive_version"`
	Message        string `json:"message,omitempty"`
}

func runTag(ctx context.Context, g *globalOptions, o tagOptions) error {
	t, err := g.openWritableSite(o.dir)
	if err != nil {
		return err
	}
	defer t.Close()
	lockCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	w, err := t.archive.Begin(lockCtx)
	cancel()
	if err != nil {
		return err
	}
	defer w.Close()
	target := t.archive.Version()
	name, err := w.Tag(o.name, o.message)
	if err != nil {
		return err
	}
	v, err := w.Commit()
	if err != nil {
		return err
	}
	key := t.archive.Key()
	res := tagResult{URL: key.URL(), Key: key.String(), Tag: name, Version: target, ArchiveVersion: v, Message: o.message}
	return g.emit(res, func(w io.Writer) {
		fmt.Fprintf(w, "Tagged version %d as %s: dat://%s@%s/\n", target, name, key, name)
	})
}
