//! Scratch files of a streaming run: records written once in path order
//! and read back (possibly several times) in the same order. They live in
//! an anonymous file (`O_TMPFILE` in the repository's `tmp/`), so they
//! vanish with the process however it ends and never need cleaning up.
//!
//! Each record is a little-endian `u32` length and its postcard encoding,
//! all in one zstd stream (level 1: paths compress well and the stream
//! stays far ahead of the walk).

use crate::codec::{finish_zstd_writer, zstd_writer, ZstdWriter};
use crate::error::{Error, IoContext, Result};
use crate::id::TreeId;
use crate::local::cache::StatExtra;
use crate::model::Item;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

/// The previous entry at a path of the new listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum PrevAt {
    None,
    /// Equal to the current entry (a file's `dup` flag included).
    Same,
    Other(Item),
}

/// One record of the merged walk (pass 1 → pass 2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Rec {
    /// A path of the new listing: its entry (hashed), the stat the cache
    /// keeps for a file, and the previous entry.
    Cur {
        path: Vec<u8>,
        item: Item,
        extra: Option<StatExtra>,
        prev: PrevAt,
    },
    /// A path only the previous listing has.
    Gone { path: Vec<u8>, item: Item },
    /// Every entry below directory `path` equals the previous one: its
    /// tree is `id` again.
    Same { path: Vec<u8>, id: TreeId },
    /// Directory `path` (whose own record came just before) was kept whole
    /// without being walked: its tree is `id` again, and nothing below it
    /// has a record.
    Kept { path: Vec<u8>, id: TreeId },
    /// Directory `path` (whose own record came just before) was walked and
    /// every record below it would be written again exactly, cache records
    /// included: its tree is `id` again, and nothing below it has a record
    /// (an ordinary run's folder carried whole; its archive folder is still
    /// walked, for retention).
    Carried { path: Vec<u8>, id: TreeId },
}

/// Writes records of type `T`.
pub(super) struct Writer<T> {
    enc: ZstdWriter,
    buf: Vec<u8>,
    what: PathBuf,
    pub records: u64,
    _t: PhantomData<T>,
}

/// The spill of pass 1.
pub(super) type SpillWriter = Writer<Rec>;

impl<T: Serialize> Writer<T> {
    /// A new scratch file in `dir`.
    pub fn create(dir: &Path) -> Result<Writer<T>> {
        let f = crate::fsutil::anonymous_file(dir)?;
        let what = dir.join("(scratch)");
        let enc = zstd_writer(f, 1, 256 * 1024).ctx("compress", &what)?;
        Ok(Writer {
            enc,
            buf: Vec::new(),
            what,
            records: 0,
            _t: PhantomData,
        })
    }

    pub fn write(&mut self, r: &T) -> Result<()> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0; 4]);
        let mut buf = std::mem::take(&mut self.buf);
        buf = postcard::to_extend(r, buf)
            .map_err(|e| Error::Internal(format!("encode a scratch record: {e}")))?;
        let len = (buf.len() - 4) as u32;
        buf[..4].copy_from_slice(&len.to_le_bytes());
        self.enc.write_all(&buf).ctx("write", &self.what)?;
        self.buf = buf;
        self.records += 1;
        Ok(())
    }

    /// Finish writing; the records can then be read any number of times.
    pub fn finish(self) -> Result<Spilled<T>> {
        let file = finish_zstd_writer(self.enc).ctx("compress", &self.what)?;
        Ok(Spilled {
            file,
            what: self.what,
            _t: PhantomData,
        })
    }
}

/// A finished scratch file.
pub(super) struct Spilled<T> {
    file: File,
    what: PathBuf,
    _t: PhantomData<T>,
}

impl<T: DeserializeOwned> Spilled<T> {
    /// Read the records from the start.
    pub fn reader(&self) -> Result<Reader<T>> {
        let mut f = self.file.try_clone().ctx("reopen", &self.what)?;
        f.seek(SeekFrom::Start(0)).ctx("seek", &self.what)?;
        let dec = zstd::stream::read::Decoder::new(f).ctx("decompress", &self.what)?;
        Ok(Reader {
            dec: BufReader::with_capacity(256 * 1024, dec),
            buf: Vec::new(),
            what: self.what.clone(),
            _t: PhantomData,
        })
    }
}

pub(super) struct Reader<T> {
    dec: BufReader<zstd::stream::read::Decoder<'static, BufReader<File>>>,
    buf: Vec<u8>,
    what: PathBuf,
    _t: PhantomData<T>,
}

impl<T: DeserializeOwned> Reader<T> {
    /// The next record, `None` at the end.
    #[allow(clippy::should_implement_trait)] // fallible: Result<Option<_>>
    pub fn next(&mut self) -> Result<Option<T>> {
        let mut len = [0u8; 4];
        match self.dec.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(Error::io("read", &self.what, e)),
        }
        self.buf.resize(u32::from_le_bytes(len) as usize, 0);
        self.dec.read_exact(&mut self.buf).ctx("read", &self.what)?;
        postcard::from_bytes(&self.buf)
            .map(Some)
            .map_err(|e| Error::corrupt("scratch record", &self.what, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Meta;

    #[test]
    fn records_read_back_in_order_twice() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", Path::new("/tmp"), e))?;
        let mut w: SpillWriter = Writer::create(dir.path())?;
        let recs: Vec<Rec> = (0..1000u32)
            .map(|i| Rec::Gone {
                path: format!("d/{i}").into_bytes(),
                item: Item::Dir(Meta {
                    mode: i,
                    ..Meta::default()
                }),
            })
            .collect();
        for r in &recs {
            w.write(r)?;
        }
        assert_eq!(w.records, 1000);
        let s = w.finish()?;
        assert_eq!(
            std::fs::read_dir(dir.path())
                .map(|d| d.count())
                .unwrap_or(1),
            0,
            "the scratch file has no name"
        );
        for _ in 0..2 {
            let mut r = s.reader()?;
            let mut back = Vec::new();
            while let Some(x) = r.next()? {
                back.push(x);
            }
            assert_eq!(back, recs);
        }
        Ok(())
    }
}
