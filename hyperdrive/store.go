package hyperdrive

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Store is a data directory: the secret keys of the archives this user
// writes and the storage of every archive it holds, written or cached.
//
//	DIR/keys/KEY.key        secret keys, mode 0600 (directory 0700)
//	DIR/archives/KEY/       one archive's storage files (FORMAT.md §6)
//
// KEY is the public key in hex. The directory is private to the user: it is
// never inside a site folder, so nothing in it is served or published.
type Store struct {
	dir string
}

// DefaultStoreDir returns $BEAKER_DEV_HOME, else $XDG_DATA_HOME/beaker-dev,
// else ~/.local/share/beaker-dev.
func DefaultStoreDir() (string, error) {
	if d := os.Getenv("BEAKER_DEV_HOME"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "beaker-dev"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("hyperdrive: no data directory: set BEAKER_DEV_HOME or --data-dir (%w)", err)
	}
	return filepath.Join(home, ".local", "share", "beaker-dev"), nil
}

// OpenStore opens (creating, mode 0700) the data directory dir.
func OpenStore(dir string) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{abs, filepath.Join(abs, "keys"), filepath.Join(abs, "archives")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("hyperdrive: creating data directory: %w", err)
		}
	}
	return &Store{dir: abs}, nil
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) keyPath(k PublicKey) string {
	return filepath.Join(s.dir, "keys", k.String()+".key")
}

// ArchiveDir returns where the archive of key k is (or would be) stored.
func (s *Store) ArchiveDir(k PublicKey) string {
	return filepath.Join(s.dir, "archives", k.String())
}

// SaveKey writes a secret key, mode 0600, replacing nothing: a key already
// stored for the same archive is left as it is.
func (s *Store) SaveKey(kp KeyPair) error {
	b, err := kp.MarshalText()
	if err != nil {
		return err
	}
	path := s.keyPath(kp.Public)
	if old, err := os.ReadFile(path); err == nil {
		if existing, err := ParseKeyPair(old); err == nil && existing.Public == kp.Public {
			return nil
		}
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// LoadKey returns the secret key of archive k, or ErrNoKey.
func (s *Store) LoadKey(k PublicKey) (KeyPair, error) {
	b, err := os.ReadFile(s.keyPath(k))
	if err != nil {
		if isNotExist(err) {
			return KeyPair{}, fmt.Errorf("%w %s", ErrNoKey, k.URL())
		}
		return KeyPair{}, err
	}
	kp, err := ParseKeyPair(b)
	if err != nil {
		return KeyPair{}, fmt.Errorf("%s: %w", s.keyPath(k), err)
	}
	if kp.Public != k {
		return KeyPair{}, fmt.Errorf("%w: %s holds the key of %s", ErrKeyFormat, s.keyPath(k), kp.Public.URL())
	}
	return kp, nil
}

// HasArchive reports whether the store holds archive k.
func (s *Store) HasArchive(k PublicKey) bool {
	_, err := os.Stat(filepath.Join(s.ArchiveDir(k), signaturesFile))
	return err == nil
}

// Create makes a new key pair and archive.
func (s *Store) Create(opts Options) (*Archive, error) {
	kp, err := GenerateKeyPair()
	if err != nil {
		return nil, err
	}
	if err := s.SaveKey(kp); err != nil {
		return nil, err
	}
	return Create(s.ArchiveDir(kp.Public), kp, opts)
}

// Open opens archive k, writable when the store holds its secret key.
func (s *Store) Open(k PublicKey, opts Options) (*Archive, error) {
	if !s.HasArchive(k) {
		return nil, fmt.Errorf("%w %s in %s", ErrNoArchive, k.URL(), s.dir)
	}
	kp, err := s.LoadKey(k)
	switch {
	case err == nil:
		opts.Secret = kp.Secret
	case errors.Is(err, ErrNoKey):
		opts.Secret = nil
	default:
		return nil, err
	}
	return Open(s.ArchiveDir(k), k, opts)
}

// Archives lists the keys of the archives the store holds.
func (s *Store) Archives() ([]PublicKey, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, "archives"))
	if err != nil {
		return nil, err
	}
	var out []PublicKey
	for _, e := range ents {
		if k, err := ParsePublicKey(e.Name()); err == nil && e.IsDir() {
			out = append(out, k)
		}
	}
	sort.Slice(out, func(i, j int) bool { return strings.Compare(out[i].String(), out[j].String()) < 0 })
	return out, nil
}

// OpenReplica opens the store's copy of archive k for replication,
// creating an empty one if the store has none. An archive the store holds
// the secret key of opens as usual (writable).
func (s *Store) OpenReplica(k PublicKey, opts Options) (*Archive, error) {
	if kp, err := s.LoadKey(k); err == nil && s.HasArchive(k) {
		opts.Secret = kp.Secret
		return Open(s.ArchiveDir(k), k, opts)
	}
	if !s.HasArchive(k) {
		return CreateReplica(s.ArchiveDir(k), k, opts)
	}
	opts.Replica = true
	return Open(s.ArchiveDir(k), k, opts)
}
