//! `cargo xtask bench stores`: the session counter on real Redis and PostgreSQL servers,
//! side by side in one run.
//!
//! For each backend: tower-sessions 0.14 with the store a Rust user picks today
//! (`tower-sessions-redis-store`, `tower-sessions-sqlx-store`'s `PostgresStore`; the peer,
//! `benches/store-peers`), then one `tribes-demo` node with `--store-mode shared` (the store is
//! the truth, a versioned save per write), with `--store-mode persist --sync` (write-through
//! behind replication) and `--store-mode persist` (write-behind). wrk and its session-keeping
//! Lua script are those of `cargo xtask bench http`; short runs (1 s warm-up, 5 s measured).
//! Requests/s and p99 are reported as ratios to the peer on the same backend in
//! `benches/results/stores.md`. The servers come from `TRIBES_TEST_REDIS_URL` and
//! `TRIBES_TEST_POSTGRES_URL`, else from `scripts/test-services.sh`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::bench_http::{
    CONNECTIONS, LUA, Measured, Procs, THREADS, cluster_key_args, free_addr, http_get, measure, parse_wrk, spawn,
    wait_until,
};

const WARMUP: &str = "1s";
const DURATION: &str = "5s";

#[derive(Clone, Copy, PartialEq)]
enum Server {
    /// tower-sessions with the backend's own store crate.
    Peer,
    /// `tribes-demo --store-mode shared`.
    Shared,
    /// `tribes-demo --store-mode persist`, with `--sync` (write-through) or without (write-behind).
    Persist { sync: bool },
}

struct Row {
    backend: &'static str,
    server: Server,
    measured: Measured,
}

pub(crate) fn run() -> Result<(), String> {
    if Command::new("wrk").arg("--version").output().is_err() {
        return Err("wrk is not installed (Debian: apt-get install wrk)".into());
    }
    let mut urls: Vec<(String, String)> = ["TRIBES_TEST_REDIS_URL", "TRIBES_TEST_POSTGRES_URL"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    if urls.len() < 2 {
        urls = crate::test_services()?;
    }
    let url = |k: &str| {
        urls.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("{k} is not set and scripts/test-services.sh did not provide it"))
    };
    let backends = [
        ("Redis", url("TRIBES_TEST_REDIS_URL")?),
        ("PostgreSQL", url("TRIBES_TEST_POSTGRES_URL")?),
    ];
    crate::run(
        "cargo",
        &[
            "build",
            "--release",
            "--quiet",
            "-p",
            "tribes-demo",
            "-p",
            "store-peers",
        ],
    )?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let demo = target.join("release/tribes-demo");
    let peers = target.join("release/store-peers");
    let work = std::env::temp_dir().join(format!("tribes-bench-stores-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let script = work.join("session-per-connection.lua");
    std::fs::write(&script, LUA).map_err(|e| format!("cannot write {}: {e}", script.display()))?;
    let key_args = cluster_key_args(&demo, &work)?;

    let started = Instant::now();
    let mut rows = Vec::new();
    for (backend, store) in &backends {
        for server in [
            Server::Peer,
            Server::Shared,
            Server::Persist { sync: true },
            Server::Persist { sync: false },
        ] {
            let label = label(backend, server);
            eprintln!("xtask: bench stores: {label}");
            let logs = work.join(format!("scenario-{}", rows.len()));
            std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
            let measured = scenario(label, server, store, &demo, &peers, &script, &key_args, &logs)?;
            rows.push(Row {
                backend,
                server,
                measured,
            });
        }
    }
    let report = render(&rows, started.elapsed());
    println!("{report}");
    let path = std::env::var("TRIBES_BENCH_OUT").unwrap_or_else(|_| "benches/results/stores.md".into());
    std::fs::write(&path, report).map_err(|e| format!("cannot write {path}: {e}"))?;
    eprintln!("written to {path} (server logs in {})", work.display());
    Ok(())
}

fn label(backend: &str, server: Server) -> &'static str {
    match (backend, server) {
        ("Redis", Server::Peer) => "tower-sessions 0.14 + tower-sessions-redis-store 0.16",
        ("Redis", Server::Shared) => "tribes-demo, --store-mode shared (RedisStore)",
        ("Redis", Server::Persist { sync: true }) => "tribes-demo, 1 node, persist --sync: write-through (RedisStore)",
        ("Redis", Server::Persist { sync: false }) => "tribes-demo, 1 node, persist: write-behind (RedisStore)",
        (_, Server::Peer) => "tower-sessions 0.14 + tower-sessions-sqlx-store 0.15 (PostgresStore)",
        (_, Server::Shared) => "tribes-demo, --store-mode shared (PostgresStore)",
        (_, Server::Persist { sync: true }) => "tribes-demo, 1 node, persist --sync: write-through (PostgresStore)",
        (_, Server::Persist { sync: false }) => "tribes-demo, 1 node, persist: write-behind (PostgresStore)",
    }
}

#[allow(clippy::too_many_arguments)]
fn scenario(
    label: &'static str,
    server: Server,
    store: &str,
    demo: &Path,
    peers: &Path,
    script: &Path,
    key_args: &[String],
    logs: &Path,
) -> Result<Measured, String> {
    let mut procs = Procs(Vec::new());
    let http = free_addr()?;
    let ready: Box<dyn Fn() -> bool> = match server {
        Server::Peer => {
            let args = vec!["--store".into(), store.into(), "--http".into(), http.to_string()];
            procs.0.push((
                "store-peers".into(),
                spawn("store-peers", peers, &args, &logs.join("peer.log"))?,
            ));
            Box::new(move || http_get(http, "/counter").is_ok_and(|r| r.starts_with("HTTP/1.1 200")))
        }
        Server::Shared | Server::Persist { .. } => {
            let mut args: Vec<String> = vec![
                "--route".into(),
                "a".into(),
                "--http".into(),
                http.to_string(),
                "--cluster".into(),
                free_addr()?.to_string(),
                "--store".into(),
                store.into(),
                "--store-mode".into(),
                if server == Server::Shared { "shared" } else { "persist" }.into(),
            ];
            if server == (Server::Persist { sync: true }) {
                args.push("--sync".into());
            }
            args.extend(key_args.iter().cloned());
            procs.0.push((
                "tribes-demo".into(),
                spawn("tribes-demo", demo, &args, &logs.join("node-a.log"))?,
            ));
            Box::new(move || http_get(http, "/cluster/status").is_ok_and(|r| r.contains("\"ready\":true")))
        }
    };
    wait_until(Duration::from_secs(30), ready)
        .map_err(|_| format!("{label} did not answer on {http} (logs: {})", logs.display()))?;
    let pids: Vec<u32> = procs.0.iter().map(|(_, c)| c.id()).collect();
    let usage = measure(http, script, &pids, WARMUP, DURATION)?;
    let mut measured = parse_wrk(label, &usage.out, String::new())?;
    measured.server_cpu = usage.cpu;
    measured.kernel = usage.kernel;
    drop(procs);
    Ok(measured)
}

fn render(rows: &[Row], took: Duration) -> String {
    let mut t = String::from(
        "| backend | server | requests/s | vs peer | p50 | p99 | p99 vs peer | server CPU per request | sessions created by wrk | non-2xx | socket errors |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        let peer = rows
            .iter()
            .find(|p| p.backend == r.backend && p.server == Server::Peer)
            .map_or((f64::NAN, f64::NAN), |p| (p.measured.rps, p.measured.p99_ms));
        let m = &r.measured;
        let _ = writeln!(
            t,
            "| {} | {} | {:.0} | {:.2}x | {:.2} ms | {:.2} ms | {:.2}x | {:.1} µs | {} | {} | {} |",
            r.backend,
            m.label,
            m.rps,
            m.rps / peer.0,
            m.p50_ms,
            m.p99_ms,
            m.p99_ms / peer.1,
            m.server_cpu * 1e6 / m.requests.max(1) as f64,
            m.sessions_created,
            m.non_2xx,
            if m.socket_errors.is_empty() {
                "-"
            } else {
                &m.socket_errors
            },
        );
    }
    format!(
        "# Store benchmark\n\n`cargo xtask bench stores`, one run, release builds, {cores} cores shared by wrk, the server process and the\nRedis / PostgreSQL servers (local, from `scripts/test-services.sh`). Each server: {WARMUP} warm-up, then\n`wrk -t{THREADS} -c{CONNECTIONS} -d{DURATION} --latency` on `GET /counter` (read a u64 in the session, add one, write it\nback, return JSON), the Lua script of `cargo xtask bench http` keeping one session per connection. Ratios are to\nthe tower-sessions peer on the same backend. Server CPU per request counts the app process only (not Redis or\nPostgreSQL). Whole run: {:.0} s.\n\n{t}",
        took.as_secs_f64(),
        cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    )
}
