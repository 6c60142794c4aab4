//! A streaming run (docs/DESIGN.md "Streaming runs"): pass 1 walks the
//! sources beside the previous snapshot and spills one record per path
//! (`walk`); the DUPLICATE question is answered from the newcomers'
//! contents; pass 2 streams the spill back beside the previous archive and,
//! one path at a time, plans it (`plan::PathPlanner`, the same code the
//! whole-listing planner runs), builds both new trees bottom-up, records
//! the audit lines and stat cache records, and notes what the browsable
//! tree must change. Then the same commit as every run.
//!
//! Nothing here holds a whole listing: memory is the open directories,
//! the newcomers' contents, the ids of the previous trees and the part of
//! the browsable tree that changes.

use super::spill::{self, PrevAt, Rec, Spilled, Writer};
use super::walk::{self, WalkInput};
use super::{BackupOptions, BackupReport};
use crate::audit::Layout;
use crate::browsable::apply::{LazyRender, Materializer};
use crate::browsable::render::{self, BrowsableEntry, Escapes};
use crate::error::{Error, Result};
use crate::id::{HashAlgo, ObjectId, SnapshotId, TreeId};
use crate::local::cache;
use crate::local::objects::Batch;
use crate::local::LocalRepo;
use crate::model::{ArchiveBounds, History, Item, Leaf, Meta};
use crate::pathbytes::{self, cmp_paths};
use crate::plan::{classify, Change, Decision, Dups, PathPlanner, PlanOptions};
use crate::progress::Progress;
use crate::repo::snapshot::{self, Snapshot, SnapshotRecord};
use crate::repo::tree::{self, frame_tree, Flat, FlatCursor, Limit, TreeObject, TreeWriter};
use crate::repo::StoreKind;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

/// One audit line to write after the commit: a path and its decision
/// (`None`: SKIP, kept only when debug lines are on).
type LogRec = (Vec<u8>, Option<Decision>);

/// What the run needs from `backup::run`.
pub(super) struct Ctx<'a> {
    pub opts: &'a BackupOptions,
    pub repo: Option<&'a LocalRepo>,
    pub writer: Option<&'a LocalRepo>,
    pub algo: HashAlgo,
    pub latest: Option<Snapshot>,
    /// The new snapshot's sequence number: above every record's, damaged
    /// ones included.
    pub next_seq: u64,
    /// False while a snapshot record is damaged: what it references is
    /// unknown, so nothing is collected.
    pub collect: bool,
    pub layout: &'a Layout,
    pub root: &'a Path,
    pub run_start: i64,
    pub progress: &'a dyn Progress,
}

type Sink<'a> = Box<dyn FnMut(Vec<u8>) -> Result<TreeId> + 'a>;

/// New trees on their way to the batch, with their ids.
type TreeTx = std::sync::mpsc::SyncSender<(TreeId, Vec<u8>)>;

/// Trees waiting for [`store_trees`] at most: a few MiB.
const TREE_QUEUE: usize = 1024;

/// A tree sink: hashes every directory and sends the new ones to
/// [`store_trees`] (the id is needed at once, by the parent; the stored
/// bytes are not).
fn sink(algo: HashAlgo, store: Option<TreeTx>, known: Option<&HashSet<TreeId>>) -> Sink<'_> {
    Box::new(move |payload: Vec<u8>| {
        let id = TreeId(crate::hash::hash_bytes(algo, &payload));
        if let Some(tx) = &store {
            if !known.is_some_and(|k| k.contains(&id)) {
                tx.send((id, payload))
                    .map_err(|_| Error::Internal("the tree writer stopped".into()))?;
            }
        }
        Ok(id)
    })
}

/// Compress and pack the trees pass 2 sends, in the order it sends them
/// (so a run's packs are the same bytes every time), on a thread of its
/// own: compressing was a third of pass 2's time, on one core while the
/// other waited.
fn store_trees(
    batch: &Batch<'_>,
    trees: std::sync::mpsc::Receiver<(TreeId, Vec<u8>)>,
) -> Result<()> {
    for (id, payload) in trees {
        batch.put_with(StoreKind::Tree, id.0, || frame_tree(&payload))?;
    }
    Ok(())
}

fn flat(item: Item) -> Flat<Leaf, Meta> {
    match item {
        Item::Leaf(l) => Flat::Leaf(l),
        Item::Dir(m) => Flat::Dir(m),
    }
}

/// Add what folders kept whole hold to the counts of the paths walked:
/// the previous snapshot's totals less what the walked paths had there
/// (the rest is exactly the folders kept whole, unchanged). Their owners
/// are not known without reading them, so the previous snapshot's owner
/// names are kept beside the new ones.
fn add_kept(
    counts: &mut crate::plan::PlanCounts,
    prev: &SnapshotRecord,
    seen: &crate::plan::PlanCounts,
) {
    let s = &prev.summary;
    let files = s.files.saturating_sub(seen.files);
    counts.files += files;
    counts.unchanged += files;
    counts.bytes += s.bytes.saturating_sub(seen.bytes);
    counts.dirs += s.dirs.saturating_sub(seen.dirs);
    counts.symlinks += s.symlinks.saturating_sub(seen.symlinks);
    counts.specials += s.specials.saturating_sub(seen.specials);
    counts.uids.extend(prev.owners.users.iter().map(|u| u.0));
    counts.gids.extend(prev.owners.groups.iter().map(|g| g.0));
}

fn history_ids(h: Option<&History>) -> Vec<ObjectId> {
    h.map(|h| h.object_ids().collect()).unwrap_or_default()
}

fn nests(last: &mut Option<Vec<u8>>, p: &[u8]) -> bool {
    let n = last.as_ref().is_some_and(|a| pathbytes::is_under(p, a));
    *last = Some(p.to_vec());
    n
}

/// Pass 2's state.
struct Pass2<'a> {
    planner: PathPlanner<'a>,
    dups: Dups,
    src: TreeWriter<Leaf, Meta, Sink<'a>>,
    arch: TreeWriter<History, (), Sink<'a>>,
    prev_arch: Option<FlatCursor<'a, History, ()>>,
    /// The previous archive's next item: a history, or (`None`) a folder
    /// not yet entered, so a folder kept whole can be skipped unread.
    arch_next: Option<(Vec<u8>, Option<History>)>,
    last_old_arch: Option<Vec<u8>>,
    last_new_arch: Option<Vec<u8>>,
    /// Either archive has a path below another one's (the browsable tree
    /// may then need conflict resolution, which only a full render does).
    arch_nests: bool,
    cache: Option<cache::Writer>,
    /// The previous run's cache (records of folders kept whole come from it).
    cache_from: &'a cache::Reader,
    /// What the previous entries of the records seen add up to (with the
    /// previous snapshot's totals, what folders kept whole hold).
    prev_seen: crate::plan::PlanCounts,
    log: Writer<LogRec>,
    debug: bool,
    /// The differing part of the old and new renderings, when collected.
    diff: Option<(Vec<BrowsableEntry>, Vec<BrowsableEntry>)>,
    old_esc: &'a Escapes,
    new_esc: &'a Escapes,
    dropped: Vec<ObjectId>,
    decisions: Vec<Decision>,
    /// Retention cannot change any history of the previous archive (its
    /// bounds say so): a carried folder's archive folder is carried too.
    carry_archive: bool,
    /// The bounds of the histories written into the new archive.
    bounds: ArchiveBounds,
    /// A folder of the previous archive was carried unread (its bounds are
    /// the previous archive's).
    carried_unread: bool,
}

impl Pass2<'_> {
    /// The previous archive's next item (a folder is entered when the
    /// item after it is asked for).
    fn advance_archive(&mut self) -> Result<()> {
        self.arch_next = None;
        let Some(c) = self.prev_arch.as_mut() else {
            return Ok(());
        };
        match c.next()? {
            Some((p, Flat::Leaf(h))) => {
                self.arch_nests |= nests(&mut self.last_old_arch, &p);
                self.arch_next = Some((p, Some(h)));
            }
            Some((p, Flat::Dir(()))) => self.arch_next = Some((p, None)),
            None => {}
        }
        Ok(())
    }

    /// Archive paths before `upto` (all with `None`) that no source path
    /// names: only retention can change them.
    fn drain_archive(&mut self, upto: Option<&[u8]>) -> Result<()> {
        while let Some((p, _)) = &self.arch_next {
            if upto.is_some_and(|u| cmp_paths(p, u) != std::cmp::Ordering::Less) {
                break;
            }
            let Some((p, h)) = self.arch_next.take() else {
                break;
            };
            self.advance_archive()?;
            if let Some(h) = h {
                self.path(p, None, None, None, Some(h))?;
            }
        }
        Ok(())
    }

    /// A folder kept whole (its own record came just before): its source
    /// tree, its archive folder and its cache records are the previous
    /// ones, taken as they are. Retention is not applied inside it: a run
    /// that looks at the folder again (every full scan) does that.
    fn kept(&mut self, path: &[u8], id: TreeId) -> Result<()> {
        self.src.unchanged(path, id)?;
        self.carry_archive_folder(path)?;
        if let Some(w) = self.cache.as_mut() {
            w.carry_subtree(self.cache_from, path)?;
        }
        Ok(())
    }

    /// The previous archive's folder at `path`, if that is where it
    /// stands, taken into the new archive as it is, unread.
    fn carry_archive_folder(&mut self, path: &[u8]) -> Result<()> {
        if matches!(&self.arch_next, Some((p, None)) if p == path) {
            let arch = self.prev_arch.as_mut().and_then(FlatCursor::skip_dir);
            self.advance_archive()?;
            if let Some(a) = arch {
                self.arch.push_tree(path, (), a)?;
                self.carried_unread = true;
            }
        }
        Ok(())
    }

    /// A folder an ordinary run carried whole: its source tree and cache
    /// records are the previous ones. An unchanged path's history changes
    /// only by retention, so its archive folder is carried whole too when
    /// retention cannot change any history of the previous archive;
    /// otherwise its histories come through `drain_archive`, where
    /// retention applies as in every run.
    fn carried(&mut self, path: &[u8], id: TreeId) -> Result<()> {
        self.src.unchanged(path, id)?;
        if self.carry_archive {
            self.carry_archive_folder(path)?;
        }
        if let Some(w) = self.cache.as_mut() {
            w.carry_subtree(self.cache_from, path)?;
        }
        Ok(())
    }

    fn record(&mut self, rec: Rec) -> Result<()> {
        match rec {
            Rec::Same { path, id } => self.src.unchanged(&path, id),
            Rec::Kept { path, id } => self.kept(&path, id),
            Rec::Carried { path, id } => self.carried(&path, id),
            Rec::Gone { path, item } => {
                self.prev_seen.count_entry(&item);
                self.drain_archive(Some(&path))?;
                let h = self.take_history(&path)?;
                self.path(path, Some(item), None, None, h)
            }
            Rec::Cur {
                path,
                item,
                extra,
                prev,
            } => {
                self.drain_archive(Some(&path))?;
                let h = self.take_history(&path)?;
                let prev = match prev {
                    PrevAt::None => None,
                    PrevAt::Same => Some(item.clone()),
                    PrevAt::Other(p) => Some(*p),
                };
                if let Some(p) = &prev {
                    self.prev_seen.count_entry(p);
                }
                self.path(path, prev, Some(item), Some(extra), h)
            }
        }
    }

    fn take_history(&mut self, path: &[u8]) -> Result<Option<History>> {
        if matches!(&self.arch_next, Some((p, Some(_))) if p == path) {
            let h = self.arch_next.take().and_then(|(_, h)| h);
            self.advance_archive()?;
            return Ok(h);
        }
        Ok(None)
    }

    /// Plan one path and feed every output.
    fn path(
        &mut self,
        path: Vec<u8>,
        prev: Option<Item>,
        mut cur: Option<Item>,
        extra: Option<Option<cache::StatExtra>>,
        hist: Option<History>,
    ) -> Result<()> {
        let old_hist = hist.clone();
        self.decisions.clear();
        let kept = self.planner.step(
            prev.as_ref(),
            cur.as_mut(),
            hist,
            &mut self.dups,
            &mut self.decisions,
        );
        let is_file = matches!(cur, Some(Item::Leaf(Leaf::File { .. })));
        if self.debug && is_file && self.decisions.is_empty() {
            self.log.write((path.clone(), None))?;
        }
        let mut retention = false;
        for d in self.decisions.drain(..) {
            retention |= matches!(
                d,
                Decision::RetainDropVersion { .. } | Decision::RetainDropDeleted
            );
            self.log.write((path.clone(), Some(d)))?;
        }
        if old_hist != kept {
            if retention {
                let now = history_ids(kept.as_ref());
                self.dropped.extend(
                    history_ids(old_hist.as_ref())
                        .into_iter()
                        .filter(|id| !now.contains(id)),
                );
            }
            if let Some((o, n)) = self.diff.as_mut() {
                if let Some(h) = &old_hist {
                    render::render_history(&path, h, o);
                }
                if let Some(h) = &kept {
                    render::render_history(&path, h, n);
                }
            }
        }
        if let Some(h) = kept {
            self.arch_nests |= nests(&mut self.last_new_arch, &path);
            self.bounds.note(&h);
            self.arch.push(&path, Flat::Leaf(h))?;
        }
        if prev != cur {
            if let Some((o, n)) = self.diff.as_mut() {
                if let Some(p) = &prev {
                    o.extend(render::render_item(self.old_esc, &path, p));
                }
                if let Some(c) = &cur {
                    n.extend(render::render_item(self.new_esc, &path, c));
                }
            }
        }
        if let Some(item) = cur {
            if let (true, Some(w)) = (is_file, self.cache.as_mut()) {
                w.push(&path, extra.flatten())?;
            }
            self.src.push(&path, flat(item))?;
        }
        Ok(())
    }
}

/// Write the audit lines (after the commit, so the log never claims what
/// did not happen).
fn replay_log(
    log: &Spilled<LogRec>,
    old_esc: &Escapes,
    new_esc: &Escapes,
    layout: &Layout,
    dry: bool,
) -> Result<()> {
    crate::audit::log_reserved(new_esc, layout);
    let mut r = log.reader()?;
    while let Some((p, d)) = r.next()? {
        crate::audit::log_decision(layout, dry, old_esc, new_esc, &p, d.as_ref());
    }
    Ok(())
}

type SourceTree = TreeObject<Leaf, Meta>;

/// Is the source path a directory in a stored source tree? Memoised per
/// folder, for the few folders a browsable update asks about.
struct TreeLookup<'r> {
    repo: &'r LocalRepo,
    root: TreeId,
    dirs: Mutex<HashMap<Vec<u8>, Option<SourceTree>>>,
}

impl TreeLookup<'_> {
    fn dirs(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Option<SourceTree>>> {
        self.dirs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decode the tree of folder `dir` once (none if it is not a folder
    /// there), and its parents' on the way.
    fn ensure(&self, dir: &[u8]) {
        if self.dirs().contains_key(dir) {
            return;
        }
        let id = if dir.is_empty() {
            Some(self.root)
        } else {
            let parent = pathbytes::parent(dir);
            self.ensure(parent);
            let name = pathbytes::file_name(dir);
            self.dirs()
                .get(parent)
                .and_then(Option::as_ref)
                .and_then(|t| t.entries.iter().find(|n| n.name == name))
                .and_then(|n| n.dir.as_ref())
                .map(|(id, _)| *id)
        };
        let t = id.and_then(|id| tree::load_tree(self.repo, &id).ok());
        self.dirs().insert(dir.to_vec(), t);
    }

    /// `f` of the tree of folder `dir`: each question costs no copy of a
    /// listing.
    fn with_tree<R>(&self, dir: &[u8], f: impl FnOnce(Option<&SourceTree>) -> R) -> R {
        self.ensure(dir);
        f(self.dirs().get(dir).and_then(Option::as_ref))
    }

    fn is_dir(&self, p: &[u8]) -> bool {
        if p.is_empty() {
            return true;
        }
        let name = pathbytes::file_name(p);
        self.with_tree(pathbytes::parent(p), |t| {
            t.is_some_and(|t| {
                t.entries
                    .iter()
                    .any(|n| n.name == name && n.dir.is_some() && n.leaf.is_none())
            })
        })
    }
}

/// Entries placed per step when a first backup fills the browsable tree.
const FILL_RUN: usize = 8192;

/// Fill the empty browsable tree of a first backup from the stored trees,
/// a run of the lazy rendering at a time, so the rendering never exists
/// whole. Where the lazy rendering is not exact (reserved names escaped),
/// it is made whole from the loaded listing.
fn fill(m: &Materializer<'_>, repo: &LocalRepo, rec: &SnapshotRecord) -> Result<()> {
    let Some(mut render) = LazyRender::new(repo, rec)? else {
        let (e, a) = crate::repo::snapshot::load_snapshot(repo, rec)?;
        return crate::browsable::update::TreeDiff::between((&[], &[]), (&e, &a)).apply(m, &e);
    };
    // Nothing is removed from an empty tree, so no folder is ever pruned
    // and which ones are wanted does not matter.
    render.in_runs(FILL_RUN, &mut |run| m.apply(&[], run, &|_| true))?;
    Ok(())
}

/// The paths a watch run looks at again, from the paths events named:
/// each widened until its folder is one the previous snapshot has (a new
/// folder's contents are all new), an ignore file widened to its folder
/// (it changes what the whole folder holds), none below another. `None`:
/// a source root was named, so the whole run looks at everything.
fn scope_of(
    repo: &LocalRepo,
    rec: &SnapshotRecord,
    layout: &Layout,
    paths: &[Vec<u8>],
) -> Result<Option<walk::Scope>> {
    let prev = TreeLookup {
        repo,
        root: rec.root,
        dirs: Mutex::new(HashMap::new()),
    };
    let mut roots: Vec<Vec<u8>> = Vec::new();
    for p in paths {
        let mut p: &[u8] = p;
        if pathbytes::file_name(p) == crate::scan::IGNORE_FILE.as_bytes() {
            p = pathbytes::parent(p);
        }
        while !p.is_empty() && !prev.is_dir(pathbytes::parent(p)) {
            p = pathbytes::parent(p);
        }
        // A source's own folder (several sources) counts as its root.
        let r = match super::split_scope(layout, p) {
            Some((i, rel)) if rel.is_empty() && !layout.single() => layout.names[i].clone(),
            Some((_, b"")) => Vec::new(),
            Some(_) => p.to_vec(),
            None => Vec::new(),
        };
        roots.push(r);
    }
    roots.sort_by(|a, b| cmp_paths(a, b));
    roots.dedup();
    let mut kept: Vec<Vec<u8>> = Vec::new();
    for r in roots {
        let covered = kept.iter().any(|k| pathbytes::is_at_or_under(&r, k));
        if !covered {
            kept.push(r);
        }
    }
    if kept.is_empty() || kept.iter().any(|k| k.is_empty()) {
        return Ok(None);
    }
    let under = |p: &[u8]| kept.iter().any(|k| pathbytes::is_at_or_under(p, k));
    let mut refresh: Vec<Vec<u8>> = kept
        .iter()
        .map(|k| pathbytes::parent(k).to_vec())
        .filter(|p| !p.is_empty() && !under(p))
        .collect();
    refresh.sort_by(|a, b| cmp_paths(a, b));
    refresh.dedup();
    Ok(Some(walk::Scope {
        roots: kept,
        refresh,
    }))
}

/// Rewrite the previous format's stat cache for the latest snapshot (its
/// records are in the path order of the snapshot's files, which only the
/// snapshot's trees give), so the first run after the upgrade does not read
/// every file. The cache is disposable: a failure only costs that read.
fn upgrade_cache(repo: &LocalRepo, latest: &Snapshot) {
    let done = (|| -> Result<bool> {
        let limit = latest.record.source_limit();
        let mut cur = FlatCursor::<Leaf, Meta>::new(repo, &latest.record.root, None, limit)?;
        let mut files = std::iter::from_fn(|| loop {
            match cur.next() {
                Ok(Some((p, Flat::Leaf(Leaf::File { .. })))) => return Some(Ok(p)),
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            }
        });
        cache::upgrade_v2(repo, &latest.id, &mut files)
    })();
    match done {
        Ok(true) => tracing::debug!("stat cache upgraded to its folder-indexed format"),
        Ok(false) => {}
        Err(e) => tracing::debug!("stat cache not upgraded ({e}): every file is read once"),
    }
}

/// A writer of scratch records: in memory when the previous snapshot
/// says this run's records will fit (a 1% rerun of 100,000 files then
/// never encodes one), else in a file from the start — a first backup, or
/// a tree of millions, whose peak memory this must not raise.
fn scratch_writer<T: serde::Serialize + spill::Footprint>(
    c: &Ctx<'_>,
    scratch: &Path,
) -> Result<Writer<T>> {
    let expected = c.latest.as_ref().map(|l| {
        let s = &l.record.summary;
        // Paths gone since, and a folder's closing record, come on top.
        (s.files + s.dirs + s.symlinks + s.specials).saturating_mul(5) / 4
    });
    match expected {
        Some(n) if spill::fits_in_memory::<T>(n) => Ok(Writer::in_memory(scratch)),
        _ => Writer::create(scratch),
    }
}

/// What pass 2 leaves for the commit and the browsable update.
struct Planned {
    root_id: TreeId,
    arch_id: TreeId,
    counts: crate::plan::PlanCounts,
    log: Spilled<LogRec>,
    diff: Option<(Vec<BrowsableEntry>, Vec<BrowsableEntry>)>,
    dropped: Vec<ObjectId>,
    arch_nests: bool,
    cache: Option<cache::Writer>,
    old_esc: Escapes,
    new_esc: Escapes,
    /// The new archive's bounds, when known (see `Pass2::carried_unread`).
    bounds: Option<ArchiveBounds>,
}

/// The DUPLICATE question, then pass 2: stream the spill back beside the
/// previous archive, plan every path and build both new trees.
#[allow(clippy::too_many_arguments)] // one call site: the run's parts
fn plan(
    c: &Ctx<'_>,
    walked: walk::Walked,
    spilled: Spilled<Rec>,
    store: Option<TreeTx>,
    cache_reader: &cache::Reader,
    prev_bounds: Option<ArchiveBounds>,
    scratch: &Path,
    report: &mut BackupReport,
) -> Result<Planned> {
    let s = &c.opts.settings;
    let prev_rec = c.latest.as_ref().map(|l| &l.record);
    // DUPLICATE: every kept top-level content must be known before the
    // first newcomer is decided, and they come from anywhere in the tree.
    let mut dups = Dups::new(walked.newcomers);
    // Folders kept whole hold kept files too; they are read only when a
    // newcomer's content was already stored (else it cannot be theirs).
    let read_kept = walked.kept_whole + walked.carried_whole > 0 && walked.known_newcomer;
    if !dups.is_empty() && (walked.any_top_kept || read_kept) {
        let mut r = spilled.reader()?;
        while let Some(rec) = r.next()? {
            if let (Rec::Kept { id, .. } | Rec::Carried { id, .. }, true, Some(repo), Some(prev)) =
                (&rec, read_kept, c.repo, prev_rec)
            {
                let mut kept = FlatCursor::<Leaf, Meta>::new(repo, id, None, prev.source_limit())?;
                while let Some((_, f)) = kept.next()? {
                    if let Flat::Leaf(Leaf::File { id, dup: false, .. }) = f {
                        dups.note_top(&id);
                    }
                }
            }
            if let Rec::Cur { item, prev, .. } = &rec {
                let p = match prev {
                    PrevAt::None => None,
                    PrevAt::Same => Some(item),
                    PrevAt::Other(p) => Some(p.as_ref()),
                };
                if let (
                    Change::Unchanged { dup: false } | Change::Modified,
                    Item::Leaf(Leaf::File { id, .. }),
                ) = (classify(p, Some(item)), item)
                {
                    dups.note_top(id);
                }
            }
        }
    }
    crate::log::mem_phase("duplicates known");

    // Pass 2.
    let popts = PlanOptions {
        max_versions: s.max_versions,
        deleted_max_age_ns: s.deleted_max_age_days.map(crate::retention::days_ns),
        now_ns: c.run_start,
    };
    let prev_arch = match (c.repo, prev_rec) {
        (Some(r), Some(rec)) => Some(FlatCursor::new(r, &rec.archive, None, Limit::archive())?),
        _ => None,
    };
    let cache_w = c.writer.map(cache::Writer::create).transpose()?;
    let (old_esc, new_esc) = (walked.old_esc, walked.new_esc);
    let mut p2 = Pass2 {
        planner: PathPlanner::new(&popts),
        dups,
        src: TreeWriter::new(sink(c.algo, store.clone(), Some(&walked.known_trees))),
        arch: TreeWriter::new(sink(c.algo, store, None)),
        prev_arch,
        arch_next: None,
        last_old_arch: None,
        last_new_arch: None,
        arch_nests: false,
        cache: cache_w,
        cache_from: cache_reader,
        prev_seen: crate::plan::PlanCounts::default(),
        log: scratch_writer(c, scratch)?,
        debug: tracing::enabled!(tracing::Level::DEBUG),
        diff: None,
        old_esc: &old_esc,
        new_esc: &new_esc,
        dropped: Vec::new(),
        decisions: Vec::new(),
        carry_archive: prev_bounds.is_some_and(|b| crate::plan::retention_is_idle(&b, &popts)),
        bounds: ArchiveBounds::default(),
        carried_unread: false,
    };
    p2.advance_archive()?;
    // A run after an empty snapshot fills the browsable tree like a first
    // one; any other updates it from the differing part only.
    let fresh = !walked.had_prev && p2.arch_next.is_none();
    if !fresh && c.writer.is_some() {
        p2.diff = Some((Vec::new(), Vec::new()));
    }
    let mut r = spilled.into_reader()?;
    while let Some(rec) = r.next()? {
        p2.record(rec)?;
    }
    drop(r);
    p2.drain_archive(None)?;
    // Moved into a block of its own so that what is left of `p2` (which
    // borrows the escapes) is dropped before they are returned.
    let bounds;
    let (planner, src, arch, cache_w, log, diff, dropped, arch_nests, prev_seen) = {
        let p2 = p2;
        let Pass2 {
            planner,
            src,
            arch,
            cache,
            log,
            diff,
            dropped,
            arch_nests,
            prev_seen,
            bounds: seen,
            carried_unread,
            ..
        } = p2;
        bounds = match (carried_unread, prev_bounds) {
            (false, _) => Some(seen),
            (true, Some(mut b)) => {
                b.widen(&seen);
                Some(b)
            }
            (true, None) => None,
        };
        (
            planner, src, arch, cache, log, diff, dropped, arch_nests, prev_seen,
        )
    };
    let root_id = src.finish()?;
    let arch_id = arch.finish()?;
    let mut counts = planner.counts;
    if walked.carried_whole > 0 {
        counts.add_unchanged(&walked.carried);
    }
    if let (true, Some(prev)) = (walked.kept_whole > 0, prev_rec) {
        tracing::debug!("{} folders kept whole, unread", walked.kept_whole);
        add_kept(&mut counts, prev, &prev_seen);
    }
    let log = log.finish()?;
    super::fill_counts(report, &counts);
    crate::log::mem_phase("planned");
    Ok(Planned {
        root_id,
        arch_id,
        counts,
        log,
        diff,
        dropped,
        arch_nests,
        cache: cache_w,
        old_esc,
        new_esc,
        bounds,
    })
}

pub(super) fn run(c: Ctx<'_>, report: &mut BackupReport) -> Result<()> {
    let s = &c.opts.settings;
    let scan_opts = super::scan_options(s, c.root)?;
    let source_records = super::source_records(c.layout)?;
    // --rehash reads every file: it also checks the objects it finds
    // stored and re-stores damaged ones (the repair `verify` advises).
    let batch = c.writer.map(|r| {
        if c.opts.rehash {
            Batch::repairing(r)
        } else {
            Batch::new(r)
        }
    });
    // Scratch files go to the repository's tmp/ in a real run; a dry run
    // writes nothing there (the repository may not even be writable).
    let scratch = c.writer.map_or_else(std::env::temp_dir, LocalRepo::tmp_dir);
    let prev_rec = c.latest.as_ref().map(|l| &l.record);
    if let (Some(r), false, Some(l)) = (c.writer, c.opts.rehash, &c.latest) {
        if cache::needs_upgrade(r) {
            upgrade_cache(r, l);
        }
    }
    let cache_reader = match (c.repo, c.opts.rehash, &c.latest) {
        (Some(r), false, Some(l)) => cache::Reader::open(r, Some(&l.id)),
        _ => cache::Reader::empty(),
    };
    let prev_bounds = match (c.repo, &c.latest) {
        (Some(r), Some(l)) => r.read_archive_bounds(&l.id),
        _ => None,
    };
    // A watch run looks again only at the paths events named, when there
    // is a previous snapshot to take everything else from.
    let scope = match (c.repo, &c.latest, &c.opts.scope) {
        (Some(r), Some(l), Some(paths)) => scope_of(r, &l.record, c.layout, paths)?,
        _ => None,
    };
    c.progress.phase("backing up", 0, 0);
    crate::log::mem_phase("start");
    let mut spill = scratch_writer(&c, &scratch)?;
    let mut walked = walk::walk(
        WalkInput {
            repo: c.repo,
            prev_root: prev_rec.map(|r| r.root),
            cache: &cache_reader,
            algo: c.algo,
            batch: batch.as_ref(),
            layout: c.layout,
            opts: &scan_opts,
            source_metas: source_records.iter().map(|r| r.meta.clone()).collect(),
            follow: s.follow_symlinks,
            run_start: c.run_start,
            on_error: s.on_error,
            progress: c.progress,
            scratch: &scratch,
            scope,
        },
        &mut spill,
    )?;
    c.progress.finish();
    let spilled = spill.finish()?;
    crate::log::mem_phase("walked");
    report.excluded = walked.excluded;
    report.files_read = walked
        .stats
        .files_read
        .load(std::sync::atomic::Ordering::Relaxed);
    report.carried_folders = walked.carried_whole;
    report.new_objects = walked
        .stats
        .new_objects
        .load(std::sync::atomic::Ordering::Relaxed);
    report.new_bytes = walked
        .stats
        .new_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    super::report_issues(std::mem::take(&mut walked.issues), s.on_error, report)?;

    let cache_complete = walked.cache_complete;
    // Every object of the run is queued now (pass 2 queues trees only):
    // they are made durable and moved into the store on another thread
    // while pass 2 plans, so the commit after it syncs only the tree packs.
    // Like any commit's objects, they are unreferenced (and collected) if
    // the run stops before its snapshot is written.
    let planned = std::thread::scope(|sc| -> Result<Planned> {
        let objects = batch.as_ref().map(|b| sc.spawn(move || b.commit_objects()));
        let (store, trees) = match batch.as_ref() {
            Some(b) => {
                let (tx, rx) = std::sync::mpsc::sync_channel(TREE_QUEUE);
                (Some(tx), Some(sc.spawn(move || store_trees(b, rx))))
            }
            None => (None, None),
        };
        // Every sender is gone when `plan` returns, so the tree writer
        // ends; its own error comes first (pass 2 then only saw it stop).
        let planned = plan(
            &c,
            walked,
            spilled,
            store,
            &cache_reader,
            prev_bounds,
            &scratch,
            report,
        );
        if let Some(h) = trees {
            h.join()
                .unwrap_or_else(|_| Err(Error::Internal("storing trees panicked".into())))?;
        }
        if let Some(h) = objects {
            h.join()
                .unwrap_or_else(|_| Err(Error::Internal("committing objects panicked".into())))?;
        }
        planned
    })?;
    let Planned {
        root_id,
        arch_id,
        counts,
        log,
        diff,
        dropped,
        arch_nests,
        cache: cache_w,
        old_esc,
        new_esc,
        bounds,
    } = planned;
    report.changed = c
        .latest
        .as_ref()
        .is_none_or(|p| p.record.root != root_id || p.record.archive != arch_id);

    let (Some(repo), Some(batch), Some(cache_w)) = (c.writer, batch.as_ref(), cache_w) else {
        replay_log(&log, &old_esc, &new_esc, c.layout, true)?;
        return Ok(());
    };
    if !report.changed && !c.opts.always_snapshot {
        let latest = c.latest.as_ref().map(|p| p.id);
        // Objects queued without a change to any tree re-store missing or
        // damaged ones (--rehash): they are committed all the same.
        batch.commit()?;
        report.repaired_objects = batch.repaired();
        if let (true, Some(l)) = (needs_relink(&c, report), &c.latest) {
            relink_repaired(repo, l)?;
        }
        tracing::info!("No changes: nothing to back up, no new snapshot");
        if let (Some(b), Some(l), false) = (&bounds, &c.latest, bounds == prev_bounds) {
            save_bounds(repo, &l.id, b);
        }
        // Nothing read and every file vouched for: the cache on disk is
        // already exactly what was written again.
        if report.files_read == 0 && cache_complete && report.problems.is_empty() {
            cache_w.discard();
        } else {
            cache_w.finish(latest)?;
        }
        report.snapshot = latest.map(|i| i.short());
        if !c.collect {
            return Ok(());
        }
        return super::policy_gc_if_due(repo, s, c.run_start, report);
    }

    // Commit: objects and trees, then the record.
    batch.commit()?;
    report.repaired_objects = batch.repaired();
    crate::log::mem_phase("batch committed");
    let mut record = super::snapshot_record(
        c.latest.as_ref(),
        c.run_start,
        source_records,
        root_id,
        arch_id,
        &counts,
        report,
    );
    // Above every record's number, a damaged one's included (not only the
    // parent's: see `Scan::next_seq`).
    record.seq = c.next_seq;
    let snap_id = snapshot::write(batch, &record)?;
    report.snapshot = Some(snap_id.short());
    replay_log(&log, &old_esc, &new_esc, c.layout, false)?;
    drop(log);
    crate::log::mem_phase("logged");

    // Derived data: the browsable tree, then the cache.
    let m = Materializer::new(repo, &repo.root);
    // The snapshot is committed: from here on a failure leaves the tree
    // incomplete (and says so), never the run failed.
    let placed = (|| -> Result<()> {
        match diff {
            None => fill(&m, repo, &record)?,
            Some((mut o, mut n)) if old_esc == new_esc && !arch_nests => {
                o.sort_by(|a, b| cmp_paths(&a.path, &b.path));
                n.sort_by(|a, b| cmp_paths(&a.path, &b.path));
                let lookup = TreeLookup {
                    repo,
                    root: root_id,
                    dirs: Mutex::new(HashMap::new()),
                };
                m.apply(&o, &n, &|p: &[u8]| {
                    render::wants_dir_by(&new_esc, p, &|q| lookup.is_dir(q))
                })?;
            }
            _ => {
                // Escapes changed or the archive nests: only whole renderings
                // are exact (rare; this loads both listings).
                let (ne, na) = crate::repo::snapshot::load_snapshot(repo, &record)?;
                let (oe, oa) = match &c.latest {
                    Some(l) => crate::repo::snapshot::load_snapshot(repo, &l.record)?,
                    None => Default::default(),
                };
                crate::browsable::update::TreeDiff::between((&oe, &oa), (&ne, &na))
                    .apply(&m, &ne)?;
            }
        }
        Ok(())
    })();
    if let Err(e) = placed {
        m.record_error(b"", e);
    }
    let up = crate::browsable::update::finish_tree_update(repo, &m, &snap_id)?;
    if needs_relink(&c, report) {
        let snap = Snapshot {
            id: snap_id,
            record: record.clone(),
        };
        relink_repaired(repo, &snap)?;
    }
    crate::log::mem_phase("browsable updated");
    report.add_tree_update(up, |p| c.layout.browsable_for_log(p));
    super::warn_link_copies(report);
    if counts.specials > 0 {
        tracing::info!(
            "{} special files (FIFOs, sockets, devices) are recorded in snapshot {}; the browsable tree shows none of them (`trove restore` recreates them)",
            counts.specials,
            snap_id.short()
        );
    }
    cache_w.finish(Some(snap_id))?;
    if let Some(b) = &bounds {
        save_bounds(repo, &snap_id, b);
    }
    crate::log::mem_phase("cache saved");
    let latest = Snapshot {
        id: snap_id,
        record,
    };
    super::collect_after_run(repo, s, c.run_start, c.collect, &dropped, &latest, report)
}

/// Record the new archive's bounds for the next run; a failure only makes
/// that run read the whole archive, so it is a warning.
fn save_bounds(repo: &LocalRepo, snap: &SnapshotId, b: &ArchiveBounds) {
    if let Err(e) = repo.write_archive_bounds(snap, b) {
        tracing::warn!("{e}: the next run reads the whole archive of versions and deleted files");
    }
}

/// Whether the browsable tree must be brought back to the snapshot after
/// the commit: damaged objects were replaced, or a --rehash run stored
/// objects again — a deleted object comes back as a new inode, which the
/// browsable copy of its file is not linked to.
fn needs_relink(c: &Ctx<'_>, report: &BackupReport) -> bool {
    report.repaired_objects > 0 || (c.opts.rehash && report.new_objects > 0)
}

/// After a commit re-stored damaged objects, the browsable tree still links
/// the damaged inodes (now in quarantine): bring it back to the snapshot
/// with the same reconciliation `trove materialize` runs.
fn relink_repaired(repo: &LocalRepo, snap: &Snapshot) -> Result<()> {
    let r = crate::browsable::apply::rebuild(repo, snap, None, false)?;
    tracing::info!(
        "browsable tree relinked after the repair: {} linked, {} quarantined",
        r.linked,
        r.quarantined
    );
    Ok(())
}
