//! SPEC §6: SIGKILL at any moment leaves a repository that the next run
//! completes, with a browsable tree equal to the source, no torn object
//! and nothing previously backed up lost.

use crate::common::{fingerprint, listing, show, Lcg, Node, Res, TestEnv, TestResult};
use std::collections::{BTreeMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

const DIRS: usize = 40;
const FILES_PER_DIR: usize = 80;
const BIG_FILES: usize = 4;
const ITERATIONS: u64 = 8;

/// Every content the test ever wrote into the source.
type Known = HashSet<(u64, u64)>;

fn write_tracked(env: &TestEnv, known: &mut Known, rel: &str, data: &[u8]) -> Res<()> {
    known.insert(fingerprint(data));
    env.write(rel, data)
}

fn small_content(d: usize, i: usize, generation: u64) -> Vec<u8> {
    format!("dir {d} file {i} generation {generation}\n")
        .repeat(1 + (i % 7))
        .into_bytes()
}

fn build_source(env: &TestEnv, rng: &mut Lcg, known: &mut Known) -> Res<()> {
    for d in 0..DIRS {
        for i in 0..FILES_PER_DIR {
            let data = if i % 20 == 19 {
                // Some duplicates of another file's content.
                small_content((d + 1) % DIRS, i - 1, 0)
            } else {
                small_content(d, i, 0)
            };
            write_tracked(env, known, &format!("d{d:02}/f{i:03}.txt"), &data)?;
        }
    }
    for b in 0..BIG_FILES {
        let size = 1024 * 1024 * (1 + b % 4) + b * 1000;
        let data = rng.bytes(size);
        write_tracked(env, known, &format!("big/blob{b}.bin"), &data)?;
    }
    Ok(())
}

/// Modify, add, delete and rename some files.
fn mutate(env: &TestEnv, rng: &mut Lcg, known: &mut Known, generation: u64) -> Res<()> {
    for _ in 0..150 {
        let d = rng.range(0, DIRS as u64 - 1) as usize;
        let i = rng.range(0, FILES_PER_DIR as u64 - 1) as usize;
        let rel = format!("d{d:02}/f{i:03}.txt");
        if env.src(&rel).exists() {
            write_tracked(env, known, &rel, &small_content(d, i, generation))?;
        }
    }
    for n in 0..60 {
        let data = format!("new file {n} of generation {generation}\n").into_bytes();
        write_tracked(env, known, &format!("new{generation}/n{n:03}.txt"), &data)?;
    }
    for _ in 0..40 {
        let d = rng.range(0, DIRS as u64 - 1);
        let i = rng.range(0, FILES_PER_DIR as u64 - 1);
        let p = env.src(&format!("d{d:02}/f{i:03}.txt"));
        if p.exists() {
            if rng.range(0, 1) == 0 {
                std::fs::remove_file(&p)?;
            } else {
                std::fs::rename(
                    &p,
                    env.src(&format!("d{d:02}/moved{generation}_{i:03}.txt")),
                )?;
            }
        }
    }
    let b = rng.range(0, BIG_FILES as u64 - 1);
    let size = 1024 * 1024 * rng.range(1, 4) as usize;
    let data = rng.bytes(size);
    write_tracked(env, known, &format!("big/blob{b}.bin"), &data)?;
    Ok(())
}

/// The browsable tree shows exactly the source: each source file once,
/// at the top or under `_duplicates/`, with its bytes; nothing else outside
/// `versions/` and `_deleted/`.
fn check_tree_equals_source(env: &TestEnv, iteration: u64) -> TestResult {
    let src = listing(&env.source, false)?;
    let tree = env.tree()?;
    let mut shown: BTreeMap<Vec<u8>, &Node> = BTreeMap::new();
    for (p, n) in &tree {
        let top_reserved =
            |r: &[u8]| p.starts_with(r) && (p.len() == r.len() || p[r.len()] == b'/');
        if top_reserved(b"versions") || top_reserved(b"_deleted") {
            continue;
        }
        if let Some(rest) = p.strip_prefix(&b"_duplicates/"[..]) {
            if let Node::File(_) = n {
                assert!(
                    shown.insert(rest.to_vec(), n).is_none(),
                    "iteration {iteration}: {} shown twice",
                    show(rest)
                );
            }
            continue;
        }
        if p.as_slice() == b"_duplicates" {
            continue;
        }
        match n {
            Node::File(_) => {
                assert!(
                    shown.insert(p.clone(), n).is_none(),
                    "iteration {iteration}: {} shown twice",
                    show(p)
                );
            }
            Node::Dir => {
                assert!(
                    src.get(p) == Some(&Node::Dir),
                    "iteration {iteration}: extra directory {} in the tree",
                    show(p)
                );
            }
            Node::Symlink(_) => panic!("iteration {iteration}: unexpected symlink {}", show(p)),
        }
    }
    let src_files: BTreeMap<Vec<u8>, &Node> = src
        .iter()
        .filter(|(_, n)| matches!(n, Node::File(_)))
        .map(|(p, n)| (p.clone(), n))
        .collect();
    let missing: Vec<String> = src_files
        .keys()
        .filter(|p| !shown.contains_key(*p))
        .map(|p| show(p))
        .take(10)
        .collect();
    let extra: Vec<String> = shown
        .keys()
        .filter(|p| !src_files.contains_key(*p))
        .map(|p| show(p))
        .take(10)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "iteration {iteration}: tree differs from source: missing {missing:?}, extra {extra:?}"
    );
    for (p, n) in &src_files {
        assert!(
            shown.get(p) == Some(n),
            "iteration {iteration}: {} has other bytes in the tree than in the source",
            show(p)
        );
    }
    Ok(())
}

/// Every object and every file of the tree holds a content the test wrote.
fn check_contents_known(env: &TestEnv, known: &Known, iteration: u64) -> TestResult {
    for o in env.objects()? {
        let data = std::fs::read(&o)?;
        assert!(
            known.contains(&fingerprint(&data)),
            "iteration {iteration}: object {} ({} bytes) holds bytes no source file ever had",
            o.display(),
            data.len()
        );
    }
    for (p, n) in env.tree()? {
        if let Node::File(data) = n {
            assert!(
                known.contains(&fingerprint(&data)),
                "iteration {iteration}: {} holds bytes no source file ever had",
                show(&p)
            );
        }
    }
    Ok(())
}

/// Contents of the source now.
fn source_contents(env: &TestEnv) -> Res<Known> {
    Ok(listing(&env.source, false)?
        .values()
        .filter_map(|n| match n {
            Node::File(d) => Some(fingerprint(d)),
            _ => None,
        })
        .collect())
}

#[test]
fn sigkill_at_random_moments_then_rerun_leaves_a_complete_consistent_backup() -> TestResult {
    let env = TestEnv::new()?;
    // TROVE_CRASH_SEED explores other kill moments; the default is fixed.
    let seed = std::env::var("TROVE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_0042);
    let mut rng = Lcg(seed);
    let mut known = Known::new();
    // Contents that were in the source when a run completed: never lost.
    let mut backed_up = Known::new();
    build_source(&env, &mut rng, &mut known)?;
    let mut killed_mid_run = 0;

    for iteration in 0..ITERATIONS {
        if iteration > 0 {
            mutate(&env, &mut rng, &mut known, iteration)?;
        }
        // On odd iterations the interrupted run's successor is killed too
        // (a crash during crash recovery).
        let kills = 1 + iteration % 2;
        let mut delay = 0;
        let mut status = None;
        for _ in 0..kills {
            delay = rng.range(5, 300);
            let mut child = std::process::Command::new(crate::common::trove_bin())
                .arg("backup")
                .arg(&env.source)
                .arg(&env.backup)
                .env_remove("TROVE_REPO")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            std::thread::sleep(std::time::Duration::from_millis(delay));
            child.kill()?;
            let st = child.wait()?;
            if st.signal() == Some(9) {
                killed_mid_run += 1;
            }
            status = Some(st);
        }
        let status = status.ok_or("no run")?;

        let r = env.backup(&[])?;
        assert_eq!(
            r.code,
            Some(0),
            "iteration {iteration} (killed after {delay} ms, {status}): the rerun failed\n--- stdout\n{}\n--- stderr\n{}",
            r.stdout,
            r.stderr
        );
        check_tree_equals_source(&env, iteration)?;
        check_contents_known(&env, &known, iteration)?;
        backed_up.extend(source_contents(&env)?);
        let in_tree: Known = env
            .tree()?
            .values()
            .filter_map(|n| match n {
                Node::File(d) => Some(fingerprint(d)),
                _ => None,
            })
            .collect();
        let lost = backed_up.difference(&in_tree).count();
        assert_eq!(
            lost, 0,
            "iteration {iteration}: {lost} previously backed-up contents are gone from the tree"
        );
        let tmp: Vec<_> = std::fs::read_dir(env.dst(".trove/tmp"))?.collect();
        assert!(
            tmp.is_empty(),
            "iteration {iteration}: .trove/tmp not empty after a successful run: {} entries",
            tmp.len()
        );
        let snaps = env.repo_cmd(&["snapshots"])?;
        assert!(
            snaps.status.success(),
            "iteration {iteration}: snapshots: {}",
            String::from_utf8_lossy(&snaps.stderr)
        );
    }
    assert!(
        killed_mid_run > 0,
        "no run was still going when it was killed: the test exercised nothing"
    );
    eprintln!("crash test (seed {seed}): {killed_mid_run} runs killed mid-way");
    Ok(())
}
