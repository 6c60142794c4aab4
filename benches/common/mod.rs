//! Deterministic benchmark datasets, generated into a temp dir (never into
//! the repository) from a seed:
//!
//! * [`small_files`]: many small files — log-normal sizes around 4 KiB,
//!   nested up to 6 levels, ~5% exact duplicates, ~1% empty files;
//! * [`large_files`]: a few large random files;
//! * [`mutate`]: 1% of the files modified, 1% added, 1% deleted, 1%
//!   renamed.
//!
//! Sizes come from `TROVE_BENCH_FILES` and `TROVE_BENCH_BYTES` (small
//! defaults so `cargo bench` takes minutes; see README for 1M-file and
//! multi-GB settings). `benches/gen_tree.py` makes the same kind of tree
//! for the shell comparison script.

#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Files and total bytes of the small-files tree.
pub fn sizes() -> (u64, u64) {
    (
        env_u64("TROVE_BENCH_FILES", 2_000),
        env_u64("TROVE_BENCH_BYTES", 16 << 20),
    )
}

/// xorshift64*: deterministic, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let (a, b) = (self.unit(), self.unit());
        (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// Directory of file number `i`: nested up to 6 levels, ~30 entries each.
fn dir_of(i: u64) -> PathBuf {
    let mut p = PathBuf::new();
    let mut x = i / 24;
    let mut depth = 0;
    while x > 0 && depth < 6 {
        p.push(format!("d{:02}", x % 8));
        x /= 8;
        depth += 1;
    }
    p
}

/// The many-small-files tree under `root`; returns the paths written.
pub fn small_files(
    root: &Path,
    files: u64,
    bytes: u64,
    seed: u64,
) -> std::io::Result<Vec<PathBuf>> {
    let mut rng = Rng(seed | 1);
    // Log-normal around 4 KiB (sigma 0.6), scaled to the byte budget.
    let raw: Vec<f64> = (0..files)
        .map(|_| (8.3 + 0.6 * rng.normal()).exp())
        .collect();
    let total: f64 = raw.iter().sum();
    let scale = bytes as f64 / total.max(1.0);
    let mut written: Vec<PathBuf> = Vec::with_capacity(files as usize);
    let mut buf = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let i = i as u64;
        let dir = root.join(dir_of(i));
        fs::create_dir_all(&dir)?;
        let path = dir.join(format!("f{i:07}.dat"));
        let roll = rng.below(100);
        if roll == 0 {
            fs::File::create(&path)?; // ~1% empty
        } else if roll <= 5 && !written.is_empty() {
            // ~5% exact duplicates of an earlier file.
            let src = &written[rng.below(written.len() as u64) as usize];
            fs::copy(src, &path)?;
        } else {
            buf.resize(((r * scale) as usize).max(1), 0);
            rng.fill(&mut buf);
            fs::File::create(&path)?.write_all(&buf)?;
        }
        written.push(path);
    }
    Ok(written)
}

/// `count` random files of `size` bytes each under `root`.
pub fn large_files(root: &Path, count: u64, size: u64, seed: u64) -> std::io::Result<()> {
    fs::create_dir_all(root)?;
    let mut rng = Rng(seed | 1);
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..count {
        let mut f = fs::File::create(root.join(format!("large-{i}.bin")))?;
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            rng.fill(&mut buf[..n]);
            f.write_all(&buf[..n])?;
            left -= n as u64;
        }
    }
    Ok(())
}

/// Every regular file under `root`, sorted.
pub fn files_under(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Change `percent`% of the files each way: modified (a block rewritten),
/// added, deleted, renamed.
pub fn mutate(root: &Path, percent: u64, seed: u64) -> std::io::Result<()> {
    let mut rng = Rng(seed | 1);
    let files = files_under(root)?;
    let n = (files.len() as u64 * percent / 100).max(1);
    let mut buf = vec![0u8; 4096];
    for k in 0..n {
        let f = &files[rng.below(files.len() as u64) as usize];
        match k % 4 {
            0 => {
                if f.exists() {
                    rng.fill(&mut buf);
                    fs::OpenOptions::new()
                        .append(true)
                        .open(f)?
                        .write_all(&buf[..512])?;
                }
            }
            1 => {
                rng.fill(&mut buf);
                let p = f.with_file_name(format!("new{k:06}.dat"));
                fs::write(p, &buf)?;
            }
            2 => {
                let _ = fs::remove_file(f);
            }
            _ => {
                let _ = fs::rename(f, f.with_extension("moved"));
            }
        }
    }
    Ok(())
}
