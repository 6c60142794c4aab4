//! The object store: file contents stored once, named by their hash, as raw
//! read-only files under `objects/ab/<hash>`.
//!
//! A run never writes into `objects/` directly. Each new content is copied
//! into `tmp/` while it is hashed (one read of the source), and queued in a
//! [`Batch`]. [`Batch::commit`] then makes the whole batch durable with one
//! filesystem sync, moves every file into place, and syncs again (a long
//! walk commits its objects every few tens of thousands, so `tmp/` never
//! holds millions of entries). So an
//! object that exists under its name always holds exactly the bytes of that
//! name — after SIGKILL or power loss alike — and a crash before the commit
//! leaves only `tmp/` garbage, removed by the next writer.
//!
//! A [`Batch`] is also the local repository's write session
//! (`crate::repo::RepoWrite`): records, removals and the pinned list go
//! through it too, and so do tree objects, which it streams into one pack
//! (`super::trees`) that its commit makes durable with the objects.

use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::hash::{Hasher, LARGE_BUF, SMALL_BUF};
use crate::id::{Digest, HashAlgo, ObjectId};
use crate::local::trees::{self, PackBuilder, SealedPack};
use crate::local::LocalRepo;
use crate::model::StatKey;
use crate::repo::StoreKind;
use rayon::prelude::*;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Files written to `tmp/` and waiting to be moved into a store.
///
/// A queued file is named after its digest (`tmp/obj-<hex>`,
/// `tmp/tree-<hex>`), so the directory itself is the set of queued
/// contents: no per-object memory, which for a first backup of a million
/// files was the largest structure of the run (about 100 MiB of hash map),
/// and a second writer of the same content finds the name taken. The
/// commit lists `tmp/` to find what to move.
///
/// A file under a queued name may be incomplete only while its writer is
/// still running or after a failed write; a failed write is a repository
/// error, fatal for the run, so such a batch is never committed, and the
/// next writer empties `tmp/` first ([`LocalRepo::clean_tmp`]).
pub struct Batch<'r> {
    repo: &'r LocalRepo,
    files: AtomicU64,
    bytes: AtomicU64,
    /// Repair mode (`backup --rehash`): an object whose name is taken is
    /// still checked, and re-stored when it is not a regular file of the
    /// right bytes.
    repair: bool,
    /// Digests found sound in repair mode (each is hashed once per run).
    sound: std::sync::Mutex<HashSet<Digest>>,
    /// Objects the last commit re-stored over a damaged copy.
    repaired: AtomicU64,
    /// Objects this batch's commits have moved into the store.
    committed: AtomicU64,
    /// The trees queued since the last commit, in a pack being written.
    trees: std::sync::Mutex<TreeSpool>,
    /// Set on the batch's first look at the store: where it found the
    /// store empty, which objects its commits have put there since.
    fresh: OnceLock<Option<Committed>>,
}

/// The objects a batch has committed into a store that was empty when it
/// first looked, as a Bloom filter: an object the filter has never seen
/// is not stored, and a first backup skips the look-up for it. That
/// look-up of a name that is not there, in a fan-out folder of ~12,000
/// names, was 7% of a 3,000,000-file first backup's CPU (twice its cost
/// per file at 100,000). A false "maybe" (about 1% at 3,000,000
/// objects, 20% at 10,000,000) costs only the look-up it saved.
///
/// Sound because only the batch's commits add objects while it runs
/// (the writer holds the exclusive lock), and each commit marks what it
/// moves before moving it; a commit also never replaces a name, so even
/// an object that came some other way is never overwritten.
struct Committed {
    words: Box<[AtomicU64]>,
}

/// 2^25 bits (4 MiB), three probes: sized for the few million objects
/// of a large first backup, and allocated only for an empty store.
const COMMITTED_BITS_LOG2: u32 = 25;
const COMMITTED_PROBES: usize = 3;

impl Committed {
    fn new() -> Committed {
        let words = (1usize << COMMITTED_BITS_LOG2) / 64;
        Committed {
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The bits of `d`: a digest is uniform, so its own words are the
    /// filter's hash functions.
    fn bits(d: &Digest) -> [usize; COMMITTED_PROBES] {
        let mask = (1u64 << COMMITTED_BITS_LOG2) - 1;
        std::array::from_fn(|i| (d.word(i) & mask) as usize)
    }

    fn insert(&self, d: &Digest) {
        for b in Self::bits(d) {
            self.words[b / 64].fetch_or(1 << (b % 64), Ordering::Relaxed);
        }
    }

    fn may_hold(&self, d: &Digest) -> bool {
        Self::bits(d)
            .iter()
            .all(|&b| self.words[b / 64].load(Ordering::Relaxed) & (1 << (b % 64)) != 0)
    }
}

/// The trees of a write session: the pack being written, those already
/// full, and which ids they hold (so a tree is queued once).
#[derive(Default)]
struct TreeSpool {
    building: Option<PackBuilder>,
    sealed: Vec<SealedPack>,
    queued: HashSet<Digest>,
}

/// Below these sizes a batch is made durable with one fsync per file (in
/// parallel) instead of `syncfs`, which also waits for every other
/// process's dirty data on the filesystem. At 2,000 files the per-file
/// fsyncs of a 1% rerun of 100,000 files (about 2,000 new objects) took
/// 0.35 s of its 1.4–1.6 s, against 0.15 s for `syncfs`: a few hundred
/// files is where one flush of the filesystem starts to pay.
const SMALL_BATCH_FILES: u64 = 512;
const SMALL_BATCH_BYTES: u64 = 64 << 20;
const TMP_PREFIX: &str = "b";
const QUEUED_OBJECT: &str = "obj-";

/// The store and digest a queued temp file name stands for (None for any
/// other file in `tmp/`: partial large-file copies, other writers' temp
/// files, a pack being written). Only objects are queued one file each:
/// trees go into the session's pack.
fn parse_queued(name: &std::ffi::OsStr) -> Option<(StoreKind, Digest)> {
    let name = name.to_str()?;
    let hex = name.strip_prefix(QUEUED_OBJECT)?;
    Some((StoreKind::Object, Digest::from_hex(hex)?))
}

impl<'r> Batch<'r> {
    pub fn new(repo: &'r LocalRepo) -> Batch<'r> {
        Batch {
            repo,
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            repair: false,
            sound: std::sync::Mutex::new(HashSet::new()),
            repaired: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            trees: std::sync::Mutex::new(TreeSpool::default()),
            fresh: OnceLock::new(),
        }
    }

    /// A batch that also repairs: content read from a source whose object
    /// is missing, not a regular file, of the wrong size or of the wrong
    /// bytes is stored again, and the commit moves the damaged copy to
    /// `.trove/quarantine/objects/` before putting the good one in place.
    pub fn repairing(repo: &'r LocalRepo) -> Batch<'r> {
        Batch {
            repair: true,
            ..Batch::new(repo)
        }
    }

    /// The repository the batch writes to.
    pub fn repo(&self) -> &'r LocalRepo {
        self.repo
    }

    /// How many objects (and bytes) are queued since the last commit.
    pub fn queued(&self) -> (u64, u64) {
        (
            self.files.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// How many objects this batch's commits have moved into the store.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// How many damaged objects commits of this batch replaced.
    pub fn repaired(&self) -> u64 {
        self.repaired.load(Ordering::Relaxed)
    }

    /// The objects committed since the batch found the store empty (None
    /// where it was not, and in repair mode, which must look at every
    /// stored copy). Decided on first use, which comes before the first
    /// commit: objects are checked before they are queued.
    fn fresh(&self) -> Option<&Committed> {
        self.fresh
            .get_or_init(|| (!self.repair && self.repo.objects_empty()).then(Committed::new))
            .as_ref()
    }

    /// Whether content `d` of `len` bytes needs no writing: stored (and,
    /// in repair mode, stored intact).
    fn is_stored(&self, kind: StoreKind, d: &Digest, len: u64) -> bool {
        if kind == StoreKind::Tree {
            return self.repo.tree_has(d);
        }
        if self.fresh().is_some_and(|f| !f.may_hold(d)) {
            return false;
        }
        let p = self.repo.object_path(&ObjectId(*d));
        if !self.repair {
            return p.exists();
        }
        if self.sound.lock().is_ok_and(|s| s.contains(d)) {
            return true;
        }
        let ok = match fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() && m.len() == len => {
                hash_object(self.repo.algo(), &p).is_ok_and(|h| h == *d)
            }
            _ => false,
        };
        if ok {
            if let Ok(mut s) = self.sound.lock() {
                s.insert(*d);
            }
        } else if p.symlink_metadata().is_ok() {
            tracing::warn!(
                "object {} is damaged (not a regular file of the right bytes): storing it again from the source",
                p.display()
            );
        }
        ok
    }

    fn tmp_path(&self, n: u64) -> PathBuf {
        self.repo.tmp_dir().join(fsutil::tmp_name_of(TMP_PREFIX, n))
    }

    /// The queued name of object `d` in `tmp/`.
    fn queued_path(&self, d: &Digest) -> PathBuf {
        self.repo
            .tmp_dir()
            .join(format!("{QUEUED_OBJECT}{}", d.to_hex()))
    }

    /// A new temp file for the batch: its number and open handle.
    fn new_tmp(&self) -> Result<(u64, PathBuf, File)> {
        let n = fsutil::next_tmp_number();
        let p = self.tmp_path(n);
        let f = create_tmp(&p)?;
        Ok((n, p, f))
    }

    fn counted(&self, len: u64) -> bool {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len, Ordering::Relaxed);
        true
    }

    /// Queue `data` under digest `d`, unless it is stored or queued
    /// already (false then). The name is claimed with `O_EXCL`, so of
    /// concurrent writers of one content exactly one writes it.
    fn put_bytes(&self, kind: StoreKind, d: Digest, data: &[u8]) -> Result<bool> {
        if self.is_stored(kind, &d, data.len() as u64) {
            return Ok(false);
        }
        self.claim_and_write(kind, d, data)
    }

    /// Write `data` under the queued name of `d` unless that name is
    /// taken (false then); the caller checked the store.
    fn claim_and_write(&self, kind: StoreKind, d: Digest, data: &[u8]) -> Result<bool> {
        if kind == StoreKind::Tree {
            return self.queue_tree(d, data);
        }
        let q = self.queued_path(&d);
        let mut f = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&q)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(Error::io("create temporary file", &q, e)),
        };
        if let Err(e) = f.write_all(data) {
            // Never leave a partial file under a digest name.
            let _ = fs::remove_file(&q);
            return Err(Error::io("write", &q, e));
        }
        Ok(self.counted(data.len() as u64))
    }

    /// Queue temp file `n`, whose digest `d` was only known once it was
    /// written (large file contents are hashed while copied). Returns false
    /// — and removes the temp file — when the digest is already stored or
    /// queued, so concurrent writers of one content all succeed.
    fn offer(&self, kind: StoreKind, d: Digest, n: u64, len: u64) -> Result<bool> {
        let tmp = self.tmp_path(n);
        if self.is_stored(kind, &d, len) {
            fs::remove_file(&tmp).ctx("remove temporary file", &tmp)?;
            return Ok(false);
        }
        let q = self.queued_path(&d);
        // Where the filesystem lacks RENAME_NOREPLACE, two threads can both
        // find the name free and both rename: harmless (the bytes are equal,
        // being of one digest), and the count of new objects is one high.
        match fsutil::rename_noreplace(&tmp, &q) {
            Ok(()) => Ok(self.counted(len)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                fs::remove_file(&tmp).ctx("remove temporary file", &tmp)?;
                Ok(false)
            }
            Err(e) => Err(Error::io("queue temporary file", &q, e)),
        }
    }

    /// Store the bytes `make` produces under `d` (used for tree objects,
    /// whose id is known before they are written): nothing is built or
    /// written when the digest is already stored or queued.
    pub fn put_with(
        &self,
        kind: StoreKind,
        d: Digest,
        make: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<bool> {
        let known = match kind {
            StoreKind::Object => {
                self.repo.object_path(&ObjectId(d)).exists() || self.queued_path(&d).exists()
            }
            StoreKind::Tree => self.tree_queued(&d) || self.repo.tree_has(&d),
        };
        if known {
            return Ok(false);
        }
        let data = make()?;
        self.claim_and_write(kind, d, &data)
    }

    fn spool(&self) -> Result<std::sync::MutexGuard<'_, TreeSpool>> {
        self.trees
            .lock()
            .map_err(|_| Error::Internal("a tree writer panicked".into()))
    }

    fn tree_queued(&self, d: &Digest) -> bool {
        self.trees.lock().is_ok_and(|s| s.queued.contains(d))
    }

    /// Append tree `d` to the session's pack unless it is queued already
    /// (false then). A pack that reaches its target size is sealed and the
    /// next tree starts another; all of them are installed at commit.
    fn queue_tree(&self, d: Digest, data: &[u8]) -> Result<bool> {
        let mut spool = self.spool()?;
        if spool.queued.contains(&d) {
            return Ok(false);
        }
        let mut b = match spool.building.take() {
            Some(b) => b,
            None => PackBuilder::create(self.repo)?,
        };
        b.add(&d, data)?;
        spool.queued.insert(d);
        if b.len() >= trees::PACK_TARGET {
            let sealed = b.seal()?;
            spool.sealed.push(sealed);
        } else {
            spool.building = Some(b);
        }
        Ok(true)
    }

    /// The session's packs, sealed and taken for a commit.
    fn seal_trees(&self) -> Result<Vec<SealedPack>> {
        let mut spool = self.spool()?;
        if let Some(b) = spool.building.take() {
            let sealed = b.seal()?;
            spool.sealed.push(sealed);
        }
        spool.queued.clear();
        Ok(std::mem::take(&mut spool.sealed))
    }

    /// Queue an object streamed from `src`, hashed while it is copied to
    /// `tmp/`: bytes that do not hash to `id` are refused (an error naming
    /// `what`), never stored. False when `id` is stored or queued already.
    pub fn put_object_from(&self, id: &ObjectId, src: &mut dyn Read, what: &Path) -> Result<bool> {
        let d = id.0;
        if self.is_stored(StoreKind::Object, &d, 0) || self.queued_path(&d).exists() {
            return Ok(false);
        }
        let copy = self.copy_to_tmp(src, what)?;
        if copy.digest != d {
            let _ = fs::remove_file(self.tmp_path(copy.n));
            return Err(Error::corrupt(
                "object",
                what,
                "its bytes do not hash to its id: not stored",
            ));
        }
        self.offer(StoreKind::Object, d, copy.n, copy.len)
    }

    /// Queue an object streamed from `src` (`what` names it in messages)
    /// whose digest is not known before it is read: it is hashed while it
    /// is copied to `tmp/`, never held in memory, and queued under the
    /// digest its bytes have. Returns that digest, the length read, and
    /// whether this call queued a new object (false when the content is
    /// stored or queued already).
    pub fn put_stream(&self, src: &mut dyn Read, what: &Path) -> Result<(ObjectId, u64, bool)> {
        let copy = self.copy_to_tmp(src, what)?;
        let stored = self.offer(StoreKind::Object, copy.digest, copy.n, copy.len)?;
        Ok((ObjectId(copy.digest), copy.len, stored))
    }

    /// Copy `src` to a new numbered temp file while hashing it (removed
    /// again when the read or the write fails).
    fn copy_to_tmp(&self, src: &mut dyn Read, what: &Path) -> Result<TmpCopy> {
        let (n, tmp, mut out) = self.new_tmp()?;
        let mut h = Hasher::new(self.repo.algo());
        let mut buf = vec![0u8; LARGE_BUF];
        let mut len = 0u64;
        let copied = (|| -> Result<()> {
            loop {
                let got = fsutil::read_full(&mut &mut *src, &mut buf).ctx("read", what)?;
                if got == 0 {
                    return Ok(());
                }
                h.update(&buf[..got]);
                len += got as u64;
                out.write_all(&buf[..got]).ctx("write", &tmp)?;
            }
        })();
        drop(out);
        if let Err(e) = copied {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(TmpCopy {
            n,
            digest: h.finish(),
            len,
        })
    }

    /// Make every queued file and tree pack durable and move it into
    /// place.
    pub fn commit(&self) -> Result<()> {
        let packs = self.seal_trees()?;
        self.commit_queued(packs)
    }

    /// Make the objects queued so far durable and move them into the
    /// store, leaving the trees for `commit`: a long walk does this
    /// between read windows, and a run once more while it plans, once its
    /// walk has queued every object. No object may be queued meanwhile
    /// (its check of the store could race the move); trees may.
    pub fn commit_objects(&self) -> Result<()> {
        self.commit_queued(Vec::new())
    }

    fn commit_queued(&self, packs: Vec<SealedPack>) -> Result<()> {
        let files = self.files.swap(0, Ordering::Relaxed);
        let bytes = self.bytes.swap(0, Ordering::Relaxed);
        if files == 0 && packs.is_empty() {
            return Ok(());
        }
        let tmp_dir = self.repo.tmp_dir();
        let queued = || -> Result<_> {
            let rd = fs::read_dir(&tmp_dir).ctx("list", &tmp_dir)?;
            Ok(rd.filter_map(|e| {
                let e = match e {
                    Ok(e) => e,
                    Err(err) => return Some(Err(Error::io("list", &tmp_dir, err))),
                };
                parse_queued(&e.file_name()).map(|(kind, d)| Ok((e.path(), kind, d)))
            }))
        };
        // Where syncfs would swallow a writeback error (kernels before
        // 5.8), every batch takes the per-file fsync path.
        let small = (files < SMALL_BATCH_FILES && bytes < SMALL_BATCH_BYTES)
            || !fsutil::syncfs_reports_errors();
        // 1. The bytes of every temp file reach the disk before any of them
        //    gets its final name. A small batch is listed once and kept (its
        //    files are fsynced one by one); a large one is synced as a whole
        //    and then streamed from the listing, never held.
        let moves: Box<dyn Iterator<Item = Result<(PathBuf, StoreKind, Digest)>>> = if small {
            let list: Vec<(PathBuf, StoreKind, Digest)> = queued()?.collect::<Result<_>>()?;
            list.par_iter().try_for_each(|(tmp, _, _)| {
                File::open(tmp).and_then(|f| f.sync_all()).ctx("fsync", tmp)
            })?;
            packs.par_iter().try_for_each(SealedPack::sync)?;
            Box::new(list.into_iter().map(Ok))
        } else {
            fsutil::sync_filesystem(&tmp_dir)?;
            Box::new(queued()?)
        };
        // A large batch's entries are moved out of `tmp/` while it is
        // listed: a listing returns every entry that is neither added nor
        // removed during it exactly once, and only entries already returned
        // (a chunk at a time) are removed.
        // Only a filter already made can have missed an object: one made
        // after this commit would find the store not empty.
        let fresh = self.fresh.get().and_then(Option::as_ref);
        let mut dirs: HashSet<PathBuf> = HashSet::new();
        let mut moves = moves.peekable();
        while moves.peek().is_some() {
            let mut chunk: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(MOVE_CHUNK);
            for q in moves.by_ref().take(MOVE_CHUNK) {
                let (tmp, kind, d) = q?;
                if let (StoreKind::Object, Some(f)) = (kind, fresh) {
                    f.insert(&d);
                }
                let dest = self.repo.digest_path(kind, &d);
                if let Some(dir) = dest.parent() {
                    if !dirs.contains(dir) {
                        fsutil::create_private_dir(dir)?;
                        dirs.insert(dir.to_path_buf());
                    }
                }
                chunk.push((tmp, dest));
            }
            chunk
                .par_iter()
                .try_for_each(|(tmp, dest)| self.move_in(tmp, dest))?;
        }
        let had_packs = !packs.is_empty();
        let installed = trees::install(self.repo, packs)?;
        // 2. The moves themselves are durable before the caller writes a
        //    snapshot record that refers to these names.
        if small {
            dirs.par_iter().try_for_each(|d| fsutil::fsync_dir(d))?;
            if files > 0 {
                fsutil::fsync_dir(&self.repo.objects_dir())?;
            }
            if had_packs {
                fsutil::fsync_dir(&self.repo.packs_dir())?;
            }
        } else {
            fsutil::sync_filesystem(&self.repo.dir)?;
        }
        trees::added(self.repo, &installed);
        self.committed.fetch_add(files, Ordering::Relaxed);
        Ok(())
    }
}

impl Batch<'_> {
    /// Give queued file `tmp` (its bytes durable) its store name `dest`.
    /// A name that is taken keeps the copy it has (stored meanwhile by
    /// other means: the browsable tree may link to it) — except in repair
    /// mode, where it holds a damaged copy, moved aside first, never
    /// overwritten.
    ///
    /// The move is a hardlink and an unlink, not a rename: a rename
    /// between two folders takes the filesystem's one rename lock (Linux's
    /// `s_vfs_rename_mutex`), so the renames of a commit ran one at a time
    /// while the walk waited — 17% of a 3,000,000-file first backup's
    /// time; links into different fan-out folders run side by side (on
    /// every pool thread: two movers instead measured no faster). A
    /// crash between the two leaves the name in `tmp/` too, which the
    /// next writer removes (the object keeps its store name). Where the
    /// link fails (a filesystem without hardlinks), a rename does it.
    fn move_in(&self, tmp: &Path, dest: &Path) -> Result<()> {
        if self.repair && fs::symlink_metadata(dest).is_ok() {
            quarantine_object(self.repo, dest)?;
            self.repaired.fetch_add(1, Ordering::Relaxed);
        }
        let taken = |e: &io::Error| e.kind() == io::ErrorKind::AlreadyExists;
        match fs::hard_link(tmp, dest) {
            // Linked, or the name is taken: the temp name goes either way.
            Ok(()) => {}
            Err(e) if taken(&e) => {}
            // The link only saves time: whatever refused it (no hardlinks
            // here, or an error), the rename is the move it stands for.
            Err(_) => match fsutil::rename_noreplace(tmp, dest) {
                Ok(()) => return Ok(()),
                Err(e) if taken(&e) => {}
                Err(e) => return Err(Error::io("move into store", dest, e)),
            },
        }
        fs::remove_file(tmp).ctx("remove temporary file", tmp)
    }
}

/// Queued files a commit moves at once (listed, their folders made, then
/// moved in parallel).
const MOVE_CHUNK: usize = 4096;

/// Move a damaged stored file out of the store into
/// `.trove/quarantine/objects/` (under a fresh name: nothing there is ever
/// replaced), so a repair never destroys bytes, even wrong ones.
pub fn quarantine_object(repo: &LocalRepo, path: &Path) -> Result<PathBuf> {
    let (dir, parent) = repo.quarantine_dirs();
    fsutil::create_private_dir(&parent)?;
    fsutil::create_private_dir(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for n in 0u32..10_000 {
        let dest = dir.join(if n == 0 {
            name.clone()
        } else {
            format!("{name}.{n}")
        });
        match fsutil::rename_noreplace(path, &dest) {
            Ok(()) => {
                tracing::warn!("moved damaged {} to {}", path.display(), dest.display());
                return Ok(dest);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("move to quarantine", path, e)),
        }
    }
    Err(Error::QuarantineFull {
        dir,
        path: path.to_path_buf(),
    })
}

/// Put the bytes of `good` — a file outside the store whose bytes hash to
/// `id`, checked here while they are copied — in the store under `id`, in
/// place of a missing or damaged object (moved to quarantine). The copy
/// goes through `tmp/` and is synced before it gets its name, like every
/// store write. Returns false (and changes nothing) when `good` turns out
/// not to hold those bytes.
pub fn restore_object_from(repo: &LocalRepo, id: &ObjectId, good: &Path) -> Result<bool> {
    restore_object_from_file(repo, id, fsutil::open_regular(good)?, good)
}

/// `restore_object_from` with the good copy already open (the browsable
/// tree opens its files without following a symlink); `good` names it in
/// messages. Anything but a regular file is refused.
pub fn restore_object_from_file(
    repo: &LocalRepo,
    id: &ObjectId,
    mut src: File,
    good: &Path,
) -> Result<bool> {
    fsutil::ensure_regular(&src, "copy", good)?;
    let tmp = repo.tmp_dir().join(fsutil::tmp_name("repair"));
    let mut out = create_tmp(&tmp)?;
    let mut h = Hasher::new(repo.algo());
    let mut buf = vec![0u8; LARGE_BUF];
    let copied = (|| -> Result<()> {
        loop {
            let n = fsutil::read_full(&mut src, &mut buf).ctx("read", good)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n]).ctx("write", &tmp)?;
        }
        out.sync_all().ctx("fsync", &tmp)
    })();
    drop(out);
    if let Err(e) = copied {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if h.finish() != id.0 {
        let _ = fs::remove_file(&tmp);
        return Ok(false);
    }
    let dest = repo.object_path(id);
    if fs::symlink_metadata(&dest).is_ok() {
        quarantine_object(repo, &dest)?;
    }
    if let Some(dir) = dest.parent() {
        fsutil::create_private_dir(dir)?;
    }
    if let Err(e) = fs::rename(&tmp, &dest) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("move into store", &dest, e));
    }
    if let Some(dir) = dest.parent() {
        fsutil::fsync_dir(dir)?;
    }
    tracing::warn!(
        "re-stored object {} from the good copy {}",
        dest.display(),
        good.display()
    );
    Ok(true)
}

/// Whether the stored object `id` is a regular file whose bytes hash to
/// its name (false for missing, a FIFO, a symlink, wrong bytes).
pub fn object_is_sound(repo: &LocalRepo, id: &ObjectId) -> bool {
    hash_object(repo.algo(), &repo.object_path(id)).is_ok_and(|d| d == id.0)
}

/// A temp file [`Batch::copy_to_tmp`] wrote: its number, digest and length.
struct TmpCopy {
    n: u64,
    digest: Digest,
    len: u64,
}

fn create_tmp(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)
        .ctx("create temporary file", path)
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
    // The scan saw a regular file. If it has been swapped for a FIFO since,
    // O_NONBLOCK makes the open return at once instead of waiting for a
    // writer, and the type check below refuses it.
    let mut flags = libc::O_NONBLOCK;
    if !follow {
        // Swapped for a symlink: refuse to follow it rather than back up
        // its target.
        flags |= libc::O_NOFOLLOW;
    }
    opts.read(true).custom_flags(flags);
    let mut file = opts.open(src).map_err(source_err)?;
    let meta = file.metadata().map_err(source_err)?;
    if !meta.file_type().is_file() {
        return Err(ReadFailure::Source(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "it became {} after the scan saw a regular file",
                fsutil::describe_type(&meta.file_type())
            ),
        )));
    }
    let before = StatKey::of(&meta);
    // A sparse source is stored sparse: its zero blocks become holes in the
    // object too (the object's bytes are the same, so the browsable tree's
    // hardlinks still show the file; a 100 MiB file of holes costs no data
    // blocks in the store).
    let mut holes = fsutil_sparse(&meta);
    let buf_len = if before.size as usize >= LARGE_BUF {
        LARGE_BUF
    } else {
        (before.size as usize + 1).clamp(4096, SMALL_BUF)
    };
    let mut hasher = Hasher::new(algo);
    // A small file fits the buffer whole: it is hashed first and written
    // once under its digest name. A large one is copied to a numbered temp
    // file while it is hashed (one read), then renamed to its digest name.
    let whole = (before.size as usize) < SMALL_BUF;
    let (tmp_num, tmp_path, mut tmp) = match batch.filter(|_| !whole) {
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
    let mut chunks = 0;
    // Small files share one buffer per thread; a large file gets its own,
    // big enough for BLAKE3's multi-threaded path.
    let mut large: Vec<u8>;
    let mut small_guard: Vec<u8> = Vec::new();
    let buf: &mut [u8] = if buf_len > SMALL_BUF {
        large = vec![0u8; buf_len];
        &mut large
    } else {
        small_guard = crate::hash::take_small_buffer();
        if small_guard.len() < SMALL_BUF {
            small_guard = vec![0u8; SMALL_BUF];
        }
        &mut small_guard
    };
    loop {
        // A sparse source's holes are found, not read (SEEK_DATA): they
        // are hashed as the zeros they read as, and left as holes in the
        // stored copy.
        if let (Some(h), true) = (holes.as_mut(), tmp.is_some()) {
            match next_data(&mut file, total, before.size) {
                Ok(data) if data > total => {
                    let hole = data - total;
                    buf.fill(0);
                    let mut left = hole;
                    while left > 0 {
                        let n = left.min(buf.len() as u64) as usize;
                        hasher.update(&buf[..n]);
                        left -= n as u64;
                    }
                    h.skip(hole);
                    total = data;
                }
                Ok(_) => {}
                Err(e) => {
                    cleanup(&tmp_path);
                    return Err(source_err(e));
                }
            }
        }
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
        chunks += 1;
        if whole && chunks > 1 {
            // It grew past the buffer since it was stat'ed: read it again.
            return Ok(None);
        }
        hasher.update(&buf[..n]);
        if let (Some(t), Some(p)) = (tmp.as_mut(), tmp_path.as_ref()) {
            let w = match holes.as_mut() {
                Some(h) => h.write(t, &buf[..n]),
                None => t.write_all(&buf[..n]),
            };
            if let Err(e) = w {
                cleanup(&tmp_path);
                return Err(ReadFailure::Repo(Error::io("write", p, e)));
            }
        }
        total += n as u64;
    }
    fsutil::drop_cached(&file);
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
    if let (Some(h), Some(t), Some(p)) = (holes.take(), tmp.as_mut(), tmp_path.as_ref()) {
        if let Err(e) = h.finish(t) {
            cleanup(&tmp_path);
            return Err(ReadFailure::Repo(Error::io("write", p, e)));
        }
    }
    let after_fd = file.metadata().map(|m| StatKey::of(&m)).ok();
    if after != before || after_fd != Some(before) || total != before.size {
        cleanup(&tmp_path);
        return Ok(None);
    }
    drop(tmp);
    let id = ObjectId(hasher.finish());
    let stored = match batch {
        Some(b) if whole => b
            .put_bytes(StoreKind::Object, id.0, &buf[..total as usize])
            .map_err(ReadFailure::Repo)?,
        Some(b) => b
            .offer(StoreKind::Object, id.0, tmp_num, total)
            .map_err(ReadFailure::Repo)?,
        None => false,
    };
    if buf_len <= SMALL_BUF {
        crate::hash::give_back_small_buffer(std::mem::take(&mut small_guard));
    }
    Ok(Some(Ingested {
        id,
        size: total,
        stat: before,
        stored,
    }))
}

/// Where the next data of `file` at or after `pos` starts (`size` when only
/// a hole is left), with the file's offset moved there. A filesystem
/// without SEEK_DATA says all of it is data.
fn next_data(file: &mut File, pos: u64, size: u64) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let data = match rustix::fs::seek(&*file, rustix::fs::SeekFrom::Data(pos)) {
        Ok(d) => d.min(size),
        // No data after `pos`: a hole to the end.
        Err(rustix::io::Errno::NXIO) => size,
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => pos,
        Err(e) => return Err(e.into()),
    };
    file.seek(SeekFrom::Start(data))?;
    Ok(data)
}

/// A writer that leaves zero blocks as holes, for a source with holes.
fn fsutil_sparse(m: &fs::Metadata) -> Option<crate::fsmeta::SparseWriter> {
    crate::fsmeta::is_sparse(m).then(crate::fsmeta::SparseWriter::new)
}

/// Open a stored object for reading without ever blocking or following a
/// link: `O_NOFOLLOW` (an object replaced by a symlink is refused, not
/// followed out of the store), `O_NONBLOCK` (opening a FIFO put in its place
/// returns at once instead of waiting for a writer that never comes), then
/// an fstat that refuses anything but a regular file. A non-regular object
/// is reported as corrupt, naming what it is.
pub fn open_object(path: &Path) -> Result<File> {
    fsutil::open_checked(path, false)
}

/// Hash a stored object again (verify, materialize of copies). Small files
/// reuse a per-thread buffer: allocating and zeroing a large one per file
/// would cost more than hashing a 4 KiB file.
pub fn hash_object(algo: HashAlgo, path: &Path) -> Result<Digest> {
    let f = open_object(path)?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(LARGE_BUF as u64);
    crate::hash::hash_reader(algo, f, size, path)
}

/// Call `f` with every stored object's digest.
pub fn for_each_object(repo: &LocalRepo, f: &mut dyn FnMut(Digest)) -> Result<()> {
    super::fanout::for_each_fanned(&repo.objects_dir(), f)
}

/// Every object in the store with where it is (`RepoRead::list_objects_located`):
/// the inode number and type come from each fan-out folder's listing
/// (`d_ino`, `d_type`; std stats an entry only where the filesystem gives
/// no type), the device from one stat of the folder.
pub fn for_each_object_located(
    repo: &LocalRepo,
    f: &mut dyn FnMut(ObjectId, crate::repo::Located),
) -> Result<()> {
    super::fanout::for_each_fan_folder(&repo.objects_dir(), true, &mut |folder| {
        for e in &folder.entries {
            let at = crate::repo::Located {
                dev: folder.dev,
                ino: e.ino,
                regular: e.regular,
            };
            f(ObjectId(e.digest), at);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sixteen threads ingest files of one content at once; exactly one
    /// queues it, and the commit moves exactly that file into the store and
    /// leaves other files in `tmp/` alone. `len` picks the path: below
    /// SMALL_BUF a file is written whole under its digest name, above it is
    /// copied while hashed and then renamed to that name.
    fn same_content_from_many_threads(len: usize) -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let repo = LocalRepo::init(&dir.path().join("b"), HashAlgo::Blake3)?;
        let src_dir = dir.path().join("src");
        fs::create_dir(&src_dir).ctx("mkdir", &src_dir)?;
        let content: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let mut paths = Vec::new();
        for i in 0..16 {
            let p = src_dir.join(format!("f{i}"));
            fs::write(&p, &content).ctx("write", &p)?;
            paths.push(p);
        }
        // Another writer's temp file: not the batch's to move.
        let stray = repo.tmp_dir().join("w-1-1");
        fs::write(&stray, b"x").ctx("write", &stray)?;
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
            let ing = r.map_err(|_| Error::Internal("thread panicked".into()))?;
            let ing = ing.map_err(|e| Error::Internal(format!("{e:?}")))?;
            stored += ing.stored as usize;
            ids.insert(ing.id);
        }
        assert_eq!(stored, 1, "exactly one writer queues the object");
        assert_eq!(ids.len(), 1);
        let id = ids
            .into_iter()
            .next()
            .ok_or_else(|| Error::Internal("no writer returned an id".into()))?;
        assert!(
            !repo.object_path(&id).exists(),
            "nothing stored before the commit"
        );
        // A tree whose digest is queued or stored is neither built nor written.
        let tree = Digest([7; 32]);
        assert!(batch.put_with(StoreKind::Tree, tree, || Ok(b"tree".to_vec()))?);
        assert!(
            !batch.put_with(StoreKind::Tree, tree, || Err(Error::Internal(
                "built again".into()
            )))?
        );
        batch.commit()?;
        assert_eq!(fs::read(repo.object_path(&id)).ctx("read", "obj")?, content);
        assert_eq!(
            crate::repo::RepoRead::read(&repo, StoreKind::Tree, &tree).ctx("read", "tree")?,
            b"tree"
        );
        assert!(
            !batch.put_with(StoreKind::Tree, tree, || Err(Error::Internal(
                "built again".into()
            )))?
        );
        let left: Vec<_> = fs::read_dir(repo.tmp_dir())
            .ctx("ls", "tmp")?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("w-1-1")]);
        Ok(())
    }

    /// A `tmp/` that held many queued files (a first backup's) is empty
    /// and small again once the next writer has cleaned it, a stray
    /// `tmp.new/` of an interrupted replacement included, and a batch
    /// writes there as before.
    #[test]
    fn a_grown_tmp_folder_is_replaced_by_a_small_one() -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let repo = LocalRepo::init(&dir.path().join("b"), HashAlgo::Blake3)?;
        let tmp = repo.tmp_dir();
        for i in 0..8000 {
            let p = tmp.join(format!("o-{i:08}-{:064}", i));
            fs::write(&p, b"").ctx("write", &p)?;
        }
        let stray = repo.dir.join("tmp.new");
        fs::create_dir(&stray).ctx("mkdir", &stray)?;
        let before = fs::metadata(&tmp).ctx("stat", &tmp)?;
        repo.clean_tmp()?;
        let after = fs::metadata(&tmp).ctx("stat", &tmp)?;
        assert!(after.is_dir());
        assert_eq!(after.mode() & 0o777, 0o700);
        assert_eq!(fs::read_dir(&tmp).ctx("ls", &tmp)?.count(), 0);
        assert!(
            after.len() <= crate::local::TMP_SHRINK_AT,
            "tmp/ still spans {} bytes ({} before cleaning)",
            after.len(),
            before.len()
        );
        assert!(!stray.exists(), "the stray tmp.new/ is gone");
        let batch = Batch::new(&repo);
        let src = dir.path().join("f");
        fs::write(&src, b"content").ctx("write", &src)?;
        let ing = ingest(HashAlgo::Blake3, Some(&batch), &src, false)
            .map_err(|e| Error::Internal(format!("{e:?}")))?;
        batch.commit()?;
        assert_eq!(
            fs::read(repo.object_path(&ing.id)).ctx("read", "obj")?,
            b"content"
        );
        Ok(())
    }

    /// The filter of a batch that found the store empty never says "not
    /// stored" of an object it was given, and says "maybe" of few others.
    #[test]
    fn the_committed_filter_never_forgets_and_rarely_imagines() {
        let f = Committed::new();
        let digest = |i: u64| Digest(*blake3::hash(&i.to_le_bytes()).as_bytes());
        for i in 0..100_000 {
            f.insert(&digest(i));
        }
        assert!((0..100_000).all(|i| f.may_hold(&digest(i))));
        let imagined = (100_000..200_000)
            .filter(|&i| f.may_hold(&digest(i)))
            .count();
        assert!(
            imagined < 10,
            "{imagined} of 100,000 absent digests said maybe"
        );
    }

    /// A first backup's batch (empty store) skips the look-up of objects
    /// it never committed, still finds those it did (same content in a
    /// later commit is not stored twice), and its commit keeps an object
    /// that reached the store some other way instead of replacing it.
    #[test]
    fn a_batch_on_an_empty_store_finds_what_it_committed_and_replaces_nothing() -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let repo = LocalRepo::init(&dir.path().join("b"), HashAlgo::Blake3)?;
        let d = |b: &[u8]| Digest(*blake3::hash(b).as_bytes());
        let batch = Batch::new(&repo);
        assert!(batch.put_bytes(StoreKind::Object, d(b"one"), b"one")?);
        assert!(batch.fresh().is_some(), "the store was empty");
        batch.commit()?;
        assert!(!batch.put_bytes(StoreKind::Object, d(b"one"), b"one")?);
        // Put back by other means after the batch looked: the filter has
        // not seen it, so it is queued again, and the commit keeps the
        // copy in the store (the browsable tree may link to it).
        let other = repo.object_path(&ObjectId(d(b"two")));
        if let Some(parent) = other.parent() {
            fsutil::create_private_dir(parent)?;
        }
        fs::write(&other, b"two").ctx("write", &other)?;
        let ino = fs::metadata(&other).ctx("stat", &other)?.ino();
        batch.put_bytes(StoreKind::Object, d(b"two"), b"two")?;
        batch.commit()?;
        assert_eq!(fs::metadata(&other).ctx("stat", &other)?.ino(), ino);
        assert_eq!(fs::read_dir(repo.tmp_dir()).ctx("ls", "tmp")?.count(), 0);
        // A batch on a store that holds objects looks every one up.
        let next = Batch::new(&repo);
        assert!(!next.put_bytes(StoreKind::Object, d(b"two"), b"two")?);
        assert!(next.fresh().is_none());
        Ok(())
    }

    #[test]
    fn many_threads_store_one_small_content_once() -> Result<()> {
        same_content_from_many_threads(21)
    }

    #[test]
    fn many_threads_store_one_large_content_once() -> Result<()> {
        same_content_from_many_threads(SMALL_BUF + 1)?;
        same_content_from_many_threads(LARGE_BUF + 3)
    }

    #[test]
    fn only_queued_names_are_committed() {
        let d = Digest([0xab; 32]);
        let name = |s: String| std::ffi::OsString::from(s);
        assert_eq!(
            parse_queued(&name(format!("obj-{}", d.to_hex()))),
            Some((StoreKind::Object, d))
        );
        // Trees are not queued one file each (they go into the session's
        // pack): a `tree-` name, as format 1 writers left them, is not one.
        for other in [
            "b-12-3".to_string(),
            "obj-".to_string(),
            "obj-zz".to_string(),
            "w-1-1".to_string(),
            "tree-ab".to_string(),
            format!("tree-{}", d.to_hex()),
            "pack-1-2".to_string(),
        ] {
            assert_eq!(parse_queued(&name(other.clone())), None, "{other}");
        }
    }
}
