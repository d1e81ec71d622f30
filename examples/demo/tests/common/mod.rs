//! A cluster of real `tribes-demo` processes and a real HTTP client with a cookie jar.
#![allow(dead_code, unreachable_pub)]

pub mod cdp;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use tribes_testkit::free_addrs;

/// One `tribes-demo` process.
pub struct DemoNode {
    pub route: String,
    pub http: SocketAddr,
    pub cluster: SocketAddr,
    args: Vec<String>,
    child: Option<Child>,
    /// Run the process as this uid and gid (tests that partition by socket owner).
    pub run_as: Option<u32>,
    /// Environment variables for the process, besides the test's own.
    pub envs: Vec<(String, String)>,
    /// The output lines of every start so far, when [`DemoNode::capture_logs`] was called.
    captured: Option<Arc<Mutex<Vec<String>>>>,
}

impl DemoNode {
    /// A node started with exactly `args` (such as `--config FILE --http ADDR`).
    pub fn with_args(route: &str, http: SocketAddr, cluster: SocketAddr, args: Vec<String>) -> DemoNode {
        DemoNode {
            route: route.into(),
            http,
            cluster,
            args,
            child: None,
            run_as: None,
            envs: Vec::new(),
            captured: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// Add flags for this node only (they apply from its next start).
    pub fn push_args<S: Into<String>>(&mut self, args: impl IntoIterator<Item = S>) {
        self.args.extend(args.into_iter().map(Into::into));
    }

    /// The value given to `flag` (the argument after it).
    pub fn args_value(&self, flag: &str) -> String {
        let i = self.args.iter().position(|a| a == flag).expect("the flag is set");
        self.args[i + 1].clone()
    }

    /// Give `flag` another value (from the next start).
    pub fn set_arg(&mut self, flag: &str, value: &str) {
        let i = self.args.iter().position(|a| a == flag).expect("the flag is set");
        self.args[i + 1] = value.to_string();
    }

    /// Keep the process's output (stdout and stderr, from its next start) for
    /// [`DemoNode::log_lines`]; it is still copied to the test's stderr as [`DemoNode::start`] says.
    pub fn capture_logs(&mut self) {
        self.captured.get_or_insert_with(Default::default);
    }

    /// The output lines captured so far, of every start since [`DemoNode::capture_logs`]
    /// (a killed process's last lines included: its pipes are read to the end).
    pub fn log_lines(&self) -> Vec<String> {
        let captured = self.captured.as_ref().expect("capture_logs() before start()");
        captured.lock().unwrap().clone()
    }

    /// Start (or restart) the process. Its log (stdout, where `tribes-demo` writes it,
    /// and stderr) goes to the test's stderr, each line prefixed with the route, when
    /// `TRIBES_TEST_LOGS` is set or under `CI=true`: nextest shows it for a failed test
    /// (and for a flaky one's failed attempts) and discards it otherwise.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "node {} is already running", self.route);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tribes-demo"));
        if let Some(id) = self.run_as {
            use std::os::unix::process::CommandExt;
            cmd.uid(id).gid(id);
        }
        let logs = std::env::var_os("TRIBES_TEST_LOGS").is_some() || std::env::var("CI").as_deref() == Ok("true");
        let piped = logs || self.captured.is_some();
        let out = || if piped { Stdio::piped() } else { Stdio::null() };
        let mut child = cmd
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,tribes=info".into()),
            )
            .env("NO_COLOR", "1")
            .stdout(out())
            .stderr(out())
            .spawn()
            .expect("start tribes-demo");
        let prefix = format!("[{} pid {}]", self.route, child.id());
        let forward = logs.then_some(prefix);
        if let Some(stdout) = child.stdout.take() {
            forward_lines(stdout, forward.clone(), self.captured.clone());
        }
        if let Some(stderr) = child.stderr.take() {
            forward_lines(stderr, forward, self.captured.clone());
        }
        self.child = Some(child);
    }

    /// `kill -9`: no goodbye, no flush.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "node {} ignored SIGTERM",
                self.route
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }
}

/// Copy a node's output, line by line, to this process's stderr behind `prefix` (if
/// any) and into `capture` (if any).
fn forward_lines(
    from: impl std::io::Read + Send + 'static,
    prefix: Option<String>,
    capture: Option<Arc<Mutex<Vec<String>>>>,
) {
    std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        for line in std::io::BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if let Some(prefix) = &prefix {
                let _ = writeln!(std::io::stderr().lock(), "{prefix} {line}");
            }
            if let Some(capture) = &capture {
                capture.lock().unwrap().push(line);
            }
        }
    });
}

impl Drop for DemoNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Options every node of a test cluster shares.
#[derive(Clone, Default)]
pub struct Options {
    pub manager: Option<&'static str>,
    pub sync: bool,
    pub max_inactive_secs: Option<u64>,
    /// More flags for every node (such as `--store file:DIR`).
    pub extra_args: Vec<String>,
}

/// A fresh cluster key file made by `tribes-demo keygen`, shared by a test's nodes.
pub fn key_file() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cluster-{}-{n}.key", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let status = Command::new(env!("CARGO_BIN_EXE_tribes-demo"))
        .arg("keygen")
        .arg(&path)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "tribes-demo keygen failed");
    // Readable by a node that a test runs under another uid.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

/// `n` nodes named a, b, c… on free loopback ports, each listing the others.
pub fn cluster(n: usize, opts: &Options) -> Vec<DemoNode> {
    let addrs = free_addrs(2 * n);
    let key = key_file();
    let routes = ["a", "b", "c", "d", "e"];
    (0..n)
        .map(|i| {
            let (http, cluster) = (addrs[2 * i], addrs[2 * i + 1]);
            let mut args = vec![
                "--route".to_string(),
                routes[i].to_string(),
                "--http".into(),
                http.to_string(),
                "--cluster".into(),
                cluster.to_string(),
                "--cluster-key-file".into(),
                key.display().to_string(),
            ];
            for j in (0..n).filter(|j| *j != i) {
                args.push("--member".into());
                args.push(addrs[2 * j + 1].to_string());
            }
            if let Some(m) = opts.manager {
                args.extend(["--manager".into(), m.into()]);
            }
            if opts.sync {
                args.push("--sync".into());
            }
            if let Some(s) = opts.max_inactive_secs {
                args.extend(["--max-inactive-secs".into(), s.to_string()]);
            }
            args.extend(opts.extra_args.iter().cloned());
            DemoNode::with_args(routes[i], http, cluster, args)
        })
        .collect()
}

/// A browser-like client: one cookie jar for every node (cookies ignore ports).
pub struct Browser {
    pub client: reqwest::Client,
    jar: std::sync::Arc<reqwest::cookie::Jar>,
}

impl std::ops::Deref for Browser {
    type Target = reqwest::Client;
    fn deref(&self) -> &reqwest::Client {
        &self.client
    }
}

impl Browser {
    pub fn new() -> Self {
        let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
        let client = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Browser { client, jar }
    }

    /// The cookie jar.
    pub fn jar(&self) -> &reqwest::cookie::Jar {
        &self.jar
    }

    /// The TRIBESSESSIONID value the jar would send to `node`.
    pub fn session_cookie(&self, node: &DemoNode) -> Option<String> {
        use reqwest::cookie::CookieStore;
        let url: reqwest::Url = node.url("/").parse().unwrap();
        let header = self.jar.cookies(&url)?;
        header
            .to_str()
            .ok()?
            .split("; ")
            .find_map(|c| c.strip_prefix("TRIBESSESSIONID=").map(str::to_string))
    }
}

pub async fn status(node: &DemoNode) -> Option<Value> {
    let r = reqwest::Client::new()
        .get(node.url("/cluster/status"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

/// Poll until `cond` holds for the node's status, or panic naming `what`.
pub async fn wait_status(node: &DemoNode, what: &str, limit: Duration, cond: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        if let Some(s) = status(node).await {
            if cond(&s) {
                return s;
            }
            if start.elapsed() > limit {
                panic!(
                    "node {}: timed out after {limit:?} waiting for {what}; last status: {s}",
                    node.route
                );
            }
        } else if start.elapsed() > limit {
            panic!(
                "node {}: timed out after {limit:?} waiting for {what}; no status answer",
                node.route
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn members(s: &Value) -> usize {
    s["members"].as_array().map_or(0, |m| m.len())
}

pub fn sessions(s: &Value) -> u64 {
    s["sessions"].as_u64().unwrap_or(0)
}

pub fn ready(s: &Value) -> bool {
    s["ready"].as_bool() == Some(true)
}

/// Starts every node, then waits until each is ready with all the others.
pub async fn start_all(nodes: &mut [DemoNode]) {
    for n in nodes.iter_mut() {
        n.start();
    }
    for n in nodes.iter() {
        wait_ready(n, nodes.len() - 1).await;
    }
}

/// `POST /login` with `user=NAME` from `browser`: the status and the body.
pub async fn login(browser: &Browser, node: &DemoNode, user: &str) -> (u16, String) {
    let r = browser
        .post(node.url("/login"))
        .form(&[("user", user)])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Wait until the node is ready and sees `others` members.
pub async fn wait_ready(node: &DemoNode, others: usize) -> Value {
    wait_status(
        node,
        &format!("ready with {others} members"),
        Duration::from_secs(30),
        |s| ready(s) && members(s) == others,
    )
    .await
}

/// `GET /counter` and return the count.
pub async fn count(client: &Browser, node: &DemoNode) -> u64 {
    let r = client.get(node.url("/counter")).send().await.unwrap();
    assert_eq!(r.status(), 200, "GET /counter on {}", node.route);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["node"], node.route.as_str());
    v["count"].as_u64().unwrap()
}

/// `GET /session/{key}`: `Some(value)` on 200, `None` on 404.
pub async fn get_key(client: &Browser, node: &DemoNode, key: &str) -> Option<String> {
    let r = client.get(node.url(&format!("/session/{key}"))).send().await.unwrap();
    match r.status().as_u16() {
        200 => Some(r.text().await.unwrap()),
        404 => None,
        s => panic!("GET /session/{key} on {}: status {s}", node.route),
    }
}

pub async fn put_key(client: &Browser, node: &DemoNode, key: &str, value: &str) {
    let r = client
        .put(node.url(&format!("/session/{key}")))
        .body(value.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "PUT /session/{key} on {}", node.route);
}

/// The `cluster event` lines (the demo's `src/events.rs`) of `kind` about `session`
/// (its log hash, `#1a2b3c4d`) among `lines`.
pub fn cluster_events(lines: &[String], kind: &str, session: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|l| {
            l.contains("cluster event")
                && log_field(l, "kind").as_deref() == Some(kind)
                && log_field(l, "session").as_deref() == Some(session)
        })
        .cloned()
        .collect()
}

/// The value of `field` in a `tracing` log line (` field=value`, or `"value"` without
/// its quotes).
pub fn log_field(line: &str, field: &str) -> Option<String> {
    let start = line.find(&format!(" {field}="))? + field.len() + 2;
    let rest = &line[start..];
    Some(match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next()?.to_string(),
        None => rest.split(' ').next()?.to_string(),
    })
}
