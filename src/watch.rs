//! `trove watch`: an initial backup, then one incremental run per burst of
//! filesystem events, until SIGINT/SIGTERM.
//!
//! Events come from `notify` (inotify on Linux) through
//! `notify-debouncer-full`, which merges a burst into one batch after the
//! debounce window. Each batch becomes a backup run whose scan looks again
//! only at the paths the events name (`BackupOptions::scope`): the rest of
//! the listing comes from the previous snapshot. Everything after the scan
//! is the ordinary backup (`backup::run`): same planner, store, snapshot,
//! browsable tree and lock — there is no second implementation.
//!
//! Never missing a change:
//! - the watcher is started *before* the initial run, so changes made
//!   during it are queued for the next one;
//! - events that arrive while a run is in progress wait in the channel and
//!   make the next run (nothing is dropped, and a path named twice is
//!   scanned once);
//! - a kernel queue overflow (`need_rescan`) or a watcher error makes the
//!   next run a full scan; so does the periodic full scan
//!   (`watch.full_scan_interval`, default one hour);
//! - a run that fails (a full disk, a damaged repository, any error) gives
//!   its work back: the paths it was to look at join the next run's (a
//!   failed full scan makes the next run a full scan), and that run comes
//!   with the next event or after a back-off (`RETRY_FIRST`, doubling up
//!   to `RETRY_MAX`), whichever is first;
//! - when inotify's watch limit is reached, the sysctl to raise is named and
//!   the watcher falls back to polling (`--poll` chooses polling directly).
//!
//! The engine lock is taken per run, so `backup`, `restore` and `verify`
//! can run between watch runs; a watch run waits for them.

use crate::backup::{self, BackupOptions, BackupReport};
use crate::error::{Error, Result};
use crate::pathbytes;
use notify::{PollWatcher, RecommendedWatcher, RecursiveMode, Watcher};
use notify_debouncer_full::{new_debouncer_opt, DebounceEventResult, Debouncer, FileIdCache};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// The settings every run uses (`scope` is set per run).
    pub backup: BackupOptions,
    pub debounce: Duration,
    /// A full scan at least this often (catches what notifications miss).
    pub full_scan_every: Duration,
    /// Poll the sources at this interval instead of using notifications.
    pub poll: Option<Duration>,
}

/// Why a run happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// The first run of the session.
    Initial,
    /// Events named these paths.
    Events,
    /// A full scan: overflow, watcher error, or the periodic scan.
    Full,
}

/// One run of a watch session, as reported to the caller.
#[derive(Clone, Debug, Serialize)]
pub struct WatchRun {
    pub run: u64,
    pub kind: RunKind,
    /// Paths the events named (after dropping trove's own output).
    pub paths: usize,
    /// Why a full scan was made, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<BackupReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

enum Msg {
    Fs(DebounceEventResult),
    Stop(i32),
}

/// The watcher in use; dropping it stops watching (held, never read).
#[allow(dead_code)]
enum Active {
    Native(Debouncer<RecommendedWatcher, notify_debouncer_full::RecommendedCache>),
    Poll(Debouncer<PollWatcher, notify_debouncer_full::NoCache>),
}

fn watch_all<W: Watcher, C: FileIdCache>(
    d: &mut Debouncer<W, C>,
    sources: &[PathBuf],
) -> notify::Result<()> {
    for s in sources {
        d.watch(s, RecursiveMode::Recursive)?;
    }
    Ok(())
}

fn start_poll(
    tx: &Sender<Msg>,
    debounce: Duration,
    every: Duration,
    sources: &[PathBuf],
) -> Result<Active> {
    let t = tx.clone();
    let mut d = new_debouncer_opt::<_, PollWatcher, _>(
        debounce,
        Some(tick(debounce)),
        move |r: DebounceEventResult| {
            let _ = t.send(Msg::Fs(r));
        },
        notify_debouncer_full::NoCache,
        notify::Config::default().with_poll_interval(every),
    )
    .map_err(|e| Error::Watcher(format!("cannot start the polling watcher: {e}")))?;
    watch_all(&mut d, sources)
        .map_err(|e| Error::Watcher(format!("cannot poll the sources: {e}")))?;
    Ok(Active::Poll(d))
}

/// How often the debouncer looks for settled events: a batch is handed
/// over at the first tick after its window closed, so the tick bounds the
/// latency added to the debounce (the default, a quarter of the window,
/// would add up to 250 ms to a 1 s window). A sleeping thread waking 20
/// times a second costs no measurable CPU.
fn tick(debounce: Duration) -> Duration {
    (debounce / 20)
        .clamp(Duration::from_millis(5), Duration::from_millis(50))
        .min(debounce)
}

/// The inotify watch limit, for the message that names it.
fn inotify_limit() -> String {
    std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn start(tx: &Sender<Msg>, o: &WatchOptions, sources: &[PathBuf]) -> Result<Active> {
    if let Some(every) = o.poll {
        return start_poll(tx, o.debounce, every, sources);
    }
    let t = tx.clone();
    let mut d = new_debouncer_opt::<_, RecommendedWatcher, _>(
        o.debounce,
        Some(tick(o.debounce)),
        move |r: DebounceEventResult| {
            let _ = t.send(Msg::Fs(r));
        },
        notify_debouncer_full::RecommendedCache::new(),
        notify::Config::default(),
    )
    .map_err(|e| Error::Watcher(format!("cannot start the filesystem watcher: {e}")))?;
    match watch_all(&mut d, sources) {
        Ok(()) => Ok(Active::Native(d)),
        Err(e) => {
            let limit = matches!(e.kind, notify::ErrorKind::MaxFilesWatch)
                || e.to_string().contains("No space left");
            let every = Duration::from_secs(10);
            if limit {
                tracing::warn!(
                    "the inotify watch limit is reached (fs.inotify.max_user_watches = {}): raise it with `sudo sysctl fs.inotify.max_user_watches=1048576` (and in /etc/sysctl.d/ to keep it); polling the sources every {}s meanwhile",
                    inotify_limit(),
                    every.as_secs()
                );
            } else {
                tracing::warn!(
                    "filesystem notifications are not available ({e}); polling the sources every {}s instead",
                    every.as_secs()
                );
            }
            drop(d);
            start_poll(tx, o.debounce, every, sources)
        }
    }
}

/// Events gathered for the next run.
#[derive(Default)]
struct Pending {
    paths: Vec<PathBuf>,
    full: Option<String>,
}

impl Pending {
    fn add(&mut self, r: DebounceEventResult) {
        // The overflow branch cannot be provoked on demand (the kernel's
        // queue holds 16,384 events by default), so tests force it.
        if std::env::var_os("TROVE_WATCH_FORCE_RESCAN").is_some() {
            self.full
                .get_or_insert_with(|| "TROVE_WATCH_FORCE_RESCAN is set".into());
        }
        match r {
            Ok(events) => {
                for ev in events {
                    if ev.need_rescan() {
                        self.full
                            .get_or_insert_with(|| "the kernel's event queue overflowed".into());
                    }
                    // Opening, reading and closing change nothing (and a
                    // backup run itself reads the sources): only creations,
                    // modifications, removals and renames matter.
                    if matches!(ev.event.kind, notify::EventKind::Access(_)) {
                        continue;
                    }
                    self.paths.extend(ev.event.paths.iter().cloned());
                }
            }
            Err(errors) => {
                for e in &errors {
                    tracing::warn!("filesystem watcher: {e}");
                }
                self.full
                    .get_or_insert_with(|| "the watcher reported errors".into());
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.full.is_none()
    }

    /// Give a failed run's work back: its paths join the next run's, and a
    /// failed full scan makes the next run a full scan.
    fn requeue(&mut self, failed: Pending, error: &str) {
        self.paths.extend(failed.paths);
        if let Some(why) = failed.full {
            self.full
                .get_or_insert_with(|| format!("the previous full scan ({why}) failed: {error}"));
        }
    }
}

/// After a run: a failed one gives its work back to `pending` and sets
/// when it is retried (`retry`: the time and the back-off in force); a
/// run that worked clears the back-off.
fn after_run(
    pending: &mut Pending,
    retry: &mut Option<(Instant, Duration)>,
    ran: Pending,
    error: Option<String>,
    full_scan_every: Duration,
) {
    let Some(e) = error else {
        *retry = None;
        return;
    };
    pending.requeue(ran, &e);
    let backoff = retry
        .map_or(RETRY_FIRST, |(_, b)| b.saturating_mul(2))
        .min(RETRY_MAX)
        .min(full_scan_every);
    tracing::warn!(
        "watch: the run failed; what it was to look at is kept for the next run (with the next change, or in {} s)",
        backoff.as_secs()
    );
    *retry = Some((Instant::now() + backoff, backoff));
}

/// The first retry of a failed run comes this long after it (unless an
/// event comes first); each further failure doubles the wait, up to
/// `RETRY_MAX` (never more than the full-scan interval).
const RETRY_FIRST: Duration = Duration::from_secs(30);
const RETRY_MAX: Duration = Duration::from_secs(600);

/// Map event paths to snapshot paths: inside a source, not inside trove's
/// own output (the backup root, the log directory). Sorted, unique.
fn scope_of(
    paths: &[PathBuf],
    sources: &[PathBuf],
    names: &[Vec<u8>],
    ignore: &[PathBuf],
) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for p in paths {
        if ignore.iter().any(|i| p.starts_with(i)) {
            continue;
        }
        for (src, name) in sources.iter().zip(names) {
            if let Ok(rel) = p.strip_prefix(src) {
                let rel = pathbytes::os_bytes(rel.as_os_str());
                out.push(if name.is_empty() {
                    rel.to_vec()
                } else if rel.is_empty() {
                    name.clone()
                } else {
                    pathbytes::join(name, rel)
                });
                break;
            }
        }
    }
    out.sort_by(|a, b| pathbytes::cmp_paths(a, b));
    out.dedup();
    out
}

/// Install SIGINT/SIGTERM handlers that send `Msg::Stop`.
fn on_signals(tx: Sender<Msg>) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| Error::io("install signal handlers", "", e))?;
    std::thread::Builder::new()
        .name("trove-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let _ = tx.send(Msg::Stop(sig));
            }
        })
        .map_err(|e| Error::io("start signal thread", "", e))?;
    Ok(())
}

/// Run until a signal arrives. `report` is called after every run.
pub fn run(o: &WatchOptions, report: &mut dyn FnMut(&WatchRun)) -> Result<()> {
    let (root, sources) = backup::preflight(&o.backup.settings)?;
    let names = backup::source_names(&sources);
    let mut ignore = vec![root.clone()];
    if let Some(l) = &o.backup.settings.log_dir {
        ignore.push(std::path::absolute(l).unwrap_or_else(|_| l.clone()));
        if let Ok(c) = l.canonicalize() {
            ignore.push(c);
        }
    }
    let (tx, rx): (Sender<Msg>, Receiver<Msg>) = mpsc::channel();
    on_signals(tx.clone())?;
    // Watching starts before the initial run: what changes during it is
    // queued for the next run.
    let _watcher = start(&tx, o, &sources)?;
    let mut n = 0u64;
    // Returns the error of a failed run.
    let mut one =
        |kind: RunKind, scope: Option<Vec<Vec<u8>>>, paths: usize, reason: Option<String>| {
            n += 1;
            let mut opts = o.backup.clone();
            opts.scope = scope;
            // Readers (restore, verify) may hold the lock between runs.
            opts.wait = true;
            let r = backup::run(&opts, &crate::progress::NoProgress);
            let w = WatchRun {
                run: n,
                kind,
                paths,
                reason,
                error: r.as_ref().err().map(|e| e.to_string()),
                report: r.ok(),
            };
            if let Some(e) = &w.error {
                tracing::error!(target: "audit", "watch run {n}: {e}");
            } else if let Some(rep) = &w.report {
                tracing::info!("Run complete");
                tracing::info!(target: "trove::summary", "{}", backup::summary_line(rep));
            }
            report(&w);
            w.error
        };
    tracing::info!(
        "watching {} source(s); debounce {} ms; full scan every {} s",
        sources.len(),
        o.debounce.as_millis(),
        o.full_scan_every.as_secs()
    );
    let mut last_full = Instant::now();
    let mut pending = Pending::default();
    // After a failed run: when to retry it, and the back-off in force.
    let mut retry: Option<(Instant, Duration)> = None;
    let initial = Pending {
        paths: Vec::new(),
        full: Some("the initial run".into()),
    };
    let e = one(RunKind::Initial, None, 0, None);
    after_run(&mut pending, &mut retry, initial, e, o.full_scan_every);
    loop {
        let mut wait = o
            .full_scan_every
            .checked_sub(last_full.elapsed())
            .unwrap_or(Duration::ZERO);
        let retry_at = retry.map(|(at, _)| at);
        if let Some(at) = retry_at {
            wait = wait.min(at.saturating_duration_since(Instant::now()));
        }
        match rx.recv_timeout(wait) {
            Ok(Msg::Stop(sig)) => {
                tracing::info!("signal {sig}: stopping (no run in progress)");
                return Ok(());
            }
            Ok(Msg::Fs(r)) => pending.add(r),
            Err(RecvTimeoutError::Timeout) => {
                // A due retry runs the kept work; otherwise the period
                // is over.
                if retry_at.is_none_or(|at| at > Instant::now()) {
                    pending.full = Some("periodic full scan".into());
                }
            }
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
        // Take everything already queued: one run for the whole backlog,
        // and a stop request wins over queued work.
        loop {
            match rx.try_recv() {
                Ok(Msg::Stop(sig)) => {
                    tracing::info!("signal {sig}: stopping");
                    return Ok(());
                }
                Ok(Msg::Fs(r)) => pending.add(r),
                Err(_) => break,
            }
        }
        if pending.is_empty() {
            continue;
        }
        let p = std::mem::take(&mut pending);
        if let Some(reason) = p.full.clone() {
            let e = one(RunKind::Full, None, p.paths.len(), Some(reason));
            last_full = Instant::now();
            after_run(&mut pending, &mut retry, p, e, o.full_scan_every);
            continue;
        }
        let scope = scope_of(&p.paths, &sources, &names, &ignore);
        if scope.is_empty() {
            continue; // only trove's own output changed
        }
        let count = scope.len();
        let e = one(RunKind::Events, Some(scope), count, None);
        after_run(&mut pending, &mut retry, p, e, o.full_scan_every);
    }
}

/// For the debounce default of SPEC §5.
pub const DEFAULT_DEBOUNCE_MS: u64 = 1000;
/// One hour.
pub const DEFAULT_FULL_SCAN_SECS: u64 = 3600;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_run_gives_its_work_back_and_backs_off() {
        let hour = Duration::from_secs(3600);
        let mut pending = Pending {
            paths: vec![PathBuf::from("/s/new")],
            full: None,
        };
        let mut retry = None;
        let ran = Pending {
            paths: vec![PathBuf::from("/s/a")],
            full: None,
        };
        after_run(&mut pending, &mut retry, ran, Some("ENOSPC".into()), hour);
        assert_eq!(
            pending.paths,
            vec![PathBuf::from("/s/new"), PathBuf::from("/s/a")]
        );
        assert!(pending.full.is_none());
        assert_eq!(retry.map(|(_, b)| b), Some(RETRY_FIRST));
        // Failures in a row double the wait, up to the cap.
        let mut waits = Vec::new();
        for _ in 0..8 {
            after_run(
                &mut pending,
                &mut retry,
                Pending::default(),
                Some("x".into()),
                hour,
            );
            waits.push(retry.map(|(_, b)| b.as_secs()).unwrap_or(0));
        }
        assert_eq!(waits, vec![60, 120, 240, 480, 600, 600, 600, 600]);
        // Never longer than the full-scan interval.
        let short = Duration::from_secs(5);
        after_run(
            &mut pending,
            &mut retry,
            Pending::default(),
            Some("x".into()),
            short,
        );
        assert_eq!(retry.map(|(_, b)| b), Some(short));
        // A failed full scan makes the next run a full scan.
        let full = Pending {
            paths: Vec::new(),
            full: Some("periodic full scan".into()),
        };
        after_run(&mut pending, &mut retry, full, Some("EIO".into()), hour);
        assert!(pending.full.as_deref().is_some_and(|r| r.contains("EIO")));
        // A run that worked clears the back-off and keeps nothing.
        let mut fresh = Pending::default();
        after_run(&mut fresh, &mut retry, Pending::default(), None, hour);
        assert!(retry.is_none() && fresh.is_empty());
    }

    #[test]
    fn event_paths_map_to_snapshot_paths() {
        let srcs = vec![PathBuf::from("/data/a"), PathBuf::from("/data/b")];
        let names = vec![b"a".to_vec(), b"b".to_vec()];
        let ignore = vec![PathBuf::from("/data/a/backup")];
        let got = scope_of(
            &[
                PathBuf::from("/data/b/x/y"),
                PathBuf::from("/data/a/backup/.trove/objects/ab"),
                PathBuf::from("/data/a/f"),
                PathBuf::from("/data/a/f"),
                PathBuf::from("/data/a"),
                PathBuf::from("/elsewhere/z"),
            ],
            &srcs,
            &names,
            &ignore,
        );
        assert_eq!(got, vec![b"a".to_vec(), b"a/f".to_vec(), b"b/x/y".to_vec()]);
        let single = scope_of(
            &[PathBuf::from("/s/d/e"), PathBuf::from("/s")],
            &[PathBuf::from("/s")],
            &[Vec::new()],
            &[],
        );
        assert_eq!(single, vec![Vec::<u8>::new(), b"d/e".to_vec()]);
    }
}
