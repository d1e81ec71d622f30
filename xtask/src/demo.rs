//! `cargo xtask demo`: three `tribes-demo` nodes on loopback with static membership,
//! and nginx in front on 127.0.0.1:8080 when nginx is installed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Node {
    route: &'static str,
    http: &'static str,
    cluster: &'static str,
}

const NODES: [Node; 3] = [
    Node {
        route: "a",
        http: "127.0.0.1:8081",
        cluster: "127.0.0.1:4001",
    },
    Node {
        route: "b",
        http: "127.0.0.1:8082",
        cluster: "127.0.0.1:4002",
    },
    Node {
        route: "c",
        http: "127.0.0.1:8083",
        cluster: "127.0.0.1:4003",
    },
];

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// The command that starts one node, so the guide can print it for restarts.
fn node_command(binary: &Path, key: &Path, node: &Node) -> Command {
    let mut cmd = Command::new(binary);
    // Quiet nodes, so the guide stays on screen; RUST_LOG=info shows everything.
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "warn");
    }
    cmd.args(["--route", node.route, "--http", node.http, "--cluster", node.cluster]);
    cmd.arg("--cluster-key-file").arg(key);
    for other in NODES.iter().filter(|o| o.route != node.route) {
        cmd.args(["--member", other.cluster]);
        cmd.args(["--link", &format!("http://{}/", other.http)]);
    }
    cmd
}

fn wait_http(addr: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if std::net::TcpStream::connect(addr).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn start_nginx() -> Option<Child> {
    let nginx = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let prefix = target_dir().join("xtask-nginx");
    std::fs::create_dir_all(prefix.join("tmp")).ok()?;
    let conf = root().join("deploy/nginx/tribes-demo.conf");
    let child = Command::new(nginx)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .spawn()
        .ok()?;
    Some(child)
}

pub(crate) fn run() -> Result<(), String> {
    crate::run("cargo", &["build", "--quiet", "-p", "tribes-demo"])?;
    let binary = target_dir().join("debug/tribes-demo");
    // The demo cluster's own key: made once, kept for restarts.
    let key = target_dir().join("xtask-demo/cluster.key");
    if !key.exists() {
        std::fs::create_dir_all(key.parent().expect("a parent")).map_err(|e| e.to_string())?;
        let made = Command::new(&binary)
            .arg("keygen")
            .arg(&key)
            .status()
            .map_err(|e| e.to_string())?;
        if !made.success() {
            return Err(format!("tribes-demo keygen {} failed", key.display()));
        }
    }
    let mut children: Vec<(String, Child)> = Vec::new();
    for node in &NODES {
        if std::net::TcpStream::connect(node.http).is_ok() {
            return Err(format!(
                "{} is already in use: stop whatever listens there (another `cargo xtask demo`?) and try again",
                node.http
            ));
        }
        let child = node_command(&binary, &key, node)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        children.push((format!("node {}", node.route), child));
    }
    for node in &NODES {
        if !wait_http(node.http, Duration::from_secs(30)) {
            return Err(format!("node {} did not open {} within 30 s", node.route, node.http));
        }
    }
    let nginx = start_nginx();
    let lb = nginx.is_some() && wait_http("127.0.0.1:8080", Duration::from_secs(5));
    if let Some(n) = nginx {
        children.push(("nginx".into(), n));
    }

    println!();
    println!("tribes demo: three nodes with replicated sessions");
    for (node, (_, child)) in NODES.iter().zip(&children) {
        println!(
            "  node {}  http://{}/   (pid {}, replication on {})",
            node.route,
            node.http,
            child.id(),
            node.cluster
        );
    }
    if lb {
        println!("  nginx   http://127.0.0.1:8080/   (sticky on the cookie's route, fails over)");
    } else {
        println!("  (install nginx to get a load balancer on 127.0.0.1:8080 too)");
    }
    println!(
        "  cluster http://{}/cluster/   (every member, live charts, events; on any node)",
        NODES[0].http
    );
    println!(
        "  json    http://{}/cluster/status   metrics http://{}/metrics",
        NODES[0].http, NODES[0].http
    );
    println!();
    println!(
        "1. Open http://{}/ and press the counter button a few times.",
        NODES[0].http
    );
    println!(
        "2. Open http://{}/cluster/ in another tab: three members ready, their charts moving.",
        NODES[1].http
    );
    println!("3. Kill the first node: kill -9 {}", children[0].1.id());
    println!(
        "   The dashboard shows {} as gone, with the reason, within 3 s.",
        NODES[0].route
    );
    println!(
        "4. Open http://{}/ (same browser): the count goes on. Ctrl-C stops everything.",
        NODES[1].http
    );
    println!();

    // Report nodes that exit, and restart nothing by hand: the guide says how.
    let mut reported = vec![false; children.len()];
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let mut alive = 0;
        for (i, (name, child)) in children.iter_mut().enumerate() {
            match child.try_wait() {
                Ok(Some(status)) if !reported[i] => {
                    reported[i] = true;
                    println!("xtask: {name} exited ({status})");
                    if let Some(node) = NODES.get(i) {
                        let cmd = node_command(&binary, &key, node);
                        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
                        println!("xtask: restart it with: {} {}", binary.display(), args.join(" "));
                    }
                }
                Ok(None) => alive += 1,
                _ => {}
            }
        }
        if alive == 0 {
            return Ok(());
        }
    }
}
