//! SPEC §6: one writer at a time, through an OS lock on `.trove/lock`;
//! exit 3 without --wait, and --wait blocks until the lock is free.

use crate::common::{trove_bin, TestEnv, TestResult};
use std::fs::OpenOptions;
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Whether /proc/locks shows a process blocked waiting for a lock on inode
/// `ino` (a line like `1: -> FLOCK  ADVISORY  WRITE 123 fe:00:4567 0 EOF`).
fn someone_waits_for(ino: u64) -> std::io::Result<bool> {
    let locks = std::fs::read_to_string("/proc/locks")?;
    Ok(locks.lines().any(|l| {
        l.contains("->")
            && l.split_whitespace()
                .any(|f| f.rsplit(':').next() == Some(&ino.to_string()) && f.contains(':'))
    }))
}

/// A repository with one source file, and its engine lock held by this
/// test process (as another trove writer would hold it).
fn init_and_hold_lock(env: &TestEnv) -> crate::common::Res<(std::path::PathBuf, std::fs::File)> {
    env.write("a.txt", "a")?;
    env.cmd()?.arg("init").arg(&env.backup).assert().success();
    let lock_path = env.dst(".trove/lock");
    let held = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)?;
    held.try_lock()?;
    Ok((lock_path, held))
}

#[test]
fn backup_exits_3_naming_the_lock_while_another_writer_holds_it() -> TestResult {
    let env = TestEnv::new()?;
    let (lock_path, held) = init_and_hold_lock(&env)?;

    let r = env.backup(&[])?;
    r.expect_code(3);
    assert!(
        r.stderr.contains(&lock_path.display().to_string()),
        "the message names the lock file: {}",
        r.stderr
    );
    assert!(r.stderr.contains("locked"), "{}", r.stderr);
    assert!(!env.dst("a.txt").exists(), "nothing was backed up");

    // Readers take a shared lock: they too exit 3 while a writer holds it.
    for args in [&["snapshots"][..], &["ls"][..]] {
        let out = env.repo_cmd(args)?;
        assert_eq!(
            out.status.code(),
            Some(3),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Released: the next run works.
    held.unlock()?;
    env.backup_ok(&[])?;
    assert_eq!(std::fs::read(env.dst("a.txt"))?, b"a");
    Ok(())
}

#[test]
fn backup_with_wait_blocks_until_the_lock_is_released_then_succeeds() -> TestResult {
    let env = TestEnv::new()?;
    let (lock_path, held) = init_and_hold_lock(&env)?;
    let ino = std::fs::metadata(&lock_path)?.ino();

    let mut child = std::process::Command::new(trove_bin())
        .current_dir(env.root())
        .env_remove("TROVE_REPO")
        .args(["backup", "--wait"])
        .arg(&env.source)
        .arg(&env.backup)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;

    // Wait (no timing assertion: the deadline only stops a broken test
    // from hanging) until the kernel shows the child blocked on our lock.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !someone_waits_for(ino)? {
        if let Some(status) = child.try_wait()? {
            let out = child.wait_with_output()?;
            panic!(
                "backup --wait exited ({status}) while the lock was held\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if Instant::now() > deadline {
            child.kill()?;
            panic!("backup --wait never blocked on the lock");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(child.try_wait()?.is_none(), "still blocked");
    assert!(
        !env.dst("a.txt").exists(),
        "nothing is written while the lock is held"
    );

    held.unlock()?;
    let out = child.wait_with_output()?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(env.dst("a.txt"))?, b"a");
    assert_eq!(env.snapshot_count()?, 1);
    drop(held);
    Ok(())
}

#[test]
fn readers_share_the_lock_but_a_writer_does_not() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", "a")?;
    env.backup_ok(&[])?;
    let reader = OpenOptions::new()
        .read(true)
        .write(true)
        .open(env.dst(".trove/lock"))?;
    reader.try_lock_shared()?;

    let out = env.repo_cmd(&["snapshots", "--json"])?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "a second reader gets in: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.write("b.txt", "b")?;
    let r = env.backup(&[])?;
    r.expect_code(3);
    assert!(!env.dst("b.txt").exists(), "the writer did nothing");
    reader.unlock()?;
    env.backup_ok(&[])?;
    assert_eq!(std::fs::read(env.dst("b.txt"))?, b"b");
    Ok(())
}
