//! Read-only questions about what snapshots recorded: `diff` between two
//! snapshots (walking both Merkle trees and skipping every subtree whose id
//! is equal on both sides) and `history` of one path across all snapshots,
//! with where each content can be found today; and which entries `ls`
//! shows for a path.

use crate::browsable::render::{self, Escapes};
use crate::error::{Error, Result};
use crate::id::{ObjectId, SnapshotId, TreeId};
use crate::model::{Entry, History, Item, Leaf, Meta};
use crate::pathbytes::{self, display as show};
use crate::repo::snapshot::{self, Snapshot};
use crate::repo::tree::{self, Node, MAX_DEPTH};
use crate::repo::{RepoRead, StoreKind};
use serde::Serialize;
use std::cmp::Ordering;

/// What happened to one path between two snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Added,
    Removed,
    /// A file's content (or a symlink's target) changed.
    Modified,
    /// File ↔ directory ↔ symlink.
    TypeChanged,
    /// Same content, other mode, owner or (files, symlinks) mtime.
    Metadata,
}

impl ChangeKind {
    /// restic's one-letter markers.
    pub fn marker(self) -> char {
        match self {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::Modified => 'M',
            ChangeKind::TypeChanged => 'T',
            ChangeKind::Metadata => 'U',
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Change {
    pub change: ChangeKind,
    pub path: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct DiffSummary {
    pub added: u64,
    pub removed: u64,
    pub modified: u64,
    pub type_changed: u64,
    pub metadata: u64,
    /// Bytes of files added or with new content in B, and removed or
    /// replaced from A.
    pub added_bytes: u64,
    pub removed_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Diff {
    pub from: String,
    pub to: String,
    pub changes: Vec<Change>,
    pub summary: DiffSummary,
}

type SrcNode = Node<Leaf, Meta>;

fn load(repo: &dyn RepoRead, id: &TreeId, depth: usize) -> Result<Vec<SrcNode>> {
    if depth > MAX_DEPTH {
        return Err(Error::corrupt(
            "tree object",
            repo.locate(StoreKind::Tree, &id.0),
            "nested deeper than any real tree",
        ));
    }
    Ok(tree::load_tree::<Leaf, Meta>(repo, id)?.entries)
}

/// Type name of a node's leaf or directory part.
fn leaf_kind(l: &Leaf) -> &'static str {
    match l {
        Leaf::File { .. } => "file",
        Leaf::Symlink { .. } => "symlink",
        Leaf::Special { kind, .. } => kind.name(),
    }
}

struct Differ<'r> {
    repo: &'r dyn RepoRead,
    out: Vec<Change>,
    sum: DiffSummary,
}

impl Differ<'_> {
    fn push(&mut self, change: ChangeKind, path: &[u8], kind: &'static str) {
        match change {
            ChangeKind::Added => self.sum.added += 1,
            ChangeKind::Removed => self.sum.removed += 1,
            ChangeKind::Modified => self.sum.modified += 1,
            ChangeKind::TypeChanged => self.sum.type_changed += 1,
            ChangeKind::Metadata => self.sum.metadata += 1,
        }
        let mut p = show(path);
        if kind == "dir" {
            p.push('/');
        }
        self.out.push(Change {
            change,
            path: p,
            kind,
        });
    }

    /// Everything below a directory present on one side only.
    fn whole(
        &mut self,
        change: ChangeKind,
        id: &TreeId,
        prefix: &[u8],
        depth: usize,
    ) -> Result<()> {
        for n in load(self.repo, id, depth)? {
            let p = pathbytes::join(prefix, &n.name);
            if let Some(l) = &n.leaf {
                self.count_bytes(change, l);
                self.push(change, &p, leaf_kind(l));
            }
            if let Some((child, _)) = &n.dir {
                self.push(change, &p, "dir");
                self.whole(change, child, &p, depth + 1)?;
            }
        }
        Ok(())
    }

    fn count_bytes(&mut self, change: ChangeKind, l: &Leaf) {
        if let Leaf::File { size, .. } = l {
            match change {
                ChangeKind::Added => self.sum.added_bytes += size,
                ChangeKind::Removed => self.sum.removed_bytes += size,
                _ => {}
            }
        }
    }

    fn trees(&mut self, a: &TreeId, b: &TreeId, prefix: &[u8], depth: usize) -> Result<()> {
        if a == b {
            return Ok(());
        }
        let (na, nb) = (load(self.repo, a, depth)?, load(self.repo, b, depth)?);
        let (mut i, mut j) = (0, 0);
        while i < na.len() || j < nb.len() {
            let ord = match (na.get(i), nb.get(j)) {
                (Some(x), Some(y)) => x.name.cmp(&y.name),
                (Some(_), None) => Ordering::Less,
                _ => Ordering::Greater,
            };
            match ord {
                Ordering::Less => {
                    self.node_gone(&na[i], prefix, depth)?;
                    i += 1;
                }
                Ordering::Greater => {
                    self.node_new(&nb[j], prefix, depth)?;
                    j += 1;
                }
                Ordering::Equal => {
                    self.node_pair(&na[i], &nb[j], prefix, depth)?;
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }

    fn node_gone(&mut self, n: &SrcNode, prefix: &[u8], depth: usize) -> Result<()> {
        let p = pathbytes::join(prefix, &n.name);
        if let Some(l) = &n.leaf {
            self.count_bytes(ChangeKind::Removed, l);
            self.push(ChangeKind::Removed, &p, leaf_kind(l));
        }
        if let Some((child, _)) = &n.dir {
            self.push(ChangeKind::Removed, &p, "dir");
            self.whole(ChangeKind::Removed, child, &p, depth + 1)?;
        }
        Ok(())
    }

    fn node_new(&mut self, n: &SrcNode, prefix: &[u8], depth: usize) -> Result<()> {
        let p = pathbytes::join(prefix, &n.name);
        if let Some(l) = &n.leaf {
            self.count_bytes(ChangeKind::Added, l);
            self.push(ChangeKind::Added, &p, leaf_kind(l));
        }
        if let Some((child, _)) = &n.dir {
            self.push(ChangeKind::Added, &p, "dir");
            self.whole(ChangeKind::Added, child, &p, depth + 1)?;
        }
        Ok(())
    }

    fn node_pair(&mut self, a: &SrcNode, b: &SrcNode, prefix: &[u8], depth: usize) -> Result<()> {
        let p = pathbytes::join(prefix, &a.name);
        match (&a.leaf, &a.dir, &b.leaf, &b.dir) {
            (Some(la), None, Some(lb), None) => self.leaves(la, lb, &p),
            (None, Some((ta, ma)), None, Some((tb, mb))) => {
                if (ma.mode, ma.uid, ma.gid, &ma.xattrs) != (mb.mode, mb.uid, mb.gid, &mb.xattrs) {
                    self.push(ChangeKind::Metadata, &p, "dir");
                }
                self.trees(ta, tb, &p, depth + 1)?;
            }
            _ => {
                // The path changed type: report it once, then what the
                // directory side brings or takes away below it.
                let to = b.leaf.as_ref().map(leaf_kind).unwrap_or("dir");
                if let Some(Leaf::File { size, .. }) = &a.leaf {
                    self.sum.removed_bytes += size;
                }
                if let Some(Leaf::File { size, .. }) = &b.leaf {
                    self.sum.added_bytes += size;
                }
                self.push(ChangeKind::TypeChanged, &p, to);
                if let Some((ta, _)) = &a.dir {
                    self.whole(ChangeKind::Removed, ta, &p, depth + 1)?;
                }
                if let Some((tb, _)) = &b.dir {
                    self.whole(ChangeKind::Added, tb, &p, depth + 1)?;
                }
            }
        }
        Ok(())
    }

    fn leaves(&mut self, a: &Leaf, b: &Leaf, p: &[u8]) {
        // Extended attributes (ACLs, capabilities) are metadata too.
        let meta_differs = |x: &Meta, y: &Meta| x != y;
        match (a, b) {
            (
                Leaf::File {
                    id: ia,
                    size: sa,
                    meta: ma,
                    ext: ea,
                    ..
                },
                Leaf::File {
                    id: ib,
                    size: sb,
                    meta: mb,
                    ext: eb,
                    ..
                },
            ) => {
                if ia != ib {
                    self.sum.removed_bytes += sa;
                    self.sum.added_bytes += sb;
                    self.push(ChangeKind::Modified, p, "file");
                } else if meta_differs(ma, mb) || ea != eb {
                    self.push(ChangeKind::Metadata, p, "file");
                }
            }
            (
                Leaf::Symlink {
                    target: ta,
                    meta: ma,
                },
                Leaf::Symlink {
                    target: tb,
                    meta: mb,
                },
            ) => {
                if ta != tb {
                    self.push(ChangeKind::Modified, p, "symlink");
                } else if meta_differs(ma, mb) {
                    self.push(ChangeKind::Metadata, p, "symlink");
                }
            }
            (
                Leaf::Special {
                    kind: ka,
                    rdev: ra,
                    meta: ma,
                },
                Leaf::Special {
                    kind: kb,
                    rdev: rb,
                    meta: mb,
                },
            ) if ka == kb => {
                if ra != rb {
                    self.push(ChangeKind::Modified, p, ka.name());
                } else if meta_differs(ma, mb) {
                    self.push(ChangeKind::Metadata, p, ka.name());
                }
            }
            (_, b) => {
                if let Leaf::File { size, .. } = a {
                    self.sum.removed_bytes += size;
                }
                if let Leaf::File { size, .. } = b {
                    self.sum.added_bytes += size;
                }
                self.push(ChangeKind::TypeChanged, p, leaf_kind(b));
            }
        }
    }
}

/// What changed from snapshot `a` to snapshot `b`, in path order.
pub fn diff(repo: &dyn RepoRead, a: &Snapshot, b: &Snapshot) -> Result<Diff> {
    let mut d = Differ {
        repo,
        out: Vec::new(),
        sum: DiffSummary::default(),
    };
    d.trees(&a.record.root, &b.record.root, b"", 0)?;
    Ok(Diff {
        from: a.id.short(),
        to: b.id.short(),
        changes: d.out,
        summary: d.sum,
    })
}

/// One row of `trove history`: a state the path entered in a snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct HistoryRow {
    pub snapshot: String,
    pub time: String,
    pub time_ns: i64,
    /// `added`, `modified`, `type changed`, `deleted`, `metadata`.
    pub event: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Where this content is in the browsable tree now (relative to the
    /// backup root), or why it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// The state of one path in one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Absent,
    Dir(Meta),
    Leaf(Leaf),
}

/// The node at `path` (components joined by `/`) among `nodes`, the
/// entries of a tree at `depth`, reading only the trees on its way.
fn find_below<L: tree::TreeLeaf, D: serde::de::DeserializeOwned>(
    repo: &dyn RepoRead,
    mut nodes: Vec<Node<L, D>>,
    path: &[u8],
    depth: usize,
) -> Result<Option<Node<L, D>>> {
    let comps: Vec<&[u8]> = path.split(|&c| c == b'/').collect();
    for (i, c) in comps.iter().enumerate() {
        let Ok(k) = nodes.binary_search_by(|n| n.name.as_slice().cmp(c)) else {
            return Ok(None);
        };
        let n = nodes.swap_remove(k);
        if i + 1 == comps.len() {
            return Ok(Some(n));
        }
        let Some((child, _)) = n.dir else {
            return Ok(None);
        };
        if depth + i + 1 > MAX_DEPTH {
            return Err(Error::corrupt(
                "tree object",
                repo.locate(StoreKind::Tree, &child.0),
                "nested deeper than any real tree",
            ));
        }
        nodes = tree::load_tree::<L, D>(repo, &child)?.entries;
    }
    Ok(None)
}

/// The node at `path` below the tree `root` (source or archive).
fn find_node<L: tree::TreeLeaf, D: serde::de::DeserializeOwned>(
    repo: &dyn RepoRead,
    root: &TreeId,
    path: &[u8],
) -> Result<Option<Node<L, D>>> {
    find_below(repo, tree::load_tree::<L, D>(repo, root)?.entries, path, 0)
}

/// What a source node says of its path.
fn state_of(node: Option<SrcNode>) -> State {
    match node.map(|n| (n.leaf, n.dir)) {
        Some((Some(l), _)) => State::Leaf(l),
        Some((None, Some((_, m)))) => State::Dir(m),
        _ => State::Absent,
    }
}

/// Find `path` in the source tree of a snapshot, following only the
/// directories on its way.
fn lookup(repo: &dyn RepoRead, root: &TreeId, path: &[u8]) -> Result<State> {
    Ok(state_of(find_node(repo, root, path)?))
}

/// Where content `id` of `path` shows in the browsable tree of the latest
/// snapshot, if anywhere.
struct Locator {
    esc: Escapes,
    current: Option<(ObjectId, bool)>,
    history: Option<History>,
}

impl Locator {
    /// What the latest snapshot says about `path`, read from the trees on
    /// its way only (a whole listing is about 220 bytes an entry: 630 MiB
    /// at 3,000,000 files): its current content, its archive record, and
    /// the escapes of the reserved top-level names, which the root tree's
    /// names decide.
    fn new(repo: &dyn RepoRead, latest: &Snapshot, path: &[u8]) -> Result<Locator> {
        let root = load(repo, &latest.record.root, 0)?;
        let esc = Escapes::for_top_names(root.iter().map(|n| n.name.as_slice()));
        let current = match state_of(find_below(repo, root, path, 0)?) {
            State::Leaf(Leaf::File { id, dup, .. }) => Some((id, dup)),
            _ => None,
        };
        let history =
            find_node::<History, ()>(repo, &latest.record.archive, path)?.and_then(|n| n.leaf);
        Ok(Locator {
            esc,
            current,
            history,
        })
    }

    fn locate(&self, repo: &dyn RepoRead, path: &[u8], id: &ObjectId) -> String {
        if let Some((cid, dup)) = self.current {
            if cid == *id {
                return show(&render::current_path(&self.esc, path, dup));
            }
        }
        if let Some(h) = &self.history {
            if let Some((n, _)) = h.versions.iter().rev().find(|(_, a)| a.id == *id) {
                return show(&render::version_path(path, *n));
            }
            if h.deleted.as_ref().is_some_and(|a| a.id == *id) {
                return show(&render::deleted_path(path));
            }
        }
        if repo.has(StoreKind::Object, &id.0) {
            format!(
                "not in the browsable tree; restorable (object {})",
                id.short()
            )
        } else {
            "removed by retention".to_string()
        }
    }
}

/// Every state `path` went through, oldest first: one row per snapshot in
/// which it appeared, changed or disappeared.
pub fn history(repo: &dyn RepoRead, path: &str) -> Result<Vec<HistoryRow>> {
    let rel = path.trim_matches('/');
    if rel.is_empty()
        || !rel
            .split('/')
            .all(|c| pathbytes::is_safe_component(c.as_bytes()))
    {
        return Err(Error::Usage(format!(
            "{path:?} is not a path inside the snapshots: give it relative to the backup root, as `trove ls` shows it"
        )));
    }
    let rel = rel.as_bytes();
    let scan = snapshot::scan(repo)?;
    let Some(latest) = scan.latest()?.cloned() else {
        return Err(Error::NoSuchSnapshot("latest".into()));
    };
    for d in &scan.damaged {
        tracing::warn!("{}: the history leaves this record out", d.error);
    }
    let snaps = scan.snapshots;
    let loc = Locator::new(repo, &latest, rel)?;
    let mut rows = Vec::new();
    let mut prev = State::Absent;
    for s in &snaps {
        let st = lookup(repo, &s.record.root, rel)?;
        let event = match (&prev, &st) {
            (a, b) if a == b => None,
            (State::Absent, _) => Some("added"),
            (_, State::Absent) => Some("deleted"),
            (State::Leaf(Leaf::File { id: a, .. }), State::Leaf(Leaf::File { id: b, .. })) => {
                Some(if a == b { "metadata" } else { "modified" })
            }
            (
                State::Leaf(Leaf::Symlink { target: a, .. }),
                State::Leaf(Leaf::Symlink { target: b, .. }),
            ) => Some(if a == b { "metadata" } else { "modified" }),
            (State::Dir(_), State::Dir(_)) => None, // a directory's mtime follows its contents
            _ => Some("type changed"),
        };
        if let Some(event) = event {
            let mut row = HistoryRow {
                snapshot: s.id.short(),
                time: snapshot::format_time(s.record.time_ns),
                time_ns: s.record.time_ns,
                event,
                kind: "none",
                size: 0,
                hash: None,
                target: None,
                location: None,
            };
            match &st {
                State::Absent => {
                    if let State::Leaf(l) = &prev {
                        row.kind = leaf_kind(l);
                    } else {
                        row.kind = "dir";
                    }
                }
                State::Dir(_) => row.kind = "dir",
                State::Leaf(Leaf::File { id, size, .. }) => {
                    row.kind = "file";
                    row.size = *size;
                    row.hash = Some(id.to_hex());
                    row.location = Some(loc.locate(repo, rel, id));
                }
                State::Leaf(Leaf::Symlink { target, .. }) => {
                    row.kind = "symlink";
                    row.target = Some(show(target));
                }
                State::Leaf(l @ Leaf::Special { .. }) => row.kind = leaf_kind(l),
            }
            rows.push(row);
        }
        prev = st;
    }
    if rows.is_empty() {
        return Err(Error::Usage(format!(
            "{} is in none of the {} snapshots: check the path with `trove ls`",
            show(rel),
            snaps.len()
        )));
    }
    Ok(rows)
}

/// The entries of `snap` at or below `path` (relative, without slashes at
/// either end), in path order, reading only the trees on its way and the
/// ones below it: `ls PATH` of a small folder costs that folder, not the
/// snapshot (whose whole listing takes about 220 bytes an entry). Empty
/// when the snapshot does not have `path`.
pub fn listing_at(repo: &dyn RepoRead, snap: &Snapshot, path: &[u8]) -> Result<Vec<Entry>> {
    let Some(n) = find_node::<Leaf, Meta>(repo, &snap.record.root, path)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    if let Some(l) = n.leaf {
        out.push(Entry {
            path: path.to_vec(),
            item: Item::Leaf(l),
        });
    }
    if let Some((child, meta)) = n.dir {
        out.push(Entry {
            path: path.to_vec(),
            item: Item::Dir(meta),
        });
        let mut below =
            tree::FlatCursor::<Leaf, Meta>::new(repo, &child, None, snap.record.source_limit())?;
        while let Some((p, f)) = below.next()? {
            out.push(tree::source_entry((pathbytes::join(path, &p), f)));
        }
    }
    Ok(out)
}

/// `trove ls [PATH]`: the entries of a snapshot at or below `path`
/// (relative to the snapshot root; slashes at either end do not count;
/// absent or empty: every entry). A path the snapshot does not have is a
/// usage error naming `snapshot`.
pub fn ls<'a>(
    entries: &'a [Entry],
    path: Option<&str>,
    snapshot: &SnapshotId,
) -> Result<Vec<&'a Entry>> {
    let filter = path.map(|p| p.trim_matches('/').as_bytes()).unwrap_or(b"");
    if filter.is_empty() {
        return Ok(entries.iter().collect());
    }
    let rows: Vec<&Entry> = entries
        .iter()
        .filter(|e| pathbytes::is_at_or_under(&e.path, filter))
        .collect();
    if rows.is_empty() {
        return Err(Error::Usage(format!(
            "{} is not in snapshot {}",
            show(filter),
            snapshot.short()
        )));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            item: Item::Dir(Meta::default()),
        }
    }

    #[test]
    fn ls_shows_the_path_and_what_is_below_it() {
        let entries: Vec<Entry> = ["a", "a/b", "a/b/c", "a/bc", "ab", "b"]
            .into_iter()
            .map(entry)
            .collect();
        let all = vec!["a", "a/b", "a/b/c", "a/bc", "ab", "b"];
        let cases: [(Option<&str>, Option<Vec<&str>>); 12] = [
            (None, Some(all.clone())),
            (Some(""), Some(all.clone())),
            (Some("/"), Some(all.clone())),
            (Some("a"), Some(vec!["a", "a/b", "a/b/c", "a/bc"])),
            (Some("/a/"), Some(vec!["a", "a/b", "a/b/c", "a/bc"])),
            (Some("a/b"), Some(vec!["a/b", "a/b/c"])),
            (Some("a/b/"), Some(vec!["a/b", "a/b/c"])),
            (Some("ab"), Some(vec!["ab"])),
            (Some("a/b/c"), Some(vec!["a/b/c"])),
            (Some("b"), Some(vec!["b"])),
            (Some("c"), None),
            (Some("a/b/c/d"), None),
        ];
        let id = SnapshotId(crate::id::Digest([7; 32]));
        for (path, want) in cases {
            let got = ls(&entries, path, &id).map(|v| {
                v.iter()
                    .map(|e| String::from_utf8_lossy(&e.path).into_owned())
                    .collect::<Vec<_>>()
            });
            match want {
                Some(w) => assert_eq!(
                    got.ok(),
                    Some(w.iter().map(|s| s.to_string()).collect()),
                    "{path:?}"
                ),
                None => {
                    let e = got.expect_err("not in the snapshot");
                    assert!(e.is_usage(), "{path:?}: {e}");
                    assert!(e.to_string().contains(&id.short()), "{e}");
                }
            }
        }
    }

    #[test]
    fn under_means_whole_components() {
        for (path, dir, want) in [
            ("a", "a", true),
            ("a/b", "a", true),
            ("ab", "a", false),
            ("a", "a/b", false),
            ("a/b/c", "a/b", true),
            ("a/bc", "a/b", false),
        ] {
            assert_eq!(
                pathbytes::is_at_or_under(path.as_bytes(), dir.as_bytes()),
                want,
                "{path} {dir}"
            );
        }
    }
}
