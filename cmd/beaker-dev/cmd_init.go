package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
	"github.com/beaker-dev/beaker-dev/publish"
	"github.com/beaker-dev/beaker-dev/templates"
)

type initOptions struct {
	dir      string
	template string // scaffold; "" means plain for an empty folder, none otherwise
	title    string
}

func initCommand(g *globalOptions) *cli.Command {
	var o initOptions
	return &cli.Command{
		Name:      "init",
		Usage:     "scaffold a site, create its key pair and publish version one",
		ArgsUsage: "[DIR]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "template", Usage: "scaffold: " + strings.Join(templates.Scaffolds(), ", ") + " (default: plain for an empty folder; a folder with files gets none unless asked)", Destination: &o.template},
			&cli.StringFlag{Name: "title", Usage: "the site's title (default: from the folder name)", Destination: &o.title},
		},
		Action: func(c *cli.Context) error {
			a, err := args(c, 0, 1)
			if err != nil {
				return err
			}
			o.dir = argOr(a, 0, ".")
			return runInit(c.Context, g, o)
		},
	}
}

type initResult struct {
	URL      string   `json:"url"`
	Key      string   `json:"key"`
	Version  uint64   `json:"version"`
	Dir      string   `json:"dir"`
	Template string   `json:"template"`
	Files    int      `json:"files"`
	Bytes    uint64   `json:"bytes"`
	Written  []string `json:"written"`
	Skipped  []string `json:"skipped"`
}

func runInit(ctx context.Context, g *globalOptions, o initOptions) error {
	abs, err := filepath.Abs(o.dir)
	if err != nil {
		return err
	}
	if o.template == "" {
		// An existing site keeps its files as they are.
		o.template = "plain"
		if ents, err := os.ReadDir(abs); err == nil && len(ents) > 0 {
			o.template = "none"
		}
	}
	if site, err := publish.OpenSite(abs); err == nil {
		return &userError{code: exitInvalid, msg: fmt.Sprintf("%s is already a beaker-dev site (%s)", o.dir, site.Key.URL())}
	}
	title := o.title
	if title == "" {
		title = titleFromDir(abs)
	}
	var files []templates.File
	if o.template != "none" {
		if files, err = templates.Render(o.template, templates.Data{Title: title, Year: time.Now().Year()}); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return err
	}
	res := initResult{Dir: abs, Template: o.template, Written: []string{}, Skipped: []string{}}
	root, err := os.OpenRoot(abs)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, f := range files {
		wrote, err := writeNew(root, f.Path, f.Content)
		if err != nil {
			return fmt.Errorf("writing %s: %w", f.Path, err)
		}
		if wrote {
			res.Written = append(res.Written, f.Path)
		} else {
			res.Skipped = append(res.Skipped, f.Path)
		}
	}
	t, err := g.createArchive(ctx, abs)
	if err != nil {
		return err
	}
	defer t.Close()
	imp, err := publish.Import(ctx, t.archive, abs, publish.ImportOptions{})
	if err != nil {
		return err
	}
	key := t.archive.Key()
	res.URL, res.Key, res.Version, res.Files, res.Bytes = key.URL(), key.String(), imp.Version, imp.Files, imp.Bytes
	return g.emit(res, func(w io.Writer) {
		if o.template == "none" {
			fmt.Fprintf(w, "Created %s for the files in %s\n", key.URL(), o.dir)
		} else {
			fmt.Fprintf(w, "Created %s in %s from the %s scaffold\n", key.URL(), o.dir, o.template)
		}
		if len(res.Skipped) > 0 {
			fmt.Fprintf(w, "Kept your %s\n", strings.Join(res.Skipped, ", "))
		}
		fmt.Fprintf(w, "Published version %d: %d files, %s\n", imp.Version, imp.Files, humanBytes(imp.Bytes))
		fmt.Fprintf(w, "Its secret key is in %s; back it up with: beaker-dev keys export %s\n", t.store.Dir(), o.dir)
	})
}

// createArchive makes a key pair and an archive for the folder dir and links
// them. The folder must not be linked already.
func (g *globalOptions) createArchive(ctx context.Context, dir string) (*target, error) {
	store, err := g.store()
	if err != nil {
		return nil, err
	}
	if err := publish.CheckDataDir(dir, store.Dir()); err != nil {
		return nil, err
	}
	a, err := store.Create(hyperdrive.Options{})
	if err != nil {
		return nil, err
	}
	site, err := publish.LinkSite(dir, a.Key())
	if err != nil {
		a.Close()
		return nil, err
	}
	return &target{store: store, site: site, archive: a}, nil
}

// writeNew writes a file unless one exists at that path.
func writeNew(root *os.Root, rel string, b []byte) (bool, error) {
	if d := path.Dir(rel); d != "." {
		if err := root.MkdirAll(d, 0o755); err != nil {
			return false, err
		}
	}
	f, err := root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, os.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err == nil, err
}

// titleFromDir turns "my-new_site" into "My New Site".
func titleFromDir(dir string) string {
	words := strings.FieldsFunc(filepath.Base(dir), func(r rune) bool { return r == '-' || r == '_' || r == ' ' || r == '.' })
	for i, w := range words {
		words[i] = strings.ToUpper(w[:1]) + w[1:]
	}
	if len(words) == 0 {
		return "My Site"
	}
	return strings.Join(words, " ")
}

// humanBytes formats a byte count for people.
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
