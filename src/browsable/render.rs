//! The browsable tree as a pure function of one snapshot: which path under
//! BACKUP_ROOT shows which content. Backup's incremental update and
//! `materialize` both render snapshots with this one function and differ
//! only in what they compare the result with.
//!
//! Layout (SPEC §1): current files at the top (or under `_duplicates/`
//! when the planner marked them duplicates), archived versions at
//! `versions/<path>/vN.bak`, deleted contents at `_deleted/<path>`. A
//! top-level source entry whose name is reserved is shown with `_`
//! prepended (repeatedly, until the name is free), never over the reserved
//! folders.

use crate::id::ObjectId;
use crate::model::{Entry, History, Item, Leaf};
use crate::pathbytes::{self, cmp_paths};
use std::collections::{BTreeMap, HashSet};

pub const RESERVED: [&[u8]; 4] = [b"versions", b"_duplicates", b"_deleted", b".trove"];

/// What one path of the browsable tree is on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrowsableKind {
    Dir,
    File { id: ObjectId, size: u64 },
    Symlink { target: Vec<u8> },
}

/// One path of the browsable tree (the hardlinked view under the backup
/// root) as the snapshots render it: where it goes and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrowsableEntry {
    /// Relative to the backup root.
    pub path: Vec<u8>,
    pub kind: BrowsableKind,
}

/// Escapes of reserved top-level names for one snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Escapes {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Escapes {
    pub fn for_entries(entries: &[Entry]) -> Escapes {
        Escapes::for_top_names(
            entries
                .iter()
                .filter(|e| !e.path.contains(&b'/'))
                .map(|e| e.path.as_slice()),
        )
    }

    /// From the names at the top of a listing. Only the names that matter
    /// (see [`Escapes::matters`]) are kept, so a walk can pass every name.
    pub fn for_top_names<'a>(names: impl Iterator<Item = &'a [u8]>) -> Escapes {
        let top: HashSet<&[u8]> = names.filter(|n| Escapes::matters(n)).collect();
        let mut map = BTreeMap::new();
        for r in RESERVED {
            if top.contains(r) {
                map.insert(r.to_vec(), escape_name(r, &|n| top.contains(n)));
            }
        }
        Escapes { map }
    }

    /// Can a top-level name change the escapes: a reserved name, or one
    /// an escape could take (a reserved name behind underscores)?
    pub fn matters(name: &[u8]) -> bool {
        let bare = &name[name.iter().take_while(|&&c| c == b'_').count()..];
        RESERVED
            .iter()
            .any(|r| name == *r || bare == *r || (r[0] == b'_' && bare == &r[1..]))
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Where a source path appears at the top of the browsable tree.
    pub fn top_path(&self, path: &[u8]) -> Vec<u8> {
        let first_len = path.iter().position(|&c| c == b'/').unwrap_or(path.len());
        match self.map.get(&path[..first_len]) {
            Some(esc) => {
                let mut v = esc.clone();
                v.extend_from_slice(&path[first_len..]);
                v
            }
            None => path.to_vec(),
        }
    }

    pub fn escaped(&self) -> impl Iterator<Item = (&Vec<u8>, &Vec<u8>)> {
        self.map.iter()
    }
}

/// Prepend `_` until the name is neither reserved nor taken.
pub fn escape_name(name: &[u8], taken: &dyn Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut v = name.to_vec();
    loop {
        v.insert(0, b'_');
        if !RESERVED.contains(&v.as_slice()) && !taken(&v) {
            return v;
        }
    }
}

/// Where the browsable tree shows the current content of `path`.
pub fn current_path(esc: &Escapes, path: &[u8], dup: bool) -> Vec<u8> {
    if dup {
        pathbytes::join(b"_duplicates", path)
    } else {
        esc.top_path(path)
    }
}

pub fn version_path(path: &[u8], n: u64) -> Vec<u8> {
    let mut v = pathbytes::join(b"versions", path);
    v.extend_from_slice(format!("/v{n}.bak").as_bytes());
    v
}

pub fn deleted_path(path: &[u8]) -> Vec<u8> {
    pathbytes::join(b"_deleted", path)
}

/// The browsable entry showing one source entry.
pub fn render_entry(esc: &Escapes, e: &Entry) -> Option<BrowsableEntry> {
    render_item(esc, &e.path, &e.item)
}

/// The browsable entry showing the item at source path `p`; none for a
/// special file (FIFO, socket, device): the browsable tree holds regular
/// files and symlinks only, and a FIFO there would block whoever reads it.
pub fn render_item(esc: &Escapes, p: &[u8], item: &Item) -> Option<BrowsableEntry> {
    let (path, kind) = match item {
        Item::Leaf(Leaf::Special { .. }) => return None,
        Item::Dir(_) => (esc.top_path(p), BrowsableKind::Dir),
        Item::Leaf(Leaf::File { size, id, dup, .. }) => (
            current_path(esc, p, *dup),
            BrowsableKind::File {
                id: *id,
                size: *size,
            },
        ),
        Item::Leaf(Leaf::Symlink { target, .. }) => (
            esc.top_path(p),
            BrowsableKind::Symlink {
                target: target.clone(),
            },
        ),
    };
    Some(BrowsableEntry { path, kind })
}

/// The browsable entries showing one path's history.
pub fn render_history(p: &[u8], h: &History, out: &mut Vec<BrowsableEntry>) {
    render_versions(p, h, out);
    render_deleted(p, h, out);
}

/// `versions/<p>/vN.bak` for each kept version.
pub fn render_versions(p: &[u8], h: &History, out: &mut Vec<BrowsableEntry>) {
    for (n, a) in &h.versions {
        out.push(BrowsableEntry {
            path: version_path(p, *n),
            kind: BrowsableKind::File {
                id: a.id,
                size: a.size,
            },
        });
    }
}

/// `_deleted/<p>` for the content the path last had, if it left.
pub fn render_deleted(p: &[u8], h: &History, out: &mut Vec<BrowsableEntry>) {
    if let Some(a) = &h.deleted {
        out.push(BrowsableEntry {
            path: deleted_path(p),
            kind: BrowsableKind::File {
                id: a.id,
                size: a.size,
            },
        });
    }
}

/// Render one snapshot (its source listing and archive) as the list of
/// browsable entries, sorted in path order, with no entry below a
/// non-directory.
pub fn render(entries: &[Entry], archive: &[(Vec<u8>, History)]) -> Vec<BrowsableEntry> {
    let esc = Escapes::for_entries(entries);
    let mut out = Vec::with_capacity(entries.len() + archive.len());
    // Listed as four runs that are each already in path order (the top
    // level, `_duplicates/`, `versions/`, `_deleted/`; escaped names aside),
    // so the sort only merges them: on a million entries a full sort by
    // path was most of the rendering's time. No two entries share a path,
    // so the order of the input cannot change the result.
    let dup = |e: &&Entry| matches!(e.item, Item::Leaf(Leaf::File { dup: true, .. }));
    out.extend(
        entries
            .iter()
            .filter(|e| !dup(e))
            .filter_map(|e| render_entry(&esc, e)),
    );
    out.extend(
        entries
            .iter()
            .filter(dup)
            .filter_map(|e| render_entry(&esc, e)),
    );
    for (p, h) in archive {
        render_versions(p, h, &mut out);
    }
    for (p, h) in archive {
        render_deleted(p, h, &mut out);
    }
    out.sort_by(|a, b| cmp_paths(&a.path, &b.path));
    resolve_conflicts(&mut out);
    out
}

/// Could two archived paths need a file and a directory at one browsable
/// path (see `resolve_conflicts`)? Then only a full render is exact.
fn archive_nests(archive: &[(Vec<u8>, History)]) -> bool {
    archive.windows(2).any(|w| {
        let (a, b) = (&w[0].0, &w[1].0);
        pathbytes::is_under(b, a)
    })
}

/// Only the part of two renderings that differs, as (old side, new side),
/// each sorted: what `render` of both would give minus the entries they
/// share. It costs memory in proportion to the change, not to the tree.
/// `None` when the shortcut would not be exact (reserved-name escapes
/// changed, or an archive needs conflict resolution): render both then.
pub fn render_diff(
    old: (&[Entry], &[(Vec<u8>, History)]),
    new: (&[Entry], &[(Vec<u8>, History)]),
) -> Option<(Vec<BrowsableEntry>, Vec<BrowsableEntry>)> {
    let old_esc = Escapes::for_entries(old.0);
    let new_esc = Escapes::for_entries(new.0);
    if old_esc.map != new_esc.map || archive_nests(old.1) || archive_nests(new.1) {
        return None;
    }
    let mut o = Vec::new();
    let mut n = Vec::new();
    merge_by_path(
        old.0,
        new.0,
        |e| &e.path,
        |a, b| {
            if a != b {
                o.extend(a.and_then(|e| render_entry(&old_esc, e)));
                n.extend(b.and_then(|e| render_entry(&new_esc, e)));
            }
        },
    );
    merge_by_path(
        old.1,
        new.1,
        |x| &x.0,
        |a, b| {
            if a != b {
                if let Some((p, h)) = a {
                    render_history(p, h, &mut o);
                }
                if let Some((p, h)) = b {
                    render_history(p, h, &mut n);
                }
            }
        },
    );
    o.sort_by(|a, b| cmp_paths(&a.path, &b.path));
    n.sort_by(|a, b| cmp_paths(&a.path, &b.path));
    Some((o, n))
}

/// Walk two path-ordered lists together, calling `f` with the items at
/// each path (one side `None` where the path is only in the other).
fn merge_by_path<'a, T>(
    a: &'a [T],
    b: &'a [T],
    key: impl Fn(&T) -> &[u8],
    mut f: impl FnMut(Option<&'a T>, Option<&'a T>),
) {
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let ord = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => cmp_paths(key(x), key(y)),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                f(Some(&a[i]), None);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                f(None, Some(&b[j]));
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                f(Some(&a[i]), Some(&b[j]));
                i += 1;
                j += 1;
            }
        }
    }
}

/// Does the rendering of `entries` show a directory at browsable path `p`?
/// (Folders below `versions/`, `_duplicates/` and `_deleted/` are implied
/// by their contents, never wanted for themselves.)
pub fn wants_dir(entries: &[Entry], esc: &Escapes, p: &[u8]) -> bool {
    wants_dir_by(esc, p, &|source_path| {
        entries
            .binary_search_by(|e| cmp_paths(&e.path, source_path))
            .map(|i| matches!(entries[i].item, Item::Dir(_)))
            .unwrap_or(false)
    })
}

/// [`wants_dir`] with the listing behind a question: is this source path
/// a directory?
pub fn wants_dir_by(esc: &Escapes, p: &[u8], is_dir: &dyn Fn(&[u8]) -> bool) -> bool {
    let first_len = p.iter().position(|&c| c == b'/').unwrap_or(p.len());
    let first = &p[..first_len];
    let source_path = match esc.map.iter().find(|(_, shown)| shown.as_slice() == first) {
        Some((real, _)) => {
            let mut v = real.clone();
            v.extend_from_slice(&p[first_len..]);
            v
        }
        None if RESERVED.contains(&first) => return false,
        None => p.to_vec(),
    };
    is_dir(&source_path)
}

/// Where a file that a folder displaces goes: `<path>.~N~`, the first N
/// whose name is free (`taken` is finite, so one always is).
fn moved_name(p: &[u8], taken: &HashSet<Vec<u8>>) -> Vec<u8> {
    (1u64..)
        .map(|n| {
            let mut c = p.to_vec();
            c.extend_from_slice(format!(".~{n}~").as_bytes());
            c
        })
        .find(|c| !taken.contains(c))
        .unwrap_or_default()
}

/// A history can need a file and a directory at one path (a deleted file
/// `a` and, later, a deleted `a/b`). The file then moves aside to
/// `a.~N~` (GNU backup-style, first free N), deterministically.
fn resolve_conflicts(out: &mut [BrowsableEntry]) {
    // A non-directory directly followed by an entry below it. Found by one
    // pass over the sorted list, so the common case (no conflict at all)
    // costs no set of every path.
    let conflict = |out: &[BrowsableEntry]| {
        (0..out.len().saturating_sub(1)).find(|&i| {
            let (p, next) = (&out[i].path, &out[i + 1].path);
            !matches!(out[i].kind, BrowsableKind::Dir) && pathbytes::is_under(next, p)
        })
    };
    let Some(mut i) = conflict(out) else {
        return;
    };
    // The paths in use, kept equal to the list's as entries move.
    let mut taken: HashSet<Vec<u8>> = out.iter().map(|e| e.path.clone()).collect();
    loop {
        let p = out[i].path.clone();
        let newp = moved_name(&p, &taken);
        taken.remove(&p);
        taken.insert(newp.clone());
        out[i].path = newp;
        out.sort_by(|a, b| cmp_paths(&a.path, &b.path));
        match conflict(out) {
            Some(j) => i = j,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Digest;
    use crate::model::{Archived, Meta};

    fn f(path: &str, dup: bool) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            item: Item::Leaf(Leaf::File {
                size: 1,
                id: ObjectId(Digest([1; 32])),
                dup,
                meta: Meta::default(),
                ext: Default::default(),
            }),
        }
    }

    fn paths(v: &[BrowsableEntry]) -> Vec<String> {
        v.iter()
            .map(|e| String::from_utf8_lossy(&e.path).to_string())
            .collect()
    }

    fn arch(id: u8) -> Archived {
        Archived {
            id: ObjectId(Digest([id; 32])),
            size: 1,
            meta: Meta::default(),
            time_ns: 0,
        }
    }

    #[test]
    fn layout() {
        let entries = vec![f("a", false), f("b", true)];
        let archive = vec![
            (
                b"a".to_vec(),
                History {
                    next_version: 3,
                    versions: vec![(1, arch(2)), (2, arch(3))],
                    deleted: None,
                },
            ),
            (
                b"gone".to_vec(),
                History {
                    next_version: 1,
                    versions: vec![],
                    deleted: Some(arch(4)),
                },
            ),
        ];
        assert_eq!(
            paths(&render(&entries, &archive)),
            vec![
                "_deleted/gone",
                "_duplicates/b",
                "a",
                "versions/a/v1.bak",
                "versions/a/v2.bak"
            ]
        );
    }

    #[test]
    fn reserved_names_are_escaped() {
        let entries = vec![
            f("_versions", false),
            f("versions", false),
            f(".trove", false),
        ];
        let r = paths(&render(&entries, &[]));
        assert_eq!(r, vec!["_.trove", "__versions", "_versions"]);
    }

    #[test]
    fn diff_equals_full_render_difference() {
        let old_e = vec![f("a", false), f("b", true), f("c", false)];
        let mut new_e = vec![f("a", false), f("c", false), f("d", false)];
        if let Item::Leaf(Leaf::File { id, .. }) = &mut new_e[1].item {
            *id = ObjectId(Digest([9; 32]));
        }
        let old_a = vec![];
        let new_a = vec![(
            b"b".to_vec(),
            History {
                next_version: 1,
                versions: vec![],
                deleted: Some(arch(1)),
            },
        )];
        let (o, n) = render_diff((&old_e, &old_a), (&new_e, &new_a)).expect("no escapes");
        // Full renders, minus what both share.
        let full_o = render(&old_e, &old_a);
        let full_n = render(&new_e, &new_a);
        let want_o: Vec<BrowsableEntry> = full_o
            .iter()
            .filter(|x| !full_n.contains(x))
            .cloned()
            .collect();
        let want_n: Vec<BrowsableEntry> = full_n
            .iter()
            .filter(|x| !full_o.contains(x))
            .cloned()
            .collect();
        assert_eq!(o, want_o);
        assert_eq!(n, want_n);
    }

    #[test]
    fn wanted_directories() {
        let entries = vec![
            Entry {
                path: b"d".to_vec(),
                item: Item::Dir(Meta::default()),
            },
            Entry {
                path: b"versions".to_vec(),
                item: Item::Dir(Meta::default()),
            },
        ];
        let esc = Escapes::for_entries(&entries);
        assert!(wants_dir(&entries, &esc, b"d"));
        assert!(wants_dir(&entries, &esc, b"_versions"));
        assert!(!wants_dir(&entries, &esc, b"versions"));
        assert!(!wants_dir(&entries, &esc, b"e"));
    }

    #[test]
    fn file_and_directory_conflict_moves_the_file() {
        let archive = vec![
            (
                b"a".to_vec(),
                History {
                    next_version: 1,
                    versions: vec![],
                    deleted: Some(arch(1)),
                },
            ),
            (
                b"a/b".to_vec(),
                History {
                    next_version: 1,
                    versions: vec![],
                    deleted: Some(arch(2)),
                },
            ),
        ];
        assert_eq!(
            paths(&render(&[], &archive)),
            vec!["_deleted/a/b", "_deleted/a.~1~"]
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        /// The conflict resolution as first written: the set of every path
        /// rebuilt on each round.
        fn resolve_reference(out: &mut [BrowsableEntry]) {
            loop {
                let mut moved = false;
                let taken: HashSet<Vec<u8>> = out.iter().map(|e| e.path.clone()).collect();
                for i in 0..out.len().saturating_sub(1) {
                    if matches!(out[i].kind, BrowsableKind::Dir) {
                        continue;
                    }
                    let p = &out[i].path;
                    let next = &out[i + 1].path;
                    if pathbytes::is_under(next, p) {
                        out[i].path = moved_name(p, &taken);
                        moved = true;
                        break;
                    }
                }
                if !moved {
                    return;
                }
                out.sort_by(|a, b| cmp_paths(&a.path, &b.path));
            }
        }

        proptest! {
            /// Files and folders at nested paths, with names that collide
            /// with the `.~N~` a moved file gets.
            #[test]
            fn conflicts_resolve_as_the_reference_does(
                paths in prop::collection::btree_map(
                    prop::collection::vec(
                        prop::sample::select(vec!["a", "b", "a.~1~", "a.~2~"]),
                        1..4,
                    )
                    .prop_map(|v| v.join("/")),
                    any::<bool>(),
                    0..12,
                )
            ) {
                let mut list: Vec<BrowsableEntry> = paths
                    .into_iter()
                    .map(|(p, dir)| BrowsableEntry {
                        path: p.into_bytes(),
                        kind: if dir {
                            BrowsableKind::Dir
                        } else {
                            BrowsableKind::File { id: ObjectId(Digest([1; 32])), size: 1 }
                        },
                    })
                    .collect();
                list.sort_by(|a, b| cmp_paths(&a.path, &b.path));
                let mut want = list.clone();
                resolve_reference(&mut want);
                resolve_conflicts(&mut list);
                prop_assert_eq!(list, want);
            }
        }

        /// A random listing over a small name space, valid as a snapshot:
        /// every ancestor of an entry is a directory, leaves have no
        /// children. Some names are reserved, to exercise the escapes.
        fn arb_listing() -> impl Strategy<Value = Vec<Entry>> {
            let name = prop::sample::select(vec!["a", "b", "versions", "_a", "c"]);
            prop::collection::btree_map(
                prop::collection::vec(name, 1..3).prop_map(|v| v.join("/")),
                (0u8..3, any::<bool>()),
                0..8,
            )
            .prop_map(|m| {
                let mut out: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
                for (p, (c, dup)) in m {
                    let parts: Vec<&str> = p.split('/').collect();
                    for k in 1..parts.len() {
                        let d = parts[..k].join("/").into_bytes();
                        out.insert(
                            d.clone(),
                            Entry {
                                path: d,
                                item: Item::Dir(Meta::default()),
                            },
                        );
                    }
                    let path = p.into_bytes();
                    out.entry(path.clone()).or_insert(Entry {
                        path,
                        item: Item::Leaf(Leaf::File {
                            size: 1,
                            id: ObjectId(Digest([c; 32])),
                            dup,
                            meta: Meta::default(),
                            ext: Default::default(),
                        }),
                    });
                }
                // A leaf that is also some entry's ancestor becomes a directory.
                let keys: Vec<Vec<u8>> = out.keys().cloned().collect();
                for k in &keys {
                    if keys.iter().any(|o| pathbytes::is_under(o, k)) {
                        out.insert(
                            k.clone(),
                            Entry {
                                path: k.clone(),
                                item: Item::Dir(Meta::default()),
                            },
                        );
                    }
                }
                let mut v: Vec<Entry> = out.into_values().collect();
                v.sort_by(|a, b| cmp_paths(&a.path, &b.path));
                v
            })
        }

        fn arb_archive() -> impl Strategy<Value = Vec<(Vec<u8>, History)>> {
            let name = prop::sample::select(vec!["a", "b", "a/b", "c/d"]);
            prop::collection::btree_map(name, (0u8..3, any::<bool>()), 0..4).prop_map(|m| {
                let mut v: Vec<(Vec<u8>, History)> = m
                    .into_iter()
                    .map(|(p, (c, del))| {
                        (
                            p.as_bytes().to_vec(),
                            History {
                                next_version: 3,
                                versions: vec![(1, arch(c)), (2, arch(c + 1))],
                                deleted: del.then(|| arch(c + 2)),
                            },
                        )
                    })
                    .collect();
                v.sort_by(|a, b| cmp_paths(&a.0, &b.0));
                v
            })
        }

        proptest! {
            #[test]
            fn partial_diff_turns_old_render_into_new(
                old_e in arb_listing(), new_e in arb_listing(),
                old_a in arb_archive(), new_a in arb_archive(),
            ) {
                let full_old = render(&old_e, &old_a);
                let full_new = render(&new_e, &new_a);
                if let Some((o, n)) = render_diff((&old_e, &old_a), (&new_e, &new_a)) {
                    // Apply the diff the way `Materializer::apply` does: drop
                    // every old-side path the new side lacks, set every
                    // new-side entry.
                    let mut tree: BTreeMap<Vec<u8>, BrowsableKind> =
                        full_old.iter().map(|e| (e.path.clone(), e.kind.clone())).collect();
                    let new_paths: std::collections::HashSet<&[u8]> =
                        n.iter().map(|e| e.path.as_slice()).collect();
                    for e in &o {
                        if !new_paths.contains(e.path.as_slice()) {
                            tree.remove(&e.path);
                        }
                    }
                    for e in &n {
                        tree.insert(e.path.clone(), e.kind.clone());
                    }
                    let want: BTreeMap<Vec<u8>, BrowsableKind> =
                        full_new.iter().map(|e| (e.path.clone(), e.kind.clone())).collect();
                    prop_assert_eq!(tree, want);
                }
            }
        }
    }
}
