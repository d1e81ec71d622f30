//! The OWASP session management rules, one test each, over real HTTP: real tribes
//! channels on loopback, real session managers, axum on 127.0.0.1:0 and a real HTTP
//! client (the helpers of `tests/common`).
//!
//! | rule | enforced in | test |
//! |---|---|---|
//! | at least 128 bits of CSPRNG entropy per id | `SessionId::generate` (`rand::rng()`) | [`session_ids_have_128_bits_from_a_csprng`] |
//! | `HttpOnly`, `SameSite`, `Secure` on HTTPS | `cookie.rs` | [`cookie_is_httponly_samesite_and_secure_only_over_https`] |
//! | idle timeout | the manager's max inactive interval | [`idle_session_expires`] |
//! | absolute timeout | the manager's max lifetime (`with_max_lifetime`, default 8 h), at the request that finds it | [`absolute_timeout_ends_an_active_session`] |
//! | id rotation, replicated atomically | `Session::cycle_id` | [`cycle_id_rotates_and_the_old_id_is_dead_on_every_node`] |
//! | no full session id in logs | `SessionId::log_id`, every error message | [`logs_never_contain_a_full_session_id`] |

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::*;
use tribes_axum::Secure;
use tribes_sessions::{LogId, SessionId, StoreMode};
use tribes_testkit::logs::capture_logs;

/// The `Set-Cookie` line of the session cookie, parsed.
fn parsed(r: &Resp) -> cookie::Cookie<'static> {
    let line = r
        .session_set_cookie()
        .unwrap_or_else(|| panic!("a session cookie: {r:?}"));
    cookie::Cookie::parse(line.to_owned()).unwrap_or_else(|e| panic!("{line}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_ids_have_128_bits_from_a_csprng() {
    const N: usize = 10_000;
    const WORKERS: usize = 16;
    let a = Arc::new(node("A", &[], |b| b, |l| l).await);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..WORKERS {
        let a = a.clone();
        tasks.spawn(async move {
            let mut ids = Vec::with_capacity(N / WORKERS);
            for _ in 0..N / WORKERS {
                let r = post_(&a.url("/set/x/1"), None).await;
                assert_eq!(r.status, StatusCode::OK, "{r:?}");
                ids.push(r.session_cookie().expect("a new session per request"));
            }
            ids
        });
    }
    let mut ids: Vec<[u8; 16]> = Vec::with_capacity(N);
    while let Some(batch) = tasks.join_next().await {
        for c in batch.unwrap() {
            let (text, _) = split(&c);
            assert_eq!(text.len(), 22, "22 characters of base64: 132 bits of text, {c}");
            ids.push(*sid(&c).as_bytes());
        }
    }
    let n = ids.len();
    assert_eq!(n, N / WORKERS * WORKERS);

    // All distinct, even in their first 64 bits (a collision there among 10^4 random ids
    // has a probability of about 3e-12).
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), n, "duplicate session ids");
    let prefixes: HashSet<[u8; 8]> = ids.iter().map(|b| b[..8].try_into().unwrap()).collect();
    assert_eq!(prefixes.len(), n, "ids share their first 64 bits");

    // Each of the 128 bits is set in about half of the ids: binomial(n, 1/2) has mean n/2
    // and standard deviation sqrt(n)/2 (50 for 10^4); allow 6 of them (a false alarm
    // about once in 10^7 runs over all 128 bits). Constant, short or zero-padded ids
    // fail here (a bit that never changes is set in 0 or n ids).
    let sd = (n as f64).sqrt() / 2.0;
    for bit in 0..128 {
        let ones = ids.iter().filter(|b| b[bit / 8] >> (7 - bit % 8) & 1 == 1).count();
        let dev = (ones as f64 - n as f64 / 2.0).abs();
        assert!(
            dev <= 6.0 * sd,
            "bit {bit} is set in {ones} of {n} ids: not uniform (a counter, a timestamp, or fewer than 128 random bits?)"
        );
    }
    // Consecutive ids differ in about 64 of their 128 bits (mean over n-1 pairs: 64,
    // standard deviation 0.06); a counter, even one starting at a random value, differs
    // in about 2.
    let mean = ids
        .windows(2)
        .map(|w| w[0].iter().zip(&w[1]).map(|(x, y)| (x ^ y).count_ones()).sum::<u32>() as f64)
        .sum::<f64>()
        / (n - 1) as f64;
    assert!(
        (63.0..=65.0).contains(&mean),
        "consecutive ids differ in {mean} bits on average, not 64"
    );
    assert_eq!(a.manager.session_count(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_is_httponly_samesite_and_secure_only_over_https() {
    // The layer decides "HTTPS" from what a TLS-terminating proxy in front of it says:
    // `X-Forwarded-Proto` (first value of a chain) or `Forwarded: proto=`, else the
    // request URI's scheme (`Secure::Auto`, the default). No header: plain HTTP.
    let a = node("A", &[], |b| b, |l| l).await;
    let check = |r: &Resp, secure: bool, what: &str| {
        assert_eq!(r.status, StatusCode::OK, "{what}: {r:?}");
        let c = parsed(r);
        assert_eq!(c.http_only(), Some(true), "{what}: HttpOnly in {c}");
        assert_eq!(
            c.same_site(),
            Some(cookie::SameSite::Lax),
            "{what}: SameSite=Lax in {c}"
        );
        assert_eq!(c.path(), Some("/"), "{what}: {c}");
        assert_eq!(c.secure().unwrap_or(false), secure, "{what}: Secure in {c}");
        c
    };
    let https = [("x-forwarded-proto", "https")];

    // Plain HTTP: HttpOnly and SameSite, not Secure (the browser would never send it back).
    let r = post_(&a.url("/set/x/1"), None).await;
    let c = check(&r, false, "created over HTTP").value().to_owned();
    let r = send("POST", &a.url("/set/x/1"), None, &[("x-forwarded-proto", "http")]).await;
    check(&r, false, "X-Forwarded-Proto: http");

    // HTTPS as the proxy tells: every cookie the layer writes is Secure, including the
    // ones of an id change and of an invalidation (Max-Age=0).
    let r = send("POST", &a.url("/set/x/1"), None, &https).await;
    let s = check(&r, true, "created over HTTPS (X-Forwarded-Proto)")
        .value()
        .to_owned();
    let r = send(
        "POST",
        &a.url("/set/x/1"),
        None,
        &[("forwarded", "for=192.0.2.1;proto=https")],
    )
    .await;
    check(&r, true, "created over HTTPS (Forwarded)");
    let r = send(
        "POST",
        &a.url("/set/x/1"),
        None,
        &[("x-forwarded-proto", "https, http")],
    )
    .await;
    check(&r, true, "the client's hop of a proxy chain is HTTPS");
    let r = send("POST", &a.url("/cycle"), Some(&s), &https).await;
    let s = check(&r, true, "cycle_id over HTTPS").value().to_owned();
    let r = send("POST", &a.url("/invalidate"), Some(&s), &https).await;
    let gone = check(&r, true, "removal over HTTPS");
    assert_eq!(gone.max_age(), Some(cookie::time::Duration::ZERO), "{gone}");

    // The same changes over plain HTTP: never Secure.
    let r = post_(&a.url("/cycle"), Some(&c)).await;
    let c = check(&r, false, "cycle_id over HTTP").value().to_owned();
    let r = post_(&a.url("/invalidate"), Some(&c)).await;
    check(&r, false, "removal over HTTP");

    // An app served over HTTPS without such a proxy header says so with Secure::Always.
    let always = serve(app(a.manager.clone(), |l| l.with_secure(Secure::Always))).await;
    let r = post_(&format!("http://{always}/set/x/1"), None).await;
    check(&r, true, "Secure::Always");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_session_expires() {
    // Max inactive 1 s; with the manager's grace of two touch intervals (2 x 200 ms) a
    // session idle for 1.4 s is gone.
    let a = node("A", &[], |b| b.with_max_inactive(Duration::from_secs(1)), |l| l).await;
    let c = post_(&a.url("/set/user/alice"), None).await.session_cookie().unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        get_(&a.url("/get/user"), Some(&c)).await.body,
        "alice",
        "alive after 0.6 s"
    );
    // This read renewed it: idle again from here.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let r = get_(&a.url("/get/user"), Some(&c)).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::OK, "-"),
        "idle for 1.8 s > 1 s: no session"
    );
    assert!(r.set_cookies.is_empty(), "{r:?}");
    assert!(
        a.manager.get(&sid(&c)).await.is_none(),
        "the manager has no such session"
    );
    // A write with the dead cookie starts a new session, with a new id.
    let r = post_(&a.url("/set/user/bob"), Some(&c)).await;
    let fresh = r.session_cookie().expect("a new session");
    assert_ne!(sid(&fresh), sid(&c));
    assert_eq!(get_(&a.url("/get/user"), Some(&fresh)).await.body, "bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_timeout_ends_an_active_session() {
    const LIMIT: Duration = Duration::from_millis(1500);
    let limit = |b: tribes_sessions::SessionManagerBuilder| b.with_max_lifetime(Some(LIMIT));
    let a = node("A", &[], limit, |l| l).await;
    let b = node("B", &[&a], limit, |l| l).await;
    wait_mesh(&[&a, &b]).await;

    let start = Instant::now();
    let c = post_(&a.url("/incr"), None).await.session_cookie().unwrap();
    let id = sid(&c);
    // Busy until shortly before the deadline: a request every 100 ms, each one served.
    let mut n = 1;
    while start.elapsed() < LIMIT - Duration::from_millis(300) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        n += 1;
        let r = post_(&a.url("/incr"), Some(&c)).await;
        assert_eq!(r.body, n.to_string(), "active session served at {:?}", start.elapsed());
        assert!(r.set_cookies.is_empty(), "{r:?}");
    }
    assert!(b.manager.contains(&id), "replicated to B, never idle");
    tokio::time::sleep((LIMIT + Duration::from_millis(100)).saturating_sub(start.elapsed())).await;

    // Past the deadline: no session, whatever the activity; invalidated on every node.
    let r = get_(&a.url("/get/n"), Some(&c)).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "-"), "{r:?}");
    assert!(!a.manager.contains(&id), "ended on A");
    // B serves it no more either: the request's end reached it (sync-ack), or A's sweep
    // did, or B's own sweep and reads judge it by the same creation time.
    assert_eq!(get_(&b.url("/get/n"), Some(&c)).await.body, "-", "nor on B");
    let gone_from_b = Instant::now();
    while b.manager.contains(&id) {
        assert!(gone_from_b.elapsed() < Duration::from_secs(2), "B still holds the copy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The handler gets a fresh session on its first write, as after an idle expiry.
    let r = post_(&a.url("/incr"), Some(&c)).await;
    assert_eq!(r.body, "1", "a new session starts from scratch");
    let fresh = r.session_cookie().expect("a new cookie");
    assert_ne!(sid(&fresh), id);
    let metrics = get_(&a.url("/metrics"), None).await.body;
    let count = metrics
        .lines()
        .find(|l| l.starts_with("tribes_sessions_absolute_timeout_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("the counter in {metrics}"));
    assert_eq!(
        count,
        a.manager.stats().absolute_timeouts,
        "the metric is the manager's count"
    );
    let ended = a.manager.stats().absolute_timeouts + b.manager.stats().absolute_timeouts;
    assert!((1..=2).contains(&ended), "counted where a copy ended: {ended}");
    assert_eq!(
        a.manager.stats().expired + b.manager.stats().expired,
        2,
        "each copy expired once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycle_id_rotates_and_the_old_id_is_dead_on_every_node() {
    let a = node("A", &[], |b| b, |l| l).await;
    let b = node("B", &[&a], |b| b, |l| l).await;
    wait_mesh(&[&a, &b]).await;
    let old = post_(&a.url("/set/user/alice"), None).await.session_cookie().unwrap();
    assert!(b.manager.contains(&sid(&old)));

    let r = post_(&a.url("/cycle"), Some(&old)).await;
    assert_eq!(r.status, StatusCode::OK);
    let new = r.session_cookie().expect("the new id in a new cookie");
    assert_ne!(sid(&new), sid(&old));
    // Atomic and replicated: when the response is there, every node holds the session
    // under the new id only (sync-ack), never under both or neither.
    for n in [&a, &b] {
        let route = n.manager.route();
        assert!(!n.manager.contains(&sid(&old)), "old id still held on {route}");
        assert!(n.manager.contains(&sid(&new)), "new id missing on {route}");
        assert_eq!(n.manager.session_count(), 1, "one session on {route}");
    }
    // The old cookie gets no session anywhere.
    for n in [&a, &b] {
        let r = get_(&n.url("/get/user"), Some(&old)).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (StatusCode::OK, "-"),
            "old id on {}",
            n.manager.route()
        );
        assert!(r.set_cookies.is_empty(), "{r:?}");
    }
    // The new one works on B (which rebinds it there).
    let r = get_(&b.url("/get/user"), Some(&new)).await;
    assert_eq!(r.body, "alice");
    assert_eq!(r.session_cookie(), Some(format!("{}.B", split(&new).0)));
    // An attacker holding the old (fixed) id who writes gets a session of their own,
    // never the victim's.
    let r = post_(&b.url("/set/user/mallory"), Some(&old)).await;
    let theirs = r.session_cookie().expect("a fresh session");
    assert!(sid(&theirs) != sid(&old) && sid(&theirs) != sid(&new));
    assert_eq!(get_(&a.url("/get/user"), Some(&new)).await.body, "alice");
}

/// The session cookie a response set; its id is added to `ids`.
fn cookie(r: &Resp, ids: &mut Vec<SessionId>) -> String {
    let c = r.session_cookie().unwrap_or_else(|| panic!("a session cookie: {r:?}"));
    ids.push(sid(&c));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_contain_a_full_session_id() {
    let logs = capture_logs("tribes=trace,tribes_sessions=trace,tribes_axum=trace,info");
    let mut ids: Vec<SessionId> = Vec::new();

    // Two delta nodes: create, write, conflicting writes, failover, cycle, invalidate.
    let a = node("A", &[], |b| b, |l| l).await;
    let b = node("B", &[&a], |b| b, |l| l).await;
    wait_mesh(&[&a, &b]).await;
    let c = cookie(&post_(&a.url("/set/user/alice"), None).await, &mut ids);
    post_(&a.url("/set/user/alice2"), Some(&c)).await;
    let slow = a.url("/incr?delay_ms=300");
    let (r1, r2) = tokio::join!(post_(&slow, Some(&c)), post_(&slow, Some(&c)));
    assert_eq!((r1.status, r2.status), (StatusCode::OK, StatusCode::OK));
    let on_b = get_(&b.url("/get/user"), Some(&c)).await; // failover: rebound to B
    assert_eq!(on_b.body, "alice2");
    let failover = ids[0];
    let r = post_(&b.url("/cycle"), Some(&cookie(&on_b, &mut ids))).await;
    let cycled = cookie(&r, &mut ids);
    // A write racing an invalidation: its changes are dropped (the session is gone).
    let (w, i) = tokio::join!(post_(&slow, Some(&cycled)), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        post_(&a.url("/invalidate"), Some(&cycled)).await
    });
    assert_eq!((w.status, i.status), (StatusCode::OK, StatusCode::OK));
    // Unknown and malformed cookies.
    let unknown = SessionId::from_bytes([0x33; 16]);
    ids.push(unknown);
    assert_eq!(get_(&a.url("/get/user"), Some(&format!("{unknown}.A"))).await.body, "-");
    assert_eq!(get_(&a.url("/get/user"), Some(&format!("{unknown}x"))).await.body, "-");
    // The absolute timeout (a node of its own with a max lifetime of 300 ms).
    let short = node(
        "T",
        &[],
        |b| b.with_max_lifetime(Some(Duration::from_millis(300))),
        |l| l,
    )
    .await;
    let old = cookie(&post_(&short.url("/set/x/1"), None).await, &mut ids);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get_(&short.url("/get/x"), Some(&old)).await.body, "-");
    let ended = *ids.last().unwrap();

    // A shared file store: a store conflict and an undecodable record.
    let dir = std::env::temp_dir().join(format!("tribes-owasp-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = tribes_sessions::FileStore::open(&dir).await.unwrap();
    let s = node("S", &[], |b| b.with_store(Arc::new(store), StoreMode::Shared), |l| l).await;
    let sc = cookie(&post_(&s.url("/incr"), None).await, &mut ids);
    let slow = s.url("/incr?delay_ms=300");
    let (r1, r2) = tokio::join!(post_(&slow, Some(&sc)), post_(&slow, Some(&sc)));
    assert_eq!((r1.status, r2.status), (StatusCode::OK, StatusCode::OK));
    let conflicted = ids.last().copied().unwrap();
    let corrupt = SessionId::from_bytes([0x5a; 16]);
    ids.push(corrupt);
    // The manager of context "/app" keeps its records in the subdirectory of its namespace.
    let records = dir.join(tribes_sessions::store_namespace("/app"));
    std::fs::create_dir_all(&records).unwrap();
    std::fs::write(records.join(format!("{corrupt}.session")), b"not a record").unwrap();
    assert_eq!(get_(&s.url("/get/x"), Some(&format!("{corrupt}.S"))).await.body, "-");

    // Let the managers' background tasks log what they do, then look.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = logs.text();
    let _ = std::fs::remove_dir_all(&dir);
    for (what, expected) in [
        ("a delta conflict", "conflicting update"),
        ("a failover", "session rebound to this node"),
        ("an id change", "session id cycled"),
        ("a write after an invalidation", "session changes dropped"),
        ("the absolute timeout", "older than its max lifetime"),
        ("a shared-store conflict", "changed by another request"),
        ("an undecodable record", "cannot be decoded"),
    ] {
        assert!(text.contains(expected), "{what} was not logged ({expected:?}):\n{text}");
    }
    for id in &ids {
        let b = id.as_bytes();
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        for full in [id.to_string(), hex.clone(), hex.to_uppercase(), format!("{b:?}")] {
            if let Some(at) = text.find(&full) {
                let line = text[..at].rsplit('\n').next().unwrap_or("").to_owned() + &full;
                panic!("a full session id ({full}) in the log: {line}");
            }
        }
    }
    // What the log shows instead: the short hash, the same on every node.
    for (what, id) in [
        ("failover", failover),
        ("cycle", sid(&cycled)),
        ("absolute timeout", ended),
        ("store conflict", conflicted),
        ("corrupt record", corrupt),
    ] {
        let hash = id.log_id().to_string();
        assert!(text.contains(&hash), "{what}: {hash} not in the log:\n{text}");
        assert_eq!(LogId::of_text(&id.to_string()), id.log_id());
    }
}
