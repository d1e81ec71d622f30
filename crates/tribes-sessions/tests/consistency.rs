//! Conflicts, invalidation and expiry across nodes.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use tribes_sessions::{ManagerKind, ReplicationError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_are_counted_and_converge() {
    init_tracing();
    let a = node("A", &[], ManagerKind::Delta).await;
    let b = node("B", &[a.0.local().addr()], ManagerKind::Delta).await;
    wait_mesh(&[&a.1, &b.1]).await;
    let s = a.1.create(SystemTime::now()).unwrap();
    s.insert("x", "start").unwrap();
    a.1.commit(&s).await.unwrap();
    let id = s.id();
    let (ha, hb) = (a.1.get(&id).await.unwrap(), b.1.get(&id).await.unwrap());
    ha.insert("x", "from A").unwrap();
    ha.insert("only-a", &1u8).unwrap();
    hb.insert("x", "from B").unwrap();
    let (ra, rb) = tokio::join!(a.1.commit(&ha), b.1.commit(&hb));
    ra.unwrap();
    rb.unwrap();
    wait_until("a conflict is counted", Duration::from_secs(5), || {
        a.1.stats().conflicts + b.1.stats().conflicts >= 1
    })
    .await;
    let mut same = false;
    for _ in 0..100 {
        let (va, vb) = (a.1.get(&id).await.unwrap(), b.1.get(&id).await.unwrap());
        let pair = |s: &tribes_sessions::SessionHandle| {
            (
                s.get::<String>("x").unwrap(),
                s.get::<u8>("only-a").unwrap(),
                s.version(),
            )
        };
        if pair(&va) == pair(&vb) {
            assert_eq!(pair(&va).1, Some(1), "non-conflicting attribute kept");
            same = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(same, "both nodes end with the same state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_wins_over_a_late_change() {
    init_tracing();
    let a = node("A", &[], ManagerKind::Delta).await;
    let b = node("B", &[a.0.local().addr()], ManagerKind::Delta).await;
    wait_mesh(&[&a.1, &b.1]).await;
    let s = a.1.create(SystemTime::now()).unwrap();
    s.insert("x", &1u8).unwrap();
    a.1.commit(&s).await.unwrap();
    let stale = b.1.get(&s.id()).await.unwrap();
    s.invalidate();
    a.1.commit(&s).await.unwrap();
    assert!(!b.1.contains(&s.id()));
    stale.insert("x", &2u8).unwrap();
    let err = b.1.commit(&stale).await.unwrap_err();
    assert!(matches!(err, ReplicationError::Gone { .. }), "{err}");
    assert!(!a.1.contains(&s.id()) && !b.1.contains(&s.id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_on_one_node_keep_a_session_alive_everywhere_then_it_expires_everywhere() {
    init_tracing();
    let a = node("A", &[], ManagerKind::Delta).await;
    let b = node("B", &[a.0.local().addr()], ManagerKind::Delta).await;
    wait_mesh(&[&a.1, &b.1]).await;
    let s = a.1.create(SystemTime::now()).unwrap();
    s.set_max_inactive(Duration::from_millis(800));
    a.1.commit(&s).await.unwrap();
    let id = s.id();
    // Read-only requests on A for 2.5 s (three intervals): B must keep the session.
    let until = std::time::Instant::now() + Duration::from_millis(2500);
    while std::time::Instant::now() < until {
        assert!(a.1.touch(&id, SystemTime::now()));
        assert!(b.1.contains(&id), "B expired a session read on A");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_until("expired on both", Duration::from_secs(5), || {
        !a.1.contains(&id) && !b.1.contains(&id)
    })
    .await;
    // A late change to the expired session does not resurrect it.
    assert!(matches!(a.1.commit(&s).await, Err(ReplicationError::Gone { .. })));
    assert!(b.1.get(&id).await.is_none());
}
