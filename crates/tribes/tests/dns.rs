//! DNS membership against a real DNS server: an in-process `hickory-server` on
//! 127.0.0.1:<free port> whose records each test changes while the cluster runs.
//!
//! Why hickory-server and not dnsmasq: it needs nothing installed on the machine
//! (CI included), records change synchronously (no SIGHUP and reload race), and the
//! server stops with the test.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{eventually, free_addrs, init_tracing, test_key};
use hickory_server::ServerFuture;
use hickory_server::authority::{AuthorityObject, Catalog, ZoneType};
use hickory_server::proto::rr::rdata::{A, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType, RrKey};
use hickory_server::store::in_memory::InMemoryAuthority;
use tribes::{Channel, DnsDiscovery, SendMode, SendOptions};

const REFRESH: Duration = Duration::from_millis(500);

/// A DNS server for the zone `tribes.test.` that tests edit.
struct TestDns {
    addr: SocketAddr,
    zone: Arc<InMemoryAuthority>,
    serial: u32,
    _server: ServerFuture<Catalog>,
}

impl TestDns {
    async fn start() -> TestDns {
        let origin = Name::from_str("tribes.test.").unwrap();
        let zone = Arc::new(InMemoryAuthority::empty(origin.clone(), ZoneType::Primary, false));
        let soa = SOA::new(
            Name::from_str("ns.tribes.test.").unwrap(),
            Name::from_str("admin.tribes.test.").unwrap(),
            1,
            60,
            60,
            60,
            0,
        );
        zone.upsert(Record::from_rdata(origin.clone(), 0, RData::SOA(soa)), 1)
            .await;
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![zone.clone() as Arc<dyn AuthorityObject>]);
        let mut server = ServerFuture::new(catalog);
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        server.register_socket(socket);
        TestDns {
            addr,
            zone,
            serial: 1,
            _server: server,
        }
    }

    async fn add(&mut self, record: Record) {
        self.serial += 1;
        assert!(self.zone.upsert(record, self.serial).await, "record added");
    }

    /// Replace every record of `name` and `kind` with `records`.
    async fn set(&mut self, name: &str, kind: RecordType, records: Vec<RData>) {
        let name = Name::from_str(name).unwrap();
        self.zone
            .records_mut()
            .await
            .remove(&RrKey::new(LowerName::new(&name), kind));
        for rdata in records {
            self.add(Record::from_rdata(name.clone(), 0, rdata)).await;
        }
    }
}

fn srv(port: u16) -> RData {
    RData::SRV(SRV::new(0, 0, port, Name::from_str("node.tribes.test.").unwrap()))
}

fn names(channel: &Channel) -> Vec<String> {
    let mut names: Vec<_> = channel.members().into_iter().map(|m| m.name().to_string()).collect();
    names.sort();
    names
}

fn dns_node(name: &str, addr: SocketAddr, dns: &TestDns, record: &str, port: u16) -> tribes::ChannelBuilder {
    Channel::builder(name)
        .with_cluster_key(test_key())
        .with_bind(addr)
        .with_discovery(
            DnsDiscovery::new(record, port)
                .with_server(dns.addr)
                .with_refresh(REFRESH)
                .with_frequency(Duration::from_millis(200)),
        )
}

/// SRV records give each node its own port on one IP. A node appears within the
/// refresh interval after its record is added, is removed after its record is
/// removed and it stops, and every message sent meanwhile arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn srv_records_add_and_drop_members() {
    init_tracing();
    let mut dns = TestDns::start().await;
    dns.add(Record::from_rdata(
        Name::from_str("node.tribes.test.").unwrap(),
        0,
        RData::A(A(Ipv4Addr::LOCALHOST)),
    ))
    .await;
    let addrs = free_addrs(3);
    let name = "cluster.tribes.test.";
    dns.set(name, RecordType::SRV, vec![srv(addrs[0].port()), srv(addrs[1].port())])
        .await;

    let a = dns_node("a", addrs[0], &dns, name, 0).start().await.unwrap();
    let b = dns_node("b", addrs[1], &dns, name, 0).start().await.unwrap();
    eventually("a and b to find each other through DNS", Duration::from_secs(5), || {
        names(&a) == ["b"] && names(&b) == ["a"]
    })
    .await;
    let stats = a.stats();
    let candidate = stats
        .candidates
        .get(&addrs[1].to_string())
        .expect("b is a candidate of a");
    assert_eq!(candidate.kind, "dns");
    assert!(candidate.up);

    // c runs without discovery of its own: a and b can only find it through DNS.
    let c = Channel::builder("c")
        .with_cluster_key(test_key())
        .with_bind(addrs[2])
        .start()
        .await
        .unwrap();
    let inbox = c.listen("dns-test").unwrap();
    tokio::time::sleep(REFRESH * 2).await;
    assert_eq!(names(&a), ["b"], "c is not in the DNS answer yet");

    dns.set(
        name,
        RecordType::SRV,
        vec![srv(addrs[0].port()), srv(addrs[1].port()), srv(addrs[2].port())],
    )
    .await;
    eventually(
        "c to join within the refresh interval",
        REFRESH + Duration::from_secs(2),
        || names(&a) == ["b", "c"] && names(&b) == ["a", "c"] && names(&c) == ["a", "b"],
    )
    .await;

    // Nothing is lost: every sync-acked message reaches b and c, in order.
    let received = |mut inbox: tribes::Listener| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(message) = inbox.recv().await {
                got.push(message.payload().clone());
                if got.len() == 20 {
                    break;
                }
            }
            got
        })
    };
    let at_b = received(b.listen("dns-test").unwrap());
    let at_c = received(inbox);
    let sent: Vec<Bytes> = (0..20u32).map(|i| Bytes::from(i.to_be_bytes().to_vec())).collect();
    for (i, payload) in sent.iter().enumerate() {
        let report = a
            .broadcast("dns-test", payload.clone(), SendOptions::mode(SendMode::SyncAck))
            .await;
        assert!(report.all_ok(), "message {i}: {report:?}");
    }
    assert_eq!(at_b.await.unwrap(), sent);
    assert_eq!(at_c.await.unwrap(), sent);

    // c's record goes, then c stops: it leaves every membership, and a's candidates.
    dns.set(name, RecordType::SRV, vec![srv(addrs[0].port()), srv(addrs[1].port())])
        .await;
    eventually("a to drop c as a candidate", REFRESH + Duration::from_secs(2), || {
        !a.stats().candidates.contains_key(&addrs[2].to_string())
    })
    .await;
    c.shutdown().await;
    drop(c);
    eventually("c to be removed", Duration::from_secs(5), || {
        names(&a) == ["b"] && names(&b) == ["a"]
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

/// A and AAAA records without SRV: distinct loopback addresses, one configured port
/// (Linux routes all of 127/8 to lo). A node killed without a goodbye whose record is
/// removed is gone within drop_time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_records_with_configured_port() {
    init_tracing();
    let mut dns = TestDns::start().await;
    let port = free_addrs(1)[0].port();
    let ips: Vec<IpAddr> = (1..=3).map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i))).collect();
    let name = "pods.tribes.test.";
    let a_records = |n: usize| {
        ips[..n]
            .iter()
            .map(|ip| match ip {
                IpAddr::V4(v4) => RData::A(A(*v4)),
                IpAddr::V6(_) => unreachable!(),
            })
            .collect::<Vec<_>>()
    };
    dns.set(name, RecordType::A, a_records(3)).await;
    let mut nodes = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        let node = dns_node(&format!("n{i}"), SocketAddr::new(*ip, port), &dns, name, port)
            .with_drop_time(Duration::from_secs(2))
            .start()
            .await
            .unwrap();
        nodes.push(node);
    }
    eventually("three nodes to find each other", Duration::from_secs(5), || {
        nodes.iter().all(|n| n.members().len() == 2)
    })
    .await;

    dns.set(name, RecordType::A, a_records(2)).await;
    // Gone without a goodbye: dropping the last handle stops its tasks.
    let gone = nodes.pop().unwrap();
    drop(gone);
    eventually("n2 to be removed within drop_time", Duration::from_secs(5), || {
        nodes.iter().all(|n| n.members().len() == 1)
    })
    .await;
    for n in &nodes {
        n.shutdown().await;
    }
}

/// When the DNS server stops answering, the candidates found so far are kept (and
/// the failure is logged with the name, the server and the cause).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_dns_server_keeps_the_current_candidates() {
    init_tracing();
    let mut dns = TestDns::start().await;
    dns.add(Record::from_rdata(
        Name::from_str("node.tribes.test.").unwrap(),
        0,
        RData::A(A(Ipv4Addr::LOCALHOST)),
    ))
    .await;
    let addrs = free_addrs(2);
    let name = "cluster.tribes.test.";
    dns.set(name, RecordType::SRV, vec![srv(addrs[0].port()), srv(addrs[1].port())])
        .await;
    let a = dns_node("a", addrs[0], &dns, name, 0).start().await.unwrap();
    let b = dns_node("b", addrs[1], &dns, name, 0).start().await.unwrap();
    eventually("a and b to find each other", Duration::from_secs(5), || {
        names(&a) == ["b"] && names(&b) == ["a"]
    })
    .await;
    dns._server.shutdown_gracefully().await.unwrap();
    drop(dns);
    // Long enough for lookups to time out (1 s per attempt at this refresh) and fail.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(names(&a), ["b"]);
    let stats = a.stats();
    let candidate = stats
        .candidates
        .get(&addrs[1].to_string())
        .expect("b is still a candidate");
    assert!(candidate.up);
    a.shutdown().await;
    b.shutdown().await;
}
