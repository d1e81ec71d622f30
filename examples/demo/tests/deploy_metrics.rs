//! `deploy/prometheus/alerts.yml` and `deploy/grafana/tribes.json` name only metrics
//! that a running node exports: two `tribes-demo` nodes with file stores are scraped,
//! and every `tribes_*` name in the rules and the dashboard must have a sample.
//! The rules also pass `promtool check rules` (required under `CI=true`, where `.ci/run`
//! installs it).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `tribes_…` name in `text`, except Rust paths such as `tribes_axum::…`.
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("tribes_") {
        let after = &rest[i..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let boundary = i == 0 || !rest[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
        if boundary && !after[end..].starts_with("::") {
            out.insert(after[..end].to_owned());
        }
        rest = &after[end..];
    }
    out
}

/// The metric names with at least one sample in a Prometheus text scrape.
fn sampled(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn names_are_found_in_text() {
    let n = names("expr: rate(tribes_a_total[1m]) / tribes_b{x=\"y\"} # tribes_axum::metrics_router not_tribes_c");
    assert_eq!(n.into_iter().collect::<Vec<_>>(), ["tribes_a_total", "tribes_b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_alerts_and_the_grafana_dashboard_name_is_exported() {
    let dir = std::env::temp_dir().join(format!("tribes-deploy-metrics-{}", std::process::id()));
    let mut nodes = cluster(2, &Options::default());
    for (i, n) in nodes.iter_mut().enumerate() {
        n.push_args([
            "--store".to_string(),
            format!("file:{}", dir.join(i.to_string()).display()),
        ]);
        n.start();
    }
    for n in &nodes {
        wait_ready(n, 1).await;
    }
    let client = Browser::new();
    count(&client, &nodes[0]).await;
    // The store's first health check.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut exported = BTreeSet::new();
    for n in &nodes {
        let r = reqwest::get(n.url("/metrics")).await.unwrap();
        assert_eq!(r.status(), 200);
        exported.extend(sampled(&r.text().await.unwrap()));
    }

    let alerts = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yml")).unwrap();
    let grafana = std::fs::read_to_string(repo().join("deploy/grafana/tribes.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&grafana).expect("tribes.json is JSON");
    assert!(
        dashboard["panels"].as_array().is_some_and(|p| p.len() >= 8),
        "the Grafana dashboard has its panels"
    );
    for (file, text) in [("alerts.yml", &alerts), ("tribes.json", &grafana)] {
        let named = names(text);
        assert!(named.len() >= 8, "{file} names metrics: {named:?}");
        let missing: Vec<&String> = named.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "{file} names metrics no running node exports: {missing:?}\nexported: {exported:?}"
        );
    }

    match std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(repo().join("deploy/prometheus/alerts.yml"))
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check rules: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "promtool is missing ({e}): apt-get install prometheus provides it \
             (cargo xtask test installs it, or leaves this test out with --skip promtool)"
        ),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
