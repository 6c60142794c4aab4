//! SPEC §8 and §6: config mistakes are exit 2 with a message naming the key
//! and the file; relative paths are relative to the config file; a backup
//! root and a source must not contain each other the wrong way round.

use crate::common::{Res, TestEnv, TestResult};
use std::path::{Path, PathBuf};

/// Write `tmp/conf/config.json` and run `trove backup --config FILE` from
/// `tmp/elsewhere`.
fn run_config(env: &TestEnv, json: &str) -> Res<(PathBuf, assert_cmd::assert::Assert)> {
    let conf_dir = env.root().join("conf");
    std::fs::create_dir_all(&conf_dir)?;
    let cfg = conf_dir.join("config.json");
    std::fs::write(&cfg, json)?;
    let elsewhere = env.root().join("elsewhere");
    std::fs::create_dir_all(&elsewhere)?;
    let a = env
        .cmd()?
        .current_dir(&elsewhere)
        .arg("backup")
        .arg("--config")
        .arg(&cfg)
        .assert();
    Ok((cfg, a))
}

fn expect_config_error(json: &str, key: &str) -> TestResult {
    let env = TestEnv::new()?;
    let (cfg, a) = run_config(&env, json)?;
    let out = a.get_output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{json}: {stderr}");
    assert!(
        stderr.contains(key),
        "{json}: the message names {key:?}: {stderr}"
    );
    assert!(
        stderr.contains(&cfg.display().to_string()),
        "{json}: the message names the file: {stderr}"
    );
    assert!(
        !env.backup.exists(),
        "{json}: nothing is created on a config error"
    );
    Ok(())
}

const OK: &str = r#""sources": ["../source"], "backup_root": "../backup""#;

#[test]
fn unknown_key_is_exit_2_naming_key_and_file() -> TestResult {
    expect_config_error(&format!(r#"{{{OK}, "colour": "blue"}}"#), "colour")
}

#[test]
fn unknown_nested_key_is_exit_2_naming_key_and_file() -> TestResult {
    expect_config_error(
        &format!(r#"{{{OK}, "retention": {{"max_versions": 3}}}}"#),
        "retention.max_versions",
    )
}

#[test]
fn wrong_type_is_exit_2_naming_key_and_file() -> TestResult {
    expect_config_error(
        &format!(r#"{{{OK}, "retention": {{"max_versions_per_file": "ten"}}}}"#),
        "retention.max_versions_per_file",
    )?;
    expect_config_error(
        &format!(r#"{{{OK}, "follow_symlinks": "yes"}}"#),
        "follow_symlinks",
    )
}

#[test]
fn missing_source_is_exit_2_naming_key_and_file() -> TestResult {
    expect_config_error(
        r#"{"sources": ["../no_such_dir"], "backup_root": "../backup"}"#,
        "sources",
    )
}

#[test]
fn zero_max_versions_is_exit_2_naming_key_and_file() -> TestResult {
    expect_config_error(
        &format!(r#"{{{OK}, "retention": {{"max_versions_per_file": 0}}}}"#),
        "max_versions_per_file",
    )
}

#[test]
fn unknown_hash_is_exit_2_naming_key_and_file() -> TestResult {
    expect_config_error(
        &format!(r#"{{{OK}, "hash_algorithm": "md5"}}"#),
        "hash_algorithm",
    )
}

#[test]
fn malformed_json_is_exit_2_naming_the_file() -> TestResult {
    // The parser's position stands in for a key.
    expect_config_error(
        r#"{"sources": ["../source"], "backup_root": "#,
        "line 1 column",
    )?;
    expect_config_error(r#"{"sources": ["../source"],, }"#, "line 1 column")
}

#[test]
fn relative_paths_resolve_against_the_config_file_folder() -> TestResult {
    let env = TestEnv::new()?;
    env.write("one.txt", "one")?;
    let (_, a) = run_config(
        &env,
        r#"{"sources": ["../source"], "backup_root": "../backup", "log_dir": "logs"}"#,
    )?;
    a.success();
    assert_eq!(std::fs::read(env.dst("one.txt"))?, b"one");
    let logs: Vec<_> = std::fs::read_dir(env.root().join("conf").join("logs"))?.collect();
    assert_eq!(logs.len(), 1, "log_dir is relative to the config file");
    let elsewhere: Vec<_> = std::fs::read_dir(env.root().join("elsewhere"))?.collect();
    assert!(
        elsewhere.is_empty(),
        "nothing lands in the current directory"
    );

    // A relative --config from yet another directory works the same way.
    env.write("two.txt", "two")?;
    env.cmd()?
        .current_dir(env.root().join("elsewhere"))
        .args(["backup", "--config", "../conf/config.json"])
        .assert()
        .success();
    assert_eq!(std::fs::read(env.dst("two.txt"))?, b"two");
    Ok(())
}

#[test]
fn no_arguments_use_config_json_in_the_current_directory() -> TestResult {
    let env = TestEnv::new()?;
    env.write("one.txt", "one")?;
    std::fs::write(
        env.root().join("config.json"),
        r#"{"sources": ["./source"], "backup_root": "./backup"}"#,
    )?;
    env.cmd()?.arg("backup").assert().success();
    assert_eq!(std::fs::read(env.dst("one.txt"))?, b"one");

    // Without config.json and without paths: a usage error.
    std::fs::remove_file(env.root().join("config.json"))?;
    env.cmd()?.arg("backup").assert().code(2);
    Ok(())
}

#[test]
fn hash_of_config_disagreeing_with_the_repository_is_exit_2() -> TestResult {
    let env = TestEnv::new()?;
    env.write("one.txt", "one")?;
    env.cmd()?
        .args(["init", "--hash", "sha256"])
        .arg(&env.backup)
        .assert()
        .success();
    let (_, a) = run_config(&env, &format!(r#"{{{OK}, "hash_algorithm": "blake3"}}"#))?;
    let out = a.get_output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("sha256") && stderr.contains("blake3"),
        "{stderr}"
    );
    assert!(!env.dst("one.txt").exists(), "nothing was backed up");
    // The same mismatch from the command line.
    let r = env.backup(&["--hash", "blake3"])?;
    r.expect_code(2);
    // Without a preference the repository's algorithm is used.
    env.backup_ok(&[])?;
    assert_eq!(std::fs::read(env.dst("one.txt"))?, b"one");
    Ok(())
}

fn backup_paths(env: &TestEnv, src: &Path, dest: &Path) -> Res<std::process::Output> {
    Ok(env.cmd()?.arg("backup").arg(src).arg(dest).output()?)
}

#[test]
fn source_equal_to_or_inside_the_backup_root_is_exit_2() -> TestResult {
    let env = TestEnv::new()?;
    env.write("one.txt", "one")?;
    let out = backup_paths(&env, &env.source, &env.source)?;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !env.src(".trove").exists(),
        "no repository is created in the source"
    );

    // A source inside an existing backup root (here a folder of its own
    // browsable tree).
    env.write("inner/x.txt", "x")?;
    env.backup_ok(&[])?;
    let snaps = env.snapshot_count()?;
    let out = backup_paths(&env, &env.dst("inner"), &env.backup)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("inside"), "says why: {stderr}");
    assert_eq!(env.snapshot_count()?, snaps, "no snapshot written");
    Ok(())
}

#[test]
fn non_empty_folder_that_is_not_a_repository_is_refused_and_left_alone() -> TestResult {
    let env = TestEnv::new()?;
    env.write("one.txt", "one")?;
    std::fs::create_dir_all(&env.backup)?;
    std::fs::write(env.dst("mine.txt"), "the user's own file")?;
    let r = env.backup(&[])?;
    r.expect_code(2);
    assert!(
        r.stderr.contains("not empty"),
        "the message says why: {}",
        r.stderr
    );
    let left: Vec<String> = crate::common::listing(&env.backup, false)?
        .into_keys()
        .map(|k| crate::common::show(&k))
        .collect();
    assert_eq!(left, vec!["mine.txt"], "nothing was added to the folder");
    assert_eq!(std::fs::read(env.dst("mine.txt"))?, b"the user's own file");
    Ok(())
}

#[test]
fn backup_root_inside_the_source_works_and_does_not_back_itself_up() -> TestResult {
    let env = TestEnv::new()?;
    env.write("one.txt", "one")?;
    env.write("sub/two.txt", "two")?;
    let dest = env.src("backup");
    for run in 0..2 {
        let out = backup_paths(&env, &env.source, &dest)?;
        assert_eq!(
            out.status.code(),
            Some(0),
            "run {run}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tree = crate::common::listing(&dest, true)?;
        let names: Vec<String> = tree.keys().map(|k| crate::common::show(k)).collect();
        assert_eq!(
            names,
            vec!["one.txt", "sub", "sub/two.txt"],
            "run {run}: the backup root is not in its own tree"
        );
        if run == 1 {
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("no changes"),
                "the second run sees no change: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
    Ok(())
}

#[test]
fn empty_source_equal_to_the_backup_root_is_refused_without_writing_into_it() -> TestResult {
    let env = TestEnv::new()?;
    let same = env.root().join("same");
    std::fs::create_dir(&same)?;
    let out = backup_paths(&env, &same, &same)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("inside"), "says why: {stderr}");
    let written: Vec<String> = crate::common::listing(&same, false)?
        .into_keys()
        .map(|k| crate::common::show(&k))
        .collect();
    assert!(
        written.is_empty(),
        "a refused run writes nothing into the source (SPEC §6), found {written:?}"
    );
    Ok(())
}
