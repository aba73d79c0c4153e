// Package templates holds the files beaker-dev embeds: the site scaffolds
// that `init` writes and the pages the dev server renders (directory
// listings, error pages, the dashboard).
//
// A scaffold is a folder under scaffolds/. Files ending in .tmpl are
// rendered with text/template (see Data; use {{html .Title}} in HTML and
// {{json .Title}} in JSON) and written without the suffix; others are copied.
package templates

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html"
	"io/fs"
	"path"
	"sort"
	"strings"
	"text/template"
)

//go:embed all:scaffolds
var scaffolds embed.FS

// Data fills scaffold templates.
type Data struct {
	Title       string
	Description string
	Year        int
}

// File is one rendered scaffold file.
type File struct {
	Path    string // slash-separated, relative to the site root
	Content []byte
}

// Scaffolds lists the scaffold names, sorted.
func Scaffolds() []string {
	ents, _ := fs.ReadDir(scaffolds, "scaffolds")
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

// ErrNoScaffold reports an unknown scaffold name.
var ErrNoScaffold = fmt.Errorf("templates: no such scaffold")

var funcs = template.FuncMap{
	"html": html.EscapeString,
	"json": func(s string) (string, error) {
		b, err := json.Marshal(s)
		return string(b), err
	},
}

// Render returns the files of scaffold name filled with d.
func Render(name string, d Data) ([]File, error) {
	root := path.Join("scaffolds", name)
	if _, err := fs.Stat(scaffolds, root); err != nil || name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("%w %q (choose one of %s)", ErrNoScaffold, name, strings.Join(Scaffolds(), ", "))
	}
	var out []File
	err := fs.WalkDir(scaffolds, root, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		b, err := scaffolds.ReadFile(p)
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(p, root+"/")
		if strings.HasSuffix(rel, ".tmpl") {
			rel = strings.TrimSuffix(rel, ".tmpl")
			t, err := template.New(rel).Funcs(funcs).Parse(string(b))
			if err != nil {
				return err
			}
			var buf bytes.Buffer
			if err := t.Execute(&buf, d); err != nil {
				return err
			}
			b = buf.Bytes()
		}
		out = append(out, File{Path: rel, Content: b})
		return nil
	})
	return out, err
}
