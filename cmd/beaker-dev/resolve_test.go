package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/beaker-dev/beaker-dev/hyperdrive/names"
	"github.com/beaker-dev/beaker-dev/hyperdrive/names/namestest"
)

// runEnv runs the binary with extra environment variables (they replace
// inherited ones of the same name).
func (c *shell) runEnv(env []string, args ...string) (string, string, int) {
	c.t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = c.dir
	drop := map[string]bool{}
	for _, e := range env {
		drop[strings.SplitN(e, "=", 2)[0]] = true
	}
	for _, e := range os.Environ() {
		if !drop[strings.SplitN(e, "=", 2)[0]] {
			cmd.Env = append(cmd.Env, e)
		}
	}
	cmd.Env = append(append(cmd.Env, "BEAKER_DEV_HOME="+c.home), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// failsWith wants exit status code and one line on stderr holding every
// one of want.
func failsWith(t *testing.T, stdout, stderr string, got, code int, want ...string) {
	t.Helper()
	if got != code {
		t.Fatalf("exit %d, want %d: %s", got, code, stderr)
	}
	if stdout != "" || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.HasPrefix(stderr, "beaker-dev: ") {
		t.Fatalf("stdout %q, stderr %q: want one line on stderr", stdout, stderr)
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			t.Fatalf("stderr %q does not say %q", stderr, w)
		}
	}
}

// resolve --resolver asks a real DNS server (dnsmasq) for TXT records.
func TestResolveCommandDNS(t *testing.T) {
	c := newCLI(t)
	var ini initResult
	c.ok(&ini, "init", "site")
	key := ini.Key
	dns := namestest.StartDNS(t, namestest.DNSConfig{TTL: 900, TXT: []namestest.TXT{
		{Name: "site.test", Strings: []string{"v=spf1 -all"}},
		{Name: "site.test", Strings: []string{"datkey=" + key}},
		{Name: "bad.test", Strings: []string{"datkey=" + key[:40]}},
		{Name: "other.test", Strings: []string{"hello"}},
	}})
	var res resolveResult
	c.ok(&res, "resolve", "site.test", "--resolver", dns.Addr)
	if res.URL != "dat://"+key+"/" || res.Key != key || res.Name != "site.test" || res.Source != "dns" || res.Origin != "dns" || res.TTL != 900 || res.Stale {
		t.Fatalf("resolve = %+v", res)
	}
	queries := dns.Queries("site.test")
	// Cached now: no question asked, and flags after the name work.
	out, errs, code := c.run("resolve", "--resolver", dns.Addr, "dat://SITE.test+2/about.html")
	if code != 0 || out != "dat://"+key+"+2/about.html\n" || errs != "" {
		t.Fatalf("resolve dat://site.test+2/about.html: %d %q %q", code, out, errs)
	}
	c.ok(&res, "resolve", "site.test", "--resolver", dns.Addr)
	if res.Source != "cache" || res.Origin != "dns" || dns.Queries("site.test") != queries {
		t.Fatalf("second resolve = %+v, %d questions (was %d)", res, dns.Queries("site.test"), queries)
	}
	if b, err := os.ReadFile(filepath.Join(c.home, names.CacheFile)); err != nil || !strings.Contains(string(b), key) {
		t.Fatalf("cache file: %v %s", err, b)
	}

	stdout, stderr, code := c.run("resolve", "nx.test", "--resolver", dns.Addr)
	failsWith(t, stdout, stderr, code, exitNotFound, "no dat key for nx.test", "nx.test does not exist (NXDOMAIN from "+dns.Addr+")", "beaker-dev info shows how")
	stdout, stderr, code = c.run("resolve", "other.test", "--resolver", dns.Addr)
	failsWith(t, stdout, stderr, code, exitNotFound, "other.test has no TXT record datkey=<64 hex>")
	stdout, stderr, code = c.run("resolve", "bad.test", "--resolver", dns.Addr)
	failsWith(t, stdout, stderr, code, exitInvalid, "the TXT record of bad.test is not datkey=<64 hex>", "the name's owner must fix it")
	stdout, stderr, code = c.run("resolve", "example.org", "--resolver", dns.Addr)
	failsWith(t, stdout, stderr, code, exitNetwork, "answered REFUSED", "--resolver HOST:PORT")
	dead := dns.Addr
	dns.Stop()
	stdout, stderr, code = c.run("resolve", "new.test", "--resolver", dead)
	failsWith(t, stdout, stderr, code, exitNetwork, "DNS: TXT new.test: "+dead+": connection refused")
	// The cached name still resolves, marked stale once expired; here it
	// is fresh, so the dead server is not asked.
	c.ok(&res, "resolve", "site.test", "--resolver", dead)
	if res.Source != "cache" || res.Key != key {
		t.Fatalf("cached resolve with the server down = %+v", res)
	}

	stdout, stderr, code = c.run("resolve", "not_a_name")
	failsWith(t, stdout, stderr, code, exitInvalid, `"not_a_name"`)
	stdout, stderr, code = c.run("resolve", "site.test", "--resolver", "localhost:dns")
	failsWith(t, stdout, stderr, code, exitUsage, `--resolver "localhost:dns": want HOST:PORT`)
	stdout, stderr, code = c.run("resolve")
	failsWith(t, stdout, stderr, code, exitUsage, "resolve takes 1 argument(s) (NAME), got 0")
	// A key resolves to itself.
	c.ok(&res, "resolve", key)
	if res.Source != "key" || res.URL != "dat://"+key+"/" {
		t.Fatalf("resolve KEY = %+v", res)
	}
}

// info prints the /.well-known/dat file to deploy.
func TestInfoWellKnown(t *testing.T) {
	c := newCLI(t)
	var ini initResult
	c.ok(&ini, "init", "site")
	var info infoResult
	c.ok(&info, "info", "site")
	if info.WellKnown != "dat://"+ini.Key+"\nTTL=3600\n" {
		t.Fatalf("well_known = %q", info.WellKnown)
	}
	out, _, code := c.run("info", "site")
	if code != 0 || !strings.Contains(out, "To name this site, serve this at https://YOUR.DOMAIN/.well-known/dat:\n\ndat://"+ini.Key+"\nTTL=3600\n") ||
		!strings.Contains(out, "datkey="+ini.Key) {
		t.Fatalf("info:\n%s", out)
	}
}

// The HTTPS method end to end, as a user runs it: in a network namespace
// of its own where /etc/hosts sends the test's names to 127.0.0.1 and an
// HTTPS server listens on port 443 with a certificate from a throwaway CA,
// which the binary trusts only through SSL_CERT_FILE: the system trust
// store's path. DNS has no server there (nothing routes to resolv.conf's).
func TestResolveCommandHTTPS(t *testing.T) {
	if !enterResolveNetns(t) {
		return
	}
	ca := namestest.NewCA(t)
	tmp := t.TempDir()
	caFile := filepath.Join(tmp, "ca.pem")
	hosts := filepath.Join(tmp, "hosts")
	os.WriteFile(caFile, ca.PEM, 0o644)
	os.WriteFile(hosts, []byte("127.0.0.1 localhost\n127.0.0.1 named.test html.test redirect.test\n"), 0o644)
	if out, err := exec.Command("mount", "--bind", hosts, "/etc/hosts").CombinedOutput(); err != nil {
		t.Fatalf("mount --bind %s /etc/hosts: %v %s", hosts, err, out)
	}

	c := newCLI(t)
	var ini initResult
	c.ok(&ini, "init", "site")
	var info infoResult
	c.ok(&info, "info", "site")

	var mu sync.Mutex
	hits := 0
	requests := func() int {
		mu.Lock()
		defer mu.Unlock()
		return hits
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/dat", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
		switch strings.Split(r.Host, ":")[0] {
		case "named.test":
			io.WriteString(w, info.WellKnown) // what info told the author to deploy
		case "html.test":
			io.WriteString(w, "<!doctype html>\n<title>Welcome</title>\n")
		case "redirect.test":
			http.Redirect(w, r, "http://named.test/.well-known/dat", http.StatusMovedPermanently)
		default:
			http.NotFound(w, r)
		}
	})
	l, err := net.Listen("tcp", "127.0.0.1:443")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ErrorLog: log.New(io.Discard, "", 0),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{ca.Certificate(t, "named.test", "html.test", "redirect.test")}}}
	go srv.ServeTLS(l, "", "")
	t.Cleanup(func() { srv.Close() })

	trustCA := []string{"SSL_CERT_FILE=" + caFile, "SSL_CERT_DIR="}
	var res resolveResult
	out, errs, code := c.runEnv(trustCA, "resolve", "named.test", "--json")
	if code != 0 {
		t.Fatalf("resolve named.test: exit %d: %s", code, errs)
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if res.URL != "dat://"+ini.Key+"/" || res.Source != "https" || res.TTL != 3600 || res.Stale || requests() != 1 {
		t.Fatalf("resolve = %+v (%d requests)", res, requests())
	}
	out, _, code = c.runEnv(trustCA, "resolve", "named.test")
	if code != 0 || out != "dat://"+ini.Key+"/\n" || requests() != 1 {
		t.Fatalf("cached resolve: %d %q (%d requests)", code, out, requests())
	}

	// Without the CA the certificate is refused, with a one-line reason.
	fresh := newCLI(t)
	stdout, stderr, code := fresh.runEnv([]string{"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}, "resolve", "named.test")
	failsWith(t, stdout, stderr, code, exitNetwork, "https://named.test/.well-known/dat: the server's certificate is not trusted", "DNS: TXT named.test: ", "SSL_CERT_FILE can name")
	stdout, stderr, code = fresh.runEnv(trustCA, "resolve", "html.test")
	failsWith(t, stdout, stderr, code, exitInvalid, `line 1 of https://html.test/.well-known/dat is not dat://<64 hex>: "<!doctype html>"`)
	stdout, stderr, code = fresh.runEnv(trustCA, "resolve", "redirect.test")
	failsWith(t, stdout, stderr, code, exitInvalid, "redirects to http://named.test/.well-known/dat, which is not HTTPS")
}

// enterResolveNetns makes the calling test run in new network, mount and
// PID namespaces (unshare; as root, or in a user namespace where the
// kernel allows that) with only a loopback interface, up. In the test
// process it re-runs the test there, reports its outcome and returns
// false: the caller returns. In the re-run it returns true. Everything
// the re-run changes (the /etc/hosts bind mount, port 443, processes)
// vanishes with it.
func enterResolveNetns(t *testing.T) bool {
	t.Helper()
	const env = "BEAKER_DEV_RESOLVE_NETNS"
	if os.Getenv(env) == "1" {
		return true
	}
	if runtime.GOOS != "linux" {
		namestest.SkipOrFail(t, "needs Linux network namespaces")
	}
	for _, tool := range []string{"unshare", "ip", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			namestest.SkipOrFail(t, "needs %s: apt-get install util-linux iproute2 mount", tool)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"}
	if os.Geteuid() != 0 {
		args = append([]string{"--user", "--map-root-user"}, args...)
	}
	args = append(args, "sh", "-c", "set -e; ip link set lo up; echo NETNS-READY; exec \"$@\"", "sh", exe,
		"-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.v", "-test.count=1", "-test.timeout=3m")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", args...)
	cmd.Env = append(os.Environ(), env+"=1")
	out, err := cmd.CombinedOutput()
	text := string(out)
	switch {
	case !strings.Contains(text, "NETNS-READY"):
		namestest.SkipOrFail(t, "cannot make a network namespace (needs root, or unprivileged user namespaces): %v\n%s", err, text)
	case strings.Contains(text, "--- SKIP: "+t.Name()):
		t.Skipf("in the namespace:\n%s", text)
	case err != nil || !strings.Contains(text, "--- PASS: "+t.Name()):
		t.Fatalf("in the namespace: %v\n%s", err, text)
	case testing.Verbose():
		t.Logf("in the namespace:\n%s", text)
	}
	return false
}
