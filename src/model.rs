//! Plain data of a snapshot: entry metadata, source leaves and listings,
//! archived versions, and the stat identity of a file. No I/O and no
//! repository types: every layer (scan, plan, the repository, the
//! browsable tree, fsutil) shares these without depending on each other.

use crate::id::ObjectId;
use serde::{Deserialize, Serialize};
use std::fs;
use std::os::unix::fs::MetadataExt;

thread_local! {
    static LEGACY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// While the guard lives, this thread decodes version 1 of the tree and
/// snapshot formats: the fields version 2 added (marked `since_v2`) are
/// not in the bytes and read as their defaults. Version 2 only appended
/// fields and variants, so one set of types reads both.
pub struct LegacyGuard(bool);

pub fn decoding_version(version: u8) -> LegacyGuard {
    LegacyGuard(LEGACY.with(|l| l.replace(version < 2)))
}

impl Drop for LegacyGuard {
    fn drop(&mut self) {
        LEGACY.with(|l| l.set(self.0));
    }
}

/// A field version 2 added: read only from version 2 bytes.
pub fn since_v2<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    if LEGACY.with(|l| l.get()) {
        Ok(T::default())
    } else {
        T::deserialize(d)
    }
}

/// Metadata kept for every entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Extended attributes (POSIX ACLs and capabilities are among them).
    /// Absent from version 1 of the formats (read as none).
    #[serde(deserialize_with = "since_v2")]
    pub xattrs: Xattrs,
}

/// One extended attribute: its full name (`user.note`,
/// `system.posix_acl_access`, `security.capability`) and its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// The extended attributes of an entry, sorted by name bytes. Most entries
/// have none, so "none" costs one byte in a tree and no allocation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
// One pointer wide (not a Vec's three words): every entry of a listing of
// millions carries one, and almost all are empty.
#[allow(clippy::box_collection)]
pub struct Xattrs(Option<Box<Vec<Xattr>>>);

impl Xattrs {
    /// From any list: sorted by name, later duplicates dropped.
    pub fn new(mut list: Vec<Xattr>) -> Xattrs {
        if list.is_empty() {
            return Xattrs(None);
        }
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list.dedup_by(|a, b| a.name == b.name);
        Xattrs(Some(Box::new(list)))
    }

    pub fn as_slice(&self) -> &[Xattr] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }

    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }
}

impl FileExt {
    /// The link key of a file with more than one link.
    pub fn link_key(dev: u64, ino: u64) -> Option<std::num::NonZeroU64> {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&dev.to_le_bytes());
        b[8..].copy_from_slice(&ino.to_le_bytes());
        let h = blake3::hash(&b);
        let mut k = [0u8; 8];
        k.copy_from_slice(&h.as_bytes()[..8]);
        std::num::NonZeroU64::new(u64::from_le_bytes(k)).or(std::num::NonZeroU64::new(1))
    }
}

impl Meta {
    /// The fields version 1 of the formats recorded.
    pub fn basic(mode: u32, uid: u32, gid: u32, mtime_ns: i64) -> Meta {
        Meta {
            mode,
            uid,
            gid,
            mtime_ns,
            xattrs: Xattrs::default(),
        }
    }
}

/// What a file entry records beyond its content and metadata.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileExt {
    /// The key of the file's hard-link group in the source: paths of one
    /// run sharing an inode share it (a digest of device and inode; restic
    /// records the pair). `None` for a file with one link. A restore links
    /// only paths whose content is the same too, so even two groups that
    /// shared a key could not be mixed up.
    pub link: Option<std::num::NonZeroU64>,
    /// The source file had holes (fewer blocks than its size needs): a
    /// restore writes its zero runs as holes again.
    pub sparse: bool,
    /// The content came from `backup --stdin` (or `--stdin-from-command`),
    /// not from a source folder: ordinary runs keep it as it is.
    pub stdin: bool,
}

/// The kind of a special file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpecialKind {
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl SpecialKind {
    pub fn describe(self) -> &'static str {
        match self {
            SpecialKind::Fifo => "a FIFO",
            SpecialKind::Socket => "a socket",
            SpecialKind::CharDevice => "a character device",
            SpecialKind::BlockDevice => "a block device",
        }
    }

    /// The short name `ls --json` and `diff` use.
    pub fn name(self) -> &'static str {
        match self {
            SpecialKind::Fifo => "fifo",
            SpecialKind::Socket => "socket",
            SpecialKind::CharDevice => "chardev",
            SpecialKind::BlockDevice => "blockdev",
        }
    }
}

/// A non-directory entry of the source tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Leaf {
    File {
        size: u64,
        id: ObjectId,
        /// Shown in `_duplicates/` rather than at the top of the browsable
        /// tree (decided by the planner when the content arrived).
        dup: bool,
        meta: Meta,
        /// Absent from version 1 of the tree format (read as default).
        #[serde(deserialize_with = "since_v2")]
        ext: FileExt,
    },
    Symlink {
        target: Vec<u8>,
        meta: Meta,
    },
    /// A FIFO, socket or device: recorded, restored (sockets not; devices
    /// as root), never shown in the browsable tree.
    Special {
        kind: SpecialKind,
        /// The device number (`st_rdev`; 0 for FIFOs and sockets).
        rdev: u64,
        meta: Meta,
    },
}

impl Leaf {
    pub fn meta(&self) -> &Meta {
        match self {
            Leaf::File { meta, .. } | Leaf::Symlink { meta, .. } | Leaf::Special { meta, .. } => {
                meta
            }
        }
    }
}

/// One entry of a flat source listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Item {
    Leaf(Leaf),
    Dir(Meta),
}

/// A flat source listing entry: a path relative to the backup root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: Vec<u8>,
    pub item: Item,
}

impl Entry {
    pub fn file_id(&self) -> Option<(ObjectId, u64)> {
        match &self.item {
            Item::Leaf(Leaf::File { id, size, .. }) => Some((*id, *size)),
            _ => None,
        }
    }
}

/// One archived content of a path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Archived {
    pub id: ObjectId,
    pub size: u64,
    pub meta: Meta,
    /// When it was archived (snapshot time, ns).
    pub time_ns: i64,
}

/// The history of one path that the browsable tree shows outside the top
/// level: `versions/<path>/vN.bak` and `_deleted/<path>`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The number the next archived version of this path gets. Version
    /// numbers never restart, even after retention removed older ones.
    pub next_version: u64,
    /// Kept versions, ascending by number.
    pub versions: Vec<(u64, Archived)>,
    /// The content the path had when it last left the source.
    pub deleted: Option<Archived>,
}

impl History {
    /// The contents it keeps: its versions, then its deleted content.
    pub fn object_ids(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.versions
            .iter()
            .map(|(_, a)| a.id)
            .chain(self.deleted.iter().map(|a| a.id))
    }

    pub fn is_empty(&self) -> bool {
        self.versions.is_empty() && self.deleted.is_none()
    }
}

/// Bounds every history of an archive is within: the most versions any
/// one path keeps and the oldest deleted content's time. While retention
/// cannot cut into them (`plan::retention_is_idle`), a history no run
/// touches stays exactly as it is, so a run may carry a folder of the
/// previous archive whole, unread, and the bounds along with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArchiveBounds {
    pub most_versions: u64,
    pub oldest_deleted_ns: Option<i64>,
}

impl ArchiveBounds {
    /// Widen the bounds to hold `h`.
    pub fn note(&mut self, h: &History) {
        self.most_versions = self.most_versions.max(h.versions.len() as u64);
        if let Some(d) = &h.deleted {
            self.note_deleted(d.time_ns);
        }
    }

    /// Widen the bounds to hold everything `other` bounds.
    pub fn widen(&mut self, other: &ArchiveBounds) {
        self.most_versions = self.most_versions.max(other.most_versions);
        if let Some(t) = other.oldest_deleted_ns {
            self.note_deleted(t);
        }
    }

    fn note_deleted(&mut self, t: i64) {
        self.oldest_deleted_ns = Some(self.oldest_deleted_ns.map_or(t, |o| o.min(t)));
    }
}

/// The identity of a source file as seen by a stat call; two equal values
/// mean "the file was not changed in between" (a write updates mtime and
/// ctime, and ctime cannot be set back by an unprivileged writer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatKey {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub dev: u64,
}

impl StatKey {
    pub fn of(m: &fs::Metadata) -> StatKey {
        StatKey {
            size: m.len(),
            mtime_ns: crate::model::stat_ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: crate::model::stat_ns(m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
            dev: m.dev(),
        }
    }
}

/// A stat time (seconds, nanoseconds) in ns since the epoch, saturating:
/// a file dated past 2262 (or before 1678) does not fit in an i64 of ns,
/// and gets the nearest time that does instead of an overflow.
pub fn stat_ns(secs: i64, nsecs: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsecs)
}

/// Now, in nanoseconds since the Unix epoch (the time unit of records).
pub fn now_ns() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

/// For `skip_serializing_if`: a count of zero is left out of a report.
pub(crate) fn is_zero(n: &u64) -> bool {
    *n == 0
}
