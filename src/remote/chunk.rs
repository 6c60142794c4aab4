//! Content-defined chunking (FastCDC 2020, the `fastcdc` crate pinned
//! exactly): where a large object is cut so that an edit in one place
//! changes only the chunks around it. The gear table is shifted by the
//! repository's secret seed, so chunk boundaries do not fingerprint files.

use fastcdc::v2020::{Normalization, StreamCDC};
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
        ChunkParams {
            min: 256 * 1024,
            avg: 1024 * 1024,
            max: 4 * 1024 * 1024,
            seed,
            whole_below: 512 * 1024,
        }
    }

    /// Whether the crate accepts these sizes (it asserts on them); a
    /// config that fails this is damaged, not a reason to panic.
    pub fn validate(&self) -> Result<(), String> {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let (min, avg, max) = (self.min as usize, self.avg as usize, self.max as usize);
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max)
            && min <= avg
            && avg <= max
            && min % 2 == 0
            && avg % 2 == 0
            && max % 2 == 0;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "chunk sizes {min}/{avg}/{max} outside what FastCDC accepts"
            ))
        }
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
    params
        .validate()
        .map_err(|m| E::from(io::Error::new(io::ErrorKind::InvalidData, m)))?;
    let cdc = StreamCDC::with_level_and_seed(
        src,
        params.min as usize,
        params.avg as usize,
        params.max as usize,
        Normalization::Level1,
        params.seed,
    );
    for chunk in cdc {
        let chunk = chunk.map_err(|e| E::from(io::Error::from(e)))?;
        f(&chunk.data)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Deterministic bytes (xorshift64*), the same on every machine.
    fn bytes(len: usize, mut state: u64) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            v.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        v.truncate(len);
        v
    }

    fn cut(params: &ChunkParams, data: &[u8]) -> Vec<usize> {
        let mut lens = Vec::new();
        chunks::<_, io::Error>(params, data, &mut |c| {
            lens.push(c.len());
            Ok(())
        })
        .expect("in a test");
        lens
    }

    /// Golden vectors: the cut points of the pinned crate on fixed input.
    /// If these change, every remote's chunk ids change — a format break.
    #[test]
    fn golden_cut_points() {
        let data = bytes(12 * 1024 * 1024, 0x9E37_79B9_7F4A_7C15);
        let with_seed_0 = cut(&ChunkParams::with_seed(0), &data);
        let with_seed_1 = cut(&ChunkParams::with_seed(0x5eed), &data);
        assert_eq!(with_seed_0, GOLDEN_SEED_0, "seed 0");
        assert_eq!(with_seed_1, GOLDEN_SEED_5EED, "seed 0x5eed");
    }

    const GOLDEN_SEED_0: &[usize] = &[
        1686928, 2147670, 1294315, 1156722, 1140104, 1207574, 1066156, 1319490, 1563953,
    ];
    const GOLDEN_SEED_5EED: &[usize] = &[
        716002, 1089581, 750301, 309769, 1233213, 1090551, 2797204, 1269040, 1986298, 1129182,
        211771,
    ];

    #[test]
    fn an_edit_in_the_middle_changes_few_chunks() {
        let p = ChunkParams::with_seed(7);
        let mut data = bytes(16 * 1024 * 1024, 1);
        let before: Vec<Vec<u8>> = collect(&p, &data);
        for b in &mut data[8 * 1024 * 1024..8 * 1024 * 1024 + 1000] {
            *b ^= 0x55;
        }
        let after: Vec<Vec<u8>> = collect(&p, &data);
        let new = after.iter().filter(|c| !before.contains(c)).count();
        assert!(new <= 3, "{new} chunks changed for a 1000-byte edit");
    }

    fn collect(p: &ChunkParams, data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        chunks::<_, io::Error>(p, data, &mut |c| {
            out.push(c.to_vec());
            Ok(())
        })
        .expect("in a test");
        out
    }

    #[test]
    fn bad_params_are_an_error_not_a_panic() {
        let mut p = ChunkParams::with_seed(0);
        p.max = 1;
        assert!(p.validate().is_err());
        assert!(chunks::<_, io::Error>(&p, &b"x"[..], &mut |_| Ok(())).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// Chunks concatenate to the input; all but the last are within bounds.
        #[test]
        fn chunks_tile_the_input(len in 0usize..3_000_000, seed in any::<u64>(), state in 1u64..) {
            let p = ChunkParams { min: 16 * 1024, avg: 64 * 1024, max: 256 * 1024, seed, whole_below: 0 };
            let data = bytes(len, state);
            let parts = collect(&p, &data);
            prop_assert_eq!(parts.concat(), data);
            for (i, c) in parts.iter().enumerate() {
                prop_assert!(c.len() <= p.max as usize);
                if i + 1 < parts.len() {
                    prop_assert!(c.len() >= p.min as usize);
                }
            }
        }
    }
}
