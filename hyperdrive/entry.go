package hyperdrive

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"strings"
	"unicode/utf8"

	"github.com/Masterminds/semver/v3"
)

// EntryType says what a log entry records (FORMAT.md §4).
type EntryType uint8

const (
	// EntryManifest is entry 0 of every archive: format and chunking parameters.
	EntryManifest EntryType = 1
	// EntryPut sets a file's metadata and content.
	EntryPut EntryType = 2
	// EntryDelete removes a file.
	EntryDelete EntryType = 3
	// EntryTag names an earlier version with a semantic version.
	EntryTag EntryType = 4
)

func (t EntryType) String() string {
	switch t {
	case EntryManifest:
		return "manifest"
	case EntryPut:
		return "put"
	case EntryDelete:
		return "delete"
	case EntryTag:
		return "tag"
	}
	return fmt.Sprintf("EntryType(%d)", uint8(t))
}

// Format limits. Every decoder enforces them, so a peer cannot make us
// allocate more than this per record.
const (
	entryFormat     = 1        // first byte of every entry
	MaxEntrySize    = 64 << 10 // bytes of one encoded entry
	MaxPathSize     = 4096     // bytes of a path
	maxNameSize     = 255      // bytes of one path component
	maxMessageSize  = 4096     // bytes of a tag message
	maxContentLevel = 4        // levels of index blocks
	MaxChunkSize    = 64 << 10 // bytes of one stored chunk or index block
	maxInlineRefs   = 1024     // refs an entry or index block may hold
	maxFileSize     = 1 << 50  // bytes of one file (1 PiB)
	maxMode         = fs.ModePerm
)

// Ref addresses one stored chunk by its SHA-256. At content level 0 it is a
// data chunk of Size bytes; at level L > 0 it is an index block listing
// level L-1 refs that together cover Size bytes of the file.
type Ref struct {
	Hash Hash
	Size uint64
}

// Content is a file's chunk list: Refs at Level (0: data chunks inline; above:
// index blocks, see FORMAT.md §5).
type Content struct {
	Level uint8
	Refs  []Ref
}

// Equal reports whether two contents address the same bytes the same way.
func (c Content) Equal(o Content) bool {
	if c.Level != o.Level || len(c.Refs) != len(o.Refs) {
		return false
	}
	for i := range c.Refs {
		if c.Refs[i] != o.Refs[i] {
			return false
		}
	}
	return true
}

// ChunkParams are the Rabin chunker's parameters, fixed per archive by its
// manifest so every writer of it cuts the same bytes the same way.
type ChunkParams struct {
	Polynomial uint64 // irreducible, degree 53 or less
	Min, Max   uint32 // chunk size bounds in bytes
	AvgBits    uint8  // a cut happens where the fingerprint's low AvgBits bits are zero
	IndexBits  uint8  // an index block ends after a ref whose hash's low IndexBits bits are zero
}

// DefaultChunkParams: chunks of 8-64 KiB averaging 16 KiB; index blocks of
// about 256 refs.
var DefaultChunkParams = ChunkParams{
	Polynomial: 0x3DA3358B4DC173,
	Min:        8 << 10,
	Max:        MaxChunkSize,
	AvgBits:    13,
	IndexBits:  8,
}

// Manifest is the body of entry 0.
type Manifest struct {
	Format   uint64 // archive format version, 1
	Chunking ChunkParams
	Created  int64 // unix nanoseconds
}

const (
	archiveFormat = 1
	hashSHA256    = 1
)

// FileMeta is what a put entry says about a file besides its content.
type FileMeta struct {
	Mode  fs.FileMode // permission bits only
	Size  uint64
	MTime int64 // unix nanoseconds
}

// TagInfo is the body of a tag entry.
type TagInfo struct {
	Name    string // canonical semantic version, no "v"
	Target  uint64 // the version (log length) it names
	Time    int64  // unix nanoseconds
	Message string
}

// Entry is one log entry. Which fields are meaningful depends on Type.
type Entry struct {
	Type     EntryType
	Path     string   // put, delete
	File     FileMeta // put
	Content  Content  // put
	Tag      TagInfo  // tag
	Manifest Manifest // manifest
}

// MarshalBinary encodes e canonically (FORMAT.md §4).
func (e *Entry) MarshalBinary() ([]byte, error) {
	if err := e.validate(); err != nil {
		return nil, err
	}
	return e.appendBinary(make([]byte, 0, 64+len(e.Path)+len(e.Content.Refs)*(32+3))), nil
}

func (e *Entry) appendBinary(b []byte) []byte {
	b = append(b, entryFormat, byte(e.Type))
	switch e.Type {
	case EntryManifest:
		m := e.Manifest
		b = binary.AppendUvarint(b, m.Format)
		b = append(b, hashSHA256)
		b = binary.BigEndian.AppendUint64(b, m.Chunking.Polynomial)
		b = binary.AppendUvarint(b, uint64(m.Chunking.Min))
		b = binary.AppendUvarint(b, uint64(m.Chunking.Max))
		b = append(b, m.Chunking.AvgBits, m.Chunking.IndexBits)
		b = binary.AppendVarint(b, m.Created)
	case EntryPut:
		b = appendString(b, e.Path)
		b = binary.AppendUvarint(b, uint64(e.File.Mode))
		b = binary.AppendUvarint(b, e.File.Size)
		b = binary.AppendVarint(b, e.File.MTime)
		b = appendContent(b, e.Content)
	case EntryDelete:
		b = appendString(b, e.Path)
	case EntryTag:
		b = appendString(b, e.Tag.Name)
		b = binary.AppendUvarint(b, e.Tag.Target)
		b = binary.AppendVarint(b, e.Tag.Time)
		b = appendString(b, e.Tag.Message)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendContent(b []byte, c Content) []byte {
	b = append(b, c.Level)
	b = binary.AppendUvarint(b, uint64(len(c.Refs)))
	for _, r := range c.Refs {
		b = append(b, r.Hash[:]...)
		b = binary.AppendUvarint(b, r.Size)
	}
	return b
}

// UnmarshalBinary decodes an entry, accepting only the canonical encoding of a
// valid entry: exactly one byte string decodes to a given entry.
func (e *Entry) UnmarshalBinary(b []byte) error {
	if len(b) > MaxEntrySize {
		return fmt.Errorf("%w: entry of %d bytes exceeds %d", ErrMalformed, len(b), MaxEntrySize)
	}
	d := decoder{b: b}
	if f := d.byte(); f != entryFormat {
		if d.err != nil {
			return d.err
		}
		return fmt.Errorf("%w: entry format %d, this program reads format %d", ErrMalformed, f, entryFormat)
	}
	*e = Entry{Type: EntryType(d.byte())}
	switch e.Type {
	case EntryManifest:
		m := &e.Manifest
		m.Format = d.uvarint()
		if h := d.byte(); h != hashSHA256 && d.err == nil {
			d.fail("unknown hash algorithm %d", h)
		}
		m.Chunking.Polynomial = d.uint64()
		m.Chunking.Min = uint32(d.uvarintMax(MaxChunkSize))
		m.Chunking.Max = uint32(d.uvarintMax(MaxChunkSize))
		m.Chunking.AvgBits = d.byte()
		m.Chunking.IndexBits = d.byte()
		m.Created = d.varint()
	case EntryPut:
		e.Path = d.string(MaxPathSize)
		e.File.Mode = fs.FileMode(d.uvarintMax(uint64(maxMode)))
		e.File.Size = d.uvarintMax(maxFileSize)
		e.File.MTime = d.varint()
		e.Content = d.content()
	case EntryDelete:
		e.Path = d.string(MaxPathSize)
	case EntryTag:
		e.Tag.Name = d.string(maxNameSize)
		e.Tag.Target = d.uvarint()
		e.Tag.Time = d.varint()
		e.Tag.Message = d.string(maxMessageSize)
	default:
		if d.err == nil {
			d.fail("unknown entry type %d", e.Type)
		}
	}
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes after %s entry", ErrMalformed, len(d.b), e.Type)
	}
	return e.validate()
}

// validate checks the rules of FORMAT.md §4 that do not depend on the rest of
// the log.
func (e *Entry) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s entry: %s", ErrMalformed, e.Type, fmt.Sprintf(format, args...))
	}
	switch e.Type {
	case EntryManifest:
		m := e.Manifest
		if m.Format != archiveFormat {
			return bad("archive format %d, this program reads format %d", m.Format, archiveFormat)
		}
		c := m.Chunking
		if c.Min < 64 || c.Min > c.Max || c.Max > MaxChunkSize || c.AvgBits < 1 || c.AvgBits > 30 || c.IndexBits < 1 || c.IndexBits > 16 {
			return bad("chunking parameters out of range")
		}
		if c.Polynomial == 0 || c.Polynomial >= 1<<54 {
			return bad("chunking polynomial out of range")
		}
	case EntryPut:
		if err := ValidatePath(e.Path); err != nil {
			return bad("%v", err)
		}
		if e.File.Mode&^maxMode != 0 {
			return bad("mode %o has bits beyond permissions", e.File.Mode)
		}
		return validateContent(e.Content, e.File.Size, bad)
	case EntryDelete:
		if err := ValidatePath(e.Path); err != nil {
			return bad("%v", err)
		}
	case EntryTag:
		if _, err := CanonicalTag(e.Tag.Name); err != nil || !isCanonicalTag(e.Tag.Name) {
			return bad("tag %q is not a canonical semantic version", e.Tag.Name)
		}
		if !utf8.ValidString(e.Tag.Message) || len(e.Tag.Message) > maxMessageSize {
			return bad("tag message is not UTF-8 of at most %d bytes", maxMessageSize)
		}
	default:
		return bad("unknown type")
	}
	return nil
}

func validateContent(c Content, size uint64, bad func(string, ...any) error) error {
	if c.Level > maxContentLevel {
		return bad("content level %d above %d", c.Level, maxContentLevel)
	}
	if len(c.Refs) > maxInlineRefs {
		return bad("%d refs, at most %d inline", len(c.Refs), maxInlineRefs)
	}
	if size == 0 {
		if len(c.Refs) != 0 || c.Level != 0 {
			return bad("an empty file has no refs")
		}
		return nil
	}
	if len(c.Refs) == 0 {
		return bad("a file of %d bytes has no refs", size)
	}
	var sum uint64
	for _, r := range c.Refs {
		if r.Size == 0 || (c.Level == 0 && r.Size > MaxChunkSize) {
			return bad("ref size %d out of range", r.Size)
		}
		sum += r.Size
		if sum > maxFileSize {
			return bad("refs cover more than %d bytes", uint64(maxFileSize))
		}
	}
	if sum != size {
		return bad("refs cover %d bytes, the file has %d", sum, size)
	}
	return nil
}

// ValidatePath checks that p is an archive path: absolute, "/"-separated, clean
// (no empty, "." or ".." components, no trailing slash), valid UTF-8 without
// NUL or backslash, at most MaxPathSize bytes and 255 bytes a component.
func ValidatePath(p string) error {
	if len(p) < 2 || p[0] != '/' || len(p) > MaxPathSize {
		return fmt.Errorf("%w: %q must start with / and name a file", ErrInvalidPath, p)
	}
	if !utf8.ValidString(p) || strings.ContainsAny(p, "\x00\\") {
		return fmt.Errorf("%w: %q has invalid characters", ErrInvalidPath, p)
	}
	for _, c := range strings.Split(p[1:], "/") {
		if c == "" || c == "." || c == ".." || len(c) > maxNameSize {
			return fmt.Errorf("%w: %q is not clean", ErrInvalidPath, p)
		}
	}
	return nil
}

// CanonicalTag parses a tag name as a semantic version ("2.1.0"; "v2.1.0" is
// accepted) and returns its canonical form without "v". Build metadata
// ("+build") is refused because "+" starts a version number in dat:// URLs.
func CanonicalTag(name string) (string, error) {
	s := strings.TrimPrefix(name, "v")
	if strings.Contains(s, "+") {
		return "", fmt.Errorf("%w: %q: build metadata (+...) is not allowed in tags", ErrInvalidTag, name)
	}
	v, err := semver.StrictNewVersion(s)
	if err != nil {
		return "", fmt.Errorf("%w: %q: use MAJOR.MINOR.PATCH such as 2.1.0 (%v)", ErrInvalidTag, name, err)
	}
	return v.String(), nil
}

func isCanonicalTag(s string) bool {
	c, err := CanonicalTag(s)
	return err == nil && c == s
}

// decoder reads canonical encodings and records the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.fail("truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.b) < n {
		d.fail("truncated")
		return nil
	}
	s := d.b[:n]
	d.b = d.b[n:]
	return s
}

func (d *decoder) uint64() uint64 {
	s := d.bytes(8)
	if s == nil {
		return 0
	}
	return binary.BigEndian.Uint64(s)
}

// uvarint reads a minimal-length unsigned varint.
func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	if n > 1 && d.b[n-1] == 0 {
		d.fail("non-minimal varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarintMax(max uint64) uint64 {
	v := d.uvarint()
	if v > max {
		d.fail("value %d exceeds %d", v, max)
		return 0
	}
	return v
}

// varint reads a minimal-length zig-zag signed varint.
func (d *decoder) varint() int64 {
	u := d.uvarint()
	x := int64(u >> 1)
	if u&1 != 0 {
		x = ^x
	}
	return x
}

func (d *decoder) string(max int) string {
	n := d.uvarintMax(uint64(max))
	s := d.bytes(int(n))
	if d.err != nil {
		return ""
	}
	if !utf8.Valid(s) {
		d.fail("string is not UTF-8")
		return ""
	}
	return string(s)
}

func (d *decoder) content() Content {
	var c Content
	c.Level = d.byte()
	n := d.uvarintMax(maxInlineRefs)
	if d.err != nil {
		return c
	}
	if uint64(len(d.b)) < n*33 {
		d.fail("truncated ref list")
		return c
	}
	if n > 0 {
		c.Refs = make([]Ref, n)
	}
	for i := range c.Refs {
		copy(c.Refs[i].Hash[:], d.bytes(32))
		c.Refs[i].Size = d.uvarint()
	}
	return c
}
