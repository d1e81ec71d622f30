//! The replicated directory with real channels on loopback: deletions reach every
//! member, and one member that cannot take a file (its disk refuses, or its channel has
//! no farm listening) neither holds up the others nor is forgotten: it is named in the events and stats, retried alone, and gets the file once
//! it can.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{converge, eventually, free_addrs, init_tracing, node};
use tribes::{Channel, Farm, FarmEvent};

fn base(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tribes-farm-{tag}-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Member {
    /// Kept so that the member stays in the cluster for the whole test.
    _channel: Channel,
    farm: Farm,
    events: Arc<Mutex<Vec<FarmEvent>>>,
}

async fn members(n: usize, base: &Path) -> Vec<Member> {
    let addrs = free_addrs(n);
    let names = ["a", "b", "c", "d"];
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate().take(n) {
        let channel = node(name, i, &addrs)
            .with_drop_time(Duration::from_millis(1500))
            .start()
            .await
            .unwrap();
        out.push(channel);
    }
    converge(&out.iter().collect::<Vec<_>>()).await;
    out.into_iter()
        .enumerate()
        .map(|(i, channel)| {
            let events = Arc::new(Mutex::new(Vec::new()));
            let sink = events.clone();
            let farm = Farm::builder(channel.clone(), base.join(names[i]))
                .with_poll_interval(Duration::from_millis(100))
                .on_change(move |e| sink.lock().unwrap().push(e))
                .start()
                .unwrap();
            Member {
                _channel: channel,
                farm,
                events,
            }
        })
        .collect()
}

fn has(dir: &Path, name: &str, bytes: &[u8]) -> bool {
    std::fs::read(dir.join(name)).is_ok_and(|b| b == bytes)
}

/// Waits `poll` intervals' worth of time in which `cond` must keep holding.
async fn holds_for(what: &str, d: Duration, cond: impl Fn() -> bool) {
    let end = std::time::Instant::now() + d;
    while std::time::Instant::now() < end {
        assert!(cond(), "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_file_is_deleted_on_every_member_and_can_come_back() {
    init_tracing();
    let base = base("delete");
    let m = members(3, &base).await;
    let limit = Duration::from_secs(10);
    std::fs::write(m[0].farm.dir().join("app.war"), b"version one").unwrap();
    eventually("app.war on every member", limit, || {
        m.iter().all(|x| has(x.farm.dir(), "app.war", b"version one"))
    })
    .await;

    // Deleted on b (not the member that published it): gone everywhere.
    std::fs::remove_file(m[1].farm.dir().join("app.war")).unwrap();
    eventually("app.war deleted on every member", limit, || {
        m.iter().all(|x| !x.farm.dir().join("app.war").exists())
    })
    .await;
    // And it stays deleted: nobody sends it back.
    holds_for(
        "app.war came back after its deletion",
        Duration::from_millis(800),
        || m.iter().all(|x| !x.farm.dir().join("app.war").exists()),
    )
    .await;
    assert_eq!(m[1].farm.stats().unpublished, 1);
    assert_eq!((m[0].farm.stats().deleted, m[2].farm.stats().deleted), (1, 1));
    assert!(
        m[2].events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, FarmEvent::Deleted { name, from, .. } if name == "app.war" && from == "b")),
        "c reports the deletion by b"
    );

    // Put back on c: a newer version than the deletion, so it reaches everyone again.
    std::fs::write(m[2].farm.dir().join("app.war"), b"version two").unwrap();
    eventually("app.war back on every member", limit, || {
        m.iter().all(|x| has(x.farm.dir(), "app.war", b"version two"))
    })
    .await;
    drop(m);
    let _ = std::fs::remove_dir_all(&base);
}

/// A member that cannot write (its directory replaced by a file) fails its transfers:
/// the other members get the file at once, the failing one is named in the sender's
/// events and stats and retried alone with backoff, and gets the file once its
/// directory is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_member_is_retried_alone() {
    init_tracing();
    let base = base("failing");
    let m = members(3, &base).await;
    let limit = Duration::from_secs(10);
    let c_dir = m[2].farm.dir().to_path_buf();
    // c's farm directory becomes a regular file: c can write nothing (even as root).
    std::fs::remove_dir_all(&c_dir).unwrap();
    std::fs::write(&c_dir, b"not a directory").unwrap();

    let content: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(m[0].farm.dir().join("big.bin"), &content).unwrap();
    eventually("b has the file although c fails", limit, || {
        has(m[1].farm.dir(), "big.bin", &content)
    })
    .await;
    eventually("a counts c's failures and retries", limit, || {
        m[0].farm
            .stats()
            .members
            .get("c")
            .is_some_and(|s| s.failures >= 2 && s.retrying == 1)
    })
    .await;
    let stats = m[0].farm.stats();
    let c = &stats.members["c"];
    assert!(
        c.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("c: cannot create")),
        "the cause names the member and what failed: {c:?}"
    );
    assert!(!stats.members.contains_key("b"), "b never failed: {stats:?}");
    assert!(m[2].farm.stats().rejected >= 2);
    {
        let events = m[0].events.lock().unwrap();
        let retries: Vec<Option<Duration>> = events
            .iter()
            .filter_map(|e| match e {
                FarmEvent::MemberFailed {
                    member, name, retry_in, ..
                } if member == "c" && name == "big.bin" => Some(*retry_in),
                _ => None,
            })
            .collect();
        assert!(retries.len() >= 2, "{retries:?}");
        assert!(retries.windows(2).all(|w| w[1] > w[0]), "the delay grows: {retries:?}");
    }

    // c's directory is back: the next retry delivers.
    std::fs::remove_file(&c_dir).unwrap();
    std::fs::create_dir_all(&c_dir).unwrap();
    eventually("c gets the file once it can write", Duration::from_secs(20), || {
        has(&c_dir, "big.bin", &content)
    })
    .await;
    eventually("a sees c recovered", limit, || {
        m[0].farm
            .stats()
            .members
            .get("c")
            .is_some_and(|s| s.recovered >= 1 && s.retrying == 0)
    })
    .await;
    drop(m);
    let _ = std::fs::remove_dir_all(&base);
}

/// A member whose channel runs but whose farm does not (stopped, or not deployed there):
/// its channel refuses the chunks at the channel level (no listener for the farm's
/// topic), so no ack comes. The sender names it with the channel's cause, retries it
/// alone, and delivers once a farm listens there again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_channel_refuses_the_chunks_is_retried_alone() {
    init_tracing();
    let base = base("refused");
    let mut m = members(3, &base).await;
    let c = m.pop().unwrap();
    let (c_channel, c_dir) = (c._channel.clone(), c.farm.dir().to_path_buf());
    drop(c);
    // The farm's listener goes with its task: wait until c's channel no longer routes to it.
    tokio::time::sleep(Duration::from_millis(300)).await;

    std::fs::write(m[0].farm.dir().join("news.txt"), b"extra").unwrap();
    let limit = Duration::from_secs(10);
    eventually("b has the file although c refuses it", limit, || {
        has(m[1].farm.dir(), "news.txt", b"extra")
    })
    .await;
    eventually("a counts c's refusals and retries", limit, || {
        m[0].farm
            .stats()
            .members
            .get("c")
            .is_some_and(|s| s.failures >= 2 && s.retrying == 1)
    })
    .await;
    let stats = m[0].farm.stats();
    let cause = stats.members["c"].last_error.clone().unwrap_or_default();
    assert!(
        cause.contains("topic 'tribes.farm' on c") && !cause.contains("Failed("),
        "the cause is the channel's, naming the member: {cause}"
    );
    assert!(!stats.members.contains_key("b"), "b never failed: {stats:?}");

    // A farm listens on c again: a retry delivers.
    let c_farm = Farm::builder(c_channel.clone(), c_dir.clone())
        .with_poll_interval(Duration::from_millis(100))
        .start()
        .unwrap();
    eventually("c gets the file once its farm listens", Duration::from_secs(20), || {
        has(&c_dir, "news.txt", b"extra")
    })
    .await;
    eventually("a sees c recovered", limit, || {
        m[0].farm
            .stats()
            .members
            .get("c")
            .is_some_and(|s| s.recovered >= 1 && s.retrying == 0)
    })
    .await;
    drop((m, c_farm, c_channel));
    let _ = std::fs::remove_dir_all(&base);
}

/// A member that is away (its channel stopped) misses a file and a deletion; back, it
/// exchanges manifests and catches up: it gets the new file and deletes the old one it
/// still held, instead of sending it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_back_after_an_absence_catches_up_on_files_and_deletions() {
    init_tracing();
    let base = base("back");
    let addrs = free_addrs(2);
    let start = |i: usize| {
        let addrs = addrs.clone();
        async move {
            node(["a", "b"][i], i, &addrs)
                .with_drop_time(Duration::from_millis(1500))
                .start()
                .await
                .unwrap()
        }
    };
    let a = start(0).await;
    let b = start(1).await;
    converge(&[&a, &b]).await;
    let farm = |ch: &Channel, n: &str| {
        Farm::builder(ch.clone(), base.join(n))
            .with_poll_interval(Duration::from_millis(100))
            .start()
            .unwrap()
    };
    let fa = farm(&a, "a");
    let fb = farm(&b, "b");
    std::fs::write(fa.dir().join("old.txt"), b"old").unwrap();
    eventually("old.txt on b", Duration::from_secs(10), || {
        has(fb.dir(), "old.txt", b"old")
    })
    .await;

    // b goes away; meanwhile a deletes old.txt and adds new.txt.
    drop(fb);
    b.shutdown().await;
    drop(b);
    eventually("a notices b left", Duration::from_secs(10), || a.members().is_empty()).await;
    std::fs::remove_file(fa.dir().join("old.txt")).unwrap();
    std::fs::write(fa.dir().join("new.txt"), b"new").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let b = start(1).await;
    converge(&[&a, &b]).await;
    let fb = farm(&b, "b");
    eventually("b catches up", Duration::from_secs(10), || {
        has(fb.dir(), "new.txt", b"new") && !fb.dir().join("old.txt").exists()
    })
    .await;
    holds_for("old.txt came back to a", Duration::from_millis(800), || {
        !fa.dir().join("old.txt").exists()
    })
    .await;
    drop((fa, fb));
    let _ = std::fs::remove_dir_all(&base);
}
