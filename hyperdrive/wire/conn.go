// Package wire is beaker-dev's replication protocol on the wire
// (docs/PROTOCOL.md): a cleartext preamble naming the protocol version, a
// Noise XX handshake, then an encrypted, authenticated stream of typed,
// length-limited messages. It knows bytes and messages, not archives: the
// swarm decides what to send.
package wire

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/flynn/noise"
)

// Version is the protocol version this package speaks.
const Version = 1

// Limits every peer is held to.
const (
	// MaxMessage is the largest message body accepted: a chunk (64 KiB) or
	// a batch of entries with its proof fits with room to spare.
	MaxMessage = 256 << 10
	// maxPlaintext is the plaintext a Noise transport frame can carry.
	maxPlaintext = 65535 - 16
	// HandshakeTimeout bounds the preamble and the Noise handshake.
	HandshakeTimeout = 10 * time.Second
)

var magic = [8]byte{'b', 'e', 'a', 'k', 'e', 'r', 'd', 'v'}

// Errors a connection can end with, matched with errors.Is.
var (
	ErrNotPeer   = errors.New("wire: not a beaker-dev peer")
	ErrVersion   = errors.New("wire: peer speaks another protocol version")
	ErrTooBig    = errors.New("wire: message exceeds the size limit")
	ErrMalformed = errors.New("wire: malformed message")
	ErrHandshake = errors.New("wire: handshake failed")
)

// VersionError says which version the peer speaks.
type VersionError struct{ Theirs, Ours byte }

func (e *VersionError) Error() string {
	return fmt.Sprintf("wire: peer speaks protocol version %d, this program speaks %d: update the older side", e.Theirs, e.Ours)
}

func (e *VersionError) Is(t error) bool { return t == ErrVersion }

var suite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s)

// Identity is a peer's Noise static key pair. It names the process, not the
// user or any archive; a fresh one per process is fine.
type Identity struct{ kp noise.DHKey }

// NewIdentity makes a random identity.
func NewIdentity() (Identity, error) {
	kp, err := suite.GenerateKeypair(rand.Reader)
	return Identity{kp: kp}, err
}

// Public returns the identity's public key.
func (id Identity) Public() []byte { return id.kp.Public }

// Conn is an encrypted, authenticated message stream. ReadMessage is for
// one goroutine; WriteMessage may be called from several.
type Conn struct {
	raw       net.Conn
	br        *bufio.Reader
	hash      [32]byte
	remote    []byte
	initiator bool

	rmu      sync.Mutex
	idle     time.Duration
	recv     *noise.CipherState
	plain    []byte // decrypted bytes not yet parsed
	plainBuf []byte // plain's array, reused once plain is all parsed
	frame    []byte

	wmu  sync.Mutex
	send *noise.CipherState
	bw   *bufio.Writer
	out  []byte // message being written, after room for its length
	ct   []byte // ciphertext of one frame
}

// Client runs the handshake as the side that dialed.
func Client(ctx context.Context, c net.Conn, id Identity) (*Conn, error) {
	return handshake(ctx, c, id, true)
}

// Server runs the handshake as the side that accepted.
func Server(ctx context.Context, c net.Conn, id Identity) (*Conn, error) {
	return handshake(ctx, c, id, false)
}

func preamble() []byte {
	return append(magic[:], Version, 0)
}

func handshake(ctx context.Context, c net.Conn, id Identity, initiator bool) (*Conn, error) {
	deadline := time.Now().Add(HandshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	br := bufio.NewReaderSize(c, 64<<10)
	bw := bufio.NewWriterSize(c, 64<<10)
	fail := func(err error) (*Conn, error) {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, err
	}

	// The dialer sends its preamble first; the other side answers with its
	// own even when versions differ, so both ends can say what is wrong.
	mine := preamble()
	theirs := make([]byte, len(mine))
	readPreamble := func() error {
		if _, err := io.ReadFull(br, theirs); err != nil {
			return fmt.Errorf("%w: reading the preamble: %v", ErrHandshake, err)
		}
		if !bytes.Equal(theirs[:8], magic[:]) {
			return ErrNotPeer
		}
		return nil
	}
	if initiator {
		if _, err := c.Write(mine); err != nil {
			return fail(fmt.Errorf("%w: %v", ErrHandshake, err))
		}
		if err := readPreamble(); err != nil {
			return fail(err)
		}
	} else {
		if err := readPreamble(); err != nil {
			return fail(err)
		}
		if _, err := c.Write(mine); err != nil {
			return fail(fmt.Errorf("%w: %v", ErrHandshake, err))
		}
	}
	if theirs[8] != Version {
		return fail(&VersionError{Theirs: theirs[8], Ours: Version})
	}
	prologue := append(append([]byte{}, mine...), theirs...)
	if !initiator {
		prologue = append(append([]byte{}, theirs...), mine...)
	}
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite: suite, Random: rand.Reader, Pattern: noise.HandshakeXX,
		Initiator: initiator, Prologue: prologue, StaticKeypair: id.kp,
	})
	if err != nil {
		return fail(err)
	}
	writeMsg := func() (*noise.CipherState, *noise.CipherState, error) {
		msg, cs1, cs2, err := hs.WriteMessage(nil, nil)
		if err != nil {
			return nil, nil, err
		}
		var hdr [2]byte
		binary.BigEndian.PutUint16(hdr[:], uint16(len(msg)))
		bw.Write(hdr[:])
		bw.Write(msg)
		return cs1, cs2, bw.Flush()
	}
	readMsg := func() (*noise.CipherState, *noise.CipherState, error) {
		var hdr [2]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return nil, nil, err
		}
		msg := make([]byte, binary.BigEndian.Uint16(hdr[:]))
		if _, err := io.ReadFull(br, msg); err != nil {
			return nil, nil, err
		}
		_, cs1, cs2, err := hs.ReadMessage(nil, msg)
		return cs1, cs2, err
	}
	var cs1, cs2 *noise.CipherState
	if initiator {
		_, _, err = writeMsg() // -> e
		if err == nil {
			_, _, err = readMsg() // <- e, ee, s, es
		}
		if err == nil {
			cs1, cs2, err = writeMsg() // -> s, se
		}
	} else {
		_, _, err = readMsg()
		if err == nil {
			_, _, err = writeMsg()
		}
		if err == nil {
			cs1, cs2, err = readMsg()
		}
	}
	if err != nil {
		return fail(fmt.Errorf("%w: %v", ErrHandshake, err))
	}
	c.SetDeadline(time.Time{})
	conn := &Conn{raw: c, br: br, bw: bw, remote: hs.PeerStatic(), initiator: initiator}
	copy(conn.hash[:], hs.ChannelBinding())
	// cs1 encrypts initiator -> responder, cs2 the other way.
	if initiator {
		conn.send, conn.recv = cs1, cs2
	} else {
		conn.send, conn.recv = cs2, cs1
	}
	return conn, nil
}

// HandshakeHash is the Noise handshake hash: unique to this session, so
// capabilities bound to it cannot be replayed on another.
func (c *Conn) HandshakeHash() [32]byte { return c.hash }

// Initiator reports whether this side dialed.
func (c *Conn) Initiator() bool { return c.initiator }

// RemoteIdentity is the peer's Noise static public key.
func (c *Conn) RemoteIdentity() []byte { return c.remote }

// RemoteAddr is the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.raw.RemoteAddr() }

// SetIdleTimeout makes every keepalive received push the read deadline
// d into the future.
func (c *Conn) SetIdleTimeout(d time.Duration) {
	c.rmu.Lock()
	c.idle = d
	c.rmu.Unlock()
}

// SetReadDeadline bounds the next reads.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.raw.SetReadDeadline(t) }

// SetWriteDeadline bounds the next writes.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.raw.SetWriteDeadline(t) }

// Close closes the connection.
func (c *Conn) Close() error { return c.raw.Close() }

// capabilityNamespace starts the capability MAC's message.
const capabilityNamespace = "beaker-dev/capability/v1"

// Capability proves knowledge of an archive's public key on this session
// without revealing it: HMAC-SHA256(key = public key, namespace ‖ role ‖
// handshake hash), role 'I' for the side that dialed and 'R' for the other.
func Capability(publicKey [32]byte, handshakeHash [32]byte, initiator bool) [32]byte {
	m := hmac.New(sha256.New, publicKey[:])
	m.Write([]byte(capabilityNamespace))
	role := byte('R')
	if initiator {
		role = 'I'
	}
	m.Write([]byte{role})
	m.Write(handshakeHash[:])
	var out [32]byte
	m.Sum(out[:0])
	return out
}

// LocalCapability is this side's capability for an archive key.
func (c *Conn) LocalCapability(publicKey [32]byte) [32]byte {
	return Capability(publicKey, c.hash, c.initiator)
}

// CheckCapability verifies the peer's capability for an archive key.
func (c *Conn) CheckCapability(publicKey [32]byte, got [32]byte) bool {
	want := Capability(publicKey, c.hash, !c.initiator)
	return hmac.Equal(want[:], got[:])
}

// WriteMessage encodes and sends one message.
func (c *Conn) WriteMessage(m Message) error {
	return c.WriteMessages(m)
}

// WriteMessages sends several messages with one flush: fewer system calls
// when many small answers are queued.
func (c *Conn) WriteMessages(ms ...Message) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for _, m := range ms {
		if err := c.encode(m); err != nil {
			return err
		}
	}
	return c.bw.Flush()
}

// encode writes one message into the buffered writer.
func (c *Conn) encode(m Message) error {
	// Encode after room for the length, then put the length just before.
	const room = binary.MaxVarintLen64
	if cap(c.out) < room {
		c.out = make([]byte, room, 4096)
	}
	buf := m.appendTo(c.out[:room])
	body := buf[room:]
	if len(body) > MaxMessage {
		return fmt.Errorf("%w: %d bytes", ErrTooBig, len(body))
	}
	var lb [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(lb[:], uint64(len(body)))
	start := room - n
	copy(buf[start:], lb[:n])
	c.out = buf[:room]
	return c.writeFrames(buf[start:])
}

// WriteKeepalive sends an empty message, which keeps an idle connection
// (and its NAT mapping) alive.
func (c *Conn) WriteKeepalive() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeStream([]byte{0})
}

// writeStream encrypts stream into frames and flushes them.
func (c *Conn) writeStream(stream []byte) error {
	if err := c.writeFrames(stream); err != nil {
		return err
	}
	return c.bw.Flush()
}

// writeFrames encrypts stream into frames in the buffered writer.
func (c *Conn) writeFrames(stream []byte) error {
	if cap(c.ct) < 2+maxPlaintext+16 {
		c.ct = make([]byte, 0, 2+maxPlaintext+16)
	}
	for len(stream) > 0 {
		n := min(len(stream), maxPlaintext)
		ct, err := c.send.Encrypt(c.ct[:2], nil, stream[:n])
		if err != nil {
			return err
		}
		binary.BigEndian.PutUint16(ct, uint16(len(ct)-2))
		if _, err := c.bw.Write(ct); err != nil {
			return err
		}
		stream = stream[n:]
	}
	return nil
}

// ReadMessage returns the next message, skipping keepalives. Messages over
// MaxMessage end the connection with ErrTooBig before they are buffered.
func (c *Conn) ReadMessage() (Message, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		n, hl, ok, err := parseLength(c.plain)
		if err != nil {
			return nil, err
		}
		if ok {
			if n == 0 {
				c.plain = c.plain[hl:]
				if c.idle > 0 {
					c.raw.SetReadDeadline(time.Now().Add(c.idle))
				}
				continue // keepalive
			}
			if len(c.plain) >= hl+int(n) {
				body := c.plain[hl : hl+int(n)]
				m, err := Decode(body)
				c.plain = c.plain[hl+int(n):]
				return m, err
			}
		}
		if err := c.readFrame(); err != nil {
			return nil, err
		}
	}
}

// parseLength reads a message's uvarint length, refusing lengths over the
// limit as soon as their prefix shows it.
func parseLength(b []byte) (n uint64, hl int, ok bool, err error) {
	v, k := binary.Uvarint(b)
	switch {
	case k > 0:
		if v > MaxMessage {
			return 0, 0, false, fmt.Errorf("%w: %d bytes announced", ErrTooBig, v)
		}
		return v, k, true, nil
	case k < 0:
		return 0, 0, false, fmt.Errorf("%w: bad length", ErrMalformed)
	case len(b) >= binary.MaxVarintLen64:
		return 0, 0, false, fmt.Errorf("%w: bad length", ErrMalformed)
	}
	return 0, 0, false, nil
}

// readFrame decrypts one transport frame into c.plain.
func (c *Conn) readFrame() error {
	var hdr [2]byte
	if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
		return err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n < 16 {
		return fmt.Errorf("%w: frame of %d bytes", ErrMalformed, n)
	}
	if cap(c.frame) < n {
		c.frame = make([]byte, n)
	}
	f := c.frame[:n]
	if _, err := io.ReadFull(c.br, f); err != nil {
		return err
	}
	if len(c.plain) == 0 {
		// Decoded messages never alias plain (Decode copies), so its array
		// is reused: a frame per message, with no allocation per frame.
		c.plain = c.plainBuf[:0]
	}
	out, err := c.recv.Decrypt(c.plain, nil, f)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if cap(out) > cap(c.plainBuf) {
		c.plainBuf = out[:0] // appending moved plain to a larger array
	}
	c.plain = out
	return nil
}
