//! S3 Object Lock on a real server (SeaweedFS on loopback, which enforces
//! it): `remote init --object-lock` refused on a bucket without object
//! lock and on a folder; every object a push writes locked (COMPLIANCE,
//! until the upload plus the period) and `RemoteRepo::locked_until`
//! saying so; `verify --remote` warning about a needed object without a
//! lock; `remote extend-locks` moving every date forward; and what a
//! plain DELETE of a locked object does on S3 (a delete marker hides it,
//! the locked version stays), which is why `prune --remote` must ask
//! `locked_until` before it deletes.

use crate::common::{Res, TestEnv, TestResult};
use crate::offsite::{fill_source, json, ok, trove, PASSWORD};
use crate::s3server::S3Server;
use jiff::{SignedDuration, Timestamp};
use trove::remote::backend::{self, LockMode};
use trove::remote::locks::needed_objects;
use trove::remote::repo::RemoteRepo;

/// A locked bucket (`locked`) with a remote at `locked/trove` made with
/// `--object-lock 1` and one snapshot pushed to it: the remote's URL and
/// the variables that reach the server. For any test of a locked remote
/// (prune's refusal included).
pub fn pushed_locked_remote(
    server: &S3Server,
    env: &TestEnv,
) -> Res<(String, Vec<(String, String)>)> {
    server.create_locked_bucket("locked")?;
    fill_source(env, 5)?;
    env.backup_ok(&[])?;
    let aws = server.env();
    let url = server.url("locked", "trove");
    let o = trove(
        env,
        &["remote", "init", "--json", "--object-lock", "1", &url],
        &aws,
    )?;
    ok(&o, "remote init --object-lock 1")?;
    let j = json(&o)?;
    assert_eq!(j["object_lock"]["days"].as_u64(), Some(1), "{j}");
    assert_eq!(j["object_lock"]["mode"].as_str(), Some("compliance"), "{j}");
    let repo = env.backup.display().to_string();
    ok(
        &trove(env, &["push", "--repo", &repo, "--remote", &url], &aws)?,
        "push",
    )?;
    Ok((url, aws))
}

/// The remote at `url`, opened through the library.
fn open(server: &S3Server, url: &str) -> Res<RemoteRepo> {
    let b = backend::open_with(url, false, &server.settings())?;
    Ok(RemoteRepo::open(b, PASSWORD.as_bytes())?)
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn object_lock_is_refused_where_it_cannot_hold() -> TestResult {
    let Some(server) = S3Server::start() else {
        return Ok(());
    };
    server.create_bucket("plain")?;
    let env = TestEnv::new()?;
    let aws = server.env();
    let url = server.url("plain", "trove");
    let o = trove(&env, &["remote", "init", "--object-lock", "7", &url], &aws)?;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    for part in [
        "bucket plain",
        "does not have S3 Object Lock enabled",
        "--object-lock-enabled-for-bucket",
    ] {
        assert!(err.contains(part), "{part:?} in {err}");
    }
    // Nothing was written: an ordinary init still works there.
    let b = backend::open_with(&url, false, &server.settings())?;
    assert!(b.list("")?.is_empty());
    ok(&trove(&env, &["remote", "init", &url], &aws)?, "plain init")?;
    // A folder cannot lock its files.
    let folder = format!("file://{}", env.root().join("remote").display());
    let o = trove(
        &env,
        &["remote", "init", "--object-lock", "7", &folder],
        &[],
    )?;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot lock its files"),
        "{}",
        stderr(&o)
    );
    assert!(!env.root().join("remote").exists());
    Ok(())
}

#[test]
fn a_locked_remote_locks_what_it_stores_and_keeps_it_locked() -> TestResult {
    let Some(server) = S3Server::start() else {
        return Ok(());
    };
    let env = TestEnv::new()?;
    let (url, aws) = pushed_locked_remote(&server, &env)?;
    let remote = open(&server, &url)?;
    let lock = remote.object_lock().ok_or("no lock period in the config")?;
    assert_eq!((lock.days, lock.mode), (1, LockMode::Compliance));

    // (a) Every object the push wrote carries a COMPLIANCE retention of
    // about a day (written by the same PUT, so never unlocked).
    let needed = needed_objects(&remote)?;
    assert!(needed.iter().any(|p| p.starts_with("data/")), "{needed:?}");
    assert!(
        needed.iter().any(|p| p.starts_with("snapshots/")),
        "{needed:?}"
    );
    let now = Timestamp::now();
    let mut first = Vec::new();
    for p in &needed {
        let r = remote
            .retention(p)?
            .ok_or(format!("{p} has no retention"))?;
        assert_eq!(r.mode, LockMode::Compliance, "{p}");
        let until = remote.locked_until(p)?.ok_or(format!("{p} not locked"))?;
        assert_eq!(until, r.until);
        assert!(until > now + SignedDuration::from_hours(12), "{p}: {until}");
        assert!(
            until <= now + SignedDuration::from_hours(25),
            "{p}: {until}"
        );
        first.push(until);
    }

    // (d) Fresh locks: verify is clean. Then one needed object written
    // again without a lock (as a tool copying objects would): verify
    // names it and says what to run, as a warning, not damage.
    let o = trove(&env, &["verify", "--json", "--remote", &url], &aws)?;
    ok(&o, "verify")?;
    let j = json(&o)?;
    assert_eq!(
        j["object_lock"]["checked"].as_u64(),
        Some(needed.len() as u64),
        "{j}"
    );
    assert_eq!(
        j["object_lock"]["short"].as_array().map(Vec::len),
        Some(0),
        "{j}"
    );
    let index = needed
        .iter()
        .find(|p| p.starts_with("index/"))
        .ok_or("no index file")?
        .clone();
    let plain = backend::open_with(&url, false, &server.settings())?;
    plain.put(&index, &plain.get(&index)?)?;
    assert_eq!(
        remote.locked_until(&index)?,
        None,
        "the new version is not locked"
    );
    let o = trove(&env, &["verify", "--json", "--remote", &url], &aws)?;
    ok(&o, "verify with a short lock (a warning)")?;
    let j = json(&o)?;
    let short = j["object_lock"]["short"].as_array().ok_or("short")?;
    assert_eq!(short.len(), 1, "{j}");
    assert_eq!(short[0]["path"].as_str(), Some(index.as_str()));
    assert!(short[0]["until"].is_null(), "{j}");
    assert_eq!(j["problems"].as_array().map(Vec::len), Some(0), "{j}");
    let o = trove(&env, &["verify", "--remote", &url], &aws)?;
    ok(&o, "verify, human")?;
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(text.contains("warning: 1 of"), "{text}");
    assert!(text.contains("trove remote extend-locks"), "{text}");
    assert!(text.contains(&format!("{index} not locked")), "{text}");

    // (c) extend-locks --days 2: every needed object locked a day longer
    // (the unlocked one included), one HEAD each, one PUT per renewal.
    let o = trove(
        &env,
        &[
            "remote",
            "extend-locks",
            "--json",
            "--days",
            "2",
            "--remote",
            &url,
        ],
        &aws,
    )?;
    ok(&o, "extend-locks")?;
    let j = json(&o)?;
    let n = needed.len() as u64;
    assert_eq!(j["objects"].as_u64(), Some(n), "{j}");
    assert_eq!(j["extended"].as_u64(), Some(n), "{j}");
    assert_eq!(j["mode"].as_str(), Some("compliance"), "{j}");
    assert_eq!(j["requests"]["head"].as_u64(), Some(n), "{j}");
    assert_eq!(j["requests"]["put"].as_u64(), Some(n), "{j}");
    for (p, before) in needed.iter().zip(&first) {
        let until = remote.locked_until(p)?.ok_or(format!("{p} not locked"))?;
        assert!(
            until >= *before + SignedDuration::from_hours(23),
            "{p}: {before} -> {until}"
        );
    }
    // Run again with the remote's own period: nothing is shortened.
    let o = trove(
        &env,
        &["remote", "extend-locks", "--json", "--remote", &url],
        &aws,
    )?;
    ok(&o, "extend-locks with 1 day")?;
    let j = json(&o)?;
    assert_eq!(
        (j["extended"].as_u64(), j["already"].as_u64()),
        (Some(0), Some(n)),
        "{j}"
    );
    let o = trove(&env, &["verify", "--json", "--remote", &url], &aws)?;
    ok(&o, "verify after extend-locks")?;
    assert_eq!(
        json(&o)?["object_lock"]["short"].as_array().map(Vec::len),
        Some(0)
    );

    // (b) A plain DELETE of a locked pack: S3 answers success and hides
    // the object behind a delete marker, but keeps the locked version
    // (the bytes are not gone, and cost storage until the date). After
    // it, a HEAD finds no object: `locked_until` must be asked BEFORE a
    // delete, as `prune --remote` does.
    let pack = needed
        .iter()
        .find(|p| p.starts_with("data/"))
        .ok_or("no data pack")?
        .clone();
    assert!(remote.locked_until(&pack)?.is_some());
    let versions = server.versions("locked", &format!("trove/{pack}"))?;
    assert_eq!(versions.len(), 1, "{versions:?}");
    plain.delete(&pack)?;
    assert!(
        plain.list("data/")?.iter().all(|l| l.path != pack),
        "hidden"
    );
    assert!(matches!(
        plain.get(&pack),
        Err(backend::BackendError::NotFound { .. })
    ));
    let after = server.versions("locked", &format!("trove/{pack}"))?;
    assert_eq!(
        after.len(),
        2,
        "the locked version and a delete marker: {after:?}"
    );
    assert!(
        after.contains(&versions[0]),
        "the locked version is kept: {after:?}"
    );
    assert_eq!(
        remote.locked_until(&pack)?,
        None,
        "no current version to ask"
    );
    Ok(())
}
