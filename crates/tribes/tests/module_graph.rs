//! Architecture check (ARCHITECTURE.md): the modules of this crate import each other
//! without a new cycle (`tribes_testkit::modules` reads every `crate::` path of `src/`).

/// The cycles `tribes` has today, by the arrow that closes each (issue 18 lists them):
/// `handshake` <-> `seal` and `handshake` <-> `wire`, and `membership` -> `gate`/`stats`
/// -> `membership`.
const KNOWN: &[(&str, &str)] = &[
    // seal.rs: `snow::Builder::new(crate::handshake::PROTOCOL…)`
    ("seal", "handshake"),
    // wire.rs: `use crate::handshake::SessionKeys;`
    ("wire", "handshake"),
    // stats.rs: `use crate::membership::CandidateStatus;`
    ("stats", "membership"),
];

#[test]
fn no_module_imports_itself_through_others() {
    tribes_testkit::modules::assert_no_cycles_except(env!("CARGO_MANIFEST_DIR"), KNOWN);
}
