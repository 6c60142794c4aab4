//! SPEC §5-§6 `trove watch`: an initial run, then one run per debounced
//! burst of filesystem events (only the named paths rescanned), a full
//! scan when the event queue is lost, no self-backup when the backup root
//! is inside the source, and a clean stop (exit 0) on SIGINT/SIGTERM.
//!
//! Every test runs the real binary in the background with `--json` and
//! reads its one-line-per-run reports on a thread, so it waits for "the
//! run that shows this change" instead of sleeping; a wait that runs out
//! is a failure naming what was awaited, never a timing assertion. The
//! child is SIGKILLed when a test fails (`Watch`'s `Drop`).

use crate::common::{
    listing, show, stat_listing, trove_bin, Node, Res, StatRow, TestEnv, TestResult,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// An error that a failing test prints as is (newlines included), not
/// as an escaped string.
struct Failure(String);

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

fn fail(msg: String) -> Box<dyn std::error::Error> {
    Box::new(Failure(msg))
}

/// `--debounce` of every session.
const DEBOUNCE_MS: u64 = 200;
/// How long a test waits for something before failing.
const WAIT: Duration = Duration::from_secs(30);

/// A `trove watch --json` session running in the background.
struct Watch {
    child: Child,
    lines: Receiver<String>,
    /// Every run line received so far.
    seen: Vec<Value>,
    /// `seen[mark..]` are the lines not yet consumed by `wait_for`.
    mark: usize,
    stderr: PathBuf,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Watch {
    /// `trove watch --json --debounce 200 EXTRA… SOURCE BACKUP`.
    fn start(env: &TestEnv, extra: &[&str], vars: &[(&str, &str)]) -> Res<Watch> {
        let mut args: Vec<OsString> = extra.iter().map(OsString::from).collect();
        args.push(env.source.clone().into_os_string());
        args.push(env.backup.clone().into_os_string());
        Watch::start_with(env, &args, vars)
    }

    /// `trove watch --json --debounce 200 ARGS…`, run from the env's root.
    fn start_with(env: &TestEnv, args: &[OsString], vars: &[(&str, &str)]) -> Res<Watch> {
        let mut n = 0;
        let stderr = loop {
            let p = env.root().join(format!("watch-stderr-{n}.txt"));
            if !p.exists() {
                break p;
            }
            n += 1;
        };
        let mut cmd = std::process::Command::new(trove_bin());
        cmd.current_dir(env.root())
            .env_remove("TROVE_REPO")
            .env_remove("TROVE_WATCH_FORCE_RESCAN")
            .args(["watch", "--json", "--debounce", &DEBOUNCE_MS.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr)?);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn()?;
        let out = child.stdout.take().ok_or("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Watch {
            child,
            lines: rx,
            seen: Vec::new(),
            mark: 0,
            stderr,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL the child if it still runs (failure paths).
    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The run lines and stderr so far, for failure messages.
    fn context(&self) -> String {
        let mut s = String::from("--- watch stdout (run lines)\n");
        for l in &self.seen {
            s.push_str(&l.to_string());
            s.push('\n');
        }
        s.push_str("--- watch stderr\n");
        s.push_str(&std::fs::read_to_string(&self.stderr).unwrap_or_default());
        s
    }

    /// Take one stdout line into `seen`. `Ok(false)`: nothing within
    /// `timeout`. A line that is not a run report, or a run that failed,
    /// is an error.
    fn pump(&mut self, timeout: Duration) -> Res<bool> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                let v: Value = serde_json::from_str(&line).map_err(|e| {
                    fail(format!(
                        "watch --json printed a non-JSON line ({e}): {line}\n{}",
                        self.context()
                    ))
                })?;
                if v["run"].as_u64().is_none() || v["kind"].as_str().is_none() {
                    return Err(fail(format!("not a run line: {line}\n{}", self.context())));
                }
                if !v["error"].is_null() || v["report"].is_null() {
                    return Err(fail(format!(
                        "a watch run failed: {line}\n{}",
                        self.context()
                    )));
                }
                self.seen.push(v);
                Ok(true)
            }
            Err(RecvTimeoutError::Timeout) => Ok(false),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait()?;
                Err(fail(format!(
                    "trove watch ended on its own ({status})\n{}",
                    self.context()
                )))
            }
        }
    }

    /// Wait until the run lines not consumed yet satisfy `pred` (given
    /// all of them, so a change split over two runs still counts), then
    /// consume them and return them.
    fn wait_for(&mut self, what: &str, mut pred: impl FnMut(&[Value]) -> bool) -> Res<Vec<Value>> {
        let deadline = Instant::now() + WAIT;
        loop {
            if pred(&self.seen[self.mark..]) {
                let got = self.seen[self.mark..].to_vec();
                self.mark = self.seen.len();
                return Ok(got);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(fail(format!(
                    "no watch run showed {what} within {WAIT:?}\n{}",
                    self.context()
                )));
            }
            self.pump(left)?;
        }
    }

    /// The report of the initial run (run 1).
    fn initial(&mut self) -> Res<Value> {
        let got = self.wait_for("the initial run", |l| !l.is_empty())?;
        let first = &got[0];
        assert_eq!(first["run"], 1, "{}", self.context());
        assert_eq!(first["kind"], "initial", "{}", self.context());
        Ok(first["report"].clone())
    }

    /// Run lines that arrive within `d` (none expected by the caller).
    fn lines_within(&mut self, d: Duration) -> Res<Vec<Value>> {
        let start = self.seen.len();
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.pump(left)?;
        }
        self.mark = self.seen.len();
        Ok(self.seen[start..].to_vec())
    }

    /// Send `kill -SIG`, wait for the exit and read the remaining lines.
    fn stop(&mut self, sig: &str) -> Res<ExitStatus> {
        let st = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()?;
        if !st.success() {
            return Err(fail(format!("kill -{sig} {} failed: {st}", self.pid())));
        }
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(fail(format!(
                    "trove watch did not exit within {WAIT:?} of SIG{sig}\n{}",
                    self.context()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at EOF.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            let v: Value = serde_json::from_str(&line)
                .map_err(|e| format!("non-JSON line after the stop ({e}): {line}"))?;
            self.seen.push(v);
        }
        Ok(status)
    }
}

/// Sum of a report counter over run lines.
fn total(lines: &[Value], key: &str) -> u64 {
    lines.iter().filter_map(|l| l["report"][key].as_u64()).sum()
}

/// `trove --repo BACKUP ARGS…` output as JSON, retried while a watch run
/// holds the lock (exit 3).
fn repo_json(env: &TestEnv, args: &[&str]) -> Res<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = env.repo_cmd(args)?;
        match out.status.code() {
            Some(0) => return Ok(serde_json::from_slice(&out.stdout)?),
            Some(3) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            _ => {
                return Err(fail(format!(
                    "trove {args:?} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                )))
            }
        }
    }
}

/// `trove verify` (retried while locked): exit code and output.
fn verify(env: &TestEnv) -> Res<(Option<i32>, String)> {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = env.repo_cmd(&["verify"])?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.code() != Some(3) || Instant::now() > deadline {
            return Ok((out.status.code(), text));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A snapshot's listing (`trove ls --json`): path → (type, size of files).
fn snapshot_entries(env: &TestEnv, snap: &str) -> Res<BTreeMap<String, (String, u64)>> {
    let v = repo_json(env, &["ls", snap, "--json"])?;
    let mut out = BTreeMap::new();
    for e in v.as_array().ok_or("ls --json is not an array")? {
        let path = e["path"]
            .as_str()
            .ok_or("ls entry without path")?
            .to_string();
        let kind = e["type"]
            .as_str()
            .ok_or("ls entry without type")?
            .to_string();
        let size = if kind == "file" {
            e["size"].as_u64().ok_or("file without size")?
        } else {
            0
        };
        out.insert(path, (kind, size));
    }
    Ok(out)
}

/// The source as `snapshot_entries` shows it, leaving out `skip` (a
/// top-level folder, e.g. a backup root inside the source).
fn source_entries(src: &Path, skip: Option<&str>) -> Res<BTreeMap<String, (String, u64)>> {
    let mut out = BTreeMap::new();
    for (p, n) in listing(src, false)? {
        let p = show(&p);
        if let Some(s) = skip {
            if p == s || p.starts_with(&format!("{s}/")) {
                continue;
            }
        }
        let v = match n {
            Node::Dir => ("dir".to_string(), 0),
            Node::File(d) => ("file".to_string(), d.len() as u64),
            Node::Symlink(_) => ("symlink".to_string(), 0),
        };
        out.insert(p, v);
    }
    Ok(out)
}

/// The latest snapshot lists exactly the source's paths, types and sizes.
fn assert_latest_lists_source(env: &TestEnv) -> TestResult {
    let snap = snapshot_entries(env, "latest")?;
    let src = source_entries(&env.source, None)?;
    assert_listings_equal(&snap, &src);
    Ok(())
}

fn assert_listings_equal(
    snap: &BTreeMap<String, (String, u64)>,
    src: &BTreeMap<String, (String, u64)>,
) {
    let missing: Vec<_> = src
        .iter()
        .filter(|(p, v)| snap.get(*p) != Some(v))
        .take(10)
        .collect();
    let extra: Vec<_> = snap
        .iter()
        .filter(|(p, v)| src.get(*p) != Some(v))
        .take(10)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the latest snapshot differs from the source ({} vs {} entries):\n  source has {missing:?}\n  snapshot has {extra:?}",
        src.len(),
        snap.len()
    );
}

/// Poll `trove backup SOURCE BACKUP --dry-run --json` (retried while a
/// watch run holds the lock) until it reports nothing to do. `Ok(None)`:
/// settled; `Ok(Some(report))`: still changes after `WAIT`.
fn settle(env: &TestEnv, w: &mut Watch) -> Res<Option<Value>> {
    let deadline = Instant::now() + WAIT;
    loop {
        // Keep reading run lines (and notice a failed run or a crash).
        while w.pump(Duration::ZERO)? {}
        let r = env.backup(&["--dry-run", "--json"])?;
        match r.code {
            Some(3) => {}
            Some(0) => {
                let v: Value = serde_json::from_str(&r.stdout)?;
                if v["changed"] == false {
                    return Ok(None);
                }
                if Instant::now() > deadline {
                    return Ok(Some(v));
                }
            }
            _ => {
                return Err(fail(format!(
                    "backup --dry-run failed\n--- stdout\n{}\n--- stderr\n{}",
                    r.stdout, r.stderr
                )))
            }
        }
        if Instant::now() > deadline {
            return Err(fail(format!(
                "backup --dry-run found the repository locked until the end\n{}",
                w.context()
            )));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Fail, naming what the watch's latest snapshot records differently from
/// the source: the session is stopped, the snapshot restored (restore
/// applies the recorded modes and mtimes) and compared entry by entry.
fn fail_unsettled(env: &TestEnv, w: &mut Watch, dry: &Value) -> TestResult {
    let context = w.context();
    w.kill();
    let target = env.root().join("restored-from-watch");
    let out = env.repo_cmd(&["restore", "--target", &target.to_string_lossy()])?;
    let diffs = if out.status.success() {
        let src = stat_listing(&env.source, false)?;
        let got = stat_listing(&target, false)?;
        let key = |r: &StatRow| (r.kind, r.size, r.mode & 0o7777, r.mtime_ns);
        let mut diffs = Vec::new();
        for (p, s) in &src {
            match got.get(p) {
                Some(g) if key(g) == key(s) => {}
                Some(g) => diffs.push(format!(
                    "  {:?}: source {:?} restored {:?} (kind, size, mode, mtime ns)",
                    show(p),
                    key(s),
                    key(g)
                )),
                None => diffs.push(format!("  {:?}: missing from the restore", show(p))),
            }
        }
        for p in got.keys().filter(|p| !src.contains_key(*p)) {
            diffs.push(format!("  {:?}: restored, not in the source", show(p)));
        }
        diffs
    } else {
        vec![format!(
            "  (restore failed: {})",
            String::from_utf8_lossy(&out.stderr)
        )]
    };
    Err(fail(format!(
        "after the changes stopped, `trove backup --dry-run` still reported changes after {WAIT:?}: \
         the watch's latest snapshot is not what a full scan records.\n\
         dry-run: changed={} copied={} backed_up={} modified={} deleted={}\n\
         the latest snapshot, restored, differs from the source in {} entries:\n{}\n{context}",
        dry["changed"],
        dry["copied"],
        dry["backed_up"],
        dry["modified"],
        dry["deleted"],
        diffs.len(),
        diffs.join("\n")
    )))
}

/// Contents of a browsable file.
fn read_dst(env: &TestEnv, rel: &str) -> Res<Vec<u8>> {
    std::fs::read(env.dst(rel)).map_err(|e| format!("browsable {rel}: {e}").into())
}

fn assert_dst(env: &TestEnv, rel: &str, want: &[u8]) -> TestResult {
    let got = read_dst(env, rel)?;
    assert!(
        got == want,
        "browsable {rel} holds {:?}, expected {:?}",
        show(&got),
        show(want)
    );
    Ok(())
}

/// Whether the engine lock of `backup` is held exclusively by someone
/// else right now (a watch run in progress).
fn run_in_progress(lock: &Path) -> bool {
    match std::fs::File::open(lock) {
        Ok(f) => matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

#[test]
fn create_modify_delete_rename_are_reflected_in_snapshots_and_the_browsable_tree() -> TestResult {
    let env = TestEnv::new()?;
    env.write("keep.txt", "keep")?;
    env.write("mod.txt", "mod v1")?;
    env.write("sub/inner.txt", "inner v1")?;
    env.write("del.txt", "to be deleted")?;
    env.write("sub/gone.txt", "gone soon")?;
    env.write("ren.txt", "renamed content, stored once")?;
    env.write("dir/a.txt", "dir a")?;
    env.write("dir/b.txt", "dir b")?;
    env.write("tree/x/1.txt", "tree 1")?;
    env.write("tree/x/2.txt", "tree 2")?;
    env.write("tree/y.txt", "tree y")?;
    let mut w = Watch::start(&env, &["--exclude", "*.tmp", "--exclude", "cache"], &[])?;
    let init = w.initial()?;
    assert_eq!(init["files"], 11, "{init}");
    assert_eq!(init["changed"], true, "{init}");
    assert_dst(&env, "mod.txt", b"mod v1")?;
    assert_dst(&env, "dir/b.txt", b"dir b")?;

    // Create: top level, an existing subfolder, a new folder; excluded
    // names are ignored.
    env.write("created.txt", "created")?;
    env.write("sub/created_in_sub.txt", "created in sub")?;
    env.write("newdir/deep/created2.txt", "created deep")?;
    env.write("junk.tmp", "excluded")?;
    env.write("cache/c.txt", "excluded too")?;
    let runs = w.wait_for("3 created files backed up", |l| total(l, "backed_up") >= 3)?;
    assert!(
        runs.iter().all(|r| r["kind"] == "events"),
        "event runs: {runs:?}"
    );
    assert!(
        runs.iter().any(|r| r["paths"].as_u64() > Some(0)),
        "{runs:?}"
    );
    assert_dst(&env, "created.txt", b"created")?;
    assert_dst(&env, "sub/created_in_sub.txt", b"created in sub")?;
    assert_dst(&env, "newdir/deep/created2.txt", b"created deep")?;
    assert!(
        !env.dst("junk.tmp").exists(),
        "an excluded file was backed up"
    );
    assert!(
        !env.dst("cache").exists(),
        "an excluded folder was backed up"
    );
    let snap = snapshot_entries(&env, "latest")?;
    assert!(
        snap.contains_key("newdir/deep/created2.txt")
            && !snap.contains_key("junk.tmp")
            && !snap.keys().any(|p| p.starts_with("cache")),
        "{snap:?}"
    );

    // Modify: the old content goes to versions/.
    env.write("mod.txt", "mod v2, longer")?;
    env.write("sub/inner.txt", "inner v2")?;
    w.wait_for("2 modified files", |l| total(l, "modified") >= 2)?;
    assert_dst(&env, "mod.txt", b"mod v2, longer")?;
    assert_dst(&env, "versions/mod.txt/v1.bak", b"mod v1")?;
    assert_dst(&env, "sub/inner.txt", b"inner v2")?;
    assert_dst(&env, "versions/sub/inner.txt/v1.bak", b"inner v1")?;

    // Delete: the last content goes to _deleted/.
    std::fs::remove_file(env.src("del.txt"))?;
    std::fs::remove_file(env.src("sub/gone.txt"))?;
    std::fs::remove_dir_all(env.src("tree"))?;
    // `remove_dir_all` empties `tree/` before removing it: a run can see
    // the files gone and the folder still there, and the next run removes
    // the folder. Wait for both.
    let tree_shown = env.dst("tree");
    w.wait_for("5 deleted files and the folder gone", |l| {
        total(l, "deleted") >= 5 && !tree_shown.exists()
    })?;
    assert!(!env.dst("del.txt").exists(), "del.txt still at the top");
    assert!(
        !env.dst("sub/gone.txt").exists(),
        "sub/gone.txt still shown"
    );
    assert_dst(&env, "_deleted/del.txt", b"to be deleted")?;
    assert_dst(&env, "_deleted/sub/gone.txt", b"gone soon")?;
    assert_dst(&env, "_deleted/tree/x/2.txt", b"tree 2")?;
    assert_dst(&env, "_deleted/tree/y.txt", b"tree y")?;
    assert!(!env.dst("tree").exists(), "a removed folder is still shown");

    // Rename a file and a folder: new names, same bytes, nothing stored.
    let objects_before = env.objects()?.len();
    std::fs::rename(env.src("ren.txt"), env.src("renamed.txt"))?;
    std::fs::rename(env.src("dir"), env.src("dir2"))?;
    let runs = w.wait_for("3 renamed files (deleted + backed up)", |l| {
        total(l, "deleted") >= 3 && total(l, "backed_up") + total(l, "duplicates") >= 3
    })?;
    assert_eq!(
        total(&runs, "new_objects"),
        0,
        "a rename stored content again: {runs:?}"
    );
    assert_eq!(env.objects()?.len(), objects_before, "object count changed");
    assert_dst(&env, "renamed.txt", b"renamed content, stored once")?;
    assert_dst(&env, "_deleted/ren.txt", b"renamed content, stored once")?;
    assert!(!env.dst("ren.txt").exists(), "ren.txt still at the top");
    assert_dst(&env, "dir2/a.txt", b"dir a")?;
    assert_dst(&env, "dir2/b.txt", b"dir b")?;
    assert_dst(&env, "_deleted/dir/a.txt", b"dir a")?;
    assert!(!env.dst("dir").exists(), "the old folder is still shown");
    let renamed = env.object_hash_of("renamed.txt")?;
    assert_eq!(renamed, env.object_hash_of("_deleted/ren.txt")?);

    // Moves into and out of the source, and changes inside the renamed
    // folder (whose watch now has a new path).
    let outside = env.root().join("outside");
    std::fs::create_dir_all(outside.join("indir"))?;
    std::fs::write(outside.join("in.txt"), "moved in")?;
    std::fs::write(outside.join("indir/i.txt"), "moved in with its folder")?;
    std::fs::rename(outside.join("in.txt"), env.src("moved_in.txt"))?;
    std::fs::rename(outside.join("indir"), env.src("indir"))?;
    std::fs::rename(env.src("keep.txt"), outside.join("keep.txt"))?;
    env.write("dir2/c.txt", "new in the renamed folder")?;
    env.write("dir2/a.txt", "dir a, modified after the rename")?;
    w.wait_for("moves in and out, and changes in the renamed folder", |l| {
        total(l, "backed_up") >= 3 && total(l, "modified") >= 1 && total(l, "deleted") >= 1
    })?;
    assert_dst(&env, "moved_in.txt", b"moved in")?;
    assert_dst(&env, "indir/i.txt", b"moved in with its folder")?;
    assert_dst(&env, "_deleted/keep.txt", b"keep")?;
    assert!(
        !env.dst("keep.txt").exists(),
        "a moved-out file is still shown"
    );
    assert_dst(&env, "dir2/c.txt", b"new in the renamed folder")?;
    assert_dst(&env, "dir2/a.txt", b"dir a, modified after the rename")?;
    assert_dst(&env, "versions/dir2/a.txt/v1.bak", b"dir a")?;

    // Paths, types and sizes of the latest snapshot are the source's
    // (excluded entries left out).
    let snap = snapshot_entries(&env, "latest")?;
    let mut src = source_entries(&env.source, Some("cache"))?;
    src.remove("junk.tmp");
    assert_listings_equal(&snap, &src);

    let status = w.stop("TERM")?;
    assert_eq!(status.code(), Some(0), "{status}\n{}", w.context());
    let (code, text) = verify(&env)?;
    assert_eq!(code, Some(0), "verify after the session:\n{text}");
    Ok(())
}

/// After event runs that add, remove and rename entries inside existing
/// folders, the latest snapshot must be what a full scan records: a fresh
/// `trove backup --dry-run` has nothing to do. (Each such change also
/// changes the folder's mtime, which a snapshot records and `restore`
/// applies.)
#[test]
fn after_changes_inside_existing_folders_a_full_dry_run_has_nothing_to_do() -> TestResult {
    let env = TestEnv::new()?;
    env.write("top.txt", "top")?;
    env.write("sub/a.txt", "a")?;
    env.write("gone/b.txt", "b")?;
    env.write("gone/keep.txt", "keep")?;
    env.write("ren/c.txt", "c")?;
    let mut w = Watch::start(&env, &[], &[])?;
    w.initial()?;

    env.write("new_top.txt", "new at the top")?;
    env.write("sub/new.txt", "new in sub")?;
    std::fs::remove_file(env.src("gone/b.txt"))?;
    std::fs::rename(env.src("ren/c.txt"), env.src("ren/d.txt"))?;
    w.wait_for("2 new files, the rename and the deletion", |l| {
        total(l, "backed_up") + total(l, "duplicates") >= 3 && total(l, "deleted") >= 2
    })?;

    let unsettled = settle(&env, &mut w)?;
    // What was recorded of each path is right either way.
    assert_latest_lists_source(&env)?;
    if let Some(dry) = unsettled {
        return fail_unsettled(&env, &mut w, &dry);
    }
    Ok(())
}

/// 5,000 creations (in 30 new and 20 existing folders) and 1,000
/// modifications, written in waves that overlap watch runs: once the
/// writing stops, the latest snapshot and the browsable tree equal the
/// source.
#[test]
fn a_burst_of_5000_creations_and_1000_modifications_during_runs_ends_equal_to_the_source(
) -> TestResult {
    const PRE_DIRS: usize = 30;
    const PRE_FILES: usize = 100;
    const WAVES: usize = 10;
    /// New folders per wave.
    const DIRS_PER_WAVE: usize = 3;
    /// Existing folders that get new files per wave.
    const EXISTING_PER_WAVE: usize = 2;
    const FILES_PER_DIR: usize = 100;
    let env = TestEnv::new()?;
    let pre = |d: usize, i: usize| format!("pre{d:02}/f{i:03}.txt");
    let original = move |d: usize, i: usize| format!("{} original\n", pre(d, i)).repeat(1 + i % 5);
    for d in 0..PRE_DIRS {
        for i in 0..PRE_FILES {
            env.write(&pre(d, i), original(d, i))?;
        }
    }
    let mut w = Watch::start(&env, &[], &[])?;
    let init = w.initial()?;
    assert_eq!(init["files"], (PRE_DIRS * PRE_FILES) as u64, "{init}");

    let source = env.source.clone();
    let lock = env.dst(".trove/lock");
    // Returns the pre-existing files it modified (with their original
    // content) and how many waves began while a run was in progress.
    let writer = std::thread::spawn(move || -> Result<(Vec<(String, String)>, usize), String> {
        let put = |rel: &str, data: String| -> Result<(), String> {
            let p = source.join(rel);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("{rel}: {e}"))?;
            }
            std::fs::write(&p, data).map_err(|e| format!("{rel}: {e}"))
        };
        let burst = |d: usize, i: usize| format!("burst{d:02}/f{i:03}.txt");
        let mut modified_pre = Vec::new();
        let mut overlapped = 0;
        let mut next_pre = 0;
        for wave in 0..WAVES {
            if run_in_progress(&lock) {
                overlapped += 1;
            }
            for d in wave * DIRS_PER_WAVE..(wave + 1) * DIRS_PER_WAVE {
                for i in 0..FILES_PER_DIR {
                    put(
                        &burst(d, i),
                        format!("{} created\n", burst(d, i)).repeat(1 + i % 3),
                    )?;
                }
            }
            // New files in folders the previous snapshot has.
            for d in wave * EXISTING_PER_WAVE..(wave + 1) * EXISTING_PER_WAVE {
                for i in 0..FILES_PER_DIR {
                    let rel = format!("pre{d:02}/added{i:03}.txt");
                    put(&rel, format!("{rel} created\n"))?;
                }
            }
            // 100 modifications per wave: pre-existing files, and files
            // the previous wave created.
            let from_prev = if wave == 0 { 0 } else { 50 };
            for _ in 0..100 - from_prev {
                let (d, i) = (next_pre / PRE_FILES, next_pre % PRE_FILES);
                next_pre += 1;
                put(
                    &pre(d, i),
                    format!("{} modified in wave {wave}\n", pre(d, i)),
                )?;
                modified_pre.push((pre(d, i), original(d, i)));
            }
            for k in 0..from_prev {
                let d = (wave - 1) * DIRS_PER_WAVE + k % DIRS_PER_WAVE;
                let i = k / DIRS_PER_WAVE * 3;
                put(
                    &burst(d, i),
                    format!("{} modified in wave {wave}\n", burst(d, i)),
                )?;
            }
            // Let the next wave start while the run these changes cause
            // is in progress (or give up waiting for it after a second).
            let until = Instant::now() + Duration::from_secs(1);
            while wave + 1 < WAVES && !run_in_progress(&lock) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok((modified_pre, overlapped))
    });
    let (modified_pre, overlapped) = writer.join().map_err(|_| "the writer thread panicked")??;
    assert_eq!(modified_pre.len(), 550);

    let unsettled = settle(&env, &mut w)?;
    eprintln!(
        "burst: {} watch runs, {overlapped} of {WAVES} waves began during a run",
        w.seen.len()
    );
    assert!(
        overlapped > 0,
        "no wave of the burst was written while a run was in progress: the test exercised nothing\n{}",
        w.context()
    );
    assert!(w.seen.len() > 1, "no run after the initial one");

    // The browsable tree shows every source file with its bytes (all
    // contents are distinct, so all at the top) and the history of every
    // pre-existing file that was modified.
    let src = listing(&env.source, false)?;
    let files = src.values().filter(|n| matches!(n, Node::File(_))).count();
    assert_eq!(
        files,
        PRE_DIRS * PRE_FILES + WAVES * (DIRS_PER_WAVE + EXISTING_PER_WAVE) * FILES_PER_DIR
    );
    let tree = env.tree()?;
    let mut wrong = Vec::new();
    for (p, n) in &src {
        if let Node::File(_) = n {
            if tree.get(p) != Some(n) {
                wrong.push(show(p));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} source files missing or different in the browsable tree, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    for (rel, was) in &modified_pre {
        assert_dst(&env, &format!("versions/{rel}/v1.bak"), was.as_bytes())?;
    }
    assert_latest_lists_source(&env)?;
    if let Some(dry) = unsettled {
        return fail_unsettled(&env, &mut w, &dry);
    }
    let status = w.stop("TERM")?;
    assert_eq!(status.code(), Some(0), "{status}\n{}", w.context());
    Ok(())
}

/// SPEC §6: a backup root inside the source is neither scanned nor a
/// source of events, so runs do not trigger themselves.
#[test]
fn a_backup_root_inside_the_source_is_not_backed_up_and_does_not_retrigger_runs() -> TestResult {
    let mut env = TestEnv::new()?;
    env.backup = env.source.join("backup");
    env.write("a.txt", "a")?;
    env.write("sub/b.txt", "b")?;
    let mut w = Watch::start(&env, &[], &[])?;
    let init = w.initial()?;
    assert_eq!(init["files"], 2, "{init}");
    assert_dst(&env, "a.txt", b"a")?;

    env.write("sub/c.txt", "c")?;
    w.wait_for("the new file backed up", |l| total(l, "backed_up") >= 1)?;
    assert_dst(&env, "sub/c.txt", b"c")?;
    // Writing the snapshot, the tree and the log inside the source must
    // not cause another run.
    let more = w.lines_within(Duration::from_millis(5 * DEBOUNCE_MS))?;
    assert!(
        more.is_empty(),
        "runs kept coming with no change in the source (self-triggering): {more:?}"
    );
    let runs = w.seen.len();
    for s in repo_json(&env, &["snapshots", "--json"])?
        .as_array()
        .ok_or("snapshots --json is not an array")?
    {
        let id = s["id"].as_str().ok_or("snapshot without id")?;
        let snap = snapshot_entries(&env, id)?;
        let own: Vec<_> = snap.keys().filter(|p| p.starts_with("backup")).collect();
        assert!(
            own.is_empty(),
            "snapshot {id} holds the backup root: {own:?}"
        );
    }
    let snap = snapshot_entries(&env, "latest")?;
    assert_listings_equal(&snap, &source_entries(&env.source, Some("backup"))?);
    let status = w.stop("TERM")?;
    assert_eq!(status.code(), Some(0), "{status}\n{}", w.context());
    assert_eq!(w.seen.len(), runs, "a run after the quiet period");
    Ok(())
}

#[test]
fn sigterm_between_runs_exits_0_and_leaves_a_repository_verify_accepts() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", "a")?;
    let mut w = Watch::start(&env, &[], &[])?;
    w.initial()?;
    env.write("b.txt", "b")?;
    w.wait_for("b.txt backed up", |l| total(l, "backed_up") >= 1)?;
    let status = w.stop("TERM")?;
    assert_eq!(status.code(), Some(0), "{status}\n{}", w.context());
    let (code, text) = verify(&env)?;
    assert_eq!(code, Some(0), "verify after SIGTERM:\n{text}");
    assert!(text.contains(", 0 problems"), "{text}");
    assert_dst(&env, "b.txt", b"b")?;
    Ok(())
}

#[test]
fn sigint_exits_0_too() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", "a")?;
    let mut w = Watch::start(&env, &[], &[])?;
    w.initial()?;
    let status = w.stop("INT")?;
    assert_eq!(status.code(), Some(0), "{status}\n{}", w.context());
    let (code, text) = verify(&env)?;
    assert_eq!(code, Some(0), "verify after SIGINT:\n{text}");
    Ok(())
}

/// SIGTERM while a run holds the engine lock: that run commits and
/// reports, then the session exits 0, leaving nothing half-written.
#[test]
fn sigterm_during_a_run_lets_the_run_finish_then_exits_0() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", "a")?;
    let mut w = Watch::start(&env, &[], &[])?;
    w.initial()?;
    // Enough work that the last run holds the lock for a while.
    for d in 0..10 {
        for i in 0..200 {
            env.write(
                &format!("many{d}/f{i}.txt"),
                format!("file {d}/{i}\n").repeat(20),
            )?;
        }
    }
    let mut rng = crate::common::Lcg(7);
    env.write("big.bin", rng.bytes(24 * 1024 * 1024))?;
    let lock = env.dst(".trove/lock");
    let deadline = Instant::now() + WAIT;
    while !run_in_progress(&lock) {
        if Instant::now() > deadline {
            return Err(fail(format!(
                "no run was seen in progress\n{}",
                w.context()
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let status = w.stop("TERM")?;
    assert_eq!(status.code(), Some(0), "{status}\n{}", w.context());
    let last = w.seen.last().ok_or("no run line")?.clone();
    assert!(
        last["run"].as_u64() > Some(1) && last["error"].is_null(),
        "the run in progress did not report: {last}\n{}",
        w.context()
    );
    let snaps = repo_json(&env, &["snapshots", "--json"])?;
    let latest = snaps
        .as_array()
        .and_then(|a| a.last())
        .ok_or("no snapshots")?;
    assert_eq!(
        latest["id"], last["report"]["snapshot"],
        "the last reported run is not the latest snapshot"
    );
    let tmp: Vec<_> = std::fs::read_dir(env.dst(".trove/tmp"))?.collect();
    assert!(tmp.is_empty(), "{} entries left in .trove/tmp", tmp.len());
    let (code, text) = verify(&env)?;
    assert_eq!(code, Some(0), "verify after SIGTERM mid-run:\n{text}");
    Ok(())
}

/// The overflow branch (`need_rescan`), forced: every batch of events
/// becomes a full scan, which still backs the change up.
#[test]
fn a_lost_event_queue_makes_the_next_run_a_full_scan() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", "a v1")?;
    env.write("sub/b.txt", "b")?;
    let mut w = Watch::start(&env, &[], &[("TROVE_WATCH_FORCE_RESCAN", "1")])?;
    w.initial()?;
    env.write("a.txt", "a v2")?;
    env.write("sub/new.txt", "new")?;
    let runs = w.wait_for("a full-scan run with both changes", |l| {
        total(l, "modified") >= 1 && total(l, "backed_up") >= 1
    })?;
    for r in &runs {
        assert_eq!(r["kind"], "full", "{r}");
        let reason = r["reason"].as_str().unwrap_or("");
        assert!(reason.contains("TROVE_WATCH_FORCE_RESCAN"), "reason: {r}");
    }
    assert_dst(&env, "a.txt", b"a v2")?;
    assert_dst(&env, "versions/a.txt/v1.bak", b"a v1")?;
    assert_dst(&env, "sub/new.txt", b"new")?;
    if let Some(dry) = settle(&env, &mut w)? {
        return fail_unsettled(&env, &mut w, &dry);
    }
    assert_latest_lists_source(&env)?;
    let status = w.stop("TERM")?;
    assert_eq!(status.code(), Some(0), "{status}\n{}", w.context());
    Ok(())
}

#[test]
fn poll_mode_picks_up_changes() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", "a v1")?;
    let mut w = Watch::start(&env, &["--poll", "0.3"], &[])?;
    w.initial()?;
    env.write("a.txt", "a v2, polled")?;
    env.write("sub/new.txt", "new, polled")?;
    w.wait_for("the polled changes", |l| {
        total(l, "modified") >= 1 && total(l, "backed_up") >= 1
    })?;
    assert_dst(&env, "a.txt", b"a v2, polled")?;
    assert_dst(&env, "versions/a.txt/v1.bak", b"a v1")?;
    assert_dst(&env, "sub/new.txt", b"new, polled")?;
    let status = w.stop("TERM")?;
    assert_eq!(status.code(), Some(0), "{status}\n{}", w.context());
    Ok(())
}

/// `--full-scan-interval`: a full scan comes by itself, and one that finds
/// nothing changed writes no snapshot.
#[test]
fn the_periodic_full_scan_runs_and_writes_no_snapshot_when_nothing_changed() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", "a")?;
    let mut w = Watch::start(&env, &["--full-scan-interval", "1"], &[])?;
    w.initial()?;
    let runs = w.wait_for("a periodic full scan", |l| {
        l.iter().any(|r| {
            r["kind"] == "full" && r["reason"].as_str().is_some_and(|s| s.contains("periodic"))
        })
    })?;
    for r in &runs {
        assert_eq!(r["report"]["changed"], false, "{r}");
    }
    let snaps = repo_json(&env, &["snapshots", "--json"])?;
    assert_eq!(snaps.as_array().map(Vec::len), Some(1), "{snaps}");
    let status = w.stop("TERM")?;
    assert_eq!(status.code(), Some(0), "{status}\n{}", w.context());
    Ok(())
}

/// Several sources: event paths land under each source's folder.
#[test]
fn with_two_sources_changes_land_under_each_source_folder() -> TestResult {
    let env = TestEnv::new()?;
    let other = env.root().join("other");
    std::fs::create_dir(&other)?;
    env.write("x.txt", "x v1")?;
    std::fs::write(other.join("y.txt"), "y")?;
    let args: Vec<OsString> = vec![
        env.source.clone().into_os_string(),
        other.clone().into_os_string(),
        env.backup.clone().into_os_string(),
    ];
    let mut w = Watch::start_with(&env, &args, &[])?;
    let init = w.initial()?;
    assert_eq!(init["files"], 2, "{init}");
    assert_dst(&env, "source/x.txt", b"x v1")?;
    assert_dst(&env, "other/y.txt", b"y")?;

    env.write("x.txt", "x v2")?;
    std::fs::create_dir(other.join("d"))?;
    std::fs::write(other.join("d/z.txt"), "z")?;
    w.wait_for("a change in each source", |l| {
        total(l, "modified") >= 1 && total(l, "backed_up") >= 1
    })?;
    assert_dst(&env, "source/x.txt", b"x v2")?;
    assert_dst(&env, "versions/source/x.txt/v1.bak", b"x v1")?;
    assert_dst(&env, "other/d/z.txt", b"z")?;
    let snap = snapshot_entries(&env, "latest")?;
    let paths: Vec<&str> = snap.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        [
            "other",
            "other/d",
            "other/d/z.txt",
            "other/y.txt",
            "source",
            "source/x.txt"
        ],
        "{snap:?}"
    );
    let status = w.stop("TERM")?;
    assert_eq!(status.code(), Some(0), "{status}\n{}", w.context());
    Ok(())
}

/// SPEC §5: a watcher that cannot start is a runtime failure (exit 1), not
/// a usage error (exit 2): nothing in the arguments or config is wrong.
/// Running out of file descriptors is the one way to make the kernel
/// refuse a notification handle on demand, so the file-descriptor limit is
/// raised step by step from "too low to start" until the failure is the
/// watcher's own (the step before it fails elsewhere, the step after it
/// starts watching).
#[test]
fn a_watcher_that_cannot_start_is_a_runtime_failure_not_a_usage_error() -> TestResult {
    let env = TestEnv::new()?;
    env.write("f.txt", "f")?;
    for limit in 3..=24 {
        let mut cmd = std::process::Command::new("sh");
        cmd.current_dir(env.root())
            .env_remove("TROVE_REPO")
            .arg("-c")
            .arg(format!(
                "ulimit -n {limit} && exec \"$0\" watch \"$1\" \"$2\""
            ))
            .arg(trove_bin())
            .arg(&env.source)
            .arg(&env.backup)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break Some(s);
            }
            if start.elapsed() > Duration::from_secs(5) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let Some(status) = status else {
            // Watching: the limit is past the point where starting fails.
            child.kill()?;
            child.wait()?;
            break;
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().ok_or("no stderr pipe")?, &mut stderr)?;
        if stderr.contains("cannot start the filesystem watcher") {
            assert_eq!(
                status.code(),
                Some(1),
                "ulimit -n {limit}: {status}\n{stderr}"
            );
            return Ok(());
        }
    }
    Err(fail(
        "no file-descriptor limit made the watcher itself fail to start".into(),
    ))
}

/// A file `backup --stdin` stored belongs to no source: watch runs, which
/// look again only at the paths events name and keep the rest, keep it as
/// it is (never read, never reported gone), also when the source gains
/// the folder it lives in.
#[test]
fn a_file_stored_by_backup_stdin_stays_through_watch_runs() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", "a")?;
    env.write("sub/b.txt", "b")?;
    env.backup_ok(&[])?;
    let out = env
        .cmd()?
        .args(["backup", "--stdin", "--stdin-filename", "dumps/db.sql"])
        .arg(&env.backup)
        .write_stdin(b"dump".to_vec())
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut w = Watch::start(&env, &[], &[])?;
    let init = w.initial()?;
    assert_eq!(init["deleted"], 0, "{init}");
    env.write("sub/new.txt", "new")?;
    let runs = w.wait_for("sub/new.txt backed up", |l| total(l, "backed_up") >= 1)?;
    assert_eq!(total(&runs, "deleted"), 0, "{runs:?}");
    env.write("dumps/other.sql", "other")?;
    let runs = w.wait_for("dumps/other.sql backed up", |l| total(l, "backed_up") >= 1)?;
    assert_eq!(total(&runs, "deleted"), 0, "{runs:?}");
    let snap = snapshot_entries(&env, "latest")?;
    assert!(
        snap.contains_key("dumps/db.sql") && snap.contains_key("dumps/other.sql"),
        "{snap:?}"
    );
    assert_dst(&env, "dumps/db.sql", b"dump")?;
    assert!(w.stop("TERM")?.success(), "{}", w.context());
    let (code, text) = verify(&env)?;
    assert_eq!(code, Some(0), "{text}");
    Ok(())
}

/// Folders an event run does not look at are kept whole: their trees,
/// archive folders and stat-cache records are taken as they are, unread.
/// The snapshot it writes is still the one a full scan writes (a full scan
/// after it finds nothing to record and reads none of their files), their
/// versions and deleted files stay browsable, and a new file with the
/// content of a file deep inside one is still a duplicate.
#[test]
fn folders_kept_whole_by_an_event_run_are_recorded_as_a_full_scan_records_them() -> TestResult {
    let env = TestEnv::new()?;
    env.write("top.txt", "top")?;
    env.write("a/b/c/deep.txt", "deep content")?;
    env.write("a/b/x.txt", "x1")?;
    env.write("a/y.txt", "y")?;
    env.write("b/z.txt", "z")?;
    env.write("b/gone.txt", "gone")?;
    env.write("b/sub/w.txt", "w")?;
    std::fs::create_dir_all(env.src("a/empty"))?;
    std::os::unix::fs::symlink("c/deep.txt", env.src("a/b/link"))?;
    env.backup_ok(&[])?;
    // A version and a deleted file inside folders the event run keeps.
    env.write("a/b/x.txt", "x2")?;
    std::fs::remove_file(env.src("b/gone.txt"))?;
    // Past the racy window, so the initial run's cache vouches for every
    // file and the folders can be kept whole.
    std::thread::sleep(Duration::from_millis(2500));
    let mut w = Watch::start(&env, &[], &[])?;
    w.initial()?;

    env.write("top.txt", "top, changed")?;
    env.write("copy.txt", "deep content")?;
    let runs = w.wait_for("top.txt modified and copy.txt recorded", |l| {
        total(l, "modified") >= 1 && total(l, "duplicates") + total(l, "backed_up") >= 1
    })?;
    assert_eq!(
        (total(&runs, "duplicates"), total(&runs, "backed_up")),
        (1, 0),
        "copy.txt has the content of a/b/c/deep.txt: {runs:?}"
    );
    let last = runs
        .last()
        .map(|l| l["report"].clone())
        .ok_or("no run line")?;
    assert!(w.stop("TERM")?.success(), "{}", w.context());

    let full = env.backup_ok(&["--json"])?;
    let full: Value = serde_json::from_str(&full.stdout)?;
    assert_eq!(full["changed"], false, "a full scan found more: {full}");
    // Only the two files the event run read, too fresh then to vouch for.
    assert!(
        full["files_read"].as_u64().is_some_and(|n| n <= 2),
        "files of the folders kept whole were read again: {full}"
    );
    for key in ["files", "dirs", "symlinks", "bytes"] {
        assert_eq!(
            last[key], full[key],
            "{key}: event run {last}, full scan {full}"
        );
    }
    assert_eq!(last["files"], 7, "{last}");
    assert_dst(&env, "versions/a/b/x.txt/v1.bak", b"x1")?;
    assert_dst(&env, "_deleted/b/gone.txt", b"gone")?;
    assert_dst(&env, "_duplicates/copy.txt", b"deep content")?;
    assert_dst(&env, "a/b/c/deep.txt", b"deep content")?;
    let (code, text) = verify(&env)?;
    assert_eq!(code, Some(0), "{text}");
    Ok(())
}
