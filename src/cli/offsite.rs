//! The off-site commands (`remote init`, `remote key …`,
//! `remote extend-locks`, `push`, `pull`)
//! and what every `--remote` command shares: which remote (flag >
//! `TROVE_REMOTE` > the config's `remote.url`), its password (file flag >
//! `TROVE_PASSWORD_FILE` > `TROVE_PASSWORD` > a prompt on a terminal), and
//! opening it. The engine is `crate::remote`; these only connect.

use super::args::{Cli, KeyCommand, PullArgs, RemoteInitArgs};
use super::exit::Outcome;
use super::output;
use super::progress::TermProgress;
use super::settings;
use crate::error::Error;
use crate::id::HashAlgo;
use crate::local::lock::{LockMode, RepoLock};
use crate::local::LocalRepo;
use crate::remote::backend;
use crate::remote::crypto::KdfParams;
use crate::remote::objlock::ObjectLock;
use crate::remote::repo::{RemoteRepo, DEFAULT_PACK_SIZE, PACK_SIZE_RANGE};
use anyhow::{Context, Result};
use std::io::IsTerminal;
use zeroize::Zeroizing;

/// The remote a command works on: `--remote`, else `TROVE_REMOTE`, else
/// the config's `remote.url`.
pub(super) fn remote_url(cli: &Cli) -> Result<String> {
    if let Some(u) = &cli.remote {
        return Ok(u.clone());
    }
    if let Ok(u) = std::env::var("TROVE_REMOTE") {
        if !u.is_empty() {
            return Ok(u);
        }
    }
    let from_config = settings::config_file(cli, true)?
        .and_then(|c| c.file.remote)
        .and_then(|r| r.url);
    from_config.ok_or_else(|| {
        Error::Usage(
            "no remote given: pass --remote URL (s3://BUCKET[/PREFIX] or file:///PATH), set TROVE_REMOTE, or set remote.url in the config".into(),
        )
        .into()
    })
}

/// The config's `remote` section (empty without a config file).
fn remote_section(cli: &Cli) -> Result<crate::config::RemoteSection> {
    Ok(settings::config_file(cli, true)?
        .and_then(|c| c.file.remote)
        .unwrap_or_default())
}

/// Whether the config asks for a push after every backup.
pub(super) fn push_after_backup(cli: &Cli) -> Result<bool> {
    Ok(remote_section(cli)?.push_after_backup.unwrap_or(false))
}

/// The least time between two pushes of a watch session
/// (`remote.push_interval`, checked against its bound when the config
/// was read).
pub(super) fn push_interval(cli: &Cli) -> Result<std::time::Duration> {
    let secs = remote_section(cli)?
        .push_interval
        .unwrap_or(crate::config::DEFAULT_PUSH_INTERVAL);
    Ok(std::time::Duration::from_secs(secs))
}

/// How a command reaches its remote: the `AWS_*` settings with the data
/// storage class (`class`, else the config's `remote.data_storage_class`),
/// and the bandwidth limits.
fn backend_settings(
    cli: &Cli,
    class: Option<&str>,
) -> Result<(backend::S3Settings, crate::remote::limit::Limits)> {
    let mut s3 = backend::S3Settings::from_env();
    s3.data_storage_class = match class {
        Some(c) => {
            backend::check_storage_class(c)
                .map_err(|e| Error::Usage(format!("--data-storage-class: {e}")))?;
            Some(c.to_string())
        }
        None => remote_section(cli)?.data_storage_class,
    };
    let limits = crate::remote::limit::Limits {
        upload_kib: cli.limit_upload,
        download_kib: cli.limit_download,
    };
    Ok((s3, limits))
}

/// Open the store at `url` as this command is told to (settings above).
fn open_backend(
    cli: &Cli,
    url: &str,
    create: bool,
    class: Option<&str>,
) -> Result<Box<dyn backend::Backend>> {
    let (s3, limits) = backend_settings(cli, class)?;
    Ok(crate::remote::limit::open(url, create, &s3, limits)
        .map_err(|e| crate::remote::repo::backend_error(url, "open", e))?)
}

/// The remote's password: `--password-file`/`TROVE_PASSWORD_FILE`, else
/// `TROVE_PASSWORD`, else a prompt when standard input is a terminal
/// (twice when `confirm`: a new password).
fn password(cli: &Cli, url: &str, confirm: bool) -> Result<Zeroizing<Vec<u8>>> {
    if let Some(f) = &cli.password_file {
        return read_password_file(f);
    }
    if let Some(p) = std::env::var_os("TROVE_PASSWORD") {
        use std::os::unix::ffi::OsStrExt;
        return Ok(Zeroizing::new(p.as_bytes().to_vec()));
    }
    prompt(&format!("password for {url}: "), confirm)
}

fn read_password_file(f: &std::path::Path) -> Result<Zeroizing<Vec<u8>>> {
    let mut text = Zeroizing::new(std::fs::read(f).map_err(|e| {
        Error::Usage(format!(
            "cannot read the password file {}: {e}",
            f.display()
        ))
    })?);
    // One trailing newline is the file's, not the password's.
    if text.last() == Some(&b'\n') {
        text.pop();
        if text.last() == Some(&b'\r') {
            text.pop();
        }
    }
    Ok(text)
}

fn prompt(question: &str, confirm: bool) -> Result<Zeroizing<Vec<u8>>> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage(
            "no password: set TROVE_PASSWORD_FILE (or pass --password-file FILE) or TROVE_PASSWORD; standard input is not a terminal to ask on".into(),
        )
        .into());
    }
    let first = Zeroizing::new(
        rpassword::prompt_password(question).context("reading the password from the terminal")?,
    );
    if confirm {
        let again = Zeroizing::new(
            rpassword::prompt_password("again: ")
                .context("reading the password from the terminal")?,
        );
        if *first != *again {
            return Err(
                Error::Usage("the two passwords differ; nothing was changed".into()).into(),
            );
        }
    }
    if first.is_empty() {
        return Err(Error::Usage("an empty password is not accepted".into()).into());
    }
    Ok(Zeroizing::new(first.as_bytes().to_vec()))
}

/// Open the remote a command names, with its password.
pub(super) fn open_remote(cli: &Cli) -> Result<RemoteRepo> {
    open_remote_with(cli, None)
}

/// [`open_remote`], writing data packs in `class` (`push --data-storage-class`).
pub(super) fn open_remote_with(cli: &Cli, class: Option<&str>) -> Result<RemoteRepo> {
    let url = remote_url(cli)?;
    let b = open_backend(cli, &url, false, class)?;
    let remote = RemoteRepo::open_asking(b, &mut || {
        password(cli, &url, false).map_err(|e| match e.downcast::<Error>() {
            Ok(e) => e,
            Err(e) => Error::Usage(format!("{e:#}")),
        })
    })?;
    if let Some(root) = settings::cache_root(cli) {
        remote.use_cache(&root);
    }
    Ok(remote)
}

pub(super) fn remote_init(cli: &Cli, a: &RemoteInitArgs) -> Result<Outcome> {
    let _ = crate::log::init(crate::log::console_level(cli.verbose, cli.quiet), None);
    let url = match &a.url {
        Some(u) => u.clone(),
        None => remote_url(cli)?,
    };
    let pack_size = a.pack_size.unwrap_or(DEFAULT_PACK_SIZE);
    if !PACK_SIZE_RANGE.contains(&pack_size) {
        return Err(Error::Usage(format!("--pack-size {pack_size} is outside 1M..512M")).into());
    }
    // The hash of the repository it will replicate: --hash, else the
    // --repo repository's, else blake3.
    let algo = match (a.hash, &cli.repo) {
        (Some(h), _) => HashAlgo::from(h),
        (None, Some(r)) if LocalRepo::exists(r) => LocalRepo::open(r)?.algo(),
        _ => HashAlgo::Blake3,
    };
    let lock = match a.object_lock {
        Some(days) => Some(
            ObjectLock::new(days, a.object_lock_mode.into())
                .map_err(|e| Error::Usage(format!("--object-lock: {e}")))?,
        ),
        None => None,
    };
    if lock.is_some() && url.starts_with("file://") {
        // Before the password prompt: a folder can never be locked.
        return Err(Error::Usage(format!(
            "--object-lock needs an S3 bucket with object lock; the folder remote {url} cannot lock its files"
        ))
        .into());
    }
    // The password first: nothing is created for a command that cannot finish.
    let pw = password(cli, &url, true)?;
    let b = open_backend(cli, &url, true, None)?;
    let r = RemoteRepo::init_locked(b, &pw, algo, pack_size, KdfParams::DEFAULT, lock)?;
    let summary = serde_json::json!({
        "remote": r.url(),
        "hash": algo.name(),
        "pack_size": pack_size,
        "key": r.key_id(),
        "object_lock": lock.map(|l| serde_json::json!({"days": l.days, "mode": l.mode})),
        "requests": r.backend().stats(),
    });
    emit(cli, &summary, |out| {
        use std::io::Write;
        writeln!(
            out,
            "created remote repository {} ({}, packs of {}); keep its password safe: without it nothing can be restored",
            r.url(),
            algo.name(),
            crate::backup::human_bytes(pack_size)
        )?;
        if let Some(l) = lock {
            let every = if l.days >= 2 {
                format!("{} day(s)", l.days / 2)
            } else {
                "12 hours".to_string()
            };
            writeln!(
                out,
                "every object it stores is locked ({}) for {} day(s) from its upload; run `trove remote extend-locks` at least every {every} to keep what snapshots need locked",
                l.mode,
                l.days,
            )?;
        }
        Ok(())
    })?;
    Ok(Outcome::Ok)
}

pub(super) fn key(cli: &Cli, k: &KeyCommand) -> Result<Outcome> {
    let _ = crate::log::init(crate::log::console_level(cli.verbose, cli.quiet), None);
    let r = open_remote(cli)?;
    match k {
        KeyCommand::Add { new_password_file } => {
            let new = match (new_password_file, std::env::var_os("TROVE_NEW_PASSWORD")) {
                (Some(f), _) => read_password_file(f)?,
                (None, Some(p)) => {
                    use std::os::unix::ffi::OsStrExt;
                    Zeroizing::new(p.as_bytes().to_vec())
                }
                (None, None) => prompt("new password: ", true)?,
            };
            let id = r.add_key(&new, KdfParams::DEFAULT)?;
            emit(
                cli,
                &serde_json::json!({"remote": r.url(), "added": id, "requests": r.backend().stats()}),
                |out| {
                    use std::io::Write;
                    writeln!(out, "added key {} to {}", &id[..16.min(id.len())], r.url())
                },
            )?;
        }
        KeyCommand::List => {
            let keys = r.list_keys()?;
            emit_remote(cli, Some(&r), &keys, |out| {
                if cli.quiet {
                    Ok(())
                } else {
                    output::keys(out, &keys)
                }
            })?;
        }
        KeyCommand::Remove { id } => {
            let gone = r.remove_key(id)?;
            emit(
                cli,
                &serde_json::json!({"remote": r.url(), "removed": gone, "requests": r.backend().stats()}),
                |out| {
                    use std::io::Write;
                    writeln!(
                        out,
                        "removed key {} from {}",
                        &gone[..16.min(gone.len())],
                        r.url()
                    )
                },
            )?;
        }
    }
    Ok(Outcome::Ok)
}

/// `remote extend-locks`: renew the lock of every object still needed.
pub(super) fn extend_locks(cli: &Cli, a: &super::args::ExtendLocksArgs) -> Result<Outcome> {
    let _ = crate::log::init(crate::log::console_level(cli.verbose, cli.quiet), None);
    let r = open_remote(cli)?;
    let bar = TermProgress::new(cli);
    let report = crate::remote::locks::extend(&r, a.days, &bar);
    drop(bar);
    let report = report?;
    for v in &report.vanished {
        tracing::warn!(
            "{}: {v} disappeared while its lock was renewed (a prune running at the same time?)",
            report.remote
        );
    }
    emit(cli, &report, |out| {
        use std::io::Write;
        writeln!(
            out,
            "{}: {} object(s) needed, {} lock(s) extended to {} ({}), {} already locked as long",
            report.remote,
            report.objects,
            report.extended,
            report.until,
            report.mode,
            report.already
        )
    })?;
    Ok(Outcome::Ok)
}

/// Push the repository `cli` names to its remote.
pub(super) fn push(cli: &Cli, a: &super::args::PushArgs) -> Result<Outcome> {
    let _ = crate::log::init(crate::log::console_level(cli.verbose, cli.quiet), None);
    let root = settings::repo_root(cli)?;
    let repo = LocalRepo::open(&root)?;
    let remote = open_remote_with(cli, a.data_storage_class.as_deref())?;
    let lock = RepoLock::acquire(&repo, LockMode::Shared, cli.wait)?;
    push_to(cli, &repo, &remote, lock, true, a.repair)
}

/// Push `repo` to `remote` and report it (also the end of `backup --push`
/// and a watch session's pushes). `lock` (shared) is held only while the
/// local snapshots are listed (see `push::run_releasing`). `print`: on
/// standard output, with a progress bar (a watch session logs it only,
/// its output being one line per run).
pub(super) fn push_to(
    cli: &Cli,
    repo: &LocalRepo,
    remote: &RemoteRepo,
    lock: RepoLock,
    print: bool,
    repair: bool,
) -> Result<Outcome> {
    let mut lock = Some(lock);
    let bar = print.then(|| TermProgress::new(cli));
    let progress: &dyn crate::progress::Progress = match &bar {
        Some(b) => b,
        None => &crate::progress::NoProgress,
    };
    let report = crate::remote::push::run_releasing(repo, remote, progress, repair, &mut || {
        drop(lock.take())
    });
    drop(bar);
    drop(lock);
    let report = report?;
    tracing::info!(target: "trove::summary", "{}", output::push_line(&report));
    for m in &report.missing {
        tracing::warn!(
            "not on the remote: {} (snapshot {}): its content was removed locally by retention before this push",
            m.path,
            m.snapshot
        );
    }
    if print {
        let v = with_cache(remote, &report)?;
        emit(cli, &v, |out| output::push(out, &report, cli.quiet))?;
    }
    Ok(if report.skipped.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Problems
    })
}

/// Rebuild a repository at DEST from the remote alone.
pub(super) fn pull(cli: &Cli, a: &PullArgs) -> Result<Outcome> {
    let _ = crate::log::init(crate::log::console_level(cli.verbose, cli.quiet), None);
    let remote = open_remote(cli)?;
    let algo = crate::repo::RepoRead::algo(&remote);
    let repo = if LocalRepo::exists(&a.dest) {
        let r = LocalRepo::open_writable(&a.dest)?;
        r.check_algo(Some(algo))?;
        r
    } else {
        LocalRepo::init(&a.dest, algo)?
    };
    let _lock = RepoLock::acquire(&repo, LockMode::Exclusive, cli.wait)?;
    repo.begin_write()?;
    let bar = TermProgress::new(cli);
    let report = {
        let w = repo.writer();
        crate::remote::pull::run(&remote, &w, &bar)
    };
    drop(bar);
    let report = report?;
    // The browsable tree of the latest snapshot, as a backup leaves it.
    let materialized = match crate::browsable::apply::rebuild_latest(&repo, None, false) {
        Ok(m) => Some(m),
        Err(Error::NoSuchSnapshot(_)) => None,
        Err(e) => return Err(e).context("building the browsable tree of the pulled repository"),
    };
    let failures = materialized.as_ref().map_or(0, |m| m.failures_total);
    let summary = serde_json::json!({
        "pull": report,
        "repository": repo.root,
        "browsable_failures": failures,
        "requests": remote.backend().stats(),
    });
    let summary = with_cache(&remote, &summary)?;
    emit(cli, &summary, |out| {
        output::pull(out, &report, &repo.root, cli.quiet)
    })?;
    Ok(if report.skipped.is_empty() && failures == 0 {
        Outcome::Ok
    } else {
        Outcome::Problems
    })
}

/// `verify --remote`.
pub(super) fn verify(cli: &Cli, a: &super::args::VerifyArgs) -> Result<Outcome> {
    let _ = crate::log::init(crate::log::console_level(cli.verbose, cli.quiet), None);
    if let (Some(s), Some(_)) = (&a.read_data_subset, a.seed) {
        if !s.is_random() {
            return Err(Error::Usage(format!(
                "--seed chooses the packs of --sample or --read-data-subset P%|SIZE; the slice {s} is fixed by the pack names and takes no seed"
            ))
            .into());
        }
    }
    let remote = open_remote(cli)?;
    let opts = crate::remote::check::CheckOptions {
        read_data: a.read_data,
        sample_percent: a.sample,
        subset: a.read_data_subset,
        seed: a.seed,
    };
    let bar = TermProgress::new(cli);
    let report = crate::remote::check::run(&remote, &opts, &bar);
    drop(bar);
    let report = report?;
    emit(cli, &report, |out| {
        output::verify_remote(out, &report, cli.quiet)
    })?;
    Ok(if report.store.problems.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Problems
    })
}

/// `prune --remote`: the remote's retention (flags over the config's
/// `remote.retention`) and garbage collection.
pub(super) fn prune(cli: &Cli, a: &super::args::PruneArgs) -> Result<Outcome> {
    let _ = crate::log::init(
        if a.dry_run {
            crate::log::console_level(cli.verbose, cli.quiet)
                .max(tracing::level_filters::LevelFilter::INFO)
        } else {
            crate::log::console_level(cli.verbose, cli.quiet)
        },
        None,
    );
    let section = remote_section(cli)?;
    let flags = settings::keep_flags(a)?;
    let policy = section
        .retention
        .as_ref()
        .map(|r| r.policy())
        .unwrap_or_default()
        .overridden_by(flags);
    crate::config::check_flag("--grace", "remote.prune_grace_minutes", a.grace)?;
    let grace = a
        .grace
        .or(section.prune_grace_minutes)
        .map_or(crate::remote::prune::DEFAULT_GRACE, |m| {
            std::time::Duration::from_secs(m * 60)
        });
    let remote = open_remote(cli)?;
    let opts = crate::remote::prune::PruneOptions {
        policy,
        max_unused_percent: a
            .max_unused
            .or(section.max_unused)
            .unwrap_or(crate::remote::prune::DEFAULT_MAX_UNUSED),
        grace,
        dry_run: a.dry_run,
        unlock: a.unlock,
        now_ns: crate::model::now_ns(),
    };
    let bar = TermProgress::new(cli);
    let report = crate::remote::prune::run(&remote, &opts, &bar);
    drop(bar);
    let report = report?;
    let v = with_cache(&remote, &report)?;
    emit(cli, &v, |out| {
        output::prune_remote(out, &report, cli.verbose)
    })?;
    Ok(Outcome::Ok)
}

/// `stats --remote`: the figures of `stats`, and the remote's own; with
/// `--repo` (or a config's backup_root), the backlog: local snapshots
/// not on the remote yet.
pub(super) fn stats(cli: &Cli) -> Result<Outcome> {
    let _ = crate::log::init(crate::log::console_level(cli.verbose, cli.quiet), None);
    let remote = open_remote(cli)?;
    let st = crate::gc::stats(&remote)?;
    let backlog = match local_for_backlog(cli)? {
        Some(repo) => {
            let _lock = RepoLock::acquire(&repo, LockMode::Shared, cli.wait)?;
            let names = remote.commit_names()?;
            Some(crate::remote::push::backlog(&repo, &remote, &names)?)
        }
        None => None,
    };
    // Last, so that its requests count every one this command made.
    let rs = remote.stats()?;
    let mut both = serde_json::json!({ "repository": st, "remote": rs });
    if let (Some(b), Some(m)) = (&backlog, both.as_object_mut()) {
        if let serde_json::Value::Object(fields) = serde_json::to_value(b)? {
            m.extend(fields);
        }
    }
    both["requests"] = serde_json::to_value(remote.backend().stats())?;
    let both = with_cache(&remote, &both)?;
    emit(cli, &both, |out| {
        output::stats(out, &st)?;
        output::remote_stats(out, &rs)?;
        if let Some(b) = &backlog {
            use std::io::Write;
            writeln!(out, "backlog: {}", b.describe())?;
        }
        Ok(())
    })?;
    Ok(Outcome::Ok)
}

/// The local repository whose backlog `stats --remote` reports: `--repo`
/// (or TROVE_REPO), else the config's backup_root when it holds one.
fn local_for_backlog(cli: &Cli) -> Result<Option<LocalRepo>> {
    if cli.repo.is_some() {
        let root = settings::repo_root(cli)?;
        return Ok(Some(LocalRepo::open(&root)?));
    }
    match settings::config_file(cli, true)?.and_then(|c| c.file.backup_root) {
        Some(root) if LocalRepo::exists(&root) => Ok(Some(LocalRepo::open(&root)?)),
        _ => Ok(None),
    }
}

/// [`emit`] for a command that talked to `remote`: its `--json` says
/// the requests made and bytes moved (`requests`, as push reports them),
/// so a run can be priced. An object gains the field; a list (whose
/// shape equals the local command's) is printed unchanged and the
/// requests go to standard error as one JSON object.
pub(super) fn emit_remote<R: serde::Serialize>(
    cli: &Cli,
    remote: Option<&RemoteRepo>,
    report: &R,
    human: impl FnOnce(&mut std::io::StdoutLock<'static>) -> std::io::Result<()>,
) -> Result<()> {
    let Some(remote) = remote else {
        return output::emit(cli, report, human);
    };
    let stats = remote.backend().stats();
    if !cli.json {
        return output::emit(cli, report, human);
    }
    let mut v = serde_json::to_value(report)?;
    match &mut v {
        serde_json::Value::Object(m) => {
            m.entry("requests").or_insert(serde_json::to_value(stats)?);
            let v = with_cache(remote, &v)?;
            output::json(&mut std::io::stdout().lock(), &v)
        }
        _ => {
            output::json(&mut std::io::stdout().lock(), &v)?;
            list_requests(remote)
        }
    }
}

/// After a list printed as `--json` from `remote` (by [`emit_remote`],
/// or row by row): the requests it made, as one JSON object on standard
/// error.
pub(super) fn list_requests(remote: &RemoteRepo) -> Result<()> {
    let (url, stats) = (remote.url(), remote.backend().stats());
    let line = serde_json::json!({ "remote": url, "requests": stats });
    let line = with_cache(remote, &line)?;
    use std::io::Write;
    writeln!(std::io::stderr().lock(), "{line}")?;
    Ok(())
}

/// `report` as JSON with, beside its `requests`, what the local cache
/// did (`cache`: reads it answered and their bytes, entries stored and
/// evicted; these are not requests), when the remote is cached.
fn with_cache<R: serde::Serialize>(remote: &RemoteRepo, report: &R) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(report)?;
    if let (serde_json::Value::Object(m), Some(c)) = (&mut v, remote.cache_stats()) {
        m.entry("cache").or_insert(serde_json::to_value(c)?);
    }
    Ok(v)
}

/// `commands::emit`, silent in its human form under `-q`.
fn emit<R: serde::Serialize>(
    cli: &Cli,
    report: &R,
    human: impl FnOnce(&mut std::io::StdoutLock<'static>) -> std::io::Result<()>,
) -> Result<()> {
    output::emit(
        cli,
        report,
        |out| if cli.quiet { Ok(()) } else { human(out) },
    )
}
