// Package hyperdrive is beaker-dev's archive: a signed, versioned,
// content-addressed file tree in the style of Dat's hyperdrive.
//
// An archive is named by an Ed25519 public key. Its history is an
// append-only log of entries (file put, delete, tag, and a manifest at entry
// 0), each a leaf of a flat in-order Merkle tree; every commit signs the tree
// of the new log length, and that length is a version. File bytes are cut
// into Rabin chunks of about 16 KiB and stored once per archive under their
// SHA-256, so a chunk that two files or two versions share costs nothing
// twice. docs/FORMAT.md specifies every byte.
//
// The main types:
//
//   - [Store]: a data directory of secret keys and archives.
//   - [Archive]: one archive on disk. [Archive.Begin] takes the writer lock
//     and returns a [Writer], which writes content and stages entries that
//     [Writer.Commit] appends as one signed version.
//   - [Snapshot]: one version, read-only; it implements io/fs.FS, and its
//     [File]s offer verified random access.
//   - [Proof] and [ChunkProof]: evidence that an entry or a chunk belongs to
//     a signed version, for peers that hold only part of an archive.
//   - [Verify]: a full check of an archive's storage that trusts nothing.
//
// Writing is crash-safe: a process killed at any instant leaves an archive
// that opens at its last complete version, and the next writer cuts what the
// crash left behind. One writer at a time, across processes, holds the lock.
package hyperdrive
