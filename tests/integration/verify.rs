//! `trove verify` (SPEC §5): every snapshot decodes, every tree and object
//! it references exists and hashes to its name, the browsable tree shows
//! the latest snapshot; each problem is named (kind, object or path, the
//! snapshots affected), the run exits 1, and nothing is repaired or
//! otherwise touched.

use crate::common::*;
use crate::damage;
use std::collections::BTreeSet;

/// One `problem:` line of the human output, with its `used by` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    kind: String,
    subject: String,
    message: String,
    snapshots: Vec<String>,
    used_by: Vec<String>,
}

const KINDS: [&str; 7] = [
    "snapshot",
    "missing tree",
    "corrupt tree",
    "missing object",
    "corrupt object",
    "object size",
    "browsable",
];

fn parse_problems(stdout: &str) -> Res<Vec<Problem>> {
    let mut out: Vec<Problem> = Vec::new();
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("problem: ") {
            let kind = KINDS
                .iter()
                .find(|k| rest.starts_with(&format!("{k} ")))
                .ok_or_else(|| format!("problem of unknown kind: {line}"))?;
            let rest = &rest[kind.len() + 1..];
            let (subject, rest) = rest
                .split_once(": ")
                .ok_or_else(|| format!("problem without a message: {line}"))?;
            let (message, snapshots) = match rest.rsplit_once(" [snapshots: ") {
                Some((m, s)) if s.ends_with(']') => (
                    m.to_string(),
                    s.trim_end_matches(']')
                        .split(", ")
                        .map(str::to_string)
                        .collect(),
                ),
                _ => (rest.to_string(), Vec::new()),
            };
            out.push(Problem {
                kind: kind.to_string(),
                subject: subject.to_string(),
                message,
                snapshots,
                used_by: Vec::new(),
            });
        } else if let Some(p) = line.strip_prefix("    used by ") {
            out.last_mut()
                .ok_or_else(|| format!("`used by` before any problem: {line}"))?
                .used_by
                .push(p.to_string());
        }
    }
    Ok(out)
}

/// `(N, M)` of the final `verify: N objects, M problems` line.
fn parse_totals(stdout: &str) -> Res<(u64, u64)> {
    let last = stdout
        .lines()
        .last()
        .ok_or("verify printed nothing")?
        .to_string();
    let rest = last
        .strip_prefix("verify: ")
        .ok_or_else(|| format!("last line is not the verify total: {last:?}"))?;
    let (n, rest) = rest
        .split_once(" objects, ")
        .ok_or_else(|| format!("bad total line {last:?}"))?;
    let m = rest
        .strip_suffix(" problems")
        .ok_or_else(|| format!("bad total line {last:?}"))?;
    Ok((n.parse()?, m.parse()?))
}

/// A verify run, its problems and totals.
struct Verified {
    run: Run,
    problems: Vec<Problem>,
    objects: u64,
}

fn verify(env: &TestEnv, extra: &[&str]) -> Res<Verified> {
    let mut args = vec!["verify"];
    args.extend_from_slice(extra);
    let run = env.repo_run(&args)?;
    let problems = parse_problems(&run.stdout)?;
    let (objects, m) = parse_totals(&run.stdout)?;
    assert_eq!(
        m,
        problems.len() as u64,
        "the total counts the problem lines:\n{}",
        run.stdout
    );
    Ok(Verified {
        run,
        problems,
        objects,
    })
}

/// Verify must exit 1 and report exactly one problem; return it.
fn single_problem(env: &TestEnv) -> Res<Problem> {
    let v = verify(env, &[])?;
    v.run.expect_code(1);
    assert_eq!(
        v.problems.len(),
        1,
        "exactly one problem expected:\n{}",
        v.run.stdout
    );
    Ok(v.problems[0].clone())
}

/// A repository with three snapshots: modifications, a duplicate, a
/// deletion, an empty file, and a directory (`keep/`) that never changes,
/// so its tree object is shared by all three.
struct Fixture {
    env: TestEnv,
    /// Every distinct content the test wrote.
    contents: BTreeSet<Vec<u8>>,
    /// Tree objects that existed after the first backup.
    first_trees: BTreeSet<String>,
}

impl Fixture {
    fn write(&mut self, rel: &str, data: &str) -> Res<()> {
        self.contents.insert(data.as_bytes().to_vec());
        self.env.write(rel, data)
    }

    fn new() -> Res<Fixture> {
        let mut f = Fixture {
            env: TestEnv::new()?,
            contents: BTreeSet::new(),
            first_trees: BTreeSet::new(),
        };
        f.write("keep/a.txt", "kept a\n")?;
        f.write("keep/b.txt", "kept b, a little longer\n")?;
        f.write("one.txt", "one, first version\n")?;
        f.write("copy.txt", "one, first version\n")?;
        f.write("gone.txt", "gone soon\n")?;
        f.write("sub/two.txt", "two\n")?;
        f.write("empty.txt", "")?;
        f.env.backup_ok(&[])?;
        f.first_trees = damage::tree_hashes(&f.env.backup)?;

        f.write("one.txt", "one, second version, longer\n")?;
        std::fs::remove_file(f.env.src("gone.txt"))?;
        f.write("new.txt", "new in run 2\n")?;
        f.env.backup_ok(&[])?;

        f.write("one.txt", "one, third version, the longest of all\n")?;
        f.write("sub/two.txt", "two, second version\n")?;
        f.env.backup_ok(&[])?;
        assert_eq!(f.env.snapshot_count()?, 3);
        Ok(f)
    }

    /// Short ids, oldest first.
    fn short_ids(&self) -> Res<Vec<String>> {
        Ok(self
            .env
            .snapshot_ids()?
            .into_iter()
            .map(|(s, _)| s)
            .collect())
    }

    /// The snapshots that `trove ls` cannot read while tree `hash` is
    /// taken out of its pack: an oracle, independent of verify, for who
    /// uses a tree.
    fn snapshots_needing_tree(&self, hash: &str) -> Res<Vec<String>> {
        let p = damage::tree_path(&self.env.backup, hash)?;
        let aside = self.env.root().join("tree-aside");
        std::fs::copy(&p, &aside)?;
        damage::delete_tree(&self.env.backup, hash)?;
        let result = (|| -> Res<Vec<String>> {
            let mut out = Vec::new();
            for (id, full) in self.env.snapshot_ids()? {
                if !self.env.repo_cmd(&["ls", &full])?.status.success() {
                    out.push(id);
                }
            }
            Ok(out)
        })();
        std::fs::rename(&aside, &p)?;
        result
    }

    /// The tree of `keep/`: written by the first backup, used by the
    /// latest snapshot (and, since `keep/` never changed, by all three).
    fn shared_tree(&self) -> Res<String> {
        let ids = self.short_ids()?;
        let latest = ids.last().ok_or("no snapshots")?;
        for t in &self.first_trees {
            let users = self.snapshots_needing_tree(t)?;
            if users.contains(latest) {
                assert_eq!(
                    users, ids,
                    "keep/ never changed: its tree is in every snapshot"
                );
                return Ok(t.clone());
            }
        }
        Err("no tree of the first backup is used by the latest snapshot".into())
    }
}

fn subject_of(env: &TestEnv, rel: &str) -> String {
    env.dst(rel).display().to_string()
}

#[test]
fn clean_repository_verifies_with_one_object_per_distinct_content() -> TestResult {
    let f = Fixture::new()?;
    let v = verify(&f.env, &[])?;
    v.run.expect_code(0);
    assert!(v.problems.is_empty(), "{}", v.run.stdout);
    assert!(
        v.run.stdout.ends_with(&format!(
            "verify: {} objects, 0 problems\n",
            f.contents.len()
        )),
        "one object per distinct content ({}):\n{}",
        f.contents.len(),
        v.run.stdout
    );
    assert_eq!(v.objects, f.env.objects()?.len() as u64, "objects in store");
    assert_eq!(
        v.objects,
        damage::object_hashes(&f.env.backup)?.len() as u64
    );
    assert_eq!(v.objects, f.contents.len() as u64);
    Ok(())
}

#[test]
fn flipped_byte_in_an_object_is_a_corrupt_object_naming_paths_and_snapshots() -> TestResult {
    let f = Fixture::new()?;
    let ids = f.short_ids()?;
    let hash = f.env.object_hash_of("copy.txt")?;
    damage::flip_byte_in_object(&f.env.backup, &hash)?;

    let p = single_problem(&f.env)?;
    assert_eq!(p.kind, "corrupt object");
    assert_eq!(p.subject, hash);
    assert_eq!(p.snapshots, ids, "every snapshot holds that content");
    let used: BTreeSet<String> = p.used_by.iter().cloned().collect();
    let want: BTreeSet<String> = [
        format!("copy.txt ({})", ids[0]),
        format!("one.txt ({})", ids[0]),
        format!("copy.txt ({})", ids[1]),
        format!("versions/one.txt/v1.bak ({})", ids[1]),
        format!("copy.txt ({})", ids[2]),
        format!("versions/one.txt/v1.bak ({})", ids[2]),
    ]
    .into_iter()
    .collect();
    assert_eq!(used, want, "used-by lines: {:?}", p.used_by);
    assert_eq!(p.used_by.len(), want.len(), "no path named twice");
    Ok(())
}

#[test]
fn deleted_object_is_a_missing_object() -> TestResult {
    let f = Fixture::new()?;
    let ids = f.short_ids()?;
    let hash = f.env.object_hash_of("versions/sub/two.txt/v1.bak")?;
    damage::delete_object(&f.env.backup, &hash)?;

    let p = single_problem(&f.env)?;
    assert_eq!(p.kind, "missing object");
    assert_eq!(p.subject, hash);
    assert_eq!(p.snapshots, ids);
    let used: BTreeSet<String> = p.used_by.iter().cloned().collect();
    let want: BTreeSet<String> = [
        format!("sub/two.txt ({})", ids[0]),
        format!("sub/two.txt ({})", ids[1]),
        format!("versions/sub/two.txt/v1.bak ({})", ids[2]),
    ]
    .into_iter()
    .collect();
    assert_eq!(used, want);
    Ok(())
}

#[test]
fn truncated_tree_is_a_corrupt_tree_named_with_every_snapshot_sharing_it() -> TestResult {
    let f = Fixture::new()?;
    let tree = f.shared_tree()?;
    damage::truncate_tree(&f.env.backup, &tree)?;

    let p = single_problem(&f.env)?;
    assert_eq!(p.kind, "corrupt tree");
    assert_eq!(p.subject, tree);
    assert_eq!(p.snapshots, f.short_ids()?, "all three share keep/");
    Ok(())
}

#[test]
fn deleted_tree_is_a_missing_tree() -> TestResult {
    let f = Fixture::new()?;
    let tree = f.shared_tree()?;
    damage::delete_tree(&f.env.backup, &tree)?;

    let p = single_problem(&f.env)?;
    assert_eq!(p.kind, "missing tree");
    assert_eq!(p.subject, tree);
    assert_eq!(p.snapshots, f.short_ids()?);
    Ok(())
}

#[test]
fn corrupt_snapshot_record_is_a_snapshot_problem() -> TestResult {
    let f = Fixture::new()?;
    let (_, oldest) = f.env.snapshot_ids()?[0].clone();
    damage::corrupt_snapshot_record(&f.env.backup, &oldest)?;

    let p = single_problem(&f.env)?;
    assert_eq!(p.kind, "snapshot");
    assert_eq!(
        p.subject,
        damage::snapshot_path(&f.env.backup, &oldest)
            .display()
            .to_string()
    );
    Ok(())
}

#[test]
fn truncated_snapshot_record_is_a_snapshot_problem() -> TestResult {
    let f = Fixture::new()?;
    let (_, middle) = f.env.snapshot_ids()?[1].clone();
    damage::truncate_snapshot_record(&f.env.backup, &middle)?;

    let p = single_problem(&f.env)?;
    assert_eq!(p.kind, "snapshot");
    assert_eq!(
        p.subject,
        damage::snapshot_path(&f.env.backup, &middle)
            .display()
            .to_string()
    );
    Ok(())
}

#[test]
fn deleted_browsable_file_is_a_browsable_problem() -> TestResult {
    let f = Fixture::new()?;
    let latest = f.short_ids()?.pop().ok_or("no snapshot")?;
    std::fs::remove_file(f.env.dst("sub/two.txt"))?;

    let p = single_problem(&f.env)?;
    assert_eq!(p.kind, "browsable");
    assert!(p.subject.ends_with("/sub/two.txt"), "{p:?}");
    assert_eq!(p.subject, subject_of(&f.env, "sub/two.txt"));
    assert!(p.message.contains("missing"), "{p:?}");
    assert_eq!(p.snapshots, vec![latest]);
    Ok(())
}

#[test]
fn removed_version_file_is_a_browsable_problem() -> TestResult {
    let f = Fixture::new()?;
    std::fs::remove_file(f.env.dst("versions/one.txt/v1.bak"))?;

    let p = single_problem(&f.env)?;
    assert_eq!(p.kind, "browsable");
    assert_eq!(p.subject, subject_of(&f.env, "versions/one.txt/v1.bak"));
    assert!(p.message.contains("missing"), "{p:?}");
    Ok(())
}

#[test]
fn browsable_file_replaced_by_other_content_is_wrong_content() -> TestResult {
    let f = Fixture::new()?;
    // Another size, and the same size with other bytes.
    damage::replace_with_content(&f.env.dst("one.txt"), b"the user's own text")?;
    damage::replace_with_content(&f.env.dst("keep/a.txt"), b"KEPT A\n")?;
    // And a file replaced by a directory.
    std::fs::remove_file(f.env.dst("new.txt"))?;
    std::fs::create_dir(f.env.dst("new.txt"))?;

    let v = verify(&f.env, &[])?;
    v.run.expect_code(1);
    let got: Vec<(String, String)> = v
        .problems
        .iter()
        .map(|p| (p.kind.clone(), p.subject.clone()))
        .collect();
    let want: Vec<(String, String)> = ["keep/a.txt", "new.txt", "one.txt"]
        .iter()
        .map(|r| ("browsable".to_string(), subject_of(&f.env, r)))
        .collect();
    assert_eq!(got, want, "in path order:\n{}", v.run.stdout);
    assert!(
        v.problems[0].message.contains("wrong content"),
        "{}",
        v.run.stdout
    );
    assert!(
        v.problems[1].message.contains("directory"),
        "{}",
        v.run.stdout
    );
    assert!(
        v.problems[2].message.contains("wrong content"),
        "{}",
        v.run.stdout
    );
    Ok(())
}

#[test]
fn browsable_file_replaced_by_a_correct_copy_is_not_a_hardlink() -> TestResult {
    let f = Fixture::new()?;
    damage::replace_with_copy(&f.env.dst("keep/b.txt"))?;

    let p = single_problem(&f.env)?;
    assert_eq!(p.kind, "browsable");
    assert_eq!(p.subject, subject_of(&f.env, "keep/b.txt"));
    assert!(p.message.contains("hardlink"), "{p:?}");
    assert!(!p.message.contains("wrong content"), "{p:?}");
    Ok(())
}

#[test]
fn extra_file_in_backup_root_is_a_browsable_problem() -> TestResult {
    let f = Fixture::new()?;
    std::fs::write(f.env.dst("stray.txt"), "not from trove")?;
    std::fs::create_dir_all(f.env.dst("sub/stray-dir/deeper"))?;
    std::fs::write(f.env.dst("sub/stray-dir/deeper/x"), "x")?;

    let v = verify(&f.env, &[])?;
    v.run.expect_code(1);
    let subjects: Vec<&str> = v.problems.iter().map(|p| p.subject.as_str()).collect();
    assert_eq!(
        subjects,
        vec![
            subject_of(&f.env, "stray.txt"),
            subject_of(&f.env, "sub/stray-dir")
        ],
        "an extra directory is named once:\n{}",
        v.run.stdout
    );
    for p in &v.problems {
        assert_eq!(p.kind, "browsable");
        assert!(
            p.message.contains("not part of the latest snapshot"),
            "{p:?}"
        );
    }
    assert_eq!(std::fs::read(f.env.dst("stray.txt"))?, b"not from trove");
    Ok(())
}

#[test]
fn folder_replaced_by_a_symlink_is_a_browsable_problem() -> TestResult {
    let f = Fixture::new()?;
    // The real folder, moved next door: the symlink shows the right files.
    let moved = f.env.root().join("keep-moved");
    std::fs::rename(f.env.dst("keep"), &moved)?;
    std::os::unix::fs::symlink(&moved, f.env.dst("keep"))?;

    let p = single_problem(&f.env)?;
    assert_eq!(p.kind, "browsable");
    assert_eq!(p.subject, subject_of(&f.env, "keep"));
    assert!(p.message.contains("symlink"), "{p:?}");
    Ok(())
}

/// `versions/` has no entry of its own in the rendering; a symlink there
/// must be named all the same.
#[test]
fn implicit_folder_replaced_by_a_symlink_is_a_browsable_problem() -> TestResult {
    let f = Fixture::new()?;
    let moved = f.env.root().join("versions-moved");
    std::fs::rename(f.env.dst("versions"), &moved)?;
    std::os::unix::fs::symlink(&moved, f.env.dst("versions"))?;

    let v = verify(&f.env, &[])?;
    v.run.expect_code(1);
    assert!(
        v.problems
            .iter()
            .any(|p| p.kind == "browsable" && p.subject == subject_of(&f.env, "versions")),
        "{}",
        v.run.stdout
    );
    Ok(())
}

#[test]
fn lost_browsable_marker_is_a_problem_until_materialize() -> TestResult {
    let f = Fixture::new()?;
    let latest = f.short_ids()?.pop().ok_or("no snapshot")?;
    std::fs::remove_file(f.env.dst(".trove/cache/materialized"))?;

    let p = single_problem(&f.env)?;
    assert_eq!(p.kind, "browsable");
    assert_eq!(p.subject, f.env.backup.display().to_string());
    assert!(p.message.contains(&latest), "{p:?}");
    f.env.repo_run(&["materialize"])?.expect_code(0);
    let v = verify(&f.env, &[])?;
    v.run.expect_code(0);
    Ok(())
}

#[test]
fn an_object_used_by_many_paths_names_twenty_and_counts_the_rest() -> TestResult {
    let env = TestEnv::new()?;
    for i in 0..25 {
        env.write(&format!("d{}/same{i:02}.txt", i % 3), "the same bytes\n")?;
    }
    env.write("other.txt", "other\n")?;
    env.backup_ok(&[])?;
    let hash = env.object_hash_of("d0/same00.txt")?;
    damage::flip_byte_in_object(&env.backup, &hash)?;

    let p = single_problem(&env)?;
    assert_eq!(
        (p.kind.as_str(), p.subject.as_str()),
        ("corrupt object", hash.as_str())
    );
    assert_eq!(p.used_by.len(), 20, "{p:?}");
    let r = env.repo_run(&["verify"])?;
    assert!(
        r.stdout.contains("\n    … and 5 more paths\n"),
        "{}",
        r.stdout
    );
    let r = env.repo_run(&["verify", "--json"])?;
    r.expect_code(1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout)?;
    assert_eq!(v["problems"][0]["paths"].as_array().map(Vec::len), Some(20));
    assert_eq!(v["problems"][0]["paths_total"], 25);
    Ok(())
}

#[test]
fn bad_sampling_options_are_usage_errors() -> TestResult {
    let env = TestEnv::new()?;
    env.write("f.txt", "x")?;
    env.backup_ok(&[])?;
    for args in [
        &["--seed", "7"][..],
        &["--quick", "--sample", "5"][..],
        &["--sample", "0"][..],
        &["--sample", "101"][..],
        &["--sample", "half"][..],
    ] {
        let mut a = vec!["verify"];
        a.extend_from_slice(args);
        let r = env.repo_run(&a)?;
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.console());
    }
    Ok(())
}

#[test]
fn quick_skips_rehashing_but_sees_missing_and_resized_objects() -> TestResult {
    let f = Fixture::new()?;
    let flipped = f.env.object_hash_of("keep/a.txt")?;
    damage::flip_byte_in_object(&f.env.backup, &flipped)?;

    // Same size: --quick cannot see it, a full verify and --sample 100 do.
    let q = verify(&f.env, &["--quick"])?;
    q.run.expect_code(0);
    assert!(q.problems.is_empty(), "{}", q.run.stdout);
    for args in [&[][..], &["--sample", "100"][..]] {
        let v = verify(&f.env, args)?;
        v.run.expect_code(1);
        let kinds: Vec<(&str, &str)> = v
            .problems
            .iter()
            .map(|p| (p.kind.as_str(), p.subject.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![("corrupt object", flipped.as_str())],
            "{args:?}"
        );
    }

    // A deleted object is seen without hashing.
    let deleted = f.env.object_hash_of("new.txt")?;
    damage::delete_object(&f.env.backup, &deleted)?;
    let q = verify(&f.env, &["--quick"])?;
    q.run.expect_code(1);
    let kinds: Vec<(&str, &str)> = q
        .problems
        .iter()
        .map(|p| (p.kind.as_str(), p.subject.as_str()))
        .collect();
    assert_eq!(kinds, vec![("missing object", deleted.as_str())]);

    // So is a truncated one (its hardlinks in the browsable tree shrink
    // with it, and are named as well).
    let resized = f.env.object_hash_of("keep/b.txt")?;
    damage::truncate_object(&f.env.backup, &resized)?;
    let q = verify(&f.env, &["--quick"])?;
    q.run.expect_code(1);
    assert!(
        q.problems
            .iter()
            .any(|p| p.kind == "object size" && p.subject == resized),
        "{}",
        q.run.stdout
    );
    assert!(
        q.problems
            .iter()
            .any(|p| p.kind == "browsable" && p.subject == subject_of(&f.env, "keep/b.txt")),
        "{}",
        q.run.stdout
    );
    assert!(
        !q.problems.iter().any(|p| p.kind == "corrupt object"),
        "--quick never hashes:\n{}",
        q.run.stdout
    );
    Ok(())
}

/// `--quick` places objects from the store's folder listings and proves
/// their sizes through the browsable files that are the same inodes. Damage
/// only a stat of the object shows must still be found, and reported as a
/// full verify reports it (apart from hashing): an object replaced by a
/// shorter file (its browsable hardlinks keep the old inode and size), an
/// object replaced by a symlink, a version's content truncated (with its
/// `versions/` hardlink), and an unreferenced object counted.
#[test]
fn quick_finds_what_only_a_stat_of_the_object_shows() -> TestResult {
    let f = Fixture::new()?;
    let replaced = f.env.object_hash_of("keep/b.txt")?;
    let obj = damage::object_path(&f.env.backup, &replaced)?;
    damage::make_writable(&obj)?;
    damage::replace_with_content(&obj, b"short")?;
    let linked = f.env.object_hash_of("sub/two.txt")?;
    let obj = damage::object_path(&f.env.backup, &linked)?;
    let elsewhere = f.env.backup.join("elsewhere");
    std::fs::copy(&obj, &elsewhere)?;
    std::fs::remove_file(&obj)?;
    std::os::unix::fs::symlink(&elsewhere, &obj)?;
    // The second content of one.txt is only a version now.
    let old = damage::object_hashes(&f.env.backup)?;
    let second = old
        .iter()
        .find(|h| {
            damage::object_path(&f.env.backup, h)
                .ok()
                .and_then(|p| std::fs::read(p).ok())
                .is_some_and(|b| b == b"one, second version, longer\n")
        })
        .cloned()
        .ok_or("the second version's object")?;
    damage::truncate_object(&f.env.backup, &second)?;
    // Unreferenced: a stored object no snapshot names (a crash leftover).
    let stray = blake3::hash(b"stray content").to_hex().to_string();
    let stray_path = f
        .env
        .backup
        .join(".trove/objects")
        .join(&stray[..2])
        .join(&stray);
    std::fs::create_dir_all(stray_path.parent().ok_or("fan-out folder")?)?;
    std::fs::write(&stray_path, b"stray content")?;

    let kinds = |v: &Verified| -> Vec<(String, String)> {
        let mut k: Vec<(String, String)> = v
            .problems
            .iter()
            .map(|p| (p.kind.clone(), p.subject.clone()))
            .collect();
        k.sort();
        k
    };
    let full = verify(&f.env, &[])?;
    full.run.expect_code(1);
    let quick = verify(&f.env, &["--quick"])?;
    quick.run.expect_code(1);
    assert_eq!(
        kinds(&quick),
        kinds(&full),
        "quick:\n{}\nfull:\n{}",
        quick.run.stdout,
        full.run.stdout
    );
    for (kind, subject) in [
        ("object size", &replaced),
        ("corrupt object", &linked),
        ("object size", &second),
    ] {
        assert!(
            quick
                .problems
                .iter()
                .any(|p| p.kind == kind && &p.subject == subject),
            "{kind} {subject}:\n{}",
            quick.run.stdout
        );
    }
    let json = |extra: &[&str]| -> Res<serde_json::Value> {
        let mut args = vec!["verify", "--json"];
        args.extend_from_slice(extra);
        let r = f.env.repo_run(&args)?;
        Ok(serde_json::from_str(&r.stdout)?)
    };
    let (jf, jq) = (json(&[])?, json(&["--quick"])?);
    for key in [
        "objects",
        "object_bytes",
        "unreferenced_objects",
        "unreferenced_bytes",
    ] {
        assert_eq!(jq[key], jf[key], "{key}: quick {jq}\nfull {jf}");
    }
    assert_eq!(jq["unreferenced_objects"].as_u64(), Some(1), "{jq}");
    Ok(())
}

#[test]
fn sample_with_a_seed_is_repeatable() -> TestResult {
    let env = TestEnv::new()?;
    for i in 0..40 {
        env.write(&format!("d{}/f{i:02}.txt", i % 4), format!("content {i}\n"))?;
    }
    env.backup_ok(&[])?;
    let json = |args: &[&str]| -> Res<serde_json::Value> {
        let mut a = vec!["verify", "--json"];
        a.extend_from_slice(args);
        let r = env.repo_run(&a)?;
        r.expect_code(0);
        Ok(serde_json::from_str(&r.stdout)?)
    };
    let a = json(&["--sample", "50", "--seed", "7"])?;
    let b = json(&["--sample", "50", "--seed", "7"])?;
    assert_eq!(a["sample"], b["sample"], "same seed, same sample");
    assert_eq!(a["objects_hashed"], b["objects_hashed"]);
    assert_eq!(a["sample"]["seed"], 7);
    assert_eq!(a["sample"]["percent"].as_f64(), Some(50.0));
    let n = a["objects"].as_u64().ok_or("no objects count")?;
    assert_eq!(n, 40);
    let sampled = a["sample"]["objects"].as_u64().ok_or("no sample count")?;
    assert_eq!(a["objects_hashed"].as_u64(), Some(sampled));
    assert!(
        0 < sampled && sampled < n,
        "a 50% sample of {n} objects hashed {sampled}"
    );
    let all = json(&["--sample", "100"])?;
    assert_eq!(all["sample"]["objects"].as_u64(), Some(n));
    Ok(())
}

#[test]
fn json_report_matches_the_human_output() -> TestResult {
    let f = Fixture::new()?;
    damage::flip_byte_in_object(&f.env.backup, &f.env.object_hash_of("copy.txt")?)?;
    damage::delete_object(&f.env.backup, &f.env.object_hash_of("new.txt")?)?;
    std::fs::remove_file(f.env.dst("keep/a.txt"))?;
    std::fs::write(f.env.dst("stray.txt"), "stray")?;

    let human = verify(&f.env, &[])?;
    human.run.expect_code(1);
    let r = f.env.repo_run(&["verify", "--json"])?;
    r.expect_code(1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout)?;
    let problems = v["problems"].as_array().ok_or("no problems array")?;
    assert_eq!(problems.len(), human.problems.len());
    assert_eq!(human.problems.len(), 4, "{}", human.run.stdout);
    assert_eq!(v["objects"].as_u64(), Some(human.objects));
    assert_eq!(human.objects, f.contents.len() as u64);
    for (j, h) in problems.iter().zip(&human.problems) {
        assert_eq!(j["kind"].as_str(), Some(h.kind.as_str()));
        assert_eq!(j["subject"].as_str(), Some(h.subject.as_str()));
        assert_eq!(j["message"].as_str(), Some(h.message.as_str()));
        let snaps: Vec<&str> = j["snapshots"]
            .as_array()
            .ok_or("no snapshots array")?
            .iter()
            .filter_map(|s| s.as_str())
            .collect();
        assert_eq!(snaps, h.snapshots);
        let paths: Vec<&str> = j["paths"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(paths, h.used_by);
    }
    Ok(())
}

/// Damage of every kind that needs no link probe, then a full listing of
/// the backup root, `.trove` included, before and after verify.
#[test]
fn verify_changes_nothing_on_a_damaged_repository() -> TestResult {
    let f = Fixture::new()?;
    let b = &f.env.backup;
    damage::flip_byte_in_object(b, &f.env.object_hash_of("copy.txt")?)?;
    damage::delete_object(b, &f.env.object_hash_of("new.txt")?)?;
    std::fs::remove_file(f.env.dst("versions/one.txt/v2.bak"))?;
    damage::replace_with_content(&f.env.dst("keep/a.txt"), b"user text")?;
    std::fs::write(f.env.dst("stray.txt"), "stray")?;
    let (_, oldest) = f.env.snapshot_ids()?[0].clone();
    damage::corrupt_snapshot_record(b, &oldest)?;

    let before = stat_listing(b, false)?;
    for args in [&[][..], &["--quick"][..], &["--json"][..]] {
        let mut a = vec!["verify"];
        a.extend_from_slice(args);
        f.env.repo_run(&a)?.expect_code(1);
    }
    let after = stat_listing(b, false)?;
    let diffs = stat_differences(&before, &after);
    assert!(diffs.is_empty(), "verify changed:\n{}", diffs.join("\n"));
    Ok(())
}

#[test]
fn verify_changes_nothing_when_a_browsable_file_is_a_copy() -> TestResult {
    let f = Fixture::new()?;
    damage::replace_with_copy(&f.env.dst("keep/b.txt"))?;
    let before = stat_listing(&f.env.backup, false)?;
    f.env.repo_run(&["verify"])?.expect_code(1);
    let after = stat_listing(&f.env.backup, false)?;
    let diffs = stat_differences(&before, &after);
    assert!(diffs.is_empty(), "verify changed:\n{}", diffs.join("\n"));
    Ok(())
}

/// The browsable check renders the snapshot lazily, merging its four runs
/// in path order as the trees are read, and walks the disk alongside. Ten
/// kept versions of one file (`v10.bak` sorts before `v2.bak`), duplicates,
/// a deleted folder and nested folders must verify clean, and a stray file
/// among the versions must still be the one problem found.
#[test]
fn lazy_browsable_check_follows_path_order() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a/b/f.txt", "v0")?;
    env.write("a/dup.txt", "same")?;
    env.write("z.txt", "same")?;
    env.write("gone/x.txt", "x")?;
    env.backup_ok(&[])?;
    for i in 1..12 {
        env.write("a/b/f.txt", format!("v{i}"))?;
        env.backup_ok(&[])?;
    }
    std::fs::remove_dir_all(env.src("gone"))?;
    env.backup_ok(&[])?;
    assert!(env.dst("versions/a/b/f.txt/v10.bak").is_file());
    assert!(env.dst("_duplicates/z.txt").is_file());
    assert!(env.dst("_deleted/gone/x.txt").is_file());
    let v = verify(&env, &["--quick"])?;
    v.run.expect_code(0);
    assert!(v.problems.is_empty(), "{}", v.run.stdout);

    std::fs::write(env.dst("versions/a/b/f.txt/v99.bak"), "stray")?;
    std::fs::create_dir(env.dst("_deleted/extra"))?;
    let v = verify(&env, &["--quick"])?;
    v.run.expect_code(1);
    let subjects: Vec<&str> = v.problems.iter().map(|p| p.subject.as_str()).collect();
    assert_eq!(v.problems.len(), 2, "{}", v.run.stdout);
    assert!(subjects[0].ends_with("/_deleted/extra"), "{subjects:?}");
    assert!(
        subjects[1].ends_with("/versions/a/b/f.txt/v99.bak"),
        "{subjects:?}"
    );
    assert!(
        v.problems
            .iter()
            .all(|p| p.kind == "browsable"
                && p.message.starts_with("not part of the latest snapshot"))
    );
    Ok(())
}
