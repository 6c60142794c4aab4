//! Puts a rendered browsable tree (`browse::render`) on disk under a target
//! directory, with hardlinks into the object store.
//!
//! [`apply`] moves the tree from one rendering to the next, touching only
//! the entries that differ; it is idempotent, so replaying it after a crash
//! mid-way is safe. [`reconcile`] compares a rendering with what is really
//! on disk (after damage, or into a fresh target). Neither ever deletes a
//! file it cannot prove is trove's own (a hardlink of the object, an empty
//! file, or a copy with the right size): anything else standing in the way
//! is moved to `.trove/quarantine/`, never removed.
//!
//! `cache/materialized` records the snapshot the tree at BACKUP_ROOT shows,
//! so the next command knows whether it must catch up.

use crate::browse::{self, BEntry, BKind};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{self, Placed};
use crate::id::SnapshotId;
use crate::pathbytes::{self, cmp_paths};
use crate::store::snapshot::SnapshotRecord;
use crate::store::tree::{self, Flat, FlatCursor, History, Item, Leaf, Limit, Meta, TreeObject};
use crate::store::{objects, Repo};
use rayon::prelude::*;
use std::cmp::Ordering;
use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering as AtOrd};

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

pub struct Materializer<'r> {
    repo: &'r Repo,
    target: PathBuf,
    quarantine: PathBuf,
    pub stats: Stats,
    /// Replace a correct copy by a hardlink where the filesystem now allows
    /// one (`trove materialize`; a backup leaves copies alone).
    pub relink: bool,
    /// Entries that could not be put in place (path, reason). One bad entry
    /// (a path too long for the target, a missing object) never stops the
    /// rest of the tree from being built.
    failures: std::sync::Mutex<Vec<(Vec<u8>, String)>>,
}

/// How an on-disk entry relates to a rendered one.
#[derive(Debug, PartialEq, Eq)]
enum Disk {
    Missing,
    Matches,
    /// Trove's own entry with other content (safe to replace).
    Ours,
    /// Something trove did not put there.
    Foreign,
}

impl<'r> Materializer<'r> {
    pub fn new(repo: &'r Repo, target: &Path) -> Materializer<'r> {
        let stamp =
            crate::store::snapshot::format_time(crate::store::now_ns()).replace([' ', ':'], "-");
        Materializer {
            repo,
            target: target.to_path_buf(),
            quarantine: repo.dir.join("quarantine").join(stamp),
            stats: Stats::default(),
            relink: false,
            failures: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn record(&self, path: &[u8], r: Result<()>) {
        if let Err(e) = r {
            self.failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((path.to_vec(), e.to_string()));
        }
    }

    /// The entries that failed, in path order.
    pub fn take_failures(&self) -> Vec<(Vec<u8>, String)> {
        let mut v = std::mem::take(&mut *self.failures.lock().unwrap_or_else(|p| p.into_inner()));
        v.sort_by(|a, b| cmp_paths(&a.0, &b.0));
        v
    }

    fn fs_path(&self, rel: &[u8]) -> PathBuf {
        pathbytes::to_fs(&self.target, rel)
    }

    /// Classify what is on disk at `e.path` against `e` (and, for
    /// "ours", against the entry `old` that used to be there).
    fn inspect(&self, e: &BEntry, old: Option<&BEntry>) -> Result<Disk> {
        let p = self.fs_path(&e.path);
        let m = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Disk::Missing),
            Err(err) if err.raw_os_error() == Some(libc::ENOTDIR) => return Ok(Disk::Missing),
            Err(err) => return Err(Error::io("stat", &p, err)),
        };
        if self.matches(e, &p, &m)? {
            return Ok(Disk::Matches);
        }
        if let Some(o) = old {
            if self.matches(o, &p, &m)? {
                return Ok(Disk::Ours);
            }
        }
        // A hardlink of a stored object is trove's own whichever snapshot
        // put it there (one whose record is damaged, after `backup
        // --allow-damaged-latest`): its content stays in the store.
        if self.is_object_link(&p, &m)? {
            return Ok(Disk::Ours);
        }
        // An empty directory carries no data: it is safe to replace.
        if m.is_dir()
            && fs::read_dir(&p)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false)
        {
            return Ok(Disk::Ours);
        }
        Ok(Disk::Foreign)
    }

    /// Whether `p` is a hardlink of the stored object its bytes name.
    fn is_object_link(&self, p: &Path, m: &fs::Metadata) -> Result<bool> {
        if !m.is_file() || m.nlink() < 2 || m.len() == 0 {
            return Ok(false);
        }
        let d = objects::hash_object(self.repo.algo(), p)?;
        let obj = self.repo.object_path(&crate::id::ObjectId(d));
        Ok(fs::symlink_metadata(&obj).is_ok_and(|om| om.ino() == m.ino() && om.dev() == m.dev()))
    }

    fn matches(&self, e: &BEntry, p: &Path, m: &fs::Metadata) -> Result<bool> {
        Ok(match &e.kind {
            BKind::Dir => m.is_dir(),
            BKind::Symlink { target } => {
                m.file_type().is_symlink()
                    && fs::read_link(p)
                        .map(|t| pathbytes::os_bytes(t.as_os_str()) == target.as_slice())
                        .unwrap_or(false)
            }
            BKind::File { id, size } => {
                if !m.is_file() || m.len() != *size {
                    false
                } else if *size == 0 {
                    true
                } else {
                    let obj = self.repo.object_path(id);
                    match fs::symlink_metadata(&obj) {
                        Ok(om) if om.ino() == m.ino() && om.dev() == m.dev() => true,
                        // A copy (link fallback): check its bytes.
                        _ if m.nlink() == 1 => objects::hash_object(self.repo.algo(), p)? == id.0,
                        _ => false,
                    }
                }
            }
        })
    }

    /// Before a file at `p` that holds `e`'s content is unlinked or
    /// replaced: if it is a copy (another inode than the object) and the
    /// object itself is damaged — missing, not a regular file, or of the
    /// wrong bytes — the copy is the last good one, so it re-stores the
    /// object instead of being lost. A copy is rare (the EMLINK/EXDEV
    /// fallback, or a user's), so the hash this costs is rare too.
    fn rescue_copy(&self, e: &BEntry, p: &Path) -> Result<()> {
        let BKind::File { id, size } = &e.kind else {
            return Ok(());
        };
        if *size == 0 {
            return Ok(());
        }
        let obj = self.repo.object_path(id);
        let (om, m) = (fs::symlink_metadata(&obj), fs::symlink_metadata(p));
        let Ok(m) = m else { return Ok(()) };
        if !m.is_file()
            || om
                .as_ref()
                .is_ok_and(|om| om.ino() == m.ino() && om.dev() == m.dev())
        {
            return Ok(());
        }
        if objects::object_is_sound(self.repo, id) {
            return Ok(());
        }
        if objects::restore_object_from(self.repo, id, p)? {
            self.stats.repaired.fetch_add(1, AtOrd::Relaxed);
        }
        Ok(())
    }

    /// Move `rel` into this run's quarantine folder. Never replaces
    /// anything already quarantined: a name (or a parent) that is taken
    /// sends the entry to a fresh `~N/` folder beside it.
    fn to_quarantine(&self, rel: &[u8]) -> Result<()> {
        let src = self.fs_path(rel);
        for attempt in 0u32..1000 {
            let base = if attempt == 0 {
                self.quarantine.clone()
            } else {
                self.quarantine.join(format!("~{attempt}"))
            };
            let dest = pathbytes::to_fs(&base, rel);
            if let Some(parent) = dest.parent() {
                if fsutil::create_private_dir(parent).is_err() {
                    continue; // a quarantined file where a folder is needed
                }
            }
            match fsutil::rename_noreplace(&src, &dest) {
                Ok(()) => {
                    tracing::warn!(
                        "moved {} (not created by trove) to {}",
                        src.display(),
                        dest.display()
                    );
                    self.stats.quarantined.fetch_add(1, AtOrd::Relaxed);
                    return Ok(());
                }
                Err(e)
                    if e.kind() == io::ErrorKind::AlreadyExists
                        || e.raw_os_error() == Some(libc::ENOTEMPTY)
                        || e.raw_os_error() == Some(libc::ENOTDIR)
                        || e.raw_os_error() == Some(libc::EISDIR) =>
                {
                    continue;
                }
                Err(e) => return Err(Error::io("move to quarantine", &src, e)),
            }
        }
        Err(Error::Usage(format!(
            "cannot find a free name in {} for {}: clean up the quarantine folder",
            self.quarantine.display(),
            src.display()
        )))
    }

    fn remove(&self, e: &BEntry) -> Result<()> {
        match self.inspect(e, None)? {
            Disk::Missing => Ok(()),
            Disk::Matches => {
                let p = self.fs_path(&e.path);
                self.rescue_copy(e, &p)?;
                let r = match e.kind {
                    BKind::Dir => match fs::remove_dir(&p) {
                        // Something foreign inside: leave the directory.
                        Err(err) if err.raw_os_error() == Some(libc::ENOTEMPTY) => return Ok(()),
                        r => r,
                    },
                    _ => fs::remove_file(&p),
                };
                match r {
                    Ok(()) => {
                        self.stats.removed.fetch_add(1, AtOrd::Relaxed);
                        Ok(())
                    }
                    Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(err) => Err(Error::io("remove", &p, err)),
                }
            }
            Disk::Ours if !matches!(e.kind, BKind::Dir) => {
                // A hardlink of another stored object: nothing is lost.
                let p = self.fs_path(&e.path);
                match fs::remove_file(&p) {
                    Ok(()) => {
                        self.stats.removed.fetch_add(1, AtOrd::Relaxed);
                        Ok(())
                    }
                    Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(err) => Err(Error::io("remove", &p, err)),
                }
            }
            Disk::Ours | Disk::Foreign => {
                if matches!(e.kind, BKind::Dir) {
                    Ok(())
                } else {
                    self.to_quarantine(&e.path)
                }
            }
        }
    }

    /// Create `e` on disk. `fast` tries the common case (nothing there
    /// yet) without a stat first.
    fn place(&self, e: &BEntry, old: Option<&BEntry>, fast: bool) -> Result<()> {
        let p = self.fs_path(&e.path);
        if fast {
            if let BKind::File { id, size } = &e.kind {
                let obj = self.repo.object_path(id);
                // A damaged object (not a regular file) takes the slow
                // path, which may repair it from a good copy at `p`.
                if *size > 0 && check_object_type(&obj).is_ok() {
                    match fs::hard_link(&obj, &p) {
                        Ok(()) => {
                            self.stats.linked.fetch_add(1, AtOrd::Relaxed);
                            return Ok(());
                        }
                        Err(err) if err.kind() == io::ErrorKind::NotFound => {
                            // Parent missing, or the object is: the slow path
                            // creates the parent and reports a missing object.
                        }
                        Err(_) => {}
                    }
                }
            }
        }
        match self.inspect(e, old)? {
            Disk::Matches => {
                if self.relink && self.try_relink(e, &p)? {
                    self.stats.relinked.fetch_add(1, AtOrd::Relaxed);
                } else {
                    self.stats.unchanged.fetch_add(1, AtOrd::Relaxed);
                }
                return Ok(());
            }
            Disk::Missing => {}
            Disk::Ours => {
                if let Some(o) = old {
                    self.rescue_copy(o, &p)?;
                }
                fsutil::remove_any(&p)?
            }
            Disk::Foreign => self.to_quarantine(&e.path)?,
        }
        if let Some(parent) = p.parent() {
            self.ensure_dir(parent)?;
        }
        match &e.kind {
            BKind::Dir => {
                fs::create_dir(&p).ctx("create directory", &p)?;
                self.stats.created.fetch_add(1, AtOrd::Relaxed);
            }
            BKind::Symlink { target } => {
                std::os::unix::fs::symlink(pathbytes::from_bytes(target.clone()), &p)
                    .ctx("create symlink", &p)?;
                self.stats.created.fetch_add(1, AtOrd::Relaxed);
            }
            BKind::File { size: 0, .. } => {
                fsutil::create_empty(&p)?;
                self.stats.created.fetch_add(1, AtOrd::Relaxed);
            }
            BKind::File { id, .. } => {
                let obj = self.repo.object_path(id);
                if fs::symlink_metadata(&obj).is_err() {
                    return Err(Error::Missing {
                        what: "object",
                        id: id.to_hex(),
                        path: obj,
                    });
                }
                check_object_type(&obj)?;
                match fsutil::link_or_copy(&obj, &p)? {
                    Placed::Linked => self.stats.linked.fetch_add(1, AtOrd::Relaxed),
                    Placed::Copied => self.stats.copied.fetch_add(1, AtOrd::Relaxed),
                };
            }
        }
        Ok(())
    }

    /// `p` holds the right content for `e`: if it is a copy and a hardlink
    /// of the object can be made now, put the link in its place (via a temp
    /// name, so the path never goes missing).
    fn try_relink(&self, e: &BEntry, p: &Path) -> Result<bool> {
        let BKind::File { id, size } = &e.kind else {
            return Ok(false);
        };
        if *size == 0 {
            return Ok(false);
        }
        let obj = self.repo.object_path(id);
        let (Ok(om), Ok(m)) = (fs::symlink_metadata(&obj), fs::symlink_metadata(p)) else {
            return Ok(false);
        };
        if om.ino() == m.ino() && om.dev() == m.dev() {
            return Ok(false);
        }
        // `p` is a good copy (`inspect` hashed it). It may only give way to
        // an object that is itself intact; a damaged object is first
        // re-stored from the copy (and the copy kept if that fails).
        if !objects::object_is_sound(self.repo, id) {
            if !objects::restore_object_from(self.repo, id, p)? {
                return Ok(false);
            }
            self.stats.repaired.fetch_add(1, AtOrd::Relaxed);
        }
        let dir = p.parent().unwrap_or(&self.target);
        let tmp = dir.join(format!(".{}", fsutil::tmp_name("trove-link")));
        if fs::hard_link(&obj, &tmp).is_err() {
            return Ok(false); // still refused (EMLINK, EXDEV…): the copy stays
        }
        if let Err(err) = fs::rename(&tmp, p) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io("replace copy with hardlink", p, err));
        }
        Ok(true)
    }

    /// Make sure `dir` (an absolute path inside the target) and every
    /// folder between the target and it are real directories: a symlink or
    /// file in the way is moved to quarantine, never followed.
    fn ensure_dir(&self, dir: &Path) -> Result<()> {
        let rel = dir
            .strip_prefix(&self.target)
            .map(|r| pathbytes::os_bytes(r.as_os_str()).to_vec())
            .map_err(|_| Error::Usage(format!("{} is outside the target", dir.display())))?;
        self.ensure_rel(&rel, &mut HashSet::new())
    }

    /// `ensure_dir` by relative path; `done` holds folders already checked.
    fn ensure_rel(&self, rel: &[u8], done: &mut HashSet<Vec<u8>>) -> Result<()> {
        if rel.is_empty() || done.contains(rel) {
            return Ok(());
        }
        // Parents first: once they are known to be real directories, an
        // lstat of this one cannot pass through a symlink.
        self.ensure_rel(pathbytes::parent(rel), done)?;
        let dir = self.fs_path(rel);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                self.to_quarantine(rel)?;
                self.make_dir(&dir)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.make_dir(&dir)?,
            Err(e) => return Err(Error::io("stat", &dir, e)),
        }
        done.insert(rel.to_vec());
        Ok(())
    }

    fn make_dir(&self, dir: &Path) -> Result<()> {
        match fs::create_dir(dir) {
            Ok(()) => {
                self.stats.created.fetch_add(1, AtOrd::Relaxed);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match fs::symlink_metadata(dir) {
                Ok(m) if m.is_dir() => Ok(()),
                _ => Err(Error::io("create directory", dir, e)),
            },
            Err(e) => Err(Error::io("create directory", dir, e)),
        }
    }

    /// Check (and create) the parent folders of `paths` one by one, in
    /// order, before entries are placed in parallel: implicit folders such
    /// as `versions/<path>/` have no entry of their own, and two threads
    /// must not both try to move the same thing out of their way.
    fn prepare_parents<'a>(&self, paths: impl Iterator<Item = &'a [u8]>) {
        let mut parents: Vec<&[u8]> = paths
            .map(pathbytes::parent)
            .filter(|p| !p.is_empty())
            .collect();
        parents.sort_by(|a, b| cmp_paths(a, b));
        parents.dedup();
        let mut done = HashSet::new();
        for p in parents {
            let r = self.ensure_rel(p, &mut done);
            self.record(p, r);
        }
    }

    /// Move the tree on disk from rendering `old` to rendering `new`. Both
    /// may be whole renderings or just their differing parts
    /// (`browse::render_diff`); `wanted_dir` says whether the complete new
    /// rendering shows a directory at a path, so that directories emptied
    /// by removals are cleaned up unless the source has them too.
    pub fn apply(
        &self,
        old: &[BEntry],
        new: &[BEntry],
        wanted_dir: &(dyn Fn(&[u8]) -> bool + Sync),
    ) -> Result<()> {
        let mut removals: Vec<&BEntry> = Vec::new();
        let mut changes: Vec<(&BEntry, Option<&BEntry>)> = Vec::new();
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
        // Children before parents, so directories empty out first.
        for e in removals.iter().rev() {
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
    fn place_all(&self, changes: &[(&BEntry, Option<&BEntry>)]) {
        for (e, old) in changes.iter().filter(|(e, _)| matches!(e.kind, BKind::Dir)) {
            self.record(&e.path, self.place(e, *old, false));
        }
        changes
            .par_iter()
            .filter(|(e, _)| !matches!(e.kind, BKind::Dir))
            .for_each(|(e, old)| self.record(&e.path, self.place(e, *old, old.is_none())));
    }

    /// Remove directories left empty by removals (implicit parents such as
    /// `versions/<path>/`), but never one the rendering still wants.
    fn prune_empty_dirs(&self, dirs: &[&[u8]], wanted_dir: &dyn Fn(&[u8]) -> bool) {
        let mut done: HashSet<Vec<u8>> = HashSet::new();
        for d in dirs {
            let mut cur: &[u8] = d;
            while !cur.is_empty() && !wanted_dir(cur) && done.insert(cur.to_vec()) {
                let p = self.fs_path(cur);
                match fs::remove_dir(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(_) => break, // not empty: its parent is not either
                }
                cur = pathbytes::parent(cur);
            }
        }
    }

    /// `wanted_dir` for a complete rendering.
    pub fn dirs_of(render: &[BEntry]) -> HashSet<Vec<u8>> {
        render
            .iter()
            .filter(|e| matches!(e.kind, BKind::Dir))
            .map(|e| e.path.clone())
            .collect()
    }

    /// Bring the disk in line with `desired`, whatever is there now.
    /// Entries trove left behind (hardlinks of stored objects, empty
    /// directories) that `desired` lacks are removed; anything else extra
    /// is returned and, with `prune_extra`, moved to quarantine.
    pub fn reconcile(&self, desired: &[BEntry], prune_extra: bool) -> Result<Vec<Vec<u8>>> {
        fsutil::create_private_dir(&self.target)?;
        // What is on disk is unknown, but the fast path is still safe: it
        // only links where nothing exists (EEXIST sends it to the slow
        // path, which inspects what is there).
        let changes: Vec<(&BEntry, Option<&BEntry>)> = desired.iter().map(|e| (e, None)).collect();
        self.prepare_parents(desired.iter().map(|e| e.path.as_slice()));
        for (e, _) in changes.iter().filter(|(e, _)| matches!(e.kind, BKind::Dir)) {
            self.record(&e.path, self.place(e, None, false));
        }
        changes
            .par_iter()
            .filter(|(e, _)| !matches!(e.kind, BKind::Dir))
            .for_each(|(e, _)| self.record(&e.path, self.place(e, None, true)));
        let mut foreign = Vec::new();
        for p in extra_paths(&self.target, desired)? {
            self.clear_stale(&p, &mut foreign)?;
        }
        foreign.sort_by(|a, b| cmp_paths(a, b));
        if prune_extra {
            for p in &foreign {
                self.record(p, self.to_quarantine(p));
            }
            // Folders that held only quarantined entries go too (an empty
            // folder carries no data), unless the rendering has them.
            let mut needed: HashSet<&[u8]> = HashSet::new();
            for e in desired {
                let mut p: &[u8] = &e.path;
                while !p.is_empty() && needed.insert(p) {
                    p = pathbytes::parent(p);
                }
            }
            let mut dirs: Vec<&[u8]> = foreign.iter().map(|p| pathbytes::parent(p)).collect();
            dirs.sort_by(|a, b| cmp_paths(b, a));
            dirs.dedup();
            self.prune_empty_dirs(&dirs, &|p: &[u8]| needed.contains(p));
        }
        Ok(foreign)
    }

    /// Remove `rel` if it is provably trove's own leftover (a hardlink of a
    /// stored object, or a directory holding only such things); push what
    /// is not to `foreign`.
    fn clear_stale(&self, rel: &[u8], foreign: &mut Vec<Vec<u8>>) -> Result<()> {
        let p = self.fs_path(rel);
        let m = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("stat", &p, e)),
        };
        if m.is_dir() {
            let mut names: Vec<Vec<u8>> = Vec::new();
            for ent in fs::read_dir(&p).ctx("list", &p)? {
                let ent = ent.ctx("list", &p)?;
                names.push(pathbytes::os_bytes(&ent.file_name()).to_vec());
            }
            names.sort();
            let before = foreign.len();
            for n in names {
                self.clear_stale(&pathbytes::join(rel, &n), foreign)?;
            }
            if foreign.len() == before && fs::remove_dir(&p).is_ok() {
                self.stats.removed.fetch_add(1, AtOrd::Relaxed);
            }
            return Ok(());
        }
        if m.is_file() && m.nlink() >= 2 && m.len() > 0 {
            let d = objects::hash_object(self.repo.algo(), &p)?;
            let obj = self.repo.object_path(&crate::id::ObjectId(d));
            if let Ok(om) = fs::metadata(&obj) {
                if om.ino() == m.ino() && om.dev() == m.dev() {
                    fs::remove_file(&p).ctx("remove stale entry", &p)?;
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
pub fn extra_paths(target: &Path, desired: &[BEntry]) -> Result<Vec<Vec<u8>>> {
    extra_paths_in(target, &PathSets::of(desired))
}

/// The paths of a rendering (`listed`) and every folder above them
/// (`ancestors`), which a check of the tree on disk needs more than once.
pub struct PathSets<'a> {
    pub listed: HashSet<&'a [u8]>,
    pub ancestors: HashSet<&'a [u8]>,
}

impl<'a> PathSets<'a> {
    pub fn of(desired: &'a [BEntry]) -> PathSets<'a> {
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
        pending: std::collections::VecDeque<BEntry>,
    },
}

impl Run<'_> {
    fn next(&mut self) -> Result<Option<BEntry>> {
        let esc = browse::Escapes::default();
        match self {
            Run::Source { c, dups } => {
                while let Some((p, f)) = c.next()? {
                    let item = match f {
                        Flat::Leaf(l) => Item::Leaf(l),
                        Flat::Dir(d) => Item::Dir(d),
                    };
                    let dup = matches!(item, Item::Leaf(Leaf::File { dup: true, .. }));
                    if dup == *dups {
                        return Ok(Some(browse::render_item(&esc, &p, &item)));
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
                    browse::render_deleted(&p, &h, &mut v);
                } else {
                    browse::render_versions(&p, &h, &mut v);
                }
                // v10.bak sorts before v2.bak.
                v.sort_by(|a, b| pathbytes::cmp_paths(&a.path, &b.path));
                pending.extend(v);
            },
        }
    }
}

/// The rendering of a snapshot (`browse::render`) produced lazily in path
/// order, by merging its four runs as the trees are read: a first
/// backup's fill and `verify`'s check then never hold the listing or the
/// rendering.
pub struct LazyRender<'r> {
    runs: Vec<Run<'r>>,
    heads: Vec<Option<BEntry>>,
}

impl<'r> LazyRender<'r> {
    /// `None` when the lazy form would not be exact: reserved names are
    /// escaped (they reorder the top level) or the archive nests (a file
    /// and a folder may need one path: only the whole render resolves it).
    pub fn new(repo: &'r Repo, rec: &SnapshotRecord) -> Result<Option<LazyRender<'r>>> {
        let root: TreeObject<Leaf, Meta> = tree::load_tree(repo, &rec.root)?;
        let esc = browse::Escapes::for_top_names(root.entries.iter().map(|n| n.name.as_slice()));
        if !esc.is_empty() {
            return Ok(None);
        }
        let mut c = FlatCursor::<History, ()>::new(repo, &rec.archive, None, Limit::archive())?;
        let mut last: Option<Vec<u8>> = None;
        while let Some((p, f)) = c.next()? {
            if let Flat::Leaf(_) = f {
                if last
                    .as_ref()
                    .is_some_and(|a| p.len() > a.len() && p.starts_with(a) && p[a.len()] == b'/')
                {
                    return Ok(None);
                }
                last = Some(p);
            }
        }
        let mut runs = Vec::new();
        for dups in [false, true] {
            runs.push(Run::Source {
                c: FlatCursor::new(repo, &rec.root, None, Limit::source(rec))?,
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

    #[allow(clippy::should_implement_trait)] // fallible: Result<Option<_>>
    pub fn next(&mut self) -> Result<Option<BEntry>> {
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

const MARKER: &str = "materialized";

/// The snapshot the browsable tree at BACKUP_ROOT shows, if known.
/// Refuse to link anything but a regular file into the browsable tree: a
/// symlink or FIFO put in an object's place would otherwise appear there
/// (a hardlink of a symlink is a symlink).
fn check_object_type(obj: &Path) -> Result<()> {
    match fs::symlink_metadata(obj) {
        Ok(m) if !m.is_file() => Err(Error::corrupt(
            "object",
            obj,
            format!(
                "it is {}, not a regular file, so it is not linked into the browsable tree",
                objects::describe_type(&m.file_type())
            ),
        )),
        _ => Ok(()),
    }
}

pub fn read_marker(repo: &Repo) -> Option<SnapshotId> {
    let s = fs::read_to_string(repo.cache_dir().join(MARKER)).ok()?;
    SnapshotId::from_hex(s.trim())
}

pub fn write_marker(repo: &Repo, id: &SnapshotId) -> Result<()> {
    fsutil::atomic_write(
        &repo.tmp_dir(),
        &repo.cache_dir().join(MARKER),
        format!("{}\n", id.to_hex()).as_bytes(),
        0o600,
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
    /// Entries that could not be put in place: (path, reason).
    pub failures: Vec<(String, String)>,
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

/// Rebuild the browsable tree of `snap` at `target` (the backup root when
/// `None`) from the snapshot and the objects: the same rendering and the
/// same placement code as a backup's incremental update, applied to
/// whatever is on disk. Idempotent.
pub fn rebuild(
    repo: &Repo,
    snap: &crate::store::snapshot::Snapshot,
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
    let (entries, archive) = crate::backup::load_snapshot(repo, &snap.record)?;
    let desired = crate::browse::render(&entries, &archive);
    drop((entries, archive));
    let mut m = Materializer::new(repo, &dest);
    m.relink = true;
    let extra = m.reconcile(&desired, prune_extra)?;
    let failures = m.take_failures();
    if at_root && failures.is_empty() {
        write_marker(repo, &snap.id)?;
    }
    let s = &m.stats;
    Ok(MaterializeReport {
        snapshot: snap.id.short(),
        target: pathbytes::display_path(&dest),
        entries: desired.len() as u64,
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
        failures: failures
            .into_iter()
            .map(|(p, msg)| (pathbytes::display(&p), msg))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{Digest, HashAlgo, ObjectId};
    use crate::store::objects::Batch;
    use crate::store::snapshot::Summary;
    use crate::store::tree::{Archived, Entry};

    fn file(p: &str, dup: bool, n: u8) -> Entry {
        Entry {
            path: p.as_bytes().to_vec(),
            item: Item::Leaf(Leaf::File {
                size: 1,
                id: ObjectId(Digest([n; 32])),
                dup,
                meta: Meta::default(),
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
    fn lazily(entries: &[Entry], archive: &[(Vec<u8>, History)]) -> Result<Option<Vec<BEntry>>> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", Path::new("/tmp"), e))?;
        let repo = Repo::init(dir.path(), HashAlgo::Blake3)?;
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
        let whole = browse::render(&entries, &archive);
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
