//! The remote's small sealed files: its config (`config`) and the snapshot
//! commits (`snapshots/<keyed id>`), each `magic ‖ version ‖ sealed
//! postcard`.

use super::chunk::ChunkParams;
use super::crypto::MasterKey;
use super::FormatResult;
use serde::{Deserialize, Serialize};

/// The highest remote format version this trove reads and writes.
pub const VERSION: u32 = 1;

/// The remote's settings, fixed at `remote init`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteConfig {
    pub version: u32,
    /// Random, 16 bytes.
    pub id: [u8; 16],
    /// "blake3" or "sha256": the content ids of the repository it replicates.
    pub hash: String,
    pub chunker: ChunkParams,
    /// Target pack size in bytes.
    pub pack_size: u64,
}

/// A snapshot as pushed: the local record's exact bytes (so its id is the
/// original) and the objects it references that were no longer stored
/// locally when it was pushed (retention had removed them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub record: Vec<u8>,
    pub missing: Vec<[u8; 32]>,
}

/// `"trvR"`, the version byte, the config sealed (aad `b"trove-config"`).
pub fn encode_config(key: &MasterKey, c: &RemoteConfig) -> FormatResult<Vec<u8>> {
    todo!()
}
/// Peek the version byte without the key (a newer remote is named as such
/// before any password is tried).
pub fn config_version(data: &[u8]) -> FormatResult<u32> {
    todo!()
}
pub fn decode_config(key: &MasterKey, data: &[u8]) -> FormatResult<RemoteConfig> {
    todo!()
}
/// `"trvP"`, the version byte, the commit sealed (aad: the file's name
/// bytes, the keyed snapshot id, so a commit cannot be moved to another name).
pub fn encode_commit(key: &MasterKey, name: &[u8; 32], c: &Commit) -> FormatResult<Vec<u8>> {
    todo!()
}
pub fn decode_commit(key: &MasterKey, name: &[u8; 32], data: &[u8]) -> FormatResult<Commit> {
    todo!()
}
