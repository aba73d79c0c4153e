package hyperdrive

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

// On-disk layout of one archive directory (FORMAT.md §6). Every file starts
// with a 32-byte header: the magic "beakerdv", a kind byte, a version byte
// and 22 zero bytes. All files are append-only except "tree", whose fixed-size
// node slots are each written once.
const (
	fileMagic     = "beakerdv"
	headerSize    = 32
	storageFormat = 1

	entriesFile    = "entries"
	treeFile       = "tree"
	signaturesFile = "signatures"
	chunksFile     = "chunks"
	chunkIndexFile = "chunks.idx"
	lockFile       = "lock"

	// entries: u32be len ‖ u32be crc32c(payload) ‖ payload
	entryHeaderSize = 8
	// tree: node i at headerSize + i*nodeRecordSize: hash ‖ u64be size
	nodeRecordSize = 40
	// signatures: u64be length ‖ i64be time ‖ tree hash ‖ signature ‖ u32be crc32c
	sigRecordSize = 8 + 8 + 32 + 64 + 4
	// chunks: u32be len ‖ hash ‖ data
	chunkHeaderSize = 4 + 32
	// chunks.idx: hash ‖ u64be offset ‖ u32be len ‖ u32be crc32c
	indexRecordSize = 32 + 8 + 4 + 4
)

var fileKinds = map[string]byte{
	entriesFile:    1,
	treeFile:       2,
	signaturesFile: 3,
	chunksFile:     4,
	chunkIndexFile: 5,
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

func fileHeader(name string) []byte {
	h := make([]byte, headerSize)
	copy(h, fileMagic)
	h[8] = fileKinds[name]
	h[9] = storageFormat
	return h
}

// openStorageFile opens (creating when create is set) one storage file and
// checks its header. A file shorter than its header is a creation cut short
// and gets a fresh header when writable.
func openStorageFile(dir, name string, writable, create bool) (*os.File, int64, error) {
	flag := os.O_RDONLY
	if writable {
		flag = os.O_RDWR
		if create {
			flag |= os.O_CREATE
		}
	}
	f, err := os.OpenFile(filepath.Join(dir, name), flag, 0o600)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	size := st.Size()
	if size < headerSize {
		if !writable {
			f.Close()
			return nil, 0, &CorruptError{File: name, Reason: "file shorter than its header"}
		}
		if _, err := f.WriteAt(fileHeader(name), 0); err != nil {
			f.Close()
			return nil, 0, err
		}
		if err := f.Truncate(headerSize); err != nil {
			f.Close()
			return nil, 0, err
		}
		return f, headerSize, nil
	}
	hdr := make([]byte, headerSize)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		f.Close()
		return nil, 0, err
	}
	if string(hdr[:8]) != fileMagic || hdr[8] != fileKinds[name] {
		f.Close()
		return nil, 0, &CorruptError{File: name, Reason: "not a beaker-dev storage file (bad magic)"}
	}
	if hdr[9] != storageFormat {
		f.Close()
		return nil, 0, &CorruptError{File: name, Reason: fmt.Sprintf("storage format %d, this program reads format %d", hdr[9], storageFormat)}
	}
	return f, size, nil
}

// encodeEntryRecord frames an encoded entry for the entries file.
func appendEntryRecord(dst, payload []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(payload)))
	dst = binary.BigEndian.AppendUint32(dst, crc(payload))
	return append(dst, payload...)
}

// readEntryRecord reads the record at off and returns its payload and the
// offset of the next record. A record that runs past size or fails its CRC is
// reported as a CorruptError; the caller decides whether that is a torn tail.
func readEntryRecord(r io.ReaderAt, off, size int64, seq uint64, buf []byte) ([]byte, int64, error) {
	bad := func(reason string) error {
		return &CorruptError{File: entriesFile, Record: seq, Offset: off, Reason: reason}
	}
	if off+entryHeaderSize > size {
		return nil, 0, bad("record header cut short")
	}
	var hdr [entryHeaderSize]byte
	if _, err := r.ReadAt(hdr[:], off); err != nil {
		return nil, 0, err
	}
	n := int64(binary.BigEndian.Uint32(hdr[:4]))
	if n > MaxEntrySize || n < 2 {
		return nil, 0, bad(fmt.Sprintf("record length %d out of range", n))
	}
	if off+entryHeaderSize+n > size {
		return nil, 0, bad("record cut short")
	}
	if int64(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := r.ReadAt(buf, off+entryHeaderSize); err != nil {
		return nil, 0, err
	}
	if crc(buf) != binary.BigEndian.Uint32(hdr[4:]) {
		return nil, 0, bad("checksum mismatch")
	}
	return buf, off + entryHeaderSize + n, nil
}

func encodeNode(n Node) []byte {
	b := make([]byte, nodeRecordSize)
	copy(b, n.Hash[:])
	binary.BigEndian.PutUint64(b[32:], n.Size)
	return b
}

// decodeNode returns the node stored in a slot; ok is false for an empty
// (all-zero) slot, which no SHA-256 output fills.
func decodeNode(index uint64, b []byte) (Node, bool) {
	n := Node{Index: index}
	copy(n.Hash[:], b[:32])
	n.Size = binary.BigEndian.Uint64(b[32:40])
	return n, n.Hash != (Hash{})
}

func nodeOffset(index uint64) int64 { return headerSize + int64(index)*nodeRecordSize }

func encodeSignedRoot(s SignedRoot) []byte {
	b := make([]byte, 0, sigRecordSize)
	b = binary.BigEndian.AppendUint64(b, s.Length)
	b = binary.BigEndian.AppendUint64(b, uint64(s.Time))
	b = append(b, s.TreeHash[:]...)
	b = append(b, s.Signature[:]...)
	return binary.BigEndian.AppendUint32(b, crc(b))
}

// DecodeSignedRoot decodes one record of the signatures file.
func DecodeSignedRoot(b []byte) (SignedRoot, error) {
	var s SignedRoot
	if len(b) != sigRecordSize {
		return s, fmt.Errorf("%w: signature record of %d bytes, want %d", ErrMalformed, len(b), sigRecordSize)
	}
	if crc(b[:sigRecordSize-4]) != binary.BigEndian.Uint32(b[sigRecordSize-4:]) {
		return s, fmt.Errorf("%w: signature record checksum mismatch", ErrMalformed)
	}
	s.Length = binary.BigEndian.Uint64(b)
	s.Time = int64(binary.BigEndian.Uint64(b[8:]))
	copy(s.TreeHash[:], b[16:48])
	copy(s.Signature[:], b[48:112])
	if s.Length == 0 {
		return s, fmt.Errorf("%w: signature record for length 0", ErrMalformed)
	}
	return s, nil
}

// chunkLoc is where a chunk's data lies in the chunks file.
type chunkLoc struct {
	off int64 // offset of the data (after the record header)
	n   uint32
	// checked: this process has hashed these bytes (it wrote them after
	// hashing or verifying them, or read them back and checked them once),
	// so reads skip the SHA-256. Memory only; `verify` always hashes.
	checked bool
}

func appendChunkRecord(dst []byte, h Hash, data []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(data)))
	dst = append(dst, h[:]...)
	return append(dst, data...)
}

func encodeIndexRecord(h Hash, loc chunkLoc) []byte {
	b := make([]byte, 0, indexRecordSize)
	b = append(b, h[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(loc.off))
	b = binary.BigEndian.AppendUint32(b, loc.n)
	return binary.BigEndian.AppendUint32(b, crc(b))
}

// DecodeIndexRecord decodes one record of chunks.idx.
func DecodeIndexRecord(b []byte) (Hash, int64, uint32, error) {
	var h Hash
	if len(b) != indexRecordSize {
		return h, 0, 0, fmt.Errorf("%w: index record of %d bytes", ErrMalformed, len(b))
	}
	if crc(b[:indexRecordSize-4]) != binary.BigEndian.Uint32(b[indexRecordSize-4:]) {
		return h, 0, 0, fmt.Errorf("%w: index record checksum mismatch", ErrMalformed)
	}
	copy(h[:], b[:32])
	off := binary.BigEndian.Uint64(b[32:])
	n := binary.BigEndian.Uint32(b[40:])
	if off < headerSize+chunkHeaderSize || off > 1<<62 || n == 0 || n > MaxChunkSize {
		return h, 0, 0, fmt.Errorf("%w: index record offset %d length %d out of range", ErrMalformed, off, n)
	}
	return h, int64(off), n, nil
}

// DecodeChunkHeader decodes the header of a record in the chunks file.
func DecodeChunkHeader(b []byte) (Hash, uint32, error) {
	var h Hash
	if len(b) != chunkHeaderSize {
		return h, 0, fmt.Errorf("%w: chunk header of %d bytes", ErrMalformed, len(b))
	}
	n := binary.BigEndian.Uint32(b)
	if n == 0 || n > MaxChunkSize {
		return h, 0, fmt.Errorf("%w: chunk length %d out of range", ErrMalformed, n)
	}
	copy(h[:], b[4:])
	return h, n, nil
}

// isNotExist reports a missing file or directory.
func isNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) }
