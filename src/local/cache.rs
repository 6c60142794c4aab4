//! The stat cache (`cache/stat-v2`): for each file of the latest snapshot,
//! in the snapshot's path order, the ctime, inode and device it had when it
//! was hashed. With the size and mtime the snapshot itself records, that is
//! the stat a file must still have for its recorded hash to be trusted
//! without reading it.
//!
//! Lining the cache up with the snapshot's file entries means it stores no
//! paths and no hashes: a lookup is a merge-join of the scan with the
//! previous snapshot, and the cache costs 25 bytes per file before
//! compression. It is a stream of fixed-size records, read ([`Reader`]) and
//! written ([`Writer`]) one file at a time alongside the walk, so a run
//! never holds it whole.
//!
//! The cache is disposable: a missing, damaged or foreign cache only makes
//! the next run read more. It names the snapshot it belongs to and is
//! ignored for any other; a record can only vouch for a file whose inode,
//! ctime, size and mtime all still match, so even a damaged record cannot
//! make a changed file look unchanged. Files modified within
//! [`RACY_WINDOW_NS`] of the run's start are not cached (git's "racily
//! clean" problem: a write in the same clock tick as our read would leave
//! the stat unchanged), so they are read again next time.

use crate::codec::{finish_zstd_writer, zstd_writer, ZstdWriter};
use crate::error::{IoContext, Result};
use crate::id::{Digest, SnapshotId};
use crate::local::LocalRepo;
use crate::model::{Entry, StatKey};
use crate::pathbytes::cmp_paths;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::PathBuf;

const MAGIC: &[u8; 4] = b"trvC";
const VERSION: u8 = 2;
const FILE: &str = "stat-v2";
/// Caches of earlier formats, removed when a new one is written.
const OLD_FILES: &[&str] = &["stat-v1"];
/// Magic, version, a snapshot flag byte and 32 id bytes.
const HEADER: usize = 4 + 1 + 1 + 32;
/// A presence byte, then ctime, inode and device (little-endian).
const RECORD: usize = 1 + 8 + 8 + 8;
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

/// A whole cache in memory (tests, fuzzing and the callers that hold a
/// whole listing anyway).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheFile {
    /// The snapshot these records belong to.
    pub snapshot: Option<SnapshotId>,
    /// One per file entry of that snapshot, in path order; `None` where the
    /// file must be read again (racily clean, or kept from an older run).
    pub records: Vec<Option<StatExtra>>,
}

fn header(snapshot: Option<&SnapshotId>) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(MAGIC);
    h[4] = VERSION;
    if let Some(id) = snapshot {
        h[5] = 1;
        h[6..].copy_from_slice(&id.0 .0);
    }
    h
}

/// The snapshot a header names: `None` for a header that is not ours,
/// `Some(None)` for a cache that belongs to no snapshot.
fn parse_header(h: &[u8]) -> Option<Option<SnapshotId>> {
    if h.len() < HEADER || &h[..4] != MAGIC || h[4] != VERSION {
        return None;
    }
    match h[5] {
        0 => Some(None),
        1 => {
            let mut d = [0u8; 32];
            d.copy_from_slice(&h[6..HEADER]);
            Some(Some(SnapshotId(Digest(d))))
        }
        _ => None,
    }
}

fn encode_record(r: &Option<StatExtra>) -> [u8; RECORD] {
    let mut b = [0u8; RECORD];
    if let Some(x) = r {
        b[0] = 1;
        b[1..9].copy_from_slice(&x.ctime_ns.to_le_bytes());
        b[9..17].copy_from_slice(&x.ino.to_le_bytes());
        b[17..25].copy_from_slice(&x.dev.to_le_bytes());
    }
    b
}

/// `None` for a record that is not valid (the stream is then abandoned).
fn decode_record(b: &[u8; RECORD]) -> Option<Option<StatExtra>> {
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i..i + 8]);
        w
    };
    match b[0] {
        0 if b[1..].iter().all(|&c| c == 0) => Some(None),
        1 => Some(Some(StatExtra {
            ctime_ns: i64::from_le_bytes(word(1)),
            ino: u64::from_le_bytes(word(9)),
            dev: u64::from_le_bytes(word(17)),
        })),
        _ => None,
    }
}

/// The cache records of one snapshot, read one file at a time.
pub struct Reader {
    stream: Option<Box<dyn Read + Send>>,
}

impl Reader {
    /// A reader that vouches for nothing.
    pub fn empty() -> Reader {
        Reader { stream: None }
    }

    /// The records for `snapshot`, if the cache belongs to it; anything
    /// else gives an empty reader, never an error: the cache is only an
    /// accelerator.
    pub fn open(repo: &LocalRepo, snapshot: Option<&SnapshotId>) -> Reader {
        let path = repo.cache_dir().join(FILE);
        // Not followed if a symlink, not blocking if a FIFO (it then reads
        // as empty: an unusable cache).
        let Ok(f) = crate::fsutil::open_repo_file(&path) else {
            return Reader::empty();
        };
        match Reader::from_read(BufReader::new(f), snapshot) {
            Some(r) => r,
            None => {
                tracing::debug!(
                    "ignoring stat cache {} (another snapshot's, or unreadable)",
                    path.display()
                );
                Reader::empty()
            }
        }
    }

    fn from_read(
        mut r: impl Read + Send + 'static,
        snapshot: Option<&SnapshotId>,
    ) -> Option<Reader> {
        let mut h = [0u8; HEADER];
        r.read_exact(&mut h).ok()?;
        if parse_header(&h)?.as_ref() != snapshot {
            return None;
        }
        let dec = zstd::stream::read::Decoder::new(r).ok()?;
        Some(Reader {
            stream: Some(Box::new(BufReader::with_capacity(64 * 1024, dec))),
        })
    }

    /// The record of the next file; `None` once the cache has no more (or
    /// turned out damaged: from then on every file is read).
    pub fn next_record(&mut self) -> Option<StatExtra> {
        let s = self.stream.as_mut()?;
        let mut b = [0u8; RECORD];
        match s.read_exact(&mut b).ok().and_then(|_| decode_record(&b)) {
            Some(r) => r,
            None => {
                self.stream = None;
                None
            }
        }
    }
}

/// Writes a new cache one record at a time; nothing replaces the current
/// cache until [`Writer::finish`].
pub struct Writer {
    tmp: PathBuf,
    dest: PathBuf,
    enc: ZstdWriter,
    records: u64,
}

impl Writer {
    pub fn create(repo: &LocalRepo) -> Result<Writer> {
        let tmp = repo
            .tmp_dir()
            .join(format!("stat-cache-{}", std::process::id()));
        let mut f = File::create(&tmp).ctx("create", &tmp)?;
        // The snapshot is only known at the end: its flag and id are
        // written in place then.
        f.write_all(&header(None)).ctx("write", &tmp)?;
        let enc = zstd_writer(f, 1, 64 * 1024).ctx("compress", &tmp)?;
        Ok(Writer {
            tmp,
            dest: repo.cache_dir().join(FILE),
            enc,
            records: 0,
        })
    }

    pub fn push(&mut self, r: Option<StatExtra>) -> Result<()> {
        self.records += 1;
        self.enc
            .write_all(&encode_record(&r))
            .ctx("write", &self.tmp)
    }

    /// Name the snapshot the records belong to and put the cache in place
    /// (atomically; durability is not needed: a lost cache costs a
    /// re-read).
    pub fn finish(self, snapshot: Option<SnapshotId>) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let f = finish_zstd_writer(self.enc).ctx("compress", &self.tmp)?;
        f.write_all_at(&header(snapshot.as_ref()), 0)
            .ctx("write", &self.tmp)?;
        drop(f);
        std::fs::rename(&self.tmp, &self.dest).ctx("rename into place", &self.dest)?;
        for old in OLD_FILES {
            let p = self.dest.with_file_name(old);
            if p.exists() {
                std::fs::remove_file(&p).ctx("remove", &p)?;
            }
        }
        Ok(())
    }

    /// Drop the new cache unwritten (the one in place stays).
    pub fn discard(self) {
        drop(self.enc);
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Load the records for `snapshot` if the cache belongs to it and has one
/// record per file (`files`); anything else gives an empty cache.
pub fn load(
    repo: &LocalRepo,
    snapshot: Option<&SnapshotId>,
    files: usize,
) -> Vec<Option<StatExtra>> {
    let path = repo.cache_dir().join(FILE);
    let Ok(data) = crate::fsutil::read_repo_file(&path) else {
        return Vec::new();
    };
    match decode(&data) {
        Some(f) if f.snapshot.as_ref() == snapshot && f.records.len() == files => f.records,
        _ => Vec::new(),
    }
}

/// The records of `old`'s files (`records`, one per file in path order)
/// moved to the files of `new`, a listing made from `old` without a walk
/// (a retention trim, a `backup --stdin` run): a file whose entry is
/// unchanged keeps its record, any other file gets an absent one (read
/// next time). Both listings are in path order.
pub fn carry(
    old: &[Entry],
    records: Vec<Option<StatExtra>>,
    new: &[Entry],
) -> Vec<Option<StatExtra>> {
    let mut old_files = old
        .iter()
        .filter(|e| e.file_id().is_some())
        .zip(records)
        .peekable();
    new.iter()
        .filter(|e| e.file_id().is_some())
        .map(|e| {
            while old_files
                .next_if(|(o, _)| cmp_paths(&o.path, &e.path).is_lt())
                .is_some()
            {}
            match old_files.next_if(|(o, _)| o.path == e.path) {
                Some((o, r)) if o.item == e.item => r,
                _ => None,
            }
        })
        .collect()
}

/// Decode a whole cache file (`None` if any of it is not valid).
pub fn decode(data: &[u8]) -> Option<CacheFile> {
    let snapshot = parse_header(data)?;
    let payload = crate::codec::zstd_decompress(&data[HEADER..], 1 << 30).ok()?;
    if payload.len() % RECORD != 0 {
        return None;
    }
    let records = payload
        .chunks_exact(RECORD)
        .map(|c| {
            let mut b = [0u8; RECORD];
            b.copy_from_slice(c);
            decode_record(&b)
        })
        .collect::<Option<Vec<_>>>()?;
    Some(CacheFile { snapshot, records })
}

pub fn encode(file: &CacheFile) -> Result<Vec<u8>> {
    let mut payload = Vec::with_capacity(file.records.len() * RECORD);
    for r in &file.records {
        payload.extend_from_slice(&encode_record(r));
    }
    let mut out = header(file.snapshot.as_ref()).to_vec();
    out.extend(crate::codec::zstd_compress(&payload, 1).ctx("compress", "stat cache")?);
    Ok(out)
}

/// Is a file with this stat too fresh to be trusted next time?
pub fn is_racy(k: &StatKey, run_start_ns: i64) -> bool {
    k.mtime_ns >= run_start_ns - RACY_WINDOW_NS || k.ctime_ns >= run_start_ns - RACY_WINDOW_NS
}

/// Write a whole cache for `snapshot`.
pub fn save(
    repo: &LocalRepo,
    snapshot: Option<SnapshotId>,
    records: Vec<Option<StatExtra>>,
) -> Result<()> {
    let mut w = Writer::create(repo)?;
    for r in records {
        w.push(r)?;
    }
    w.finish(snapshot)
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
        assert_eq!(decode(&enc), Some(f.clone()));
        assert_eq!(decode(b"junk"), None);
        assert_eq!(decode(&enc[..enc.len() - 3]), None);
        // The streaming reader sees the same records, then nothing.
        let mut r =
            Reader::from_read(std::io::Cursor::new(enc.clone()), None).expect("our own header");
        assert_eq!(r.next_record(), f.records[0]);
        assert_eq!(r.next_record(), None);
        assert_eq!(r.next_record(), None);
        let other = SnapshotId(Digest([9; 32]));
        assert!(Reader::from_read(std::io::Cursor::new(enc), Some(&other)).is_none());
    }

    #[test]
    fn carry_keeps_the_records_of_unchanged_files_only() {
        use crate::id::ObjectId;
        use crate::model::{FileExt, Item, Leaf, Meta};
        let file = |p: &str, b: u8| Entry {
            path: p.as_bytes().to_vec(),
            item: Item::Leaf(Leaf::File {
                size: 1,
                id: ObjectId(Digest([b; 32])),
                dup: false,
                meta: Meta::default(),
                ext: FileExt::default(),
            }),
        };
        let dir = |p: &str| Entry {
            path: p.as_bytes().to_vec(),
            item: Item::Dir(Meta::default()),
        };
        let rec = |n: u64| {
            Some(StatExtra {
                ctime_ns: 1,
                ino: n,
                dev: 1,
            })
        };
        let old = vec![file("a", 1), file("c", 3), dir("d"), file("d/e", 4)];
        // b added, c replaced, a folder with a new file added, d/e kept.
        let new = vec![
            file("a", 1),
            file("b", 2),
            file("c", 9),
            dir("d"),
            dir("d/n"),
            file("d/n/x", 5),
            file("d/e", 4),
        ];
        let mut sorted = new.clone();
        sorted.sort_by(|x, y| cmp_paths(&x.path, &y.path));
        let got = carry(&old, vec![rec(1), rec(3), rec(4)], &sorted);
        assert_eq!(got, vec![rec(1), None, None, rec(4), None]);
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
