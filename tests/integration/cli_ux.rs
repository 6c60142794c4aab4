//! README "Commands": the command line as a user meets it — `--help` with
//! examples for every command, shell completions, the manual page, one
//! JSON document per `--json` run carrying the numbers the human output
//! shows, no colours or progress bars where they do not belong (`NO_COLOR`,
//! pipes, `-q`, `--json`), `-q` silence, usage errors on stderr with exit 2,
//! and a closed stdout pipe (`trove … | head`) not being a failure.

use crate::common::{parse_summary, run_bounded, trove_bin, Lcg, Res, Run, TestEnv, TestResult};
use serde_json::Value;
use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;
use trove::backup::human_bytes;

const LIMIT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------- helpers

/// `trove ARGS…` from `cwd`, with `vars` set (and NO_COLOR, TROVE_REPO and
/// the colour-forcing variables removed unless set in `vars`).
fn trove_env(cwd: &Path, args: &[&OsStr], vars: &[(&str, &str)]) -> Res<Run> {
    let mut cmd = std::process::Command::new(trove_bin());
    cmd.current_dir(cwd)
        .env_remove("TROVE_REPO")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("FORCE_COLOR")
        .args(args)
        .stdin(std::process::Stdio::null());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    Ok(Run::from_output(&run_bounded(cmd, LIMIT)?, String::new()))
}

/// `trove ARGS…` from the env's root.
fn trove(env: &TestEnv, args: &[&str]) -> Res<Run> {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    trove_env(env.root(), &args, &[])
}

/// `trove --repo backup ARGS…` from the env's root.
fn repo(env: &TestEnv, args: &[&str]) -> Res<Run> {
    let mut all: Vec<&OsStr> = vec![OsStr::new("--repo"), env.backup.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    trove_env(env.root(), &all, &[])
}

/// stdout as exactly one JSON document (nothing before or after it).
fn parse(r: &Run, what: &str) -> Res<Value> {
    Ok(serde_json::from_str(&r.stdout).map_err(|e| {
        format!(
            "{what}: --json output is not one JSON document: {e}\n--- stdout\n{}\n--- stderr\n{}",
            r.stdout, r.stderr
        )
    })?)
}

/// Run, expect exit 0, parse stdout as JSON.
fn json_of(r: Run, what: &str) -> Res<Value> {
    r.expect_code(0);
    parse(&r, what)
}

fn u(v: &Value, key: &str) -> Res<u64> {
    Ok(v[key]
        .as_u64()
        .ok_or_else(|| format!("no number {key:?} in {v}"))?)
}

fn len(v: &Value, key: &str) -> Res<u64> {
    Ok(v[key]
        .as_array()
        .ok_or_else(|| format!("no list {key:?} in {v}"))?
        .len() as u64)
}

/// The number right before `label` in `line` ("3 objects" → 3 for
/// " objects").
fn num_before(line: &str, label: &str) -> Res<u64> {
    let i = line
        .find(label)
        .ok_or_else(|| format!("no {label:?} in {line:?}"))?;
    let tok = line[..i]
        .split_whitespace()
        .next_back()
        .ok_or_else(|| format!("nothing before {label:?} in {line:?}"))?;
    let tok = tok.trim_matches(|c: char| !c.is_ascii_digit());
    Ok(tok
        .parse()
        .map_err(|e| format!("{tok:?} before {label:?} in {line:?}: {e}"))?)
}

/// The first line of `text` starting with `prefix`.
fn line_starting<'a>(text: &'a str, prefix: &str) -> Res<&'a str> {
    Ok(text
        .lines()
        .find(|l| l.starts_with(prefix))
        .ok_or_else(|| format!("no line starting with {prefix:?} in\n{text}"))?)
}

/// The first whitespace-separated token after `key:` on the line starting
/// with `key:` (`snapshots:        2 (…)` → 2).
fn field(text: &str, key: &str) -> Res<u64> {
    let l = line_starting(text, &format!("{key}:"))?;
    let tok = l[key.len() + 1..]
        .split_whitespace()
        .next()
        .ok_or_else(|| format!("no value in {l:?}"))?;
    Ok(tok.parse().map_err(|e| format!("{tok:?} in {l:?}: {e}"))?)
}

/// The subcommands `trove --help` lists (without clap's own `help`).
fn subcommands() -> Res<Vec<String>> {
    let r = trove_env(Path::new("/"), &[OsStr::new("--help")], &[])?;
    r.expect_code(0);
    let mut out = Vec::new();
    let mut in_list = false;
    for l in r.stdout.lines() {
        if l.starts_with("Commands:") {
            in_list = true;
            continue;
        }
        if in_list {
            if l.trim().is_empty() || !l.starts_with("  ") {
                break;
            }
            if let Some(name) = l.split_whitespace().next() {
                if name != "help" {
                    out.push(name.to_string());
                }
            }
        }
    }
    for must in [
        "init",
        "backup",
        "snapshots",
        "ls",
        "restore",
        "verify",
        "materialize",
        "diff",
        "history",
        "prune",
        "watch",
        "mirror",
        "dupes",
        "completions",
        "man",
        "stats",
    ] {
        assert!(
            out.iter().any(|c| c == must),
            "`trove --help` lists {must}: {out:?}\n{}",
            r.stdout
        );
    }
    Ok(out)
}

/// A source with a duplicate, a symlink, a 3 MB file (big enough for a
/// progress bar to have something to show), backed up twice with changes
/// in between.
fn fill(env: &TestEnv) -> TestResult {
    env.write("one.txt", "hello world")?;
    env.write("one_copy.txt", "hello world")?;
    env.write("sub/two.txt", "two")?;
    env.write("sub/deeper/three.txt", "three")?;
    env.write("big.bin", Lcg(11).bytes(3_000_000))?;
    std::os::unix::fs::symlink("one.txt", env.src("link"))?;
    Ok(())
}

fn change(env: &TestEnv) -> TestResult {
    env.write("sub/two.txt", "two, edited")?;
    env.write("new.txt", "new")?;
    std::fs::remove_file(env.src("sub/deeper/three.txt"))?;
    Ok(())
}

/// A repository with two snapshots (the second has a modification, an
/// addition and a deletion).
fn two_snapshots() -> Res<TestEnv> {
    let env = TestEnv::new()?;
    fill(&env)?;
    env.backup_ok(&[])?;
    change(&env)?;
    env.backup_ok(&[])?;
    Ok(env)
}

fn snapshot_ids(env: &TestEnv) -> Res<(String, String)> {
    let ids = env.snapshot_ids()?;
    assert_eq!(ids.len(), 2, "{ids:?}");
    Ok((ids[0].0.clone(), ids[1].0.clone()))
}

/// Escape sequences, carriage returns, spinner glyphs (braille) or a bar's
/// "eta": what a progress bar or colour leaves in captured output.
fn terminal_artifacts(s: &str) -> Vec<String> {
    let mut found = Vec::new();
    if s.contains("\x1b[") {
        found.push("ANSI escape \\x1b[".to_string());
    }
    if s.contains('\r') {
        found.push("carriage return".to_string());
    }
    if s.chars().any(|c| ('\u{2800}'..='\u{28ff}').contains(&c)) {
        found.push("spinner glyph".to_string());
    }
    if s.contains(" eta ") || s.contains("[====") || s.contains("=> ") {
        found.push("progress bar".to_string());
    }
    found
}

/// `script` (util-linux) runs a command on a pseudo-terminal.
fn have_script() -> bool {
    let ok = std::process::Command::new("script")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipped: needs util-linux `script` for a pseudo-terminal");
    }
    ok
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `trove ARGS…` on a pseudo-terminal (stdout and stderr both the
/// terminal), from `cwd`, with TERM=xterm and `vars`: what the terminal
/// showed, with the terminal's `\r\n` turned back into `\n`.
fn on_terminal(cwd: &Path, args: &[&str], vars: &[(&str, &str)]) -> Res<(Option<i32>, String)> {
    let mut line = sh_quote(&trove_bin().display().to_string());
    for a in args {
        line.push(' ');
        line.push_str(&sh_quote(a));
    }
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"])
        .current_dir(cwd)
        .env_remove("TROVE_REPO")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("FORCE_COLOR")
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::null());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = run_bounded(cmd, LIMIT)?;
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    Ok((out.status.code(), text))
}

// ---------------------------------------------------------------- help, completions, man

#[test]
fn every_subcommand_help_exits_0_and_shows_an_example() -> TestResult {
    let subs = subcommands()?;
    for s in &subs {
        let r = trove_env(Path::new("/"), &[OsStr::new(s), OsStr::new("--help")], &[])?;
        r.expect_code(0);
        assert!(
            r.stdout.to_lowercase().contains("example"),
            "`trove {s} --help` shows an example\n{}",
            r.stdout
        );
        assert!(
            r.stdout.contains(&format!("trove {s}")),
            "`trove {s} --help` shows its usage\n{}",
            r.stdout
        );
    }
    let top = trove_env(Path::new("/"), &[OsStr::new("--help")], &[])?;
    assert!(
        top.stdout.to_lowercase().contains("example"),
        "{}",
        top.stdout
    );
    Ok(())
}

#[test]
fn completions_for_bash_zsh_and_fish_name_trove_and_its_subcommands() -> TestResult {
    let subs = subcommands()?;
    for shell in ["bash", "zsh", "fish"] {
        let r = trove_env(
            Path::new("/"),
            &[OsStr::new("completions"), OsStr::new(shell)],
            &[],
        )?;
        r.expect_code(0);
        assert!(r.stdout.contains("trove"), "{shell}: names trove");
        for s in ["backup", "restore", "mirror", "dupes", "verify"] {
            assert!(r.stdout.contains(s), "{shell} completion offers {s}");
        }
        let offered = subs
            .iter()
            .filter(|s| r.stdout.contains(s.as_str()))
            .count();
        assert_eq!(offered, subs.len(), "{shell}: every subcommand");
        assert!(
            r.stdout.contains("exclude-larger-than"),
            "{shell}: subcommand options too"
        );
    }
    for bad in ["tcsh", "cmd.exe"] {
        let r = trove_env(
            Path::new("/"),
            &[OsStr::new("completions"), OsStr::new(bad)],
            &[],
        )?;
        r.expect_code(2);
        assert!(r.stderr.contains(bad), "names {bad}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "no script for {bad}");
    }
    let r = trove_env(Path::new("/"), &[OsStr::new("completions")], &[])?;
    r.expect_code(2);
    Ok(())
}

#[test]
fn man_page_is_roff_and_documents_every_subcommand() -> TestResult {
    let r = trove_env(Path::new("/"), &[OsStr::new("man")], &[])?;
    r.expect_code(0);
    let first = r.stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with('.') || first.starts_with("'\\\""),
        "starts with a roff request: {first:?}"
    );
    assert!(
        r.stdout.lines().any(|l| l.starts_with(".TH ")),
        "a .TH title line"
    );
    assert!(r.stdout.contains(".SH NAME"), "a NAME section");
    for s in subcommands()? {
        let header = format!(".SH \"TROVE {}\"", s.to_uppercase());
        assert!(r.stdout.contains(&header), "a section for {s}: {header}");
    }
    // Subcommand options are documented too (roff escapes '-').
    assert!(r.stdout.contains("exclude\\-larger\\-than"));
    assert!(r.stdout.contains("keep\\-daily"));
    Ok(())
}

// ---------------------------------------------------------------- --json

#[test]
fn every_json_output_is_one_json_document() -> TestResult {
    let env = TestEnv::new()?;
    fill(&env)?;

    let fresh = env.root().join("fresh");
    let fresh_s = fresh.display().to_string();
    let v = json_of(trove(&env, &["init", &fresh_s, "--json"])?, "init")?;
    assert_eq!(v["created"], true, "{v}");
    assert!(v["hash"].is_string(), "{v}");
    let v = json_of(trove(&env, &["--json", "init", &fresh_s])?, "init again")?;
    assert_eq!(v["created"], false, "{v}");

    let r = env.backup_ok(&["--json"])?;
    let v = parse(&r, "backup")?;
    assert_eq!(u(&v, "files")?, 5, "{v}");
    change(&env)?;
    let r = env.backup_ok(&["--json"])?;
    let v = parse(&r, "second backup")?;
    assert_eq!(v["modified"], 1, "{v}");
    let (a, b) = snapshot_ids(&env)?;

    let v = json_of(repo(&env, &["snapshots", "--json"])?, "snapshots")?;
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");
    let v = json_of(repo(&env, &["ls", "--json"])?, "ls")?;
    assert!(v.as_array().is_some_and(|a| !a.is_empty()), "{v}");
    let v = json_of(repo(&env, &["ls", "--json", &a, "sub"])?, "ls SNAP PATH")?;
    assert!(v.as_array().is_some_and(|a| a.len() == 4), "{v}");

    let t1 = env.root().join("r1").display().to_string();
    let v = json_of(
        repo(&env, &["restore", "--json", "--target", &t1])?,
        "restore",
    )?;
    assert_eq!(v["files_restored"], v["files"], "{v}");
    let t2 = env.root().join("r2").display().to_string();
    let v = json_of(
        repo(
            &env,
            &[
                "restore",
                "--json",
                "--dry-run",
                "--snapshot",
                &a,
                "--target",
                &t2,
            ],
        )?,
        "restore --dry-run",
    )?;
    assert_eq!(v["dry_run"], true, "{v}");
    assert!(!Path::new(&t2).join("one.txt").exists());

    let v = json_of(repo(&env, &["verify", "--json"])?, "verify")?;
    assert_eq!(len(&v, "problems")?, 0, "{v}");
    let v = json_of(
        repo(&env, &["verify", "--json", "--quick"])?,
        "verify --quick",
    )?;
    assert_eq!(len(&v, "problems")?, 0, "{v}");
    let v = json_of(repo(&env, &["materialize", "--json"])?, "materialize")?;
    assert!(v["entries"].is_u64(), "{v}");
    let v = json_of(repo(&env, &["diff", "--json", &a, &b])?, "diff")?;
    assert!(v["changes"].is_array(), "{v}");
    let v = json_of(
        repo(&env, &["history", "--json", "sub/two.txt"])?,
        "history",
    )?;
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");
    let v = json_of(repo(&env, &["prune", "--dry-run", "--json"])?, "prune")?;
    assert_eq!(v["dry_run"], true, "{v}");
    let v = json_of(repo(&env, &["stats", "--json"])?, "stats")?;
    assert_eq!(u(&v, "snapshots")?, 2, "{v}");

    let m = env.root().join("m").display().to_string();
    let src = env.source.display().to_string();
    let v = json_of(trove(&env, &["mirror", "--json", &src, &m])?, "mirror")?;
    assert_eq!(v["applied"], false, "{v}");
    let v = json_of(
        trove(&env, &["mirror", "--json", "--apply", &src, &m])?,
        "mirror --apply",
    )?;
    assert_eq!(v["applied"], true, "{v}");
    let v = json_of(trove(&env, &["dupes", "--json", &src])?, "dupes")?;
    assert_eq!(len(&v, "sets")?, 1, "{v}");
    Ok(())
}

#[test]
fn backup_json_counts_equal_the_summary_line() -> TestResult {
    let json = TestEnv::new()?;
    let human = TestEnv::new()?;
    for env in [&json, &human] {
        fill(env)?;
        env.write("skip.tmp", "excluded")?;
    }
    for round in 0..2 {
        if round == 1 {
            change(&json)?;
            change(&human)?;
        }
        let v = parse(
            &json.backup_ok(&["--json", "--exclude", "*.tmp"])?,
            "backup",
        )?;
        let h = human.backup_ok(&["--exclude", "*.tmp"])?;
        assert_eq!(
            parse_summary(&h.stdout),
            Some((u(&v, "copied")?, u(&v, "unchanged")?, u(&v, "files")?)),
            "round {round}: copied/unchanged/total\n{}\n{v}",
            h.stdout
        );
        let line = line_starting(&h.stdout, "Run complete: ")?;
        assert_eq!(num_before(line, " excluded")?, u(&v, "excluded")?, "{line}");
        assert_eq!(num_before(line, " new object")?, u(&v, "new_objects")?);
        assert!(
            line.contains(&format!("({} stored", human_bytes(u(&v, "new_bytes")?))),
            "{line}\n{v}"
        );
    }
    Ok(())
}

#[test]
fn verify_restore_diff_prune_stats_and_snapshots_json_equal_the_human_numbers() -> TestResult {
    let env = two_snapshots()?;
    let (a, b) = snapshot_ids(&env)?;

    // verify: the last line is `verify: N objects, M problems`.
    let h = repo(&env, &["verify"])?;
    h.expect_code(0);
    let v = json_of(repo(&env, &["verify", "--json"])?, "verify")?;
    let last = h.stdout.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!(
            "verify: {} objects, {} problems",
            u(&v, "objects")?,
            len(&v, "problems")?
        )
    );
    let line = line_starting(&h.stdout, &format!("{} snapshots, ", u(&v, "snapshots")?))?;
    assert_eq!(num_before(line, " trees")?, u(&v, "trees")?);
    assert_eq!(
        num_before(line, " browsable entries")?,
        u(&v, "browsable_entries")?
    );

    // restore, and its dry run.
    let t = env.root().join("restored").display().to_string();
    let th = env.root().join("restored-h").display().to_string();
    let v = json_of(
        repo(&env, &["restore", "--json", "--target", &t])?,
        "restore",
    )?;
    let h = repo(&env, &["restore", "--target", &th])?;
    h.expect_code(0);
    let line = line_starting(&h.stdout, "restored ")?;
    assert_eq!(
        num_before(line, " of ")?,
        u(&v, "files_restored")?,
        "{line}"
    );
    assert_eq!(num_before(line, " files")?, u(&v, "files")?, "{line}");
    assert_eq!(num_before(line, " directories")?, u(&v, "dirs")?, "{line}");
    assert_eq!(num_before(line, " symlinks")?, u(&v, "symlinks")?, "{line}");
    assert!(line.contains(&format!("({})", human_bytes(u(&v, "bytes_restored")?))));
    let snap = v["snapshot"].as_str().ok_or("restore snapshot")?;
    assert!(line.contains(&format!("from snapshot {snap} ")), "{line}");

    let dry_args = ["restore", "--dry-run", "--snapshot", &a, "--target"];
    let dt = env.root().join("dry").display().to_string();
    let v = json_of(
        repo(&env, &[&dry_args[..], &[&dt[..], "--json"][..]].concat())?,
        "restore --dry-run",
    )?;
    let h = repo(&env, &[&dry_args[..], &[&dt[..]][..]].concat())?;
    h.expect_code(0);
    let would: Vec<&str> = h
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("would restore: "))
        .collect();
    let jw: Vec<&str> = v["would_write"]
        .as_array()
        .ok_or("would_write")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(would, jw, "the same paths");
    let line = line_starting(&h.stdout, "would restore ")?;
    assert_eq!(num_before(line, " files")?, u(&v, "files")?, "{line}");
    assert_eq!(num_before(line, " directories")?, u(&v, "dirs")?, "{line}");
    assert_eq!(num_before(line, " symlinks")?, u(&v, "symlinks")?, "{line}");

    // diff: one line per change, then the summary.
    let v = json_of(repo(&env, &["diff", "--json", &a, &b])?, "diff")?;
    let h = repo(&env, &["diff", &a, &b])?;
    h.expect_code(0);
    let lines: Vec<&str> = h.stdout.lines().collect();
    assert_eq!(lines.len() as u64, len(&v, "changes")? + 1, "{}", h.stdout);
    let s = &v["summary"];
    let last = lines.last().copied().unwrap_or_default();
    for (label, key) in [
        (" added", "added"),
        (" removed", "removed"),
        (" modified", "modified"),
        (" type changed", "type_changed"),
        (" metadata only", "metadata"),
    ] {
        assert_eq!(num_before(last, label)?, u(s, key)?, "{key}: {last}");
    }
    assert!(u(s, "added")? >= 1 && u(s, "removed")? >= 1 && u(s, "modified")? >= 1);

    // prune --dry-run with a policy that forgets the first snapshot.
    let args = ["prune", "--dry-run", "--keep-last", "1"];
    let v = json_of(repo(&env, &[&args[..], &["--json"][..]].concat())?, "prune")?;
    let h = repo(&env, &args)?;
    h.expect_code(0);
    let g = &v["gc"];
    let line = line_starting(&h.stdout, "prune: would remove ")?;
    assert_eq!(
        num_before(line, " snapshots,")?,
        len(g, "forgotten")?,
        "{line}"
    );
    assert_eq!(
        num_before(line, " versions/deleted")?,
        u(&v, "retention_removed")?
    );
    assert_eq!(num_before(line, " objects (")?, u(g, "objects_removed")?);
    assert_eq!(num_before(line, " trees (")?, u(g, "trees_removed")?);
    assert_eq!(num_before(line, " snapshots kept")?, len(g, "kept")?);
    let would_delete = h
        .stdout
        .lines()
        .filter(|l| l.starts_with("would delete object "))
        .count() as u64;
    assert_eq!(would_delete, len(g, "objects")?);
    assert!(len(g, "forgotten")? == 1, "the policy forgets one: {v}");
    assert_eq!(env.snapshot_count()?, 2, "a dry run forgets nothing");

    // stats.
    let v = json_of(repo(&env, &["stats", "--json"])?, "stats")?;
    let h = repo(&env, &["stats"])?;
    h.expect_code(0);
    assert_eq!(field(&h.stdout, "snapshots")?, u(&v, "snapshots")?);
    assert_eq!(field(&h.stdout, "deleted entries")?, u(&v, "deleted")?);
    assert_eq!(field(&h.stdout, "stored")?, u(&v, "objects")?);
    let versions = line_starting(&h.stdout, "versions kept:")?;
    assert_eq!(num_before(versions, " (")?, u(&v, "versions")?);
    let latest = line_starting(&h.stdout, "latest:")?;
    assert_eq!(num_before(latest, " files")?, u(&v["latest"], "files")?);

    // snapshots.
    let v = json_of(repo(&env, &["snapshots", "--json"])?, "snapshots")?;
    let h = repo(&env, &["snapshots"])?;
    let rows = v.as_array().ok_or("snapshots array")?;
    assert!(h.stdout.contains(&format!("{} snapshots", rows.len())));
    for row in rows {
        let id = row["id"].as_str().ok_or("id")?;
        let l = line_starting(&h.stdout, id)?;
        assert!(
            l.contains(&format!(
                "+{} ~{} -{}",
                u(row, "added")?,
                u(row, "modified")?,
                u(row, "deleted")?
            )),
            "{l}\n{row}"
        );
    }
    Ok(())
}

#[test]
fn mirror_and_dupes_json_equal_the_human_numbers() -> TestResult {
    let env = TestEnv::new()?;
    fill(&env)?;
    env.write("dup/a.bin", Lcg(3).bytes(10_000))?;
    env.write("dup/b.bin", Lcg(3).bytes(10_000))?;
    env.write("dup/c.bin", Lcg(3).bytes(10_000))?;
    let src = env.source.display().to_string();

    // Two identical DESTs: a stale file, an equal file with another mtime,
    // a changed file.
    let dests: Vec<String> = ["m-json", "m-human"]
        .iter()
        .map(|d| env.root().join(d).display().to_string())
        .collect();
    for d in &dests {
        let d = Path::new(d);
        std::fs::create_dir_all(d.join("sub"))?;
        std::fs::write(d.join("stale.txt"), "stale")?;
        std::fs::write(d.join("one.txt"), "hello world")?;
        std::fs::write(d.join("sub/two.txt"), "TWO")?;
        // Another mtime than SRC's for sure: the size and mtime quick
        // check must not take them as equal.
        let old = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        for f in ["one.txt", "sub/two.txt"] {
            std::fs::File::options()
                .write(true)
                .open(d.join(f))?
                .set_modified(old)?;
        }
    }
    let dry_json = json_of(
        trove(&env, &["mirror", "--json", &src, &dests[0]])?,
        "mirror dry run",
    )?;
    let dry_h = trove(&env, &["mirror", &src, &dests[1]])?;
    dry_h.expect_code(0);
    let check = |v: &Value, text: &str, prefix: &str| -> TestResult {
        let line = line_starting(text, prefix)?;
        assert_eq!(
            num_before(line, " to copy")?,
            len(v, "copy")?,
            "{line}\n{v}"
        );
        assert_eq!(num_before(line, " to delete")?, len(v, "delete")?, "{line}");
        assert_eq!(
            num_before(line, " with only mode/mtime")?,
            u(v, "metadata")?
        );
        assert_eq!(
            num_before(line, " unchanged")?,
            u(v, "unchanged")?,
            "{line}"
        );
        assert!(
            line.contains(&format!("({})", human_bytes(u(v, "bytes_copied")?))),
            "{line}\n{v}"
        );
        let (c, d) = if v["applied"] == true {
            ("COPY: ", "DELETE: ")
        } else {
            ("WOULD COPY: ", "WOULD DELETE: ")
        };
        let copies = text.lines().filter(|l| l.starts_with(c)).count() as u64;
        let deletes = text.lines().filter(|l| l.starts_with(d)).count() as u64;
        assert_eq!((copies, deletes), (len(v, "copy")?, len(v, "delete")?));
        Ok(())
    };
    check(&dry_json, &dry_h.stdout, "dry run: ")?;
    assert_eq!(len(&dry_json, "delete")?, 1, "{dry_json}");
    assert!(u(&dry_json, "metadata")? >= 1, "one.txt: {dry_json}");
    assert!(
        dry_json["copy"]
            .as_array()
            .is_some_and(|c| c.iter().any(|p| p == "sub/two.txt")),
        "{dry_json}"
    );

    let apply_json = json_of(
        trove(&env, &["mirror", "--json", "--apply", &src, &dests[0]])?,
        "mirror --apply",
    )?;
    let apply_h = trove(&env, &["mirror", "--apply", &src, &dests[1]])?;
    apply_h.expect_code(0);
    check(&apply_json, &apply_h.stdout, "mirrored: ")?;
    for k in ["copy", "delete", "metadata", "unchanged"] {
        assert_eq!(apply_json[k], dry_json[k], "the dry run predicted {k}");
    }

    // dupes.
    let v = json_of(trove(&env, &["dupes", "--json", &src])?, "dupes")?;
    let h = trove(&env, &["dupes", &src])?;
    h.expect_code(0);
    let line = line_starting(&h.stdout, &format!("{} duplicate sets, ", len(&v, "sets")?))?;
    assert_eq!(
        num_before(line, " files, ")?,
        u(&v, "duplicate_files")?,
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "{} ({} bytes) wasted",
            human_bytes(u(&v, "wasted")?),
            "20,011"
        )),
        "{line}\n{v}"
    );
    assert_eq!(num_before(line, " files, ")?, 5, "3 + 2 copies");
    assert_eq!(
        num_before(&line[line.find('(').unwrap_or(0)..], " files")?,
        u(&v, "files_scanned")?
    );
    assert_eq!(
        num_before(line, " compared")?,
        u(&v, "files_partially_hashed")?
    );
    assert_eq!(
        num_before(line, " hashed in full")?,
        u(&v, "files_fully_hashed")?
    );
    assert_eq!(u(&v, "wasted")?, 2 * 10_000 + 11, "{v}");
    Ok(())
}

// ---------------------------------------------------------------- colour and progress

#[test]
fn no_color_turns_off_help_colours() -> TestResult {
    // To a pipe: never colours.
    for vars in [&[][..], &[("NO_COLOR", "1")][..]] {
        let r = trove_env(Path::new("/"), &[OsStr::new("--help")], vars)?;
        r.expect_code(0);
        assert!(!r.stdout.contains("\x1b["), "{vars:?}: {:?}", r.stdout);
        let r = trove_env(
            Path::new("/"),
            &[OsStr::new("backup"), OsStr::new("--help")],
            vars,
        )?;
        assert!(!r.stdout.contains("\x1b["), "{vars:?}: {:?}", r.stdout);
    }
    // On a terminal: coloured, unless NO_COLOR.
    if !have_script() {
        return Ok(());
    }
    let (code, plain) = on_terminal(Path::new("/"), &["--help"], &[])?;
    assert_eq!(code, Some(0));
    assert!(
        plain.contains("\x1b["),
        "control: --help on a terminal is coloured without NO_COLOR: {plain:?}"
    );
    for args in [
        &["--help"][..],
        &["backup", "--help"][..],
        &["mirror", "-h"][..],
    ] {
        let (code, text) = on_terminal(Path::new("/"), args, &[("NO_COLOR", "1")])?;
        assert_eq!(code, Some(0), "{args:?}");
        assert!(text.contains("Usage:"), "{args:?}: {text:?}");
        assert!(!text.contains("\x1b["), "NO_COLOR=1 {args:?}: {text:?}");
    }
    Ok(())
}

#[test]
fn output_to_a_pipe_has_no_escapes_and_no_progress_bars() -> TestResult {
    let env = TestEnv::new()?;
    fill(&env)?;
    let src = env.source.display().to_string();
    let t = env.root().join("restored").display().to_string();
    let m = env.root().join("m").display().to_string();
    let mut runs: Vec<(String, Run)> = Vec::new();
    for verbose in [&[][..], &["-v"][..]] {
        let b = env.backup(verbose)?;
        b.expect_code(0);
        runs.push((format!("backup {verbose:?}"), b));
    }
    runs.push(("restore".into(), repo(&env, &["restore", "--target", &t])?));
    runs.push(("verify".into(), repo(&env, &["verify"])?));
    runs.push(("verify -v".into(), repo(&env, &["-v", "verify"])?));
    runs.push(("dupes".into(), trove(&env, &["dupes", &src])?));
    runs.push(("mirror".into(), trove(&env, &["mirror", &src, &m])?));
    runs.push((
        "mirror --apply".into(),
        trove(&env, &["mirror", "--apply", "-v", &src, &m])?,
    ));
    for (what, r) in &runs {
        r.expect_code(0);
        assert!(!r.stdout.is_empty(), "{what} says something");
        let found = terminal_artifacts(&r.console());
        assert!(
            found.is_empty(),
            "{what} to a pipe: {found:?}\n--- stdout\n{}\n--- stderr\n{:?}",
            r.stdout,
            r.stderr
        );
    }
    Ok(())
}

#[test]
fn progress_is_drawn_on_a_terminal_only_without_quiet_and_json() -> TestResult {
    if !have_script() {
        return Ok(());
    }
    let env = TestEnv::new()?;
    fill(&env)?;
    let src = env.source.display().to_string();
    let dst = env.backup.display().to_string();

    // Control: on a terminal a backup draws its progress.
    let (code, text) = on_terminal(env.root(), &["backup", &src, &dst], &[])?;
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("\x1b[2K") || !terminal_artifacts(&text).is_empty(),
        "control: a progress display on a terminal: {text:?}"
    );
    assert!(text.contains("Run complete"), "{text:?}");

    // -q: nothing at all, not even the bar.
    env.write("new.bin", Lcg(5).bytes(2_000_000))?;
    let (code, text) = on_terminal(env.root(), &["backup", "-q", &src, &dst], &[])?;
    assert_eq!(code, Some(0));
    assert_eq!(text.trim(), "", "-q on a terminal prints nothing: {text:?}");

    // --json: the document only, no bar around it.
    env.write("newer.bin", Lcg(6).bytes(2_000_000))?;
    let (code, text) = on_terminal(env.root(), &["backup", "--json", &src, &dst], &[])?;
    assert_eq!(code, Some(0));
    assert!(terminal_artifacts(&text).is_empty(), "{text:?}");
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| format!("--json on a terminal is one document: {e}\n{text:?}"))?;
    assert_eq!(v["copied"], 1, "{v}");

    let dstp = env.backup.display().to_string();
    for args in [
        &["--repo", &dstp, "verify", "--json"][..],
        &["--repo", &dstp, "verify", "-q"][..],
        &["dupes", "--json", &src][..],
    ] {
        let (code, text) = on_terminal(env.root(), args, &[])?;
        assert_eq!(code, Some(0), "{args:?}: {text}");
        assert!(
            terminal_artifacts(&text).is_empty(),
            "{args:?} on a terminal: {text:?}"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- -q and errors

#[test]
fn quiet_backup_prints_nothing_and_errors_still_reach_stderr() -> TestResult {
    let env = TestEnv::new()?;
    fill(&env)?;
    for (what, args) in [
        ("first run", &["-q"][..]),
        ("dry run", &["-q", "--dry-run"][..]),
        ("no-change run", &["-q"][..]),
    ] {
        let r = env.backup(args)?;
        r.expect_code(0);
        assert_eq!(r.stdout, "", "{what}: -q prints nothing on stdout");
        assert_eq!(r.stderr, "", "{what}: nor on stderr");
    }
    change(&env)?;
    let r = env.backup(&["-q"])?;
    r.expect_code(0);
    assert_eq!(r.console(), "");
    assert!(
        r.messages().iter().any(|m| m.contains(" copied, ")),
        "the audit log still has the summary: {}",
        r.log
    );

    // Usage errors: exit 2, on stderr, naming the culprit.
    for (args, names) in [
        (&["-q", "--no-such-flag"][..], "--no-such-flag"),
        (&["-q", "--on-error", "explode"][..], "explode"),
        (&["-q", "--exclude-larger-than", "1Q"][..], "1Q"),
    ] {
        let r = env.backup(args)?;
        r.expect_code(2);
        assert_eq!(r.stdout, "", "{args:?}");
        assert!(r.stderr.contains(names), "{args:?}: {}", r.stderr);
    }
    let missing = env.root().join("no-such-source");
    let r = env
        .cmd()?
        .args(["backup", "-q"])
        .arg(&missing)
        .arg(&env.backup)
        .output()?;
    assert_eq!(r.status.code(), Some(2));
    assert!(r.stdout.is_empty());
    assert!(String::from_utf8_lossy(&r.stderr).contains("no-such-source"));

    // A file that cannot be backed up: exit 1; the audit log names it
    // (docs/SCHEDULING.md); with --on-error fail it is an error on stderr.
    // (A folder that contains itself through a followed symlink.)
    let fifo = env.src("loop");
    std::os::unix::fs::symlink(".", &fifo)?;
    let r = env.backup(&["-q", "--follow-symlinks"])?;
    r.expect_code(1);
    assert_eq!(r.stdout, "");
    assert!(r.log.contains(&fifo.display().to_string()), "{}", r.log);
    let r = env.backup(&["-q", "--follow-symlinks", "--on-error", "fail"])?;
    r.expect_code(1);
    assert_eq!(r.stdout, "");
    assert!(
        r.stderr.contains(&fifo.display().to_string()),
        "an error under -q still reaches stderr: {}",
        r.stderr
    );
    Ok(())
}

/// Run `trove ARGS…` with stdout a pipe whose reading end is already
/// closed (`trove … | head` after head exited).
fn with_closed_stdout(cwd: &Path, args: &[&str]) -> Res<std::process::Output> {
    let (reader, writer) = std::io::pipe()?;
    drop(reader);
    let child = std::process::Command::new(trove_bin())
        .current_dir(cwd)
        .env_remove("TROVE_REPO")
        .env("RUST_BACKTRACE", "0")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    Ok(child.wait_with_output()?)
}

#[test]
fn a_closed_stdout_pipe_is_not_a_failure() -> TestResult {
    // src/main.rs: "A closed pipe (`trove ls | head`) is not a failure."
    let env = two_snapshots()?;
    let repo_s = env.backup.display().to_string();
    let fresh = env.root().join("fresh").display().to_string();
    let mut bad = Vec::new();
    for args in [
        &["--repo", &repo_s, "ls"][..],
        &["--repo", &repo_s, "snapshots"][..],
        &["--repo", &repo_s, "ls", "--json"][..],
        &["--repo", &repo_s, "snapshots", "--json"][..],
        &["--repo", &repo_s, "stats", "--json"][..],
        &["completions", "bash"][..],
        &["completions", "zsh"][..],
        &["completions", "fish"][..],
        &["man"][..],
        &["--help"][..],
        &["init", &fresh][..],
    ] {
        let out = with_closed_stdout(env.root(), args)?;
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(0) || err.contains("panicked") || !err.trim().is_empty() {
            bad.push(format!(
                "trove {}: exit {:?}, stderr {:?}",
                args.join(" "),
                out.status.code(),
                err.lines().take(2).collect::<Vec<_>>().join(" | ")
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "expected exit 0 and nothing on stderr when stdout's reader has gone:\n{}",
        bad.join("\n")
    );
    Ok(())
}
