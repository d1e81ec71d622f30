//! `cargo xtask`: the project's automation (see the README).
//!
//! - `cargo xtask demo`: a three-node `tribes-demo` cluster on loopback (and nginx in
//!   front when it is installed); Ctrl-C stops everything.
//! - `cargo xtask test`: everything CI runs: fmt check, clippy `-D warnings`, every
//!   test with cargo-nextest (plain `cargo test` where nextest is missing), doc tests.
//! - `cargo xtask bench transport|sessions|http`: benchmarks; results in `benches/results/`.

mod bench_http;
mod demo;

use std::process::{Command, ExitCode};

const HELP: &str = "\
cargo xtask <command>

commands:
  demo               start a three-node tribes-demo cluster on loopback (nginx in front if installed)
  test               fmt check, clippy -D warnings, all tests (nextest), doc tests: what CI runs
  bench transport    two channels on loopback vs a raw tokio TCP baseline -> benches/results/transport.md
  bench sessions     state transfer, deltas, memory and wire bytes per session -> benches/results/sessions.md
  bench http         wrk on the counter: bare axum, tower-sessions, tribes-demo 1 and 3 nodes -> benches/results/http.md
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo::run(),
        Some("test") => test(),
        Some("bench") => bench(&args[1..]),
        _ => {
            print!("{HELP}");
            return if args.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn run(program: &str, args: &[&str]) -> Result<(), String> {
    eprintln!("xtask: running {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed with {status}", args.join(" ")))
    }
}

fn has_nextest() -> bool {
    Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn test() -> Result<(), String> {
    run("cargo", &["fmt", "--all", "--", "--check"])?;
    run(
        "cargo",
        &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"],
    )?;
    if has_nextest() {
        run("cargo", &["nextest", "run", "--workspace", "--no-fail-fast"])?;
    } else {
        run("cargo", &["test", "--workspace", "--no-fail-fast"])?;
    }
    run("cargo", &["test", "--workspace", "--doc"])
}

fn bench(args: &[String]) -> Result<(), String> {
    let example = |package: &str, name: &str| {
        run(
            "cargo",
            &["run", "--release", "--quiet", "-p", package, "--example", name],
        )
    };
    match args.first().map(String::as_str) {
        Some("transport") => example("tribes", "bench_transport"),
        Some("sessions") => example("tribes-sessions", "bench_sessions"),
        Some("http") => bench_http::run(),
        Some(which) => Err(format!("no benchmark named {which}\n{HELP}")),
        None => Err(format!("name a benchmark\n{HELP}")),
    }
}
