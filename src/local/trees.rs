//! The local repository's tree store (docs/FORMAT.md "Tree packs",
//! DESIGN "Tree packs").
//!
//! Format 1 kept every tree object in its own file, `trees/ab/<hex>`.
//! Format 2 keeps the trees one write session stores in one pack file,
//! `packs/<hex>.pack` ([`super::pack`] encodes it; `<hex>` is the hash of
//! the pack's bytes), so a run that changes 1% of a large tree writes and
//! syncs one file instead of thousands, and a collection deletes or
//! rewrites a few packs instead of thousands of files.
//!
//! Lookup goes through an in-memory index built from the packs' own
//! indexes the first time a tree is asked for: one sorted array of (tree
//! id, pack, offset, length), 48 bytes a tree, so nothing on disk besides
//! the packs needs to be kept in step. A pack whose index does not check
//! out (torn, damaged, not a regular file) is *damaged*: none of its trees
//! is served, reads of a tree it may hold name it, and no collection ever
//! deletes it.
//!
//! Writes: a [`PackBuilder`] streams trees into `tmp/pack-…` and seals it
//! with its index; [`install`] renames sealed packs into `packs/` (after
//! the caller made their bytes durable), and the caller syncs `packs/`
//! before anything refers to them. A collection ([`collect`]) deletes the
//! packs that hold no live tree and rewrites those mostly dead
//! ([`REPACK_DEAD_SHARE`]): the new pack is durable before the old one
//! goes. [`upgrade`] turns a format 1 repository into a format 2 one.
//!
//! Nothing above `local/` knows about packs: everything goes through
//! `RepoRead`/`RepoWrite` by tree id.

use super::pack::{self, PackEntry};
use super::LocalRepo;
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::hash::Hasher;
use crate::id::Digest;
use rayon::prelude::*;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

/// The repository format with one file per tree (`trees/`).
pub const FORMAT_LOOSE: u32 = 1;
/// The repository format with tree packs (`packs/`).
pub const FORMAT_PACKED: u32 = 2;
/// A pack being written is sealed once it reaches this size and the next
/// trees go to a new one (a first backup of millions of files, the
/// upgrade of a large repository, a repack), so no pack is ever held or
/// hashed whole beyond this.
pub const PACK_TARGET: u64 = 64 << 20;
/// A collection rewrites a pack when more than this share of its bytes
/// is dead (unreferenced trees, or copies of trees another pack holds):
/// below it the space is not worth the rewrite; a pack with no live tree
/// at all is deleted whatever its size.
pub const REPACK_DEAD_SHARE: f64 = 0.5;
const PACK_SUFFIX: &str = ".pack";
const TMP_PACK: &str = "pack";
/// Open packs kept for reading: beyond this many packs each read opens
/// its pack again (a process must stay far from its descriptor limit).
const MAX_CACHED_FILES: usize = 256;
const WRITE_BUF: usize = 256 << 10;

/// The file name of the pack whose bytes hash to `d`.
pub fn pack_file_name(d: &Digest) -> String {
    format!("{}{PACK_SUFFIX}", d.to_hex())
}

/// Whether `name` is a pack's file name.
pub fn is_pack_name(name: &str) -> bool {
    name.strip_suffix(PACK_SUFFIX)
        .is_some_and(|h| Digest::from_hex(h).is_some())
}

/// The tree store's state, shared by every clone of a [`LocalRepo`]: the
/// repository's format as it is now (a writer upgrades it) and the index
/// of the packs, built when first needed.
#[derive(Debug)]
pub struct TreeStore {
    format: AtomicU32,
    index: RwLock<Option<Arc<PackIndex>>>,
}

impl TreeStore {
    pub fn new(format: u32) -> TreeStore {
        TreeStore {
            format: AtomicU32::new(format),
            index: RwLock::new(None),
        }
    }
    pub fn format(&self) -> u32 {
        self.format.load(Ordering::Acquire)
    }
    fn set_format(&self, f: u32) {
        self.format.store(f, Ordering::Release);
    }
    /// Forget the index: the next lookup reads the packs' indexes again.
    pub fn invalidate(&self) {
        if let Ok(mut g) = self.index.write() {
            *g = None;
        }
    }
    fn loaded(&self) -> Option<Arc<PackIndex>> {
        self.index.read().ok().and_then(|g| g.clone())
    }
    /// The index of `dir` (`packs/`), loaded on first use.
    fn index(&self, dir: &Path) -> Result<Arc<PackIndex>> {
        if let Some(i) = self.loaded() {
            return Ok(i);
        }
        let idx = Arc::new(PackIndex::load(dir)?);
        if let Ok(mut g) = self.index.write() {
            if let Some(i) = g.as_ref() {
                return Ok(i.clone());
            }
            *g = Some(idx.clone());
        }
        Ok(idx)
    }
    /// Add freshly installed packs to a loaded index (an unloaded one
    /// reads them from disk when it is built).
    fn add(&self, installed: &[InstalledPack]) {
        if installed.is_empty() {
            return;
        }
        if let Ok(mut g) = self.index.write() {
            if let Some(i) = g.as_ref() {
                *g = Some(Arc::new(i.with_added(installed)));
            }
        }
    }
}

/// One pack as the index knows it.
#[derive(Clone, Debug)]
struct PackFile {
    path: PathBuf,
    name: String,
    /// Why the pack is not trusted; `None` for a sound pack.
    damaged: Option<String>,
    /// The pack opened for reading, kept while there are few packs.
    file: Arc<OnceLock<File>>,
}

/// Where one tree is: 48 bytes a tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Loc {
    id: [u8; 32],
    off: u64,
    pack: u32,
    len: u32,
}

impl Loc {
    fn entry(&self) -> PackEntry {
        PackEntry {
            id: self.id,
            offset: self.off,
            len: self.len,
        }
    }
    fn span(&self) -> u64 {
        self.entry().span()
    }
}

/// Every tree of every sound pack, sorted by (id, pack): a tree stored
/// twice (a repack or an upgrade interrupted before it removed the old
/// copy) has two locations, and the first is the one read and kept.
#[derive(Debug)]
pub struct PackIndex {
    dir: PathBuf,
    packs: Vec<PackFile>,
    locs: Vec<Loc>,
    /// `fan[k]`: how many of `locs` have ids whose first two bytes are
    /// below `k` (git's pack index fan-out, by two bytes), so a lookup
    /// searches the few ids that share those bytes. Plain binary
    /// searches over every tree of every pack were 6% of a 1% rerun's
    /// CPU, each step a cache miss and a 32-byte compare.
    fan: Vec<u32>,
}

/// The fan-out bucket of an id: its first two bytes.
fn bucket(id: &[u8; 32]) -> usize {
    usize::from(u16::from_be_bytes([id[0], id[1]]))
}

/// The fan-out table of `locs` (sorted by id): see [`PackIndex::fan`].
fn fan_out(locs: &[Loc]) -> Vec<u32> {
    let mut fan = vec![0u32; (1 << 16) + 1];
    for l in locs {
        fan[bucket(&l.id) + 1] += 1;
    }
    for k in 1..fan.len() {
        fan[k] += fan[k - 1];
    }
    fan
}

/// `locs` sorted by (id, pack), and their fan-out table: placed by
/// bucket first, then each bucket (a few trees) sorted. One comparison
/// sort of every tree of every pack was 60 ms of each run's start in a
/// repository of 40 packs, and grows with every run kept.
fn sort_locs(locs: Vec<Loc>) -> (Vec<Loc>, Vec<u32>) {
    let fan = fan_out(&locs);
    let mut next: Vec<usize> = fan.iter().map(|&n| n as usize).collect();
    let mut sorted = vec![
        Loc {
            id: [0; 32],
            off: 0,
            pack: 0,
            len: 0,
        };
        locs.len()
    ];
    for l in locs {
        let b = bucket(&l.id);
        sorted[next[b]] = l;
        next[b] += 1;
    }
    for w in fan.windows(2) {
        sorted[w[0] as usize..w[1] as usize]
            .sort_unstable_by(|a, b| a.id.cmp(&b.id).then(a.pack.cmp(&b.pack)));
    }
    (sorted, fan)
}

/// Open a pack for reading without following a link or blocking on a
/// FIFO, refusing anything but a regular file.
fn open_pack(path: &Path) -> std::result::Result<File, String> {
    let f = match fsutil::open_repo_file(path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err("it is a symbolic link, not a regular file".into())
        }
        Err(e) => return Err(format!("open: {e}")),
    };
    match f.metadata() {
        Ok(m) if m.is_file() => Ok(f),
        Ok(m) => Err(format!(
            "it is {}, not a regular file",
            fsutil::describe_type(&m.file_type())
        )),
        Err(e) => Err(format!("stat: {e}")),
    }
}

/// Read and check a pack's index (header, footer, index hash, layout).
fn read_pack_index(f: &File) -> std::result::Result<Vec<PackEntry>, String> {
    let len = f.metadata().map_err(|e| format!("stat: {e}"))?.len();
    if len < pack::HEADER_LEN + pack::FOOTER_LEN {
        return Err(format!("{len} bytes: shorter than any pack (torn)"));
    }
    let mut head = [0u8; pack::HEADER_LEN as usize];
    f.read_exact_at(&mut head, 0)
        .map_err(|e| format!("read: {e}"))?;
    pack::check_header(&head).map_err(|e| e.0)?;
    let mut foot = [0u8; pack::FOOTER_LEN as usize];
    f.read_exact_at(&mut foot, len - pack::FOOTER_LEN)
        .map_err(|e| format!("read: {e}"))?;
    let footer = pack::parse_footer(len, &foot).map_err(|e| e.0)?;
    let mut index = vec![0u8; footer.index_len() as usize];
    f.read_exact_at(&mut index, footer.index_start(len))
        .map_err(|e| format!("read: {e}"))?;
    pack::parse_index(len, &footer, &index).map_err(|e| e.0)
}

/// The pack file names in `dir`, sorted (a missing folder has none).
fn pack_names(dir: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.ctx("list", dir)?;
        if let Some(name) = ent.file_name().to_str().filter(|n| is_pack_name(n)) {
            out.push(name.to_string());
        }
    }
    out.sort();
    Ok(out)
}

impl PackIndex {
    /// Read the index of every pack in `dir`.
    fn load(dir: &Path) -> Result<PackIndex> {
        let names = pack_names(dir)?;
        let keep_open = names.len() <= MAX_CACHED_FILES;
        let read: Vec<(PackFile, Vec<PackEntry>)> = names
            .into_par_iter()
            .map(|name| {
                let path = dir.join(&name);
                let file = Arc::new(OnceLock::new());
                let got = open_pack(&path).and_then(|f| {
                    let entries = read_pack_index(&f)?;
                    if keep_open {
                        let _ = file.set(f);
                    }
                    Ok(entries)
                });
                let (damaged, entries) = match got {
                    Ok(e) => (None, e),
                    Err(why) => {
                        tracing::warn!(
                            "tree pack {} is damaged ({why}): none of its trees is read; run `trove verify` to see what that loses",
                            path.display()
                        );
                        (Some(why), Vec::new())
                    }
                };
                (
                    PackFile {
                        path,
                        name,
                        damaged,
                        file,
                    },
                    entries,
                )
            })
            .collect();
        let mut packs = Vec::with_capacity(read.len());
        let mut locs = Vec::with_capacity(read.iter().map(|(_, e)| e.len()).sum());
        for (n, (p, entries)) in read.into_iter().enumerate() {
            let pack = n as u32;
            locs.extend(entries.iter().map(|e| Loc {
                id: e.id,
                off: e.offset,
                len: e.len,
                pack,
            }));
            packs.push(p);
        }
        let (locs, fan) = sort_locs(locs);
        Ok(PackIndex {
            dir: dir.to_path_buf(),
            packs,
            fan,
            locs,
        })
    }

    /// This index with `installed` added (a pack already listed, written
    /// again byte for byte, is not added twice).
    fn with_added(&self, installed: &[InstalledPack]) -> PackIndex {
        let mut packs = self.packs.clone();
        let mut fresh = Vec::new();
        for ip in installed {
            if packs.iter().any(|p| p.name == ip.name) {
                continue;
            }
            let pack = packs.len() as u32;
            packs.push(PackFile {
                path: ip.path.clone(),
                name: ip.name.clone(),
                damaged: None,
                file: Arc::new(OnceLock::new()),
            });
            fresh.extend(ip.entries.iter().map(|e| Loc {
                id: e.id,
                off: e.offset,
                len: e.len,
                pack,
            }));
        }
        fresh.sort_unstable_by_key(|l| (l.id, l.pack));
        let mut locs = Vec::with_capacity(self.locs.len() + fresh.len());
        let (mut a, mut b) = (self.locs.iter().peekable(), fresh.into_iter().peekable());
        loop {
            let take_a = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => (x.id, x.pack) <= (y.id, y.pack),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if take_a {
                locs.extend(a.next().copied());
            } else {
                locs.extend(b.next());
            }
        }
        PackIndex {
            dir: self.dir.clone(),
            packs,
            fan: fan_out(&locs),
            locs,
        }
    }

    /// The locations of `d` (none, one, or copies in several packs).
    fn find(&self, d: &Digest) -> &[Loc] {
        let k = bucket(&d.0);
        let (from, to) = (self.fan[k] as usize, self.fan[k + 1] as usize);
        let Some(bucket) = self.locs.get(from..to) else {
            return &[];
        };
        let lo = bucket.partition_point(|l| l.id < d.0);
        let hi = lo + bucket[lo..].partition_point(|l| l.id == d.0);
        &bucket[lo..hi]
    }

    pub fn has(&self, d: &Digest) -> bool {
        !self.find(d).is_empty()
    }

    fn damaged(&self) -> impl Iterator<Item = &PackFile> {
        self.packs.iter().filter(|p| p.damaged.is_some())
    }

    /// Where `d` is, for messages: `packs/<pack>/<tree id>` (the tree
    /// inside its pack, a pseudo-path), or `packs/` itself.
    fn locate(&self, d: &Digest) -> PathBuf {
        match self.find(d).first() {
            Some(l) => self.packs[l.pack as usize].path.join(d.to_hex()),
            None => self.dir.clone(),
        }
    }

    fn size(&self, d: &Digest) -> io::Result<u64> {
        self.find(d)
            .first()
            .map(|l| u64::from(l.len))
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    /// Read the entry at `l`, checked against the index.
    fn read_loc(&self, l: &Loc) -> io::Result<Vec<u8>> {
        let p = &self.packs[l.pack as usize];
        let bad = |msg: String| io::Error::new(io::ErrorKind::InvalidData, msg);
        let opened;
        let f = match p.file.get() {
            Some(f) => f,
            None => {
                opened = open_pack(&p.path)
                    .map_err(|why| bad(format!("tree pack {}: {why}", p.path.display())))?;
                &opened
            }
        };
        let mut raw = vec![0u8; l.span() as usize];
        f.read_exact_at(&mut raw, l.off).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                bad(format!(
                    "tree pack {} ends before its entry at {} (torn)",
                    p.path.display(),
                    l.off
                ))
            } else {
                e
            }
        })?;
        pack::entry_bytes(&l.entry(), &raw)
            .map_err(|e| bad(format!("tree pack {}: {e}", p.path.display())))?;
        raw.drain(..pack::ENTRY_HEAD as usize);
        Ok(raw)
    }

    /// The stored bytes of tree `d`: `NotFound` when no pack holds it and
    /// none is damaged; an `InvalidData` error naming the pack when its
    /// entry does not check out, or naming the damaged packs that may
    /// hold it.
    fn read(&self, d: &Digest) -> io::Result<Vec<u8>> {
        let mut last = None;
        for l in self.find(d) {
            match self.read_loc(l) {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            return Err(e);
        }
        let damaged: Vec<String> = self
            .damaged()
            .map(|p| {
                format!(
                    "{} ({})",
                    p.path.display(),
                    p.damaged.as_deref().unwrap_or("")
                )
            })
            .collect();
        if damaged.is_empty() {
            return Err(io::ErrorKind::NotFound.into());
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "tree {} is in no sound pack, and damaged tree pack(s) may have held it: {}",
                d.to_hex(),
                damaged.join(", ")
            ),
        ))
    }

    /// Every tree id, once each.
    fn for_each(&self, f: &mut dyn FnMut(Digest)) {
        let mut last: Option<[u8; 32]> = None;
        for l in &self.locs {
            if last != Some(l.id) {
                f(Digest(l.id));
                last = Some(l.id);
            }
        }
    }

    /// Whether the packs in the folder are the ones this index read.
    fn is_current(&self) -> bool {
        pack_names(&self.dir).is_ok_and(|names| {
            names.len() == self.packs.len()
                && names.iter().zip(&self.packs).all(|(n, p)| *n == p.name)
        })
    }
}

/// A pack being written to `tmp/`.
pub struct PackBuilder {
    tmp: PathBuf,
    out: BufWriter<File>,
    hasher: Hasher,
    len: u64,
    entries: Vec<PackEntry>,
}

/// A pack written whole to `tmp/`, not yet durable.
pub struct SealedPack {
    tmp: PathBuf,
    file: File,
    name: String,
    entries: Vec<PackEntry>,
}

/// A pack renamed into `packs/`.
pub struct InstalledPack {
    path: PathBuf,
    name: String,
    entries: Vec<PackEntry>,
}

impl PackBuilder {
    /// Start a pack in `repo`'s `tmp/`.
    pub fn create(repo: &LocalRepo) -> Result<PackBuilder> {
        let tmp = repo.tmp_dir().join(fsutil::tmp_name(TMP_PACK));
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&tmp)
            .ctx("create temporary file", &tmp)?;
        let mut b = PackBuilder {
            tmp,
            out: BufWriter::with_capacity(WRITE_BUF, f),
            hasher: Hasher::new(repo.algo()),
            len: 0,
            entries: Vec::new(),
        };
        b.write(&pack::header())?;
        Ok(b)
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.out.write_all(data).ctx("write", &self.tmp)?;
        self.hasher.update(data);
        self.len += data.len() as u64;
        Ok(())
    }

    /// Append tree `d`'s stored bytes.
    pub fn add(&mut self, d: &Digest, data: &[u8]) -> Result<()> {
        let len = u32::try_from(data.len()).map_err(|_| {
            Error::Internal(format!(
                "tree {} of {} bytes is too large for a pack",
                d.to_hex(),
                data.len()
            ))
        })?;
        let offset = self.len;
        self.write(&pack::entry_head(&d.0, len))?;
        self.write(data)?;
        self.entries.push(PackEntry {
            id: d.0,
            offset,
            len,
        });
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Write the index and footer, and name the pack by its bytes.
    pub fn seal(mut self) -> Result<SealedPack> {
        let tail = pack::encode_tail(&self.entries)
            .map_err(|e| Error::Internal(format!("{}: {e}", self.tmp.display())))?;
        self.write(&tail)?;
        let PackBuilder {
            tmp,
            out,
            hasher,
            entries,
            ..
        } = self;
        let file = out
            .into_inner()
            .map_err(|e| Error::io("write", &tmp, e.into_error()))?;
        Ok(SealedPack {
            tmp,
            file,
            name: pack_file_name(&hasher.finish()),
            entries,
        })
    }

    /// Give up on the pack (its temp file goes).
    pub fn discard(self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

impl SealedPack {
    /// Make its bytes durable.
    pub fn sync(&self) -> Result<()> {
        self.file.sync_all().ctx("fsync", &self.tmp)
    }
    pub fn trees(&self) -> usize {
        self.entries.len()
    }
}

/// Rename sealed packs into `packs/` (their bytes already durable: see
/// [`SealedPack::sync`], or a filesystem sync). A pack of the same name is
/// the same bytes, so replacing it changes nothing. The caller syncs
/// `packs/` before anything refers to their trees, then hands the result
/// to [`added`].
pub fn install(repo: &LocalRepo, packs: Vec<SealedPack>) -> Result<Vec<InstalledPack>> {
    let dir = repo.packs_dir();
    if !packs.is_empty() {
        fsutil::create_private_dir(&dir)?;
    }
    let mut out = Vec::with_capacity(packs.len());
    for p in packs {
        let dest = dir.join(&p.name);
        drop(p.file);
        if let Err(e) = fs::rename(&p.tmp, &dest) {
            let _ = fs::remove_file(&p.tmp);
            return Err(Error::io("move into store", &dest, e));
        }
        out.push(InstalledPack {
            path: dest,
            name: p.name,
            entries: p.entries,
        });
    }
    Ok(out)
}

/// Make installed packs visible to this process's lookups.
pub fn added(repo: &LocalRepo, installed: &[InstalledPack]) {
    repo.trees.add(installed);
}

/// Seal, sync, install and sync in one step (upgrade and repack, which
/// write packs outside a write session's commit).
fn install_durably(repo: &LocalRepo, b: PackBuilder) -> Result<Vec<InstalledPack>> {
    let sealed = b.seal()?;
    if let Err(e) = sealed.sync() {
        let _ = fs::remove_file(&sealed.tmp);
        return Err(e);
    }
    let done = install(repo, vec![sealed])?;
    fsutil::fsync_dir(&repo.packs_dir())?;
    Ok(done)
}

impl LocalRepo {
    /// `packs/`: the tree packs (format 2).
    pub fn packs_dir(&self) -> PathBuf {
        self.dir.join("packs")
    }

    /// The repository format as it is now (a writer may have upgraded
    /// the one the config said at open).
    pub fn format(&self) -> u32 {
        self.trees.format()
    }

    fn pack_index(&self) -> Result<Arc<PackIndex>> {
        self.trees.index(&self.packs_dir())
    }

    /// Forget a loaded pack index when the packs on disk are no longer
    /// the ones it read (another process collected or wrote since): a
    /// lock holder calls this, so what it then reads is current.
    pub fn refresh_trees(&self) {
        if let Some(i) = self.trees.loaded() {
            if !i.is_current() {
                self.trees.invalidate();
            }
        }
    }

    fn loose(&self) -> bool {
        self.format() == FORMAT_LOOSE
    }

    pub(super) fn tree_locate(&self, d: &Digest) -> PathBuf {
        let loose = self.trees_dir().join(d.fanout());
        if self.loose() && loose.exists() {
            return loose;
        }
        match self.pack_index() {
            Ok(i) if i.has(d) || !self.loose() => i.locate(d),
            _ if self.loose() => loose,
            _ => self.packs_dir(),
        }
    }

    pub(super) fn tree_read(&self, d: &Digest) -> io::Result<Vec<u8>> {
        if self.loose() {
            // A format 1 repository: its own file, else a pack an
            // interrupted upgrade already wrote.
            match fsutil::read_repo_file(&self.trees_dir().join(d.fanout())) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                other => return other,
            }
        }
        let idx = self
            .pack_index()
            .map_err(|e| io::Error::other(e.to_string()))?;
        idx.read(d)
    }

    pub(super) fn tree_has(&self, d: &Digest) -> bool {
        if self.loose() && self.trees_dir().join(d.fanout()).exists() {
            return true;
        }
        self.pack_index().is_ok_and(|i| i.has(d))
    }

    pub(super) fn tree_size(&self, d: &Digest) -> io::Result<u64> {
        if self.loose() {
            match fs::metadata(self.trees_dir().join(d.fanout())) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                other => return other.map(|m| m.len()),
            }
        }
        let idx = self
            .pack_index()
            .map_err(|e| io::Error::other(e.to_string()))?;
        idx.size(d)
    }

    pub(super) fn tree_list(&self, f: &mut dyn FnMut(Digest)) -> Result<()> {
        let idx = self.pack_index()?;
        if self.loose() {
            let mut loose = HashSet::new();
            for_each_loose(&self.trees_dir(), &mut |d| {
                loose.insert(d);
                f(d);
            })?;
            idx.for_each(&mut |d| {
                if !loose.contains(&d) {
                    f(d)
                }
            });
            return Ok(());
        }
        idx.for_each(f);
        Ok(())
    }
}

/// Call `f` with every tree of a format 1 `trees/` folder.
fn for_each_loose(top: &Path, f: &mut dyn FnMut(Digest)) -> Result<()> {
    super::fanout::for_each_fanned(top, f)
}

/// What one collection of packs did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PackGc {
    pub deleted: u64,
    pub repacked: u64,
    pub written: u64,
}

/// Remove the trees `dead` (sorted or not) from the packs: a pack left
/// with no live tree is deleted; one whose bytes are mostly dead
/// ([`REPACK_DEAD_SHARE`]) has its live trees written to a new pack,
/// made durable, and is deleted only then. Other packs keep their dead
/// trees until they cross the line. Damaged packs are never touched.
/// The caller holds the exclusive lock and has made durable the removal
/// of every record that referenced a dead tree.
pub fn collect(repo: &LocalRepo, dead: &[Digest]) -> Result<PackGc> {
    let mut report = PackGc::default();
    if repo.loose() {
        for d in dead {
            super::remove_if_present(&repo.trees_dir().join(d.fanout()), "remove tree")?;
        }
    }
    if dead.is_empty() {
        return Ok(report);
    }
    // Decide from what is on disk now, not from a cached index.
    repo.trees.invalidate();
    let idx = repo.pack_index()?;
    let mut dead: Vec<[u8; 32]> = dead.iter().map(|d| d.0).collect();
    dead.sort_unstable();
    dead.dedup();
    let n = idx.packs.len();
    let mut total = vec![0u64; n];
    let mut live = vec![0u64; n];
    let mut last: Option<[u8; 32]> = None;
    for l in &idx.locs {
        let first = last != Some(l.id);
        last = Some(l.id);
        total[l.pack as usize] += l.span();
        if first && dead.binary_search(&l.id).is_err() {
            live[l.pack as usize] += l.span();
        }
    }
    let mut remove: Vec<usize> = Vec::new();
    let mut rewrite: Vec<usize> = Vec::new();
    for (p, pf) in idx.packs.iter().enumerate() {
        if pf.damaged.is_some() || total[p] == 0 {
            continue;
        }
        if live[p] == 0 {
            remove.push(p);
        } else if (total[p] - live[p]) as f64 > REPACK_DEAD_SHARE * total[p] as f64 {
            rewrite.push(p);
        }
    }
    // The live trees of the packs to rewrite, pack by pack in their order.
    let mut new_names: HashSet<String> = HashSet::new();
    if !rewrite.is_empty() {
        let mut rewritten = vec![false; n];
        for p in &rewrite {
            rewritten[*p] = true;
        }
        let mut keep: Vec<&Loc> = Vec::new();
        let mut last: Option<[u8; 32]> = None;
        for l in &idx.locs {
            let first = last != Some(l.id);
            last = Some(l.id);
            if first && rewritten[l.pack as usize] && dead.binary_search(&l.id).is_err() {
                keep.push(l);
            }
        }
        keep.sort_unstable_by_key(|l| (l.pack, l.off));
        let mut b: Option<PackBuilder> = None;
        for l in keep {
            let data = idx
                .read_loc(l)
                .map_err(|e| Error::io("read", &idx.packs[l.pack as usize].path, e))?;
            let mut builder = match b.take() {
                Some(x) => x,
                None => PackBuilder::create(repo)?,
            };
            builder.add(&Digest(l.id), &data)?;
            if builder.len() >= PACK_TARGET {
                for ip in install_durably(repo, builder)? {
                    new_names.insert(ip.name);
                    report.written += 1;
                }
            } else {
                b = Some(builder);
            }
        }
        if let Some(last) = b.take() {
            for ip in install_durably(repo, last)? {
                new_names.insert(ip.name);
                report.written += 1;
            }
        }
    }
    // Only now, with every live tree durable in a pack that stays, the
    // old packs go. A new pack may have the name (so the bytes) of one
    // about to go: it stays.
    let mut removed_any = false;
    for (p, why) in remove
        .iter()
        .map(|p| (*p, "no live tree"))
        .chain(rewrite.iter().map(|p| (*p, "repacked")))
    {
        let pf = &idx.packs[p];
        if new_names.contains(&pf.name) {
            continue;
        }
        if super::remove_if_present(&pf.path, "remove tree pack")? {
            removed_any = true;
            tracing::info!(
                "GC delete tree pack {} ({why}: {} of {} bytes dead)",
                pf.name,
                total[p] - live[p],
                total[p]
            );
        }
        if why == "repacked" {
            report.repacked += 1;
        } else {
            report.deleted += 1;
        }
    }
    if removed_any {
        fsutil::fsync_dir(&repo.packs_dir())?;
    }
    repo.trees.invalidate();
    Ok(report)
}

/// Bring the repository to format 2 (the caller holds the exclusive lock
/// and has emptied `tmp/`). A format 1 repository has its loose trees
/// copied into packs (at most [`PACK_TARGET`] bytes each, each made
/// durable as it is finished), then its config says format 2, then
/// `trees/` goes. A kill at any point leaves a repository the next run
/// reads correctly and finishes upgrading: until the config is replaced
/// every tree is still in `trees/` (a tree already in a sound pack is
/// not copied again); after, every tree is in a pack and `trees/` is
/// garbage, removed here. Returns whether anything was done.
pub fn upgrade(repo: &LocalRepo) -> Result<bool> {
    let loose_dir = repo.trees_dir();
    if repo.format() == FORMAT_PACKED {
        if fs::symlink_metadata(&loose_dir).is_ok() {
            fsutil::remove_any(&loose_dir)?;
            fsutil::fsync_dir(&repo.dir)?;
            tracing::info!(
                "removed {} left by an interrupted upgrade to format 2 (its trees are in packs)",
                loose_dir.display()
            );
            return Ok(true);
        }
        return Ok(false);
    }
    if repo.format() != FORMAT_LOOSE {
        return Ok(false);
    }
    fsutil::create_private_dir(&repo.packs_dir())?;
    let idx = repo.pack_index()?;
    let (mut moved, mut packs, mut skipped) = (0u64, 0u64, 0u64);
    let mut b: Option<PackBuilder> = None;
    let mut fans: Vec<(String, PathBuf)> = match fs::read_dir(&loose_dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path())))
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io("list", &loose_dir, e)),
    };
    fans.sort();
    for (fan, dir) in fans {
        let mut trees: Vec<(Digest, PathBuf)> = Vec::new();
        for ent in fs::read_dir(&dir).ctx("list", &dir)? {
            let ent = ent.ctx("list", &dir)?;
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(d) = Digest::from_hex(name).filter(|_| name.starts_with(&fan)) {
                trees.push((d, ent.path()));
            }
        }
        trees.sort();
        for (d, path) in trees {
            if idx.has(&d) {
                continue;
            }
            // Copied as stored: a damaged tree stays damaged (and verify
            // goes on saying so), never "fixed". Only a tree that is not a
            // file at all (a symbolic link or a folder in its place) has no
            // bytes to carry; any other failure to read (EIO, ENOMEM…)
            // stops the upgrade before anything is removed, to be retried.
            let data = match fsutil::read_repo_file(&path) {
                Ok(data) => data,
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::EISDIR))
                        || e.kind() == io::ErrorKind::NotFound =>
                {
                    tracing::warn!(
                        "tree {} is not a file ({e}): not carried into the packs; `trove verify` reports it missing",
                        path.display()
                    );
                    skipped += 1;
                    continue;
                }
                Err(e) => return Err(Error::io("read", &path, e)),
            };
            let mut builder = match b.take() {
                Some(x) => x,
                None => PackBuilder::create(repo)?,
            };
            builder.add(&d, &data)?;
            moved += 1;
            if builder.len() >= PACK_TARGET {
                install_durably(repo, builder)?;
                packs += 1;
            } else {
                b = Some(builder);
            }
        }
    }
    if let Some(last) = b.take() {
        install_durably(repo, last)?;
        packs += 1;
    }
    // Every tree is durable in a pack: the config may now say format 2.
    let config = super::RepoConfig {
        format: FORMAT_PACKED,
        ..repo.config.clone()
    };
    let json = serde_json::to_vec_pretty(&config).map_err(|e| Error::Internal(e.to_string()))?;
    fsutil::atomic_write(&repo.tmp_dir(), &repo.dir.join("config"), &json, 0o600)?;
    repo.trees.set_format(FORMAT_PACKED);
    repo.trees.invalidate();
    if fs::symlink_metadata(&loose_dir).is_ok() {
        fsutil::remove_any(&loose_dir)?;
        fsutil::fsync_dir(&repo.dir)?;
    }
    tracing::info!(
        "upgraded the repository to format 2: {moved} tree objects moved from {} into {packs} pack(s) in {}{}",
        loose_dir.display(),
        repo.packs_dir().display(),
        if skipped > 0 {
            format!(" ({skipped} unreadable, left out)")
        } else {
            String::new()
        }
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::HashAlgo;
    use crate::repo::{RepoRead, RepoWrite, StoreKind};

    type R = std::result::Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn fan_out_lookups_find_exactly_what_a_scan_finds() {
        // Ids sharing their first two bytes (and the extremes 0x0000 and
        // 0xffff), some stored in two packs.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut locs = Vec::new();
        for i in 0..5000u32 {
            let mut id = [0u8; 32];
            for c in id.chunks_mut(8) {
                c.copy_from_slice(&next().to_le_bytes());
            }
            match i % 5 {
                0 => id[..2].copy_from_slice(&[0, 0]),
                1 => id[..2].copy_from_slice(&[0xff, 0xff]),
                2 => id[..2].copy_from_slice(&[0x12, 0x34]),
                _ => {}
            }
            for pack in 0..(1 + i % 3 / 2) {
                locs.push(Loc {
                    id,
                    off: u64::from(i),
                    pack,
                    len: i,
                });
            }
        }
        let (sorted, fan) = sort_locs(locs.clone());
        locs.sort_unstable_by_key(|l| (l.id, l.pack));
        assert_eq!(
            sorted, locs,
            "bucket placement sorts like a comparison sort"
        );
        let idx = PackIndex {
            dir: PathBuf::new(),
            packs: Vec::new(),
            fan,
            locs: locs.clone(),
        };
        let mut probes: Vec<[u8; 32]> = locs.iter().step_by(7).map(|l| l.id).collect();
        for l in locs.iter().step_by(11) {
            let mut near = l.id;
            near[31] ^= 1;
            probes.push(near);
        }
        probes.extend([[0u8; 32], [0xff; 32]]);
        for p in probes {
            let want: Vec<Loc> = locs.iter().filter(|l| l.id == p).copied().collect();
            assert_eq!(idx.find(&Digest(p)), want.as_slice(), "{p:?}");
        }
    }

    fn repo() -> std::result::Result<(tempfile::TempDir, LocalRepo), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let repo = LocalRepo::init(&dir.path().join("b"), HashAlgo::Blake3)?;
        Ok((dir, repo))
    }

    fn put(repo: &LocalRepo, trees: &[(Digest, Vec<u8>)]) -> Result<()> {
        let w = repo.writer();
        for (d, data) in trees {
            let data = data.clone();
            w.put_with(StoreKind::Tree, *d, || Ok(data.clone()))?;
        }
        w.commit()
    }

    fn d(n: u8) -> Digest {
        Digest([n; 32])
    }

    #[test]
    fn a_session_writes_one_pack_and_every_tree_reads_back() -> R {
        let (_t, repo) = repo()?;
        let trees: Vec<(Digest, Vec<u8>)> = (1..=20).map(|n| (d(n), vec![n; n as usize])).collect();
        put(&repo, &trees)?;
        assert_eq!(pack_names(&repo.packs_dir())?.len(), 1);
        for (id, data) in &trees {
            assert!(repo.has(StoreKind::Tree, id));
            assert_eq!(&repo.read(StoreKind::Tree, id)?, data);
            assert_eq!(repo.size(StoreKind::Tree, id)?, data.len() as u64);
        }
        // A fresh handle reads the packs from disk.
        let again = LocalRepo::open(&repo.root)?;
        for (id, data) in &trees {
            assert_eq!(&again.read(StoreKind::Tree, id)?, data);
        }
        let listed = crate::repo::list_sorted(&again, StoreKind::Tree)?;
        assert_eq!(listed, trees.iter().map(|(i, _)| *i).collect::<Vec<_>>());
        // Stored again: nothing new is written.
        put(&repo, &trees[..3])?;
        assert_eq!(pack_names(&repo.packs_dir())?.len(), 1);
        Ok(())
    }

    #[test]
    fn a_damaged_pack_is_named_and_never_served() -> R {
        let (_t, repo) = repo()?;
        put(&repo, &[(d(1), b"one".to_vec()), (d(2), b"two".to_vec())])?;
        let name = pack_names(&repo.packs_dir())?.remove(0);
        let path = repo.packs_dir().join(&name);
        let mut bytes = fs::read(&path)?;
        let n = bytes.len();
        bytes[n - 50] ^= 1; // inside the index
        fs::remove_file(&path)?;
        fs::write(&path, &bytes)?;
        let fresh = LocalRepo::open(&repo.root)?;
        assert!(!fresh.has(StoreKind::Tree, &d(1)));
        let e = fresh
            .read(StoreKind::Tree, &d(1))
            .err()
            .ok_or("a tree of a damaged pack was read")?;
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains(&name), "{e}");
        // A collection leaves it alone.
        let w = fresh.writer();
        w.remove_all(StoreKind::Tree, &[d(1), d(2)])?;
        assert!(path.exists());
        Ok(())
    }

    #[test]
    fn an_entry_that_does_not_match_its_index_is_refused() -> R {
        let (_t, repo) = repo()?;
        put(&repo, &[(d(1), b"one".to_vec()), (d(2), b"two".to_vec())])?;
        let name = pack_names(&repo.packs_dir())?.remove(0);
        let path = repo.packs_dir().join(&name);
        let mut bytes = fs::read(&path)?;
        // The second entry's id, in its frame.
        let at = (pack::HEADER_LEN + pack::ENTRY_HEAD + 3 + 4) as usize;
        bytes[at] ^= 1;
        fs::remove_file(&path)?;
        fs::write(&path, &bytes)?;
        let fresh = LocalRepo::open(&repo.root)?;
        assert_eq!(fresh.read(StoreKind::Tree, &d(1))?, b"one");
        let e = fresh
            .read(StoreKind::Tree, &d(2))
            .err()
            .ok_or("a damaged entry was read")?;
        assert!(e.to_string().contains(&name), "{e}");
        Ok(())
    }

    #[test]
    fn collection_deletes_dead_packs_repacks_mostly_dead_ones_and_keeps_the_rest() -> R {
        let (_t, repo) = repo()?;
        let big = |n: u8| (d(n), vec![n; 1000]);
        put(&repo, &[big(1), big(2)])?; // pack A: all dead below
        put(&repo, &[big(3), big(4), big(5)])?; // pack B: 2 of 3 dead → repacked
        put(&repo, &[big(6), big(7), big(8)])?; // pack C: 1 of 3 dead → kept
        let before = pack_names(&repo.packs_dir())?;
        assert_eq!(before.len(), 3);
        let w = repo.writer();
        w.remove_all(StoreKind::Tree, &[d(1), d(2), d(3), d(4), d(6)])?;
        let after = pack_names(&repo.packs_dir())?;
        assert_eq!(after.len(), 2, "{after:?}");
        for n in [5u8, 7, 8] {
            assert_eq!(repo.read(StoreKind::Tree, &d(n))?, vec![n; 1000]);
        }
        for n in [1u8, 2, 3, 4] {
            assert!(!repo.has(StoreKind::Tree, &d(n)), "{n}");
        }
        // Kept in a pack that did not cross the line.
        assert!(repo.has(StoreKind::Tree, &d(6)));
        Ok(())
    }

    #[test]
    fn an_upgrade_packs_every_loose_tree_then_says_format_2_then_drops_trees() -> R {
        let (_t, repo) = repo()?;
        // The repository as format 1 wrote it: config, trees/ of files.
        let cfg = super::super::RepoConfig {
            format: FORMAT_LOOSE,
            ..repo.config.clone()
        };
        let cfg_path = repo.dir.join("config");
        fs::remove_file(&cfg_path)?;
        fs::write(&cfg_path, serde_json::to_vec(&cfg)?)?;
        fs::remove_dir(repo.packs_dir())?;
        let trees: Vec<(Digest, Vec<u8>)> = (1..=40).map(|n| (d(n), vec![n; 100])).collect();
        for (id, data) in &trees {
            let p = repo.trees_dir().join(id.fanout());
            fs::create_dir_all(p.parent().ok_or("no parent")?)?;
            fs::write(&p, data)?;
        }
        let v1 = LocalRepo::open(&repo.root)?;
        assert_eq!(v1.format(), FORMAT_LOOSE);
        for (id, data) in &trees {
            assert_eq!(&v1.read(StoreKind::Tree, id)?, data);
        }
        assert!(upgrade(&v1)?);
        assert_eq!(v1.format(), FORMAT_PACKED);
        assert!(!v1.trees_dir().exists());
        assert_eq!(pack_names(&v1.packs_dir())?.len(), 1);
        let v2 = LocalRepo::open(&repo.root)?;
        assert_eq!(v2.config.format, FORMAT_PACKED);
        for (id, data) in &trees {
            assert_eq!(&v1.read(StoreKind::Tree, id)?, data);
            assert_eq!(&v2.read(StoreKind::Tree, id)?, data);
        }
        assert!(!upgrade(&v2)?, "nothing left to do");
        Ok(())
    }

    #[test]
    fn a_tree_in_two_packs_survives_collection_of_either() -> R {
        let (_t, repo) = repo()?;
        put(&repo, &[(d(1), vec![1; 500]), (d(2), vec![2; 500])])?;
        // The same tree written again by another session (as an
        // interrupted repack leaves it).
        let b = {
            let mut b = PackBuilder::create(&repo)?;
            b.add(&d(1), &[1; 500])?;
            b
        };
        install_durably(&repo, b)?;
        repo.trees.invalidate();
        assert_eq!(pack_names(&repo.packs_dir())?.len(), 2);
        let w = repo.writer();
        w.remove_all(StoreKind::Tree, &[d(2)])?;
        w.remove_all(StoreKind::Tree, &[d(2)])?;
        assert_eq!(repo.read(StoreKind::Tree, &d(1))?, vec![1; 500]);
        assert_eq!(pack_names(&repo.packs_dir())?.len(), 1);
        Ok(())
    }
}
