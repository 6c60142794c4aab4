//! The local cache of a remote's immutable metadata: index files, snapshot
//! commits and tree packs, kept as the sealed bytes the remote stores
//! (docs/DESIGN.md, "The local cache of a remote"; layout in
//! docs/FORMAT.md). What restic and kopia users know from
//! `~/.cache/restic`: a second command reads them from disk instead of
//! GETting them again.
//!
//! This file only stores and finds files; what an entry must be to be
//! used (hashing to its name, decoding with the key) and when entries go
//! (a listing, the loaded index, a delete) is decided by
//! [`super::repo::RemoteRepo`], the only user. The cache never holds
//! plaintext, and nothing read from it is trusted more than the remote's
//! own bytes: every read is checked there as a GET's would be.
//!
//! Entries are named by parsed 32-byte names, never by a path a listing
//! gave, so a hostile remote cannot make the cache write outside its
//! folder. A write goes to a temporary file in the entry's folder and is
//! renamed into place, so a concurrent reader or a killed writer never
//! leaves a half entry under an entry's name; no fsync, since an entry a
//! power loss tears fails its check and is fetched again. The first I/O
//! failure (unwritable folder, a file where a folder should be, a full
//! disk) is one warning naming the path, and the command goes on without
//! the cache.

use crate::id::Digest;
use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The cache directory tag (<https://bford.info/cachedir/>): backup tools
/// that honour it skip the folder.
pub const CACHEDIR_TAG: &str = "CACHEDIR.TAG";
const TAG_TEXT: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by trove.\n\
# For information about cache directory tags, see https://bford.info/cachedir/\n";

/// Temporary files start with this; one older than `STALE_TMP` is a
/// killed writer's and goes at the next eviction of its folder.
const TMP_PREFIX: &str = ".tmp";
const STALE_TMP: Duration = Duration::from_secs(60 * 60);

/// What an entry is, and the folder it lives in (the remote's own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `index/<hex>`: an index file.
    Index,
    /// `snapshots/<hex>`: a snapshot commit.
    Commit,
    /// `tree/<ab>/<hex>`: a tree pack.
    Tree,
}

impl Kind {
    fn dir(self) -> &'static str {
        match self {
            Kind::Index => "index",
            Kind::Commit => "snapshots",
            Kind::Tree => "tree",
        }
    }
}

/// Why the cache could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CacheError + 'a {
    move |source| CacheError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// What the cache did for one command (its `--json` says it; these are
/// not requests).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// The remote's folder in the cache.
    pub dir: PathBuf,
    /// Reads answered from the cache, and their bytes.
    pub hits: u64,
    pub hit_bytes: u64,
    /// Entries written (after a GET, or through on an upload).
    pub stored: u64,
    /// Entries removed: no longer on the remote, or damaged.
    pub evicted: u64,
    /// Whether an I/O failure turned the cache off for the rest of the
    /// command (it was warned about).
    pub disabled: bool,
}

/// One remote's folder of the cache.
pub struct MetaCache {
    root: PathBuf,
    dir: PathBuf,
    /// Set at the first I/O failure: nothing is read or written after it.
    off: AtomicBool,
    /// The top folder and its tag are known to exist.
    prepared: AtomicBool,
    warned_damage: AtomicBool,
    hits: AtomicU64,
    hit_bytes: AtomicU64,
    stored: AtomicU64,
    evicted: AtomicU64,
}

/// A write prepared before the upload it mirrors: the bytes are in a
/// temporary file, renamed into place by [`Staged::keep`] once the
/// remote holds them; dropped, the temporary file goes.
pub struct Staged<'a> {
    cache: &'a MetaCache,
    tmp: PathBuf,
    dest: PathBuf,
    kept: bool,
}

impl Staged<'_> {
    /// The remote holds the bytes now: make them the entry.
    pub fn keep(mut self) {
        self.kept = true;
        match fs::rename(&self.tmp, &self.dest) {
            Ok(()) => {
                self.cache.stored.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let _ = fs::remove_file(&self.tmp);
                self.cache
                    .fail(io_error("rename into place", &self.dest)(e));
            }
        }
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if !self.kept {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl MetaCache {
    /// The cache of the remote whose config id is `id`, below `root`
    /// (nothing is created until the first write).
    pub fn new(root: &Path, id: &[u8; 16]) -> MetaCache {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        MetaCache {
            root: root.to_path_buf(),
            dir: root.join(hex),
            off: AtomicBool::new(false),
            prepared: AtomicBool::new(false),
            warned_damage: AtomicBool::new(false),
            hits: AtomicU64::new(0),
            hit_bytes: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    /// The remote's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            dir: self.dir.clone(),
            hits: self.hits.load(Ordering::Relaxed),
            hit_bytes: self.hit_bytes.load(Ordering::Relaxed),
            stored: self.stored.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            disabled: self.is_off(),
        }
    }

    fn is_off(&self) -> bool {
        self.off.load(Ordering::Relaxed)
    }

    /// Turn the cache off for the rest of the command, with one warning.
    fn fail(&self, e: CacheError) {
        if !self.off.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the local cache cannot be used ({e}); going on without it (set TROVE_CACHE_DIR to a writable folder, or pass --no-cache)"
            );
        }
    }

    fn folder(&self, kind: Kind, name: &[u8; 32]) -> PathBuf {
        let d = self.dir.join(kind.dir());
        match kind {
            Kind::Tree => d.join(&Digest(*name).to_hex()[..2]),
            Kind::Index | Kind::Commit => d,
        }
    }

    /// Where the entry `name` of `kind` lives.
    pub fn path(&self, kind: Kind, name: &[u8; 32]) -> PathBuf {
        self.folder(kind, name).join(Digest(*name).to_hex())
    }

    /// The entry's bytes, when the cache holds it.
    pub fn get(&self, kind: Kind, name: &[u8; 32]) -> Option<Vec<u8>> {
        if self.is_off() {
            return None;
        }
        let path = self.path(kind, name);
        match crate::fsutil::read_repo_file(&path) {
            Ok(b) => Some(b),
            // A missing entry, or one in a folder not made yet.
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                self.fail(io_error("read", &path)(e));
                None
            }
        }
    }

    /// Count a read the cache answered.
    pub fn hit(&self, bytes: usize) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        self.hit_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Store `bytes` as the entry (replacing one there).
    pub fn put(&self, kind: Kind, name: &[u8; 32], bytes: &[u8]) {
        if let Some(s) = self.stage(kind, name, bytes) {
            s.keep();
        }
    }

    /// Write `bytes` to a temporary file that [`Staged::keep`] makes the
    /// entry (`None`: the cache is off or failed now).
    pub fn stage(&self, kind: Kind, name: &[u8; 32], bytes: &[u8]) -> Option<Staged<'_>> {
        if self.is_off() {
            return None;
        }
        let folder = self.folder(kind, name);
        let result = self.prepare().and_then(|()| {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&folder)
                .map_err(io_error("create directory", &folder))?;
            write_new(&folder, bytes)
        });
        match result {
            Ok(tmp) => Some(Staged {
                cache: self,
                tmp,
                dest: self.path(kind, name),
                kept: false,
            }),
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }

    /// The top folder with its tag, and the remote's folder.
    fn prepare(&self) -> Result<(), CacheError> {
        if self.prepared.load(Ordering::Relaxed) {
            return Ok(());
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_error("create directory", &self.dir))?;
        let tag = self.root.join(CACHEDIR_TAG);
        match fs::symlink_metadata(&tag) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let tmp = write_new(&self.root, TAG_TEXT.as_bytes())?;
                if let Err(e) = fs::rename(&tmp, &tag) {
                    let _ = fs::remove_file(&tmp);
                    return Err(io_error("rename into place", &tag)(e));
                }
            }
            Err(e) => return Err(io_error("stat", &tag)(e)),
        }
        self.prepared.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Remove one entry (absent is fine).
    pub fn remove(&self, kind: Kind, name: &[u8; 32]) {
        if self.is_off() {
            return;
        }
        let path = self.path(kind, name);
        match fs::remove_file(&path) {
            Ok(()) => {
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => self.fail(io_error("remove", &path)(e)),
        }
    }

    /// Remove an entry that failed its check, saying so once per command.
    pub fn discard_damaged(&self, kind: Kind, name: &[u8; 32]) {
        if !self.warned_damage.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "local cache entry {} is damaged or out of date: removed, and read from the remote again",
                self.path(kind, name).display()
            );
        }
        self.remove(kind, name);
    }

    /// Remove every entry of `kind` whose name `keep` lacks (and a killed
    /// writer's temporary files). A folder never made is empty.
    pub fn retain(&self, kind: Kind, keep: &HashSet<[u8; 32]>) {
        if self.is_off() {
            return;
        }
        let top = self.dir.join(kind.dir());
        let result = match kind {
            Kind::Index | Kind::Commit => self.retain_in(&top, keep),
            Kind::Tree => list_dir(&top).and_then(|subs| {
                for sub in subs {
                    if sub.is_dir {
                        self.retain_in(&sub.path, keep)?;
                    }
                }
                Ok(())
            }),
        };
        if let Err(e) = result {
            self.fail(e);
        }
    }

    fn retain_in(&self, folder: &Path, keep: &HashSet<[u8; 32]>) -> Result<(), CacheError> {
        for e in list_dir(folder)? {
            if e.is_dir {
                continue;
            }
            let gone = match Digest::from_hex(&e.name) {
                Some(d) => !keep.contains(&d.0),
                None => e.name.starts_with(TMP_PREFIX) && e.older_than(STALE_TMP),
            };
            if gone {
                match fs::remove_file(&e.path) {
                    Ok(()) => {
                        self.evicted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                    Err(err) => return Err(io_error("remove", &e.path)(err)),
                }
            }
        }
        Ok(())
    }
}

/// A new file in `folder` holding `bytes`, under a temporary name unique
/// to this process and write; returns its path.
fn write_new(folder: &Path, bytes: &[u8]) -> Result<PathBuf, CacheError> {
    let tmp = folder.join(crate::fsutil::tmp_name(TMP_PREFIX));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_error("create", &tmp))?;
    if let Err(e) = f.write_all(bytes) {
        drop(f);
        let _ = fs::remove_file(&tmp);
        return Err(io_error("write", &tmp)(e));
    }
    Ok(tmp)
}

struct DirEntry {
    path: PathBuf,
    name: String,
    is_dir: bool,
    modified: Option<std::time::SystemTime>,
}

impl DirEntry {
    fn older_than(&self, age: Duration) -> bool {
        self.modified
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|e| e > age)
    }
}

/// The entries of `folder` (none when it does not exist).
fn list_dir(folder: &Path) -> Result<Vec<DirEntry>, CacheError> {
    let rd = match fs::read_dir(folder) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("list", folder)(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(io_error("list", folder))?;
        let path = e.path();
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(io_error("stat", &path)(err)),
        };
        out.push(DirEntry {
            name: e.file_name().to_string_lossy().into_owned(),
            path,
            is_dir: meta.is_dir(),
            modified: meta.modified().ok(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: [u8; 16] = [7; 16];

    fn name(b: u8) -> [u8; 32] {
        [b; 32]
    }

    #[test]
    fn entries_are_stored_found_and_laid_out_as_on_the_remote() {
        let t = tempfile::tempdir().expect("tempdir");
        let c = MetaCache::new(t.path(), &ID);
        assert_eq!(c.get(Kind::Tree, &name(0xab)), None);
        c.put(Kind::Tree, &name(0xab), b"pack");
        c.put(Kind::Index, &name(1), b"index");
        c.put(Kind::Commit, &name(2), b"commit");
        assert_eq!(
            c.get(Kind::Tree, &name(0xab)).as_deref(),
            Some(&b"pack"[..])
        );
        let dir = t.path().join("07".repeat(16));
        assert!(dir.join("tree/ab").join("ab".repeat(32)).is_file());
        assert!(dir.join("index").join("01".repeat(32)).is_file());
        assert!(dir.join("snapshots").join("02".repeat(32)).is_file());
        let tag = fs::read_to_string(t.path().join(CACHEDIR_TAG)).expect("tag");
        assert!(tag.starts_with("Signature: 8a477f597d28d172789f06886806bc55"));
        assert_eq!(c.stats().stored, 3);
    }

    #[test]
    fn retain_removes_what_the_listing_lacks_and_keeps_the_rest() {
        let t = tempfile::tempdir().expect("tempdir");
        let c = MetaCache::new(t.path(), &ID);
        for b in [1, 2, 3] {
            c.put(Kind::Tree, &name(b), b"x");
            c.put(Kind::Commit, &name(b), b"y");
        }
        let keep: HashSet<[u8; 32]> = [name(2)].into_iter().collect();
        c.retain(Kind::Tree, &keep);
        assert!(c.get(Kind::Tree, &name(1)).is_none());
        assert!(c.get(Kind::Tree, &name(2)).is_some());
        assert!(c.get(Kind::Tree, &name(3)).is_none());
        // Another kind is not touched.
        assert!(c.get(Kind::Commit, &name(1)).is_some());
        c.remove(Kind::Commit, &name(1));
        assert!(c.get(Kind::Commit, &name(1)).is_none());
        assert_eq!(c.stats().evicted, 3);
        assert!(!c.stats().disabled);
    }

    #[test]
    fn a_dropped_stage_leaves_nothing_and_a_kept_one_is_the_entry() {
        let t = tempfile::tempdir().expect("tempdir");
        let c = MetaCache::new(t.path(), &ID);
        let s = c.stage(Kind::Index, &name(4), b"upload failed");
        drop(s);
        assert!(c.get(Kind::Index, &name(4)).is_none());
        let folder = c.dir().join("index");
        assert_eq!(fs::read_dir(&folder).expect("folder").count(), 0);
        c.stage(Kind::Index, &name(4), b"uploaded")
            .expect("staged")
            .keep();
        assert_eq!(
            c.get(Kind::Index, &name(4)).as_deref(),
            Some(&b"uploaded"[..])
        );
    }

    #[test]
    fn two_threads_writing_one_entry_leave_one_whole_entry() {
        let t = tempfile::tempdir().expect("tempdir");
        let c = MetaCache::new(t.path(), &ID);
        let bytes = vec![5u8; 1 << 20];
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..20 {
                        c.put(Kind::Tree, &name(9), &bytes);
                        if let Some(b) = c.get(Kind::Tree, &name(9)) {
                            assert_eq!(b, bytes, "a reader saw a half entry");
                        }
                    }
                });
            }
        });
        assert_eq!(c.get(Kind::Tree, &name(9)), Some(bytes));
        let folder = c.path(Kind::Tree, &name(9));
        let siblings = fs::read_dir(folder.parent().expect("parent"))
            .expect("folder")
            .count();
        assert_eq!(siblings, 1, "no temporary file is left");
        assert!(!c.stats().disabled);
    }

    #[test]
    fn a_file_where_the_folder_should_be_turns_the_cache_off() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("cache");
        fs::write(&root, b"not a folder").expect("file");
        let c = MetaCache::new(&root, &ID);
        c.put(Kind::Commit, &name(1), b"x");
        assert!(c.stats().disabled);
        assert_eq!(c.get(Kind::Commit, &name(1)), None);
        assert_eq!(c.stats().stored, 0);
    }

    #[test]
    fn a_stale_temporary_file_goes_and_a_fresh_one_stays() {
        let t = tempfile::tempdir().expect("tempdir");
        let c = MetaCache::new(t.path(), &ID);
        c.put(Kind::Index, &name(1), b"x");
        let folder = c.dir().join("index");
        let old = folder.join(".tmp-1-1");
        let new = folder.join(".tmp-1-2");
        fs::write(&old, b"killed").expect("old");
        fs::write(&new, b"in flight").expect("new");
        let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
        fs::File::options()
            .write(true)
            .open(&old)
            .and_then(|f| f.set_modified(two_hours_ago))
            .expect("age");
        let keep: HashSet<[u8; 32]> = [name(1)].into_iter().collect();
        c.retain(Kind::Index, &keep);
        assert!(!old.exists());
        assert!(new.exists());
        assert!(c.get(Kind::Index, &name(1)).is_some());
    }
}
