//! Packs: many sealed blobs in one stored file, followed by a sealed
//! header that lists them, so 100,000 small files are a few dozen PUTs.
//! A pack's name is the BLAKE3 hash of its (encrypted) bytes.

use super::crypto::MasterKey;
use super::{FormatError, FormatResult};
use serde::{Deserialize, Serialize};

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlobKind {
    /// A whole object (id keyed under `Domain::Object`) or a chunk of one
    /// (`Domain::Chunk`).
    Data,
    /// A large object's chunk list ([`ChunkList`]; id keyed under `Domain::Object`).
    List,
    /// A tree object's stored bytes (id keyed under `Domain::Tree`).
    Tree,
}

/// Which blobs a pack holds: data packs hold `Data`, tree packs `List` and `Tree`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PackKind {
    Data,
    Tree,
}

/// A large object's content: its content id, its length and its chunk ids
/// in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkList {
    /// The object's content id (so an index can be rebuilt from the blob).
    pub object: [u8; 32],
    pub size: u64,
    pub chunks: Vec<[u8; 32]>,
}

/// One blob of a pack, as its header and the indexes list it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobEntry {
    pub kind: BlobKind,
    /// Keyed id.
    pub id: [u8; 32],
    /// The plain digest it stands for (object id or tree id) where there is
    /// one (whole objects, lists, trees); `None` for chunks. Only ever
    /// stored sealed.
    pub orig: Option<[u8; 32]>,
    /// Byte offset of the sealed blob in the pack.
    pub offset: u64,
    /// Length of the sealed blob (nonce + ciphertext + tag).
    pub stored_len: u32,
    /// Length of the plaintext.
    pub raw_len: u32,
    /// Whether the sealed bytes are zstd-compressed plaintext.
    pub compressed: bool,
}

/// A blob sealed and ready to append (made in parallel, appended in order).
pub struct SealedBlob {
    pub kind: BlobKind,
    pub id: [u8; 32],
    pub orig: Option<[u8; 32]>,
    pub raw_len: u32,
    pub compressed: bool,
    pub bytes: Vec<u8>,
}

/// The pack header format this trove writes and reads.
pub const HEADER_VERSION: u32 = 1;
/// What a pack header is sealed with (beside the key).
const HEADER_AAD: &[u8] = b"trove-pack-header";
/// zstd level for blobs: level 3 is zstd's default, fast enough that
/// sealing keeps up with reading on one core.
const ZSTD_LEVEL: i32 = 3;

/// A pack's header as stored (sealed). It lists what a reader needs to
/// cut the pack into blobs and open them; offsets follow from the lengths
/// (blobs tile the pack), and the plain digest a blob stands for is not
/// repeated here — the index holds it, and it is recovered from the blob
/// itself when an index is rebuilt (`recover_orig`), which keeps 32 bytes
/// per blob out of every pack.
#[derive(Serialize, Deserialize)]
struct PackHeader {
    version: u32,
    kind: PackKind,
    entries: Vec<HeaderEntry>,
}

#[derive(Serialize, Deserialize)]
struct HeaderEntry {
    kind: BlobKind,
    id: [u8; 32],
    stored_len: u32,
    raw_len: u32,
    compressed: bool,
}

impl PackKind {
    /// Whether a blob of `kind` belongs in a pack of this kind.
    pub fn holds(self, kind: BlobKind) -> bool {
        match self {
            PackKind::Data => kind == BlobKind::Data,
            PackKind::Tree => kind != BlobKind::Data,
        }
    }
    pub fn of(kind: BlobKind) -> PackKind {
        match kind {
            BlobKind::Data => PackKind::Data,
            BlobKind::List | BlobKind::Tree => PackKind::Tree,
        }
    }
}

/// Compress `plain` with zstd (when `compress` and it gets smaller) and
/// seal it with the blob id as associated data.
pub fn seal_blob(
    key: &MasterKey,
    kind: BlobKind,
    id: [u8; 32],
    orig: Option<[u8; 32]>,
    plain: &[u8],
    compress: bool,
) -> FormatResult<SealedBlob> {
    let raw_len = u32::try_from(plain.len())
        .map_err(|_| FormatError::Decode(format!("blob of {} bytes is too large", plain.len())))?;
    let packed = if compress && plain.len() > 64 {
        zstd::bulk::compress(plain, ZSTD_LEVEL)
            .ok()
            .filter(|c| c.len() < plain.len())
    } else {
        None
    };
    let compressed = packed.is_some();
    let bytes = key.seal(&id, packed.as_deref().unwrap_or(plain));
    Ok(SealedBlob {
        kind,
        id,
        orig,
        raw_len,
        compressed,
        bytes,
    })
}

/// Open one blob read from a pack (`stored` is exactly its sealed bytes):
/// decrypt, decompress, and check the length the entry promises.
pub fn open_blob(key: &MasterKey, entry: &BlobEntry, stored: &[u8]) -> FormatResult<Vec<u8>> {
    if stored.len() != entry.stored_len as usize {
        return Err(FormatError::Truncated(format!(
            "blob of {} bytes where the index says {}",
            stored.len(),
            entry.stored_len
        )));
    }
    let inner = key.open(&entry.id, stored)?;
    let plain = if entry.compressed {
        zstd::bulk::decompress(&inner, entry.raw_len as usize)
            .map_err(|e| FormatError::Decode(format!("zstd: {e}")))?
    } else {
        inner
    };
    if plain.len() != entry.raw_len as usize {
        return Err(FormatError::Decode(format!(
            "blob of {} bytes where the index says {}",
            plain.len(),
            entry.raw_len
        )));
    }
    Ok(plain)
}

/// A pack being filled.
pub struct PackWriter {
    kind: PackKind,
    bytes: Vec<u8>,
    entries: Vec<BlobEntry>,
}

/// A finished pack: its name, bytes and the entries its header lists.
pub struct FinishedPack {
    pub name: [u8; 32],
    pub kind: PackKind,
    pub bytes: Vec<u8>,
    pub entries: Vec<BlobEntry>,
}

impl PackWriter {
    pub fn new(kind: PackKind) -> PackWriter {
        PackWriter {
            kind,
            bytes: Vec::new(),
            entries: Vec::new(),
        }
    }
    /// A writer whose buffer holds `bytes` without growing: a pack is cut
    /// once it reaches its target, so target + one blob + the header fit,
    /// and doubling (twice the memory of a pack) never happens.
    pub fn with_capacity(kind: PackKind, bytes: usize) -> PackWriter {
        PackWriter {
            kind,
            bytes: Vec::with_capacity(bytes),
            entries: Vec::new(),
        }
    }
    pub fn kind(&self) -> PackKind {
        self.kind
    }
    /// Append a sealed blob.
    pub fn push(&mut self, blob: SealedBlob) {
        let offset = self.bytes.len() as u64;
        self.entries.push(BlobEntry {
            kind: blob.kind,
            id: blob.id,
            orig: blob.orig,
            offset,
            // A sealed blob is its plaintext (< 4 GiB, checked when sealed)
            // plus 40 bytes, or smaller when compressed.
            stored_len: blob.bytes.len() as u32,
            raw_len: blob.raw_len,
            compressed: blob.compressed,
        });
        self.bytes.extend_from_slice(&blob.bytes);
    }
    /// Bytes so far (blobs only).
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn blobs(&self) -> usize {
        self.entries.len()
    }
    /// Append the sealed header and its length; name the pack.
    pub fn finish(self, key: &MasterKey) -> FormatResult<FinishedPack> {
        let PackWriter {
            kind,
            mut bytes,
            entries,
        } = self;
        let header = PackHeader {
            version: HEADER_VERSION,
            kind,
            entries: entries
                .iter()
                .map(|e| HeaderEntry {
                    kind: e.kind,
                    id: e.id,
                    stored_len: e.stored_len,
                    raw_len: e.raw_len,
                    compressed: e.compressed,
                })
                .collect(),
        };
        let plain = postcard::to_stdvec(&header)
            .map_err(|e| FormatError::Decode(format!("pack header: {e}")))?;
        let sealed = key.seal(HEADER_AAD, &plain);
        let hlen = u32::try_from(sealed.len())
            .map_err(|_| FormatError::Decode("pack header over 4 GiB".into()))?;
        bytes.extend_from_slice(&sealed);
        bytes.extend_from_slice(&hlen.to_le_bytes());
        let name = *blake3::hash(&bytes).as_bytes();
        Ok(FinishedPack {
            name,
            kind,
            bytes,
            entries,
        })
    }
}

/// How many bytes at the end of a pack hold the header's length.
pub const TRAILER_LEN: u64 = 4;

/// From the last `TRAILER_LEN` bytes of a pack of `pack_len` bytes: the
/// offset and length of its sealed header.
pub fn header_span(pack_len: u64, trailer: &[u8]) -> FormatResult<(u64, u64)> {
    let t: [u8; 4] = trailer.try_into().map_err(|_| {
        FormatError::Truncated(format!(
            "pack trailer of {} bytes, 4 expected",
            trailer.len()
        ))
    })?;
    let hlen = u64::from(u32::from_le_bytes(t));
    if hlen + TRAILER_LEN > pack_len {
        return Err(FormatError::Truncated(format!(
            "pack of {pack_len} bytes cannot hold a header of {hlen}"
        )));
    }
    Ok((pack_len - TRAILER_LEN - hlen, hlen))
}

/// Decode a pack's sealed header (exactly the span `header_span` gave),
/// checking that the entries tile the pack's blob area. The entries come
/// back with their offsets and without `orig` (see [`PackHeader`]).
pub fn decode_header(
    key: &MasterKey,
    sealed: &[u8],
    header_offset: u64,
) -> FormatResult<(PackKind, Vec<BlobEntry>)> {
    let plain = key.open(HEADER_AAD, sealed)?;
    let header: PackHeader = postcard::from_bytes(&plain)
        .map_err(|e| FormatError::Decode(format!("pack header: {e}")))?;
    if header.version > HEADER_VERSION {
        return Err(FormatError::Version {
            found: header.version,
            supported: HEADER_VERSION,
        });
    }
    let mut at = 0u64;
    let mut out = Vec::with_capacity(header.entries.len());
    for e in &header.entries {
        out.push(BlobEntry {
            kind: e.kind,
            id: e.id,
            orig: None,
            offset: at,
            stored_len: e.stored_len,
            raw_len: e.raw_len,
            compressed: e.compressed,
        });
        if !header.kind.holds(e.kind) {
            return Err(FormatError::Decode(format!(
                "a {:?} blob in a {:?} pack",
                e.kind, header.kind
            )));
        }
        at += u64::from(e.stored_len);
    }
    if at != header_offset {
        return Err(FormatError::Decode(format!(
            "pack header's blobs end at {at}, the header starts at {header_offset}"
        )));
    }
    Ok((header.kind, out))
}

/// Encode / decode a chunk list (postcard).
pub fn encode_list(list: &ChunkList) -> Vec<u8> {
    // A Vec of fixed arrays and an integer always serialise.
    postcard::to_stdvec(list).unwrap_or_default()
}
pub fn decode_list(data: &[u8]) -> FormatResult<ChunkList> {
    postcard::from_bytes(data).map_err(|e| FormatError::Decode(format!("chunk list: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> MasterKey {
        MasterKey::generate().expect("in a test")
    }

    fn read_back(key: &MasterKey, bytes: &[u8]) -> FormatResult<(PackKind, Vec<BlobEntry>)> {
        let len = bytes.len() as u64;
        let (off, hlen) = header_span(len, &bytes[bytes.len() - 4..])?;
        decode_header(key, &bytes[off as usize..(off + hlen) as usize], off)
    }

    #[test]
    fn blobs_round_trip_through_a_pack() {
        let k = key();
        let mut w = PackWriter::new(PackKind::Data);
        let texts: Vec<Vec<u8>> = vec![b"a".repeat(1000), b"random-ish 123".to_vec(), Vec::new()];
        for (i, t) in texts.iter().enumerate() {
            w.push(seal_blob(&k, BlobKind::Data, [i as u8; 32], None, t, true).expect("in a test"));
        }
        let p = w.finish(&k).expect("in a test");
        assert_eq!(p.name, *blake3::hash(&p.bytes).as_bytes());
        let (kind, entries) = read_back(&k, &p.bytes).expect("in a test");
        assert_eq!(kind, PackKind::Data);
        assert_eq!(entries, without_orig(&p.entries));
        assert!(entries[0].compressed, "a compressible blob is compressed");
        assert!(!entries[1].compressed, "an incompressible one is not");
        for (e, t) in entries.iter().zip(&texts) {
            let stored = &p.bytes[e.offset as usize..(e.offset + u64::from(e.stored_len)) as usize];
            assert_eq!(&open_blob(&k, e, stored).expect("in a test"), t);
        }
    }

    fn without_orig(v: &[BlobEntry]) -> Vec<BlobEntry> {
        v.iter()
            .map(|e| BlobEntry {
                orig: None,
                ..e.clone()
            })
            .collect()
    }

    #[test]
    fn damage_is_named() {
        let k = key();
        let mut w = PackWriter::new(PackKind::Tree);
        w.push(
            seal_blob(
                &k,
                BlobKind::Tree,
                [1; 32],
                Some([2; 32]),
                b"tree bytes",
                false,
            )
            .expect("in a test"),
        );
        let p = w.finish(&k).expect("in a test");
        let e = &p.entries[0];
        let mut stored = p.bytes[..e.stored_len as usize].to_vec();
        stored[30] ^= 1;
        assert_eq!(open_blob(&k, e, &stored), Err(FormatError::Auth));
        assert!(matches!(
            open_blob(&k, e, &stored[1..]),
            Err(FormatError::Truncated(_))
        ));
        // A blob moved under another id fails authentication.
        let mut moved = e.clone();
        moved.id = [9; 32];
        let good = &p.bytes[..e.stored_len as usize];
        assert_eq!(open_blob(&k, &moved, good), Err(FormatError::Auth));
        // Truncated pack, flipped header, wrong key.
        assert!(read_back(&k, &p.bytes[..p.bytes.len() - 1]).is_err());
        let mut flipped = p.bytes.clone();
        let n = flipped.len();
        flipped[n - 10] ^= 1;
        assert_eq!(read_back(&k, &flipped), Err(FormatError::Auth));
        assert_eq!(read_back(&key(), &p.bytes), Err(FormatError::Auth));
        assert!(header_span(3, &[200, 0, 0, 0]).is_err());
    }

    #[test]
    fn an_empty_pack_is_well_formed() {
        let k = key();
        let p = PackWriter::new(PackKind::Data)
            .finish(&k)
            .expect("in a test");
        assert_eq!(read_back(&k, &p.bytes).expect("in a test").1, Vec::new());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn lists_round_trip(object in any::<[u8; 32]>(), size in any::<u64>(), chunks in proptest::collection::vec(any::<[u8; 32]>(), 0..50)) {
            let l = ChunkList { object, size, chunks };
            prop_assert_eq!(decode_list(&encode_list(&l)).expect("in a test"), l);
        }

        #[test]
        fn packs_round_trip(blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 0..12)) {
            let k = key();
            let mut w = PackWriter::new(PackKind::Data);
            for (i, b) in blobs.iter().enumerate() {
                w.push(seal_blob(&k, BlobKind::Data, [i as u8; 32], None, b, i % 2 == 0).expect("in a test"));
            }
            let p = w.finish(&k).expect("in a test");
            let (_, entries) = read_back(&k, &p.bytes).expect("in a test");
            prop_assert_eq!(entries.len(), blobs.len());
            for (e, b) in entries.iter().zip(&blobs) {
                let s = &p.bytes[e.offset as usize..(e.offset + u64::from(e.stored_len)) as usize];
                prop_assert_eq!(&open_blob(&k, e, s).expect("in a test"), b);
            }
        }

        /// Arbitrary bytes never panic the header decoder.
        #[test]
        fn garbage_headers_are_errors(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let k = key();
            let _ = decode_header(&k, &bytes, 0);
            if bytes.len() >= 4 {
                let _ = header_span(bytes.len() as u64, &bytes[bytes.len() - 4..]);
            }
        }
    }
}
