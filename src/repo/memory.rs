//! An in-memory repository: both traits over maps, for unit tests and
//! benches of everything written against the boundary (gc, verify,
//! restore, the tree and record formats). Puts are visible at once and
//! the commit does nothing: there is no medium to be durable on. Tests
//! damage it on purpose with [`MemoryRepo::corrupt`] and friends.

use crate::error::{Error, Result};
use crate::id::{Digest, HashAlgo, ObjectId, SnapshotId};
use crate::repo::{Content, RepoRead, RepoWrite, StoreKind};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Default)]
struct Maps {
    objects: BTreeMap<Digest, Vec<u8>>,
    trees: BTreeMap<Digest, Vec<u8>>,
    snapshots: BTreeMap<SnapshotId, Vec<u8>>,
    pins: Option<Vec<u8>>,
    marker: Option<SnapshotId>,
}

impl Maps {
    fn store(&mut self, kind: StoreKind) -> &mut BTreeMap<Digest, Vec<u8>> {
        match kind {
            StoreKind::Object => &mut self.objects,
            StoreKind::Tree => &mut self.trees,
        }
    }
}

/// A repository held in memory.
pub struct MemoryRepo {
    algo: HashAlgo,
    maps: Mutex<Maps>,
}

fn not_found() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

impl MemoryRepo {
    pub fn new(algo: HashAlgo) -> MemoryRepo {
        MemoryRepo {
            algo,
            maps: Mutex::new(Maps::default()),
        }
    }

    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        // A panic while the lock was held (only in a failing test) leaves
        // maps that are still consistent: every change is one insert.
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Store `data` as an object under its own hash; returns its id.
    pub fn put_object(&self, data: &[u8]) -> ObjectId {
        let id = ObjectId(crate::hash::hash_bytes(self.algo, data));
        self.maps().objects.insert(id.0, data.to_vec());
        id
    }

    /// Replace the stored bytes of `d` (damage, for tests).
    pub fn corrupt(&self, kind: StoreKind, d: &Digest, data: &[u8]) {
        self.maps().store(kind).insert(*d, data.to_vec());
    }

    /// Drop `d` from the store (loss, for tests).
    pub fn lose(&self, kind: StoreKind, d: &Digest) {
        self.maps().store(kind).remove(d);
    }

    /// Set the browsable tree's marker.
    pub fn set_marker(&self, id: Option<SnapshotId>) {
        self.maps().marker = id;
    }

    /// How many items of `kind` are stored.
    pub fn count(&self, kind: StoreKind) -> usize {
        self.maps().store(kind).len()
    }
}

impl RepoRead for MemoryRepo {
    fn algo(&self) -> HashAlgo {
        self.algo
    }
    fn locate(&self, kind: StoreKind, d: &Digest) -> PathBuf {
        self.locate_store(kind).join(d.to_hex())
    }
    fn locate_store(&self, kind: StoreKind) -> PathBuf {
        PathBuf::from(match kind {
            StoreKind::Object => "memory:objects",
            StoreKind::Tree => "memory:trees",
        })
    }
    fn locate_snapshot(&self, id: &SnapshotId) -> PathBuf {
        self.locate_snapshots().join(id.to_hex())
    }
    fn locate_snapshots(&self) -> PathBuf {
        PathBuf::from("memory:snapshots")
    }
    fn locate_pins(&self) -> PathBuf {
        PathBuf::from("memory:pinned")
    }
    fn locate_marker(&self) -> PathBuf {
        PathBuf::from("memory:marker")
    }
    fn read(&self, kind: StoreKind, d: &Digest) -> io::Result<Vec<u8>> {
        self.maps()
            .store(kind)
            .get(d)
            .cloned()
            .ok_or_else(not_found)
    }
    fn has(&self, kind: StoreKind, d: &Digest) -> bool {
        self.maps().store(kind).contains_key(d)
    }
    fn size(&self, kind: StoreKind, d: &Digest) -> io::Result<u64> {
        self.maps()
            .store(kind)
            .get(d)
            .map(|v| v.len() as u64)
            .ok_or_else(not_found)
    }
    fn list(&self, kind: StoreKind, f: &mut dyn FnMut(Digest)) -> Result<()> {
        let ids: Vec<Digest> = self.maps().store(kind).keys().copied().collect();
        ids.into_iter().for_each(f);
        Ok(())
    }
    fn open_object(&self, id: &ObjectId) -> Result<Content> {
        match self.maps().objects.get(&id.0) {
            Some(v) => Ok(Content::Bytes(io::Cursor::new(v.clone()))),
            None => Err(Error::io(
                "open",
                self.locate(StoreKind::Object, &id.0),
                not_found(),
            )),
        }
    }
    fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        Ok(self.maps().snapshots.keys().copied().collect())
    }
    fn read_snapshot(&self, id: &SnapshotId) -> io::Result<Vec<u8>> {
        self.maps().snapshots.get(id).cloned().ok_or_else(not_found)
    }
    fn has_snapshot(&self, id: &SnapshotId) -> bool {
        self.maps().snapshots.contains_key(id)
    }
    fn read_pins(&self) -> io::Result<Vec<u8>> {
        self.maps().pins.clone().ok_or_else(not_found)
    }
    fn read_marker(&self) -> Option<SnapshotId> {
        self.maps().marker
    }
    fn leftovers(&self) -> Vec<PathBuf> {
        Vec::new()
    }
    fn local_dir(&self) -> Option<&Path> {
        None
    }
}

impl RepoWrite for MemoryRepo {
    fn reader(&self) -> &dyn RepoRead {
        self
    }
    fn put_with(&self, kind: StoreKind, d: Digest, make: crate::repo::Make<'_>) -> Result<bool> {
        if self.has(kind, &d) {
            return Ok(false);
        }
        let data = make()?;
        Ok(self.maps().store(kind).insert(d, data).is_none())
    }
    fn commit(&self) -> Result<()> {
        Ok(())
    }
    fn write_snapshot(&self, id: &SnapshotId, data: &[u8]) -> Result<()> {
        self.maps().snapshots.insert(*id, data.to_vec());
        Ok(())
    }
    fn remove_snapshot(&self, id: &SnapshotId) -> Result<bool> {
        Ok(self.maps().snapshots.remove(id).is_some())
    }
    fn sync_snapshots(&self) -> Result<()> {
        Ok(())
    }
    fn remove(&self, kind: StoreKind, d: &Digest) -> Result<bool> {
        Ok(self.maps().store(kind).remove(d).is_some())
    }
    fn write_pins(&self, data: Option<&[u8]>) -> Result<()> {
        self.maps().pins = data.map(|d| d.to_vec());
        Ok(())
    }
    fn remove_leftover(&self, _p: &Path) -> Result<()> {
        Ok(())
    }
}

/// Build snapshots in a repository from plain file lists, through the
/// same format code a backup uses (for tests and benches of the readers).
pub mod fixture {
    use super::MemoryRepo;
    use crate::error::Result;
    use crate::id::ObjectId;
    use crate::model::{Archived, Entry, History, Item, Leaf, Meta};
    use crate::repo::snapshot::{self, Snapshot, SnapshotRecord, Summary};
    use crate::repo::tree;
    use crate::repo::{RepoRead, RepoWrite};
    use std::collections::HashSet;

    pub fn meta() -> Meta {
        Meta::basic(0o644, 0, 0, 1_700_000_000_000_000_000)
    }

    /// Commit a first snapshot whose source is `entries` as given (sorted
    /// by path, folders before what they hold), with an empty archive.
    pub fn commit_listing(repo: &MemoryRepo, entries: &[Entry]) -> Result<Snapshot> {
        let none = HashSet::new();
        let root = tree::write_tree(repo.algo(), entries, repo, &none)?;
        let empty: Vec<(Vec<u8>, History)> = Vec::new();
        let arch = tree::write_tree(repo.algo(), &empty, repo, &none)?;
        repo.commit()?;
        let count = |dir: bool| {
            entries
                .iter()
                .filter(|e| matches!(e.item, Item::Dir(_)) == dir)
                .count() as u64
        };
        let record = SnapshotRecord {
            seq: 1,
            time_ns: 1_700_000_001_000_000_000,
            parent: None,
            sources: Vec::new(),
            root,
            archive: arch,
            summary: Summary {
                files: count(false),
                dirs: count(true),
                ..Summary::default()
            },
            owners: Default::default(),
        };
        let id = snapshot::write(repo, &record)?;
        Ok(Snapshot { id, record })
    }

    /// Commit a snapshot whose source holds `files` (path, content; the
    /// folders on their paths are added) and whose archive keeps
    /// `versions` (path, earlier content), as the child of `parent`.
    pub fn commit(
        repo: &MemoryRepo,
        parent: Option<&Snapshot>,
        files: &[(&str, &[u8])],
        versions: &[(&str, &[u8])],
    ) -> Result<Snapshot> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut dirs: HashSet<Vec<u8>> = HashSet::new();
        let mut bytes = 0;
        for (p, data) in files {
            let path = p.as_bytes().to_vec();
            let mut at = 0;
            while let Some(i) = path[at..].iter().position(|&b| b == b'/') {
                let d = path[..at + i].to_vec();
                if dirs.insert(d.clone()) {
                    entries.push(Entry {
                        path: d,
                        item: Item::Dir(meta()),
                    });
                }
                at += i + 1;
            }
            let id = repo.put_object(data);
            bytes += data.len() as u64;
            entries.push(Entry {
                path,
                item: Item::Leaf(Leaf::File {
                    size: data.len() as u64,
                    id,
                    dup: false,
                    meta: meta(),
                    ext: Default::default(),
                }),
            });
        }
        entries.sort_by(|a, b| crate::pathbytes::cmp_paths(&a.path, &b.path));
        let mut archive: Vec<(Vec<u8>, History)> = versions
            .iter()
            .map(|(p, data)| {
                let id: ObjectId = repo.put_object(data);
                let a = Archived {
                    id,
                    size: data.len() as u64,
                    meta: meta(),
                    time_ns: 1,
                };
                (
                    p.as_bytes().to_vec(),
                    History {
                        next_version: 2,
                        versions: vec![(1, a)],
                        deleted: None,
                    },
                )
            })
            .collect();
        archive.sort_by(|a, b| crate::pathbytes::cmp_paths(&a.0, &b.0));
        let none = HashSet::new();
        let root = tree::write_tree(repo.algo(), &entries, repo, &none)?;
        let arch = tree::write_tree(repo.algo(), &archive, repo, &none)?;
        repo.commit()?;
        let seq = parent.map_or(1, |p| p.record.seq + 1);
        let record = SnapshotRecord {
            seq,
            time_ns: 1_700_000_000_000_000_000 + seq as i64 * 1_000_000_000,
            parent: parent.map(|p| p.id),
            sources: Vec::new(),
            root,
            archive: arch,
            summary: Summary {
                files: files.len() as u64,
                dirs: dirs.len() as u64,
                bytes,
                ..Summary::default()
            },
            owners: Default::default(),
        };
        let id = snapshot::write(repo, &record)?;
        Ok(Snapshot { id, record })
    }
}
