package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestBrowserRemoteViewer is the design's promise end to end: an author
// (serve) and a viewer (view), two data directories that find each other
// through a local DHT, a page open at the viewer in headless Chromium.
// A save at the author reloads it; a stylesheet save swaps in place with the
// page's state kept; the author hears the viewer's paint time; a tag made
// with `beaker-dev tag` while serve runs opens at the viewer as /@TAG/; and
// the viewer restarted with no network serves the last version it synced.
func TestBrowserRemoteViewer(t *testing.T) {
	root := browser(t)
	boot := newCLI(t).start("bootstrap", "--dht", "127.0.0.1:0")
	dht := boot.wait("listening")["dht"].(string)
	net := networkOptions{listen: "127.0.0.1:0", bootstrap: dht, noMDNS: true}

	authorHome, dir := filepath.Join(t.TempDir(), "author"), newBrowserSite(t, "")
	author := startRun(t, authorHome, dir, net, func(ctx context.Context, g *globalOptions) error {
		return runServe(ctx, g, serveOptions{dir: dir, noLAN: true, noMDNS: true})
	})
	viewerHome := filepath.Join(t.TempDir(), "viewer")
	o := viewOptions{url: author.dat, front: frontOptions{noLAN: true, noMDNS: true}, portSet: true, timeout: 60 * time.Second}
	viewer := startRun(t, viewerHome, "", net, func(ctx context.Context, g *globalOptions) error { return runView(ctx, g, o) })

	tb := openTab(t, root, viewer.url, false)
	tb.eval(t, `window.marker = 42`, nil)
	n := author.count()
	author.write("index.html", testPage(2, ""))
	tb.waitPainted(t, "2")
	var marker any
	tb.eval(t, `window.marker`, &marker)
	if marker != nil {
		t.Fatal("the viewer's page was not reloaded")
	}
	// The author's terminal shows the remote viewer's save-to-paint time.
	paint, _ := author.waitEvent("paint", n, func(e map[string]any) bool { return e["remote"] == true })
	if ms := paint["ms"].(float64); ms <= 0 || ms > 10_000 {
		t.Fatalf("remote paint %v", paint)
	}

	tb.eval(t, `window.marker = 43; document.getElementById('field').value = 'typed'; true`, nil)
	author.write("css/site.css", "body { color: rgb(0, 0, 255); }")
	select {
	case c := <-tb.css:
		if !strings.Contains(c, "0, 0, 255") {
			t.Fatalf("color changed to %s", c)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the stylesheet was not swapped at the viewer")
	}
	var state string
	tb.eval(t, `window.marker + ':' + document.getElementById('field').value`, &state)
	if state != "43:typed" {
		t.Fatalf("the viewer's page state after the swap: %s", state)
	}

	// A release tagged by another process while serve runs.
	c := &shell{t: t, home: authorHome, dir: filepath.Dir(dir)}
	c.ok(nil, "tag", "2.1.0", dir)
	author.write("index.html", testPage(3, ""))
	tb.waitPainted(t, "3")
	tagged := openTabRev(t, root, viewer.url+"@2.1.0/", true, false, "2")
	var title string
	tagged.eval(t, `document.getElementById('rev').textContent`, &title)
	if title != "rev 2" {
		t.Fatalf("/@2.1.0/ at the viewer shows %q", title)
	}

	// Offline: no peers, no DHT.
	waitSynced(t, viewer)
	viewer.stop()
	author.stop()
	off := networkOptions{listen: "127.0.0.1:0", noDHT: true, noMDNS: true}
	o.timeout = time.Second
	offline := startRun(t, viewerHome, "", off, func(ctx context.Context, g *globalOptions) error { return runView(ctx, g, o) })
	if _, err := chromedp.Run(tagged.ctx, chromedp.Navigate(offline.url)); err != nil {
		t.Fatal(err)
	}
	tagged.waitPainted(t, "3")
}

// waitSynced waits until the viewer's last synced event is for the version
// of its last reload.
func waitSynced(t *testing.T, r *serveRun) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		var reload, synced float64
		for _, e := range r.events {
			switch e["event"] {
			case "reload":
				reload = e["version"].(float64)
			case "synced":
				synced = e["version"].(float64)
			}
		}
		r.mu.Unlock()
		if synced >= reload && synced > 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the viewer never synced its last version")
}

// BenchmarkRemoteSaveToPaint: a save at the author until the remote
// viewer's page in headless Chromium shows it, over loopback through the
// swarm (author serve and viewer view, connected by --peer). Target: median
// <= 150 ms.
func BenchmarkRemoteSaveToPaint(b *testing.B) {
	for _, kind := range []string{"reload", "css"} {
		b.Run(kind, func(b *testing.B) {
			dir := newSiteWith(b, testPage(1, ""))
			author := startServe(b, filepath.Join(b.TempDir(), "author"), dir, 0, true)
			viewer := startView(b, filepath.Join(b.TempDir(), "viewer"), author.dat, author.swarm)
			tb := openTab(b, browser(b), viewer.url, false)
			var samples []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				if kind == "reload" {
					os.WriteFile(filepath.Join(dir, "index.html"), []byte(testPage(i+2, "")), 0o644)
					tb.waitPainted(b, fmt.Sprint(i+2))
				} else {
					os.WriteFile(filepath.Join(dir, "css", "site.css"), []byte(fmt.Sprintf("body { color: rgb(0, 0, %d); }", i%200)), 0o644)
					select {
					case <-tb.css:
					case <-time.After(10 * time.Second):
						b.Fatal("no swap at the viewer")
					}
				}
				samples = append(samples, time.Since(start))
				b.StopTimer()
				time.Sleep(30 * time.Millisecond)
				b.StartTimer()
			}
			b.StopTimer()
			reportMedian(b, samples)
		})
	}
}
