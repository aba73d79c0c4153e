package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
	"github.com/beaker-dev/beaker-dev/hyperdrive/names"
	"github.com/beaker-dev/beaker-dev/publish"
)

// target is what a DIR|URL argument names: a local site folder, or an
// archive by URL; either way an open archive.
type target struct {
	store   *hyperdrive.Store
	site    *publish.Site // nil when named by URL
	archive *hyperdrive.Archive
	version string // the +N or @TAG of a URL, if any
}

func (t *target) Close() error { return t.archive.Close() }

// looksLikeURL reports whether arg names an archive (dat://…, a key, a DNS
// name) rather than a folder. A folder that exists wins over a name.
func looksLikeURL(arg string) bool {
	if strings.Contains(arg, "://") {
		return true
	}
	if _, err := os.Stat(arg); err == nil {
		return false
	}
	host := strings.SplitN(strings.SplitN(arg, "/", 2)[0], "+", 2)[0]
	host = strings.SplitN(host, "@", 2)[0]
	if _, err := hyperdrive.ParsePublicKey(host); err == nil {
		return true
	}
	return names.LooksLikeName(host)
}

// openTarget opens the archive arg names ("" means the current folder).
func (g *globalOptions) openTarget(arg string) (*target, error) {
	if arg == "" {
		arg = "."
	}
	store, err := g.store()
	if err != nil {
		return nil, err
	}
	t := &target{store: store}
	var key hyperdrive.PublicKey
	if looksLikeURL(arg) {
		u, err := g.parseURL(context.Background(), arg)
		if err != nil {
			return nil, err
		}
		key, t.version = u.Key, u.Version
	} else {
		site, err := publish.OpenSite(arg)
		if err != nil {
			return nil, err
		}
		if err := publish.CheckDataDir(site.Dir, store.Dir()); err != nil {
			return nil, err
		}
		t.site, key = site, site.Key
	}
	a, err := store.Open(key, hyperdrive.Options{})
	if err != nil {
		if errors.Is(err, hyperdrive.ErrNoArchive) && t.site != nil {
			return nil, fmt.Errorf("%w: %s is linked to %s, which is not in %s", hyperdrive.ErrNoArchive, t.site.Dir, key.URL(), store.Dir())
		}
		if errors.Is(err, hyperdrive.ErrNoArchive) {
			return nil, fmt.Errorf("%w: %s is not stored in %s", hyperdrive.ErrNoArchive, key.URL(), store.Dir())
		}
		return nil, err
	}
	if n := a.RolledBack(); n > 0 {
		g.warn("%d version(s) of %s were cut short by a crash before reaching the disk and were dropped", n, key.URL())
	}
	t.archive = a
	return t, nil
}

// openWritableSite opens the site folder dir for writing.
func (g *globalOptions) openWritableSite(dir string) (*target, error) {
	t, err := g.openTarget(dir)
	if err != nil {
		return nil, err
	}
	if t.site == nil {
		t.Close()
		return nil, usagef("%s is a URL; give the site's folder", dir)
	}
	if !t.archive.Writable() {
		t.Close()
		return nil, fmt.Errorf("%w %s (not in %s)", hyperdrive.ErrNoKey, t.archive.Key().URL(), t.store.Dir())
	}
	return t, nil
}

// resolve turns a version spec into a snapshot, defaulting to the URL's
// version and then to the latest.
func (t *target) snapshot(spec string) (*hyperdrive.Snapshot, error) {
	if spec == "" {
		spec = t.version
	}
	v, err := t.archive.Resolve(spec)
	if err != nil {
		return nil, err
	}
	return t.archive.Checkout(v)
}
