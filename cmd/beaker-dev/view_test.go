package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
	"github.com/beaker-dev/beaker-dev/hyperdrive/names/namestest"
)

// authorSite makes a site folder with a page and a stylesheet and starts
// serve on it in this process, on a loopback swarm port.
func authorSite(t *testing.T) (*serveRun, string) {
	t.Helper()
	home, dir := filepath.Join(t.TempDir(), "author"), filepath.Join(t.TempDir(), "site")
	os.MkdirAll(filepath.Join(dir, "css"), 0o755)
	os.WriteFile(filepath.Join(dir, "index.html"), []byte(testPage(1, "")), 0o644)
	os.WriteFile(filepath.Join(dir, "css", "site.css"), []byte("body { color: rgb(1, 2, 3); }\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "probe.js"), []byte(probeJS), 0o644)
	os.WriteFile(filepath.Join(dir, "dat.json"), []byte(`{"title": "Remote Test"}`), 0o644)
	r := startServe(t, home, dir, 0, true)
	if r.swarm == "" || r.dat == "" {
		t.Fatalf("serve joined no swarm: %s %s", r.swarm, r.dat)
	}
	return r, home
}

// startView runs view of url in this process with its own data dir; peers
// are --peer addresses (none: offline).
func startView(t testing.TB, home, url string, peers ...string) *serveRun {
	t.Helper()
	n := networkOptions{listen: "127.0.0.1:0", noDHT: true, noMDNS: true}
	if len(peers) > 0 {
		n.peers = *cli.NewStringSlice(peers...)
	}
	o := viewOptions{url: url, front: frontOptions{noLAN: true, noMDNS: true}, portSet: true, timeout: 20 * time.Second}
	return startRun(t, home, "", n, func(ctx context.Context, g *globalOptions) error { return runView(ctx, g, o) })
}

func httpStatus(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b := new(strings.Builder)
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, b.String()
}

// TestViewFollowsAuthor: a viewer serves the author's site, and each save
// at the author reaches it as a reload event with the new content served;
// a tag made by `beaker-dev tag` while serve runs opens at the viewer as
// /@TAG/; a version or tag it does not have is a clear 404.
func TestViewFollowsAuthor(t *testing.T) {
	author, authorHome := authorSite(t)
	viewer := startView(t, filepath.Join(t.TempDir(), "viewer"), author.dat, author.swarm)
	if body := httpGet(t, viewer.url); !strings.Contains(body, "rev 1") || !strings.Contains(body, "client.js") {
		t.Fatalf("viewer page: %s", body)
	}
	n := viewer.count()
	author.write("index.html", testPage(2, ""))
	ev, n := viewer.waitEvent("reload", n, nil)
	if paths := ev["paths"].([]any); len(paths) != 1 || paths[0] != "/index.html" {
		t.Fatalf("reload %v", ev)
	}
	if body := httpGet(t, viewer.url); !strings.Contains(body, "rev 2") {
		t.Fatalf("after the save the viewer serves: %s", body)
	}
	viewer.waitEvent("synced", n, func(e map[string]any) bool { return e["version"] == ev["version"] })

	// A tag while serve runs, by another process.
	c := &shell{t: t, home: authorHome, dir: filepath.Dir(author.dir)}
	var tag map[string]any
	c.ok(&tag, "tag", "1.0.0", author.dir)
	author.write("index.html", testPage(3, ""))
	viewer.waitEvent("reload", n, func(e map[string]any) bool { return e["version"].(float64) > ev["version"].(float64) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := httpStatus(t, viewer.url+"@1.0.0/")
		if code == 200 && strings.Contains(body, "rev 2") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/@1.0.0/ at the viewer: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if body := httpGet(t, viewer.url); !strings.Contains(body, "rev 3") {
		t.Fatalf("latest at the viewer: %s", body)
	}
	for _, p := range []string{"@9.9.9/", "+999/"} {
		if code, body := httpStatus(t, viewer.url+p); code != 404 || !strings.Contains(body, "No such version") {
			t.Fatalf("%s: %d %s", p, code, body)
		}
	}
}

// TestViewOffline: a site viewed once is served again with no network at
// all (no peers, no discovery), at the version last synced.
func TestViewOffline(t *testing.T) {
	author, _ := authorSite(t)
	home := filepath.Join(t.TempDir(), "viewer")
	viewer := startView(t, home, author.dat, author.swarm)
	n := viewer.count()
	author.write("index.html", testPage(7, ""))
	viewer.waitEvent("reload", n, nil)
	viewer.waitEvent("synced", n, nil)
	viewer.stop()
	author.stop()

	offline := startView(t, home, author.dat)
	if body := httpGet(t, offline.url); !strings.Contains(body, "rev 7") {
		t.Fatalf("offline viewer: %s", body)
	}
	if code, body := httpStatus(t, offline.url+"css/site.css"); code != 200 || !strings.Contains(body, "rgb(1, 2, 3)") {
		t.Fatalf("offline stylesheet: %d %s", code, body)
	}
	ev, _ := offline.waitEvent("listening", 0, nil)
	if ev["saved"] != false {
		t.Fatalf("a viewed site is cached, not saved: %v", ev)
	}
}

// TestViewErrors: a URL that is neither a key nor a name, and a key nobody
// has (no peers: a clear error, exit status 7).
func TestViewErrors(t *testing.T) {
	c := newCLI(t)
	c.fails(exitInvalid, "dat://", "view", "not a url", "--no-dht", "--no-mdns")
	c.fails(exitNetwork, "no peer with dat://", "view", strings.Repeat("ab", 32), "--no-dht", "--no-mdns", "--timeout", "1s", "--listen", "127.0.0.1:0")
}

// TestGCFreesViewedSites: gc frees a site that was only viewed, keeps one
// that was cloned, and says so.
func TestGCFreesViewedSites(t *testing.T) {
	a, url, _, swarmAddr := newSeededSite(t, "--no-dht", "--no-mdns")
	other, _ := authorSite(t)
	b := newCLI(t)
	b.ok(nil, "clone", url, "copy", "--peer", swarmAddr, "--no-dht", "--no-mdns", "--listen", "127.0.0.1:0")
	v := startView(t, b.home, other.dat, other.swarm)
	v.waitEvent("synced", 0, nil)
	// While the viewer runs, gc leaves its site alone.
	var rep gcResult
	b.ok(&rep, "gc")
	if len(rep.Skipped) != 1 || rep.Skipped[0] != other.dat || len(rep.Removed) != 0 {
		t.Fatalf("gc while viewing: %+v", rep)
	}
	v.stop()
	b.ok(&rep, "gc")
	if len(rep.Removed) != 1 || rep.Removed[0] != other.dat || rep.Freed <= 0 {
		t.Fatalf("gc: %+v", rep)
	}
	var info map[string]any
	b.ok(&info, "info", url)
	if info["url"] != url {
		t.Fatalf("the cloned site went: %v", info)
	}
	if out, _, code := b.run("info", other.dat, "--json"); code != exitNotFound {
		t.Fatalf("the viewed site is still there: %d %s", code, out)
	}
	_ = a
}

// TestFork: forks of a site folder, of a cached URL with no network, and
// of a URL fetched from a peer; each a new key with the same files and a
// dat.json that keeps the source's fields and records forkOf.
func TestFork(t *testing.T) {
	a, url, _, swarmAddr := newSeededSite(t, "--no-dht", "--no-mdns")
	check := func(c *shell, res forkResult, dir string) {
		t.Helper()
		if res.Key == strings.TrimSuffix(strings.TrimPrefix(url, "dat://"), "/") || !strings.HasPrefix(res.ForkOf, strings.TrimSuffix(url, "/")+"+") {
			t.Fatalf("fork %+v of %s", res, url)
		}
		b, err := os.ReadFile(filepath.Join(dir, "dat.json"))
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		var src map[string]any
		sb, _ := os.ReadFile(filepath.Join(a.dir, "site", "dat.json"))
		json.Unmarshal(sb, &src)
		if m["forkOf"] != res.ForkOf || m["title"] != src["title"] || src["title"] == nil {
			t.Fatalf("fork's dat.json %v, source's %v", m, src)
		}
		sameDirs(t, filepath.Join(a.dir, "site", "media"), filepath.Join(dir, "media"))
		var info map[string]any
		c.ok(&info, "info", dir)
		if info["key"] != res.Key {
			t.Fatalf("the fork's folder is not linked to its archive: %v", info)
		}
	}
	var res forkResult
	a.ok(&res, "fork", "site", "mine")
	check(a, res, filepath.Join(a.dir, "mine"))

	b := newCLI(t)
	b.ok(&res, "fork", url, "theirs", "--peer", swarmAddr, "--no-dht", "--no-mdns", "--listen", "127.0.0.1:0")
	check(b, res, filepath.Join(b.dir, "theirs"))
	// Now from the cache, with no network at all.
	b.ok(&res, "fork", url, "again", "--no-dht", "--no-mdns", "--bootstrap", "none", "--listen", "127.0.0.1:0")
	check(b, res, filepath.Join(b.dir, "again"))

	b.fails(exitInvalid, "not empty", "fork", url, "again", "--no-dht", "--no-mdns")
	b.fails(exitNotFound, "no such version", "fork", strings.TrimSuffix(url, "/")+"+999/", "x", "--peer", swarmAddr, "--no-dht", "--no-mdns", "--listen", "127.0.0.1:0")
	b.fails(exitNotFound, "no such tag", "fork", strings.TrimSuffix(url, "/")+"@9.9.9/", "x", "--peer", swarmAddr, "--no-dht", "--no-mdns", "--listen", "127.0.0.1:0")
}

// TestNamesInURLs: commands that take a URL take a DNS name too (here a
// TXT record served by dnsmasq, asked through --resolver).
func TestNamesInURLs(t *testing.T) {
	_, url, _, swarmAddr := newSeededSite(t, "--no-dht", "--no-mdns")
	key := strings.TrimSuffix(strings.TrimPrefix(url, "dat://"), "/")
	dns := namestest.StartDNS(t, namestest.DNSConfig{TTL: 600, TXT: []namestest.TXT{{Name: "blog.test", Strings: []string{"datkey=" + key}}}})
	b := newCLI(t)
	var res cloneResult
	b.ok(&res, "clone", "dat://blog.test/", "copy", "--resolver", dns.Addr, "--peer", swarmAddr, "--no-dht", "--no-mdns", "--listen", "127.0.0.1:0")
	if res.Key != key {
		t.Fatalf("clone of dat://blog.test/ = %+v, want key %s", res, key)
	}
	var info map[string]any
	b.ok(&info, "info", "blog.test", "--resolver", dns.Addr)
	if info["key"] != key {
		t.Fatalf("info blog.test = %v", info)
	}
	b.fails(exitNotFound, "no dat key for nope.test", "info", "nope.test", "--resolver", dns.Addr)
	b.fails(exitInvalid, "expected a 64-hex key or a DNS name", "view", "dat://bad_name!/", "--no-dht", "--no-mdns")
}

// partialReplica puts into the store at home a replica of the author's
// archive with every entry and signature but only the chunks of the files
// named: a peer that has part of the site.
func partialReplica(t *testing.T, authorHome string, key hyperdrive.PublicKey, home string, paths ...string) {
	t.Helper()
	as, err := hyperdrive.OpenStore(authorHome)
	if err != nil {
		t.Fatal(err)
	}
	a, err := as.Open(key, hyperdrive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	rs, err := hyperdrive.OpenStore(home)
	if err != nil {
		t.Fatal(err)
	}
	r, err := rs.OpenReplica(key, hyperdrive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w, err := r.BeginSync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var entries [][]byte
	for seq := uint64(0); seq < a.Version(); seq++ {
		b, err := a.EntryBytes(seq)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, b)
	}
	if n, err := w.AppendVerified(entries, a.Versions()); err != nil || n != len(entries) {
		t.Fatalf("append: %d %v", n, err)
	}
	for _, p := range paths {
		e, err := a.Latest().Entry(p)
		if err != nil {
			t.Fatal(err)
		}
		if e.Content.Level != 0 {
			t.Fatalf("%s has index blocks: keep it small", p)
		}
		for _, ref := range e.Content.Refs {
			data, err := a.Chunk(ref.Hash)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.PutChunk(ref.Hash, data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := rs.SetSaved(key, true); err != nil {
		t.Fatal(err)
	}
}

// TestViewLosesItsOnlyPeer: a viewer whose only peer has part of the site
// serves that part; when the peer goes away mid-sync, the viewer says so,
// keeps what arrived and goes on serving it, and a file it never got is a
// clear 504, not a hang.
func TestViewLosesItsOnlyPeer(t *testing.T) {
	author, authorHome := authorSite(t)
	author.write("big.bin", strings.Repeat("0123456789abcdef", 1<<16)) // 1 MiB, 64+ chunks
	author.waitEvent("published", 0, func(e map[string]any) bool {
		for _, p := range e["changed"].([]any) {
			if p == "/big.bin" {
				return true
			}
		}
		return false
	})
	key, err := hyperdrive.ParsePublicKey(strings.TrimSuffix(strings.TrimPrefix(author.dat, "dat://"), "/"))
	if err != nil {
		t.Fatal(err)
	}
	author.stop()
	peerHome := filepath.Join(t.TempDir(), "peer")
	partialReplica(t, authorHome, key, peerHome, "/index.html", "/probe.js", "/css/site.css", "/dat.json")
	peer := newCLIHome(t, peerHome).start("seed", author.dat, "--listen", "127.0.0.1:0", "--no-dht", "--no-mdns")
	swarmAddr := peer.wait("seeding")["swarm"].(string)

	viewer := startView(t, filepath.Join(t.TempDir(), "viewer"), author.dat, swarmAddr)
	if body := httpGet(t, viewer.url); !strings.Contains(body, "rev 1") {
		t.Fatalf("the part the peer has: %s", body)
	}
	viewer.waitEvent("peers", 0, func(e map[string]any) bool { return e["peers"].(float64) > 0 })
	peer.stop()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(viewer.stderr.String(), "lost the last peer") {
		if time.Now().After(deadline) {
			t.Fatalf("the viewer did not say it lost its peer: %s", viewer.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if msg := viewer.stderr.String(); !strings.Contains(msg, "what arrived is kept") {
		t.Fatalf("warning: %s", msg)
	}
	if body := httpGet(t, viewer.url); !strings.Contains(body, "rev 1") {
		t.Fatalf("after the peer left: %s", body)
	}
	start := time.Now()
	code, body := httpStatus(t, viewer.url+"big.bin")
	if code != 504 || !strings.Contains(body, "Not downloaded yet") || time.Since(start) > 10*time.Second {
		t.Fatalf("a file nobody sent: %d after %v: %.200s", code, time.Since(start), body)
	}
}

func newCLIHome(t *testing.T, home string) *shell {
	return &shell{t: t, home: home, dir: t.TempDir()}
}
