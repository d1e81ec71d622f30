#![no_main]
//! See `tribes_axum::fuzzing::cookie_parse` and docs/fuzzing.md.

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: tribes_fuzz::write_seeds_if_asked(tribes_axum::fuzzing::seed_cookies),
    |data: &[u8]| tribes_fuzz::run(data, tribes_axum::fuzzing::cookie_parse)
);
