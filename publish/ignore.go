package publish

import (
	"bufio"
	"bytes"
	"path"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/format/gitignore"
)

// IgnoreFile is the per-folder ignore file, in gitignore syntax. One may sit
// in any folder of a site; its patterns apply below that folder.
const IgnoreFile = ".datignore"

// alwaysIgnored names are never published or served, whatever the ignore
// files say: the VCS and archive metadata folders.
var alwaysIgnored = map[string]bool{".git": true, ".dat": true}

// The default rules apply before the site's own .datignore files, which can
// re-include any of them with "!pattern", as in git. Dotfiles are private by
// default (.env, .DS_Store, editor state) except .well-known, which sites
// publish on purpose; the rest are dependency trees and editors' temporary
// files. They are checked by hand rather than as glob patterns because the
// walker and the watcher ask about every path.
func defaultIgnored(name string) bool {
	switch {
	case name == "node_modules" || name == "4913":
		return true
	case name[0] == '.':
		return name != ".well-known"
	case len(name) > 1 && name[0] == '#' && name[len(name)-1] == '#':
		return true
	}
	for _, suffix := range []string{"~", ".swp", ".swx", ".swo", ".tmp", "___jb_tmp___", "___jb_old___"} {
		if strings.HasSuffix(name, suffix) {
			return true
		}
	}
	return false
}

// Ignore decides which paths of a site folder are left out of the archive
// (and so out of the preview).
type Ignore struct {
	patterns []gitignore.Pattern // from .datignore files, lowest priority first
}

// NewIgnore returns the default rules.
func NewIgnore() *Ignore { return &Ignore{} }

// Add adds the patterns of an ignore file found in folder dir (slash
// separated, relative to the site root; "" for the root). Later files take
// precedence, as in git, so add parents before children.
func (ig *Ignore) Add(dir string, content []byte) {
	var domain []string
	if dir != "" && dir != "." {
		domain = strings.Split(dir, "/")
	}
	sc := bufio.NewScanner(bytes.NewReader(content))
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
			continue
		}
		ig.patterns = append(ig.patterns, gitignore.ParsePattern(line, domain))
	}
}

// Match reports whether the slash-separated path rel (relative to the site
// root) is ignored. isDir says whether it names a folder. As in git, a path
// below an ignored folder is ignored, whatever later patterns say.
func (ig *Ignore) Match(rel string, isDir bool) bool {
	rel = strings.Trim(path.Clean("/"+rel), "/")
	if rel == "" {
		return false
	}
	parts := strings.Split(rel, "/")
	for k := 1; k < len(parts); k++ {
		if ig.match(parts[:k], true) {
			return true
		}
	}
	return ig.match(parts, isDir)
}

// match decides for one path whose parent folders are not ignored.
func (ig *Ignore) match(parts []string, isDir bool) bool {
	name := parts[len(parts)-1]
	if alwaysIgnored[name] {
		return true
	}
	// The last matching .datignore pattern decides; none leaves the default.
	for i := len(ig.patterns) - 1; i >= 0; i-- {
		switch ig.patterns[i].Match(parts, isDir) {
		case gitignore.Exclude:
			return true
		case gitignore.Include:
			return false
		}
	}
	return defaultIgnored(name)
}
