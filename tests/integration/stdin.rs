//! `trove backup --stdin` and `--stdin-from-command` (issue 18, item 5):
//! a stream stored as one file of a new snapshot (the latest one with that
//! file added or replaced), shown in the browsable tree and `versions/`,
//! kept by ordinary runs, and never recorded when its producer failed.

use crate::common::*;
use serde_json::Value;
use std::ffi::OsStr;

/// `trove backup --stdin [--stdin-filename NAME] EXTRA… BACKUP` with
/// `data` on its standard input; the run's audit log is in `Run::log`.
fn stdin_backup(env: &TestEnv, name: Option<&str>, extra: &[&str], data: &[u8]) -> Res<Run> {
    let before = list_logs(&env.log_dir());
    let mut c = env.cmd()?;
    c.args(["backup", "--stdin"]);
    if let Some(n) = name {
        c.args(["--stdin-filename", n]);
    }
    c.args(extra).arg(&env.backup);
    let out = c.write_stdin(data.to_vec()).output()?;
    let mut log = String::new();
    for p in list_logs(&env.log_dir()).difference(&before) {
        log.push_str(&std::fs::read_to_string(p)?);
    }
    Ok(Run::from_output(&out, log))
}

/// `trove backup --stdin-from-command [--stdin-filename NAME] BACKUP -- CMD…`.
fn command_backup(env: &TestEnv, name: Option<&str>, cmd: &[&str]) -> Res<Run> {
    let mut args: Vec<&OsStr> = vec![OsStr::new("backup"), OsStr::new("--stdin-from-command")];
    if let Some(n) = name {
        args.extend([OsStr::new("--stdin-filename"), OsStr::new(n)]);
    }
    args.push(env.backup.as_os_str());
    args.push(OsStr::new("--"));
    args.extend(cmd.iter().map(OsStr::new));
    env.run_in(&args, &env.log_dir())
}

/// The latest snapshot's `ls --json` entry for `path`.
fn ls_entry(env: &TestEnv, path: &str) -> Res<Option<Value>> {
    let out = env.repo_cmd(&["ls", "--json"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v.as_array()
        .ok_or("ls --json is not an array")?
        .iter()
        .find(|e| e["path"] == path)
        .cloned())
}

fn assert_verify_clean(env: &TestEnv) -> TestResult {
    let r = env.repo_run(&["verify"])?;
    r.expect_code(0);
    assert!(r.stdout.contains("0 problems"), "{}", r.stdout);
    Ok(())
}

/// `trove restore` of the latest snapshot into a fresh `DIR`.
fn restore_all(env: &TestEnv, dir: &str) -> Res<std::path::PathBuf> {
    let target = env.root().join(dir);
    let t = target.to_str().ok_or("non-UTF-8 temp path")?;
    env.repo_run(&["restore", "--target", t])?.expect_code(0);
    Ok(target)
}

/// Give the source files a stat no run can call racily clean (mtime in
/// the past, ctime more than the 2 s window before the next run).
fn settle_source(env: &TestEnv) -> TestResult {
    for (p, n) in listing(&env.source, false)? {
        if matches!(n, Node::File(_)) {
            let f = std::fs::File::options()
                .write(true)
                .open(env.source.join(show(&p)))?;
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000))?;
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(2100));
    Ok(())
}

#[test]
fn a_piped_stream_becomes_one_file_of_a_new_snapshot_at_the_top_of_the_tree() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", "source file\n")?;
    env.backup_ok(&[])?;
    let r = stdin_backup(&env, Some("dumps/db.sql"), &[], b"CREATE TABLE t;\n")?;
    r.expect_code(0);
    assert!(
        r.log.contains("BACKUP: stdin → backup/dumps/db.sql"),
        "{}",
        r.log
    );
    assert_eq!(env.snapshot_count()?, 2);
    let e = ls_entry(&env, "dumps/db.sql")?.ok_or("dumps/db.sql not listed")?;
    assert_eq!(e["type"], "file");
    assert_eq!(e["size"], 16);
    assert_eq!(e["stdin"], true);
    assert_eq!(e["mode"], "-rw-r--r--");
    assert!(e["hash"].as_str().is_some_and(|h| h.len() == 64), "{e}");
    let dir = ls_entry(&env, "dumps")?.ok_or("dumps not listed")?;
    assert_eq!(
        (&dir["type"], &dir["mode"]),
        (&"dir".into(), &"drwxr-xr-x".into())
    );
    // Every other entry is the previous snapshot's.
    assert!(ls_entry(&env, "a.txt")?.is_some());
    // The browsable tree has it at the top, as a link of its object.
    assert_eq!(
        std::fs::read(env.dst("dumps/db.sql"))?,
        b"CREATE TABLE t;\n"
    );
    assert_eq!(
        env.object_hash_of("dumps/db.sql")?,
        e["hash"].as_str().unwrap_or_default()
    );
    // Restore gives the bytes back, beside the source's files.
    let t = restore_all(&env, "restored")?;
    assert_eq!(std::fs::read(t.join("dumps/db.sql"))?, b"CREATE TABLE t;\n");
    assert_eq!(std::fs::read(t.join("a.txt"))?, b"source file\n");
    // The default name, into a repository that has no snapshot yet.
    let fresh = TestEnv::new()?;
    stdin_backup(&fresh, None, &[], b"xyz")?.expect_code(0);
    assert_eq!(std::fs::read(fresh.dst("stdin"))?, b"xyz");
    assert_verify_clean(&fresh)?;
    assert_verify_clean(&env)
}

#[test]
fn a_second_stream_under_the_same_name_archives_the_first_in_versions() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", "a")?;
    env.backup_ok(&[])?;
    stdin_backup(&env, Some("db.sql"), &[], b"first dump")?.expect_code(0);
    let r = stdin_backup(&env, Some("db.sql"), &[], b"second dump")?;
    r.expect_code(0);
    assert!(
        r.log
            .contains("ARCHIVE: backup/db.sql → versions/db.sql/v1.bak"),
        "{}",
        r.log
    );
    assert_eq!(std::fs::read(env.dst("db.sql"))?, b"second dump");
    assert_eq!(
        std::fs::read(env.dst("versions/db.sql/v1.bak"))?,
        b"first dump"
    );
    // snapshots and diff see it like any run.
    let snaps = env.snapshots()?;
    assert_eq!(snaps.len(), 3);
    assert_eq!(snaps[2]["modified"], 1, "{}", snaps[2]);
    let (a, b) = (
        snaps[1]["id"].as_str().ok_or("id")?,
        snaps[2]["id"].as_str().ok_or("id")?,
    );
    let d = env.repo_run(&["diff", a, b])?;
    d.expect_code(0);
    assert!(d.stdout.contains("db.sql"), "{}", d.stdout);
    assert_verify_clean(&env)
}

#[test]
fn a_stream_with_content_stored_elsewhere_is_a_duplicate() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", "same bytes")?;
    env.backup_ok(&[])?;
    let objects = env.objects()?.len();
    stdin_backup(&env, Some("copy.txt"), &[], b"same bytes")?.expect_code(0);
    assert_eq!(env.objects()?.len(), objects, "content stored twice");
    assert_eq!(
        std::fs::read(env.dst("_duplicates/copy.txt"))?,
        b"same bytes"
    );
    assert!(!env.dst("copy.txt").exists());
    assert_verify_clean(&env)
}

#[test]
fn ordinary_backups_keep_the_stream_file_and_still_trust_the_stat_cache() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", "a")?;
    env.write("sub/b.txt", "b")?;
    settle_source(&env)?;
    env.backup_ok(&[])?;
    stdin_backup(&env, Some("dumps/db.sql"), &[], b"dump 1")?.expect_code(0);
    stdin_backup(&env, Some("top.sql"), &[], b"dump 2")?.expect_code(0);
    // Nothing in the source changed: no file is read, nothing is deleted,
    // no snapshot is written.
    let r = env.backup_ok(&["--json"])?;
    let v: Value = serde_json::from_str(&r.stdout)?;
    assert_eq!(v["files_read"], 0, "{v}");
    assert_eq!(v["deleted"], 0, "{v}");
    assert_eq!(v["changed"], false, "{v}");
    // A change elsewhere: only that file is read; the stream files stay.
    env.write("new.txt", "n")?;
    let r = env.backup_ok(&["--json"])?;
    let v: Value = serde_json::from_str(&r.stdout)?;
    assert_eq!(v["files_read"], 1, "{v}");
    assert_eq!(v["deleted"], 0, "{v}");
    for p in ["dumps/db.sql", "top.sql"] {
        let e = ls_entry(&env, p)?.ok_or(format!("{p} left the snapshot"))?;
        assert_eq!(e["stdin"], true);
        assert!(env.dst(p).is_file(), "{p} left the browsable tree");
    }
    assert!(!env.dst("_deleted").exists(), "something was deleted");
    assert_verify_clean(&env)
}

#[test]
fn a_source_file_that_takes_the_stream_path_wins_as_a_modification() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", "a")?;
    env.backup_ok(&[])?;
    stdin_backup(&env, Some("dumps/db.sql"), &[], b"from the stream")?.expect_code(0);
    env.write("dumps/db.sql", "from the source")?;
    let r = env.backup_ok(&[])?;
    assert!(r.log.contains("UPDATED: source/dumps/db.sql"), "{}", r.log);
    let e = ls_entry(&env, "dumps/db.sql")?.ok_or("dumps/db.sql missing")?;
    assert_eq!(e["stdin"], Value::Null, "{e}");
    assert_eq!(std::fs::read(env.dst("dumps/db.sql"))?, b"from the source");
    assert_eq!(
        std::fs::read(env.dst("versions/dumps/db.sql/v1.bak"))?,
        b"from the stream"
    );
    // Gone from the source now: an ordinary deletion.
    std::fs::remove_file(env.src("dumps/db.sql"))?;
    env.backup_ok(&[])?;
    assert!(ls_entry(&env, "dumps/db.sql")?.is_none());
    assert!(env.dst("_deleted/dumps/db.sql").is_file());
    assert_verify_clean(&env)
}

#[test]
fn a_command_that_exits_non_zero_records_no_snapshot() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", "a")?;
    env.backup_ok(&[])?;
    let r = command_backup(
        &env,
        Some("db.sql"),
        &[
            "sh",
            "-c",
            "echo partial; echo producer-says-no >&2; exit 3",
        ],
    )?;
    r.expect_code(1);
    assert!(r.stderr.contains("exited with status 3"), "{}", r.stderr);
    assert!(r.stderr.contains("no snapshot written"), "{}", r.stderr);
    // The command's own stderr passes through.
    assert!(r.stderr.contains("producer-says-no"), "{}", r.stderr);
    assert_eq!(env.snapshot_count()?, 1);
    assert!(!env.dst("db.sql").exists());
    // Its output was not kept either.
    let tmp = env.dst(".trove/tmp");
    assert_eq!(std::fs::read_dir(&tmp).map_or(0, |d| d.count()), 0);
    // A succeeding command is stored like a stream.
    let r = command_backup(&env, Some("db.sql"), &["sh", "-c", "printf 'all of it'"])?;
    r.expect_code(0);
    assert!(
        r.log
            .contains("BACKUP: `sh -c 'printf '\\''all of it'\\'''` → backup/db.sql"),
        "{}",
        r.log
    );
    assert_eq!(std::fs::read(env.dst("db.sql"))?, b"all of it");
    assert_eq!(env.snapshot_count()?, 2);
    assert_verify_clean(&env)
}

#[test]
fn a_command_killed_by_a_signal_records_no_snapshot() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", "a")?;
    env.backup_ok(&[])?;
    let r = command_backup(&env, None, &["sh", "-c", "echo some; kill -9 $$"])?;
    r.expect_code(1);
    assert!(
        r.stderr.contains("was killed by signal 9 (SIGKILL)"),
        "{}",
        r.stderr
    );
    assert_eq!(env.snapshot_count()?, 1);
    // A command that cannot start is named too.
    let r = command_backup(&env, None, &["/nonexistent/pg_dump"])?;
    r.expect_code(1);
    assert!(r.stderr.contains("/nonexistent/pg_dump"), "{}", r.stderr);
    assert_eq!(env.snapshot_count()?, 1);
    assert_verify_clean(&env)
}

#[test]
fn names_outside_the_snapshot_and_misused_flags_are_usage_errors() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", "a")?;
    env.backup_ok(&[])?;
    for bad in ["../x", "/etc/passwd", "", "a/../b", "a//b", "./a"] {
        let r = stdin_backup(&env, Some(bad), &[], b"data")?;
        r.expect_code(2);
        assert!(
            r.stderr.contains("--stdin-filename"),
            "{bad:?}: {}",
            r.stderr
        );
    }
    // A source with --stdin, a command without --stdin-from-command, and
    // --stdin-filename alone are refused before anything is read.
    let src = env.source.to_str().ok_or("path")?;
    stdin_backup(&env, None, &[src], b"data")?.expect_code(2);
    let mut c = env.cmd()?;
    let out = c
        .args(["backup", "--stdin-filename", "x"])
        .arg(&env.source)
        .arg(&env.backup)
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    let mut c = env.cmd()?;
    let out = c
        .args(["backup", "--stdin-from-command"])
        .arg(&env.backup)
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    let mut c = env.cmd()?;
    let out = c
        .args(["backup", "--stdin"])
        .arg(&env.backup)
        .args(["--", "echo", "hi"])
        .write_stdin(b"data".to_vec())
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--stdin-from-command"), "{err}");
    // A name the latest snapshot has as a folder.
    env.write("dir/f", "f")?;
    env.backup_ok(&[])?;
    stdin_backup(&env, Some("dir"), &[], b"data")?.expect_code(2);
    stdin_backup(&env, Some("a.txt/x"), &[], b"data")?.expect_code(2);
    assert_eq!(env.snapshot_count()?, 2);
    Ok(())
}

#[test]
fn an_empty_stream_is_refused() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", "a")?;
    env.backup_ok(&[])?;
    let r = stdin_backup(&env, Some("db.sql"), &[], b"")?;
    r.expect_code(1);
    assert!(
        r.stderr.contains("nothing arrived on stdin"),
        "{}",
        r.stderr
    );
    let r = command_backup(&env, Some("db.sql"), &["true"])?;
    r.expect_code(1);
    assert!(r.stderr.contains("nothing arrived on"), "{}", r.stderr);
    assert_eq!(env.snapshot_count()?, 1);
    assert_verify_clean(&env)
}

#[test]
fn a_20_mib_stream_is_stored_and_restored_equal() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", "a")?;
    env.backup_ok(&[])?;
    let input = env.root().join("big.bin");
    let data = Lcg(7).bytes(20 << 20);
    std::fs::write(&input, &data)?;
    let input = input.to_str().ok_or("path")?;
    let r = command_backup(&env, Some("big.bin"), &["head", "-c", "20971520", input])?;
    r.expect_code(0);
    let e = ls_entry(&env, "big.bin")?.ok_or("big.bin not listed")?;
    assert_eq!(e["size"], 20 << 20);
    let t = restore_all(&env, "restored")?;
    assert!(
        std::fs::read(t.join("big.bin"))? == data,
        "restored bytes differ"
    );
    assert_eq!(
        std::fs::metadata(env.dst("big.bin"))?.len(),
        20 << 20,
        "browsable copy"
    );
    assert_verify_clean(&env)
}

#[test]
fn a_64_mib_stream_is_never_held_in_memory() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", "a")?;
    env.backup_ok(&[])?;
    // TROVE_MEMPROBE makes the run print its peak resident memory (VmHWM)
    // after each phase; holding the stream would put it above 64 MiB.
    let out = env
        .cmd()?
        .env("TROVE_MEMPROBE", "1")
        .args([
            "backup",
            "--stdin-from-command",
            "--stdin-filename",
            "big.bin",
        ])
        .arg(&env.backup)
        .args(["--", "head", "-c", "67108864", "/dev/urandom"])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let peak = err
        .lines()
        .filter(|l| {
            l.starts_with("trove mem: stream stored") || l.starts_with("trove mem: recorded")
        })
        .filter_map(|l| l.split("peak").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .max()
        .ok_or(format!("no memory probe lines: {err}"))?;
    assert!(peak < 56, "peak {peak} MiB for a 64 MiB stream:\n{err}");
    let e = ls_entry(&env, "big.bin")?.ok_or("big.bin not listed")?;
    assert_eq!(e["size"], 64 << 20);
    assert_verify_clean(&env)
}
