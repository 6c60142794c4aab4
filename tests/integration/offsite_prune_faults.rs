//! `prune --remote` when things go wrong (issue 16): a prune killed with
//! SIGKILL leaves its lock, which the next prune names (holder and
//! `--unlock`, exit 3) until it is stale or removed with `--unlock`, while
//! pushes go on; a prune killed at every call that changes a `file://`
//! remote loses nothing (every snapshot still listed restores exactly,
//! `verify --read-data` is clean, a push and a finishing prune work); the
//! prune flow on a real S3 server (SeaweedFS) with its request counts; and
//! on an object-locked remote, what the lock holds survives a prune that
//! names it with the date.
//!
//! The kill sweep visits a sample of its points; `TROVE_PRUNE_SWEEP_STRIDE=1`
//! visits every one. Without strace (or ptrace), faketime or `weed`, the
//! tests that need them say so and skip.

use crate::common::{trove_bin, Lcg, Res, TestEnv, TestResult};
use crate::offsite::{file_url, json, ok, repo, trove, PASSWORD};
use crate::offsite_lock::pushed_locked_remote;
use crate::offsite_prune::{
    files, history, history_at, remote_snapshots, removals, restore_snapshot, verify_clean,
    walkdir, Tree,
};
use crate::s3server::S3Server;
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use trove::remote::backend;

/// A hang guard for any one command (never a timing assertion).
const LIMIT: Duration = Duration::from_secs(120);

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `trove ARGS…` in `dir` under strace: tracing `trace` into `trace_out`
/// (else nowhere), with the `-e inject=` spec `inject`; with `pidfile`,
/// trove's process id is written there first (a shell that execs it).
fn traced(
    dir: &Path,
    args: &[&str],
    trace: &str,
    inject: Option<&str>,
    trace_out: Option<&Path>,
    pidfile: Option<&Path>,
) -> Res<Output> {
    let mut c = Command::new("strace");
    c.current_dir(dir)
        .env("TROVE_PASSWORD", PASSWORD)
        .env("TROVE_CACHE_DIR", dir.join("cache"))
        .env_remove("TROVE_REMOTE")
        .env_remove("TROVE_REPO")
        .args(["-f", "-qq", "-e"])
        .arg(format!("trace={trace}"));
    match trace_out {
        Some(p) => c.arg("-o").arg(p),
        None => c.args(["-o", "/dev/null"]),
    };
    if let Some(i) = inject {
        c.args(["-e", &format!("inject={i}")]);
    }
    c.arg("--");
    if let Some(p) = pidfile {
        c.args(["sh", "-c", "echo $$ > \"$1\"; shift; exec \"$@\"", "sh"])
            .arg(p);
    }
    // The kill points are the remote's changes: the traced run keeps the
    // cache out of them (the commands after it read a cache it left stale).
    c.arg(trove_bin())
        .args(args)
        .arg("--no-cache")
        .stdin(Stdio::null());
    crate::common::run_bounded(c, LIMIT)
}

/// `trove ARGS…` with the clock `offset` ahead (`faketime -f +31m`), or
/// `None` when faketime is not installed.
fn later(offset: &str, env: &TestEnv, args: &[&str]) -> Res<Option<Output>> {
    if Command::new("faketime").arg("--version").output().is_err() {
        eprintln!("SKIP: faketime is not installed (apt-get install faketime)");
        return Ok(None);
    }
    let o = Command::new("faketime")
        .args(["-f", offset])
        .arg(trove_bin())
        .args(args)
        .current_dir(env.root())
        .env("TROVE_PASSWORD", PASSWORD)
        .env("TROVE_CACHE_DIR", env.cache_dir())
        .env_remove("TROVE_REMOTE")
        .env_remove("TROVE_REPO")
        .output()?;
    Ok(Some(o))
}

fn push(env: &TestEnv, url: &str, extra: &[(String, String)]) -> Res<()> {
    ok(
        &trove(env, &["push", "--repo", &repo(env), "--remote", url], extra)?,
        "push",
    )
}

fn host() -> Res<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .to_string())
}

#[test]
fn a_killed_prunes_lock_is_named_and_goes_when_stale_or_with_unlock() -> TestResult {
    if !crate::faults::strace_usable() {
        return Ok(());
    }
    let env = TestEnv::new()?;
    let (url, dir, _) = history(&env, 4)?;
    let locks = dir.join("locks");
    let pidfile = env.root().join("prune.pid");
    let prune = ["prune", "--remote", &url, "--keep-last", "2"];
    // Killed at its second removal: one forgotten commit gone, its lock left.
    let o = traced(
        env.root(),
        &prune,
        "unlink,unlinkat",
        Some("unlink,unlinkat:signal=KILL:when=2"),
        None,
        Some(&pidfile),
    )?;
    assert_eq!(o.status.signal(), Some(9), "{}", stderr(&o));
    let pid = std::fs::read_to_string(&pidfile)?.trim().to_string();
    assert_eq!(walkdir(&locks)?.len(), 1, "the killed prune's lock");
    assert_eq!(remote_snapshots(&env, &url, &[])?.len(), 3);

    // The next prune changes nothing and names the holder and the way out.
    let o = trove(&env, &prune, &[])?;
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    for part in [
        "is locked by another prune",
        &format!("@{} pid {pid}, renewed ", host()?),
        "30 minutes",
        &format!("trove prune --remote {url} --unlock"),
    ] {
        assert!(err.contains(part), "{part:?} in {err}");
    }
    assert_eq!(walkdir(&locks)?.len(), 1);
    assert_eq!(remote_snapshots(&env, &url, &[])?.len(), 3);

    // A push takes no prune lock: it works with the lock there. It does
    // not upload again the snapshot the killed prune forgot, though the
    // local repository still holds it: the prune recorded it first.
    env.write("late.txt", b"pushed while the lock stood")?;
    env.backup_ok(&["--config", "config.json"])?;
    push(&env, &url, &[])?;
    let latest = files(&env.source)?;
    assert_eq!(remote_snapshots(&env, &url, &[])?.len(), 4);

    // 31 minutes on, the lock is stale: removed with a warning, and the
    // prune runs.
    let mut args = vec!["prune", "--json"];
    args.extend(&prune[1..]);
    let Some(o) = later("+31m", &env, &args)? else {
        return Ok(());
    };
    ok(&o, "prune with a stale lock")?;
    assert!(
        stderr(&o).contains("removing the stale lock locks/"),
        "{}",
        stderr(&o)
    );
    let r = json(&o)?;
    assert_eq!(r["forgotten"].as_array().map(Vec::len), Some(2), "{r}");
    assert!(walkdir(&locks)?.is_empty(), "released");

    // Killed again (at its first removal); `--unlock` removes that fresh
    // lock at once.
    let o = traced(
        env.root(),
        &["prune", "--remote", &url, "--keep-last", "1"],
        "unlink,unlinkat",
        Some("unlink,unlinkat:signal=KILL:when=1"),
        None,
        None,
    )?;
    assert_eq!(o.status.signal(), Some(9), "{}", stderr(&o));
    assert_eq!(walkdir(&locks)?.len(), 1);
    let o = trove(&env, &prune, &[])?;
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let o = trove(
        &env,
        &[
            "prune",
            "--json",
            "--remote",
            &url,
            "--keep-last",
            "1",
            "--unlock",
        ],
        &[],
    )?;
    ok(&o, "prune --unlock")?;
    assert!(
        stderr(&o).contains("removing the lock locks/"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        json(&o)?["forgotten"].as_array().map(Vec::len),
        Some(1),
        "{}",
        stdout(&o)
    );
    assert!(walkdir(&locks)?.is_empty(), "released");
    verify_clean(&env, &url, &[])?;
    let snaps = remote_snapshots(&env, &url, &[])?;
    assert_eq!(snaps.len(), 1);
    let target = env.root().join("kept");
    ok(
        &restore_snapshot(&env, &url, &snaps[0].0, &target, &[])?,
        "restore",
    )?;
    assert_eq!(files(&target)?, latest);
    Ok(())
}

/// The system calls through which a prune changes a `file://` remote
/// (from `strace -f -c` of one: openat with O_CREAT, write, rename,
/// unlink, mkdir; the *at variants for other platforms).
const CHANGING: &[&str] = &[
    "openat",
    "write",
    "rename",
    "renameat",
    "renameat2",
    "unlink",
    "unlinkat",
    "mkdir",
    "mkdirat",
];

/// The kill points of an undisturbed run's trace: each call that changes
/// the remote, as (system call, its count in its thread) — strace counts
/// `when=N` per thread. In the order made.
fn change_points(trace: &str) -> Vec<(String, u32)> {
    let mut counts: BTreeMap<(String, String), u32> = BTreeMap::new();
    let mut out: Vec<(String, u32)> = Vec::new();
    for line in trace.lines() {
        if line.contains(" resumed>") || line.contains("+++") || line.contains("---") {
            continue;
        }
        // With one thread strace may leave the pid out.
        let (pid, rest) = match line.split_once(' ') {
            Some((p, r)) if p.chars().all(|c| c.is_ascii_digit()) => (p, r.trim_start()),
            _ => ("", line),
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !CHANGING.contains(&name.as_str()) {
            continue;
        }
        let n = counts.entry((pid.to_string(), name.clone())).or_default();
        *n += 1;
        let args = &rest[name.len()..];
        let changes = match name.as_str() {
            "openat" => args.contains("O_CREAT"),
            "write" => !(args.starts_with("(1,") || args.starts_with("(2,")),
            _ => true,
        };
        let point = (name, *n);
        if changes && !out.contains(&point) {
            out.push(point);
        }
    }
    out
}

/// Every `stride`th point, and the last. A kill before a change leaves
/// the state after the change before it, so stride 1 visits every state
/// the run passes through.
fn sample(points: Vec<(String, u32)>, stride: usize) -> Vec<(String, u32)> {
    let last = points.len().saturating_sub(1);
    points
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % stride.max(1) == 0 || *i == last)
        .map(|(_, p)| p)
        .collect()
}

/// A remote and repository to prune, copied afresh for every kill.
struct Start {
    env: TestEnv,
    /// What each snapshot on the remote recorded, by id.
    sources: BTreeMap<String, Tree>,
    /// The snapshots `--keep-last 2` keeps.
    kept: Vec<String>,
}

/// A copy of `from`'s folder (source, repository, remote, config).
fn copy_of(from: &TestEnv) -> Res<TestEnv> {
    let dir = tempfile::tempdir()?;
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.root().display()))
        .arg(dir.path())
        .status()?;
    if !st.success() {
        return Err("cp -a of the template failed".into());
    }
    Ok(TestEnv {
        source: dir.path().join("source"),
        backup: dir.path().join("backup"),
        dir,
    })
}

fn url_of(env: &TestEnv) -> String {
    file_url(&env.root().join("offsite"))
}

fn prune_args(url: &str) -> Vec<&str> {
    vec!["prune", "--remote", url, "--keep-last", "2", "--grace", "0"]
}

/// What a user was promised after a killed prune, on that copy (`env`).
fn check_after_kill(start: &Start, env: &TestEnv) -> Res<()> {
    let url = url_of(env);
    let listed = remote_snapshots(env, &url, &[])?;
    for id in &start.kept {
        if !listed.iter().any(|(l, _)| l == id) {
            return Err(format!("kept snapshot {id} is no longer listed").into());
        }
    }
    for (i, (id, _)) in listed.iter().enumerate() {
        let want = start
            .sources
            .get(id)
            .ok_or(format!("an unknown snapshot {id} is listed"))?;
        let target = env.root().join(format!("restored{i}"));
        ok(
            &restore_snapshot(env, &url, id, &target, &[])?,
            &format!("restore {id}"),
        )?;
        if &files(&target)? != want {
            return Err(format!("snapshot {id} does not restore as its source was").into());
        }
    }
    let verify = |when: &str| -> Res<serde_json::Value> {
        let o = trove(
            env,
            &["verify", "--json", "--remote", &url, "--read-data"],
            &[],
        )?;
        ok(&o, &format!("verify {when}"))?;
        let v = json(&o)?;
        if v["problems"].as_array().map(Vec::len) != Some(0) {
            return Err(format!("verify {when}: {}", v["problems"]).into());
        }
        Ok(v)
    };
    verify("after the kill")?;
    env.write("after.txt", b"backed up after the killed prune")?;
    env.backup_ok(&["--config", "config.json"])?;
    push(env, &url, &[])?;
    // The push adds the new snapshot and keeps every listed one; what the
    // killed prune forgot stays forgotten though the local repository
    // still holds it (the prune recorded it before deleting a commit).
    let pushed = remote_snapshots(env, &url, &[])?;
    for (id, _) in &listed {
        if !pushed.iter().any(|(l, _)| l == id) {
            return Err(format!("snapshot {id} is not listed after the push").into());
        }
    }
    if pushed.len() != listed.len() + 1 {
        return Err(format!(
            "the push after the kill took {} snapshots to {} (one new expected; a forgotten one pushed again?)",
            listed.len(),
            pushed.len()
        )
        .into());
    }
    let target = env.root().join("latest");
    ok(
        &trove(
            env,
            &[
                "restore",
                "--remote",
                &url,
                "--target",
                target.to_str().ok_or("utf8")?,
            ],
            &[],
        )?,
        "restore latest",
    )?;
    if files(&target)? != files(&env.source)? {
        return Err("the push after the kill does not restore as its source".into());
    }
    ok(
        &trove(
            env,
            &["prune", "--remote", &url, "--unlock", "--grace", "0"],
            &[],
        )?,
        "the prune finishing the work",
    )?;
    let v = verify("after the finishing prune")?;
    if v["snapshots"].as_u64() != Some(pushed.len() as u64) {
        return Err(format!(
            "the finishing prune (no policy) left {} of {} snapshots",
            v["snapshots"],
            pushed.len()
        )
        .into());
    }
    Ok(())
}

#[derive(Default)]
struct Tally {
    points: u64,
    killed: u64,
    completed: u64,
    failures: Vec<String>,
}

/// Kill the prune of `start` at each sampled point and check each result.
fn kill_sweep(what: &str, start: &Start, stride: usize, tally: &mut Tally) -> Res<()> {
    let probe = copy_of(&start.env)?;
    let trace = probe.root().join("strace.out");
    let url = url_of(&probe);
    let o = traced(
        probe.root(),
        &prune_args(&url),
        &CHANGING.join(","),
        None,
        Some(&trace),
        None,
    )?;
    ok(&o, &format!("{what}, undisturbed"))?;
    let all = change_points(&std::fs::read_to_string(&trace)?);
    let points = sample(all.clone(), stride);
    eprintln!(
        "{what}: {} change points, {} visited (stride {stride})",
        all.len(),
        points.len()
    );
    for (call, n) in points {
        let at = format!("{what} killed at {call} #{n}");
        let env = copy_of(&start.env)?;
        let url = url_of(&env);
        let o = traced(
            env.root(),
            &prune_args(&url),
            &call,
            Some(&format!("{call}:signal=KILL:when={n}")),
            None,
            None,
        )?;
        tally.points += 1;
        match (o.status.signal(), o.status.code()) {
            (Some(9), _) => tally.killed += 1,
            (None, Some(0)) => tally.completed += 1,
            _ => {
                tally
                    .failures
                    .push(format!("{at}: ended {:?}: {}", o.status, stderr(&o)));
                continue;
            }
        }
        if let Err(e) = check_after_kill(start, &env) {
            tally.failures.push(format!("{at}: {e}"));
        }
    }
    Ok(())
}

#[test]
fn a_prune_killed_at_any_change_then_a_push_and_a_restore_lose_nothing() -> TestResult {
    if !crate::faults::strace_usable() {
        return Ok(());
    }
    let stride: usize = std::env::var("TROVE_PRUNE_SWEEP_STRIDE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let t0 = Instant::now();
    let env = TestEnv::new()?;
    let (url, _, states) = history(&env, 4)?;
    let snaps = remote_snapshots(&env, &url, &[])?;
    assert_eq!(snaps.len(), states.len());
    let sources: BTreeMap<String, Tree> = snaps
        .iter()
        .map(|(id, _)| id.clone())
        .zip(states.iter().cloned())
        .collect();
    let kept: Vec<String> = snaps[2..].iter().map(|(id, _)| id.clone()).collect();
    // (1) A prune that forgets, drops and repacks.
    let first = Start {
        env,
        sources: sources.clone(),
        kept: kept.clone(),
    };
    // (2) The prune after it, which deletes the packs it left pending.
    let second = Start {
        env: copy_of(&first.env)?,
        sources,
        kept,
    };
    let second_url = url_of(&second.env);
    let mut a = prune_args(&second_url);
    a.push("--json");
    let o = trove(&second.env, &a, &[])?;
    ok(&o, "the first prune, undisturbed")?;
    let r = json(&o)?;
    assert!(r["packs_dropped"].as_u64() > Some(0), "{r}");
    assert!(r["packs_repacked"].as_u64() > Some(0), "{r}");
    let mut tally = Tally::default();
    kill_sweep("forget+repack prune", &first, stride, &mut tally)?;
    kill_sweep("pending-deleting prune", &second, stride, &mut tally)?;
    eprintln!(
        "prune kill sweep: {} points: {} killed, {} completed; {} broke a promise ({:.0?})",
        tally.points,
        tally.killed,
        tally.completed,
        tally.failures.len(),
        t0.elapsed()
    );
    assert!(tally.killed > 0, "no point killed the prune");
    assert!(
        tally.failures.is_empty(),
        "{} kill points broke a promise:\n{}",
        tally.failures.len(),
        tally.failures.join("\n")
    );
    Ok(())
}

/// Bytes of the packs (`data/`, `tree/`) a remote stores.
fn stored_pack_bytes(b: &dyn backend::Backend) -> Res<u64> {
    let mut total = 0;
    for dir in ["data/", "tree/"] {
        total += b.list(dir)?.iter().map(|l| l.size).sum::<u64>();
    }
    Ok(total)
}

#[test]
fn prune_remote_on_s3_forgets_frees_and_counts_its_requests() -> TestResult {
    let Some(server) = S3Server::start() else {
        return Ok(());
    };
    server.create_bucket("prune")?;
    let env = TestEnv::new()?;
    let aws = server.env();
    let url = server.url("prune", "trove");
    let states = history_at(&env, &url, &aws, 5)?;
    let snaps = remote_snapshots(&env, &url, &aws)?;
    assert_eq!(snaps.len(), 5);
    let plain = backend::open_with(&url, false, &server.settings())?;
    let before = stored_pack_bytes(plain.as_ref())?;

    let args = ["prune", "--json", "--remote", &url, "--keep-last", "2"];
    let mut dry_args = args.to_vec();
    dry_args.push("--dry-run");
    let o = trove(&env, &dry_args, &aws)?;
    ok(&o, "prune --dry-run on S3")?;
    let dry = json(&o)?;
    assert_eq!(dry["requests"]["put"].as_u64(), Some(0), "{dry}");
    assert_eq!(dry["requests"]["delete"].as_u64(), Some(0), "{dry}");
    assert_eq!(stored_pack_bytes(plain.as_ref())?, before);

    let o = trove(&env, &args, &aws)?;
    ok(&o, "prune on S3")?;
    let run = json(&o)?;
    assert_eq!(removals(&dry), removals(&run));
    assert!(!removals(&run).is_empty());
    assert_eq!(run["forgotten"].as_array().map(Vec::len), Some(3), "{run}");
    assert_eq!(dry["pending_bytes"], run["pending_bytes"]);
    let pending = run["pending_bytes"].as_u64().ok_or("pending_bytes")?;
    let written = run["bytes_written"].as_u64().ok_or("bytes_written")?;
    assert!(pending > 0, "{run}");
    // Three commits and the replaced index files deleted; the new packs,
    // index files and the pending file uploaded (and the lock: its
    // release comes after the report's count).
    let deletes = run["requests"]["delete"].as_u64().ok_or("delete")?;
    let index_deleted = run["index_files_deleted"].as_u64().ok_or("index")?;
    assert!(index_deleted > 0, "{run}");
    assert!(deletes >= 3 + index_deleted, "{run}");
    let puts = run["requests"]["put"].as_u64().ok_or("put")?;
    let index_written = run["index_files_written"].as_u64().ok_or("index")?;
    let packs_written = run["packs_written"].as_u64().ok_or("packs")?;
    assert!(puts > index_written + packs_written, "{run}");
    assert_eq!(stored_pack_bytes(plain.as_ref())?, before + written);
    verify_clean(&env, &url, &aws)?;

    // Past the grace period (0), the pending packs go.
    let o = trove(
        &env,
        &["prune", "--json", "--remote", &url, "--grace", "0"],
        &aws,
    )?;
    ok(&o, "prune --grace 0 on S3")?;
    let last = json(&o)?;
    assert_eq!(last["packs_deleted"], run["pending_packs"], "{last}");
    assert_eq!(last["bytes_freed"].as_u64(), Some(pending), "{last}");
    let deleted = last["packs_deleted"].as_u64().ok_or("packs_deleted")?;
    assert!(deleted > 0, "{last}");
    assert!(
        last["requests"]["delete"].as_u64() >= Some(deleted + 1),
        "the packs and the pending file: {last}"
    );
    assert_eq!(
        stored_pack_bytes(plain.as_ref())?,
        before + written - pending
    );
    verify_clean(&env, &url, &aws)?;
    let kept = remote_snapshots(&env, &url, &aws)?;
    assert_eq!(kept, snaps[3..].to_vec());
    for (i, (id, _)) in kept.iter().enumerate() {
        let target = env.root().join(format!("kept{i}"));
        ok(
            &restore_snapshot(&env, &url, id, &target, &aws)?,
            "restore kept",
        )?;
        assert_eq!(files(&target)?, states[3 + i], "snapshot {id}");
    }
    Ok(())
}

/// The `locked` list of a prune report: path → until.
fn locked(v: &serde_json::Value) -> BTreeMap<String, String> {
    v["locked"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|l| {
                    (
                        l["path"].as_str().unwrap_or_default().to_string(),
                        l["until"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every lock date is a time about a day ahead (the remote's period).
fn assert_dates(locked: &BTreeMap<String, String>) -> TestResult {
    let now = jiff::Timestamp::now();
    for (path, until) in locked {
        let t: jiff::Timestamp = until.parse()?;
        assert!(
            t > now + jiff::SignedDuration::from_hours(12),
            "{path}: {until}"
        );
        assert!(
            t <= now + jiff::SignedDuration::from_hours(25),
            "{path}: {until}"
        );
    }
    Ok(())
}

/// The text report names each locked object with its date.
fn assert_named(text: &str, locked: &BTreeMap<String, String>) {
    for (path, until) in locked {
        let line = format!("kept {path}: its object lock holds it until {until}");
        assert!(text.contains(&line), "{line:?} in {text}");
    }
}

#[test]
fn locked_objects_survive_prune_which_names_them_with_their_dates() -> TestResult {
    let Some(server) = S3Server::start() else {
        return Ok(());
    };
    let env = TestEnv::new()?;
    let (url, aws) = pushed_locked_remote(&server, &env)?;
    let mut states = vec![files(&env.source)?];
    let mut rng = Lcg(16);
    for i in 0..2 {
        env.write("big/large.bin", rng.bytes(400_000))?;
        env.write(&format!("docs/new{i}.txt"), rng.bytes(300))?;
        env.backup_ok(&[])?;
        push(&env, &url, &aws)?;
        states.push(files(&env.source)?);
    }
    let snaps = remote_snapshots(&env, &url, &aws)?;
    assert_eq!(snaps.len(), 3);
    let plain = backend::open_with(&url, false, &server.settings())?;
    let packs_before = stored_pack_bytes(plain.as_ref())?;
    let args = ["prune", "--json", "--remote", &url, "--keep-last", "1"];

    // (a) Everything is locked for a day: the two older snapshots stay,
    // named with their dates, and so do the index files; exit 0 (a lock
    // is the user's own choice, not a problem).
    let o = trove(&env, &args, &aws)?;
    ok(&o, "prune of a locked remote")?;
    let a = json(&o)?;
    assert_eq!(a["forgotten"].as_array().map(Vec::len), Some(0), "{a}");
    let kept_locked = a["kept"]
        .as_array()
        .ok_or("kept")?
        .iter()
        .filter(|k| k["reasons"] == serde_json::json!(["locked"]))
        .count();
    assert_eq!(kept_locked, 2, "{a}");
    let held = locked(&a);
    let commits: Vec<&String> = held
        .keys()
        .filter(|p| p.starts_with("snapshots/"))
        .collect();
    assert_eq!(commits.len(), 2, "{a}");
    assert!(held.keys().any(|p| p.starts_with("index/")), "{a}");
    assert_dates(&held)?;
    assert_eq!(a["pending_packs"].as_u64(), Some(0), "{a}");
    assert_eq!(stored_pack_bytes(plain.as_ref())?, packs_before);
    let o = trove(
        &env,
        &args[..1]
            .iter()
            .chain(&args[2..])
            .copied()
            .collect::<Vec<_>>(),
        &aws,
    )?;
    ok(&o, "prune of a locked remote, text")?;
    assert_named(&stdout(&o), &held);

    // (b) The older commits' and the index files' locks have run out (a
    // new, unlocked version of each, as after their date): the prune
    // forgets the two snapshots and takes their packs, still locked, out
    // of the index.
    let mut expired: Vec<String> = commits.iter().map(|p| (*p).clone()).collect();
    expired.extend(plain.list("index/")?.into_iter().map(|l| l.path));
    for p in &expired {
        plain.put(p, &plain.get(p)?)?;
    }
    let o = trove(&env, &args, &aws)?;
    ok(&o, "prune after the commits' locks ran out")?;
    let b = json(&o)?;
    assert_eq!(b["forgotten"].as_array().map(Vec::len), Some(2), "{b}");
    let pending: Vec<String> = removals(&b)
        .into_iter()
        .filter(|(_, action, _)| action == "drop" || action == "repack")
        .map(|(p, _, _)| p)
        .collect();
    assert!(!pending.is_empty(), "{b}");

    // (c) Past the grace period, each pending pack is still locked: not
    // deleted, named with its date, exit 0.
    let mut grace0 = args.to_vec();
    grace0.extend(["--grace", "0"]);
    let o = trove(&env, &grace0, &aws)?;
    ok(&o, "prune --grace 0 of locked packs")?;
    let c = json(&o)?;
    assert_eq!(c["packs_deleted"].as_u64(), Some(0), "{c}");
    assert_eq!(c["bytes_freed"].as_u64(), Some(0), "{c}");
    let held = locked(&c);
    for p in &pending {
        assert!(held.contains_key(p), "{p} named as locked: {c}");
    }
    assert_dates(&held)?;
    let stored: Vec<String> = ["data/", "tree/"]
        .iter()
        .map(|d| plain.list(d))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .map(|l| l.path)
        .collect();
    for p in &pending {
        assert!(stored.contains(p), "{p} was deleted");
    }
    let o = trove(
        &env,
        &grace0[..1]
            .iter()
            .chain(&grace0[2..])
            .copied()
            .collect::<Vec<_>>(),
        &aws,
    )?;
    ok(&o, "prune --grace 0 of locked packs, text")?;
    assert_named(&stdout(&o), &locked(&c));

    // What the policy keeps restores exactly; the remote verifies clean.
    verify_clean(&env, &url, &aws)?;
    let kept = remote_snapshots(&env, &url, &aws)?;
    assert_eq!(kept, snaps[2..].to_vec());
    let target = env.root().join("kept");
    ok(
        &restore_snapshot(&env, &url, &kept[0].0, &target, &aws)?,
        "restore kept",
    )?;
    assert_eq!(files(&target)?, states[2]);
    Ok(())
}
