//! The fan-out layout of a content store (`top/ab/<hex>`): listing it one
//! folder at a time, for the objects and for a format 1 `trees/`.

use crate::error::{IoContext, Result};
use crate::id::Digest;
use std::fs;
use std::path::Path;

/// Call `f` with every digest named in a fan-out store (`top/ab/<hex>`:
/// the objects, or a format 1 `trees/`), with its folder entry and the
/// folder, one fan-out folder at a time (in no particular order), without
/// listing the store whole. Names that are not a digest of their folder
/// are not stored contents.
pub(super) fn for_each_fanned(
    top: &Path,
    f: &mut dyn FnMut(Digest, &fs::DirEntry, &Path) -> Result<()>,
) -> Result<()> {
    for fan in fs::read_dir(top).ctx("list", top)? {
        let fan = fan.ctx("list", top)?;
        let fan_name = fan.file_name();
        let Some(fan_name) = fan_name.to_str() else {
            continue;
        };
        if !fan.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let dir = fan.path();
        for ent in fs::read_dir(&dir).ctx("list", &dir)? {
            let ent = ent.ctx("list", &dir)?;
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(d) = Digest::from_hex(name).filter(|_| name.starts_with(fan_name)) {
                f(d, &ent, &dir)?;
            }
        }
    }
    Ok(())
}
