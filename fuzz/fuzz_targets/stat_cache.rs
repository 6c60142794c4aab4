//! Fuzz target: `trove::fuzzing::stat_cache` (no panic on any input; what
//! decodes must round-trip).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    trove::fuzzing::stat_cache(data);
});
