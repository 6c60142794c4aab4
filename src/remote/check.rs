//! Verify a remote: its structure always (index files readable, every
//! indexed pack present at its indexed size, every snapshot's trees and
//! content listed), its data when asked (packs downloaded, their names and
//! every blob's authentication and content id checked: a whole object
//! against its content id, a chunk against its keyed id, a tree against
//! its tree id). The data read is every pack (`--read-data`), a sample
//! (`--sample`), or a subset (`--read-data-subset`: a name-based slice, a
//! share or a size, chosen in [`super::subset`]). On a remote with an
//! object lock period, the retention of every needed object is read and
//! the locks ending within half the period are reported ([`super::locks`]).
//!
//! Everything is read from the remote, never from the local cache (as
//! `restic check` does by default): an object the remote lost or damaged
//! must be found even where the cache holds a good copy.

use super::backend::RequestStats;
use super::pack::{self, BlobKind};
use super::repo::{pack_path, RemoteRepo};
use super::subset::{self, Subset};
use crate::error::Result;
use crate::hash::hash_bytes;
use crate::id::ObjectId;
use crate::progress::Progress;
use crate::verify::{self, ProblemKind, VerifyOptions, VerifyProblem, VerifyReport};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Download every pack and check every blob.
    pub read_data: bool,
    /// Download this share of the packs (chosen by `seed`).
    pub sample_percent: Option<f64>,
    /// Download the packs this subset selects.
    pub subset: Option<Subset>,
    /// The seed of `sample_percent` or of a random `subset` (a share or a
    /// size); a fresh one when `None`.
    pub seed: Option<u64>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RemoteVerifyReport {
    pub remote: String,
    /// The snapshots, trees and content they reference (as `trove verify`).
    #[serde(flatten)]
    pub store: VerifyReport,
    pub index_files: u64,
    pub packs: u64,
    pub pack_bytes: u64,
    /// Packs no index or pending file lists (a killed push's; the next
    /// push adopts them).
    pub unindexed_packs: u64,
    /// Packs a prune took out of the index, waiting for a later prune to
    /// delete them (not damage).
    pub pending_packs: u64,
    /// The `--read-data-subset` spec (`2/30`, `5%`, `2G`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    pub packs_read: u64,
    /// The bytes of the packs read (each downloaded whole).
    pub bytes_read: u64,
    /// The names (hex) of the packs read, sorted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub packs_read_names: Vec<String>,
    pub blobs_checked: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// On a remote with an object lock period: the needed objects whose
    /// lock ends within half the period (a warning: `trove remote
    /// extend-locks` mends it; not counted as a problem).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<super::locks::LockCheck>,
    pub requests: RequestStats,
}

pub fn run(
    remote: &RemoteRepo,
    opts: &CheckOptions,
    progress: &dyn Progress,
) -> Result<RemoteVerifyReport> {
    remote.bypass_cache();
    let mut problems: Vec<VerifyProblem> = Vec::new();
    let problem = VerifyProblem::new;
    let mut report = RemoteVerifyReport {
        remote: remote.url().to_string(),
        ..RemoteVerifyReport::default()
    };
    // 1. Index files.
    let files = remote.index_files()?;
    report.index_files = files.len() as u64;
    for f in &files {
        if let Err(e) = remote.read_index_file(f) {
            problems.push(problem(
                ProblemKind::Index,
                f.path.clone(),
                format!("{e} (`trove push --repair` indexes its packs again from their headers)"),
            ));
        }
    }
    // 2. Packs: present, at the indexed size.
    let index = remote.index()?;
    let listed = remote.list_packs()?;
    let stored: std::collections::HashMap<[u8; 32], u64> =
        listed.iter().map(|(_, n, l)| (*n, l.size)).collect();
    report.packs = index.packs().len() as u64;
    for p in index.packs() {
        let path = pack_path(p.kind, &p.name);
        match stored.get(&p.name) {
            None => problems.push(problem(
                ProblemKind::Pack,
                path,
                format!(
                    "missing pack: an index lists it but the remote {} does not hold it; the content in it is lost from the remote (`trove push --repair` from a repository that still holds it uploads it again)",
                    remote.url()
                ),
            )),
            Some(&size) if size != p.len => problems.push(problem(
                ProblemKind::Pack,
                path,
                format!("truncated or altered pack: {size} bytes where the index says {}", p.len),
            )),
            Some(&size) => report.pack_bytes += size,
        }
    }
    let pending = remote.pending_packs()?;
    report.unindexed_packs = listed
        .iter()
        .filter(|(_, n, _)| !index.has_pack(n) && !pending.contains(n))
        .count() as u64;
    report.pending_packs = listed
        .iter()
        .filter(|(_, n, _)| !index.has_pack(n) && pending.contains(n))
        .count() as u64;
    // 3. Snapshots, trees and the content they reference: the local
    //    verify's walk, over the remote (sizes from the index, no data read).
    let store_opts = VerifyOptions {
        quick: true,
        sample_percent: None,
        seed: None,
    };
    let sc = verify::check_store(remote, &store_opts, progress)?;
    report.store = sc.report;
    problems.append(&mut report.store.problems);
    // 4. Data: whole packs downloaded and every blob checked.
    if opts.read_data || opts.sample_percent.is_some() || opts.subset.is_some() {
        let random = opts.sample_percent.is_some() || opts.subset.is_some_and(|s| s.is_random());
        let seed = random.then(|| opts.seed.unwrap_or_else(verify::random_seed));
        report.seed = seed;
        report.subset = opts.subset.map(|s| s.to_string());
        // The packs that can be read: those missing or of the wrong size
        // are named above already.
        let readable: Vec<_> = index
            .packs()
            .iter()
            .filter(|p| stored.get(&p.name) == Some(&p.len))
            .cloned()
            .collect();
        let chosen: Vec<_> = match (opts.subset, opts.sample_percent, seed) {
            (Some(sub), _, s) => subset::select(&readable, &sub, s.unwrap_or(0)),
            (None, Some(pct), Some(s)) => readable
                .into_iter()
                .filter(|p| verify::sampled(s, &ObjectId(crate::id::Digest(p.name)), pct))
                .collect(),
            _ => readable,
        };
        let total: u64 = chosen.iter().map(|p| p.len).sum();
        progress.phase("packs", chosen.len() as u64, total);
        // Each pack's blobs, in offset order (one pass over the index).
        let mut by_pack: HashMap<[u8; 32], Vec<super::pack::BlobEntry>> = HashMap::new();
        for (pi, e) in index.blobs_sorted() {
            by_pack.entry(pi.name).or_default().push(e.clone());
        }
        let found: Mutex<Vec<VerifyProblem>> = Mutex::new(Vec::new());
        let blobs = std::sync::atomic::AtomicU64::new(0);
        // Two packs at a time: each is held whole while it is checked.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build();
        let work = || {
            chosen.par_iter().try_for_each(|p| -> Result<()> {
                let (n, bad) = check_pack(remote, p, &by_pack)?;
                blobs.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                found.lock().unwrap_or_else(|e| e.into_inner()).extend(bad);
                progress.advance(1, p.len);
                Ok(())
            })
        };
        match pool {
            Ok(pool) => pool.install(work)?,
            Err(_) => work()?,
        }
        progress.finish();
        report.packs_read = chosen.len() as u64;
        report.bytes_read = total;
        let mut names: Vec<String> = chosen
            .iter()
            .map(|p| crate::id::Digest(p.name).to_hex())
            .collect();
        names.sort();
        report.packs_read_names = names;
        report.blobs_checked = blobs.into_inner();
        let mut bad = found.into_inner().unwrap_or_else(|e| e.into_inner());
        bad.sort_by(|a, b| a.subject.cmp(&b.subject));
        problems.extend(bad);
    }
    // 5. Locks: one HEAD per needed object, on a locked remote only.
    report.object_lock = super::locks::check(remote, progress)?;
    report.store.problems = problems;
    report.requests = remote.backend().stats();
    Ok(report)
}

/// Download one pack and check it: its name, its header against the
/// index, and every blob it holds.
fn check_pack(
    remote: &RemoteRepo,
    p: &super::index::PackInfo,
    by_pack: &HashMap<[u8; 32], Vec<super::pack::BlobEntry>>,
) -> Result<(u64, Vec<VerifyProblem>)> {
    let path = pack_path(p.kind, &p.name);
    let bytes = remote
        .backend()
        .get(&path)
        .map_err(|e| super::repo::backend_error(remote.url(), format!("read {path}"), e))?;
    let mut out = Vec::new();
    let mut bad = |kind: ProblemKind, subject: String, message: String| {
        out.push(VerifyProblem::new(kind, subject, message))
    };
    if *blake3::hash(&bytes).as_bytes() != p.name {
        bad(
            ProblemKind::Pack,
            path.clone(),
            "corrupt pack: its bytes do not hash to its name (damaged in storage); the blobs below name what is affected".into(),
        );
    }
    let key = remote.key();
    let algo = crate::repo::RepoRead::algo(remote);
    let mut checked = 0u64;
    // The blobs the index places in this pack.
    let listed: &[super::pack::BlobEntry] = by_pack.get(&p.name).map_or(&[], Vec::as_slice);
    // The pack's own header must list what the index says it holds.
    let n = bytes.len() as u64;
    let header = (n >= pack::TRAILER_LEN)
        .then(|| bytes.get((n - pack::TRAILER_LEN) as usize..))
        .flatten()
        .ok_or_else(|| "shorter than its trailer".to_string())
        .and_then(|t| pack::header_span(n, t).map_err(|e| e.to_string()))
        .and_then(|(off, len)| {
            let sealed = bytes
                .get(off as usize..(off + len) as usize)
                .unwrap_or_default();
            pack::decode_header(key, sealed, off).map_err(|e| e.to_string())
        });
    match header {
        // Every blob the index places here is in the header, at the same
        // place (a blob stored twice is indexed at its first pack only).
        Ok((_, entries))
            if {
                let here: HashMap<[u8; 32], &super::pack::BlobEntry> =
                    entries.iter().map(|e| (e.id, e)).collect();
                listed.iter().all(|e| {
                    here.get(&e.id).is_some_and(|h| {
                        (h.kind, h.offset, h.stored_len, h.raw_len, h.compressed)
                            == (e.kind, e.offset, e.stored_len, e.raw_len, e.compressed)
                    })
                })
            } => {}
        Ok(_) => bad(
            ProblemKind::Pack,
            path.clone(),
            "its header lists other blobs than the index does (`trove push --repair` indexes packs from their own headers)".into(),
        ),
        Err(e) => bad(ProblemKind::Pack, path.clone(), format!("corrupt pack header: {e}")),
    }
    for e in listed {
        checked += 1;
        let start = e.offset as usize;
        let end = start + e.stored_len as usize;
        let subject = match e.orig {
            Some(o) => crate::id::Digest(o).to_hex(),
            None => format!("chunk {}", &crate::id::Digest(e.id).to_hex()[..16]),
        };
        let Some(stored) = bytes.get(start..end) else {
            bad(
                ProblemKind::Pack,
                path.clone(),
                format!("truncated pack: ends before {subject}"),
            );
            continue;
        };
        let plain = match pack::open_blob(key, e, stored) {
            Ok(b) => b,
            Err(err) => {
                bad(
                    corrupt(e.kind),
                    subject,
                    format!("corrupt blob in {path} at offset {}: {err}", e.offset),
                );
                continue;
            }
        };
        let ok = match (e.kind, e.orig) {
            (BlobKind::Data, Some(o)) => hash_bytes(algo, &plain).0 == o,
            (BlobKind::Data, None) => key.id(super::crypto::Domain::Chunk, &plain) == e.id,
            (BlobKind::List, _) => pack::decode_list(&plain).is_ok(),
            (BlobKind::Tree, Some(o)) => {
                crate::repo::tree::unframe_tree(&plain, std::path::Path::new(&path))
                    .is_ok_and(|t| hash_bytes(algo, &t.payload).0 == o)
            }
            (BlobKind::Tree, None) => false,
        };
        if !ok {
            bad(
                corrupt(e.kind),
                subject,
                format!(
                    "blob in {path} at offset {} does not match its id",
                    e.offset
                ),
            );
        }
    }
    Ok((checked, out))
}

/// The problem a damaged blob of `kind` is.
fn corrupt(kind: BlobKind) -> ProblemKind {
    if kind == BlobKind::Tree {
        ProblemKind::CorruptTree
    } else {
        ProblemKind::CorruptObject
    }
}
