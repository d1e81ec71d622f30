//! The attribute filter (Tomcat's `sessionAttributeNameFilter`): a filtered attribute stays
//! on the node that wrote it, an unfiltered one reaches every member, under both managers,
//! through commits, state transfer to a joining node and the BackupManager's fetch.

mod common;

use std::net::SocketAddr;
use std::time::SystemTime;

use common::{builder, init_tracing, wait_mesh};
use tribes::Channel;
use tribes_sessions::{ManagerKind, SessionManager};

/// A ready node whose manager replicates every attribute except those named `local.*`.
async fn filtered_node(name: &str, peers: &[SocketAddr], kind: ManagerKind) -> (Channel, SessionManager) {
    tribes_testkit::sessions::ready_node(
        name,
        peers,
        builder(kind).with_attribute_filter(|name| !name.starts_with("local.")),
    )
    .await
}

async fn filter_suite(kind: ManagerKind, tag: &str) {
    init_tracing();
    let a = filtered_node(&format!("{tag}-a"), &[], kind).await;
    let b = filtered_node(&format!("{tag}-b"), &[a.0.local().addr()], kind).await;
    wait_mesh(&[&a.1, &b.1]).await;

    let s = a.1.create(SystemTime::now()).unwrap();
    s.insert("user", "alice").unwrap();
    s.insert("local.token", "secret-1").unwrap();
    let report = a.1.commit(&s).await.unwrap();
    assert!(report.sent, "the unfiltered attribute is replicated");
    let id = s.id();

    // The writer keeps both.
    let here = a.1.get(&id).await.unwrap();
    assert_eq!(here.get::<String>("local.token").unwrap().as_deref(), Some("secret-1"));
    // The other member has the unfiltered one only.
    let there = b.1.get(&id).await.expect("replicated to b");
    assert_eq!(there.get::<String>("user").unwrap().as_deref(), Some("alice"));
    assert_eq!(
        there.get::<String>("local.token").unwrap(),
        None,
        "a filtered attribute was replicated"
    );
    assert!(
        !there.attribute_names().iter().any(|n| n.starts_with("local.")),
        "{:?}",
        there.attribute_names()
    );

    // A later change of both: the same split.
    here.insert("user", "alice2").unwrap();
    here.insert("local.token", "secret-2").unwrap();
    a.1.commit(&here).await.unwrap();
    let there = b.1.get(&id).await.unwrap();
    assert_eq!(there.get::<String>("user").unwrap().as_deref(), Some("alice2"));
    assert_eq!(
        there.get::<String>("local.token").unwrap(),
        None,
        "a filtered change was replicated"
    );

    // A node joining later gets the session by state transfer (or fetch): filtered too.
    let c = filtered_node(&format!("{tag}-c"), &[a.0.local().addr(), b.0.local().addr()], kind).await;
    wait_mesh(&[&a.1, &b.1, &c.1]).await;
    let joined = c.1.get(&id).await.expect("the joiner gets the session");
    assert_eq!(joined.get::<String>("user").unwrap().as_deref(), Some("alice2"));
    assert_eq!(
        joined.get::<String>("local.token").unwrap(),
        None,
        "a filtered attribute reached the joiner"
    );
    // And the writer still has its own.
    let here = a.1.get(&id).await.unwrap();
    assert_eq!(here.get::<String>("local.token").unwrap().as_deref(), Some("secret-2"));
    for n in [a, b, c] {
        n.1.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_attribute_stays_local_delta() {
    filter_suite(ManagerKind::Delta, "flt-delta").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_attribute_stays_local_backup() {
    filter_suite(ManagerKind::Backup { backup_count: 1 }, "flt-backup").await;
}
