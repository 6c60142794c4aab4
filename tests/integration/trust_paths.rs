//! Issue 13, defect 2 and parts 13d/13e: nothing outside BACKUP_ROOT is
//! ever touched, and a browsable tree left incomplete is said to be so.
//!
//! Each defect-2 test plants a symlink to a folder outside the backup root
//! at one component of the path an operation of the browsable tree works
//! on (create a file, create a folder, remove a file, remove an emptied
//! folder, archive into `versions/`, move into `_deleted/`, link into
//! `_duplicates/`, prune a `versions/` entry), then checks that the outside
//! folder is unchanged (names, contents, inodes, times), that the symlink
//! itself went to `.trove/quarantine/`, and that the backup ends whole:
//! `verify` exits 0 and the tree equals a fresh `materialize` of the
//! snapshot.

use crate::common::*;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A folder outside the backup root with a life of its own, and what it
/// held when the test planted its symlink.
struct Outside {
    dir: PathBuf,
    contents: BTreeMap<Vec<u8>, Node>,
    stats: BTreeMap<Vec<u8>, StatRow>,
}

impl Outside {
    /// `ROOT/outside/` holding `names` (files with their own bytes; a
    /// trailing `/` makes an empty folder) and a few more entries.
    fn new(env: &TestEnv, names: &[&str]) -> Res<Outside> {
        let dir = env.root().join("outside");
        std::fs::create_dir_all(dir.join("nested"))?;
        std::fs::write(dir.join("nested/deep.txt"), b"outside deep")?;
        std::fs::write(dir.join("other.txt"), b"outside other")?;
        std::fs::create_dir_all(dir.join("emptydir"))?;
        for n in names {
            match n.strip_suffix('/') {
                Some(d) => std::fs::create_dir_all(dir.join(d))?,
                None => {
                    let p = dir.join(n);
                    if let Some(parent) = p.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::write(p, format!("outside's own {n}"))?;
                }
            }
        }
        Ok(Outside {
            contents: listing(&dir, false)?,
            stats: stat_listing(&dir, false)?,
            dir,
        })
    }

    /// Replace `BACKUP_ROOT/rel` (moved aside, out of the backup root) by
    /// a symlink to this folder.
    fn plant_at(&self, env: &TestEnv, rel: &str) -> TestResult {
        let at = env.dst(rel);
        if std::fs::symlink_metadata(&at).is_ok() {
            let aside = env.root().join(format!("aside-{}", rel.replace('/', "-")));
            std::fs::rename(&at, aside)?;
        }
        std::os::unix::fs::symlink(&self.dir, &at)?;
        Ok(())
    }

    /// Nothing in the folder was created, removed, replaced or written.
    fn assert_untouched(&self, what: &str) -> TestResult {
        let diffs = stat_differences(&self.stats, &stat_listing(&self.dir, false)?);
        assert!(
            diffs.is_empty(),
            "{what} touched the folder outside the backup root:\n{}",
            diffs.join("\n")
        );
        assert_eq!(
            listing(&self.dir, false)?,
            self.contents,
            "{what} changed contents outside the backup root"
        );
        Ok(())
    }
}

/// `verify` exits 0, the tree equals a fresh `materialize --target` of the
/// latest snapshot, and the planted symlink at `rel` was moved (itself,
/// not its target) into `.trove/quarantine/`.
fn assert_whole(env: &TestEnv, outside: &Outside, rel: &str) -> TestResult {
    let v = env.repo_run(&["verify"])?;
    assert_eq!(v.code, Some(0), "verify after the run:\n{}", v.console());
    let fresh = env.root().join("fresh");
    let _ = std::fs::remove_dir_all(&fresh);
    let m = env.repo_run(&["materialize", "--target", path_str(&fresh)?])?;
    assert_eq!(m.code, Some(0), "materialize --target:\n{}", m.console());
    assert_eq!(
        env.tree()?,
        listing(&fresh, false)?,
        "the browsable tree differs from a fresh rendering of the snapshot"
    );
    let mut found = false;
    walk_below(&env.dst(".trove/quarantine"), false, &mut |r, p, m| {
        if r.ends_with(rel.as_bytes()) && m.file_type().is_symlink() {
            found |= std::fs::read_link(p)? == outside.dir;
        }
        Ok(())
    })?;
    assert!(found, "the symlink at {rel} is not in .trove/quarantine/");
    Ok(())
}

fn path_str(p: &Path) -> Res<&str> {
    p.to_str().ok_or_else(|| "non-UTF-8 temp path".into())
}

// ---------------------------------------------------------------------------
// Defect 2: one test per operation on the browsable tree

#[test]
fn creating_a_file_never_follows_a_symlinked_folder_out_of_the_root() -> TestResult {
    let env = TestEnv::new()?;
    env.write("sub/a.txt", b"a")?;
    env.write("sub/keep.txt", b"keep")?;
    env.backup_ok(&[])?;
    let outside = Outside::new(&env, &["new.txt"])?;
    outside.plant_at(&env, "sub")?;
    env.write("sub/new.txt", b"new")?;
    env.write("sub/a.txt", b"a changed")?;
    env.backup_ok(&[])?;
    outside.assert_untouched("a backup creating sub/new.txt")?;
    assert_whole(&env, &outside, "sub")
}

#[test]
fn creating_a_folder_never_follows_a_symlinked_folder_out_of_the_root() -> TestResult {
    let env = TestEnv::new()?;
    env.write("top/sub/a.txt", b"a")?;
    env.backup_ok(&[])?;
    let outside = Outside::new(&env, &["newdir/", "made/"])?;
    outside.plant_at(&env, "top/sub")?;
    env.write("top/sub/newdir/inner.txt", b"inner")?;
    std::fs::create_dir_all(env.src("top/sub/made"))?;
    env.backup_ok(&[])?;
    outside.assert_untouched("a backup creating top/sub/newdir/")?;
    assert_whole(&env, &outside, "top/sub")
}

#[test]
fn removing_a_file_never_follows_a_symlinked_folder_out_of_the_root() -> TestResult {
    // The reproduction: the outside old.txt went to quarantine.
    let env = TestEnv::new()?;
    env.write("sub/old.txt", b"old")?;
    env.write("sub/keep.txt", b"keep")?;
    env.backup_ok(&[])?;
    let outside = Outside::new(&env, &["old.txt"])?;
    outside.plant_at(&env, "sub")?;
    std::fs::remove_file(env.src("sub/old.txt"))?;
    env.backup_ok(&[])?;
    outside.assert_untouched("a backup removing sub/old.txt")?;
    assert_whole(&env, &outside, "sub")
}

#[test]
fn removing_an_emptied_folder_never_follows_a_symlinked_folder_out_of_the_root() -> TestResult {
    // The outside `d/` is empty, like the folder trove removes: it used to
    // be deleted through the symlink.
    let env = TestEnv::new()?;
    env.write("a/b/d/x.txt", b"x")?;
    env.write("a/b/keep.txt", b"keep")?;
    env.backup_ok(&[])?;
    let outside = Outside::new(&env, &["d/"])?;
    outside.plant_at(&env, "a/b")?;
    std::fs::remove_dir_all(env.src("a/b/d"))?;
    env.backup_ok(&[])?;
    outside.assert_untouched("a backup removing a/b/d/")?;
    assert_whole(&env, &outside, "a/b")
}

#[test]
fn archiving_into_versions_never_follows_a_symlinked_folder_out_of_the_root() -> TestResult {
    let env = TestEnv::new()?;
    env.write("f.txt", b"one")?;
    env.backup_ok(&[])?;
    env.write("f.txt", b"two")?;
    env.backup_ok(&[])?;
    assert!(env.dst("versions/f.txt/v1.bak").exists());
    let outside = Outside::new(&env, &["v1.bak", "v2.bak"])?;
    outside.plant_at(&env, "versions/f.txt")?;
    env.write("f.txt", b"three")?;
    env.backup_ok(&[])?;
    outside.assert_untouched("a backup archiving f.txt as v2.bak")?;
    assert_whole(&env, &outside, "versions/f.txt")
}

#[test]
fn moving_into_deleted_never_follows_a_symlinked_folder_out_of_the_root() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", b"a")?;
    env.write("b.txt", b"b")?;
    env.backup_ok(&[])?;
    std::fs::remove_file(env.src("a.txt"))?;
    env.backup_ok(&[])?;
    assert!(env.dst("_deleted/a.txt").exists());
    let outside = Outside::new(&env, &["a.txt", "b.txt"])?;
    outside.plant_at(&env, "_deleted")?;
    std::fs::remove_file(env.src("b.txt"))?;
    env.backup_ok(&[])?;
    outside.assert_untouched("a backup moving b.txt into _deleted/")?;
    assert_whole(&env, &outside, "_deleted")
}

#[test]
fn linking_a_duplicate_never_follows_a_symlinked_folder_out_of_the_root() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", b"same")?;
    env.write("a_copy.txt", b"same")?;
    env.backup_ok(&[])?;
    assert!(env.dst("_duplicates/a_copy.txt").exists());
    let outside = Outside::new(&env, &["a_copy.txt", "b_copy.txt"])?;
    outside.plant_at(&env, "_duplicates")?;
    env.write("b_copy.txt", b"same")?;
    env.backup_ok(&[])?;
    outside.assert_untouched("a backup linking _duplicates/b_copy.txt")?;
    assert_whole(&env, &outside, "_duplicates")
}

#[test]
fn pruning_a_version_never_follows_a_symlinked_folder_out_of_the_root() -> TestResult {
    let env = TestEnv::new()?;
    let config = |max: u32| -> TestResult {
        let cfg = serde_json::json!({
            "sources": ["./source"],
            "backup_root": "./backup",
            "retention": {"max_versions_per_file": max},
        });
        std::fs::write(env.root().join("config.json"), cfg.to_string())?;
        Ok(())
    };
    config(10)?;
    for gen in ["one", "two", "three"] {
        env.write("f.txt", gen)?;
        env.run_in(&[OsStr::new("backup")], &env.log_dir())?
            .expect_code(0);
    }
    assert!(env.dst("versions/f.txt/v2.bak").exists());
    let outside = Outside::new(&env, &["v1.bak", "v2.bak"])?;
    outside.plant_at(&env, "versions/f.txt")?;
    config(1)?;
    env.run_in(&[OsStr::new("prune")], &env.log_dir())?
        .expect_code(0);
    outside.assert_untouched("a prune removing versions/f.txt/v1.bak")?;
    assert_whole(&env, &outside, "versions/f.txt")
}

// ---------------------------------------------------------------------------
// 13e: a partial update after a quarantine

/// The snapshot the browsable tree is recorded as showing, if any.
fn marker(env: &TestEnv) -> Option<String> {
    std::fs::read_to_string(env.dst(".trove/cache/materialized"))
        .ok()
        .map(|s| s.trim().to_string())
}

#[test]
fn an_update_after_a_quarantine_completes_the_tree_it_exposed() -> TestResult {
    // A file of the user's own stands where the folder `sub` was: moving it
    // to quarantine leaves `sub/` without the entries no change named.
    let env = TestEnv::new()?;
    env.write("sub/a.txt", b"a")?;
    env.write("sub/keep.txt", b"keep")?;
    env.write("sub/deeper/k.txt", b"k")?;
    env.backup_ok(&[])?;
    std::fs::remove_dir_all(env.dst("sub"))?;
    std::fs::write(env.dst("sub"), b"the user's own file")?;
    env.write("sub/a.txt", b"a changed")?;
    env.backup_ok(&[])?;
    let v = env.repo_run(&["verify"])?;
    assert_eq!(v.code, Some(0), "verify after the run:\n{}", v.console());
    let ids = env.snapshot_ids()?;
    assert_eq!(marker(&env).as_deref(), ids.last().map(|i| i.1.as_str()));
    Ok(())
}

#[test]
fn an_update_that_cannot_complete_after_a_quarantine_keeps_the_marker_and_says_so() -> TestResult {
    let env = TestEnv::new()?;
    env.write("sub/a.txt", b"a")?;
    env.write("sub/keep.txt", b"keep")?;
    env.backup_ok(&[])?;
    let before = marker(&env);
    assert!(before.is_some(), "a first backup records its tree");
    std::fs::remove_dir_all(env.dst("sub"))?;
    std::fs::write(env.dst("sub"), b"the user's own file")?;
    env.write("sub/a.txt", b"a changed")?;
    // Every hardlink fails: the folder is re-made, its files cannot be.
    let o = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null"])
        .args(["-e", "inject=link,linkat:error=EIO"])
        .arg(trove_bin())
        .current_dir(env.root())
        .env_remove("TROVE_REPO")
        .arg("backup")
        .arg(&env.source)
        .arg(&env.backup)
        .output();
    let o = match o {
        Ok(o) => o,
        Err(e) => {
            eprintln!("skipped: strace cannot run here ({e})");
            return Ok(());
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "a partial update exits 1:\n{text}"
    );
    assert_ne!(
        marker(&env),
        env.snapshot_ids()?.last().map(|i| i.1.clone()),
        "the marker must not claim the new snapshot:\n{text}"
    );
    assert!(
        text.contains("sub/keep.txt") && text.contains("trove materialize"),
        "the message names what is incomplete and what to do:\n{text}"
    );
    // The next run completes it.
    let r = env.backup(&[])?;
    r.expect_code(0);
    let v = env.repo_run(&["verify"])?;
    assert_eq!(
        v.code,
        Some(0),
        "verify after the next run:\n{}",
        v.console()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// 13d: out of inodes while updating the browsable tree

/// Unmounts on drop, so a failing assertion never leaves a mount behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn running_out_of_inodes_in_the_browsable_tree_says_the_snapshot_has_the_files() -> TestResult {
    let env = TestEnv::new()?;
    // Empty files cost the store nothing but take one inode each in the
    // browsable tree (they are never hardlinked).
    for i in 0..100 {
        env.write(&format!("e{i:03}"), b"")?;
    }
    env.write("top.txt", b"hello")?;
    let fs = env.root().join("fs");
    std::fs::create_dir(&fs)?;
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m,nr_inodes=64", "trove-test"])
        .arg(&fs)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here (not root, or no permission)");
        return Ok(());
    }
    let _m = Mount(fs.clone());
    let backup = fs.join("backup");
    let args = [
        OsStr::new("backup"),
        env.source.as_os_str(),
        backup.as_os_str(),
    ];
    let r = env.run_in(&args, &backup.join(".trove/logs"))?;
    let text = r.console();
    assert_eq!(r.code, Some(1), "an incomplete tree exits 1:\n{text}");
    assert!(
        !text.contains("could not be backed up"),
        "every file is in the snapshot; the message must not say otherwise:\n{text}"
    );
    assert!(
        text.contains("committed") && text.contains("trove materialize"),
        "the message says the snapshot holds the files and how to complete the tree:\n{text}"
    );
    assert!(
        text.contains("No space left on device"),
        "the message says why:\n{text}"
    );
    // The snapshot has every file.
    let ls = Command::new(trove_bin())
        .arg("--repo")
        .arg(&backup)
        .args(["ls", "latest"])
        .output()?;
    let listed = String::from_utf8_lossy(&ls.stdout);
    assert!(
        listed.contains("e099") && listed.contains("top.txt"),
        "{listed}"
    );
    // Space freed: `trove materialize` completes the tree.
    let st = Command::new("mount")
        .args(["-o", "remount,nr_inodes=4096"])
        .arg(&fs)
        .status()?;
    assert!(st.success(), "remount with more inodes");
    let repo = |args: &[&str]| -> Res<std::process::Output> {
        Ok(Command::new(trove_bin())
            .arg("--repo")
            .arg(&backup)
            .args(args)
            .output()?)
    };
    let m = repo(&["materialize"])?;
    assert_eq!(m.status.code(), Some(0), "{m:?}");
    let v = repo(&["verify"])?;
    assert_eq!(v.status.code(), Some(0), "{v:?}");
    Ok(())
}
