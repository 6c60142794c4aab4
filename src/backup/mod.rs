//! One backup run: pass 1 walks the sources beside the previous snapshot
//! (vouching for unchanged files from the stat cache, reading the rest
//! while copying them into `tmp/`) → pass 2 plans each path and builds the
//! trees → commit of objects and trees → snapshot record (the commit
//! point) → audit log, browsable tree, stat cache. This module owns the
//! order of those steps, which is the crash-safety argument of
//! docs/DESIGN.md (`walk`: pass 1, `stream`: the rest, `spill`: scratch
//! files); the decisions belong to `plan`, the layout of the backup folder
//! to `browse`. A watch run is the same run looking again only at the
//! paths events named.

use crate::audit::{base_name, Layout};
use crate::browsable::render::{self};
use crate::browsable::update::catch_up_browsable;
use crate::config::{BackupSettings, OnError};
use crate::error::{Error, Result};
use crate::id::{HashAlgo, TreeId};
use crate::local::lock::{LockMode, RepoLock};
use crate::local::objects::ReadFailure;
use crate::local::LocalRepo;
use crate::model::now_ns;
use crate::pathbytes::{self, cmp_paths};
use crate::plan::PlanCounts;
use crate::progress::Progress;
use crate::repo::snapshot::{self, Snapshot, SnapshotRecord, SourceRecord, Summary};
use crate::scan::{self, Issue, IssueKind, ScanOptions};
use serde::Serialize;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

mod spill;
mod stdin;
mod stream;
mod walk;

pub use stdin::{check_name as check_stdin_name, StdinOptions, StdinSource};

#[derive(Clone, Debug)]
pub struct BackupOptions {
    pub settings: BackupSettings,
    pub rehash: bool,
    pub dry_run: bool,
    pub always_snapshot: bool,
    /// Build on the newest readable snapshot although a record that may be
    /// newer is damaged (`--allow-damaged-latest`).
    pub allow_damaged_latest: bool,
    pub wait: bool,
    /// Watch mode: only these snapshot paths may have changed (None: scan
    /// everything).
    pub scope: Option<Vec<Vec<u8>>>,
}

/// A path that could not be backed up.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct BackupReport {
    pub snapshot: Option<String>,
    pub dry_run: bool,
    /// False when nothing changed and no snapshot was written.
    pub changed: bool,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub copied: u64,
    pub unchanged: u64,
    pub backed_up: u64,
    pub duplicates: u64,
    pub modified: u64,
    pub deleted: u64,
    pub retention_removed: u64,
    /// Snapshot records the keep policy forgot at the end of the run.
    pub snapshots_forgotten: u64,
    /// Objects garbage-collected at the end of the run, and bytes freed.
    pub objects_removed: u64,
    pub bytes_freed: u64,
    pub files_read: u64,
    /// Folders whose walk found nothing changed below them, carried into
    /// the new snapshot whole (their records not planned again).
    pub carried_folders: u64,
    pub new_objects: u64,
    pub new_bytes: u64,
    /// Of the new objects, those stored in place of a damaged copy
    /// (`--rehash`), which went to `.trove/quarantine/objects/`.
    pub repaired_objects: u64,
    pub excluded: u64,
    pub link_fallback_copies: u64,
    pub problems: Vec<Problem>,
    /// Entries of the browsable tree that could not be put in place. The
    /// snapshot has them: `trove materialize` (or the next backup)
    /// completes the tree once the cause is fixed.
    pub browsable_incomplete: Vec<Problem>,
    /// How many entries of the browsable tree could not be put in place
    /// (`browsable_incomplete` keeps the first thousand).
    pub browsable_incomplete_total: u64,
    /// Problems that count for the exit code (not `--on-error ignore`).
    pub failed: bool,
}

impl BackupReport {
    /// Note what a browsable-tree update did: its fallback copies, and
    /// the entries it could not place (`show` names one for the report).
    fn add_tree_update(
        &mut self,
        up: crate::browsable::update::TreeUpdate,
        show: impl Fn(&[u8]) -> String,
    ) {
        self.link_fallback_copies += up.copies;
        self.failed |= !up.failures.is_empty();
        self.browsable_incomplete_total += up.failures.total;
        for (p, msg) in up.failures.first {
            self.browsable_incomplete.push(Problem {
                path: show(&p),
                message: msg,
            });
        }
    }
}

/// Normalise a path for containment checks: absolute, symlinks resolved
/// for the part that exists.
fn normalize(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    if let Ok(c) = abs.canonicalize() {
        return c;
    }
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => normalize(parent).join(name),
        _ => abs,
    }
}

/// Folder names for several sources: their basenames, made unique (and
/// clear of reserved names) deterministically in the order given.
pub fn source_names(sources: &[PathBuf]) -> Vec<Vec<u8>> {
    if sources.len() == 1 {
        return vec![Vec::new()];
    }
    let mut taken: HashSet<Vec<u8>> = HashSet::new();
    let mut out = Vec::new();
    for s in sources {
        let base = base_name(s);
        let mut name = if render::RESERVED.contains(&base.as_slice()) {
            render::escape_name(&base, &|n| taken.contains(n))
        } else {
            base.clone()
        };
        let mut k = 2;
        while taken.contains(&name) {
            name = base.clone();
            name.extend_from_slice(format!("_{k}").as_bytes());
            k += 1;
        }
        taken.insert(name.clone());
        out.push(name);
    }
    out
}

/// Check a run's paths and patterns before anything is created: a refused
/// run must leave no trace (no backup root, no log file, nothing in a
/// source). Returns the normalised backup root and sources.
pub fn preflight(s: &BackupSettings) -> Result<(PathBuf, Vec<PathBuf>)> {
    let root = normalize(&s.backup_root);
    let mut sources = Vec::new();
    for src in &s.sources {
        let n = normalize(src);
        if !n.is_dir() {
            return Err(Error::Usage(format!(
                "source {} is not an existing directory",
                src.display()
            )));
        }
        if n.starts_with(&root) {
            return Err(Error::Usage(format!(
                "source {} is inside (or is) the backup root {}: choose a backup root outside the source",
                src.display(),
                root.display()
            )));
        }
        sources.push(n);
    }
    scan::Excludes::new(&s.exclude)?;
    LocalRepo::check_can_init(&root)?;
    Ok((root, sources))
}

/// How the sources are walked: the settings' filters, and never into
/// trove's own output (the backup root, the log directory).
fn scan_options(s: &BackupSettings, root: &Path) -> Result<ScanOptions> {
    let skip_dirs: Vec<(u64, u64)> = [Some(root), s.log_dir.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(|d| std::fs::metadata(d).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    Ok(ScanOptions {
        follow_symlinks: s.follow_symlinks,
        one_file_system: s.one_file_system,
        excludes: scan::Excludes::new(&s.exclude)?,
        skip_dirs,
        filters: s.filters.clone(),
        xattrs: s.xattrs,
        specials: true,
    })
}

/// The snapshot's record of each source folder (its path, folder name and
/// own metadata), stat'ed now.
fn source_records(layout: &Layout) -> Result<Vec<SourceRecord>> {
    layout
        .sources
        .iter()
        .zip(&layout.names)
        .map(|(src, name)| {
            let m = std::fs::metadata(src).map_err(|e| Error::io("stat source", src, e))?;
            Ok(SourceRecord {
                path: pathbytes::os_bytes(src.as_os_str()).to_vec(),
                name: name.clone(),
                meta: scan::meta_of(&m),
            })
        })
        .collect()
}

/// The snapshot path of a scope path, split into (source index, path
/// relative to that source).
fn split_scope<'a>(layout: &Layout, p: &'a [u8]) -> Option<(usize, &'a [u8])> {
    if layout.single() {
        return Some((0, p));
    }
    let first = p.iter().position(|&c| c == b'/').unwrap_or(p.len());
    let i = layout
        .names
        .iter()
        .position(|n| n.as_slice() == &p[..first])?;
    Some((i, p.get(first + 1..).unwrap_or(b"")))
}

/// The issue a failed read of a source file is.
fn read_failure_issue(f: ReadFailure) -> (IssueKind, String) {
    match f {
        ReadFailure::Vanished => (
            IssueKind::Vanished,
            "vanished during the backup".to_string(),
        ),
        ReadFailure::Unstable => (
            IssueKind::Unreadable,
            "kept changing while it was read (tried 3 times); previous version kept".to_string(),
        ),
        ReadFailure::Source(io) => (IssueKind::Unreadable, format!("cannot read: {io}")),
        ReadFailure::Repo(_) => (IssueKind::Unreadable, "repository error".to_string()),
    }
}

/// Counters of the read stage.
#[derive(Default)]
struct ReadStats {
    files_read: AtomicU64,
    new_objects: AtomicU64,
    new_bytes: AtomicU64,
}

/// Report each problem once, in path order, and apply `--on-error`.
fn report_issues(
    mut issues: Vec<Issue>,
    on_error: OnError,
    report: &mut BackupReport,
) -> Result<()> {
    issues.sort_by(|a, b| cmp_paths(&a.path, &b.path));
    for i in &issues {
        let shown = pathbytes::display_path(&i.fs);
        if on_error == OnError::Ignore {
            tracing::debug!("{shown}: {}", i.msg);
        } else {
            tracing::warn!("{shown}: {}", i.msg);
        }
        report.problems.push(Problem {
            path: shown,
            message: i.msg.clone(),
        });
        // A vanished file is simply not in the source any more.
        if i.kind == IssueKind::Vanished {
            continue;
        }
        if on_error != OnError::Ignore {
            report.failed = true;
        }
        if on_error == OnError::Fail {
            return Err(Error::Aborted(format!(
                "{}: {}",
                pathbytes::display_path(&i.fs),
                i.msg
            )));
        }
    }
    Ok(())
}

/// From this size up, a backup's allocations get their own mapping, and
/// glibc's thresholds stay where they are (see `run`).
const MAP_FROM: usize = 128 * 1024;

pub fn run(opts: &BackupOptions, progress: &dyn Progress) -> Result<BackupReport> {
    // A first backup's peak is its newcomers' list (32 bytes a new
    // content) plus what the allocator keeps. Left to itself glibc raises
    // its thresholds after the first large buffer is freed, and the arenas
    // of the walk's eight readers and of pass 2 then kept their freed
    // memory: 135 MiB at 3,000,000 files, 117 MiB with the thresholds
    // fixed at their defaults (goal 128). Commands whose peaks are far
    // from that keep the dynamic thresholds, which cost less CPU
    // (`materialize` took a quarter more with them fixed).
    crate::sys::map_large_allocations(MAP_FROM);
    let s = &opts.settings;
    let run_start = now_ns();
    let (root, sources) = preflight(s)?;

    // Open or create the repository, then take the lock.
    let repo = if !opts.dry_run {
        Some(open_or_init(&root, s.hash)?)
    } else if LocalRepo::exists(&root) {
        let r = LocalRepo::open(&root)?;
        r.check_algo(s.hash)?;
        Some(r)
    } else {
        None
    };
    let algo = repo
        .as_ref()
        .map_or(s.hash.unwrap_or(HashAlgo::Blake3), |r| r.algo());
    let mode = if opts.dry_run {
        LockMode::Shared
    } else {
        LockMode::Exclusive
    };
    let _lock = repo
        .as_ref()
        .map(|r| RepoLock::acquire(r, mode, opts.wait))
        .transpose()?;
    let writer = repo.as_ref().filter(|_| !opts.dry_run);
    if let Some(r) = writer {
        r.begin_write()?;
    }
    let scan = repo
        .as_ref()
        .map(|r| snapshot::scan(r))
        .transpose()?
        .unwrap_or_default();
    let latest = latest_to_build_on(&scan, opts.allow_damaged_latest)?;
    warn_damaged(&scan);
    let mut report = BackupReport {
        dry_run: opts.dry_run,
        ..BackupReport::default()
    };
    if let (Some(r), Some(snap)) = (writer, &latest) {
        catch_up(r, snap, &mut report)?;
    }

    let layout = Layout::new(&root, sources.clone(), source_names(&sources));
    stream::run(
        stream::Ctx {
            opts,
            repo: repo.as_ref(),
            writer,
            algo,
            latest,
            next_seq: scan.next_seq(),
            collect: scan.damaged.is_empty(),
            layout: &layout,
            root: &root,
            run_start,
            progress,
        },
        &mut report,
    )?;
    Ok(report)
}

/// The repository at `root` opened for writing, or created there (with
/// `hash`, BLAKE3 by default) when there is none; an existing one must
/// use `hash` when it is given.
fn open_or_init(root: &Path, hash: Option<HashAlgo>) -> Result<LocalRepo> {
    if LocalRepo::exists(root) {
        let r = LocalRepo::open_writable(root)?;
        r.check_algo(hash)?;
        Ok(r)
    } else {
        LocalRepo::init(root, hash.unwrap_or(HashAlgo::Blake3))
    }
}

/// Say once that a damaged record stops this run's collection.
fn warn_damaged(scan: &snapshot::Scan) {
    if !scan.damaged.is_empty() {
        tracing::warn!(
            "{} damaged snapshot record{} (see `trove verify`): no content is collected in this run",
            scan.damaged.len(),
            if scan.damaged.len() == 1 { "" } else { "s" }
        );
    }
}

/// Bring a browsable tree a crash left behind up to the latest snapshot
/// before a run changes it, noting what could not be placed.
fn catch_up(r: &LocalRepo, snap: &Snapshot, report: &mut BackupReport) -> Result<()> {
    let up = catch_up_browsable(r, snap)?;
    report.add_tree_update(up, |p| {
        pathbytes::display_path(&pathbytes::to_fs(&r.root, p))
    });
    Ok(())
}

/// One `backup --stdin` (or `--stdin-from-command`) run: see
/// [`stdin`]. The caller has started the audit log.
pub fn run_stdin(opts: &StdinOptions, progress: &dyn Progress) -> Result<BackupReport> {
    stdin::run(opts, progress)
}

/// The snapshot a run builds on: the latest, or — only when told so — the
/// newest readable one while a record that may be newer is damaged.
fn latest_to_build_on(scan: &snapshot::Scan, allow_damaged: bool) -> Result<Option<Snapshot>> {
    match scan.latest() {
        Ok(l) => Ok(l.cloned()),
        Err(e) if !allow_damaged => Err(e),
        Err(_) => {
            let base = scan.newest_readable();
            for d in scan.damaged_newer() {
                tracing::warn!(
                    "snapshot record {} is damaged ({}): building on {} as --allow-damaged-latest asks; the new snapshot is numbered after it",
                    d.path.display(),
                    d.reason(),
                    base.map_or("nothing (a first snapshot)".to_string(), |b| format!(
                        "snapshot {}",
                        b.id.short()
                    ))
                );
            }
            Ok(base.cloned())
        }
    }
}

/// A keep policy is applied even when nothing changed (it may have just
/// been configured); the records alone say whether it forgets anything,
/// so an idle run stays cheap.
fn policy_gc_if_due(
    repo: &LocalRepo,
    s: &BackupSettings,
    run_start: i64,
    report: &mut BackupReport,
) -> Result<()> {
    if crate::gc::policy_would_forget(repo, &s.policy, run_start)? {
        let g = crate::gc::full_gc(&repo.writer(), &s.policy, run_start)?;
        report.snapshots_forgotten = g.forgotten.len() as u64;
        report.objects_removed = g.objects_removed;
        report.bytes_freed = g.bytes_freed();
    }
    Ok(())
}

/// Garbage collection at the end of a run that recorded snapshot
/// `latest`: the keep policy when one is set, else the contents retention
/// dropped (`dropped`) that nothing references any more. Nothing is
/// collected while a record is damaged (`collect` false; said once by the
/// run).
fn collect_after_run(
    repo: &LocalRepo,
    s: &BackupSettings,
    run_start: i64,
    collect: bool,
    dropped: &[crate::id::ObjectId],
    latest: &Snapshot,
    report: &mut BackupReport,
) -> Result<()> {
    if !collect {
        return Ok(());
    }
    if s.policy.is_set() {
        let g = crate::gc::full_gc(&repo.writer(), &s.policy, run_start)?;
        report.snapshots_forgotten = g.forgotten.len() as u64;
        report.objects_removed = g.objects_removed;
        report.bytes_freed = g.bytes_freed();
    } else if !dropped.is_empty() {
        // The snapshot is committed: a collection that cannot run safely
        // is a problem to report (exit 1), not a failed backup.
        match crate::gc::collect_dropped(&repo.writer(), dropped, latest) {
            Ok((n, bytes)) => (report.objects_removed, report.bytes_freed) = (n, bytes),
            Err(e) => {
                // Not a path that could not be backed up: the warning
                // names the file and what to do; the exit code says 1.
                tracing::warn!("{e}");
                report.failed = true;
            }
        }
    }
    Ok(())
}

/// The record of a new snapshot.
fn snapshot_record(
    prev: Option<&Snapshot>,
    run_start: i64,
    sources: Vec<SourceRecord>,
    root: TreeId,
    archive: TreeId,
    c: &PlanCounts,
    report: &BackupReport,
) -> SnapshotRecord {
    SnapshotRecord {
        seq: prev.map_or(1, |p| p.record.seq + 1),
        time_ns: run_start,
        parent: prev.map(|p| p.id),
        sources,
        root,
        archive,
        summary: Summary {
            files: c.files,
            dirs: c.dirs,
            symlinks: c.symlinks,
            bytes: c.bytes,
            backed_up: c.backed_up,
            duplicates: c.duplicates,
            modified: c.modified,
            unchanged: c.unchanged,
            deleted: c.deleted,
            new_objects: report.new_objects,
            new_bytes: report.new_bytes,
            errors: report.problems.len() as u64,
            specials: c.specials,
        },
        owners: crate::fsmeta::owner_names(&c.uids, &c.gids),
    }
}

fn warn_link_copies(report: &BackupReport) {
    if report.link_fallback_copies > 0 {
        tracing::warn!(
            "{} files in the browsable tree are copies, not hardlinks (the filesystem refused the link: too many links to one content, or no hardlink support)",
            report.link_fallback_copies
        );
    }
}

fn fill_counts(r: &mut BackupReport, c: &PlanCounts) {
    r.files = c.files;
    r.dirs = c.dirs;
    r.symlinks = c.symlinks;
    r.bytes = c.bytes;
    r.copied = c.copied();
    r.unchanged = c.unchanged;
    r.backed_up = c.backed_up;
    r.duplicates = c.duplicates;
    r.modified = c.modified;
    r.deleted = c.deleted;
    r.retention_removed = c.retention_removed;
}

pub fn summary_line(r: &BackupReport) -> String {
    let mut line = format!(
        "{} copied, {} unchanged, {} total ({} stored in {} new object{})",
        r.copied,
        r.unchanged,
        r.files,
        human_bytes(r.new_bytes),
        r.new_objects,
        if r.new_objects == 1 { "" } else { "s" }
    );
    if r.repaired_objects > 0 {
        line.push_str(&format!(
            "; {} damaged object{} re-stored",
            r.repaired_objects,
            if r.repaired_objects == 1 { "" } else { "s" }
        ));
    }
    if r.excluded > 0 {
        line.push_str(&format!("; {} excluded", r.excluded));
    }
    line
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_names_are_unique_and_not_reserved() {
        let v = source_names(&[
            PathBuf::from("/a/docs"),
            PathBuf::from("/b/docs"),
            PathBuf::from("/c/versions"),
            PathBuf::from("/d/docs_2"),
        ]);
        let s: Vec<String> = v
            .iter()
            .map(|n| String::from_utf8_lossy(n).to_string())
            .collect();
        assert_eq!(s, vec!["docs", "docs_2", "_versions", "docs_2_2"]);
        assert_eq!(source_names(&[PathBuf::from("/x")]), vec![Vec::<u8>::new()]);
    }

    #[test]
    fn human() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(2048), "2.0 KiB");
    }
}
