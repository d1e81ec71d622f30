//! `tribes-demo --config FILE`: two nodes configured by TOML files (one of them with a
//! `TRIBES_*` variable over its file) form a cluster with the file's manager, send mode
//! and attribute filter; a file with a bad key stops the demo at once, naming the key.

mod common;

use std::time::Duration;

use common::*;

fn write(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_from_config_files_and_the_environment() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = key_file();
    let addrs = free_addrs(4);
    let file = |route: &str, bind: std::net::SocketAddr, member: std::net::SocketAddr| {
        format!(
            "[node]\nroute = \"{route}\"\nbind = \"{bind}\"\nmembers = [\"{member}\"]\ncluster_key_file = \"{}\"\n\n\
             [manager]\ncontext = \"demo\"\nkind = \"backup\"\nsend_mode = \"sync-ack\"\nreplicate_attributes = \"^user$\"\n",
            key.display()
        )
    };
    let (a_file, b_file) = (dir.join("a.toml"), dir.join("b.toml"));
    write(&a_file, &file("a", addrs[1], addrs[3]));
    // b's file says route "wrong": TRIBES_NODE_ROUTE=b overrides it.
    write(&b_file, &file("wrong", addrs[3], addrs[1]));
    let args = |f: &std::path::Path, http: std::net::SocketAddr| {
        vec![
            "--config".to_string(),
            f.display().to_string(),
            "--http".into(),
            http.to_string(),
        ]
    };
    let mut a = DemoNode::with_args("a", addrs[0], addrs[1], args(&a_file, addrs[0]));
    let mut b = DemoNode::with_args("b", addrs[2], addrs[3], args(&b_file, addrs[2]));
    b.envs.push(("TRIBES_NODE_ROUTE".into(), "b".into()));
    a.start();
    b.start();
    let sa = wait_ready(&a, 1).await;
    let sb = wait_ready(&b, 1).await;
    assert_eq!(sa["route"], "a");
    assert_eq!(sb["route"], "b", "the environment overrides the file: {sb}");
    assert_eq!(sa["manager"], "backup (1 backup copies)", "{sa}");

    let user = Browser::new();
    put_key(&user, &a, "user", "alice").await;
    put_key(&user, &a, "token", "stays-on-a").await;
    wait_status(&b, "the session replicated to b", Duration::from_secs(10), |s| {
        sessions(s) == 1
    })
    .await;
    assert_eq!(get_key(&user, &b, "user").await.as_deref(), Some("alice"));
    assert_eq!(
        get_key(&user, &b, "token").await,
        None,
        "the file's attribute filter applies"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_key_stops_the_demo_naming_the_key() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("config-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    write(
        &path,
        "[node]\nroute = \"a\"\nbind = \"127.0.0.1:1\"\ninsecure_plaintext = true\n[manager]\nsend_mod = \"async\"\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tribes-demo"))
        .args(["--config", &path.display().to_string(), "--http", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&path.display().to_string())
            && stderr.contains("unknown field `send_mod`")
            && stderr.contains("send_mode"),
        "{stderr}"
    );
    // A bad value through the environment: named with its variable.
    let good = dir.join("good.toml");
    write(
        &good,
        "[node]\nroute = \"a\"\nbind = \"127.0.0.1:1\"\ninsecure_plaintext = true\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tribes-demo"))
        .args(["--config", &good.display().to_string()])
        .env("TRIBES_NODE_ROUTE", "a.b")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("node.route (or TRIBES_NODE_ROUTE) = \"a.b\""),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
