//! Keys and sealing: the random master key, the password-wrapped key files
//! that hold it (argon2id), authenticated encryption of every stored byte
//! (XChaCha20-Poly1305) and the keyed ids that name blobs without
//! revealing their plaintext hash.

use super::{FormatError, FormatResult};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroize;

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// What wraps the master key in a key file (bound into its seal).
const KEY_AAD: &[u8] = b"trove-key";
/// The key file format this trove writes and reads.
pub const KEY_VERSION: u32 = 1;

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
        let mut enc = [0u8; 32];
        let mut mac = [0u8; 32];
        fill_random(&mut enc)?;
        fill_random(&mut mac)?;
        Ok(MasterKey { enc, mac })
    }

    /// Encrypt and authenticate `plain`, binding `aad`. Output:
    /// nonce (24) ‖ ciphertext ‖ tag (16). The nonce is random: 192 bits
    /// make a collision negligible however many blobs a key seals.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        // The OS generator failing is not something a caller can act on
        // per blob; fall back to a nonce derived from the key, the
        // plaintext and the clock so sealing still never repeats one.
        if fill_random(&mut nonce).is_err() {
            let mut h = blake3::Hasher::new_keyed(&self.mac);
            h.update(b"trove-nonce\0");
            h.update(
                &std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
                    .to_le_bytes(),
            );
            h.update(plain);
            nonce.copy_from_slice(&h.finalize().as_bytes()[..NONCE_LEN]);
        }
        let cipher = self.cipher();
        let xn = XNonce::from(nonce);
        let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        // Encryption only fails for messages beyond 256 GiB, which no
        // caller builds (blobs are at most a chunk or a pack header).
        let ct = cipher
            .encrypt(&xn, Payload { msg: plain, aad })
            .unwrap_or_default();
        out.extend_from_slice(&ct);
        out
    }

    /// The inverse of `seal`; `FormatError::Auth` when the bytes or `aad`
    /// differ, `Truncated` when shorter than nonce + tag.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> FormatResult<Vec<u8>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(FormatError::Truncated(format!(
                "{} sealed bytes, at least {} expected",
                sealed.len(),
                NONCE_LEN + TAG_LEN
            )));
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(nonce);
        self.cipher()
            .decrypt(&XNonce::from(n), Payload { msg: ct, aad })
            .map_err(|_| FormatError::Auth)
    }

    /// The keyed id of `data` under `domain`.
    pub fn id(&self, domain: Domain, data: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.mac);
        h.update(domain.prefix());
        h.update(data);
        *h.finalize().as_bytes()
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.enc.into())
    }

    fn to_bytes(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[..32].copy_from_slice(&self.enc);
        b[32..].copy_from_slice(&self.mac);
        b
    }

    fn from_bytes(b: &[u8]) -> FormatResult<MasterKey> {
        if b.len() != 64 {
            return Err(FormatError::Decode(format!(
                "master key of {} bytes, 64 expected",
                b.len()
            )));
        }
        let mut enc = [0u8; 32];
        let mut mac = [0u8; 32];
        enc.copy_from_slice(&b[..32]);
        mac.copy_from_slice(&b[32..]);
        Ok(MasterKey { enc, mac })
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.enc.zeroize();
        self.mac.zeroize();
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl Domain {
    /// Domain separation: each kind of id hashes under its own prefix.
    fn prefix(self) -> &'static [u8] {
        match self {
            Domain::Object => b"trove-object\0",
            Domain::Chunk => b"trove-chunk\0",
            Domain::Tree => b"trove-tree\0",
            Domain::Snapshot => b"trove-snapshot\0",
        }
    }
}

fn fill_random(buf: &mut [u8]) -> FormatResult<()> {
    getrandom::fill(buf).map_err(|e| FormatError::Decode(format!("no randomness from the OS: {e}")))
}

/// argon2id cost parameters, stored in each key file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl KdfParams {
    /// 64 MiB, 3 passes, one lane: about a third of a second here, well
    /// above OWASP's argon2id minimum (19 MiB, 2 passes).
    pub const DEFAULT: KdfParams = KdfParams {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };
    /// The cheapest argon2 accepts, for tests only (`TROVE_TEST_FAST_KDF`).
    pub const FAST_FOR_TESTS: KdfParams = KdfParams {
        m_cost_kib: 8,
        t_cost: 1,
        p_cost: 1,
    };

    fn derive(&self, password: &[u8], salt: &[u8]) -> FormatResult<[u8; 32]> {
        let params = argon2::Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| FormatError::Decode(format!("argon2 parameters: {e}")))?;
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = [0u8; 32];
        a.hash_password_into(password, salt, &mut out)
            .map_err(|e| FormatError::Decode(format!("argon2: {e}")))?;
        Ok(out)
    }
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
        let mut salt = [0u8; 16];
        fill_random(&mut salt)?;
        let mut kek = params.derive(password, &salt)?;
        let wrapping = MasterKey::from_halves(kek);
        kek.zeroize();
        let mut plain = key.to_bytes();
        let sealed = wrapping.seal(KEY_AAD, &plain);
        plain.zeroize();
        Ok(KeyFile {
            version: KEY_VERSION,
            created: created.to_string(),
            host: host.to_string(),
            user: user.to_string(),
            kdf: "argon2id".to_string(),
            params,
            salt: hex(&salt),
            sealed: hex(&sealed),
        })
    }

    /// The master key, or `FormatError::Auth` for a wrong password.
    pub fn unwrap_key(&self, password: &[u8]) -> FormatResult<MasterKey> {
        if self.version > KEY_VERSION {
            return Err(FormatError::Version {
                found: self.version,
                supported: KEY_VERSION,
            });
        }
        if self.kdf != "argon2id" {
            return Err(FormatError::Decode(format!(
                "unknown key derivation {:?}",
                self.kdf
            )));
        }
        let salt = unhex(&self.salt)?;
        let sealed = unhex(&self.sealed)?;
        let mut kek = self.params.derive(password, &salt)?;
        let wrapping = MasterKey::from_halves(kek);
        kek.zeroize();
        let mut plain = wrapping.open(KEY_AAD, &sealed)?;
        let key = MasterKey::from_bytes(&plain);
        plain.zeroize();
        key
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    pub fn parse(data: &[u8]) -> FormatResult<KeyFile> {
        serde_json::from_slice(data).map_err(|e| FormatError::Decode(format!("key file: {e}")))
    }
}

impl MasterKey {
    /// A sealing key made from one derived key (the key-encryption key);
    /// its id half is unused.
    fn from_halves(enc: [u8; 32]) -> MasterKey {
        MasterKey {
            enc,
            mac: [0u8; 32],
        }
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn unhex(s: &str) -> FormatResult<Vec<u8>> {
    let bad = || FormatError::Decode(format!("not hex: {s:?}"));
    if !s.len().is_multiple_of(2) {
        return Err(bad());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(bad)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_aad_binding() {
        let k = MasterKey::generate().expect("in a test");
        let s = k.seal(b"a", b"hello");
        assert_eq!(s.len(), NONCE_LEN + 5 + TAG_LEN);
        assert_eq!(k.open(b"a", &s).expect("in a test"), b"hello");
        assert_eq!(k.open(b"b", &s), Err(FormatError::Auth));
        let mut flipped = s.clone();
        flipped[NONCE_LEN] ^= 1;
        assert_eq!(k.open(b"a", &flipped), Err(FormatError::Auth));
        assert!(matches!(
            k.open(b"a", &s[..10]),
            Err(FormatError::Truncated(_))
        ));
        let other = MasterKey::generate().expect("in a test");
        assert_eq!(other.open(b"a", &s), Err(FormatError::Auth));
        // Two seals of the same bytes differ (random nonces).
        assert_ne!(k.seal(b"a", b"hello"), s);
    }

    #[test]
    fn keyed_ids_depend_on_key_and_domain() {
        let k = MasterKey::generate().expect("in a test");
        let a = k.id(Domain::Object, b"x");
        assert_eq!(a, k.id(Domain::Object, b"x"));
        assert_ne!(a, k.id(Domain::Chunk, b"x"));
        assert_ne!(
            a,
            MasterKey::generate()
                .expect("in a test")
                .id(Domain::Object, b"x")
        );
        // Never the plain hash.
        assert_ne!(a, *blake3::hash(b"x").as_bytes());
    }

    #[test]
    fn key_file_wraps_and_refuses_wrong_password() {
        let k = MasterKey::generate().expect("in a test");
        let f = KeyFile::wrap(&k, b"pw", KdfParams::FAST_FOR_TESTS, "h", "u", "2026")
            .expect("in a test");
        let parsed = KeyFile::parse(&f.to_json()).expect("in a test");
        assert_eq!(parsed, f);
        let back = parsed.unwrap_key(b"pw").expect("in a test");
        assert_eq!(back.to_bytes(), k.to_bytes());
        assert!(matches!(
            parsed.unwrap_key(b"wrong"),
            Err(FormatError::Auth)
        ));
        let mut newer = f.clone();
        newer.version = 9;
        assert!(matches!(
            newer.unwrap_key(b"pw"),
            Err(FormatError::Version { .. })
        ));
        assert!(KeyFile::parse(b"{").is_err());
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(
            unhex(&hex(&[0, 1, 0xab, 0xff])).expect("in a test"),
            vec![0, 1, 0xab, 0xff]
        );
        assert!(unhex("zz").is_err());
        assert!(unhex("abc").is_err());
    }
}
