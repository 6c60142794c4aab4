//! SPEC §7 retention and §6 crash safety of garbage collection:
//! `retention.max_versions_per_file` (numbers never restart, every removal
//! logged), garbage collection freeing disk space while never touching
//! content something still references (duplicates, `_deleted/`, kept
//! versions, snapshots a keep policy retains), `trove prune` with and
//! without a snapshot policy (`--dry-run` and `--json` included),
//! `trove stats`, restoring a snapshot whose content retention removed,
//! `retention.deleted_max_age_days`, SIGKILL during a prune or a
//! collecting backup, and the prune lock.
//!
//! Every test runs from a temporary folder holding a `config.json` with
//! `"sources": ["./source"], "backup_root": "./backup"` (the seed's
//! format), so `trove backup`, `prune`, `stats`, `verify` and `restore` run
//! without paths, exactly as a user of the seed would run them.

use crate::common::{
    list_logs, listing, log_messages, show, stat_differences, stat_listing, trove_bin, Lcg, Node,
    Res, Run, TestEnv, TestResult,
};
use crate::damage::{object_hashes, object_path, snapshot_path};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Helpers

/// Write `ROOT/config.json` naming `./source` and `./backup`, with this
/// `retention` object.
fn write_config(env: &TestEnv, retention: Value) -> TestResult {
    let cfg = json!({
        "sources": ["./source"],
        "backup_root": "./backup",
        "retention": retention,
    });
    std::fs::write(
        env.root().join("config.json"),
        serde_json::to_vec_pretty(&cfg)?,
    )?;
    Ok(())
}

/// `trove ARGS…` from the env's root (so `./config.json` applies), with the
/// audit log this run wrote.
fn trove(env: &TestEnv, args: &[&str]) -> Res<Run> {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    env.run_in(&args, &env.log_dir())
}

/// `trove ARGS…`, which must exit 0.
fn trove_ok(env: &TestEnv, args: &[&str]) -> Res<Run> {
    let r = trove(env, args)?;
    r.expect_code(0);
    Ok(r)
}

/// `trove backup` with no paths: the config's sources, backup root and
/// retention settings.
fn backup(env: &TestEnv) -> Res<Run> {
    trove_ok(env, &["backup"])
}

/// stdout of a `--json` run, parsed.
fn json_of(r: &Run) -> Res<Value> {
    serde_json::from_str(&r.stdout)
        .map_err(|e| format!("not JSON ({e}):\n{}\n--- stderr\n{}", r.stdout, r.stderr).into())
}

/// Every audit log message of every run so far, in file-name order.
fn all_log_messages(env: &TestEnv) -> Res<Vec<String>> {
    let mut out = Vec::new();
    for p in list_logs(&env.log_dir()) {
        out.extend(log_messages(&std::fs::read_to_string(p)?));
    }
    Ok(out)
}

/// The name trove gives a content in `.trove/objects/` (BLAKE3, the default).
fn hash_of(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

fn has_object(env: &TestEnv, data: &[u8]) -> Res<bool> {
    Ok(object_path(&env.backup, &hash_of(data))?.exists())
}

/// `trove restore --snapshot SNAP --target TARGET`.
fn restore(env: &TestEnv, snap: &str, target: &Path) -> Res<Run> {
    let args: Vec<&OsStr> = vec![
        OsStr::new("restore"),
        OsStr::new("--snapshot"),
        OsStr::new(snap),
        OsStr::new("--target"),
        target.as_os_str(),
    ];
    env.run_in(&args, &env.log_dir())
}

/// The regular files below `root` with their bytes.
fn files_of(root: &Path) -> Res<BTreeMap<String, Vec<u8>>> {
    Ok(listing(root, false)?
        .into_iter()
        .filter_map(|(p, n)| match n {
            Node::File(d) => Some((show(&p), d)),
            _ => None,
        })
        .collect())
}

/// Bytes allocated on disk below `dir`, as `du` counts them: st_blocks of
/// every regular file, each inode once (the browsable tree hardlinks the
/// objects).
fn allocated_bytes(dir: &Path) -> Res<u64> {
    fn rec(dir: &Path, seen: &mut HashSet<(u64, u64)>, total: &mut u64) -> TestResult {
        for ent in std::fs::read_dir(dir)? {
            let p = ent?.path();
            let m = std::fs::symlink_metadata(&p)?;
            if m.is_dir() {
                rec(&p, seen, total)?;
            } else if m.is_file() && seen.insert((m.dev(), m.ino())) {
                *total += m.blocks() * 512;
            }
        }
        Ok(())
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    rec(dir, &mut seen, &mut total)?;
    Ok(total)
}

/// Entries of `.trove/<sub>/` by name (empty when the folder is absent).
fn names_in(env: &TestEnv, sub: &str) -> Res<BTreeSet<String>> {
    let dir = env.dst(".trove").join(sub);
    if !dir.exists() {
        return Ok(BTreeSet::new());
    }
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(dir)? {
        out.insert(e?.file_name().to_string_lossy().into_owned());
    }
    Ok(out)
}

/// The `versions/<rel>/` folder's file names and contents.
fn versions_of(env: &TestEnv, rel: &str) -> Res<BTreeMap<String, Vec<u8>>> {
    let dir = env.dst("versions").join(rel);
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        out.insert(
            e.file_name().to_string_lossy().into_owned(),
            std::fs::read(e.path())?,
        );
    }
    Ok(out)
}

/// How many log messages equal `m` exactly.
fn count(messages: &[String], m: &str) -> usize {
    messages.iter().filter(|x| x.as_str() == m).count()
}

/// The problems of a `verify --json` report.
fn problems(report: &Value) -> Vec<Value> {
    report["problems"].as_array().cloned().unwrap_or_default()
}

/// Short ids (`id`) of a list of snapshot fates in a prune report.
fn fate_ids(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// 1. The seed walkthrough

#[test]
fn seed_walkthrough_keeps_the_newest_three_versions_and_numbers_never_restart() -> TestResult {
    let env = TestEnv::new()?;
    write_config(&env, json!({"max_versions_per_file": 3}))?;
    let content = |n: u32| format!("one, content number {n}\n").into_bytes();

    env.write("one.txt", content(0))?;
    backup(&env)?;
    for n in 1..=5 {
        env.write("one.txt", content(n))?;
        let r = backup(&env)?;
        r.assert_message(&format!(
            "ARCHIVE: backup/one.txt → versions/one.txt/v{n}.bak"
        ));
    }

    // Exactly v3, v4, v5 remain; vK holds the content before the K-th
    // modification, i.e. content(K-1).
    let want: BTreeMap<String, Vec<u8>> = (3..=5)
        .map(|k| (format!("v{k}.bak"), content(k - 1)))
        .collect();
    assert_eq!(versions_of(&env, "one.txt")?, want);
    assert_eq!(std::fs::read(env.dst("one.txt"))?, content(5));

    let msgs = all_log_messages(&env)?;
    for k in 1..=2 {
        let line = format!("RETENTION delete: versions/one.txt/v{k}.bak");
        assert_eq!(count(&msgs, &line), 1, "{line:?} in the logs:\n{msgs:#?}");
    }
    assert!(
        !msgs
            .iter()
            .any(|m| m.starts_with("RETENTION delete: versions/one.txt/v3")),
        "v3 was not removed: {msgs:#?}"
    );

    // Garbage collection ran: the removed versions' contents left the
    // store (each logged), the kept ones are there.
    for n in 0..=1 {
        let data = content(n);
        assert!(!has_object(&env, &data)?, "content {n} still stored");
        let line = format!("GC delete object {} ({} bytes)", hash_of(&data), data.len());
        assert_eq!(count(&msgs, &line), 1, "{line:?} in the logs:\n{msgs:#?}");
    }
    for n in 2..=5 {
        assert!(has_object(&env, &content(n))?, "content {n} lost");
    }
    // Every record stays (no keep rule); the first two snapshots, whose
    // file held a removed content, restore only in part, the third fully.
    let ids = env.snapshot_ids()?;
    assert_eq!(ids.len(), 6);
    for (i, (id, _)) in ids.iter().enumerate().take(3) {
        let t = env.root().join(format!("restore-{i}"));
        let r = restore(&env, id, &t)?;
        if i < 2 {
            r.expect_code(1);
            assert!(r.stdout.contains("missing: one.txt: "), "{}", r.stdout);
            assert!(!t.join("one.txt").exists());
        } else {
            r.expect_code(0);
            assert_eq!(std::fs::read(t.join("one.txt"))?, content(2));
        }
    }
    trove_ok(&env, &["verify"])?;

    // A sixth modification is v6, not a reused number, and v3 goes.
    env.write("one.txt", content(6))?;
    let r = backup(&env)?;
    r.assert_message("ARCHIVE: backup/one.txt → versions/one.txt/v6.bak");
    r.assert_message("RETENTION delete: versions/one.txt/v3.bak");
    let want: BTreeMap<String, Vec<u8>> = (4..=6)
        .map(|k| (format!("v{k}.bak"), content(k - 1)))
        .collect();
    assert_eq!(versions_of(&env, "one.txt")?, want);
    let msgs = all_log_messages(&env)?;
    for k in 1..=3 {
        let line = format!("RETENTION delete: versions/one.txt/v{k}.bak");
        assert_eq!(count(&msgs, &line), 1, "{line:?} in the logs:\n{msgs:#?}");
    }
    trove_ok(&env, &["verify"])?;
    Ok(())
}

// ---------------------------------------------------------------------------
// 2. Garbage collection frees disk space

const MIB: usize = 1024 * 1024;

/// `a.bin` and `b.bin` (2 MiB of random bytes each) backed up in four
/// generations under the default limit: versions v1..v3 of each. Returns
/// the contents by generation: `[generation][0 = a, 1 = b]`.
fn four_generations_of_two_big_files(env: &TestEnv) -> Res<Vec<[Vec<u8>; 2]>> {
    let mut rng = Lcg(0x9c_2024);
    let mut gens = Vec::new();
    for _ in 0..4 {
        let g = [rng.bytes(2 * MIB), rng.bytes(2 * MIB)];
        env.write("a.bin", &g[0])?;
        env.write("b.bin", &g[1])?;
        backup(env)?;
        gens.push(g);
    }
    Ok(gens)
}

#[test]
fn prune_after_lowering_max_versions_frees_the_disk_space_of_the_expired_versions() -> TestResult {
    let env = TestEnv::new()?;
    write_config(&env, json!({"max_versions_per_file": 10}))?;
    let gens = four_generations_of_two_big_files(&env)?;
    assert_eq!(versions_of(&env, "a.bin")?.len(), 3);
    let snaps_before = env.snapshot_count()?;

    // Lower the limit to one version: v1 and v2 of both files expire.
    write_config(&env, json!({"max_versions_per_file": 1}))?;
    let expired: BTreeMap<String, u64> = gens[..2]
        .iter()
        .flatten()
        .map(|d| (hash_of(d), d.len() as u64))
        .collect();
    let expired_bytes: u64 = expired.values().sum();
    assert_eq!(expired.len(), 4);

    let objects_before = allocated_bytes(&env.dst(".trove/objects"))?;
    let r = trove_ok(&env, &["prune", "--json"])?;
    let objects_after = allocated_bytes(&env.dst(".trove/objects"))?;

    assert!(
        objects_before.saturating_sub(objects_after) >= expired_bytes,
        ".trove/objects shrank by {} bytes only",
        objects_before.saturating_sub(objects_after)
    );

    // The report names exactly what went.
    let rep = json_of(&r)?;
    assert_eq!(rep["retention_removed"], 4, "{rep:#}");
    assert!(rep["retention_snapshot"].is_string(), "{rep:#}");
    assert_eq!(rep["gc"]["objects_removed"], 4, "{rep:#}");
    assert_eq!(rep["gc"]["object_bytes_removed"], expired_bytes, "{rep:#}");
    let listed: BTreeMap<String, u64> = rep["gc"]["objects"]
        .as_array()
        .ok_or("gc.objects is not a list")?
        .iter()
        .map(|o| {
            (
                o["id"].as_str().unwrap_or_default().to_string(),
                o["size"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(listed, expired);
    // Every removal is in the audit log, and each object file is gone.
    for (h, size) in &expired {
        r.assert_message(&format!("GC delete object {h} ({size} bytes)"));
        assert!(!object_path(&env.backup, h)?.exists(), "object {h} left");
    }
    for k in 1..=2 {
        r.assert_message(&format!("RETENTION delete: versions/a.bin/v{k}.bak"));
        r.assert_message(&format!("RETENTION delete: versions/b.bin/v{k}.bak"));
    }
    // What stays: the latest files and the newest version of each.
    let want: BTreeMap<String, Vec<u8>> = [("v3.bak".to_string(), gens[2][0].clone())].into();
    assert_eq!(versions_of(&env, "a.bin")?, want);
    assert_eq!(std::fs::read(env.dst("b.bin"))?, gens[3][1]);
    let left: BTreeSet<String> = gens[2..].iter().flatten().map(|d| hash_of(d)).collect();
    assert_eq!(object_hashes(&env.backup)?, left);
    // The trimmed archive is recorded in a new snapshot; no record went.
    assert_eq!(env.snapshot_count()?, snaps_before + 1);

    trove_ok(&env, &["verify"])?;
    let st = json_of(&trove_ok(&env, &["stats", "--json"])?)?;
    assert_eq!(st["reclaimable_bytes"], 0, "{st:#}");
    assert_eq!(st["reclaimable_objects"], 0, "{st:#}");
    assert_eq!(st["objects"], 4, "{st:#}");
    assert_eq!(st["versions"], 2, "{st:#}");
    assert_eq!(st["stored_bytes"], 8 * MIB as u64, "{st:#}");

    // A second prune finds nothing to do.
    let rep = json_of(&trove_ok(&env, &["prune", "--json"])?)?;
    assert_eq!(rep["retention_removed"], 0, "{rep:#}");
    assert_eq!(rep["gc"]["objects_removed"], 0, "{rep:#}");
    assert_eq!(env.snapshot_count()?, snaps_before + 1);

    // Numbering goes on after the trim: the next version of a.bin is v4,
    // and v3 goes (one version kept).
    let newer = Lcg(0x4e_57).bytes(MIB);
    env.write("a.bin", &newer)?;
    let r = backup(&env)?;
    r.assert_message("ARCHIVE: backup/a.bin → versions/a.bin/v4.bak");
    r.assert_message("RETENTION delete: versions/a.bin/v3.bak");
    let want: BTreeMap<String, Vec<u8>> = [("v4.bak".to_string(), gens[3][0].clone())].into();
    assert_eq!(versions_of(&env, "a.bin")?, want);
    assert!(
        !has_object(&env, &gens[2][0])?,
        "the expired v3 is still stored"
    );
    trove_ok(&env, &["verify"])?;
    Ok(())
}

/// `prune --dry-run` and `stats` predict what `prune` removes: after the
/// limit is lowered, the versions beyond it are removed by the prune, so
/// their objects are reclaimable and the dry run lists them.
#[test]
fn dry_run_and_stats_predict_the_objects_a_lowered_max_versions_frees() -> TestResult {
    let env = TestEnv::new()?;
    write_config(&env, json!({"max_versions_per_file": 10}))?;
    let gens = four_generations_of_two_big_files(&env)?;
    write_config(&env, json!({"max_versions_per_file": 1}))?;
    let expired: BTreeMap<String, u64> = gens[..2]
        .iter()
        .flatten()
        .map(|d| (hash_of(d), d.len() as u64))
        .collect();
    let expired_bytes: u64 = expired.values().sum();

    let before = stat_listing(&env.backup, false)?;
    let dry = trove_ok(&env, &["prune", "--dry-run"])?;
    let after = stat_listing(&env.backup, false)?;
    let diff = stat_differences(&before, &after);
    assert!(
        diff.is_empty(),
        "the dry run changed the repository: {diff:#?}"
    );

    let st = json_of(&trove_ok(&env, &["stats", "--json"])?)?;
    let real = json_of(&trove_ok(&env, &["prune", "--json"])?)?;
    assert_eq!(
        real["gc"]["object_bytes_removed"], expired_bytes,
        "{real:#}"
    );

    let would: BTreeMap<String, u64> = dry
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("would delete object "))
        .filter_map(|rest| {
            let (h, size) = rest.split_once(" (")?;
            Some((h.to_string(), size.strip_suffix(" bytes)")?.parse().ok()?))
        })
        .collect();
    assert_eq!(
        would, expired,
        "prune --dry-run lists other objects than prune removes\n--- dry run stdout\n{}",
        dry.stdout
    );
    assert!(
        dry.stdout
            .contains("prune: would remove 0 snapshots, 4 versions/deleted entries, 4 objects"),
        "dry-run summary: {}",
        dry.stdout
    );
    assert_eq!(
        st["reclaimable_bytes"], expired_bytes,
        "stats before the prune: {st:#}"
    );
    assert_eq!(
        st["reclaimable_objects"], 4,
        "stats before the prune: {st:#}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// 3. Shared content is never collected while something references it

#[test]
fn objects_shared_with_duplicates_and_deleted_entries_survive_expiry() -> TestResult {
    let env = TestEnv::new()?;
    write_config(&env, json!({"max_versions_per_file": 1}))?;
    let x = b"X: a.txt's first content, also b.txt's\n".to_vec();
    let w = b"W: d.txt's first content, also e.txt's, which is then deleted\n".to_vec();
    let v = |p: &str, n: u32| format!("{p} generation {n}\n").into_bytes();

    // S1: a = X, b = X (duplicate), d = W, e = W (duplicate).
    env.write("a.txt", &x)?;
    env.write("b.txt", &x)?;
    env.write("d.txt", &w)?;
    env.write("e.txt", &w)?;
    let r = backup(&env)?;
    r.assert_message("DUPLICATE: source/b.txt → backup/_duplicates/b.txt");
    // S2: e leaves the source; W lives on in _deleted/e.txt.
    std::fs::remove_file(env.src("e.txt"))?;
    backup(&env)?;
    assert_eq!(std::fs::read(env.dst("_deleted/e.txt"))?, w);
    // S3..S5: a and d change three times; X and W become versions, then
    // expire, as do the first new generations.
    for n in 1..=3 {
        env.write("a.txt", v("a", n))?;
        env.write("d.txt", v("d", n))?;
        backup(&env)?;
    }
    let msgs = all_log_messages(&env)?;
    for line in [
        "RETENTION delete: versions/a.txt/v1.bak",
        "RETENTION delete: versions/d.txt/v1.bak",
        "RETENTION delete: versions/a.txt/v2.bak",
        "RETENTION delete: versions/d.txt/v2.bak",
    ] {
        assert_eq!(count(&msgs, line), 1, "{line:?} in the logs:\n{msgs:#?}");
    }
    assert_eq!(versions_of(&env, "a.txt")?.len(), 1);

    // X (still b.txt) and W (still _deleted/e.txt) stay; the first new
    // generations, referenced by nothing the latest snapshot keeps, go.
    assert!(
        has_object(&env, &x)?,
        "X was collected though b.txt uses it"
    );
    assert!(
        has_object(&env, &w)?,
        "W was collected though _deleted/e.txt uses it"
    );
    assert!(
        !has_object(&env, &v("a", 1))?,
        "a generation 1 was not collected"
    );
    assert!(
        !has_object(&env, &v("d", 1))?,
        "d generation 1 was not collected"
    );
    for line in [
        format!("GC delete object {}", hash_of(&x)),
        format!("GC delete object {}", hash_of(&w)),
    ] {
        assert!(
            !msgs.iter().any(|m| m.starts_with(&line)),
            "{line:?} in the logs"
        );
    }
    assert_eq!(std::fs::read(env.dst("_duplicates/b.txt"))?, x);
    assert_eq!(std::fs::read(env.dst("_deleted/e.txt"))?, w);

    // A prune agrees: nothing more to collect.
    let rep = json_of(&trove_ok(&env, &["prune", "--json"])?)?;
    assert_eq!(rep["gc"]["objects_removed"], 0, "{rep:#}");
    assert!(has_object(&env, &x)? && has_object(&env, &w)?);

    trove_ok(&env, &["verify"])?;
    // The first snapshot's files are X and W: still fully restorable.
    let ids = env.snapshot_ids()?;
    let t1 = env.root().join("restore-first");
    restore(&env, &ids[0].0, &t1)?.expect_code(0);
    let want: BTreeMap<String, Vec<u8>> = [
        ("a.txt".to_string(), x.clone()),
        ("b.txt".to_string(), x.clone()),
        ("d.txt".to_string(), w.clone()),
        ("e.txt".to_string(), w.clone()),
    ]
    .into();
    assert_eq!(files_of(&t1)?, want);
    // The latest restores as the source.
    let t2 = env.root().join("restore-latest");
    restore(&env, "latest", &t2)?.expect_code(0);
    assert_eq!(files_of(&t2)?, files_of(&env.source)?);

    // stats: logical bytes count every path shown once; stored bytes each
    // content once.
    let st = json_of(&trove_ok(&env, &["stats", "--json"])?)?;
    let latest_bytes = (v("a", 3).len() + x.len() + v("d", 3).len()) as u64;
    let version_bytes = (v("a", 2).len() + v("d", 2).len()) as u64;
    let deleted_bytes = w.len() as u64;
    assert_eq!(st["versions"], 2, "{st:#}");
    assert_eq!(st["deleted"], 1, "{st:#}");
    assert_eq!(st["latest"]["files"], 3, "{st:#}");
    assert_eq!(st["latest"]["bytes"], latest_bytes, "{st:#}");
    assert_eq!(
        st["logical_bytes"],
        latest_bytes + version_bytes + deleted_bytes,
        "{st:#}"
    );
    assert_eq!(st["objects"], 6, "{st:#}");
    assert_eq!(st["snapshots"], 5, "{st:#}");
    assert_eq!(st["reclaimable_bytes"], 0, "{st:#}");
    let stored = st["stored_bytes"].as_f64().ok_or("stored_bytes")?;
    let ratio = st["dedup_ratio"].as_f64().ok_or("dedup_ratio")?;
    let logical = st["logical_bytes"].as_f64().ok_or("logical_bytes")?;
    assert!((ratio - logical / stored).abs() < 1e-6, "{st:#}");
    Ok(())
}

// ---------------------------------------------------------------------------
// 4. Snapshot policy

#[test]
fn prune_keep_last_forgets_the_other_snapshots_and_collects_only_their_content() -> TestResult {
    let env = TestEnv::new()?;
    // keep_last 10 pins every snapshot while they are made.
    write_config(&env, json!({"max_versions_per_file": 1, "keep_last": 10}))?;
    let a = |n: u32| format!("a generation {n}\n").into_bytes();
    let b = b"b never changes\n".to_vec();
    let c = b"c is deleted in the third snapshot\n".to_vec();

    env.write("a.txt", a(1))?;
    env.write("b.txt", &b)?;
    env.write("c.txt", &c)?;
    backup(&env)?; // S1
    env.write("a.txt", a(2))?;
    backup(&env)?; // S2: v1 = a1
    env.write("a.txt", a(3))?;
    std::fs::remove_file(env.src("c.txt"))?;
    backup(&env)?; // S3: v2 = a2, v1 dropped, but S1 and S2 pin a1
    env.write("a.txt", a(4))?;
    backup(&env)?; // S4: v3 = a3
    let r = trove_ok(&env, &["backup", "--always-snapshot"])?; // S5, no change
    assert!(r.stdout.contains("snapshot"), "{}", r.stdout);
    let ids = env.snapshot_ids()?;
    assert_eq!(ids.len(), 5, "--always-snapshot wrote no snapshot");
    for n in 1..=4 {
        assert!(has_object(&env, &a(n))?, "a{n} is pinned by keep_last 10");
    }

    // Dry run: names exactly S1..S3 and a1, a2; changes nothing.
    let before = stat_listing(&env.backup, false)?;
    let dry = trove_ok(&env, &["prune", "--dry-run", "--keep-last", "2"])?;
    let after = stat_listing(&env.backup, false)?;
    let diff = stat_differences(&before, &after);
    assert!(
        diff.is_empty(),
        "the dry run changed the repository: {diff:#?}"
    );
    assert!(
        dry.log.is_empty(),
        "a dry run writes no audit log: {}",
        dry.log
    );
    let would_forget: BTreeSet<String> = dry
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("would forget snapshot "))
        .filter_map(|r| r.split_once(' ').map(|(id, _)| id.to_string()))
        .collect();
    let old: BTreeSet<String> = ids[..3].iter().map(|(s, _)| s.clone()).collect();
    assert_eq!(would_forget, old, "dry run:\n{}", dry.stdout);
    let would_delete: BTreeSet<String> = dry
        .stdout
        .lines()
        .filter(|l| l.starts_with("would delete object "))
        .map(String::from)
        .collect();
    let dead: BTreeSet<String> = [a(1), a(2)]
        .iter()
        .map(|d| format!("would delete object {} ({} bytes)", hash_of(d), d.len()))
        .collect();
    assert_eq!(would_delete, dead, "dry run:\n{}", dry.stdout);
    assert!(
        dry.stdout
            .contains("prune: would remove 3 snapshots, 0 versions/deleted entries, 2 objects"),
        "{}",
        dry.stdout
    );
    assert_eq!(env.snapshot_count()?, 5);

    // The real prune.
    let r = trove_ok(&env, &["prune", "--keep-last", "2", "--json"])?;
    let rep = json_of(&r)?;
    assert_eq!(fate_ids(&rep["gc"]["forgotten"]), old, "{rep:#}");
    let newest: BTreeSet<String> = ids[3..].iter().map(|(s, _)| s.clone()).collect();
    assert_eq!(fate_ids(&rep["gc"]["kept"]), newest, "{rep:#}");
    let kept = rep["gc"]["kept"].as_array().ok_or("gc.kept")?;
    for k in kept {
        let reasons: Vec<&str> = k["reasons"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert!(reasons.contains(&"last"), "{k:#}");
        if k["id"] == ids[4].0.as_str() {
            assert!(reasons.contains(&"latest"), "{k:#}");
        }
    }
    assert_eq!(rep["gc"]["objects_removed"], 2, "{rep:#}");
    assert!(
        rep["gc"]["trees_removed"].as_u64() > Some(0),
        "the forgotten snapshots' own trees stay: {rep:#}"
    );
    assert_eq!(rep["retention_removed"], 0, "{rep:#}");
    for s in &old {
        r.assert_message(&format!(
            "FORGET snapshot {s} ({}): outside the keep policy",
            dry_run_time_of(&dry, s)?
        ));
    }

    // Records: only S4 and S5 remain, on disk and in `trove snapshots`.
    let remaining: BTreeSet<String> = ids[3..].iter().map(|(_, f)| f.clone()).collect();
    assert_eq!(names_in(&env, "snapshots")?, remaining);
    for (_, full) in &ids[..3] {
        assert!(!snapshot_path(&env.backup, full).exists());
    }
    let listed = trove_ok(&env, &["snapshots"])?;
    assert_eq!(env.snapshot_count()?, 2, "{}", listed.stdout);
    // Content: a1, a2 went; a3 (S4's version), a4, b and c (_deleted/) stay.
    assert!(!has_object(&env, &a(1))? && !has_object(&env, &a(2))?);
    for d in [a(3), a(4), b.clone(), c.clone()] {
        assert!(has_object(&env, &d)?, "{:?} was collected", show(&d));
    }

    // A forgotten snapshot is gone; a kept one restores fully.
    let gone = restore(&env, &ids[0].0, &env.root().join("gone"))?;
    assert_ne!(
        gone.code,
        Some(0),
        "restoring a forgotten snapshot: {gone:?}"
    );
    let t = env.root().join("restore-s4");
    let r = restore(&env, &ids[3].0, &t)?;
    r.expect_code(0);
    assert!(!r.stdout.contains("missing:"), "{}", r.stdout);
    let want: BTreeMap<String, Vec<u8>> =
        [("a.txt".to_string(), a(4)), ("b.txt".to_string(), b)].into();
    assert_eq!(files_of(&t)?, want);
    trove_ok(&env, &["verify"])?;
    Ok(())
}

/// The time a dry run printed for snapshot `id` (`would forget snapshot ID (TIME)`).
fn dry_run_time_of(dry: &Run, id: &str) -> Res<String> {
    let prefix = format!("would forget snapshot {id} (");
    dry.stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.strip_suffix(')').map(String::from))
        .ok_or_else(|| format!("no time for {id} in:\n{}", dry.stdout).into())
}

#[test]
fn keep_last_in_the_config_forgets_snapshots_at_the_end_of_each_backup() -> TestResult {
    let env = TestEnv::new()?;
    write_config(&env, json!({"max_versions_per_file": 5, "keep_last": 2}))?;
    for n in 0..4 {
        env.write("f.txt", format!("f {n}\n"))?;
        let r = backup(&env)?;
        assert!(env.snapshot_count()? <= 2, "after backup {n}: {}", r.log);
    }
    assert_eq!(env.snapshot_count()?, 2);
    // Per-file retention is independent of the records: all versions stay.
    assert_eq!(versions_of(&env, "f.txt")?.len(), 3);
    trove_ok(&env, &["verify"])?;
    Ok(())
}

/// A keep rule in the config is applied at the end of every backup, also
/// one that finds no change: after the rule is added (or after a run that
/// applied it was interrupted), `trove backup` leaves only what it keeps.
#[test]
fn a_backup_without_changes_applies_a_newly_configured_keep_rule() -> TestResult {
    let env = TestEnv::new()?;
    write_config(&env, json!({"max_versions_per_file": 5}))?;
    for n in 0..3 {
        env.write("f.txt", format!("f {n}\n"))?;
        backup(&env)?;
    }
    assert_eq!(env.snapshot_count()?, 3);
    write_config(&env, json!({"max_versions_per_file": 5, "keep_last": 1}))?;
    let r = backup(&env)?;
    assert_eq!(
        env.snapshot_count()?,
        1,
        "keep_last 1 is configured, yet the backup left every record\n--- stdout\n{}\n--- log\n{}",
        r.stdout,
        r.log
    );
    Ok(())
}

/// With `log_dir` in the config, the retention and collection lines of
/// backups and prunes go there.
#[test]
fn retention_and_gc_lines_go_to_the_configured_log_dir() -> TestResult {
    let env = TestEnv::new()?;
    let cfg = json!({
        "sources": ["./source"],
        "backup_root": "./backup",
        "log_dir": "./logs",
        "retention": {"max_versions_per_file": 1},
    });
    std::fs::write(
        env.root().join("config.json"),
        serde_json::to_vec_pretty(&cfg)?,
    )?;
    let logs = env.root().join("logs");
    let f = |n: u32| format!("f {n}\n").into_bytes();
    for n in 0..3 {
        env.write("f.txt", f(n))?;
        let args: Vec<&OsStr> = vec![OsStr::new("backup")];
        env.run_in(&args, &logs)?.expect_code(0);
    }
    let args: Vec<&OsStr> = ["prune", "--keep-last", "1"].map(OsStr::new).to_vec();
    let r = env.run_in(&args, &logs)?;
    r.expect_code(0);
    assert!(
        r.messages()
            .iter()
            .any(|m| m.starts_with("FORGET snapshot ")),
        "{}",
        r.log
    );
    let mut msgs = Vec::new();
    for p in list_logs(&logs) {
        msgs.extend(log_messages(&std::fs::read_to_string(p)?));
    }
    assert_eq!(count(&msgs, "RETENTION delete: versions/f.txt/v1.bak"), 1);
    let gc = format!("GC delete object {} ({} bytes)", hash_of(&f(0)), f(0).len());
    assert_eq!(count(&msgs, &gc), 1, "{msgs:#?}");
    assert!(
        list_logs(&env.log_dir()).is_empty(),
        "logs written to .trove/logs despite log_dir"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// 5. No keep policy: records stay, old snapshots restore in part

#[test]
fn without_a_keep_policy_records_stay_and_an_expired_snapshot_restores_in_part() -> TestResult {
    let env = TestEnv::new()?;
    write_config(&env, json!({"max_versions_per_file": 1}))?;
    let a = |n: u32| format!("a generation {n}\n").into_bytes();
    let c = |n: u32| format!("sub/c generation {n}\n").into_bytes();
    let b = b"b never changes\n".to_vec();
    env.write("b.txt", &b)?;
    for n in 1..=3 {
        env.write("a.txt", a(n))?;
        env.write("sub/c.txt", c(n))?;
        backup(&env)?;
    }
    // S3 dropped v1 (a1, c1): gone from the store.
    assert!(!has_object(&env, &a(1))? && !has_object(&env, &c(1))?);
    let ids = env.snapshot_ids()?;
    assert_eq!(ids.len(), 3);

    // prune without a keep rule: every record stays.
    let rep = json_of(&trove_ok(&env, &["prune", "--json"])?)?;
    assert!(fate_ids(&rep["gc"]["forgotten"]).is_empty(), "{rep:#}");
    let after: Vec<(String, String)> = env.snapshot_ids()?;
    assert_eq!(after, ids, "prune without keep rules changed the records");
    let st = json_of(&trove_ok(&env, &["stats", "--json"])?)?;
    assert_eq!(st["snapshots"], 3, "{st:#}");
    // Only the latest must stay complete.
    assert_eq!(st["pinned_snapshots"], 1, "{st:#}");

    // Restoring S1: b comes back, a and sub/c are named, exit 1.
    let t = env.root().join("restore-s1");
    let r = restore(&env, &ids[0].0, &t)?;
    r.expect_code(1);
    let missing: BTreeSet<String> = r
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("missing: "))
        .filter_map(|l| l.split_once(": ").map(|(p, _)| p.to_string()))
        .collect();
    assert_eq!(
        missing,
        ["a.txt".to_string(), "sub/c.txt".to_string()].into(),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("retention"), "{}", r.stdout);
    let want: BTreeMap<String, Vec<u8>> = [("b.txt".to_string(), b.clone())].into();
    assert_eq!(files_of(&t)?, want);
    assert!(
        t.join("sub").is_dir(),
        "the directory of a missing file is restored"
    );

    // S2's contents are all still there (a2, c2 are the kept versions).
    let t2 = env.root().join("restore-s2");
    restore(&env, &ids[1].0, &t2)?.expect_code(0);
    let want: BTreeMap<String, Vec<u8>> = [
        ("a.txt".to_string(), a(2)),
        ("b.txt".to_string(), b),
        ("sub/c.txt".to_string(), c(2)),
    ]
    .into();
    assert_eq!(files_of(&t2)?, want);

    // verify accepts what retention removed, and says so.
    let v = trove_ok(&env, &["verify"])?;
    assert!(v.stdout.contains("verify: "), "{}", v.stdout);
    assert!(v.stdout.contains("removed by retention"), "{}", v.stdout);
    assert!(v.stdout.contains(", 0 problems"), "{}", v.stdout);
    Ok(())
}

// ---------------------------------------------------------------------------
// 6. deleted_max_age_days

/// With `deleted_max_age_days: 0` a deleted entry is kept by the run that
/// deleted it (its age is 0, not more than 0) and removed by the next run,
/// prune or backup alike; with 1 day it stays.
#[test]
fn deleted_entries_expire_after_deleted_max_age_days() -> TestResult {
    let env = TestEnv::new()?;
    write_config(
        &env,
        json!({"max_versions_per_file": 10, "deleted_max_age_days": 0}),
    )?;
    let g = b"gone.txt, deleted in the second run\n".to_vec();
    let h = b"later.txt, deleted in the fourth run\n".to_vec();
    env.write("keep.txt", "keep\n")?;
    env.write("gone.txt", &g)?;
    env.write("later.txt", &h)?;
    backup(&env)?;
    std::fs::remove_file(env.src("gone.txt"))?;
    backup(&env)?;
    assert_eq!(std::fs::read(env.dst("_deleted/gone.txt"))?, g);

    // The next run, a prune, removes it and collects its content.
    let snaps = env.snapshot_count()?;
    let r = trove_ok(&env, &["prune", "--json"])?;
    r.assert_message("RETENTION delete: _deleted/gone.txt");
    let rep = json_of(&r)?;
    assert_eq!(rep["retention_removed"], 1, "{rep:#}");
    assert!(!env.dst("_deleted/gone.txt").exists());
    assert!(!has_object(&env, &g)?, "gone.txt's content still stored");
    assert_eq!(env.snapshot_count()?, snaps + 1);
    trove_ok(&env, &["verify"])?;

    // With one day, a fresh deletion stays through a prune.
    write_config(
        &env,
        json!({"max_versions_per_file": 10, "deleted_max_age_days": 1}),
    )?;
    std::fs::remove_file(env.src("later.txt"))?;
    backup(&env)?;
    let rep = json_of(&trove_ok(&env, &["prune", "--json"])?)?;
    assert_eq!(rep["retention_removed"], 0, "{rep:#}");
    assert_eq!(std::fs::read(env.dst("_deleted/later.txt"))?, h);

    // Back to 0 days: the next backup, with no source change, removes it
    // and records that in a new snapshot.
    write_config(
        &env,
        json!({"max_versions_per_file": 10, "deleted_max_age_days": 0}),
    )?;
    let snaps = env.snapshot_count()?;
    let r = backup(&env)?;
    r.assert_message("RETENTION delete: _deleted/later.txt");
    assert!(!env.dst("_deleted/later.txt").exists());
    assert!(!has_object(&env, &h)?, "later.txt's content still stored");
    assert_eq!(env.snapshot_count()?, snaps + 1);
    assert_eq!(std::fs::read(env.dst("keep.txt"))?, b"keep\n");
    trove_ok(&env, &["verify"])?;
    // The first snapshot names the removed files when restored.
    let ids = env.snapshot_ids()?;
    let t = env.root().join("restore-first");
    let r = restore(&env, &ids[0].0, &t)?;
    r.expect_code(1);
    assert!(r.stdout.contains("missing: gone.txt: "), "{}", r.stdout);
    assert!(r.stdout.contains("missing: later.txt: "), "{}", r.stdout);
    assert_eq!(std::fs::read(t.join("keep.txt"))?, b"keep\n");
    Ok(())
}

// ---------------------------------------------------------------------------
// 7. SIGKILL during a prune or a collecting backup

const CRASH_FILES: usize = 300;
const CRASH_GENERATIONS: usize = 4;
const CRASH_ITERATIONS: u64 = 15;

fn crash_rel(i: usize) -> String {
    format!("d{}/f{i:03}.bin", i % 10)
}

/// A repository of `CRASH_FILES` files backed up in `CRASH_GENERATIONS`
/// generations (every file changes every time) under the default limit.
/// Returns the env and the contents `[generation][file]`.
fn crash_template() -> Res<(TestEnv, Vec<Vec<Vec<u8>>>)> {
    let env = TestEnv::new()?;
    write_config(&env, json!({"max_versions_per_file": 10}))?;
    let mut rng = Lcg(0xc7a5_7e57);
    let mut gens = Vec::new();
    for _ in 0..CRASH_GENERATIONS {
        let mut g = Vec::new();
        for i in 0..CRASH_FILES {
            let n = rng.range(200, 1500) as usize;
            let data = rng.bytes(n);
            env.write(&crash_rel(i), &data)?;
            g.push(data);
        }
        backup(&env)?;
        gens.push(g);
    }
    Ok((env, gens))
}

/// A copy of the template's backup root (hardlinks preserved) in a fresh
/// folder whose config lowers the limit to 1 version and, with
/// `keep_last`, keeps 1 snapshot.
fn crash_copy(template: &TestEnv, keep_last: bool) -> Res<TestEnv> {
    let dir = tempfile::tempdir()?;
    let backup = dir.path().join("backup");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(&template.backup)
        .arg(&backup)
        .status()?;
    if !st.success() {
        return Err(format!("cp -a failed: {st}").into());
    }
    let retention = if keep_last {
        json!({"max_versions_per_file": 1, "keep_last": 1})
    } else {
        json!({"max_versions_per_file": 1})
    };
    let cfg = json!({
        "sources": [template.source],
        "backup_root": "./backup",
        "retention": retention,
    });
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_vec_pretty(&cfg)?,
    )?;
    Ok(TestEnv {
        dir,
        source: template.source.clone(),
        backup,
    })
}

/// The browsable tree once the lowered settings are applied: the latest
/// files and one version of each.
fn check_pruned_tree(env: &TestEnv, gens: &[Vec<Vec<u8>>], what: &str) -> TestResult {
    let last = CRASH_GENERATIONS - 1;
    let mut want: BTreeMap<Vec<u8>, Node> = BTreeMap::new();
    want.insert(b"versions".to_vec(), Node::Dir);
    for d in 0..10 {
        want.insert(format!("d{d}").into_bytes(), Node::Dir);
        want.insert(format!("versions/d{d}").into_bytes(), Node::Dir);
    }
    for (i, (now, before)) in gens[last].iter().zip(&gens[last - 1]).enumerate() {
        let rel = crash_rel(i);
        want.insert(rel.clone().into_bytes(), Node::File(now.clone()));
        want.insert(format!("versions/{rel}").into_bytes(), Node::Dir);
        want.insert(
            format!("versions/{rel}/v{last}.bak").into_bytes(),
            Node::File(before.clone()),
        );
    }
    let tree = env.tree()?;
    if tree != want {
        let extra: Vec<String> = tree
            .keys()
            .filter(|k| !want.contains_key(*k))
            .map(|k| show(k))
            .take(10)
            .collect();
        let missing: Vec<String> = want
            .keys()
            .filter(|k| !tree.contains_key(*k))
            .map(|k| show(k))
            .take(10)
            .collect();
        let wrong: Vec<String> = want
            .iter()
            .filter(|(k, v)| tree.get(*k).is_some_and(|t| t != *v))
            .map(|(k, _)| show(k))
            .take(10)
            .collect();
        return Err(format!(
            "{what}: browsable tree differs: extra {extra:?}, missing {missing:?}, other content {wrong:?}"
        )
        .into());
    }
    Ok(())
}

/// The store once the lowered settings are applied and collected: exactly
/// the latest files' and versions' contents, no leftovers in `tmp/`, and
/// one snapshot record with `keep_last` 1 — without it every record stays
/// (the template's and the one recording the trimmed archive).
fn check_swept(env: &TestEnv, gens: &[Vec<Vec<u8>>], keep_last: bool, what: &str) -> TestResult {
    let last = CRASH_GENERATIONS - 1;
    let objects: BTreeSet<String> = gens[last - 1..]
        .iter()
        .flatten()
        .map(|d| hash_of(d))
        .collect();
    let stored = object_hashes(&env.backup)?;
    assert!(
        stored == objects,
        "{what}: {} objects stored, {} expected ({} not expected, {} missing)",
        stored.len(),
        objects.len(),
        stored.difference(&objects).count(),
        objects.difference(&stored).count()
    );
    let records = if keep_last { 1 } else { CRASH_GENERATIONS + 1 };
    assert_eq!(env.snapshot_count()?, records, "{what}: snapshot records");
    let tmp = names_in(env, "tmp")?;
    assert!(tmp.is_empty(), "{what}: .trove/tmp holds {tmp:?}");
    Ok(())
}

/// Restore the latest snapshot into a fresh folder and compare it with the
/// source.
fn check_latest_restores(env: &TestEnv, target_name: &str, what: &str) -> TestResult {
    let t = env.root().join(target_name);
    let r = restore(env, "latest", &t)?;
    assert_eq!(
        r.code,
        Some(0),
        "{what}: restoring the latest snapshot\n{}{}",
        r.stdout,
        r.stderr
    );
    assert!(
        listing(&t, false)? == listing(&env.source, false)?,
        "{what}: the restored latest snapshot differs from the source"
    );
    Ok(())
}

/// Start `trove ARGS…` in `env`'s folder and SIGKILL it after `delay_ms`.
/// Returns whether the kill interrupted it.
fn run_and_kill(env: &TestEnv, args: &[&str], delay_ms: u64) -> Res<bool> {
    let mut child = std::process::Command::new(trove_bin())
        .current_dir(env.root())
        .env_remove("TROVE_REPO")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(delay_ms));
    child.kill()?;
    let st = child.wait()?;
    Ok(st.signal() == Some(9))
}

#[test]
fn sigkill_during_prune_or_a_collecting_backup_loses_nothing_and_the_next_run_completes(
) -> TestResult {
    let (template, gens) = crash_template()?;

    // An uninterrupted run gives the reference result, and how long a run
    // takes (only to spread the kill moments over it).
    let reference = crash_copy(&template, true)?;
    let start = Instant::now();
    trove_ok(&reference, &["prune"])?;
    let full_ms = start.elapsed().as_millis() as u64;
    check_pruned_tree(&reference, &gens, "uninterrupted prune")?;
    check_swept(&reference, &gens, true, "uninterrupted prune")?;
    trove_ok(&reference, &["verify"])?;
    check_latest_restores(&reference, "restored", "uninterrupted prune")?;
    drop(reference);
    let max_delay = (full_ms + full_ms / 5).clamp(20, 300);

    let mut rng = Lcg(0x6c_5eed_0007);
    let mut killed = 0;
    for it in 0..CRASH_ITERATIONS {
        // Every third iteration without a keep rule (a backup then
        // collects only what its own retention dropped).
        let keep_last = it % 3 != 1;
        let env = crash_copy(&template, keep_last)?;
        // Even iterations kill a prune, odd ones a backup that applies the
        // lowered settings (no source change) and collects.
        let victim: &[&str] = if it % 2 == 0 { &["prune"] } else { &["backup"] };
        let delay = rng.range(0, max_delay);
        let what =
            format!("iteration {it} ({victim:?} killed after {delay} ms, keep_last {keep_last})");
        if run_and_kill(&env, victim, delay)? {
            killed += 1;
        }

        // At once, before any other run: the snapshots' content is all
        // there (only the derived browsable tree may lag behind).
        let v = trove(&env, &["verify", "--json"])?;
        let rep = json_of(&v)?;
        let bad: Vec<Value> = problems(&rep)
            .into_iter()
            .filter(|p| p["kind"] != "browsable")
            .collect();
        assert!(
            bad.is_empty(),
            "{what}: verify right after the kill reports lost or damaged content: {bad:#?}"
        );
        check_latest_restores(&env, "restored-after-kill", &what)?;

        // Every third iteration, the recovery run is killed too.
        if it % 3 == 2 {
            let d2 = rng.range(0, max_delay);
            run_and_kill(&env, &["prune"], d2)?;
            let rep = json_of(&trove(&env, &["verify", "--json"])?)?;
            let bad = problems(&rep)
                .into_iter()
                .filter(|p| p["kind"] != "browsable")
                .count();
            assert_eq!(bad, 0, "{what}, then a prune killed after {d2} ms: {rep:#}");
        }

        // The next run completes the work; then verify is clean.
        let next: &[&str] = if it % 4 < 2 { &["prune"] } else { &["backup"] };
        let r = trove(&env, next)?;
        assert_eq!(
            r.code,
            Some(0),
            "{what}: the next {next:?} failed\n{}{}",
            r.stdout,
            r.stderr
        );
        let v = trove(&env, &["verify"])?;
        assert_eq!(
            v.code,
            Some(0),
            "{what}: verify after the next {next:?}\n{}{}",
            v.stdout,
            v.stderr
        );
        check_pruned_tree(&env, &gens, &what)?;
        check_latest_restores(&env, "restored-at-the-end", &what)?;
        if next == ["backup"] {
            // A backup that finds no change ends without collecting: the
            // sweep an interrupted run left undone waits for a prune.
            trove_ok(&env, &["prune"])?;
            trove_ok(&env, &["verify"])?;
        }
        check_swept(&env, &gens, keep_last, &what)?;
    }
    assert!(killed > 0, "no run was still going when killed");
    eprintln!(
        "retention crash test: {killed} of {CRASH_ITERATIONS} runs killed mid-way (a full prune took {full_ms} ms)"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// 8. The lock

#[test]
fn prune_needs_the_exclusive_lock_and_a_dry_run_a_shared_one() -> TestResult {
    let env = TestEnv::new()?;
    write_config(&env, json!({"max_versions_per_file": 1}))?;
    for n in 0..3 {
        env.write("f.txt", format!("f {n}\n"))?;
        backup(&env)?;
    }
    // A keep rule gives prune work: it would forget two records.
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .open(env.dst(".trove/lock"))?;

    // Another writer holds the lock: prune and its dry run exit 3.
    lock.try_lock()?;
    let r = trove(&env, &["prune", "--keep-last", "1"])?;
    r.expect_code(3);
    assert!(r.stderr.contains("lock"), "{}", r.stderr);
    trove(&env, &["prune", "--dry-run", "--keep-last", "1"])?.expect_code(3);
    assert_eq!(names_in(&env, "snapshots")?.len(), 3);
    lock.unlock()?;

    // A reader holds a shared lock: prune exits 3, its dry run works.
    lock.try_lock_shared()?;
    trove(&env, &["prune", "--keep-last", "1"])?.expect_code(3);
    let dry = trove(&env, &["prune", "--dry-run", "--keep-last", "1"])?;
    dry.expect_code(0);
    assert!(
        dry.stdout.contains("would forget snapshot"),
        "{}",
        dry.stdout
    );
    lock.unlock()?;
    assert_eq!(env.snapshot_count()?, 3);

    // Free: prune works.
    trove_ok(&env, &["prune", "--keep-last", "1"])?;
    assert_eq!(env.snapshot_count()?, 1);
    trove_ok(&env, &["verify"])?;
    Ok(())
}
