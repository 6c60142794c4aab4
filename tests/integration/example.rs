//! The shipped example (`config.json` + `testdata/source`), as the README's
//! first command runs it: copied to a temporary folder so the checkout is
//! never written to.

use crate::common::*;
use std::path::Path;

fn copy_tree(from: &Path, to: &Path) -> Res<()> {
    std::fs::create_dir_all(to)?;
    for ent in std::fs::read_dir(from)? {
        let ent = ent?;
        let dest = to.join(ent.file_name());
        if ent.file_type()?.is_dir() {
            copy_tree(&ent.path(), &dest)?;
        } else {
            std::fs::copy(ent.path(), dest)?;
        }
    }
    Ok(())
}

#[test]
fn shipped_example_backs_up_with_a_duplicate() -> TestResult {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir()?;
    std::fs::copy(repo.join("config.json"), dir.path().join("config.json"))?;
    copy_tree(
        &repo.join("testdata/source"),
        &dir.path().join("testdata/source"),
    )?;

    // No arguments: ./config.json in the working directory, as in the README.
    let out = trove_cmd()?
        .current_dir(dir.path())
        .arg("backup")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("4 copied, 0 unchanged, 4 total"),
        "{stdout}"
    );

    let logs: Vec<_> = std::fs::read_dir(dir.path().join("logs"))?.collect::<Result<_, _>>()?;
    assert_eq!(
        logs.len(),
        1,
        "one audit log per run, in the config's log_dir"
    );
    let log = std::fs::read_to_string(logs[0].path())?;
    let lines = log_messages(&log);
    for want in [
        "BACKUP: source/notes/monday.md → backup/notes/monday.md",
        "BACKUP: source/one.txt → backup/one.txt",
        "DUPLICATE: source/one_copy.txt → backup/_duplicates/one_copy.txt",
        "BACKUP: source/two.txt → backup/two.txt",
        "Run complete",
    ] {
        assert!(
            lines.iter().any(|l| l == want),
            "missing {want:?} in\n{log}"
        );
    }
    let backup = dir.path().join("testdata/backup");
    assert_eq!(std::fs::read(backup.join("one.txt"))?, b"hello world\n");
    assert_eq!(
        std::fs::read(backup.join("_duplicates/one_copy.txt"))?,
        b"hello world\n"
    );
    Ok(())
}
