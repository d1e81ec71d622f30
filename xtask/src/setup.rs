//! What `cargo xtask test` (and `bench`) needs on the machine, found or installed before
//! anything runs.
//!
//! Each tool has a probe and one way to install it: a Debian package (when we are root
//! and apt-get exists: one `apt-get update`, one `apt-get install`, with a policy-rc.d
//! that keeps packages such as nginx from starting a service), a `cargo install --locked`,
//! or nothing (root itself). What cannot be installed stops the run before any test, with
//! the tool's name, the command that installs it, and the `--skip` that leaves its suite
//! out. The decision is [`plan`], a plain function of what is missing and what this
//! machine allows; [`ensure`] probes, runs the plan, and probes again.

use std::path::Path;
use std::process::Command;

/// How a missing tool gets onto the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Install {
    /// A Debian package (`apt-get install -y PACKAGE`, as root).
    Apt(&'static str),
    /// A crate with a binary (`cargo install --locked CRATE`).
    Cargo(&'static str),
    /// Nothing installs it: the run must be started as root.
    Root,
}

/// How to tell that a tool is there.
#[derive(Clone, Copy, Debug)]
enum Probe {
    /// One of these programs: a name looked up on `PATH` (and in the sbin directories,
    /// which are not on a normal user's `PATH`), or an absolute path.
    Program(&'static [&'static str]),
    /// A cargo subcommand that answers `cargo NAME --version`.
    CargoSubcommand(&'static str),
    /// A PostgreSQL server: `/usr/lib/postgresql/*/bin/initdb`, as scripts/test-services.sh
    /// looks for it.
    PostgresServer,
    /// The effective user is root.
    Root,
}

/// One thing the tests need from the machine.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tool {
    /// The name a person knows it by.
    pub(crate) name: &'static str,
    probe: Probe,
    /// How to get it.
    pub(crate) install: Install,
}

const fn tool(name: &'static str, probe: Probe, install: Install) -> Tool {
    Tool { name, probe, install }
}

/// What every run needs: cargo-nextest. (The C linker that cargo needs came before: without it
/// this program would not have been built.)
const CORE: &[Tool] = &[tool(
    "cargo-nextest",
    Probe::CargoSubcommand("nextest"),
    Install::Cargo("cargo-nextest"),
)];

/// What the HTTP and store benchmarks need.
/// (perf counts the servers' system calls and samples them for the flame graphs.)
pub(crate) const BENCH: &[Tool] = &[
    tool("wrk", Probe::Program(&["wrk"]), Install::Apt("wrk")),
    tool("perf", Probe::Program(&["perf"]), Install::Apt("linux-perf")),
];

/// A group of tests that needs tools of its own, and that `--skip NAME` leaves out.
#[derive(Debug)]
pub(crate) struct Suite {
    /// The name `--skip` takes.
    pub(crate) name: &'static str,
    /// What the suite checks, for the summary.
    pub(crate) what: &'static str,
    /// The tools it needs.
    tools: &'static [Tool],
    /// A nextest filterset that selects its tests; `None` for a step of its own (fuzzing).
    pub(crate) tests: Option<&'static str>,
}

/// Every suite, in the order the summary lists them.
pub(crate) const SUITES: &[Suite] = &[
    Suite {
        name: "browser",
        what: "the headless-Chromium tests (demo page, dashboard)",
        tools: &[tool(
            "chromium",
            Probe::Program(&["/usr/bin/chromium", "/usr/bin/chromium-browser"]),
            Install::Apt("chromium"),
        )],
        tests: Some("binary_id(tribes-demo::browser) | binary_id(tribes-demo::dashboard)"),
    },
    Suite {
        name: "nginx",
        what: "the failover tests through the shipped nginx config",
        tools: &[tool(
            "nginx",
            Probe::Program(&["nginx", "/usr/sbin/nginx", "/usr/local/sbin/nginx"]),
            Install::Apt("nginx-light"),
        )],
        tests: Some("binary_id(tribes-demo::load_balancer) | binary_id(tribes-example-axum-login::failover)"),
    },
    Suite {
        name: "netns",
        what: "the tests in network namespaces (multicast membership, nftables partition)",
        tools: &[
            tool("root", Probe::Root, Install::Root),
            tool("ip", Probe::Program(&["ip"]), Install::Apt("iproute2")),
            tool("nft", Probe::Program(&["nft"]), Install::Apt("nftables")),
        ],
        tests: Some("binary_id(tribes::multicast) | binary_id(tribes-demo::partition)"),
    },
    Suite {
        name: "stores",
        what: "the PostgreSQL and Redis store tests (servers started by scripts/test-services.sh)",
        tools: &[
            tool("postgres", Probe::PostgresServer, Install::Apt("postgresql")),
            tool("psql", Probe::Program(&["psql"]), Install::Apt("postgresql-client")),
            tool(
                "redis-server",
                Probe::Program(&["redis-server"]),
                Install::Apt("redis-server"),
            ),
            tool("redis-cli", Probe::Program(&["redis-cli"]), Install::Apt("redis-tools")),
        ],
        tests: Some("test(/postgres|redis/) | binary_id(tribes-demo::shared_store)"),
    },
    Suite {
        name: "promtool",
        what: "the deploy files' test (promtool check rules on the alerts)",
        tools: &[tool(
            "promtool",
            Probe::Program(&["promtool"]),
            Install::Apt("prometheus"),
        )],
        tests: Some("binary_id(tribes-demo::deploy_metrics)"),
    },
    Suite {
        name: "fuzz",
        what: "the cargo-fuzz targets, 45 s each",
        tools: &[tool(
            "cargo-fuzz",
            Probe::CargoSubcommand("fuzz"),
            Install::Cargo("cargo-fuzz"),
        )],
        tests: None,
    },
];

/// The suites named by `--skip a,b` (or all of them for `--quick`), checked against [`SUITES`].
pub(crate) fn parse_skip(list: &str) -> Result<Vec<&'static Suite>, String> {
    let mut out: Vec<&'static Suite> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let suite = SUITES
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("--skip {name}: no suite by that name; the suites are {}", suite_names()))?;
        if !out.iter().any(|s| s.name == suite.name) {
            out.push(suite);
        }
    }
    if out.is_empty() {
        return Err(format!("--skip needs suite names: {}", suite_names()));
    }
    Ok(out)
}

fn suite_names() -> String {
    SUITES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
}

/// The tools a run needs when it leaves out `skipped`: the core, then each suite's.
pub(crate) fn tools_for_test(skipped: &[&Suite]) -> Vec<(Option<&'static str>, Tool)> {
    let mut out: Vec<(Option<&'static str>, Tool)> = CORE.iter().map(|t| (None, *t)).collect();
    for suite in SUITES.iter().filter(|s| !skipped.iter().any(|k| k.name == s.name)) {
        out.extend(suite.tools.iter().map(|t| (Some(suite.name), *t)));
    }
    out
}

/// What this machine allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Machine {
    /// The effective user is root.
    pub(crate) root: bool,
    /// `apt-get` exists.
    pub(crate) apt: bool,
}

/// What to do about the missing tools.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Debian packages for one `apt-get install`.
    pub(crate) apt: Vec<&'static str>,
    /// Crates for `cargo install --locked`, one at a time.
    pub(crate) cargo: Vec<&'static str>,
    /// What cannot be installed here, each with the way to get it.
    pub(crate) blocked: Vec<String>,
}

/// Decide, for each missing tool (with the suite that needs it, `None` for the core), how it
/// gets installed on `machine`, or why it cannot be.
pub(crate) fn plan(missing: &[(Option<&'static str>, Tool)], machine: Machine) -> Plan {
    let mut plan = Plan::default();
    for (suite, tool) in missing {
        let skip = match suite {
            Some(s) => format!(", or leave its tests out with `cargo xtask test --skip {s}`"),
            None => String::new(),
        };
        match tool.install {
            Install::Apt(pkg) if machine.root && machine.apt => {
                if !plan.apt.contains(&pkg) {
                    plan.apt.push(pkg);
                }
            }
            Install::Apt(pkg) if machine.apt => plan.blocked.push(format!(
                "{} is missing: run `sudo apt-get install -y {pkg}` (or run cargo xtask test as root, which installs it){skip}",
                tool.name
            )),
            Install::Apt(pkg) => plan.blocked.push(format!(
                "{} is missing and there is no apt-get: install it with your system's package manager (the Debian package is {pkg}){skip}",
                tool.name
            )),
            Install::Cargo(krate) => {
                if !plan.cargo.contains(&krate) {
                    plan.cargo.push(krate);
                }
            }
            Install::Root => plan.blocked.push(format!(
                "{} is needed (network namespaces need CAP_SYS_ADMIN): run cargo xtask test as root{skip}",
                tool.name
            )),
        }
    }
    plan
}

/// Probe `tools`, install what is missing when this machine allows it, and probe again.
/// `Err` names every tool that is still missing and how to get it; nothing has run then.
pub(crate) fn ensure(tools: &[(Option<&'static str>, Tool)]) -> Result<(), String> {
    let missing: Vec<_> = tools.iter().filter(|(_, t)| !present(t)).copied().collect();
    if missing.is_empty() {
        eprintln!("xtask: setup: every tool is installed ({})", names(tools));
        return Ok(());
    }
    eprintln!("xtask: setup: missing {}", names(&missing));
    let machine = Machine {
        root: is_root(),
        apt: on_path("apt-get"),
    };
    let plan = plan(&missing, machine);
    if !plan.blocked.is_empty() {
        return Err(format!(
            "cannot run the tests on this machine yet:\n  - {}",
            plan.blocked.join("\n  - ")
        ));
    }
    if !plan.apt.is_empty() {
        apt_install(&plan.apt)?;
    }
    for krate in &plan.cargo {
        crate::run("cargo", &["install", "--locked", krate])?;
    }
    let still: Vec<_> = missing.iter().filter(|(_, t)| !present(t)).copied().collect();
    if !still.is_empty() {
        return Err(format!(
            "still missing after installing: {} (installed {:?} and {:?})",
            names(&still),
            plan.apt,
            plan.cargo
        ));
    }
    eprintln!(
        "xtask: setup: installed {} (apt: {:?}, cargo: {:?})",
        names(&missing),
        plan.apt,
        plan.cargo
    );
    Ok(())
}

fn names(tools: &[(Option<&'static str>, Tool)]) -> String {
    tools.iter().map(|(_, t)| t.name).collect::<Vec<_>>().join(", ")
}

/// One `apt-get update`, then one `apt-get install` of `packages`, non-interactive, with a
/// policy-rc.d that stops packages from starting their services (nginx would take port 80,
/// PostgreSQL and Redis their default ports); an existing policy-rc.d is left alone.
fn apt_install(packages: &[&str]) -> Result<(), String> {
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        write_policy(policy).map_err(|e| format!("cannot write {}: {e}", policy.display()))?;
    }
    let result = apt(&["update", "-qq"]).and_then(|()| {
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend_from_slice(packages);
        apt(&args)
    });
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    result
}

fn write_policy(policy: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(policy, "#!/bin/sh\nexit 101\n")?;
    std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))
}

fn apt(args: &[&str]) -> Result<(), String> {
    eprintln!("xtask: running apt-get {}", args.join(" "));
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`apt-get {}` failed with {status}", args.join(" ")))
    }
}

fn present(tool: &Tool) -> bool {
    match tool.probe {
        Probe::Program(names) => names.iter().any(|n| {
            if n.starts_with('/') {
                Path::new(n).is_file()
            } else {
                on_path(n)
            }
        }),
        Probe::CargoSubcommand(sub) => Command::new("cargo")
            .args([sub, "--version"])
            .output()
            .is_ok_and(|o| o.status.success()),
        Probe::PostgresServer => std::fs::read_dir("/usr/lib/postgresql").is_ok_and(|dir| {
            dir.filter_map(Result::ok)
                .any(|v| v.path().join("bin/initdb").is_file())
        }),
        Probe::Root => is_root(),
    }
}

/// `name` in a directory of `PATH`, or in the sbin directories.
fn on_path(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(Into::into))
        .any(|dir| dir.join(name).is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT_APT: Machine = Machine { root: true, apt: true };

    fn missing(names: &[&str]) -> Vec<(Option<&'static str>, Tool)> {
        tools_for_test(&[])
            .into_iter()
            .filter(|(_, t)| names.contains(&t.name))
            .collect()
    }

    #[test]
    fn root_with_apt_installs_every_package_in_one_call_and_cargo_tools_with_cargo() {
        let p = plan(
            &missing(&["nginx", "chromium", "redis-server", "redis-cli", "cargo-fuzz"]),
            ROOT_APT,
        );
        assert_eq!(p.apt, ["chromium", "nginx-light", "redis-server", "redis-tools"]);
        assert_eq!(p.cargo, ["cargo-fuzz"]);
        assert!(p.blocked.is_empty(), "{:?}", p.blocked);
    }

    #[test]
    fn without_root_a_package_blocks_the_run_naming_the_tool_the_command_and_the_skip() {
        let p = plan(&missing(&["nginx"]), Machine { root: false, apt: true });
        assert!(p.apt.is_empty());
        assert_eq!(p.blocked.len(), 1);
        let msg = &p.blocked[0];
        assert!(msg.starts_with("nginx is missing"), "{msg}");
        assert!(msg.contains("apt-get install -y nginx-light"), "{msg}");
        assert!(msg.contains("--skip nginx"), "{msg}");
    }

    #[test]
    fn without_apt_the_debian_package_is_named_and_cargo_tools_still_install() {
        let p = plan(
            &missing(&["promtool", "cargo-nextest"]),
            Machine { root: true, apt: false },
        );
        assert_eq!(p.cargo, ["cargo-nextest"]);
        assert_eq!(p.blocked.len(), 1);
        assert!(p.blocked[0].contains("no apt-get") && p.blocked[0].contains("prometheus"));
        assert!(p.blocked[0].contains("--skip promtool"));
    }

    #[test]
    fn root_cannot_be_installed_and_a_core_tool_has_no_skip_to_offer() {
        let p = plan(&missing(&["root"]), Machine { root: false, apt: true });
        assert_eq!(p.blocked.len(), 1, "{:?}", p.blocked);
        assert!(p.blocked[0].contains("as root") && p.blocked[0].contains("--skip netns"));
        let core = plan(
            &[(None, tool("wrk", Probe::Program(&["wrk"]), Install::Apt("wrk")))],
            Machine { root: false, apt: true },
        );
        assert!(!core.blocked[0].contains("--skip"), "{}", core.blocked[0]);
    }

    #[test]
    fn a_skipped_suite_needs_none_of_its_tools() {
        let all = tools_for_test(&[]);
        let skipped = parse_skip("browser,stores").unwrap();
        let some = tools_for_test(&skipped);
        assert!(all.iter().any(|(_, t)| t.name == "chromium"));
        assert!(
            !some
                .iter()
                .any(|(_, t)| ["chromium", "psql", "redis-cli", "postgres"].contains(&t.name))
        );
        assert!(
            some.iter()
                .any(|(_, t)| t.name == "nginx" && t.install == Install::Apt("nginx-light"))
        );
        assert!(some.iter().any(|(_, t)| t.name == "cargo-nextest"));
    }

    #[test]
    fn skip_names_are_checked() {
        let e = parse_skip("browser,nginks").unwrap_err();
        assert!(e.contains("nginks") && e.contains("browser, nginx, netns"), "{e}");
        assert!(parse_skip(",").is_err());
        assert_eq!(parse_skip("fuzz,fuzz").unwrap().len(), 1);
    }

    #[test]
    fn every_suite_but_fuzzing_selects_its_tests_by_binary() {
        for s in SUITES {
            assert_eq!(s.tests.is_none(), s.name == "fuzz", "{}", s.name);
            assert!(!s.tools.is_empty(), "{}", s.name);
        }
    }
}
