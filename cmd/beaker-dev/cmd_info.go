package main

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/beaker-dev/beaker-dev/hyperdrive/names"
)

func infoCommand(g *globalOptions) *cli.Command {
	return &cli.Command{
		Name:      "info",
		Usage:     "show a site's URL, key, version, size and tags",
		ArgsUsage: "[DIR|URL]",
		Action: func(c *cli.Context) error {
			a, err := args(c, 0, 1)
			if err != nil {
				return err
			}
			return runInfo(c.Context, g, argOr(a, 0, ""))
		},
	}
}

type infoTag struct {
	Name    string `json:"name"`
	Version uint64 `json:"version"`
	Message string `json:"message,omitempty"`
}

type infoResult struct {
	URL      string    `json:"url"`
	Key      string    `json:"key"`
	Version  uint64    `json:"version"`
	Files    int       `json:"files"`
	Bytes    uint64    `json:"bytes"`
	Tags     []infoTag `json:"tags"`
	Writable bool      `json:"writable"`
	Dir      string    `json:"dir,omitempty"`
	Storage  string    `json:"storage"`
	// WellKnown is the /.well-known/dat file that names the site.
	WellKnown string `json:"well_known"`
}

func runInfo(ctx context.Context, g *globalOptions, arg string) error {
	t, err := g.openTarget(arg)
	if err != nil {
		return err
	}
	defer t.Close()
	s, err := t.snapshot("")
	if err != nil {
		return err
	}
	key := t.archive.Key()
	res := infoResult{URL: key.URL(), Key: key.String(), Version: s.Version(), Files: s.Len(), Bytes: s.Bytes(),
		Tags: []infoTag{}, Writable: t.archive.Writable(), Storage: t.archive.Dir(),
		WellKnown: names.WellKnown(key, names.DefaultTTL)}
	if t.site != nil {
		res.Dir = t.site.Dir
	}
	for _, tag := range t.archive.Tags() {
		res.Tags = append(res.Tags, infoTag{Name: tag.Name, Version: tag.Version, Message: tag.Message})
	}
	return g.emit(res, func(w io.Writer) {
		fmt.Fprintf(w, "url:      %s\n", res.URL)
		if res.Dir != "" {
			fmt.Fprintf(w, "folder:   %s\n", res.Dir)
		}
		fmt.Fprintf(w, "version:  %d\n", res.Version)
		fmt.Fprintf(w, "files:    %d (%s)\n", res.Files, humanBytes(res.Bytes))
		for _, tag := range res.Tags {
			fmt.Fprintf(w, "tag:      %s -> version %d\n", tag.Name, tag.Version)
		}
		mode := "read-only (no secret key here)"
		if res.Writable {
			mode = "writable"
		}
		fmt.Fprintf(w, "access:   %s\n", mode)
		fmt.Fprintf(w, "storage:  %s\n", res.Storage)
		fmt.Fprintf(w, "\nTo name this site, serve this at https://YOUR.DOMAIN/.well-known/dat:\n\n%s\n", res.WellKnown)
		fmt.Fprintf(w, "or publish the DNS TXT record %s on YOUR.DOMAIN.\n", names.TXTRecord(key))
	})
}
