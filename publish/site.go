// Package publish turns a site folder into versions of its archive: it links
// folders to archives, applies the ignore rules, imports a folder
// incrementally (only what changed is read, only new chunks are stored) and
// watches a folder to publish every save.
package publish

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
)

// linkFile ties a site folder to its archive. It sits in the folder's .dat
// directory, which is never published or served; the archive itself and
// its secret key live in the data directory.
const linkFile = ".dat/archive.json"

// ErrNotSite: a folder that is not linked to an archive.
var ErrNotSite = errors.New("publish: not a beaker-dev site")

// ErrDataDirInSite: the data directory (which holds secret keys) lies inside
// the folder that would be published.
var ErrDataDirInSite = errors.New("publish: the data directory is inside the site folder")

// Site is a folder linked to an archive.
type Site struct {
	Dir string               // absolute path of the folder
	Key hyperdrive.PublicKey // its archive
}

type link struct {
	URL string `json:"url"`
}

// OpenSite reads the link of the site folder dir.
func OpenSite(dir string) (*Site, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrNotSite, dir, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%w: %s is not a folder", ErrNotSite, dir)
	}
	b, err := os.ReadFile(filepath.Join(abs, linkFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s has no %s", ErrNotSite, dir, linkFile)
		}
		return nil, err
	}
	var l link
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrNotSite, filepath.Join(dir, linkFile), err)
	}
	key, err := parseDatURLKey(l.URL)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrNotSite, filepath.Join(dir, linkFile), err)
	}
	return &Site{Dir: abs, Key: key}, nil
}

func parseDatURLKey(u string) (hyperdrive.PublicKey, error) {
	s := strings.TrimSuffix(strings.TrimPrefix(u, "dat://"), "/")
	return hyperdrive.ParsePublicKey(s)
}

// LinkSite ties folder dir to archive key, replacing any earlier link.
func LinkSite(dir string, key hyperdrive.PublicKey) (*Site, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(abs, ".dat"), 0o755); err != nil {
		return nil, err
	}
	b, _ := json.MarshalIndent(link{URL: key.URL()}, "", "  ")
	tmp := filepath.Join(abs, linkFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, filepath.Join(abs, linkFile)); err != nil {
		return nil, err
	}
	return &Site{Dir: abs, Key: key}, nil
}

// CheckDataDir refuses a data directory that would be published with the
// site: it holds secret keys.
func CheckDataDir(siteDir, dataDir string) error {
	s, err1 := filepath.Abs(siteDir)
	d, err2 := filepath.Abs(dataDir)
	if err1 != nil || err2 != nil {
		return errors.Join(err1, err2)
	}
	rel, err := filepath.Rel(s, d)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return nil
	}
	first := strings.Split(filepath.ToSlash(rel), "/")[0]
	if alwaysIgnored[first] {
		return nil // inside .dat or .git: never published
	}
	return fmt.Errorf("%w: %s is inside %s; keys would be published, move it out (--data-dir)", ErrDataDirInSite, d, s)
}
