//! Members found by resolving a DNS name (autoscaling groups, Kubernetes headless
//! services): every address in the answer is a candidate, verified and then
//! watched over TCP exactly like a static member.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use tokio_util::sync::CancellationToken;

use super::watcher::watch_address;
use super::{CandidateStatus, Discovery, DiscoveryContext};

const KIND: &str = "dns";

/// Members at the addresses a DNS name resolves to, re-resolved every `refresh`
/// (default 5 s).
///
/// Each refresh asks for the name's SRV records first: each SRV target is resolved
/// (A and AAAA) and paired with the SRV port, so several nodes may share one IP.
/// When the name has no SRV records, its A and AAAA records are used with the port
/// given to [`DnsDiscovery::new`] (a Kubernetes headless service, where every pod
/// listens on the same port).
///
/// Every address is a candidate, pinged over TCP every `frequency` (default 500 ms)
/// like a [`StaticDiscovery`](crate::StaticDiscovery) member: one that answers is a
/// member, one that dies is noticed by its closed ping connection. A candidate that
/// leaves the answer is no longer pinged, so its member is removed within the
/// channel's `drop_time` unless it is heard some other way. When a lookup fails
/// (timeout, server error), the previous candidates are kept and the failure is
/// logged with the name, the server and the cause; an answer with no records at all
/// empties the set.
///
/// ```no_run
/// use tribes::{Channel, DnsDiscovery, Keyring};
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Every pod of the headless service `tribes` listens on 4000.
/// let channel = Channel::builder("pod-1")
///     .with_cluster_key(Keyring::from_file("cluster.key")?)
///     .with_bind("0.0.0.0:4000".parse()?)
///     .with_advertise("10.1.2.3:4000".parse()?)
///     .with_discovery(DnsDiscovery::new("tribes.default.svc.cluster.local", 4000))
///     .start()
///     .await?;
/// # let _ = channel; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DnsDiscovery {
    name: String,
    port: u16,
    refresh: Duration,
    frequency: Duration,
    server: Option<SocketAddr>,
}

impl DnsDiscovery {
    /// Resolve `name` with the system resolver every 5 s; addresses from A/AAAA
    /// records (no SRV record) get `port`.
    pub fn new(name: impl Into<String>, port: u16) -> Self {
        DnsDiscovery {
            name: name.into(),
            port,
            refresh: Duration::from_secs(5),
            frequency: Duration::from_millis(500),
            server: None,
        }
    }

    /// Resolve every `refresh` instead of every 5 s. Each lookup attempt also times
    /// out after `refresh` (at least 1 s, at most 5 s).
    pub fn with_refresh(mut self, refresh: Duration) -> Self {
        self.refresh = refresh;
        self
    }

    /// Ping each candidate every `frequency` instead of every 500 ms.
    pub fn with_frequency(mut self, frequency: Duration) -> Self {
        self.frequency = frequency;
        self
    }

    /// Ask this name server (UDP, then TCP) instead of the system's resolvers.
    pub fn with_server(mut self, server: SocketAddr) -> Self {
        self.server = Some(server);
        self
    }

    /// The resolved name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn server_label(&self) -> String {
        match self.server {
            Some(addr) => addr.to_string(),
            None => "the system resolver".to_string(),
        }
    }

    fn resolver(&self) -> Result<TokioResolver, String> {
        let builder = match self.server {
            Some(addr) => {
                let servers = NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, Vec::new(), servers),
                    TokioConnectionProvider::default(),
                )
            }
            None => {
                TokioResolver::builder_tokio().map_err(|e| format!("cannot read the system DNS configuration: {e}"))?
            }
        };
        let mut builder = builder;
        // A lookup that hangs delays the next refresh: give up sooner than the default 5 s
        // when refreshing often (at least 1 s, at most 5 s per attempt).
        builder.options_mut().timeout = self.refresh.clamp(Duration::from_secs(1), Duration::from_secs(5));
        Ok(builder.build())
    }
}

/// The addresses `name` stands for now: SRV targets with their ports, or else the
/// A/AAAA records with `port`.
///
/// # Errors
/// A description of the failed lookup; "no records" is an empty set, not an error.
async fn resolve(resolver: &TokioResolver, name: &str, port: u16) -> Result<BTreeSet<SocketAddr>, String> {
    // Each refresh must see the server's current answer, not a cached one.
    resolver.clear_cache();
    let mut out = BTreeSet::new();
    match resolver.srv_lookup(name).await {
        Ok(srv) => {
            let mut targets: BTreeMap<String, Vec<u16>> = BTreeMap::new();
            for record in srv.iter() {
                targets
                    .entry(record.target().to_ascii())
                    .or_default()
                    .push(record.port());
            }
            for (target, ports) in targets {
                match resolver.lookup_ip(target.as_str()).await {
                    Ok(ips) => {
                        for ip in ips.iter() {
                            out.extend(ports.iter().map(|p| SocketAddr::new(ip, *p)));
                        }
                    }
                    Err(e) if e.is_no_records_found() => {
                        tracing::warn!(dns = %name, %target, "SRV target has no A/AAAA record: skipped");
                    }
                    Err(e) => return Err(format!("resolving SRV target {target}: {e}")),
                }
            }
            return Ok(out);
        }
        Err(e) if e.is_no_records_found() => {}
        Err(e) => return Err(format!("SRV lookup: {e}")),
    }
    match resolver.lookup_ip(name).await {
        Ok(ips) => out.extend(ips.iter().map(|ip| SocketAddr::new(ip, port))),
        Err(e) if e.is_no_records_found() => {}
        Err(e) => return Err(format!("A/AAAA lookup: {e}")),
    }
    Ok(out)
}

impl Discovery for DnsDiscovery {
    fn kind(&self) -> &'static str {
        KIND
    }

    /// The name itself stands for its answer until the first lookup: listed as not
    /// probed yet, then replaced by the addresses, or showing why the lookup failed.
    fn initial_candidates(&self, _local: SocketAddr) -> Vec<String> {
        vec![self.name.clone()]
    }

    fn run(self: Box<Self>, ctx: DiscoveryContext) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let server = self.server_label();
            let mut watched: BTreeMap<SocketAddr, CancellationToken> = BTreeMap::new();
            let mut resolver = None;
            let mut last_error: Option<String> = None;
            // Until a lookup answers: the name's own candidate entry (initial_candidates).
            let mut unresolved = true;
            let failed = |unresolved: bool, cause: &str| {
                if unresolved {
                    ctx.report(
                        &self.name,
                        CandidateStatus::down(KIND, format!("DNS lookup via {server} failed: {cause}")),
                    );
                }
            };
            loop {
                if resolver.is_none() {
                    match self.resolver() {
                        Ok(r) => resolver = Some(r),
                        Err(e) => {
                            failed(unresolved, &e);
                            note_error(&mut last_error, &self.name, &server, e);
                        }
                    }
                }
                if let Some(resolver) = &resolver {
                    let answer = tokio::select! {
                        answer = resolve(resolver, &self.name, self.port) => answer,
                        _ = ctx.shutdown() => break,
                    };
                    match answer {
                        Ok(addrs) => {
                            if last_error.take().is_some() {
                                tracing::info!(dns = %self.name, %server, "DNS lookups work again");
                            }
                            let local = ctx.local().addr;
                            let wanted: BTreeSet<SocketAddr> = addrs.into_iter().filter(|a| *a != local).collect();
                            apply(&ctx, &mut watched, wanted, self.frequency, &self.name);
                            if std::mem::take(&mut unresolved) {
                                ctx.forget(&self.name);
                            }
                        }
                        Err(e) => {
                            failed(unresolved, &e);
                            note_error(&mut last_error, &self.name, &server, e);
                        }
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(self.refresh) => {}
                    _ = ctx.shutdown() => break,
                }
            }
            for stop in watched.values() {
                stop.cancel();
            }
        })
    }
}

/// Log a failed lookup: a warning when the cause changes, a debug line while it repeats.
fn note_error(last: &mut Option<String>, name: &str, server: &str, cause: String) {
    if last.as_deref() == Some(cause.as_str()) {
        tracing::debug!(dns = %name, %server, %cause, "DNS lookup still failing; keeping the current candidates");
    } else {
        tracing::warn!(dns = %name, %server, %cause,
            "DNS lookup of {name} via {server} failed: {cause}; keeping the current candidates");
        *last = Some(cause);
    }
}

/// Start watching new candidates and stop watching those that left the answer.
fn apply(
    ctx: &DiscoveryContext,
    watched: &mut BTreeMap<SocketAddr, CancellationToken>,
    wanted: BTreeSet<SocketAddr>,
    frequency: Duration,
    name: &str,
) {
    watched.retain(|addr, stop| {
        if wanted.contains(addr) {
            return true;
        }
        tracing::info!(dns = %name, candidate = %addr, "candidate left the DNS answer; no longer pinged");
        stop.cancel();
        ctx.forget(&addr.to_string());
        false
    });
    for addr in wanted {
        if watched.contains_key(&addr) {
            continue;
        }
        tracing::info!(dns = %name, candidate = %addr, "new candidate in the DNS answer");
        let stop = CancellationToken::new();
        ctx.report(addr.to_string(), CandidateStatus::not_probed_yet(KIND));
        tokio::spawn(watch_address(ctx.clone(), addr, frequency, KIND, stop.clone()));
        watched.insert(addr, stop);
    }
}
