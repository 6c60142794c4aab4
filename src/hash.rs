//! Streaming content hashing for both repository algorithms.
//!
//! Large buffers go through BLAKE3's multi-threaded `update_rayon`, so a big
//! file is hashed on every core while it is read in large blocks; small
//! files are hashed single-threaded and the parallelism comes from hashing
//! many files at once (see `store::ingest`). No mmap: reading in blocks into
//! a reused buffer is as fast for hashing-while-copying and cannot SIGBUS
//! when a source file is truncated under us.

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
