//! Filesystem operations below a root directory that never follow a
//! symlink on the way: the browsable tree's writers (materialize, a
//! backup's and a prune's tree update, the quarantine) go through
//! [`RootDir`], so a symlink someone put where a folder was can never lead
//! a create, remove, rename or link outside BACKUP_ROOT.
//!
//! Every path is `/`-separated bytes relative to the root (as snapshots
//! and renderings name them). The folders on the way are opened one
//! component at a time from a handle of the root, with
//! `O_DIRECTORY | O_NOFOLLOW`, and the operation is done relative to the
//! last one (`openat`, `mkdirat`, `unlinkat`, `renameat`, `linkat`,
//! `symlinkat`), as `rm -rf` and `git clean` do. A component that is a
//! symlink or any other non-directory answers `ENOTDIR`; [`RootDir::lstat`]
//! reports it as [`Lstat::Blocked`], so the caller can move that entry
//! itself aside and make the real folder. A component `..`, `.` or empty is
//! refused (`EINVAL`): a hostile snapshot cannot climb out either.
//!
//! The root itself is opened by its path, symlinks followed: a backup root
//! given as a symlink is the user's choice. On Linux 5.6 and later a
//! folder is opened with one `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` call, which refuses a symlink in any component
//! just as the walk does, instead of one `openat` per component (a 1%
//! rerun of 100,000 files, whose changes are spread over thousands of
//! folders on two threads, opened 25,000 folders one component at a time;
//! where `openat2` is missing or filtered, the walk is used). The handles
//! of recently used folders are kept, so placing thousands of files in one
//! folder opens that folder once; a rename or removal of a folder drops
//! the handles at or below it.

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// How many folder handles a [`RootDir`] keeps: the folders on the way to
/// the last ones used, so an update in path order (thousands of
/// `versions/<path>/` folders, each a few levels down) opens each folder
/// about once.
const CACHED: usize = 64;

/// Flags to open a folder on the way: never through a symlink, and (on
/// Linux) as a path handle, which needs no read permission.
#[cfg(any(target_os = "linux", target_os = "android"))]
const WALK: OFlags = OFlags::PATH
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const WALK: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// What `lstat` found at a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lstat {
    Found(EntryStat),
    /// Nothing there (or a folder on the way is missing).
    Missing,
    /// A folder on the way is a symlink or another non-directory.
    Blocked,
}

/// The parts of an entry's `lstat` trove looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryStat {
    pub kind: FileType,
    pub ino: u64,
    pub dev: u64,
    pub nlink: u64,
    pub size: u64,
}

impl EntryStat {
    #[allow(clippy::unnecessary_cast)] // the field types differ per target
    fn of(st: &rustix::fs::Stat) -> EntryStat {
        EntryStat {
            kind: FileType::from_raw_mode(st.st_mode as _),
            ino: st.st_ino as u64,
            dev: st.st_dev as u64,
            nlink: st.st_nlink as u64,
            size: st.st_size.max(0) as u64,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind == FileType::Directory
    }

    pub fn is_file(&self) -> bool {
        self.kind == FileType::RegularFile
    }

    pub fn is_symlink(&self) -> bool {
        self.kind == FileType::Symlink
    }

    /// The same inode as `m` (an object in the store)?
    pub fn same_inode(&self, m: &std::fs::Metadata) -> bool {
        use std::os::unix::fs::MetadataExt;
        self.ino == m.ino() && self.dev == m.dev()
    }
}

/// A directory handle to a root and the operations below it.
pub struct RootDir {
    fd: OwnedFd,
    path: PathBuf,
    /// Recently opened folders (relative path, handle), newest first.
    cache: Mutex<Vec<(Vec<u8>, Arc<OwnedFd>)>>,
    /// Open a folder with one `openat2` call where the kernel has it
    /// (tests turn it off to check the component walk).
    beneath: bool,
}

/// Set once `openat2` answered ENOSYS: the walk is used from then on.
#[cfg(any(target_os = "linux", target_os = "android"))]
static NO_OPENAT2: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl RootDir {
    /// Open the root folder `path` (symlinks in `path` itself followed).
    pub fn open(path: &Path) -> io::Result<RootDir> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(RootDir {
            fd,
            path: path.to_path_buf(),
            cache: Mutex::new(Vec::new()),
            beneath: true,
        })
    }

    /// As [`RootDir::open`], opening folders one component at a time
    /// even where `openat2` exists.
    #[cfg(test)]
    fn open_walking(path: &Path) -> io::Result<RootDir> {
        let mut r = RootDir::open(path)?;
        r.beneath = false;
        Ok(r)
    }

    /// The root's path, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `rel` as a path below the root, for messages.
    pub fn abs(&self, rel: &[u8]) -> PathBuf {
        crate::pathbytes::to_fs(&self.path, rel)
    }

    /// A handle of folder `rel` (the root for an empty path), opened
    /// component by component without following a symlink.
    fn dir(&self, rel: &[u8]) -> io::Result<Dir<'_>> {
        if rel.is_empty() {
            return Ok(Dir::Root(self.fd.as_fd()));
        }
        let mut start: Option<(usize, Arc<OwnedFd>)> = None;
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            for (k, fd) in cache.iter() {
                let covers = crate::pathbytes::is_at_or_under(rel, k);
                if covers && start.as_ref().is_none_or(|(n, _)| k.len() > *n) {
                    start = Some((k.len(), fd.clone()));
                }
            }
        }
        if let Some((n, fd)) = &start {
            if *n == rel.len() {
                return Ok(Dir::Shared(fd.clone()));
            }
        }
        let (done, mut cur): (usize, Option<Arc<OwnedFd>>) = match start {
            Some((n, fd)) => (n + 1, Some(fd)),
            None => (0, None),
        };
        let base = match &cur {
            Some(fd) => fd.as_fd(),
            None => self.fd.as_fd(),
        };
        if let Some(fd) = self.open_beneath(base, &rel[done..])? {
            let fd = Arc::new(fd);
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.retain(|(k, _)| k.as_slice() != rel);
            cache.insert(0, (rel.to_vec(), fd.clone()));
            cache.truncate(CACHED);
            return Ok(Dir::Shared(fd));
        }
        let mut opened: Vec<(usize, Arc<OwnedFd>)> = Vec::new();
        let mut at = done;
        for comp in rel[done..].split(|&b| b == b'/') {
            check_component(comp)?;
            let base = match &cur {
                Some(fd) => fd.as_fd(),
                None => self.fd.as_fd(),
            };
            let next = rustix::fs::openat(base, comp, WALK, Mode::empty()).map_err(not_a_folder)?;
            let next = Arc::new(next);
            at += comp.len();
            opened.push((at, next.clone()));
            at += 1;
            cur = Some(next);
        }
        let fd = cur.ok_or_else(|| invalid("empty path"))?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        // The folders on the way are kept too (the deepest first): the
        // next path is most often a sibling or a cousin of this one.
        cache.retain(|(k, _)| !opened.iter().any(|(n, _)| k.as_slice() == &rel[..*n]));
        for (n, h) in opened.into_iter().rev() {
            cache.insert(0, (rel[..n].to_vec(), h));
        }
        cache.truncate(CACHED);
        drop(cache);
        Ok(Dir::Shared(fd))
    }

    /// Folder `rest` below `base` in one `openat2` call that fails as the
    /// component walk would (`ENOTDIR` for a symlink or non-folder on the
    /// way, `EINVAL` for a `..`, `.` or empty component); `None` where the
    /// kernel lacks `openat2` or a filter refuses it, so the caller walks.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn open_beneath(&self, base: BorrowedFd<'_>, rest: &[u8]) -> io::Result<Option<OwnedFd>> {
        use rustix::fs::ResolveFlags;
        use rustix::io::Errno;
        use std::sync::atomic::Ordering;
        if !self.beneath || NO_OPENAT2.load(Ordering::Relaxed) {
            return Ok(None);
        }
        for comp in rest.split(|&b| b == b'/') {
            check_component(comp)?;
        }
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(base, rest, WALK, Mode::empty(), how) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOSYS) => {
                NO_OPENAT2.store(true, Ordering::Relaxed);
                Ok(None)
            }
            // A seccomp filter's answer (containers), or flags this kernel
            // does not know: the walk decides.
            Err(Errno::PERM | Errno::INVAL | Errno::AGAIN) => Ok(None),
            Err(e) => Err(not_a_folder(e)),
        }
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn open_beneath(&self, _base: BorrowedFd<'_>, _rest: &[u8]) -> io::Result<Option<OwnedFd>> {
        Ok(None)
    }

    /// The folder holding `rel` and `rel`'s last component.
    fn parent<'a>(&self, rel: &'a [u8]) -> io::Result<(Dir<'_>, &'a [u8])> {
        let name = crate::pathbytes::file_name(rel);
        check_component(name)?;
        Ok((self.dir(crate::pathbytes::parent(rel))?, name))
    }

    /// Forget the handles of `rel` and of every folder below it (it was
    /// renamed or removed).
    fn invalidate(&self, rel: &[u8]) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|(k, _)| !crate::pathbytes::is_at_or_under(k, rel));
    }

    /// What is at `rel`, without following a symlink anywhere.
    pub fn lstat(&self, rel: &[u8]) -> io::Result<Lstat> {
        if rel.is_empty() {
            return Ok(Lstat::Found(EntryStat::of(&rustix::fs::fstat(&self.fd)?)));
        }
        let (dir, name) = match self.parent(rel) {
            Ok(x) => x,
            Err(e) => return blocked_or_missing(e),
        };
        match rustix::fs::statat(dir.fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Lstat::Found(EntryStat::of(&st))),
            Err(e) => blocked_or_missing(e.into()),
        }
    }

    /// The target of the symlink at `rel`.
    pub fn read_link(&self, rel: &[u8]) -> io::Result<Vec<u8>> {
        let (dir, name) = self.parent(rel)?;
        Ok(rustix::fs::readlinkat(dir.fd(), name, Vec::new())?.into_bytes())
    }

    /// Open the file at `rel` for reading; a symlink there is refused
    /// (ELOOP) and a FIFO never blocks the open.
    pub fn open_read(&self, rel: &[u8]) -> io::Result<File> {
        let (dir, name) = self.parent(rel)?;
        let fd = rustix::fs::openat(
            dir.fd(),
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(File::from(fd))
    }

    /// Create a new file at `rel` (never through or over anything).
    pub fn create_new(&self, rel: &[u8], mode: u32) -> io::Result<File> {
        let (dir, name) = self.parent(rel)?;
        let fd = rustix::fs::openat(
            dir.fd(),
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode as _),
        )?;
        Ok(File::from(fd))
    }

    /// The names in folder `rel` with their types (from readdir), `.` and
    /// `..` left out, unsorted.
    pub fn list(&self, rel: &[u8]) -> io::Result<Vec<(Vec<u8>, FileType)>> {
        let fd = if rel.is_empty() {
            rustix::fs::openat(
                &self.fd,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?
        } else {
            let (dir, name) = self.parent(rel)?;
            rustix::fs::openat(
                dir.fd(),
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?
        };
        let mut out = Vec::new();
        for ent in rustix::fs::Dir::new(fd)? {
            let ent = ent?;
            let name = ent.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            out.push((name.to_vec(), ent.file_type()));
        }
        Ok(out)
    }

    pub fn mkdir(&self, rel: &[u8], mode: u32) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        Ok(rustix::fs::mkdirat(
            dir.fd(),
            name,
            Mode::from_raw_mode(mode as _),
        )?)
    }

    /// `mkdir -p` below the root: a folder that exists is fine; a
    /// non-directory on the way answers ENOTDIR.
    pub fn mkdir_all(&self, rel: &[u8], mode: u32) -> io::Result<()> {
        let mut end = 0;
        while end < rel.len() {
            end = rel[end..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(rel.len(), |i| end + i);
            match self.mkdir(&rel[..end], mode) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            end += 1;
        }
        Ok(())
    }

    /// Remove the empty folder at `rel`.
    pub fn rmdir(&self, rel: &[u8]) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        rustix::fs::unlinkat(dir.fd(), name, AtFlags::REMOVEDIR)?;
        drop(dir);
        self.invalidate(rel);
        Ok(())
    }

    /// Remove the file or symlink (never its target) at `rel`.
    pub fn unlink(&self, rel: &[u8]) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        Ok(rustix::fs::unlinkat(dir.fd(), name, AtFlags::empty())?)
    }

    /// Create a symlink at `rel` pointing at `target`.
    pub fn symlink(&self, target: &[u8], rel: &[u8]) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        Ok(rustix::fs::symlinkat(target, dir.fd(), name)?)
    }

    /// Hardlink `src` (a path outside this tree, e.g. a stored object; a
    /// symlink there is linked as itself) at `rel`.
    pub fn link_from(&self, src: &Path, rel: &[u8]) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        Ok(rustix::fs::linkat(
            rustix::fs::CWD,
            src,
            dir.fd(),
            name,
            AtFlags::empty(),
        )?)
    }

    /// Rename `from` to `to`, both below this root (`to` replaced).
    pub fn rename(&self, from: &[u8], to: &[u8]) -> io::Result<()> {
        let (fd, fname) = self.parent(from)?;
        let (td, tname) = self.parent(to)?;
        rustix::fs::renameat(fd.fd(), fname, td.fd(), tname)?;
        drop((fd, td));
        self.invalidate(from);
        self.invalidate(to);
        Ok(())
    }

    /// Move `from` (the entry itself, whatever it is) to `to` below
    /// `dest`'s root, unless `to` exists (`AlreadyExists`).
    pub fn move_noreplace(&self, from: &[u8], dest: &RootDir, to: &[u8]) -> io::Result<()> {
        let (fd, fname) = self.parent(from)?;
        let (td, tname) = dest.parent(to)?;
        let r =
            match rustix::fs::renameat_with(fd.fd(), fname, td.fd(), tname, RenameFlags::NOREPLACE)
            {
                Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
                    // No RENAME_NOREPLACE here: check, then rename (the engine
                    // lock keeps other writers out).
                    match rustix::fs::statat(td.fd(), tname, AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(_) => Err(io::Error::from_raw_os_error(libc::EEXIST)),
                        Err(_) => Ok(rustix::fs::renameat(fd.fd(), fname, td.fd(), tname)?),
                    }
                }
                r => Ok(r?),
            };
        drop((fd, td));
        if r.is_ok() {
            self.invalidate(from);
        }
        r
    }
}

/// A folder handle: the root's own, or one from the cache.
enum Dir<'a> {
    Root(BorrowedFd<'a>),
    Shared(Arc<OwnedFd>),
}

impl Dir<'_> {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Dir::Root(fd) => *fd,
            Dir::Shared(fd) => fd.as_fd(),
        }
    }
}

/// O_NOFOLLOW (or RESOLVE_NO_SYMLINKS) meets a symlink: ELOOP on some
/// kernels and flag sets, ENOTDIR on others; both mean "not a folder".
fn not_a_folder(e: rustix::io::Errno) -> io::Error {
    if e == rustix::io::Errno::LOOP {
        io::Error::from_raw_os_error(libc::ENOTDIR)
    } else {
        io::Error::from(e)
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}

fn check_component(c: &[u8]) -> io::Result<()> {
    if c.is_empty() || c == b"." || c == b".." || c.contains(&0) {
        return Err(invalid(
            "a path component is empty, `.`, `..` or holds a NUL byte",
        ));
    }
    Ok(())
}

fn blocked_or_missing(e: io::Error) -> io::Result<Lstat> {
    match e.raw_os_error() {
        Some(libc::ENOENT) => Ok(Lstat::Missing),
        Some(libc::ENOTDIR) | Some(libc::ELOOP) => Ok(Lstat::Blocked),
        _ => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> io::Result<tempfile::TempDir> {
        tempfile::tempdir()
    }

    /// Both ways of opening a folder: one `openat2` call (where the kernel
    /// has it) and the component walk.
    fn opens() -> [fn(&Path) -> io::Result<RootDir>; 2] {
        [RootDir::open, RootDir::open_walking]
    }

    #[test]
    fn a_symlinked_folder_blocks_every_operation() -> io::Result<()> {
        for open in opens() {
            symlinked_folder_blocks(open)?;
        }
        Ok(())
    }

    fn symlinked_folder_blocks(open: fn(&Path) -> io::Result<RootDir>) -> io::Result<()> {
        let t = tmp()?;
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(&root)?;
        std::fs::create_dir_all(outside.join("d"))?;
        std::fs::write(outside.join("f"), b"outside")?;
        std::os::unix::fs::symlink(&outside, root.join("sub"))?;
        std::fs::create_dir_all(root.join("a/b"))?;
        std::os::unix::fs::symlink(&outside, root.join("a/b/deep"))?;
        let r = open(&root)?;
        assert_eq!(r.lstat(b"sub/f")?, Lstat::Blocked);
        // Deeper down, and with the folders above it already open.
        assert_eq!(r.lstat(b"a/b/deep/d/x")?, Lstat::Blocked);
        r.mkdir(b"a/b/c", 0o755)?;
        assert_eq!(r.lstat(b"a/b/deep/f")?, Lstat::Blocked);
        assert!(r.lstat(b"a/./b/f").is_err());
        assert!(r.lstat(b"a//b/f").is_err());
        assert!(r.lstat(b"a/b/../../../outside/f").is_err());
        assert!(matches!(r.lstat(b"sub")?, Lstat::Found(s) if s.is_symlink()));
        let enotdir = |e: io::Error| e.raw_os_error() == Some(libc::ENOTDIR);
        assert!(r.unlink(b"sub/f").is_err_and(enotdir));
        assert!(r.rmdir(b"sub/d").is_err_and(enotdir));
        assert!(r.mkdir(b"sub/new", 0o755).is_err_and(enotdir));
        assert!(r.create_new(b"sub/new.txt", 0o644).is_err_and(enotdir));
        assert!(r.symlink(b"x", b"sub/l").is_err_and(enotdir));
        assert!(r.open_read(b"sub/f").is_err_and(enotdir));
        assert!(r
            .link_from(&outside.join("f"), b"sub/g")
            .is_err_and(enotdir));
        assert!(r.list(b"sub").is_err());
        assert!(r.lstat(b"../outside/f").is_err());
        // The symlink itself can be moved aside.
        std::fs::create_dir_all(t.path().join("q"))?;
        let q = open(&t.path().join("q"))?;
        r.move_noreplace(b"sub", &q, b"sub")?;
        assert_eq!(r.lstat(b"sub")?, Lstat::Missing);
        assert_eq!(std::fs::read(outside.join("f"))?, b"outside");
        assert!(outside.join("d").is_dir());
        Ok(())
    }

    #[test]
    fn cached_handles_follow_renames_and_removals() -> io::Result<()> {
        for open in opens() {
            handles_follow_renames(open)?;
        }
        Ok(())
    }

    fn handles_follow_renames(open: fn(&Path) -> io::Result<RootDir>) -> io::Result<()> {
        let t = tmp()?;
        let r = open(t.path())?;
        r.mkdir_all(b"a/b", 0o755)?;
        r.create_new(b"a/b/x", 0o644)?;
        assert!(matches!(r.lstat(b"a/b/x")?, Lstat::Found(s) if s.is_file()));
        r.rename(b"a", b"c")?;
        assert_eq!(r.lstat(b"a/b/x")?, Lstat::Missing);
        assert!(matches!(r.lstat(b"c/b/x")?, Lstat::Found(_)));
        r.unlink(b"c/b/x")?;
        r.rmdir(b"c/b")?;
        r.mkdir(b"c/b", 0o755)?;
        r.create_new(b"c/b/y", 0o644)?;
        assert!(t.path().join("c/b/y").exists());
        Ok(())
    }
}
