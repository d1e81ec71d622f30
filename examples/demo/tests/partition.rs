//! A network partition made and healed for real, inside a network namespace the test
//! creates (nothing leaves it): nftables drops the cluster traffic between node c (run
//! as another uid) and nodes a and b, while clients keep writing on both sides. After
//! the heal every node converges, every acknowledged one-sided write is everywhere, the
//! conflicting writes are counted, and users who logged out on c's side during the
//! partition stay logged out on every node. Part of the fault matrix (`cargo xtask faults`).
//!
//! And the heal rule of log out everywhere, for both managers: a login made on c while it
//! was cut off, before the user logged out everywhere on the majority side, has no
//! session on any node after the heal; a login made after the heal stays.

mod common;

use std::time::Duration;

use common::*;
use tribes_testkit::netns::{Netns, run};

const INNER: &str = "TRIBES_PARTITION_INNER";
const NOBODY: u32 = 65534;

#[test]
fn partition_and_heal() {
    let text = run_in_netns("inner_partition_and_heal");
    // Hand the figures line up to `cargo xtask faults`.
    if let Some(line) = text.lines().find(|l| l.starts_with("FAULT ")) {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../faults");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("partition.md"), format!("{}\n", &line["FAULT ".len()..])).unwrap();
    }
}

#[test]
fn logout_everywhere_during_a_partition_ends_the_minority_side_login_at_the_heal() {
    let text = run_in_netns("inner_logout_everywhere_heal");
    for line in text.lines().filter(|l| l.contains("heal test took")) {
        println!("{line}");
    }
}

/// Runs the ignored test `inner` of this binary inside a new network namespace (its own
/// loopback, its own nftables), fails with its output if it fails, and returns the output.
fn run_in_netns(inner: &str) -> String {
    let name = format!("tribes-part-{}-{}", std::process::id(), &inner[inner.len() - 8..]);
    let ns = Netns::new(name).and_then(|ns| run("nft", &["--version"]).map(|()| ns));
    match ns {
        Ok(ns) => ns.run_test(inner, INNER),
        Err(why) => panic!(
            "partition test could not run: {why}. It needs root, iproute2 and nftables \
             (cargo xtask test installs them as root, or leaves this test out with --skip netns)"
        ),
    }
}

/// Partition: c (run as [`NOBODY`]) cannot reach a or b, and they cannot reach c;
/// clients reach all. Returns once a and c see it.
async fn cut_off_c(nodes: &[DemoNode]) {
    let (pa, pb, pc) = (
        nodes[0].cluster.port(),
        nodes[1].cluster.port(),
        nodes[2].cluster.port(),
    );
    run("nft", &["add", "table", "inet", "partition"]).unwrap();
    run(
        "nft",
        &["add chain inet partition out { type filter hook output priority 0 ; }"],
    )
    .unwrap();
    let nobody = NOBODY.to_string();
    let (to_ab, to_c) = (format!("{{ {pa}, {pb} }}"), pc.to_string());
    let rule = |owner: &[&str], ports: &str| {
        let mut args = vec!["add", "rule", "inet", "partition", "out", "meta", "skuid"];
        args.extend_from_slice(owner);
        args.extend_from_slice(&["tcp", "dport", ports, "drop"]);
        run("nft", &args).unwrap();
    };
    rule(&[&nobody], &to_ab);
    rule(&["!=", &nobody], &to_c);
    wait_status(&nodes[0], "a to drop c", Duration::from_secs(15), |s| members(s) == 1).await;
    wait_status(&nodes[2], "c to drop a and b", Duration::from_secs(15), |s| {
        members(s) == 0
    })
    .await;
}

/// Heal: the rules go; returns once every node sees the two others.
async fn heal(nodes: &[DemoNode]) {
    run("nft", &["delete", "table", "inet", "partition"]).unwrap();
    for n in nodes {
        wait_status(n, "the cluster to heal", Duration::from_secs(20), |s| members(s) == 2).await;
    }
}

/// Runs only inside the namespace made by the test above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by partition_and_heal inside a network namespace"]
async fn inner_partition_and_heal() {
    assert!(std::env::var_os(INNER).is_some(), "run through partition_and_heal");
    let mut nodes = cluster(3, &Options::default());
    nodes[2].run_as = Some(NOBODY);
    start_all(&mut nodes).await;
    let (a, c) = (&nodes[0], &nodes[2]);

    // Users who will log out on c during the partition: their sessions are made on a
    // and replicated everywhere first. Their cookies are kept by hand (a browser would
    // drop them on logout; an attacker who copied one would not).
    let plain = reqwest::Client::new();
    let mut logged_out = Vec::new();
    for i in 0..3 {
        let r = plain
            .put(a.url("/session/v"))
            .body(format!("out{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let cookie = r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        logged_out.push(cookie);
    }
    let value_of = async |node: &DemoNode, cookie: &str| {
        let r = plain
            .get(node.url("/session/v"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => Some(r.text().await.unwrap()),
            _ => None,
        }
    };
    for (i, cookie) in logged_out.iter().enumerate() {
        for n in &nodes {
            let mut got = None;
            for _ in 0..50 {
                got = value_of(n, cookie).await;
                if got.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(
                got,
                Some(format!("out{i}")),
                "session of user out{i} not on {}",
                n.route
            );
        }
    }

    cut_off_c(&nodes).await;

    // Writes on both sides: users of a, users of c, and users writing the same
    // session on both sides (conflicts).
    let on_a: Vec<Browser> = (0..6).map(|_| Browser::new()).collect();
    let on_c: Vec<Browser> = (0..6).map(|_| Browser::new()).collect();
    let both: Vec<Browser> = (0..4).map(|_| Browser::new()).collect();
    let (mut requests, mut ok) = (0u64, 0u64);
    let mut put = async |user: &Browser, node: &DemoNode, value: &str| {
        requests += 1;
        let r = user
            .put(node.url("/session/v"))
            .body(value.to_string())
            .send()
            .await
            .unwrap();
        if r.status() == 204 {
            ok += 1;
        }
    };
    for (i, u) in both.iter().enumerate() {
        put(u, a, &format!("start-{i}")).await;
    }
    // `both` users were created on a before... the partition: their sessions exist only on a's side.
    // Give them sessions on c too by writing there under the same cookie.
    for round in 0..20 {
        for (i, u) in on_a.iter().enumerate() {
            put(u, a, &format!("a{i}-{round}")).await;
        }
        for (i, u) in on_c.iter().enumerate() {
            put(u, c, &format!("c{i}-{round}")).await;
        }
        for (i, u) in both.iter().enumerate() {
            let node = if round % 2 == 0 { a } else { c };
            put(u, node, &format!("both{i}-{round}")).await;
        }
    }

    // The logged-out users log out on c, which a and b cannot hear now.
    for cookie in &logged_out {
        let r = plain
            .post(c.url("/session/invalidate"))
            .header("cookie", cookie.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        assert_eq!(value_of(c, cookie).await, None);
    }
    assert!(
        value_of(a, &logged_out[0]).await.is_some(),
        "a heard of a logout during the partition"
    );

    heal(&nodes).await;
    // Converged: every node shows every one-sided user's last value, and one
    // identical value for every two-sided user.
    let mut last_mismatch = String::new();
    let mut converged = false;
    for _ in 0..100 {
        let mut all = true;
        for (i, u) in on_a.iter().enumerate() {
            for n in &nodes {
                let got = get_key(u, n, "v").await;
                if got.as_deref() != Some(&format!("a{i}-19")) {
                    all = false;
                    last_mismatch = format!("user a{i} on {}: {got:?}", n.route);
                }
            }
        }
        for (i, u) in on_c.iter().enumerate() {
            for n in &nodes {
                let got = get_key(u, n, "v").await;
                if got.as_deref() != Some(&format!("c{i}-19")) {
                    all = false;
                    last_mismatch = format!("user c{i} on {}: {got:?}", n.route);
                }
            }
        }
        for (i, u) in both.iter().enumerate() {
            let mut seen = Vec::new();
            for n in &nodes {
                seen.push(get_key(u, n, "v").await);
            }
            if seen.iter().any(|s| s != &seen[0]) {
                all = false;
                last_mismatch = format!("two-sided user {i}: {seen:?}");
            }
        }
        for (i, cookie) in logged_out.iter().enumerate() {
            for n in &nodes {
                if let Some(v) = value_of(n, cookie).await {
                    all = false;
                    last_mismatch = format!("user out{i} logged out on c, but {} still serves {v:?}", n.route);
                }
            }
        }
        if all {
            converged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (mut conflicts, mut repaired) = (0, 0);
    for n in &nodes {
        let s = status(n).await.unwrap();
        conflicts += s["replication"]["conflicts"].as_u64().unwrap_or(0);
        repaired += s["replication"]["sync_repaired"].as_u64().unwrap_or(0);
    }
    println!(
        "FAULT | partition | nftables partition of 1 of 3 nodes for longer than the drop time, writes on both sides and {} logouts on the minority side, then heal | {ok}/{requests} requests ok | {} sessions, {} acknowledged writes | converged, logouts everywhere: {converged} | {repaired} session repairs by anti-entropy, {conflicts} conflicts counted (all nodes) |",
        logged_out.len(),
        on_a.len() + on_c.len() + both.len() + logged_out.len(),
        ok
    );
    assert!(converged, "not converged after the heal: {last_mismatch}");
    assert!(
        repaired > 0,
        "the heal repaired no session, yet both sides wrote during the partition"
    );
    assert_eq!(ok, requests, "writes failed during the partition");
}

/// `TRIBESSESSIONID={value}` of the session `browser` got from `node`.
fn cookie_of(browser: &Browser, node: &DemoNode) -> String {
    format!(
        "TRIBESSESSIONID={}",
        browser.session_cookie(node).expect("a session cookie")
    )
}

/// `GET /whoami` on `node` with `cookie` sent by hand (a browser drops a cookie the
/// server clears; an attacker who copied it would not): the status and the body.
async fn whoami(node: &DemoNode, cookie: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(node.url("/whoami"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// `None` when every node answers `/whoami` for `cookie` with `expected` (the status,
/// and for a 200 the name), else what one node answered instead.
async fn whoami_mismatch(nodes: &[DemoNode], cookie: &str, expected: (u16, &str)) -> Option<String> {
    for n in nodes {
        let (status, body) = whoami(n, cookie).await;
        if status != expected.0 || (status == 200 && body != expected.1) {
            return Some(format!("{} answered {status} {body:?}", n.route));
        }
    }
    None
}

/// The heal rule of log out everywhere, for both managers: alice logs in on a; c is cut
/// off; she logs in on c too (a session the majority side never hears of), then logs
/// out everywhere from a. After the heal neither cookie has a session on any node (the
/// test fails if c's login survives), and a login made after the heal stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by logout_everywhere_during_a_partition_ends_the_minority_side_login_at_the_heal inside a network namespace"]
async fn inner_logout_everywhere_heal() {
    assert!(std::env::var_os(INNER).is_some(), "run through the outer test");
    for (manager, sync) in [("delta", false), ("backup", true)] {
        let started = std::time::Instant::now();
        let mut nodes = cluster(
            3,
            &Options {
                manager: Some(manager),
                sync,
                ..Options::default()
            },
        );
        nodes[2].run_as = Some(NOBODY);
        start_all(&mut nodes).await;
        let (a, c) = (&nodes[0], &nodes[2]);
        let login = async |node: &DemoNode| {
            let browser = Browser::new();
            let (status, _) = common::login(&browser, node, "alice").await;
            assert_eq!(status, 200, "{manager}: login on {}", node.route);
            cookie_of(&browser, node)
        };
        let eventually = async |on: &[DemoNode], what: &str, cookie: &str, expected: (u16, &str)| {
            let start = std::time::Instant::now();
            while let Some(wrong) = whoami_mismatch(on, cookie, expected).await {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "{manager}: {what}: still, after 30 s, {wrong}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };

        // Before the partition: alice on a, known everywhere.
        let on_a = login(a).await;
        eventually(&nodes, "alice's login on a reaches every node", &on_a, (200, "alice")).await;

        cut_off_c(&nodes).await;
        // During it: alice logs in on c too, then logs out everywhere from a.
        let on_c = login(c).await;
        let r = reqwest::Client::new()
            .post(a.url("/logout-everywhere"))
            .header("cookie", on_a.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{manager}: logout everywhere on a");
        eventually(&nodes[..2], "the logout reaches a and b", &on_a, (401, "")).await;
        assert_eq!(
            whoami(c, &on_c).await,
            (200, "alice".into()),
            "{manager}: c, cut off, has not heard of the logout"
        );

        heal(&nodes).await;
        // A login after the heal, on b: it must stay.
        let after = login(&nodes[1]).await;
        eventually(
            &nodes,
            "c's login made during the partition ends everywhere",
            &on_c,
            (401, ""),
        )
        .await;
        eventually(
            &nodes,
            "the logged-out login on a stays out everywhere",
            &on_a,
            (401, ""),
        )
        .await;
        eventually(
            &nodes,
            "the login after the heal reaches every node",
            &after,
            (200, "alice"),
        )
        .await;
        // And stays so (past an anti-entropy round, which a heal starts at once).
        tokio::time::sleep(Duration::from_secs(5)).await;
        for (what, cookie, expected) in [
            ("c's partition login", &on_c, (401, "")),
            ("a's login", &on_a, (401, "")),
            ("the login after the heal", &after, (200, "alice")),
        ] {
            assert_eq!(
                whoami_mismatch(&nodes, cookie, expected).await,
                None,
                "{manager}: {what}, 5 s after convergence"
            );
        }
        println!("{manager}: logout-everywhere heal test took {:?}", started.elapsed());
    }
}

#[test]
fn expiries_during_a_partition_give_one_event_each_after_the_heal() {
    let text = run_in_netns("inner_expiry_events_heal");
    for line in text.lines().filter(|l| l.contains("expiry test took")) {
        println!("{line}");
    }
}

/// Exactly one `Expired` per session across a partition, for both managers (2 s idle
/// timeout, each node's output kept): carol's session, made on a before c is cut off,
/// expires during the partition on both sides; dave's, made on c while cut off, expires
/// there alone. The majority side delivers carol's during the partition, c (a minority)
/// delivers nothing, and after the heal dave's is delivered once and carol's not again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by expiries_during_a_partition_give_one_event_each_after_the_heal inside a network namespace"]
async fn inner_expiry_events_heal() {
    assert!(std::env::var_os(INNER).is_some(), "run through the outer test");
    for (manager, sync) in [("delta", false), ("backup", true)] {
        let started = std::time::Instant::now();
        let opts = Options {
            manager: Some(manager),
            sync,
            max_inactive_secs: Some(2),
            ..Options::default()
        };
        let mut nodes = cluster(3, &opts);
        nodes[2].run_as = Some(NOBODY);
        for n in nodes.iter_mut() {
            n.capture_logs();
            n.start();
        }
        for n in &nodes {
            wait_ready(n, 2).await;
        }
        let login = async |node: &DemoNode, user: &str| {
            let browser = Browser::new();
            let (status, _) = common::login(&browser, node, user).await;
            assert_eq!(status, 200, "{manager}: login of {user} on {}", node.route);
            tribes_sessions::LogId::of_text(&browser.session_cookie(node).unwrap()).to_string()
        };
        // The expired lines about `session`, as (the node that logged it, the line).
        let expired = |session: &str| -> Vec<(String, String)> {
            let on = |n: &DemoNode| cluster_events(&n.log_lines(), "expired", session);
            nodes
                .iter()
                .flat_map(|n| on(n).into_iter().map(|l| (n.route.clone(), l)))
                .collect()
        };
        let events = || -> String {
            let on = |n: &DemoNode| n.log_lines().into_iter().filter(|l| l.contains("cluster event"));
            let all = nodes.iter().flat_map(|n| on(n).map(|l| format!("[{}] {l}", n.route)));
            all.collect::<Vec<_>>().join("\n")
        };
        let wait_for = async |what: &str, done: &dyn Fn() -> bool| {
            let start = std::time::Instant::now();
            while !done() {
                assert!(
                    start.elapsed() < Duration::from_secs(40),
                    "{manager}: no {what} after 40 s; cluster events:\n{}",
                    events()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };

        // How many sessions of `user` `node` lists (asked without touching them).
        let listed = async |node: &DemoNode, user: &str| {
            let r = reqwest::get(node.url(&format!("/sessions-of/{user}"))).await.unwrap();
            let v: serde_json::Value = r.json().await.unwrap();
            v["sessions"].as_array().map_or(0, Vec::len)
        };
        let poll = async |what: &str, node: &DemoNode, user: &str, want: usize| {
            let start = std::time::Instant::now();
            while listed(node, user).await != want {
                assert!(start.elapsed() < Duration::from_secs(20), "{manager}: {what}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };

        // carol on a, known to c before the partition.
        let carol = login(&nodes[0], "carol").await;
        poll("c lists carol's session", &nodes[2], "carol", 1).await;
        cut_off_c(&nodes).await;
        let dave = login(&nodes[2], "dave").await;
        wait_for("expired line for carol's session on a or b", &|| {
            !expired(&carol).is_empty()
        })
        .await;
        // dave's session expires on c: idle (not listed) after 2 s, ended by c alone a
        // grace (4 s) later; c, a minority, does not deliver its event.
        poll("dave's session expires on c", &nodes[2], "dave", 0).await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(expired(&dave), Vec::new(), "{manager}: c delivered on a minority side");
        heal(&nodes).await;
        wait_for("expired line for dave's session after the heal", &|| {
            !expired(&dave).is_empty()
        })
        .await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        for (user, session) in [("carol", &carol), ("dave", &dave)] {
            let lines = expired(session);
            assert_eq!(
                lines.len(),
                1,
                "{manager}: one expired event for {user}'s session:\n{}",
                events()
            );
            let (node, line) = &lines[0];
            assert_eq!(log_field(line, "principal").as_deref(), Some(user), "{manager}: {line}");
            assert_eq!(
                log_field(line, "delivered_by").as_ref(),
                Some(node),
                "{manager}: {line}"
            );
        }
        let by = expired(&carol)[0].0.clone();
        assert_ne!(by, "c", "{manager}: carol's event came from the minority side");
        println!("{manager}: expiry test took {:?}", started.elapsed());
    }
}
