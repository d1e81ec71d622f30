//! `cargo xtask`: the project's automation (see the README).
//!
//! - `cargo xtask demo`: a three-node `tribes-demo` cluster on loopback (and nginx in
//!   front when it is installed); Ctrl-C stops everything.
//! - `cargo xtask test`: everything CI runs: fmt check, clippy `-D warnings`, every
//!   test with cargo-nextest (plain `cargo test` where nextest is missing), the fuzz
//!   targets for 45 s each, doc tests.
//! - `cargo xtask fuzz [--seconds N]`: the cargo-fuzz targets (docs/fuzzing.md).
//! - `cargo xtask bench transport|sessions|http|stores`: benchmarks; results in `benches/results/`.

mod bench_http;
mod bench_stores;
mod demo;
mod fuzz;

use std::process::{Command, ExitCode};

const HELP: &str = "\
cargo xtask <command>

commands:
  demo               start a three-node tribes-demo cluster on loopback (nginx in front if installed)
  faults             the fault matrix over real tribes-demo processes -> benches/results/faults.md
  test               fmt check, clippy -D warnings, all tests (nextest), fuzzing (45 s a target), doc tests:
                     what CI runs
  sim [--seeds N] [--from M]
                     the deterministic simulation over seeds M..M+N (default 0, 2000), release build;
                     fails naming each failing seed and how to replay it
  fuzz [--seconds N] [--seeds] [TARGET...]
                     run each cargo-fuzz target for N seconds (default 60); --seeds rewrites the seeds
  bench transport    two channels on loopback vs a raw tokio TCP baseline -> benches/results/transport.md
  bench sessions     state transfer, deltas, memory and wire bytes per session -> benches/results/sessions.md
  bench http         wrk on the counter: bare axum, tower-sessions, tribes-demo 1 and 3 nodes -> benches/results/http.md
  bench stores       wrk on the counter over Redis and PostgreSQL: tower-sessions' stores vs tribes shared,
                     write-through, write-behind -> benches/results/stores.md
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo::run(),
        Some("test") => test(),
        Some("fuzz") => fuzz::main(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("faults") => faults(),
        Some("sim") => sim(&args[1..]),
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

/// Start PostgreSQL and Redis (standalone and cluster) for the store tests and
/// return their URLs as environment variables. Without them (not root, no apt),
/// the store tests say they are skipped, except under `CI`, where they fail.
fn test_services() -> Vec<(String, String)> {
    let root = demo::root();
    let dir = demo::target_dir().join("test-services");
    let script = root.join("scripts/test-services.sh");
    eprintln!("xtask: starting PostgreSQL and Redis with {}", script.display());
    let started = Command::new("bash").arg(&script).arg("start").arg(&dir).status();
    if !matches!(started, Ok(s) if s.success()) {
        eprintln!("xtask: the store servers did not start ({started:?}); the store tests will fail");
        return Vec::new();
    }
    let env = std::fs::read_to_string(dir.join("env")).unwrap_or_default();
    env.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

/// `cargo xtask sim [--seeds N] [--from M]`: long simulation runs (CI runs 300 seeds).
fn sim(args: &[String]) -> Result<(), String> {
    let mut seeds: u64 = 2_000;
    let mut from: u64 = 0;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut number = |flag: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{flag} needs a number"))
        };
        match a.as_str() {
            "--seeds" => seeds = number("--seeds")?,
            "--from" => from = number("--from")?,
            other => {
                return Err(format!(
                    "unknown argument {other}: cargo xtask sim [--seeds N] [--from M]"
                ));
            }
        }
    }
    eprintln!("xtask: simulating seeds {from}..{}", from + seeds);
    let status = Command::new("cargo")
        .args([
            "test",
            "--release",
            "-p",
            "tribes-sessions",
            "--lib",
            "sim::tests::sim_survey",
            "--",
            "--ignored",
            "--nocapture",
        ])
        .env("TRIBES_SIM_SURVEY", format!("{from}..{}", from + seeds))
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "the simulation failed on some of seeds {from}..{}",
            from + seeds
        ))
    }
}

fn test() -> Result<(), String> {
    run("cargo", &["fmt", "--all", "--", "--check"])?;
    run(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    let services = test_services();
    let with_services = |program: &str, args: &[&str]| -> Result<(), String> {
        eprintln!("xtask: running {program} {}", args.join(" "));
        let status = Command::new(program)
            .args(args)
            .envs(services.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .status()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("`{program} {}` failed with {status}", args.join(" ")))
        }
    };
    if has_nextest() {
        with_services(
            "cargo",
            &["nextest", "run", "--workspace", "--all-features", "--no-fail-fast"],
        )?;
    } else {
        with_services("cargo", &["test", "--workspace", "--all-features", "--no-fail-fast"])?;
    }
    // The decoders under libFuzzer, a bounded time each (cargo-fuzz is installed by .ci/run).
    if fuzz::installed() {
        fuzz::main(&["--seconds".into(), fuzz::TEST_SECONDS.to_string()])?;
    } else if std::env::var_os("CI").is_some() {
        return Err("cargo-fuzz is missing (CI is set): cargo install cargo-fuzz --locked".into());
    } else {
        eprintln!("xtask: cargo-fuzz is not installed, fuzzing skipped (cargo install cargo-fuzz --locked)");
    }
    with_services("cargo", &["test", "--workspace", "--all-features", "--doc"])?;
    // crates.io readiness: docs without warnings, and the three crates package and
    // pass the registry's checks in dependency order (the build itself ran above).
    eprintln!("xtask: running cargo doc with RUSTDOCFLAGS=-D warnings");
    let doc = Command::new("cargo")
        .args([
            "doc",
            "--no-deps",
            "--all-features",
            "-p",
            "tribes",
            "-p",
            "tribes-sessions",
            "-p",
            "tribes-axum",
        ])
        .env("RUSTDOCFLAGS", "-D warnings")
        .status()
        .map_err(|e| format!("cannot run cargo doc: {e}"))?;
    if !doc.success() {
        return Err("`cargo doc` found warnings in the public docs".into());
    }
    run(
        "cargo",
        &[
            "publish",
            "--dry-run",
            "--no-verify",
            "--allow-dirty",
            "-p",
            "tribes",
            "-p",
            "tribes-sessions",
            "-p",
            "tribes-axum",
        ],
    )
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
        Some("stores") => bench_stores::run(),
        Some(which) => Err(format!("no benchmark named {which}\n{HELP}")),
        None => Err(format!("name a benchmark\n{HELP}")),
    }
}

/// Run the fault-matrix tests (they are part of `test` too) and gather their rows.
fn faults() -> Result<(), String> {
    let rows_dir = demo::target_dir().join("faults");
    let _ = std::fs::remove_dir_all(&rows_dir);
    let result = run(
        "cargo",
        &[
            "test",
            "-p",
            "tribes-demo",
            "--test",
            "faults",
            "--test",
            "partition",
            "--",
            "--test-threads",
            "1",
        ],
    );
    let mut rows: Vec<String> = std::fs::read_dir(&rows_dir)
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    rows.sort();
    let table = format!(
        "# Fault matrix\n\nReal `tribes-demo` processes under load from real HTTP clients (one cookie jar per user, each\nwriting an increasing counter into its session and failing over to the next node on an error), one\nrow per fault. Every acknowledged write (a 204) is read back from the surviving nodes at the end.\nMade by `cargo xtask faults`; each row is also a test in `cargo xtask test`.\n\n| cell | fault | load held | written | lost | notes |\n|---|---|---|---|---|---|\n{}",
        rows.concat()
    );
    let out = demo::root().join("benches/results/faults.md");
    std::fs::write(&out, &table).map_err(|e| e.to_string())?;
    println!("{table}\nwritten to {}", out.display());
    result
}
