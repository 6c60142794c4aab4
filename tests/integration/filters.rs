//! README "Filters": `--exclude`, `--exclude-file`, `--exclude-if-present`,
//! `--exclude-caches`, `--exclude-larger-than` and `.troveignore`, with their
//! config keys, on `trove backup` (snapshot listing and browsable tree) and
//! on `trove mirror SRC DEST --apply` (an excluded path is neither copied
//! nor deleted), the `excluded` count of the summary, the `EXCLUDE` debug
//! lines, and `trove dupes` honouring the same filters.

use crate::common::{listing, show, Node, Res, Run, TestEnv, TestResult};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::Path;

/// The content of a valid `CACHEDIR.TAG` (bford.info/cachedir).
const CACHE_TAG: &str =
    "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag.\n";
const CACHE_SIGNATURE: &str = "Signature: 8a477f597d28d172789f06886806bc55";
const MIB: usize = 1 << 20;

// ---------------------------------------------------------------- helpers

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Write `data` at `p`, creating its parents (for files in DEST or next to
/// the source).
fn put(p: &Path, data: impl AsRef<[u8]>) -> Res<()> {
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(p, data)?;
    Ok(())
}

fn parse(r: &Run) -> Res<Value> {
    Ok(serde_json::from_str(&r.stdout).map_err(|e| {
        format!(
            "--json output does not parse: {e}\n--- stdout\n{}\n--- stderr\n{}",
            r.stdout, r.stderr
        )
    })?)
}

/// `trove backup --json EXTRA… source backup` (exit 0), parsed.
fn backup_json(env: &TestEnv, extra: &[&str]) -> Res<(Run, Value)> {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let r = env.backup_ok(&args)?;
    let v = parse(&r)?;
    Ok((r, v))
}

/// `trove ARGS…` from the env's root (config-driven runs), with the audit
/// log of the default log directory.
fn run(env: &TestEnv, args: &[&str]) -> Res<Run> {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    env.run_in(&args, &env.log_dir())
}

/// Write `root/config.json` with `sources: ["source"]`, `backup_root:
/// "backup"` and the given extra keys (a JSON object's members).
fn write_config(env: &TestEnv, extra_keys: &str) -> Res<()> {
    let sep = if extra_keys.trim().is_empty() {
        ""
    } else {
        ","
    };
    put(
        &env.root().join("config.json"),
        format!(r#"{{"sources": ["source"], "backup_root": "backup"{sep} {extra_keys}}}"#),
    )
}

/// `trove --config config.json --json backup EXTRA…` (exit 0), parsed.
fn config_backup_json(env: &TestEnv, extra: &[&str]) -> Res<(Run, Value)> {
    let mut args = vec!["--config", "config.json", "--json", "backup"];
    args.extend_from_slice(extra);
    let r = run(env, &args)?;
    r.expect_code(0);
    let v = parse(&r)?;
    Ok((r, v))
}

/// Every path `trove ls --json` lists for the latest snapshot.
fn ls_paths(env: &TestEnv) -> Res<BTreeSet<String>> {
    let out = env.repo_cmd(&["ls", "--json"])?;
    assert!(
        out.status.success(),
        "trove ls failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v.as_array()
        .ok_or("ls --json is an array")?
        .iter()
        .filter_map(|e| e["path"].as_str().map(String::from))
        .collect())
}

/// Every path of the browsable tree (files, folders, symlinks; no `.trove`).
fn tree_paths(env: &TestEnv) -> Res<BTreeSet<String>> {
    Ok(env.tree()?.keys().map(|k| show(k)).collect())
}

/// Snapshot and browsable tree both hold exactly `want`.
fn assert_backed_up(env: &TestEnv, want: &BTreeSet<String>, what: &str) -> TestResult {
    assert_eq!(
        &ls_paths(env)?,
        want,
        "{what}: the snapshot (trove ls --json)"
    );
    assert_eq!(&tree_paths(env)?, want, "{what}: the browsable tree");
    Ok(())
}

/// Files below `dir` (recursively) with their contents as text.
fn files_below(dir: &Path) -> Res<BTreeMap<String, String>> {
    Ok(listing(dir, false)?
        .into_iter()
        .filter_map(|(k, n)| match n {
            Node::File(d) => Some((show(&k), show(&d))),
            _ => None,
        })
        .collect())
}

fn paths_of(files: &BTreeMap<String, String>) -> BTreeSet<String> {
    files.keys().cloned().collect()
}

/// `trove mirror source backup EXTRA… --apply --json` (exit 0), parsed.
fn mirror_apply(env: &TestEnv, extra: &[&str]) -> Res<Value> {
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("mirror"),
        env.source.as_os_str(),
        env.backup.as_os_str(),
        OsStr::new("--apply"),
        OsStr::new("--json"),
    ];
    args.extend(extra.iter().map(OsStr::new));
    let r = env.run_in(&args, &env.root().join("no-logs"))?;
    r.expect_code(0);
    parse(&r)
}

/// The `delete` list of a mirror report.
fn deleted(v: &Value) -> Res<BTreeSet<String>> {
    Ok(v["delete"]
        .as_array()
        .ok_or_else(|| format!("no delete list in {v}"))?
        .iter()
        .filter_map(|p| p.as_str().map(String::from))
        .collect())
}

fn excluded(v: &Value) -> Res<u64> {
    Ok(v["excluded"]
        .as_u64()
        .ok_or_else(|| format!("no number `excluded` in {v}"))?)
}

/// A backup that must be refused as a usage/config error: exit 2, the
/// message names every one of `names`, and no backup root appears.
fn assert_refused(env: &TestEnv, r: &Run, names: &[&str]) {
    r.expect_code(2);
    for n in names {
        assert!(
            r.stderr.contains(n),
            "the error names {n:?}\n--- stderr\n{}",
            r.stderr
        );
    }
    assert!(
        !env.backup.exists(),
        "a refused run leaves no backup root behind"
    );
}

// ---------------------------------------------------------------- --exclude

#[test]
fn exclude_globs_on_mirror_neither_copy_nor_delete() -> TestResult {
    let env = TestEnv::new()?;
    env.write("keep.txt", "keep")?;
    env.write("scratch.tmp", "tmp 1")?;
    env.write("sub/more.tmp", "tmp 2")?;
    env.write("build/out/a.o", "object")?;
    env.write("build/keep.c", "source code")?;
    env.write("cache/c.txt", "top cache")?;
    env.write("sub/cache/d.txt", "nested cache")?;
    // DEST's own entries: excluded ones stay, the others go.
    put(&env.dst("old.tmp"), "DEST's own tmp")?;
    put(&env.dst("build/out/dest.o"), "DEST's own object")?;
    put(&env.dst("cache/dest.txt"), "DEST's own cache")?;
    put(&env.dst("stale.txt"), "not excluded, not in SRC")?;
    put(
        &env.dst("sub/cache/stale.txt"),
        "not excluded: /cache is anchored",
    )?;

    let v = mirror_apply(
        &env,
        &[
            "--exclude",
            "*.tmp",
            "--exclude",
            "build/out",
            "--exclude",
            "/cache",
        ],
    )?;
    let dest = files_below(&env.backup)?;
    let want: BTreeMap<String, String> = [
        ("build/keep.c", "source code"),
        ("keep.txt", "keep"),
        ("sub/cache/d.txt", "nested cache"),
        ("old.tmp", "DEST's own tmp"),
        ("build/out/dest.o", "DEST's own object"),
        ("cache/dest.txt", "DEST's own cache"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(
        dest, want,
        "excluded SRC entries are not copied, excluded DEST entries are not deleted"
    );
    assert_eq!(
        deleted(&v)?,
        set(&["stale.txt", "sub/cache/stale.txt"]),
        "{v}"
    );
    assert_eq!(
        excluded(&v)?,
        4,
        "scratch.tmp, sub/more.tmp, build/out, cache: {v}"
    );
    Ok(())
}

// ---------------------------------------------------------------- --exclude-file

/// Patterns with comments, blank and blank-looking lines. `# notes.txt`
/// is a comment: the file of that name must stay.
const PATTERNS: &str = "# editor swap files\n*.swp\n\n   \n  # an indented comment\n# notes.txt\n/build\n  sub/*.o  \n";

fn fill_for_exclude_file(env: &TestEnv) -> TestResult {
    env.write("keep.txt", "keep")?;
    env.write("# notes.txt", "a file named like the comment")?;
    env.write("a.swp", "swap")?;
    env.write("sub/b.swp", "swap 2")?;
    env.write("build/out.bin", "root build")?;
    env.write("sub/build/k.txt", "not the root build")?;
    env.write("sub/x.o", "object under sub/")?;
    env.write("deep/sub/y.o", "object under deep/sub/")?;
    env.write("old.bak", "excluded by --exclude")?;
    put(&env.root().join("patterns.txt"), PATTERNS)?;
    Ok(())
}

#[test]
fn exclude_file_on_backup_skips_comments_and_blank_lines_and_adds_to_exclude() -> TestResult {
    let env = TestEnv::new()?;
    fill_for_exclude_file(&env)?;
    let (_, v) = backup_json(
        &env,
        &["--exclude-file", "patterns.txt", "--exclude", "*.bak"],
    )?;
    let want = set(&[
        "# notes.txt",
        "deep",
        "deep/sub",
        "deep/sub/y.o",
        "keep.txt",
        "sub",
        "sub/build",
        "sub/build/k.txt",
    ]);
    assert_backed_up(&env, &want, "--exclude-file patterns.txt --exclude *.bak")?;
    assert_eq!(
        excluded(&v)?,
        5,
        "a.swp, sub/b.swp, build, sub/x.o, old.bak: {v}"
    );
    Ok(())
}

#[test]
fn exclude_file_on_mirror_neither_copies_nor_deletes() -> TestResult {
    let env = TestEnv::new()?;
    fill_for_exclude_file(&env)?;
    put(&env.dst("local.swp"), "DEST's own swap")?;
    put(&env.dst("build/dest.bin"), "DEST's own build")?;
    put(&env.dst("sub/x.o"), "DEST's own object: not overwritten")?;
    put(&env.dst("stale.txt"), "not excluded: deleted")?;
    let v = mirror_apply(&env, &["--exclude-file", "patterns.txt"])?;
    let dest = files_below(&env.backup)?;
    assert_eq!(
        paths_of(&dest),
        set(&[
            "# notes.txt",
            "build/dest.bin",
            "deep/sub/y.o",
            "keep.txt",
            "local.swp",
            "old.bak",
            "sub/build/k.txt",
            "sub/x.o",
        ])
    );
    assert_eq!(
        dest["sub/x.o"], "DEST's own object: not overwritten",
        "a path excluded on both sides is left alone"
    );
    assert_eq!(deleted(&v)?, set(&["stale.txt"]), "{v}");
    assert_eq!(excluded(&v)?, 4, "a.swp, sub/b.swp, build, sub/x.o: {v}");
    Ok(())
}

#[test]
fn exclude_file_config_key_is_relative_to_the_config_file() -> TestResult {
    let env = TestEnv::new()?;
    env.write("keep.txt", "keep")?;
    env.write("a.log", "log")?;
    env.write("sub/b.log", "log 2")?;
    env.write("c.tmp", "tmp")?;
    let conf = env.root().join("conf");
    put(
        &conf.join("config.json"),
        r#"{"sources": ["../source"], "backup_root": "../backup", "exclude_file": ["patterns.txt"]}"#,
    )?;
    put(&conf.join("patterns.txt"), "# from the config\n*.log\n")?;
    // A decoy where a path relative to the working directory would land.
    put(&env.root().join("patterns.txt"), "keep.txt\n")?;
    // --exclude-file on the command line is relative to the working
    // directory, and adds to the config's.
    put(&env.root().join("cli.txt"), "*.tmp\n")?;
    let r = run(
        &env,
        &[
            "--config",
            "conf/config.json",
            "--json",
            "backup",
            "--exclude-file",
            "cli.txt",
        ],
    )?;
    r.expect_code(0);
    let v = parse(&r)?;
    assert_backed_up(&env, &set(&["keep.txt", "sub"]), "exclude_file in config")?;
    assert_eq!(excluded(&v)?, 3, "a.log, sub/b.log, c.tmp: {v}");
    Ok(())
}

#[test]
fn unreadable_or_invalid_exclude_files_are_usage_errors() -> TestResult {
    let env = TestEnv::new()?;
    env.write("keep.txt", "keep")?;
    let r = env.backup(&["--exclude-file", "missing-patterns.txt"])?;
    assert_refused(&env, &r, &["missing-patterns.txt"]);

    write_config(&env, r#""exclude_file": ["nope.txt"]"#)?;
    let r = run(&env, &["--config", "config.json", "backup"])?;
    assert_refused(&env, &r, &["exclude_file", "nope.txt", "config.json"]);

    put(&env.root().join("bad.txt"), "# fine\n[unclosed\n")?;
    write_config(&env, r#""exclude_file": ["bad.txt"]"#)?;
    let r = run(&env, &["--config", "config.json", "backup"])?;
    assert_refused(&env, &r, &["exclude_file", "[unclosed"]);
    Ok(())
}

// ---------------------------------------------------------------- --exclude-if-present

fn fill_for_if_present(env: &TestEnv) -> TestResult {
    env.write("keep.txt", "keep")?;
    env.write("proj/.nobackup", "")?;
    env.write("proj/x.txt", "x")?;
    env.write("proj/deep/y.txt", "y")?;
    env.write("other/z.txt", "z")?;
    env.write("other/tmp/.nobackup", "")?;
    env.write("other/tmp/t.txt", "t")?;
    env.write("media/.skip-me", "")?;
    env.write("media/film.bin", "film")?;
    // Not a marker: another name.
    env.write("docs/.nobackup.txt", "only similar")?;
    Ok(())
}

const IF_PRESENT_KEPT: &[&str] = &[
    "docs",
    "docs/.nobackup.txt",
    "keep.txt",
    "other",
    "other/z.txt",
];

#[test]
fn exclude_if_present_leaves_the_whole_directory_out_of_the_backup() -> TestResult {
    let env = TestEnv::new()?;
    fill_for_if_present(&env)?;
    let (_, v) = backup_json(
        &env,
        &[
            "--exclude-if-present",
            ".nobackup",
            "--exclude-if-present",
            ".skip-me",
        ],
    )?;
    assert_backed_up(
        &env,
        &set(IF_PRESENT_KEPT),
        "the folder holding the marker is absent, not an empty shell",
    )?;
    assert_eq!(excluded(&v)?, 3, "proj, other/tmp, media: {v}");
    Ok(())
}

#[test]
fn exclude_if_present_config_key_combines_with_the_flag() -> TestResult {
    let env = TestEnv::new()?;
    fill_for_if_present(&env)?;
    write_config(&env, r#""exclude_if_present": [".nobackup"]"#)?;
    let (_, v) = config_backup_json(&env, &["--exclude-if-present", ".skip-me"])?;
    assert_backed_up(&env, &set(IF_PRESENT_KEPT), "exclude_if_present in config")?;
    assert_eq!(excluded(&v)?, 3, "{v}");

    // The config key alone.
    let env = TestEnv::new()?;
    fill_for_if_present(&env)?;
    write_config(&env, r#""exclude_if_present": [".nobackup"]"#)?;
    config_backup_json(&env, &[])?;
    let mut want = set(IF_PRESENT_KEPT);
    want.extend(set(&["media", "media/.skip-me", "media/film.bin"]));
    assert_backed_up(&env, &want, "exclude_if_present [.nobackup] only")?;
    Ok(())
}

#[test]
fn exclude_if_present_on_mirror_neither_copies_nor_deletes() -> TestResult {
    let env = TestEnv::new()?;
    fill_for_if_present(&env)?;
    put(&env.dst("dproj/.nobackup"), "")?;
    put(&env.dst("dproj/data.bin"), "DEST's own, marked")?;
    put(&env.dst("stale/s.txt"), "not marked: deleted")?;
    let v = mirror_apply(
        &env,
        &[
            "--exclude-if-present",
            ".nobackup",
            "--exclude-if-present",
            ".skip-me",
        ],
    )?;
    assert_eq!(
        paths_of(&files_below(&env.backup)?),
        set(&[
            "docs/.nobackup.txt",
            "dproj/.nobackup",
            "dproj/data.bin",
            "keep.txt",
            "other/z.txt",
        ])
    );
    assert_eq!(deleted(&v)?, set(&["stale/"]), "{v}");
    assert_eq!(excluded(&v)?, 3, "{v}");
    Ok(())
}

#[test]
fn exclude_if_present_with_an_empty_or_dot_name_is_a_usage_error() -> TestResult {
    // `dir.join("")`, `dir/.` and `dir/..` always exist: such a "marker"
    // would silently leave every folder out of the backup (e.g. an unset
    // shell variable in `--exclude-if-present "$MARKER"`).
    let env = TestEnv::new()?;
    env.write("keep.txt", "keep")?;
    env.write("docs/report.txt", "report")?;
    for name in ["", ".", ".."] {
        let r = env.backup(&["--exclude-if-present", name])?;
        assert_eq!(
            r.code,
            Some(2),
            "--exclude-if-present {name:?} is refused (a folder always \"holds\" it)\n--- stdout\n{}\n--- stderr\n{}",
            r.stdout,
            r.stderr
        );
        assert!(r.stderr.contains("exclude-if-present"), "{}", r.stderr);
        assert!(!env.backup.exists(), "nothing written");
    }
    write_config(&env, r#""exclude_if_present": [""]"#)?;
    let r = run(&env, &["--config", "config.json", "backup"])?;
    assert_eq!(
        r.code,
        Some(2),
        "exclude_if_present [\"\"] is refused\n--- stdout\n{}\n--- stderr\n{}",
        r.stdout,
        r.stderr
    );
    assert!(r.stderr.contains("exclude_if_present"), "{}", r.stderr);
    Ok(())
}

// ---------------------------------------------------------------- --exclude-caches

fn fill_for_caches(env: &TestEnv) -> TestResult {
    env.write("keep.txt", "keep")?;
    env.write("cache/CACHEDIR.TAG", CACHE_TAG)?;
    env.write("cache/blob", "cached")?;
    // Exactly the signature, nothing after it: valid.
    env.write("bare/CACHEDIR.TAG", CACHE_SIGNATURE)?;
    env.write("bare/blob", "cached 2")?;
    env.write("sub/.cache/CACHEDIR.TAG", CACHE_TAG)?;
    env.write("sub/.cache/blob", "cached 3")?;
    env.write("sub/work.txt", "work")?;
    // Invalid tags: other content, a truncated signature.
    env.write("fake/CACHEDIR.TAG", "Signature: this is not a cache\n")?;
    env.write("fake/blob", "not a cache")?;
    env.write(
        "short/CACHEDIR.TAG",
        &CACHE_SIGNATURE[..CACHE_SIGNATURE.len() - 1],
    )?;
    env.write("short/blob", "not a cache either")?;
    Ok(())
}

const CACHES_KEPT: &[&str] = &[
    "fake",
    "fake/CACHEDIR.TAG",
    "fake/blob",
    "keep.txt",
    "short",
    "short/CACHEDIR.TAG",
    "short/blob",
    "sub",
    "sub/work.txt",
];

#[test]
fn exclude_caches_leaves_out_directories_with_a_valid_tag_only() -> TestResult {
    let env = TestEnv::new()?;
    fill_for_caches(&env)?;
    let (_, v) = backup_json(&env, &["--exclude-caches"])?;
    assert_backed_up(&env, &set(CACHES_KEPT), "--exclude-caches")?;
    assert_eq!(excluded(&v)?, 3, "cache, bare, sub/.cache: {v}");

    // Without the flag a cache directory is an ordinary folder.
    let plain = TestEnv::new()?;
    fill_for_caches(&plain)?;
    let (_, v) = backup_json(&plain, &[])?;
    assert!(ls_paths(&plain)?.contains("cache/blob"));
    assert_eq!(excluded(&v)?, 0, "{v}");
    Ok(())
}

#[test]
fn exclude_caches_config_key() -> TestResult {
    let env = TestEnv::new()?;
    fill_for_caches(&env)?;
    write_config(&env, r#""exclude_caches": true"#)?;
    let (_, v) = config_backup_json(&env, &[])?;
    assert_backed_up(&env, &set(CACHES_KEPT), "exclude_caches: true")?;
    assert_eq!(excluded(&v)?, 3, "{v}");
    Ok(())
}

#[test]
fn exclude_caches_on_mirror_neither_copies_nor_deletes() -> TestResult {
    let env = TestEnv::new()?;
    fill_for_caches(&env)?;
    put(&env.dst("dcache/CACHEDIR.TAG"), CACHE_TAG)?;
    put(&env.dst("dcache/blob"), "DEST's own cache")?;
    put(&env.dst("dfake/CACHEDIR.TAG"), "Signature: nope\n")?;
    put(&env.dst("dfake/blob"), "not a cache: deleted")?;
    let v = mirror_apply(&env, &["--exclude-caches"])?;
    assert_eq!(
        paths_of(&files_below(&env.backup)?),
        set(&[
            "dcache/CACHEDIR.TAG",
            "dcache/blob",
            "fake/CACHEDIR.TAG",
            "fake/blob",
            "keep.txt",
            "short/CACHEDIR.TAG",
            "short/blob",
            "sub/work.txt",
        ])
    );
    assert_eq!(deleted(&v)?, set(&["dfake/"]), "{v}");
    assert_eq!(excluded(&v)?, 3, "{v}");
    Ok(())
}

// ---------------------------------------------------------------- --exclude-larger-than

fn fill_for_sizes(env: &TestEnv) -> TestResult {
    env.write("small.txt", "small")?;
    env.write("exact.bin", vec![b'e'; MIB])?;
    env.write("over.bin", vec![b'o'; MIB + 1])?;
    env.write("sub/big.bin", vec![b'b'; 2 * MIB])?;
    env.write("sub/k1536.bin", vec![b'k'; 1536])?;
    env.write("sub/k1537.bin", vec![b'l'; 1537])?;
    Ok(())
}

const ONE_MIB_KEPT: &[&str] = &[
    "exact.bin",
    "small.txt",
    "sub",
    "sub/k1536.bin",
    "sub/k1537.bin",
];

#[test]
fn exclude_larger_than_excludes_files_above_the_size_and_keeps_equal_ones() -> TestResult {
    let env = TestEnv::new()?;
    fill_for_sizes(&env)?;
    let (_, v) = backup_json(&env, &["--exclude-larger-than", "1M"])?;
    assert_backed_up(&env, &set(ONE_MIB_KEPT), "--exclude-larger-than 1M")?;
    assert_eq!(excluded(&v)?, 2, "over.bin, sub/big.bin: {v}");

    // 1.5K = 1536 bytes. Folders (4 KiB on most filesystems) and symlinks
    // (a long target) are not files: never excluded by size.
    let env = TestEnv::new()?;
    fill_for_sizes(&env)?;
    let target = "x/".repeat(1000);
    std::os::unix::fs::symlink(&target, env.src("sub/long-link"))?;
    let (_, v) = backup_json(&env, &["--exclude-larger-than", "1.5K"])?;
    assert_backed_up(
        &env,
        &set(&["small.txt", "sub", "sub/k1536.bin", "sub/long-link"]),
        "--exclude-larger-than 1.5K",
    )?;
    assert_eq!(excluded(&v)?, 4, "exact, over, big, k1537: {v}");
    Ok(())
}

#[test]
fn exclude_larger_than_config_key_as_number_and_as_string() -> TestResult {
    for value in ["1048576", r#""1M""#, r#""1 MiB""#] {
        let env = TestEnv::new()?;
        fill_for_sizes(&env)?;
        write_config(&env, &format!(r#""exclude_larger_than": {value}"#))?;
        let (_, v) = config_backup_json(&env, &[])?;
        assert_backed_up(
            &env,
            &set(ONE_MIB_KEPT),
            &format!("exclude_larger_than: {value}"),
        )?;
        assert_eq!(excluded(&v)?, 2, "{value}: {v}");
    }
    // The command line overrides the file.
    let env = TestEnv::new()?;
    fill_for_sizes(&env)?;
    write_config(&env, r#""exclude_larger_than": "1M""#)?;
    config_backup_json(&env, &["--exclude-larger-than", "1.5K"])?;
    assert_backed_up(
        &env,
        &set(&["small.txt", "sub", "sub/k1536.bin"]),
        "--exclude-larger-than 1.5K over the config's 1M",
    )?;
    Ok(())
}

#[test]
fn invalid_sizes_are_usage_errors_naming_the_value_or_key() -> TestResult {
    let env = TestEnv::new()?;
    env.write("keep.txt", "keep")?;
    for bad in ["12Q", "lots", "1.2.3M", ""] {
        let r = env.backup(&["--exclude-larger-than", bad])?;
        assert_refused(&env, &r, &["--exclude-larger-than"]);
        if !bad.is_empty() {
            assert!(r.stderr.contains(bad), "names {bad:?}: {}", r.stderr);
        }
    }
    for (value, shown) in [
        (r#""huge""#, "huge"),
        (r#""12Q""#, "12Q"),
        ("-5", "exclude_larger_than"),
        ("true", "exclude_larger_than"),
    ] {
        write_config(&env, &format!(r#""exclude_larger_than": {value}"#))?;
        let r = run(&env, &["--config", "config.json", "backup"])?;
        assert_refused(&env, &r, &["exclude_larger_than", shown, "config.json"]);
    }
    // dupes and mirror parse the flag the same way.
    for cmd in [
        &["dupes", "source"][..],
        &["mirror", "source", "backup"][..],
    ] {
        let mut args = cmd.to_vec();
        args.extend(["--exclude-larger-than", "12Q"]);
        let r = run(&env, &args)?;
        r.expect_code(2);
        assert!(r.stderr.contains("12Q"), "{cmd:?}: {}", r.stderr);
    }
    assert!(!env.backup.exists());
    Ok(())
}

#[test]
fn exclude_larger_than_on_mirror_neither_copies_nor_deletes() -> TestResult {
    let env = TestEnv::new()?;
    fill_for_sizes(&env)?;
    put(&env.dst("dest-big.bin"), vec![b'd'; 2 * MIB])?;
    // Too large on both sides: left alone, not overwritten.
    put(&env.dst("over.bin"), vec![b'D'; MIB + 2])?;
    put(&env.dst("stale.txt"), "small, not in SRC: deleted")?;
    let v = mirror_apply(&env, &["--exclude-larger-than", "1M"])?;
    let dest = listing(&env.backup, false)?;
    let files: BTreeSet<String> = dest
        .iter()
        .filter(|(_, n)| matches!(n, Node::File(_)))
        .map(|(k, _)| show(k))
        .collect();
    assert_eq!(
        files,
        set(&[
            "dest-big.bin",
            "exact.bin",
            "over.bin",
            "small.txt",
            "sub/k1536.bin",
            "sub/k1537.bin",
        ])
    );
    assert_eq!(
        dest.get(b"over.bin".as_slice()),
        Some(&Node::File(vec![b'D'; MIB + 2])),
        "DEST's over.bin is excluded there too: not overwritten"
    );
    assert_eq!(deleted(&v)?, set(&["stale.txt"]), "{v}");
    assert_eq!(excluded(&v)?, 2, "{v}");
    Ok(())
}

// ---------------------------------------------------------------- .troveignore

const APP_IGNORE: &str = "# gitignore syntax\n*.log\n!keep.log\n/build/\ngen/*.tmp\nout/\n";
const NESTED_IGNORE: &str = "!*.log\nsecret.txt\n";

/// `app/.troveignore` and `app/nested/.troveignore`; entries outside `app`
/// that the rules would match if they applied there.
fn fill_for_troveignore(env: &TestEnv) -> TestResult {
    env.write("top.log", "outside app: kept (1)")?;
    env.write("other/x.log", "outside app: kept (2)")?;
    env.write("other/build/o.bin", "outside app: kept (3)")?;
    env.write("app/.troveignore", APP_IGNORE)?;
    env.write("app/a.log", "excluded")?;
    env.write("app/keep.log", "re-included")?;
    env.write("app/main.c", "code")?;
    env.write("app/sub/b.log", "excluded below app too")?;
    env.write("app/sub/keep.log", "re-included below app too")?;
    env.write("app/build/o.bin", "excluded: /build/ is anchored to app")?;
    env.write("app/sub/build/o.bin", "kept: not app/build")?;
    env.write("app/gen/x.tmp", "excluded: gen/*.tmp has a slash")?;
    env.write("app/sub/gen/x.tmp", "kept: gen/*.tmp is anchored to app")?;
    env.write("app/out/o1", "excluded: out/ matches folders at any depth")?;
    env.write("app/sub/out/o2", "excluded too")?;
    env.write("app/lib/out", "kept: a file, and out/ matches folders only")?;
    env.write("app/secret.txt", "kept: the nested rule is for nested/")?;
    env.write("app/nested/.troveignore", NESTED_IGNORE)?;
    env.write("app/nested/n.log", "re-included by the nested file")?;
    env.write("app/nested/secret.txt", "excluded by the nested file")?;
    Ok(())
}

const TROVEIGNORE_KEPT: &[&str] = &[
    "app",
    "app/.troveignore",
    "app/gen",
    "app/keep.log",
    "app/lib",
    "app/lib/out",
    "app/main.c",
    "app/nested",
    "app/nested/.troveignore",
    "app/nested/n.log",
    "app/secret.txt",
    "app/sub",
    "app/sub/build",
    "app/sub/build/o.bin",
    "app/sub/gen",
    "app/sub/gen/x.tmp",
    "app/sub/keep.log",
    "other",
    "other/build",
    "other/build/o.bin",
    "other/x.log",
    "top.log",
];

#[test]
fn troveignore_applies_gitignore_rules_to_its_directory_and_below() -> TestResult {
    let env = TestEnv::new()?;
    fill_for_troveignore(&env)?;
    let (_, v) = backup_json(&env, &[])?;
    assert_backed_up(&env, &set(TROVEIGNORE_KEPT), ".troveignore")?;
    assert_eq!(
        excluded(&v)?,
        7,
        "a.log, sub/b.log, build, gen/x.tmp, out, sub/out, nested/secret.txt: {v}"
    );
    assert_eq!(
        std::fs::read_to_string(env.dst("app/.troveignore"))?,
        APP_IGNORE,
        "the .troveignore itself is backed up"
    );
    Ok(())
}

#[test]
fn troveignore_on_mirror_neither_copies_nor_deletes() -> TestResult {
    let env = TestEnv::new()?;
    fill_for_troveignore(&env)?;
    let v = mirror_apply(&env, &[])?;
    let want_files: BTreeSet<String> = {
        let tree = listing(&env.source, false)?;
        set(TROVEIGNORE_KEPT)
            .into_iter()
            .filter(|p| matches!(tree.get(p.as_bytes()), Some(Node::File(_))))
            .collect()
    };
    assert_eq!(paths_of(&files_below(&env.backup)?), want_files);
    assert_eq!(excluded(&v)?, 7, "{v}");

    // DEST now has the .troveignore files: its own matching entries stay,
    // the others go.
    put(&env.dst("app/local.log"), "DEST's own log")?;
    put(&env.dst("app/sub/out/local"), "DEST's own output")?;
    put(&env.dst("app/stale.txt"), "not ignored: deleted")?;
    let v = mirror_apply(&env, &[])?;
    let mut want = want_files.clone();
    want.extend(set(&["app/local.log", "app/sub/out/local"]));
    assert_eq!(paths_of(&files_below(&env.backup)?), want);
    assert_eq!(deleted(&v)?, set(&["app/stale.txt"]), "{v}");
    Ok(())
}

#[test]
fn file_newly_ignored_by_a_troveignore_is_reported_deleted() -> TestResult {
    let env = TestEnv::new()?;
    env.write("app/debug.log", "old log")?;
    env.write("app/keep.txt", "keep")?;
    env.backup_ok(&[])?;
    assert!(ls_paths(&env)?.contains("app/debug.log"));

    env.write("app/.troveignore", "*.log\n")?;
    let (r, v) = backup_json(&env, &[])?;
    assert_eq!(v["deleted"], 1, "{v}");
    assert_eq!(excluded(&v)?, 1, "{v}");
    r.assert_message("ARCHIVE DELETE: backup/app/debug.log → backup/_deleted/app/debug.log");
    assert_eq!(
        ls_paths(&env)?,
        set(&["app", "app/.troveignore", "app/keep.txt"])
    );
    assert!(!env.dst("app/debug.log").exists());
    assert_eq!(
        std::fs::read_to_string(env.dst("_deleted/app/debug.log"))?,
        "old log",
        "the last content is kept in _deleted/"
    );
    assert!(env.src("app/debug.log").exists(), "the source is untouched");
    let h = env.repo_cmd(&["history", "--json", "app/debug.log"])?;
    assert!(h.status.success());
    let rows: Value = serde_json::from_slice(&h.stdout)?;
    let events: Vec<&str> = rows
        .as_array()
        .ok_or("history --json is an array")?
        .iter()
        .filter_map(|r| r["event"].as_str())
        .collect();
    assert_eq!(events.last(), Some(&"deleted"), "{rows}");
    Ok(())
}

#[test]
fn folder_newly_marked_nobackup_is_reported_deleted() -> TestResult {
    let env = TestEnv::new()?;
    env.write("proj/a.txt", "a")?;
    env.write("proj/sub/b.txt", "b")?;
    env.write("keep.txt", "keep")?;
    env.backup_ok(&["--exclude-if-present", ".nobackup"])?;
    env.write("proj/.nobackup", "")?;
    let (_, v) = backup_json(&env, &["--exclude-if-present", ".nobackup"])?;
    assert_eq!(v["deleted"], 2, "{v}");
    assert_eq!(excluded(&v)?, 1, "{v}");
    assert_eq!(ls_paths(&env)?, set(&["keep.txt"]));
    assert_eq!(
        std::fs::read_to_string(env.dst("_deleted/proj/a.txt"))?,
        "a"
    );
    assert_eq!(
        std::fs::read_to_string(env.dst("_deleted/proj/sub/b.txt"))?,
        "b"
    );
    Ok(())
}

// ---------------------------------------------------------------- counting

/// One entry excluded by each kind of filter.
fn fill_one_of_each(env: &TestEnv) -> TestResult {
    env.write("keep.txt", "keep")?;
    env.write("a.tmp", "glob")?;
    env.write("skip/.nobackup", "")?;
    env.write("skip/f.txt", "marked folder")?;
    env.write("cache/CACHEDIR.TAG", CACHE_TAG)?;
    env.write("cache/blob", "cached")?;
    env.write("big.bin", vec![b'b'; 2000])?;
    env.write("app/.troveignore", "*.log\n")?;
    env.write("app/x.log", "ignored")?;
    env.write("app/keep.txt", "keep")?;
    Ok(())
}

const ONE_OF_EACH_FLAGS: &[&str] = &[
    "--exclude",
    "*.tmp",
    "--exclude-if-present",
    ".nobackup",
    "--exclude-caches",
    "--exclude-larger-than",
    "1K",
];

const ONE_OF_EACH_EXCLUDED: &[&str] = &["a.tmp", "skip", "cache", "big.bin", "app/x.log"];

#[test]
fn excluded_entries_are_counted_in_json_and_in_the_summary_line() -> TestResult {
    let json = TestEnv::new()?;
    let human = TestEnv::new()?;
    fill_one_of_each(&json)?;
    fill_one_of_each(&human)?;

    let (jr, v) = backup_json(&json, ONE_OF_EACH_FLAGS)?;
    assert_eq!(excluded(&v)?, 5, "{v}");
    assert_eq!(
        v["files"], 3,
        "keep.txt, app/.troveignore, app/keep.txt: {v}"
    );
    let logged: Vec<String> = jr
        .messages()
        .into_iter()
        .filter(|m| m.contains(" copied, "))
        .collect();
    assert_eq!(logged.len(), 1, "{}", jr.log);
    assert!(
        logged[0].ends_with("; 5 excluded"),
        "the logged summary: {}",
        logged[0]
    );

    let hr = human.backup_ok(ONE_OF_EACH_FLAGS)?;
    let line = hr
        .stdout
        .lines()
        .find(|l| l.starts_with("Run complete: "))
        .ok_or_else(|| format!("no summary line in {}", hr.stdout))?;
    let (summary, snapshot) = line
        .split_once("; snapshot ")
        .ok_or_else(|| format!("no snapshot id in {line}"))?;
    assert!(summary.ends_with("; 5 excluded"), "{line}");
    assert!(!snapshot.is_empty(), "{line}");

    // A run without changes still says how much it left out.
    let again = human.backup_ok(ONE_OF_EACH_FLAGS)?;
    assert!(
        again.stdout.contains("no changes") && again.stdout.contains("; 5 excluded"),
        "{}",
        again.stdout
    );
    let dry = human.backup_ok(&[&["--dry-run"][..], ONE_OF_EACH_FLAGS].concat())?;
    assert!(dry.stdout.contains("; 5 excluded"), "{}", dry.stdout);

    // Nothing excluded: 0 in JSON, no mention in the summary.
    let plain = TestEnv::new()?;
    plain.write("keep.txt", "keep")?;
    let (_, v) = backup_json(&plain, &[])?;
    assert_eq!(excluded(&v)?, 0, "{v}");
    let r = plain.backup_ok(&["--always-snapshot"])?;
    assert!(!r.stdout.contains("excluded"), "{}", r.stdout);
    Ok(())
}

#[test]
fn very_verbose_console_names_each_excluded_entry() -> TestResult {
    let env = TestEnv::new()?;
    fill_one_of_each(&env)?;
    let r = env.backup_ok(&[&["-vv"][..], ONE_OF_EACH_FLAGS].concat())?;
    let lines: Vec<&str> = r.stderr.lines().filter(|l| l.contains("EXCLUDE")).collect();
    for p in ONE_OF_EACH_EXCLUDED {
        let full = env.src(p).display().to_string();
        assert!(
            lines.iter().any(|l| l.contains(&full)),
            "no EXCLUDE line names {full}\n--- stderr\n{}",
            r.stderr
        );
    }
    assert_eq!(
        lines.len(),
        ONE_OF_EACH_EXCLUDED.len(),
        "one line per excluded entry, nothing below an excluded folder: {lines:#?}"
    );
    assert!(
        !r.log.contains("EXCLUDE"),
        "the audit log stays at info without log_level debug"
    );

    // Without -vv: no EXCLUDE lines on the console.
    let quiet = TestEnv::new()?;
    fill_one_of_each(&quiet)?;
    let r = quiet.backup_ok(ONE_OF_EACH_FLAGS)?;
    assert!(!r.console().contains("EXCLUDE"), "{}", r.console());

    // log_level debug: the audit log names them.
    let logged = TestEnv::new()?;
    fill_one_of_each(&logged)?;
    write_config(&logged, r#""log_level": "debug""#)?;
    let mut args = vec!["--config", "config.json", "backup"];
    args.extend_from_slice(ONE_OF_EACH_FLAGS);
    let r = run(&logged, &args)?;
    r.expect_code(0);
    for p in ONE_OF_EACH_EXCLUDED {
        let full = logged.src(p).display().to_string();
        assert!(
            r.messages()
                .iter()
                .any(|m| m.contains("EXCLUDE") && m.contains(&full)),
            "the debug log names {full}\n--- log\n{}",
            r.log
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- mirror: excluded in SRC only

#[test]
fn mirror_does_not_delete_dest_entries_whose_source_is_excluded() -> TestResult {
    // DEST holds an earlier, unfiltered mirror; then SRC gains markers.
    // DESIGN: "mirror: excluded paths — neither copied nor deleted on
    // either side". The DEST copies do not carry the marker (or are not
    // over the size), but the paths are excluded in SRC.
    let env = TestEnv::new()?;
    env.write("keep.txt", "keep")?;
    env.write("proj/x.txt", "project")?;
    env.write("cache/blob", "cached")?;
    env.write("notes.log", "a log")?;
    env.write("grows.bin", "small at first")?;
    mirror_apply(&env, &[])?;

    env.write("proj/.nobackup", "")?;
    env.write("cache/CACHEDIR.TAG", CACHE_TAG)?;
    env.write(".troveignore", "*.log\n")?;
    env.write("grows.bin", vec![b'g'; 4096])?;
    let v = mirror_apply(
        &env,
        &[
            "--exclude-if-present",
            ".nobackup",
            "--exclude-caches",
            "--exclude-larger-than",
            "1K",
        ],
    )?;
    let dest = files_below(&env.backup)?;
    let lost: Vec<&str> = ["proj/x.txt", "cache/blob", "notes.log", "grows.bin"]
        .into_iter()
        .filter(|p| !dest.contains_key(*p))
        .collect();
    assert!(
        lost.is_empty(),
        "paths excluded in SRC were deleted from DEST: {lost:?}\nmirror report: {v}"
    );
    assert_eq!(
        dest.get("grows.bin").map(String::as_str),
        Some("small at first"),
        "an excluded file is not copied over DEST's"
    );
    Ok(())
}

// ---------------------------------------------------------------- dupes

/// The sets of `trove dupes --json`, each as its sorted paths.
fn dupe_sets(env: &TestEnv, args: &[&str]) -> Res<BTreeSet<Vec<String>>> {
    let mut all = vec!["dupes", "--json"];
    all.extend_from_slice(args);
    let r = run(env, &all)?;
    r.expect_code(0);
    let v = parse(&r)?;
    let mut out = BTreeSet::new();
    for s in v["sets"]
        .as_array()
        .ok_or_else(|| format!("no sets in {v}"))?
    {
        let mut paths: Vec<String> = s["files"]
            .as_array()
            .ok_or_else(|| format!("no files in {s}"))?
            .iter()
            .filter_map(|f| f["path"].as_str().map(String::from))
            .collect();
        paths.sort();
        out.insert(paths);
    }
    Ok(out)
}

fn pair(a: &str, b: &str) -> Vec<String> {
    vec![a.to_string(), b.to_string()]
}

#[test]
fn dupes_honours_exclude_and_exclude_larger_than() -> TestResult {
    let env = TestEnv::new()?;
    env.write("keep/a.txt", "a pair that is reported")?;
    env.write("keep/b.txt", "a pair that is reported")?;
    env.write("skipme/c.txt", "a pair inside an excluded folder")?;
    env.write("skipme/d.txt", "a pair inside an excluded folder")?;
    env.write("x.tmp", "a pair of excluded names")?;
    env.write("keep/y.tmp", "a pair of excluded names")?;
    env.write("keep/half.txt", "one side excluded")?;
    env.write("skipme/half.txt", "one side excluded")?;
    env.write("big1.bin", vec![b'B'; 2049])?;
    env.write("big2.bin", vec![b'B'; 2049])?;
    env.write("exact1.bin", vec![b'E'; 2048])?;
    env.write("exact2.bin", vec![b'E'; 2048])?;

    let all = dupe_sets(&env, &["source"])?;
    assert_eq!(all.len(), 6, "without filters every pair is found: {all:?}");

    let filtered = dupe_sets(
        &env,
        &[
            "source",
            "--exclude",
            "skipme",
            "--exclude",
            "*.tmp",
            "--exclude-larger-than",
            "2K",
        ],
    )?;
    let want: BTreeSet<Vec<String>> = [
        pair("source/exact1.bin", "source/exact2.bin"),
        pair("source/keep/a.txt", "source/keep/b.txt"),
    ]
    .into_iter()
    .collect();
    assert_eq!(filtered, want);
    Ok(())
}

#[test]
fn dupes_honours_markers_caches_exclude_files_and_troveignore() -> TestResult {
    let env = TestEnv::new()?;
    env.write("keep/a.txt", "reported")?;
    env.write("keep/b.txt", "reported")?;
    env.write("marked/.nobackup", "")?;
    env.write("marked/c.txt", "pair in a marked folder")?;
    env.write("marked/d.txt", "pair in a marked folder")?;
    env.write("cache/CACHEDIR.TAG", CACHE_TAG)?;
    env.write("cache/e.txt", "pair in a cache")?;
    env.write("cache/f.txt", "pair in a cache")?;
    env.write("listed/g.txt", "pair excluded by the file")?;
    env.write("listed/h.txt", "pair excluded by the file")?;
    env.write("app/.troveignore", "*.log\n")?;
    env.write("app/i.log", "pair ignored")?;
    env.write("app/j.log", "pair ignored")?;
    put(&env.root().join("patterns.txt"), "# one pattern\nlisted\n")?;

    let all = dupe_sets(&env, &["source"])?;
    assert_eq!(
        all.len(),
        4,
        ".troveignore always applies; the rest without flags: {all:?}"
    );
    let filtered = dupe_sets(
        &env,
        &[
            "source",
            "--exclude-if-present",
            ".nobackup",
            "--exclude-caches",
            "--exclude-file",
            "patterns.txt",
        ],
    )?;
    let want: BTreeSet<Vec<String>> = [pair("source/keep/a.txt", "source/keep/b.txt")]
        .into_iter()
        .collect();
    assert_eq!(filtered, want);
    Ok(())
}
