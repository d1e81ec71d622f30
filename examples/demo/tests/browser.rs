//! A real browser (headless Chromium) through the demo page: click the counter on
//! one node, kill that node, open another node's page, and the count goes on; the
//! status page renders the members.

mod common;

use common::cdp::{Browser, chromium_binary};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_count_goes_on_in_a_real_browser_after_the_node_dies() {
    assert!(
        chromium_binary().is_some(),
        "this test drives a real browser: install Chromium (Debian: apt-get install -y chromium; \
         cargo xtask test installs it, or leaves this test out with --skip browser)"
    );
    let mut nodes = cluster(3, &Options::default());
    start_all(&mut nodes).await;
    let mut browser = Browser::launch().await;

    browser.open(&nodes[0].url("/")).await;
    assert_eq!(browser.text("node").await, "a");
    for expected in 1..=3 {
        browser.eval("document.getElementById('increment').click()").await;
        browser.wait_text("count", &expected.to_string()).await;
    }
    // The page shows the session's log hash; the id itself is in the HttpOnly cookie,
    // which page scripts cannot read, so it is read through DevTools.
    let hash = browser.text("session").await;
    assert!(hash.starts_with('#'), "the page shows a log hash, not the id: {hash}");
    let session = session_cookie(&mut browser).await;
    assert!(session.ends_with(".a"), "{session}");
    let shot = browser.screenshot("browser-node-a").await;
    eprintln!("screenshot: {}", shot.display());
    for n in &nodes[1..] {
        wait_status(n, "the session replicated", std::time::Duration::from_secs(10), |s| {
            sessions(s) == 1
        })
        .await;
    }

    nodes[0].kill9();

    browser.open(&nodes[1].url("/")).await;
    assert_eq!(browser.text("node").await, "b");
    assert_eq!(
        browser.text("count").await,
        "3",
        "the count must survive the node's death"
    );
    browser.eval("document.getElementById('increment').click()").await;
    browser.wait_text("count", "4").await;
    assert_eq!(browser.text("session").await, hash, "the same session goes on");
    let session_b = session_cookie(&mut browser).await;
    assert!(
        session_b.ends_with(".b"),
        "the cookie is rebound to node b: {session_b}"
    );
    browser.screenshot("browser-node-b").await;

    // The status page shows the surviving member.
    wait_status(&nodes[1], "a to be gone", std::time::Duration::from_secs(10), |s| {
        members(s) == 1
    })
    .await;
    browser.open(&nodes[1].url("/cluster/status.html")).await;
    let body = browser.eval("document.body.innerText").await;
    let body = body.as_str().unwrap_or_default();
    assert!(
        body.contains(&nodes[2].cluster.to_string()),
        "status page should list member c: {body}"
    );
    browser.screenshot("browser-status").await;
}

/// The session cookie (`id.route`) the browser holds, read through DevTools.
async fn session_cookie(browser: &mut Browser) -> String {
    let r = browser.call("Network.getCookies", serde_json::json!({})).await;
    r["cookies"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == "TRIBESSESSIONID"))
        .and_then(|c| c["value"].as_str())
        .unwrap_or_else(|| panic!("no TRIBESSESSIONID cookie in the browser: {r}"))
        .to_string()
}
