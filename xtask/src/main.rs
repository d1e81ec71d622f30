//! `cargo xtask`: the project's automation (see the README).
//!
//! - `cargo xtask demo`: a three-node `tribes-demo` cluster on loopback (and nginx in
//!   front when it is installed); Ctrl-C stops everything.
//! - `cargo xtask test [--skip SUITE,...] [--quick]`: everything CI runs. First the setup
//!   (`setup.rs`): each tool the tests need is found, or installed (root with apt-get,
//!   `cargo install`), or the run stops naming it and the command that installs it. Then
//!   fmt check, clippy `-D warnings`, every test with cargo-nextest, the fuzz targets for
//!   45 s each, doc tests, docs and the publish dry run. `--skip` leaves named suites out
//!   (and needs none of their tools); the summary at the end lists what was left out.
//! - `cargo xtask api [--bless]`: the public API of the three published crates against the
//!   baseline committed in `api/` (part of `test`; `--bless` rewrites the baseline).
//! - `cargo xtask setup`: install what the tests and the benchmarks need, run nothing.
//! - `cargo xtask fuzz [--seconds N]`: the cargo-fuzz targets (docs/fuzzing.md).
//! - `cargo xtask bench transport|sessions|http|stores`: benchmarks; results in `benches/results/`.

mod api;
#[cfg(test)]
mod architecture;
mod bench_http;
mod bench_stores;
mod demo;
mod fuzz;
mod perf;
#[cfg(test)]
mod readme;
mod setup;

use std::process::{Command, ExitCode};

const HELP: &str = "\
cargo xtask <command>

commands:
  demo               start a three-node tribes-demo cluster on loopback (nginx in front if installed)
  faults             the fault matrix over real tribes-demo processes -> benches/results/faults.md
  test [--skip SUITE,...] [--quick]
                     what CI runs: installs what the tests need (as root with apt-get; otherwise names
                     each missing tool and its install command and stops), then fmt check, clippy
                     -D warnings, all tests (nextest), fuzzing (45 s a target), doc tests, the public-API
                     baseline (`api`), publish dry run.
                     --skip leaves out suites: browser, nginx, netns, stores, promtool, fuzz;
                     --quick leaves out all of them; the summary lists what was left out
  api [--bless]      the public API of tribes, tribes-sessions and tribes-axum (rustdoc JSON through the
                     public-api crate) against the baseline in api/*.txt; fails listing every added and
                     removed item; --bless rewrites the baseline. Part of `test`
  setup              install what the tests and the benchmarks need (nginx, chromium, nftables,
                     promtool, PostgreSQL, Redis, wrk, cargo-nextest, cargo-fuzz), run nothing
  sim [--seeds N] [--from M]
                     the deterministic simulation over seeds M..M+N (default 0, 2000), release build;
                     fails naming each failing seed and how to replay it
  fuzz [--seconds N] [--seeds] [TARGET...]
                     run each cargo-fuzz target for N seconds (default 60); --seeds rewrites the seeds
  bench transport    two channels on loopback vs a raw tokio TCP baseline -> benches/results/transport.md
  bench sessions     state transfer, deltas, memory and wire bytes per session -> benches/results/sessions.md
  bench http         wrk on the counter: bare axum, tower-sessions, tribes-demo 1 and 3 nodes -> benches/results/http.md
  bench http --flamegraph
                     flame graphs of nodes a and b under the three-node async load
                     -> benches/results/flame-3n-async-{a,b}.svg
  bench stores       wrk on the counter over Redis and PostgreSQL: tower-sessions' stores vs tribes shared,
                     write-through, write-behind -> benches/results/stores.md
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo::run(),
        Some("test") => test(&args[1..]),
        Some("setup") => setup(),
        Some("api") => api::main(&args[1..]),
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

/// `cargo xtask setup`: install everything the tests and the benchmarks need.
fn setup() -> Result<(), String> {
    let mut tools = setup::tools_for_test(&[]);
    tools.extend(setup::BENCH.iter().map(|t| (None, *t)));
    setup::ensure(&tools)
}

/// Start PostgreSQL and Redis (standalone and cluster) for the store tests and
/// return their URLs as environment variables; an error when they do not start.
fn test_services() -> Result<Vec<(String, String)>, String> {
    let root = demo::root();
    let dir = demo::target_dir().join("test-services");
    let script = root.join("scripts/test-services.sh");
    eprintln!("xtask: starting PostgreSQL and Redis with {}", script.display());
    let started = Command::new("bash").arg(&script).arg("start").arg(&dir).status();
    if !matches!(started, Ok(s) if s.success()) {
        return Err(format!(
            "the store servers did not start ({started:?}): see the lines above, or leave the store tests out with --skip stores"
        ));
    }
    let env = std::fs::read_to_string(dir.join("env")).map_err(|e| e.to_string())?;
    Ok(env
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect())
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

/// `cargo xtask test [--skip SUITE,...] [--quick]`: set the machine up, then run everything;
/// the last lines say what was left out.
fn test(args: &[String]) -> Result<(), String> {
    let mut skipped: Vec<&'static setup::Suite> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--skip" => {
                let list = it.next().ok_or("--skip needs suite names, e.g. --skip browser,nginx")?;
                for s in setup::parse_skip(list)? {
                    if !skipped.iter().any(|k| k.name == s.name) {
                        skipped.push(s);
                    }
                }
            }
            "--quick" => skipped = setup::SUITES.iter().collect(),
            other => {
                return Err(format!(
                    "unknown argument {other}: cargo xtask test [--skip SUITE,...] [--quick]"
                ));
            }
        }
    }
    let result = setup::ensure(&setup::tools_for_test(&skipped)).and_then(|()| test_all(&skipped));
    eprintln!();
    match &result {
        Ok(()) => eprintln!("xtask test: passed"),
        Err(e) => eprintln!("xtask test: FAILED: {e}"),
    }
    if skipped.is_empty() {
        eprintln!("xtask test: nothing left out");
    } else {
        eprintln!("xtask test: left out, so not tested in this run:");
        for s in &skipped {
            eprintln!("  --skip {}: {}", s.name, s.what);
        }
    }
    result
}

fn test_all(skipped: &[&setup::Suite]) -> Result<(), String> {
    let skips = |name: &str| skipped.iter().any(|s| s.name == name);
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
    let services = if skips("stores") { Vec::new() } else { test_services()? };
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
    let left_out: Vec<&str> = skipped.iter().filter_map(|s| s.tests).collect();
    let filter = format!("not ({})", left_out.join(" | "));
    let mut nextest = vec!["nextest", "run", "--workspace", "--all-features", "--no-fail-fast"];
    if !left_out.is_empty() {
        nextest.extend(["-E", &filter]);
    }
    with_services("cargo", &nextest)?;
    // The decoders under libFuzzer, a bounded time each (the setup installed cargo-fuzz).
    if !skips("fuzz") {
        fuzz::main(&["--seconds".into(), fuzz::TEST_SECONDS.to_string()])?;
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
    // Semver discipline: any change to the public API is a reviewed change of api/*.txt.
    api::main(&[])?;
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
    )?;
    for krate in PUBLISHED {
        package_has_licenses(krate)?;
    }
    Ok(())
}

/// The crates published to crates.io.
const PUBLISHED: [&str; 3] = ["tribes", "tribes-sessions", "tribes-axum"];

/// The files every published crate's package must contain (the `MIT OR Apache-2.0` texts).
const LICENSE_FILES: [&str; 2] = ["LICENSE-MIT", "LICENSE-APACHE"];

/// `cargo package --list -p KRATE` names both license files.
fn package_has_licenses(krate: &str) -> Result<(), String> {
    eprintln!("xtask: running cargo package --list -p {krate}");
    let out = Command::new("cargo")
        .args(["package", "--list", "--allow-dirty", "-p", krate])
        .output()
        .map_err(|e| format!("cannot run cargo package: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`cargo package --list -p {krate}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let missing = missing_license_files(&String::from_utf8_lossy(&out.stdout));
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the package of {krate} lacks {}: copy them from the repository's root into crates/{krate}/",
            missing.join(" and ")
        ))
    }
}

/// The license files a `cargo package --list` output (one path a line) lacks.
fn missing_license_files(list: &str) -> Vec<&'static str> {
    LICENSE_FILES
        .into_iter()
        .filter(|f| !list.lines().any(|l| l.trim() == *f))
        .collect()
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
        Some("http") => {
            let flamegraph = match args.get(1).map(String::as_str) {
                None => false,
                Some("--flamegraph") => true,
                Some(other) => return Err(format!("bench http takes --flamegraph only, not {other}")),
            };
            bench_tools().and_then(|()| bench_http::run(flamegraph))
        }
        Some("stores") => bench_tools().and_then(|()| bench_stores::run()),
        Some(which) => Err(format!("no benchmark named {which}\n{HELP}")),
        None => Err(format!("name a benchmark\n{HELP}")),
    }
}

/// wrk for the HTTP benchmarks, installed when missing (see `setup`).
fn bench_tools() -> Result<(), String> {
    let tools: Vec<_> = setup::BENCH.iter().map(|t| (None, *t)).collect();
    setup::ensure(&tools)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_list_without_a_license_file_is_caught() {
        let both = "Cargo.toml\nLICENSE-APACHE\nLICENSE-MIT\nsrc/lib.rs\n";
        assert!(missing_license_files(both).is_empty());
        assert_eq!(missing_license_files("Cargo.toml\nLICENSE-MIT\n"), ["LICENSE-APACHE"]);
        // A file of that name deeper in the tree is not the crate's license.
        assert_eq!(
            missing_license_files("docs/LICENSE-MIT\nLICENSE-APACHE\n"),
            ["LICENSE-MIT"]
        );
    }
}
