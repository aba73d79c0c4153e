package main

// Remote viewers on other hosts of a network-namespace lab (see
// netns_test.go): the author runs `serve` on host A, viewers run `view` on
// hosts B and C, and a real headless Chromium shows their pages.
//
// The root namespace cannot reach the lab, so Chromium itself runs inside a
// lab host: chromedp starts the browser with its DevTools connection on a
// pipe (file descriptors 3 and 4), and `ip netns exec NS chromium ...` execs
// the browser with those descriptors kept, so the test drives a browser whose
// every network request (page, scripts, the live-reload socket) goes over the
// lab's network.
//
// The lab helpers of netns_test.go take a *testing.T; the benchmark needs a
// *testing.B, so this file has testing.TB versions of them (viewLab,
// labHost), and runs the real binary's long-running commands as a *serveRun,
// so the helpers of serve_test.go (waitEvent, count, write, stop) apply.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// swarmAddr is the host's address on the lab at the standard swarm port.
func (h *nsHost) swarmAddr() string { return netip.AddrPortFrom(h.ip, 3282).String() }

// start runs a long-running command (serve, view) of the real binary on
// the host with --json, and returns once it prints its listening event.
// It is a serveRun whose cancel sends SIGINT; dir is the site folder (for
// write) or "".
func (h *nsHost) startServing(dir string, args ...string) *serveRun {
	tb := h.t
	tb.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.ns, binary}, append(args, "--json", "--data-dir", h.home)...)...)
	cmd.Dir = h.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	r := &serveRun{t: tb, dir: dir, done: make(chan error, 1), stderr: &lockedBuffer{}, notify: make(chan struct{}, 1)}
	cmd.Stderr = r.stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	exited := make(chan struct{})
	r.cancel = func() { cmd.Process.Signal(os.Interrupt) }
	// After stop (registered below, so it runs first): a process that did
	// not stop on SIGINT is killed, so the lab's namespaces can go.
	tb.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})
	listening := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(out)
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
		err := cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == exitInterrupted {
			err = nil // stopped by the test's SIGINT
		}
		close(exited)
		r.done <- err
	}()
	select {
	case ev := <-listening:
		r.url, _ = ev["url"].(string)
		r.swarm, _ = ev["swarm"].(string)
		r.dat, _ = ev["dat"].(string)
		lan, _ := ev["lan"].([]any)
		for _, l := range lan {
			r.lan = append(r.lan, fmt.Sprint(l))
		}
		u := strings.TrimSuffix(r.url, "/")
		r.port = atoiTest(u[strings.LastIndex(u, ":")+1:])
	case err := <-r.done:
		tb.Fatalf("%s: %v stopped: %v\n%s", h.ns, args, err, r.stderr)
	case <-time.After(30 * time.Second):
		tb.Fatalf("%s: %v did not start:\n%s", h.ns, args, r.stderr)
	}
	tb.Cleanup(r.stop)
	return r
}

// browserIn starts headless Chromium inside the host's namespace and returns
// its root context. chromedp talks to it over a pipe that `ip netns exec`
// passes on, so nothing of the lab is exposed to the root namespace.
func browserIn(tb testing.TB, h *nsHost) context.Context {
	tb.Helper()
	path := chromium(tb)
	ipPath, err := exec.LookPath("ip")
	if err != nil {
		tb.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(tb.TempDir()),
		// The command chromedp made (its pipe in ExtraFiles) runs under ip
		// netns exec, which execs the browser: the pid chromedp kills on
		// close is the browser's.
		chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			cmd.Path = ipPath
			cmd.Args = append([]string{"ip", "netns", "exec", h.ns, path}, cmd.Args[1:]...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		}),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		cancelAlloc()
		tb.Fatalf("starting %s in %s: %v", path, h.ns, err)
	}
	tb.Cleanup(func() { cancel(); cancelAlloc() })
	return ctx
}

// TestNetnsTwoViewers: an author on host A (serve), viewers on hosts B and
// C (view), one page open on each viewer in a headless Chromium that runs
// on host B: the page on B's viewer at http://127.0.0.1:8283/ (as B's user
// opens it), the page on C's viewer at its LAN URL http://C:8283/. A save at
// the author reloads both pages; a stylesheet save swaps in both, state
// kept, with no reload; the author hears both viewers' paint times.
//
// The viewers find the author with --peer, or by mDNS alone.
func TestNetnsTwoViewers(t *testing.T) {
	for _, discovery := range []string{"peer", "mdns"} {
		t.Run(discovery, func(t *testing.T) {
			chromium(t)
			lab := newNetnsLab(t)
			a, b, c := lab.host(), lab.host(), lab.host()
			authorNet, viewerNet := []string{"--no-dht", "--no-mdns"}, []string{"--no-dht", "--no-mdns", "--peer", a.swarmAddr()}
			if discovery == "mdns" {
				// --no-lan keeps serve's preview on A's loopback; the
				// swarm's mDNS still runs.
				authorNet, viewerNet = []string{"--no-dht"}, []string{"--no-dht"}
			}
			site := newSiteWith(t, testPage(1, ""))
			author := a.startServing(site, append([]string{"serve", site, "--port", "8282", "--no-lan", "--listen", a.swarmAddr()}, authorNet...)...)
			if author.swarm != a.swarmAddr() || author.dat == "" {
				t.Fatalf("serve on A: swarm %q, dat %q; want the swarm on %s", author.swarm, author.dat, a.swarmAddr())
			}
			var viewers []*serveRun
			for _, h := range []*nsHost{b, c} {
				v := h.startServing("", append([]string{"view", author.dat, "--port", "8283", "--listen", h.swarmAddr(), "--timeout", "20s"}, viewerNet...)...)
				want := fmt.Sprintf("http://%s:8283/", h.ip)
				if len(v.lan) != 1 || v.lan[0] != want || v.port != 8283 {
					t.Fatalf("view on %s: url %s, LAN %v; want %s", h.ns, v.url, v.lan, want)
				}
				viewers = append(viewers, v)
			}

			root := browserIn(t, b)
			tabs := []*tab{
				openTab(t, root, viewers[0].url, false),   // B's own viewer, by loopback
				openTab(t, root, viewers[1].lan[0], true), // C's viewer, across the lab
			}
			for _, tb := range tabs {
				tb.eval(t, `window.marker = 42`, nil)
			}

			// A save at the author reloads both pages.
			n := author.count()
			start := time.Now()
			author.write("index.html", testPage(2, ""))
			for i, tb := range tabs {
				tb.waitPainted(t, "2")
				t.Logf("viewer %c: save → paint %v", 'B'+i, time.Since(start).Round(time.Millisecond))
				var marker any
				tb.eval(t, `window.marker`, &marker)
				if marker != nil {
					t.Fatalf("the page on viewer %c was not reloaded", 'B'+i)
				}
			}
			pub, _ := author.waitEvent("published", n, nil)
			for _, v := range viewers {
				v.waitEvent("reload", 0, func(e map[string]any) bool { return e["version"] == pub["version"] })
			}
			// The author hears each viewer's paint through the swarm.
			for i, after := 0, n; i < len(tabs); i++ {
				var paint map[string]any
				paint, after = author.waitEvent("paint", after, func(e map[string]any) bool {
					return e["remote"] == true && e["version"] == fmt.Sprint(pub["version"])
				})
				if ms, _ := paint["ms"].(float64); ms <= 0 || ms > 10_000 {
					t.Fatalf("remote paint %v", paint)
				}
			}

			// A stylesheet save swaps in both, with no reload.
			for _, tb := range tabs {
				tb.eval(t, `window.marker = 43; document.getElementById('field').value = 'typed'; true`, nil)
			}
			author.write("css/site.css", "body { color: rgb(0, 0, 255); }")
			for i, tb := range tabs {
				select {
				case col := <-tb.css:
					if !strings.Contains(col, "0, 0, 255") {
						t.Fatalf("viewer %c: color changed to %s", 'B'+i, col)
					}
				case rev := <-tb.painted:
					t.Fatalf("viewer %c: the page reloaded (rev %s) for a stylesheet", 'B'+i, rev)
				case <-time.After(15 * time.Second):
					t.Fatalf("the stylesheet was not swapped at viewer %c", 'B'+i)
				}
				var state string
				tb.eval(t, `window.marker + ':' + document.getElementById('field').value + ':' + document.querySelectorAll('link[rel=stylesheet]').length`, &state)
				if state != "43:typed:1" {
					t.Fatalf("viewer %c: page state after the swap: %s (marker:input:stylesheets)", 'B'+i, state)
				}
			}
			select {
			case rev := <-tabs[0].painted:
				t.Fatalf("viewer B: the page reloaded (rev %s) for a stylesheet", rev)
			case rev := <-tabs[1].painted:
				t.Fatalf("viewer C: the page reloaded (rev %s) for a stylesheet", rev)
			default:
			}
		})
	}
}

// BenchmarkNetnsRemoteSaveToPaint is BenchmarkRemoteSaveToPaint across the
// lab: the author (serve) on host A, the viewer (view --peer A) on host B,
// headless Chromium on host B with the page at the viewer's
// http://127.0.0.1:8283/. Each sample is a save at the author until the
// page shows it (reload: a new rev of index.html; css: a stylesheet swapped
// in place). Target: median <= 200 ms.
func BenchmarkNetnsRemoteSaveToPaint(b *testing.B) {
	for _, kind := range []string{"reload", "css"} {
		b.Run(kind, func(b *testing.B) {
			lab := newNetnsLab(b)
			ha, hb := lab.host(), lab.host()
			dir := newSiteWith(b, testPage(1, ""))
			author := ha.startServing(dir, "serve", dir, "--port", "8282", "--no-lan", "--no-dht", "--no-mdns", "--listen", ha.swarmAddr())
			viewer := hb.startServing("", "view", author.dat, "--port", "8283", "--no-lan", "--no-dht", "--no-mdns", "--listen", hb.swarmAddr(), "--peer", ha.swarmAddr(), "--timeout", "20s")
			tb := openTab(b, browserIn(b, hb), viewer.url, false)
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
				time.Sleep(30 * time.Millisecond) // let the next save be a separate batch
				b.StartTimer()
			}
			b.StopTimer()
			reportMedian(b, samples)
		})
	}
}
