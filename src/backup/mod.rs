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

use crate::browse::{self, Escapes};
use crate::config::{BackupSettings, OnError};
use crate::error::{Error, Result};
use crate::id::{HashAlgo, SnapshotId, TreeId};
use crate::materialize::{self, Materializer, Stats};
use crate::pathbytes::{self, cmp_paths, display as show};
use crate::plan::{self, Action, Plan, PlanCounts};
use crate::progress::Progress;
use crate::scan::{self, Issue, IssueKind, ScanOptions};
use crate::store::lock::{LockMode, RepoLock};
use crate::store::objects::ReadFailure;
use crate::store::snapshot::{self, Snapshot, SnapshotRecord, SourceRecord, Summary};
use crate::store::tree::{self, Archive, Entry, History};
use crate::store::{now_ns, Repo};
use serde::Serialize;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

mod spill;
mod stream;
mod walk;

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
    /// Problems that count for the exit code (not `--on-error ignore`).
    pub failed: bool,
}

/// Load a snapshot's two trees.
pub fn load_snapshot(repo: &Repo, rec: &SnapshotRecord) -> Result<(Vec<Entry>, Archive)> {
    load_trees(repo, rec, &mut HashSet::new())
}

/// Load a snapshot's two trees, noting every tree id met in `seen`.
pub(crate) fn load_trees(
    repo: &Repo,
    rec: &SnapshotRecord,
    seen: &mut HashSet<TreeId>,
) -> Result<(Vec<Entry>, Archive)> {
    let e = tree::flat_to_source(tree::read_flat(
        repo,
        &rec.root,
        seen,
        tree::Limit::source(rec),
    )?);
    let a = tree::flat_to_archive(tree::read_flat(
        repo,
        &rec.archive,
        seen,
        tree::Limit::archive(),
    )?);
    Ok((e, a))
}

/// The outcome of updating the browsable tree.
pub struct TreeUpdate {
    pub copies: u64,
    /// Entries that could not be placed (path in the tree, reason).
    pub failures: Vec<(Vec<u8>, String)>,
}

/// What must change in the browsable tree to go from showing one
/// snapshot to showing the next: usually only the differing entries
/// (`partial`), else both whole renderings.
pub(crate) struct TreeDiff {
    old: Vec<browse::BrowsableEntry>,
    new: Vec<browse::BrowsableEntry>,
    partial: bool,
}

impl TreeDiff {
    pub(crate) fn between(
        old: (&[Entry], &[(Vec<u8>, History)]),
        new: (&[Entry], &[(Vec<u8>, History)]),
    ) -> TreeDiff {
        match browse::render_diff(old, new) {
            Some((o, n)) => TreeDiff {
                old: o,
                new: n,
                partial: true,
            },
            None => TreeDiff {
                old: browse::render(old.0, old.1),
                new: browse::render(new.0, new.1),
                partial: false,
            },
        }
    }

    /// Apply it; `new_entries` is the listing the tree is to show.
    pub(crate) fn apply(&self, m: &Materializer<'_>, new_entries: &[Entry]) -> Result<()> {
        if self.partial {
            let esc = Escapes::for_entries(new_entries);
            m.apply(&self.old, &self.new, &|p: &[u8]| {
                browse::wants_dir(new_entries, &esc, p)
            })
        } else {
            let dirs = Materializer::dirs_of(&self.new);
            m.apply(&self.old, &self.new, &|p: &[u8]| dirs.contains(p))
        }
    }
}

/// Report entries the browsable tree lacks, and record the snapshot it
/// shows only when it is complete (so the next run tries the rest again).
///
/// When the update met something trove did not create where a folder
/// belongs (a symlink or a file there, moved to quarantine), entries no
/// change named may be missing below it, so the whole tree is checked
/// against the snapshot first. If the tree is still incomplete after that,
/// the marker is cleared and the next command checks all of it again;
/// otherwise the marker keeps the snapshot the tree showed before and the
/// next run retries the same differences.
pub(crate) fn finish_tree_update(
    repo: &Repo,
    m: &Materializer<'_>,
    shows: &SnapshotId,
) -> Result<TreeUpdate> {
    if m.needs_full_check() {
        tracing::warn!(
            "the browsable tree held entries trove did not create where it keeps folders: checking all of it against snapshot {}",
            shows.short()
        );
        // The complete pass retries every entry: its failures are the ones
        // that count.
        drop(m.take_failures());
        let full = (|| -> Result<()> {
            let rec = snapshot::read(repo, shows)?;
            let (entries, archive) = load_snapshot(repo, &rec)?;
            for p in m.reconcile(&browse::render(&entries, &archive), false)? {
                tracing::warn!(
                    "{} is not part of the backup (left in place)",
                    pathbytes::display_path(&pathbytes::to_fs(&repo.root, &p))
                );
            }
            Ok(())
        })();
        if let Err(e) = full {
            m.record_error(b"", e);
        }
    }
    let mut failures = m.take_failures();
    const SHOWN: usize = 20;
    for (p, msg) in failures.iter().take(SHOWN) {
        tracing::warn!("browsable tree: {}: {msg}", show_rel(p));
    }
    if failures.len() > SHOWN {
        tracing::warn!(
            "browsable tree: {} more entries could not be placed (the snapshot has them; `trove materialize` or the next backup puts them in place)",
            failures.len() - SHOWN
        );
    }
    let recorded = if failures.is_empty() {
        materialize::write_marker(repo, shows)
    } else if m.met_foreign() {
        materialize::clear_marker(repo)
    } else {
        Ok(())
    };
    if let Err(e) = recorded {
        tracing::warn!("browsable tree: {e}");
        failures.push((Vec::new(), e.to_string()));
    }
    Ok(TreeUpdate {
        copies: Stats::get(&m.stats.copied),
        failures,
    })
}

/// A path of the browsable tree for a message (`.` for the root itself).
fn show_rel(p: &[u8]) -> String {
    if p.is_empty() {
        ".".to_string()
    } else {
        show(p)
    }
}

/// Make the browsable tree at the backup root show `latest`, whatever a
/// crash left behind. Free when it already does.
pub fn catch_up_browsable(repo: &Repo, latest: &Snapshot) -> Result<TreeUpdate> {
    let m = Materializer::new(repo, &repo.root);
    let marker = repo.read_marker();
    if marker == Some(latest.id) {
        return Ok(TreeUpdate {
            copies: 0,
            failures: Vec::new(),
        });
    }
    let (entries, archive) = load_snapshot(repo, &latest.record)?;
    let (entries, archive) = (&entries[..], &archive[..]);
    let old_rec = marker.and_then(|id| snapshot::read(repo, &id).ok());
    match old_rec.and_then(|r| load_snapshot(repo, &r).ok()) {
        Some((oe, oa)) => {
            tracing::info!(
                "browsable tree is behind snapshot {}: updating it",
                latest.id.short()
            );
            if let Err(e) = TreeDiff::between((&oe, &oa), (entries, archive)).apply(&m, entries) {
                m.record_error(b"", e);
            }
        }
        None => {
            tracing::info!(
                "browsable tree state unknown: checking it against snapshot {}",
                latest.id.short()
            );
            match m.reconcile(&browse::render(entries, archive), false) {
                Ok(extra) => {
                    for p in extra {
                        tracing::warn!(
                            "{} is not part of the backup (left in place)",
                            pathbytes::display_path(&pathbytes::to_fs(&repo.root, &p))
                        );
                    }
                }
                // Reported with the entries that failed: the tree is
                // derived data, and a backup can still run.
                Err(e) => m.record_error(b"", e),
            }
        }
    }
    finish_tree_update(repo, &m, &latest.id)
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

fn base_name(p: &Path) -> Vec<u8> {
    match p.file_name() {
        Some(n) => pathbytes::os_bytes(n).to_vec(),
        None => b"root".to_vec(),
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
        let mut name = if browse::RESERVED.contains(&base.as_slice()) {
            browse::escape_name(&base, &|n| taken.contains(n))
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
    Repo::check_can_init(&root)?;
    Ok((root, sources))
}

/// Where the sources are, and how snapshot paths map back to them.
pub(crate) struct Layout {
    sources: Vec<PathBuf>,
    /// Folder of each source in the snapshot (empty with one source).
    names: Vec<Vec<u8>>,
    root_base: String,
}

impl Layout {
    /// The layout a snapshot was taken with (for runs that do not scan).
    pub(crate) fn of_record(repo: &Repo, rec: &SnapshotRecord) -> Layout {
        Layout {
            sources: rec
                .sources
                .iter()
                .map(|s| PathBuf::from(pathbytes::from_bytes(s.path.clone())))
                .collect(),
            names: rec.sources.iter().map(|s| s.name.clone()).collect(),
            root_base: show(&base_name(&repo.root)),
        }
    }

    fn single(&self) -> bool {
        self.sources.len() == 1
    }

    /// The file on disk behind a snapshot path.
    fn fs_path(&self, path: &[u8]) -> PathBuf {
        if self.single() {
            return pathbytes::to_fs(&self.sources[0], path);
        }
        let first = path.iter().position(|&c| c == b'/').unwrap_or(path.len());
        let rest = path.get(first + 1..).unwrap_or(b"");
        match self
            .names
            .iter()
            .position(|n| n.as_slice() == &path[..first])
        {
            Some(i) => pathbytes::to_fs(&self.sources[i], rest),
            None => pathbytes::to_fs(Path::new("/nonexistent"), path),
        }
    }

    /// How log lines name a source path: `source/one.txt` (the source's
    /// basename) with one source; with several, the snapshot path, which
    /// starts with the source's folder name and is unique even when two
    /// sources share a basename.
    fn source_for_log(&self, path: &[u8]) -> String {
        if self.single() {
            return show(&pathbytes::join(&base_name(&self.sources[0]), path));
        }
        show(path)
    }

    /// How log lines name a path of the browsable tree: `backup/one.txt`.
    fn browsable_for_log(&self, browse_path: &[u8]) -> String {
        format!("{}/{}", self.root_base, show(browse_path))
    }
}

/// Write the audit lines of a plan (SPEC §4) through tracing, in path order.
/// `old_esc`: the reserved-name escapes of the previous snapshot.
pub(crate) fn log_plan(plan: &Plan, old_esc: &Escapes, d: &Layout, dry: bool) {
    let new_esc = Escapes::for_entries(&plan.entries);
    log_reserved(&new_esc, d);
    let decision = |a: &Action| match a {
        Action::Backup { .. } => plan::Decision::Backup,
        Action::Duplicate { .. } => plan::Decision::Duplicate,
        Action::Modified {
            version, was_dup, ..
        } => plan::Decision::Modified {
            version: *version,
            was_dup: *was_dup,
        },
        Action::Deleted {
            displaced, was_dup, ..
        } => plan::Decision::Deleted {
            displaced: *displaced,
            was_dup: *was_dup,
        },
        Action::RetainDropVersion { version, .. } => {
            plan::Decision::RetainDropVersion { version: *version }
        }
        Action::RetainDropDeleted { .. } => plan::Decision::RetainDropDeleted,
    };
    let line = |p: &[u8], a: Option<&Action>| {
        log_decision(d, dry, old_esc, &new_esc, p, a.map(decision).as_ref());
    };
    if tracing::enabled!(tracing::Level::DEBUG) {
        // Every decision, SKIPs included, interleaved in path order.
        plan.for_each_decision(line);
    } else {
        for a in &plan.actions {
            line(a.path(&plan.entries), Some(a));
        }
    }
}

/// The audit lines naming top-level entries shown under another name.
pub(crate) fn log_reserved(new_esc: &Escapes, d: &Layout) {
    for (name, shown) in new_esc.escaped() {
        tracing::info!(
            "RESERVED NAME: {} is shown as {} (the name is reserved for trove's own folders)",
            d.source_for_log(name),
            d.browsable_for_log(shown)
        );
    }
}

/// The audit lines of one decision (`None`: SKIP, a debug line).
pub(crate) fn log_decision(
    d: &Layout,
    dry: bool,
    old_esc: &Escapes,
    new_esc: &Escapes,
    p: &[u8],
    a: Option<&plan::Decision>,
) {
    use plan::Decision;
    let pre = if dry { "WOULD " } else { "" };
    let Some(a) = a else {
        tracing::debug!("PLANNER → SKIP: {}", d.source_for_log(p));
        tracing::debug!("SKIP: {}", d.source_for_log(p));
        return;
    };
    match a {
        Decision::Backup => {
            tracing::debug!("PLANNER → BACKUP: {}", d.source_for_log(p));
            tracing::info!(
                "{pre}BACKUP: {} → {}",
                d.source_for_log(p),
                d.browsable_for_log(&new_esc.top_path(p))
            );
        }
        Decision::Duplicate => {
            tracing::debug!("PLANNER → DUPLICATE: {}", d.source_for_log(p));
            tracing::info!(
                "{pre}DUPLICATE: {} → {}",
                d.source_for_log(p),
                d.browsable_for_log(&browse::current_path(new_esc, p, true))
            );
        }
        Decision::Modified { version, was_dup } => {
            tracing::debug!("PLANNER → MODIFIED: {}", d.source_for_log(p));
            let old = browse::current_path(old_esc, p, *was_dup);
            tracing::info!(
                "{pre}ARCHIVE: {} → {}",
                d.browsable_for_log(&old),
                show(&browse::version_path(p, *version))
            );
            tracing::info!(
                "{pre}UPDATED: {} → {}",
                d.source_for_log(p),
                d.browsable_for_log(&new_esc.top_path(p))
            );
        }
        Decision::Deleted { displaced, was_dup } => {
            tracing::debug!("PLANNER → DELETED: {}", d.source_for_log(p));
            if let Some(n) = displaced {
                tracing::info!(
                    "{pre}ARCHIVE: {} → {}",
                    d.browsable_for_log(&browse::deleted_path(p)),
                    show(&browse::version_path(p, *n))
                );
            }
            let old = browse::current_path(old_esc, p, *was_dup);
            tracing::info!(
                "{pre}ARCHIVE DELETE: {} → {}",
                d.browsable_for_log(&old),
                d.browsable_for_log(&browse::deleted_path(p))
            );
            tracing::info!("{pre}STATE REMOVE: {}", d.source_for_log(p));
        }
        Decision::RetainDropVersion { version } => {
            tracing::info!(
                "{pre}RETENTION delete: {}",
                show(&browse::version_path(p, *version))
            );
        }
        Decision::RetainDropDeleted => {
            tracing::info!("{pre}RETENTION delete: {}", show(&browse::deleted_path(p)));
        }
    }
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

pub fn run(opts: &BackupOptions, progress: &dyn Progress) -> Result<BackupReport> {
    let s = &opts.settings;
    let run_start = now_ns();
    let (root, sources) = preflight(s)?;

    // Open or create the repository, then take the lock.
    let repo = if Repo::exists(&root) {
        let r = if opts.dry_run {
            Repo::open(&root)?
        } else {
            Repo::open_writable(&root)?
        };
        r.check_algo(s.hash)?;
        Some(r)
    } else if opts.dry_run {
        None
    } else {
        Some(Repo::init(&root, s.hash.unwrap_or(HashAlgo::Blake3))?)
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
        r.clean_tmp()?;
    }
    let scan = repo
        .as_ref()
        .map(snapshot::scan)
        .transpose()?
        .unwrap_or_default();
    let latest = latest_to_build_on(&scan, opts.allow_damaged_latest)?;
    if !scan.damaged.is_empty() {
        tracing::warn!(
            "{} damaged snapshot record{} (see `trove verify`): no content is collected in this run",
            scan.damaged.len(),
            if scan.damaged.len() == 1 { "" } else { "s" }
        );
    }
    let mut report = BackupReport {
        dry_run: opts.dry_run,
        ..BackupReport::default()
    };
    if let (Some(r), Some(snap)) = (writer, &latest) {
        let up = catch_up_browsable(r, snap)?;
        report.link_fallback_copies += up.copies;
        report.failed |= !up.failures.is_empty();
        for (p, msg) in up.failures {
            report.browsable_incomplete.push(Problem {
                path: pathbytes::display_path(&pathbytes::to_fs(&r.root, &p)),
                message: msg,
            });
        }
    }

    let layout = Layout {
        names: source_names(&sources),
        sources,
        root_base: show(&base_name(&root)),
    };
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
    repo: &Repo,
    s: &BackupSettings,
    run_start: i64,
    report: &mut BackupReport,
) -> Result<()> {
    if crate::prune::policy_would_forget(repo, &s.policy, run_start)? {
        let g = crate::prune::full_gc(repo, &s.policy, run_start)?;
        report.snapshots_forgotten = g.forgotten.len() as u64;
        report.objects_removed = g.objects_removed;
        report.bytes_freed = g.bytes_freed();
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
        },
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
