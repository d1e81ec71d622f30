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

/// What the clients saw.
#[derive(Debug, Default)]
struct Tally {
    answered: u64,
    unanswered: u64,
    wrong: Vec<String>,
}

/// `clients` users, each with its own cookie jar, sending `GET /counter` to the nodes
/// in turn (the next node after every request, whether it answered or not) until
/// `stop` or `max_requests` each. `up[i]` says whether node i runs (a real balancer
/// takes a dead node out of its list).
fn run_clients(
    urls: Arc<Vec<String>>,
    up: Arc<RwLock<Vec<bool>>>,
    clients: usize,
    max_requests: u64,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Tally>> {
    (0..clients)
        .map(|c| {
            let (urls, up, stop) = (urls.clone(), up.clone(), stop.clone());
            tokio::spawn(async move {
                let user = Browser::new();
                let mut tally = Tally::default();
                let mut last: Option<u64> = None;
                let mut skipped_since_last = 0u64;
                let mut node = c;
                for _ in 0..max_requests {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // Round robin over the nodes that run.
                    let target = loop {
                        node = (node + 1) % urls.len();
                        if up.read().await[node] {
                            break node;
                        }
                    };
                    let answer = user.get(format!("{}/counter", urls[target])).send().await;
                    let count = match answer {
                        Ok(r) if r.status() == 200 => r
                            .json::<serde_json::Value>()
                            .await
                            .ok()
                            .and_then(|v| v["count"].as_u64()),
                        _ => None,
                    };
                    let Some(count) = count else {
                        tally.unanswered += 1;
                        skipped_since_last += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    tally.answered += 1;
                    let expected_low = last.map_or(1, |l| l + 1);
                    let expected_high = expected_low + skipped_since_last;
                    if count < expected_low || count > expected_high {
                        tally.wrong.push(format!(
                            "client {c}: node {target} answered {count} after {last:?} ({skipped_since_last} unanswered in between)"
                        ));
                    }
                    last = Some(count);
                    skipped_since_last = 0;
                }
                tally
            })
        })
        .collect()
}

async fn check(manager: &'static str, faults: bool) {
    let mut nodes = cluster(
        3,
        &Options {
            manager: Some(manager),
            sync: true,
            ..Options::default()
        },
    );
    for n in nodes.iter_mut() {
        n.start();
    }
    for n in &nodes {
        wait_ready(n, 2).await;
    }
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
    let mut total = Tally::default();
    for c in clients {
        let t = c.await.unwrap();
        total.answered += t.answered;
        total.unanswered += t.unanswered;
        total.wrong.extend(t.wrong);
    }
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
