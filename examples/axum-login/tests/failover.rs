//! Three real `tribes-axum-login` processes behind nginx with the shipped config
//! (deploy/nginx/tribes-demo.conf, its ports moved to the test's): a user logs in through
//! nginx on some node; that node is SIGKILLed and the user is still logged in on the others;
//! the user logs out on one of them and the session cookie logs in nowhere any more, not
//! even on the killed node once it is back.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use reqwest::header::SET_COOKIE;

struct Nginx(Child, PathBuf);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn nginx_binary() -> Option<&'static str> {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

/// nginx with the shipped config, its listen address and upstreams moved to the test's.
fn start_nginx(nodes: &[Node], lb: SocketAddr, dir: &Path) -> Nginx {
    let binary = nginx_binary().expect("checked at the start of the test");
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/nginx/tribes-demo.conf"
    ))
    .unwrap();
    let mut conf = shipped.replace("127.0.0.1:8080", &lb.to_string());
    for (i, n) in nodes.iter().enumerate() {
        conf = conf.replace(&format!("127.0.0.1:808{}", i + 1), &n.http.to_string());
    }
    assert_ne!(conf, shipped, "the shipped config should name the demo's ports");
    assert!(
        conf.contains(&format!("$cookie_{COOKIE_NAME}")),
        "the config reads the app's cookie"
    );
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("tmp")).unwrap();
    std::fs::write(prefix.join("nginx.conf"), conf).unwrap();
    let child = Command::new(binary)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(lb).is_err() {
        assert!(start.elapsed() < Duration::from_secs(5), "nginx did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Nginx(child, prefix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_in_through_nginx_survives_kill9_and_logout_is_everywhere() {
    assert!(
        nginx_binary().is_some(),
        "nginx is not installed: apt-get install -y nginx-light (cargo xtask test installs it, \
         or leaves this test out with --skip nginx)"
    );
    let dir = std::env::temp_dir().join(format!(
        "tribes-axum-login-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("cluster.key");
    std::fs::write(&key, tribes::Keyring::generate(1, &mut rand::rng()).to_file_text()).unwrap();
    let users = users_file(&dir);

    let addrs = free_addrs(7);
    let mut nodes: Vec<Node> = ["a", "b", "c"]
        .into_iter()
        .enumerate()
        .map(|(i, route)| Node {
            route,
            http: addrs[i],
            cluster: addrs[3 + i],
            child: None,
        })
        .collect();
    let members: Vec<SocketAddr> = nodes.iter().map(|n| n.cluster).collect();
    for n in nodes.iter_mut() {
        n.start(&members, &key, &users);
    }
    for n in &nodes {
        wait_cluster(n, "every node sees the two others", Duration::from_secs(30), |v| {
            v["ready"] == true && v["members"] == 2
        })
        .await;
    }
    let _nginx = start_nginx(&nodes, addrs[6], &dir);
    let lb = format!("http://{}", addrs[6]);
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
    for n in nodes.iter().filter(|n| n.child.is_some()) {
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
