//! Damaged-repository fixtures: ways to break a repository on disk the
//! way a failing disk, a stray `rm` or a user editing the backup folder
//! would, for tests of `verify`, `materialize`, `restore` and friends.
//!
//! Every function takes the backup root (the directory holding `.trove`)
//! and a hash or id as trove names it on disk (64 hex digits). Objects,
//! tree packs and snapshot records are read-only files: they are made
//! writable before being modified in place.
//!
//! Trees live in packs (`.trove/packs/<hex>.pack`, format 2): damaging
//! one tree rewrites its pack with that tree's entry cut or left out (a
//! well-formed pack, so only that tree is affected, as a damaged tree
//! file was). A format 1 repository's own tree files are damaged as
//! files.

use crate::common::Res;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use trove::local::pack;

fn store_path(repo: &Path, store: &str, hash: &str) -> Res<PathBuf> {
    let fan = hash.get(..2).ok_or_else(|| format!("bad hash {hash:?}"))?;
    Ok(repo.join(".trove").join(store).join(fan).join(hash))
}

/// `.trove/objects/ab/abcd…`
pub fn object_path(repo: &Path, hash: &str) -> Res<PathBuf> {
    store_path(repo, "objects", hash)
}

/// The 32 bytes a 64-digit hex hash names.
pub fn id_of(hash: &str) -> Res<[u8; 32]> {
    let mut out = [0u8; 32];
    if hash.len() != 64 {
        return Err(format!("bad hash {hash:?}").into());
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hash[2 * i..2 * i + 2], 16)?;
    }
    Ok(out)
}

/// A format 1 repository's own file of a tree: `.trove/trees/ab/abcd…`.
fn loose_tree_path(repo: &Path, hash: &str) -> Res<PathBuf> {
    store_path(repo, "trees", hash)
}

/// A tree pack: its path, bytes and entries.
pub type Pack = (PathBuf, Vec<u8>, Vec<pack::PackEntry>);

/// Every tree pack of the repository, by name (each must be sound).
pub fn tree_packs(repo: &Path) -> Res<Vec<Pack>> {
    let dir = repo.join(".trove").join("packs");
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for ent in rd {
        let p = ent?.path();
        if !p.to_string_lossy().ends_with(".pack") {
            continue;
        }
        let bytes = std::fs::read(&p)?;
        let entries = pack::parse(&bytes).map_err(|e| format!("{}: {e}", p.display()))?;
        out.push((p, bytes, entries));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The file holding tree `hash`: the pack it is in, or (format 1) its own
/// file `.trove/trees/ab/abcd…`.
pub fn tree_path(repo: &Path, hash: &str) -> Res<PathBuf> {
    let loose = loose_tree_path(repo, hash)?;
    if loose.exists() {
        return Ok(loose);
    }
    let id = id_of(hash)?;
    for (p, _, entries) in tree_packs(repo)? {
        if entries.iter().any(|e| e.id == id) {
            return Ok(p);
        }
    }
    Err(format!("no tree pack holds tree {hash}").into())
}

/// Write the pack holding tree `hash` again with `f` applied to that
/// tree's stored bytes (`None`: the tree is left out). The pack keeps its
/// name and its other trees.
fn rewrite_tree(repo: &Path, hash: &str, f: impl FnOnce(&[u8]) -> Option<Vec<u8>>) -> Res<()> {
    let id = id_of(hash)?;
    let (path, bytes, entries) = tree_packs(repo)?
        .into_iter()
        .find(|(_, _, e)| e.iter().any(|e| e.id == id))
        .ok_or_else(|| format!("no tree pack holds tree {hash}"))?;
    let mut f = Some(f);
    let mut trees: Vec<([u8; 32], Vec<u8>)> = Vec::new();
    for e in &entries {
        let data = &bytes[(e.offset + pack::ENTRY_HEAD) as usize..e.end() as usize];
        if e.id == id {
            if let Some(new) = f.take().and_then(|f| f(data)) {
                trees.push((e.id, new));
            }
        } else {
            trees.push((e.id, data.to_vec()));
        }
    }
    let refs: Vec<([u8; 32], &[u8])> = trees.iter().map(|(i, d)| (*i, d.as_slice())).collect();
    let new = pack::encode(&refs)?;
    make_writable(&path)?;
    std::fs::write(&path, new)?;
    Ok(())
}

/// Add a pack holding `trees` (id, stored bytes), as a writer would;
/// returns its path.
pub fn add_tree_pack(repo: &Path, trees: &[([u8; 32], Vec<u8>)]) -> Res<PathBuf> {
    let refs: Vec<([u8; 32], &[u8])> = trees.iter().map(|(i, d)| (*i, d.as_slice())).collect();
    let bytes = pack::encode(&refs)?;
    let name: String = blake3::hash(&bytes)
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = repo.join(".trove").join("packs");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.pack"));
    std::fs::write(&path, bytes)?;
    Ok(path)
}

/// Turn a freshly initialised (empty) repository into a format 1 one, as
/// trove made them before tree packs: `"format": 1`, `trees/`, no `packs/`.
pub fn make_format_1(repo: &Path) -> Res<()> {
    let trove = repo.join(".trove");
    let cfg = trove.join("config");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg)?)?;
    v["format"] = serde_json::json!(1);
    make_writable(&cfg)?;
    std::fs::write(&cfg, serde_json::to_vec_pretty(&v)?)?;
    let _ = std::fs::remove_dir(trove.join("packs"));
    std::fs::create_dir_all(trove.join("trees"))?;
    Ok(())
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

/// Cut a tree object to half its size (in its pack).
pub fn truncate_tree(repo: &Path, hash: &str) -> Res<()> {
    let loose = loose_tree_path(repo, hash)?;
    if loose.exists() {
        let len = std::fs::metadata(&loose)?.len();
        return truncate_file(&loose, len / 2);
    }
    rewrite_tree(repo, hash, |d| Some(d[..d.len() / 2].to_vec()))
}

/// Remove a tree object (from its pack).
pub fn delete_tree(repo: &Path, hash: &str) -> Res<()> {
    let loose = loose_tree_path(repo, hash)?;
    if loose.exists() {
        std::fs::remove_file(loose)?;
        return Ok(());
    }
    rewrite_tree(repo, hash, |_| None)
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

/// Hashes of every stored tree object (in packs, and in a format 1
/// repository's `trees/`).
pub fn tree_hashes(repo: &Path) -> Res<BTreeSet<String>> {
    let mut out = if repo.join(".trove").join("trees").is_dir() {
        stored(repo, "trees")?
    } else {
        BTreeSet::new()
    };
    for (_, _, entries) in tree_packs(repo)? {
        for e in entries {
            out.insert(e.id.iter().map(|b| format!("{b:02x}")).collect());
        }
    }
    Ok(out)
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
