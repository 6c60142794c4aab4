//! Issue 13, snapshot records and the repository's shape under damage: a
//! damaged newest record is never skipped silently (defect 4), `prune`
//! checks before it acts (defect 9), hostile trees cost bounded work
//! (defect 8), `restore` tells damage from retention (13b) and read-only
//! commands create nothing in the repository (13c). Every command runs the
//! real binary with a time limit, so a regression fails instead of hanging.

use crate::common::{
    listing, run_bounded, stat_differences, stat_listing, trove_bin, Res, TestEnv, TestResult,
};
use crate::damage;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

/// `trove --repo BACKUP ARGS…` from the env's root, killed (and the test
/// failed) after LIMIT.
fn repo_bounded(env: &TestEnv, args: &[&str]) -> Res<Output> {
    let mut c = Command::new(trove_bin());
    c.current_dir(env.root())
        .env_remove("TROVE_REPO")
        .arg("--repo")
        .arg(&env.backup)
        .args(args);
    run_bounded(c, LIMIT)
}

/// `trove backup EXTRA… source backup`, bounded.
fn backup_bounded(env: &TestEnv, extra: &[&str]) -> Res<Output> {
    let mut c = Command::new(trove_bin());
    c.current_dir(env.root())
        .env_remove("TROVE_REPO")
        .arg("backup")
        .args(extra)
        .arg(&env.source)
        .arg(&env.backup);
    run_bounded(c, LIMIT)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn expect(o: &Output, code: i32, what: &str) {
    assert_eq!(o.status.code(), Some(code), "{what}: {}", text(o));
}

/// Names of the files in `.trove/snapshots/`.
fn record_names(env: &TestEnv) -> Res<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(env.dst(".trove/snapshots"))? {
        out.insert(e?.file_name().to_string_lossy().into_owned());
    }
    Ok(out)
}

/// `snapshots --json` whatever its exit code.
fn snapshot_rows(env: &TestEnv) -> Res<Vec<Value>> {
    let o = repo_bounded(env, &["snapshots", "--json"])?;
    let v: Value = serde_json::from_slice(&o.stdout)
        .map_err(|e| format!("snapshots --json is not JSON ({e}): {}", text(&o)))?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

/// Three backups, each changing `a.txt` and adding a file.
fn three_backups(env: &TestEnv) -> Res<Vec<String>> {
    env.write("a.txt", b"one")?;
    env.backup_ok(&[])?;
    env.write("a.txt", b"two")?;
    env.write("b.txt", b"bee")?;
    env.backup_ok(&[])?;
    env.write("a.txt", b"three")?;
    env.write("sub/c.txt", b"sea")?;
    env.backup_ok(&[])?;
    Ok(env
        .snapshot_ids()?
        .into_iter()
        .map(|(_, full)| full)
        .collect())
}

/// Every command that resolves `latest` fails with exit 1, naming the
/// record, while `record` is damaged and may be the newest.
fn latest_refused(env: &TestEnv, full: &str) -> TestResult {
    let target = env.root().join("restored");
    let view = env.root().join("view");
    let t = target.to_string_lossy().into_owned();
    let v = view.to_string_lossy().into_owned();
    for args in [
        vec!["restore", "--target", t.as_str()],
        vec!["ls"],
        vec!["materialize", "--target", v.as_str()],
        vec!["stats"],
    ] {
        let o = repo_bounded(env, &args)?;
        expect(&o, 1, &format!("{args:?} with a damaged newest record"));
        let msg = text(&o);
        assert!(msg.contains(full), "{args:?} names the record: {msg}");
        assert!(
            msg.contains("trove snapshots") && msg.contains("--allow-damaged-latest"),
            "{args:?} says what to do: {msg}"
        );
    }
    assert!(
        !target.exists(),
        "nothing was restored from an older snapshot"
    );
    assert!(!view.exists(), "nothing was materialized");
    Ok(())
}

#[test]
fn a_damaged_newest_snapshot_record_is_never_skipped_silently() -> TestResult {
    let env = TestEnv::new()?;
    let ids = three_backups(&env)?;
    let newest = ids[2].clone();
    damage::truncate_snapshot_record(&env.backup, &newest)?;

    latest_refused(&env, &newest)?;

    // backup refuses to build on an older snapshot, and changes nothing.
    env.write("a.txt", b"four")?;
    let records = record_names(&env)?;
    let tree = listing(&env.backup, true)?;
    let o = backup_bounded(&env, &[])?;
    expect(&o, 1, "backup over a damaged newest record");
    let msg = text(&o);
    assert!(msg.contains(&newest), "backup names the record: {msg}");
    assert!(
        msg.contains("--allow-damaged-latest"),
        "backup says how to go on: {msg}"
    );
    assert_eq!(record_names(&env)?, records, "no snapshot was written");
    assert_eq!(
        listing(&env.backup, true)?,
        tree,
        "the browsable tree is as it was"
    );

    // The listing shows the record as damaged instead of hiding it.
    let o = repo_bounded(&env, &["snapshots"])?;
    expect(&o, 1, "snapshots");
    assert!(
        text(&o).contains("DAMAGED") && text(&o).contains(&newest[..8]),
        "snapshots shows the damaged record: {}",
        text(&o)
    );
    let rows = snapshot_rows(&env)?;
    assert_eq!(rows.len(), 3, "{rows:#?}");
    let bad: Vec<&Value> = rows.iter().filter(|r| r["status"] == "damaged").collect();
    assert_eq!(bad.len(), 1, "{rows:#?}");
    assert_eq!(bad[0]["full_id"], Value::from(newest.clone()), "{rows:#?}");
    assert!(
        bad[0]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{rows:#?}"
    );
    assert!(
        rows.iter().filter(|r| r["status"] == "ok").count() == 2,
        "{rows:#?}"
    );

    // Told explicitly, backup builds on the newest readable record, with a
    // sequence number above the damaged one's, and quarantines nothing.
    let o = backup_bounded(&env, &["--allow-damaged-latest"])?;
    expect(&o, 0, "backup --allow-damaged-latest");
    let rows = snapshot_rows(&env)?;
    let newest_seq = rows
        .iter()
        .filter(|r| r["status"] == "ok")
        .filter_map(|r| r["seq"].as_u64())
        .max()
        .ok_or("no readable record")?;
    assert_eq!(newest_seq, 4, "the damaged record had seq 3: {rows:#?}");
    let q = env.dst(".trove/quarantine");
    let quarantined = if q.exists() {
        listing(&q, false)?.into_keys().collect::<Vec<_>>()
    } else {
        Vec::new()
    };
    assert!(
        quarantined.is_empty(),
        "trove's own files were quarantined: {quarantined:?}"
    );
    let shown = listing(&env.backup, true)?;
    for (rel, data) in [
        ("a.txt", &b"four"[..]),
        ("b.txt", b"bee"),
        ("sub/c.txt", b"sea"),
    ] {
        assert_eq!(
            shown.get(rel.as_bytes()),
            Some(&crate::common::Node::File(data.to_vec())),
            "{rel} in the browsable tree"
        );
    }

    // The new snapshot is newer than the damaged one: `latest` resolves.
    let target = env.root().join("after");
    let o = repo_bounded(&env, &["restore", "--target", &target.to_string_lossy()])?;
    expect(&o, 0, "restore latest after the new backup");
    assert_eq!(
        std::fs::read(target.join("a.txt"))?,
        b"four",
        "restored the new snapshot"
    );
    Ok(())
}

#[test]
fn a_newest_snapshot_record_cut_to_nothing_is_never_skipped_either() -> TestResult {
    let env = TestEnv::new()?;
    let ids = three_backups(&env)?;
    let newest = ids[2].clone();
    damage::truncate_file(&damage::snapshot_path(&env.backup, &newest), 0)?;
    latest_refused(&env, &newest)?;
    // Its sequence number is unknown: the next one is still above it.
    env.write("a.txt", b"four")?;
    let o = backup_bounded(&env, &["--allow-damaged-latest"])?;
    expect(&o, 0, "backup --allow-damaged-latest");
    let seqs: Vec<u64> = snapshot_rows(&env)?
        .iter()
        .filter_map(|r| r["seq"].as_u64())
        .collect();
    assert!(
        seqs.iter().max().is_some_and(|&m| m > 3),
        "a sequence number was reused: {seqs:?}"
    );
    Ok(())
}

#[test]
fn a_damaged_older_snapshot_record_does_not_hide_the_latest() -> TestResult {
    let env = TestEnv::new()?;
    let ids = three_backups(&env)?;
    damage::truncate_snapshot_record(&env.backup, &ids[0])?;
    let o = repo_bounded(&env, &["ls"])?;
    expect(&o, 0, "ls of the latest with an older record damaged");
    assert!(text(&o).contains("sub/c.txt"), "{}", text(&o));
    let o = repo_bounded(&env, &["snapshots"])?;
    expect(&o, 1, "snapshots");
    assert!(text(&o).contains("DAMAGED"), "{}", text(&o));
    Ok(())
}

#[test]
fn prune_checks_a_damaged_record_before_it_acts() -> TestResult {
    let env = TestEnv::new()?;
    for (i, data) in ["one", "two", "three", "four"].iter().enumerate() {
        env.write("a.txt", data)?;
        env.write("b.txt", format!("bee {i}"))?;
        env.backup_ok(&[])?;
    }
    assert!(env.dst("versions/a.txt/v2.bak").exists());
    let ids: Vec<String> = env
        .snapshot_ids()?
        .into_iter()
        .map(|(_, full)| full)
        .collect();
    damage::truncate_snapshot_record(&env.backup, &ids[1])?;
    // One version per file: per-file retention has work to do.
    std::fs::write(
        env.root().join("config.json"),
        br#"{"sources": ["./source"], "backup_root": "./backup", "retention": {"max_versions_per_file": 1}}"#,
    )?;
    let records = record_names(&env)?;
    let versions = stat_listing(&env.dst("versions"), false)?;
    let objects = damage::object_hashes(&env.backup)?;
    let trees = damage::tree_hashes(&env.backup)?;

    let mut c = Command::new(trove_bin());
    c.current_dir(env.root())
        .env_remove("TROVE_REPO")
        .arg("prune");
    let o = run_bounded(c, LIMIT)?;
    expect(&o, 1, "prune on a damaged repository");
    assert!(
        text(&o).contains(&ids[1]),
        "prune names the record: {}",
        text(&o)
    );
    assert!(text(&o).contains("trove verify"), "{}", text(&o));

    assert_eq!(
        record_names(&env)?,
        records,
        "prune wrote or removed a snapshot"
    );
    let after = stat_listing(&env.dst("versions"), false)?;
    assert!(
        stat_differences(&versions, &after).is_empty(),
        "prune changed versions/: {:?}",
        stat_differences(&versions, &after)
    );
    assert_eq!(damage::object_hashes(&env.backup)?, objects);
    assert_eq!(damage::tree_hashes(&env.backup)?, trees);
    Ok(())
}

#[test]
fn restore_calls_a_missing_object_of_the_latest_snapshot_damage_not_retention() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", b"alpha content")?;
    env.write("b.txt", b"beta content")?;
    env.backup_ok(&[])?;
    let gone = env.object_hash_of("b.txt")?;
    let bad = env.object_hash_of("a.txt")?;
    damage::delete_object(&env.backup, &gone)?;
    damage::flip_byte_in_object(&env.backup, &bad)?;
    let target = env.root().join("out");
    let o = repo_bounded(&env, &["restore", "--target", &target.to_string_lossy()])?;
    expect(&o, 1, "restore with damaged objects");
    let msg = text(&o);
    assert!(
        !msg.contains("removed by retention"),
        "the latest snapshot's content is never removed by retention: {msg}"
    );
    for h in [&gone, &bad] {
        assert!(msg.contains(h.as_str()), "names object {h}: {msg}");
    }
    assert!(
        msg.contains("trove verify") && msg.contains("backup --rehash"),
        "says what to do: {msg}"
    );
    let o = repo_bounded(
        &env,
        &[
            "restore",
            "--dry-run",
            "--target",
            &target.to_string_lossy(),
        ],
    )?;
    assert!(
        !text(&o).contains("removed by retention"),
        "dry run: {}",
        text(&o)
    );
    Ok(())
}

#[test]
fn read_only_commands_never_recreate_a_deleted_objects_folder() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", b"alpha")?;
    env.write("d/b.txt", b"beta")?;
    env.backup_ok(&[])?;
    let objects = env.dst(".trove/objects");
    for e in std::fs::read_dir(&objects)? {
        damage::make_writable(&e?.path())?;
    }
    std::fs::remove_dir_all(&objects)?;
    let before = stat_listing(&env.dst(".trove"), false)?;
    let target = env.root().join("out");
    let t = target.to_string_lossy().into_owned();
    for args in [
        vec!["verify"],
        vec!["verify", "--quick"],
        vec!["restore", "--target", t.as_str()],
        vec!["ls"],
        vec!["snapshots"],
        vec!["stats"],
        vec!["history", "a.txt"],
        vec!["prune", "--dry-run"],
    ] {
        let o = repo_bounded(&env, &args)?;
        expect(&o, 1, &format!("{args:?} without .trove/objects"));
        assert!(
            text(&o).contains(&objects.display().to_string()),
            "{args:?} names the folder: {}",
            text(&o)
        );
        let after = stat_listing(&env.dst(".trove"), false)?;
        assert!(
            stat_differences(&before, &after).is_empty(),
            "{args:?} changed the repository: {:?}",
            stat_differences(&before, &after)
        );
    }
    assert!(!target.exists());
    Ok(())
}

// ---------------------------------------------------------------------------
// Defect 8: hostile trees

use trove::hash::hash_bytes;
use trove::id::{HashAlgo, ObjectId, SnapshotId, TreeId};
use trove::model::{Archived, History, Leaf, Meta};
use trove::repo::snapshot::{self, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
use trove::repo::tree::{encode_tree, frame_tree, Node, TreeObject};

/// Store a tree object the way trove does; returns its id.
fn store_tree<L: serde::Serialize, D: serde::Serialize>(
    repo: &Path,
    t: &TreeObject<L, D>,
) -> Res<TreeId> {
    let payload = encode_tree(t)?;
    let id = TreeId(hash_bytes(HashAlgo::Blake3, &payload));
    damage::add_tree_pack(repo, &[(id.0 .0, frame_tree(&payload)?)])?;
    Ok(id)
}

/// A tree `levels` deep in which every folder holds `a` and `b`, both the
/// same child tree: a handful of objects that expand to 2^levels paths.
fn hostile_tree(repo: &Path, levels: usize) -> Res<TreeId> {
    let meta = Meta {
        mode: 0o755,
        ..Meta::default()
    };
    let empty = ObjectId(hash_bytes(HashAlgo::Blake3, b""));
    let mut id = store_tree(
        repo,
        &TreeObject::<Leaf, Meta> {
            entries: vec![Node {
                name: b"f".to_vec(),
                leaf: Some(Leaf::File {
                    size: 0,
                    id: empty,
                    dup: false,
                    meta: Meta {
                        mode: 0o644,
                        ..meta.clone()
                    },
                    ext: Default::default(),
                }),
                dir: None,
            }],
        },
    )?;
    for _ in 0..levels {
        id = store_tree(
            repo,
            &TreeObject::<Leaf, Meta> {
                entries: [b"a", b"b"]
                    .iter()
                    .map(|n| Node {
                        name: n.to_vec(),
                        leaf: None,
                        dir: Some((id, meta.clone())),
                    })
                    .collect(),
            },
        )?;
    }
    Ok(id)
}

/// An archive tree `levels` deep in which every folder holds `a` and `b`,
/// both the same child, whose leaf is a deleted file of `content`.
fn hostile_archive(repo: &Path, levels: usize, content: &[u8]) -> Res<TreeId> {
    let mut id = store_tree(
        repo,
        &TreeObject::<History, ()> {
            entries: vec![Node {
                name: b"gone.txt".to_vec(),
                leaf: Some(History {
                    next_version: 1,
                    versions: Vec::new(),
                    deleted: Some(Archived {
                        id: ObjectId(hash_bytes(HashAlgo::Blake3, content)),
                        size: content.len() as u64,
                        meta: Meta {
                            mode: 0o644,
                            ..Meta::default()
                        },
                        time_ns: 1_700_000_000_000_000_000,
                    }),
                }),
                dir: None,
            }],
        },
    )?;
    for _ in 0..levels {
        id = store_tree(
            repo,
            &TreeObject::<History, ()> {
                entries: [b"a", b"b"]
                    .iter()
                    .map(|n| Node {
                        name: n.to_vec(),
                        leaf: None,
                        dir: Some((id, ())),
                    })
                    .collect(),
            },
        )?;
    }
    Ok(id)
}

/// Write a new latest record: the current latest with `root` as its
/// source tree (and its counts unchanged). Returns its full id.
fn record_with_root(env: &TestEnv, root: TreeId) -> Res<String> {
    record_with(env, |r| r.root = root)
}

/// Write a new latest record: the current latest changed by `f`.
fn record_with(env: &TestEnv, f: impl FnOnce(&mut snapshot::SnapshotRecord)) -> Res<String> {
    let (_, full) = env.snapshot_ids()?.pop().ok_or("no snapshot")?;
    let path = damage::snapshot_path(&env.backup, &full);
    let mut rec = snapshot::decode(&std::fs::read(&path)?, &path)?;
    rec.seq += 1;
    rec.time_ns += 1;
    rec.parent = SnapshotId::from_hex(&full);
    f(&mut rec);
    let payload = snapshot::encode(&rec)?;
    let id = SnapshotId(hash_bytes(HashAlgo::Blake3, &payload));
    let mut data = SNAPSHOT_MAGIC.to_vec();
    data.push(SNAPSHOT_VERSION);
    data.extend_from_slice(&payload);
    let out: PathBuf = damage::snapshot_path(&env.backup, &id.to_hex());
    std::fs::write(out, data)?;
    Ok(id.to_hex())
}

#[test]
fn hostile_trees_that_reuse_one_subtree_cost_bounded_work() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", b"alpha")?;
    env.write("d/b.txt", b"beta")?;
    env.backup_ok(&[])?;
    // 22 levels: 4 million paths, were they expanded.
    let root = hostile_tree(&env.backup, 22)?;
    let full = record_with_root(&env, root)?;
    let target = env.root().join("out");
    let t = target.to_string_lossy().into_owned();
    for args in [
        vec!["ls"],
        vec!["verify", "--quick"],
        vec!["verify"],
        vec!["restore", "--target", t.as_str()],
    ] {
        let o = repo_bounded(&env, &args)?;
        expect(&o, 1, &format!("{args:?} on a hostile tree"));
        assert!(
            text(&o).contains(&full[..8]),
            "{args:?} names the snapshot: {}",
            text(&o)
        );
    }
    Ok(())
}

#[test]
fn hostile_archive_trees_that_reuse_one_subtree_cost_bounded_work() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", b"alpha")?;
    env.backup_ok(&[])?;
    let archive = hostile_archive(&env.backup, 22, b"alpha")?;
    let full = record_with(&env, |r| r.archive = archive)?;
    let target = env.root().join("out");
    let view = env.root().join("view");
    let t = target.to_string_lossy().into_owned();
    let v = view.to_string_lossy().into_owned();
    for args in [
        vec!["ls"],
        vec!["verify", "--quick"],
        vec!["verify"],
        vec!["restore", "--target", t.as_str()],
        vec!["materialize", "--target", v.as_str()],
    ] {
        let o = repo_bounded(&env, &args)?;
        expect(&o, 1, &format!("{args:?} on a hostile archive tree"));
        assert!(
            text(&o).contains(&full[..8]) || text(&o).contains(&archive.to_hex()),
            "{args:?} names the snapshot or the tree: {}",
            text(&o)
        );
    }
    Ok(())
}

#[test]
fn a_snapshot_record_or_tree_replaced_by_a_fifo_or_symlink_never_hangs_and_is_named() -> TestResult
{
    for what in ["record fifo", "record symlink", "tree fifo", "config fifo"] {
        let env = TestEnv::new()?;
        let ids = three_backups(&env)?;
        let newest = ids[2].clone();
        let target = match what {
            "record fifo" | "record symlink" => damage::snapshot_path(&env.backup, &newest),
            "tree fifo" => {
                let hashes = damage::tree_hashes(&env.backup)?;
                let h = hashes.iter().next().ok_or("no tree")?.clone();
                damage::tree_path(&env.backup, &h)?
            }
            _ => env.dst(".trove/config"),
        };
        let lure = env.root().join("lure");
        std::fs::copy(&target, &lure)?;
        std::fs::remove_file(&target)?;
        if what.ends_with("symlink") {
            std::os::unix::fs::symlink(&lure, &target)?;
        } else {
            let st = Command::new("mkfifo").arg(&target).status()?;
            assert!(st.success(), "mkfifo {}", target.display());
        }
        let o = repo_bounded(&env, &["verify"])?;
        expect(&o, 1, &format!("verify with a {what}"));
        let name = target
            .file_name()
            .ok_or("no name")?
            .to_string_lossy()
            .into_owned();
        assert!(text(&o).contains(&name), "{what}: names it: {}", text(&o));
        for args in [vec!["ls"], vec!["snapshots"]] {
            // Finishing is the point (a FIFO used to block the reader).
            repo_bounded(&env, &args)?;
        }
    }
    Ok(())
}
