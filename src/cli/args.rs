//! The command line as clap parses it: the argument structs and the value
//! types of their flags, nothing else. Settings resolution (what a missing
//! flag falls back to) is in `settings`; nothing here touches the engine.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// `--hash`: the content hash of a new repository. A clap value type of its
/// own, so the domain's `HashAlgo` stays free of clap; the spellings are
/// exactly those accepted before (`blake3`, `sha256`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HashArg {
    Blake3,
    Sha256,
}

impl From<HashArg> for crate::id::HashAlgo {
    fn from(h: HashArg) -> Self {
        match h {
            HashArg::Blake3 => crate::id::HashAlgo::Blake3,
            HashArg::Sha256 => crate::id::HashAlgo::Sha256,
        }
    }
}

/// `--object-lock-mode`: how S3 holds a locked object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LockModeArg {
    /// Nobody can delete or shorten a lock before its date (ransomware-proof)
    Compliance,
    /// Principals with s3:BypassGovernanceRetention can delete or shorten
    Governance,
}

impl From<LockModeArg> for crate::remote::objlock::LockMode {
    fn from(m: LockModeArg) -> Self {
        match m {
            LockModeArg::Compliance => crate::remote::objlock::LockMode::Compliance,
            LockModeArg::Governance => crate::remote::objlock::LockMode::Governance,
        }
    }
}

/// `--on-error`: what a file that cannot be backed up does to a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnErrorArg {
    Ignore,
    Warn,
    Fail,
}

impl From<OnErrorArg> for crate::config::OnError {
    fn from(o: OnErrorArg) -> Self {
        match o {
            OnErrorArg::Ignore => crate::config::OnError::Ignore,
            OnErrorArg::Warn => crate::config::OnError::Warn,
            OnErrorArg::Fail => crate::config::OnError::Fail,
        }
    }
}

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
    /// Work on the off-site remote instead of the local repository (snapshots, ls, diff, restore, verify, stats); the remote of push, pull and `remote key` (else TROVE_REMOTE, else the config's remote.url)
    #[arg(long, global = true, value_name = "URL")]
    pub remote: Option<String>,
    /// Read the remote's password from FILE (else TROVE_PASSWORD_FILE, TROVE_PASSWORD, or a prompt)
    #[arg(long, global = true, env = "TROVE_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Limit uploads to the remote to KIB KiB/s in all (every concurrent transfer together)
    #[arg(long, global = true, value_name = "KIB", value_parser = clap::value_parser!(u64).range(1..=u64::from(u32::MAX)))]
    pub limit_upload: Option<u64>,
    /// Limit downloads from the remote to KIB KiB/s in all
    #[arg(long, global = true, value_name = "KIB", value_parser = clap::value_parser!(u64).range(1..=u64::from(u32::MAX)))]
    pub limit_download: Option<u64>,
    /// Keep no local cache of the remote's index files, snapshot commits and tree packs: read them from the remote every time
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// Where remotes are cached [default: $XDG_CACHE_HOME/trove, else ~/.cache/trove]. Also TROVE_CACHE_DIR
    #[arg(long, global = true, env = "TROVE_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
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
        after_help = "Examples:\n  trove backup                      # sources and backup_root from ./config.json\n  trove backup ~/docs ~/pics /mnt/b # SOURCE… DEST\n  trove backup --dry-run -v         # print the plan, change nothing\n  trove backup --stdin-from-command --stdin-filename db.sql --repo /mnt/b -- pg_dump mydb\n  pg_dump mydb | trove backup --stdin --stdin-filename db.sql --repo /mnt/b\n\n--stdin and --stdin-from-command store one stream as one file of a new snapshot (the latest one with that file added or replaced; sources are not scanned). Prefer --stdin-from-command: a pipe hides the producer's exit status, so with --stdin use `set -o pipefail` and check the pipeline's status (README, \"Backing up a stream\")."
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
        after_help = "Examples:\n  trove verify               # re-hash every object\n  trove verify --quick       # existence and sizes only\n  trove verify --sample 5    # re-hash a random 5% of the objects\n  trove verify --remote s3://bucket/trove --read-data-subset 3/30   # night 3 of 30: every pack once a month\n\nExit 1 when any problem is found; each is named with the object or path and the snapshots affected."
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
        after_help = "Examples:\n  trove prune --dry-run                     # what would go, and the bytes freed\n  trove prune --keep-daily 7 --keep-weekly 4 --keep-monthly 12\n  trove prune --remote s3://bucket/trove --keep-daily 365 --dry-run   # the remote's own history\n\nWith --remote, the remote's snapshots are forgotten by its own policy (flags, else remote.retention), packs no kept snapshot needs leave the index, and a later prune deletes them after the grace period.\n\nWithout any keep rule every snapshot record stays, and only the latest snapshot pins its content (max_versions_per_file bounds the history per file)."
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
    /// Create or manage an off-site remote (S3 or a folder)
    #[command(
        subcommand,
        after_help = "Examples:\n  trove remote init s3://bucket/trove          # credentials from AWS_* variables\n  trove remote init file:///mnt/usb/trove\n  trove remote init --object-lock 30 s3://locked-bucket/trove\n  trove remote key add --remote s3://bucket/trove\n  trove remote key list --remote s3://bucket/trove\n  trove remote extend-locks --remote s3://locked-bucket/trove   # weekly, from cron"
    )]
    Remote(RemoteCommand),
    /// Upload every snapshot the remote lacks (encrypted, resumable)
    #[command(
        after_help = "Examples:\n  trove push --repo /mnt/backup --remote s3://bucket/trove\n  TROVE_REMOTE=file:///mnt/usb/trove trove push --json\n\nA killed push is resumed by the next one; content retention already removed is named, not an error."
    )]
    Push(PushArgs),
    /// Rebuild a complete local repository (browsable tree included) from the remote alone
    #[command(
        after_help = "Example: trove pull --remote s3://bucket/trove /mnt/new-disk\n\nSnapshot and tree ids equal the originals. Into an existing repository of the same remote, only what it lacks is copied."
    )]
    Pull(PullArgs),
    /// Show repository statistics (logical vs stored bytes, dedup ratio)
    #[command(after_help = "Example: trove stats --repo /mnt/backup --json")]
    Stats,
}

#[derive(Subcommand, Debug)]
pub enum RemoteCommand {
    /// Create an empty remote repository at URL (s3://BUCKET[/PREFIX] or file:///PATH)
    Init(RemoteInitArgs),
    /// Manage the remote's passwords (key files)
    #[command(subcommand)]
    Key(KeyCommand),
    /// Renew the S3 Object Lock of every object the remote still needs (a remote made with --object-lock)
    #[command(
        after_help = "Example: trove remote extend-locks --remote s3://locked-bucket/trove --json\n\nEach object whose lock ends before now + DAYS is locked until then (one HEAD per object, one PUT per renewal); a lock is never shortened. Run it at least every DAYS/2 days: `verify --remote` warns about locks ending within half the period."
    )]
    ExtendLocks(ExtendLocksArgs),
}

#[derive(Args, Debug)]
pub struct ExtendLocksArgs {
    /// Lock until now + DAYS [default: the remote's lock period]
    #[arg(long, value_name = "DAYS")]
    pub days: Option<u32>,
}

#[derive(Args, Debug)]
pub struct RemoteInitArgs {
    /// s3://BUCKET[/PREFIX] or file:///PATH [default: --remote, TROVE_REMOTE, the config's remote.url]
    pub url: Option<String>,
    /// Target pack size (1M to 512M) [default: 16M]
    #[arg(long, value_name = "SIZE", value_parser = crate::config::parse_size)]
    pub pack_size: Option<u64>,
    /// Content hash of the repositories it replicates [default: the --repo repository's, else blake3]
    #[arg(long, value_enum)]
    pub hash: Option<HashArg>,
    /// Lock every object written for DAYS with S3 Object Lock (the bucket must have been created with object lock; see `remote extend-locks`)
    #[arg(long, value_name = "DAYS")]
    pub object_lock: Option<u32>,
    /// How the locks hold (with --object-lock)
    #[arg(
        long,
        value_enum,
        default_value = "compliance",
        requires = "object_lock"
    )]
    pub object_lock_mode: LockModeArg,
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Add a password (the new one from --new-password-file, TROVE_NEW_PASSWORD or a prompt)
    Add {
        /// Read the new password from FILE
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
    },
    /// List the key files (passwords) of the remote
    List,
    /// Remove a key file by id prefix (never the one in use)
    Remove {
        /// Key id (or a unique prefix), as `trove remote key list` shows it
        id: String,
    },
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Also walk the snapshots the remote has, uploading again any tree or content it lost (after `verify --remote` named a missing pack or index)
    #[arg(long)]
    pub repair: bool,
    /// Upload data packs in this S3 storage class (STANDARD_IA, ONEZONE_IA, GLACIER_IR, INTELLIGENT_TIERING …; overrides remote.data_storage_class); indexes, trees and snapshot commits stay STANDARD
    #[arg(long, value_name = "CLASS")]
    pub data_storage_class: Option<String>,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// The folder to rebuild the repository in (new, or a repository pulled before)
    pub dest: PathBuf,
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
    /// With --remote: repack packs until the unused bytes left are at most PERCENT of the used ones [default: 5, or remote.max_unused]
    #[arg(long, value_name = "PERCENT", value_parser = parse_max_unused)]
    pub max_unused: Option<f64>,
    /// With --remote: delete packs taken out of the index by an earlier prune only after MINUTES (a push or restore running meanwhile may still read them) [default: 60, or remote.prune_grace_minutes]
    #[arg(long, value_name = "MINUTES")]
    pub grace: Option<u64>,
    /// With --remote: remove every lock first, even one a prune renewed recently (only when you know that prune is dead)
    #[arg(long)]
    pub unlock: bool,
}

/// A percentage from 0 (repack every pack with unused bytes): `5`, `5%`, `0.5`.
fn parse_max_unused(s: &str) -> std::result::Result<f64, String> {
    let n = s.trim().trim_end_matches('%');
    match n.parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s:?}: give a percentage from 0 to 100 (e.g. 5 or 5%)"
        )),
    }
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
    /// As root: give entries the recorded uid/gid, not this machine's ids for the recorded owner names
    #[arg(long)]
    pub numeric_owner: bool,
    /// Do not set the recorded extended attributes
    #[arg(long)]
    pub no_xattrs: bool,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("sampling").args(["sample", "read_data_subset"])))]
pub struct VerifyArgs {
    /// Check existence and sizes only; do not re-hash objects
    #[arg(long, conflicts_with = "sample")]
    pub quick: bool,
    /// With --remote: download every pack and check every blob
    #[arg(long, conflicts_with_all = ["sample", "quick", "read_data_subset"])]
    pub read_data: bool,
    /// Re-hash a random PERCENT of the objects (0 < PERCENT <= 100)
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    pub sample: Option<f64>,
    /// With --remote: download part of the packs and check every blob in
    /// them. N/T: the N-th of T fixed slices (1/30 … 30/30 on 30 nights
    /// read every pack once); P%: a random share; SIZE (500M, 2G): random
    /// packs up to that total
    #[arg(
        long,
        value_name = "SPEC",
        value_parser = parse_subset,
        conflicts_with = "quick"
    )]
    pub read_data_subset: Option<crate::remote::subset::Subset>,
    /// Seed for --sample or --read-data-subset P%|SIZE, to repeat a choice
    /// exactly
    #[arg(long, requires = "sampling")]
    pub seed: Option<u64>,
}

fn parse_subset(s: &str) -> std::result::Result<crate::remote::subset::Subset, String> {
    crate::remote::subset::Subset::parse(s)
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
    #[arg(long, value_enum)]
    pub hash: Option<HashArg>,
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
    /// Push to the remote after the backup (the remote from --remote, TROVE_REMOTE or remote.url)
    #[arg(long)]
    pub push: bool,
    /// Build on the newest readable snapshot when a newer record is damaged
    /// (otherwise refused: the damaged record may hold the latest state)
    #[arg(long)]
    pub allow_damaged_latest: bool,
    /// Store what arrives on standard input as one file of a new snapshot
    /// (the sources are not scanned)
    #[arg(long, conflicts_with_all = ["stdin_from_command", "dry_run", "rehash", "always_snapshot"])]
    pub stdin: bool,
    /// Run the command given after `--` and store its standard output like
    /// --stdin; a non-zero exit or a signal records no snapshot
    #[arg(long, requires = "command", conflicts_with_all = ["dry_run", "rehash", "always_snapshot"])]
    pub stdin_from_command: bool,
    /// Snapshot path of the --stdin file: a relative path such as
    /// dumps/db.sql [default: stdin]
    #[arg(long, value_name = "NAME")]
    pub stdin_filename: Option<std::ffi::OsString>,
    /// The command --stdin-from-command runs (after `--`)
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
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
    /// Do not record extended attributes (ACLs, capabilities, SELinux labels)
    #[arg(long)]
    pub no_xattrs: bool,
    /// What a file that cannot be backed up does to a run
    #[arg(long, value_name = "POLICY", value_enum)]
    pub on_error: Option<OnErrorArg>,
    /// Hash for a new repository (blake3 or sha256)
    #[arg(long, value_enum)]
    pub hash: Option<HashArg>,
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

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot id prefix, `latest`, or a time [default: latest]
    pub snapshot: Option<String>,
    /// Only this path (relative to the snapshot root) and what is below it
    pub path: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn hash_and_on_error_accept_exactly_their_old_spellings() {
        let names = |vs: &[clap::builder::PossibleValue]| -> Vec<String> {
            vs.iter().map(|v| v.get_name().to_string()).collect()
        };
        let hash: Vec<_> = HashArg::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .collect();
        assert_eq!(names(&hash), ["blake3", "sha256"]);
        let on_error: Vec<_> = OnErrorArg::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .collect();
        assert_eq!(names(&on_error), ["ignore", "warn", "fail"]);
        for (args, ok) in [
            (&["trove", "init", "d", "--hash", "blake3"][..], true),
            (&["trove", "init", "d", "--hash", "sha256"][..], true),
            (&["trove", "init", "d", "--hash", "md5"][..], false),
            // As before: exact spellings only.
            (&["trove", "init", "d", "--hash", "SHA256"][..], false),
            (&["trove", "init", "d", "--hash", "sha-256"][..], false),
            (&["trove", "backup", "--on-error", "ignore"][..], true),
            (&["trove", "backup", "--on-error", "warn"][..], true),
            (&["trove", "backup", "--on-error", "fail"][..], true),
            (&["trove", "backup", "--on-error", "explode"][..], false),
            (&["trove", "watch", "--on-error", "Fail"][..], false),
            (&["trove", "watch", "--hash", "sha256"][..], true),
        ] {
            match Cli::try_parse_from(args) {
                Ok(_) => assert!(ok, "{args:?} parsed"),
                Err(e) => {
                    assert!(!ok, "{args:?}: {e}");
                    assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue, "{args:?}");
                    // clap exits 2 for it, and names the value and the choices.
                    assert_eq!(e.exit_code(), 2);
                    let text = e.to_string();
                    let bad = args[args.len() - 1];
                    assert!(text.contains(bad), "{text}");
                    assert!(text.contains("possible values"), "{text}");
                }
            }
        }
    }

    #[test]
    fn the_values_map_to_the_domain_types() {
        use crate::config::OnError;
        use crate::id::HashAlgo;
        assert_eq!(HashAlgo::from(HashArg::Blake3), HashAlgo::Blake3);
        assert_eq!(HashAlgo::from(HashArg::Sha256), HashAlgo::Sha256);
        assert_eq!(OnError::from(OnErrorArg::Ignore), OnError::Ignore);
        assert_eq!(OnError::from(OnErrorArg::Warn), OnError::Warn);
        assert_eq!(OnError::from(OnErrorArg::Fail), OnError::Fail);
    }
}
