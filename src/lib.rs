//! trove: a deterministic, content-addressed backup engine.
//!
//! Data flows through the modules in this order:
//! [`config`] (what to back up) → [`scan`] (what is there) → [`store::objects`]
//! (hash, and store new contents once) → [`plan`] (pure: one decision per
//! path) → [`store::tree`] / [`store::snapshot`] (the Merkle snapshot, the
//! commit point) → [`browse`] (pure: the browsable layout of a snapshot) →
//! [`materialize`] (hardlinks on disk). [`backup`] runs that sequence;
//! [`store::lock`] keeps it to one writer; [`log`] writes the audit trail.
//! The command line lives in [`cli`], which only parses and prints.

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
