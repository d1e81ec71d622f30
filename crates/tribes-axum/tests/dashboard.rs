//! The `/cluster/` dashboard over real HTTP and real channels: every member on the
//! page of one, their reports travelling on the channel, and a member that leaves or
//! sends no report shown as such.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::*;
use serde_json::Value;

async fn cluster_json(n: &Node) -> Value {
    get_(&n.url("/cluster/status"), None).await.body.parse().unwrap()
}

fn member<'a>(st: &'a Value, route: &str) -> Option<&'a Value> {
    st["cluster"].as_array()?.iter().find(|m| m["route"] == route)
}

/// Polls `/cluster/status` of `n` until `cond` holds, or panics with the last document.
async fn wait_cluster(n: &Node, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let st = cluster_json(n).await;
        if cond(&st) {
            return st;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "waiting for {what}: {st}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_page_shows_every_member_its_charts_and_a_member_leaving() {
    init_tracing();
    let a = node("A", &[], |b| b, |l| l).await;
    let b = node("B", &[&a], |b| b, |l| l).await;
    let c = node("C", &[&a, &b], |b| b, |l| l).await;
    wait_mesh(&[&a, &b, &c]).await;
    for _ in 0..5 {
        post_(&b.url("/set/x/1"), None).await.session_cookie().unwrap();
    }

    let st = wait_cluster(&a, "A, B and C ready on A's page", |st| {
        ["A", "B", "C"]
            .iter()
            .all(|r| member(st, r).is_some_and(|m| m["state"] == "ready"))
    })
    .await;
    assert_eq!(member(&st, "A").unwrap()["local"], true);
    assert_eq!(member(&st, "B").unwrap()["addr"], b.channel.local().addr().to_string());
    // B's sessions arrive in B's report (delta manager: every node holds all 5).
    wait_cluster(&a, "B's 5 sessions", |st| {
        member(st, "B").is_some_and(|m| m["sessions"]["/app"] == 5)
    })
    .await;
    // Let a few samples accumulate, so each chart has points.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Nested at "/cluster" (no slash): served there, with links relative to "/cluster/".
    {
        let path = "/cluster";
        let r = get_(&a.url(path), None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(r.headers["content-type"].to_str().unwrap().starts_with("text/html"));
        let html = &r.body;
        assert!(html.contains("<base href=\"/cluster/\">"), "{html}");
        for route in ["A", "B", "C"] {
            assert!(
                html.contains(&format!(
                    "id=\"member-{route}\" data-route=\"{route}\" data-state=\"ready\""
                )),
                "{route} ready on {path}: {html}"
            );
        }
        let drawn = html
            .split("data-points=\"")
            .skip(1)
            .filter_map(|s| s.split('"').next()?.parse::<usize>().ok())
            .filter(|n| *n >= 2)
            .count();
        assert!(drawn >= 3 * 5, "every member's charts have points: {drawn}");
        // B served 5 requests: its requests chart is not flat; A's and C's are.
        let peak = |route: &str| {
            let label = format!("aria-label=\"{route}: ");
            let rest = html.split(&label).nth(1).expect("a requests chart");
            let peak = rest.split("peak ").nth(1).unwrap().split(' ').next().unwrap();
            peak.parse::<f64>().unwrap()
        };
        assert!(peak("B") > 0.0, "{html}");
        assert_eq!((peak("A"), peak("C")), (0.0, 0.0));
        assert!(html.contains("C joined the cluster"), "{html}");
    }

    // C leaves cleanly: A's page says so, with the reason, and still renders.
    c.manager.shutdown().await;
    c.channel.shutdown().await;
    let st = wait_cluster(&a, "C gone", |st| member(st, "C").is_some_and(|m| m["state"] == "gone")).await;
    assert!(
        member(&st, "C").unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("shut down cleanly"),
        "{st}"
    );
    let html = get_(&a.url("/cluster"), None).await.body;
    assert!(html.contains("data-route=\"C\" data-state=\"gone\""), "{html}");
    assert!(html.contains("C is gone: it shut down cleanly"), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_a_status_router_shows_as_sending_no_report() {
    init_tracing();
    let a = node("A", &[], |b| b, |l| l).await;
    // A bare channel: a member of the cluster that runs no dashboard.
    let bare = channel("bare", &[a.channel.local().addr()]).await;
    let st = wait_cluster(&a, "the bare member listed", |st| member(st, "bare").is_some()).await;
    assert_eq!(member(&st, "bare").unwrap()["state"], "no_report", "{st}");
    let html = wait_until_html(&a, "sent no status report").await;
    assert!(html.contains("data-route=\"bare\" data-state=\"no_report\""), "{html}");
    bare.shutdown().await;
}

async fn wait_until_html(n: &Node, text: &str) -> String {
    let start = Instant::now();
    loop {
        let html = get_(&n.url("/cluster"), None).await.body;
        if html.contains(text) {
            return html;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "waiting for {text:?}: {html}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
