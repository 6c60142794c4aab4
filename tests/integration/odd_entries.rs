//! SPEC §6: odd entries (special files, symlink trouble, odd names, paths
//! beyond PATH_MAX, permission errors) each get a message naming the path;
//! the run goes on; the exit code says whether something was not backed up.

use crate::common::{
    abbreviate, list_logs, run_bounded, show, trove_bin, Node, Res, Run, TestEnv, TestResult,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

/// A source with one ordinary file next to the odd entry.
fn env_with_ok_file() -> Res<TestEnv> {
    let env = TestEnv::new()?;
    env.write("ok.txt", "ok")?;
    Ok(env)
}

fn assert_ok_file_backed_up(env: &TestEnv, r: &Run) {
    assert_eq!(
        std::fs::read(env.dst("ok.txt")).ok().as_deref(),
        Some(&b"ok"[..]),
        "the ordinary file next to the odd entry is backed up\n--- stdout\n{}\n--- stderr\n{}",
        r.stdout,
        r.stderr
    );
}

/// A warning on the console naming `path`, also in the audit log.
fn assert_warns_about(r: &Run, path: &Path, what: &str) {
    let shown = path.display().to_string();
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains(&shown))
        .unwrap_or_else(|| panic!("no message names {shown}\n--- stderr\n{}", r.stderr));
    assert!(
        line.contains(what),
        "the message about {shown} should say {what:?}: {line}"
    );
    assert!(
        r.log.contains(&shown),
        "the audit log names {shown}\n--- log\n{}",
        r.log
    );
}

fn bounded_backup(env: &TestEnv, dest: &Path, extra: &[&str]) -> Res<Run> {
    let mut cmd = std::process::Command::new(trove_bin());
    cmd.current_dir(env.root())
        .env_remove("TROVE_REPO")
        .arg("backup")
        .args(extra)
        .arg(&env.source)
        .arg(dest);
    let logs = dest.join(".trove").join("logs");
    let before = list_logs(&logs);
    let out = run_bounded(cmd, LIMIT)?;
    let mut log = String::new();
    for p in list_logs(&logs).difference(&before) {
        log.push_str(&std::fs::read_to_string(p)?);
    }
    Ok(Run::from_output(&out, log))
}

/// The type `trove ls --json` records for `name` in the latest snapshot.
fn recorded_type(env: &TestEnv, name: &str) -> Res<Option<String>> {
    let out = env.repo_cmd(&["ls", "--json"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .find(|e| e["path"] == name)
        .and_then(|e| e["type"].as_str().map(str::to_string)))
}

/// A FIFO is recorded in the snapshot (SPEC §10), never opened (that would
/// block), kept out of the browsable tree (a FIFO there would block
/// whoever reads it), and is no problem for the exit code.
#[test]
fn fifo_is_recorded_not_shown_and_exits_0() -> TestResult {
    let env = env_with_ok_file()?;
    let st = std::process::Command::new("mkfifo")
        .arg(env.src("pipe"))
        .status()?;
    assert!(st.success(), "mkfifo failed");
    // Opening a FIFO for reading would block forever: bounded run.
    let r = bounded_backup(&env, &env.backup, &[])?;
    r.expect_code(0);
    assert_ok_file_backed_up(&env, &r);
    assert!(!env.dst("pipe").exists(), "a FIFO is not put in the tree");
    assert_eq!(recorded_type(&env, "pipe")?.as_deref(), Some("fifo"));
    assert!(
        r.log.contains("special files") && r.log.contains("browsable tree shows none"),
        "the log says once why the tree lacks it: {}",
        r.log
    );
    Ok(())
}

#[test]
fn unix_socket_is_recorded_not_shown_and_exits_0() -> TestResult {
    let env = env_with_ok_file()?;
    let listener = std::os::unix::net::UnixListener::bind(env.src("sock"))?;
    let r = bounded_backup(&env, &env.backup, &[])?;
    drop(listener);
    r.expect_code(0);
    assert_ok_file_backed_up(&env, &r);
    assert!(!env.dst("sock").exists(), "a socket is not put in the tree");
    assert_eq!(recorded_type(&env, "sock")?.as_deref(), Some("socket"));
    Ok(())
}

/// `--on-error fail` commits nothing when a file cannot be read; `ignore`
/// exits 0 with the rest backed up (an unreadable file, as uid 65534).
#[test]
fn on_error_policy_ignore_exits_0_and_fail_commits_nothing() -> TestResult {
    let env = env_with_ok_file()?;
    chmod(env.root(), 0o777)?;
    env.write("secret.txt", "top secret")?;
    chmod(&env.src("secret.txt"), 0o000)?;

    let fail = backup_as_nobody(&env, &["--on-error", "fail"])?;
    fail.expect_code(1);
    assert!(
        fail.stderr.contains("secret.txt"),
        "fail names the path: {}",
        fail.stderr
    );
    let snaps = env.repo_cmd(&["snapshots", "--json"])?;
    let v: serde_json::Value = serde_json::from_slice(&snaps.stdout)?;
    assert_eq!(
        v.as_array().map(Vec::len).unwrap_or(0),
        0,
        "--on-error fail stops before the commit point"
    );
    assert!(!env.dst("ok.txt").exists());

    let ignore = backup_as_nobody(&env, &["--on-error", "ignore"])?;
    ignore.expect_code(0);
    assert_ok_file_backed_up(&env, &ignore);
    Ok(())
}

/// A walk reads files a window (8,192 records) at a time while it walks
/// on: unreadable files in the first, a middle and the last window are
/// each reported and only they are missing; `--on-error fail` stops at
/// the first one and commits nothing.
#[test]
fn unreadable_files_in_several_read_windows_are_each_reported() -> TestResult {
    let env = env_with_ok_file()?;
    chmod(env.root(), 0o777)?;
    let folders = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
    for d in folders {
        for n in 0..2000 {
            env.write(&format!("{d}/{n:04}.txt"), format!("{d} {n}"))?;
        }
    }
    let locked = ["a/0000.txt", "e/1000.txt", "j/1999.txt"];
    for l in locked {
        chmod(&env.src(l), 0o000)?;
    }

    let fail = backup_as_nobody(&env, &["--on-error", "fail"])?;
    fail.expect_code(1);
    assert!(
        fail.stderr.contains("a/0000.txt"),
        "fail names the first unreadable file: {}",
        fail.stderr
    );
    let snaps = env.repo_cmd(&["snapshots", "--json"])?;
    let v: serde_json::Value = serde_json::from_slice(&snaps.stdout)?;
    assert_eq!(
        v.as_array().map(Vec::len).unwrap_or(0),
        0,
        "nothing committed"
    );

    let r = backup_as_nobody(&env, &[])?;
    r.expect_code(1);
    for l in locked {
        assert_warns_about(&r, &env.src(l), "ermission denied");
        assert!(!env.dst(l).exists(), "{l} is not in the backup");
    }
    for d in folders {
        let n = std::fs::read_dir(env.dst(d))?.count();
        let want = 2000 - locked.iter().filter(|l| l.starts_with(d)).count();
        assert_eq!(n, want, "files backed up in {d}/");
    }
    assert_eq!(std::fs::read(env.dst("e/0999.txt"))?, b"e 999");
    assert_eq!(std::fs::read(env.dst("j/1998.txt"))?, b"j 1998");

    // Readable again: the next run reads exactly them and is clean.
    for l in locked {
        chmod(&env.src(l), 0o644)?;
    }
    let again = backup_as_nobody(&env, &[])?;
    again.expect_code(0);
    for l in locked {
        let (d, n) = l.split_once('/').unwrap_or_default();
        let n: u32 = n.trim_end_matches(".txt").parse()?;
        assert_eq!(std::fs::read(env.dst(l))?, format!("{d} {n}").as_bytes());
    }
    Ok(())
}

#[test]
fn dangling_symlink_is_recorded_and_shown_as_a_symlink() -> TestResult {
    let env = env_with_ok_file()?;
    std::os::unix::fs::symlink("does/not/exist", env.src("dangling"))?;
    for (dest, extra) in [
        (env.backup.clone(), &[][..]),
        (env.root().join("followed"), &["--follow-symlinks"][..]),
    ] {
        let r = bounded_backup(&env, &dest, extra)?;
        r.expect_code(0);
        let tree = crate::common::listing(&dest, true)?;
        assert_eq!(
            tree.get(&b"dangling"[..]),
            Some(&Node::Symlink(b"does/not/exist".to_vec())),
            "{extra:?}: dangling symlink shown as a symlink"
        );
        let ls = crate::common::trove_cmd()?
            .arg("--repo")
            .arg(&dest)
            .args(["ls", "--json", "latest", "dangling"])
            .output()?;
        assert!(
            ls.status.success(),
            "{}",
            String::from_utf8_lossy(&ls.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&ls.stdout)?;
        assert_eq!(v[0]["type"], "symlink", "{v}");
        assert_eq!(v[0]["target"], "does/not/exist", "{v}");
    }
    Ok(())
}

#[test]
fn follow_symlinks_backs_up_the_target_content() -> TestResult {
    let env = env_with_ok_file()?;
    let outside = env.root().join("outside.txt");
    std::fs::write(&outside, "outside content")?;
    std::os::unix::fs::symlink(&outside, env.src("link"))?;
    let r = bounded_backup(&env, &env.backup, &["--follow-symlinks"])?;
    r.expect_code(0);
    assert_eq!(
        crate::common::listing(&env.backup, true)?.get(&b"link"[..]),
        Some(&Node::File(b"outside content".to_vec()))
    );
    Ok(())
}

#[test]
fn symlink_loop_with_follow_symlinks_is_reported_and_does_not_hang() -> TestResult {
    let env = env_with_ok_file()?;
    std::fs::create_dir_all(env.src("a"))?;
    std::fs::create_dir_all(env.src("b"))?;
    env.write("a/in_a.txt", "in a")?;
    std::os::unix::fs::symlink("..", env.src("a/up"))?;
    std::os::unix::fs::symlink("../b", env.src("a/to_b"))?;
    std::os::unix::fs::symlink("../a", env.src("b/to_a"))?;
    let r = bounded_backup(&env, &env.backup, &["--follow-symlinks"])?;
    // SPEC §6: "a clear per-path message, the run goes on, the exit code
    // says so": the loop link itself could not be backed up.
    r.expect_code(1);
    assert_warns_about(&r, &env.src("a/up"), "loop");
    assert_ok_file_backed_up(&env, &r);
    assert_eq!(std::fs::read(env.dst("a/in_a.txt"))?, b"in a");
    Ok(())
}

#[test]
fn non_utf8_names_round_trip_with_exact_bytes() -> TestResult {
    let env = env_with_ok_file()?;
    let file = OsStr::from_bytes(b"caf\xe9-\xff.txt");
    let dir = OsStr::from_bytes(b"dir\xfe");
    std::fs::write(env.source.join(file), "latin-1 name")?;
    std::fs::create_dir(env.source.join(dir))?;
    std::fs::write(env.source.join(dir).join("inner.txt"), "inside")?;
    let r = bounded_backup(&env, &env.backup, &[])?;
    r.expect_code(0);
    let tree = env.tree()?;
    assert_eq!(
        tree.get(&b"caf\xe9-\xff.txt"[..]),
        Some(&Node::File(b"latin-1 name".to_vec())),
        "tree: {:?}",
        tree.keys().map(|k| show(k)).collect::<Vec<_>>()
    );
    assert_eq!(
        tree.get(&b"dir\xfe/inner.txt"[..]),
        Some(&Node::File(b"inside".to_vec()))
    );
    assert!(
        r.log.contains(r"source/caf\xe9-\xff.txt"),
        "the log names the file unambiguously:\n{}",
        r.log
    );
    // The name survives the snapshot and the stat cache: nothing changes.
    let again = bounded_backup(&env, &env.backup, &[])?;
    again.expect_code(0);
    assert!(
        again.stdout.contains("no changes"),
        "a rerun sees no change: {}",
        again.stdout
    );
    Ok(())
}

#[test]
fn newline_in_a_name_round_trips_and_keeps_the_log_one_line_per_entry() -> TestResult {
    let env = env_with_ok_file()?;
    env.write("new\nline.txt", "nl")?;
    let r = bounded_backup(&env, &env.backup, &[])?;
    r.expect_code(0);
    assert_eq!(
        env.tree()?.get(&b"new\nline.txt"[..]),
        Some(&Node::File(b"nl".to_vec()))
    );
    r.assert_message(r"BACKUP: source/new\nline.txt → backup/new\nline.txt");
    for line in r.log.lines() {
        assert!(
            line.starts_with(|c: char| c.is_ascii_digit()),
            "every log line starts with a timestamp; a raw newline split this one: {line:?}"
        );
    }
    Ok(())
}

/// `levels` nested directories named `name` below `base`, with `deep.txt`
/// at the bottom, built with relative `cd`s (no path ever exceeds
/// PATH_MAX in a single system call).
fn make_deep(base: &Path, name: &str, levels: usize) -> TestResult {
    let st = std::process::Command::new("sh")
        .current_dir(base)
        .args([
            "-c",
            r#"i=0; while [ $i -lt "$2" ]; do mkdir "$1" && cd -P "$1" || exit 1; i=$((i+1)); done; printf deep > deep.txt"#,
            "sh",
            name,
            &levels.to_string(),
        ])
        .status()?;
    assert!(st.success(), "could not build the deep tree");
    Ok(())
}

#[test]
fn path_longer_than_path_max_is_reported_and_the_run_completes() -> TestResult {
    let env = env_with_ok_file()?;
    let name = "d".repeat(200);
    make_deep(&env.source, &name, 25)?; // > 5000 bytes
    let r = bounded_backup(&env, &env.backup, &[])?;
    r.expect_code(1);
    let prefix = format!("{}/{name}/", env.source.display());
    assert!(
        r.stderr
            .lines()
            .any(|l| l.starts_with(&format!("warning: {prefix}"))),
        "a message names the too-deep path\n--- stderr\n{}",
        r.stderr
    );
    assert!(r.stdout.contains("Run complete"), "{}", r.stdout);
    assert_ok_file_backed_up(&env, &r);
    let again = bounded_backup(&env, &env.backup, &[])?;
    again.expect_code(1);
    assert!(
        !again.stderr.contains("error:"),
        "a rerun is not stopped by the deep path: {}",
        again.stderr
    );
    Ok(())
}

#[test]
fn deep_path_that_fits_the_source_but_not_the_backup_root_does_not_stop_backups() -> TestResult {
    let env = env_with_ok_file()?;
    let name = "d".repeat(200);
    make_deep(&env.source, &name, 25)?;
    // A backup root 234 bytes longer than the source path: the deepest
    // directories the scan can list have no room under it.
    let dest: PathBuf = env.root().join(format!("backup{}", "x".repeat(234)));
    let r = bounded_backup(&env, &dest, &[])?;
    assert!(
        r.stdout.contains("Run complete"),
        "the run completes despite a path the backup root cannot hold\n--- stdout\n{}\n--- stderr\n{}",
        r.stdout,
        abbreviate(&r.stderr)
    );
    assert_eq!(r.code, Some(1), "something could not be backed up");
    assert_eq!(
        std::fs::read(dest.join("ok.txt")).ok().as_deref(),
        Some(&b"ok"[..]),
        "ok.txt is in the browsable tree"
    );
    let again = bounded_backup(&env, &dest, &[])?;
    assert!(
        again.stdout.contains("Run complete"),
        "the next run is not stuck either\n--- stderr\n{}",
        abbreviate(&again.stderr)
    );
    Ok(())
}

/// Run `trove backup EXTRA… source backup` as uid/gid 65534.
fn backup_as_nobody(env: &TestEnv, extra: &[&str]) -> Res<Run> {
    let mut cmd = std::process::Command::new("setpriv");
    cmd.current_dir(env.root())
        .env_remove("TROVE_REPO")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(trove_bin())
        .arg("backup")
        .args(extra)
        .arg(&env.source)
        .arg(&env.backup);
    let logs = env.log_dir();
    let before = list_logs(&logs);
    let out = run_bounded(cmd, LIMIT)?;
    let mut log = String::new();
    for p in list_logs(&logs).difference(&before) {
        log.push_str(&std::fs::read_to_string(p)?);
    }
    Ok(Run::from_output(&out, log))
}

fn chmod(p: &Path, mode: u32) -> TestResult {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

#[test]
fn unreadable_file_is_reported_by_path_and_the_rest_is_backed_up() -> TestResult {
    let env = env_with_ok_file()?;
    chmod(env.root(), 0o777)?;
    env.write("secret.txt", "top secret")?;
    env.write("sub/visible.txt", "visible")?;
    chmod(&env.src("secret.txt"), 0o000)?;
    let r = backup_as_nobody(&env, &[])?;
    r.expect_code(1);
    assert_warns_about(&r, &env.src("secret.txt"), "ermission denied");
    assert_ok_file_backed_up(&env, &r);
    assert_eq!(std::fs::read(env.dst("sub/visible.txt"))?, b"visible");
    assert!(!env.dst("secret.txt").exists());
    assert!(!env.dst("_duplicates/secret.txt").exists());
    Ok(())
}

#[test]
fn unlistable_directory_is_reported_and_keeps_its_previous_content() -> TestResult {
    let env = env_with_ok_file()?;
    chmod(env.root(), 0o777)?;
    env.write("locked/a.txt", "a content")?;
    backup_as_nobody(&env, &[])?.expect_code(0);
    assert_eq!(std::fs::read(env.dst("locked/a.txt"))?, b"a content");

    chmod(&env.src("locked"), 0o000)?;
    env.write("ok.txt", "ok")?;
    let r = backup_as_nobody(&env, &[])?;
    r.expect_code(1);
    assert_warns_about(&r, &env.src("locked"), "ermission denied");
    assert_eq!(
        std::fs::read(env.dst("locked/a.txt"))?,
        b"a content",
        "an unreadable directory is not turned into a deletion"
    );
    assert!(
        !env.dst("_deleted/locked/a.txt").exists(),
        "nothing moved to _deleted/"
    );
    Ok(())
}
