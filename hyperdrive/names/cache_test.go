package names

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/beaker-dev/beaker-dev/hyperdrive/names/namestest"
)

// HTTPS wins when it answers validly, whatever DNS says; DNS answers
// when HTTPS gives nothing; when neither does, both reasons are given.
func TestHTTPSPreferredOverDNS(t *testing.T) {
	a, b := keyA.String(), keyB.String()
	w := newWorld(t, map[string]http.HandlerFunc{
		"both.test":      text("dat://" + a + "\nTTL=900"),
		"https-500.test": status(http.StatusInternalServerError),
		"https-bad.test": text("hello"),
		"https-404.test": status(http.StatusNotFound),
		"nothing.test":   status(http.StatusNotFound),
	}, []namestest.TXT{
		txt("both.test", "datkey="+b),
		txt("https-500.test", "datkey="+b),
		txt("https-bad.test", "datkey="+b),
		txt("https-404.test", "datkey="+b),
		txt("nothing.test", "v=spf1 -all"),
		txt("dns-bad.test", "datkey=0"),
	}, 1200)
	for _, tc := range []struct {
		name   string
		key    string
		source Source
	}{
		{"both.test", a, SourceHTTPS},
		{"https-500.test", b, SourceDNS},
		{"https-bad.test", b, SourceDNS},
		{"https-404.test", b, SourceDNS},
	} {
		res, err := w.resolver().Resolve(context.Background(), tc.name)
		if err != nil || res.Key.String() != tc.key || res.Source != tc.source {
			t.Errorf("%s: %+v, %v; want %s from %s", tc.name, res, err, tc.key, tc.source)
		}
	}
	_, err := w.resolver().Resolve(context.Background(), "nothing.test")
	checkErr(t, err, ErrNotFound, "names: no dat key for nothing.test: HTTPS: https://nothing.test/.well-known/dat answered 404 Not Found; DNS: nothing.test has no TXT record datkey=<64 hex>")
	_, err = w.resolver().Resolve(context.Background(), "dns-bad.test")
	checkErr(t, err, ErrMalformed, "HTTPS: https://dns-bad.test/.well-known/dat: no such host dns-bad.test; DNS: the TXT record of dns-bad.test is not datkey=<64 hex>")
	var e *Error
	if !errors.As(err, &e) || e.Name != "dns-bad.test" || !errors.Is(e.HTTPS, ErrNotFound) || !errors.Is(e.DNS, ErrMalformed) {
		t.Fatalf("Error = %+v", e)
	}
}

func TestCache(t *testing.T) {
	w := newWorld(t, map[string]http.HandlerFunc{
		"site.test": text("dat://" + keyA.String() + "\nTTL=600\n"),
	}, []namestest.TXT{txt("txt.test", "datkey="+keyB.String())}, 1200)
	ctx := context.Background()
	res, err := w.resolver().Resolve(ctx, "site.test")
	if err != nil || res.Source != SourceHTTPS || res.TTL != 10*time.Minute {
		t.Fatalf("first lookup: %+v, %v", res, err)
	}
	if n := w.hitsFor("site.test"); n != 1 {
		t.Fatalf("%d HTTPS requests", n)
	}
	if _, err := w.resolver().Resolve(ctx, "txt.test"); err != nil {
		t.Fatal(err)
	}
	httpsHits, dnsQueries := w.hitsFor("site.test"), w.dns.Queries("site.test")+w.dns.Queries("txt.test")

	// Fresh entries, read by another Resolver (another process), make no
	// request at all.
	w.advance(10*time.Minute - time.Second)
	for _, name := range []string{"site.test", "SITE.test.", "txt.test"} {
		res, err := w.resolver().Resolve(ctx, name)
		if err != nil || res.Source != SourceCache || res.Stale {
			t.Fatalf("cached %s: %+v, %v", name, res, err)
		}
	}
	res, _ = w.resolver().Resolve(ctx, "site.test")
	if res.Key != keyA || res.Origin != SourceHTTPS || res.TTL != 10*time.Minute || !res.Expires().Equal(w.clock().Add(time.Second)) {
		t.Fatalf("cached result %+v", res)
	}
	if h, q := w.hitsFor("site.test"), w.dns.Queries("site.test")+w.dns.Queries("txt.test"); h != httpsHits || q != dnsQueries {
		t.Fatalf("fresh cache hits asked the network: %d HTTPS requests (was %d), %d DNS questions (was %d)", h, httpsHits, q, dnsQueries)
	}

	// Expired: asked again, and the entry is renewed.
	w.advance(time.Second)
	res, err = w.resolver().Resolve(ctx, "site.test")
	if err != nil || res.Source != SourceHTTPS || !res.Fetched.Equal(w.clock()) {
		t.Fatalf("expired entry: %+v, %v", res, err)
	}
	if n := w.hitsFor("site.test"); n != httpsHits+1 {
		t.Fatalf("%d HTTPS requests, want %d", n, httpsHits+1)
	}

	// The network fails: the stale entry is used, and says so.
	w.advance(time.Hour)
	w.https.Close()
	w.dns.Stop()
	for _, name := range []string{"site.test", "txt.test"} {
		res, err = w.resolver().Resolve(ctx, name)
		if err != nil || !res.Stale || res.Source != SourceCache || !errors.Is(res.StaleReason, ErrUnreachable) {
			t.Fatalf("stale %s: %+v, %v", name, res, err)
		}
	}
	if res.Key != keyB || res.Origin != SourceDNS || res.TTL != 20*time.Minute {
		t.Fatalf("stale result %+v", res)
	}
	// A name never resolved has nothing to fall back on.
	_, err = w.resolver().Resolve(ctx, "other.test")
	checkErr(t, err, ErrUnreachable, "names: no dat key for other.test: HTTPS: https://other.test/.well-known/dat: ")
}

// When the owner removes the name (both methods say so), the stale entry
// is not used.
func TestCacheNotUsedWhenNameRemoved(t *testing.T) {
	w := newWorld(t, map[string]http.HandlerFunc{
		"site.test": text("dat://" + keyA.String()),
	}, nil, 0)
	ctx := context.Background()
	if res, err := w.resolver().Resolve(ctx, "site.test"); err != nil || res.TTL != DefaultTTL {
		t.Fatalf("%+v, %v", res, err)
	}
	w.setPage("site.test", status(http.StatusNotFound))
	if res, err := w.resolver().Resolve(ctx, "site.test"); err != nil || res.Source != SourceCache {
		t.Fatalf("fresh entry: %+v, %v", res, err)
	}
	w.advance(DefaultTTL)
	_, err := w.resolver().Resolve(ctx, "site.test")
	checkErr(t, err, ErrNotFound, "answered 404 Not Found")
	// A malformed answer, on the other hand, may be a passing mistake.
	w.setPage("site.test", text("<html>"))
	res, err := w.resolver().Resolve(ctx, "site.test")
	if err != nil || !res.Stale || !errors.Is(res.StaleReason, ErrMalformed) {
		t.Fatalf("%+v, %v", res, err)
	}
}

func TestCacheFile(t *testing.T) {
	w := newWorld(t, map[string]http.HandlerFunc{
		"a.test": text("dat://" + keyA.String() + "\nTTL=86400"),
		"b.test": text("dat://" + keyB.String()),
	}, nil, 0)
	ctx := context.Background()
	path := filepath.Join(w.dir, CacheFile)
	// A garbage cache file is reported, ignored and replaced.
	os.WriteFile(path, []byte("\x00garbage{"), 0o600)
	var warnings []string
	o := w.options()
	o.Warn = func(m string) { warnings = append(warnings, m) }
	if _, err := New(o).Resolve(ctx, "a.test"); err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], path+": not a cache file") {
		t.Fatalf("warnings %q", warnings)
	}
	w.advance(time.Second)
	if _, err := w.resolver().Resolve(ctx, "b.test"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "version": 1,
  "names": {
    "a.test": {
      "key": "` + keyA.String() + `",
      "source": "https",
      "fetched": "2026-03-01T12:00:00Z",
      "ttl": 86400
    },
    "b.test": {
      "key": "` + keyB.String() + `",
      "source": "https",
      "fetched": "2026-03-01T12:00:01Z",
      "ttl": 3600
    }
  }
}
`
	if string(b) != want {
		t.Fatalf("cache file:\n%s\nwant:\n%s", b, want)
	}
	// Nothing but the file is left in the folder (temporary files renamed).
	entries, _ := os.ReadDir(w.dir)
	if len(entries) != 1 {
		t.Fatalf("cache folder holds %v", entries)
	}
	// The cache folder is created when missing.
	o = w.options()
	o.CacheDir = filepath.Join(w.dir, "new", "dir")
	if _, err := New(o).Resolve(ctx, "a.test"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(o.CacheDir, CacheFile)); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeCacheRejects(t *testing.T) {
	k := keyA.String()
	entry := func(name, key, source, fetched, ttl string) string {
		return `{"version":1,"names":{"` + name + `":{"key":"` + key + `","source":"` + source + `","fetched":"` + fetched + `","ttl":` + ttl + `}}}`
	}
	good := entry("a.test", k, "dns", "2026-01-02T03:04:05Z", "60")
	if m, err := decodeCache([]byte(good)); err != nil || len(m) != 1 || m["a.test"].Key != keyA || m["a.test"].TTL != time.Minute {
		t.Fatalf("good file: %v, %v", m, err)
	}
	for _, tc := range []struct{ in, msg string }{
		{"", "not a cache file"},
		{"[]", "not a cache file"},
		{`{"version":2,"names":{}}`, "version 2, want 1"},
		{`{"version":1,"names":{},"extra":1}`, "unknown field"},
		{good + "{}", "data after the object"},
		{entry("A.test", k, "dns", "2026-01-02T03:04:05Z", "60"), `entry "A.test": not a lower-case DNS name`},
		{entry("a..test", k, "dns", "2026-01-02T03:04:05Z", "60"), "not a lower-case DNS name"},
		{entry("a.test", strings.ToUpper(k), "dns", "2026-01-02T03:04:05Z", "60"), "key is not 64 lower-case hex"},
		{entry("a.test", k[:62], "dns", "2026-01-02T03:04:05Z", "60"), "key is not 64 lower-case hex"},
		{entry("a.test", k, "cache", "2026-01-02T03:04:05Z", "60"), `source "cache", want https or dns`},
		{entry("a.test", k, "dns", "yesterday", "60"), "fetched is not an RFC 3339 time"},
		{entry("a.test", k, "dns", "2026-01-02T03:04:05.5Z", "60"), "whole seconds"},
		{entry("a.test", k, "dns", "2026-01-02T03:04:05Z", "59"), "ttl 59 is outside [60, 604800]"},
		{entry("a.test", k, "dns", "2026-01-02T03:04:05Z", "604801"), "outside"},
		{entry("a.test", k, "dns", "2026-01-02T03:04:05Z", "1e3"), "not a cache file"},
		{`{"version":1,"names":{}}` + strings.Repeat(" ", maxCacheFile), "larger than"},
	} {
		if _, err := decodeCache([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("decodeCache(%.60q) = %v, want an error containing %q", tc.in, err, tc.msg)
		}
	}
}

func TestEncodeCacheKeepsNewest(t *testing.T) {
	m := map[string]cacheEntry{}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range maxCacheEntries + 10 {
		name := "n" + strings.Repeat("x", i%7) + "-" + itoa(i) + ".test"
		m[name] = cacheEntry{Key: keyA, Source: SourceDNS, Fetched: base.Add(time.Duration(i) * time.Second), TTL: time.Hour}
	}
	got, err := decodeCache(encodeCache(m))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != maxCacheEntries {
		t.Fatalf("%d entries kept", len(got))
	}
	for name, e := range got {
		if e.Fetched.Before(base.Add(10*time.Second)) || m[name] != e {
			t.Fatalf("kept %s %+v", name, e)
		}
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	s := ""
	for ; i > 0; i /= 10 {
		s = string(rune('0'+i%10)) + s
	}
	return s
}

func TestResolveKeyAndBadNames(t *testing.T) {
	r := New(Options{DNSServer: "127.0.0.1:1"})
	res, err := r.Resolve(context.Background(), strings.ToUpper(keyA.String()))
	if err != nil || res.Key != keyA || res.Source != SourceKey {
		t.Fatalf("key: %+v, %v", res, err)
	}
	for _, bad := range []string{"", "exa mple.com", "-a.test", "a-.test", "a..test", "10.0.0.1", "::1", "x_y.test", "dat://a.test/", strings.Repeat("a", 64) + ".test", strings.Repeat("abc.", 64) + "test"} {
		_, err := r.Resolve(context.Background(), bad)
		checkErr(t, err, ErrInvalidName, "names: not a DNS name: ")
	}
	// A cancelled lookup reports the cancellation.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Resolve(ctx, "a.test"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestLooksLikeName(t *testing.T) {
	for s, want := range map[string]bool{
		"example.com":      true,
		"Blog.Example.COM": true,
		"example.com.":     true,
		"xn--bcher-kva.ch": true,
		"my-site.test":     true,
		"localhost":        false,
		"site":             false,
		"index.2":          false,
		"10.0.0.1":         false,
		"my_site.com":      false,
		"./site":           false,
		"site/":            false,
		keyA.String():      false,
		"dat://a.com":      false,
		"":                 false,
	} {
		if got := LooksLikeName(s); got != want {
			t.Errorf("LooksLikeName(%q) = %v", s, got)
		}
	}
}

func TestWellKnownRoundTrip(t *testing.T) {
	file := WellKnown(keyA, DefaultTTL)
	if file != "dat://"+keyA.String()+"\nTTL=3600\n" {
		t.Fatalf("WellKnown = %q", file)
	}
	k, ttl, err := ParseWellKnown([]byte(file))
	if err != nil || k != keyA || ttl != DefaultTTL {
		t.Fatalf("ParseWellKnown = %v %v %v", k, ttl, err)
	}
	if TXTRecord(keyA) != "datkey="+keyA.String() {
		t.Fatal(TXTRecord(keyA))
	}
}
