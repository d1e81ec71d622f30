//! The manager with a session store: write-through, write-behind, shared (file store, and
//! Redis / PostgreSQL for shared mode when their variables are set).

#![cfg(feature = "file")]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{CONTEXT, builder, channel, init_tracing};
use tribes_sessions::{
    FileStore, ManagerKind, ReplicationError, SessionManager, SessionStore, StoreMode, StoredSession,
};
#[cfg(any(feature = "redis", feature = "postgres"))]
use tribes_testkit::services::service_env;
use tribes_testkit::sessions::start_ready;

fn temp_dir(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("tribes-modes-{tag}-{:016x}", rand::random::<u64>()))
}

async fn file_store(dir: &std::path::Path) -> Arc<dyn SessionStore> {
    Arc::new(FileStore::open(dir).await.expect("file store opens"))
}

/// A lone node (no peers) with `store` in `mode`, ready.
async fn lone(name: &str, store: Arc<dyn SessionStore>, mode: StoreMode) -> SessionManager {
    let ch = channel(name, &[]).await;
    start_ready(
        builder(ManagerKind::Delta)
            .with_store(store, mode)
            .with_discovery_wait(Duration::from_millis(50)),
        &ch,
    )
    .await
}

#[tokio::test]
async fn write_through_saves_before_commit_returns_and_a_new_node_loads_it() {
    init_tracing();
    let dir = temp_dir("wt");
    let store = file_store(&dir).await;
    // The manager's own records: those of its context.
    let records = store.for_context(CONTEXT);
    let a = lone("wt-a", store.clone(), StoreMode::WriteThrough).await;
    let s = a.create(SystemTime::now()).unwrap();
    s.insert("user", "alice").unwrap();
    let report = a.commit(&s).await.unwrap();
    // Saved when commit returned, with the session's version.
    let rec = records.load(&s.id()).await.unwrap().expect("saved by the commit");
    assert_eq!(rec.version, report.version);
    assert_eq!(a.export(&s.id()).unwrap().version, report.version);

    // A crash, then a new node: the session is loaded at start, before ready.
    a.abort();
    let b = lone("wt-b", store.clone(), StoreMode::WriteThrough).await;
    assert!(b.contains(&s.id()), "loaded at start");
    let on_b = b.get(&s.id()).await.expect("session survives");
    assert_eq!(on_b.get::<String>("user").unwrap().as_deref(), Some("alice"));
    assert_eq!(on_b.version(), report.version);
    assert!(b.stats().store.unwrap().loads >= 1);

    // A miss in `get` falls back to the store (written by someone else meanwhile).
    let other = b.create(SystemTime::now()).unwrap();
    other.insert("k", "v").unwrap();
    let rec = other.to_stored();
    records.save(&rec, None).await.unwrap();
    let lonely = lone("wt-c", store.clone(), StoreMode::WriteThrough).await;
    records.save(&rec, None).await.unwrap();
    assert!(lonely.get(&other.id()).await.is_some(), "get falls back to the store");

    // Invalidation deletes from the store.
    on_b.invalidate();
    b.commit(&on_b).await.unwrap();
    assert!(records.load(&s.id()).await.unwrap().is_none(), "deleted");

    // A new id (fixation protection) moves the record.
    let s2 = b.create(SystemTime::now()).unwrap();
    s2.insert("x", &1u32).unwrap();
    b.commit(&s2).await.unwrap();
    let old = s2.id();
    let new = s2.cycle_id();
    b.commit(&s2).await.unwrap();
    assert!(records.load(&old).await.unwrap().is_none());
    assert!(records.load(&new).await.unwrap().is_some());
    b.shutdown().await;
    lonely.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn write_through_store_failure_is_a_typed_error() {
    init_tracing();
    let dir = temp_dir("wt-fail");
    let store = file_store(&dir).await;
    let a = lone("wtf-a", store.clone(), StoreMode::WriteThrough).await;
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    let s = a.create(SystemTime::now()).unwrap();
    s.insert("k", "v").unwrap();
    let err = a.commit(&s).await.unwrap_err();
    assert!(matches!(err, ReplicationError::Store { .. }), "{err}");
    // The chain reaches the store's error (boxed), then the file system's.
    let store_err = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<Box<tribes_sessions::StoreError>>());
    let io = store_err
        .and_then(|e| std::error::Error::source(&**e))
        .and_then(|s| s.downcast_ref::<std::io::Error>());
    assert!(io.is_some(), "{err:?}");
    let direct = std::error::Error::source(err.store_error().expect("a store failure"));
    assert!(
        direct.and_then(|s| s.downcast_ref::<std::io::Error>()).is_some(),
        "{err:?}"
    );
    // Named by its log hash, never by the id itself (OWASP: ids stay out of logs).
    assert!(err.to_string().contains(&s.id().log_id().to_string()), "{err}");
    assert!(!err.to_string().contains(&s.id().to_string()), "{err}");
    let stats = a.stats().store.unwrap();
    assert!(stats.errors >= 1 && stats.last_error.is_some(), "{stats:?}");
    a.shutdown().await;
    let _ = std::fs::remove_file(&dir);
}

#[tokio::test]
async fn write_behind_queues_and_flushes_on_shutdown() {
    init_tracing();
    let dir = temp_dir("wb");
    let store = file_store(&dir).await;
    let a = lone("wb-a", store.clone(), StoreMode::WriteBehind { queue: 1000 }).await;
    let mut ids = Vec::new();
    for i in 0..50u32 {
        let s = a.create(SystemTime::now()).unwrap();
        s.insert("i", &i).unwrap();
        a.commit(&s).await.unwrap();
        ids.push((s.id(), i));
    }
    let stats = a.stats().store.unwrap();
    assert_eq!(stats.mode, StoreMode::WriteBehind { queue: 1000 });
    a.shutdown().await;
    assert_eq!(a.stats().store.unwrap().queue_depth, 0, "flushed");
    let b = lone("wb-b", store.clone(), StoreMode::WriteBehind { queue: 1000 }).await;
    for (id, i) in ids {
        let s = b.get(&id).await.expect("flushed at shutdown");
        assert_eq!(s.get::<u32>("i").unwrap(), Some(i));
    }
    b.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn write_behind_full_queue_saves_inline() {
    init_tracing();
    let dir = temp_dir("wb-full");
    let store = file_store(&dir).await;
    let a = lone("wbf-a", store.clone(), StoreMode::WriteBehind { queue: 1 }).await;
    for i in 0..20u32 {
        let s = a.create(SystemTime::now()).unwrap();
        s.insert("i", &i).unwrap();
        a.commit(&s).await.unwrap();
    }
    let stats = a.stats().store.unwrap();
    assert!(stats.queue_depth <= 1, "{stats:?}");
    a.abort();
    // A crash loses at most the queued ids: here at most one of 20.
    let saved = store.for_context(CONTEXT).list_ids().await.unwrap().len();
    assert!(saved >= 19, "{saved} of 20 saved");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn export_and_import_carry_the_version() {
    init_tracing();
    let a = lone_plain("exp-a").await;
    let b = lone_plain("exp-b").await;
    let s = a.create(SystemTime::now()).unwrap();
    s.insert("cart", &vec![1, 2, 3]).unwrap();
    a.commit(&s).await.unwrap();
    s.insert("cart", &vec![1, 2, 3, 4]).unwrap();
    a.commit(&s).await.unwrap();
    let rec: StoredSession = a.export(&s.id()).unwrap();
    assert_eq!(rec.version, s.version());
    assert!(b.import(&rec).unwrap());
    let on_b = b.get(&s.id()).await.unwrap();
    assert_eq!(on_b.version(), rec.version);
    assert_eq!(on_b.get::<Vec<i32>>("cart").unwrap(), Some(vec![1, 2, 3, 4]));
    let mut bad = rec.clone();
    bad.data = vec![1, 2, 3];
    assert!(b.import(&bad).unwrap_err().is_corrupt());
}

async fn lone_plain(name: &str) -> SessionManager {
    let ch = channel(name, &[]).await;
    let m = builder(ManagerKind::Delta)
        .with_discovery_wait(Duration::from_millis(50))
        .start(ch)
        .await
        .unwrap();
    m.wait_ready().await.unwrap();
    m
}

/// Two managers with no peers sharing one store: read on the other, conflicts detected.
async fn shared_suite(store: Arc<dyn SessionStore>, tag: &str) {
    let a = lone(&format!("{tag}-a"), store.clone(), StoreMode::Shared).await;
    let b = lone(&format!("{tag}-b"), store.clone(), StoreMode::Shared).await;
    let s = a.create(SystemTime::now()).unwrap();
    s.insert("user", "alice").unwrap();
    let r = a.commit(&s).await.unwrap();
    assert!(!r.sent, "shared mode sends nothing");

    // Written on A, read on B.
    let on_b = b.get(&s.id()).await.expect("B reads A's session from the store");
    assert_eq!(on_b.get::<String>("user").unwrap().as_deref(), Some("alice"));
    on_b.insert("cart", "1 apple").unwrap();
    b.commit(&on_b).await.unwrap();
    let on_a = a.get(&s.id()).await.unwrap();
    assert_eq!(on_a.get::<String>("cart").unwrap().as_deref(), Some("1 apple"));

    // Two concurrent writers: both load version v, both commit; the second is told.
    let w1 = a.get(&s.id()).await.unwrap();
    let w2 = b.get(&s.id()).await.unwrap();
    assert_eq!(w1.version(), w2.version());
    w1.insert("cart", "2 apples").unwrap();
    w2.insert("cart", "1 pear").unwrap();
    a.commit(&w1).await.unwrap();
    let err = b.commit(&w2).await.unwrap_err();
    assert!(matches!(err, ReplicationError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("NOT saved"), "{err}");
    assert_eq!(b.stats().store_conflicts, 1);
    assert_eq!(b.stats().store.unwrap().conflicts, 1);
    assert_eq!(a.stats().store_conflicts, 0);
    // The first write is what everyone reads.
    let again = b.get(&s.id()).await.unwrap();
    assert_eq!(again.get::<String>("cart").unwrap().as_deref(), Some("2 apples"));

    // Two requests of one session on B and a writer on A: A saves first, B's first
    // request conflicts (and B drops its copy); B's second is a conflict too, not "gone":
    // the store still has the session, so the user keeps it.
    let (x1, x2, y) = (
        b.get(&s.id()).await.unwrap(),
        b.get(&s.id()).await.unwrap(),
        a.get(&s.id()).await.unwrap(),
    );
    y.insert("cart", "3 plums").unwrap();
    a.commit(&y).await.unwrap();
    x1.insert("cart", "x1").unwrap();
    x2.insert("cart", "x2").unwrap();
    let e1 = b.commit(&x1).await.unwrap_err();
    assert!(matches!(e1, ReplicationError::Conflict { .. }), "{e1}");
    let e2 = b.commit(&x2).await.unwrap_err();
    assert!(matches!(e2, ReplicationError::Conflict { found: Some(_), .. }), "{e2}");
    assert_eq!(b.stats().store_conflicts, 3);
    let again = b.get(&s.id()).await.expect("the session survives both conflicts");
    assert_eq!(again.get::<String>("cart").unwrap().as_deref(), Some("3 plums"));

    // Invalidated on B: gone on A.
    again.invalidate();
    b.commit(&again).await.unwrap();
    assert!(a.get(&s.id()).await.is_none());
    assert_eq!(a.stats().servers.len(), 0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn shared_mode_file_store() {
    init_tracing();
    let dir = temp_dir("shared");
    shared_suite(file_store(&dir).await, "sh-file").await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn shared_mode_redis_store() {
    init_tracing();
    let url = service_env("TRIBES_TEST_REDIS_URL");
    let store = tribes_sessions::RedisStore::connect(&url)
        .await
        .unwrap()
        .with_prefix(format!("modes-{:x}:", rand::random::<u32>()));
    shared_suite(Arc::new(store), "sh-redis").await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn shared_mode_postgres_store() {
    init_tracing();
    let url = service_env("TRIBES_TEST_POSTGRES_URL");
    let store = tribes_sessions::PostgresStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    shared_suite(Arc::new(store), "sh-pg").await;
}

/// Past its max lifetime a session leaves the store too (write-through and shared): the
/// request that finds it, or the sweep, ends it, and no other node can load it back.
#[tokio::test]
async fn a_session_past_its_max_lifetime_leaves_the_store() {
    init_tracing();
    for mode in [StoreMode::WriteThrough, StoreMode::Shared] {
        let dir = temp_dir("lifetime");
        let store = file_store(&dir).await;
        let ch = channel(&format!("life-{mode:?}"), &[]).await;
        let a = start_ready(
            builder(ManagerKind::Delta)
                .with_store(store.clone(), mode)
                .with_max_lifetime(Some(Duration::from_millis(300)))
                .with_discovery_wait(Duration::from_millis(50)),
            &ch,
        )
        .await;
        let s = a.create(SystemTime::now()).unwrap();
        s.insert("user", "alice").unwrap();
        a.commit(&s).await.unwrap();
        assert!(store.for_context(CONTEXT).load(&s.id()).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(a.get(&s.id()).await.is_none(), "{mode:?}: served past its lifetime");
        let start = std::time::Instant::now();
        while store.for_context(CONTEXT).load(&s.id()).await.unwrap().is_some() {
            assert!(start.elapsed() < Duration::from_secs(2), "{mode:?}: still in the store");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stats = a.stats();
        assert!(
            stats.absolute_timeouts >= 1 && stats.sessions == 0,
            "{mode:?}: {stats:?}"
        );
        a.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
