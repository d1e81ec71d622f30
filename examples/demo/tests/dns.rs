//! `tribes-demo --dns NAME --dns-server ADDR` across real processes: three nodes find
//! each other only through SRV records served by an in-process `hickory-server`
//! (the same kind of test server as `crates/tribes/tests/dns.rs`); a node whose
//! record is removed and which stops leaves every membership.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hickory_server::ServerFuture;
use hickory_server::authority::{AuthorityObject, Catalog, ZoneType};
use hickory_server::proto::rr::rdata::{A, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType, RrKey};
use hickory_server::store::in_memory::InMemoryAuthority;

const NAME: &str = "cluster.tribes.test.";

/// Serve `tribes.test.`: `node` is 127.0.0.1, `cluster` has one SRV record per port.
async fn dns_server(ports: &[u16]) -> (SocketAddr, Arc<InMemoryAuthority>, ServerFuture<Catalog>) {
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
    zone.upsert(
        Record::from_rdata(
            Name::from_str("node.tribes.test.").unwrap(),
            0,
            RData::A(A(Ipv4Addr::LOCALHOST)),
        ),
        2,
    )
    .await;
    set_srv(&zone, ports, 3).await;
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::new(&origin), vec![zone.clone() as Arc<dyn AuthorityObject>]);
    let mut server = ServerFuture::new(catalog);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    server.register_socket(socket);
    (addr, zone, server)
}

async fn set_srv(zone: &InMemoryAuthority, ports: &[u16], serial: u32) {
    let name = Name::from_str(NAME).unwrap();
    zone.records_mut()
        .await
        .remove(&RrKey::new(LowerName::new(&name), RecordType::SRV));
    for port in ports {
        let srv = SRV::new(0, 0, *port, Name::from_str("node.tribes.test.").unwrap());
        zone.upsert(Record::from_rdata(name.clone(), 0, RData::SRV(srv)), serial)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_nodes_find_each_other_through_dns() {
    // `cluster` also passes --member flags; --dns replaces them, so DNS is the only way in.
    let mut nodes = cluster(3, &Options::default());
    let ports: Vec<u16> = nodes.iter().map(|n| n.cluster.port()).collect();
    let (server, zone, _server) = dns_server(&ports).await;
    for n in nodes.iter_mut() {
        n.push_args([
            "--dns".to_string(),
            NAME.to_string(),
            "--dns-server".into(),
            server.to_string(),
        ]);
        n.start();
    }
    for n in &nodes {
        let status = wait_ready(n, 2).await;
        assert!(
            status["channel"]["discovery"].to_string().contains("dns"),
            "DNS discovery in /cluster/status: {status}"
        );
    }
    set_srv(&zone, &ports[..2], 4).await;
    nodes[2].terminate();
    for n in &nodes[..2] {
        wait_status(n, "c to be gone", Duration::from_secs(15), |s| members(s) == 1).await;
    }
    for n in nodes.iter_mut().take(2) {
        n.terminate();
    }
}
