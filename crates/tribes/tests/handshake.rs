//! The handshake over real sockets: recorded connections replayed to another member
//! and to a restarted one are refused and counted and deliver nothing; other keys,
//! plain text, revoked identities and other wire versions are refused on both sides,
//! in words.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{eventually, free_addrs, init_tracing, test_key};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tribes::{Channel, ChannelStats, Keyring, NodeIdentity, RefusalReason, SendMode, SendOptions, StaticDiscovery};

/// A TCP proxy in front of `target` that records, per connection, the bytes the
/// dialling side wrote.
async fn recording_proxy(target: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let recorded: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let rec = recorded.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(target).await else {
                continue;
            };
            let index = {
                let mut r = rec.lock().unwrap();
                r.push(Vec::new());
                r.len() - 1
            };
            let rec = rec.clone();
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    rec.lock().unwrap()[index].extend_from_slice(&buf[..n]);
                }
                let _ = sw.shutdown().await;
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            });
        }
    });
    (addr, recorded)
}

/// Write recorded bytes to `addr` and wait until the node closes the connection.
async fn replay(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
    answer
}

fn refused(stats: &ChannelStats, reason: RefusalReason) -> u64 {
    stats.refusals.by_reason.get(&reason).copied().unwrap_or(0)
}

fn total_refused(stats: &ChannelStats) -> u64 {
    stats.refusals.by_reason.values().sum()
}

/// Counts what a listener receives.
fn count_messages(channel: &Channel, topic: &str) -> Arc<Mutex<Vec<Bytes>>> {
    let got: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let mut inbox = channel.listen(topic).unwrap();
    let g = got.clone();
    tokio::spawn(async move {
        while let Some(m) = inbox.recv().await {
            g.lock().unwrap().push(m.payload().clone());
        }
    });
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_connections_are_refused_and_change_no_session() {
    init_tracing();
    let addrs = free_addrs(3);
    let (b_addr, c_addr) = (addrs[1], addrs[2]);
    // b is reached only through the recording proxy: it advertises the proxy's address.
    let (proxy, recorded) = recording_proxy(b_addr).await;
    let start_b = || {
        Channel::builder("b")
            .with_cluster_key(test_key())
            .with_bind(b_addr)
            .with_advertise(proxy)
            .start()
    };
    let b = start_b().await.unwrap();
    let b_got = count_messages(&b, "t");
    let c = Channel::builder("c")
        .with_cluster_key(test_key())
        .with_bind(c_addr)
        .start()
        .await
        .unwrap();
    let c_got = count_messages(&c, "t");
    let a = Channel::builder("a")
        .with_cluster_key(test_key())
        .with_bind(addrs[0])
        .with_discovery(StaticDiscovery::new([proxy]).with_frequency(Duration::from_millis(200)))
        .start()
        .await
        .unwrap();
    eventually("a to list b", Duration::from_secs(10), || a.members().len() == 1).await;
    let report = a
        .send(
            &[b.local().id()],
            "t",
            Bytes::from_static(b"set cart=1"),
            SendOptions::mode(SendMode::SyncAck),
        )
        .await;
    assert!(report.all_ok(), "{report:?}");
    assert_eq!(b_got.lock().unwrap().len(), 1);
    // a stops, so nothing more is recorded; what is recorded: a's pings (no member
    // named) and a's replication connection to b (b named), hello and message.
    a.shutdown().await;
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let recordings: Vec<Vec<u8>> = recorded
        .lock()
        .unwrap()
        .iter()
        .filter(|r| !r.is_empty())
        .cloned()
        .collect();
    assert!(
        recordings.len() >= 2,
        "a probe and a replication connection were recorded"
    );
    let b_before = b.stats();
    let with_message = recordings
        .iter()
        .filter(|r| r.windows(b"set cart=1".len()).all(|w| w != b"set cart=1"))
        .count();
    assert_eq!(
        with_message,
        recordings.len(),
        "the recorded message is not in clear text"
    );

    // 1. To a third member: every recording refused, nothing delivered.
    for r in &recordings {
        let answer = replay(c_addr, r).await;
        assert!(!answer.is_empty(), "c explains its refusal");
    }
    let cs = c.stats();
    assert_eq!(total_refused(&cs), recordings.len() as u64, "{:?}", cs.refusals);
    assert!(refused(&cs, RefusalReason::WrongMember) >= 1, "{:?}", cs.refusals);
    assert!(refused(&cs, RefusalReason::Replay) >= 1, "{:?}", cs.refusals);
    assert!(c.members().is_empty(), "a replay made c list {:?}", c.members());

    // 2. To the same member, same process: refused (its answer used a fresh key).
    for r in &recordings {
        replay(b_addr, r).await;
    }
    let bs = b.stats();
    assert_eq!(
        refused(&bs, RefusalReason::Replay) - refused(&b_before, RefusalReason::Replay),
        recordings.len() as u64,
        "{:?}",
        bs.refusals
    );

    // 3. To the same member after a restart (same address, new member id).
    b.shutdown().await;
    drop(b);
    // The old listener closes once its task has seen the shutdown.
    let mut tries = 0;
    let b2 = loop {
        match start_b().await {
            Ok(b2) => break b2,
            Err(e) if tries < 100 => {
                tries += 1;
                tracing::debug!(error = %e, "b's address is still bound");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("b cannot restart on its address: {e}"),
        }
    };
    let b2_got = count_messages(&b2, "t");
    for r in &recordings {
        replay(b_addr, r).await;
    }
    let b2s = b2.stats();
    assert_eq!(total_refused(&b2s), recordings.len() as u64, "{:?}", b2s.refusals);
    assert!(refused(&b2s, RefusalReason::WrongMember) >= 1, "{:?}", b2s.refusals);
    let last = b2s.refusals.recent.last().unwrap();
    assert!(!last.by_peer && last.key_id == Some(1), "{last:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        b_got.lock().unwrap().len(),
        1,
        "the message was delivered once, never again"
    );
    assert!(c_got.lock().unwrap().is_empty());
    assert!(b2_got.lock().unwrap().is_empty());
    assert!(b2.members().is_empty());
}

/// `node` pings `target` (static discovery) until `cond` holds for both.
async fn until_refused(what: &str, cond: impl FnMut() -> bool) {
    eventually(what, Duration::from_secs(10), cond).await;
}

fn last_by_peer(stats: &ChannelStats, reason: RefusalReason) -> bool {
    stats.refusals.recent.iter().any(|r| r.by_peer && r.reason == reason)
}

fn pinging(name: &str, target: SocketAddr) -> tribes::ChannelBuilder {
    Channel::builder(name)
        .with_bind("127.0.0.1:0".parse().unwrap())
        .with_discovery(StaticDiscovery::new([target]).with_frequency(Duration::from_millis(100)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_keys_plain_text_and_revoked_identities_are_refused_on_both_sides() {
    init_tracing();
    let member = NodeIdentity::generate();
    let a = Channel::builder("a")
        .with_cluster_key(test_key())
        .with_bind("127.0.0.1:0".parse().unwrap())
        .with_identity(NodeIdentity::generate())
        .start()
        .await
        .unwrap();
    let target = a.local().addr();

    // Another cluster: same key id, other key.
    let x = pinging("x", target)
        .with_cluster_key(Keyring::new(1, [7; 32]))
        .start()
        .await
        .unwrap();
    until_refused("a key from another cluster", || {
        refused(&a.stats(), RefusalReason::OtherCluster) > 0 && last_by_peer(&x.stats(), RefusalReason::OtherCluster)
    })
    .await;
    let message = x.stats().refusals.recent.last().unwrap().message.clone();
    assert!(
        message.contains("another cluster") && message.contains("key file"),
        "{message}"
    );
    drop(x);

    // A key id this node does not accept (an old key).
    let old = pinging("old", target)
        .with_cluster_key(Keyring::new(9, [42; 32]))
        .start()
        .await
        .unwrap();
    until_refused("an old key id", || {
        refused(&a.stats(), RefusalReason::UnknownKeyId) > 0 && last_by_peer(&old.stats(), RefusalReason::UnknownKeyId)
    })
    .await;
    let message = old.stats().refusals.recent.last().unwrap().message.clone();
    assert!(
        message.contains("key id 9") && message.contains("rotation"),
        "{message}"
    );
    drop(old);

    // Plain text, both ways: the plain node's pings, and a's probe of the plain node.
    let plain = pinging("p", target).insecure_plaintext().start().await.unwrap();
    until_refused("plain text", || {
        refused(&a.stats(), RefusalReason::PlainText) > 0 && last_by_peer(&plain.stats(), RefusalReason::PlainText)
    })
    .await;
    let message = plain.stats().refusals.recent.last().unwrap().message.clone();
    assert!(
        message.contains("plain text") && message.contains("key file"),
        "{message}"
    );
    assert!(a.members().is_empty() && plain.members().is_empty());
    drop(plain);

    // Revoked: a allows only `member`; an allowed node joins, another is refused.
    assert!(a.set_allowed_peers(Some(vec![member.public_key()])));
    let ok = pinging("ok", target)
        .with_cluster_key(test_key())
        .with_identity(member.clone())
        .start()
        .await
        .unwrap();
    let stolen = pinging("stolen", target)
        .with_cluster_key(test_key())
        .with_identity(NodeIdentity::generate())
        .start()
        .await
        .unwrap();
    until_refused("a revoked identity", || {
        refused(&a.stats(), RefusalReason::Revoked) > 0 && last_by_peer(&stolen.stats(), RefusalReason::Revoked)
    })
    .await;
    eventually("the allowed node to join", Duration::from_secs(10), || {
        a.members().iter().any(|m| m.name() == "ok") && ok.members().len() == 1
    })
    .await;
    assert!(stolen.members().is_empty());
    assert!(!a.members().iter().any(|m| m.name() == "stolen"));
    let message = stolen.stats().refusals.recent.last().unwrap().message.clone();
    assert!(message.contains("allow-list"), "{message}");
    let sec = a.stats().security;
    assert_eq!(sec.allowed_peers, Some(1));
    assert_eq!(sec.protocol, Some("Noise_XXpsk0_25519_ChaChaPoly_BLAKE2s"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_or_newer_wire_version_is_refused_naming_both_versions() {
    init_tracing();
    let a = Channel::builder("a")
        .with_cluster_key(test_key())
        .with_bind("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    // tribes 2 opened a connection with a sealed hello frame: magic, version 2, kind 4.
    let mut v2_hello = b"TRBS\x02\x04\x03\x01".to_vec();
    v2_hello.extend_from_slice(&[0u8; 28]);
    v2_hello.extend_from_slice(&20u32.to_be_bytes());
    v2_hello.extend_from_slice(&0u32.to_be_bytes());
    v2_hello.extend_from_slice(&[0u8; 20]);
    let answer = replay(a.local().addr(), &v2_hello).await;
    // What the old node reads: TRBS and version 3, which it reports as "wire version 3
    // is not supported (this node speaks 2; the peer runs a newer tribes)".
    assert_eq!(&answer[..5], b"TRBS\x03", "{answer:?}");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.contains("2-2") && text.contains("3-3") && text.contains("older tribes"),
        "{text}"
    );
    // A newer tribes that speaks only 4-5.
    let mut v5_offer = b"TRBS\x05\x04\x01\x01".to_vec();
    v5_offer.extend_from_slice(&[0, 0, 0]);
    let answer = replay(a.local().addr(), &v5_offer).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.contains("4-5") && text.contains("3-3") && text.contains("newer tribes"),
        "{text}"
    );
    let stats = a.stats();
    assert_eq!(
        refused(&stats, RefusalReason::VersionMismatch),
        2,
        "{:?}",
        stats.refusals
    );
    assert!(stats.refusals.recent.iter().all(|r| r.message.contains("versions")));
}
