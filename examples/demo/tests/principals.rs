//! Who is logged in where, over three real `tribes-demo` processes, for both managers:
//! alice logs in from two browsers (separate cookie jars) on a and on b; c lists both
//! sessions with their routes; a third browser logged in as alice on c logs out
//! everywhere, after which the first two browsers' cookies get 401 on every node. With
//! `--max-sessions-per-user 1` a second login evicts the first on every node
//! (evict-oldest) or is a 403 (refuse). And `kill -9` of the node that served a login
//! loses neither the session nor its principal.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The managers: the DeltaManager without sync (asynchronous replication, so the checks
/// poll), the BackupManager with `--sync`.
const MANAGERS: [(&str, bool); 2] = [("delta", false), ("backup", true)];

async fn start(manager: &'static str, sync: bool, extra: &[&str]) -> Vec<DemoNode> {
    let mut nodes = cluster(
        3,
        &Options {
            manager: Some(manager),
            sync,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            ..Options::default()
        },
    );
    start_all(&mut nodes).await;
    nodes
}

/// `GET /whoami`: the status and the body.
async fn whoami(browser: &Browser, node: &DemoNode) -> (u16, String) {
    let r = browser.get(node.url("/whoami")).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// `GET /sessions-of/{user}` on `node`.
async fn sessions_of(node: &DemoNode, user: &str) -> Value {
    let r = reqwest::get(node.url(&format!("/sessions-of/{user}"))).await.unwrap();
    assert_eq!(r.status(), 200, "GET /sessions-of/{user} on {}", node.route);
    r.json().await.unwrap()
}

/// The routes of the sessions `GET /sessions-of/{user}` lists, sorted.
fn routes(list: &Value) -> Vec<String> {
    let mut r: Vec<String> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["route"].as_str().unwrap().to_owned())
        .collect();
    r.sort();
    r
}

/// Polls `check` every 100 ms until it returns `Ok`, or panics with its last `Err` after
/// 10 s. In sync mode the first try must already pass (`strict`).
async fn eventually<F, Fut>(what: &str, strict: bool, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(()) => return,
            Err(e) if strict => panic!("{what}: {e} (sync mode: at once)"),
            Err(e) if start.elapsed() > Duration::from_secs(10) => panic!("{what}: still {e} after 10 s"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Whether `browser`'s cookie gets `expected` from `/whoami` on every node.
async fn whoami_everywhere(browser: &Browser, nodes: &[DemoNode], expected: (u16, &str)) -> Result<(), String> {
    for n in nodes {
        let (status, body) = whoami(browser, n).await;
        if status != expected.0 || (status == 200 && body != expected.1) {
            return Err(format!("{status} {body:?} on {}", n.route));
        }
    }
    Ok(())
}

/// Two browsers; alice logs in with the first on node a, and node b sees that session
/// before this returns.
async fn first_login_seen_by_b(nodes: &[DemoNode], manager: &str, sync: bool) -> (Browser, Browser) {
    let (first, second) = (Browser::new(), Browser::new());
    assert_eq!(login(&first, &nodes[0], "alice").await.0, 200);
    eventually(&format!("{manager}: b sees the first login"), sync, || async {
        match routes(&sessions_of(&nodes[1], "alice").await).len() {
            1 => Ok(()),
            n => Err(format!("{n} sessions")),
        }
    })
    .await;
    (first, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_everywhere_from_c_logs_out_both_browsers_on_every_node() {
    for (manager, sync) in MANAGERS {
        let nodes = start(manager, sync, &[]).await;
        let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
        let (first, second, third, bob) = (Browser::new(), Browser::new(), Browser::new(), Browser::new());
        assert_eq!(login(&first, a, "alice").await.0, 200, "{manager}");
        assert_eq!(login(&second, b, "alice").await.0, 200, "{manager}");
        assert_eq!(login(&bob, a, "bob").await.0, 200, "{manager}");

        // Who is logged in where, asked on c: both sessions, with the routes a and b, by
        // their log hashes (never an id).
        eventually(
            &format!("{manager}: c lists alice's sessions on a and b"),
            sync,
            || async {
                let list = sessions_of(c, "alice").await;
                match routes(&list) == ["a", "b"] {
                    true => Ok(()),
                    false => Err(format!("{list}")),
                }
            },
        )
        .await;
        let body = sessions_of(c, "alice").await.to_string();
        for browser in [&first, &second] {
            let cookie = browser.session_cookie(a).unwrap();
            let id = cookie.split('.').next().unwrap();
            assert!(!body.contains(id), "{manager}: no session id in {body}");
        }

        // A third browser logs in as alice on c and logs out everywhere.
        assert_eq!(login(&third, c, "alice").await.0, 200);
        eventually(&format!("{manager}: c sees the third login"), sync, || async {
            match routes(&sessions_of(c, "alice").await).len() {
                3 => Ok(()),
                n => Err(format!("{n} sessions")),
            }
        })
        .await;
        let r = third.post(c.url("/logout-everywhere")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{manager}");
        let report: Value = r.json().await.unwrap();
        assert_eq!(report["user"], "alice", "{manager}: {report}");
        for (name, browser) in [("first", &first), ("second", &second), ("third", &third)] {
            eventually(
                &format!("{manager}: the {name} browser is logged out on every node"),
                sync,
                || whoami_everywhere(browser, &nodes, (401, "")),
            )
            .await;
        }
        assert_eq!(
            whoami_everywhere(&bob, &nodes, (200, "bob")).await,
            Ok(()),
            "{manager}: bob stays logged in"
        );
        assert_eq!(routes(&sessions_of(a, "alice").await), Vec::<String>::new());
        // Not logged in any more: 401.
        let r = first.post(b.url("/logout-everywhere")).send().await.unwrap();
        assert_eq!(r.status(), 401, "{manager}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_session_per_user_a_second_login_evicts_the_first_or_is_refused() {
    for (manager, sync) in MANAGERS {
        // evict-oldest (the default policy).
        let nodes = start(manager, sync, &["--max-sessions-per-user", "1"]).await;
        // Replicated before the second login is counted (async: wait for it).
        let (first, second) = first_login_seen_by_b(&nodes, manager, sync).await;
        assert_eq!(login(&second, &nodes[1], "alice").await.0, 200, "{manager}");
        eventually(
            &format!("{manager}: the first login is evicted on every node"),
            sync,
            || whoami_everywhere(&first, &nodes, (401, "")),
        )
        .await;
        assert_eq!(
            whoami_everywhere(&second, &nodes, (200, "alice")).await,
            Ok(()),
            "{manager}"
        );
        drop(nodes);

        // refuse: the second login is a 403 that says why.
        let nodes = start(
            manager,
            sync,
            &["--max-sessions-per-user", "1", "--max-sessions-policy", "refuse"],
        )
        .await;
        let (first, second) = first_login_seen_by_b(&nodes, manager, sync).await;
        let (status, body) = login(&second, &nodes[1], "alice").await;
        assert_eq!(status, 403, "{manager}: {body}");
        assert!(body.contains("logged in elsewhere"), "{manager}: {body}");
        assert_eq!(
            second.session_cookie(&nodes[1]),
            None,
            "{manager}: no session for a refused login"
        );
        assert_eq!(
            whoami_everywhere(&first, &nodes, (200, "alice")).await,
            Ok(()),
            "{manager}: the first login is untouched"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_node_that_served_a_login_keeps_the_session_and_its_principal() {
    for (manager, sync) in MANAGERS {
        let mut nodes = start(manager, sync, &[]).await;
        let alice = Browser::new();
        assert_eq!(login(&alice, &nodes[0], "alice").await.0, 200);
        // Replicated before the kill (sync: answered after every member had it).
        eventually(&format!("{manager}: b and c know alice's session"), sync, || async {
            for n in &nodes[1..] {
                match routes(&sessions_of(n, "alice").await).as_slice() {
                    [r] if r == "a" => {}
                    other => return Err(format!("{other:?} on {}", n.route)),
                }
            }
            Ok(())
        })
        .await;
        nodes[0].kill9();
        let survivors = &nodes[1..];
        assert_eq!(
            whoami_everywhere(&alice, survivors, (200, "alice")).await,
            Ok(()),
            "{manager}: alice is still logged in on b and c"
        );
        // And the index follows: one session, now served by a survivor.
        let list = sessions_of(&nodes[2], "alice").await;
        let r = routes(&list);
        assert!(r == ["b"] || r == ["c"], "{manager}: {list}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_needs_the_admin_token_when_there_is_one() {
    let token_file = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("principals-admin-{}.token", std::process::id()));
    let secret = "principals-admin-token-0123456789";
    std::fs::write(&token_file, format!("{secret}\n")).unwrap();
    let mut nodes = cluster(
        1,
        &Options {
            extra_args: vec!["--admin-token-file".into(), token_file.display().to_string()],
            ..Options::default()
        },
    );
    nodes[0].start();
    wait_ready(&nodes[0], 0).await;
    let n = &nodes[0];
    assert_eq!(login(&Browser::new(), n, "alice").await.0, 200);
    let url = n.url("/sessions-of/alice");
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = reqwest::Client::new()
        .get(&url)
        .bearer_auth("not-the-token-at-all")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = reqwest::Client::new()
        .get(&url)
        .basic_auth("admin", Some(secret))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let list: Value = r.json().await.unwrap();
    assert_eq!(routes(&list), ["a"], "{list}");
    // Bad logins and whoami without a session.
    let user = Browser::new();
    assert_eq!(login(&user, n, "").await.0, 400);
    assert_eq!(whoami(&user, n).await.0, 401);
    let _ = std::fs::remove_file(&token_file);
}
