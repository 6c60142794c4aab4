//! `prune --remote`: the remote's own retention and garbage collection.
//!
//! A remote keeps its own history: the snapshots a policy (flags, else the
//! config's `remote.retention`) does not keep are forgotten (their commits
//! deleted), then packs are classified by the blobs the kept snapshots
//! reach: a pack with none is dropped, packs mostly unused are repacked
//! (their live blobs copied, sealed bytes verbatim, into new packs) until
//! the unused bytes left are at most `max_unused` percent of the used ones.
//!
//! Crash safety and concurrency (docs/DESIGN.md, "Pruning a remote"). A
//! prune holds the remote's exclusive lock ([`super::lock`]); pushes and
//! readers hold none. So nothing is deleted that an index lists or that a
//! push may be relying on:
//! 1. new packs, then new index files, are written first; the index files
//!    they replace are deleted only then;
//! 2. the packs that left the index are not deleted but listed in a
//!    *pending file* with the time; a push does not adopt them;
//! 3. a later prune deletes a pending pack only once the grace period has
//!    passed since then, and only when no index lists it and no kept
//!    snapshot (listed after the grace period) reaches a blob only it
//!    holds — such a pack is indexed again instead;
//! 4. a push checks before its commits that every index file it deduplicated
//!    against still exists, and uploads again what it relied on otherwise
//!    (`push::run`), so a commit never names a blob only a pending pack holds
//!    for longer than that check takes.
//!
//! A prune never touches a pack that neither an index nor a pending file
//! lists: it may be a push's that is still uploading (its index comes at
//! the end of its round, which can take hours), and deleting it would
//! lose what that push's commit will name. Such packs are counted and left
//! to the next push, which indexes them (a killed push's, or the new packs
//! of a prune killed before its index was written); a later prune then
//! treats them like any other.
//!
//! A prune killed at any point leaves a remote every reader can use; the
//! next one finishes the work.

use super::backend::{Listed, RequestStats};
use super::index::{ForgottenFile, Index, IndexFile, IndexPack, PendingFile};
use super::lock::{self, RemoteLock};
use super::pack::{BlobEntry, BlobKind, PackKind, PackWriter, SealedBlob};
use super::repo::{commit_path, pack_path, RemoteRepo};
use crate::error::{Error, Result};
use crate::gc::SnapshotFate;
use crate::id::{ObjectId, SnapshotId};
use crate::progress::Progress;
use crate::repo::snapshot::{self, Snapshot};
use crate::retention::{self, Policy};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// restic's default `--max-unused`.
pub const DEFAULT_MAX_UNUSED: f64 = 5.0;
/// How long packs taken out of the index wait before a prune deletes
/// them: far longer than a push takes between its last index check and
/// its commit, and than most restores.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60 * 60);
/// The most blobs one new index file lists.
const INDEX_BLOBS: usize = 100_000;

#[derive(Clone, Debug)]
pub struct PruneOptions {
    pub policy: Policy,
    /// Unused bytes tolerated, in percent of the used bytes.
    pub max_unused_percent: f64,
    pub grace: Duration,
    pub dry_run: bool,
    /// Remove every lock first (`--unlock`).
    pub unlock: bool,
    pub now_ns: i64,
}

/// Something the prune removes (or, dry, would remove).
#[derive(Clone, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Removal {
    pub path: String,
    /// `forget` (a snapshot commit), `drop` (a pack no kept snapshot
    /// needs: out of the index now, deleted by a prune after the grace
    /// period), `repack` (its live blobs copied, then as `drop`),
    /// `delete` (a pack dropped by an earlier prune, deleted now).
    pub action: &'static str,
    pub bytes: u64,
}

/// An object the prune may not delete yet: S3 Object Lock holds it.
#[derive(Clone, Debug, Serialize)]
pub struct LockedObject {
    pub path: String,
    pub until: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RemotePruneReport {
    pub remote: String,
    pub dry_run: bool,
    pub policy_set: bool,
    pub kept: Vec<SnapshotFate>,
    pub forgotten: Vec<SnapshotFate>,
    /// Packs indexed before, and their bytes.
    pub packs: u64,
    pub pack_bytes: u64,
    /// Bytes of blobs the kept snapshots reach.
    pub used_bytes: u64,
    /// Pack bytes nothing kept reaches, before and after this prune.
    pub unused_bytes: u64,
    pub unused_bytes_after: u64,
    pub max_unused_percent: f64,
    pub packs_dropped: u64,
    pub packs_repacked: u64,
    /// Live blobs copied into new packs, and those packs.
    pub blobs_repacked: u64,
    pub packs_written: u64,
    pub bytes_written: u64,
    pub index_files_written: u64,
    pub index_files_deleted: u64,
    /// Packs taken out of the index by this prune, and their bytes: a
    /// prune after the grace period deletes them.
    pub pending_packs: u64,
    pub pending_bytes: u64,
    /// Packs no index or pending file lists (a push still uploading, or a
    /// killed one's): left alone for the next push to index.
    pub unindexed_packs: u64,
    pub unindexed_bytes: u64,
    /// Packs of earlier prunes deleted now, and the bytes freed.
    pub packs_deleted: u64,
    pub bytes_freed: u64,
    /// Packs of earlier prunes still inside the grace period.
    pub pending_waiting: u64,
    pub pending_waiting_bytes: u64,
    /// Pending packs a kept snapshot turned out to need: indexed again.
    pub packs_restored: u64,
    pub grace_minutes: u64,
    /// Everything removed (dry: that would be), sorted by path.
    pub removals: Vec<Removal>,
    /// Objects kept because their object lock has not expired.
    pub locked: Vec<LockedObject>,
    pub requests: RequestStats,
}

impl RemotePruneReport {
    /// Bytes this prune makes free now or after the grace period.
    pub fn bytes_reclaimed(&self) -> u64 {
        self.bytes_freed + self.pending_bytes
    }
}

/// Where a pack's listing came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// An index file (its position in `files`).
    Indexed(usize),
    /// A pending file lists it.
    Pending,
}

struct PackState {
    pack: IndexPack,
    origin: Origin,
    /// The blobs of it that kept snapshots reach (where the merged index
    /// resolves them to this pack).
    live: Vec<BlobEntry>,
    live_bytes: u64,
}

impl PackState {
    fn unused(&self) -> u64 {
        self.pack.len.saturating_sub(self.live_bytes)
    }
}

/// Prune the remote: see the module documentation for the order.
pub fn run(
    remote: &RemoteRepo,
    o: &PruneOptions,
    progress: &dyn Progress,
) -> Result<RemotePruneReport> {
    let lock = if o.dry_run {
        if let Some(h) = lock::holder(remote)? {
            tracing::warn!(
                "remote {} is locked by a prune ({h}): this dry run may describe a remote that is changing",
                remote.url()
            );
        }
        None
    } else {
        Some(RemoteLock::acquire(remote, o.unlock)?)
    };
    let mut report = RemotePruneReport {
        remote: remote.url().to_string(),
        dry_run: o.dry_run,
        policy_set: o.policy.is_set(),
        max_unused_percent: o.max_unused_percent,
        grace_minutes: o.grace.as_secs() / 60,
        ..RemotePruneReport::default()
    };
    // The time the commits are listed: pending packs older than the grace
    // period at this moment cannot be needed by a commit not yet listed.
    let listed_at = crate::model::now_ns();

    // 1. What the remote holds: index files, pending files, packs.
    let mut files: Vec<(Listed, IndexFile)> = Vec::new();
    for f in remote.index_files()? {
        // A damaged index file would hide live packs: stop before any change.
        let file = remote.read_index_file(&f)?;
        files.push((f, file));
    }
    let pending = remote.pending_files()?;
    let stored: HashMap<[u8; 32], Listed> = remote
        .list_packs()?
        .into_iter()
        .map(|(_, n, l)| (n, l))
        .collect();
    let mut states: BTreeMap<[u8; 32], PackState> = BTreeMap::new();
    for (i, (_, f)) in files.iter().enumerate() {
        for p in &f.packs {
            states.entry(p.name).or_insert_with(|| PackState {
                pack: p.clone(),
                origin: Origin::Indexed(i),
                live: Vec::new(),
                live_bytes: 0,
            });
        }
    }
    let pending_names: HashSet<[u8; 32]> = pending
        .iter()
        .flat_map(|(_, f)| f.packs.iter().map(|p| p.name))
        .collect();
    // Packs no index or pending file lists: counted, never touched (see
    // the module doc).
    for (n, l) in &stored {
        if !states.contains_key(n) && !pending_names.contains(n) {
            report.unindexed_packs += 1;
            report.unindexed_bytes += l.size;
        }
    }
    for (_, f) in &pending {
        // A pending pack no longer stored was deleted by a prune killed
        // before it rewrote this file: its listing is void (it holds
        // nothing to read or to index again), and step 9 drops it.
        for p in f.packs.iter().filter(|p| stored.contains_key(&p.name)) {
            states.entry(p.name).or_insert_with(|| PackState {
                pack: p.clone(),
                origin: Origin::Pending,
                live: Vec::new(),
                live_bytes: 0,
            });
        }
    }

    // 2. Which snapshots stay.
    let scan = snapshot::scan(remote)?;
    scan.check_intact("prune the remote")?;
    let tz = jiff::tz::TimeZone::system();
    let times: Vec<(SnapshotId, i64)> = scan
        .snapshots
        .iter()
        .map(|s| (s.id, s.record.time_ns))
        .collect();
    let decisions = retention::apply(&times, &o.policy, o.now_ns, &tz);
    let keep: HashMap<SnapshotId, &retention::Decision> =
        decisions.iter().map(|d| (d.id, d)).collect();
    let mut kept: Vec<&Snapshot> = Vec::new();
    let mut forgotten: Vec<&Snapshot> = Vec::new();
    for s in &scan.snapshots {
        let fate = SnapshotFate {
            id: s.id.short(),
            time: snapshot::format_time(s.record.time_ns),
            reasons: keep
                .get(&s.id)
                .map(|d| d.reasons.clone())
                .unwrap_or_default(),
        };
        let path = commit_path(&remote.commit_name(&s.id));
        let locked = if keep.get(&s.id).is_some_and(|d| d.keep) {
            None
        } else {
            remote.locked_until(&path)?
        };
        match locked {
            None if !keep.get(&s.id).is_some_and(|d| d.keep) => {
                report.forgotten.push(fate);
                forgotten.push(s);
            }
            None => {
                report.kept.push(fate);
                kept.push(s);
            }
            Some(until) => {
                // Its commit cannot go yet, so neither can its content.
                report.locked.push(LockedObject {
                    path,
                    until: until.to_string(),
                });
                report.kept.push(SnapshotFate {
                    reasons: vec!["locked"],
                    ..fate
                });
                kept.push(s);
            }
        }
    }

    // 3. What the kept snapshots reach: read through every pack known,
    //    pending ones last (a blob found only there brings its pack back).
    let mut walk_index = Index::new();
    for st in states.values().filter(|s| s.origin != Origin::Pending) {
        walk_index.add_pack(st.pack.clone());
    }
    for st in states.values().filter(|s| s.origin == Origin::Pending) {
        walk_index.add_pack(st.pack.clone());
    }
    let walk_index = Arc::new(walk_index);
    remote.use_index(walk_index.clone());
    progress.phase("walk", kept.len() as u64, 0);
    let live = live_blobs(remote, &walk_index, &kept);
    progress.finish();
    remote.forget_index();
    let live = live?;
    for id in &live {
        let Some((p, e)) = walk_index.get(id) else {
            continue; // absent by design (a commit's `missing`) or lost
        };
        if let Some(st) = states.get_mut(&p.name) {
            st.live_bytes += u64::from(e.stored_len);
            st.live.push(e.clone());
        }
    }
    for st in states.values_mut() {
        st.live.sort_by_key(|e| e.offset);
    }

    // 4. Classify. Packs in an index file the object lock keeps stay as
    //    they are (their index file cannot be replaced).
    let mut pinned_files: HashSet<usize> = HashSet::new();
    for (i, (l, _)) in files.iter().enumerate() {
        if let Some(until) = remote.locked_until(&l.path)? {
            report.locked.push(LockedObject {
                path: l.path.clone(),
                until: until.to_string(),
            });
            pinned_files.insert(i);
        }
    }
    let movable = |st: &PackState| match st.origin {
        Origin::Indexed(i) => !pinned_files.contains(&i),
        Origin::Pending => false,
    };
    let active = |st: &PackState| st.origin != Origin::Pending;
    report.packs = states.values().filter(|s| active(s)).count() as u64;
    report.pack_bytes = states
        .values()
        .filter(|s| active(s))
        .map(|s| s.pack.len)
        .sum();
    report.used_bytes = states.values().map(|s| s.live_bytes).sum();
    report.unused_bytes = states
        .values()
        .filter(|s| active(s))
        .map(|s| s.unused())
        .sum();
    let mut drop: BTreeSet<[u8; 32]> = BTreeSet::new();
    let mut repack: BTreeSet<[u8; 32]> = BTreeSet::new();
    for (n, st) in &states {
        if active(st) && movable(st) && st.live.is_empty() {
            drop.insert(*n);
        }
    }
    let mut unused_left: u64 = states
        .values()
        .filter(|s| active(s) && !drop.contains(&s.pack.name))
        .map(|s| s.unused())
        .sum();
    let allowed = (report.used_bytes as f64 * o.max_unused_percent / 100.0) as u64;
    let mut candidates: Vec<&PackState> = states
        .values()
        .filter(|s| active(s) && movable(s) && !s.live.is_empty() && s.unused() > 0)
        .collect();
    // The most unused first (as restic): the fewest bytes copied per byte freed.
    candidates.sort_by(|a, b| {
        let ra = a.unused() as f64 / a.pack.len.max(1) as f64;
        let rb = b.unused() as f64 / b.pack.len.max(1) as f64;
        rb.total_cmp(&ra).then(a.pack.name.cmp(&b.pack.name))
    });
    for st in candidates {
        if unused_left <= allowed {
            break;
        }
        repack.insert(st.pack.name);
        unused_left -= st.unused();
    }
    // Pending packs: brought back when something kept needs them, deleted
    // once past the grace period, else left waiting.
    let grace_ns = i64::try_from(o.grace.as_nanos()).unwrap_or(i64::MAX);
    let mut restore: BTreeSet<[u8; 32]> = BTreeSet::new();
    let mut delete_now: BTreeSet<[u8; 32]> = BTreeSet::new();
    let mut waiting: BTreeSet<[u8; 32]> = BTreeSet::new();
    for (_, f) in &pending {
        let expired = f.time_ns.saturating_add(grace_ns) <= listed_at;
        for p in &f.packs {
            let Some(st) = states.get(&p.name) else {
                continue;
            };
            if st.origin != Origin::Pending {
                // Indexed again (a push adopted it, or a prune restored
                // it): this listing of it is void.
                continue;
            }
            if !st.live.is_empty() {
                restore.insert(p.name);
            } else if expired && !restore.contains(&p.name) {
                delete_now.insert(p.name);
            } else {
                waiting.insert(p.name);
            }
        }
    }
    // A pack listed by two pending files, one young: it waits.
    delete_now.retain(|n| !waiting.contains(n) && !restore.contains(n));
    waiting.retain(|n| !restore.contains(n));

    for s in &forgotten {
        report.removals.push(Removal {
            path: commit_path(&remote.commit_name(&s.id)),
            action: "forget",
            bytes: 0,
        });
    }
    for (set, action) in [
        (&drop, "drop"),
        (&repack, "repack"),
        (&delete_now, "delete"),
    ] {
        for n in set.iter() {
            let st = &states[n];
            report.removals.push(Removal {
                path: pack_path(st.pack.kind, n),
                action,
                bytes: st.pack.len,
            });
        }
    }
    report.removals.sort();
    report.packs_dropped = drop.len() as u64;
    report.packs_repacked = repack.len() as u64;
    report.packs_restored = restore.len() as u64;
    report.pending_packs = (drop.len() + repack.len()) as u64;
    report.pending_bytes = drop.iter().chain(&repack).map(|n| states[n].pack.len).sum();
    report.pending_waiting = waiting.len() as u64;
    report.pending_waiting_bytes = waiting.iter().map(|n| states[n].pack.len).sum();
    report.blobs_repacked = repack.iter().map(|n| states[n].live.len() as u64).sum();
    report.unused_bytes_after = unused_left;
    let planned_free: u64 = delete_now.iter().map(|n| states[n].pack.len).sum();
    if o.dry_run {
        report.packs_deleted = delete_now.len() as u64;
        report.bytes_freed = planned_free;
        report.requests = remote.backend().stats();
        return Ok(report);
    }

    // 5. Forget: the commits go first, so nothing below is reachable from
    //    a commit a reader could still list once its packs have gone. The
    //    record of what was forgotten goes before them: a push that lists
    //    the commits after they went reads a record that names them.
    let old_records = remote.forgotten_files()?;
    let record = forgotten_record(remote, &old_records, &scan.snapshots, &forgotten);
    let written = match &record {
        Some(commits) if !commits.is_empty() => Some(remote.put_forgotten(&ForgottenFile {
            time_ns: crate::model::now_ns(),
            commits: commits.clone(),
        })?),
        Some(_) => Some(String::new()),
        None => None,
    };
    for s in &forgotten {
        remote.delete(&commit_path(&remote.commit_name(&s.id)))?;
    }
    if let Some(new) = &written {
        // The new record holds what the old ones did (less the names a
        // commit holds again); one a lock keeps stays, harmlessly.
        for (l, _) in old_records.iter().filter(|(l, _)| l.path != *new) {
            if let Some(until) = remote.locked_until(&l.path)? {
                report.locked.push(LockedObject {
                    path: l.path.clone(),
                    until: until.to_string(),
                });
                continue;
            }
            remote.delete(&l.path)?;
        }
    }
    // 6. Repack: live blobs into new packs, sealed bytes as they are.
    let new_packs = copy_live(remote, &states, &repack, progress)?;
    report.packs_written = new_packs.len() as u64;
    report.bytes_written = new_packs.iter().map(|p| p.len).sum();
    // 7. New index files: the packs that stay of every file that lists a
    //    pack leaving the index, the packs restored and the new ones.
    let leaving: HashSet<[u8; 32]> = drop.iter().chain(&repack).copied().collect();
    let affected: BTreeSet<usize> = files
        .iter()
        .enumerate()
        .filter(|(i, (_, f))| {
            !pinned_files.contains(i) && f.packs.iter().any(|p| leaving.contains(&p.name))
        })
        .map(|(i, _)| i)
        .collect();
    let mut listed_again: BTreeMap<[u8; 32], IndexPack> = BTreeMap::new();
    for i in &affected {
        for p in &files[*i].1.packs {
            if !leaving.contains(&p.name) {
                listed_again.insert(p.name, p.clone());
            }
        }
    }
    for n in &restore {
        listed_again.insert(*n, states[n].pack.clone());
    }
    // A pack an unaffected file still lists needs no second listing.
    let kept_files: HashSet<[u8; 32]> = files
        .iter()
        .enumerate()
        .filter(|(i, _)| !affected.contains(i))
        .flat_map(|(_, (_, f))| f.packs.iter().map(|p| p.name))
        .collect();
    listed_again.retain(|n, _| !kept_files.contains(n));
    let mut out: Vec<IndexPack> = listed_again.into_values().collect();
    out.extend(new_packs);
    for file in split_index(out) {
        remote.put_index(&file)?;
        report.index_files_written += 1;
    }
    // 8. What leaves the index waits in a pending file, written before the
    //    replaced index files go: killed in between, those packs are both
    //    indexed and pending (the index wins), never listed by neither.
    if !leaving.is_empty() {
        let mut packs: Vec<IndexPack> = leaving.iter().map(|n| states[n].pack.clone()).collect();
        packs.sort_by_key(|p| p.name);
        remote.put_pending(&PendingFile {
            time_ns: crate::model::now_ns(),
            packs,
        })?;
    }
    for i in &affected {
        remote.delete(&files[*i].0.path)?;
        report.index_files_deleted += 1;
    }
    // 9. Earlier pending packs: delete the expired ones (unless locked),
    //    then rewrite or delete the pending files that listed them.
    let mut still_locked: HashSet<[u8; 32]> = HashSet::new();
    for n in &delete_now {
        let st = &states[n];
        let path = pack_path(st.pack.kind, n);
        if let Some(until) = remote.locked_until(&path)? {
            report.locked.push(LockedObject {
                path,
                until: until.to_string(),
            });
            still_locked.insert(*n);
            continue;
        }
        remote.delete(&path)?;
        report.packs_deleted += 1;
        report.bytes_freed += st.pack.len;
    }
    for (l, f) in &pending {
        let left: Vec<IndexPack> = f
            .packs
            .iter()
            .filter(|p| {
                states
                    .get(&p.name)
                    .is_some_and(|s| s.origin == Origin::Pending)
                    && (waiting.contains(&p.name) || still_locked.contains(&p.name))
            })
            .cloned()
            .collect();
        if left.len() == f.packs.len() {
            continue;
        }
        if !left.is_empty() {
            remote.put_pending(&PendingFile {
                time_ns: f.time_ns,
                packs: left,
            })?;
        }
        remote.delete(&l.path)?;
    }
    report.locked.sort_by(|a, b| a.path.cmp(&b.path));
    // Released first, so that `requests` counts the lock's DELETE too.
    std::mem::drop(lock);
    report.requests = remote.backend().stats();
    Ok(report)
}

/// The commit names the remote's forgotten record should list after this
/// prune: those the records list whose commit is not stored (a snapshot
/// forgotten and not pushed again since), and those forgotten now; sorted.
/// `None` when the one record there already says exactly that.
fn forgotten_record(
    remote: &RemoteRepo,
    old: &[(Listed, ForgottenFile)],
    stored: &[Snapshot],
    forgotten: &[&Snapshot],
) -> Option<Vec<[u8; 32]>> {
    let stored: HashSet<[u8; 32]> = stored.iter().map(|s| remote.commit_name(&s.id)).collect();
    let gone: HashSet<[u8; 32]> = forgotten
        .iter()
        .map(|s| remote.commit_name(&s.id))
        .collect();
    let mut names: BTreeSet<[u8; 32]> = old
        .iter()
        .flat_map(|(_, f)| f.commits.iter().copied())
        .filter(|n| !stored.contains(n) || gone.contains(n))
        .collect();
    names.extend(gone);
    let names: Vec<[u8; 32]> = names.into_iter().collect();
    match old {
        [] if names.is_empty() => None,
        [(_, only)] if only.commits == names => None,
        _ => Some(names),
    }
}

/// The blob ids the snapshots reach: their trees, the objects they
/// reference, and the chunks of chunked objects.
fn live_blobs(remote: &RemoteRepo, index: &Index, kept: &[&Snapshot]) -> Result<HashSet<[u8; 32]>> {
    let (trees, objects) = crate::gc::referenced(remote, kept)?;
    let mut live: HashSet<[u8; 32]> = HashSet::with_capacity(trees.len() + objects.len());
    for t in &trees {
        live.insert(remote.tree_blob(&t.0));
    }
    let mut objects: Vec<ObjectId> = objects.into_iter().collect();
    objects.sort_unstable();
    for o in &objects {
        let blob = remote.object_blob(o);
        if let Some((_, e)) = index.get(&blob) {
            if e.kind == BlobKind::List {
                match remote.read_blob(&blob)? {
                    Some((BlobKind::List, plain)) => {
                        let list =
                            super::pack::decode_list(&plain).map_err(|e| Error::RemoteDamaged {
                                url: remote.url().to_string(),
                                what: format!("the chunk list of {}", o.to_hex()),
                                detail: e.to_string(),
                            })?;
                        live.extend(list.chunks);
                    }
                    _ => {
                        return Err(Error::RemoteDamaged {
                            url: remote.url().to_string(),
                            what: format!("the chunk list of {}", o.to_hex()),
                            detail: "not readable as a chunk list".into(),
                        })
                    }
                }
            }
        }
        live.insert(blob);
    }
    Ok(live)
}

/// Copy the live blobs of the packs in `repack` into new packs (uploaded);
/// returns their index listings. Each source pack is read whole once and
/// checked against its name first: a damaged pack is not copied from.
fn copy_live(
    remote: &RemoteRepo,
    states: &BTreeMap<[u8; 32], PackState>,
    repack: &BTreeSet<[u8; 32]>,
    progress: &dyn Progress,
) -> Result<Vec<IndexPack>> {
    let capacity = super::push::pack_capacity(remote);
    let target = remote.config().pack_size;
    let mut writers: HashMap<PackKind, PackWriter> = HashMap::new();
    let mut out = Vec::new();
    let total: u64 = repack.iter().map(|n| states[n].pack.len).sum();
    progress.phase("repack", repack.len() as u64, total);
    let finish = |w: PackWriter, out: &mut Vec<IndexPack>| -> Result<()> {
        let p = w.finish(remote.key()).map_err(|e| Error::RemoteDamaged {
            url: remote.url().to_string(),
            what: "a new pack".into(),
            detail: e.to_string(),
        })?;
        out.push(remote.put_pack(p)?);
        Ok(())
    };
    for n in repack {
        let st = &states[n];
        let path = pack_path(st.pack.kind, n);
        let bytes = remote.read_pack(st.pack.kind, n, st.pack.len)?;
        if *blake3::hash(&bytes).as_bytes() != *n {
            return Err(Error::RemoteDamaged {
                url: remote.url().to_string(),
                what: format!("pack {path}"),
                detail: "its bytes do not hash to its name, so prune will not copy from it".into(),
            });
        }
        for e in &st.live {
            let Some(stored) =
                bytes.get(e.offset as usize..(e.offset + u64::from(e.stored_len)) as usize)
            else {
                return Err(Error::RemoteDamaged {
                    url: remote.url().to_string(),
                    what: format!("pack {path}"),
                    detail: format!(
                        "shorter than the blob at offset {} its index lists",
                        e.offset
                    ),
                });
            };
            let kind = PackKind::of(e.kind);
            let w = writers
                .entry(kind)
                .or_insert_with(|| PackWriter::with_capacity(kind, capacity));
            w.push(SealedBlob {
                kind: e.kind,
                id: e.id,
                orig: e.orig,
                raw_len: e.raw_len,
                compressed: e.compressed,
                bytes: stored.to_vec(),
            });
            if w.len() >= target {
                if let Some(full) = writers.remove(&kind) {
                    finish(full, &mut out)?;
                }
            }
        }
        progress.advance(1, st.pack.len);
    }
    let mut rest: Vec<(PackKind, PackWriter)> = writers.into_iter().collect();
    rest.sort_by_key(|(k, _)| matches!(k, PackKind::Tree));
    for (_, w) in rest {
        if !w.is_empty() {
            finish(w, &mut out)?;
        }
    }
    progress.finish();
    Ok(out)
}

/// Index files of at most `INDEX_BLOBS` blobs each (a pack is never split).
fn split_index(packs: Vec<IndexPack>) -> Vec<IndexFile> {
    let mut out = Vec::new();
    let mut cur = IndexFile::default();
    let mut blobs = 0usize;
    for p in packs {
        if blobs > 0 && blobs + p.blobs.len() > INDEX_BLOBS {
            out.push(std::mem::take(&mut cur));
            blobs = 0;
        }
        blobs += p.blobs.len();
        cur.packs.push(p);
    }
    if !cur.packs.is_empty() {
        out.push(cur);
    }
    out
}
