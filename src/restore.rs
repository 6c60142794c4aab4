//! `trove restore`: recreate files from a snapshot as independent copies.
//!
//! A snapshot is untrusted input when read back (a damaged disk, or someone
//! with write access to the repository), so this module never lets a
//! recorded path reach outside the target:
//! - every name was checked by the tree decoder (no `..`, `/`, NUL or empty
//!   names), and a listing with a path twice is refused before anything is
//!   written;
//! - directories are created first and checked to be real directories (a
//!   symlink already in the target is replaced, never followed);
//! - files are created with `O_EXCL | O_NOFOLLOW` (or written to a fresh temp
//!   name and renamed over an existing entry with `--overwrite`), so the
//!   last component is never followed either;
//! - symlinks are created last, so no write can pass through a symlink the
//!   restore itself made.
//!
//! Every file's bytes are hashed while they are copied and compared with the
//! recorded id; a mismatch removes the file and is reported. Content that
//! retention removed is reported per path (exit 1) and the rest restored.

use crate::error::{Error, IoContext, Result};
use crate::hash::Hasher;
use crate::id::ObjectId;
use crate::model::{Entry, Item, Leaf, Meta};
use crate::pathbytes::{self, cmp_paths, display as show};
use crate::progress::Progress;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree;
use crate::repo::{Content, RepoRead, StoreKind};
use rayon::prelude::*;
use serde::Serialize;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Clone, Debug)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Paths relative to the snapshot root; empty means everything.
    pub paths: Vec<String>,
    pub overwrite: bool,
    pub dry_run: bool,
    /// Keep the recorded uid/gid instead of mapping the recorded owner
    /// names to this machine's ids (`--numeric-owner`; root only).
    pub numeric_owner: bool,
    /// Set the recorded extended attributes (`--no-xattrs` turns it off).
    pub xattrs: bool,
}

/// A path that could not be restored.
#[derive(Clone, Debug, Serialize)]
pub struct RestoreProblem {
    pub path: String,
    pub message: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RestoreReport {
    pub snapshot: String,
    pub target: String,
    pub dry_run: bool,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// FIFOs, sockets and devices in the selection.
    pub specials: u64,
    /// Paths restored as hard links to another restored path.
    pub hardlinks: u64,
    pub bytes: u64,
    /// Files and bytes actually written (all of them unless some are
    /// missing or failed).
    pub files_restored: u64,
    pub bytes_restored: u64,
    /// Files whose content is no longer in the repository (retention).
    pub missing: Vec<String>,
    pub problems: Vec<RestoreProblem>,
    /// With `--dry-run`: every path that would be written, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub would_write: Vec<String>,
}

impl RestoreReport {
    pub fn failed(&self) -> bool {
        !self.missing.is_empty() || !self.problems.is_empty()
    }
}

/// Entries the write pass holds at once: the restore's memory is this
/// batch (paths and metadata, a few hundred bytes an entry), the open
/// directories and the hard-link groups, not the snapshot. Large enough
/// that a batch's files keep both threads busy and a remote plans its
/// ranged reads over many objects.
const BATCH: usize = 32_768;

/// What a restore writes: everything, or the requested paths, the entries
/// below them and the directories above them.
struct Selection {
    /// Requested paths, relative to the snapshot root; empty: everything.
    wanted: Vec<Vec<u8>>,
}

impl Selection {
    fn new(paths: &[String]) -> Result<Selection> {
        let mut wanted: Vec<Vec<u8>> = Vec::new();
        for p in paths {
            let rel = p.trim_matches('/');
            if rel.is_empty() {
                return Ok(Selection { wanted: Vec::new() });
            }
            if !rel
                .split('/')
                .all(|c| pathbytes::is_safe_component(c.as_bytes()))
            {
                return Err(Error::Usage(format!(
                    "{p:?} is not a path inside the snapshot: give it relative to the snapshot root, without . or .."
                )));
            }
            wanted.push(rel.as_bytes().to_vec());
        }
        Ok(Selection { wanted })
    }

    fn under_wanted(&self, path: &[u8]) -> bool {
        self.wanted.is_empty()
            || self
                .wanted
                .iter()
                .any(|w| pathbytes::is_at_or_under(path, w))
    }

    /// A directory on the way to a requested path.
    fn above_wanted(&self, path: &[u8]) -> bool {
        self.wanted.iter().any(|w| pathbytes::is_under(w, path))
    }
}

/// Read `snap`'s source tree in path order and hand `f` every entry the
/// selection keeps. A folder neither holding nor below a requested path is
/// skipped without reading its trees. Returns, per requested path, whether
/// the snapshot has it.
///
/// With `check`, the paths read must be strictly increasing: a listing
/// with a path twice (a hostile or damaged tree) is refused. The first
/// pass checks, before anything is written; the second reads the same
/// trees (each checked against its id), so they cannot differ.
fn walk_selected(
    repo: &dyn RepoRead,
    snap: &Snapshot,
    sel: &Selection,
    check: bool,
    f: &mut dyn FnMut(Entry) -> Result<()>,
) -> Result<Vec<bool>> {
    let rec = &snap.record;
    let in_snap = |e: Error| Error::InSnapshot {
        snapshot: snap.id.short(),
        source: Box::new(e),
    };
    if check {
        // The archive is not restored, but a snapshot whose trees cannot
        // be read is refused whole, as every reader of it does.
        crate::repo::snapshot::check_archive(repo, rec).map_err(in_snap)?;
    }
    let mut c = tree::FlatCursor::<Leaf, Meta>::new(repo, &rec.root, None, rec.source_limit())
        .map_err(in_snap)?;
    let mut found = vec![false; sel.wanted.len()];
    // The previous path, in one buffer reused for every entry.
    let mut prev: Option<Vec<u8>> = None;
    while let Some(item) = c.next().map_err(in_snap)? {
        let e = tree::source_entry(item);
        if check {
            if let Some(p) = &prev {
                if cmp_paths(p, &e.path) != std::cmp::Ordering::Less {
                    return Err(Error::corrupt(
                        "snapshot",
                        format!("snapshot {}", snap.id.short()),
                        format!(
                            "path {} is recorded twice (or out of order); refusing to restore from it",
                            show(&e.path)
                        ),
                    ));
                }
            }
            let p = prev.get_or_insert_with(Vec::new);
            p.clear();
            p.extend_from_slice(&e.path);
            // Which requested paths exist is the checking pass's question.
            for (w, hit) in sel.wanted.iter().zip(found.iter_mut()) {
                *hit |= pathbytes::is_at_or_under(&e.path, w);
            }
        }
        let dir = matches!(e.item, Item::Dir(_));
        if sel.under_wanted(&e.path) || (dir && sel.above_wanted(&e.path)) {
            f(e)?;
        } else if dir {
            c.skip_dir();
        }
    }
    Ok(found)
}

/// Refuse targets that would damage the repository or surprise the user.
fn check_target(repo: &dyn RepoRead, target: &Path, overwrite: bool) -> Result<bool> {
    let abs = std::path::absolute(target).ctx("resolve", target)?;
    let canon = abs.canonicalize().unwrap_or(abs.clone());
    let inside = repo.local_dir().is_some_and(|dir| {
        let repo_dir = dir.canonicalize().unwrap_or(dir.to_path_buf());
        canon.starts_with(&repo_dir)
    });
    if inside {
        return Err(Error::Usage(format!(
            "restore target {} is inside the repository's .trove directory: choose another directory",
            target.display()
        )));
    }
    match fs::metadata(target) {
        Ok(m) if !m.is_dir() => Err(Error::Usage(format!(
            "restore target {} exists and is not a directory",
            target.display()
        ))),
        Ok(_) => {
            let empty = fs::read_dir(target).ctx("list", target)?.next().is_none();
            if !empty && !overwrite {
                return Err(Error::Usage(format!(
                    "restore target {} is not empty: choose an empty or new directory, or pass --overwrite to replace what the snapshot has",
                    target.display()
                )));
            }
            Ok(false)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Error::io("stat", target, e)),
    }
}

struct Ctx<'a> {
    repo: &'a dyn RepoRead,
    snap: &'a Snapshot,
    /// Retention keeps all of the snapshot's content (`keeps_content`): a
    /// missing object is damage, not retention.
    pinned: bool,
    target: &'a Path,
    overwrite: bool,
    as_root: bool,
    /// Recorded owners → this machine's ids, resolved once (as root only:
    /// nobody else sets owners).
    owners: crate::fsmeta::OwnerMap,
    xattrs: bool,
    /// Per namespace: attributes that could not be set, and the first
    /// failure (path and error), for one warning each at the end.
    xattr_failures: Mutex<std::collections::BTreeMap<Vec<u8>, (u64, String)>>,
    problems: Mutex<Vec<RestoreProblem>>,
    missing: Mutex<Vec<String>>,
    /// Directories that could not be created: nothing below them is tried.
    failed_dirs: Mutex<Vec<Vec<u8>>>,
    done: Mutex<(u64, u64)>,
}

impl Ctx<'_> {
    fn problem(&self, path: &[u8], message: String) {
        self.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(RestoreProblem {
                path: show(path),
                message,
            });
    }

    fn below_failed(&self, path: &[u8]) -> bool {
        let failed = self.failed_dirs.lock().unwrap_or_else(|p| p.into_inner());
        failed.iter().any(|d| pathbytes::is_under(path, d))
    }

    fn fs_path(&self, rel: &[u8]) -> PathBuf {
        pathbytes::to_fs(self.target, rel)
    }

    fn xattr_failed(&self, name: &[u8], what: String) {
        let mut m = self
            .xattr_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let e = m
            .entry(crate::fsmeta::namespace(name).to_vec())
            .or_insert((0, what));
        e.0 += 1;
    }

    /// The owner an entry gets: the recorded names mapped to this
    /// machine's ids (or the recorded ids with `--numeric-owner`).
    fn owner(&self, meta: &Meta) -> (u32, u32) {
        self.owners.map(meta.uid, meta.gid)
    }

    /// Set the recorded extended attributes on `path` (the entry itself).
    /// As root every namespace; otherwise `user.*` only, the rest counted
    /// as not set.
    fn set_xattrs(&self, path: &Path, rel: &[u8], meta: &Meta) {
        if !self.xattrs || meta.xattrs.is_empty() {
            return;
        }
        let (ok, skipped): (Vec<_>, Vec<_>) = meta
            .xattrs
            .as_slice()
            .iter()
            .cloned()
            .partition(|x| self.as_root || x.name.starts_with(b"user."));
        for x in skipped {
            self.xattr_failed(&x.name, format!("{}: setting it needs root", show(rel)));
        }
        crate::fsmeta::write_xattrs(path, &crate::model::Xattrs::new(ok), &mut |name, e| {
            self.xattr_failed(name, format!("{}: {e}", show(rel)));
        });
    }

    /// The owner a restored entry gets: none unless running as root.
    fn chown_to(&self, meta: &Meta) -> Option<(u32, u32)> {
        self.as_root.then(|| self.owner(meta))
    }

    /// The recorded metadata of a restored file or directory open as `f`
    /// (`fsutil::apply_meta`: owner, mode, extended attributes, mtime).
    fn apply_meta(&self, f: &File, path: &Path, rel: &[u8], meta: &Meta) -> Result<()> {
        crate::fsutil::apply_meta(f, path, meta, self.chown_to(meta), &|p| {
            self.set_xattrs(p, rel, meta)
        })
    }

    /// The recorded metadata of an entry that is not opened (a symlink, a
    /// FIFO, a device: opening a FIFO would block, a device could act),
    /// in `apply_meta`'s order; `chmod` for all but symlinks, which have
    /// no mode of their own.
    fn apply_meta_by_path(&self, p: &Path, rel: &[u8], meta: &Meta, chmod: bool) -> Result<()> {
        if let Some((u, g)) = self.chown_to(meta) {
            std::os::unix::fs::lchown(p, Some(u), Some(g)).ctx("chown", p)?;
        }
        if chmod {
            // chmod(2) follows symlinks, but `p` was just made and is none.
            fs::set_permissions(p, fs::Permissions::from_mode(meta.mode & 0o7777))
                .ctx("chmod", p)?;
        }
        self.set_xattrs(p, rel, meta);
        crate::fsutil::set_symlink_mtime(p, meta.mtime_ns)
    }

    /// `apply_meta` on a path, never through a symlink standing there.
    fn apply_meta_at(&self, path: &Path, rel: &[u8], meta: &Meta) -> Result<()> {
        crate::fsutil::set_meta_nofollow(path, meta, self.chown_to(meta), &|p| {
            self.set_xattrs(p, rel, meta)
        })
    }
}

/// Restore `snap` into `opts.target`.
///
/// Two passes over the snapshot's trees, neither holding the listing: the
/// first checks it (order, requested paths) and counts it, or with
/// `--dry-run` reports it; the second writes it in batches of [`BATCH`]
/// entries, so memory stays flat however many files the snapshot has.
pub fn run(
    repo: &dyn RepoRead,
    snap: &Snapshot,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    // A remote reads best knowing everything first (`plans_reads`): its
    // memory is its index's, which grows with the repository anyway.
    let batch = if repo.plans_reads() {
        usize::MAX
    } else {
        BATCH
    };
    run_in_batches(repo, snap, opts, progress, batch)
}

/// [`run`] writing `batch` entries at a time (tests use small batches to
/// cross every boundary).
fn run_in_batches(
    repo: &dyn RepoRead,
    snap: &Snapshot,
    opts: &RestoreOptions,
    progress: &dyn Progress,
    batch: usize,
) -> Result<RestoreReport> {
    let sel = Selection::new(&opts.paths)?;
    let mut report = RestoreReport {
        snapshot: snap.id.short(),
        target: pathbytes::display_path(&opts.target),
        dry_run: opts.dry_run,
        ..RestoreReport::default()
    };
    let pinned = keeps_content(repo, snap);
    let found = walk_selected(repo, snap, &sel, true, &mut |e| {
        match &e.item {
            Item::Dir(_) => report.dirs += 1,
            Item::Leaf(Leaf::File { size, .. }) => {
                report.files += 1;
                report.bytes += size;
            }
            Item::Leaf(Leaf::Symlink { .. }) => report.symlinks += 1,
            Item::Leaf(Leaf::Special { .. }) => report.specials += 1,
        }
        if opts.dry_run {
            if let Item::Leaf(Leaf::File { id, size, .. }) = &e.item {
                if *size > 0 && !repo.has(StoreKind::Object, &id.0) {
                    if pinned && !repo.absent_by_design(id) {
                        report.problems.push(RestoreProblem {
                            path: show(&e.path),
                            message: missing_from_pinned(repo, snap, id),
                        });
                    } else {
                        report.missing.push(show(&e.path));
                    }
                    return Ok(());
                }
            }
            report.would_write.push(show(&e.path));
        }
        Ok(())
    })?;
    if let Some((w, _)) = sel.wanted.iter().zip(&found).find(|(_, hit)| !**hit) {
        return Err(Error::Usage(format!(
            "{} is not in snapshot {}: list it with `trove ls {}`",
            show(w),
            snap.id.short(),
            snap.id.short()
        )));
    }
    let created_target = check_target(repo, &opts.target, opts.overwrite)?;
    if opts.dry_run {
        return Ok(report);
    }
    if created_target {
        fs::create_dir_all(&opts.target).ctx("create restore target", &opts.target)?;
    }
    // Ownership is only restored by root, as tar and restic do; anyone
    // else gets files they own.
    let as_root = crate::sys::is_root();
    let cx = Ctx {
        repo,
        snap,
        pinned,
        target: &opts.target,
        overwrite: opts.overwrite,
        as_root,
        owners: if as_root {
            crate::fsmeta::OwnerMap::new(&snap.record.owners, opts.numeric_owner)
        } else {
            crate::fsmeta::OwnerMap::default()
        },
        xattrs: opts.xattrs,
        xattr_failures: Mutex::new(Default::default()),
        problems: Mutex::new(Vec::new()),
        missing: Mutex::new(Vec::new()),
        failed_dirs: Mutex::new(Vec::new()),
        done: Mutex::new((0, 0)),
    };
    progress.phase("restore", report.files, report.bytes);
    let mut w = Writer {
        cx: &cx,
        progress,
        batch: Vec::new(),
        size: batch.max(1),
        open: Vec::new(),
        closed: Vec::new(),
        leaders: Default::default(),
        hardlinks: 0,
        sockets: 0,
    };
    walk_selected(repo, snap, &sel, false, &mut |e| {
        w.push(e);
        Ok(())
    })?;
    w.finish();
    progress.finish();
    report.hardlinks = w.hardlinks;
    if w.sockets > 0 {
        tracing::info!("{} sockets are recorded in the snapshot and not recreated (a socket is made by the program that listens on it)", w.sockets);
    }
    let whole = sel.wanted.is_empty();
    if whole && created_target && snap.record.sources.len() == 1 {
        // One source: the target stands for the source directory itself.
        let meta = &snap.record.sources[0].meta;
        if let Err(err) = cx.apply_meta_at(&opts.target, b"", meta) {
            cx.problem(b"", err.to_string());
        }
    }
    for (ns, (n, first)) in cx
        .xattr_failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        tracing::warn!(
            "{n} extended attributes in namespace `{}` were not restored (first: {first})",
            show(ns)
        );
    }
    let mut problems = cx.problems.into_inner().unwrap_or_else(|p| p.into_inner());
    problems.sort_by(|a, b| a.path.cmp(&b.path));
    let mut missing = cx.missing.into_inner().unwrap_or_else(|p| p.into_inner());
    missing.sort();
    report.problems = problems;
    report.missing = missing;
    (report.files_restored, report.bytes_restored) =
        cx.done.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok(report)
}

/// The write pass: entries arrive in path order and are written a batch
/// at a time, each batch in the order that keeps every write safe —
/// 1. its directories, parents first, made writable by us;
/// 2. its files, in parallel (small files are bound by metadata
///    operations, which two threads overlap), in the order their content
///    is stored (a remote's packs front to back), a remote told so first;
/// 3. the other paths of each hard-link group, linked to the group's
///    first path (which an earlier batch or step 2 restored);
/// 4. its symlinks, FIFOs and devices, after every file of the batch: no
///    path of the listing is below one of them (the first pass proved the
///    paths strictly increasing, so a leaf is never also a folder), so no
///    later write can pass through them;
/// 5. the metadata of the directories whose last entry the batch held,
///    children first, since creating entries in a directory changes its
///    mtime and a read-only mode would block them.
struct Writer<'a> {
    cx: &'a Ctx<'a>,
    progress: &'a dyn Progress,
    batch: Vec<Entry>,
    /// Entries a batch holds ([`BATCH`]).
    size: usize,
    /// Directories whose entries are still coming (the current path's
    /// ancestors, so at most the tree's depth).
    open: Vec<(Vec<u8>, Meta)>,
    /// Directories complete once the batch is written, children first.
    closed: Vec<(Vec<u8>, Meta)>,
    /// Per recorded link key, the group's first path and its content
    /// (kept for the whole restore: hard-linked files are few).
    leaders: std::collections::HashMap<std::num::NonZeroU64, (Vec<u8>, ObjectId)>,
    hardlinks: u64,
    sockets: u64,
}

impl Writer<'_> {
    fn push(&mut self, e: Entry) {
        while self
            .open
            .last()
            .is_some_and(|(d, _)| !pathbytes::is_under(&e.path, d))
        {
            if let Some(d) = self.open.pop() {
                self.closed.push(d);
            }
        }
        if let Item::Dir(meta) = &e.item {
            self.open.push((e.path.clone(), meta.clone()));
        }
        self.batch.push(e);
        if self.batch.len() >= self.size {
            self.flush();
        }
    }

    fn finish(&mut self) {
        while let Some(d) = self.open.pop() {
            self.closed.push(d);
        }
        self.flush();
    }

    fn flush(&mut self) {
        let cx = self.cx;
        let batch = std::mem::take(&mut self.batch);
        // 1. Directories.
        for e in batch.iter().filter(|e| matches!(e.item, Item::Dir(_))) {
            if cx.below_failed(&e.path) {
                continue;
            }
            if let Err(err) = make_dir(cx, &e.path) {
                cx.problem(&e.path, err.to_string());
                cx.failed_dirs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(e.path.clone());
            }
        }
        // 2. Files.
        let (mut files, followers) = self.link_groups(&batch);
        files.sort_by_cached_key(|e| match &e.item {
            Item::Leaf(Leaf::File { id, size, .. }) if *size > 0 => cx.repo.read_order(id),
            _ => 0,
        });
        let wanted: Vec<ObjectId> = files
            .iter()
            .filter_map(|e| match &e.item {
                Item::Leaf(Leaf::File { id, size, .. }) if *size > 0 => Some(*id),
                _ => None,
            })
            .collect();
        cx.repo.will_read(&wanted);
        drop(wanted);
        let progress = self.progress;
        files
            .par_iter()
            .for_each(|e| cx.restore_entry_file(e, progress));
        // 3. Hard links; a group whose first path failed leaves the rest
        //    to fail the same way.
        for (e, leader) in followers {
            if cx.below_failed(&e.path) {
                continue;
            }
            let (from, to) = (cx.fs_path(&leader), cx.fs_path(&e.path));
            if fs::symlink_metadata(&from).is_err() {
                continue;
            }
            match create_in_place(cx, &to, "a file", "create hard link", |at| {
                fs::hard_link(&from, at)
            }) {
                Ok(()) => {
                    cx.done.lock().unwrap_or_else(|p| p.into_inner()).0 += 1;
                    self.hardlinks += 1;
                }
                Err(err) => cx.problem(&e.path, err.to_string()),
            }
        }
        // 4. Symlinks, then FIFOs and devices (sockets are recorded, not
        //    recreated: only the program that listens on one can make it).
        for e in &batch {
            if let Item::Leaf(Leaf::Symlink { target, meta }) = &e.item {
                if cx.below_failed(&e.path) {
                    continue;
                }
                if let Err(err) = restore_symlink(cx, &e.path, target, meta) {
                    cx.problem(&e.path, err.to_string());
                }
            }
        }
        for e in &batch {
            if let Item::Leaf(Leaf::Special { kind, rdev, meta }) = &e.item {
                if cx.below_failed(&e.path) {
                    continue;
                }
                match restore_special(cx, &e.path, *kind, *rdev, meta) {
                    Ok(true) => {}
                    Ok(false) => self.sockets += 1,
                    Err(err) => cx.problem(&e.path, err.to_string()),
                }
            }
        }
        // 5. Directory metadata of the folders now complete.
        for (path, meta) in std::mem::take(&mut self.closed) {
            if cx.below_failed(&path) || cx.failed_dirs_contains(&path) {
                continue;
            }
            if let Err(err) = cx.apply_meta_at(&cx.fs_path(&path), &path, &meta) {
                cx.problem(&path, err.to_string());
            }
        }
    }

    /// The batch's files to restore, and the paths restored as hard links
    /// with the first path of their group (same recorded link key and the
    /// same content; a path whose content differs from its group's, read
    /// while the file changed, is restored on its own).
    #[allow(clippy::type_complexity)]
    fn link_groups<'b>(
        &mut self,
        batch: &'b [Entry],
    ) -> (Vec<&'b Entry>, Vec<(&'b Entry, Vec<u8>)>) {
        let mut files = Vec::new();
        let mut followers = Vec::new();
        for e in batch {
            let Item::Leaf(Leaf::File { id, ext, .. }) = &e.item else {
                continue;
            };
            if let Some(key) = ext.link {
                match self.leaders.get(&key) {
                    Some((path, lid)) if lid == id => {
                        followers.push((e, path.clone()));
                        continue;
                    }
                    Some(_) => {}
                    None => {
                        self.leaders.insert(key, (e.path.clone(), *id));
                    }
                }
            }
            files.push(e);
        }
        (files, followers)
    }
}

impl Ctx<'_> {
    /// Step 2 for one file: restored, or its failure recorded.
    fn restore_entry_file(&self, e: &Entry, progress: &dyn Progress) {
        let Item::Leaf(Leaf::File {
            id,
            size,
            meta,
            ext,
            ..
        }) = &e.item
        else {
            return;
        };
        if self.below_failed(&e.path) {
            return;
        }
        match restore_file(self, &e.path, id, *size, meta, ext.sparse) {
            Ok(()) => {
                let mut d = self.done.lock().unwrap_or_else(|p| p.into_inner());
                d.0 += 1;
                d.1 += size;
            }
            Err(FileError::Missing) if self.pinned && !self.repo.absent_by_design(id) => {
                self.problem(&e.path, missing_from_pinned(self.repo, self.snap, id))
            }
            Err(FileError::Missing) => self
                .missing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(show(&e.path)),
            Err(FileError::Other(err)) => self.problem(&e.path, err.to_string()),
        }
        progress.advance(1, *size);
    }

    fn failed_dirs_contains(&self, path: &[u8]) -> bool {
        self.failed_dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|d| d == path)
    }
}

/// Create a directory for the restore, or make sure what is there is a real
/// directory (with `--overwrite`, a file or symlink in the way is removed:
/// it is inside the target, and following it could lead outside).
fn make_dir(cx: &Ctx<'_>, rel: &[u8]) -> Result<()> {
    let p = cx.fs_path(rel);
    match fs::create_dir(&p) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("create directory", &p, e)),
    }
    let m = fs::symlink_metadata(&p).ctx("stat", &p)?;
    if m.is_dir() {
        // Ours to fill: make sure we can, the final mode comes in step 4.
        if m.mode() & 0o700 != 0o700 {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).ctx("chmod", &p)?;
        }
        return Ok(());
    }
    if !cx.overwrite {
        return Err(Error::Usage(format!(
            "{} appeared in the target while restoring; not replaced",
            p.display()
        )));
    }
    fs::remove_file(&p).ctx("remove (to make a directory)", &p)?;
    fs::create_dir(&p).ctx("create directory", &p)
}

/// Whether retention keeps all of `snap`'s content: the newest readable
/// snapshot always, and those a keep policy retains (`gc::pinned`). A
/// missing object of such a snapshot is damage, never retention.
fn keeps_content(repo: &dyn RepoRead, snap: &Snapshot) -> bool {
    let newest = crate::repo::snapshot::scan(repo)
        .ok()
        .and_then(|s| s.newest_readable().map(|l| l.id));
    crate::gc::keeps_content(&snap.id, newest.as_ref(), &crate::gc::pinned(repo))
}

/// The message for an object missing from a snapshot whose content
/// retention keeps.
fn missing_from_pinned(repo: &dyn RepoRead, snap: &Snapshot, id: &ObjectId) -> String {
    format!(
        "object {} is missing from {}, although retention keeps all content of snapshot {}: the repository is damaged. Run `trove verify` to see the extent; `trove backup --rehash` stores it again while the source still has the file",
        id.to_hex(),
        repo.locate_store(StoreKind::Object).display(),
        snap.id.short()
    )
}

enum FileError {
    Missing,
    Other(Error),
}

impl From<Error> for FileError {
    fn from(e: Error) -> FileError {
        FileError::Other(e)
    }
}

/// Create a file that does not follow a symlink and does not open an
/// existing file: either a new name (O_EXCL) or a temp name renamed over
/// the existing entry afterwards.
fn create_dest(cx: &Ctx<'_>, p: &Path) -> Result<(File, Option<PathBuf>)> {
    let open = |path: &Path| {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(path)
    };
    match open(p) {
        Ok(f) => Ok((f, None)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && cx.overwrite => {
            let m = fs::symlink_metadata(p).ctx("stat", p)?;
            if m.is_dir() {
                return Err(Error::Usage(format!(
                    "{} is a directory in the target; the snapshot has a file there (move the directory away)",
                    p.display()
                )));
            }
            let dir = p.parent().unwrap_or(Path::new("."));
            let tmp = dir.join(format!(".{}", crate::fsutil::tmp_name("trove-restore")));
            let f = open(&tmp).ctx("create", &tmp)?;
            Ok((f, Some(tmp)))
        }
        Err(e) => Err(Error::io("create", p, e)),
    }
}

fn restore_file(
    cx: &Ctx<'_>,
    rel: &[u8],
    id: &ObjectId,
    size: u64,
    meta: &Meta,
    sparse: bool,
) -> std::result::Result<(), FileError> {
    let p = cx.fs_path(rel);
    let src = if size > 0 {
        let obj = cx.repo.locate(StoreKind::Object, &id.0);
        match cx.repo.open_object(id) {
            Ok(f) => Some((f, obj)),
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(FileError::Missing)
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let (mut dest, tmp) = create_dest(cx, &p)?;
    let written = tmp.as_deref().unwrap_or(&p);
    let result = (|| -> Result<()> {
        if let Some((mut f, obj)) = src {
            let digest = copy_hashing(cx, &mut f, &obj, &mut dest, written, sparse)?;
            if digest != id.0 {
                return Err(Error::corrupt(
                    "object",
                    &obj,
                    format!(
                        "its bytes do not hash to its name (damaged), so {} was not restored; `trove backup --rehash` stores it again while the source still has the file",
                        show(rel)
                    ),
                ));
            }
        }
        cx.apply_meta(&dest, written, rel, meta)
    })();
    drop(dest);
    match result {
        Ok(()) => {
            if let Some(t) = &tmp {
                if let Err(e) = fs::rename(t, &p) {
                    let _ = fs::remove_file(t);
                    return Err(Error::io("rename into place", &p, e).into());
                }
            }
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(written);
            Err(e.into())
        }
    }
}

const BUF: usize = 1 << 20;

thread_local! {
    static COPY_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Copy `src` to `dest`, returning the hash of the bytes. A reflink
/// (FICLONE) is tried first on filesystems that share extents; the object
/// is then read once to check its hash.
fn copy_hashing(
    cx: &Ctx<'_>,
    src: &mut Content,
    src_path: &Path,
    dest: &mut File,
    dest_path: &Path,
    sparse: bool,
) -> Result<crate::id::Digest> {
    let cloned = src.as_file().is_some_and(|f| crate::sys::reflink(f, dest));
    COPY_BUF.with(|b| {
        let mut buf = b.borrow_mut();
        if buf.len() < BUF {
            buf.resize(BUF, 0);
        }
        let mut h = Hasher::new(cx.repo.algo());
        let mut holes = (sparse && !cloned).then(crate::fsmeta::SparseWriter::new);
        loop {
            let n = match src.read(&mut buf[..]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("read", src_path, e)),
            };
            h.update(&buf[..n]);
            if let Some(w) = holes.as_mut() {
                w.write(dest, &buf[..n]).ctx("write", dest_path)?;
            } else if !cloned {
                dest.write_all(&buf[..n]).ctx("write", dest_path)?;
            }
        }
        if let Some(w) = holes {
            w.finish(dest).ctx("write", dest_path)?;
        }
        Ok(h.finish())
    })
}

fn restore_symlink(cx: &Ctx<'_>, rel: &[u8], target: &[u8], meta: &Meta) -> Result<()> {
    let p = cx.fs_path(rel);
    let t = pathbytes::from_bytes(target.to_vec());
    create_in_place(cx, &p, "a symlink", "create symlink", |at| {
        std::os::unix::fs::symlink(&t, at)
    })?;
    cx.apply_meta_by_path(&p, rel, meta, false)
}

/// Make a new entry at `p` with `make` (a symlink, a hard link, a FIFO or
/// device). With `--overwrite`, what is there (never a directory) is
/// replaced: `make` at a temporary name beside it, then a rename, so no
/// moment leaves the path empty and nothing is written through it.
fn create_in_place(
    cx: &Ctx<'_>,
    p: &Path,
    what: &str,
    action: &'static str,
    make: impl Fn(&Path) -> io::Result<()>,
) -> Result<()> {
    match make(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && cx.overwrite => {
            if fs::symlink_metadata(p).map(|m| m.is_dir()).unwrap_or(false) {
                return Err(Error::Usage(format!(
                    "{} is a directory in the target; the snapshot has {what} there (move the directory away)",
                    p.display()
                )));
            }
            let dir = p.parent().unwrap_or(Path::new("."));
            let tmp = dir.join(format!(".{}", crate::fsutil::tmp_name("trove-restore")));
            make(&tmp).ctx(action, &tmp)?;
            if let Err(e) = fs::rename(&tmp, p) {
                let _ = fs::remove_file(&tmp);
                return Err(Error::io("rename into place", p, e));
            }
            Ok(())
        }
        Err(e) => Err(Error::io(action, p, e)),
    }
}

/// Recreate a FIFO or (as root) a device; `Ok(false)` for a socket, which
/// is not recreated. Metadata is set by path (opening a FIFO would block,
/// opening a device could act on it).
fn restore_special(
    cx: &Ctx<'_>,
    rel: &[u8],
    kind: crate::model::SpecialKind,
    rdev: u64,
    meta: &Meta,
) -> Result<bool> {
    use crate::model::SpecialKind;
    if kind == SpecialKind::Socket {
        return Ok(false);
    }
    let p = cx.fs_path(rel);
    if kind != SpecialKind::Fifo && !cx.as_root {
        return Err(Error::Usage(format!(
            "{} is {} and only root can create one: run the restore as root",
            p.display(),
            kind.describe()
        )));
    }
    create_in_place(cx, &p, kind.describe(), "create", |at| {
        crate::fsmeta::make_special(at, kind, 0o600, rdev)
    })?;
    cx.apply_meta_by_path(&p, rel, meta, true)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::HashAlgo;
    use crate::progress::NoProgress;
    use crate::repo::memory::{fixture, MemoryRepo};

    fn opts(target: &Path) -> RestoreOptions {
        RestoreOptions {
            target: target.to_path_buf(),
            paths: Vec::new(),
            overwrite: false,
            dry_run: false,
            numeric_owner: false,
            xattrs: true,
        }
    }

    #[test]
    fn restores_every_file_from_any_repository() -> Result<()> {
        let repo = MemoryRepo::new(HashAlgo::Blake3);
        let s = fixture::commit(&repo, None, &[("a", b"alpha"), ("d/e/b", b"beta")], &[])?;
        let t = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let target = t.path().join("out");
        let r = run(&repo, &s, &opts(&target), &NoProgress)?;
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!((r.files_restored, r.bytes_restored), (2, 9));
        assert_eq!(fs::read(target.join("a")).ctx("read", "a")?, b"alpha");
        assert_eq!(fs::read(target.join("d/e/b")).ctx("read", "b")?, b"beta");
        Ok(())
    }

    /// Bytes that do not hash to their name are never restored as the
    /// file: the path is a problem naming the damage.
    #[test]
    fn damaged_content_is_refused() -> Result<()> {
        let repo = MemoryRepo::new(HashAlgo::Blake3);
        let s = fixture::commit(&repo, None, &[("a", b"alpha"), ("b", b"beta")], &[])?;
        let a = crate::hash::hash_bytes(HashAlgo::Blake3, b"alpha");
        repo.corrupt(StoreKind::Object, &a, b"omega");
        let t = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let target = t.path().join("out");
        let r = run(&repo, &s, &opts(&target), &NoProgress)?;
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert_eq!(r.problems[0].path, "a");
        assert!(r.problems[0].message.contains("do not hash to its name"));
        assert!(!target.join("a").exists());
        assert_eq!(fs::read(target.join("b")).ctx("read", "b")?, b"beta");
        Ok(())
    }

    /// The latest snapshot's content is kept by retention: a lost object
    /// is damage, said so, never "removed by retention".
    #[test]
    fn a_lost_object_of_the_latest_is_damage() -> Result<()> {
        let repo = MemoryRepo::new(HashAlgo::Blake3);
        let s = fixture::commit(&repo, None, &[("a", b"alpha")], &[])?;
        repo.lose(
            StoreKind::Object,
            &crate::hash::hash_bytes(HashAlgo::Blake3, b"alpha"),
        );
        let t = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let r = run(&repo, &s, &opts(&t.path().join("out")), &NoProgress)?;
        assert!(r.missing.is_empty());
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0].message.contains("the repository is damaged"));
        Ok(())
    }

    /// A listing written a few entries at a time restores exactly as in
    /// one batch: a folder's mode and mtime are set after its last entry
    /// even when that entry comes batches later, a hard link finds its
    /// group's first path restored by an earlier batch, symlinks land.
    #[test]
    fn every_batch_size_restores_the_same_tree() -> Result<()> {
        use crate::model::FileExt;
        use std::os::unix::fs::MetadataExt;
        let repo = MemoryRepo::new(HashAlgo::Blake3);
        let dir = |p: &str, mode: u32, mtime: i64| Entry {
            path: p.as_bytes().to_vec(),
            item: Item::Dir(Meta::basic(mode, 0, 0, mtime)),
        };
        let file = |p: &str, data: &[u8], link: Option<u64>| Entry {
            path: p.as_bytes().to_vec(),
            item: Item::Leaf(Leaf::File {
                size: data.len() as u64,
                id: repo.put_object(data),
                dup: false,
                meta: Meta::basic(0o644, 0, 0, 1_600_000_000_000_000_000),
                ext: FileExt {
                    link: link.and_then(std::num::NonZeroU64::new),
                    ..FileExt::default()
                },
            }),
        };
        let t1 = 1_500_000_000_000_000_000;
        let t2 = 1_400_000_000_000_000_000;
        let listing = vec![
            dir("d", 0o555, t1),
            file("d/a", b"alpha", Some(7)),
            file("d/b", b"beta", None),
            Entry {
                path: b"d/c".to_vec(),
                item: Item::Leaf(Leaf::Symlink {
                    target: b"a".to_vec(),
                    meta: Meta::basic(0o777, 0, 0, t2),
                }),
            },
            dir("d/e", 0o700, t2),
            file("d/e/f", b"alpha", Some(7)),
            dir("d/e/g", 0o750, t1),
            file("d/e/g/h", b"", None),
            file("z", b"zeta", None),
        ];
        let s = fixture::commit_listing(&repo, &listing)?;
        let t = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let mut shapes = Vec::new();
        for batch in [1, 2, 3, 5, BATCH] {
            let target = t.path().join(format!("out{batch}"));
            let r = run_in_batches(&repo, &s, &opts(&target), &NoProgress, batch)?;
            assert!(r.problems.is_empty(), "batch {batch}: {:?}", r.problems);
            assert_eq!(
                (r.files, r.files_restored, r.hardlinks, r.dirs, r.symlinks),
                (5, 5, 1, 3, 1),
                "batch {batch}"
            );
            let at = |p: &str| fs::symlink_metadata(target.join(p)).ctx("stat", p);
            assert_eq!(at("d/a")?.ino(), at("d/e/f")?.ino(), "batch {batch}");
            assert_eq!(
                fs::read_link(target.join("d/c")).ctx("readlink", "d/c")?,
                Path::new("a")
            );
            let mut shape = Vec::new();
            for e in &listing {
                let m = at(std::str::from_utf8(&e.path).unwrap_or_default())?;
                let recorded = match &e.item {
                    Item::Dir(m) => m,
                    Item::Leaf(l) => l.meta(),
                };
                assert_eq!(
                    m.mode() & 0o7777,
                    recorded.mode,
                    "batch {batch}: {}",
                    show(&e.path)
                );
                assert_eq!(
                    m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                    recorded.mtime_ns,
                    "batch {batch}: {}",
                    show(&e.path)
                );
                shape.push((show(&e.path), m.mode(), m.len(), m.mtime_nsec()));
            }
            shapes.push(shape);
        }
        assert!(shapes.windows(2).all(|w| w[0] == w[1]));
        Ok(())
    }
}
