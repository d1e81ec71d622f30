//! The tower-sessions bridge: two tribes nodes on loopback, two axum apps using
//! tower-sessions' own layer and `Session` extractor over `TowerSessionStore`, and a real
//! HTTP client with a cookie jar. A login made on node 1 is read on node 2 after node 1 died.
#![cfg(feature = "tower-sessions")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use tower_sessions::cookie::time;
use tower_sessions::{Expiry, Session, SessionManagerLayer};
use tribes::{Channel, SendMode, StaticDiscovery};
use tribes_sessions::{ManagerKind, SessionId, SessionManager, TowerSessionStore};

async fn channel(name: &str, peers: &[SocketAddr]) -> Channel {
    Channel::builder(name)
        .with_cluster_key(tribes::Keyring::new(1, [42; 32]))
        .with_bind("127.0.0.1:0".parse().unwrap())
        .with_discovery(StaticDiscovery::new(peers.iter().copied()).with_frequency(Duration::from_millis(100)))
        .with_drop_time(Duration::from_millis(1500))
        .start()
        .await
        .expect("channel starts")
}

async fn manager(ch: Channel) -> SessionManager {
    let m = SessionManager::builder("/app")
        .with_kind(ManagerKind::Delta)
        .with_send_mode(SendMode::SyncAck)
        .with_ack_timeout(Duration::from_secs(3))
        .with_state_transfer_attempt_timeout(Duration::from_secs(2))
        .with_state_transfer_timeout(Duration::from_secs(15))
        .start(ch)
        .await
        .expect("manager starts");
    tokio::time::timeout(Duration::from_secs(15), m.wait_ready())
        .await
        .expect("ready in time")
        .unwrap();
    m
}

/// A plain tower-sessions app: nothing tribes-specific but the store.
fn app(manager: SessionManager) -> Router {
    let layer = SessionManagerLayer::new(TowerSessionStore::new(manager))
        .with_secure(false)
        .with_expiry(Expiry::OnInactivity(time::Duration::minutes(30)));
    Router::new()
        .route(
            "/login/{user}",
            post(|session: Session, Path(user): Path<String>| async move {
                session.insert("user", &user).await.unwrap();
                let visits: u32 = session.get("visits").await.unwrap().unwrap_or(0);
                session.insert("visits", visits + 1).await.unwrap();
                "ok"
            }),
        )
        .route(
            "/whoami",
            get(|session: Session| async move {
                let user: Option<String> = session.get("user").await.unwrap();
                let visits: u32 = session.get("visits").await.unwrap().unwrap_or(0);
                format!("{} {visits}", user.as_deref().unwrap_or("-"))
            }),
        )
        .route(
            "/logout",
            post(|session: Session| async move {
                session.flush().await.unwrap();
                "bye"
            }),
        )
        .layer(layer)
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_tower_login_on_node1_read_on_node2_after_node1_died() {
    let ch1 = channel("node-1", &[]).await;
    let ch2 = channel("node-2", &[ch1.local().addr()]).await;
    let mut w = ch2.watch_members();
    tokio::time::timeout(Duration::from_secs(5), w.wait_for(|m| !m.is_empty()))
        .await
        .expect("finds node 1")
        .unwrap();
    let (m1, m2) = (manager(ch1.clone()).await, manager(ch2.clone()).await);
    wait_until("both managers see each other", || {
        m1.stats().servers.len() == 1 && m2.stats().servers.len() == 1
    })
    .await;
    let (a1, a2) = (serve(app(m1.clone())).await, serve(app(m2.clone())).await);

    // Cookies are per host, not per port: one jar serves both nodes, as behind a load balancer.
    let client = reqwest::Client::builder().cookie_store(true).build().unwrap();
    let login = client.post(format!("http://{a1}/login/alice")).send().await.unwrap();
    assert!(login.status().is_success());
    let cookie = login
        .headers()
        .get("set-cookie")
        .expect("tower-sessions sets its cookie")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("id="), "{cookie}");
    assert_eq!(
        client
            .get(format!("http://{a1}/whoami"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "alice 1"
    );

    // The session is a tribes session, replicated to node 2 by the sync-ack commit.
    assert_eq!(m1.session_count(), 1);
    assert_eq!(m2.session_count(), 1, "replicated before the response");

    // Node 1 dies: manager aborted (no goodbye), channel gone.
    m1.abort();
    ch1.shutdown().await;
    wait_until("node 2 drops node 1", || m2.stats().servers.is_empty()).await;

    assert_eq!(
        client
            .get(format!("http://{a2}/whoami"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "alice 1"
    );
    // Writes on node 2 go on in the same session.
    assert!(
        client
            .post(format!("http://{a2}/login/alice"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    assert_eq!(
        client
            .get(format!("http://{a2}/whoami"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "alice 2"
    );
    assert_eq!(m2.session_count(), 1, "the same session, not a new one");

    // Logout invalidates it in the cluster.
    assert!(
        client
            .post(format!("http://{a2}/logout"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    assert_eq!(
        client
            .get(format!("http://{a2}/whoami"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "- 0"
    );
    m2.shutdown().await;
    ch2.shutdown().await;
}

/// The tower-sessions id and the tribes id name the same session: what tower-sessions put in
/// the cookie is what the manager holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_tower_cookie_names_the_tribes_session() {
    let ch = channel("solo", &[]).await;
    let m = manager(ch.clone()).await;
    let addr = serve(app(m.clone())).await;
    let client = reqwest::Client::new();
    let res = client.post(format!("http://{addr}/login/bob")).send().await.unwrap();
    let cookie = res.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    let value = cookie.trim_start_matches("id=").split(';').next().unwrap();
    let tower_id: tower_sessions::session::Id = value.parse().unwrap();
    let sid = SessionId::from_bytes(tower_id.0.to_le_bytes());
    let session = m.get(&sid).await.expect("the cookie's id is the manager's session");
    assert_eq!(session.get::<String>("user").unwrap().as_deref(), Some("bob"));
    assert_eq!(
        session.max_inactive(),
        Duration::from_secs(1800),
        "Expiry::OnInactivity(30 min) is the max inactive interval"
    );
    m.shutdown().await;
    ch.shutdown().await;
}

/// One `TowerSessionStore` is a store for tower-sessions 0.14 (axum-login 0.18) and 0.15:
/// what one version's trait writes, the other reads, and a delete through either ends the
/// session in the manager.
#[cfg(feature = "tower-sessions-014")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_tower_014_and_015_traits_serve_the_same_sessions() {
    use tower_sessions::SessionStore as Store015;
    use tower_sessions_014::SessionStore as Store014;

    let ch = channel("solo", &[]).await;
    let m = manager(ch.clone()).await;
    let store = TowerSessionStore::new(m.clone());
    let expiry = time::OffsetDateTime::now_utc() + time::Duration::minutes(10);

    let mut old = tower_sessions_014::session::Record {
        id: tower_sessions_014::session::Id::default(),
        data: [("user".to_string(), serde_json::json!("ferris"))].into(),
        expiry_date: expiry,
    };
    Store014::create(&store, &mut old).await.unwrap();
    let sid = SessionId::from_bytes(old.id.0.to_le_bytes());
    assert_eq!(
        m.get(&sid)
            .await
            .expect("created in the manager")
            .get::<String>("user")
            .unwrap()
            .as_deref(),
        Some("ferris")
    );
    let id = tower_sessions::session::Id(old.id.0);
    let read = Store015::load(&store, &id)
        .await
        .unwrap()
        .expect("0.15 reads what 0.14 wrote");
    assert_eq!(read.data["user"], "ferris");

    let mut changed = read.clone();
    changed.data.insert("visits".into(), serde_json::json!(2));
    Store015::save(&store, &changed).await.unwrap();
    let back = Store014::load(&store, &old.id)
        .await
        .unwrap()
        .expect("0.14 reads what 0.15 saved");
    assert_eq!(back.data["visits"], 2);
    assert_eq!(back.data.len(), 2);

    Store014::delete(&store, &old.id).await.unwrap();
    assert!(
        Store015::load(&store, &id).await.unwrap().is_none(),
        "deleted through 0.14"
    );
    assert!(m.get(&sid).await.is_none_or(|s| s.is_invalidated()));
    m.shutdown().await;
    ch.shutdown().await;
}

/// `with_principal`: the store gives each session the principal its record names, so the
/// manager knows who is logged in (sessions_of, invalidate_principal); the principal
/// attribute itself never shows in a record, so a record loaded and created again (what
/// tower-sessions does when it cycles the id at login) saves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_tower_principal_from_the_record() {
    use tower_sessions::SessionStore;
    use tower_sessions::session::{Id, Record};
    let ch = channel("solo", &[]).await;
    let m = manager(ch.clone()).await;
    let store = TowerSessionStore::new(m.clone()).with_principal(|data| Some(data.get("user")?.as_str()?.to_owned()));
    let expiry = time::OffsetDateTime::now_utc() + time::Duration::minutes(30);
    let mut record = Record {
        id: Id::default(),
        data: [("user".to_owned(), serde_json::json!("alice"))].into_iter().collect(),
        expiry_date: expiry,
    };
    store.create(&mut record).await.unwrap();
    let listed = m.sessions_of("alice").await.unwrap();
    assert_eq!(listed.len(), 1, "the record's user is the session's principal");

    // Loaded: the data the app wrote, nothing more.
    let loaded = store.load(&record.id).await.unwrap().expect("live");
    assert_eq!(loaded.data.keys().collect::<Vec<_>>(), ["user"], "{:?}", loaded.data);
    // Cycled as tower-sessions does: a new record from the loaded data, the old one deleted.
    let mut cycled = Record {
        id: Id::default(),
        data: loaded.data.clone(),
        expiry_date: expiry,
    };
    store.create(&mut cycled).await.expect("a cycled record saves");
    store.delete(&record.id).await.unwrap();
    let listed = m.sessions_of("alice").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, SessionId::from_bytes(cycled.id.0.to_le_bytes()));

    // Saves that keep the user keep the login (its time too: no new login at each save).
    tokio::time::sleep(Duration::from_millis(5)).await;
    cycled.data.insert("visits".into(), serde_json::json!(2));
    store.save(&cycled).await.unwrap();
    let after = m.sessions_of("alice").await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].since, listed[0].since, "the login time is unchanged");

    // The user gone from the record: the session is anonymous again.
    cycled.data.remove("user");
    cycled.data.insert("cart".into(), serde_json::json!(["apple"]));
    store.save(&cycled).await.unwrap();
    assert!(m.sessions_of("alice").await.unwrap().is_empty());

    // Back, then logged out everywhere: the record is gone.
    cycled.data.insert("user".into(), serde_json::json!("alice"));
    store.save(&cycled).await.unwrap();
    assert_eq!(m.invalidate_principal("alice").await.unwrap().ended_here, 1);
    assert!(store.load(&cycled.id).await.unwrap().is_none());
    m.shutdown().await;
    ch.shutdown().await;
}
