//! The engine lock: an OS file lock on `.trove/lock`. Writers hold it
//! exclusively, readers shared. The kernel drops it when the process dies,
//! so there is never a stale lock to clean up by hand.

use crate::error::{Error, IoContext, Result};
use crate::store::Repo;
use std::fs::{File, OpenOptions, TryLockError};

/// Held for as long as it lives; dropping it releases the lock.
#[derive(Debug)]
pub struct RepoLock {
    _file: File,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

impl RepoLock {
    /// Take the lock; with `wait` block until it is free, otherwise fail
    /// at once with `Error::Locked` naming the lock file.
    pub fn acquire(repo: &Repo, mode: LockMode, wait: bool) -> Result<RepoLock> {
        let path = repo.lock_path();
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
        {
            Ok(f) => f,
            // A reader of a repository on read-only media (or owned by
            // another user) can still take a shared lock on a read-only fd.
            Err(e)
                if mode == LockMode::Shared
                    && (e.raw_os_error() == Some(libc::EROFS)
                        || e.kind() == std::io::ErrorKind::PermissionDenied) =>
            {
                File::open(&path).ctx("open lock file", &path)?
            }
            Err(e) => return Err(Error::io("open lock file", &path, e)),
        };
        let res = match (mode, wait) {
            (LockMode::Exclusive, true) => file.lock().map_err(TryLockError::Error),
            (LockMode::Shared, true) => file.lock_shared().map_err(TryLockError::Error),
            (LockMode::Exclusive, false) => file.try_lock(),
            (LockMode::Shared, false) => file.try_lock_shared(),
        };
        match res {
            Ok(()) => Ok(RepoLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(Error::Locked { path }),
            Err(TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
        }
    }
}
