//! A watch session's pushes (`remote.push_after_backup`), on a thread of
//! their own: the watch loop only says "a run committed a snapshot" and
//! goes on; this thread pushes when `remote::schedule` says a push is due
//! (at most once per `remote.push_interval`, and at the end of the
//! interval for a run that landed inside it), logs a failure with the
//! remote, the error and the backlog, and tries again one interval later.
//!
//! The repository's shared lock is held only while a push lists the local
//! snapshots (`push::run_releasing`), so a local run waits at most for
//! that listing, never for an upload.

use super::args::Cli;
use super::exit::Outcome;
use crate::local::lock::{LockMode, RepoLock};
use crate::local::LocalRepo;
use crate::remote::repo::RemoteRepo;
use crate::remote::schedule::PushSchedule;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

struct State {
    schedule: PushSchedule,
    stop: bool,
}

pub(super) struct Pusher<'a> {
    cli: &'a Cli,
    remote: &'a RemoteRepo,
    root: PathBuf,
    interval: Duration,
    start: Instant,
    state: Mutex<State>,
    wake: Condvar,
    /// The remote's commit names when it last answered (for the backlog
    /// a failed push logs when the remote cannot be listed either).
    on_remote: Mutex<Option<HashSet<[u8; 32]>>>,
}

impl<'a> Pusher<'a> {
    pub(super) fn new(
        cli: &'a Cli,
        remote: &'a RemoteRepo,
        root: PathBuf,
        interval: Duration,
    ) -> Pusher<'a> {
        Pusher {
            cli,
            remote,
            root,
            interval,
            start: Instant::now(),
            state: Mutex::new(State {
                schedule: PushSchedule::new(interval),
                stop: false,
            }),
            wake: Condvar::new(),
            // The session opened the remote: one listing to start from.
            on_remote: Mutex::new(remote.commit_names().ok()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A run committed a snapshot: push it when the schedule allows.
    pub(super) fn run_done(&self) {
        self.state().schedule.run_done();
        self.wake.notify_all();
    }

    /// End the session: [`Pusher::serve`] returns once a push in
    /// progress has finished (one not started yet is left to the next
    /// push, and the backlog is logged).
    pub(super) fn stop(&self) {
        self.state().stop = true;
        self.wake.notify_all();
    }

    /// The thread's body: wait for a due push, push, repeat until stopped.
    pub(super) fn serve(&self) {
        loop {
            {
                let mut st = self.state();
                loop {
                    if st.stop {
                        if st.schedule.pending() {
                            tracing::info!(
                                "watch stopped before the next push to {}: {}; `trove push` (or the next session) sends them",
                                self.remote.url(),
                                self.backlog(false)
                            );
                        }
                        return;
                    }
                    let now = self.start.elapsed();
                    match st.schedule.due_in(now) {
                        None => {
                            st = self.wake.wait(st).unwrap_or_else(|p| p.into_inner());
                        }
                        Some(d) if d.is_zero() => {
                            st.schedule.started(now);
                            break;
                        }
                        Some(d) => {
                            st = self
                                .wake
                                .wait_timeout(st, d)
                                .unwrap_or_else(|p| p.into_inner())
                                .0;
                        }
                    }
                }
            }
            match self.push_once() {
                Ok(()) => {
                    // The backlog of a later failure counts from here.
                    if let Ok(names) = self.remote.commit_names() {
                        *self.on_remote.lock().unwrap_or_else(|p| p.into_inner()) = Some(names);
                    }
                }
                Err(e) => {
                    self.state().schedule.failed();
                    tracing::error!(
                        "push to {} failed: {e:#}; {}; the next attempt is in {} s",
                        self.remote.url(),
                        self.backlog(true),
                        self.interval.as_secs()
                    );
                }
            }
        }
    }

    fn push_once(&self) -> anyhow::Result<()> {
        let repo = LocalRepo::open(&self.root)?;
        // On this thread, waiting for a run in progress holds up nothing.
        let lock = RepoLock::acquire(&repo, LockMode::Shared, true)?;
        match super::offsite::push_to(self.cli, &repo, self.remote, lock, false, false)? {
            Outcome::Ok => {}
            _ => tracing::warn!(
                "push to {}: some local snapshot records could not be read and were not pushed; run `trove verify`",
                self.remote.url()
            ),
        }
        Ok(())
    }

    /// "backlog: N snapshot(s) not on the remote, the oldest …", from the
    /// remote's listing now (`ask`), else from its last known one (a
    /// session that stops does not wait for an unreachable remote).
    fn backlog(&self, ask: bool) -> String {
        let listed = if ask {
            self.remote.commit_names().ok()
        } else {
            None
        };
        let (names, stale) = match listed {
            Some(n) => {
                *self.on_remote.lock().unwrap_or_else(|p| p.into_inner()) = Some(n.clone());
                (n, false)
            }
            None => match self
                .on_remote
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                Some(n) => (n, true),
                None => return "backlog unknown (the remote was never listed)".to_string(),
            },
        };
        let counted = LocalRepo::open(&self.root)
            .map_err(anyhow::Error::from)
            .and_then(|repo| {
                let _lock = RepoLock::acquire(&repo, LockMode::Shared, true)?;
                Ok(crate::remote::push::backlog(&repo, self.remote, &names)?)
            });
        match counted {
            Ok(b) if stale => format!(
                "backlog: {} (as of the remote's last listing)",
                b.describe()
            ),
            Ok(b) => format!("backlog: {}", b.describe()),
            Err(e) => format!("backlog unknown ({e:#})"),
        }
    }
}
