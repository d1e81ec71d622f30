//! The sessions benchmark: state transfer to a joining node (next to raw loopback TCP),
//! deltas applied per second, memory per session, bytes on the wire per write, and the
//! BackupManager's O(backups) against the DeltaManager's O(cluster) traffic.
//!
//! Run with `cargo xtask bench sessions` (or
//! `cargo run --release -p tribes-sessions --example bench_sessions`). Every figure comes from
//! one run on this machine, through the public API only (real channels on 127.0.0.1:0 with
//! a cluster key). Prints a markdown table and writes it to `benches/results/sessions.md`
//! (`TRIBES_BENCH_OUT` overrides the path).

use std::time::{Duration, Instant, SystemTime};

use tribes::{Channel, Keyring, SendMode, StaticDiscovery};
use tribes_sessions::{ManagerKind, ReplicationMode, SessionHandle, SessionManager};
use tribes_testkit::bench::raw_throughput;

type BoxError = Box<dyn std::error::Error>;

/// Sessions in the state transfer.
const SESSIONS: usize = 100_000;
/// Characters of the one string attribute of each transferred session (encoded: + 3 bytes).
const PAYLOAD_CHARS: usize = 1000;
/// Name of that attribute.
const PAYLOAD_NAME: &str = "data";
/// Deltas written for the apply rate.
const DELTAS: u64 = 200_000;
/// Sessions the deltas are spread over.
const DELTA_SESSIONS: usize = 1_000;
/// Writes per cluster size in the Delta vs Backup comparison.
const FANOUT_WRITES: u64 = 1_000;

struct Row {
    what: String,
    figure: String,
    goal: String,
    verdict: String,
}

fn row(what: impl Into<String>, figure: impl Into<String>, goal: impl Into<String>, verdict: impl Into<String>) -> Row {
    Row {
        what: what.into(),
        figure: figure.into(),
        goal: goal.into(),
        verdict: verdict.into(),
    }
}

fn verdict(met: bool) -> String {
    if met { "met".into() } else { "**missed**".into() }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let key = Keyring::generate(1, &mut rand::rng());
    let mut rows = Vec::new();

    // 1. The physical limit: raw loopback TCP, 64 KiB writes (as bench_transport).
    let (_, raw_mbs) = raw_throughput(64 * 1024, 8_000).await?;
    eprintln!("raw TCP: {raw_mbs:.1} MB/s");

    // 2. Memory and state transfer: node A holds 100k sessions, node B joins.
    let a = channel("a", &key, &[]).await?;
    let ma = SessionManager::builder("/bench").start(a.clone()).await?;
    ma.wait_ready().await?;
    let payload = "x".repeat(PAYLOAD_CHARS);
    let encoded_payload = PAYLOAD_NAME.len() + PAYLOAD_CHARS + 3; // str8/str16 header: 3 bytes
    let rss_before = rss_bytes();
    for _ in 0..SESSIONS {
        let s = ma.create(SystemTime::now())?;
        s.insert(PAYLOAD_NAME, &payload)?;
        ma.commit(&s).await?;
    }
    let rss_after = rss_bytes();
    let stats_a = ma.stats();
    let accounted = stats_a.overhead_bytes as f64 / SESSIONS as f64;
    let rss_per = (rss_after.saturating_sub(rss_before)) as f64 / SESSIONS as f64;
    let rss_overhead = rss_per - encoded_payload as f64;
    eprintln!(
        "memory: {accounted:.0} B/session accounted, RSS {rss_per:.0} B/session ({} KiB -> {} KiB)",
        rss_before / 1024,
        rss_after / 1024
    );
    rows.push(row(
        "memory overhead per session, manager's own accounting (`ManagerStats::overhead_bytes` / sessions)",
        format!("{accounted:.0} B"),
        "< 200 B",
        verdict(accounted < 200.0),
    ));
    rows.push(row(
        format!(
            "memory overhead per session, RSS (`/proc/self/statm` before/after creating {SESSIONS} sessions, minus the {encoded_payload} B of name + encoded value)"
        ),
        format!("{rss_overhead:.0} B (RSS {rss_per:.0} B/session)"),
        "< 200 B",
        verdict(rss_overhead < 200.0),
    ));

    let b = channel("b", &key, &[a.local().addr()]).await?;
    wait_members(&[&a, &b]).await?;
    let start = Instant::now();
    let mb = SessionManager::builder("/bench").start(b.clone()).await?;
    mb.wait_ready().await?;
    let secs = start.elapsed().as_secs_f64();
    let stats_b = mb.stats();
    if stats_b.sessions != SESSIONS {
        return Err(format!(
            "B holds {} sessions after the transfer, not {SESSIONS}",
            stats_b.sessions
        )
        .into());
    }
    let received_overhead = stats_b.overhead_bytes as f64 / SESSIONS as f64;
    rows.push(row(
        "memory overhead per session, manager's own accounting, on the node that received them by state transfer",
        format!("{received_overhead:.0} B"),
        "< 200 B",
        verdict(received_overhead < 200.0),
    ));
    let transfer_mbs = stats_b.bytes_received as f64 / secs / 1e6;
    eprintln!(
        "state transfer: {SESSIONS} sessions in {secs:.2} s, {} bytes received ({transfer_mbs:.1} MB/s); manager says {:?} ms",
        stats_b.bytes_received, stats_b.state_transfer.duration_ms
    );
    rows.push(row(
        format!("state transfer of {SESSIONS} sessions of ~1 KiB to a joining node (manager start to ready)"),
        format!("{secs:.2} s"),
        "< 1 s",
        verdict(secs < 1.0),
    ));
    rows.push(row(
        "state transfer throughput (session messages received / time)",
        format!(
            "{transfer_mbs:.1} MB/s ({:.1} MB in {} chunks)",
            stats_b.bytes_received as f64 / 1e6,
            stats_b.messages_received
        ),
        "",
        "",
    ));
    rows.push(row(
        "raw loopback TCP, 64 KiB writes, same run",
        format!("{raw_mbs:.1} MB/s (transfer = {:.3}x raw)", transfer_mbs / raw_mbs),
        "",
        "",
    ));
    mb.shutdown().await;
    ma.shutdown().await;
    drop((ma, mb));

    // 3. Deltas applied per second: A writes (async), B applies; counted by B's stats.
    let (rate, writer_rate, lost) = delta_rate(&a, &b).await?;
    rows.push(row(
        format!("deltas applied per second ({DELTAS} one-attribute commits over {DELTA_SESSIONS} sessions, async; A writes, B applies)"),
        format!("{rate:.0} /s (A committed {writer_rate:.0} /s)"),
        "",
        if lost > 0 { format!("{lost} commits not queued") } else { String::new() },
    ));

    // 4. Bytes on the wire: a one-attribute delta vs the whole session.
    let (delta_bytes, key_value, full_bytes, id_len) = wire_bytes(&a, &b).await?;
    let delta_overhead = delta_bytes - key_value;
    rows.push(row(
        "one-attribute delta (`count` = u64), session message bytes (`CommitReport::bytes`)",
        format!(
            "{delta_bytes} B = {key_value} B key + value + {delta_overhead} B overhead (of which {id_len} B session id)"
        ),
        "overhead < 64 B",
        verdict(delta_overhead < 64),
    ));
    rows.push(row(
        "the same write in full-session mode (the ~1 KiB session)",
        format!(
            "{full_bytes} B ({:.1}x the delta)",
            full_bytes as f64 / delta_bytes as f64
        ),
        "",
        "",
    ));
    b.shutdown().await;
    a.shutdown().await;

    // 5. Backup vs Delta: bytes sent per write with 3 and 5 nodes.
    for n in [3usize, 5] {
        let (delta, backup) = fanout(n, &key).await?;
        rows.push(row(
            format!("{n} nodes: bytes sent per one-attribute write, DeltaManager (to every other node)"),
            format!("{delta:.0} B"),
            "",
            "",
        ));
        rows.push(row(
            format!("{n} nodes: bytes sent per one-attribute write, BackupManager (1 backup)"),
            format!("{backup:.0} B ({:.2}x Delta)", backup / delta),
            "",
            "",
        ));
    }

    let mut table = String::from("| measure | figure | goal | |\n|---|---:|---|---|\n");
    for r in &rows {
        table.push_str(&format!("| {} | {} | {} | {} |\n", r.what, r.figure, r.goal, r.verdict));
    }
    let report = format!(
        "# Sessions benchmark\n\nOne run, `cargo xtask bench sessions`, release build, {} cores; every node is a real `tribes` channel on\n127.0.0.1 (sealed with a cluster key) in this one process, so writer, sender, receiver and applier share the cores.\nBytes are session messages as `tribes-sessions` counts them (before tribes framing and sealing).\n\n{table}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!("{report}");
    let path = std::env::var("TRIBES_BENCH_OUT").unwrap_or_else(|_| "benches/results/sessions.md".into());
    std::fs::write(&path, report)?;
    eprintln!("written to {path}");
    Ok(())
}

/// A channel on 127.0.0.1:0, sealed with `key`, that knows `members`.
async fn channel(name: &str, key: &Keyring, members: &[std::net::SocketAddr]) -> Result<Channel, BoxError> {
    Ok(Channel::builder(name)
        .with_bind("127.0.0.1:0".parse()?)
        .with_cluster_key(key.clone())
        .with_discovery(StaticDiscovery::new(members.iter().copied()))
        .start()
        .await?)
}

/// Waits until every channel sees all the others.
async fn wait_members(channels: &[&Channel]) -> Result<(), BoxError> {
    let want = channels.len() - 1;
    for c in channels {
        let mut w = c.watch_members();
        tokio::time::timeout(Duration::from_secs(15), w.wait_for(|m| m.len() >= want))
            .await
            .map_err(|_| format!("{} sees {} members, not {want}", c.local().name(), c.members().len()))??;
    }
    Ok(())
}

/// Waits until every manager has all the other nodes as servers of its context.
async fn wait_servers(managers: &[SessionManager]) -> Result<(), BoxError> {
    let want = managers.len() - 1;
    let deadline = Instant::now() + Duration::from_secs(15);
    for m in managers {
        m.wait_ready().await?;
        while m.stats().servers.len() < want {
            if Instant::now() > deadline {
                return Err(format!("{} serves with {:?}", m.route(), m.stats().servers).into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(())
}

/// Resident set size of this process, from `/proc/self/statm` (pages of 4 KiB).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

/// A writes `DELTAS` one-attribute commits (async) over `DELTA_SESSIONS` sessions; the
/// clock stops when B's `deltas_applied` has counted every queued one. Returns
/// (applied per second, commits per second on A, commits whose delta was not queued).
async fn delta_rate(a: &Channel, b: &Channel) -> Result<(f64, f64, u64), BoxError> {
    let ma = SessionManager::builder("/deltas").start(a.clone()).await?;
    let mb = SessionManager::builder("/deltas").start(b.clone()).await?;
    wait_servers(&[ma.clone(), mb.clone()]).await?;
    let mut sessions: Vec<SessionHandle> = Vec::with_capacity(DELTA_SESSIONS);
    for _ in 0..DELTA_SESSIONS {
        let s = ma.create(SystemTime::now())?;
        s.insert("count", &0u64)?;
        ma.commit(&s).await?;
        sessions.push(s);
    }
    // The creations are deltas too: wait for them, then count from there.
    let wait_applied = |target: u64| {
        let mb = mb.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let applied = mb.stats().deltas_applied;
                if applied >= target || Instant::now() > deadline {
                    return applied;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    let base = wait_applied(DELTA_SESSIONS as u64).await;
    let mut queued = 0u64;
    let mut lost = 0u64;
    let start = Instant::now();
    for i in 0..DELTAS {
        let s = &sessions[(i as usize) % DELTA_SESSIONS];
        s.insert("count", &(i + 1))?;
        let report = ma.commit(s).await?;
        if report.all_ok() {
            queued += 1;
        } else {
            if lost == 0 {
                eprintln!("deltas: first commit not queued: {:?}", report.members);
            }
            lost += 1;
        }
    }
    let writer_secs = start.elapsed().as_secs_f64();
    let applied = wait_applied(base + queued).await - base;
    let secs = start.elapsed().as_secs_f64();
    if applied < queued {
        eprintln!("deltas: only {applied} of {queued} queued deltas were applied within 60 s");
    }
    if lost > 0 {
        eprintln!("deltas: {lost} commits were not queued (queue full?), their changes only exist on A");
    }
    eprintln!(
        "deltas: {applied} applied in {secs:.2} s ({:.0}/s); A committed at {:.0}/s",
        applied as f64 / secs,
        DELTAS as f64 / writer_secs
    );
    mb.shutdown().await;
    ma.shutdown().await;
    Ok((applied as f64 / secs, DELTAS as f64 / writer_secs, lost))
}

/// Bytes of a one-attribute delta, of its key and encoded value, of the same write in
/// full-session mode on a session that also holds the ~1 KiB payload, and of the delta's
/// session id as MessagePack.
async fn wire_bytes(a: &Channel, b: &Channel) -> Result<(usize, usize, usize, usize), BoxError> {
    let mut out = Vec::new();
    let mut id_len = 0;
    for (context, mode) in [
        ("/wire-delta", ReplicationMode::Deltas),
        ("/wire-full", ReplicationMode::FullSession),
    ] {
        let start = |ch: &Channel| {
            SessionManager::builder(context)
                .with_replication(mode)
                .with_send_mode(SendMode::SyncAck)
                .start(ch.clone())
        };
        let (ma, mb) = (start(a).await?, start(b).await?);
        wait_servers(&[ma.clone(), mb.clone()]).await?;
        let s = ma.create(SystemTime::now())?;
        s.insert(PAYLOAD_NAME, &"x".repeat(PAYLOAD_CHARS))?;
        s.insert("count", &1_000u64)?;
        ma.commit(&s).await?;
        s.insert("count", &1_001u64)?;
        let report = ma.commit(&s).await?;
        if !report.all_ok() {
            return Err(format!("{context}: commit not acked: {report:?}").into());
        }
        out.push(report.bytes);
        if id_len == 0 {
            id_len = rmp_serde::to_vec(&s.id())?.len();
        }
        mb.shutdown().await;
        ma.shutdown().await;
    }
    // "count" (5 bytes) and 1001 as MessagePack (uint16: 3 bytes).
    let key_value = "count".len() + rmp_len(1_001);
    Ok((out[0], key_value, out[1], id_len))
}

/// Encoded MessagePack length of an unsigned integer.
fn rmp_len(v: u64) -> usize {
    match v {
        0..=127 => 1,
        128..=255 => 2,
        256..=65_535 => 3,
        65_536..=4_294_967_295 => 5,
        _ => 9,
    }
}

/// `n` nodes, each with a Delta and a Backup manager (sync-ack); node 0 writes
/// `FANOUT_WRITES` one-attribute commits to each. Returns bytes sent per write (Delta, Backup).
async fn fanout(n: usize, key: &Keyring) -> Result<(f64, f64), BoxError> {
    let mut channels: Vec<Channel> = Vec::new();
    for i in 0..n {
        let known: Vec<_> = channels.iter().map(|c| c.local().addr()).collect();
        channels.push(channel(&format!("n{i}"), key, &known).await?);
    }
    wait_members(&channels.iter().collect::<Vec<_>>()).await?;
    let mut result = Vec::new();
    for (context, kind) in [
        ("/fan-delta", ManagerKind::Delta),
        ("/fan-backup", ManagerKind::Backup { backup_count: 1 }),
    ] {
        let mut managers = Vec::new();
        for c in &channels {
            managers.push(
                SessionManager::builder(context)
                    .with_kind(kind)
                    .with_send_mode(SendMode::SyncAck)
                    .start(c.clone())
                    .await?,
            );
        }
        wait_servers(&managers).await?;
        let writer = &managers[0];
        let sessions: Vec<SessionHandle> = (0..100)
            .map(|_| writer.create(SystemTime::now()))
            .collect::<Result<_, _>>()?;
        for s in &sessions {
            s.insert("count", &0u64)?;
            writer.commit(s).await?;
        }
        let before = writer.stats().bytes_sent;
        for i in 0..FANOUT_WRITES {
            let s = &sessions[i as usize % sessions.len()];
            s.insert("count", &(1_000 + i))?;
            let report = writer.commit(s).await?;
            if !report.all_ok() {
                return Err(format!("{context}: commit not acked: {report:?}").into());
            }
        }
        let per_write = (writer.stats().bytes_sent - before) as f64 / FANOUT_WRITES as f64;
        eprintln!("{n} nodes, {context}: {per_write:.0} bytes sent per write");
        result.push(per_write);
        for m in &managers {
            m.shutdown().await;
        }
    }
    for c in &channels {
        c.shutdown().await;
    }
    Ok((result[0], result[1]))
}
