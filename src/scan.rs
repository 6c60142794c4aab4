//! Walks the sources and lists what is there — types, stats, symlink
//! targets — without reading any file content (hashing is `store::objects`).
//!
//! Directories are listed in parallel (rayon, one task per directory) and
//! the result is assembled in path order, so the output never depends on
//! thread timing. Odd entries do not stop the walk: each becomes one
//! [`Issue`] naming the path, and the caller applies `--on-error`.

use crate::error::{Error, Result};
use crate::id::{Digest, ObjectId};
use crate::local::cache::StatExtra;
use crate::model::StatKey;
use crate::model::{Entry, Item, Leaf, Meta};
use crate::pathbytes;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use rayon::prelude::*;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Exclusion globs. A pattern without `/` matches a name at any depth
/// (`*.tmp`, `node_modules`); a pattern with `/` matches the path relative
/// to the source root (`build/out`, `/cache`, `**/target/*.o`). Matching
/// a directory excludes everything below it.
#[derive(Clone, Debug)]
pub struct Excludes {
    names: GlobSet,
    paths: GlobSet,
    count: usize,
}

impl Default for Excludes {
    fn default() -> Excludes {
        Excludes::none()
    }
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Excludes> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for p in patterns {
            let anchored = p.trim_start_matches('/').trim_end_matches('/');
            let glob = GlobBuilder::new(anchored)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::Usage(format!("invalid exclude pattern {p:?}: {e}")))?;
            if anchored.contains('/') || p.starts_with('/') {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::Usage(format!("invalid exclude patterns: {e}")))
        };
        Ok(Excludes {
            names: build(names)?,
            paths: build(paths)?,
            count: patterns.len(),
        })
    }

    pub fn none() -> Excludes {
        Excludes {
            names: GlobSet::empty(),
            paths: GlobSet::empty(),
            count: 0,
        }
    }

    fn matches(&self, name: &[u8], rel: &[u8]) -> bool {
        if self.count == 0 {
            return false;
        }
        self.names
            .is_match(Path::new(pathbytes::from_bytes(name.to_vec()).as_os_str()))
            || self
                .paths
                .is_match(Path::new(pathbytes::from_bytes(rel.to_vec()).as_os_str()))
    }
}

#[derive(Clone, Debug, Default)]
pub struct ScanOptions {
    pub follow_symlinks: bool,
    pub one_file_system: bool,
    pub excludes: Excludes,
    /// Directories never entered, by (device, inode): the backup root
    /// when it lies inside a source.
    pub skip_dirs: Vec<(u64, u64)>,
    /// Filters beyond globs (`--exclude-if-present`, `--exclude-caches`,
    /// `--exclude-larger-than`, `.troveignore`).
    pub filters: Filters,
    /// Record extended attributes (of folders, symlinks and special files
    /// here; of files where they are read: see `xattrs_of`).
    pub xattrs: bool,
    /// Record FIFOs, sockets and devices (a backup); a mirror skips them
    /// with a message instead.
    pub specials: bool,
}

/// The extended attributes of `p` for a snapshot: none when the options
/// say so; on a failure, none and a warning naming the path (the entry
/// itself is still backed up).
pub fn xattrs_of(opts_xattrs: bool, p: &Path) -> crate::model::Xattrs {
    if !opts_xattrs {
        return crate::model::Xattrs::default();
    }
    match crate::fsmeta::read_xattrs(p) {
        Ok(r) => {
            if r.dropped > 0 {
                tracing::warn!(
                    "{}: {} extended attributes not recorded (over {} bytes of attributes on one entry)",
                    pathbytes::display_path(p),
                    r.dropped,
                    crate::fsmeta::XATTR_BUDGET
                );
            }
            r.xattrs
        }
        Err(e) => {
            tracing::warn!(
                "{}: extended attributes not recorded: {e}",
                pathbytes::display_path(p)
            );
            crate::model::Xattrs::default()
        }
    }
}

/// The metadata of the entry at `p` (stat'ed as `m`) with its extended
/// attributes: what the scan records for folders, symlinks and special
/// files (a file's are read beside its content, see `xattrs_of`).
fn meta_with_xattrs(m: &fs::Metadata, xattrs: bool, p: &Path) -> Meta {
    Meta {
        xattrs: xattrs_of(xattrs, p),
        ..meta_of(m)
    }
}

/// A file's metadata as the scan records it: hard-link key and holes.
fn file_ext(m: &fs::Metadata) -> crate::model::FileExt {
    crate::model::FileExt {
        link: if m.nlink() > 1 {
            crate::model::FileExt::link_key(m.dev(), m.ino())
        } else {
            None
        },
        sparse: crate::fsmeta::is_sparse(m),
        stdin: false,
    }
}

/// The file in any source directory whose gitignore-syntax patterns
/// exclude entries of that directory and below.
pub const IGNORE_FILE: &str = ".troveignore";

/// The signature a valid `CACHEDIR.TAG` starts with (bford.info/cachedir).
const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

#[derive(Clone, Debug, Default)]
pub struct Filters {
    /// A directory holding a file of one of these names is excluded.
    pub if_present: Vec<Vec<u8>>,
    /// A directory holding a valid `CACHEDIR.TAG` is excluded.
    pub caches: bool,
    /// Files larger than this many bytes are excluded.
    pub larger_than: Option<u64>,
}

impl Filters {
    /// Why directory `dir` is excluded, if it is.
    fn dir_excluded(&self, dir: &Path) -> Option<String> {
        for n in &self.if_present {
            let p = dir.join(pathbytes::from_bytes(n.clone()));
            if fs::symlink_metadata(&p).is_ok() {
                return Some(format!("it contains {}", pathbytes::display(n)));
            }
        }
        if self.caches {
            let p = dir.join("CACHEDIR.TAG");
            let mut head = [0u8; 43];
            if let Ok(mut f) = fs::File::open(&p) {
                use std::io::Read;
                if f.read_exact(&mut head).is_ok() && head == CACHEDIR_SIGNATURE {
                    return Some("it is a cache directory (CACHEDIR.TAG)".into());
                }
            }
        }
        None
    }
}

/// `.troveignore` matchers of the directories above an entry, outermost
/// first; the innermost one with an opinion decides (gitignore rules).
type IgnoreStack = Vec<std::sync::Arc<ignore::gitignore::Gitignore>>;

/// Load `dir/.troveignore` when `present` says there is one. A file that
/// cannot be read or parsed is reported once and otherwise ignored.
fn load_ignore(dir: &Path, present: bool) -> Option<std::sync::Arc<ignore::gitignore::Gitignore>> {
    if !present {
        return None;
    }
    let p = dir.join(IGNORE_FILE);
    let (g, err) = ignore::gitignore::Gitignore::new(&p);
    if let Some(e) = err {
        tracing::warn!("{}: {e}", p.display());
    }
    (!g.is_empty()).then(|| std::sync::Arc::new(g))
}

fn ignored(stack: &IgnoreStack, path: &Path, is_dir: bool) -> bool {
    for g in stack.iter().rev() {
        match g.matched(path, is_dir) {
            ignore::Match::Ignore(_) => return true,
            ignore::Match::Whitelist(_) => return false,
            ignore::Match::None => {}
        }
    }
    false
}

/// The id a file has in a scan until it is hashed.
pub const UNHASHED: ObjectId = ObjectId(Digest([0; 32]));

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueKind {
    /// The entry disappeared while we looked at it.
    Vanished,
    /// A permission or I/O error reading it.
    Unreadable,
    /// A FIFO, socket or device node: not backed up.
    Special,
    /// A symlink cycle (only when following symlinks).
    Loop,
    /// A directory that could not be listed (its contents are unknown).
    UnlistableDir,
}

#[derive(Clone, Debug)]
pub struct Issue {
    pub path: Vec<u8>,
    pub fs: PathBuf,
    pub kind: IssueKind,
    pub msg: String,
}

/// What a scan found. The entries are already the snapshot's own type (a
/// file's id is [`UNHASHED`] until it is hashed), so no second listing is
/// built from the scan.
#[derive(Debug, Default)]
pub struct ScanOutput {
    /// In path order.
    pub entries: Vec<Entry>,
    /// Beside each entry: for a file, the stat fields the entry does not
    /// hold (ctime, inode, device); `None` otherwise.
    pub extra: Vec<Option<StatExtra>>,
    pub issues: Vec<Issue>,
    pub excluded: u64,
    /// The excluded paths themselves (what is below an excluded folder is
    /// not walked, so not listed): a mirror must not delete their copies.
    pub excluded_paths: Vec<Vec<u8>>,
}

impl ScanOutput {
    pub fn push(&mut self, e: Entry, x: Option<StatExtra>) {
        self.entries.push(e);
        self.extra.push(x);
    }
}

pub fn meta_of(m: &fs::Metadata) -> Meta {
    Meta::basic(
        m.mode() & 0o7777,
        m.uid(),
        m.gid(),
        crate::model::stat_ns(m.mtime(), m.mtime_nsec()),
    )
}

struct Ctx<'a> {
    opts: &'a ScanOptions,
    root_dev: u64,
}

/// Walk one source directory. Entries get `prefix` prepended to their
/// snapshot path (the source's folder name with several sources).
pub fn scan_source(src: &Path, prefix: &[u8], opts: &ScanOptions) -> Result<ScanOutput> {
    let m = fs::metadata(src).map_err(|e| Error::io("stat source", src, e))?;
    let ctx = Ctx {
        opts,
        root_dev: m.dev(),
    };
    Ok(walk(
        &ctx,
        src,
        prefix,
        b"",
        &[(m.dev(), m.ino())],
        &Vec::new(),
    ))
}

/// A directory whose listing is spliced in after entry `after`.
struct SubDir {
    after: usize,
    fs: PathBuf,
    path: Vec<u8>,
    rel: Vec<u8>,
    key: (u64, u64),
}

fn issue(path: Vec<u8>, fs: PathBuf, kind: IssueKind, msg: String) -> Issue {
    Issue {
        path,
        fs,
        kind,
        msg,
    }
}

fn io_issue(path: Vec<u8>, fs: PathBuf, e: &io::Error, what: &str) -> Issue {
    let kind = if e.kind() == io::ErrorKind::NotFound {
        IssueKind::Vanished
    } else {
        IssueKind::Unreadable
    };
    let msg = match kind {
        IssueKind::Vanished => "vanished during the scan".to_string(),
        _ => format!("cannot {what}: {e}"),
    };
    issue(path, fs, kind, msg)
}

/// One directory entry: push it to `out` (directories to descend into go
/// to `subdirs`), or record why it is not backed up.
#[allow(clippy::too_many_arguments)]
fn visit(
    ctx: &Ctx<'_>,
    dir: &Path,
    dir_path: &[u8],
    dir_rel: &[u8],
    name: &[u8],
    lm: io::Result<fs::Metadata>,
    ancestors: &[(u64, u64)],
    ignores: &IgnoreStack,
    out: &mut ScanOutput,
    subdirs: &mut Vec<SubDir>,
) {
    let path = pathbytes::join(dir_path, name);
    let rel = pathbytes::join(dir_rel, name);
    let fs_path = || dir.join(pathbytes::from_bytes(name.to_vec()));
    if ctx.opts.excludes.matches(name, &rel) {
        out.excluded += 1;
        out.excluded_paths.push(path.clone());
        tracing::debug!("EXCLUDE: {}", pathbytes::display_path(&fs_path()));
        return;
    }
    let lm = match lm {
        Ok(m) => m,
        Err(e) => {
            out.issues.push(io_issue(path, fs_path(), &e, "stat"));
            return;
        }
    };
    let ft = lm.file_type();
    let m = if ft.is_symlink() && ctx.opts.follow_symlinks {
        match fs::metadata(fs_path()) {
            Ok(m) => m,
            Err(_) => lm.clone(), // dangling: kept as a symlink
        }
    } else {
        lm.clone()
    };
    let ft2 = m.file_type();
    if !ignores.is_empty() && ignored(ignores, &fs_path(), ft2.is_dir()) {
        out.excluded += 1;
        out.excluded_paths.push(path.clone());
        tracing::debug!(
            "EXCLUDE ({IGNORE_FILE}): {}",
            pathbytes::display_path(&fs_path())
        );
        return;
    }
    if ft2.is_dir() {
        if let Some(why) = ctx.opts.filters.dir_excluded(&fs_path()) {
            out.excluded += 1;
            out.excluded_paths.push(path.clone());
            tracing::debug!("EXCLUDE: {} ({why})", pathbytes::display_path(&fs_path()));
            return;
        }
    }
    if ft2.is_file() {
        if let Some(limit) = ctx.opts.filters.larger_than {
            if m.len() > limit {
                out.excluded += 1;
                out.excluded_paths.push(path.clone());
                tracing::debug!(
                    "EXCLUDE: {} ({} bytes, larger than {limit})",
                    pathbytes::display_path(&fs_path()),
                    m.len()
                );
                return;
            }
        }
    }
    if ft2.is_dir() {
        let key = (m.dev(), m.ino());
        if ctx.opts.skip_dirs.contains(&key) {
            tracing::debug!(
                "EXCLUDE (trove's own output): {}",
                pathbytes::display_path(&fs_path())
            );
            return;
        }
        if ancestors.contains(&key) {
            out.issues.push(issue(
                path,
                fs_path(),
                IssueKind::Loop,
                "symlink loop: this directory contains itself; not followed".into(),
            ));
            return;
        }
        out.push(
            Entry {
                path: path.clone(),
                item: Item::Dir(meta_with_xattrs(&m, ctx.opts.xattrs, &fs_path())),
            },
            None,
        );
        if ctx.opts.one_file_system && m.dev() != ctx.root_dev {
            tracing::debug!(
                "not crossing into another filesystem: {}",
                pathbytes::display_path(&fs_path())
            );
            return;
        }
        subdirs.push(SubDir {
            after: out.entries.len(),
            fs: fs_path(),
            path,
            rel,
            key,
        });
    } else if ft2.is_file() {
        out.push(
            Entry {
                path,
                item: Item::Leaf(Leaf::File {
                    size: m.len(),
                    id: UNHASHED,
                    dup: false,
                    meta: meta_of(&m),
                    ext: file_ext(&m),
                }),
            },
            Some(StatExtra::of(&StatKey::of(&m))),
        );
    } else if ft2.is_symlink() {
        match fs::read_link(fs_path()) {
            Ok(t) => out.push(
                Entry {
                    path,
                    item: Item::Leaf(Leaf::Symlink {
                        target: pathbytes::os_bytes(t.as_os_str()).to_vec(),
                        meta: meta_with_xattrs(&lm, ctx.opts.xattrs, &fs_path()),
                    }),
                },
                None,
            ),
            Err(e) => out
                .issues
                .push(io_issue(path, fs_path(), &e, "read symlink")),
        }
    } else if let Some(kind) = crate::fsmeta::special_kind(&ft2).filter(|_| ctx.opts.specials) {
        let meta = meta_with_xattrs(&m, ctx.opts.xattrs, &fs_path());
        out.push(
            Entry {
                path,
                item: Item::Leaf(Leaf::Special {
                    kind,
                    rdev: match kind {
                        crate::model::SpecialKind::CharDevice
                        | crate::model::SpecialKind::BlockDevice => m.rdev(),
                        _ => 0,
                    },
                    meta,
                }),
            },
            None,
        );
    } else {
        let what = if ft2.is_fifo() {
            "a FIFO"
        } else if ft2.is_socket() {
            "a socket"
        } else if ft2.is_block_device() {
            "a block device"
        } else if ft2.is_char_device() {
            "a character device"
        } else {
            "of an unknown file type"
        };
        out.issues.push(issue(
            path,
            fs_path(),
            IssueKind::Special,
            format!("not backed up: it is {what} (only files, directories and symlinks are)"),
        ));
    }
}

/// One directory's own listing: its children (in name order), with the
/// subdirectories to descend into, each with what walking it needs.
struct Listing {
    out: ScanOutput,
    subdirs: Vec<SubDir>,
    /// The ignore rules that apply inside this directory.
    ignores: IgnoreStack,
}

/// List and stat one directory's children (not below them).
fn list_dir(
    ctx: &Ctx<'_>,
    dir: &Path,
    dir_path: &[u8],
    dir_rel: &[u8],
    ancestors: &[(u64, u64)],
    ignores: &IgnoreStack,
) -> Listing {
    let mut out = ScanOutput::default();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            let mut i = io_issue(dir_path.to_vec(), dir.to_path_buf(), &e, "list directory");
            if i.kind != IssueKind::Vanished {
                i.kind = IssueKind::UnlistableDir;
            }
            out.issues.push(i);
            return Listing {
                out,
                subdirs: Vec::new(),
                ignores: ignores.clone(),
            };
        }
    };
    // Keep each DirEntry: its metadata() is an fstatat relative to the open
    // directory, which spares the kernel resolving the whole path again.
    let mut ents: Vec<(Vec<u8>, fs::DirEntry)> = Vec::new();
    for ent in rd {
        match ent {
            Ok(ent) => ents.push((pathbytes::os_bytes(&ent.file_name()).to_vec(), ent)),
            Err(e) => {
                out.issues.push(io_issue(
                    dir_path.to_vec(),
                    dir.to_path_buf(),
                    &e,
                    "list directory",
                ));
            }
        }
    }
    ents.sort_by(|a, b| a.0.cmp(&b.0));
    let own_ignore = load_ignore(
        dir,
        ents.iter()
            .any(|(n, _)| n.as_slice() == IGNORE_FILE.as_bytes()),
    );
    let ignores = match own_ignore {
        Some(g) => {
            let mut v = ignores.clone();
            v.push(g);
            v
        }
        None => ignores.clone(),
    };
    // Exact sizes: a listing is built once per directory and the slack of
    // growing by doubling would be a third of the scan's memory.
    out.entries.reserve_exact(ents.len());
    out.extra.reserve_exact(ents.len());
    let mut subdirs: Vec<SubDir> = Vec::new();
    for (name, dent) in ents {
        visit(
            ctx,
            dir,
            dir_path,
            dir_rel,
            &name,
            dent.metadata(),
            ancestors,
            &ignores,
            &mut out,
            &mut subdirs,
        );
    }
    Listing {
        out,
        subdirs,
        ignores,
    }
}

fn walk(
    ctx: &Ctx<'_>,
    dir: &Path,
    dir_path: &[u8],
    dir_rel: &[u8],
    ancestors: &[(u64, u64)],
    ignores: &IgnoreStack,
) -> ScanOutput {
    let Listing {
        mut out,
        subdirs,
        ignores,
    } = list_dir(ctx, dir, dir_path, dir_rel, ancestors, ignores);
    let ignores = &ignores;
    let children: Vec<ScanOutput> = subdirs
        .par_iter()
        .map(|d| {
            let mut anc = ancestors.to_vec();
            anc.push(d.key);
            walk(ctx, &d.fs, &d.path, &d.rel, &anc, ignores)
        })
        .collect();
    if children.is_empty() {
        return out;
    }
    // Splice each subtree right after its directory entry.
    let own = std::mem::take(&mut out.entries);
    let own_x = std::mem::take(&mut out.extra);
    let total = own.len() + children.iter().map(|c| c.entries.len()).sum::<usize>();
    out.entries.reserve_exact(total);
    out.extra.reserve_exact(total);
    let mut own_iter = own.into_iter().zip(own_x);
    let mut taken = 0;
    for (d, child) in subdirs.iter().zip(children) {
        while taken < d.after {
            if let Some((e, x)) = own_iter.next() {
                out.push(e, x);
            }
            taken += 1;
        }
        out.entries.extend(child.entries);
        out.extra.extend(child.extra);
        out.issues.extend(child.issues);
        out.excluded += child.excluded;
        out.excluded_paths.extend(child.excluded_paths);
    }
    for (e, x) in own_iter {
        out.push(e, x);
    }
    out
}

/// Scans a source one directory at a time, for a walk that consumes it in
/// path order instead of holding the whole listing ([`scan_source`]).
pub struct DirScanner<'a> {
    ctx: Ctx<'a>,
}

/// A directory to list: where it is and what listing it needs from its
/// ancestors (loop detection, ignore rules).
#[derive(Clone)]
pub struct DirTask {
    fs: PathBuf,
    path: Vec<u8>,
    rel: Vec<u8>,
    ancestors: Vec<(u64, u64)>,
    ignores: IgnoreStack,
}

impl DirTask {
    /// The directory's snapshot path.
    pub fn path(&self) -> &[u8] {
        &self.path
    }
}

/// The tasks listing `subdirs` of a folder whose loop-detection ancestors
/// are `ancestors`; `ignores` applies inside it.
fn tasks(subdirs: Vec<SubDir>, ancestors: &[(u64, u64)], ignores: &IgnoreStack) -> Vec<DirTask> {
    subdirs
        .into_iter()
        .map(|d| {
            let mut a = ancestors.to_vec();
            a.push(d.key);
            DirTask {
                fs: d.fs,
                path: d.path,
                rel: d.rel,
                ancestors: a,
                ignores: ignores.clone(),
            }
        })
        .collect()
}

/// The ignore rules that apply to a folder's children.
pub struct ChildIgnores(IgnoreStack);

/// One directory's children as [`DirScanner::list`] found them.
pub struct DirListing {
    /// The children in name order (not below them), the problems met
    /// listing them, and how many were excluded.
    pub out: ScanOutput,
    /// The subdirectories to descend into, in name order, by snapshot path.
    pub subdirs: Vec<DirTask>,
}

impl<'a> DirScanner<'a> {
    /// A scanner of `src`, whose entries get `prefix` prepended, and the
    /// task listing its top.
    pub fn new(src: &Path, prefix: &[u8], opts: &'a ScanOptions) -> Result<(Self, DirTask)> {
        let m = fs::metadata(src).map_err(|e| Error::io("stat source", src, e))?;
        let task = DirTask {
            fs: src.to_path_buf(),
            path: prefix.to_vec(),
            rel: Vec::new(),
            ancestors: vec![(m.dev(), m.ino())],
            ignores: Vec::new(),
        };
        let ctx = Ctx {
            opts,
            root_dev: m.dev(),
        };
        Ok((DirScanner { ctx }, task))
    }

    /// The ignore rules for the children of `t` (its own `.troveignore`
    /// added), for [`DirScanner::descend`] and [`DirScanner::visit_one`].
    pub fn child_ignores(&self, t: &DirTask) -> ChildIgnores {
        let mut v = t.ignores.clone();
        if let Some(g) = load_ignore(&t.fs, t.fs.join(IGNORE_FILE).is_file()) {
            v.push(g);
        }
        ChildIgnores(v)
    }

    /// The task listing `name` in `parent` and that folder's metadata, if
    /// it is a folder this scan would enter: not excluded, ignored or
    /// filtered, not trove's own output, not a loop, not across a
    /// filesystem boundary when asked (watch mode descends this way to the
    /// paths events named).
    pub fn descend(
        &self,
        parent: &DirTask,
        ignores: &ChildIgnores,
        name: &[u8],
    ) -> Option<(DirTask, Meta)> {
        let opts = self.ctx.opts;
        let rel = pathbytes::join(&parent.rel, name);
        if opts.excludes.matches(name, &rel) {
            return None;
        }
        let next = parent.fs.join(pathbytes::from_bytes(name.to_vec()));
        if ignored(&ignores.0, &next, true) || opts.filters.dir_excluded(&next).is_some() {
            return None;
        }
        let m = if opts.follow_symlinks {
            fs::metadata(&next)
        } else {
            fs::symlink_metadata(&next)
        }
        .ok()
        .filter(|m| m.is_dir())?;
        let key = (m.dev(), m.ino());
        if opts.skip_dirs.contains(&key)
            || parent.ancestors.contains(&key)
            || (opts.one_file_system && m.dev() != self.ctx.root_dev)
        {
            return None;
        }
        let mut ancestors = parent.ancestors.clone();
        ancestors.push(key);
        let meta = meta_with_xattrs(&m, opts.xattrs, &next);
        Some((
            DirTask {
                fs: next,
                path: pathbytes::join(&parent.path, name),
                rel,
                ancestors,
                ignores: ignores.0.clone(),
            },
            meta,
        ))
    }

    /// Look at the one entry `name` of `parent` as listing `parent` would
    /// (an entry, or an issue, or nothing if excluded or gone).
    pub fn visit_one(&self, parent: &DirTask, ignores: &ChildIgnores, name: &[u8]) -> DirListing {
        let mut out = ScanOutput::default();
        let mut subdirs = Vec::new();
        let full = parent.fs.join(pathbytes::from_bytes(name.to_vec()));
        visit(
            &self.ctx,
            &parent.fs,
            &parent.path,
            &parent.rel,
            name,
            fs::symlink_metadata(&full),
            &parent.ancestors,
            &ignores.0,
            &mut out,
            &mut subdirs,
        );
        // Gone since the event: simply not in the source now.
        out.issues.retain(|i| i.kind != IssueKind::Vanished);
        DirListing {
            out,
            subdirs: tasks(subdirs, &parent.ancestors, &ignores.0),
        }
    }

    /// List one directory.
    pub fn list(&self, t: &DirTask) -> DirListing {
        let l = list_dir(&self.ctx, &t.fs, &t.path, &t.rel, &t.ancestors, &t.ignores);
        DirListing {
            out: l.out,
            subdirs: tasks(l.subdirs, &t.ancestors, &l.ignores),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclude_semantics() -> Result<()> {
        let ex = Excludes::new(&["*.tmp".into(), "/build".into(), "a/*/c".into()])?;
        assert!(ex.matches(b"x.tmp", b"deep/x.tmp"));
        assert!(ex.matches(b"build", b"build"));
        assert!(!ex.matches(b"build", b"sub/build"), "anchored pattern");
        assert!(ex.matches(b"c", b"a/b/c"));
        assert!(!ex.matches(b"c", b"a/b/d/c"), "* does not cross /");
        assert!(Excludes::new(&["[".into()]).is_err());
        Ok(())
    }
}
