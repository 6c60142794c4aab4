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

use crate::browsable::apply;
use crate::browsable::check::{self, DevIno, Flags, Inodes, ObjectList, Places};
use crate::browsable::render;
use crate::error::{Error, Result};
use crate::id::{ObjectId, SnapshotId, TreeId};
use crate::local::LocalRepo;
use crate::model::{History, Leaf, Meta};
use crate::pathbytes::{self, display as show};
use crate::progress::Progress;
use crate::repo::snapshot::{self, Snapshot};
use crate::repo::tree::{self, RefRole, TreeObject, MAX_DEPTH};
use crate::repo::{RepoRead, StoreKind};
use rayon::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::io;
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
    /// A remote's pack: missing, of the wrong size, or not what its name says.
    #[serde(rename = "pack")]
    Pack,
    /// A remote's index file that cannot be read.
    #[serde(rename = "index")]
    Index,
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
            ProblemKind::Pack => "pack",
            ProblemKind::Index => "index",
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
    #[serde(skip_serializing_if = "crate::model::is_zero")]
    pub paths_total: u64,
}

impl VerifyProblem {
    /// A problem that names no snapshot or path (yet).
    pub fn new(kind: ProblemKind, subject: String, message: String) -> VerifyProblem {
        VerifyProblem {
            kind,
            subject,
            message,
            snapshots: Vec::new(),
            paths: Vec::new(),
            paths_total: 0,
        }
    }
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
/// whenever it doubles, so it costs 36 bytes per distinct object (sizes
/// narrowed as [`ObjectList`] keeps them, the big ones apart), not a hash
/// table's two or three times that.
#[derive(Default)]
struct RefSet {
    v: Vec<(ObjectId, u32)>,
    /// True sizes of the objects whose narrow size is `BIG` (unsorted,
    /// perhaps repeated; few).
    big: Vec<(ObjectId, u64)>,
    compact_at: usize,
}

impl RefSet {
    fn push(&mut self, id: ObjectId, size: u64) {
        let (narrow, big) = check::narrow_size(size);
        if big {
            self.big.push((id, size));
        }
        self.v.push((id, narrow));
    }

    fn insert(&mut self, id: ObjectId, size: u64) {
        self.push(id, size);
        if self.v.len() >= self.compact_at {
            self.compact();
            self.compact_at = (self.v.len() * 2).max(1 << 16);
        }
    }

    fn compact(&mut self) {
        // On every core: at three million objects the sorts were a third
        // of the tree walk, which otherwise runs on one.
        self.v.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.v.dedup_by_key(|(id, _)| *id);
    }

    /// `insert`, keeping out what `exclude` (compacted) holds. The check
    /// is made when the set compacts, as one merge of two sorted lists: a
    /// binary search per entry of every old tree was a fifth of a quick
    /// verify's time.
    fn insert_excluding(&mut self, id: ObjectId, size: u64, exclude: &RefSet) {
        self.push(id, size);
        if self.v.len() >= self.compact_at {
            self.compact_excluding(exclude);
            self.compact_at = (self.v.len() * 2).max(1 << 16);
        }
    }

    fn compact_excluding(&mut self, exclude: &RefSet) {
        self.compact();
        let mut ex = exclude.v.iter().map(|(id, _)| id).peekable();
        self.v.retain(|(id, _)| {
            while ex.next_if(|x| *x < id).is_some() {}
            ex.peek() != Some(&id)
        });
    }
}

/// Subtrees of one tree read ahead of the walk at a time, in parallel.
const READ_AHEAD_TREES: usize = 32;

/// Walks trees once each, remembering which problems lie below each one so
/// that every snapshot sharing a damaged subtree is named.
struct TreeWalk<'r> {
    repo: &'r dyn RepoRead,
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
    fn load<L, D>(&self, id: &TreeId, depth: usize) -> Result<TreeObject<L, D>>
    where
        L: tree::TreeLeaf,
        D: DeserializeOwned,
    {
        if depth > MAX_DEPTH {
            return Err(Error::corrupt(
                "tree object",
                self.repo.locate(StoreKind::Tree, &id.0),
                "nested deeper than any real tree",
            ));
        }
        tree::load_tree::<L, D>(self.repo, id)
    }

    fn visit<L, D>(&mut self, id: &TreeId, depth: usize) -> Vec<usize>
    where
        L: tree::TreeLeaf + Send,
        D: DeserializeOwned + Send,
    {
        if let Some(v) = self.below.get(id) {
            return v.clone();
        }
        let loaded = self.load::<L, D>(id, depth);
        self.visit_loaded(id, depth, loaded)
    }

    /// `visit` with the tree already read. A tree's subtrees not seen yet
    /// are read, checked and decoded on every core before they are walked
    /// one by one (reading is most of the walk; the bookkeeping is not
    /// shared between threads).
    fn visit_loaded<L, D>(
        &mut self,
        id: &TreeId,
        depth: usize,
        loaded: Result<TreeObject<L, D>>,
    ) -> Vec<usize>
    where
        L: tree::TreeLeaf + Send,
        D: DeserializeOwned + Send,
    {
        let mut bad = Vec::new();
        let mut size: u64 = 0;
        match loaded {
            Ok(TreeObject { entries }) => {
                // Subtrees in walking order, read ahead a batch at a time
                // (a folder of many thousand subfolders is not held whole).
                let subtrees: Vec<TreeId> = entries
                    .iter()
                    .filter_map(|n| n.dir.as_ref().map(|(c, _)| *c))
                    .collect();
                let mut k = 0;
                let mut read: HashMap<TreeId, Result<TreeObject<L, D>>> = HashMap::new();
                for n in entries {
                    size = size.saturating_add(1);
                    if let Some(l) = &n.leaf {
                        l.object_refs(&mut |oid, size, _| {
                            if !self.in_expired {
                                self.objects.insert(oid, size);
                            } else {
                                self.optional.insert_excluding(oid, size, &self.objects);
                            }
                        });
                    }
                    if let Some((child, _)) = &n.dir {
                        if !read.contains_key(child) && !self.below.contains_key(child) {
                            let mut batch: Vec<TreeId> = subtrees[k..]
                                .iter()
                                .take(READ_AHEAD_TREES)
                                .filter(|c| !self.below.contains_key(c) && !read.contains_key(c))
                                .copied()
                                .collect();
                            batch.sort_unstable();
                            batch.dedup();
                            let this = &*self;
                            let got: Vec<_> = batch
                                .par_iter()
                                .map(|c| (*c, this.load::<L, D>(c, depth + 1)))
                                .collect();
                            read.extend(got);
                        }
                        k += 1;
                        let below = match read.remove(child) {
                            Some(t) if !self.below.contains_key(child) => {
                                self.visit_loaded::<L, D>(child, depth + 1, t)
                            }
                            _ => self.visit::<L, D>(child, depth + 1),
                        };
                        for i in below {
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

/// Which objects are bad, and why.
struct BadObject {
    kind: ProblemKind,
    message: String,
}

/// Deterministic pseudo-random choice of an object for the sample.
pub(crate) fn sampled(seed: u64, id: &ObjectId, percent: f64) -> bool {
    let x = sample_rank(seed, &id.0 .0) as f64 / u64::MAX as f64;
    x * 100.0 < percent
}

/// The seeded pseudo-random rank of a name: `--sample` takes the names
/// ranked below its share, `--read-data-subset P%|SIZE` the lowest ranks.
pub(crate) fn sample_rank(seed: u64, name: &[u8; 32]) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(name);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(b)
}

pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(crate::model::now_ns());
    h.finish()
}

/// What verify advises for a damaged object: both repairs that exist.
const REPAIR: &str = "`trove backup --rehash` stores it again from the source, `trove materialize` from a good copy in the browsable tree";

/// Check one object: present, right size, and (when `hash`) right bytes.
/// Returns its (device, inode) when present, for the browsable-tree check.
fn check_object(
    repo: &dyn RepoRead,
    id: &ObjectId,
    size: u64,
    hash: bool,
) -> (Option<(u64, u64)>, Option<BadObject>) {
    let p = repo.locate(StoreKind::Object, &id.0);
    // One open and fstat per object, hashed or not: path lookups are most
    // of the cost for small objects.
    let f = match repo.open_object(id) {
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
    let (len, inode) = match f.stat() {
        Ok(s) => s,
        Err(e) => {
            let bad = BadObject {
                kind: ProblemKind::MissingObject,
                message: format!("cannot stat {}: {e}", p.display()),
            };
            return (None, Some(bad));
        }
    };
    // Present. A store without inodes (in memory) has no browsable tree
    // linking to it: (0, 0) stands for "present" there.
    let here = Some(inode.unwrap_or((0, 0)));
    if len != size {
        let bad = BadObject {
            kind: ProblemKind::ObjectSize,
            message: format!(
                "{} has {} bytes, the snapshots recorded {size}",
                p.display(),
                len
            ),
        };
        return (here, Some(bad));
    }
    if !hash {
        return (here, None);
    }
    let bad = match crate::hash::hash_reader(repo.algo(), f, len, &p) {
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
    repo: &dyn RepoRead,
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
        repo: &dyn RepoRead,
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
                                    (true, RefRole::Version(v)) => render::version_path(&n.name, v),
                                    (true, RefRole::Deleted) => render::deleted_path(&n.name),
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

/// What the check of the store found, before the browsable tree is
/// compared with it.
pub struct StoreCheck {
    pub report: VerifyReport,
    /// Every readable snapshot, oldest first.
    pub snapshots: Vec<Snapshot>,
    /// Whether the latest snapshot is known (no damaged record may be newer).
    latest_known: bool,
    /// Snapshots whose source tree expands past its record's count.
    hostile: HashSet<SnapshotId>,
    /// Every referenced object (sorted by id) with its recorded size, and
    /// beside it where it is in the store.
    objs: ObjectList,
    at: Places,
    /// Objects found bad so far (missing ones of unpinned snapshots
    /// included: `finish_objects` tells them apart).
    bad: Vec<(ObjectId, BadObject)>,
    /// Objects only unpinned snapshots reference, sorted.
    optional: Vec<ObjectId>,
    /// Beside `objs`: placed by a listing, size not yet proven (empty
    /// when nothing waits).
    unproven: Flags,
    /// Unreferenced objects and bytes, when a listing already counted them.
    unreferenced: Option<(u64, u64)>,
}

/// Check everything the repository holds: records, trees, objects (steps
/// 1–3). Works on any repository behind the boundary.
pub fn check_store(
    repo: &dyn RepoRead,
    opts: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<StoreCheck> {
    let mut sc = gather_store(repo, opts, progress, false)?;
    finish_objects(repo, &mut sc)?;
    Ok(sc)
}

/// `check_store` up to the objects; with `defer_sizes`, the sizes of the
/// objects a listing placed wait for `finish_objects` (after a browsable
/// check that proves most of them).
fn gather_store(
    repo: &dyn RepoRead,
    opts: &VerifyOptions,
    progress: &dyn Progress,
    defer_sizes: bool,
) -> Result<StoreCheck> {
    crate::log::mem_phase("start");
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
        if let tree::Limit::Entries(n) = s.record.source_limit() {
            if size > n {
                hostile.insert(s.id);
                walk.problems.push(VerifyProblem {
                    kind: ProblemKind::CorruptTree,
                    subject: s.record.root.to_hex(),
                    message: format!(
                        "snapshot {}'s source tree {} expands to {size} entries, but its record counts {}: its folders reuse one subtree over and over (a hostile or damaged repository); readers refuse to expand it. Restore from another snapshot (`trove snapshots` lists them)",
                        s.id.short(),
                        repo.locate(StoreKind::Tree, &s.record.root.0).display(),
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
    let required = walk.objects;
    walk.optional.compact_excluding(&required);
    let optional: Vec<ObjectId> = walk.optional.v.iter().map(|(id, _)| *id).collect();
    let (mut v, mut big) = (required.v, required.big);
    v.extend(walk.optional.v);
    big.extend(walk.optional.big);
    let objs = ObjectList::new(v, big);
    report.objects = objs.len() as u64;
    report.object_bytes = objs.total_bytes();
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
    let to_hash: u64 = (0..objs.len())
        .filter(|&i| hash_it(&objs.id(i)))
        .map(|i| objs.size(i))
        .sum();
    progress.phase("objects", objs.len() as u64, to_hash);
    let hashed = Mutex::new((0u64, 0u64));
    let bad_found: Mutex<Vec<(ObjectId, BadObject)>> = Mutex::new(Vec::new());
    // `--quick` before a browsable check, on a store whose listings say
    // where each object is: an object listed as a regular file is placed
    // from its folder's listing (one `getdents` per few thousand objects,
    // not an open and a stat each). Its size is proven by the browsable
    // file that is the same inode with the recorded size; the objects no
    // browsable file proves are stat'ed in `finish_objects`.
    let store_dev = repo
        .local_dir()
        .and_then(|_| std::fs::metadata(repo.locate_store(StoreKind::Object)).ok())
        .map_or(0, |m| std::os::unix::fs::MetadataExt::dev(&m));
    let mut at = Places::new(store_dev, objs.len());
    let mut unproven = Flags::default();
    let mut unreferenced = None;
    if opts.quick && defer_sizes {
        let (mut n, mut bytes) = (0u64, 0u64);
        let listed = Flags::new(objs.len());
        let listing = repo.list_objects_located(&mut |id, loc| match objs.index(&id) {
            Some(i) => {
                if loc.regular {
                    at.set(i, Some((loc.dev, loc.ino)));
                    listed.set(i);
                }
            }
            None => {
                n += 1;
                bytes += repo.size(StoreKind::Object, &id.0).unwrap_or(0);
            }
        });
        if let Some(r) = listing {
            r?;
            unreferenced = Some((n, bytes));
            unproven = listed;
        }
    }
    // In the order of `objs` (sorted by id): where each one is, where the
    // listing did not already say.
    at.fill(|i| {
        if unproven.get(i) == Some(true) {
            progress.advance(1, 0);
            return None;
        }
        let (id, size) = objs.get(i);
        let h = hash_it(&id);
        let (here, r) = check_object(repo, &id, size, h);
        if h && here.is_some() {
            let mut g = hashed.lock().unwrap_or_else(|p| p.into_inner());
            g.0 += 1;
            g.1 += size;
            progress.advance(1, size);
        } else {
            progress.advance(1, 0);
        }
        if let Some(b) = r {
            bad_found
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((id, b));
        }
        Some(here)
    });
    progress.finish();
    crate::log::mem_phase("objects checked");
    let (n_hashed, b_hashed) = hashed.into_inner().unwrap_or_else(|p| p.into_inner());
    report.objects_hashed = n_hashed;
    report.bytes_hashed = b_hashed;
    report.sample = sample.map(|mut s| {
        s.objects = n_hashed;
        s
    });
    report.problems = problems;
    Ok(StoreCheck {
        report,
        snapshots: snaps,
        latest_known,
        hostile,
        objs,
        at,
        bad: bad_found.into_inner().unwrap_or_else(|p| p.into_inner()),
        optional,
        unproven,
        unreferenced,
    })
}

/// The end of the object check: the objects the listing placed that no
/// browsable file proved are stat'ed (present, a regular file, the
/// recorded size), and every bad object becomes a problem naming the
/// snapshots and paths that use it, after the store's other problems.
fn finish_objects(repo: &dyn RepoRead, sc: &mut StoreCheck) -> Result<()> {
    let later: Vec<usize> = sc.unproven.ones().collect();
    let objs = &sc.objs;
    let checked: Vec<(usize, Option<DevIno>, Option<BadObject>)> = later
        .par_iter()
        .map(|&i| {
            let (id, size) = objs.get(i);
            let (here, bad) = check_object(repo, &id, size, false);
            (i, here, bad)
        })
        .collect();
    for (i, here, bad) in checked {
        sc.at.set(i, here);
        if let Some(b) = bad {
            sc.bad.push((sc.objs.id(i), b));
        }
    }
    sc.unproven = Flags::default();
    let report = &mut sc.report;
    let mut bad: Vec<(ObjectId, BadObject)> = Vec::new();
    for (id, b) in std::mem::take(&mut sc.bad) {
        if b.kind == ProblemKind::MissingObject
            && (sc.optional.binary_search(&id).is_ok() || repo.absent_by_design(&id))
        {
            report.unpinned_missing += 1;
        } else {
            bad.push((id, b));
        }
    }
    bad.sort_by_key(|(id, _)| *id);
    if !bad.is_empty() {
        let set: HashSet<ObjectId> = bad.iter().map(|(id, _)| *id).collect();
        let mut located = locate(repo, &sc.snapshots, &set);
        for (id, b) in bad {
            let (snapshots, paths, total) = located.remove(&id).unwrap_or_default();
            report.problems.push(VerifyProblem {
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
    let inodes = Inodes {
        objs: &sc.objs,
        at: &sc.at,
        unproven: &Flags::default(),
    };
    report.object_bytes = inodes.present_bytes();
    (report.unreferenced_objects, report.unreferenced_bytes) = match sc.unreferenced {
        Some(u) => u,
        None => unreferenced_objects(repo, &inodes)?,
    };
    Ok(())
}

pub fn run(
    repo: &LocalRepo,
    opts: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let mut sc = gather_store(repo, opts, progress, true)?;
    let mut problems = Vec::new();
    let mut browsable_entries = 0;
    let inodes = Inodes {
        objs: &sc.objs,
        at: &sc.at,
        unproven: &sc.unproven,
    };
    let snaps = &sc.snapshots;
    let (latest_known, hostile) = (sc.latest_known, &sc.hostile);

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
        match apply::LazyRender::new(repo, &latest.record) {
            Ok(Some(mut lazy)) => {
                match check::check_browsable_lazily(repo, latest, &mut lazy, &inodes, progress) {
                    Ok((found, n)) => {
                        browsable_entries = n;
                        problems.extend(
                            found
                                .into_iter()
                                .map(|(p, m)| browsable_problem(repo, latest, &p, m)),
                        );
                    }
                    Err(e) => problems.push(expansion(e)?),
                }
            }
            Err(e @ Error::Expansion { .. }) => problems.push(expansion(e)?),
            _ => match crate::repo::snapshot::load_snapshot(repo, &latest.record) {
                Ok((entries, archive)) => {
                    // The listing is not needed past its rendering: free it
                    // before the tree is checked (a large share of the memory).
                    let desired = render::render(&entries, &archive);
                    drop((entries, archive));
                    crate::log::mem_phase("tree rendered");
                    browsable_entries = desired.len() as u64;
                    let found = check::check_browsable(repo, latest, &desired, &inodes, progress)?;
                    problems.extend(
                        found
                            .into_iter()
                            .map(|(p, m)| browsable_problem(repo, latest, &p, m)),
                    );
                }
                Err(e @ Error::Expansion { .. }) => problems.push(expansion(e)?),
                Err(_) => {}
            },
        }
    }
    crate::log::mem_phase("browsable checked");
    // Object problems (found before the browsable check or by the stats
    // after it) come before the browsable tree's, as they always have.
    finish_objects(repo, &mut sc)?;
    crate::log::mem_phase("objects finished");
    let mut report = sc.report;
    report.browsable_entries = browsable_entries;
    report.problems.append(&mut problems);
    Ok(report)
}

/// Count objects in the store that no snapshot references.
fn unreferenced_objects(repo: &dyn RepoRead, inodes: &Inodes<'_>) -> Result<(u64, u64)> {
    let (mut n, mut bytes) = (0, 0);
    repo.list(StoreKind::Object, &mut |d| {
        let id = ObjectId(d);
        if !inodes.referenced(&id) {
            n += 1;
            bytes += repo.size(StoreKind::Object, &d).unwrap_or(0);
        }
    })?;
    Ok((n, bytes))
}

fn browsable_problem(
    repo: &LocalRepo,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::HashAlgo;
    use crate::progress::NoProgress;
    use crate::repo::memory::{fixture, MemoryRepo};

    proptest::proptest! {
        /// The optional set holds exactly the ids the required set lacks,
        /// each once, however the inserts and compactions interleave.
        #[test]
        fn optional_set_is_the_difference(
            required in proptest::collection::vec(0u8..40, 0..60),
            optional in proptest::collection::vec(0u8..40, 0..200),
        ) {
            let id = |b: u8| ObjectId(crate::id::Digest([b; 32]));
            let mut req = RefSet::default();
            for b in &required {
                req.insert(id(*b), u64::from(*b));
            }
            req.compact();
            let mut opt = RefSet { v: Vec::new(), big: Vec::new(), compact_at: 7 };
            for b in &optional {
                opt.insert_excluding(id(*b), u64::from(*b), &req);
            }
            opt.compact_excluding(&req);
            let want: std::collections::BTreeSet<u8> = optional
                .iter()
                .filter(|b| !required.contains(b))
                .copied()
                .collect();
            let got: Vec<ObjectId> = opt.v.iter().map(|(i, _)| *i).collect();
            let want: Vec<ObjectId> = want.into_iter().map(id).collect();
            proptest::prop_assert_eq!(got, want);
        }

        /// The object list built from the sets answers every object's
        /// recorded size, the 32-bit ones and the big ones kept apart
        /// (4 GiB and more, and the one size that marks them).
        #[test]
        fn object_list_keeps_every_size(
            required in proptest::collection::vec(0u8..40, 0..60),
            optional in proptest::collection::vec(0u8..40, 0..200),
        ) {
            let id = |b: u8| ObjectId(crate::id::Digest([b; 32]));
            let size = |b: u8| match b % 4 {
                0 => u64::from(b),
                1 => (1 << 32) + u64::from(b),
                2 => u64::from(u32::MAX),
                _ => u64::from(u32::MAX - 1) - u64::from(b),
            };
            let mut req = RefSet::default();
            for b in &required {
                req.insert(id(*b), size(*b));
            }
            req.compact();
            let mut opt = RefSet { v: Vec::new(), big: Vec::new(), compact_at: 7 };
            for b in &optional {
                opt.insert_excluding(id(*b), size(*b), &req);
            }
            opt.compact_excluding(&req);
            let (mut v, mut big) = (req.v, req.big);
            v.extend(opt.v);
            big.extend(opt.big);
            let list = ObjectList::new(v, big);
            let want: std::collections::BTreeSet<u8> =
                required.iter().chain(&optional).copied().collect();
            proptest::prop_assert_eq!(list.len(), want.len());
            for (i, b) in want.iter().enumerate() {
                proptest::prop_assert_eq!(list.get(i), (id(*b), size(*b)));
                proptest::prop_assert_eq!(list.index(&id(*b)), Some(i));
            }
            proptest::prop_assert_eq!(list.total_bytes(), want.iter().map(|b| size(*b)).sum::<u64>());
            for b in (0u8..40).filter(|b| !want.contains(b)) {
                proptest::prop_assert_eq!(list.index(&id(b)), None);
            }
        }
    }

    fn kinds(c: &StoreCheck) -> Vec<(&'static str, Vec<String>)> {
        c.report
            .problems
            .iter()
            .map(|p| (p.kind.as_str(), p.paths.clone()))
            .collect()
    }

    #[test]
    fn a_sound_repository_has_no_problems() -> Result<()> {
        let repo = MemoryRepo::new(HashAlgo::Blake3);
        let s1 = fixture::commit(&repo, None, &[("a", b"1"), ("d/b", b"2")], &[])?;
        fixture::commit(
            &repo,
            Some(&s1),
            &[("a", b"3"), ("d/b", b"2")],
            &[("a", b"1")],
        )?;
        let c = check_store(&repo, &VerifyOptions::default(), &NoProgress)?;
        assert!(c.report.problems.is_empty(), "{:?}", kinds(&c));
        assert_eq!(c.report.snapshots, 2);
        assert_eq!(c.report.objects, 3);
        assert_eq!(c.report.objects_hashed, 3);
        Ok(())
    }

    /// Damaged bytes, a lost object and a lost tree are each named, with
    /// the snapshot and path they affect.
    #[test]
    fn damage_is_named_with_what_it_affects() -> Result<()> {
        let repo = MemoryRepo::new(HashAlgo::Blake3);
        let s = fixture::commit(
            &repo,
            None,
            &[("a", b"aa"), ("d/b", b"bb"), ("e/c", b"cc")],
            &[],
        )?;
        let (entries, _) = snapshot::load_snapshot(&repo, &s.record)?;
        let id_of = |p: &[u8]| {
            entries
                .iter()
                .find(|e| e.path == p)
                .and_then(|e| e.file_id())
        };
        let (a, _) = id_of(b"a").ok_or(Error::Usage("a".into()))?;
        let (b, _) = id_of(b"d/b").ok_or(Error::Usage("b".into()))?;
        repo.corrupt(StoreKind::Object, &a.0, b"xx");
        repo.lose(StoreKind::Object, &b.0);
        let e_tree = tree::load_tree::<Leaf, Meta>(&repo, &s.record.root)?
            .entries
            .into_iter()
            .find(|n| n.name == b"e")
            .and_then(|n| n.dir)
            .ok_or(Error::Usage("e".into()))?;
        repo.lose(StoreKind::Tree, &e_tree.0 .0);
        let c = check_store(&repo, &VerifyOptions::default(), &NoProgress)?;
        let mut k = kinds(&c);
        k.sort();
        let short = s.id.short();
        assert_eq!(
            k,
            vec![
                ("corrupt object", vec![format!("a ({short})")]),
                ("missing object", vec![format!("d/b ({short})")]),
                ("missing tree", vec![]),
            ]
        );
        assert!(c
            .report
            .problems
            .iter()
            .all(|p| p.snapshots == vec![short.clone()]));
        // --quick sees the lost ones, not the damaged bytes of the right size.
        let quick = VerifyOptions {
            quick: true,
            ..VerifyOptions::default()
        };
        let c = check_store(&repo, &quick, &NoProgress)?;
        let mut k: Vec<&str> = c.report.problems.iter().map(|p| p.kind.as_str()).collect();
        k.sort();
        assert_eq!(k, vec!["missing object", "missing tree"]);
        Ok(())
    }

    /// Content only an unpinned snapshot names may have been collected on
    /// purpose: counted, not a problem.
    #[test]
    fn content_of_unpinned_snapshots_may_be_gone() -> Result<()> {
        let repo = MemoryRepo::new(HashAlgo::Blake3);
        let s1 = fixture::commit(&repo, None, &[("a", b"old")], &[])?;
        fixture::commit(&repo, Some(&s1), &[("a", b"new")], &[])?;
        let old = crate::hash::hash_bytes(HashAlgo::Blake3, b"old");
        repo.lose(StoreKind::Object, &old);
        let c = check_store(&repo, &VerifyOptions::default(), &NoProgress)?;
        assert!(c.report.problems.is_empty(), "{:?}", kinds(&c));
        assert_eq!(c.report.unpinned_missing, 1);
        Ok(())
    }

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
