package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/beaker-dev/beaker-dev/hyperdrive/names/namestest"
)

// The browser tests drive a real headless Chromium (Debian's chromium
// package, which ./test.sh installs) against `serve` running in this
// process. The test page loads /probe.js (or the browser adds it to every
// document, for pages that must run no script of their own), which reports
// to the test through CDP bindings, right after the frame that shows a
// change: pagePainted(rev) when the body's data-rev changes (a new page),
// cssChanged(color) when its computed color does.

const probeJS = `(function () {
  var lastColor = null, lastRev = null;
  function tick() {
    var b = document.body;
    if (b) {
      var c = getComputedStyle(b).color, rev = b.dataset.rev;
      if (lastColor !== null && c !== lastColor && window.cssChanged) {
        setTimeout(function () { cssChanged(c); }, 0);
      }
      if (rev !== lastRev && window.pagePainted) {
        setTimeout(function () { pagePainted(rev); }, 0);
      }
      lastColor = c;
      lastRev = rev;
    }
    requestAnimationFrame(tick);
  }
  requestAnimationFrame(tick);
})();
`

// testPage is a page that runs a script of its own (the probe): a change to
// it reloads the page for real.
func testPage(rev int, extra string) string {
	return fmt.Sprintf(`<!doctype html>
<html><head><title>rev %d</title><link rel="stylesheet" href="/css/site.css"><script src="/probe.js"></script></head>
<body data-rev="%d"><h1 id="rev">rev %d</h1><input id="field">%s</body></html>`, rev, rev, rev, extra)
}

// staticPage runs no script: a change to it is swapped in place.
func staticPage(rev int, extra string) string {
	return fmt.Sprintf(`<!doctype html>
<html><head><title>rev %d</title><link rel="stylesheet" href="/css/site.css"></head>
<body data-rev="%d"><h1 id="rev">rev %d</h1><input id="field">%s</body></html>`, rev, rev, rev, extra)
}

// chromium finds the browser, or skips (fails in CI) saying how to get it.
func chromium(t testing.TB) string {
	for _, p := range []string{os.Getenv("CHROME"), "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"} {
		if p == "" {
			continue
		}
		if _, err := exec.LookPath(p); err == nil {
			return p
		}
	}
	namestest.SkipOrFail(t, "no Chromium: run ./test.sh (it installs Debian's chromium package), or apt-get install chromium, or set CHROME")
	return ""
}

// browser starts headless Chromium and returns its root context.
func browser(t testing.TB) context.Context {
	path := chromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("starting %s: %v", path, err)
	}
	t.Cleanup(func() { cancel(); cancelAlloc() })
	return ctx
}

// tab is one page with the probe's bindings wired to channels.
type tab struct {
	ctx     context.Context
	painted chan string
	css     chan string
}

func openTab(t testing.TB, parent context.Context, url string, newContext bool) *tab {
	return openTabProbe(t, parent, url, newContext, false)
}

// openTabProbe opens a tab; with inject set, the probe is added by the
// browser to every document (the page itself then runs no script of its own).
func openTabProbe(t testing.TB, parent context.Context, url string, newContext, inject bool) *tab {
	t.Helper()
	return openTabRev(t, parent, url, newContext, inject, "1")
}

// openTabRev opens a tab on a page that shows rev.
func openTabRev(t testing.TB, parent context.Context, url string, newContext, inject bool, rev string) *tab {
	t.Helper()
	var opts []chromedp.ContextOption
	if newContext {
		opts = append(opts, chromedp.WithNewBrowserContext())
	}
	ctx, cancel := chromedp.NewContext(parent, opts...)
	t.Cleanup(cancel)
	tb := &tab{ctx: ctx, painted: make(chan string, 64), css: make(chan string, 64)}
	if err := chromedp.Do(ctx,
		chromedp.ExposeFunc("pagePainted", func(_ context.Context, rev string) (chromedp.Void, error) {
			tb.painted <- rev
			return chromedp.Void{}, nil
		}),
		chromedp.ExposeFunc("cssChanged", func(_ context.Context, color string) (chromedp.Void, error) {
			tb.css <- color
			return chromedp.Void{}, nil
		}),
		chromedp.Func(func(ctx context.Context, target *chromedp.Target) error {
			if !inject {
				return nil
			}
			_, err := cdp.Call(ctx, target, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: probeJS})
			return err
		}),
		chromedp.Navigate(url),
	); err != nil {
		t.Fatalf("opening %s: %v", url, err)
	}
	tb.waitPainted(t, rev)
	if strings.Contains(url, "nosocket") {
		return tb
	}
	// The socket is open once the page has said hello.
	tb.eval(t, `new Promise(function (ok) { (function wait() {
		var s = window.__beakerDev && window.__beakerDev.ws;
		if (s && s.readyState === 1) ok(true); else setTimeout(wait, 5);
	})(); })`, nil)
	return tb
}

func (tb *tab) waitPainted(t testing.TB, rev string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case got := <-tb.painted:
			if got == rev {
				return
			}
		case <-deadline:
			state, err := chromedp.Run(tb.ctx, chromedp.Evaluate[string](`location.href + ' shows "' + document.title + '", probe bound: ' + (typeof window.pagePainted)`))
			t.Fatalf("page never painted rev %s (%s %v)", rev, state, err)
		}
	}
}

func (tb *tab) eval(t testing.TB, js string, out any) {
	t.Helper()
	v, err := chromedp.Run(tb.ctx, chromedp.Evaluate[any](js, chromedp.EvalAwaitPromise))
	if err != nil && !errors.Is(err, chromedp.ErrJSUndefined) && !errors.Is(err, chromedp.ErrJSNull) {
		t.Fatalf("evaluating %s: %v", js, err)
	}
	switch o := out.(type) {
	case nil:
	case *any:
		*o = v
	case *string:
		*o, _ = v.(string)
	case *float64:
		*o, _ = v.(float64)
	default:
		t.Fatalf("eval into %T", out)
	}
}

// newBrowserSite makes a site folder with the probe and rev 1 of the page.
func newBrowserSite(t testing.TB, extra string) string {
	return newSiteWith(t, testPage(1, extra))
}

func newSiteWith(t testing.TB, index string) string {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"index.html":   index,
		"probe.js":     probeJS,
		"css/site.css": "body { color: rgb(255, 0, 0); }",
	} {
		p := filepath.Join(dir, filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(content), 0o644)
	}
	return dir
}

func TestBrowserFullReload(t *testing.T) {
	dir := newBrowserSite(t, "")
	r := startServe(t, filepath.Join(t.TempDir(), "home"), dir, 0, true)
	tb := openTab(t, browser(t), r.url, false)
	tb.eval(t, `window.marker = 42`, nil)
	r.write("index.html", testPage(2, ""))
	tb.waitPainted(t, "2")
	var marker any
	tb.eval(t, `window.marker`, &marker)
	if marker != nil {
		t.Fatal("the page was not reloaded")
	}
	var title string
	tb.eval(t, `document.getElementById('rev').textContent`, &title)
	if title != "rev 2" {
		t.Fatalf("page shows %q", title)
	}
	// The server heard about the paint and timed it.
	r.waitEvent("paint", 0, nil)
}

// A page that runs no script of its own is updated in place: same window,
// new content, scroll kept.
func TestBrowserStaticPageUpdatesInPlace(t *testing.T) {
	long := `<div style="height:6000px"></div><img src="/img.svg">`
	dir := newSiteWith(t, staticPage(1, long))
	os.WriteFile(filepath.Join(dir, "img.svg"), []byte(`<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>`), 0o644)
	r := startServe(t, filepath.Join(t.TempDir(), "home"), dir, 0, true)
	tb := openTabProbe(t, browser(t), r.url, false, true)
	tb.eval(t, `window.marker = 42; window.scrollTo(0, 1200); true`, nil)
	r.write("index.html", staticPage(2, long+`<p id="new">new paragraph</p>`))
	tb.waitPainted(t, "2")
	var state string
	tb.eval(t, `[window.marker, document.title, document.getElementById('new').textContent, Math.round(window.scrollY), document.querySelectorAll('link[rel=stylesheet]').length].join('|')`, &state)
	if state != "42|rev 2|new paragraph|1200|1" {
		t.Fatalf("after the in-place update: %s (marker|title|content|scrollY|stylesheets)", state)
	}
	// A new script in the page makes the next change a real reload.
	r.write("index.html", strings.Replace(staticPage(3, long), "</body>", "<script src=\"/probe.js\"></script></body>", 1))
	tb.waitPainted(t, "3")
	var marker any
	tb.eval(t, `window.marker`, &marker)
	if marker != nil {
		t.Fatal("a page that gained a script was swapped in place, not reloaded")
	}
}

func TestBrowserCSSSwapKeepsState(t *testing.T) {
	dir := newBrowserSite(t, "")
	r := startServe(t, filepath.Join(t.TempDir(), "home"), dir, 0, true)
	tb := openTab(t, browser(t), r.url, false)
	tb.eval(t, `window.marker = 42; document.getElementById('field').value = 'typed'; document.getElementById('field').focus(); true`, nil)
	r.write("css/site.css", "body { color: rgb(0, 0, 255); }")
	select {
	case c := <-tb.css:
		if !strings.Contains(c, "0, 0, 255") {
			t.Fatalf("color changed to %s", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stylesheet was not swapped")
	}
	var state string
	tb.eval(t, `window.marker + ':' + document.getElementById('field').value + ':' + (document.activeElement && document.activeElement.id) + ':' + document.querySelectorAll('link[rel=stylesheet]').length`, &state)
	if state != "42:typed:field:1" {
		t.Fatalf("page state after the swap: %s (marker:input:focus:stylesheets)", state)
	}
	select {
	case rev := <-tb.painted:
		t.Fatalf("the page reloaded (rev %s)", rev)
	default:
	}
}

func TestBrowserReconnectsAfterRestart(t *testing.T) {
	dir := newBrowserSite(t, "")
	home := filepath.Join(t.TempDir(), "home")
	r := startServe(t, home, dir, 0, true)
	tb := openTab(t, browser(t), r.url, false)
	r.stop()
	// A change made while the server was down...
	r.write("index.html", testPage(3, ""))
	time.Sleep(300 * time.Millisecond)
	// ...is caught up when it comes back on the same port.
	startServe(t, home, dir, r.port, true)
	tb.waitPainted(t, "3")
}

func TestBrowserKeepsScroll(t *testing.T) {
	long := `<div style="height:6000px"></div>`
	dir := newBrowserSite(t, long)
	r := startServe(t, filepath.Join(t.TempDir(), "home"), dir, 0, true)
	tb := openTab(t, browser(t), r.url, false)
	tb.eval(t, `window.scrollTo(0, 1500); window.scrollY`, nil)
	r.write("index.html", testPage(2, long))
	tb.waitPainted(t, "2")
	var y float64
	tb.eval(t, `window.scrollY`, &y)
	if y < 1490 || y > 1510 {
		t.Fatalf("scrollY after reload = %v, want 1500", y)
	}
}

func TestBrowserManyPagesAndLAN(t *testing.T) {
	dir := newBrowserSite(t, "")
	r := startServe(t, filepath.Join(t.TempDir(), "home"), dir, 0, false)
	if len(r.lan) == 0 {
		namestest.SkipOrFail(t, "no LAN address on this machine: the test needs a non-loopback interface that is up")
	}
	root := browser(t)
	tabs := []*tab{
		openTab(t, root, r.url, false),
		openTab(t, root, r.url, false),
		openTab(t, root, r.lan[0], true), // another browser context, by the LAN URL
	}
	r.write("index.html", testPage(2, ""))
	for _, tb := range tabs {
		tb.waitPainted(t, "2")
	}
}

func TestBrowserNoOpSaveReloadsNothing(t *testing.T) {
	dir := newBrowserSite(t, "")
	r := startServe(t, filepath.Join(t.TempDir(), "home"), dir, 0, true)
	tb := openTab(t, browser(t), r.url, false)
	r.write("index.html", testPage(1, ""))
	r.write("css/site.css", "body { color: rgb(255, 0, 0); }")
	select {
	case rev := <-tb.painted:
		t.Fatalf("a save that changed nothing reloaded the page (rev %s)", rev)
	case c := <-tb.css:
		t.Fatalf("a save that changed nothing swapped styles (%s)", c)
	case <-time.After(500 * time.Millisecond):
	}
}

func TestBrowserUnderStrictCSP(t *testing.T) {
	dir := newBrowserSite(t, "")
	os.WriteFile(filepath.Join(dir, "dat.json"), []byte(`{"content_security_policy":"default-src 'self'; script-src 'self'"}`), 0o644)
	r := startServe(t, filepath.Join(t.TempDir(), "home"), dir, 0, true)
	tb := openTab(t, browser(t), r.url, false) // waits for the client's socket
	r.write("index.html", testPage(2, ""))
	tb.waitPainted(t, "2")
}

// BenchmarkSaveToPaint measures a save at the author until headless Chromium
// shows it: a page with a script of its own (reloaded for real), a page
// without (swapped in place), and a stylesheet swapped in place. It reports
// the median and the 90th percentile.
func BenchmarkSaveToPaint(b *testing.B) {
	for _, kind := range []string{"reload", "static", "css"} {
		b.Run(kind, func(b *testing.B) {
			write := testPage
			if kind == "static" {
				write = staticPage
			}
			dir := newSiteWith(b, write(1, ""))
			r := startServe(b, filepath.Join(b.TempDir(), "home"), dir, 0, true)
			tb := openTabProbe(b, browser(b), r.url, false, kind == "static")
			var samples []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				if kind != "css" {
					os.WriteFile(filepath.Join(dir, "index.html"), []byte(write(i+2, "")), 0o644)
					tb.waitPainted(b, fmt.Sprint(i+2))
				} else {
					os.WriteFile(filepath.Join(dir, "css", "site.css"), []byte(fmt.Sprintf("body { color: rgb(0, 0, %d); }", i%200)), 0o644)
					select {
					case <-tb.css:
					case <-time.After(10 * time.Second):
						b.Fatal("no swap")
					}
				}
				samples = append(samples, time.Since(start))
				b.StopTimer()
				time.Sleep(30 * time.Millisecond) // let the next save be a separate batch
				b.StartTimer()
			}
			b.StopTimer()
			reportMedian(b, samples)
		})
	}
}

func reportMedian(b *testing.B, samples []time.Duration) {
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	med := samples[len(samples)/2]
	b.ReportMetric(float64(med.Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(samples[len(samples)*9/10].Microseconds())/1000, "p90-ms")
}
