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

/// A large object's content: its chunk ids in order and its length.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkList {
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
    todo!()
}

/// Open one blob read from a pack (`stored` is exactly its sealed bytes):
/// decrypt, decompress, and check the length the entry promises.
pub fn open_blob(key: &MasterKey, entry: &BlobEntry, stored: &[u8]) -> FormatResult<Vec<u8>> {
    todo!()
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
    pub fn kind(&self) -> PackKind {
        self.kind
    }
    /// Append a sealed blob.
    pub fn push(&mut self, blob: SealedBlob) {
        todo!()
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
        todo!()
    }
}

/// How many bytes at the end of a pack hold the header's length.
pub const TRAILER_LEN: u64 = 4;

/// From the last `TRAILER_LEN` bytes of a pack of `pack_len` bytes: the
/// offset and length of its sealed header.
pub fn header_span(pack_len: u64, trailer: &[u8]) -> FormatResult<(u64, u64)> {
    todo!()
}

/// Decode a pack's sealed header (exactly the span `header_span` gave),
/// checking that the entries tile the pack's blob area.
pub fn decode_header(
    key: &MasterKey,
    sealed: &[u8],
    header_offset: u64,
) -> FormatResult<(PackKind, Vec<BlobEntry>)> {
    todo!()
}

/// Encode / decode a chunk list (postcard).
pub fn encode_list(list: &ChunkList) -> Vec<u8> {
    todo!()
}
pub fn decode_list(data: &[u8]) -> FormatResult<ChunkList> {
    todo!()
}

#[allow(dead_code)]
fn _unused(_: FormatError) {}
