//! Shared helpers: a throw-away source/backup pair and ways to run the real
//! `trove` binary against it and to read back what it left on disk.

use assert_cmd::Command;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::hash::{Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;
pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Path of the `trove` binary under test (for `std::process::Command`,
/// `setpriv`, background children).
pub fn trove_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_trove"))
}

/// A `trove` command with a clean environment (no inherited TROVE_REPO).
pub fn trove_cmd() -> Res<Command> {
    let mut c = Command::cargo_bin("trove")?;
    c.env_remove("TROVE_REPO");
    Ok(c)
}

/// What one invocation of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// The audit log(s) this run created in the backup's log directory.
    pub log: String,
}

impl Run {
    pub fn from_output(o: &Output, log: String) -> Run {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            log,
        }
    }

    /// Panics with the whole output when the exit code is not `want`.
    pub fn expect_code(&self, want: i32) -> &Run {
        assert_eq!(
            self.code,
            Some(want),
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}\n--- log\n{}",
            self.stdout,
            self.stderr,
            self.log
        );
        self
    }

    /// The log's messages without timestamp and level.
    pub fn messages(&self) -> Vec<String> {
        log_messages(&self.log)
    }

    pub fn has_message(&self, m: &str) -> bool {
        self.messages().iter().any(|x| x == m)
    }

    /// Assert that the log holds exactly this message line.
    pub fn assert_message(&self, m: &str) {
        assert!(
            self.has_message(m),
            "log lacks the line {m:?}\n--- log\n{}\n--- stderr\n{}",
            self.log,
            self.stderr
        );
    }

    /// stdout and stderr together.
    pub fn console(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Strip `2026-01-01T00:00:00.000000Z  INFO ` from every log line.
pub fn log_messages(log: &str) -> Vec<String> {
    log.lines()
        .map(|l| {
            let rest = l.split_once(' ').map_or("", |(_, r)| r).trim_start();
            let rest = rest.split_once(' ').map_or("", |(_, r)| r);
            rest.to_string()
        })
        .collect()
}

/// Log lines with only the timestamp removed (level kept).
pub fn log_without_timestamps(log: &str) -> Vec<String> {
    log.lines()
        .map(|l| {
            l.split_once(' ')
                .map_or("", |(_, r)| r)
                .trim_start()
                .to_string()
        })
        .collect()
}

/// `N copied, M unchanged, T total` numbers of a summary line.
pub fn parse_summary(text: &str) -> Option<(u64, u64, u64)> {
    for line in text.lines() {
        if let Some(i) = line.find(" copied, ") {
            let head = &line[..i];
            let copied: u64 = head.rsplit([' ', ':']).next()?.parse().ok()?;
            let rest = &line[i + " copied, ".len()..];
            let (unchanged, rest) = rest.split_once(" unchanged, ")?;
            let (total, _) = rest.split_once(" total")?;
            return Some((copied, unchanged.parse().ok()?, total.parse().ok()?));
        }
    }
    None
}

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub source: PathBuf,
    pub backup: PathBuf,
}

impl TestEnv {
    /// `tmp/source/` (created) and `tmp/backup` (not created).
    pub fn new() -> Res<TestEnv> {
        let dir = tempfile::tempdir()?;
        let source = dir.path().join("source");
        std::fs::create_dir(&source)?;
        let backup = dir.path().join("backup");
        Ok(TestEnv {
            dir,
            source,
            backup,
        })
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn src(&self, rel: &str) -> PathBuf {
        self.source.join(rel)
    }

    pub fn dst(&self, rel: &str) -> PathBuf {
        self.backup.join(rel)
    }

    /// Write a source file, creating its parents.
    pub fn write(&self, rel: &str, data: impl AsRef<[u8]>) -> Res<()> {
        let p = self.source.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(p, data)?;
        Ok(())
    }

    /// The cache of remotes its commands use (`TROVE_CACHE_DIR`), so no
    /// test writes below `$HOME` or shares a cache with another.
    pub fn cache_dir(&self) -> PathBuf {
        self.root().join("cache")
    }

    pub fn cmd(&self) -> Res<Command> {
        let mut c = trove_cmd()?;
        c.current_dir(self.root())
            .env("TROVE_CACHE_DIR", self.cache_dir());
        Ok(c)
    }

    /// Run `trove ARGS…` from the env's root; `log_dir` is where the audit
    /// logs of this run are looked for.
    pub fn run_in(&self, args: &[&OsStr], log_dir: &Path) -> Res<Run> {
        let before = list_logs(log_dir);
        let out = self.cmd()?.args(args).output()?;
        let mut log = String::new();
        for p in list_logs(log_dir).difference(&before) {
            log.push_str(&std::fs::read_to_string(p)?);
        }
        Ok(Run::from_output(&out, log))
    }

    /// `trove backup EXTRA… source backup`.
    pub fn backup(&self, extra: &[&str]) -> Res<Run> {
        let mut args: Vec<&OsStr> = vec![OsStr::new("backup")];
        args.extend(extra.iter().map(OsStr::new));
        args.push(self.source.as_os_str());
        args.push(self.backup.as_os_str());
        self.run_in(&args, &self.log_dir())
    }

    /// `trove backup EXTRA… source backup`, which must exit 0.
    pub fn backup_ok(&self, extra: &[&str]) -> Res<Run> {
        let r = self.backup(extra)?;
        r.expect_code(0);
        Ok(r)
    }

    pub fn log_dir(&self) -> PathBuf {
        self.backup.join(".trove").join("logs")
    }

    /// `trove --repo backup ARGS…` output.
    pub fn repo_cmd(&self, args: &[&str]) -> Res<Output> {
        Ok(self
            .cmd()?
            .arg("--repo")
            .arg(&self.backup)
            .args(args)
            .output()?)
    }

    /// The parsed `trove snapshots --json`.
    pub fn snapshots(&self) -> Res<Vec<serde_json::Value>> {
        let out = self.repo_cmd(&["snapshots", "--json"])?;
        assert!(
            out.status.success(),
            "trove snapshots failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    pub fn snapshot_count(&self) -> Res<usize> {
        Ok(self.snapshots()?.len())
    }

    /// Files under `.trove/objects/`.
    pub fn objects(&self) -> Res<Vec<PathBuf>> {
        let mut out = Vec::new();
        let dir = self.backup.join(".trove").join("objects");
        for fan in std::fs::read_dir(&dir)? {
            let fan = fan?;
            if fan.file_type()?.is_dir() {
                for obj in std::fs::read_dir(fan.path())? {
                    out.push(obj?.path());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The object file sharing an inode with `path`, if any.
    pub fn object_of(&self, path: &Path) -> Res<Option<PathBuf>> {
        let m = std::fs::metadata(path)?;
        for o in self.objects()? {
            let om = std::fs::metadata(&o)?;
            if om.ino() == m.ino() && om.dev() == m.dev() {
                return Ok(Some(o));
            }
        }
        Ok(None)
    }

    /// The browsable tree (without `.trove`).
    pub fn tree(&self) -> Res<BTreeMap<Vec<u8>, Node>> {
        listing(&self.backup, true)
    }
}

/// Log files in `dir` (none when it does not exist).
pub fn list_logs(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension() == Some(OsStr::new("log")))
                .collect()
        })
        .unwrap_or_default()
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(Vec<u8>),
}

/// Every entry below `root` by relative path bytes (`a/b`), with file
/// contents and symlink targets. `skip_trove` leaves out the top `.trove`.
pub fn listing(root: &Path, skip_trove: bool) -> Res<BTreeMap<Vec<u8>, Node>> {
    let mut out = BTreeMap::new();
    walk_below(root, skip_trove, &mut |rel, p, m| {
        let ft = m.file_type();
        let node = if ft.is_dir() {
            Node::Dir
        } else if ft.is_symlink() {
            Node::Symlink(std::fs::read_link(p)?.as_os_str().as_bytes().to_vec())
        } else {
            Node::File(std::fs::read(p)?)
        };
        out.insert(rel.to_vec(), node);
        Ok(())
    })?;
    Ok(out)
}

/// What `walk_below` calls per entry: relative path bytes, path, lstat.
pub type EntryVisitor<'a> = dyn FnMut(&[u8], &Path, &std::fs::Metadata) -> Res<()> + 'a;

/// Call `f` with the relative path bytes (`a/b`), the path and the lstat of
/// every entry below `root`, parents before children, never following a
/// symlink. `skip_trove` leaves out the top `.trove`.
pub fn walk_below(root: &Path, skip_trove: bool, f: &mut EntryVisitor<'_>) -> Res<()> {
    fn rec(dir: &Path, rel: &[u8], skip_trove: bool, f: &mut EntryVisitor<'_>) -> Res<()> {
        for ent in std::fs::read_dir(dir)? {
            let ent = ent?;
            let name = ent.file_name();
            if rel.is_empty() && skip_trove && name == ".trove" {
                continue;
            }
            let mut r = rel.to_vec();
            if !r.is_empty() {
                r.push(b'/');
            }
            r.extend_from_slice(name.as_bytes());
            let p = ent.path();
            let m = std::fs::symlink_metadata(&p)?;
            f(&r, &p, &m)?;
            if m.file_type().is_dir() {
                rec(&p, &r, skip_trove, f)?;
            }
        }
        Ok(())
    }
    rec(root, b"", skip_trove, f)
}

/// A non-cryptographic fingerprint of some bytes (length + SipHash with
/// fixed keys), enough to recognise contents a test wrote itself.
pub fn fingerprint(data: &[u8]) -> (u64, u64) {
    let mut h = std::hash::DefaultHasher::new();
    data.hash(&mut h);
    (data.len() as u64, h.finish())
}

/// Lossy text of a path's bytes, for messages.
pub fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// Deterministic pseudo-random numbers (Knuth's MMIX LCG).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 11
    }

    /// Uniform-ish in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// Run a command with its output in files, failing the test (instead of
/// hanging it) when it has not finished after `limit`.
pub fn run_bounded(mut cmd: std::process::Command, limit: std::time::Duration) -> Res<Output> {
    let dir = tempfile::tempdir()?;
    let out_p = dir.path().join("stdout");
    let err_p = dir.path().join("stderr");
    let mut child = cmd
        .stdout(std::fs::File::create(&out_p)?)
        .stderr(std::fs::File::create(&err_p)?)
        .spawn()?;
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > limit {
            child.kill()?;
            child.wait()?;
            return Err(format!(
                "command did not finish within {limit:?} (hang?): {cmd:?}\n--- stderr\n{}",
                String::from_utf8_lossy(&std::fs::read(&err_p)?)
            )
            .into());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: std::fs::read(&out_p)?,
        stderr: std::fs::read(&err_p)?,
    })
}

/// `s` with every line longer than 240 characters cut in the middle, for
/// failure messages about very long paths.
pub fn abbreviate(s: &str) -> String {
    s.lines()
        .map(|l| {
            let c: Vec<char> = l.chars().collect();
            if c.len() > 240 {
                let head: String = c[..120].iter().collect();
                let tail: String = c[c.len() - 120..].iter().collect();
                format!("{head}…[{} chars]…{tail}\n", c.len() - 240)
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

impl TestEnv {
    /// `trove --repo backup ARGS…` as a [`Run`] (no audit log).
    pub fn repo_run(&self, args: &[&str]) -> Res<Run> {
        Ok(Run::from_output(&self.repo_cmd(args)?, String::new()))
    }

    /// `(id, full_id)` of every snapshot, oldest first.
    pub fn snapshot_ids(&self) -> Res<Vec<(String, String)>> {
        let mut out = Vec::new();
        for s in self.snapshots()? {
            let id = s["id"].as_str().ok_or("snapshot without id")?;
            let full = s["full_id"].as_str().ok_or("snapshot without full_id")?;
            out.push((id.to_string(), full.to_string()));
        }
        Ok(out)
    }

    /// The name (hash) of the object a browsable file is a hardlink of.
    pub fn object_hash_of(&self, rel: &str) -> Res<String> {
        let obj = self
            .object_of(&self.dst(rel))?
            .ok_or_else(|| format!("{rel} is not a hardlink of any object"))?;
        Ok(obj
            .file_name()
            .ok_or("object without a name")?
            .to_string_lossy()
            .into_owned())
    }
}

/// What `stat_listing` records of one entry: enough to see that nothing
/// was created, removed, replaced or written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatRow {
    /// `d`, `f`, `l` or `?`.
    pub kind: char,
    pub ino: u64,
    pub size: u64,
    pub mode: u32,
    pub nlink: u64,
    pub mtime_ns: i128,
}

/// `root` itself (as the empty path) and every entry below it, by relative
/// path bytes, with inode, size, mode, link count and mtime. `skip_trove`
/// leaves out the top `.trove`.
pub fn stat_listing(root: &Path, skip_trove: bool) -> Res<BTreeMap<Vec<u8>, StatRow>> {
    fn row(m: &std::fs::Metadata) -> StatRow {
        let ft = m.file_type();
        StatRow {
            kind: if ft.is_dir() {
                'd'
            } else if ft.is_symlink() {
                'l'
            } else if ft.is_file() {
                'f'
            } else {
                '?'
            },
            ino: m.ino(),
            size: m.len(),
            mode: m.mode(),
            nlink: m.nlink(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        }
    }
    let mut out = BTreeMap::new();
    out.insert(Vec::new(), row(&std::fs::symlink_metadata(root)?));
    walk_below(root, skip_trove, &mut |rel, _, m| {
        out.insert(rel.to_vec(), row(m));
        Ok(())
    })?;
    Ok(out)
}

/// The differences between two `stat_listing`s, one line each, for
/// failure messages (empty when equal).
pub fn stat_differences(
    before: &BTreeMap<Vec<u8>, StatRow>,
    after: &BTreeMap<Vec<u8>, StatRow>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (k, b) in before {
        match after.get(k) {
            None => out.push(format!("removed: {}", show(k))),
            Some(a) if a != b => out.push(format!("changed: {} {b:?} -> {a:?}", show(k))),
            Some(_) => {}
        }
    }
    for k in after.keys().filter(|k| !before.contains_key(*k)) {
        out.push(format!("added: {}", show(k)));
    }
    out
}
