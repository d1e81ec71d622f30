#![no_main]
//! See `tribes::fuzzing::handshake_offer` and docs/fuzzing.md.

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: tribes_fuzz::write_seeds_if_asked(tribes::fuzzing::seed_handshakes),
    |data: &[u8]| tribes_fuzz::run(data, tribes::fuzzing::handshake_offer)
);
