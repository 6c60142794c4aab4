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

/// Fan-out folders listed ahead of the one being handed out, per lister:
/// one is enough to keep the listers and the caller all busy.
const AHEAD: usize = 1;

/// Threads listing folders at once. Listing (`getdents`, the names' hex)
/// was the whole of a quick verify's store phase at three million objects
/// (2.2 s, the caller's lookups a sixth of it), on one core while the
/// other idled; folders are independent, so two listers halve it. More
/// than two gain nothing on the two cores this is measured on and would
/// hold more folders in memory.
const LISTERS: usize = 2;

/// Call `f` with every fan-out folder of a store (`top/ab/<hex>`: the
/// objects, or a format 1 `trees/`), listed, one folder at a time (in the
/// order of the folders' names), without listing the store whole. Names
/// that are not a digest of their folder are not stored contents. With
/// `located`, each folder's device and each entry's type are read too (a
/// stat of the folder; a stat of an entry only where the filesystem gives
/// no type). The next folders are listed on other threads while `f` works
/// on this one.
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
    // Sorted, so that callers see the same order on every filesystem.
    fans.sort_unstable_by(|a, b| a.1.cmp(&b.1));
    let n = fans.len();
    std::thread::scope(|s| -> Result<()> {
        // Lister `k` lists folders k, k + LISTERS, ... into its own
        // channel; they are taken round-robin, so `f` sees the sorted order.
        let mut rxs = Vec::with_capacity(LISTERS);
        for k in 0..LISTERS {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<FanFolder>>(AHEAD);
            rxs.push(rx);
            let mine: Vec<(PathBuf, String)> =
                fans.iter().skip(k).step_by(LISTERS).cloned().collect();
            s.spawn(move || {
                for (dir, name) in mine {
                    let listed = list_fan_folder(&dir, &name, located);
                    let failed = listed.is_err();
                    // A closed channel: the caller stopped (an error of its own).
                    if tx.send(listed).is_err() || failed {
                        return;
                    }
                }
            });
        }
        // Returning early drops every receiver, so each lister's next
        // send fails, it stops, and the scope ends.
        for i in 0..n {
            match rxs[i % LISTERS].recv() {
                Ok(folder) => f(&folder?)?,
                // A lister sends every folder or an error; one gone
                // without either panicked, and a partial listing must
                // not pass for the whole store.
                Err(_) => {
                    return Err(crate::error::Error::Internal(format!(
                        "a thread listing {} stopped part way",
                        top.display()
                    )))
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    /// A store of many folders, a few names each (and a stray name):
    /// every folder is handed out once, in the order of the folders'
    /// names, with exactly its digests, however the listers share them;
    /// an error of the caller's stops the listing and is what returns.
    #[test]
    fn folders_come_once_each_in_name_order_and_a_callers_error_stops_them() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let top = dir.path();
        let mut want: Vec<Vec<Digest>> = Vec::new();
        for fan in (0u8..=40).rev() {
            let name = format!("{fan:02x}");
            let d = top.join(&name);
            fs::create_dir(&d).ctx("mkdir", &d)?;
            let mut here = Vec::new();
            for k in 0..(fan % 4) {
                let mut b = [k; 32];
                b[0] = fan;
                let id = Digest(b);
                let p = d.join(id.to_hex());
                fs::write(&p, b"x").ctx("write", &p)?;
                here.push(id);
            }
            // Not a digest of this folder: not a stored content.
            let stray = d.join("leftover.tmp");
            fs::write(&stray, b"x").ctx("write", &stray)?;
            here.sort();
            want.push(here);
        }
        want.reverse();
        let mut got: Vec<Vec<Digest>> = Vec::new();
        for_each_fan_folder(top, true, &mut |folder| {
            let mut v: Vec<Digest> = folder.entries.iter().map(|e| e.digest).collect();
            assert!(folder.entries.iter().all(|e| e.regular && e.ino != 0));
            v.sort();
            got.push(v);
            Ok(())
        })?;
        assert_eq!(got, want);

        let mut seen = 0;
        let r = for_each_fan_folder(top, false, &mut |_| {
            seen += 1;
            match seen {
                7 => Err(Error::Internal("stop here".into())),
                _ => Ok(()),
            }
        });
        assert!(matches!(r, Err(Error::Internal(m)) if m == "stop here"));
        assert_eq!(seen, 7);
        Ok(())
    }
}
