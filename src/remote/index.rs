//! Indexes: which pack holds which blob, so a reader finds any blob
//! without listing or reading every pack. Each push writes index files
//! for the packs it uploaded; a reader merges them all. They can be
//! rebuilt from the packs' own headers.

use super::crypto::MasterKey;
use super::pack::{BlobEntry, PackKind};
use super::{FormatError, FormatResult};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One pack as an index file lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPack {
    pub name: [u8; 32],
    pub kind: PackKind,
    /// The pack's total length in bytes.
    pub len: u64,
    pub blobs: Vec<BlobEntry>,
}

/// The content of one index file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    pub packs: Vec<IndexPack>,
}

/// The packs a prune took out of the index, waiting to be deleted by a
/// later prune (`pending/<hex>`): what each held, so a pack a concurrent
/// push turned out to need can be indexed again instead of deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingFile {
    /// When the packs left the index (the prune's clock, ns since the epoch).
    pub time_ns: i64,
    pub packs: Vec<IndexPack>,
}

/// The snapshots prunes forgot (`forgotten/<hex>`), by commit name, so a
/// push from a repository that still has them does not upload them again
/// and undo the remote's retention. Each prune writes one file holding
/// everything the files before it held whose commits are gone, plus what
/// it forgets, then deletes those files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgottenFile {
    /// When the prune wrote it (its clock, ns since the epoch).
    pub time_ns: i64,
    /// Commit names (`snapshots/<hex>`), sorted, each once.
    pub commits: Vec<[u8; 32]>,
}

/// The index file format this trove writes and reads.
pub const INDEX_VERSION: u8 = 1;
const MAGIC: &[u8; 4] = b"trvI";
const AAD: &[u8] = b"trove-index";
/// The pending file format (same framing as an index file).
pub const PENDING_VERSION: u8 = 1;
const PENDING_MAGIC: &[u8; 4] = b"trvG";
const PENDING_AAD: &[u8] = b"trove-pending";
/// The forgotten file format (same framing).
pub const FORGOTTEN_VERSION: u8 = 1;
const FORGOTTEN_MAGIC: &[u8; 4] = b"trvF";
const FORGOTTEN_AAD: &[u8] = b"trove-forgotten";

/// Encode an index file: `"trvI"`, version 1, then the sealed, zstd
/// compressed postcard bytes. Its name is the BLAKE3 hash of the result.
pub fn encode(key: &MasterKey, file: &IndexFile) -> FormatResult<Vec<u8>> {
    seal_framed(key, MAGIC, INDEX_VERSION, AAD, file)
}

/// Decode an index file (`Magic`, `Version`, `Auth`, `Truncated`, `Decode`).
pub fn decode(key: &MasterKey, data: &[u8]) -> FormatResult<IndexFile> {
    open_framed(key, MAGIC, "trove index file", INDEX_VERSION, AAD, data)
}

/// Encode a pending file: `"trvG"`, version 1, then as an index file.
pub fn encode_pending(key: &MasterKey, file: &PendingFile) -> FormatResult<Vec<u8>> {
    seal_framed(key, PENDING_MAGIC, PENDING_VERSION, PENDING_AAD, file)
}

/// Decode a pending file.
pub fn decode_pending(key: &MasterKey, data: &[u8]) -> FormatResult<PendingFile> {
    open_framed(
        key,
        PENDING_MAGIC,
        "trove pending file",
        PENDING_VERSION,
        PENDING_AAD,
        data,
    )
}

fn seal_framed<T: Serialize>(
    key: &MasterKey,
    magic: &[u8; 4],
    version: u8,
    aad: &[u8],
    value: &T,
) -> FormatResult<Vec<u8>> {
    let plain =
        postcard::to_stdvec(value).map_err(|e| FormatError::Decode(format!("index: {e}")))?;
    let packed =
        zstd::bulk::compress(&plain, 3).map_err(|e| FormatError::Decode(format!("zstd: {e}")))?;
    let mut out = Vec::with_capacity(packed.len() + 45);
    out.extend_from_slice(magic);
    out.push(version);
    out.extend_from_slice(&key.seal(aad, &packed));
    Ok(out)
}

fn open_framed<T: serde::de::DeserializeOwned>(
    key: &MasterKey,
    magic: &[u8; 4],
    what: &'static str,
    version: u8,
    aad: &[u8],
    data: &[u8],
) -> FormatResult<T> {
    let sealed = super::format::unframe(data, magic, what, version)?;
    let packed = key.open(aad, sealed)?;
    // An index lists about 130 bytes per blob; 1 GiB bounds a repository
    // of several million blobs while refusing a decompression bomb.
    let plain = zstd::bulk::decompress(&packed, 1 << 30)
        .map_err(|e| FormatError::Decode(format!("zstd: {e}")))?;
    postcard::from_bytes(&plain).map_err(|e| FormatError::Decode(format!("{what}: {e}")))
}

/// Encode a forgotten file: `"trvF"`, version 1, then as an index file.
pub fn encode_forgotten(key: &MasterKey, file: &ForgottenFile) -> FormatResult<Vec<u8>> {
    seal_framed(key, FORGOTTEN_MAGIC, FORGOTTEN_VERSION, FORGOTTEN_AAD, file)
}

/// Decode a forgotten file.
pub fn decode_forgotten(key: &MasterKey, data: &[u8]) -> FormatResult<ForgottenFile> {
    open_framed(
        key,
        FORGOTTEN_MAGIC,
        "trove forgotten file",
        FORGOTTEN_VERSION,
        FORGOTTEN_AAD,
        data,
    )
}

/// A pack the merged index knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackInfo {
    pub name: [u8; 32],
    pub kind: PackKind,
    pub len: u64,
}

/// All index files merged: blob id → (pack, entry). A blob listed twice
/// (two pushes raced, or a rebuilt index) resolves to the first pack seen.
#[derive(Default)]
pub struct Index {
    packs: Vec<PackInfo>,
    by_pack: HashMap<[u8; 32], u32>,
    blobs: HashMap<[u8; 32], (u32, BlobEntry)>,
}

impl Index {
    pub fn new() -> Index {
        Index::default()
    }
    /// Merge one index file's packs.
    pub fn add(&mut self, file: IndexFile) {
        for p in file.packs {
            self.add_pack(p);
        }
    }
    /// Merge one pack (a pack already known is skipped: its name is the
    /// hash of its bytes, so both listings describe the same file).
    pub fn add_pack(&mut self, pack: IndexPack) {
        if self.by_pack.contains_key(&pack.name) {
            return;
        }
        let n = self.packs.len() as u32;
        self.by_pack.insert(pack.name, n);
        self.packs.push(PackInfo {
            name: pack.name,
            kind: pack.kind,
            len: pack.len,
        });
        for b in pack.blobs {
            self.blobs.entry(b.id).or_insert((n, b));
        }
    }
    pub fn get(&self, id: &[u8; 32]) -> Option<(&PackInfo, &BlobEntry)> {
        let (n, e) = self.blobs.get(id)?;
        Some((&self.packs[*n as usize], e))
    }
    /// Where a blob is, as a sort key: its pack's ordinal, then its offset
    /// (reading blobs in this order reads each pack front to back).
    pub fn position(&self, id: &[u8; 32]) -> Option<(u32, u64)> {
        self.blobs.get(id).map(|(n, e)| (*n, e.offset))
    }
    pub fn contains(&self, id: &[u8; 32]) -> bool {
        self.blobs.contains_key(id)
    }
    pub fn has_pack(&self, name: &[u8; 32]) -> bool {
        self.by_pack.contains_key(name)
    }
    /// Every pack, in the order first seen.
    pub fn packs(&self) -> &[PackInfo] {
        &self.packs
    }
    /// Every blob, with its pack, sorted by (pack name, offset).
    pub fn blobs_sorted(&self) -> Vec<(&PackInfo, &BlobEntry)> {
        let mut v: Vec<(&PackInfo, &BlobEntry)> = self
            .blobs
            .values()
            .map(|(n, e)| (&self.packs[*n as usize], e))
            .collect();
        v.sort_by_key(|(p, e)| (p.name, e.offset));
        v
    }
    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::pack::BlobKind;

    fn entry(id: u8, offset: u64) -> BlobEntry {
        BlobEntry {
            kind: BlobKind::Data,
            id: [id; 32],
            orig: Some([id ^ 0xff; 32]),
            offset,
            stored_len: 50,
            raw_len: 10,
            compressed: false,
        }
    }

    fn file() -> IndexFile {
        IndexFile {
            packs: vec![
                IndexPack {
                    name: [7; 32],
                    kind: PackKind::Data,
                    len: 104,
                    blobs: vec![entry(1, 0), entry(2, 50)],
                },
                IndexPack {
                    name: [3; 32],
                    kind: PackKind::Data,
                    len: 54,
                    blobs: vec![entry(2, 0)],
                },
            ],
        }
    }

    #[test]
    fn a_forgotten_file_round_trips_and_is_no_other_kind_of_file() {
        let k = MasterKey::generate().expect("in a test");
        let f = ForgottenFile {
            time_ns: 7,
            commits: vec![[1; 32], [9; 32]],
        };
        let bytes = encode_forgotten(&k, &f).expect("in a test");
        assert_eq!(decode_forgotten(&k, &bytes).expect("in a test"), f);
        assert!(decode_pending(&k, &bytes).is_err());
        let pending = encode_pending(&k, &PendingFile::default()).expect("in a test");
        assert!(decode_forgotten(&k, &pending).is_err());
        let other = MasterKey::generate().expect("in a test");
        assert!(matches!(
            decode_forgotten(&other, &bytes),
            Err(FormatError::Auth)
        ));
    }

    #[test]
    fn round_trip_and_damage() {
        let k = MasterKey::generate().expect("in a test");
        let bytes = encode(&k, &file()).expect("in a test");
        assert_eq!(decode(&k, &bytes).expect("in a test"), file());
        assert!(matches!(
            decode(&k, &bytes[..bytes.len() - 1]),
            Err(FormatError::Auth)
        ));
        assert!(matches!(
            decode(&k, &bytes[..3]),
            Err(FormatError::Truncated(_))
        ));
        assert!(matches!(
            decode(
                &k,
                b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
            ),
            Err(FormatError::Magic(_))
        ));
        let mut newer = bytes.clone();
        newer[4] = 2;
        assert!(matches!(
            decode(&k, &newer),
            Err(FormatError::Version { found: 2, .. })
        ));
        assert!(matches!(
            decode(&MasterKey::generate().expect("in a test"), &bytes),
            Err(FormatError::Auth)
        ));
    }

    #[test]
    fn merge_keeps_the_first_listing() {
        let mut idx = Index::new();
        idx.add(file());
        idx.add(file());
        assert_eq!(idx.packs().len(), 2);
        assert_eq!(idx.blob_count(), 2);
        let (p, e) = idx.get(&[2; 32]).expect("in a test");
        assert_eq!((p.name, e.offset), ([7; 32], 50));
        assert!(idx.has_pack(&[3; 32]));
        assert!(!idx.contains(&[9; 32]));
        let sorted: Vec<_> = idx
            .blobs_sorted()
            .iter()
            .map(|(p, e)| (p.name[0], e.offset))
            .collect();
        assert_eq!(sorted, vec![(7, 0), (7, 50)]);
    }
}
