package hyperdrive

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Callers match them with errors.Is; the messages are
// prefixed "hyperdrive:" so they read well when wrapped.
var (
	// ErrNotFound: no such file or directory in the version read.
	ErrNotFound = errors.New("hyperdrive: not found")
	// ErrNoVersion: the archive has no such version (log length).
	ErrNoVersion = errors.New("hyperdrive: no such version")
	// ErrNoTag: the archive has no tag of that name.
	ErrNoTag = errors.New("hyperdrive: no such tag")
	// ErrTagExists: tags are unique and immutable.
	ErrTagExists = errors.New("hyperdrive: tag already exists")
	// ErrInvalidTag: a tag name that is not semantic versioning.
	ErrInvalidTag = errors.New("hyperdrive: tag is not a semantic version")
	// ErrInvalidPath: a path that is not absolute, clean UTF-8.
	ErrInvalidPath = errors.New("hyperdrive: invalid path")
	// ErrReadOnly: writing needs the archive's secret key.
	ErrReadOnly = errors.New("hyperdrive: archive is read-only (no secret key)")
	// ErrNoArchive: the store holds no archive for that key.
	ErrNoArchive = errors.New("hyperdrive: no such archive")
	// ErrNoKey: the store holds no secret key for that archive.
	ErrNoKey = errors.New("hyperdrive: no secret key for archive")
	// ErrBadSignature: a signature does not verify.
	ErrBadSignature = errors.New("hyperdrive: bad signature")
	// ErrBadProof: a Merkle proof does not lead to the signed root.
	ErrBadProof = errors.New("hyperdrive: bad proof")
	// ErrChunkMissing: a chunk a file needs is not stored locally.
	ErrChunkMissing = errors.New("hyperdrive: chunk not stored")
	// ErrMalformed: bytes that do not decode as the format requires.
	ErrMalformed = errors.New("hyperdrive: malformed record")
	// ErrClosed: the archive was closed.
	ErrClosed = errors.New("hyperdrive: archive closed")
)

// LockedError reports that another writer holds an archive's lock.
type LockedError struct {
	Path   string // the lock file
	Holder string // what the holder wrote into it: pid, host, command, since
}

func (e *LockedError) Error() string {
	if e.Holder == "" {
		return fmt.Sprintf("hyperdrive: archive is locked by another writer (%s)", e.Path)
	}
	return fmt.Sprintf("hyperdrive: archive is locked by %s", e.Holder)
}

// CorruptError names the first record of an archive's storage that failed a
// check: which file, which record, at which byte offset, and why.
type CorruptError struct {
	File   string // storage file name, e.g. "entries"
	Record uint64 // record number within the file (entry seq, node index, ...)
	Offset int64  // byte offset of the record in the file
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("hyperdrive: %s record %d (byte %d): %s", e.File, e.Record, e.Offset, e.Reason)
}

// reason turns a wrapped decoding error into a CorruptError reason, without
// repeating the package prefix.
func reason(err error) string {
	s := err.Error()
	for _, p := range []string{"hyperdrive: malformed record: ", "hyperdrive: "} {
		s = strings.TrimPrefix(s, p)
	}
	return s
}

// Is makes every CorruptError match ErrMalformed.
func (e *CorruptError) Is(target error) bool { return target == ErrMalformed }
