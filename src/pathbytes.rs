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

/// Is `p` strictly below the directory `dir`? Component-wise, not
/// byte-wise: `a/b` is under `a`, but `ab` and `a-b` (siblings sharing a
/// byte prefix) are not, and nothing is under itself. The empty path is the
/// root, so every non-empty path is under it.
pub fn is_under(p: &[u8], dir: &[u8]) -> bool {
    if dir.is_empty() {
        return !p.is_empty();
    }
    p.len() > dir.len() && p.starts_with(dir) && p[dir.len()] == b'/'
}

/// Is `p` the directory `dir` itself or below it? Everything is at or under
/// the root (the empty path).
pub fn is_at_or_under(p: &[u8], dir: &[u8]) -> bool {
    p == dir || is_under(p, dir)
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
    use proptest::prelude::*;

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

    #[test]
    fn under_examples() {
        assert!(is_under(b"a/b", b"a"));
        assert!(is_under(b"a/b/c", b"a"));
        assert!(!is_under(b"a", b"a"));
        assert!(!is_under(b"ab", b"a"));
        assert!(!is_under(b"a-b/c", b"a"));
        assert!(!is_under(b"a", b"a/b"));
        assert!(is_under(b"a", b""));
        assert!(!is_under(b"", b""));
        assert!(is_at_or_under(b"", b""));
        assert!(is_at_or_under(b"a", b"a"));
        assert!(is_at_or_under(b"x/y", b""));
        assert!(!is_at_or_under(b"ab", b"a"));
    }

    /// The components of a relative path: none for the root (the empty
    /// path), else the `/`-separated pieces (empty ones included).
    fn comps(p: &[u8]) -> Vec<&[u8]> {
        if p.is_empty() {
            Vec::new()
        } else {
            p.split(|&c| c == b'/').collect()
        }
    }

    /// Bytes drawn mostly from `a`, `b` and `/`, so that prefixes, siblings
    /// and nesting come up often.
    fn path_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![Just(b'a'), Just(b'b'), Just(b'/'), Just(b'-'), any::<u8>()],
            0..8,
        )
    }

    fn component() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'-')], 1..4)
    }

    proptest! {
        #[test]
        fn under_agrees_with_components(p in path_bytes(), d in path_bytes()) {
            let (pc, dc) = (comps(&p), comps(&d));
            let proper_prefix = pc.len() > dc.len() && pc[..dc.len()] == dc[..];
            prop_assert_eq!(is_under(&p, &d), proper_prefix);
            prop_assert_eq!(is_at_or_under(&p, &d), proper_prefix || pc == dc);
        }

        #[test]
        fn joined_child_is_under(d in path_bytes(), x in component()) {
            let child = join(&d, &x);
            prop_assert!(is_under(&child, &d));
            prop_assert!(is_at_or_under(&child, &d));
            prop_assert!(!is_under(&d, &child));
        }

        #[test]
        fn sibling_with_shared_prefix_is_not_under(d in component(), x in component()) {
            let mut sibling = d.clone();
            sibling.extend_from_slice(&x);
            prop_assert!(!is_under(&sibling, &d));
            prop_assert!(!is_at_or_under(&sibling, &d));
            prop_assert!(!is_under(&join(&sibling, b"c"), &d));
        }

        #[test]
        fn nothing_is_under_itself(p in path_bytes()) {
            prop_assert!(!is_under(&p, &p));
            prop_assert!(is_at_or_under(&p, &p));
        }
    }
}
