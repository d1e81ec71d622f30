//! `cargo xtask fuzz`: build the cargo-fuzz targets in `fuzz/` and run each for a
//! bounded time on a scratch copy of its committed corpus (see docs/fuzzing.md).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Each target and the largest input libFuzzer may make for it: no larger than what
/// the real code reads (a multicast datagram, a frame header, a session message well
/// inside one frame, an HTTP header line as nginx accepts it by default).
pub(crate) const TARGETS: [(&str, usize); 6] = [
    ("frame_decode", 65_536),
    ("membership_decode", 65_536),
    ("message_decode", 65_536),
    ("cookie_parse", 8_192),
    // A handshake record holds at most one Noise message (65,535 bytes) plus headers.
    ("handshake_offer", 65_546),
    ("handshake_answer", 65_546),
];

/// How every target is built (run and replay need the same, or cargo-fuzz rebuilds):
/// no sanitizer (see `Fuzz::detect`), and 16 codegen units, which build a minute faster
/// on two cores and fuzz as fast (measured) as cargo-fuzz's default of one.
const BUILD: [&str; 4] = ["-s", "none", "--codegen-units", "16"];

/// Seconds per target in `cargo xtask test` (six targets: about five minutes with the build).
pub(crate) const TEST_SECONDS: u64 = 45;

const HELP: &str = "\
cargo xtask fuzz [--seconds N] [--seeds] [TARGET...]

  --seconds N   fuzz each target for N seconds (default 60)
  --seeds       rewrite the seed files (fuzz/corpus/<target>/seed_*) from the real encoders
  TARGET        frame_decode, membership_decode, message_decode, cookie_parse,
                handshake_offer, handshake_answer (default: all)
";

/// How to call cargo-fuzz on this machine.
struct Fuzz {
    toolchain: Option<&'static str>,
    bootstrap: bool,
}

impl Fuzz {
    /// Nightly when rustup has it. Otherwise the default (stable) toolchain with
    /// `RUSTC_BOOTSTRAP=1`: cargo-fuzz passes nightly-only `-Z` flags to rustc for some
    /// options (sanitizers, build-std), which a stable rustc accepts only with it. We
    /// build without a sanitizer (`-s none`), which needs no nightly runtime: the three
    /// crates forbid unsafe code, and ASan would halve the executions per second.
    fn detect() -> Self {
        let nightly = Command::new("rustup")
            .args(["toolchain", "list"])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l.starts_with("nightly"))
            })
            .unwrap_or(false);
        Fuzz {
            toolchain: nightly.then_some("+nightly"),
            bootstrap: !nightly,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("cargo");
        cmd.args(self.toolchain).arg("fuzz").args(args);
        if self.bootstrap {
            cmd.env("RUSTC_BOOTSTRAP", "1");
        }
        cmd.current_dir(crate::demo::root());
        cmd
    }

    fn describe(&self, args: &[&str]) -> String {
        format!(
            "{}cargo {}fuzz {}",
            if self.bootstrap { "RUSTC_BOOTSTRAP=1 " } else { "" },
            self.toolchain.map(|t| format!("{t} ")).unwrap_or_default(),
            args.join(" ")
        )
    }
}

/// Whether `cargo fuzz` is installed.
pub(crate) fn installed() -> bool {
    Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `cargo xtask fuzz ...`
pub(crate) fn main(args: &[String]) -> Result<(), String> {
    let mut seconds = 60;
    let mut seeds = false;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("--seconds needs a number\n{HELP}"))?;
            }
            "--seeds" => seeds = true,
            "-h" | "--help" => {
                print!("{HELP}");
                return Ok(());
            }
            name => match TARGETS.iter().find(|(t, _)| *t == name) {
                Some(target) => targets.push(*target),
                None => return Err(format!("no fuzz target named {name}\n{HELP}")),
            },
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    if !installed() {
        return Err("cargo-fuzz is not installed: cargo install cargo-fuzz --locked".into());
    }
    if seeds {
        write_seeds(&targets)
    } else {
        run(&targets, seconds)
    }
}

fn build(fuzz: &Fuzz) -> Result<(), String> {
    let args = [&["build"], &BUILD[..]].concat();
    eprintln!("xtask: running {}", fuzz.describe(&args));
    let status = fuzz
        .command(&args)
        .status()
        .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed with {status}", fuzz.describe(&args)))
    }
}

fn write_seeds(targets: &[(&str, usize)]) -> Result<(), String> {
    let fuzz = Fuzz::detect();
    build(&fuzz)?;
    for (target, _) in targets {
        let dir = format!("fuzz/corpus/{target}");
        // The target writes its seeds when it starts, then runs every file once.
        let args = [&["run"], &BUILD[..], &[target, &dir, "--", "-runs=0"]].concat();
        eprintln!("xtask: running TRIBES_FUZZ_WRITE_SEEDS={dir} {}", fuzz.describe(&args));
        let status = fuzz
            .command(&args)
            .env("TRIBES_FUZZ_WRITE_SEEDS", crate::demo::root().join(&dir))
            .status()
            .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
        if !status.success() {
            return Err(format!("{target}: a seed does not pass ({status})"));
        }
    }
    Ok(())
}

/// What libFuzzer said at the end of a run.
#[derive(Debug, Default)]
struct Stats {
    runs: String,
    per_second: String,
    coverage: String,
    corpus: String,
    new: String,
    rss: String,
}

fn stats(log: &str) -> Stats {
    let stat = |name: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    // The last status line: "#1906327 DONE cov: 3262 ft: 5846 corp: 1999/228Kb ...".
    let status = log.lines().rev().find(|l| l.starts_with('#') && l.contains("cov: "));
    let field = |name: &str| {
        status
            .and_then(|l| l.split_whitespace().skip_while(|w| *w != name).nth(1))
            .unwrap_or("?")
            .to_string()
    };
    Stats {
        runs: stat("number_of_executed_units"),
        per_second: stat("average_exec_per_sec"),
        coverage: format!("{} edges, {} features", field("cov:"), field("ft:")),
        corpus: field("corp:"),
        new: stat("new_units_added"),
        rss: stat("peak_rss_mb"),
    }
}

fn run(targets: &[(&str, usize)], seconds: u64) -> Result<(), String> {
    let fuzz = Fuzz::detect();
    build(&fuzz)?;
    let root = crate::demo::root();
    let scratch = root.join("fuzz/target/xtask");
    let mut failed = Vec::new();
    let mut table = Vec::new();
    for (target, max_len) in targets {
        // New inputs go to the first corpus directory, a scratch one; the committed
        // corpus is only read, so the working tree stays clean.
        let found = scratch.join("corpus").join(target);
        let _ = std::fs::remove_dir_all(&found);
        std::fs::create_dir_all(&found).map_err(|e| format!("{}: {e}", found.display()))?;
        let log_path = scratch.join(format!("{target}.log"));
        let found_arg = found.display().to_string();
        let committed = format!("fuzz/corpus/{target}");
        let options = [
            format!("-max_total_time={seconds}"),
            format!("-max_len={max_len}"),
            "-timeout=10".to_string(),
            "-rss_limit_mb=2048".to_string(),
            "-print_final_stats=1".to_string(),
        ];
        let mut args = [&["run"], &BUILD[..], &[target, &found_arg, &committed, "--"]].concat();
        args.extend(options.iter().map(String::as_str));
        eprintln!("xtask: fuzzing {target} for {seconds} s: {}", fuzz.describe(&args));
        let log = std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let status = fuzz
            .command(&args)
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .status()
            .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let s = stats(&text);
        eprintln!(
            "xtask: {target}: {} runs, {} exec/s, coverage {}, corpus {} ({} new), peak RSS {} MB",
            s.runs, s.per_second, s.coverage, s.corpus, s.new, s.rss
        );
        table.push((target, s, status.success()));
        if !status.success() {
            // From the panic or the broken limit (the target's own report) on.
            let lines: Vec<&str> = text.lines().collect();
            let markers = [
                "==tribes-fuzz==",
                "panicked at",
                "ERROR: libFuzzer",
                "ERROR: AddressSanitizer",
            ];
            let from = lines
                .iter()
                .position(|l| markers.iter().any(|m| l.contains(m)))
                .unwrap_or(lines.len().saturating_sub(40));
            eprintln!("xtask: {target} FAILED ({status}); from {}:", log_path.display());
            for line in lines.iter().skip(from).take(40) {
                eprintln!("    {line}");
            }
            let artifact = text
                .lines()
                .find_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim().to_string()));
            if let Some(artifact) = &artifact {
                eprintln!(
                    "xtask: replay it with: {}",
                    fuzz.describe(&[&["run"], &BUILD[..], &[target, artifact]].concat())
                );
            }
            failed.push(target.to_string());
        }
    }
    println!("\nfuzzing, {seconds} s per target ({}):", describe_path(&scratch));
    println!("| target | result | runs | exec/s | coverage | corpus |");
    println!("|---|---|---|---|---|---|");
    for (target, s, ok) in &table {
        println!(
            "| {target} | {} | {} | {} | {} | {} |",
            if *ok { "ok" } else { "CRASH" },
            s.runs,
            s.per_second,
            s.coverage,
            s.corpus
        );
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "fuzz targets failed: {} (artifacts in fuzz/artifacts/, see docs/fuzzing.md)",
            failed.join(", ")
        ))
    }
}

fn describe_path(p: &Path) -> String {
    let root: PathBuf = crate::demo::root();
    format!(
        "logs and new inputs in {}",
        p.strip_prefix(&root).unwrap_or(p).display()
    )
}
