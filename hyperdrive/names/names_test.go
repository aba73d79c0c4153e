package names

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
	"github.com/beaker-dev/beaker-dev/hyperdrive/names/namestest"
)

// Keys the tests publish.
var (
	keyA = mustKey("a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf")
	keyB = mustKey("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
)

func mustKey(s string) hyperdrive.PublicKey {
	k, err := hyperdrive.ParsePublicKey(s)
	if err != nil {
		panic(err)
	}
	return k
}

// world is a small internet for one test: an HTTPS server answering
// /.well-known/dat for several names with a certificate from a throwaway
// CA, and dnsmasq answering for the domain "test": the address of every
// name the HTTPS server serves, and the TXT records given.
type world struct {
	t     *testing.T
	ca    *namestest.CA
	https *httptest.Server
	dns   *namestest.DNSServer
	dir   string // the cache directory

	mu    sync.Mutex
	pages map[string]http.HandlerFunc
	hits  map[string]int
	now   time.Time
}

func newWorld(t *testing.T, pages map[string]http.HandlerFunc, txt []namestest.TXT, ttl int) *world {
	w := &world{t: t, ca: namestest.NewCA(t), pages: pages, hits: map[string]int{}, dir: t.TempDir(),
		now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	hosts := map[string]string{}
	var certNames []string
	for name := range pages {
		hosts[name] = "127.0.0.1"
		certNames = append(certNames, name)
	}
	certNames = append(certNames, "untrusted-elsewhere.test")
	w.https = httptest.NewUnstartedServer(http.HandlerFunc(w.serve))
	w.https.TLS = &tls.Config{Certificates: []tls.Certificate{w.ca.Certificate(t, certNames...)}}
	w.https.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted-certificate test's handshake
	w.https.StartTLS()
	t.Cleanup(w.https.Close)
	w.dns = namestest.StartDNS(t, namestest.DNSConfig{TXT: txt, Hosts: hosts, TTL: ttl})
	return w
}

func (w *world) serve(rw http.ResponseWriter, r *http.Request) {
	host, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		host = r.Host
	}
	w.mu.Lock()
	w.hits[host]++
	h := w.pages[host]
	w.mu.Unlock()
	if h == nil || r.URL.Path != "/.well-known/dat" {
		http.NotFound(rw, r)
		return
	}
	h(rw, r)
}

func (w *world) hitsFor(name string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.hits[name]
}

func (w *world) setPage(name string, h http.HandlerFunc) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pages[name] = h
}

func (w *world) clock() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.now
}

func (w *world) advance(d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.now = w.now.Add(d)
}

// options resolve through the world: addresses and TXT records from its
// dnsmasq, port 443 of every name to its HTTPS server, its CA trusted.
func (w *world) options() Options {
	_, httpsPort, _ := net.SplitHostPort(w.https.Listener.Addr().String())
	dnsAddr := w.dns.Addr
	d := &net.Dialer{Resolver: &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, dnsAddr)
	}}}
	return Options{
		CacheDir:  w.dir,
		DNSServer: dnsAddr,
		RootCAs:   w.ca.Pool,
		Timeout:   3 * time.Second,
		Now:       w.clock,
		Warn:      func(m string) { w.t.Logf("warning: %s", m) },
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if host, port, err := net.SplitHostPort(addr); err == nil && port == "443" {
				addr = net.JoinHostPort(host, httpsPort)
			}
			return d.DialContext(ctx, network, addr)
		},
	}
}

func (w *world) resolver() *Resolver { return New(w.options()) }

func text(s string) http.HandlerFunc {
	return func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(rw, s)
	}
}

func redirect(to string) http.HandlerFunc {
	return func(rw http.ResponseWriter, r *http.Request) { http.Redirect(rw, r, to, http.StatusFound) }
}

func status(code int) http.HandlerFunc {
	return func(rw http.ResponseWriter, r *http.Request) { http.Error(rw, http.StatusText(code), code) }
}

func TestHTTPS(t *testing.T) {
	a := keyA.String()
	w := newWorld(t, map[string]http.HandlerFunc{
		"good.test":      text("dat://" + a + "\nTTL=120\n"),
		"slash.test":     text("  dat://" + a + "/  \r\n\r\n"),
		"upper.test":     text("\xef\xbb\xbfDAT://" + strings.ToUpper(a) + "\nsomething else\nttl=300"),
		"zero.test":      text("dat://" + a + "\nTTL=0\n"),
		"longttl.test":   text("dat://" + a + "\nTTL=99999999999999999999999\n"),
		"to-https.test":  redirect("https://good.test/.well-known/dat"),
		"badhex.test":    text("dat://" + a[:60] + "zzzz\n"),
		"scheme.test":    text("hyper://" + a + "\n"),
		"empty.test":     text(""),
		"spaces.test":    text(" \n\n"),
		"huge.test":      text("dat://" + a + "\n" + strings.Repeat("#", 5000)),
		"badttl.test":    text("dat://" + a + "\nTTL=soon\n"),
		"html.test":      text("<!DOCTYPE html>\n<html><title>Home</title></html>\n"),
		"to-http.test":   redirect("http://good.test/.well-known/dat"),
		"missing.test":   status(http.StatusNotFound),
		"gone.test":      status(http.StatusGone),
		"broken.test":    status(http.StatusInternalServerError),
		"redirects.test": redirect("https://redirects.test/.well-known/dat"),
	}, nil, 0)
	for _, tc := range []struct {
		name string
		ttl  time.Duration
		kind error  // the error, or nil
		msg  string // in the error
	}{
		{name: "good.test", ttl: 120 * time.Second},
		{name: "slash.test", ttl: DefaultTTL},
		{name: "upper.test", ttl: 300 * time.Second},
		{name: "zero.test", ttl: MinTTL},
		{name: "longttl.test", ttl: MaxTTL},
		{name: "to-https.test", ttl: 120 * time.Second},
		{name: "badhex.test", kind: ErrMalformed, msg: `line 1 of https://badhex.test/.well-known/dat is not dat://<64 hex>: "dat://a0a1`},
		{name: "scheme.test", kind: ErrMalformed, msg: "line 1 of https://scheme.test/.well-known/dat is not dat://<64 hex>"},
		{name: "empty.test", kind: ErrMalformed, msg: "https://empty.test/.well-known/dat is empty; its line 1 should be dat://<64 hex>"},
		{name: "spaces.test", kind: ErrMalformed, msg: "is empty"},
		{name: "huge.test", kind: ErrMalformed, msg: "https://huge.test/.well-known/dat is larger than 4096 bytes"},
		{name: "badttl.test", kind: ErrMalformed, msg: `line 2 of https://badttl.test/.well-known/dat is not TTL=<seconds>: "TTL=soon"`},
		{name: "html.test", kind: ErrMalformed, msg: `line 1 of https://html.test/.well-known/dat is not dat://<64 hex>: "<!DOCTYPE html>"`},
		{name: "to-http.test", kind: ErrMalformed, msg: "https://to-http.test/.well-known/dat redirects to http://good.test/.well-known/dat, which is not HTTPS"},
		{name: "missing.test", kind: ErrNotFound, msg: "https://missing.test/.well-known/dat answered 404 Not Found"},
		{name: "gone.test", kind: ErrNotFound, msg: "answered 410 Gone"},
		{name: "broken.test", kind: ErrUnreachable, msg: "https://broken.test/.well-known/dat answered 500 Internal Server Error"},
		{name: "redirects.test", kind: ErrUnreachable, msg: "stopped after 5 redirects"},
		{name: "nohost.test", kind: ErrNotFound, msg: "https://nohost.test/.well-known/dat: no such host nohost.test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := New(w.options()).Resolve(context.Background(), tc.name)
			if tc.kind == nil {
				if err != nil {
					t.Fatal(err)
				}
				if res.Key != keyA || res.Source != SourceHTTPS || res.Origin != SourceHTTPS || res.TTL != tc.ttl || res.Stale || res.Name != tc.name {
					t.Fatalf("result %+v", res)
				}
				if !res.Fetched.Equal(w.clock()) || res.URL() != "dat://"+a+"/" {
					t.Fatalf("result %+v", res)
				}
				return
			}
			if err == nil {
				t.Fatalf("resolved to %+v, want an error", res)
			}
			checkErr(t, err, tc.kind, tc.msg)
			var me *MethodError
			if !errors.As(err, &me) || me.Method != SourceHTTPS || !errors.Is(me, tc.kind) {
				t.Fatalf("errors.As(MethodError) = %+v", me)
			}
			// The DNS side found nothing: NXDOMAIN or no TXT record.
			var e *Error
			if !errors.As(err, &e) || !errors.Is(e.DNS, ErrNotFound) {
				t.Fatalf("DNS part: %v", e.DNS)
			}
		})
	}
}

// checkErr wants err to match kind (and no other kind) and to hold msg, in
// one line.
func checkErr(t *testing.T, err error, kind error, msg string) {
	t.Helper()
	for _, k := range []error{ErrNotFound, ErrMalformed, ErrUnreachable, ErrInvalidName} {
		if errors.Is(err, k) != (k == kind) {
			t.Errorf("errors.Is(err, %v) = %v; err: %v", k, errors.Is(err, k), err)
		}
	}
	if !strings.Contains(err.Error(), msg) || strings.Contains(err.Error(), "\n") {
		t.Errorf("error %q\nwant one line containing %q", err, msg)
	}
}

func TestHTTPSUntrustedCertificate(t *testing.T) {
	w := newWorld(t, map[string]http.HandlerFunc{"good.test": text("dat://" + keyA.String())}, nil, 0)
	o := w.options()
	o.RootCAs = namestest.NewCA(t).Pool
	_, err := New(o).Resolve(context.Background(), "good.test")
	checkErr(t, err, ErrUnreachable, "https://good.test/.well-known/dat: the server's certificate is not trusted")
}

func txt(name string, strings ...string) namestest.TXT {
	return namestest.TXT{Name: name, Strings: strings}
}

func TestDNS(t *testing.T) {
	a, b := keyA.String(), keyB.String()
	w := newWorld(t, map[string]http.HandlerFunc{}, []namestest.TXT{
		txt("txt.test", "datkey="+a),
		txt("spf.test", "v=spf1 -all"), txt("spf.test", "datkey="+a), txt("spf.test", "google-site-verification=xyz"),
		txt("split.test", "datkey="+a[:30], a[30:]),
		txt("quoted.test", `"datkey=`+a+`"`),
		txt("twice.test", "datkey="+a), txt("twice.test", "DATKEY="+strings.ToUpper(a)),
		txt("bad-and-good.test", "datkey=nonsense"), txt("bad-and-good.test", "datkey="+a),
		txt("badtxt.test", "datkey="+a[:63]),
		txt("two.test", "datkey="+a), txt("two.test", "datkey="+b),
		txt("none.test", "hello"),
	}, 300)
	for _, tc := range []struct {
		name string
		kind error
		msg  string
	}{
		{name: "txt.test"},
		{name: "spf.test"},
		{name: "split.test"},
		{name: "quoted.test"},
		{name: "twice.test"},
		{name: "bad-and-good.test"},
		{name: "TXT.test."},
		{name: "badtxt.test", kind: ErrMalformed, msg: `DNS: the TXT record of badtxt.test is not datkey=<64 hex>: "datkey=a0a1`},
		{name: "two.test", kind: ErrMalformed, msg: "DNS: two.test has TXT records naming two different keys"},
		{name: "none.test", kind: ErrNotFound, msg: "DNS: none.test has no TXT record datkey=<64 hex> (asked " + w.dns.Addr + ")"},
		{name: "nx.test", kind: ErrNotFound, msg: "DNS: nx.test does not exist (NXDOMAIN from " + w.dns.Addr + ")"},
		{name: "example.org", kind: ErrUnreachable, msg: "DNS: TXT example.org: " + w.dns.Addr + " answered REFUSED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := w.options()
			o.CacheDir = ""
			res, err := New(o).Resolve(context.Background(), tc.name)
			if tc.kind == nil {
				if err != nil {
					t.Fatal(err)
				}
				if res.Key != keyA || res.Source != SourceDNS || res.TTL != 300*time.Second || res.Name != strings.ToLower(strings.TrimSuffix(tc.name, ".")) {
					t.Fatalf("result %+v", res)
				}
				return
			}
			if err == nil {
				t.Fatalf("resolved to %+v, want an error", res)
			}
			checkErr(t, err, tc.kind, tc.msg)
			// HTTPS found no host: dnsmasq has no address for these names.
			var e *Error
			if !errors.As(err, &e) || !strings.Contains(e.HTTPS.Error(), "no such host") && !strings.Contains(e.HTTPS.Error(), "server misbehaving") {
				t.Fatalf("HTTPS part: %v", e.HTTPS)
			}
		})
	}
}

// The TTL of the TXT record is the answer's, within the bounds.
func TestDNSTTL(t *testing.T) {
	for _, tc := range []struct {
		ttl  int
		want time.Duration
	}{{0, MinTTL}, {59, MinTTL}, {61, 61 * time.Second}, {7200, 2 * time.Hour}, {9999999, MaxTTL}} {
		dns := namestest.StartDNS(t, namestest.DNSConfig{TTL: tc.ttl, TXT: []namestest.TXT{txt("ttl.test", "datkey="+keyB.String())}})
		res, err := New(Options{DNSServer: dns.Addr}).Resolve(context.Background(), "ttl.test")
		if err != nil {
			t.Fatal(err)
		}
		if res.TTL != tc.want || res.Key != keyB || res.Source != SourceDNS {
			t.Errorf("TTL %d: result %+v, want TTL %v", tc.ttl, res, tc.want)
		}
		dns.Stop()
	}
}

// Without DNSServer, the servers of resolv.conf are asked in turn.
func TestDNSSystemResolver(t *testing.T) {
	dns := namestest.StartDNS(t, namestest.DNSConfig{TTL: 600, TXT: []namestest.TXT{txt("sys.test", "datkey="+keyB.String())}})
	host, port, _ := net.SplitHostPort(dns.Addr)
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	// Nothing answers at 127.0.0.2 (dnsmasq listens on 127.0.0.1 only):
	// the second server answers.
	os.WriteFile(conf, []byte("# test\nnameserver 127.0.0.2\nnameserver "+host+"\noptions ndots:1\n"), 0o644)
	r := New(Options{ResolvConf: conf, Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		// resolv.conf has no ports: the test's server is on another one.
		if h, p, _ := net.SplitHostPort(addr); p == "53" {
			addr = net.JoinHostPort(h, port)
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}})
	a, err := r.lookupDNS(context.Background(), "sys.test")
	if err != nil || a.key != keyB || a.ttl != 600*time.Second || a.source != SourceDNS {
		t.Fatalf("lookup = %+v, %v", a, err)
	}
	// No server answers: both failures are named.
	os.WriteFile(conf, []byte("nameserver 127.0.0.2\nnameserver 127.0.0.3\n"), 0o644)
	_, err = r.lookupDNS(context.Background(), "sys.test")
	checkErr(t, err, ErrUnreachable, "TXT sys.test: 127.0.0.2:53: ")
	if !strings.Contains(err.Error(), "127.0.0.3:53: ") {
		t.Fatalf("error %q does not name the second server", err)
	}
}
