//! The object store: file contents stored once, named by their hash, as raw
//! read-only files under `objects/ab/<hash>`.
//!
//! A run never writes into `objects/` directly. Each new content is copied
//! into `tmp/` while it is hashed (one read of the source), and queued in a
//! [`Batch`]. [`Batch::commit`] then makes the whole batch durable with one
//! filesystem sync, renames every file into place, and syncs again. So an
//! object that exists under its name always holds exactly the bytes of that
//! name — after SIGKILL or power loss alike — and a crash before the commit
//! leaves only `tmp/` garbage, removed by the next writer.

use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::hash::Hasher;
use crate::id::{Digest, HashAlgo, ObjectId};
use crate::store::{Repo, StoreKind};
use rayon::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Files written to `tmp/` and waiting to be renamed into a store. Each is
/// kept as (store, digest) → temp-file number: no paths, so a first backup
/// of a million files holds a few dozen bytes per file here.
pub struct Batch<'r> {
    repo: &'r Repo,
    inner: Mutex<BatchInner>,
}

#[derive(Default)]
struct BatchInner {
    queued: HashMap<(bool, Digest), u64>,
    bytes: u64,
}

/// Below these sizes a batch is made durable with one fsync per file (in
/// parallel) instead of `syncfs`, which also waits for every other
/// process's dirty data on the filesystem.
const SMALL_BATCH_FILES: usize = 2000;
const SMALL_BATCH_BYTES: u64 = 64 << 20;
const TMP_PREFIX: &str = "b";

impl<'r> Batch<'r> {
    pub fn new(repo: &'r Repo) -> Batch<'r> {
        Batch {
            repo,
            inner: Mutex::new(BatchInner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BatchInner> {
        // A panic in another worker poisons the mutex; the data (a map of
        // pending renames) is still consistent, so keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tmp_path(&self, n: u64) -> PathBuf {
        self.repo.tmp_dir().join(fsutil::tmp_name_of(TMP_PREFIX, n))
    }

    /// A new temp file for the batch: its number and open handle.
    fn new_tmp(&self) -> Result<(u64, PathBuf, File)> {
        let n = fsutil::next_tmp_number();
        let p = self.tmp_path(n);
        let f = create_tmp(&p)?;
        Ok((n, p, f))
    }

    /// Is this digest queued by this batch, or already in the store?
    fn present(&self, key: &(bool, Digest)) -> bool {
        let kind = if key.0 {
            StoreKind::Tree
        } else {
            StoreKind::Object
        };
        self.lock().queued.contains_key(key) || self.repo.digest_path(kind, &key.1).exists()
    }

    /// Queue complete temp file `n` for `key`, unless another writer queued
    /// the same digest first (then the temp file goes).
    fn queue(&self, key: (bool, Digest), n: u64, len: u64) -> Result<bool> {
        let mut g = self.lock();
        if g.queued.contains_key(&key) {
            drop(g);
            let tmp = self.tmp_path(n);
            fs::remove_file(&tmp).ctx("remove temporary file", &tmp)?;
            return Ok(false);
        }
        g.queued.insert(key, n);
        g.bytes += len;
        Ok(true)
    }

    /// Queue temp file `n`, whose digest `d` was only known once it was
    /// written (file contents are hashed while copied). Returns false — and
    /// removes the temp file — when the digest is already stored or queued,
    /// so concurrent writers of one content all succeed.
    fn offer(&self, kind: StoreKind, d: Digest, n: u64, len: u64) -> Result<bool> {
        let key = (kind == StoreKind::Tree, d);
        if self.repo.digest_path(kind, &d).exists() {
            let tmp = self.tmp_path(n);
            fs::remove_file(&tmp).ctx("remove temporary file", &tmp)?;
            return Ok(false);
        }
        self.queue(key, n, len)
    }

    /// Store the bytes `make` produces under `d` (used for tree objects,
    /// whose id is known before they are written): one existence check,
    /// and nothing is built or written when the digest is already there.
    pub fn put_with(
        &self,
        kind: StoreKind,
        d: Digest,
        make: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<bool> {
        let key = (kind == StoreKind::Tree, d);
        if self.present(&key) {
            return Ok(false);
        }
        let data = make()?;
        let (n, tmp, mut f) = self.new_tmp()?;
        f.write_all(&data).ctx("write", &tmp)?;
        drop(f);
        self.queue(key, n, data.len() as u64)
    }

    /// Make every queued file durable and move it into place.
    pub fn commit(&self) -> Result<()> {
        let (queued, bytes) = {
            let mut g = self.lock();
            (std::mem::take(&mut g.queued), std::mem::take(&mut g.bytes))
        };
        if queued.is_empty() {
            return Ok(());
        }
        // Sorted by store and digest: a deterministic order, and renames
        // into one fan-out directory stay together. Paths are made one at a
        // time, never held for the whole batch.
        let mut moves: Vec<((bool, Digest), u64)> = queued.into_iter().collect();
        moves.sort_unstable();
        let paths = |&((tree, d), n): &((bool, Digest), u64)| {
            let kind = if tree {
                StoreKind::Tree
            } else {
                StoreKind::Object
            };
            (self.tmp_path(n), self.repo.digest_path(kind, &d))
        };
        let small = moves.len() < SMALL_BATCH_FILES && bytes < SMALL_BATCH_BYTES;
        // 1. The bytes of every temp file reach the disk before any of them
        //    gets its final name.
        if small {
            moves.par_iter().try_for_each(|m| {
                let (tmp, _) = paths(m);
                File::open(&tmp)
                    .and_then(|f| f.sync_all())
                    .ctx("fsync", &tmp)
            })?;
        } else {
            fsutil::sync_filesystem(&self.repo.tmp_dir())?;
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        for m in &moves {
            let (tmp, dest) = paths(m);
            if let Some(dir) = dest.parent() {
                if dirs.last().map(|d| d.as_path()) != Some(dir) {
                    fsutil::create_private_dir(dir)?;
                    dirs.push(dir.to_path_buf());
                }
            }
            // The exclusive lock guarantees no other process writes here, and
            // `offer` checked the name was free, so rename cannot replace an
            // object that the browsable tree already links to.
            fs::rename(&tmp, &dest).ctx("move into store", &dest)?;
        }
        // 2. The renames themselves are durable before the caller writes a
        //    snapshot record that refers to these names.
        if small {
            dirs.dedup();
            dirs.par_iter().try_for_each(|d| fsutil::fsync_dir(d))?;
            for top in [self.repo.objects_dir(), self.repo.trees_dir()] {
                fsutil::fsync_dir(&top)?;
            }
        } else {
            fsutil::sync_filesystem(&self.repo.dir)?;
        }
        Ok(())
    }
}

fn create_tmp(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)
        .ctx("create temporary file", path)
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
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            ino: m.ino(),
            dev: m.dev(),
        }
    }
}

/// Why reading a source file failed.
#[derive(Debug)]
pub enum ReadFailure {
    /// The file is gone.
    Vanished,
    /// It kept changing while we read it.
    Unstable,
    /// Any other I/O error reading the source (permission, EIO, …).
    Source(io::Error),
    /// An error in the repository: fatal for the run.
    Repo(Error),
}

/// What reading one source file produced.
#[derive(Clone, Copy, Debug)]
pub struct Ingested {
    pub id: ObjectId,
    pub size: u64,
    /// The stat of the file as read (use it for the snapshot and cache).
    pub stat: StatKey,
    /// True when this call queued a new object.
    pub stored: bool,
}

const SMALL_BUF: usize = 256 * 1024;

thread_local! {
    static SMALL_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}
/// Big enough for BLAKE3's multi-threaded path to pay off, small enough
/// that two workers reading large files at once stay within the memory
/// budget.
const LARGE_BUF: usize = 2 * 1024 * 1024;
const ATTEMPTS: usize = 3;

/// Read `src` once, hashing it and (with a batch) copying it to `tmp/`.
/// The before/after stat comparison means an object is never queued under
/// a name that does not match its bytes: a file modified during the read is
/// read again, up to three times, then reported.
pub fn ingest(
    algo: HashAlgo,
    batch: Option<&Batch<'_>>,
    src: &Path,
    follow: bool,
) -> Result<Ingested, ReadFailure> {
    for _ in 0..ATTEMPTS {
        match ingest_once(algo, batch, src, follow)? {
            Some(done) => return Ok(done),
            None => continue,
        }
    }
    Err(ReadFailure::Unstable)
}

fn source_err(e: io::Error) -> ReadFailure {
    if e.kind() == io::ErrorKind::NotFound {
        ReadFailure::Vanished
    } else {
        ReadFailure::Source(e)
    }
}

fn ingest_once(
    algo: HashAlgo,
    batch: Option<&Batch<'_>>,
    src: &Path,
    follow: bool,
) -> Result<Option<Ingested>, ReadFailure> {
    let mut opts = OpenOptions::new();
    opts.read(true);
    if !follow {
        // The scan saw a regular file; if it has been swapped for a symlink
        // since, refuse to follow it rather than back up its target.
        opts.custom_flags(libc::O_NOFOLLOW);
    }
    let mut file = opts.open(src).map_err(source_err)?;
    let before = StatKey::of(&file.metadata().map_err(source_err)?);
    let buf_len = if before.size as usize >= LARGE_BUF {
        LARGE_BUF
    } else {
        (before.size as usize + 1).clamp(4096, SMALL_BUF)
    };
    let mut hasher = Hasher::new(algo);
    let (tmp_num, tmp_path, mut tmp) = match batch {
        Some(b) => {
            let (n, p, f) = b.new_tmp().map_err(ReadFailure::Repo)?;
            (n, Some(p), Some(f))
        }
        None => (0, None, None),
    };
    let cleanup = |p: &Option<PathBuf>| {
        if let Some(p) = p {
            let _ = fs::remove_file(p);
        }
    };
    let mut total: u64 = 0;
    // Small files share one buffer per thread; a large file gets its own,
    // big enough for BLAKE3's multi-threaded path.
    let mut large: Vec<u8>;
    let mut small_guard: Vec<u8> = Vec::new();
    let buf: &mut [u8] = if buf_len > SMALL_BUF {
        large = vec![0u8; buf_len];
        &mut large
    } else {
        small_guard = SMALL_BUFFER.with(|b| std::mem::take(&mut *b.borrow_mut()));
        if small_guard.len() < SMALL_BUF {
            small_guard = vec![0u8; SMALL_BUF];
        }
        &mut small_guard
    };
    loop {
        let n = match fsutil::read_full(&mut file, buf) {
            Ok(n) => n,
            Err(e) => {
                cleanup(&tmp_path);
                return Err(source_err(e));
            }
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let (Some(t), Some(p)) = (tmp.as_mut(), tmp_path.as_ref()) {
            if let Err(e) = t.write_all(&buf[..n]) {
                cleanup(&tmp_path);
                return Err(ReadFailure::Repo(Error::io("write", p, e)));
            }
        }
        total += n as u64;
    }
    let after = match fs::symlink_metadata(src) {
        Ok(m) if follow => match fs::metadata(src) {
            Ok(m2) => StatKey::of(&m2),
            Err(_) => StatKey::of(&m),
        },
        Ok(m) => StatKey::of(&m),
        Err(e) => {
            cleanup(&tmp_path);
            return Err(source_err(e));
        }
    };
    let after_fd = file.metadata().map(|m| StatKey::of(&m)).ok();
    if after != before || after_fd != Some(before) || total != before.size {
        cleanup(&tmp_path);
        return Ok(None);
    }
    drop(tmp);
    let id = ObjectId(hasher.finish());
    if buf_len <= SMALL_BUF {
        SMALL_BUFFER.with(|b| *b.borrow_mut() = std::mem::take(&mut small_guard));
    }
    let stored = match batch {
        Some(b) => b
            .offer(StoreKind::Object, id.0, tmp_num, total)
            .map_err(ReadFailure::Repo)?,
        None => false,
    };
    Ok(Some(Ingested {
        id,
        size: total,
        stat: before,
        stored,
    }))
}

/// Objects at least this large are hashed through a memory map.
const MMAP_MIN: u64 = 16 << 20;

/// Hash a stored object again (verify, materialize of copies). Small files
/// reuse a per-thread buffer: allocating and zeroing a large one per file
/// would cost more than hashing a 4 KiB file.
pub fn hash_file(algo: HashAlgo, path: &Path) -> Result<Digest> {
    let f = File::open(path).ctx("open", path)?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(LARGE_BUF as u64);
    hash_open_file(algo, f, size, path)
}

/// `hash_file` for a file already open; `size` picks the buffer.
pub fn hash_open_file(algo: HashAlgo, mut f: File, size: u64, path: &Path) -> Result<Digest> {
    // Large stored objects are memory-mapped and hashed on every core, as
    // b3sum does: reading them through a buffer costs a copy of every
    // byte. Objects are immutable under the repository lock, so the map
    // cannot be truncated under us (sources, which can, are never mapped).
    if algo == HashAlgo::Blake3 && size >= MMAP_MIN {
        drop(f);
        let mut h = blake3::Hasher::new();
        h.update_mmap_rayon(path).ctx("read", path)?;
        return Ok(Digest(*h.finalize().as_bytes()));
    }
    let size = size as usize;
    let mut h = Hasher::new(algo);
    let mut run = |buf: &mut [u8]| -> Result<()> {
        loop {
            let n = fsutil::read_full(&mut f, buf).ctx("read", path)?;
            if n == 0 {
                return Ok(());
            }
            h.update(&buf[..n]);
        }
    };
    if size >= SMALL_BUF {
        let mut buf = vec![0u8; LARGE_BUF];
        run(&mut buf)?;
    } else {
        let mut buf = SMALL_BUFFER.with(|b| std::mem::take(&mut *b.borrow_mut()));
        if buf.len() < SMALL_BUF {
            buf.resize(SMALL_BUF, 0);
        }
        let r = run(&mut buf);
        SMALL_BUFFER.with(|b| *b.borrow_mut() = buf);
        r?;
    }
    Ok(h.finish())
}

/// Every file stored under `objects/` or `trees/` by digest, in digest
/// order (no stat: callers that need sizes ask for the few they need).
/// Names that are not a digest in the right fan-out folder are skipped
/// (they were not written by trove).
pub fn list_store(repo: &Repo, kind: StoreKind) -> Result<Vec<Digest>> {
    let top = match kind {
        StoreKind::Object => repo.objects_dir(),
        StoreKind::Tree => repo.trees_dir(),
    };
    let mut out = Vec::new();
    for fan in fs::read_dir(&top).ctx("list", &top)? {
        let fan = fan.ctx("list", &top)?;
        let fan_name = fan.file_name();
        let Some(fan_name) = fan_name.to_str() else {
            continue;
        };
        if !fan.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let dir = fan.path();
        for ent in fs::read_dir(&dir).ctx("list", &dir)? {
            let ent = ent.ctx("list", &dir)?;
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(d) = Digest::from_hex(name).filter(|_| name.starts_with(fan_name)) {
                out.push(d);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_threads_store_same_content() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let repo = Repo::init(&dir.path().join("b"), HashAlgo::Blake3)?;
        let src_dir = dir.path().join("src");
        fs::create_dir(&src_dir).ctx("mkdir", &src_dir)?;
        let mut paths = Vec::new();
        for i in 0..16 {
            let p = src_dir.join(format!("f{i}"));
            fs::write(&p, b"same bytes everywhere").ctx("write", &p)?;
            paths.push(p);
        }
        let batch = Batch::new(&repo);
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = paths
                .iter()
                .map(|p| s.spawn(|| ingest(HashAlgo::Blake3, Some(&batch), p, false)))
                .collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        let mut stored = 0;
        let mut ids = std::collections::HashSet::new();
        for r in results {
            let ing = r.map_err(|_| Error::Usage("thread panicked".into()))?;
            let ing = ing.map_err(|e| Error::Usage(format!("{e:?}")))?;
            stored += ing.stored as usize;
            ids.insert(ing.id);
        }
        assert_eq!(stored, 1, "exactly one writer queues the object");
        assert_eq!(ids.len(), 1);
        batch.commit()?;
        let id = ids.into_iter().next().ok_or(Error::Interrupted)?;
        assert_eq!(
            fs::read(repo.object_path(&id)).ctx("read", "obj")?,
            b"same bytes everywhere"
        );
        assert_eq!(fs::read_dir(repo.tmp_dir()).ctx("ls", "tmp")?.count(), 0);
        Ok(())
    }
}
