//! `trove mirror SRC DEST [--apply]` (SPEC §5): a dry run by default that
//! changes nothing; with `--apply` DEST becomes an exact copy of SRC
//! (paths, bytes, modes, mtimes, symlink targets), SRC is never modified,
//! symlinks in DEST are never followed, and mirrors that would destroy
//! something by construction are refused.

use crate::common::{
    listing, run_bounded, show, stat_differences, stat_listing, trove_bin, Lcg, Node, Res, Run,
    StatRow, TestEnv, TestResult,
};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

const LIMIT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------- running

/// Run `trove ARGS…` from `cwd` (optionally as uid/gid 65534 through
/// `setpriv`, and with extra environment variables).
fn trove_in(cwd: &Path, args: &[&OsStr], vars: &[(&str, &OsStr)], as_nobody: bool) -> Res<Run> {
    let mut cmd = if as_nobody {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(trove_bin());
        c
    } else {
        std::process::Command::new(trove_bin())
    };
    cmd.current_dir(cwd).env_remove("TROVE_REPO").args(args);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    Ok(Run::from_output(&run_bounded(cmd, LIMIT)?, String::new()))
}

/// `trove mirror SRC DEST EXTRA…` from the env's root.
fn mirror_paths(env: &TestEnv, src: &Path, dest: &Path, extra: &[&str]) -> Res<Run> {
    let mut args: Vec<&OsStr> = vec![OsStr::new("mirror"), src.as_os_str(), dest.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    trove_in(env.root(), &args, &[], false)
}

/// `trove mirror source backup EXTRA…` (the env's source is SRC, its
/// backup directory is DEST).
fn mirror(env: &TestEnv, extra: &[&str]) -> Res<Run> {
    mirror_paths(env, &env.source, &env.backup, extra)
}

/// The same, as uid/gid 65534.
fn mirror_as_nobody(env: &TestEnv, extra: &[&str]) -> Res<Run> {
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("mirror"),
        env.source.as_os_str(),
        env.backup.as_os_str(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    trove_in(env.root(), &args, &[], true)
}

/// `setpriv` can drop to an unprivileged user (we are root and have it).
fn can_run_as_nobody() -> bool {
    let root = fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    let have = std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !(root && have) {
        eprintln!("skipped: needs root and setpriv to run trove as an unprivileged user");
    }
    root && have
}

/// The paths of the `TAG: path` lines of stdout, in order.
fn tagged(r: &Run, tag: &str) -> Vec<String> {
    let prefix = format!("{tag}: ");
    r.stdout
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

fn set_of(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn sorted(v: Vec<String>) -> BTreeSet<String> {
    v.into_iter().collect()
}

/// The numbers of the summary line (`mirrored: …` or `dry run: …`).
#[derive(Debug, PartialEq, Eq)]
struct Summary {
    applied: bool,
    copy: u64,
    bytes: String,
    delete: u64,
    metadata: u64,
    unchanged: u64,
    /// The `; nothing was changed …` note of a dry run.
    note: Option<String>,
}

fn summary(r: &Run) -> Res<Summary> {
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("mirrored: ") || l.starts_with("dry run: "))
        .ok_or_else(|| format!("no summary line\n--- stdout\n{}", r.stdout))?;
    let (head, rest) = line.split_once(": ").ok_or("summary without ':'")?;
    let (main, note) = match rest.split_once("; ") {
        Some((m, n)) => (m, Some(n.to_string())),
        None => (rest, None),
    };
    let parts: Vec<&str> = main.split(", ").collect();
    let bad = || format!("unexpected summary line {line:?}");
    if parts.len() != 4 {
        return Err(bad().into());
    }
    let num = |s: &str, suffix: &str| -> Res<u64> {
        Ok(s.strip_suffix(suffix).ok_or_else(bad)?.parse()?)
    };
    let (copy, bytes) = parts[0].split_once(" to copy (").ok_or_else(bad)?;
    Ok(Summary {
        applied: head == "mirrored",
        copy: copy.parse()?,
        bytes: bytes.strip_suffix(')').ok_or_else(bad)?.to_string(),
        delete: num(parts[1], " to delete")?,
        metadata: num(parts[2], " with only mode/mtime to set")?,
        unchanged: num(parts[3], " unchanged")?,
        note,
    })
}

/// Exit code 2, a message on stderr containing `needle`, no change listed.
fn assert_refused(r: &Run, needle: &str) {
    r.expect_code(2);
    assert!(
        r.stderr.contains(needle),
        "the refusal explains itself ({needle:?})\n--- stderr\n{}",
        r.stderr
    );
    for tag in ["COPY", "DELETE", "WOULD COPY", "WOULD DELETE"] {
        assert!(
            tagged(r, tag).is_empty(),
            "a refused mirror lists no {tag}\n--- stdout\n{}",
            r.stdout
        );
    }
}

// ---------------------------------------------------------------- files

fn put(p: &Path, data: impl AsRef<[u8]>) -> TestResult {
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(p, data)?;
    Ok(())
}

fn chmod(p: &Path, mode: u32) -> TestResult {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Set the mtime of a file or directory (not following symlinks is not
/// needed: only called on real entries).
fn set_mtime(p: &Path, secs: u64, nanos: u32) -> TestResult {
    let f = fs::File::open(p)?;
    f.set_times(fs::FileTimes::new().set_modified(UNIX_EPOCH + Duration::new(secs, nanos)))?;
    Ok(())
}

fn symlink(target: &str, p: &Path) -> TestResult {
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent)?;
    }
    std::os::unix::fs::symlink(target, p)?;
    Ok(())
}

fn mtime_ns(m: &fs::Metadata) -> i128 {
    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
}

fn ino(p: &Path) -> Res<u64> {
    Ok(fs::symlink_metadata(p)?.ino())
}

/// One entry as the mirror must reproduce it: type, bytes or symlink
/// target, and (not for symlinks) permission bits and mtime.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ent {
    node: Node,
    mode: Option<u32>,
    mtime_ns: Option<i128>,
}

/// `root` itself (the empty path) and everything below it.
fn state(root: &Path) -> Res<BTreeMap<Vec<u8>, Ent>> {
    let mut nodes = listing(root, false)?;
    nodes.insert(Vec::new(), Node::Dir);
    let mut out = BTreeMap::new();
    for (rel, node) in nodes {
        let p = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(&rel))
        };
        let m = fs::symlink_metadata(&p)?;
        let (mode, mtime) = if matches!(node, Node::Symlink(_)) {
            (None, None)
        } else {
            (Some(m.mode() & 0o7777), Some(mtime_ns(&m)))
        };
        out.insert(
            rel,
            Ent {
                node,
                mode,
                mtime_ns: mtime,
            },
        );
    }
    Ok(out)
}

/// Short text of an entry for failure messages.
fn brief(e: &Ent) -> String {
    let what = match &e.node {
        Node::Dir => "dir".to_string(),
        Node::File(d) => format!(
            "file of {} bytes {:?}",
            d.len(),
            crate::common::fingerprint(d)
        ),
        Node::Symlink(t) => format!("symlink -> {}", show(t)),
    };
    let mode = e.mode.map(|m| format!("{m:o}"));
    format!("{what}, mode {mode:?}, mtime {:?}", e.mtime_ns)
}

/// The differences between two states (`want` is SRC), one line each.
fn state_differences(want: &BTreeMap<Vec<u8>, Ent>, got: &BTreeMap<Vec<u8>, Ent>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, w) in want {
        match got.get(k) {
            None => out.push(format!("missing in DEST: {:?}", show(k))),
            Some(g) if g != w => out.push(format!(
                "differs: {:?}\n    SRC  {}\n    DEST {}",
                show(k),
                brief(w),
                brief(g)
            )),
            Some(_) => {}
        }
    }
    for k in got.keys().filter(|k| !want.contains_key(*k)) {
        out.push(format!("extra in DEST: {:?}", show(k)));
    }
    out
}

/// DEST is an exact copy of SRC (root included).
fn assert_mirrored(src: &Path, dest: &Path, r: &Run) -> TestResult {
    let d = state_differences(&state(src)?, &state(dest)?);
    assert!(
        d.is_empty(),
        "DEST is not an exact copy of SRC:\n{}\n--- stdout\n{}\n--- stderr\n{}",
        d.join("\n"),
        r.stdout,
        r.stderr
    );
    Ok(())
}

fn assert_stat_unchanged(
    before: &BTreeMap<Vec<u8>, StatRow>,
    after: &BTreeMap<Vec<u8>, StatRow>,
    what: &str,
    r: &Run,
) {
    let d = stat_differences(before, after);
    assert!(
        d.is_empty(),
        "{what} changed:\n{}\n--- stdout\n{}\n--- stderr\n{}",
        d.join("\n"),
        r.stdout,
        r.stderr
    );
}

const T0: u64 = 1_600_000_000;

/// A varied SRC: modes, nested and empty directories, empty and binary
/// files, odd names, relative/absolute/dangling symlinks, distinct mtimes
/// (with nanoseconds) on files, directories and the root.
fn fill_src(env: &TestEnv) -> TestResult {
    let mut rng = Lcg(7);
    let files: &[(&str, Vec<u8>, u32)] = &[
        ("docs/a.txt", b"alpha\n".to_vec(), 0o644),
        ("docs/b.bin", rng.bytes(10 * 1024), 0o600),
        ("docs/deep/deeper/c.bin", rng.bytes(100 * 1024), 0o640),
        ("exec.sh", b"#!/bin/sh\necho hi\n".to_vec(), 0o755),
        ("ro.txt", b"read only\n".to_vec(), 0o444),
        ("empty.txt", Vec::new(), 0o644),
        ("name with spaces.txt", b"spaces\n".to_vec(), 0o644),
        (
            "\u{fc}n\u{ef}c\u{f8}d\u{e9}.txt",
            b"unicode\n".to_vec(),
            0o664,
        ),
    ];
    for (i, (rel, data, mode)) in files.iter().enumerate() {
        let p = env.src(rel);
        put(&p, data)?;
        chmod(&p, *mode)?;
        set_mtime(&p, T0 + 100 * i as u64, 111_111 * i as u32)?;
    }
    fs::create_dir(env.src("emptydir"))?;
    symlink("docs/a.txt", &env.src("link-rel"))?;
    symlink("/nonexistent/absolute/target", &env.src("link-abs"))?;
    symlink("docs", &env.src("link-dir"))?;
    symlink("missing", &env.src("docs/dangling"))?;
    // Directories last, deepest first.
    for (i, (rel, mode)) in [
        ("docs/deep/deeper", 0o755),
        ("docs/deep", 0o700),
        ("docs", 0o750),
        ("emptydir", 0o711),
    ]
    .iter()
    .enumerate()
    {
        let p = env.src(rel);
        chmod(&p, *mode)?;
        set_mtime(&p, T0 + 5000 + 10 * i as u64, 987_654_321)?;
    }
    chmod(&env.source, 0o755)?;
    set_mtime(&env.source, T0 + 9000, 42)?;
    Ok(())
}

// ---------------------------------------------------------------- dry run

/// SRC and DEST differing in every way a dry run reports: new, changed,
/// extra (also nested), a type change, an unchanged file.
fn dry_run_fixture(env: &TestEnv) -> TestResult {
    env.write("same.txt", "same")?;
    env.write("changed.txt", "new content, longer")?;
    env.write("new.txt", "brand new")?;
    env.write("newdir/inner.txt", "inner")?;
    fs::create_dir(env.src("newdir/sub"))?;
    env.write("type/x", "was a file in DEST")?;
    symlink("same.txt", &env.src("link"))?;
    put(&env.dst("same.txt"), "same")?;
    put(&env.dst("changed.txt"), "old")?;
    put(&env.dst("extra.txt"), "extra")?;
    put(&env.dst("extradir/deep/f"), "deep extra")?;
    put(&env.dst("type"), "a file where SRC has a folder")?;
    for p in [env.src("same.txt"), env.dst("same.txt")] {
        chmod(&p, 0o644)?;
        set_mtime(&p, T0, 5)?;
    }
    Ok(())
}

#[test]
fn dry_run_lists_what_would_change_and_changes_nothing() -> TestResult {
    let env = TestEnv::new()?;
    dry_run_fixture(&env)?;
    let src_before = stat_listing(&env.source, false)?;
    let dest_before = stat_listing(&env.backup, false)?;
    let r = mirror(&env, &[])?;
    r.expect_code(0);
    assert_eq!(
        sorted(tagged(&r, "WOULD COPY")),
        set_of(&[
            "changed.txt",
            "link",
            "new.txt",
            "newdir/",
            "newdir/inner.txt",
            "newdir/sub/",
            "type/",
            "type/x",
        ]),
        "WOULD COPY lines (directories end with /)\n{}",
        r.stdout
    );
    assert_eq!(
        sorted(tagged(&r, "WOULD DELETE")),
        set_of(&["extra.txt", "extradir/", "type"]),
        "WOULD DELETE lines: a nested extra folder once, with a /\n{}",
        r.stdout
    );
    assert!(tagged(&r, "COPY").is_empty() && tagged(&r, "DELETE").is_empty());
    let bytes = [
        "new content, longer",
        "brand new",
        "inner",
        "was a file in DEST",
    ]
    .iter()
    .map(|s| s.len() as u64)
    .sum::<u64>();
    let s = summary(&r)?;
    assert_eq!(
        s,
        Summary {
            applied: false,
            copy: 8,
            bytes: format!("{bytes} B"),
            delete: 3,
            metadata: 0,
            unchanged: 1,
            note: Some("nothing was changed (run again with --apply)".into()),
        },
        "{}",
        r.stdout
    );
    assert_stat_unchanged(&dest_before, &stat_listing(&env.backup, false)?, "DEST", &r);
    assert_stat_unchanged(&src_before, &stat_listing(&env.source, false)?, "SRC", &r);
    Ok(())
}

#[test]
fn dry_run_into_a_missing_dest_creates_nothing() -> TestResult {
    let env = TestEnv::new()?;
    fill_src(&env)?;
    let dest = env.root().join("not/yet/there");
    let src_before = stat_listing(&env.source, false)?;
    let r = mirror_paths(&env, &env.source, &dest, &[])?;
    r.expect_code(0);
    let listed = tagged(&r, "WOULD COPY");
    let want: BTreeSet<String> = state(&env.source)?
        .into_iter()
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, e)| {
            let mut s = show(&k);
            if e.node == Node::Dir {
                s.push('/');
            }
            s
        })
        .collect();
    assert_eq!(sorted(listed), want, "every SRC entry would be copied");
    assert!(tagged(&r, "WOULD DELETE").is_empty());
    assert!(
        !env.root().join("not").exists(),
        "a dry run creates no DEST (nor its parents)"
    );
    assert_stat_unchanged(&src_before, &stat_listing(&env.source, false)?, "SRC", &r);
    Ok(())
}

// ---------------------------------------------------------------- apply

/// DEST in a mess: extra files and nested folders, every type change,
/// changed contents, a metadata-only difference, other modes and mtimes.
fn messy_dest(env: &TestEnv) -> TestResult {
    let d = |rel: &str| env.dst(rel);
    put(&d("docs/a.txt"), "ALPHA, an older and longer version\n")?;
    // Same size as SRC's, other bytes and mtime: decided by hashing.
    let mut b = fs::read(env.src("docs/b.bin"))?;
    b[5000] ^= 0xff;
    put(&d("docs/b.bin"), &b)?;
    // Same bytes, other mode and mtime: only the metadata is fixed.
    put(&d("exec.sh"), fs::read(env.src("exec.sh"))?)?;
    chmod(&d("exec.sh"), 0o600)?;
    put(&d("old/deep/deeper/f"), "deep extra")?;
    put(&d("old/g"), "extra")?;
    put(&d("stale.txt"), "stale")?;
    put(&d(".hidden"), "hidden extra")?;
    symlink("docs/a.txt", &d("extra-link"))?;
    // Type changes.
    put(
        &d("t_file_was_dir/x/y/z"),
        "nested in a folder SRC has as a file",
    )?;
    put(&d("t_dir_was_file"), "a file where SRC has a folder")?;
    put(&d("t_link_was_file"), "a file where SRC has a symlink")?;
    symlink("docs/a.txt", &d("t_file_was_link"))?;
    symlink("docs", &d("t_dir_was_link"))?;
    put(
        &d("t_link_was_dir/inner"),
        "in a folder SRC has as a symlink",
    )?;
    symlink("elsewhere", &d("link-rel"))?;
    chmod(&d("docs"), 0o777)?;
    chmod(&env.backup, 0o700)?;
    set_mtime(&env.backup, T0 - 1000, 0)?;
    Ok(())
}

fn type_change_src(env: &TestEnv) -> TestResult {
    env.write("t_file_was_dir", "now a file")?;
    env.write("t_dir_was_file/inner", "now in a folder")?;
    symlink("docs/a.txt", &env.src("t_link_was_file"))?;
    env.write("t_file_was_link", "now a real file")?;
    env.write("t_dir_was_link/inner", "now in a real folder")?;
    symlink("docs", &env.src("t_link_was_dir"))?;
    // A name that is not UTF-8.
    put(
        &env.source.join(OsStr::from_bytes(b"raw\xff.bin")),
        "raw name",
    )?;
    Ok(())
}

#[test]
fn apply_makes_dest_an_exact_copy_and_a_second_apply_copies_nothing() -> TestResult {
    let env = TestEnv::new()?;
    fs::create_dir(&env.backup)?;
    type_change_src(&env)?;
    fill_src(&env)?;
    messy_dest(&env)?;
    let src_before = stat_listing(&env.source, false)?;
    let r = mirror(&env, &["--apply"])?;
    r.expect_code(0);
    assert!(
        tagged(&r, "WOULD COPY").is_empty() && tagged(&r, "WOULD DELETE").is_empty(),
        "--apply prints COPY:/DELETE:, not WOULD …\n{}",
        r.stdout
    );
    assert_eq!(
        sorted(tagged(&r, "DELETE")),
        set_of(&[
            ".hidden",
            "extra-link",
            "old/",
            "stale.txt",
            "t_dir_was_file",
            "t_dir_was_link",
            "t_file_was_dir/",
            "t_file_was_link",
            "t_link_was_dir/",
            "t_link_was_file",
        ]),
        "DELETE lines\n{}",
        r.stdout
    );
    let copied = sorted(tagged(&r, "COPY"));
    for want in [
        "docs/a.txt",
        "docs/b.bin",
        "link-rel",
        "t_file_was_dir",
        "t_dir_was_file/",
        "t_dir_was_file/inner",
        "t_link_was_file",
        "t_file_was_link",
        "t_dir_was_link/",
        "t_dir_was_link/inner",
        "t_link_was_dir",
    ] {
        assert!(copied.contains(want), "COPY: {want} expected\n{}", r.stdout);
    }
    assert!(
        !copied.contains("exec.sh"),
        "equal contents are not copied, only their metadata fixed\n{}",
        r.stdout
    );
    let s = summary(&r)?;
    assert!(s.applied && s.note.is_none(), "{s:?}");
    assert_eq!(s.copy as usize, copied.len());
    assert_eq!(s.delete, 10);
    assert!(s.metadata >= 1, "exec.sh only needs mode and mtime: {s:?}");
    assert_mirrored(&env.source, &env.backup, &r)?;
    assert_stat_unchanged(&src_before, &stat_listing(&env.source, false)?, "SRC", &r);

    // Nothing left to do: no copy, no delete, no metadata, DEST untouched.
    let dest_before = stat_listing(&env.backup, false)?;
    let r2 = mirror(&env, &["--apply"])?;
    r2.expect_code(0);
    assert!(
        tagged(&r2, "COPY").is_empty() && tagged(&r2, "DELETE").is_empty(),
        "a second --apply has nothing to do\n{}",
        r2.stdout
    );
    let entries = state(&env.source)?.len() as u64 - 1;
    assert_eq!(
        summary(&r2)?,
        Summary {
            applied: true,
            copy: 0,
            bytes: "0 B".into(),
            delete: 0,
            metadata: 0,
            unchanged: entries,
            note: None,
        },
        "{}",
        r2.stdout
    );
    assert_stat_unchanged(
        &dest_before,
        &stat_listing(&env.backup, false)?,
        "DEST",
        &r2,
    );
    assert_stat_unchanged(&src_before, &stat_listing(&env.source, false)?, "SRC", &r2);
    // And a dry run agrees.
    let r3 = mirror(&env, &[])?;
    r3.expect_code(0);
    assert!(tagged(&r3, "WOULD COPY").is_empty() && tagged(&r3, "WOULD DELETE").is_empty());
    Ok(())
}

#[test]
fn apply_creates_a_missing_dest_with_its_parents() -> TestResult {
    let env = TestEnv::new()?;
    fill_src(&env)?;
    let dest = env.root().join("new/parents/dest");
    let src_before = stat_listing(&env.source, false)?;
    let r = mirror_paths(&env, &env.source, &dest, &["--apply"])?;
    r.expect_code(0);
    assert!(tagged(&r, "DELETE").is_empty());
    assert_eq!(
        tagged(&r, "COPY").len(),
        state(&env.source)?.len() - 1,
        "every SRC entry copied\n{}",
        r.stdout
    );
    assert_mirrored(&env.source, &dest, &r)?;
    assert_stat_unchanged(&src_before, &stat_listing(&env.source, false)?, "SRC", &r);
    Ok(())
}

#[test]
fn update_inside_an_unchanged_folder_keeps_the_folder_mtime() -> TestResult {
    let env = TestEnv::new()?;
    fill_src(&env)?;
    mirror(&env, &["--apply"])?.expect_code(0);
    // New contents (another size) in files of folders whose own mode and
    // mtime stay as they were.
    let folders = ["docs", "docs/deep/deeper"];
    let mut mtimes = Vec::new();
    for rel in folders {
        mtimes.push(fs::metadata(env.src(rel))?.modified()?);
    }
    env.write("docs/a.txt", "alpha, second version\n")?;
    env.write("docs/deep/deeper/c.bin", "smaller now")?;
    for (rel, t) in folders.iter().zip(mtimes) {
        fs::File::open(env.src(rel))?.set_times(fs::FileTimes::new().set_modified(t))?;
    }
    let r = mirror(&env, &["--apply"])?;
    r.expect_code(0);
    assert_eq!(
        sorted(tagged(&r, "COPY")),
        set_of(&["docs/a.txt", "docs/deep/deeper/c.bin"]),
        "{}",
        r.stdout
    );
    assert_mirrored(&env.source, &env.backup, &r)?;
    Ok(())
}

// ---------------------------------------------------------------- content decisions

#[test]
fn quick_check_trusts_same_size_and_mtime_like_rsync() -> TestResult {
    let env = TestEnv::new()?;
    env.write("f.txt", "original")?;
    set_mtime(&env.src("f.txt"), T0, 1)?;
    mirror(&env, &["--apply"])?.expect_code(0);
    // Other bytes, same size, mtime put back: indistinguishable without
    // reading, and (documented, rsync-like) left alone.
    let dest_file = env.dst("f.txt");
    fs::write(&dest_file, "ORIGINAL")?;
    set_mtime(&dest_file, T0, 1)?;
    let before = stat_listing(&env.backup, false)?;
    let r = mirror(&env, &["--apply"])?;
    r.expect_code(0);
    assert!(tagged(&r, "COPY").is_empty(), "{}", r.stdout);
    let s = summary(&r)?;
    assert_eq!((s.copy, s.metadata, s.unchanged), (0, 0, 1), "{s:?}");
    assert_eq!(fs::read(&dest_file)?, b"ORIGINAL");
    assert_stat_unchanged(&before, &stat_listing(&env.backup, false)?, "DEST", &r);
    Ok(())
}

#[test]
fn equal_content_with_other_mtime_and_mode_gets_only_its_metadata_fixed() -> TestResult {
    let env = TestEnv::new()?;
    let mut rng = Lcg(3);
    let data = rng.bytes(50_000);
    env.write("same.bin", &data)?;
    chmod(&env.src("same.bin"), 0o640)?;
    set_mtime(&env.src("same.bin"), T0, 777)?;
    put(&env.dst("same.bin"), &data)?;
    chmod(&env.dst("same.bin"), 0o666)?;
    set_mtime(&env.dst("same.bin"), T0 + 3600, 0)?;
    let inode = ino(&env.dst("same.bin"))?;

    let dry = mirror(&env, &[])?;
    dry.expect_code(0);
    assert!(tagged(&dry, "WOULD COPY").is_empty(), "{}", dry.stdout);
    assert_eq!(summary(&dry)?.metadata, 1, "{}", dry.stdout);

    let r = mirror(&env, &["--apply"])?;
    r.expect_code(0);
    assert!(
        tagged(&r, "COPY").is_empty(),
        "equal content not copied\n{}",
        r.stdout
    );
    let s = summary(&r)?;
    assert_eq!(
        (s.copy, s.metadata, s.bytes.as_str()),
        (0, 1, "0 B"),
        "{s:?}"
    );
    assert_eq!(
        ino(&env.dst("same.bin"))?,
        inode,
        "the file is fixed in place (same inode), not replaced"
    );
    assert_mirrored(&env.source, &env.backup, &r)?;
    Ok(())
}

#[test]
fn folder_with_only_other_mode_is_counted_as_metadata_to_set() -> TestResult {
    let env = TestEnv::new()?;
    env.write("dir/f.txt", "f")?;
    mirror(&env, &["--apply"])?.expect_code(0);
    chmod(&env.dst("dir"), 0o700)?;
    let dry = mirror(&env, &[])?;
    dry.expect_code(0);
    let r = mirror(&env, &["--apply"])?;
    r.expect_code(0);
    assert_mirrored(&env.source, &env.backup, &r)?;
    // The summary accounts for every entry: the folder's mode is set, so
    // it is neither "unchanged" nor missing from the counts.
    for run in [&dry, &r] {
        let s = summary(run)?;
        assert_eq!(
            (s.copy, s.delete, s.metadata, s.unchanged),
            (0, 0, 1, 1),
            "dir/ gets its mode set, dir/f.txt is unchanged\n{}",
            run.stdout
        );
    }
    Ok(())
}

#[test]
fn changed_file_is_replaced_by_rename_never_written_through() -> TestResult {
    let env = TestEnv::new()?;
    env.write("grown.txt", "new, longer content")?;
    let mut rng = Lcg(11);
    let same_size_new = rng.bytes(20_000);
    env.write("same-size.bin", &same_size_new)?;
    put(&env.dst("grown.txt"), "old")?;
    let mut old = same_size_new.clone();
    old[19_999] ^= 1;
    put(&env.dst("same-size.bin"), &old)?;
    // Hardlinks of the DEST files elsewhere (outside DEST).
    let keep = env.root().join("elsewhere");
    fs::create_dir(&keep)?;
    fs::hard_link(env.dst("grown.txt"), keep.join("grown.txt"))?;
    fs::hard_link(env.dst("same-size.bin"), keep.join("same-size.bin"))?;
    let old_inodes = (ino(&env.dst("grown.txt"))?, ino(&env.dst("same-size.bin"))?);

    let r = mirror(&env, &["--apply"])?;
    r.expect_code(0);
    assert_eq!(
        sorted(tagged(&r, "COPY")),
        set_of(&["grown.txt", "same-size.bin"]),
        "{}",
        r.stdout
    );
    assert_mirrored(&env.source, &env.backup, &r)?;
    assert_eq!(
        fs::read(keep.join("grown.txt"))?,
        b"old",
        "hardlink keeps the old bytes"
    );
    assert_eq!(fs::read(keep.join("same-size.bin"))?, old);
    assert_ne!(
        ino(&env.dst("grown.txt"))?,
        old_inodes.0,
        "replaced, not rewritten"
    );
    assert_ne!(ino(&env.dst("same-size.bin"))?, old_inodes.1);
    assert_eq!(fs::metadata(keep.join("grown.txt"))?.nlink(), 1);
    let names: Vec<OsString> = fs::read_dir(&env.backup)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(names.len(), 2, "no temp files left behind: {names:?}");
    Ok(())
}

// ---------------------------------------------------------------- refusals

/// A SRC and DEST with content, and the stat listing of the whole test
/// directory to prove a refusal changed nothing.
fn refusal_env() -> Res<TestEnv> {
    let env = TestEnv::new()?;
    env.write("f.txt", "in SRC")?;
    env.write("sub/g.txt", "in SRC/sub")?;
    put(&env.dst("extra.txt"), "in DEST")?;
    Ok(env)
}

fn check_refusal(env: &TestEnv, src: &Path, dest: &Path, needle: &str) -> TestResult {
    for extra in [&[][..], &["--apply"][..]] {
        let before = stat_listing(env.root(), false)?;
        let r = mirror_paths(env, src, dest, extra)?;
        assert_refused(&r, needle);
        assert_stat_unchanged(
            &before,
            &stat_listing(env.root(), false)?,
            "the test directory",
            &r,
        );
    }
    Ok(())
}

#[test]
fn refuses_dest_inside_src() -> TestResult {
    let env = refusal_env()?;
    check_refusal(&env, &env.source, &env.src("sub"), "inside the source")?;
    check_refusal(
        &env,
        &env.source,
        &env.src("new/mirror"),
        "inside the source",
    )?;
    check_refusal(&env, &env.source, &env.source, "inside the source")?;
    // Through a symlink that leads into SRC.
    symlink(env.source.to_str().ok_or("path")?, &env.root().join("via"))?;
    check_refusal(
        &env,
        &env.source,
        &env.root().join("via/mirror"),
        "inside the source",
    )?;
    Ok(())
}

#[test]
fn refuses_src_inside_dest() -> TestResult {
    let env = refusal_env()?;
    check_refusal(&env, &env.source, env.root(), "inside the destination")?;
    check_refusal(&env, &env.src("sub"), &env.source, "inside the destination")?;
    Ok(())
}

#[test]
fn refuses_the_root_directory_as_dest() -> TestResult {
    let env = refusal_env()?;
    // Dry run only: a broken refusal must not get a chance to delete.
    let before = stat_listing(env.root(), false)?;
    let r = mirror_paths(&env, &env.source, Path::new("/"), &[])?;
    assert_refused(&r, "refusing to mirror onto /");
    assert_stat_unchanged(
        &before,
        &stat_listing(env.root(), false)?,
        "the test directory",
        &r,
    );
    Ok(())
}

#[test]
fn refuses_the_home_directory_as_dest() -> TestResult {
    let env = refusal_env()?;
    let home = env.root().join("home");
    put(&home.join(".bashrc"), "precious")?;
    put(&home.join("docs/thesis.txt"), "very precious")?;
    for dest in [
        home.clone(),
        env.root().join("home/../home/"),
        PathBuf::from("home"),
    ] {
        for extra in [&[][..], &["--apply"][..]] {
            let before = stat_listing(env.root(), false)?;
            let mut args: Vec<&OsStr> = vec![
                OsStr::new("mirror"),
                env.source.as_os_str(),
                dest.as_os_str(),
            ];
            args.extend(extra.iter().map(OsStr::new));
            let r = trove_in(env.root(), &args, &[("HOME", home.as_os_str())], false)?;
            assert_refused(&r, "home directory");
            assert_stat_unchanged(
                &before,
                &stat_listing(env.root(), false)?,
                "the test directory",
                &r,
            );
        }
    }
    Ok(())
}

#[test]
fn refuses_a_src_that_is_not_a_directory() -> TestResult {
    let env = refusal_env()?;
    check_refusal(
        &env,
        &env.src("f.txt"),
        &env.backup,
        "not an existing directory",
    )?;
    check_refusal(
        &env,
        &env.root().join("missing"),
        &env.backup,
        "not an existing directory",
    )?;
    // DEST is not created either.
    check_refusal(
        &env,
        &env.root().join("missing"),
        &env.root().join("fresh"),
        "not an existing directory",
    )?;
    Ok(())
}

#[test]
fn refuses_a_dest_that_is_an_existing_file() -> TestResult {
    let env = refusal_env()?;
    let file = env.root().join("a-file");
    put(&file, "not a folder")?;
    check_refusal(&env, &env.source, &file, "not a directory")?;
    assert_eq!(fs::read(&file)?, b"not a folder");
    Ok(())
}

// ---------------------------------------------------------------- symlinks in DEST

/// A directory outside DEST with files (and a subfolder) that a mirror
/// following a symlink would overwrite or delete.
fn outside_dir(env: &TestEnv) -> Res<PathBuf> {
    let out = env.root().join("outside");
    put(&out.join("a.txt"), "outside a")?;
    put(&out.join("x.txt"), "outside x: SRC has an x.txt too")?;
    put(&out.join("nested/b.txt"), "outside b")?;
    Ok(out)
}

#[test]
fn symlink_in_dest_where_src_has_a_folder_is_replaced_never_followed() -> TestResult {
    let env = TestEnv::new()?;
    let outside = outside_dir(&env)?;
    env.write("sub/x.txt", "SRC's x")?;
    env.write("sub/deeper/y.txt", "SRC's y")?;
    env.write("top.txt", "top")?;
    fs::create_dir(&env.backup)?;
    symlink(outside.to_str().ok_or("path")?, &env.dst("sub"))?;
    let outside_before = stat_listing(&outside, false)?;
    let outside_nodes = listing(&outside, false)?;

    let dry = mirror(&env, &[])?;
    dry.expect_code(0);
    assert_eq!(tagged(&dry, "WOULD DELETE"), ["sub"], "{}", dry.stdout);
    assert!(
        tagged(&dry, "WOULD COPY").contains(&"sub/".to_string()),
        "{}",
        dry.stdout
    );

    let r = mirror(&env, &["--apply"])?;
    r.expect_code(0);
    assert_eq!(
        tagged(&r, "DELETE"),
        ["sub"],
        "only the link goes\n{}",
        r.stdout
    );
    assert_stat_unchanged(
        &outside_before,
        &stat_listing(&outside, false)?,
        "OUTSIDE",
        &r,
    );
    assert_eq!(
        listing(&outside, false)?,
        outside_nodes,
        "OUTSIDE's contents"
    );
    let m = fs::symlink_metadata(env.dst("sub"))?;
    assert!(
        m.is_dir() && !m.file_type().is_symlink(),
        "DEST/sub is a real folder now"
    );
    assert_mirrored(&env.source, &env.backup, &r)?;
    Ok(())
}

#[test]
fn extra_symlinks_in_dest_are_deleted_as_links() -> TestResult {
    let env = TestEnv::new()?;
    let outside = outside_dir(&env)?;
    let o = outside.to_str().ok_or("path")?;
    env.write("kept.txt", "kept")?;
    fs::create_dir(&env.backup)?;
    symlink(o, &env.dst("to-outside-dir"))?;
    symlink(&format!("{o}/a.txt"), &env.dst("to-outside-file"))?;
    // Inside an extra folder (deleted recursively): still not followed.
    symlink(o, &env.dst("extra/deep/to-outside-dir"))?;
    symlink("../../outside", &env.dst("extra/relative-link"))?;
    let outside_before = stat_listing(&outside, false)?;
    let outside_nodes = listing(&outside, false)?;
    let r = mirror(&env, &["--apply"])?;
    r.expect_code(0);
    assert_eq!(
        sorted(tagged(&r, "DELETE")),
        set_of(&["extra/", "to-outside-dir", "to-outside-file"]),
        "{}",
        r.stdout
    );
    assert_stat_unchanged(
        &outside_before,
        &stat_listing(&outside, false)?,
        "OUTSIDE",
        &r,
    );
    assert_eq!(
        listing(&outside, false)?,
        outside_nodes,
        "OUTSIDE's contents"
    );
    assert_mirrored(&env.source, &env.backup, &r)?;
    Ok(())
}

// ---------------------------------------------------------------- excludes

#[test]
fn excludes_apply_to_both_sides() -> TestResult {
    let env = TestEnv::new()?;
    env.write("keep.txt", "keep")?;
    env.write("skip.tmp", "not copied")?;
    env.write("sub/keep2.txt", "keep 2")?;
    env.write("sub/skip.tmp", "not copied either")?;
    env.write("cache/big.bin", "excluded folder")?;
    put(&env.dst("local.tmp"), "DEST's own, excluded: stays")?;
    put(&env.dst("sub/local.tmp"), "DEST's own, excluded: stays")?;
    put(&env.dst("cache/mine.bin"), "DEST's own cache: stays")?;
    put(&env.dst("extra.txt"), "not excluded: deleted")?;
    // Distinct folder mtimes on both sides (not the same clock tick).
    set_mtime(&env.src("sub"), T0, 0)?;
    set_mtime(&env.dst("sub"), T0 + 1, 0)?;
    let excluded = |k: &[u8]| {
        let s = show(k);
        s.ends_with(".tmp") || s == "cache" || s.starts_with("cache/")
    };
    let kept_before: BTreeMap<Vec<u8>, StatRow> = stat_listing(&env.backup, false)?
        .into_iter()
        .filter(|(k, _)| excluded(k) && !k.is_empty())
        .collect();
    let args = ["--exclude", "*.tmp", "--exclude", "cache"];
    let dry = mirror(&env, &args)?;
    dry.expect_code(0);
    let mut apply_args = args.to_vec();
    apply_args.push("--apply");
    let r = mirror(&env, &apply_args)?;
    r.expect_code(0);
    for (run, copy, delete) in [(&dry, "WOULD COPY", "WOULD DELETE"), (&r, "COPY", "DELETE")] {
        assert_eq!(
            sorted(tagged(run, copy)),
            set_of(&["keep.txt", "sub/keep2.txt"]),
            "{}",
            run.stdout
        );
        assert_eq!(tagged(run, delete), ["extra.txt"], "{}", run.stdout);
    }
    let kept_after: BTreeMap<Vec<u8>, StatRow> = stat_listing(&env.backup, false)?
        .into_iter()
        .filter(|(k, _)| excluded(k) && !k.is_empty())
        .collect();
    assert_stat_unchanged(&kept_before, &kept_after, "DEST's excluded entries", &r);
    assert!(!env.dst("skip.tmp").exists() && !env.dst("sub/skip.tmp").exists());
    assert!(!env.dst("cache/big.bin").exists());
    let not_excluded = |s: BTreeMap<Vec<u8>, Ent>| -> BTreeMap<Vec<u8>, Ent> {
        s.into_iter().filter(|(k, _)| !excluded(k)).collect()
    };
    let d = state_differences(
        &not_excluded(state(&env.source)?),
        &not_excluded(state(&env.backup)?),
    );
    assert!(
        d.is_empty(),
        "outside the excludes DEST equals SRC:\n{}",
        d.join("\n")
    );
    let r2 = mirror(&env, &apply_args)?;
    r2.expect_code(0);
    assert!(
        tagged(&r2, "COPY").is_empty() && tagged(&r2, "DELETE").is_empty(),
        "{}",
        r2.stdout
    );
    Ok(())
}

#[test]
fn excluded_file_inside_an_extra_dest_folder_is_not_deleted() -> TestResult {
    let env = TestEnv::new()?;
    env.write("keep.txt", "keep")?;
    put(&env.dst("gone/notes.tmp"), "DEST's own, excluded")?;
    put(&env.dst("gone/other.txt"), "not excluded")?;
    let r = mirror(&env, &["--exclude", "*.tmp", "--apply"])?;
    r.expect_code(0);
    assert_eq!(
        fs::read(env.dst("gone/notes.tmp")).ok().as_deref(),
        Some(&b"DEST's own, excluded"[..]),
        "an excluded path is neither copied nor deleted, also below a folder SRC lacks\n{}",
        r.stdout
    );
    assert!(!env.dst("gone/other.txt").exists(), "{}", r.stdout);
    Ok(())
}

// ---------------------------------------------------------------- JSON

#[test]
fn json_lists_and_counts_match_the_human_output() -> TestResult {
    let env = TestEnv::new()?;
    dry_run_fixture(&env)?;
    // One metadata-only difference too.
    env.write("meta.txt", "meta")?;
    put(&env.dst("meta.txt"), "meta")?;
    chmod(&env.dst("meta.txt"), 0o600)?;
    for apply in [false, true] {
        let extra: &[&str] = if apply { &["--apply"] } else { &[] };
        // The human run of an --apply would leave nothing for the JSON one:
        // compare the JSON --apply with the human dry run before it.
        let human = mirror(&env, &[])?;
        human.expect_code(0);
        let mut jargs = extra.to_vec();
        jargs.push("--json");
        let j = mirror(&env, &jargs)?;
        j.expect_code(0);
        let v: serde_json::Value = serde_json::from_str(&j.stdout)
            .map_err(|e| format!("--json output does not parse: {e}\n{}", j.stdout))?;
        let list = |k: &str| -> Vec<String> {
            v[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(v["applied"], apply, "{v}");
        assert_eq!(list("copy"), tagged(&human, "WOULD COPY"), "copy list: {v}");
        assert_eq!(
            list("delete"),
            tagged(&human, "WOULD DELETE"),
            "delete list: {v}"
        );
        let s = summary(&human)?;
        assert_eq!(list("copy").len() as u64, s.copy);
        assert_eq!(list("delete").len() as u64, s.delete);
        assert_eq!(v["metadata"].as_u64(), Some(s.metadata), "{v}");
        assert_eq!(v["unchanged"].as_u64(), Some(s.unchanged), "{v}");
        let bytes = v["bytes_copied"].as_u64().ok_or("bytes_copied")?;
        assert_eq!(trove::backup::human_bytes(bytes), s.bytes);
        assert_eq!(s.metadata, 1);
        assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v}");
    }
    // The JSON --apply did the work.
    let r = mirror(&env, &["--apply", "--json"])?;
    r.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout)?;
    assert_eq!(v["copy"].as_array().map(Vec::len), Some(0), "{v}");
    assert_eq!(v["delete"].as_array().map(Vec::len), Some(0), "{v}");
    assert_eq!(v["metadata"].as_u64(), Some(0), "{v}");
    assert_mirrored(&env.source, &env.backup, &r)?;
    Ok(())
}

// ---------------------------------------------------------------- problems

#[test]
fn unreadable_src_file_is_reported_and_exits_1() -> TestResult {
    if !can_run_as_nobody() {
        return Ok(());
    }
    let env = TestEnv::new()?;
    chmod(env.root(), 0o777)?;
    env.write("ok.txt", "ok")?;
    env.write("sub/visible.txt", "visible")?;
    env.write("secret.txt", "first version")?;
    mirror_as_nobody(&env, &["--apply"])?.expect_code(0);
    // Now: a changed and a new file nobody can read, next to a change
    // that can be mirrored.
    env.write("secret.txt", "second version, longer")?;
    env.write("new-secret.txt", "never readable")?;
    env.write("ok.txt", "ok, changed")?;
    chmod(&env.src("secret.txt"), 0o000)?;
    chmod(&env.src("new-secret.txt"), 0o000)?;
    let r = mirror_as_nobody(&env, &["--apply"])?;
    r.expect_code(1);
    for name in ["secret.txt", "new-secret.txt"] {
        assert!(
            r.stdout.lines().any(|l| l.starts_with("error: ")
                && l.contains(name)
                && l.contains("ermission denied")),
            "an error line names {name}\n--- stdout\n{}\n--- stderr\n{}",
            r.stdout,
            r.stderr
        );
    }
    assert_eq!(
        fs::read(env.dst("ok.txt"))?,
        b"ok, changed",
        "the rest is mirrored"
    );
    assert_eq!(fs::read(env.dst("sub/visible.txt"))?, b"visible");
    assert_eq!(
        fs::read(env.dst("secret.txt"))?,
        b"first version",
        "the old copy stays when the new one cannot be read"
    );
    assert!(!env.dst("new-secret.txt").exists());
    let names: BTreeSet<String> = listing(&env.backup, false)?
        .keys()
        .map(|k| show(k))
        .collect();
    assert_eq!(
        names,
        set_of(&["ok.txt", "secret.txt", "sub", "sub/visible.txt"]),
        "no temp files left behind"
    );
    // Still a problem on the next run.
    mirror_as_nobody(&env, &["--apply"])?.expect_code(1);
    Ok(())
}

#[test]
fn unlistable_src_folder_does_not_empty_its_dest_copy() -> TestResult {
    if !can_run_as_nobody() {
        return Ok(());
    }
    let env = TestEnv::new()?;
    chmod(env.root(), 0o777)?;
    env.write("ok.txt", "ok")?;
    env.write("private/a.txt", "a")?;
    env.write("private/deeper/b.txt", "b")?;
    mirror_as_nobody(&env, &["--apply"])?.expect_code(0);
    chmod(&env.src("private"), 0o000)?;
    let r = mirror_as_nobody(&env, &["--apply"])?;
    r.expect_code(1);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("error: ") && l.contains("private")),
        "an error line names the folder\n{}",
        r.stdout
    );
    // What SRC holds below the folder is unknown, not absent: deleting the
    // DEST copies would lose data that may still exist in SRC (rsync skips
    // deletions after an I/O error for the same reason).
    assert_eq!(
        tagged(&r, "DELETE"),
        Vec::<String>::new(),
        "nothing below an unlistable SRC folder is deleted from DEST\n{}",
        r.stdout
    );
    assert_eq!(
        fs::read(env.dst("private/a.txt")).ok().as_deref(),
        Some(&b"a"[..])
    );
    assert_eq!(
        fs::read(env.dst("private/deeper/b.txt")).ok().as_deref(),
        Some(&b"b"[..])
    );
    Ok(())
}

/// The same with the SRC root itself unlistable: nothing in SRC is known
/// to be gone, so nothing in DEST is deleted. (Before, an issue on the
/// root protected only the root, and `--apply` emptied DEST.)
#[test]
fn unlistable_src_root_does_not_empty_dest() -> TestResult {
    if !can_run_as_nobody() {
        return Ok(());
    }
    let env = TestEnv::new()?;
    chmod(env.root(), 0o777)?;
    env.write("ok.txt", "ok")?;
    env.write("d/a.txt", "a")?;
    mirror_as_nobody(&env, &["--apply"])?.expect_code(0);
    chmod(&env.source, 0o000)?;
    let r = mirror_as_nobody(&env, &["--apply"]);
    chmod(&env.source, 0o755)?;
    let r = r?;
    r.expect_code(1);
    assert_eq!(
        tagged(&r, "DELETE"),
        Vec::<String>::new(),
        "nothing is deleted from DEST when SRC cannot be listed\n{}",
        r.stdout
    );
    assert_eq!(
        fs::read(env.dst("ok.txt")).ok().as_deref(),
        Some(&b"ok"[..])
    );
    assert_eq!(
        fs::read(env.dst("d/a.txt")).ok().as_deref(),
        Some(&b"a"[..])
    );
    Ok(())
}
