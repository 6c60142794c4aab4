//! The command line: clap definitions, conversion into engine options, and
//! human / JSON output. No engine logic lives here.

use crate::backup::{self, BackupOptions, BackupReport};
use crate::config::{BackupOverrides, BackupSettings, LoadedConfig, OnError};
use crate::error::Error;
use crate::id::HashAlgo;
use crate::local::lock::{LockMode, RepoLock};
use crate::local::Repo;
use crate::model::{Item, Leaf};
use crate::pathbytes::{self, display};
use crate::progress::Progress;
use crate::repo::snapshot;
use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use tracing_subscriber::filter::LevelFilter;

#[derive(Parser, Debug)]
#[command(
    name = "trove",
    version,
    about = "A deterministic, content-addressed backup engine with a browsable backup folder",
    after_help = "Exit codes: 0 ok, 1 problems found or some files not backed up, 2 usage or config error, 3 repository locked.\n\nExample: trove backup ~/Documents /mnt/backup"
)]
pub struct Cli {
    /// The backup root (it holds .trove/). Also TROVE_REPO.
    #[arg(long, global = true, env = "TROVE_REPO", value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// Config file [default: ./config.json when present]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More console output (-v actions, -vv debug); the log file is unaffected
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on the console
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Machine-readable output on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// Wait for the repository lock instead of exiting 3 when another trove holds it
    #[arg(long, global = true)]
    pub wait: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a repository (the first backup also does this)
    #[command(after_help = "Example: trove init /mnt/backup --hash sha256")]
    Init(InitArgs),
    /// Run one incremental backup
    #[command(
        after_help = "Examples:\n  trove backup                      # sources and backup_root from ./config.json\n  trove backup ~/docs ~/pics /mnt/b # SOURCE… DEST\n  trove backup --dry-run -v         # print the plan, change nothing"
    )]
    Backup(BackupArgs),
    /// List snapshots
    #[command(after_help = "Example: trove snapshots --repo /mnt/backup")]
    Snapshots,
    /// List what a snapshot recorded
    #[command(
        after_help = "Examples:\n  trove ls                 # latest snapshot, everything\n  trove ls 3fa2b1c0 docs   # one snapshot, below docs/"
    )]
    Ls(LsArgs),
    /// Recreate files from a snapshot (copies, hash-checked)
    #[command(
        after_help = "Examples:\n  trove restore --target /tmp/r                  # everything from the latest snapshot\n  trove restore --snapshot 3fa2b1c0 --target /tmp/r docs/report.txt\n  trove restore --snapshot '2026-11-01 12:00' --target /tmp/r --dry-run"
    )]
    Restore(RestoreArgs),
    /// Check snapshots, trees, objects and the browsable tree
    #[command(
        after_help = "Examples:\n  trove verify               # re-hash every object\n  trove verify --quick       # existence and sizes only\n  trove verify --sample 5    # re-hash a random 5% of the objects\n\nExit 1 when any problem is found; each is named with the object or path and the snapshots affected."
    )]
    Verify(VerifyArgs),
    /// Rebuild the browsable tree from the snapshots and objects
    #[command(
        after_help = "Examples:\n  trove materialize                      # repair the tree at the backup root\n  trove materialize --target /tmp/view   # a complete tree elsewhere\n  trove materialize --prune-extra        # also move foreign files to .trove/quarantine/"
    )]
    Materialize(MaterializeArgs),
    /// Show what changed between two snapshots
    #[command(
        after_help = "Example: trove diff 3fa2b1c0 latest\n\nMarkers: + added, - removed, M content changed, T type changed, U metadata (mode, owner, mtime) changed."
    )]
    Diff(DiffArgs),
    /// Show every recorded version of one path
    #[command(after_help = "Example: trove history docs/report.txt")]
    History(HistoryArgs),
    /// Apply retention and remove content nothing references any more
    #[command(
        after_help = "Examples:\n  trove prune --dry-run                     # what would go, and the bytes freed\n  trove prune --keep-daily 7 --keep-weekly 4 --keep-monthly 12\n\nWithout any keep rule every snapshot record stays, and only the latest snapshot pins its content (max_versions_per_file bounds the history per file)."
    )]
    Prune(PruneArgs),
    /// Back up continuously: an initial run, then one run per burst of changes
    #[command(
        after_help = "Examples:\n  trove watch                          # sources and backup_root from ./config.json\n  trove watch ~/docs /mnt/backup --debounce 500\n  trove watch --poll 30                # poll instead of inotify (network filesystems)\n\nStops cleanly on SIGINT/SIGTERM (the run in progress finishes). One log file per session. With --json, one JSON line per run on stdout."
    )]
    Watch(WatchArgs),
    /// Make DEST an exact copy of SRC (dry run unless --apply)
    #[command(
        after_help = "Examples:\n  trove mirror ~/docs /mnt/usb/docs           # show what would change\n  trove mirror ~/docs /mnt/usb/docs --apply   # do it\n\nA mirror deletes from DEST what is not in SRC: it keeps no history (use `trove backup` for that). SRC is never modified."
    )]
    Mirror(MirrorArgs),
    /// Report sets of byte-identical files and the space they waste
    #[command(
        after_help = "Examples:\n  trove dupes ~/Pictures ~/Downloads\n  trove dupes --min-size 1M --json /data\n\nFiles that are hardlinks of each other share their blocks: they are marked as such and never counted as waste."
    )]
    Dupes(DupesArgs),
    /// Print a shell completion script
    #[command(
        after_help = "Examples:\n  trove completions bash > ~/.local/share/bash-completion/completions/trove\n  trove completions zsh > ~/.zfunc/_trove\n  trove completions fish > ~/.config/fish/completions/trove.fish"
    )]
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff)
    #[command(after_help = "Example: trove man > ~/.local/share/man/man1/trove.1 && man trove")]
    Man,
    /// Show repository statistics (logical vs stored bytes, dedup ratio)
    #[command(after_help = "Example: trove stats --repo /mnt/backup --json")]
    Stats,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub src: SourceArgs,
    /// Quiet time after the last change before a run starts, in ms [default: watch.debounce_ms, else 1000]
    #[arg(long, value_name = "MS")]
    pub debounce: Option<u64>,
    /// Poll the sources every SECONDS instead of using filesystem notifications
    #[arg(long, value_name = "SECONDS")]
    pub poll: Option<f64>,
    /// Full scan at least this often, in seconds [default: watch.full_scan_interval, else 3600]
    #[arg(long, value_name = "SECONDS")]
    pub full_scan_interval: Option<u64>,
}

#[derive(Args, Debug)]
pub struct MirrorArgs {
    /// The directory to copy from (never modified)
    pub src: PathBuf,
    /// The directory to make equal to SRC (created if missing)
    pub dest: PathBuf,
    /// Carry out the changes (without it: print what would change)
    #[arg(long)]
    pub apply: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Do not cross into other filesystems inside SRC
    #[arg(long)]
    pub one_file_system: bool,
}

#[derive(Args, Debug)]
pub struct DupesArgs {
    /// Directories (or files) to look in
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
    /// Ignore files smaller than this (bytes, or with K/M/G/T: 64K, 1M) [default: 1]
    #[arg(long, value_name = "SIZE", value_parser = crate::config::parse_size)]
    pub min_size: Option<u64>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Do not cross into other filesystems
    #[arg(long)]
    pub one_file_system: bool,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Print what would be removed and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Keep the N newest snapshots
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours with snapshots
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days with snapshots
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks with snapshots
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months with snapshots
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years with snapshots
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot taken in the last N days
    #[arg(long, value_name = "DAYS")]
    pub keep_within_days: Option<u32>,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot id prefix, `latest`, or a time (the newest snapshot at or before it)
    #[arg(
        long,
        short = 's',
        default_value = "latest",
        value_name = "ID|latest|TIME"
    )]
    pub snapshot: String,
    /// Directory to restore into (created if missing; must be empty unless --overwrite)
    #[arg(long, short = 't', value_name = "DIR")]
    pub target: PathBuf,
    /// Only these paths (relative to the snapshot root) and what is below them
    #[arg(value_name = "PATH")]
    pub paths: Vec<String>,
    /// Restore into a non-empty target, replacing entries the snapshot has
    #[arg(long)]
    pub overwrite: bool,
    /// List what would be written and change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Check existence and sizes only; do not re-hash objects
    #[arg(long, conflicts_with = "sample")]
    pub quick: bool,
    /// Re-hash a random PERCENT of the objects (0 < PERCENT <= 100)
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    pub sample: Option<f64>,
    /// Seed for --sample, to repeat a sample exactly
    #[arg(long, requires = "sample")]
    pub seed: Option<u64>,
}

fn parse_percent(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if v > 0.0 && v <= 100.0 {
        Ok(v)
    } else {
        Err(format!(
            "{s} is not a percentage between 0 (exclusive) and 100"
        ))
    }
}

#[derive(Args, Debug)]
pub struct MaterializeArgs {
    /// Build the tree here instead of at the backup root
    #[arg(long, value_name = "DIR")]
    pub target: Option<PathBuf>,
    /// Move entries trove did not create into .trove/quarantine/
    #[arg(long)]
    pub prune_extra: bool,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The older snapshot (id prefix, `latest` or a time)
    pub from: String,
    /// The newer snapshot
    pub to: String,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Path relative to the snapshot root, as `trove ls` shows it
    pub path: String,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Backup root to create
    pub dir: PathBuf,
    /// Content hash, fixed for the repository's life
    #[arg(long, value_parser = ["blake3", "sha256"])]
    pub hash: Option<String>,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    #[command(flatten)]
    pub src: SourceArgs,
    /// Print the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Read every file again instead of trusting the stat cache
    #[arg(long)]
    pub rehash: bool,
    /// Write a snapshot even when nothing changed
    #[arg(long)]
    pub always_snapshot: bool,
    /// Build on the newest readable snapshot when a newer record is damaged
    /// (otherwise refused: the damaged record may hold the latest state)
    #[arg(long)]
    pub allow_damaged_latest: bool,
}

/// What to back up and how: shared by `backup` and `watch`.
#[derive(Args, Debug)]
pub struct SourceArgs {
    /// SOURCE… DEST (or SOURCE… with --repo); none: use the config file
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Do not cross into other filesystems
    #[arg(long)]
    pub one_file_system: bool,
    /// Back up what symlinks point to instead of the links
    #[arg(long)]
    pub follow_symlinks: bool,
    /// What a file that cannot be backed up does to a run
    #[arg(long, value_name = "POLICY", value_parser = ["ignore", "warn", "fail"])]
    pub on_error: Option<String>,
    /// Hash for a new repository (blake3 or sha256)
    #[arg(long, value_parser = ["blake3", "sha256"])]
    pub hash: Option<String>,
}

impl SourceArgs {
    /// The run's settings: these options over the config file, checked.
    fn settings(&self, cli: &Cli) -> Result<(BackupSettings, Option<LoadedConfig>)> {
        let mut ov = BackupOverrides {
            follow_symlinks: self.follow_symlinks,
            one_file_system: self.one_file_system,
            on_error: parse_on_error(&self.on_error)?,
            hash: parse_hash(&self.hash)?,
            ..BackupOverrides::default()
        };
        self.filter.overrides(&mut ov)?;
        let (settings, cfg) = resolve_settings(cli, &self.paths, ov)?;
        backup::preflight(&settings)?;
        Ok((settings, cfg))
    }
}

/// What to leave out; the same filters for backup, watch, mirror and dupes.
#[derive(Args, Debug, Default)]
pub struct FilterArgs {
    /// Exclude matching paths (repeatable; `*.tmp` matches names anywhere, `build/out` or `/cache` paths from the root)
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Read exclude patterns from FILE, one per line (# comments)
    #[arg(long, value_name = "FILE")]
    pub exclude_file: Vec<PathBuf>,
    /// Exclude a directory that holds a file named NAME (repeatable)
    #[arg(long, value_name = "NAME")]
    pub exclude_if_present: Vec<String>,
    /// Exclude directories holding a valid CACHEDIR.TAG (bford.info/cachedir)
    #[arg(long)]
    pub exclude_caches: bool,
    /// Exclude files larger than SIZE (bytes, or 64K, 1.5M, 2G)
    #[arg(long, value_name = "SIZE", value_parser = crate::config::parse_size)]
    pub exclude_larger_than: Option<u64>,
}

impl FilterArgs {
    /// The walk options for commands that do not read config.json.
    fn scan_options(&self, one_file_system: bool) -> Result<crate::scan::ScanOptions> {
        for n in &self.exclude_if_present {
            crate::config::check_marker_name(n).map_err(Error::Usage)?;
        }
        let mut exclude = self.exclude.clone();
        for f in &self.exclude_file {
            exclude.extend(crate::config::read_exclude_file(f)?);
        }
        Ok(crate::scan::ScanOptions {
            follow_symlinks: false,
            one_file_system,
            excludes: crate::scan::Excludes::new(&exclude)?,
            skip_dirs: Vec::new(),
            filters: crate::scan::Filters {
                if_present: self
                    .exclude_if_present
                    .iter()
                    .map(|s| s.as_bytes().to_vec())
                    .collect(),
                caches: self.exclude_caches,
                larger_than: self.exclude_larger_than,
            },
        })
    }

    /// Into backup/watch overrides (merged with the config's filters).
    fn overrides(&self, ov: &mut BackupOverrides) -> Result<()> {
        for n in &self.exclude_if_present {
            crate::config::check_marker_name(n).map_err(Error::Usage)?;
        }
        ov.exclude = self.exclude.clone();
        ov.exclude_file = self.exclude_file.clone();
        ov.exclude_if_present = self.exclude_if_present.clone();
        ov.exclude_caches = self.exclude_caches;
        ov.exclude_larger_than = self.exclude_larger_than;
        Ok(())
    }
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot id prefix, `latest`, or a time [default: latest]
    pub snapshot: Option<String>,
    /// Only this path (relative to the snapshot root) and what is below it
    pub path: Option<String>,
}

/// How a command ended when it did not fail outright.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Ran, but found problems (exit 1).
    Problems,
}

/// The config file to use: `--config`, else `./config.json` when present.
fn config_file(cli: &Cli, required: bool) -> Result<Option<LoadedConfig>> {
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

/// The repository for commands that only read: --repo, else the config's
/// backup_root.
fn repo_root(cli: &Cli) -> Result<PathBuf> {
    if let Some(r) = &cli.repo {
        return Ok(r.clone());
    }
    if let Some(cfg) = config_file(cli, true)? {
        if let Some(root) = cfg.file.backup_root {
            return Ok(root);
        }
    }
    Err(Error::Usage(
        "no repository given: pass --repo DIR, set TROVE_REPO, or run where a config.json names backup_root".into(),
    )
    .into())
}

fn parse_hash(s: &Option<String>) -> Result<Option<HashAlgo>> {
    s.as_deref()
        .map(|h| {
            h.parse::<HashAlgo>()
                .map_err(|e| anyhow::Error::new(Error::Usage(e)))
        })
        .transpose()
}

pub fn run(cli: Cli) -> Result<Outcome> {
    match &cli.command {
        Command::Init(a) => init(&cli, a),
        Command::Backup(a) => run_backup(&cli, a),
        Command::Snapshots => list_snapshots(&cli),
        Command::Ls(a) => ls(&cli, a),
        Command::Restore(a) => restore(&cli, a),
        Command::Verify(a) => verify(&cli, a),
        Command::Materialize(a) => materialize(&cli, a),
        Command::Diff(a) => diff(&cli, a),
        Command::History(a) => history(&cli, a),
        Command::Prune(a) => prune(&cli, a),
        Command::Stats => stats(&cli),
        Command::Watch(a) => watch(&cli, a),
        Command::Dupes(a) => dupes(&cli, a),
        Command::Mirror(a) => mirror(&cli, a),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            // Into a buffer: generate() panics on a write error, and a
            // closed pipe is not a failure.
            let mut buf = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "trove", &mut buf);
            std::io::stdout().lock().write_all(&buf)?;
            Ok(Outcome::Ok)
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
            // One section per command, so `man trove` documents them all.
            for sub in cmd.get_subcommands() {
                writeln!(out, ".SH \"TROVE {}\"", sub.get_name().to_uppercase())?;
                let mut buf = Vec::new();
                clap_mangen::Man::new(sub.clone()).render_description_section(&mut buf)?;
                clap_mangen::Man::new(sub.clone()).render_options_section(&mut buf)?;
                clap_mangen::Man::new(sub.clone()).render_extra_section(&mut buf)?;
                out.write_all(&buf)?;
            }
            Ok(Outcome::Ok)
        }
    }
}

fn init(cli: &Cli, a: &InitArgs) -> Result<Outcome> {
    let _log = crate::log::init(crate::log::console_level(cli.verbose, cli.quiet), None)?;
    let algo = parse_hash(&a.hash)?.unwrap_or(HashAlgo::Blake3);
    let existed = Repo::exists(&a.dir);
    let repo = Repo::init(&a.dir, algo)?;
    if cli.json {
        print_json(&serde_json::json!({
            "repository": repo.root, "hash": repo.algo().name(), "id": repo.config.id, "created": !existed
        }))?;
    } else if !cli.quiet {
        let verb = if existed {
            "already a repository"
        } else {
            "created repository"
        };
        writeln!(
            std::io::stdout().lock(),
            "{verb}: {} (hash {})",
            repo.root.display(),
            repo.algo()
        )?;
    }
    Ok(Outcome::Ok)
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
    if !paths.is_empty() {
        if cli.repo.is_some() {
            ov.sources = paths.to_vec();
        } else if paths.len() < 2 {
            return Err(Error::Usage(
                "give SOURCE… DEST (at least two paths), or SOURCE with --repo DEST".into(),
            )
            .into());
        } else {
            ov.sources = paths[..paths.len() - 1].to_vec();
            ov.backup_root = paths.last().cloned();
        }
    }
    if cli.repo.is_some() {
        ov.backup_root = cli.repo.clone();
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

fn parse_on_error(s: &Option<String>) -> Result<Option<OnError>> {
    Ok(s.as_deref()
        .map(|s| s.parse::<OnError>())
        .transpose()
        .map_err(Error::Usage)?)
}

fn run_backup(cli: &Cli, a: &BackupArgs) -> Result<Outcome> {
    // Positionals are SOURCE… DEST, or all sources when --repo is given.
    let (settings, _) = a.src.settings(cli)?;
    let console = crate::log::console_level(cli.verbose, cli.quiet);
    if a.dry_run {
        // Nothing is written, not even a log; a dry run exists to show the
        // plan.
        let level = if cli.quiet {
            console
        } else {
            console.max(tracing_subscriber::filter::LevelFilter::INFO)
        };
        let _g = crate::log::init(level, None)?;
        return finish_backup(cli, a, settings, None);
    }
    let guard = run_log(&settings, console)?;
    let log_path = guard.file.clone();
    finish_backup(cli, a, settings, log_path)
}

/// The console and audit log of a writing run (backup, watch): the log
/// file goes to `log_dir`, else `.trove/logs`, and the backup root is
/// created 0700 first so the log directory never makes it world-readable.
fn run_log(settings: &BackupSettings, console: LevelFilter) -> Result<crate::log::LogGuard> {
    let log_dir = settings
        .log_dir
        .clone()
        .unwrap_or_else(|| Repo::dir_of(&settings.backup_root).join("logs"));
    if settings.log_dir.is_none() && !Repo::exists(&settings.backup_root) {
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
    log: Option<PathBuf>,
) -> Result<Outcome> {
    let opts = BackupOptions {
        settings,
        rehash: a.rehash,
        dry_run: a.dry_run,
        always_snapshot: a.always_snapshot,
        allow_damaged_latest: a.allow_damaged_latest,
        wait: cli.wait,
        scope: None,
    };
    let bar = TermProgress::new(cli);
    let report = backup::run(&opts, &bar);
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
    if cli.json {
        print_json(&report)?;
    } else if !cli.quiet {
        print_summary(&report, &line, log.as_deref(), &opts.settings.backup_root);
    }
    Ok(if report.failed {
        Outcome::Problems
    } else {
        Outcome::Ok
    })
}

fn print_summary(r: &BackupReport, line: &str, log: Option<&Path>, root: &Path) {
    let mut out = std::io::stdout().lock();
    let _ = if r.dry_run {
        writeln!(out, "dry run (nothing changed): {line}")
    } else if !r.changed {
        writeln!(
            out,
            "Run complete: no changes, no new snapshot: {line}{}",
            r.snapshot
                .as_deref()
                .map(|s| format!(" [latest {s}]"))
                .unwrap_or_default()
        )
    } else {
        writeln!(
            out,
            "Run complete: {line}; snapshot {}",
            r.snapshot.as_deref().unwrap_or("-")
        )
    };
    if !r.problems.is_empty() {
        let _ = writeln!(
            out,
            "{} paths could not be backed up (see the messages above)",
            r.problems.len()
        );
    }
    if let Some(first) = r.browsable_incomplete.first() {
        let shown = |p: &Path| crate::pathbytes::display_path(p);
        let committed = match &r.snapshot {
            Some(s) if r.changed => format!(
                "snapshot {s} is committed and holds all {} files backed up; only ",
                r.files
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{committed}the browsable tree at {} is incomplete: {} entries could not be put in place (first: {}: {}); once the cause is fixed (e.g. space freed), `trove materialize --repo {}` or the next backup completes it",
            shown(root),
            r.browsable_incomplete.len(),
            first.path,
            first.message,
            shown(root),
        );
    }
    if let Some(l) = log {
        if !r.dry_run {
            let _ = writeln!(out, "log: {}", l.display());
        }
    }
}

fn open_for_reading(cli: &Cli) -> Result<(Repo, RepoLock)> {
    let _ = crate::log::init(crate::log::console_level(cli.verbose, cli.quiet), None);
    let root = repo_root(cli)?;
    let repo = Repo::open(&root)?;
    let lock = RepoLock::acquire(&repo, LockMode::Shared, cli.wait)?;
    Ok((repo, lock))
}

#[derive(Serialize)]
struct SnapshotRow {
    id: String,
    full_id: String,
    /// `ok`, or `damaged` for a record that cannot be read (its counts
    /// and time are then unknown, shown as 0 and "").
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The sequence number (for a damaged record: what its readable
    /// prefix claims, if anything).
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    time: String,
    time_ns: i64,
    files: u64,
    bytes: u64,
    added: u64,
    modified: u64,
    deleted: u64,
    new_bytes: u64,
    sources: Vec<String>,
}

fn list_snapshots(cli: &Cli) -> Result<Outcome> {
    let (repo, _lock) = open_for_reading(cli)?;
    let scan = snapshot::scan(&repo)?;
    for d in &scan.damaged {
        tracing::error!("{}", d.error);
    }
    let mut rows: Vec<(u64, i64, SnapshotRow)> = scan
        .snapshots
        .iter()
        .map(|s| {
            let row = SnapshotRow {
                id: s.id.short(),
                full_id: s.id.to_hex(),
                status: "ok",
                error: None,
                seq: Some(s.record.seq),
                time: snapshot::format_time(s.record.time_ns),
                time_ns: s.record.time_ns,
                files: s.record.summary.files,
                bytes: s.record.summary.bytes,
                added: s.record.summary.backed_up + s.record.summary.duplicates,
                modified: s.record.summary.modified,
                deleted: s.record.summary.deleted,
                new_bytes: s.record.summary.new_bytes,
                sources: s.record.sources.iter().map(|x| display(&x.path)).collect(),
            };
            (s.record.seq, s.record.time_ns, row)
        })
        .collect();
    // A damaged record is listed where its claimed sequence number puts it
    // (last when unknown), never left out.
    for d in &scan.damaged {
        let row = SnapshotRow {
            id: d.id.short(),
            full_id: d.id.to_hex(),
            status: "damaged",
            error: Some(d.error.to_string()),
            seq: d.seq,
            time: d.time_ns.map(snapshot::format_time).unwrap_or_default(),
            time_ns: d.time_ns.unwrap_or(0),
            files: 0,
            bytes: 0,
            added: 0,
            modified: 0,
            deleted: 0,
            new_bytes: 0,
            sources: Vec::new(),
        };
        rows.push((
            d.seq.unwrap_or(u64::MAX),
            d.time_ns.unwrap_or(i64::MAX),
            row,
        ));
    }
    rows.sort_by_key(|r| (r.0, r.1));
    let rows: Vec<SnapshotRow> = rows.into_iter().map(|(_, _, r)| r).collect();
    if cli.json {
        print_json(&rows)?;
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{:<8}  {:<19}  {:>9}  {:>10}  {:>22}",
            "ID", "TIME", "FILES", "SIZE", "CHANGES"
        )?;
        for r in &rows {
            if let Some(e) = &r.error {
                writeln!(out, "{:<8}  DAMAGED: {e}", r.id)?;
                continue;
            }
            writeln!(
                out,
                "{:<8}  {:<19}  {:>9}  {:>10}  {:>22}",
                r.id,
                r.time,
                r.files,
                backup::human_bytes(r.bytes),
                format!("+{} ~{} -{}", r.added, r.modified, r.deleted)
            )?;
        }
        let n = scan.snapshots.len();
        if scan.damaged.is_empty() {
            writeln!(out, "{n} snapshots")?;
        } else {
            writeln!(
                out,
                "{n} snapshots, {} damaged (run `trove verify`)",
                scan.damaged.len()
            )?;
        }
    }
    Ok(if scan.damaged.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Problems
    })
}

#[derive(Serialize)]
struct LsRow {
    path: String,
    #[serde(rename = "type")]
    kind: &'static str,
    size: u64,
    mode: String,
    mtime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
}

fn mode_string(kind: char, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(kind);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn ls(cli: &Cli, a: &LsArgs) -> Result<Outcome> {
    let (repo, _lock) = open_for_reading(cli)?;
    let snap = snapshot::resolve(&repo, a.snapshot.as_deref().unwrap_or("latest"))?;
    let (entries, _) = crate::repo::snapshot::load_snapshot(&repo, &snap.record)
        .with_context(|| format!("reading snapshot {}", snap.id.short()))?;
    let filter = a
        .path
        .as_deref()
        .map(|p| p.trim_matches('/').as_bytes().to_vec());
    let mut rows = Vec::new();
    for e in &entries {
        if let Some(f) = &filter {
            let under =
                e.path == *f || (e.path.starts_with(f) && e.path.get(f.len()) == Some(&b'/'));
            if !f.is_empty() && !under {
                continue;
            }
        }
        let (kind, ch, size, meta, hash, target) = match &e.item {
            Item::Dir(m) => ("dir", 'd', 0, *m, None, None),
            Item::Leaf(Leaf::File { size, id, meta, .. }) => {
                ("file", '-', *size, *meta, Some(id.to_hex()), None)
            }
            Item::Leaf(Leaf::Symlink { target, meta }) => {
                ("symlink", 'l', 0, *meta, None, Some(display(target)))
            }
        };
        rows.push(LsRow {
            path: display(&e.path),
            kind,
            size,
            mode: mode_string(ch, meta.mode),
            mtime: snapshot::format_time(meta.mtime_ns),
            hash,
            target,
        });
    }
    if let Some(f) = &filter {
        if !f.is_empty() && rows.is_empty() {
            return Err(Error::Usage(format!(
                "{} is not in snapshot {}",
                pathbytes::display(f),
                snap.id.short()
            ))
            .into());
        }
    }
    if cli.json {
        print_json(&rows)?;
    } else {
        let mut out = std::io::stdout().lock();
        for r in &rows {
            let tail = r
                .target
                .as_deref()
                .map(|t| format!(" -> {t}"))
                .unwrap_or_default();
            writeln!(
                out,
                "{} {:>12} {} {}{}",
                r.mode, r.size, r.mtime, r.path, tail
            )?;
        }
    }
    Ok(Outcome::Ok)
}

fn restore(cli: &Cli, a: &RestoreArgs) -> Result<Outcome> {
    let (repo, _lock) = open_for_reading(cli)?;
    let snap = snapshot::resolve(&repo, &a.snapshot)?;
    let (entries, _) = crate::repo::snapshot::load_snapshot(&repo, &snap.record)
        .with_context(|| format!("reading snapshot {}", snap.id.short()))?;
    let opts = crate::restore::RestoreOptions {
        target: a.target.clone(),
        paths: a.paths.clone(),
        overwrite: a.overwrite,
        dry_run: a.dry_run,
    };
    let bar = TermProgress::new(cli);
    let report = crate::restore::run(&repo, &snap, entries, &opts, &bar);
    drop(bar);
    let report = report?;
    if cli.json {
        print_json(&report)?;
    } else {
        let mut out = std::io::stdout().lock();
        for p in &report.would_write {
            writeln!(out, "would restore: {p}")?;
        }
        for p in &report.missing {
            writeln!(
                out,
                "missing: {p}: its content was removed by retention; restore it from a snapshot that kept it (`trove history {p}`)"
            )?;
        }
        for p in &report.problems {
            writeln!(out, "error: {}: {}", p.path, p.message)?;
        }
        if !cli.quiet {
            let bad = report.missing.len() + report.problems.len();
            let tail = if bad > 0 {
                format!("; {bad} paths not restored (listed above)")
            } else {
                String::new()
            };
            if report.dry_run {
                writeln!(
                    out,
                    "would restore {} files ({}), {} directories, {} symlinks from snapshot {} to {}{tail}",
                    report.files - report.missing.len() as u64,
                    backup::human_bytes(report.bytes),
                    report.dirs,
                    report.symlinks,
                    report.snapshot,
                    report.target,
                )?;
            } else {
                writeln!(
                    out,
                    "restored {} of {} files ({}), {} directories, {} symlinks from snapshot {} to {}{tail}",
                    report.files_restored,
                    report.files,
                    backup::human_bytes(report.bytes_restored),
                    report.dirs,
                    report.symlinks,
                    report.snapshot,
                    report.target,
                )?;
            }
        }
    }
    Ok(if report.failed() {
        Outcome::Problems
    } else {
        Outcome::Ok
    })
}

fn verify(cli: &Cli, a: &VerifyArgs) -> Result<Outcome> {
    let (repo, _lock) = open_for_reading(cli)?;
    let opts = crate::verify::VerifyOptions {
        quick: a.quick,
        sample_percent: a.sample,
        seed: a.seed,
    };
    let bar = TermProgress::new(cli);
    let report = crate::verify::run(&repo, &opts, &bar);
    drop(bar);
    let report = report?;
    if cli.json {
        print_json(&report)?;
    } else {
        let mut out = std::io::stdout().lock();
        for p in &report.problems {
            let mut line = format!("problem: {} {}: {}", p.kind, p.subject, p.message);
            if !p.snapshots.is_empty() {
                line.push_str(&format!(" [snapshots: {}]", p.snapshots.join(", ")));
            }
            writeln!(out, "{line}")?;
            for path in &p.paths {
                writeln!(out, "    used by {path}")?;
            }
            if p.paths_total > p.paths.len() as u64 {
                writeln!(
                    out,
                    "    … and {} more paths",
                    p.paths_total - p.paths.len() as u64
                )?;
            }
        }
        if !cli.quiet {
            let hashed = if a.quick {
                "existence and sizes checked, not re-hashed".to_string()
            } else if let Some(s) = &report.sample {
                format!(
                    "{} of them re-hashed ({}% sample, seed {})",
                    s.objects, s.percent, s.seed
                )
            } else {
                format!(
                    "all re-hashed ({})",
                    backup::human_bytes(report.bytes_hashed)
                )
            };
            writeln!(
                out,
                "{} snapshots, {} trees, {} objects ({}): {hashed}; {} browsable entries checked",
                report.snapshots,
                report.trees,
                report.objects,
                backup::human_bytes(report.object_bytes),
                report.browsable_entries
            )?;
            if report.unpinned_missing > 0 {
                writeln!(
                    out,
                    "{} objects that only older, unpinned snapshots referenced are gone: removed by retention (restoring such a snapshot names the paths)",
                    report.unpinned_missing
                )?;
            }
            if report.unreferenced_objects > 0 {
                writeln!(
                    out,
                    "{} objects ({}) are referenced by no snapshot",
                    report.unreferenced_objects,
                    backup::human_bytes(report.unreferenced_bytes)
                )?;
            }
        }
        writeln!(
            out,
            "verify: {} objects, {} problems",
            report.objects,
            report.problems.len()
        )?;
    }
    Ok(if report.problems.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Problems
    })
}

fn materialize(cli: &Cli, a: &MaterializeArgs) -> Result<Outcome> {
    let _ = crate::log::init(crate::log::console_level(cli.verbose, cli.quiet), None);
    let root = repo_root(cli)?;
    let repo = Repo::open_writable(&root)?;
    let _lock = RepoLock::acquire(&repo, LockMode::Exclusive, cli.wait)?;
    // A writer like backup and prune: it empties what an interrupted
    // write left in tmp/ (the fault sweep found materialize leaving one).
    repo.clean_tmp()?;
    let snap = snapshot::resolve(&repo, "latest")?;
    let report =
        crate::browsable::apply::rebuild(&repo, &snap, a.target.as_deref(), a.prune_extra)?;
    if cli.json {
        print_json(&report)?;
    } else {
        let mut out = std::io::stdout().lock();
        for p in &report.extra {
            writeln!(
                out,
                "extra: {p} (not created by trove; left in place, --prune-extra moves it to .trove/quarantine/)"
            )?;
        }
        for (p, msg) in &report.failures {
            writeln!(out, "error: {p}: {msg}")?;
        }
        if !cli.quiet {
            if report.nothing_done() && report.failures.is_empty() {
                writeln!(
                    out,
                    "{} already shows snapshot {} ({} entries): nothing to do",
                    report.target, report.snapshot, report.entries
                )?;
            } else {
                writeln!(
                    out,
                    "materialized snapshot {} at {}: {} linked, {} copied, {} created, {} relinked, {} stale removed, {} quarantined, {} already right",
                    report.snapshot,
                    report.target,
                    report.linked,
                    report.copied,
                    report.created,
                    report.relinked,
                    report.removed,
                    report.quarantined,
                    report.unchanged
                )?;
            }
            if report.repaired > 0 {
                writeln!(
                    out,
                    "re-stored {} damaged object{} from good copies in the browsable tree (damaged copies moved to .trove/quarantine/objects/)",
                    report.repaired,
                    if report.repaired == 1 { "" } else { "s" }
                )?;
            }
        }
    }
    Ok(if report.failures.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Problems
    })
}

fn diff(cli: &Cli, a: &DiffArgs) -> Result<Outcome> {
    let (repo, _lock) = open_for_reading(cli)?;
    let from = snapshot::resolve(&repo, &a.from)?;
    let to = snapshot::resolve(&repo, &a.to)?;
    let d = crate::inspect::diff(&repo, &from, &to)?;
    if cli.json {
        print_json(&d)?;
    } else {
        let mut out = std::io::stdout().lock();
        for c in &d.changes {
            writeln!(out, "{}    {}", c.change.marker(), c.path)?;
        }
        let s = &d.summary;
        writeln!(
            out,
            "{} → {}: {} added, {} removed, {} modified, {} type changed, {} metadata only; +{} -{}",
            d.from,
            d.to,
            s.added,
            s.removed,
            s.modified,
            s.type_changed,
            s.metadata,
            backup::human_bytes(s.added_bytes),
            backup::human_bytes(s.removed_bytes)
        )?;
    }
    Ok(Outcome::Ok)
}

fn history(cli: &Cli, a: &HistoryArgs) -> Result<Outcome> {
    let (repo, _lock) = open_for_reading(cli)?;
    let rows = crate::inspect::history(&repo, &a.path)?;
    if cli.json {
        print_json(&rows)?;
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{:<8}  {:<19}  {:<12}  {:>10}  {:<8}  WHERE",
            "SNAPSHOT", "TIME", "EVENT", "SIZE", "HASH"
        )?;
        for r in &rows {
            let size = if r.kind == "file" && r.event != "deleted" {
                backup::human_bytes(r.size)
            } else {
                r.kind.to_string()
            };
            let hash = r
                .hash
                .as_deref()
                .map(|h| &h[..8.min(h.len())])
                .unwrap_or("-");
            let place = match (&r.location, &r.target) {
                (Some(l), _) => l.clone(),
                (None, Some(t)) => format!("-> {t}"),
                _ => String::new(),
            };
            writeln!(
                out,
                "{:<8}  {:<19}  {:<12}  {:>10}  {:<8}  {}",
                r.snapshot, r.time, r.event, size, hash, place
            )?;
        }
    }
    Ok(Outcome::Ok)
}

/// Retention settings from the config file (when there is one).
fn retention_settings(cli: &Cli) -> Result<(crate::config::RetentionConfig, Option<PathBuf>)> {
    Ok(match config_file(cli, true)? {
        Some(c) => (
            c.file.retention.clone().unwrap_or_default(),
            c.file.log_dir.clone(),
        ),
        None => Default::default(),
    })
}

fn prune(cli: &Cli, a: &PruneArgs) -> Result<Outcome> {
    let root = repo_root(cli)?;
    let (ret, log_dir) = retention_settings(cli)?;
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
        crate::config::check_flag(flag, key, v.map(u64::from))?;
    }
    let policy = ret.policy().overridden_by(crate::retention::Policy {
        keep_last: a.keep_last,
        keep_hourly: a.keep_hourly,
        keep_daily: a.keep_daily,
        keep_weekly: a.keep_weekly,
        keep_monthly: a.keep_monthly,
        keep_yearly: a.keep_yearly,
        keep_within_days: a.keep_within_days,
    });
    let repo = if a.dry_run {
        Repo::open(&root)?
    } else {
        Repo::open_writable(&root)?
    };
    let console = crate::log::console_level(cli.verbose, cli.quiet);
    let log_dir = log_dir.unwrap_or_else(|| repo.logs_dir());
    let _guard = if a.dry_run {
        crate::log::init(
            console.max(tracing_subscriber::filter::LevelFilter::INFO),
            None,
        )?
    } else {
        crate::log::init(
            console,
            Some((log_dir.as_path(), crate::config::LogLevel::default())),
        )?
    };
    let mode = if a.dry_run {
        LockMode::Shared
    } else {
        LockMode::Exclusive
    };
    let _lock = RepoLock::acquire(&repo, mode, cli.wait)?;
    let opts = crate::prune::PruneOptions {
        policy,
        max_versions: ret
            .max_versions_per_file
            .unwrap_or(crate::config::DEFAULT_MAX_VERSIONS),
        deleted_max_age_days: ret.deleted_max_age_days,
        dry_run: a.dry_run,
        now_ns: crate::model::now_ns(),
    };
    let report = match crate::prune::run(&repo, &opts) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(target: "audit", "{e}");
            return Err(e.into());
        }
    };
    let g = &report.gc;
    let verb = if a.dry_run { "would remove" } else { "removed" };
    let line = format!(
        "prune: {verb} {} snapshots, {} versions/deleted entries, {} objects ({}) and {} trees ({}); {} snapshots kept",
        g.forgotten.len(),
        report.retention_removed,
        g.objects_removed,
        backup::human_bytes(g.object_bytes_removed),
        g.trees_removed,
        backup::human_bytes(g.tree_bytes_removed),
        g.kept.len(),
    );
    if !a.dry_run {
        tracing::info!(target: "trove::summary", "{line}");
    }
    if cli.json {
        print_json(&report)?;
    } else {
        let mut out = std::io::stdout().lock();
        if a.dry_run {
            for f in &g.forgotten {
                writeln!(out, "would forget snapshot {} ({})", f.id, f.time)?;
            }
            for o in &g.objects {
                writeln!(out, "would delete object {} ({} bytes)", o.id, o.size)?;
            }
        } else if cli.verbose > 0 {
            for f in &g.forgotten {
                writeln!(out, "forgot snapshot {} ({})", f.id, f.time)?;
            }
        }
        if g.policy_set && cli.verbose > 0 {
            for k in &g.kept {
                writeln!(out, "keep {} ({}): {}", k.id, k.time, k.reasons.join(", "))?;
            }
        }
        if !cli.quiet {
            writeln!(out, "{line}")?;
        }
        if !report.browsable_incomplete.is_empty() {
            writeln!(
                out,
                "the browsable tree at {} is incomplete: {} entries could not be put in place (first: {}); once the cause is fixed, `trove materialize --repo {}` completes it",
                crate::pathbytes::display_path(&repo.root),
                report.browsable_incomplete.len(),
                report.browsable_incomplete[0],
                crate::pathbytes::display_path(&repo.root),
            )?;
        }
    }
    Ok(if report.browsable_incomplete.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Problems
    })
}

fn stats(cli: &Cli) -> Result<Outcome> {
    let (repo, _lock) = open_for_reading(cli)?;
    let (ret, _) = retention_settings(cli)?;
    let mut st = crate::gc::stats(&repo)?;
    // What prune would reclaim with the current settings: its dry run. A
    // damaged repository cannot be collected: nothing is reclaimable then.
    let preview = crate::prune::PruneOptions {
        policy: ret.policy(),
        max_versions: ret
            .max_versions_per_file
            .unwrap_or(crate::config::DEFAULT_MAX_VERSIONS),
        deleted_max_age_days: ret.deleted_max_age_days,
        dry_run: true,
        now_ns: crate::model::now_ns(),
    };
    if let Ok(p) = crate::prune::run(&repo, &preview) {
        st.reclaimable_objects = p.gc.objects_removed;
        st.reclaimable_bytes = p.gc.bytes_freed();
        st.reclaimable_snapshots = p.gc.forgotten.len() as u64;
    }
    if cli.json {
        print_json(&st)?;
        return Ok(Outcome::Ok);
    }
    let h = backup::human_bytes;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "snapshots:        {} ({} pinned: their content is kept complete)",
        st.snapshots, st.pinned_snapshots
    )?;
    if let Some(l) = &st.latest {
        writeln!(
            out,
            "latest:           {} ({}): {} files, {} dirs, {} symlinks, {}",
            l.id,
            l.time,
            l.files,
            l.dirs,
            l.symlinks,
            h(l.bytes)
        )?;
    }
    writeln!(
        out,
        "versions kept:    {} ({})",
        st.versions,
        h(st.version_bytes)
    )?;
    writeln!(
        out,
        "deleted entries:  {} ({})",
        st.deleted,
        h(st.deleted_bytes)
    )?;
    writeln!(out, "logical bytes:    {}", h(st.logical_bytes))?;
    writeln!(
        out,
        "stored:           {} objects, {}; {} trees, {}",
        st.objects,
        h(st.stored_bytes),
        st.trees,
        h(st.tree_bytes)
    )?;
    writeln!(out, "dedup ratio:      {:.2}", st.dedup_ratio)?;
    writeln!(
        out,
        "reclaimable:      {} objects, {} (`trove prune`)",
        st.reclaimable_objects,
        h(st.reclaimable_bytes)
    )?;
    Ok(Outcome::Ok)
}

fn watch(cli: &Cli, a: &WatchArgs) -> Result<Outcome> {
    let (settings, cfg) = a.src.settings(cli)?;
    let wcfg = cfg
        .as_ref()
        .and_then(|c| c.file.watch.clone())
        .unwrap_or_default();
    let debounce = a
        .debounce
        .or(wcfg.debounce_ms)
        .unwrap_or(crate::watch::DEFAULT_DEBOUNCE_MS);
    let full = a
        .full_scan_interval
        .or(wcfg.full_scan_interval)
        .unwrap_or(crate::watch::DEFAULT_FULL_SCAN_SECS);
    // The config's values were checked when it was read.
    crate::config::check_flag("--debounce", "watch.debounce_ms", a.debounce)?;
    crate::config::check_flag(
        "--full-scan-interval",
        "watch.full_scan_interval",
        a.full_scan_interval,
    )?;
    // At most a day: `Duration::from_secs_f64` panics on a huge number.
    const MAX_POLL_SECS: f64 = 86_400.0;
    let poll = match a.poll {
        Some(p) if !(p > 0.0 && p <= MAX_POLL_SECS) => {
            return Err(Error::Usage(format!(
                "--poll {p}: out of range (allowed: above 0 to {MAX_POLL_SECS} seconds)"
            ))
            .into())
        }
        Some(p) => Some(std::time::Duration::from_secs_f64(p)),
        None => None,
    };
    // One log file for the whole session: every run's lines and summary.
    let guard = run_log(&settings, crate::log::console_level(cli.verbose, cli.quiet))?;
    let opts = crate::watch::WatchOptions {
        backup: BackupOptions {
            settings,
            rehash: false,
            dry_run: false,
            always_snapshot: false,
            allow_damaged_latest: false,
            wait: true,
            scope: None,
        },
        debounce: std::time::Duration::from_millis(debounce),
        full_scan_every: std::time::Duration::from_secs(full),
        poll,
    };
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
    let mut failed = false;
    crate::watch::run(&opts, &mut |w| {
        if let Some(r) = &w.report {
            failed |= r.failed;
        }
        if cli.json {
            if let Ok(line) = serde_json::to_string(w) {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        } else if !cli.quiet {
            let mut out = std::io::stdout().lock();
            let _ = match (&w.report, &w.error) {
                (Some(r), _) => {
                    let what = match w.kind {
                        crate::watch::RunKind::Initial => "initial run".to_string(),
                        crate::watch::RunKind::Events => format!("{} changed paths", w.paths),
                        crate::watch::RunKind::Full => {
                            format!("full scan ({})", w.reason.as_deref().unwrap_or("requested"))
                        }
                    };
                    writeln!(
                        out,
                        "run {} ({what}): {}{}",
                        w.run,
                        backup::summary_line(r),
                        match (&r.snapshot, r.changed) {
                            (Some(s), true) => format!("; snapshot {s}"),
                            _ => "; no changes".to_string(),
                        }
                    )
                }
                (None, Some(e)) => writeln!(out, "run {} failed: {e}", w.run),
                _ => Ok(()),
            };
            let _ = out.flush();
        }
    })?;
    drop(guard);
    Ok(if failed {
        Outcome::Problems
    } else {
        Outcome::Ok
    })
}

fn mirror(cli: &Cli, a: &MirrorArgs) -> Result<Outcome> {
    let _ = crate::log::init(crate::log::console_level(cli.verbose, cli.quiet), None);
    let opts = crate::mirror::MirrorOptions {
        src: a.src.clone(),
        dest: a.dest.clone(),
        apply: a.apply,
        scan: a.filter.scan_options(a.one_file_system)?,
    };
    let bar = TermProgress::new(cli);
    let r = crate::mirror::run(&opts, &bar);
    drop(bar);
    let r = r?;
    if cli.json {
        print_json(&r)?;
    } else {
        let (c, d) = if r.applied {
            ("COPY", "DELETE")
        } else {
            ("WOULD COPY", "WOULD DELETE")
        };
        let mut out = std::io::stdout().lock();
        for p in &r.copy {
            writeln!(out, "{c}: {p}")?;
        }
        for p in &r.delete {
            writeln!(out, "{d}: {p}")?;
        }
        for (p, m) in &r.problems {
            writeln!(out, "error: {p}: {m}")?;
        }
        if !cli.quiet {
            writeln!(
                out,
                "{}{} to copy ({}), {} to delete, {} with only mode/mtime to set, {} unchanged{}",
                if r.applied { "mirrored: " } else { "dry run: " },
                r.copy.len(),
                backup::human_bytes(r.bytes_copied),
                r.delete.len(),
                r.metadata,
                r.unchanged,
                if r.applied {
                    ""
                } else {
                    "; nothing was changed (run again with --apply)"
                }
            )?;
        }
    }
    Ok(if r.problems.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Problems
    })
}

fn dupes(cli: &Cli, a: &DupesArgs) -> Result<Outcome> {
    let _ = crate::log::init(crate::log::console_level(cli.verbose, cli.quiet), None);
    let opts = crate::dupes::DupesOptions {
        paths: a.paths.clone(),
        min_size: a.min_size.unwrap_or(1),
        scan: a.filter.scan_options(a.one_file_system)?,
    };
    let bar = TermProgress::new(cli);
    let r = crate::dupes::run(&opts, &bar);
    drop(bar);
    let r = r?;
    if cli.json {
        print_json(&r)?;
    } else {
        let h = backup::human_bytes;
        let mut out = std::io::stdout().lock();
        for set in &r.sets {
            writeln!(
                out,
                "{} copies of {} ({} wasted), {}:",
                set.copies,
                h(set.size),
                h(set.wasted),
                &set.hash[..16]
            )?;
            let mut first_of: std::collections::HashMap<usize, &str> = Default::default();
            for f in &set.files {
                match first_of.get(&f.inode) {
                    Some(orig) => writeln!(out, "  {}  (hardlink of {orig})", f.path)?,
                    None => {
                        first_of.insert(f.inode, &f.path);
                        writeln!(out, "  {}", f.path)?
                    }
                }
            }
        }
        for g in &r.hardlinked {
            writeln!(out, "already hardlinked (no waste): {}", g.join(", "))?;
        }
        for (p, m) in &r.problems {
            writeln!(out, "error: {p}: {m}")?;
        }
        if !cli.quiet {
            writeln!(
                out,
                "{} duplicate sets, {} files, {} wasted ({} files, {} scanned; {} compared by their first and last blocks, {} hashed in full)",
                r.sets.len(),
                r.duplicate_files,
                h(r.wasted),
                r.files_scanned,
                h(r.bytes_scanned),
                r.files_partially_hashed,
                r.files_fully_hashed
            )?;
        }
    }
    Ok(if r.problems.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Problems
    })
}

fn print_json<T: Serialize>(v: &T) -> Result<()> {
    // Serialised first, written with std's error type, so a closed pipe
    // (`trove ls --json | head`) is recognised and is not a failure.
    let mut text = serde_json::to_string_pretty(v)?;
    text.push('\n');
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

/// A progress bar on stderr, only when stderr is a terminal: files and
/// bytes done, rate and ETA.
struct TermProgress {
    bar: Option<indicatif::ProgressBar>,
    files: std::sync::atomic::AtomicU64,
    total_files: std::sync::atomic::AtomicU64,
}

impl TermProgress {
    fn new(cli: &Cli) -> TermProgress {
        let on = std::io::stderr().is_terminal() && !cli.quiet && !cli.json;
        TermProgress {
            bar: on.then(indicatif::ProgressBar::hidden),
            files: Default::default(),
            total_files: Default::default(),
        }
    }
}

impl Progress for TermProgress {
    fn phase(&self, name: &str, items: u64, bytes: u64) {
        let Some(b) = &self.bar else { return };
        use std::sync::atomic::Ordering::Relaxed;
        b.reset();
        self.files.store(0, Relaxed);
        self.total_files.store(items, Relaxed);
        // Style and length first: the bar draws as soon as it has a target.
        if bytes > 0 {
            b.disable_steady_tick();
            b.set_length(bytes);
            let style = indicatif::ProgressStyle::with_template(
                "{msg:>8} [{bar:20}] {prefix} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            b.set_style(style.progress_chars("=> "));
            b.set_prefix(format!("0/{items} files"));
        } else {
            b.set_length(items);
            b.set_style(indicatif::ProgressStyle::default_spinner());
            // A spinner only moves when something ticks it.
            b.enable_steady_tick(std::time::Duration::from_millis(120));
        }
        b.set_message(name.to_string());
        b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    }
    fn advance(&self, items: u64, bytes: u64) {
        if let Some(b) = &self.bar {
            use std::sync::atomic::Ordering::Relaxed;
            b.inc(bytes);
            let done = self.files.fetch_add(items, Relaxed) + items;
            let total = self.total_files.load(Relaxed);
            // The text changes at most every 64 files: formatting per file
            // would cost more than the files.
            if items > 0 && (done % 64 < items || done == total) {
                b.set_prefix(format!("{done}/{total} files"));
            }
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.disable_steady_tick();
            b.finish_and_clear();
            b.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
    }
}

/// The one-line report of an error and its causes, as `{:#}` would print
/// it, except that a cause whose text the message already holds is not
/// repeated: the library's I/O errors name the OS error in their own text
/// *and* keep it as their source (so a caller can still ask for its kind),
/// and printing both said "No space left on device (os error 28): No space
/// left on device (os error 28)".
pub fn error_report(e: &anyhow::Error) -> String {
    // Every I/O error of the library carries its path; a bare one can only
    // come from writing the report itself (`writeln!(stdout)?`), so say so
    // rather than print an error that names nothing (the fault sweep found
    // "error: Disk quota exceeded (os error 122)" alone).
    if e.chain().count() == 1 {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return format!("cannot write the report to standard output: {io}");
        }
    }
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Map an error to the exit code of SPEC §5.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(te) = cause.downcast_ref::<Error>() {
            if matches!(te, Error::Locked { .. }) {
                return 3;
            }
            if te.is_usage() {
                return 2;
            }
        }
    }
    1
}
