//! The stat cache: what a run reads and what it trusts without reading.
//! Counts come from `backup --json` (`files_read`), so these tests assert
//! reads, not timings.

use crate::common::*;
use std::time::Duration;

/// `files_read` of one `backup --json` run.
fn files_read(env: &TestEnv, extra: &[&str]) -> Res<u64> {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let r = env.backup_ok(&args)?;
    let v: serde_json::Value = serde_json::from_str(&r.stdout)?;
    v["files_read"]
        .as_u64()
        .ok_or_else(|| format!("no files_read in {}", r.stdout).into())
}

/// Files written more than trove's racy window (2 s) before a run.
fn settled_tree(env: &TestEnv, n: usize) -> Res<()> {
    for i in 0..n {
        env.write(&format!("d{}/f{i}.txt", i % 3), format!("content {i}"))?;
    }
    std::thread::sleep(Duration::from_millis(2200));
    Ok(())
}

#[test]
fn no_change_rerun_reads_no_file() -> TestResult {
    let env = TestEnv::new()?;
    settled_tree(&env, 12)?;
    assert_eq!(files_read(&env, &[])?, 12, "first run reads everything");
    assert_eq!(files_read(&env, &[])?, 0, "nothing changed: nothing read");
    Ok(())
}

#[test]
fn one_edited_file_is_the_only_one_read() -> TestResult {
    let env = TestEnv::new()?;
    settled_tree(&env, 12)?;
    files_read(&env, &[])?;
    env.write("d1/f4.txt", "edited")?;
    assert_eq!(files_read(&env, &[])?, 1);
    // Once settled, the edit is trusted too.
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(
        files_read(&env, &[])?,
        1,
        "the racily-clean edit is read once more"
    );
    assert_eq!(files_read(&env, &[])?, 0);
    Ok(())
}

#[test]
fn rehash_reads_everything() -> TestResult {
    let env = TestEnv::new()?;
    settled_tree(&env, 7)?;
    files_read(&env, &[])?;
    assert_eq!(files_read(&env, &["--rehash"])?, 7);
    Ok(())
}

#[test]
fn racily_clean_files_are_read_again() -> TestResult {
    // Files modified within 2 s of a run are not trusted by the next one:
    // a write in the same timestamp tick as the read would leave the stat
    // unchanged while the content differs.
    let env = TestEnv::new()?;
    for i in 0..5 {
        env.write(&format!("f{i}"), format!("fresh {i}"))?;
    }
    assert_eq!(files_read(&env, &[])?, 5);
    assert_eq!(files_read(&env, &[])?, 5, "fresh files are read again");
    Ok(())
}

#[test]
fn deleted_cache_costs_reads_not_correctness() -> TestResult {
    let env = TestEnv::new()?;
    settled_tree(&env, 6)?;
    files_read(&env, &[])?;
    std::fs::remove_dir_all(env.dst(".trove/cache"))?;
    assert_eq!(files_read(&env, &[])?, 6, "no cache: everything is read");
    let before = env.snapshot_count()?;
    assert_eq!(files_read(&env, &[])?, 0, "the cache is back");
    assert_eq!(env.snapshot_count()?, before, "and nothing was a change");
    Ok(())
}

#[test]
fn same_size_same_mtime_rewrite_is_detected() -> TestResult {
    // The content changes but size and mtime are put back: ctime (which
    // no unprivileged writer can reset) still tells.
    let env = TestEnv::new()?;
    settled_tree(&env, 3)?;
    files_read(&env, &[])?;
    let p = env.src("d0/f0.txt");
    let mtime = std::fs::metadata(&p)?.modified()?;
    std::fs::write(&p, "CONTENT 0")?;
    std::fs::File::options()
        .write(true)
        .open(&p)?
        .set_modified(mtime)?;
    assert_eq!(files_read(&env, &[])?, 1);
    assert_eq!(std::fs::read(env.dst("d0/f0.txt"))?, b"CONTENT 0");
    Ok(())
}
