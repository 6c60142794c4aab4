//! The checks behind the fuzz targets in `fuzz/` (one function per decoder
//! of untrusted bytes), kept in the library so that `tests/fuzz_corpus.rs`
//! replays the saved corpus and every crash input through exactly the same
//! code on every `cargo test`.
//!
//! Each function must never panic on any input, except where an assertion
//! fails: whatever decodes must encode again and decode to the same value.

use crate::model::{History, Leaf, Meta};
use crate::repo::snapshot;
use crate::repo::tree::{self, TreeLeaf};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use std::path::Path;

const PATH: &str = "fuzz-input";

fn tree_round_trip<L, D>(payload: &[u8])
where
    L: TreeLeaf + Serialize + PartialEq + Debug,
    D: DeserializeOwned + Serialize + PartialEq + Debug,
{
    let p = Path::new(PATH);
    if let Ok(t) = tree::decode_tree::<L, D>(payload, p) {
        let enc = match tree::encode_tree(&t) {
            Ok(e) => e,
            Err(e) => panic!("a decoded tree does not encode: {e}"),
        };
        match tree::decode_tree::<L, D>(&enc, p) {
            Ok(t2) => assert_eq!(t, t2, "decode(encode(tree)) differs"),
            Err(e) => panic!("an encoded tree does not decode: {e}"),
        }
    }
}

/// Source tree objects, framed (as stored) and as bare payloads.
pub fn tree_source(data: &[u8]) {
    if let Ok(u) = tree::unframe_tree(data, Path::new(PATH)) {
        if u.version == tree::TREE_VERSION {
            tree_round_trip::<Leaf, Meta>(&u.payload);
        } else {
            let _ = tree::decode_tree_in::<Leaf, Meta>(u.version, &u.payload, Path::new(PATH));
        }
    }
    tree_round_trip::<Leaf, Meta>(data);
}

/// Archive tree objects, framed and bare.
pub fn tree_archive(data: &[u8]) {
    if let Ok(u) = tree::unframe_tree(data, Path::new(PATH)) {
        if u.version == tree::TREE_VERSION {
            tree_round_trip::<History, ()>(&u.payload);
        } else {
            let _ = tree::decode_tree_in::<History, ()>(u.version, &u.payload, Path::new(PATH));
        }
    }
    tree_round_trip::<History, ()>(data);
}

/// Snapshot records (`snapshots/<id>`).
pub fn snapshot_record(data: &[u8]) {
    let p = Path::new(PATH);
    if let Ok(r) = snapshot::decode(data, p) {
        let mut again = snapshot::SNAPSHOT_MAGIC.to_vec();
        again.push(snapshot::SNAPSHOT_VERSION);
        match snapshot::encode(&r) {
            Ok(e) => again.extend(e),
            Err(e) => panic!("a decoded record does not encode: {e}"),
        }
        match snapshot::decode(&again, p) {
            Ok(r2) => assert_eq!(r, r2, "decode(encode(record)) differs"),
            Err(e) => panic!("an encoded record does not decode: {e}"),
        }
    }
}

/// The repository config (`.trove/config`).
pub fn repo_config(data: &[u8]) {
    let p = Path::new(PATH);
    if let Ok(c) = crate::local::RepoConfig::parse(data, p) {
        let json = match serde_json::to_vec(&c) {
            Ok(j) => j,
            Err(e) => panic!("a parsed config does not serialise: {e}"),
        };
        match crate::local::RepoConfig::parse(&json, p) {
            Ok(c2) => assert_eq!(c, c2, "parse(write(config)) differs"),
            Err(e) => panic!("a written config does not parse: {e}"),
        }
    }
}

/// The stat cache (`cache/stat-v2`).
pub fn stat_cache(data: &[u8]) {
    if let Some(f) = crate::local::cache::decode(data) {
        let enc = match crate::local::cache::encode(&f) {
            Ok(e) => e,
            Err(e) => panic!("a decoded cache does not encode: {e}"),
        };
        assert_eq!(
            crate::local::cache::decode(&enc),
            Some(f),
            "decode(encode(cache)) differs"
        );
    }
}

/// `config.json` (paths in it resolve against a folder that does not
/// exist, so nothing on this machine is touched).
pub fn config_json(data: &[u8]) {
    let _ =
        crate::config::LoadedConfig::parse(data, Path::new("/nonexistent/trove-fuzz/config.json"));
}

/// Tree packs (`packs/<hex>.pack`, format 2): the index decoder and the
/// rebuild by scanning never panic; a pack that decodes is exactly the
/// encoding of its trees (the format is canonical), and a scan of its
/// entries finds the same index.
pub fn tree_pack(data: &[u8]) {
    use crate::local::pack;
    let (scanned, _) = pack::scan_bytes(data);
    for e in &scanned {
        let (lo, hi) = (e.offset as usize, e.end() as usize);
        if let Some(raw) = data.get(lo..hi) {
            if pack::entry_bytes(e, raw).is_err() {
                panic!("a scanned entry does not read back");
            }
        }
    }
    if let Ok(entries) = pack::parse(data) {
        let mut trees = Vec::with_capacity(entries.len());
        for e in &entries {
            let raw = &data[e.offset as usize..e.end() as usize];
            match pack::entry_bytes(e, raw) {
                Ok(b) => trees.push((e.id, b)),
                // A sound index over a damaged entry: refused, as it must be.
                Err(_) => return,
            }
        }
        match pack::encode(&trees) {
            Ok(again) => assert_eq!(again, data, "encode(parse(pack)) differs"),
            Err(err) => panic!("a decoded pack does not encode: {err}"),
        }
        assert_eq!(scanned, entries, "the scan and the index disagree");
    }
}

/// A fuzz target's check.
pub type Target = fn(&[u8]);

/// Every target by name, for the corpus replay.
pub const TARGETS: &[(&str, Target)] = &[
    ("tree_source", tree_source),
    ("tree_archive", tree_archive),
    ("snapshot_record", snapshot_record),
    ("repo_config", repo_config),
    ("stat_cache", stat_cache),
    ("config_json", config_json),
    ("tree_pack", tree_pack),
];
