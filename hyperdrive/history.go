package hyperdrive

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Resolve turns a version spec into a committed version: "latest" (or ""),
// a number ("42" or "+42"), or a tag ("2.1.0", "v2.1.0", "@2.1.0").
func (a *Archive) Resolve(spec string) (uint64, error) {
	spec = strings.TrimSpace(spec)
	a.mu.RLock()
	defer a.mu.RUnlock()
	switch {
	case spec == "" || spec == "latest" || spec == "+latest":
		return a.length, nil
	case strings.HasPrefix(spec, "@"):
		return a.tagLocked(spec[1:])
	}
	num := strings.TrimPrefix(spec, "+")
	if v, err := strconv.ParseUint(num, 10, 64); err == nil {
		if !a.isVersionLocked(v) && v != a.length {
			return 0, a.noVersionLocked(v)
		}
		return v, nil
	}
	if strings.HasPrefix(spec, "+") {
		return 0, fmt.Errorf("%w: %q: after + comes a version number or latest", ErrNoVersion, spec)
	}
	return a.tagLocked(spec)
}

func (a *Archive) tagLocked(name string) (uint64, error) {
	canon, err := CanonicalTag(name)
	if err != nil {
		return 0, err
	}
	t, ok := a.tags[canon]
	if !ok {
		names := make([]string, 0, len(a.tags))
		for n := range a.tags {
			names = append(names, n)
		}
		sort.Strings(names)
		if len(names) == 0 {
			return 0, fmt.Errorf("%w: %s (the archive has no tags)", ErrNoTag, canon)
		}
		return 0, fmt.Errorf("%w: %s (tags: %s)", ErrNoTag, canon, strings.Join(names, ", "))
	}
	return t.Version, nil
}

// Change is one entry of a commit, summarised.
type Change struct {
	Type EntryType
	Path string // put, delete
	Size uint64 // put
	Tag  string // tag
}

// Commit is one version: the entries it appended and the tags naming it.
type Commit struct {
	Version uint64
	Time    time.Time
	Changes []Change
	Tags    []string
}

// History returns every version, oldest first.
func (a *Archive) History() ([]Commit, error) {
	a.mu.RLock()
	signed := a.signed
	tags := a.tags
	a.mu.RUnlock()
	byVersion := map[uint64][]string{}
	for _, t := range tags {
		byVersion[t.Version] = append(byVersion[t.Version], t.Name)
	}
	out := make([]Commit, 0, len(signed))
	var seq uint64
	for _, s := range signed {
		c := Commit{Version: s.Length, Time: time.Unix(0, s.Time), Tags: byVersion[s.Length]}
		sort.Strings(c.Tags)
		for ; seq < s.Length; seq++ {
			e, err := a.Entry(seq)
			if err != nil {
				return nil, err
			}
			ch := Change{Type: e.Type, Path: e.Path}
			switch e.Type {
			case EntryPut:
				ch.Size = e.File.Size
			case EntryTag:
				ch.Tag = e.Tag.Name
			}
			c.Changes = append(c.Changes, ch)
		}
		out = append(out, c)
	}
	return out, nil
}

// DiffKind says how a path differs between two versions.
type DiffKind string

const (
	Added   DiffKind = "added"
	Changed DiffKind = "changed"
	Removed DiffKind = "removed"
)

// Difference is one path that differs between two versions.
type Difference struct {
	Path    string
	Kind    DiffKind
	OldSize uint64
	NewSize uint64
}

// Diff lists the paths that differ from one snapshot to another, sorted. A
// file rewritten with the same bytes and mode does not differ.
func Diff(from, to *Snapshot) ([]Difference, error) {
	var out []Difference
	for p, nf := range to.files {
		of, ok := from.files[p]
		switch {
		case !ok:
			out = append(out, Difference{Path: p, Kind: Added, NewSize: nf.Size})
		case of.Seq != nf.Seq:
			same, err := sameContent(from, to, p)
			if err != nil {
				return nil, err
			}
			if !same {
				out = append(out, Difference{Path: p, Kind: Changed, OldSize: of.Size, NewSize: nf.Size})
			}
		}
	}
	for p, of := range from.files {
		if _, ok := to.files[p]; !ok {
			out = append(out, Difference{Path: p, Kind: Removed, OldSize: of.Size})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func sameContent(a, b *Snapshot, p string) (bool, error) {
	ea, err := a.Entry(p)
	if err != nil {
		return false, err
	}
	eb, err := b.Entry(p)
	if err != nil {
		return false, err
	}
	return ea.File.Mode == eb.File.Mode && ea.Content.Equal(eb.Content), nil
}
