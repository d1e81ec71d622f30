#![no_main]
//! See `tribes_sessions::fuzzing::message_decode` and docs/fuzzing.md.

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: tribes_fuzz::write_seeds_if_asked(tribes_sessions::fuzzing::seed_messages),
    |data: &[u8]| tribes_fuzz::run(data, tribes_sessions::fuzzing::message_decode)
);
