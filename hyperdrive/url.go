package hyperdrive

import (
	"fmt"
	"regexp"
	"strings"
)

// URL is a parsed dat:// URL: dat://HOST[+VERSION|@TAG]/PATH, where HOST is
// a 64-hex public key or a DNS name to resolve. Version holds what followed
// "+" or "@" ("42", "latest", "2.1.0"), with its sign: "+42", "@2.1.0".
type URL struct {
	Key     PublicKey // set when Host is a key
	Host    string    // the key in hex, or a DNS name
	Version string    // "", "+N", "+latest" or "@TAG"
	Path    string    // "/" at least
}

// IsName reports whether the host is a DNS name rather than a key.
func (u URL) IsName() bool { return u.Key == (PublicKey{}) }

// String formats the URL canonically.
func (u URL) String() string { return "dat://" + u.Host + u.Version + u.Path }

var (
	hexKey   = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
	hostName = regexp.MustCompile(`^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,63}\.?$|^localhost$`)
)

// ErrBadURL reports a string that is not a dat:// URL, key or name.
var ErrBadURL = fmt.Errorf("hyperdrive: not a dat:// URL")

// ParseURL parses "dat://KEY+5/path", "KEY", "dat://example.com@2.1.0/" and
// the like. The scheme may be left out.
func ParseURL(s string) (URL, error) {
	rest := strings.TrimSpace(s)
	if i := strings.Index(rest, "://"); i >= 0 {
		if !strings.EqualFold(rest[:i], "dat") && !strings.EqualFold(rest[:i], "hyper") {
			return URL{}, fmt.Errorf("%w: %q: the scheme is %s, want dat", ErrBadURL, s, rest[:i])
		}
		rest = rest[i+3:]
	}
	u := URL{Path: "/"}
	host := rest
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		host, u.Path = rest[:i], rest[i:]
	}
	if i := strings.IndexAny(host, "+@"); i >= 0 {
		host, u.Version = host[:i], host[i:]
		if len(u.Version) < 2 {
			return URL{}, fmt.Errorf("%w: %q: nothing after %s", ErrBadURL, s, u.Version)
		}
	}
	switch {
	case hexKey.MatchString(host):
		k, _ := ParsePublicKey(host)
		u.Key, u.Host = k, k.String()
	case hostName.MatchString(host):
		u.Host = strings.ToLower(strings.TrimSuffix(host, "."))
	default:
		return URL{}, fmt.Errorf("%w: %q: expected a 64-hex key or a DNS name", ErrBadURL, s)
	}
	return u, nil
}
