//! Recovery of the browsable tree, which is derived data: after a crash
//! between the snapshot commit and the end of the tree update (simulated
//! here by putting the tree and its marker back as such a crash leaves
//! them), or after the marker is lost, the next run makes the tree show the
//! latest snapshot exactly, and never deletes a file trove did not make.

use crate::common::*;

const MARKER: &str = ".trove/cache/materialized";

fn setup() -> Res<TestEnv> {
    let env = TestEnv::new()?;
    env.write("keep.txt", "keep")?;
    env.write("change.txt", "v1")?;
    env.write("gone.txt", "bye")?;
    env.write("sub/deep.txt", "deep")?;
    env.backup_ok(&[])?;
    Ok(env)
}

#[test]
fn tree_left_behind_by_a_crash_after_commit_is_caught_up() -> TestResult {
    let env = setup()?;
    let old_marker = std::fs::read_to_string(env.dst(MARKER))?;
    // Second run's changes.
    env.write("change.txt", "v2")?;
    std::fs::remove_file(env.src("gone.txt"))?;
    env.write("new.txt", "new")?;
    env.backup_ok(&[])?;
    // Now make it look as if the run died right after writing its snapshot:
    // the tree half-updated, the marker still naming the first snapshot.
    std::fs::write(env.dst(MARKER), &old_marker)?;
    std::fs::remove_file(env.dst("new.txt"))?;
    std::fs::remove_file(env.dst("versions/change.txt/v1.bak"))?;
    let before = env.snapshot_count()?;

    let r = env.backup_ok(&[])?;
    assert_eq!(
        env.snapshot_count()?,
        before,
        "nothing changed in the source"
    );
    assert!(
        r.console().contains("no changes") || r.stdout.contains("no changes"),
        "{}",
        r.stdout
    );
    assert_eq!(std::fs::read(env.dst("new.txt"))?, b"new");
    assert_eq!(std::fs::read(env.dst("change.txt"))?, b"v2");
    assert_eq!(std::fs::read(env.dst("versions/change.txt/v1.bak"))?, b"v1");
    assert_eq!(std::fs::read(env.dst("_deleted/gone.txt"))?, b"bye");
    assert!(!env.dst("gone.txt").exists());
    assert_ne!(
        std::fs::read_to_string(env.dst(MARKER))?,
        old_marker,
        "marker advanced"
    );
    Ok(())
}

#[test]
fn lost_marker_means_a_full_check_that_repairs_and_spares_foreign_files() -> TestResult {
    let env = setup()?;
    std::fs::remove_file(env.dst(MARKER))?;
    // Damage: a file gone, a file replaced by someone else's, an extra file.
    std::fs::remove_file(env.dst("sub/deep.txt"))?;
    std::fs::remove_file(env.dst("keep.txt"))?;
    std::fs::write(env.dst("keep.txt"), "someone else's edit")?;
    std::fs::write(env.dst("stray.txt"), "not from trove")?;

    env.backup_ok(&[])?;
    assert_eq!(std::fs::read(env.dst("sub/deep.txt"))?, b"deep");
    assert_eq!(std::fs::read(env.dst("keep.txt"))?, b"keep");
    // The replaced file was moved aside, not deleted; the extra one left alone.
    let quarantined = listing(&env.dst(".trove/quarantine"), false)?;
    assert!(
        quarantined.keys().any(|k| k.ends_with(b"keep.txt")),
        "someone else's keep.txt is kept in quarantine: {:?}",
        quarantined.keys().map(|k| show(k)).collect::<Vec<_>>()
    );
    assert_eq!(std::fs::read(env.dst("stray.txt"))?, b"not from trove");
    assert!(env.dst(MARKER).exists(), "marker written again");
    Ok(())
}

/// A run killed while writing leaves files in `tmp/` under the names the
/// batch queues contents by (`obj-<hex>`, `tree-<hex>`), possibly partial.
/// The next writer must never take one for a queued content: it empties
/// `tmp/` before it queues anything, so the content is written again.
#[test]
fn partial_queued_files_left_by_a_killed_run_are_never_committed() -> TestResult {
    let env = setup()?;
    let fresh = b"content the next run stores for the first time";
    let hex = blake3::hash(fresh).to_hex().to_string();
    let tmp = env.dst(".trove/tmp");
    std::fs::write(tmp.join(format!("obj-{hex}")), &fresh[..10])?;
    std::fs::write(tmp.join(format!("tree-{}", "ab".repeat(32))), b"torn")?;
    env.write("fresh.txt", fresh)?;

    env.backup_ok(&[])?;
    assert_eq!(std::fs::read(env.dst("fresh.txt"))?, fresh);
    let stored = env.dst(&format!(".trove/objects/{}/{}", &hex[..2], hex));
    assert_eq!(
        std::fs::read(&stored)?,
        fresh,
        "the object holds all its bytes"
    );
    assert!(
        !crate::damage::tree_hashes(&env.backup)?.contains(&"ab".repeat(32)),
        "a stray queued tree was moved into the store"
    );
    assert_eq!(std::fs::read_dir(&tmp)?.count(), 0, "tmp/ emptied");
    let out = env.repo_cmd(&["verify"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

/// SPEC §5: a quarantine with no free name left is a runtime failure
/// (exit 1, the message says to clean it up), not a usage error (exit 2):
/// nothing in the arguments or config is wrong.
#[test]
fn a_full_quarantine_is_a_runtime_failure_not_a_usage_error() -> TestResult {
    let env = setup()?;
    let obj = env
        .object_of(&env.dst("keep.txt"))?
        .ok_or("keep.txt is not linked to an object")?;
    let name = obj
        .file_name()
        .ok_or("object path without a name")?
        .to_string_lossy()
        .into_owned();
    // Damage the stored copy, so `--rehash` re-stores it and moves this
    // one to quarantine.
    let mut perm = std::fs::metadata(&obj)?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o600);
    std::fs::set_permissions(&obj, perm)?;
    std::fs::write(&obj, "damaged")?;
    // Every name the quarantine would try is taken.
    let q = env.dst(".trove/quarantine/objects");
    std::fs::create_dir_all(&q)?;
    for n in 0..10_000u32 {
        let file = if n == 0 {
            name.clone()
        } else {
            format!("{name}.{n}")
        };
        std::fs::write(q.join(file), "")?;
    }
    let r = env.backup(&["--rehash"])?;
    assert!(
        r.stderr.contains("clean up the quarantine folder"),
        "{}",
        r.stderr
    );
    r.expect_code(1);
    Ok(())
}
