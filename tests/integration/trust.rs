//! Issue 13, "trust under damage, faults and hostile states": one
//! regression test per defect, each named after the behaviour a user is
//! promised. Every test reproduces the defect the way a careful user would
//! (damaging the repository on purpose, swapping folders for symlinks,
//! deleting the lock file) and runs the real binary with a time limit, so a
//! regression fails instead of hanging.

use crate::common::{run_bounded, trove_bin, Res, TestEnv, TestResult};
use crate::damage;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// `trove --repo BACKUP ARGS…`, killed (and the test failed) after LIMIT.
fn repo_bounded(env: &TestEnv, args: &[&str]) -> Res<Output> {
    let mut c = Command::new(trove_bin());
    c.current_dir(env.root())
        .env_remove("TROVE_REPO")
        .arg("--repo")
        .arg(&env.backup)
        .args(args);
    run_bounded(c, LIMIT)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Replace `path` by a FIFO (made writable first: stored files are 0444).
fn replace_with_fifo(path: &Path) -> Res<()> {
    if let Some(dir) = path.parent() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    std::fs::remove_file(path)?;
    let st = Command::new("mkfifo").arg(path).status()?;
    assert!(st.success(), "mkfifo {}", path.display());
    Ok(())
}

#[test]
fn an_object_replaced_by_a_fifo_never_hangs_verify_or_restore() -> TestResult {
    let env = TestEnv::new()?;
    env.write("p.txt", b"precious bytes")?;
    env.backup_ok(&[])?;
    let hash = env.object_hash_of("p.txt")?;
    let obj = damage::object_path(&env.backup, &hash)?;
    replace_with_fifo(&obj)?;
    for args in [vec!["verify"], vec!["verify", "--quick"]] {
        let o = repo_bounded(&env, &args)?;
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(
            text(&o).contains(&hash[..12]),
            "{args:?} names the object: {}",
            text(&o)
        );
    }
    let target = env.root().join("restored");
    let o = repo_bounded(
        &env,
        &["restore", "--target", target.to_str().ok_or("utf8")?],
    )?;
    assert_eq!(o.status.code(), Some(1), "restore: {}", text(&o));
    assert!(
        text(&o).contains("FIFO"),
        "restore says what is wrong: {}",
        text(&o)
    );
    Ok(())
}

#[test]
fn a_source_file_swapped_for_a_fifo_never_hangs_the_backup() -> TestResult {
    // The scan decides by type, so a FIFO already there is reported by the
    // scan; this checks the reader itself never blocks on one (the
    // swap-after-scan race reaches the same open).
    let env = TestEnv::new()?;
    env.write("a.txt", b"a")?;
    let st = Command::new("mkfifo").arg(env.src("pipe")).status()?;
    assert!(st.success());
    let mut c = Command::new(trove_bin());
    c.current_dir(env.root())
        .arg("backup")
        .arg(&env.source)
        .arg(&env.backup);
    let o = run_bounded(c, LIMIT)?;
    assert_ne!(o.status.code(), None, "ended by a signal: {}", text(&o));
    assert!(env.dst("a.txt").exists());
    Ok(())
}

#[test]
fn verify_survives_an_object_truncated_through_the_browsable_tree() -> TestResult {
    // 48 MiB: above the size that used to be memory-mapped (16 MiB).
    let env = TestEnv::new()?;
    let big: Vec<u8> = (0..48u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    env.write("big.bin", &big)?;
    env.backup_ok(&[])?;
    let browsable = env.dst("big.bin");
    damage::make_writable(&browsable)?;
    // A thread keeps cutting the shared inode short and growing it back
    // while verify runs again and again: a memory-mapped read of a cut
    // file raises SIGBUS, a buffered read just sees a short file.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mutator = {
        let stop = stop.clone();
        let path = browsable.clone();
        let full = big.len() as u64;
        std::thread::spawn(move || -> std::io::Result<()> {
            let f = std::fs::OpenOptions::new().write(true).open(&path)?;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.set_len(full)?;
                std::thread::sleep(Duration::from_millis(2));
                f.set_len(4096)?;
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        })
    };
    let mut outcomes = Vec::new();
    for _ in 0..8 {
        let o = repo_bounded(&env, &["verify"]);
        outcomes.push(o);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    mutator.join().map_err(|_| "mutator panicked")??;
    use std::os::unix::process::ExitStatusExt;
    for o in outcomes {
        let o = o?;
        assert_eq!(
            o.status.signal(),
            None,
            "verify was killed by a signal: {}",
            text(&o)
        );
        assert_eq!(
            o.status.code(),
            Some(1),
            "the damage is reported: {}",
            text(&o)
        );
    }
    Ok(())
}

/// Whether /proc/locks shows a lock held by process `pid`.
fn holds_a_lock(pid: u32) -> Res<bool> {
    let locks = std::fs::read_to_string("/proc/locks")?;
    Ok(locks
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(pid.to_string().as_str())))
}

#[test]
fn a_second_writer_is_refused_after_the_lock_file_is_deleted() -> TestResult {
    let env = TestEnv::new()?;
    // Enough work that the first writer is caught holding the lock.
    for i in 0..3000 {
        env.write(&format!("d{}/f{i}.txt", i % 30), format!("file {i}"))?;
    }
    let mut first = Command::new(trove_bin())
        .current_dir(env.root())
        .arg("backup")
        .arg(&env.source)
        .arg(&env.backup)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let pid = first.id();
    let start = std::time::Instant::now();
    let mut stopped = false;
    while start.elapsed() < LIMIT && first.try_wait()?.is_none() {
        if holds_a_lock(pid)? {
            // Freeze the writer while it holds the lock.
            Command::new("kill")
                .args(["-STOP", &pid.to_string()])
                .status()?;
            stopped = true;
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let result = (|| -> TestResult {
        assert!(stopped, "the first backup was never seen holding the lock");
        std::fs::remove_file(env.dst(".trove/lock"))?;
        let r = env.backup(&[])?;
        assert_eq!(
            r.code,
            Some(3),
            "a second writer ran beside the first: {}",
            r.stderr
        );
        assert!(r.stderr.contains("locked"), "{}", r.stderr);
        Ok(())
    })();
    Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .status()?;
    let st = first.wait()?;
    result?;
    assert_eq!(st.code(), Some(0), "the first writer completes");
    Ok(())
}

#[test]
fn an_io_error_names_the_os_error_once() -> TestResult {
    // A read-only tmpfs would need mount; a backup root whose parent is a
    // regular file fails with ENOTDIR through the same error path as ENOSPC.
    let env = TestEnv::new()?;
    env.write("a.txt", b"a")?;
    std::fs::write(env.root().join("file"), b"x")?;
    let mut c = Command::new(trove_bin());
    c.current_dir(env.root())
        .arg("backup")
        .arg(&env.source)
        .arg(env.root().join("file/backup"));
    let o = run_bounded(c, LIMIT)?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "{err}");
    let os = "Not a directory (os error 20)";
    assert_eq!(err.matches(os).count(), 1, "OS text once: {err}");
    Ok(())
}

/// Replace a stored object by something that is not its bytes.
fn damage_object(path: &Path, how: &str) -> Res<()> {
    match how {
        "flip" => damage::flip_byte(path, 0)?,
        "symlink" | "fifo" => {
            if let Some(dir) = path.parent() {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            }
            std::fs::remove_file(path)?;
            if how == "fifo" {
                assert!(Command::new("mkfifo").arg(path).status()?.success());
            } else {
                std::os::unix::fs::symlink("/etc/hostname", path)?;
            }
        }
        other => return Err(format!("unknown damage {other}").into()),
    }
    Ok(())
}

#[test]
fn materialize_never_destroys_a_good_copy_over_a_damaged_object() -> TestResult {
    use std::os::unix::fs::MetadataExt;
    for how in ["flip", "symlink", "fifo"] {
        let env = TestEnv::new()?;
        let content = b"the last good copy of these bytes".to_vec();
        env.write("p.txt", &content)?;
        env.backup_ok(&[])?;
        let hash = env.object_hash_of("p.txt")?;
        let obj = damage::object_path(&env.backup, &hash)?;
        // An independent copy with the right bytes (what the EMLINK/EXDEV
        // fallback makes), then the object is damaged.
        damage::replace_with_copy(&env.dst("p.txt"))?;
        damage_object(&obj, how)?;
        let v = repo_bounded(&env, &["verify"])?;
        assert_eq!(v.status.code(), Some(1), "{how}: {}", text(&v));
        let m = repo_bounded(&env, &["materialize"])?;
        assert_ne!(m.status.code(), None, "{how}: {}", text(&m));
        let p = env.dst("p.txt");
        let pm = std::fs::symlink_metadata(&p)?;
        assert!(pm.is_file(), "{how}: p.txt is no longer a regular file");
        assert_eq!(
            std::fs::read(&p)?,
            content,
            "{how}: the good copy was destroyed"
        );
        // The good copy re-stored the object, so the repository is whole.
        assert_eq!(std::fs::read(&obj)?, content, "{how}: object not re-stored");
        assert!(std::fs::symlink_metadata(&obj)?.is_file());
        let v = repo_bounded(&env, &["verify"])?;
        assert_eq!(
            v.status.code(),
            Some(0),
            "{how}: verify after the repair: {}",
            text(&v)
        );
        assert_eq!(pm.ino(), std::fs::metadata(&obj)?.ino(), "{how}: relinked");
        // The damaged bytes were moved aside, not destroyed.
        assert!(env
            .dst(".trove/quarantine/objects")
            .join(&hash)
            .symlink_metadata()
            .is_ok());
    }
    Ok(())
}

#[test]
fn backup_rehash_restores_a_damaged_or_missing_object_from_the_source() -> TestResult {
    for how in ["flip", "fifo", "delete"] {
        let env = TestEnv::new()?;
        let content = b"bytes still intact in the source".to_vec();
        env.write("p.txt", &content)?;
        env.write("q.txt", b"another file")?;
        env.backup_ok(&[])?;
        let hash = env.object_hash_of("p.txt")?;
        let obj = damage::object_path(&env.backup, &hash)?;
        if how == "delete" {
            damage::delete_object(&env.backup, &hash)?;
        } else {
            damage_object(&obj, how)?;
        }
        let v = repo_bounded(&env, &["verify"])?;
        assert_eq!(v.status.code(), Some(1), "{how}: {}", text(&v));
        assert!(
            text(&v).contains("backup --rehash"),
            "{how}: verify names the repair: {}",
            text(&v)
        );
        let r = env.backup(&["--rehash"])?;
        r.expect_code(0);
        if how != "delete" {
            assert!(
                r.stdout.contains("1 damaged object re-stored"),
                "{how}: the summary tells the truth: {}",
                r.stdout
            );
        }
        assert_eq!(std::fs::read(&obj)?, content, "{how}: object re-stored");
        let v = repo_bounded(&env, &["verify"])?;
        assert_eq!(
            v.status.code(),
            Some(0),
            "{how}: verify after the repair: {}",
            text(&v)
        );
    }
    Ok(())
}
