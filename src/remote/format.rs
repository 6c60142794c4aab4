//! The remote's small sealed files: its config (`config`) and the snapshot
//! commits (`snapshots/<keyed id>`), each `magic ‖ version ‖ sealed
//! postcard`.

use super::chunk::ChunkParams;
use super::crypto::MasterKey;
use super::objlock::ObjectLock;
use super::{FormatError, FormatResult};
use serde::{Deserialize, Serialize};

/// The highest remote format version this trove reads and writes (of
/// the commits, packs and index files; the config has its own).
pub const VERSION: u32 = 1;

/// The highest config version this trove reads. Version 2 adds the
/// object lock period; a config without one is still written as version
/// 1, so older troves keep reading remotes that do not use object lock,
/// and refuse (by its version) a remote whose objects they would write
/// without a lock.
pub const CONFIG_VERSION: u32 = 2;

/// The remote's settings, fixed at `remote init`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteConfig {
    /// 1, or 2 when `object_lock` is set.
    pub version: u32,
    /// Random, 16 bytes.
    pub id: [u8; 16],
    /// "blake3" or "sha256": the content ids of the repository it replicates.
    pub hash: String,
    pub chunker: ChunkParams,
    /// Target pack size in bytes.
    pub pack_size: u64,
    /// S3 Object Lock: every object written gets retention for this
    /// period (config version 2).
    pub object_lock: Option<ObjectLock>,
}

impl RemoteConfig {
    /// The config version these settings are written as.
    pub fn needed_version(&self) -> u32 {
        if self.object_lock.is_some() {
            2
        } else {
            1
        }
    }
}

/// The config as version 1 writes it (postcard has no optional trailing
/// fields: each version is its own layout).
#[derive(Serialize, Deserialize)]
struct ConfigV1 {
    version: u32,
    id: [u8; 16],
    hash: String,
    chunker: ChunkParams,
    pack_size: u64,
}

/// A snapshot as pushed: the local record's exact bytes (so its id is the
/// original) and the objects it references that were no longer stored
/// locally when it was pushed (retention had removed them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub record: Vec<u8>,
    pub missing: Vec<[u8; 32]>,
}

const CONFIG_MAGIC: &[u8; 4] = b"trvR";
const COMMIT_MAGIC: &[u8; 4] = b"trvP";
const CONFIG_AAD: &[u8] = b"trove-config";

fn frame(magic: &[u8; 4], version: u8, sealed: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(sealed.len() + 5);
    out.extend_from_slice(magic);
    out.push(version);
    out.extend_from_slice(&sealed);
    out
}

/// The sealed part of a `magic ‖ version ‖ sealed` file, after checking
/// the magic and that the version is one this trove reads.
pub(crate) fn unframe<'a>(
    data: &'a [u8],
    magic: &[u8; 4],
    what: &'static str,
    supported: u8,
) -> FormatResult<&'a [u8]> {
    if data.len() < 5 {
        return Err(FormatError::Truncated(format!(
            "{} bytes, no header",
            data.len()
        )));
    }
    if &data[..4] != magic {
        return Err(FormatError::Magic(what));
    }
    if data[4] > supported || data[4] == 0 {
        return Err(FormatError::Version {
            found: u32::from(data[4]),
            supported: u32::from(supported),
        });
    }
    Ok(&data[5..])
}

fn version_byte() -> u8 {
    VERSION as u8
}

/// `"trvR"`, the version byte (1, or 2 with an object lock period), the
/// config sealed (aad `b"trove-config"`).
pub fn encode_config(key: &MasterKey, c: &RemoteConfig) -> FormatResult<Vec<u8>> {
    let version = c.needed_version();
    let plain = if version == 1 {
        postcard::to_stdvec(&ConfigV1 {
            version: 1,
            id: c.id,
            hash: c.hash.clone(),
            chunker: c.chunker,
            pack_size: c.pack_size,
        })
    } else {
        postcard::to_stdvec(&RemoteConfig {
            version,
            ..c.clone()
        })
    }
    .map_err(|e| FormatError::Decode(format!("config: {e}")))?;
    Ok(frame(
        CONFIG_MAGIC,
        version as u8,
        key.seal(CONFIG_AAD, &plain),
    ))
}
/// Peek the version byte without the key (a newer remote is named as such
/// before any password is tried).
pub fn config_version(data: &[u8]) -> FormatResult<u32> {
    if data.len() < 5 {
        return Err(FormatError::Truncated(format!(
            "config of {} bytes",
            data.len()
        )));
    }
    if &data[..4] != CONFIG_MAGIC {
        return Err(FormatError::Magic("trove remote config"));
    }
    Ok(u32::from(data[4]))
}
pub fn decode_config(key: &MasterKey, data: &[u8]) -> FormatResult<RemoteConfig> {
    let sealed = unframe(
        data,
        CONFIG_MAGIC,
        "trove remote config",
        CONFIG_VERSION as u8,
    )?;
    let plain = key.open(CONFIG_AAD, sealed)?;
    let undecodable = |e: postcard::Error| FormatError::Decode(format!("config: {e}"));
    let c: RemoteConfig = if data[4] == 1 {
        let v1: ConfigV1 = postcard::from_bytes(&plain).map_err(undecodable)?;
        RemoteConfig {
            version: v1.version,
            id: v1.id,
            hash: v1.hash,
            chunker: v1.chunker,
            pack_size: v1.pack_size,
            object_lock: None,
        }
    } else {
        postcard::from_bytes(&plain).map_err(undecodable)?
    };
    // The sealed version must be the framed one (the frame is not
    // authenticated; the sealed bytes are).
    if c.version != u32::from(data[4]) {
        return Err(FormatError::Decode(format!(
            "config says version {} inside a version {} frame",
            c.version, data[4]
        )));
    }
    c.chunker.validate().map_err(FormatError::Decode)?;
    if c.hash != "blake3" && c.hash != "sha256" {
        return Err(FormatError::Decode(format!(
            "unknown content hash {:?}",
            c.hash
        )));
    }
    if let Some(l) = c.object_lock {
        ObjectLock::new(l.days, l.mode).map_err(FormatError::Decode)?;
    }
    Ok(c)
}
/// `"trvP"`, the version byte, the commit sealed (aad: the file's name
/// bytes, the keyed snapshot id, so a commit cannot be moved to another name).
pub fn encode_commit(key: &MasterKey, name: &[u8; 32], c: &Commit) -> FormatResult<Vec<u8>> {
    let plain = postcard::to_stdvec(c).map_err(|e| FormatError::Decode(format!("commit: {e}")))?;
    Ok(frame(COMMIT_MAGIC, version_byte(), key.seal(name, &plain)))
}
pub fn decode_commit(key: &MasterKey, name: &[u8; 32], data: &[u8]) -> FormatResult<Commit> {
    let sealed = unframe(data, COMMIT_MAGIC, "trove snapshot commit", version_byte())?;
    let plain = key.open(name, sealed)?;
    postcard::from_bytes(&plain).map_err(|e| FormatError::Decode(format!("commit: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::chunk::ChunkParams;

    fn config() -> RemoteConfig {
        RemoteConfig {
            version: VERSION,
            id: [5; 16],
            hash: "blake3".into(),
            chunker: ChunkParams::with_seed(42),
            pack_size: 16 << 20,
            object_lock: None,
        }
    }

    #[test]
    fn a_lock_period_makes_a_version_2_config_and_version_1_is_still_read() {
        use crate::remote::objlock::LockMode;
        let k = MasterKey::generate().expect("in a test");
        let v1 = encode_config(&k, &config()).expect("in a test");
        assert_eq!(config_version(&v1).expect("in a test"), 1);
        let locked = RemoteConfig {
            version: 2,
            object_lock: Some(ObjectLock::new(30, LockMode::Compliance).expect("valid")),
            ..config()
        };
        let v2 = encode_config(&k, &locked).expect("in a test");
        assert_eq!(config_version(&v2).expect("in a test"), 2);
        assert_eq!(decode_config(&k, &v2).expect("in a test"), locked);
        // A frame that lies about its version is refused.
        let mut lying = v2.clone();
        lying[4] = 1;
        assert!(matches!(
            decode_config(&k, &lying),
            Err(FormatError::Decode(_))
        ));
        let mut newer = v2;
        newer[4] = 3;
        assert!(matches!(
            decode_config(&k, &newer),
            Err(FormatError::Version {
                found: 3,
                supported: 2
            })
        ));
    }

    #[test]
    fn config_round_trip_and_version_peek() {
        let k = MasterKey::generate().expect("in a test");
        let bytes = encode_config(&k, &config()).expect("in a test");
        assert_eq!(config_version(&bytes).expect("in a test"), VERSION);
        assert_eq!(decode_config(&k, &bytes).expect("in a test"), config());
        let mut newer = bytes.clone();
        newer[4] = 7;
        assert_eq!(config_version(&newer).expect("in a test"), 7);
        assert!(matches!(
            decode_config(&k, &newer),
            Err(FormatError::Version { found: 7, .. })
        ));
        assert!(matches!(
            config_version(b"PK\x03\x04zz"),
            Err(FormatError::Magic(_))
        ));
        assert!(matches!(
            decode_config(&MasterKey::generate().expect("in a test"), &bytes),
            Err(FormatError::Auth)
        ));
    }

    #[test]
    fn a_commit_is_bound_to_its_name() {
        let k = MasterKey::generate().expect("in a test");
        let c = Commit {
            record: b"record bytes".to_vec(),
            missing: vec![[1; 32]],
        };
        let bytes = encode_commit(&k, &[4; 32], &c).expect("in a test");
        assert_eq!(decode_commit(&k, &[4; 32], &bytes).expect("in a test"), c);
        assert_eq!(decode_commit(&k, &[5; 32], &bytes), Err(FormatError::Auth));
    }
}
