//! `prune --remote`: the remote's own retention and garbage collection.
//! A history pushed run by run is pruned by its own policy (the dry run
//! names exactly what the prune then removes), the packs it frees leave
//! the index first and go at a later prune after the grace period, a year
//! of dailies (a fake clock: `faketime`) keeps what restic's policy keeps,
//! a commit a late push wrote brings its packs back instead of losing
//! them. Killed prunes, their locks, S3 and object-locked remotes are in
//! `offsite_prune_faults.rs`.

use crate::common::{Lcg, Res, TestEnv, TestResult};
use crate::offsite::{file_url, json, ok, repo, restore_remote, trove};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Bytes of every pack stored in a `file://` remote.
pub(crate) fn pack_bytes(remote: &Path) -> Res<u64> {
    let mut total = 0;
    for dir in ["data", "tree"] {
        for e in walkdir(&remote.join(dir))? {
            total += std::fs::metadata(&e)?.len();
        }
    }
    Ok(total)
}

pub(crate) fn walkdir(dir: &Path) -> Res<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walkdir(&p)?);
        } else {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Files by relative path, with their bytes.
pub(crate) type Tree = BTreeMap<String, Vec<u8>>;

/// Files below `root`.
pub(crate) fn files(root: &Path) -> Res<Tree> {
    let mut out = BTreeMap::new();
    for p in walkdir(root)? {
        let rel = p.strip_prefix(root)?.to_string_lossy().into_owned();
        out.insert(rel, std::fs::read(&p)?);
    }
    Ok(out)
}

/// A repository keeping one version per file (so the remote is where the
/// history lives) and a `file://` remote; `rounds` backups, each pushed,
/// each changing one large and one small file. Returns the remote's URL,
/// its folder and the source as it was at each round.
pub(crate) fn history(env: &TestEnv, rounds: usize) -> Res<(String, PathBuf, Vec<Tree>)> {
    let dir = env.root().join("offsite");
    let url = file_url(&dir);
    let states = history_at(env, &url, &[], rounds)?;
    Ok((url, dir, states))
}

/// [`history`] pushed to any remote `url` (made here), with `extra`
/// variables (an S3 server's) for every command: the source as it was at
/// each round.
pub(crate) fn history_at(
    env: &TestEnv,
    url: &str,
    extra: &[(String, String)],
    rounds: usize,
) -> Res<Vec<Tree>> {
    std::fs::write(
        env.root().join("config.json"),
        r#"{"retention": {"max_versions_per_file": 1}}"#,
    )?;
    let mut rng = Lcg(99);
    let mut states = Vec::new();
    for i in 0..rounds {
        env.write("stable.txt", b"never changes")?;
        env.write(&format!("notes/n{i}.txt"), rng.bytes(200))?;
        env.write("big.bin", rng.bytes(700_000))?;
        // With paths given, ./config.json is read only when named.
        env.backup_ok(&["--config", "config.json"])?;
        if i == 0 {
            ok(&trove(env, &["remote", "init", url], extra)?, "remote init")?;
        }
        ok(
            &trove(env, &["push", "--repo", &repo(env), "--remote", url], extra)?,
            "push",
        )?;
        states.push(files(&env.source)?);
    }
    Ok(states)
}

/// The remote's snapshots, oldest first: (id, time).
pub(crate) fn remote_snapshots(
    env: &TestEnv,
    url: &str,
    extra: &[(String, String)],
) -> Res<Vec<(String, String)>> {
    let o = trove(env, &["snapshots", "--json", "--remote", url], extra)?;
    ok(&o, "snapshots --remote")?;
    let v = json(&o)?;
    let list = v.as_array().ok_or("snapshots --json is a list")?;
    Ok(list
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or_default().to_string(),
                s["time"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

pub(crate) fn verify_clean(
    env: &TestEnv,
    url: &str,
    extra: &[(String, String)],
) -> Res<serde_json::Value> {
    let o = trove(
        env,
        &["verify", "--json", "--remote", url, "--read-data"],
        extra,
    )?;
    ok(&o, "verify --remote --read-data")?;
    let v = json(&o)?;
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v}");
    Ok(v)
}

pub(crate) fn restore_snapshot(
    env: &TestEnv,
    url: &str,
    id: &str,
    target: &Path,
    extra: &[(String, String)],
) -> Res<Output> {
    let t = target.to_str().ok_or("utf8")?;
    trove(
        env,
        &["restore", "--remote", url, "--snapshot", id, "--target", t],
        extra,
    )
}

pub(crate) fn removals(v: &serde_json::Value) -> Vec<(String, String, u64)> {
    v["removals"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["path"].as_str().unwrap_or_default().to_string(),
                        r["action"].as_str().unwrap_or_default().to_string(),
                        r["bytes"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn prune_remote_forgets_by_its_own_policy_and_a_later_prune_frees_the_bytes() -> TestResult {
    let env = TestEnv::new()?;
    let (url, dir, states) = history(&env, 5)?;
    assert_eq!(remote_snapshots(&env, &url, &[])?.len(), 5);
    let before = pack_bytes(&dir)?;

    let dry = trove(
        &env,
        &[
            "prune",
            "--json",
            "--remote",
            &url,
            "--keep-last",
            "2",
            "--dry-run",
        ],
        &[],
    )?;
    ok(&dry, "prune --remote --dry-run")?;
    let dry = json(&dry)?;
    assert_eq!(pack_bytes(&dir)?, before, "a dry run changes nothing");
    assert_eq!(remote_snapshots(&env, &url, &[])?.len(), 5);

    let run = trove(
        &env,
        &["prune", "--json", "--remote", &url, "--keep-last", "2"],
        &[],
    )?;
    ok(&run, "prune --remote")?;
    let run = json(&run)?;
    // The dry run said exactly what the prune removed.
    assert_eq!(removals(&dry), removals(&run));
    assert_eq!(run["forgotten"].as_array().map(Vec::len), Some(3), "{run}");
    assert!(run["pending_packs"].as_u64() > Some(0), "{run}");
    assert_eq!(dry["pending_bytes"], run["pending_bytes"]);
    // Out of the index, still stored: a reader that loaded the old index
    // can finish.
    assert_eq!(
        pack_bytes(&dir)?,
        before + run["bytes_written"].as_u64().ok_or("bytes")?
    );
    let snaps = remote_snapshots(&env, &url, &[])?;
    assert_eq!(snaps.len(), 2);
    let v = verify_clean(&env, &url, &[])?;
    assert_eq!(v["pending_packs"], run["pending_packs"], "{v}");

    // Within the grace period nothing is deleted; with it passed (0 here)
    // the packs go, and the bytes freed are those the first prune named.
    let again = trove(&env, &["prune", "--json", "--remote", &url], &[])?;
    ok(&again, "prune within the grace period")?;
    let again = json(&again)?;
    assert_eq!(again["packs_deleted"].as_u64(), Some(0), "{again}");
    assert_eq!(again["pending_waiting"], run["pending_packs"], "{again}");
    let last = trove(
        &env,
        &["prune", "--json", "--remote", &url, "--grace", "0"],
        &[],
    )?;
    ok(&last, "prune after the grace period")?;
    let last = json(&last)?;
    assert_eq!(last["packs_deleted"], run["pending_packs"], "{last}");
    assert_eq!(last["bytes_freed"], run["pending_bytes"], "{last}");
    let after = pack_bytes(&dir)?;
    assert_eq!(
        after,
        before + run["bytes_written"].as_u64().ok_or("bytes")?
            - run["pending_bytes"].as_u64().ok_or("bytes")?
    );
    assert!(after < before, "{after} < {before}");
    verify_clean(&env, &url, &[])?;
    // The two kept snapshots restore exactly as their sources were.
    for (i, (id, _)) in snaps.iter().enumerate() {
        let target = env.root().join(format!("kept{i}"));
        ok(
            &restore_snapshot(&env, &url, id, &target, &[])?,
            "restore kept",
        )?;
        assert_eq!(files(&target)?, states[3 + i], "snapshot {id}");
    }
    // A push after the prune: the remote takes it as before.
    env.write("after.txt", b"after the prune")?;
    env.backup_ok(&[])?;
    ok(
        &trove(
            &env,
            &["push", "--repo", &repo(&env), "--remote", &url],
            &[],
        )?,
        "push after prune",
    )?;
    let target = env.root().join("latest");
    restore_remote(&env, &url, &target, &[])?;
    assert_eq!(files(&target)?, files(&env.source)?);
    Ok(())
}

/// `faketime` and a UTC clock for a command, when faketime is installed.
fn at(time: &str, env: &TestEnv, args: &[&str]) -> Res<Option<Output>> {
    if Command::new("faketime").arg("--version").output().is_err() {
        eprintln!("SKIP: faketime is not installed (apt-get install faketime)");
        return Ok(None);
    }
    let bin = env.cmd()?.get_program().to_owned();
    let o = Command::new("faketime")
        .arg(time)
        .arg(bin)
        .args(args)
        .current_dir(env.root())
        .env("TZ", "UTC")
        .env("TROVE_PASSWORD", crate::offsite::PASSWORD)
        .env("TROVE_CACHE_DIR", env.cache_dir())
        .env_remove("TROVE_REMOTE")
        .env_remove("TROVE_REPO")
        .output()?;
    Ok(Some(o))
}

/// The day of a snapshot time: the fake clock runs on while a command
/// does, so the seconds are not exact, and the policy only reads days.
fn day(time: &str) -> String {
    time.get(..10).unwrap_or(time).to_string()
}

/// restic's policy, written out plainly: newest first, each rule keeps
/// the newest snapshot of each of its N most recent buckets.
fn restic_keeps(days: &[jiff::civil::DateTime], rules: &[(&str, usize)]) -> BTreeSet<String> {
    let mut order: Vec<jiff::civil::DateTime> = days.to_vec();
    order.sort();
    order.reverse();
    let mut kept = BTreeSet::new();
    for (rule, n) in rules {
        let mut last: Option<String> = None;
        let mut count = 0;
        for t in &order {
            let bucket = match *rule {
                "daily" => t.strftime("%Y-%m-%d").to_string(),
                "weekly" => {
                    let w = t.date().iso_week_date();
                    format!("{}-{}", w.year(), w.week())
                }
                "monthly" => t.strftime("%Y-%m").to_string(),
                "yearly" => t.strftime("%Y").to_string(),
                _ => unreachable!("rule {rule}"),
            };
            if count < *n && last.as_ref() != Some(&bucket) {
                kept.insert(t.strftime("%Y-%m-%d").to_string());
                count += 1;
            }
            last = Some(bucket);
        }
    }
    kept
}

#[test]
fn a_year_of_dailies_keeps_exactly_what_restics_policy_keeps() -> TestResult {
    let env = TestEnv::new()?;
    let url = file_url(&env.root().join("offsite"));
    let repo_dir = repo(&env);
    let src = env.source.to_str().ok_or("utf8")?.to_string();
    let start = jiff::civil::date(2025, 1, 1).at(12, 0, 0, 0);
    let mut days = Vec::new();
    for d in 0..365 {
        let t = start.checked_add(jiff::Span::new().days(d))?;
        env.write("day.txt", format!("day {d}"))?;
        let stamp = t.strftime("%Y-%m-%d %H:%M:%S").to_string();
        let Some(o) = at(&stamp, &env, &["backup", &src, &repo_dir])? else {
            return Ok(());
        };
        ok(&o, &format!("backup at {stamp}"))?;
        days.push(t);
    }
    ok(
        &trove(&env, &["remote", "init", &url, "--repo", &repo_dir], &[])?,
        "init",
    )?;
    ok(
        &trove(&env, &["push", "--repo", &repo_dir, "--remote", &url], &[])?,
        "push",
    )?;
    let rules = [("daily", 7), ("weekly", 5), ("monthly", 12), ("yearly", 2)];
    let want = restic_keeps(&days, &rules);
    let now = "2026-01-01 09:00:00";
    let args = [
        "prune",
        "--json",
        "--remote",
        &url,
        "--keep-daily",
        "7",
        "--keep-weekly",
        "5",
        "--keep-monthly",
        "12",
        "--keep-yearly",
        "2",
    ];
    let mut dry: Vec<&str> = args.to_vec();
    dry.push("--dry-run");
    let o = at(now, &env, &dry)?.ok_or("faketime")?;
    ok(&o, "prune --dry-run")?;
    let d = json(&o)?;
    let kept_times = |v: &serde_json::Value| -> BTreeSet<String> {
        v["kept"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|k| k["time"].as_str().map(day))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(kept_times(&d), want, "{}", d["kept"]);
    let o = at(now, &env, &args)?.ok_or("faketime")?;
    ok(&o, "prune")?;
    let r = json(&o)?;
    assert_eq!(kept_times(&r), want);
    assert_eq!(
        r["forgotten"].as_array().map(Vec::len),
        Some(365 - want.len())
    );
    // The remote lists exactly those (in UTC, as the fake clock wrote them).
    let listed: BTreeSet<String> = {
        let o = at(now, &env, &["snapshots", "--json", "--remote", &url])?.ok_or("faketime")?;
        ok(&o, "snapshots")?;
        json(&o)?
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["time"].as_str().map(day))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(listed, want);
    Ok(())
}

#[test]
fn a_commit_a_late_push_wrote_brings_its_packs_back_instead_of_losing_them() -> TestResult {
    let env = TestEnv::new()?;
    let (url, dir, states) = history(&env, 3)?;
    let snaps = remote_snapshots(&env, &url, &[])?;
    let commits: BTreeMap<PathBuf, Vec<u8>> = walkdir(&dir.join("snapshots"))?
        .into_iter()
        .map(|p| std::fs::read(&p).map(|b| (p, b)))
        .collect::<std::io::Result<_>>()?;
    let o = trove(
        &env,
        &["prune", "--json", "--remote", &url, "--keep-last", "1"],
        &[],
    )?;
    ok(&o, "prune")?;
    assert!(json(&o)?["pending_packs"].as_u64() > Some(0));
    // A push that checked the index before the prune and wrote its commit
    // after it: simulated by putting the forgotten commits back.
    let mut back = 0;
    for (p, b) in &commits {
        if !p.exists() {
            std::fs::write(p, b)?;
            back += 1;
        }
    }
    assert_eq!(back, 2);
    // The next prune (no keep rule: every snapshot stays), past the grace
    // period, indexes those packs again instead of deleting them.
    let o = trove(
        &env,
        &["prune", "--json", "--remote", &url, "--grace", "0"],
        &[],
    )?;
    ok(&o, "prune after the late commit")?;
    let r = json(&o)?;
    assert!(r["packs_restored"].as_u64() > Some(0), "{r}");
    verify_clean(&env, &url, &[])?;
    for (i, (id, _)) in snaps.iter().enumerate() {
        let target = env.root().join(format!("s{i}"));
        ok(&restore_snapshot(&env, &url, id, &target, &[])?, "restore")?;
        assert_eq!(files(&target)?, states[i], "snapshot {id}");
    }
    Ok(())
}

/// The names in `dir` (one level).
fn names(dir: &Path) -> Res<BTreeSet<PathBuf>> {
    Ok(walkdir(dir)?.into_iter().collect())
}

#[test]
fn the_packs_of_a_push_still_uploading_survive_two_prunes() -> TestResult {
    let env = TestEnv::new()?;
    let (url, dir, _) = history(&env, 2)?;
    // A push whose packs are stored but whose index and commit are not
    // written yet: run it, then take those two away until the end.
    let index_before = names(&dir.join("index"))?;
    let commits_before = names(&dir.join("snapshots"))?;
    env.write("late.bin", Lcg(7).bytes(300_000))?;
    env.backup_ok(&["--config", "config.json"])?;
    ok(
        &trove(
            &env,
            &["push", "--repo", &repo(&env), "--remote", &url],
            &[],
        )?,
        "push",
    )?;
    let held = env.root().join("held");
    std::fs::create_dir(&held)?;
    let mut moved = Vec::new();
    for p in names(&dir.join("index"))?
        .difference(&index_before)
        .chain(names(&dir.join("snapshots"))?.difference(&commits_before))
    {
        let to = held.join(moved.len().to_string());
        std::fs::rename(p, &to)?;
        moved.push((p.clone(), to));
    }
    assert_eq!(moved.len(), 2, "one index file and one commit: {moved:?}");
    let mut reports = Vec::new();
    for _ in 0..2 {
        let o = trove(
            &env,
            &[
                "prune",
                "--json",
                "--remote",
                &url,
                "--keep-last",
                "1",
                "--grace",
                "0",
            ],
            &[],
        )?;
        ok(&o, "prune during the push")?;
        reports.push(json(&o)?);
    }
    // The push finishes: its index file and commit arrive.
    for (p, to) in &moved {
        std::fs::rename(to, p)?;
    }
    verify_clean(&env, &url, &[])?;
    let target = env.root().join("latest");
    restore_remote(&env, &url, &target, &[])?;
    assert_eq!(files(&target)?, files(&env.source)?);
    for r in &reports {
        assert!(r["unindexed_packs"].as_u64() > Some(0), "{r}");
    }
    Ok(())
}

/// The files below a folder of a `file://` remote (none when it is absent).
fn listing(dir: &Path) -> Res<Vec<PathBuf>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    walkdir(dir)
}

#[test]
fn what_a_remote_prune_forgot_stays_forgotten_when_the_repository_still_has_it() -> TestResult {
    // The local repository keeps all five snapshots; the remote keeps two.
    let env = TestEnv::new()?;
    let (url, dir, _) = history(&env, 5)?;
    let push = |env: &TestEnv| -> Res<serde_json::Value> {
        let o = trove(
            env,
            &["push", "--json", "--repo", &repo(env), "--remote", &url],
            &[],
        )?;
        ok(&o, "push")?;
        json(&o)
    };
    let prune = |env: &TestEnv, keep: &str| -> Res<()> {
        let o = trove(
            env,
            &["prune", "--json", "--remote", &url, "--keep-last", keep],
            &[],
        )?;
        ok(&o, "prune --remote")
    };
    prune(&env, "2")?;
    let kept = remote_snapshots(&env, &url, &[])?;
    assert_eq!(kept.len(), 2);

    // A push finds nothing to upload: the three forgotten are not sent
    // back, and the backlog does not count them.
    let p = push(&env)?;
    assert_eq!(p["pushed"].as_array().map(Vec::len), Some(0), "{p}");
    assert_eq!(p["already"].as_u64(), Some(2), "{p}");
    assert_eq!(p["forgotten"].as_u64(), Some(3), "{p}");
    assert_eq!(remote_snapshots(&env, &url, &[])?, kept);
    let o = trove(
        &env,
        &["stats", "--json", "--repo", &repo(&env), "--remote", &url],
        &[],
    )?;
    ok(&o, "stats --remote")?;
    let st = json(&o)?;
    assert_eq!(st["backlog_snapshots"].as_u64(), Some(0), "{st}");
    // Text output names them.
    let o = trove(
        &env,
        &["push", "--repo", &repo(&env), "--remote", &url],
        &[],
    )?;
    ok(&o, "push (text)")?;
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("3 forgotten by a prune of the remote, not pushed again"),
        "{text}"
    );

    // A new backup is pushed as always.
    env.write("after.txt", b"after the prune")?;
    env.backup_ok(&[])?;
    let p = push(&env)?;
    assert_eq!(p["pushed"].as_array().map(Vec::len), Some(1), "{p}");
    assert_eq!(remote_snapshots(&env, &url, &[])?.len(), 3);

    // A second prune merges the record: one file, listing all four.
    prune(&env, "2")?;
    assert_eq!(listing(&dir.join("forgotten"))?.len(), 1);
    let p = push(&env)?;
    assert_eq!(p["pushed"].as_array().map(Vec::len), Some(0), "{p}");
    assert_eq!(p["forgotten"].as_u64(), Some(4), "{p}");

    // The record is what holds them back: without it a push sends all
    // four again, and the next prune forgets them again and writes a
    // record that no longer names commits stored again.
    std::fs::remove_dir_all(dir.join("forgotten"))?;
    let p = push(&env)?;
    assert_eq!(p["pushed"].as_array().map(Vec::len), Some(4), "{p}");
    assert_eq!(remote_snapshots(&env, &url, &[])?.len(), 6);
    prune(&env, "3")?;
    assert_eq!(remote_snapshots(&env, &url, &[])?.len(), 3);
    let p = push(&env)?;
    assert_eq!(p["pushed"].as_array().map(Vec::len), Some(0), "{p}");
    assert_eq!(p["forgotten"].as_u64(), Some(3), "{p}");
    verify_clean(&env, &url, &[])?;
    // Nothing to forget and the record as it should be: left alone.
    let before = listing(&dir.join("forgotten"))?;
    prune(&env, "3")?;
    assert_eq!(listing(&dir.join("forgotten"))?, before);
    Ok(())
}
