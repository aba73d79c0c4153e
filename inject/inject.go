// Package inject puts the live-reload client into HTML documents. It is a
// pure transform over bytes, with no I/O and no knowledge of the rest of
// beaker-dev, plus the client script itself (client.js).
//
// The client is an external, same-origin script, so it runs under a
// Content-Security-Policy with script-src 'self' (an inline script would
// not), and it copies the page's CSP nonce when the page uses one. It goes at
// the very start of <head>, before anything that could stop the parser, with
// fallbacks for documents that leave out <head> or <html>. Fragments (HTML
// without <!doctype>, <html>, <head> or <body>, as fetched by htmx or
// Turbo-style navigation) are left untouched.
package inject

import (
	"bytes"
	_ "embed"
	"html"
	"sort"

	xhtml "golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// ClientJS is the live-reload client (client.js).
//
//go:embed client.js
var ClientJS []byte

// Script describes the tag to insert.
type Script struct {
	Src   string            // URL of the client script (same origin)
	Data  map[string]string // data-* attributes, keys without "data-"
	Nonce string            // CSP nonce; empty means copy the document's own, if any
}

// Tag renders the script element.
func (s Script) Tag(nonce string) []byte {
	var b bytes.Buffer
	b.WriteString(`<script src="`)
	b.WriteString(html.EscapeString(s.Src))
	b.WriteByte('"')
	keys := make([]string, 0, len(s.Data))
	for k := range s.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteString(` data-`)
		b.WriteString(html.EscapeString(k))
		b.WriteString(`="`)
		b.WriteString(html.EscapeString(s.Data[k]))
		b.WriteByte('"')
	}
	if nonce != "" {
		b.WriteString(` nonce="`)
		b.WriteString(html.EscapeString(nonce))
		b.WriteByte('"')
	}
	b.WriteString(` defer></script>`)
	return b.Bytes()
}

// Into returns doc with the script inserted, and whether it was inserted.
// The tag goes right after the <head> start tag; without one, right after
// <html>; without that, after the doctype; a document that starts straight
// with <body> gets it before <body>. Anything else is a fragment and comes
// back unchanged. doc is not modified.
func Into(doc []byte, s Script) ([]byte, bool) {
	at, ok := position(doc)
	if !ok {
		return doc, false
	}
	nonce := s.Nonce
	if nonce == "" {
		nonce = Nonce(doc)
	}
	tag := s.Tag(nonce)
	out := make([]byte, 0, len(doc)+len(tag))
	out = append(out, doc[:at]...)
	out = append(out, tag...)
	return append(out, doc[at:]...), true
}

// position finds the insertion offset by tokenizing the start of the
// document: comments, the doctype and whitespace are skipped, and the first
// real tag decides.
func position(doc []byte) (int, bool) {
	off := 0
	if bytes.HasPrefix(doc, []byte("\xef\xbb\xbf")) {
		off = 3 // a UTF-8 byte order mark
	}
	z := xhtml.NewTokenizer(bytes.NewReader(doc[off:]))
	afterDoctype, afterHTML := -1, -1
	for {
		tt := z.Next()
		raw := len(z.Raw())
		switch tt {
		case xhtml.ErrorToken:
			return fallback(afterDoctype, afterHTML)
		case xhtml.CommentToken:
		case xhtml.DoctypeToken:
			afterDoctype = off + raw
		case xhtml.TextToken:
			if len(bytes.TrimSpace(z.Raw())) != 0 {
				// Text before any element: a fragment unless a doctype
				// or <html> said otherwise.
				if at, ok := fallback(afterDoctype, afterHTML); ok {
					return at, true
				}
				return 0, false
			}
		case xhtml.StartTagToken, xhtml.SelfClosingTagToken:
			name, _ := z.TagName()
			switch atom.Lookup(name) {
			case atom.Html:
				afterHTML = off + raw
			case atom.Head:
				return off + raw, true
			case atom.Body:
				if at, ok := fallback(afterDoctype, afterHTML); ok {
					return at, true
				}
				return off, true
			default:
				return fallback(afterDoctype, afterHTML)
			}
		case xhtml.EndTagToken:
			return fallback(afterDoctype, afterHTML)
		}
		off += raw
	}
}

func fallback(afterDoctype, afterHTML int) (int, bool) {
	switch {
	case afterHTML >= 0:
		return afterHTML, true
	case afterDoctype >= 0:
		return afterDoctype, true
	}
	return 0, false
}

// Nonce returns the nonce of the first <script> or <style> in doc that has
// one, or "".
func Nonce(doc []byte) string {
	if !bytes.Contains(doc, []byte("nonce")) {
		return ""
	}
	z := xhtml.NewTokenizer(bytes.NewReader(doc))
	for {
		switch z.Next() {
		case xhtml.ErrorToken:
			return ""
		case xhtml.StartTagToken, xhtml.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			a := atom.Lookup(name)
			if (a != atom.Script && a != atom.Style && a != atom.Link) || !hasAttr {
				continue
			}
			for {
				key, val, more := z.TagAttr()
				if string(key) == "nonce" && len(val) > 0 {
					return string(val)
				}
				if !more {
					break
				}
			}
		}
	}
}
