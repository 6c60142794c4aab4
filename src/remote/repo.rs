//! The remote repository as a whole: opening it with a password (key
//! files → master key → config), its merged index, its snapshot commits,
//! and reading blobs out of packs — exposed as a [`RepoRead`], so
//! `snapshots`, `ls`, `diff` and `restore` run on a remote unchanged.
//! Also the few writes a push makes (packs, index files, commits, keys);
//! it never deletes anything but a key the user removes.
//!
//! With [`RemoteRepo::use_cache`], index files, commits and tree packs
//! are read through a local cache of their sealed bytes ([`super::cache`];
//! docs/DESIGN.md, "The local cache of a remote"): every entry is checked
//! as the remote's bytes would be, the remote's listings and the loaded
//! index say which entries may go, and what this process uploads or
//! deletes is written through. No other module touches the cache.
//!
//! Paths on the remote (docs/FORMAT.md): `config`, `keys/<hex>`,
//! `data/<ab>/<hex>`, `tree/<ab>/<hex>`, `index/<hex>`, `snapshots/<hex>`.

use super::backend::{Backend, BackendError, Listed, Retention};
use super::cache::{CacheStats, Kind, MetaCache};
use super::crypto::{Domain, KdfParams, KeyFile, MasterKey};
use super::format::{self, Commit, RemoteConfig};
use super::index::{self, Index, IndexFile, PackInfo};
use super::objlock::ObjectLock;
use super::pack::{self, BlobEntry, BlobKind, FinishedPack, PackKind};
use super::FormatError;
use crate::error::{Error, RemoteFailure, Result};
use crate::hash::hash_bytes;
use crate::id::{Digest, HashAlgo, ObjectId, SnapshotId};
use crate::repo::{Content, RepoRead, StoreKind};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

pub const CONFIG: &str = "config";
pub const KEYS: &str = "keys/";
pub const INDEX: &str = "index/";
pub const SNAPSHOTS: &str = "snapshots/";
pub const DATA: &str = "data/";
pub const TREES: &str = "tree/";
/// Packs a prune took out of the index, waiting for a later prune.
pub const PENDING: &str = "pending/";
/// The snapshots prunes forgot, so a push does not bring them back.
pub const FORGOTTEN: &str = "forgotten/";
/// The exclusive lock of a running prune.
pub const LOCKS: &str = "locks/";

/// Default target size of a pack.
pub const DEFAULT_PACK_SIZE: u64 = 16 << 20;
/// Smallest and largest pack size a remote may be created with.
pub const PACK_SIZE_RANGE: std::ops::RangeInclusive<u64> = (1 << 20)..=(512 << 20);

/// The object path of a pack.
pub fn pack_path(kind: PackKind, name: &[u8; 32]) -> String {
    let hex = Digest(*name).to_hex();
    let dir = match kind {
        PackKind::Data => DATA,
        PackKind::Tree => TREES,
    };
    format!("{dir}{}/{hex}", &hex[..2])
}

pub fn index_path(name: &[u8; 32]) -> String {
    format!("{INDEX}{}", Digest(*name).to_hex())
}

pub fn commit_path(name: &[u8; 32]) -> String {
    format!("{SNAPSHOTS}{}", Digest(*name).to_hex())
}

/// The name under `dir` of a listed path, as 32 bytes (None: not ours).
pub fn listed_name(path: &str, dir: &str) -> Option<[u8; 32]> {
    let rest = path.strip_prefix(dir)?;
    let hex = rest.rsplit('/').next()?;
    Digest::from_hex(hex).map(|d| d.0)
}

/// A random byte string from the operating system.
pub fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b)
        .map_err(|e| Error::Internal(format!("the OS random generator failed: {e}")))?;
    Ok(b)
}

/// One key file as `remote key list` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub created: String,
    pub host: String,
    pub user: String,
    /// The key this command was opened with.
    pub current: bool,
}

/// What a remote holds (`trove stats --remote`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RemoteStats {
    pub remote: String,
    pub snapshots: u64,
    pub pack_size: u64,
    pub data_packs: u64,
    pub data_bytes: u64,
    pub tree_packs: u64,
    pub tree_bytes: u64,
    /// Packs no index or pending file lists (a killed push's; the next
    /// push adopts them).
    pub unindexed_packs: u64,
    /// Packs a prune took out of the index, and their bytes: a prune
    /// after the grace period deletes them.
    pub pending_packs: u64,
    pub pending_bytes: u64,
    pub index_files: u64,
    pub blobs: u64,
    /// The S3 Object Lock period every object is written with, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<ObjectLock>,
    pub requests: super::backend::RequestStats,
}

/// A snapshot commit read from the remote.
struct Commits {
    /// By snapshot id: the commit.
    good: BTreeMap<SnapshotId, Commit>,
    /// Commits that could not be read, by their name, with the reason.
    damaged: BTreeMap<SnapshotId, String>,
}

/// Segments of packs already fetched, kept for the blobs that follow (a
/// restore reads in the order the push wrote).
#[derive(Default)]
struct Segments {
    list: Vec<Segment>,
    bytes: usize,
}

/// Whole tree packs, kept once read: a listing or a restore reads
/// thousands of small trees, one GET each otherwise.
#[derive(Default)]
struct TreePacks {
    list: Vec<([u8; 32], Arc<Vec<u8>>)>,
    bytes: usize,
}

/// The most bytes of tree packs kept; a tree pack larger than this is
/// read blob by blob.
const TREE_CACHE: usize = 32 << 20;

struct Segment {
    pack: [u8; 32],
    start: u64,
    data: Arc<Vec<u8>>,
}

/// Allocations from this size up get their own mapping (see
/// `sys::map_large_allocations`).
const LARGE_ALLOCATION: usize = 1 << 20;

const SEGMENT_CACHE: usize = 16 << 20;
/// Wanted blobs closer than this are fetched in one ranged read.
const MERGE_GAP: u64 = 1 << 20;
/// The largest ranged read.
const MAX_SPAN: u64 = 4 << 20;

/// What a reader has announced it will read: per pack, the offsets and
/// lengths of the wanted blobs, sorted.
#[derive(Default)]
struct Plan {
    by_pack: HashMap<[u8; 32], Vec<(u64, u64)>>,
}

struct Inner {
    backend: Box<dyn Backend>,
    key: MasterKey,
    key_id: String,
    config: RemoteConfig,
    algo: HashAlgo,
    index: Mutex<Option<Arc<Index>>>,
    commits: Mutex<Option<Arc<Commits>>>,
    segments: Mutex<Segments>,
    tree_packs: Mutex<TreePacks>,
    plan: Mutex<Plan>,
    /// The local cache of index files, commits and tree packs, if used.
    cache: Mutex<Option<Arc<MetaCache>>>,
}

/// An open remote repository. Cheap to clone (shared).
#[derive(Clone)]
pub struct RemoteRepo {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A backend failure as the error the commands report.
pub fn backend_error(url: &str, action: impl Into<String>, e: BackendError) -> Error {
    let (failure, detail) = match e {
        BackendError::NotFound { path } => (RemoteFailure::NotFound, format!("{path} not found")),
        BackendError::Denied { detail } => (RemoteFailure::Denied, detail),
        BackendError::NoBucket { detail } => (RemoteFailure::NoBucket, detail),
        BackendError::Unreachable { detail } => (RemoteFailure::Unreachable, detail),
        BackendError::Config { detail } => (RemoteFailure::Config, detail),
        BackendError::Other { detail } => (RemoteFailure::Other, detail),
    };
    Error::Remote {
        url: url.to_string(),
        action: action.into(),
        failure,
        detail,
    }
}

/// A decoding failure of the object at `path` as the error reported.
pub fn format_error(url: &str, what: &str, e: FormatError) -> Error {
    match e {
        FormatError::Version { found, supported } => Error::RemoteVersion {
            url: url.to_string(),
            found,
            supported,
        },
        other => Error::RemoteDamaged {
            url: url.to_string(),
            what: what.to_string(),
            detail: other.to_string(),
        },
    }
}

pub(crate) fn user_and_host() -> (String, String) {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_default();
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    (user, host)
}

fn now_text() -> String {
    jiff::Timestamp::now().to_string()
}

impl RemoteRepo {
    /// Create an empty remote repository: a key file for `password`, then
    /// the config (whose presence is what makes it a repository).
    pub fn init(
        backend: Box<dyn Backend>,
        password: &[u8],
        algo: HashAlgo,
        pack_size: u64,
        kdf: KdfParams,
    ) -> Result<RemoteRepo> {
        RemoteRepo::init_locked(backend, password, algo, pack_size, kdf, None)
    }

    /// [`RemoteRepo::init`], with an S3 Object Lock period when `lock` is
    /// given: refused unless the bucket has object lock enabled; the key
    /// file and config are the first objects written locked.
    pub fn init_locked(
        backend: Box<dyn Backend>,
        password: &[u8],
        algo: HashAlgo,
        pack_size: u64,
        kdf: KdfParams,
        lock: Option<ObjectLock>,
    ) -> Result<RemoteRepo> {
        crate::sys::map_large_allocations(LARGE_ALLOCATION);
        let url = backend.url().to_string();
        backend
            .check_reachable()
            .map_err(|e| backend_error(&url, "reach the remote", e))?;
        if let Some(l) = lock {
            check_lock_support(backend.as_ref(), l)?;
        }
        let existing = backend
            .size(CONFIG)
            .map_err(|e| backend_error(&url, "check for a config", e))?;
        if existing.is_some() {
            return Err(Error::Usage(format!(
                "remote {url} already holds a trove repository: use it (`trove push --remote {url}`), or choose another URL"
            )));
        }
        let keys = backend
            .list(KEYS)
            .map_err(|e| backend_error(&url, "list keys/", e))?;
        if !keys.is_empty() {
            return Err(Error::Usage(format!(
                "remote {url} has key files but no config: it is a damaged or half-created repository; `trove remote init` will not write over it. Choose another URL, or remove what is there if it is yours to lose"
            )));
        }
        let key = MasterKey::generate().map_err(|e| format_error(&url, "new key", e))?;
        let seed = u64::from_le_bytes(random::<8>()?);
        let mut config = RemoteConfig {
            version: 1,
            id: random::<16>()?,
            hash: algo.name().to_string(),
            chunker: super::chunk::ChunkParams::with_seed(seed),
            pack_size,
            object_lock: lock,
        };
        config.version = config.needed_version();
        let key_id = write_key(backend.as_ref(), &key, password, kdf, lock)?;
        let data =
            format::encode_config(&key, &config).map_err(|e| format_error(&url, "config", e))?;
        put_object(backend.as_ref(), lock, CONFIG, data, false)
            .map_err(|e| backend_error(&url, "write config", e))?;
        Ok(RemoteRepo::from_parts(backend, key, key_id, config, algo))
    }

    fn from_parts(
        backend: Box<dyn Backend>,
        key: MasterKey,
        key_id: String,
        config: RemoteConfig,
        algo: HashAlgo,
    ) -> RemoteRepo {
        RemoteRepo {
            inner: Arc::new(Inner {
                backend,
                key,
                key_id,
                config,
                algo,
                index: Mutex::new(None),
                commits: Mutex::new(None),
                segments: Mutex::new(Segments::default()),
                tree_packs: Mutex::new(TreePacks::default()),
                plan: Mutex::new(Plan::default()),
                cache: Mutex::new(None),
            }),
        }
    }

    /// Open a remote repository with a password.
    pub fn open(backend: Box<dyn Backend>, password: &[u8]) -> Result<RemoteRepo> {
        RemoteRepo::open_asking(backend, &mut || {
            Ok(zeroize::Zeroizing::new(password.to_vec()))
        })
    }

    /// Open a remote repository, asking for the password only once the
    /// store is reached and holds a remote of a version this trove reads
    /// (nobody types a password for a typo in the URL).
    pub fn open_asking(
        backend: Box<dyn Backend>,
        ask: &mut dyn FnMut() -> Result<zeroize::Zeroizing<Vec<u8>>>,
    ) -> Result<RemoteRepo> {
        // Packs, spans and the key derivation's 64 MiB are large, short-lived
        // buffers: each its own mapping, returned when freed.
        crate::sys::map_large_allocations(LARGE_ALLOCATION);
        let url = backend.url().to_string();
        let data = match backend.get(CONFIG) {
            Ok(d) => d,
            Err(BackendError::NotFound { .. }) => {
                // Name a missing bucket as such, not as a missing repository.
                backend
                    .check_reachable()
                    .map_err(|e| backend_error(&url, "reach the remote", e))?;
                return Err(Error::NotARemote { url });
            }
            Err(e) => return Err(backend_error(&url, "read config", e)),
        };
        let version = format::config_version(&data).map_err(|e| match e {
            FormatError::Magic(_) => Error::NotARemote { url: url.clone() },
            e => format_error(&url, "config", e),
        })?;
        if version > format::CONFIG_VERSION {
            return Err(Error::RemoteVersion {
                url,
                found: version,
                supported: format::CONFIG_VERSION,
            });
        }
        let password = ask()?;
        let password: &[u8] = &password;
        let keys = backend
            .list(KEYS)
            .map_err(|e| backend_error(&url, "list keys/", e))?;
        let mut tried = 0;
        let mut opened = None;
        for k in &keys {
            let Some(id) = k.path.strip_prefix(KEYS) else {
                continue;
            };
            let bytes = backend
                .get(&k.path)
                .map_err(|e| backend_error(&url, format!("read {}", k.path), e))?;
            let file = match KeyFile::parse(&bytes) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(
                        "remote {url}: key file {} is unreadable ({e}); skipped",
                        k.path
                    );
                    continue;
                }
            };
            tried += 1;
            if let Ok(key) = file.unwrap_key(password) {
                opened = Some((key, id.to_string()));
                break;
            }
        }
        let Some((key, key_id)) = opened else {
            return Err(Error::WrongPassword { url, keys: tried });
        };
        let config =
            format::decode_config(&key, &data).map_err(|e| format_error(&url, "config", e))?;
        let algo: HashAlgo = config.hash.parse().map_err(|_| Error::RemoteDamaged {
            url: url.clone(),
            what: "config".into(),
            detail: format!("unknown hash algorithm {:?}", config.hash),
        })?;
        Ok(RemoteRepo::from_parts(backend, key, key_id, config, algo))
    }

    /// The id of the key file this remote was opened with.
    pub fn key_id(&self) -> &str {
        &self.inner.key_id
    }

    /// What the remote holds, from its listings and index.
    pub fn stats(&self) -> Result<RemoteStats> {
        let idx = self.index()?;
        let mut st = RemoteStats {
            remote: self.url().to_string(),
            pack_size: self.config().pack_size,
            index_files: self.index_files()?.len() as u64,
            blobs: idx.blob_count() as u64,
            object_lock: self.object_lock(),
            ..RemoteStats::default()
        };
        let pending = self.pending_packs()?;
        for (kind, name, l) in self.list_packs()? {
            if !idx.has_pack(&name) {
                if pending.contains(&name) {
                    st.pending_packs += 1;
                    st.pending_bytes += l.size;
                } else {
                    st.unindexed_packs += 1;
                }
            }
            match kind {
                PackKind::Data => {
                    st.data_packs += 1;
                    st.data_bytes += l.size;
                }
                PackKind::Tree => {
                    st.tree_packs += 1;
                    st.tree_bytes += l.size;
                }
            }
        }
        st.snapshots = self.commit_names()?.len() as u64;
        st.requests = self.backend().stats();
        Ok(st)
    }

    pub fn url(&self) -> &str {
        self.inner.backend.url()
    }
    pub fn backend(&self) -> &dyn Backend {
        self.inner.backend.as_ref()
    }
    pub fn key(&self) -> &MasterKey {
        &self.inner.key
    }
    pub fn config(&self) -> &RemoteConfig {
        &self.inner.config
    }

    fn err(&self, action: impl Into<String>, e: BackendError) -> Error {
        backend_error(self.url(), action, e)
    }
    fn damaged(&self, what: &str, e: FormatError) -> Error {
        format_error(self.url(), what, e)
    }

    // ----- the local cache -----

    /// Read index files, commits and tree packs through a local cache
    /// below `root`, in the folder of this remote's config id (created at
    /// the first entry stored; a failure to use it is one warning, and
    /// the command goes on without it).
    pub fn use_cache(&self, root: &Path) {
        let c = MetaCache::new(root, &self.config().id);
        *lock(&self.inner.cache) = Some(Arc::new(c));
    }

    /// Read and write the remote only, from now on: `verify --remote`
    /// checks what the remote holds, not a copy of it.
    pub fn bypass_cache(&self) {
        *lock(&self.inner.cache) = None;
    }

    /// What the cache did so far (`None`: no cache is used).
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.cache().map(|c| c.stats())
    }

    fn cache(&self) -> Option<Arc<MetaCache>> {
        lock(&self.inner.cache).clone()
    }

    /// The bytes of the immutable object `path` (the cache's `kind` and
    /// `name`): the cache's entry when it has `len` bytes (if known) and
    /// `valid` accepts it, else a GET, whose bytes are stored when `valid`
    /// accepts them. An entry that fails is removed and read again.
    fn read_through(
        &self,
        (kind, name): (Kind, [u8; 32]),
        path: &str,
        len: Option<u64>,
        valid: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Vec<u8>> {
        let cache = self.cache();
        if let Some(c) = &cache {
            if let Some(b) = c.get(kind, &name) {
                if len.is_none_or(|l| l == b.len() as u64) && valid(&b) {
                    c.hit(b.len());
                    return Ok(b);
                }
                c.discard_damaged(kind, &name);
            }
        }
        let b = self
            .backend()
            .get(path)
            .map_err(|e| self.err(format!("read {path}"), e))?;
        if let Some(c) = &cache {
            if valid(&b) {
                c.put(kind, &name, &b);
            }
        }
        Ok(b)
    }

    /// The whole listing of `dir`; the cache entries of `kind` it lacks
    /// go (deleted from the remote, by a prune here or elsewhere).
    fn list_whole(&self, dir: &str, kind: Kind) -> Result<Vec<Listed>> {
        let listed = self
            .backend()
            .list(dir)
            .map_err(|e| self.err(format!("list {dir}"), e))?;
        if let Some(c) = self.cache() {
            let keep: HashSet<[u8; 32]> = listed
                .iter()
                .filter_map(|l| listed_name(&l.path, dir))
                .collect();
            c.retain(kind, &keep);
        }
        Ok(listed)
    }

    // ----- keys -----

    /// Add a key file for another password; returns its id.
    pub fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<String> {
        write_key(
            self.backend(),
            self.key(),
            password,
            kdf,
            self.config().object_lock,
        )
    }

    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        for k in self
            .backend()
            .list(KEYS)
            .map_err(|e| self.err("list keys/", e))?
        {
            let Some(id) = k.path.strip_prefix(KEYS) else {
                continue;
            };
            let bytes = self
                .backend()
                .get(&k.path)
                .map_err(|e| self.err(format!("read {}", k.path), e))?;
            let (created, host, user) = match KeyFile::parse(&bytes) {
                Ok(f) => (f.created, f.host, f.user),
                Err(e) => (format!("(unreadable: {e})"), String::new(), String::new()),
            };
            out.push(KeyInfo {
                id: id.to_string(),
                created,
                host,
                user,
                current: id == self.inner.key_id,
            });
        }
        Ok(out)
    }

    /// Remove the key file whose id starts with `prefix`. The key this
    /// command was opened with cannot be removed (so the last one never is).
    pub fn remove_key(&self, prefix: &str) -> Result<String> {
        let keys = self.list_keys()?;
        let found: Vec<&KeyInfo> = keys.iter().filter(|k| k.id.starts_with(prefix)).collect();
        let k = match found.as_slice() {
            [] => {
                return Err(Error::Usage(format!(
                "remote {}: no key id starts with {prefix:?}; `trove remote key list` shows them",
                self.url()
            )))
            }
            [k] => *k,
            _ => {
                return Err(Error::Usage(format!(
                    "remote {}: key prefix {prefix:?} is ambiguous: give more hex digits",
                    self.url()
                )))
            }
        };
        if k.current {
            return Err(Error::Usage(format!(
                "remote {}: key {} is the one this command was opened with; open with another password to remove it (the last key is never removed)",
                self.url(),
                k.id
            )));
        }
        let path = format!("{KEYS}{}", k.id);
        // On a locked remote S3 hides the key file behind a delete marker
        // but keeps its locked version: the password no longer opens the
        // remote through trove, yet the wrapped key stays in the bucket
        // until the date. Said, since a leaked password is why keys go.
        let locked = self.locked_until(&path)?;
        self.backend().delete(&path).map_err(|e| {
            // Likely the write-only credentials a push is given: say
            // which permission this needs.
            let e = match e {
                BackendError::Denied { detail } => BackendError::Denied {
                    detail: format!(
                        "{detail} (removing a key deletes its file: use credentials allowed s3:DeleteObject, not write-only push credentials)"
                    ),
                },
                e => e,
            };
            self.err(format!("delete {path}"), e)
        })?;
        if let Some(until) = locked {
            tracing::warn!(
                "remote {}: key {} is no longer listed, but S3 Object Lock keeps its locked version in the bucket until {until}; whoever has that password and read access to the bucket's versions can still unwrap the master key until then",
                self.url(),
                k.id
            );
        }
        Ok(k.id.clone())
    }

    // ----- index -----

    /// The merged index of every index file (loaded once).
    pub fn index(&self) -> Result<Arc<Index>> {
        let mut slot = lock(&self.inner.index);
        if let Some(i) = slot.as_ref() {
            return Ok(i.clone());
        }
        let mut idx = Index::new();
        for f in self.index_files()? {
            // A damaged index file only hides the packs it lists: verify
            // names it, and the next push indexes those packs again from
            // their own headers. A failing server stops the command.
            match self.read_index_file(&f) {
                Ok(file) => idx.add(file),
                Err(e @ Error::RemoteDamaged { .. }) => {
                    tracing::warn!(
                        "{e}; the packs it lists are ignored until `trove push` indexes them again"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(c) = self.cache() {
            // A tree pack no index lists any more was dropped by a prune.
            let trees: HashSet<[u8; 32]> = idx
                .packs()
                .iter()
                .filter(|p| p.kind == PackKind::Tree)
                .map(|p| p.name)
                .collect();
            c.retain(Kind::Tree, &trees);
        }
        let idx = Arc::new(idx);
        *slot = Some(idx.clone());
        Ok(idx)
    }

    /// The index files stored, as listed (the cache keeps no others).
    pub fn index_files(&self) -> Result<Vec<Listed>> {
        self.list_whole(INDEX, Kind::Index)
    }

    /// Read and decode one index file (through the cache: its name is the
    /// hash of its bytes).
    pub fn read_index_file(&self, f: &Listed) -> Result<IndexFile> {
        let bytes = match listed_name(&f.path, INDEX) {
            Some(name) => {
                self.read_through((Kind::Index, name), &f.path, Some(f.size), &|b: &[u8]| {
                    *blake3::hash(b).as_bytes() == name
                })?
            }
            None => self
                .backend()
                .get(&f.path)
                .map_err(|e| self.err(format!("read {}", f.path), e))?,
        };
        index::decode(self.key(), &bytes).map_err(|e| self.damaged(&f.path, e))
    }

    /// Forget the loaded index (after a push added to it).
    pub fn forget_index(&self) {
        *lock(&self.inner.index) = None;
    }

    /// Read through `index` from now on (a prune reads the trees of packs
    /// waiting for deletion too, in case a concurrent push needed them).
    pub fn use_index(&self, index: Arc<Index>) {
        *lock(&self.inner.index) = Some(index);
    }

    /// The pending files (packs a prune took out of the index), with what
    /// they list. A damaged one is named and left out: the packs it lists
    /// are then unindexed packs, which the next prune marks again.
    pub fn pending_files(&self) -> Result<Vec<(Listed, index::PendingFile)>> {
        let listed = self
            .backend()
            .list(PENDING)
            .map_err(|e| self.err(format!("list {PENDING}"), e))?;
        let mut out = Vec::with_capacity(listed.len());
        for l in listed {
            let bytes = self
                .backend()
                .get(&l.path)
                .map_err(|e| self.err(format!("read {}", l.path), e))?;
            match index::decode_pending(self.key(), &bytes) {
                Ok(f) => out.push((l, f)),
                Err(e) => tracing::warn!("{}", self.damaged(&l.path, e)),
            }
        }
        Ok(out)
    }

    /// The names of the packs every pending file lists (a push does not
    /// adopt them: a prune found nothing needs them).
    pub fn pending_packs(&self) -> Result<HashSet<[u8; 32]>> {
        Ok(self
            .pending_files()?
            .into_iter()
            .flat_map(|(_, f)| f.packs.into_iter().map(|p| p.name))
            .collect())
    }

    /// Write a pending file; returns its path.
    pub fn put_pending(&self, file: &index::PendingFile) -> Result<String> {
        let bytes = index::encode_pending(self.key(), file)
            .map_err(|e| self.damaged("new pending file", e))?;
        self.put_hashed(PENDING, bytes)
    }

    /// Store `bytes` in `dir` under their BLAKE3 hash; returns the path.
    fn put_hashed(&self, dir: &str, bytes: Vec<u8>) -> Result<String> {
        let path = format!("{dir}{}", Digest(*blake3::hash(&bytes).as_bytes()).to_hex());
        self.put(&path, bytes, false, None)?;
        Ok(path)
    }

    /// The forgotten files (snapshots prunes forgot), with what they list.
    /// A damaged one is named and left out: a push may then upload again
    /// a snapshot it lists, which the next prune forgets again.
    pub fn forgotten_files(&self) -> Result<Vec<(Listed, index::ForgottenFile)>> {
        let listed = self
            .backend()
            .list(FORGOTTEN)
            .map_err(|e| self.err(format!("list {FORGOTTEN}"), e))?;
        let mut out = Vec::with_capacity(listed.len());
        for l in listed {
            let bytes = match self.backend().get(&l.path) {
                Ok(b) => b,
                // A prune merged it into a newer file (written before this
                // one was deleted, so listed too) after the listing.
                Err(BackendError::NotFound { .. }) => continue,
                Err(e) => return Err(self.err(format!("read {}", l.path), e)),
            };
            match index::decode_forgotten(self.key(), &bytes) {
                Ok(f) => out.push((l, f)),
                Err(e) => tracing::warn!(
                    "{}; a push may upload again a snapshot a prune forgot, and the next prune forgets it again",
                    self.damaged(&l.path, e)
                ),
            }
        }
        Ok(out)
    }

    /// The commit names every forgotten file lists.
    pub fn forgotten_commits(&self) -> Result<HashSet<[u8; 32]>> {
        Ok(self
            .forgotten_files()?
            .into_iter()
            .flat_map(|(_, f)| f.commits)
            .collect())
    }

    /// Write a forgotten file; returns its path.
    pub fn put_forgotten(&self, file: &index::ForgottenFile) -> Result<String> {
        let bytes = index::encode_forgotten(self.key(), file)
            .map_err(|e| self.damaged("new forgotten file", e))?;
        self.put_hashed(FORGOTTEN, bytes)
    }

    /// Delete one object (absent is not an error), and its cache entry.
    pub fn delete(&self, path: &str) -> Result<()> {
        self.backend()
            .delete(path)
            .map_err(|e| self.err(format!("delete {path}"), e))?;
        if let (Some(c), Some((kind, name))) = (self.cache(), cache_key(path)) {
            c.remove(kind, &name);
        }
        Ok(())
    }

    /// Every pack stored, by kind, as listed (`data/` and `tree/`).
    pub fn list_packs(&self) -> Result<Vec<(PackKind, [u8; 32], Listed)>> {
        let mut out = Vec::new();
        for (kind, dir) in [(PackKind::Data, DATA), (PackKind::Tree, TREES)] {
            for l in self
                .backend()
                .list(dir)
                .map_err(|e| self.err(format!("list {dir}"), e))?
            {
                if let Some(name) = listed_name(&l.path, dir) {
                    out.push((kind, name, l));
                }
            }
        }
        Ok(out)
    }

    /// A whole pack read and checked, with the index entries of its blobs:
    /// what a pack's header lists, and the plain digest each blob stands
    /// for recovered from the blob itself (and checked against its keyed
    /// id). How a push indexes packs no index lists.
    pub fn read_pack_entries(&self, path: &str, len: u64) -> Result<(PackKind, Vec<BlobEntry>)> {
        let bytes = self
            .backend()
            .get(path)
            .map_err(|e| self.err(format!("read {path}"), e))?;
        let n = bytes.len() as u64;
        if n != len || n < pack::TRAILER_LEN {
            return Err(self.damaged(
                path,
                FormatError::Truncated(format!("{n} bytes where the listing says {len}")),
            ));
        }
        let name = listed_name(path, if path.starts_with(DATA) { DATA } else { TREES });
        if name.is_some_and(|name| *blake3::hash(&bytes).as_bytes() != name) {
            return Err(self.damaged(
                path,
                FormatError::Decode("its bytes do not hash to its name".into()),
            ));
        }
        let (off, hlen) = pack::header_span(n, &bytes[(n - pack::TRAILER_LEN) as usize..])
            .map_err(|e| self.damaged(path, e))?;
        let sealed = &bytes[off as usize..(off + hlen) as usize];
        let (kind, mut entries) =
            pack::decode_header(self.key(), sealed, off).map_err(|e| self.damaged(path, e))?;
        for e in &mut entries {
            let stored = &bytes[e.offset as usize..(e.offset + u64::from(e.stored_len)) as usize];
            let plain =
                pack::open_blob(self.key(), e, stored).map_err(|err| self.damaged(path, err))?;
            e.orig = self
                .recover_orig(e, &plain)
                .map_err(|why| self.damaged(path, FormatError::Decode(why)))?;
        }
        Ok((kind, entries))
    }

    /// The plain digest a blob stands for, from its plaintext, checked
    /// against its keyed id (`None` for a chunk).
    fn recover_orig(
        &self,
        e: &BlobEntry,
        plain: &[u8],
    ) -> std::result::Result<Option<[u8; 32]>, String> {
        let algo = self.inner.algo;
        let key = self.key();
        let orig = match e.kind {
            BlobKind::Data => {
                let h = hash_bytes(algo, plain).0;
                if key.id(Domain::Object, &h) == e.id {
                    return Ok(Some(h));
                }
                if key.id(Domain::Chunk, plain) == e.id {
                    return Ok(None);
                }
                return Err("a data blob that matches no id".into());
            }
            BlobKind::List => pack::decode_list(plain).map_err(|e| e.to_string())?.object,
            BlobKind::Tree => {
                let t = crate::repo::tree::unframe_tree(plain, Path::new("tree blob"))
                    .map_err(|e| e.to_string())?;
                hash_bytes(algo, &t.payload).0
            }
        };
        let domain = if e.kind == BlobKind::Tree {
            Domain::Tree
        } else {
            Domain::Object
        };
        if key.id(domain, &orig) == e.id {
            Ok(Some(orig))
        } else {
            Err("a blob that does not match its id".into())
        }
    }

    /// The remote's S3 Object Lock period (`None`: written without locks).
    pub fn object_lock(&self) -> Option<ObjectLock> {
        self.config().object_lock
    }

    /// Until when S3 Object Lock keeps `path` from being deleted, when it
    /// does: what `prune --remote` asks before it deletes anything, so it
    /// can refuse with the date instead of leaving a delete marker over a
    /// version the server keeps. A remote created without object lock
    /// answers `None` without a request; on one with a lock period, one
    /// HEAD. A lock whose date has passed, or an absent object, is `None`.
    pub fn locked_until(&self, path: &str) -> Result<Option<jiff::Timestamp>> {
        Ok(self
            .retention(path)?
            .map(|r| r.until)
            .filter(|until| *until > jiff::Timestamp::now()))
    }

    /// The retention `path` carries, expired or not (`None`: none, or no
    /// such object); no request on a remote without a lock period.
    pub fn retention(&self, path: &str) -> Result<Option<Retention>> {
        if self.object_lock().is_none() {
            return Ok(None);
        }
        self.backend()
            .retention(path)
            .map_err(|e| self.err(format!("read the retention of {path}"), e))
    }

    /// Write an object: with retention for the lock period on a locked
    /// remote (in the same request), plainly otherwise. Every write of a
    /// remote goes through here. With `cached`, the bytes become that
    /// cache entry once the remote holds them (staged before the upload,
    /// which takes them).
    fn put(
        &self,
        path: &str,
        data: Vec<u8>,
        data_pack: bool,
        cached: Option<(Kind, [u8; 32])>,
    ) -> Result<()> {
        let cache = cached.and(self.cache());
        let staged = match (&cache, cached) {
            (Some(c), Some((kind, name))) => c.stage(kind, &name, &data),
            _ => None,
        };
        put_object(self.backend(), self.object_lock(), path, data, data_pack)
            .map_err(|e| self.err(format!("upload {path}"), e))?;
        if let Some(s) = staged {
            s.keep();
        }
        Ok(())
    }

    // ----- writes -----

    /// Upload a pack (its bytes are given up, not copied); returns what an
    /// index file lists of it.
    pub fn put_pack(&self, p: FinishedPack) -> Result<index::IndexPack> {
        let path = pack_path(p.kind, &p.name);
        let len = p.bytes.len() as u64;
        // Data packs may go to a cheaper storage class; tree packs stay
        // standard (every restore and push reads them) and are cached.
        let cached = (p.kind == PackKind::Tree).then_some((Kind::Tree, p.name));
        self.put(&path, p.bytes, p.kind == PackKind::Data, cached)?;
        Ok(index::IndexPack {
            name: p.name,
            kind: p.kind,
            len,
            blobs: p.entries,
        })
    }

    /// Write an index file; returns its name.
    pub fn put_index(&self, file: &IndexFile) -> Result<[u8; 32]> {
        let bytes = index::encode(self.key(), file).map_err(|e| self.damaged("new index", e))?;
        let name = *blake3::hash(&bytes).as_bytes();
        let path = index_path(&name);
        self.put(&path, bytes, false, Some((Kind::Index, name)))?;
        Ok(name)
    }

    /// The name a snapshot's commit is stored under.
    pub fn commit_name(&self, id: &SnapshotId) -> [u8; 32] {
        self.key().id(Domain::Snapshot, &id.0 .0)
    }

    /// Write a snapshot's commit: the commit point of a push.
    pub fn put_commit(&self, id: &SnapshotId, c: &Commit) -> Result<()> {
        let name = self.commit_name(id);
        let bytes = format::encode_commit(self.key(), &name, c)
            .map_err(|e| self.damaged("new commit", e))?;
        let path = commit_path(&name);
        // Written through: a commit forgotten by a prune and pushed again
        // has new bytes under its old name.
        self.put(&path, bytes, false, Some((Kind::Commit, name)))?;
        *lock(&self.inner.commits) = None;
        Ok(())
    }

    /// The snapshot commits stored, as listed (the cache keeps no others).
    fn list_commits(&self) -> Result<Vec<Listed>> {
        self.list_whole(SNAPSHOTS, Kind::Commit)
    }

    /// The names of the snapshot commits stored (one listing, nothing read).
    pub fn commit_names(&self) -> Result<HashSet<[u8; 32]>> {
        Ok(self
            .list_commits()?
            .iter()
            .filter_map(|l| listed_name(&l.path, SNAPSHOTS))
            .collect())
    }

    fn commits(&self) -> Result<Arc<Commits>> {
        let mut slot = lock(&self.inner.commits);
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let mut c = Commits {
            good: BTreeMap::new(),
            damaged: BTreeMap::new(),
        };
        for l in self.list_commits()? {
            let Some(name) = listed_name(&l.path, SNAPSHOTS) else {
                continue;
            };
            let bytes = self.read_through(
                (Kind::Commit, name),
                &l.path,
                Some(l.size),
                &|b: &[u8]| self.decode_commit(&name, b).is_ok(),
            )?;
            match self.decode_commit(&name, &bytes) {
                Ok((id, commit)) => {
                    c.good.insert(id, commit);
                }
                Err(e) => {
                    c.damaged.insert(SnapshotId(Digest(name)), e);
                }
            }
        }
        let c = Arc::new(c);
        *slot = Some(c.clone());
        Ok(c)
    }

    /// A commit's snapshot id and content, checked against its name.
    fn decode_commit(
        &self,
        name: &[u8; 32],
        bytes: &[u8],
    ) -> std::result::Result<(SnapshotId, Commit), String> {
        let commit = format::decode_commit(self.key(), name, bytes).map_err(|e| e.to_string())?;
        if commit.record.len() < 5 {
            return Err("its record is truncated".into());
        }
        let id = SnapshotId(hash_bytes(self.inner.algo, &commit.record[5..]));
        if self.commit_name(&id) != *name {
            return Err("its record does not match its name".into());
        }
        Ok((id, commit))
    }

    /// The commit of a snapshot, if stored and readable.
    pub fn commit(&self, id: &SnapshotId) -> Result<Option<Commit>> {
        Ok(self.commits()?.good.get(id).cloned())
    }

    // ----- blobs -----

    /// The keyed id of an object's blob (whole content, or chunk list).
    pub fn object_blob(&self, id: &ObjectId) -> [u8; 32] {
        self.key().id(Domain::Object, &id.0 .0)
    }
    /// The keyed id of a tree's blob.
    pub fn tree_blob(&self, d: &Digest) -> [u8; 32] {
        self.key().id(Domain::Tree, &d.0)
    }

    fn blob_name(&self, id: &[u8; 32]) -> String {
        format!("blob {}", &Digest(*id).to_hex()[..16])
    }

    /// Read and open one blob; `None` when no index lists it.
    pub fn read_blob(&self, id: &[u8; 32]) -> Result<Option<(BlobKind, Vec<u8>)>> {
        let idx = self.index()?;
        let Some((p, e)) = idx.get(id) else {
            return Ok(None);
        };
        let stored = self.fetch(p, e)?;
        let plain = pack::open_blob(self.key(), e, &stored).map_err(|err| {
            self.damaged(
                &format!(
                    "{} in pack {}",
                    self.blob_name(id),
                    pack_path(p.kind, &p.name)
                ),
                err,
            )
        })?;
        Ok(Some((e.kind, plain)))
    }

    /// The sealed bytes of one blob, through the segment cache, with a
    /// read ahead over the blobs a reader said it wants.
    fn fetch(&self, p: &PackInfo, e: &BlobEntry) -> Result<Vec<u8>> {
        let start = e.offset;
        let end = e.offset + u64::from(e.stored_len);
        if p.kind == PackKind::Tree && p.len <= TREE_CACHE as u64 {
            let whole = self.tree_pack(p)?;
            return match whole.get(start as usize..end as usize) {
                Some(b) => Ok(b.to_vec()),
                None => Err(self.damaged(
                    &pack_path(p.kind, &p.name),
                    FormatError::Truncated(format!(
                        "{} bytes, shorter than the blob at offset {start} the index lists",
                        whole.len()
                    )),
                )),
            };
        }
        {
            let segs = lock(&self.inner.segments);
            for s in segs.list.iter().rev() {
                let s_end = s.start + s.data.len() as u64;
                if s.pack == p.name && s.start <= start && end <= s_end {
                    let a = (start - s.start) as usize;
                    let b = (end - s.start) as usize;
                    return Ok(s.data[a..b].to_vec());
                }
            }
        }
        let span_end = self.span_end(p, start, end);
        let path = pack_path(p.kind, &p.name);
        let data = self
            .backend()
            .get_range(&path, start, span_end - start)
            .map_err(|err| self.err(format!("read {path}"), err))?;
        if (data.len() as u64) < end - start {
            return Err(self.damaged(
                &path,
                FormatError::Truncated(format!(
                    "{} ends before the blob at offset {start} that the index lists",
                    path
                )),
            ));
        }
        let out = data[..(end - start) as usize].to_vec();
        if span_end > end {
            let mut segs = lock(&self.inner.segments);
            segs.bytes += data.len();
            segs.list.push(Segment {
                pack: p.name,
                start,
                data: Arc::new(data),
            });
            while segs.bytes > SEGMENT_CACHE && !segs.list.is_empty() {
                let s = segs.list.remove(0);
                segs.bytes -= s.data.len();
            }
        }
        Ok(out)
    }

    /// A whole pack of `len` bytes (as indexed): a tree pack through the
    /// local cache, which keeps it only when it hashes to its name; a data
    /// pack from the remote. The caller checks what it relies on.
    pub fn read_pack(&self, kind: PackKind, name: &[u8; 32], len: u64) -> Result<Vec<u8>> {
        let path = pack_path(kind, name);
        match kind {
            PackKind::Tree => {
                self.read_through((Kind::Tree, *name), &path, Some(len), &|b: &[u8]| {
                    blake3::hash(b).as_bytes() == name
                })
            }
            PackKind::Data => self
                .backend()
                .get(&path)
                .map_err(|e| self.err(format!("read {path}"), e)),
        }
    }

    /// A whole tree pack, from the cache or read once.
    fn tree_pack(&self, p: &PackInfo) -> Result<Arc<Vec<u8>>> {
        {
            let c = lock(&self.inner.tree_packs);
            if let Some((_, d)) = c.list.iter().find(|(n, _)| *n == p.name) {
                return Ok(d.clone());
            }
        }
        let data = Arc::new(self.read_pack(p.kind, &p.name, p.len)?);
        let mut c = lock(&self.inner.tree_packs);
        c.bytes += data.len();
        c.list.push((p.name, data.clone()));
        while c.bytes > TREE_CACHE && c.list.len() > 1 {
            let (_, gone) = c.list.remove(0);
            c.bytes -= gone.len();
        }
        Ok(data)
    }

    /// Where a ranged read starting at the blob `[start, end)` should stop:
    /// over the following wanted blobs of the same pack while the gaps are
    /// small (one request instead of many), never past `MAX_SPAN`.
    fn span_end(&self, p: &PackInfo, start: u64, end: u64) -> u64 {
        let plan = lock(&self.inner.plan);
        let Some(wanted) = plan.by_pack.get(&p.name) else {
            return end;
        };
        let mut i = wanted.partition_point(|&(o, _)| o < start);
        let mut stop = end;
        if wanted.get(i).map(|w| w.0) == Some(start) {
            i += 1;
        }
        while let Some(&(o, l)) = wanted.get(i) {
            if o < stop || o - stop > MERGE_GAP || o + l - start > MAX_SPAN {
                break;
            }
            stop = o + l;
            i += 1;
        }
        stop
    }

    /// Whether a chunk list blob names a chunk no index lists (its content
    /// cannot be read whole); an unreadable list counts as incomplete.
    pub fn chunks_missing(&self, list_blob: &[u8; 32]) -> Result<bool> {
        let idx = self.index()?;
        match self.read_blob(list_blob) {
            Ok(Some((BlobKind::List, plain))) => Ok(pack::decode_list(&plain)
                .map_or(true, |l| l.chunks.iter().any(|c| !idx.contains(c)))),
            Ok(_) => Ok(true),
            Err(Error::RemoteDamaged { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Open an object's content: a whole blob in memory, or a stream over
    /// its chunks (never the whole of a large file at once).
    pub fn open_content(&self, id: &ObjectId) -> Result<Option<Content>> {
        let blob = self.object_blob(id);
        // A whole object is fetched when first read, not when opened: a
        // check of existence and size reads nothing.
        if let Some((_, e)) = self.index()?.get(&blob) {
            if e.kind == BlobKind::Data {
                return Ok(Some(Content::Stream {
                    len: u64::from(e.raw_len),
                    reader: Box::new(LazyBlob {
                        repo: self.clone(),
                        id: blob,
                        data: None,
                    }),
                }));
            }
        }
        let Some((kind, plain)) = self.read_blob(&blob)? else {
            return Ok(None);
        };
        match kind {
            BlobKind::Data => Ok(Some(Content::Bytes(io::Cursor::new(plain)))),
            BlobKind::List => {
                let list = pack::decode_list(&plain).map_err(|e| {
                    self.damaged(&format!("chunk list of object {}", id.short()), e)
                })?;
                // A chunk no index lists makes the object unreadable: say
                // so when it is opened (verify names it missing), not
                // halfway through writing it.
                let idx = self.index()?;
                if let Some(c) = list.chunks.iter().find(|c| !idx.contains(c)) {
                    return Err(Error::io(
                        "read",
                        self.locate(StoreKind::Object, &id.0),
                        io::Error::new(
                            io::ErrorKind::NotFound,
                            format!(
                                "its chunk {} is in no indexed pack",
                                &Digest(*c).to_hex()[..16]
                            ),
                        ),
                    ));
                }
                Ok(Some(Content::Stream {
                    len: list.size,
                    reader: Box::new(ChunkReader {
                        repo: self.clone(),
                        chunks: list.chunks.into_iter(),
                        buf: Vec::new(),
                        pos: 0,
                    }),
                }))
            }
            BlobKind::Tree => Err(self.damaged(
                &format!("object {}", id.short()),
                FormatError::Decode("its blob is a tree".into()),
            )),
        }
    }
}

/// The cache entry of a remote path, for the kinds the cache keeps.
fn cache_key(path: &str) -> Option<(Kind, [u8; 32])> {
    [
        (INDEX, Kind::Index),
        (SNAPSHOTS, Kind::Commit),
        (TREES, Kind::Tree),
    ]
    .into_iter()
    .find_map(|(dir, kind)| listed_name(path, dir).map(|n| (kind, n)))
}

/// Write an object, locked for the period when there is one.
fn put_object(
    backend: &dyn Backend,
    lock: Option<ObjectLock>,
    path: &str,
    data: Vec<u8>,
    data_pack: bool,
) -> std::result::Result<(), BackendError> {
    match lock {
        Some(l) => backend.put_retained(path, data, data_pack, l.retention_now()),
        None if data_pack => backend.put_data_pack(path, data),
        None => backend.put_owned(path, data),
    }
}

/// Refuse a lock period on a store that cannot keep it: a folder, or a
/// bucket created without object lock (which S3 cannot turn on later for
/// an existing bucket through this program).
fn check_lock_support(backend: &dyn Backend, lock: ObjectLock) -> Result<()> {
    let url = backend.url().to_string();
    let bucket = match super::backend::RemoteUrl::parse(&url) {
        Ok(super::backend::RemoteUrl::File { .. }) => {
            return Err(Error::Usage(format!(
                "remote {url}: --object-lock {} needs an S3 bucket with object lock; a folder (file://) cannot lock its files. Create the remote without --object-lock, or on such a bucket",
                lock.days
            )))
        }
        Ok(super::backend::RemoteUrl::S3 { bucket, .. }) => bucket,
        Err(_) => url.clone(),
    };
    let enabled = backend
        .object_lock_enabled()
        .map_err(|e| backend_error(&url, "read the bucket's object lock configuration", e))?;
    if !enabled {
        return Err(Error::Usage(format!(
            "remote {url}: bucket {bucket} does not have S3 Object Lock enabled, so --object-lock {days} cannot lock what trove writes. Object lock can only be chosen when a bucket is created: create one with it (`aws s3api create-bucket --bucket NEW-BUCKET --object-lock-enabled-for-bucket`, plus `--create-bucket-configuration LocationConstraint=REGION` outside us-east-1) and run `trove remote init --object-lock {days}` there",
            days = lock.days
        )));
    }
    Ok(())
}

/// Write a key file for `password`; returns its id.
fn write_key(
    backend: &dyn Backend,
    key: &MasterKey,
    password: &[u8],
    kdf: KdfParams,
    lock: Option<ObjectLock>,
) -> Result<String> {
    let url = backend.url().to_string();
    let (user, host) = user_and_host();
    let file = KeyFile::wrap(key, password, kdf, &host, &user, &now_text())
        .map_err(|e| format_error(&url, "new key file", e))?;
    let json = file.to_json();
    let id = Digest(*blake3::hash(&json).as_bytes()).to_hex();
    let path = format!("{KEYS}{id}");
    put_object(backend, lock, &path, json, false)
        .map_err(|e| backend_error(&url, format!("write {path}"), e))?;
    Ok(id)
}

/// A whole object, fetched at its first read.
struct LazyBlob {
    repo: RemoteRepo,
    id: [u8; 32],
    data: Option<io::Cursor<Vec<u8>>>,
}

impl Read for LazyBlob {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.data.is_none() {
            let b = match self.repo.read_blob(&self.id).map_err(io_err)? {
                Some((BlobKind::Data, b)) => b,
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!(
                            "remote {}: blob is missing from every index",
                            self.repo.url()
                        ),
                    ))
                }
            };
            self.data = Some(io::Cursor::new(b));
        }
        match self.data.as_mut() {
            Some(c) => c.read(out),
            None => Ok(0),
        }
    }
}

/// A large object read chunk by chunk.
struct ChunkReader {
    repo: RemoteRepo,
    chunks: std::vec::IntoIter<[u8; 32]>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some(c) = self.chunks.next() else {
                return Ok(0);
            };
            match self.repo.read_blob(&c) {
                Ok(Some((BlobKind::Data, b))) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!(
                            "remote {}: chunk {} is missing from every index",
                            self.repo.url(),
                            &Digest(c).to_hex()[..16]
                        ),
                    ))
                }
                Err(e) => return Err(io::Error::other(e.to_string())),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn io_err(e: Error) -> io::Error {
    match &e {
        Error::Remote {
            failure: RemoteFailure::NotFound,
            ..
        } => io::Error::new(io::ErrorKind::NotFound, e.to_string()),
        _ => io::Error::other(e.to_string()),
    }
}

impl RepoRead for RemoteRepo {
    fn algo(&self) -> HashAlgo {
        self.inner.algo
    }
    fn locate(&self, kind: StoreKind, d: &Digest) -> PathBuf {
        let what = match kind {
            StoreKind::Object => "object",
            StoreKind::Tree => "tree",
        };
        PathBuf::from(format!("{} ({what} {})", self.url(), d.to_hex()))
    }
    fn locate_store(&self, kind: StoreKind) -> PathBuf {
        let what = match kind {
            StoreKind::Object => DATA,
            StoreKind::Tree => TREES,
        };
        PathBuf::from(format!("{}/{what}", self.url()))
    }
    fn locate_snapshot(&self, id: &SnapshotId) -> PathBuf {
        PathBuf::from(format!("{} (snapshot {})", self.url(), id.to_hex()))
    }
    fn locate_snapshots(&self) -> PathBuf {
        PathBuf::from(format!("{}/{SNAPSHOTS}", self.url()))
    }
    fn locate_pins(&self) -> PathBuf {
        PathBuf::from(format!("{} (no pinned list)", self.url()))
    }
    fn locate_marker(&self) -> PathBuf {
        PathBuf::from(format!("{} (no browsable tree)", self.url()))
    }

    fn read(&self, kind: StoreKind, d: &Digest) -> io::Result<Vec<u8>> {
        match kind {
            StoreKind::Tree => match self.read_blob(&self.tree_blob(d)).map_err(io_err)? {
                Some((BlobKind::Tree, b)) => Ok(b),
                Some(_) => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "not a tree blob",
                )),
                None => Err(io::Error::new(io::ErrorKind::NotFound, "no index lists it")),
            },
            StoreKind::Object => {
                let mut c = self
                    .open_content(&ObjectId(*d))
                    .map_err(io_err)?
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no index lists it"))?;
                let mut v = Vec::new();
                c.read_to_end(&mut v)?;
                Ok(v)
            }
        }
    }
    fn has(&self, kind: StoreKind, d: &Digest) -> bool {
        let id = match kind {
            StoreKind::Object => self.object_blob(&ObjectId(*d)),
            StoreKind::Tree => self.tree_blob(d),
        };
        self.index().is_ok_and(|i| i.contains(&id))
    }
    fn size(&self, kind: StoreKind, d: &Digest) -> io::Result<u64> {
        match kind {
            StoreKind::Tree => {
                let idx = self.index().map_err(io_err)?;
                idx.get(&self.tree_blob(d))
                    .map(|(_, e)| u64::from(e.raw_len))
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no index lists it"))
            }
            StoreKind::Object => {
                // A whole object's size is in the index; only a chunked
                // one needs its list read.
                let idx = self.index().map_err(io_err)?;
                match idx.get(&self.object_blob(&ObjectId(*d))) {
                    Some((_, e)) if e.kind == BlobKind::Data => return Ok(u64::from(e.raw_len)),
                    Some(_) => {}
                    None => {
                        return Err(io::Error::new(io::ErrorKind::NotFound, "no index lists it"))
                    }
                }
                let c = self
                    .open_content(&ObjectId(*d))
                    .map_err(io_err)?
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no index lists it"))?;
                Ok(c.stat()?.0)
            }
        }
    }
    fn list(&self, kind: StoreKind, f: &mut dyn FnMut(Digest)) -> Result<()> {
        let idx = self.index()?;
        for (_, e) in idx.blobs_sorted() {
            let wanted = match kind {
                StoreKind::Object => {
                    matches!(e.kind, BlobKind::List)
                        || (e.kind == BlobKind::Data && e.orig.is_some())
                }
                StoreKind::Tree => e.kind == BlobKind::Tree,
            };
            if wanted {
                if let Some(o) = e.orig {
                    f(Digest(o));
                }
            }
        }
        Ok(())
    }
    fn open_object(&self, id: &ObjectId) -> Result<Content> {
        match self.open_content(id)? {
            Some(c) => Ok(c),
            None => Err(Error::io(
                "read",
                self.locate(StoreKind::Object, &id.0),
                io::Error::new(io::ErrorKind::NotFound, "no index lists it"),
            )),
        }
    }
    fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        let c = self.commits()?;
        Ok(c.good.keys().chain(c.damaged.keys()).copied().collect())
    }
    fn read_snapshot(&self, id: &SnapshotId) -> io::Result<Vec<u8>> {
        let c = self.commits().map_err(io_err)?;
        if let Some(commit) = c.good.get(id) {
            return Ok(commit.record.clone());
        }
        match c.damaged.get(id) {
            Some(why) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot commit {SNAPSHOTS}{}: {why}", id.to_hex()),
            )),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no such snapshot commit",
            )),
        }
    }
    fn has_snapshot(&self, id: &SnapshotId) -> bool {
        self.commits()
            .is_ok_and(|c| c.good.contains_key(id) || c.damaged.contains_key(id))
    }
    /// Every snapshot on a remote keeps its content (the remote has no
    /// retention of its own yet): all are pinned, and what a push could
    /// not upload is named by [`RepoRead::absent_by_design`].
    fn read_pins(&self) -> io::Result<Vec<u8>> {
        let c = self.commits().map_err(io_err)?;
        let mut text = String::new();
        for id in c.good.keys() {
            text.push_str(&id.to_hex());
            text.push('\n');
        }
        Ok(text.into_bytes())
    }
    fn absent_by_design(&self, id: &ObjectId) -> bool {
        self.commits()
            .is_ok_and(|c| c.good.values().any(|m| m.missing.contains(&id.0 .0)))
    }
    fn read_marker(&self) -> Option<SnapshotId> {
        None
    }
    fn leftovers(&self) -> Vec<PathBuf> {
        Vec::new()
    }
    fn local_dir(&self) -> Option<&Path> {
        None
    }
    fn plans_reads(&self) -> bool {
        true
    }
    fn read_order(&self, id: &ObjectId) -> u64 {
        let Ok(idx) = self.index() else {
            return u64::MAX;
        };
        let blob = self.object_blob(id);
        match (idx.get(&blob), idx.position(&blob)) {
            // Whole objects by pack and offset (offsets fit in 40 bits:
            // packs are at most 512 MiB); chunked ones after them.
            (Some((_, e)), Some((pack, offset))) if e.kind == BlobKind::Data => {
                (u64::from(pack) << 40) | offset
            }
            _ => u64::MAX,
        }
    }
    fn will_read(&self, objects: &[ObjectId]) {
        // Content is read next, the trees were read before (a restore
        // from a remote reads all it writes first: `plans_reads`): their
        // packs need not stay in memory beside it.
        *lock(&self.inner.tree_packs) = TreePacks::default();
        let Ok(idx) = self.index() else {
            return;
        };
        let mut plan = Plan::default();
        for o in objects {
            if let Some((p, e)) = idx.get(&self.object_blob(o)) {
                if e.kind == BlobKind::Data {
                    plan.by_pack
                        .entry(p.name)
                        .or_default()
                        .push((e.offset, u64::from(e.stored_len)));
                }
            }
        }
        for v in plan.by_pack.values_mut() {
            v.sort_unstable();
            v.dedup();
        }
        *lock(&self.inner.plan) = plan;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::backend::MemBackend;
    use crate::remote::pack::{seal_blob, PackWriter};

    fn fresh() -> (RemoteRepo, MemBackend) {
        let m = MemBackend::new();
        let r = RemoteRepo::init(
            Box::new(m.clone()),
            b"pw",
            HashAlgo::Blake3,
            DEFAULT_PACK_SIZE,
            KdfParams::FAST_FOR_TESTS,
        )
        .expect("init");
        (r, m)
    }

    /// The same store, opened again (as another command would).
    fn reopen(m: &MemBackend, pw: &[u8]) -> Result<RemoteRepo> {
        RemoteRepo::open(Box::new(m.clone()), pw)
    }

    #[test]
    fn passwords_open_it_and_wrong_ones_are_named() {
        let (r, m) = fresh();
        assert!(reopen(&m, b"pw").is_ok());
        match reopen(&m, b"nope") {
            Err(Error::WrongPassword { url, keys }) => {
                assert_eq!(url, "mem://");
                assert_eq!(keys, 1);
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("opened with a wrong password"),
        }
        let id = r
            .add_key(b"second", KdfParams::FAST_FOR_TESTS)
            .expect("add");
        let again = reopen(&m, b"second").expect("second password");
        let keys = again.list_keys().expect("list");
        assert_eq!(keys.len(), 2);
        assert!(keys.iter().any(|k| k.current && k.id == id));
        // The key in use is never removed; another one is.
        assert!(again.remove_key(&id[..8]).is_err());
        assert!(again.remove_key(&r.key_id()[..8]).is_ok());
        assert!(matches!(
            reopen(&m, b"pw"),
            Err(Error::WrongPassword { .. })
        ));
    }

    #[test]
    fn only_data_packs_are_written_as_data_packs() {
        // Data packs may go to a cold storage class; tree packs, indexes,
        // commits, keys and the config must not.
        let (r, m) = fresh();
        let mut names = Vec::new();
        for (kind, what) in [(PackKind::Data, b"content"), (PackKind::Tree, b"treeish")] {
            let mut w = PackWriter::new(kind);
            let id = r.key().id(Domain::Chunk, what);
            w.push(seal_blob(r.key(), BlobKind::Data, id, None, what, true).expect("seal"));
            let p = w.finish(r.key()).expect("finish");
            names.push(pack_path(kind, &p.name));
            let listed = r.put_pack(p).expect("put");
            r.put_index(&IndexFile {
                packs: vec![listed],
            })
            .expect("index");
        }
        assert_eq!(m.data_pack_puts(), [names[0].clone()]);
        assert!(m.objects().contains_key(&names[1]));
    }

    #[test]
    fn blobs_are_found_through_the_index_and_damage_is_named() {
        let (r, m) = fresh();
        let mut w = PackWriter::new(PackKind::Data);
        let id = r.key().id(Domain::Chunk, b"hello");
        w.push(seal_blob(r.key(), BlobKind::Data, id, None, b"hello", true).expect("seal"));
        let p = w.finish(r.key()).expect("finish");
        let (name, kind, len, entries) = (p.name, p.kind, p.bytes.len() as u64, p.entries.clone());
        let listed = r.put_pack(p).expect("put");
        assert_eq!((listed.name, listed.kind, listed.len), (name, kind, len));
        assert_eq!(
            r.read_blob(&id).expect("read"),
            None,
            "no index lists it yet"
        );
        r.put_index(&IndexFile {
            packs: vec![listed],
        })
        .expect("index");
        r.forget_index();
        assert_eq!(
            r.read_blob(&id).expect("read"),
            Some((BlobKind::Data, b"hello".to_vec()))
        );
        // A pack rebuilds its index entry: its header and its blobs.
        let rebuilt = r
            .read_pack_entries(&pack_path(kind, &name), len)
            .expect("header");
        assert_eq!(rebuilt, (kind, entries));
        // A flipped byte in the blob: damage, named with the pack.
        let path = pack_path(kind, &name);
        m.objects().get_mut(&path).expect("pack")[30] ^= 1;
        let fresh = reopen(&m, b"pw").expect("open");
        match fresh.read_blob(&id) {
            Err(Error::RemoteDamaged { what, .. }) => assert!(what.contains(&path), "{what}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_damaged_index_file_hides_only_its_packs() {
        let (r, m) = fresh();
        r.put_index(&IndexFile::default()).expect("index");
        let names: Vec<String> = m
            .objects()
            .keys()
            .filter(|k| k.starts_with(INDEX))
            .cloned()
            .collect();
        let last = m
            .objects()
            .get_mut(&names[0])
            .map(|v| v.len())
            .expect("index file");
        m.objects()
            .get_mut(&names[0])
            .expect("index file")
            .truncate(last - 3);
        let again = reopen(&m, b"pw").expect("open");
        assert_eq!(again.index().expect("index").blob_count(), 0);
    }

    #[test]
    fn a_cached_reader_gets_only_what_changed_and_follows_a_rewritten_commit() {
        let (r, m) = fresh();
        let t = tempfile::tempdir().expect("tempdir");
        let cached = |pw: &[u8]| -> RemoteRepo {
            let c = reopen(&m, pw).expect("open");
            c.use_cache(t.path());
            c
        };
        let record = b"trvS\x01a snapshot record".to_vec();
        let id = SnapshotId(hash_bytes(HashAlgo::Blake3, &record[5..]));
        r.use_cache(t.path());
        r.put_commit(
            &id,
            &Commit {
                record: record.clone(),
                missing: Vec::new(),
            },
        )
        .expect("commit");
        r.put_index(&IndexFile::default()).expect("index");
        // Written through: another command reads both without a GET.
        let second = cached(b"pw");
        let before = m.stats().get;
        assert_eq!(second.index().expect("index").blob_count(), 0);
        let c = second.commit(&id).expect("read").expect("commit");
        assert!(c.missing.is_empty());
        assert_eq!(m.stats().get, before);
        assert_eq!(second.cache_stats().map(|s| s.hits), Some(2));
        // Forgotten by a prune and pushed again from elsewhere, with
        // another missing list: the next reader sees the new commit.
        let elsewhere = reopen(&m, b"pw").expect("open");
        let path = commit_path(&elsewhere.commit_name(&id));
        elsewhere.delete(&path).expect("delete");
        elsewhere
            .put_commit(
                &id,
                &Commit {
                    record,
                    missing: vec![[9; 32]],
                },
            )
            .expect("commit again");
        let third = cached(b"pw");
        let c = third.commit(&id).expect("read").expect("commit");
        assert_eq!(c.missing, vec![[9; 32]]);
        // And a delete through a cached repository leaves no entry.
        third.delete(&path).expect("delete");
        let fourth = cached(b"pw");
        assert!(fourth.commit(&id).expect("read").is_none());
        let dir = third.cache_stats().expect("cached").dir;
        assert!(!dir.join(&path).exists(), "{path} left the cache");
        assert!(dir.join(INDEX).is_dir());
    }

    #[test]
    fn a_newer_remote_is_named_before_any_password_is_tried() {
        let (_r, m) = fresh();
        m.objects().get_mut(CONFIG).expect("config")[4] = 9;
        match reopen(&m, b"wrong password too") {
            Err(Error::RemoteVersion { found, .. }) => assert_eq!(found, 9),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("opened a newer remote"),
        }
    }
}
