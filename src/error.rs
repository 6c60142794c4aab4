//! The library's error type. Every variant that touches the filesystem
//! carries the path, and every message says what to do about it. The kinds
//! tell a caller whether something is missing, corrupt, a usage problem or
//! worth retrying (the lock), which the CLI maps to exit codes.

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

    #[error("unsupported format version {found} in {path} (this trove reads version {supported}): upgrade trove")]
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

    #[error("repository folder {path} is missing: it holds {what}, so the repository is damaged. Put it back from a copy of the repository; `trove verify` names what is lost")]
    MissingFolder { path: PathBuf, what: &'static str },

    #[error("interrupted")]
    Interrupted,

    #[error("stopped by --on-error fail: {0}")]
    Aborted(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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

    /// True for errors that are the user's to fix in arguments or config
    /// (exit code 2), as opposed to runtime failures.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::Config { .. }
                | Error::Usage(_)
                | Error::NotARepository { .. }
                | Error::HashMismatch { .. }
                | Error::NoSuchSnapshot(_)
                | Error::AmbiguousSnapshot(_)
        )
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
