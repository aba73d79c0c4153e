package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
	"github.com/beaker-dev/beaker-dev/publish"
)

func keysCommand(g *globalOptions) *cli.Command {
	var exp keysExportOptions
	var imp keysImportOptions
	return &cli.Command{
		Name:  "keys",
		Usage: "move a site's secret key between machines",
		Subcommands: []*cli.Command{
			{
				Name:      "export",
				Usage:     "print (or write to --out) the secret key of a site",
				ArgsUsage: "[DIR|URL]",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "out", Usage: "write the key to this file (mode 0600) instead of printing it", Destination: &exp.out},
				},
				Action: func(c *cli.Context) error {
					a, err := args(c, 0, 1)
					if err != nil {
						return err
					}
					exp.target = argOr(a, 0, "")
					return runKeysExport(c.Context, g, exp)
				},
			},
			{
				Name:      "import",
				Usage:     "store a secret key exported on another machine (FILE, or - for stdin); with DIR, link that folder to the site",
				ArgsUsage: "FILE [DIR]",
				Action: func(c *cli.Context) error {
					a, err := args(c, 1, 2)
					if err != nil {
						return err
					}
					imp.file, imp.dir = a[0], argOr(a, 1, "")
					return runKeysImport(c.Context, g, imp)
				},
			},
		},
	}
}

type keysExportOptions struct{ target, out string }

type keysImportOptions struct{ file, dir string }

type keysResult struct {
	URL       string `json:"url"`
	Key       string `json:"key"`
	File      string `json:"file,omitempty"`
	SecretKey string `json:"secret_key,omitempty"`
	Linked    string `json:"linked,omitempty"`
}

// keyOf finds the public key a DIR|URL argument names, without opening the
// archive.
func (g *globalOptions) keyOf(arg string) (hyperdrive.PublicKey, error) {
	if arg == "" {
		arg = "."
	}
	if looksLikeURL(arg) {
		u, err := g.parseURL(context.Background(), arg)
		if err != nil {
			return hyperdrive.PublicKey{}, err
		}
		return u.Key, nil
	}
	site, err := publish.OpenSite(arg)
	if err != nil {
		return hyperdrive.PublicKey{}, err
	}
	return site.Key, nil
}

func runKeysExport(ctx context.Context, g *globalOptions, o keysExportOptions) error {
	key, err := g.keyOf(o.target)
	if err != nil {
		return err
	}
	store, err := g.store()
	if err != nil {
		return err
	}
	kp, err := store.LoadKey(key)
	if err != nil {
		return err
	}
	text, err := kp.MarshalText()
	if err != nil {
		return err
	}
	res := keysResult{URL: key.URL(), Key: key.String()}
	if o.out != "" {
		f, err := os.OpenFile(o.out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			if errors.Is(err, os.ErrExist) {
				return &userError{code: exitInvalid, msg: fmt.Sprintf("%s exists; choose another --out file", o.out), err: err}
			}
			return err
		}
		_, err = f.Write(text)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		res.File = o.out
		return g.emit(res, func(w io.Writer) {
			fmt.Fprintf(w, "Wrote the secret key of %s to %s (mode 0600). Anyone holding it can publish as this site.\n", key.URL(), o.out)
		})
	}
	res.SecretKey = string(text)
	return g.emit(res, func(w io.Writer) { w.Write(text) })
}

func runKeysImport(ctx context.Context, g *globalOptions, o keysImportOptions) error {
	var b []byte
	var err error
	if o.file == "-" {
		b, err = io.ReadAll(io.LimitReader(os.Stdin, 64<<10))
	} else {
		b, err = os.ReadFile(o.file)
	}
	if err != nil {
		return err
	}
	kp, err := hyperdrive.ParseKeyPair(b)
	if err != nil {
		return err
	}
	store, err := g.store()
	if err != nil {
		return err
	}
	if err := store.SaveKey(kp); err != nil {
		return err
	}
	res := keysResult{URL: kp.Public.URL(), Key: kp.Public.String()}
	if o.dir != "" {
		if !store.HasArchive(kp.Public) {
			return fmt.Errorf("%w: the key is stored, but %s has no copy of %s to link %s to; publishing from an empty copy would fork the site's history, so fetch it first",
				hyperdrive.ErrNoArchive, store.Dir(), kp.Public.URL(), o.dir)
		}
		if err := publish.CheckDataDir(o.dir, store.Dir()); err != nil {
			return err
		}
		site, err := publish.LinkSite(o.dir, kp.Public)
		if err != nil {
			return err
		}
		res.Linked = site.Dir
	}
	return g.emit(res, func(w io.Writer) {
		fmt.Fprintf(w, "Stored the secret key of %s in %s\n", kp.Public.URL(), store.Dir())
		if res.Linked != "" {
			fmt.Fprintf(w, "Linked %s to it: beaker-dev publish %s\n", res.Linked, strings.TrimSpace(o.dir))
		}
	})
}
