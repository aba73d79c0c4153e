package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/beaker-dev/beaker-dev/hyperdrive/discovery"
)

// daemon is a long-running beaker-dev process (seed, serve, bootstrap)
// whose JSON events the test reads.
type daemon struct {
	t      testing.TB
	cmd    *exec.Cmd
	events chan map[string]any
	stderr *lockedBuffer
}

func (c *shell) start(args ...string) *daemon {
	c.t.Helper()
	cmd := exec.Command(binary, append(args, "--json")...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "BEAKER_DEV_HOME="+c.home)
	out, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	d := &daemon{t: c.t, cmd: cmd, events: make(chan map[string]any, 64), stderr: &lockedBuffer{}}
	cmd.Stderr = d.stderr
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				d.events <- ev
			}
		}
		close(d.events)
	}()
	c.t.Cleanup(d.stop)
	return d
}

// wait returns the next event of kind.
func (d *daemon) wait(kind string) map[string]any {
	d.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev, ok := <-d.events:
			if !ok {
				d.t.Fatalf("%v exited before a %s event: %s", d.cmd.Args, kind, d.stderr)
			}
			if ev["event"] == kind {
				return ev
			}
		case <-timeout:
			d.t.Fatalf("no %s event from %v: %s", kind, d.cmd.Args, d.stderr)
		}
	}
}

func (d *daemon) stop() {
	if d.cmd.Process == nil || d.cmd.ProcessState != nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan struct{})
	go func() { d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-done
		d.t.Errorf("%v did not stop on SIGINT", d.cmd.Args)
	}
}

// newSeededSite makes a site with some files and seeds it; it returns the
// site's URL, the seeder and its swarm address.
func newSeededSite(t *testing.T, net ...string) (*shell, string, *daemon, string) {
	a := newCLI(t)
	var ini initResult
	a.ok(&ini, "init", "site", "--template", "blog")
	os.MkdirAll(filepath.Join(a.dir, "site", "media"), 0o755)
	os.WriteFile(filepath.Join(a.dir, "site", "media", "big.bin"), bytes.Repeat([]byte("0123456789abcdef"), 200_000), 0o644)
	a.ok(nil, "publish", "site")
	seeder := a.start(append([]string{"seed", "site", "--listen", "127.0.0.1:0"}, net...)...)
	ev := seeder.wait("seeding")
	if ev["url"] != ini.URL {
		t.Fatalf("seeding %v, want %s", ev["url"], ini.URL)
	}
	return a, ini.URL, seeder, ev["swarm"].(string)
}

func sameDirs(t *testing.T, a, b string) {
	t.Helper()
	filepath.WalkDir(a, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.Contains(p, string(filepath.Separator)+".dat") {
			return nil
		}
		rel, _ := filepath.Rel(a, p)
		want, _ := os.ReadFile(p)
		got, err := os.ReadFile(filepath.Join(b, rel))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s differs in the clone (%v)", rel, err)
		}
		return nil
	})
}

func TestCloneFromAPeer(t *testing.T) {
	a, url, _, swarmAddr := newSeededSite(t, "--no-dht", "--no-mdns")
	b := newCLI(t)
	var res cloneResult
	b.ok(&res, "clone", url, "copy", "--peer", swarmAddr, "--no-dht", "--no-mdns", "--listen", "127.0.0.1:0")
	if res.Peers < 1 || res.Files != 7 {
		t.Fatalf("clone = %+v", res)
	}
	sameDirs(t, filepath.Join(a.dir, "site"), filepath.Join(b.dir, "copy"))
	// The clone keeps the archive: it works offline, and verifies.
	var info infoResult
	b.ok(&info, "info", "copy")
	if info.Version != res.Version || info.Writable {
		t.Fatalf("info of the clone = %+v", info)
	}
	var ver verifyResult
	b.ok(&ver, "verify", url)
	if !ver.OK {
		t.Fatalf("verify the clone: %+v", ver)
	}
	// A clone of a site nobody seeds says so.
	c := newCLI(t)
	c.fails(exitNetwork, "no peer with", "clone", "dat://"+strings.Repeat("ab", 32)+"/", "x", "--no-dht", "--no-mdns", "--listen", "127.0.0.1:0", "--timeout", "1s")
}

func TestCloneThroughDiscovery(t *testing.T) {
	boot := newCLI(t).start("bootstrap", "--dht", "127.0.0.1:0", "--dns", "127.0.0.1:0")
	ev := boot.wait("listening")
	dht, dns := ev["dht"].(string), ev["dns"].(string)
	for _, tc := range []struct {
		name string
		net  []string
	}{
		{"dht", []string{"--bootstrap", dht, "--no-mdns"}},
		{"dns", []string{"--dns-discovery", dns, "--no-dht", "--no-mdns"}},
		{"mdns", []string{"--no-dht"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, url, _, _ := newSeededSite(t, tc.net...)
			b := newCLI(t)
			var res cloneResult
			b.ok(&res, append([]string{"clone", url, "copy", "--listen", "127.0.0.1:0", "--timeout", "60s"}, tc.net...)...)
			sameDirs(t, filepath.Join(a.dir, "site"), filepath.Join(b.dir, "copy"))
		})
	}
}

// TestLiveThroughSeed: a version published while a replica seeds reaches it.
func TestLiveThroughSeed(t *testing.T) {
	a, url, _, swarmAddr := newSeededSite(t, "--no-dht", "--no-mdns")
	b := newCLI(t)
	b.ok(nil, "clone", url, "copy", "--peer", swarmAddr, "--no-dht", "--no-mdns", "--listen", "127.0.0.1:0")
	replica := b.start("seed", url, "--peer", swarmAddr, "--no-dht", "--no-mdns", "--listen", "127.0.0.1:0")
	replica.wait("seeding")
	os.WriteFile(filepath.Join(a.dir, "site", "new.html"), []byte("<p>new</p>"), 0o644)
	var pub publishResult
	a.ok(&pub, "publish", "site")
	for {
		ev := replica.wait("synced")
		if uint64(ev["version"].(float64)) >= pub.Version {
			break
		}
	}
}

// TestCloneThroughTenNodeDHT: a local DHT of ten nodes (eight in this
// process, bootstrapping from the first; the seeder's and the clone's, each
// bootstrapping from a different node) in which the clone finds its seeder.
func TestCloneThroughTenNodeDHT(t *testing.T) {
	ctx := context.Background()
	var nodes []*discovery.DHT
	for i := 0; i < 8; i++ {
		boot := []string{}
		if i > 0 {
			boot = []string{nodes[0].Addr().String()}
		}
		d, err := discovery.StartDHT(ctx, discovery.DHTConfig{Addr: "127.0.0.1:0", Bootstrap: boot, QueryTimeout: 300 * time.Millisecond, BootstrapRetry: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		nodes = append(nodes, d)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, d := range nodes[1:] {
		for d.Nodes() < 3 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	}
	a, url, _, _ := newSeededSite(t, "--bootstrap", nodes[2].Addr().String(), "--no-mdns")
	b := newCLI(t)
	var res cloneResult
	b.ok(&res, "clone", url, "copy", "--bootstrap", nodes[6].Addr().String(), "--no-mdns", "--listen", "127.0.0.1:0", "--timeout", "60s")
	if res.Peers < 1 {
		t.Fatalf("clone = %+v", res)
	}
	sameDirs(t, filepath.Join(a.dir, "site"), filepath.Join(b.dir, "copy"))
}
