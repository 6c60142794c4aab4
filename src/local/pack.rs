//! The tree pack codec (repository format 2, docs/FORMAT.md "Tree packs"):
//! many tree objects' stored bytes in one file, each entry framed by its
//! length and id, followed by an index of the entries and a fixed footer.
//! Pure functions over bytes: the pack files, their names and the
//! repository-wide lookup are [`super::trees`]'.
//!
//! ```text
//! pack   = header entry* index footer
//! header = "trvP" version(u8 = 1)                                  5 bytes
//! entry  = len(u32 LE) id([u8; 32]) stored bytes(len)              36 + len
//! index  = count × ( id([u8; 32]) offset(u64 LE) len(u32 LE) )     44 each
//! footer = count(u32 LE) check([u8; 32]) "trvI"                    40 bytes
//! ```
//!
//! `offset` is where the entry (its `len` field) starts; entries tile the
//! space between the header and the index in index order. `check` is the
//! BLAKE3 hash of the index bytes, so a torn or damaged index is never
//! trusted. Every entry also carries its own length and id, so a pack's
//! list of trees can be rebuilt by scanning it ([`scan`]) and a read checks
//! that the entry it lands on is the one the index promised
//! ([`entry_bytes`]).
//!
//! The remote's packs (`crate::remote::pack`) are sealed blob containers
//! with an encrypted header; nothing here is encrypted or compressed again
//! (the tree bytes are zstd frames already), so the two share the idea and
//! not the code.

use std::fmt;

/// The first bytes of every pack.
pub const PACK_MAGIC: &[u8; 4] = b"trvP";
/// The pack encoding this build writes and reads.
pub const PACK_VERSION: u8 = 1;
/// The last four bytes of every pack.
pub const FOOTER_MAGIC: &[u8; 4] = b"trvI";
pub const HEADER_LEN: u64 = 5;
/// An entry's frame before its bytes: length and id.
pub const ENTRY_HEAD: u64 = 36;
/// One index record.
pub const INDEX_RECORD: u64 = 44;
pub const FOOTER_LEN: u64 = 40;

/// One tree in a pack: its id, where its entry starts, its stored length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackEntry {
    pub id: [u8; 32],
    /// Offset of the entry's frame (its `len` field) in the pack.
    pub offset: u64,
    /// Length of the stored tree bytes (after the 36-byte frame).
    pub len: u32,
}

impl PackEntry {
    /// Where the entry (frame and bytes) ends.
    pub fn end(&self) -> u64 {
        self.offset + ENTRY_HEAD + u64::from(self.len)
    }
    /// Bytes of the entry, frame included (what one read fetches).
    pub fn span(&self) -> u64 {
        ENTRY_HEAD + u64::from(self.len)
    }
}

/// Why bytes are not a sound pack (or a sound part of one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackError(pub String);

impl fmt::Display for PackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PackError {}

fn err<T>(msg: impl Into<String>) -> Result<T, PackError> {
    Err(PackError(msg.into()))
}

/// The pack header.
pub fn header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..4].copy_from_slice(PACK_MAGIC);
    h[4] = PACK_VERSION;
    h
}

/// The frame written before an entry's bytes.
pub fn entry_head(id: &[u8; 32], len: u32) -> [u8; ENTRY_HEAD as usize] {
    let mut h = [0u8; ENTRY_HEAD as usize];
    h[..4].copy_from_slice(&len.to_le_bytes());
    h[4..].copy_from_slice(id);
    h
}

/// The index and footer that close a pack holding `entries` (in the order
/// they were written).
pub fn encode_tail(entries: &[PackEntry]) -> Result<Vec<u8>, PackError> {
    let count = u32::try_from(entries.len())
        .or_else(|_| err(format!("{} entries do not fit one pack", entries.len())))?;
    let mut out = Vec::with_capacity(entries.len() * INDEX_RECORD as usize + FOOTER_LEN as usize);
    for e in entries {
        out.extend_from_slice(&e.id);
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.len.to_le_bytes());
    }
    let check = blake3::hash(&out);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(check.as_bytes());
    out.extend_from_slice(FOOTER_MAGIC);
    Ok(out)
}

/// A whole pack of `trees` (id, stored bytes), in that order: what a
/// writer streams to disk, in one buffer (tests, the fuzz target).
pub fn encode(trees: &[([u8; 32], &[u8])]) -> Result<Vec<u8>, PackError> {
    let mut out = header().to_vec();
    let mut entries = Vec::with_capacity(trees.len());
    for (id, data) in trees {
        let len = u32::try_from(data.len()).or_else(|_| {
            err(format!(
                "a tree of {} bytes does not fit a pack",
                data.len()
            ))
        })?;
        entries.push(PackEntry {
            id: *id,
            offset: out.len() as u64,
            len,
        });
        out.extend_from_slice(&entry_head(id, len));
        out.extend_from_slice(data);
    }
    out.extend(encode_tail(&entries)?);
    Ok(out)
}

/// Check a pack's first bytes.
pub fn check_header(head: &[u8]) -> Result<(), PackError> {
    match head {
        [a, b, c, d, v, ..] if [*a, *b, *c, *d] == *PACK_MAGIC => {
            if *v == PACK_VERSION {
                Ok(())
            } else {
                err(format!(
                    "pack version {v}, this trove reads version {PACK_VERSION}"
                ))
            }
        }
        _ => err("not a tree pack (no \"trvP\" header)"),
    }
}

/// What a footer says: how many entries the index lists and its hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    pub count: u32,
    pub check: [u8; 32],
}

impl Footer {
    /// Bytes of the index.
    pub fn index_len(&self) -> u64 {
        u64::from(self.count) * INDEX_RECORD
    }
    /// Where the index starts in a pack of `pack_len` bytes (checked
    /// against the pack's length by [`parse_footer`]).
    pub fn index_start(&self, pack_len: u64) -> u64 {
        pack_len - FOOTER_LEN - self.index_len()
    }
}

/// Decode the last [`FOOTER_LEN`] bytes of a pack of `pack_len` bytes.
/// The entry count is bounded by the room the pack has for them, so a
/// hostile count never sizes an allocation.
pub fn parse_footer(pack_len: u64, footer: &[u8]) -> Result<Footer, PackError> {
    if pack_len < HEADER_LEN + FOOTER_LEN {
        return err(format!("{pack_len} bytes: shorter than any pack"));
    }
    let Ok(footer) = <&[u8; FOOTER_LEN as usize]>::try_from(footer) else {
        return err(format!("a footer of {} bytes", footer.len()));
    };
    if footer[36..] != *FOOTER_MAGIC {
        return err("no \"trvI\" footer at its end (torn or not a pack)");
    }
    let mut c = [0u8; 4];
    c.copy_from_slice(&footer[..4]);
    let count = u32::from_le_bytes(c);
    let mut check = [0u8; 32];
    check.copy_from_slice(&footer[4..36]);
    let room = pack_len - HEADER_LEN - FOOTER_LEN;
    if u64::from(count) * (INDEX_RECORD + ENTRY_HEAD) > room {
        return err(format!(
            "its footer counts {count} trees, more than its {pack_len} bytes can hold"
        ));
    }
    Ok(Footer { count, check })
}

/// Decode and check the index of a pack of `pack_len` bytes whose footer
/// is `footer`: its hash, and that the entries it lists lie in order,
/// without overlap, between the header and the index.
pub fn parse_index(
    pack_len: u64,
    footer: &Footer,
    index: &[u8],
) -> Result<Vec<PackEntry>, PackError> {
    if index.len() as u64 != footer.index_len() {
        return err(format!(
            "an index of {} bytes where the footer says {}",
            index.len(),
            footer.index_len()
        ));
    }
    if *blake3::hash(index).as_bytes() != footer.check {
        return err("its index does not match the footer's hash (torn or damaged)");
    }
    let start = footer.index_start(pack_len);
    let mut out = Vec::with_capacity(footer.count as usize);
    let mut next = HEADER_LEN;
    for rec in index.chunks_exact(INDEX_RECORD as usize) {
        let mut id = [0u8; 32];
        id.copy_from_slice(&rec[..32]);
        let mut o = [0u8; 8];
        o.copy_from_slice(&rec[32..40]);
        let mut l = [0u8; 4];
        l.copy_from_slice(&rec[40..44]);
        let e = PackEntry {
            id,
            offset: u64::from_le_bytes(o),
            len: u32::from_le_bytes(l),
        };
        // Entries tile the pack from the header to the index.
        if e.offset != next || e.offset.saturating_add(e.span()) > start {
            return err(format!(
                "its index puts an entry at {}..{}, where {next}..{start} is free",
                e.offset,
                e.offset.saturating_add(e.span())
            ));
        }
        next = e.end();
        out.push(e);
    }
    if next != start {
        return err(format!(
            "its entries end at {next}, but its index starts at {start}"
        ));
    }
    Ok(out)
}

/// Decode a whole pack held in memory: header, footer and index checked.
pub fn parse(pack: &[u8]) -> Result<Vec<PackEntry>, PackError> {
    let len = pack.len() as u64;
    let footer = parse_footer(len, &pack[pack.len().saturating_sub(FOOTER_LEN as usize)..])?;
    check_header(pack)?;
    let start = footer.index_start(len) as usize;
    let end = pack.len() - FOOTER_LEN as usize;
    parse_index(len, &footer, &pack[start..end])
}

/// The stored bytes of `entry` from `raw`, the [`PackEntry::span`] bytes
/// read at its offset: its frame must repeat the index's length and id.
pub fn entry_bytes<'a>(entry: &PackEntry, raw: &'a [u8]) -> Result<&'a [u8], PackError> {
    if raw.len() as u64 != entry.span() {
        return err(format!(
            "{} bytes read at {} where the entry has {}",
            raw.len(),
            entry.offset,
            entry.span()
        ));
    }
    let head = entry_head(&entry.id, entry.len);
    if raw[..ENTRY_HEAD as usize] != head {
        return err(format!(
            "the entry at {} is not the one its index lists (damaged)",
            entry.offset
        ));
    }
    Ok(&raw[ENTRY_HEAD as usize..])
}

/// Rebuild a pack's list of entries from the entries themselves (each
/// says its length and id), reading through `read_at(offset, buf)` —
/// for a pack whose index is lost. The scan stops before `end` (the
/// index's start when the footer is readable, else the pack's length) at
/// the first frame that does not fit; it returns what it found and, when
/// it did not end exactly at `end`, why.
pub fn scan(
    end: u64,
    read_at: &mut dyn FnMut(u64, &mut [u8]) -> std::io::Result<()>,
) -> (Vec<PackEntry>, Option<PackError>) {
    let mut out = Vec::new();
    let mut head = [0u8; HEADER_LEN as usize];
    if end < HEADER_LEN {
        return (out, Some(PackError("shorter than a pack header".into())));
    }
    if let Err(e) = read_at(0, &mut head) {
        return (out, Some(PackError(format!("read: {e}"))));
    }
    if let Err(e) = check_header(&head) {
        return (out, Some(e));
    }
    let mut at = HEADER_LEN;
    let mut frame = [0u8; ENTRY_HEAD as usize];
    while at < end {
        if end - at < ENTRY_HEAD {
            return (
                out,
                Some(PackError(format!("{} stray bytes at {at}", end - at))),
            );
        }
        if let Err(e) = read_at(at, &mut frame) {
            return (out, Some(PackError(format!("read at {at}: {e}"))));
        }
        let mut l = [0u8; 4];
        l.copy_from_slice(&frame[..4]);
        let len = u32::from_le_bytes(l);
        let mut id = [0u8; 32];
        id.copy_from_slice(&frame[4..]);
        let e = PackEntry {
            id,
            offset: at,
            len,
        };
        if e.end() > end {
            return (
                out,
                Some(PackError(format!(
                    "the entry at {at} claims {len} bytes, past the end at {end}"
                ))),
            );
        }
        out.push(e);
        at = e.end();
    }
    (out, None)
}

/// [`scan`] of a pack held in memory, up to its index when its footer
/// is readable.
pub fn scan_bytes(pack: &[u8]) -> (Vec<PackEntry>, Option<PackError>) {
    let len = pack.len() as u64;
    let end = pack
        .len()
        .checked_sub(FOOTER_LEN as usize)
        .and_then(|f| parse_footer(len, &pack[f..]).ok())
        .map_or(len, |f| f.index_start(len));
    scan(end, &mut |off, buf| {
        let s = usize::try_from(off).unwrap_or(usize::MAX);
        match pack.get(s..s.saturating_add(buf.len())) {
            Some(b) => {
                buf.copy_from_slice(b);
                Ok(())
            }
            None => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn a_pack_round_trips_and_every_entry_reads_back() -> Result<(), PackError> {
        let trees: Vec<([u8; 32], &[u8])> = vec![
            (id(1), b"trvT\x02one"),
            (id(2), b""),
            (id(3), b"third tree"),
        ];
        let pack = encode(&trees)?;
        let entries = parse(&pack)?;
        assert_eq!(entries.len(), 3);
        for (e, (i, data)) in entries.iter().zip(&trees) {
            assert_eq!(&e.id, i);
            let raw = &pack[e.offset as usize..e.end() as usize];
            assert_eq!(entry_bytes(e, raw)?, *data);
        }
        assert_eq!(scan_bytes(&pack), (entries, None));
        Ok(())
    }

    #[test]
    fn an_empty_pack_is_a_pack() -> Result<(), PackError> {
        let pack = encode(&[])?;
        assert_eq!(pack.len() as u64, HEADER_LEN + FOOTER_LEN);
        assert_eq!(parse(&pack)?, Vec::new());
        Ok(())
    }

    #[test]
    fn a_torn_tail_is_refused_at_every_length() -> Result<(), PackError> {
        let pack = encode(&[(id(1), b"aaaa"), (id(2), b"bbbbbbbb")])?;
        for cut in 0..pack.len() {
            assert!(parse(&pack[..cut]).is_err(), "cut at {cut} accepted");
            // A scan finds only whole entries, and says why it stopped.
            let (found, why) = scan_bytes(&pack[..cut]);
            for e in &found {
                assert!(e.end() as usize <= cut);
            }
            if cut < pack.len() - (FOOTER_LEN + 2 * INDEX_RECORD) as usize {
                assert!(why.is_some() || found.len() < 2, "cut at {cut}");
            }
        }
        Ok(())
    }

    #[test]
    fn a_flipped_bit_in_the_index_or_footer_is_refused() -> Result<(), PackError> {
        let pack = encode(&[(id(1), b"aaaa"), (id(2), b"bbbbbbbb")])?;
        let first_index = pack.len() - (FOOTER_LEN + 2 * INDEX_RECORD) as usize;
        for at in (0..HEADER_LEN as usize).chain(first_index..pack.len()) {
            let mut bad = pack.clone();
            bad[at] ^= 1;
            assert!(parse(&bad).is_err(), "flip at {at} accepted");
        }
        Ok(())
    }

    #[test]
    fn an_entry_that_is_not_the_one_indexed_is_refused() -> Result<(), PackError> {
        let pack = encode(&[(id(1), b"aaaa"), (id(2), b"bbbbbbbb")])?;
        let entries = parse(&pack)?;
        let e = entries[1];
        let mut raw = pack[e.offset as usize..e.end() as usize].to_vec();
        // A wrong id in the frame.
        raw[4] ^= 1;
        assert!(entry_bytes(&e, &raw).is_err());
        // The right frame read for another entry.
        let wrong = PackEntry { id: id(9), ..e };
        assert!(entry_bytes(&wrong, &pack[e.offset as usize..e.end() as usize]).is_err());
        // A short read.
        assert!(entry_bytes(&e, &pack[e.offset as usize..e.end() as usize - 1]).is_err());
        Ok(())
    }

    #[test]
    fn a_hostile_count_or_overlapping_index_is_refused() -> Result<(), PackError> {
        let pack = encode(&[(id(1), b"aaaa")])?;
        let mut bad = pack.clone();
        let f = bad.len() - FOOTER_LEN as usize;
        bad[f..f + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&bad).is_err());
        // An index whose entry overlaps the header, with a matching hash.
        let e = PackEntry {
            id: id(1),
            offset: 0,
            len: 4,
        };
        let mut forged = header().to_vec();
        forged.extend_from_slice(&entry_head(&id(1), 4));
        forged.extend_from_slice(b"aaaa");
        forged.extend(encode_tail(&[e])?);
        assert!(parse(&forged).is_err());
        Ok(())
    }

    proptest! {
        /// Whatever trees a pack holds, its index decodes to where they
        /// are, and a scan of the entries alone rebuilds the same index.
        #[test]
        fn the_index_and_a_rebuild_by_scan_agree(
            trees in proptest::collection::vec(
                (any::<[u8; 32]>(), proptest::collection::vec(any::<u8>(), 0..300)),
                0..40,
            )
        ) {
            let refs: Vec<([u8; 32], &[u8])> =
                trees.iter().map(|(i, d)| (*i, d.as_slice())).collect();
            let pack = encode(&refs).map_err(|e| TestCaseError::fail(e.0))?;
            let entries = parse(&pack).map_err(|e| TestCaseError::fail(e.0))?;
            prop_assert_eq!(entries.len(), trees.len());
            for (e, (i, d)) in entries.iter().zip(&trees) {
                prop_assert_eq!(&e.id, i);
                let raw = &pack[e.offset as usize..e.end() as usize];
                prop_assert_eq!(entry_bytes(e, raw).map_err(|e| TestCaseError::fail(e.0))?, d.as_slice());
            }
            prop_assert_eq!(scan_bytes(&pack), (entries, None));
        }

        /// Arbitrary bytes never panic the decoder or the scan.
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse(&data);
            let _ = scan_bytes(&data);
        }
    }
}
