//! SPEC §4: the same source history gives the same snapshots (apart from
//! times) and the same browsable tree, whichever backup root it goes to.

use crate::common::{listing, log_without_timestamps, trove_cmd, Res, Run, TestEnv, TestResult};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

fn fill_source(env: &TestEnv) -> Res<()> {
    for d in 0..6 {
        for i in 0..25 {
            env.write(
                &format!("dir{d}/file{i:02}.txt"),
                format!("dir {d} file {i}\n"),
            )?;
        }
    }
    env.write("dir0/copy_of_dir3_file07.txt", "dir 3 file 7\n")?;
    env.write("z/dup_a.bin", [7u8; 3000])?;
    env.write("a/dup_b.bin", [7u8; 3000])?;
    env.write("empty.txt", "")?;
    env.write("nested/deeper/still/leaf.txt", "leaf")?;
    std::fs::create_dir_all(env.src("empty_dir"))?;
    std::os::unix::fs::symlink("dir0/file00.txt", env.src("link"))?;
    Ok(())
}

/// The ids of the stored tree objects (in the tree packs).
fn tree_objects(backup: &Path) -> Res<BTreeSet<String>> {
    crate::damage::tree_hashes(backup)
}

fn ls_json(backup: &Path) -> Res<String> {
    let out = trove_cmd()?
        .arg("--repo")
        .arg(backup)
        .args(["ls", "--json"])
        .output()?;
    assert!(
        out.status.success(),
        "ls failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn backup_to(env: &TestEnv, dest: &Path) -> Res<Run> {
    let logs = dest.join(".trove").join("logs");
    let r = env.run_in(
        &[
            OsStr::new("backup"),
            env.source.as_os_str(),
            dest.as_os_str(),
        ],
        &logs,
    )?;
    r.expect_code(0);
    Ok(r)
}

/// `with_trees`: also compare every stored tree object. That holds while
/// there is no history yet: archived versions carry the time they were
/// archived, and SPEC §4 promises identical snapshots "apart from times".
fn assert_same(d1: &Path, d2: &Path, r1: &Run, r2: &Run, with_trees: bool) -> TestResult {
    assert_eq!(
        listing(d1, true)?,
        listing(d2, true)?,
        "browsable trees differ"
    );
    assert_eq!(ls_json(d1)?, ls_json(d2)?, "snapshot listings differ");
    if with_trees {
        assert_eq!(
            tree_objects(d1)?,
            tree_objects(d2)?,
            "snapshot tree objects (Merkle roots) differ"
        );
    }
    assert_eq!(
        log_without_timestamps(&r1.log),
        log_without_timestamps(&r2.log),
        "audit logs differ"
    );
    assert!(!r1.log.is_empty(), "a log was written");
    Ok(())
}

#[test]
fn two_fresh_backup_roots_get_identical_trees_snapshots_and_logs() -> TestResult {
    let env = TestEnv::new()?;
    fill_source(&env)?;
    // Same basename, so the log lines' `backup/…` prefixes agree.
    let d1: PathBuf = env.root().join("one").join("backup");
    let d2: PathBuf = env.root().join("two").join("backup");
    std::fs::create_dir_all(env.root().join("one"))?;
    std::fs::create_dir_all(env.root().join("two"))?;

    let r1 = backup_to(&env, &d1)?;
    let r2 = backup_to(&env, &d2)?;
    assert_same(&d1, &d2, &r1, &r2, true)?;
    assert!(
        r1.log
            .contains("DUPLICATE: source/z/dup_a.bin → backup/_duplicates/z/dup_a.bin"),
        "the byte-smallest path wins the top level:\n{}",
        r1.log
    );

    // The same history continues identically: modify, delete, rename.
    env.write("dir1/file03.txt", "changed content")?;
    std::fs::remove_file(env.src("dir2/file10.txt"))?;
    std::fs::rename(env.src("dir4/file00.txt"), env.src("dir5/moved.txt"))?;
    env.write("brand_new.txt", "new")?;
    let r1 = backup_to(&env, &d1)?;
    let r2 = backup_to(&env, &d2)?;
    assert_same(&d1, &d2, &r1, &r2, false)?;
    assert!(
        r1.log
            .contains("ARCHIVE: backup/dir1/file03.txt → versions/dir1/file03.txt/v1.bak"),
        "{}",
        r1.log
    );
    Ok(())
}
