//! `cargo xtask bench http`: the counter endpoint under wrk, side by side in one run.
//!
//! Six servers answer `GET /counter` in turn: a bare Axum handler (the ceiling), the same
//! counter on tower-sessions' `MemoryStore` (the peer), one `tribes-demo` node, and three
//! `tribes-demo` nodes with async replication, with `--sync` and with `--manager backup`
//! (wrk against node a). Each gets a 2 s warm-up, then `wrk -t2 -c32 -d8s --latency`
//! with a Lua script that keeps one session per connection. Requests/s and p99 are
//! reported as ratios to tower-sessions in `benches/results/http.md`.
//!
//! Every process started here is killed when its scenario ends, on error too (the
//! [`Procs`] guard).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const THREADS: &str = "2";
pub(crate) const CONNECTIONS: &str = "32";
const WARMUP: &str = "2s";
const DURATION: &str = "8s";

/// The wrk script. wrk runs one Lua state per thread and does not say which connection
/// a callback is for, so "one session per connection" is kept as a per-thread pool:
/// a request takes a session cookie from the pool (none at first: the server creates
/// a session), its response gives the cookie back (from `Set-Cookie`, or, when none is
/// sent, the cookie first given to the session the counter JSON names). Each session thus has at most one request in
/// flight and there are as many sessions as connections. A response counting 1 is a new
/// session: their number shows the cookies were kept.
pub(crate) const LUA: &str = r#"
pool = {}
cookies = {}
created = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function request()
  local c = table.remove(pool)
  if c then
    return wrk.format("GET", "/counter", { ["Cookie"] = c })
  end
  return wrk.format("GET", "/counter")
end

function response(status, headers, body)
  local sc = headers["set-cookie"] or headers["Set-Cookie"]
  if body:match('"count":1[,}]') then
    created = created + 1
  end
  -- The counter JSON names its session (tower-sessions' peer: by id; tribes-demo: by
  -- its log hash, never the id), so a response without Set-Cookie gives back the
  -- cookie its session was first given under.
  local key = body:match('"session":"([^"]+)"')
  if sc then
    local kv = sc:match("^([^;]+)")
    if key then
      cookies[key] = kv
    end
    table.insert(pool, kv)
  elseif key and cookies[key] then
    table.insert(pool, cookies[key])
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do
    total = total + (t:get("created") or 0)
  end
  io.write(string.format("SESSIONS_CREATED %d\n", total))
end
"#;

/// Child processes killed (and reaped) when dropped.
pub(crate) struct Procs(pub(crate) Vec<(String, Child)>);

impl Drop for Procs {
    fn drop(&mut self) {
        for (name, child) in &mut self.0 {
            if let Err(e) = child.kill() {
                eprintln!("xtask: cannot kill {name} (pid {}): {e}", child.id());
            }
            let _ = child.wait();
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Server {
    Bare,
    TowerSessions,
    Tribes { nodes: usize, sync: bool, backup: bool },
}

struct Scenario {
    label: &'static str,
    server: Server,
    /// `GET /counter/read` (reads the session, writes nothing) once a connection has its
    /// session, instead of `GET /counter`.
    read_only: bool,
}

/// [`LUA`] with a connection's requests after its first going to `GET /counter/read`.
fn read_only_lua() -> String {
    let from = r#"wrk.format("GET", "/counter", { ["Cookie"] = c })"#;
    assert!(LUA.contains(from), "the wrk script changed: update read_only_lua");
    LUA.replace(from, r#"wrk.format("GET", "/counter/read", { ["Cookie"] = c })"#)
}

pub(crate) struct Measured {
    pub(crate) label: &'static str,
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) sessions_created: u64,
    pub(crate) requests: u64,
    /// CPU seconds of every server process during the measured run.
    pub(crate) server_cpu: f64,
    /// Context switches and system calls of every server process during the measured run.
    pub(crate) kernel: crate::perf::Kernel,
    pub(crate) non_2xx: u64,
    pub(crate) socket_errors: String,
    pub(crate) note: String,
}

/// The benchmark; with `flamegraph`, only the three-node async scenario, with a flame graph
/// of nodes a and b under its load written beside the results (`flame-3n-async-{a,b}.svg`).
pub(crate) fn run(flamegraph: bool) -> Result<(), String> {
    if Command::new("wrk").arg("--version").output().is_err() {
        return Err("wrk is not installed (Debian: apt-get install wrk)".into());
    }
    crate::run(
        "cargo",
        &["build", "--release", "--quiet", "-p", "tribes-demo", "-p", "http-peers"],
    )?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let demo = target.join("release/tribes-demo");
    let peers = target.join("release/http-peers");
    let work = std::env::temp_dir().join(format!("tribes-bench-http-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let script = work.join("session-per-connection.lua");
    std::fs::write(&script, LUA).map_err(|e| format!("cannot write {}: {e}", script.display()))?;
    let read_script = work.join("read-only.lua");
    std::fs::write(&read_script, read_only_lua())
        .map_err(|e| format!("cannot write {}: {e}", read_script.display()))?;
    let key_args = cluster_key_args(&demo, &work)?;

    let tribes = |nodes, sync, backup| Server::Tribes { nodes, sync, backup };
    let scenario_list = [
        ("a) bare Axum, no sessions (ceiling)", Server::Bare, false),
        (
            "b) tower-sessions 0.15 + MemoryStore, 1 node",
            Server::TowerSessions,
            false,
        ),
        ("c) tribes-demo, 1 node", tribes(1, false, false), false),
        ("d) tribes-demo, 3 nodes, Delta, async", tribes(3, false, false), false),
        ("e) tribes-demo, 3 nodes, Delta, --sync", tribes(3, true, false), false),
        (
            "f) tribes-demo, 3 nodes, --manager backup (async)",
            tribes(3, false, true),
            false,
        ),
        (
            "g) tribes-demo, 1 node, read-only (`GET /counter/read`)",
            tribes(1, false, false),
            true,
        ),
        (
            "h) tribes-demo, 3 nodes, Delta, async, read-only",
            tribes(3, false, false),
            true,
        ),
    ];
    let scenarios: Vec<Scenario> = scenario_list
        .into_iter()
        .filter(|(label, _, _)| !flamegraph || label.starts_with("d)"))
        .map(|(label, server, read_only)| Scenario {
            label,
            server,
            read_only,
        })
        .collect();
    let started = Instant::now();
    let mut results = Vec::new();
    for (i, s) in scenarios.iter().enumerate() {
        eprintln!("xtask: bench http: {}", s.label);
        let logs = work.join(format!("scenario-{i}"));
        std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
        let script = if s.read_only { &read_script } else { &script };
        results.push(scenario(s, &demo, &peers, script, &key_args, &logs, flamegraph)?);
    }
    if flamegraph {
        return Ok(());
    }
    let report = render(&results, started.elapsed());
    println!("{report}");
    let path = std::env::var("TRIBES_BENCH_OUT").unwrap_or_else(|_| "benches/results/http.md".into());
    std::fs::write(&path, report).map_err(|e| format!("cannot write {path}: {e}"))?;
    eprintln!("written to {path} (server logs in {})", work.display());
    Ok(())
}

/// The flags giving `tribes-demo` a cluster key, if this build takes them.
pub(crate) fn cluster_key_args(demo: &Path, work: &Path) -> Result<Vec<String>, String> {
    let help = Command::new(demo)
        .arg("--help")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", demo.display()))?;
    let help = String::from_utf8_lossy(&help.stdout);
    if !help.contains("--cluster-key-file") {
        return Ok(Vec::new());
    }
    let path = work.join("cluster.key");
    let _ = std::fs::remove_file(&path);
    if help.contains("keygen") {
        let status = Command::new(demo)
            .arg("keygen")
            .arg(&path)
            .stdout(Stdio::null())
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("tribes-demo keygen failed with {status}"));
        }
    } else {
        // The key file format of crates/tribes/src/seal.rs: `<id> <base64 of 32 bytes>`.
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
        std::fs::write(&path, format!("1 {}\n", base64(&key))).map_err(|e| e.to_string())?;
    }
    Ok(vec!["--cluster-key-file".into(), path.display().to_string()])
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A free port on 127.0.0.1 (bound, read and released).
pub(crate) fn free_addr() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))
}

pub(crate) fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> Result<Child, String> {
    let out = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    Command::new(program)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {name} ({}): {e}", program.display()))
}

fn scenario(
    s: &Scenario,
    demo: &Path,
    peers: &Path,
    script: &Path,
    key_args: &[String],
    logs: &Path,
    flamegraph: bool,
) -> Result<Measured, String> {
    let mut procs = Procs(Vec::new());
    let mut status_addrs = Vec::new();
    let target = match s.server {
        Server::Bare | Server::TowerSessions => {
            let http = free_addr()?;
            let app = if s.server == Server::Bare {
                "bare"
            } else {
                "tower-sessions"
            };
            let args = vec!["--app".into(), app.into(), "--http".into(), http.to_string()];
            procs
                .0
                .push((app.into(), spawn(app, peers, &args, &logs.join(format!("{app}.log")))?));
            wait_until(Duration::from_secs(10), || {
                http_get(http, "/counter").is_ok_and(|r| r.starts_with("HTTP/1.1 200"))
            })
            .map_err(|_| format!("{app} did not answer on {http}"))?;
            http
        }
        Server::Tribes { nodes, sync, backup } => {
            let routes = ["a", "b", "c"];
            let https: Vec<SocketAddr> = (0..nodes).map(|_| free_addr()).collect::<Result<_, _>>()?;
            let clusters: Vec<SocketAddr> = (0..nodes).map(|_| free_addr()).collect::<Result<_, _>>()?;
            for i in 0..nodes {
                let mut args: Vec<String> = vec![
                    "--route".into(),
                    routes[i].into(),
                    "--http".into(),
                    https[i].to_string(),
                    "--cluster".into(),
                    clusters[i].to_string(),
                ];
                for (j, c) in clusters.iter().enumerate() {
                    if j != i {
                        args.extend(["--member".into(), c.to_string()]);
                    }
                }
                if sync {
                    args.push("--sync".into());
                }
                if backup {
                    args.extend(["--manager".into(), "backup".into()]);
                }
                args.extend(key_args.iter().cloned());
                let name = format!("tribes-demo {}", routes[i]);
                let child = spawn(&name, demo, &args, &logs.join(format!("node-{}.log", routes[i])))?;
                procs.0.push((name, child));
            }
            for (i, http) in https.iter().enumerate() {
                wait_until(Duration::from_secs(30), || {
                    http_get(*http, "/cluster/status")
                        .is_ok_and(|r| r.contains("\"ready\":true") && members(&r) == nodes - 1)
                })
                .map_err(|_| {
                    format!(
                        "tribes-demo {} not ready with {} members (log: {})",
                        routes[i],
                        nodes - 1,
                        logs.display()
                    )
                })?;
            }
            status_addrs = https.clone();
            https[0]
        }
    };
    let pids: Vec<u32> = procs.0.iter().map(|(_, c)| c.id()).collect();
    if flamegraph {
        crate::perf::flame_run(target, script, &pids, &["a", "b"], Path::new("benches/results"))?;
        return parse_wrk(
            s.label,
            "Requests/sec: 0\n0 requests in 0s\n50% 0us\n99% 0us\n",
            String::new(),
        );
    }
    let usage = measure(target, script, &pids, WARMUP, DURATION)?;
    let mut note = String::new();
    for (i, http) in status_addrs.iter().enumerate() {
        if let Ok(r) = http_get(*http, "/cluster/status") {
            let _ = write!(
                note,
                "{}{}: {} sessions",
                if i == 0 { "" } else { ", " },
                ["a", "b", "c"][i],
                field(&r, "\"sessions\":").unwrap_or_default()
            );
        }
    }
    let mut measured = parse_wrk(s.label, &usage.out, note)?;
    measured.server_cpu = usage.cpu;
    measured.kernel = usage.kernel;
    drop(procs);
    Ok(measured)
}

/// What [`measure`] saw: wrk's output and what the server processes spent meanwhile.
pub(crate) struct Usage {
    pub(crate) out: String,
    /// CPU seconds of the processes during the measured run.
    pub(crate) cpu: f64,
    pub(crate) kernel: crate::perf::Kernel,
}

/// wrk on `GET http://{target}/counter` with the session-keeping `script`: a `warmup` run, then
/// a measured `duration` run with `--latency`, the server `pids` counted meanwhile.
pub(crate) fn measure(
    target: SocketAddr,
    script: &Path,
    pids: &[u32],
    warmup: &str,
    duration: &str,
) -> Result<Usage, String> {
    let url = format!("http://{target}/counter");
    let script = script.display().to_string();
    wrk(&["-t", THREADS, "-c", CONNECTIONS, "-d", warmup, "-s", &script, &url])?;
    let window = crate::perf::start(pids)?;
    let cpu_before: u64 = pids.iter().map(|p| crate::perf::cpu_ticks(*p)).sum();
    let out = wrk(&[
        "-t",
        THREADS,
        "-c",
        CONNECTIONS,
        "-d",
        duration,
        "--latency",
        "-s",
        &script,
        &url,
    ])?;
    let cpu_after: u64 = pids.iter().map(|p| crate::perf::cpu_ticks(*p)).sum();
    let kernel = window.finish()?;
    Ok(Usage {
        out,
        cpu: cpu_after.saturating_sub(cpu_before) as f64 / crate::perf::CLOCK_TICKS,
        kernel,
    })
}

pub(crate) fn wrk(args: &[&str]) -> Result<String, String> {
    let out = Command::new("wrk")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "wrk {} failed: {}\n{text}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(text)
}

pub(crate) fn wait_until(limit: Duration, mut ok: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(())
}

/// A plain HTTP/1.1 GET; the whole response (head and body).
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// How many members the status JSON lists.
pub(crate) fn members(status: &str) -> usize {
    let Some(start) = status.find("\"members\":[") else {
        return usize::MAX;
    };
    let rest = &status[start..];
    let end = rest.find(']').unwrap_or(rest.len());
    rest[..end].matches("\"id\":").count()
}

/// The digits after the first `key` in `text`.
fn field(text: &str, key: &str) -> Option<String> {
    let at = text.find(key)? + key.len();
    Some(text[at..].chars().take_while(char::is_ascii_digit).collect())
}

/// wrk's duration (`812.00us`, `1.25ms`, `2.00s`) in milliseconds.
fn millis(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}

pub(crate) fn parse_wrk(label: &'static str, out: &str, note: String) -> Result<Measured, String> {
    let bad = || format!("cannot read wrk's output for {label}:\n{out}");
    let mut rps = None;
    let (mut p50, mut p99) = (None, None);
    let mut non_2xx = 0;
    let mut sessions_created = 0;
    let mut requests = None;
    let mut socket_errors = String::new();
    for line in out.lines() {
        let t = line.trim();
        let words: Vec<&str> = t.split_whitespace().collect();
        if words.len() > 3 && words[1] == "requests" && words[2] == "in" {
            requests = words[0].parse::<u64>().ok();
        } else if let Some(v) = t.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if words.len() == 2 && words[0] == "50%" {
            p50 = millis(words[1]);
        } else if words.len() == 2 && words[0] == "99%" {
            p99 = millis(words[1]);
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            socket_errors = v.trim().to_string();
        } else if let Some(v) = t.strip_prefix("SESSIONS_CREATED") {
            sessions_created = v.trim().parse().unwrap_or(0);
        }
    }
    Ok(Measured {
        label,
        rps: rps.ok_or_else(bad)?,
        p50_ms: p50.ok_or_else(bad)?,
        p99_ms: p99.ok_or_else(bad)?,
        sessions_created,
        requests: requests.ok_or_else(bad)?,
        server_cpu: 0.0,
        kernel: crate::perf::Kernel::default(),
        non_2xx,
        socket_errors,
        note,
    })
}

/// "read-only request, 3 nodes / one node" (rows h over g), when both ran.
fn read_only_ratio(results: &[Measured]) -> String {
    let rps = |p: &str| results.iter().find(|r| r.label.starts_with(p)).map(|r| r.rps);
    match (rps("g)"), rps("h)")) {
        (Some(one), Some(three)) => format!(
            "\nRead-only request, 3 nodes / one node (h / g): **{:.2}x** (goal >= 0.95x).\n",
            three / one
        ),
        _ => String::new(),
    }
}

fn render(results: &[Measured], took: Duration) -> String {
    let peer = results
        .iter()
        .find(|r| r.label.starts_with("b)"))
        .map_or((f64::NAN, f64::NAN), |r| (r.rps, r.p99_ms));
    let mut t = String::from(
        "| server | requests/s | vs tower-sessions | p50 | p99 | p99 vs tower-sessions | server CPU per request | context switches per request | syscalls per request | sessions created by wrk | non-2xx | notes |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in results {
        let mut notes = r.note.clone();
        if !r.socket_errors.is_empty() {
            let _ = write!(
                notes,
                "{}socket errors: {}",
                if notes.is_empty() { "" } else { "; " },
                r.socket_errors
            );
        }
        let _ = writeln!(
            t,
            "| {} | {:.0} | {:.2}x | {:.2} ms | {:.2} ms | {:.2}x | {:.1} µs | {:.2} | {:.2} | {} | {} | {} |",
            r.label,
            r.rps,
            r.rps / peer.0,
            r.p50_ms,
            r.p99_ms,
            r.p99_ms / peer.1,
            r.server_cpu * 1e6 / r.requests.max(1) as f64,
            r.kernel.switches as f64 / r.requests.max(1) as f64,
            r.kernel.syscalls as f64 / r.requests.max(1) as f64,
            if r.label.starts_with("a)") {
                "n/a".to_string()
            } else {
                r.sessions_created.to_string()
            },
            r.non_2xx,
            notes
        );
    }
    format!(
        "# HTTP benchmark\n\n`cargo xtask bench http`, one run, release builds, {cores} cores shared by wrk and every server process\n(the three-node scenarios run three `tribes-demo` processes plus wrk on those cores). Each server: 2 s warm-up, then\n`wrk -t{THREADS} -c{CONNECTIONS} -d{DURATION} --latency` on `GET /counter` (read a u64 in the session, add one, write it back,\nreturn JSON), the Lua script keeping one session per connection; three-node runs hit node a only. Server CPU per request:
user + system time of every server process of the scenario (all three nodes) during the measured run (`/proc/PID/stat`),
divided by the requests wrk completed. Context switches (voluntary and involuntary, every thread,
`/proc/PID/task/*/status`) and system calls (`perf stat -e raw_syscalls:sys_enter -p PIDS`) are summed the same way.
Rows g and h: once a connection has its session, `GET /counter/read` (reads the session, writes nothing). Whole run: {:.0} s.
Goals: three-node async >= 0.8x of tower-sessions' requests/s, three-node sync >= 0.6x, read-only three nodes / one node >= 0.95x.\n\n{t}{read}",
        took.as_secs_f64(),
        read = read_only_ratio(results),
        cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    )
}
