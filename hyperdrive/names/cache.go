package names

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
)

// The cache file, CacheFile in Options.CacheDir, is JSON:
//
//	{"version": 1, "names": {"example.com": {"key": "<64 lower-case hex>",
//	  "source": "https", "fetched": "2026-01-02T15:04:05Z", "ttl": 3600}}}
//
// source is "https" or "dns"; fetched is RFC 3339 in whole seconds; ttl is
// seconds within [MinTTL, MaxTTL]. It is rewritten whole (a temporary file
// renamed over it) after each lookup that reached the network, keeping the
// newest maxCacheEntries names. Two processes writing at once may lose one
// of their entries, which costs a lookup, nothing more.
const (
	CacheFile       = "names.json"
	cacheVersion    = 1
	maxCacheFile    = 1 << 20
	maxCacheEntries = 1000
)

type cacheEntry struct {
	Key     hyperdrive.PublicKey
	Source  Source // SourceHTTPS or SourceDNS
	Fetched time.Time
	TTL     time.Duration
}

func (e cacheEntry) fresh(now time.Time) bool {
	return !now.Before(e.Fetched) && now.Before(e.Fetched.Add(e.TTL))
}

func (e cacheEntry) result(name string, src Source) Result {
	return Result{Name: name, Key: e.Key, Source: src, Origin: e.Source, TTL: e.TTL, Fetched: e.Fetched}
}

type cacheJSON struct {
	Version int                  `json:"version"`
	Names   map[string]entryJSON `json:"names"`
}

type entryJSON struct {
	Key     string `json:"key"`
	Source  Source `json:"source"`
	Fetched string `json:"fetched"`
	TTL     int64  `json:"ttl"`
}

// decodeCache parses a cache file. Anything but a well-formed file of this
// version is an error naming the problem; nothing in it is trusted.
func decodeCache(b []byte) (map[string]cacheEntry, error) {
	if len(b) > maxCacheFile {
		return nil, fmt.Errorf("larger than %d bytes", maxCacheFile)
	}
	var f cacheJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("not a cache file: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("not a cache file: data after the object")
	}
	if f.Version != cacheVersion {
		return nil, fmt.Errorf("version %d, want %d", f.Version, cacheVersion)
	}
	m := make(map[string]cacheEntry, len(f.Names))
	for name, j := range f.Names {
		if n, err := ParseName(name); err != nil || n != name {
			return nil, fmt.Errorf("entry %q: not a lower-case DNS name", name)
		}
		k, err := hyperdrive.ParsePublicKey(j.Key)
		if err != nil || k.String() != j.Key {
			return nil, fmt.Errorf("entry %q: key is not 64 lower-case hex characters", name)
		}
		if j.Source != SourceHTTPS && j.Source != SourceDNS {
			return nil, fmt.Errorf("entry %q: source %q, want https or dns", name, j.Source)
		}
		t, err := time.Parse(time.RFC3339, j.Fetched)
		if err != nil || t.Year() < 2000 || t.Year() > 9999 || t.Nanosecond() != 0 {
			return nil, fmt.Errorf("entry %q: fetched is not an RFC 3339 time in whole seconds", name)
		}
		ttl := time.Duration(j.TTL) * time.Second
		if ttl < MinTTL || ttl > MaxTTL {
			return nil, fmt.Errorf("entry %q: ttl %d is outside [%d, %d]", name, j.TTL, int64(MinTTL/time.Second), int64(MaxTTL/time.Second))
		}
		m[name] = cacheEntry{Key: k, Source: j.Source, Fetched: t.UTC(), TTL: ttl}
	}
	return m, nil
}

// encodeCache writes the newest maxCacheEntries entries of m.
func encodeCache(m map[string]cacheEntry) []byte {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int { return m[b].Fetched.Compare(m[a].Fetched) })
	f := cacheJSON{Version: cacheVersion, Names: map[string]entryJSON{}}
	for _, n := range names[:min(len(names), maxCacheEntries)] {
		e := m[n]
		f.Names[n] = entryJSON{Key: e.Key.String(), Source: e.Source, Fetched: e.Fetched.UTC().Format(time.RFC3339), TTL: int64(e.TTL / time.Second)}
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		panic(err) // only strings and integers
	}
	return append(b, '\n')
}

func (r *Resolver) cachePath() string { return filepath.Join(r.opts.CacheDir, CacheFile) }

// loadCache reads the cache file; a missing file is an empty cache.
func (r *Resolver) loadCache() (map[string]cacheEntry, error) {
	f, err := os.Open(r.cachePath())
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]cacheEntry{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCacheFile+1))
	if err != nil {
		return nil, err
	}
	m, err := decodeCache(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", r.cachePath(), err)
	}
	return m, nil
}

// cached returns the cache entry for name, if any. An unreadable cache
// is reported and treated as empty.
func (r *Resolver) cached(name string) (cacheEntry, bool) {
	if r.opts.CacheDir == "" {
		return cacheEntry{}, false
	}
	m, err := r.loadCache()
	if err != nil {
		r.warn("ignoring the shortname cache (it will be rewritten): %v", err)
		return cacheEntry{}, false
	}
	e, ok := m[name]
	return e, ok
}

// remember stores an answer in the cache file, atomically.
func (r *Resolver) remember(name string, e cacheEntry) {
	if r.opts.CacheDir == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	m, err := r.loadCache()
	if err != nil {
		m = map[string]cacheEntry{}
	}
	m[name] = e
	if err := writeAtomic(r.cachePath(), encodeCache(m)); err != nil {
		r.warn("could not save the shortname cache: %v", err)
	}
}

// writeAtomic replaces path with b: a temporary file in the same folder,
// synced, then renamed over it.
func writeAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
