//! Cluster key rotation without a restart, over three real `tribes-demo` processes
//! under load: the key file is edited and every node gets SIGHUP after each step
//! (accept the new key, offer it, drop the old one). Round-robin clients check that
//! every acknowledged write is seen by the next request, on any node. Nodes restart
//! one at a time between steps (taken out of the rotation first, as a balancer would)
//! so that connections really open under the new keys; a node with only the old key
//! is refused at the end, and the status page says why.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use tokio::sync::RwLock;
use tribes_testkit::load::{run_clients, total};

/// `kill -HUP` every running node.
fn sighup(nodes: &[DemoNode]) {
    for n in nodes {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &n.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// Take node `i` out of the clients' rotation, restart it cleanly, put it back.
async fn restart(nodes: &mut [DemoNode], up: &RwLock<Vec<bool>>, i: usize) {
    up.write().await[i] = false;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(nodes[i].terminate().success());
    nodes[i].start();
    wait_ready(&nodes[i], 2).await;
    up.write().await[i] = true;
}

fn key_line(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_by_sighup_under_load_without_losing_an_acknowledged_write() {
    let mut nodes = cluster(
        3,
        &Options {
            manager: Some("delta"),
            sync: true,
            ..Options::default()
        },
    );
    let key_path = std::path::PathBuf::from(nodes[0].args_value("--cluster-key-file"));
    let old = key_line(&key_path);
    assert!(old.starts_with("1 "), "keygen writes key id 1: {old}");
    // The new key: another keygen file's key, under id 2.
    let fresh = key_file();
    let new = format!("2 {}", key_line(&fresh).split_once(' ').unwrap().1);
    start_all(&mut nodes).await;
    let urls = Arc::new(nodes.iter().map(|n| n.url("")).collect::<Vec<_>>());
    let up = Arc::new(RwLock::new(vec![true; 3]));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = run_clients(urls, up.clone(), 4, 5_000, stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 1. Accept the new key everywhere (still offer the old one).
    std::fs::write(&key_path, format!("{old}\n{new}\n")).unwrap();
    sighup(&nodes);
    for n in &nodes {
        wait_status(n, "the new key accepted", Duration::from_secs(10), |s| {
            s["channel"]["security"]["accepted_keys"] == serde_json::json!([1, 2])
        })
        .await;
    }
    // 2. Offer the new key everywhere; c restarts and opens every connection under it.
    std::fs::write(&key_path, format!("{new}\n{old}\n")).unwrap();
    sighup(&nodes);
    for n in &nodes {
        wait_status(n, "the new key offered", Duration::from_secs(10), |s| {
            s["channel"]["security"]["send_key"] == 2
        })
        .await;
    }
    restart(&mut nodes, &up, 2).await;
    // 3. Drop the old key; a restarts and opens every connection with only the new one.
    std::fs::write(&key_path, format!("{new}\n")).unwrap();
    sighup(&nodes);
    for n in &nodes {
        wait_status(n, "the old key dropped", Duration::from_secs(10), |s| {
            s["channel"]["security"]["accepted_keys"] == serde_json::json!([2])
        })
        .await;
    }
    restart(&mut nodes, &up, 0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A node still on the old key is refused, and the status page says why.
    let old_file =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("old-{}.key", std::process::id()));
    std::fs::write(&old_file, format!("{old}\n")).unwrap();
    let mut late = cluster(1, &Options::default()).remove(0);
    late.set_arg("--cluster-key-file", &old_file.display().to_string());
    late.push_args(["--member".to_string(), nodes[1].cluster.to_string()]);
    late.start();
    wait_status(&nodes[1], "the old key refused", Duration::from_secs(15), |s| {
        s["channel"]["refusals"]["by_reason"]["unknown_key_id"]
            .as_u64()
            .unwrap_or(0)
            > 0
    })
    .await;
    let s = status(&nodes[1]).await.unwrap();
    let recent = s["channel"]["refusals"]["recent"].as_array().unwrap();
    assert!(
        recent
            .iter()
            .any(|r| r["reason"] == "unknown_key_id" && r["key_id"] == 1),
        "{recent:?}"
    );
    assert_eq!(members(&s), 2, "the old-key node did not join");
    let metrics = reqwest::get(nodes[1].url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tribes_channel_refusals_total{") && l.contains("reason=\"unknown_key_id\"")),
        "{metrics}"
    );
    drop(late);

    stop.store(true, Ordering::Relaxed);
    let total = total(clients).await;
    eprintln!(
        "key rotation under load: {} answered, {} unanswered, {} wrong",
        total.answered,
        total.unanswered,
        total.wrong.len()
    );
    assert!(total.answered > 100, "too few answers to judge: {total:?}");
    assert_eq!(total.unanswered, 0, "requests failed during the rotation: {total:?}");
    assert!(
        total.wrong.is_empty(),
        "acknowledged writes lost during the rotation:\n{}",
        total.wrong.join("\n")
    );
}
