//! A real DNS server for DNS membership tests: an in-process `hickory-server` on
//! 127.0.0.1:<free port> serving the zone `tribes.test.`, whose records a test changes
//! while the cluster runs.
//!
//! Why hickory-server and not dnsmasq: it needs nothing installed on the machine (CI
//! included), records change synchronously (no SIGHUP and reload race), and the server
//! stops with the test.

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use hickory_server::ServerFuture;
use hickory_server::authority::{AuthorityObject, Catalog, ZoneType};
use hickory_server::proto::rr::rdata::{A, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType, RrKey};
use hickory_server::store::in_memory::InMemoryAuthority;

/// The record types a test builds records with (`rr::RData`, `rr::RecordType`, `rr::rdata::A`, ...).
pub use hickory_server::proto::rr;

/// The name of the A record [`TestDns::with_node`] adds (127.0.0.1), and the target of
/// every [`srv`] record.
pub const NODE: &str = "node.tribes.test.";

/// A DNS server for the zone `tribes.test.` that tests edit; it stops when dropped.
pub struct TestDns {
    addr: SocketAddr,
    zone: Arc<InMemoryAuthority>,
    serial: u32,
    server: ServerFuture<Catalog>,
}

impl std::fmt::Debug for TestDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDns")
            .field("addr", &self.addr)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

impl TestDns {
    /// Serves the zone (only its SOA record) on a free UDP port of 127.0.0.1.
    pub async fn start() -> TestDns {
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
            server,
        }
    }

    /// Adds the A record [`NODE`] -> 127.0.0.1.
    pub async fn with_node(mut self) -> TestDns {
        self.add(Record::from_rdata(
            Name::from_str(NODE).unwrap(),
            0,
            RData::A(A(Ipv4Addr::LOCALHOST)),
        ))
        .await;
        self
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving (queries then time out), as a DNS server that went away.
    ///
    /// # Panics
    ///
    /// When the server's tasks failed.
    pub async fn shutdown(&mut self) {
        self.server.shutdown_gracefully().await.unwrap();
    }

    /// Adds `record` under the next serial.
    ///
    /// # Panics
    ///
    /// When the zone refuses it.
    pub async fn add(&mut self, record: Record) {
        self.serial += 1;
        assert!(self.zone.upsert(record, self.serial).await, "record added");
    }

    /// Replaces every record of `name` and `kind` with `records`.
    pub async fn set(&mut self, name: &str, kind: RecordType, records: Vec<RData>) {
        let name = Name::from_str(name).unwrap();
        self.zone
            .records_mut()
            .await
            .remove(&RrKey::new(LowerName::new(&name), kind));
        for rdata in records {
            self.add(Record::from_rdata(name.clone(), 0, rdata)).await;
        }
    }

    /// Replaces the SRV records of `name` with one per port, each pointing at [`NODE`].
    pub async fn set_srv(&mut self, name: &str, ports: &[u16]) {
        self.set(name, RecordType::SRV, ports.iter().map(|p| srv(*p)).collect())
            .await;
    }
}

/// An SRV record's data: `port` on [`NODE`].
pub fn srv(port: u16) -> RData {
    RData::SRV(SRV::new(0, 0, port, Name::from_str(NODE).unwrap()))
}
