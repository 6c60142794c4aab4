//! Pass 1 of a streaming run (docs/DESIGN.md "Streaming runs"): the
//! sources walked one directory at a time in path order, with the previous
//! snapshot's source tree walked alongside (a directory's previous tree is
//! decoded when the walk enters it) and the stat cache read alongside too
//! (its records line up with the previous files in path order).
//!
//! Each path comes out as one record of the merged walk, with its current
//! entry (hashed: vouched for by the cache or read) and its previous one,
//! appended to a spill file that pass 2 streams back. Memory is the open
//! directories, a bounded look-ahead of listed directories, two windows of
//! records (one whose files are being read, one being filled), and the
//! newcomers' contents (the one global question, DUPLICATE, needs them).
//!
//! Listing and stat'ing directories and decoding previous trees run ahead
//! of the walk on lister threads; reading files runs on a reader thread
//! (in parallel on the rayon pool), one window while the walk fills the
//! next.

use super::spill::{PrevAt, Rec, SpillWriter};
use super::ReadStats;
use crate::audit::Layout;
use crate::browsable::render::Escapes;
use crate::config::OnError;
use crate::error::{Error, IoContext, Result};
use crate::id::{HashAlgo, ObjectId, TreeId};
use crate::local::cache::{self, StatExtra};
use crate::local::objects::{self, Batch, ReadFailure};
use crate::local::LocalRepo;
use crate::model::{Item, Leaf, Meta};
use crate::pathbytes;
use crate::plan::{classify, Change};
use crate::progress::Progress;
use crate::repo::tree::{self, Node, TreeObject};
use crate::scan::{DirListing, DirScanner, DirTask, Issue, IssueKind};
use rayon::prelude::*;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering as AtOrd;
use std::sync::{mpsc, Arc, Condvar, Mutex};

/// Records held back until their files are read, at most.
const WINDOW_RECORDS: usize = 8192;
/// Bytes of files to read held back, at most (one window is read in
/// parallel, so this bounds how long the walk waits for its reads).
const WINDOW_BYTES: u64 = 64 << 20;
/// Files read at once (see `walk`).
const READERS: usize = 8;
/// Directories of one folder listed ahead of the walk.
const LOOKAHEAD: usize = 16;

/// The unit of work of a lister thread: what listing one directory needs,
/// its scan (none for a folder only the previous snapshot has, or one not
/// descended into) and its previous tree.
struct ListingJob {
    scan: Option<(usize, DirTask)>,
    prev: Option<TreeId>,
}

/// A listed directory: the result of a [`ListingJob`], its current listing
/// and its previous snapshot's tree, decoded.
struct LoadedDir {
    listing: Option<DirListing>,
    prev: Option<Result<TreeObject<Leaf, Meta>>>,
}

/// Where a [`ListingSlot`]'s job is: waiting, being listed, listed, or
/// handed to the walk.
enum ListingState {
    Pending(ListingJob),
    Running,
    Done(LoadedDir),
    Taken,
}

/// One directory's listing, made by a lister thread ahead of the walk or,
/// if none got to it yet, by the walk itself.
struct ListingSlot {
    state: Mutex<ListingState>,
    done: Condvar,
}

impl ListingSlot {
    fn new(job: ListingJob) -> Arc<ListingSlot> {
        Arc::new(ListingSlot {
            state: Mutex::new(ListingState::Pending(job)),
            done: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ListingState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Do the job unless someone already took it.
    fn run(&self, env: &ListingSources<'_>) {
        let job = {
            let mut st = self.lock();
            match std::mem::replace(&mut *st, ListingState::Running) {
                ListingState::Pending(j) => j,
                other => {
                    *st = other;
                    return;
                }
            }
        };
        // A panic here must not leave the walk waiting for this slot.
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| env.load(job)))
            .unwrap_or_else(|_| LoadedDir {
                listing: None,
                prev: Some(Err(crate::error::Error::Aborted(
                    "a lister thread failed (a bug: please report it)".into(),
                ))),
            });
        *self.lock() = ListingState::Done(loaded);
        self.done.notify_all();
    }

    /// The listing: made here if no lister started it, else waited for.
    fn take(&self, env: &ListingSources<'_>) -> LoadedDir {
        let mut st = self.lock();
        loop {
            match std::mem::replace(&mut *st, ListingState::Taken) {
                ListingState::Pending(job) => {
                    drop(st);
                    return env.load(job);
                }
                ListingState::Done(l) => return l,
                ListingState::Running => {
                    *st = ListingState::Running;
                    st = self.done.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                ListingState::Taken => {
                    return LoadedDir {
                        listing: None,
                        prev: None,
                    }
                }
            }
        }
    }
}

/// What a [`ListingJob`] reads from: the repository (previous trees) and
/// one scanner per source.
struct ListingSources<'a> {
    repo: Option<&'a LocalRepo>,
    scanners: Vec<DirScanner<'a>>,
}

impl ListingSources<'_> {
    fn load(&self, job: ListingJob) -> LoadedDir {
        LoadedDir {
            listing: job
                .scan
                .and_then(|(i, t)| self.scanners.get(i).map(|s| s.list(&t))),
            prev: job
                .prev
                .and_then(|id| self.repo.map(|r| tree::load_tree(r, &id))),
        }
    }
}

/// The queue the lister threads take [`ListingSlot`]s from, in the order
/// the walk will need them.
#[derive(Default)]
struct ListingQueue {
    jobs: Mutex<(VecDeque<Arc<ListingSlot>>, bool)>,
    more: Condvar,
}

impl ListingQueue {
    fn push(&self, s: Arc<ListingSlot>) {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .push_back(s);
        self.more.notify_one();
    }

    /// Jobs needed before any queued one (a folder the walk just entered:
    /// its first subdirectories come next), kept in their order.
    fn push_first(&self, slots: Vec<Arc<ListingSlot>>) {
        if slots.is_empty() {
            return;
        }
        let mut q = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        for s in slots.into_iter().rev() {
            q.0.push_front(s);
        }
        drop(q);
        self.more.notify_all();
    }

    fn close(&self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.more.notify_all();
    }

    /// The next job, or `None` once closed.
    fn pop(&self) -> Option<Arc<ListingSlot>> {
        let mut q = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(s) = q.0.pop_front() {
                return Some(s);
            }
            if q.1 {
                return None;
            }
            q = self.more.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Why a previous entry is kept as the current one without being looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Carry {
    /// It could not be looked at (unreadable, unlistable, a loop, a failed
    /// read): kept, said so, and read again next time.
    Problem,
    /// A watch run did not look at it (no event named it): kept as it was,
    /// with its stat cache record.
    Scope,
    /// It came from `backup --stdin` (a file, or a folder holding one):
    /// no source has it, so it is kept as it was and never read.
    Stdin,
}

/// A subdirectory the walk will descend into once it reaches its path:
/// its (pending) listing and how its previous contents are treated.
struct SubdirToWalk {
    slot: Arc<ListingSlot>,
    prev_id: Option<TreeId>,
    /// Every previous entry below is kept as it was.
    carry_all: Option<Carry>,
    /// A watch run's folder above the paths events named: the task to
    /// look at those paths with (none if the folder is no longer one the
    /// scan enters).
    partial: Option<Option<(usize, DirTask)>>,
    /// The folder is in the new listing (else only its previous contents
    /// are walked, to report them gone).
    current: bool,
}

impl SubdirToWalk {
    /// A previous folder a watch run keeps as it was.
    fn kept(id: TreeId) -> SubdirToWalk {
        SubdirToWalk {
            slot: ListingSlot::new(ListingJob {
                scan: None,
                prev: Some(id),
            }),
            prev_id: Some(id),
            carry_all: Some(Carry::Scope),
            partial: None,
            current: true,
        }
    }
}

/// One name of a directory with both sides of the merge: its current
/// entry, its previous one, and the subdirectory to walk if it is a folder.
struct MergedEntry {
    path: Vec<u8>,
    cur: Option<(Item, Option<StatExtra>)>,
    prev: Option<Item>,
    /// Keep the previous entry if there is no current one.
    carry: Option<Carry>,
    subdir: Option<SubdirToWalk>,
    /// A previous folder kept whole, unread: its tree (a watch run's folder
    /// outside the paths events named, whose cache records all vouch).
    whole: Option<TreeId>,
}

/// A directory on the walk's stack: the merged names it still has to
/// visit, in path order.
struct DirBeingWalked {
    steps: VecDeque<MergedEntry>,
    /// The child slots of `steps` not yet given to the listers.
    unqueued: VecDeque<Arc<ListingSlot>>,
    /// Emit enter/leave marks (the folder is in the new listing).
    current: bool,
    /// The cache records of its previous file entries, in order (none if
    /// the cache has none for it).
    records: std::vec::IntoIter<Option<StatExtra>>,
}

/// A record of the read window (a path, or a folder's enter or leave mark),
/// held back until the window's files are read.
enum WindowRecord {
    Path {
        path: Vec<u8>,
        cur: Option<(Item, Option<StatExtra>)>,
        prev: Option<Item>,
        read: bool,
        /// Its read stored a content the repository did not have.
        fresh: bool,
        /// A file the cache vouched for (not read: its record stays).
        vouched: bool,
    },
    /// A previous folder kept whole (after its own path record).
    Kept {
        path: Vec<u8>,
        id: TreeId,
    },
    Enter {
        path: Vec<u8>,
        prev_id: Option<TreeId>,
    },
    Leave,
}

/// A window handed to the reader: its records, and which of them wait
/// for their file's read (in the order the reads were sent).
struct InFlight {
    window: Vec<WindowRecord>,
    todo: Vec<usize>,
}

/// What reading one file gives: its extended attributes and content.
type ReadResult = std::result::Result<(crate::model::Xattrs, objects::Ingested), ReadFailure>;

/// The walk's end of the file reader: windows' paths go out, their
/// results come back in the same order.
struct ReaderLink {
    jobs: mpsc::SyncSender<Vec<Vec<u8>>>,
    done: mpsc::Receiver<Result<Vec<ReadResult>>>,
}

/// A walk commits the objects it has queued once this many files or bytes
/// wait in `tmp/`, instead of holding all of a first backup's there until
/// its end: creations in one folder of millions of entries contend on its
/// lock and cost more each, and the 3,000,000 renames out of it took 75 s
/// after pass 2 (the first backup of 3,000,000 files went from 542 to
/// 516 s with this alone). A run of fewer files commits once, at its end,
/// as before.
///
/// The count grows with the run: a commit waits for at least half as many
/// files as the run has already committed (up to [`COMMIT_MOST_FILES`]).
/// Each commit's sync writes every block of the store's fan-out folders
/// that its moves touched, and a fixed count touches most of them every
/// time, so the folder writes of a first backup grew with the square of
/// its size: at 3,000,000 files, 46 commits wrote 19.2 GB for 3 GB of
/// files; with a count that grows, the commits number about ten and the
/// folders are written a few times over, not dozens.
const COMMIT_EVERY_FILES: u64 = 65_536;
const COMMIT_MOST_FILES: u64 = 1 << 20;
const COMMIT_EVERY_BYTES: u64 = 4 << 30;

/// `TROVE_COMMIT_EVERY`, a fixed count that replaces the growing one: the
/// tests that kill a walk between and inside its commits set it low, so a
/// tree of thousands of files commits at known points.
fn commit_every_fixed() -> Option<u64> {
    std::env::var("TROVE_COMMIT_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
}

/// How many queued files make a commit once the walk's commits have put
/// `committed` in the store: [`COMMIT_EVERY_FILES`] at first, then half
/// the committed count, never more than [`COMMIT_MOST_FILES`].
fn commit_due(committed: u64) -> u64 {
    (committed / 2).clamp(COMMIT_EVERY_FILES, COMMIT_MOST_FILES)
}

/// What the file reader needs to read and store a window's files.
struct ReadEnv<'a> {
    algo: HashAlgo,
    batch: Option<&'a Batch<'a>>,
    layout: &'a Layout,
    follow: bool,
    /// Record extended attributes of files (read beside their content).
    xattrs: bool,
    progress: &'a dyn Progress,
    stats: &'a ReadStats,
    /// A fixed count of queued objects that makes the reader commit, in
    /// place of [`commit_due`]'s (see `commit_if_due`).
    commit_every: Option<u64>,
}

impl ReadEnv<'_> {
    /// Read (and store) the files of one window, in parallel on the rayon
    /// pool; results in the order of `paths`.
    fn read(&self, paths: &[Vec<u8>]) -> Vec<ReadResult> {
        paths
            .par_iter()
            .map(|p| {
                let fs_path = self.layout.fs_path(p);
                let r = objects::ingest(self.algo, self.batch, &fs_path, self.follow)
                    .map(|ing| (crate::scan::xattrs_of(self.xattrs, &fs_path), ing));
                self.stats.files_read.fetch_add(1, AtOrd::Relaxed);
                if let Ok((_, ing)) = &r {
                    if ing.stored {
                        self.stats.new_objects.fetch_add(1, AtOrd::Relaxed);
                        self.stats.new_bytes.fetch_add(ing.size, AtOrd::Relaxed);
                    }
                    self.progress.advance(1, ing.size);
                }
                r
            })
            .collect()
    }

    /// Commit the objects queued so far when enough of them wait (see
    /// [`COMMIT_EVERY_FILES`]). Called by the reader between windows, the
    /// only time nothing is being queued: a commit must not overlap a
    /// queueing (its check of the store could race the move). Objects in
    /// the store before their snapshot is written are, like those of any
    /// commit, unreferenced if the run stops first, and `gc` collects them.
    fn commit_if_due(&self) -> Result<()> {
        let Some(b) = self.batch else {
            return Ok(());
        };
        let (files, bytes) = b.queued();
        let due = self
            .commit_every
            .unwrap_or_else(|| commit_due(b.committed()));
        if files >= due || bytes >= COMMIT_EVERY_BYTES {
            b.commit_objects()?;
        }
        Ok(())
    }
}

/// A folder entered and not yet left, as the finishing of records sees
/// it.
struct OpenMark {
    path: Vec<u8>,
    prev_id: Option<TreeId>,
    /// Every record below it so far equals the previous one.
    same: bool,
    /// ... and would be written again exactly (cache records included):
    /// its records are held, and it may be carried whole. Only the
    /// innermost marks have it (a record that clears it clears it for
    /// every open folder, as they all hold that record).
    carry: bool,
    /// Where its records start in `Walker::held`.
    held_at: usize,
}

/// Records held back for folders that may be carried whole, at most
/// (the direct entries of the open folders: a folder wider than this is
/// spilled as before).
const HELD_MAX: usize = 16384;

/// The paths a watch run looks at again (everything else keeps its
/// previous state): `roots`, sorted and none below another; `refresh`,
/// the folders holding them, whose own metadata is read again (an entry
/// created, removed or renamed in a folder changes its mtime, and inotify
/// names only the entry).
pub(super) struct Scope {
    pub roots: Vec<Vec<u8>>,
    pub refresh: Vec<Vec<u8>>,
}

enum Relation {
    /// At or below a root: looked at again.
    Inside,
    /// Above a root: walked through.
    Ancestor,
    /// Neither: kept.
    Outside,
}

impl Scope {
    fn relation(&self, p: &[u8]) -> Relation {
        let mut rel = Relation::Outside;
        for r in &self.roots {
            if pathbytes::is_at_or_under(p, r) {
                return Relation::Inside;
            }
            if pathbytes::is_under(r, p) {
                rel = Relation::Ancestor;
            }
        }
        rel
    }
}

/// What pass 1 hands to pass 2.
pub(super) struct Walked {
    pub newcomers: Vec<ObjectId>,
    /// A file that is unchanged and not a duplicate, or modified: then the
    /// DUPLICATE question needs a look at every such file.
    pub any_top_kept: bool,
    pub issues: Vec<Issue>,
    pub excluded: u64,
    pub stats: ReadStats,
    /// Names at the top of the new and previous listings that bear on
    /// reserved-name escapes.
    pub new_esc: Escapes,
    pub old_esc: Escapes,
    /// Every tree of the previous source tree (they exist in the store).
    pub known_trees: HashSet<TreeId>,
    /// The cache vouched for every previous file it could.
    pub cache_complete: bool,
    /// The previous listing had any entry.
    pub had_prev: bool,
    /// Folders kept whole (`Rec::Kept`).
    pub kept_whole: u64,
    /// Folders an ordinary run carried whole (`Rec::Carried`), and what
    /// their entries add to the counts.
    pub carried_whole: u64,
    pub carried: crate::plan::PlanCounts,
    /// A newcomer's content was in the repository before this run (it may
    /// then be a duplicate of a file inside a folder kept whole).
    pub known_newcomer: bool,
}

/// The walk's state.
struct Walker<'a> {
    env: &'a ListingSources<'a>,
    queue: &'a ListingQueue,
    layout: &'a Layout,
    run_start: i64,
    on_error: OnError,
    cache: &'a cache::Reader,
    cache_complete: bool,
    kept_whole: u64,
    known_newcomer: bool,
    spill: &'a mut SpillWriter,
    window: Vec<WindowRecord>,
    window_bytes: u64,
    /// The window whose files the reader is reading.
    in_flight: Option<InFlight>,
    reader: ReaderLink,
    /// Enter marks not yet left, outermost first.
    same: Vec<OpenMark>,
    /// Ordinary runs carry a folder whole when nothing below it changed
    /// (not watch runs, which carry their own way; not with debug lines,
    /// which name every file).
    carry_enabled: bool,
    /// Final records of the open folders that may still be carried whole
    /// (their marks are the innermost ones, `carry` set), in path order.
    held: Vec<Rec>,
    /// What the entries below folders carried whole count (as the planner
    /// counts an unchanged entry).
    carried: crate::plan::PlanCounts,
    carried_whole: u64,
    /// A path whose read failed: the previous entries below it are kept.
    carry_under: Option<Vec<u8>>,
    newcomers: Newcomers,
    any_top_kept: bool,
    issues: Vec<Issue>,
    excluded: u64,
    new_top: Vec<Vec<u8>>,
    old_top: Vec<Vec<u8>>,
    known_trees: HashSet<TreeId>,
    had_prev: bool,
    scope: Option<Scope>,
}

/// Issues after which the previous state of a path is kept rather than
/// the path counted as gone.
fn keeps_previous(k: IssueKind) -> bool {
    matches!(
        k,
        IssueKind::Unreadable | IssueKind::UnlistableDir | IssueKind::Loop
    )
}

/// A file stored by `backup --stdin`: ordinary runs keep it.
fn is_stdin(item: &Item) -> bool {
    matches!(item, Item::Leaf(Leaf::File { ext, .. }) if ext.stdin)
}

/// Whether a previous folder holds a `backup --stdin` file anywhere below
/// it (asked only of folders that left the source). Each tree is decoded
/// once; a tree that cannot be read answers no here, and the walk, which
/// reads the same trees next, reports it.
fn holds_stdin(repo: Option<&LocalRepo>, id: TreeId) -> bool {
    let Some(repo) = repo else {
        return false;
    };
    let mut seen: HashSet<TreeId> = HashSet::new();
    let mut todo = vec![id];
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        let Ok(t) = tree::load_tree::<Leaf, Meta>(repo, &id) else {
            continue;
        };
        for n in &t.entries {
            if let Some(Leaf::File { ext, .. }) = &n.leaf {
                if ext.stdin {
                    return true;
                }
            }
            if let Some((sub, _)) = &n.dir {
                todo.push(*sub);
            }
        }
    }
    false
}

fn node_item(n: &Node<Leaf, Meta>) -> Option<Item> {
    match (&n.leaf, &n.dir) {
        (Some(l), _) => Some(Item::Leaf(l.clone())),
        (None, Some((_, m))) => Some(Item::Dir(m.clone())),
        (None, None) => None,
    }
}

impl<'a> Walker<'a> {
    /// The steps of one directory: its current children merged by name
    /// with its previous ones.
    fn open_dir(
        &mut self,
        path: &[u8],
        loaded: LoadedDir,
        carry_all: Option<Carry>,
        current: bool,
    ) -> Result<DirBeingWalked> {
        let prev_nodes = match loaded.prev.transpose()? {
            Some(t) => t.entries,
            None => Vec::new(),
        };
        let (mut cur, mut subdirs) = (Vec::new(), VecDeque::new());
        let mut carry_paths: Vec<Vec<u8>> = Vec::new();
        let mut carry_here = carry_all;
        if let Some(l) = loaded.listing {
            let DirListing { out, subdirs: s } = l;
            for i in out.issues {
                if keeps_previous(i.kind) {
                    if i.path == path {
                        carry_here = carry_here.or(Some(Carry::Problem));
                    } else {
                        carry_paths.push(i.path.clone());
                    }
                }
                self.issues.push(i);
            }
            self.excluded += out.excluded;
            cur = out.entries.into_iter().zip(out.extra).collect();
            subdirs = s.into_iter().collect();
        }
        let records = self.folder_records(path, &prev_nodes);
        Ok(self.merge(
            path,
            cur,
            subdirs,
            prev_nodes,
            carry_here,
            &carry_paths,
            current,
            current,
            records,
        ))
    }

    /// Merge a folder's current entries with its previous ones. `current`:
    /// the folder gets enter/leave marks; `keep_stdin`: the folder is in
    /// the new listing, so what `backup --stdin` stored in it stays.
    #[allow(clippy::too_many_arguments)]
    fn merge(
        &mut self,
        path: &[u8],
        cur: Vec<(crate::model::Entry, Option<StatExtra>)>,
        mut subdirs: VecDeque<DirTask>,
        prev_nodes: Vec<Node<Leaf, Meta>>,
        carry_here: Option<Carry>,
        carry_paths: &[Vec<u8>],
        current: bool,
        keep_stdin: bool,
        records: Vec<Option<StatExtra>>,
    ) -> DirBeingWalked {
        let off = if path.is_empty() { 0 } else { path.len() + 1 };
        let mut steps = VecDeque::with_capacity(cur.len().max(prev_nodes.len()));
        let mut cur = cur.into_iter().peekable();
        let mut prev = prev_nodes.into_iter().peekable();
        loop {
            let ord = match (cur.peek(), prev.peek()) {
                (Some((e, _)), Some(n)) => e.path[off..].cmp(&n.name[..]),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => break,
            };
            let c = if ord.is_le() { cur.next() } else { None };
            let n = if ord.is_ge() { prev.next() } else { None };
            // The current entry gives its path up (no copy per entry).
            let (child_path, c) = match (c, &n) {
                (Some((e, x)), _) => (e.path, Some((e.item, x))),
                (None, Some(n)) => (pathbytes::join(path, &n.name), None),
                (None, None) => break,
            };
            let prev_item = n.as_ref().and_then(node_item);
            let prev_sub = n.as_ref().and_then(|n| n.dir.as_ref().map(|d| d.0));
            // What `backup --stdin` stored stays while no source entry
            // takes its path, inside folders the new listing has (a source
            // entry in the way of a folder wins, as a source entry does).
            let stdin_born = keep_stdin
                && c.is_none()
                && match &prev_item {
                    Some(Item::Dir(_)) => {
                        carry_here.is_none()
                            && prev_sub.is_some_and(|id| holds_stdin(self.env.repo, id))
                    }
                    Some(item) => is_stdin(item),
                    None => false,
                };
            let carry = if c.is_some() {
                None
            } else if stdin_born {
                Some(Carry::Stdin)
            } else if carry_paths.contains(&child_path) {
                Some(Carry::Problem)
            } else {
                carry_here
            };
            let cur_dir = matches!(c, Some((Item::Dir(_), _)));
            let task = if cur_dir
                && subdirs
                    .front()
                    .is_some_and(|t| t.path() == child_path.as_slice())
            {
                subdirs.pop_front()
            } else {
                None
            };
            // A folder a watch run keeps as it was, whose records all
            // vouch: kept whole, unread.
            let whole = match (cur_dir, carry) {
                (false, Some(Carry::Scope)) => {
                    self.whole(&child_path, prev_item.as_ref(), prev_sub)
                }
                _ => None,
            };
            let child = if whole.is_some() {
                None
            } else if cur_dir {
                (task.is_some() || prev_sub.is_some()).then(|| SubdirToWalk {
                    slot: ListingSlot::new(ListingJob {
                        scan: task.map(|t| (self.source_of(&child_path), t)),
                        prev: prev_sub,
                    }),
                    prev_id: prev_sub,
                    carry_all: None,
                    partial: None,
                    current: true,
                })
            } else {
                prev_sub.map(|id| SubdirToWalk {
                    slot: ListingSlot::new(ListingJob {
                        scan: None,
                        prev: Some(id),
                    }),
                    prev_id: Some(id),
                    // Below a folder kept for a stdin file, each entry is
                    // decided on its own.
                    carry_all: carry.filter(|c| *c != Carry::Stdin),
                    partial: None,
                    current: carry.is_some(),
                })
            };
            steps.push_back(MergedEntry {
                path: child_path,
                cur: c,
                prev: prev_item,
                carry,
                subdir: child,
                whole,
            });
        }
        self.finish_open_dir(steps, current, records)
    }

    /// The cache records of a folder's previous file entries.
    fn folder_records(
        &self,
        path: &[u8],
        prev_nodes: &[Node<Leaf, Meta>],
    ) -> Vec<Option<StatExtra>> {
        let files = prev_nodes
            .iter()
            .filter(|n| matches!(n.leaf, Some(Leaf::File { .. })))
            .count();
        if files == 0 {
            return Vec::new();
        }
        self.cache.folder(path, files).unwrap_or_default()
    }

    /// The tree of a previous folder a watch run can keep whole: every
    /// file below it has a cache record that vouches for it (one without
    /// must be read, so the folder is walked instead).
    fn whole(&self, path: &[u8], prev: Option<&Item>, sub: Option<TreeId>) -> Option<TreeId> {
        match (prev, sub) {
            (Some(Item::Dir(_)), Some(id)) if self.cache.subtree_complete(path) => Some(id),
            _ => None,
        }
    }

    /// A [`DirBeingWalked`] of `steps`, its first subdirectories queued for
    /// listing.
    fn finish_open_dir(
        &mut self,
        steps: VecDeque<MergedEntry>,
        current: bool,
        records: Vec<Option<StatExtra>>,
    ) -> DirBeingWalked {
        let mut unqueued: VecDeque<Arc<ListingSlot>> = steps
            .iter()
            .filter_map(|s| s.subdir.as_ref().map(|c| c.slot.clone()))
            .collect();
        let first: Vec<Arc<ListingSlot>> =
            (0..LOOKAHEAD).map_while(|_| unqueued.pop_front()).collect();
        self.queue.push_first(first);
        DirBeingWalked {
            steps,
            unqueued,
            current,
            records: records.into_iter(),
        }
    }

    /// A watch run's folder above the paths events named: its previous
    /// entries are kept (with their cache records) except the named paths,
    /// which are looked at again, and the folders on the way to them, which
    /// are walked the same way.
    fn open_partial_dir(
        &mut self,
        path: &[u8],
        prev: Option<Result<TreeObject<Leaf, Meta>>>,
        task: Option<(usize, DirTask)>,
    ) -> Result<DirBeingWalked> {
        let prev_nodes = match prev.transpose()? {
            Some(t) => t.entries,
            None => Vec::new(),
        };
        let records = self.folder_records(path, &prev_nodes);
        let Some(scope) = self.scope.take() else {
            return Ok(self.finish_open_dir(VecDeque::new(), true, records));
        };
        // The names: the previous ones and any named path new in here.
        let mut names: Vec<Vec<u8>> = prev_nodes.iter().map(|n| n.name.clone()).collect();
        for r in &scope.roots {
            if pathbytes::parent(r) == path && !r.is_empty() {
                names.push(pathbytes::file_name(r).to_vec());
            }
        }
        names.sort();
        names.dedup();
        let ignores = task
            .as_ref()
            .and_then(|(i, t)| self.env.scanners.get(*i).map(|s| s.child_ignores(t)));
        let mut prev = prev_nodes.into_iter().peekable();
        let mut steps = VecDeque::with_capacity(names.len());
        for name in names {
            let n = prev.next_if(|n| n.name == name);
            let child_path = pathbytes::join(path, &name);
            let prev_item = n.as_ref().and_then(node_item);
            let prev_sub = n.as_ref().and_then(|n| n.dir.as_ref().map(|d| d.0));
            let scanner = task
                .as_ref()
                .zip(ignores.as_ref())
                .and_then(|((i, t), ig)| self.env.scanners.get(*i).map(|s| (*i, s, t, ig)));
            match scope.relation(&child_path) {
                Relation::Inside => {
                    // A named path: looked at again, and all below it.
                    let mut cur = Vec::new();
                    let mut subdirs = VecDeque::new();
                    let mut carry_paths = Vec::new();
                    if let Some((_, s, t, ig)) = scanner {
                        let l = s.visit_one(t, ig, &name);
                        for i in l.out.issues {
                            if keeps_previous(i.kind) {
                                carry_paths.push(i.path.clone());
                            }
                            self.issues.push(i);
                        }
                        self.excluded += l.out.excluded;
                        cur = l.out.entries.into_iter().zip(l.out.extra).collect();
                        subdirs = l.subdirs.into_iter().collect();
                    }
                    let prev_node: Vec<Node<Leaf, Meta>> = n.into_iter().collect();
                    // Its record (a file) comes from this folder's records.
                    let mut f = self.merge(
                        path,
                        cur,
                        subdirs,
                        prev_node,
                        None,
                        &carry_paths,
                        false,
                        true,
                        Vec::new(),
                    );
                    steps.append(&mut f.steps);
                }
                Relation::Ancestor => {
                    let down = scanner.and_then(|(i, s, t, ig)| {
                        s.descend(t, ig, &name).map(|(task, meta)| (i, task, meta))
                    });
                    let meta = match (&down, &prev_item) {
                        (Some((_, _, m)), _) if scope.refresh.contains(&child_path) => {
                            Some(m.clone())
                        }
                        (_, Some(Item::Dir(m))) => Some(m.clone()),
                        (Some((_, _, m)), _) => Some(m.clone()),
                        _ => None,
                    };
                    let current = meta.is_some();
                    steps.push_back(MergedEntry {
                        path: child_path,
                        cur: meta.map(|m| (Item::Dir(m), None)),
                        prev: prev_item,
                        carry: None,
                        subdir: Some(SubdirToWalk {
                            slot: ListingSlot::new(ListingJob {
                                scan: None,
                                prev: prev_sub,
                            }),
                            prev_id: prev_sub,
                            carry_all: None,
                            partial: Some(down.map(|(i, t, _)| (i, t))),
                            current,
                        }),
                        whole: None,
                    });
                }
                Relation::Outside => {
                    let whole = self.whole(&child_path, prev_item.as_ref(), prev_sub);
                    steps.push_back(MergedEntry {
                        path: child_path,
                        cur: None,
                        prev: prev_item,
                        carry: Some(Carry::Scope),
                        subdir: prev_sub.filter(|_| whole.is_none()).map(SubdirToWalk::kept),
                        whole,
                    });
                }
            }
        }
        self.scope = Some(scope);
        Ok(self.finish_open_dir(steps, true, records))
    }

    /// The source a snapshot path belongs to.
    fn source_of(&self, p: &[u8]) -> usize {
        super::split_scope(self.layout, p).map_or(0, |(i, _)| i)
    }

    /// Walk everything, spilling records in path order.
    fn walk(&mut self, mut stack: Vec<DirBeingWalked>) -> Result<()> {
        while let Some(dir) = stack.last_mut() {
            let Some(step) = dir.steps.pop_front() else {
                let f = stack.pop();
                if f.is_some_and(|f| f.current) && !stack.is_empty() {
                    self.window.push(WindowRecord::Leave);
                }
                continue;
            };
            if step.subdir.is_some() {
                if let Some(s) = dir.unqueued.pop_front() {
                    self.queue.push(s);
                }
            }
            // One cache record per previous file, in name order.
            let record = match &step.prev {
                Some(item @ Item::Leaf(Leaf::File { .. })) => {
                    let r = dir.records.next().flatten();
                    // A stdin file has no record: it is never read.
                    self.cache_complete &= r.is_some() || is_stdin(item);
                    Some(r)
                }
                _ => None,
            };
            self.step(step, record.flatten(), &mut stack)?;
            if self.window.len() >= WINDOW_RECORDS || self.window_bytes >= WINDOW_BYTES {
                self.flush()?;
                if self.on_error == OnError::Fail
                    && self.issues.iter().any(|i| i.kind != IssueKind::Vanished)
                {
                    // The run stops here; the issues are reported in path
                    // order by the caller.
                    return Ok(());
                }
            }
        }
        self.flush()?;
        self.finish_in_flight()
    }

    fn step(
        &mut self,
        step: MergedEntry,
        record: Option<StatExtra>,
        stack: &mut Vec<DirBeingWalked>,
    ) -> Result<()> {
        let MergedEntry {
            path,
            mut cur,
            prev,
            carry,
            subdir: child,
            whole,
        } = step;
        self.had_prev |= prev.is_some();
        if !path.contains(&b'/') {
            if let Some(p) = prev.as_ref().map(|_| &path) {
                if Escapes::matters(p) {
                    self.old_top.push(p.clone());
                }
            }
        }
        // A file a watch run keeps without a cache record to vouch for it
        // (racily clean last time) is read again, as every run does.
        let mut unvouched = false;
        if let (None, Some(how), Some(p)) = (&cur, carry, &prev) {
            // A stdin file kept by a watch run has no source to read.
            let how = if is_stdin(p) { Carry::Stdin } else { how };
            unvouched = how == Carry::Scope && record.is_none();
            cur = Some(match how {
                Carry::Problem => {
                    tracing::warn!(
                        "keeping the previous version of {}",
                        pathbytes::display(&path)
                    );
                    (p.clone(), None)
                }
                Carry::Scope => (p.clone(), record),
                Carry::Stdin => (p.clone(), None),
            });
        }
        let mut read = false;
        let mut vouched_file = false;
        if let Some((Item::Leaf(Leaf::File { size, id, meta, .. }), Some(x))) = &mut cur {
            let vouched = match (&prev, record) {
                (
                    Some(Item::Leaf(Leaf::File {
                        size: psize,
                        id: pid,
                        meta: pmeta,
                        ..
                    })),
                    Some(r),
                ) if r.key(*psize, pmeta.mtime_ns) == x.key(*size, meta.mtime_ns) => Some(*pid),
                _ => None,
            };
            match vouched {
                Some(pid) => {
                    *id = pid;
                    vouched_file = true;
                    // The cache vouches for the inode (its ctime is the
                    // same, and setting an attribute changes it): its
                    // attributes are the recorded ones, not read again.
                    if let Some(Item::Leaf(Leaf::File { meta: pmeta, .. })) = &prev {
                        meta.xattrs = pmeta.xattrs.clone();
                    }
                }
                None => {
                    read = true;
                    self.window_bytes += *size;
                }
            }
        } else if let (true, Some((Item::Leaf(Leaf::File { size, .. }), None))) = (unvouched, &cur)
        {
            read = true;
            self.window_bytes += *size;
        }
        if let Some(id) = whole {
            self.window.push(WindowRecord::Path {
                path: path.clone(),
                cur,
                prev,
                read,
                fresh: false,
                vouched: vouched_file,
            });
            self.kept_whole += 1;
            self.window.push(WindowRecord::Kept { path, id });
            return Ok(());
        }
        let Some(c) = child else {
            self.window.push(WindowRecord::Path {
                path,
                cur,
                prev,
                read,
                fresh: false,
                vouched: vouched_file,
            });
            return Ok(());
        };
        self.window.push(WindowRecord::Path {
            path: path.clone(),
            cur,
            prev,
            read,
            fresh: false,
            vouched: vouched_file,
        });
        let loaded = c.slot.take(self.env);
        if let Some(id) = c.prev_id {
            self.known_trees.insert(id);
        }
        let f = match c.partial {
            Some(task) => self.open_partial_dir(&path, loaded.prev, task)?,
            None => self.open_dir(&path, loaded, c.carry_all, c.current)?,
        };
        if c.current {
            self.window.push(WindowRecord::Enter {
                path,
                prev_id: c.prev_id,
            });
        }
        stack.push(f);
        Ok(())
    }

    /// Hand the window's files to the reader and start a new window. The
    /// window handed over before is finished first: its records come
    /// before this one's, and the walk spills in path order. So the walk
    /// goes on listing while a window's files are read, and at most two
    /// windows are held.
    fn flush(&mut self) -> Result<()> {
        self.finish_in_flight()?;
        let window = std::mem::take(&mut self.window);
        self.window_bytes = 0;
        let todo: Vec<usize> = window
            .iter()
            .enumerate()
            .filter_map(|(k, w)| match w {
                WindowRecord::Path { read: true, .. } => Some(k),
                _ => None,
            })
            .collect();
        if !todo.is_empty() {
            let paths = todo
                .iter()
                .filter_map(|&k| match &window[k] {
                    WindowRecord::Path { path, .. } => Some(path.clone()),
                    _ => None,
                })
                .collect();
            self.reader.jobs.send(paths).map_err(|_| {
                Error::Internal("the file reader stopped (a bug: please report it)".into())
            })?;
        }
        self.in_flight = Some(InFlight { window, todo });
        // A run that stops at the first problem looks at each window's
        // issues before walking on, as without the reader.
        if self.on_error == OnError::Fail {
            self.finish_in_flight()?;
        }
        Ok(())
    }

    /// Wait for the reads of the window handed to the reader, then finish
    /// its records in order and spill them.
    fn finish_in_flight(&mut self) -> Result<()> {
        let Some(InFlight { mut window, todo }) = self.in_flight.take() else {
            return Ok(());
        };
        let results = if todo.is_empty() {
            Vec::new()
        } else {
            self.reader.done.recv().map_err(|_| {
                Error::Internal("the file reader stopped (a bug: please report it)".into())
            })??
        };
        let layout = self.layout;
        let mut failed: HashSet<usize> = HashSet::new();
        for (k, r) in todo.into_iter().zip(results) {
            let WindowRecord::Path {
                path, cur, fresh, ..
            } = &mut window[k]
            else {
                continue;
            };
            match r {
                Ok((xa, ing)) => {
                    *fresh = ing.stored;
                    if let Some((Item::Leaf(Leaf::File { size, id, meta, .. }), x)) = cur {
                        *id = ing.id;
                        *size = ing.size;
                        meta.mtime_ns = ing.stat.mtime_ns;
                        meta.xattrs = xa;
                        *x = Some(StatExtra::of(&ing.stat));
                    }
                }
                Err(ReadFailure::Repo(e)) => return Err(e),
                Err(f) => {
                    let (kind, msg) = super::read_failure_issue(f);
                    if kind != IssueKind::Vanished {
                        failed.insert(k);
                    }
                    *cur = None;
                    self.issues.push(Issue {
                        fs: layout.fs_path(path),
                        path: path.clone(),
                        kind,
                        msg,
                    });
                }
            }
        }
        for (k, w) in window.into_iter().enumerate() {
            match w {
                WindowRecord::Path {
                    path,
                    cur,
                    prev,
                    fresh,
                    vouched,
                    ..
                } => self.finish_path(path, cur, prev, failed.contains(&k), fresh, vouched)?,
                WindowRecord::Kept { path, id } => {
                    // Its contents were never seen here: nothing above it
                    // can be carried by this walk's own count.
                    self.break_carry()?;
                    self.spill.write(Rec::Kept { path, id })?;
                }
                WindowRecord::Enter { path, prev_id } => {
                    let carry = self.carry_enabled && prev_id.is_some();
                    if !carry {
                        self.break_carry()?;
                    }
                    self.same.push(OpenMark {
                        path,
                        prev_id,
                        same: prev_id.is_some(),
                        carry,
                        held_at: self.held.len(),
                    });
                }
                WindowRecord::Leave => self.leave()?,
            }
        }
        Ok(())
    }

    /// A folder's records are all in: carry it whole, say it is the same
    /// tree, or tell its parent it differs.
    fn leave(&mut self) -> Result<()> {
        let Some(m) = self.same.pop() else {
            return Ok(());
        };
        match (m.same, m.prev_id) {
            (true, Some(id)) if m.carry => {
                // Everything below it is held and vouched for: drop its
                // records (counted here) for one mark.
                for r in self.held.drain(m.held_at..) {
                    if let Rec::Cur { item, .. } = &r {
                        self.carried.count_entry(item);
                    }
                }
                self.carried_whole += 1;
                self.emit(Rec::Carried { path: m.path, id })
            }
            (true, Some(id)) => {
                self.break_carry()?;
                self.spill.write(Rec::Same { path: m.path, id })
            }
            _ => {
                self.break_carry()?;
                self.not_same();
                Ok(())
            }
        }
    }

    /// Write a final record: held back while every open folder it is in
    /// may still be carried whole, else to the spill.
    fn emit(&mut self, r: Rec) -> Result<()> {
        if self.same.last().is_some_and(|m| m.carry) {
            if self.held.len() < HELD_MAX {
                self.held.push(r);
                return Ok(());
            }
            // A folder too wide to hold: spill as before.
            self.break_carry()?;
        }
        self.spill.write(r)
    }

    /// No open folder will be carried whole: spill what they held, in
    /// path order (everything held comes before what follows).
    fn break_carry(&mut self) -> Result<()> {
        for m in &mut self.same {
            m.carry = false;
        }
        for r in std::mem::take(&mut self.held) {
            self.spill.write(r)?;
        }
        Ok(())
    }

    fn not_same(&mut self) {
        if let Some(top) = self.same.last_mut() {
            top.same = false;
        }
    }

    /// One path's final record.
    fn finish_path(
        &mut self,
        path: Vec<u8>,
        mut cur: Option<(Item, Option<StatExtra>)>,
        prev: Option<Item>,
        read_failed: bool,
        fresh: bool,
        vouched: bool,
    ) -> Result<()> {
        if self
            .carry_under
            .as_ref()
            .is_some_and(|d| !pathbytes::is_under(&path, d))
        {
            self.carry_under = None;
        }
        if cur.is_none() && (read_failed || self.carry_under.is_some()) {
            if let Some(p) = &prev {
                tracing::warn!(
                    "keeping the previous version of {}",
                    pathbytes::display(&path)
                );
                cur = Some((p.clone(), None));
            }
        }
        if read_failed && self.carry_under.is_none() {
            self.carry_under = Some(path.clone());
        }
        if let Some((item, extra)) = &mut cur {
            if let (
                Item::Leaf(Leaf::File { id, dup, .. }),
                Some(Item::Leaf(Leaf::File {
                    id: pid, dup: pdup, ..
                })),
            ) = (&mut *item, &prev)
            {
                if id == pid {
                    *dup = *pdup;
                }
            }
            // Too fresh to vouch for next time (racily clean).
            if let (Item::Leaf(Leaf::File { size, meta, .. }), Some(x)) = (&*item, &*extra) {
                if cache::is_racy(&x.key(*size, meta.mtime_ns), self.run_start) {
                    *extra = None;
                }
            }
        }
        match classify(prev.as_ref(), cur.as_ref().map(|c| &c.0)) {
            Change::Newcomer => {
                if let Some((Item::Leaf(Leaf::File { id, size, .. }), _)) = &cur {
                    if *size > 0 {
                        self.newcomers.push(id)?;
                        self.known_newcomer |= !fresh;
                    }
                }
            }
            Change::Unchanged { dup: false } | Change::Modified => self.any_top_kept = true,
            _ => {}
        }
        let Some((item, extra)) = cur else {
            if let Some(p) = prev {
                self.not_same();
                self.break_carry()?;
                self.spill.write(Rec::Gone { path, item: p })?;
            }
            return Ok(());
        };
        if !path.contains(&b'/') && Escapes::matters(&path) {
            self.new_top.push(path.clone());
        }
        let prev = match prev {
            Some(p) if p == item => PrevAt::Same,
            Some(p) => PrevAt::Other(Box::new(p)),
            None => PrevAt::None,
        };
        if !matches!(prev, PrevAt::Same) {
            self.not_same();
        }
        // Carried whole only if a full run would write this record again
        // exactly: the same entry and, for a file, the same cache record
        // (vouched for, not read; a stdin file has none).
        let carriable = matches!(prev, PrevAt::Same)
            && match &item {
                Item::Leaf(Leaf::File { .. }) => vouched && extra.is_some() && !is_stdin(&item),
                _ => true,
            };
        if !carriable {
            self.break_carry()?;
        }
        self.emit(Rec::Cur {
            path,
            item,
            extra,
            prev,
        })
    }
}

/// The newcomers' contents, appended to a scratch file as the walk finds
/// them and read back into one exactly sized list at the end: a growing
/// list (or chunks copied into one) would need up to twice the memory of a
/// million ids at its peak.
struct Newcomers {
    dir: std::path::PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
    count: usize,
}

impl Newcomers {
    fn push(&mut self, id: &ObjectId) -> Result<()> {
        use std::io::Write;
        let f = match &mut self.file {
            Some(f) => f,
            None => self
                .file
                .insert(std::io::BufWriter::new(crate::fsutil::anonymous_file(
                    &self.dir,
                )?)),
        };
        f.write_all(&id.0 .0)
            .ctx("write a scratch file in", &self.dir)?;
        self.count += 1;
        Ok(())
    }

    fn into_vec(self) -> Result<Vec<ObjectId>> {
        use std::io::{Read, Seek};
        let Some(f) = self.file else {
            return Ok(Vec::new());
        };
        let what = || self.dir.join("(scratch)");
        let mut f = f
            .into_inner()
            .map_err(|e| e.into_error())
            .ctx("write", what())?;
        f.rewind().ctx("seek", what())?;
        let mut r = std::io::BufReader::new(f);
        let mut out = Vec::with_capacity(self.count);
        let mut b = [0u8; 32];
        for _ in 0..self.count {
            r.read_exact(&mut b).ctx("read", what())?;
            out.push(ObjectId(crate::id::Digest(b)));
        }
        Ok(out)
    }
}

/// A watch run with several sources: each source folder the events named
/// nothing in is kept, each one above a named path walked through.
fn scope_sources(
    scope: &Scope,
    f: &mut DirBeingWalked,
    tasks: &[(Vec<u8>, DirTask)],
    source_of: impl Fn(&[u8]) -> usize,
    whole: impl Fn(&[u8], Option<&Item>, Option<TreeId>) -> Option<TreeId>,
) {
    for step in f.steps.iter_mut() {
        let prev_id = step.subdir.as_ref().and_then(|c| c.prev_id);
        match scope.relation(&step.path) {
            Relation::Inside => {}
            Relation::Ancestor => {
                if !scope.refresh.contains(&step.path) {
                    if let (Some(Item::Dir(m)), Some((Item::Dir(c), _))) =
                        (&step.prev, &mut step.cur)
                    {
                        *c = m.clone();
                    }
                }
                let task = tasks
                    .iter()
                    .find(|(n, _)| *n == step.path)
                    .map(|(_, t)| (source_of(&step.path), t.clone()));
                step.subdir = Some(SubdirToWalk {
                    slot: ListingSlot::new(ListingJob {
                        scan: None,
                        prev: prev_id,
                    }),
                    prev_id,
                    carry_all: None,
                    partial: Some(task),
                    current: step.cur.is_some(),
                });
            }
            Relation::Outside => {
                step.cur = None;
                step.carry = Some(Carry::Scope);
                step.whole = whole(&step.path, step.prev.as_ref(), prev_id);
                step.subdir = prev_id
                    .filter(|_| step.whole.is_none())
                    .map(SubdirToWalk::kept);
            }
        }
    }
    // The replaced children's listings are not needed: queue the new ones.
    f.unqueued = f
        .steps
        .iter()
        .filter_map(|s| s.subdir.as_ref().map(|c| c.slot.clone()))
        .collect();
}

/// Everything pass 1 needs to know about the run.
pub(super) struct WalkInput<'a> {
    pub repo: Option<&'a LocalRepo>,
    pub prev_root: Option<TreeId>,
    pub cache: &'a cache::Reader,
    pub algo: HashAlgo,
    pub batch: Option<&'a Batch<'a>>,
    pub layout: &'a Layout,
    pub opts: &'a crate::scan::ScanOptions,
    pub source_metas: Vec<Meta>,
    pub follow: bool,
    pub run_start: i64,
    pub on_error: OnError,
    pub progress: &'a dyn Progress,
    /// Where scratch files go.
    pub scratch: &'a std::path::Path,
    /// A watch run: only these paths are looked at again.
    pub scope: Option<Scope>,
}

/// Pass 1: walk every source, spilling one record per path.
pub(super) fn walk(input: WalkInput<'_>, spill: &mut SpillWriter) -> Result<Walked> {
    let layout = input.layout;
    let mut scanners = Vec::new();
    let mut roots = Vec::new();
    for (src, name) in layout.sources.iter().zip(&layout.names) {
        let (s, t) = DirScanner::new(src, name, input.opts)?;
        scanners.push(s);
        roots.push(t);
    }
    let env = ListingSources {
        repo: input.repo,
        scanners,
    };
    let queue = ListingQueue::default();
    let listers = rayon::current_num_threads().clamp(1, 8);
    let stats = ReadStats::default();
    let read_env = ReadEnv {
        algo: input.algo,
        batch: input.batch,
        layout,
        follow: input.follow,
        xattrs: input.opts.xattrs,
        progress: input.progress,
        stats: &stats,
        commit_every: commit_every_fixed(),
    };
    let walked = std::thread::scope(|scope| -> Result<Walked> {
        for _ in 0..listers {
            scope.spawn(|| {
                while let Some(s) = queue.pop() {
                    s.run(&env);
                }
            });
        }
        // The file reader: one window at a time, while the walk goes on.
        // It stops when the walk drops its end of the channels.
        let (jobs, jobs_rx) = mpsc::sync_channel::<Vec<Vec<u8>>>(1);
        let (done_tx, done) = mpsc::sync_channel::<Result<Vec<ReadResult>>>(1);
        let read_env = &read_env;
        scope.spawn(move || {
            // Files are read by more threads than there are cores: a read
            // of a file the page cache does not hold waits for the disk,
            // and with one read in flight per core a first backup of
            // 3,000,000 files spent a quarter of its time in I/O wait with
            // a core idle. The pool is made for the first window with
            // files to read (a no-change run makes none); one that cannot
            // be made (no threads left) reads on the shared pool instead.
            let mut pool: Option<Option<rayon::ThreadPool>> = None;
            while let Ok(paths) = jobs_rx.recv() {
                let p = pool.get_or_insert_with(|| {
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(READERS)
                        .thread_name(|i| format!("trove-read-{i}"))
                        .build()
                        .ok()
                });
                let read = match p {
                    Some(p) => p.install(|| read_env.read(&paths)),
                    None => read_env.read(&paths),
                };
                let out = read_env.commit_if_due().map(|()| read);
                if done_tx.send(out).is_err() {
                    break;
                }
            }
        });
        let reader = ReaderLink { jobs, done };
        // Close the queue however the walk ends, or the listers never do.
        struct CloseOnDrop<'q>(&'q ListingQueue);
        impl Drop for CloseOnDrop<'_> {
            fn drop(&mut self) {
                self.0.close();
            }
        }
        let _close = CloseOnDrop(&queue);
        let mut w = Walker {
            env: &env,
            queue: &queue,
            layout,
            run_start: input.run_start,
            on_error: input.on_error,
            cache: input.cache,
            cache_complete: true,
            kept_whole: 0,
            known_newcomer: false,
            spill,
            window: Vec::new(),
            window_bytes: 0,
            in_flight: None,
            reader,
            same: Vec::new(),
            carry_enabled: input.scope.is_none() && !tracing::enabled!(tracing::Level::DEBUG),
            held: Vec::new(),
            carried: crate::plan::PlanCounts::default(),
            carried_whole: 0,
            carry_under: None,
            newcomers: Newcomers {
                dir: input.scratch.to_path_buf(),
                file: None,
                count: 0,
            },
            any_top_kept: false,
            issues: Vec::new(),
            excluded: 0,
            new_top: Vec::new(),
            old_top: Vec::new(),
            known_trees: HashSet::new(),
            had_prev: false,
            scope: input.scope,
        };
        if let Some(id) = input.prev_root {
            w.known_trees.insert(id);
        }
        let root_prev = input
            .prev_root
            .and_then(|id| input.repo.map(|r| tree::load_tree(r, &id)));
        let root = if layout.single() {
            let loaded = LoadedDir {
                listing: None,
                prev: root_prev,
            };
            if w.scope.is_some() {
                w.open_partial_dir(b"", loaded.prev, roots.pop().map(|t| (0, t)))?
            } else {
                let loaded = LoadedDir {
                    listing: roots.pop().map(|t| env.scanners[0].list(&t)),
                    prev: loaded.prev,
                };
                w.open_dir(b"", loaded, None, true)?
            }
        } else {
            // Several sources: each is a top-level folder of the snapshot.
            let prev_nodes = match root_prev.transpose()? {
                Some(t) => t.entries,
                None => Vec::new(),
            };
            let mut cur: Vec<(crate::model::Entry, Option<StatExtra>)> = layout
                .names
                .iter()
                .zip(&input.source_metas)
                .map(|(n, m)| {
                    (
                        crate::model::Entry {
                            path: n.clone(),
                            item: Item::Dir(m.clone()),
                        },
                        None,
                    )
                })
                .collect();
            let mut tasks: Vec<DirTask> = roots;
            let mut order: Vec<usize> = (0..cur.len()).collect();
            order.sort_by(|&a, &b| cur[a].0.path.cmp(&cur[b].0.path));
            cur = order.iter().map(|&i| cur[i].clone()).collect();
            tasks = order.iter().map(|&i| tasks[i].clone()).collect();
            let by_name: Vec<(Vec<u8>, DirTask)> = tasks
                .iter()
                .map(|t| (t.path().to_vec(), t.clone()))
                .collect();
            let records = w.folder_records(b"", &prev_nodes);
            let mut f = w.merge(
                b"",
                cur,
                tasks.into(),
                prev_nodes,
                None,
                &[],
                true,
                true,
                records,
            );
            if let Some(scope) = &w.scope {
                scope_sources(
                    scope,
                    &mut f,
                    &by_name,
                    |p| w.source_of(p),
                    |p, i, s| w.whole(p, i, s),
                );
            }
            f
        };
        w.walk(vec![root])?;
        // Only a walk stopped early leaves folders open.
        w.break_carry()?;
        let newcomers = std::mem::replace(
            &mut w.newcomers,
            Newcomers {
                dir: Default::default(),
                file: None,
                count: 0,
            },
        );
        Ok(Walked {
            newcomers: newcomers.into_vec()?,
            any_top_kept: w.any_top_kept,
            issues: w.issues,
            excluded: w.excluded,
            stats: ReadStats::default(),
            new_esc: Escapes::for_top_names(w.new_top.iter().map(Vec::as_slice)),
            old_esc: Escapes::for_top_names(w.old_top.iter().map(Vec::as_slice)),
            known_trees: w.known_trees,
            cache_complete: w.cache_complete,
            had_prev: w.had_prev,
            kept_whole: w.kept_whole,
            carried_whole: w.carried_whole,
            carried: w.carried,
            known_newcomer: w.known_newcomer,
        })
    })?;
    Ok(Walked { stats, ..walked })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commits of a first backup of `files` files, read in windows of
    /// 8,192: the store's size (objects committed) at each one.
    fn schedule(files: u64) -> Vec<u64> {
        let (mut queued, mut committed, mut sizes) = (0u64, 0u64, Vec::new());
        let mut left = files;
        while left > 0 {
            let w = left.min(8192);
            left -= w;
            queued += w;
            if queued >= commit_due(committed) {
                committed += queued;
                queued = 0;
                sizes.push(committed);
            }
        }
        sizes
    }

    #[test]
    fn commits_grow_with_the_store_so_its_folders_are_rewritten_a_few_times() {
        // A run of 100,000 files commits once during its walk, as before.
        assert_eq!(schedule(100_000).len(), 1);
        // 3,000,000 files: about ten commits, not 46, and what they sync
        // of the store's folders (the sum of its sizes at each commit)
        // stays within a few times the store, not dozens.
        let big = schedule(3_000_000);
        assert!(big.len() <= 12, "{} commits", big.len());
        let rewritten: u64 = big.iter().sum();
        assert!(rewritten <= 3 * 3_000_000, "{rewritten}");
        // tmp/ never holds more than the cap (plus one window).
        let mut prev = 0;
        for s in schedule(20_000_000) {
            assert!(s - prev <= COMMIT_MOST_FILES + 8192, "{prev} -> {s}");
            prev = s;
        }
    }
}
