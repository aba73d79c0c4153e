package hyperdrive

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/beaker-dev/beaker-dev/hyperdrive/flattree"
)

// A replica is a copy of someone else's archive: the same storage, without
// the secret key, filled only with data checked against the archive's
// signatures. The swarm writes it through a Writer from BeginSync.

// CreateReplica makes an empty replica of the archive key in dir.
func CreateReplica(dir string, key PublicKey, opts Options) (*Archive, error) {
	if _, err := os.Stat(filepath.Join(dir, signaturesFile)); err == nil {
		return nil, fmt.Errorf("hyperdrive: %s already holds an archive", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	opts.Secret, opts.Replica = nil, true
	return open(dir, key, opts, true)
}

// forksFile keeps evidence of equivocation: signed roots of this archive
// that contradict each other.
const forksFile = "forks"

// ForkError reports a signed root that contradicts the archive's own log:
// the key's holder signed two different histories. Both signatures are
// valid, so it cannot be a transmission error; the evidence is kept in the
// archive's "forks" file and the history is refused.
type ForkError struct {
	Length uint64
	Ours   Hash       // our tree hash at Length
	Theirs SignedRoot // the contradicting signed root
}

func (e *ForkError) Error() string {
	return fmt.Sprintf("hyperdrive: forked history: a peer has a valid signature for length %d over tree %x, ours is %x; refused, evidence kept",
		e.Length, e.Theirs.TreeHash[:8], e.Ours[:8])
}

// ErrForked matches every *ForkError.
var ErrForked = errors.New("hyperdrive: forked history")

// Is makes a ForkError match ErrForked.
func (e *ForkError) Is(target error) bool { return target == ErrForked }

// CheckSignedRoot checks a signed root a peer advertises: its signature,
// and, for a length the local log reaches, that it signs the same tree.
// A contradiction is a *ForkError (and recorded); a bad signature is
// ErrBadSignature. A valid root beyond the local log is fine.
func (a *Archive) CheckSignedRoot(sr SignedRoot) error {
	if sr.Length == 0 || !ed25519.Verify(a.key[:], signable(sr.TreeHash, sr.Length), sr.Signature[:]) {
		return ErrBadSignature
	}
	a.mu.RLock()
	length := a.length
	a.mu.RUnlock()
	if sr.Length > length {
		return nil
	}
	roots, err := a.readRoots(sr.Length)
	if err != nil {
		return err
	}
	ours := TreeHash(roots)
	if ours == sr.TreeHash {
		return nil
	}
	fe := &ForkError{Length: sr.Length, Ours: ours, Theirs: sr}
	a.recordFork(fe)
	return fe
}

// recordFork appends the evidence of a fork to the archive's forks file.
func (a *Archive) recordFork(fe *ForkError) {
	rec, _ := json.Marshal(map[string]any{
		"time":   time.Now().UTC(),
		"length": fe.Length,
		"ours":   fmt.Sprintf("%x", fe.Ours[:]),
		"theirs": map[string]any{"length": fe.Theirs.Length, "tree": fmt.Sprintf("%x", fe.Theirs.TreeHash[:]), "signature": fmt.Sprintf("%x", fe.Theirs.Signature[:]), "time": fe.Theirs.Time},
	})
	f, err := os.OpenFile(filepath.Join(a.dir, forksFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	f.Write(append(rec, '\n'))
	f.Close()
}

// Forks returns the evidence of forks seen, one JSON object a line.
func (a *Archive) Forks() ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(a.dir, forksFile))
	if isNotExist(err) {
		return nil, nil
	}
	return b, err
}

// RootsAt returns the full roots of the tree of the first length entries
// (length at most the archive's version).
func (a *Archive) RootsAt(length uint64) ([]Node, error) {
	a.mu.RLock()
	cur := a.length
	a.mu.RUnlock()
	if length > cur {
		return nil, fmt.Errorf("%w: %d is beyond the log (length %d)", ErrNoVersion, length, cur)
	}
	return a.readRoots(length)
}

// SignedRootAt returns the signed root of version length.
func (a *Archive) SignedRootAt(length uint64) (SignedRoot, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	i, ok := slices.BinarySearchFunc(a.signed, length, func(s SignedRoot, l uint64) int {
		switch {
		case s.Length < l:
			return -1
		case s.Length > l:
			return 1
		}
		return 0
	})
	if !ok {
		return SignedRoot{}, false
	}
	return a.signed[i], true
}

// AppendVerified appends entries that extend the log from its current
// length, and the signed roots they reach, after checking every entry
// against the format's rules and every signed root against the tree the
// entries make. It stores everything up to the last signed root reached and
// returns how many entries that was; entries past it are not stored (the
// caller keeps them until a later root covers them). An error means the
// data is bad (ErrBadSignature, ErrBadProof, ErrMalformed): what precedes
// the first bad signed root is still stored.
func (w *Writer) AppendVerified(entries [][]byte, signed []SignedRoot) (int, error) {
	if w.closed {
		return 0, ErrClosed
	}
	if !w.sync {
		return 0, ErrReadOnly
	}
	a := w.a
	a.mu.RLock()
	length, roots, offsets, sigEnd := a.length, slices.Clone(a.roots), a.offsets, a.sigEnd
	state := &logState{length: a.length, files: a.files, tags: a.tags, manifest: a.manifest}
	a.mu.RUnlock()

	slices.SortFunc(signed, func(x, y SignedRoot) int {
		switch {
		case x.Length < y.Length:
			return -1
		case x.Length > y.Length:
			return 1
		}
		return 0
	})
	cow := newIndexWriter(state)
	var records, sigRecs []byte
	var nodes []Node
	newOffsets := slices.Clone(offsets)
	end := offsets[len(offsets)-1]
	stored, next := 0, 0
	var storedState struct {
		roots   []Node
		offsets []int64
		files   map[string]FileState
		tags    map[string]Tag
		man     Manifest
		sigs    []SignedRoot
		recLen  int
		nodes   int
		sigLen  int
	}
	var reached []SignedRoot
	var bad error
	for next < len(signed) && signed[next].Length <= length {
		next++ // already stored
	}
	for i, b := range entries {
		if next >= len(signed) {
			break // nothing further can be proven
		}
		seq := length + uint64(i)
		var e Entry
		if err := e.UnmarshalBinary(b); err != nil {
			bad = fmt.Errorf("%w: entry %d: %v", ErrMalformed, seq, err)
			break
		}
		if err := cow.apply(seq, &e); err != nil {
			bad = fmt.Errorf("%w: entry %d: %v", ErrMalformed, seq, err)
			break
		}
		records = appendEntryRecord(records, b)
		end += entryHeaderSize + int64(len(b))
		newOffsets = append(newOffsets, end)
		roots, nodes = pushLeaf(roots, nodes, leafNode(seq, b))
		if sr := signed[next]; sr.Length == seq+1 {
			if TreeHash(roots) != sr.TreeHash {
				bad = fmt.Errorf("%w: entries %d..%d do not make the tree signed for length %d", ErrBadProof, length, seq, sr.Length)
				break
			}
			if !ed25519.Verify(a.key[:], signable(sr.TreeHash, sr.Length), sr.Signature[:]) {
				bad = fmt.Errorf("%w: for length %d", ErrBadSignature, sr.Length)
				break
			}
			sigRecs = append(sigRecs, encodeSignedRoot(sr)...)
			reached = append(reached, sr)
			stored = i + 1
			storedState.roots = slices.Clone(roots)
			storedState.offsets = newOffsets
			storedState.files, storedState.tags, storedState.man = state.files, state.tags, state.manifest
			storedState.recLen, storedState.nodes, storedState.sigLen = len(records), len(nodes), len(sigRecs)
			next++
		}
	}
	if stored == 0 {
		return 0, bad
	}
	if _, err := a.entries.WriteAt(records[:storedState.recLen], offsets[len(offsets)-1]); err != nil {
		return 0, err
	}
	if err := a.writeNodes(nodes[:storedState.nodes]); err != nil {
		return 0, err
	}
	if a.opts.Sync {
		for _, f := range []*os.File{a.entries, a.tree} {
			if err := f.Sync(); err != nil {
				return 0, err
			}
		}
	}
	if _, err := a.sigFile.WriteAt(sigRecs[:storedState.sigLen], sigEnd); err != nil {
		return 0, err
	}
	newLength := length + uint64(stored)
	a.mu.Lock()
	a.length = newLength
	a.signed = append(a.signed, reached...)
	a.offsets = storedState.offsets[:newLength+1]
	a.roots = storedState.roots
	a.sigEnd = sigEnd + int64(storedState.sigLen)
	a.files, a.tags, a.manifest = storedState.files, storedState.tags, storedState.man
	a.mu.Unlock()
	a.notify.publish(newLength)
	return stored, bad
}

// PutChunk stores a chunk a peer sent, if its SHA-256 is h, and reports
// whether it was new.
func (w *Writer) PutChunk(h Hash, data []byte) (bool, error) {
	if w.closed {
		return false, ErrClosed
	}
	if !w.sync {
		return false, ErrReadOnly
	}
	if len(data) == 0 || len(data) > MaxChunkSize || Hash(sha256Sum(data)) != h {
		return false, fmt.Errorf("%w: chunk %x does not match its address", ErrBadProof, h[:8])
	}
	return w.a.putChunk(h, data)
}

// Flush writes buffered chunks to the file.
func (w *Writer) Flush() error { return w.a.flushChunks() }

// HasChunk reports whether the chunk addressed by h is stored.
func (a *Archive) HasChunk(h Hash) bool {
	a.chunkMu.Lock()
	defer a.chunkMu.Unlock()
	_, ok := a.chunkMap[h]
	return ok
}

// Chunk returns the stored chunk addressed by h, checked against h, without
// fetching it from anyone: what a peer asking for it gets.
func (a *Archive) Chunk(h Hash) ([]byte, error) {
	return a.readLocalChunk(h)
}

// ChunkInto is Chunk reading into buf's spare capacity when the chunk fits
// there, so a peer serving many chunks can reuse its buffers.
func (a *Archive) ChunkInto(h Hash, buf []byte) ([]byte, error) {
	return a.readLocalChunkInto(h, buf)
}

// Fetcher gets a chunk the archive lacks, from peers, stores it (verified)
// and returns it. Readers call it when a file needs a chunk that is not
// stored yet, so a page can show before the whole site is down.
type Fetcher func(h Hash) ([]byte, error)

// SetFetcher installs (or with nil removes) the archive's Fetcher.
func (a *Archive) SetFetcher(f Fetcher) {
	a.mu.Lock()
	a.fetcher = f
	a.mu.Unlock()
}

// UpgradeNodes returns the nodes a peer that knows the tree of the first
// from entries needs to compute the roots of the tree of the first to
// entries: the siblings met climbing from its last root, then the roots
// right of where the climb ends (FORMAT.md §7).
func (a *Archive) UpgradeNodes(from, to uint64) ([]Node, error) {
	var out []Node
	for _, i := range upgradeNeeded(from, to) {
		n, err := a.node(i)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// upgradeNeeded lists, in order, the node indexes UpgradeNodes sends.
func upgradeNeeded(from, to uint64) []uint64 {
	if from >= to {
		return nil
	}
	var scratch [64]uint64
	newRoots := flattree.FullRoots(scratch[:0], 2*to)
	if from == 0 {
		return slices.Clone(newRoots)
	}
	var scratch2 [64]uint64
	old := flattree.FullRoots(scratch2[:0], 2*from)
	rootAt := func(n uint64) int { return slices.Index(newRoots, n) }
	var need []uint64
	known := len(old) - 1
	node := old[known]
	for rootAt(node) < 0 {
		sib := flattree.Sibling(node)
		if known > 0 && sib == old[known-1] {
			known--
		} else {
			need = append(need, sib)
		}
		node = flattree.Parent(node)
	}
	return append(need, newRoots[rootAt(node)+1:]...)
}

// ApplyUpgrade computes the roots of the tree of the first to entries from
// the roots of the first from entries and the nodes UpgradeNodes sent.
func ApplyUpgrade(oldRoots []Node, from, to uint64, nodes []Node) ([]Node, error) {
	if from == to {
		return oldRoots, nil
	}
	if from > to || !rootsMatchLength(oldRoots, from) {
		return nil, fmt.Errorf("%w: roots do not match length %d", ErrBadProof, from)
	}
	need := upgradeNeeded(from, to)
	if len(nodes) != len(need) {
		return nil, fmt.Errorf("%w: %d upgrade nodes, want %d", ErrBadProof, len(nodes), len(need))
	}
	var scratch [64]uint64
	newRoots := flattree.FullRoots(scratch[:0], 2*to)
	given := map[uint64]Node{}
	for i, idx := range need {
		n := nodes[i]
		n.Index = idx
		given[idx] = n
	}
	if from == 0 {
		out := make([]Node, len(newRoots))
		for i, r := range newRoots {
			out[i] = given[r]
		}
		return out, nil
	}
	known := len(oldRoots) - 1
	node := oldRoots[known]
	var out []Node
	for slices.Index(newRoots, node.Index) < 0 {
		sibIdx := flattree.Sibling(node.Index)
		var sib Node
		if known > 0 && oldRoots[known-1].Index == sibIdx {
			known--
			sib = oldRoots[known]
		} else {
			sib = given[sibIdx]
		}
		if sibIdx < node.Index {
			node = parentNode(sib, node)
		} else {
			node = parentNode(node, sib)
		}
	}
	out = append(out, oldRoots[:known]...)
	out = append(out, node)
	for _, r := range newRoots[slices.Index(newRoots, node.Index)+1:] {
		out = append(out, given[r])
	}
	if !rootsMatchLength(out, to) {
		return nil, fmt.Errorf("%w: upgrade from %d to %d does not give the roots of %d", ErrBadProof, from, to, to)
	}
	return out, nil
}

// CheckRoots compares the full roots that come with a signed root beyond
// the local log (already checked by CheckSignedRoot) with the local tree:
// a root that covers only entries we have must be our node. A mismatch is
// a fork, recorded like CheckSignedRoot's.
func (a *Archive) CheckRoots(sr SignedRoot, roots []Node) error {
	a.mu.RLock()
	length := a.length
	a.mu.RUnlock()
	for _, r := range roots {
		if flattree.RightSpan(r.Index)/2 >= length {
			continue
		}
		ours, err := a.node(r.Index)
		if err != nil {
			return err
		}
		if ours.Hash != r.Hash {
			fe := &ForkError{Length: sr.Length, Ours: ours.Hash, Theirs: sr}
			a.recordFork(fe)
			return fe
		}
	}
	return nil
}
