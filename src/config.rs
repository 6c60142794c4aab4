//! `config.json` (the seed's format, extended) and the resolution of
//! settings: command line > environment > config file > defaults. The
//! resolved settings are plain data; no clap or serde types leak into the
//! engine.

use crate::error::{Error, Result};
use crate::id::HashAlgo;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// What to do when a path cannot be backed up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Log at debug level; the exit code stays 0.
    Ignore,
    /// Report each path; the run completes; exit code 1.
    #[default]
    Warn,
    /// Stop at the first problem, before anything is committed; exit 1.
    Fail,
}

impl std::str::FromStr for OnError {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ignore" => Ok(OnError::Ignore),
            "warn" => Ok(OnError::Warn),
            "fail" => Ok(OnError::Fail),
            _ => Err(format!("{s:?}: use ignore, warn or fail")),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    pub max_versions_per_file: Option<u64>,
    pub deleted_max_age_days: Option<u64>,
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub keep_within_days: Option<u32>,
}

impl RetentionConfig {
    pub fn policy(&self) -> crate::retention::Policy {
        crate::retention::Policy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within_days: self.keep_within_days,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    pub debounce_ms: Option<u64>,
    pub full_scan_interval: Option<u64>,
}

/// The off-site replica (`remote` in the config file).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSection {
    /// `s3://BUCKET[/PREFIX]` or `file:///PATH`.
    pub url: Option<String>,
    /// Push after every backup (and every watch run).
    pub push_after_backup: Option<bool>,
    /// A watch session pushes at most once per this many seconds.
    pub push_interval: Option<u64>,
    /// The S3 storage class data packs are written in (`STANDARD_IA` …).
    pub data_storage_class: Option<String>,
    /// The remote's own snapshot retention (`prune --remote`).
    pub retention: Option<RemoteRetention>,
    /// Unused bytes `prune --remote` tolerates, in percent of the used ones.
    pub max_unused: Option<f64>,
    /// Minutes a pack out of the index waits before a prune deletes it.
    pub prune_grace_minutes: Option<u64>,
}

/// `remote.retention`: the keep rules of `prune --remote`, independent of
/// the local ones.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteRetention {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub keep_within_days: Option<u32>,
}

impl RemoteRetention {
    pub fn policy(&self) -> crate::retention::Policy {
        crate::retention::Policy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within_days: self.keep_within_days,
        }
    }
}

/// The storage classes `remote.data_storage_class` accepts: S3's list
/// (PutObject's `x-amz-storage-class`) without the archive classes, whose
/// objects cannot be read without a restore request first.
pub const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "REDUCED_REDUNDANCY",
    "EXPRESS_ONEZONE",
    "OUTPOSTS",
    "SNOW",
];

/// Check a storage class name (as S3 spells it, upper case) and say what
/// is accepted when it is not.
pub fn check_storage_class(class: &str) -> Result<(), String> {
    if STORAGE_CLASSES.contains(&class) {
        return Ok(());
    }
    if matches!(class, "GLACIER" | "DEEP_ARCHIVE") {
        return Err(format!(
            "{class} objects cannot be read until a restore request thaws them, so a restore or verify --read-data would fail; use GLACIER_IR (instant retrieval) instead"
        ));
    }
    Err(format!(
        "unknown storage class {class:?} (accepted: {})",
        STORAGE_CLASSES.join(", ")
    ))
}

/// `remote.push_interval` when the config leaves it out: five minutes.
pub const DEFAULT_PUSH_INTERVAL: u64 = 300;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    #[default]
    Info,
    Debug,
}

/// The file as written by the user.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub sources: Option<Vec<PathBuf>>,
    pub backup_root: Option<PathBuf>,
    pub log_dir: Option<PathBuf>,
    pub log_level: Option<LogLevel>,
    pub hash_algorithm: Option<HashAlgo>,
    pub retention: Option<RetentionConfig>,
    pub exclude: Option<Vec<String>>,
    /// Files of exclude patterns, one per line (`#` comments).
    pub exclude_file: Option<Vec<PathBuf>>,
    /// Exclude a directory holding a file of one of these names.
    pub exclude_if_present: Option<Vec<String>>,
    /// Exclude directories holding a valid `CACHEDIR.TAG`.
    pub exclude_caches: Option<bool>,
    /// Exclude files larger than this (bytes, or "64K", "1.5M", "2G").
    pub exclude_larger_than: Option<SizeSetting>,
    pub follow_symlinks: Option<bool>,
    pub one_file_system: Option<bool>,
    /// Record extended attributes (ACLs, capabilities, SELinux labels);
    /// default true.
    pub xattrs: Option<bool>,
    pub on_error: Option<OnError>,
    pub watch: Option<WatchConfig>,
    pub remote: Option<RemoteSection>,
}

/// The allowed range of a numeric setting, checked when the config is
/// read and when a flag gives the value: a value outside it is a usage
/// error (exit 2) naming the key and the range, never a number that
/// overflows later (`deleted_max_age_days: 1000000`, meant as "for ever",
/// used to wrap around and empty `_deleted/`).
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    /// `section.name` in the config file.
    pub key: &'static str,
    pub min: u64,
    pub max: u64,
    /// How the range reads after "allowed: MIN to MAX".
    pub unit: &'static str,
    /// What to write instead of a value out of range.
    pub hint: &'static str,
}

/// 100 years: the longest age a setting in days may give.
pub const MAX_DAYS: u64 = 36_500;
const MAX_COUNT: u64 = u32::MAX as u64;
const KEEP_HINT: &str = "leave the key out for no such rule";

/// Every numeric setting and its range (README "Configuration").
pub const BOUNDS: &[Bound] = &[
    Bound {
        key: "retention.max_versions_per_file",
        min: 1,
        max: MAX_COUNT,
        unit: "",
        hint: "it counts the earlier versions kept per file",
    },
    Bound {
        key: "retention.deleted_max_age_days",
        min: 0,
        max: MAX_DAYS,
        unit: " days = 100 years",
        hint: "leave the key out to keep deleted files for ever",
    },
    Bound {
        key: "retention.keep_last",
        min: 1,
        max: MAX_COUNT,
        unit: "",
        hint: KEEP_HINT,
    },
    Bound {
        key: "retention.keep_hourly",
        min: 1,
        max: MAX_COUNT,
        unit: "",
        hint: KEEP_HINT,
    },
    Bound {
        key: "retention.keep_daily",
        min: 1,
        max: MAX_COUNT,
        unit: "",
        hint: KEEP_HINT,
    },
    Bound {
        key: "retention.keep_weekly",
        min: 1,
        max: MAX_COUNT,
        unit: "",
        hint: KEEP_HINT,
    },
    Bound {
        key: "retention.keep_monthly",
        min: 1,
        max: MAX_COUNT,
        unit: "",
        hint: KEEP_HINT,
    },
    Bound {
        key: "retention.keep_yearly",
        min: 1,
        max: MAX_COUNT,
        unit: "",
        hint: KEEP_HINT,
    },
    Bound {
        key: "retention.keep_within_days",
        min: 1,
        max: MAX_DAYS,
        unit: " days = 100 years",
        hint: KEEP_HINT,
    },
    Bound {
        key: "watch.debounce_ms",
        min: 1,
        max: 3_600_000,
        unit: " ms = an hour",
        hint: "the default is 1000",
    },
    Bound {
        key: "watch.full_scan_interval",
        min: 1,
        max: 31_536_000,
        unit: " s = 365 days",
        hint: "the default is 3600",
    },
    Bound {
        key: "remote.retention.keep_last",
        min: 1,
        max: MAX_COUNT,
        unit: "",
        hint: KEEP_HINT,
    },
    Bound {
        key: "remote.retention.keep_hourly",
        min: 1,
        max: MAX_COUNT,
        unit: "",
        hint: KEEP_HINT,
    },
    Bound {
        key: "remote.retention.keep_daily",
        min: 1,
        max: MAX_COUNT,
        unit: "",
        hint: KEEP_HINT,
    },
    Bound {
        key: "remote.retention.keep_weekly",
        min: 1,
        max: MAX_COUNT,
        unit: "",
        hint: KEEP_HINT,
    },
    Bound {
        key: "remote.retention.keep_monthly",
        min: 1,
        max: MAX_COUNT,
        unit: "",
        hint: KEEP_HINT,
    },
    Bound {
        key: "remote.retention.keep_yearly",
        min: 1,
        max: MAX_COUNT,
        unit: "",
        hint: KEEP_HINT,
    },
    Bound {
        key: "remote.retention.keep_within_days",
        min: 1,
        max: MAX_DAYS,
        unit: " days = 100 years",
        hint: KEEP_HINT,
    },
    Bound {
        key: "remote.prune_grace_minutes",
        min: 0,
        max: 43_200,
        unit: " minutes = 30 days",
        hint: "the default is 60",
    },
    Bound {
        key: "remote.push_interval",
        min: 1,
        max: 86_400,
        unit: " s = a day",
        hint: "the default is 300",
    },
];

impl Bound {
    /// The bound of a config key (`section.name`).
    pub fn of(key: &str) -> Option<&'static Bound> {
        BOUNDS.iter().find(|b| b.key == key)
    }

    /// "allowed: 1 to 4294967295".
    pub fn range(&self) -> String {
        format!("allowed: {} to {}{}", self.min, self.max, self.unit)
    }

    /// Check `v`, given as `named` (`key `x`` or `--flag`).
    pub fn check(&self, named: &str, v: u64) -> std::result::Result<(), String> {
        if (self.min..=self.max).contains(&v) {
            return Ok(());
        }
        Err(format!(
            "{named}: {v} is out of range ({}); {}",
            self.range(),
            self.hint
        ))
    }
}

/// Check a flag's value against the bound of the config key it overrides.
pub fn check_flag(flag: &str, key: &str, v: Option<u64>) -> Result<()> {
    match (Bound::of(key), v) {
        (Some(b), Some(v)) => b.check(flag, v).map_err(Error::Usage),
        _ => Ok(()),
    }
}

impl FileConfig {
    /// Every numeric setting given, by its key (for [`Bound`]).
    fn numbers(&self) -> Vec<(&'static str, Option<u64>)> {
        let r = self.retention.clone().unwrap_or_default();
        let w = self.watch.clone().unwrap_or_default();
        let remote = self.remote.clone().unwrap_or_default();
        let rr = remote.retention.clone().unwrap_or_default();
        let n = |v: Option<u32>| v.map(u64::from);
        vec![
            ("retention.max_versions_per_file", r.max_versions_per_file),
            ("retention.deleted_max_age_days", r.deleted_max_age_days),
            ("retention.keep_last", n(r.keep_last)),
            ("retention.keep_hourly", n(r.keep_hourly)),
            ("retention.keep_daily", n(r.keep_daily)),
            ("retention.keep_weekly", n(r.keep_weekly)),
            ("retention.keep_monthly", n(r.keep_monthly)),
            ("retention.keep_yearly", n(r.keep_yearly)),
            ("retention.keep_within_days", n(r.keep_within_days)),
            ("watch.debounce_ms", w.debounce_ms),
            ("watch.full_scan_interval", w.full_scan_interval),
            ("remote.push_interval", remote.push_interval),
            ("remote.retention.keep_last", n(rr.keep_last)),
            ("remote.retention.keep_hourly", n(rr.keep_hourly)),
            ("remote.retention.keep_daily", n(rr.keep_daily)),
            ("remote.retention.keep_weekly", n(rr.keep_weekly)),
            ("remote.retention.keep_monthly", n(rr.keep_monthly)),
            ("remote.retention.keep_yearly", n(rr.keep_yearly)),
            ("remote.retention.keep_within_days", n(rr.keep_within_days)),
            ("remote.prune_grace_minutes", remote.prune_grace_minutes),
        ]
    }
}

/// A size in the config: a number of bytes or a string with a unit.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum SizeSetting {
    Bytes(u64),
    Text(String),
}

impl SizeSetting {
    pub fn bytes(&self) -> std::result::Result<u64, String> {
        match self {
            SizeSetting::Bytes(b) => Ok(*b),
            SizeSetting::Text(t) => parse_size(t),
        }
    }
}

/// A size: bytes, or a number with K, M, G or T (powers of 1024; `KiB`,
/// `MB` and the like are read the same way).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 4096, 64K, 1.5M, 2G)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("{s:?}: unknown unit (use K, M, G or T)")),
    };
    let v = n * mult as f64;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(v as u64)
}

/// An `--exclude-if-present` name must be one file name: an empty name,
/// `.` or `..` would name the folder itself (every folder would match).
pub fn check_marker_name(n: &str) -> std::result::Result<(), String> {
    if crate::pathbytes::is_safe_component(n.as_bytes()) {
        Ok(())
    } else {
        Err(format!(
            "--exclude-if-present {n:?}: give the name of a file (like .nobackup), without / and not empty, . or .."
        ))
    }
}

/// Read an exclude file: one pattern per line; blank lines and lines
/// starting with `#` are skipped (restic's `--exclude-file`).
pub fn read_exclude_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("cannot read exclude file {}: {e}", path.display())))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// A loaded config file with its relative paths already resolved against
/// the file's folder.
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    pub path: PathBuf,
    pub file: FileConfig,
}

impl LoadedConfig {
    pub fn load(path: &Path) -> Result<LoadedConfig> {
        let text = std::fs::read(path).map_err(|e| {
            Error::config(
                path,
                format!("cannot read: {e}; pass --config with an existing file"),
            )
        })?;
        LoadedConfig::parse(&text, path)
    }

    /// Decode and check the text of a config file read from `path`
    /// (relative paths in it are resolved against `path`'s folder).
    pub fn parse(text: &[u8], path: &Path) -> Result<LoadedConfig> {
        let de = &mut serde_json::Deserializer::from_slice(text);
        let mut file: FileConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            if key == "." || key.is_empty() {
                Error::config(path, inner.to_string())
            } else if let Some(b) = Bound::of(&key) {
                // A negative, fractional or huge number: the range helps.
                Error::config(path, format!("key `{key}`: {inner} ({})", b.range()))
            } else {
                Error::config(path, format!("key `{key}`: {inner}"))
            }
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        // `./config.json` has the parent "": keep relative paths as written.
        let base = if base == Path::new(".") {
            Path::new("")
        } else {
            base
        };
        let abs = |p: &PathBuf| -> PathBuf {
            if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            }
        };
        if let Some(s) = &mut file.sources {
            *s = s.iter().map(abs).collect();
        }
        file.backup_root = file.backup_root.as_ref().map(abs);
        file.log_dir = file.log_dir.as_ref().map(abs);
        if let Some(v) = &mut file.exclude_file {
            *v = v.iter().map(abs).collect();
        }
        let cfg = LoadedConfig {
            path: path.to_path_buf(),
            file,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn err(&self, msg: impl Into<String>) -> Error {
        Error::config(&self.path, msg)
    }

    fn validate(&self) -> Result<()> {
        let f = &self.file;
        if let Some(s) = &f.sources {
            if s.is_empty() {
                return Err(self.err("key `sources`: list at least one directory to back up"));
            }
            for src in s {
                if !src.is_dir() {
                    return Err(self.err(format!(
                        "key `sources`: {} is not an existing directory",
                        src.display()
                    )));
                }
            }
        }
        for (key, v) in f.numbers() {
            if let (Some(b), Some(v)) = (Bound::of(key), v) {
                b.check(&format!("key `{key}`"), v)
                    .map_err(|e| self.err(e))?;
            }
        }
        if let Some(class) = f
            .remote
            .as_ref()
            .and_then(|r| r.data_storage_class.as_ref())
        {
            check_storage_class(class)
                .map_err(|e| self.err(format!("key `remote.data_storage_class`: {e}")))?;
        }
        if let Some(m) = f.remote.as_ref().and_then(|r| r.max_unused) {
            if !(0.0..=100.0).contains(&m) {
                return Err(self.err(format!(
                    "key `remote.max_unused`: {m} is out of range (allowed: 0 to 100 percent); the default is 5"
                )));
            }
        }
        if let Some(ex) = &f.exclude {
            crate::scan::Excludes::new(ex).map_err(|e| self.err(format!("key `exclude`: {e}")))?;
        }
        for p in f.exclude_file.iter().flatten() {
            let pats =
                read_exclude_file(p).map_err(|e| self.err(format!("key `exclude_file`: {e}")))?;
            crate::scan::Excludes::new(&pats)
                .map_err(|e| self.err(format!("key `exclude_file` ({}): {e}", p.display())))?;
        }
        for n in f.exclude_if_present.iter().flatten() {
            check_marker_name(n).map_err(|e| self.err(format!("key `exclude_if_present`: {e}")))?;
        }
        if let Some(sz) = &f.exclude_larger_than {
            sz.bytes()
                .map_err(|e| self.err(format!("key `exclude_larger_than`: {e}")))?;
        }
        Ok(())
    }
}

/// Settings of a backup run, resolved.
#[derive(Clone, Debug)]
pub struct BackupSettings {
    pub sources: Vec<PathBuf>,
    pub backup_root: PathBuf,
    pub log_dir: Option<PathBuf>,
    pub log_level: LogLevel,
    pub hash: Option<HashAlgo>,
    pub exclude: Vec<String>,
    pub follow_symlinks: bool,
    pub one_file_system: bool,
    pub on_error: OnError,
    pub max_versions: u64,
    pub deleted_max_age_days: Option<u64>,
    /// Snapshot policy (`keep_*`); not set: every record stays.
    pub policy: crate::retention::Policy,
    /// Filters beyond the exclude globs.
    pub filters: crate::scan::Filters,
    /// Record extended attributes.
    pub xattrs: bool,
}

pub const DEFAULT_MAX_VERSIONS: u64 = 10;

/// Command-line values for a backup (None: not given).
#[derive(Clone, Debug, Default)]
pub struct BackupOverrides {
    pub sources: Vec<PathBuf>,
    pub backup_root: Option<PathBuf>,
    pub exclude: Vec<String>,
    pub follow_symlinks: bool,
    pub one_file_system: bool,
    pub on_error: Option<OnError>,
    pub hash: Option<HashAlgo>,
    pub exclude_file: Vec<PathBuf>,
    pub exclude_if_present: Vec<String>,
    pub exclude_caches: bool,
    pub exclude_larger_than: Option<u64>,
    /// `--no-xattrs`.
    pub no_xattrs: bool,
    /// The run scans no source (`backup --stdin`): none is needed, and the
    /// config's are not used.
    pub no_scan: bool,
}

impl BackupSettings {
    pub fn resolve(cli: BackupOverrides, cfg: Option<&LoadedConfig>) -> Result<BackupSettings> {
        let f = cfg.map(|c| c.file.clone()).unwrap_or_default();
        let where_ = || match cfg {
            Some(c) => format!(" (config {})", c.path.display()),
            None => " (no config file: pass SOURCE… DEST, or --config FILE)".to_string(),
        };
        let sources = if cli.no_scan {
            Vec::new()
        } else if !cli.sources.is_empty() {
            for s in &cli.sources {
                if !s.is_dir() {
                    return Err(Error::Usage(format!(
                        "source {} is not an existing directory",
                        s.display()
                    )));
                }
            }
            cli.sources
        } else {
            f.sources
                .clone()
                .ok_or_else(|| Error::Usage(format!("no sources to back up{}", where_())))?
        };
        let backup_root = cli
            .backup_root
            .or(f.backup_root.clone())
            .ok_or_else(|| Error::Usage(format!("no backup root given{}", where_())))?;
        let r = f.retention.clone().unwrap_or_default();
        let mut exclude = f.exclude.clone().unwrap_or_default();
        exclude.extend(cli.exclude);
        for p in f.exclude_file.iter().flatten().chain(&cli.exclude_file) {
            exclude.extend(read_exclude_file(p)?);
        }
        let mut if_present: Vec<Vec<u8>> = f
            .exclude_if_present
            .clone()
            .unwrap_or_default()
            .into_iter()
            .chain(cli.exclude_if_present)
            .map(String::into_bytes)
            .collect();
        if_present.sort();
        if_present.dedup();
        let larger_than = match cli.exclude_larger_than {
            Some(n) => Some(n),
            None => f
                .exclude_larger_than
                .as_ref()
                .map(|s| s.bytes().map_err(Error::Usage))
                .transpose()?,
        };
        let filters = crate::scan::Filters {
            if_present,
            caches: cli.exclude_caches || f.exclude_caches.unwrap_or(false),
            larger_than,
        };
        Ok(BackupSettings {
            sources,
            backup_root,
            log_dir: f.log_dir.clone(),
            log_level: f.log_level.unwrap_or_default(),
            hash: cli.hash.or(f.hash_algorithm),
            exclude,
            follow_symlinks: cli.follow_symlinks || f.follow_symlinks.unwrap_or(false),
            one_file_system: cli.one_file_system || f.one_file_system.unwrap_or(false),
            on_error: cli.on_error.or(f.on_error).unwrap_or_default(),
            max_versions: r.max_versions_per_file.unwrap_or(DEFAULT_MAX_VERSIONS),
            deleted_max_age_days: r.deleted_max_age_days,
            policy: r.policy(),
            filters,
            xattrs: !cli.no_xattrs && f.xattrs.unwrap_or(true),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: &str) -> Result<LoadedConfig> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        std::fs::create_dir(dir.path().join("src")).map_err(|e| Error::io("mkdir", "src", e))?;
        let p = dir.path().join("config.json");
        std::fs::write(&p, json).map_err(|e| Error::io("write", &p, e))?;
        LoadedConfig::load(&p)
    }

    fn msg(r: Result<LoadedConfig>) -> String {
        match r {
            Ok(_) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn seed_config_loads_and_resolves_relative_paths() -> Result<()> {
        let c = load(
            r#"{"sources": ["./src"], "backup_root": "./b", "log_dir": "./logs",
            "hash_algorithm": "sha256", "retention": {"max_versions_per_file": 10}}"#,
        )?;
        assert!(c
            .file
            .sources
            .as_ref()
            .is_some_and(|s| s[0].is_absolute()
                || s[0].starts_with(c.path.parent().unwrap_or(Path::new("")))));
        assert_eq!(c.file.hash_algorithm, Some(HashAlgo::Sha256));
        Ok(())
    }

    #[test]
    fn numeric_keys_are_bounded_and_errors_name_the_key_and_range() {
        for b in BOUNDS {
            // `a.b.c` = v as `{"a": {"b": {"c": v}}}`.
            let with = |v: &str| {
                let mut nested = v.to_string();
                for part in b.key.rsplit('.') {
                    nested = format!(r#"{{"{part}": {nested}}}"#);
                }
                let body = nested.trim_start_matches('{');
                msg(load(&format!(r#"{{"sources": ["./src"], {body}"#)))
            };
            assert_eq!(with(&b.min.to_string()), "ok", "{} = min", b.key);
            assert_eq!(with(&b.max.to_string()), "ok", "{} = max", b.key);
            for bad in [
                (b.max + 1).to_string(),
                "-1".to_string(),
                "1e40".to_string(),
                u64::MAX.to_string(),
            ] {
                let m = with(&bad);
                assert!(
                    m.contains(b.key) && m.contains(&b.range()),
                    "{} = {bad}: {m}",
                    b.key
                );
            }
            if b.min > 0 {
                let m = with(&(b.min - 1).to_string());
                assert!(m.contains(b.key) && m.contains("allowed"), "{m}");
            }
        }
        assert!(Bound::of("retention.nothing").is_none());
    }

    #[test]
    fn errors_name_the_key() {
        assert!(msg(load(r#"{"sources": ["./src"], "bogus": 1}"#)).contains("bogus"));
        assert!(msg(load(
            r#"{"sources": ["./src"], "retention": {"max_versions_per_file": "x"}}"#
        ))
        .contains("retention.max_versions_per_file"));
        assert!(msg(load(
            r#"{"sources": ["./src"], "retention": {"max_versions_per_file": 0}}"#
        ))
        .contains("retention.max_versions_per_file"));
        assert!(msg(load(r#"{"sources": ["./missing"]}"#)).contains("sources"));
        assert!(
            msg(load(r#"{"sources": ["./src"], "hash_algorithm": "md5"}"#))
                .contains("hash_algorithm")
        );
        assert!(msg(load(r#"{"sources": []}"#)).contains("sources"));
        assert!(msg(load(r#"{"sources": ["./src"], "on_error": "explode"}"#)).contains("on_error"));
        assert!(msg(load("{not json")).contains("config"));
    }
}
