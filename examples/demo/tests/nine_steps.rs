//! The seeds' nine-step TomcatA/TomcatB story over HTTP, with real `tribes-demo`
//! processes, `kill -9` and a restart, for both managers and for sync mode.

mod common;

use std::time::Duration;

use common::*;

async fn nine_steps(opts: Options) {
    let opts = Options {
        max_inactive_secs: Some(5),
        ..opts
    };
    let mut nodes = cluster(2, &opts);
    let mut b_node = nodes.pop().unwrap();
    let mut a_node = nodes.pop().unwrap();
    let (a, b) = (&mut a_node, &mut b_node);

    // 1. TomcatA starts.
    a.start();
    wait_ready(a, 0).await;
    // 2. TomcatB starts, receives the (empty) state, and the two see each other.
    b.start();
    wait_ready(b, 1).await;
    wait_ready(a, 1).await;

    // 3. A creates session S1.
    let user = Browser::new();
    put_key(&user, a, "user", "alice").await;
    assert_eq!(count(&user, a).await, 1);
    assert_eq!(count(&user, a).await, 2);
    let s1 = user.session_cookie(a).expect("S1 cookie");
    assert!(s1.ends_with(".a"), "a session made on A carries A's route: {s1}");
    wait_status(b, "S1 replicated to B", Duration::from_secs(10), |s| sessions(s) == 1).await;

    // 4. A crashes.
    a.kill9();

    // 5. B serves S1, current, and rebinds the cookie to its own route.
    assert_eq!(get_key(&user, b, "user").await.as_deref(), Some("alice"));
    assert_eq!(count(&user, b).await, 3);
    let rebound = user.session_cookie(b).unwrap();
    assert!(rebound.ends_with(".b"), "failover rebinds the cookie to B: {rebound}");
    assert_eq!(
        rebound.split('.').next(),
        s1.split('.').next(),
        "same session id, new route"
    );

    // 6. A restarts and receives the state before it is ready.
    wait_status(b, "B to drop the crashed A", Duration::from_secs(10), |s| {
        members(s) == 0
    })
    .await;
    a.start();
    let status = wait_ready(a, 1).await;
    assert_eq!(
        sessions(&status),
        1,
        "A must hold S1 as soon as it reports ready: {status}"
    );
    assert_eq!(get_key(&user, a, "user").await.as_deref(), Some("alice"));
    assert_eq!(count(&user, a).await, 4);

    // 7. A invalidates S1, and B drops it.
    let r = user.post(a.url("/session/invalidate")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    wait_status(b, "B to drop S1", Duration::from_secs(10), |s| sessions(s) == 0).await;
    let stranger = Browser::new();
    // The old cookie finds nothing on B either.
    let old = stranger
        .get(b.url("/session/user"))
        .header("cookie", format!("TRIBESSESSIONID={rebound}"))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 404);

    // 8. B creates S2.
    let other = Browser::new();
    put_key(&other, b, "user", "bob").await;
    wait_status(a, "S2 replicated to A", Duration::from_secs(10), |s| sessions(s) == 1).await;

    // 9. S2 expires from inactivity everywhere (max inactive 5 s).
    wait_status(a, "S2 to expire on A", Duration::from_secs(20), |s| sessions(s) == 0).await;
    wait_status(b, "S2 to expire on B", Duration::from_secs(20), |s| sessions(s) == 0).await;
    assert_eq!(get_key(&other, b, "user").await, None);
    assert_eq!(get_key(&other, a, "user").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nine_steps_with_the_delta_manager() {
    nine_steps(Options::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nine_steps_with_the_delta_manager_in_sync_mode() {
    nine_steps(Options {
        sync: true,
        ..Options::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nine_steps_with_the_backup_manager() {
    nine_steps(Options {
        manager: Some("backup"),
        ..Options::default()
    })
    .await;
}
