//! Two real `tower-sessions-bridge` processes on loopback: a login made on node 1 through
//! tower-sessions' own `Session` is served by node 2 after node 1 was SIGKILLed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tribes_testkit::free_addrs;
use tribes_testkit::process::{self, Killed};

/// A running node, SIGKILLed (and reaped) when dropped.
struct Node {
    http: SocketAddr,
    child: Killed,
}

impl Node {
    fn start(route: &str, http: SocketAddr, cluster: SocketAddr, members: &[SocketAddr], key: &PathBuf) -> Node {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tower-sessions-bridge"));
        cmd.args([
            "--route",
            route,
            "--http",
            &http.to_string(),
            "--cluster",
            &cluster.to_string(),
        ])
        .arg("--cluster-key-file")
        .arg(key)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
        for m in members {
            cmd.args(["--member", &m.to_string()]);
        }
        Node {
            http,
            child: Killed::spawn(&mut cmd, "tower-sessions-bridge"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// `kill -9`: no goodbye, no handover.
    fn kill9(&mut self) {
        self.child.kill9();
    }
}

fn key_file() -> PathBuf {
    process::key_file(std::env::temp_dir().join(format!(
        "tower-sessions-bridge-{}-{:016x}.key",
        std::process::id(),
        rand::random::<u64>()
    )))
}

/// Polls `GET /cluster` until `cond` holds, for at most `limit`.
async fn wait_cluster(node: &Node, what: &str, limit: Duration, cond: impl Fn(&Value) -> bool) {
    process::wait_json(&node.url("/cluster"), what, limit, cond).await;
}

fn ready_with(members: u64) -> impl Fn(&Value) -> bool {
    move |v| v["ready"] == true && v["members"] == members
}

async fn me(client: &reqwest::Client, node: &Node) -> (StatusCode, Value) {
    let r = client.get(node.url("/me")).send().await.expect("GET /me answered");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_on_node1_survives_sigkill_of_node1() {
    let key = key_file();
    let addrs = free_addrs(4);
    let (http1, cluster1, http2, cluster2) = (addrs[0], addrs[1], addrs[2], addrs[3]);
    let mut n1 = Node::start("one", http1, cluster1, &[cluster2], &key);
    let n2 = Node::start("two", http2, cluster2, &[cluster1], &key);
    wait_cluster(&n1, "node 1 sees node 2", Duration::from_secs(30), ready_with(1)).await;
    wait_cluster(&n2, "node 2 sees node 1", Duration::from_secs(30), ready_with(1)).await;

    // Cookies are per host, not per port: one jar serves both nodes, as behind a load balancer.
    let client = reqwest::Client::builder().cookie_store(true).build().unwrap();
    assert_eq!(
        me(&client, &n1).await.0,
        StatusCode::UNAUTHORIZED,
        "nobody logged in yet"
    );
    let login = client.post(n1.url("/login?user=alice")).send().await.unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let cookie = login
        .headers()
        .get("set-cookie")
        .expect("tower-sessions sets its cookie");
    assert!(cookie.to_str().unwrap().starts_with("id="), "{cookie:?}");
    assert_eq!(
        me(&client, &n1).await,
        (StatusCode::OK, serde_json::json!({ "user": "alice" }))
    );

    n1.kill9();
    // Node 2 answers at once (the login was acknowledged by node 2 before its response),
    // and keeps answering once it has dropped node 1 from its members.
    assert_eq!(
        me(&client, &n2).await,
        (StatusCode::OK, serde_json::json!({ "user": "alice" }))
    );
    wait_cluster(&n2, "node 2 drops node 1", Duration::from_secs(30), |v| {
        v["members"] == 0
    })
    .await;
    assert_eq!(
        me(&client, &n2).await,
        (StatusCode::OK, serde_json::json!({ "user": "alice" }))
    );

    // Logout on node 2 ends the session.
    let out = client.post(n2.url("/logout")).send().await.unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert_eq!(me(&client, &n2).await.0, StatusCode::UNAUTHORIZED);
    let _ = std::fs::remove_file(&key);
}

/// Without the cookie there is no user on either node: the test above can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_client_is_not_logged_in() {
    let key = key_file();
    let addrs = free_addrs(4);
    let n1 = Node::start("one", addrs[0], addrs[1], &[addrs[3]], &key);
    let n2 = Node::start("two", addrs[2], addrs[3], &[addrs[1]], &key);
    wait_cluster(&n1, "node 1 sees node 2", Duration::from_secs(30), ready_with(1)).await;
    wait_cluster(&n2, "node 2 sees node 1", Duration::from_secs(30), ready_with(1)).await;
    let alice = reqwest::Client::builder().cookie_store(true).build().unwrap();
    let bob = reqwest::Client::builder().cookie_store(true).build().unwrap();
    assert_eq!(
        alice.post(n1.url("/login?user=alice")).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(me(&alice, &n2).await.1["user"], "alice");
    assert_eq!(me(&bob, &n2).await.0, StatusCode::UNAUTHORIZED);
    wait_cluster(&n2, "node 2 holds one session", Duration::from_secs(5), |v| {
        v["sessions"] == 1
    })
    .await;
    let _ = std::fs::remove_file(&key);
}
