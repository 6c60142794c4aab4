//! The exclusive lock of `prune --remote`: one object under `locks/`
//! naming who holds it and when it was last renewed, so two prunes never
//! rewrite the index at once. Pushes and readers take no lock (a push may
//! hold credentials that cannot delete one); the prune protocol keeps them
//! safe instead (docs/DESIGN.md, "Pruning a remote").
//!
//! A lock is renewed every [`RENEW`] by a thread while its holder runs
//! (a new object, then the old one deleted), so one older than [`STALE`]
//! belongs to a prune that was killed: the next prune removes it and
//! says so. `--unlock` removes every lock at once.

use super::backend::Listed;
use super::repo::{random, RemoteRepo, LOCKS};
use crate::error::{Error, Result};
use crate::id::Digest;
use serde::{Deserialize, Serialize};
use std::sync::mpsc;
use std::time::Duration;

/// How often a held lock is renewed.
pub const RENEW: Duration = Duration::from_secs(5 * 60);
/// A lock not renewed for this long is a killed prune's.
pub const STALE: Duration = Duration::from_secs(30 * 60);
const AAD: &[u8] = b"trove-lock";

/// What a lock object says (sealed, so it cannot be forged without the key).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockInfo {
    pub version: u32,
    pub host: String,
    pub user: String,
    pub pid: u32,
    /// When it was written (ns since the epoch, the holder's clock).
    pub time_ns: i64,
}

impl LockInfo {
    fn describe(&self) -> String {
        format!(
            "{}@{} pid {}, renewed {}",
            self.user,
            self.host,
            self.pid,
            crate::repo::snapshot::format_time(self.time_ns)
        )
    }
}

/// A lock held; released (its object deleted) on drop.
pub struct RemoteLock {
    stop: Option<mpsc::Sender<()>>,
    keeper: Option<std::thread::JoinHandle<()>>,
}

fn write_lock(remote: &RemoteRepo, now_ns: i64) -> Result<String> {
    let (user, host) = super::repo::user_and_host();
    let info = LockInfo {
        version: 1,
        host,
        user,
        pid: std::process::id(),
        time_ns: now_ns,
    };
    let plain =
        postcard::to_stdvec(&info).map_err(|e| Error::Internal(format!("encoding a lock: {e}")))?;
    let path = format!("{LOCKS}{}", Digest(random::<32>()?).to_hex());
    // Plainly, never with Object Lock retention: a lock must go when its
    // prune ends (a locked one would only hide behind a delete marker,
    // and its stored version would cost until the date).
    remote
        .backend()
        .put(&path, &remote.key().seal(AAD, &plain))
        .map_err(|e| super::repo::backend_error(remote.url(), format!("upload {path}"), e))?;
    Ok(path)
}

/// The locks on the remote, each with what it says (`None`: unreadable).
pub fn list(remote: &RemoteRepo) -> Result<Vec<(Listed, Option<LockInfo>)>> {
    let listed = remote
        .backend()
        .list(LOCKS)
        .map_err(|e| super::repo::backend_error(remote.url(), format!("list {LOCKS}"), e))?;
    let mut out = Vec::with_capacity(listed.len());
    for l in listed {
        let info = match remote.backend().get(&l.path) {
            Ok(b) => remote
                .key()
                .open(AAD, &b)
                .ok()
                .and_then(|p| postcard::from_bytes::<LockInfo>(&p).ok()),
            // Released between the listing and the read.
            Err(super::backend::BackendError::NotFound { .. }) => continue,
            Err(e) => {
                return Err(super::repo::backend_error(
                    remote.url(),
                    format!("read {}", l.path),
                    e,
                ))
            }
        };
        out.push((l, info));
    }
    Ok(out)
}

/// Whether a lock written at `time_ns` is stale at `now_ns`.
pub fn is_stale(time_ns: i64, now_ns: i64) -> bool {
    now_ns.saturating_sub(time_ns) > STALE.as_nanos() as i64
}

/// A lock of another prune that stands in the way: its description.
/// Stale and unreadable locks (a killed prune's, or another key's garbage)
/// are removed on the way, or every lock with `unlock`.
fn blocking(remote: &RemoteRepo, unlock: bool, mine: Option<&str>) -> Result<Option<String>> {
    let now = crate::model::now_ns();
    for (l, info) in list(remote)? {
        if Some(l.path.as_str()) == mine {
            continue;
        }
        let what = info
            .as_ref()
            .map_or_else(|| "unreadable lock".to_string(), LockInfo::describe);
        let stale = info.as_ref().is_none_or(|i| is_stale(i.time_ns, now));
        if unlock || stale {
            tracing::warn!(
                "remote {}: removing {} lock {} ({what})",
                remote.url(),
                if stale { "the stale" } else { "the" },
                l.path
            );
            remote.delete(&l.path)?;
            continue;
        }
        return Ok(Some(what));
    }
    Ok(None)
}

impl RemoteLock {
    /// Take the remote's exclusive lock, removing stale ones (or every one,
    /// with `unlock`). Fails with [`Error::RemoteLocked`] when another
    /// prune holds it.
    pub fn acquire(remote: &RemoteRepo, unlock: bool) -> Result<RemoteLock> {
        let locked = |holder: String| Error::RemoteLocked {
            url: remote.url().to_string(),
            holder,
            stale_minutes: STALE.as_secs() / 60,
        };
        if let Some(holder) = blocking(remote, unlock, None)? {
            return Err(locked(holder));
        }
        let path = write_lock(remote, crate::model::now_ns())?;
        // Two prunes that listed at once both see the other now: both
        // step back (neither has changed anything yet).
        if let Some(holder) = blocking(remote, false, Some(&path))? {
            remote.delete(&path)?;
            return Err(locked(holder));
        }
        let (tx, rx) = mpsc::channel::<()>();
        let r = remote.clone();
        let keeper = std::thread::spawn(move || {
            let mut held = path;
            // Until released (or the holder is gone).
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(RENEW) {
                match write_lock(&r, crate::model::now_ns()) {
                    Ok(next) => {
                        if let Err(e) = r.delete(&held) {
                            tracing::warn!("{e}");
                        }
                        held = next;
                    }
                    // Kept trying: the old lock stays valid until STALE.
                    Err(e) => tracing::warn!("renewing the prune lock: {e}"),
                }
            }
            if let Err(e) = r.delete(&held) {
                tracing::warn!("releasing the prune lock: {e}");
            }
        });
        Ok(RemoteLock {
            stop: Some(tx),
            keeper: Some(keeper),
        })
    }
}

impl Drop for RemoteLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(k) = self.keeper.take() {
            let _ = k.join();
        }
    }
}

/// The description of a fresh lock another prune holds, if any (a dry run
/// takes no lock but says when a prune is running).
pub fn holder(remote: &RemoteRepo) -> Result<Option<String>> {
    let now = crate::model::now_ns();
    Ok(list(remote)?.into_iter().find_map(|(_, i)| {
        i.filter(|i| !is_stale(i.time_ns, now))
            .map(|i| i.describe())
    }))
}
