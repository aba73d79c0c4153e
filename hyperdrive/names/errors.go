package names

import (
	"errors"
	"fmt"
)

// The kinds of failure. Every error a [Resolver] returns for a lookup
// matches exactly one of them with errors.Is (or is the context's error).
var (
	// ErrInvalidName: the string is not a DNS name (nor a 64-hex key).
	ErrInvalidName = errors.New("names: not a DNS name")
	// ErrNotFound: the name publishes no key: NXDOMAIN, no datkey TXT
	// record, or a 404 for /.well-known/dat.
	ErrNotFound = errors.New("names: no dat key published")
	// ErrMalformed: an answer that is not a valid shortname record (the
	// message says what was wrong with it), or one that arrived over
	// plain HTTP.
	ErrMalformed = errors.New("names: malformed answer")
	// ErrUnreachable: the lookup could not complete: no answer in time, a
	// refused connection, an untrusted certificate, a server failure.
	ErrUnreachable = errors.New("names: lookup failed")
)

// MethodError is why one method (HTTPS or DNS) gave no key.
type MethodError struct {
	Method Source // SourceHTTPS or SourceDNS
	Kind   error  // ErrNotFound, ErrMalformed or ErrUnreachable
	Msg    string // what happened, in one line, naming the URL or server asked
	Err    error  // the underlying error, if any
}

func (e *MethodError) Error() string { return e.Msg }

// Is matches the error's kind.
func (e *MethodError) Is(target error) bool { return target == e.Kind }

func (e *MethodError) Unwrap() error { return e.Err }

func methodErr(m Source, kind error, cause error, format string, args ...any) *MethodError {
	return &MethodError{Method: m, Kind: kind, Msg: fmt.Sprintf(format, args...), Err: cause}
}

// Error reports that neither method gave a key for a name, with what each
// one found. It matches (errors.Is) one kind, the most useful to act on:
// ErrMalformed if either answer was malformed (the name's owner must fix
// it), else ErrUnreachable if either lookup failed (trying again may
// work), else ErrNotFound.
type Error struct {
	Name  string
	HTTPS error // from https://NAME/.well-known/dat
	DNS   error // from the TXT lookup
}

func (e *Error) Error() string {
	return fmt.Sprintf("names: no dat key for %s: HTTPS: %v; DNS: %v", e.Name, e.HTTPS, e.DNS)
}

// Kind returns the sentinel the error matches.
func (e *Error) Kind() error {
	for _, k := range []error{ErrMalformed, ErrUnreachable} {
		if errors.Is(e.HTTPS, k) || errors.Is(e.DNS, k) {
			return k
		}
	}
	return ErrNotFound
}

// Is matches the error's kind (see [Error.Kind]).
func (e *Error) Is(target error) bool { return target == e.Kind() }

// As finds a *MethodError among the two methods' errors, HTTPS first.
func (e *Error) As(target any) bool {
	return errors.As(e.HTTPS, target) || errors.As(e.DNS, target)
}
