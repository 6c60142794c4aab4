//! The damage matrix (issue 13): each kind of repository file × each kind
//! of damage × each command. Whatever the damage, a command must finish
//! (no hang), never panic, exit with a documented code, name what it
//! found when it does not exit 0, write nothing outside the backup root
//! and its own target, and destroy no good copy of anything backed up.
//! Read-only commands must leave the repository exactly as they found it;
//! `verify` must see every damage that matters; `restore` may succeed
//! only with the right bytes.
//!
//! Exit codes (SPEC §5), as this table holds them:
//! - `verify`, `verify --quick`: 1 when the damage matters (objects,
//!   trees, snapshot records, the repository config; `--quick` does not
//!   read contents, so a flipped or truncated object may pass it), 0 or 1
//!   for disposable or derived files (stat cache, marker, `pinned`).
//! - every other command: 0 (it did its work around the damage, or
//!   repaired it) or 1 (it found damage and says so). Never 2 (that is a
//!   usage error), never 101 (a panic), never death by a signal.
//!
//! The template repository is built once; each (file, damage) pair gets
//! one fresh copy for the read-only commands and one per writer.

use crate::common::{
    fingerprint, listing, stat_differences, stat_listing, trove_bin, walk_below, Node, Res,
    TestResult,
};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A hang guard per command, never a timing assertion.
const LIMIT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Object,
    Tree,
    Snapshot,
    Config,
    StatCache,
    Pinned,
    Marker,
}

const KINDS: &[Kind] = &[
    Kind::Object,
    Kind::Tree,
    Kind::Snapshot,
    Kind::Config,
    Kind::StatCache,
    Kind::Pinned,
    Kind::Marker,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Damage {
    FlipByte,
    Truncate,
    Delete,
    /// A symlink to a copy of the original bytes outside the root: a
    /// command that follows it reads (or writes) outside.
    Symlink,
    Fifo,
    Directory,
}

const DAMAGES: &[Damage] = &[
    Damage::FlipByte,
    Damage::Truncate,
    Damage::Delete,
    Damage::Symlink,
    Damage::Fifo,
    Damage::Directory,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Verify,
    VerifyQuick,
    Restore,
    Ls,
    Backup,
    Materialize,
    Prune,
}

const READERS: &[Cmd] = &[Cmd::Verify, Cmd::VerifyQuick, Cmd::Restore, Cmd::Ls];
const WRITERS: &[Cmd] = &[Cmd::Backup, Cmd::Materialize, Cmd::Prune];

fn put(root: &Path, rel: &str, data: &[u8]) -> Res<()> {
    let p = root.join(rel);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(p, data)?;
    Ok(())
}

fn trove(dir: &Path, args: &[&str]) -> Res<Output> {
    let mut c = Command::new(trove_bin());
    c.current_dir(dir)
        .env_remove("TROVE_REPO")
        .args(args)
        .stdin(std::process::Stdio::null());
    crate::common::run_bounded(c, LIMIT)
}

/// The template: two generations of a small source backed up with a keep
/// policy (so `pinned` exists), and an outside folder a symlink can point
/// into.
fn template() -> Res<(tempfile::TempDir, BTreeMap<Vec<u8>, Node>)> {
    let t = tempfile::tempdir()?;
    let d = t.path();
    put(d, "source/a.txt", b"alpha generation one\n")?;
    put(d, "source/sub/b.txt", b"bravo, never changes\n")?;
    put(d, "source/sub/c.txt", b"charlie\n")?;
    put(d, "source/dup1", b"same\n")?;
    put(d, "source/dup2", b"same\n")?;
    put(d, "source/gone.txt", b"deleted in generation two\n")?;
    std::fs::write(
        d.join("config.json"),
        r#"{ "sources": ["./source"], "backup_root": "./backup",
             "retention": { "keep_last": 5 } }"#,
    )?;
    let ok = |o: Output, what: &str| -> Res<()> {
        if !o.status.success() {
            return Err(format!("{what}: {}", String::from_utf8_lossy(&o.stderr)).into());
        }
        Ok(())
    };
    ok(trove(d, &["backup"])?, "first backup")?;
    let first = listing(&d.join("source"), false)?;
    put(d, "source/a.txt", b"alpha generation two\n")?;
    std::fs::remove_file(d.join("source/gone.txt"))?;
    ok(trove(d, &["backup"])?, "second backup")?;
    for f in ["pinned", "cache/materialized", "config"] {
        if !d.join("backup/.trove").join(f).exists() {
            return Err(format!("the template has no .trove/{f}").into());
        }
    }
    std::fs::create_dir(d.join("outside"))?;
    put(d, "outside/keep.txt", b"not trove's\n")?;
    Ok((t, first))
}

fn fresh_copy(template: &Path) -> Res<tempfile::TempDir> {
    let d = tempfile::tempdir()?;
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", template.display()))
        .arg(d.path())
        .status()?;
    if !st.success() {
        return Err("cp -a of the template failed".into());
    }
    Ok(d)
}

/// Regular files below `dir`, sorted.
fn files_below(dir: &Path) -> Res<Vec<PathBuf>> {
    let mut out = Vec::new();
    walk_below(dir, false, &mut |_, p, m| {
        if m.file_type().is_file() {
            out.push(p.to_path_buf());
        }
        Ok(())
    })?;
    out.sort();
    Ok(out)
}

/// The file of `kind` to damage in the copy `d`.
fn target_of(kind: Kind, d: &Path) -> Res<PathBuf> {
    let trove_dir = d.join("backup/.trove");
    Ok(match kind {
        // The object holding `sub/b.txt`, which every snapshot shares.
        Kind::Object => {
            let want = std::fs::read(d.join("source/sub/b.txt"))?;
            files_below(&trove_dir.join("objects"))?
                .into_iter()
                .find(|p| std::fs::read(p).is_ok_and(|b| b == want))
                .ok_or("no object holds sub/b.txt")?
        }
        // The newest tree pack: it holds the latest snapshot's root.
        Kind::Tree => {
            let mut trees = Vec::new();
            for p in files_below(&trove_dir.join("packs"))? {
                let m = std::fs::metadata(&p)?;
                trees.push((m.modified()?, p));
            }
            trees.sort();
            trees.pop().ok_or("no tree files")?.1
        }
        Kind::Snapshot => {
            let mut recs = Vec::new();
            for p in files_below(&trove_dir.join("snapshots"))? {
                let m = std::fs::metadata(&p)?;
                recs.push((m.modified()?, p));
            }
            recs.sort();
            recs.pop().ok_or("no snapshot records")?.1
        }
        Kind::Config => trove_dir.join("config"),
        Kind::StatCache => files_below(&trove_dir.join("cache"))?
            .into_iter()
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("stat"))
            })
            .ok_or("no stat cache")?,
        Kind::Pinned => trove_dir.join("pinned"),
        Kind::Marker => trove_dir.join("cache/materialized"),
    })
}

fn writable(p: &Path) -> Res<()> {
    let mut perm = std::fs::metadata(p)?.permissions();
    perm.set_mode(perm.mode() | 0o200);
    std::fs::set_permissions(p, perm)?;
    Ok(())
}

/// Damage `target` in place. A symlink points at a copy of the original
/// bytes under `outside/`.
fn damage(target: &Path, how: Damage, outside: &Path) -> Res<()> {
    let data = std::fs::read(target)?;
    match how {
        Damage::FlipByte => {
            let mut data = data;
            let mid = data.len() / 2;
            match data.get_mut(mid) {
                Some(b) => *b ^= 0x20,
                None => data.push(b'!'),
            }
            writable(target)?;
            // Through the same inode, so hardlinks see it too.
            std::fs::OpenOptions::new()
                .write(true)
                .open(target)
                .and_then(|mut f| std::io::Write::write_all(&mut f, &data))?;
        }
        Damage::Truncate => {
            writable(target)?;
            std::fs::OpenOptions::new()
                .write(true)
                .open(target)?
                .set_len(data.len() as u64 / 2)?;
        }
        Damage::Delete => std::fs::remove_file(target)?,
        Damage::Symlink => {
            let copy = outside.join("lure");
            std::fs::write(&copy, &data)?;
            std::fs::remove_file(target)?;
            std::os::unix::fs::symlink(&copy, target)?;
        }
        Damage::Fifo => {
            std::fs::remove_file(target)?;
            let st = Command::new("mkfifo").arg(target).status()?;
            if !st.success() {
                return Err("mkfifo failed".into());
            }
        }
        Damage::Directory => {
            std::fs::remove_file(target)?;
            std::fs::create_dir(target)?;
        }
    }
    Ok(())
}

fn args_of(cmd: Cmd, restore_target: &Path) -> Vec<String> {
    let repo = |rest: &[&str]| -> Vec<String> {
        let mut v = vec!["--repo".to_string(), "backup".to_string()];
        v.extend(rest.iter().map(|s| s.to_string()));
        v
    };
    match cmd {
        Cmd::Verify => repo(&["verify"]),
        Cmd::VerifyQuick => repo(&["verify", "--quick"]),
        Cmd::Restore => {
            let mut v = repo(&["restore", "--target"]);
            v.push(restore_target.display().to_string());
            v
        }
        Cmd::Ls => repo(&["ls"]),
        Cmd::Backup => vec!["backup".into()],
        Cmd::Materialize => vec!["materialize".into()],
        Cmd::Prune => vec!["prune".into()],
    }
}

/// Whether `verify` (full or quick) must report this damage.
fn verify_must_see(cmd: Cmd, kind: Kind, how: Damage) -> bool {
    match kind {
        Kind::StatCache | Kind::Marker | Kind::Pinned => false,
        Kind::Object => cmd == Cmd::Verify || !matches!(how, Damage::FlipByte | Damage::Truncate),
        Kind::Tree | Kind::Snapshot | Kind::Config => true,
    }
}

/// Fingerprints of every regular file's bytes below `dir`.
fn contents_below(dir: &Path) -> Res<BTreeSet<(u64, u64)>> {
    let mut out = BTreeSet::new();
    for p in files_below(dir)? {
        if let Ok(b) = std::fs::read(&p) {
            out.insert(fingerprint(&b));
        }
    }
    Ok(out)
}

/// Every file content ever backed up (both generations), by fingerprint.
fn valuable(template: &Path) -> Res<BTreeSet<(u64, u64)>> {
    let mut v = contents_below(&template.join("source"))?;
    v.insert(fingerprint(b"alpha generation one\n"));
    v.insert(fingerprint(b"deleted in generation two\n"));
    Ok(v)
}

/// Paths whose change does not count as "writing": the audit logs.
fn without_logs<V: Clone>(m: &BTreeMap<Vec<u8>, V>) -> BTreeMap<Vec<u8>, V> {
    m.iter()
        .filter(|(k, _)| !k.starts_with(b".trove/logs"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

struct Case<'a> {
    kind: Kind,
    how: Damage,
    valuable: &'a BTreeSet<(u64, u64)>,
    source: &'a BTreeMap<Vec<u8>, Node>,
    /// The first generation: what `latest` is once the newest record is
    /// deleted outright (nothing is left to say it ever existed).
    first: &'a BTreeMap<Vec<u8>, Node>,
}

impl Case<'_> {
    /// Run `cmd` on the damaged copy `d` and return every broken promise.
    fn check(&self, cmd: Cmd, d: &Path) -> Res<Vec<String>> {
        let at = format!("{:?} {:?} / {cmd:?}", self.kind, self.how);
        let mut broken = Vec::new();
        let outside_before = stat_listing(&d.join("outside"), false)?;
        let source_before = stat_listing(&d.join("source"), false)?;
        let repo_before = without_logs(&stat_listing(&d.join("backup"), false)?);
        let kept_before: BTreeSet<_> = contents_below(&d.join("backup"))?
            .intersection(self.valuable)
            .copied()
            .collect();
        let target = d.join("restored");
        let args = args_of(cmd, &target);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = match trove(d, &argv) {
            Ok(o) => o,
            Err(e) => return Ok(vec![format!("{at}: {e}")]),
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let code = out.status.code();
        if let Some(sig) = out.status.signal() {
            broken.push(format!("{at}: killed by signal {sig}"));
        }
        if code == Some(101) || stderr.contains("panicked") {
            broken.push(format!("{at}: panicked: {stderr}"));
        }
        let allowed: &[i32] = match cmd {
            Cmd::Verify | Cmd::VerifyQuick if verify_must_see(cmd, self.kind, self.how) => &[1],
            _ => &[0, 1],
        };
        if code.is_some_and(|c| !allowed.contains(&c)) {
            broken.push(format!(
                "{at}: exit {code:?}, documented {allowed:?}\n  stdout: {}\n  stderr: {}",
                stdout.trim(),
                stderr.trim()
            ));
        }
        let said = format!("{stdout}{stderr}");
        if code.is_some_and(|c| c != 0) && !said.contains(".trove") && !said.contains("backup") {
            broken.push(format!(
                "{at}: exit {code:?} without naming the damaged file or the repository: {}",
                said.trim()
            ));
        }
        let outside = stat_differences(&outside_before, &stat_listing(&d.join("outside"), false)?);
        if !outside.is_empty() {
            broken.push(format!("{at}: wrote outside the root: {outside:?}"));
        }
        let source = stat_differences(&source_before, &stat_listing(&d.join("source"), false)?);
        if !source.is_empty() {
            broken.push(format!("{at}: changed the source: {source:?}"));
        }
        let kept_after = contents_below(&d.join("backup"))?;
        let lost = kept_before.difference(&kept_after).count();
        if lost > 0 {
            broken.push(format!(
                "{at}: destroyed the last good copy of {lost} content(s)"
            ));
        }
        if READERS.contains(&cmd) {
            let after = without_logs(&stat_listing(&d.join("backup"), false)?);
            let diff = stat_differences(&repo_before, &after);
            if !diff.is_empty() {
                broken.push(format!(
                    "{at}: a read-only command changed the repository: {diff:?}"
                ));
            }
        }
        if cmd == Cmd::Restore && code == Some(0) {
            let got = listing(&target, false)?;
            let newest_gone = self.kind == Kind::Snapshot && self.how == Damage::Delete;
            if &got != self.source && !(newest_gone && &got == self.first) {
                broken.push(format!(
                    "{at}: restore exited 0 but the restored files differ from what was backed up"
                ));
            }
        }
        Ok(broken)
    }
}

/// The whole matrix: 7 kinds of file × 6 kinds of damage × 7 commands.
#[test]
fn every_damage_to_every_repository_file_is_survived_and_named_by_every_command() -> TestResult {
    let (t, first) = template()?;
    let valuable = valuable(t.path())?;
    let source = listing(&t.path().join("source"), false)?;
    let mut broken = Vec::new();
    let mut cases = 0;
    for &kind in KINDS {
        for &how in DAMAGES {
            let case = Case {
                kind,
                how,
                valuable: &valuable,
                source: &source,
                first: &first,
            };
            // Read-only commands share one copy: they must not change it.
            let d = fresh_copy(t.path())?;
            damage(&target_of(kind, d.path())?, how, &d.path().join("outside"))?;
            for &cmd in READERS {
                let _ = std::fs::remove_dir_all(d.path().join("restored"));
                broken.extend(case.check(cmd, d.path())?);
                cases += 1;
            }
            for &cmd in WRITERS {
                let d = fresh_copy(t.path())?;
                damage(&target_of(kind, d.path())?, how, &d.path().join("outside"))?;
                broken.extend(case.check(cmd, d.path())?);
                cases += 1;
            }
        }
    }
    eprintln!(
        "damage matrix: {cases} cases, {} broken promises",
        broken.len()
    );
    assert!(
        broken.is_empty(),
        "{} of {cases} cases broke a promise:\n{}",
        broken.len(),
        broken.join("\n")
    );
    Ok(())
}

/// Found by the matrix: with the newest record deleted, `prune` took the
/// older snapshot for the latest, undid the browsable tree and collected
/// the content only the lost snapshot held. The marker still names the
/// lost snapshot, so the loss is seen: every writer refuses, `snapshots`
/// shows it, and `backup --allow-damaged-latest` carries on without
/// losing the browsable copy.
#[test]
fn a_deleted_newest_record_is_seen_through_the_marker_and_nothing_is_undone() -> TestResult {
    let (t, _) = template()?;
    let d = t.path();
    let record = target_of(Kind::Snapshot, d)?;
    std::fs::remove_file(&record)?;
    let name = record
        .file_name()
        .ok_or("record without a name")?
        .to_string_lossy()
        .into_owned();
    let before = contents_below(&d.join("backup"))?;
    for args in [
        &["prune"][..],
        &["backup"],
        &["materialize"],
        &["--repo", "backup", "restore", "--target", "r"],
    ] {
        let out = trove(d, args)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&name) && stderr.contains("missing"),
            "{args:?} names the lost record: {stderr}"
        );
    }
    // Every content still there (the refused runs only added logs).
    assert!(
        before.is_subset(&contents_below(&d.join("backup"))?),
        "nothing was undone or collected"
    );
    let out = trove(d, &["--repo", "backup", "snapshots"])?;
    assert!(String::from_utf8_lossy(&out.stdout).contains("DAMAGED"));
    let out = trove(d, &["backup", "--allow-damaged-latest"])?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(d.join("backup/a.txt"))?,
        b"alpha generation two\n"
    );
    let out = trove(d, &["--repo", "backup", "verify"])?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

/// Found by the matrix: a deleted `.trove/config` made every command say
/// "not a trove repository" (exit 2, a usage error) and `backup` call the
/// root "not empty"; a flipped bit in its id passed `verify`. Both are
/// damage: exit 1, the file named, and no new config over old data.
#[test]
fn a_damaged_repository_config_is_damage_never_a_new_repository() -> TestResult {
    let (t, _) = template()?;
    let d = t.path();
    let cfg = d.join("backup/.trove/config");
    let original = std::fs::read(&cfg)?;
    std::fs::remove_file(&cfg)?;
    for args in [
        &["backup"][..],
        &["--repo", "backup", "verify"],
        &["init", "backup"],
    ] {
        let out = trove(d, args)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(".trove/config") && stderr.contains("damaged"),
            "{args:?}: {stderr}"
        );
        assert!(
            !cfg.exists(),
            "{args:?} wrote a new config over the old repository"
        );
    }
    let text = String::from_utf8(original)?;
    std::fs::write(&cfg, text.replace("\"id\": \"", "\"id\": \"X"))?;
    let out = trove(d, &["--repo", "backup", "verify"])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("id"));
    Ok(())
}
