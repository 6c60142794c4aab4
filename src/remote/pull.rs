//! Pull: copy every snapshot a local repository lacks from the remote into
//! it — the trees and records byte for byte (so snapshot and tree ids are
//! the originals), the content re-assembled and checked against its
//! content id before it is stored. The caller rebuilds the browsable tree
//! afterwards.
//!
//! Order on the local disk, per snapshot: content and trees are queued
//! and made durable (the writer's commit), then the snapshot record is
//! written. A pull killed at any point leaves whole snapshots only; the
//! next pull copies what is still missing.

use super::repo::RemoteRepo;
use crate::error::{Error, Result};
use crate::id::{ObjectId, TreeId};
use crate::model::{History, Leaf, Meta};
use crate::progress::Progress;
use crate::repo::snapshot::{self, Snapshot};
use crate::repo::tree::{self, TreeLeaf};
use crate::repo::{RepoRead, RepoWrite, StoreKind};
use serde::de::DeserializeOwned;
use std::collections::HashSet;

/// Content a pulled snapshot references that the remote does not hold
/// (it was gone locally when the snapshot was pushed).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Absent {
    pub snapshot: String,
    pub path: String,
    pub object: String,
}

/// What a pull did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PullReport {
    pub remote: String,
    /// Snapshots copied, oldest first (short ids).
    pub pulled: Vec<String>,
    /// Snapshots the local repository already had.
    pub already: usize,
    /// Remote snapshot commits that could not be read.
    pub skipped: Vec<String>,
    pub trees: u64,
    pub objects: u64,
    /// Content bytes written locally.
    pub bytes: u64,
    pub absent: Vec<Absent>,
    pub requests: super::backend::RequestStats,
}

/// Copy every remote snapshot `local` lacks, oldest first.
pub fn run(
    remote: &RemoteRepo,
    local: &dyn RepoWrite,
    progress: &dyn Progress,
) -> Result<PullReport> {
    let reader = local.reader();
    let mut report = PullReport {
        remote: remote.url().to_string(),
        ..PullReport::default()
    };
    if reader.algo() != remote.algo() {
        return Err(Error::Usage(format!(
            "remote {} holds {} content ids, but the repository uses {}: pull into a new folder",
            remote.url(),
            remote.algo().name(),
            reader.algo().name()
        )));
    }
    let scan = snapshot::scan(remote)?;
    for d in &scan.damaged {
        tracing::error!("not pulled: {}", d.error);
        report.skipped.push(d.id.short());
    }
    let todo: Vec<&Snapshot> = scan
        .snapshots
        .iter()
        .filter(|s| !reader.has_snapshot(&s.id))
        .collect();
    report.already = scan.snapshots.len() - todo.len();
    let mut copier = Copier {
        remote,
        local,
        walked: HashSet::new(),
        done: HashSet::new(),
        wanted: Vec::new(),
        report: &mut report,
        progress,
    };
    for s in todo {
        let absent: HashSet<[u8; 32]> = remote
            .commit(&s.id)?
            .map(|c| c.missing.into_iter().collect())
            .unwrap_or_default();
        copier.tree::<Leaf, Meta>(s.record.root, s, &absent)?;
        copier.tree::<History, ()>(s.record.archive, s, &absent)?;
        copier.objects()?;
        // Everything the record references is durable before the record.
        local.commit()?;
        let record = remote
            .read_snapshot(&s.id)
            .map_err(|e| Error::io("read", remote.locate_snapshot(&s.id), e))?;
        local.write_snapshot(&s.id, &record)?;
        local.sync_snapshots()?;
        copier.report.pulled.push(s.id.short());
    }
    progress.finish();
    report.requests = remote.backend().stats();
    Ok(report)
}

struct Copier<'a> {
    remote: &'a RemoteRepo,
    local: &'a dyn RepoWrite,
    walked: HashSet<TreeId>,
    /// Objects stored (or found absent) by this pull.
    done: HashSet<ObjectId>,
    /// Objects of the current snapshot to copy, in walk order.
    wanted: Vec<(ObjectId, u64)>,
    report: &'a mut PullReport,
    progress: &'a dyn Progress,
}

impl Copier<'_> {
    /// Copy one tree and the trees below it (each once per pull), noting
    /// the objects they reference.
    fn tree<L: TreeLeaf, D: DeserializeOwned>(
        &mut self,
        root: TreeId,
        s: &Snapshot,
        absent: &HashSet<[u8; 32]>,
    ) -> Result<()> {
        let mut stack: Vec<(TreeId, Vec<u8>)> = vec![(root, Vec::new())];
        let reader = self.local.reader();
        while let Some((id, dir)) = stack.pop() {
            if !self.walked.insert(id) {
                continue;
            }
            let (stored, t) = tree::load_tree_stored::<L, D>(self.remote, &id)?;
            let mut children = Vec::new();
            for n in &t.entries {
                let p = super::push::join(&dir, &n.name);
                if let Some(l) = &n.leaf {
                    let mut refs = Vec::new();
                    l.object_refs(&mut |o, size, role| refs.push((o, size, role)));
                    for (o, size, role) in refs {
                        if self.done.contains(&o) || reader.has(StoreKind::Object, &o.0) {
                            continue;
                        }
                        if absent.contains(&o.0 .0) || !self.remote.has(StoreKind::Object, &o.0) {
                            self.done.insert(o);
                            self.report.absent.push(Absent {
                                snapshot: s.id.short(),
                                path: super::push::shown_path(&p, role),
                                object: o.to_hex(),
                            });
                            continue;
                        }
                        self.done.insert(o);
                        self.wanted.push((o, size));
                    }
                }
                if let Some((child, _)) = &n.dir {
                    children.push((*child, p));
                }
            }
            children.reverse();
            stack.extend(children);
            let mut bytes = Some(stored);
            if self.local.put_with(StoreKind::Tree, id.0, &mut || {
                Ok(bytes.take().unwrap_or_default())
            })? {
                self.report.trees += 1;
            }
        }
        Ok(())
    }

    /// Copy the objects noted so far, in the order the remote plans its
    /// reads by.
    fn objects(&mut self) -> Result<()> {
        let mut wanted = std::mem::take(&mut self.wanted);
        // Front to back through each pack.
        wanted.sort_by_cached_key(|(o, _)| self.remote.read_order(o));
        let total: u64 = wanted.iter().map(|w| w.1).sum();
        self.progress.phase("pull", wanted.len() as u64, total);
        let ids: Vec<ObjectId> = wanted.iter().map(|w| w.0).collect();
        self.remote.will_read(&ids);
        for (o, size) in wanted {
            let what = self.remote.locate(StoreKind::Object, &o.0);
            let mut c = self.remote.open_object(&o)?;
            if self.local.put_object_from(&o, &mut c, &what)? {
                self.report.objects += 1;
                self.report.bytes += size;
            }
            self.progress.advance(1, size);
        }
        Ok(())
    }
}
