//! Content identities: the hash algorithm of a repository and the newtype
//! ids of objects, trees and snapshots, with their hex form and fan-out path.
//!
//! Every id is 32 bytes whatever the algorithm (BLAKE3 and SHA-256 both give
//! 256-bit digests), so the on-disk encodings do not depend on the choice.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The hasher of in-memory sets and maps keyed by ids. An id is already a
/// uniform 256-bit digest, so std's SipHash (a fifth of a prune's CPU,
/// perf) buys nothing for an honest repository; foldhash is seeded per
/// process, so names a hostile repository chose cannot be made to collide
/// in advance. Iteration order is as arbitrary as std's: sort before
/// anything reaches output.
pub type IdHashing = foldhash::fast::RandomState;
/// A set of ids ([`IdHashing`]).
pub type IdSet<T> = std::collections::HashSet<T, IdHashing>;
/// A map keyed by ids ([`IdHashing`]).
pub type IdMap<K, V> = std::collections::HashMap<K, V, IdHashing>;

/// The content hash of a repository, fixed when the repository is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlgo {
    Blake3,
    Sha256,
}

impl HashAlgo {
    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Blake3 => "blake3",
            HashAlgo::Sha256 => "sha256",
        }
    }
}

impl fmt::Display for HashAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HashAlgo {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "blake3" => Ok(HashAlgo::Blake3),
            "sha256" | "sha-256" => Ok(HashAlgo::Sha256),
            other => Err(format!(
                "unknown hash algorithm {other:?}: use \"blake3\" or \"sha256\""
            )),
        }
    }
}

/// A 256-bit digest. The typed ids below wrap it so that an object id can
/// never be passed where a tree id is expected.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

/// The byte order of the digests (every sorted list of ids on disk
/// relies on it), eight bytes at a time: the derived order called
/// `memcmp` for every comparison, the hottest leaf of a quick verify's
/// sorts at three million objects.
impl Ord for Digest {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (0..4)
            .map(|k| self.word(k).cmp(&other.word(k)))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    }
}

impl PartialOrd for Digest {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Digest {
    /// Bytes `8k..8k + 8` (k < 4) as a big-endian number: the words
    /// order as the digests do, and, a digest being a hash, each is as
    /// good as random.
    pub fn word(&self, k: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[8 * k..8 * k + 8]);
        u64::from_be_bytes(b)
    }

    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 15) as usize] as char);
        }
        s
    }

    pub fn from_hex(s: &str) -> Option<Digest> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            out[i] = (hex_val(pair[0])? << 4) | hex_val(pair[1])?;
        }
        Some(Digest(out))
    }

    /// The fan-out path of this digest below a store directory: `ab/abcd…`.
    /// Two hex digits give 256 directories, enough to keep each directory
    /// small for millions of objects.
    pub fn fanout(&self) -> String {
        let hex = self.to_hex();
        format!("{}/{}", &hex[..2], hex)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..16])
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub Digest);

        impl $name {
            pub fn to_hex(&self) -> String {
                self.0.to_hex()
            }
            pub fn from_hex(s: &str) -> Option<Self> {
                Digest::from_hex(s).map($name)
            }
            pub fn fanout(&self) -> String {
                self.0.fanout()
            }
            /// The short form shown to users (like restic's 8 hex digits).
            pub fn short(&self) -> String {
                self.0.to_hex()[..8].to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

id_type!(
    /// The id of a file content: the hash of its raw bytes.
    ObjectId
);
id_type!(
    /// The id of a tree object: the hash of its uncompressed encoding.
    TreeId
);
id_type!(
    /// The id of a snapshot record: the hash of its encoding.
    SnapshotId
);

/// Search a slice sorted by id (ids unique) for `id`, answering as
/// `binary_search_by_key` does. (`verify`'s object list finds ids through
/// a table of their prefixes and falls back on this past `u32::MAX`
/// objects.) Ids are hashes, spread evenly, so the
/// search first interpolates on the ids' first eight bytes (a few probes
/// into a million entries, where a binary search misses the cache at most
/// of its twenty steps: that was most of a quick verify's CPU time), then
/// finishes with a binary search of what is left. Each comparison looks
/// at the first eight bytes as one integer and the rest only where those
/// are equal.
pub fn search_by_id<T>(
    v: &[T],
    id: &ObjectId,
    key: impl Fn(&T) -> &ObjectId,
) -> Result<usize, usize> {
    let head = |d: &ObjectId| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&d.0 .0[..8]);
        u64::from_be_bytes(b)
    };
    let want = head(id);
    let cmp = |x: &T| {
        let k = key(x);
        head(k).cmp(&want).then_with(|| k.cmp(id))
    };
    // Everything before `lo` is below `id`, everything from `hi` above.
    let (mut lo, mut hi) = (0usize, v.len());
    for _ in 0..4 {
        if hi - lo < 64 {
            break;
        }
        let (a, b) = (head(key(&v[lo])), head(key(&v[hi - 1])));
        if want <= a || want >= b {
            break;
        }
        let span = (hi - 1 - lo) as u128;
        let g = lo + ((u128::from(want - a) * span) / u128::from(b - a)) as usize;
        match cmp(&v[g]) {
            std::cmp::Ordering::Less => lo = g + 1,
            std::cmp::Ordering::Greater => hi = g,
            std::cmp::Ordering::Equal => return Ok(g),
        }
    }
    match v[lo..hi].binary_search_by(cmp) {
        Ok(i) => Ok(lo + i),
        Err(i) => Err(lo + i),
    }
}

/// A xorshift generator from `seed` (not zero): the tests' random ids,
/// the same every run.
#[cfg(test)]
pub(crate) fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Digests order as their bytes do, whichever byte first differs.
    #[test]
    fn digests_order_as_their_bytes() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        for _ in 0..2000 {
            let mut a = [0u8; 32];
            for c in a.chunks_mut(8) {
                c.copy_from_slice(&next().to_le_bytes());
            }
            let mut b = a;
            // Equal up to a byte anywhere, then anything.
            let at = (next() % 33) as usize;
            for x in b.iter_mut().skip(at) {
                *x = next() as u8;
            }
            let (da, db) = (Digest(a), Digest(b));
            assert_eq!(da.cmp(&db), a.cmp(&b), "{da:?} {db:?}");
            assert_eq!(db.cmp(&da), b.cmp(&a));
            assert_eq!(da.cmp(&db).is_eq(), da == db);
            assert_eq!(da.partial_cmp(&db), Some(a.cmp(&b)));
        }
    }

    #[test]
    fn search_by_id_answers_as_binary_search() {
        let id = |i: u32| ObjectId(Digest(*blake3::hash(&i.to_le_bytes()).as_bytes()));
        for n in [0u32, 1, 5, 63, 64, 65, 1000, 5000] {
            let mut ids: Vec<ObjectId> = (0..n).map(id).collect();
            // Ties in the first eight bytes, apart after them.
            if n > 10 {
                let mut d = ids[3].0 .0;
                d[31] ^= 1;
                ids.push(ObjectId(Digest(d)));
            }
            ids.sort_unstable();
            ids.dedup();
            let probes = (0..n + 50)
                .map(id)
                .chain([ObjectId(Digest([0; 32])), ObjectId(Digest([0xff; 32]))])
                .chain(ids.iter().copied());
            for probe in probes {
                assert_eq!(
                    search_by_id(&ids, &probe, |x| x),
                    ids.binary_search(&probe),
                    "{n} {probe:?}"
                );
            }
        }
    }

    #[test]
    fn hex_round_trip() {
        let d = Digest([0xab; 32]);
        assert_eq!(Digest::from_hex(&d.to_hex()), Some(d));
        assert_eq!(d.fanout().len(), 2 + 1 + 64);
        assert!(d.fanout().starts_with("ab/abab"));
        assert_eq!(Digest::from_hex("zz"), None);
        assert_eq!(Digest::from_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn algo_parse() {
        assert_eq!("BLAKE3".parse::<HashAlgo>(), Ok(HashAlgo::Blake3));
        assert_eq!("sha256".parse::<HashAlgo>(), Ok(HashAlgo::Sha256));
        assert!("md5".parse::<HashAlgo>().is_err());
    }
}
