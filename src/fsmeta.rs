//! The metadata of entries on disk beyond what `stat` gives: extended
//! attributes (POSIX ACLs and file capabilities are stored as xattrs),
//! owner names, special files (FIFOs, sockets, devices) and holes of
//! sparse files. Backup reads it here, restore writes it here; neither
//! knows the system calls (rustix, and `sys` for the C library's user
//! database).

use crate::model::{SpecialKind, Xattr, Xattrs};
use crate::repo::snapshot::Owners;
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// The extended attributes one entry may record, names and values
/// together. The kernel bounds a value to 64 KiB and a name list to 64 KiB;
/// past this budget the remaining attributes (in name order) are left out
/// and the backup says so, so a hostile file cannot make a tree object huge.
pub const XATTR_BUDGET: usize = 1 << 20;

/// Errors that mean "this filesystem or entry has no extended attributes
/// to give": not an error for a backup.
fn unsupported(e: &rustix::io::Errno) -> bool {
    *e == rustix::io::Errno::NOTSUP || *e == rustix::io::Errno::NODATA
}

/// What reading an entry's extended attributes gave.
pub struct ReadXattrs {
    pub xattrs: Xattrs,
    /// Attributes left out over [`XATTR_BUDGET`].
    pub dropped: usize,
}

/// What a sized read (`llistxattr`, `lgetxattr`) returns, with a buffer
/// big enough: a small one first, so the common case is one system call;
/// on ERANGE the size `query` gives (the value may grow in between, so
/// this repeats).
fn read_sized(
    query: impl Fn() -> rustix::io::Result<usize>,
    read: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
) -> rustix::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 1024];
    loop {
        match read(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => {
                let need = query()?;
                buf = vec![0u8; need.max(buf.len() * 2)];
            }
            Err(e) => return Err(e),
        }
    }
}

/// The extended attributes of `path` itself (never of what a symlink
/// there points to), in name order.
pub fn read_xattrs(path: &Path) -> io::Result<ReadXattrs> {
    let none = || ReadXattrs {
        xattrs: Xattrs::default(),
        dropped: 0,
    };
    let names = match read_sized(
        || rustix::fs::llistxattr_query(path),
        |buf| rustix::fs::llistxattr(path, buf),
    ) {
        Ok(n) => n,
        Err(e) if unsupported(&e) => return Ok(none()),
        Err(e) => return Err(e.into()),
    };
    let mut names: Vec<&[u8]> = names.split(|&c| c == 0).filter(|n| !n.is_empty()).collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    let mut used = 0usize;
    let mut dropped = 0usize;
    for name in names {
        let Ok(cname) = std::ffi::CString::new(name) else {
            continue;
        };
        let value = match read_sized(
            || rustix::fs::lgetxattr_query(path, cname.as_c_str()),
            |buf| rustix::fs::lgetxattr(path, cname.as_c_str(), buf),
        ) {
            Ok(v) => Some(v),
            // Removed since it was listed.
            Err(rustix::io::Errno::NODATA) => None,
            Err(e) => return Err(e.into()),
        };
        let Some(value) = value else { continue };
        used += name.len() + value.len();
        if used > XATTR_BUDGET {
            dropped += 1;
            continue;
        }
        out.push(Xattr {
            name: name.to_vec(),
            value,
        });
    }
    Ok(ReadXattrs {
        xattrs: Xattrs::new(out),
        dropped,
    })
}

/// The namespace of an attribute name (`user`, `security`, `trusted`,
/// `system`): what a restore that cannot set one warns about once.
pub fn namespace(name: &[u8]) -> &[u8] {
    let end = name.iter().position(|&c| c == b'.').unwrap_or(name.len());
    &name[..end]
}

/// Set `xattrs` on `path` itself (not through a symlink). `user.*`
/// attributes and ACLs the target already has and the snapshot does not
/// are removed, so an overwriting restore gives back what was recorded;
/// the system's own labels (`security.*`) are left alone. Every attribute
/// that could not be set is passed to `failed`.
pub fn write_xattrs(path: &Path, xattrs: &Xattrs, failed: &mut dyn FnMut(&[u8], io::Error)) {
    if let Ok(existing) = read_xattrs(path) {
        for x in existing.xattrs.as_slice() {
            let ours = x.name.starts_with(b"user.") || x.name.starts_with(b"system.posix_acl_");
            if ours && !xattrs.as_slice().iter().any(|w| w.name == x.name) {
                if let Ok(c) = std::ffi::CString::new(x.name.clone()) {
                    let _ = rustix::fs::lremovexattr(path, c.as_c_str());
                }
            }
        }
    }
    for x in xattrs.as_slice() {
        let Ok(c) = std::ffi::CString::new(x.name.clone()) else {
            failed(&x.name, io::Error::from(io::ErrorKind::InvalidInput));
            continue;
        };
        if let Err(e) = rustix::fs::lsetxattr(
            path,
            c.as_c_str(),
            &x.value,
            rustix::fs::XattrFlags::empty(),
        ) {
            failed(&x.name, e.into());
        }
    }
}

/// The names of `uids` and `gids` on this machine (those it has).
pub fn owner_names(uids: &BTreeSet<u32>, gids: &BTreeSet<u32>) -> Owners {
    Owners {
        users: uids
            .iter()
            .filter_map(|&u| crate::sys::user_name(u).map(|n| (u, n)))
            .collect(),
        groups: gids
            .iter()
            .filter_map(|&g| crate::sys::group_name(g).map(|n| (g, n)))
            .collect(),
    }
}

/// The uid and gid a restore gives entries, resolved once per restore:
/// with `numeric`, the recorded ids; otherwise the ids this machine has
/// for the recorded names (tar's rule), the recorded id where a name is
/// unknown here or was not recorded. Each recorded name is looked up
/// once, when the map is made: a lookup reads `/etc/passwd` or
/// `/etc/group` (six system calls and a parse, or a round trip to a
/// directory service), which per restored file cost more than the file.
#[derive(Clone, Debug, Default)]
pub struct OwnerMap {
    numeric: bool,
    /// Recorded id → this machine's id, sorted by recorded id; only ids
    /// whose name resolved here.
    users: Vec<(u32, u32)>,
    groups: Vec<(u32, u32)>,
}

impl OwnerMap {
    /// The map for a snapshot's owner names, resolved through this
    /// machine's user and group databases.
    pub fn new(owners: &Owners, numeric: bool) -> OwnerMap {
        OwnerMap::resolve(owners, numeric, crate::sys::uid_of, crate::sys::gid_of)
    }

    /// `new` with the name lookups given (tests).
    pub fn resolve(
        owners: &Owners,
        numeric: bool,
        uid_of: impl Fn(&[u8]) -> Option<u32>,
        gid_of: impl Fn(&[u8]) -> Option<u32>,
    ) -> OwnerMap {
        if numeric {
            return OwnerMap {
                numeric,
                ..OwnerMap::default()
            };
        }
        let table = |names: &[(u32, Vec<u8>)], of: &dyn Fn(&[u8]) -> Option<u32>| {
            let mut t: Vec<(u32, u32)> = names
                .iter()
                .filter_map(|(id, name)| of(name).map(|here| (*id, here)))
                .collect();
            t.sort_unstable();
            t
        };
        OwnerMap {
            numeric,
            users: table(&owners.users, &uid_of),
            groups: table(&owners.groups, &gid_of),
        }
    }

    /// The owner an entry recorded with `uid`/`gid` gets.
    pub fn map(&self, uid: u32, gid: u32) -> (u32, u32) {
        if self.numeric {
            return (uid, gid);
        }
        let find =
            |t: &[(u32, u32)], id: u32| t.binary_search_by_key(&id, |e| e.0).map_or(id, |k| t[k].1);
        (find(&self.users, uid), find(&self.groups, gid))
    }
}

/// The special kind of a file type, if it is one.
pub fn special_kind(ft: &fs::FileType) -> Option<SpecialKind> {
    if ft.is_fifo() {
        Some(SpecialKind::Fifo)
    } else if ft.is_socket() {
        Some(SpecialKind::Socket)
    } else if ft.is_char_device() {
        Some(SpecialKind::CharDevice)
    } else if ft.is_block_device() {
        Some(SpecialKind::BlockDevice)
    } else {
        None
    }
}

/// Create the special file `path` (a FIFO, or a device; the caller never
/// asks for a socket, which only a listening program can make).
pub fn make_special(path: &Path, kind: SpecialKind, mode: u32, rdev: u64) -> io::Result<()> {
    use rustix::fs::FileType;
    let ft =
        match kind {
            SpecialKind::Fifo => FileType::Fifo,
            SpecialKind::CharDevice => FileType::CharacterDevice,
            SpecialKind::BlockDevice => FileType::BlockDevice,
            SpecialKind::Socket => return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a socket is recorded but not recreated (only the program that listens on it can)",
            )),
        };
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        ft,
        rustix::fs::Mode::from_raw_mode(mode & 0o7777),
        rdev,
    )
    .map_err(io::Error::from)
}

/// Whether a file has holes: fewer 512-byte blocks allocated than its size
/// needs (how `cp --sparse=auto` and tar decide). A filesystem that
/// compresses or inlines data can say so too; restoring such a file's zero
/// runs as holes gives back the same bytes.
pub fn is_sparse(m: &fs::Metadata) -> bool {
    m.blocks().saturating_mul(512) < m.len()
}

/// The block size holes are made of on restore (and in stored objects).
pub const HOLE_BLOCK: u64 = 4096;

/// Writes a file's bytes in order, leaving every whole aligned block of
/// zeros as a hole (a seek), so a sparse file is restored sparse. Call
/// [`SparseWriter::finish`] to give the file its full length.
pub struct SparseWriter {
    offset: u64,
    /// Bytes skipped but not yet sought over.
    pending: u64,
}

impl Default for SparseWriter {
    fn default() -> Self {
        SparseWriter::new()
    }
}

impl SparseWriter {
    pub fn new() -> SparseWriter {
        SparseWriter {
            offset: 0,
            pending: 0,
        }
    }

    pub fn write(&mut self, f: &mut File, data: &[u8]) -> io::Result<()> {
        let mut at = 0usize;
        while at < data.len() {
            // Up to the next aligned block boundary, or a whole block.
            let in_block = (self.offset % HOLE_BLOCK) as usize;
            let take = ((HOLE_BLOCK as usize) - in_block).min(data.len() - at);
            let piece = &data[at..at + take];
            let whole_block = in_block == 0 && take == HOLE_BLOCK as usize;
            if whole_block && piece.iter().all(|&b| b == 0) {
                self.pending += take as u64;
            } else {
                if self.pending > 0 {
                    f.seek(SeekFrom::Current(self.pending as i64))?;
                    self.pending = 0;
                }
                f.write_all(piece)?;
            }
            self.offset += take as u64;
            at += take;
        }
        Ok(())
    }

    /// `n` bytes of zeros known to be a hole: skipped without a look.
    pub fn skip(&mut self, n: u64) {
        self.pending += n;
        self.offset += n;
    }

    /// Extend the file over a trailing hole.
    pub fn finish(self, f: &mut File) -> io::Result<()> {
        if self.pending > 0 {
            f.set_len(self.offset)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names map to this machine's ids, each looked up once however many
    /// entries ask; an unknown or unrecorded name keeps the recorded id;
    /// `--numeric-owner` keeps every recorded id and looks nothing up.
    #[test]
    fn owner_map_resolves_each_name_once() {
        let owners = Owners {
            users: vec![(1000, b"alice".to_vec()), (1001, b"gone".to_vec())],
            groups: vec![(100, b"staff".to_vec())],
        };
        let lookups = std::cell::Cell::new(0);
        let here = |name: &[u8]| {
            lookups.set(lookups.get() + 1);
            match name {
                b"alice" => Some(2000),
                b"staff" => Some(50),
                _ => None,
            }
        };
        let m = OwnerMap::resolve(&owners, false, here, here);
        assert_eq!(lookups.get(), 3, "one lookup per recorded name");
        for ((uid, gid), want) in [
            ((1000, 100), (2000, 50)),
            ((1001, 100), (1001, 50)),
            ((7, 8), (7, 8)),
            ((1000, 9), (2000, 9)),
        ] {
            for _ in 0..3 {
                assert_eq!(m.map(uid, gid), want, "{uid}:{gid}");
            }
        }
        assert_eq!(lookups.get(), 3, "mapping looks nothing up");
        let numeric = OwnerMap::resolve(&owners, true, here, here);
        assert_eq!(numeric.map(1000, 100), (1000, 100));
        assert_eq!(lookups.get(), 3);
    }

    #[test]
    fn sparse_writer_gives_back_the_bytes() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("f");
        let mut data = vec![0u8; 5 * HOLE_BLOCK as usize + 100];
        data[HOLE_BLOCK as usize + 7] = 1;
        data[5 * HOLE_BLOCK as usize + 50] = 9;
        for split in [1usize, 100, 4096, 5000, data.len()] {
            let mut f = File::create(&p)?;
            let mut w = SparseWriter::new();
            for c in data.chunks(split) {
                w.write(&mut f, c)?;
            }
            w.finish(&mut f)?;
            drop(f);
            assert_eq!(fs::read(&p)?, data, "split {split}");
        }
        let zeros = vec![0u8; 3 * HOLE_BLOCK as usize];
        let mut f = File::create(&p)?;
        let mut w = SparseWriter::new();
        w.write(&mut f, &zeros)?;
        w.finish(&mut f)?;
        drop(f);
        assert_eq!(fs::read(&p)?, zeros);
        Ok(())
    }

    #[test]
    fn namespaces() {
        assert_eq!(namespace(b"user.note"), b"user");
        assert_eq!(namespace(b"security.capability"), b"security");
        assert_eq!(namespace(b"odd"), b"odd");
    }
}
