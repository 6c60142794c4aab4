//! SPEC §1: where a hardlink cannot be made (EMLINK: ext4 allows 65,000
//! links per inode) trove copies instead and says so once per run.

use crate::common::{Node, TestEnv, TestResult};

const FILES: usize = 70_000;

#[test]
fn seventy_thousand_identical_files_fall_back_to_copies_and_warn_once() -> TestResult {
    let env = TestEnv::new()?;
    for i in 0..FILES {
        std::fs::write(env.source.join(format!("f{i:05}")), b"x")?;
    }
    let r = env.backup_ok(&[])?;
    let warnings: Vec<&str> = r.stderr.lines().filter(|l| l.contains("copies")).collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning about copies per run, got:\n{}",
        r.stderr
    );
    assert!(warnings[0].starts_with("warning:"), "{}", warnings[0]);
    assert_eq!(
        r.log.lines().filter(|l| l.contains("copies")).count(),
        1,
        "the warning is in the audit log once"
    );
    assert!(
        r.stdout
            .contains(&format!("{FILES} copied, 0 unchanged, {FILES} total")),
        "{}",
        r.stdout
    );

    let tree = env.tree()?;
    let mut at_top = 0;
    for i in 0..FILES {
        let name = format!("f{i:05}");
        let top = tree.get(name.as_bytes());
        let dup = tree.get(format!("_duplicates/{name}").as_bytes());
        match (top, dup) {
            (Some(n), None) | (None, Some(n)) => {
                assert_eq!(n, &Node::File(b"x".to_vec()), "{name} has the right byte");
            }
            other => panic!("{name} must be shown exactly once, got {other:?}"),
        }
        at_top += usize::from(top.is_some());
    }
    assert_eq!(at_top, 1, "one file at the top, the rest are duplicates");
    assert_eq!(
        tree.len(),
        FILES + 1,
        "nothing else in the tree but _duplicates/"
    );
    assert_eq!(env.objects()?.len(), 1, "one object for one content");

    // The next run accepts the copies as they are.
    let again = env.backup_ok(&[])?;
    assert!(again.stdout.contains("no changes"), "{}", again.stdout);
    assert!(
        !again.stderr.contains("copies"),
        "nothing was placed again: {}",
        again.stderr
    );
    Ok(())
}
