package devserver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/gorilla/websocket"
)

// testSite serves a folder (os.DirFS) as the current version and fstest
// maps as archive versions.
type testSite struct {
	dir      string
	mu       sync.Mutex
	version  int
	versions map[string]fs.FS
}

func (t *testSite) Current() Files {
	t.mu.Lock()
	defer t.mu.Unlock()
	return Files{FS: os.DirFS(t.dir), Version: fmt.Sprint(t.version)}
}

func (t *testSite) Checkout(spec string) (Files, error) {
	if f, ok := t.versions[spec]; ok {
		return Files{FS: f, Version: strings.TrimLeft(spec, "+@"), Immutable: true}, nil
	}
	return Files{}, fmt.Errorf("%w: %s", ErrVersion, spec)
}

type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) add(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) wait(t *testing.T, match func(Event) bool) Event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		for _, e := range r.events {
			if match(e) {
				r.mu.Unlock()
				return e
			}
		}
		r.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("event not seen")
	return nil
}

func (r *recorder) count(match func(Event) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if match(e) {
			n++
		}
	}
	return n
}

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(name))
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startServer serves a small site and returns the server, its base URL and
// the event recorder.
func startServer(t *testing.T, addr string, files map[string]string) (*Server, *testSite, *recorder) {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		write(t, dir, name, content)
	}
	site := &testSite{dir: dir, version: 1, versions: map[string]fs.FS{
		"+3":     fstest.MapFS{"index.html": {Data: []byte("<!doctype html><head></head>version three")}, "a.css": {Data: []byte("old")}},
		"@1.0.0": fstest.MapFS{"index.html": {Data: []byte("<!doctype html><head></head>tagged")}},
	}}
	rec := &recorder{}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	s, err := Listen(Options{Site: site, Addr: addr, MDNSName: "my-site", Events: rec.add, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s, site, rec
}

func get(t *testing.T, s *Server, path string, header ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", strings.TrimSuffix(s.LocalURL(), "/")+path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1]
		} else {
			req.Header.Set(header[i], header[i+1])
		}
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

var site = map[string]string{
	"dat.json":          `{"title":"Test","fallback_page":"/404.html"}`,
	"index.html":        "<!doctype html><html><head><title>home</title></head><body>home</body></html>",
	"about.html":        "<!doctype html><head></head><body>about</body>",
	"docs/index.md":     "# The Docs\n\nSome *markdown* and <script>alert(1)</script>.\n",
	"files/a.txt":       "aaa",
	"files/b.txt":       "bbb",
	"404.html":          "<!doctype html><head></head><body>custom not found</body>",
	"css/site.css":      "body{color:red}",
	"fragment.html":     "<li>one</li><li>two</li>",
	"app/index.htm":     "<!doctype html><head></head>app",
	"big/data.bin":      strings.Repeat("0123456789", 1000),
	"static/page.html":  "<!doctype html><head></head>static page",
	"static/plain.html": "<p>fragment page</p>",
}

func TestResolution(t *testing.T) {
	s, _, _ := startServer(t, "", site)
	for _, tc := range []struct {
		path   string
		status int
		body   string // a substring of the body, or the redirect target
	}{
		{"/", 200, "<body>home</body>"},
		{"/about", 200, "about"},
		{"/about.html", 200, "about"},
		{"/docs", 302, "/docs/"},
		{"/docs/", 200, "<h1>The Docs</h1>"},
		{"/files/", 200, `<a href="/files/a.txt">a.txt</a>`},
		{"/app/", 200, "app"},
		{"/files/a.txt", 200, "aaa"},
		{"/missing/page", 200, "custom not found"}, // Beaker serves fallback_page
		{"/+3/", 200, "version three"},
		{"/@1.0.0/", 200, "tagged"},
		{"/+99/", 404, "No such version"},
	} {
		resp, body := get(t, s, tc.path)
		if resp.StatusCode != tc.status {
			t.Errorf("%s: status %d, want %d", tc.path, resp.StatusCode, tc.status)
			continue
		}
		if tc.status == 302 {
			if got := resp.Header.Get("Location"); got != tc.body {
				t.Errorf("%s: redirect to %q, want %q", tc.path, got, tc.body)
			}
		} else if !strings.Contains(body, tc.body) {
			t.Errorf("%s: body %q lacks %q", tc.path, body, tc.body)
		}
	}
	// Markdown is rendered without the raw HTML it holds.
	if _, body := get(t, s, "/docs/"); strings.Contains(body, "<script>alert") {
		t.Error("raw HTML in index.md was rendered")
	}
}

func TestWebRootAndNotFound(t *testing.T) {
	s, _, _ := startServer(t, "", map[string]string{
		"dat.json":          `{"web_root":"public"}`,
		"public/index.html": "<!doctype html><head></head>public home",
		"secret.html":       "outside the web root",
	})
	if _, body := get(t, s, "/"); !strings.Contains(body, "public home") {
		t.Fatalf("web_root not applied: %s", body)
	}
	resp, body := get(t, s, "/secret.html")
	if resp.StatusCode != 404 || strings.Contains(body, "outside the web root") {
		t.Fatalf("a file outside web_root: %d %s", resp.StatusCode, body)
	}
	if !strings.Contains(body, `data-file="/public/secret.html"`) {
		t.Fatalf("the 404 page does not carry the client for the missing file: %s", body)
	}
}

func TestInjection(t *testing.T) {
	s, _, _ := startServer(t, "", site)
	resp, body := get(t, s, "/")
	if !strings.Contains(body, `<head><script src="/.beaker-dev/client.js" data-file="/index.html" data-run="`+s.run+`" data-token="`+s.token+`" data-version="1" defer></script><title>`) {
		t.Fatalf("client not injected at the start of <head>: %s", body)
	}
	if resp.ContentLength != int64(len(body)) {
		t.Fatalf("Content-Length %d, body %d", resp.ContentLength, len(body))
	}
	if resp.Header.Get("Cache-Control") != "no-store" || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "report-uri") {
		t.Fatalf("headers: %v", resp.Header)
	}
	// A fetch() of HTML (a partial) is not a document: no script.
	if _, body := get(t, s, "/about.html", "Sec-Fetch-Dest", "empty"); strings.Contains(body, "client.js") {
		t.Fatal("client injected into a fetched partial")
	}
	// A fragment is left alone.
	if _, body := get(t, s, "/fragment.html"); body != site["fragment.html"] {
		t.Fatalf("fragment changed: %q", body)
	}
	// Ranges and validators are over the injected bytes.
	resp, part := get(t, s, "/", "Range", "bytes=0-40")
	if resp.StatusCode != 206 || part != body0(s, t)[:41] {
		t.Fatalf("range: %d %q", resp.StatusCode, part)
	}
	etag := resp.Header.Get("ETag")
	if r2, _ := get(t, s, "/", "If-None-Match", etag); r2.StatusCode != 304 {
		t.Fatalf("If-None-Match: %d", r2.StatusCode)
	}
	// Versions are fixed: their pages do not listen for updates.
	if _, body := get(t, s, "/+3/"); !strings.Contains(body, `data-fixed="1"`) {
		t.Fatal("a version's page is not marked fixed")
	}
}

func body0(s *Server, t *testing.T) string {
	_, b := get(t, s, "/")
	return b
}

func TestStaticHeaders(t *testing.T) {
	s, _, _ := startServer(t, "", site)
	resp, body := get(t, s, "/css/site.css")
	if resp.Header.Get("Content-Type") != "text/css; charset=utf-8" || body != site["css/site.css"] || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("css: %v %q", resp.Header, body)
	}
	if r2, _ := get(t, s, "/css/site.css", "If-None-Match", resp.Header.Get("ETag")); r2.StatusCode != 304 {
		t.Fatalf("revalidation: %d", r2.StatusCode)
	}
	resp, part := get(t, s, "/big/data.bin", "Range", "bytes=9990-9999")
	if resp.StatusCode != 206 || part != "0123456789" {
		t.Fatalf("range: %d %q", resp.StatusCode, part)
	}
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("a CORS header was sent")
	}
	resp, _ = get(t, s, "/+3/a.css")
	if !strings.Contains(resp.Header.Get("Cache-Control"), "immutable") {
		t.Fatalf("a version's file is not immutable: %v", resp.Header)
	}
}

func TestHostAllowlist(t *testing.T) {
	s, _, _ := startServer(t, "", site)
	port := fmt.Sprint(s.Port())
	for host, ok := range map[string]bool{
		"localhost:" + port: true, "127.0.0.1:" + port: true, "[::1]:" + port: true, "app.localhost:" + port: true,
		"my-site.local:" + port: true, "192.168.1.20:" + port: true, "evil.example:" + port: false,
		"localhost.evil.example": false, "my-site.local.evil.example": false,
	} {
		resp, _ := get(t, s, "/", "Host", host)
		if (resp.StatusCode == 200) != ok {
			t.Errorf("Host %q: status %d, want allowed=%v", host, resp.StatusCode, ok)
		}
	}
}

func TestPathEscapes(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "outside.txt"), []byte("SECRET"), 0o644)
	s, _, _ := startServer(t, "", site)
	for _, p := range []string{"/../outside.txt", "/%2e%2e/outside.txt", "/..%2foutside.txt", "/%2e%2e%2foutside.txt",
		"/files/..%2f..%2foutside.txt", "/files%5c..%5c..%5coutside.txt", "/%252e%252e/outside.txt", "/files/%00a.txt"} {
		req, _ := http.NewRequest("GET", strings.TrimSuffix(s.LocalURL(), "/")+"/x", nil)
		req.URL.RawPath, req.URL.Path = p, mustUnescape(p)
		req.URL.Opaque = p
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(b), "SECRET") || resp.StatusCode == 200 && !strings.Contains(string(b), "custom not found") {
			t.Errorf("%s: status %d, body %q", p, resp.StatusCode, b)
		}
	}
}

func mustUnescape(p string) string {
	u, err := url.PathUnescape(p)
	if err != nil {
		return p
	}
	return u
}

func TestLANClientsOnlyRead(t *testing.T) {
	ip := firstLANIP(t)
	s, _, _ := startServer(t, net.JoinHostPort("0.0.0.0", "0"), site)
	base := "http://" + net.JoinHostPort(ip.String(), fmt.Sprint(s.Port()))
	resp, err := http.Post(base+"/.beaker-dev/csp-report", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST from the LAN: %d", resp.StatusCode)
	}
	resp, err = http.Get(base + "/.beaker-dev/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("dashboard from the LAN: %d", resp.StatusCode)
	}
	resp, err = http.Get(base + "/about")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET from the LAN: %d", resp.StatusCode)
	}
}

// firstLANIP returns a non-loopback address of this machine.
func firstLANIP(t *testing.T) net.IP {
	addrs, err := LANAddrs()
	if err == nil {
		for _, a := range addrs {
			if a.IP.To4() != nil {
				return a.IP
			}
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no non-loopback IPv4 address on this machine")
	}
	t.Skip("no non-loopback IPv4 address on this machine: connect a network interface")
	return nil
}

func dialWS(t *testing.T, s *Server, origin, token string) (*websocket.Conn, *http.Response, error) {
	u := "ws://" + s.Addr().String() + "/.beaker-dev/ws?token=" + url.QueryEscape(token)
	h := http.Header{}
	if origin != "" {
		h.Set("Origin", origin)
	}
	return websocket.DefaultDialer.Dial(u, h)
}

func TestWebsocketChecks(t *testing.T) {
	s, _, _ := startServer(t, "", site)
	self := "http://" + s.Addr().String()
	for _, tc := range []struct {
		origin, token string
		ok            bool
	}{
		{self, s.token, true},
		{"http://evil.example", s.token, false},
		{"null", s.token, false},
		{"", s.token, false},
		{self, "wrong", false},
		{self, "", false},
	} {
		c, resp, err := dialWS(t, s, tc.origin, tc.token)
		if (err == nil) != tc.ok {
			status := 0
			if resp != nil {
				status = resp.StatusCode
			}
			t.Errorf("origin %q token %q: err %v (status %d), want ok=%v", tc.origin, tc.token, err, status, tc.ok)
		}
		if c != nil {
			c.Close()
		}
	}
}

func readMsg(t *testing.T, c *websocket.Conn, typ string) map[string]any {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for %s: %v", typ, err)
		}
		var m map[string]any
		json.Unmarshal(b, &m)
		if m["type"] == typ {
			return m
		}
	}
}

func TestHubBroadcastAndPaint(t *testing.T) {
	before := runtime.NumGoroutine()
	s, _, rec := startServer(t, "", site)
	self := "http://" + s.Addr().String()
	var conns []*websocket.Conn
	for i := 0; i < 3; i++ {
		c, _, err := dialWS(t, s, self, s.token)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if w := readMsg(t, c, "welcome"); w["version"] != "1" {
			t.Fatalf("welcome %v", w)
		}
		c.WriteJSON(map[string]any{"type": "hello", "version": "1", "file": "/index.html", "path": "/"})
	}
	for s.Clients() != 3 {
		time.Sleep(time.Millisecond)
	}
	n := s.Broadcast(Update{Version: "2", Paths: []string{"/css/site.css", "/img/a.png"}, SavedAt: time.Now().Add(-10 * time.Millisecond)})
	if n != 3 {
		t.Fatalf("broadcast reached %d clients", n)
	}
	for _, c := range conns {
		u := readMsg(t, c, "update")
		changes := fmt.Sprint(u["changes"])
		if u["version"] != "2" || changes != "[map[kind:css path:/css/site.css] map[kind:image path:/img/a.png]]" {
			t.Fatalf("update %v", u)
		}
		c.WriteJSON(map[string]any{"type": "painted", "id": u["id"], "ms": 5})
	}
	e := rec.wait(t, func(e Event) bool { _, ok := e.(PaintEvent); return ok }).(PaintEvent)
	if !e.Swap || e.SaveToPaint < 15*time.Millisecond || e.SaveToPaint > 5*time.Second || !e.Local {
		t.Fatalf("paint event %+v", e)
	}
	// A violation is reported once however often it happens.
	for i := 0; i < 3; i++ {
		conns[0].WriteJSON(map[string]any{"type": "violation", "directive": "script-src-elem", "blocked": "http://cdn.example/x.js", "page": "/"})
	}
	rec.wait(t, func(e Event) bool { v, ok := e.(ViolationEvent); return ok && strings.Contains(v.Advice, "plain http") })
	time.Sleep(50 * time.Millisecond)
	if n := rec.count(func(e Event) bool { _, ok := e.(ViolationEvent); return ok }); n != 1 {
		t.Fatalf("%d violation events for one violation", n)
	}
	// Shutdown closes every socket and leaves no goroutine behind.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				break
			}
		}
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > before+2 {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after shutdown, %d before:\n%s", g, before, buf[:runtime.Stack(buf, true)])
	}
}

func TestCSPReportEndpoint(t *testing.T) {
	s, _, rec := startServer(t, "", site)
	body := `{"csp-report":{"document-uri":"http://localhost/x.html","effective-directive":"img-src","blocked-uri":"http://tracker.example/p.gif"}}`
	resp, err := http.Post(strings.TrimSuffix(s.LocalURL(), "/")+"/.beaker-dev/csp-report", "application/csp-report", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	v := rec.wait(t, func(e Event) bool { _, ok := e.(ViolationEvent); return ok }).(ViolationEvent)
	if v.Directive != "img-src" || v.Page != "/x.html" || !strings.Contains(v.Advice, "this image") {
		t.Fatalf("violation %+v", v)
	}
}

func TestDatJSONPolicy(t *testing.T) {
	s, _, _ := startServer(t, "", map[string]string{
		"dat.json":   `{"content_security_policy":"script-src 'self'"}`,
		"index.html": "<!doctype html><head></head>x",
	})
	resp, _ := get(t, s, "/")
	if got := resp.Header.Get("Content-Security-Policy"); got != "script-src 'self'; report-uri /.beaker-dev/csp-report" {
		t.Fatalf("CSP %q", got)
	}
}

func TestVersionedPagesKeepTheirVersion(t *testing.T) {
	s, _, _ := startServer(t, "", site)
	resp, _ := get(t, s, "/a.css", "Referer", s.LocalURL()+"+3/index.html", "Host", s.Addr().String())
	if resp.StatusCode != 302 || resp.Header.Get("Location") != "/+3/a.css" {
		t.Fatalf("subresource of a version: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestPortInUse(t *testing.T) {
	s, _, _ := startServer(t, "", site)
	_, err := Listen(Options{Site: &testSite{dir: t.TempDir()}, Addr: s.Addr().String()})
	if err == nil || !strings.Contains(err.Error(), "--port") {
		t.Fatalf("second listen on a taken port: %v", err)
	}
}
