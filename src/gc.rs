//! Forgetting snapshots and garbage collection (SPEC §7).
//!
//! What keeps content alive (the *pinned* snapshots): the latest snapshot
//! (its files, and the versions and deleted contents its archive keeps) and,
//! when a `keep_*` policy is set, every snapshot the policy keeps. Records of
//! other snapshots stay (they are the audit trail, and their trees are
//! small) unless the policy forgets them; their trees stay with them, but
//! their content is only kept while something pinned shares it.
//!
//! `pinned` (a list of snapshot ids, written only when a policy is set)
//! tells readers which snapshots besides the latest must be complete:
//! `verify` treats content that only unpinned snapshots reference as
//! removable, and `restore` names what is gone.
//!
//! Full collection (`trove prune`, and a backup when a policy is set): mark
//! from the pinned snapshots (objects) and from every remaining record
//! (trees); sweep every stored object or tree not marked and every leftover
//! in `tmp/`. Crash safety (the caller holds the exclusive lock, so no
//! backup or reader runs meanwhile):
//! 1. `pinned` is rewritten (atomically) before anything is deleted, so it
//!    never names a snapshot whose content is gone;
//! 2. forgotten records are removed and the directory synced, so no record
//!    refers to the trees about to go;
//! 3. only then are objects and trees deleted.
//!
//! Incremental collection (a backup without a policy): the only content
//! that can leave the live set in a run is what per-file retention
//! dropped from the archive, so only those objects are candidates, and one
//! goes when nothing that keeps content alive references it.
//!
//! What keeps content alive is one rule, [`keeps_content`], that both
//! collections apply: the latest snapshot and every pinned one. They
//! differ only in where the pinned set comes from. A full collection
//! decides it from the current policy and records it in `pinned` before
//! it deletes anything; an incremental one takes the recorded set as it
//! is, so only a full collection (`prune`, or a backup with a policy)
//! ever releases a pin. Removing a keep rule from the config therefore
//! releases nothing until `trove prune` runs with the new settings (before,
//! the next backup deleted content `pinned` still named, and `verify`
//! reported it missing for ever). When the recorded set cannot be read,
//! the incremental collection deletes nothing.

use crate::error::{Error, Result};
use crate::id::{Digest, IdMap, IdSet, ObjectId, SnapshotId, TreeId};
use crate::model::{History, Leaf, Meta};
use crate::repo::snapshot::{self, Snapshot, SnapshotRecord};
use crate::repo::tree::{self, Flat, FlatCursor, MAX_DEPTH};
use crate::repo::{RepoRead, RepoWrite, StoreKind};
use crate::retention::{self, Decision, Policy};
use rayon::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::PathBuf;

/// Snapshots besides the latest whose content must stay complete (those a
/// keep policy retains). Empty without a policy.
pub fn pinned(repo: &dyn RepoRead) -> HashSet<SnapshotId> {
    let Ok(text) = repo.read_pins() else {
        return HashSet::new();
    };
    let text = String::from_utf8_lossy(&text);
    text.lines()
        .filter_map(|l| SnapshotId::from_hex(l.trim()))
        .collect()
}

/// The recorded pinned set, strictly: a missing file is the empty set, but
/// an unreadable file or a line that is not a snapshot id is an error (a
/// collection must not guess what is pinned).
pub fn read_pinned(repo: &dyn RepoRead) -> Result<HashSet<SnapshotId>> {
    let path = repo.locate_pins();
    let text = match repo.read_pins() {
        Ok(t) => {
            String::from_utf8(t).map_err(|_| Error::corrupt("pinned list", &path, "not text"))?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(Error::io("read the pinned list", &path, e)),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            SnapshotId::from_hex(l.trim()).ok_or_else(|| {
                Error::corrupt("pinned list", &path, format!("{l:?} is not a snapshot id"))
            })
        })
        .collect()
}

/// What keeps content alive (SPEC §7), the one rule of every collection
/// and of `verify`: the latest snapshot (its files, and the versions and
/// deleted contents its archive keeps, which is all the browsable tree
/// shows) and every pinned snapshot.
pub fn keeps_content(
    id: &SnapshotId,
    latest: Option<&SnapshotId>,
    pins: &HashSet<SnapshotId>,
) -> bool {
    Some(id) == latest || pins.contains(id)
}

fn write_pinned(repo: &dyn RepoWrite, ids: &[SnapshotId]) -> Result<()> {
    if ids.is_empty() {
        return repo.write_pins(None);
    }
    let mut text = String::new();
    for id in ids {
        text.push_str(&id.to_hex());
        text.push('\n');
    }
    repo.write_pins(Some(text.as_bytes()))
}

/// The stored objects, for a local collection's mark and sweep, at 16
/// bytes an object instead of a hash set's ~40: the first 128 bits of
/// every stored id, sorted, found through a table of where each leading
/// 16-bit value starts, and a mark bit each. At 3,000,000 objects that is
/// 48 MiB where the id sets it replaced took over 250.
///
/// Two ids sharing their first 128 bits (a collision of the hash cut to
/// 128 bits: about n²/2¹²⁹, 10⁻²⁵ at 10⁷ objects) would count as one:
/// marking either keeps both, the safe side for the sweep.
struct Stored {
    keys: Vec<u128>,
    /// `starts[b]..starts[b + 1]`: the keys whose first 16 bits are `b`.
    starts: Vec<usize>,
    marked: Vec<u64>,
}

impl Stored {
    fn key(d: &Digest) -> u128 {
        let mut k = [0u8; 16];
        k.copy_from_slice(&d.0[..16]);
        u128::from_be_bytes(k)
    }

    /// The repository's stored objects, listed once.
    fn list(repo: &dyn RepoRead) -> Result<Stored> {
        let mut keys = Vec::new();
        repo.list(StoreKind::Object, &mut |d| keys.push(Stored::key(&d)))?;
        keys.sort_unstable();
        keys.dedup();
        keys.shrink_to_fit();
        let mut starts = vec![0usize; (1 << 16) + 1];
        for k in &keys {
            starts[(k >> 112) as usize + 1] += 1;
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
        let marked = vec![0u64; keys.len().div_ceil(64)];
        Ok(Stored {
            keys,
            starts,
            marked,
        })
    }

    fn find(&self, d: &Digest) -> Option<usize> {
        let k = Stored::key(d);
        let b = (k >> 112) as usize;
        let (lo, hi) = (self.starts[b], self.starts[b + 1]);
        self.keys[lo..hi].binary_search(&k).ok().map(|i| lo + i)
    }

    /// Mark `d` referenced; whether it is stored.
    fn mark(&mut self, d: &Digest) -> bool {
        match self.find(d) {
            Some(i) => {
                self.marked[i / 64] |= 1 << (i % 64);
                true
            }
            None => false,
        }
    }

    fn is_marked(&self, i: usize) -> bool {
        self.marked[i / 64] & (1 << (i % 64)) != 0
    }
}

/// Where the mark notes the objects it reaches.
enum Objects<'r> {
    /// Every id, in a set (what a remote prune keeps: [`referenced`]).
    Collect(IdSet<ObjectId>),
    /// A mark bit on each stored object (a local collection).
    Stored(&'r mut Stored),
}

impl Objects<'_> {
    /// Note `o` referenced; whether it is known to be stored.
    fn note(&mut self, o: ObjectId) -> bool {
        match self {
            Objects::Collect(set) => {
                set.insert(o);
                false
            }
            Objects::Stored(st) => st.mark(&o.0),
        }
    }
}

/// The marking walk. Any unreadable tree aborts the collection: deleting
/// while part of the graph is unknown could delete live content.
struct Mark<'r> {
    repo: &'r dyn RepoRead,
    /// Every tree reached, and (for trees reached from a pinned snapshot)
    /// whether all content below it is in the store.
    trees: IdMap<TreeId, bool>,
    objects: Objects<'r>,
}

impl Mark<'_> {
    fn load<L: tree::TreeLeaf, D: DeserializeOwned>(
        &self,
        id: &TreeId,
    ) -> Result<tree::TreeObject<L, D>> {
        tree::load_tree::<L, D>(self.repo, id).map_err(refuse)
    }

    /// Walk a loaded tree; returns whether everything below is stored.
    /// The children of each directory are read in parallel: reading and
    /// decoding trees is most of a collection's time.
    fn walk<L: tree::TreeLeaf + Send, D: DeserializeOwned + Send>(
        &mut self,
        id: TreeId,
        t: tree::TreeObject<L, D>,
        depth: usize,
        collect_objects: bool,
    ) -> Result<bool> {
        self.trees.insert(id, true);
        let mut complete = true;
        let mut children: Vec<TreeId> = Vec::new();
        for n in &t.entries {
            if collect_objects {
                if let Some(l) = &n.leaf {
                    let objects = &mut self.objects;
                    l.object_refs(&mut |o, _, _| complete &= objects.note(o));
                }
            }
            if let Some((child, _)) = &n.dir {
                match self.trees.get(child) {
                    Some(&c) => complete &= c,
                    None => children.push(*child),
                }
            }
        }
        drop(t);
        children.sort_unstable();
        children.dedup();
        if depth < MAX_DEPTH && !children.is_empty() {
            let loaded: Vec<Result<tree::TreeObject<L, D>>> =
                children.par_iter().map(|c| self.load::<L, D>(c)).collect();
            for (c, t) in children.into_iter().zip(loaded) {
                complete &= self.walk::<L, D>(c, t?, depth + 1, collect_objects)?;
            }
        }
        self.trees.insert(id, complete);
        Ok(complete)
    }

    fn root<L: tree::TreeLeaf + Send, D: DeserializeOwned + Send>(
        &mut self,
        id: &TreeId,
        collect_objects: bool,
    ) -> Result<bool> {
        if let Some(&c) = self.trees.get(id) {
            return Ok(c);
        }
        let t = self.load::<L, D>(id)?;
        self.walk::<L, D>(*id, t, 0, collect_objects)
    }

    /// Mark one snapshot; returns whether all its content is stored.
    fn snapshot(&mut self, s: &Snapshot, collect_objects: bool) -> Result<bool> {
        let a = self.root::<Leaf, Meta>(&s.record.root, collect_objects)?;
        let b = self.root::<History, ()>(&s.record.archive, collect_objects)?;
        Ok(a && b)
    }
}

/// Every tree and object the snapshots `snaps` reference: their roots,
/// archives and everything below (what a remote prune keeps). Any tree it
/// cannot read stops it, as in a collection.
pub fn referenced(
    repo: &dyn RepoRead,
    snaps: &[&Snapshot],
) -> Result<(IdSet<TreeId>, IdSet<ObjectId>)> {
    let mut mark = Mark {
        repo,
        trees: IdMap::default(),
        objects: Objects::Collect(IdSet::default()),
    };
    for s in snaps {
        mark.snapshot(s, true)?;
    }
    let objects = match mark.objects {
        Objects::Collect(set) => set,
        Objects::Stored(_) => IdSet::default(),
    };
    Ok((mark.trees.into_keys().collect(), objects))
}

/// A collection stops at the first thing it cannot read: deleting while
/// part of the graph is unknown could delete live content. A damaged
/// repository is a problem found (exit 1), not a usage error.
fn refuse(e: Error) -> Error {
    Error::Unsafe {
        action: "collect garbage",
        source: Box::new(e),
    }
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
    /// Snapshots the policy keeps (all pinned), when one is set.
    pinned: Vec<SnapshotId>,
    dead_objects: Vec<(ObjectId, u64)>,
    dead_trees: Vec<TreeId>,
    tmp: Vec<PathBuf>,
}

/// Decide what goes. Reads the repository, changes nothing.
/// `latest_objects`, when given, replaces what the latest snapshot pins
/// (a dry run of `prune` passes the content the latest snapshot keeps once
/// per-file retention has trimmed its archive, which is not written).
pub fn plan(
    repo: &dyn RepoRead,
    policy: &Policy,
    now_ns: i64,
    tz: &jiff::tz::TimeZone,
    latest_objects: Option<&HashSet<ObjectId>>,
) -> Result<GcPlan> {
    let scan = snapshot::scan(repo)?;
    scan.check_intact("collect garbage")?;
    let snaps = scan.snapshots;
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
    // The pinned set this collection decides (and records before deleting):
    // with a policy, everything it keeps; without one, nothing besides the
    // latest (prune is the explicit step that releases an old policy's pins).
    let latest_id = remaining.last().map(|s| s.id);
    let pins: HashSet<SnapshotId> = if policy.is_set() {
        remaining.iter().map(|s| s.id).collect()
    } else {
        HashSet::new()
    };
    let pinned = |s: &Snapshot| keeps_content(&s.id, latest_id.as_ref(), &pins);
    let mut stored = Stored::list(repo)?;
    let mut mark = Mark {
        repo,
        trees: IdMap::default(),
        objects: Objects::Stored(&mut stored),
    };
    // Pinned snapshots first: a tree shared with an unpinned one is then
    // already walked with its objects collected. A kept snapshot whose
    // content is already incomplete (collected before a policy kept it)
    // keeps what it has but is not listed as pinned: readers would expect
    // it complete.
    let mut complete_pins = Vec::new();
    for s in remaining.iter().filter(|s| pinned(s)) {
        let overridden = Some(s.id) == latest_id && latest_objects.is_some();
        if overridden {
            continue;
        }
        if mark.snapshot(s, true)? {
            complete_pins.push(s.id);
        }
    }
    if let (Some(objs), Some(latest)) = (latest_objects, remaining.last()) {
        for o in objs {
            mark.objects.note(*o);
        }
        mark.snapshot(latest, false)?;
    }
    for s in remaining.iter().filter(|s| !pinned(s)) {
        mark.snapshot(s, false)?;
    }
    let trees = mark.trees;
    // The sweep lists the store again and looks each id up: the ids are
    // not kept in full. One the first listing did not have was added
    // since (by a backup beside a dry run's shared lock): not judged, so
    // it stays.
    let mut dead: Vec<ObjectId> = Vec::new();
    repo.list(StoreKind::Object, &mut |d| match stored.find(&d) {
        Some(i) if !stored.is_marked(i) => dead.push(ObjectId(d)),
        _ => report.objects_left += 1,
    })?;
    drop(stored);
    let mut dead_objects: Vec<(ObjectId, u64)> = dead
        .par_iter()
        .map(|id| {
            let size = repo.size(StoreKind::Object, &id.0).unwrap_or(0);
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
    let mut dead_trees: Vec<TreeId> = Vec::new();
    repo.list(StoreKind::Tree, &mut |d| {
        if !trees.contains_key(&TreeId(d)) {
            dead_trees.push(TreeId(d));
        }
    })?;
    dead_trees.sort_unstable();
    report.trees_removed = dead_trees.len() as u64;
    report.tree_bytes_removed = dead_trees
        .par_iter()
        .map(|t| repo.size(StoreKind::Tree, &t.0).unwrap_or(0))
        .sum();
    drop(trees);
    let tmp = repo.leftovers();
    report.tmp_removed = tmp.len() as u64;
    let pinned_ids = if policy.is_set() {
        complete_pins
    } else {
        Vec::new()
    };
    Ok(GcPlan {
        report,
        forgotten,
        pinned: pinned_ids,
        dead_objects,
        dead_trees,
        tmp,
    })
}

/// Carry out a plan (the caller holds the exclusive lock, taken before
/// [`plan`]). Every removal is logged.
pub fn execute(repo: &dyn RepoWrite, plan: &GcPlan) -> Result<()> {
    // 1. The pinned list, before any content goes.
    write_pinned(repo, &plan.pinned)?;
    // 2. Forget records, durably, before their trees go.
    for s in &plan.forgotten {
        repo.remove_snapshot(&s.id)?;
        tracing::info!(
            "FORGET snapshot {} ({}): outside the keep policy",
            s.id.short(),
            snapshot::format_time(s.record.time_ns)
        );
    }
    if !plan.forgotten.is_empty() {
        repo.sync_snapshots()?;
    }
    // 3. Content and trees no record needs any more.
    let failures: Vec<Error> = plan
        .dead_objects
        .par_iter()
        .filter_map(|(id, size)| match repo.remove(StoreKind::Object, &id.0) {
            Ok(true) => {
                tracing::info!("GC delete object {} ({size} bytes)", id.to_hex());
                None
            }
            Ok(false) => None,
            Err(e) => Some(e),
        })
        .collect();
    if let Some(e) = failures.into_iter().next() {
        return Err(e);
    }
    let dead_trees: Vec<crate::id::Digest> = plan.dead_trees.iter().map(|t| t.0).collect();
    repo.remove_all(StoreKind::Tree, &dead_trees)?;
    for p in &plan.tmp {
        repo.remove_leftover(p)?;
    }
    Ok(())
}

/// Which of `candidates` a snapshot references (files, kept versions,
/// deleted contents), streaming its trees.
pub(crate) fn referenced_among(
    repo: &dyn RepoRead,
    rec: &SnapshotRecord,
    candidates: &[ObjectId],
) -> Result<HashSet<ObjectId>> {
    let mut sorted = candidates.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut live = HashSet::new();
    let mut note = |id: &ObjectId| {
        if sorted.binary_search(id).is_ok() {
            live.insert(*id);
        }
    };
    let mut c = FlatCursor::<Leaf, Meta>::new(repo, &rec.root, None, rec.source_limit())?;
    while let Some((_, f)) = c.next()? {
        if let Flat::Leaf(Leaf::File { id, .. }) = f {
            note(&id);
        }
    }
    let mut c = FlatCursor::<History, ()>::new(repo, &rec.archive, None, tree::Limit::archive())?;
    while let Some((_, f)) = c.next()? {
        if let Flat::Leaf(h) = f {
            for (_, a) in &h.versions {
                note(&a.id);
            }
            if let Some(d) = &h.deleted {
                note(&d.id);
            }
        }
    }
    Ok(live)
}

/// Which of `candidates` something that keeps content alive references:
/// the new latest snapshot and every snapshot the recorded `pinned` set
/// names ([`keeps_content`]). A pinned record that is gone pins nothing;
/// one that cannot be read, or a `pinned` that cannot be, is an error, so
/// nothing is deleted on a guess.
pub fn live_among(
    repo: &dyn RepoRead,
    latest: &Snapshot,
    candidates: &[ObjectId],
) -> Result<HashSet<ObjectId>> {
    let mut live = referenced_among(repo, &latest.record, candidates)?;
    let pins = read_pinned(repo)?;
    let mut others: Vec<&SnapshotId> = pins.iter().filter(|id| **id != latest.id).collect();
    others.sort_unstable();
    for id in others {
        if !keeps_content(id, Some(&latest.id), &pins) {
            continue;
        }
        if !repo.has_snapshot(id) {
            continue;
        }
        let rec = snapshot::read(repo, id)?;
        live.extend(referenced_among(repo, &rec, candidates)?);
    }
    Ok(live)
}

/// Incremental collection after a backup without a keep policy:
/// `candidates` (content per-file retention dropped in the run) go unless
/// something that keeps content alive still references them
/// ([`live_among`], given the new latest snapshot). Returns (objects
/// removed, bytes freed). When what is pinned cannot be known, nothing is
/// deleted and the error says so (the candidates wait for `trove prune`).
pub fn collect_dropped(
    repo: &dyn RepoWrite,
    candidates: &[ObjectId],
    latest: &Snapshot,
) -> Result<(u64, u64)> {
    let live =
        live_among(repo.reader(), latest, candidates).map_err(|e| Error::CollectionSkipped {
            pinned: repo.reader().locate_pins(),
            source: Box::new(e),
        })?;
    let mut dead: Vec<ObjectId> = candidates
        .iter()
        .filter(|id| !live.contains(id))
        .copied()
        .collect();
    dead.sort_unstable();
    dead.dedup();
    let (mut n, mut bytes) = (0, 0);
    for id in dead {
        let size = repo.reader().size(StoreKind::Object, &id.0).unwrap_or(0);
        if repo.remove(StoreKind::Object, &id.0)? {
            tracing::info!("GC delete object {} ({size} bytes)", id.to_hex());
            n += 1;
            bytes += size;
        }
    }
    Ok((n, bytes))
}

/// What `trove stats` reports.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepoStats {
    pub snapshots: u64,
    /// Snapshots whose content is kept complete: the latest, and those a
    /// keep policy retains.
    pub pinned_snapshots: u64,
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
    /// What `trove prune` with the current settings would remove (filled
    /// in by `prune::stats`, from a dry run of `prune::run`).
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

pub fn stats(repo: &dyn RepoRead) -> Result<RepoStats> {
    let scan = snapshot::scan(repo)?;
    // The latest is what the figures describe: a damaged record that may
    // be newer makes them unknowable, never silently an older snapshot's.
    scan.latest()?;
    let snaps = scan.snapshots;
    let mut st = RepoStats {
        snapshots: snaps.len() as u64,
        ..RepoStats::default()
    };
    let pin = pinned(repo);
    st.pinned_snapshots = snaps
        .iter()
        .enumerate()
        .filter(|(i, s)| *i + 1 == snaps.len() || pin.contains(&s.id))
        .count() as u64;
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
        // The archive read as a stream: its entries are counted, not kept.
        let mut c = FlatCursor::<History, ()>::new(repo, &r.archive, None, tree::Limit::archive())?;
        while let Some((_, f)) = c.next()? {
            if let Flat::Leaf(h) = f {
                st.versions += h.versions.len() as u64;
                st.version_bytes += h.versions.iter().map(|(_, a)| a.size).sum::<u64>();
                if let Some(d) = &h.deleted {
                    st.deleted += 1;
                    st.deleted_bytes += d.size;
                }
            }
        }
        st.logical_bytes = r.summary.bytes + st.version_bytes + st.deleted_bytes;
    }
    (st.objects, st.stored_bytes) = stored_sizes(repo, StoreKind::Object)?;
    (st.trees, st.tree_bytes) = stored_sizes(repo, StoreKind::Tree)?;
    st.dedup_ratio = if st.stored_bytes == 0 {
        1.0
    } else {
        st.logical_bytes as f64 / st.stored_bytes as f64
    };
    Ok(st)
}

/// How many entries `kind` stores and their bytes, listed as a stream and
/// sized a chunk at a time in parallel (the ids are never all held).
fn stored_sizes(repo: &dyn RepoRead, kind: StoreKind) -> Result<(u64, u64)> {
    const CHUNK: usize = 1 << 16;
    let size_of = |ids: &[Digest]| -> u64 {
        ids.par_iter()
            .map(|d| repo.size(kind, d).unwrap_or(0))
            .sum()
    };
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut chunk = Vec::with_capacity(CHUNK);
    repo.list(kind, &mut |d| {
        chunk.push(d);
        if chunk.len() == CHUNK {
            n += chunk.len() as u64;
            bytes += size_of(&chunk);
            chunk.clear();
        }
    })?;
    n += chunk.len() as u64;
    bytes += size_of(&chunk);
    Ok((n, bytes))
}

/// The full collection at the end of a backup run with a keep policy (the
/// policy may forget a snapshot, and what it keeps pins content).
pub fn full_gc(repo: &dyn RepoWrite, policy: &Policy, now_ns: i64) -> Result<GcReport> {
    let tz = jiff::tz::TimeZone::system();
    let gcp = plan(repo.reader(), policy, now_ns, &tz, None)?;
    execute(repo, &gcp)?;
    Ok(gcp.report)
}

/// Whether the policy would forget a snapshot now (cheap: records only).
pub fn policy_would_forget(repo: &dyn RepoRead, policy: &Policy, now_ns: i64) -> Result<bool> {
    if !policy.is_set() {
        return Ok(false);
    }
    let (snaps, _) = snapshot::list(repo)?;
    let times: Vec<(SnapshotId, i64)> = snaps.iter().map(|s| (s.id, s.record.time_ns)).collect();
    let tz = jiff::tz::TimeZone::system();
    Ok(retention::apply(&times, policy, now_ns, &tz)
        .iter()
        .any(|d| !d.keep))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::HashAlgo;
    use crate::repo::memory::{fixture, MemoryRepo};

    proptest::proptest! {
        /// The stored-object index finds exactly the stored ids (those
        /// sharing a 16-bit bucket and neighbours in it included), and a
        /// mark lands on the id marked and no other.
        #[test]
        fn stored_index_finds_and_marks_exactly_what_is_stored(
            stored in proptest::collection::vec(proptest::array::uniform32(0u8..), 0..200),
            absent in proptest::collection::vec(proptest::array::uniform32(0u8..), 0..50),
            bucket in 0u8..4,
        ) {
            let repo = MemoryRepo::new(HashAlgo::Blake3);
            // Crowd a few buckets: the first two bytes from a tiny range.
            let crowd = |mut d: [u8; 32]| { d[0] = bucket; d[1] %= 3; Digest(d) };
            let stored: Vec<Digest> = stored.into_iter().map(crowd).collect();
            for d in &stored {
                repo.corrupt(StoreKind::Object, d, b"x");
            }
            let mut st = Stored::list(&repo).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            for d in &stored {
                proptest::prop_assert!(st.find(d).is_some());
            }
            for d in absent.into_iter().map(crowd) {
                proptest::prop_assert_eq!(st.find(&d).is_some(), stored.contains(&d));
            }
            if let Some(first) = stored.first() {
                proptest::prop_assert!(st.mark(first));
                for d in &stored {
                    let i = st.find(d).unwrap_or(usize::MAX);
                    proptest::prop_assert_eq!(st.is_marked(i), d.0[..16] == first.0[..16]);
                }
            }
        }
    }

    fn keep_last(n: u32) -> Policy {
        Policy {
            keep_last: Some(n),
            ..Policy::default()
        }
    }

    /// Three snapshots, keep the last one: the records and the content
    /// only the forgotten ones held go, what the latest holds stays, and
    /// the pinned list is written before anything is deleted.
    #[test]
    fn keep_last_forgets_and_collects_only_what_nothing_kept_holds() -> Result<()> {
        let repo = MemoryRepo::new(HashAlgo::Blake3);
        let s1 = fixture::commit(&repo, None, &[("a", b"one"), ("d/b", b"shared")], &[])?;
        let s2 = fixture::commit(&repo, Some(&s1), &[("a", b"two"), ("d/b", b"shared")], &[])?;
        let s3 = fixture::commit(
            &repo,
            Some(&s2),
            &[("a", b"three"), ("d/b", b"shared")],
            &[],
        )?;
        let plan = plan(&repo, &keep_last(1), 0, &jiff::tz::TimeZone::UTC, None)?;
        assert_eq!(plan.report.forgotten.len(), 2);
        assert_eq!(plan.report.objects_removed, 2, "one and two");
        assert_eq!(plan.report.object_bytes_removed, 6);
        assert!(plan.report.trees_removed >= 2, "the forgotten roots");
        execute(&repo, &plan)?;
        assert!(!repo.has_snapshot(&s1.id) && !repo.has_snapshot(&s2.id));
        assert!(repo.has_snapshot(&s3.id));
        let (entries, _) = snapshot::load_snapshot(&repo, &s3.record)?;
        for e in &entries {
            if let Some((id, _)) = e.file_id() {
                assert!(repo.has(StoreKind::Object, &id.0), "latest's content stays");
            }
        }
        assert_eq!(repo.count(StoreKind::Object), 2);
        assert_eq!(read_pinned(&repo)?, HashSet::from([s3.id]));
        Ok(())
    }

    /// A collection stops, deleting nothing, when a tree it must walk is
    /// gone: a damaged repository is refused (exit 1), not guessed at.
    #[test]
    fn a_missing_tree_refuses_the_collection() -> Result<()> {
        let repo = MemoryRepo::new(HashAlgo::Blake3);
        let s1 = fixture::commit(&repo, None, &[("d/a", b"one")], &[])?;
        let s2 = fixture::commit(&repo, Some(&s1), &[("d/a", b"two")], &[])?;
        repo.lose(StoreKind::Tree, &s2.record.root.0);
        let objects = repo.count(StoreKind::Object);
        let err = plan(&repo, &keep_last(1), 0, &jiff::tz::TimeZone::UTC, None)
            .err()
            .ok_or(Error::Usage("the plan went ahead".into()))?;
        assert!(matches!(err, Error::Unsafe { .. }), "{err:?}");
        assert_eq!(repo.count(StoreKind::Object), objects);
        Ok(())
    }

    /// Incremental collection: a dropped version still held by a pinned
    /// snapshot stays; one nothing keeps goes.
    #[test]
    fn dropped_content_goes_unless_something_pinned_holds_it() -> Result<()> {
        let repo = MemoryRepo::new(HashAlgo::Blake3);
        let s1 = fixture::commit(&repo, None, &[("a", b"old")], &[])?;
        let s2 = fixture::commit(&repo, Some(&s1), &[("a", b"new")], &[("a", b"gone")])?;
        let old = crate::id::ObjectId(crate::hash::hash_bytes(HashAlgo::Blake3, b"old"));
        let gone = crate::id::ObjectId(crate::hash::hash_bytes(HashAlgo::Blake3, b"gone"));
        // Pinned: the first snapshot keeps "old".
        repo.write_pins(Some(format!("{}\n", s1.id.to_hex()).as_bytes()))?;
        let (n, bytes) = collect_dropped(&repo, &[old, gone], &s2)?;
        assert_eq!(
            (n, bytes),
            (0, 0),
            "gone is in the latest archive, old is pinned"
        );
        repo.write_pins(None)?;
        let (n, bytes) = collect_dropped(&repo, &[old, gone], &s2)?;
        assert_eq!((n, bytes), (1, 3), "old is no longer held by anything");
        assert!(!repo.has(StoreKind::Object, &old.0));
        assert!(repo.has(StoreKind::Object, &gone.0));
        Ok(())
    }
}
