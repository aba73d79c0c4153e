package devserver

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
	"github.com/beaker-dev/beaker-dev/inject"
)

// maxInjectSize: larger HTML documents are served as they are.
const maxInjectSize = 16 << 20

// internalPrefix is where the dev server's own endpoints live. It starts
// with a dot, so no site file can be served there (dotfiles never are).
const internalPrefix = "/.beaker-dev/"

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+internalPrefix+"client.js", s.serveClient)
	mux.HandleFunc("GET "+internalPrefix+"ping", s.servePing)
	mux.HandleFunc("GET "+internalPrefix+"ws", s.hub.serveWS)
	mux.HandleFunc("POST "+internalPrefix+"csp-report", s.serveCSPReport)
	mux.HandleFunc("GET "+internalPrefix+"api/status", s.serveStatus)
	mux.HandleFunc("GET "+internalPrefix+"{$}", s.serveDashboard)
	mux.HandleFunc(internalPrefix, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not found", http.StatusNotFound)
	})
	mux.HandleFunc("/", s.serveSite)
	return s.guard(mux)
}

func (s *Server) serveClient(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("ETag", clientETag)
	http.ServeContent(w, r, "client.js", time.Time{}, bytes.NewReader(inject.ClientJS))
}

// servePing tells a page whether the server that served it still runs: the
// run id is public (unlike the token), so a page whose socket is refused
// after a restart knows to reload and get the new token.
func (s *Server) servePing(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	fmt.Fprintf(w, `{"run":%q}`, s.run)
}

var clientETag = func() string {
	h := sha256.Sum256(inject.ClientJS)
	return `"` + hex.EncodeToString(h[:8]) + `"`
}()

// manifests caches parsed dat.json files by version.
type manifests struct {
	mu sync.Mutex
	m  map[string]hyperdrive.SiteManifest
}

func (c *manifests) get(f Files) hyperdrive.SiteManifest {
	c.mu.Lock()
	m, ok := c.m[f.Version]
	c.mu.Unlock()
	if ok {
		return m
	}
	b, err := fs.ReadFile(f.FS, strings.TrimPrefix(hyperdrive.SiteManifestFile, "/"))
	if err == nil {
		m, _ = hyperdrive.ParseSiteManifest(b) // a broken dat.json serves as if absent
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) > 64 {
		c.m = map[string]hyperdrive.SiteManifest{}
	}
	c.m[f.Version] = m
	c.mu.Unlock()
	return m
}

// serveSite serves site content: a version prefix (/+N/, /@TAG/) picks an
// archive version, then Beaker's resolution rules find the file.
func (s *Server) serveSite(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "the preview is read-only: only GET and HEAD", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	if strings.ContainsAny(p, "\\\x00") {
		http.Error(w, "bad path", http.StatusBadRequest)
		return
	}
	files, prefix, rest, err := s.pick(p)
	if err != nil {
		s.serveError(w, r, files, http.StatusNotFound, "No such version", err.Error(), "")
		return
	}
	// Inside a version, links are absolute to the site root: keep a page's
	// subresources and navigations in the version it shows, as Beaker does
	// with dat://KEY+N/ origins.
	if prefix == "" {
		if vp := versionFromReferer(r); vp != "" {
			http.Redirect(w, r, vp+withQuery(p, r.URL.RawQuery), http.StatusFound)
			return
		}
	}
	m := s.manifests.get(files)
	res := resolve(files.FS, m, rest)
	switch res.kind {
	case kindRedirect:
		http.Redirect(w, r, prefix+withQuery(res.target, r.URL.RawQuery), http.StatusFound)
	case kindFile, kindFallback:
		s.serveFile(w, r, files, m, res, prefix)
	case kindListing:
		s.serveListing(w, r, files, m, res, prefix, rest)
	case kindMarkdown:
		s.serveMarkdown(w, r, files, m, res)
	default:
		s.serveError(w, r, files, http.StatusNotFound, "Not found", rest+" is not part of this version of the site.", fileFor(m, rest))
	}
}

func withQuery(p, q string) string {
	if q == "" {
		return p
	}
	return p + "?" + q
}

// pick splits a version prefix off the path.
func (s *Server) pick(p string) (Files, string, string, error) {
	first, rest, _ := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	if len(first) < 2 || (first[0] != '+' && first[0] != '@') {
		return s.opts.Site.Current(), "", p, nil
	}
	files, err := s.opts.Site.Checkout(first)
	if err != nil {
		return s.opts.Site.Current(), "", p, err
	}
	return files, "/" + first, "/" + rest, nil
}

// versionFromReferer returns "/+N" or "/@TAG" when the request comes from a
// page of a version of this site.
func versionFromReferer(r *http.Request) string {
	ref := r.Header.Get("Referer")
	if ref == "" || strings.HasPrefix(r.URL.Path, internalPrefix) {
		return ""
	}
	u, err := url.Parse(ref)
	if err != nil || u.Host != r.Host {
		return ""
	}
	first, _, _ := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	if len(first) >= 2 && (first[0] == '+' || first[0] == '@') {
		return "/" + first
	}
	return ""
}

type resolvedKind int

const (
	kindNotFound resolvedKind = iota
	kindFile
	kindFallback
	kindRedirect
	kindListing
	kindMarkdown
)

type resolved struct {
	kind   resolvedKind
	name   string // fs.FS name of the file or folder
	target string // redirect target
	info   fs.FileInfo
}

// resolve applies Beaker's rules: dat.json's web_root; "/dir/" serves
// dir/index.html, then dir/index.md rendered, then a listing; "/dir" (a
// folder) redirects to "/dir/"; "/page" serves "/page.html" when "/page" does
// not exist; anything else not found serves the fallback_page, if any.
func resolve(fsys fs.FS, m hyperdrive.SiteManifest, urlPath string) resolved {
	clean := path.Clean("/" + urlPath)
	trailing := strings.HasSuffix(urlPath, "/") && clean != "/"
	name := fsName(path.Join(m.WebRoot, clean))
	if name == "" {
		return resolved{kind: kindNotFound}
	}
	if st, err := fs.Stat(fsys, name); err == nil {
		if st.IsDir() {
			if !trailing && clean != "/" {
				return resolved{kind: kindRedirect, target: clean + "/"}
			}
			for _, index := range []string{"index.html", "index.htm"} {
				n := path.Join(name, index)
				if fi, err := fs.Stat(fsys, n); err == nil && !fi.IsDir() {
					return resolved{kind: kindFile, name: n, info: fi}
				}
			}
			n := path.Join(name, "index.md")
			if fi, err := fs.Stat(fsys, n); err == nil && !fi.IsDir() {
				return resolved{kind: kindMarkdown, name: n, info: fi}
			}
			return resolved{kind: kindListing, name: name, info: st}
		}
		if !trailing {
			return resolved{kind: kindFile, name: name, info: st}
		}
	} else if !trailing {
		if fi, err := fs.Stat(fsys, name+".html"); err == nil && !fi.IsDir() {
			return resolved{kind: kindFile, name: name + ".html", info: fi}
		}
	}
	if m.FallbackPage != "" {
		n := fsName(m.FallbackPage)
		if fi, err := fs.Stat(fsys, n); err == nil && !fi.IsDir() {
			return resolved{kind: kindFallback, name: n, info: fi}
		}
	}
	return resolved{kind: kindNotFound}
}

// fsName turns a clean absolute path into an io/fs name ("" if invalid).
func fsName(p string) string {
	p = strings.TrimPrefix(path.Clean("/"+p), "/")
	if p == "" {
		return "."
	}
	if !fs.ValidPath(p) {
		return ""
	}
	return p
}

// fileFor is the archive path a missing page would be served from, so the
// 404 page reloads when that file appears.
func fileFor(m hyperdrive.SiteManifest, urlPath string) string {
	p := path.Join("/", m.WebRoot, path.Clean("/"+urlPath))
	if strings.HasSuffix(urlPath, "/") {
		return path.Join(p, "index.html")
	}
	if path.Ext(p) == "" {
		return p + ".html"
	}
	return p
}

func contentType(name string) string {
	switch ext := strings.ToLower(path.Ext(name)); ext {
	case ".html", ".htm":
		return "text/html; charset=utf-8"
	case ".js", ".mjs":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".json", ".map":
		return "application/json"
	case ".md", ".markdown":
		return "text/markdown; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	case ".wasm":
		return "application/wasm"
	case ".webmanifest":
		return "application/manifest+json"
	case ".txt":
		return "text/plain; charset=utf-8"
	case ".xml":
		return "application/xml"
	default:
		return mime.TypeByExtension(ext) // "" lets ServeContent sniff
	}
}

// wantsDocument reports whether the response becomes a page in a browsing
// context (so it gets the client), rather than data fetched by a script.
func wantsDocument(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Dest") {
	case "", "document", "iframe", "frame", "embed", "object":
		return true
	}
	return false
}

func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, files Files, m hyperdrive.SiteManifest, res resolved, prefix string) {
	f, err := files.FS.Open(res.name)
	if errors.Is(err, ErrUnavailable) {
		s.serveError(w, r, files, http.StatusGatewayTimeout, "Not downloaded yet", r.URL.Path+" is part of the site, but no peer has sent it yet: "+err.Error(), "")
		return
	}
	if err != nil {
		s.serveError(w, r, files, http.StatusNotFound, "Not found", r.URL.Path+" is not part of this version of the site.", "")
		return
	}
	defer f.Close()
	ctype := contentType(res.name)
	h := w.Header()
	if ctype != "" {
		h.Set("Content-Type", ctype)
	}
	modtime := res.info.ModTime()
	if strings.HasPrefix(ctype, "text/html") && res.info.Size() <= maxInjectSize {
		b, err := io.ReadAll(io.LimitReader(f, maxInjectSize+1))
		if err != nil {
			s.serveError(w, r, files, http.StatusInternalServerError, "Cannot read the page", err.Error(), "")
			return
		}
		if wantsDocument(r) {
			b = s.injectClient(b, files, "/"+res.name, h)
			s.setCSP(h, m)
		}
		h.Set("Cache-Control", "no-store")
		sum := sha256.Sum256(b)
		h.Set("ETag", `W/"`+hex.EncodeToString(sum[:12])+`"`)
		if res.kind == kindFallback {
			h.Set("X-Beaker-Dev-Fallback", "1")
		}
		http.ServeContent(w, r, res.name, modtime, bytes.NewReader(b))
		return
	}
	h.Set("ETag", fileETag(files, res.info))
	if files.Immutable {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	if rs, ok := f.(io.ReadSeeker); ok {
		http.ServeContent(w, r, res.name, modtime, rs)
		return
	}
	b, err := io.ReadAll(f)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	http.ServeContent(w, r, res.name, modtime, bytes.NewReader(b))
}

// fileETag is a strong validator: size and mtime (and the version for an
// archive version, whose files never change).
func fileETag(files Files, fi fs.FileInfo) string {
	v := ""
	if files.Immutable {
		v = files.Version + "-"
	}
	return `"` + v + strconv.FormatInt(fi.Size(), 36) + "-" + strconv.FormatInt(fi.ModTime().UnixNano(), 36) + `"`
}

// injectClient adds the live-reload client to a page served from file.
func (s *Server) injectClient(b []byte, files Files, file string, h http.Header) []byte {
	data := map[string]string{"token": s.token, "run": s.run, "version": files.Version, "file": file}
	if files.Immutable {
		data["fixed"] = "1"
	}
	out, _ := inject.Into(b, inject.Script{Src: internalPrefix + "client.js", Data: data, Nonce: headerNonce(h.Get("Content-Security-Policy"))})
	return out
}

// headerNonce returns the first 'nonce-…' source of a CSP header.
func headerNonce(csp string) string {
	i := strings.Index(csp, "'nonce-")
	if i < 0 {
		return ""
	}
	rest := csp[i+len("'nonce-"):]
	if j := strings.IndexByte(rest, '\''); j > 0 {
		return rest[:j]
	}
	return ""
}

// serveError renders an error page (with the client, so it reloads once the
// missing file appears).
func (s *Server) serveError(w http.ResponseWriter, r *http.Request, files Files, status int, title, detail, file string) {
	page, err := renderPage("error", pageData{Title: title, Detail: detail, Status: status})
	if err != nil {
		http.Error(w, title, status)
		return
	}
	if file == "" {
		file = r.URL.Path
	}
	if wantsDocument(r) {
		page = s.injectClient(page, files, file, w.Header())
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write(page)
	}
}

func (s *Server) serveListing(w http.ResponseWriter, r *http.Request, files Files, m hyperdrive.SiteManifest, res resolved, prefix, urlPath string) {
	ents, err := fs.ReadDir(files.FS, res.name)
	if err != nil {
		s.serveError(w, r, files, http.StatusNotFound, "Not found", err.Error(), "")
		return
	}
	d := pageData{Title: "Index of " + urlPath, Path: urlPath}
	if urlPath != "/" {
		d.Parent = prefix + path.Dir(strings.TrimSuffix(urlPath, "/")) + "/"
		if d.Parent == prefix+"//" {
			d.Parent = prefix + "/"
		}
	}
	for _, e := range ents {
		item := listItem{Name: e.Name(), Href: prefix + path.Join(urlPath, url.PathEscape(e.Name()))}
		if e.IsDir() {
			item.Name += "/"
			item.Href += "/"
		} else if fi, err := e.Info(); err == nil {
			item.Size = humanSize(fi.Size())
		}
		d.Items = append(d.Items, item)
	}
	page, err := renderPage("listing", d)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	if wantsDocument(r) {
		page = s.injectClient(page, files, path.Join("/", res.name)+"/", h)
		s.setCSP(h, m)
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	http.ServeContent(w, r, "index.html", time.Time{}, bytes.NewReader(page))
}

func (s *Server) serveMarkdown(w http.ResponseWriter, r *http.Request, files Files, m hyperdrive.SiteManifest, res resolved) {
	src, err := fs.ReadFile(files.FS, res.name)
	if err != nil {
		s.serveError(w, r, files, http.StatusNotFound, "Not found", err.Error(), "")
		return
	}
	page, err := renderMarkdown(src)
	if err != nil {
		s.serveError(w, r, files, http.StatusInternalServerError, "Cannot render "+res.name, err.Error(), "/"+res.name)
		return
	}
	h := w.Header()
	if wantsDocument(r) {
		page = s.injectClient(page, files, "/"+res.name, h)
		s.setCSP(h, m)
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	http.ServeContent(w, r, "index.html", res.info.ModTime(), bytes.NewReader(page))
}

func humanSize(n int64) string {
	switch {
	case n < 1024:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/1024)
	default:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
}

var errNoVersion = errors.New("no such version")
