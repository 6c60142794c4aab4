//! `trove diff A B` and `trove history PATH` (SPEC §5): what changed
//! between two snapshots, restic's markers, in path order; every state one
//! path went through, with where each content is in the browsable tree.

use crate::common::*;
use std::os::unix::fs::PermissionsExt;

/// Two snapshots: A, then B with one change of every kind.
fn two_snapshots() -> Res<(TestEnv, String, String)> {
    let env = TestEnv::new()?;
    env.write("keep.txt", "unchanged\n")?;
    env.write("removed.txt", "removed in B\n")?;
    env.write("mod.txt", "first content\n")?;
    env.write("chmod.txt", "mode changes only\n")?;
    env.write("thing", "a file in A, a folder in B\n")?;
    env.write("sub/x.txt", "in a folder whose mode changes\n")?;
    std::os::unix::fs::symlink("keep.txt", env.src("link"))?;
    std::fs::set_permissions(env.src("chmod.txt"), std::fs::Permissions::from_mode(0o644))?;
    std::fs::set_permissions(env.src("sub"), std::fs::Permissions::from_mode(0o755))?;
    env.backup_ok(&[])?;

    env.write("added.txt", "new in B\n")?;
    std::fs::remove_file(env.src("removed.txt"))?;
    env.write("mod.txt", "second, longer content\n")?;
    std::fs::set_permissions(env.src("chmod.txt"), std::fs::Permissions::from_mode(0o600))?;
    std::fs::set_permissions(env.src("sub"), std::fs::Permissions::from_mode(0o700))?;
    std::fs::remove_file(env.src("thing"))?;
    env.write("thing/inner.txt", "inside\n")?;
    std::fs::remove_file(env.src("link"))?;
    std::os::unix::fs::symlink("mod.txt", env.src("link"))?;
    env.backup_ok(&[])?;

    let ids = env.snapshot_ids()?;
    assert_eq!(ids.len(), 2);
    Ok((env, ids[0].0.clone(), ids[1].0.clone()))
}

/// The `MARKER    path` lines of a human diff.
fn change_lines(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| {
            let mut c = l.chars();
            matches!(c.next(), Some('+' | '-' | 'M' | 'U' | 'T')) && l[1..].starts_with("    ")
        })
        .map(str::to_string)
        .collect()
}

fn diff_json(env: &TestEnv, a: &str, b: &str) -> Res<serde_json::Value> {
    let r = env.repo_run(&["diff", a, b, "--json"])?;
    r.expect_code(0);
    Ok(serde_json::from_str(&r.stdout)?)
}

/// `(change, path, type)` of every JSON change.
fn json_changes(v: &serde_json::Value) -> Res<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    for c in v["changes"].as_array().ok_or("no changes array")? {
        let field = |k: &str| -> Res<String> {
            Ok(c[k]
                .as_str()
                .ok_or_else(|| format!("change without {k}: {c}"))?
                .to_string())
        };
        out.push((field("change")?, field("path")?, field("type")?));
    }
    Ok(out)
}

fn triples(v: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    v.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

/// The summary counts agree with the changes listed.
fn assert_summary_matches(v: &serde_json::Value) -> Res<()> {
    let changes = json_changes(v)?;
    for kind in ["added", "removed", "modified", "metadata", "type_changed"] {
        let n = changes.iter().filter(|(c, _, _)| c == kind).count() as u64;
        assert_eq!(v["summary"][kind].as_u64(), Some(n), "{kind} in {v}");
    }
    Ok(())
}

#[test]
fn diff_marks_every_kind_of_change_in_path_order() -> TestResult {
    let (env, a, b) = two_snapshots()?;
    let r = env.repo_run(&["diff", &a, &b])?;
    r.expect_code(0);
    assert_eq!(
        change_lines(&r.stdout),
        vec![
            "+    added.txt",
            "U    chmod.txt",
            "M    link",
            "M    mod.txt",
            "-    removed.txt",
            "U    sub/",
            "T    thing/",
            "+    thing/inner.txt",
        ],
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("keep.txt"), "{}", r.stdout);
    assert!(!r.stdout.contains("sub/x.txt"), "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!(
            "{a} → {b}: 2 added, 1 removed, 2 modified, 1 type changed, 2 metadata only"
        )),
        "{}",
        r.stdout
    );

    let v = diff_json(&env, &a, &b)?;
    assert_eq!(v["from"].as_str(), Some(a.as_str()));
    assert_eq!(v["to"].as_str(), Some(b.as_str()));
    assert_eq!(
        json_changes(&v)?,
        triples(&[
            ("added", "added.txt", "file"),
            ("metadata", "chmod.txt", "file"),
            ("modified", "link", "symlink"),
            ("modified", "mod.txt", "file"),
            ("removed", "removed.txt", "file"),
            ("metadata", "sub/", "dir"),
            ("type_changed", "thing/", "dir"),
            ("added", "thing/inner.txt", "file"),
        ])
    );
    assert_summary_matches(&v)?;
    assert_eq!(v["summary"]["added"], 2);
    assert_eq!(v["summary"]["removed"], 1);
    assert_eq!(v["summary"]["modified"], 2);
    assert_eq!(v["summary"]["type_changed"], 1);
    assert_eq!(v["summary"]["metadata"], 2);

    // `latest` and a full id name the same snapshots.
    let full_a = env.snapshot_ids()?[0].1.clone();
    assert_eq!(diff_json(&env, &full_a, "latest")?["changes"], v["changes"]);
    Ok(())
}

#[test]
fn diff_backwards_inverts_the_changes() -> TestResult {
    let (env, a, b) = two_snapshots()?;
    let v = diff_json(&env, &b, &a)?;
    assert_eq!(
        json_changes(&v)?,
        triples(&[
            ("removed", "added.txt", "file"),
            ("metadata", "chmod.txt", "file"),
            ("modified", "link", "symlink"),
            ("modified", "mod.txt", "file"),
            ("added", "removed.txt", "file"),
            ("metadata", "sub/", "dir"),
            ("type_changed", "thing", "file"),
            ("removed", "thing/inner.txt", "file"),
        ])
    );
    assert_summary_matches(&v)
}

#[test]
fn diff_of_a_snapshot_with_itself_is_empty() -> TestResult {
    let (env, a, b) = two_snapshots()?;
    for s in [&a, &b] {
        let r = env.repo_run(&["diff", s, s])?;
        r.expect_code(0);
        assert!(change_lines(&r.stdout).is_empty(), "{}", r.stdout);
        assert!(
            r.stdout.contains(
                "0 added, 0 removed, 0 modified, 0 type changed, 0 metadata only; +0 B -0 B"
            ),
            "{}",
            r.stdout
        );
        let v = diff_json(&env, s, s)?;
        assert_eq!(json_changes(&v)?, vec![]);
        assert_summary_matches(&v)?;
    }
    Ok(())
}

#[test]
fn diff_of_an_unknown_snapshot_is_a_usage_error() -> TestResult {
    let (env, a, _) = two_snapshots()?;
    let r = env.repo_run(&["diff", &a, "ffffffffffff"])?;
    r.expect_code(2);
    Ok(())
}

#[test]
fn history_lists_every_state_with_where_its_content_is_now() -> TestResult {
    let env = TestEnv::new()?;
    env.write("other.txt", "keeps every run a snapshot\n")?;
    let contents = ["first\n", "second, longer\n", "third, the longest\n"];
    for c in contents {
        env.write("f.txt", c)?;
        env.backup_ok(&[])?;
    }
    std::fs::remove_file(env.src("f.txt"))?;
    env.backup_ok(&[])?;
    let ids: Vec<String> = env.snapshot_ids()?.into_iter().map(|(s, _)| s).collect();
    assert_eq!(ids.len(), 4);

    let r = env.repo_run(&["history", "f.txt", "--json"])?;
    r.expect_code(0);
    let rows: serde_json::Value = serde_json::from_str(&r.stdout)?;
    let rows = rows.as_array().ok_or("history is not a list")?;
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["snapshot"].as_str().unwrap_or("?"),
                r["event"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    let want: Vec<(&str, &str)> = ids
        .iter()
        .map(String::as_str)
        .zip(["added", "modified", "modified", "deleted"])
        .collect();
    assert_eq!(got, want);
    let locations: Vec<Option<&str>> = rows.iter().map(|r| r["location"].as_str()).collect();
    assert_eq!(
        locations,
        vec![
            Some("versions/f.txt/v1.bak"),
            Some("versions/f.txt/v2.bak"),
            Some("_deleted/f.txt"),
            None
        ]
    );
    for (row, c) in rows.iter().zip(contents) {
        assert_eq!(row["type"], "file");
        assert_eq!(row["size"].as_u64(), Some(c.len() as u64));
        // The location really holds that content.
        let loc = row["location"].as_str().ok_or("no location")?;
        assert_eq!(std::fs::read(env.dst(loc))?, c.as_bytes());
    }
    assert!(rows[3].get("hash").is_none(), "{}", rows[3]);

    // The human table has the same rows, in the same order.
    let r = env.repo_run(&["history", "f.txt"])?;
    r.expect_code(0);
    let table: Vec<&str> = r.stdout.lines().skip(1).collect();
    assert_eq!(table.len(), 4, "{}", r.stdout);
    for ((line, id), (event, loc)) in table.iter().zip(&ids).zip([
        ("added", "versions/f.txt/v1.bak"),
        ("modified", "versions/f.txt/v2.bak"),
        ("modified", "_deleted/f.txt"),
        ("deleted", ""),
    ]) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols.first(), Some(&id.as_str()), "{line}");
        assert!(cols.contains(&event), "{line}");
        assert!(line.trim_end().ends_with(loc), "{line}");
    }
    Ok(())
}

/// `history` finds a nested path's current content and archive record by
/// walking only the trees on its way; the top-level name `versions` is
/// reserved in the browsable tree, so its current location is an escaped
/// one, and every location it names holds that row's content.
#[test]
fn history_locates_a_nested_path_below_a_reserved_top_level_name() -> TestResult {
    let env = TestEnv::new()?;
    env.write(
        "keep.txt",
        "keeps the tree from being empty
",
    )?;
    let rel = "versions/deep/er/f.txt";
    let contents = ["one\n", "two, longer\n", "three, longer still\n"];
    for c in contents {
        env.write(rel, c)?;
        env.backup_ok(&[])?;
    }
    let r = env.repo_run(&["history", rel, "--json"])?;
    r.expect_code(0);
    let rows: serde_json::Value = serde_json::from_str(&r.stdout)?;
    let rows = rows.as_array().ok_or("history is not a list")?;
    let events: Vec<&str> = rows.iter().filter_map(|r| r["event"].as_str()).collect();
    assert_eq!(events, vec!["added", "modified", "modified"]);
    let locations: Vec<&str> = rows
        .iter()
        .map(|r| r["location"].as_str().ok_or("no location"))
        .collect::<Result<_, _>>()?;
    assert_eq!(locations[0], format!("versions/{rel}/v1.bak"));
    assert_eq!(locations[1], format!("versions/{rel}/v2.bak"));
    assert_ne!(locations[2], rel, "the reserved top-level name is escaped");
    for (loc, c) in locations.iter().zip(contents) {
        assert_eq!(std::fs::read(env.dst(loc))?, c.as_bytes(), "{loc}");
    }
    Ok(())
}

#[test]
fn history_shows_a_metadata_only_change() -> TestResult {
    let env = TestEnv::new()?;
    env.write("f.txt", "same bytes\n")?;
    env.backup_ok(&[])?;
    std::fs::set_permissions(env.src("f.txt"), std::fs::Permissions::from_mode(0o600))?;
    env.backup_ok(&[])?;
    let r = env.repo_run(&["history", "f.txt", "--json"])?;
    r.expect_code(0);
    let rows: serde_json::Value = serde_json::from_str(&r.stdout)?;
    let events: Vec<&str> = rows
        .as_array()
        .ok_or("history is not a list")?
        .iter()
        .filter_map(|r| r["event"].as_str())
        .collect();
    assert_eq!(events, vec!["added", "metadata"]);
    assert_eq!(rows[1]["location"], "f.txt");
    assert_eq!(rows[0]["hash"], rows[1]["hash"]);
    Ok(())
}

#[test]
fn history_of_a_path_never_recorded_is_a_usage_error() -> TestResult {
    let env = TestEnv::new()?;
    env.write("f.txt", "x")?;
    env.backup_ok(&[])?;
    let r = env.repo_run(&["history", "never-there.txt"])?;
    r.expect_code(2);
    assert!(r.stderr.contains("never-there.txt"), "{}", r.stderr);
    let r = env.repo_run(&["history", "../f.txt"])?;
    r.expect_code(2);
    Ok(())
}

#[test]
fn diff_order_is_the_path_order_of_ls() -> TestResult {
    let env = TestEnv::new()?;
    env.write("base.txt", "base")?;
    env.backup_ok(&[])?;
    // `d/` sorts before `d-e` and `d.txt` in trove's path order (the
    // separator first), not in plain byte order.
    env.write("d.txt", "1")?;
    env.write("d-e", "2")?;
    env.write("d/x", "3")?;
    env.write("d/y/z", "4")?;
    env.write("c", "5")?;
    env.backup_ok(&[])?;
    let ids = env.snapshot_ids()?;
    let v = diff_json(&env, &ids[0].0, &ids[1].0)?;
    let diffed: Vec<String> = json_changes(&v)?
        .into_iter()
        .map(|(_, p, _)| p.trim_end_matches('/').to_string())
        .collect();
    let r = env.repo_run(&["ls", "latest", "--json"])?;
    r.expect_code(0);
    let ls: serde_json::Value = serde_json::from_str(&r.stdout)?;
    let listed: Vec<String> = ls
        .as_array()
        .ok_or("ls is not a list")?
        .iter()
        .filter_map(|e| e["path"].as_str())
        .filter(|p| *p != "base.txt")
        .map(str::to_string)
        .collect();
    assert_eq!(diffed, listed);
    assert_eq!(
        diffed,
        vec!["c", "d", "d/x", "d/y", "d/y/z", "d-e", "d.txt"]
    );
    Ok(())
}
