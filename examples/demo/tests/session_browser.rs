//! The session browser on three real `tribes-demo` processes (`--sync`, an admin token
//! file, `--show-values count`): a user makes a session on a; the browser on b refuses
//! without the credential and with a wrong one, and with it finds the session by its log
//! hash on a, b and c; an invalidation through the browser, after which the user's
//! cookie has no session on any node (a request on a, b and c each gets a fresh one).
//! The second test does the same in headless Chromium: the page passes the accessibility
//! check, is used with the keyboard, and its button invalidates the session. With
//! `TRIBES_UPDATE_DOCS=1` its screenshot is copied to `docs/images/session-browser.png`.

mod common;

use std::time::Duration;

use common::cdp::{Browser as Chromium, a11y_script, chromium_binary};
use common::*;
use serde_json::Value;

const TOKEN: &str = "demo-admin-token-7f3a9c1e5b";

/// A token file and the flags that turn the browser on.
fn browser_options() -> Options {
    let path =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("admin-token-{}", std::process::id()));
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    Options {
        sync: true,
        extra_args: vec![
            "--admin-token-file".into(),
            path.display().to_string(),
            "--show-values".into(),
            "count".into(),
        ],
        ..Options::default()
    }
}

async fn started(opts: &Options) -> Vec<DemoNode> {
    let mut nodes = cluster(3, opts);
    start_all(&mut nodes).await;
    nodes
}

/// `GET /counter` with exactly this cookie (no jar): the count and the session's hash.
async fn counter_with(node: &DemoNode, cookie: &str) -> (u64, String) {
    let r = reqwest::Client::new()
        .get(node.url("/counter"))
        .header("cookie", format!("TRIBESSESSIONID={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "GET /counter on {}", node.route);
    let v: Value = r.json().await.unwrap();
    (v["count"].as_u64().unwrap(), v["session"].as_str().unwrap().to_owned())
}

fn lookup_url(node: &DemoNode, page: &str, hash: &str) -> String {
    node.url(&format!(
        "/cluster/{page}?context=demo&hash={}",
        hash.replace('#', "%23")
    ))
}

/// After the invalidation: the old cookie has no session on any node.
async fn gone_everywhere(nodes: &[DemoNode], cookie: &str, hash: &str) {
    for n in nodes {
        let (count, fresh) = counter_with(n, cookie).await;
        assert_eq!(
            count, 1,
            "{}: the invalidated session's count is gone, a fresh session starts at 1",
            n.route
        );
        assert_ne!(fresh, hash, "{}: a fresh session, not the invalidated one", n.route);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_finds_a_session_by_hash_and_invalidates_it_on_every_node() {
    let nodes = started(&browser_options()).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let user = Browser::new();
    assert_eq!(count(&user, a).await, 1);
    assert_eq!(count(&user, a).await, 2);
    let cookie = user.session_cookie(a).expect("a session cookie");
    let (_, hash) = counter_with(a, &cookie).await; // count 3
    assert!(hash.starts_with('#') && hash.len() == 9, "{hash}");
    let http = reqwest::Client::new();

    // Without the credential, or with a wrong one: refused, with a way to log in.
    for auth in [
        None,
        Some(format!("Bearer {TOKEN}x")),
        Some("Basic YWRtaW46d3Jvbmc=".to_owned()),
    ] {
        let mut req = http.get(lookup_url(b, "sessions.json", &hash));
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "with {auth:?}");
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Basic realm="),
            "{:?}",
            r.headers()
        );
        let body = r.text().await.unwrap();
        assert!(!body.contains("count"), "nothing of the session: {body}");
    }
    let r = http
        .post(b.url("/cluster/sessions/invalidate"))
        .form(&[("context", "demo"), ("hash", hash.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no invalidation without the credential");
    assert_eq!(counter_with(a, &cookie).await.0, 4, "the session is still there");

    // With it: b finds the session on a, b and c.
    let r = http
        .get(lookup_url(b, "sessions.json", &hash))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let found: Value = r.json().await.unwrap();
    let mut holders: Vec<&str> = found["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    holders.sort();
    assert_eq!(holders, ["a", "b", "c"], "{found}");
    for m in found["members"].as_array().unwrap() {
        let s = &m["sessions"][0];
        assert_eq!(s["log_id"], hash.as_str(), "{m}");
        assert_eq!(s["version"], 4, "sync-ack: every copy at the last version: {m}");
        let count = &s["attributes"][0];
        assert_eq!(
            (&count["name"], &count["kind"], &count["value"]),
            (&Value::from("count"), &Value::from("integer"), &Value::from("4")),
            "{m}"
        );
    }
    assert!(
        !found.to_string().contains(cookie.split('.').next().unwrap()),
        "never the id"
    );
    // The page, logged in the way a browser does (Basic, any user name).
    let page = http
        .get(lookup_url(b, "sessions", &hash))
        .basic_auth("admin", Some(TOKEN))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Held by b, a, c."), "{page}");

    // Invalidate through the browser on b, as its form does.
    let r = http
        .post(b.url("/cluster/sessions/invalidate"))
        .basic_auth("admin", Some(TOKEN))
        .header("accept", "application/json")
        .form(&[("context", "demo"), ("hash", hash.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let outcome: Value = r.json().await.unwrap();
    assert_eq!(outcome["outcome"], "invalidated", "{outcome}");
    gone_everywhere(&nodes, &cookie, &hash).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_page_is_accessible_and_its_button_invalidates() {
    assert!(
        chromium_binary().is_some(),
        "this test drives a real browser: install Chromium (Debian/Ubuntu: apt-get install -y chromium; .ci/run installs it)"
    );
    let nodes = started(&browser_options()).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let user = Browser::new();
    assert_eq!(count(&user, a).await, 1);
    let cookie = user.session_cookie(a).expect("a session cookie");
    let (_, hash) = counter_with(a, &cookie).await;

    let mut chromium = Chromium::launch().await;
    chromium.call("Network.enable", serde_json::json!({})).await;
    // Logged in (the header a browser sends after its Basic login dialog).
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("admin:{TOKEN}"));
    chromium
        .call(
            "Network.setExtraHTTPHeaders",
            serde_json::json!({ "headers": { "Authorization": format!("Basic {basic}") } }),
        )
        .await;
    chromium.open(&lookup_url(b, "sessions", &hash)).await;
    assert_eq!(chromium.eval("document.title").await, "tribes session browser on b");
    let holders = chromium
        .eval("[...document.querySelectorAll('#members tbody tr')].map(t => t.dataset.route + ':' + t.dataset.answer)")
        .await;
    assert_eq!(holders, serde_json::json!(["b:holds", "a:holds", "c:holds"]));
    let problems = chromium.eval(&a11y_script(20)).await;
    assert_eq!(
        problems,
        serde_json::json!([]),
        "accessibility problems on the session browser"
    );
    let shot = chromium.screenshot("session-browser").await;
    eprintln!("screenshot: {}", shot.display());
    if std::env::var_os("TRIBES_UPDATE_DOCS").is_some() {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/images/session-browser.png");
        std::fs::copy(&shot, docs).unwrap();
    }

    // Keyboard: Tab reaches the invalidate button, with a visible focus ring; Enter presses it.
    let mut reached = false;
    for _ in 0..12 {
        chromium.press("Tab", 9).await;
        if chromium.eval("document.activeElement.id").await == "invalidate" {
            reached = true;
            break;
        }
    }
    assert!(reached, "Tab reaches the invalidate button");
    let ring = chromium
        .eval("getComputedStyle(document.activeElement).outlineStyle")
        .await;
    assert_ne!(ring, "none", "a visible focus ring");
    chromium.press("Enter", 13).await;
    let start = std::time::Instant::now();
    loop {
        let outcome = chromium
            .eval("document.getElementById('outcome') ? document.getElementById('outcome').dataset.outcome || '' : ''")
            .await;
        if outcome == "invalidated" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the page reports the invalidation; it shows: {}",
            chromium.eval("document.body.innerText").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let problems = chromium.eval(&a11y_script(10)).await;
    assert_eq!(problems, serde_json::json!([]), "accessibility problems on the result");
    gone_everywhere(&nodes, &cookie, &hash).await;
}
