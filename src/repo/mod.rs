//! The repository boundary: what every reader and writer of a repository
//! may ask of it, whatever holds it. Formats (trees, snapshot records) are
//! encoded and decoded here, over the traits; where the bytes live is the
//! implementation's business ([`crate::local`] for `.trove/`,
//! [`memory`] for tests).

pub mod snapshot;
pub mod tree;

/// Which content-addressed store a digest lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Object,
    Tree,
}

use crate::error::{Error, Result};
use crate::id::{Digest, HashAlgo, ObjectId, SnapshotId};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub mod memory;

/// The content of a stored object, opened for reading: a file (the local
/// store: it can be reflinked, and its inode is the one the browsable tree
/// links), bytes already in memory, or a stream of known length (a remote
/// object fetched chunk by chunk, never held whole).
pub enum Content {
    File(File),
    Bytes(io::Cursor<Vec<u8>>),
    Stream {
        len: u64,
        reader: Box<dyn Read + Send>,
    },
}

impl Content {
    /// Its length and, where it is a file, the (device, inode) holding it
    /// (what a hardlink in the browsable tree must share): one fstat.
    pub fn stat(&self) -> io::Result<(u64, Option<(u64, u64)>)> {
        use std::os::unix::fs::MetadataExt;
        match self {
            Content::File(f) => f.metadata().map(|m| (m.len(), Some((m.dev(), m.ino())))),
            Content::Bytes(b) => Ok((b.get_ref().len() as u64, None)),
            Content::Stream { len, .. } => Ok((*len, None)),
        }
    }

    /// The open file, where the content is one.
    pub fn as_file(&self) -> Option<&File> {
        match self {
            Content::File(f) => Some(f),
            Content::Bytes(_) | Content::Stream { .. } => None,
        }
    }
}

impl Read for Content {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Content::File(f) => f.read(buf),
            Content::Bytes(b) => b.read(buf),
            Content::Stream { reader, .. } => reader.read(buf),
        }
    }
}

/// What a reader may ask of a repository: content by kind and digest,
/// the snapshot records, the pinned list and the browsable tree's marker.
/// Untrusted bytes come back as they are stored; the format modules
/// ([`tree`], [`snapshot`]) check and decode them.
///
/// `locate_*` name where something is, for messages: a path under `.trove`
/// for the local repository, a pseudo-path elsewhere. They never mean
/// "open this path": only the implementation knows its layout.
pub trait RepoRead: Sync {
    fn algo(&self) -> HashAlgo;

    /// Where `d` of `kind` is (or would be).
    fn locate(&self, kind: StoreKind, d: &Digest) -> PathBuf;
    /// Where the store of `kind` is as a whole.
    fn locate_store(&self, kind: StoreKind) -> PathBuf;
    /// Where a snapshot record is (or would be).
    fn locate_snapshot(&self, id: &SnapshotId) -> PathBuf;
    /// Where the snapshot records are as a whole.
    fn locate_snapshots(&self) -> PathBuf;
    /// Where the pinned list is.
    fn locate_pins(&self) -> PathBuf;
    /// Where the browsable tree's marker is.
    fn locate_marker(&self) -> PathBuf;

    /// The stored bytes of `d` (a `NotFound` error when absent). Never
    /// follows a link or blocks on a FIFO put in the store's place.
    fn read(&self, kind: StoreKind, d: &Digest) -> io::Result<Vec<u8>>;
    /// Whether `d` is stored (present, whatever its bytes).
    fn has(&self, kind: StoreKind, d: &Digest) -> bool;
    /// The stored size of `d` (an error when absent).
    fn size(&self, kind: StoreKind, d: &Digest) -> io::Result<u64>;
    /// Call `f` with every digest stored under `kind`, in no order.
    fn list(&self, kind: StoreKind, f: &mut dyn FnMut(Digest)) -> Result<()>;
    /// Open a stored object to stream it. A missing one is an
    /// `Error::Io` of kind `NotFound`; one that is not a regular file (a
    /// link, a FIFO) is `Error::Corrupt`.
    fn open_object(&self, id: &ObjectId) -> Result<Content>;

    /// The ids of the snapshot records stored, in no order (names that are
    /// not an id are not records).
    fn snapshot_ids(&self) -> Result<Vec<SnapshotId>>;
    /// The bytes of one snapshot record.
    fn read_snapshot(&self, id: &SnapshotId) -> io::Result<Vec<u8>>;
    /// Whether anything (readable or not) is stored under that record name.
    fn has_snapshot(&self, id: &SnapshotId) -> bool;

    /// The pinned list's bytes (`NotFound` when there is none).
    fn read_pins(&self) -> io::Result<Vec<u8>>;
    /// The snapshot the browsable tree shows, as its marker says; `None`
    /// when the marker is absent or unreadable (it is disposable).
    fn read_marker(&self) -> Option<SnapshotId>;
    /// Leftovers of interrupted writes, sorted (a collection's plan lists
    /// them; only a writer removes them).
    fn leftovers(&self) -> Vec<PathBuf>;
    /// The folder holding the repository on this machine, if any (nothing
    /// is restored into it).
    fn local_dir(&self) -> Option<&Path>;
    /// A hint that these objects are about to be read, in this order (a
    /// restore says so first): a remote plans its ranged reads from it.
    fn will_read(&self, _objects: &[ObjectId]) {}
    /// Whether reads cost least when every object to be read is known
    /// first: a remote reads each pack front to back once, merging the
    /// wanted blobs of a pack into a few ranged reads, where reading in
    /// parts would read the gaps between them again for each part (a
    /// restore in batches downloaded 2.7 times the bytes, 731 requests
    /// against 204). A restore then writes in one batch.
    fn plans_reads(&self) -> bool {
        false
    }
    /// A sort key for reading objects cheaply: objects read in the order
    /// of their keys are read front to back where they are stored (a
    /// remote's packs). Everything is equal (0) where order does not matter.
    fn read_order(&self, _id: &ObjectId) -> u64 {
        0
    }
    /// Whether `id` is missing by design: a replica that records which
    /// content its source no longer held when it was copied says so here,
    /// so its absence is not reported as damage.
    fn absent_by_design(&self, _id: &ObjectId) -> bool {
        false
    }
    /// Call `f` with every stored object and where it is, taken from the
    /// store's directory listings rather than a stat or an open per object
    /// (a million objects are a few hundred `getdents` calls). `None`
    /// where this repository cannot say (then `list` and `open_object`).
    fn list_objects_located(&self, _f: &mut dyn FnMut(ObjectId, Located)) -> Option<Result<()>> {
        None
    }
}

/// Where a stored object is, as its folder's listing tells: the device of
/// the folder, the inode number of the entry, and whether the entry is a
/// regular file. Its size is not known without a stat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Located {
    pub dev: u64,
    pub ino: u64,
    pub regular: bool,
}

/// What produces the bytes of a put, called only when they are needed.
pub type Make<'a> = &'a mut dyn FnMut() -> Result<Vec<u8>>;

/// What a writer may do. Content goes in through
/// [`RepoWrite::put_with`] and becomes durable and visible at
/// [`RepoWrite::commit`]; a snapshot record written after that commit is
/// the commit point of a run. Only the holder of the repository's
/// exclusive lock writes.
pub trait RepoWrite: Sync {
    /// The repository this session writes to, for what a writer reads
    /// (a collection marks before it sweeps).
    fn reader(&self) -> &dyn RepoRead;
    /// Store the bytes `make` produces under `d` unless `d` is stored or
    /// queued already (false then, and `make` is not called).
    fn put_with(&self, kind: StoreKind, d: Digest, make: Make<'_>) -> Result<bool>;
    /// Store an object streamed from `src` (`what` names it in messages),
    /// checking that its bytes hash to `id`: a copy from another
    /// repository never stores bytes under a name they do not have. False
    /// when `id` is stored or queued already. This default holds the bytes
    /// in memory; a store on disk streams them.
    fn put_object_from(&self, id: &ObjectId, src: &mut dyn Read, what: &Path) -> Result<bool> {
        if self.reader().has(StoreKind::Object, &id.0) {
            return Ok(false);
        }
        let mut data = Vec::new();
        src.read_to_end(&mut data)
            .map_err(|e| Error::io("read", what, e))?;
        if crate::hash::hash_bytes(self.reader().algo(), &data) != id.0 {
            return Err(Error::corrupt(
                "object",
                what,
                "its bytes do not hash to its id",
            ));
        }
        self.put_with(StoreKind::Object, id.0, &mut || {
            Ok(std::mem::take(&mut data))
        })
    }
    /// Make everything put so far durable and visible.
    fn commit(&self) -> Result<()>;
    /// Write a snapshot record durably under its id.
    fn write_snapshot(&self, id: &SnapshotId, data: &[u8]) -> Result<()>;
    /// Remove a snapshot record (false when it was not there). Durable at
    /// [`RepoWrite::sync_snapshots`].
    fn remove_snapshot(&self, id: &SnapshotId) -> Result<bool>;
    /// Make the removals of records durable before anything they
    /// referenced goes.
    fn sync_snapshots(&self) -> Result<()>;
    /// Remove stored content (false when it was not there).
    fn remove(&self, kind: StoreKind, d: &Digest) -> Result<bool>;
    /// Remove many stored items of `kind` at once (those not there are
    /// skipped). A store that keeps many items in one file (the local
    /// repository's tree packs) decides per file here, and may keep an
    /// unreferenced item in a file that is mostly live; one by one is the
    /// default.
    fn remove_all(&self, kind: StoreKind, ds: &[Digest]) -> Result<()> {
        for d in ds {
            self.remove(kind, d)?;
        }
        Ok(())
    }
    /// Replace the pinned list (`None`: there is none).
    fn write_pins(&self, data: Option<&[u8]>) -> Result<()>;
    /// Remove one leftover.
    fn remove_leftover(&self, p: &Path) -> Result<()>;
}

/// A missing stored item as the error the readers report.
pub fn missing(what: &'static str, repo: &dyn RepoRead, kind: StoreKind, d: &Digest) -> Error {
    Error::Missing {
        what,
        id: d.to_hex(),
        path: repo.locate(kind, d),
    }
}

/// Every digest stored under `kind`, sorted.
pub fn list_sorted(repo: &dyn RepoRead, kind: StoreKind) -> Result<Vec<Digest>> {
    let mut out = Vec::new();
    repo.list(kind, &mut |d| out.push(d))?;
    out.sort_unstable();
    Ok(out)
}
