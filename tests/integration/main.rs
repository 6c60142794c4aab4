//! Integration tests: every test runs the real `trove` binary against a
//! temporary source and backup root and checks what it left on disk.

mod common;
mod damage;
mod damage_matrix;

mod architecture;
mod change_detection;
mod cli;
mod cli_ux;
mod config_errors;
mod crash;
mod determinism;
mod dupes;
mod emlink;
mod example;
mod faults;
mod filesystems;
mod filters;
mod fuzz_corpus;
mod inspect;
mod lock;
mod materialize;
mod metadata;
mod mirror;
mod odd_entries;
mod offsite;
mod offsite_cost;
mod offsite_lock;
mod offsite_prune;
mod offsite_s3;
mod offsite_subset;
mod offsite_writeonly;
mod recovery;
mod remote_backend;
mod restore;
mod retention;
mod s3server;
mod stdin;
mod streaming;
mod trust;
mod trust_paths;
mod trust_retention;
mod trust_snapshots;
mod verify;
mod walkthrough;
mod watch;
