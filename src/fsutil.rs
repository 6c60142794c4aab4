//! Filesystem primitives with the durability rules of the repository:
//! atomic writes (temp file → fsync → rename → fsync directory), filesystem
//! syncs for batches. Changes inside the browsable tree go through
//! [`crate::rootdir::RootDir`], which never follows a symlink.

use crate::error::{Error, IoContext, Result};
use crate::model::Meta;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh, process-unique name for a file in a `tmp/` directory.
pub fn tmp_name(prefix: &str) -> String {
    tmp_name_of(prefix, next_tmp_number())
}

/// A process-unique number; `tmp_name_of(prefix, n)` turns it into a name,
/// so a long list of temp files can be kept as numbers, not paths.
pub fn next_tmp_number() -> u64 {
    TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
}

pub fn tmp_name_of(prefix: &str, n: u64) -> String {
    format!("{prefix}-{}-{n}", std::process::id())
}

/// fsync a directory so that a rename or link inside it is durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).ctx("open directory for fsync", dir)?;
    f.sync_all().ctx("fsync directory", dir)
}

/// Whether `syncfs` reports writeback errors here. Before Linux 5.8 it
/// returned 0 even when pages of the filesystem failed to reach the disk
/// (the error was only seen by a later `fsync` of that very file, if at
/// all), so a batch "made durable" by it could silently not be; there
/// trove fsyncs every file instead. Decided once per process.
pub fn syncfs_reports_errors() -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| {
        let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        kernel_at_least(&release, 5, 8)
    })
}

/// Whether a kernel release string (`6.1.0-18-amd64`) is at least
/// `major.minor`; an unreadable one is taken as too old (the safe side).
pub fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(ma), Some(mi)) => (ma, mi) >= (major, minor),
        _ => false,
    }
}

/// Flush every dirty page of the filesystem holding `path`. One `syncfs`
/// makes a whole batch of freshly written objects durable at the cost of a
/// single journal commit, instead of one fsync per file.
pub fn sync_filesystem(path: &Path) -> Result<()> {
    let f = File::open(path).ctx("open for syncfs", path)?;
    crate::sys::syncfs(&f).ctx("syncfs", path)
}

/// Write `data` to `dest` atomically and durably: a reader sees either the
/// old file or the complete new one, never a torn write, even after a crash.
pub fn atomic_write(tmp_dir: &Path, dest: &Path, data: &[u8], mode: u32) -> Result<()> {
    replace_file(tmp_dir, dest, data, mode, true)
}

/// Write `data` to `dest` through a new file in `tmp_dir` renamed over it:
/// a running reader sees the old file or the complete new one. With
/// `durable`, the file and the rename are synced too ([`atomic_write`]);
/// without, a crash may leave the file empty or torn, which only a
/// disposable file whose reader checks it can afford.
pub fn replace_file(
    tmp_dir: &Path,
    dest: &Path,
    data: &[u8],
    mode: u32,
    durable: bool,
) -> Result<()> {
    let tmp = tmp_dir.join(tmp_name("w"));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .ctx("create", &tmp)?;
    let written = f.write_all(data).ctx("write", &tmp).and_then(|()| {
        if durable {
            f.sync_all().ctx("fsync", &tmp)
        } else {
            Ok(())
        }
    });
    drop(f);
    if let Err(e) = written {
        // A full disk must not leave a torn file behind in tmp/.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = fs::rename(&tmp, dest) {
        let _ = fs::remove_file(&tmp);
        return Err(crate::error::Error::io("rename into place", dest, e));
    }
    match dest.parent() {
        Some(parent) if durable => fsync_dir(parent),
        _ => Ok(()),
    }
}

/// Create a directory (and parents) with mode 0700 where it is missing.
pub fn create_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .ctx("create directory", path)
}

/// Whether a failed hardlink means "no link here" (EMLINK: too many links
/// to one inode; EXDEV: another filesystem; EPERM/ENOTSUP: no hardlinks on
/// this filesystem), so a copy must stand in.
pub fn link_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMLINK) | Some(libc::EXDEV) | Some(libc::EPERM) | Some(libc::ENOTSUP)
    )
}

/// Open a repository file for reading the way [`read_repo_file`] does:
/// a symlink is not followed, a FIFO does not block the open.
pub fn open_repo_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// Read a small repository file (a snapshot record, a tree, the config,
/// a marker, the pinned list) that something other than trove may have
/// replaced: a symlink is not followed (ELOOP), a FIFO does not block (it
/// opens at once and reads as empty), a directory fails to read. Whatever
/// it was, the caller gets an error or bytes it then refuses to decode.
pub fn read_repo_file(path: &Path) -> io::Result<Vec<u8>> {
    let mut f = open_repo_file(path)?;
    let mut v = Vec::with_capacity(8192);
    f.read_to_end(&mut v)?;
    Ok(v)
}

/// Remove a file, symlink or (recursively) directory; missing is fine.
pub fn remove_any(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).ctx("remove directory", path),
        Ok(_) => match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(crate::error::Error::io("remove", path, e)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(crate::error::Error::io("stat", path, e)),
    }
}

/// Set a symlink's own mtime (std has no lutimes). The access time is left
/// alone.
pub fn set_symlink_mtime(path: &Path, mtime_ns: i64) -> Result<()> {
    crate::sys::set_mtime_nofollow(path, mtime_ns).ctx("set mtime of", path)
}

/// Rename `src` to `dest` unless `dest` exists (then `AlreadyExists`):
/// `renameat2(RENAME_NOREPLACE)` where the kernel and filesystem have it,
/// else a check then a rename (racy only against other processes, which the
/// engine lock keeps out).
pub fn rename_noreplace(src: &Path, dest: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let e = match crate::sys::rename_noreplace(src, dest) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
            return Err(e);
        }
    }
    if fs::symlink_metadata(dest).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "destination exists",
        ));
    }
    fs::rename(src, dest)
}

/// Tell the kernel that the pages `file` has in the page cache will not be
/// read again soon (`POSIX_FADV_DONTNEED`), so it drops the clean ones now.
/// A backup reads each changed source file once: kept cached, a 3,000,000-
/// file first backup's sources (one 4 KiB page each, 12 GB) pushed the
/// kernel into reclaiming the run's own inodes and folders (borg drops its
/// input the same way). Advice only: an error changes nothing.
pub fn drop_cached(file: &File) {
    let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed);
}

/// Read until `buf` is full or the file ends; returns the bytes read.
pub fn read_full(f: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Nanoseconds since the epoch (negative before it) as a `SystemTime`.
pub fn system_time(ns: i64) -> std::time::SystemTime {
    use std::time::{Duration, UNIX_EPOCH};
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// Give an open file or directory recorded metadata: the owner `owner`
/// (when given; chown needs privilege), then the mode (chown clears set-id
/// bits and file capabilities, so it comes after), then `attrs` (extended
/// attributes: an ACL carries the mode's bits, so after chmod), then the
/// mtime (last: nothing after it changes it).
pub fn apply_meta(
    f: &File,
    path: &Path,
    meta: &Meta,
    owner: Option<(u32, u32)>,
    attrs: &dyn Fn(&Path),
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some((u, g)) = owner {
        std::os::unix::fs::fchown(f, Some(u), Some(g)).ctx("chown", path)?;
    }
    f.set_permissions(fs::Permissions::from_mode(meta.mode & 0o7777))
        .ctx("chmod", path)?;
    attrs(path);
    f.set_times(fs::FileTimes::new().set_modified(system_time(meta.mtime_ns)))
        .ctx("set mtime of", path)
}

/// `apply_meta` on a path, never through a symlink standing there.
pub fn set_meta_nofollow(
    path: &Path,
    meta: &Meta,
    owner: Option<(u32, u32)>,
    attrs: &dyn Fn(&Path),
) -> Result<()> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ctx("open", path)?;
    apply_meta(&f, path, meta, owner, attrs)
}

/// Hand memory a phase freed back to the system. Freed space scattered
/// through the allocator's heaps (the scan's per-directory pieces, built on
/// several threads and then spliced together; a logged plan's actions)
/// otherwise stays resident under everything the run allocates next.
/// glibc only; elsewhere a no-op.
pub fn release_free_memory() {
    crate::sys::release_free_memory();
}

/// A file with no name in `dir` (`O_TMPFILE`, or a name unlinked at once
/// where the filesystem lacks it), for scratch data: the kernel frees it
/// when it is closed, even if the process is killed.
pub fn anonymous_file(dir: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmpfile = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    match tmpfile {
        Ok(f) => Ok(f),
        Err(_) => {
            let p = dir.join(tmp_name("scratch"));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&p)
                .map_err(|e| crate::error::Error::io("create a scratch file in", dir, e))?;
            std::fs::remove_file(&p).map_err(|e| crate::error::Error::io("remove", &p, e))?;
            Ok(f)
        }
    }
}

/// Open a file outside the store (a `dupes` or `mirror` argument, which
/// may be reached through a symlink) like a stored object: never
/// blocking on a FIFO, refusing anything but a regular file.
pub fn open_regular(path: &Path) -> Result<File> {
    open_checked(path, true)
}

/// Open `path` for reading without blocking (`O_NONBLOCK`: a FIFO opens
/// at once), following a final symlink only when `follow`, and refuse
/// anything but a regular file as corrupt, naming what it is.
pub fn open_checked(path: &Path, follow: bool) -> Result<File> {
    let mut opts = OpenOptions::new();
    let mut flags = libc::O_NONBLOCK;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    opts.read(true).custom_flags(flags);
    let f = match opts.open(path) {
        Ok(f) => f,
        // ELOOP is what O_NOFOLLOW answers for a symlink.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Error::corrupt(
                "object",
                path,
                "it is a symbolic link, not a regular file",
            ))
        }
        Err(e) => return Err(Error::io("open", path, e)),
    };
    ensure_regular(&f, "object", path)?;
    // O_NONBLOCK means nothing for a regular file's reads; it stays set.
    Ok(f)
}

/// Refuse an open file that is not a regular file, as corrupt `what`
/// at `path`, naming what it is.
pub fn ensure_regular(f: &File, what: &'static str, path: &Path) -> Result<()> {
    let m = f.metadata().ctx("stat", path)?;
    if !m.file_type().is_file() {
        return Err(Error::corrupt(
            what,
            path,
            format!(
                "it is {}, not a regular file",
                describe_type(&m.file_type())
            ),
        ));
    }
    Ok(())
}

/// "a FIFO", "a directory", … for messages about a file of the wrong type.
pub fn describe_type(t: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else if t.is_file() {
        "a regular file"
    } else {
        "of an unknown type"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_release_comparison() {
        for (release, want) in [
            ("5.8.0", true),
            ("5.7.19-arch1", false),
            ("6.1.0-18-amd64", true),
            ("4.19.0", false),
            ("5.10", true),
            ("10.0.0", true),
            ("", false),
            ("garbage", false),
            ("5", false),
        ] {
            assert_eq!(kernel_at_least(release, 5, 8), want, "{release:?}");
        }
    }

    #[test]
    fn times_before_the_epoch() {
        use std::time::{Duration, UNIX_EPOCH};
        assert_eq!(
            system_time(-1_500_000_000),
            UNIX_EPOCH - Duration::from_millis(1500)
        );
        assert_eq!(system_time(2_000_000_001), UNIX_EPOCH + Duration::new(2, 1));
    }
}
