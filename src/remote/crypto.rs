//! Keys and sealing: the random master key, the password-wrapped key files
//! that hold it (argon2id), authenticated encryption of every stored byte
//! (XChaCha20-Poly1305) and the keyed ids that name blobs without
//! revealing their plaintext hash.

use super::{FormatError, FormatResult};
use serde::{Deserialize, Serialize};

/// What a keyed id names: each kind hashes under its own domain, so equal
/// bytes of different kinds never share an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    /// A whole object, keyed by its content id (the digest of the local store).
    Object,
    /// A chunk of a large object, keyed by its bytes.
    Chunk,
    /// A tree, keyed by its tree id.
    Tree,
    /// A snapshot commit's name, keyed by the snapshot id.
    Snapshot,
}

/// The repository's secret: `enc` encrypts, `mac` keys the ids. Zeroed on
/// drop; its Debug shows nothing.
pub struct MasterKey {
    enc: [u8; 32],
    mac: [u8; 32],
}

impl MasterKey {
    /// A fresh random key (from the OS).
    pub fn generate() -> FormatResult<MasterKey> {
        todo!()
    }
    /// Encrypt and authenticate `plain`, binding `aad`. Output:
    /// nonce (24) ‖ ciphertext ‖ tag (16).
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        todo!()
    }
    /// The inverse of `seal`; `FormatError::Auth` when the bytes or `aad`
    /// differ, `Truncated` when shorter than nonce + tag.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> FormatResult<Vec<u8>> {
        todo!()
    }
    /// The keyed id of `data` under `domain`.
    pub fn id(&self, domain: Domain, data: &[u8]) -> [u8; 32] {
        todo!()
    }
}

/// argon2id cost parameters, stored in each key file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

/// One password's copy of the master key (`keys/<id>`, JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    pub version: u32,
    pub created: String,
    pub host: String,
    pub user: String,
    pub kdf: String,
    pub params: KdfParams,
    /// hex
    pub salt: String,
    /// hex of the sealed master key
    pub sealed: String,
}

impl KeyFile {
    /// Wrap `key` under `password`.
    pub fn wrap(
        key: &MasterKey,
        password: &[u8],
        params: KdfParams,
        host: &str,
        user: &str,
        created: &str,
    ) -> FormatResult<KeyFile> {
        todo!()
    }
    /// The master key, or `FormatError::Auth` for a wrong password.
    pub fn unwrap_key(&self, password: &[u8]) -> FormatResult<MasterKey> {
        todo!()
    }
    pub fn to_json(&self) -> Vec<u8> {
        todo!()
    }
    pub fn parse(data: &[u8]) -> FormatResult<KeyFile> {
        todo!()
    }
}
