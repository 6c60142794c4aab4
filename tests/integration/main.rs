//! Integration tests: every test runs the real `trove` binary against a
//! temporary source and backup root and checks what it left on disk.

mod common;
mod damage;

mod change_detection;
mod cli;
mod config_errors;
mod crash;
mod determinism;
mod emlink;
mod example;
mod filesystems;
mod inspect;
mod lock;
mod materialize;
mod odd_entries;
mod recovery;
mod restore;
mod retention;
mod verify;
mod walkthrough;
