//! Fuzz target: `trove::fuzzing::config_json` (no panic on any input; what
//! decodes must round-trip).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    trove::fuzzing::config_json(data);
});
