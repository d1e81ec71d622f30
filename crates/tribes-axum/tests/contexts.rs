//! Two applications (contexts) on one channel, one of them missing on one node: the
//! sessions of each replicate only among the nodes that run it, the node without it keeps
//! serving the other and logs nothing alarming, and the status, dashboard and metrics of a
//! node list every one of its contexts.

mod common;

use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use common::{builder, channel, serve, wait_until};
use tribes::Channel;
use tribes_axum::{Contexts, ReplicatedSessions, Session, SessionError, metrics_router, status_router};
use tribes_sessions::{SessionId, SessionManager};
use tribes_testkit::channel::wait_for_members;
use tribes_testkit::logs::capture_logs;
use tribes_testkit::sessions::start_ready;

/// `POST /{app}/set/{key}/{value}` and `GET /{app}/get/{key}` ("-" when absent) behind the
/// layer of one context, with its own cookie.
fn app_routes(prefix: &str, manager: SessionManager) -> Router {
    Router::new()
        .route(
            &format!("{prefix}/set/{{key}}/{{value}}"),
            post(
                |session: Session, Path((key, value)): Path<(String, String)>| async move {
                    session.insert(&key, value).await?;
                    Ok::<_, SessionError>("ok")
                },
            ),
        )
        .route(
            &format!("{prefix}/get/{{key}}"),
            get(|session: Session, Path(key): Path<String>| async move {
                Ok::<_, SessionError>(session.get::<String>(&key).await?.unwrap_or_else(|| "-".into()))
            }),
        )
        .layer(
            ReplicatedSessions::new(manager)
                .with_cookie_name(&format!("{}ID", prefix.trim_start_matches('/').to_uppercase()))
                .with_cookie_path(prefix),
        )
}

struct Node {
    channel: Channel,
    shop: SessionManager,
    cart: Option<SessionManager>,
    addr: std::net::SocketAddr,
}

impl Node {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn start(name: &str, peers: &[&Node], with_cart: bool) -> Node {
    let addrs: Vec<_> = peers.iter().map(|n| n.channel.local().addr()).collect();
    let ch = channel(name, &addrs).await;
    if !addrs.is_empty() {
        wait_for_members(&ch, addrs.len()).await;
    }
    let shop = start_ready(builder("/shop"), &ch).await;
    let mut router = app_routes("/shop", shop.clone());
    let mut contexts = Contexts::new(shop.clone());
    let cart = if with_cart {
        let cart = start_ready(builder("/cart"), &ch).await;
        router = router.merge(app_routes("/cart", cart.clone()));
        contexts = contexts.with(cart.clone());
        Some(cart)
    } else {
        None
    };
    let router = router
        .nest("/cluster/", status_router(contexts.clone()))
        .merge(metrics_router(contexts));
    Node {
        channel: ch,
        shop,
        cart,
        addr: serve(router).await,
    }
}

/// A client without a cookie jar: each request carries the cookie given.
async fn set(node: &Node, app: &str, cookie: Option<&str>, key: &str, value: &str) -> String {
    let mut req = reqwest::Client::new().post(node.url(&format!("/{app}/set/{key}/{value}")));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200, "{app} on {}", node.channel.local().name());
    let set_cookie = r
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
    set_cookie.or(cookie.map(str::to_owned)).expect("a session cookie")
}

async fn get_value(node: &Node, app: &str, cookie: &str, key: &str) -> String {
    let r = reqwest::Client::new()
        .get(node.url(&format!("/{app}/get/{key}")))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

fn session_id(cookie: &str) -> SessionId {
    let value = cookie.split_once('=').unwrap().1;
    value.split('.').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_contexts_one_missing_on_one_node() {
    let logs = capture_logs("tribes=debug,tribes_sessions=debug,tribes_axum=debug,info");
    let a = start("a", &[], true).await;
    let b = start("b", &[&a], true).await;
    let c = start("c", &[&a, &b], false).await;
    let routes = |m: &SessionManager| {
        let mut s = m.stats().servers;
        s.sort();
        s
    };
    wait_until("the contexts meet", Duration::from_secs(10), || {
        a.shop.stats().servers.len() == 2
            && c.shop.stats().servers.len() == 2
            && a.cart.as_ref().unwrap().stats().servers.len() == 1
            && b.cart.as_ref().unwrap().stats().servers.len() == 1
    })
    .await;
    // The cart is served by a and b only: c is no server of it anywhere.
    assert_eq!(routes(a.cart.as_ref().unwrap()), vec!["b".to_owned()]);
    assert_eq!(routes(b.cart.as_ref().unwrap()), vec!["a".to_owned()]);
    assert_eq!(routes(&a.shop), vec!["b".to_owned(), "c".to_owned()]);
    let received_by_c = || c.channel.stats().members.iter().map(|m| m.bytes_in).sum::<u64>();
    let before = received_by_c();

    // Cart sessions: written on a, on b at once (sync-ack), never sent to c. Each carries
    // 20 kB, so that their bytes would show in what c receives.
    let big = "x".repeat(20_000);
    let mut carts = Vec::new();
    for i in 0..10 {
        let cookie = set(&a, "cart", None, "items", &format!("apple{i}{big}")).await;
        assert!(b.cart.as_ref().unwrap().contains(&session_id(&cookie)));
        carts.push(cookie);
    }
    let to_c = received_by_c() - before;
    assert!(
        to_c < 50_000,
        "c received {to_c} bytes while 200 kB of cart sessions were written on a"
    );
    assert_eq!(get_value(&b, "cart", &carts[3], "items").await, format!("apple3{big}"));
    // Shop sessions: written on c (which has no cart), read on a and b; and the reverse.
    let from_c = set(&c, "shop", None, "user", "carol").await;
    assert_eq!(get_value(&a, "shop", &from_c, "user").await, "carol");
    assert_eq!(get_value(&b, "shop", &from_c, "user").await, "carol");
    let from_a = set(&a, "shop", None, "user", "alice").await;
    assert_eq!(get_value(&c, "shop", &from_a, "user").await, "alice");
    // A cart cookie on c finds nothing to serve it: no route, no session made.
    let r = reqwest::Client::new()
        .get(c.url("/cart/get/items"))
        .header("cookie", &carts[0])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Each context's sessions stayed in it.
    let shop_ids = [session_id(&from_c), session_id(&from_a)];
    for n in [&a, &b] {
        let cart = n.cart.as_ref().unwrap();
        assert_eq!(
            cart.stats().sessions,
            carts.len(),
            "cart sessions on {}",
            n.channel.local().name()
        );
        assert!(
            shop_ids.iter().all(|id| !cart.contains(id)),
            "a shop session in the cart context"
        );
    }
    for n in [&a, &b, &c] {
        assert_eq!(
            n.shop.stats().sessions,
            2,
            "shop sessions on {}",
            n.channel.local().name()
        );
    }

    // Status, dashboard and metrics list every context of the node.
    let status: serde_json::Value = reqwest::get(a.url("/cluster/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let contexts = status["contexts"].as_array().expect("contexts listed");
    let names: Vec<&str> = contexts.iter().map(|c| c["context"].as_str().unwrap()).collect();
    assert_eq!(names, ["/shop", "/cart"], "{status}");
    assert_eq!(contexts[1]["sessions"], 10);
    assert_eq!(contexts[1]["servers"], serde_json::json!(["b"]));
    let on_c: serde_json::Value = reqwest::get(c.url("/cluster/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(on_c["contexts"].as_array().unwrap().len(), 1, "{on_c}");
    let html = reqwest::get(a.url("/cluster/status.html"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("<td>/cart</td>") && html.contains("<td>/shop</td>"),
        "{html}"
    );
    let metrics = reqwest::get(a.url("/metrics")).await.unwrap().text().await.unwrap();
    for context in ["/shop", "/cart"] {
        let line = format!("tribes_sessions_active{{node=\"a\",context=\"{context}\"}}");
        assert!(metrics.contains(&line), "{line} missing from:\n{metrics}");
    }
    // The dashboard's view of a (what a reports to the cluster) has both contexts.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v: serde_json::Value = reqwest::get(a.url("/cluster/status"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let local = v["cluster"]
            .as_array()
            .and_then(|m| m.iter().find(|x| x["local"] == true))
            .map(|x| x["sessions"].clone())
            .unwrap_or_default();
        if local.get("/cart").is_some() && local.get("/shop").is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dashboard misses a context: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Nothing alarming in the logs of any node: no warning, no error.
    let text = logs.text();
    let alarming: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(alarming.is_empty(), "alarming log lines:\n{}", alarming.join("\n"));
    assert!(
        text.contains("does not serve context '/cart'"),
        "the reason is logged at info:\n{text}"
    );
}
