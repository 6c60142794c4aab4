//! Tree packs (repository format 2, issue 17 item 1) through the binary:
//! a run writes its trees into one pack; a collection deletes packs that
//! hold nothing live and rewrites mostly dead ones, and `verify` and
//! `restore` find every snapshot whole after it; a format 1 repository
//! made by the trove before packs is read as it is and upgraded by the
//! first writer, also when an earlier upgrade was interrupted; a newer
//! format is refused by name.

use crate::common::{listing, Node, Res, TestEnv, TestResult};
use crate::damage;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

type Tree = BTreeMap<Vec<u8>, Node>;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output, what: &str) -> Res<Output> {
    if !o.status.success() {
        return Err(format!("{what} exited {:?}: {}", o.status.code(), text(&o)).into());
    }
    Ok(o)
}

/// `trove ARGS…` run from `dir` (where `config.json` is).
fn trove_in(dir: &Path, args: &[&str]) -> Res<Output> {
    Ok(Command::new(crate::common::trove_bin())
        .current_dir(dir)
        .env_remove("TROVE_REPO")
        .env("TROVE_CACHE_DIR", dir.join("remote-cache"))
        .args(args)
        .output()?)
}

/// The snapshot ids (full), oldest first.
fn snapshot_ids(dir: &Path) -> Res<Vec<String>> {
    let o = ok(
        trove_in(dir, &["--repo", "backup", "snapshots", "--json"])?,
        "snapshots",
    )?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    Ok(v.as_array()
        .ok_or("snapshots --json: no list")?
        .iter()
        .filter_map(|s| s["id"].as_str().map(str::to_owned))
        .collect())
}

/// What snapshot `id` restores to.
fn restored(dir: &Path, id: &str) -> Res<Tree> {
    let t = tempfile::tempdir()?;
    let target = t.path().join("r");
    let target_s = target.to_str().ok_or("non-UTF-8 temp path")?;
    ok(
        trove_in(
            dir,
            &[
                "--repo",
                "backup",
                "restore",
                "--snapshot",
                id,
                "--target",
                target_s,
            ],
        )?,
        &format!("restore {id}"),
    )?;
    listing(&target, false)
}

fn every_snapshot(dir: &Path) -> Res<Vec<(String, Tree)>> {
    snapshot_ids(dir)?
        .into_iter()
        .map(|id| {
            let t = restored(dir, &id)?;
            Ok((id, t))
        })
        .collect()
}

fn config_format(backup: &Path) -> Res<u64> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(backup.join(".trove/config"))?)?;
    v["format"].as_u64().ok_or_else(|| "no format".into())
}

fn pack_files(backup: &Path) -> Res<Vec<PathBuf>> {
    Ok(damage::tree_packs(backup)?
        .into_iter()
        .map(|(p, _, _)| p)
        .collect())
}

fn tmp_is_empty(backup: &Path) -> Res<bool> {
    Ok(std::fs::read_dir(backup.join(".trove/tmp"))?
        .next()
        .is_none())
}

/// The format 1 fixture (tests/fixtures/make_v1_repo.sh) unpacked.
pub(crate) fn unpack_v1_fixture(into: &Path) -> Res<()> {
    let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-repo.tar.gz");
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(into)
        .status()?;
    if !st.success() {
        return Err(format!("tar -xzf {} failed", archive.display()).into());
    }
    Ok(())
}

#[test]
fn each_run_writes_its_trees_as_one_pack_and_verify_and_restore_read_them() -> TestResult {
    let env = TestEnv::new()?;
    for d in 0..20 {
        env.write(&format!("dir{d}/sub/f.txt"), format!("{d}"))?;
    }
    env.backup_ok(&[])?;
    assert_eq!(config_format(&env.backup)?, 2);
    assert!(!env.dst(".trove/trees").exists(), "no loose trees");
    assert_eq!(pack_files(&env.backup)?.len(), 1);
    env.write("dir3/sub/f.txt", "changed")?;
    env.backup_ok(&[])?;
    assert_eq!(pack_files(&env.backup)?.len(), 2, "one pack per run");
    // A run with nothing new writes no pack.
    env.backup_ok(&[])?;
    assert_eq!(pack_files(&env.backup)?.len(), 2);
    ok(env.repo_cmd(&["verify"])?, "verify")?;
    let t = env.root().join("restored");
    ok(
        env.repo_cmd(&["restore", "--target", t.to_str().ok_or("path")?])?,
        "restore",
    )?;
    assert_eq!(listing(&t, false)?, listing(&env.source, false)?);
    Ok(())
}

/// Forgetting snapshots removes their trees a pack at a time: the packs
/// only they used are deleted, a mostly dead one is rewritten, and every
/// kept snapshot still verifies and restores.
#[test]
fn prune_deletes_dead_packs_repacks_mostly_dead_ones_and_loses_no_kept_tree() -> TestResult {
    let env = TestEnv::new()?;
    std::fs::write(
        env.root().join("config.json"),
        r#"{ "sources": ["./source"], "backup_root": "./backup" }"#,
    )?;
    for d in 0..12 {
        env.write(&format!("d{d}/f.txt"), format!("{d} v0"))?;
    }
    ok(trove_in(env.root(), &["backup"])?, "backup 0")?;
    // Runs 1-3 each change most folders: their packs are mostly trees
    // only their own snapshot uses.
    for g in 1..4 {
        for d in 0..10 {
            env.write(&format!("d{d}/f.txt"), format!("{d} v{g}"))?;
        }
        ok(trove_in(env.root(), &["backup"])?, "backup")?;
    }
    let packs_before = pack_files(&env.backup)?;
    assert_eq!(packs_before.len(), 4);
    let trees_before = damage::tree_hashes(&env.backup)?;
    let ids = snapshot_ids(env.root())?;
    let latest = restored(env.root(), ids.last().ok_or("no snapshot")?)?;
    let o = ok(
        trove_in(env.root(), &["--json", "prune", "--keep-last", "1"])?,
        "prune --keep-last 1",
    )?;
    let report: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let packs_after = pack_files(&env.backup)?;
    let trees_after = damage::tree_hashes(&env.backup)?;
    assert!(
        packs_after.len() < packs_before.len(),
        "{packs_before:?} → {packs_after:?}"
    );
    assert!(trees_after.len() < trees_before.len());
    assert!(
        report.to_string().contains("trees"),
        "the report counts trees: {report}"
    );
    ok(env.repo_cmd(&["verify"])?, "verify after prune")?;
    assert_eq!(snapshot_ids(env.root())?.len(), 1);
    assert_eq!(restored(env.root(), "latest")?, latest);
    assert!(tmp_is_empty(&env.backup)?);
    // A second collection finds nothing more to do with the packs.
    ok(
        trove_in(env.root(), &["prune", "--keep-last", "1"])?,
        "prune again",
    )?;
    assert_eq!(pack_files(&env.backup)?.len(), packs_after.len());
    Ok(())
}

#[test]
fn a_format_1_repository_made_by_the_previous_trove_is_read_then_upgraded_by_the_first_writer(
) -> TestResult {
    let t = tempfile::tempdir()?;
    let dir = t.path();
    unpack_v1_fixture(dir)?;
    let backup = dir.join("backup");
    assert_eq!(config_format(&backup)?, 1);
    let loose = damage::tree_hashes(&backup)?;
    assert!(!loose.is_empty());
    // Readers take it as it is, and change nothing.
    ok(
        trove_in(dir, &["--repo", "backup", "verify"])?,
        "verify (format 1)",
    )?;
    let before = every_snapshot(dir)?;
    assert_eq!(before.len(), 3);
    assert_eq!(config_format(&backup)?, 1);
    assert!(backup.join(".trove/trees").is_dir());
    assert!(!backup.join(".trove/packs").exists());
    // The first writer upgrades it.
    ok(trove_in(dir, &["backup"])?, "backup (upgrades)")?;
    assert_eq!(config_format(&backup)?, 2);
    assert!(!backup.join(".trove/trees").exists(), "trees/ is gone");
    assert!(!pack_files(&backup)?.is_empty());
    assert!(
        damage::tree_hashes(&backup)?.is_superset(&loose),
        "every tree was carried into the packs"
    );
    ok(
        trove_in(dir, &["--repo", "backup", "verify"])?,
        "verify (format 2)",
    )?;
    for (id, tree) in &before {
        assert_eq!(&restored(dir, id)?, tree, "snapshot {id} after the upgrade");
    }
    assert_eq!(
        restored(dir, "latest")?,
        listing(&dir.join("source"), false)?
    );
    assert!(tmp_is_empty(&backup)?);
    // And stays upgraded: later runs write packs.
    std::fs::write(dir.join("source/after.txt"), "after the upgrade")?;
    ok(trove_in(dir, &["backup"])?, "backup after")?;
    ok(
        trove_in(dir, &["--repo", "backup", "verify"])?,
        "verify after",
    )?;
    Ok(())
}

/// An upgrade killed after some packs were written (config still
/// format 1), or after the config was rewritten (trees/ still there): a
/// reader reads either correctly, and the next writer finishes.
#[test]
fn an_interrupted_upgrade_is_read_correctly_and_finished_by_the_next_writer() -> TestResult {
    // Some trees already packed, config still format 1, a torn pack in tmp/.
    let t = tempfile::tempdir()?;
    let dir = t.path();
    unpack_v1_fixture(dir)?;
    let backup = dir.join("backup");
    let before = every_snapshot(dir)?;
    let loose = damage::tree_hashes(&backup)?;
    let some: Vec<([u8; 32], Vec<u8>)> = loose
        .iter()
        .take(loose.len() / 2)
        .map(|h| -> Res<_> {
            Ok((
                damage::id_of(h)?,
                std::fs::read(damage::tree_path(&backup, h)?)?,
            ))
        })
        .collect::<Res<_>>()?;
    damage::add_tree_pack(&backup, &some)?;
    std::fs::write(backup.join(".trove/tmp/pack-1-1"), b"trvP\x01torn")?;
    ok(
        trove_in(dir, &["--repo", "backup", "verify"])?,
        "verify mid-upgrade",
    )?;
    ok(trove_in(dir, &["backup"])?, "backup finishing the upgrade")?;
    assert_eq!(config_format(&backup)?, 2);
    assert!(!backup.join(".trove/trees").exists());
    assert!(damage::tree_hashes(&backup)?.is_superset(&loose));
    ok(trove_in(dir, &["--repo", "backup", "verify"])?, "verify")?;
    for (id, tree) in &before {
        assert_eq!(&restored(dir, id)?, tree);
    }
    assert!(tmp_is_empty(&backup)?);

    // Config already format 2, trees/ not yet removed.
    let t2 = tempfile::tempdir()?;
    let dir2 = t2.path();
    unpack_v1_fixture(dir2)?;
    ok(trove_in(dir2, &["backup"])?, "upgrade")?;
    let backup2 = dir2.join("backup");
    let fresh = tempfile::tempdir()?;
    unpack_v1_fixture(fresh.path())?;
    let st = Command::new("cp")
        .arg("-a")
        .arg(fresh.path().join("backup/.trove/trees"))
        .arg(backup2.join(".trove/trees"))
        .status()?;
    assert!(st.success());
    ok(
        trove_in(dir2, &["--repo", "backup", "verify"])?,
        "verify with leftover trees/",
    )?;
    assert!(
        backup2.join(".trove/trees").exists(),
        "a reader removes nothing"
    );
    ok(trove_in(dir2, &["backup"])?, "backup removing trees/")?;
    assert!(!backup2.join(".trove/trees").exists());
    ok(trove_in(dir2, &["--repo", "backup", "verify"])?, "verify")?;
    Ok(())
}

#[test]
fn a_repository_format_newer_than_this_trove_is_refused_by_name() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", "a")?;
    env.backup_ok(&[])?;
    let cfg = env.dst(".trove/config");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg)?)?;
    v["format"] = serde_json::json!(3);
    damage::make_writable(&cfg)?;
    std::fs::write(&cfg, serde_json::to_vec_pretty(&v)?)?;
    let packs = pack_files(&env.backup)?;
    for args in [vec!["verify"], vec!["ls"]] {
        let o = env.repo_cmd(&args)?;
        assert!(!o.status.success(), "{args:?} accepted format 3");
        let said = text(&o);
        assert!(
            said.contains("format version 3") && said.contains("upgrade trove"),
            "{args:?}: {said}"
        );
    }
    let r = env.backup(&[])?;
    assert_ne!(r.code, Some(0), "backup accepted format 3");
    assert_eq!(config_format(&env.backup)?, 3, "nothing rewrote the config");
    assert_eq!(pack_files(&env.backup)?, packs);
    Ok(())
}

/// A pack replaced by garbage, truncated or swapped for something that
/// is not a file: `verify` names it, and a collection never deletes it.
#[test]
fn a_damaged_pack_is_named_by_verify_and_never_collected() -> TestResult {
    let env = TestEnv::new()?;
    env.write("keep/a.txt", "a")?;
    env.backup_ok(&[])?;
    let first = pack_files(&env.backup)?;
    env.write("b.txt", "b")?;
    env.backup_ok(&[])?;
    let newest: Vec<PathBuf> = pack_files(&env.backup)?
        .into_iter()
        .filter(|p| !first.contains(p))
        .collect();
    let [p] = newest.as_slice() else {
        return Err(format!("one new pack expected: {newest:?}").into());
    };
    let len = std::fs::metadata(p)?.len();
    damage::truncate_file(p, len - 3)?;
    let o = env.repo_cmd(&["verify"])?;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let name = p.file_name().ok_or("name")?.to_string_lossy().into_owned();
    assert!(
        text(&o).contains(&name),
        "verify names the pack: {}",
        text(&o)
    );
    // prune refuses to collect over it (a tree it held is unreadable),
    // and the pack stays.
    let _ = env.repo_cmd(&["prune"])?;
    assert!(p.exists());
    Ok(())
}
