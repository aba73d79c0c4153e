package devserver

import (
	"bytes"
	"html/template"
	"sync"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/ast"
	"github.com/yuin/goldmark/extension"
	"github.com/yuin/goldmark/text"

	"github.com/beaker-dev/beaker-dev/templates"
)

// pageData fills the templates of the templates package's pages.
type pageData struct {
	Title  string
	Detail string
	Status int
	Path   string
	Parent string
	Items  []listItem
	Body   template.HTML
}

type listItem struct {
	Name, Href, Size string
}

var (
	pagesOnce sync.Once
	pagesTmpl *template.Template
	pagesErr  error
)

func renderPage(name string, data any) ([]byte, error) {
	pagesOnce.Do(func() { pagesTmpl, pagesErr = templates.Pages() })
	if pagesErr != nil {
		return nil, pagesErr
	}
	var b bytes.Buffer
	if err := pagesTmpl.ExecuteTemplate(&b, name, data); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// markdown renders CommonMark with GitHub's tables, strikethrough, task
// lists and autolinks. Raw HTML in the source is escaped (goldmark's
// default), so an index.md cannot smuggle script into the page.
var markdown = goldmark.New(goldmark.WithExtensions(extension.GFM))

// renderMarkdown turns an index.md into a page titled by its first heading.
func renderMarkdown(src []byte) ([]byte, error) {
	doc := markdown.Parser().Parse(text.NewReader(src))
	title := "Index"
	ast.Walk(doc, func(n ast.Node, entering bool) (ast.WalkStatus, error) {
		if h, ok := n.(*ast.Heading); ok && entering {
			var b bytes.Buffer
			for c := h.FirstChild(); c != nil; c = c.NextSibling() {
				if t, ok := c.(*ast.Text); ok {
					b.Write(t.Segment.Value(src))
				}
			}
			if b.Len() > 0 {
				title = b.String()
			}
			return ast.WalkStop, nil
		}
		return ast.WalkContinue, nil
	})
	var body bytes.Buffer
	if err := markdown.Renderer().Render(&body, src, doc); err != nil {
		return nil, err
	}
	return renderPage("markdown", pageData{Title: title, Body: template.HTML(body.String())})
}
