//! Helpers for tests over real `tribes-axum-login` processes: nodes, the users file, the
//! cluster's readiness, and what `GET /` answered.
#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION};
use serde_json::Value;
pub use tribes_testkit::free_addrs;
use tribes_testkit::process::{Killed, key_file, temp_dir, wait_json};

pub const USER: &str = "ferris";
pub const PASSWORD: &str = "crab rave, twice";
pub const COOKIE_NAME: &str = "TRIBESSESSIONID";

/// A running node, SIGKILLed (and reaped) when dropped.
pub struct Node {
    pub route: &'static str,
    pub http: SocketAddr,
    pub cluster: SocketAddr,
    pub child: Killed,
}

impl Node {
    pub fn start(&mut self, members: &[SocketAddr], key: &Path, users: &Path) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tribes-axum-login"));
        cmd.args(["--route", self.route, "--http", &self.http.to_string()])
            .args(["--cluster", &self.cluster.to_string()])
            .arg("--cluster-key-file")
            .arg(key)
            .arg("--users")
            .arg(users)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        for m in members.iter().filter(|m| **m != self.cluster) {
            cmd.args(["--member", &m.to_string()]);
        }
        self.child = Killed::spawn(&mut cmd, "tribes-axum-login");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// `kill -9`: no goodbye, no handover.
    pub fn kill9(&mut self) {
        self.child.kill9();
    }
}

/// The users file, its hash made by the app's own `hash-password`.
pub fn users_file(dir: &Path) -> PathBuf {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tribes-axum-login"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(PASSWORD.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let path = dir.join("users.txt");
    std::fs::write(&path, format!("{USER}:{}", hash.trim())).unwrap();
    path
}

/// Polls `GET /cluster` until `cond` holds, for at most `limit`.
pub async fn wait_cluster(node: &Node, what: &str, limit: Duration, cond: impl Fn(&Value) -> bool) {
    wait_json(&node.url("/cluster"), &format!("{what} ({})", node.route), limit, cond).await;
}

/// What `GET /` answered: the status, the node that answered, and the body.
pub struct Page {
    pub status: StatusCode,
    pub node: String,
    pub location: String,
    pub body: String,
}

impl Page {
    pub async fn of(r: reqwest::Response) -> Page {
        let header = |name| {
            r.headers()
                .get(name)
                .map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        let (node, location) = (header("x-tribes-node"), header(LOCATION.as_str()));
        Page {
            status: r.status(),
            node,
            location,
            body: r.text().await.unwrap(),
        }
    }

    pub fn logged_in(&self) -> bool {
        self.status == StatusCode::OK && self.body.contains(&format!(r#"<span id="user">{USER}</span>"#))
    }

    /// axum-login's `login_required!` sends everybody else to the form.
    pub fn sent_to_login(&self) -> bool {
        self.status == StatusCode::TEMPORARY_REDIRECT && self.location.starts_with("/login?next=")
    }
}

/// An HTTP client that shows redirects instead of following them, and keeps no cookies
/// (the tests send the session cookie themselves).
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client")
}

/// `GET /` on `base` with the session cookie `cookie` (or none), as a client without a jar.
pub async fn home(base: &str, cookie: Option<&str>) -> Page {
    let client = no_redirects();
    let mut req = client.get(format!("{base}/"));
    if let Some(c) = cookie {
        req = req.header(COOKIE, format!("{COOKIE_NAME}={c}"));
    }
    Page::of(req.send().await.expect("GET / answered")).await
}

/// A fresh directory with a cluster key and the users file, and three nodes a, b, c
/// started on it and ready (each sees the two others).
pub async fn three_nodes(name: &str) -> (PathBuf, Vec<Node>) {
    let dir = temp_dir(&format!("tribes-axum-login-{name}"));
    let key = key_file(dir.join("cluster.key"));
    let users = users_file(&dir);
    let addrs = free_addrs(6);
    let mut nodes: Vec<Node> = ["a", "b", "c"]
        .into_iter()
        .enumerate()
        .map(|(i, route)| Node {
            route,
            http: addrs[i],
            cluster: addrs[3 + i],
            child: Killed::default(),
        })
        .collect();
    let members: Vec<SocketAddr> = nodes.iter().map(|n| n.cluster).collect();
    for n in nodes.iter_mut() {
        n.start(&members, &key, &users);
    }
    for n in &nodes {
        wait_cluster(n, "every node sees the two others", Duration::from_secs(30), |v| {
            v["ready"] == true && v["members"] == 2
        })
        .await;
    }
    (dir, nodes)
}

/// Logs `USER` in on `base` with `password`, as a new browser: the session cookie's value.
pub async fn log_in(base: &str, password: &str) -> Option<String> {
    let client = no_redirects();
    let r = client
        .post(format!("{base}/login"))
        .form(&[("username", USER), ("password", password), ("next", "/")])
        .send()
        .await
        .unwrap();
    if r.status() != StatusCode::SEE_OTHER {
        return None;
    }
    r.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok()?.strip_prefix(&format!("{COOKIE_NAME}=")))
        .map(|v| v.split(';').next().unwrap().to_string())
        .next()
}
