//! The browsable tree at the backup root: what a snapshot looks like as
//! folders (latest files at the top, `versions/`, `_duplicates/`,
//! `_deleted/`), and putting that on disk with hardlinks to the local
//! store's objects.
//!
//! - [`render`]: pure — a snapshot's listing and archive → the entries
//!   of the tree, in path order;
//! - [`apply`]: the [`apply::Materializer`] that writes entries on disk
//!   (through [`crate::rootdir`], never following a link);
//! - [`update`]: from the snapshot the tree shows to the next (by
//!   difference, or whole after a crash), and its marker;
//! - [`check`]: `verify`'s comparison of the tree on disk with a rendering.
//!
//! Only the local repository has a browsable tree (it hardlinks
//! `local::LocalRepo::object_path`); nothing here writes into the store.

pub mod apply;
pub mod check;
pub mod render;
pub mod update;
