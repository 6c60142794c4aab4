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

use crate::browse::{BEntry, BKind};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{self, Placed};
use crate::id::SnapshotId;
use crate::pathbytes::{self, cmp_paths};
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
    pub unchanged: AtomicU64,
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
                    match fs::metadata(&obj) {
                        Ok(om) if om.ino() == m.ino() && om.dev() == m.dev() => true,
                        // A copy (link fallback): check its bytes.
                        _ if m.nlink() == 1 => objects::hash_file(self.repo.algo(), p)? == id.0,
                        _ => false,
                    }
                }
            }
        })
    }

    fn to_quarantine(&self, rel: &[u8]) -> Result<()> {
        let src = self.fs_path(rel);
        let dest = pathbytes::to_fs(&self.quarantine, rel);
        if let Some(parent) = dest.parent() {
            fsutil::create_private_dir(parent)?;
        }
        fs::rename(&src, &dest).ctx("move to quarantine", &src)?;
        tracing::warn!(
            "moved {} (not created by trove) to {}",
            src.display(),
            dest.display()
        );
        self.stats.quarantined.fetch_add(1, AtOrd::Relaxed);
        Ok(())
    }

    fn remove(&self, e: &BEntry) -> Result<()> {
        match self.inspect(e, None)? {
            Disk::Missing => Ok(()),
            Disk::Matches => {
                let p = self.fs_path(&e.path);
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
                if *size > 0 {
                    match fs::hard_link(self.repo.object_path(id), &p) {
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
                self.stats.unchanged.fetch_add(1, AtOrd::Relaxed);
                return Ok(());
            }
            Disk::Missing => {}
            Disk::Ours => fsutil::remove_any(&p)?,
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
                if !obj.exists() {
                    return Err(Error::Missing {
                        what: "object",
                        id: id.to_hex(),
                        path: obj,
                    });
                }
                match fsutil::link_or_copy(&obj, &p)? {
                    Placed::Linked => self.stats.linked.fetch_add(1, AtOrd::Relaxed),
                    Placed::Copied => self.stats.copied.fetch_add(1, AtOrd::Relaxed),
                };
            }
        }
        Ok(())
    }

    /// Make sure `dir` (an absolute path inside the target) is a directory,
    /// moving a foreign non-directory out of the way.
    fn ensure_dir(&self, dir: &Path) -> Result<()> {
        match fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => {
                let rel = dir
                    .strip_prefix(&self.target)
                    .map(|r| pathbytes::os_bytes(r.as_os_str()).to_vec())
                    .map_err(|_| {
                        Error::Usage(format!("{} is outside the target", dir.display()))
                    })?;
                self.to_quarantine(&rel)?;
                fs::create_dir_all(dir).ctx("create directory", dir)
            }
            Err(_) => {
                if let Some(parent) = dir.parent() {
                    if parent != self.target && parent.starts_with(&self.target) {
                        self.ensure_dir(parent)?;
                    }
                }
                match fs::create_dir(dir) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                    Err(e) => Err(Error::io("create directory", dir, e)),
                }
            }
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

    /// Bring the disk in line with `desired`, whatever is there now. Extra
    /// entries are reported and, with `prune_extra`, moved to quarantine.
    pub fn reconcile(&self, desired: &[BEntry], prune_extra: bool) -> Result<Vec<Vec<u8>>> {
        fsutil::create_private_dir(&self.target)?;
        // No fast path here: what is on disk is unknown, so every entry is
        // inspected before it is placed.
        let changes: Vec<(&BEntry, Option<&BEntry>)> = desired.iter().map(|e| (e, None)).collect();
        for (e, _) in changes.iter().filter(|(e, _)| matches!(e.kind, BKind::Dir)) {
            self.record(&e.path, self.place(e, None, false));
        }
        changes
            .par_iter()
            .filter(|(e, _)| !matches!(e.kind, BKind::Dir))
            .for_each(|(e, _)| self.record(&e.path, self.place(e, None, false)));
        let mut extra = Vec::new();
        let wanted: HashSet<&[u8]> = desired.iter().map(|e| e.path.as_slice()).collect();
        let mut ancestors: HashSet<&[u8]> = HashSet::new();
        for e in desired {
            let mut p = pathbytes::parent(&e.path);
            while !p.is_empty() && ancestors.insert(p) {
                p = pathbytes::parent(p);
            }
        }
        self.find_extra(Vec::new(), &wanted, &ancestors, &mut extra)?;
        extra.sort_by(|a, b| cmp_paths(a, b));
        if prune_extra {
            for p in &extra {
                self.to_quarantine(p)?;
            }
        }
        Ok(extra)
    }

    fn find_extra(
        &self,
        rel: Vec<u8>,
        wanted: &HashSet<&[u8]>,
        ancestors: &HashSet<&[u8]>,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<()> {
        let dir = self.fs_path(&rel);
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("list", &dir, e)),
        };
        let mut names: Vec<Vec<u8>> = Vec::new();
        for ent in rd {
            let ent = ent.ctx("list", &dir)?;
            names.push(pathbytes::os_bytes(&ent.file_name()).to_vec());
        }
        names.sort();
        for name in names {
            if rel.is_empty() && name == b".trove" {
                continue;
            }
            let p = pathbytes::join(&rel, &name);
            let is_dir = fs::symlink_metadata(self.fs_path(&p))
                .map(|m| m.is_dir())
                .unwrap_or(false);
            if wanted.contains(p.as_slice()) || ancestors.contains(p.as_slice()) {
                if is_dir {
                    self.find_extra(p, wanted, ancestors, out)?;
                }
            } else {
                out.push(p);
            }
        }
        Ok(())
    }
}

const MARKER: &str = "materialized";

/// The snapshot the browsable tree at BACKUP_ROOT shows, if known.
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
