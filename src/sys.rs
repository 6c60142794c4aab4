//! Every system call trove makes through `unsafe`: each is a small safe
//! function with a `# Safety` argument for its one `unsafe` block. The
//! rest of the crate denies `unsafe_code` (lib.rs allows it for this
//! module alone, and `tests/integration/hygiene.rs` checks no other file
//! allows it). Callers turn the `io::Error`s into repository errors.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// `syncfs(2)`: flush every dirty page of the filesystem holding `f`.
#[cfg(target_os = "linux")]
pub fn syncfs(f: &File) -> io::Result<()> {
    // SAFETY: syncfs takes a valid open file descriptor and has no other
    // preconditions; `f` is borrowed for the duration of the call.
    let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `sync(2)`, where `syncfs` does not exist: flushes every filesystem.
#[cfg(not(target_os = "linux"))]
pub fn syncfs(_f: &File) -> io::Result<()> {
    // SAFETY: sync has no arguments and no preconditions.
    unsafe { libc::sync() };
    Ok(())
}

/// Set the modification time of `path` itself, not of what a symlink
/// there points to (`utimensat` with `AT_SYMLINK_NOFOLLOW`); the access
/// time is left alone.
pub fn set_mtime_nofollow(path: &Path, mtime_ns: i64) -> io::Result<()> {
    let c = c_path(path)?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: mtime_ns.div_euclid(1_000_000_000) as libc::time_t,
            tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as libc::c_long,
        },
    ];
    // SAFETY: `c` is a valid NUL-terminated string and `times` two valid
    // timespecs, both alive for the duration of the call.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `renameat2(RENAME_NOREPLACE)`: `AlreadyExists` when `dest` exists;
/// `EINVAL`/`ENOSYS` where the kernel or filesystem lacks the flag (the
/// caller falls back).
#[cfg(target_os = "linux")]
pub fn rename_noreplace(src: &Path, dest: &Path) -> io::Result<()> {
    let (s, d) = (c_path(src)?, c_path(dest)?);
    // SAFETY: both are valid NUL-terminated strings alive for the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            s.as_ptr(),
            libc::AT_FDCWD,
            d.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Hand the allocator's free memory back to the system (glibc's
/// `malloc_trim`); elsewhere nothing.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Serve every allocation of `bytes` or more from its own mapping, returned
/// to the system when freed (glibc's `M_MMAP_THRESHOLD`); elsewhere
/// nothing. Setting it also stops glibc raising the threshold after each
/// large free, which otherwise keeps the next pack-sized buffers in the
/// heap, resident after use: a push held about 40 MiB more for it.
pub fn map_large_allocations(bytes: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let bytes = i32::try_from(bytes).unwrap_or(i32::MAX);
        // SAFETY: mallopt only sets an allocator parameter.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, bytes);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = bytes;
}

/// The most hardlinks the filesystem of `f` allows a file
/// (`fpathconf(_PC_LINK_MAX)`); `None` for no limit or unknown.
pub fn link_max(f: &File) -> Option<i64> {
    // SAFETY: `f` is an open descriptor for the duration of the call.
    let max = unsafe { libc::fpathconf(f.as_raw_fd(), libc::_PC_LINK_MAX) };
    (max >= 0).then_some(max as i64)
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The effective user and group ids of this process (the owner a file it
/// creates gets).
pub fn effective_ids() -> (u32, u32) {
    // SAFETY: geteuid and getegid have no preconditions and cannot fail.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// Make `dest` share `src`'s extents (`FICLONE`), on filesystems that can;
/// false where it cannot (then the caller copies).
#[cfg(target_os = "linux")]
pub fn reflink(src: &File, dest: &File) -> bool {
    // SAFETY: both descriptors are open for the duration of the call and
    // FICLONE takes the source fd as its integer argument.
    let rc = unsafe { libc::ioctl(dest.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    rc == 0
}

#[cfg(not(target_os = "linux"))]
pub fn reflink(_src: &File, _dest: &File) -> bool {
    false
}

/// The C library's user and group records: structs of integers and
/// pointers, for which all-zero bytes are a valid value.
trait NssEntry {}
impl NssEntry for libc::passwd {}
impl NssEntry for libc::group {}

/// One `getpw*_r`/`getgr*_r` lookup: `call` fills an entry whose strings
/// point into the buffer it is given (grown while the C library says
/// ERANGE); `read` takes what is wanted while the buffer lives.
fn nss_lookup<T: NssEntry, R>(
    call: impl Fn(&mut T, &mut [libc::c_char], &mut *mut T) -> libc::c_int,
    read: impl Fn(&T) -> Option<R>,
) -> Option<R> {
    let mut len = 1024usize;
    loop {
        let mut buf = vec![0 as libc::c_char; len];
        // SAFETY: `T: NssEntry` is a C struct of integers and pointers,
        // valid when all zero.
        let mut entry: T = unsafe { std::mem::zeroed() };
        let mut out: *mut T = std::ptr::null_mut();
        match call(&mut entry, &mut buf, &mut out) {
            0 if !out.is_null() => return read(&entry),
            libc::ERANGE if len < (1 << 20) => len *= 4,
            _ => return None,
        }
    }
}

/// The bytes of a C string an NSS entry points to (into the lookup's
/// buffer, alive while `read` runs).
fn c_bytes(p: *const libc::c_char) -> Option<Vec<u8>> {
    if p.is_null() {
        return None;
    }
    // SAFETY: a non-null string field of an entry the C library filled
    // is NUL-terminated and lies in `nss_lookup`'s live buffer.
    Some(unsafe { std::ffi::CStr::from_ptr(p) }.to_bytes().to_vec())
}

/// The name of user `uid` on this machine (NSS: files, LDAP, …).
pub fn user_name(uid: u32) -> Option<Vec<u8>> {
    nss_lookup(
        // SAFETY: every pointer is to live memory of the length passed.
        |pw: &mut libc::passwd, buf, out| unsafe {
            libc::getpwuid_r(uid, pw, buf.as_mut_ptr(), buf.len(), out)
        },
        |pw| c_bytes(pw.pw_name),
    )
}

/// The name of group `gid` on this machine.
pub fn group_name(gid: u32) -> Option<Vec<u8>> {
    nss_lookup(
        // SAFETY: as in `user_name`.
        |gr: &mut libc::group, buf, out| unsafe {
            libc::getgrgid_r(gid, gr, buf.as_mut_ptr(), buf.len(), out)
        },
        |gr| c_bytes(gr.gr_name),
    )
}

/// The id of the user called `name` on this machine.
pub fn uid_of(name: &[u8]) -> Option<u32> {
    let c = CString::new(name).ok()?;
    nss_lookup(
        // SAFETY: as in `user_name`; `c` is NUL-terminated and alive.
        |pw: &mut libc::passwd, buf, out| unsafe {
            libc::getpwnam_r(c.as_ptr(), pw, buf.as_mut_ptr(), buf.len(), out)
        },
        |pw| Some(pw.pw_uid),
    )
}

/// The id of the group called `name` on this machine.
pub fn gid_of(name: &[u8]) -> Option<u32> {
    let c = CString::new(name).ok()?;
    nss_lookup(
        // SAFETY: as in `uid_of`.
        |gr: &mut libc::group, buf, out| unsafe {
            libc::getgrnam_r(c.as_ptr(), gr, buf.as_mut_ptr(), buf.len(), out)
        },
        |gr| Some(gr.gr_gid),
    )
}
