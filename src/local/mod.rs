//! The local repository: `.trove/` inside a backup root, the fast,
//! browsable, hardlinked copy. This module owns the layout (which file
//! lives where: the only code that builds a `.trove` path), creation and
//! opening, the repository config, the marker and the pinned list's file;
//! its submodules own the loose object store and ingest ([`objects`]), the
//! tree store ([`trees`], with the pack codec in [`pack`]), the stat cache
//! ([`cache`]) and the engine lock ([`lock`]).
//!
//! [`LocalRepo`] implements [`crate::repo::RepoRead`]; a write session
//! ([`objects::Batch`], from [`LocalRepo::writer`]) implements
//! [`crate::repo::RepoWrite`]. [`LocalRepo::object_path`] — the one thing a
//! hardlink needs — is for the browsable tree alone; everything else above
//! this module reads and writes through the traits. Nothing here knows
//! about plans, the browsable layout or the command line.

pub mod cache;
mod fanout;
pub mod lock;
pub mod objects;
pub mod pack;
pub mod trees;

use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::id::{Digest, HashAlgo, ObjectId, SnapshotId, TreeId};
use crate::model::{now_ns, ArchiveBounds};
use crate::repo::StoreKind;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `cache/archive-v1`: magic and version, the snapshot's id, the most
/// versions of one path, a flag and the oldest deleted time, then a BLAKE3
/// of all that.
const BOUNDS_MAGIC: &[u8; 5] = b"trvB\x01";
const BOUNDS_LEN: usize = 5 + 32 + 8 + 1 + 8;

/// The folders of `.trove` that hold part of every snapshot, and what,
/// in a repository of `format`: the trees are in `trees/` (format 1) or
/// `packs/` (format 2).
fn layout_holding_data(format: u32) -> [(&'static str, &'static str); 3] {
    let trees = if format == trees::FORMAT_LOOSE {
        "trees"
    } else {
        "packs"
    };
    [
        ("objects", "the file contents"),
        (trees, "the snapshots' folder listings"),
        ("snapshots", "the snapshot records"),
    ]
}

/// The folders a writer needs, in a repository of `format`.
fn layout_of_writer(format: u32) -> [&'static str; 6] {
    let [_, (trees, _), _] = layout_holding_data(format);
    ["objects", trees, "snapshots", "cache", "tmp", "logs"]
}

/// The repository format this build writes (and the newest it reads;
/// format 1, loose trees, is read too and upgraded by the first writer).
pub const REPO_FORMAT: u32 = trees::FORMAT_PACKED;

/// `.trove/config`: small, JSON, human-readable on purpose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub format: u32,
    pub id: String,
    pub hash: HashAlgo,
}

impl RepoConfig {
    /// Decode `.trove/config` (untrusted bytes: never panics).
    pub fn parse(data: &[u8], path: &Path) -> Result<RepoConfig> {
        let config: RepoConfig = serde_json::from_slice(data)
            .map_err(|e| Error::corrupt("repository config", path, e.to_string()))?;
        if !(trees::FORMAT_LOOSE..=REPO_FORMAT).contains(&config.format) {
            return Err(Error::Version {
                path: path.to_path_buf(),
                found: config.format,
                supported: REPO_FORMAT,
            });
        }
        // The id is written as 32 lowercase hex digits and never changes:
        // anything else is damage (a flipped bit in it passed unseen).
        if config.id.len() != 32
            || !config
                .id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Error::corrupt(
                "repository config",
                path,
                format!("its id {:?} is not 32 lowercase hex digits", config.id),
            ));
        }
        Ok(config)
    }
}

#[derive(Clone, Debug)]
pub struct LocalRepo {
    /// The backup root (the browsable tree lives here).
    pub root: PathBuf,
    /// `root/.trove`.
    pub dir: PathBuf,
    /// The config as it was when the repository was opened (its format
    /// may since have been upgraded: [`LocalRepo::format`]).
    pub config: RepoConfig,
    /// The tree store's format and pack index, shared by every clone.
    trees: Arc<trees::TreeStore>,
}

impl LocalRepo {
    pub fn dir_of(root: &Path) -> PathBuf {
        root.join(".trove")
    }

    pub fn exists(root: &Path) -> bool {
        Self::dir_of(root).join("config").is_file()
    }

    /// Create a repository at `root` (creating `root` 0700 if needed). An
    /// existing repository is opened instead, after checking the algorithm.
    pub fn init(root: &Path, algo: HashAlgo) -> Result<LocalRepo> {
        if Self::exists(root) {
            let repo = Self::open_writable(root)?;
            repo.check_algo(Some(algo))?;
            return Ok(repo);
        }
        Self::check_can_init(root)?;
        fsutil::create_private_dir(root)?;
        let dir = Self::dir_of(root);
        fsutil::create_private_dir(&dir)?;
        for sub in layout_of_writer(REPO_FORMAT) {
            fsutil::create_private_dir(&dir.join(sub))?;
        }
        // A repository id only has to be unique, not secret: hash the
        // creation time, pid and path.
        let mut seed = Vec::new();
        seed.extend_from_slice(&now_ns().to_le_bytes());
        seed.extend_from_slice(&std::process::id().to_le_bytes());
        seed.extend_from_slice(crate::pathbytes::os_bytes(root.as_os_str()));
        let id = crate::hash::hash_bytes(HashAlgo::Blake3, &seed).to_hex();
        let config = RepoConfig {
            format: REPO_FORMAT,
            id: id[..32].to_string(),
            hash: algo,
        };
        let json =
            serde_json::to_vec_pretty(&config).map_err(|e| Error::Internal(e.to_string()))?;
        // The config is written last: a crash before this point leaves a
        // directory that is not yet a repository, and init can run again.
        fsutil::atomic_write(&dir.join("tmp"), &dir.join("config"), &json, 0o600)?;
        fsutil::fsync_dir(root)?;
        Ok(LocalRepo {
            root: root.to_path_buf(),
            dir,
            trees: Arc::new(trees::TreeStore::new(config.format)),
            config,
        })
    }

    /// A repository is only created in a new or empty directory, so the
    /// browsable tree never mixes with (or moves aside) a user's files.
    pub fn check_can_init(root: &Path) -> Result<()> {
        if Self::exists(root) {
            return Ok(());
        }
        // A config that is there but not a regular file, or gone from a
        // `.trove` that holds data, is a damaged repository: say so (exit
        // 1), rather than "not a repository" or a new config over old data.
        let dir = Self::dir_of(root);
        if fs::symlink_metadata(dir.join("config")).is_ok() || Self::holds_data(&dir) {
            return Self::read_config(root).map(|_| ());
        }
        if let Ok(rd) = fs::read_dir(root) {
            // `.trove` alone may exist (a log directory created before init).
            let foreign = rd.filter_map(|e| e.ok()).any(|e| e.file_name() != ".trove");
            if foreign {
                return Err(Error::Usage(format!(
                    "{} is not empty and not a trove repository: choose a new or empty directory as the backup root",
                    root.display()
                )));
            }
        }
        Ok(())
    }

    /// Open a repository for reading: nothing is created. A folder that
    /// holds part of every snapshot (objects, trees, records) missing is
    /// damage, reported as such; the others may be absent.
    pub fn open(root: &Path) -> Result<LocalRepo> {
        let repo = Self::read_config(root)?;
        for (sub, what) in layout_holding_data(repo.format()) {
            let p = repo.dir.join(sub);
            if !p.is_dir() {
                return Err(Error::MissingFolder { path: p, what });
            }
        }
        Ok(repo)
    }

    /// Open a repository to write to it: the layout's missing folders are
    /// created (a user may have removed them by hand; a missing one that
    /// held data is said so in the log).
    pub fn open_writable(root: &Path) -> Result<LocalRepo> {
        let repo = Self::read_config(root)?;
        let holding = layout_holding_data(repo.format());
        for sub in layout_of_writer(repo.format()) {
            let p = repo.dir.join(sub);
            if !p.is_dir() {
                if let Some((_, what)) = holding.iter().find(|(s, _)| *s == sub) {
                    tracing::warn!(
                        "repository folder {} was missing (it holds {what}): created empty; run `trove verify` to see what is lost",
                        p.display()
                    );
                }
                fsutil::create_private_dir(&p)?;
            }
        }
        Ok(repo)
    }

    /// Whether `.trove` holds any snapshot record or object: the data a
    /// missing config must not be allowed to orphan.
    fn holds_data(dir: &Path) -> bool {
        ["snapshots", "objects"]
            .iter()
            .any(|sub| fs::read_dir(dir.join(sub)).is_ok_and(|mut rd| rd.next().is_some()))
    }

    /// Whether the object store holds no object at all: every entry of
    /// `objects/` is an empty fan-out folder. Anything else, and any error
    /// while looking, counts as not empty (the answer may only ever cost
    /// a look-up, never skip one that was needed).
    pub fn objects_empty(&self) -> bool {
        let dir = self.objects_dir();
        let Ok(rd) = fs::read_dir(&dir) else {
            return false;
        };
        for ent in rd {
            let Ok(ent) = ent else {
                return false;
            };
            let empty = ent.file_type().is_ok_and(|t| t.is_dir())
                && fs::read_dir(ent.path()).is_ok_and(|mut sub| sub.next().is_none());
            if !empty {
                return false;
            }
        }
        true
    }

    fn read_config(root: &Path) -> Result<LocalRepo> {
        let dir = Self::dir_of(root);
        let cfg_path = dir.join("config");
        let data = match fsutil::read_repo_file(&cfg_path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if Self::holds_data(&dir) {
                    return Err(Error::MissingConfig {
                        path: cfg_path,
                        dir,
                    });
                }
                return Err(Error::NotARepository {
                    path: root.to_path_buf(),
                });
            }
            Err(e) => return Err(Error::io("read", &cfg_path, e)),
        };
        let config = RepoConfig::parse(&data, &cfg_path)?;
        Ok(LocalRepo {
            root: root.to_path_buf(),
            dir,
            trees: Arc::new(trees::TreeStore::new(config.format)),
            config,
        })
    }

    /// Refuse a configuration whose hash algorithm disagrees with the one
    /// the repository was created with.
    pub fn check_algo(&self, wanted: Option<HashAlgo>) -> Result<()> {
        match wanted {
            Some(w) if w != self.config.hash => Err(Error::HashMismatch {
                path: self.root.clone(),
                repo: self.config.hash.to_string(),
                wanted: w.to_string(),
            }),
            _ => Ok(()),
        }
    }

    pub fn algo(&self) -> HashAlgo {
        self.config.hash
    }
    pub fn objects_dir(&self) -> PathBuf {
        self.dir.join("objects")
    }
    /// `trees/`: one file per tree (format 1 only; see [`trees`]).
    pub fn trees_dir(&self) -> PathBuf {
        self.dir.join("trees")
    }
    pub fn snapshots_dir(&self) -> PathBuf {
        self.dir.join("snapshots")
    }
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }
    /// `cache/materialized`: the id of the snapshot the browsable tree
    /// shows (written by the materializer after each update).
    pub fn marker_path(&self) -> PathBuf {
        self.cache_dir().join("materialized")
    }
    /// The snapshot the browsable tree shows, as its marker says; `None`
    /// when the marker is absent or unreadable (it is disposable).
    pub fn read_marker(&self) -> Option<SnapshotId> {
        let s = fsutil::read_repo_file(&self.marker_path()).ok()?;
        SnapshotId::from_hex(String::from_utf8_lossy(&s).trim())
    }
    /// Record durably that the browsable tree shows snapshot `id`.
    pub fn write_marker(&self, id: &SnapshotId) -> Result<()> {
        fsutil::atomic_write(
            &self.tmp_dir(),
            &self.marker_path(),
            format!("{}\n", id.to_hex()).as_bytes(),
            0o600,
        )
    }
    /// Forget which snapshot the browsable tree shows: the next command
    /// checks the whole tree against the latest snapshot.
    pub fn clear_marker(&self) -> Result<()> {
        let p = self.marker_path();
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &p, e)),
        }
    }
    /// `cache/archive-v1`: the bounds of a snapshot's archive (see
    /// [`crate::model::ArchiveBounds`]).
    fn archive_bounds_path(&self) -> PathBuf {
        self.cache_dir().join("archive-v1")
    }
    /// The bounds of snapshot `id`'s archive, if the file names that
    /// snapshot and is whole; `None` otherwise (it is disposable: without
    /// it a run reads the whole archive and writes it again).
    pub fn read_archive_bounds(&self, id: &SnapshotId) -> Option<ArchiveBounds> {
        let data = fsutil::read_repo_file(&self.archive_bounds_path()).ok()?;
        let (body, sum) = data.split_at_checked(BOUNDS_LEN)?;
        if sum != blake3::hash(body).as_bytes() || !body.starts_with(BOUNDS_MAGIC) {
            return None;
        }
        let rest = &body[BOUNDS_MAGIC.len()..];
        let (snap, rest) = rest.split_at_checked(32)?;
        if snap != id.0 .0.as_slice() {
            return None;
        }
        let most_versions = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        let oldest = i64::from_le_bytes(rest.get(9..17)?.try_into().ok()?);
        Some(ArchiveBounds {
            most_versions,
            oldest_deleted_ns: (rest[8] == 1).then_some(oldest),
        })
    }
    /// Record the bounds of snapshot `id`'s archive. Not synced: a file a
    /// crash left torn, or one naming another snapshot, is ignored.
    pub fn write_archive_bounds(&self, id: &SnapshotId, b: &ArchiveBounds) -> Result<()> {
        let mut body = Vec::with_capacity(BOUNDS_LEN + 32);
        body.extend_from_slice(BOUNDS_MAGIC);
        body.extend_from_slice(&id.0 .0);
        body.extend_from_slice(&b.most_versions.to_le_bytes());
        body.push(u8::from(b.oldest_deleted_ns.is_some()));
        body.extend_from_slice(&b.oldest_deleted_ns.unwrap_or(0).to_le_bytes());
        let sum = blake3::hash(&body);
        body.extend_from_slice(sum.as_bytes());
        fsutil::replace_file(
            &self.tmp_dir(),
            &self.archive_bounds_path(),
            &body,
            0o600,
            false,
        )
    }
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }
    pub fn logs_dir(&self) -> PathBuf {
        Self::logs_dir_of(&self.root)
    }
    /// Where the run logs of the repository at `root` go, before it is
    /// opened (a run logs from its first line, even one that creates it).
    pub fn logs_dir_of(root: &Path) -> PathBuf {
        Self::dir_of(root).join("logs")
    }
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join("lock")
    }
    pub fn object_path(&self, id: &ObjectId) -> PathBuf {
        self.objects_dir().join(id.fanout())
    }
    /// Where a tree is stored, for messages: its own file in a format 1
    /// repository; in a format 2 one the pack holding it followed by the
    /// tree's id (`packs/<pack>.pack/<id>`, a pseudo-path), or `packs/`
    /// when no pack does.
    pub fn tree_path(&self, id: &TreeId) -> PathBuf {
        self.tree_locate(&id.0)
    }
    /// Where `d` is (or would be) stored: for objects, their file.
    pub fn digest_path(&self, kind: StoreKind, d: &Digest) -> PathBuf {
        match kind {
            StoreKind::Object => self.objects_dir().join(d.fanout()),
            StoreKind::Tree => self.tree_locate(d),
        }
    }

    /// Prepare a write session (the caller holds the exclusive lock):
    /// remove leftovers of interrupted writes, then bring a repository of
    /// an older format up to this one ([`trees::upgrade`]; a no-op once
    /// it is done).
    pub fn begin_write(&self) -> Result<()> {
        self.clean_tmp()?;
        trees::upgrade(self)?;
        Ok(())
    }

    /// Remove leftovers of interrupted writes. Only a writer holding the
    /// exclusive lock may call this: nobody else can be writing there.
    ///
    /// A `tmp/` that grew large is then replaced by a fresh one: ext4
    /// never shrinks a directory, so the one a first backup queued 100,000
    /// contents in stays 10 MB of blocks, and every later listing of it
    /// (each run lists it to clean it and to commit) read all of them — a
    /// quarter of a one-change watch run's CPU.
    pub fn clean_tmp(&self) -> Result<()> {
        let tmp = self.tmp_dir();
        let rd = fs::read_dir(&tmp).ctx("list", &tmp)?;
        for ent in rd {
            let ent = ent.ctx("list", &tmp)?;
            fsutil::remove_any(&ent.path())?;
        }
        let grown = fs::symlink_metadata(&tmp).is_ok_and(|m| m.len() > TMP_SHRINK_AT);
        if grown {
            // A rename onto an empty directory replaces it in one step, so
            // `tmp/` exists at every instant; a crash leaves at most an
            // empty `tmp.new/`, which the next replacement reuses. Nothing
            // is synced: the old and the new `tmp/` are both empty.
            let fresh = self.dir.join(TMP_FRESH);
            fsutil::remove_any(&fresh)?;
            fsutil::create_private_dir(&fresh)?;
            fs::rename(&fresh, &tmp).ctx("replace", &tmp)?;
        }
        Ok(())
    }
}

/// A `tmp/` whose directory blocks span more than this once emptied
/// (about 3,000 names on ext4) is replaced by a fresh one.
pub(crate) const TMP_SHRINK_AT: u64 = 256 * 1024;
/// The fresh `tmp/` while it is made (beside `tmp/`, so a rename can
/// replace it).
const TMP_FRESH: &str = "tmp.new";

/// `pinned`: the snapshots besides the latest whose content is kept
/// complete (one id a line; see `gc`).
const PINNED: &str = "pinned";

/// `quarantine/`: what a repair moved aside (damaged objects under
/// `objects/`, foreign browsable entries under one folder per run).
const QUARANTINE: &str = "quarantine";

impl LocalRepo {
    /// A write session on this repository (the caller holds the
    /// exclusive lock): what every writer above the boundary writes to.
    pub fn writer(&self) -> objects::Batch<'_> {
        objects::Batch::new(self)
    }
    /// The quarantine folder of one materializer run, relative to `dir`.
    pub fn quarantine_of_run(stamp: &str) -> Vec<u8> {
        format!("{QUARANTINE}/{stamp}").into_bytes()
    }
    /// Where damaged objects are moved aside, and its parent.
    pub fn quarantine_dirs(&self) -> (PathBuf, PathBuf) {
        let q = self.dir.join(QUARANTINE);
        (q.join("objects"), q)
    }
    pub fn pins_path(&self) -> PathBuf {
        self.dir.join(PINNED)
    }
    pub fn snapshot_path(&self, id: &SnapshotId) -> PathBuf {
        self.snapshots_dir().join(id.to_hex())
    }
}

impl crate::repo::RepoRead for LocalRepo {
    fn algo(&self) -> HashAlgo {
        self.config.hash
    }
    fn locate(&self, kind: StoreKind, d: &Digest) -> PathBuf {
        self.digest_path(kind, d)
    }
    fn locate_store(&self, kind: StoreKind) -> PathBuf {
        match kind {
            StoreKind::Object => self.objects_dir(),
            StoreKind::Tree if self.format() == trees::FORMAT_LOOSE => self.trees_dir(),
            StoreKind::Tree => self.packs_dir(),
        }
    }
    fn locate_snapshot(&self, id: &SnapshotId) -> PathBuf {
        self.snapshot_path(id)
    }
    fn locate_snapshots(&self) -> PathBuf {
        self.snapshots_dir()
    }
    fn locate_pins(&self) -> PathBuf {
        self.pins_path()
    }
    fn locate_marker(&self) -> PathBuf {
        self.marker_path()
    }
    fn read(&self, kind: StoreKind, d: &Digest) -> std::io::Result<Vec<u8>> {
        match kind {
            StoreKind::Object => fsutil::read_repo_file(&self.object_path(&ObjectId(*d))),
            StoreKind::Tree => self.tree_read(d),
        }
    }
    fn has(&self, kind: StoreKind, d: &Digest) -> bool {
        match kind {
            StoreKind::Object => self.object_path(&ObjectId(*d)).exists(),
            StoreKind::Tree => self.tree_has(d),
        }
    }
    fn size(&self, kind: StoreKind, d: &Digest) -> std::io::Result<u64> {
        match kind {
            StoreKind::Object => fs::metadata(self.object_path(&ObjectId(*d))).map(|m| m.len()),
            StoreKind::Tree => self.tree_size(d),
        }
    }
    fn list(&self, kind: StoreKind, f: &mut dyn FnMut(Digest)) -> Result<()> {
        match kind {
            StoreKind::Object => objects::for_each_object(self, f),
            StoreKind::Tree => self.tree_list(f),
        }
    }
    fn list_objects_located(
        &self,
        f: &mut dyn FnMut(ObjectId, crate::repo::Located),
    ) -> Option<Result<()>> {
        Some(objects::for_each_object_located(self, f))
    }
    fn open_object(&self, id: &ObjectId) -> Result<crate::repo::Content> {
        objects::open_object(&self.object_path(id)).map(crate::repo::Content::File)
    }
    fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        let dir = self.snapshots_dir();
        let mut out = Vec::new();
        for ent in fs::read_dir(&dir).ctx("list", &dir)? {
            let ent = ent.ctx("list", &dir)?;
            if let Some(id) = ent.file_name().to_str().and_then(SnapshotId::from_hex) {
                out.push(id);
            }
        }
        Ok(out)
    }
    fn read_snapshot(&self, id: &SnapshotId) -> std::io::Result<Vec<u8>> {
        fsutil::read_repo_file(&self.snapshot_path(id))
    }
    fn has_snapshot(&self, id: &SnapshotId) -> bool {
        !matches!(fs::symlink_metadata(self.snapshot_path(id)), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
    fn read_pins(&self) -> std::io::Result<Vec<u8>> {
        fsutil::read_repo_file(&self.pins_path())
    }
    fn read_marker(&self) -> Option<SnapshotId> {
        LocalRepo::read_marker(self)
    }
    fn leftovers(&self) -> Vec<PathBuf> {
        let mut tmp: Vec<PathBuf> = match fs::read_dir(self.tmp_dir()) {
            Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
            Err(_) => Vec::new(),
        };
        tmp.sort();
        tmp
    }
    fn local_dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }
}

/// Remove a file; false when it was not there.
fn remove_if_present(p: &Path, what: &'static str) -> Result<bool> {
    match fs::remove_file(p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(what, p, e)),
    }
}

/// A local write session is a [`objects::Batch`]: content is queued in
/// `tmp/` and moved into the store at commit; records, removals and the
/// pinned list go straight to their files, each durably.
impl crate::repo::RepoWrite for objects::Batch<'_> {
    fn reader(&self) -> &dyn crate::repo::RepoRead {
        self.repo()
    }
    fn put_with(&self, kind: StoreKind, d: Digest, make: crate::repo::Make<'_>) -> Result<bool> {
        objects::Batch::put_with(self, kind, d, make)
    }
    fn put_object_from(
        &self,
        id: &crate::id::ObjectId,
        src: &mut dyn std::io::Read,
        what: &Path,
    ) -> Result<bool> {
        objects::Batch::put_object_from(self, id, src, what)
    }
    fn commit(&self) -> Result<()> {
        objects::Batch::commit(self)
    }
    fn write_snapshot(&self, id: &SnapshotId, data: &[u8]) -> Result<()> {
        let repo = self.repo();
        fsutil::atomic_write(&repo.tmp_dir(), &repo.snapshot_path(id), data, 0o400)
    }
    fn remove_snapshot(&self, id: &SnapshotId) -> Result<bool> {
        remove_if_present(&self.repo().snapshot_path(id), "remove snapshot record")
    }
    fn sync_snapshots(&self) -> Result<()> {
        fsutil::fsync_dir(&self.repo().snapshots_dir())
    }
    fn remove(&self, kind: StoreKind, d: &Digest) -> Result<bool> {
        match kind {
            StoreKind::Object => {
                remove_if_present(&self.repo().object_path(&ObjectId(*d)), "remove object")
            }
            StoreKind::Tree => {
                let had = self.repo().tree_has(d);
                trees::collect(self.repo(), &[*d])?;
                Ok(had && !self.repo().tree_has(d))
            }
        }
    }
    /// Trees go a pack at a time ([`trees::collect`]): one call for all
    /// of a collection's dead trees decides each pack once.
    fn remove_all(&self, kind: StoreKind, ds: &[Digest]) -> Result<()> {
        match kind {
            StoreKind::Object => {
                for d in ds {
                    self.remove(kind, d)?;
                }
                Ok(())
            }
            StoreKind::Tree => trees::collect(self.repo(), ds).map(|_| ()),
        }
    }
    fn write_pins(&self, data: Option<&[u8]>) -> Result<()> {
        let repo = self.repo();
        let path = repo.pins_path();
        match data {
            None => match fs::remove_file(&path) {
                Ok(()) => fsutil::fsync_dir(&repo.dir),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io("remove", &path, e)),
            },
            Some(text) => fsutil::atomic_write(&repo.tmp_dir(), &path, text, 0o600),
        }
    }
    fn remove_leftover(&self, p: &Path) -> Result<()> {
        fsutil::remove_any(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_bounds_come_back_only_for_their_snapshot_and_whole() -> Result<()> {
        let t = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let repo = LocalRepo::init(t.path(), HashAlgo::Blake3)?;
        let (a, b) = (SnapshotId(Digest([1; 32])), SnapshotId(Digest([2; 32])));
        assert_eq!(repo.read_archive_bounds(&a), None);
        for bounds in [
            ArchiveBounds::default(),
            ArchiveBounds {
                most_versions: 7,
                oldest_deleted_ns: Some(-5),
            },
        ] {
            repo.write_archive_bounds(&a, &bounds)?;
            assert_eq!(repo.read_archive_bounds(&a), Some(bounds));
            assert_eq!(repo.read_archive_bounds(&b), None);
        }
        // Torn or altered: ignored, never misread.
        let p = repo.archive_bounds_path();
        let data = fs::read(&p).map_err(|e| Error::io("read", &p, e))?;
        for bad in [data[..data.len() - 1].to_vec(), {
            let mut d = data.clone();
            d[40] ^= 1;
            d
        }] {
            fs::write(&p, bad).map_err(|e| Error::io("write", &p, e))?;
            assert_eq!(repo.read_archive_bounds(&a), None);
        }
        Ok(())
    }
}
