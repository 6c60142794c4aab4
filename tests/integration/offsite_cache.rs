//! The local cache of a remote's index files, snapshot commits and tree
//! packs (docs/DESIGN.md, "The local cache of a remote"), on a `file://`
//! remote: a warm cache saves GETs and changes no output (`snapshots`,
//! `ls`, `push`, both phases of `prune`), a damaged entry is removed and
//! read again, what a prune deletes leaves the cache too, `verify
//! --remote` reads the remote even where the cache holds a good copy, and
//! a cache folder that cannot be used is a warning, never an error. The
//! prune's GETs are also compared on a real S3 server (SeaweedFS).

use crate::common::{run_bounded, trove_bin, Res, TestEnv, TestResult};
use crate::offsite::{json, ok, repo, stderr_json, trove, PASSWORD};
use crate::offsite_prune::{files, history, history_at, restore_snapshot, walkdir};
use crate::s3server::S3Server;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use trove::remote::backend;
use trove::remote::repo::{CONFIG, DATA, INDEX, KEYS, SNAPSHOTS, TREES};

/// The variable that points a command at the cache folder `p`.
fn cache_at(p: &Path) -> Vec<(String, String)> {
    vec![("TROVE_CACHE_DIR".into(), p.display().to_string())]
}

/// The `requests` and `cache` a remote command reported: in its JSON
/// object, or (a list) on the last JSON line of standard error.
fn reported(o: &Output) -> Res<serde_json::Value> {
    let v = json(o)?;
    if v.is_object() {
        return Ok(v);
    }
    stderr_json(o)
}

/// Each command of `runs` (its arguments up to `--remote`) with the
/// env's warm cache on `url`, and with `--no-cache` on `copy`, an equal
/// remote (`extra`: an S3 server's variables): the same outcome, fewer
/// GETs with the cache.
fn warm_beats_uncached(
    env: &TestEnv,
    (url, copy): (&str, &str),
    extra: &[(String, String)],
    runs: &[&[&str]],
) -> Res<()> {
    for args in runs {
        let run = |tail: &[&str]| -> Res<Output> {
            let o = trove(env, &[args, tail].concat(), extra)?;
            ok(&o, &format!("{args:?} {tail:?}"))?;
            Ok(o)
        };
        let warm = run(&[url])?;
        let none = run(&[copy, "--no-cache"])?;
        assert_eq!(outcome(&warm)?, outcome(&none)?, "{args:?}");
        assert!(
            gets(&warm)? < gets(&none)?,
            "{args:?}: warm {} GETs, without cache {}",
            gets(&warm)?,
            gets(&none)?
        );
        assert!(hits(&warm)? > 0, "{args:?}");
    }
    Ok(())
}

/// Both phases of a prune that forgets all but the last snapshot.
const PRUNE1: &[&str] = &["prune", "--json", "--keep-last", "1", "--remote"];
const PRUNE2: &[&str] = &[
    "prune",
    "--json",
    "--keep-last",
    "1",
    "--grace",
    "0",
    "--remote",
];

fn gets(o: &Output) -> Res<u64> {
    reported(o)?["requests"]["get"]
        .as_u64()
        .ok_or_else(|| "no requests.get".into())
}

fn hits(o: &Output) -> Res<u64> {
    Ok(reported(o)?["cache"]["hits"].as_u64().unwrap_or(0))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The remote's folder in the cache `root` (the one folder beside the tag).
fn cached_remote(root: &Path) -> Res<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    match (dirs.pop(), dirs.is_empty()) {
        (Some(d), true) => Ok(d),
        _ => Err(format!("not one remote folder in {}", root.display()).into()),
    }
}

/// The files below `index/`, `snapshots/` and `tree/` of a remote or of
/// its cache folder, by path relative to it.
fn mirrored(root: &Path) -> Res<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for dir in ["index", "snapshots", "tree"] {
        for p in walkdir(&root.join(dir))? {
            if p.is_file() {
                let rel = p.strip_prefix(root)?.to_string_lossy().into_owned();
                out.insert(rel);
            }
        }
    }
    Ok(out)
}

/// A copy of the remote folder `from` at `to` (same config id), so one
/// command runs with the cache and one without on equal remotes.
fn copy_dir(from: &Path, to: &Path) -> Res<()> {
    let st = Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    if !st.success() {
        return Err(format!("cp -a {} failed", from.display()).into());
    }
    Ok(())
}

/// Flip one byte in the middle of a file.
fn flip(p: &Path) -> Res<()> {
    let mut b = std::fs::read(p)?;
    let i = b.len() / 2;
    b[i] ^= 0x5a;
    std::fs::write(p, b)?;
    Ok(())
}

/// The JSON of a report without what differs between two equal remotes
/// read differently (the URL, requests, the cache).
fn outcome(o: &Output) -> Res<serde_json::Value> {
    let mut v = json(o)?;
    if let Some(m) = v.as_object_mut() {
        for k in ["remote", "requests", "cache"] {
            m.remove(k);
        }
    }
    Ok(v)
}

#[test]
fn a_warm_cache_saves_gets_and_changes_no_output() -> TestResult {
    let env = TestEnv::new()?;
    let (url, dir, _) = history(&env, 3)?;
    // Reading commands: cold (an empty cache), warm, and without cache.
    for args in [vec!["snapshots"], vec!["ls"]] {
        let fresh = env.root().join(format!("cache-{}", args[0]));
        let mut a = args.clone();
        a.extend(["--json", "--remote", &url]);
        let cold = trove(&env, &a, &cache_at(&fresh))?;
        ok(&cold, &format!("{args:?}, cold"))?;
        let warm = trove(&env, &a, &cache_at(&fresh))?;
        ok(&warm, &format!("{args:?}, warm"))?;
        a.push("--no-cache");
        let none = trove(&env, &a, &[])?;
        ok(&none, &format!("{args:?} --no-cache"))?;
        assert_eq!(cold.stdout, none.stdout, "{args:?}");
        assert_eq!(warm.stdout, none.stdout, "{args:?}");
        assert_eq!(
            gets(&cold)?,
            gets(&none)?,
            "{args:?}: a cold cache reads all"
        );
        assert!(
            gets(&warm)? < gets(&cold)?,
            "{args:?}: warm {} GETs, cold {}",
            gets(&warm)?,
            gets(&cold)?
        );
        assert!(hits(&warm)? > 0 && hits(&cold)? == 0, "{args:?}");
    }

    // A push: the pushes before wrote the cache through, so it reads no
    // index file; the same push without the cache, to a copy, reads them.
    env.write("notes/late.txt", b"one more snapshot")?;
    env.backup_ok(&["--config", "config.json"])?;
    let copy = env.root().join("offsite-copy");
    copy_dir(&dir, &copy)?;
    let copy_url = crate::offsite::file_url(&copy);
    let r = repo(&env);
    let push = ["push", "--json", "--repo", &r, "--remote"];
    // Then both phases of a prune, on the equal copies.
    warm_beats_uncached(&env, (&url, &copy_url), &[], &[&push, PRUNE1, PRUNE2])
}

#[test]
fn on_s3_a_warm_prune_makes_fewer_gets_and_the_same_changes() -> TestResult {
    let Some(server) = S3Server::start() else {
        return Ok(());
    };
    server.create_bucket("cached")?;
    let env = TestEnv::new()?;
    let aws = server.env();
    let (url, copy) = (server.url("cached", "a"), server.url("cached", "b"));
    history_at(&env, &url, &aws, 3)?;
    // A copy of every object, as `aws s3 cp --recursive` would make it.
    let from = backend::open_with(&url, false, &server.settings())?;
    let to = backend::open_with(&copy, true, &server.settings())?;
    to.put(CONFIG, &from.get(CONFIG)?)?;
    for dir in [KEYS, DATA, TREES, INDEX, SNAPSHOTS] {
        for l in from.list(dir)? {
            to.put(&l.path, &from.get(&l.path)?)?;
        }
    }
    let snapshots: &[&str] = &["snapshots", "--json", "--remote"];
    warm_beats_uncached(&env, (&url, &copy), &aws, &[snapshots, PRUNE1, PRUNE2])?;
    Ok(())
}

#[test]
fn a_damaged_cache_entry_is_removed_and_read_again() -> TestResult {
    let env = TestEnv::new()?;
    let (url, dir, states) = history(&env, 3)?;
    let cache = cached_remote(&env.cache_dir())?;
    // The first index file and commit, and every tree pack.
    let mut damaged = Vec::new();
    for sub in ["index", "snapshots"] {
        let first = walkdir(&cache.join(sub))?
            .into_iter()
            .next()
            .ok_or(format!("no cached {sub}"))?;
        damaged.push(first);
    }
    damaged.extend(walkdir(&cache.join("tree"))?);
    for p in &damaged {
        flip(p)?;
    }
    // One more, cut short.
    let commits: Vec<PathBuf> = walkdir(&cache.join("snapshots"))?;
    std::fs::write(&commits[commits.len() - 1], b"")?;
    damaged.push(commits[commits.len() - 1].clone());

    let want_snaps = trove(
        &env,
        &["snapshots", "--json", "--remote", &url, "--no-cache"],
        &[],
    )?;
    let o = trove(&env, &["snapshots", "--json", "--remote", &url], &[])?;
    ok(&o, "snapshots over a damaged cache")?;
    assert_eq!(o.stdout, want_snaps.stdout);
    assert!(
        stderr(&o).contains("is damaged or out of date"),
        "{}",
        stderr(&o)
    );
    let want_ls = trove(&env, &["ls", "--json", "--remote", &url, "--no-cache"], &[])?;
    let o = trove(&env, &["ls", "--json", "--remote", &url], &[])?;
    ok(&o, "ls over a damaged cache")?;
    assert_eq!(o.stdout, want_ls.stdout);
    // Every snapshot restores as it was (which reads every tree pack).
    let snaps = crate::offsite_prune::remote_snapshots(&env, &url, &[])?;
    for (i, (id, _)) in snaps.iter().enumerate() {
        let target = env.root().join(format!("restored{i}"));
        ok(&restore_snapshot(&env, &url, id, &target, &[])?, "restore")?;
        assert_eq!(files(&target)?, states[i], "snapshot {id}");
    }
    // Each damaged entry was fetched again: it is the remote's object.
    for p in &damaged {
        let rel = p.strip_prefix(&cache)?;
        assert_eq!(
            std::fs::read(p)?,
            std::fs::read(dir.join(rel))?,
            "{}",
            rel.display()
        );
    }
    // And the next command reads them from the cache without a word.
    let o = trove(&env, &["ls", "--json", "--remote", &url], &[])?;
    assert!(!stderr(&o).contains("damaged"), "{}", stderr(&o));
    Ok(())
}

#[test]
fn a_prune_leaves_nothing_deleted_in_the_cache_and_verify_reads_the_remote() -> TestResult {
    let env = TestEnv::new()?;
    let (url, dir, states) = history(&env, 4)?;
    let mut removed = BTreeSet::new();
    for extra in [vec![], vec!["--grace", "0"]] {
        let mut a = vec!["prune", "--json", "--remote", &url, "--keep-last", "1"];
        a.extend(extra);
        let o = trove(&env, &a, &[])?;
        ok(&o, "prune")?;
        for r in crate::offsite_prune::removals(&json(&o)?) {
            removed.insert(r.0);
        }
    }
    // The forgotten commits, the dropped packs and the replaced index files.
    assert!(removed.iter().any(|p| p.starts_with("snapshots/")));
    assert!(removed.iter().any(|p| p.starts_with("tree/")));
    let cache = cached_remote(&env.cache_dir())?;
    let (on_remote, cached) = (mirrored(&dir)?, mirrored(&cache)?);
    assert!(!cached.is_empty());
    assert!(
        cached.is_subset(&on_remote),
        "the cache holds what the remote no longer does: {:?}",
        cached.difference(&on_remote).collect::<Vec<_>>()
    );
    assert!(cached.is_disjoint(&removed));

    // The remote's tree packs damaged, the cache's copies good: reading
    // commands are served by the cache, verify checks the remote.
    let clean = trove(&env, &["verify", "--json", "--remote", &url], &[])?;
    ok(&clean, "verify before the damage")?;
    assert_eq!(json(&clean)?["problems"].as_array().map(Vec::len), Some(0));
    for rel in on_remote.iter().filter(|p| p.starts_with("tree/")) {
        flip(&dir.join(rel))?;
    }
    let snaps = crate::offsite_prune::remote_snapshots(&env, &url, &[])?;
    let target = env.root().join("from-cache");
    ok(
        &restore_snapshot(&env, &url, &snaps[0].0, &target, &[])?,
        "restore through the cache",
    )?;
    assert_eq!(files(&target)?, states[states.len() - 1]);
    let o = trove(&env, &["verify", "--json", "--remote", &url], &[])?;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let problems = json(&o)?["problems"].as_array().map_or(0, Vec::len);
    assert!(problems > 0, "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(
        json(&o)?["requests"]["get"].as_u64(),
        json(&clean)?["requests"]["get"].as_u64(),
        "verify reads the same objects whatever the cache holds"
    );
    Ok(())
}

/// Whether `setpriv` can drop to uid/gid 65534 (we are root and have it).
fn can_run_as_nobody() -> bool {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let have = Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !(root && have) {
        eprintln!("SKIP: needs root and setpriv to run trove as an unprivileged user");
    }
    root && have
}

/// `trove ARGS…` as uid/gid 65534, with the cache folder `cache`.
fn as_nobody(env: &TestEnv, args: &[&str], cache: &Path) -> Res<Output> {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(trove_bin())
        .args(args)
        .current_dir(env.root())
        .env("TROVE_PASSWORD", PASSWORD)
        .env("TROVE_CACHE_DIR", cache)
        .env_remove("TROVE_REMOTE")
        .env_remove("TROVE_REPO");
    run_bounded(c, Duration::from_secs(60))
}

#[test]
fn a_cache_folder_that_cannot_be_used_is_a_warning() -> TestResult {
    let env = TestEnv::new()?;
    let (url, _, _) = history(&env, 2)?;
    let args = ["ls", "--json", "--remote", &url];
    let mut plain = args.to_vec();
    plain.push("--no-cache");
    let want = trove(&env, &plain, &[])?;
    ok(&want, "ls --no-cache")?;
    let warned = |o: &Output, path: &Path, what: &str| -> Res<()> {
        ok(o, what)?;
        assert_eq!(o.stdout, want.stdout, "{what}");
        let err = stderr(o);
        assert!(
            err.contains("local cache cannot be used") && err.contains(&path.display().to_string()),
            "{what}: {err}"
        );
        assert_eq!(
            err.matches("local cache cannot be used").count(),
            1,
            "{what}: said once: {err}"
        );
        Ok(())
    };
    // A file where the folder should be.
    let file = env.root().join("not-a-folder");
    std::fs::write(&file, b"x")?;
    let o = trove(&env, &args, &cache_at(&file))?;
    warned(&o, &file, "a file as the cache folder")?;

    if !can_run_as_nobody() {
        return Ok(());
    }
    // Folders root made: one it filled (its entries unreadable to the
    // user), one empty (nothing can be created in it).
    std::fs::set_permissions(env.root(), std::fs::Permissions::from_mode(0o755))?;
    let empty = env.root().join("root-cache");
    std::fs::create_dir(&empty)?;
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o755))?;
    let filled = env.cache_dir();
    std::fs::set_permissions(&filled, std::fs::Permissions::from_mode(0o755))?;
    let o = as_nobody(&env, &args, &filled)?;
    warned(&o, &filled, "another user's cache")?;
    let o = as_nobody(&env, &args, &empty)?;
    warned(&o, &empty, "a cache folder the user cannot write")?;
    assert_eq!(std::fs::read_dir(&empty)?.count(), 0);
    Ok(())
}
