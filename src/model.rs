//! Plain data of a snapshot: entry metadata, source leaves and listings,
//! archived versions, and the stat identity of a file. No I/O and no
//! repository types: every layer (scan, plan, the repository, the
//! browsable tree, fsutil) shares these without depending on each other.

use crate::id::ObjectId;
use serde::{Deserialize, Serialize};
use std::fs;
use std::os::unix::fs::MetadataExt;

/// Metadata kept for every entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
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
    },
    Symlink {
        target: Vec<u8>,
        meta: Meta,
    },
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
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty() && self.deleted.is_none()
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
