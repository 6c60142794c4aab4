//! `trove verify`: prove the repository can give back what it promises.
//!
//! 1. Every snapshot record decodes.
//! 2. Every tree reachable from a record exists, decodes and hashes to its
//!    id (each tree is read once, however many snapshots share it).
//! 3. Every object those trees name exists with the recorded size and (not
//!    with `--quick`) hashes to its name; `--sample` re-hashes a random,
//!    reported share of them.
//! 4. The browsable tree at the backup root shows the latest snapshot:
//!    no entry missing, extra, of the wrong kind or content, and every file
//!    a hardlink of its object unless the filesystem refuses one.
//!
//! Nothing is repaired here: a problem is named (object or path, and the
//! snapshots it affects) and the exit code says so. `materialize` repairs
//! the browsable tree (and a damaged object from a good copy found there);
//! `backup --rehash` stores a missing or damaged object again from the
//! source.

use crate::browse::{self, BrowsableEntry, BrowsableKind};
use crate::error::{Error, Result};
use crate::id::{ObjectId, SnapshotId, TreeId};
use crate::materialize;
use crate::pathbytes::{self, display as show};
use crate::progress::Progress;
use crate::store::snapshot::{self, Snapshot};
use crate::store::tree::{self, History, Leaf, Meta, RefRole, TreeObject, MAX_DEPTH};
use crate::store::{objects, Repo};
use rayon::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Check existence and sizes only, do not re-hash objects.
    pub quick: bool,
    /// Re-hash only this percentage of the objects (chosen at random).
    pub sample_percent: Option<f64>,
    /// Seed for the sample (random when not given).
    pub seed: Option<u64>,
}

/// What kind of thing is wrong. Printed (human and JSON) as the words in
/// the serde names, which scripts and the integration tests match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ProblemKind {
    /// A snapshot record that cannot be read or decoded.
    #[serde(rename = "snapshot")]
    Snapshot,
    #[serde(rename = "missing tree")]
    MissingTree,
    #[serde(rename = "corrupt tree")]
    CorruptTree,
    #[serde(rename = "missing object")]
    MissingObject,
    #[serde(rename = "corrupt object")]
    CorruptObject,
    /// An object whose size is not the one its snapshots record.
    #[serde(rename = "object size")]
    ObjectSize,
    /// The browsable tree differs from what the latest snapshot renders to.
    #[serde(rename = "browsable")]
    Browsable,
}

impl ProblemKind {
    /// The words printed for this kind (the same as its JSON string).
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Snapshot => "snapshot",
            ProblemKind::MissingTree => "missing tree",
            ProblemKind::CorruptTree => "corrupt tree",
            ProblemKind::MissingObject => "missing object",
            ProblemKind::CorruptObject => "corrupt object",
            ProblemKind::ObjectSize => "object size",
            ProblemKind::Browsable => "browsable",
        }
    }
}

impl std::fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing wrong, with what it affects.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyProblem {
    pub kind: ProblemKind,
    /// The object or tree id, or the path (snapshot record, browsable entry).
    pub subject: String,
    pub message: String,
    /// Short ids of the snapshots affected.
    pub snapshots: Vec<String>,
    /// Paths in those snapshots that use the damaged object (at most
    /// [`MAX_PATHS`], see `paths_total`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(skip_serializing_if = "is_zero")]
    pub paths_total: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How many affected paths a problem lists.
pub const MAX_PATHS: usize = 20;

#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub percent: f64,
    pub seed: u64,
    pub objects: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    pub snapshots: u64,
    pub trees: u64,
    /// Distinct objects the snapshots reference.
    pub objects: u64,
    pub object_bytes: u64,
    /// Objects whose bytes were hashed again.
    pub objects_hashed: u64,
    pub bytes_hashed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<Sample>,
    /// Snapshots whose content must be complete: the latest, and those a
    /// keep policy retains (`.trove/pinned`).
    pub pinned_snapshots: u64,
    /// Missing objects that only unpinned snapshots referenced: removed by
    /// retention (expected, not a problem; restoring such a snapshot names
    /// the paths).
    pub unpinned_missing: u64,
    /// Objects no snapshot references (space `prune` can give back).
    pub unreferenced_objects: u64,
    pub unreferenced_bytes: u64,
    /// Entries of the browsable tree checked (0 without snapshots).
    pub browsable_entries: u64,
    pub problems: Vec<VerifyProblem>,
}

/// A set of (object, size) built by appending: sorted and deduplicated
/// whenever it doubles, so it costs 40 bytes per distinct object, not a
/// hash table's two or three times that.
#[derive(Default)]
struct RefSet {
    v: Vec<(ObjectId, u64)>,
    compact_at: usize,
}

impl RefSet {
    fn insert(&mut self, id: ObjectId, size: u64) {
        self.v.push((id, size));
        if self.v.len() >= self.compact_at {
            self.compact();
            self.compact_at = (self.v.len() * 2).max(1 << 16);
        }
    }

    fn compact(&mut self) {
        self.v.sort_unstable_by_key(|(id, _)| *id);
        self.v.dedup_by_key(|(id, _)| *id);
    }

    /// Sorted by id; only valid right after `compact`.
    fn contains(&self, id: &ObjectId) -> bool {
        self.v.binary_search_by_key(id, |(x, _)| *x).is_ok()
    }
}

/// Walks trees once each, remembering which problems lie below each one so
/// that every snapshot sharing a damaged subtree is named.
struct TreeWalk<'r> {
    repo: &'r Repo,
    below: HashMap<TreeId, Vec<usize>>,
    objects: RefSet,
    /// Objects only unpinned snapshots reference: retention may have
    /// removed them on purpose (see `gc`).
    optional: RefSet,
    /// Walking an unpinned snapshot's trees.
    in_expired: bool,
    problems: Vec<VerifyProblem>,
    /// Per tree visited: how many entries it expands to (saturating), so
    /// a tree reusing subtrees is measured without being expanded.
    sizes: HashMap<TreeId, u64>,
}

impl TreeWalk<'_> {
    fn visit<L: tree::TreeLeaf, D: DeserializeOwned>(
        &mut self,
        id: &TreeId,
        depth: usize,
    ) -> Vec<usize> {
        if let Some(v) = self.below.get(id) {
            return v.clone();
        }
        let mut bad = Vec::new();
        let mut size: u64 = 0;
        let loaded = if depth > MAX_DEPTH {
            Err(Error::corrupt(
                "tree object",
                self.repo.tree_path(id),
                "nested deeper than any real tree",
            ))
        } else {
            tree::load_tree::<L, D>(self.repo, id)
        };
        match loaded {
            Ok(TreeObject { entries }) => {
                for n in entries {
                    size = size.saturating_add(1);
                    if let Some(l) = &n.leaf {
                        l.object_refs(&mut |oid, size, _| {
                            if !self.in_expired {
                                self.objects.insert(oid, size);
                            } else if !self.objects.contains(&oid) {
                                self.optional.insert(oid, size);
                            }
                        });
                    }
                    if let Some((child, _)) = &n.dir {
                        for i in self.visit::<L, D>(child, depth + 1) {
                            if !bad.contains(&i) {
                                bad.push(i);
                            }
                        }
                        let below = self.sizes.get(child).copied().unwrap_or(0);
                        size = size.saturating_add(below);
                    }
                }
            }
            Err(e) => {
                let kind = if matches!(e, Error::Missing { .. }) {
                    ProblemKind::MissingTree
                } else {
                    ProblemKind::CorruptTree
                };
                bad.push(self.problems.len());
                self.problems.push(VerifyProblem {
                    kind,
                    subject: id.to_hex(),
                    message: e.to_string(),
                    snapshots: Vec::new(),
                    paths: Vec::new(),
                    paths_total: 0,
                });
            }
        }
        self.below.insert(*id, bad.clone());
        self.sizes.insert(*id, size);
        bad
    }
}

/// (device, inode) of a stored object.
type DevIno = (u64, u64);

/// Which objects are bad, and why.
struct BadObject {
    kind: ProblemKind,
    message: String,
}

/// Deterministic pseudo-random choice of an object for the sample.
fn sampled(seed: u64, id: &ObjectId, percent: f64) -> bool {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(&id.0 .0);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.finalize().as_bytes()[..8]);
    let x = u64::from_le_bytes(b) as f64 / u64::MAX as f64;
    x * 100.0 < percent
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(crate::store::now_ns());
    h.finish()
}

/// What verify advises for a damaged object: both repairs that exist.
const REPAIR: &str = "`trove backup --rehash` stores it again from the source, `trove materialize` from a good copy in the browsable tree";

/// Check one object: present, right size, and (when `hash`) right bytes.
/// Returns its (device, inode) when present, for the browsable-tree check.
fn check_object(
    repo: &Repo,
    id: &ObjectId,
    size: u64,
    hash: bool,
) -> (Option<(u64, u64)>, Option<BadObject>) {
    let p = repo.object_path(id);
    // One open and fstat per object, hashed or not: path lookups are most
    // of the cost for small objects.
    let f = match objects::open_object(&p) {
        Ok(f) => f,
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            let bad = BadObject {
                kind: ProblemKind::MissingObject,
                message: format!(
                    "{} is not in the store (`trove backup --rehash` stores it again from the source)",
                    p.display()
                ),
            };
            return (None, Some(bad));
        }
        Err(Error::Corrupt { msg, .. }) => {
            let bad = BadObject {
                kind: ProblemKind::CorruptObject,
                message: format!("{}: {msg} ({REPAIR})", p.display()),
            };
            return (None, Some(bad));
        }
        Err(e) => {
            let bad = BadObject {
                kind: ProblemKind::MissingObject,
                message: format!("cannot open {}: {e}", p.display()),
            };
            return (None, Some(bad));
        }
    };
    let m = match f.metadata() {
        Ok(m) => m,
        Err(e) => {
            let bad = BadObject {
                kind: ProblemKind::MissingObject,
                message: format!("cannot stat {}: {e}", p.display()),
            };
            return (None, Some(bad));
        }
    };
    let here = Some((m.dev(), m.ino()));
    if m.len() != size {
        let bad = BadObject {
            kind: ProblemKind::ObjectSize,
            message: format!(
                "{} has {} bytes, the snapshots recorded {size}",
                p.display(),
                m.len()
            ),
        };
        return (here, Some(bad));
    }
    if !hash {
        return (here, None);
    }
    let bad = match objects::hash_open_file(repo.algo(), f, m.len(), &p) {
        Ok(d) if d == id.0 => None,
        Ok(d) => Some(BadObject {
            kind: ProblemKind::CorruptObject,
            message: format!(
                "{}: its bytes hash to {}, not to its name (silent corruption; {REPAIR})",
                p.display(),
                d.to_hex()
            ),
        }),
        Err(e) => Some(BadObject {
            kind: ProblemKind::CorruptObject,
            message: format!("cannot read it: {e}"),
        }),
    };
    (here, bad)
}

/// For each bad object, the (snapshot, path) pairs using it. Each tree is
/// searched once; snapshots sharing it reuse the result.
fn locate(
    repo: &Repo,
    snaps: &[Snapshot],
    bad: &HashSet<ObjectId>,
) -> HashMap<ObjectId, (Vec<String>, Vec<String>, u64)> {
    /// The uses of bad objects below one tree: up to MAX_PATHS paths per
    /// object, and how many uses in all. Bounded whatever the tree: one
    /// reusing a subtree at every level (hostile) has exponentially many
    /// paths, which are counted, not listed.
    #[derive(Clone, Default)]
    struct Hits {
        shown: Vec<(Vec<u8>, ObjectId)>,
        counts: HashMap<ObjectId, u64>,
    }
    impl Hits {
        fn add(&mut self, p: Vec<u8>, oid: ObjectId, n: u64) {
            let c = self.counts.entry(oid).or_default();
            *c = c.saturating_add(n);
            if self.shown.iter().filter(|(_, o)| *o == oid).count() < MAX_PATHS {
                self.shown.push((p, oid));
            }
        }
    }
    fn search<L: tree::TreeLeaf, D: DeserializeOwned>(
        repo: &Repo,
        id: &TreeId,
        bad: &HashSet<ObjectId>,
        memo: &mut HashMap<TreeId, Hits>,
        depth: usize,
        archive: bool,
    ) -> Hits {
        if let Some(h) = memo.get(id) {
            return h.clone();
        }
        let mut hits = Hits::default();
        if depth <= MAX_DEPTH {
            if let Ok(t) = tree::load_tree::<L, D>(repo, id) {
                for n in t.entries {
                    if let Some(l) = &n.leaf {
                        l.object_refs(&mut |oid, _, w| {
                            if bad.contains(&oid) {
                                let p = match (archive, w) {
                                    (true, RefRole::Version(v)) => browse::version_path(&n.name, v),
                                    (true, RefRole::Deleted) => browse::deleted_path(&n.name),
                                    _ => n.name.clone(),
                                };
                                hits.add(p, oid, 1);
                            }
                        });
                    }
                    if let Some((child, _)) = &n.dir {
                        let below = search::<L, D>(repo, child, bad, memo, depth + 1, archive);
                        for (p, oid) in below.shown {
                            // Archive paths carry their prefix inside the
                            // version/deleted path: splice the dir name in.
                            let full = if archive {
                                splice_archive(&n.name, &p)
                            } else {
                                pathbytes::join(&n.name, &p)
                            };
                            hits.add(full, oid, 0);
                        }
                        for (oid, c) in below.counts {
                            let e = hits.counts.entry(oid).or_default();
                            *e = e.saturating_add(c);
                        }
                    }
                }
            }
        }
        memo.insert(*id, hits.clone());
        hits
    }
    let mut out: HashMap<ObjectId, (Vec<String>, Vec<String>, u64)> = HashMap::new();
    let mut memo_src: HashMap<TreeId, Hits> = HashMap::new();
    let mut memo_arc: HashMap<TreeId, Hits> = HashMap::new();
    for s in snaps {
        let src = search::<Leaf, Meta>(repo, &s.record.root, bad, &mut memo_src, 0, false);
        let arc = search::<History, ()>(repo, &s.record.archive, bad, &mut memo_arc, 0, true);
        let short = s.id.short();
        for h in [&src, &arc] {
            for (oid, c) in &h.counts {
                let e = out.entry(*oid).or_default();
                if !e.0.contains(&short) {
                    e.0.push(short.clone());
                }
                e.2 = e.2.saturating_add(*c);
            }
            for (p, oid) in &h.shown {
                let e = out.entry(*oid).or_default();
                if e.1.len() < MAX_PATHS {
                    e.1.push(format!("{} ({short})", show(p)));
                }
            }
        }
    }
    out
}

/// `versions/<p>/vN.bak` or `_deleted/<p>` found in directory `dir`:
/// the same with `dir/` put in front of `<p>`.
fn splice_archive(dir: &[u8], p: &[u8]) -> Vec<u8> {
    for prefix in [&b"versions/"[..], &b"_deleted/"[..]] {
        if let Some(rest) = p.strip_prefix(prefix) {
            let mut v = prefix.to_vec();
            v.extend_from_slice(&pathbytes::join(dir, rest));
            return v;
        }
    }
    pathbytes::join(dir, p)
}

pub fn run(repo: &Repo, opts: &VerifyOptions, progress: &dyn Progress) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let scan = snapshot::scan(repo)?;
    // With a record that may be newer than every readable one damaged,
    // the browsable tree's snapshot is unknown: it is not compared with an
    // older one (the damaged record is the problem named).
    let latest_known = scan.latest().is_ok();
    let bad_records: Vec<Error> = scan.damaged.into_iter().map(|d| d.error).collect();
    let snaps = scan.snapshots;
    let mut problems = Vec::new();
    for e in bad_records {
        let subject = match &e {
            Error::Corrupt { path, .. } | Error::Version { path, .. } => {
                pathbytes::display_path(path)
            }
            Error::Io { path, .. } => pathbytes::display_path(path),
            _ => "snapshot record".to_string(),
        };
        problems.push(VerifyProblem {
            kind: ProblemKind::Snapshot,
            subject,
            message: e.to_string(),
            snapshots: Vec::new(),
            paths: Vec::new(),
            paths_total: 0,
        });
    }
    report.snapshots = snaps.len() as u64;

    // Trees.
    progress.phase("trees", snaps.len() as u64, 0);
    let mut walk = TreeWalk {
        repo,
        below: HashMap::new(),
        objects: RefSet::default(),
        optional: RefSet::default(),
        in_expired: false,
        problems: Vec::new(),
        sizes: HashMap::new(),
    };
    // Required content: everything the pinned snapshots reference (the
    // latest, and those a keep policy retains). Other snapshots' content
    // may have been removed by retention (SPEC §7). Required trees are
    // walked first, so a tree shared with an unpinned snapshot counts as
    // required.
    let extra_pins = crate::gc::pinned(repo);
    let latest_id = snaps.last().map(|s| s.id);
    let is_pinned = |s: &Snapshot| crate::gc::keeps_content(&s.id, latest_id.as_ref(), &extra_pins);
    report.pinned_snapshots = snaps.iter().filter(|s| is_pinned(s)).count() as u64;
    let mut bad_of: Vec<Vec<usize>> = vec![Vec::new(); snaps.len()];
    for optional_pass in [false, true] {
        walk.in_expired = optional_pass;
        // The required set is complete (and sorted) before the optional
        // walk asks it.
        walk.objects.compact();
        for (i, s) in snaps.iter().enumerate() {
            if is_pinned(s) != optional_pass {
                bad_of[i].extend(walk.visit::<Leaf, Meta>(&s.record.root, 0));
                bad_of[i].extend(walk.visit::<History, ()>(&s.record.archive, 0));
            }
            if optional_pass {
                progress.advance(1, 0);
            }
        }
    }
    // A source tree that expands to more entries than its record counts
    // reuses subtrees (hostile or damaged): every reader would refuse it,
    // so it is named here, from the per-tree sizes, without expanding it.
    let mut hostile: HashSet<SnapshotId> = HashSet::new();
    for s in &snaps {
        let size = walk.sizes.get(&s.record.root).copied().unwrap_or(0);
        if let tree::Limit::Entries(n) = tree::Limit::source(&s.record) {
            if size > n {
                hostile.insert(s.id);
                walk.problems.push(VerifyProblem {
                    kind: ProblemKind::CorruptTree,
                    subject: s.record.root.to_hex(),
                    message: format!(
                        "snapshot {}'s source tree {} expands to {size} entries, but its record counts {}: its folders reuse one subtree over and over (a hostile or damaged repository); readers refuse to expand it. Restore from another snapshot (`trove snapshots` lists them)",
                        s.id.short(),
                        repo.tree_path(&s.record.root).display(),
                        s.record.summary.files + s.record.summary.dirs + s.record.summary.symlinks,
                    ),
                    snapshots: vec![s.id.short()],
                    paths: Vec::new(),
                    paths_total: 0,
                });
            }
        }
    }
    for (i, mut bad) in bad_of.into_iter().enumerate() {
        bad.sort_unstable();
        bad.dedup();
        for p in bad {
            walk.problems[p].snapshots.push(snaps[i].id.short());
        }
    }
    progress.finish();
    report.trees = walk.below.len() as u64;
    crate::log::mem_phase("trees walked");
    problems.append(&mut walk.problems);

    // Objects: the required ones, and those only unpinned snapshots name.
    walk.optional.compact();
    let required = walk.objects;
    let optional: Vec<ObjectId> = walk
        .optional
        .v
        .iter()
        .filter(|(id, _)| !required.contains(id))
        .map(|(id, _)| *id)
        .collect();
    let is_optional = |id: &ObjectId| optional.binary_search(id).is_ok();
    let mut objs: Vec<(ObjectId, u64)> = required.v;
    objs.extend(
        walk.optional
            .v
            .into_iter()
            .filter(|(id, _)| is_optional(id)),
    );
    objs.sort_unstable_by_key(|(id, _)| *id);
    objs.shrink_to_fit();
    report.objects = objs.len() as u64;
    report.object_bytes = objs.iter().map(|(_, s)| s).sum();
    let sample = opts.sample_percent.map(|p| Sample {
        percent: p,
        seed: opts.seed.unwrap_or_else(random_seed),
        objects: 0,
    });
    let hash_it = |id: &ObjectId| -> bool {
        if opts.quick {
            return false;
        }
        match &sample {
            Some(s) => sampled(s.seed, id, s.percent),
            None => true,
        }
    };
    let to_hash: u64 = objs
        .iter()
        .filter(|(id, _)| hash_it(id))
        .map(|(_, s)| s)
        .sum();
    progress.phase("objects", objs.len() as u64, to_hash);
    let hashed = Mutex::new((0u64, 0u64));
    let bad_found: Mutex<Vec<(ObjectId, BadObject)>> = Mutex::new(Vec::new());
    // In the order of `objs` (sorted by id): the inode of each one.
    let at: Vec<Option<DevIno>> = objs
        .par_iter()
        .map(|(id, size)| {
            let h = hash_it(id);
            let (here, r) = check_object(repo, id, *size, h);
            if h && here.is_some() {
                let mut g = hashed.lock().unwrap_or_else(|p| p.into_inner());
                g.0 += 1;
                g.1 += size;
                progress.advance(1, *size);
            } else {
                progress.advance(1, 0);
            }
            if let Some(b) = r {
                bad_found
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((*id, b));
            }
            here
        })
        .collect();
    progress.finish();
    crate::log::mem_phase("objects checked");
    let inodes = Inodes { objs: &objs, at };
    let mut bad: Vec<(ObjectId, BadObject)> = Vec::new();
    for (id, b) in bad_found.into_inner().unwrap_or_else(|p| p.into_inner()) {
        if b.kind == ProblemKind::MissingObject && is_optional(&id) {
            report.unpinned_missing += 1;
        } else {
            bad.push((id, b));
        }
    }
    bad.sort_by_key(|(id, _)| *id);
    let (n_hashed, b_hashed) = hashed.into_inner().unwrap_or_else(|p| p.into_inner());
    report.objects_hashed = n_hashed;
    report.bytes_hashed = b_hashed;
    report.sample = sample.map(|mut s| {
        s.objects = n_hashed;
        s
    });
    if !bad.is_empty() {
        let set: HashSet<ObjectId> = bad.iter().map(|(id, _)| *id).collect();
        let mut located = locate(repo, &snaps, &set);
        for (id, b) in bad {
            let (snapshots, paths, total) = located.remove(&id).unwrap_or_default();
            problems.push(VerifyProblem {
                kind: b.kind,
                subject: id.to_hex(),
                message: b.message,
                snapshots,
                paths,
                paths_total: total,
            });
        }
    }
    report.objects -= report.unpinned_missing;
    report.object_bytes = inodes.present_bytes();
    (report.unreferenced_objects, report.unreferenced_bytes) = unreferenced_objects(repo, &inodes)?;

    // The browsable tree.
    if let Some(latest) = snaps
        .last()
        .filter(|l| latest_known && !hostile.contains(&l.id))
    {
        // A snapshot whose trees are damaged has its problems named above;
        // one that expands past its limit (an archive tree reusing a
        // subtree) is named here, where its expansion stopped.
        let expansion = |e: Error| -> Result<VerifyProblem> {
            match e {
                Error::Expansion { path, msg } => Ok(VerifyProblem {
                    kind: ProblemKind::CorruptTree,
                    subject: pathbytes::display_path(&path),
                    message: format!("snapshot {}: {msg}", latest.id.short()),
                    snapshots: vec![latest.id.short()],
                    paths: Vec::new(),
                    paths_total: 0,
                }),
                e => Err(e),
            }
        };
        match materialize::LazyRender::new(repo, &latest.record) {
            Ok(Some(mut render)) => {
                match check_browsable_lazily(repo, latest, &mut render, &inodes, progress) {
                    Ok((found, n)) => {
                        report.browsable_entries = n;
                        problems.extend(found);
                    }
                    Err(e) => problems.push(expansion(e)?),
                }
            }
            Err(e @ Error::Expansion { .. }) => problems.push(expansion(e)?),
            _ => match crate::backup::load_snapshot(repo, &latest.record) {
                Ok((entries, archive)) => {
                    // The listing is not needed past its rendering: free it
                    // before the tree is checked (a large share of the memory).
                    let desired = browse::render(&entries, &archive);
                    drop((entries, archive));
                    crate::log::mem_phase("tree rendered");
                    report.browsable_entries = desired.len() as u64;
                    problems.extend(check_browsable(repo, latest, &desired, &inodes, progress)?);
                }
                Err(e @ Error::Expansion { .. }) => problems.push(expansion(e)?),
                Err(_) => {}
            },
        }
    }
    crate::log::mem_phase("browsable checked");
    report.problems = problems;
    Ok(report)
}

/// Where each referenced object is in the store (device, inode), or None
/// where it is missing: a list beside the id-sorted `objs`, found by binary
/// search (a hash map of a million objects took about 100 MiB).
struct Inodes<'a> {
    objs: &'a [(ObjectId, u64)],
    at: Vec<Option<DevIno>>,
}

impl Inodes<'_> {
    fn index(&self, id: &ObjectId) -> Option<usize> {
        self.objs.binary_search_by_key(id, |(x, _)| *x).ok()
    }

    fn get(&self, id: &ObjectId) -> Option<DevIno> {
        self.index(id)
            .and_then(|i| self.at.get(i).copied().flatten())
    }

    fn referenced(&self, id: &ObjectId) -> bool {
        self.index(id).is_some()
    }

    /// Bytes of the referenced objects that are present.
    fn present_bytes(&self) -> u64 {
        self.objs
            .iter()
            .zip(&self.at)
            .filter(|(_, here)| here.is_some())
            .map(|((_, size), _)| size)
            .sum()
    }
}

/// Count objects in the store that no snapshot references.
fn unreferenced_objects(repo: &Repo, inodes: &Inodes<'_>) -> Result<(u64, u64)> {
    let (mut n, mut bytes) = (0, 0);
    objects::for_each_stored(repo, crate::store::StoreKind::Object, &mut |d| {
        let id = ObjectId(d);
        if !inodes.referenced(&id) {
            n += 1;
            bytes += fs::metadata(repo.object_path(&id))
                .map(|m| m.len())
                .unwrap_or(0);
        }
    })?;
    Ok((n, bytes))
}

/// A name in a folder of the browsable tree, and whether it is a folder.
type DiskName = (Vec<u8>, bool);

/// The browsable tree on disk in path order: each folder listed (sorted)
/// when the walk enters it; `skip` keeps it out of the last folder named.
struct DiskWalk {
    root: std::path::PathBuf,
    stack: Vec<(Vec<u8>, std::vec::IntoIter<DiskName>)>,
    enter: Option<Vec<u8>>,
}

impl DiskWalk {
    fn list(&mut self, rel: Vec<u8>) -> Result<()> {
        let names = materialize::browsable_names(&self.root, &rel)?;
        self.stack.push((rel, names.into_iter()));
        Ok(())
    }

    fn new(root: &Path) -> Result<DiskWalk> {
        let mut w = DiskWalk {
            root: root.to_path_buf(),
            stack: Vec::new(),
            enter: None,
        };
        w.list(Vec::new())?;
        Ok(w)
    }

    /// Do not walk into the folder `next` just returned.
    fn skip(&mut self) {
        self.enter = None;
    }

    #[allow(clippy::should_implement_trait)] // fallible: Result<Option<_>>
    fn next(&mut self) -> Result<Option<(Vec<u8>, bool)>> {
        if let Some(d) = self.enter.take() {
            self.list(d)?;
        }
        while let Some((rel, names)) = self.stack.last_mut() {
            match names.next() {
                Some((name, is_dir)) => {
                    let p = pathbytes::join(rel, &name);
                    if is_dir {
                        self.enter = Some(p.clone());
                    }
                    return Ok(Some((p, is_dir)));
                }
                None => {
                    self.stack.pop();
                }
            }
        }
        Ok(None)
    }
}

/// Entries checked in parallel per step of the lazy browsable check.
const CHECK_RUN: usize = 8192;

/// The serial half of the lazy browsable check: renders the next entries,
/// checks the implicit folders above them, and walks the disk alongside
/// to find what the rendering lacks.
struct Producer<'a, 'r> {
    repo: &'a Repo,
    render: &'a mut materialize::LazyRender<'r>,
    disk: DiskWalk,
    disk_next: Option<(Vec<u8>, bool)>,
    /// Folders on the current path: listed ones, and implicit ones checked.
    open: Vec<Vec<u8>>,
    problems: Vec<(Vec<u8>, String)>,
    entries: u64,
}

impl Producer<'_, '_> {
    /// A path the rendering wants (in path order): everything on disk
    /// before it is extra.
    fn want(&mut self, q: &[u8]) -> Result<()> {
        while let Some((d, _)) = &self.disk_next {
            match pathbytes::cmp_paths(d, q) {
                std::cmp::Ordering::Less => {
                    self.problems.push((d.clone(), extra_message().into()));
                    self.disk.skip();
                    self.disk_next = self.disk.next()?;
                }
                std::cmp::Ordering::Equal => {
                    self.disk_next = self.disk.next()?;
                    break;
                }
                std::cmp::Ordering::Greater => break,
            }
        }
        Ok(())
    }

    /// Up to [`CHECK_RUN`] entries into `run` (empty at the end).
    fn produce(&mut self, run: &mut Vec<BrowsableEntry>) -> Result<()> {
        run.clear();
        while run.len() < CHECK_RUN {
            let Some(e) = self.render.next()? else {
                // The rest of the disk is extra.
                while let Some((d, _)) = self.disk_next.take() {
                    self.problems.push((d, extra_message().into()));
                    self.disk.skip();
                    self.disk_next = self.disk.next()?;
                }
                return Ok(());
            };
            self.entries += 1;
            while self
                .open
                .last()
                .is_some_and(|d| !pathbytes::is_under(&e.path, d))
            {
                self.open.pop();
            }
            // Folders above `e` with no entry of their own.
            let from = self.open.last().map_or(0, |d| d.len() + 1);
            for k in from..e.path.len() {
                if e.path[k] == b'/' {
                    let p = e.path[..k].to_vec();
                    if let Some(m) = implicit_folder_problem(self.repo, &p) {
                        self.problems.push((p.clone(), m));
                    }
                    self.want(&p)?;
                    self.open.push(p);
                }
            }
            self.want(&e.path)?;
            if matches!(e.kind, BrowsableKind::Dir) {
                self.open.push(e.path.clone());
            }
            run.push(e);
        }
        Ok(())
    }
}

/// [`check_browsable`] over a lazy rendering: the next entries are
/// rendered (and the disk walked alongside for entries the snapshot lacks)
/// while the previous ones are checked in parallel. Returns the problems
/// and the number of rendered entries.
fn check_browsable_lazily(
    repo: &Repo,
    latest: &Snapshot,
    render: &mut materialize::LazyRender<'_>,
    inodes: &Inodes<'_>,
    progress: &dyn Progress,
) -> Result<(Vec<VerifyProblem>, u64)> {
    let mut out = marker_problem(repo, latest).into_iter().collect::<Vec<_>>();
    let s = &latest.record.summary;
    progress.phase("browsable tree", s.files + s.dirs + s.symlinks, 0);
    let mut disk = DiskWalk::new(&repo.root)?;
    let disk_next = disk.next()?;
    let mut p = Producer {
        repo,
        render,
        disk,
        disk_next,
        open: Vec::new(),
        problems: Vec::new(),
        entries: 0,
    };
    let mut checking: Vec<BrowsableEntry> = Vec::with_capacity(CHECK_RUN);
    let mut next: Vec<BrowsableEntry> = Vec::with_capacity(CHECK_RUN);
    let mut entry_problems: Vec<(Vec<u8>, String)> = Vec::new();
    p.produce(&mut checking)?;
    while !checking.is_empty() {
        let (found, produced) = rayon::join(
            || {
                checking
                    .par_iter()
                    .filter_map(|e| check_entry(repo, e, inodes).map(|m| (e.path.clone(), m)))
                    .collect::<Vec<_>>()
            },
            || p.produce(&mut next),
        );
        produced?;
        progress.advance(checking.len() as u64, 0);
        entry_problems.extend(found);
        std::mem::swap(&mut checking, &mut next);
    }
    progress.finish();
    entry_problems.append(&mut p.problems);
    entry_problems.sort_by(|a, b| pathbytes::cmp_paths(&a.0, &b.0));
    out.extend(
        entry_problems
            .into_iter()
            .map(|(p, m)| browsable_problem(repo, latest, &p, m)),
    );
    Ok((out, p.entries))
}

fn browsable_problem(
    repo: &Repo,
    latest: &Snapshot,
    path: &[u8],
    message: String,
) -> VerifyProblem {
    VerifyProblem {
        kind: ProblemKind::Browsable,
        subject: pathbytes::display_path(&pathbytes::to_fs(&repo.root, path)),
        message,
        snapshots: vec![latest.id.short()],
        paths: Vec::new(),
        paths_total: 0,
    }
}

/// The browsable tree does not record showing `latest`.
fn marker_problem(repo: &Repo, latest: &Snapshot) -> Option<VerifyProblem> {
    let short = latest.id.short();
    (repo.read_marker() != Some(latest.id)).then(|| {
        browsable_problem(
            repo,
            latest,
            b"",
            format!(
                "the browsable tree does not record showing the latest snapshot {short}; `trove materialize` brings it up to date"
            ),
        )
    })
}

fn extra_message() -> &'static str {
    "not part of the latest snapshot (trove did not put it here): move it elsewhere, or `trove materialize --prune-extra` moves it to .trove/quarantine/"
}

/// A folder with no entry of its own (`versions/`, `versions/<path>/`,
/// `_deleted/…`): an lstat of an entry below it would follow a symlink put
/// in its place, so it is checked itself.
fn implicit_folder_problem(repo: &Repo, p: &[u8]) -> Option<String> {
    let fp = pathbytes::to_fs(&repo.root, p);
    match fs::symlink_metadata(&fp) {
        Ok(m) if m.is_dir() => None,
        Ok(m) => Some(format!(
            "should be a directory but is {}: `trove materialize` repairs it",
            if m.file_type().is_symlink() {
                "a symlink"
            } else {
                "a file"
            }
        )),
        Err(_) => None, // its entries are reported missing
    }
}

/// Compare the browsable tree on disk with the rendering of `latest`.
fn check_browsable(
    repo: &Repo,
    latest: &Snapshot,
    desired: &[BrowsableEntry],
    inodes: &Inodes<'_>,
    progress: &dyn Progress,
) -> Result<Vec<VerifyProblem>> {
    let mk = |path: &[u8], message: String| browsable_problem(repo, latest, path, message);
    let mut out: Vec<VerifyProblem> = marker_problem(repo, latest).into_iter().collect();
    progress.phase("browsable tree", desired.len() as u64, 0);
    let mut entry_problems: Vec<(Vec<u8>, String)> = desired
        .par_iter()
        .filter_map(|e| {
            progress.advance(1, 0);
            check_entry(repo, e, inodes).map(|m| (e.path.clone(), m))
        })
        .collect();
    progress.finish();
    // Folders with no entry of their own (`versions/`, `versions/<path>/`,
    // `_deleted/…`): an lstat of an entry below them would follow a
    // symlink put in their place, so check each one itself.
    // (Problems are sorted by path below, so the set's order is not seen.)
    let sets = materialize::PathSets::of(desired);
    let implicit = sets.ancestors.iter().filter(|p| !sets.listed.contains(*p));
    for &p in implicit {
        if let Some(m) = implicit_folder_problem(repo, p) {
            entry_problems.push((p.to_vec(), m));
        }
    }
    for p in materialize::extra_paths_in(&repo.root, &sets)? {
        entry_problems.push((p, extra_message().into()));
    }
    entry_problems.sort_by(|a, b| pathbytes::cmp_paths(&a.0, &b.0));
    out.extend(entry_problems.into_iter().map(|(p, m)| mk(&p, m)));
    Ok(out)
}

/// Whether a hardlink of the object at `obj` could be made on device
/// `dev` now (a copy is only correct when it could not: another
/// filesystem, the link limit reached, or no hardlinks at all). Asked of
/// the filesystem (`fpathconf(_PC_LINK_MAX)`), so verify writes nothing.
fn link_possible(obj: &Path, dev: u64) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(f) = objects::open_object(obj) else {
        return false;
    };
    let Ok(m) = f.metadata() else {
        return false;
    };
    if m.dev() != dev {
        return false;
    }
    // SAFETY: `f` is an open descriptor for the duration of the call.
    #[allow(unsafe_code)]
    let max = unsafe { libc::fpathconf(f.as_raw_fd(), libc::_PC_LINK_MAX) };
    // -1: no limit (or unknown): a link is possible.
    max < 0 || (m.nlink() as i64) < max as i64
}

fn check_entry(repo: &Repo, e: &BrowsableEntry, inodes: &Inodes<'_>) -> Option<String> {
    let p = pathbytes::to_fs(&repo.root, &e.path);
    let m = match fs::symlink_metadata(&p) {
        Ok(m) => m,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Some("missing: `trove materialize` puts it back".into())
        }
        Err(err) => return Some(format!("cannot stat: {err}")),
    };
    let kind_of = |m: &fs::Metadata| {
        if m.is_dir() {
            "a directory"
        } else if m.file_type().is_symlink() {
            "a symlink"
        } else if m.is_file() {
            "a file"
        } else {
            "a special file"
        }
    };
    match &e.kind {
        BrowsableKind::Dir => (!m.is_dir()).then(|| {
            format!(
                "should be a directory but is {}: `trove materialize` repairs it",
                kind_of(&m)
            )
        }),
        BrowsableKind::Symlink { target } => {
            if !m.file_type().is_symlink() {
                return Some(format!("should be a symlink but is {}", kind_of(&m)));
            }
            match fs::read_link(&p) {
                Ok(t) if pathbytes::os_bytes(t.as_os_str()) == target.as_slice() => None,
                Ok(t) => Some(format!(
                    "symlink points to {}, the snapshot says {}",
                    pathbytes::display_path(&t),
                    show(target)
                )),
                Err(err) => Some(format!("cannot read symlink: {err}")),
            }
        }
        BrowsableKind::File { id, size } => {
            if !m.is_file() {
                return Some(format!("should be a file but is {}", kind_of(&m)));
            }
            if m.len() != *size {
                return Some(format!(
                    "wrong content: {} bytes, the snapshot has {size} (modified in place?): `trove materialize` replaces it",
                    m.len()
                ));
            }
            if *size == 0 {
                return None;
            }
            if inodes.get(id) == Some((m.dev(), m.ino())) {
                return None;
            }
            let obj = repo.object_path(id);
            match objects::hash_object(repo.algo(), &p) {
                Ok(d) if d == id.0 => {
                    link_possible(&obj, m.dev()).then(|| {
                        "a copy, not a hardlink of its object (content is right): `trove materialize` relinks it".to_string()
                    })
                }
                Ok(_) => Some(format!(
                    "wrong content: its bytes do not match object {}: `trove materialize` replaces it",
                    id.short()
                )),
                Err(err) => Some(format!("cannot read: {err}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ProblemKind;

    /// The JSON string and the printed words of each kind are the ones
    /// scripts match on: they must not drift apart or change.
    #[test]
    fn problem_kinds_print_and_serialize_as_before() {
        let kinds = [
            (ProblemKind::Snapshot, "snapshot"),
            (ProblemKind::MissingTree, "missing tree"),
            (ProblemKind::CorruptTree, "corrupt tree"),
            (ProblemKind::MissingObject, "missing object"),
            (ProblemKind::CorruptObject, "corrupt object"),
            (ProblemKind::ObjectSize, "object size"),
            (ProblemKind::Browsable, "browsable"),
        ];
        for (kind, words) in kinds {
            assert_eq!(kind.to_string(), words);
            assert_eq!(
                serde_json::to_value(kind).ok(),
                Some(serde_json::Value::String(words.into()))
            );
        }
    }
}
