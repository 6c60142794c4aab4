//! Forgetting snapshots and garbage collection (SPEC §7).
//!
//! What keeps content alive (the *pinned* snapshots): the latest snapshot
//! (its files, and the versions and deleted contents its archive keeps) and,
//! when a `keep_*` policy is set, every snapshot the policy keeps. Records of
//! other snapshots stay (they are the audit trail, and their trees are
//! small) unless the policy forgets them; their trees stay with them.
//!
//! Mark: walk the pinned snapshots' trees, collecting objects; walk the
//! remaining snapshots' trees, collecting trees. Sweep: every stored object
//! or tree not marked, and every leftover in `tmp/`.
//!
//! Crash safety (the caller holds the exclusive lock, so no backup or
//! reader runs meanwhile):
//! 1. every remaining snapshot that references an object about to go gets
//!    an `expired/<id>` marker, durably, before anything is deleted, so that
//!    `verify` knows its missing content was removed on purpose;
//! 2. forgotten records are removed and the directory synced, so no record
//!    refers to the trees about to go;
//! 3. only then are objects and trees deleted.
//!
//! A crash between any two steps leaves a repository in which every record
//! that remains can be verified and restored as far as retention allows;
//! the next prune finishes the sweep.

use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::id::{ObjectId, SnapshotId, TreeId};
use crate::retention::{self, Decision, Policy};
use crate::store::objects;
use crate::store::snapshot::{self, Snapshot};
use crate::store::tree::{self, History, Leaf, Meta, MAX_DEPTH};
use crate::store::{Repo, StoreKind};
use rayon::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::PathBuf;

const EXPIRED_DIR: &str = "expired";

fn expired_dir(repo: &Repo) -> PathBuf {
    repo.dir.join(EXPIRED_DIR)
}

/// Snapshots some of whose content retention removed.
pub fn expired(repo: &Repo) -> HashSet<SnapshotId> {
    let Ok(rd) = fs::read_dir(expired_dir(repo)) else {
        return HashSet::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(SnapshotId::from_hex))
        .collect()
}

/// Leaves and what they reference in the object store.
trait Refs {
    fn each(&self, f: &mut dyn FnMut(ObjectId));
}

impl Refs for Leaf {
    fn each(&self, f: &mut dyn FnMut(ObjectId)) {
        if let Leaf::File { id, .. } = self {
            f(*id);
        }
    }
}

impl Refs for History {
    fn each(&self, f: &mut dyn FnMut(ObjectId)) {
        for (_, a) in &self.versions {
            f(a.id);
        }
        if let Some(a) = &self.deleted {
            f(a.id);
        }
    }
}

/// The marking walk. Any unreadable tree aborts the collection: deleting
/// while part of the graph is unknown could delete live content.
struct Mark<'r> {
    repo: &'r Repo,
    trees: HashSet<TreeId>,
    objects: HashSet<ObjectId>,
}

impl Mark<'_> {
    fn walk<L: tree::TreeLeaf + Refs, D: DeserializeOwned>(
        &mut self,
        id: &TreeId,
        depth: usize,
        collect_objects: bool,
    ) -> Result<()> {
        if depth > MAX_DEPTH || !self.trees.insert(*id) {
            return Ok(());
        }
        let t = tree::load_tree::<L, D>(self.repo, id).map_err(refuse)?;
        for n in &t.entries {
            if collect_objects {
                if let Some(l) = &n.leaf {
                    l.each(&mut |o| {
                        self.objects.insert(o);
                    });
                }
            }
            if let Some((child, _)) = &n.dir {
                self.walk::<L, D>(child, depth + 1, collect_objects)?;
            }
        }
        Ok(())
    }

    fn snapshot(&mut self, s: &Snapshot, collect_objects: bool) -> Result<()> {
        self.walk::<Leaf, Meta>(&s.record.root, 0, collect_objects)?;
        self.walk::<History, ()>(&s.record.archive, 0, collect_objects)
    }
}

fn refuse(e: Error) -> Error {
    Error::Usage(format!(
        "cannot collect garbage safely: {e}. Nothing was deleted; run `trove verify` and repair the repository first"
    ))
}

/// Does any tree below `id` reference one of `dead`? Memoised per tree.
fn uses_dead<L: tree::TreeLeaf + Refs, D: DeserializeOwned>(
    repo: &Repo,
    id: &TreeId,
    dead: &HashSet<ObjectId>,
    memo: &mut HashMap<TreeId, bool>,
    depth: usize,
) -> Result<bool> {
    if let Some(&b) = memo.get(id) {
        return Ok(b);
    }
    let mut found = false;
    if depth <= MAX_DEPTH {
        let t = tree::load_tree::<L, D>(repo, id).map_err(refuse)?;
        for n in &t.entries {
            if let Some(l) = &n.leaf {
                l.each(&mut |o| found |= dead.contains(&o));
            }
            if !found {
                if let Some((child, _)) = &n.dir {
                    found = uses_dead::<L, D>(repo, child, dead, memo, depth + 1)?;
                }
            }
            if found {
                break;
            }
        }
    }
    memo.insert(*id, found);
    Ok(found)
}

/// One snapshot and what the policy said about it.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotFate {
    pub id: String,
    pub time: String,
    pub reasons: Vec<&'static str>,
}

/// What a collection removes (or, in a dry run, would remove).
#[derive(Clone, Debug, Default, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub policy_set: bool,
    pub kept: Vec<SnapshotFate>,
    pub forgotten: Vec<SnapshotFate>,
    /// Remaining snapshots that now miss some content (restorable in part).
    pub expired: Vec<String>,
    pub objects_removed: u64,
    pub object_bytes_removed: u64,
    pub trees_removed: u64,
    pub tree_bytes_removed: u64,
    pub tmp_removed: u64,
    /// Objects that stay.
    pub objects_left: u64,
    /// Every object removed (or that would be), by hash, with its size.
    pub objects: Vec<RemovedObject>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RemovedObject {
    pub id: String,
    pub size: u64,
}

impl GcReport {
    pub fn bytes_freed(&self) -> u64 {
        self.object_bytes_removed + self.tree_bytes_removed
    }
}

/// A collection decided but not carried out.
pub struct GcPlan {
    pub report: GcReport,
    forgotten: Vec<Snapshot>,
    expire: Vec<SnapshotId>,
    dead_objects: Vec<(ObjectId, u64)>,
    dead_trees: Vec<TreeId>,
    tmp: Vec<PathBuf>,
}

/// Decide what goes. Reads the repository, changes nothing.
pub fn plan(repo: &Repo, policy: &Policy, now_ns: i64, tz: &jiff::tz::TimeZone) -> Result<GcPlan> {
    let (snaps, bad) = snapshot::list(repo)?;
    if let Some(e) = bad.into_iter().next() {
        return Err(refuse(e));
    }
    let times: Vec<(SnapshotId, i64)> = snaps.iter().map(|s| (s.id, s.record.time_ns)).collect();
    let decisions: Vec<Decision> = retention::apply(&times, policy, now_ns, tz);
    let by_id: HashMap<SnapshotId, &Decision> = decisions.iter().map(|d| (d.id, d)).collect();
    let mut report = GcReport {
        policy_set: policy.is_set(),
        ..GcReport::default()
    };
    let (mut remaining, mut forgotten) = (Vec::new(), Vec::new());
    for s in snaps {
        let d = by_id.get(&s.id);
        let fate = SnapshotFate {
            id: s.id.short(),
            time: snapshot::format_time(s.record.time_ns),
            reasons: d.map(|d| d.reasons.clone()).unwrap_or_default(),
        };
        if d.is_some_and(|d| d.keep) {
            report.kept.push(fate);
            remaining.push(s);
        } else {
            report.forgotten.push(fate);
            forgotten.push(s);
        }
    }
    // Pinned: the latest always; with a policy, everything it keeps.
    let latest_id = remaining.last().map(|s| s.id);
    let pinned = |s: &Snapshot| policy.is_set() || Some(s.id) == latest_id;
    let mut mark = Mark {
        repo,
        trees: HashSet::new(),
        objects: HashSet::new(),
    };
    // Pinned snapshots first: a tree shared with an unpinned one is then
    // already walked with its objects collected.
    for s in remaining.iter().filter(|s| pinned(s)) {
        mark.snapshot(s, true)?;
    }
    for s in remaining.iter().filter(|s| !pinned(s)) {
        mark.snapshot(s, false)?;
    }
    let mut dead: HashSet<ObjectId> = HashSet::new();
    for d in objects::list_store(repo, StoreKind::Object)? {
        let id = ObjectId(d);
        if mark.objects.contains(&id) {
            report.objects_left += 1;
        } else {
            dead.insert(id);
        }
    }
    let mut dead_objects: Vec<(ObjectId, u64)> = dead
        .par_iter()
        .map(|id| {
            let size = fs::metadata(repo.object_path(id))
                .map(|m| m.len())
                .unwrap_or(0);
            (*id, size)
        })
        .collect();
    dead_objects.sort_unstable();
    report.objects_removed = dead_objects.len() as u64;
    report.object_bytes_removed = dead_objects.iter().map(|(_, s)| s).sum();
    report.objects = dead_objects
        .iter()
        .map(|(id, size)| RemovedObject {
            id: id.to_hex(),
            size: *size,
        })
        .collect();
    let dead_trees: Vec<TreeId> = objects::list_store(repo, StoreKind::Tree)?
        .into_iter()
        .map(TreeId)
        .filter(|t| !mark.trees.contains(t))
        .collect();
    report.trees_removed = dead_trees.len() as u64;
    report.tree_bytes_removed = dead_trees
        .iter()
        .map(|t| {
            fs::metadata(repo.tree_path(t))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum();
    drop(mark);
    // Remaining, unpinned snapshots that lose content become "expired".
    let mut expire = Vec::new();
    if !dead.is_empty() {
        let already = expired(repo);
        let mut msrc = HashMap::new();
        for s in remaining.iter().filter(|s| !pinned(s)) {
            if already.contains(&s.id) {
                continue;
            }
            // Only the files matter: a restore recreates those, and an
            // older snapshot's archive is never required (see verify).
            if uses_dead::<Leaf, Meta>(repo, &s.record.root, &dead, &mut msrc, 0)? {
                report.expired.push(s.id.short());
                expire.push(s.id);
            }
        }
    }
    let mut tmp: Vec<PathBuf> = match fs::read_dir(repo.tmp_dir()) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    };
    tmp.sort();
    report.tmp_removed = tmp.len() as u64;
    Ok(GcPlan {
        report,
        forgotten,
        expire,
        dead_objects,
        dead_trees,
        tmp,
    })
}

fn remove_if_present(p: &std::path::Path, what: &'static str) -> Result<bool> {
    match fs::remove_file(p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(what, p, e)),
    }
}

/// Carry out a plan (the caller holds the exclusive lock, taken before
/// [`plan`]). Every removal is logged.
pub fn execute(repo: &Repo, plan: &GcPlan) -> Result<()> {
    // 1. Expired markers, durable before any content goes.
    if !plan.expire.is_empty() {
        let dir = expired_dir(repo);
        fsutil::create_private_dir(&dir)?;
        for id in &plan.expire {
            let p = dir.join(id.to_hex());
            fs::write(&p, b"").ctx("write", &p)?;
            tracing::info!(
                "EXPIRED snapshot {}: content retention removes is no longer restorable from it",
                id.short()
            );
        }
        fsutil::fsync_dir(&dir)?;
    }
    // 2. Forget records, durably, before their trees go.
    for s in &plan.forgotten {
        remove_if_present(
            &repo.snapshots_dir().join(s.id.to_hex()),
            "remove snapshot record",
        )?;
        remove_if_present(&expired_dir(repo).join(s.id.to_hex()), "remove marker")?;
        tracing::info!(
            "FORGET snapshot {} ({}): outside the keep policy",
            s.id.short(),
            snapshot::format_time(s.record.time_ns)
        );
    }
    if !plan.forgotten.is_empty() {
        fsutil::fsync_dir(&repo.snapshots_dir())?;
    }
    // 3. Content and trees no record needs any more.
    let failures: Vec<Error> = plan
        .dead_objects
        .par_iter()
        .filter_map(
            |(id, size)| match remove_if_present(&repo.object_path(id), "remove object") {
                Ok(true) => {
                    tracing::info!("GC delete object {} ({size} bytes)", id.to_hex());
                    None
                }
                Ok(false) => None,
                Err(e) => Some(e),
            },
        )
        .collect();
    if let Some(e) = failures.into_iter().next() {
        return Err(e);
    }
    for t in &plan.dead_trees {
        if remove_if_present(&repo.tree_path(t), "remove tree")? {
            tracing::debug!("GC delete tree {}", t.to_hex());
        }
    }
    for p in &plan.tmp {
        fsutil::remove_any(p)?;
    }
    Ok(())
}

/// What `trove stats` reports.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepoStats {
    pub snapshots: u64,
    /// Snapshots some of whose content retention removed.
    pub expired_snapshots: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest: Option<LatestStats>,
    /// Earlier versions kept in `versions/`, and their bytes.
    pub versions: u64,
    pub version_bytes: u64,
    /// Entries in `_deleted/`, and their bytes.
    pub deleted: u64,
    pub deleted_bytes: u64,
    /// Everything the browsable tree shows (latest files, versions,
    /// deleted), counted once per path.
    pub logical_bytes: u64,
    /// What the store holds: distinct contents and tree objects.
    pub objects: u64,
    pub stored_bytes: u64,
    pub trees: u64,
    pub tree_bytes: u64,
    /// logical_bytes / stored_bytes (1.0 when nothing is stored).
    pub dedup_ratio: f64,
    /// What `trove prune` with the current settings would remove.
    pub reclaimable_objects: u64,
    pub reclaimable_bytes: u64,
    pub reclaimable_snapshots: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct LatestStats {
    pub id: String,
    pub time: String,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

pub fn stats(repo: &Repo, policy: &Policy, now_ns: i64) -> Result<RepoStats> {
    let (snaps, _) = snapshot::list(repo)?;
    let mut st = RepoStats {
        snapshots: snaps.len() as u64,
        ..RepoStats::default()
    };
    let exp = expired(repo);
    st.expired_snapshots = snaps.iter().filter(|s| exp.contains(&s.id)).count() as u64;
    if let Some(l) = snaps.last() {
        let r = &l.record;
        st.latest = Some(LatestStats {
            id: l.id.short(),
            time: snapshot::format_time(r.time_ns),
            files: r.summary.files,
            dirs: r.summary.dirs,
            symlinks: r.summary.symlinks,
            bytes: r.summary.bytes,
        });
        let (_, archive) = crate::backup::load_snapshot(repo, r)?;
        for (_, h) in &archive {
            st.versions += h.versions.len() as u64;
            st.version_bytes += h.versions.iter().map(|(_, a)| a.size).sum::<u64>();
            if let Some(d) = &h.deleted {
                st.deleted += 1;
                st.deleted_bytes += d.size;
            }
        }
        st.logical_bytes = r.summary.bytes + st.version_bytes + st.deleted_bytes;
    }
    let sizes = |kind: StoreKind| -> Result<(u64, u64)> {
        let ids = objects::list_store(repo, kind)?;
        let bytes: u64 = ids
            .par_iter()
            .map(|d| {
                fs::metadata(repo.digest_path(kind, d))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum();
        Ok((ids.len() as u64, bytes))
    };
    (st.objects, st.stored_bytes) = sizes(StoreKind::Object)?;
    (st.trees, st.tree_bytes) = sizes(StoreKind::Tree)?;
    st.dedup_ratio = if st.stored_bytes == 0 {
        1.0
    } else {
        st.logical_bytes as f64 / st.stored_bytes as f64
    };
    // A damaged repository cannot be collected: report nothing reclaimable
    // rather than fail the statistics.
    if let Ok(p) = plan(repo, policy, now_ns, &jiff::tz::TimeZone::system()) {
        st.reclaimable_objects = p.report.objects_removed;
        st.reclaimable_bytes = p.report.bytes_freed();
        st.reclaimable_snapshots = p.report.forgotten.len() as u64;
    }
    Ok(st)
}
