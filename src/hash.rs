//! Streaming content hashing for both repository algorithms.
//!
//! Large buffers go through BLAKE3's multi-threaded `update_rayon`, so a big
//! file is hashed on every core while it is read in large blocks; small
//! files are hashed single-threaded and the parallelism comes from hashing
//! many files at once (see `store::ingest`). No mmap: reading in blocks into
//! a reused buffer is as fast for hashing-while-copying and cannot SIGBUS
//! when a source file is truncated under us.

use crate::error::{IoContext, Result};
use crate::id::{Digest, HashAlgo};
use sha2::Digest as _;

/// Buffers at least this large are hashed with BLAKE3's rayon path; below
/// it the thread hand-off costs more than it saves.
const RAYON_THRESHOLD: usize = 1 << 20;

pub enum Hasher {
    Blake3(Box<blake3::Hasher>),
    Sha256(sha2::Sha256),
}

impl Hasher {
    pub fn new(algo: HashAlgo) -> Hasher {
        match algo {
            HashAlgo::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
            HashAlgo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Blake3(h) => {
                if data.len() >= RAYON_THRESHOLD {
                    h.update_rayon(data);
                } else {
                    h.update(data);
                }
            }
            Hasher::Sha256(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            Hasher::Blake3(h) => Digest(*h.finalize().as_bytes()),
            Hasher::Sha256(h) => Digest(h.finalize().into()),
        }
    }
}

/// Hash a byte slice in one call.
pub fn hash_bytes(algo: HashAlgo, data: &[u8]) -> Digest {
    let mut h = Hasher::new(algo);
    h.update(data);
    h.finish()
}

/// `hash_object` for a file outside the store (symlinks followed, FIFOs
/// and other non-regular files still refused without blocking).
pub fn hash_file(algo: HashAlgo, path: &std::path::Path) -> Result<Digest> {
    let f = crate::fsutil::open_regular(path)?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(LARGE_BUF as u64);
    hash_reader(algo, f, size, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // b3sum of "hello world\n" and sha256sum of the same.
        assert_eq!(
            hash_bytes(HashAlgo::Blake3, b"hello world\n").to_hex(),
            "dc5a4edb8240b018124052c330270696f96771a63b45250a5c17d3000e823355"
        );
        assert_eq!(
            hash_bytes(HashAlgo::Sha256, b"hello world\n").to_hex(),
            "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447"
        );
    }

    #[test]
    fn chunked_equals_whole() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        for algo in [HashAlgo::Blake3, HashAlgo::Sha256] {
            let mut h = Hasher::new(algo);
            for c in data.chunks(1 << 20) {
                h.update(c);
            }
            assert_eq!(h.finish(), hash_bytes(algo, &data));
        }
    }
}

/// Below this size a file is hashed through a per-thread buffer (a fresh,
/// zeroed large buffer per file would cost more than hashing 4 KiB).
pub const SMALL_BUF: usize = 256 * 1024;
/// Big enough for BLAKE3's multi-threaded path to pay off, small enough
/// that two workers reading large files at once stay within the memory
/// budget.
pub const LARGE_BUF: usize = 2 * 1024 * 1024;

thread_local! {
    static SMALL_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// This thread's small-file buffer (empty the first time), shared by
/// ingest and hashing: one per thread, not one per file. Give it back.
pub fn take_small_buffer() -> Vec<u8> {
    SMALL_BUFFER.with(|b| std::mem::take(&mut *b.borrow_mut()))
}

pub fn give_back_small_buffer(buf: Vec<u8>) {
    SMALL_BUFFER.with(|b| *b.borrow_mut() = buf);
}

/// Hash what `f` reads to its end; `size` (its expected length) picks
/// the buffer, `path` names it in errors.
///
/// Objects are read, never memory-mapped: the same inodes are hardlinked
/// into the browsable tree, where anyone with write access (root ignores
/// the read-only mode) can truncate one while it is hashed, and a truncated
/// mapping kills the process with SIGBUS. A read of a truncated file just
/// ends early and gives a digest that does not match, which the caller
/// reports. Large buffers still go through BLAKE3's multi-threaded path
/// (`Hasher::update`), so a big object is hashed on every core.
pub fn hash_reader(
    algo: HashAlgo,
    mut f: impl std::io::Read,
    size: u64,
    path: &std::path::Path,
) -> Result<Digest> {
    let size = size as usize;
    let mut h = Hasher::new(algo);
    let mut run = |buf: &mut [u8]| -> Result<()> {
        loop {
            let n = crate::fsutil::read_full(&mut f, buf).ctx("read", path)?;
            if n == 0 {
                return Ok(());
            }
            h.update(&buf[..n]);
        }
    };
    if size >= SMALL_BUF {
        let mut buf = vec![0u8; LARGE_BUF];
        run(&mut buf)?;
    } else {
        let mut buf = take_small_buffer();
        if buf.len() < SMALL_BUF {
            buf.resize(SMALL_BUF, 0);
        }
        let r = run(&mut buf);
        give_back_small_buffer(buf);
        r?;
    }
    Ok(h.finish())
}
