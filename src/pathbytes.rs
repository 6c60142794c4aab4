//! Paths as bytes. trove never turns a file name into a lossy `String`:
//! snapshot paths are `/`-separated byte strings relative to the backup
//! root, and this module converts them to and from `OsStr`, orders them,
//! and escapes them for log lines.

use std::cmp::Ordering;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Compare two `/`-separated paths component by component (bytes within a
/// component). This is "path byte order" throughout trove: a directory sorts
/// immediately before its own contents, which is what lets a flat sorted
/// list be cut into per-directory Merkle trees.
pub fn cmp_paths(a: &[u8], b: &[u8]) -> Ordering {
    let n = a.len().min(b.len());
    for i in 0..n {
        let (x, y) = (a[i], b[i]);
        if x != y {
            // The separator sorts before every other byte.
            return match (x == b'/', y == b'/') {
                (true, false) => Ordering::Less,
                (false, true) => Ordering::Greater,
                _ => x.cmp(&y),
            };
        }
    }
    a.len().cmp(&b.len())
}

/// Join a parent path and a name with `/` (no leading `/` for the root).
pub fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        return name.to_vec();
    }
    let mut v = Vec::with_capacity(parent.len() + 1 + name.len());
    v.extend_from_slice(parent);
    v.push(b'/');
    v.extend_from_slice(name);
    v
}

/// The parent of a relative path (`b""` for a top-level name).
pub fn parent(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&c| c == b'/') {
        Some(i) => &path[..i],
        None => b"",
    }
}

/// The last component of a relative path.
pub fn file_name(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&c| c == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// `root/rel` as a filesystem path.
pub fn to_fs(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        return root.to_path_buf();
    }
    root.join(OsStr::from_bytes(rel))
}

pub fn os_bytes(s: &OsStr) -> &[u8] {
    s.as_bytes()
}

pub fn from_bytes(b: Vec<u8>) -> OsString {
    OsString::from_vec(b)
}

/// A name that is safe as one path component: not empty, not `.` or `..`,
/// no `/` and no NUL. Snapshots are untrusted input when read back, so every
/// name taken from one is checked with this before it reaches the filesystem.
pub fn is_safe_component(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

/// Render bytes for a log line: valid UTF-8 passes through, other bytes and
/// control characters are escaped (`\xff`, `\n`, `\\`) so that one path is
/// always one line and two different paths never print alike.
pub fn display(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// `display` for a filesystem path.
pub fn display_path(p: &Path) -> String {
    display(p.as_os_str().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_puts_directory_before_contents() {
        let mut v: Vec<&[u8]> = vec![b"a.b", b"a/b", b"a", b"a/b/c", b"a-", b"b"];
        v.sort_by(|x, y| cmp_paths(x, y));
        let want: Vec<&[u8]> = vec![b"a", b"a/b", b"a/b/c", b"a-", b"a.b", b"b"];
        assert_eq!(v, want);
    }

    #[test]
    fn display_escapes() {
        assert_eq!(display(b"plain/name.txt"), "plain/name.txt");
        assert_eq!(display(b"new\nline"), "new\\nline");
        assert_eq!(display(b"bad\xffbyte"), "bad\\xffbyte");
        assert_eq!(display(b"back\\slash"), "back\\\\slash");
        assert_ne!(display(b"\xff"), display(b"\\xff"));
    }

    #[test]
    fn components() {
        assert_eq!(parent(b"a/b/c"), b"a/b");
        assert_eq!(parent(b"a"), b"");
        assert_eq!(file_name(b"a/b/c"), b"c");
        assert_eq!(join(b"", b"x"), b"x");
        assert_eq!(join(b"a", b"x"), b"a/x");
        assert!(is_safe_component(b"ok"));
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            assert!(!is_safe_component(bad));
        }
    }
}
