//! Exactly one cluster-wide `Expired` event per session, even when the node that served
//! the session last dies, over three real `tribes-demo` processes, for both managers:
//! alice logs in on a (a serves her last), a is killed with SIGKILL, and after her idle
//! timeout the survivors' output (the demo logs every cluster event, `src/events.rs`)
//! holds exactly one `kind=expired` line for her session (by its log hash), naming
//! principal alice and delivered by b or c; none at all, or two, fails the test. Her
//! cookie then finds no session on b or c.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tribes_sessions::LogId;

/// Idle seconds before a session expires. A node expires a session idle for this plus a
/// grace (twice the 2 s touch interval), after asking the other holders, a grace later:
/// about 10 s after the last access.
const MAX_INACTIVE_SECS: u64 = 2;
/// How long the expiry event may take after the kill (expiry, the failure detector, a
/// coordinator's tick), before the test says it was lost.
const EVENT_LIMIT: Duration = Duration::from_secs(40);
/// How long the test keeps watching after the first event for a second one: longer than
/// the grace (4 s) and a few ticks, in which any other holder reports to the coordinator.
const SETTLE: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_kill_9_of_the_serving_node_keeps_exactly_one_expiry_event() {
    expiry_after_kill_9("delta", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_kill_9_of_the_serving_node_keeps_exactly_one_expiry_event() {
    expiry_after_kill_9("backup", true).await;
}

async fn expiry_after_kill_9(manager: &'static str, sync: bool) {
    let started = Instant::now();
    let mut nodes = cluster(
        3,
        &Options {
            manager: Some(manager),
            sync,
            max_inactive_secs: Some(MAX_INACTIVE_SECS),
            ..Options::default()
        },
    );
    for n in nodes.iter_mut() {
        n.capture_logs();
        n.start();
    }
    for n in &nodes {
        wait_ready(n, 2).await;
    }

    // alice logs in on a: a serves her session last.
    let alice = Browser::new();
    let (status, _) = login(&alice, &nodes[0], "alice").await;
    assert_eq!(status, 200, "{manager}: login on a");
    let cookie = alice.session_cookie(&nodes[0]).expect("a session cookie");
    let session = LogId::of_text(&cookie).to_string();
    // Replicated before the kill (b and c list her one session, served by a), asked
    // without touching it.
    let deadline = Instant::now() + Duration::from_secs(5);
    for n in &nodes[1..] {
        loop {
            let list = sessions_of(n, "alice").await;
            let listed: Vec<(&str, &str)> = list["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| (s["session"].as_str().unwrap(), s["route"].as_str().unwrap()))
                .collect();
            if listed == [(session.as_str(), "a")] {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{manager}: {} does not list alice's session {session} served by a: {list}",
                n.route
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    nodes[0].kill9();
    let killed = Instant::now();
    let survivors = &nodes[1..];
    let expired_lines = || -> Vec<(String, String)> {
        survivors
            .iter()
            .flat_map(|n| {
                cluster_events(&n.log_lines(), "expired", &session)
                    .into_iter()
                    .map(|l| (n.route.clone(), l))
            })
            .collect()
    };
    let all_events = || -> String {
        nodes
            .iter()
            .flat_map(|n| {
                n.log_lines()
                    .into_iter()
                    .filter(|l| l.contains("cluster event") || l.contains(&session))
                    .map(|l| format!("[{}] {l}", n.route))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };

    // The event comes, once.
    let first = loop {
        if !expired_lines().is_empty() {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < EVENT_LIMIT,
            "{manager}: no `cluster event kind=expired session={session}` line on b or c \
             {EVENT_LIMIT:?} after a (which served it last) was killed: the expiry event \
             was lost. The nodes' cluster events and lines about the session:\n{}",
            all_events()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(SETTLE).await;
    let lines = expired_lines();
    assert_eq!(
        lines.len(),
        1,
        "{manager}: exactly one expired event for {session} on the survivors, got {}:\n{}",
        lines.len(),
        all_events()
    );
    let (node, line) = &lines[0];
    assert_eq!(
        log_field(line, "principal").as_deref(),
        Some("alice"),
        "{manager}: {line}"
    );
    let by = log_field(line, "delivered_by").unwrap_or_default();
    assert_eq!(
        &by, node,
        "{manager}: delivered_by names the node that logged it: {line}"
    );
    assert!(by == "b" || by == "c", "{manager}: delivered by a survivor: {line}");
    assert_eq!(
        cluster_events(&nodes[0].log_lines(), "expired", &session),
        Vec::<String>::new(),
        "{manager}: a, killed before the timeout, delivered nothing"
    );

    // The session is gone on the survivors (the cookie sent by hand on each: a browser
    // might drop it after the first 401).
    let plain = reqwest::Client::new();
    for n in survivors {
        let r = plain
            .get(n.url("/whoami"))
            .header("cookie", format!("TRIBESSESSIONID={cookie}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{manager}: alice's expired cookie on {}", n.route);
        let list = sessions_of(n, "alice").await;
        assert_eq!(list["sessions"], Value::Array(vec![]), "{manager}: on {}", n.route);
    }
    println!(
        "{manager}: expired event {first:?} after the kill, by {by}; test took {:?}",
        started.elapsed()
    );
}

/// `GET /sessions-of/{user}` on `node`.
async fn sessions_of(node: &DemoNode, user: &str) -> Value {
    let r = reqwest::get(node.url(&format!("/sessions-of/{user}"))).await.unwrap();
    assert_eq!(r.status(), 200, "GET /sessions-of/{user} on {}", node.route);
    r.json().await.unwrap()
}
