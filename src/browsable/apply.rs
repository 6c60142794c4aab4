//! Puts a rendered browsable tree (`render::render`) on disk under a target
//! directory, with hardlinks into the local object store
//! (`local::LocalRepo::object_path`); `trove materialize` ([`rebuild`]).
//!
//! `Materializer::apply` moves the tree from one rendering to the next, touching only
//! the entries that differ; it is idempotent, so replaying it after a crash
//! mid-way is safe. `Materializer::reconcile` compares a rendering with what is really
//! on disk (after damage, or into a fresh target). Neither ever deletes a
//! file it cannot prove is trove's own (a hardlink of the object, an empty
//! file, or a copy with the right size): anything else standing in the way
//! is moved to `.trove/quarantine/`, never removed. It never writes into
//! the store, except to re-store a damaged object from a good copy found
//! in the tree (`local::objects::restore_object_from_file`).
//!
//! The marker (`LocalRepo::write_marker`) records the snapshot the tree at
//! BACKUP_ROOT shows, so the next command knows whether it must catch up.

use crate::browsable::render::{self, BrowsableEntry, BrowsableKind};
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::local::{objects, LocalRepo};
use crate::model::{History, Item, Leaf, Meta};
use crate::pathbytes::{self, cmp_paths};
use crate::repo::snapshot::SnapshotRecord;
use crate::repo::tree::{self, Flat, FlatCursor, Limit, TreeObject};
use crate::rootdir::{EntryStat, Lstat, RootDir};
use rayon::prelude::*;
use std::cmp::Ordering;
use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtOrd};
use std::sync::OnceLock;

/// How `link_or_copy` placed a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placed {
    Linked,
    Copied,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub linked: AtomicU64,
    pub copied: AtomicU64,
    pub created: AtomicU64,
    pub removed: AtomicU64,
    pub quarantined: AtomicU64,
    /// Damaged objects re-stored from a good copy found in the tree.
    pub repaired: AtomicU64,
    pub unchanged: AtomicU64,
    /// Copies replaced by hardlinks (`relink`).
    pub relinked: AtomicU64,
}

impl Stats {
    pub fn get(a: &AtomicU64) -> u64 {
        a.load(AtOrd::Relaxed)
    }
}

/// Reasons kept for the entries that could not be put in place, the
/// first in path order; the rest are counted. A full disk fails every
/// entry after it: at three million entries their paths and messages
/// took a gigabyte, where a report shows the first and a log twenty.
pub const KEPT_FAILURES: usize = 1000;

/// Entries that could not be put in place: the first [`KEPT_FAILURES`]
/// in path order with their reasons (path in the tree, reason), and how
/// many there were in all.
#[derive(Debug, Default)]
pub struct Failures {
    pub first: Vec<(Vec<u8>, String)>,
    pub total: u64,
}

impl Failures {
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// One more failure. The kept ones are trimmed once they reach twice
    /// the bound, so trimming costs little per failure.
    pub fn add(&mut self, path: &[u8], reason: String) {
        self.total += 1;
        self.first.push((path.to_vec(), reason));
        if self.first.len() >= 2 * KEPT_FAILURES {
            self.trim();
        }
    }

    /// Sorted by path, the first [`KEPT_FAILURES`] kept.
    fn trim(&mut self) {
        self.first.sort_by(|a, b| cmp_paths(&a.0, &b.0));
        self.first.truncate(KEPT_FAILURES);
    }

    /// The kept failures followed by `other`'s, counted together.
    pub fn append(&mut self, other: Failures) {
        self.total += other.total;
        self.first.extend(other.first);
        self.trim();
    }
}

pub struct Materializer<'r> {
    repo: &'r LocalRepo,
    target: PathBuf,
    /// This run's quarantine folder, relative to `.trove`.
    quarantine: Vec<u8>,
    pub stats: Stats,
    /// Replace a correct copy by a hardlink where the filesystem now allows
    /// one (`trove materialize`; a backup leaves copies alone).
    pub relink: bool,
    /// Entries that could not be put in place (path, reason). One bad entry
    /// (a path too long for the target, a missing object) never stops the
    /// rest of the tree from being built.
    failures: std::sync::Mutex<Failures>,
    /// The target and `.trove`, opened on first use: every change below
    /// them goes through these handles, never through a symlink.
    root: OnceLock<RootDir>,
    store_dir: OnceLock<RootDir>,
    /// Something trove did not create stood where the rendering has a
    /// folder (or was quarantined): entries no change named may be missing
    /// below it, so an update by differences is not enough.
    exposed: AtomicBool,
    /// `reconcile` ran: every entry of the rendering was checked.
    reconciled: AtomicBool,
}

/// How an on-disk entry relates to a rendered one.
#[derive(Debug, PartialEq, Eq)]
enum Disk {
    Missing,
    /// `linked`: a hardlink of the entry's own object, so no copy of it
    /// needs rescuing before it is removed (see `rescue_copy`).
    Matches {
        linked: bool,
    },
    /// Trove's own entry with other content (safe to replace); `linked`
    /// as above, for the entry that used to be there.
    Ours {
        linked: bool,
    },
    /// Something trove did not put there.
    Foreign,
}

impl<'r> Materializer<'r> {
    pub fn new(repo: &'r LocalRepo, target: &Path) -> Materializer<'r> {
        let stamp =
            crate::repo::snapshot::format_time(crate::model::now_ns()).replace([' ', ':'], "-");
        Materializer {
            repo,
            target: target.to_path_buf(),
            quarantine: LocalRepo::quarantine_of_run(&stamp),
            stats: Stats::default(),
            relink: false,
            failures: std::sync::Mutex::new(Failures::default()),
            root: OnceLock::new(),
            store_dir: OnceLock::new(),
            exposed: AtomicBool::new(false),
            reconciled: AtomicBool::new(false),
        }
    }

    fn record(&self, path: &[u8], r: Result<()>) {
        if let Err(e) = r {
            self.failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .add(path, e.to_string());
        }
    }

    /// Count a failure of the whole update (an error before or between
    /// entries) as one of `rel`'s, so it is reported like the others.
    pub fn record_error(&self, rel: &[u8], e: Error) {
        self.record(rel, Err(e));
    }

    /// The entries that failed: the first in path order, and how many.
    pub fn take_failures(&self) -> Failures {
        let mut f = std::mem::take(&mut *self.failures.lock().unwrap_or_else(|p| p.into_inner()));
        f.trim();
        f
    }

    /// Whether an update by differences met something that may hide
    /// entries outside those differences (see `exposed`) and no complete
    /// check followed yet.
    pub fn needs_full_check(&self) -> bool {
        self.exposed.load(AtOrd::Relaxed) && !self.reconciled.load(AtOrd::Relaxed)
    }

    /// Whether something trove did not create was met where the rendering
    /// has a folder, or was moved to quarantine.
    pub fn met_foreign(&self) -> bool {
        self.exposed.load(AtOrd::Relaxed)
    }

    fn fs_path(&self, rel: &[u8]) -> PathBuf {
        pathbytes::to_fs(&self.target, rel)
    }

    /// The handle every change in the target goes through.
    fn root(&self) -> Result<&RootDir> {
        if let Some(r) = self.root.get() {
            return Ok(r);
        }
        let r = RootDir::open(&self.target).ctx("open the browsable tree", &self.target)?;
        Ok(self.root.get_or_init(|| r))
    }

    fn store_dir(&self) -> Result<&RootDir> {
        if let Some(r) = self.store_dir.get() {
            return Ok(r);
        }
        let r = RootDir::open(&self.repo.dir).ctx("open", &self.repo.dir)?;
        Ok(self.store_dir.get_or_init(|| r))
    }

    /// What is at `rel`; a symlink or file where a folder on the way should
    /// be means the entry is not there (and is noted: see `exposed`).
    fn lstat(&self, rel: &[u8]) -> Result<Option<EntryStat>> {
        match self.root()?.lstat(rel) {
            Ok(Lstat::Found(m)) => Ok(Some(m)),
            Ok(Lstat::Missing) => Ok(None),
            Ok(Lstat::Blocked) => {
                self.exposed.store(true, AtOrd::Relaxed);
                Ok(None)
            }
            Err(e) => Err(Error::io("stat", self.fs_path(rel), e)),
        }
    }

    /// Hash the file at `rel` (opened without following a symlink).
    fn hash_entry(&self, rel: &[u8], size: u64) -> Result<crate::id::Digest> {
        let p = self.fs_path(rel);
        let f = self.root()?.open_read(rel).ctx("open", &p)?;
        crate::hash::hash_reader(self.repo.algo(), f, size, &p)
    }

    /// Classify what is on disk at `e.path` against `e` (and, for
    /// "ours", against the entry `old` that used to be there).
    fn inspect(&self, e: &BrowsableEntry, old: Option<&BrowsableEntry>) -> Result<Disk> {
        let Some(m) = self.lstat(&e.path)? else {
            return Ok(Disk::Missing);
        };
        if let Some(linked) = self.fit(e, &m)? {
            return Ok(Disk::Matches { linked });
        }
        if let Some(o) = old {
            if let Some(linked) = self.fit(o, &m)? {
                return Ok(Disk::Ours { linked });
            }
        }
        // A hardlink of a stored object is trove's own whichever snapshot
        // put it there (one whose record is damaged, after `backup
        // --allow-damaged-latest`): its content stays in the store.
        if self.is_object_link(&e.path, &m)? {
            return Ok(Disk::Ours { linked: false });
        }
        // An empty directory carries no data: it is safe to replace.
        if m.is_dir()
            && self
                .root()?
                .list(&e.path)
                .map(|l| l.is_empty())
                .unwrap_or(false)
        {
            return Ok(Disk::Ours { linked: false });
        }
        Ok(Disk::Foreign)
    }

    /// Whether the file at `rel` is a hardlink of the stored object its
    /// bytes name.
    fn is_object_link(&self, rel: &[u8], m: &EntryStat) -> Result<bool> {
        if !m.is_file() || m.nlink < 2 || m.size == 0 {
            return Ok(false);
        }
        let d = self.hash_entry(rel, m.size)?;
        let obj = self.repo.object_path(&crate::id::ObjectId(d));
        Ok(fs::symlink_metadata(&obj).is_ok_and(|om| m.same_inode(&om)))
    }

    /// Whether what is on disk (`m`) shows `e`: `None` if not, else
    /// whether it is a hardlink of `e`'s object (an equal copy, an empty
    /// file, a folder or a symlink is not).
    fn fit(&self, e: &BrowsableEntry, m: &EntryStat) -> Result<Option<bool>> {
        let equal = |yes: bool| if yes { Some(false) } else { None };
        Ok(match &e.kind {
            BrowsableKind::Dir => equal(m.is_dir()),
            BrowsableKind::Symlink { target } => equal(
                m.is_symlink()
                    && self
                        .root()?
                        .read_link(&e.path)
                        .is_ok_and(|t| t == target.as_slice()),
            ),
            BrowsableKind::File { id, size } => {
                if !m.is_file() || m.size != *size {
                    None
                } else if *size == 0 {
                    Some(false)
                } else {
                    let obj = self.repo.object_path(id);
                    match fs::symlink_metadata(&obj) {
                        Ok(om) if m.same_inode(&om) => Some(true),
                        // A copy (link fallback): check its bytes.
                        _ if m.nlink == 1 => equal(self.hash_entry(&e.path, *size)? == id.0),
                        _ => None,
                    }
                }
            }
        })
    }

    /// Before the file at `rel` that holds `e`'s content is unlinked or
    /// replaced: if it is a copy (another inode than the object) and the
    /// object itself is damaged — missing, not a regular file, or of the
    /// wrong bytes — the copy is the last good one, so it re-stores the
    /// object instead of being lost. A copy is rare (the EMLINK/EXDEV
    /// fallback, or a user's), so the hash this costs is rare too.
    fn rescue_copy(&self, e: &BrowsableEntry, rel: &[u8]) -> Result<()> {
        let BrowsableKind::File { id, size } = &e.kind else {
            return Ok(());
        };
        if *size == 0 {
            return Ok(());
        }
        let obj = self.repo.object_path(id);
        let om = fs::symlink_metadata(&obj);
        let Some(m) = self.lstat(rel)? else {
            return Ok(());
        };
        if !m.is_file() || om.as_ref().is_ok_and(|om| m.same_inode(om)) {
            return Ok(());
        }
        if objects::object_is_sound(self.repo, id) {
            return Ok(());
        }
        let p = self.fs_path(rel);
        let f = self.root()?.open_read(rel).ctx("open", &p)?;
        if objects::restore_object_from_file(self.repo, id, f, &p)? {
            self.stats.repaired.fetch_add(1, AtOrd::Relaxed);
        }
        Ok(())
    }

    /// Move `rel` itself (a symlink is moved, never followed) into this
    /// run's quarantine folder. Never replaces anything already
    /// quarantined: a name (or a parent) that is taken sends the entry to
    /// a fresh `~N/` folder beside it.
    fn to_quarantine(&self, rel: &[u8]) -> Result<()> {
        let src = self.fs_path(rel);
        if self.lstat(rel)?.is_none() {
            return Ok(()); // not in this tree: nothing to move
        }
        let (root, store) = (self.root()?, self.store_dir()?);
        for attempt in 0u32..1000 {
            let base = if attempt == 0 {
                self.quarantine.clone()
            } else {
                pathbytes::join(&self.quarantine, format!("~{attempt}").as_bytes())
            };
            let dest = pathbytes::join(&base, rel);
            match store.mkdir_all(pathbytes::parent(&dest), 0o700) {
                Ok(()) => {}
                // A quarantined file where a folder is needed.
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => continue,
                Err(e) => {
                    return Err(Error::io(
                        "create quarantine folder",
                        store.abs(pathbytes::parent(&dest)),
                        e,
                    ))
                }
            }
            match root.move_noreplace(rel, store, &dest) {
                Ok(()) => {
                    tracing::warn!(
                        "moved {} (not created by trove) to {}",
                        src.display(),
                        store.abs(&dest).display()
                    );
                    self.stats.quarantined.fetch_add(1, AtOrd::Relaxed);
                    self.exposed.store(true, AtOrd::Relaxed);
                    return Ok(());
                }
                Err(e)
                    if e.kind() == io::ErrorKind::AlreadyExists
                        || e.raw_os_error() == Some(libc::ENOTEMPTY)
                        || e.raw_os_error() == Some(libc::EISDIR) =>
                {
                    continue;
                }
                Err(e) => return Err(Error::io("move to quarantine", &src, e)),
            }
        }
        Err(Error::QuarantineFull {
            dir: store.abs(&self.quarantine),
            path: src,
        })
    }

    /// Remove trove's own entry at `rel` (a file, a symlink, an empty
    /// folder); a folder that still holds something goes to quarantine.
    fn remove_ours(&self, rel: &[u8]) -> Result<()> {
        let root = self.root()?;
        let Some(m) = self.lstat(rel)? else {
            return Ok(());
        };
        let r = if m.is_dir() {
            match root.rmdir(rel) {
                Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                    return self.to_quarantine(rel)
                }
                r => r,
            }
        } else {
            root.unlink(rel)
        };
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", self.fs_path(rel), e)),
        }
    }

    fn remove(&self, e: &BrowsableEntry) -> Result<()> {
        match self.inspect(e, None)? {
            Disk::Missing => Ok(()),
            Disk::Matches { linked } => {
                // A hardlink of the object is no copy to rescue: two stats
                // saved on every file a run removes.
                if !linked {
                    self.rescue_copy(e, &e.path)?;
                }
                let root = self.root()?;
                let r = match e.kind {
                    BrowsableKind::Dir => match root.rmdir(&e.path) {
                        // Something foreign inside: leave the directory.
                        Err(err) if err.raw_os_error() == Some(libc::ENOTEMPTY) => return Ok(()),
                        r => r,
                    },
                    _ => root.unlink(&e.path),
                };
                match r {
                    Ok(()) => {
                        self.stats.removed.fetch_add(1, AtOrd::Relaxed);
                        Ok(())
                    }
                    Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(err) => Err(Error::io("remove", self.fs_path(&e.path), err)),
                }
            }
            Disk::Ours { .. } if !matches!(e.kind, BrowsableKind::Dir) => {
                // A hardlink of another stored object: nothing is lost.
                match self.root()?.unlink(&e.path) {
                    Ok(()) => {
                        self.stats.removed.fetch_add(1, AtOrd::Relaxed);
                        Ok(())
                    }
                    Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(err) => Err(Error::io("remove", self.fs_path(&e.path), err)),
                }
            }
            Disk::Ours { .. } | Disk::Foreign => {
                if matches!(e.kind, BrowsableKind::Dir) {
                    Ok(())
                } else {
                    self.to_quarantine(&e.path)
                }
            }
        }
    }

    /// Create `e` on disk. `fast` tries the common case (nothing there
    /// yet) without a stat first.
    fn place(&self, e: &BrowsableEntry, old: Option<&BrowsableEntry>, fast: bool) -> Result<()> {
        let root = self.root()?;
        let p = self.fs_path(&e.path);
        if fast {
            if let BrowsableKind::File { id, size } = &e.kind {
                let obj = self.repo.object_path(id);
                // A damaged object (not a regular file) takes the slow
                // path, which may repair it from a good copy at `p`.
                // Anything else in the way (EEXIST, a parent missing or not
                // a folder, ENOENT for a missing object) does too.
                if *size > 0
                    && check_object_type(&obj).is_ok()
                    && root.link_from(&obj, &e.path).is_ok()
                {
                    self.stats.linked.fetch_add(1, AtOrd::Relaxed);
                    return Ok(());
                }
            }
        }
        match self.inspect(e, old)? {
            Disk::Matches { .. } => {
                if self.relink && self.try_relink(e, &e.path)? {
                    self.stats.relinked.fetch_add(1, AtOrd::Relaxed);
                } else {
                    self.stats.unchanged.fetch_add(1, AtOrd::Relaxed);
                }
                return Ok(());
            }
            Disk::Missing => {}
            Disk::Ours { linked } => {
                if let (Some(o), false) = (old, linked) {
                    self.rescue_copy(o, &e.path)?;
                }
                self.remove_ours(&e.path)?
            }
            Disk::Foreign => self.to_quarantine(&e.path)?,
        }
        // Both callers made every parent folder first (`prepare_parents`),
        // so the way is checked again, one folder at a time, only when the
        // create finds a folder on it missing or not a folder (someone
        // removed or replaced it meanwhile): a 1% rerun saved 15,000
        // stats on the folders above the files it replaced.
        match self.create(e, &p) {
            Err(Error::Io { source, .. })
                if source.kind() == io::ErrorKind::NotFound
                    || source.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                self.ensure_rel(pathbytes::parent(&e.path), &mut HashSet::new())?;
                self.create(e, &p)
            }
            r => r,
        }
    }

    /// Make `e` at its path (`p` for messages), nothing being there.
    fn create(&self, e: &BrowsableEntry, p: &Path) -> Result<()> {
        let root = self.root()?;
        match &e.kind {
            BrowsableKind::Dir => {
                root.mkdir(&e.path, 0o777).ctx("create directory", p)?;
                self.stats.created.fetch_add(1, AtOrd::Relaxed);
            }
            BrowsableKind::Symlink { target } => {
                root.symlink(target, &e.path).ctx("create symlink", p)?;
                self.stats.created.fetch_add(1, AtOrd::Relaxed);
            }
            BrowsableKind::File { size: 0, .. } => {
                // Empty files are never hardlinked: every empty file would
                // otherwise share one inode and its link limit.
                root.create_new(&e.path, 0o444).ctx("create", p)?;
                self.stats.created.fetch_add(1, AtOrd::Relaxed);
            }
            BrowsableKind::File { id, .. } => {
                let obj = self.repo.object_path(id);
                match fs::symlink_metadata(&obj) {
                    Err(_) => {
                        return Err(Error::Missing {
                            what: "object",
                            id: id.to_hex(),
                            path: obj,
                        })
                    }
                    Ok(m) if !m.is_file() => return Err(not_a_file(&obj, &m)),
                    Ok(_) => {}
                }
                match self.link_or_copy(&obj, &e.path)? {
                    Placed::Linked => self.stats.linked.fetch_add(1, AtOrd::Relaxed),
                    Placed::Copied => self.stats.copied.fetch_add(1, AtOrd::Relaxed),
                };
            }
        }
        Ok(())
    }

    /// Hardlink the object `obj` at `rel`. Where the filesystem refuses a
    /// link (EMLINK: too many links to one inode; EXDEV: another
    /// filesystem; EPERM/ENOTSUP: no hardlinks here) the file is copied
    /// instead, read-only like the object it comes from.
    fn link_or_copy(&self, obj: &Path, rel: &[u8]) -> Result<Placed> {
        let p = self.fs_path(rel);
        match self.root()?.link_from(obj, rel) {
            Ok(()) => Ok(Placed::Linked),
            Err(e) if fsutil::link_refused(&e) => {
                self.copy_in(obj, rel)?;
                Ok(Placed::Copied)
            }
            Err(e) => Err(Error::io("hardlink to", &p, e)),
        }
    }

    /// Copy `src` to `rel` via a temp name in the same folder (a crash
    /// never leaves a half-written file at `rel`), read-only. `io::copy`
    /// uses copy_file_range, which reflinks where the filesystem can.
    fn copy_in(&self, src: &Path, rel: &[u8]) -> Result<()> {
        let root = self.root()?;
        let tmp = pathbytes::join(
            pathbytes::parent(rel),
            format!(".{}", fsutil::tmp_name("trove-copy")).as_bytes(),
        );
        let tmp_p = self.fs_path(&tmp);
        let mut from = fs::File::open(src).ctx("open", src)?;
        let mut to = root.create_new(&tmp, 0o444).ctx("create", &tmp_p)?;
        if let Err(e) = io::copy(&mut from, &mut to) {
            let _ = root.unlink(&tmp);
            return Err(Error::io("copy to", &tmp_p, e));
        }
        drop(to);
        if let Err(e) = root.rename(&tmp, rel) {
            let _ = root.unlink(&tmp);
            return Err(Error::io("rename into place", self.fs_path(rel), e));
        }
        Ok(())
    }

    /// `rel` holds the right content for `e`: if it is a copy and a
    /// hardlink of the object can be made now, put the link in its place
    /// (via a temp name, so the path never goes missing).
    fn try_relink(&self, e: &BrowsableEntry, rel: &[u8]) -> Result<bool> {
        let BrowsableKind::File { id, size } = &e.kind else {
            return Ok(false);
        };
        if *size == 0 {
            return Ok(false);
        }
        let obj = self.repo.object_path(id);
        let (Ok(om), Some(m)) = (fs::symlink_metadata(&obj), self.lstat(rel)?) else {
            return Ok(false);
        };
        if m.same_inode(&om) {
            return Ok(false);
        }
        let root = self.root()?;
        let p = self.fs_path(rel);
        // `rel` is a good copy (`inspect` hashed it). It may only give way
        // to an object that is itself intact; a damaged object is first
        // re-stored from the copy (and the copy kept if that fails).
        if !objects::object_is_sound(self.repo, id) {
            let f = root.open_read(rel).ctx("open", &p)?;
            if !objects::restore_object_from_file(self.repo, id, f, &p)? {
                return Ok(false);
            }
            self.stats.repaired.fetch_add(1, AtOrd::Relaxed);
        }
        let tmp = pathbytes::join(
            pathbytes::parent(rel),
            format!(".{}", fsutil::tmp_name("trove-link")).as_bytes(),
        );
        if root.link_from(&obj, &tmp).is_err() {
            return Ok(false); // still refused (EMLINK, EXDEV…): the copy stays
        }
        if let Err(err) = root.rename(&tmp, rel) {
            let _ = root.unlink(&tmp);
            return Err(Error::io("replace copy with hardlink", &p, err));
        }
        Ok(true)
    }

    /// Make sure folder `rel` and every folder between the target and it
    /// are real directories: a symlink or file in the way is moved to
    /// quarantine (the entry itself, never what a symlink points at), then
    /// the folder is made. `done` holds folders already checked.
    fn ensure_rel(&self, rel: &[u8], done: &mut HashSet<Vec<u8>>) -> Result<()> {
        if rel.is_empty() || done.contains(rel) {
            return Ok(());
        }
        // Parents first: once they are known to be real directories, a
        // look at this one cannot pass through a symlink.
        self.ensure_rel(pathbytes::parent(rel), done)?;
        self.ensure_dir(rel, false)?;
        done.insert(rel.to_vec());
        Ok(())
    }

    /// Make folder `rel`: true when this call made it (false when a
    /// folder was there already).
    fn make_dir(&self, rel: &[u8]) -> Result<bool> {
        let root = self.root()?;
        match root.mkdir(rel, 0o777) {
            Ok(()) => {
                self.stats.created.fetch_add(1, AtOrd::Relaxed);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match root.lstat(rel) {
                Ok(Lstat::Found(m)) if m.is_dir() => Ok(false),
                _ => Err(Error::io("create directory", self.fs_path(rel), e)),
            },
            Err(e) => Err(Error::io("create directory", self.fs_path(rel), e)),
        }
    }

    /// Check (and create) the parent folders of `paths` before entries are
    /// placed in parallel: implicit folders such as `versions/<path>/`
    /// have no entry of their own. One depth at a time, parents before
    /// children, and the folders of one depth in parallel (each by one
    /// thread, so two threads never both move the same thing out of the
    /// way). Below a folder that could not be made nothing is tried; the
    /// entries there fail when placed, each reported.
    fn prepare_parents<'a>(&self, paths: impl Iterator<Item = &'a [u8]>) {
        let mut needed: HashSet<&[u8]> = HashSet::new();
        for p in paths {
            let mut d = pathbytes::parent(p);
            while !d.is_empty() && needed.insert(d) {
                d = pathbytes::parent(d);
            }
        }
        let mut by_depth: Vec<Vec<&[u8]>> = Vec::new();
        for d in needed {
            let depth = d.iter().filter(|&&b| b == b'/').count();
            if by_depth.len() <= depth {
                by_depth.resize_with(depth + 1, Vec::new);
            }
            by_depth[depth].push(d);
        }
        // Folders made here (their children need no look first), and
        // folders that could not be checked or made.
        let made: std::sync::Mutex<HashSet<&[u8]>> = std::sync::Mutex::new(HashSet::new());
        let broken: std::sync::Mutex<HashSet<&[u8]>> = std::sync::Mutex::new(HashSet::new());
        for level in by_depth {
            let (made_above, broken_above) = (
                std::mem::take(&mut *made.lock().unwrap_or_else(|p| p.into_inner())),
                std::mem::take(&mut *broken.lock().unwrap_or_else(|p| p.into_inner())),
            );
            level.par_iter().for_each(|&d| {
                let parent = pathbytes::parent(d);
                if broken_above.contains(parent) {
                    broken.lock().unwrap_or_else(|p| p.into_inner()).insert(d);
                    return;
                }
                match self.ensure_dir(d, made_above.contains(parent)) {
                    Ok(true) => {
                        made.lock().unwrap_or_else(|p| p.into_inner()).insert(d);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        self.record(d, Err(e));
                        broken.lock().unwrap_or_else(|p| p.into_inner()).insert(d);
                    }
                }
            });
        }
    }

    /// Make `rel` a folder, its parent being one already: true when this
    /// call made it. A folder this update made has nothing in it, so
    /// `parent_new` skips the look before the mkdir (a folder found there
    /// after all, by a racing writer, counts as not made: its children get
    /// the look).
    fn ensure_dir(&self, rel: &[u8], parent_new: bool) -> Result<bool> {
        if parent_new {
            return self.make_dir(rel);
        }
        match self.root()?.lstat(rel) {
            Ok(Lstat::Found(m)) if m.is_dir() => Ok(false),
            Ok(Lstat::Found(_)) => {
                self.to_quarantine(rel)?;
                self.make_dir(rel)
            }
            Ok(Lstat::Missing) => self.make_dir(rel),
            // A parent checked a moment ago is no folder any more.
            Ok(Lstat::Blocked) => Err(Error::io(
                "check folder",
                self.fs_path(rel),
                io::Error::from_raw_os_error(libc::ENOTDIR),
            )),
            Err(e) => Err(Error::io("stat", self.fs_path(rel), e)),
        }
    }

    /// Move the tree on disk from rendering `old` to rendering `new`. Both
    /// may be whole renderings or just their differing parts
    /// (`render::render_diff`); `wanted_dir` says whether the complete new
    /// rendering shows a directory at a path, so that directories emptied
    /// by removals are cleaned up unless the source has them too.
    pub fn apply(
        &self,
        old: &[BrowsableEntry],
        new: &[BrowsableEntry],
        wanted_dir: &(dyn Fn(&[u8]) -> bool + Sync),
    ) -> Result<()> {
        let mut removals: Vec<&BrowsableEntry> = Vec::new();
        let mut changes: Vec<(&BrowsableEntry, Option<&BrowsableEntry>)> = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < old.len() || j < new.len() {
            let ord = match (old.get(i), new.get(j)) {
                (Some(a), Some(b)) => cmp_paths(&a.path, &b.path),
                (Some(_), None) => Ordering::Less,
                _ => Ordering::Greater,
            };
            match ord {
                Ordering::Less => {
                    removals.push(&old[i]);
                    i += 1;
                }
                Ordering::Greater => {
                    changes.push((&new[j], None));
                    j += 1;
                }
                Ordering::Equal => {
                    if old[i].kind != new[j].kind {
                        changes.push((&new[j], Some(&old[i])));
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        // Files and symlinks first, in parallel (unlinking is
        // metadata-bound); then folders, children before parents, so they
        // empty out first.
        removals
            .par_iter()
            .filter(|e| !matches!(e.kind, BrowsableKind::Dir))
            .for_each(|e| self.record(&e.path, self.remove(e)));
        for e in removals
            .iter()
            .rev()
            .filter(|e| matches!(e.kind, BrowsableKind::Dir))
        {
            self.record(&e.path, self.remove(e));
        }
        let mut removed_dirs: Vec<&[u8]> = removals
            .iter()
            .map(|e| pathbytes::parent(&e.path))
            .collect();
        removed_dirs.sort_by(|a, b| cmp_paths(b, a));
        removed_dirs.dedup();
        self.prepare_parents(changes.iter().map(|(e, _)| e.path.as_slice()));
        self.place_all(&changes);
        self.prune_empty_dirs(&removed_dirs, wanted_dir);
        Ok(())
    }

    /// Directories first (in order, parents before children), then files in
    /// parallel: linking is metadata-bound, and two cores halve it.
    fn place_all(&self, changes: &[(&BrowsableEntry, Option<&BrowsableEntry>)]) {
        for (e, old) in changes
            .iter()
            .filter(|(e, _)| matches!(e.kind, BrowsableKind::Dir))
        {
            self.record(&e.path, self.place(e, *old, false));
        }
        changes
            .par_iter()
            .filter(|(e, _)| !matches!(e.kind, BrowsableKind::Dir))
            .for_each(|(e, old)| self.record(&e.path, self.place(e, *old, old.is_none())));
    }

    /// Remove directories left empty by removals (implicit parents such as
    /// `versions/<path>/`), but never one the rendering still wants.
    fn prune_empty_dirs(&self, dirs: &[&[u8]], wanted_dir: &dyn Fn(&[u8]) -> bool) {
        let Ok(root) = self.root() else { return };
        let mut done: HashSet<Vec<u8>> = HashSet::new();
        for d in dirs {
            let mut cur: &[u8] = d;
            while !cur.is_empty() && !wanted_dir(cur) && done.insert(cur.to_vec()) {
                match root.rmdir(cur) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    // Not empty (its parent is not either), or not a
                    // folder of this tree (a symlink on the way).
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::ENOTEMPTY | libc::EEXIST | libc::ENOTDIR | libc::ELOOP)
                        ) =>
                    {
                        break
                    }
                    // A real failure (EIO, …) is the update's: counted, so
                    // the marker is not advanced and the next run tries
                    // again (the fault sweep found an emptied `_deleted/`
                    // left behind for good).
                    Err(e) => {
                        self.record(
                            cur,
                            Err(Error::io("remove emptied folder", self.fs_path(cur), e)),
                        );
                        break;
                    }
                }
                cur = pathbytes::parent(cur);
            }
        }
    }

    /// `wanted_dir` for a complete rendering.
    pub fn dirs_of(render: &[BrowsableEntry]) -> HashSet<Vec<u8>> {
        render
            .iter()
            .filter(|e| matches!(e.kind, BrowsableKind::Dir))
            .map(|e| e.path.clone())
            .collect()
    }

    /// Bring the disk in line with `desired`, whatever is there now.
    /// Entries trove left behind (hardlinks of stored objects, empty
    /// directories) that `desired` lacks are removed; anything else extra
    /// is returned and, with `prune_extra`, moved to quarantine.
    pub fn reconcile(&self, desired: &[BrowsableEntry], prune_extra: bool) -> Result<Vec<Vec<u8>>> {
        fsutil::create_private_dir(&self.target)?;
        self.reconciled.store(true, AtOrd::Relaxed);
        self.place_over(desired);
        let extra = extra_paths(&self.target, desired)?;
        // Folders the rendering has, or holds something below.
        let mut needed: HashSet<&[u8]> = HashSet::new();
        if prune_extra {
            for e in desired {
                let mut p: &[u8] = &e.path;
                while !p.is_empty() && needed.insert(p) {
                    p = pathbytes::parent(p);
                }
            }
        }
        self.settle_extras(&extra, prune_extra, &|p: &[u8]| needed.contains(p))
    }

    /// [`reconcile`](Self::reconcile) of the snapshot `rec` rendered
    /// lazily ([`LazyRender`]), so neither its listing nor its rendering
    /// is ever held: placed a run at a time, then the extras found by a
    /// walk of the disk merged with a second pass of the rendering, both
    /// in path order. Returns the rendering's size and the extras, or
    /// `None` where the lazy rendering is not exact (the caller renders
    /// whole).
    pub fn reconcile_lazy(
        &self,
        repo: &LocalRepo,
        rec: &SnapshotRecord,
        prune_extra: bool,
    ) -> Result<Option<(u64, Vec<Vec<u8>>)>> {
        let Some(mut render) = LazyRender::new(repo, rec)? else {
            return Ok(None);
        };
        fsutil::create_private_dir(&self.target)?;
        self.reconciled.store(true, AtOrd::Relaxed);
        let total = render.in_runs(PLACE_RUN, &mut |run| {
            self.place_over(run);
            Ok(())
        })?;
        let Some(mut again) = LazyRender::new(repo, rec)? else {
            return Err(Error::Internal(
                "the lazy rendering of a snapshot changed between two reads".into(),
            ));
        };
        let extra = extra_paths_lazy(&self.target, &mut again)?;
        // No extra holds anything the rendering has (else it would not be
        // extra), and every folder visited to find them holds something
        // the rendering has: a folder is wanted unless it is at or below
        // an extra. The extras are in path order, so the one that could
        // hold `p` is the last at or before it.
        let wanted = |p: &[u8]| {
            let i = extra.partition_point(|e| cmp_paths(e, p).is_le());
            !(i > 0 && pathbytes::is_at_or_under(p, &extra[i - 1]))
        };
        let foreign = self.settle_extras(&extra, prune_extra, &wanted)?;
        Ok(Some((total, foreign)))
    }

    /// Place every entry of `desired` over whatever is on disk: parents
    /// checked first, then folders, then the rest in parallel. What is
    /// there is unknown, but the fast path is still safe: it only links
    /// where nothing exists (EEXIST sends it to the slow path, which
    /// inspects what is there).
    fn place_over(&self, desired: &[BrowsableEntry]) {
        self.prepare_parents(desired.iter().map(|e| e.path.as_slice()));
        for e in desired
            .iter()
            .filter(|e| matches!(e.kind, BrowsableKind::Dir))
        {
            self.record(&e.path, self.place(e, None, false));
        }
        desired
            .par_iter()
            .filter(|e| !matches!(e.kind, BrowsableKind::Dir))
            .for_each(|e| self.record(&e.path, self.place(e, None, true)));
    }

    /// The extras found (`extra`, in path order): trove's own leftovers
    /// removed, the rest returned and, with `prune_extra`, quarantined,
    /// with the folders that held only those unless `wanted` has them.
    fn settle_extras(
        &self,
        extra: &[Vec<u8>],
        prune_extra: bool,
        wanted: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Vec<Vec<u8>>> {
        let mut foreign = Vec::new();
        for p in extra {
            self.clear_stale(p, &mut foreign)?;
        }
        foreign.sort_by(|a, b| cmp_paths(a, b));
        if prune_extra {
            for p in &foreign {
                self.record(p, self.to_quarantine(p));
            }
            // Folders that held only quarantined entries go too (an empty
            // folder carries no data), unless the rendering has them.
            let mut dirs: Vec<&[u8]> = foreign.iter().map(|p| pathbytes::parent(p)).collect();
            dirs.sort_by(|a, b| cmp_paths(b, a));
            dirs.dedup();
            self.prune_empty_dirs(&dirs, wanted);
        }
        Ok(foreign)
    }

    /// Remove `rel` if it is provably trove's own leftover (a hardlink of a
    /// stored object, or a directory holding only such things); push what
    /// is not to `foreign`.
    fn clear_stale(&self, rel: &[u8], foreign: &mut Vec<Vec<u8>>) -> Result<()> {
        let p = self.fs_path(rel);
        let Some(m) = self.lstat(rel)? else {
            return Ok(());
        };
        let root = self.root()?;
        if m.is_dir() {
            let mut names: Vec<Vec<u8>> = root
                .list(rel)
                .ctx("list", &p)?
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            names.sort();
            let before = foreign.len();
            for n in names {
                self.clear_stale(&pathbytes::join(rel, &n), foreign)?;
            }
            if foreign.len() == before && root.rmdir(rel).is_ok() {
                self.stats.removed.fetch_add(1, AtOrd::Relaxed);
            }
            return Ok(());
        }
        if m.is_file() && m.nlink >= 2 && m.size > 0 {
            let d = self.hash_entry(rel, m.size)?;
            let obj = self.repo.object_path(&crate::id::ObjectId(d));
            if let Ok(om) = fs::metadata(&obj) {
                if m.same_inode(&om) {
                    root.unlink(rel).ctx("remove stale entry", &p)?;
                    self.stats.removed.fetch_add(1, AtOrd::Relaxed);
                    return Ok(());
                }
            }
        }
        foreign.push(rel.to_vec());
        Ok(())
    }
}

/// Paths under `target` that a complete rendering `desired` does not have
/// (a directory that is extra as a whole is listed once). `.trove` at the
/// top is never listed.
pub fn extra_paths(target: &Path, desired: &[BrowsableEntry]) -> Result<Vec<Vec<u8>>> {
    extra_paths_in(target, &PathSets::of(desired))
}

/// The paths of a rendering (`listed`) and every folder above them
/// (`ancestors`), which a check of the tree on disk needs more than once.
pub struct PathSets<'a> {
    pub listed: HashSet<&'a [u8]>,
    pub ancestors: HashSet<&'a [u8]>,
}

impl<'a> PathSets<'a> {
    pub fn of(desired: &'a [BrowsableEntry]) -> PathSets<'a> {
        let listed: HashSet<&[u8]> = desired.iter().map(|e| e.path.as_slice()).collect();
        let mut ancestors: HashSet<&[u8]> = HashSet::new();
        for e in desired {
            let mut p = pathbytes::parent(&e.path);
            while !p.is_empty() && ancestors.insert(p) {
                p = pathbytes::parent(p);
            }
        }
        PathSets { listed, ancestors }
    }
}

/// [`extra_paths`] with the rendering's path sets already made.
pub fn extra_paths_in(target: &Path, sets: &PathSets<'_>) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    find_extra(target, Vec::new(), &sets.listed, &sets.ancestors, &mut out)?;
    out.sort_by(|a, b| cmp_paths(a, b));
    Ok(out)
}

/// Entries a lazy reconcile places per step (as a first backup's fill
/// does): the rendering is held a run at a time.
const PLACE_RUN: usize = 8192;

/// [`extra_paths`] against a lazy rendering: the disk walked in path
/// order (each folder's names sorted, a folder's contents right after
/// it) beside the rendering's own path order, so a path on disk is wanted
/// when the rendering's next path at or after it is it or lies below it.
/// Memory: the walk's open folders and the extras.
pub fn extra_paths_lazy(target: &Path, render: &mut LazyRender<'_>) -> Result<Vec<Vec<u8>>> {
    let mut head = render.next()?;
    let mut out = Vec::new();
    find_extra_lazy(target, Vec::new(), render, &mut head, &mut out)?;
    Ok(out)
}

fn find_extra_lazy(
    target: &Path,
    rel: Vec<u8>,
    render: &mut LazyRender<'_>,
    head: &mut Option<BrowsableEntry>,
    out: &mut Vec<Vec<u8>>,
) -> Result<()> {
    for (name, is_dir) in browsable_names(target, &rel)? {
        let p = pathbytes::join(&rel, &name);
        while head
            .as_ref()
            .is_some_and(|h| cmp_paths(&h.path, &p).is_lt())
        {
            *head = render.next()?;
        }
        let wanted = head
            .as_ref()
            .is_some_and(|h| pathbytes::is_at_or_under(&h.path, &p));
        if !wanted {
            out.push(p);
        } else if is_dir {
            find_extra_lazy(target, p, render, head, out)?;
        }
    }
    Ok(())
}

/// The names in folder `rel` of a browsable tree at `target`, sorted, each
/// with whether it is a folder (from readdir's d_type: no stat per entry),
/// `.trove` left out at the top; none if the folder does not exist.
pub fn browsable_names(target: &Path, rel: &[u8]) -> Result<Vec<(Vec<u8>, bool)>> {
    let dir = pathbytes::to_fs(target, rel);
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", &dir, e)),
    };
    let mut names: Vec<(Vec<u8>, bool)> = Vec::new();
    for ent in rd {
        let ent = ent.ctx("list", &dir)?;
        let name = pathbytes::os_bytes(&ent.file_name()).to_vec();
        if rel.is_empty() && name == b".trove" {
            continue;
        }
        let is_dir = ent.file_type().map(|t| t.is_dir()).unwrap_or(false);
        names.push((name, is_dir));
    }
    names.sort();
    Ok(names)
}

fn find_extra(
    target: &Path,
    rel: Vec<u8>,
    wanted: &HashSet<&[u8]>,
    ancestors: &HashSet<&[u8]>,
    out: &mut Vec<Vec<u8>>,
) -> Result<()> {
    for (name, is_dir) in browsable_names(target, &rel)? {
        let p = pathbytes::join(&rel, &name);
        if wanted.contains(p.as_slice()) || ancestors.contains(p.as_slice()) {
            if is_dir {
                find_extra(target, p, wanted, ancestors, out)?;
            }
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// One of the four sorted runs a snapshot's rendering is made of.
enum Run<'r> {
    /// The top level (`dups`: false) or `_duplicates/` (true).
    Source {
        c: FlatCursor<'r, Leaf, Meta>,
        dups: bool,
    },
    /// `versions/` (`deleted`: false) or `_deleted/` (true).
    Archive {
        c: FlatCursor<'r, History, ()>,
        deleted: bool,
        pending: std::collections::VecDeque<BrowsableEntry>,
    },
}

impl Run<'_> {
    fn next(&mut self) -> Result<Option<BrowsableEntry>> {
        let esc = render::Escapes::default();
        match self {
            Run::Source { c, dups } => {
                while let Some((p, f)) = c.next()? {
                    let item = match f {
                        Flat::Leaf(l) => Item::Leaf(l),
                        Flat::Dir(d) => Item::Dir(d),
                    };
                    let dup = matches!(item, Item::Leaf(Leaf::File { dup: true, .. }));
                    if dup == *dups {
                        if let Some(b) = render::render_item(&esc, &p, &item) {
                            return Ok(Some(b));
                        }
                    }
                }
                Ok(None)
            }
            Run::Archive {
                c,
                deleted,
                pending,
            } => loop {
                if let Some(e) = pending.pop_front() {
                    return Ok(Some(e));
                }
                let Some((p, f)) = c.next()? else {
                    return Ok(None);
                };
                let Flat::Leaf(h) = f else { continue };
                let mut v = Vec::new();
                if *deleted {
                    render::render_deleted(&p, &h, &mut v);
                } else {
                    render::render_versions(&p, &h, &mut v);
                }
                // v10.bak sorts before v2.bak.
                v.sort_by(|a, b| pathbytes::cmp_paths(&a.path, &b.path));
                pending.extend(v);
            },
        }
    }
}

/// The rendering of a snapshot (`render::render`) produced lazily in path
/// order, by merging its four runs as the trees are read: a first
/// backup's fill and `verify`'s check then never hold the listing or the
/// rendering.
pub struct LazyRender<'r> {
    runs: Vec<Run<'r>>,
    heads: Vec<Option<BrowsableEntry>>,
}

impl<'r> LazyRender<'r> {
    /// `None` when the lazy form would not be exact: reserved names are
    /// escaped (they reorder the top level) or the archive nests (a file
    /// and a folder may need one path: only the whole render resolves it).
    pub fn new(repo: &'r LocalRepo, rec: &SnapshotRecord) -> Result<Option<LazyRender<'r>>> {
        let root: TreeObject<Leaf, Meta> = tree::load_tree(repo, &rec.root)?;
        let esc = render::Escapes::for_top_names(root.entries.iter().map(|n| n.name.as_slice()));
        if !esc.is_empty() {
            return Ok(None);
        }
        let mut c = FlatCursor::<History, ()>::new(repo, &rec.archive, None, Limit::archive())?;
        let mut last: Option<Vec<u8>> = None;
        while let Some((p, f)) = c.next()? {
            if let Flat::Leaf(_) = f {
                if last.as_ref().is_some_and(|a| pathbytes::is_under(&p, a)) {
                    return Ok(None);
                }
                last = Some(p);
            }
        }
        let mut runs = Vec::new();
        for dups in [false, true] {
            runs.push(Run::Source {
                c: FlatCursor::new(repo, &rec.root, None, rec.source_limit())?,
                dups,
            });
        }
        for deleted in [false, true] {
            runs.push(Run::Archive {
                c: FlatCursor::new(repo, &rec.archive, None, Limit::archive())?,
                deleted,
                pending: Default::default(),
            });
        }
        let mut r = LazyRender {
            heads: Vec::with_capacity(runs.len()),
            runs,
        };
        for i in 0..r.runs.len() {
            let h = r.runs[i].next()?;
            r.heads.push(h);
        }
        Ok(Some(r))
    }

    /// Hand `f` the rest of the rendering `len` entries at a time, in path
    /// order (the last run shorter, possibly empty: `f` is called at least
    /// once); returns how many entries there were.
    pub fn in_runs(
        &mut self,
        len: usize,
        f: &mut dyn FnMut(&[BrowsableEntry]) -> Result<()>,
    ) -> Result<u64> {
        let mut total = 0u64;
        let mut run = Vec::with_capacity(len);
        loop {
            let next = self.next()?;
            let done = next.is_none();
            run.extend(next);
            if done || run.len() >= len {
                total += run.len() as u64;
                f(&run)?;
                run.clear();
            }
            if done {
                return Ok(total);
            }
        }
    }

    #[allow(clippy::should_implement_trait)] // fallible: Result<Option<_>>
    pub fn next(&mut self) -> Result<Option<BrowsableEntry>> {
        let mut best: Option<usize> = None;
        for (i, h) in self.heads.iter().enumerate() {
            if let Some(e) = h {
                let better = match best.and_then(|b| self.heads[b].as_ref()) {
                    Some(b) => pathbytes::cmp_paths(&e.path, &b.path).is_lt(),
                    None => true,
                };
                if better {
                    best = Some(i);
                }
            }
        }
        let Some(i) = best else { return Ok(None) };
        let next = self.runs[i].next()?;
        Ok(std::mem::replace(&mut self.heads[i], next))
    }
}

/// The snapshot the browsable tree at BACKUP_ROOT shows, if known.
/// Refuse to link anything but a regular file into the browsable tree: a
/// symlink or FIFO put in an object's place would otherwise appear there
/// (a hardlink of a symlink is a symlink).
fn check_object_type(obj: &Path) -> Result<()> {
    match fs::symlink_metadata(obj) {
        Ok(m) if !m.is_file() => Err(not_a_file(obj, &m)),
        _ => Ok(()),
    }
}

/// The error for an object `obj` that is not a regular file (`m`).
fn not_a_file(obj: &Path, m: &fs::Metadata) -> Error {
    Error::corrupt(
        "object",
        obj,
        format!(
            "it is {}, not a regular file, so it is not linked into the browsable tree",
            crate::fsutil::describe_type(&m.file_type())
        ),
    )
}

/// The outcome of `trove materialize`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct MaterializeReport {
    pub snapshot: String,
    pub target: String,
    pub entries: u64,
    pub linked: u64,
    pub copied: u64,
    pub created: u64,
    pub relinked: u64,
    pub removed: u64,
    pub quarantined: u64,
    /// Damaged objects re-stored from a good copy in the tree.
    pub repaired: u64,
    pub unchanged: u64,
    /// Entries trove did not create, left in place (or quarantined with
    /// `--prune-extra`).
    pub extra: Vec<String>,
    /// Entries that could not be put in place: (path, reason), the
    /// first [`KEPT_FAILURES`] in path order.
    pub failures: Vec<(String, String)>,
    /// How many entries could not be put in place, in all.
    pub failures_total: u64,
}

impl MaterializeReport {
    /// True when the run changed nothing on disk.
    pub fn nothing_done(&self) -> bool {
        self.linked
            + self.copied
            + self.created
            + self.relinked
            + self.removed
            + self.quarantined
            + self.repaired
            == 0
    }
}

/// `trove materialize`: the latest snapshot's tree rebuilt at `target`.
/// A writer like backup and prune, it first empties what an interrupted
/// write left in tmp/ (the fault sweep found materialize leaving one), and
/// upgrades an older repository format like every writer. The caller
/// holds the exclusive lock.
pub fn rebuild_latest(
    repo: &LocalRepo,
    target: Option<&Path>,
    prune_extra: bool,
) -> Result<MaterializeReport> {
    repo.begin_write()?;
    let snap = crate::repo::snapshot::resolve(repo, "latest")?;
    rebuild(repo, &snap, target, prune_extra)
}

/// Rebuild the browsable tree of `snap` at `target` (the backup root when
/// `None`) from the snapshot and the objects: the same rendering and the
/// same placement code as a backup's incremental update, applied to
/// whatever is on disk. Idempotent.
pub fn rebuild(
    repo: &LocalRepo,
    snap: &crate::repo::snapshot::Snapshot,
    target: Option<&Path>,
    prune_extra: bool,
) -> Result<MaterializeReport> {
    let at_root = match target {
        None => true,
        Some(t) => {
            let canon = |p: &Path| {
                std::path::absolute(p)
                    .ok()
                    .and_then(|a| a.canonicalize().ok().or(Some(a)))
            };
            let (t, root, dir) = (canon(t), canon(&repo.root), canon(&repo.dir));
            if let (Some(t), Some(dir)) = (&t, &dir) {
                if t.starts_with(dir) {
                    return Err(Error::Usage(format!(
                        "materialize target {} is inside the repository's .trove directory: choose another directory",
                        t.display()
                    )));
                }
            }
            t == root
        }
    };
    let dest = if at_root {
        repo.root.clone()
    } else {
        target
            .map(Path::to_path_buf)
            .unwrap_or_else(|| repo.root.clone())
    };
    let mut m = Materializer::new(repo, &dest);
    m.relink = true;
    let (total, extra) = match m.reconcile_lazy(repo, &snap.record, prune_extra)? {
        Some(done) => done,
        None => {
            // Reserved names escaped or a nesting archive: only the whole
            // rendering is exact.
            let (entries, archive) = crate::repo::snapshot::load_snapshot(repo, &snap.record)?;
            let desired = crate::browsable::render::render(&entries, &archive);
            drop((entries, archive));
            let extra = m.reconcile(&desired, prune_extra)?;
            (desired.len() as u64, extra)
        }
    };
    let failures = m.take_failures();
    let failures_total = failures.total;
    if at_root {
        if failures.is_empty() {
            repo.write_marker(&snap.id)?;
        } else {
            // Whatever the tree showed before, it is not whole now: the
            // next command checks all of it.
            repo.clear_marker()?;
        }
    }
    let s = &m.stats;
    Ok(MaterializeReport {
        snapshot: snap.id.short(),
        target: pathbytes::display_path(&dest),
        entries: total,
        linked: Stats::get(&s.linked),
        copied: Stats::get(&s.copied),
        created: Stats::get(&s.created),
        relinked: Stats::get(&s.relinked),
        removed: Stats::get(&s.removed),
        quarantined: Stats::get(&s.quarantined),
        repaired: Stats::get(&s.repaired),
        unchanged: Stats::get(&s.unchanged),
        extra: if prune_extra {
            Vec::new()
        } else {
            extra.iter().map(|p| pathbytes::display(p)).collect()
        },
        failures_total,
        failures: failures
            .first
            .into_iter()
            .map(|(p, msg)| (pathbytes::display(&p), msg))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{Digest, HashAlgo, ObjectId};
    use crate::local::objects::Batch;
    use crate::model::{Archived, Entry};
    use crate::repo::snapshot::Summary;

    /// A full disk fails every entry after it: of millions of failures
    /// only the first thousand in path order are kept (never more than
    /// twice that at once), and every one is counted.
    #[test]
    fn failures_keep_the_first_in_path_order_and_count_all() {
        let n = 5 * KEPT_FAILURES + 7;
        let name = |k: usize| format!("d/{k:06}").into_bytes();
        let mut f = Failures::default();
        for i in 0..n {
            // Every k once, out of order (7919 is prime to n).
            let k = (i * 7919) % n;
            f.add(&name(k), format!("reason {k}"));
            assert!(f.first.len() < 2 * KEPT_FAILURES);
        }
        f.trim();
        assert_eq!(f.total, n as u64);
        let want: Vec<Vec<u8>> = (0..KEPT_FAILURES).map(name).collect();
        let got: Vec<Vec<u8>> = f.first.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(got, want);
        assert!(f
            .first
            .iter()
            .enumerate()
            .all(|(k, (_, m))| *m == format!("reason {k}")));

        let mut g = Failures::default();
        assert!(g.is_empty());
        g.add(b"a", "first".into());
        g.append(f);
        assert_eq!(g.total, n as u64 + 1);
        assert_eq!(g.first.len(), KEPT_FAILURES);
        assert_eq!(g.first[0].0, b"a");
    }

    fn file(p: &str, dup: bool, n: u8) -> Entry {
        Entry {
            path: p.as_bytes().to_vec(),
            item: Item::Leaf(Leaf::File {
                size: 1,
                id: ObjectId(Digest([n; 32])),
                dup,
                meta: Meta::default(),
                ext: Default::default(),
            }),
        }
    }

    fn dir(p: &str) -> Entry {
        Entry {
            path: p.as_bytes().to_vec(),
            item: Item::Dir(Meta::default()),
        }
    }

    fn archived(n: u8) -> Archived {
        Archived {
            id: ObjectId(Digest([n; 32])),
            size: 1,
            meta: Meta::default(),
            time_ns: 0,
        }
    }

    /// Store the two trees and read the lazy rendering back whole.
    fn lazily(
        entries: &[Entry],
        archive: &[(Vec<u8>, History)],
    ) -> Result<Option<Vec<BrowsableEntry>>> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", Path::new("/tmp"), e))?;
        let repo = LocalRepo::init(dir.path(), HashAlgo::Blake3)?;
        let batch = Batch::new(&repo);
        let none = HashSet::new();
        let root = tree::write_tree(HashAlgo::Blake3, entries, &batch, &none)?;
        let arch = tree::write_tree(HashAlgo::Blake3, archive, &batch, &none)?;
        batch.commit()?;
        let rec = SnapshotRecord {
            seq: 1,
            time_ns: 0,
            parent: None,
            sources: Vec::new(),
            root,
            archive: arch,
            summary: Summary::default(),
            owners: Default::default(),
        };
        let Some(mut r) = LazyRender::new(&repo, &rec)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        while let Some(e) = r.next()? {
            out.push(e);
        }
        Ok(Some(out))
    }

    #[test]
    fn lazy_render_is_the_whole_rendering() -> Result<()> {
        // Uppercase sorts before `_duplicates`, lowercase after; twelve
        // versions put `v10.bak` before `v2.bak`.
        let entries = vec![
            file("A", true, 1),
            file("B", false, 1),
            dir("d"),
            file("d/x", true, 2),
            file("d/y", false, 2),
            file("z", true, 1),
        ];
        let archive = vec![
            (
                b"d/y".to_vec(),
                History {
                    next_version: 13,
                    versions: (1..13).map(|n| (n, archived(n as u8))).collect(),
                    deleted: None,
                },
            ),
            (
                b"gone/x".to_vec(),
                History {
                    next_version: 2,
                    versions: vec![(1, archived(7))],
                    deleted: Some(archived(8)),
                },
            ),
        ];
        let whole = render::render(&entries, &archive);
        assert_eq!(lazily(&entries, &archive)?, Some(whole));
        // Not exact, so not offered: an escaped name, a nesting archive.
        assert_eq!(lazily(&[file("versions", false, 1)], &[])?, None);
        let nests = vec![
            (b"a".to_vec(), archive[1].1.clone()),
            (b"a/b".to_vec(), archive[1].1.clone()),
        ];
        assert_eq!(lazily(&entries, &nests)?, None);
        Ok(())
    }
}
