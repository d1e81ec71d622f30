//! Three real `tribes-axum-login` processes behind nginx with the shipped config
//! (deploy/nginx/tribes-demo.conf, its ports moved to the test's): a user logs in through
//! nginx on some node; that node is SIGKILLed and the user is still logged in on the others;
//! the user logs out on one of them and the session cookie logs in nowhere any more, not
//! even on the killed node once it is back.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use reqwest::header::SET_COOKIE;
use tribes_testkit::nginx::{self, Nginx};

/// nginx with the shipped config, its listen address and upstreams moved to the test's.
fn start_nginx(nodes: &[Node], lb: SocketAddr, dir: &Path) -> Nginx {
    let https: Vec<SocketAddr> = nodes.iter().map(|n| n.http).collect();
    let conf = nginx::config(lb, &https);
    assert!(
        conf.contains(&format!("$cookie_{COOKIE_NAME}")),
        "the config reads the app's cookie"
    );
    Nginx::start(&conf, lb, dir.join("nginx"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_in_through_nginx_survives_kill9_and_logout_is_everywhere() {
    assert!(
        nginx::nginx_binary().is_some(),
        "nginx is not installed: apt-get install -y nginx-light (cargo xtask test installs it, \
         or leaves this test out with --skip nginx)"
    );
    let (dir, mut nodes) = three_nodes("failover").await;
    let (key, users) = (dir.join("cluster.key"), dir.join("users.txt"));
    let members: Vec<SocketAddr> = nodes.iter().map(|n| n.cluster).collect();
    let lb_addr = free_addrs(1)[0];
    let _nginx = start_nginx(&nodes, lb_addr, &dir);
    let lb = format!("http://{lb_addr}");
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // Not logged in: the protected page sends to the form, which a wrong password does not pass.
    assert!(
        Page::of(browser.get(format!("{lb}/")).send().await.unwrap())
            .await
            .sent_to_login()
    );
    let form = Page::of(browser.get(format!("{lb}/login?next=/")).send().await.unwrap()).await;
    assert!(
        form.status == StatusCode::OK && form.body.contains(r#"name="password""#),
        "{}",
        form.body
    );
    let wrong = browser
        .post(format!("{lb}/login"))
        .form(&[("username", USER), ("password", "crab rave, once"), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(
        Page::of(browser.get(format!("{lb}/")).send().await.unwrap())
            .await
            .sent_to_login()
    );

    // Log in through nginx: on node `a`, whichever node nginx picked.
    let login = browser
        .post(format!("{lb}/login"))
        .form(&[("username", USER), ("password", PASSWORD), ("next", "/")])
        .send()
        .await
        .unwrap();
    let cookie = login
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok()?.strip_prefix(&format!("{COOKIE_NAME}=")))
        .map(|v| v.split(';').next().unwrap().to_string())
        .next()
        .unwrap_or_else(|| panic!("the login sets {COOKIE_NAME}: {:?}", login.headers()));
    let login = Page::of(login).await;
    assert!(
        login.status == StatusCode::SEE_OTHER && login.location == "/",
        "login: {} {}",
        login.status,
        login.body
    );
    let a = nodes
        .iter()
        .position(|n| n.route == login.node)
        .expect("a node answered the login");
    // Sync-ack: by the time the login answered, every node held the session.
    for n in &nodes {
        assert!(
            home(&n.url(""), Some(&cookie)).await.logged_in(),
            "logged in on {}",
            n.route
        );
    }
    // Another client, without the cookie, is not logged in anywhere.
    let stranger = home(&lb, None).await;
    assert!(
        stranger.sent_to_login(),
        "no cookie, no login: {} {} {}",
        stranger.status,
        stranger.location,
        stranger.body
    );

    // kill -9 of the node that logged the user in: still logged in, on the others.
    nodes[a].kill9();
    let mut served_by = Vec::new();
    for _ in 0..4 {
        let page = Page::of(browser.get(format!("{lb}/")).send().await.unwrap()).await;
        assert!(
            page.logged_in(),
            "still logged in after kill -9 of {}: {} {}",
            login.node,
            page.status,
            page.body
        );
        assert_ne!(page.node, login.node);
        served_by.push(page.node);
    }

    // Log out on one of them (`b`): logged out on every node.
    let logout = Page::of(browser.post(format!("{lb}/logout")).send().await.unwrap()).await;
    assert!(
        logout.status == StatusCode::SEE_OTHER && logout.location == "/login",
        "logout: {} {}",
        logout.status,
        logout.body
    );
    assert_ne!(logout.node, login.node);
    assert!(
        Page::of(browser.get(format!("{lb}/")).send().await.unwrap())
            .await
            .sent_to_login()
    );
    for n in nodes.iter().filter(|n| n.child.is_running()) {
        let page = home(&n.url(""), Some(&cookie)).await;
        assert!(
            page.sent_to_login(),
            "the old cookie on {} after logout on {}: {}",
            n.route,
            logout.node,
            page.status
        );
    }
    // The killed node, back: it learns the cluster's sessions, and this one is not among them.
    nodes[a].start(&members, &key, &users);
    wait_cluster(
        &nodes[a],
        "the killed node is back and ready",
        Duration::from_secs(30),
        |v| v["ready"] == true && v["members"] == 2,
    )
    .await;
    let page = home(&nodes[a].url(""), Some(&cookie)).await;
    assert!(
        page.sent_to_login(),
        "the old cookie on the restarted {}: {}",
        login.node,
        page.status
    );
    eprintln!(
        "logged in on {}, killed it, served by {served_by:?}, logged out on {}",
        login.node, logout.node
    );
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
