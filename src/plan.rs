//! The planner: a pure function from (previous snapshot, current scan) to
//! one decision per path, the new source listing and the new archive.
//!
//! It owns the semantics of SPEC §4: BACKUP, DUPLICATE, MODIFIED, SKIP,
//! DELETED, version numbering and per-file retention. It touches no
//! filesystem and reads no clock (`now_ns` is a parameter), so the same
//! inputs always give the same plan and the tests are plain tables.

use crate::id::ObjectId;
use crate::model::{ArchiveBounds, Archived, Entry, History, Item, Leaf};
use crate::pathbytes::cmp_paths;
use std::cmp::Ordering;
use std::collections::HashSet;

/// A path as an ordered map key (path order, see `pathbytes::cmp_paths`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathKey(pub Vec<u8>);

impl Ord for PathKey {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_paths(&self.0, &other.0)
    }
}

impl PartialOrd for PathKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanOptions {
    /// Earlier versions kept per path (≥ 1).
    pub max_versions: u64,
    /// `_deleted/` entries older than this are dropped (None: kept forever).
    pub deleted_max_age_ns: Option<i64>,
    /// The snapshot time.
    pub now_ns: i64,
}

/// One decision. Decisions about current files name them by their index
/// in [`Plan::entries`] rather than by a copy of the path: a first backup
/// has one per file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// New path, content not at the top level yet.
    Backup { entry: usize },
    /// New path, content already at the top level under another path.
    Duplicate { entry: usize },
    /// Known path, new content; the old one became version `version`.
    /// `was_dup`: the old content was shown in `_duplicates/`.
    Modified {
        entry: usize,
        version: u64,
        was_dup: bool,
    },
    /// The path left the source; its last content went to `_deleted/`.
    /// An earlier deleted content there was moved to version `displaced`.
    Deleted {
        path: Vec<u8>,
        displaced: Option<u64>,
        was_dup: bool,
    },
    /// Per-file retention dropped version `version` of `path`.
    RetainDropVersion { path: Vec<u8>, version: u64 },
    /// `retention.deleted_max_age_days` dropped the deleted content.
    RetainDropDeleted { path: Vec<u8> },
}

impl Action {
    /// The path decided about (`entries`: the plan's listing).
    pub fn path<'a>(&'a self, entries: &'a [Entry]) -> &'a [u8] {
        match self {
            Action::Backup { entry }
            | Action::Duplicate { entry }
            | Action::Modified { entry, .. } => &entries[*entry].path,
            Action::Deleted { path, .. }
            | Action::RetainDropVersion { path, .. }
            | Action::RetainDropDeleted { path } => path,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanCounts {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub backed_up: u64,
    pub duplicates: u64,
    pub modified: u64,
    pub unchanged: u64,
    pub deleted: u64,
    pub retention_removed: u64,
    /// FIFOs, sockets and devices.
    pub specials: u64,
    /// The owners the new snapshot's entries have (their names go into
    /// the snapshot record).
    pub uids: std::collections::BTreeSet<u32>,
    pub gids: std::collections::BTreeSet<u32>,
}

impl PlanCounts {
    /// "copied" in the summary line: files whose content this run recorded.
    pub fn copied(&self) -> u64 {
        self.backed_up + self.duplicates + self.modified
    }

    /// Count an entry of the new listing: its kind, a file's bytes, its
    /// owners.
    pub fn count_entry(&mut self, item: &Item) {
        let meta = match item {
            Item::Leaf(l) => {
                match l {
                    Leaf::File { size, .. } => {
                        self.files += 1;
                        self.bytes += size;
                    }
                    Leaf::Symlink { .. } => self.symlinks += 1,
                    Leaf::Special { .. } => self.specials += 1,
                }
                l.meta()
            }
            Item::Dir(m) => {
                self.dirs += 1;
                m
            }
        };
        self.uids.insert(meta.uid);
        self.gids.insert(meta.gid);
    }

    /// Add entries counted elsewhere as unchanged (a folder carried whole
    /// by the walk, planned nowhere): every file among them is unchanged.
    pub fn add_unchanged(&mut self, other: &PlanCounts) {
        self.files += other.files;
        self.unchanged += other.files;
        self.bytes += other.bytes;
        self.dirs += other.dirs;
        self.symlinks += other.symlinks;
        self.specials += other.specials;
        self.uids.extend(&other.uids);
        self.gids.extend(&other.gids);
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// In path order; within a path, content decision before retention.
    /// Unchanged files (SKIP) have no action: see [`Plan::for_each_decision`].
    pub actions: Vec<Action>,
    /// The new source listing (the scan with `dup` flags decided).
    pub entries: Vec<Entry>,
    /// The new archive, in path order.
    pub archive: Vec<(Vec<u8>, History)>,
    pub counts: PlanCounts,
}

#[derive(Clone)]
struct FileRef {
    id: ObjectId,
    size: u64,
    dup: bool,
    meta: crate::model::Meta,
}

fn file_ref(i: &Item) -> Option<FileRef> {
    match i {
        Item::Leaf(Leaf::File {
            size,
            id,
            dup,
            meta,
            ..
        }) => Some(FileRef {
            id: *id,
            size: *size,
            dup: *dup,
            meta: meta.clone(),
        }),
        _ => None,
    }
}

impl Plan {
    /// Every object the planned snapshot references: its files, and the
    /// versions and deleted contents its archive keeps.
    pub fn referenced_objects(&self) -> HashSet<ObjectId> {
        let mut live: HashSet<ObjectId> = self
            .entries
            .iter()
            .filter_map(|e| e.file_id().map(|(id, _)| id))
            .collect();
        for (_, h) in &self.archive {
            live.extend(h.object_ids());
        }
        live
    }
}

/// Per-file retention: the oldest kept version of `h` must go.
fn version_expires(h: &History, opts: &PlanOptions) -> bool {
    h.versions.len() as u64 > opts.max_versions.max(1)
}

/// Per-file retention: the deleted content of `h` is too old to keep.
fn deleted_expires(h: &History, opts: &PlanOptions) -> bool {
    match (opts.deleted_max_age_ns, &h.deleted) {
        (Some(max_age), Some(d)) => d.time_ns < opts.now_ns.saturating_sub(max_age),
        _ => false,
    }
}

/// Whether per-file retention under `opts` leaves every history within
/// `b` as it is (the rules of `version_expires` and `deleted_expires`, for
/// the worst history the bounds allow): a run may then carry a folder of
/// the previous archive whole, unread.
pub fn retention_is_idle(b: &ArchiveBounds, opts: &PlanOptions) -> bool {
    let versions_fit = b.most_versions <= opts.max_versions.max(1);
    let deleted_fit = match (opts.deleted_max_age_ns, b.oldest_deleted_ns) {
        (Some(max_age), Some(t)) => t >= opts.now_ns.saturating_sub(max_age),
        _ => true,
    };
    versions_fit && deleted_fit
}

/// Whether per-file retention would remove anything from `archive` (the
/// same rules `plan` applies), without planning: `prune` asks this before
/// loading a whole listing.
pub fn archive_needs_retention(archive: &[(Vec<u8>, History)], opts: &PlanOptions) -> bool {
    archive
        .iter()
        .any(|(_, h)| version_expires(h, opts) || deleted_expires(h, opts))
}

/// What a path's file did between two runs (SPEC §4), before DUPLICATE
/// is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Not a file now.
    NoFile,
    /// A file with the same content as before; keeps its `dup` flag.
    Unchanged { dup: bool },
    /// A file whose content changed.
    Modified,
    /// A file where there was none: BACKUP or DUPLICATE.
    Newcomer,
}

/// Classify the entry at one path (`prev`, `cur`: its items in the
/// previous and current listing).
pub fn classify(prev: Option<&Item>, cur: Option<&Item>) -> Change {
    let file = |i: Option<&Item>| match i {
        Some(Item::Leaf(Leaf::File { id, dup, .. })) => Some((*id, *dup)),
        _ => None,
    };
    match (file(prev), file(cur)) {
        (_, None) => Change::NoFile,
        (Some((a, dup)), Some((b, _))) if a == b => Change::Unchanged { dup },
        (Some(_), Some(_)) => Change::Modified,
        (None, Some(_)) => Change::Newcomer,
    }
}

/// The one global question of a run: is a newcomer's content already at
/// the top level? Newcomers in path order: the byte-smallest path with a
/// content the top level lacks is BACKUP, the rest DUPLICATE; the top
/// level before them holds the unchanged files not shown as duplicates and
/// the modified files, wherever they are in the tree (later paths too).
/// Empty files are never duplicates of each other (they carry no data to
/// deduplicate).
///
/// Only membership of a newcomer's content is ever asked, so the set is
/// kept over the newcomers' contents alone: a sorted list and a flag each
/// (33 bytes per content, no hash table; for a 1% change of a million
/// files thousands of entries, not a million).
#[derive(Clone, Debug, Default)]
pub struct Dups {
    wanted: Vec<ObjectId>,
    top: Vec<bool>,
    /// A bit per 2^k slots keyed by an id's first bytes (ids are uniform
    /// hashes): rules nearly every unwanted content out before a binary
    /// search would touch the list.
    maybe: Vec<u64>,
    slots: usize,
}

impl Dups {
    /// `newcomers`: the contents of every newcomer (any order, repeats
    /// allowed; empty contents are left out by the caller or ignored).
    pub fn new(mut newcomers: Vec<ObjectId>) -> Dups {
        newcomers.sort_unstable();
        newcomers.dedup();
        newcomers.shrink_to_fit();
        let slots = (newcomers.len() * 16).next_power_of_two();
        let mut d = Dups {
            top: vec![false; newcomers.len()],
            maybe: vec![0u64; slots.div_ceil(64)],
            slots,
            wanted: newcomers,
        };
        for i in 0..d.wanted.len() {
            let s = d.slot(&d.wanted[i]);
            d.maybe[s / 64] |= 1 << (s % 64);
        }
        d
    }

    fn slot(&self, id: &ObjectId) -> usize {
        let mut b = [0u8; 8];
        b.copy_from_slice(&id.0 .0[..8]);
        (u64::from_le_bytes(b) as usize) & (self.slots - 1)
    }

    fn find(&self, id: &ObjectId) -> Option<usize> {
        if self.wanted.is_empty() {
            return None;
        }
        let s = self.slot(id);
        if self.maybe[s / 64] & (1 << (s % 64)) == 0 {
            return None;
        }
        self.wanted.binary_search(id).ok()
    }

    /// Whether any newcomer content is asked about (else `note_top` is
    /// pointless).
    pub fn is_empty(&self) -> bool {
        self.wanted.is_empty()
    }

    /// Record a non-newcomer at the top level (unchanged and not shown as
    /// a duplicate, or modified). All of them come before any `decide`.
    pub fn note_top(&mut self, id: &ObjectId) {
        if let Some(i) = self.find(id) {
            self.top[i] = true;
        }
    }

    /// Decide a newcomer (in path order): `true` for DUPLICATE.
    pub fn decide(&mut self, id: &ObjectId, size: u64) -> bool {
        let Some(i) = self.find(id).filter(|_| size > 0) else {
            return false;
        };
        std::mem::replace(&mut self.top[i], true)
    }
}

/// One decision about one path, in the order the audit log shows them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Decision {
    Backup,
    Duplicate,
    Modified {
        version: u64,
        was_dup: bool,
    },
    Deleted {
        displaced: Option<u64>,
        was_dup: bool,
    },
    RetainDropVersion {
        version: u64,
    },
    RetainDropDeleted,
}

/// The planner one path at a time, in path order: what both the whole
/// planner ([`plan`]) and a streaming run call for every path of the union
/// of the previous listing, the current one and the previous archive.
pub struct PathPlanner<'o> {
    opts: &'o PlanOptions,
    pub counts: PlanCounts,
}

impl<'o> PathPlanner<'o> {
    pub fn new(opts: &'o PlanOptions) -> PathPlanner<'o> {
        PathPlanner {
            opts,
            counts: PlanCounts::default(),
        }
    }

    /// Decide one path. `prev`, `cur`: its entries (`cur`'s `dup` is set
    /// here); `hist`: its history in the previous archive. Decisions go to
    /// `out` (content first, then retention); returns the history the new
    /// archive keeps for the path.
    pub fn step(
        &mut self,
        prev: Option<&Item>,
        mut cur: Option<&mut Item>,
        hist: Option<History>,
        dups: &mut Dups,
        out: &mut Vec<Decision>,
    ) -> Option<History> {
        let opts = self.opts;
        let mut h = hist;
        let old = prev.and_then(file_ref);
        let archived = |f: &FileRef| Archived {
            id: f.id,
            size: f.size,
            meta: f.meta.clone(),
            time_ns: opts.now_ns,
        };
        match classify(prev, cur.as_deref()) {
            Change::Unchanged { dup } => {
                if let Some(c) = cur.as_deref_mut() {
                    set_dup(c, dup);
                }
                self.counts.unchanged += 1;
            }
            Change::Modified => {
                let o = old.clone().expect("a modified path had a file");
                let hh = h.get_or_insert_with(History::default);
                let n = hh.next_version.max(1);
                hh.versions.push((n, archived(&o)));
                hh.next_version = n + 1;
                if let Some(c) = cur.as_deref_mut() {
                    set_dup(c, false);
                }
                self.counts.modified += 1;
                out.push(Decision::Modified {
                    version: n,
                    was_dup: o.dup,
                });
            }
            Change::Newcomer => {
                let (id, size) = match cur.as_deref().and_then(file_ref) {
                    Some(f) => (f.id, f.size),
                    None => unreachable!("a newcomer is a file"),
                };
                let dup = dups.decide(&id, size);
                if let Some(c) = cur.as_deref_mut() {
                    set_dup(c, dup);
                }
                if dup {
                    self.counts.duplicates += 1;
                    out.push(Decision::Duplicate);
                } else {
                    self.counts.backed_up += 1;
                    out.push(Decision::Backup);
                }
            }
            Change::NoFile => {}
        }
        if let (Some(o), Change::NoFile | Change::Newcomer) = (old, classify(prev, cur.as_deref()))
        {
            // The file left its path (the path may hold something else now,
            // but never a file: that would be MODIFIED).
            let hh = h.get_or_insert_with(History::default);
            let displaced = hh.deleted.take().map(|d| {
                let n = hh.next_version.max(1);
                hh.versions.push((n, d));
                hh.next_version = n + 1;
                n
            });
            hh.deleted = Some(archived(&o));
            self.counts.deleted += 1;
            out.push(Decision::Deleted {
                displaced,
                was_dup: o.dup,
            });
        }
        if let Some(c) = cur.as_deref() {
            self.counts.count_entry(c);
        }
        // Retention over every history, so lowering the limit applies to
        // every path, not only to the ones touched in this run.
        let mut h = h?;
        while version_expires(&h, opts) {
            let (n, _) = h.versions.remove(0);
            self.counts.retention_removed += 1;
            out.push(Decision::RetainDropVersion { version: n });
        }
        if deleted_expires(&h, opts) {
            h.deleted = None;
            self.counts.retention_removed += 1;
            out.push(Decision::RetainDropDeleted);
        }
        (!h.is_empty() || h.next_version > 1).then_some(h)
    }
}

/// Plan one run. `prev` and `cur` must be sorted in path order with unique
/// paths; `cur`'s `dup` flags are ignored (the planner decides them).
pub fn plan(
    prev: &[Entry],
    prev_archive: &[(Vec<u8>, History)],
    cur: Vec<Entry>,
    opts: &PlanOptions,
) -> Plan {
    let mut entries = cur;
    // The DUPLICATE question needs every newcomer, then every other top
    // file, before the first newcomer is decided.
    let mut newcomers = Vec::new();
    merge_by_path(prev, &entries, |p, c| {
        if classify(p.map(|e| &e.item), c.map(|e| &e.item)) == Change::Newcomer {
            if let Some((id, size)) = c.and_then(Entry::file_id) {
                if size > 0 {
                    newcomers.push(id);
                }
            }
        }
    });
    let mut dups = Dups::new(newcomers);
    if !dups.is_empty() {
        merge_by_path(prev, &entries, |p, c| {
            let top = match classify(p.map(|e| &e.item), c.map(|e| &e.item)) {
                Change::Unchanged { dup } => !dup,
                Change::Modified => true,
                _ => false,
            };
            if let (true, Some((id, _))) = (top, c.and_then(Entry::file_id)) {
                dups.note_top(&id);
            }
        });
    }

    let mut planner = PathPlanner::new(opts);
    let mut actions = Vec::new();
    let mut archive = Vec::new();
    let mut decisions = Vec::new();
    let (mut i, mut j, mut k) = (0, 0, 0);
    loop {
        // The smallest path among the three listings' next items.
        let mut next: Option<&[u8]> = None;
        for p in [
            prev.get(i).map(|e| e.path.as_slice()),
            entries.get(j).map(|e| e.path.as_slice()),
            prev_archive.get(k).map(|a| a.0.as_slice()),
        ]
        .into_iter()
        .flatten()
        {
            if next.is_none_or(|n| cmp_paths(p, n) == Ordering::Less) {
                next = Some(p);
            }
        }
        let Some(path) = next.map(<[u8]>::to_vec) else {
            break;
        };
        let p = prev.get(i).filter(|e| e.path == path);
        i += p.is_some() as usize;
        let c = (entries.get(j).is_some_and(|e| e.path == path)).then_some(j);
        j += c.is_some() as usize;
        let h = prev_archive
            .get(k)
            .filter(|a| a.0 == path)
            .map(|a| a.1.clone());
        k += h.is_some() as usize;
        decisions.clear();
        let kept = planner.step(
            p.map(|e| &e.item),
            c.map(|c| &mut entries[c].item),
            h,
            &mut dups,
            &mut decisions,
        );
        for d in decisions.drain(..) {
            actions.push(match (d, c) {
                (Decision::Backup, Some(entry)) => Action::Backup { entry },
                (Decision::Duplicate, Some(entry)) => Action::Duplicate { entry },
                (Decision::Modified { version, was_dup }, Some(entry)) => Action::Modified {
                    entry,
                    version,
                    was_dup,
                },
                (Decision::Deleted { displaced, was_dup }, _) => Action::Deleted {
                    path: path.clone(),
                    displaced,
                    was_dup,
                },
                (Decision::RetainDropVersion { version }, _) => Action::RetainDropVersion {
                    path: path.clone(),
                    version,
                },
                (Decision::RetainDropDeleted, _) => {
                    Action::RetainDropDeleted { path: path.clone() }
                }
                (_, None) => unreachable!("content decisions are about a current file"),
            });
        }
        if let Some(h) = kept {
            archive.push((path, h));
        }
    }
    Plan {
        actions,
        entries,
        archive,
        counts: planner.counts,
    }
}

/// Walk two path-ordered listings together, calling `f` with the entries
/// at each path.
fn merge_by_path(a: &[Entry], b: &[Entry], mut f: impl FnMut(Option<&Entry>, Option<&Entry>)) {
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let ord = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => cmp_paths(&x.path, &y.path),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        let (x, y) = match ord {
            Ordering::Less => (a.get(i), None),
            Ordering::Greater => (None, b.get(j)),
            Ordering::Equal => (a.get(i), b.get(j)),
        };
        i += x.is_some() as usize;
        j += y.is_some() as usize;
        f(x, y);
    }
}

impl Plan {
    /// Merge SKIP decisions back into the action list, in path order, for
    /// whoever wants every decision (debug logging, tests): calls `f` with
    /// `Some(action)` for each action and `None` for each unchanged file.
    pub fn for_each_decision(&self, mut f: impl FnMut(&[u8], Option<&Action>)) {
        let mut a = 0;
        for e in &self.entries {
            if e.file_id().is_none() {
                continue;
            }
            while a < self.actions.len()
                && cmp_paths(self.actions[a].path(&self.entries), &e.path) == Ordering::Less
            {
                f(self.actions[a].path(&self.entries), Some(&self.actions[a]));
                a += 1;
            }
            let decided =
                a < self.actions.len() && self.actions[a].path(&self.entries) == e.path.as_slice();
            // Every current file gets BACKUP, DUPLICATE or MODIFIED, or
            // else it is unchanged.
            if !decided {
                f(&e.path, None);
            }
        }
        for act in &self.actions[a..] {
            f(act.path(&self.entries), Some(act));
        }
    }
}

fn set_dup(i: &mut Item, value: bool) {
    if let Item::Leaf(Leaf::File { dup, .. }) = i {
        *dup = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Digest;
    use crate::model::Meta;

    fn id(n: u8) -> ObjectId {
        ObjectId(Digest([n; 32]))
    }

    fn file(path: &str, content: u8) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            item: Item::Leaf(Leaf::File {
                size: if content == 0 { 0 } else { 10 },
                id: id(content),
                dup: false,
                meta: Meta::default(),
                ext: Default::default(),
            }),
        }
    }

    fn dir(path: &str) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            item: Item::Dir(Meta::default()),
        }
    }

    fn sorted(mut v: Vec<Entry>) -> Vec<Entry> {
        v.sort_by(|a, b| cmp_paths(&a.path, &b.path));
        v
    }

    fn opts() -> PlanOptions {
        PlanOptions {
            max_versions: 10,
            deleted_max_age_ns: None,
            now_ns: 1000,
        }
    }

    fn names(p: &Plan) -> Vec<String> {
        let mut out = Vec::new();
        p.for_each_decision(|path, a| {
            let path = String::from_utf8_lossy(path).to_string();
            out.push(match a {
                None => format!("SKIP {path}"),
                Some(a) => match a {
                    Action::Backup { .. } => format!("BACKUP {path}"),
                    Action::Duplicate { .. } => format!("DUPLICATE {path}"),
                    Action::Modified { version, .. } => format!("MODIFIED {path} v{version}"),
                    Action::Deleted { displaced, .. } => format!("DELETED {path} {displaced:?}"),
                    Action::RetainDropVersion { version, .. } => {
                        format!("RETAIN {path} v{version}")
                    }
                    Action::RetainDropDeleted { .. } => format!("EXPIRE {path}"),
                },
            });
        });
        out
    }

    /// Run a sequence of scans through the planner, returning each plan.
    fn history(scans: Vec<Vec<Entry>>, o: &PlanOptions) -> Vec<Plan> {
        let mut prev: Vec<Entry> = Vec::new();
        let mut arch: Vec<(Vec<u8>, History)> = Vec::new();
        let mut out = Vec::new();
        for s in scans {
            let p = plan(&prev, &arch, sorted(s), o);
            prev = p.entries.clone();
            arch = p.archive.clone();
            out.push(p);
        }
        out
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            scans: Vec<Vec<Entry>>,
            want_last: Vec<&'static str>,
        }
        let cases = vec![
            Case {
                name: "first run: duplicate goes to the larger path",
                scans: vec![vec![
                    file("one.txt", 1),
                    file("two.txt", 2),
                    file("one_copy.txt", 1),
                ]],
                want_last: vec!["BACKUP one.txt", "DUPLICATE one_copy.txt", "BACKUP two.txt"],
            },
            Case {
                name: "byte-smallest newcomer wins even when listed later",
                scans: vec![vec![file("b", 1), file("a", 1)]],
                want_last: vec!["BACKUP a", "DUPLICATE b"],
            },
            Case {
                name: "modify and add",
                scans: vec![
                    vec![file("one.txt", 1), file("two.txt", 2)],
                    vec![file("one.txt", 3), file("two.txt", 2), file("three.txt", 4)],
                ],
                want_last: vec!["MODIFIED one.txt v1", "BACKUP three.txt", "SKIP two.txt"],
            },
            Case {
                name: "deletion",
                scans: vec![vec![file("old.txt", 1), file("k", 2)], vec![file("k", 2)]],
                want_last: vec!["SKIP k", "DELETED old.txt None"],
            },
            Case {
                name: "rename is delete plus backup",
                scans: vec![vec![file("a", 1)], vec![file("b", 1)]],
                want_last: vec!["DELETED a None", "BACKUP b"],
            },
            Case {
                name: "later arrival of an existing content is a duplicate",
                scans: vec![vec![file("z", 1)], vec![file("a", 1), file("z", 1)]],
                want_last: vec!["DUPLICATE a", "SKIP z"],
            },
            Case {
                name: "second deletion of a path keeps both contents",
                scans: vec![vec![file("f", 1)], vec![], vec![file("f", 2)], vec![]],
                want_last: vec!["DELETED f Some(1)"],
            },
            Case {
                name: "empty files are never duplicates",
                scans: vec![vec![file("e1", 0), file("e2", 0)]],
                want_last: vec!["BACKUP e1", "BACKUP e2"],
            },
            Case {
                name: "file replaced by a directory",
                scans: vec![vec![file("x", 1)], vec![dir("x"), file("x/y", 2)]],
                want_last: vec!["DELETED x None", "BACKUP x/y"],
            },
            Case {
                name: "modified duplicate moves to the top",
                scans: vec![
                    vec![file("a", 1), file("b", 1)],
                    vec![file("a", 1), file("b", 2)],
                ],
                want_last: vec!["SKIP a", "MODIFIED b v1"],
            },
            Case {
                name: "new path with content of a modified file is duplicate",
                scans: vec![vec![file("a", 1)], vec![file("a", 2), file("c", 2)]],
                want_last: vec!["MODIFIED a v1", "DUPLICATE c"],
            },
        ];
        for c in cases {
            let plans = history(c.scans, &opts());
            let last = plans.last().expect("at least one scan");
            assert_eq!(names(last), c.want_last, "case: {}", c.name);
        }
    }

    #[test]
    fn versions_count_and_never_restart() {
        let o = PlanOptions {
            max_versions: 3,
            ..opts()
        };
        let scans: Vec<Vec<Entry>> = (1..=6).map(|n| vec![file("one.txt", n)]).collect();
        let plans = history(scans, &o);
        let last = plans.last().expect("six plans");
        let (_, h) = &last.archive[0];
        let kept: Vec<u64> = h.versions.iter().map(|(n, _)| *n).collect();
        assert_eq!(kept, vec![3, 4, 5], "newest three of five versions");
        assert_eq!(h.next_version, 6);
        let drops: Vec<String> = plans
            .iter()
            .flat_map(names)
            .filter(|n| n.starts_with("RETAIN"))
            .collect();
        assert_eq!(drops, vec!["RETAIN one.txt v1", "RETAIN one.txt v2"]);
    }

    #[test]
    fn duplicate_flag_is_sticky_for_unchanged_files() {
        let plans = history(
            vec![vec![file("a", 1), file("b", 1)], vec![file("b", 1)]],
            &opts(),
        );
        let b = &plans[1].entries[0];
        assert!(matches!(b.item, Item::Leaf(Leaf::File { dup: true, .. })));
    }

    #[test]
    fn deleted_entries_expire_only_when_configured() {
        let mut o = opts();
        let plans = history(vec![vec![file("a", 1)], vec![]], &o);
        assert!(plans[1].archive[0].1.deleted.is_some());
        o.deleted_max_age_ns = Some(10);
        o.now_ns = 2000;
        let p = plan(&[], &plans[1].archive, vec![], &o);
        assert_eq!(names(&p), vec!["EXPIRE a"]);
        // The version counter survives although nothing is kept.
        assert!(p.archive.is_empty() || p.archive[0].1.deleted.is_none());
    }

    #[test]
    fn counts() {
        let plans = history(
            vec![vec![file("a", 1), file("b", 1), dir("d"), file("d/c", 2)]],
            &opts(),
        );
        let c = &plans[0].counts;
        assert_eq!(
            (c.files, c.dirs, c.backed_up, c.duplicates, c.copied()),
            (3, 1, 2, 1, 3)
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn dup_flags(entries: &[Entry]) -> Vec<bool> {
            entries
                .iter()
                .map(|e| matches!(e.item, Item::Leaf(Leaf::File { dup: true, .. })))
                .collect()
        }

        /// SPEC §4's rule without any economy: an unchanged file keeps its
        /// flag, a modified one is at the top, and newcomers in path order
        /// are duplicates of whatever non-empty content is at the top.
        fn reference_dups(prev: &[Entry], cur: &[Entry]) -> Vec<bool> {
            let old = |path: &[u8]| {
                prev.iter()
                    .find(|e| e.path == path)
                    .and_then(|e| file_ref(&e.item))
            };
            let mut flags = vec![false; cur.len()];
            let mut newcomers = Vec::new();
            let mut top = HashSet::new();
            for (k, e) in cur.iter().enumerate() {
                let Some(f) = file_ref(&e.item) else { continue };
                match old(&e.path) {
                    Some(o) if o.id == f.id => {
                        flags[k] = o.dup;
                        if !o.dup {
                            top.insert(f.id);
                        }
                    }
                    Some(_) => {
                        top.insert(f.id);
                    }
                    None => newcomers.push(k),
                }
            }
            for k in newcomers {
                let Some(f) = file_ref(&cur[k].item) else {
                    continue;
                };
                if f.size > 0 && top.contains(&f.id) {
                    flags[k] = true;
                } else {
                    top.insert(f.id);
                }
            }
            flags
        }

        fn arb_scan() -> impl Strategy<Value = Vec<Entry>> {
            prop::collection::btree_map("[a-d]{1,2}", 0u8..4, 0..8)
                .prop_map(|m| sorted(m.into_iter().map(|(p, c)| file(&p, c)).collect()))
        }

        fn arb_history() -> impl Strategy<Value = History> {
            let archived = |t: i64| Archived {
                id: id(1),
                size: 10,
                meta: Meta::default(),
                time_ns: t,
            };
            (0usize..6, prop::option::of(0i64..3000)).prop_map(move |(n, del)| History {
                next_version: n as u64 + 1,
                versions: (1..=n as u64).map(|v| (v, archived(v as i64))).collect(),
                deleted: del.map(archived),
            })
        }

        proptest! {
            /// Bounds that call retention idle are right: the planner
            /// leaves every history within them exactly as it was, with no
            /// decision, whatever the limits and the clock.
            #[test]
            fn prop_idle_retention_keeps_every_history_within_the_bounds(
                hs in prop::collection::vec(arb_history(), 0..8),
                max_versions in 0u64..6,
                max_age in prop::option::of(0i64..3000),
                now in 0i64..6000,
            ) {
                let o = PlanOptions { max_versions, deleted_max_age_ns: max_age, now_ns: now };
                let mut b = ArchiveBounds::default();
                for h in &hs {
                    b.note(h);
                }
                let mut halves = ArchiveBounds::default();
                let (x, y) = hs.split_at(hs.len() / 2);
                let (mut bx, mut by) = (ArchiveBounds::default(), ArchiveBounds::default());
                x.iter().for_each(|h| bx.note(h));
                y.iter().for_each(|h| by.note(h));
                halves.widen(&bx);
                halves.widen(&by);
                prop_assert_eq!(halves, b);
                if retention_is_idle(&b, &o) {
                    for h in &hs {
                        let mut planner = PathPlanner::new(&o);
                        let mut out = Vec::new();
                        let kept = planner.step(None, None, Some(h.clone()), &mut Dups::new(Vec::new()), &mut out);
                        prop_assert!(out.is_empty());
                        let same = (!h.is_empty() || h.next_version > 1).then(|| h.clone());
                        prop_assert_eq!(kept, same);
                    }
                }
            }
        }

        proptest! {
            #[test]
            fn prop_invariants(scans in prop::collection::vec(arb_scan(), 1..6)) {
                let mut prev: Vec<Entry> = Vec::new();
                let mut arch: Vec<(Vec<u8>, History)> = Vec::new();
                for s in scans {
                    let p = plan(&prev, &arch, s.clone(), &opts());
                    // Deterministic.
                    prop_assert_eq!(&p, &plan(&prev, &arch, s.clone(), &opts()));
                    // The new listing is the scan (paths and contents).
                    prop_assert_eq!(p.entries.len(), s.len());
                    // One content decision per current file, one DELETED per lost path.
                    let decisions = p.actions.iter().filter(|a| !matches!(a,
                        Action::Deleted{..} | Action::RetainDropVersion{..} | Action::RetainDropDeleted{..})).count();
                    prop_assert_eq!(decisions as u64 + p.counts.unchanged, s.len() as u64);
                    let mut skips = 0u64;
                    p.for_each_decision(|_, a| if a.is_none() { skips += 1 });
                    prop_assert_eq!(skips, p.counts.unchanged);
                    // Every non-empty top-level content appears once at the top.
                    let mut top = HashSet::new();
                    for e in &p.entries {
                        if let Item::Leaf(Leaf::File{id, dup: false, size, ..}) = &e.item {
                            if *size > 0 { top.insert(*id); }
                        }
                    }
                    for e in &p.entries {
                        if let Item::Leaf(Leaf::File{id, dup: true, ..}) = &e.item {
                            prop_assert!(top.contains(id) || prev.iter().any(|q| q.path == e.path));
                        }
                    }
                    // The duplicate flags are those of the rule stated
                    // plainly (a set of every top-level content).
                    prop_assert_eq!(dup_flags(&p.entries), reference_dups(&prev, &s));
                    // Version numbers strictly increase per path.
                    for (_, h) in &p.archive {
                        prop_assert!(h.versions.windows(2).all(|w| w[0].0 < w[1].0));
                        prop_assert!(h.versions.iter().all(|(n, _)| *n < h.next_version));
                    }
                    prev = p.entries;
                    arch = p.archive;
                }
            }
        }
    }
}
