//! The repository boundary: what every reader and writer of a repository
//! may ask of it, whatever holds it. Formats (trees, snapshot records) are
//! encoded and decoded here, over the traits; where the bytes live is the
//! implementation's business ([`crate::local`] for `.trove/`,
//! [`memory`] for tests).

pub mod snapshot;
pub mod tree;

/// Which content-addressed store a digest lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Object,
    Tree,
}
