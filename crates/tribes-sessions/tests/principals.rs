//! Principals over real channels, both managers: who is logged in where, log out
//! everywhere, and the session limit (with two logins racing on two nodes).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use common::*;
use tribes::Channel;
use tribes_sessions::{ManagerKind, MaxSessionsPolicy, PrincipalError, SessionId, SessionManager};

const KINDS: [ManagerKind; 2] = [ManagerKind::Delta, ManagerKind::Backup { backup_count: 1 }];

async fn start(
    name: &str,
    peers: &[SocketAddr],
    kind: ManagerKind,
    limit: Option<(usize, MaxSessionsPolicy)>,
) -> (Channel, SessionManager) {
    let mut b = builder(kind);
    if let Some((max, policy)) = limit {
        b = b.with_max_sessions_per_principal(max, policy);
    }
    tribes_testkit::sessions::ready_node(name, peers, b).await
}

async fn cluster(kind: ManagerKind, limit: Option<(usize, MaxSessionsPolicy)>) -> Vec<(Channel, SessionManager)> {
    let a = start("A", &[], kind, limit).await;
    let b = start("B", &[a.0.local().addr()], kind, limit).await;
    let c = start("C", &[a.0.local().addr(), b.0.local().addr()], kind, limit).await;
    wait_mesh(&[&a.1, &b.1, &c.1]).await;
    vec![a, b, c]
}

/// A login on `m`, as an app does it: a new session, a new id, the principal, a commit.
async fn login(m: &SessionManager, user: &str) -> Result<SessionId, PrincipalError> {
    let s = m.create(SystemTime::now()).unwrap();
    s.insert("cart", &vec!["apple"]).unwrap();
    s.cycle_id();
    m.set_principal(&s, user).await?;
    let r = m.commit(&s).await.expect("login commits");
    assert!(r.all_ok(), "{r:?}");
    assert_eq!(s.principal().as_deref(), Some(user));
    Ok(s.id())
}

/// Whether any node still serves the session (a request with its cookie, on any node).
async fn served_anywhere(nodes: &[(Channel, SessionManager)], id: &SessionId) -> Vec<String> {
    let mut on = Vec::new();
    for (ch, m) in nodes {
        if m.get(id).await.is_some() {
            on.push(ch.local().name().to_string());
        }
    }
    on
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_everywhere_from_a_third_node_ends_both_browsers_on_every_node() {
    init_tracing();
    for kind in KINDS {
        let nodes = cluster(kind, None).await;
        let (a, b, c) = (&nodes[0].1, &nodes[1].1, &nodes[2].1);
        let first = login(a, "alice").await.unwrap();
        let second = login(b, "alice").await.unwrap();
        let bob = login(c, "bob").await.unwrap();
        for m in [a, b, c] {
            let mut listed = m.sessions_of("alice").await.unwrap();
            listed.sort_by_key(|s| s.route.clone());
            let seen: Vec<(SessionId, String)> = listed.iter().map(|s| (s.id, s.route.clone())).collect();
            assert_eq!(
                seen,
                vec![(first, "A".into()), (second, "B".into())],
                "{kind:?}: alice's sessions, from {}",
                m.route()
            );
        }
        let report = c.invalidate_principal("alice").await.unwrap();
        assert_eq!(
            report.members.len(),
            2,
            "{kind:?}: both other members were told: {report:?}"
        );
        assert!(
            report
                .members
                .iter()
                .all(|m| matches!(m.outcome, tribes_sessions::AckOutcome::Acked)),
            "{kind:?}: sync mode waits for every member: {report:?}"
        );
        for id in [first, second] {
            assert_eq!(
                served_anywhere(&nodes, &id).await,
                Vec::<String>::new(),
                "{kind:?}: a logged-out session is served nowhere"
            );
        }
        for m in [a, b, c] {
            assert!(m.sessions_of("alice").await.unwrap().is_empty(), "{kind:?}");
        }
        assert_eq!(
            served_anywhere(&nodes, &bob).await.len(),
            3,
            "{kind:?}: bob stays logged in"
        );
        // A login after the logout is a new session, and stays (a login in the very
        // millisecond of the logout would end too: the safe side).
        tokio::time::sleep(Duration::from_millis(2)).await;
        let again = login(a, "alice").await.unwrap();
        assert_eq!(b.sessions_of("alice").await.unwrap().len(), 1, "{kind:?}");
        assert_eq!(served_anywhere(&nodes, &again).await.len(), 3, "{kind:?}");
        for (_, m) in &nodes {
            m.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_follows_id_changes_and_cleared_principals() {
    init_tracing();
    for kind in KINDS {
        let nodes = cluster(kind, None).await;
        let (a, b) = (&nodes[0].1, &nodes[1].1);
        let id = login(a, "carol").await.unwrap();
        let s = a.get(&id).await.unwrap();
        let new = s.cycle_id();
        a.commit(&s).await.unwrap();
        let listed: Vec<SessionId> = b.sessions_of("carol").await.unwrap().iter().map(|s| s.id).collect();
        assert_eq!(listed, vec![new], "{kind:?}: the index follows the new id");
        let s = b.get(&new).await.unwrap();
        s.clear_principal();
        b.commit(&s).await.unwrap();
        assert!(a.sessions_of("carol").await.unwrap().is_empty(), "{kind:?}: cleared");
        assert!(matches!(
            s.insert(tribes_sessions::PRINCIPAL_ATTRIBUTE, "mallory"),
            Err(tribes_sessions::AttributeError::Reserved { .. })
        ));
        for (_, m) in &nodes {
            m.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_login_evicts_the_first_on_every_node_or_is_refused() {
    init_tracing();
    for kind in KINDS {
        let nodes = cluster(kind, Some((1, MaxSessionsPolicy::EvictOldest))).await;
        let (a, b, c) = (&nodes[0].1, &nodes[1].1, &nodes[2].1);
        let first = login(a, "alice").await.unwrap();
        let second = login(b, "alice").await.unwrap();
        assert_eq!(
            served_anywhere(&nodes, &first).await,
            Vec::<String>::new(),
            "{kind:?}: the first login was evicted"
        );
        assert_eq!(served_anywhere(&nodes, &second).await.len(), 3, "{kind:?}");
        // Two logins racing on two nodes. BackupManager: once both returned (sync-ack), one
        // session is left (each login's check after its commit). DeltaManager: the
        // coordinator's next tick evicts the extra one.
        let (x, y) = tokio::join!(login(a, "dave"), login(c, "dave"));
        x.unwrap();
        y.unwrap();
        if kind == ManagerKind::Delta {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while b.sessions_of("dave").await.unwrap().len() > 1 && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let left = b.sessions_of("dave").await.unwrap();
        assert_eq!(left.len(), 1, "{kind:?}: the limit holds after a race: {left:?}");
        for (_, m) in &nodes {
            m.shutdown().await;
        }
        let nodes = cluster(kind, Some((1, MaxSessionsPolicy::Refuse))).await;
        let (a, b) = (&nodes[0].1, &nodes[1].1);
        let first = login(a, "alice").await.unwrap();
        match login(b, "alice").await {
            Err(PrincipalError::TooManySessions {
                max: 1, sessions: 1, ..
            }) => {}
            other => panic!("{kind:?}: the second login must be refused, got {other:?}"),
        }
        assert_eq!(
            served_anywhere(&nodes, &first).await.len(),
            3,
            "{kind:?}: the first stays"
        );
        for (_, m) in &nodes {
            m.shutdown().await;
        }
    }
}
