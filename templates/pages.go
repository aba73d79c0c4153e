package templates

import (
	"embed"
	"html/template"
)

//go:embed pages/*.html
var pages embed.FS

// Pages parses the dev server's pages (pages/*.html), each defined under its
// file name without ".html": "error", "listing", "markdown", "dashboard".
func Pages() (*template.Template, error) {
	return template.New("pages").ParseFS(pages, "pages/*.html")
}
