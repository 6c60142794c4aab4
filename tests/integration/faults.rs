//! Fault machinery (issue 13): every writer — a first backup, an
//! incremental backup, `prune`, `materialize`, a `watch` run, the first
//! backup on a format 1 repository (which upgrades it to tree packs) and a
//! `prune` that deletes and rewrites tree packs — is killed
//! at its Nth call of each mutating system call in turn, or has that call
//! fail with ENOSPC, EIO or EDQUOT, through strace's syscall tampering
//! (`-e inject=SYSCALL:signal=KILL:when=N`). After each fault the
//! repository must be whole: the next plain run of the same writer exits 0,
//! `verify` exits 0, the latest snapshot restores to exactly the source,
//! every older snapshot still restores to what it recorded, and `tmp/` is
//! empty. An injected error must also end in a non-zero exit whose message
//! names a path, never a panic.
//!
//! strace counts injections per system call and per thread, so a kill point
//! is "the first thread to make its Nth call of SYSCALL". A trace of the
//! undisturbed run gives, per system call, the largest N any thread reaches:
//! the points swept are every N up to it (or a stride through them).
//!
//! `cargo test` runs a sampled subset. The full sweep is
//! `benches/faultsweep.sh` (the `#[ignore]`d tests below, sized by
//! TROVE_SWEEP_KILL_STRIDE / TROVE_SWEEP_ERROR_STRIDE), which prints the
//! figures the README quotes. Without strace, or where ptrace is not
//! permitted, the tests say so and skip.

use crate::common::{listing, trove_bin, Lcg, Node, Res, TestResult};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The system calls through which trove changes anything on disk (and
/// `openat`, which creates files).
const MUTATING: &[&str] = &[
    "openat",
    "write",
    "pwrite64",
    "fsync",
    "fdatasync",
    "syncfs",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "unlink",
    "unlinkat",
    "mkdir",
    "mkdirat",
    "rmdir",
    "ftruncate",
    "fchmod",
    "fchmodat",
    "fchown",
    "utimensat",
    "copy_file_range",
];

/// The calls errors are injected into, and the errors.
const ERROR_SYSCALLS: &[&str] = &[
    "write",
    "fsync",
    "rename,renameat,renameat2",
    "link,linkat",
    "openat",
];
const ERRNOS: &[&str] = &["ENOSPC", "EIO", "EDQUOT"];

/// A hang guard for any one command (never a timing assertion).
const LIMIT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Writer {
    FirstBackup,
    Backup,
    Prune,
    Materialize,
    Watch,
    /// A backup on the format 1 fixture: upgrades it to tree packs.
    Upgrade,
    /// A prune that forgets all but the latest snapshot: deletes the
    /// packs only forgotten snapshots used and rewrites mostly dead ones.
    Repack,
}

const WRITERS: &[Writer] = &[
    Writer::FirstBackup,
    Writer::Backup,
    Writer::Prune,
    Writer::Materialize,
    Writer::Watch,
    Writer::Upgrade,
    Writer::Repack,
];

/// The system calls that make a tree pack durable, put it in place or
/// remove one (and the loose trees an upgrade removes).
const PACK_STEPS: &[&str] = &[
    "fsync",
    "fdatasync",
    "syncfs",
    "rename",
    "renameat",
    "renameat2",
    "unlink",
    "unlinkat",
    "rmdir",
];

/// Whether strace can tamper with system calls here; prints why not.
pub(crate) fn strace_usable() -> bool {
    let ok = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "inject=getpid:error=EIO",
            "true",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "SKIP: strace with syscall injection is not usable here (install strace; ptrace must be permitted)"
        );
    }
    ok
}

type Tree = BTreeMap<Vec<u8>, Node>;

/// One writer's starting state, copied afresh for every fault, and what
/// the repository must hold once the writer has run to completion.
struct Scenario {
    writer: Writer,
    template: tempfile::TempDir,
    /// The source as the writer's run sees it.
    expected_latest: Tree,
    /// Snapshots that existed before the run: (id, tree), which must still
    /// restore afterwards (prune keeps them: keep_last covers them all).
    earlier: Vec<(String, Tree)>,
    /// Environment of the faulted runs.
    env: Vec<(&'static str, String)>,
}

fn write(root: &Path, rel: &str, data: &[u8]) -> Res<()> {
    let p = root.join(rel);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(p, data)?;
    Ok(())
}

/// A small tree with folders, duplicates, an empty file and one file large
/// enough to take the streamed path.
fn fill_source(src: &Path, generation: u64) -> Res<()> {
    let mut rng = Lcg(0x5eed + generation);
    for d in 0..3 {
        for i in 0..4 {
            let body = format!("folder {d} file {i} generation {}\n", generation + i % 2);
            write(
                src,
                &format!("d{d}/sub/f{i}.txt"),
                body.repeat(1 + i as usize).as_bytes(),
            )?;
        }
    }
    write(src, "dup_a.txt", b"same bytes\n")?;
    write(src, "dup_b.txt", b"same bytes\n")?;
    write(src, "empty", b"")?;
    write(src, "big.bin", &rng.bytes(300 * 1024))?;
    Ok(())
}

/// Generation 2: changes, a deletion, an addition, a rename.
fn mutate_source(src: &Path, generation: u64) -> Res<()> {
    fill_source(src, generation)?;
    let _ = std::fs::remove_file(src.join("dup_b.txt"));
    write(src, &format!("new/added{generation}.txt"), b"added\n")?;
    let from = src.join("d2/sub/f3.txt");
    if from.exists() {
        std::fs::rename(from, src.join(format!("d2/renamed{generation}.txt")))?;
    }
    Ok(())
}

fn trove(dir: &Path) -> Command {
    let mut c = Command::new(trove_bin());
    c.current_dir(dir).env_remove("TROVE_REPO");
    c
}

fn run(mut c: Command) -> Res<Output> {
    crate::common::run_bounded(
        {
            c.stdin(Stdio::null());
            c
        },
        LIMIT,
    )
}

fn must(o: Output, what: &str) -> Res<Output> {
    if !o.status.success() {
        return Err(format!(
            "{what} failed ({:?})\n--- stdout\n{}\n--- stderr\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
        .into());
    }
    Ok(o)
}

fn config(dir: &Path) -> PathBuf {
    dir.join("config.json")
}

/// The writer's own command line, run from the scenario's copy `dir`.
fn writer_args(w: Writer) -> Vec<&'static str> {
    match w {
        Writer::FirstBackup | Writer::Backup | Writer::Upgrade => {
            vec!["--config", "config.json", "backup"]
        }
        Writer::Prune | Writer::Repack => vec!["--config", "config.json", "prune"],
        Writer::Materialize => vec!["--config", "config.json", "materialize"],
        Writer::Watch => vec![
            "--config",
            "config.json",
            "watch",
            "--json",
            "--poll",
            "3600",
        ],
    }
}

fn snapshot_ids(dir: &Path) -> Res<Vec<String>> {
    let o = must(
        run({
            let mut c = trove(dir);
            c.args(["--repo", "backup", "--json", "snapshots"]);
            c
        })?,
        "snapshots --json",
    )?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let arr = v
        .as_array()
        .or_else(|| v.get("snapshots").and_then(|s| s.as_array()))
        .ok_or("snapshots --json: no list")?;
    Ok(arr
        .iter()
        .filter_map(|s| s.get("id").and_then(|i| i.as_str()).map(str::to_owned))
        .collect())
}

fn restored(dir: &Path, snapshot: &str) -> Res<Tree> {
    let target = tempfile::tempdir()?;
    let t = target.path().join("r");
    must(
        run({
            let mut c = trove(dir);
            c.args([
                "--repo",
                "backup",
                "restore",
                "--snapshot",
                snapshot,
                "--target",
            ])
            .arg(&t);
            c
        })?,
        &format!("restore --snapshot {snapshot}"),
    )?;
    listing(&t, false)
}

/// The writer's starting state in a fresh template directory.
fn scenario(w: Writer) -> Res<Scenario> {
    let template = tempfile::tempdir()?;
    let dir = template.path();
    let src = dir.join("source");
    if w == Writer::Upgrade {
        crate::packs::unpack_v1_fixture(dir)?;
        let mut earlier = Vec::new();
        for id in snapshot_ids(dir)? {
            let t = restored(dir, &id)?;
            earlier.push((id, t));
        }
        return Ok(Scenario {
            writer: w,
            expected_latest: listing(&src, false)?,
            template,
            earlier,
            env: Vec::new(),
        });
    }
    std::fs::create_dir(&src)?;
    let retention = if matches!(w, Writer::Prune | Writer::Repack) {
        // Per-file retention has work to do; every snapshot is kept whole.
        r#", "retention": { "max_versions_per_file": 1, "keep_last": 10 }"#
    } else {
        ""
    };
    std::fs::write(
        config(dir),
        format!(r#"{{ "sources": ["./source"], "backup_root": "./backup"{retention} }}"#),
    )?;
    fill_source(&src, 1)?;
    let backup = |dir: &Path| -> Res<()> {
        must(
            run({
                let mut c = trove(dir);
                c.args(["--config", "config.json", "backup"]);
                c
            })?,
            "setup backup",
        )?;
        Ok(())
    };
    match w {
        Writer::FirstBackup | Writer::Upgrade => {}
        Writer::Backup | Writer::Watch => {
            backup(dir)?;
            mutate_source(&src, 2)?;
        }
        Writer::Repack => {
            backup(dir)?;
            for g in 2..5 {
                mutate_source(&src, g)?;
                backup(dir)?;
            }
            std::fs::write(
                config(dir),
                r#"{ "sources": ["./source"], "backup_root": "./backup",
                     "retention": { "max_versions_per_file": 1, "keep_last": 1 } }"#,
            )?;
        }
        Writer::Prune => {
            backup(dir)?;
            for g in 2..4 {
                mutate_source(&src, g)?;
                backup(dir)?;
            }
            // Prune's retention needs a setting that changed since.
            std::fs::write(
                config(dir),
                r#"{ "sources": ["./source"], "backup_root": "./backup",
                     "retention": { "max_versions_per_file": 1, "keep_last": 10,
                                    "deleted_max_age_days": 0 } }"#,
            )?;
        }
        Writer::Materialize => {
            backup(dir)?;
            mutate_source(&src, 2)?;
            backup(dir)?;
            // A browsable tree with gaps for materialize to fill.
            std::fs::remove_dir_all(dir.join("backup/d1"))?;
            std::fs::remove_file(dir.join("backup/dup_a.txt"))?;
            let _ = std::fs::remove_dir_all(dir.join("backup/versions"));
        }
    }
    let mut earlier = Vec::new();
    if w != Writer::FirstBackup {
        for id in snapshot_ids(dir)? {
            let t = restored(dir, &id)?;
            earlier.push((id, t));
        }
    }
    if w == Writer::Repack {
        // Only the latest survives keep_last 1.
        earlier.drain(..earlier.len().saturating_sub(1));
    }
    Ok(Scenario {
        writer: w,
        expected_latest: listing(&src, false)?,
        template,
        earlier,
        env: Vec::new(),
    })
}

/// A fresh copy of the scenario's template (hardlinks kept, so the
/// browsable tree still shares inodes with the store).
fn fresh_copy(s: &Scenario) -> Res<tempfile::TempDir> {
    let d = tempfile::tempdir()?;
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", s.template.path().display()))
        .arg(d.path())
        .status()?;
    if !st.success() {
        return Err("cp -a of the scenario template failed".into());
    }
    Ok(d)
}

/// What became of the faulted run.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Killed,
    Failed,
    /// The fault point lay beyond this run's calls, or the error was
    /// absorbed (a retry, a fallback): the run finished with exit 0.
    Completed,
    /// Exit 101: a promise broken, counted as a failure of the point.
    Panicked,
}

/// Run the writer in `dir` under strace with `inject` (an `-e inject=`
/// value; `None` traces only, writing the trace to `trace_out`).
fn run_faulted(
    w: Writer,
    dir: &Path,
    trace: &str,
    inject: Option<&str>,
    trace_out: Option<&Path>,
    env: &[(&'static str, String)],
) -> Res<(Outcome, Output)> {
    let mut c = Command::new("strace");
    c.current_dir(dir)
        .env_remove("TROVE_REPO")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(["-f", "-qq", "-e"])
        .arg(format!("trace={trace}"));
    // With an injection, the trace says which call took the fault.
    let injected_trace = dir.join("strace.out");
    match (trace_out, inject) {
        (Some(p), _) => c.arg("-o").arg(p),
        (None, Some(_)) => c.arg("-o").arg(&injected_trace),
        (None, None) => c.args(["-o", "/dev/null"]),
    };
    if let Some(i) = inject {
        c.args(["-e", &format!("inject={i}")]);
    }
    c.arg("--").arg(trove_bin()).args(writer_args(w));
    c.stdin(Stdio::null());
    let out = if w == Writer::Watch {
        run_watch_once(c)?
    } else {
        run(c)?
    };
    let outcome = match (out.status.signal(), out.status.code()) {
        (Some(9), _) => Outcome::Killed,
        (Some(sig), _) => return Err(format!("writer died of signal {sig}").into()),
        (None, Some(0)) => Outcome::Completed,
        (None, Some(101)) => Outcome::Panicked,
        (None, _) => Outcome::Failed,
    };
    Ok((outcome, out))
}

/// A watch session until its first run is over: it dies (a kill point),
/// exits (an injected error ends the session), or reports the run on
/// stdout, after which it is stopped with SIGTERM.
fn run_watch_once(mut c: Command) -> Res<Output> {
    // Its own process group, so SIGTERM reaches trove itself: strace,
    // given SIGTERM, detaches and leaves its tracee running.
    let mut child = c
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = std::io::Read::read_to_end(&mut BufReader::new(stderr), &mut s);
        s
    });
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let out_reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            lines.extend_from_slice(line.as_bytes());
            lines.push(b'\n');
            let _ = tx.send(());
        }
        lines
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if rx.try_recv().is_ok() {
            // The first run is over: stop the session as a user would.
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{pid}")])
                .status();
            break child.wait()?;
        }
        if start.elapsed() > LIMIT {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            child.wait()?;
            return Err("watch did not finish its first run (hang?)".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = out_reader.join().map_err(|_| "stdout reader")?;
    let stderr = err_reader.join().map_err(|_| "stderr reader")?;
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Per system call, the largest invocation count any thread reaches in an
/// undisturbed run of the writer.
fn call_counts(s: &Scenario) -> Res<BTreeMap<String, u32>> {
    let d = fresh_copy(s)?;
    let trace = d.path().join("strace.out");
    let (outcome, out) = run_faulted(
        s.writer,
        d.path(),
        &MUTATING.join(","),
        None,
        Some(&trace),
        &s.env,
    )?;
    if outcome != Outcome::Completed {
        return Err(format!(
            "undisturbed {:?} run failed: {}",
            s.writer,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let mut per_thread: BTreeMap<(String, String), u32> = BTreeMap::new();
    for line in std::fs::read_to_string(&trace)?.lines() {
        let mut it = line.splitn(2, ' ');
        let (Some(pid), Some(rest)) = (it.next(), it.next()) else {
            continue;
        };
        let rest = rest.trim_start();
        let rest = rest.strip_prefix("<... ").unwrap_or(rest);
        // A resumed line ("<... write resumed>") is the same call again.
        if line.contains(" resumed>") {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if MUTATING.contains(&name.as_str()) {
            *per_thread.entry((pid.to_owned(), name)).or_default() += 1;
        }
    }
    let mut max: BTreeMap<String, u32> = BTreeMap::new();
    for ((_, name), n) in per_thread {
        let e = max.entry(name).or_default();
        *e = (*e).max(n);
    }
    Ok(max)
}

/// The command that completes the writer's work after a fault.
fn recover(s: &Scenario, dir: &Path) -> Res<()> {
    let args = match s.writer {
        Writer::Watch => vec!["--config", "config.json", "backup"],
        w => writer_args(w),
    };
    must(
        run({
            let mut c = trove(dir);
            c.args(args);
            c
        })?,
        &format!("the run after the fault ({:?})", s.writer),
    )?;
    Ok(())
}

/// Everything a user was promised after a fault and the next plain run.
fn check_whole(s: &Scenario, dir: &Path) -> Res<()> {
    recover(s, dir)?;
    must(
        run({
            let mut c = trove(dir);
            c.args(["--repo", "backup", "verify"]);
            c
        })?,
        "verify after the fault",
    )?;
    let latest = restored(dir, "latest")?;
    if latest != s.expected_latest {
        return Err(format!(
            "the latest snapshot does not restore to the source: {:?} vs {:?}",
            latest
                .keys()
                .map(|k| crate::common::show(k))
                .collect::<Vec<_>>(),
            s.expected_latest
                .keys()
                .map(|k| crate::common::show(k))
                .collect::<Vec<_>>()
        )
        .into());
    }
    for (id, tree) in &s.earlier {
        if &restored(dir, id)? != tree {
            return Err(format!("snapshot {id} no longer restores to what it recorded").into());
        }
    }
    let tmp = dir.join("backup/.trove/tmp");
    if let Ok(rd) = std::fs::read_dir(&tmp) {
        let left: Vec<_> = rd.filter_map(Result::ok).map(|e| e.file_name()).collect();
        if !left.is_empty() {
            return Err(format!(
                "{} is not empty after the next run: {left:?}",
                tmp.display()
            )
            .into());
        }
    }
    Ok(())
}

#[derive(Default)]
struct Tally {
    points: u64,
    killed: u64,
    failed: u64,
    completed: u64,
    failures: Vec<String>,
}

impl Tally {
    /// Fail the test when any fault point broke a promise.
    fn assert_whole(&self) {
        assert!(
            self.failures.is_empty(),
            "{} kill points broke a promise:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }

    fn report(&self, what: &str) {
        eprintln!(
            "{what}: {} fault points: {} killed, {} failed with a message, {} completed; {} broke a promise",
            self.points,
            self.killed,
            self.failed,
            self.completed,
            self.failures.len()
        );
        for f in &self.failures {
            eprintln!("  - {f}");
        }
    }
}

/// The invocation numbers to fault: 1..=max with `stride`, always
/// including the last.
fn points(max: u32, stride: u32) -> Vec<u32> {
    let mut v: Vec<u32> = (1..=max).step_by(stride.max(1) as usize).collect();
    if v.last() != Some(&max) && max > 0 {
        v.push(max);
    }
    v
}

/// Which fault points of a writer to visit.
#[derive(Clone, Copy)]
enum Pick {
    /// Every `n`th invocation of each system call, and the last.
    Stride(u32),
    /// About `n` points in all, spread evenly over every system call's
    /// invocations (the sampled subset `cargo test` runs).
    Spread(usize),
}

/// The (system call, invocation) pairs to fault, in a fixed order.
fn select(all: Vec<(String, u32)>, pick: Pick) -> Vec<(String, u32)> {
    match pick {
        Pick::Stride(stride) => {
            let mut by_call: BTreeMap<String, u32> = BTreeMap::new();
            for (c, n) in all {
                let e = by_call.entry(c).or_default();
                *e = (*e).max(n);
            }
            by_call
                .into_iter()
                .flat_map(|(c, max)| points(max, stride).into_iter().map(move |n| (c.clone(), n)))
                .collect()
        }
        Pick::Spread(k) => {
            if all.len() <= k {
                return all;
            }
            // Evenly spaced through the list, which runs call by call.
            (0..k)
                .map(|i| all[i * (all.len() - 1) / (k - 1).max(1)].clone())
                .collect()
        }
    }
}

/// Every (call, invocation) of the undisturbed run, call by call.
fn every_point(counts: &BTreeMap<String, u32>, calls: &[&str]) -> Vec<(String, u32)> {
    calls
        .iter()
        .flat_map(|group| {
            let max = group
                .split(',')
                .filter_map(|c| counts.get(c))
                .copied()
                .max()
                .unwrap_or(0);
            (1..=max).map(move |n| ((*group).to_owned(), n))
        })
        .collect()
}

fn kill_sweep(s: &Scenario, pick: Pick, tally: &mut Tally) -> Res<()> {
    kill_sweep_of(s, pick, None, tally)
}

/// [`kill_sweep`] at the calls `only` names (all mutating calls: `None`).
fn kill_sweep_of(s: &Scenario, pick: Pick, only: Option<&[&str]>, tally: &mut Tally) -> Res<()> {
    let counts = call_counts(s)?;
    let calls: Vec<&str> = counts
        .keys()
        .map(String::as_str)
        .filter(|c| only.is_none_or(|o| o.contains(c)))
        .collect();
    for (call, n) in select(every_point(&counts, &calls), pick) {
        kill_point(s, &call, n, tally)?;
    }
    Ok(())
}

/// Kill the writer at its `n`th `call` (the first thread to make it) in a
/// fresh copy of the scenario, then check the repository is whole.
fn kill_point(s: &Scenario, call: &str, n: u32, tally: &mut Tally) -> Res<()> {
    let d = fresh_copy(s)?;
    let inject = format!("{call}:signal=KILL:when={n}");
    let (outcome, out) = run_faulted(s.writer, d.path(), call, Some(&inject), None, &s.env)?;
    tally.points += 1;
    match outcome {
        Outcome::Killed => tally.killed += 1,
        Outcome::Failed => tally.failed += 1,
        Outcome::Completed => tally.completed += 1,
        Outcome::Panicked => tally.failures.push(format!(
            "{:?} killed at {call} #{n}: panicked: {}",
            s.writer,
            String::from_utf8_lossy(&out.stderr)
        )),
    }
    if let Err(e) = check_whole(s, d.path()) {
        tally
            .failures
            .push(format!("{:?} killed at {call} #{n}: {e}", s.writer));
    }
    Ok(())
}

fn error_sweep(s: &Scenario, pick: Pick, tally: &mut Tally) -> Res<()> {
    let counts = call_counts(s)?;
    let all = every_point(&counts, ERROR_SYSCALLS);
    for (i, (calls, n)) in select(all, pick).into_iter().enumerate() {
        // The errors take turns, so every errno meets every kind of call.
        let errno = ERRNOS[i % ERRNOS.len()];
        let calls = calls.as_str();
        let d = fresh_copy(s)?;
        let inject = format!("{calls}:error={errno}:when={n}");
        let (outcome, out) = run_faulted(s.writer, d.path(), calls, Some(&inject), None, &s.env)?;
        tally.points += 1;
        // materialize reports failed entries on stdout, with the rest of
        // its report: the message may be in either.
        let stderr = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let at = format!("{:?} with {calls} #{n} failing {errno}", s.writer);
        // A fault in writing to the terminal leaves nowhere to say
        // it: only "no panic, a whole repository" applies then.
        let on_console = injected_on_console(d.path());
        match outcome {
            Outcome::Killed => {
                tally.failures.push(format!("{at}: killed"));
                continue;
            }
            Outcome::Panicked => {
                tally.failures.push(format!("{at}: panicked: {stderr}"));
            }
            Outcome::Completed => tally.completed += 1,
            Outcome::Failed => {
                tally.failed += 1;
                // The message names what failed: a path of the
                // scenario, or the repository.
                if !on_console && !stderr.contains('/') && !stderr.contains("config.json") {
                    tally
                        .failures
                        .push(format!("{at}: the message names no path: {stderr}"));
                }
            }
        }
        if let Err(e) = check_whole(s, d.path()) {
            tally.failures.push(format!("{at}: {e}"));
        }
    }
    Ok(())
}

/// Whether the injected fault hit a write to stdout or stderr (strace
/// marks the call it tampered with "(INJECTED)").
fn injected_on_console(dir: &Path) -> bool {
    let Ok(trace) = std::fs::read_to_string(dir.join("strace.out")) else {
        return false;
    };
    // With one thread left strace drops the pid prefix.
    trace.lines().filter(|l| l.contains("INJECTED")).any(|l| {
        let call = l
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start();
        call.starts_with("write(1,") || call.starts_with("write(2,")
    })
}

fn stride_from_env(var: &str, default: u32) -> u32 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sweep(kill: Option<Pick>, errors: Option<Pick>) -> TestResult {
    if !strace_usable() {
        return Ok(());
    }
    let mut kills = Tally::default();
    let mut errs = Tally::default();
    for &w in WRITERS {
        let s = scenario(w)?;
        let t0 = Instant::now();
        if let Some(p) = kill {
            kill_sweep(&s, p, &mut kills)?;
        }
        if let Some(p) = errors {
            error_sweep(&s, p, &mut errs)?;
        }
        eprintln!(
            "{w:?}: done ({} kill points, {} injected errors so far, {:.0?})",
            kills.points,
            errs.points,
            t0.elapsed()
        );
    }
    if kill.is_some() {
        kills.report("kill sweep");
    }
    if errors.is_some() {
        errs.report("error injection");
    }
    let failures: Vec<_> = kills.failures.iter().chain(&errs.failures).collect();
    assert!(
        failures.is_empty(),
        "{} fault points broke a promise:\n{}",
        failures.len(),
        failures
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

/// A sample of kill points of every writer, spread over all its mutating
/// system calls.
#[test]
fn killed_at_sampled_system_calls_every_writer_leaves_a_whole_repository() -> TestResult {
    sweep(Some(Pick::Spread(12)), None)
}

/// Every step that makes a tree pack durable, puts it in place or
/// removes one — of the upgrade of a format 1 repository and of a prune
/// that deletes and rewrites packs — killed in turn: the repository is
/// whole after each, and the next run finishes the work.
#[test]
fn killed_at_every_step_of_writing_or_removing_tree_packs_leaves_a_whole_repository() -> TestResult
{
    if !strace_usable() {
        return Ok(());
    }
    let mut tally = Tally::default();
    for w in [Writer::Upgrade, Writer::Repack] {
        let s = scenario(w)?;
        kill_sweep_of(&s, Pick::Stride(1), Some(PACK_STEPS), &mut tally)?;
    }
    tally.report("tree pack kill sweep");
    assert!(tally.killed > 0, "no kill point was reached");
    tally.assert_whole();
    Ok(())
}

/// A first backup of more files than a walk queues before it commits:
/// TROVE_COMMIT_EVERY lowers that count from 65,536 to 3,000, so 12,000
/// files (two read windows of at most 8,192 entries) commit twice during
/// the walk. A content of the first window comes again in the second,
/// after the commit that stored it.
fn long_walk_scenario() -> Res<Scenario> {
    let template = tempfile::tempdir()?;
    let dir = template.path();
    let src = dir.join("source");
    let mut rng = Lcg(0xc0ffee);
    for i in 0..12_000u32 {
        let body = if i % 997 == 0 {
            b"shared content\n".to_vec()
        } else {
            format!("file {i} {}\n", rng.next_u64()).into_bytes()
        };
        write(&src, &format!("d{:02}/f{i:05}.txt", i / 1000), &body)?;
    }
    std::fs::write(
        config(dir),
        r#"{ "sources": ["./source"], "backup_root": "./backup" }"#,
    )?;
    Ok(Scenario {
        writer: Writer::FirstBackup,
        expected_latest: listing(&src, false)?,
        template,
        earlier: Vec::new(),
        env: vec![("TROVE_COMMIT_EVERY", "3000".to_owned())],
    })
}

/// Regular files below `dir`.
fn files_below(dir: &Path) -> Res<usize> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            n += files_below(&e.path())?;
        } else if t.is_file() {
            n += 1;
        }
    }
    Ok(n)
}

/// A walk that commits its objects as it goes, killed inside those
/// commits and between them: what was committed is in the store before
/// any snapshot names it, and the repository is whole after each kill
/// (the next run finishes, `verify` passes, the snapshot restores to the
/// source, `tmp/` is empty).
#[test]
fn killed_while_a_long_walk_commits_its_objects_leaves_a_whole_repository() -> TestResult {
    if !strace_usable() {
        return Ok(());
    }
    let s = long_walk_scenario()?;
    // A large commit syncs the filesystem before its moves and after
    // them, so the reader thread's third syncfs starts the walk's second
    // commit: the first is whole, and no snapshot is written yet.
    let d = fresh_copy(&s)?;
    let (outcome, out) = run_faulted(
        s.writer,
        d.path(),
        "syncfs",
        Some("syncfs:signal=KILL:when=3"),
        None,
        &s.env,
    )?;
    assert_eq!(
        outcome,
        Outcome::Killed,
        "the run never made a third syncfs in one thread: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = files_below(&d.path().join("backup/.trove/objects"))?;
    assert!(
        stored >= 8000,
        "only {stored} objects were in the store when the walk's second commit began"
    );
    let snapshots = files_below(&d.path().join("backup/.trove/snapshots"))?;
    assert_eq!(snapshots, 0, "a snapshot was written before the walk ended");
    check_whole(&s, d.path())?;

    // Inside the first and second commits' moves (a hardlink into the
    // store, then the unlink of the queued name, spread over the pool's
    // threads: strace counts per thread), and at the syncs.
    let mut tally = Tally::default();
    for (call, n) in [
        ("linkat", 300),
        ("unlink", 300),
        ("linkat", 1500),
        ("syncfs", 2),
        ("syncfs", 4),
    ] {
        kill_point(&s, call, n, &mut tally)?;
    }
    tally.report("long walk kill points");
    assert_eq!(tally.killed, 5, "a kill point was not reached");
    tally.assert_whole();
    Ok(())
}

/// A sample of injected ENOSPC/EIO/EDQUOT errors of every writer.
#[test]
fn injected_io_errors_are_named_and_leave_a_whole_repository() -> TestResult {
    sweep(None, Some(Pick::Spread(10)))
}

/// The full sweep (`benches/faultsweep.sh`): every kill point unless
/// TROVE_SWEEP_KILL_STRIDE says otherwise, and errors at every
/// TROVE_SWEEP_ERROR_STRIDE-th call.
#[test]
#[ignore = "the full sweep takes minutes: benches/faultsweep.sh"]
fn full_fault_sweep() -> TestResult {
    sweep(
        Some(Pick::Stride(stride_from_env("TROVE_SWEEP_KILL_STRIDE", 1))),
        Some(Pick::Stride(stride_from_env("TROVE_SWEEP_ERROR_STRIDE", 4))),
    )
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Mounted(PathBuf);

impl Mounted {
    /// Mount a tmpfs of `size` at `at`, or say why not and return None.
    fn tmpfs(at: &Path, size: &str) -> Option<Mounted> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIP: cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)");
            return None;
        }
        Some(Mounted(at.to_path_buf()))
    }

    fn resize(&self, size: &str) -> Res<()> {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()?;
        if !st.success() {
            return Err("remount failed".into());
        }
        Ok(())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A real full filesystem under BACKUP_ROOT: an incremental backup that
/// runs out of space fails with a message naming the path and the cause,
/// the snapshot before it stays whole and restorable, and once space is
/// freed the next run completes.
#[test]
fn a_full_filesystem_fails_the_run_by_name_and_loses_nothing_backed_up() -> TestResult {
    let t = tempfile::tempdir()?;
    let d = t.path();
    let mnt = d.join("mnt");
    std::fs::create_dir(&mnt)?;
    let Some(m) = Mounted::tmpfs(&mnt, "2m") else {
        return Ok(());
    };
    let src = d.join("source");
    fill_source(&src, 1)?;
    std::fs::write(
        config(d),
        r#"{ "sources": ["./source"], "backup_root": "./mnt/backup" }"#,
    )?;
    let backup = || -> Res<Output> {
        run({
            let mut c = trove(d);
            c.args(["--config", "config.json", "backup"]);
            c
        })
    };
    must(backup()?, "the backup that fits")?;
    let first = listing(&src, false)?;
    // 4 MiB of new content on a 2 MiB filesystem.
    let mut rng = Lcg(7);
    for i in 0..8 {
        write(&src, &format!("large/{i}.bin"), &rng.bytes(512 * 1024))?;
    }
    let out = backup()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && out.status.code() != Some(101),
        "a backup onto a full disk must fail without a panic: {:?}\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains("No space left on device") && stderr.contains("mnt/backup"),
        "the message names the cause and the path: {stderr}"
    );
    // Nothing already backed up is lost while the disk is full.
    let verify = |what: &str| -> Res<()> {
        must(
            run({
                let mut c = trove(d);
                c.args(["--repo", "mnt/backup", "verify"]);
                c
            })?,
            what,
        )?;
        Ok(())
    };
    verify("verify with the disk full")?;
    let restore_latest = |what: &str| -> Res<Tree> {
        let target = tempfile::tempdir()?;
        let tgt = target.path().join("r");
        must(
            run({
                let mut c = trove(d);
                c.args(["--repo", "mnt/backup", "restore", "--target"])
                    .arg(&tgt);
                c
            })?,
            what,
        )?;
        listing(&tgt, false)
    };
    let restored_now = restore_latest("restore with the disk full")?;
    assert_eq!(
        restored_now, first,
        "the snapshot before the full disk restores whole"
    );
    // Space freed: the next run completes and leaves no debris.
    m.resize("64m")?;
    must(backup()?, "the backup after freeing space")?;
    verify("verify after freeing space")?;
    assert_eq!(
        restore_latest("restore after freeing space")?,
        listing(&src, false)?
    );
    let left: Vec<_> = std::fs::read_dir(mnt.join("backup/.trove/tmp"))?
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(
        left.is_empty(),
        "tmp/ is empty after the next run: {left:?}"
    );
    Ok(())
}

/// A report that cannot be written (a full disk under `trove … > file`)
/// is an error that says where it was going, not a bare OS text.
#[test]
fn a_failing_standard_output_is_named() -> TestResult {
    if !strace_usable() {
        return Ok(());
    }
    let t = tempfile::tempdir()?;
    let d = t.path();
    fill_source(&d.join("source"), 1)?;
    std::fs::write(
        config(d),
        r#"{ "sources": ["./source"], "backup_root": "./backup" }"#,
    )?;
    must(
        run({
            let mut c = trove(d);
            c.args(["--config", "config.json", "backup"]);
            c
        })?,
        "backup",
    )?;
    let mut c = Command::new("strace");
    c.current_dir(d)
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=write"])
        .args(["-e", "inject=write:error=ENOSPC:when=1"])
        .arg("--")
        .arg(trove_bin())
        .args(["--repo", "backup", "snapshots"]);
    let out = run(c)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("standard output") && stderr.contains("No space left on device"),
        "names what failed: {stderr}"
    );
    Ok(())
}

/// Found by the sweep: `prune` emptied `_deleted/`, the removal of the
/// emptied folder failed (EIO), the failure was dropped, the marker
/// advanced, and `_deleted/` stayed for good (`verify` then reported it
/// as not trove's). Now the run fails naming it and the next run removes it.
#[test]
fn a_failed_removal_of_an_emptied_folder_is_named_and_finished_by_the_next_run() -> TestResult {
    if !strace_usable() {
        return Ok(());
    }
    let s = scenario(Writer::Prune)?;
    // Which of its thread's unlinkat calls removes `_deleted`.
    let probe = fresh_copy(&s)?;
    let trace = probe.path().join("probe.out");
    run_faulted(
        Writer::Prune,
        probe.path(),
        "unlinkat",
        None,
        Some(&trace),
        &[],
    )?;
    let mut per_thread: BTreeMap<String, u32> = BTreeMap::new();
    let mut point = None;
    for line in std::fs::read_to_string(&trace)?.lines() {
        let pid: String = line.chars().take_while(char::is_ascii_digit).collect();
        let call = line[pid.len()..].trim_start();
        if !call.starts_with("unlinkat(") {
            continue;
        }
        let n = per_thread.entry(pid).or_default();
        *n += 1;
        if call.contains("\"_deleted\"") && call.contains("AT_REMOVEDIR") {
            point = Some(*n);
        }
    }
    let n = point.ok_or("prune never removed the emptied _deleted/ folder")?;
    let d = fresh_copy(&s)?;
    let inject = format!("unlinkat:error=EIO:when={n}");
    let (outcome, out) = run_faulted(
        Writer::Prune,
        d.path(),
        "unlinkat",
        Some(&inject),
        None,
        &[],
    )?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(outcome, Outcome::Failed, "the failure is the run's: {said}");
    assert!(said.contains("_deleted"), "names the folder: {said}");
    check_whole(&s, d.path())?;
    assert!(!d.path().join("backup/_deleted").exists());
    Ok(())
}
