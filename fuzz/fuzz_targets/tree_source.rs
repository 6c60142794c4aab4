//! Fuzz target: `trove::fuzzing::tree_source` (no panic on any input; what
//! decodes must round-trip).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    trove::fuzzing::tree_source(data);
});
