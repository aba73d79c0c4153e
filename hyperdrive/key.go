package hyperdrive

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// PublicKey is an archive's Ed25519 public key: its address and its read
// capability. Whoever knows it can find, fetch and read the archive, so it is
// never announced or sent in clear; the network sees only the DiscoveryKey.
type PublicKey [ed25519.PublicKeySize]byte

// DiscoveryKey is the keyed hash of a PublicKey under which an archive is
// announced and looked up. It does not reveal the public key.
type DiscoveryKey [32]byte

// discoveryNamespace is the HMAC message for discovery keys (FORMAT.md §2).
const discoveryNamespace = "beaker-dev/discovery/v1"

// String returns the key as 64 lowercase hex characters.
func (k PublicKey) String() string { return hex.EncodeToString(k[:]) }

// URL returns the archive's dat:// URL, "dat://KEY/".
func (k PublicKey) URL() string { return "dat://" + k.String() + "/" }

// DiscoveryKey returns HMAC-SHA256(key=k, "beaker-dev/discovery/v1").
func (k PublicKey) DiscoveryKey() DiscoveryKey {
	m := hmac.New(sha256.New, k[:])
	m.Write([]byte(discoveryNamespace))
	var d DiscoveryKey
	m.Sum(d[:0])
	return d
}

// String returns the discovery key as 64 lowercase hex characters.
func (d DiscoveryKey) String() string { return hex.EncodeToString(d[:]) }

// ParsePublicKey parses 64 hex characters.
func ParsePublicKey(s string) (PublicKey, error) {
	var k PublicKey
	if len(s) != 2*len(k) {
		return k, fmt.Errorf("hyperdrive: a key is 64 hex characters, got %d characters", len(s))
	}
	if _, err := hex.Decode(k[:], []byte(strings.ToLower(s))); err != nil {
		return k, fmt.Errorf("hyperdrive: key is not hex: %w", err)
	}
	return k, nil
}

// KeyPair is an archive's signing identity.
type KeyPair struct {
	Public PublicKey
	Secret ed25519.PrivateKey
}

// GenerateKeyPair returns a fresh key pair from crypto/rand.
func GenerateKeyPair() (KeyPair, error) {
	pub, sec, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return KeyPair{}, err
	}
	var kp KeyPair
	copy(kp.Public[:], pub)
	kp.Secret = sec
	return kp, nil
}

// KeyPairFromSeed derives the key pair of a 32-byte Ed25519 seed.
func KeyPairFromSeed(seed []byte) (KeyPair, error) {
	if len(seed) != ed25519.SeedSize {
		return KeyPair{}, fmt.Errorf("hyperdrive: a secret key seed is %d bytes, got %d", ed25519.SeedSize, len(seed))
	}
	sec := ed25519.NewKeyFromSeed(seed)
	var kp KeyPair
	copy(kp.Public[:], sec.Public().(ed25519.PublicKey))
	kp.Secret = sec
	return kp, nil
}

const pemType = "BEAKER-DEV SECRET KEY"

// MarshalText encodes the key pair in the portable form that `keys export`
// prints and `keys import` reads: a PEM block holding the Ed25519 seed, with
// the archive URL as a header so a reader can tell which site it belongs to.
func (kp KeyPair) MarshalText() ([]byte, error) {
	if len(kp.Secret) != ed25519.PrivateKeySize {
		return nil, ErrNoKey
	}
	return pem.EncodeToMemory(&pem.Block{
		Type:    pemType,
		Headers: map[string]string{"URL": kp.Public.URL()},
		Bytes:   kp.Secret.Seed(),
	}), nil
}

// ErrKeyFormat reports a secret key file that cannot be read.
var ErrKeyFormat = errors.New("hyperdrive: not a beaker-dev secret key")

// ParseKeyPair reads the form MarshalText writes. It checks that the seed
// derives the public key named in the URL header, if there is one.
func ParseKeyPair(b []byte) (KeyPair, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != pemType {
		return KeyPair{}, fmt.Errorf("%w: expected a %q PEM block", ErrKeyFormat, pemType)
	}
	kp, err := KeyPairFromSeed(block.Bytes)
	if err != nil {
		return KeyPair{}, fmt.Errorf("%w: %v", ErrKeyFormat, err)
	}
	if u, ok := block.Headers["URL"]; ok && u != kp.Public.URL() {
		return KeyPair{}, fmt.Errorf("%w: the seed belongs to %s, not %s", ErrKeyFormat, kp.Public.URL(), u)
	}
	return kp, nil
}
