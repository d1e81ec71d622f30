//! Failover through the shipped nginx config (deploy/nginx/tribes-demo.conf): the
//! session survives the death of the node it was stuck to, and the cookie is rebound.

mod common;

use std::time::Duration;

use common::*;
use tribes_testkit::nginx::{self, Nginx};

/// Start nginx with the shipped config, its ports moved to the test's.
fn start_nginx(nodes: &[DemoNode], lb: std::net::SocketAddr) -> Nginx {
    let https: Vec<_> = nodes.iter().map(|n| n.http).collect();
    let prefix = std::env::temp_dir().join(format!("tribes-nginx-{}", std::process::id()));
    Nginx::start(&nginx::config(lb, &https), lb, prefix)
}

/// `GET {lb}/counter` as `user`: the count and the node that answered.
async fn counter(user: &Browser, lb: &str) -> serde_json::Value {
    user.get(format!("{lb}/counter"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_survives_the_node_it_was_stuck_to() {
    assert!(
        nginx::nginx_binary().is_some(),
        "nginx is not installed: apt-get install nginx-light (.ci/run installs it)"
    );
    let mut nodes = cluster(3, &Options::default());
    start_all(&mut nodes).await;
    let lb_addr = free_addrs(1)[0];
    let _nginx = start_nginx(&nodes, lb_addr);
    let lb = format!("http://{lb_addr}");
    let user = Browser::new();

    let mut served_by = String::new();
    for expected in 1..=3u64 {
        let v = counter(&user, &lb).await;
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
        let v = counter(&user, &lb).await;
        assert_eq!(v["count"], expected);
        assert_eq!(v["node"], new_node.as_str());
    }
}
