//! Watching one candidate address over TCP: the part shared by the static and DNS
//! kinds. One ping connection stays open, so a member killed with `kill -9` is
//! noticed the moment its kernel closes it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::probe::ping;
use super::{CandidateStatus, DiscoveryContext};

/// Ping the tribes node at `addr` every `frequency`, reporting each answer with
/// [`DiscoveryContext::heard`] and the candidate's health with
/// [`DiscoveryContext::report`] under `kind`, until the channel shuts down or
/// `stop` is cancelled (the candidate was dropped).
pub(crate) async fn watch_address(
    ctx: DiscoveryContext,
    addr: SocketAddr,
    frequency: Duration,
    kind: &'static str,
    stop: CancellationToken,
) {
    tokio::select! {
        _ = watch_loop(&ctx, addr, frequency, kind) => {}
        _ = stop.cancelled() => {}
    }
}

async fn watch_loop(ctx: &DiscoveryContext, addr: SocketAddr, frequency: Duration, kind: &'static str) {
    let key = addr.to_string();
    let down = |error: String| CandidateStatus::down(kind, error);
    ctx.report(&key, CandidateStatus::not_probed_yet(kind));
    loop {
        if ctx.is_shutdown() {
            return;
        }
        let opened = tokio::time::timeout(ctx.probe_timeout, super::probe::open(&ctx.gate, &ctx.local(), addr)).await;
        let mut framed = match opened {
            Ok(Ok(framed)) => framed,
            Ok(Err(e)) => {
                ctx.report(&key, down(e.to_string()));
                tokio::time::sleep(frequency).await;
                continue;
            }
            Err(_) => {
                ctx.report(&key, down(format!("connect to {addr} timed out")));
                continue;
            }
        };
        let mut current = None;
        loop {
            let answer = tokio::time::timeout(ctx.probe_timeout, ping(&mut framed, &ctx.local())).await;
            match answer {
                Ok(Ok(member)) => {
                    current = Some(member.id);
                    ctx.report(&key, CandidateStatus::up(kind, member.name.clone()));
                    ctx.heard(member);
                }
                Ok(Err(e)) => {
                    ctx.report(&key, down(format!("ping connection to {addr} closed: {e}")));
                    if let Some(id) = current {
                        ctx.lost(id);
                    }
                    break;
                }
                Err(_) => {
                    ctx.report(
                        &key,
                        down(format!("no pong from {addr} within {:?}", ctx.probe_timeout)),
                    );
                    break;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(frequency) => {}
                _ = ctx.shutdown() => return,
            }
        }
    }
}
