//! Byte-level framing shared by every trove file format: the 5-byte
//! header (magic, version) and zstd, one-shot with per-thread contexts or
//! streamed into a file. Used by trees, snapshot records, the stat cache
//! and the scan spill; knows nothing of what the payload means.

use crate::error::{Error, Result};
use std::path::Path;

/// Check the 5-byte header every trove file starts with (4 magic bytes, one
/// version byte) and return what follows it. A wrong magic is corruption; an
/// unknown version is a file from a newer trove, reported as such.
pub fn check_header<'a>(
    data: &'a [u8],
    magic: &[u8; 4],
    version: u8,
    what: &'static str,
    path: &Path,
) -> Result<&'a [u8]> {
    if data.len() < 5 || &data[..4] != magic {
        return Err(Error::corrupt(what, path, "bad magic"));
    }
    if data[4] != version {
        return Err(Error::Version {
            path: path.to_path_buf(),
            found: data[4] as u32,
            supported: version as u32,
        });
    }
    Ok(&data[5..])
}

/// Like [`check_header`], for a format whose readers accept versions
/// `min..=max`: the version found and the bytes after the header.
pub fn check_header_in<'a>(
    data: &'a [u8],
    magic: &[u8; 4],
    (min, max): (u8, u8),
    what: &'static str,
    path: &Path,
) -> Result<(u8, &'a [u8])> {
    if data.len() < 5 || &data[..4] != magic {
        return Err(Error::corrupt(what, path, "bad magic"));
    }
    if data[4] > max || data[4] < min {
        return Err(Error::Version {
            path: path.to_path_buf(),
            found: data[4] as u32,
            supported: max as u32,
        });
    }
    Ok((data[4], &data[5..]))
}

thread_local! {
    // zstd contexts are costly to set up (a third of the time of a small
    // tree); each thread keeps one of each.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Compress with this thread's zstd context.
pub fn zstd_compress(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = Some(zstd::bulk::Compressor::new(level)?);
        }
        match c.as_mut() {
            Some(comp) => {
                comp.set_compression_level(level)?;
                comp.compress(data)
            }
            None => zstd::bulk::compress(data, level),
        }
    })
}

/// A zstd stream into a file, written a record at a time. The buffer sits
/// in front of the compressor, so zstd gets large blocks rather than one
/// small write per record (which it would first copy into its window).
pub type ZstdWriter = std::io::BufWriter<zstd::stream::write::Encoder<'static, std::fs::File>>;

pub fn zstd_writer(f: std::fs::File, level: i32, buffer: usize) -> std::io::Result<ZstdWriter> {
    Ok(std::io::BufWriter::with_capacity(
        buffer,
        zstd::stream::write::Encoder::new(f, level)?,
    ))
}

/// End the stream and give the file back.
pub fn finish_zstd_writer(w: ZstdWriter) -> std::io::Result<std::fs::File> {
    w.into_inner().map_err(|e| e.into_error())?.finish()
}

/// Decompress one zstd frame, refusing output larger than `cap`. The
/// output buffer is sized from the frame header (capped), not reserved at
/// `cap` for every call.
pub fn zstd_decompress(data: &[u8], cap: usize) -> std::io::Result<Vec<u8>> {
    let declared = zstd::zstd_safe::get_frame_content_size(data).ok().flatten();
    let size = match declared {
        Some(n) if n as usize <= cap => n as usize,
        Some(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "frame larger than allowed",
            ))
        }
        None => cap,
    };
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        match d.as_mut() {
            Some(dec) => dec.decompress(data, size),
            None => zstd::bulk::decompress(data, size),
        }
    })
}
