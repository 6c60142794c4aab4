//! `trove materialize` (SPEC §5): rebuilds the browsable tree from the
//! latest snapshot and the objects, idempotently, at the backup root or
//! elsewhere; files are hardlinks of their objects; what trove did not put
//! there is reported, or moved to `.trove/quarantine/`, never deleted.

use crate::common::*;
use crate::damage;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Three snapshots: versions, a duplicate, a deletion, an empty file, a
/// symlink, an empty directory and nested directories.
fn setup() -> Res<TestEnv> {
    let env = TestEnv::new()?;
    env.write("keep/a.txt", "kept a\n")?;
    env.write("keep/b.txt", "kept b, a little longer\n")?;
    env.write("one.txt", "one, first version\n")?;
    env.write("copy.txt", "one, first version\n")?;
    env.write("gone.txt", "gone soon\n")?;
    env.write("sub/deeper/two.txt", "two\n")?;
    env.write("empty.txt", "")?;
    std::os::unix::fs::symlink("one.txt", env.src("link"))?;
    std::fs::create_dir(env.src("emptydir"))?;
    env.backup_ok(&[])?;
    env.write("one.txt", "one, second version, longer\n")?;
    std::fs::remove_file(env.src("gone.txt"))?;
    env.backup_ok(&[])?;
    env.write("one.txt", "one, third version, the longest of all\n")?;
    env.write("sub/deeper/two.txt", "two, second version\n")?;
    env.backup_ok(&[])?;
    // The shape the tests rely on.
    for p in [
        "versions/one.txt/v1.bak",
        "versions/one.txt/v2.bak",
        "versions/sub/deeper/two.txt/v1.bak",
        "_deleted/gone.txt",
        "emptydir",
        "link",
    ] {
        assert!(
            std::fs::symlink_metadata(env.dst(p)).is_ok(),
            "{p} in the tree"
        );
    }
    Ok(env)
}

/// For every regular non-empty file under `root` (skipping the top
/// `.trove`): the object it is a hardlink of, if any.
fn links(env: &TestEnv, root: &Path) -> Res<BTreeMap<Vec<u8>, Option<PathBuf>>> {
    let mut out = BTreeMap::new();
    for (rel, node) in listing(root, true)? {
        if let Node::File(data) = node {
            if !data.is_empty() {
                let p = root.join(show(&rel));
                out.insert(rel, env.object_of(&p)?);
            }
        }
    }
    Ok(out)
}

/// Every non-empty file is a hardlink of an object.
fn assert_all_linked(links: &BTreeMap<Vec<u8>, Option<PathBuf>>) {
    let unlinked: Vec<String> = links
        .iter()
        .filter(|(_, o)| o.is_none())
        .map(|(p, _)| show(p))
        .collect();
    assert!(
        unlinked.is_empty(),
        "not hardlinks of their objects: {unlinked:?}"
    );
}

fn materialize(env: &TestEnv, args: &[&str]) -> Res<Run> {
    let mut a = vec!["materialize"];
    a.extend_from_slice(args);
    env.repo_run(&a)
}

/// `trove materialize --json ARGS…`, which must exit 0.
fn materialize_json(env: &TestEnv, args: &[&str]) -> Res<serde_json::Value> {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let r = materialize(env, &a)?;
    r.expect_code(0);
    Ok(serde_json::from_str(&r.stdout)?)
}

fn verify_ok(env: &TestEnv) -> Res<()> {
    let r = env.repo_run(&["verify"])?;
    r.expect_code(0);
    assert!(r.stdout.contains(", 0 problems"), "{}", r.stdout);
    Ok(())
}

/// A second run finds nothing to do and changes nothing under `root`.
fn assert_second_run_is_a_no_op(env: &TestEnv, root: &Path, args: &[&str]) -> Res<()> {
    let before = stat_listing(root, true)?;
    let r = materialize(env, args)?;
    r.expect_code(0);
    assert!(r.stdout.contains("nothing to do"), "{}", r.stdout);
    let diffs = stat_differences(&before, &stat_listing(root, true)?);
    assert!(
        diffs.is_empty(),
        "second run changed:\n{}",
        diffs.join("\n")
    );
    Ok(())
}

/// The one `<time>` folder under `.trove/quarantine/` and its listing.
fn quarantine(env: &TestEnv) -> Res<BTreeMap<Vec<u8>, Node>> {
    let q = env.dst(".trove/quarantine");
    let stamps: Vec<PathBuf> = std::fs::read_dir(&q)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    assert_eq!(stamps.len(), 1, "one quarantine folder per run: {stamps:?}");
    listing(&stamps[0], false)
}

fn remove_all_but_trove(root: &Path) -> Res<()> {
    for ent in std::fs::read_dir(root)? {
        let ent = ent?;
        if ent.file_name() == ".trove" {
            continue;
        }
        if ent.file_type()?.is_dir() {
            std::fs::remove_dir_all(ent.path())?;
        } else {
            std::fs::remove_file(ent.path())?;
        }
    }
    Ok(())
}

#[test]
fn rebuilds_a_deleted_tree_identically_with_hardlinks() -> TestResult {
    let env = setup()?;
    let before = env.tree()?;
    let before_links = links(&env, &env.backup)?;
    assert_all_linked(&before_links);

    remove_all_but_trove(&env.backup)?;
    assert!(env.tree()?.is_empty());
    let r = materialize(&env, &[])?;
    r.expect_code(0);
    assert!(r.stdout.contains("materialized snapshot"), "{}", r.stdout);
    assert!(!r.stdout.contains("extra:"), "{}", r.stdout);

    assert_eq!(env.tree()?, before, "same paths, types, contents, targets");
    let after_links = links(&env, &env.backup)?;
    assert_all_linked(&after_links);
    assert_eq!(after_links, before_links, "each file links the same object");
    assert!(
        !env.dst(".trove/quarantine").exists(),
        "nothing was in the way"
    );

    assert_second_run_is_a_no_op(&env, &env.backup, &[])?;
    verify_ok(&env)
}

#[test]
fn builds_the_same_tree_in_another_directory() -> TestResult {
    let env = setup()?;
    let view = env.root().join("view");
    let view_arg = view.display().to_string();
    // Link counts go up as the view links the same objects.
    let unlinked = |root: &Path| -> Res<BTreeMap<Vec<u8>, StatRow>> {
        let mut m = stat_listing(root, false)?;
        for r in m.values_mut() {
            r.nlink = 0;
        }
        Ok(m)
    };
    let root_before = unlinked(&env.backup)?;

    let r = materialize(&env, &["--target", &view_arg])?;
    r.expect_code(0);
    assert_eq!(listing(&view, false)?, env.tree()?);
    assert!(!view.join(".trove").exists());
    assert_all_linked(&links(&env, &view)?);

    // The backup root was left alone, its marker included.
    let changed = stat_differences(&root_before, &unlinked(&env.backup)?);
    assert!(changed.is_empty(), "{}", changed.join("\n"));

    assert_second_run_is_a_no_op(&env, &view, &["--target", &view_arg])?;
    verify_ok(&env)
}

#[test]
fn a_new_target_is_created_private() -> TestResult {
    let env = setup()?;
    let view = env.root().join("new/view");
    materialize(&env, &["--target", &view.display().to_string()])?.expect_code(0);
    let mode = std::fs::metadata(&view)?.mode() & 0o777;
    assert_eq!(mode, 0o700, "the view holds private files: {mode:o}");
    Ok(())
}

/// On another filesystem no hardlink can be made: the view is built from
/// copies, a second run still finds nothing to do, and an extra file
/// there is never deleted.
#[test]
fn builds_a_tree_of_copies_on_another_filesystem() -> TestResult {
    let env = setup()?;
    let shm = Path::new("/dev/shm");
    let same_fs = |p: &Path| -> bool {
        match (std::fs::metadata(p), std::fs::metadata(env.root())) {
            (Ok(a), Ok(b)) => a.dev() == b.dev(),
            _ => true,
        }
    };
    if !shm.is_dir() || same_fs(shm) {
        eprintln!("skipped: no /dev/shm on another filesystem");
        return Ok(());
    }
    let dir = tempfile::tempdir_in(shm)?;
    let view = dir.path().join("view");
    let arg = view.display().to_string();

    let j = materialize_json(&env, &["--target", &arg])?;
    assert_eq!(j["linked"], 0, "{j}");
    assert!(j["copied"].as_u64() > Some(0), "{j}");
    assert_eq!(listing(&view, false)?, env.tree()?);
    assert_second_run_is_a_no_op(&env, &view, &["--target", &arg])?;

    std::fs::write(view.join("stray.txt"), "mine")?;
    let r = materialize(&env, &["--target", &arg, "--prune-extra"])?;
    let kept = std::fs::read(view.join("stray.txt")).ok();
    let quarantined = listing(&env.dst(".trove/quarantine"), false)
        .map(|q| q.values().any(|n| *n == Node::File(b"mine".to_vec())))
        .unwrap_or(false);
    assert!(
        kept.as_deref() == Some(&b"mine"[..]) || quarantined,
        "the extra file was deleted:\n{}",
        r.stdout
    );
    Ok(())
}

#[test]
fn refuses_a_target_inside_the_repository_directory() -> TestResult {
    let env = setup()?;
    let inside = env.dst(".trove/view");
    let r = materialize(&env, &["--target", &inside.display().to_string()])?;
    r.expect_code(2);
    assert!(!inside.exists());
    Ok(())
}

#[test]
fn extra_files_are_reported_and_left_or_quarantined_never_deleted() -> TestResult {
    let env = setup()?;
    std::fs::write(env.dst("stray.txt"), "not from trove")?;
    std::fs::write(env.dst("sub/stray.txt"), "nor this")?;

    let r = materialize(&env, &[])?;
    r.expect_code(0);
    let extras: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("extra: "))
        .collect();
    assert_eq!(extras.len(), 2, "{}", r.stdout);
    assert!(extras[0].starts_with("extra: stray.txt "), "{}", r.stdout);
    assert!(
        extras[1].starts_with("extra: sub/stray.txt "),
        "{}",
        r.stdout
    );
    assert_eq!(std::fs::read(env.dst("stray.txt"))?, b"not from trove");
    assert_eq!(std::fs::read(env.dst("sub/stray.txt"))?, b"nor this");
    assert!(!env.dst(".trove/quarantine").exists());
    env.repo_run(&["verify"])?.expect_code(1);

    let j = materialize_json(&env, &["--prune-extra"])?;
    assert_eq!(j["quarantined"], 2, "{j}");
    assert!(!env.dst("stray.txt").exists());
    assert!(!env.dst("sub/stray.txt").exists());
    let q = quarantine(&env)?;
    assert_eq!(
        q.get(&b"stray.txt"[..]),
        Some(&Node::File(b"not from trove".to_vec()))
    );
    assert_eq!(
        q.get(&b"sub/stray.txt"[..]),
        Some(&Node::File(b"nor this".to_vec()))
    );
    verify_ok(&env)?;
    assert_second_run_is_a_no_op(&env, &env.backup, &[])
}

/// A whole folder trove did not make: its files go to quarantine, and so
/// must the folder, or verify still finds it and the next run has work.
#[test]
fn pruning_an_extra_folder_leaves_nothing_behind() -> TestResult {
    let env = setup()?;
    std::fs::create_dir_all(env.dst("sub/stray-dir/deeper"))?;
    std::fs::write(env.dst("sub/stray-dir/x"), "x")?;
    std::fs::write(env.dst("sub/stray-dir/deeper/y"), "y")?;

    let r = materialize(&env, &[])?;
    r.expect_code(0);
    assert!(r.stdout.contains("extra: sub/stray-dir"), "{}", r.stdout);
    assert_eq!(std::fs::read(env.dst("sub/stray-dir/x"))?, b"x");

    materialize(&env, &["--prune-extra"])?.expect_code(0);
    let q = quarantine(&env)?;
    assert_eq!(
        q.get(&b"sub/stray-dir/x"[..]),
        Some(&Node::File(b"x".to_vec()))
    );
    assert_eq!(
        q.get(&b"sub/stray-dir/deeper/y"[..]),
        Some(&Node::File(b"y".to_vec()))
    );
    assert!(
        !env.dst("sub/stray-dir").exists(),
        "the extra folder is gone from the backup root"
    );
    verify_ok(&env)?;
    assert_second_run_is_a_no_op(&env, &env.backup, &[])
}

#[test]
fn user_content_is_replaced_and_kept_in_quarantine() -> TestResult {
    let env = setup()?;
    let want = std::fs::read(env.dst("one.txt"))?;
    damage::replace_with_content(&env.dst("one.txt"), b"the user's own text")?;
    damage::replace_with_content(&env.dst("versions/one.txt/v1.bak"), b"edited")?;

    let j = materialize_json(&env, &[])?;
    assert_eq!(j["quarantined"], 2, "{j}");
    assert_eq!(std::fs::read(env.dst("one.txt"))?, want);
    assert_eq!(
        std::fs::read(env.dst("versions/one.txt/v1.bak"))?,
        b"one, first version\n"
    );
    assert_all_linked(&links(&env, &env.backup)?);
    let q = quarantine(&env)?;
    assert_eq!(
        q.get(&b"one.txt"[..]),
        Some(&Node::File(b"the user's own text".to_vec()))
    );
    assert_eq!(
        q.get(&b"versions/one.txt/v1.bak"[..]),
        Some(&Node::File(b"edited".to_vec()))
    );
    verify_ok(&env)
}

#[test]
fn a_correct_copy_is_relinked_to_its_object() -> TestResult {
    let env = setup()?;
    let obj = env
        .object_of(&env.dst("keep/b.txt"))?
        .ok_or("keep/b.txt not linked")?;
    damage::replace_with_copy(&env.dst("keep/b.txt"))?;
    assert_eq!(env.object_of(&env.dst("keep/b.txt"))?, None);

    let j = materialize_json(&env, &[])?;
    assert_eq!(j["relinked"], 1, "{j}");
    assert_eq!(j["quarantined"], 0, "{j}");
    let m = std::fs::metadata(env.dst("keep/b.txt"))?;
    assert_eq!(m.ino(), std::fs::metadata(&obj)?.ino(), "same inode again");
    assert_eq!(
        std::fs::read(env.dst("keep/b.txt"))?,
        b"kept b, a little longer\n"
    );
    assert!(!env.dst(".trove/quarantine").exists());
    verify_ok(&env)
}

#[test]
fn stale_trove_hardlinks_are_removed_not_reported_as_extra() -> TestResult {
    let env = setup()?;
    let hash = env.object_hash_of("versions/one.txt/v1.bak")?;
    damage::hardlink_object_at(&env.backup, &hash, "versions/one.txt/v99.bak")?;
    damage::hardlink_object_at(&env.backup, &hash, "versions/ghost.txt/v1.bak")?;
    env.repo_run(&["verify"])?.expect_code(1);

    let r = materialize(&env, &[])?;
    r.expect_code(0);
    assert!(!r.stdout.contains("extra:"), "{}", r.stdout);
    assert!(!env.dst("versions/one.txt/v99.bak").exists());
    assert!(
        !env.dst("versions/ghost.txt").exists(),
        "a folder left empty goes too"
    );
    assert_eq!(
        std::fs::read(env.dst("versions/one.txt/v1.bak"))?,
        b"one, first version\n"
    );
    assert!(!env.dst(".trove/quarantine").exists());
    verify_ok(&env)
}

#[test]
fn repairs_mixed_damage_then_verify_passes() -> TestResult {
    let env = setup()?;
    let before = env.tree()?;
    std::fs::remove_dir_all(env.dst("sub"))?;
    std::fs::remove_file(env.dst("_deleted/gone.txt"))?;
    std::fs::remove_file(env.dst("link"))?;
    std::os::unix::fs::symlink("elsewhere", env.dst("link"))?;
    std::fs::remove_dir(env.dst("emptydir"))?;
    std::fs::write(env.dst("emptydir"), "a file where a folder was")?;
    damage::replace_with_copy(&env.dst("copy.txt"))?;
    env.repo_run(&["verify"])?.expect_code(1);

    materialize(&env, &[])?.expect_code(0);
    assert_eq!(env.tree()?, before);
    assert_all_linked(&links(&env, &env.backup)?);
    let q = quarantine(&env)?;
    assert_eq!(
        q.get(&b"emptydir"[..]),
        Some(&Node::File(b"a file where a folder was".to_vec()))
    );
    assert_eq!(
        q.get(&b"link"[..]),
        Some(&Node::Symlink(b"elsewhere".to_vec()))
    );
    verify_ok(&env)?;
    assert_second_run_is_a_no_op(&env, &env.backup, &[])
}

#[test]
fn a_missing_object_fails_its_entry_only() -> TestResult {
    let env = setup()?;
    let hash = env.object_hash_of("keep/a.txt")?;
    damage::delete_object(&env.backup, &hash)?;
    remove_all_but_trove(&env.backup)?;

    let r = materialize(&env, &[])?;
    r.expect_code(1);
    assert!(r.stdout.contains("error: keep/a.txt: "), "{}", r.stdout);
    assert!(!env.dst("keep/a.txt").exists());
    assert_eq!(
        std::fs::read(env.dst("keep/b.txt"))?,
        b"kept b, a little longer\n"
    );
    assert_eq!(
        std::fs::read(env.dst("versions/one.txt/v2.bak"))?,
        b"one, second version, longer\n"
    );
    Ok(())
}

/// `versions/<path>/` is an implicit folder (no entry of its own in the
/// rendering); when a file stands in its place, the version files below
/// it are placed in parallel and each tries to move that file away. The
/// race is lost often but not always, so the damage is repeated.
#[test]
fn a_file_in_place_of_a_versions_folder_is_quarantined_and_all_versions_return() -> TestResult {
    let env = TestEnv::new()?;
    env.write("one.txt", "one\n")?;
    env.write("copy.txt", "one\n")?;
    env.write("gone.txt", "gone\n")?;
    env.write("sub/two.txt", "two\n")?;
    env.backup_ok(&[])?;
    env.write("one.txt", "v2\n")?;
    std::fs::remove_file(env.src("gone.txt"))?;
    env.backup_ok(&[])?;
    env.write("one.txt", "v3\n")?;
    env.backup_ok(&[])?;
    let before = env.tree()?;

    for round in 0..40 {
        std::fs::remove_dir_all(env.dst("versions/one.txt"))?;
        let user = format!("user file {round}");
        std::fs::write(env.dst("versions/one.txt"), &user)?;

        let r = materialize(&env, &[])?;
        r.expect_code(0);
        assert_eq!(env.tree()?, before, "round {round}");
        let q = listing(&env.dst(".trove/quarantine"), false)?;
        assert!(
            q.values()
                .any(|n| *n == Node::File(user.clone().into_bytes())),
            "round {round}: the user's file is in quarantine"
        );
    }
    Ok(())
}

/// A symlink where the tree has a folder: moved aside, never followed.
#[test]
fn a_symlink_in_place_of_a_folder_is_quarantined_not_followed() -> TestResult {
    let env = setup()?;
    let before = env.tree()?;
    let outside = env.root().join("outside");
    std::fs::create_dir(&outside)?;
    std::fs::remove_dir_all(env.dst("sub"))?;
    std::os::unix::fs::symlink(&outside, env.dst("sub"))?;

    materialize(&env, &[])?.expect_code(0);
    assert!(
        listing(&outside, false)?.is_empty(),
        "nothing written outside the backup root"
    );
    assert_eq!(env.tree()?, before);
    assert_eq!(
        quarantine(&env)?.get(&b"sub"[..]),
        Some(&Node::Symlink(
            outside.as_os_str().as_encoded_bytes().to_vec()
        ))
    );
    verify_ok(&env)
}

/// The same for the folders the tree only has implicitly (`versions/`,
/// `versions/<path>/`, `_deleted/`): they have no entry of their own, and
/// the files below them are looked up through the symlink.
#[test]
fn a_symlink_in_place_of_an_implicit_folder_is_not_followed() -> TestResult {
    let env = setup()?;
    let before = env.tree()?;
    let outside = env.root().join("outside");
    std::fs::create_dir_all(outside.join("one.txt"))?;
    std::fs::write(outside.join("one.txt/v1.bak"), "someone's file")?;
    std::fs::remove_dir_all(env.dst("versions"))?;
    std::os::unix::fs::symlink(&outside, env.dst("versions"))?;

    materialize(&env, &[])?.expect_code(0);
    assert_eq!(
        listing(&outside, false)?,
        [
            (b"one.txt".to_vec(), Node::Dir),
            (
                b"one.txt/v1.bak".to_vec(),
                Node::File(b"someone's file".to_vec())
            ),
        ]
        .into_iter()
        .collect(),
        "the directory outside the backup root is left as it was"
    );
    assert!(std::fs::symlink_metadata(env.dst("versions"))?.is_dir());
    assert_eq!(env.tree()?, before);
    verify_ok(&env)
}

/// The quarantine folder's name as trove makes it for a run starting at
/// `t`: local time to the second, with ` ` and `:` turned into `-`.
fn quarantine_stamp(t: jiff::Timestamp) -> String {
    t.to_zoned(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
        .replace([' ', ':'], "-")
}

/// Two runs within one second share a quarantine folder: the second must
/// not replace what the first moved there.
#[test]
fn quarantine_never_overwrites_an_earlier_quarantined_file() -> TestResult {
    let env = setup()?;
    // What an earlier run in the same second would have left, for every
    // second this run could start in.
    let now = jiff::Timestamp::now();
    let mut earlier = Vec::new();
    for s in -2..120 {
        let t = now
            .checked_add(jiff::SignedDuration::from_secs(s))
            .map_err(|e| e.to_string())?;
        let p = env
            .dst(".trove/quarantine")
            .join(quarantine_stamp(t))
            .join("stray.txt");
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, "quarantined earlier")?;
        earlier.push(p);
    }
    std::fs::write(env.dst("stray.txt"), "quarantined now")?;

    materialize(&env, &["--prune-extra"])?.expect_code(0);
    assert!(!env.dst("stray.txt").exists());
    let all = listing(&env.dst(".trove/quarantine"), false)?;
    let now_kept = all
        .values()
        .filter(|n| **n == Node::File(b"quarantined now".to_vec()))
        .count();
    assert_eq!(now_kept, 1, "the file moved now is in quarantine");
    for p in &earlier {
        assert_eq!(
            std::fs::read(p)?,
            b"quarantined earlier",
            "{} was overwritten",
            p.display()
        );
    }
    Ok(())
}

/// A first backup fills the empty browsable tree a run of entries at a
/// time (8,192), never holding the whole rendering; past a run boundary
/// and across the switch from the top level to `_duplicates/`, the tree
/// must be exactly what a whole rendering gives (`materialize --target`).
#[test]
fn a_first_backup_larger_than_one_fill_run_builds_the_whole_tree() -> TestResult {
    let env = TestEnv::new()?;
    let n = 12_000;
    for i in 0..n {
        // Every fifth file repeats an earlier content: a duplicate.
        let content = if i % 5 == 4 { i - 3 } else { i };
        env.write(
            &format!("d{:02}/s{:02}/f{i:05}.txt", i % 37, i % 11),
            format!("content {content}\n"),
        )?;
    }
    env.backup_ok(&[])?;
    let tree = env.tree()?;
    let files = tree.values().filter(|n| matches!(n, Node::File(_))).count();
    assert_eq!(files, n, "every file shown once");
    let dups = tree
        .keys()
        .filter(|k| k.starts_with(b"_duplicates/"))
        .count();
    assert!(dups > 2000, "{dups} duplicates shown");

    let view = env.root().join("view");
    materialize(&env, &["--target", &view.display().to_string()])?.expect_code(0);
    assert_eq!(env.tree()?, listing(&view, false)?);
    // verify also checks that every file is a hardlink of its object.
    verify_ok(&env)
}

/// `materialize` places a rendering of several runs (8,192 entries each)
/// without holding it, and finds what is extra by walking the disk beside
/// a second pass of the rendering: extras before, between and after the
/// runs, inside wanted folders, inside `versions/` and as whole folders
/// are all found (and with `--prune-extra` quarantined, their folders
/// removed), files removed from the tree come back, and the result is the
/// tree a backup builds.
#[test]
fn a_rendering_larger_than_one_run_is_reconciled_and_every_extra_found() -> TestResult {
    let env = TestEnv::new()?;
    let n = 10_000;
    let path = |i: usize| format!("d{:02}/s{:02}/f{i:05}.txt", i % 23, i % 7);
    for i in 0..n {
        env.write(&path(i), format!("content {i}\n"))?;
    }
    env.backup_ok(&[])?;
    for i in (0..n).step_by(97) {
        env.write(&path(i), format!("content {i}, second\n"))?;
    }
    env.backup_ok(&[])?;
    let built = env.tree()?;
    assert!(built.keys().any(|k| k.starts_with(b"versions/d22/")));

    let view = env.root().join("view");
    materialize(&env, &["--target", &view.display().to_string()])?.expect_code(0);
    assert_eq!(
        built,
        listing(&view, false)?,
        "a fresh target gets the tree"
    );

    // Damage and strays all over the backup root.
    std::fs::remove_file(env.dst(&path(0)))?;
    std::fs::remove_file(env.dst(&path(n - 1)))?;
    std::fs::remove_dir_all(env.dst("d11"))?;
    let strays = [
        "aaa-first.txt",
        "d05/s03/zz-stray.txt",
        "d11x/stray.txt",
        "versions/d03/stray.bak",
        "zzz-last/deeper/stray.txt",
    ];
    for s in strays {
        std::fs::create_dir_all(env.dst(s).parent().ok_or("no parent")?)?;
        std::fs::write(env.dst(s), s)?;
    }
    let r = materialize(&env, &[])?;
    r.expect_code(0);
    for want in [
        "aaa-first.txt",
        "d05/s03/zz-stray.txt",
        "d11x",
        "versions/d03/stray.bak",
        "zzz-last",
    ] {
        assert!(
            r.stdout.contains(&format!("extra: {want}")),
            "{want} reported: {}",
            r.stdout
        );
    }
    assert_eq!(r.stdout.matches("extra: ").count(), 5, "{}", r.stdout);
    materialize(&env, &["--prune-extra"])?.expect_code(0);
    let q = quarantine(&env)?;
    for s in strays {
        assert_eq!(
            q.get(s.as_bytes()),
            Some(&Node::File(s.as_bytes().to_vec())),
            "{s} quarantined"
        );
    }
    assert_eq!(env.tree()?, built, "the tree is whole again, strays gone");
    verify_ok(&env)?;
    assert_second_run_is_a_no_op(&env, &env.backup, &[])
}
