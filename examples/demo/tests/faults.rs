//! The fault matrix over real processes: `tribes-demo` nodes under load from real
//! HTTP clients that record every acknowledged write, one test per fault. Each test
//! asserts its guarantee and writes its figures to `target/faults/<cell>.md`;
//! `cargo xtask faults` runs them and assembles `benches/results/faults.md`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use tokio::sync::RwLock;

/// What a load run did.
#[derive(Debug, Default)]
struct Figures {
    requests: u64,
    ok: u64,
    acked_writes: u64,
    lost_writes: u64,
    sessions: usize,
    lost_sessions: usize,
}

/// Users writing an increasing counter into their session, each preferring one node
/// and failing over to the next on an error, until `stop` (bounded by `max_writes`).
struct Load {
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    ok: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<(Browser, Option<u64>)>>,
}

impl Load {
    fn start(urls: Arc<RwLock<Vec<String>>>, users: usize, max_writes: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let ok = Arc::new(AtomicU64::new(0));
        let tasks = (0..users)
            .map(|u| {
                let (stop, requests, ok, urls) = (stop.clone(), requests.clone(), ok.clone(), urls.clone());
                tokio::spawn(async move {
                    let user = Browser::new();
                    let mut last_acked = None;
                    let mut node = u;
                    for value in 1..=max_writes {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        // Retry this value on the next nodes until one acknowledges it.
                        for _ in 0..6 {
                            let url = {
                                let urls = urls.read().await;
                                format!("{}/session/v", urls[node % urls.len()])
                            };
                            requests.fetch_add(1, Ordering::Relaxed);
                            let answer = user.put(&url).body(value.to_string()).send().await;
                            if matches!(&answer, Ok(r) if r.status() == 204) {
                                ok.fetch_add(1, Ordering::Relaxed);
                                last_acked = Some(value);
                                break;
                            }
                            node += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    (user, last_acked)
                })
            })
            .collect();
        Load {
            stop,
            requests,
            ok,
            tasks,
        }
    }

    /// Stop the load and check every user's last acknowledged write on `check`.
    async fn finish(self, check: &[&DemoNode]) -> Figures {
        self.stop.store(true, Ordering::Relaxed);
        let mut figures = Figures::default();
        for task in self.tasks {
            let (user, acked) = task.await.unwrap();
            let Some(acked) = acked else { continue };
            figures.sessions += 1;
            figures.acked_writes += acked;
            let mut worst: Option<u64> = None;
            for node in check {
                let seen = get_key(&user, node, "v").await.and_then(|v| v.parse::<u64>().ok());
                worst = Some(match (worst, seen) {
                    (None, s) => s.unwrap_or(0),
                    (Some(w), s) => w.min(s.unwrap_or(0)),
                });
            }
            let seen = worst.unwrap_or(0);
            if seen == 0 {
                figures.lost_sessions += 1;
            }
            figures.lost_writes += acked.saturating_sub(seen);
        }
        figures.requests = self.requests.load(Ordering::Relaxed);
        figures.ok = self.ok.load(Ordering::Relaxed);
        figures
    }
}

fn report(cell: &str, fault: &str, f: &Figures, extra: &str) {
    let line = format!(
        "| {cell} | {fault} | {}/{} requests ok | {} sessions, {} acknowledged writes | {} writes lost, {} sessions lost | {extra} |\n",
        f.ok, f.requests, f.sessions, f.acked_writes, f.lost_writes, f.lost_sessions
    );
    eprint!("FAULT {line}");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../faults");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{cell}.md")), line).unwrap();
}

async fn start_all(nodes: &mut [DemoNode]) -> Arc<RwLock<Vec<String>>> {
    for n in nodes.iter_mut() {
        n.start();
    }
    let others = nodes.len() - 1;
    for n in nodes.iter() {
        wait_ready(n, others).await;
    }
    Arc::new(RwLock::new(nodes.iter().map(|n| n.url("")).collect()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_in_sync_mode_loses_no_acknowledged_write() {
    let mut nodes = cluster(
        3,
        &Options {
            sync: true,
            ..Options::default()
        },
    );
    let urls = start_all(&mut nodes).await;
    let load = Load::start(urls.clone(), 24, 10_000);
    tokio::time::sleep(Duration::from_secs(2)).await;
    nodes[0].kill9();
    // The clients fail over by themselves; stop sending to the dead node.
    urls.write().await.remove(0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let figures = load.finish(&[&nodes[1], &nodes[2]]).await;
    report(
        "kill-9-sync",
        "kill -9 of one of 3 nodes under load, sync mode",
        &figures,
        "",
    );
    assert!(figures.acked_writes > 100, "the load did not run: {figures:?}");
    assert_eq!(figures.lost_writes, 0, "{figures:?}");
    assert_eq!(figures.lost_sessions, 0, "{figures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_load_loses_no_session() {
    let mut nodes = cluster(
        3,
        &Options {
            sync: true,
            ..Options::default()
        },
    );
    let urls = start_all(&mut nodes).await;
    let load = Load::start(urls.clone(), 16, 10_000);
    let started = Instant::now();
    for node in nodes.iter_mut() {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let status = node.terminate();
        assert!(status.success());
        node.start();
        wait_ready(node, 2).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let took = started.elapsed();
    let all: Vec<&DemoNode> = nodes.iter().collect();
    let figures = load.finish(&all).await;
    report(
        "rolling-restart",
        "SIGTERM and restart of each of 3 nodes in turn, sync mode",
        &figures,
        &format!("{:.1} s", took.as_secs_f64()),
    );
    assert!(figures.acked_writes > 100, "the load did not run: {figures:?}");
    assert_eq!(figures.lost_sessions, 0, "{figures:?}");
    assert_eq!(figures.lost_writes, 0, "{figures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_under_load_serves_only_after_its_state() {
    let mut nodes = cluster(3, &Options::default());
    nodes[0].start();
    nodes[1].start();
    wait_ready(&nodes[0], 1).await;
    wait_ready(&nodes[1], 1).await;
    let urls = Arc::new(RwLock::new(vec![nodes[0].url(""), nodes[1].url("")]));
    let load = Load::start(urls.clone(), 16, 10_000);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = sessions(&status(&nodes[0]).await.unwrap());
    nodes[2].start();
    // The first status that says ready already holds at least the sessions A had before.
    let ready = wait_ready(&nodes[2], 2).await;
    let at_ready = sessions(&ready);
    urls.write().await.push(nodes[2].url(""));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all: Vec<&DemoNode> = nodes.iter().collect();
    let figures = load.finish(&all).await;
    report(
        "join-under-load",
        "a third node joins under load, async mode",
        &figures,
        &format!("{at_ready} sessions at ready (≥ {before} before the join)"),
    );
    assert!(
        at_ready as u64 >= before,
        "the joining node was ready with {at_ready} < {before} sessions"
    );
    assert_eq!(figures.lost_sessions, 0, "{figures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_the_drop_time_comes_back_current() {
    let mut nodes = cluster(
        3,
        &Options {
            sync: true,
            ..Options::default()
        },
    );
    let urls = start_all(&mut nodes).await;
    // Users write to b and c only; a is paused, dropped, resumed.
    urls.write().await.remove(0);
    let load = Load::start(urls.clone(), 16, 10_000);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = nodes[0].pid().to_string();
    std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    wait_status(&nodes[1], "a to be dropped", Duration::from_secs(10), |s| {
        members(s) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap();
    wait_status(&nodes[1], "a to be back", Duration::from_secs(15), |s| members(s) == 2).await;
    wait_ready(&nodes[0], 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let all: Vec<&DemoNode> = nodes.iter().collect();
    let figures = load.finish(&all).await;
    report(
        "sigstop",
        "SIGSTOP of one of 3 nodes for longer than the drop time, then SIGCONT",
        &figures,
        "",
    );
    assert!(figures.acked_writes > 50, "the load did not run: {figures:?}");
    assert_eq!(figures.lost_sessions, 0, "{figures:?}");
    assert_eq!(figures.lost_writes, 0, "the resumed node must catch up: {figures:?}");
}
