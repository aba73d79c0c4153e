package wire

import (
	"encoding/hex"
	"os"
	"strings"
	"testing"
)

// The capability vector of docs/PROTOCOL.md §9: the public key of the
// FORMAT.md vectors (seed 01 02 … 20), a handshake hash of 32 zero bytes.
func TestCapabilityVector(t *testing.T) {
	key, _ := hex.DecodeString("79b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664")
	var pk, hh [32]byte
	copy(pk[:], key)
	dialer := Capability(pk, hh, true)
	acceptor := Capability(pk, hh, false)
	got := []string{hex.EncodeToString(dialer[:]), hex.EncodeToString(acceptor[:])}
	want := []string{capVectorDialer, capVectorAcceptor}
	if got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("capabilities %v, want %v", got, want)
	}
	doc, err := os.ReadFile("../../docs/PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range want {
		if !strings.Contains(string(doc), v) {
			t.Errorf("docs/PROTOCOL.md does not state %s", v)
		}
	}
}

const (
	capVectorDialer   = "f647cedfe19b9f3e1081cbc9c243e1855d48edce344508a234e10195db4bcf1e"
	capVectorAcceptor = "4254b985148ded99bf69fecc24d4e77f0725b831f823589f13417cc20f295374"
)

// messageVectors are the message encodings of docs/PROTOCOL.md §9.
var messageVectors = []struct {
	m   Message
	hex string
}{
	{Request{ID: 300, Kind: KindEntries, Start: 0, End: 4, Upgrade: 9}, "03ac0201000409"},
	{Request{ID: 2, Kind: KindChunk, Hash: [32]byte{0xab}}, "030202ab00000000000000000000000000000000000000000000000000000000000000"},
	{NotHave{ID: 7}, "0807"},
	{Close{Reason: "bye"}, "09627965"},
	{Paint{Version: 12, Millis: 87, Flags: PaintSwap, Device: "Chrome"}, "0a0c57014368726f6d65"},
}

func TestMessageVectors(t *testing.T) {
	doc, err := os.ReadFile("../../docs/PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range messageVectors {
		got := hex.EncodeToString(Encode(v.m))
		if got != v.hex {
			t.Errorf("%T %+v encodes as %s, want %s", v.m, v.m, got, v.hex)
		}
		if m, err := Decode(Encode(v.m)); err != nil || hex.EncodeToString(Encode(m)) != v.hex {
			t.Errorf("%s does not decode back: %v", v.hex, err)
		}
		if !strings.Contains(string(doc), "`"+v.hex+"`") {
			t.Errorf("docs/PROTOCOL.md does not state %s", v.hex)
		}
	}
}
