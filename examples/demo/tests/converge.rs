//! Three nodes started at once converge; a node restarted under load receives the
//! state before it serves; SIGTERM shuts a node down cleanly.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_started_at_once_converge() {
    let mut nodes = cluster(3, &Options::default());
    start_all(&mut nodes).await;
    // A session written on each node is seen by every node.
    let users: Vec<Browser> = (0..3).map(|_| Browser::new()).collect();
    for (user, node) in users.iter().zip(&nodes) {
        put_key(user, node, "home", &node.route).await;
    }
    for n in &nodes {
        wait_status(n, "all three sessions", Duration::from_secs(10), |s| sessions(s) == 3).await;
    }
    for (user, home) in users.iter().zip(&nodes) {
        for n in &nodes {
            assert_eq!(get_key(user, n, "home").await.as_deref(), Some(home.route.as_str()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_under_load_gets_the_state_before_it_serves() {
    let mut nodes = cluster(2, &Options::default());
    for n in nodes.iter_mut() {
        n.start();
    }
    wait_ready(&nodes[0], 1).await;
    wait_ready(&nodes[1], 1).await;

    // 300 users with a session each, written on B.
    let users: Vec<Browser> = (0..300).map(|_| Browser::new()).collect();
    for (i, u) in users.iter().enumerate() {
        put_key(u, &nodes[1], "n", &i.to_string()).await;
    }
    wait_status(&nodes[0], "300 sessions on A", Duration::from_secs(20), |s| {
        sessions(s) == 300
    })
    .await;

    // Restart A while B keeps taking writes (a bounded load loop).
    nodes[0].kill9();
    let b_url = nodes[1].url("/counter");
    let load = tokio::spawn(async move {
        let client = Browser::new();
        let mut ok = 0u32;
        for _ in 0..400 {
            if client
                .get(&b_url)
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false)
            {
                ok += 1;
            }
        }
        ok
    });
    nodes[0].start();
    // Until A is ready it answers 503 with Retry-After; its first real answer has the state.
    let a = &nodes[0];
    loop {
        match users[0].get(a.url("/session/n")).send().await {
            Ok(r) if r.status() == 503 => {
                assert!(r.headers().contains_key("retry-after"), "503 without Retry-After");
            }
            Ok(r) => {
                assert_eq!(r.status(), 200, "A served before it had the state");
                assert_eq!(r.text().await.unwrap(), "0");
                break;
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = wait_ready(a, 1).await;
    assert!(sessions(&status) >= 300, "A served before it had the state: {status}");
    for (i, u) in users.iter().enumerate().step_by(37) {
        assert_eq!(get_key(u, a, "n").await, Some(i.to_string()));
    }
    assert_eq!(load.await.unwrap(), 400, "B kept serving during the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly_and_peers_see_it_at_once() {
    let mut nodes = cluster(2, &Options::default());
    for n in nodes.iter_mut() {
        n.start();
    }
    wait_ready(&nodes[0], 1).await;
    wait_ready(&nodes[1], 1).await;
    let user = Browser::new();
    put_key(&user, &nodes[0], "k", "v").await;
    wait_status(&nodes[1], "the session on B", Duration::from_secs(10), |s| {
        sessions(s) == 1
    })
    .await;
    let status = nodes[0].terminate();
    assert!(status.success(), "tribes-demo exited with {status} on SIGTERM");
    // The goodbye removes A from B at once, well before the 3 s drop time.
    wait_status(&nodes[1], "A to leave", Duration::from_millis(1500), |s| {
        members(s) == 0
    })
    .await;
    assert_eq!(get_key(&user, &nodes[1], "k").await.as_deref(), Some("v"));
}
