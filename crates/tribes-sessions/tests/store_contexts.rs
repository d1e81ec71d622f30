//! Managers and stores, the parts that span contexts and restarts: two contexts (two
//! applications) sharing one store never see each other's sessions, and
//! `with_expire_sessions_on_shutdown` removes the sessions from the store too. Each runs on
//! the file store, PostgreSQL and Redis (from `scripts/test-services.sh`; a missing service
//! fails the test and says how to start it).

#![cfg(feature = "file")]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{channel, init_tracing, wait_mesh};
use tribes::Channel;
use tribes_sessions::{FileStore, ManagerKind, SessionId, SessionManager, SessionStore, StoreMode};
use tribes_testkit::services::service_env;
use tribes_testkit::sessions::start_ready;

fn temp_dir(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("tribes-contexts-{tag}-{:016x}", rand::random::<u64>()))
}

/// The manager of `context` on `ch` with `store` in `mode`, ready.
async fn manager(
    ch: &Channel,
    context: &str,
    kind: ManagerKind,
    store: &Arc<dyn SessionStore>,
    mode: StoreMode,
    expire_on_shutdown: bool,
) -> SessionManager {
    start_ready(
        SessionManager::builder(context)
            .with_kind(kind)
            .with_send_mode(tribes::SendMode::SyncAck)
            .with_ack_timeout(Duration::from_secs(3))
            .with_state_transfer_attempt_timeout(Duration::from_secs(2))
            .with_discovery_wait(Duration::from_millis(50))
            .with_expire_sessions_on_shutdown(expire_on_shutdown)
            .with_store(store.clone(), mode),
        ch,
    )
    .await
}

async fn create(m: &SessionManager, key: &str, value: &str) -> SessionId {
    let s = m.create(SystemTime::now()).unwrap();
    s.insert(key, value).unwrap();
    m.commit(&s).await.unwrap();
    s.id()
}

async fn stored_ids(store: &Arc<dyn SessionStore>, context: &str) -> Vec<SessionId> {
    store.for_context(context).list_ids().await.unwrap()
}

/// Two contexts on one node, one store: each loads, falls back to and deletes only its
/// own records, across a restart of both.
async fn contexts_suite(store: Arc<dyn SessionStore>, tag: &str) {
    let mode = StoreMode::WriteThrough;
    let kind = ManagerKind::Delta;
    // Names of this run only: the databases outlive test runs.
    let run = format!("{:08x}", rand::random::<u32>());
    let (shop_ctx, cart_ctx) = (format!("shop-{run}"), format!("/cart-{run}"));
    let ch = channel(&format!("{tag}-1"), &[]).await;
    let shop = manager(&ch, &shop_ctx, kind, &store, mode, false).await;
    let cart = manager(&ch, &cart_ctx, kind, &store, mode, false).await;
    let s1 = create(&shop, "user", "alice").await;
    let s2 = create(&cart, "items", "2 apples").await;
    // A cookie of one application presented to the other: not found, even in the store.
    assert!(cart.get(&s1).await.is_none(), "cart loaded a session of shop");
    assert!(shop.get(&s2).await.is_none(), "shop loaded a session of cart");
    assert!(
        shop.stats()
            .store
            .unwrap()
            .name
            .contains(&format!("context '{shop_ctx}'"))
    );
    shop.shutdown().await;
    cart.shutdown().await;
    drop(ch);

    // Both restart from the store: each gets its own sessions back, and only those.
    let ch = channel(&format!("{tag}-2"), &[]).await;
    let shop = manager(&ch, &shop_ctx, kind, &store, mode, false).await;
    let cart = manager(&ch, &cart_ctx, kind, &store, mode, false).await;
    assert!(
        shop.contains(&s1) && !shop.contains(&s2),
        "shop loaded another context's session at start"
    );
    assert!(
        cart.contains(&s2) && !cart.contains(&s1),
        "cart loaded another context's session at start"
    );
    assert_eq!(
        cart.get(&s2).await.unwrap().get::<String>("items").unwrap().as_deref(),
        Some("2 apples")
    );
    // An invalidation in one context deletes its record only.
    let s = shop.get(&s1).await.unwrap();
    s.invalidate();
    shop.commit(&s).await.unwrap();
    assert!(!stored_ids(&store, &shop_ctx).await.contains(&s1));
    assert!(stored_ids(&store, &cart_ctx).await.contains(&s2));
    // The same session id in both contexts is two sessions.
    let rec = cart.export(&s2).unwrap();
    assert!(shop.import(&rec).unwrap());
    let copy = shop.get(&s2).await.unwrap();
    copy.insert("items", "overwritten?").unwrap();
    shop.commit(&copy).await.unwrap();
    let cart_record = store.for_context(&cart_ctx).load(&s2).await.unwrap().unwrap();
    assert_eq!(
        cart_record.version, rec.version,
        "a save in shop overwrote cart's record"
    );
    shop.shutdown().await;
    cart.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_apart_file_store() {
    init_tracing();
    let dir = temp_dir("apart");
    let store: Arc<dyn SessionStore> = Arc::new(FileStore::open(&dir).await.unwrap());
    contexts_suite(store, "ctx-file").await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `with_expire_sessions_on_shutdown`: after a clean shutdown with it a restart from the
/// same store has none of the sessions; without it, every one comes back. Write-through
/// and write-behind (whose queue is flushed before the deletes).
async fn expire_suite(store: Arc<dyn SessionStore>, tag: &str) {
    let context = format!("expire-{:08x}", rand::random::<u32>());
    for mode in [StoreMode::WriteThrough, StoreMode::WriteBehind { queue: 100 }] {
        for expire in [true, false] {
            let ch = channel(&format!("{tag}-{expire}"), &[]).await;
            let a = manager(&ch, &context, ManagerKind::Delta, &store, mode, expire).await;
            let mut ids = Vec::new();
            for i in 0..5 {
                ids.push(create(&a, "n", &i.to_string()).await);
            }
            a.shutdown().await;
            drop(ch);
            let listed = stored_ids(&store, &context).await;
            let ch = channel(&format!("{tag}-{expire}-again"), &[]).await;
            let b = manager(&ch, &context, ManagerKind::Delta, &store, mode, false).await;
            for id in &ids {
                let back = b.get(id).await.is_some();
                assert_eq!(
                    back, !expire,
                    "{mode:?}, expire on shutdown {expire}: session back after restart"
                );
                assert_eq!(
                    listed.contains(id),
                    !expire,
                    "{mode:?}, expire {expire}: record in the store"
                );
            }
            if expire && mode == StoreMode::WriteThrough {
                // Write-behind may not have written some yet: their records never existed.
                let deletes = a.stats().store.unwrap().deletes;
                assert!(deletes >= 5, "{mode:?}: {deletes} deletes counted");
            }
            // Leave the store empty for the next round.
            for id in &ids {
                if let Some(s) = b.get(id).await {
                    s.invalidate();
                    b.commit(&s).await.unwrap();
                }
            }
            b.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_on_shutdown_file_store() {
    init_tracing();
    let dir = temp_dir("expire");
    let store: Arc<dyn SessionStore> = Arc::new(FileStore::open(&dir).await.unwrap());
    expire_suite(store, "exp-file").await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// BackupManager, two nodes on one store: the leaving node's expire-on-shutdown removes
/// the sessions it was the primary of (the ones the members expire with it) from the store,
/// and leaves those the other node is the primary of, which live on there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_on_shutdown_backup_keeps_the_other_primarys_sessions() {
    init_tracing();
    let dir = temp_dir("expire-backup");
    let store: Arc<dyn SessionStore> = Arc::new(FileStore::open(&dir).await.unwrap());
    let kind = ManagerKind::Backup { backup_count: 1 };
    let mode = StoreMode::WriteThrough;
    let ch_a = channel("expb-a", &[]).await;
    let ch_b = channel("expb-b", &[ch_a.local().addr()]).await;
    let a = manager(&ch_a, "/app", kind, &store, mode, true).await;
    let b = manager(&ch_b, "/app", kind, &store, mode, false).await;
    wait_mesh(&[&a, &b]).await;
    let on_a = create(&a, "served", "by a").await;
    let on_b = create(&b, "served", "by b").await;
    a.shutdown().await;
    let listed = stored_ids(&store, "/app").await;
    assert!(!listed.contains(&on_a), "a's session left in the store");
    assert!(listed.contains(&on_b), "b's session deleted by a's shutdown");
    assert!(b.get(&on_b).await.is_some());
    common::wait_until("b expired a's session", Duration::from_secs(5), || !b.contains(&on_a)).await;
    b.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The variable's value. A missing one fails the test, naming what to start: a test
/// that cannot run must not pass.
#[cfg(any(feature = "postgres", feature = "redis"))]
#[cfg(feature = "postgres")]
async fn postgres() -> Arc<dyn SessionStore> {
    let url = service_env("TRIBES_TEST_POSTGRES_URL");
    Arc::new(tribes_sessions::PostgresStore::connect(&url).await.unwrap())
}

#[cfg(feature = "redis")]
async fn redis() -> Arc<dyn SessionStore> {
    let url = service_env("TRIBES_TEST_REDIS_URL");
    let store = tribes_sessions::RedisStore::connect(&url)
        .await
        .unwrap()
        .with_prefix(format!("contexts-{:x}:", rand::random::<u32>()));
    Arc::new(store)
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_apart_postgres_store() {
    init_tracing();
    contexts_suite(postgres().await, "ctx-pg").await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_on_shutdown_postgres_store() {
    init_tracing();
    expire_suite(postgres().await, "exp-pg").await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_apart_redis_store() {
    init_tracing();
    contexts_suite(redis().await, "ctx-redis").await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_on_shutdown_redis_store() {
    init_tracing();
    expire_suite(redis().await, "exp-redis").await;
}
