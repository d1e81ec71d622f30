//! The demo's options, on real processes: `--manager backup --backups 2`, `--use-ack` (each
//! commit counts an ack per backup), `--serialize-requests`, `--replicate-attributes`,
//! `--cart` (a second context); and no response body of the demo ever contains a session id (checked against the cookies).

mod common;

use std::time::Duration;

use common::*;

/// The cookie values (`id.route`) the jar holds for the node, by cookie name.
fn cookies(user: &Browser, node: &DemoNode, path: &str) -> Vec<String> {
    use reqwest::cookie::CookieStore;
    let url: reqwest::Url = node.url(path).parse().unwrap();
    let Some(header) = user.jar().cookies(&url) else {
        return Vec::new();
    };
    header
        .to_str()
        .unwrap()
        .split("; ")
        .filter_map(|c| c.split_once('=').map(|(_, v)| v.to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_options_work_and_no_body_holds_a_session_id() {
    let opts = Options {
        manager: Some("backup"),
        extra_args: [
            "--backups",
            "2",
            "--use-ack",
            "--serialize-requests",
            "--replicate-attributes",
            "^(count|user)$",
            "--cart",
        ]
        .map(String::from)
        .to_vec(),
        ..Options::default()
    };
    let mut nodes = cluster(3, &opts);
    for n in &mut nodes {
        n.start();
    }
    for n in &nodes {
        wait_ready(n, 2).await;
    }
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let user = Browser::new();
    let mut bodies: Vec<(String, String)> = Vec::new();
    let mut keep = |what: &str, body: String| bodies.push((what.to_owned(), body));

    put_key(&user, a, "user", "alice").await;
    put_key(&user, a, "secret", "kept-on-a").await;
    // --serialize-requests: 20 concurrent increments of one session on one node lose none.
    assert_eq!(count(&user, a).await, 1);
    // --use-ack: every commit waits for each backup's receipt, so each counts an ack
    // (an async commit counts none; greetings and transfers acked before this point).
    let acks = |s: &serde_json::Value| s["replication"]["acks"].as_u64().expect("replication.acks");
    let before = status(a).await.expect("a's status");
    assert_eq!(before["replication"]["send_mode"], "UseAck", "{before}");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let client = user.client.clone();
        let url = a.url("/counter");
        tasks.push(tokio::spawn(async move {
            client.get(url).send().await.unwrap().text().await.unwrap()
        }));
    }
    for t in tasks {
        keep("/counter", t.await.unwrap());
    }
    let r = user.get(a.url("/counter")).send().await.unwrap().text().await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&r).unwrap();
    assert_eq!(v["count"], 22, "serialized requests lose no update: {r}");
    keep("/counter", r);
    let after = status(a).await.expect("a's status");
    assert!(
        acks(&after) >= acks(&before) + 21 * 2,
        "21 use-ack commits to 2 backups each: {} acks before, {} after",
        acks(&before),
        acks(&after)
    );

    // --backups 2 with three nodes: every node holds the session.
    for n in [a, b, c] {
        wait_status(
            n,
            "the session on every node (2 backups)",
            Duration::from_secs(10),
            |s| sessions(s) == 1,
        )
        .await;
    }
    // --replicate-attributes: user replicated, secret not.
    assert_eq!(get_key(&user, b, "user").await.as_deref(), Some("alice"));
    assert_eq!(
        get_key(&user, b, "secret").await,
        None,
        "a filtered attribute was replicated"
    );
    assert_eq!(get_key(&user, a, "secret").await.as_deref(), Some("kept-on-a"));

    // --cart: a second context with its own cookie, replicated.
    let r = user.post(a.url("/cart/apple")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    keep("POST /cart/apple", r.text().await.unwrap());
    // Use-ack returns once b has the bytes, maybe before it applied them: poll.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = user.get(b.url("/cart")).send().await.unwrap().text().await.unwrap();
        let done = r == r#"["apple"]"#;
        keep("GET /cart", r.clone());
        if done {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the cart never reached b: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = wait_status(a, "both contexts listed", Duration::from_secs(10), |s| {
        s["contexts"].as_array().is_some_and(|c| c.len() == 2)
    })
    .await;
    assert_eq!(status["contexts"][1]["context"], "cart", "{status}");
    assert_eq!(status["manager"], "backup (2 backup copies)");

    // Every page of every node: no body contains a session id.
    for n in [a, b, c] {
        for path in [
            "/",
            "/counter",
            "/session/user",
            "/cart",
            "/cluster/",
            "/cluster/status",
            "/cluster/status.html",
            "/metrics",
        ] {
            let r = user.get(n.url(path)).send().await.unwrap();
            keep(path, r.text().await.unwrap());
        }
    }
    let mut ids = cookies(&user, a, "/");
    ids.extend(cookies(&user, a, "/cart"));
    assert!(ids.len() >= 2, "a session cookie and a cart cookie: {ids:?}");
    for cookie in &ids {
        let id = cookie.split('.').next().unwrap();
        assert!(id.len() >= 16, "{cookie}");
        for (what, body) in &bodies {
            assert!(!body.contains(id), "the session id is in the body of {what}: {body}");
        }
    }
    // What a page shows instead: the log hash.
    let v: serde_json::Value = user.get(a.url("/counter")).send().await.unwrap().json().await.unwrap();
    let main_id = cookies(&user, a, "/")[0].split('.').next().unwrap().to_owned();
    assert_eq!(v["session"], tribes_sessions::LogId::of_text(&main_id).to_string());
}
