//! Architecture check (ARCHITECTURE.md): the modules of this crate import each other
//! without a cycle (`tribes_testkit::modules` reads every `crate::` path of `src/`).

#[test]
fn no_module_imports_itself_through_others() {
    tribes_testkit::modules::assert_no_cycles(env!("CARGO_MANIFEST_DIR"));
}
