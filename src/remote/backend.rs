//! Where a remote's bytes live: named objects in an S3 bucket or a folder,
//! reached through opendal. Whole-object puts (never conditional: names
//! are content-addressed or written once), gets, ranged gets, listing,
//! deletes; retries with backoff on timeouts, 5xx and SlowDown; bounded
//! concurrency; a count of every request by kind and of the bytes moved.
//! Knows nothing of the format above it.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use super::objlock::{LockMode, Retention};

mod s3lock;

/// The error of an object-lock request to a store that has none.
fn no_object_lock(url: &str) -> BackendError {
    BackendError::Config {
        detail: format!(
            "{url} has no S3 Object Lock (only an S3 bucket created with object lock has)"
        ),
    }
}

/// What went wrong talking to the store, classified for the message and
/// the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// No object by that name.
    NotFound { path: String },
    /// The credentials were refused (or are missing).
    Denied { detail: String },
    /// The bucket (or folder) does not exist.
    NoBucket { detail: String },
    /// The endpoint could not be reached, or kept failing after retries.
    Unreachable { detail: String },
    /// The URL or settings are unusable.
    Config { detail: String },
    /// Anything else the store said.
    Other { detail: String },
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::NotFound { path } => write!(f, "{path}: no such object"),
            BackendError::Denied { detail } => write!(f, "access denied: {detail}"),
            BackendError::NoBucket { detail } => write!(f, "no such bucket: {detail}"),
            BackendError::Unreachable { detail } => write!(f, "unreachable: {detail}"),
            BackendError::Config { detail } => write!(f, "bad remote settings: {detail}"),
            BackendError::Other { detail } => write!(f, "{detail}"),
        }
    }
}

impl std::error::Error for BackendError {}

pub type BackendResult<T> = std::result::Result<T, BackendError>;

/// Requests made and bytes moved, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestStats {
    pub put: u64,
    pub get: u64,
    pub list: u64,
    pub delete: u64,
    pub head: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// One listed object: its path relative to the remote's root and its size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub path: String,
    pub size: u64,
}

/// A store of named byte strings. Paths are relative to the remote's root
/// (`config`, `keys/<id>`, `data/ab/<hex>` …), `/`-separated. All methods
/// may be called from several threads at once.
pub trait Backend: Send + Sync {
    /// The remote's URL, for messages (`s3://bucket/prefix`, `file:///path`).
    fn url(&self) -> &str;
    /// Store `data` under `path`, replacing nothing a reader could see
    /// half-written (a folder writes a temporary file, syncs it and renames it).
    fn put(&self, path: &str, data: &[u8]) -> BackendResult<()>;
    /// `put` of bytes the caller gives up: a store that sends them from
    /// memory takes them without a copy (a pack is 16 MiB or more).
    fn put_owned(&self, path: &str, data: Vec<u8>) -> BackendResult<()> {
        self.put(path, &data)
    }
    /// `put_owned` of a data pack: the one kind of object an S3 store
    /// writes in the remote's data storage class
    /// ([`S3Settings::data_storage_class`]); every other object stays in
    /// the standard class, as restore needs it at once.
    fn put_data_pack(&self, path: &str, data: Vec<u8>) -> BackendResult<()> {
        self.put_owned(path, data)
    }
    fn get(&self, path: &str) -> BackendResult<Vec<u8>>;
    /// `len` bytes from `offset` (fewer only at the end of the object).
    fn get_range(&self, path: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>>;
    /// The object's size, `None` when absent (a HEAD).
    fn size(&self, path: &str) -> BackendResult<Option<u64>>;
    /// Every object under the folder `dir` (e.g. `"data/"`), recursively,
    /// sorted by path.
    fn list(&self, dir: &str) -> BackendResult<Vec<Listed>>;
    /// Remove `path` (absent is not an error).
    fn delete(&self, path: &str) -> BackendResult<()>;
    /// Whether the bucket or folder exists at all (`remote init` and
    /// every open check this first, to name a missing bucket as such).
    fn check_reachable(&self) -> BackendResult<()>;
    fn stats(&self) -> RequestStats;
    /// Whether the store has S3 Object Lock enabled (the bucket's
    /// GetObjectLockConfiguration). A folder or memory store has none.
    fn object_lock_enabled(&self) -> BackendResult<bool> {
        Ok(false)
    }
    /// `put_owned` (`put_data_pack` when `data_pack`) with S3 Object Lock
    /// retention set by the same request, so the object is never stored
    /// unlocked. Refused by a store without object lock.
    fn put_retained(
        &self,
        path: &str,
        data: Vec<u8>,
        data_pack: bool,
        r: Retention,
    ) -> BackendResult<()> {
        let _ = (path, data, data_pack, r);
        Err(no_object_lock(self.url()))
    }
    /// The object's retention (a HEAD); `None`: none, or no such object.
    fn retention(&self, path: &str) -> BackendResult<Option<Retention>> {
        let _ = path;
        Ok(None)
    }
    /// Set the retention of the object's current version (S3
    /// PutObjectRetention; a COMPLIANCE date can only move later).
    fn set_retention(&self, path: &str, r: Retention) -> BackendResult<()> {
        let _ = (path, r);
        Err(no_object_lock(self.url()))
    }
    /// Requests the store repeated after a temporary failure (timeouts,
    /// 5xx, SlowDown); not part of [`RequestStats`], whose counts are of
    /// the logical requests.
    fn retries(&self) -> u64 {
        0
    }
}

/// Open the store a URL names: `s3://BUCKET[/PREFIX]` (credentials,
/// region and endpoint from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_REGION`, `AWS_ENDPOINT_URL` and the AWS profile files) or
/// `file:///PATH`. For `file://`, `create` makes the folder (init only).
pub fn open(url: &str, create: bool) -> BackendResult<Box<dyn Backend>> {
    open_with(url, create, &S3Settings::from_env())
}

/// An in-memory store for unit tests, counting requests like the real ones.
/// Clones share the store (as two commands share a bucket).
#[derive(Clone, Default)]
pub struct MemBackend {
    objects: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>>,
    stats: std::sync::Arc<std::sync::Mutex<RequestStats>>,
    /// The paths written by `put_data_pack` (a real store would give them
    /// the data storage class).
    data_packs: Arc<Mutex<Vec<String>>>,
    /// Object lock, as a bucket created with it: the retention of each
    /// object (`None`: the store has no object lock).
    locks: Arc<Mutex<Option<BTreeMap<String, Retention>>>>,
}

impl MemBackend {
    pub fn new() -> MemBackend {
        MemBackend::default()
    }

    /// A store with object lock enabled. Stricter than S3 on one point: a
    /// delete of a locked object is refused (S3 on a versioned bucket
    /// hides it behind a delete marker and keeps the locked version).
    pub fn with_object_lock() -> MemBackend {
        let m = MemBackend::default();
        *lock(&m.locks) = Some(BTreeMap::new());
        m
    }

    /// The retention of every locked object, for tests.
    pub fn retentions(&self) -> BTreeMap<String, Retention> {
        lock(&self.locks).clone().unwrap_or_default()
    }

    /// Set a retention behind the rules and the counters, as the passing
    /// of time would make a lock short (tests).
    pub fn force_retention(&self, path: &str, r: Retention) {
        if let Some(l) = lock(&self.locks).as_mut() {
            l.insert(path.to_string(), r);
        }
    }

    /// The stored objects, for tests that damage, drop or inspect them
    /// behind the counters' back.
    pub fn objects(&self) -> MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        lock(&self.objects)
    }

    fn count(&self, f: impl FnOnce(&mut RequestStats)) {
        f(&mut lock(&self.stats));
    }

    /// The paths put as data packs, in order.
    pub fn data_pack_puts(&self) -> Vec<String> {
        lock(&self.data_packs).clone()
    }
}

/// A poisoned lock still guards consistent data here (every critical
/// section is a single map or counter update).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Backend for MemBackend {
    fn url(&self) -> &str {
        "mem://"
    }

    fn put(&self, path: &str, data: &[u8]) -> BackendResult<()> {
        check_path(path)?;
        self.count(|s| {
            s.put += 1;
            s.bytes_up += data.len() as u64;
        });
        self.objects().insert(path.to_string(), data.to_vec());
        Ok(())
    }

    fn put_data_pack(&self, path: &str, data: Vec<u8>) -> BackendResult<()> {
        self.put_owned(path, data)?;
        lock(&self.data_packs).push(path.to_string());
        Ok(())
    }

    fn get(&self, path: &str) -> BackendResult<Vec<u8>> {
        self.count(|s| s.get += 1);
        let data = self
            .objects()
            .get(path)
            .cloned()
            .ok_or_else(|| not_found(path))?;
        self.count(|s| s.bytes_down += data.len() as u64);
        Ok(data)
    }

    fn get_range(&self, path: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        self.count(|s| s.get += 1);
        let data = {
            let objects = self.objects();
            let all = objects.get(path).ok_or_else(|| not_found(path))?;
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(all.len());
            let end = usize::try_from(offset.saturating_add(len))
                .unwrap_or(usize::MAX)
                .min(all.len());
            all[start..end].to_vec()
        };
        self.count(|s| s.bytes_down += data.len() as u64);
        Ok(data)
    }

    fn size(&self, path: &str) -> BackendResult<Option<u64>> {
        self.count(|s| s.head += 1);
        Ok(self.objects().get(path).map(|d| d.len() as u64))
    }

    fn list(&self, dir: &str) -> BackendResult<Vec<Listed>> {
        self.count(|s| s.list += 1);
        let prefix = dir_prefix(dir);
        Ok(self
            .objects()
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| Listed {
                path: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }

    fn delete(&self, path: &str) -> BackendResult<()> {
        self.count(|s| s.delete += 1);
        if let Some(r) = lock(&self.locks).as_ref().and_then(|l| l.get(path)) {
            if r.until > jiff::Timestamp::now() {
                return Err(BackendError::Denied {
                    detail: format!("{path} is locked until {}", r.until),
                });
            }
        }
        self.objects().remove(path);
        Ok(())
    }

    fn check_reachable(&self) -> BackendResult<()> {
        self.count(|s| s.list += 1);
        Ok(())
    }

    fn stats(&self) -> RequestStats {
        *lock(&self.stats)
    }

    fn object_lock_enabled(&self) -> BackendResult<bool> {
        self.count(|s| s.get += 1);
        Ok(lock(&self.locks).is_some())
    }

    fn put_retained(
        &self,
        path: &str,
        data: Vec<u8>,
        data_pack: bool,
        r: Retention,
    ) -> BackendResult<()> {
        if lock(&self.locks).is_none() {
            return Err(no_object_lock(self.url()));
        }
        if data_pack {
            self.put_data_pack(path, data)?;
        } else {
            self.put_owned(path, data)?;
        }
        if let Some(l) = lock(&self.locks).as_mut() {
            l.insert(path.to_string(), r);
        }
        Ok(())
    }

    fn retention(&self, path: &str) -> BackendResult<Option<Retention>> {
        self.count(|s| s.head += 1);
        if !self.objects().contains_key(path) {
            return Ok(None);
        }
        Ok(lock(&self.locks)
            .as_ref()
            .and_then(|l| l.get(path).copied()))
    }

    fn set_retention(&self, path: &str, r: Retention) -> BackendResult<()> {
        self.count(|s| s.put += 1);
        if !self.objects().contains_key(path) {
            return Err(not_found(path));
        }
        let mut locks = lock(&self.locks);
        let Some(l) = locks.as_mut() else {
            return Err(no_object_lock("mem://"));
        };
        if let Some(old) = l.get(path) {
            if old.mode == LockMode::Compliance && r.until < old.until {
                return Err(BackendError::Denied {
                    detail: format!("{path}: a COMPLIANCE retention cannot be shortened"),
                });
            }
        }
        l.insert(path.to_string(), r);
        Ok(())
    }
}

fn not_found(path: &str) -> BackendError {
    BackendError::NotFound {
        path: path.to_string(),
    }
}

/// `dir` as a listing prefix: `""` (everything) or ending in `/`.
fn dir_prefix(dir: &str) -> String {
    let dir = dir.trim_start_matches('/');
    if dir.is_empty() || dir.ends_with('/') {
        dir.to_string()
    } else {
        format!("{dir}/")
    }
}

/// Names a folder writer's temporary files start with; never a remote
/// object's, so a listing can skip what a killed writer left.
const TMP_PREFIX: &str = ".trove-tmp.";

/// An object path: relative, `/`-separated, no empty, `.` or `..`
/// component (a folder store must not be led outside its root), and not
/// a temporary file's name.
fn check_path(path: &str) -> BackendResult<()> {
    let bad = path.is_empty()
        || path.contains('\0')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".." || c.starts_with(TMP_PREFIX));
    if bad {
        return Err(BackendError::Config {
            detail: format!("invalid object path {path:?}"),
        });
    }
    Ok(())
}

/// Request counters shared by the real backends (and the retry hook).
#[derive(Default)]
struct Counters {
    put: AtomicU64,
    get: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
    head: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    retries: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> RequestStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RequestStats {
            put: g(&self.put),
            get: g(&self.get),
            list: g(&self.list),
            delete: g(&self.delete),
            head: g(&self.head),
            bytes_up: g(&self.bytes_up),
            bytes_down: g(&self.bytes_down),
        }
    }
}

/// How to reach and talk to S3: credentials, region and endpoint (from
/// the environment unless a caller sets them), and the retry, timeout and
/// concurrency numbers.
#[derive(Clone)]
pub struct S3Settings {
    /// `AWS_ENDPOINT_URL`: an S3-compatible server (`http://127.0.0.1:8333`).
    pub endpoint: Option<String>,
    /// `AWS_REGION` or `AWS_DEFAULT_REGION`; `us-east-1` when an endpoint
    /// is set without one.
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// `AWS_PROFILE`: the section of `~/.aws/credentials` and `~/.aws/config`.
    pub profile: Option<String>,
    /// Repeats of a request that failed temporarily (timeout, 5xx, SlowDown).
    pub retries: usize,
    /// First backoff; doubles (with jitter) up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Limit for one non-I/O request (HEAD, DELETE, LIST page).
    pub timeout: Duration,
    /// Limit for each I/O step of a read or write (no progress for this long).
    pub io_timeout: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// The `x-amz-storage-class` data packs are written with (one of
    /// [`STORAGE_CLASSES`]); `None`: the bucket's default.
    pub data_storage_class: Option<String>,
}

pub use crate::config::{check_storage_class, STORAGE_CLASSES};

impl Default for S3Settings {
    fn default() -> S3Settings {
        S3Settings {
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            profile: None,
            retries: 4,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
            io_timeout: Duration::from_secs(60),
            concurrency: 8,
            data_storage_class: None,
        }
    }
}

impl S3Settings {
    /// The settings the `AWS_*` environment variables give.
    pub fn from_env() -> S3Settings {
        S3Settings::from_vars(|k| std::env::var(k).ok())
    }

    /// The settings these variables give (`var("AWS_REGION")` …); empty
    /// values count as unset.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> S3Settings {
        let get = |k: &str| var(k).filter(|v| !v.is_empty());
        S3Settings {
            endpoint: get("AWS_ENDPOINT_URL"),
            region: get("AWS_REGION").or_else(|| get("AWS_DEFAULT_REGION")),
            access_key_id: get("AWS_ACCESS_KEY_ID"),
            secret_access_key: get("AWS_SECRET_ACCESS_KEY"),
            session_token: get("AWS_SESSION_TOKEN"),
            profile: get("AWS_PROFILE"),
            ..S3Settings::default()
        }
    }
}

/// A parsed remote URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteUrl {
    S3 { bucket: String, prefix: String },
    File { root: PathBuf },
}

const URL_FORMS: &str = "s3://BUCKET[/PREFIX] or file:///ABSOLUTE/PATH";

impl RemoteUrl {
    pub fn parse(url: &str) -> BackendResult<RemoteUrl> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(BackendError::Config {
                    detail: format!("{url:?} names no bucket (expected {URL_FORMS})"),
                });
            }
            let prefix = prefix.trim_matches('/');
            if !prefix.is_empty() {
                check_path(prefix).map_err(|_| BackendError::Config {
                    detail: format!("{url:?}: invalid prefix (expected {URL_FORMS})"),
                })?;
            }
            return Ok(RemoteUrl::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        if let Some(rest) = url.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(BackendError::Config {
                    detail: format!("{url:?} is not an absolute local path (expected {URL_FORMS})"),
                });
            }
            return Ok(RemoteUrl::File {
                root: PathBuf::from(rest),
            });
        }
        Err(BackendError::Config {
            detail: format!("unsupported remote URL {url:?} (expected {URL_FORMS})"),
        })
    }
}

/// [`open`] with explicit S3 settings instead of the environment's.
pub fn open_with(url: &str, create: bool, s3: &S3Settings) -> BackendResult<Box<dyn Backend>> {
    match RemoteUrl::parse(url)? {
        RemoteUrl::S3 { bucket, prefix } => Ok(Box::new(S3Backend::open(&bucket, &prefix, s3)?)),
        RemoteUrl::File { root } => {
            if let Some(class) = &s3.data_storage_class {
                tracing::debug!(
                    "{url}: a folder has no storage classes; data storage class {class} ignored"
                );
            }
            Ok(Box::new(FsBackend::open(&root, create)?))
        }
    }
}

// ---------------------------------------------------------------- folder

/// A remote in a local folder (`file:///path`): one file per object,
/// written atomically and durably.
pub struct FsBackend {
    root: PathBuf,
    url: String,
    counters: Counters,
    seq: AtomicU64,
}

fn io_error(path: &str, e: &io::Error) -> BackendError {
    match e.kind() {
        io::ErrorKind::NotFound => not_found(path),
        io::ErrorKind::PermissionDenied => BackendError::Denied {
            detail: format!("{path}: {e}"),
        },
        _ => BackendError::Other {
            detail: format!("{path}: {e}"),
        },
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl FsBackend {
    /// The folder store at `root`; `create` makes the folder (with its
    /// parents), otherwise a missing folder is [`BackendError::NoBucket`].
    pub fn open(root: &Path, create: bool) -> BackendResult<FsBackend> {
        let url = format!("file://{}", root.display());
        if create {
            fs::create_dir_all(root).map_err(|e| BackendError::Other {
                detail: format!("cannot create {}: {e}", root.display()),
            })?;
            if let Some(parent) = root.parent() {
                sync_dir(parent).map_err(|e| io_error(&parent.display().to_string(), &e))?;
            }
        }
        let b = FsBackend {
            root: root.to_path_buf(),
            url,
            counters: Counters::default(),
            seq: AtomicU64::new(0),
        };
        b.check_root()?;
        Ok(b)
    }

    fn check_root(&self) -> BackendResult<()> {
        match fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(BackendError::NoBucket {
                detail: format!("{} is not a folder", self.root.display()),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BackendError::NoBucket {
                detail: format!("no remote repository folder at {}", self.root.display()),
            }),
            Err(e) => Err(io_error(&self.root.display().to_string(), &e)),
        }
    }

    /// Make `dir` (under the root) and sync every folder that gained an
    /// entry, so the object's name survives a crash with its bytes.
    fn make_dirs(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            if parent.starts_with(&self.root) && parent != self.root {
                self.make_dirs(parent)?;
            }
            match fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
                Err(e) => return Err(e),
            }
            sync_dir(parent)?;
        }
        Ok(())
    }

    fn write_atomic(&self, target: &Path, data: &[u8]) -> io::Result<()> {
        let dir = target.parent().unwrap_or(&self.root);
        self.make_dirs(dir)?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(
            "{TMP_PREFIX}{}.{}.{name}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, target)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        sync_dir(dir)
    }

    fn walk(&self, dir: &Path, rel: &str, out: &mut Vec<Listed>) -> io::Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue; // not a name this store writes
            };
            if name.starts_with(TMP_PREFIX) {
                continue;
            }
            let path = format!("{rel}{name}");
            let ft = entry.file_type()?;
            if ft.is_dir() {
                self.walk(&entry.path(), &format!("{path}/"), out)?;
            } else if ft.is_file() {
                let size = entry.metadata()?.len();
                out.push(Listed { path, size });
            }
        }
        Ok(())
    }
}

impl Backend for FsBackend {
    fn url(&self) -> &str {
        &self.url
    }

    fn put(&self, path: &str, data: &[u8]) -> BackendResult<()> {
        check_path(path)?;
        Counters::add(&self.counters.put, 1);
        self.write_atomic(&self.root.join(path), data)
            .map_err(|e| io_error(path, &e))?;
        Counters::add(&self.counters.bytes_up, data.len() as u64);
        Ok(())
    }

    fn get(&self, path: &str) -> BackendResult<Vec<u8>> {
        check_path(path)?;
        Counters::add(&self.counters.get, 1);
        let data = fs::read(self.root.join(path)).map_err(|e| io_error(path, &e))?;
        Counters::add(&self.counters.bytes_down, data.len() as u64);
        Ok(data)
    }

    fn get_range(&self, path: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        check_path(path)?;
        Counters::add(&self.counters.get, 1);
        let read = || -> io::Result<Vec<u8>> {
            let mut f = File::open(self.root.join(path))?;
            f.seek(SeekFrom::Start(offset))?;
            let mut out = Vec::new();
            f.take(len).read_to_end(&mut out)?;
            Ok(out)
        };
        let data = read().map_err(|e| io_error(path, &e))?;
        Counters::add(&self.counters.bytes_down, data.len() as u64);
        Ok(data)
    }

    fn size(&self, path: &str) -> BackendResult<Option<u64>> {
        check_path(path)?;
        Counters::add(&self.counters.head, 1);
        match fs::metadata(self.root.join(path)) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(path, &e)),
        }
    }

    fn list(&self, dir: &str) -> BackendResult<Vec<Listed>> {
        let prefix = dir_prefix(dir);
        if !prefix.is_empty() {
            check_path(prefix.trim_end_matches('/'))?;
        }
        Counters::add(&self.counters.list, 1);
        let mut out = Vec::new();
        self.walk(&self.root.join(&prefix), &prefix, &mut out)
            .map_err(|e| io_error(dir, &e))?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn delete(&self, path: &str) -> BackendResult<()> {
        check_path(path)?;
        Counters::add(&self.counters.delete, 1);
        let target = self.root.join(path);
        match fs::remove_file(&target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(path, &e)),
        }
        let dir = target.parent().unwrap_or(&self.root);
        sync_dir(dir).map_err(|e| io_error(path, &e))
    }

    fn check_reachable(&self) -> BackendResult<()> {
        Counters::add(&self.counters.head, 1);
        self.check_root()
    }

    fn stats(&self) -> RequestStats {
        self.counters.snapshot()
    }
}

// ---------------------------------------------------------------- S3

/// A remote in an S3 bucket, through opendal's blocking operator over its
/// async one, driven by a tokio runtime this backend owns.
pub struct S3Backend {
    url: String,
    op: opendal::blocking::Operator,
    /// The operator data packs are written with when they have their own
    /// storage class (opendal 0.59 sets the class per operator only).
    data_op: Option<opendal::blocking::Operator>,
    /// The data storage class, for the object-lock puts made without opendal.
    data_class: Option<String>,
    /// The signed requests of S3 Object Lock (opendal 0.59 sends no lock
    /// headers); made only on a remote with a lock period.
    lock: s3lock::LockClient,
    counters: Arc<Counters>,
    // Dropped after `op` (fields drop in order): the operator's tasks run on it.
    runtime: tokio::runtime::Runtime,
}

/// The error's text with every source's, so that a refused connection
/// or the server's own message is in the detail.
fn error_detail(e: &opendal::Error) -> String {
    let mut detail = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let m = s.to_string();
        if !detail.contains(&m) {
            detail.push_str(": ");
            detail.push_str(&m);
        }
        src = s.source();
    }
    detail
}

/// An error of the one-key LIST that asks whether the bucket is there:
/// a LIST of the bucket's root finds no object missing, so a bare 404
/// (SeaweedFS answers one, without NoSuchBucket, for a bucket made a
/// moment before) means the bucket, not ": no such object".
fn listing_error(e: &opendal::Error) -> BackendError {
    match classify(e, "") {
        BackendError::NotFound { .. } => BackendError::NoBucket {
            detail: error_detail(e),
        },
        other => other,
    }
}

/// Sort an opendal error into the kinds the commands report.
fn classify(e: &opendal::Error, path: &str) -> BackendError {
    use opendal::ErrorKind as K;
    let detail = error_detail(e);
    let lower = detail.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    if has(&["nosuchbucket"]) {
        return BackendError::NoBucket { detail };
    }
    match e.kind() {
        K::NotFound => not_found(path),
        K::PermissionDenied => BackendError::Denied { detail },
        _ if has(&[
            "invalidaccesskeyid",
            "signaturedoesnotmatch",
            "accessdenied",
            "no valid credential",
            "signing credential",
            "status: 403",
        ]) =>
        {
            BackendError::Denied { detail }
        }
        K::ConfigInvalid => BackendError::Config { detail },
        _ if e.is_temporary()
            || e.is_persistent()
            || has(&[
                "connection refused",
                "error sending request",
                "dns error",
                "failed to lookup address",
                "timed out",
                "timeout",
                "connection reset",
            ]) =>
        {
            BackendError::Unreachable { detail }
        }
        _ => BackendError::Other { detail },
    }
}

impl S3Backend {
    pub fn open(bucket: &str, prefix: &str, s: &S3Settings) -> BackendResult<S3Backend> {
        let url = if prefix.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        };
        let config = |detail: String| BackendError::Config { detail };
        let region = match (&s.region, &s.endpoint) {
            (Some(r), _) => r.clone(),
            (None, Some(_)) => "us-east-1".to_string(),
            (None, None) => {
                return Err(config(format!(
                    "{url}: no region; set AWS_REGION (or AWS_ENDPOINT_URL for an S3-compatible server)"
                )))
            }
        };
        // The reqwest transport, installed once per process (the first wins).
        opendal::install_default();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("trove-s3")
            .enable_all()
            .build()
            .map_err(|e| BackendError::Other {
                detail: format!("cannot start the S3 client's runtime: {e}"),
            })?;
        let counters = Arc::new(Counters::default());
        let op = Self::operator(bucket, prefix, &region, s, None, &counters, &runtime)?;
        let data_op = match &s.data_storage_class {
            Some(class) => {
                check_storage_class(class)
                    .map_err(|e| config(format!("{url}: data storage class: {e}")))?;
                Some(Self::operator(
                    bucket,
                    prefix,
                    &region,
                    s,
                    Some(class),
                    &counters,
                    &runtime,
                )?)
            }
            None => None,
        };
        let lock = s3lock::LockClient::new(bucket, prefix, &region, s)?;
        Ok(S3Backend {
            url,
            op,
            data_op,
            data_class: s.data_storage_class.clone(),
            lock,
            counters,
            runtime,
        })
    }

    /// What an object-lock request calls at each repeat: the count the
    /// opendal requests' repeats go to.
    fn on_retry(&self) -> impl Fn() + Sync {
        let counters = Arc::clone(&self.counters);
        move || Counters::add(&counters.retries, 1)
    }

    /// One blocking operator on `runtime`, writing in `class` when given.
    fn operator(
        bucket: &str,
        prefix: &str,
        region: &str,
        s: &S3Settings,
        class: Option<&str>,
        counters: &Arc<Counters>,
        runtime: &tokio::runtime::Runtime,
    ) -> BackendResult<opendal::blocking::Operator> {
        use opendal::layers::{ConcurrentLimitLayer, RetryEvent, RetryLayer, TimeoutLayer};
        let mut b = opendal::services::S3::default()
            .bucket(bucket)
            .root(&format!("/{prefix}"))
            .region(region);
        if let Some(class) = class {
            b = b.default_storage_class(class);
        }
        if let Some(ep) = &s.endpoint {
            // An S3-compatible server: never the EC2 metadata service.
            b = b.endpoint(ep).disable_ec2_metadata();
        }
        if let (Some(ak), Some(sk)) = (&s.access_key_id, &s.secret_access_key) {
            b = b.access_key_id(ak).secret_access_key(sk);
            if let Some(t) = &s.session_token {
                b = b.session_token(t);
            }
        }
        if let Some(p) = &s.profile {
            b = b.profile(p);
        }
        let on_retry = Arc::clone(counters);
        let retry = RetryLayer::new()
            .with_max_times(s.retries)
            .with_min_delay(s.min_backoff)
            .with_max_delay(s.max_backoff)
            .with_factor(2.0)
            .with_jitter()
            .with_notify(move |_: RetryEvent<'_>| Counters::add(&on_retry.retries, 1));
        let op = opendal::Operator::new(b)
            .map_err(|e| classify(&e, ""))?
            // Each attempt has its own time limit; a timed-out attempt is
            // retried; queueing for a slot counts against neither.
            .layer(
                TimeoutLayer::new()
                    .with_timeout(s.timeout)
                    .with_io_timeout(s.io_timeout),
            )
            .layer(retry)
            .layer(ConcurrentLimitLayer::new(s.concurrency.max(1)));
        let _entered = runtime.enter();
        opendal::blocking::Operator::new(op).map_err(|e| classify(&e, ""))
    }
}

impl Backend for S3Backend {
    fn url(&self) -> &str {
        &self.url
    }

    fn put(&self, path: &str, data: &[u8]) -> BackendResult<()> {
        check_path(path)?;
        Counters::add(&self.counters.put, 1);
        self.op
            .write(path, data.to_vec())
            .map_err(|e| classify(&e, path))?;
        Counters::add(&self.counters.bytes_up, data.len() as u64);
        Ok(())
    }

    fn put_owned(&self, path: &str, data: Vec<u8>) -> BackendResult<()> {
        check_path(path)?;
        Counters::add(&self.counters.put, 1);
        let len = data.len() as u64;
        self.op.write(path, data).map_err(|e| classify(&e, path))?;
        Counters::add(&self.counters.bytes_up, len);
        Ok(())
    }

    fn put_data_pack(&self, path: &str, data: Vec<u8>) -> BackendResult<()> {
        let Some(op) = &self.data_op else {
            return self.put_owned(path, data);
        };
        check_path(path)?;
        Counters::add(&self.counters.put, 1);
        let len = data.len() as u64;
        op.write(path, data).map_err(|e| classify(&e, path))?;
        Counters::add(&self.counters.bytes_up, len);
        Ok(())
    }

    fn get(&self, path: &str) -> BackendResult<Vec<u8>> {
        check_path(path)?;
        Counters::add(&self.counters.get, 1);
        let data = self.op.read(path).map_err(|e| classify(&e, path))?.to_vec();
        Counters::add(&self.counters.bytes_down, data.len() as u64);
        Ok(data)
    }

    fn get_range(&self, path: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        check_path(path)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        Counters::add(&self.counters.get, 1);
        let opts = opendal::options::ReadOptions {
            range: (offset..offset.saturating_add(len)).into(),
            ..Default::default()
        };
        let data = match self.op.read_options(path, opts) {
            Ok(b) => b.to_vec(),
            // The object exists but ends before `offset`.
            Err(e) if e.kind() == opendal::ErrorKind::RangeNotSatisfied => Vec::new(),
            // The object ends inside the range: opendal refuses a body
            // shorter than the range asked, so ask again for the tail,
            // which is shorter than `len` (rare: a truncated object or a
            // read up to an end the caller did not know).
            Err(e) if e.message().contains("too little data") => {
                Counters::add(&self.counters.get, 1);
                let tail = opendal::options::ReadOptions {
                    range: (offset..).into(),
                    ..Default::default()
                };
                let mut data = self
                    .op
                    .read_options(path, tail)
                    .map_err(|e| classify(&e, path))?
                    .to_vec();
                data.truncate(usize::try_from(len).unwrap_or(usize::MAX));
                data
            }
            Err(e) => return Err(classify(&e, path)),
        };
        Counters::add(&self.counters.bytes_down, data.len() as u64);
        Ok(data)
    }

    fn size(&self, path: &str) -> BackendResult<Option<u64>> {
        check_path(path)?;
        Counters::add(&self.counters.head, 1);
        match self.op.stat(path) {
            Ok(m) => Ok(Some(m.content_length())),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(classify(&e, path)),
        }
    }

    fn list(&self, dir: &str) -> BackendResult<Vec<Listed>> {
        let prefix = dir_prefix(dir);
        if !prefix.is_empty() {
            check_path(prefix.trim_end_matches('/'))?;
        }
        Counters::add(&self.counters.list, 1);
        let opts = opendal::options::ListOptions {
            recursive: true,
            ..Default::default()
        };
        let at = if prefix.is_empty() { "/" } else { &prefix };
        let entries = match self.op.list_options(at, opts) {
            Ok(e) => e,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(classify(&e, dir)),
        };
        let mut out: Vec<Listed> = entries
            .into_iter()
            .filter(|e| e.metadata().is_file() && !e.path().ends_with('/'))
            .map(|e| Listed {
                path: e.path().trim_start_matches('/').to_string(),
                size: e.metadata().content_length(),
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn delete(&self, path: &str) -> BackendResult<()> {
        check_path(path)?;
        Counters::add(&self.counters.delete, 1);
        match self.op.delete(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(classify(&e, path)),
        }
    }

    /// One LIST of at most one key: a missing bucket says NoSuchBucket
    /// (a HEAD would only say 404), refused keys say 403.
    fn check_reachable(&self) -> BackendResult<()> {
        Counters::add(&self.counters.list, 1);
        let opts = opendal::options::ListOptions {
            limit: Some(1),
            ..Default::default()
        };
        let mut lister = self
            .op
            .lister_options("/", opts)
            .map_err(|e| listing_error(&e))?;
        match lister.next() {
            Some(Err(e)) => Err(listing_error(&e)),
            _ => Ok(()),
        }
    }

    fn stats(&self) -> RequestStats {
        self.counters.snapshot()
    }

    fn retries(&self) -> u64 {
        self.counters.retries.load(Ordering::Relaxed)
    }

    fn object_lock_enabled(&self) -> BackendResult<bool> {
        Counters::add(&self.counters.get, 1);
        let retried = self.on_retry();
        self.runtime.block_on(self.lock.lock_enabled(&retried))
    }

    fn put_retained(
        &self,
        path: &str,
        data: Vec<u8>,
        data_pack: bool,
        ret: Retention,
    ) -> BackendResult<()> {
        check_path(path)?;
        Counters::add(&self.counters.put, 1);
        let len = data.len() as u64;
        let class = if data_pack {
            self.data_class.as_deref()
        } else {
            None
        };
        let body = bytes::Bytes::from(data);
        let retried = self.on_retry();
        self.runtime
            .block_on(self.lock.put_locked(path, body, class, ret, &retried))?;
        Counters::add(&self.counters.bytes_up, len);
        Ok(())
    }

    fn retention(&self, path: &str) -> BackendResult<Option<Retention>> {
        check_path(path)?;
        Counters::add(&self.counters.head, 1);
        let retried = self.on_retry();
        self.runtime.block_on(self.lock.retention(path, &retried))
    }

    fn set_retention(&self, path: &str, ret: Retention) -> BackendResult<()> {
        check_path(path)?;
        Counters::add(&self.counters.put, 1);
        let retried = self.on_retry();
        self.runtime
            .block_on(self.lock.set_retention(path, ret, &retried))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The LIST that asks for the bucket: a bare 404 is a missing bucket
    /// (named as one, so the caller says which bucket to create), a
    /// refusal stays a refusal.
    #[test]
    fn a_404_to_the_bucket_listing_is_a_missing_bucket() {
        let e = opendal::Error::new(opendal::ErrorKind::NotFound, "status: 404");
        assert!(matches!(classify(&e, ""), BackendError::NotFound { .. }));
        assert!(
            matches!(listing_error(&e), BackendError::NoBucket { .. }),
            "{}",
            listing_error(&e)
        );
        let denied = opendal::Error::new(opendal::ErrorKind::PermissionDenied, "status: 403");
        assert!(matches!(
            listing_error(&denied),
            BackendError::Denied { .. }
        ));
    }

    type R = Result<(), Box<dyn std::error::Error>>;

    /// The contract every store keeps, run on each.
    fn round_trip(b: &dyn Backend) -> R {
        b.check_reachable()?;
        b.put("config", b"cfg")?;
        b.put("data/ab/abcd", b"0123456789")?;
        b.put("data/00/0011", b"xy")?;
        b.put("data/ab/ab01", b"")?;
        b.put("keys/k1", b"key")?;
        b.put("config", b"config2")?; // replaces
        assert_eq!(b.get("config")?, b"config2");
        assert_eq!(b.get_range("data/ab/abcd", 2, 3)?, b"234");
        assert_eq!(
            b.get_range("data/ab/abcd", 8, 5)?,
            b"89",
            "short only at the end"
        );
        assert_eq!(b.get_range("data/ab/abcd", 20, 5)?, b"");
        assert_eq!(b.size("data/ab/abcd")?, Some(10));
        assert_eq!(b.size("data/ab/ab01")?, Some(0));
        assert_eq!(b.size("nope")?, None);
        let listed = b.list("data/")?;
        let want = [
            ("data/00/0011", 2),
            ("data/ab/ab01", 0),
            ("data/ab/abcd", 10),
        ];
        let got: Vec<(&str, u64)> = listed.iter().map(|l| (l.path.as_str(), l.size)).collect();
        assert_eq!(got, want);
        assert_eq!(b.list("data")?, listed, "a folder without its slash");
        assert_eq!(b.list("missing/")?, Vec::new());
        let all: Vec<String> = b.list("")?.into_iter().map(|l| l.path).collect();
        assert_eq!(
            all,
            [
                "config",
                "data/00/0011",
                "data/ab/ab01",
                "data/ab/abcd",
                "keys/k1"
            ]
        );
        b.delete("data/ab/abcd")?;
        b.delete("data/ab/abcd")?; // absent is fine
        assert_eq!(
            b.get("data/ab/abcd"),
            Err(BackendError::NotFound {
                path: "data/ab/abcd".into()
            })
        );
        assert!(matches!(
            b.get_range("gone", 0, 1),
            Err(BackendError::NotFound { .. })
        ));
        assert!(matches!(
            b.put("../x", b""),
            Err(BackendError::Config { .. })
        ));
        assert!(matches!(
            b.put("a//b", b""),
            Err(BackendError::Config { .. })
        ));
        let st = b.stats();
        assert_eq!(st.put, 6);
        assert_eq!(st.bytes_up, 3 + 10 + 2 + 3 + 7); // the empty object adds none
        assert_eq!(st.get, 6);
        assert_eq!(st.bytes_down, 7 + 3 + 2);
        assert_eq!(st.head, 3 + u64::from(b.url().starts_with("file:")));
        assert_eq!(st.delete, 2);
        Ok(())
    }

    #[test]
    fn mem_backend_keeps_the_contract() -> R {
        let b = MemBackend::new();
        round_trip(&b)?;
        assert_eq!(b.url(), "mem://");
        b.objects().insert("config".into(), b"tampered".to_vec());
        assert_eq!(b.get("config")?, b"tampered");
        Ok(())
    }

    #[test]
    fn file_backend_keeps_the_contract() -> R {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("remote");
        let url = format!("file://{}", root.display());
        let b = open(&url, true)?;
        assert_eq!(b.url(), url);
        round_trip(b.as_ref())?;
        // No temporary file is left behind by the puts.
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d)? {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                assert!(!name.starts_with(TMP_PREFIX), "left {}", e.path().display());
                if e.file_type()?.is_dir() {
                    stack.push(e.path());
                }
            }
        }
        Ok(())
    }

    #[test]
    fn file_backend_hides_a_killed_writers_temporary_file() -> R {
        let dir = tempfile::tempdir()?;
        let b = FsBackend::open(dir.path(), false)?;
        b.put("data/ab/abcd", b"whole")?;
        fs::write(
            dir.path()
                .join("data/ab")
                .join(format!("{TMP_PREFIX}1.0.abce")),
            b"ha",
        )?;
        let names: Vec<String> = b.list("data/")?.into_iter().map(|l| l.path).collect();
        assert_eq!(names, ["data/ab/abcd"]);
        Ok(())
    }

    #[test]
    fn file_backend_without_create_needs_the_folder() -> R {
        let dir = tempfile::tempdir()?;
        let missing = dir.path().join("nothing-here");
        let url = format!("file://{}", missing.display());
        match open(&url, false) {
            Err(BackendError::NoBucket { detail }) => {
                assert!(
                    detail.contains("no remote repository folder at"),
                    "{detail}"
                );
                assert!(detail.contains("nothing-here"), "{detail}");
            }
            Err(e) => return Err(format!("wrong error {e}").into()),
            Ok(_) => return Err("opened a missing folder".into()),
        }
        assert!(!missing.exists());
        Ok(())
    }

    #[test]
    fn urls_are_parsed_or_refused_with_the_accepted_forms() -> R {
        assert_eq!(
            RemoteUrl::parse("s3://bkt/some/prefix/")?,
            RemoteUrl::S3 {
                bucket: "bkt".into(),
                prefix: "some/prefix".into()
            }
        );
        assert_eq!(
            RemoteUrl::parse("s3://bkt")?,
            RemoteUrl::S3 {
                bucket: "bkt".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            RemoteUrl::parse("file:///srv/remote")?,
            RemoteUrl::File {
                root: PathBuf::from("/srv/remote")
            }
        );
        for bad in [
            "s3://",
            "file://relative/x",
            "http://x/y",
            "/plain/path",
            "s3://b/../x",
        ] {
            match RemoteUrl::parse(bad) {
                Err(BackendError::Config { detail }) => {
                    assert!(detail.contains("s3://BUCKET[/PREFIX]"), "{bad}: {detail}")
                }
                other => return Err(format!("{bad}: {other:?}").into()),
            }
        }
        Ok(())
    }

    #[test]
    fn settings_come_from_the_aws_variables() {
        let vars = |k: &str| match k {
            "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:1".to_string()),
            "AWS_DEFAULT_REGION" => Some("eu-west-1".to_string()),
            "AWS_ACCESS_KEY_ID" => Some("ak".to_string()),
            "AWS_SESSION_TOKEN" => Some(String::new()),
            _ => None,
        };
        let s = S3Settings::from_vars(vars);
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s.access_key_id.as_deref(), Some("ak"));
        assert_eq!(s.session_token, None, "empty is unset");
        assert_eq!(s.retries, 4);
    }

    #[test]
    fn s3_without_region_or_endpoint_is_a_config_error() {
        let s = S3Settings::default();
        assert!(matches!(
            open_with("s3://bkt", false, &s),
            Err(BackendError::Config { .. })
        ));
    }

    #[test]
    fn errors_display_their_subject() {
        let e = BackendError::NotFound {
            path: "keys/k1".into(),
        };
        assert_eq!(e.to_string(), "keys/k1: no such object");
        let e = BackendError::NoBucket {
            detail: "NoSuchBucket: bkt".into(),
        };
        assert!(e.to_string().contains("bkt"));
    }
}
