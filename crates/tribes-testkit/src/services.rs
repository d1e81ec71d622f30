//! PostgreSQL and Redis for the store tests: their URLs come from the environment that
//! `scripts/test-services.sh` writes (and `cargo xtask test` loads).

/// The value of the environment variable `var` (such as `TRIBES_TEST_POSTGRES_URL`).
///
/// # Panics
///
/// When it is unset or empty, naming what to start: a test that cannot run must fail,
/// never pass.
pub fn service_env(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{var} is not set: run `scripts/test-services.sh target/test-services && . target/test-services/env` before the tests (cargo xtask test does)"
        ),
    }
}
