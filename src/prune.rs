//! `trove prune` and the retention step at the end of a backup: per-file
//! retention (`max_versions_per_file`, `deleted_max_age_days`) applied to
//! the latest snapshot, the snapshot policy (`keep_*`), then garbage
//! collection (`gc`).
//!
//! Per-file retention changes the archive, which lives in the snapshot, so
//! when the current settings drop something from the latest snapshot's
//! archive, prune records a new snapshot with the same source tree and the
//! trimmed archive (the planner decides, exactly as in a backup run), then
//! updates the browsable tree. Nothing else ever leaves the repository.

use crate::audit::Layout;
use crate::browsable::apply::Materializer;
use crate::browsable::render::Escapes;
use crate::browsable::update::{TreeDiff, TreeUpdate};
use crate::error::Result;
use crate::gc::{self, GcReport};
use crate::id::{SnapshotId, TreeId};
use crate::local::lock::LockMode;
use crate::local::objects::Batch;
use crate::local::{cache, LocalRepo};
use crate::model::{Entry, History};
use crate::plan::{self, PlanOptions};
use crate::repo::snapshot::{self, Snapshot, SnapshotRecord, Summary};
use crate::repo::tree;
use crate::retention::Policy;
use serde::Serialize;
use std::collections::HashSet;
use std::path::Path;

#[derive(Clone, Debug)]
pub struct PruneOptions {
    pub policy: Policy,
    pub max_versions: u64,
    pub deleted_max_age_days: Option<u64>,
    pub dry_run: bool,
    pub now_ns: i64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    /// Versions and deleted entries per-file retention removed now.
    pub retention_removed: u64,
    /// The snapshot recording that trim, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_snapshot: Option<String>,
    pub gc: GcReport,
    /// Entries of the browsable tree that could not be put in place
    /// ("path: reason"); the snapshot has them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub browsable_incomplete: Vec<String>,
    /// How many entries could not be put in place (the list above keeps
    /// the first thousand).
    #[serde(skip_serializing_if = "crate::model::is_zero")]
    pub browsable_incomplete_total: u64,
}

fn plan_options(o: &PruneOptions) -> PlanOptions {
    PlanOptions {
        max_versions: o.max_versions,
        deleted_max_age_ns: o.deleted_max_age_days.map(crate::retention::days_ns),
        now_ns: o.now_ns,
    }
}

/// What per-file retention did (or, in a dry run, would do) to the latest
/// snapshot.
#[derive(Default)]
struct Trim {
    removed: u64,
    /// The snapshot recording the trim (not in a dry run).
    snapshot: Option<SnapshotId>,
    /// Browsable-tree entries the update could not place.
    tree_failures: crate::browsable::apply::Failures,
}

/// Per-file retention decided for the latest snapshot, nothing written.
struct TrimPlan {
    entries: Vec<crate::model::Entry>,
    archive: tree::Archive,
    known: HashSet<TreeId>,
    plan: plan::Plan,
}

/// Decide per-file retention for the latest snapshot: None when nothing
/// expires. Reads the snapshot's trees (a damaged one is an error here,
/// before anything is written).
fn plan_retention(
    repo: &LocalRepo,
    latest: &Snapshot,
    o: &PruneOptions,
) -> Result<Option<TrimPlan>> {
    let popts = plan_options(o);
    // The archive alone says whether anything expires; the whole listing
    // (the largest thing prune could hold) is loaded only then.
    let archive = tree::flat_to_archive(tree::read_flat(
        repo,
        &latest.record.archive,
        &mut HashSet::new(),
        tree::Limit::archive(),
    )?);
    if !plan::archive_needs_retention(&archive, &popts) {
        return Ok(None);
    }
    drop(archive);
    let mut known = HashSet::new();
    let (entries, archive) = crate::repo::snapshot::load_listing(repo, &latest.record, &mut known)?;
    let plan = plan::plan(&entries, &archive, entries.clone(), &popts);
    if plan.counts.retention_removed == 0 {
        return Ok(None);
    }
    Ok(Some(TrimPlan {
        entries,
        archive,
        known,
        plan,
    }))
}

/// Apply per-file retention to the latest snapshot.
fn file_retention(
    repo: &LocalRepo,
    latest: &Snapshot,
    t: Option<TrimPlan>,
    o: &PruneOptions,
) -> Result<Trim> {
    let Some(TrimPlan {
        entries,
        archive,
        known,
        plan,
    }) = t
    else {
        return Ok(Trim::default());
    };
    let removed = plan.counts.retention_removed;
    let layout = Layout::of_record(&repo.root, &latest.record);
    let esc = Escapes::for_entries(&entries);
    if o.dry_run {
        crate::audit::log_plan(&plan, &esc, &layout, true);
        return Ok(Trim {
            removed,
            snapshot: None,
            tree_failures: Default::default(),
        });
    }
    let batch = Batch::new(repo);
    let s = &latest.record.summary;
    let done = record_listing(
        repo,
        &batch,
        Some(latest),
        ListingRun {
            old: (&entries, &archive),
            known: &known,
            plan: &plan,
            layout: &layout,
        },
        |root, archive| SnapshotRecord {
            seq: latest.record.seq + 1,
            time_ns: o.now_ns.max(latest.record.time_ns + 1),
            parent: Some(latest.id),
            sources: latest.record.sources.clone(),
            root,
            archive,
            summary: Summary {
                files: s.files,
                dirs: s.dirs,
                symlinks: s.symlinks,
                bytes: s.bytes,
                unchanged: s.files,
                specials: s.specials,
                ..Summary::default()
            },
            owners: latest.record.owners.clone(),
        },
    )?;
    let id = done.id;
    tracing::info!(
        "RETENTION snapshot {}: {} of snapshot {} with {removed} archived entries removed",
        id.short(),
        "the files",
        latest.id.short()
    );
    let up = done.tree;
    Ok(Trim {
        removed,
        snapshot: Some(id),
        tree_failures: up.failures,
    })
}

/// A new snapshot made from whole listings rather than a walk of the
/// sources: the previous snapshot's listing, the planner's answer for the
/// new one, and how log lines name paths.
pub(crate) struct ListingRun<'a> {
    pub old: (&'a [Entry], &'a [(Vec<u8>, History)]),
    /// Tree ids the previous snapshot has (stored already).
    pub known: &'a HashSet<TreeId>,
    pub plan: &'a plan::Plan,
    pub layout: &'a Layout,
}

/// What [`record_listing`] recorded.
pub(crate) struct Recorded {
    pub id: SnapshotId,
    pub record: SnapshotRecord,
    /// The browsable tree's update (entries it could not place).
    pub tree: TreeUpdate,
}

/// Record a planned listing as the next snapshot, in the order of every
/// run (docs/DESIGN.md "Writing a backup"): trees, the batch's commit
/// (with whatever content it queued), the record `make` builds from the
/// two root ids (the commit point), the audit lines, the browsable tree
/// (a failure there leaves it incomplete and says so; the snapshot
/// stands), then the stat cache moved to the new snapshot so the next
/// backup still trusts the files that did not change. Used by per-file
/// retention and by `backup --stdin`.
pub(crate) fn record_listing(
    repo: &LocalRepo,
    batch: &Batch<'_>,
    latest: Option<&Snapshot>,
    run: ListingRun<'_>,
    make: impl FnOnce(TreeId, TreeId) -> SnapshotRecord,
) -> Result<Recorded> {
    let ListingRun {
        old,
        known,
        plan,
        layout,
    } = run;
    let root = tree::write_tree(repo.algo(), &plan.entries, batch, known)?;
    let arch = tree::write_tree(repo.algo(), &plan.archive, batch, known)?;
    batch.commit()?;
    let record = make(root, arch);
    let id = snapshot::write(batch, &record)?;
    crate::audit::log_plan(plan, &Escapes::for_entries(old.0), layout, false);
    let m = Materializer::new(repo, &repo.root);
    if let Err(e) = TreeDiff::between(old, (&plan.entries, &plan.archive)).apply(&m, &plan.entries)
    {
        m.record_error(b"", e);
    }
    let tree = crate::browsable::update::finish_tree_update(repo, &m, &id)?;
    let records = cache::load(repo, latest.map(|l| &l.id), old.0);
    if !records.is_empty() {
        cache::save(
            repo,
            Some(id),
            &plan.entries,
            cache::carry(old.0, records, &plan.entries),
        )?;
    }
    Ok(Recorded { id, record, tree })
}

/// Open the repository for a prune: a dry run only reads, so it opens as
/// a reader does (also on read-only media); a real one as a writer.
pub fn open(root: &Path, dry_run: bool) -> Result<LocalRepo> {
    if dry_run {
        LocalRepo::open(root)
    } else {
        LocalRepo::open_writable(root)
    }
}

/// The lock [`run`] needs: shared for a dry run (it writes nothing, so
/// readers may run beside it), exclusive otherwise.
pub fn lock_mode(dry_run: bool) -> LockMode {
    if dry_run {
        LockMode::Shared
    } else {
        LockMode::Exclusive
    }
}

/// `trove stats`: the repository's figures (`gc::stats`) with what prune
/// under `o` would reclaim, from a dry run of it (forced, whatever
/// `o.dry_run` says). A repository prune refuses (damaged) cannot be
/// collected: nothing is reclaimable then. The caller holds a shared lock.
pub fn stats(repo: &LocalRepo, o: &PruneOptions) -> Result<gc::RepoStats> {
    let mut st = gc::stats(repo)?;
    let dry = PruneOptions {
        dry_run: true,
        ..o.clone()
    };
    if let Ok(p) = run(repo, &dry) {
        st.reclaimable_objects = p.gc.objects_removed;
        st.reclaimable_bytes = p.gc.bytes_freed();
        st.reclaimable_snapshots = p.gc.forgotten.len() as u64;
    }
    Ok(st)
}

/// Run retention and garbage collection. The caller holds the lock
/// [`lock_mode`] names (exclusive; shared for a dry run).
///
/// Every check comes before the first change: a damaged record, or a tree
/// the retention or the collection would read, stops the run with nothing
/// written (no retention snapshot, no `versions/` entry removed).
pub fn run(repo: &LocalRepo, o: &PruneOptions) -> Result<PruneReport> {
    let mut report = PruneReport {
        dry_run: o.dry_run,
        ..PruneReport::default()
    };
    let scan = snapshot::scan(repo)?;
    scan.check_intact("prune")?;
    let latest = scan.latest()?.cloned();
    let trim_plan = match &latest {
        Some(l) => plan_retention(repo, l, o)?,
        None => None,
    };
    // The collection reads every snapshot's trees: plan it now, while
    // nothing is written. Its answer stands unless a trim is recorded (the
    // trim's content replaces what the latest snapshot pins, as in a dry
    // run), which changes the snapshots it decides over.
    let preview = trim_plan.as_ref().map(|t| t.plan.referenced_objects());
    let tz = jiff::tz::TimeZone::system();
    let first = gc::plan(repo, &o.policy, o.now_ns, &tz, preview.as_ref())?;
    if !o.dry_run {
        repo.begin_write()?;
    }
    let mut trim = Trim::default();
    if let Some(latest) = &latest {
        let mut failures = crate::browsable::apply::Failures::default();
        if !o.dry_run {
            failures = crate::browsable::update::catch_up_browsable(repo, latest)?.failures;
        }
        trim = file_retention(repo, latest, trim_plan, o)?;
        report.retention_removed = trim.removed;
        report.retention_snapshot = trim.snapshot.map(|i| i.short());
        // The trim's update went by differences from a tree that was not
        // whole: its marker must not claim the tree shows the trimmed
        // snapshot, so the next command checks all of it.
        if !failures.is_empty() && trim.snapshot.is_some() {
            repo.clear_marker()?;
        }
        failures.append(std::mem::take(&mut trim.tree_failures));
        report.browsable_incomplete_total = failures.total;
        report.browsable_incomplete = failures
            .first
            .into_iter()
            .map(|(p, msg)| format!("{}: {msg}", crate::pathbytes::display(&p)))
            .collect();
    }
    let gcp = if trim.snapshot.is_some() {
        gc::plan(repo, &o.policy, o.now_ns, &tz, None)?
    } else {
        first
    };
    if !o.dry_run {
        gc::execute(&repo.writer(), &gcp)?;
    }
    report.gc = gcp.report;
    report.gc.dry_run = o.dry_run;
    Ok(report)
}
