//! Content-defined chunking (FastCDC 2020, the `fastcdc` crate pinned
//! exactly): where a large object is cut so that an edit in one place
//! changes only the chunks around it. The gear table is shifted by the
//! repository's secret seed, so chunk boundaries do not fingerprint files.

use serde::{Deserialize, Serialize};
use std::io::{self, Read};

/// The chunker's settings, fixed per remote at `remote init` (stored in
/// the sealed config).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
    /// Gear-table seed (secret).
    pub seed: u64,
    /// Objects shorter than this are one blob, never chunked.
    pub whole_below: u64,
}

impl ChunkParams {
    /// 256 KiB / 1 MiB / 4 MiB, objects under 512 KiB whole.
    pub fn with_seed(seed: u64) -> ChunkParams {
        todo!()
    }
}

/// Cut `src` into chunks and call `f` with each in order. Every chunk but
/// the last is between `min` and `max` bytes. Read errors come back as
/// they are; an error from `f` stops the cutting and is returned.
pub fn chunks<R: Read, E: From<io::Error>>(
    params: &ChunkParams,
    src: R,
    f: &mut dyn FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    todo!()
}
