//! Failover through the shipped nginx config (deploy/nginx/tribes-demo.conf): the
//! session survives the death of the node it was stuck to, and the cookie is rebound.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Nginx(Child, PathBuf);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn nginx_binary() -> Option<&'static str> {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

/// Start nginx with the shipped config, its ports moved to the test's.
fn start_nginx(nodes: &[DemoNode], lb: std::net::SocketAddr) -> Nginx {
    let binary = nginx_binary().expect("nginx");
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/nginx/tribes-demo.conf"
    ))
    .unwrap();
    let mut conf = shipped.replace("127.0.0.1:8080", &lb.to_string());
    for (i, n) in nodes.iter().enumerate() {
        conf = conf.replace(&format!("127.0.0.1:808{}", i + 1), &n.http.to_string());
    }
    assert_ne!(conf, shipped, "the shipped config should name the demo's ports");
    let prefix = std::env::temp_dir().join(format!("tribes-nginx-{}", std::process::id()));
    std::fs::create_dir_all(prefix.join("tmp")).unwrap();
    std::fs::write(prefix.join("nginx.conf"), conf).unwrap();
    let child = Command::new(binary)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(lb).is_err() {
        assert!(start.elapsed() < Duration::from_secs(5), "nginx did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Nginx(child, prefix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_survives_the_node_it_was_stuck_to() {
    assert!(
        nginx_binary().is_some(),
        "nginx is not installed: apt-get install nginx-light (.ci/run installs it)"
    );
    let mut nodes = cluster(3, &Options::default());
    for n in nodes.iter_mut() {
        n.start();
    }
    for n in &nodes {
        wait_ready(n, 2).await;
    }
    let lb_addr = free_addrs(1)[0];
    let _nginx = start_nginx(&nodes, lb_addr);
    let lb = format!("http://{lb_addr}");
    let user = Browser::new();

    let mut served_by = String::new();
    for expected in 1..=3u64 {
        let v: serde_json::Value = user
            .get(format!("{lb}/counter"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["count"], expected);
        let node = v["node"].as_str().unwrap().to_string();
        if expected > 1 {
            assert_eq!(node, served_by, "the balancer must stick to the session's route");
        }
        served_by = node;
    }
    let stuck = nodes.iter().position(|n| n.route == served_by).unwrap();
    for n in &nodes {
        wait_status(n, "the session everywhere", Duration::from_secs(10), |s| {
            sessions(s) == 1
        })
        .await;
    }

    nodes[stuck].kill9();
    let r = user.get(format!("{lb}/counter")).send().await.unwrap();
    // The rebound cookie (the body never carries the session id: it shows its log hash).
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("TRIBESSESSIONID="))
        .map(|c| c.split(';').next().unwrap().to_owned())
        .expect("the failover rebinds the cookie");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["count"], 4, "the count goes on after failover: {v}");
    let new_node = v["node"].as_str().unwrap().to_string();
    assert_ne!(new_node, served_by);
    assert!(
        cookie.ends_with(&format!(".{new_node}")),
        "cookie rebound to the new node: {cookie}"
    );
    // And it now sticks to the new node.
    for expected in 5..=6u64 {
        let v: serde_json::Value = user
            .get(format!("{lb}/counter"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["count"], expected);
        assert_eq!(v["node"], new_node.as_str());
    }
}
