//! The whole cluster SIGKILLed and restarted: with `--sync --store …` (write-through) no
//! acknowledged write is lost. File store, PostgreSQL and Redis; the last two need
//! `TRIBES_TEST_POSTGRES_URL` / `TRIBES_TEST_REDIS_URL` (scripts/test-services.sh, which
//! `cargo xtask test` runs) and fail without them.

mod common;

use common::*;
use tribes_testkit::services::service_env;

async fn full_restart(store: String) {
    let opts = Options {
        sync: true,
        extra_args: vec!["--store".into(), store.clone()],
        ..Options::default()
    };
    let mut nodes = cluster(3, &opts);
    start_all(&mut nodes).await;
    let status = wait_status(&nodes[0], "store in status", std::time::Duration::from_secs(10), |s| {
        s["replication"]["store"]["healthy"] == true
    })
    .await;
    assert_eq!(status["replication"]["store"]["mode"], "WriteThrough", "{status}");

    // Every browser writes through every node; each 204 is an acknowledged write.
    let browsers: Vec<Browser> = (0..9).map(|_| Browser::new()).collect();
    for (i, b) in browsers.iter().enumerate() {
        put_key(b, &nodes[i % 3], "value", &format!("v{i}-first")).await;
        put_key(b, &nodes[(i + 1) % 3], "value", &format!("v{i}-last")).await;
        put_key(b, &nodes[(i + 2) % 3], "other", &format!("o{i}")).await;
    }
    // One invalidated session stays gone.
    let gone = Browser::new();
    put_key(&gone, &nodes[0], "value", "doomed").await;
    let cookie = gone.session_cookie(&nodes[0]).unwrap();
    let r = gone.post(nodes[1].url("/session/invalidate")).send().await.unwrap();
    assert_eq!(r.status(), 204);

    // SIGKILL every node: no goodbye, no flush.
    for n in nodes.iter_mut() {
        n.kill9();
    }
    start_all(&mut nodes).await;
    for (i, b) in browsers.iter().enumerate() {
        for n in &nodes {
            assert_eq!(
                get_key(b, n, "value").await.as_deref(),
                Some(format!("v{i}-last").as_str()),
                "browser {i} on node {} after the full restart ({store})",
                n.route
            );
            assert_eq!(get_key(b, n, "other").await.as_deref(), Some(format!("o{i}").as_str()));
        }
    }
    // The invalidated session did not come back.
    let stale = reqwest::Client::new()
        .get(nodes[2].url("/session/value"))
        .header("cookie", format!("TRIBESSESSIONID={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 404, "an invalidated session was resurrected");
}

#[tokio::test]
async fn full_cluster_sigkill_restart_file_store() {
    let dir = tribes_testkit::process::temp_dir("full-restart");
    full_restart(format!("file:{}", dir.display())).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn full_cluster_sigkill_restart_postgres_store() {
    full_restart(service_env("TRIBES_TEST_POSTGRES_URL")).await;
}

#[tokio::test]
async fn full_cluster_sigkill_restart_redis_store() {
    full_restart(service_env("TRIBES_TEST_REDIS_URL")).await;
}
