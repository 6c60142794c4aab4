//! Issue 13, defects 3, 5 and 10: retention and watch never lose what they
//! were asked to keep.
//!
//! - `watch` never forgets a change: a failed run's paths (or, for a failed
//!   full scan, the whole source) are looked at again by the next run.
//! - Garbage collection honours every pinned snapshot: removing a keep
//!   policy does not let the next backup's collection delete what the old
//!   policy pinned (`verify` stays clean, every snapshot still restores).
//! - No arithmetic surprises: every numeric setting is bounds-checked when
//!   the config is read (exit 2 naming the key and the allowed range), and
//!   the largest accepted values behave (the largest `deleted_max_age_days`
//!   keeps `_deleted/`).

use crate::common::{trove_bin, Res, Run, TestEnv, TestResult};
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Helpers

/// Write `ROOT/config.json` naming `./source` and `./backup`, with these
/// extra top-level keys.
fn write_config(env: &TestEnv, extra: Value) -> TestResult {
    let mut cfg = json!({"sources": ["./source"], "backup_root": "./backup"});
    if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    std::fs::write(
        env.root().join("config.json"),
        serde_json::to_vec_pretty(&cfg)?,
    )?;
    Ok(())
}

/// `trove ARGS…` from the env's root, so `./config.json` applies.
fn trove(env: &TestEnv, args: &[&str]) -> Res<Run> {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    env.run_in(&args, &env.log_dir())
}

/// Restore snapshot `snap` (any id form, or `latest`) into a fresh folder
/// below the env's root; returns the folder.
fn restore_to(env: &TestEnv, snap: &str, name: &str) -> Res<PathBuf> {
    let target = env.root().join(name);
    let r = env.repo_run(&[
        "restore",
        "--snapshot",
        snap,
        "--target",
        &target.to_string_lossy(),
    ])?;
    r.expect_code(0);
    Ok(target)
}

fn read(p: &Path) -> Res<String> {
    std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()).into())
}

// ---------------------------------------------------------------------------
// Defect 5: GC honours everything that is pinned

/// With `keep_last: 3` every snapshot is pinned (`.trove/pinned`); once the
/// rule is removed from the config, the next backup's own collection (per
/// file retention dropping `f.txt`'s older version) must not delete
/// content those pinned snapshots still reference.
#[test]
fn gc_honours_everything_that_is_pinned() -> TestResult {
    let env = TestEnv::new()?;
    write_config(
        &env,
        json!({"retention": {"keep_last": 3, "max_versions_per_file": 1}}),
    )?;
    for v in 1..=3 {
        env.write("f.txt", format!("f v{v}"))?;
        trove(&env, &["backup"])?.expect_code(0);
    }
    let pinned = std::fs::read_to_string(env.backup.join(".trove/pinned"))?;
    assert_eq!(pinned.lines().count(), 3, "pinned: {pinned}");
    // The keep rule goes; per-file retention stays.
    write_config(&env, json!({"retention": {"max_versions_per_file": 1}}))?;
    env.write("f.txt", "f v4")?;
    trove(&env, &["backup"])?.expect_code(0);

    let v = env.repo_run(&["verify"])?;
    assert_eq!(
        v.code,
        Some(0),
        "verify after the backup without the keep rule:\n{}",
        v.console()
    );
    let ids = env.snapshot_ids()?;
    assert_eq!(ids.len(), 4, "{ids:?}");
    for (i, (id, _)) in ids.iter().enumerate() {
        let t = restore_to(&env, id, &format!("restored-{i}"))?;
        assert_eq!(
            read(&t.join("f.txt"))?,
            format!("f v{}", i + 1),
            "snapshot {id}"
        );
    }

    // `prune` with the current settings (no keep rule) is the explicit
    // step that releases the old pins: it rewrites `pinned` before it
    // deletes, so verify stays clean and the latest still restores.
    trove(&env, &["prune"])?.expect_code(0);
    assert!(!env.backup.join(".trove/pinned").exists());
    let v = env.repo_run(&["verify"])?;
    assert_eq!(v.code, Some(0), "verify after prune:\n{}", v.console());
    let t = restore_to(&env, "latest", "restored-latest")?;
    assert_eq!(read(&t.join("f.txt"))?, "f v4");
    Ok(())
}

/// The backup's collection reads `pinned`; a `pinned` it cannot read stops
/// the collection, deleting nothing (every snapshot still restores).
#[test]
fn an_unreadable_pinned_list_stops_the_backups_collection() -> TestResult {
    let env = TestEnv::new()?;
    write_config(
        &env,
        json!({"retention": {"keep_last": 3, "max_versions_per_file": 1}}),
    )?;
    for v in 1..=3 {
        env.write("f.txt", format!("f v{v}"))?;
        trove(&env, &["backup"])?.expect_code(0);
    }
    write_config(&env, json!({"retention": {"max_versions_per_file": 1}}))?;
    // `pinned` replaced by a folder: its content cannot be known.
    let pinned = env.backup.join(".trove/pinned");
    std::fs::remove_file(&pinned)?;
    std::fs::create_dir(&pinned)?;
    env.write("f.txt", "f v4")?;
    let r = trove(&env, &["backup"])?;
    // The snapshot is taken; the skipped collection is a problem (exit 1)
    // naming the list and what to do.
    assert_eq!(r.code, Some(1), "{}", r.console());
    assert!(
        r.console().contains(".trove/pinned") && r.console().contains("trove verify"),
        "the run names the pinned list and what to do:\n{}",
        r.console()
    );
    assert_eq!(env.snapshot_ids()?.len(), 4);
    std::fs::remove_dir(&pinned)?;
    // Nothing was collected: every snapshot still restores.
    for (i, (id, _)) in env.snapshot_ids()?.iter().enumerate() {
        let t = restore_to(&env, id, &format!("restored-{i}"))?;
        assert_eq!(read(&t.join("f.txt"))?, format!("f v{}", i + 1));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Defect 10: no arithmetic surprises in retention

/// One numeric setting, one value, and whether the config accepts it.
struct Case {
    /// `retention.x` or `watch.x`.
    key: &'static str,
    /// The JSON text of the value.
    value: &'static str,
    ok: bool,
}

const fn case(key: &'static str, value: &'static str, ok: bool) -> Case {
    Case { key, value, ok }
}

/// 0, 1, the maximum, the maximum + 1, huge and negative for every numeric
/// retention and watch key.
const CASES: &[Case] = &[
    case("retention.max_versions_per_file", "0", false),
    case("retention.max_versions_per_file", "1", true),
    case("retention.max_versions_per_file", "4294967295", true),
    case("retention.max_versions_per_file", "4294967296", false),
    case(
        "retention.max_versions_per_file",
        "18446744073709551615",
        false,
    ),
    case("retention.max_versions_per_file", "1e30", false),
    case("retention.max_versions_per_file", "-1", false),
    case("retention.deleted_max_age_days", "0", true),
    case("retention.deleted_max_age_days", "1", true),
    case("retention.deleted_max_age_days", "36500", true),
    case("retention.deleted_max_age_days", "36501", false),
    case("retention.deleted_max_age_days", "1000000", false),
    case(
        "retention.deleted_max_age_days",
        "18446744073709551615",
        false,
    ),
    case("retention.deleted_max_age_days", "-1", false),
    case("retention.keep_last", "0", false),
    case("retention.keep_last", "1", true),
    case("retention.keep_last", "4294967295", true),
    case("retention.keep_last", "4294967296", false),
    case("retention.keep_last", "-1", false),
    case("retention.keep_hourly", "0", false),
    case("retention.keep_hourly", "4294967295", true),
    case("retention.keep_hourly", "4294967296", false),
    case("retention.keep_daily", "0", false),
    case("retention.keep_daily", "4294967295", true),
    case("retention.keep_daily", "-1", false),
    case("retention.keep_weekly", "0", false),
    case("retention.keep_weekly", "4294967295", true),
    case("retention.keep_weekly", "18446744073709551615", false),
    case("retention.keep_monthly", "0", false),
    case("retention.keep_monthly", "4294967295", true),
    case("retention.keep_yearly", "0", false),
    case("retention.keep_yearly", "1", true),
    case("retention.keep_yearly", "4294967295", true),
    case("retention.keep_within_days", "0", false),
    case("retention.keep_within_days", "1", true),
    case("retention.keep_within_days", "36500", true),
    case("retention.keep_within_days", "36501", false),
    case("retention.keep_within_days", "4294967295", false),
    case("retention.keep_within_days", "-1", false),
    case("watch.debounce_ms", "0", false),
    case("watch.debounce_ms", "1", true),
    case("watch.debounce_ms", "3600000", true),
    case("watch.debounce_ms", "3600001", false),
    case("watch.debounce_ms", "18446744073709551615", false),
    case("watch.debounce_ms", "-1", false),
    case("watch.full_scan_interval", "0", false),
    case("watch.full_scan_interval", "1", true),
    case("watch.full_scan_interval", "31536000", true),
    case("watch.full_scan_interval", "31536001", false),
    case("watch.full_scan_interval", "18446744073709551615", false),
    case("watch.full_scan_interval", "-1", false),
];

/// The config with `key` (`section.name`) set to the JSON `value`.
fn config_with(key: &str, value: &str) -> Res<Value> {
    let (section, name) = key.split_once('.').ok_or("key without a section")?;
    // Parsed by serde_json the way trove parses it (a huge number stays
    // a number; `1e30` a float).
    let v: Value = serde_json::from_str(value)?;
    Ok(json!({ section: { name: v } }))
}

/// Every value in the table: accepted ones back up twice (a file deleted
/// in between) with exit 0; rejected ones exit 2 before touching anything,
/// naming the key and the allowed range.
#[test]
fn no_arithmetic_surprises_in_retention_extreme_values_table() -> TestResult {
    let mut failures = Vec::new();
    for c in CASES {
        let env = TestEnv::new()?;
        env.write("keep.txt", "keep")?;
        env.write("gone.txt", "gone")?;
        write_config(&env, config_with(c.key, c.value)?)?;
        let r1 = trove(&env, &["backup"])?;
        let what = format!("{} = {}", c.key, c.value);
        if c.ok {
            std::fs::remove_file(env.src("gone.txt"))?;
            let r2 = trove(&env, &["backup"])?;
            if r1.code != Some(0) || r2.code != Some(0) {
                failures.push(format!(
                    "{what}: expected exit 0, got {:?}/{:?}\n{}{}",
                    r1.code,
                    r2.code,
                    r1.console(),
                    r2.console()
                ));
            }
        } else {
            let name = c.key;
            let text = r1.console();
            if r1.code != Some(2) || !text.contains(name) || !text.contains("allowed") {
                failures.push(format!(
                    "{what}: expected exit 2 naming `{name}` and the allowed range, got {:?}:\n{text}",
                    r1.code
                ));
            }
            if env.backup.exists() {
                failures.push(format!("{what}: the refused run created the backup root"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// The largest accepted `deleted_max_age_days` (100 years) keeps the
/// deleted file: it is in `_deleted/` after the run that records the
/// deletion, and after a prune (the bug: the backup path overflowed and
/// emptied `_deleted/` in that same run).
#[test]
fn no_arithmetic_surprises_in_retention_longest_deleted_age_keeps_deleted_files() -> TestResult {
    let env = TestEnv::new()?;
    write_config(&env, json!({"retention": {"deleted_max_age_days": 36500}}))?;
    env.write("keep.txt", "keep")?;
    env.write("gone.txt", "gone for now")?;
    trove(&env, &["backup"])?.expect_code(0);
    std::fs::remove_file(env.src("gone.txt"))?;
    trove(&env, &["backup"])?.expect_code(0);
    assert_eq!(read(&env.dst("_deleted/gone.txt"))?, "gone for now");
    trove(&env, &["prune"])?.expect_code(0);
    assert_eq!(read(&env.dst("_deleted/gone.txt"))?, "gone for now");
    let v = env.repo_run(&["verify"])?;
    assert_eq!(v.code, Some(0), "{}", v.console());
    Ok(())
}

/// The `prune` and `watch` flags obey the same bounds as the config keys.
#[test]
fn no_arithmetic_surprises_in_retention_flags_are_bounded_too() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", "a")?;
    env.backup_ok(&[])?;
    for (args, key) in [
        (&["prune", "--keep-last", "0"][..], "--keep-last"),
        (
            &["prune", "--keep-within-days", "36501"][..],
            "--keep-within-days",
        ),
    ] {
        let r = env.repo_run(args)?;
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.console());
        assert!(
            r.console().contains(key) && r.console().contains("allowed"),
            "{args:?}: {}",
            r.console()
        );
    }
    for (flag, value) in [
        ("--debounce", "0"),
        ("--debounce", "3600001"),
        ("--full-scan-interval", "31536001"),
        ("--poll", "0"),
        ("--poll", "1e300"),
        ("--poll", "NaN"),
    ] {
        let out = std::process::Command::new(trove_bin())
            .current_dir(env.root())
            .args(["watch", flag, value])
            .arg(&env.source)
            .arg(&env.backup)
            .stdin(Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {text}");
        assert!(
            text.contains(flag) && text.contains("allowed"),
            "{flag} {value}: {text}"
        );
    }
    Ok(())
}

/// A source file dated in the year 3000 (past what an i64 of ns holds)
/// is backed up and restored with its bytes, instead of overflowing the
/// stat arithmetic (a panic in a debug build).
#[test]
fn no_arithmetic_surprises_a_file_dated_past_2262_backs_up() -> TestResult {
    let env = TestEnv::new()?;
    env.write("future.txt", "from the future")?;
    let f = std::fs::File::options()
        .write(true)
        .open(env.src("future.txt"))?;
    f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(32_503_680_000))?;
    drop(f);
    env.backup_ok(&[])?;
    env.backup_ok(&[])?;
    let t = restore_to(&env, "latest", "restored")?;
    assert_eq!(read(&t.join("future.txt"))?, "from the future");
    assert_eq!(read(&env.dst("future.txt"))?, "from the future");
    Ok(())
}

// ---------------------------------------------------------------------------
// Defect 3: watch never forgets a change

/// A `trove watch --json` session whose run lines may report failed runs.
struct Session {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<Value>,
    stderr: PathBuf,
}

const WAIT: Duration = Duration::from_secs(60);

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Session {
    fn start(env: &TestEnv) -> Res<Session> {
        let stderr = env.root().join("watch-stderr.txt");
        let mut child = std::process::Command::new(trove_bin())
            .current_dir(env.root())
            .env_remove("TROVE_REPO")
            .env_remove("TROVE_WATCH_FORCE_RESCAN")
            .args(["watch", "--json", "--debounce", "200"])
            .arg(&env.source)
            .arg(&env.backup)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()?;
        let out = child.stdout.take().ok_or("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Session {
            child,
            lines: rx,
            seen: Vec::new(),
            stderr,
        })
    }

    fn context(&self) -> String {
        let mut s = String::from("--- run lines\n");
        for l in &self.seen {
            s.push_str(&format!("{l}\n"));
        }
        s.push_str("--- stderr\n");
        s.push_str(&std::fs::read_to_string(&self.stderr).unwrap_or_default());
        s
    }

    /// Wait for the next run line satisfying `pred` (earlier ones are
    /// kept for the failure message).
    fn next(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Res<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let v: Value = serde_json::from_str(&line)
                        .map_err(|e| format!("non-JSON line ({e}): {line}"))?;
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return Ok(v);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(
                        format!("no run showed {what} within {WAIT:?}\n{}", self.context()).into(),
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("trove watch ended\n{}", self.context()).into())
                }
            }
        }
    }

    fn stop(&mut self) -> Res<ExitStatus> {
        let st = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        assert!(st.success(), "kill -TERM failed");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err(format!("watch did not stop\n{}", self.context()).into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn failed(v: &Value) -> bool {
    !v["error"].is_null()
}

fn succeeded_with_changes(v: &Value) -> bool {
    v["error"].is_null() && v["report"]["changed"] == true
}

/// Make every run fail (the repository's `tmp/` replaced by a file), or
/// undo it.
fn break_tmp(env: &TestEnv, broken: bool) -> TestResult {
    let tmp = env.backup.join(".trove").join("tmp");
    if broken {
        std::fs::remove_dir_all(&tmp)?;
        std::fs::write(&tmp, "not a folder")?;
    } else {
        std::fs::remove_file(&tmp)?;
        std::fs::create_dir(&tmp)?;
    }
    Ok(())
}

/// Wait until a source file's ctime is out of the stat cache's racy
/// window (2 s): the cache then vouches for it, as for any file not
/// touched lately. (A fresh file is re-read by every run, which would
/// hide a run that forgets to look at it.)
fn out_of_racy_window(env: &TestEnv, rel: &str) -> TestResult {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(env.src(rel))?;
    let changed = std::time::UNIX_EPOCH + Duration::new(m.ctime() as u64, m.ctime_nsec() as u32);
    let until = changed + Duration::from_millis(2500);
    if let Ok(left) = until.duration_since(std::time::SystemTime::now()) {
        std::thread::sleep(left);
    }
    Ok(())
}

/// A run that fails keeps the paths it was to look at: the change it
/// missed is in the next run's snapshot, although that run was started by
/// an unrelated change.
#[test]
fn watch_never_forgets_a_change_after_a_failed_run() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", "a v1")?;
    env.write("b.txt", "b v1")?;
    out_of_racy_window(&env, "a.txt")?;
    out_of_racy_window(&env, "b.txt")?;
    let mut w = Session::start(&env)?;
    w.next("the initial run", succeeded_with_changes)?;
    break_tmp(&env, true)?;
    env.write("a.txt", "a v2")?;
    let f = w.next("a failed run", failed)?;
    assert!(
        f["error"].as_str().unwrap_or("").contains("tmp"),
        "the error names the path: {f}"
    );
    break_tmp(&env, false)?;
    env.write("b.txt", "b v2")?;
    w.next("a run with changes", succeeded_with_changes)?;
    let status = w.stop()?;
    assert_eq!(status.code(), Some(0), "{}", w.context());
    let t = restore_to(&env, "latest", "restored")?;
    assert_eq!(read(&t.join("b.txt"))?, "b v2", "{}", w.context());
    assert_eq!(
        read(&t.join("a.txt"))?,
        "a v2",
        "the change the failed run missed is lost\n{}",
        w.context()
    );
    assert_eq!(read(&env.dst("a.txt"))?, "a v2");
    let v = env.repo_run(&["verify"])?;
    assert_eq!(v.code, Some(0), "{}", v.console());
    Ok(())
}

/// A failed initial run (a full scan) makes the next run a full scan: a
/// change made while watch was not running is still found.
#[test]
fn watch_never_forgets_a_change_after_a_failed_initial_run() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", "a v1")?;
    env.write("b.txt", "b v1")?;
    out_of_racy_window(&env, "a.txt")?;
    out_of_racy_window(&env, "b.txt")?;
    env.backup_ok(&[])?;
    env.write("a.txt", "a v2")?;
    break_tmp(&env, true)?;
    let mut w = Session::start(&env)?;
    w.next("the failed initial run", failed)?;
    break_tmp(&env, false)?;
    env.write("b.txt", "b v2")?;
    let r = w.next("a run with changes", succeeded_with_changes)?;
    assert_eq!(r["kind"], "full", "{}", w.context());
    let status = w.stop()?;
    assert_eq!(status.code(), Some(0), "{}", w.context());
    let t = restore_to(&env, "latest", "restored")?;
    assert_eq!(read(&t.join("a.txt"))?, "a v2", "{}", w.context());
    assert_eq!(read(&t.join("b.txt"))?, "b v2", "{}", w.context());
    Ok(())
}
