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

/// Pages of `path` the page cache holds (`mincore` over a mapping that is
/// never touched, so it does not fault any in).
fn cached_pages(path: &std::path::Path) -> Res<usize> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len() as usize;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    // SAFETY: a fresh read-only shared mapping of an open file, only passed
    // to mincore (never read) and unmapped before returning.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error().into());
    }
    let mut resident = vec![0u8; len.div_ceil(page)];
    // SAFETY: `map` spans `len` bytes and `resident` has a byte per page.
    let rc = unsafe { libc::mincore(map, len, resident.as_mut_ptr()) };
    let err = std::io::Error::last_os_error();
    // SAFETY: `map` came from the mmap above and is not used after this.
    unsafe { libc::munmap(map, len) };
    if rc != 0 {
        return Err(err.into());
    }
    Ok(resident.iter().filter(|b| **b & 1 == 1).count())
}

/// A backup reads each new file once and leaves its pages out of the page
/// cache (docs/DESIGN.md, "Pass 1"): a first backup of millions of small
/// files otherwise filled memory with pages it never reads again.
#[test]
fn a_backup_leaves_the_files_it_read_out_of_the_page_cache() -> TestResult {
    let env = TestEnv::new()?;
    let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    env.write("big.bin", &big)?;
    env.write("small.txt", "a small file, read whole\n".repeat(100))?;
    let files = [env.src("big.bin"), env.src("small.txt")];
    for f in &files {
        // Written pages are dirty, and only clean ones can be dropped: sync
        // them, then read them back so they are surely cached.
        std::fs::File::open(f)?.sync_all()?;
        std::fs::read(f)?;
        if cached_pages(f)? == 0 {
            eprintln!(
                "skipped: {} is not held in the page cache after a read here",
                f.display()
            );
            return Ok(());
        }
    }
    // tmpfs keeps a file's pages whatever it is advised: they are the file.
    let st = rustix::fs::statfs(env.source.as_path())?;
    if st.f_type == 0x0102_1994 {
        eprintln!("skipped: the test folder is on tmpfs, whose pages cannot be dropped");
        return Ok(());
    }
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(files_read(&env, &[])?, 2);
    for f in &files {
        assert_eq!(
            cached_pages(f)?,
            0,
            "{} is still in the page cache after the backup read it",
            f.display()
        );
    }
    Ok(())
}
