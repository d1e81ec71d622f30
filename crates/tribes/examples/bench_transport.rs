//! The transport benchmark: two channels on loopback next to a raw tokio TCP
//! baseline (length-prefixed frames, the physical limit on this machine).
//!
//! Run with `cargo xtask bench transport` (or `cargo run --release -p tribes --example bench_transport`).
//! Prints a markdown table and writes it to `benches/results/transport.md`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tribes::{Channel, Delivery, Keyring, SendError, SendMode, SendOptions, StaticDiscovery};

const SIZES: [(usize, usize); 3] = [(100, 200_000), (1024, 100_000), (64 * 1024, 8_000)];
const RTT_SAMPLES: usize = 5_000;

/// Context switches of every thread of this process, voluntary and not (from
/// `/proc/self/task/*/status`). Syscalls are counted from outside with `perf stat`
/// on one measure at a time (`TRIBES_BENCH_ONLY`, see below).
fn switches() -> u64 {
    let mut n = 0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            for line in status.lines() {
                if let Some(v) = line
                    .strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
                {
                    n += v.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    n
}

/// Context switches per message of one measure, raw and tribes side by side.
struct Cost {
    what: String,
    raw: f64,
    tribes: f64,
}

/// `TRIBES_BENCH_ONLY=<raw|tribes>:<100|1024|65536|rtt>` runs that one measure and
/// exits, so that `perf stat -e raw_syscalls:sys_enter,context-switches` counts it alone.
async fn only(what: &str) -> Result<(), Box<dyn std::error::Error>> {
    let (side, measure) = what
        .split_once(':')
        .ok_or("TRIBES_BENCH_ONLY=<raw|tribes>:<100|1024|65536|rtt>")?;
    let messages = match measure {
        "rtt" => {
            let (p50, p99) = match side {
                "raw" => raw_rtt().await?,
                _ => tribes_rtt().await?,
            };
            eprintln!("{side} rtt: p50 {p50:.1} µs, p99 {p99:.1} µs");
            RTT_SAMPLES
        }
        size => {
            let size: usize = size.parse()?;
            let count = SIZES.iter().find(|(s, _)| *s == size).ok_or("no such size")?.1;
            let (rate, _) = match side {
                "raw" => raw_throughput(size, count).await?,
                _ => tribes_throughput(size, count).await?,
            };
            eprintln!("{side} async {size} B: {rate:.0} msg/s");
            count
        }
    };
    println!("messages {messages}");
    Ok(())
}

struct Row {
    what: String,
    raw: f64,
    tribes: f64,
    unit: &'static str,
    higher_is_better: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(what) = std::env::var("TRIBES_BENCH_ONLY") {
        return only(&what).await;
    }
    let mut rows = Vec::new();
    let mut costs = Vec::new();
    for (size, count) in SIZES {
        let k0 = switches();
        let raw = raw_throughput(size, count).await?;
        let k1 = switches();
        let tribes = tribes_throughput(size, count).await?;
        let k2 = switches();
        costs.push(Cost {
            what: format!("async {size} B"),
            raw: (k1 - k0) as f64 / count as f64,
            tribes: (k2 - k1) as f64 / count as f64,
        });
        rows.push(Row {
            what: format!("async {size} B: messages/s"),
            raw: raw.0,
            tribes: tribes.0,
            unit: "msg/s",
            higher_is_better: true,
        });
        rows.push(Row {
            what: format!("async {size} B: MB/s"),
            raw: raw.1,
            tribes: tribes.1,
            unit: "MB/s",
            higher_is_better: true,
        });
    }
    let k0 = switches();
    let (raw50, raw99) = raw_rtt().await?;
    let k1 = switches();
    let (t50, t99) = tribes_rtt().await?;
    let k2 = switches();
    costs.push(Cost {
        what: "sync-ack 100 B".into(),
        raw: (k1 - k0) as f64 / RTT_SAMPLES as f64,
        tribes: (k2 - k1) as f64 / RTT_SAMPLES as f64,
    });
    rows.push(Row {
        what: "sync-ack 100 B round trip p50".into(),
        raw: raw50,
        tribes: t50,
        unit: "µs",
        higher_is_better: false,
    });
    rows.push(Row {
        what: "sync-ack 100 B round trip p99".into(),
        raw: raw99,
        tribes: t99,
        unit: "µs",
        higher_is_better: false,
    });

    let mut table = String::from("| measure | raw TCP | tribes | tribes / raw |\n|---|---:|---:|---:|\n");
    for r in &rows {
        let ratio = r.tribes / r.raw;
        let note = if r.higher_is_better { "" } else { " (lower is better)" };
        table.push_str(&format!(
            "| {} | {:.1} {} | {:.1} {} | {:.2}x{} |\n",
            r.what, r.raw, r.unit, r.tribes, r.unit, ratio, note
        ));
    }
    table.push_str(
        "\nContext switches per message, both ends together (every thread of the process; the channels' setup included):\n\n| measure | raw TCP | tribes |\n|---|---:|---:|\n",
    );
    for c in &costs {
        table.push_str(&format!("| {} | {:.3} | {:.3} |\n", c.what, c.raw, c.tribes));
    }
    let report = format!(
        "# Transport benchmark\n\nTwo `tribes` channels on loopback (one connection, default interceptors, every frame sealed with\nChaCha20-Poly1305 as by default) against a raw tokio TCP\nbaseline with the same framing job (u32 length prefix). Same machine, same run: {} cores.\nGoals (as ratios to raw in the same run): async 100 B >= 0.25x, 1 KiB >= 0.5x, 64 KiB >= 0.7x; sync-ack p50 <= 1.5x and p99 <= 2x of the raw round trip.\n\n{table}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!("{report}");
    let path = std::env::var("TRIBES_BENCH_OUT").unwrap_or_else(|_| "benches/results/transport.md".into());
    std::fs::write(&path, report)?;
    eprintln!("written to {path}");
    Ok(())
}

/// Raw: a client writes `count` length-prefixed messages, the server reads them all
/// and answers one byte at the end.
async fn raw_throughput(size: usize, count: usize) -> std::io::Result<(f64, f64)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await?;
        s.set_nodelay(true)?;
        let (r, mut w) = s.into_split();
        let mut r = BufReader::with_capacity(256 * 1024, r);
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..count {
            let len = r.read_u32().await? as usize;
            r.read_exact(&mut buf[..len]).await?;
        }
        w.write_all(&[1]).await?;
        Ok::<_, std::io::Error>(())
    });
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let (mut r, w) = s.into_split();
    let mut w = BufWriter::with_capacity(256 * 1024, w);
    let payload = vec![7u8; size];
    let start = Instant::now();
    for _ in 0..count {
        w.write_u32(size as u32).await?;
        w.write_all(&payload).await?;
    }
    w.flush().await?;
    let mut done = [0u8; 1];
    r.read_exact(&mut done).await?;
    let secs = start.elapsed().as_secs_f64();
    server.await??;
    Ok((count as f64 / secs, (count * size) as f64 / secs / 1e6))
}

async fn pair() -> Result<(Channel, Channel), Box<dyn std::error::Error>> {
    // Sealed, as every channel is by default.
    let key = Keyring::generate(1, &mut rand::rng());
    let a = Channel::builder("a")
        .with_cluster_key(key.clone())
        .with_bind("127.0.0.1:0".parse()?)
        .start()
        .await?;
    let b = Channel::builder("b")
        .with_cluster_key(key)
        .with_bind("127.0.0.1:0".parse()?)
        .with_discovery(StaticDiscovery::new([a.local().addr()]))
        .start()
        .await?;
    let mut wa = a.watch_members();
    let mut wb = b.watch_members();
    wa.wait_for(|m| !m.is_empty()).await?;
    wb.wait_for(|m| !m.is_empty()).await?;
    Ok((a, b))
}

async fn tribes_throughput(size: usize, count: usize) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let (a, b) = pair().await?;
    let mut inbox = a.listen("bench").unwrap();
    let receiver = tokio::spawn(async move {
        for _ in 0..count {
            inbox.recv().await.expect("channel open");
        }
    });
    let to = [a.local().id()];
    let payload = Bytes::from(vec![7u8; size]);
    let start = Instant::now();
    let mut full = 0u64;
    for _ in 0..count {
        loop {
            let r = b
                .send(&to, "bench", payload.clone(), SendOptions::mode(SendMode::Async))
                .await;
            match &r.outcomes[0].1 {
                Delivery::Queued => break,
                Delivery::Failed(SendError::QueueFull { .. }) => {
                    full += 1;
                    tokio::task::yield_now().await;
                }
                other => return Err(format!("send failed: {other:?}").into()),
            }
        }
    }
    receiver.await?;
    let secs = start.elapsed().as_secs_f64();
    if full > 0 {
        eprintln!("async {size} B: the queue was full {full} times (the sender outran the socket; retried)");
    }
    b.shutdown().await;
    a.shutdown().await;
    Ok((count as f64 / secs, (count * size) as f64 / secs / 1e6))
}

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)].as_secs_f64() * 1e6;
    (at(0.50), at(0.99))
}

/// Raw: a 100-byte message, echoed back, one at a time.
async fn raw_rtt() -> std::io::Result<(f64, f64)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        s.set_nodelay(true)?;
        let mut buf = [0u8; 104];
        loop {
            if s.read_exact(&mut buf).await.is_err() {
                return Ok::<_, std::io::Error>(());
            }
            s.write_all(&buf).await?;
        }
    });
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut msg = [7u8; 104];
    msg[..4].copy_from_slice(&100u32.to_be_bytes());
    let mut samples = Vec::with_capacity(RTT_SAMPLES);
    for _ in 0..RTT_SAMPLES {
        let t = Instant::now();
        s.write_all(&msg).await?;
        s.read_exact(&mut msg).await?;
        samples.push(t.elapsed());
    }
    Ok(percentiles(samples))
}

async fn tribes_rtt() -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let (a, b) = pair().await?;
    let mut inbox = a.listen("rtt").unwrap();
    tokio::spawn(async move { while inbox.recv().await.is_some() {} });
    let to = [a.local().id()];
    let payload = Bytes::from(vec![7u8; 100]);
    let mut samples = Vec::with_capacity(RTT_SAMPLES);
    for _ in 0..RTT_SAMPLES {
        let t = Instant::now();
        let r = b
            .send(&to, "rtt", payload.clone(), SendOptions::mode(SendMode::SyncAck))
            .await;
        samples.push(t.elapsed());
        if !r.all_ok() {
            return Err(format!("sync-ack failed: {r:?}").into());
        }
    }
    b.shutdown().await;
    a.shutdown().await;
    Ok(percentiles(samples))
}
