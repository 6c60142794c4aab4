//! SPEC §5 `restore`: files come back as independent copies with their
//! bytes, mode, owner, mtime (ns), symlink targets and empty directories;
//! snapshot selection by id prefix, `latest` or time; PATH selection; a
//! non-empty target only with `--overwrite`; `--dry-run` and `--json`;
//! missing or corrupt content is named and everything else restored; and a
//! hostile snapshot can never make restore write outside its target.

use crate::common::{fingerprint, listing, Lcg, Node, Res, Run, TestEnv, TestResult};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use trove::hash::hash_bytes;
use trove::id::{ObjectId, SnapshotId, TreeId};
use trove::local::LocalRepo;
use trove::model::{History, Leaf, Meta};
use trove::repo::snapshot::{self, SnapshotRecord, Summary};
use trove::repo::tree::{encode_tree, frame_tree, Node as TreeNode, TreeObject};

const NS: i64 = 1_000_000_000;

// ---------------------------------------------------------------------------
// Running trove

/// `trove --repo BACKUP ARGS…` with extra environment variables.
fn trove_with(env: &TestEnv, args: &[&OsStr], vars: &[(&str, &str)]) -> Res<Run> {
    let mut c = env.cmd()?;
    c.arg("--repo").arg(&env.backup).args(args);
    for (k, v) in vars {
        c.env(k, v);
    }
    let out = c.output()?;
    Ok(Run::from_output(&out, String::new()))
}

fn trove(env: &TestEnv, args: &[&str]) -> Res<Run> {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    trove_with(env, &args, &[])
}

/// `trove --repo BACKUP restore --target TARGET EXTRA…`.
fn restore(env: &TestEnv, target: &Path, extra: &[&str]) -> Res<Run> {
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("restore"),
        OsStr::new("--target"),
        target.as_os_str(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    trove_with(env, &args, &[])
}

/// An exit code (not a signal), not Rust's panic code 101, no panic message.
fn assert_no_panic(r: &Run, what: &str) {
    assert!(
        matches!(r.code, Some(0..=3)),
        "{what}: expected an exit code 0-3, got {:?}\n--- stdout\n{}\n--- stderr\n{}",
        r.code,
        r.stdout,
        r.stderr
    );
    assert!(
        !r.stderr.contains("panicked"),
        "{what}: trove panicked\n{}",
        r.stderr
    );
}

/// Exit code 1 or 2 (refused or problems), never success and never a panic.
fn assert_refused(r: &Run, what: &str) {
    assert!(
        matches!(r.code, Some(1) | Some(2)),
        "{what}: expected exit 1 or 2, got {:?}\n--- stdout\n{}\n--- stderr\n{}",
        r.code,
        r.stdout,
        r.stderr
    );
    assert!(
        !r.stderr.contains("panicked"),
        "{what}: trove panicked\n{}",
        r.stderr
    );
}

// ---------------------------------------------------------------------------
// Reading trees back with full metadata

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// Length and fingerprint of the bytes (the bytes themselves would make
    /// failure messages unreadable for large files).
    File(u64, u64),
    Dir,
    Symlink(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Stat {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
}

/// lstat plus contents of one path.
fn stat_of(p: &Path) -> Res<Stat> {
    let m = fs::symlink_metadata(p)?;
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink(fs::read_link(p)?.as_os_str().as_bytes().to_vec())
    } else if ft.is_file() {
        let (len, h) = fingerprint(&fs::read(p)?);
        Kind::File(len, h)
    } else {
        return Err(format!("unexpected file type at {}", p.display()).into());
    };
    Ok(Stat {
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime: (m.mtime(), m.mtime_nsec()),
    })
}

/// Every entry below `root` (not `root` itself) by relative path bytes.
fn stat_tree(root: &Path) -> Res<BTreeMap<Vec<u8>, Stat>> {
    fn walk(dir: &Path, rel: &[u8], out: &mut BTreeMap<Vec<u8>, Stat>) -> Res<()> {
        for ent in fs::read_dir(dir)? {
            let ent = ent?;
            let mut r = rel.to_vec();
            if !r.is_empty() {
                r.push(b'/');
            }
            r.extend_from_slice(ent.file_name().as_bytes());
            let p = ent.path();
            let st = stat_of(&p)?;
            let is_dir = st.kind == Kind::Dir;
            out.insert(r.clone(), st);
            if is_dir {
                walk(&p, &r, out)?;
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(root, b"", &mut out)?;
    Ok(out)
}

fn esc(p: &[u8]) -> String {
    p.escape_ascii().to_string()
}

/// Panics with every difference between two trees, one per line.
fn assert_same_tree(want: &BTreeMap<Vec<u8>, Stat>, got: &BTreeMap<Vec<u8>, Stat>, what: &str) {
    let mut diffs = Vec::new();
    for (p, w) in want {
        match got.get(p) {
            None => diffs.push(format!("missing  {}: {w:?}", esc(p))),
            Some(g) if g != w => diffs.push(format!(
                "differs  {}:\n   want {w:?}\n    got {g:?}",
                esc(p)
            )),
            Some(_) => {}
        }
    }
    for (p, g) in got {
        if !want.contains_key(p) {
            diffs.push(format!("extra    {}: {g:?}", esc(p)));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} differences\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

/// Every regular file below `root` has exactly one link: restore makes
/// copies, never hardlinks into the store.
fn assert_single_links(root: &Path) -> TestResult {
    let mut linked = Vec::new();
    for (rel, st) in stat_tree(root)? {
        if matches!(st.kind, Kind::File(..)) {
            let p = root.join(OsStr::from_bytes(&rel));
            let n = fs::symlink_metadata(&p)?.nlink();
            if n != 1 {
                linked.push(format!("{} has {n} links", esc(&rel)));
            }
        }
    }
    assert!(
        linked.is_empty(),
        "restored files are hardlinked: {linked:?}"
    );
    Ok(())
}

/// The subset of a tree whose paths satisfy `keep`.
fn only(tree: &BTreeMap<Vec<u8>, Stat>, keep: impl Fn(&[u8]) -> bool) -> BTreeMap<Vec<u8>, Stat> {
    tree.iter()
        .filter(|(p, _)| keep(p))
        .map(|(p, s)| (p.clone(), s.clone()))
        .collect()
}

fn set_mtime(p: &Path, secs: i64, nanos: u32) -> TestResult {
    let t = if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nanos.into())
    };
    // Opening read-only is enough for root (and works for directories).
    fs::File::open(p)?.set_times(fs::FileTimes::new().set_modified(t))?;
    Ok(())
}

/// A symlink's own mtime, with GNU touch (std cannot set it).
fn set_symlink_mtime(p: &Path, secs: i64, nanos: u32) -> TestResult {
    let total = i128::from(secs) * i128::from(NS) + i128::from(nanos);
    let sign = if total < 0 { "-" } else { "" };
    let a = total.unsigned_abs();
    let spec = format!("@{sign}{}.{:09}", a / NS as u128, a % NS as u128);
    let st = std::process::Command::new("touch")
        .arg("-h")
        .arg("-d")
        .arg(&spec)
        .arg(p)
        .status()?;
    if !st.success() {
        return Err(format!("touch -h -d {spec} {} failed", p.display()).into());
    }
    Ok(())
}

fn chmod(p: &Path, mode: u32) -> TestResult {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn now_ns() -> Res<i64> {
    Ok(i64::try_from(
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos(),
    )?)
}

/// The `field` of a JSON value as a string.
fn json_str<'a>(v: &'a serde_json::Value, field: &str) -> Res<&'a str> {
    v[field]
        .as_str()
        .ok_or_else(|| format!("no string field {field} in {v}").into())
}

/// The hash `trove ls --json` records for `path` in the latest snapshot.
fn ls_hash(env: &TestEnv, path: &str) -> Res<String> {
    let r = trove(env, &["ls", "--json"])?;
    r.expect_code(0);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&r.stdout)?;
    for row in &rows {
        if row["path"] == path {
            return Ok(json_str(row, "hash")?.to_string());
        }
    }
    Err(format!("{path} not in `trove ls --json`: {}", r.stdout).into())
}

fn object_file(env: &TestEnv, hash: &str) -> PathBuf {
    env.backup
        .join(".trove")
        .join("objects")
        .join(&hash[..2])
        .join(hash)
}

// ---------------------------------------------------------------------------
// 1. Random trees round-trip exactly

#[derive(Clone, Debug)]
struct Attrs {
    mode: u32,
    owner: (u32, u32),
    mtime: (i64, u32),
}

#[derive(Clone, Debug)]
enum Content {
    Empty,
    /// One of a few fixed contents, so duplicates are common.
    Shared(u8),
    Random {
        seed: u64,
        len: usize,
    },
}

impl Content {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Content::Empty => Vec::new(),
            Content::Shared(k) => format!("shared content number {k}\n").into_bytes(),
            Content::Random { seed, len } => Lcg(*seed).bytes(*len),
        }
    }
}

#[derive(Clone, Debug)]
enum Gen {
    File(Content, Attrs),
    Link(Vec<u8>, Attrs),
    Dir(BTreeMap<Vec<u8>, Gen>, Attrs),
}

const FILE_MODES: &[u32] = &[
    0o644, 0o600, 0o755, 0o444, 0o400, 0o000, 0o640, 0o4755, 0o2711, 0o1604,
];
const DIR_MODES: &[u32] = &[0o755, 0o700, 0o555, 0o750, 0o500, 0o1777, 0o2775];
const OWNERS: &[(u32, u32)] = &[(0, 0), (1000, 1000), (4242, 777)];

fn attrs(modes: &'static [u32]) -> impl Strategy<Value = Attrs> {
    (
        prop::sample::select(modes),
        prop::sample::select(OWNERS),
        // 1906 to 2100, any nanosecond.
        -2_000_000_000i64..4_102_444_800,
        0u32..1_000_000_000,
    )
        .prop_map(|(mode, owner, s, n)| Attrs {
            mode,
            owner,
            mtime: (s, n),
        })
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    let odd: Vec<Vec<u8>> = [
        &b"-rf"[..],
        b"--help",
        b"-",
        b"with space",
        b" leading space",
        b"trailing space ",
        b"new\nline",
        b"tab\there",
        b"\xff",
        b"\xff\xfe non-utf8",
        b"caf\xc3\xa9",
        b"cut\xc3",
        b".hidden",
        b"...",
        b"back\\slash",
        b"glob*?[x]",
        b"versions",
        b"_deleted",
        b"_duplicates",
        b".trove",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect();
    prop_oneof![
        3 => prop::sample::select(odd),
        6 => prop::collection::vec(1u8..=255, 1..12)
            .prop_map(|v| v.into_iter().map(|b| if b == b'/' { b'_' } else { b }).collect::<Vec<u8>>())
            .prop_filter("not . or ..", |v| v != b"." && v != b".."),
        1 => Just(vec![b'L'; 255]),
    ]
}

fn link_target() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"/nonexistent/trove-restore-test/dangling".to_vec()),
        Just(b"/tmp".to_vec()),
        Just(b"../up/and/over".to_vec()),
        Just(b".".to_vec()),
        Just(b"-rf".to_vec()),
        prop::collection::vec(1u8..=255, 1..40),
    ]
}

fn content() -> impl Strategy<Value = Content> {
    prop_oneof![
        2 => Just(Content::Empty),
        3 => (0u8..3).prop_map(Content::Shared),
        14 => (any::<u64>(), 1usize..5000).prop_map(|(seed, len)| Content::Random { seed, len }),
        1 => (any::<u64>(), 1_000_000usize..2_500_000)
            .prop_map(|(seed, len)| Content::Random { seed, len }),
    ]
}

fn node() -> impl Strategy<Value = Gen> {
    let leaf = prop_oneof![
        5 => (content(), attrs(FILE_MODES)).prop_map(|(c, a)| Gen::File(c, a)),
        2 => (link_target(), attrs(&[0o777])).prop_map(|(t, a)| Gen::Link(t, a)),
        1 => attrs(DIR_MODES).prop_map(|a| Gen::Dir(BTreeMap::new(), a)),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        (
            prop::collection::btree_map(name(), inner, 0..6),
            attrs(DIR_MODES),
        )
            .prop_map(|(kids, a)| Gen::Dir(kids, a))
    })
}

/// The top-level entries and the source directory's own attributes.
fn tree() -> impl Strategy<Value = (BTreeMap<Vec<u8>, Gen>, Attrs)> {
    (
        prop::collection::btree_map(name(), node(), 1..8),
        attrs(&[0o755, 0o700, 0o555]),
    )
}

/// Entries every generated tree has: a read-only directory with files (and
/// a read-only directory inside it), an empty directory, duplicate and
/// empty files, dangling, relative and absolute symlinks.
fn add_fixed_entries(top: &mut BTreeMap<Vec<u8>, Gen>) {
    let at = |mode: u32, n: u32| Attrs {
        mode,
        owner: (0, 0),
        mtime: (1_234_567_890 + i64::from(n), 123_456_789 + n),
    };
    let mut inner = BTreeMap::new();
    inner.insert(
        b"deep.bin".to_vec(),
        Gen::File(Content::Random { seed: 7, len: 777 }, at(0o600, 1)),
    );
    inner.insert(
        b"up".to_vec(),
        Gen::Link(b"../inner.txt".to_vec(), at(0o777, 2)),
    );
    let mut ro = BTreeMap::new();
    ro.insert(
        b"inner.txt".to_vec(),
        Gen::File(Content::Shared(0), at(0o444, 3)),
    );
    ro.insert(b"empty".to_vec(), Gen::File(Content::Empty, at(0o644, 4)));
    ro.insert(b"ro-sub".to_vec(), Gen::Dir(inner, at(0o555, 5)));
    top.insert(b"fixed-ro".to_vec(), Gen::Dir(ro, at(0o555, 6)));
    top.insert(
        b"fixed-empty-dir".to_vec(),
        Gen::Dir(BTreeMap::new(), at(0o700, 7)),
    );
    top.insert(
        b"fixed-dangling".to_vec(),
        Gen::Link(b"/nonexistent/trove-restore-test/x".to_vec(), at(0o777, 8)),
    );
    top.insert(
        b"fixed-rel".to_vec(),
        Gen::Link(b"fixed-ro/inner.txt".to_vec(), at(0o777, 9)),
    );
    top.insert(
        b"fixed-abs".to_vec(),
        Gen::Link(b"/tmp".to_vec(), at(0o777, 10)),
    );
    top.insert(
        b"fixed-dup-a".to_vec(),
        Gen::File(Content::Shared(1), at(0o644, 11)),
    );
    top.insert(
        b"fixed-dup-b".to_vec(),
        Gen::File(Content::Shared(1), at(0o755, 12)),
    );
    top.insert(
        b"fixed-empty-a".to_vec(),
        Gen::File(Content::Empty, at(0o600, 13)),
    );
    top.insert(
        b"fixed-empty-b".to_vec(),
        Gen::File(Content::Empty, at(0o444, 14)),
    );
}

/// Owner, then mode (chown clears set-id bits), then mtime.
fn apply_attrs(p: &Path, a: &Attrs) -> TestResult {
    std::os::unix::fs::lchown(p, Some(a.owner.0), Some(a.owner.1))?;
    chmod(p, a.mode)?;
    set_mtime(p, a.mtime.0, a.mtime.1)
}

/// Create `children` in `dir`; directories get their attributes after
/// their contents, so neither their mtime nor a read-only mode gets in the way.
fn build(dir: &Path, children: &BTreeMap<Vec<u8>, Gen>) -> TestResult {
    for (name, g) in children {
        let p = dir.join(OsStr::from_bytes(name));
        match g {
            Gen::File(c, a) => {
                fs::write(&p, c.bytes())?;
                apply_attrs(&p, a)?;
            }
            Gen::Link(t, a) => {
                std::os::unix::fs::symlink(OsStr::from_bytes(t), &p)?;
                std::os::unix::fs::lchown(&p, Some(a.owner.0), Some(a.owner.1))?;
                set_symlink_mtime(&p, a.mtime.0, a.mtime.1)?;
            }
            Gen::Dir(kids, a) => {
                fs::create_dir(&p)?;
                build(&p, kids)?;
                apply_attrs(&p, a)?;
            }
        }
    }
    Ok(())
}

fn round_trip(children: &BTreeMap<Vec<u8>, Gen>, root: &Attrs) -> TestResult {
    let env = TestEnv::new()?;
    build(&env.source, children)?;
    apply_attrs(&env.source, root)?;
    let want = stat_tree(&env.source)?;
    let want_root = stat_of(&env.source)?;
    env.backup_ok(&[])?;
    let target = env.root().join("restored");
    let r = restore(&env, &target, &[])?;
    r.expect_code(0);
    assert_same_tree(&want, &stat_tree(&target)?, "restored tree vs source");
    assert_eq!(
        stat_of(&target)?,
        want_root,
        "the target directory gets the source directory's mode, owner and mtime"
    );
    assert_single_links(&target)?;
    assert_eq!(
        stat_tree(&env.source)?,
        want,
        "backup and restore leave the source alone"
    );
    Ok(())
}

#[test]
fn random_trees_restore_exactly() -> TestResult {
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 12,
        max_shrink_iters: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&tree(), |(mut top, root)| {
            add_fixed_entries(&mut top);
            round_trip(&top, &root).map_err(|e| TestCaseError::fail(e.to_string()))
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

// ---------------------------------------------------------------------------
// 2. Snapshot selection

#[test]
fn snapshot_is_chosen_by_id_prefix_latest_or_time() -> TestResult {
    let env = TestEnv::new()?;
    env.write("f.txt", "old content\n")?;
    env.write("keep.txt", "unchanged\n")?;
    set_mtime(&env.src("f.txt"), 1_500_000_000, 111_222_333)?;
    let old_f = stat_of(&env.src("f.txt"))?;
    env.backup_ok(&[])?;
    let first = env.snapshots()?;
    assert_eq!(first.len(), 1);
    let t1 = first[0]["time_ns"].as_i64().ok_or("time_ns")?;
    // A whole second after the first snapshot and before the second, so
    // that a time given to the second also selects exactly.
    let boundary = (t1.div_euclid(NS) + 1) * NS;
    while now_ns()? <= boundary + 20_000_000 {
        std::thread::sleep(Duration::from_millis(20));
    }
    env.write("f.txt", "new content, longer\n")?;
    env.backup_ok(&[])?;
    let snaps = env.snapshots()?;
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    let (id1, id2) = (
        json_str(&snaps[0], "full_id")?,
        json_str(&snaps[1], "full_id")?,
    );
    assert_eq!(id1, json_str(&first[0], "full_id")?, "oldest first");
    let t2 = snaps[1]["time_ns"].as_i64().ok_or("time_ns")?;
    assert!(t1 <= boundary && boundary < t2, "{t1} {boundary} {t2}");

    let check = |target: &Path, want_f: &[u8], what: &str| -> TestResult {
        let mut want = BTreeMap::new();
        want.insert(b"f.txt".to_vec(), Node::File(want_f.to_vec()));
        want.insert(b"keep.txt".to_vec(), Node::File(b"unchanged\n".to_vec()));
        assert_eq!(listing(target, false)?, want, "{what}");
        Ok(())
    };

    // Shortest prefix (at least 4 digits) that names only the first snapshot.
    let k = (1..=64)
        .find(|&k| id1[..k] != id2[..k])
        .ok_or("two snapshots with one id")?
        .max(4);
    let t = env.root().join("by-prefix");
    restore(&env, &t, &["--snapshot", &id1[..k]])?.expect_code(0);
    check(&t, b"old content\n", "id prefix of the first snapshot")?;
    assert_eq!(
        stat_of(&t.join("f.txt"))?,
        old_f,
        "the old version with its own mtime and mode"
    );

    let t = env.root().join("latest");
    restore(&env, &t, &["--snapshot", "latest"])?.expect_code(0);
    check(&t, b"new content, longer\n", "latest")?;
    let t = env.root().join("default");
    restore(&env, &t, &[])?.expect_code(0);
    check(&t, b"new content, longer\n", "no --snapshot means latest")?;

    // Local time, seconds precision, in a zone that is not UTC.
    let tz = jiff::tz::TimeZone::fixed(jiff::tz::Offset::from_seconds(5 * 3600 + 1800)?);
    let local = jiff::Timestamp::from_nanosecond(i128::from(boundary))?
        .to_zoned(tz)
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string();
    let t = env.root().join("by-local-time");
    let args: Vec<&OsStr> = ["restore", "--snapshot", local.as_str(), "--target"]
        .into_iter()
        .map(OsStr::new)
        .chain([t.as_os_str()])
        .collect();
    trove_with(&env, &args, &[("TZ", "IST-5:30")])?.expect_code(0);
    check(
        &t,
        b"old content\n",
        &format!("local time {local} (UTC+5:30)"),
    )?;

    // RFC 3339: whole seconds in UTC, with an offset, and with nanoseconds.
    let boundary_ts = jiff::Timestamp::from_nanosecond(i128::from(boundary))?;
    let utc = boundary_ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let offset = boundary_ts
        .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::Offset::from_seconds(
            -7 * 3600,
        )?))
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string();
    let mid = jiff::Timestamp::from_nanosecond(i128::from(t1 + (t2 - t1) / 2))?.to_string();
    for (i, spec) in [utc, offset, mid].iter().enumerate() {
        let t = env.root().join(format!("by-rfc3339-{i}"));
        restore(&env, &t, &["--snapshot", spec])?.expect_code(0);
        check(&t, b"old content\n", &format!("time {spec}"))?;
    }
    // A time exactly at the second snapshot selects it ("at or before").
    let exact = jiff::Timestamp::from_nanosecond(i128::from(t2))?.to_string();
    let t = env.root().join("by-exact-time");
    restore(&env, &t, &["--snapshot", &exact])?.expect_code(0);
    check(&t, b"new content, longer\n", &format!("time {exact}"))?;

    // Before every snapshot, or an id nobody has: usage error, nothing made.
    let unknown_digit = "0123456789abcdef"
        .chars()
        .find(|c| !id1.starts_with(*c) && !id2.starts_with(*c))
        .ok_or("no free hex digit")?;
    let unknown = format!("{unknown_digit}{unknown_digit}{unknown_digit}{unknown_digit}");
    for spec in ["2000-01-01T00:00:00Z", unknown.as_str()] {
        let t = env.root().join("none");
        let r = restore(&env, &t, &["--snapshot", spec])?;
        r.expect_code(2);
        assert!(
            r.stderr.contains(spec),
            "the message names {spec}: {}",
            r.stderr
        );
        assert!(!t.exists(), "no target created for {spec}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// 3. PATH arguments

fn path_source(env: &TestEnv) -> TestResult {
    env.write("top.txt", "top")?;
    env.write("sub/f.txt", "f bytes")?;
    env.write("sub/g.txt", "g bytes")?;
    env.write("sub/deep/h.txt", "h bytes")?;
    fs::create_dir(env.src("sub/empty"))?;
    std::os::unix::fs::symlink("f.txt", env.src("sub/link"))?;
    env.write("sub.txt", "not below sub")?;
    env.write("sub2/y.txt", "not below sub either")?;
    env.write("other/x.txt", "x")?;
    chmod(&env.src("sub/f.txt"), 0o640)?;
    set_mtime(&env.src("sub/f.txt"), 1_600_000_000, 5)?;
    set_mtime(&env.src("sub/deep"), 1_600_000_001, 6)?;
    chmod(&env.src("sub"), 0o750)?;
    set_mtime(&env.src("sub"), 1_600_000_002, 7)?;
    env.backup_ok(&[])?;
    Ok(())
}

fn under(prefix: &'static [u8]) -> impl Fn(&[u8]) -> bool {
    move |p: &[u8]| p == prefix || (p.starts_with(prefix) && p.get(prefix.len()) == Some(&b'/'))
}

#[test]
fn path_arguments_restore_exactly_those_paths() -> TestResult {
    let env = TestEnv::new()?;
    path_source(&env)?;
    let src = stat_tree(&env.source)?;

    // One file: it and its parent directory (with the parent's metadata).
    let t = env.root().join("one-file");
    restore(&env, &t, &["sub/f.txt"])?.expect_code(0);
    assert_same_tree(
        &only(&src, |p| p == b"sub" || p == b"sub/f.txt"),
        &stat_tree(&t)?,
        "restore sub/f.txt",
    );

    // A directory: its whole subtree, and not sub.txt or sub2/.
    for (i, arg) in ["sub", "sub/"].iter().enumerate() {
        let t = env.root().join(format!("subtree-{i}"));
        restore(&env, &t, &[arg])?.expect_code(0);
        assert_same_tree(
            &only(&src, under(b"sub")),
            &stat_tree(&t)?,
            &format!("restore {arg}"),
        );
        assert_single_links(&t)?;
    }

    // Several paths, nested parents created.
    let t = env.root().join("several");
    restore(&env, &t, &["sub/deep/h.txt", "top.txt"])?.expect_code(0);
    assert_same_tree(
        &only(&src, |p| {
            [&b"sub"[..], b"sub/deep", b"sub/deep/h.txt", b"top.txt"].contains(&p)
        }),
        &stat_tree(&t)?,
        "restore sub/deep/h.txt top.txt",
    );

    // Not in the snapshot: exit 2 naming it, nothing created.
    let t = env.root().join("absent");
    let r = restore(&env, &t, &["sub/f.txt", "nope/missing.txt"])?;
    r.expect_code(2);
    assert!(
        r.stderr.contains("nope/missing.txt"),
        "the message names the path: {}",
        r.stderr
    );
    assert!(!t.exists(), "nothing restored when a PATH is wrong");

    // `..` (and `.`) in a PATH: exit 2 naming it, nothing created.
    for bad in ["sub/../top.txt", "../etc/passwd", "..", "sub/./f.txt"] {
        let r = restore(&env, &t, &[bad])?;
        r.expect_code(2);
        assert!(
            r.stderr.contains(bad),
            "the message names {bad}: {}",
            r.stderr
        );
        assert!(!t.exists(), "nothing created for {bad}");
    }
    assert!(
        !env.root().join("etc").exists() && !env.root().join("top.txt").exists(),
        "nothing restored next to the target"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// 4. Non-empty target and --overwrite

#[test]
fn non_empty_target_needs_overwrite_which_replaces_only_snapshot_paths() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", "snapshot a")?;
    env.write("sub/b.txt", "snapshot b")?;
    env.write("sub/c.txt", "snapshot c")?;
    std::os::unix::fs::symlink("a.txt", env.src("link"))?;
    chmod(&env.src("a.txt"), 0o640)?;
    set_mtime(&env.src("a.txt"), 1_000_000_000, 999_999_999)?;
    env.backup_ok(&[])?;
    let src = stat_tree(&env.source)?;

    // The target already has: a file of its own, a read-only a.txt that is
    // a hardlink to a file outside, sub/b.txt as a symlink to a file
    // outside, a file of its own in sub/, and a regular file where the
    // snapshot has a symlink.
    let t = env.root().join("target");
    fs::create_dir_all(t.join("sub"))?;
    fs::write(t.join("keep.txt"), "mine")?;
    let outside_hard = env.root().join("outside-hardlinked.txt");
    fs::write(&outside_hard, "stale a")?;
    fs::hard_link(&outside_hard, t.join("a.txt"))?;
    chmod(&t.join("a.txt"), 0o444)?;
    let outside_link = env.root().join("outside-linked.txt");
    fs::write(&outside_link, "outside")?;
    std::os::unix::fs::symlink(&outside_link, t.join("sub/b.txt"))?;
    fs::write(t.join("sub/mine.txt"), "also mine")?;
    fs::write(t.join("link"), "a file where a symlink goes")?;
    let before = stat_tree(&t)?;

    let r = restore(&env, &t, &[])?;
    r.expect_code(2);
    assert!(
        r.stderr.contains("--overwrite") && r.stderr.contains(&t.display().to_string()),
        "the refusal names the target and --overwrite: {}",
        r.stderr
    );
    assert_same_tree(
        &before,
        &stat_tree(&t)?,
        "a refused restore leaves the target alone",
    );

    let r = restore(&env, &t, &["--overwrite"])?;
    r.expect_code(0);
    let got = stat_tree(&t)?;
    assert_same_tree(
        &src,
        &only(&got, |p| p != b"keep.txt" && p != b"sub/mine.txt"),
        "snapshot entries replaced",
    );
    assert_eq!(
        got.get(&b"keep.txt"[..]),
        before.get(&b"keep.txt"[..]),
        "keep.txt left alone"
    );
    assert_eq!(
        got.get(&b"sub/mine.txt"[..]),
        before.get(&b"sub/mine.txt"[..]),
        "sub/mine.txt left alone"
    );
    assert_eq!(
        fs::read(&outside_hard)?,
        b"stale a",
        "a.txt was replaced, not written through its hardlink"
    );
    assert_eq!(
        fs::read(&outside_link)?,
        b"outside",
        "sub/b.txt was replaced, not written through the symlink"
    );
    assert_single_links(&t)?;
    Ok(())
}

#[test]
fn overwrite_never_replaces_a_directory_and_bad_targets_are_refused() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a.txt", "snapshot a")?;
    env.write("sub/c.txt", "snapshot c")?;
    env.backup_ok(&[])?;

    // A directory where the snapshot has a file: reported, kept, the rest
    // restored.
    let t = env.root().join("target");
    fs::create_dir_all(t.join("a.txt"))?;
    fs::write(t.join("a.txt/inside"), "user data")?;
    let r = restore(&env, &t, &["--overwrite"])?;
    r.expect_code(1);
    assert!(
        r.stdout.lines().any(|l| l.starts_with("error: a.txt: ")),
        "the problem names a.txt:\n{}",
        r.stdout
    );
    assert_eq!(fs::read(t.join("a.txt/inside"))?, b"user data");
    assert_eq!(fs::read(t.join("sub/c.txt"))?, b"snapshot c");

    // A target that is a file, or inside the repository: usage errors.
    let file = env.root().join("a-file");
    fs::write(&file, "x")?;
    let r = restore(&env, &file, &["--overwrite"])?;
    r.expect_code(2);
    assert!(r.stderr.contains("not a directory"), "{}", r.stderr);
    assert_eq!(fs::read(&file)?, b"x");
    let inside = env.backup.join(".trove").join("restored-here");
    let r = restore(&env, &inside, &[])?;
    r.expect_code(2);
    assert!(r.stderr.contains(".trove"), "{}", r.stderr);
    assert!(!inside.exists(), "nothing restored into the repository");
    Ok(())
}

// ---------------------------------------------------------------------------
// 5. --dry-run and --json

fn small_source(env: &TestEnv) -> TestResult {
    env.write("a.txt", "alpha")?;
    env.write("sub/b.txt", "bee")?;
    env.write("e.txt", "")?;
    fs::create_dir(env.src("sub/empty"))?;
    std::os::unix::fs::symlink("sub/b.txt", env.src("link"))?;
    env.backup_ok(&[])?;
    Ok(())
}

const SMALL_PATHS: [&str; 6] = ["a.txt", "e.txt", "link", "sub", "sub/b.txt", "sub/empty"];

fn would_restore(stdout: &str) -> BTreeSet<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("would restore: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn dry_run_writes_nothing_and_lists_every_path() -> TestResult {
    let env = TestEnv::new()?;
    small_source(&env)?;
    let all: BTreeSet<String> = SMALL_PATHS.iter().map(|s| s.to_string()).collect();

    let t = env.root().join("new-target");
    let r = restore(&env, &t, &["--dry-run"])?;
    r.expect_code(0);
    assert_eq!(would_restore(&r.stdout), all, "{}", r.stdout);
    assert!(!t.exists(), "a dry run does not even create the target");

    let empty = env.root().join("empty-target");
    fs::create_dir(&empty)?;
    restore(&env, &empty, &["--dry-run"])?.expect_code(0);
    assert_eq!(
        fs::read_dir(&empty)?.count(),
        0,
        "an existing target stays empty"
    );

    let r = restore(&env, &t, &["--dry-run", "--json"])?;
    r.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout)?;
    assert_eq!(v["dry_run"], true);
    let listed: BTreeSet<String> = v["would_write"]
        .as_array()
        .ok_or("would_write")?
        .iter()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect();
    assert_eq!(listed, all);
    assert!(!t.exists());

    let r = restore(&env, &t, &["--dry-run", "sub"])?;
    r.expect_code(0);
    let sub: BTreeSet<String> = ["sub", "sub/b.txt", "sub/empty"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(would_restore(&r.stdout), sub, "{}", r.stdout);
    assert!(!t.exists());
    Ok(())
}

#[test]
fn json_report_carries_counts() -> TestResult {
    let env = TestEnv::new()?;
    small_source(&env)?;
    let snaps = env.snapshots()?;
    let t = env.root().join("target");
    let r = restore(&env, &t, &["--json"])?;
    r.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout)?;
    assert_eq!(v["files"], 3, "{v}");
    assert_eq!(v["dirs"], 2, "{v}");
    assert_eq!(v["symlinks"], 1, "{v}");
    assert_eq!(v["bytes"], 8, "{v}");
    assert_eq!(v["dry_run"], false, "{v}");
    assert_eq!(v["missing"], serde_json::json!([]), "{v}");
    assert_eq!(v["problems"], serde_json::json!([]), "{v}");
    assert_eq!(json_str(&v, "snapshot")?, json_str(&snaps[0], "id")?);
    assert_same_tree(&stat_tree(&env.source)?, &stat_tree(&t)?, "json restore");

    // -q: nothing on stdout when all went well.
    let t = env.root().join("quiet");
    let r = restore(&env, &t, &["-q"])?;
    r.expect_code(0);
    assert_eq!(r.stdout, "", "-q prints nothing");
    assert_same_tree(&stat_tree(&env.source)?, &stat_tree(&t)?, "quiet restore");
    Ok(())
}

// ---------------------------------------------------------------------------
// 6, 7. Missing and corrupt content

const BRAVO: &[u8] = b"bravo bytes, stored once for two paths\n";

/// Returns the object file of BRAVO (shared by b.txt and sub/b_copy.txt).
fn damage_source(env: &TestEnv) -> Res<PathBuf> {
    env.write("a.txt", "alpha\n")?;
    env.write("b.txt", BRAVO)?;
    env.write("sub/b_copy.txt", BRAVO)?;
    env.write("sub/c.txt", "charlie\n")?;
    env.write("empty.txt", "")?;
    std::os::unix::fs::symlink("a.txt", env.src("link"))?;
    chmod(&env.src("sub/c.txt"), 0o600)?;
    set_mtime(&env.src("sub/c.txt"), 1_700_000_000, 42)?;
    env.backup_ok(&[])?;
    let hash = ls_hash(env, "b.txt")?;
    assert_eq!(
        hash,
        blake3::hash(BRAVO).to_hex().as_str(),
        "objects are named by BLAKE3"
    );
    assert_eq!(ls_hash(env, "sub/b_copy.txt")?, hash);
    let obj = object_file(env, &hash);
    assert_eq!(fs::read(&obj)?, BRAVO, "{}", obj.display());
    Ok(obj)
}

fn without_bravo(env: &TestEnv) -> Res<BTreeMap<Vec<u8>, Stat>> {
    Ok(only(&stat_tree(&env.source)?, |p| {
        p != b"b.txt" && p != b"sub/b_copy.txt"
    }))
}

#[test]
fn missing_content_is_named_and_everything_else_restored() -> TestResult {
    let env = TestEnv::new()?;
    let obj = damage_source(&env)?;
    fs::remove_file(&obj)?;

    let t = env.root().join("target");
    let r = restore(&env, &t, &[])?;
    r.expect_code(1);
    // The latest snapshot's content is never removed by retention: a
    // missing object there is damage, named as such (issue 13).
    for p in ["b.txt", "sub/b_copy.txt"] {
        assert!(
            r.stdout
                .lines()
                .any(|l| l.starts_with(&format!("error: {p}: object "))
                    && l.contains("is missing")
                    && !l.contains("retention removed")),
            "stdout names {p} as missing:\n{}",
            r.stdout
        );
    }
    assert!(r.stdout.contains("2 paths not restored"), "{}", r.stdout);
    assert_same_tree(
        &without_bravo(&env)?,
        &stat_tree(&t)?,
        "all but the missing content",
    );
    assert_single_links(&t)?;

    // A dry run already knows.
    let r = restore(&env, &env.root().join("dry"), &["--dry-run"])?;
    r.expect_code(1);
    assert!(r.stdout.contains("error: b.txt: object "), "{}", r.stdout);
    assert!(!would_restore(&r.stdout).contains("b.txt"), "{}", r.stdout);

    let r = restore(&env, &env.root().join("json"), &["--json"])?;
    r.expect_code(1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout)?;
    assert_eq!(v["missing"], serde_json::json!([]), "{v}");
    let damaged: Vec<&str> = v["problems"]
        .as_array()
        .ok_or("no problems list")?
        .iter()
        .filter_map(|p| p["path"].as_str())
        .collect();
    assert_eq!(damaged, ["b.txt", "sub/b_copy.txt"], "{v}");
    Ok(())
}

#[test]
fn corrupt_object_is_not_restored_and_named() -> TestResult {
    let env = TestEnv::new()?;
    let obj = damage_source(&env)?;
    let mode = fs::metadata(&obj)?.mode() & 0o7777;
    assert_eq!(mode & 0o222, 0, "objects are read-only");
    chmod(&obj, 0o600)?;
    let mut bytes = fs::read(&obj)?;
    bytes[3] ^= 0x20;
    fs::write(&obj, &bytes)?;
    chmod(&obj, mode)?;

    let t = env.root().join("target");
    let r = restore(&env, &t, &[])?;
    r.expect_code(1);
    for p in ["b.txt", "sub/b_copy.txt"] {
        assert!(
            r.stdout
                .lines()
                .any(|l| l.starts_with(&format!("error: {p}: "))),
            "stdout names {p}:\n{}",
            r.stdout
        );
        assert!(
            fs::symlink_metadata(t.join(p)).is_err(),
            "{p} is not left in the target with wrong bytes"
        );
    }
    assert_same_tree(
        &without_bravo(&env)?,
        &stat_tree(&t)?,
        "all but the corrupt content",
    );

    // With --overwrite, what the target had there is kept, not replaced by
    // wrong bytes, and no temporary file is left behind.
    let t2 = env.root().join("overwrite");
    fs::create_dir(&t2)?;
    fs::write(t2.join("b.txt"), "previous")?;
    let r = restore(&env, &t2, &["--overwrite"])?;
    r.expect_code(1);
    assert!(r.stdout.contains("error: b.txt: "), "{}", r.stdout);
    let mut want: BTreeMap<Vec<u8>, Node> = listing(&env.source, false)?;
    want.remove(&b"sub/b_copy.txt"[..]);
    want.insert(b"b.txt".to_vec(), Node::File(b"previous".to_vec()));
    assert_eq!(listing(&t2, false)?, want);
    Ok(())
}

// ---------------------------------------------------------------------------
// 8. Hostile snapshots

const PAYLOAD: &[u8] = b"HOSTILE PAYLOAD\n";
const ESCAPED: &str = "escaped-payload";

struct Hostile {
    env: TestEnv,
    repo: LocalRepo,
    payload: ObjectId,
    /// A directory outside the target that must stay empty.
    outside: PathBuf,
    /// Three levels below the temp root, so `..` escapes stay inside it.
    target: PathBuf,
    first: SnapshotId,
}

fn hostile_env() -> Res<Hostile> {
    let env = TestEnv::new()?;
    env.write("seed.txt", PAYLOAD)?;
    env.backup_ok(&[])?;
    let repo = LocalRepo::open(&env.backup)?;
    let payload = ObjectId(hash_bytes(repo.algo(), PAYLOAD));
    assert!(
        repo.object_path(&payload).is_file(),
        "the payload is stored"
    );
    let first = snapshot::latest(&repo)?.ok_or("no snapshot")?.id;
    let outside = env.root().join("outside");
    fs::create_dir(&outside)?;
    let target = env.root().join("t1").join("t2").join("target");
    fs::create_dir_all(target.parent().ok_or("parent")?)?;
    Ok(Hostile {
        env,
        repo,
        payload,
        outside,
        target,
        first,
    })
}

fn meta(mode: u32) -> Meta {
    Meta {
        mode,
        uid: 0,
        gid: 0,
        mtime_ns: 1_600_000_000 * NS,
        xattrs: Default::default(),
    }
}

impl Hostile {
    fn file(&self) -> Leaf {
        Leaf::File {
            size: PAYLOAD.len() as u64,
            id: self.payload,
            dup: false,
            meta: meta(0o644),
            ext: Default::default(),
        }
    }

    fn put<L: serde::Serialize, D: serde::Serialize>(&self, t: &TreeObject<L, D>) -> Res<TreeId> {
        let payload = encode_tree(t)?;
        let id = TreeId(hash_bytes(self.repo.algo(), &payload));
        // Through a write session, as trove stores a tree (in a pack).
        let w = self.repo.writer();
        let framed = frame_tree(&payload)?;
        trove::repo::RepoWrite::put_with(&w, trove::repo::StoreKind::Tree, id.0, &mut || {
            Ok(framed.clone())
        })?;
        trove::repo::RepoWrite::commit(&w)?;
        Ok(id)
    }

    /// A tree holding one node.
    fn tree(&self, name: &[u8], leaf: Option<Leaf>, dir: Option<TreeId>) -> Res<TreeId> {
        self.put(&TreeObject {
            entries: vec![TreeNode {
                name: name.to_vec(),
                leaf,
                dir: dir.map(|d| (d, meta(0o755))),
            }],
        })
    }

    /// A snapshot whose node `trap` is a symlink to the outside directory
    /// and also a directory holding the payload: restoring both would write
    /// through the link.
    fn symlink_and_directory(&self) -> Res<SnapshotId> {
        let below = self.tree(ESCAPED.as_bytes(), Some(self.file()), None)?;
        let link = Leaf::Symlink {
            target: self.outside.as_os_str().as_bytes().to_vec(),
            meta: meta(0o777),
        };
        let root = self.tree(b"trap", Some(link), Some(below))?;
        self.commit(root)
    }

    /// A new latest snapshot whose source tree is `root`.
    fn commit(&self, root: TreeId) -> Res<SnapshotId> {
        let latest = snapshot::latest(&self.repo)?.ok_or("no snapshot")?;
        let archive = self.put(&TreeObject::<History, ()> { entries: vec![] })?;
        let rec = SnapshotRecord {
            seq: latest.record.seq + 1,
            time_ns: latest.record.time_ns + 1,
            parent: Some(latest.id),
            sources: latest.record.sources.clone(),
            root,
            archive,
            summary: Summary {
                files: 1,
                dirs: 1,
                bytes: PAYLOAD.len() as u64,
                ..Summary::default()
            },
            owners: Default::default(),
        };
        Ok(snapshot::write(
            &trove::local::objects::Batch::new(&self.repo),
            &rec,
        )?)
    }

    /// Nothing named like the payload anywhere under the temp root, and the
    /// outside directory still empty.
    fn assert_nothing_escaped(&self, what: &str) -> TestResult {
        let everything = listing(self.env.root(), false)?;
        let escaped: Vec<String> = everything
            .keys()
            .filter(|p| p.windows(ESCAPED.len()).any(|w| w == ESCAPED.as_bytes()))
            .map(|p| esc(p))
            .collect();
        assert!(escaped.is_empty(), "{what}: payload written at {escaped:?}");
        assert_eq!(
            fs::read_dir(&self.outside)?.count(),
            0,
            "{what}: something was written in the outside directory"
        );
        Ok(())
    }

    /// Restore (whole, and of `path`), ls and verify all refuse without a
    /// panic and write nothing; `names` must appear in restore's message.
    /// The first, honest snapshot still restores.
    /// `ls_may_succeed`: see `ls_and_verify_name_a_path_recorded_twice`.
    fn assert_refused_everywhere(
        &self,
        snap: &SnapshotId,
        path: &str,
        names: &str,
        ls_may_succeed: bool,
    ) -> TestResult {
        let id = snap.to_hex();
        for extra in [
            vec!["--snapshot", id.as_str()],
            vec![],
            vec!["--snapshot", id.as_str(), path],
        ] {
            let r = restore(&self.env, &self.target, &extra)?;
            assert_refused(&r, &format!("restore {extra:?}"));
            if extra.len() != 3 {
                assert!(
                    r.stderr.contains(names),
                    "restore {extra:?}: the message names {names:?}: {}",
                    r.stderr
                );
            }
            self.assert_nothing_escaped(&format!("restore {extra:?}"))?;
            assert!(
                !self.target.exists() || fs::read_dir(&self.target)?.count() == 0,
                "a refused restore writes nothing in the target"
            );
        }
        for args in [
            vec!["ls"],
            vec!["ls", "--json", id.as_str()],
            vec!["verify"],
            vec!["verify", "--quick"],
        ] {
            let r = trove(&self.env, &args)?;
            if ls_may_succeed && args[0] == "ls" {
                assert_no_panic(&r, &format!("trove {args:?}"));
            } else {
                assert_refused(&r, &format!("trove {args:?}"));
            }
            self.assert_nothing_escaped(&format!("trove {args:?}"))?;
        }
        let honest = self.env.root().join("honest");
        restore(&self.env, &honest, &["--snapshot", &self.first.to_hex()])?.expect_code(0);
        assert_eq!(fs::read(honest.join("seed.txt"))?, PAYLOAD);
        Ok(())
    }
}

#[test]
fn hostile_dotdot_entry_is_refused() -> TestResult {
    let h = hostile_env()?;
    let below = h.tree(ESCAPED.as_bytes(), Some(h.file()), None)?;
    let root = h.tree(b"..", None, Some(below))?;
    let snap = h.commit(root)?;
    h.assert_refused_everywhere(&snap, &format!("../{ESCAPED}"), "\"..\"", false)
}

#[test]
fn hostile_name_with_slashes_is_refused() -> TestResult {
    let h = hostile_env()?;
    let name = format!("../../{ESCAPED}");
    let root = h.tree(name.as_bytes(), Some(h.file()), None)?;
    let snap = h.commit(root)?;
    h.assert_refused_everywhere(&snap, ESCAPED, &name, false)
}

#[test]
fn hostile_absolute_name_is_refused() -> TestResult {
    let h = hostile_env()?;
    let name = format!("{}/{ESCAPED}", h.outside.display());
    let root = h.tree(name.as_bytes(), Some(h.file()), None)?;
    let snap = h.commit(root)?;
    h.assert_refused_everywhere(&snap, ESCAPED, &name, false)
}

#[test]
fn hostile_node_both_symlink_and_directory_is_refused() -> TestResult {
    let h = hostile_env()?;
    let snap = h.symlink_and_directory()?;
    h.assert_refused_everywhere(&snap, &format!("trap/{ESCAPED}"), "trap", true)
}

#[test]
fn ls_and_verify_name_a_path_recorded_twice() -> TestResult {
    let h = hostile_env()?;
    let snap = h.symlink_and_directory()?;
    let r = trove(&h.env, &["ls"])?;
    assert_refused(&r, "ls of a snapshot with a path recorded twice");
    assert!(r.stderr.contains("trap"), "ls names the path: {}", r.stderr);
    // `ls PATH` reads only the trees on the path's way: the same refusal.
    let r = trove(&h.env, &["ls", "latest", "trap"])?;
    assert_refused(&r, "ls PATH of a snapshot with a path recorded twice");
    assert!(
        r.stderr.contains("trap"),
        "ls PATH names the path: {}",
        r.stderr
    );
    let r = trove(&h.env, &["verify"])?;
    r.expect_code(1);
    assert!(
        r.stdout.lines().any(|l| l.starts_with("problem:")
            && !l.starts_with("problem: browsable")
            && l.contains("trap")
            && l.contains(&snap.short())),
        "verify names the invalid snapshot and the path, not only the browsable tree:\n{}",
        r.stdout
    );
    Ok(())
}

#[test]
fn overwrite_replaces_a_symlinked_directory_in_the_target_instead_of_following_it() -> TestResult {
    let env = TestEnv::new()?;
    env.write("sub/f.txt", "real file")?;
    env.write("sub/inner/g.txt", "deeper")?;
    env.write("top.txt", "top")?;
    env.backup_ok(&[])?;
    let src = stat_tree(&env.source)?;
    let outside = env.root().join("outside");
    fs::create_dir(&outside)?;
    fs::write(outside.join("f.txt"), "outside, must stay")?;
    let outside_before = listing(&outside, false)?;

    for (i, paths) in [vec![], vec!["sub/f.txt"], vec!["sub/inner/g.txt"]]
        .iter()
        .enumerate()
    {
        let t = env.root().join(format!("target-{i}"));
        fs::create_dir(&t)?;
        std::os::unix::fs::symlink(&outside, t.join("sub"))?;
        let mut args = vec!["--overwrite"];
        args.extend(paths);
        let r = restore(&env, &t, &args)?;
        r.expect_code(0);
        assert!(
            fs::symlink_metadata(t.join("sub"))?.is_dir(),
            "{paths:?}: sub is a real directory in the target now"
        );
        let got = stat_tree(&t)?;
        let want = if paths.is_empty() {
            src.clone()
        } else {
            only(&src, |p| {
                paths.iter().any(|w| {
                    let w = w.as_bytes();
                    p == w || (w.starts_with(p) && w.get(p.len()) == Some(&b'/'))
                })
            })
        };
        assert_same_tree(&want, &got, &format!("restore --overwrite {paths:?}"));
        assert_eq!(
            listing(&outside, false)?,
            outside_before,
            "{paths:?}: nothing written in the directory the symlink pointed to"
        );
    }
    Ok(())
}
