//! Architecture check (ARCHITECTURE.md): the modules of this crate import each other
//! without a new cycle (`tribes_testkit::modules` reads every `crate::` path of `src/`).

/// The cycles `tribes-sessions` has today, by the arrow that closes each (issue 18 lists
/// them): `persist` <-> `persistence`, `store` -> `manager` -> `store`, and `store` ->
/// `session` -> `persist` -> `store`.
const KNOWN: &[(&str, &str)] = &[
    // persistence.rs: `use crate::persist::StoreMode;`
    ("persistence", "persist"),
    // store/tower_bridge.rs: `use crate::{PRINCIPAL_ATTRIBUTE, Session, SessionId, SessionManager};`
    ("store", "manager"),
    ("store", "session"),
];

#[test]
fn no_module_imports_itself_through_others() {
    tribes_testkit::modules::assert_no_cycles_except(env!("CARGO_MANIFEST_DIR"), KNOWN);
}
