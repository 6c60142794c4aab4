//! SPEC §5: the command line's output and exit codes: `--json`,
//! `--dry-run`, `--exclude`, `snapshots`, `ls`, usage errors.

use crate::common::{listing, parse_summary, show, Node, Res, TestEnv, TestResult};
use std::collections::BTreeMap;

fn fill(env: &TestEnv) -> TestResult {
    env.write("one.txt", "hello world")?;
    env.write("one_copy.txt", "hello world")?;
    env.write("sub/two.txt", "two")?;
    env.write("sub/deeper/three.txt", "three")?;
    Ok(())
}

fn json_counts(v: &serde_json::Value) -> Res<(u64, u64, u64)> {
    let n = |k: &str| v[k].as_u64().ok_or(format!("no number {k} in {v}"));
    Ok((n("copied")?, n("unchanged")?, n("files")?))
}

#[test]
fn backup_json_parses_and_carries_the_same_counts_as_the_human_summary() -> TestResult {
    let a = TestEnv::new()?;
    let b = TestEnv::new()?;
    fill(&a)?;
    fill(&b)?;
    for round in 0..2 {
        if round == 1 {
            for env in [&a, &b] {
                env.write("sub/two.txt", "two, edited")?;
                env.write("new.txt", "new")?;
            }
        }
        let ja = a.backup_ok(&["--json"])?;
        let v: serde_json::Value = serde_json::from_str(&ja.stdout)?;
        let counts = json_counts(&v)?;
        assert_eq!(
            Some(counts),
            parse_summary(&ja.log),
            "round {round}: --json and the logged summary agree"
        );
        let hb = b.backup_ok(&[])?;
        assert_eq!(
            Some(counts),
            parse_summary(&hb.stdout),
            "round {round}: --json and the printed summary agree: {}",
            hb.stdout
        );
        assert!(v["snapshot"].is_string(), "{v}");
        assert_eq!(v["dry_run"], false);
        if round == 0 {
            assert_eq!(counts, (4, 0, 4));
            assert_eq!(v["backed_up"], 3);
            assert_eq!(v["duplicates"], 1);
        } else {
            assert_eq!(counts, (2, 3, 5));
            assert_eq!(v["modified"], 1);
        }
    }
    Ok(())
}

#[test]
fn first_dry_run_creates_nothing_and_prints_would_lines() -> TestResult {
    let env = TestEnv::new()?;
    fill(&env)?;
    let r = env.backup(&["--dry-run"])?;
    r.expect_code(0);
    assert!(!env.backup.exists(), "a dry run does not create DEST");
    let console = r.console();
    for line in [
        "WOULD BACKUP: source/one.txt → backup/one.txt",
        "WOULD DUPLICATE: source/one_copy.txt → backup/_duplicates/one_copy.txt",
        "WOULD BACKUP: source/sub/two.txt → backup/sub/two.txt",
    ] {
        assert!(console.contains(line), "missing {line:?} in\n{console}");
    }
    assert_eq!(parse_summary(&r.stdout), Some((4, 0, 4)), "{}", r.stdout);
    Ok(())
}

#[test]
fn later_dry_run_writes_no_snapshot_and_no_file() -> TestResult {
    let env = TestEnv::new()?;
    fill(&env)?;
    env.backup_ok(&[])?;
    env.write("one.txt", "changed")?;
    std::fs::remove_file(env.src("sub/two.txt"))?;
    env.write("added.txt", "added")?;
    let before = listing(&env.backup, false)?;
    let snaps = env.snapshot_count()?;

    let r = env.backup(&["--dry-run"])?;
    r.expect_code(0);
    let console = r.console();
    for line in [
        "WOULD ARCHIVE: backup/one.txt → versions/one.txt/v1.bak",
        "WOULD UPDATED: source/one.txt → backup/one.txt",
        "WOULD ARCHIVE DELETE: backup/sub/two.txt → backup/_deleted/sub/two.txt",
        "WOULD STATE REMOVE: source/sub/two.txt",
        "WOULD BACKUP: source/added.txt → backup/added.txt",
    ] {
        assert!(console.contains(line), "missing {line:?} in\n{console}");
    }
    assert_eq!(env.snapshot_count()?, snaps, "no new snapshot");
    assert_eq!(
        listing(&env.backup, false)?,
        before,
        "no file under DEST (including .trove) changed"
    );
    Ok(())
}

#[test]
fn exclude_name_glob_and_path_patterns_keep_files_out() -> TestResult {
    let env = TestEnv::new()?;
    env.write("keep.txt", "keep")?;
    env.write("scratch.tmp", "tmp 1")?;
    env.write("sub/more.tmp", "tmp 2")?;
    env.write("build/out/a.o", "object")?;
    env.write("build/keep.c", "source code")?;
    env.write("cache/c.txt", "top cache")?;
    env.write("sub/cache/d.txt", "nested cache")?;
    env.backup_ok(&[
        "--exclude",
        "*.tmp",
        "--exclude",
        "build/out",
        "--exclude",
        "/cache",
    ])?;
    let files: Vec<String> = env
        .tree()?
        .into_iter()
        .filter(|(_, n)| matches!(n, Node::File(_)))
        .map(|(p, _)| show(&p))
        .collect();
    assert_eq!(
        files,
        vec!["build/keep.c", "keep.txt", "sub/cache/d.txt"],
        "name glob at any depth, path pattern, anchored pattern only at the root"
    );
    let ls = env.repo_cmd(&["ls", "--json"])?;
    let v: serde_json::Value = serde_json::from_slice(&ls.stdout)?;
    let recorded: Vec<&str> = v
        .as_array()
        .ok_or("ls --json is an array")?
        .iter()
        .filter(|e| e["type"] == "file")
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert_eq!(
        recorded,
        vec!["build/keep.c", "keep.txt", "sub/cache/d.txt"]
    );
    Ok(())
}

#[test]
fn snapshots_lists_every_run_in_human_and_json_form() -> TestResult {
    let env = TestEnv::new()?;
    fill(&env)?;
    env.backup_ok(&[])?;
    env.write("sub/two.txt", "two, edited")?;
    env.backup_ok(&[])?;

    let human = env.repo_cmd(&["snapshots"])?;
    assert!(human.status.success());
    let text = String::from_utf8(human.stdout)?;
    assert!(text.starts_with("ID"), "a header: {text}");
    assert!(text.contains("2 snapshots"), "{text}");

    let v = env.snapshots()?;
    assert_eq!(v.len(), 2);
    for s in &v {
        let id = s["id"].as_str().ok_or("id")?;
        assert!(text.contains(id), "the table lists {id}: {text}");
        assert!(s["full_id"].as_str().is_some_and(|f| f.starts_with(id)));
    }
    assert_eq!(v[0]["files"], 4);
    assert_eq!(v[0]["added"], 4);
    assert_eq!(v[1]["modified"], 1);

    // TROVE_REPO stands in for --repo.
    let via_env = env
        .cmd()?
        .env("TROVE_REPO", &env.backup)
        .args(["snapshots", "--json"])
        .output()?;
    assert!(via_env.status.success());
    let v2: serde_json::Value = serde_json::from_slice(&via_env.stdout)?;
    assert_eq!(v2.as_array().map(Vec::len), Some(2));
    Ok(())
}

/// The rows of `trove ls --json ARGS…`, in the order printed.
fn ls_rows(env: &TestEnv, args: &[&str]) -> Res<Vec<serde_json::Value>> {
    let mut all = vec!["ls", "--json"];
    all.extend_from_slice(args);
    let out = env.repo_cmd(&all)?;
    assert!(
        out.status.success(),
        "ls {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v.as_array().ok_or("ls --json is an array")?.clone())
}

fn ls_json(env: &TestEnv, args: &[&str]) -> Res<BTreeMap<String, serde_json::Value>> {
    Ok(ls_rows(env, args)?
        .into_iter()
        .filter_map(|e| Some((e["path"].as_str()?.to_string(), e)))
        .collect())
}

#[test]
fn ls_shows_the_latest_or_a_given_snapshot_and_filters_by_path() -> TestResult {
    let env = TestEnv::new()?;
    fill(&env)?;
    std::os::unix::fs::symlink("one.txt", env.src("link"))?;
    env.backup_ok(&[])?;
    let first = env.snapshots()?[0]["id"].as_str().ok_or("id")?.to_string();
    env.write("sub/two.txt", "two, edited")?;
    env.backup_ok(&[])?;

    let latest = ls_json(&env, &[])?;
    let paths: Vec<&str> = latest.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        vec![
            "link",
            "one.txt",
            "one_copy.txt",
            "sub",
            "sub/deeper",
            "sub/deeper/three.txt",
            "sub/two.txt"
        ]
    );
    assert_eq!(latest["sub/two.txt"]["size"], 11);
    assert_eq!(latest["sub"]["type"], "dir");
    assert_eq!(latest["link"]["type"], "symlink");
    assert_eq!(latest["link"]["target"], "one.txt");
    assert_eq!(
        latest["one.txt"]["hash"], latest["one_copy.txt"]["hash"],
        "same content, same hash"
    );

    let old = ls_json(&env, &[&first, "sub"])?;
    let paths: Vec<&str> = old.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        vec!["sub", "sub/deeper", "sub/deeper/three.txt", "sub/two.txt"]
    );
    assert_eq!(
        old["sub/two.txt"]["size"], 3,
        "the first snapshot's content"
    );

    let human = env.repo_cmd(&["ls", "latest", "sub/two.txt"])?;
    assert!(human.status.success());
    let text = String::from_utf8(human.stdout)?;
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("sub/two.txt") && text.contains(" 11 "),
        "{text}"
    );
    Ok(())
}

/// `ls PATH` reads only the trees on the path's way and below it: its rows
/// are the rows of the whole listing at or under PATH, in the same order,
/// also where names sort around the separator (`a b`, `a-b`, `a.b` beside
/// the folder `a`).
#[test]
fn ls_of_a_path_gives_the_rows_of_the_whole_listing_below_it_in_order() -> TestResult {
    let env = TestEnv::new()?;
    for (rel, data) in [
        ("a/z.txt", "z"),
        ("a/in/deep.txt", "deep"),
        ("a b", "space"),
        ("a-b/c.txt", "dash"),
        ("a.b", "dot"),
        ("b/a/x.txt", "x"),
    ] {
        env.write(rel, data)?;
    }
    env.backup_ok(&[])?;
    let whole = ls_rows(&env, &[])?;
    for path in ["a", "a/", "/a/in", "a b", "a-b", "a.b", "b/a", "b/a/x.txt"] {
        let p = path.trim_matches('/');
        let want: Vec<&serde_json::Value> = whole
            .iter()
            .filter(|r| {
                r["path"]
                    .as_str()
                    .is_some_and(|q| q == p || q.starts_with(&format!("{p}/")))
            })
            .collect();
        assert!(!want.is_empty(), "{path}");
        let got = ls_rows(&env, &["latest", path])?;
        assert_eq!(got.iter().collect::<Vec<_>>(), want, "ls {path}");
    }
    // Through a file, or below a name that is not there: not in the snapshot.
    for path in ["a.b/x", "a/z.txt/deeper", "c", "a/i"] {
        let out = env.repo_cmd(&["ls", "latest", path])?;
        assert_eq!(out.status.code(), Some(2), "ls {path}");
    }
    Ok(())
}

#[test]
fn ls_of_a_path_not_in_the_snapshot_is_exit_2() -> TestResult {
    let env = TestEnv::new()?;
    fill(&env)?;
    env.backup_ok(&[])?;
    let out = env.repo_cmd(&["ls", "latest", "no/such/path"])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no/such/path"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A prefix of a name is not a path.
    let out = env.repo_cmd(&["ls", "latest", "su"])?;
    assert_eq!(out.status.code(), Some(2));
    let out = env.repo_cmd(&["ls", "ffffffffff"])?;
    assert_eq!(out.status.code(), Some(2), "unknown snapshot id");
    Ok(())
}

#[test]
fn usage_errors_are_exit_2_and_quiet_prints_nothing() -> TestResult {
    let env = TestEnv::new()?;
    fill(&env)?;
    let one_path = env.cmd()?.arg("backup").arg(&env.source).output()?;
    assert_eq!(one_path.status.code(), Some(2), "SOURCE without DEST");
    let bad_flag = env.cmd()?.args(["backup", "--no-such-flag"]).output()?;
    assert_eq!(bad_flag.status.code(), Some(2));
    let bad_policy = env.backup(&["--on-error", "explode"])?;
    bad_policy.expect_code(2);
    let no_repo = env.cmd()?.arg("snapshots").output()?;
    assert_eq!(no_repo.status.code(), Some(2), "no --repo, no config");
    let not_repo = env
        .cmd()?
        .arg("--repo")
        .arg(&env.source)
        .arg("ls")
        .output()?;
    assert_eq!(not_repo.status.code(), Some(2), "not a repository");

    let quiet = env.backup(&["-q"])?;
    quiet.expect_code(0);
    assert_eq!(quiet.stdout, "", "-q: nothing on stdout");
    assert_eq!(quiet.stderr, "", "-q: nothing on stderr");
    assert!(env.dst("one.txt").exists());
    Ok(())
}

#[test]
fn sha256_repository_names_objects_by_their_sha256() -> TestResult {
    let env = TestEnv::new()?;
    fill(&env)?;
    env.write("big.bin", crate::common::Lcg(7).bytes(300_000))?;
    env.cmd()?
        .args(["init", "--hash", "sha256"])
        .arg(&env.backup)
        .assert()
        .success();
    env.backup_ok(&[])?;
    let objects = env.objects()?;
    assert_eq!(objects.len(), 4);
    for o in objects {
        let out = std::process::Command::new("sha256sum").arg(&o).output()?;
        let sum = String::from_utf8(out.stdout)?;
        let sum = sum.split_whitespace().next().ok_or("sha256sum output")?;
        let name = o.file_name().ok_or("name")?.to_string_lossy().into_owned();
        let fan = o
            .parent()
            .and_then(|p| p.file_name())
            .ok_or("fan-out dir")?
            .to_string_lossy()
            .into_owned();
        assert_eq!(name, sum, "object name is the sha256 of its bytes");
        assert_eq!(fan, sum[..2], "fan-out directory is the first byte");
    }
    Ok(())
}

/// Where a reading command finds the repository: `--repo` over
/// `TROVE_REPO` over the config's `backup_root` (CLI > env > config).
#[test]
fn repository_comes_from_the_flag_then_the_environment_then_the_config() -> TestResult {
    let env = TestEnv::new()?;
    fill(&env)?;
    env.backup_ok(&[])?;
    let elsewhere = env.root().join("not-a-repository");
    std::fs::create_dir_all(&elsewhere)?;
    let write_config = |root: &std::path::Path| -> TestResult {
        let cfg = serde_json::json!({"sources": [&env.source], "backup_root": root});
        std::fs::write(env.root().join("config.json"), cfg.to_string())?;
        Ok(())
    };
    let run = |flag: Option<&std::path::Path>, var: Option<&std::path::Path>| -> Res<i32> {
        let mut c = env.cmd()?;
        if let Some(v) = var {
            c.env("TROVE_REPO", v);
        }
        if let Some(f) = flag {
            c.arg("--repo").arg(f);
        }
        let out = c.args(["snapshots", "--json"]).output()?;
        Ok(out.status.code().unwrap_or(-1))
    };
    let (good, bad) = (env.backup.as_path(), elsewhere.as_path());
    write_config(bad)?;
    assert_eq!(
        run(Some(good), Some(bad))?,
        0,
        "the flag beats env and config"
    );
    assert_eq!(run(Some(bad), Some(good))?, 2, "the flag beats env");
    assert_eq!(run(None, Some(good))?, 0, "env beats config");
    write_config(good)?;
    assert_eq!(run(None, Some(bad))?, 2, "env beats config");
    assert_eq!(run(None, None)?, 0, "the config's backup_root");
    Ok(())
}
