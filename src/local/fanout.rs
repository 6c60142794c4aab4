//! The fan-out layout of a content store (`top/ab/<hex>`): listing it one
//! folder at a time, for the objects and for a format 1 `trees/`.

use crate::error::{IoContext, Result};
use crate::id::Digest;
use std::fs;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};

/// One stored content as its fan-out folder's listing names it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Fanned {
    pub digest: Digest,
    /// The entry's inode number (`d_ino`).
    pub ino: u64,
    /// The entry is a regular file (`d_type`; std stats an entry only
    /// where the filesystem gives no type). False unless the listing was
    /// asked where its contents are.
    pub regular: bool,
}

/// One fan-out folder's listing: its device (0 unless the listing was
/// asked where its contents are) and its contents.
pub(super) struct FanFolder {
    pub dev: u64,
    pub entries: Vec<Fanned>,
}

/// Fan-out folders listed ahead of the one being handed out: one is
/// enough to keep the lister and the caller both busy.
const AHEAD: usize = 1;

/// Call `f` with every fan-out folder of a store (`top/ab/<hex>`: the
/// objects, or a format 1 `trees/`), listed, one folder at a time (in no
/// particular order), without listing the store whole. Names that are not
/// a digest of their folder are not stored contents. With `located`,
/// each folder's device and each entry's type are read too (a stat of the
/// folder; a stat of an entry only where the filesystem gives no type).
/// The next folder is listed on another thread while `f` works on this
/// one: at three million objects, the listing (`getdents`, the names'
/// hex) and a quick verify's lookups of what it lists each took about a
/// second.
pub(super) fn for_each_fan_folder(
    top: &Path,
    located: bool,
    f: &mut dyn FnMut(&FanFolder) -> Result<()>,
) -> Result<()> {
    let mut fans: Vec<(PathBuf, String)> = Vec::new();
    for fan in fs::read_dir(top).ctx("list", top)? {
        let fan = fan.ctx("list", top)?;
        let Ok(name) = fan.file_name().into_string() else {
            continue;
        };
        if fan.file_type().is_ok_and(|t| t.is_dir()) {
            fans.push((fan.path(), name));
        }
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<FanFolder>>(AHEAD);
    std::thread::scope(|s| -> Result<()> {
        s.spawn(move || {
            for (dir, name) in fans {
                let listed = list_fan_folder(&dir, &name, located);
                let failed = listed.is_err();
                // A closed channel: the caller stopped (an error of its own).
                if tx.send(listed).is_err() || failed {
                    return;
                }
            }
        });
        // Dropping `rx` on an early return makes the lister's next send
        // fail, so it stops and the scope ends.
        for folder in rx {
            f(&folder?)?;
        }
        Ok(())
    })
}

/// The fan-out folder `dir`, named `fan_name`, listed.
fn list_fan_folder(dir: &Path, fan_name: &str, located: bool) -> Result<FanFolder> {
    let dev = match located {
        true => fs::symlink_metadata(dir).ctx("stat", dir)?.dev(),
        false => 0,
    };
    let mut entries = Vec::new();
    for ent in fs::read_dir(dir).ctx("list", dir)? {
        let ent = ent.ctx("list", dir)?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(d) = Digest::from_hex(name).filter(|_| name.starts_with(fan_name)) {
            entries.push(Fanned {
                digest: d,
                ino: ent.ino(),
                regular: located && ent.file_type().is_ok_and(|t| t.is_file()),
            });
        }
    }
    Ok(FanFolder { dev, entries })
}

/// Call `f` with every digest named in a fan-out store, folder after
/// folder (see [`for_each_fan_folder`]).
pub(super) fn for_each_fanned(top: &Path, f: &mut dyn FnMut(Digest)) -> Result<()> {
    for_each_fan_folder(top, false, &mut |folder| {
        for e in &folder.entries {
            f(e.digest);
        }
        Ok(())
    })
}
