//! The session browser over real HTTP and real channels: off without a token (404),
//! refusing without it or with another (401), finding a session by its log hash on every
//! holder (a member that does not answer shown as such), and invalidating it on every
//! node, for both managers (a BackupManager node without a copy asks a holder).

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use serde_json::Value;
use tribes_axum::{AdminToken, StatusRouter};
use tribes_sessions::{LogId, ManagerKind};

const TOKEN: &str = "test-admin-token-0123456789";

fn on(s: StatusRouter) -> StatusRouter {
    s.with_admin_token(AdminToken::new(TOKEN).unwrap())
        .with_shown_values(["x"])
        .with_lookup_timeout(Duration::from_millis(800))
}

/// The log hash of a cookie value `id.route`, as the browser's form takes it.
fn hash_of(cookie: &str) -> String {
    LogId::of_text(cookie).to_string()
}

async fn lookup(n: &Node, hash: &str) -> Value {
    let url = n.url(&format!(
        "/cluster/sessions.json?context=%2Fapp&hash={}",
        hash.replace('#', "%23")
    ));
    let r = send("GET", &url, None, &[bearer_ref()]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body.parse().unwrap()
}

async fn invalidate(n: &Node, hash: &str) -> (StatusCode, Value) {
    let r = client()
        .post(n.url("/cluster/sessions/invalidate"))
        .bearer_auth(TOKEN)
        .header("accept", "application/json")
        .form(&[("context", "/app"), ("hash", hash)])
        .send()
        .await
        .unwrap();
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
    (status, r.json().await.unwrap())
}

fn answers(v: &Value) -> Vec<(String, String)> {
    let mut a: Vec<(String, String)> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let answer = m["answer"].as_str().unwrap().to_owned();
            let holds = m["sessions"].as_array().is_some_and(|s| !s.is_empty());
            let answer = if answer == "holds" && !holds {
                "none".into()
            } else {
                answer
            };
            (m["route"].as_str().unwrap().to_owned(), answer)
        })
        .collect();
    a.sort();
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_without_a_token_and_refused_without_it() {
    init_tracing();
    let off = node("A", &[], |b| b, |l| l).await;
    let on_ = node_with("B", &[&off], |b| b, |l| l, on).await;
    for (method, path) in [
        ("GET", "/cluster/sessions"),
        ("GET", "/cluster/sessions.json?hash=%2300000000"),
        ("POST", "/cluster/sessions/invalidate"),
    ] {
        let r = send(method, &off.url(path), None, &[bearer_ref()]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {path} while off");
        assert!(
            r.body.contains("session browser is off") && r.body.contains("admin token"),
            "a clear 404: {}",
            r.body
        );
        assert!(r.headers.get("www-authenticate").is_none());

        for auth in [
            None,
            Some("Bearer wrong-token-0123456789"),
            Some("Basic YWRtaW46bm9wZQ=="),
        ] {
            let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
            let r = send(method, &on_.url(path), None, &headers).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {path} with {auth:?}");
            assert_eq!(
                r.headers["www-authenticate"], "Basic realm=\"tribes session browser\", charset=\"UTF-8\"",
                "a browser can log in"
            );
            assert_eq!(r.headers["cache-control"], "no-store");
        }
    }
    // Basic with any user name and the token as the password: the page.
    let basic = format!("Basic {}", base64_encode(&format!("admin:{TOKEN}")));
    let r = send("GET", &on_.url("/cluster/sessions"), None, &[("authorization", &basic)]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.contains("<h1>Session browser <span>on B</span></h1>"),
        "{}",
        r.body
    );
    assert!(
        r.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    // A wrong hash is a clear 400, not a lookup.
    let r = send(
        "GET",
        &on_.url("/cluster/sessions.json?hash=nope"),
        None,
        &[bearer_ref()],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("8 hex digits"), "{}", r.body);
    // An invalidation posted from another site's page is refused even with the credential.
    let r = send(
        "POST",
        &on_.url("/cluster/sessions/invalidate"),
        None,
        &[("authorization", &basic), ("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The dashboard links the browser only where it is on.
    assert!(
        get_(&on_.url("/cluster"), None)
            .await
            .body
            .contains("href=\"sessions\"")
    );
    assert!(
        !get_(&off.url("/cluster"), None)
            .await
            .body
            .contains("href=\"sessions\"")
    );
}

fn bearer_ref() -> (&'static str, &'static str) {
    ("authorization", "Bearer test-admin-token-0123456789")
}

fn base64_encode(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_finds_every_holder_and_invalidates_everywhere() {
    init_tracing();
    let a = node_with("A", &[], |b| b, |l| l, on).await;
    let b = node_with("B", &[&a], |b| b, |l| l, on).await;
    let c = node_with("C", &[&a, &b], |b| b, |l| l, on).await;
    wait_mesh(&[&a, &b, &c]).await;
    // A member of the channel without a status router: it never answers.
    let silent = channel(
        "S",
        &[
            a.channel.local().addr(),
            b.channel.local().addr(),
            c.channel.local().addr(),
        ],
    )
    .await;
    wait_until("B sees S", Duration::from_secs(10), || {
        b.channel.members().iter().any(|m| m.name() == "S")
    })
    .await;

    let cookie = post_(&a.url("/set/x/hello"), None).await.session_cookie().unwrap();
    post_(&a.url("/set/secret/s3cr3t"), Some(&cookie)).await;
    let hash = hash_of(&cookie);
    let found = lookup(&b, &hash).await;
    assert_eq!(found["node"], "B");
    assert_eq!(found["log_id"], hash.as_str());
    let mut holders: Vec<&str> = found["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    holders.sort();
    assert_eq!(holders, ["A", "B", "C"], "{found}");
    assert_eq!(
        answers(&found),
        [
            ("A".into(), "holds".into()),
            ("B".into(), "holds".into()),
            ("C".into(), "holds".into()),
            ("S".into(), "no_answer".into())
        ],
        "{found}"
    );
    let a_copy = &found["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["route"] == "A")
        .unwrap()["sessions"][0];
    assert_eq!(a_copy["version"], 2, "{a_copy}");
    let attrs = a_copy["attributes"].as_array().unwrap();
    assert_eq!(attrs[0]["name"], "x");
    assert_eq!(attrs[0]["kind"], "string");
    assert_eq!(attrs[0]["value"], "\"hello\"", "x is opted in");
    assert_eq!(attrs[1]["name"], "secret");
    assert_eq!(attrs[1]["len"], 7);
    assert!(attrs[1]["value"].is_null(), "secret is not opted in: {a_copy}");
    assert!(!found.to_string().contains(split(&cookie).0), "the id never appears");
    // The page says the same in words.
    let r = send(
        "GET",
        &b.url(&format!(
            "/cluster/sessions?context=%2Fapp&hash={}",
            hash.replace('#', "%23")
        )),
        None,
        &[bearer_ref()],
    )
    .await;
    assert!(
        r.body.contains("data-route=\"S\" data-answer=\"no_answer\""),
        "{}",
        r.body
    );
    assert!(!r.body.contains("s3cr3t") && !r.body.contains(split(&cookie).0));

    let (status, outcome) = invalidate(&b, &hash).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(outcome["outcome"], "invalidated");
    assert_eq!(
        outcome["by"], "B",
        "B holds a copy (delta): it invalidates through its own manager"
    );
    // Sync-ack: the invalidation is on every node when the answer comes.
    for n in [&a, &b, &c] {
        assert!(
            !n.manager.contains(&split(&cookie).0.parse().unwrap()),
            "gone on {:?}",
            n.channel.local().name()
        );
        assert_eq!(get_(&n.url("/get/x"), Some(&cookie)).await.body, "-");
    }
    let (status, outcome) = invalidate(&b, &hash).await;
    assert_eq!(
        (status, &outcome["outcome"]),
        (StatusCode::NOT_FOUND, &Value::from("not_found"))
    );
    silent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_a_node_without_a_copy_asks_a_holder_to_invalidate() {
    init_tracing();
    let backup = |b: tribes_sessions::SessionManagerBuilder| b.with_kind(ManagerKind::Backup { backup_count: 1 });
    let a = node_with("A", &[], backup, |l| l, on).await;
    let b = node_with("B", &[&a], backup, |l| l, on).await;
    let c = node_with("C", &[&a, &b], backup, |l| l, on).await;
    wait_mesh(&[&a, &b, &c]).await;
    let cookie = post_(&a.url("/set/x/1"), None).await.session_cookie().unwrap();
    let id = split(&cookie).0.parse().unwrap();
    let hash = hash_of(&cookie);
    let nodes = [&a, &b, &c];
    let outsider = nodes
        .iter()
        .find(|n| !n.manager.contains(&id))
        .expect("one backup: one node without a copy");
    let found = lookup(outsider, &hash).await;
    let mut holders: Vec<String> = found["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_owned())
        .collect();
    holders.sort();
    let mut expected: Vec<String> = nodes
        .iter()
        .filter(|n| n.manager.contains(&id))
        .map(|n| n.channel.local().name().to_owned())
        .collect();
    expected.sort();
    assert_eq!(holders, expected, "{found}");
    assert_eq!(holders.len(), 2, "primary and one backup: {found}");

    let (status, outcome) = invalidate(outsider, &hash).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(outcome["outcome"], "invalidated");
    assert!(
        holders.contains(&outcome["by"].as_str().unwrap().to_owned()),
        "a holder did it: {outcome}"
    );
    for n in nodes {
        wait_until("the session gone on every node", Duration::from_secs(5), || {
            !n.manager.contains(&id)
        })
        .await;
        assert_eq!(get_(&n.url("/get/x"), Some(&cookie)).await.body, "-");
    }
}
