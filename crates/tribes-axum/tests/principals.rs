//! Principals through the `Session` extractor, over real HTTP on two real nodes: log in
//! (a new id, read on the other node), log out everywhere (the cookie removed, every
//! session of the user gone on both nodes), the list of a user's sessions, and the
//! limit per user (a refused login is a 403 that creates nothing; evict-oldest ends the
//! first login).

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use tribes_axum::MaxSessionsPolicy;

async fn pair(limit: Option<(usize, MaxSessionsPolicy)>) -> (Node, Node) {
    init_tracing();
    let with_limit = move |b: tribes_sessions::SessionManagerBuilder| match limit {
        Some((max, policy)) => b.with_max_sessions_per_principal(max, policy),
        None => b,
    };
    let a = node("A", &[], with_limit, |l| l).await;
    let b = node("B", &[&a], with_limit, |l| l).await;
    wait_mesh(&[&a, &b]).await;
    (a, b)
}

async fn whoami(n: &Node, cookie: &str) -> String {
    let r = get_(&n.url("/whoami"), Some(cookie)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    r.body
}

/// Logs `user` in on `n`, from the session `cookie` if any; the cookie to use next.
async fn login(n: &Node, user: &str, cookie: Option<&str>) -> String {
    let r = post_(&n.url(&format!("/login/{user}")), cookie).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    r.session_cookie().expect("a login sets the cookie")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_cycles_an_existing_id_and_every_node_knows_the_principal() {
    let (a, b) = pair(None).await;
    // No session yet: the login creates one (its id is new, so it is not cycled again).
    let fresh = login(&a, "alice", None).await;
    assert_eq!(whoami(&a, &fresh).await, "alice");
    assert_eq!(whoami(&b, &fresh).await, "alice", "replicated with the session");

    // An anonymous session that logs in gets a new id; the old one works nowhere, the
    // attributes stay.
    let anon = post_(&a.url("/set/cart/apple"), None).await.session_cookie().unwrap();
    assert_eq!(whoami(&a, &anon).await, "-");
    let logged = login(&a, "bob", Some(&anon)).await;
    assert_ne!(split(&logged).0, split(&anon).0, "a login changes the session id");
    for n in [&a, &b] {
        assert_eq!(whoami(n, &logged).await, "bob");
        assert_eq!(get_(&n.url("/get/cart"), Some(&logged)).await.body, "apple");
        assert_eq!(whoami(n, &anon).await, "-", "the pre-login id is dead on {}", n.addr);
        assert_eq!(get_(&n.url("/get/cart"), Some(&anon)).await.body, "-");
    }

    // clear_principal: anonymous again, the session and its attributes live on.
    let r = post_(&b.url("/logout"), Some(&logged)).await;
    assert_eq!(r.status, StatusCode::OK);
    let logged = r.session_cookie().unwrap_or(logged); // rebound to B
    for n in [&a, &b] {
        assert_eq!(whoami(n, &logged).await, "-");
        assert_eq!(get_(&n.url("/get/cart"), Some(&logged)).await.body, "apple");
    }
    assert_eq!(get_(&a.url("/sessions-of/bob"), None).await.body, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_out_everywhere_ends_every_session_of_the_user_on_both_nodes_and_removes_the_cookie() {
    let (a, b) = pair(None).await;
    let first = login(&a, "alice", None).await;
    let second = login(&b, "alice", None).await;
    let bob = login(&a, "bob", None).await;

    // Who is logged in where, from either node: routes and log hashes, never an id.
    for n in [&a, &b] {
        let r = get_(&n.url("/sessions-of/alice"), None).await;
        assert_eq!(r.status, StatusCode::OK);
        let mut routes: Vec<&str> = r.body.lines().map(|l| l.split(' ').next().unwrap()).collect();
        routes.sort();
        assert_eq!(routes, ["A", "B"], "{}", r.body);
        for cookie in [&first, &second] {
            assert!(
                !r.body.contains(split(cookie).0),
                "no session id in the list: {}",
                r.body
            );
        }
    }

    // Nobody logged in: nothing happens.
    let anon = post_(&a.url("/set/x/1"), None).await.session_cookie().unwrap();
    let r = post_(&a.url("/logout-everywhere"), Some(&anon)).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "-"));
    assert_eq!(get_(&a.url("/get/x"), Some(&anon)).await.body, "1");

    // From the second browser, on the first node.
    let r = post_(&a.url("/logout-everywhere"), Some(&second)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let line = r.session_set_cookie().expect("this browser's cookie is removed");
    assert!(line.contains("Max-Age=0"), "{line}");
    for n in [&a, &b] {
        for cookie in [&first, &second] {
            assert_eq!(whoami(n, cookie).await, "-", "logged out on {}", n.addr);
        }
        assert_eq!(whoami(n, &bob).await, "bob", "another user stays logged in");
        assert_eq!(get_(&n.url("/sessions-of/alice"), None).await.body, "");
    }
    // A login after the logout stays.
    let again = login(&b, "alice", None).await;
    assert_eq!(whoami(&a, &again).await, "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_the_limit_refuses_is_a_403_that_changes_nothing() {
    let (a, b) = pair(Some((1, MaxSessionsPolicy::Refuse))).await;
    let first = login(&a, "alice", None).await;
    let held = a.manager.session_count();

    // A new browser, on the other node: refused, and no session is left behind.
    let r = post_(&b.url("/login/alice"), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert!(r.body.contains("logged in elsewhere"), "{}", r.body);
    assert!(
        r.session_set_cookie().is_none(),
        "no session for a refused login: {r:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.manager.session_count(), held, "nothing created on B");
    assert_eq!(a.manager.session_count(), held, "nothing replicated to A");

    // An anonymous session refused: it keeps its id and stays anonymous.
    let anon = post_(&b.url("/set/x/1"), None).await.session_cookie().unwrap();
    let r = post_(&b.url("/login/alice"), Some(&anon)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.set_cookies.is_empty(), "{r:?}");
    assert_eq!(whoami(&b, &anon).await, "-");
    assert_eq!(get_(&b.url("/get/x"), Some(&anon)).await.body, "1");
    assert_eq!(whoami(&b, &first).await, "alice", "the first login is untouched");

    // Another user is not limited by alice's sessions.
    login(&b, "bob", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_evict_oldest_a_second_login_ends_the_first_on_both_nodes() {
    let (a, b) = pair(Some((1, MaxSessionsPolicy::EvictOldest))).await;
    let first = login(&a, "alice", None).await;
    let second = login(&b, "alice", None).await;
    for n in [&a, &b] {
        assert_eq!(whoami(n, &first).await, "-", "evicted on {}", n.addr);
        assert_eq!(whoami(n, &second).await, "alice");
        assert_eq!(get_(&n.url("/sessions-of/alice"), None).await.body.lines().count(), 1);
    }
}
