//! The layer over real HTTP: one or two nodes in this process, each a real tribes
//! channel on loopback, a real session manager and axum on 127.0.0.1:0.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use tribes_axum::{NotReady, Secure};

async fn single() -> Node {
    init_tracing();
    node("A", &[], |b| b, |l| l).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_handlers_that_do_not_write_create_and_send_nothing() {
    let a = single().await;
    let r = get_(&a.url("/none"), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.set_cookies.is_empty(),
        "no cookie for a handler not touching the session: {r:?}"
    );
    let r = get_(&a.url("/get/x"), None).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "-"));
    assert!(
        r.set_cookies.is_empty(),
        "reading a missing session creates nothing: {r:?}"
    );
    let r = get_(&a.url("/id"), None).await;
    assert_eq!(r.body, "-");
    assert_eq!(a.manager.session_count(), 0);

    // An existing session that is only read: no cookie, no commit.
    let c = post_(&a.url("/set/x/1"), None).await.session_cookie().expect("created");
    let commits = a.manager.stats();
    let r = get_(&a.url("/get/x"), Some(&c)).await;
    assert_eq!(r.body, "1");
    assert!(r.set_cookies.is_empty(), "{r:?}");
    let after = a.manager.stats();
    assert_eq!(after.deltas_applied, commits.deltas_applied);
    assert_eq!(after.messages_sent, commits.messages_sent);

    // ...but the read is recorded as an access (touch), so the session does not expire.
    let sid: tribes_sessions::SessionId = split(&c).0.parse().unwrap();
    let before = a.manager.get(&sid).await.unwrap().last_accessed();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(get_(&a.url("/get/x"), Some(&c)).await.body, "1");
    assert!(a.manager.get(&sid).await.unwrap().last_accessed() > before, "touched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_always_commits_reads_too() {
    init_tracing();
    let a = node(
        "A",
        &[],
        |b| b.with_replicate_only_changes(false),
        |l| l.with_replicate(tribes_axum::ReplicateWhen::Always),
    )
    .await;
    let b = node("B", &[&a], |b| b, |l| l).await;
    wait_mesh(&[&a, &b]).await;
    let c = post_(&a.url("/set/x/1"), None).await.session_cookie().unwrap();
    let sent = a.manager.stats().messages_sent;
    assert_eq!(get_(&a.url("/get/x"), Some(&c)).await.body, "1");
    assert!(a.manager.stats().messages_sent > sent, "a read replicated");
    // A handler that never touches the session still costs nothing.
    let sent = a.manager.stats().messages_sent;
    get_(&a.url("/none"), Some(&c)).await;
    assert_eq!(a.manager.stats().messages_sent, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_attributes_and_secure_behind_a_tls_proxy() {
    let a = single().await;
    let r = post_(&a.url("/set/x/1"), None).await;
    let line = r.session_set_cookie().expect("a session cookie").to_string();
    let (id_part, route) = split(r.session_cookie().as_deref().unwrap()).to_owned_pair();
    assert_eq!(id_part.len(), 22);
    assert_eq!(route, "A");
    assert!(line.contains("HttpOnly"), "{line}");
    assert!(line.contains("SameSite=Lax"), "{line}");
    assert!(line.contains("Path=/"), "{line}");
    assert!(!line.contains("Secure"), "plain HTTP: {line}");
    assert!(!line.contains("Max-Age"), "a browser-session cookie: {line}");

    let r = send("POST", &a.url("/set/x/1"), None, &[("x-forwarded-proto", "https")]).await;
    let line = r.session_set_cookie().expect("a session cookie");
    assert!(line.contains("Secure"), "HTTPS via X-Forwarded-Proto: {line}");

    let b = node(
        "B",
        &[],
        |b| b,
        |l| {
            l.with_cookie_name("S")
                .with_cookie_path("/shop")
                .with_secure(Secure::Always)
                .with_same_site(tribes_axum::SameSite::Strict)
                .with_max_age(Some(Duration::from_secs(60)))
                .with_http_only(false)
        },
    )
    .await;
    let r = post_(&b.url("/set/x/1"), None).await;
    let line = r
        .set_cookies
        .iter()
        .find(|c| c.starts_with("S="))
        .expect("cookie S")
        .clone();
    for part in ["Path=/shop", "Secure", "SameSite=Strict", "Max-Age=60"] {
        assert!(line.contains(part), "{part} in {line}");
    }
    assert!(!line.contains("HttpOnly"), "{line}");
}

trait Pair {
    fn to_owned_pair(self) -> (String, String);
}
impl Pair for (&str, &str) {
    fn to_owned_pair(self) -> (String, String) {
        (self.0.to_owned(), self.1.to_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_unknown_cookies_are_no_session() {
    let a = single().await;
    for bad in ["garbage", "", "a.b.c", "AAAAAAAAAAAAAAAAAAAAAA.A", "%%%"] {
        let r = get_(&a.url("/get/x"), Some(bad)).await;
        assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "-"), "cookie {bad:?}");
        assert!(r.set_cookies.is_empty(), "cookie {bad:?}: {r:?}");
    }
    let r = post_(&a.url("/set/x/1"), Some("garbage")).await;
    assert_eq!(r.status, StatusCode::OK);
    let c = r.session_cookie().expect("a fresh session");
    assert_eq!(get_(&a.url("/get/x"), Some(&c)).await.body, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_paths_never_create_sessions() {
    let a = single().await;
    let r = post_(&a.url("/static/app.js"), None).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "filtered"));
    assert!(r.set_cookies.is_empty(), "{r:?}");
    assert_eq!(a.manager.session_count(), 0);
    // With an existing session: still nothing written or replicated.
    let c = post_(&a.url("/set/x/1"), None).await.session_cookie().unwrap();
    let r = post_(&a.url("/static/app.js"), Some(&c)).await;
    assert_eq!(r.body, "filtered");
    assert_eq!(get_(&a.url("/get/x"), Some(&c)).await.body, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_sessions_is_503_with_retry_after() {
    init_tracing();
    let a = node("A", &[], |b| b.with_max_active(1), |l| l).await;
    let r = post_(&a.url("/set/x/1"), None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = post_(&a.url("/set/x/1"), None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
    assert!(r.headers.get("retry-after").is_some(), "{r:?}");
    assert!(r.set_cookies.is_empty());
}

/// `tribes_http_stale_values_total` as node `a` exports it.
async fn stale_values(a: &Node) -> u64 {
    let metrics = get_(&a.url("/metrics"), None).await.body;
    metrics
        .lines()
        .find(|l| l.starts_with("tribes_http_stale_values_total{"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no tribes_http_stale_values_total in\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_attribute_read_with_question_mark_is_absent_and_counted_never_a_500() {
    let a = single().await;
    // An older build wrote `n` as a String; this build's /incr reads it as a u64 with `?`.
    let c = post_(&a.url("/set/n/not-a-number"), None)
        .await
        .session_cookie()
        .unwrap();
    assert_eq!(post_(&a.url("/set/other/fine"), Some(&c)).await.status, StatusCode::OK);
    assert_eq!(stale_values(&a).await, 0);

    let r = post_(&a.url("/incr"), Some(&c)).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::OK, "1"),
        "the handler saw None and started from 0: {r:?}"
    );
    assert_eq!(stale_values(&a).await, 1, "the stale read is counted");
    // The insert overwrote it: it decodes now, and nothing more is counted.
    assert_eq!(post_(&a.url("/incr"), Some(&c)).await.body, "2");
    assert_eq!(stale_values(&a).await, 1);

    // Read twice in one request: absent both times, counted once.
    assert_eq!(post_(&a.url("/set/m/text"), Some(&c)).await.status, StatusCode::OK);
    let r = get_(&a.url("/u64-twice/m"), Some(&c)).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "None None"));
    assert_eq!(stale_values(&a).await, 2, "counted once per request and attribute");

    // `try_get` tells a stale value from a missing one.
    assert_eq!(get_(&a.url("/typed/m"), Some(&c)).await.body, "stale");
    assert_eq!(get_(&a.url("/typed/absent"), Some(&c)).await.body, "-");
    assert_eq!(stale_values(&a).await, 3);
    // The rest of the session is untouched.
    assert_eq!(get_(&a.url("/get/other"), Some(&c)).await.body, "fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialized_requests_of_one_session_both_count() {
    init_tracing();
    let a = node("A", &[], |b| b, |l| l.with_serialize_requests(true)).await;
    let c = post_(&a.url("/incr"), None).await.session_cookie().unwrap();
    let url = a.url("/incr?delay_ms=300");
    let (r1, r2) = tokio::join!(post_(&url, Some(&c)), post_(&url, Some(&c)));
    assert_eq!((r1.status, r2.status), (StatusCode::OK, StatusCode::OK));
    let mut got = [r1.body, r2.body];
    got.sort();
    assert_eq!(got, ["2".to_string(), "3".to_string()]);
    assert_eq!(get_(&a.url("/typed/n"), Some(&c)).await.body, "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_serialization_the_last_writer_wins() {
    // Documented behaviour of the default mode: two overlapping increments read the
    // same value, and one is lost (the manager counts the conflict).
    let a = single().await;
    let c = post_(&a.url("/incr"), None).await.session_cookie().unwrap();
    let url = a.url("/incr?delay_ms=300");
    let (r1, r2) = tokio::join!(post_(&url, Some(&c)), post_(&url, Some(&c)));
    assert_eq!((r1.body.as_str(), r2.body.as_str()), ("2", "2"));
    assert_eq!(get_(&a.url("/typed/n"), Some(&c)).await.body, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_is_503_with_retry_after_or_a_bounded_wait() {
    init_tracing();
    // A peer that accepts connections and never answers: the state transfer cannot
    // start until the discovery wait is over.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let ch = tribes::Channel::builder("A")
        .with_cluster_key(tribes::Keyring::new(1, [42; 32]))
        .with_bind("127.0.0.1:0".parse().unwrap())
        .with_discovery(tribes::StaticDiscovery::new([silent_addr]))
        .with_probe_timeout(Duration::from_secs(60))
        .start()
        .await
        .unwrap();
    let m = builder("/app")
        .with_discovery_wait(Duration::from_secs(60))
        .start(ch.clone())
        .await
        .unwrap();
    assert!(!m.is_ready(), "the manager is still starting");
    let addr = serve(app(m.clone(), |l| l)).await;
    let url = |p: &str| format!("http://{addr}{p}");
    let cookie = format!("{}.A", tribes_sessions::SessionId::from_bytes([1; 16]));
    let r = get_(&url("/get/x"), Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
    assert_eq!(r.headers.get("retry-after").unwrap(), "1");
    // Creating a session is refused the same way; a handler not using it is served.
    let r = post_(&url("/set/x/1"), None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
    assert!(r.headers.get("retry-after").is_some());
    assert_eq!(
        get_(&url("/none"), Some(&cookie)).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(get_(&url("/none"), None).await.status, StatusCode::OK);
    // The status endpoint still answers, and says so.
    let st: serde_json::Value = get_(&url("/cluster/status"), None).await.body.parse().unwrap();
    assert_eq!(st["ready"], false);

    // Wait mode: bounded.
    let addr2 = serve(app(m.clone(), |l| {
        l.with_not_ready(NotReady::Wait {
            timeout: Duration::from_millis(300),
        })
    }))
    .await;
    let start = std::time::Instant::now();
    let r = get_(&format!("http://{addr2}/get/x"), Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(start.elapsed() >= Duration::from_millis(300), "waited");
    assert!(start.elapsed() < Duration::from_secs(5), "bounded");
    m.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_without_the_layer_gets_a_clear_rejection() {
    use axum::Router;
    use axum::routing::get;
    let app = Router::new().route("/", get(|_s: tribes_axum::Session| async { "x" }));
    let addr = serve(app).await;
    let r = get_(&format!("http://{addr}/"), None).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.body.contains("add ReplicatedSessions layer"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_html_and_metrics() {
    init_tracing();
    let a = node("A", &[], |b| b, |l| l).await;
    let b = node("B", &[&a], |b| b, |l| l).await;
    wait_mesh(&[&a, &b]).await;
    post_(&a.url("/set/x/1"), None).await.session_cookie().unwrap();

    let st: serde_json::Value = get_(&a.url("/cluster/status"), None).await.body.parse().unwrap();
    assert_eq!(st["route"], "A");
    assert_eq!(st["ready"], true);
    assert_eq!(st["context"], "/app");
    assert_eq!(st["manager"], "delta");
    assert_eq!(st["sessions"], 1);
    let members = st["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{st}");
    assert_eq!(members[0]["route"], "B");
    assert_eq!(members[0]["addr"], b.channel.local().addr().to_string());
    assert!(members[0]["id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(st["replication"]["messages_sent"].as_u64().unwrap() >= 1, "{st}");
    assert!(st["channel"]["members"].is_array());

    assert_eq!(st["schema_version"], 3);
    // B started after A: its state transfer's one attempt received A's sessions.
    let sb: serde_json::Value = get_(&b.url("/cluster/status"), None).await.body.parse().unwrap();
    let attempts = &sb["replication"]["state_transfer"]["attempts"];
    assert_eq!(attempts[0]["member"], "A", "{attempts}");
    assert_eq!(attempts[0]["outcome"]["kind"], "received", "{attempts}");
    assert!(attempts[0]["outcome"]["sessions"].is_u64(), "{attempts}");
    assert!(attempts[0]["duration_ms"].is_u64(), "{attempts}");
    let r = get_(&a.url("/cluster/status.html"), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(r.body.contains("<h1>Node A</h1>"), "{}", r.body);
    assert!(r.body.contains("<td>B</td>"), "{}", r.body);
    assert!(r.body.contains("/app"));
    // Lists and per-member statistics are tables, not raw JSON.
    assert!(!r.body.contains("[{") && !r.body.contains("\":"), "{}", r.body);
    assert!(r.body.contains("<th scope=\"col\">member</th>"), "{}", r.body);

    let r = get_(&a.url("/metrics"), None).await;
    assert_eq!(r.status, StatusCode::OK);
    let lines = r.body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    let find = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .unwrap_or_else(|| panic!("{name} in {}", r.body))
    };
    let sessions = find("tribes_sessions_active");
    assert_eq!(sessions.labels.get("node"), Some("A"));
    assert_eq!(sessions.labels.get("context"), Some("/app"));
    assert!(
        matches!(sessions.value, prometheus_parse::Value::Gauge(v) if v == 1.0),
        "{:?}",
        sessions.value
    );
    let num = |v: &prometheus_parse::Value| match v {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("a number: {other:?}"),
    };
    // Layer counters are per (route, context) in the process: other tests may add to them.
    assert!(num(&find("tribes_http_sessions_created_total").value) >= 1.0);
    assert!(num(&find("tribes_replication_messages_sent_total").value) >= 1.0);
    find("tribes_replication_acks_total");
    find("tribes_replication_conflicts_total");
    find("tribes_replication_failures_total");
    find("tribes_state_transfer_duration_seconds");
    assert_eq!(
        find("tribes_replication_member_bytes_total").labels.get("member"),
        Some("B")
    );
    assert!(matches!(find("tribes_ready").value, prometheus_parse::Value::Gauge(v) if v == 1.0));
    let sent = find("tribes_channel_messages_sent_total");
    assert_eq!(sent.labels.get("member"), Some("B"));
}

async fn pair() -> (Node, Node) {
    init_tracing();
    let a = node(
        "A",
        &[],
        |b| b,
        |l| l.with_primary_indicator_header(Some("x-tribes-primary")),
    )
    .await;
    let b = node(
        "B",
        &[&a],
        |b| b,
        |l| l.with_primary_indicator_header(Some("x-tribes-primary")),
    )
    .await;
    wait_mesh(&[&a, &b]).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_node_is_visible_on_the_other_and_rebinds_there() {
    let (a, b) = pair().await;
    let r = post_(&a.url("/set/user/alice"), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["x-tribes-primary"], "true");
    let on_a = r.session_cookie().unwrap();
    let (id, route) = split(&on_a);
    assert_eq!(route, "A");

    // Failover: the balancer sends the A cookie to B. B holds the session (sync
    // replication), rebinds it and answers with the cookie id.B.
    let r = get_(&b.url("/get/user"), Some(&on_a)).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "alice"));
    let on_b = r.session_cookie().expect("rebound: a new cookie");
    assert_eq!(on_b, format!("{id}.B"));
    assert_eq!(r.headers["x-tribes-primary"], "true");
    let line = r.session_set_cookie().unwrap();
    assert!(line.contains("HttpOnly") && line.contains("Path=/"), "{line}");
    // The route change reached A too.
    wait_until("A sees the session bound to B", Duration::from_secs(5), || {
        a.manager.stats().deltas_applied >= 1
    })
    .await;

    // Both cookies keep working: sessions are keyed by the base id.
    let r = get_(&b.url("/get/user"), Some(&on_b)).await;
    assert_eq!(r.body, "alice");
    assert!(r.set_cookies.is_empty(), "the cookie is current: {r:?}");
    let r = get_(&b.url("/get/user"), Some(&on_a)).await;
    assert_eq!(r.body, "alice", "an in-flight request with the old cookie still works");
    assert_eq!(
        r.session_cookie().as_deref(),
        Some(on_b.as_str()),
        "and learns the new cookie"
    );
    let r = post_(&b.url("/set/user/bob"), Some(&on_b)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(get_(&a.url("/get/user"), Some(&on_a)).await.body, "bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_removes_the_cookie_and_the_session_everywhere() {
    let (a, b) = pair().await;
    let c = post_(&a.url("/set/user/alice"), None).await.session_cookie().unwrap();
    let sid: tribes_sessions::SessionId = split(&c).0.parse().unwrap();
    assert!(b.manager.contains(&sid));
    let r = post_(&a.url("/invalidate"), Some(&c)).await;
    assert_eq!(r.status, StatusCode::OK);
    let line = r.session_set_cookie().expect("cookie removed");
    assert!(line.contains("Max-Age=0"), "{line}");
    assert!(!a.manager.contains(&sid));
    wait_until("B dropped the session", Duration::from_secs(5), || {
        !b.manager.contains(&sid)
    })
    .await;
    for n in [&a, &b] {
        let r = get_(&n.url("/get/user"), Some(&c)).await;
        assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "-"));
        assert!(r.set_cookies.is_empty(), "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycle_id_gives_a_new_id_and_the_old_one_stops_working() {
    let (a, b) = pair().await;
    let old = post_(&a.url("/set/user/alice"), None).await.session_cookie().unwrap();
    let r = post_(&a.url("/cycle"), Some(&old)).await;
    assert_eq!(r.status, StatusCode::OK);
    let new = r.session_cookie().expect("new cookie");
    assert_eq!(r.body, new);
    assert_ne!(split(&new).0, split(&old).0);
    assert_eq!(split(&new).1, "A");
    for n in [&a, &b] {
        assert_eq!(
            get_(&n.url("/get/user"), Some(&old)).await.body,
            "-",
            "old id on {}",
            n.manager.route()
        );
    }
    assert_eq!(get_(&a.url("/get/user"), Some(&new)).await.body, "alice");
    assert_eq!(get_(&b.url("/get/user"), Some(&new)).await.body, "alice");
    // Invalidate then write in one request: a fresh session and cookie; the old one is gone everywhere.
    let r = post_(&a.url("/relogin/bob"), Some(&new)).await;
    assert_eq!(r.status, StatusCode::OK);
    let fresh = r.session_cookie().expect("a fresh cookie");
    assert_eq!(r.body, fresh);
    assert_eq!(r.set_cookies.len(), 1, "only the new cookie: {r:?}");
    assert_ne!(split(&fresh).0, split(&new).0);
    for n in [&a, &b] {
        assert_eq!(get_(&n.url("/get/user"), Some(&new)).await.body, "-");
        assert_eq!(get_(&n.url("/get/user"), Some(&fresh)).await.body, "bob");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_commit_no_member_confirms_is_503_or_logged_as_configured() {
    init_tracing();
    let a = node(
        "A",
        &[],
        |b| b.with_ack_timeout(Duration::from_millis(500)),
        |l| l.with_sync_failure(tribes_axum::OnSyncFailure::ServiceUnavailable),
    )
    .await;
    let b = node("B", &[&a], |b| b, |l| l).await;
    wait_mesh(&[&a, &b]).await;
    // B's manager stops without a goodbye; its channel stays up, so A still sends to B
    // and nothing applies or acks the change there.
    b.manager.abort();
    let r = post_(&a.url("/set/x/1"), None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
    assert_eq!(r.headers["retry-after"], "1");
    let c = r.session_cookie().expect("the session exists here: the cookie is kept");
    assert_eq!(get_(&a.url("/get/x"), Some(&c)).await.body, "1", "applied locally");

    // The default: log, count and answer normally.
    let failures = || async {
        let metrics = get_(&a.url("/metrics"), None).await.body;
        let line = metrics
            .lines()
            .find(|l| l.starts_with("tribes_http_sync_failures_total"))
            .expect("counter present")
            .to_string();
        line.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
    };
    let before = failures().await;
    assert!(before >= 1);
    let lenient = serve(app(a.manager.clone(), |l| l)).await;
    let r = post_(&format!("http://{lenient}/set/y/2"), Some(&c)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(failures().await, before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebind_grace_stops_ping_pong_between_nodes() {
    let (a, b) = pair().await;
    let on_a = post_(&a.url("/set/user/alice"), None).await.session_cookie().unwrap();
    let (id, _) = split(&on_a);
    // Failover to B: rebound.
    let on_b = get_(&b.url("/get/user"), Some(&on_a)).await.session_cookie().unwrap();
    assert_eq!(on_b, format!("{id}.B"));
    // A non-sticky balancer sends the new cookie back to A: A has not rebound it, so it does.
    let r = get_(&a.url("/get/user"), Some(&on_b)).await;
    assert_eq!(r.session_cookie().unwrap(), format!("{id}.A"));
    // ...and straight back to B with the A cookie: B rebound it moments ago, so it
    // serves the request without moving the session again.
    let r = get_(&b.url("/get/user"), Some(&on_a)).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "alice"));
    assert!(r.set_cookies.is_empty(), "no rebind within the grace: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_manager_failover_rebinds_and_moves_the_primary() {
    init_tracing();
    let kind = tribes_sessions::ManagerKind::Backup { backup_count: 1 };
    let hdr = |l: tribes_axum::ReplicatedSessions| l.with_primary_indicator_header(Some("x-tribes-primary"));
    let a = node("A", &[], |b| b.with_kind(kind), hdr).await;
    let b = node("B", &[&a], |b| b.with_kind(kind), hdr).await;
    wait_mesh(&[&a, &b]).await;
    let r = post_(&a.url("/set/user/alice"), None).await;
    assert_eq!(r.headers["x-tribes-primary"], "true");
    let on_a = r.session_cookie().unwrap();
    let sid: tribes_sessions::SessionId = split(&on_a).0.parse().unwrap();
    assert!(
        b.manager.contains(&sid) && !b.manager.is_primary(&sid),
        "B is the backup"
    );
    let r = get_(&b.url("/get/user"), Some(&on_a)).await;
    assert_eq!(r.body, "alice");
    assert_eq!(r.session_cookie().unwrap(), format!("{}.B", split(&on_a).0));
    assert_eq!(r.headers["x-tribes-primary"], "true");
    assert!(b.manager.is_primary(&sid));
    wait_until("A is no longer primary", Duration::from_secs(5), || {
        !a.manager.is_primary(&sid)
    })
    .await;
}

/// The `PrimaryIndicator` extension is opt-in (Tomcat's valve is too): set for middleware
/// outside the layer when asked, absent otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_indicator_extension_is_set_only_when_asked() {
    init_tracing();
    let on = node("A", &[], |b| b, |l| l.with_primary_indicator()).await;
    let r = post_(&on.url("/set/user/alice"), None).await;
    assert_eq!(r.headers["x-seen-primary-extension"], "true", "{r:?}");
    let off = node("B", &[], |b| b, |l| l).await;
    let r = post_(&off.url("/set/user/alice"), None).await;
    assert_eq!(r.status, 200);
    assert!(!r.headers.contains_key("x-seen-primary-extension"), "{r:?}");
    assert!(!r.headers.contains_key("x-tribes-primary"), "{r:?}");
}

/// A clock two hours ahead of the system's.
#[derive(Debug)]
struct Ahead;

impl tribes_sessions::Clock for Ahead {
    fn now(&self) -> std::time::SystemTime {
        std::time::SystemTime::now() + Duration::from_secs(2 * 3600)
    }
}

/// One clock: the layer creates and touches sessions by the manager's clock. With its
/// own (the system's, two hours behind this manager's), a new session would be created
/// two hours in the manager's past, idle-expired before its first commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_creates_and_touches_sessions_by_the_managers_clock() {
    init_tracing();
    let a = node("A", &[], |b| b.with_clock(Ahead), |l| l).await;
    let r = post_(&a.url("/incr"), None).await;
    let c = r.session_cookie().expect("a session");
    let h = a.manager.get(&sid(&c)).await.expect("alive by the manager's clock");
    let behind = h
        .created()
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(
        behind > Duration::from_secs(3600),
        "created by the manager's clock: {behind:?} ahead"
    );
    assert_eq!(post_(&a.url("/incr"), Some(&c)).await.body, "2", "and served after");
}
