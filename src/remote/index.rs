//! Indexes: which pack holds which blob, so a reader finds any blob
//! without listing or reading every pack. Each push writes index files
//! for the packs it uploaded; a reader merges them all. They can be
//! rebuilt from the packs' own headers.

use super::crypto::MasterKey;
use super::pack::{BlobEntry, PackKind};
use super::FormatResult;
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

/// Encode an index file: `"trvI"`, version 1, then the sealed, zstd
/// compressed postcard bytes. Its name is the BLAKE3 hash of the result.
pub fn encode(key: &MasterKey, file: &IndexFile) -> FormatResult<Vec<u8>> {
    todo!()
}

/// Decode an index file (`Magic`, `Version`, `Auth`, `Truncated`, `Decode`).
pub fn decode(key: &MasterKey, data: &[u8]) -> FormatResult<IndexFile> {
    todo!()
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
        todo!()
    }
    /// Merge one pack.
    pub fn add_pack(&mut self, pack: IndexPack) {
        todo!()
    }
    pub fn get(&self, id: &[u8; 32]) -> Option<(&PackInfo, &BlobEntry)> {
        todo!()
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
        todo!()
    }
    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }
}
