//! One function per command: resolve the settings (`settings`), set up the
//! console and audit log, take the lock the engine asks for, call the
//! engine, and hand its report to `output`. The engine decides; these only
//! connect.

use super::args::{
    BackupArgs, Cli, DiffArgs, DupesArgs, HistoryArgs, InitArgs, LsArgs, MaterializeArgs,
    MirrorArgs, PruneArgs, RestoreArgs, VerifyArgs, WatchArgs,
};
use super::exit::Outcome;
use super::output;
use super::progress::TermProgress;
use super::settings;
use crate::backup;
use crate::config::BackupSettings;
use crate::id::HashAlgo;
use crate::local::lock::{LockMode, RepoLock};
use crate::local::LocalRepo;
use crate::remote::repo::RemoteRepo;
use crate::repo::snapshot;
use crate::repo::RepoRead;
use crate::retention::Policy;
use anyhow::{Context, Result};
use std::io::Write;
use tracing_subscriber::filter::LevelFilter;

/// Problems found → exit 1; none → 0.
fn outcome(problems: bool) -> Outcome {
    if problems {
        Outcome::Problems
    } else {
        Outcome::Ok
    }
}

fn console(cli: &Cli) -> LevelFilter {
    crate::log::console_level(cli.verbose, cli.quiet)
}

pub(super) fn init(cli: &Cli, a: &InitArgs) -> Result<Outcome> {
    let _log = crate::log::init(console(cli), None)?;
    let algo = a.hash.map(HashAlgo::from).unwrap_or(HashAlgo::Blake3);
    let existed = LocalRepo::exists(&a.dir);
    let repo = LocalRepo::init(&a.dir, algo)?;
    let mut out = std::io::stdout().lock();
    if cli.json {
        output::json(
            &mut out,
            &serde_json::json!({
                "repository": repo.root, "hash": repo.algo().name(), "id": repo.config.id, "created": !existed
            }),
        )?;
    } else if !cli.quiet {
        output::init(&mut out, existed, &repo.root, repo.algo().name())?;
    }
    Ok(Outcome::Ok)
}

pub(super) fn backup(cli: &Cli, a: &BackupArgs) -> Result<Outcome> {
    // Positionals are SOURCE… DEST, or all sources when --repo is given
    // (DEST alone for a stream: --stdin, --stdin-from-command).
    let stdin = settings::stdin_options(cli, a)?;
    let settings = match &stdin {
        Some(o) => o.settings.clone(),
        None => settings::source_settings(cli, &a.src)?.0,
    };
    let console = console(cli);
    if a.dry_run {
        // Nothing is written, not even a log; a dry run exists to show the
        // plan.
        let level = if cli.quiet {
            console
        } else {
            console.max(LevelFilter::INFO)
        };
        let _g = crate::log::init(level, None)?;
        return finish_backup(cli, a, settings, stdin, None);
    }
    let push = a.push || super::offsite::push_after_backup(cli)?;
    let root = settings.backup_root.clone();
    let guard = run_log(&settings, console)?;
    let log_path = guard.file.clone();
    let outcome = finish_backup(cli, a, settings, stdin, log_path)?;
    if push {
        // The snapshot is safe locally whatever the push does; a failed
        // push is reported (and its exit code returned) after it.
        let repo = LocalRepo::open(&root)?;
        let remote = super::offsite::open_remote(cli)?;
        let lock = RepoLock::acquire(&repo, LockMode::Shared, cli.wait)?;
        let pushed = super::offsite::push_to(cli, &repo, &remote, lock, true, false)?;
        if pushed != Outcome::Ok {
            return Ok(pushed);
        }
    }
    Ok(outcome)
}

/// The console and audit log of a writing run (backup, watch): the log
/// file goes to `log_dir`, else `.trove/logs`, and the backup root is
/// created 0700 first so the log directory never makes it world-readable.
fn run_log(settings: &BackupSettings, console: LevelFilter) -> Result<crate::log::LogGuard> {
    let log_dir = settings
        .log_dir
        .clone()
        .unwrap_or_else(|| LocalRepo::logs_dir_of(&settings.backup_root));
    if settings.log_dir.is_none() && !LocalRepo::exists(&settings.backup_root) {
        crate::fsutil::create_private_dir(&settings.backup_root)?;
    }
    Ok(crate::log::init(
        console,
        Some((log_dir.as_path(), settings.log_level)),
    )?)
}

fn finish_backup(
    cli: &Cli,
    a: &BackupArgs,
    settings: BackupSettings,
    stdin: Option<backup::StdinOptions>,
    log: Option<std::path::PathBuf>,
) -> Result<Outcome> {
    let root = settings.backup_root.clone();
    let bar = TermProgress::new(cli);
    let report = match stdin {
        Some(o) => backup::run_stdin(&o, &bar),
        None => backup::run(&settings::backup_options(settings, a, cli.wait), &bar),
    };
    drop(bar);
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            // main prints the error on the console; this puts it in the log.
            tracing::error!(target: "audit", "{e}");
            return Err(e.into());
        }
    };
    let line = backup::summary_line(&report);
    if !report.dry_run {
        tracing::info!("Run complete");
    }
    tracing::info!(target: "trove::summary", "{line}");
    let mut out = std::io::stdout().lock();
    if cli.json {
        output::json(&mut out, &report)?;
    } else if !cli.quiet {
        output::backup_summary(&mut out, &report, &line, log.as_deref(), &root);
    }
    Ok(outcome(report.failed))
}

/// A command that only reads: the repository, under a shared lock.
fn open_for_reading(cli: &Cli) -> Result<(LocalRepo, RepoLock)> {
    let _ = crate::log::init(console(cli), None);
    let root = settings::repo_root(cli)?;
    let repo = LocalRepo::open(&root)?;
    let lock = RepoLock::acquire(&repo, LockMode::Shared, cli.wait)?;
    Ok((repo, lock))
}

/// Run `f` on the repository a reading command names: the remote with
/// `--remote` (given to `f` as such too, for the requests its `--json`
/// reports), else the local repository under a shared lock.
fn reading<T>(
    cli: &Cli,
    f: impl FnOnce(&dyn RepoRead, Option<&RemoteRepo>) -> Result<T>,
) -> Result<T> {
    if cli.remote.is_some() {
        let _ = crate::log::init(console(cli), None);
        let remote = super::offsite::open_remote(cli)?;
        return f(&remote, Some(&remote));
    }
    let (repo, _lock) = open_for_reading(cli)?;
    f(&repo, None)
}

pub(super) fn snapshots(cli: &Cli) -> Result<Outcome> {
    reading(cli, |repo, remote| snapshots_of(cli, repo, remote))
}

fn snapshots_of(cli: &Cli, repo: &dyn RepoRead, remote: Option<&RemoteRepo>) -> Result<Outcome> {
    let scan = snapshot::scan(repo)?;
    for d in &scan.damaged {
        tracing::error!("{}", d.error);
    }
    let rows = output::snapshot_rows(&scan);
    super::offsite::emit_remote(cli, remote, &rows, |out| {
        output::snapshots(out, &rows, scan.snapshots.len(), scan.damaged.len())
    })?;
    Ok(outcome(!scan.damaged.is_empty()))
}

pub(super) fn ls(cli: &Cli, a: &LsArgs) -> Result<Outcome> {
    reading(cli, |repo, remote| ls_of(cli, a, repo, remote))
}

fn ls_of(
    cli: &Cli,
    a: &LsArgs,
    repo: &dyn RepoRead,
    remote: Option<&RemoteRepo>,
) -> Result<Outcome> {
    let spec = a.snapshot.as_deref().unwrap_or("latest");
    let under = a.path.as_deref().map_or("", |p| p.trim_matches('/'));
    let snap = snapshot::resolve(repo, spec)?;
    let reading = || format!("reading snapshot {}", snap.id.short());
    if under.is_empty() {
        // The whole snapshot: printed as its trees are read, never held.
        let rec = &snap.record;
        snapshot::check_archive(repo, rec).with_context(reading)?;
        let mut w = output::ListWriter::new(std::io::stdout().lock(), cli.json);
        let mut c = crate::repo::tree::FlatCursor::new(repo, &rec.root, None, rec.source_limit())
            .with_context(reading)?;
        while let Some(item) = c.next().with_context(reading)? {
            let e = crate::repo::tree::source_entry(item);
            for r in output::ls_rows(&[&e]) {
                w.row(&r, |out| output::ls(out, std::slice::from_ref(&r)))?;
            }
        }
        w.finish()?;
        if let (true, Some(remote)) = (cli.json, remote) {
            super::offsite::list_requests(remote)?;
        }
        return Ok(Outcome::Ok);
    }
    // Only the trees on the path's way and below it.
    let entries =
        crate::inspect::listing_at(repo, &snap, under.as_bytes()).with_context(reading)?;
    let shown = crate::inspect::ls(&entries, a.path.as_deref(), &snap.id)?;
    let rows = output::ls_rows(&shown);
    super::offsite::emit_remote(cli, remote, &rows, |out| output::ls(out, &rows))?;
    Ok(Outcome::Ok)
}

pub(super) fn restore(cli: &Cli, a: &RestoreArgs) -> Result<Outcome> {
    reading(cli, |repo, remote| restore_from(cli, a, repo, remote))
}

fn restore_from(
    cli: &Cli,
    a: &RestoreArgs,
    repo: &dyn RepoRead,
    remote: Option<&RemoteRepo>,
) -> Result<Outcome> {
    let snap = snapshot::resolve(repo, &a.snapshot)?;
    let opts = settings::restore_options(a);
    let bar = TermProgress::new(cli);
    let report = crate::restore::run(repo, &snap, &opts, &bar);
    drop(bar);
    let report = report?;
    super::offsite::emit_remote(cli, remote, &report, |out| {
        output::restore(out, &report, cli.quiet)
    })?;
    Ok(outcome(report.failed()))
}

pub(super) fn verify(cli: &Cli, a: &VerifyArgs) -> Result<Outcome> {
    if cli.remote.is_some() {
        return super::offsite::verify(cli, a);
    }
    if a.read_data {
        return Err(crate::error::Error::Usage(
            "--read-data checks a remote's packs: use it with --remote URL (a local verify reads every object unless --quick)".into(),
        )
        .into());
    }
    if let Some(s) = &a.read_data_subset {
        return Err(crate::error::Error::Usage(format!(
            "--read-data-subset {s} checks part of a remote's packs: use it with --remote URL (a local verify reads every object unless --quick or --sample PERCENT)"
        ))
        .into());
    }
    let (repo, _lock) = open_for_reading(cli)?;
    let opts = settings::verify_options(a);
    let bar = TermProgress::new(cli);
    let report = crate::verify::run(&repo, &opts, &bar);
    drop(bar);
    let report = report?;
    output::emit(cli, &report, |out| {
        output::verify(out, &report, a.quick, cli.quiet)
    })?;
    Ok(outcome(!report.problems.is_empty()))
}

pub(super) fn materialize(cli: &Cli, a: &MaterializeArgs) -> Result<Outcome> {
    let _ = crate::log::init(console(cli), None);
    let root = settings::repo_root(cli)?;
    let repo = LocalRepo::open_writable(&root)?;
    let _lock = RepoLock::acquire(&repo, LockMode::Exclusive, cli.wait)?;
    let report =
        crate::browsable::apply::rebuild_latest(&repo, a.target.as_deref(), a.prune_extra)?;
    output::emit(cli, &report, |out| {
        output::materialize(out, &report, cli.quiet)
    })?;
    Ok(outcome(report.failures_total > 0))
}

pub(super) fn diff(cli: &Cli, a: &DiffArgs) -> Result<Outcome> {
    reading(cli, |repo, remote| diff_of(cli, a, repo, remote))
}

fn diff_of(
    cli: &Cli,
    a: &DiffArgs,
    repo: &dyn RepoRead,
    remote: Option<&RemoteRepo>,
) -> Result<Outcome> {
    let from = snapshot::resolve(repo, &a.from)?;
    let to = snapshot::resolve(repo, &a.to)?;
    let d = crate::inspect::diff(repo, &from, &to)?;
    super::offsite::emit_remote(cli, remote, &d, |out| output::diff(out, &d))?;
    Ok(Outcome::Ok)
}

pub(super) fn history(cli: &Cli, a: &HistoryArgs) -> Result<Outcome> {
    let (repo, _lock) = open_for_reading(cli)?;
    let rows = crate::inspect::history(&repo, &a.path)?;
    output::emit(cli, &rows, |out| output::history(out, &rows))?;
    Ok(Outcome::Ok)
}

pub(super) fn prune(cli: &Cli, a: &PruneArgs) -> Result<Outcome> {
    if cli.remote.is_some() {
        return super::offsite::prune(cli, a);
    }
    if a.max_unused.is_some() || a.grace.is_some() || a.unlock {
        return Err(crate::error::Error::Usage(
            "--max-unused, --grace and --unlock apply to a remote's prune: add --remote URL (the local prune deletes what it collects at once, under the repository's lock)".into(),
        )
        .into());
    }
    let root = settings::repo_root(cli)?;
    let (ret, log_dir) = settings::retention_settings(cli)?;
    let flags = settings::keep_flags(a)?;
    let repo = crate::prune::open(&root, a.dry_run)?;
    let console = console(cli);
    let log_dir = log_dir.unwrap_or_else(|| repo.logs_dir());
    let _guard = if a.dry_run {
        crate::log::init(console.max(LevelFilter::INFO), None)?
    } else {
        crate::log::init(
            console,
            Some((log_dir.as_path(), crate::config::LogLevel::default())),
        )?
    };
    let _lock = RepoLock::acquire(&repo, crate::prune::lock_mode(a.dry_run), cli.wait)?;
    // "now" once the lock is held: a waiting prune decides by the time it
    // runs, not the time it was started.
    let opts = settings::prune_options(&ret, flags, a.dry_run, crate::model::now_ns());
    let report = match crate::prune::run(&repo, &opts) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(target: "audit", "{e}");
            return Err(e.into());
        }
    };
    let line = output::prune_line(&report);
    if !a.dry_run {
        tracing::info!(target: "trove::summary", "{line}");
    }
    output::emit(cli, &report, |out| {
        output::prune(out, &report, &line, &repo.root, cli.verbose, cli.quiet)
    })?;
    Ok(outcome(!report.browsable_incomplete.is_empty()))
}

pub(super) fn stats(cli: &Cli) -> Result<Outcome> {
    if cli.remote.is_some() {
        return super::offsite::stats(cli);
    }
    let (repo, _lock) = open_for_reading(cli)?;
    let (ret, _) = settings::retention_settings(cli)?;
    // What prune would reclaim with the current settings: no flags.
    let opts = settings::prune_options(&ret, Policy::default(), true, crate::model::now_ns());
    let st = crate::prune::stats(&repo, &opts)?;
    output::emit(cli, &st, |out| output::stats(out, &st))?;
    Ok(Outcome::Ok)
}

pub(super) fn watch(cli: &Cli, a: &WatchArgs) -> Result<Outcome> {
    let (settings, cfg) = settings::source_settings(cli, &a.src)?;
    let opts = settings::watch_options(a, settings, cfg.as_ref())?;
    // One log file for the whole session: every run's lines and summary.
    let guard = run_log(&opts.backup.settings, console(cli))?;
    if !cli.quiet && !cli.json {
        if let Some(l) = &guard.file {
            // A failing stderr must not panic the session (see main.rs).
            let _ = writeln!(
                std::io::stderr(),
                "watching; log: {} (stop with Ctrl-C)",
                l.display()
            );
        }
    }
    // With remote.push_after_backup, runs are pushed too: the remote is
    // opened (and its password checked) before watching starts.
    let remote = if super::offsite::push_after_backup(cli)? {
        Some(super::offsite::open_remote(cli)?)
    } else {
        None
    };
    let interval = super::offsite::push_interval(cli)?;
    let root = opts.backup.settings.backup_root.clone();
    let pusher = remote
        .as_ref()
        .map(|r| super::pusher::Pusher::new(cli, r, root.clone(), interval));
    let mut failed = false;
    // Pushes run on their own thread (cli/pusher.rs): the loop below
    // never waits for one.
    let watched = std::thread::scope(|scope| {
        if let Some(p) = &pusher {
            scope.spawn(|| p.serve());
        }
        let watched = crate::watch::run(&opts, &mut |w| {
            if let Some(r) = &w.report {
                failed |= r.failed;
            }
            if cli.json || !cli.quiet {
                // A closed stdout must not stop the session: the log has it all.
                let _ = output::watch_run(&mut std::io::stdout().lock(), w, cli.json);
            }
            if let (Some(p), Some(_)) = (&pusher, &w.report) {
                p.run_done();
            }
        });
        if let Some(p) = &pusher {
            p.stop();
        }
        watched
    });
    watched?;
    drop(guard);
    Ok(outcome(failed))
}

pub(super) fn mirror(cli: &Cli, a: &MirrorArgs) -> Result<Outcome> {
    let _ = crate::log::init(console(cli), None);
    let opts = settings::mirror_options(a)?;
    let bar = TermProgress::new(cli);
    let r = crate::mirror::run(&opts, &bar);
    drop(bar);
    let r = r?;
    output::emit(cli, &r, |out| output::mirror(out, &r, cli.quiet))?;
    Ok(outcome(!r.problems.is_empty()))
}

pub(super) fn dupes(cli: &Cli, a: &DupesArgs) -> Result<Outcome> {
    let _ = crate::log::init(console(cli), None);
    let opts = settings::dupes_options(a)?;
    let bar = TermProgress::new(cli);
    let r = crate::dupes::run(&opts, &bar);
    drop(bar);
    let r = r?;
    output::emit(cli, &r, |out| output::dupes(out, &r, cli.quiet))?;
    Ok(outcome(!r.problems.is_empty()))
}
