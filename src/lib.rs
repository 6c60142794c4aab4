//! trove: a deterministic, content-addressed backup engine.
//!
//! Data flows through the modules in this order (docs/DESIGN.md has the
//! picture): [`config`] (what to back up) → [`scan`] (what is there) →
//! [`local::objects`] (hash, and store new contents once) → [`plan`] (pure:
//! one decision per path) → [`repo::tree`] / [`repo::snapshot`] (the
//! Merkle snapshot, the commit point) → [`browsable`] (the browsable tree:
//! [`browsable::render`] pure, [`browsable::apply`] hardlinks on disk).
//! [`backup`] runs that sequence; [`audit`] names its decisions in the log.
//!
//! The repository sits behind one boundary, [`repo`]: the traits
//! `RepoRead`/`RepoWrite` and the formats written over them. [`local`] is
//! the `.trove` implementation (and the only module that knows its
//! layout), [`repo::memory`] an in-memory one for tests. `gc`, `verify`'s
//! store check, `restore` and `inspect` work on any implementation.
//! Below everything: [`model`] (plain data), [`codec`] (framing), [`id`],
//! [`hash`], [`fsutil`], [`rootdir`] and [`sys`] (the only `unsafe`).
//! The command line lives in [`cli`], which only parses, resolves
//! settings, calls and prints.

#![deny(unsafe_code)]
#![warn(clippy::unwrap_used)]

pub mod audit;
pub mod backup;
pub mod browsable;
pub mod cli;
pub mod codec;
pub mod config;
pub mod dupes;
pub mod error;
pub mod fsmeta;
pub mod fsutil;
pub mod fuzzing;
pub mod gc;
pub mod hash;
pub mod id;
pub mod inspect;
pub mod local;
pub mod log;
pub mod mirror;
pub mod model;
pub mod pathbytes;
pub mod plan;
pub mod progress;
pub mod prune;
pub mod remote;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod rootdir;
pub mod scan;
#[allow(unsafe_code)]
pub mod sys;
pub mod verify;
pub mod watch;

pub use error::{Error, Result};
