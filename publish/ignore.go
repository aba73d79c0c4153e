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

// defaultIgnores apply before the site's own .datignore files, which can
// re-include any of them with "!pattern". Dotfiles are private by default
// (.env, .DS_Store, editor state) except .well-known, which sites publish on
// purpose; the rest are dependency trees and editors' temporary files.
var defaultIgnores = []string{
	"node_modules/",
	".*",
	"!.well-known/",
	"*~",
	"*.swp",
	"*.swx",
	"*.swo",
	"*.tmp",
	"4913",
	"#*#",
	"*___jb_tmp___",
	"*___jb_old___",
}

// Ignore decides which paths of a site folder are left out of the archive
// (and so out of the preview). The zero value ignores only the defaults.
type Ignore struct {
	patterns []gitignore.Pattern
	matcher  gitignore.Matcher
}

// NewIgnore returns the default rules.
func NewIgnore() *Ignore {
	ig := &Ignore{}
	for _, l := range defaultIgnores {
		ig.patterns = append(ig.patterns, gitignore.ParsePattern(l, nil))
	}
	ig.matcher = gitignore.NewMatcher(ig.patterns)
	return ig
}

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
	ig.matcher = gitignore.NewMatcher(ig.patterns)
}

// Match reports whether the slash-separated path rel (relative to the site
// root) is ignored. isDir says whether it names a folder.
func (ig *Ignore) Match(rel string, isDir bool) bool {
	rel = strings.Trim(path.Clean("/"+rel), "/")
	if rel == "" {
		return false
	}
	parts := strings.Split(rel, "/")
	for _, p := range parts {
		if alwaysIgnored[p] {
			return true
		}
	}
	return ig.matcher.Match(parts, isDir)
}
