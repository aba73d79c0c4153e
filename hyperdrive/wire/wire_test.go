package wire

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"reflect"
	"testing"
	"time"
)

// pair connects a client and a server over net.Pipe.
func pair(t testing.TB) (*Conn, *Conn) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	ida, _ := NewIdentity()
	idb, _ := NewIdentity()
	type res struct {
		c   *Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := Server(context.Background(), b, idb)
		ch <- res{c, err}
	}()
	client, err := Client(context.Background(), a, ida)
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	if client.HandshakeHash() != r.c.HandshakeHash() {
		t.Fatal("handshake hashes differ")
	}
	if !bytes.Equal(client.RemoteIdentity(), idb.Public()) || !bytes.Equal(r.c.RemoteIdentity(), ida.Public()) {
		t.Fatal("identities not exchanged")
	}
	return client, r.c
}

var samples = []Message{
	Open{DiscoveryKey: [32]byte{1}, Capability: [32]byte{2}},
	Status{Length: 42, Time: -5, Roots: []Node{{Hash: [32]byte{3}, Size: 100}, {Hash: [32]byte{4}, Size: 7}}, Signature: [64]byte{5}, Flags: StatusComplete | StatusLive},
	Status{},
	Request{ID: 1, Kind: KindEntries, Start: 3, End: 9, Upgrade: 12},
	Request{ID: 2, Kind: KindChunk, Hash: [32]byte{6}},
	Request{ID: 3, Kind: KindSignatures, After: 7},
	Cancel{ID: 4},
	Entries{ID: 5, Start: 3, Upgrade: 12, Entries: [][]byte{[]byte("one"), []byte("two")}, Nodes: []Node{{Hash: [32]byte{7}, Size: 9}}},
	Chunk{ID: 6, Data: bytes.Repeat([]byte("c"), 65536)},
	Signatures{ID: 7, Roots: []SignedRoot{{Length: 1, Time: 2, TreeHash: [32]byte{8}, Signature: [64]byte{9}}, {Length: 5}}},
	NotHave{ID: 8},
	Close{Reason: "bye"},
	Paint{Version: 12, Millis: 87, Flags: PaintSwap, Device: "Chrome 140 on Linux"},
	Paint{},
}

func TestMessagesRoundTrip(t *testing.T) {
	client, server := pair(t)
	go func() {
		for _, m := range samples {
			client.WriteMessage(m)
			client.WriteKeepalive()
		}
	}()
	for _, want := range samples {
		got, err := server.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %#v\nwant %#v", got, want)
		}
	}
}

func TestCapability(t *testing.T) {
	client, server := pair(t)
	key := [32]byte{42}
	capC := client.LocalCapability(key)
	if !server.CheckCapability(key, capC) {
		t.Fatal("the server refuses the client's capability")
	}
	if server.CheckCapability([32]byte{43}, capC) {
		t.Fatal("a capability for another key passes")
	}
	// A capability is bound to its side and its session.
	if server.CheckCapability(key, server.LocalCapability(key)) {
		t.Fatal("a reflected capability passes")
	}
	other, _ := pair(t)
	if server.CheckCapability(key, other.LocalCapability(key)) {
		t.Fatal("a capability from another session passes")
	}
}

func TestHandshakeErrors(t *testing.T) {
	id, _ := NewIdentity()
	for _, tc := range []struct {
		name     string
		preamble []byte
		want     error
	}{
		{"not a peer", []byte("GET / HTTP/1.1\r\n"), ErrNotPeer},
		{"other version", append(append([]byte{}, magic[:]...), 7, 0), ErrVersion},
	} {
		a, b := net.Pipe()
		go func() {
			io.ReadFull(b, make([]byte, len(preamble())))
			b.Write(tc.preamble)
			io.Copy(io.Discard, b)
		}()
		_, err := Client(context.Background(), a, id)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		a.Close()
		b.Close()
	}
	// A peer that stalls mid-handshake hits the deadline.
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		io.ReadFull(b, make([]byte, len(preamble())))
		b.Write(preamble())
		io.Copy(io.Discard, b) // then nothing more: stalled
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := Client(ctx, a, id); err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("stalled handshake: %v after %v", err, time.Since(start))
	}
}

func TestLimits(t *testing.T) {
	client, server := pair(t)
	if err := client.WriteMessage(Chunk{ID: 1, Data: make([]byte, MaxMessage)}); !errors.Is(err, ErrTooBig) {
		t.Fatalf("writing an oversize message: %v", err)
	}
	// A peer announcing an oversize message is cut off before it sends it.
	go func() {
		client.wmu.Lock()
		defer client.wmu.Unlock()
		client.writeStream([]byte{0xff, 0xff, 0xff, 0x7f})
	}()
	if _, err := server.ReadMessage(); !errors.Is(err, ErrTooBig) {
		t.Fatalf("oversize announcement: %v", err)
	}
}

func TestTamperedFrameIsRefused(t *testing.T) {
	ida, _ := NewIdentity()
	idb, _ := NewIdentity()
	// client <-> (mitmA, mitmB) <-> man in the middle <-> (toServer, server)
	mitmA, mitmB := net.Pipe()
	toServer, server := net.Pipe()
	defer mitmA.Close()
	defer server.Close()
	// Client to server: a 10-byte preamble, Noise's first (2+32 bytes) and
	// third (2+48+16 bytes) messages, then transport frames. The man in
	// the middle flips one bit inside the first transport frame.
	const handshakeBytes = 10 + 34 + 66
	go func() {
		buf := make([]byte, 1<<16)
		seen := 0
		for {
			n, err := mitmB.Read(buf)
			if err != nil {
				toServer.Close()
				return
			}
			if at := handshakeBytes + 5 - seen; at >= 0 && at < n {
				buf[at] ^= 1
			}
			seen += n
			if _, err := toServer.Write(buf[:n]); err != nil {
				return
			}
		}
	}()
	go func() { io.Copy(mitmB, toServer); mitmB.Close() }()
	done := make(chan error, 1)
	go func() {
		c, err := Server(context.Background(), server, idb)
		if err != nil {
			done <- err
			return
		}
		_, err = c.ReadMessage()
		done <- err
	}()
	c, err := Client(context.Background(), mitmA, ida)
	if err != nil {
		t.Fatal(err)
	}
	go c.WriteMessage(Close{Reason: "hello"})
	select {
	case err := <-done:
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("a tampered frame: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no error for a tampered frame")
	}
}

func FuzzDecode(f *testing.F) {
	for _, m := range samples {
		f.Add(Encode(m))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := Decode(body)
		if err != nil {
			return
		}
		if !bytes.Equal(Encode(m), body) {
			t.Fatalf("non-canonical message accepted: %x -> %x", body, Encode(m))
		}
	})
}

// FuzzFrames feeds arbitrary bytes to a connection's reader after a real
// handshake, as a hostile peer would send them.
func FuzzFrames(f *testing.F) {
	f.Add([]byte{0, 20, 1, 2, 3})
	f.Add([]byte{0xff, 0xff})
	f.Fuzz(func(t *testing.T, junk []byte) {
		client, server := pair(t)
		go func() {
			client.raw.Write(junk)
			client.raw.Close()
		}()
		for i := 0; i < 10; i++ {
			if _, err := server.ReadMessage(); err != nil {
				return
			}
		}
	})
}

// FuzzHandshake feeds arbitrary bytes to a server as a handshake.
func FuzzHandshake(f *testing.F) {
	f.Add(append(preamble(), 0, 32))
	f.Add([]byte("beakerdv"))
	id, _ := NewIdentity()
	f.Fuzz(func(t *testing.T, junk []byte) {
		a, b := net.Pipe()
		defer a.Close()
		go func() {
			io.Copy(io.Discard, a)
		}()
		go func() {
			a.Write(junk)
			a.Close()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if c, err := Server(ctx, b, id); err == nil {
			t.Fatalf("a handshake of junk succeeded: %v", c)
		}
		b.Close()
	})
}

func BenchmarkThroughput(b *testing.B) {
	client, server := pair(b)
	data := bytes.Repeat([]byte{7}, 64<<10)
	go func() {
		for {
			if _, err := server.ReadMessage(); err != nil {
				return
			}
		}
	}()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		client.WriteMessage(Chunk{ID: uint64(i), Data: data})
	}
}
