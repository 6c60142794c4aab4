//! The off-site replica on a `file://` remote (a second disk): push →
//! restore into a machine with no repository, push → pull giving the same
//! snapshots and listings, idempotent and incremental pushes, a killed
//! push resumed, damage found by `verify --remote --read-data`, and every
//! bad input named with its exit code. The same flows against a real S3
//! server are in `offsite_s3.rs`.

use crate::common::{listing, Lcg, Res, TestEnv, TestResult};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const PASSWORD: &str = "correct horse battery staple";

/// A source with small files, an empty one, a large (chunked) one, a
/// symlink and nested folders.
pub fn fill_source(env: &TestEnv, seed: u64) -> Res<()> {
    let mut rng = Lcg(seed);
    for i in 0..40 {
        let n = rng.range(1, 5000) as usize;
        env.write(&format!("docs/d{}/f{i}.txt", i % 4), rng.bytes(n))?;
    }
    env.write("empty", b"")?;
    env.write("same1", b"same content")?;
    env.write("same2", b"same content")?;
    env.write("big/large.bin", rng.bytes(3 * 1024 * 1024 + 17))?;
    std::os::unix::fs::symlink("docs/d0", env.src("link"))?;
    Ok(())
}

/// `trove ARGS…` with the remote's password in the environment.
pub fn trove(env: &TestEnv, args: &[&str], extra: &[(String, String)]) -> Res<Output> {
    let mut c = env.cmd()?;
    c.env("TROVE_PASSWORD", PASSWORD).env_remove("TROVE_REMOTE");
    for (k, v) in extra {
        c.env(k, v);
    }
    Ok(c.args(args).output()?)
}

pub fn ok(o: &Output, what: &str) -> Res<()> {
    if o.status.code() != Some(0) {
        return Err(format!(
            "{what}: exit {:?}\nstdout: {}\nstderr: {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
        .into());
    }
    Ok(())
}

pub fn json(o: &Output) -> Res<serde_json::Value> {
    Ok(serde_json::from_slice(&o.stdout)?)
}

/// The JSON object a command whose `--json` is a list prints last on
/// standard error (its requests).
pub fn stderr_json(o: &Output) -> Res<serde_json::Value> {
    let err = String::from_utf8_lossy(&o.stderr);
    let line = err
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("no requests on stderr: {err}"))?;
    Ok(serde_json::from_str(line)?)
}

pub fn file_url(p: &Path) -> String {
    format!("file://{}", p.display())
}

/// `trove push` of the env's repository, which must succeed.
fn push(env: &TestEnv, url: &str) -> Res<()> {
    ok(
        &trove(env, &["push", "--repo", &repo(env), "--remote", url], &[])?,
        "push",
    )
}

pub fn repo(env: &TestEnv) -> String {
    env.backup.display().to_string()
}

/// A backup and a remote initialised and pushed to.
fn pushed(env: &TestEnv) -> Res<String> {
    pushed_seeded(env, 7)
}

/// [`pushed`] of a source filled from `seed`; the remote's URL.
pub fn pushed_seeded(env: &TestEnv, seed: u64) -> Res<String> {
    fill_source(env, seed)?;
    env.backup_ok(&[])?;
    let url = file_url(&env.root().join("offsite"));
    ok(&trove(env, &["remote", "init", &url], &[])?, "remote init")?;
    ok(
        &trove(env, &["push", "--repo", &repo(env), "--remote", &url], &[])?,
        "push",
    )?;
    Ok(url)
}

/// Files, folders and symlinks below `root` (bytes and kinds).
fn tree_of(root: &Path) -> Res<Vec<(Vec<u8>, String)>> {
    Ok(listing(root, true)?
        .into_iter()
        .map(|(p, n)| (p, format!("{n:?}")))
        .collect())
}

#[test]
fn push_then_restore_on_a_machine_without_the_repository() -> TestResult {
    let env = TestEnv::new()?;
    let url = pushed(&env)?;
    // The disaster: the local disk is gone.
    std::fs::remove_dir_all(&env.backup)?;
    let target = env.root().join("restored");
    restore_remote(&env, &url, &target, &[])?;
    assert_eq!(tree_of(&target)?, tree_of(&env.source)?);
    // One path only.
    let one = env.root().join("one");
    let o = trove(
        &env,
        &[
            "restore",
            "--remote",
            &url,
            "--target",
            one.to_str().ok_or("utf8")?,
            "big",
        ],
        &[],
    )?;
    ok(&o, "restore --remote big")?;
    assert_eq!(
        std::fs::read(one.join("big/large.bin"))?,
        std::fs::read(env.src("big/large.bin"))?
    );
    assert!(!one.join("docs").exists());
    Ok(())
}

#[test]
fn pull_rebuilds_the_same_repository() -> TestResult {
    let env = TestEnv::new()?;
    let url = pushed(&env)?;
    // A second snapshot, so history (versions/) travels too.
    env.write("docs/d0/f0.txt", b"changed")?;
    std::fs::remove_file(env.src("same2"))?;
    env.backup_ok(&[])?;
    push(&env, &url)?;
    let pulled = env.root().join("pulled");
    let p = pulled.to_str().ok_or("utf8")?;
    ok(&trove(&env, &["pull", "--remote", &url, p], &[])?, "pull")?;
    for args in [
        vec!["snapshots", "--json"],
        vec!["ls", "--json"],
        vec!["ls", "--json", "latest", "docs"],
    ] {
        let mut a = args.clone();
        a.extend(["--repo", repo_str(&env)]);
        let orig = trove(&env, &a, &[])?;
        let mut b = args.clone();
        b.extend(["--repo", p]);
        let copy = trove(&env, &b, &[])?;
        ok(&orig, "original")?;
        ok(&copy, "pulled")?;
        assert_eq!(json(&orig)?, json(&copy)?, "{args:?}");
        // And the remote itself answers the same.
        let mut c = args.clone();
        c.extend(["--remote", &url]);
        let remote = trove(&env, &c, &[])?;
        ok(&remote, "remote")?;
        assert_eq!(json(&orig)?, json(&remote)?, "{args:?} --remote");
    }
    // The browsable tree is there, and the pulled repository verifies.
    assert_eq!(tree_of(&pulled)?, tree_of(&env.backup)?);
    ok(
        &trove(&env, &["verify", "--repo", p], &[])?,
        "verify pulled",
    )?;
    // Pulling again copies nothing.
    let again = trove(&env, &["pull", "--json", "--remote", &url, p], &[])?;
    ok(&again, "pull again")?;
    assert_eq!(
        json(&again)?["pull"]["pulled"].as_array().map(Vec::len),
        Some(0)
    );
    Ok(())
}

fn repo_str(env: &TestEnv) -> &str {
    env.backup.to_str().unwrap_or("")
}

#[test]
fn a_second_push_is_cheap_and_an_incremental_one_small() -> TestResult {
    let env = TestEnv::new()?;
    let url = pushed(&env)?;
    let again = trove(
        &env,
        &["push", "--json", "--repo", &repo(&env), "--remote", &url],
        &[],
    )?;
    ok(&again, "push again")?;
    let j = json(&again)?;
    assert_eq!(j["pushed"].as_array().map(Vec::len), Some(0));
    let r = &j["requests"];
    let total: u64 = ["put", "get", "list", "head", "delete"]
        .iter()
        .map(|k| r[k].as_u64().unwrap_or(0))
        .sum();
    assert!(total <= 10, "a no-change push made {total} requests: {r}");
    assert_eq!(r["put"].as_u64(), Some(0));
    // Change 1 byte in the middle of the large file: only a chunk or two
    // (≤ 8 MiB with the chunk list and trees) goes up.
    let big = env.src("big/large.bin");
    let mut data = std::fs::read(&big)?;
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&big, &data)?;
    env.backup_ok(&[])?;
    let inc = trove(
        &env,
        &["push", "--json", "--repo", &repo(&env), "--remote", &url],
        &[],
    )?;
    ok(&inc, "incremental push")?;
    let j = json(&inc)?;
    assert_eq!(j["pushed"].as_array().map(Vec::len), Some(1));
    let up = j["bytes_uploaded"].as_u64().unwrap_or(u64::MAX);
    assert!(
        up < 3 * 1024 * 1024,
        "uploaded {up} bytes for a 1-byte change"
    );
    Ok(())
}

#[test]
fn verify_read_data_finds_a_flipped_byte_and_a_truncated_pack() -> TestResult {
    let env = TestEnv::new()?;
    let url = pushed(&env)?;
    ok(&trove(&env, &["verify", "--remote", &url], &[])?, "verify")?;
    ok(
        &trove(&env, &["verify", "--remote", &url, "--read-data"], &[])?,
        "verify --read-data",
    )?;
    let packs = files_below(&env.root().join("offsite/data"))?;
    let biggest = packs
        .iter()
        .max_by_key(|p| p.metadata().map(|m| m.len()).unwrap_or(0))
        .ok_or("no data pack")?
        .clone();
    let mut bytes = std::fs::read(&biggest)?;
    bytes[100] ^= 0x01;
    make_writable(&biggest)?;
    std::fs::write(&biggest, &bytes)?;
    // Same size: the structure check cannot see it; reading does.
    let o = trove(&env, &["verify", "--remote", &url, "--read-data"], &[])?;
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(text.contains("corrupt"), "{text}");
    // Truncated: named by the structure check alone.
    std::fs::write(&biggest, &bytes[..bytes.len() / 2])?;
    let o = trove(&env, &["verify", "--remote", &url], &[])?;
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        text.contains("truncated") && text.contains("pack"),
        "{text}"
    );
    // A missing pack and a truncated index file, each named.
    std::fs::remove_file(&biggest)?;
    let o = trove(&env, &["verify", "--remote", &url], &[])?;
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(text.contains("missing pack"), "{text}");
    let index = files_below(&env.root().join("offsite/index"))?;
    let idx = index.first().ok_or("no index file")?;
    let bytes = std::fs::read(idx)?;
    make_writable(idx)?;
    std::fs::write(idx, &bytes[..bytes.len() - 7])?;
    let o = trove(&env, &["verify", "--remote", &url], &[])?;
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(text.contains("index: index/"), "{text}");
    // With the only index damaged its packs are hidden: their content is
    // named missing, and `push --repair` from the repository re-indexes
    // the packs there and uploads what is gone.
    assert!(text.contains("missing"), "{text}");
    let o = trove(
        &env,
        &[
            "push",
            "--repair",
            "--json",
            "--repo",
            &repo(&env),
            "--remote",
            &url,
        ],
        &[],
    )?;
    ok(&o, "push --repair")?;
    assert!(json(&o)?["packs_adopted"].as_u64().unwrap_or(0) > 0);
    // The damaged index file stays (nothing is deleted by a push); it is
    // still named, and everything else verifies with the data read.
    let o = trove(&env, &["verify", "--remote", &url, "--read-data"], &[])?;
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(": "))
        .filter(|l| !l.starts_with("remote "))
        .collect();
    assert!(problems.iter().all(|l| l.starts_with("index: ")), "{text}");
    let target = env.root().join("restored");
    restore_remote(&env, &url, &target, &[])?;
    assert_eq!(tree_of(&target)?, tree_of(&env.source)?);
    Ok(())
}

/// `trove restore --remote URL --target TARGET`, which must succeed.
pub fn restore_remote(
    env: &TestEnv,
    url: &str,
    target: &Path,
    extra: &[(String, String)],
) -> Res<()> {
    let t = target.to_str().ok_or("utf8")?;
    ok(
        &trove(env, &["restore", "--remote", url, "--target", t], extra)?,
        "restore --remote",
    )
}

fn make_writable(p: &Path) -> Res<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

pub fn files_below(dir: &Path) -> Res<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(files_below(&p)?);
        } else {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

#[test]
fn bad_inputs_are_named_with_their_exit_codes() -> TestResult {
    let env = TestEnv::new()?;
    let url = pushed(&env)?;
    // Wrong password: usage error naming the remote.
    let mut c = env.cmd()?;
    let o = c
        .env("TROVE_PASSWORD", "wrong")
        .args(["snapshots", "--remote", &url])
        .output()?;
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(err.contains("password") && err.contains(&url), "{err}");
    // No password at all, stdin not a terminal.
    let o = env
        .cmd()?
        .env_remove("TROVE_PASSWORD")
        .env_remove("TROVE_PASSWORD_FILE")
        .args(["snapshots", "--remote", &url])
        .output()?;
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("TROVE_PASSWORD"));
    // The password from a file works.
    let pw = env.root().join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n"))?;
    let o = env
        .cmd()?
        .env_remove("TROVE_PASSWORD")
        .args([
            "snapshots",
            "--remote",
            &url,
            "--password-file",
            pw.to_str().ok_or("utf8")?,
        ])
        .output()?;
    ok(&o, "password file")?;
    // No remote there.
    let nowhere = file_url(&env.root().join("nowhere"));
    let o = trove(&env, &["snapshots", "--remote", &nowhere], &[])?;
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nowhere"));
    // A folder that is not a remote.
    let o = trove(
        &env,
        &["snapshots", "--remote", &file_url(&env.source)],
        &[],
    )?;
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // An unknown scheme.
    let o = trove(&env, &["snapshots", "--remote", "ftp://x/y"], &[])?;
    assert_eq!(o.status.code(), Some(2));
    // Written by a newer trove: named, exit 1, nothing changed.
    let cfg = env.root().join("offsite/config");
    let mut bytes = std::fs::read(&cfg)?;
    bytes[4] = 9;
    make_writable(&cfg)?;
    std::fs::write(&cfg, &bytes)?;
    let o = trove(&env, &["snapshots", "--remote", &url], &[])?;
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("version 9"));
    // `remote init` on an existing remote refuses.
    bytes[4] = 1;
    std::fs::write(&cfg, &bytes)?;
    let o = trove(&env, &["remote", "init", &url], &[])?;
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(())
}

#[test]
fn keys_can_be_added_listed_and_removed() -> TestResult {
    let env = TestEnv::new()?;
    let url = pushed(&env)?;
    let o = trove(
        &env,
        &["remote", "key", "add", "--remote", &url],
        &[("TROVE_NEW_PASSWORD".into(), "second".into())],
    )?;
    ok(&o, "key add")?;
    let o = env
        .cmd()?
        .env("TROVE_PASSWORD", "second")
        .args(["snapshots", "--remote", &url])
        .output()?;
    ok(&o, "snapshots with the second password")?;
    let list = trove(
        &env,
        &["remote", "key", "list", "--json", "--remote", &url],
        &[],
    )?;
    ok(&list, "key list")?;
    let keys = json(&list)?;
    let keys = keys.as_array().ok_or("array")?;
    assert_eq!(keys.len(), 2);
    let other = keys
        .iter()
        .find(|k| k["current"] == false)
        .and_then(|k| k["id"].as_str())
        .ok_or("the other key")?
        .to_string();
    let current = keys
        .iter()
        .find(|k| k["current"] == true)
        .and_then(|k| k["id"].as_str())
        .ok_or("the current key")?
        .to_string();
    // The key in use is never removed.
    let o = trove(
        &env,
        &["remote", "key", "remove", "--remote", &url, &current[..12]],
        &[],
    )?;
    assert_eq!(o.status.code(), Some(2));
    ok(
        &trove(
            &env,
            &["remote", "key", "remove", "--remote", &url, &other[..12]],
            &[],
        )?,
        "key remove",
    )?;
    let o = env
        .cmd()?
        .env("TROVE_PASSWORD", "second")
        .args(["snapshots", "--remote", &url])
        .output()?;
    assert_eq!(o.status.code(), Some(2));
    Ok(())
}

#[test]
fn a_killed_push_is_resumed_and_leaves_a_readable_remote() -> TestResult {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("SKIP: strace is not installed");
        return Ok(());
    }
    let env = TestEnv::new()?;
    fill_source(&env, 11)?;
    // Enough content for several packs of 1 MiB.
    let mut rng = Lcg(5);
    for i in 0..12 {
        env.write(&format!("more/m{i}.bin"), rng.bytes(400 * 1024))?;
    }
    env.backup_ok(&[])?;
    let url = file_url(&env.root().join("offsite"));
    ok(
        &trove(&env, &["remote", "init", &url, "--pack-size", "1M"], &[])?,
        "init",
    )?;
    let repo = repo(&env);
    // Kill pushes at their N-th rename until one leaves packs in place
    // with no index naming them (which rename that is depends on how the
    // two uploader threads interleave, so a kill may land after the index
    // and before the commit instead: that is a state to verify too).
    let mut killed = 0;
    let mut left_unindexed = false;
    for kill_at in [3, 2, 2, 4, 3, 5] {
        let o = Command::new("strace")
            .args(["-f", "-qq", "-o", "/dev/null", "-e"])
            .arg(format!(
                "inject=rename,renameat,renameat2:signal=KILL:when={kill_at}"
            ))
            .arg(crate::common::trove_bin())
            // The kill points are the remote's renames, not the cache's.
            .args(["push", "--no-cache", "--repo", &repo, "--remote", &url])
            .env("TROVE_PASSWORD", PASSWORD)
            .current_dir(env.root())
            .output()?;
        if o.status.code() == Some(0) {
            break;
        }
        killed += 1;
        // Whatever is there reads and verifies.
        let v = trove(
            &env,
            &["verify", "--json", "--remote", &url, "--read-data"],
            &[],
        )?;
        ok(&v, "verify after kill")?;
        if json(&v)?["unindexed_packs"].as_u64().unwrap_or(0) > 0 {
            left_unindexed = true;
            break;
        }
    }
    assert!(killed > 0, "no push was killed");
    let o = trove(
        &env,
        &["push", "--json", "--repo", &repo, "--remote", &url],
        &[],
    )?;
    ok(&o, "resumed push")?;
    let j = json(&o)?;
    if left_unindexed {
        assert!(j["packs_adopted"].as_u64().unwrap_or(0) > 0, "{j}");
    }
    let target = env.root().join("restored");
    restore_remote(&env, &url, &target, &[])?;
    assert_eq!(tree_of(&target)?, tree_of(&env.source)?);
    ok(
        &trove(&env, &["verify", "--remote", &url, "--read-data"], &[])?,
        "verify",
    )?;
    Ok(())
}

#[test]
fn backup_push_pushes_at_the_end_of_the_run() -> TestResult {
    let env = TestEnv::new()?;
    fill_source(&env, 3)?;
    let url = file_url(&env.root().join("offsite"));
    ok(&trove(&env, &["remote", "init", &url], &[])?, "init")?;
    let src = env.source.to_str().ok_or("utf8")?.to_string();
    let o = trove(
        &env,
        &["backup", &src, &repo(&env), "--push"],
        &[("TROVE_REMOTE".into(), url.clone())],
    )?;
    ok(&o, "backup --push")?;
    let snaps = trove(&env, &["snapshots", "--json", "--remote", &url], &[])?;
    ok(&snaps, "snapshots")?;
    assert_eq!(json(&snaps)?.as_array().map(Vec::len), Some(1));
    Ok(())
}

#[test]
fn watch_pushes_its_runs_when_the_config_says_so() -> TestResult {
    let env = TestEnv::new()?;
    fill_source(&env, 4)?;
    let url = file_url(&env.root().join("offsite"));
    ok(&trove(&env, &["remote", "init", &url], &[])?, "init")?;
    let cfg = env.root().join("config.json");
    std::fs::write(
        &cfg,
        serde_json::json!({
            "sources": [env.source],
            "backup_root": env.backup,
            "remote": {"url": url, "push_after_backup": true}
        })
        .to_string(),
    )?;
    let mut child = std::process::Command::new(crate::common::trove_bin())
        .current_dir(env.root())
        .env("TROVE_PASSWORD", PASSWORD)
        .env("TROVE_CACHE_DIR", env.cache_dir())
        .args(["watch", "-q", "--config", cfg.to_str().ok_or("utf8")?])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut pushed = 0;
    while std::time::Instant::now() < deadline {
        let o = trove(&env, &["snapshots", "--json", "--remote", &url], &[])?;
        if o.status.success() {
            pushed = json(&o)?.as_array().map_or(0, Vec::len);
            if pushed > 0 {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait()?;
    assert_eq!(pushed, 1, "the initial run was not pushed");
    assert_eq!(status.code(), Some(0));
    Ok(())
}

#[test]
fn content_retention_removed_is_named_and_not_damage() -> TestResult {
    let env = TestEnv::new()?;
    let cfg = env.root().join("config.json");
    std::fs::write(
        &cfg,
        serde_json::json!({
            "sources": [env.source],
            "backup_root": env.backup,
            "retention": {"max_versions_per_file": 1}
        })
        .to_string(),
    )?;
    let c = cfg.to_str().ok_or("utf8")?;
    for v in ["one", "two", "three"] {
        env.write("notes.txt", format!("version {v}"))?;
        ok(&trove(&env, &["backup", "--config", c], &[])?, "backup")?;
    }
    let url = file_url(&env.root().join("offsite"));
    ok(&trove(&env, &["remote", "init", &url], &[])?, "init")?;
    let o = trove(
        &env,
        &["push", "--json", "--repo", &repo(&env), "--remote", &url],
        &[],
    )?;
    ok(&o, "push")?;
    let j = json(&o)?;
    assert_eq!(j["pushed"].as_array().map(Vec::len), Some(3));
    let missing = j["missing"].as_array().ok_or("missing")?;
    assert!(
        missing.iter().any(|m| m["path"] == "notes.txt"),
        "the first version's content is named: {j}"
    );
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(err.contains("not on the remote: notes.txt"), "{err}");
    // Absent by design: not damage.
    ok(
        &trove(&env, &["verify", "--remote", &url, "--read-data"], &[])?,
        "verify --remote",
    )?;
    // The latest restores whole.
    let target = env.root().join("restored");
    restore_remote(&env, &url, &target, &[])?;
    assert_eq!(std::fs::read(target.join("notes.txt"))?, b"version three");
    Ok(())
}

/// Property: whatever the history (files written, changed, removed over a
/// few runs), backup → push → pull gives a repository whose `snapshots
/// --json` and `ls --json` of every snapshot equal the original's.
#[test]
fn push_then_pull_is_faithful_for_any_history() -> TestResult {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let mut runner = TestRunner::new(Config {
        cases: 4,
        failure_persistence: None,
        ..Config::default()
    });
    // Per run: (file index, size) writes and file indexes removed.
    let run = (
        proptest::collection::vec(
            (0u8..12, prop_oneof![0usize..3000, 600_000usize..900_000]),
            1..6,
        ),
        proptest::collection::vec(0u8..12, 0..3),
    );
    let history = proptest::collection::vec(run, 1..4);
    runner
        .run(&(history, any::<u64>()), |(history, seed)| {
            faithful(&history, seed).map_err(|e| TestCaseError::fail(e.to_string()))
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[allow(clippy::type_complexity)]
fn faithful(history: &[(Vec<(u8, usize)>, Vec<u8>)], seed: u64) -> Res<()> {
    let env = TestEnv::new()?;
    let mut rng = Lcg(seed);
    let url = file_url(&env.root().join("offsite"));
    ok(&trove(&env, &["remote", "init", &url], &[])?, "init")?;
    for (writes, removes) in history {
        for (i, size) in writes {
            env.write(&format!("d{}/f{i}", i % 3), rng.bytes(*size))?;
        }
        for i in removes {
            let _ = std::fs::remove_file(env.src(&format!("d{}/f{i}", i % 3)));
        }
        env.backup(&[])?;
    }
    push(&env, &url)?;
    let pulled = env.root().join("pulled");
    let p = pulled.to_str().ok_or("utf8")?;
    ok(&trove(&env, &["pull", "--remote", &url, p], &[])?, "pull")?;
    let snaps = trove(&env, &["snapshots", "--json", "--repo", &repo(&env)], &[])?;
    let copy = trove(&env, &["snapshots", "--json", "--repo", p], &[])?;
    if json(&snaps)? != json(&copy)? {
        return Err("snapshots --json differ".into());
    }
    for s in json(&snaps)?.as_array().ok_or("array")? {
        let id = s["id"].as_str().ok_or("id")?;
        let a = trove(&env, &["ls", "--json", id, "--repo", &repo(&env)], &[])?;
        let b = trove(&env, &["ls", "--json", id, "--repo", p], &[])?;
        if json(&a)? != json(&b)? {
            return Err(format!("ls --json {id} differs").into());
        }
    }
    Ok(())
}

/// The off-site copy carries the metadata of format 2 — extended
/// attributes, a hard-link group, a FIFO, holes — and moves no zeros: a
/// 64 MiB sparse file costs a few KiB to push, and comes back sparse.
#[test]
fn metadata_and_holes_travel_off_site_without_the_zeros() -> TestResult {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let env = TestEnv::new()?;
    env.write("a.txt", "hello")?;
    let xattrs_here = rustix::fs::lsetxattr(
        env.src("a.txt"),
        "user.note",
        b"off-site",
        rustix::fs::XattrFlags::empty(),
    )
    .is_ok();
    std::fs::hard_link(env.src("a.txt"), env.src("a_link"))?;
    let st = Command::new("mkfifo").arg(env.src("pipe")).status()?;
    assert!(st.success());
    let sparse = std::fs::File::create(env.src("sparse"))?;
    sparse.set_len(64 << 20)?;
    drop(sparse);
    env.backup_ok(&[])?;
    let url = file_url(&env.root().join("offsite"));
    ok(&trove(&env, &["remote", "init", &url], &[])?, "remote init")?;
    let p = trove(
        &env,
        &["push", "--json", "--repo", &repo(&env), "--remote", &url],
        &[],
    )?;
    ok(&p, "push")?;
    let up = json(&p)?["bytes_uploaded"].as_u64().unwrap_or(u64::MAX);
    assert!(up < 1 << 20, "a 64 MiB file of holes uploaded {up} bytes");
    std::fs::remove_dir_all(&env.backup)?;
    let target = env.root().join("restored");
    restore_remote(&env, &url, &target, &[])?;
    let m = |p: &str| std::fs::symlink_metadata(target.join(p));
    assert_eq!(m("a.txt")?.ino(), m("a_link")?.ino(), "linked again");
    assert!(m("pipe")?.file_type().is_fifo());
    assert_eq!(m("sparse")?.len(), 64 << 20);
    assert!(
        m("sparse")?.blocks() < 1024,
        "restored sparse: {} blocks",
        m("sparse")?.blocks()
    );
    if xattrs_here {
        let x = trove::fsmeta::read_xattrs(&target.join("a.txt"))?;
        assert_eq!(x.xattrs.as_slice().len(), 1);
        assert_eq!(x.xattrs.as_slice()[0].value, b"off-site");
    }
    Ok(())
}
