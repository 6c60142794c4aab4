//! Tree objects: one per directory, content-addressed, so a snapshot is a
//! Merkle tree and an unchanged directory costs nothing in a new snapshot.
//!
//! Two trees hang off every snapshot: the *source tree* (the source as it
//! was: files, directories, symlinks with their metadata) and the *archive
//! tree* (per path: earlier versions and the last deleted content). Both use
//! the same generic node encoding, [`TreeObject`]; in memory both are flat
//! lists sorted in path order (see `pathbytes::cmp_paths`), which is what the
//! planner and the browsable-tree renderer consume.
//!
//! File format (see docs/FORMAT.md): `b"trvT"`, one version byte, then a
//! zstd frame of the postcard encoding of a `TreeObject`. The tree id is the
//! hash of the uncompressed postcard bytes, so it does not depend on the
//! compressor.
//!
//! Trees are read ([`load_tree`], [`FlatCursor`], [`read_flat`]) and
//! written ([`write_tree`], [`TreeWriter`]'s sink) through the repository
//! traits only: this module knows the format, not where trees are kept.

use crate::codec::{zstd_compress, zstd_decompress};
use crate::error::{Error, Result};
use crate::hash::hash_bytes;
use crate::id::{HashAlgo, ObjectId, TreeId};
use crate::model::{Entry, History, Item, Leaf, Meta};
use crate::pathbytes;
use crate::repo::{RepoRead, RepoWrite, StoreKind};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;

pub const TREE_MAGIC: &[u8; 4] = b"trvT";
/// Version 2 added extended attributes, hard-link keys, sparse and stdin
/// flags, and special files; version 1 trees are still read.
pub const TREE_VERSION: u8 = 2;
pub const TREE_MIN_VERSION: u8 = 1;
/// Deeper trees than this are refused when reading (a hostile repository
/// must not overflow the stack).
pub const MAX_DEPTH: usize = 2048;

/// How far the walk of one stored tree may expand before the tree is
/// called hostile. A tree object may name one subtree under many names, so
/// a handful of objects can stand for an exponential number of paths
/// (every folder holding `a` and `b`, both the same child: 22 objects, 4
/// million paths); a walk that expands it must stop early and say so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// A source tree: at most this many entries, from the count its
    /// snapshot record states (see [`Limit::counted`]).
    Entries(u64),
    /// An archive tree, whose size no record states: beyond
    /// [`ARCHIVE_FLOOR`] entries, the expansion may not exceed
    /// [`ARCHIVE_REPEAT`] times the entries of the distinct tree objects
    /// read (real archives repeat a subtree only when whole folders were
    /// deleted with identical histories).
    Repeats,
}

/// Entries an archive walk may produce before the repeat check applies.
pub const ARCHIVE_FLOOR: u64 = 1 << 16;
/// How many times over an archive walk may repeat its distinct entries.
pub const ARCHIVE_REPEAT: u64 = 1024;
/// Slack over a record's count (never needed by a record trove wrote; it
/// keeps an off-by-some count from refusing a real snapshot).
const COUNT_SLACK: u64 = 1024;

impl Limit {
    /// The limit of a source tree whose snapshot record counts `entries`
    /// (files, folders, symlinks): see `SnapshotRecord::source_limit`.
    pub fn counted(entries: u64) -> Limit {
        Limit::Entries(entries.saturating_add(COUNT_SLACK))
    }

    /// The limit of an archive tree.
    pub fn archive() -> Limit {
        Limit::Repeats
    }

    /// No limit (trees being written, tests).
    pub fn none() -> Limit {
        Limit::Entries(u64::MAX)
    }
}

/// The work a walk has done against its [`Limit`].
struct Budget {
    limit: Limit,
    produced: u64,
    /// Distinct trees entered and their entries (Repeats only).
    distinct: HashSet<TreeId>,
    distinct_entries: u64,
}

impl Budget {
    fn new(limit: Limit) -> Budget {
        Budget {
            limit,
            produced: 0,
            distinct: HashSet::new(),
            distinct_entries: 0,
        }
    }

    fn entered(&mut self, id: &TreeId, entries: usize) {
        if self.limit == Limit::Repeats && self.distinct.insert(*id) {
            self.distinct_entries = self.distinct_entries.saturating_add(entries as u64);
        }
    }

    /// Count one item; an error naming the tree (`root`) once it is over.
    fn produce(&mut self, repo: &dyn RepoRead, root: &TreeId) -> Result<()> {
        self.produced += 1;
        let over = match self.limit {
            Limit::Entries(n) => self.produced > n,
            Limit::Repeats => {
                self.produced > ARCHIVE_FLOOR
                    && self.produced > self.distinct_entries.saturating_mul(ARCHIVE_REPEAT)
            }
        };
        if !over {
            return Ok(());
        }
        let why = match self.limit {
            Limit::Entries(n) => format!(
                "it expands to more entries than the {} its snapshot record counts",
                n.saturating_sub(COUNT_SLACK)
            ),
            Limit::Repeats => format!(
                "it expands to more than {} entries from {} distinct ones",
                self.produced - 1,
                self.distinct_entries
            ),
        };
        Err(Error::Expansion {
            path: repo.locate(StoreKind::Tree, &root.0),
            msg: format!("{why}: its folders reuse one subtree over and over (a hostile or damaged repository); it was not expanded further"),
        })
    }
}

/// A flat, path-ordered listing of a generic tree.
pub type FlatList<L, D> = Vec<FlatItem<L, D>>;

/// One item of a flat listing: a path and what is there.
pub type FlatItem<L, D> = (Vec<u8>, Flat<L, D>);

/// The archive of a snapshot: per path, its history, in path order.
pub type Archive = Vec<(Vec<u8>, History)>;

/// The encoded form of one directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeObject<L, D> {
    pub entries: Vec<Node<L, D>>,
}

/// A named node: a leaf, a directory, or (archive trees only: a path that
/// was a file and later a directory) both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node<L, D> {
    pub name: Vec<u8>,
    pub leaf: Option<L>,
    pub dir: Option<(TreeId, D)>,
}

/// A flat item of a generic tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Flat<L, D> {
    Leaf(L),
    Dir(D),
}

pub fn encode_tree<L: Serialize, D: Serialize>(t: &TreeObject<L, D>) -> Result<Vec<u8>> {
    postcard::to_stdvec(t).map_err(|e| Error::Internal(format!("encode tree: {e}")))
}

/// Wrap an encoded payload in the on-disk tree format.
pub fn frame_tree(payload: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(payload.len() / 2 + 8);
    out.extend_from_slice(TREE_MAGIC);
    out.push(TREE_VERSION);
    // Level 1: a tree's id hashes its payload, not these bytes, so the
    // level is free to choose; level 3's double hashing was 3% of a 1%
    // rerun's CPU for a few percent smaller packs.
    let z = zstd_compress(payload, 1).map_err(|e| Error::io("compress tree", "", e))?;
    out.extend_from_slice(&z);
    Ok(out)
}

/// A tree object's payload (what its id hashes) and the format version
/// it is in (which [`decode_tree_in`] needs).
pub struct Unframed {
    pub version: u8,
    pub payload: Vec<u8>,
}

/// Undo `frame_tree`. Never panics on hostile input; the size of the
/// decompressed payload is capped so a tiny zstd bomb cannot exhaust memory.
pub fn unframe_tree(data: &[u8], path: &Path) -> Result<Unframed> {
    let (version, payload) = crate::codec::check_header_in(
        data,
        TREE_MAGIC,
        (TREE_MIN_VERSION, TREE_VERSION),
        "tree object",
        path,
    )?;
    let payload = zstd_decompress(payload, 256 << 20)
        .map_err(|e| Error::corrupt("tree object", path, format!("zstd: {e}")))?;
    Ok(Unframed { version, payload })
}

/// Decode a payload of format `version` (see [`unframe_tree`]).
pub fn decode_tree_in<L: TreeLeaf, D: DeserializeOwned>(
    version: u8,
    payload: &[u8],
    path: &Path,
) -> Result<TreeObject<L, D>> {
    let _format = crate::model::decoding_version(version);
    decode_tree(payload, path)
}

/// A leaf type of a tree object: whether a node may hold it and a
/// directory at once, and which stored objects it references.
pub trait TreeLeaf: DeserializeOwned {
    /// Archive trees: a path that was a file and later a directory keeps
    /// both histories. A source tree never has both: a snapshot that says
    /// so is damaged or hostile (a symlink to write "through").
    const WITH_DIR: bool;
    /// Call `f` with every object this leaf references, its size, and its
    /// role (for naming the path that uses it).
    fn object_refs(&self, f: &mut dyn FnMut(ObjectId, u64, RefRole));
}

/// The role of an object reference within its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefRole {
    /// The current content of a file.
    Current,
    /// Version N in `versions/`.
    Version(u64),
    /// The content in `_deleted/`.
    Deleted,
}

impl TreeLeaf for Leaf {
    const WITH_DIR: bool = false;
    fn object_refs(&self, f: &mut dyn FnMut(ObjectId, u64, RefRole)) {
        if let Leaf::File { id, size, .. } = self {
            f(*id, *size, RefRole::Current);
        }
    }
}

impl TreeLeaf for History {
    const WITH_DIR: bool = true;
    fn object_refs(&self, f: &mut dyn FnMut(ObjectId, u64, RefRole)) {
        for (n, a) in &self.versions {
            f(a.id, a.size, RefRole::Version(*n));
        }
        if let Some(a) = &self.deleted {
            f(a.id, a.size, RefRole::Deleted);
        }
    }
}

pub fn decode_tree<L: TreeLeaf, D: DeserializeOwned>(
    payload: &[u8],
    path: &Path,
) -> Result<TreeObject<L, D>> {
    let t: TreeObject<L, D> = postcard::from_bytes(payload)
        .map_err(|e| Error::corrupt("tree object", path, format!("decode: {e}")))?;
    let mut prev: Option<&[u8]> = None;
    for n in &t.entries {
        if !pathbytes::is_safe_component(&n.name) {
            return Err(Error::corrupt(
                "tree object",
                path,
                format!("unsafe entry name {:?}", pathbytes::display(&n.name)),
            ));
        }
        if n.leaf.is_none() && n.dir.is_none() {
            return Err(Error::corrupt("tree object", path, "empty node"));
        }
        if !L::WITH_DIR && n.leaf.is_some() && n.dir.is_some() {
            return Err(Error::corrupt(
                "tree object",
                path,
                format!(
                    "entry {:?} is recorded both as a directory and as a file or symlink",
                    pathbytes::display(&n.name)
                ),
            ));
        }
        if let Some(p) = prev {
            if p >= n.name.as_slice() {
                return Err(Error::corrupt("tree object", path, "entries not sorted"));
            }
        }
        prev = Some(&n.name);
    }
    Ok(t)
}

/// Anything that can be listed as a tree: a path and a leaf or directory.
/// Trees are built straight from the engine's own listings, so no flat copy
/// of a whole snapshot is ever made just to encode it.
pub trait TreeItem {
    type L: Serialize + Clone;
    type D: Serialize + Clone + Default;
    fn path(&self) -> &[u8];
    fn to_flat(&self) -> Flat<Self::L, Self::D>;
}

impl TreeItem for Entry {
    type L = Leaf;
    type D = Meta;
    fn path(&self) -> &[u8] {
        &self.path
    }
    fn to_flat(&self) -> Flat<Leaf, Meta> {
        match &self.item {
            Item::Leaf(l) => Flat::Leaf(l.clone()),
            Item::Dir(m) => Flat::Dir(m.clone()),
        }
    }
}

impl TreeItem for (Vec<u8>, History) {
    type L = History;
    type D = ();
    fn path(&self) -> &[u8] {
        &self.0
    }
    fn to_flat(&self) -> Flat<History, ()> {
        Flat::Leaf(self.1.clone())
    }
}

impl<L: Serialize + Clone, D: Serialize + Clone + Default> TreeItem for (Vec<u8>, Flat<L, D>) {
    type L = L;
    type D = D;
    fn path(&self) -> &[u8] {
        &self.0
    }
    fn to_flat(&self) -> Flat<L, D> {
        self.1.clone()
    }
}

/// Build and store the Merkle tree of a sorted flat list. Only trees not
/// already in `known` or in the store are written, so a run that changed one
/// file writes just the trees on that file's path.
pub fn write_tree<T: TreeItem>(
    algo: HashAlgo,
    items: &[T],
    repo: &dyn RepoWrite,
    known: &HashSet<TreeId>,
) -> Result<TreeId> {
    let mut sink = |payload: Vec<u8>| -> Result<TreeId> {
        let id = TreeId(hash_bytes(algo, &payload));
        if !known.contains(&id) {
            repo.put_with(StoreKind::Tree, id.0, &mut || frame_tree(&payload))?;
        }
        Ok(id)
    };
    build(items, 0, &mut sink)
}

/// The root id of a flat list without storing anything (dry runs, and the
/// "did anything change?" test).
pub fn tree_id<T: TreeItem>(algo: HashAlgo, items: &[T]) -> Result<TreeId> {
    build(items, 0, &mut |payload: Vec<u8>| {
        Ok(TreeId(hash_bytes(algo, &payload)))
    })
}

/// `items` all lie below one directory whose path (plus `/`) is `plen`
/// bytes long. Sorted path order keeps every subtree contiguous.
fn build<T: TreeItem>(
    items: &[T],
    plen: usize,
    sink: &mut dyn FnMut(Vec<u8>) -> Result<TreeId>,
) -> Result<TreeId> {
    let mut entries: Vec<Node<T::L, T::D>> = Vec::new();
    let mut i = 0;
    while i < items.len() {
        let rest = &items[i].path()[plen..];
        let name_len = rest.iter().position(|&c| c == b'/').unwrap_or(rest.len());
        let name = &rest[..name_len];
        let mut leaf = None;
        let mut dir_meta = None;
        // Items exactly at this name.
        while i < items.len() && &items[i].path()[plen..] == name {
            match items[i].to_flat() {
                Flat::Leaf(l) => leaf = Some(l),
                Flat::Dir(d) => dir_meta = Some(d),
            }
            i += 1;
        }
        // Items below this name.
        let start = i;
        while i < items.len() {
            let r = &items[i].path()[plen..];
            if pathbytes::is_under(r, name) {
                i += 1;
            } else {
                break;
            }
        }
        let dir = if start < i || dir_meta.is_some() {
            let child = build(&items[start..i], plen + name_len + 1, sink)?;
            Some((child, dir_meta.unwrap_or_default()))
        } else {
            None
        };
        if leaf.is_none() && dir.is_none() {
            // A path that sorts before its own prefix cannot happen in a
            // sorted list; guard against an infinite loop anyway.
            i += 1;
            continue;
        }
        entries.push(Node {
            name: name.to_vec(),
            leaf,
            dir,
        });
    }
    sink(encode_tree(&TreeObject { entries })?)
}

/// A directory the streaming writer has open: its path, its own metadata
/// and the nodes seen so far.
struct OpenDir<L, D> {
    path: Vec<u8>,
    meta: D,
    nodes: Vec<Node<L, D>>,
    /// Set by [`TreeWriter::unchanged`]: the id this directory is known to
    /// have, so closing it encodes nothing.
    known: Option<TreeId>,
}

/// Builds a Merkle tree from items arriving one at a time in path order:
/// a directory is encoded and handed to the sink when the first item not
/// below it arrives. Memory is the open directories (the current path's
/// ancestors and their entries), not the tree. Gives the same ids as
/// [`write_tree`] over the same sorted list; each path may come once, or
/// as a leaf followed by items below it (an archive path that was a file
/// and later a directory).
pub struct TreeWriter<L, D, F> {
    stack: Vec<OpenDir<L, D>>,
    sink: F,
}

impl<L, D, F> TreeWriter<L, D, F>
where
    L: Serialize,
    D: Serialize + Default,
    F: FnMut(Vec<u8>) -> Result<TreeId>,
{
    pub fn new(sink: F) -> TreeWriter<L, D, F> {
        TreeWriter {
            stack: vec![OpenDir {
                path: Vec::new(),
                meta: D::default(),
                nodes: Vec::new(),
                known: None,
            }],
            sink,
        }
    }

    /// Offset of a child's name in a path below the top directory.
    fn child_offset(&self) -> usize {
        match self.stack.last() {
            Some(d) if self.stack.len() > 1 => d.path.len() + 1,
            _ => 0,
        }
    }

    fn close_top(&mut self) -> Result<()> {
        let Some(d) = self.stack.pop() else {
            return Ok(());
        };
        let id = match d.known {
            Some(id) => id,
            None => (self.sink)(encode_tree(&TreeObject { entries: d.nodes })?)?,
        };
        if let Some(node) = self.stack.last_mut().and_then(|p| p.nodes.last_mut()) {
            node.dir = Some((id, d.meta));
        }
        Ok(())
    }

    /// The node named `name` in the open directory: its last one (a leaf
    /// then a folder of the same name), or a new one.
    fn node(&mut self, name: &[u8]) -> &mut Node<L, D> {
        let last = self.stack.len() - 1;
        let nodes = &mut self.stack[last].nodes;
        if nodes.last().is_none_or(|n| n.name != name) {
            nodes.push(Node {
                name: name.to_vec(),
                leaf: None,
                dir: None,
            });
        }
        let at = nodes.len() - 1;
        &mut nodes[at]
    }

    /// Add the item at `path` (after every item that sorts before it).
    pub fn push(&mut self, path: &[u8], item: Flat<L, D>) -> Result<()> {
        while self.stack.len() > 1 {
            let top = &self.stack[self.stack.len() - 1].path;
            if pathbytes::is_under(path, top) {
                break;
            }
            self.close_top()?;
        }
        // Folders on the way that no item named (archive trees).
        loop {
            let off = self.child_offset();
            let Some(k) = path[off..].iter().position(|&c| c == b'/') else {
                break;
            };
            self.node(&path[off..off + k]);
            self.stack.push(OpenDir {
                path: path[..off + k].to_vec(),
                meta: D::default(),
                nodes: Vec::new(),
                known: None,
            });
        }
        let off = self.child_offset();
        let node = self.node(&path[off..]);
        match item {
            Flat::Leaf(l) => node.leaf = Some(l),
            Flat::Dir(meta) => self.stack.push(OpenDir {
                path: path.to_vec(),
                meta,
                nodes: Vec::new(),
                known: None,
            }),
        }
        Ok(())
    }

    /// The directory at `path`, open now with every item below it pushed,
    /// is known to encode to `id` (it equals a stored tree): closing it
    /// then costs no encoding.
    pub fn unchanged(&mut self, path: &[u8], id: TreeId) -> Result<()> {
        // Its last subdirectory may still be open: nothing more comes below.
        while self.stack.len() > 1 {
            let top = &self.stack[self.stack.len() - 1].path;
            if pathbytes::is_under(top, path) {
                self.close_top()?;
            } else {
                break;
            }
        }
        if self.stack.len() < 2 {
            return Ok(());
        }
        if let Some(d) = self.stack.last_mut().filter(|d| d.path == path) {
            d.known = Some(id);
        }
        Ok(())
    }

    /// A directory at `path` that is the stored tree `id`, with nothing
    /// pushed below it (a subtree kept whole): it costs no encoding.
    pub fn push_tree(&mut self, path: &[u8], meta: D, id: TreeId) -> Result<()> {
        self.push(path, Flat::Dir(meta))?;
        if let Some(d) = self.stack.last_mut().filter(|d| d.path == path) {
            d.known = Some(id);
        }
        Ok(())
    }

    /// Close every directory and return the root's id.
    pub fn finish(mut self) -> Result<TreeId> {
        while self.stack.len() > 1 {
            self.close_top()?;
        }
        let root = self.stack.pop().map(|d| d.nodes).unwrap_or_default();
        (self.sink)(encode_tree(&TreeObject { entries: root })?)
    }
}

/// A directory the cursor is in: its path and its nodes still to visit.
type OpenNodes<L, D> = (Vec<u8>, Vec<Node<L, D>>);

/// A stored tree read lazily in path order (the order of [`read_flat`]):
/// only the tree objects on the current path are decoded, so memory is
/// the depth times the widest directory, not the tree.
pub struct FlatCursor<'r, L, D> {
    repo: &'r dyn RepoRead,
    /// Per open directory: its path and its remaining nodes (reversed, so
    /// the next one pops off the end).
    stack: Vec<OpenNodes<L, D>>,
    /// A directory whose `Dir` item was yielded and is entered next.
    pending: Option<(Vec<u8>, TreeId)>,
    seen: Option<&'r mut HashSet<TreeId>>,
    root: TreeId,
    budget: Budget,
}

impl<'r, L: TreeLeaf, D: DeserializeOwned> FlatCursor<'r, L, D> {
    /// `seen`, when given, collects the id of every tree entered; past
    /// `limit` the walk fails (a hostile tree).
    pub fn new(
        repo: &'r dyn RepoRead,
        root: &TreeId,
        mut seen: Option<&'r mut HashSet<TreeId>>,
        limit: Limit,
    ) -> Result<FlatCursor<'r, L, D>> {
        let t: TreeObject<L, D> = load_tree(repo, root)?;
        if let Some(s) = seen.as_deref_mut() {
            s.insert(*root);
        }
        let mut budget = Budget::new(limit);
        budget.entered(root, t.entries.len());
        let mut nodes = t.entries;
        nodes.reverse();
        Ok(FlatCursor {
            repo,
            stack: vec![(Vec::new(), nodes)],
            pending: None,
            seen,
            root: *root,
            budget,
        })
    }

    /// The directory whose `Dir` item was just yielded, skipped: its
    /// contents are not visited (nor its tree read), and its id is
    /// returned.
    pub fn skip_dir(&mut self) -> Option<TreeId> {
        self.pending.take().map(|(_, id)| id)
    }

    /// The next item in path order, or `None` at the end.
    #[allow(clippy::should_implement_trait)] // fallible: Result<Option<_>>
    pub fn next(&mut self) -> Result<Option<FlatItem<L, D>>> {
        if let Some((path, id)) = self.pending.take() {
            if self.stack.len() > MAX_DEPTH {
                return Err(Error::corrupt(
                    "tree object",
                    self.repo.locate(StoreKind::Tree, &id.0),
                    "directory nesting deeper than any real tree",
                ));
            }
            let t: TreeObject<L, D> = load_tree(self.repo, &id)?;
            if let Some(s) = self.seen.as_deref_mut() {
                s.insert(id);
            }
            self.budget.entered(&id, t.entries.len());
            let mut nodes = t.entries;
            nodes.reverse();
            self.stack.push((path, nodes));
        }
        loop {
            let Some((prefix, nodes)) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some(node) = nodes.pop() else {
                self.stack.pop();
                continue;
            };
            if node.leaf.is_some() || node.dir.is_some() {
                self.budget.produce(self.repo, &self.root)?;
            }
            let path = pathbytes::join(prefix, &node.name);
            match (node.leaf, node.dir) {
                (Some(l), Some(dir)) => {
                    // The leaf now; the directory when asked next.
                    nodes.push(Node {
                        name: node.name,
                        leaf: None,
                        dir: Some(dir),
                    });
                    return Ok(Some((path, Flat::Leaf(l))));
                }
                (Some(l), None) => return Ok(Some((path, Flat::Leaf(l)))),
                (None, Some((id, d))) => {
                    self.pending = Some((path.clone(), id));
                    return Ok(Some((path, Flat::Dir(d))));
                }
                (None, None) => continue,
            }
        }
    }
}

/// Read a stored tree object.
pub fn load_tree<L: TreeLeaf, D: DeserializeOwned>(
    repo: &dyn RepoRead,
    id: &TreeId,
) -> Result<TreeObject<L, D>> {
    load_tree_stored(repo, id).map(|(_, t)| t)
}

/// Read a stored tree object, checked against its id, with the bytes as
/// stored (what a replica copies verbatim, so its ids stay the original's).
pub fn load_tree_stored<L: TreeLeaf, D: DeserializeOwned>(
    repo: &dyn RepoRead,
    id: &TreeId,
) -> Result<(Vec<u8>, TreeObject<L, D>)> {
    let path = repo.locate(StoreKind::Tree, &id.0);
    let data = match repo.read(StoreKind::Tree, &id.0) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Missing {
                what: "tree",
                id: id.to_hex(),
                path,
            })
        }
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let Unframed { version, payload } = unframe_tree(&data, &path)?;
    if hash_bytes(repo.algo(), &payload) != id.0 {
        return Err(Error::corrupt(
            "tree object",
            &path,
            "content does not match its id",
        ));
    }
    let t = decode_tree_in(version, &payload, &path)?;
    Ok((data, t))
}

/// Read a whole tree into a flat sorted list, collecting the ids of every
/// tree visited into `seen`. Past `limit` the read fails (a hostile tree).
pub fn read_flat<L, D>(
    repo: &dyn RepoRead,
    root: &TreeId,
    seen: &mut HashSet<TreeId>,
    limit: Limit,
) -> Result<FlatList<L, D>>
where
    L: TreeLeaf,
    D: DeserializeOwned,
{
    // A source tree's limit (the entry count its record states) sizes the
    // list; it is only a hint, never trusted beyond that.
    let hint = match limit {
        Limit::Entries(n) => n.min(1 << 26) as usize,
        Limit::Repeats => 0,
    };
    let mut out = Vec::with_capacity(hint);
    let mut w = Walk {
        repo,
        root: *root,
        seen,
        budget: Budget::new(limit),
    };
    w.walk(root, Vec::new(), 0, &mut out)?;
    Ok(out)
}

struct Walk<'a> {
    repo: &'a dyn RepoRead,
    root: TreeId,
    seen: &'a mut HashSet<TreeId>,
    budget: Budget,
}

impl Walk<'_> {
    fn walk<L, D>(
        &mut self,
        id: &TreeId,
        prefix: Vec<u8>,
        depth: usize,
        out: &mut Vec<(Vec<u8>, Flat<L, D>)>,
    ) -> Result<()>
    where
        L: TreeLeaf,
        D: DeserializeOwned,
    {
        let repo = self.repo;
        if depth > MAX_DEPTH {
            return Err(Error::corrupt(
                "tree object",
                repo.locate(StoreKind::Tree, &id.0),
                "directory nesting deeper than any real tree",
            ));
        }
        self.seen.insert(*id);
        let t: TreeObject<L, D> = load_tree(repo, id)?;
        self.budget.entered(id, t.entries.len());
        for n in t.entries {
            if n.leaf.is_some() || n.dir.is_some() {
                self.budget.produce(repo, &self.root)?;
            }
            let path = pathbytes::join(&prefix, &n.name);
            if let Some(l) = n.leaf {
                out.push((path.clone(), Flat::Leaf(l)));
            }
            if let Some((child, d)) = n.dir {
                out.push((path.clone(), Flat::Dir(d)));
                self.walk(&child, path, depth + 1, out)?;
            }
        }
        Ok(())
    }
}

/// A source tree's flat item as a listing entry.
pub fn source_entry((path, f): FlatItem<Leaf, Meta>) -> Entry {
    Entry {
        path,
        item: match f {
            Flat::Leaf(l) => Item::Leaf(l),
            Flat::Dir(m) => Item::Dir(m),
        },
    }
}

pub fn flat_to_source(flat: Vec<(Vec<u8>, Flat<Leaf, Meta>)>) -> Vec<Entry> {
    flat.into_iter().map(source_entry).collect()
}

pub fn flat_to_archive(flat: Vec<(Vec<u8>, Flat<History, ()>)>) -> Vec<(Vec<u8>, History)> {
    flat.into_iter()
        .filter_map(|(p, f)| match f {
            Flat::Leaf(h) => Some((p, h)),
            Flat::Dir(()) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Archived;
    use proptest::prelude::*;

    fn meta(m: u32) -> Meta {
        Meta {
            mode: m,
            uid: 1,
            gid: 2,
            mtime_ns: 3,
            xattrs: Default::default(),
        }
    }

    fn roundtrip_flat<L, D>(items: &[(Vec<u8>, Flat<L, D>)]) -> Vec<(Vec<u8>, Flat<L, D>)>
    where
        L: Serialize + TreeLeaf + Clone,
        D: Serialize + DeserializeOwned + Clone + Default,
    {
        // Encode into an in-memory map, then walk it back.
        let mut store = std::collections::HashMap::new();
        let root = build(items, 0, &mut |payload: Vec<u8>| {
            let id = TreeId(hash_bytes(HashAlgo::Blake3, &payload));
            let framed = frame_tree(&payload)?;
            store.insert(id, framed);
            Ok(id)
        })
        .expect("encoding an in-memory tree cannot fail");
        fn walk_mem<L: TreeLeaf, D: DeserializeOwned>(
            store: &std::collections::HashMap<TreeId, Vec<u8>>,
            id: &TreeId,
            prefix: Vec<u8>,
            out: &mut Vec<(Vec<u8>, Flat<L, D>)>,
        ) {
            let u = unframe_tree(&store[id], Path::new("mem")).expect("framed by us");
            let t: TreeObject<L, D> =
                decode_tree_in(u.version, &u.payload, Path::new("mem")).expect("valid");
            for n in t.entries {
                let p = pathbytes::join(&prefix, &n.name);
                if let Some(l) = n.leaf {
                    out.push((p.clone(), Flat::Leaf(l)));
                }
                if let Some((c, d)) = n.dir {
                    out.push((p.clone(), Flat::Dir(d)));
                    walk_mem(store, &c, p, out);
                }
            }
        }
        let mut out = Vec::new();
        walk_mem(&store, &root, Vec::new(), &mut out);
        out
    }

    /// Every tree id `build` hands its sink, in order.
    fn built_ids<L: Serialize + Clone, D: Serialize + Clone + Default>(
        items: &[(Vec<u8>, Flat<L, D>)],
    ) -> Vec<TreeId> {
        let mut ids = Vec::new();
        build(items, 0, &mut |p: Vec<u8>| {
            let id = TreeId(hash_bytes(HashAlgo::Blake3, &p));
            ids.push(id);
            Ok(id)
        })
        .expect("in memory");
        ids
    }

    /// The same through the streaming writer.
    fn streamed_ids<L: Serialize + Clone, D: Serialize + Clone + Default>(
        items: &[(Vec<u8>, Flat<L, D>)],
    ) -> Vec<TreeId> {
        let mut ids = Vec::new();
        let mut w = TreeWriter::new(|p: Vec<u8>| {
            let id = TreeId(hash_bytes(HashAlgo::Blake3, &p));
            ids.push(id);
            Ok(id)
        });
        for (p, f) in items {
            w.push(p, f.clone()).expect("in memory");
        }
        w.finish().expect("in memory");
        ids
    }

    #[test]
    fn cursor_reads_what_read_flat_reads() -> Result<()> {
        let repo = crate::repo::memory::MemoryRepo::new(HashAlgo::Blake3);
        let h = |n: u64| History {
            next_version: n,
            versions: vec![],
            deleted: None,
        };
        let archive: Vec<(Vec<u8>, History)> = ["a", "a/b", "a/b/c", "a/d", "e", "f/g/h"]
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_bytes().to_vec(), h(i as u64 + 2)))
            .collect();
        let root = write_tree(HashAlgo::Blake3, &archive, &repo, &HashSet::new())?;
        repo.commit()?;
        let mut seen_flat = HashSet::new();
        let flat: FlatList<History, ()> = read_flat(&repo, &root, &mut seen_flat, Limit::none())?;
        let mut seen_cursor = HashSet::new();
        let mut c =
            FlatCursor::<History, ()>::new(&repo, &root, Some(&mut seen_cursor), Limit::none())?;
        let mut streamed = Vec::new();
        while let Some(item) = c.next()? {
            streamed.push(item);
        }
        assert_eq!(streamed, flat);
        assert_eq!(seen_cursor, seen_flat);
        Ok(())
    }

    #[test]
    fn unchanged_directory_is_not_encoded() {
        let items: Vec<(Vec<u8>, Flat<History, ()>)> = vec![
            (b"a/x".to_vec(), Flat::Leaf(History::default())),
            (b"b".to_vec(), Flat::Leaf(History::default())),
        ];
        let all = built_ids(&items);
        let known = all[0];
        let mut ids = Vec::new();
        let mut w = TreeWriter::new(|p: Vec<u8>| {
            let id = TreeId(hash_bytes(HashAlgo::Blake3, &p));
            ids.push(id);
            Ok(id)
        });
        w.push(&items[0].0, items[0].1.clone()).expect("in memory");
        w.unchanged(b"a", known).expect("in memory");
        w.push(&items[1].0, items[1].1.clone()).expect("in memory");
        let root = w.finish().expect("in memory");
        assert_eq!(root, all[1]);
        assert_eq!(ids, vec![all[1]], "only the root was encoded");
    }

    #[test]
    fn source_tree_round_trip() {
        let oid = ObjectId(crate::id::Digest([7; 32]));
        let items: Vec<(Vec<u8>, Flat<Leaf, Meta>)> = vec![
            (b"a".to_vec(), Flat::Dir(meta(0o755))),
            (
                b"a/f".to_vec(),
                Flat::Leaf(Leaf::File {
                    size: 5,
                    id: oid,
                    dup: false,
                    meta: meta(0o644),
                    ext: Default::default(),
                }),
            ),
            (b"a/sub".to_vec(), Flat::Dir(meta(0o700))),
            (
                b"b\xff".to_vec(),
                Flat::Leaf(Leaf::Symlink {
                    target: b"../x".to_vec(),
                    meta: meta(0o777),
                }),
            ),
        ];
        assert_eq!(roundtrip_flat(&items), items);
    }

    #[test]
    fn unchanged_subtree_keeps_its_id() {
        let f = |n: u8| {
            Flat::<Leaf, Meta>::Leaf(Leaf::Symlink {
                target: vec![n],
                meta: meta(1),
            })
        };
        let a = vec![
            (b"d".to_vec(), Flat::Dir(meta(1))),
            (b"d/x".to_vec(), f(1)),
            (b"e".to_vec(), Flat::Dir(meta(1))),
            (b"e/y".to_vec(), f(2)),
        ];
        let mut b = a.clone();
        b[3].1 = f(3);
        let mut ids_a = Vec::new();
        let mut ids_b = Vec::new();
        build(&a, 0, &mut |p: Vec<u8>| {
            let id = TreeId(hash_bytes(HashAlgo::Blake3, &p));
            ids_a.push(id);
            Ok(id)
        })
        .expect("in memory");
        build(&b, 0, &mut |p: Vec<u8>| {
            let id = TreeId(hash_bytes(HashAlgo::Blake3, &p));
            ids_b.push(id);
            Ok(id)
        })
        .expect("in memory");
        assert_eq!(ids_a[0], ids_b[0], "tree of d/ is shared");
        assert_ne!(ids_a[1], ids_b[1], "tree of e/ changed");
        assert_ne!(ids_a[2], ids_b[2], "root changed");
    }

    #[test]
    fn archive_node_can_be_file_and_directory() {
        let h = |n: u64| History {
            next_version: n,
            versions: vec![],
            deleted: Some(Archived {
                id: ObjectId(crate::id::Digest([n as u8; 32])),
                size: n,
                meta: meta(0),
                time_ns: 0,
            }),
        };
        let items: Vec<(Vec<u8>, Flat<History, ()>)> = vec![
            (b"a".to_vec(), Flat::Leaf(h(2))),
            (b"a/b".to_vec(), Flat::Leaf(h(3))),
        ];
        let back = roundtrip_flat(&items);
        let leaves: Vec<_> = back
            .into_iter()
            .filter(|(_, f)| matches!(f, Flat::Leaf(_)))
            .collect();
        assert_eq!(leaves, items);
    }

    #[test]
    fn corrupt_input_is_an_error() {
        let p = Path::new("x");
        assert!(unframe_tree(b"", p).is_err());
        assert!(unframe_tree(b"trvT\x01garbage", p).is_err());
        assert!(unframe_tree(b"trvT\x09", p).is_err());
        assert!(decode_tree::<Leaf, Meta>(&[0xff, 0xff, 0xff], p).is_err());
        let bad = TreeObject::<Leaf, Meta> {
            entries: vec![Node {
                name: b"..".to_vec(),
                leaf: None,
                dir: Some((TreeId(crate::id::Digest([0; 32])), meta(0))),
            }],
        };
        let enc = encode_tree(&bad).expect("in memory");
        assert!(decode_tree::<Leaf, Meta>(&enc, p).is_err());
    }

    fn arb_name() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::num::u8::ANY, 1..6).prop_filter_map("component", |mut v| {
            for b in v.iter_mut() {
                if *b == b'/' || *b == 0 {
                    *b = b'_';
                }
            }
            pathbytes::is_safe_component(&v).then_some(v)
        })
    }

    fn arb_leaf() -> impl Strategy<Value = Leaf> {
        prop_oneof![
            (
                any::<u64>(),
                any::<[u8; 32]>(),
                any::<bool>(),
                any::<u32>(),
                any::<i64>()
            )
                .prop_map(|(size, id, dup, mode, t)| Leaf::File {
                    size,
                    id: ObjectId(crate::id::Digest(id)),
                    dup,
                    meta: Meta {
                        mode,
                        uid: 0,
                        gid: 0,
                        mtime_ns: t,
                        xattrs: Default::default(),
                    },
                    ext: Default::default(),
                }),
            (prop::collection::vec(any::<u8>(), 0..20), any::<u32>()).prop_map(|(target, mode)| {
                Leaf::Symlink {
                    target,
                    meta: Meta {
                        mode,
                        uid: 5,
                        gid: 6,
                        mtime_ns: -1,
                        xattrs: Default::default(),
                    },
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn prop_source_tree_round_trip(
            raw in prop::collection::btree_map(
                prop::collection::vec(arb_name(), 1..4), prop::option::of(arb_leaf()), 0..40)
        ) {
            // Turn random paths into a valid source listing: every ancestor
            // of an entry is a directory, and a leaf has no children.
            let mut items: std::collections::BTreeMap<Vec<Vec<u8>>, Flat<Leaf, Meta>> = Default::default();
            for (comps, leaf) in raw {
                for k in 1..comps.len() {
                    items.insert(comps[..k].to_vec(), Flat::Dir(meta(0o755)));
                }
                let f = match leaf { Some(l) => Flat::Leaf(l), None => Flat::Dir(meta(0o700)) };
                items.entry(comps).or_insert(f);
            }
            let keys: Vec<_> = items.keys().cloned().collect();
            for k in &keys {
                let is_dir_prefix = keys.iter().any(|o| o.len() > k.len() && o[..k.len()] == k[..]);
                if is_dir_prefix {
                    items.insert(k.clone(), Flat::Dir(meta(0o755)));
                }
            }
            let mut flat: Vec<(Vec<u8>, Flat<Leaf, Meta>)> =
                items.into_iter().map(|(c, f)| (c.join(&b'/'), f)).collect();
            flat.sort_by(|a, b| pathbytes::cmp_paths(&a.0, &b.0));
            prop_assert_eq!(streamed_ids(&flat), built_ids(&flat));
            prop_assert_eq!(roundtrip_flat(&flat), flat);
        }

        #[test]
        fn prop_streamed_archive_equals_built(
            raw in prop::collection::btree_set(prop::collection::vec(arb_name(), 1..4), 0..30)
        ) {
            // Archive paths nest freely (a file and, later, a folder).
            let h = History { next_version: 2, versions: vec![], deleted: None };
            let mut flat: Vec<(Vec<u8>, Flat<History, ()>)> =
                raw.into_iter().map(|c| (c.join(&b'/'), Flat::Leaf(h.clone()))).collect();
            flat.sort_by(|a, b| pathbytes::cmp_paths(&a.0, &b.0));
            prop_assert_eq!(streamed_ids(&flat), built_ids(&flat));
        }

        #[test]
        fn prop_decode_never_panics(data in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = unframe_tree(&data, Path::new("fuzz"));
            let _ = decode_tree::<Leaf, Meta>(&data, Path::new("fuzz"));
            let _ = decode_tree::<History, ()>(&data, Path::new("fuzz"));
        }
    }
}
