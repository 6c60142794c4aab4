//! The stat cache (`cache/stat-v1`): for each source file of the latest
//! snapshot, its size, mtime, ctime, inode and device with the content hash
//! they produced. A file whose stat matches is not read again.
//!
//! The cache is disposable: a missing, damaged or foreign cache only makes
//! the next run read more. It is tied to the snapshot it was written for,
//! so a hash taken from it always names an object the latest snapshot
//! keeps alive. Files modified within [`RACY_WINDOW_NS`] of the run's start
//! are left out (git's "racily clean" problem: a write in the same clock
//! tick as our read would leave the stat unchanged), and so are re-hashed.

use crate::error::{IoContext, Result};
use crate::fsutil;
use crate::id::{ObjectId, SnapshotId};
use crate::store::objects::StatKey;
use crate::store::Repo;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

const MAGIC: &[u8; 4] = b"trvC";
const VERSION: u8 = 1;
const FILE: &str = "stat-v1";
/// Coarsest timestamp granularity we allow for (FAT's 2 s).
pub const RACY_WINDOW_NS: i64 = 2_000_000_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    pub path: Vec<u8>,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub dev: u64,
    pub id: ObjectId,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheFile {
    /// The snapshot these hashes belong to.
    pub snapshot: Option<SnapshotId>,
    pub records: Vec<CacheRecord>,
}

/// In-memory lookup by absolute source path bytes.
#[derive(Default)]
pub struct StatCache {
    map: HashMap<Vec<u8>, (StatKey, ObjectId)>,
}

impl StatCache {
    /// Load the cache if it belongs to `snapshot`; anything else yields an
    /// empty cache (never an error: the cache is only an accelerator).
    pub fn load(repo: &Repo, snapshot: Option<&SnapshotId>) -> StatCache {
        let path = repo.cache_dir().join(FILE);
        let Ok(data) = std::fs::read(&path) else {
            return StatCache::default();
        };
        let Some(file) = decode(&data) else {
            tracing::warn!("ignoring unreadable stat cache {}", path.display());
            return StatCache::default();
        };
        if file.snapshot.as_ref() != snapshot {
            return StatCache::default();
        }
        let map = file
            .records
            .into_iter()
            .map(|r| {
                let key = StatKey {
                    size: r.size,
                    mtime_ns: r.mtime_ns,
                    ctime_ns: r.ctime_ns,
                    ino: r.ino,
                    dev: r.dev,
                };
                (r.path, (key, r.id))
            })
            .collect();
        StatCache { map }
    }

    pub fn lookup(&self, path: &[u8], stat: &StatKey) -> Option<ObjectId> {
        match self.map.get(path) {
            Some((k, id)) if k == stat => Some(*id),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

pub fn decode(data: &[u8]) -> Option<CacheFile> {
    if data.len() < 5 || &data[..4] != MAGIC || data[4] != VERSION {
        return None;
    }
    let payload = zstd::bulk::decompress(&data[5..], 1 << 30).ok()?;
    postcard::from_bytes(&payload).ok()
}

pub fn encode(file: &CacheFile) -> Result<Vec<u8>> {
    let payload = postcard::to_stdvec(file)
        .map_err(|e| crate::error::Error::Usage(format!("encode cache: {e}")))?;
    let mut out = MAGIC.to_vec();
    out.push(VERSION);
    out.extend(zstd::bulk::compress(&payload, 1).ctx("compress", "stat cache")?);
    Ok(out)
}

/// Write the cache for `snapshot`, leaving out racily-clean entries.
pub fn save(
    repo: &Repo,
    snapshot: Option<SnapshotId>,
    mut records: Vec<CacheRecord>,
    run_start_ns: i64,
) -> Result<()> {
    records.retain(|r| {
        r.mtime_ns < run_start_ns - RACY_WINDOW_NS && r.ctime_ns < run_start_ns - RACY_WINDOW_NS
    });
    let data = encode(&CacheFile { snapshot, records })?;
    fsutil::atomic_write(&repo.tmp_dir(), &repo.cache_dir().join(FILE), &data, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let f = CacheFile {
            snapshot: None,
            records: vec![CacheRecord {
                path: b"/a\xff".to_vec(),
                size: 1,
                mtime_ns: 2,
                ctime_ns: 3,
                ino: 4,
                dev: 5,
                id: ObjectId(crate::id::Digest([9; 32])),
            }],
        };
        let enc = encode(&f).expect("in memory");
        assert_eq!(decode(&enc), Some(f));
        assert_eq!(decode(b"junk"), None);
        assert_eq!(decode(&enc[..enc.len() - 3]), None);
    }
}
