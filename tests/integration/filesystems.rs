//! `--one-file-system`: a filesystem mounted inside the source is not
//! entered. Needs `mount` (root); where that is refused the test says so
//! and checks nothing.

use crate::common::*;
use std::process::Command;

/// Unmounts on drop, so a failing assertion never leaves a mount behind.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &std::path::Path) -> Res<Option<Mount>> {
    std::fs::create_dir_all(at)?;
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "trove-test"])
        .arg(at)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    Ok(ok.then(|| Mount(at.to_path_buf())))
}

#[test]
fn one_file_system_keeps_out_of_other_mounts() -> TestResult {
    let env = TestEnv::new()?;
    env.write("local.txt", "here")?;
    let Some(_m) = mount_tmpfs(&env.src("mnt"))? else {
        eprintln!("skipped: cannot mount a tmpfs here (not root, or no permission)");
        return Ok(());
    };
    env.write("mnt/remote.txt", "elsewhere")?;

    env.backup_ok(&["--one-file-system"])?;
    assert_eq!(std::fs::read(env.dst("local.txt"))?, b"here");
    assert!(
        env.dst("mnt").is_dir(),
        "the mount point itself is recorded"
    );
    assert!(!env.dst("mnt/remote.txt").exists(), "its contents are not");

    // Without the option the other filesystem is backed up like any folder.
    env.backup_ok(&[])?;
    assert_eq!(std::fs::read(env.dst("mnt/remote.txt"))?, b"elsewhere");
    Ok(())
}
