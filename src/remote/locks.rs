//! Keeping a locked remote locked: `trove remote extend-locks` renews
//! the retention of every object the remote still needs, and
//! `verify --remote` reports the needed objects whose lock ends within
//! half the lock period. Both read each object's retention with one HEAD
//! (S3 has no listing of retention dates); extend-locks adds one
//! PutObjectRetention per object it renews.
//!
//! "Still needed" is what the remote's history reads: the config, the key
//! files, the index files, the snapshot commits and every stored pack an
//! index lists. A pack no index lists (one `prune --remote` dropped, or a
//! killed push's that the next push adopts) is not renewed.

use super::backend::{RequestStats, Retention};
use super::objlock::{LockMode, ObjectLock, MAX_DAYS};
use super::repo::{pack_path, RemoteRepo, CONFIG, INDEX, KEYS, SNAPSHOTS};
use crate::error::{Error, Result};
use crate::progress::Progress;
use rayon::prelude::*;
use std::sync::Mutex;

/// Requests in flight at once while locks are read or renewed: each is
/// a small HEAD or PUT, so the wait is the round trip, not the link.
const PARALLEL: usize = 8;

/// Every object the remote still needs (see the module's docs), sorted.
pub fn needed_objects(remote: &RemoteRepo) -> Result<Vec<String>> {
    let err = |what: &str, e| super::repo::backend_error(remote.url(), what, e);
    let mut out = vec![CONFIG.to_string()];
    for dir in [KEYS, INDEX, SNAPSHOTS] {
        let listed = remote
            .backend()
            .list(dir)
            .map_err(|e| err(&format!("list {dir}"), e))?;
        out.extend(listed.into_iter().map(|l| l.path));
    }
    // Stored packs an index lists: a pack the index lists but the remote
    // lacks is verify's to report, not a lock to renew.
    let index = remote.index()?;
    for (kind, name, _) in remote.list_packs()? {
        if index.has_pack(&name) {
            out.push(pack_path(kind, &name));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The lock period of `remote`, or the error that says it has none.
fn period(remote: &RemoteRepo, what: &str) -> Result<ObjectLock> {
    remote.object_lock().ok_or_else(|| {
        Error::Usage(format!(
            "remote {} was created without object lock, so it has no locks to {what}; only `trove remote init --object-lock DAYS` on a bucket with S3 Object Lock makes a locked remote",
            remote.url()
        ))
    })
}

/// What `trove remote extend-locks` did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ExtendReport {
    pub remote: String,
    pub mode: LockMode,
    /// The period renewed for (`--days`, else the remote's).
    pub days: u32,
    /// The date locks now reach at least (RFC 3339).
    pub until: String,
    /// Objects still needed.
    pub objects: u64,
    /// Objects whose retention was moved to `until`.
    pub extended: u64,
    /// Objects already locked until `until` or later.
    pub already: u64,
    /// Needed objects that vanished while the command ran (a concurrent
    /// prune), skipped.
    pub vanished: Vec<String>,
    pub requests: RequestStats,
}

/// Renew the retention of every needed object whose lock ends before
/// now + `days` (the remote's period when `None`) to that date. A lock
/// is never shortened (S3 refuses it for COMPLIANCE anyway).
pub fn extend(
    remote: &RemoteRepo,
    days: Option<u32>,
    progress: &dyn Progress,
) -> Result<ExtendReport> {
    let lock = period(remote, "extend")?;
    let days = days.unwrap_or(lock.days);
    if days == 0 || days > MAX_DAYS {
        return Err(Error::Usage(format!(
            "--days {days} is outside 1..={MAX_DAYS}"
        )));
    }
    let target = lock.retention_from(jiff::Timestamp::now(), days);
    let paths = needed_objects(remote)?;
    progress.phase("locks", paths.len() as u64, 0);
    let extended = std::sync::atomic::AtomicU64::new(0);
    let vanished = Mutex::new(Vec::new());
    let work = || {
        paths.par_iter().try_for_each(|path| -> Result<()> {
            let current = remote.retention(path)?;
            if current.is_none_or(|r| r.until < target.until) {
                match remote.backend().set_retention(path, target) {
                    Ok(()) => {
                        extended.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(super::backend::BackendError::NotFound { .. }) => {
                        vanished
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(path.clone());
                    }
                    Err(e) => {
                        return Err(super::repo::backend_error(
                            remote.url(),
                            format!("extend the lock of {path}"),
                            e,
                        ))
                    }
                }
            }
            progress.advance(1, 0);
            Ok(())
        })
    };
    match rayon::ThreadPoolBuilder::new()
        .num_threads(PARALLEL)
        .build()
    {
        Ok(pool) => pool.install(work)?,
        Err(_) => work()?,
    }
    progress.finish();
    let mut vanished = vanished.into_inner().unwrap_or_else(|p| p.into_inner());
    vanished.sort();
    let extended = extended.into_inner();
    Ok(ExtendReport {
        remote: remote.url().to_string(),
        mode: lock.mode,
        days,
        until: target.until.to_string(),
        objects: paths.len() as u64,
        extended,
        already: paths.len() as u64 - extended - vanished.len() as u64,
        vanished,
        requests: remote.backend().stats(),
    })
}

/// A needed object whose lock ends too soon.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ShortLock {
    pub path: String,
    /// When its lock ends (ended); `None`: it has no retention at all.
    pub until: Option<String>,
}

/// The lock check of `verify --remote` (a warning, not damage: nothing
/// is lost yet, and `trove remote extend-locks` mends it).
#[derive(Clone, Debug, serde::Serialize)]
pub struct LockCheck {
    pub mode: LockMode,
    pub days: u32,
    /// Objects whose retention was read (one HEAD each).
    pub checked: u64,
    /// Locks ending before this date are reported: now plus half the period.
    pub warn_before: String,
    /// The needed objects whose lock ends before `warn_before` (or has
    /// ended, or never was), sorted by path.
    pub short: Vec<ShortLock>,
}

/// Read the retention of every needed object of a locked remote (`None`
/// for a remote without a lock period: no request).
pub fn check(remote: &RemoteRepo, progress: &dyn Progress) -> Result<Option<LockCheck>> {
    let Some(lock) = remote.object_lock() else {
        return Ok(None);
    };
    let warn_before = lock.warn_before(jiff::Timestamp::now());
    let paths = needed_objects(remote)?;
    progress.phase("locks", paths.len() as u64, 0);
    let work = || {
        paths
            .par_iter()
            .map(|path| -> Result<Option<ShortLock>> {
                let r: Option<Retention> = remote.retention(path)?;
                progress.advance(1, 0);
                Ok(match r {
                    Some(r) if r.until >= warn_before => None,
                    r => Some(ShortLock {
                        path: path.clone(),
                        until: r.map(|r| r.until.to_string()),
                    }),
                })
            })
            .collect::<Result<Vec<_>>>()
    };
    let found = match rayon::ThreadPoolBuilder::new()
        .num_threads(PARALLEL)
        .build()
    {
        Ok(pool) => pool.install(work)?,
        Err(_) => work()?,
    };
    progress.finish();
    Ok(Some(LockCheck {
        mode: lock.mode,
        days: lock.days,
        checked: paths.len() as u64,
        warn_before: warn_before.to_string(),
        short: found.into_iter().flatten().collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::HashAlgo;
    use crate::progress::NoProgress;
    use crate::remote::backend::{Backend, MemBackend};
    use crate::remote::crypto::{Domain, KdfParams};
    use crate::remote::index::IndexFile;
    use crate::remote::pack::{seal_blob, BlobKind, PackKind, PackWriter};

    fn locked(days: u32) -> (RemoteRepo, MemBackend) {
        let m = MemBackend::with_object_lock();
        let lock = ObjectLock::new(days, LockMode::Compliance).expect("valid");
        let r = RemoteRepo::init_locked(
            Box::new(m.clone()),
            b"pw",
            HashAlgo::Blake3,
            super::super::repo::DEFAULT_PACK_SIZE,
            KdfParams::FAST_FOR_TESTS,
            Some(lock),
        )
        .expect("init");
        (r, m)
    }

    /// One data pack, indexed.
    fn push_one_pack(r: &RemoteRepo) -> String {
        let mut w = PackWriter::new(PackKind::Data);
        let id = r.key().id(Domain::Chunk, b"chunk");
        w.push(seal_blob(r.key(), BlobKind::Data, id, None, b"chunk", true).expect("seal"));
        let p = w.finish(r.key()).expect("finish");
        let path = pack_path(p.kind, &p.name);
        let listed = r.put_pack(p).expect("put");
        r.put_index(&IndexFile {
            packs: vec![listed],
        })
        .expect("index");
        r.forget_index();
        path
    }

    #[test]
    fn every_write_of_a_locked_remote_is_locked_and_locked_until_reads_it() {
        let (r, m) = locked(3);
        let pack = push_one_pack(&r);
        let locks = m.retentions();
        let stored: Vec<String> = m.objects().keys().cloned().collect();
        assert_eq!(
            locks.keys().cloned().collect::<Vec<_>>(),
            stored,
            "every object carries a retention"
        );
        let until = r.locked_until(&pack).expect("head").expect("locked");
        let secs = until.as_second() - jiff::Timestamp::now().as_second();
        assert!((2 * 86_400..=3 * 86_400 + 1).contains(&secs), "{until}");
        assert_eq!(r.locked_until("data/00/absent").expect("head"), None);
        // The delete is refused while the lock holds.
        assert!(r.backend().delete(&pack).is_err());
        assert!(m.objects().contains_key(&pack));
    }

    #[test]
    fn a_remote_without_lock_asks_nothing_and_refuses_extend() {
        let m = MemBackend::with_object_lock();
        let r = RemoteRepo::init(
            Box::new(m.clone()),
            b"pw",
            HashAlgo::Blake3,
            super::super::repo::DEFAULT_PACK_SIZE,
            KdfParams::FAST_FOR_TESTS,
        )
        .expect("init");
        let before = m.stats();
        assert_eq!(r.locked_until(CONFIG).expect("no request"), None);
        assert_eq!(m.stats(), before, "no request");
        assert!(m.retentions().is_empty());
        assert!(check(&r, &NoProgress).expect("check").is_none());
        assert!(matches!(
            extend(&r, None, &NoProgress),
            Err(Error::Usage(_))
        ));
    }

    #[test]
    fn init_refuses_a_store_without_object_lock() {
        let m = MemBackend::new();
        let lock = ObjectLock::new(1, LockMode::Compliance).expect("valid");
        let e = RemoteRepo::init_locked(
            Box::new(m.clone()),
            b"pw",
            HashAlgo::Blake3,
            super::super::repo::DEFAULT_PACK_SIZE,
            KdfParams::FAST_FOR_TESTS,
            Some(lock),
        );
        assert!(matches!(e, Err(Error::Usage(_))));
        assert!(m.objects().is_empty(), "nothing written");
    }

    #[test]
    fn extend_moves_short_locks_forward_and_check_reports_them() {
        let (r, m) = locked(10);
        let pack = push_one_pack(&r);
        // Fresh locks: nothing to report.
        let c = check(&r, &NoProgress).expect("check").expect("locked");
        assert!(c.short.is_empty(), "{:?}", c.short);
        assert_eq!(c.checked, m.objects().len() as u64);
        // A pack whose lock ends tomorrow (pushed long ago), and a pack no
        // index lists (dropped): only the first is needed.
        let soon = Retention {
            mode: LockMode::Governance,
            until: jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24),
        };
        let dropped = format!("data/ff/{}", "ff".repeat(32));
        m.objects().insert(dropped.clone(), b"x".to_vec());
        m.force_retention(&pack, soon);
        m.force_retention(&dropped, soon);
        let c = check(&r, &NoProgress).expect("check").expect("locked");
        assert_eq!(c.short.len(), 1, "{:?}", c.short);
        assert_eq!(c.short[0].path, pack);
        // Every needed lock short: every one is renewed.
        for p in needed_objects(&r).expect("needed") {
            m.force_retention(&p, soon);
        }
        let rep = extend(&r, None, &NoProgress).expect("extend");
        assert_eq!(rep.extended, rep.objects);
        assert_eq!(
            rep.objects,
            m.objects().len() as u64 - 1,
            "all but the dropped pack"
        );
        assert!(rep.vanished.is_empty());
        let after = m.retentions();
        assert!(after[&pack].until > soon.until + jiff::SignedDuration::from_hours(24 * 8));
        assert_eq!(after[&dropped], soon, "a dropped pack is left alone");
        assert!(check(&r, &NoProgress)
            .expect("check")
            .expect("locked")
            .short
            .is_empty());
        // A shorter --days renews nothing.
        let rep = extend(&r, Some(1), &NoProgress).expect("extend");
        assert_eq!((rep.extended, rep.already), (0, rep.objects));
    }
}
