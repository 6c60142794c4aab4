//! The stat cache (`cache/stat-v3`): for each file of the latest snapshot,
//! the ctime, inode and device it had when it was hashed. With the size and
//! mtime the snapshot itself records, that is the stat a file must still
//! have for its recorded hash to be trusted without reading it.
//!
//! The records are kept per folder: one segment per folder that holds
//! files, its records lined up with the folder's file entries in the
//! snapshot's tree (name order), and an index of the segments by folder
//! path at the end. So the cache stores no hashes and no per-file names (25
//! bytes per file), a walk asks for one folder's records when it enters the
//! folder ([`Reader::folder`], one `pread`), and a run that keeps a whole
//! subtree as it was (a watch run outside the paths events named) copies
//! that subtree's segments as bytes ([`Writer::carry_subtree`]) without
//! decoding a record or a tree: a run rewrites the records of the folders
//! it looked at, not of every file.
//!
//! The cache is disposable: a missing, damaged or foreign cache only makes
//! the next run read more. It names the snapshot it belongs to and is
//! ignored for any other; a record can only vouch for a file whose inode,
//! ctime, size and mtime all still match, so even a damaged record cannot
//! make a changed file look unchanged. Files modified within
//! [`RACY_WINDOW_NS`] of the run's start are not cached (git's "racily
//! clean" problem: a write in the same clock tick as our read would leave
//! the stat unchanged), so they are read again next time.

use crate::error::{IoContext, Result};
use crate::id::{Digest, SnapshotId};
use crate::local::LocalRepo;
use crate::model::{Entry, StatKey};
use crate::pathbytes::{self, cmp_paths};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

const MAGIC: &[u8; 4] = b"trvC";
const VERSION: u8 = 3;
const FILE: &str = "stat-v3";
/// Caches of earlier formats, removed when a new one is written.
const OLD_FILES: &[&str] = &["stat-v1", "stat-v2"];
/// Magic, version, a snapshot flag byte and 32 id bytes.
const HEADER: usize = 4 + 1 + 1 + 32;
/// A presence byte, then ctime, inode and device (little-endian).
const RECORD: usize = 1 + 8 + 8 + 8;
/// The index's offset and entry count, and its magic.
const TRAILER: usize = 8 + 8 + 4;
const INDEX_MAGIC: &[u8; 4] = b"trvI";
/// An index entry after its path: segment offset, record count, complete.
const ENTRY_TAIL: usize = 8 + 4 + 1;
/// Bytes copied per read when a subtree's segments are carried.
const COPY_CHUNK: usize = 1 << 20;
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

/// One folder's records: one per file entry of the folder, in name order;
/// `None` where the file must be read again (racily clean, or kept from an
/// older run).
pub type FolderRecords = Vec<Option<StatExtra>>;

/// A whole cache in memory (tests and fuzzing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheFile {
    /// The snapshot these records belong to.
    pub snapshot: Option<SnapshotId>,
    /// The folders holding files, in path order, with their records.
    pub folders: Vec<(Vec<u8>, FolderRecords)>,
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

fn encode_record(r: &Option<StatExtra>, out: &mut Vec<u8>) {
    let mut b = [0u8; RECORD];
    if let Some(x) = r {
        b[0] = 1;
        b[1..9].copy_from_slice(&x.ctime_ns.to_le_bytes());
        b[9..17].copy_from_slice(&x.ino.to_le_bytes());
        b[17..25].copy_from_slice(&x.dev.to_le_bytes());
    }
    out.extend_from_slice(&b);
}

fn word(b: &[u8], i: usize) -> [u8; 8] {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[i..i + 8]);
    w
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[i..i + 4]);
    u32::from_le_bytes(w)
}

/// `None` for a record that is not valid (its segment is then not used).
fn decode_record(b: &[u8]) -> Option<Option<StatExtra>> {
    match b[0] {
        0 if b[1..RECORD].iter().all(|&c| c == 0) => Some(None),
        1 => Some(Some(StatExtra {
            ctime_ns: i64::from_le_bytes(word(b, 1)),
            ino: u64::from_le_bytes(word(b, 9)),
            dev: u64::from_le_bytes(word(b, 17)),
        })),
        _ => None,
    }
}

/// A segment: its record count, then the records.
fn encode_segment(records: &[Option<StatExtra>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + records.len() * RECORD);
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for r in records {
        encode_record(r, &mut out);
    }
    out
}

fn segment_len(count: u32) -> u64 {
    4 + u64::from(count) * RECORD as u64
}

/// One index entry, parsed.
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// Where its path starts in the index bytes, and its length.
    path_at: usize,
    path_len: usize,
    offset: u64,
    count: u32,
    complete: bool,
}

/// The index of a cache file: its bytes and where each entry is.
#[derive(Default)]
struct Index {
    bytes: Vec<u8>,
    slots: Vec<Slot>,
}

impl Index {
    /// Parse `n` entries that fill `bytes` exactly, in strictly increasing
    /// path order, their segments inside `[HEADER, end)`.
    fn parse(bytes: Vec<u8>, n: u64, end: u64) -> Option<Index> {
        let mut slots = Vec::with_capacity(usize::try_from(n).ok()?.min(1 << 24));
        let mut at = 0usize;
        for _ in 0..n {
            let len = u32_at(bytes.get(at..at + 4)?, 0) as usize;
            let path_at = at + 4;
            let tail = bytes.get(path_at + len..path_at + len + ENTRY_TAIL)?;
            let offset = u64::from_le_bytes(word(tail, 0));
            let count = u32_at(tail, 8);
            let complete = match tail[12] {
                0 => false,
                1 => true,
                _ => return None,
            };
            if offset < HEADER as u64 || offset.checked_add(segment_len(count))? > end {
                return None;
            }
            let s = Slot {
                path_at,
                path_len: len,
                offset,
                count,
                complete,
            };
            if let Some(prev) = slots.last() {
                let prev: &Slot = prev;
                let p = &bytes[prev.path_at..prev.path_at + prev.path_len];
                if cmp_paths(p, &bytes[path_at..path_at + len]) != Ordering::Less {
                    return None;
                }
            }
            slots.push(s);
            at = path_at + len + ENTRY_TAIL;
        }
        (at == bytes.len()).then_some(Index { bytes, slots })
    }

    fn path(&self, s: &Slot) -> &[u8] {
        &self.bytes[s.path_at..s.path_at + s.path_len]
    }

    fn find(&self, dir: &[u8]) -> Option<&Slot> {
        let k = self
            .slots
            .binary_search_by(|s| cmp_paths(self.path(s), dir))
            .ok()?;
        self.slots.get(k)
    }

    /// The entries of folder `dir` and every folder below it (contiguous:
    /// path order puts a folder's descendants right after it).
    fn subtree(&self, dir: &[u8]) -> &[Slot] {
        let lo = self
            .slots
            .partition_point(|s| cmp_paths(self.path(s), dir) == Ordering::Less);
        let n = self.slots[lo..]
            .iter()
            .take_while(|s| pathbytes::is_at_or_under(self.path(s), dir))
            .count();
        &self.slots[lo..lo + n]
    }
}

/// The cache of one snapshot, read a folder at a time.
#[derive(Default)]
pub struct Reader {
    file: Option<(File, PathBuf)>,
    index: Index,
}

impl Reader {
    /// A reader that vouches for nothing.
    pub fn empty() -> Reader {
        Reader::default()
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
        match index_of(&f, snapshot) {
            Some(index) => Reader {
                file: Some((f, path)),
                index,
            },
            None => {
                tracing::debug!(
                    "ignoring stat cache {} (another snapshot's, or unreadable)",
                    path.display()
                );
                Reader::empty()
            }
        }
    }

    /// Whether the cache belongs to the snapshot asked for.
    pub fn usable(&self) -> bool {
        self.file.is_some()
    }

    /// The records of folder `dir`, if the cache has one for each of its
    /// `files` file entries; `None` otherwise (every one of them is then
    /// read).
    pub fn folder(&self, dir: &[u8], files: usize) -> Option<FolderRecords> {
        let (f, path) = self.file.as_ref()?;
        let s = self.index.find(dir)?;
        if s.count as usize != files {
            return None;
        }
        let mut buf = vec![0u8; segment_len(s.count) as usize];
        if let Err(e) = f.read_exact_at(&mut buf, s.offset) {
            tracing::debug!("stat cache {}: {e}", path.display());
            return None;
        }
        if u32_at(&buf, 0) != s.count {
            return None;
        }
        buf[4..].chunks_exact(RECORD).map(decode_record).collect()
    }

    /// Whether every file below folder `dir` (and in it) has a present
    /// record: then a run that keeps the subtree as it was can carry its
    /// records without looking at one (a file without one must be read).
    pub fn subtree_complete(&self, dir: &[u8]) -> bool {
        self.usable() && self.index.subtree(dir).iter().all(|s| s.complete)
    }
}

/// The index of a cache file that belongs to `snapshot`.
fn index_of(f: &File, snapshot: Option<&SnapshotId>) -> Option<Index> {
    let mut h = [0u8; HEADER];
    f.read_exact_at(&mut h, 0).ok()?;
    if parse_header(&h)?.as_ref() != snapshot {
        return None;
    }
    let len = f.metadata().ok()?.len();
    let tail_at = len.checked_sub(TRAILER as u64)?;
    let mut t = [0u8; TRAILER];
    f.read_exact_at(&mut t, tail_at).ok()?;
    if &t[16..20] != INDEX_MAGIC {
        return None;
    }
    let at = u64::from_le_bytes(word(&t, 0));
    let n = u64::from_le_bytes(word(&t, 8));
    if at < HEADER as u64 || at > tail_at {
        return None;
    }
    let mut bytes = vec![0u8; usize::try_from(tail_at - at).ok()?];
    f.read_exact_at(&mut bytes, at).ok()?;
    Index::parse(bytes, n, at)
}

/// A folder whose records are being gathered by the [`Writer`].
struct OpenFolder {
    path: Vec<u8>,
    records: FolderRecords,
}

/// Writes a new cache one record at a time, in path order; nothing
/// replaces the current cache until [`Writer::finish`].
pub struct Writer {
    tmp: PathBuf,
    dest: PathBuf,
    out: BufWriter<File>,
    /// Bytes written so far.
    pos: u64,
    /// Folders with files still to come, outermost first.
    open: Vec<OpenFolder>,
    /// Every segment written: folder, offset, count, complete.
    index: Vec<(Vec<u8>, u64, u32, bool)>,
}

impl Writer {
    pub fn create(repo: &LocalRepo) -> Result<Writer> {
        let tmp = repo
            .tmp_dir()
            .join(format!("stat-cache-{}", std::process::id()));
        let f = File::create(&tmp).ctx("create", &tmp)?;
        let mut out = BufWriter::with_capacity(256 * 1024, f);
        // The snapshot is only known at the end: its flag and id are
        // written in place then.
        out.write_all(&header(None)).ctx("write", &tmp)?;
        Ok(Writer {
            tmp,
            dest: repo.cache_dir().join(FILE),
            out,
            pos: HEADER as u64,
            open: Vec::new(),
            index: Vec::new(),
        })
    }

    /// Write the segments of open folders that `dir` is not in (all their
    /// files have come: path order).
    fn close_until(&mut self, dir: &[u8]) -> Result<()> {
        while let Some(top) = self.open.last() {
            if top.path == dir || pathbytes::is_under(dir, &top.path) {
                break;
            }
            let Some(f) = self.open.pop() else { break };
            self.write_segment(f.path, &f.records)?;
        }
        Ok(())
    }

    fn write_segment(&mut self, dir: Vec<u8>, records: &[Option<StatExtra>]) -> Result<()> {
        let seg = encode_segment(records);
        self.out.write_all(&seg).ctx("write", &self.tmp)?;
        let complete = records.iter().all(Option::is_some);
        self.index
            .push((dir, self.pos, records.len() as u32, complete));
        self.pos += seg.len() as u64;
        Ok(())
    }

    /// The record of the file at `path` (files come in path order).
    pub fn push(&mut self, path: &[u8], r: Option<StatExtra>) -> Result<()> {
        let dir = pathbytes::parent(path);
        self.close_until(dir)?;
        if self.open.last().is_none_or(|t| t.path != dir) {
            self.open.push(OpenFolder {
                path: dir.to_vec(),
                records: Vec::new(),
            });
        }
        if let Some(t) = self.open.last_mut() {
            t.records.push(r);
        }
        Ok(())
    }

    /// The records of folder `dir` and everything below it, copied from
    /// `from` as they are: the subtree is kept as it was (same tree), so
    /// they still line up with its files. Comes where `dir`'s first file
    /// would (path order). A cache that cannot be read is skipped: those
    /// files are then read next time.
    pub fn carry_subtree(&mut self, from: &Reader, dir: &[u8]) -> Result<()> {
        self.close_until(dir)?;
        let Some((f, path)) = &from.file else {
            return Ok(());
        };
        let slots = from.index.subtree(dir);
        let (Some(first), Some(_)) = (slots.first(), slots.last()) else {
            return Ok(());
        };
        // A subtree's segments were written one after another (post-order,
        // one subtree at a time): copy them as one run of bytes.
        let start = slots.iter().map(|s| s.offset).min().unwrap_or(first.offset);
        let end = slots
            .iter()
            .map(|s| s.offset + segment_len(s.count))
            .max()
            .unwrap_or(start);
        let total: u64 = slots.iter().map(|s| segment_len(s.count)).sum();
        let runs: Vec<(u64, u64)> = if total == end - start {
            vec![(start, end)]
        } else {
            slots
                .iter()
                .map(|s| (s.offset, s.offset + segment_len(s.count)))
                .collect()
        };
        let mut moved: Vec<(u64, u64)> = Vec::with_capacity(runs.len());
        let mut buf = vec![0u8; COPY_CHUNK.min((end - start) as usize)];
        for (a, b) in runs {
            moved.push((a, self.pos));
            let mut at = a;
            while at < b {
                let n = ((b - at) as usize).min(buf.len());
                if let Err(e) = f.read_exact_at(&mut buf[..n], at) {
                    // What is already copied is never indexed: harmless.
                    tracing::debug!("stat cache {}: {e}", path.display());
                    return Ok(());
                }
                self.out.write_all(&buf[..n]).ctx("write", &self.tmp)?;
                self.pos += n as u64;
                at += n as u64;
            }
        }
        for s in slots {
            // The run it was in, and where that run went.
            let k = moved.partition_point(|(a, _)| *a <= s.offset);
            let Some((a, to)) = k.checked_sub(1).and_then(|k| moved.get(k)) else {
                continue;
            };
            self.index.push((
                from.index.path(s).to_vec(),
                to + (s.offset - a),
                s.count,
                s.complete,
            ));
        }
        Ok(())
    }

    /// Name the snapshot the records belong to and put the cache in place
    /// (atomically; durability is not needed: a lost cache costs a
    /// re-read).
    pub fn finish(mut self, snapshot: Option<SnapshotId>) -> Result<()> {
        self.close_until(b"\0")?;
        let mut rest = std::mem::take(&mut self.open);
        while let Some(f) = rest.pop() {
            self.write_segment(f.path, &f.records)?;
        }
        let mut index = std::mem::take(&mut self.index);
        index.sort_by(|a, b| cmp_paths(&a.0, &b.0));
        // A folder twice (never written so; tolerated): the last wins.
        index.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                std::mem::swap(later, earlier);
            }
            same
        });
        let at = self.pos;
        let mut buf = Vec::new();
        for (p, off, count, complete) in &index {
            buf.extend_from_slice(&(p.len() as u32).to_le_bytes());
            buf.extend_from_slice(p);
            buf.extend_from_slice(&off.to_le_bytes());
            buf.extend_from_slice(&count.to_le_bytes());
            buf.push(u8::from(*complete));
        }
        buf.extend_from_slice(&at.to_le_bytes());
        buf.extend_from_slice(&(index.len() as u64).to_le_bytes());
        buf.extend_from_slice(INDEX_MAGIC);
        self.out.write_all(&buf).ctx("write", &self.tmp)?;
        let f = self
            .out
            .into_inner()
            .map_err(|e| e.into_error())
            .ctx("write", &self.tmp)?;
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
        drop(self.out);
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Each folder's file entries of a listing in path order, as index
/// positions into `entries` (the files of a folder interleave with its
/// subfolders' contents, so a folder's records are not one run of files).
fn files_by_folder(entries: &[Entry]) -> Vec<(&[u8], Vec<usize>)> {
    let mut at: HashMap<&[u8], usize> = HashMap::new();
    let mut out: Vec<(&[u8], Vec<usize>)> = Vec::new();
    for (k, e) in entries.iter().enumerate() {
        if e.file_id().is_none() {
            continue;
        }
        let dir = pathbytes::parent(&e.path);
        let slot = *at.entry(dir).or_insert_with(|| {
            out.push((dir, Vec::new()));
            out.len() - 1
        });
        out[slot].1.push(k);
    }
    out
}

/// The records of a listing's files (one per file entry, in path order)
/// if the cache belongs to `snapshot`, whose listing `entries` is; an
/// absent record where the cache has none (an empty list if it has none).
pub fn load(
    repo: &LocalRepo,
    snapshot: Option<&SnapshotId>,
    entries: &[Entry],
) -> Vec<Option<StatExtra>> {
    let r = Reader::open(repo, snapshot);
    if !r.usable() {
        return Vec::new();
    }
    let mut out: Vec<Option<StatExtra>> = vec![None; entries.len()];
    for (dir, files) in files_by_folder(entries) {
        if let Some(recs) = r.folder(dir, files.len()) {
            for (k, rec) in files.into_iter().zip(recs) {
                out[k] = rec;
            }
        }
    }
    entries
        .iter()
        .zip(out)
        .filter(|(e, _)| e.file_id().is_some())
        .map(|(_, r)| r)
        .collect()
}

/// The records of `old`'s files (`records`, one per file in path order)
/// moved to the files of `new`, a listing made from `old` without a walk
/// (a retention trim): a file whose entry is unchanged keeps its record,
/// any other file gets an absent one (read next time). Both listings are
/// in path order.
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

/// Write a whole cache for `snapshot`, whose listing is `entries`, from one
/// record per file entry in path order.
pub fn save(
    repo: &LocalRepo,
    snapshot: Option<SnapshotId>,
    entries: &[Entry],
    records: Vec<Option<StatExtra>>,
) -> Result<()> {
    let mut w = Writer::create(repo)?;
    let files = entries.iter().filter(|e| e.file_id().is_some());
    for (e, r) in files.zip(records) {
        w.push(&e.path, r)?;
    }
    w.finish(snapshot)
}

/// Decode a whole cache file (`None` if any of it is not valid).
pub fn decode(data: &[u8]) -> Option<CacheFile> {
    let snapshot = parse_header(data)?;
    let tail_at = data.len().checked_sub(TRAILER)?;
    let t = &data[tail_at..];
    if &t[16..20] != INDEX_MAGIC {
        return None;
    }
    let at = usize::try_from(u64::from_le_bytes(word(t, 0))).ok()?;
    let n = u64::from_le_bytes(word(t, 8));
    if at < HEADER || at > tail_at {
        return None;
    }
    let index = Index::parse(data[at..tail_at].to_vec(), n, at as u64)?;
    let mut folders = Vec::with_capacity(index.slots.len());
    for s in &index.slots {
        let seg = &data[s.offset as usize..(s.offset + segment_len(s.count)) as usize];
        if u32_at(seg, 0) != s.count {
            return None;
        }
        let recs: FolderRecords = seg[4..]
            .chunks_exact(RECORD)
            .map(decode_record)
            .collect::<Option<_>>()?;
        if s.complete != recs.iter().all(Option::is_some) {
            return None;
        }
        folders.push((index.path(s).to_vec(), recs));
    }
    Some(CacheFile { snapshot, folders })
}

/// Encode a whole cache (segments in path order of their folders, which
/// must be strictly increasing).
pub fn encode(file: &CacheFile) -> Result<Vec<u8>> {
    let mut out = header(file.snapshot.as_ref()).to_vec();
    let mut index = Vec::new();
    for (dir, recs) in &file.folders {
        let off = out.len() as u64;
        out.extend(encode_segment(recs));
        index.extend_from_slice(&(dir.len() as u32).to_le_bytes());
        index.extend_from_slice(dir);
        index.extend_from_slice(&off.to_le_bytes());
        index.extend_from_slice(&(recs.len() as u32).to_le_bytes());
        index.push(u8::from(recs.iter().all(Option::is_some)));
    }
    let at = out.len() as u64;
    out.extend(index);
    out.extend_from_slice(&at.to_le_bytes());
    out.extend_from_slice(&(file.folders.len() as u64).to_le_bytes());
    out.extend_from_slice(INDEX_MAGIC);
    Ok(out)
}

/// Whether the cache is still in the previous format (`stat-v2`) and no
/// `stat-v3` exists: [`upgrade_v2`] then saves the next run reading every
/// file.
pub fn needs_upgrade(repo: &LocalRepo) -> bool {
    let dir = repo.cache_dir();
    !dir.join(FILE).exists() && dir.join(OLD_FILES[1]).exists()
}

/// Rewrite a version 2 cache (one record per file of `snapshot` in path
/// order, one zstd frame) as version 3, given the paths of the snapshot's
/// file entries in path order. A cache of another snapshot, or one that
/// does not decode, is left to be replaced by the next run; records that
/// run out early or do not decode become absent ones. The version 2 file
/// is removed once the new one is in place.
pub fn upgrade_v2(
    repo: &LocalRepo,
    snapshot: &SnapshotId,
    files: &mut dyn Iterator<Item = Result<Vec<u8>>>,
) -> Result<bool> {
    use std::io::Read;
    let old = repo.cache_dir().join(OLD_FILES[1]);
    let Ok(f) = crate::fsutil::open_repo_file(&old) else {
        return Ok(false);
    };
    let mut r = std::io::BufReader::new(f);
    let mut h = [0u8; HEADER];
    if r.read_exact(&mut h).is_err() || &h[..4] != MAGIC || h[4] != 2 || h[5] != 1 {
        return Ok(false);
    }
    if h[6..HEADER] != snapshot.0 .0 {
        return Ok(false);
    }
    let Ok(dec) = zstd::stream::read::Decoder::new(r) else {
        return Ok(false);
    };
    let mut dec = std::io::BufReader::with_capacity(64 * 1024, dec);
    let mut w = Writer::create(repo)?;
    let mut ok = true;
    for path in files {
        let path = path?;
        let mut b = [0u8; RECORD];
        let rec = if ok && dec.read_exact(&mut b).is_ok() {
            decode_record(&b)
        } else {
            None
        };
        ok &= rec.is_some();
        w.push(&path, rec.flatten())?;
    }
    w.finish(Some(*snapshot))?;
    Ok(true)
}

/// Is a file with this stat too fresh to be trusted next time?
pub fn is_racy(k: &StatKey, run_start_ns: i64) -> bool {
    k.mtime_ns >= run_start_ns - RACY_WINDOW_NS || k.ctime_ns >= run_start_ns - RACY_WINDOW_NS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::id::{HashAlgo, ObjectId};
    use crate::model::{FileExt, Item, Leaf, Meta};

    fn rec(n: u64) -> Option<StatExtra> {
        Some(StatExtra {
            ctime_ns: 1,
            ino: n,
            dev: 1,
        })
    }

    fn file(p: &str, b: u8) -> Entry {
        Entry {
            path: p.as_bytes().to_vec(),
            item: Item::Leaf(Leaf::File {
                size: 1,
                id: ObjectId(Digest([b; 32])),
                dup: false,
                meta: Meta::default(),
                ext: FileExt::default(),
            }),
        }
    }

    fn dir(p: &str) -> Entry {
        Entry {
            path: p.as_bytes().to_vec(),
            item: Item::Dir(Meta::default()),
        }
    }

    fn repo() -> Result<(tempfile::TempDir, LocalRepo)> {
        let d = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let r = LocalRepo::init(&d.path().join("b"), HashAlgo::Blake3)?;
        Ok((d, r))
    }

    #[test]
    fn round_trip_and_garbage() {
        let f = CacheFile {
            snapshot: None,
            folders: vec![
                (b"".to_vec(), vec![rec(1), None]),
                (b"a".to_vec(), vec![rec(2)]),
                (b"a/b".to_vec(), vec![rec(3), rec(4)]),
            ],
        };
        let enc = encode(&f).expect("in memory");
        assert_eq!(decode(&enc), Some(f.clone()));
        assert_eq!(decode(b"junk"), None);
        assert_eq!(decode(&enc[..enc.len() - 3]), None);
        let mut flipped = enc.clone();
        flipped[HEADER + 4] = 7; // a presence byte that is neither 0 nor 1
        assert_eq!(decode(&flipped), None);
        // Folders out of path order are refused.
        let unsorted = CacheFile {
            snapshot: None,
            folders: vec![(b"b".to_vec(), vec![rec(1)]), (b"a".to_vec(), vec![])],
        };
        let enc = encode(&unsorted).expect("in memory");
        assert_eq!(decode(&enc), None);
    }

    /// A listing's records go in through `save` and come back through
    /// `load` and the per-folder reader, for its snapshot only.
    #[test]
    fn records_come_back_by_folder_for_their_snapshot_only() -> Result<()> {
        let (_d, r) = repo()?;
        let snap = SnapshotId(Digest([7; 32]));
        let entries = vec![
            file("a", 1),
            dir("d"),
            file("d/e", 2),
            dir("d/f"),
            file("d/f/g", 3),
            file("d/h", 4),
            file("z", 5),
        ];
        let records = vec![rec(1), rec(2), None, rec(4), rec(5)];
        save(&r, Some(snap), &entries, records.clone())?;
        assert_eq!(load(&r, Some(&snap), &entries), records);
        let reader = Reader::open(&r, Some(&snap));
        assert_eq!(reader.folder(b"", 2), Some(vec![rec(1), rec(5)]));
        assert_eq!(reader.folder(b"d", 2), Some(vec![rec(2), rec(4)]));
        assert_eq!(reader.folder(b"d", 3), None, "a count that differs");
        assert_eq!(reader.folder(b"d/f", 1), Some(vec![None]));
        assert_eq!(reader.folder(b"q", 0), None);
        assert!(!reader.subtree_complete(b"d"), "d/f/g has no record");
        assert!(!reader.subtree_complete(b"d/f"));
        assert!(reader.subtree_complete(b"q"), "nothing below: vacuous");
        let other = SnapshotId(Digest([8; 32]));
        assert!(!Reader::open(&r, Some(&other)).usable());
        assert!(load(&r, Some(&other), &entries).is_empty());
        Ok(())
    }

    /// A carried subtree's records land in the new cache unchanged, beside
    /// folders written record by record, whatever the order of segments.
    #[test]
    fn carried_subtrees_read_back_like_written_ones() -> Result<()> {
        let (_d, r) = repo()?;
        let (s1, s2) = (SnapshotId(Digest([1; 32])), SnapshotId(Digest([2; 32])));
        let entries = vec![
            file("a", 1),
            dir("k"),
            file("k/x", 2),
            dir("k/s"),
            file("k/s/y", 3),
            file("k/z", 4),
            dir("m"),
            file("m/w", 5),
        ];
        save(&r, Some(s1), &entries, (1..=5).map(rec).collect())?;
        let old = Reader::open(&r, Some(&s1));
        assert!(old.subtree_complete(b"k"));
        let mut w = Writer::create(&r)?;
        w.push(b"a", rec(11))?;
        w.carry_subtree(&old, b"k")?;
        w.push(b"m/w", rec(15))?;
        w.finish(Some(s2))?;
        drop(old);
        let new = Reader::open(&r, Some(&s2));
        assert_eq!(new.folder(b"", 1), Some(vec![rec(11)]));
        assert_eq!(new.folder(b"k", 2), Some(vec![rec(2), rec(4)]));
        assert_eq!(new.folder(b"k/s", 1), Some(vec![rec(3)]));
        assert_eq!(new.folder(b"m", 1), Some(vec![rec(15)]));
        assert_eq!(
            load(&r, Some(&s2), &entries),
            vec![rec(11), rec(2), rec(3), rec(4), rec(15)]
        );
        Ok(())
    }

    /// A version 2 cache (every file's record in path order, one zstd
    /// frame) of the latest snapshot becomes the same records by folder.
    #[test]
    fn a_version_2_cache_is_rewritten_by_folder() -> Result<()> {
        let (_d, r) = repo()?;
        let snap = SnapshotId(Digest([3; 32]));
        let mut payload = Vec::new();
        for x in [rec(1), rec(2), None, rec(4)] {
            encode_record(&x, &mut payload);
        }
        let mut v2 = header(Some(&snap)).to_vec();
        v2[4] = 2;
        v2.extend(crate::codec::zstd_compress(&payload, 1).ctx("compress", "test")?);
        let old = r.cache_dir().join("stat-v2");
        std::fs::write(&old, &v2).ctx("write", &old)?;
        assert!(needs_upgrade(&r));
        // Another snapshot's cache is left alone.
        let other = SnapshotId(Digest([4; 32]));
        let paths = ["a", "d/e", "d/f/g", "d/h"];
        let mut files = paths.iter().map(|p| Ok(p.as_bytes().to_vec()));
        assert!(!upgrade_v2(&r, &other, &mut files)?);
        let mut files = paths.iter().map(|p| Ok(p.as_bytes().to_vec()));
        assert!(upgrade_v2(&r, &snap, &mut files)?);
        assert!(!needs_upgrade(&r));
        assert!(!old.exists(), "the version 2 file is removed");
        let reader = Reader::open(&r, Some(&snap));
        assert_eq!(reader.folder(b"", 1), Some(vec![rec(1)]));
        assert_eq!(reader.folder(b"d", 2), Some(vec![rec(2), rec(4)]));
        assert_eq!(reader.folder(b"d/f", 1), Some(vec![None]));
        Ok(())
    }

    #[test]
    fn carry_keeps_the_records_of_unchanged_files_only() {
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
