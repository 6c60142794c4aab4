//! The off-site replica: a compact, encrypted copy of the repository's
//! history on object storage (docs/FORMAT.md, "Remote repository").
//!
//! Layers, bottom up: [`backend`] moves named byte strings to and from a
//! store (S3 or a folder) and knows nothing of the format; [`crypto`]
//! (master key, key files, sealing, keyed ids), [`chunk`] (content-defined
//! chunking), [`pack`], [`index`] and [`format`] (config, snapshot commits)
//! are the pure format, tested on bytes; the repository, push, pull and
//! check above them put the two together ([`subset`]: which packs a
//! rolling `verify --read-data-subset` reads, pure; [`objlock`]: S3
//! Object Lock periods and retention, pure, the requests being the
//! backend's; [`locks`]: `remote extend-locks` and the lock check of
//! `verify --remote`). [`cache`] keeps a remote's index files, commits
//! and tree packs on the local disk; only the repository uses it.

pub mod backend;
pub mod cache;
pub mod check;
pub mod chunk;
pub mod crypto;
pub mod format;
pub mod index;
pub mod limit;
pub mod lock;
pub mod locks;
pub mod objlock;
pub mod pack;
pub mod prune;
pub mod pull;
pub mod push;
pub mod repo;
pub mod schedule;
pub mod subset;

/// Why bytes read from a remote could not be decoded. The layer above
/// names the remote object it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Authentication failed: wrong key or damaged bytes.
    #[error("authentication failed (the bytes were damaged or written with another key)")]
    Auth,
    /// Shorter than its framing says.
    #[error("truncated: {0}")]
    Truncated(String),
    /// Authenticated but not decodable, or inconsistent.
    #[error("undecodable: {0}")]
    Decode(String),
    /// Written by a newer (or unknown) format version.
    #[error("format version {found} (this trove reads up to {supported})")]
    Version { found: u32, supported: u32 },
    /// Not this kind of file at all (wrong magic).
    #[error("not a {0}")]
    Magic(&'static str),
}

pub type FormatResult<T> = std::result::Result<T, FormatError>;
