//! Off-site cost control and continuous off-site on a `file://` remote:
//! bandwidth limit flags, the data storage class setting, requests and
//! bytes in every remote command's `--json`, the backlog in
//! `stats --remote`, and a watch session's pushes (at the end of the
//! interval, a failed push logged with the backlog and retried). The
//! storage class on a real S3 server is in `offsite_s3.rs`.

use crate::common::{Res, TestEnv, TestResult};
use crate::offsite::{file_url, fill_source, json, ok, repo, trove, PASSWORD};
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::{Duration, Instant};

/// A backup and a remote initialised and pushed to; the remote's URL.
fn pushed(env: &TestEnv) -> Res<String> {
    crate::offsite::pushed_seeded(env, 11)
}

fn exit_2_naming(o: &Output, what: &str, words: &[&str]) -> Res<()> {
    let err = String::from_utf8_lossy(&o.stderr);
    if o.status.code() != Some(2) || !words.iter().all(|w| err.contains(w)) {
        return Err(format!("{what}: exit {:?}, stderr: {err}", o.status.code()).into());
    }
    Ok(())
}

/// The `requests` object of a remote command's JSON, with every kind.
fn requests(v: &serde_json::Value, what: &str) -> Res<serde_json::Value> {
    let r = v["requests"].clone();
    for k in [
        "put",
        "get",
        "list",
        "delete",
        "head",
        "bytes_up",
        "bytes_down",
    ] {
        if !r[k].is_u64() {
            return Err(format!("{what}: no requests.{k} in {v}").into());
        }
    }
    Ok(r)
}

#[test]
fn limit_flags_are_accepted_by_every_remote_command() -> TestResult {
    let env = TestEnv::new()?;
    let url = pushed(&env)?;
    env.write("docs/new.txt", "one more")?;
    env.backup_ok(&[])?;
    let limits = ["--limit-upload", "100000", "--limit-download", "100000"];
    let target = env.root().join("restored");
    let pulled = env.root().join("pulled");
    let (t, p) = (
        target.to_str().ok_or("utf8")?,
        pulled.to_str().ok_or("utf8")?,
    );
    let r = repo(&env);
    for args in [
        vec!["push", "--repo", &r],
        vec!["restore", "--target", t],
        vec!["pull", p],
        vec!["verify", "--read-data"],
    ] {
        let mut a = args.clone();
        a.extend(["--remote", &url]);
        a.extend(limits);
        ok(&trove(&env, &a, &[])?, &format!("{args:?} with limits"))?;
    }
    assert!(target.join("docs/new.txt").is_file());
    Ok(())
}

#[test]
fn a_zero_or_garbage_limit_is_a_usage_error() -> TestResult {
    let env = TestEnv::new()?;
    let url = file_url(&env.root().join("offsite"));
    for flag in ["--limit-upload", "--limit-download"] {
        for bad in ["0", "fast", "-5", "1.5", ""] {
            let given = format!("{flag}={bad}");
            let o = trove(
                &env,
                &["push", "--repo", &repo(&env), "--remote", &url, &given],
                &[],
            )?;
            exit_2_naming(&o, &format!("{flag} {bad:?}"), &[flag])?;
        }
    }
    Ok(())
}

#[test]
fn every_remote_command_reports_requests_and_bytes_in_json() -> TestResult {
    let env = TestEnv::new()?;
    fill_source(&env, 3)?;
    env.backup_ok(&[])?;
    let url = file_url(&env.root().join("offsite"));
    let init = trove(&env, &["remote", "init", "--json", &url], &[])?;
    ok(&init, "init")?;
    assert!(requests(&json(&init)?, "init")?["put"].as_u64() >= Some(2));
    let push = trove(
        &env,
        &["push", "--json", "--repo", &repo(&env), "--remote", &url],
        &[],
    )?;
    ok(&push, "push")?;
    let up = requests(&json(&push)?, "push")?;
    assert!(up["bytes_up"].as_u64() > Some(0));
    let target = env.root().join("restored");
    let pulled = env.root().join("pulled");
    let (t, p) = (
        target.to_str().ok_or("utf8")?,
        pulled.to_str().ok_or("utf8")?,
    );
    let r = repo(&env);
    // Commands whose JSON is an object: the field is in it.
    for args in [
        vec!["restore", "--target", t],
        vec!["pull", p],
        vec!["verify", "--read-data"],
        vec!["stats"],
        vec!["stats", "--repo", &r],
        vec!["diff", "latest", "latest"],
    ] {
        let mut a = args.clone();
        a.extend(["--json", "--remote", &url]);
        let o = trove(&env, &a, &[])?;
        ok(&o, &format!("{args:?}"))?;
        let rq = requests(&json(&o)?, &format!("{args:?}"))?;
        assert!(rq["get"].as_u64() > Some(0), "{args:?}: {rq}");
        if args[0] == "restore" || args[0] == "pull" || args[0] == "verify" {
            assert!(rq["bytes_down"].as_u64() > Some(0), "{args:?}: {rq}");
        }
    }
    let new_pw = env.root().join("new-password");
    std::fs::write(&new_pw, "another password")?;
    let added = trove(
        &env,
        &[
            "remote",
            "key",
            "add",
            "--json",
            "--remote",
            &url,
            "--new-password-file",
            new_pw.to_str().ok_or("utf8")?,
        ],
        &[],
    )?;
    ok(&added, "key add")?;
    assert!(requests(&json(&added)?, "key add")?["put"].as_u64() >= Some(1));
    let added_id = json(&added)?["added"]
        .as_str()
        .ok_or("no added id")?
        .to_string();
    let removed = trove(
        &env,
        &[
            "remote", "key", "remove", "--json", "--remote", &url, &added_id,
        ],
        &[],
    )?;
    ok(&removed, "key remove")?;
    assert!(requests(&json(&removed)?, "key remove")?["delete"].as_u64() >= Some(1));
    // Commands whose JSON is a list (the same as the local command's):
    // the list is unchanged and the requests are one JSON object on
    // standard error.
    for args in [vec!["snapshots"], vec!["ls"], vec!["remote", "key", "list"]] {
        let mut a = args.clone();
        a.extend(["--json", "--remote", &url]);
        let o = trove(&env, &a, &[])?;
        ok(&o, &format!("{args:?}"))?;
        assert!(json(&o)?.is_array(), "{args:?}");
        let v = crate::offsite::stderr_json(&o)?;
        assert_eq!(v["remote"].as_str(), Some(url.as_str()));
        assert!(requests(&v, &format!("{args:?}"))?["get"].as_u64() > Some(0));
    }
    Ok(())
}

#[test]
fn stats_remote_with_a_repository_shows_the_backlog() -> TestResult {
    let env = TestEnv::new()?;
    let url = pushed(&env)?;
    let stats = |env: &TestEnv| -> Res<serde_json::Value> {
        let o = trove(
            env,
            &["stats", "--json", "--remote", &url, "--repo", &repo(env)],
            &[],
        )?;
        ok(&o, "stats")?;
        json(&o)
    };
    let b = stats(&env)?;
    assert_eq!(b["backlog_snapshots"].as_u64(), Some(0), "{b}");
    assert!(b["oldest_unpushed"].is_null());
    env.write("docs/later.txt", "two")?;
    env.backup_ok(&[])?;
    env.write("docs/later.txt", "three")?;
    env.backup_ok(&[])?;
    let snaps = trove(&env, &["snapshots", "--json", "--repo", &repo(&env)], &[])?;
    let rows = json(&snaps)?;
    let rows = rows.as_array().ok_or("rows")?;
    let second = &rows[1];
    let b = stats(&env)?;
    assert_eq!(b["backlog_snapshots"].as_u64(), Some(2), "{b}");
    assert_eq!(b["oldest_unpushed"], second["id"], "{b}");
    assert_eq!(b["oldest_unpushed_time"], second["time"], "{b}");
    let text = trove(
        &env,
        &["stats", "--remote", &url, "--repo", &repo(&env)],
        &[],
    )?;
    ok(&text, "stats text")?;
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(
        out.contains("backlog: 2 snapshot(s) not on the remote, the oldest"),
        "{out}"
    );
    // Without a local repository there is no backlog to tell.
    let bare = trove(&env, &["stats", "--json", "--remote", &url], &[])?;
    ok(&bare, "stats without repo")?;
    assert!(json(&bare)?.get("backlog_snapshots").is_none());
    Ok(())
}

#[test]
fn remote_settings_out_of_range_or_unknown_are_usage_errors_naming_the_key() -> TestResult {
    let env = TestEnv::new()?;
    let url = pushed(&env)?;
    let cfg = env.root().join("config.json");
    for (remote, words) in [
        (
            serde_json::json!({"url": url, "push_interval": 0}),
            vec!["remote.push_interval", "allowed: 1 to 86400"],
        ),
        (
            serde_json::json!({"url": url, "push_interval": 86_401}),
            vec!["remote.push_interval"],
        ),
        (
            serde_json::json!({"url": url, "data_storage_class": "CHEAP"}),
            vec!["remote.data_storage_class", "STANDARD_IA"],
        ),
        (
            serde_json::json!({"url": url, "data_storage_class": "GLACIER"}),
            vec!["remote.data_storage_class", "GLACIER_IR"],
        ),
    ] {
        std::fs::write(
            &cfg,
            serde_json::json!({"sources": [env.source], "backup_root": env.backup, "remote": remote})
                .to_string(),
        )?;
        let o = trove(
            &env,
            &["push", "--config", cfg.to_str().ok_or("utf8")?],
            &[],
        )?;
        exit_2_naming(&o, &remote.to_string(), &words)?;
    }
    let o = trove(
        &env,
        &[
            "push",
            "--repo",
            &repo(&env),
            "--remote",
            &url,
            "--data-storage-class",
            "standard_ia",
        ],
        &[],
    )?;
    exit_2_naming(
        &o,
        "lower-case class",
        &["--data-storage-class", "STANDARD_IA"],
    )?;
    Ok(())
}

#[test]
fn a_data_storage_class_is_ignored_on_a_folder_remote() -> TestResult {
    let env = TestEnv::new()?;
    let url = pushed(&env)?;
    env.write("docs/new.txt", "for the class")?;
    env.backup_ok(&[])?;
    let o = trove(
        &env,
        &[
            "push",
            "-vv",
            "--repo",
            &repo(&env),
            "--remote",
            &url,
            "--data-storage-class",
            "STANDARD_IA",
        ],
        &[],
    )?;
    ok(&o, "push with a class")?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("a folder has no storage classes"),
        "no debug line: {err}"
    );
    Ok(())
}

/// A watch session on the env's source, pushing to `url` every
/// `interval` seconds, logging to `logs`.
fn start_watch(env: &TestEnv, url: &str, interval: u64, logs: &Path) -> Res<Child> {
    let cfg = env.root().join("config.json");
    std::fs::write(
        &cfg,
        serde_json::json!({
            "sources": [env.source],
            "backup_root": env.backup,
            "log_dir": logs,
            "watch": {"debounce_ms": 100},
            "remote": {"url": url, "push_after_backup": true, "push_interval": interval}
        })
        .to_string(),
    )?;
    Ok(std::process::Command::new(crate::common::trove_bin())
        .current_dir(env.root())
        .env("TROVE_PASSWORD", PASSWORD)
        .env("TROVE_CACHE_DIR", env.cache_dir())
        .env_remove("TROVE_REMOTE")
        .args(["watch", "-q", "--config", cfg.to_str().ok_or("utf8")?])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?)
}

/// Stop a watch session (SIGTERM) and return its exit code.
fn stop(mut child: Child) -> Res<Option<i32>> {
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    Ok(child.wait()?.code())
}

/// Poll `f` until it says yes or a minute has passed (no timed assertion:
/// only a bound on how long a broken build makes the test hang).
fn eventually(what: &str, mut f: impl FnMut() -> Res<bool>) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if f()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("never: {what}").into())
}

fn remote_snapshots(env: &TestEnv, url: &str) -> Res<usize> {
    let o = trove(env, &["snapshots", "--json", "--remote", url], &[])?;
    if !o.status.success() {
        return Ok(0);
    }
    Ok(json(&o)?.as_array().map_or(0, Vec::len))
}

fn local_snapshots(env: &TestEnv) -> Res<usize> {
    let o = trove(env, &["snapshots", "--json", "--repo", &repo(env)], &[])?;
    if !o.status.success() {
        return Ok(0);
    }
    Ok(json(&o)?.as_array().map_or(0, Vec::len))
}

fn log_text(logs: &Path) -> Res<String> {
    let mut all = String::new();
    if let Ok(rd) = std::fs::read_dir(logs) {
        for e in rd {
            all.push_str(&std::fs::read_to_string(e?.path()).unwrap_or_default());
        }
    }
    Ok(all)
}

#[test]
fn watch_pushes_a_run_inside_the_interval_when_the_interval_ends() -> TestResult {
    let env = TestEnv::new()?;
    fill_source(&env, 5)?;
    let url = file_url(&env.root().join("offsite"));
    ok(&trove(&env, &["remote", "init", &url], &[])?, "init")?;
    let logs: PathBuf = env.root().join("logs");
    let child = start_watch(&env, &url, 3, &logs)?;
    let result = (|| -> Res<()> {
        eventually("the initial run is pushed", || {
            Ok(remote_snapshots(&env, &url)? == 1)
        })?;
        // One change, inside the interval, and no run after it: its
        // snapshot goes when the interval ends.
        env.write("docs/inside.txt", "a change inside the interval")?;
        eventually("the second run is committed", || {
            Ok(local_snapshots(&env)? == 2)
        })?;
        eventually("the second run is pushed without a third", || {
            Ok(remote_snapshots(&env, &url)? == 2)
        })?;
        Ok(())
    })();
    let code = stop(child)?;
    result?;
    assert_eq!(code, Some(0));
    Ok(())
}

#[test]
fn watch_logs_a_failed_push_with_the_backlog_and_retries() -> TestResult {
    let env = TestEnv::new()?;
    fill_source(&env, 6)?;
    let dir = env.root().join("offsite");
    let away = env.root().join("offsite-unplugged");
    let url = file_url(&dir);
    ok(&trove(&env, &["remote", "init", &url], &[])?, "init")?;
    let logs: PathBuf = env.root().join("logs");
    let child = start_watch(&env, &url, 1, &logs)?;
    let result = (|| -> Res<()> {
        eventually("the initial run is pushed", || {
            Ok(remote_snapshots(&env, &url)? == 1)
        })?;
        // The second disk goes away; a run comes; its push fails, is
        // logged with the remote, the error and the backlog, and the
        // session goes on.
        std::fs::rename(&dir, &away)?;
        env.write("docs/while-away.txt", "not pushed yet")?;
        eventually("a failed push is logged", || {
            let log = log_text(&logs)?;
            Ok(log.contains(&format!("push to {url} failed"))
                && log.contains("backlog:")
                && log.contains("not on the remote"))
        })?;
        // Back again: the next attempt pushes the backlog.
        std::fs::rename(&away, &dir)?;
        eventually("the backlog is pushed", || {
            Ok(remote_snapshots(&env, &url)? == 2)
        })?;
        Ok(())
    })();
    let code = stop(child)?;
    result?;
    assert_eq!(code, Some(0), "a failed push never stops the session");
    Ok(())
}

#[test]
fn prune_remote_json_counts_the_lock_it_writes_and_releases() -> TestResult {
    let env = TestEnv::new()?;
    fill_source(&env, 3)?;
    env.backup_ok(&[])?;
    let url = file_url(&env.root().join("offsite"));
    ok(&trove(&env, &["remote", "init", &url], &[])?, "init")?;
    let push = trove(
        &env,
        &["push", "--repo", &repo(&env), "--remote", &url],
        &[],
    )?;
    ok(&push, "push")?;
    // No keep rule and nothing unused: the prune's only writes are its
    // lock, taken and released, and both are counted.
    let o = trove(&env, &["prune", "--json", "--remote", &url], &[])?;
    ok(&o, "prune --remote")?;
    let rq = requests(&json(&o)?, "prune --remote")?;
    assert_eq!(rq["put"].as_u64(), Some(1), "{rq}");
    assert_eq!(rq["delete"].as_u64(), Some(1), "{rq}");
    Ok(())
}
