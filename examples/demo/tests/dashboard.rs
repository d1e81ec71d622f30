//! The `/cluster/` dashboard in a real browser (headless Chromium) on a three-node
//! demo: node a's page lists a, b and c as ready and draws their charts; after
//! `kill -9` of c, within the drop time, c shows as gone with its reason and the event
//! list says it was suspected, then gone.
//!
//! With `TRIBES_UPDATE_DOCS=1` the screenshots are also copied to `docs/images/`
//! (the ones the README shows).

mod common;

use std::time::{Duration, Instant};

use common::cdp::{Browser, a11y_script, chromium_binary};
use common::*;
use serde_json::Value;

/// The demo's membership drop time (tribes' default).
const DROP_TIME: Duration = Duration::from_secs(3);
/// The page re-fetches itself this often, and the nodes sample themselves every second.
const REFRESH: Duration = Duration::from_secs(2);

/// Polls `script` (a JavaScript expression) in the page until it returns `true`.
async fn wait_js(browser: &mut Browser, what: &str, limit: Duration, script: &str) -> Duration {
    let start = Instant::now();
    loop {
        if browser.eval(script).await == Value::Bool(true) {
            return start.elapsed();
        }
        if start.elapsed() > limit {
            let body = browser.eval("document.body.innerText").await;
            panic!(
                "timed out after {limit:?} waiting for {what}; the page shows:\n{}",
                body.as_str().unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn shot(browser: &mut Browser, name: &str) {
    let path = browser.screenshot(name).await;
    eprintln!("screenshot: {}", path.display());
    if std::env::var_os("TRIBES_UPDATE_DOCS").is_some() {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/images");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::copy(&path, docs.join(format!("{name}.png"))).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_cluster_and_a_killed_member() {
    assert!(
        chromium_binary().is_some(),
        "this test drives a real browser: install Chromium (Debian/Ubuntu: apt-get install -y chromium; .ci/run installs it)"
    );
    let mut nodes = cluster(3, &Options::default());
    start_all(&mut nodes).await;
    // Traffic on a and b while the page is open, so the charts have a shape.
    let (a_url, b_url) = (nodes[0].url("/counter"), nodes[1].url("/counter"));
    let traffic = tokio::spawn(async move {
        let client = common::Browser::new();
        for i in 0u64.. {
            let url = if i % 3 == 0 { &b_url } else { &a_url };
            let r = client.get(url).send().await.expect("GET /counter");
            assert_eq!(r.status(), 200);
            tokio::time::sleep(Duration::from_millis(100 + (i % 7) * 40)).await;
        }
    });

    let mut browser = Browser::launch().await;
    browser
        .call(
            "Emulation.setDeviceMetricsOverride",
            serde_json::json!({ "width": 1440, "height": 760, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await;
    browser.open(&nodes[0].url("/cluster/")).await;
    assert_eq!(
        browser.eval("document.title").await,
        "tribes cluster, seen from a",
        "the dashboard is served at /cluster/"
    );
    wait_js(
        &mut browser,
        "a, b and c listed as ready",
        Duration::from_secs(15),
        "['a','b','c'].every(r => { const t = document.querySelector(`tr[data-route='${r}']`); \
         return t && t.dataset.state === 'ready' && t.querySelector('.badge').textContent === 'ready'; })",
    )
    .await;
    let rows = browser
        .eval("[...document.querySelectorAll('#members tbody tr')].map(t => t.dataset.route)")
        .await;
    assert_eq!(
        rows,
        serde_json::json!(["a", "b", "c"]),
        "a first (this node), then by route"
    );
    // Every member's five charts draw lines with data, and the requests chart of a
    // (which served six of the requests) is not flat.
    wait_js(
        &mut browser,
        "the charts of a, b and c drawn with data",
        Duration::from_secs(10),
        "['a','b','c'].every(r => { const lines = document.querySelectorAll(`tr[data-route='${r}'] svg.chart polyline`); \
         return lines.length === 7 && [...lines].every(l => Number(l.dataset.points) >= 2 && l.getAttribute('points').split(' ').length >= 2); })",
    )
    .await;
    // Ten seconds of history for the screenshot.
    wait_js(
        &mut browser,
        "ten samples in a's requests chart",
        Duration::from_secs(20),
        "Number(document.querySelector(\"tr[data-route='a'] polyline\").dataset.points) >= 10",
    )
    .await;
    let label = browser
        .eval("document.querySelector(\"tr[data-route='a'] svg.chart\").getAttribute('aria-label')")
        .await;
    let label = label.as_str().unwrap_or_default().to_owned();
    let peak: f64 = label
        .split("peak ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a peak in {label:?}"));
    assert!(peak > 0.0, "a served requests: {label}");
    let sessions = browser
        .eval("document.querySelector(\"tr[data-route='b'] li[data-context='demo']\").textContent")
        .await;
    assert!(
        sessions.as_str().unwrap_or_default().starts_with("demo 1 "),
        "b holds the one session: {sessions}"
    );
    shot(&mut browser, "dashboard-ready").await;

    // Accessibility: structure and labels, text contrast (WCAG AA, 4.5:1), keyboard.
    let problems = browser.eval(&a11y_script(50)).await;
    assert_eq!(
        problems,
        serde_json::json!([]),
        "accessibility problems on the dashboard"
    );
    browser
        .call(
            "Input.dispatchKeyEvent",
            serde_json::json!({ "type": "keyDown", "key": "Tab", "code": "Tab", "windowsVirtualKeyCode": 9 }),
        )
        .await;
    browser
        .call(
            "Input.dispatchKeyEvent",
            serde_json::json!({ "type": "keyUp", "key": "Tab", "code": "Tab", "windowsVirtualKeyCode": 9 }),
        )
        .await;
    let focused = browser
        .eval("[document.activeElement.textContent, getComputedStyle(document.activeElement).outlineStyle]")
        .await;
    assert_eq!(focused[0], "JSON", "Tab reaches the first link: {focused}");
    assert_ne!(focused[1], "none", "with a visible focus ring: {focused}");
    // The refresh replaces the live parts only: the focused link survives it.
    tokio::time::sleep(REFRESH + Duration::from_millis(500)).await;
    assert_eq!(browser.eval("document.activeElement.textContent").await, "JSON");

    nodes[2].kill9();
    let killed = Instant::now();
    wait_js(
        &mut browser,
        "c shown as gone with its reason",
        // Membership removes c within the drop time (usually at once: its connection
        // closes), the dashboard takes the event at once, the page refreshes every 2 s.
        DROP_TIME + REFRESH + Duration::from_secs(1),
        "(() => { const t = document.querySelector(\"tr[data-route='c']\"); \
         return !!t && t.dataset.state === 'gone' && t.querySelector('.state-detail').textContent.includes('TCP check'); })()",
    )
    .await;
    let took = killed.elapsed();
    eprintln!("c shown as gone {took:?} after kill -9");
    let event = browser
        .eval("[...document.querySelectorAll(\"#events li[data-member='c']\")].map(l => l.textContent).find(t => t.includes('c is gone')) || ''")
        .await;
    let event = event.as_str().unwrap_or_default();
    assert!(
        event.contains("c is gone: "),
        "the event list says c is gone: {event:?}"
    );
    assert!(event.contains("Fix:"), "with a fix: {event}");
    // Before it was gone it was suspected: its connection closed, and membership verified
    // it over TCP (both happen within milliseconds; the list is newest first).
    let about_c = browser
        .eval("[...document.querySelectorAll(\"#events li[data-member='c']\")].map(l => l.textContent)")
        .await;
    let about_c: Vec<&str> = about_c
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        about_c.len() >= 2 && about_c[0].contains("c is gone: ") && about_c[1].contains("c is suspected: "),
        "the event list says c was suspected, then gone: {about_c:#?}"
    );
    let summary = browser.text("summary").await;
    assert!(summary.contains("2 ready") && summary.contains("1 gone"), "{summary}");
    shot(&mut browser, "dashboard-c-gone").await;

    // The page keeps working when the node serving it dies.
    traffic.abort();
    nodes[0].kill9();
    wait_js(
        &mut browser,
        "the page to say its node does not answer",
        REFRESH * 3,
        "!document.getElementById('offline').hidden",
    )
    .await;
}
