package wire

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// Message types (docs/PROTOCOL.md §4). The numbers are part of the
// protocol: never reorder, only append.
const (
	TypeOpen       = 1
	TypeStatus     = 2
	TypeRequest    = 3
	TypeCancel     = 4
	TypeEntries    = 5
	TypeChunk      = 6
	TypeSignatures = 7
	TypeNotHave    = 8
	TypeClose      = 9
	TypePaint      = 10
)

// Request kinds.
const (
	KindEntries    = 1
	KindChunk      = 2
	KindSignatures = 3
)

// Per-message limits.
const (
	MaxRoots      = 64
	MaxNodes      = 128
	MaxSignatures = 1024
	MaxEntry      = 64 << 10
	MaxChunk      = 64 << 10
	maxReason     = 1024
	MaxDevice     = 128
)

// Message is one protocol message.
type Message interface {
	Type() byte
	appendTo(b []byte) []byte
}

// Node is a Merkle tree node as sent: its index is implied by context.
type Node struct {
	Hash [32]byte
	Size uint64
}

// SignedRoot is a signed tree hash for a log length.
type SignedRoot struct {
	Length    uint64
	Time      int64
	TreeHash  [32]byte
	Signature [64]byte
}

// Open names the archive a connection is for and proves knowledge of its
// key (see Capability). The dialer sends it first; the other side answers
// with its own or closes.
type Open struct {
	DiscoveryKey [32]byte
	Capability   [32]byte
}

// Status flags.
const (
	StatusComplete = 1 << 0 // the sender has every chunk of every version it has
	StatusLive     = 1 << 1 // the sender wants to hear of new versions at once
)

// Status advertises the sender's latest signed version: the roots of its
// tree, so the signature can be checked on arrival, and what it holds.
type Status struct {
	Length    uint64
	Time      int64
	Roots     []Node
	Signature [64]byte
	Flags     byte
}

// Request asks for entries [Start, End) proven against the signed length
// Upgrade, a chunk by hash, or the signed roots after a length.
type Request struct {
	ID      uint64
	Kind    byte
	Start   uint64   // KindEntries
	End     uint64   // KindEntries
	Upgrade uint64   // KindEntries
	Hash    [32]byte // KindChunk
	After   uint64   // KindSignatures
}

// Cancel withdraws a request.
type Cancel struct{ ID uint64 }

// Entries answers an entries request: Entries start at Start (perhaps fewer
// than asked, to keep messages small), and Nodes are the nodes that take a
// tree of Start+len(Entries) entries to the signed length Upgrade.
type Entries struct {
	ID      uint64
	Start   uint64
	Upgrade uint64
	Entries [][]byte
	Nodes   []Node
}

// Chunk answers a chunk request.
type Chunk struct {
	ID   uint64
	Data []byte
}

// Signatures answers a signatures request, lengths ascending.
type Signatures struct {
	ID    uint64
	Roots []SignedRoot
}

// NotHave says the sender cannot answer a request.
type NotHave struct{ ID uint64 }

// Close says why the sender is about to close the connection.
type Close struct{ Reason string }

// Paint flags.
const (
	PaintSwap = 1 << 0 // styles or images were swapped in place, no reload
)

// Paint tells the peers that a page showing Version finished painting it on
// one of the sender's devices: a viewer reports it so the author sees each
// remote viewer's save-to-paint time. Millis is the viewer's own measure,
// from learning of the version to the paint; the author, who knows when it
// saved, adds the trip itself.
type Paint struct {
	Version uint64
	Millis  uint64
	Flags   byte
	Device  string // "Chrome 140 on Linux", at most MaxDevice bytes of UTF-8
}

func (Open) Type() byte       { return TypeOpen }
func (Status) Type() byte     { return TypeStatus }
func (Request) Type() byte    { return TypeRequest }
func (Cancel) Type() byte     { return TypeCancel }
func (Entries) Type() byte    { return TypeEntries }
func (Chunk) Type() byte      { return TypeChunk }
func (Signatures) Type() byte { return TypeSignatures }
func (NotHave) Type() byte    { return TypeNotHave }
func (Close) Type() byte      { return TypeClose }
func (Paint) Type() byte      { return TypePaint }

func (m Open) appendTo(b []byte) []byte {
	b = append(b, TypeOpen)
	b = append(b, m.DiscoveryKey[:]...)
	return append(b, m.Capability[:]...)
}

func appendNodes(b []byte, nodes []Node) []byte {
	b = append(b, byte(len(nodes)))
	for _, n := range nodes {
		b = append(b, n.Hash[:]...)
		b = binary.BigEndian.AppendUint64(b, n.Size)
	}
	return b
}

func (m Status) appendTo(b []byte) []byte {
	b = append(b, TypeStatus)
	b = binary.AppendUvarint(b, m.Length)
	b = binary.AppendVarint(b, m.Time)
	b = appendNodes(b, m.Roots)
	b = append(b, m.Signature[:]...)
	return append(b, m.Flags)
}

func (m Request) appendTo(b []byte) []byte {
	b = append(b, TypeRequest)
	b = binary.AppendUvarint(b, m.ID)
	b = append(b, m.Kind)
	switch m.Kind {
	case KindEntries:
		b = binary.AppendUvarint(b, m.Start)
		b = binary.AppendUvarint(b, m.End)
		b = binary.AppendUvarint(b, m.Upgrade)
	case KindChunk:
		b = append(b, m.Hash[:]...)
	case KindSignatures:
		b = binary.AppendUvarint(b, m.After)
	}
	return b
}

func (m Cancel) appendTo(b []byte) []byte {
	return binary.AppendUvarint(append(b, TypeCancel), m.ID)
}

func (m Entries) appendTo(b []byte) []byte {
	b = append(b, TypeEntries)
	b = binary.AppendUvarint(b, m.ID)
	b = binary.AppendUvarint(b, m.Start)
	b = binary.AppendUvarint(b, m.Upgrade)
	b = binary.AppendUvarint(b, uint64(len(m.Entries)))
	for _, e := range m.Entries {
		b = binary.AppendUvarint(b, uint64(len(e)))
		b = append(b, e...)
	}
	return appendNodes(b, m.Nodes)
}

func (m Chunk) appendTo(b []byte) []byte {
	b = binary.AppendUvarint(append(b, TypeChunk), m.ID)
	return append(b, m.Data...)
}

func (m Signatures) appendTo(b []byte) []byte {
	b = append(b, TypeSignatures)
	b = binary.AppendUvarint(b, m.ID)
	b = binary.AppendUvarint(b, uint64(len(m.Roots)))
	for _, r := range m.Roots {
		b = binary.AppendUvarint(b, r.Length)
		b = binary.AppendVarint(b, r.Time)
		b = append(b, r.TreeHash[:]...)
		b = append(b, r.Signature[:]...)
	}
	return b
}

func (m NotHave) appendTo(b []byte) []byte {
	return binary.AppendUvarint(append(b, TypeNotHave), m.ID)
}

func (m Close) appendTo(b []byte) []byte {
	return append(append(b, TypeClose), m.Reason...)
}

func (m Paint) appendTo(b []byte) []byte {
	b = binary.AppendUvarint(append(b, TypePaint), m.Version)
	b = binary.AppendUvarint(b, m.Millis)
	return append(append(b, m.Flags), m.Device...)
}

// Encode returns a message's body (type byte and payload).
func Encode(m Message) []byte { return m.appendTo(nil) }

// reader decodes a message body, recording the first error.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b) < n {
		r.fail("truncated")
		return nil
	}
	s := r.b[:n]
	r.b = r.b[n:]
	return s
}

func (r *reader) byte() byte {
	s := r.bytes(1)
	if s == nil {
		return 0
	}
	return s[0]
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 || (n > 1 && r.b[n-1] == 0) {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	u := r.uvarint()
	x := int64(u >> 1)
	if u&1 != 0 {
		x = ^x
	}
	return x
}

func (r *reader) array32() (a [32]byte) {
	copy(a[:], r.bytes(32))
	return
}

func (r *reader) nodes(max int) []Node {
	n := int(r.byte())
	if n > max {
		r.fail("%d nodes, at most %d", n, max)
		return nil
	}
	if r.err != nil || n == 0 {
		return nil
	}
	out := make([]Node, n)
	for i := range out {
		out[i].Hash = r.array32()
		if s := r.bytes(8); s != nil {
			out[i].Size = binary.BigEndian.Uint64(s)
		}
	}
	return out
}

// Decode decodes a message body. Every decoded message owns its bytes (it
// does not alias body), and only canonical encodings are accepted.
func Decode(body []byte) (Message, error) {
	if len(body) > MaxMessage {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooBig, len(body))
	}
	r := &reader{b: body}
	var m Message
	switch t := r.byte(); t {
	case TypeOpen:
		m = Open{DiscoveryKey: r.array32(), Capability: r.array32()}
	case TypeStatus:
		s := Status{Length: r.uvarint(), Time: r.varint(), Roots: r.nodes(MaxRoots)}
		copy(s.Signature[:], r.bytes(64))
		s.Flags = r.byte()
		if r.err == nil && s.Length == 0 && len(s.Roots) != 0 {
			r.fail("roots for an empty log")
		}
		m = s
	case TypeRequest:
		q := Request{ID: r.uvarint(), Kind: r.byte()}
		switch q.Kind {
		case KindEntries:
			q.Start, q.End, q.Upgrade = r.uvarint(), r.uvarint(), r.uvarint()
			if r.err == nil && (q.Start >= q.End || q.End > q.Upgrade) {
				r.fail("entries request [%d, %d) against %d", q.Start, q.End, q.Upgrade)
			}
		case KindChunk:
			q.Hash = r.array32()
		case KindSignatures:
			q.After = r.uvarint()
		default:
			r.fail("request kind %d", q.Kind)
		}
		m = q
	case TypeCancel:
		m = Cancel{ID: r.uvarint()}
	case TypeEntries:
		e := Entries{ID: r.uvarint(), Start: r.uvarint(), Upgrade: r.uvarint()}
		n := r.uvarint()
		if r.err == nil && n > uint64(len(r.b)) {
			r.fail("%d entries in %d bytes", n, len(r.b))
		}
		for i := uint64(0); i < n && r.err == nil; i++ {
			size := r.uvarint()
			if size == 0 || size > MaxEntry {
				r.fail("entry of %d bytes", size)
				break
			}
			e.Entries = append(e.Entries, append([]byte(nil), r.bytes(int(size))...))
		}
		e.Nodes = r.nodes(MaxNodes)
		if r.err == nil && e.Start+uint64(len(e.Entries)) > e.Upgrade {
			r.fail("entries past the upgrade length")
		}
		m = e
	case TypeChunk:
		c := Chunk{ID: r.uvarint()}
		if r.err == nil && (len(r.b) == 0 || len(r.b) > MaxChunk) {
			r.fail("chunk of %d bytes", len(r.b))
		}
		c.Data = append([]byte(nil), r.bytes(len(r.b))...)
		m = c
	case TypeSignatures:
		s := Signatures{ID: r.uvarint()}
		n := r.uvarint()
		if r.err == nil && n > MaxSignatures {
			r.fail("%d signatures", n)
		}
		var prev uint64
		for i := uint64(0); i < n && r.err == nil; i++ {
			sr := SignedRoot{Length: r.uvarint(), Time: r.varint(), TreeHash: r.array32()}
			copy(sr.Signature[:], r.bytes(64))
			if r.err == nil && sr.Length <= prev {
				r.fail("signed lengths not ascending")
			}
			prev = sr.Length
			s.Roots = append(s.Roots, sr)
		}
		m = s
	case TypeNotHave:
		m = NotHave{ID: r.uvarint()}
	case TypeClose:
		reason := r.bytes(len(r.b))
		if r.err == nil && (len(reason) > maxReason || !utf8.Valid(reason)) {
			r.fail("close reason")
		}
		m = Close{Reason: string(reason)}
	case TypePaint:
		p := Paint{Version: r.uvarint(), Millis: r.uvarint(), Flags: r.byte()}
		device := r.bytes(len(r.b))
		if r.err == nil && (len(device) > MaxDevice || !utf8.Valid(device) || p.Flags&^PaintSwap != 0) {
			r.fail("paint report")
		}
		p.Device = string(device)
		m = p
	default:
		if r.err == nil {
			r.fail("unknown message type %d", t)
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(r.b))
	}
	return m, nil
}
