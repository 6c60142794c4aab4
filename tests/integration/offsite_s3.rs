//! The off-site replica against a real S3 server (SeaweedFS on loopback,
//! `s3server.rs`): push → restore into an empty folder on a machine with
//! no repository, push → pull equal to the original, the server killed
//! mid-push (nothing lost, the next push completes), and a missing
//! bucket, refused credentials and an unreachable endpoint named with
//! their exit codes, and a rolling `verify --read-data-subset` whose two
//! halves read every pack once.

use crate::common::{listing, Lcg, Res, TestEnv, TestResult};
use crate::offsite::{fill_source, json, ok, restore_remote, trove};
use crate::s3server::S3Server;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn tree_of(root: &std::path::Path) -> Res<Vec<(Vec<u8>, String)>> {
    Ok(listing(root, true)?
        .into_iter()
        .map(|(p, n)| (p, format!("{n:?}")))
        .collect())
}

#[test]
fn push_restore_and_pull_through_s3() -> TestResult {
    let Some(server) = S3Server::start() else {
        return Ok(());
    };
    server.create_bucket("trove")?;
    let env = TestEnv::new()?;
    fill_source(&env, 21)?;
    env.backup_ok(&[])?;
    let aws = server.env();
    let url = server.url("trove", "offsite/main");
    let repo = env.backup.to_str().ok_or("utf8")?.to_string();
    ok(
        &trove(&env, &["remote", "init", &url], &aws)?,
        "remote init",
    )?;
    let o = trove(
        &env,
        &["push", "--json", "--repo", &repo, "--remote", &url],
        &aws,
    )?;
    ok(&o, "push")?;
    let j = json(&o)?;
    assert_eq!(j["pushed"].as_array().map(Vec::len), Some(1));
    assert!(j["requests"]["put"].as_u64().unwrap_or(0) <= 6, "{j}");
    // A no-change push: a few requests, no PUT.
    let o = trove(
        &env,
        &["push", "--json", "--repo", &repo, "--remote", &url],
        &aws,
    )?;
    ok(&o, "push again")?;
    let r = &json(&o)?["requests"];
    assert_eq!(r["put"].as_u64(), Some(0), "{r}");
    // The disaster: restore with no repository anywhere.
    let target = env.root().join("restored");
    restore_remote(&env, &url, &target, &aws)?;
    assert!(!target.join(".trove").exists());
    assert_eq!(tree_of(&target)?, tree_of(&env.source)?);
    // Pull: the same snapshots and listings.
    let pulled = env.root().join("pulled");
    let p = pulled.to_str().ok_or("utf8")?;
    ok(&trove(&env, &["pull", "--remote", &url, p], &aws)?, "pull")?;
    for args in [["snapshots", "--json"], ["ls", "--json"]] {
        let orig = trove(&env, &[args[0], args[1], "--repo", &repo], &aws)?;
        let copy = trove(&env, &[args[0], args[1], "--repo", p], &aws)?;
        ok(&orig, "orig")?;
        ok(&copy, "copy")?;
        assert_eq!(json(&orig)?, json(&copy)?, "{args:?}");
    }
    ok(
        &trove(&env, &["verify", "--remote", &url, "--read-data"], &aws)?,
        "verify --read-data",
    )?;
    let st = trove(&env, &["stats", "--json", "--remote", &url], &aws)?;
    ok(&st, "stats --remote")?;
    assert_eq!(json(&st)?["remote"]["snapshots"].as_u64(), Some(1));
    Ok(())
}

#[test]
fn a_server_killed_mid_push_loses_nothing() -> TestResult {
    let Some(mut server) = S3Server::start() else {
        return Ok(());
    };
    server.create_bucket("crash")?;
    let env = TestEnv::new()?;
    let mut rng = Lcg(99);
    for i in 0..48 {
        env.write(&format!("d/f{i}.bin"), rng.bytes(450 * 1024))?;
    }
    env.backup_ok(&[])?;
    let aws = server.env();
    let url = server.url("crash", "");
    let repo = env.backup.to_str().ok_or("utf8")?.to_string();
    ok(
        &trove(&env, &["remote", "init", &url, "--pack-size", "1M"], &aws)?,
        "init",
    )?;
    let mut push = std::process::Command::new(crate::common::trove_bin());
    push.current_dir(env.root())
        .env("TROVE_PASSWORD", crate::offsite::PASSWORD)
        .env("TROVE_CACHE_DIR", env.cache_dir())
        .envs(aws.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(["push", "--repo", &repo, "--remote", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = push.spawn()?;
    // Kill the server once some packs are up.
    let b = trove::remote::backend::open_with(&url, false, &server.settings())?;
    let started = Instant::now();
    while b.list("data/").map(|l| l.len()).unwrap_or(0) < 3
        && started.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();
    let out = child.wait_with_output()?;
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    if out.status.success() {
        eprintln!("the push finished before the server died; the kill was not mid-push");
    } else {
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(&url), "names the remote: {err}");
    }
    // Nothing lost locally.
    ok(
        &trove(&env, &["verify", "--repo", &repo], &[])?,
        "local verify",
    )?;
    // The server comes back: what is there reads, and the next push completes.
    server.run()?;
    // S3 answers before the restarted volume serves reads again.
    let b = trove::remote::backend::open_with(&url, false, &server.settings())?;
    let started = Instant::now();
    while b.get("config").is_err() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
    }
    ok(
        &trove(&env, &["verify", "--remote", &url], &aws)?,
        "verify after the crash",
    )?;
    ok(
        &trove(&env, &["push", "--repo", &repo, "--remote", &url], &aws)?,
        "push again",
    )?;
    let target = env.root().join("restored");
    restore_remote(&env, &url, &target, &aws)?;
    assert_eq!(tree_of(&target)?, tree_of(&env.source)?);
    ok(
        &trove(&env, &["verify", "--remote", &url, "--read-data"], &aws)?,
        "verify --read-data",
    )?;
    Ok(())
}

#[test]
fn bucket_credentials_and_endpoint_problems_are_named() -> TestResult {
    let Some(server) = S3Server::start() else {
        return Ok(());
    };
    server.create_bucket("there")?;
    let env = TestEnv::new()?;
    let aws = server.env();
    // A bucket that does not exist: exit 2, named.
    let missing = server.url("not-there", "x");
    let o = trove(&env, &["remote", "init", &missing], &aws)?;
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(err.contains("not-there") && err.contains("bucket"), "{err}");
    // Refused credentials: exit 2.
    let url = server.url("there", "");
    let mut bad = aws.clone();
    for (k, v) in &mut bad {
        if k == "AWS_SECRET_ACCESS_KEY" {
            *v = "wrong-secret".into();
        }
    }
    let o = trove(&env, &["remote", "init", &url], &bad)?;
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains(&url));
    // Not a remote repository (an empty bucket): exit 2.
    let o = trove(&env, &["snapshots", "--remote", &url], &aws)?;
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // An endpoint nothing listens on: exit 1, in bounded time.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut gone = aws.clone();
    for (k, v) in &mut gone {
        if k == "AWS_ENDPOINT_URL" {
            *v = format!("http://127.0.0.1:{closed}");
        }
    }
    let t = Instant::now();
    let o = trove(&env, &["snapshots", "--remote", &url], &gone)?;
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(t.elapsed() < Duration::from_secs(60));
    assert!(String::from_utf8_lossy(&o.stderr).contains(&url));
    Ok(())
}

#[test]
fn read_data_subset_halves_read_every_pack_once_through_s3() -> TestResult {
    let Some(server) = S3Server::start() else {
        return Ok(());
    };
    server.create_bucket("subset")?;
    let env = TestEnv::new()?;
    let mut rng = Lcg(1617);
    for i in 0..14 {
        env.write(&format!("d/f{i}.bin"), rng.bytes(500 * 1024))?;
    }
    env.backup_ok(&[])?;
    let aws = server.env();
    let url = server.url("subset", "nightly");
    let repo = env.backup.to_str().ok_or("utf8")?.to_string();
    ok(
        &trove(&env, &["remote", "init", &url, "--pack-size", "1M"], &aws)?,
        "init",
    )?;
    ok(
        &trove(&env, &["push", "--repo", &repo, "--remote", &url], &aws)?,
        "push",
    )?;
    // The truth: every object under data/ and tree/ in the bucket.
    let b = trove::remote::backend::open_with(&url, false, &server.settings())?;
    let mut packs: Vec<String> = Vec::new();
    for dir in ["data/", "tree/"] {
        for l in b.list(dir)? {
            let name = l.path.rsplit('/').next().ok_or("pack name")?;
            packs.push(name.to_string());
        }
    }
    packs.sort();
    assert!(packs.len() >= 4, "only {} packs", packs.len());
    let mut seen: Vec<String> = Vec::new();
    for spec in ["1/2", "2/2"] {
        let o = trove(
            &env,
            &[
                "verify",
                "--json",
                "--remote",
                &url,
                "--read-data-subset",
                spec,
            ],
            &aws,
        )?;
        ok(&o, spec)?;
        let j = json(&o)?;
        let names = crate::offsite_subset::read_names(&j)?;
        // One GET per pack read, beside the index and tree reads; no
        // write of any kind.
        let r = &j["requests"];
        assert!(r["get"].as_u64().unwrap_or(0) >= names.len() as u64, "{r}");
        assert_eq!(r["put"].as_u64(), Some(0), "{r}");
        assert_eq!(r["delete"].as_u64(), Some(0), "{r}");
        assert!(r["bytes_down"].as_u64() >= j["bytes_read"].as_u64(), "{j}");
        seen.extend(names);
    }
    seen.sort();
    assert_eq!(
        seen, packs,
        "1/2 and 2/2 together read every pack exactly once"
    );
    Ok(())
}

/// The storage class the server stored for an object (`None`: none was
/// given, i.e. STANDARD), from the filer's `Extended` attributes, whose
/// values JSON carries as base64.
fn stored_class(server: &S3Server, bucket: &str, path: &str) -> Res<Option<String>> {
    let entry = server.filer_entry(bucket, path)?;
    let Some(ext) = entry["Extended"].as_object() else {
        return Ok(None);
    };
    for (k, v) in ext {
        if k.eq_ignore_ascii_case("x-amz-storage-class") {
            let raw = v.as_str().ok_or("class value")?;
            let class = base64_decode(raw)
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|c| c.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_'))
                .unwrap_or_else(|| raw.to_string());
            return Ok(Some(class));
        }
    }
    Ok(None)
}

/// Standard base64 (with padding), as Go's JSON writes a byte slice.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = ABC.iter().position(|&a| a == c)? as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    Some(out)
}

#[test]
fn data_packs_are_written_in_the_data_storage_class_and_nothing_else_is() -> TestResult {
    let Some(server) = S3Server::start() else {
        return Ok(());
    };
    server.create_bucket("cold")?;
    let env = TestEnv::new()?;
    fill_source(&env, 31)?;
    env.backup_ok(&[])?;
    let aws = server.env();
    let url = server.url("cold", "t");
    let repo = env.backup.to_str().ok_or("utf8")?.to_string();
    ok(
        &trove(&env, &["remote", "init", &url], &aws)?,
        "remote init",
    )?;
    ok(
        &trove(
            &env,
            &[
                "push",
                "--repo",
                &repo,
                "--remote",
                &url,
                "--data-storage-class",
                "STANDARD_IA",
            ],
            &aws,
        )?,
        "push",
    )?;
    let b = trove::remote::backend::open_with(&url, false, &server.settings())?;
    let all = b.list("")?;
    let (mut data, mut other) = (0, 0);
    for o in &all {
        let class = stored_class(&server, "cold", &format!("t/{}", o.path))?;
        if o.path.starts_with("data/") {
            data += 1;
            assert_eq!(class.as_deref(), Some("STANDARD_IA"), "{}", o.path);
        } else {
            other += 1;
            assert!(
                class.is_none() || class.as_deref() == Some("STANDARD"),
                "{}: {class:?}",
                o.path
            );
        }
    }
    assert!(data > 0 && other >= 4, "{all:?}");
    eprintln!("storage classes checked on {data} data pack(s) and {other} other object(s)");
    // The remote reads back whole: restore needs nothing thawed.
    let target = env.root().join("restored");
    restore_remote(&env, &url, &target, &aws)?;
    assert_eq!(tree_of(&target)?, tree_of(&env.source)?);
    Ok(())
}
