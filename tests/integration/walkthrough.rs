//! The seed walkthrough (SPEC §1, §4): backup, modify, delete, no-change
//! rerun, plus the planner rules that are easiest to get subtly wrong.

use crate::common::{Node, TestEnv, TestResult};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

#[test]
fn seed_walkthrough_backup_modify_delete_and_no_change_rerun() -> TestResult {
    let env = TestEnv::new()?;
    env.write("one.txt", "hello world")?;
    env.write("two.txt", "two's content")?;
    env.write("one_copy.txt", "hello world")?;

    // Run 1: two contents, one duplicate.
    let r = env.backup_ok(&[])?;
    r.assert_message("BACKUP: source/one.txt → backup/one.txt");
    r.assert_message("BACKUP: source/two.txt → backup/two.txt");
    r.assert_message("DUPLICATE: source/one_copy.txt → backup/_duplicates/one_copy.txt");
    r.assert_message("Run complete");
    r.assert_message("3 copied, 0 unchanged, 3 total (24 B stored in 2 new objects)");
    assert!(
        r.stdout.contains("3 copied, 0 unchanged, 3 total"),
        "summary on stdout: {}",
        r.stdout
    );
    assert_eq!(std::fs::read(env.dst("one.txt"))?, b"hello world");
    assert_eq!(std::fs::read(env.dst("two.txt"))?, b"two's content");
    assert_eq!(
        std::fs::read(env.dst("_duplicates/one_copy.txt"))?,
        b"hello world"
    );
    assert!(
        !env.dst("one_copy.txt").exists(),
        "a duplicate is not also shown at the top"
    );
    assert_eq!(env.objects()?.len(), 2, "one object per distinct content");

    // The top-level file and its duplicate are hardlinks of one object.
    let obj = env
        .object_of(&env.dst("one.txt"))?
        .ok_or("one.txt is not a hardlink of any object")?;
    let dup_obj = env
        .object_of(&env.dst("_duplicates/one_copy.txt"))?
        .ok_or("_duplicates/one_copy.txt is not a hardlink of any object")?;
    assert_eq!(obj, dup_obj);
    assert_eq!(std::fs::read(&obj)?, b"hello world");
    let om = std::fs::metadata(&obj)?;
    assert_eq!(om.mode() & 0o222, 0, "objects are read-only");
    assert_eq!(
        std::fs::metadata(&env.backup)?.permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(env.dst(".trove"))?.permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(env.snapshot_count()?, 1);

    // Run 2: modify one.txt, add three.txt.
    env.write("one.txt", "hello again, world")?;
    env.write("three.txt", "three")?;
    let r = env.backup_ok(&[])?;
    r.assert_message("ARCHIVE: backup/one.txt → versions/one.txt/v1.bak");
    r.assert_message("UPDATED: source/one.txt → backup/one.txt");
    r.assert_message("BACKUP: source/three.txt → backup/three.txt");
    let msgs = r.messages();
    let archive = msgs
        .iter()
        .position(|m| m.starts_with("ARCHIVE: backup/one.txt"));
    let updated = msgs
        .iter()
        .position(|m| m.starts_with("UPDATED: source/one.txt"));
    assert!(archive < updated, "ARCHIVE is logged before UPDATED");
    assert_eq!(
        std::fs::read(env.dst("versions/one.txt/v1.bak"))?,
        b"hello world"
    );
    assert_eq!(std::fs::read(env.dst("one.txt"))?, b"hello again, world");
    assert_eq!(std::fs::read(env.dst("three.txt"))?, b"three");
    assert_eq!(
        std::fs::read(env.dst("_duplicates/one_copy.txt"))?,
        b"hello world",
        "the duplicate keeps its own content"
    );
    assert_eq!(env.snapshot_count()?, 2);

    // Run 3: delete two.txt.
    std::fs::remove_file(env.src("two.txt"))?;
    let r = env.backup_ok(&[])?;
    r.assert_message("ARCHIVE DELETE: backup/two.txt → backup/_deleted/two.txt");
    r.assert_message("STATE REMOVE: source/two.txt");
    assert!(
        !env.dst("two.txt").exists(),
        "a deleted file leaves the top"
    );
    assert_eq!(
        std::fs::read(env.dst("_deleted/two.txt"))?,
        b"two's content"
    );
    assert_eq!(env.snapshot_count()?, 3);

    // Run 4: nothing changed: no snapshot, same tree.
    let before = env.tree()?;
    let r = env.backup_ok(&[])?;
    assert_eq!(
        env.snapshot_count()?,
        3,
        "a no-change run writes no snapshot"
    );
    assert!(
        !r.messages().iter().any(|m| m.starts_with("BACKUP:")
            || m.starts_with("ARCHIVE")
            || m.starts_with("UPDATED:")),
        "a no-change run plans nothing:\n{}",
        r.log
    );
    r.assert_message("0 copied, 3 unchanged, 3 total (0 B stored in 0 new objects)");
    assert_eq!(env.tree()?, before);

    // --always-snapshot writes one anyway.
    env.backup_ok(&["--always-snapshot"])?;
    assert_eq!(env.snapshot_count()?, 4);
    Ok(())
}

#[test]
fn mtime_only_change_is_not_a_new_version() -> TestResult {
    let env = TestEnv::new()?;
    env.write("one.txt", "same bytes")?;
    env.backup_ok(&[])?;
    let f = std::fs::File::options()
        .write(true)
        .open(env.src("one.txt"))?;
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))?;
    drop(f);
    let r = env.backup_ok(&[])?;
    assert!(
        !r.messages()
            .iter()
            .any(|m| m.starts_with("ARCHIVE") || m.starts_with("UPDATED")),
        "touch must not archive a version:\n{}",
        r.log
    );
    assert!(!env.dst("versions").exists(), "no versions/ after a touch");
    assert_eq!(std::fs::read(env.dst("one.txt"))?, b"same bytes");
    assert!(
        r.stdout.contains("0 copied, 1 unchanged, 1 total"),
        "{}",
        r.stdout
    );
    Ok(())
}

#[test]
fn rename_stores_no_new_object() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a/report.txt", "quarterly numbers")?;
    env.write("other.txt", "something else")?;
    env.backup_ok(&[])?;
    let objects_before = env.objects()?;
    std::fs::create_dir(env.src("b"))?;
    std::fs::rename(env.src("a/report.txt"), env.src("b/renamed.txt"))?;
    let r = env.backup_ok(&[])?;
    assert_eq!(env.objects()?, objects_before, "a rename stores no object");
    r.assert_message("ARCHIVE DELETE: backup/a/report.txt → backup/_deleted/a/report.txt");
    assert!(
        r.log.contains("source/b/renamed.txt"),
        "the new path is logged:\n{}",
        r.log
    );
    let shown = [
        env.dst("b/renamed.txt"),
        env.dst("_duplicates/b/renamed.txt"),
    ];
    let present: Vec<_> = shown.iter().filter(|p| p.exists()).collect();
    assert_eq!(present.len(), 1, "renamed file shown exactly once");
    assert_eq!(std::fs::read(present[0])?, b"quarterly numbers");
    assert!(
        r.stdout.contains("0 B stored in 0 new objects"),
        "{}",
        r.stdout
    );
    Ok(())
}

#[test]
fn delete_recreate_delete_keeps_both_contents() -> TestResult {
    let env = TestEnv::new()?;
    env.write("keep.txt", "anchor")?;
    env.write("x.txt", "first life")?;
    env.backup_ok(&[])?;
    std::fs::remove_file(env.src("x.txt"))?;
    env.backup_ok(&[])?;
    assert_eq!(std::fs::read(env.dst("_deleted/x.txt"))?, b"first life");
    env.write("x.txt", "second life")?;
    env.backup_ok(&[])?;
    assert_eq!(std::fs::read(env.dst("x.txt"))?, b"second life");
    std::fs::remove_file(env.src("x.txt"))?;
    env.backup_ok(&[])?;

    assert_eq!(
        std::fs::read(env.dst("_deleted/x.txt"))?,
        b"second life",
        "the latest deleted content is in _deleted/"
    );
    let mut versions = Vec::new();
    if env.dst("versions/x.txt").is_dir() {
        for e in std::fs::read_dir(env.dst("versions/x.txt"))? {
            versions.push(std::fs::read(e?.path())?);
        }
    }
    assert_eq!(
        versions,
        vec![b"first life".to_vec()],
        "the older deleted content is kept under versions/x.txt/"
    );
    Ok(())
}

#[test]
fn empty_files_are_created_not_hardlinked() -> TestResult {
    let env = TestEnv::new()?;
    env.write("empty1", "")?;
    env.write("empty2", "")?;
    env.write("sub/empty3", "")?;
    env.backup_ok(&[])?;
    let tree = env.tree()?;
    // Empty files are never duplicates (planner rule): each is at the top.
    for p in ["empty1", "empty2", "sub/empty3"] {
        assert_eq!(
            tree.get(p.as_bytes()),
            Some(&Node::File(Vec::new())),
            "{p} in {:?}",
            tree.keys()
                .map(|k| crate::common::show(k))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            std::fs::metadata(env.dst(p))?.nlink(),
            1,
            "{p} is not linked"
        );
    }
    Ok(())
}

#[test]
fn several_sources_get_one_folder_each_with_unique_names() -> TestResult {
    let env = TestEnv::new()?;
    let a = env.root().join("a").join("docs");
    let b = env.root().join("b").join("docs");
    let pics = env.root().join("pics");
    for d in [&a, &b, &pics] {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(a.join("x.txt"), "from a")?;
    std::fs::write(b.join("x.txt"), "from b")?;
    std::fs::write(pics.join("p.jpg"), "picture")?;
    std::fs::write(pics.join("copy.txt"), "from a")?;
    let out = env
        .cmd()?
        .arg("backup")
        .args([&a, &b, &pics])
        .arg(&env.backup)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<(String, String)> = env
        .tree()?
        .into_iter()
        .filter_map(|(p, n)| match n {
            Node::File(d) => Some((crate::common::show(&p), crate::common::show(&d))),
            _ => None,
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("_duplicates/pics/copy.txt", "from a"),
        ("docs/x.txt", "from a"),
        ("docs_2/x.txt", "from b"),
        ("pics/p.jpg", "picture"),
    ]
    .iter()
    .map(|(p, c)| (p.to_string(), c.to_string()))
    .collect();
    assert_eq!(files, want);
    Ok(())
}

#[test]
fn reserved_top_level_names_are_escaped_and_never_overwrite_trove_folders() -> TestResult {
    let env = TestEnv::new()?;
    env.write("versions", "a file called versions")?;
    env.write("_duplicates/f.txt", "in a folder called _duplicates")?;
    env.write("_deleted/g.txt", "in a folder called _deleted")?;
    env.write("one.txt", "one")?;
    env.backup_ok(&[])?;
    env.write("one.txt", "one, edited")?;
    std::fs::remove_file(env.src("_deleted/g.txt"))?;
    let r = env.backup_ok(&[])?;
    assert!(
        r.log.contains("RESERVED NAME"),
        "escapes are logged:\n{}",
        r.log
    );
    let tree = env.tree()?;
    let file = |p: &str| tree.get(p.as_bytes()).cloned();
    assert_eq!(
        file("_versions"),
        Some(Node::File(b"a file called versions".to_vec()))
    );
    assert_eq!(
        file("__duplicates/f.txt"),
        Some(Node::File(b"in a folder called _duplicates".to_vec()))
    );
    assert_eq!(
        file("versions/one.txt/v1.bak"),
        Some(Node::File(b"one".to_vec())),
        "trove's versions/ is intact"
    );
    assert_eq!(
        file("_deleted/_deleted/g.txt"),
        Some(Node::File(b"in a folder called _deleted".to_vec())),
        "the deleted file of the source's _deleted/ is under trove's _deleted/"
    );
    Ok(())
}

#[test]
fn file_replaced_by_directory_and_back_loses_nothing() -> TestResult {
    let env = TestEnv::new()?;
    env.write("x", "x as a file")?;
    env.backup_ok(&[])?;
    std::fs::remove_file(env.src("x"))?;
    env.write("x/inner.txt", "inside x")?;
    env.backup_ok(&[])?;
    assert_eq!(std::fs::read(env.dst("x/inner.txt"))?, b"inside x");
    std::fs::remove_dir_all(env.src("x"))?;
    env.write("x", "x as a file again")?;
    env.backup_ok(&[])?;
    assert_eq!(std::fs::read(env.dst("x"))?, b"x as a file again");

    let contents: Vec<Vec<u8>> = env
        .tree()?
        .into_values()
        .filter_map(|n| match n {
            Node::File(d) => Some(d),
            _ => None,
        })
        .collect();
    for want in [&b"x as a file"[..], b"inside x", b"x as a file again"] {
        assert!(
            contents.iter().any(|c| c == want),
            "{:?} is still in the tree",
            crate::common::show(want)
        );
    }
    Ok(())
}

#[test]
fn retention_keeps_the_newest_versions_and_numbers_never_restart() -> TestResult {
    let env = TestEnv::new()?;
    std::fs::write(
        env.root().join("config.json"),
        r#"{"sources": ["./source"], "backup_root": "./backup",
            "retention": {"max_versions_per_file": 2}}"#,
    )?;
    let mut logs = String::new();
    for i in 0..5 {
        env.write("f.txt", format!("content {i}"))?;
        let before = crate::common::list_logs(&env.log_dir());
        env.cmd()?.arg("backup").assert().success();
        for p in crate::common::list_logs(&env.log_dir()).difference(&before) {
            logs.push_str(&std::fs::read_to_string(p)?);
        }
    }
    let versions: Vec<String> = env
        .tree()?
        .into_iter()
        .filter(|(p, _)| p.starts_with(b"versions/"))
        .filter_map(|(p, n)| match n {
            Node::File(d) => Some(format!(
                "{}={}",
                crate::common::show(&p),
                crate::common::show(&d)
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        versions,
        vec![
            "versions/f.txt/v3.bak=content 2",
            "versions/f.txt/v4.bak=content 3"
        ]
    );
    let msgs = crate::common::log_messages(&logs);
    for v in ["v1", "v2"] {
        let line = format!("RETENTION delete: versions/f.txt/{v}.bak");
        assert!(msgs.contains(&line), "missing {line:?} in\n{logs}");
    }
    // After a deletion and a re-creation, numbering goes on.
    std::fs::remove_file(env.src("f.txt"))?;
    env.cmd()?.arg("backup").assert().success();
    env.write("f.txt", "content 5")?;
    env.cmd()?.arg("backup").assert().success();
    env.write("f.txt", "content 6")?;
    env.cmd()?.arg("backup").assert().success();
    assert!(
        !env.dst("versions/f.txt/v1.bak").exists(),
        "numbers never restart at v1"
    );
    assert_eq!(std::fs::read(env.dst("f.txt"))?, b"content 6");
    Ok(())
}

#[test]
fn same_size_rewrite_with_restored_mtime_is_detected() -> TestResult {
    let env = TestEnv::new()?;
    env.write("f.txt", "AAAA")?;
    env.backup_ok(&[])?;
    let mtime = std::fs::metadata(env.src("f.txt"))?.modified()?;
    let f = std::fs::File::options()
        .write(true)
        .open(env.src("f.txt"))?;
    std::io::Write::write_all(&mut &f, b"BBBB")?;
    f.set_modified(mtime)?;
    drop(f);
    assert_eq!(std::fs::metadata(env.src("f.txt"))?.modified()?, mtime);
    let r = env.backup_ok(&[])?;
    r.assert_message("UPDATED: source/f.txt → backup/f.txt");
    assert_eq!(std::fs::read(env.dst("f.txt"))?, b"BBBB");
    assert_eq!(std::fs::read(env.dst("versions/f.txt/v1.bak"))?, b"AAAA");
    Ok(())
}

#[test]
fn deleting_the_stat_cache_makes_a_run_slower_never_wrong() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", "a")?;
    env.write("b.txt", "b")?;
    env.backup_ok(&[])?;
    std::fs::remove_dir_all(env.dst(".trove/cache"))?;
    let tree = env.tree()?;
    let r = env.backup_ok(&[])?;
    assert!(r.stdout.contains("no changes"), "{}", r.stdout);
    assert_eq!(env.tree()?, tree);
    assert_eq!(env.snapshot_count()?, 1);
    env.write("a.txt", "A")?;
    std::fs::remove_dir_all(env.dst(".trove/cache"))?;
    let r = env.backup_ok(&[])?;
    r.assert_message("UPDATED: source/a.txt → backup/a.txt");
    let r = env.backup_ok(&["--rehash"])?;
    assert!(r.stdout.contains("no changes"), "{}", r.stdout);
    Ok(())
}

/// Every tree object in the repository, by id.
fn tree_files(env: &TestEnv) -> crate::common::Res<std::collections::BTreeSet<String>> {
    crate::damage::tree_hashes(&env.backup)
}

/// The tree pack files of the repository.
fn pack_files(env: &TestEnv) -> crate::common::Res<std::collections::BTreeSet<std::path::PathBuf>> {
    Ok(crate::damage::tree_packs(&env.backup)?
        .into_iter()
        .map(|(p, _, _)| p)
        .collect())
}

#[test]
fn changing_one_file_writes_only_the_trees_on_its_path() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a/b/c/deep.txt", "v1")?;
    for d in 0..30 {
        env.write(&format!("other{d}/sub/f.txt"), format!("{d}"))?;
    }
    env.backup_ok(&[])?;
    let before = tree_files(&env)?;
    let packs_before = pack_files(&env)?;
    env.write("a/b/c/deep.txt", "v2")?;
    env.backup_ok(&[])?;
    let added: Vec<_> = tree_files(&env)?.difference(&before).cloned().collect();
    // All of them in one new file: the run's tree pack.
    let new_packs: Vec<_> = pack_files(&env)?
        .difference(&packs_before)
        .cloned()
        .collect();
    assert_eq!(new_packs.len(), 1, "{new_packs:?}");
    // The source trees of /, a, a/b, a/b/c, and the archive trees on the
    // same path (the old content became versions/a/b/c/deep.txt/v1.bak):
    // eight at most, whatever the 60 other directories.
    assert!(
        !added.is_empty() && added.len() <= 8,
        "{} new tree objects: {added:?}",
        added.len()
    );
    Ok(())
}
