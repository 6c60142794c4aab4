//! Scratch records of a streaming run: written once in path order and
//! read back (possibly several times) in the same order.
//!
//! A run whose previous snapshot is small keeps them in memory, as they
//! are: encoding, compressing, decompressing and decoding every record
//! was a fifth of a 1% rerun's CPU at 100,000 files, all of it on the
//! walk's and pass 2's one thread. Past [`MEMORY_BUDGET`] (or from the
//! start, when the previous snapshot says the run will not fit) they go
//! to an anonymous file (`O_TMPFILE` in the repository's `tmp/`), which
//! vanishes with the process however it ends and never needs cleaning
//! up, so memory stays flat at millions of files.
//!
//! In the file, each record is a little-endian `u32` length and its
//! postcard encoding, all in one zstd stream (level 1: paths compress
//! well and the stream stays far ahead of the walk).

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

/// Bytes of records a writer may keep in memory (their own size plus
/// what [`Footprint`] says they hold) before it moves them to its file:
/// about 150,000 records of a walk.
pub(super) const MEMORY_BUDGET: usize = 32 << 20;

/// Whether about `records` records of type `T` (with paths of a typical
/// length) fit in [`MEMORY_BUDGET`].
pub(super) fn fits_in_memory<T>(records: u64) -> bool {
    let each = (std::mem::size_of::<T>() + 64) as u64;
    records.saturating_mul(each) <= MEMORY_BUDGET as u64
}

/// What a record holds on the heap, roughly (for [`MEMORY_BUDGET`]).
pub(super) trait Footprint {
    fn heap_bytes(&self) -> usize;
}

/// The previous entry at a path of the new listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum PrevAt {
    None,
    /// Equal to the current entry (a file's `dup` flag included).
    Same,
    /// Boxed: a changed path is rare, and an inline item would make
    /// every record of a kept one half as large again in memory.
    Other(Box<Item>),
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

impl Footprint for Rec {
    fn heap_bytes(&self) -> usize {
        // The allocator's 16 bytes a block, and an item's own heap (a
        // symlink target, extended attributes) left out: rare, and small.
        match self {
            Rec::Cur { path, prev, .. } => {
                let boxed = match prev {
                    PrevAt::Other(_) => std::mem::size_of::<Item>() + 16,
                    _ => 0,
                };
                path.capacity() + 16 + boxed
            }
            Rec::Gone { path, .. }
            | Rec::Same { path, .. }
            | Rec::Kept { path, .. }
            | Rec::Carried { path, .. } => path.capacity() + 16,
        }
    }
}

impl<D> Footprint for (Vec<u8>, Option<D>) {
    fn heap_bytes(&self) -> usize {
        self.0.capacity() + 16
    }
}

/// Writes records of type `T`.
pub(super) struct Writer<T> {
    /// Records not (yet) in the file, in order.
    mem: Vec<T>,
    /// Their bytes, as [`MEMORY_BUDGET`] counts them.
    mem_bytes: usize,
    /// [`MEMORY_BUDGET`], smaller in tests.
    budget: usize,
    /// The scratch file, once records go to it (from the start for
    /// [`Writer::create`]); records stay in memory while there is none.
    file: Option<ZstdWriter>,
    dir: PathBuf,
    buf: Vec<u8>,
    what: PathBuf,
    pub records: u64,
}

/// The spill of pass 1.
pub(super) type SpillWriter = Writer<Rec>;

impl<T: Serialize + Footprint> Writer<T> {
    /// A writer whose records go to a new scratch file in `dir`.
    pub fn create(dir: &Path) -> Result<Writer<T>> {
        let mut w = Writer::in_memory(dir);
        w.file = Some(w.open_file()?);
        Ok(w)
    }

    /// A writer that keeps its records in memory, up to
    /// [`MEMORY_BUDGET`], and then moves them to a scratch file in `dir`.
    pub fn in_memory(dir: &Path) -> Writer<T> {
        Writer {
            mem: Vec::new(),
            mem_bytes: 0,
            budget: MEMORY_BUDGET,
            file: None,
            dir: dir.to_path_buf(),
            buf: Vec::new(),
            what: dir.join("(scratch)"),
            records: 0,
        }
    }

    fn open_file(&self) -> Result<ZstdWriter> {
        let f = crate::fsutil::anonymous_file(&self.dir)?;
        zstd_writer(f, 1, 256 * 1024).ctx("compress", &self.what)
    }

    pub fn write(&mut self, r: T) -> Result<()> {
        self.records += 1;
        if let Some(enc) = self.file.as_mut() {
            return encode(enc, &mut self.buf, &self.what, &r);
        }
        self.mem_bytes += std::mem::size_of::<T>() + r.heap_bytes();
        self.mem.push(r);
        if self.mem_bytes > self.budget {
            // Every record so far goes to the file, and the rest follow.
            let mut enc = self.open_file()?;
            for r in std::mem::take(&mut self.mem) {
                encode(&mut enc, &mut self.buf, &self.what, &r)?;
            }
            self.file = Some(enc);
            self.mem_bytes = 0;
        }
        Ok(())
    }

    /// Finish writing; the records can then be read any number of times.
    pub fn finish(self) -> Result<Spilled<T>> {
        let store = match self.file {
            Some(enc) => Store::File(finish_zstd_writer(enc).ctx("compress", &self.what)?),
            None => Store::Memory(self.mem),
        };
        Ok(Spilled {
            store,
            what: self.what,
        })
    }
}

/// Append `r` to the stream `enc` (its length, then its encoding),
/// with `buf` as the scratch buffer.
fn encode<T: Serialize>(enc: &mut ZstdWriter, buf: &mut Vec<u8>, what: &Path, r: &T) -> Result<()> {
    buf.clear();
    buf.extend_from_slice(&[0; 4]);
    let mut b = std::mem::take(buf);
    b = postcard::to_extend(r, b)
        .map_err(|e| Error::Internal(format!("encode a scratch record: {e}")))?;
    let len = (b.len() - 4) as u32;
    b[..4].copy_from_slice(&len.to_le_bytes());
    enc.write_all(&b).ctx("write", what)?;
    *buf = b;
    Ok(())
}

enum Store<T> {
    Memory(Vec<T>),
    File(File),
}

/// Finished scratch records.
pub(super) struct Spilled<T> {
    store: Store<T>,
    what: PathBuf,
}

impl<T: DeserializeOwned + Clone> Spilled<T> {
    /// Read the records from the start (records in memory are cloned).
    pub fn reader(&self) -> Result<Reader<'_, T>> {
        Ok(match &self.store {
            Store::Memory(v) => Reader::Borrowed(v.iter()),
            Store::File(f) => self.file_reader(f)?,
        })
    }

    /// Read the records from the start, one last time.
    pub fn into_reader(self) -> Result<Reader<'static, T>> {
        match self.store {
            Store::Memory(v) => Ok(Reader::Owned(v.into_iter())),
            Store::File(ref f) => self.file_reader(f),
        }
    }

    fn file_reader<'a>(&self, f: &File) -> Result<Reader<'a, T>> {
        let mut f = f.try_clone().ctx("reopen", &self.what)?;
        f.seek(SeekFrom::Start(0)).ctx("seek", &self.what)?;
        let dec = zstd::stream::read::Decoder::new(f).ctx("decompress", &self.what)?;
        Ok(Reader::File(FileReader {
            dec: BufReader::with_capacity(256 * 1024, dec),
            buf: Vec::new(),
            what: self.what.clone(),
            _t: PhantomData,
        }))
    }
}

/// Records read back in order.
pub(super) enum Reader<'a, T> {
    Borrowed(std::slice::Iter<'a, T>),
    Owned(std::vec::IntoIter<T>),
    File(FileReader<T>),
}

pub(super) struct FileReader<T> {
    dec: BufReader<zstd::stream::read::Decoder<'static, BufReader<File>>>,
    buf: Vec<u8>,
    what: PathBuf,
    _t: PhantomData<T>,
}

impl<T: DeserializeOwned + Clone> Reader<'_, T> {
    /// The next record, `None` at the end.
    #[allow(clippy::should_implement_trait)] // fallible: Result<Option<_>>
    pub fn next(&mut self) -> Result<Option<T>> {
        match self {
            Reader::Borrowed(it) => Ok(it.next().cloned()),
            Reader::Owned(it) => Ok(it.next()),
            Reader::File(f) => f.next(),
        }
    }
}

impl<T: DeserializeOwned> FileReader<T> {
    fn next(&mut self) -> Result<Option<T>> {
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
            w.write(r.clone())?;
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
        reads_back(s, &recs)
    }

    /// `s` gives `recs` back twice, then once more when consumed.
    fn reads_back(s: Spilled<Rec>, recs: &[Rec]) -> Result<()> {
        for _ in 0..2 {
            assert_eq!(read_all(s.reader()?)?, recs);
        }
        assert_eq!(read_all(s.into_reader()?)?, recs);
        Ok(())
    }

    fn read_all(mut r: Reader<'_, Rec>) -> Result<Vec<Rec>> {
        let mut back = Vec::new();
        while let Some(x) = r.next()? {
            back.push(x);
        }
        Ok(back)
    }

    fn records(n: u32) -> Vec<Rec> {
        (0..n)
            .map(|i| Rec::Cur {
                path: format!("d/{i:05}").into_bytes(),
                item: Item::Dir(Meta::default()),
                extra: None,
                prev: if i % 3 == 0 {
                    PrevAt::Other(Box::new(Item::Dir(Meta {
                        mode: i,
                        ..Meta::default()
                    })))
                } else {
                    PrevAt::Same
                },
            })
            .collect()
    }

    #[test]
    fn records_kept_in_memory_read_back_in_order_and_leave_no_file() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", Path::new("/tmp"), e))?;
        let recs = records(1000);
        let mut w: SpillWriter = Writer::in_memory(dir.path());
        for r in &recs {
            w.write(r.clone())?;
        }
        assert!(w.file.is_none(), "1000 records fit in the budget");
        reads_back(w.finish()?, &recs)
    }

    #[test]
    fn records_over_the_budget_move_to_the_file_in_order() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", Path::new("/tmp"), e))?;
        let recs = records(1000);
        let mut w: SpillWriter = Writer::in_memory(dir.path());
        w.budget = 100 * std::mem::size_of::<Rec>();
        let mut moved_at = None;
        for (i, r) in recs.iter().enumerate() {
            w.write(r.clone())?;
            match (moved_at, w.file.is_some()) {
                (None, true) => moved_at = Some(i),
                (Some(_), false) => panic!("record {i} went back to memory"),
                _ => {}
            }
        }
        // Records count their paths and boxed items too: over the budget
        // before 100 of them, but not at the first.
        assert!(
            moved_at.is_some_and(|i| (1..100).contains(&i)),
            "{moved_at:?}"
        );
        assert!(w.mem.is_empty(), "nothing is left behind in memory");
        assert_eq!(w.records, 1000);
        reads_back(w.finish()?, &recs)
    }

    #[test]
    fn a_snapshot_of_millions_is_never_kept_in_memory() {
        assert!(fits_in_memory::<Rec>(125_000));
        assert!(!fits_in_memory::<Rec>(3_000_000));
        assert!(!fits_in_memory::<Rec>(u64::MAX));
    }
}
