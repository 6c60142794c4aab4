//! The engine lock: OS file locks (`flock`) on `.trove/lock` and on the
//! `.trove` directory itself. Writers hold them exclusively, readers shared.
//! The kernel drops them when the process dies, so there is never a stale
//! lock to clean up by hand.
//!
//! Why two: `.trove/lock` is the documented lock file (SPEC §6), which
//! scripts may hold too; but a file can be unlinked from under its holder
//! (an old restic habit: "delete the lock file"), after which a second
//! writer would create a new one and lock that. The directory cannot be
//! unlinked while it holds the repository, so its lock is the one that
//! really keeps writers apart. Every trove process takes the file first and
//! the directory second, so waiting writers cannot deadlock.

use crate::error::{Error, IoContext, Result};
use crate::local::LocalRepo;
use std::fs::{File, OpenOptions, TryLockError};
use std::io;

/// Held for as long as it lives; dropping it releases the lock.
#[derive(Debug)]
pub struct RepoLock {
    _file: Option<File>,
    _dir: File,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

impl RepoLock {
    /// Take the lock; with `wait` block until it is free, otherwise fail
    /// at once with `Error::Locked` naming the lock file.
    pub fn acquire(repo: &LocalRepo, mode: LockMode, wait: bool) -> Result<RepoLock> {
        let path = repo.lock_path();
        let file = match mode {
            LockMode::Exclusive => Some(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .ctx("open lock file", &path)?,
            ),
            // A reader never writes to the repository: it locks the lock
            // file only when it exists (the directory lock is enough to
            // keep writers out), and opens it read-only, which also works on
            // read-only media or a repository owned by another user.
            LockMode::Shared => match File::open(&path) {
                Ok(f) => Some(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(Error::io("open lock file", &path, e)),
            },
        };
        let dir = File::open(&repo.dir).ctx("open repository directory", &repo.dir)?;
        if let Some(f) = &file {
            lock_one(f, mode, wait, &path)?;
        }
        lock_one(&dir, mode, wait, &path)?;
        // What this process may have read of the tree packs before it held
        // the lock is re-checked against the packs on disk now.
        repo.refresh_trees();
        Ok(RepoLock {
            _file: file,
            _dir: dir,
        })
    }
}

/// Lock one descriptor; `shown` is the path an error names (the lock file,
/// also for the directory lock: that is the file a user knows about).
fn lock_one(f: &File, mode: LockMode, wait: bool, shown: &std::path::Path) -> Result<()> {
    let res = match (mode, wait) {
        (LockMode::Exclusive, true) => f.lock().map_err(TryLockError::Error),
        (LockMode::Shared, true) => f.lock_shared().map_err(TryLockError::Error),
        (LockMode::Exclusive, false) => f.try_lock(),
        (LockMode::Shared, false) => f.try_lock_shared(),
    };
    match res {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(Error::Locked {
            path: shown.to_path_buf(),
        }),
        Err(TryLockError::Error(e)) => Err(Error::io("lock", shown, e)),
    }
}
