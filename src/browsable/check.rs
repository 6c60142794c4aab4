//! `verify`'s browsable step: the tree on disk at the backup root against
//! a rendering of the latest snapshot — no entry missing, extra, of the
//! wrong kind or content, and every file a hardlink of its object unless
//! the filesystem refuses one. Reads only; what is wrong comes back as
//! findings (a path of the tree, `""` for the tree itself, and a message)
//! for `verify` to report.

use crate::browsable::apply;
use crate::browsable::render::{BrowsableEntry, BrowsableKind};
use crate::error::Result;
use crate::id::ObjectId;
use crate::local::{objects, LocalRepo};
use crate::pathbytes::{self, display as show};
use crate::progress::Progress;
use crate::repo::snapshot::Snapshot;
use rayon::prelude::*;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

/// What is wrong at one path of the browsable tree.
pub type Finding = (Vec<u8>, String);

/// (device, inode) of a stored object.
pub type DevIno = (u64, u64);

/// An inode number that stands for "not in the store". (A real inode
/// numbered `u64::MAX` would read as missing; no filesystem hands it out.)
const MISSING: u64 = u64::MAX;
/// The same in the narrow list: inode numbers from `u32::MAX` up make the
/// list wide.
const MISSING32: u32 = u32::MAX;

/// Where each referenced object is in the store, beside the id-sorted
/// list of objects: an inode number each, all on the store's device but
/// for the few recorded apart. Four bytes an object while every inode
/// number fits in 32 bits (ext4's always do), eight once one does not; a
/// `(device, inode)` option took 24 (about 45 MiB at three million).
pub struct Places {
    dev: u64,
    ino: Inos,
    /// Objects on another device than the store's: (index, device), sorted.
    elsewhere: Vec<(usize, u64)>,
}

/// The inode numbers of [`Places`], narrow until one needs 64 bits.
enum Inos {
    Narrow(Vec<u32>),
    Wide(Vec<u64>),
}

impl Inos {
    /// The inode number at `i` (`MISSING` if not found), or None past the end.
    fn get(&self, i: usize) -> Option<u64> {
        match self {
            Inos::Narrow(v) => v.get(i).map(|&x| Inos::widen(x)),
            Inos::Wide(v) => v.get(i).copied(),
        }
    }

    /// A narrow slot as a wide one.
    fn widen(x: u32) -> u64 {
        if x == MISSING32 {
            MISSING
        } else {
            u64::from(x)
        }
    }

    /// `ino` as a narrow slot, unless it needs the wide list.
    fn narrow(ino: u64) -> Option<u32> {
        if ino == MISSING {
            return Some(MISSING32);
        }
        u32::try_from(ino).ok().filter(|x| *x != MISSING32)
    }

    fn put(&mut self, i: usize, ino: u64) {
        if let Inos::Narrow(v) = self {
            match Inos::narrow(ino) {
                Some(x) => {
                    if let Some(slot) = v.get_mut(i) {
                        *slot = x;
                    }
                    return;
                }
                None => {
                    let wide = v.iter().map(|&x| Inos::widen(x)).collect();
                    *self = Inos::Wide(wide);
                }
            }
        }
        if let Inos::Wide(v) = self {
            if let Some(slot) = v.get_mut(i) {
                *slot = ino;
            }
        }
    }
}

impl Places {
    /// `n` objects, none found yet, in a store on device `dev`.
    pub fn new(dev: u64, n: usize) -> Places {
        Places {
            dev,
            ino: Inos::Narrow(vec![MISSING32; n]),
            elsewhere: Vec::new(),
        }
    }

    pub fn get(&self, i: usize) -> Option<DevIno> {
        let ino = self.ino.get(i)?;
        if ino == MISSING {
            return None;
        }
        let dev = match self.elsewhere.binary_search_by_key(&i, |e| e.0) {
            Ok(k) => self.elsewhere[k].1,
            Err(_) => self.dev,
        };
        Some((dev, ino))
    }

    /// Whether object `i` was found in the store.
    pub fn present(&self, i: usize) -> bool {
        self.ino.get(i).is_some_and(|ino| ino != MISSING)
    }

    pub fn set(&mut self, i: usize, at: Option<DevIno>) {
        if self.ino.get(i).is_none() {
            return;
        }
        let found = self.elsewhere.binary_search_by_key(&i, |e| e.0);
        match at {
            None => {
                self.ino.put(i, MISSING);
                if let Ok(k) = found {
                    self.elsewhere.remove(k);
                }
            }
            Some((dev, ino)) => {
                self.ino.put(i, ino);
                match found {
                    Ok(k) if dev == self.dev => {
                        self.elsewhere.remove(k);
                    }
                    Ok(k) => self.elsewhere[k].1 = dev,
                    Err(k) if dev != self.dev => self.elsewhere.insert(k, (i, dev)),
                    Err(_) => {}
                }
            }
        }
    }

    /// Set, on every core, the place of each object `f` answers for
    /// (`Some(place)`); the others keep theirs.
    pub fn fill(&mut self, f: impl Fn(usize) -> Option<Option<DevIno>> + Sync) {
        let dev = self.dev;
        // Set one at a time afterwards: places on another device, and
        // inode numbers the narrow list cannot hold.
        let later: std::sync::Mutex<Vec<(usize, DevIno)>> = std::sync::Mutex::new(Vec::new());
        let set_later = |i: usize, at: DevIno| {
            later
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((i, at));
        };
        match &mut self.ino {
            Inos::Narrow(v) => v.par_iter_mut().enumerate().for_each(|(i, slot)| {
                if let Some(at) = f(i) {
                    *slot = match at {
                        None => MISSING32,
                        Some((d, ino)) => match Inos::narrow(ino) {
                            Some(x) if d == dev => x,
                            _ => {
                                set_later(i, (d, ino));
                                MISSING32
                            }
                        },
                    };
                }
            }),
            Inos::Wide(v) => v.par_iter_mut().enumerate().for_each(|(i, slot)| {
                if let Some(at) = f(i) {
                    *slot = match at {
                        None => MISSING,
                        Some((d, ino)) => {
                            if d != dev {
                                set_later(i, (d, ino));
                            }
                            ino
                        }
                    };
                }
            }),
        }
        for (i, at) in later.into_inner().unwrap_or_else(|p| p.into_inner()) {
            self.set(i, Some(at));
        }
    }
}

/// The size slot of [`ObjectList`] that says "in the list of big ones".
const BIG: u32 = u32::MAX;

/// A size as [`ObjectList`] keeps it: its 32-bit slot, and whether the
/// true size goes in the list of big ones (4 GiB and more, and the one
/// 32-bit size that is the `BIG` mark).
pub fn narrow_size(size: u64) -> (u32, bool) {
    match u32::try_from(size) {
        Ok(s) if s != BIG => (s, false),
        _ => (BIG, true),
    }
}

/// The referenced objects, sorted by id, with their recorded sizes: 36
/// bytes an object (a 32-bit size; the rare objects of 4 GiB and more in
/// a sorted list of their own), where `(id, u64)` took 40, and a table of
/// where each id prefix starts (under a byte an object).
#[derive(Default)]
pub struct ObjectList {
    v: Vec<(ObjectId, u32)>,
    big: Vec<(ObjectId, u64)>,
    /// `starts[p]`: the first index whose id begins with a prefix of
    /// `bits` bits at least `p`; one more slot holds the length. Ids are
    /// hashes, spread evenly, so a lookup reads one slot and searches the
    /// thirty-two to sixty-four ids up to the next (see `index`): a
    /// search of the whole list missed the cache at most of its steps
    /// (38% of a quick verify's CPU at three million objects). Empty past
    /// `u32::MAX` objects, which are searched whole.
    starts: Vec<u32>,
    bits: u32,
}

/// The first eight bytes of `id`, as a number: ordered as the ids are.
fn head(id: &ObjectId) -> u64 {
    id.0.word(0)
}

/// The first `bits` bits of `id` (0 < bits < 64), as a number.
fn prefix(id: &ObjectId, bits: u32) -> usize {
    (head(id) >> (64 - bits)) as usize
}

impl ObjectList {
    /// The list from `v` (sizes narrowed by [`narrow_size`]) and the true
    /// sizes of its `BIG` ones; both are sorted and deduplicated here.
    pub fn new(mut v: Vec<(ObjectId, u32)>, mut big: Vec<(ObjectId, u64)>) -> ObjectList {
        // On every core (a verify's list is sorted already, but not
        // every caller's).
        v.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by_key(|(id, _)| *id);
        v.shrink_to_fit();
        big.sort_unstable_by_key(|(id, _)| *id);
        big.dedup_by_key(|(id, _)| *id);
        // Thirty-two to sixty-four objects a prefix: 2^bits between n/64
        // and n/32 (a lookup starts where its id's next bits point, so a
        // longer run costs no more reads; the table is a quarter of a
        // megabyte at three million objects, where eight to sixteen took
        // one).
        let bits = (v.len() / 32).max(1).ilog2().clamp(1, 32);
        let mut starts = Vec::new();
        if u32::try_from(v.len()).is_ok() {
            starts.reserve_exact((1 << bits) + 1);
            let mut i = 0usize;
            for p in 0..1usize << bits {
                while i < v.len() && prefix(&v[i].0, bits) < p {
                    i += 1;
                }
                starts.push(i as u32);
            }
            starts.push(v.len() as u32);
        }
        ObjectList {
            v,
            big,
            starts,
            bits,
        }
    }

    pub fn len(&self) -> usize {
        self.v.len()
    }

    pub fn is_empty(&self) -> bool {
        self.v.is_empty()
    }

    pub fn id(&self, i: usize) -> ObjectId {
        self.v[i].0
    }

    /// Object `i`'s recorded size.
    pub fn size(&self, i: usize) -> u64 {
        let (id, s) = &self.v[i];
        if *s != BIG {
            return u64::from(*s);
        }
        match self.big.binary_search_by_key(id, |(b, _)| *b) {
            Ok(k) => self.big[k].1,
            // Only a caller that narrowed a size without keeping it apart
            // gets here; the mark is the best answer left.
            Err(_) => u64::from(BIG),
        }
    }

    pub fn get(&self, i: usize) -> (ObjectId, u64) {
        (self.id(i), self.size(i))
    }

    pub fn index(&self, id: &ObjectId) -> Option<usize> {
        let p = prefix(id, self.bits);
        let (Some(&lo), Some(&hi)) = (self.starts.get(p), self.starts.get(p + 1)) else {
            return crate::id::search_by_id(&self.v, id, |(x, _)| x).ok();
        };
        let (lo, hi) = (lo as usize, hi as usize);
        if lo == hi {
            return None;
        }
        // Ids are hashes, even within a prefix: the bits after it say
        // where in the run `id` would be, give or take an entry or two.
        // Stepping from there to it reads one or two neighbouring cache
        // lines, where a binary search read four lines far apart (a
        // miss each: a sixth of a quick verify's CPU at three million
        // objects) and compared them with `memcmp`.
        let want = head(id);
        let frac = u128::from(want << self.bits);
        let mut i = lo + ((frac * (hi - lo) as u128) >> 64) as usize;
        while i > lo && head(&self.v[i - 1].0) >= want {
            i -= 1;
        }
        while i < hi && head(&self.v[i].0) < want {
            i += 1;
        }
        // The first with the same eight bytes; the rest decide.
        while i < hi && head(&self.v[i].0) == want {
            if self.v[i].0 == *id {
                return Some(i);
            }
            i += 1;
        }
        None
    }

    pub fn total_bytes(&self) -> u64 {
        (0..self.len()).map(|i| self.size(i)).sum()
    }
}

/// One flag per object, set and cleared from any thread: a bit each,
/// where a `Vec<AtomicBool>` took a byte.
#[derive(Default)]
pub struct Flags {
    words: Vec<AtomicU64>,
    len: usize,
}

impl Flags {
    /// `n` flags, all clear.
    pub fn new(n: usize) -> Flags {
        Flags {
            words: (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            len: n,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Flag `i`, or None past the end.
    pub fn get(&self, i: usize) -> Option<bool> {
        (i < self.len).then(|| self.words[i / 64].load(Relaxed) & (1 << (i % 64)) != 0)
    }

    pub fn set(&self, i: usize) {
        if i < self.len {
            self.words[i / 64].fetch_or(1 << (i % 64), Relaxed);
        }
    }

    pub fn clear(&self, i: usize) {
        if i < self.len {
            self.words[i / 64].fetch_and(!(1 << (i % 64)), Relaxed);
        }
    }

    /// The flags set, in order (a word of clear flags is skipped whole).
    pub fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(w, word)| {
            let mut bits = word.load(Relaxed);
            std::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let b = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    w * 64 + b
                })
            })
        })
    }
}

/// Where each referenced object is in the store, or None where it is
/// missing: [`Places`] beside the id-sorted `objs`, found by search (a
/// hash map of a million objects took about 100 MiB).
pub struct Inodes<'a> {
    pub objs: &'a ObjectList,
    pub at: &'a Places,
    /// Beside `objs` (or empty): `at` came from the store's listing and
    /// the object's size is not proven yet. A browsable file that is the
    /// same inode with the recorded size proves it (and clears the flag).
    pub unproven: &'a Flags,
}

impl Inodes<'_> {
    pub fn index(&self, id: &ObjectId) -> Option<usize> {
        self.objs.index(id)
    }

    pub fn get(&self, id: &ObjectId) -> Option<DevIno> {
        self.index(id).and_then(|i| self.at.get(i))
    }

    /// Whether the file at `here` (a browsable file with the recorded
    /// size) is object `id`'s inode. A listing's inode number is checked
    /// against a stat of the object before a mismatch counts: on some
    /// filesystems (overlayfs) `d_ino` is not `st_ino`.
    fn holds(&self, repo: &LocalRepo, id: &ObjectId, here: DevIno) -> bool {
        let Some(i) = self.index(id) else {
            return false;
        };
        let listed = self.unproven.get(i);
        let same = match self.at.get(i) {
            Some(at) if at == here => true,
            Some(_) if listed.is_some() => objects::open_object(&repo.object_path(id))
                .ok()
                .and_then(|f| f.metadata().ok())
                .is_some_and(|m| (m.dev(), m.ino()) == here),
            _ => false,
        };
        if same && listed.is_some() {
            self.unproven.clear(i);
        }
        same
    }

    pub fn referenced(&self, id: &ObjectId) -> bool {
        self.index(id).is_some()
    }

    /// Bytes of the referenced objects that are present.
    pub fn present_bytes(&self) -> u64 {
        (0..self.objs.len())
            .filter(|&i| self.at.present(i))
            .map(|i| self.objs.size(i))
            .sum()
    }
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
        let names = apply::browsable_names(&self.root, &rel)?;
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

/// Entries checked in parallel per step of the lazy browsable check. Two
/// runs are held at once (one checked, the next rendered), about 150
/// bytes an entry: 4,096 keeps a quick verify at three million objects
/// under its 128 MiB goal, where 8,192 had it within a megabyte.
const CHECK_RUN: usize = 4096;

/// The serial half of the lazy browsable check: renders the next entries,
/// checks the implicit folders above them, and walks the disk alongside
/// to find what the rendering lacks.
struct Producer<'a, 'r> {
    repo: &'a LocalRepo,
    lazy: &'a mut apply::LazyRender<'r>,
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
            let Some(e) = self.lazy.next()? else {
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
pub fn check_browsable_lazily(
    repo: &LocalRepo,
    latest: &Snapshot,
    lazy: &mut apply::LazyRender<'_>,
    inodes: &Inodes<'_>,
    progress: &dyn Progress,
) -> Result<(Vec<Finding>, u64)> {
    let mut out = marker_problem(repo, latest).into_iter().collect::<Vec<_>>();
    let s = &latest.record.summary;
    progress.phase("browsable tree", s.files + s.dirs + s.symlinks, 0);
    let mut disk = DiskWalk::new(&repo.root)?;
    let disk_next = disk.next()?;
    let mut p = Producer {
        repo,
        lazy,
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
            || check_run(repo, &checking, inodes),
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
    out.extend(entry_problems);
    Ok((out, p.entries))
}

/// The browsable tree does not record showing `latest`.
fn marker_problem(repo: &LocalRepo, latest: &Snapshot) -> Option<Finding> {
    let short = latest.id.short();
    (repo.read_marker() != Some(latest.id)).then(|| {
        (
            Vec::new(),
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
fn implicit_folder_problem(repo: &LocalRepo, p: &[u8]) -> Option<String> {
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
pub fn check_browsable(
    repo: &LocalRepo,
    latest: &Snapshot,
    desired: &[BrowsableEntry],
    inodes: &Inodes<'_>,
    progress: &dyn Progress,
) -> Result<Vec<Finding>> {
    let mut out: Vec<Finding> = marker_problem(repo, latest).into_iter().collect();
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
    let sets = apply::PathSets::of(desired);
    let implicit = sets.ancestors.iter().filter(|p| !sets.listed.contains(*p));
    for &p in implicit {
        if let Some(m) = implicit_folder_problem(repo, p) {
            entry_problems.push((p.to_vec(), m));
        }
    }
    for p in apply::extra_paths_in(&repo.root, &sets)? {
        entry_problems.push((p, extra_message().into()));
    }
    entry_problems.sort_by(|a, b| pathbytes::cmp_paths(&a.0, &b.0));
    out.extend(entry_problems);
    Ok(out)
}

/// Whether a hardlink of the object at `obj` could be made on device
/// `dev` now (a copy is only correct when it could not: another
/// filesystem, the link limit reached, or no hardlinks at all). Asked of
/// the filesystem (`fpathconf(_PC_LINK_MAX)`), so verify writes nothing.
fn link_possible(obj: &Path, dev: u64) -> bool {
    let Ok(f) = objects::open_object(obj) else {
        return false;
    };
    let Ok(m) = f.metadata() else {
        return false;
    };
    if m.dev() != dev {
        return false;
    }
    // No limit (or unknown): a link is possible.
    crate::sys::link_max(&f).is_none_or(|max| (m.nlink() as i64) < max)
}

/// What a stat (never following a final symlink) of a browsable path says,
/// as the check needs it: from `std` by path, or from `fstatat` beside
/// the other names of its folder.
struct Seen {
    dir: bool,
    symlink: bool,
    file: bool,
    len: u64,
    dev: u64,
    ino: u64,
}

impl Seen {
    fn of(m: &fs::Metadata) -> Seen {
        Seen {
            dir: m.is_dir(),
            symlink: m.file_type().is_symlink(),
            file: m.is_file(),
            len: m.len(),
            dev: m.dev(),
            ino: m.ino(),
        }
    }

    fn of_stat(st: &rustix::fs::Stat) -> Seen {
        use rustix::fs::FileType;
        let t = FileType::from_raw_mode(st.st_mode);
        Seen {
            dir: t == FileType::Directory,
            symlink: t == FileType::Symlink,
            file: t == FileType::RegularFile,
            len: u64::try_from(st.st_size).unwrap_or(0),
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }

    fn kind(&self) -> &'static str {
        if self.dir {
            "a directory"
        } else if self.symlink {
            "a symlink"
        } else if self.file {
            "a file"
        } else {
            "a special file"
        }
    }
}

/// Check a run of entries in path order. The entries of one folder are
/// stat'ed relative to that folder, opened once (a lookup of one name
/// each, where a stat by path walks every component from the root); a
/// folder that cannot be opened leaves its entries to `check_entry`, whose
/// message names what is wrong.
fn check_run(repo: &LocalRepo, run: &[BrowsableEntry], inodes: &Inodes<'_>) -> Vec<Finding> {
    let mut groups: Vec<&[BrowsableEntry]> = Vec::new();
    let mut rest = run;
    while let Some(first) = rest.first() {
        let parent = pathbytes::parent(&first.path);
        let n = rest
            .iter()
            .take_while(|e| pathbytes::parent(&e.path) == parent)
            .count();
        let (group, tail) = rest.split_at(n.max(1));
        groups.push(group);
        rest = tail;
    }
    groups
        .par_iter()
        .flat_map_iter(|group| {
            let parent = pathbytes::parent(&group[0].path);
            let dir = rustix::fs::open(
                pathbytes::to_fs(&repo.root, parent),
                rustix::fs::OFlags::PATH
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .ok();
            group.iter().filter_map(move |e| {
                let found = match &dir {
                    Some(fd) => {
                        let name = std::ffi::OsStr::from_bytes(pathbytes::file_name(&e.path));
                        match rustix::fs::statat(fd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
                            Ok(st) => check_seen(repo, e, &Seen::of_stat(&st), inodes),
                            Err(_) => check_entry(repo, e, inodes),
                        }
                    }
                    None => check_entry(repo, e, inodes),
                };
                found.map(|m| (e.path.clone(), m))
            })
        })
        .collect()
}

fn check_entry(repo: &LocalRepo, e: &BrowsableEntry, inodes: &Inodes<'_>) -> Option<String> {
    let p = pathbytes::to_fs(&repo.root, &e.path);
    let m = match fs::symlink_metadata(&p) {
        Ok(m) => m,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Some("missing: `trove materialize` puts it back".into())
        }
        Err(err) => return Some(format!("cannot stat: {err}")),
    };
    check_seen(repo, e, &Seen::of(&m), inodes)
}

/// The check of one entry, given what its stat said.
fn check_seen(
    repo: &LocalRepo,
    e: &BrowsableEntry,
    m: &Seen,
    inodes: &Inodes<'_>,
) -> Option<String> {
    let p = pathbytes::to_fs(&repo.root, &e.path);
    let kind_of = |m: &Seen| m.kind();
    match &e.kind {
        BrowsableKind::Dir => (!m.dir).then(|| {
            format!(
                "should be a directory but is {}: `trove materialize` repairs it",
                kind_of(m)
            )
        }),
        BrowsableKind::Symlink { target } => {
            if !m.symlink {
                return Some(format!("should be a symlink but is {}", kind_of(m)));
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
            if !m.file {
                return Some(format!("should be a file but is {}", kind_of(m)));
            }
            if m.len != *size {
                return Some(format!(
                    "wrong content: {} bytes, the snapshot has {size} (modified in place?): `trove materialize` replaces it",
                    m.len
                ));
            }
            if inodes.holds(repo, id, (m.dev, m.ino)) || *size == 0 {
                return None;
            }
            let obj = repo.object_path(id);
            match objects::hash_object(repo.algo(), &p) {
                Ok(d) if d == id.0 => {
                    link_possible(&obj, m.dev).then(|| {
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
    use super::*;

    /// Places answer what was set, on the store's device or apart, however
    /// they were set (one at a time or on every core), and go back to
    /// missing.
    #[test]
    fn places_keep_inodes_and_the_few_devices_apart() {
        let mut p = Places::new(7, 6);
        assert_eq!(p.get(0), None);
        assert_eq!(p.get(6), None);
        p.set(0, Some((7, 100)));
        p.set(3, Some((9, 300)));
        p.fill(|i| match i {
            1 => Some(Some((7, 101))),
            4 => Some(Some((8, 400))),
            5 => Some(None),
            _ => None,
        });
        let want = [
            Some((7, 100)),
            Some((7, 101)),
            None,
            Some((9, 300)),
            Some((8, 400)),
            None,
        ];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(p.get(i), *w, "{i}");
        }
        p.set(3, Some((7, 301)));
        p.set(4, None);
        assert_eq!(p.get(3), Some((7, 301)));
        assert_eq!(p.get(4), None);
        assert!(p.elsewhere.is_empty(), "{:?}", p.elsewhere);
    }

    /// The prefix table finds every id of a list of random ids, and no
    /// other, however many there are (one, a few, tens of thousands).
    #[test]
    fn object_list_finds_each_id_by_its_prefix() {
        use crate::id::Digest;
        let mut next = crate::id::xorshift(0x9e37_79b9_7f4a_7c15);
        for n in [1usize, 2, 5, 63, 1000, 40_000] {
            let mut ids: Vec<ObjectId> = (0..n)
                .map(|_| {
                    let mut d = [0u8; 32];
                    for c in d.chunks_mut(8) {
                        c.copy_from_slice(&next().to_be_bytes());
                    }
                    ObjectId(Digest(d))
                })
                .collect();
            // Ties in the first eight bytes, apart after them.
            for k in 0..n.min(3) {
                let mut d = ids[k].0 .0;
                d[31] ^= 0x80;
                ids.push(ObjectId(Digest(d)));
                d[8] ^= 1;
                ids.push(ObjectId(Digest(d)));
            }
            let list = ObjectList::new(ids.iter().map(|id| (*id, 1)).collect(), Vec::new());
            ids.sort_unstable();
            for (i, id) in ids.iter().enumerate() {
                assert_eq!(list.index(id), Some(i), "n {n}");
            }
            // A near miss of every id: found exactly where a search of
            // the whole list finds it.
            for id in &ids {
                for byte in [31, 8, 7] {
                    let mut near = *id;
                    near.0 .0[byte] ^= 1;
                    assert_eq!(list.index(&near), ids.binary_search(&near).ok(), "n {n}");
                }
            }
            assert_eq!(list.index(&ObjectId(Digest([0xff; 32]))), None);
            assert_eq!(list.index(&ObjectId(Digest([0; 32]))), None);
        }
    }

    /// Sizes that fit in 32 bits stay there but for the one that marks
    /// the big ones, which goes apart with every size past 32 bits.
    #[test]
    fn sizes_are_narrowed_or_kept_apart() {
        assert_eq!(narrow_size(0), (0, false));
        assert_eq!(narrow_size(u64::from(u32::MAX) - 1), (u32::MAX - 1, false));
        assert_eq!(narrow_size(u64::from(u32::MAX)), (BIG, true));
        assert_eq!(narrow_size(1 << 40), (BIG, true));
    }

    /// Flags set and cleared from any thread read back, bit by bit.
    #[test]
    fn flags_keep_a_bit_each() {
        let f = Flags::new(130);
        (0..130usize)
            .into_par_iter()
            .filter(|i| i % 3 == 0)
            .for_each(|i| f.set(i));
        f.clear(3);
        f.clear(129);
        let want: Vec<usize> = (0..130)
            .filter(|i| i % 3 == 0 && *i != 3 && *i != 129)
            .collect();
        assert_eq!(f.ones().collect::<Vec<_>>(), want);
        assert_eq!(f.get(130), None);
        assert!(Flags::default().is_empty());
    }

    /// Inode numbers that do not fit in 32 bits (XFS, btrfs) widen the
    /// list, set one at a time or on every core, and every place set
    /// before reads back the same.
    #[test]
    fn places_widen_for_inode_numbers_past_32_bits() {
        let big = u64::from(u32::MAX);
        let mut p = Places::new(7, 5);
        p.set(0, Some((7, 5)));
        p.set(1, Some((9, 6)));
        assert!(matches!(p.ino, Inos::Narrow(_)));
        p.set(2, Some((7, big)));
        assert!(matches!(p.ino, Inos::Wide(_)));
        assert_eq!(p.get(0), Some((7, 5)));
        assert_eq!(p.get(1), Some((9, 6)));
        assert_eq!(p.get(2), Some((7, big)));
        assert_eq!(p.get(3), None);
        assert!(p.present(2) && !p.present(3));

        let mut q = Places::new(7, 4);
        q.fill(|i| match i {
            0 => Some(Some((7, 1))),
            1 => Some(Some((7, big + 1))),
            2 => Some(Some((8, 1 << 40))),
            _ => Some(None),
        });
        let want = [Some((7, 1)), Some((7, big + 1)), Some((8, 1 << 40)), None];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(q.get(i), *w, "{i}");
        }
        q.set(1, None);
        assert_eq!(q.get(1), None);
        assert!(!q.present(1));
    }
}
