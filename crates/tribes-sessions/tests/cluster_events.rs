//! Cluster events over real channels, both managers: each session's `Expired` reaches the
//! cluster listeners of exactly one node, also when the node that served the session was
//! killed; the other events reach the node whose call made them.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::*;
use tribes::Channel;
use tribes_sessions::{ClusterEvent, ManagerKind, SessionId, SessionManager};

type Log = Arc<Mutex<Vec<(String, ClusterEvent)>>>;

async fn start(name: &str, peers: &[SocketAddr], kind: ManagerKind, log: &Log) -> (Channel, SessionManager) {
    let (log, me) = (log.clone(), name.to_string());
    let builder = builder(kind)
        .with_max_inactive(Duration::from_secs(2))
        .with_cluster_listener(move |ev: &ClusterEvent| log.lock().unwrap().push((me.clone(), ev.clone())));
    tribes_testkit::sessions::ready_node(name, peers, builder).await
}

fn expired_events(log: &Log) -> Vec<(String, SessionId, Option<String>, String)> {
    log.lock()
        .unwrap()
        .iter()
        .filter_map(|(node, ev)| match ev {
            ClusterEvent::Expired {
                id,
                principal,
                delivered_by,
                ..
            } => Some((node.clone(), *id, principal.clone(), delivered_by.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_expiry_is_announced_once_in_the_cluster_even_after_the_serving_node_died() {
    init_tracing();
    for kind in [ManagerKind::Delta, ManagerKind::Backup { backup_count: 1 }] {
        let log: Log = Arc::default();
        let a = start("A", &[], kind, &log).await;
        let b = start("B", &[a.0.local().addr()], kind, &log).await;
        let c = start("C", &[a.0.local().addr(), b.0.local().addr()], kind, &log).await;
        wait_mesh(&[&a.1, &b.1, &c.1]).await;
        // Sessions served by each node; those of A lose their node before they expire.
        let mut ids = Vec::new();
        for (i, m) in [&a.1, &b.1, &c.1].into_iter().enumerate() {
            for _ in 0..4 {
                let s = m.create(SystemTime::now()).unwrap();
                s.insert("n", &i).unwrap();
                m.set_principal(&s, "erin").await.unwrap();
                m.commit(&s).await.unwrap();
                ids.push(s.id());
            }
        }
        {
            let log = log.lock().unwrap();
            let created = log
                .iter()
                .filter(|(_, e)| matches!(e, ClusterEvent::Created { .. }))
                .count();
            let logins = log
                .iter()
                .filter(|(_, e)| matches!(e, ClusterEvent::PrincipalSet { .. }))
                .count();
            assert_eq!(
                (created, logins),
                (12, 12),
                "{kind:?}: one Created and one PrincipalSet per session, by its node"
            );
        }
        crash(a);
        let survivors = [&b.1, &c.1];
        wait_until("the survivors see each other only", Duration::from_secs(10), || {
            survivors.iter().all(|m| m.stats().servers.len() == 1)
        })
        .await;
        wait_until(
            "every session's Expired event was delivered",
            Duration::from_secs(30),
            || {
                let events = expired_events(&log);
                ids.iter().all(|id| events.iter().any(|e| e.1 == *id))
            },
        )
        .await;
        // Time for a second delivery to show, if there were one.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let events = expired_events(&log);
        for id in &ids {
            let of: Vec<_> = events.iter().filter(|e| e.1 == *id).collect();
            assert_eq!(
                of.len(),
                1,
                "{kind:?}: session {} announced {} times: {of:?}",
                id.log_id(),
                of.len()
            );
            let (node, _, principal, by) = of[0];
            assert_eq!(node, by, "{kind:?}: delivered_by names the node that delivered it");
            assert_ne!(node, "A", "{kind:?}: A was dead");
            assert_eq!(principal.as_deref(), Some("erin"), "{kind:?}");
        }
        for m in survivors {
            m.shutdown().await;
        }
    }
}
