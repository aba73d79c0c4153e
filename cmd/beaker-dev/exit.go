package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
	"github.com/beaker-dev/beaker-dev/hyperdrive/names"
	"github.com/beaker-dev/beaker-dev/publish"
	"github.com/beaker-dev/beaker-dev/templates"
)

// Exit statuses, documented in docs/CLI.md. Scripts may rely on them.
const (
	exitOK          = 0
	exitFailure     = 1   // an unexpected failure: I/O error, bug
	exitUsage       = 2   // unknown command or flag, wrong arguments
	exitNotFound    = 3   // no such site, archive, version, tag, file or key
	exitInvalid     = 4   // input refused: bad tag, existing tag, bad URL or key file
	exitLocked      = 5   // another process is writing the archive
	exitCorrupt     = 6   // stored data failed verification
	exitNetwork     = 7   // no peer could be reached, or a peer's data was refused
	exitInterrupted = 130 // stopped by SIGINT or SIGTERM
)

// usageError marks mistakes in the command line itself.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// userError carries a message and exit status chosen by a command.
type userError struct {
	code int
	msg  string
	err  error
}

func (e *userError) Error() string { return e.msg }
func (e *userError) Unwrap() error { return e.err }

// exitCode maps an error to the exit status and the one line printed.
func exitCode(err error) (int, string) {
	var ue *userError
	var use *usageError
	var le *hyperdrive.LockedError
	var ce *hyperdrive.CorruptError
	msg := clean(err)
	switch {
	case errors.As(err, &ue):
		return ue.code, ue.msg
	case errors.As(err, &use):
		return exitUsage, use.msg + " (see beaker-dev help)"
	case errors.Is(err, context.Canceled):
		return exitInterrupted, "interrupted"
	case errors.As(err, &le):
		return exitLocked, msg + "; wait for it to finish or stop it, then run this again"
	case errors.Is(err, hyperdrive.ErrForked):
		return exitNetwork, msg + "; someone signed two histories with this site's key (a copied key or a restored backup); the evidence is in the archive's forks file"
	case errors.As(err, &ce), errors.Is(err, hyperdrive.ErrMalformed), errors.Is(err, hyperdrive.ErrBadSignature):
		return exitCorrupt, msg + "; run beaker-dev verify for a full report"
	case errors.Is(err, names.ErrInvalidName):
		return exitInvalid, msg + "; give a DNS name such as example.com, or a dat://KEY URL"
	case errors.Is(err, names.ErrMalformed):
		return exitInvalid, msg + "; the name's owner must fix it (beaker-dev info prints the file to serve)"
	case errors.Is(err, names.ErrUnreachable) && errors.As(err, new(*tls.CertificateVerificationError)):
		return exitNetwork, msg + "; the site must use a certificate this system trusts (SSL_CERT_FILE can name a private CA's), else check the network"
	case errors.Is(err, names.ErrUnreachable):
		return exitNetwork, msg + "; check the network, or ask another DNS server (beaker-dev resolve NAME --resolver HOST:PORT)"
	case errors.Is(err, names.ErrNotFound):
		return exitNotFound, msg + "; the site's owner can publish its key there (beaker-dev info shows how), or use the site's dat://KEY URL"
	case errors.Is(err, publish.ErrNotSite):
		return exitNotFound, msg + "; run beaker-dev init in it first"
	case errors.Is(err, hyperdrive.ErrNoArchive):
		return exitNotFound, msg + "; check --data-dir, or clone the site"
	case errors.Is(err, hyperdrive.ErrNoVersion):
		return exitNotFound, msg + "; beaker-dev log lists the versions"
	case errors.Is(err, hyperdrive.ErrNoTag):
		return exitNotFound, msg + "; beaker-dev log lists the tags"
	case errors.Is(err, hyperdrive.ErrNoKey), errors.Is(err, hyperdrive.ErrReadOnly):
		return exitNotFound, msg + "; only the machine holding the secret key can write it (see beaker-dev keys import)"
	case errors.Is(err, hyperdrive.ErrNotFound):
		return exitNotFound, msg
	case errors.Is(err, hyperdrive.ErrTagExists):
		return exitInvalid, msg
	case errors.Is(err, hyperdrive.ErrInvalidTag), errors.Is(err, hyperdrive.ErrBadURL),
		errors.Is(err, hyperdrive.ErrKeyFormat), errors.Is(err, templates.ErrNoScaffold):
		return exitInvalid, msg
	case errors.Is(err, publish.ErrNotEmpty):
		return exitInvalid, msg + "; give a new or empty folder"
	case errors.Is(err, publish.ErrDataDirInSite):
		return exitInvalid, msg
	}
	return exitFailure, msg
}

// clean drops the package prefixes that wrapped errors accumulate.
func clean(err error) string {
	s := err.Error()
	for _, p := range []string{"hyperdrive: ", "publish: ", "templates: ", "names: "} {
		s = strings.ReplaceAll(s, p, "")
	}
	return s
}
