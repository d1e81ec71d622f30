//! The sync-ack guarantee behind a balancer without cookie affinity: three real
//! `tribes-demo` nodes started with `--sync`, clients that each keep their cookie but
//! send every request to the next node (round robin), each calling `GET /counter` in a
//! loop. Every answered count must be the previous answered count plus one; after a
//! request that got no answer (a node killed while serving it) the next count may skip
//! one (that write may have been applied), nothing else: a repeat is a lost update, a
//! smaller number a read that went back.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use tokio::sync::RwLock;
use tribes_testkit::load::{run_clients, total};

async fn check(manager: &'static str, faults: bool) {
    let mut nodes = cluster(
        3,
        &Options {
            manager: Some(manager),
            sync: true,
            ..Options::default()
        },
    );
    start_all(&mut nodes).await;
    let urls = Arc::new(nodes.iter().map(|n| n.url("")).collect::<Vec<_>>());
    let up = Arc::new(RwLock::new(vec![true; 3]));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = run_clients(urls, up.clone(), 6, 3_000, stop.clone());
    if faults {
        // kill -9 and restart two nodes, one after the other, under the load.
        for victim in [0usize, 1] {
            tokio::time::sleep(Duration::from_secs(2)).await;
            nodes[victim].kill9();
            tokio::time::sleep(Duration::from_millis(300)).await;
            up.write().await[victim] = false;
            tokio::time::sleep(Duration::from_secs(1)).await;
            nodes[victim].start();
            wait_ready(&nodes[victim], 2).await;
            up.write().await[victim] = true;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    } else {
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let total = total(clients).await;
    eprintln!(
        "non-sticky {manager} sync faults={faults}: {} answered, {} unanswered, {} wrong",
        total.answered,
        total.unanswered,
        total.wrong.len()
    );
    if !faults {
        // The cost of the guarantee, independent of how busy the machine is: replication
        // messages and bytes sent by all nodes per answered request.
        let (mut messages, mut bytes) = (0u64, 0u64);
        for n in &nodes {
            let s = status(n).await.expect("status");
            messages += s["replication"]["messages_sent"].as_u64().unwrap_or(0);
            bytes += s["replication"]["bytes_sent"].as_u64().unwrap_or(0);
        }
        let per = |x: u64| x as f64 / total.answered.max(1) as f64;
        eprintln!(
            "non-sticky {manager} sync: {:.2} replication messages and {:.0} bytes per request",
            per(messages),
            per(bytes)
        );
    }
    assert!(total.answered > 100, "too few answers to judge: {total:?}");
    assert!(
        total.wrong.is_empty(),
        "{manager} manager, sync mode, non-sticky clients: {} of {} answers broke read-your-writes:\n{}",
        total.wrong.len(),
        total.answered,
        total.wrong.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_sync_round_robin_clients_see_every_acknowledged_write() {
    check("delta", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_sync_round_robin_clients_see_every_acknowledged_write() {
    check("backup", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_sync_round_robin_clients_through_kill_9_and_restarts() {
    check("delta", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_sync_round_robin_clients_through_kill_9_and_restarts() {
    check("backup", true).await;
}
