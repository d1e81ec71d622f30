//! Network namespaces a test makes itself, so what it does to the network (multicast
//! heartbeats, nftables partitions) never leaves the machine's test: the outer test
//! makes the namespace and re-runs one ignored test of its own binary inside it with
//! `ip netns exec`.

use std::process::Command;

/// Runs `program` with `args`; its stderr in the error when it fails or cannot start.
///
/// # Errors
///
/// When the program is missing or exits with a failure.
pub fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace with its loopback up, deleted when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// `ip netns add NAME`, then loopback up.
    ///
    /// # Errors
    ///
    /// When `ip` is missing or refuses (it needs root or `CAP_NET_ADMIN`); the
    /// namespace is deleted again if it was made.
    pub fn new(name: impl Into<String>) -> Result<Netns, String> {
        let name = name.into();
        run("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Multicast on loopback, with a route for 224.0.0.0/4.
    ///
    /// # Errors
    ///
    /// When `ip` refuses.
    pub fn with_multicast(self) -> Result<Netns, String> {
        self.ip(&["link", "set", "lo", "multicast", "on"])?;
        self.ip(&["route", "add", "224.0.0.0/4", "dev", "lo"])?;
        Ok(self)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS…`.
    ///
    /// # Errors
    ///
    /// When `ip` refuses.
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs the ignored test `inner` of the running test binary inside the namespace,
    /// with the environment variable `marker` set (the inner test checks it, so it
    /// never runs by itself), and returns its output.
    ///
    /// # Panics
    ///
    /// When the inner test fails or did not run, with its output.
    pub fn run_test(&self, inner: &str, marker: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", inner, "--ignored", "--nocapture"])
            .env(marker, "1")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "inner test {inner} failed:\n{text}");
        assert!(text.contains("1 passed"), "the inner test {inner} did not run:\n{text}");
        text
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}
