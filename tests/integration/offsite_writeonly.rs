//! Ransomware resistance: `trove push` with credentials that may read,
//! list and write but not delete: README.md's SeaweedFS identity, whose
//! attached IAM policy is the one README.md documents for AWS. The
//! remote is created and pushed to (a first push, then an incremental
//! one) with those credentials, with no DELETE and no object written
//! over; a delete with them is refused by the server and the object
//! stays; a restore with them works; and `remote key remove`, which does
//! delete, is refused with them and works with the owner's.

use crate::common::{listing, Res, TestEnv, TestResult};
use crate::offsite::{fill_source, json, ok, restore_remote, trove};
use crate::s3server::S3Server;
use std::collections::BTreeMap;
use std::process::Output;
use trove::remote::backend::{self, Backend, BackendError};

/// The bucket README.md's policy names.
const BUCKET: &str = "backups";
const PUSH_KEY: &str = "trove-push-only";
const PUSH_SECRET: &str = "trove-push-only-secret";

/// The two JSON blocks of README.md's "Write-only credentials" section:
/// the AWS IAM policy and the SeaweedFS identities file.
fn documented() -> Res<(serde_json::Value, serde_json::Value)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))?;
    let section = readme
        .split("#### Write-only credentials")
        .nth(1)
        .ok_or("README.md has no \"Write-only credentials\" section")?;
    let section = section.split("\n#").next().unwrap_or(section);
    let blocks: Vec<serde_json::Value> = section
        .split("```json\n")
        .skip(1)
        .map(|b| serde_json::from_str(b.split("```").next().unwrap_or(b)))
        .collect::<Result<_, _>>()?;
    match <[serde_json::Value; 2]>::try_from(blocks) {
        Ok([aws, seaweed]) => Ok((aws, seaweed)),
        Err(b) => Err(format!(
            "README.md: {} JSON blocks in \"Write-only credentials\", expected 2",
            b.len()
        )
        .into()),
    }
}

/// A server whose second identity is README.md's push identity (with
/// this test's keys) holding README.md's policy, which must be the AWS
/// policy it shows.
fn server() -> Res<Option<S3Server>> {
    let (aws, seaweed) = documented()?;
    let mut pusher = seaweed["identities"]
        .as_array()
        .and_then(|ids| ids.iter().find(|i| i["name"] == "trove-push"))
        .cloned()
        .ok_or("README.md: no trove-push identity")?;
    pusher["credentials"] = serde_json::json!([{"accessKey": PUSH_KEY, "secretKey": PUSH_SECRET}]);
    let mut policies = Vec::new();
    for p in seaweed["policies"]
        .as_array()
        .ok_or("README.md: no policies")?
    {
        let name = p["name"]
            .as_str()
            .ok_or("README.md: a policy without a name")?;
        let doc: serde_json::Value = serde_json::from_str(
            p["content"]
                .as_str()
                .ok_or("README.md: no policy content")?,
        )?;
        assert_eq!(
            doc, aws,
            "README.md: the SeaweedFS policy {name} is not the AWS one"
        );
        policies.push((name, doc));
    }
    assert_eq!(pusher["policyNames"], serde_json::json!(["trove-push"]));
    assert!(
        pusher.get("actions").is_none(),
        "SeaweedFS's Write action allows deletes"
    );
    Ok(S3Server::start_with_identities(&[pusher], &policies))
}

/// `push --json` with the write-only credentials: must succeed, push one
/// snapshot and make no DELETE request; its `requests`.
fn push_write_only(
    env: &TestEnv,
    url: &str,
    aws: &[(String, String)],
    what: &str,
) -> Res<serde_json::Value> {
    let repo = env.backup.to_str().ok_or("utf8")?;
    let o = trove(
        env,
        &["push", "--json", "--repo", repo, "--remote", url],
        aws,
    )?;
    ok(&o, what)?;
    let j = json(&o)?;
    assert_eq!(j["pushed"].as_array().map(Vec::len), Some(1), "{what}: {j}");
    let r = j["requests"].clone();
    assert_eq!(r["delete"].as_u64(), Some(0), "{what}: {r}");
    assert!(r["put"].as_u64() > Some(0), "{what}: {r}");
    Ok(r)
}

/// Every object of the remote with its bytes.
fn contents(b: &dyn Backend) -> Res<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for l in b.list("")? {
        let bytes = b.get(&l.path)?;
        out.insert(l.path, bytes);
    }
    Ok(out)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_write_only_identity_pushes_but_cannot_delete() -> TestResult {
    let Some(server) = server()? else {
        return Ok(());
    };
    server.create_bucket(BUCKET)?;
    let url = server.url(BUCKET, "offsite");
    let pusher = server.env_as(PUSH_KEY, PUSH_SECRET);
    let env = TestEnv::new()?;

    // The remote is created with the write-only credentials too: init
    // only lists, reads and writes.
    ok(
        &trove(&env, &["remote", "init", &url], &pusher)?,
        "remote init with write-only credentials",
    )?;
    fill_source(&env, 16)?;
    env.backup_ok(&[])?;
    push_write_only(&env, &url, &pusher, "first push")?;

    let owner = backend::open_with(&url, false, &server.settings())?;
    let before = contents(owner.as_ref())?;

    // An incremental push: a file changed, one added, one removed.
    env.write("docs/d1/f1.txt", "changed after the first push")?;
    env.write("new/added.txt", "added after the first push")?;
    std::fs::remove_file(env.src("same2"))?;
    env.backup_ok(&[])?;
    let r = push_write_only(&env, &url, &pusher, "incremental push")?;
    // It overwrote nothing: every object is as it was, and each PUT made
    // a new one (so none went over an existing name, even with the same
    // bytes).
    let after = contents(owner.as_ref())?;
    for (path, bytes) in &before {
        assert!(after.get(path) == Some(bytes), "{path} changed or went");
    }
    assert_eq!(
        r["put"].as_u64(),
        Some((after.len() - before.len()) as u64),
        "{r}"
    );

    // A delete with those credentials is refused by the server, for a
    // commit, a pack, an index file, a key file and the config alike…
    let writer = backend::open_with(&url, false, &server.settings_as(PUSH_KEY, PUSH_SECRET))?;
    let mut victims = vec!["config".to_string()];
    for dir in ["snapshots/", "data/", "tree/", "index/", "keys/"] {
        let first = writer
            .list(dir)?
            .into_iter()
            .next()
            .ok_or_else(|| format!("nothing under {dir} on {url}"))?;
        victims.push(first.path);
    }
    for path in &victims {
        match writer.delete(path) {
            Err(BackendError::Denied { .. }) => {}
            other => {
                return Err(format!(
                    "delete {path} with write-only credentials: {other:?}, expected access denied"
                )
                .into())
            }
        }
        // …and the object is still there, for its owner.
        assert!(owner.size(path)?.is_some(), "{path} was deleted");
    }
    assert_eq!(writer.stats().delete, victims.len() as u64);

    // Everything is still restorable, with the write-only credentials.
    let target = env.root().join("restored");
    restore_remote(&env, &url, &target, &pusher)?;
    assert_eq!(listing(&target, true)?, listing(&env.source, true)?);
    ok(
        &trove(&env, &["verify", "--remote", &url, "--read-data"], &pusher)?,
        "verify --read-data with write-only credentials",
    )?;
    Ok(())
}

#[test]
fn removing_a_key_needs_credentials_that_may_delete() -> TestResult {
    let Some(server) = server()? else {
        return Ok(());
    };
    server.create_bucket(BUCKET)?;
    let url = server.url(BUCKET, "");
    let pusher = server.env_as(PUSH_KEY, PUSH_SECRET);
    let env = TestEnv::new()?;
    ok(&trove(&env, &["remote", "init", &url], &pusher)?, "init")?;
    // Adding a password only writes a key file: the write-only
    // credentials may.
    let new_pw = env.root().join("new-password");
    std::fs::write(&new_pw, "a second password")?;
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
        &pusher,
    )?;
    ok(&added, "key add with write-only credentials")?;
    let id = json(&added)?["added"]
        .as_str()
        .ok_or("no added id")?
        .to_string();
    // Removing one deletes: refused at the server, exit 2 (fix the
    // credentials), the remote named.
    let refused = trove(
        &env,
        &["remote", "key", "remove", "--remote", &url, &id],
        &pusher,
    )?;
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    let err = stderr(&refused);
    assert!(
        err.contains(&url)
            && err.contains("cannot delete keys/")
            && err.contains("s3:DeleteObject"),
        "{err}"
    );
    // With the owner's credentials it goes.
    let removed = trove(
        &env,
        &["remote", "key", "remove", "--json", "--remote", &url, &id],
        &server.env(),
    )?;
    ok(&removed, "key remove with the owner's credentials")?;
    assert_eq!(json(&removed)?["removed"].as_str(), Some(id.as_str()));
    Ok(())
}
