// Package names resolves DNS shortnames to archive keys, as Beaker did for
// dat://example.com/ (DEP-0005): a site's owner publishes the archive's
// public key under a domain they control, and readers look the name up.
//
// A name publishes its key in either or both of two ways:
//
//   - HTTPS: https://NAME/.well-known/dat answers, in its first line,
//     dat://KEY (KEY: 64 hex characters; a trailing slash is fine), and
//     optionally in a later line TTL=SECONDS. Only HTTPS is trusted:
//     redirects may move to another HTTPS URL (at most 5), never to plain
//     HTTP. The certificate is checked against the system's trust store
//     (on Linux, SSL_CERT_FILE and SSL_CERT_DIR select it) unless
//     [Options] says otherwise. Bodies over 4 KiB are refused.
//   - DNS: a TXT record datkey=KEY on NAME, asked of the system's
//     resolvers (/etc/resolv.conf) or of one given server. The record's
//     TTL is the answer's TTL.
//
// A [Resolver] asks both at once. When the HTTPS answer is valid it wins,
// even if DNS answered first or differently, since TLS authenticates it
// and a plain DNS answer can be forged on the path; the DNS answer is used
// when HTTPS gives none. Beaker asked one after the other; asking both at
// once makes a name that has only a TXT record no slower to resolve than
// the HTTPS request's failure. When neither gives a key, the [Error] holds
// both methods' reasons.
//
// Answers are cached in one file (names.json) in a directory the caller
// chooses, for their TTL: [DefaultTTL] when none is given, at least
// [MinTTL] and at most [MaxTTL]. A fresh entry is used without touching
// the network. When a lookup fails and an expired entry exists, the entry
// is used and the [Result] says it is stale, unless both methods said the
// name publishes no key (its owner removed it). Failed lookups are not
// cached, so a record just deployed works at once.
package names

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
)

// TTL bounds. A TTL above MaxTTL is cut to it; one below MinTTL (even 0)
// is raised to it.
const (
	DefaultTTL = time.Hour
	MinTTL     = time.Minute
	MaxTTL     = 7 * 24 * time.Hour
)

// Source says where an answer came from.
type Source string

const (
	SourceHTTPS Source = "https" // https://NAME/.well-known/dat
	SourceDNS   Source = "dns"   // a TXT record datkey=KEY
	SourceCache Source = "cache" // the cache file, without asking the network
	SourceKey   Source = "key"   // the name was a key already
)

// Result is a resolved name.
type Result struct {
	Name    string // the name, lower case, without a trailing dot
	Key     hyperdrive.PublicKey
	Source  Source        // where this answer came from now
	Origin  Source        // the method that gave the key: SourceHTTPS or SourceDNS
	TTL     time.Duration // how long the answer may be cached, within the bounds
	Fetched time.Time     // when Origin gave it
	// Stale: the lookup failed (StaleReason says why) and an expired
	// cache entry was used.
	Stale       bool
	StaleReason error
}

// URL returns dat://KEY/.
func (r Result) URL() string { return r.Key.URL() }

// Expires returns when the answer stops being fresh.
func (r Result) Expires() time.Time { return r.Fetched.Add(r.TTL) }

// Options configure a Resolver. The zero value resolves with the system's
// trust store and DNS servers, and caches nothing.
type Options struct {
	// CacheDir holds the cache file, names.json ("": no cache). It is
	// created (mode 0700) when missing.
	CacheDir string
	// DNSServer, HOST:PORT, answers every DNS question, including the
	// address of NAME for the HTTPS request ("": the servers of
	// ResolvConf, and the system's usual lookup for addresses).
	DNSServer string
	// ResolvConf is the file naming the system's DNS servers (default
	// /etc/resolv.conf).
	ResolvConf string
	// HTTPClient makes the HTTPS requests (nil: a client of our own).
	// Its redirect policy is replaced by ours.
	HTTPClient *http.Client
	// RootCAs are the certificate authorities HTTPS trusts (nil: the
	// system's). Ignored with HTTPClient.
	RootCAs *x509.CertPool
	// Dial opens every connection, TCP for HTTPS and UDP or TCP for DNS
	// (nil: a net.Dialer). For "udp" it must return a net.PacketConn,
	// as net.Dialer does. Ignored by HTTPClient.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Timeout bounds each method's lookup (default 5s).
	Timeout time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Warn receives problems that do not stop a lookup: an unreadable or
	// unwritable cache file (default: ignored).
	Warn func(msg string)
}

// Resolver resolves names. It is safe for concurrent use.
type Resolver struct {
	opts   Options
	client *http.Client
	mu     sync.Mutex // serialises this process's cache file updates
}

// DefaultTimeout bounds each method's lookup when Options.Timeout is 0.
const DefaultTimeout = 5 * time.Second

// New returns a Resolver.
func New(opts Options) *Resolver {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ResolvConf == "" {
		opts.ResolvConf = "/etc/resolv.conf"
	}
	if opts.Dial == nil {
		d := &net.Dialer{}
		if opts.DNSServer != "" {
			// Addresses of names come from that server too.
			d.Resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, opts.DNSServer)
			}}
		}
		opts.Dial = d.DialContext
	}
	r := &Resolver{opts: opts}
	if opts.HTTPClient != nil {
		c := *opts.HTTPClient
		r.client = &c
	} else {
		r.client = &http.Client{Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         opts.Dial,
			TLSClientConfig:     &tls.Config{RootCAs: opts.RootCAs, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout: opts.Timeout,
			ForceAttemptHTTP2:   true,
			DisableKeepAlives:   true,
		}}
	}
	r.client.CheckRedirect = checkRedirect
	return r
}

// ParseName checks that s is a DNS name and returns it in lower case
// without a trailing dot. IP addresses are refused: a name is needed for
// the certificate and the TXT record. Internationalised names must be
// given in their ASCII (xn--) form.
func ParseName(s string) (string, error) {
	n := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("%w: %q %s", ErrInvalidName, s, why)
	}
	if n == "" {
		return bad("is empty")
	}
	if len(n) > 253 {
		return bad("is longer than 253 characters")
	}
	if net.ParseIP(n) != nil {
		return bad("is an IP address; a shortname is a DNS name")
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 {
			return bad("has an empty label or one longer than 63 characters")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return bad("has a label that starts or ends with '-'")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return bad(fmt.Sprintf("has the character %q; a DNS name has letters, digits, '-' and '.'", c))
			}
		}
	}
	return n, nil
}

// LooksLikeName reports whether s, a bare host (no scheme, version or
// path), reads as a DNS name to resolve rather than a key, a folder name or
// an IP address: a valid name with at least two labels whose last label
// (the top-level domain) starts with a letter. A caller deciding between a
// folder and a name should check for the folder first.
func LooksLikeName(s string) bool {
	n, err := ParseName(s)
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(n, '.')
	return i > 0 && n[i+1] >= 'a' && n[i+1] <= 'z'
}

// WellKnown returns the /.well-known/dat file that makes a domain name the
// archive key: "dat://KEY\nTTL=SECONDS\n".
func WellKnown(key hyperdrive.PublicKey, ttl time.Duration) string {
	return fmt.Sprintf("dat://%s\nTTL=%d\n", key, int64(ttl/time.Second))
}

// TXTRecord returns the value of the DNS TXT record that names the key:
// "datkey=KEY".
func TXTRecord(key hyperdrive.PublicKey) string { return "datkey=" + key.String() }

// answer is what one method found.
type answer struct {
	key    hyperdrive.PublicKey
	source Source
	ttl    time.Duration // -1: none given
}

// Resolve returns the key that name publishes. name is a DNS name
// ("example.com", a trailing dot allowed), or a 64-hex key, which
// resolves to itself. Errors match ErrInvalidName, ErrNotFound,
// ErrMalformed or ErrUnreachable, or are the context's error.
func (r *Resolver) Resolve(ctx context.Context, name string) (Result, error) {
	if len(name) == 64 {
		if k, err := hyperdrive.ParsePublicKey(name); err == nil {
			return Result{Name: k.String(), Key: k, Source: SourceKey, Origin: SourceKey}, nil
		}
	}
	n, err := ParseName(name)
	if err != nil {
		return Result{}, err
	}
	now := r.opts.Now()
	e, cached := r.cached(n)
	if cached && e.fresh(now) {
		return e.result(n, SourceCache), nil
	}
	a, err := r.lookup(ctx, n)
	if err != nil {
		if ctx.Err() != nil {
			return Result{}, ctx.Err()
		}
		if cached && !errors.Is(err, ErrNotFound) {
			res := e.result(n, SourceCache)
			res.Stale, res.StaleReason = true, err
			return res, nil
		}
		return Result{}, err
	}
	e = cacheEntry{Key: a.key, Source: a.source, Fetched: now.UTC().Truncate(time.Second), TTL: clampTTL(a.ttl)}
	r.remember(n, e)
	return e.result(n, a.source), nil
}

// clampTTL applies the default and the bounds.
func clampTTL(ttl time.Duration) time.Duration {
	switch {
	case ttl < 0:
		return DefaultTTL
	case ttl < MinTTL:
		return MinTTL
	case ttl > MaxTTL:
		return MaxTTL
	}
	return ttl.Truncate(time.Second)
}

// lookup asks HTTPS and DNS at once. A valid HTTPS answer wins; the DNS
// answer is used only when HTTPS gives none. Both goroutines have ended
// when it returns.
func (r *Resolver) lookup(ctx context.Context, name string) (answer, error) {
	ctx, cancel := context.WithCancel(ctx)
	type outcome struct {
		a   answer
		err error
	}
	httpsc, dnsc := make(chan outcome, 1), make(chan outcome, 1)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Go(func() {
		a, err := r.lookupHTTPS(ctx, name)
		httpsc <- outcome{a, err}
	})
	wg.Go(func() {
		a, err := r.lookupDNS(ctx, name)
		dnsc <- outcome{a, err}
	})
	h := <-httpsc
	if h.err == nil {
		return h.a, nil
	}
	d := <-dnsc
	if d.err == nil {
		return d.a, nil
	}
	return answer{}, &Error{Name: name, HTTPS: h.err, DNS: d.err}
}

func (r *Resolver) warn(format string, args ...any) {
	if r.opts.Warn != nil {
		r.opts.Warn(fmt.Sprintf(format, args...))
	}
}
