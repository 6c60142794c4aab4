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
use crate::pathbytes::{self, cmp_paths};
use crate::store::tree::{Entry, History, Item, Leaf};
use std::collections::{BTreeMap, HashSet};

pub const RESERVED: [&[u8]; 4] = [b"versions", b"_duplicates", b"_deleted", b".trove"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BKind {
    Dir,
    File { id: ObjectId, size: u64 },
    Symlink { target: Vec<u8> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BEntry {
    /// Relative to the backup root.
    pub path: Vec<u8>,
    pub kind: BKind,
}

/// Escapes of reserved top-level names for one snapshot.
#[derive(Clone, Debug, Default)]
pub struct Escapes {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Escapes {
    pub fn for_entries(entries: &[Entry]) -> Escapes {
        let top: HashSet<&[u8]> = entries
            .iter()
            .filter(|e| !e.path.contains(&b'/'))
            .map(|e| e.path.as_slice())
            .collect();
        let mut map = BTreeMap::new();
        for r in RESERVED {
            if top.contains(r) {
                map.insert(r.to_vec(), escape_name(r, &|n| top.contains(n)));
            }
        }
        Escapes { map }
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

/// Render one snapshot (its source listing and archive) as the list of
/// browsable entries, sorted in path order, with no entry below a
/// non-directory.
pub fn render(entries: &[Entry], archive: &[(Vec<u8>, History)]) -> Vec<BEntry> {
    let esc = Escapes::for_entries(entries);
    let mut out = Vec::with_capacity(entries.len() + archive.len());
    for e in entries {
        let (path, kind) = match &e.item {
            Item::Dir(_) => (esc.top_path(&e.path), BKind::Dir),
            Item::Leaf(Leaf::File { size, id, dup, .. }) => (
                current_path(&esc, &e.path, *dup),
                BKind::File {
                    id: *id,
                    size: *size,
                },
            ),
            Item::Leaf(Leaf::Symlink { target, .. }) => (
                esc.top_path(&e.path),
                BKind::Symlink {
                    target: target.clone(),
                },
            ),
        };
        out.push(BEntry { path, kind });
    }
    for (p, h) in archive {
        for (n, a) in &h.versions {
            out.push(BEntry {
                path: version_path(p, *n),
                kind: BKind::File {
                    id: a.id,
                    size: a.size,
                },
            });
        }
        if let Some(a) = &h.deleted {
            out.push(BEntry {
                path: deleted_path(p),
                kind: BKind::File {
                    id: a.id,
                    size: a.size,
                },
            });
        }
    }
    out.sort_by(|a, b| cmp_paths(&a.path, &b.path));
    resolve_conflicts(&mut out);
    out
}

/// A history can need a file and a directory at one path (a deleted file
/// `a` and, later, a deleted `a/b`). The file then moves aside to
/// `a.~N~` (GNU backup-style, first free N), deterministically.
fn resolve_conflicts(out: &mut [BEntry]) {
    loop {
        let mut moved = false;
        let taken: HashSet<Vec<u8>> = out.iter().map(|e| e.path.clone()).collect();
        for i in 0..out.len().saturating_sub(1) {
            if matches!(out[i].kind, BKind::Dir) {
                continue;
            }
            let p = &out[i].path;
            let next = &out[i + 1].path;
            if next.len() > p.len() && next.starts_with(p) && next[p.len()] == b'/' {
                let mut n = 1;
                let newp = loop {
                    let mut c = p.clone();
                    c.extend_from_slice(format!(".~{n}~").as_bytes());
                    if !taken.contains(&c) {
                        break c;
                    }
                    n += 1;
                };
                out[i].path = newp;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Digest;
    use crate::store::tree::{Archived, Meta};

    fn f(path: &str, dup: bool) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            item: Item::Leaf(Leaf::File {
                size: 1,
                id: ObjectId(Digest([1; 32])),
                dup,
                meta: Meta::default(),
            }),
        }
    }

    fn paths(v: &[BEntry]) -> Vec<String> {
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
}
