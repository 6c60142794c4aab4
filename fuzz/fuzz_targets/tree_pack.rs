//! Fuzz target: `trove::fuzzing::tree_pack` (no panic on any input; a pack
//! that decodes is exactly the encoding of its trees, and a scan of its
//! entries agrees with its index).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    trove::fuzzing::tree_pack(data);
});
