//! `trove mirror SRC DEST [--apply]`: make DEST an exact copy of SRC.
//!
//! A mirror deletes: a file gone from SRC goes from DEST too, so it is no
//! substitute for a versioned backup, and it is a dry run unless `--apply`.
//! Safety rules:
//! - SRC is only read; DEST may not be inside SRC or contain it, and may not
//!   be `/` or a home directory;
//! - DEST is changed in path order, parents first, so a folder is known to
//!   be a real directory before anything is written below it (a symlink in
//!   DEST where SRC has a folder is removed, never followed);
//! - files are written to a temp name beside their target and renamed over
//!   it, so a file in DEST is never written through (it may be a hardlink
//!   shared with something else);
//! - deleting never follows a symlink: a symlink is removed as itself.
//!
//! What is copied is decided by content: a DEST file with the size and
//! mtime of its SRC counterpart is taken as equal (the same quick check as
//! rsync, and trove sets that mtime when it copies); otherwise both are
//! hashed and only differing contents are copied (equal contents only get
//! their mode and mtime fixed). Excluded paths are neither copied nor
//! deleted.

use crate::error::{Error, IoContext, Result};
use crate::id::HashAlgo;
use crate::model::{Entry, Item, Leaf, Meta};
use crate::pathbytes::{self, cmp_paths, display as show};
use crate::progress::Progress;
use crate::scan::{self, ScanOptions};
use serde::Serialize;
use std::cmp::Ordering;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct MirrorOptions {
    pub src: PathBuf,
    pub dest: PathBuf,
    pub apply: bool,
    pub scan: ScanOptions,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct MirrorReport {
    pub applied: bool,
    /// Paths copied (or that would be), directories ending in `/`.
    pub copy: Vec<String>,
    /// Paths deleted (or that would be).
    pub delete: Vec<String>,
    /// Equal content whose mode or mtime was (or would be) set.
    pub metadata: u64,
    pub unchanged: u64,
    pub bytes_copied: u64,
    pub excluded: u64,
    pub problems: Vec<(String, String)>,
}

/// Home directories: `$HOME` and every home in /etc/passwd.
fn homes() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = Vec::new();
    if let Some(h) = std::env::var_os("HOME") {
        v.push(PathBuf::from(h));
    }
    if let Ok(t) = fs::read_to_string("/etc/passwd") {
        for line in t.lines() {
            if let Some(home) = line.split(':').nth(5) {
                if home.len() > 1 {
                    v.push(PathBuf::from(home));
                }
            }
        }
    }
    v.iter()
        .map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()))
        .collect()
}

/// Absolute, with symlinks resolved as far as the path exists.
fn resolve(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    if let Ok(c) = abs.canonicalize() {
        return c;
    }
    // Resolve the longest existing prefix, keep the rest.
    let mut rest = Vec::new();
    let mut cur = abs.as_path();
    while let Some(parent) = cur.parent() {
        if let Some(name) = cur.file_name() {
            rest.push(name.to_os_string());
        }
        if let Ok(c) = parent.canonicalize() {
            let mut out = c;
            for n in rest.iter().rev() {
                out.push(n);
            }
            return out;
        }
        cur = parent;
    }
    abs
}

/// Refuse mirrors that would destroy something by construction.
pub fn check(src: &Path, dest: &Path) -> Result<()> {
    let s = resolve(src);
    if !s.is_dir() {
        return Err(Error::Usage(format!(
            "mirror source {} is not an existing directory",
            src.display()
        )));
    }
    let d = resolve(dest);
    if d == Path::new("/") {
        return Err(Error::Usage(
            "refusing to mirror onto / (it would delete everything not in the source)".into(),
        ));
    }
    if homes().contains(&d) {
        return Err(Error::Usage(format!(
            "refusing to mirror onto the home directory {}: choose a dedicated folder",
            d.display()
        )));
    }
    if d.starts_with(&s) {
        return Err(Error::Usage(format!(
            "mirror destination {} is inside the source {}: choose a folder outside it",
            dest.display(),
            src.display()
        )));
    }
    if s.starts_with(&d) {
        return Err(Error::Usage(format!(
            "mirror source {} is inside the destination {}: the mirror would delete it",
            src.display(),
            dest.display()
        )));
    }
    if let Ok(m) = fs::symlink_metadata(dest) {
        if !m.is_dir() {
            return Err(Error::Usage(format!(
                "mirror destination {} exists and is not a directory",
                dest.display()
            )));
        }
    }
    Ok(())
}

fn kind_of(e: &Entry) -> u8 {
    match e.item {
        Item::Dir(_) => 0,
        Item::Leaf(Leaf::File { .. }) => 1,
        Item::Leaf(Leaf::Symlink { .. }) => 2,
        Item::Leaf(Leaf::Special { .. }) => 3,
    }
}

fn shown(e: &Entry) -> String {
    let mut s = show(&e.path);
    if matches!(e.item, Item::Dir(_)) {
        s.push('/');
    }
    s
}

struct Applier<'a> {
    o: &'a MirrorOptions,
    report: MirrorReport,
    progress: &'a dyn Progress,
    /// Folders (relative paths) in which something was created, replaced
    /// or removed.
    touched: std::collections::HashSet<Vec<u8>>,
}

impl Applier<'_> {
    fn src_path(&self, rel: &[u8]) -> PathBuf {
        pathbytes::to_fs(&self.o.src, rel)
    }
    fn dest_path(&self, rel: &[u8]) -> PathBuf {
        pathbytes::to_fs(&self.o.dest, rel)
    }

    fn problem(&mut self, rel: &[u8], e: Error) {
        self.report.problems.push((show(rel), e.to_string()));
    }

    /// Remove a DEST entry and, for a folder, the listed entries below it
    /// (`subtree`, in path order), deepest first. Only what the DEST scan
    /// listed goes: an excluded file keeps its folder. Symlinks are removed
    /// as themselves, never followed.
    fn delete(&mut self, e: &Entry, subtree: &[Entry]) {
        self.report.delete.push(shown(e));
        self.touch(&e.path);
        if !self.o.apply {
            return;
        }
        for x in subtree.iter().rev().chain(std::iter::once(e)) {
            let p = self.dest_path(&x.path);
            let r = if matches!(x.item, Item::Dir(_)) {
                match fs::remove_dir(&p) {
                    // Something excluded (or appeared) inside: it stays.
                    Err(err) if err.raw_os_error() == Some(libc::ENOTEMPTY) => Ok(()),
                    r => r,
                }
            } else {
                fs::remove_file(&p)
            };
            match r {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => self.problem(&x.path, Error::io("delete", &p, err)),
            }
        }
    }

    /// Something changed inside the folder holding `path`: its mtime has
    /// to be set again at the end.
    fn touch(&mut self, path: &[u8]) {
        self.touched.insert(pathbytes::parent(path).to_vec());
    }

    /// Mode and mtime (never the owner: a mirror is made by its user).
    fn set_meta(&self, p: &Path, meta: &Meta) -> Result<()> {
        crate::fsutil::set_meta_nofollow(p, meta, None, &|_| {})
    }

    /// Put SRC's entry `e` at its place in DEST (nothing there now).
    fn create(&mut self, e: &Entry) -> Result<()> {
        let dst = self.dest_path(&e.path);
        match &e.item {
            Item::Dir(_) => {
                fs::create_dir(&dst).ctx("create directory", &dst)?;
                // Mode and mtime are set after the contents (finish_dirs).
                fs::set_permissions(&dst, fs::Permissions::from_mode(0o700)).ctx("chmod", &dst)
            }
            Item::Leaf(Leaf::Symlink { target, meta }) => {
                let tmp =
                    dst.with_file_name(format!(".{}", crate::fsutil::tmp_name("trove-mirror")));
                std::os::unix::fs::symlink(pathbytes::from_bytes(target.clone()), &tmp)
                    .ctx("create symlink", &tmp)?;
                crate::fsutil::set_symlink_mtime(&tmp, meta.mtime_ns)?;
                fs::rename(&tmp, &dst).ctx("rename into place", &dst)
            }
            Item::Leaf(Leaf::File { size, meta, .. }) => {
                let src = self.src_path(&e.path);
                let tmp =
                    dst.with_file_name(format!(".{}", crate::fsutil::tmp_name("trove-mirror")));
                let r = fs::copy(&src, &tmp)
                    .ctx("copy", &src)
                    .and_then(|_| self.set_meta(&tmp, meta))
                    .and_then(|_| fs::rename(&tmp, &dst).ctx("rename into place", &dst));
                if r.is_err() {
                    let _ = fs::remove_file(&tmp);
                }
                self.report.bytes_copied += size;
                self.progress.advance(1, *size);
                r
            }
            // The mirror's scan skips special files (with a message).
            Item::Leaf(Leaf::Special { .. }) => Ok(()),
        }
    }

    fn copy(&mut self, e: &Entry) {
        self.report.copy.push(shown(e));
        self.touch(&e.path);
        if let Item::Leaf(Leaf::File { size, .. }) = &e.item {
            if !self.o.apply {
                self.report.bytes_copied += size;
                return;
            }
        }
        if !self.o.apply {
            return;
        }
        if let Err(err) = self.create(e) {
            self.problem(&e.path, err);
        }
    }

    /// Both sides have a file at `s.path`: copy only if the contents differ.
    fn update_file(&mut self, s: &Entry, d: &Entry) {
        let (
            Item::Leaf(Leaf::File {
                size: ss, meta: sm, ..
            }),
            Item::Leaf(Leaf::File {
                size: ds, meta: dm, ..
            }),
        ) = (&s.item, &d.item)
        else {
            return;
        };
        let same_meta = sm.mode == dm.mode && sm.mtime_ns == dm.mtime_ns;
        if ss == ds && sm.mtime_ns == dm.mtime_ns {
            if sm.mode == dm.mode {
                self.report.unchanged += 1;
            } else {
                self.fix_meta(s, sm);
            }
            return;
        }
        let equal = ss == ds && {
            let a = crate::hash::hash_file(HashAlgo::Blake3, &self.src_path(&s.path));
            let b = crate::hash::hash_file(HashAlgo::Blake3, &self.dest_path(&d.path));
            matches!((a, b), (Ok(a), Ok(b)) if a == b)
        };
        if equal {
            if same_meta {
                self.report.unchanged += 1;
            } else {
                self.fix_meta(s, sm);
            }
        } else {
            self.copy(s);
        }
    }

    fn fix_meta(&mut self, s: &Entry, m: &Meta) {
        self.report.metadata += 1;
        if self.o.apply {
            let p = self.dest_path(&s.path);
            if let Err(err) = self.set_meta(&p, m) {
                self.problem(&s.path, err);
            }
        }
    }
}

/// The index after entry `at` and everything below it (a deleted folder
/// takes its contents with it).
fn past_subtree(entries: &[Entry], at: usize) -> usize {
    let e = &entries[at];
    let mut j = at + 1;
    if matches!(e.item, Item::Dir(_)) {
        while j < entries.len() && pathbytes::is_under(&entries[j].path, &e.path) {
            j += 1;
        }
    }
    j
}

/// Compute (and with `apply`, carry out) the mirror.
pub fn run(o: &MirrorOptions, progress: &dyn Progress) -> Result<MirrorReport> {
    check(&o.src, &o.dest)?;
    progress.phase("scanning", 0, 0);
    let src = scan::scan_source(&o.src, b"", &o.scan)?;
    let dst = if o.dest.exists() {
        scan::scan_source(&o.dest, b"", &o.scan)?
    } else {
        scan::ScanOutput::default()
    };
    progress.finish();
    let mut a = Applier {
        o,
        report: MirrorReport {
            applied: o.apply,
            excluded: src.excluded,
            ..MirrorReport::default()
        },
        progress,
        touched: std::collections::HashSet::new(),
    };
    // What SRC could not list or stat is not known to be gone: its DEST
    // copy is left alone (rsync skips deletions after I/O errors too).
    // Neither is what SRC excludes (rsync protects excluded files from
    // --delete the same way).
    let mut protected: Vec<Vec<u8>> = src
        .issues
        .iter()
        .filter(|i| {
            matches!(
                i.kind,
                scan::IssueKind::UnlistableDir
                    | scan::IssueKind::Unreadable
                    | scan::IssueKind::Loop
            )
        })
        .map(|i| i.path.clone())
        .collect();
    protected.extend(src.excluded_paths.iter().cloned());
    // An issue on the source root itself (the empty path) protects all of
    // DEST: nothing in SRC is known to be gone.
    let is_protected = |p: &[u8]| protected.iter().any(|q| pathbytes::is_at_or_under(p, q));
    for i in &src.issues {
        a.report
            .problems
            .push((pathbytes::display_path(&i.fs), i.msg.clone()));
    }
    let total: u64 = src
        .entries
        .iter()
        .filter_map(|e| e.file_id().map(|(_, s)| s))
        .sum();
    if o.apply {
        fs::create_dir_all(&o.dest).ctx("create mirror destination", &o.dest)?;
    }
    progress.phase("mirroring", src.entries.len() as u64, total);
    let (s, d) = (&src.entries, &dst.entries);
    let (mut i, mut j) = (0, 0);
    // Directories whose subtree could not be created: skip below them.
    let mut failed: Vec<Vec<u8>> = Vec::new();
    let below_failed =
        |failed: &[Vec<u8>], p: &[u8]| failed.iter().any(|f| pathbytes::is_under(p, f));
    let mut dirs: Vec<&Entry> = Vec::new();
    while i < s.len() || j < d.len() {
        let ord = match (s.get(i), d.get(j)) {
            (Some(x), Some(y)) => cmp_paths(&x.path, &y.path),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match ord {
            Ordering::Greater => {
                // Only in DEST: delete it (a folder with everything below).
                let e = &d[j];
                let end = past_subtree(d, j);
                if is_protected(&e.path) {
                    // Its SRC side could not be read: keep everything.
                } else {
                    a.delete(e, &d[j + 1..end]);
                }
                j = end;
            }
            Ordering::Less => {
                let e = &s[i];
                i += 1;
                if below_failed(&failed, &e.path) {
                    continue;
                }
                let before = a.report.problems.len();
                a.copy(e);
                if matches!(e.item, Item::Dir(_)) {
                    if a.report.problems.len() > before {
                        failed.push(e.path.clone());
                    } else {
                        dirs.push(e);
                    }
                }
            }
            Ordering::Equal => {
                let (x, y) = (&s[i], &d[j]);
                i += 1;
                j += 1;
                if below_failed(&failed, &x.path) {
                    continue;
                }
                if kind_of(x) != kind_of(y) {
                    // Other type in DEST: remove it first (never follow a
                    // symlink standing where SRC has a folder).
                    let end = past_subtree(d, j - 1);
                    a.delete(y, &d[j..end]);
                    j = end;
                    let before = a.report.problems.len();
                    a.copy(x);
                    if matches!(x.item, Item::Dir(_)) {
                        if a.report.problems.len() > before {
                            failed.push(x.path.clone());
                        } else {
                            dirs.push(x);
                        }
                    }
                    continue;
                }
                match (&x.item, &y.item) {
                    (Item::Dir(sm), Item::Dir(dm)) => {
                        if sm.mode != dm.mode || sm.mtime_ns != dm.mtime_ns {
                            a.report.metadata += 1;
                            dirs.push(x);
                        } else {
                            a.report.unchanged += 1;
                        }
                    }
                    (
                        Item::Leaf(Leaf::Symlink { target: st, .. }),
                        Item::Leaf(Leaf::Symlink { target: dt, .. }),
                    ) => {
                        if st == dt {
                            a.report.unchanged += 1;
                        } else {
                            a.copy(x);
                        }
                    }
                    _ => a.update_file(x, y),
                }
            }
        }
    }
    // Directory modes and times last, deepest first: writing inside a
    // directory changes its mtime, and a read-only mode would block it.
    // That includes folders whose own stat was right but in which
    // something was copied or deleted.
    if o.apply {
        let mut seen: std::collections::HashSet<&[u8]> =
            dirs.iter().map(|e| e.path.as_slice()).collect();
        for e in s {
            if matches!(e.item, Item::Dir(_))
                && a.touched.contains(&e.path)
                && seen.insert(e.path.as_slice())
            {
                dirs.push(e);
            }
        }
        dirs.sort_by(|x, y| cmp_paths(&y.path, &x.path));
        for e in dirs {
            if let Item::Dir(m) = &e.item {
                let p = a.dest_path(&e.path);
                if let Err(err) = a.set_meta(&p, m) {
                    a.problem(&e.path, err);
                }
            }
        }
    }
    if o.apply {
        // DEST itself stands for SRC: its mode and mtime too.
        if let Ok(m) = fs::metadata(&o.src) {
            if let Err(err) = a.set_meta(&o.dest, &scan::meta_of(&m)) {
                a.problem(b"", err);
            }
        }
    }
    progress.finish();
    a.report.problems.sort();
    Ok(a.report)
}
