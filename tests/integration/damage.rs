//! Damaged-repository fixtures: ways to break a repository on disk the
//! way a failing disk, a stray `rm` or a user editing the backup folder
//! would, for tests of `verify`, `materialize`, `restore` and friends.
//!
//! Every function takes the backup root (the directory holding `.trove`)
//! and a hash or id as trove names it on disk (64 hex digits). Objects,
//! trees and snapshot records are read-only files: they are made writable
//! before being modified in place.

use crate::common::Res;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn store_path(repo: &Path, store: &str, hash: &str) -> Res<PathBuf> {
    let fan = hash.get(..2).ok_or_else(|| format!("bad hash {hash:?}"))?;
    Ok(repo.join(".trove").join(store).join(fan).join(hash))
}

/// `.trove/objects/ab/abcd…`
pub fn object_path(repo: &Path, hash: &str) -> Res<PathBuf> {
    store_path(repo, "objects", hash)
}

/// `.trove/trees/ab/abcd…`
pub fn tree_path(repo: &Path, hash: &str) -> Res<PathBuf> {
    store_path(repo, "trees", hash)
}

/// `.trove/snapshots/<full id>`
pub fn snapshot_path(repo: &Path, full_id: &str) -> PathBuf {
    repo.join(".trove").join("snapshots").join(full_id)
}

/// Add owner write permission to `path`.
pub fn make_writable(path: &Path) -> Res<()> {
    let mut perm = std::fs::metadata(path)?.permissions();
    perm.set_mode(perm.mode() | 0o200);
    std::fs::set_permissions(path, perm)?;
    Ok(())
}

/// Invert the lowest bit of the byte at `offset` in place (same size,
/// same inode: what silent disk corruption looks like).
pub fn flip_byte(path: &Path, offset: usize) -> Res<()> {
    let mut data = std::fs::read(path)?;
    let len = data.len();
    let b = data
        .get_mut(offset)
        .ok_or_else(|| format!("{} has {len} bytes, no byte {offset}", path.display()))?;
    *b ^= 1;
    make_writable(path)?;
    // Write through the existing inode, so hardlinks see the damage too.
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &data))?;
    Ok(())
}

/// Cut `path` down to `len` bytes in place.
pub fn truncate_file(path: &Path, len: u64) -> Res<()> {
    make_writable(path)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .set_len(len)?;
    Ok(())
}

/// Flip one byte of a stored object (the first one).
pub fn flip_byte_in_object(repo: &Path, hash: &str) -> Res<()> {
    flip_byte(&object_path(repo, hash)?, 0)
}

/// Cut a stored object to half its size.
pub fn truncate_object(repo: &Path, hash: &str) -> Res<()> {
    let p = object_path(repo, hash)?;
    let len = std::fs::metadata(&p)?.len();
    truncate_file(&p, len / 2)
}

/// Remove a stored object (its hardlinks in the browsable tree stay).
pub fn delete_object(repo: &Path, hash: &str) -> Res<()> {
    std::fs::remove_file(object_path(repo, hash)?)?;
    Ok(())
}

/// Cut a tree object to half its size.
pub fn truncate_tree(repo: &Path, hash: &str) -> Res<()> {
    let p = tree_path(repo, hash)?;
    let len = std::fs::metadata(&p)?.len();
    truncate_file(&p, len / 2)
}

/// Remove a tree object.
pub fn delete_tree(repo: &Path, hash: &str) -> Res<()> {
    std::fs::remove_file(tree_path(repo, hash)?)?;
    Ok(())
}

/// Flip a bit in the last byte of a snapshot record.
pub fn corrupt_snapshot_record(repo: &Path, full_id: &str) -> Res<()> {
    let p = snapshot_path(repo, full_id);
    let len = std::fs::metadata(&p)?.len() as usize;
    flip_byte(&p, len.checked_sub(1).ok_or("empty snapshot record")?)
}

/// Cut a snapshot record to half its size.
pub fn truncate_snapshot_record(repo: &Path, full_id: &str) -> Res<()> {
    let p = snapshot_path(repo, full_id);
    let len = std::fs::metadata(&p)?.len();
    truncate_file(&p, len / 2)
}

/// Hashes of every file stored under `.trove/<store>/` (`objects`, `trees`).
fn stored(repo: &Path, store: &str) -> Res<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for fan in std::fs::read_dir(repo.join(".trove").join(store))? {
        let fan = fan?;
        if fan.file_type()?.is_dir() {
            for f in std::fs::read_dir(fan.path())? {
                out.insert(f?.file_name().to_string_lossy().into_owned());
            }
        }
    }
    Ok(out)
}

/// Hashes of every stored tree object.
pub fn tree_hashes(repo: &Path) -> Res<BTreeSet<String>> {
    stored(repo, "trees")
}

/// Hashes of every stored object.
pub fn object_hashes(repo: &Path) -> Res<BTreeSet<String>> {
    stored(repo, "objects")
}

/// Replace a browsable file by a copy of its own bytes: right content,
/// new inode, no longer a hardlink of its object.
pub fn replace_with_copy(path: &Path) -> Res<()> {
    let data = std::fs::read(path)?;
    std::fs::remove_file(path)?;
    std::fs::write(path, data)?;
    Ok(())
}

/// Replace a browsable file by a new file (new inode) holding `data`, as
/// an editor saving over it would.
pub fn replace_with_content(path: &Path, data: &[u8]) -> Res<()> {
    std::fs::remove_file(path)?;
    std::fs::write(path, data)?;
    Ok(())
}

/// Put a hardlink of a stored object at `rel` under the backup root (what
/// trove itself leaves behind when an entry becomes stale), creating the
/// parents.
pub fn hardlink_object_at(repo: &Path, hash: &str, rel: &str) -> Res<PathBuf> {
    let dest = repo.join(rel);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::hard_link(object_path(repo, hash)?, &dest)?;
    Ok(dest)
}
