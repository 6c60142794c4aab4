//! The stat cache (`cache/stat-v1`): for each file of the latest snapshot,
//! in the snapshot's path order, the ctime, inode and device it had when it
//! was hashed. With the size and mtime the snapshot itself records, that is
//! the stat a file must still have for its recorded hash to be trusted
//! without reading it.
//!
//! Lining the cache up with the snapshot's file entries means it stores no
//! paths and no hashes: a lookup is a merge-join of the scan with the
//! previous snapshot, and the cache costs 25 bytes per file.
//!
//! The cache is disposable: a missing, damaged or foreign cache only makes
//! the next run read more. It names the snapshot it belongs to and is
//! ignored for any other. Files modified within [`RACY_WINDOW_NS`] of the
//! run's start are not cached (git's "racily clean" problem: a write in the
//! same clock tick as our read would leave the stat unchanged), so they are
//! read again next time.

use crate::error::{IoContext, Result};
use crate::fsutil;
use crate::id::SnapshotId;
use crate::store::objects::StatKey;
use crate::store::tree::zstd_compress;
use crate::store::Repo;
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 4] = b"trvC";
const VERSION: u8 = 1;
const FILE: &str = "stat-v1";
/// Coarsest timestamp granularity we allow for (FAT's 2 s).
pub const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// The part of a file's stat the snapshot does not record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatExtra {
    pub ctime_ns: i64,
    pub ino: u64,
    pub dev: u64,
}

impl StatExtra {
    pub fn of(k: &StatKey) -> StatExtra {
        StatExtra {
            ctime_ns: k.ctime_ns,
            ino: k.ino,
            dev: k.dev,
        }
    }

    /// The full stat key, given what the snapshot recorded.
    pub fn key(&self, size: u64, mtime_ns: i64) -> StatKey {
        StatKey {
            size,
            mtime_ns,
            ctime_ns: self.ctime_ns,
            ino: self.ino,
            dev: self.dev,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheFile {
    /// The snapshot these records belong to.
    pub snapshot: Option<SnapshotId>,
    /// One per file entry of that snapshot, in path order; `None` where the
    /// file must be read again (racily clean, or kept from an older run).
    pub records: Vec<Option<StatExtra>>,
}

/// Load the records for `snapshot` if the cache belongs to it and has one
/// record per file (`files`); anything else gives an empty cache, never an
/// error: the cache is only an accelerator.
pub fn load(repo: &Repo, snapshot: Option<&SnapshotId>, files: usize) -> Vec<Option<StatExtra>> {
    let path = repo.cache_dir().join(FILE);
    let Ok(data) = std::fs::read(&path) else {
        return Vec::new();
    };
    let Some(file) = decode(&data) else {
        tracing::warn!("ignoring unreadable stat cache {}", path.display());
        return Vec::new();
    };
    if file.snapshot.as_ref() != snapshot || file.records.len() != files {
        return Vec::new();
    }
    file.records
}

pub fn decode(data: &[u8]) -> Option<CacheFile> {
    if data.len() < 5 || &data[..4] != MAGIC || data[4] != VERSION {
        return None;
    }
    let payload = crate::store::tree::zstd_decompress(&data[5..], 1 << 30).ok()?;
    postcard::from_bytes(&payload).ok()
}

pub fn encode(file: &CacheFile) -> Result<Vec<u8>> {
    let payload = postcard::to_stdvec(file)
        .map_err(|e| crate::error::Error::Usage(format!("encode cache: {e}")))?;
    let mut out = MAGIC.to_vec();
    out.push(VERSION);
    out.extend(zstd_compress(&payload, 1).ctx("compress", "stat cache")?);
    Ok(out)
}

/// Is a file with this stat too fresh to be trusted next time?
pub fn is_racy(k: &StatKey, run_start_ns: i64) -> bool {
    k.mtime_ns >= run_start_ns - RACY_WINDOW_NS || k.ctime_ns >= run_start_ns - RACY_WINDOW_NS
}

/// Write the cache for `snapshot`. Durability is not needed (a lost cache
/// costs a re-read), only atomicity, but atomic_write gives both.
pub fn save(
    repo: &Repo,
    snapshot: Option<SnapshotId>,
    records: Vec<Option<StatExtra>>,
) -> Result<()> {
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
            records: vec![
                Some(StatExtra {
                    ctime_ns: 3,
                    ino: 4,
                    dev: 5,
                }),
                None,
            ],
        };
        let enc = encode(&f).expect("in memory");
        assert_eq!(decode(&enc), Some(f));
        assert_eq!(decode(b"junk"), None);
        assert_eq!(decode(&enc[..enc.len() - 3]), None);
    }

    #[test]
    fn racy_window() {
        let k = StatKey {
            size: 1,
            mtime_ns: 10_000_000_000,
            ctime_ns: 10_000_000_000,
            ino: 1,
            dev: 1,
        };
        assert!(is_racy(&k, 11_000_000_000));
        assert!(!is_racy(&k, 13_000_000_000));
    }
}
