//! Push: upload every snapshot the remote lacks, with the trees and the
//! content it references that the local repository still holds.
//!
//! Order on the remote (the crash-safety argument, docs/DESIGN.md): data
//! and tree packs first, then one index file naming them, then the
//! snapshot commits, oldest first. A reader only sees a snapshot once its
//! commit exists, and by then every blob it needs is in an indexed pack.
//! A push killed at any point leaves packs no index names; the next push
//! adopts them (reading only their headers) instead of uploading them
//! again, so at most the packs in flight are sent twice.

use super::backend::RequestStats;
use super::chunk;
use super::crypto::Domain;
use super::format::Commit;
use super::index::{IndexFile, IndexPack};
use super::pack::{self, BlobKind, ChunkList, FinishedPack, PackKind, PackWriter, SealedBlob};
use super::repo::RemoteRepo;
use crate::error::{Error, Result};
use crate::hash::{hash_bytes, Hasher};
use crate::id::{ObjectId, SnapshotId, TreeId};
use crate::model::{History, Leaf, Meta};
use crate::progress::Progress;
use crate::repo::snapshot::{self, Snapshot};
use crate::repo::tree::{self, RefRole, TreeLeaf};
use crate::repo::{RepoRead, StoreKind};
use rayon::prelude::*;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::sync::mpsc;
use std::sync::Mutex;

/// Content a pushed snapshot references that the local repository no
/// longer held (retention had removed it), by path.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MissingContent {
    pub snapshot: String,
    pub path: String,
    pub object: String,
}

/// What a push did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PushReport {
    pub remote: String,
    /// Snapshots uploaded, oldest first (short ids).
    pub pushed: Vec<String>,
    /// Snapshots the remote already had.
    pub already: usize,
    /// Local snapshots a prune of the remote forgot: not uploaded again.
    pub forgotten: usize,
    /// Local snapshot records that could not be read, so were not pushed.
    pub skipped: Vec<String>,
    /// Blobs uploaded (data chunks and whole objects, chunk lists, trees).
    pub blobs: u64,
    /// Content bytes read from the local repository.
    pub bytes_read: u64,
    /// Bytes of the blobs uploaded, before packing overhead.
    pub blob_bytes: u64,
    /// Bytes uploaded in all (packs, indexes, commits).
    pub bytes_uploaded: u64,
    pub packs_written: u64,
    /// Packs a killed push had uploaded, indexed now instead of uploaded again.
    pub packs_adopted: u64,
    pub index_files: u64,
    pub missing: Vec<MissingContent>,
    pub requests: RequestStats,
}

/// How many packs upload at once (each holds a whole pack in memory).
const UPLOADERS: usize = 2;
/// Small objects read and sealed in parallel, this many bytes at a time.
const BATCH_BYTES: u64 = 8 << 20;

/// Local snapshots the remote does not have yet.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Backlog {
    pub backlog_snapshots: u64,
    /// The oldest of them (short id), and its time.
    pub oldest_unpushed: Option<String>,
    pub oldest_unpushed_time: Option<String>,
}

impl Backlog {
    /// "3 snapshots not on the remote, the oldest 1a2b3c4d of 2026-…".
    pub fn describe(&self) -> String {
        match (&self.oldest_unpushed, &self.oldest_unpushed_time) {
            (Some(id), Some(t)) => format!(
                "{} snapshot(s) not on the remote, the oldest {id} of {t}",
                self.backlog_snapshots
            ),
            _ => "every local snapshot is on the remote".to_string(),
        }
    }
}

/// The backlog of `local` against the remote whose commit names are
/// `on_remote` (from [`RemoteRepo::commit_names`]).
pub fn backlog(
    local: &dyn RepoRead,
    remote: &RemoteRepo,
    on_remote: &HashSet<[u8; 32]>,
) -> Result<Backlog> {
    let scan = snapshot::scan(local)?;
    let mut todo: Vec<&Snapshot> = scan
        .snapshots
        .iter()
        .filter(|s| !on_remote.contains(&remote.commit_name(&s.id)))
        .collect();
    if !todo.is_empty() {
        // What a remote prune forgot is not pushed again (see `run_releasing`).
        let forgotten = remote.forgotten_commits()?;
        todo.retain(|s| !forgotten.contains(&remote.commit_name(&s.id)));
    }
    todo.sort_by_key(|s| (s.record.time_ns, s.record.seq));
    Ok(Backlog {
        backlog_snapshots: todo.len() as u64,
        oldest_unpushed: todo.first().map(|s| s.id.short()),
        oldest_unpushed_time: todo
            .first()
            .map(|s| snapshot::format_time(s.record.time_ns)),
    })
}

/// Push every local snapshot the remote lacks. With `repair`, every local
/// snapshot is walked, so content and trees the remote lost (a deleted or
/// damaged pack, a damaged index) are uploaded again; commits already
/// there are kept.
pub fn run(
    local: &dyn RepoRead,
    remote: &RemoteRepo,
    progress: &dyn Progress,
    repair: bool,
) -> Result<PushReport> {
    run_releasing(local, remote, progress, repair, &mut || {})
}

/// [`run`], calling `scanned` once the local snapshots have been listed:
/// the caller drops the repository's shared lock there, so a push of
/// minutes never holds up a backup's exclusive lock. That is safe because
/// a push reads only the snapshots committed when it listed them, every
/// object it reads is hashed against its name before it is sealed, and
/// an object a concurrent retention removed meanwhile is recorded as
/// missing, as if retention had run before the push; a tree or record a
/// concurrent prune removed fails the push before any commit names it
/// (docs/DESIGN.md, "Pushing without holding the lock").
pub fn run_releasing(
    local: &dyn RepoRead,
    remote: &RemoteRepo,
    progress: &dyn Progress,
    repair: bool,
    scanned: &mut dyn FnMut(),
) -> Result<PushReport> {
    let mut report = PushReport {
        remote: remote.url().to_string(),
        ..PushReport::default()
    };
    if local.algo().name() != remote.config().hash {
        return Err(Error::Usage(format!(
            "remote {} holds {} content ids, but the repository uses {}: push to a remote created for it (`trove remote init URL` takes the repository's hash)",
            remote.url(),
            remote.config().hash,
            local.algo().name()
        )));
    }
    let scan = snapshot::scan(local);
    scanned();
    let scan = scan?;
    for d in &scan.damaged {
        tracing::warn!("not pushed: {}", d.error);
        report.skipped.push(d.id.short());
    }
    let names = remote.commit_names()?;
    let mut todo: Vec<&Snapshot> = scan
        .snapshots
        .iter()
        .filter(|s| !names.contains(&remote.commit_name(&s.id)))
        .collect();
    report.already = scan.snapshots.len() - todo.len();
    // What a prune of the remote forgot stays forgotten: uploading it
    // again would undo the remote's own retention (read only when there
    // is something to push, so a no-change push costs nothing more).
    let forgotten = if todo.is_empty() && !repair {
        HashSet::new()
    } else {
        remote.forgotten_commits()?
    };
    todo.retain(|s| !forgotten.contains(&remote.commit_name(&s.id)));
    report.forgotten = scan.snapshots.len() - report.already - todo.len();
    let walk: Vec<&Snapshot> = if repair {
        scan.snapshots
            .iter()
            .filter(|s| !forgotten.contains(&remote.commit_name(&s.id)))
            .collect()
    } else {
        todo.clone()
    };
    if walk.is_empty() {
        report.requests = remote.backend().stats();
        return Ok(report);
    }
    // Rounds: upload what the remote lacks, then check that no prune
    // took an index file away meanwhile (the blobs this push found there
    // and did not upload may then be on their way out); if one did, the
    // next round uploads them again. The commits follow a passed check,
    // re-checked when writing them takes long.
    let mut left: Vec<&Snapshot> = todo.clone();
    let mut rounds = 0;
    'rounds: loop {
        rounds += 1;
        let before = index_file_names(remote)?;
        let adopted = adopt_orphans(remote)?;
        report.packs_adopted += adopted.packs.len() as u64;
        if !adopted.packs.is_empty() {
            remote.put_index(&adopted)?;
            report.index_files += 1;
        }
        remote.forget_index();
        let walk_now: Vec<&Snapshot> = if repair { walk.clone() } else { left.clone() };
        let (mut missing_by_snap, unpushable) =
            upload_round(local, remote, &walk_now, repair, progress, &mut report)?;
        if !index_kept(remote, &before)? {
            if rounds >= MAX_ROUNDS {
                return Err(Error::Remote {
                    url: remote.url().to_string(),
                    action: "push".into(),
                    failure: crate::error::RemoteFailure::Other,
                    detail: format!(
                        "a prune kept replacing the index during this push ({rounds} tries; the snapshots not listed as pushed were not committed): push again once the prune has finished"
                    ),
                });
            }
            tracing::warn!(
                "remote {}: a prune replaced index files during the push: checking again what the remote lacks",
                remote.url()
            );
            continue;
        }
        let mut checked = std::time::Instant::now();
        while let Some(s) = left.first().copied() {
            if checked.elapsed() > RECHECK {
                if !index_kept(remote, &before)? {
                    continue 'rounds;
                }
                checked = std::time::Instant::now();
            }
            let path = local.locate_snapshot(&s.id);
            let record = local
                .read_snapshot(&s.id)
                .map_err(|e| Error::io("read snapshot", &path, e))?;
            let mut missing = missing_by_snap.remove(&s.id).unwrap_or_default();
            missing.extend_from_slice(&unpushable);
            missing.sort_unstable();
            missing.dedup();
            remote.put_commit(&s.id, &Commit { record, missing })?;
            report.pushed.push(s.id.short());
            left.remove(0);
        }
        break;
    }
    remote.forget_index();
    let st = remote.backend().stats();
    report.bytes_uploaded = st.bytes_up;
    report.requests = st;
    Ok(report)
}

/// Most rounds of a push (see `run_releasing`) before it gives up.
const MAX_ROUNDS: u32 = 5;
/// How long a push writes commits before it checks the index again.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// The index files the remote holds now, by path.
fn index_file_names(remote: &RemoteRepo) -> Result<HashSet<String>> {
    Ok(remote.index_files()?.into_iter().map(|l| l.path).collect())
}

/// Whether every index file of `before` is still there: then no prune has
/// taken a pack out of the index since (it does so only by replacing the
/// index files that list it).
fn index_kept(remote: &RemoteRepo, before: &HashSet<String>) -> Result<bool> {
    let now = index_file_names(remote)?;
    Ok(before.is_subset(&now))
}

/// The absent content of each snapshot, and the content found unreadable
/// while it was read (absent from every commit of the push).
type Absent = (BTreeMap<SnapshotId, Vec<[u8; 32]>>, Vec<[u8; 32]>);

/// One round of a push: walk `walk` against the remote's index as loaded
/// now, upload the trees and content it lacks, and write one index file
/// naming the packs uploaded.
fn upload_round(
    local: &dyn RepoRead,
    remote: &RemoteRepo,
    walk: &[&Snapshot],
    repair: bool,
    progress: &dyn Progress,
    report: &mut PushReport,
) -> Result<Absent> {
    let index = remote.index()?;

    // A rendezvous: a finished pack waits in the walker until an uploader
    // takes it, so at most UPLOADERS + the two being filled are in memory.
    let (tx, rx) = mpsc::sync_channel::<FinishedPack>(0);
    let rx = Mutex::new(rx);
    let uploaded: Mutex<Vec<IndexPack>> = Mutex::new(Vec::new());
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    let mut missing_by_snap: BTreeMap<SnapshotId, Vec<[u8; 32]>> = BTreeMap::new();
    let mut unpushable: Vec<[u8; 32]> = Vec::new();

    let walked = std::thread::scope(|scope| -> Result<()> {
        for _ in 0..UPLOADERS {
            scope.spawn(|| loop {
                let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                let Ok(p) = next else { break };
                if failure.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                    continue;
                }
                match remote.put_pack(p) {
                    Ok(listed) => uploaded
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(listed),
                    Err(e) => {
                        failure
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                    }
                }
            });
        }
        let mut w = Walker {
            local,
            remote,
            index: &index,
            queued: HashSet::new(),
            walked: HashSet::new(),
            data: PackWriter::with_capacity(PackKind::Data, pack_capacity(remote)),
            trees: PackWriter::with_capacity(PackKind::Tree, pack_capacity(remote)),
            capacity: pack_capacity(remote),
            repair,
            content: Vec::new(),
            batch: Vec::new(),
            batch_bytes: 0,
            tx: &tx,
            failure: &failure,
            report,
            missing: Vec::new(),
            progress,
        };
        let result = (|| -> Result<()> {
            // 1. The trees (uploaded as they are met) and the content the
            //    remote lacks, in walk order.
            for s in walk {
                w.snapshot(s)?;
                let mut m = std::mem::take(&mut w.missing);
                m.sort_unstable();
                m.dedup();
                missing_by_snap.insert(s.id, m);
            }
            // 2. The content, with its totals known for the progress bar.
            let content = std::mem::take(&mut w.content);
            let total: u64 = content.iter().map(|p| p.size).sum();
            progress.phase("push", content.len() as u64, total);
            for p in content {
                w.upload(p)?;
            }
            w.flush_batch()?;
            w.finish_packs()
        })();
        // Content found unreadable or altered while it was read: absent by
        // design in every commit of this push (readers take the union).
        unpushable = std::mem::take(&mut w.missing);
        drop(w);
        drop(tx);
        result
    });
    progress.finish();
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    walked?;
    let mut packs = uploaded.into_inner().unwrap_or_else(|p| p.into_inner());
    packs.sort_by_key(|p| p.name);
    report.packs_written += packs.len() as u64;
    if !packs.is_empty() {
        remote.put_index(&IndexFile { packs })?;
        report.index_files += 1;
    }
    Ok((missing_by_snap, unpushable))
}

/// Index the packs no index or pending file names (uploaded by a push
/// that was killed before its index): their headers say what they hold.
fn adopt_orphans(remote: &RemoteRepo) -> Result<IndexFile> {
    let index = remote.index()?;
    // Packs a prune took out of the index on purpose stay out.
    let pending = remote.pending_packs()?;
    let mut out = IndexFile::default();
    for (kind, name, listed) in remote.list_packs()? {
        if index.has_pack(&name) || pending.contains(&name) {
            continue;
        }
        match remote.read_pack_entries(&listed.path, listed.size) {
            Ok((k, blobs)) if k == kind => out.packs.push(IndexPack {
                name,
                kind,
                len: listed.size,
                blobs,
            }),
            Ok(_) | Err(_) => {
                // Not a pack we can use (damaged, or in the wrong folder):
                // its blobs are uploaded again; verify names it.
                tracing::warn!(
                    "remote {}: pack {} is unreadable and not indexed; its content is uploaded again",
                    remote.url(),
                    listed.path
                );
            }
        }
    }
    Ok(out)
}

/// An object retention removed locally while the push (which holds no
/// lock once it has listed the snapshots) was on its way to it.
fn vanished(loc: &std::path::Path, path: &[u8]) {
    tracing::warn!(
        "object {} (for {}) was removed locally during the push (retention): recorded as missing on the remote",
        loc.display(),
        crate::pathbytes::display(path)
    );
}

/// A small object waiting to be read and sealed with others in parallel.
struct Pending {
    id: ObjectId,
    size: u64,
    path: Vec<u8>,
    /// Its keyed blob id.
    blob: [u8; 32],
    /// A chunked object whose list the remote has (repair: chunks only).
    list_known: bool,
}

struct Walker<'a> {
    local: &'a dyn RepoRead,
    remote: &'a RemoteRepo,
    index: &'a super::index::Index,
    /// Blob ids queued in this push (not yet in any index).
    queued: HashSet<[u8; 32]>,
    /// Trees already walked in this push.
    walked: HashSet<TreeId>,
    data: PackWriter,
    trees: PackWriter,
    /// What a pack's buffer is made to hold (see `pack_capacity`).
    capacity: usize,
    /// Walking snapshots the remote has, to upload what it lost.
    repair: bool,
    /// Objects to upload, in walk order (pass 2).
    content: Vec<Pending>,
    batch: Vec<Pending>,
    batch_bytes: u64,
    tx: &'a mpsc::SyncSender<FinishedPack>,
    failure: &'a Mutex<Option<Error>>,
    report: &'a mut PushReport,
    /// Objects of the current snapshot that are not stored locally.
    missing: Vec<[u8; 32]>,
    progress: &'a dyn Progress,
}

impl Walker<'_> {
    fn known(&self, id: &[u8; 32]) -> bool {
        self.index.contains(id) || self.queued.contains(id)
    }

    fn snapshot(&mut self, s: &Snapshot) -> Result<()> {
        self.tree::<Leaf, Meta>(s.record.root, s)?;
        self.tree::<History, ()>(s.record.archive, s)
    }

    /// Walk one tree and everything below it (each tree once per push),
    /// queueing what the remote lacks.
    fn tree<L: TreeLeaf, D: DeserializeOwned>(&mut self, root: TreeId, s: &Snapshot) -> Result<()> {
        let mut stack: Vec<(TreeId, Vec<u8>)> = vec![(root, Vec::new())];
        while let Some((id, dir)) = stack.pop() {
            if !self.walked.insert(id) {
                continue;
            }
            let (stored, t) = tree::load_tree_stored::<L, D>(self.local, &id)?;
            let mut children = Vec::new();
            for n in &t.entries {
                let p = join(&dir, &n.name);
                if let Some(l) = &n.leaf {
                    let mut refs = Vec::new();
                    l.object_refs(&mut |o, size, role| refs.push((o, size, role)));
                    for (o, size, role) in refs {
                        self.object(o, size, &p, role, s)?;
                    }
                }
                if let Some((child, _)) = &n.dir {
                    children.push((*child, p));
                }
            }
            // Depth first in name order: the order the packs hold, and a
            // restore reads.
            children.reverse();
            stack.extend(children);
            let blob = self.remote.tree_blob(&id.0);
            if !self.known(&blob) {
                let sealed = pack::seal_blob(
                    self.remote.key(),
                    BlobKind::Tree,
                    blob,
                    Some(id.0 .0),
                    &stored,
                    false,
                )
                .map_err(|e| super::repo::format_error(self.remote.url(), "new tree blob", e))?;
                self.queued.insert(blob);
                self.add(sealed)?;
            }
        }
        Ok(())
    }

    fn object(
        &mut self,
        o: ObjectId,
        size: u64,
        path: &[u8],
        role: RefRole,
        s: &Snapshot,
    ) -> Result<()> {
        let blob = self.remote.object_blob(&o);
        if self.queued.contains(&blob) {
            return Ok(());
        }
        // Repairing: a chunked object whose list is there may have lost
        // chunks with a pack; cut it again, uploading only those.
        let relist = self.index.contains(&blob);
        if relist && !(self.repair && self.remote.chunks_missing(&blob)?) {
            return Ok(());
        }
        if !self.local.has(StoreKind::Object, &o.0) {
            let shown = shown_path(path, role);
            self.missing.push(o.0 .0);
            self.report.missing.push(MissingContent {
                snapshot: s.id.short(),
                path: shown,
                object: o.to_hex(),
            });
            return Ok(());
        }
        self.queued.insert(blob);
        self.content.push(Pending {
            id: o,
            size,
            path: path.to_vec(),
            blob,
            list_known: relist,
        });
        Ok(())
    }

    /// Read, check and seal one object the remote lacks: small ones in
    /// parallel batches, large ones chunk by chunk.
    fn upload(&mut self, p: Pending) -> Result<()> {
        if p.size < self.remote.config().chunker.whole_below {
            self.batch_bytes += p.size;
            self.batch.push(p);
            if self.batch_bytes >= BATCH_BYTES {
                self.flush_batch()?;
            }
            Ok(())
        } else {
            self.large(p.id, p.blob, p.list_known)
        }
    }

    /// Read, check and seal the batched small objects in parallel, then
    /// pack them in walk order.
    fn flush_batch(&mut self) -> Result<()> {
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let (local, remote) = (self.local, self.remote);
        let sealed: Vec<Result<Option<SealedBlob>>> = batch
            .par_iter()
            .map(|p| {
                let loc = local.locate(StoreKind::Object, &p.id.0);
                let mut c = match local.open_object(&p.id) {
                    Ok(c) => c,
                    Err(_) if !local.has(StoreKind::Object, &p.id.0) => {
                        vanished(&loc, &p.path);
                        return Ok(None);
                    }
                    Err(e) => return Err(e),
                };
                let mut buf = Vec::with_capacity(p.size as usize);
                c.read_to_end(&mut buf).map_err(|e| Error::io("read", &loc, e))?;
                if hash_bytes(local.algo(), &buf) != p.id.0 {
                    tracing::error!(
                        "object {} (for {}) does not hash to its name: not pushed; run `trove verify`",
                        loc.display(),
                        crate::pathbytes::display(&p.path)
                    );
                    return Ok(None);
                }
                let id = remote.object_blob(&p.id);
                pack::seal_blob(remote.key(), BlobKind::Data, id, Some(p.id.0 .0), &buf, true)
                    .map(Some)
                    .map_err(|e| super::repo::format_error(remote.url(), "new blob", e))
            })
            .collect();
        for (p, s) in batch.iter().zip(sealed) {
            match s? {
                Some(b) => {
                    self.report.bytes_read += p.size;
                    self.progress.advance(1, p.size);
                    self.add(b)?;
                }
                None => self.missing.push(p.id.0 .0),
            }
        }
        Ok(())
    }

    /// A large object: cut into chunks, each a data blob unless the
    /// remote has it, then its chunk list (a tree-pack blob).
    fn large(&mut self, o: ObjectId, blob: [u8; 32], list_known: bool) -> Result<()> {
        let loc = self.local.locate(StoreKind::Object, &o.0);
        let mut c = match self.local.open_object(&o) {
            Ok(c) => c,
            Err(_) if !self.local.has(StoreKind::Object, &o.0) => {
                vanished(&loc, &[]);
                self.queued.remove(&blob);
                self.missing.push(o.0 .0);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let params = self.remote.config().chunker;
        let mut hasher = Hasher::new(self.local.algo());
        let mut list = ChunkList {
            object: o.0 .0,
            size: 0,
            chunks: Vec::new(),
        };
        let remote = self.remote;
        let key = remote.key();
        chunk::chunks(&params, &mut c, &mut |bytes: &[u8]| -> std::result::Result<
            (),
            CutError,
        > {
            hasher.update(bytes);
            list.size += bytes.len() as u64;
            let id = key.id(Domain::Chunk, bytes);
            list.chunks.push(id);
            self.report.bytes_read += bytes.len() as u64;
            self.progress.advance(0, bytes.len() as u64);
            if !self.known(&id) {
                let sealed = pack::seal_blob(key, BlobKind::Data, id, None, bytes, true)
                    .map_err(|e| super::repo::format_error(remote.url(), "new blob", e))?;
                self.queued.insert(id);
                self.add(sealed)?;
            }
            Ok(())
        })
        .map_err(|e| match e {
            CutError::Read(source) => Error::io("read", &loc, source),
            CutError::Other(e) => e,
        })?;
        self.progress.advance(1, 0);
        if hasher.finish() != o.0 {
            tracing::error!(
                "object {} does not hash to its name: not pushed; run `trove verify`",
                loc.display()
            );
            self.queued.remove(&blob);
            self.missing.push(o.0 .0);
            return Ok(());
        }
        if list_known {
            return Ok(());
        }
        let sealed = pack::seal_blob(
            key,
            BlobKind::List,
            blob,
            Some(o.0 .0),
            &pack::encode_list(&list),
            true,
        )
        .map_err(|e| super::repo::format_error(self.remote.url(), "new chunk list", e))?;
        self.add(sealed)
    }

    /// Put a sealed blob in its pack; a full pack goes to the uploaders.
    fn add(&mut self, b: SealedBlob) -> Result<()> {
        self.report.blobs += 1;
        self.report.blob_bytes += b.bytes.len() as u64;
        let target = self.remote.config().pack_size;
        let w = match b.kind {
            BlobKind::Data => &mut self.data,
            BlobKind::List | BlobKind::Tree => &mut self.trees,
        };
        w.push(b);
        if w.len() >= target {
            let kind = w.kind();
            let full = std::mem::replace(w, PackWriter::with_capacity(kind, self.capacity));
            self.send(full)?;
        }
        Ok(())
    }

    fn send(&mut self, w: PackWriter) -> Result<()> {
        if w.is_empty() {
            return Ok(());
        }
        let p = w
            .finish(self.remote.key())
            .map_err(|e| super::repo::format_error(self.remote.url(), "new pack", e))?;
        if let Some(e) = self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            return Err(e);
        }
        self.tx
            .send(p)
            .map_err(|_| Error::Internal("the pack uploaders stopped".into()))
    }

    fn finish_packs(&mut self) -> Result<()> {
        let d = std::mem::replace(&mut self.data, PackWriter::new(PackKind::Data));
        self.send(d)?;
        let t = std::mem::replace(&mut self.trees, PackWriter::new(PackKind::Tree));
        self.send(t)
    }
}

/// A pack's buffer: the target, one more blob (a chunk of at most the
/// chunker's maximum, or a small object) and room for the header.
pub(crate) fn pack_capacity(remote: &RemoteRepo) -> usize {
    let c = remote.config();
    let blob = u64::from(c.chunker.max).max(c.chunker.whole_below) + 64;
    (c.pack_size + blob + (1 << 20)) as usize
}

/// Why cutting a large object stopped: its reading failed, or storing a
/// chunk did.
enum CutError {
    Read(std::io::Error),
    Other(Error),
}

impl From<std::io::Error> for CutError {
    fn from(e: std::io::Error) -> CutError {
        CutError::Read(e)
    }
}

impl From<Error> for CutError {
    fn from(e: Error) -> CutError {
        CutError::Other(e)
    }
}

/// The path a reference stands for in the browsable tree, for messages:
/// the file, `versions/PATH/vN.bak` or `_deleted/PATH`.
pub(super) fn shown_path(path: &[u8], role: RefRole) -> String {
    let p = crate::pathbytes::display(path);
    match role {
        RefRole::Current => p,
        RefRole::Version(n) => format!("versions/{p}/v{n}.bak"),
        RefRole::Deleted => format!("_deleted/{p}"),
    }
}

pub(super) fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}
