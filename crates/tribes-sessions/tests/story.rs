//! The nine-step story of Tomcat's cluster how-to, for both managers.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use tribes_sessions::ManagerKind;

async fn story(kind: ManagerKind) {
    init_tracing();
    let t = Duration::from_secs(10);
    // 1. TomcatA starts.
    let a = node("TomcatA", &[], kind).await;
    // 2. TomcatB starts (after A is ready).
    let b = node("TomcatB", &[a.0.local().addr()], kind).await;
    wait_mesh(&[&a.1, &b.1]).await;
    // 3. A creates S1.
    let s1 = a.1.create(SystemTime::now()).unwrap();
    s1.insert("user", "alice").unwrap();
    let report = a.1.commit(&s1).await.unwrap();
    assert!(report.sent && report.all_ok(), "{report:?}");
    let id1 = s1.id();
    assert!(b.1.contains(&id1), "sync-ack commit: B holds S1 when commit returns");
    // 4. A crashes.
    let b_addr = b.0.local().addr();
    crash(a);
    wait_until("B notices A is gone", t, || b.0.members().is_empty()).await;
    // 5. B serves S1, current, and changes it.
    let s = b.1.get(&id1).await.expect("B serves S1");
    assert_eq!(s.get::<String>("user").unwrap().as_deref(), Some("alice"));
    s.insert("count", &1u32).unwrap();
    b.1.commit(&s).await.unwrap();
    wait_until("B is the primary of S1", t, || b.1.is_primary(&id1)).await;
    // 6. A restarts (a new member) and receives the state before it is ready.
    let a = node("TomcatA", &[b_addr], kind).await;
    assert!(a.1.contains(&id1), "A received S1 before ready");
    let s = a.1.get(&id1).await.unwrap();
    assert_eq!(s.get::<u32>("count").unwrap(), Some(1));
    assert_eq!(s.route(), "TomcatA", "route at creation was TomcatA");
    wait_mesh(&[&a.1, &b.1]).await;
    // 7. A invalidates S1; B drops it and a late change does not resurrect it.
    s.invalidate();
    a.1.commit(&s).await.unwrap();
    wait_until("B drops S1", t, || !b.1.contains(&id1)).await;
    assert!(!a.1.contains(&id1));
    assert!(b.1.get(&id1).await.is_none());
    // 8. B creates S2 with a short max inactive interval.
    let s2 = b.1.create(SystemTime::now()).unwrap();
    s2.set_max_inactive(Duration::from_millis(600));
    s2.insert("x", &1u8).unwrap();
    b.1.commit(&s2).await.unwrap();
    let id2 = s2.id();
    wait_until("A holds S2", t, || a.1.contains(&id2)).await;
    // 9. S2 expires from inactivity everywhere.
    wait_until("S2 expires everywhere", t, || {
        !a.1.contains(&id2) && !b.1.contains(&id2)
    })
    .await;
    assert!(a.1.stats().expired + b.1.stats().expired >= 1);
    assert!(a.1.get(&id2).await.is_none());
    a.1.shutdown().await;
    b.1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nine_step_story_delta_manager() {
    story(ManagerKind::Delta).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nine_step_story_backup_manager() {
    story(ManagerKind::Backup { backup_count: 1 }).await;
}
