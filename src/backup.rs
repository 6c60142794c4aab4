//! One backup run: scan → hash (reading only what the stat cache cannot
//! vouch for) → plan → store objects and trees → snapshot record (the commit
//! point) → browsable tree → stat cache. It owns the order of those steps,
//! which is the crash-safety argument of docs/DESIGN.md; the decisions
//! themselves belong to `plan`, the layout to `browse`.

use crate::browse::{self, Escapes};
use crate::config::{BackupSettings, OnError};
use crate::error::{Error, Result};
use crate::id::{HashAlgo, ObjectId, SnapshotId, TreeId};
use crate::materialize::{self, Materializer, Stats};
use crate::pathbytes::{self, cmp_paths, display as show};
use crate::plan::{self, Action, Plan, PlanCounts, PlanOptions};
use crate::progress::Progress;
use crate::scan::{self, IssueKind, ScanItem, ScanOptions};
use crate::store::cache::{self, CacheRecord, StatCache};
use crate::store::lock::{LockMode, RepoLock};
use crate::store::objects::{self, Batch, ReadFailure, StatKey};
use crate::store::snapshot::{self, Snapshot, SnapshotRecord, SourceRecord, Summary};
use crate::store::tree::{self, Archive, Entry, History, Item, Leaf, Meta};
use crate::store::{now_ns, Repo};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct BackupOptions {
    pub settings: BackupSettings,
    pub rehash: bool,
    pub dry_run: bool,
    pub always_snapshot: bool,
    pub wait: bool,
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
    pub files_read: u64,
    pub new_objects: u64,
    pub new_bytes: u64,
    pub excluded: u64,
    pub link_fallback_copies: u64,
    pub problems: Vec<Problem>,
    /// Problems that count for the exit code (not `--on-error ignore`).
    pub failed: bool,
}

/// The previous state, loaded once.
struct Prev {
    snap: Option<Snapshot>,
    entries: Vec<Entry>,
    archive: Vec<(Vec<u8>, History)>,
    known_trees: HashSet<TreeId>,
}

fn load_prev(repo: &Repo) -> Result<Prev> {
    let snap = snapshot::latest(repo)?;
    let mut known_trees = HashSet::new();
    let (entries, archive) = match &snap {
        Some(s) => {
            let e = tree::flat_to_source(tree::read_flat(repo, &s.record.root, &mut known_trees)?);
            let a =
                tree::flat_to_archive(tree::read_flat(repo, &s.record.archive, &mut known_trees)?);
            (e, a)
        }
        None => (Vec::new(), Vec::new()),
    };
    Ok(Prev {
        snap,
        entries,
        archive,
        known_trees,
    })
}

/// Load a snapshot's two trees.
pub fn load_snapshot(repo: &Repo, rec: &SnapshotRecord) -> Result<(Vec<Entry>, Archive)> {
    let mut seen = HashSet::new();
    let e = tree::flat_to_source(tree::read_flat(repo, &rec.root, &mut seen)?);
    let a = tree::flat_to_archive(tree::read_flat(repo, &rec.archive, &mut seen)?);
    Ok((e, a))
}

/// The outcome of updating the browsable tree.
pub struct TreeUpdate {
    pub copies: u64,
    /// Entries that could not be placed (path in the tree, reason).
    pub failures: Vec<(Vec<u8>, String)>,
}

/// Report entries the browsable tree lacks, and record the snapshot it
/// shows only when it is complete (so the next run tries the rest again).
fn finish_tree_update(repo: &Repo, m: &Materializer<'_>, shows: &SnapshotId) -> Result<TreeUpdate> {
    let failures = m.take_failures();
    const SHOWN: usize = 20;
    for (p, msg) in failures.iter().take(SHOWN) {
        tracing::warn!("browsable tree: {}: {msg}", show(p));
    }
    if failures.len() > SHOWN {
        tracing::warn!(
            "browsable tree: {} more entries could not be placed (the snapshot has them; the next backup retries)",
            failures.len() - SHOWN
        );
    }
    if failures.is_empty() {
        materialize::write_marker(repo, shows)?;
    }
    Ok(TreeUpdate {
        copies: Stats::get(&m.stats.copied),
        failures,
    })
}

/// Make the browsable tree at the backup root show `latest`, whatever a
/// crash left behind. Cheap when it already does.
pub fn catch_up_browsable(
    repo: &Repo,
    latest: &Snapshot,
    entries: &[Entry],
    archive: &[(Vec<u8>, History)],
) -> Result<TreeUpdate> {
    let m = Materializer::new(repo, &repo.root);
    let marker = materialize::read_marker(repo);
    if marker == Some(latest.id) {
        return Ok(TreeUpdate {
            copies: 0,
            failures: Vec::new(),
        });
    }
    let new = browse::render(entries, archive);
    let old_rec = marker.and_then(|id| snapshot::read(repo, &id).ok());
    match old_rec.and_then(|r| load_snapshot(repo, &r).ok()) {
        Some((oe, oa)) => {
            tracing::info!(
                "browsable tree is behind snapshot {}: updating it",
                latest.id.short()
            );
            m.apply(&browse::render(&oe, &oa), &new)?;
        }
        None => {
            tracing::info!(
                "browsable tree state unknown: checking it against snapshot {}",
                latest.id.short()
            );
            let extra = m.reconcile(&new, false)?;
            for p in extra {
                tracing::warn!(
                    "{} is not part of the backup (left in place)",
                    pathbytes::display_path(&pathbytes::to_fs(&repo.root, &p))
                );
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

/// How paths are shown in log lines: `source/one.txt`, `backup/one.txt`.
struct Display {
    single: bool,
    src_base: Vec<(Vec<u8>, Vec<u8>)>, // (folder name, source basename)
    root_base: String,
}

impl Display {
    fn src(&self, path: &[u8]) -> String {
        if self.single {
            let b = &self.src_base[0].1;
            return show(&pathbytes::join(b, path));
        }
        // Several sources: the snapshot path starts with the source's
        // folder name, unique even when two sources share a basename.
        show(path)
    }

    fn dst(&self, browse_path: &[u8]) -> String {
        format!("{}/{}", self.root_base, show(browse_path))
    }
}

fn find<'a>(entries: &'a [Entry], path: &[u8]) -> Option<&'a Entry> {
    entries
        .binary_search_by(|e| cmp_paths(&e.path, path))
        .ok()
        .map(|i| &entries[i])
}

fn is_dup(entries: &[Entry], path: &[u8]) -> bool {
    matches!(
        find(entries, path),
        Some(Entry {
            item: Item::Leaf(Leaf::File { dup: true, .. }),
            ..
        })
    )
}

/// Write the audit lines of a plan (SPEC §4) through tracing.
fn log_plan(plan: &Plan, prev: &[Entry], d: &Display, dry: bool) {
    let new_esc = Escapes::for_entries(&plan.entries);
    let old_esc = Escapes::for_entries(prev);
    let pre = if dry { "WOULD " } else { "" };
    for (name, shown) in new_esc.escaped() {
        tracing::info!(
            "RESERVED NAME: {} is shown as {} (the name is reserved for trove's own folders)",
            d.src(name),
            d.dst(shown)
        );
    }
    for a in &plan.actions {
        let p = a.path();
        match a {
            Action::Backup { .. } => {
                tracing::debug!("PLANNER → BACKUP: {}", d.src(p));
                tracing::info!(
                    "{pre}BACKUP: {} → {}",
                    d.src(p),
                    d.dst(&new_esc.top_path(p))
                );
            }
            Action::Duplicate { .. } => {
                tracing::debug!("PLANNER → DUPLICATE: {}", d.src(p));
                tracing::info!(
                    "{pre}DUPLICATE: {} → {}",
                    d.src(p),
                    d.dst(&browse::current_path(&new_esc, p, true))
                );
            }
            Action::Modified { version, .. } => {
                tracing::debug!("PLANNER → MODIFIED: {}", d.src(p));
                let old = browse::current_path(&old_esc, p, is_dup(prev, p));
                tracing::info!(
                    "{pre}ARCHIVE: {} → {}",
                    d.dst(&old),
                    show(&browse::version_path(p, *version))
                );
                tracing::info!(
                    "{pre}UPDATED: {} → {}",
                    d.src(p),
                    d.dst(&new_esc.top_path(p))
                );
            }
            Action::Skip { .. } => {
                tracing::debug!("PLANNER → SKIP: {}", d.src(p));
                tracing::debug!("SKIP: {}", d.src(p));
            }
            Action::Deleted { displaced, .. } => {
                tracing::debug!("PLANNER → DELETED: {}", d.src(p));
                if let Some(n) = displaced {
                    tracing::info!(
                        "{pre}ARCHIVE: {} → {}",
                        d.dst(&browse::deleted_path(p)),
                        show(&browse::version_path(p, *n))
                    );
                }
                let old = browse::current_path(&old_esc, p, is_dup(prev, p));
                tracing::info!(
                    "{pre}ARCHIVE DELETE: {} → {}",
                    d.dst(&old),
                    d.dst(&browse::deleted_path(p))
                );
                tracing::info!("{pre}STATE REMOVE: {}", d.src(p));
            }
            Action::RetainDropVersion { version, .. } => {
                tracing::info!(
                    "{pre}RETENTION delete: {}",
                    show(&browse::version_path(p, *version))
                );
            }
            Action::RetainDropDeleted { .. } => {
                tracing::info!("{pre}RETENTION delete: {}", show(&browse::deleted_path(p)));
            }
        }
    }
}

/// A file to read (not vouched for by the stat cache).
struct ToRead {
    idx: usize,
    fs: PathBuf,
    size: u64,
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

pub fn run(opts: &BackupOptions, progress: &dyn Progress) -> Result<BackupReport> {
    let s = &opts.settings;
    let run_start = now_ns();
    let (root, sources) = preflight(s)?;

    // Open or create the repository, then take the lock.
    let repo = if Repo::exists(&root) {
        let r = Repo::open(&root)?;
        r.check_algo(s.hash)?;
        Some(r)
    } else if opts.dry_run {
        None
    } else {
        Some(Repo::init(&root, s.hash.unwrap_or(HashAlgo::Blake3))?)
    };
    let algo = repo
        .as_ref()
        .map(|r| r.algo())
        .unwrap_or(s.hash.unwrap_or(HashAlgo::Blake3));
    let _lock = match &repo {
        Some(r) => Some(RepoLock::acquire(
            r,
            if opts.dry_run {
                LockMode::Shared
            } else {
                LockMode::Exclusive
            },
            opts.wait,
        )?),
        None => None,
    };
    if let (Some(r), false) = (&repo, opts.dry_run) {
        r.clean_tmp()?;
    }
    let prev = match &repo {
        Some(r) => load_prev(r)?,
        None => Prev {
            snap: None,
            entries: Vec::new(),
            archive: Vec::new(),
            known_trees: HashSet::new(),
        },
    };
    let mut report = BackupReport {
        dry_run: opts.dry_run,
        ..BackupReport::default()
    };
    if let (Some(r), Some(snap), false) = (&repo, &prev.snap, opts.dry_run) {
        let up = catch_up_browsable(r, snap, &prev.entries, &prev.archive)?;
        report.link_fallback_copies += up.copies;
        if !up.failures.is_empty() {
            report.failed = true;
        }
    }

    // Scan.
    let names = source_names(&sources);
    let root_meta = std::fs::metadata(&root).ok();
    // Never back up our own output: the backup root and the log directory,
    // wherever they are.
    let log_meta = s.log_dir.as_ref().and_then(|d| std::fs::metadata(d).ok());
    let skip_dirs: Vec<(u64, u64)> = root_meta
        .iter()
        .chain(log_meta.iter())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    let scan_opts = ScanOptions {
        follow_symlinks: s.follow_symlinks,
        one_file_system: s.one_file_system,
        excludes: scan::Excludes::new(&s.exclude)?,
        skip_dirs,
    };
    progress.phase("scanning", 0, 0);
    let mut scanned = Vec::new();
    let mut issues = Vec::new();
    let mut source_records = Vec::new();
    for (src, name) in sources.iter().zip(&names) {
        let m = std::fs::metadata(src).map_err(|e| Error::io("stat source", src, e))?;
        let meta = scan::meta_of(&m);
        source_records.push(SourceRecord {
            path: pathbytes::os_bytes(src.as_os_str()).to_vec(),
            name: name.clone(),
            meta,
        });
        if !name.is_empty() {
            scanned.push(scan::ScanEntry {
                path: name.clone(),
                fs: src.clone(),
                item: ScanItem::Dir { meta },
            });
        }
        let out = scan::scan_source(src, name, &scan_opts)?;
        scanned.extend(out.entries);
        issues.extend(out.issues);
        report.excluded += out.excluded;
    }
    progress.finish();
    scanned.sort_by(|a, b| cmp_paths(&a.path, &b.path));

    // Hash: the stat cache vouches for unchanged files; the rest are read
    // (and, for a real run, copied into tmp/ in the same pass).
    let cache = match (&repo, opts.rehash) {
        (Some(r), false) => StatCache::load(r, prev.snap.as_ref().map(|s| &s.id)),
        _ => StatCache::default(),
    };
    let mut ids: Vec<Option<(ObjectId, StatKey)>> = vec![None; scanned.len()];
    let mut to_read = Vec::new();
    for (i, e) in scanned.iter().enumerate() {
        if let ScanItem::File { stat, .. } = &e.item {
            let key = pathbytes::os_bytes(e.fs.as_os_str());
            match cache.lookup(key, stat) {
                Some(id) => ids[i] = Some((id, *stat)),
                None => to_read.push(ToRead {
                    idx: i,
                    fs: e.fs.clone(),
                    size: stat.size,
                }),
            }
        }
    }
    drop(cache);
    let batch = repo.as_ref().filter(|_| !opts.dry_run).map(Batch::new);
    progress.phase(
        "reading",
        to_read.len() as u64,
        to_read.iter().map(|t| t.size).sum(),
    );
    let results: Vec<(usize, std::result::Result<objects::Ingested, ReadFailure>)> = to_read
        .par_iter()
        .map(|t| {
            let r = objects::ingest(algo, batch.as_ref(), &t.fs, s.follow_symlinks);
            progress.advance(1, t.size);
            (t.idx, r)
        })
        .collect();
    progress.finish();
    report.files_read = results.len() as u64;
    for (idx, r) in results {
        let e = &scanned[idx];
        match r {
            Ok(ing) => {
                ids[idx] = Some((ing.id, ing.stat));
                if ing.stored {
                    report.new_objects += 1;
                    report.new_bytes += ing.size;
                }
            }
            Err(ReadFailure::Repo(err)) => return Err(err),
            Err(f) => {
                let (kind, msg) = match f {
                    ReadFailure::Vanished => (
                        IssueKind::Vanished,
                        "vanished during the backup".to_string(),
                    ),
                    ReadFailure::Unstable => (
                        IssueKind::Unreadable,
                        "kept changing while it was read (tried 3 times); previous version kept"
                            .to_string(),
                    ),
                    ReadFailure::Source(io) => {
                        (IssueKind::Unreadable, format!("cannot read: {io}"))
                    }
                    ReadFailure::Repo(_) => unreachable_repo(),
                };
                issues.push(scan::Issue {
                    path: e.path.clone(),
                    fs: e.fs.clone(),
                    kind,
                    msg,
                });
            }
        }
    }
    if opts.dry_run {
        report.new_objects = 0;
    }

    // The current listing.
    let mut cache_records = Vec::new();
    let mut cur: Vec<Entry> = Vec::with_capacity(scanned.len());
    for (i, e) in scanned.into_iter().enumerate() {
        let item = match e.item {
            ScanItem::Dir { meta } => Item::Dir(meta),
            ScanItem::Symlink { target, meta } => Item::Leaf(Leaf::Symlink { target, meta }),
            ScanItem::File { meta, .. } => {
                let Some((id, stat)) = ids[i] else { continue };
                cache_records.push(CacheRecord {
                    path: pathbytes::os_bytes(e.fs.as_os_str()).to_vec(),
                    size: stat.size,
                    mtime_ns: stat.mtime_ns,
                    ctime_ns: stat.ctime_ns,
                    ino: stat.ino,
                    dev: stat.dev,
                    id,
                });
                Item::Leaf(Leaf::File {
                    size: stat.size,
                    id,
                    dup: false,
                    meta: Meta {
                        mtime_ns: stat.mtime_ns,
                        ..meta
                    },
                })
            }
        };
        cur.push(Entry { path: e.path, item });
    }

    // Problems: report each once, in path order; a path that could not be
    // read keeps its previous content rather than turning into a deletion.
    issues.sort_by(|a, b| cmp_paths(&a.path, &b.path));
    let mut carried = false;
    for i in &issues {
        let shown = pathbytes::display_path(&i.fs);
        let counts = s.on_error != OnError::Ignore && i.kind != IssueKind::Vanished;
        if s.on_error == OnError::Ignore {
            tracing::debug!("{shown}: {}", i.msg);
        } else {
            tracing::warn!("{shown}: {}", i.msg);
        }
        report.problems.push(Problem {
            path: shown,
            message: i.msg.clone(),
        });
        if counts {
            report.failed = true;
        }
        if s.on_error == OnError::Fail && i.kind != IssueKind::Vanished {
            return Err(Error::Aborted(format!(
                "{}: {}",
                pathbytes::display_path(&i.fs),
                i.msg
            )));
        }
        if matches!(
            i.kind,
            IssueKind::Unreadable | IssueKind::UnlistableDir | IssueKind::Loop
        ) {
            carried |= carry_over(&prev.entries, &mut cur, &i.path);
        }
    }
    if carried {
        cur.sort_by(|a, b| cmp_paths(&a.path, &b.path));
        cur.dedup_by(|a, b| a.path == b.path);
    }

    // Plan.
    let plan = plan::plan(
        &prev.entries,
        &prev.archive,
        cur,
        &PlanOptions {
            max_versions: s.max_versions,
            deleted_max_age_ns: s
                .deleted_max_age_days
                .map(|d| d as i64 * 86_400 * 1_000_000_000),
            now_ns: run_start,
        },
    );
    fill_counts(&mut report, &plan.counts);
    let display = Display {
        single: sources.len() == 1,
        src_base: names
            .iter()
            .cloned()
            .zip(sources.iter().map(|p| base_name(p)))
            .collect(),
        root_base: show(&base_name(&root)),
    };
    let src_flat = tree::source_to_flat(&plan.entries);
    let arch_flat = tree::archive_to_flat(&plan.archive);

    let Some(repo) = repo.as_ref().filter(|_| !opts.dry_run) else {
        let root_id = tree::tree_id(algo, &src_flat)?;
        let arch_id = tree::tree_id(algo, &arch_flat)?;
        report.changed = prev
            .snap
            .as_ref()
            .is_none_or(|p| p.record.root != root_id || p.record.archive != arch_id);
        log_plan(&plan, &prev.entries, &display, true);
        return Ok(report);
    };
    let Some(batch) = batch else {
        return Err(Error::Usage("internal: no write batch".into()));
    };

    let root_id = tree::write_tree(algo, &src_flat, &batch, &prev.known_trees)?;
    let arch_id = tree::write_tree(algo, &arch_flat, &batch, &prev.known_trees)?;
    drop(src_flat);
    drop(arch_flat);
    report.changed = prev
        .snap
        .as_ref()
        .is_none_or(|p| p.record.root != root_id || p.record.archive != arch_id);

    if !report.changed && !opts.always_snapshot {
        let latest = prev.snap.as_ref().map(|p| p.id);
        tracing::info!("No changes: nothing to back up, no new snapshot");
        cache::save(repo, latest, cache_records, run_start)?;
        report.snapshot = latest.map(|i| i.short());
        return Ok(report);
    }

    // Commit: objects and trees, then the record.
    batch.commit()?;
    let record = SnapshotRecord {
        seq: prev.snap.as_ref().map_or(1, |p| p.record.seq + 1),
        time_ns: run_start,
        parent: prev.snap.as_ref().map(|p| p.id),
        sources: source_records,
        root: root_id,
        archive: arch_id,
        summary: Summary {
            files: plan.counts.files,
            dirs: plan.counts.dirs,
            symlinks: plan.counts.symlinks,
            bytes: plan.counts.bytes,
            backed_up: plan.counts.backed_up,
            duplicates: plan.counts.duplicates,
            modified: plan.counts.modified,
            unchanged: plan.counts.unchanged,
            deleted: plan.counts.deleted,
            new_objects: report.new_objects,
            new_bytes: report.new_bytes,
            errors: report.problems.len() as u64,
        },
    };
    let snap_id: SnapshotId = snapshot::write(repo, &record)?;
    report.snapshot = Some(snap_id.short());
    log_plan(&plan, &prev.entries, &display, false);

    // Derived data: the browsable tree, then the cache.
    let m = Materializer::new(repo, &repo.root);
    let old_render = browse::render(&prev.entries, &prev.archive);
    let new_render = browse::render(&plan.entries, &plan.archive);
    m.apply(&old_render, &new_render)?;
    let up = finish_tree_update(repo, &m, &snap_id)?;
    report.link_fallback_copies += up.copies;
    for (p, msg) in up.failures {
        report.failed = true;
        report.problems.push(Problem {
            path: format!("{}/{}", show(&base_name(&root)), show(&p)),
            message: format!("not placed in the browsable tree: {msg}"),
        });
    }
    if report.link_fallback_copies > 0 {
        tracing::warn!(
            "{} files in the browsable tree are copies, not hardlinks (the filesystem refused the link: too many links to one content, or no hardlink support)",
            report.link_fallback_copies
        );
    }
    cache::save(repo, Some(snap_id), cache_records, run_start)?;
    Ok(report)
}

fn unreachable_repo() -> (IssueKind, String) {
    (IssueKind::Unreadable, "repository error".into())
}

/// Copy the previous snapshot's entries at and below `path` into `cur`
/// where `cur` lacks them. Returns whether anything was added.
fn carry_over(prev: &[Entry], cur: &mut Vec<Entry>, path: &[u8]) -> bool {
    let start = prev.partition_point(|e| cmp_paths(&e.path, path) == std::cmp::Ordering::Less);
    let mut added = false;
    for e in &prev[start..] {
        let under =
            e.path == path || (e.path.starts_with(path) && e.path.get(path.len()) == Some(&b'/'));
        if !under {
            break;
        }
        if !cur.iter().any(|c| c.path == e.path) {
            tracing::warn!("keeping the previous version of {}", show(&e.path));
            cur.push(e.clone());
            added = true;
        }
    }
    added
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

/// The summary line (SPEC §4), printed on the console and logged.
pub fn summary_line(r: &BackupReport) -> String {
    format!(
        "{} copied, {} unchanged, {} total ({} stored in {} new objects)",
        r.copied,
        r.unchanged,
        r.files,
        human_bytes(r.new_bytes),
        r.new_objects
    )
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
