//! Settings resolution: from the parsed arguments (`args`) and the config
//! file to the engine's plain `*Options`, with the documented precedence
//! command line > environment (clap's `env`, e.g. `TROVE_REPO`) > config
//! file > default. Each domain options struct is built here exactly once;
//! nothing here runs the engine or prints.

use super::args::{
    BackupArgs, Cli, DupesArgs, FilterArgs, MirrorArgs, PruneArgs, RestoreArgs, SourceArgs,
    VerifyArgs, WatchArgs,
};
use crate::backup::{self, BackupOptions};
use crate::config::{
    self, BackupOverrides, BackupSettings, LoadedConfig, RetentionConfig, WatchConfig,
};
use crate::error::Error;
use crate::pathbytes;
use crate::prune::PruneOptions;
use crate::retention::Policy;
use crate::watch::WatchOptions;
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The config file to use: `--config`, else `./config.json` when present
/// (only where `required`: for commands that read settings from it).
pub(super) fn config_file(cli: &Cli, required: bool) -> Result<Option<LoadedConfig>> {
    let path = match &cli.config {
        Some(p) => Some(p.clone()),
        None if required => {
            let p = PathBuf::from("config.json");
            p.is_file().then_some(p)
        }
        None => None,
    };
    match path {
        Some(p) => Ok(Some(LoadedConfig::load(&p)?)),
        None => Ok(None),
    }
}

/// The repository of a command that names no paths: `--repo` (or
/// `TROVE_REPO`), else the config's `backup_root`.
pub(super) fn repo_root(cli: &Cli) -> Result<PathBuf> {
    let from_config = match &cli.repo {
        Some(_) => None,
        None => config_file(cli, true)?.and_then(|c| c.file.backup_root),
    };
    pick_repo(cli.repo.as_deref(), from_config).ok_or_else(|| {
        Error::Usage(
            "no repository given: pass --repo DIR, set TROVE_REPO, or run where a config.json names backup_root".into(),
        )
        .into()
    })
}

/// The folder remotes are cached in (`None`: no cache): nothing with
/// `--no-cache`, else `--cache-dir`/`TROVE_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/trove`, else `$HOME/.cache/trove` (where restic and
/// kopia users look for theirs).
pub(super) fn cache_root(cli: &Cli) -> Option<PathBuf> {
    if cli.no_cache {
        return None;
    }
    pick_cache_root(
        cli.cache_dir.as_deref(),
        std::env::var_os("XDG_CACHE_HOME").as_deref(),
        std::env::var_os("HOME").as_deref(),
    )
}

/// [`cache_root`] from its three sources. Empty values count as unset;
/// a relative `XDG_CACHE_HOME` is ignored, as the XDG specification asks.
fn pick_cache_root(
    flag: Option<&Path>,
    xdg: Option<&std::ffi::OsStr>,
    home: Option<&std::ffi::OsStr>,
) -> Option<PathBuf> {
    if let Some(d) = flag.filter(|d| !d.as_os_str().is_empty()) {
        return Some(d.to_path_buf());
    }
    if let Some(x) = xdg.map(Path::new).filter(|x| x.is_absolute()) {
        return Some(x.join("trove"));
    }
    home.filter(|h| !h.is_empty())
        .map(|h| Path::new(h).join(".cache").join("trove"))
}

/// `--repo`/`TROVE_REPO` over the config's `backup_root`.
fn pick_repo(flag: Option<&Path>, config: Option<PathBuf>) -> Option<PathBuf> {
    flag.map(Path::to_path_buf).or(config)
}

/// A backup or watch run's settings: the source options over the config
/// file, checked (`backup::preflight`).
pub(super) fn source_settings(
    cli: &Cli,
    src: &SourceArgs,
) -> Result<(BackupSettings, Option<LoadedConfig>)> {
    let mut ov = BackupOverrides {
        follow_symlinks: src.follow_symlinks,
        one_file_system: src.one_file_system,
        no_xattrs: src.no_xattrs,
        on_error: src.on_error.map(Into::into),
        hash: src.hash.map(Into::into),
        ..BackupOverrides::default()
    };
    filter_overrides(&src.filter, &mut ov)?;
    let (settings, cfg) = resolve_settings(cli, &src.paths, ov)?;
    backup::preflight(&settings)?;
    Ok((settings, cfg))
}

/// Settings for a run from `PATH…` (SOURCE… DEST, or sources with
/// --repo) or the config file, with command-line overrides.
fn resolve_settings(
    cli: &Cli,
    paths: &[PathBuf],
    mut ov: BackupOverrides,
) -> Result<(BackupSettings, Option<LoadedConfig>)> {
    let cfg = if paths.is_empty() {
        config_file(cli, true)?
    } else {
        config_file(cli, false)?
    };
    let (sources, root) = split_paths(paths, cli.repo.as_deref())?;
    if !sources.is_empty() {
        ov.sources = sources;
    }
    if root.is_some() {
        ov.backup_root = root;
    }
    if paths.is_empty() && cfg.is_none() && cli.repo.is_none() {
        return Err(Error::Usage(
            "nothing to back up: no ./config.json here; pass SOURCE… DEST or --config FILE".into(),
        )
        .into());
    }
    let settings = BackupSettings::resolve(ov, cfg.as_ref())?;
    Ok((settings, cfg))
}

/// The sources and backup root the positionals and `--repo` (or
/// `TROVE_REPO`) give, over the config's: with the flag every path is a
/// source and the flag names the root; without it, SOURCE… DEST. Empty and
/// None where nothing was given.
fn split_paths(paths: &[PathBuf], repo: Option<&Path>) -> Result<(Vec<PathBuf>, Option<PathBuf>)> {
    match (paths, repo) {
        (_, Some(r)) => Ok((paths.to_vec(), Some(r.to_path_buf()))),
        ([], None) => Ok((Vec::new(), None)),
        ([_], None) => Err(Error::Usage(
            "give SOURCE… DEST (at least two paths), or SOURCE with --repo DEST".into(),
        )
        .into()),
        ([sources @ .., dest], None) => Ok((sources.to_vec(), Some(dest.clone()))),
    }
}

pub(super) fn restore_options(a: &RestoreArgs) -> crate::restore::RestoreOptions {
    crate::restore::RestoreOptions {
        target: a.target.clone(),
        paths: a.paths.clone(),
        overwrite: a.overwrite,
        dry_run: a.dry_run,
        numeric_owner: a.numeric_owner,
        xattrs: !a.no_xattrs,
    }
}

pub(super) fn verify_options(a: &VerifyArgs) -> crate::verify::VerifyOptions {
    crate::verify::VerifyOptions {
        quick: a.quick,
        sample_percent: a.sample,
        seed: a.seed,
    }
}

/// Mirror reads no config file: its flags are all there is.
pub(super) fn mirror_options(a: &MirrorArgs) -> Result<crate::mirror::MirrorOptions> {
    Ok(crate::mirror::MirrorOptions {
        src: a.src.clone(),
        dest: a.dest.clone(),
        apply: a.apply,
        scan: scan_options(&a.filter, a.one_file_system)?,
    })
}

/// Dupes reads no config file; `--min-size` defaults to 1 (empty files are
/// never duplicates worth reporting).
pub(super) fn dupes_options(a: &DupesArgs) -> Result<crate::dupes::DupesOptions> {
    Ok(crate::dupes::DupesOptions {
        paths: a.paths.clone(),
        min_size: a.min_size.unwrap_or(1),
        scan: scan_options(&a.filter, a.one_file_system)?,
    })
}

/// The walk options of the commands that do not read config.json
/// (mirror, dupes): the filter flags alone.
fn scan_options(f: &FilterArgs, one_file_system: bool) -> Result<crate::scan::ScanOptions> {
    for n in &f.exclude_if_present {
        config::check_marker_name(n).map_err(Error::Usage)?;
    }
    let mut exclude = f.exclude.clone();
    for file in &f.exclude_file {
        exclude.extend(config::read_exclude_file(file)?);
    }
    Ok(crate::scan::ScanOptions {
        follow_symlinks: false,
        one_file_system,
        excludes: crate::scan::Excludes::new(&exclude)?,
        skip_dirs: Vec::new(),
        filters: crate::scan::Filters {
            if_present: f
                .exclude_if_present
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
            caches: f.exclude_caches,
            larger_than: f.exclude_larger_than,
        },
        xattrs: false,
        specials: false,
    })
}

/// The filter flags as backup/watch overrides (merged with the config's
/// filters by `BackupSettings::resolve`).
fn filter_overrides(f: &FilterArgs, ov: &mut BackupOverrides) -> Result<()> {
    for n in &f.exclude_if_present {
        config::check_marker_name(n).map_err(Error::Usage)?;
    }
    ov.exclude = f.exclude.clone();
    ov.exclude_file = f.exclude_file.clone();
    ov.exclude_if_present = f.exclude_if_present.clone();
    ov.exclude_caches = f.exclude_caches;
    ov.exclude_larger_than = f.exclude_larger_than;
    Ok(())
}

/// The options of a `backup --stdin` or `--stdin-from-command` run, or
/// None for an ordinary backup. Its only positional is DEST (none with
/// `--repo` or a config file's `backup_root`); the config's retention,
/// keep policy and log settings apply, its sources do not.
pub(super) fn stdin_options(cli: &Cli, a: &BackupArgs) -> Result<Option<backup::StdinOptions>> {
    if !a.command.is_empty() && !a.stdin_from_command {
        return Err(Error::Usage(
            "a command after `--` is run only with --stdin-from-command".into(),
        )
        .into());
    }
    let source = if a.stdin {
        backup::StdinSource::Stdin
    } else if a.stdin_from_command {
        backup::StdinSource::Command(a.command.clone())
    } else {
        if a.stdin_filename.is_some() {
            return Err(Error::Usage(
                "--stdin-filename names the file of --stdin or --stdin-from-command: give one of them".into(),
            )
            .into());
        }
        return Ok(None);
    };
    let name = a
        .stdin_filename
        .as_ref()
        .map_or_else(|| b"stdin".to_vec(), |n| pathbytes::os_bytes(n).to_vec());
    backup::check_stdin_name(&name)?;
    let root = match (a.src.paths.as_slice(), cli.repo.as_deref()) {
        ([], r) => r.map(Path::to_path_buf),
        ([dest], None) => Some(dest.clone()),
        _ => {
            return Err(Error::Usage(
                "a stream is stored without scanning any source: give only DEST (or --repo DIR), e.g. `trove backup --stdin --stdin-filename db.sql /mnt/backup`".into(),
            )
            .into())
        }
    };
    let cfg = config_file(cli, a.src.paths.is_empty())?;
    if root.is_none() && cfg.is_none() {
        return Err(Error::Usage(
            "no repository given: pass DEST or --repo DIR, or run where a config.json names backup_root".into(),
        )
        .into());
    }
    if a.stdin && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(Error::Usage(
            "--stdin reads standard input, which is a terminal here: pipe the data in (`pg_dump mydb | trove backup --stdin …`), or use --stdin-from-command".into(),
        )
        .into());
    }
    let ov = BackupOverrides {
        backup_root: root,
        hash: a.src.hash.map(Into::into),
        no_scan: true,
        ..BackupOverrides::default()
    };
    let settings = BackupSettings::resolve(ov, cfg.as_ref())?;
    Ok(Some(backup::StdinOptions {
        settings,
        name,
        source,
        allow_damaged_latest: a.allow_damaged_latest,
        wait: cli.wait,
    }))
}

/// One backup run's options.
pub(super) fn backup_options(
    settings: BackupSettings,
    a: &BackupArgs,
    wait: bool,
) -> BackupOptions {
    BackupOptions {
        settings,
        rehash: a.rehash,
        dry_run: a.dry_run,
        always_snapshot: a.always_snapshot,
        allow_damaged_latest: a.allow_damaged_latest,
        wait,
        scope: None,
    }
}

/// Retention settings from the config file (when there is one), and its
/// `log_dir`.
pub(super) fn retention_settings(cli: &Cli) -> Result<(RetentionConfig, Option<PathBuf>)> {
    Ok(match config_file(cli, true)? {
        Some(c) => (
            c.file.retention.clone().unwrap_or_default(),
            c.file.log_dir.clone(),
        ),
        None => Default::default(),
    })
}

/// The `--keep-*` flags, each checked against the bound of the config key
/// it overrides.
pub(super) fn keep_flags(a: &PruneArgs) -> Result<Policy> {
    for (flag, key, v) in [
        ("--keep-last", "retention.keep_last", a.keep_last),
        ("--keep-hourly", "retention.keep_hourly", a.keep_hourly),
        ("--keep-daily", "retention.keep_daily", a.keep_daily),
        ("--keep-weekly", "retention.keep_weekly", a.keep_weekly),
        ("--keep-monthly", "retention.keep_monthly", a.keep_monthly),
        ("--keep-yearly", "retention.keep_yearly", a.keep_yearly),
        (
            "--keep-within-days",
            "retention.keep_within_days",
            a.keep_within_days,
        ),
    ] {
        config::check_flag(flag, key, v.map(u64::from))?;
    }
    Ok(Policy {
        keep_last: a.keep_last,
        keep_hourly: a.keep_hourly,
        keep_daily: a.keep_daily,
        keep_weekly: a.keep_weekly,
        keep_monthly: a.keep_monthly,
        keep_yearly: a.keep_yearly,
        keep_within_days: a.keep_within_days,
    })
}

/// The options of a prune, or of the dry run behind `stats`' reclaimable
/// figures (no flags): each `--keep-*` flag over its config key; the
/// per-file rules from the config, else their defaults.
pub(super) fn prune_options(
    ret: &RetentionConfig,
    flags: Policy,
    dry_run: bool,
    now_ns: i64,
) -> PruneOptions {
    PruneOptions {
        policy: ret.policy().overridden_by(flags),
        max_versions: ret
            .max_versions_per_file
            .unwrap_or(config::DEFAULT_MAX_VERSIONS),
        deleted_max_age_days: ret.deleted_max_age_days,
        dry_run,
        now_ns,
    }
}

/// At most a day: `Duration::from_secs_f64` panics on a huge number.
const MAX_POLL_SECS: f64 = 86_400.0;

/// A watch session's timing, resolved.
#[derive(Clone, Copy, Debug, PartialEq)]
struct WatchTiming {
    debounce: Duration,
    full_scan_every: Duration,
    poll: Option<Duration>,
}

/// `--debounce` and `--full-scan-interval` over `watch.*` in the config
/// over the defaults; `--poll` has no config key. The config's values were
/// checked when it was read; the flags are checked here.
fn watch_timing(a: &WatchArgs, cfg: &WatchConfig) -> Result<WatchTiming> {
    let debounce = a
        .debounce
        .or(cfg.debounce_ms)
        .unwrap_or(crate::watch::DEFAULT_DEBOUNCE_MS);
    let full = a
        .full_scan_interval
        .or(cfg.full_scan_interval)
        .unwrap_or(crate::watch::DEFAULT_FULL_SCAN_SECS);
    config::check_flag("--debounce", "watch.debounce_ms", a.debounce)?;
    config::check_flag(
        "--full-scan-interval",
        "watch.full_scan_interval",
        a.full_scan_interval,
    )?;
    let poll = match a.poll {
        Some(p) if !(p > 0.0 && p <= MAX_POLL_SECS) => {
            return Err(Error::Usage(format!(
                "--poll {p}: out of range (allowed: above 0 to {MAX_POLL_SECS} seconds)"
            ))
            .into())
        }
        Some(p) => Some(Duration::from_secs_f64(p)),
        None => None,
    };
    Ok(WatchTiming {
        debounce: Duration::from_millis(debounce),
        full_scan_every: Duration::from_secs(full),
        poll,
    })
}

/// A watch session's options: every run is a plain backup that waits for
/// the lock (a manual run may hold it for a while).
pub(super) fn watch_options(
    a: &WatchArgs,
    settings: BackupSettings,
    cfg: Option<&LoadedConfig>,
) -> Result<WatchOptions> {
    let wcfg = cfg.and_then(|c| c.file.watch.clone()).unwrap_or_default();
    let t = watch_timing(a, &wcfg)?;
    Ok(WatchOptions {
        backup: BackupOptions {
            settings,
            rehash: false,
            dry_run: false,
            always_snapshot: false,
            allow_damaged_latest: false,
            wait: true,
            scope: None,
        },
        debounce: t.debounce,
        full_scan_every: t.full_scan_every,
        poll: t.poll,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::SourceArgs;

    /// `--debounce`, `--full-scan-interval`, `--poll` as given.
    type WatchFlags = (Option<u64>, Option<u64>, Option<f64>);
    /// Sources and backup root, as `split_paths` gives them.
    type Split = (Vec<PathBuf>, Option<PathBuf>);
    /// Debounce, full-scan interval, poll interval.
    type Timing = (Duration, Duration, Option<Duration>);

    fn watch_args(debounce: Option<u64>, full: Option<u64>, poll: Option<f64>) -> WatchArgs {
        WatchArgs {
            src: SourceArgs {
                paths: Vec::new(),
                filter: FilterArgs::default(),
                one_file_system: false,
                follow_symlinks: false,
                no_xattrs: false,
                on_error: None,
                hash: None,
            },
            debounce,
            poll,
            full_scan_interval: full,
        }
    }

    #[test]
    fn the_cache_folder_is_the_flag_else_xdg_else_home() {
        use std::ffi::OsStr;
        let p = |s: &str| Some(PathBuf::from(s));
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            Option<PathBuf>,
        );
        let cases: [Case; 7] = [
            (Some("/c"), Some("/x"), Some("/h"), p("/c")),
            (Some("rel"), None, None, p("rel")),
            (None, Some("/x"), Some("/h"), p("/x/trove")),
            (Some(""), Some("/x"), Some("/h"), p("/x/trove")),
            (None, Some("relative"), Some("/h"), p("/h/.cache/trove")),
            (None, Some(""), Some("/h"), p("/h/.cache/trove")),
            (None, None, Some(""), None),
        ];
        for (flag, xdg, home, want) in cases {
            assert_eq!(
                pick_cache_root(
                    flag.map(Path::new),
                    xdg.map(OsStr::new),
                    home.map(OsStr::new)
                ),
                want,
                "{flag:?} {xdg:?} {home:?}"
            );
        }
    }

    #[test]
    fn repo_flag_or_env_beats_the_config() {
        let p = |s: &str| Some(PathBuf::from(s));
        let cases: [(Option<&str>, Option<PathBuf>, Option<PathBuf>); 4] = [
            (Some("/flag"), p("/config"), p("/flag")),
            (Some("/flag"), None, p("/flag")),
            (None, p("/config"), p("/config")),
            (None, None, None),
        ];
        for (flag, config, want) in cases {
            assert_eq!(
                pick_repo(flag.map(Path::new), config.clone()),
                want,
                "{flag:?} {config:?}"
            );
        }
    }

    #[test]
    fn positionals_are_source_dest_unless_repo_names_the_root() {
        let v = |ps: &[&str]| ps.iter().map(PathBuf::from).collect::<Vec<_>>();
        let p = |s: &str| Some(PathBuf::from(s));
        let cases: [(&[&str], Option<&str>, Option<Split>); 7] = [
            (&[], None, Some((v(&[]), None))),
            (&[], Some("/r"), Some((v(&[]), p("/r")))),
            (&["s"], None, None),
            (&["s"], Some("/r"), Some((v(&["s"]), p("/r")))),
            (&["s", "d"], None, Some((v(&["s"]), p("d")))),
            (&["s", "t", "d"], None, Some((v(&["s", "t"]), p("d")))),
            (
                &["s", "t", "d"],
                Some("/r"),
                Some((v(&["s", "t", "d"]), p("/r"))),
            ),
        ];
        for (paths, repo, want) in cases {
            let got = split_paths(&v(paths), repo.map(Path::new));
            match want {
                Some(w) => assert_eq!(got.ok(), Some(w), "{paths:?} {repo:?}"),
                None => {
                    let e = got.expect_err("SOURCE without DEST");
                    assert_eq!(crate::cli::exit::exit_code(&e), crate::cli::ExitCode::Usage);
                    assert!(e.to_string().contains("SOURCE… DEST"), "{e}");
                }
            }
        }
    }

    #[test]
    fn watch_timing_is_flag_then_config_then_default() {
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        let cfg = |d, f| WatchConfig {
            debounce_ms: d,
            full_scan_interval: f,
        };
        let cases: [(WatchFlags, WatchConfig, Timing); 6] = [
            (
                (None, None, None),
                cfg(None, None),
                (ms(1000), s(3600), None),
            ),
            (
                (None, None, None),
                cfg(Some(250), Some(60)),
                (ms(250), s(60), None),
            ),
            (
                (Some(500), None, None),
                cfg(Some(250), Some(60)),
                (ms(500), s(60), None),
            ),
            (
                (None, Some(30), None),
                cfg(Some(250), Some(60)),
                (ms(250), s(30), None),
            ),
            (
                (Some(7), Some(8), None),
                cfg(None, None),
                (ms(7), s(8), None),
            ),
            (
                (None, None, Some(0.5)),
                cfg(None, None),
                (ms(1000), s(3600), Some(ms(500))),
            ),
        ];
        for ((d, f, p), c, (wd, wf, wp)) in cases {
            let t = watch_timing(&watch_args(d, f, p), &c).expect("valid");
            assert_eq!(
                t,
                WatchTiming {
                    debounce: wd,
                    full_scan_every: wf,
                    poll: wp
                },
                "{d:?} {f:?} {p:?} {c:?}"
            );
        }
    }

    #[test]
    fn watch_flags_out_of_range_are_usage_errors() {
        let cases: [(WatchFlags, &str); 6] = [
            ((Some(0), None, None), "--debounce"),
            ((Some(3_600_001), None, None), "--debounce"),
            ((None, Some(0), None), "--full-scan-interval"),
            ((None, None, Some(0.0)), "--poll"),
            ((None, None, Some(-1.0)), "--poll"),
            ((None, None, Some(86_401.0)), "--poll"),
        ];
        for ((d, f, p), named) in cases {
            let e = watch_timing(&watch_args(d, f, p), &WatchConfig::default())
                .expect_err("out of range");
            assert!(e.to_string().contains(named), "{e}");
            assert_eq!(crate::cli::exit::exit_code(&e), crate::cli::ExitCode::Usage);
        }
    }

    fn keep(last: Option<u32>, daily: Option<u32>) -> Policy {
        Policy {
            keep_last: last,
            keep_daily: daily,
            ..Policy::default()
        }
    }

    #[test]
    fn prune_options_take_flags_over_config_over_defaults() {
        let ret = |last, daily, max, age| RetentionConfig {
            keep_last: last,
            keep_daily: daily,
            max_versions_per_file: max,
            deleted_max_age_days: age,
            ..RetentionConfig::default()
        };
        let cases: [(RetentionConfig, Policy, Policy, u64, Option<u64>); 5] = [
            (
                ret(None, None, None, None),
                keep(None, None),
                keep(None, None),
                10,
                None,
            ),
            (
                ret(Some(3), Some(7), Some(4), Some(30)),
                keep(None, None),
                keep(Some(3), Some(7)),
                4,
                Some(30),
            ),
            (
                ret(Some(3), Some(7), None, None),
                keep(Some(5), None),
                keep(Some(5), Some(7)),
                10,
                None,
            ),
            (
                ret(None, None, None, None),
                keep(None, Some(2)),
                keep(None, Some(2)),
                10,
                None,
            ),
            (
                ret(Some(1), None, None, Some(0)),
                keep(Some(9), Some(9)),
                keep(Some(9), Some(9)),
                10,
                Some(0),
            ),
        ];
        for (cfg, flags, policy, max, age) in cases {
            for dry_run in [false, true] {
                let o = prune_options(&cfg, flags, dry_run, 42);
                assert_eq!(o.policy, policy, "{cfg:?} {flags:?}");
                assert_eq!(o.max_versions, max, "{cfg:?}");
                assert_eq!(o.deleted_max_age_days, age, "{cfg:?}");
                assert_eq!(o.dry_run, dry_run);
                assert_eq!(o.now_ns, 42);
            }
        }
    }

    #[test]
    fn keep_flags_out_of_range_name_the_flag() {
        let mut a = PruneArgs {
            dry_run: false,
            keep_last: Some(0),
            keep_hourly: None,
            keep_daily: None,
            keep_weekly: None,
            keep_monthly: None,
            keep_yearly: None,
            keep_within_days: None,
            max_unused: None,
            grace: None,
            unlock: false,
        };
        let e = keep_flags(&a).expect_err("0 is out of range");
        assert!(e.to_string().contains("--keep-last"), "{e}");
        a.keep_last = Some(2);
        a.keep_within_days = Some(36_501);
        let e = keep_flags(&a).expect_err("over 100 years");
        assert!(e.to_string().contains("--keep-within-days"), "{e}");
        a.keep_within_days = Some(30);
        let p = keep_flags(&a).expect("valid");
        assert_eq!((p.keep_last, p.keep_within_days), (Some(2), Some(30)));
    }
}
