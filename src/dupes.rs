//! `trove dupes`: sets of byte-identical files and the space they waste.
//!
//! Work is cut down in stages, each only on what the previous one left:
//! 1. walk (the backup scan: same excludes, same odd-entry handling) and
//!    group regular files by size; a size seen once cannot have a twin;
//! 2. within a size, files that are hardlinks of each other (same device
//!    and inode) count once: they share their blocks, so they waste nothing;
//! 3. hash the first and last 4 KiB of each remaining inode, in parallel;
//! 4. hash whole files (BLAKE3, in parallel) only where the partial hashes
//!    still collide.
//!
//! A set lists every path with the same content; `wasted` is the size
//! times (distinct inodes − 1). Output is sorted by wasted bytes, then by
//! path, so it is deterministic.

use crate::error::{Error, IoContext, Result};
use crate::id::HashAlgo;
use crate::model::{Item, Leaf};
use crate::pathbytes;
use crate::progress::Progress;
use crate::scan::{self, ScanOptions};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct DupesOptions {
    pub paths: Vec<PathBuf>,
    /// Files smaller than this are ignored (at least 1: empty files are
    /// all "identical" and waste nothing).
    pub min_size: u64,
    pub scan: ScanOptions,
}

/// One file of a set.
#[derive(Clone, Debug, Serialize)]
pub struct DupFile {
    pub path: String,
    /// Files with the same `inode` number here are hardlinks of each other.
    pub inode: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct DupSet {
    pub size: u64,
    pub hash: String,
    /// Distinct inodes holding this content.
    pub copies: u64,
    /// size × (copies − 1).
    pub wasted: u64,
    pub files: Vec<DupFile>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct DupesReport {
    pub files_scanned: u64,
    pub bytes_scanned: u64,
    /// Files whose first and last blocks, and whole contents, were read.
    pub files_partially_hashed: u64,
    pub files_fully_hashed: u64,
    pub sets: Vec<DupSet>,
    pub duplicate_files: u64,
    pub wasted: u64,
    /// Groups of paths that are hardlinks of one inode (and have no other
    /// copy): already stored once, not waste.
    pub hardlinked: Vec<Vec<String>>,
    /// Paths that could not be read or listed (message per path).
    pub problems: Vec<(String, String)>,
}

/// A file found by the walk.
struct Found {
    path: PathBuf,
    /// The path with its root resolved (symlinks, `.`, `..`): the same file
    /// reached through two PATH arguments has one `real` path.
    real: PathBuf,
    size: u64,
    key: (u64, u64),
}

const EDGE: u64 = 4096;

/// Hash of the first and last `EDGE` bytes, or, for a file of at most
/// `2 × EDGE` bytes, of the whole file (then it is the full BLAKE3 hash).
fn partial_hash(path: &Path, size: u64) -> Result<[u8; 32]> {
    let mut f = File::open(path).ctx("open", path)?;
    let mut h = blake3::Hasher::new();
    if size <= 2 * EDGE {
        let mut buf = vec![0u8; (2 * EDGE) as usize + 1];
        let n = crate::fsutil::read_full(&mut f, &mut buf).ctx("read", path)?;
        h.update(&buf[..n]);
        return Ok(*h.finalize().as_bytes());
    }
    let mut buf = vec![0u8; EDGE as usize];
    let n = crate::fsutil::read_full(&mut f, &mut buf).ctx("read", path)?;
    h.update(&buf[..n]);
    f.seek(SeekFrom::Start(size - EDGE)).ctx("seek", path)?;
    let n = crate::fsutil::read_full(&mut f, &mut buf).ctx("read", path)?;
    h.update(&buf[..n]);
    Ok(*h.finalize().as_bytes())
}

pub fn run(o: &DupesOptions, progress: &dyn Progress) -> Result<DupesReport> {
    if o.paths.is_empty() {
        return Err(Error::Usage(
            "give at least one PATH to look for duplicates in".into(),
        ));
    }
    let mut report = DupesReport::default();
    // 1. Walk.
    progress.phase("scanning", 0, 0);
    let mut found: Vec<Found> = Vec::new();
    for root in &o.paths {
        let root = root.clone();
        let m = std::fs::metadata(&root).ctx("stat", &root)?;
        let real_root = root.canonicalize().ctx("resolve", &root)?;
        if !m.is_dir() {
            if m.is_file() && m.len() >= o.min_size.max(1) {
                found.push(Found {
                    path: root.clone(),
                    real: real_root,
                    size: m.len(),
                    key: (m.dev(), m.ino()),
                });
            }
            continue;
        }
        let out = scan::scan_source(&root, b"", &o.scan)?;
        for i in out.issues {
            report
                .problems
                .push((pathbytes::display_path(&i.fs), i.msg));
        }
        for (e, x) in out.entries.into_iter().zip(out.extra) {
            if let (Item::Leaf(Leaf::File { size, .. }), Some(x)) = (&e.item, x) {
                if *size >= o.min_size.max(1) {
                    found.push(Found {
                        path: pathbytes::to_fs(&root, &e.path),
                        real: pathbytes::to_fs(&real_root, &e.path),
                        size: *size,
                        key: (x.dev, x.ino),
                    });
                }
            }
        }
    }
    progress.finish();
    // The same file reached twice (overlapping PATHs, or one folder spelled
    // two ways) is one file, shown as first given.
    found.sort_by(|a, b| a.real.cmp(&b.real));
    found.dedup_by(|a, b| a.real == b.real);
    found.sort_by(|a, b| a.path.cmp(&b.path));
    report.files_scanned = found.len() as u64;
    report.bytes_scanned = found.iter().map(|f| f.size).sum();

    // 2. Sizes seen on more than one inode.
    let mut by_size: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, f) in found.iter().enumerate() {
        by_size.entry(f.size).or_default().push(i);
    }
    // One representative per inode: hashing a hardlink twice is waste.
    let mut candidates: Vec<usize> = Vec::new();
    for idx in by_size.values() {
        let mut inodes: Vec<(u64, u64)> = idx.iter().map(|&i| found[i].key).collect();
        inodes.sort_unstable();
        inodes.dedup();
        if inodes.len() < 2 {
            continue;
        }
        let mut seen = std::collections::HashSet::new();
        for &i in idx {
            if seen.insert(found[i].key) {
                candidates.push(i);
            }
        }
    }

    // 3. Partial hashes.
    report.files_partially_hashed = candidates.len() as u64;
    progress.phase("comparing", candidates.len() as u64, 0);
    let partial: Vec<(usize, std::result::Result<[u8; 32], String>)> = candidates
        .par_iter()
        .map(|&i| {
            let r = partial_hash(&found[i].path, found[i].size).map_err(|e| e.to_string());
            progress.advance(1, 0);
            (i, r)
        })
        .collect();
    progress.finish();
    let mut groups: HashMap<(u64, [u8; 32]), Vec<usize>> = HashMap::new();
    for (i, r) in partial {
        match r {
            Ok(h) => groups.entry((found[i].size, h)).or_default().push(i),
            Err(e) => report
                .problems
                .push((pathbytes::display_path(&found[i].path), e)),
        }
    }
    // 4. Full hashes where partial ones collide. Files at most 2×EDGE long
    //    were read whole already: their partial hash is their hash.
    let mut full_needed: Vec<usize> = Vec::new();
    let mut confirmed: HashMap<(u64, [u8; 32]), Vec<usize>> = HashMap::new();
    for (k, v) in groups {
        if v.len() < 2 {
            continue;
        }
        if k.0 <= 2 * EDGE {
            confirmed.insert(k, v);
        } else {
            full_needed.extend(v);
        }
    }
    full_needed.sort_unstable();
    report.files_fully_hashed = full_needed.len() as u64;
    let total: u64 = full_needed.iter().map(|&i| found[i].size).sum();
    progress.phase("hashing", full_needed.len() as u64, total);
    let full: Vec<(usize, std::result::Result<[u8; 32], String>)> = full_needed
        .par_iter()
        .map(|&i| {
            let r = crate::hash::hash_file(HashAlgo::Blake3, &found[i].path)
                .map(|d| d.0)
                .map_err(|e| e.to_string());
            progress.advance(1, found[i].size);
            (i, r)
        })
        .collect();
    progress.finish();
    for (i, r) in full {
        match r {
            Ok(h) => confirmed.entry((found[i].size, h)).or_default().push(i),
            Err(e) => report
                .problems
                .push((pathbytes::display_path(&found[i].path), e)),
        }
    }

    // Sets: every path of every inode in a confirmed group.
    let mut paths_of: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    for (i, f) in found.iter().enumerate() {
        paths_of.entry(f.key).or_default().push(i);
    }
    for ((size, hash), reps) in confirmed {
        if reps.len() < 2 {
            continue;
        }
        let mut inodes: Vec<(u64, u64)> = reps.iter().map(|&i| found[i].key).collect();
        inodes.sort_by_key(|k| {
            paths_of
                .get(k)
                .and_then(|v| v.first())
                .map(|&i| found[i].path.clone())
        });
        let mut files = Vec::new();
        for (n, k) in inodes.iter().enumerate() {
            for &i in paths_of.get(k).map(Vec::as_slice).unwrap_or(&[]) {
                files.push(DupFile {
                    path: pathbytes::display_path(&found[i].path),
                    inode: n,
                });
            }
        }
        let copies = inodes.len() as u64;
        report.sets.push(DupSet {
            size,
            hash: crate::id::Digest(hash).to_hex(),
            copies,
            wasted: size * (copies - 1),
            files,
        });
    }
    report.sets.sort_by(|a, b| {
        b.wasted
            .cmp(&a.wasted)
            .then_with(|| a.files[0].path.cmp(&b.files[0].path))
    });
    report.duplicate_files = report.sets.iter().map(|s| s.files.len() as u64).sum();
    report.wasted = report.sets.iter().map(|s| s.wasted).sum();
    report.problems.sort();
    // Paths that are hardlinks of each other and of nothing else: one
    // content stored once, reported so, never as waste.
    let in_sets: std::collections::HashSet<&str> = report
        .sets
        .iter()
        .flat_map(|s| s.files.iter().map(|f| f.path.as_str()))
        .collect();
    let mut linked: Vec<Vec<String>> = paths_of
        .values()
        .filter(|v| v.len() > 1)
        .map(|v| {
            let mut p: Vec<String> = v
                .iter()
                .map(|&i| pathbytes::display_path(&found[i].path))
                .collect();
            p.sort();
            p
        })
        .filter(|p| !in_sets.contains(p[0].as_str()))
        .collect();
    linked.sort();
    report.hardlinked = linked;
    Ok(report)
}
