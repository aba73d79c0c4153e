package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// serveRun is `beaker-dev serve --json` running in this process.
type serveRun struct {
	t      testing.TB
	dir    string
	url    string
	swarm  string // the swarm address, when it joined one
	dat    string // the site's dat:// URL
	lan    []string
	port   int
	cancel context.CancelFunc
	done   chan error
	stderr *lockedBuffer

	mu     sync.Mutex
	events []map[string]any
	notify chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startServe runs serve on dir with a data dir of its own; port 0 picks one.
func startServe(t testing.TB, home, dir string, port int, noLAN bool) *serveRun {
	return startServeWith(t, home, serveOptions{dir: dir, port: port, noLAN: noLAN, noMDNS: true})
}

// startServeWith runs serve with the given options.
func startServeWith(t testing.TB, home string, o serveOptions) *serveRun {
	t.Helper()
	return startRun(t, home, o.dir, testNet(), func(ctx context.Context, g *globalOptions) error { return runServe(ctx, g, o) })
}

// startRun runs a long-running command (serve, view) in this process with
// --json output, and returns once it prints its listening event.
func startRun(t testing.TB, home, dir string, net networkOptions, run func(context.Context, *globalOptions) error) *serveRun {
	t.Helper()
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	r := &serveRun{t: t, dir: dir, cancel: cancel, done: make(chan error, 1), stderr: &lockedBuffer{}, notify: make(chan struct{}, 1)}
	g := &globalOptions{dataDir: home, json: true, stdout: pw, stderr: r.stderr, net: net}
	go func() {
		err := run(ctx, g)
		pw.Close()
		r.done <- err
	}()
	listening := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) != nil {
				continue
			}
			if ev["event"] == "listening" {
				listening <- ev
			}
			r.mu.Lock()
			r.events = append(r.events, ev)
			r.mu.Unlock()
			select {
			case r.notify <- struct{}{}:
			default:
			}
		}
	}()
	select {
	case ev := <-listening:
		r.url = ev["url"].(string)
		r.swarm, _ = ev["swarm"].(string)
		r.dat, _ = ev["dat"].(string)
		for _, l := range ev["lan"].([]any) {
			r.lan = append(r.lan, l.(string))
		}
		u := strings.TrimSuffix(r.url, "/")
		r.port = atoiTest(u[strings.LastIndex(u, ":")+1:])
	case err := <-r.done:
		t.Fatalf("it stopped: %v\n%s", err, r.stderr)
	case <-time.After(20 * time.Second):
		t.Fatalf("it did not start:\n%s", r.stderr)
	}
	t.Cleanup(r.stop)
	return r
}

// testNet keeps in-process runs off the public DHT and the LAN: a free
// swarm port on loopback, no DHT, no mDNS.
func testNet() networkOptions {
	return networkOptions{listen: "127.0.0.1:0", noDHT: true, noMDNS: true}
}

func atoiTest(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// stop stops serve and waits for it.
func (r *serveRun) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			r.t.Errorf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		r.t.Error("serve did not stop")
	}
}

// waitEvent waits for an event matching match that arrived after skip
// events, and returns it with the new count.
func (r *serveRun) waitEvent(kind string, after int, match func(map[string]any) bool) (map[string]any, int) {
	r.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		for i := after; i < len(r.events); i++ {
			if r.events[i]["event"] == kind && (match == nil || match(r.events[i])) {
				ev := r.events[i]
				r.mu.Unlock()
				return ev, i + 1
			}
		}
		r.mu.Unlock()
		select {
		case <-r.notify:
		case <-deadline:
			r.t.Fatalf("no %s event; stderr:\n%s", kind, r.stderr)
		}
	}
}

func (r *serveRun) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

func (r *serveRun) write(name, content string) {
	r.t.Helper()
	p := filepath.Join(r.dir, filepath.FromSlash(name))
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestServePublishesSaves runs serve without a browser: a save publishes a
// version and announces a reload; a save that changes nothing does neither.
func TestServePublishesSaves(t *testing.T) {
	home, dir := filepath.Join(t.TempDir(), "home"), t.TempDir()
	os.WriteFile(filepath.Join(dir, "index.html"), []byte("<!doctype html><head></head>one"), 0o644)
	r := startServe(t, home, dir, 0, true)
	if body := httpGet(t, r.url); !strings.Contains(body, "one") || !strings.Contains(body, "client.js") {
		t.Fatalf("page: %s", body)
	}
	n := r.count()
	r.write("index.html", "<!doctype html><head></head>two")
	ev, n := r.waitEvent("published", n, nil)
	if ch := ev["changed"].([]any); len(ch) != 1 || ch[0] != "/index.html" {
		t.Fatalf("published %v", ev)
	}
	r.waitEvent("reload", n-1, nil)
	if body := httpGet(t, r.url); !strings.Contains(body, "two") {
		t.Fatalf("page after save: %s", body)
	}
	// The same bytes again: no version, no reload.
	n = r.count()
	r.write("index.html", "<!doctype html><head></head>two")
	time.Sleep(300 * time.Millisecond)
	r.mu.Lock()
	for _, e := range r.events[n:] {
		if e["event"] == "published" || e["event"] == "reload" {
			t.Errorf("a save that changed nothing gave %v", e)
		}
	}
	r.mu.Unlock()
	// beaker-dev tag while serve runs: the version opens at /@TAG/.
	c := &shell{t: t, home: home, dir: t.TempDir()}
	var tag tagResult
	c.ok(&tag, "tag", "1.0.0", dir)
	if body := httpGet(t, r.url+"@1.0.0/"); !strings.Contains(body, "two") {
		t.Fatalf("/@1.0.0/: %s", body)
	}
	// And serve goes on publishing after it.
	n = r.count()
	r.write("index.html", "<!doctype html><head></head>three")
	ev, _ = r.waitEvent("published", n, nil)
	if v := uint64(ev["version"].(float64)); v <= tag.ArchiveVersion {
		t.Fatalf("version %d after the tag at %d", v, tag.ArchiveVersion)
	}
}

// TestServeNoPublish previews without touching the archive.
func TestServeNoPublish(t *testing.T) {
	home, dir := filepath.Join(t.TempDir(), "home"), t.TempDir()
	os.WriteFile(filepath.Join(dir, "index.html"), []byte("<!doctype html><head></head>one"), 0o644)
	c := &shell{t: t, home: home, dir: t.TempDir()}
	var ini initResult
	c.ok(&ini, "init", dir)
	r := startServeWith(t, home, serveOptions{dir: dir, noLAN: true, noMDNS: true, noPublish: true})
	n := r.count()
	r.write("index.html", "<!doctype html><head></head>two")
	r.waitEvent("reload", n, nil)
	if body := httpGet(t, r.url); !strings.Contains(body, "two") {
		t.Fatalf("preview: %s", body)
	}
	r.stop()
	r.mu.Lock()
	for _, e := range r.events {
		if e["event"] == "published" {
			t.Errorf("--no-publish published: %v", e)
		}
	}
	r.mu.Unlock()
	var info infoResult
	c.ok(&info, "info", dir)
	if info.Version != ini.Version {
		t.Fatalf("version moved from %d to %d with --no-publish", ini.Version, info.Version)
	}
}

func TestServeFolderWithoutArchive(t *testing.T) {
	home, dir := filepath.Join(t.TempDir(), "home"), t.TempDir()
	os.WriteFile(filepath.Join(dir, "index.html"), []byte("<!doctype html><head></head>new site"), 0o644)
	r := startServe(t, home, dir, 0, true)
	if _, err := os.Stat(filepath.Join(dir, ".dat", "archive.json")); err != nil {
		t.Fatal("serve did not link the folder to a new archive")
	}
	if body := httpGet(t, r.url); !strings.Contains(body, "new site") {
		t.Fatalf("page: %s", body)
	}
}

func TestServePortTaken(t *testing.T) {
	home, dir := filepath.Join(t.TempDir(), "home"), t.TempDir()
	r := startServe(t, home, dir, 0, true)
	err := runServe(context.Background(), &globalOptions{dataDir: home, stdout: io.Discard, stderr: io.Discard, net: testNet()}, serveOptions{dir: dir, port: r.port, noLAN: true})
	code, msg := exitCode(err)
	if code != exitInvalid || !strings.Contains(msg, "--port") {
		t.Fatalf("second serve on port %d: %d %q", r.port, code, msg)
	}
}

// TestServeHidesWhatIsNotPublished checks, over HTTP, that serve never
// serves secrets, VCS or archive metadata, ignored files or files reached
// through symlinks out of the site, and that `publish` works while it runs.
func TestServeHidesWhatIsNotPublished(t *testing.T) {
	home, dir := filepath.Join(t.TempDir(), "home"), t.TempDir()
	outside := filepath.Join(t.TempDir(), "secret.txt")
	os.WriteFile(outside, []byte("OUTSIDE-SECRET"), 0o600)
	for name, content := range map[string]string{
		"index.html":        "<!doctype html><head></head>home",
		".env":              "API_KEY=ENV-SECRET",
		".git/config":       "GIT-SECRET",
		"node_modules/m.js": "MODULE",
		"drafts/d.html":     "DRAFT",
		".datignore":        "drafts/\n",
	} {
		p := filepath.Join(dir, filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(content), 0o644)
	}
	os.Symlink(outside, filepath.Join(dir, "leak.txt"))
	os.Symlink(filepath.Dir(outside), filepath.Join(dir, "leakdir"))
	r := startServe(t, home, dir, 0, true)
	for _, p := range []string{".env", ".git/config", "node_modules/m.js", "drafts/d.html", "leak.txt", "leakdir/secret.txt",
		".dat/archive.json", ".datignore", "%2e%2e/%2e%2e/etc/passwd", "..%2f..%2fetc%2fpasswd"} {
		resp, err := http.Get(r.url + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 || strings.Contains(string(b), "SECRET") || strings.Contains(string(b), "root:") || strings.Contains(string(b), "DRAFT") {
			t.Errorf("/%s: status %d, %q", p, resp.StatusCode, b)
		}
	}
	// The keys live in the data dir, not in the site.
	keys, _ := filepath.Glob(filepath.Join(home, "keys", "*.key"))
	if len(keys) != 1 {
		t.Fatalf("keys: %v", keys)
	}
	if st, _ := os.Stat(keys[0]); st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", st.Mode().Perm())
	}
	c := &shell{t: t, home: home, dir: t.TempDir()}
	var pub publishResult
	c.ok(&pub, "publish", dir)
	if pub.Committed {
		t.Fatalf("publish while serve runs found changes serve had not published: %v", pub.Changed)
	}
}
