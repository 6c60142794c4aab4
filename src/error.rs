//! The library's error type. Every variant that touches the filesystem
//! carries the path, and every message says what to do about it. Each
//! variant has one [`ErrorKind`] — a usage problem, the lock, a damaged
//! repository, a runtime failure or a bug in trove — which the CLI maps to
//! the exit codes of SPEC §5.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("config {path}: {msg}")]
    Config { path: PathBuf, msg: String },

    #[error("{0}")]
    Usage(String),

    #[error("{path} is not a trove repository (no .trove/config): run `trove init {path}` or check --repo")]
    NotARepository { path: PathBuf },

    #[error("repository config {path} is missing, yet {dir} holds a repository (snapshots or objects): the repository is damaged, and trove will not start a new one over it. Put the file back from a copy of the repository (its one line is described in docs/FORMAT.md, `.trove/config`), then run `trove verify`")]
    MissingConfig { path: PathBuf, dir: PathBuf },

    #[error("repository {path} was created with hash {repo}, but the configuration asks for {wanted}: the algorithm is fixed at creation; remove hash_algorithm from the config or use a new backup_root")]
    HashMismatch {
        path: PathBuf,
        repo: String,
        wanted: String,
    },

    #[error("repository is locked by another trove process ({path}): wait for it to finish, or pass --wait")]
    Locked { path: PathBuf },

    #[error("corrupt {what} {path}: {msg}; run `trove verify` to see the extent of the damage")]
    Corrupt {
        what: &'static str,
        path: PathBuf,
        msg: String,
    },

    #[error(
        "corrupt tree object {path}: {msg}; run `trove verify` to see the extent of the damage"
    )]
    Expansion { path: PathBuf, msg: String },

    #[error("missing {what} {id}: referenced by the repository but not present in {path}; run `trove verify`")]
    Missing {
        what: &'static str,
        id: String,
        path: PathBuf,
    },

    #[error("unsupported format version {found} in {path} (this trove reads versions up to {supported}): upgrade trove")]
    Version {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    #[error("no snapshot matches {0:?}: list them with `trove snapshots`")]
    NoSuchSnapshot(String),

    #[error("snapshot prefix {0:?} is ambiguous: give more hex digits")]
    AmbiguousSnapshot(String),

    #[error("snapshot record {path} is damaged ({reason}) and may be the newest snapshot, so `latest` cannot be resolved without skipping it: run `trove verify`; name an older snapshot explicitly (`trove snapshots` lists them) or put back the record from a copy of the repository; `trove backup --allow-damaged-latest` builds the next snapshot on the newest readable one")]
    DamagedLatest { path: PathBuf, reason: String },

    #[error("cannot {action} safely: snapshot record {path} is damaged ({reason}), and what it references is unknown. Nothing was changed; run `trove verify` and put back the record from a copy of the repository (or move it aside if it is beyond repair)")]
    DamagedRecord {
        action: &'static str,
        path: PathBuf,
        reason: String,
    },

    #[error("cannot {action} safely: {source}. Nothing was changed; run `trove verify` and repair the repository first")]
    Unsafe {
        action: &'static str,
        #[source]
        source: Box<Error>,
    },

    /// Reading a snapshot's trees failed: the error says which snapshot.
    #[error("reading snapshot {snapshot}: {source}")]
    InSnapshot {
        snapshot: String,
        #[source]
        source: Box<Error>,
    },

    #[error("repository folder {path} is missing: it holds {what}, so the repository is damaged. Put it back from a copy of the repository; `trove verify` names what is lost")]
    MissingFolder { path: PathBuf, what: &'static str },

    /// Garbage collection after a backup could not tell what the pinned
    /// snapshots keep, so it deleted nothing: the repository is damaged.
    #[error("garbage collection skipped, nothing deleted: what the pinned snapshots ({pinned}) keep cannot be read: {source}; run `trove verify`, and `trove prune` once the repository is repaired")]
    CollectionSkipped {
        pinned: PathBuf,
        #[source]
        source: Box<Error>,
    },

    /// Every name the quarantine tries for a damaged file is taken: a
    /// runtime failure the user clears by cleaning up, not a usage error.
    #[error("no free name in {dir} for {path}: clean up the quarantine folder")]
    QuarantineFull { dir: PathBuf, path: PathBuf },

    /// The filesystem watcher (notifications or polling) could not start:
    /// a runtime failure (out of file descriptors or inotify instances),
    /// nothing the arguments could fix.
    #[error("{0}")]
    Watcher(String),

    /// Encoding trove's own data failed (postcard or JSON of a struct this
    /// crate defines): a bug in trove, never the user's input.
    #[error("{0}")]
    Internal(String),

    #[error("stopped by --on-error fail: {0}")]
    Aborted(String),

    /// The command of `backup --stdin-from-command` failed: what it wrote
    /// may be incomplete, so no snapshot was recorded.
    #[error("command {command} {status}: no snapshot written (its output may be incomplete and is not kept). Fix the command (its own messages are above) and run the backup again")]
    ProducerFailed { command: String, status: String },

    /// `backup --stdin` read zero bytes.
    #[error("nothing arrived on {what} (zero bytes): no snapshot written. An empty stream is refused because a failed producer often writes nothing; to keep an empty file, create it in a source folder and run `trove backup`")]
    EmptyInput { what: String },

    /// A remote store refused or failed a request (after retries).
    #[error("remote {url}: cannot {action}: {detail}; {}", failure.advice())]
    Remote {
        url: String,
        action: String,
        failure: RemoteFailure,
        detail: String,
    },

    #[error("remote {url}: no key opens it with this password ({keys} key(s) tried): check TROVE_PASSWORD, TROVE_PASSWORD_FILE or --password-file")]
    WrongPassword { url: String, keys: usize },

    #[error("no trove remote at {url} (it has no config): create one with `trove remote init {url}`, or check the URL")]
    NotARemote { url: String },

    #[error("remote {url}: {what} is damaged: {detail}; run `trove verify --remote {url} --read-data` to see the extent, then `trove push --repair` from a repository that still holds the content")]
    RemoteDamaged {
        url: String,
        what: String,
        detail: String,
    },

    #[error("remote {url} is locked by another prune ({holder}): wait for it to finish; a lock not renewed for {stale_minutes} minutes is ignored, and `trove prune --remote {url} --unlock` removes it at once when you know that prune is dead")]
    RemoteLocked {
        url: String,
        holder: String,
        stale_minutes: u64,
    },

    #[error("remote {url} has format version {found} (this trove reads up to {supported}): upgrade trove")]
    RemoteVersion {
        url: String,
        found: u32,
        supported: u32,
    },
}

/// Why a request to a remote store failed, as far as it decides what the
/// user should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteFailure {
    /// The object is not there.
    NotFound,
    /// The credentials were refused or are missing.
    Denied,
    /// The bucket or folder does not exist.
    NoBucket,
    /// The endpoint could not be reached, or kept failing.
    Unreachable,
    /// The URL or settings are unusable.
    Config,
    /// Anything else the store said.
    Other,
}

impl RemoteFailure {
    fn advice(self) -> &'static str {
        match self {
            RemoteFailure::NotFound => "the remote is missing data it should hold: run `trove verify --remote`, then `trove push --repair` from a repository that still holds it",
            RemoteFailure::Denied => "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the AWS profile) and the bucket policy",
            RemoteFailure::NoBucket => "check the URL, or create the bucket first (`aws s3 mb s3://BUCKET`; `trove remote init file:///PATH` creates a folder)",
            RemoteFailure::Unreachable => "check AWS_ENDPOINT_URL and the network, then run the command again (a push resumes where it stopped)",
            RemoteFailure::Config => "check the remote URL (s3://BUCKET[/PREFIX] or file:///PATH)",
            RemoteFailure::Other => "run the command again; if it persists, check the server's logs",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What an error means for the caller, and so which exit code it gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The arguments or the config are wrong: the user's to fix (exit 2).
    Usage,
    /// Another trove process holds the repository lock (exit 3).
    Locked,
    /// The repository is damaged: missing, corrupt or unreadable records,
    /// trees or objects (exit 1; `trove verify` names the extent).
    Damaged,
    /// The command could not finish: I/O, the filesystem, resources
    /// (exit 1).
    Runtime,
    /// A bug in trove (exit 1).
    Internal,
}

impl Error {
    pub fn io(action: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Error {
        Error::Io {
            action,
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub fn config(path: impl AsRef<Path>, msg: impl Into<String>) -> Error {
        Error::Config {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    pub fn corrupt(what: &'static str, path: impl AsRef<Path>, msg: impl Into<String>) -> Error {
        Error::Corrupt {
            what,
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    /// What the error means; every variant is listed, so a new one has
    /// to say which exit code it gets.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config { .. }
            | Error::Usage(_)
            | Error::NotARepository { .. }
            | Error::HashMismatch { .. }
            | Error::NoSuchSnapshot(_)
            | Error::AmbiguousSnapshot(_)
            | Error::WrongPassword { .. }
            | Error::NotARemote { .. } => ErrorKind::Usage,
            Error::Remote { failure, .. } => match failure {
                RemoteFailure::Denied | RemoteFailure::NoBucket | RemoteFailure::Config => {
                    ErrorKind::Usage
                }
                RemoteFailure::NotFound => ErrorKind::Damaged,
                RemoteFailure::Unreachable | RemoteFailure::Other => ErrorKind::Runtime,
            },
            Error::RemoteDamaged { .. } => ErrorKind::Damaged,
            Error::RemoteVersion { .. } => ErrorKind::Runtime,
            Error::Locked { .. } | Error::RemoteLocked { .. } => ErrorKind::Locked,
            Error::MissingConfig { .. }
            | Error::Corrupt { .. }
            | Error::Expansion { .. }
            | Error::Missing { .. }
            | Error::DamagedLatest { .. }
            | Error::DamagedRecord { .. }
            | Error::Unsafe { .. }
            | Error::MissingFolder { .. }
            | Error::CollectionSkipped { .. } => ErrorKind::Damaged,
            Error::Io { .. }
            | Error::Version { .. }
            | Error::QuarantineFull { .. }
            | Error::Watcher(_)
            | Error::Aborted(_)
            | Error::ProducerFailed { .. }
            | Error::EmptyInput { .. } => ErrorKind::Runtime,
            Error::Internal(_) => ErrorKind::Internal,
            Error::InSnapshot { source, .. } => source.kind(),
        }
    }

    /// True for errors that are the user's to fix in arguments or config
    /// (exit code 2), as opposed to runtime failures.
    pub fn is_usage(&self) -> bool {
        self.kind() == ErrorKind::Usage
    }
}

/// Attach a path and an action to an `io::Result`.
pub trait IoContext<T> {
    fn ctx(self, action: &'static str, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, action: &'static str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(action, path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC §5: only the user's mistakes exit 2; a bug in trove, a watcher
    /// that cannot start and a damaged repository are not usage errors.
    #[test]
    fn kinds_match_exit_codes() {
        let damaged = Error::corrupt("tree", "/r/.trove/trees/ab", "bad header");
        let skipped = Error::CollectionSkipped {
            pinned: "/r/.trove/pinned".into(),
            source: Box::new(damaged),
        };
        assert_eq!(skipped.kind(), ErrorKind::Damaged);
        assert_eq!(
            Error::Internal("encode tree: x".into()).kind(),
            ErrorKind::Internal
        );
        assert_eq!(
            Error::Watcher("cannot start".into()).kind(),
            ErrorKind::Runtime
        );
        let full = Error::QuarantineFull {
            dir: "/r/.trove/quarantine/objects".into(),
            path: "/r/.trove/objects/ab/abcd".into(),
        };
        assert_eq!(full.kind(), ErrorKind::Runtime);
        assert!(!full.is_usage());
        for e in [
            skipped,
            Error::Internal("x".into()),
            Error::Watcher("x".into()),
        ] {
            assert!(!e.is_usage(), "{e}");
        }
        assert!(Error::Usage("bad flag".into()).is_usage());
        assert_eq!(
            Error::Locked { path: "/l".into() }.kind(),
            ErrorKind::Locked
        );
    }

    /// The message of a skipped collection is the one printed before it had
    /// its own variant.
    #[test]
    fn collection_skipped_message_is_unchanged() {
        let e = Error::CollectionSkipped {
            pinned: "/r/.trove/pinned".into(),
            source: Box::new(Error::Usage("inner".into())),
        };
        assert_eq!(
            e.to_string(),
            "garbage collection skipped, nothing deleted: what the pinned snapshots (/r/.trove/pinned) keep cannot be read: inner; run `trove verify`, and `trove prune` once the repository is repaired"
        );
    }
}
