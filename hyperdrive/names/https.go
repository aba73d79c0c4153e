package names

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
)

// maxWellKnown bounds the body of /.well-known/dat.
const maxWellKnown = 4 << 10

// maxRedirects bounds the HTTPS redirects followed.
const maxRedirects = 5

// insecureRedirect refuses a redirect away from HTTPS.
type insecureRedirect struct{ to string }

func (e *insecureRedirect) Error() string {
	return "redirects to " + e.to + ", which is not HTTPS"
}

func checkRedirect(req *http.Request, via []*http.Request) error {
	if req.URL.Scheme != "https" {
		return &insecureRedirect{to: req.URL.Redacted()}
	}
	if len(via) >= maxRedirects {
		return fmt.Errorf("stopped after %d redirects", maxRedirects)
	}
	return nil
}

// lookupHTTPS fetches and parses https://NAME/.well-known/dat.
func (r *Resolver) lookupHTTPS(ctx context.Context, name string) (answer, error) {
	where := "https://" + name + "/.well-known/dat"
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, where, nil)
	if err != nil {
		return answer{}, methodErr(SourceHTTPS, ErrUnreachable, err, "%s: %v", where, err)
	}
	req.Header.Set("Accept", "text/plain")
	req.Header.Set("User-Agent", "beaker-dev")
	resp, err := r.client.Do(req)
	if err != nil {
		return answer{}, httpsFailure(where, err, r.opts.Timeout)
	}
	defer resp.Body.Close()
	if final := resp.Request.URL.String(); final != where {
		where += " (redirected to " + final + ")"
	}
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return answer{}, methodErr(SourceHTTPS, ErrNotFound, nil, "%s answered %s", where, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return answer{}, methodErr(SourceHTTPS, ErrUnreachable, nil, "%s answered %s", where, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxWellKnown+1))
	if err != nil {
		return answer{}, httpsFailure(where, err, r.opts.Timeout)
	}
	if len(body) > maxWellKnown {
		return answer{}, methodErr(SourceHTTPS, ErrMalformed, nil, "%s is larger than %d bytes; it should hold two short lines", where, maxWellKnown)
	}
	key, ttl, err := ParseWellKnown(body)
	if err != nil {
		return answer{}, methodErr(SourceHTTPS, ErrMalformed, err, "%s", err.(*lineError).in(where))
	}
	return answer{key: key, source: SourceHTTPS, ttl: ttl}, nil
}

// httpsFailure classifies an error of the request itself.
func httpsFailure(where string, err error, timeout time.Duration) error {
	var redirect *insecureRedirect
	var dnsErr *net.DNSError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	if ue, ok := err.(*url.Error); ok {
		err = ue.Err
	}
	switch {
	case errors.As(err, &redirect):
		return methodErr(SourceHTTPS, ErrMalformed, err, "%s %v", where, err)
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return methodErr(SourceHTTPS, ErrNotFound, err, "%s: no such host %s", where, dnsErr.Name)
	case errors.As(err, &unknownCA), errors.As(err, &hostErr), errors.As(err, &invalid), errors.As(err, &verify):
		return methodErr(SourceHTTPS, ErrUnreachable, err, "%s: the server's certificate is not trusted (%v)", where, err)
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return methodErr(SourceHTTPS, ErrUnreachable, err, "%s: no answer within %v", where, timeout)
	}
	return methodErr(SourceHTTPS, ErrUnreachable, err, "%s: %s", where, netErrText(err))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// netErrText phrases a network error briefly: "connection refused"
// rather than the whole chain of socket operations and addresses.
func netErrText(err error) string {
	prefix := ""
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		prefix = "looking up " + dnsErr.Name + ": "
	}
	var errno syscall.Errno
	switch {
	case isTimeout(err):
		return prefix + "no answer"
	case errors.As(err, &errno):
		return prefix + errno.Error()
	case dnsErr != nil:
		// The resolver's message names sockets; its last part says why.
		why := dnsErr.Err
		if i := strings.LastIndex(why, ": "); i >= 0 {
			why = why[i+2:]
		}
		return prefix + why
	}
	return err.Error()
}

// lineError says which line of a /.well-known/dat file is wrong.
type lineError struct {
	line int    // 1-based; 0: the file is empty
	want string // what the line should be
	got  string // what it is
}

func (e *lineError) Error() string { return e.in("") }

// in phrases the error for the file at where ("" when unknown).
func (e *lineError) in(where string) string {
	file := "the file"
	if where != "" {
		file = where
	}
	if e.line == 0 {
		return fmt.Sprintf("%s is empty; its line 1 should be %s", file, e.want)
	}
	if where != "" {
		file = "line " + strconv.Itoa(e.line) + " of " + where
	} else {
		file = "line " + strconv.Itoa(e.line)
	}
	return fmt.Sprintf("%s is not %s: %s", file, e.want, quoteShort(e.got))
}

// ParseWellKnown parses a /.well-known/dat file: line 1 dat://KEY (64 hex
// characters, either case; surrounding spaces and a trailing slash are
// fine), then optionally a line TTL=SECONDS (larger than MaxTTL reads as
// MaxTTL). Blank and unknown lines are ignored. ttl is -1 when no TTL
// line is given. An error names the line and what is wrong with it.
func ParseWellKnown(body []byte) (key hyperdrive.PublicKey, ttl time.Duration, err error) {
	const wantKey, wantTTL = "dat://<64 hex>", "TTL=<seconds>"
	body = bytes.TrimPrefix(body, []byte("\xef\xbb\xbf"))
	if len(bytes.TrimSpace(body)) == 0 {
		return key, 0, &lineError{want: wantKey}
	}
	lines := strings.Split(string(body), "\n")
	first := strings.TrimSpace(lines[0])
	k, ok := cutPrefixFold(first, "dat://")
	if ok {
		key, err = hyperdrive.ParsePublicKey(strings.TrimSuffix(k, "/"))
	}
	if !ok || err != nil {
		return hyperdrive.PublicKey{}, 0, &lineError{line: 1, want: wantKey, got: first}
	}
	for i, line := range lines[1:] {
		line = strings.TrimSpace(line)
		v, ok := cutPrefixFold(line, "ttl=")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return hyperdrive.PublicKey{}, 0, &lineError{line: i + 2, want: wantTTL, got: line}
		}
		if err != nil || n > uint64(MaxTTL/time.Second) {
			n = uint64(MaxTTL / time.Second)
		}
		return key, time.Duration(n) * time.Second, nil
	}
	return key, -1, nil
}

// quoteShort quotes s for a one-line message, cut to 60 bytes.
func quoteShort(s string) string {
	if len(s) > 60 {
		return strconv.Quote(s[:60]) + "..."
	}
	return strconv.Quote(s)
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}
