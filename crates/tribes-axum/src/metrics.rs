//! `GET /metrics` in the Prometheus text format.

use std::fmt;
use std::sync::atomic::AtomicU64;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tribes::Channel;
use tribes_sessions::{ManagerStats, SessionManager};

use crate::Contexts;
use crate::counters::{LayerSnapshot, counters_for};

#[derive(Clone)]
struct MetricsState {
    contexts: Contexts,
    channel: Channel,
}

impl fmt::Debug for MetricsState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsState").finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
    context: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    node: String,
    context: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicationLabels {
    node: String,
    context: String,
    member: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemberLabels {
    node: String,
    member: String,
    member_id: String,
}

/// A router serving `GET /metrics`: this node's sessions, replication and channel
/// statistics in the Prometheus text format, labelled by node (route), context and member,
/// for every one of its [`Contexts`] (one manager converts into it).
///
/// The channel is the managers' own ([`SessionManager::channel`]).
///
/// Mount it anywhere, e.g. `app.merge(metrics_router(manager))`, outside the
/// [`ReplicatedSessions`](crate::ReplicatedSessions) layer.
pub fn metrics_router(contexts: impl Into<Contexts>) -> Router {
    let contexts = contexts.into();
    let channel = contexts.channel().clone();
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(MetricsState { contexts, channel })
}

fn counter_family<
    L: prometheus_client::encoding::EncodeLabelSet + Clone + std::hash::Hash + Eq + fmt::Debug + Send + Sync + 'static,
>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (L, u64)>,
) {
    let family = Family::<L, Counter>::default();
    for (labels, v) in values {
        family.get_or_create(&labels).inc_by(v);
    }
    registry.register(name, help, family);
}

fn gauge_family<
    L: prometheus_client::encoding::EncodeLabelSet + Clone + std::hash::Hash + Eq + fmt::Debug + Send + Sync + 'static,
>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (L, i64)>,
) {
    let family = Family::<L, Gauge>::default();
    for (labels, v) in values {
        family.get_or_create(&labels).set(v);
    }
    registry.register(name, help, family);
}

pub(crate) fn render(contexts: &Contexts, channel: &Channel) -> Result<String, fmt::Error> {
    let mut registry = Registry::with_prefix("tribes");
    let node = channel.local().name().to_owned();
    let context = contexts.first().context().to_owned();

    // Every manager's statistics, labelled by its context.
    let all: Vec<(NodeLabels, ManagerStats, &SessionManager)> = contexts
        .all()
        .iter()
        .map(|m| {
            let labels = NodeLabels {
                node: node.clone(),
                context: m.context().to_owned(),
            };
            (labels, m.stats(), m)
        })
        .collect();
    let each = |f: fn(&ManagerStats) -> u64| all.iter().map(|(nl, ms, _)| (nl.clone(), f(ms))).collect::<Vec<_>>();
    let gauge = |f: fn(&ManagerStats) -> f64| {
        let family = Family::<NodeLabels, Gauge<f64, AtomicU64>>::default();
        for (nl, ms, _) in &all {
            family.get_or_create(nl).set(f(ms));
        }
        family
    };
    registry.register(
        "sessions_active",
        "Sessions held by this node",
        gauge(|ms| ms.sessions as f64),
    );
    registry.register(
        "ready",
        "1 when the node serves requests (state transfer over)",
        gauge(|ms| f64::from(u8::from(ms.ready))),
    );
    registry.register(
        "context_servers",
        "Other members serving the context",
        gauge(|ms| ms.servers.len() as f64),
    );
    registry.register(
        "sessions_overhead_bytes",
        "Estimated bookkeeping bytes beyond attribute data",
        gauge(|ms| ms.overhead_bytes as f64),
    );
    registry.register(
        "state_transfer_duration_seconds",
        "How long the state transfer took (NaN while running)",
        gauge(|ms| ms.state_transfer.duration_ms.map_or(f64::NAN, |t| t as f64 / 1000.0)),
    );
    registry.register(
        "state_transfer_sessions",
        "Sessions received in the state transfer",
        gauge(|ms| ms.state_transfer.sessions_received as f64),
    );
    registry.register(
        "state_transfer_failed_attempts",
        "State transfer attempts that failed (refused, not acked, silent, or the member left); every attempt is listed under replication.state_transfer.attempts in /cluster/status",
        gauge(|ms| ms.state_transfer.attempts.iter().filter(|a| a.is_failure()).count() as f64),
    );
    counter_family(
        &mut registry,
        "replication_messages_sent",
        "Session messages sent (one per member)",
        each(|ms| ms.messages_sent),
    );
    counter_family(
        &mut registry,
        "replication_bytes_sent",
        "Bytes of session messages sent",
        each(|ms| ms.bytes_sent),
    );
    counter_family(
        &mut registry,
        "replication_messages_received",
        "Session messages received",
        each(|ms| ms.messages_received),
    );
    counter_family(
        &mut registry,
        "replication_bytes_received",
        "Bytes of session messages received",
        each(|ms| ms.bytes_received),
    );
    counter_family(
        &mut registry,
        "replication_acks",
        "Sync-acks received",
        each(|ms| ms.acks),
    );
    counter_family(
        &mut registry,
        "replication_failures",
        "Failed or timed-out session sends",
        each(|ms| ms.failures),
    );
    counter_family(
        &mut registry,
        "replication_undecodable",
        "Session messages that did not decode",
        each(|ms| ms.undecodable),
    );
    counter_family(
        &mut registry,
        "replication_fetches_unconfirmed",
        "BackupManager reads that went on without an answer from every member asked",
        each(|ms| ms.fetches_unconfirmed),
    );
    counter_family(
        &mut registry,
        "replication_deltas_applied",
        "Replicated deltas applied",
        each(|ms| ms.deltas_applied),
    );
    counter_family(
        &mut registry,
        "replication_conflicts",
        "Deltas made against an older version, and copies merged where each had a write the other lacked (last writer won)",
        each(|ms| ms.conflicts),
    );
    counter_family(
        &mut registry,
        "replication_sync_rounds",
        "Anti-entropy rounds started",
        each(|ms| ms.sync_rounds),
    );
    counter_family(
        &mut registry,
        "replication_sync_repaired",
        "Sessions anti-entropy found different on two members and repaired",
        each(|ms| ms.sync_repaired),
    );
    counter_family(
        &mut registry,
        "replication_dropped_late",
        "Late changes to destroyed sessions, dropped",
        each(|ms| ms.dropped_late),
    );
    counter_family(
        &mut registry,
        "replication_dropped_in_snapshot",
        "Queued changes the snapshot already had",
        each(|ms| ms.dropped_in_snapshot),
    );
    counter_family(
        &mut registry,
        "sessions_expired",
        "Sessions expired on this node",
        each(|ms| ms.expired),
    );
    counter_family(
        &mut registry,
        "sessions_absolute_timeout",
        "Sessions ended on this node at their max lifetime (absolute timeout), by a request or the sweep",
        each(|ms| ms.absolute_timeouts),
    );
    counter_family(
        &mut registry,
        "sessions_invalidated",
        "Sessions invalidated (here or replicated)",
        each(|ms| ms.invalidated),
    );
    counter_family(
        &mut registry,
        "sessions_promotions",
        "Sessions this node took over as primary",
        each(|ms| ms.promotions),
    );
    let per = |f: fn(&tribes_sessions::MemberReplication) -> u64| {
        all.iter()
            .flat_map(|(nl, ms, _)| {
                ms.per_member.iter().map(|m| {
                    (
                        ReplicationLabels {
                            node: node.clone(),
                            context: nl.context.clone(),
                            member: m.member.clone(),
                        },
                        f(m),
                    )
                })
            })
            .collect::<Vec<_>>()
    };
    counter_family(
        &mut registry,
        "replication_member_messages",
        "Session messages sent to a member",
        per(|m| m.messages),
    );
    counter_family(
        &mut registry,
        "replication_member_bytes",
        "Bytes of session messages sent to a member",
        per(|m| m.bytes),
    );
    counter_family(
        &mut registry,
        "replication_member_acks",
        "Sync-acks received from a member",
        per(|m| m.acks),
    );
    counter_family(
        &mut registry,
        "replication_member_failures",
        "Failed or timed-out sends to a member",
        per(|m| m.failures),
    );
    // The layers' counters, each name once with a value per context.
    let layers: Vec<(NodeLabels, LayerSnapshot)> = all
        .iter()
        .map(|(nl, _, m)| (nl.clone(), counters_for(m).snapshot()))
        .collect();
    for (i, (name, help, _)) in layers[0].1.iter().enumerate() {
        counter_family(
            &mut registry,
            name,
            help,
            layers.iter().map(|(nl, values)| (nl.clone(), values[i].2)),
        );
    }

    // The channel, per member.
    let cs = channel.stats();
    let per_member = |f: fn(&tribes::MemberStats) -> u64| {
        cs.members
            .iter()
            .map(|m| {
                (
                    MemberLabels {
                        node: node.clone(),
                        member: m.name.clone(),
                        member_id: m.id.clone(),
                    },
                    f(m),
                )
            })
            .collect::<Vec<_>>()
    };
    counter_family(
        &mut registry,
        "channel_messages_sent",
        "Messages sent to a member",
        per_member(|m| m.messages_out),
    );
    counter_family(
        &mut registry,
        "channel_bytes_sent",
        "Payload bytes sent to a member",
        per_member(|m| m.bytes_out),
    );
    counter_family(
        &mut registry,
        "channel_messages_received",
        "Messages received from a member",
        per_member(|m| m.messages_in),
    );
    counter_family(
        &mut registry,
        "channel_bytes_received",
        "Payload bytes received from a member",
        per_member(|m| m.bytes_in),
    );
    counter_family(
        &mut registry,
        "channel_acks",
        "Acks received from a member",
        per_member(|m| m.acks),
    );
    counter_family(
        &mut registry,
        "channel_send_failures",
        "Sends to a member that failed",
        per_member(|m| m.failures),
    );
    counter_family(
        &mut registry,
        "channel_ack_timeouts",
        "Sends to a member whose ack timed out",
        per_member(|m| m.timeouts),
    );
    gauge_family(
        &mut registry,
        "channel_queue_depth",
        "Batches queued for a member, not yet written",
        per_member(|m| m.queue_depth as u64)
            .into_iter()
            .map(|(l, v)| (l, i64::try_from(v).unwrap_or(i64::MAX))),
    );
    let node_only = NodeLabels {
        node: node.clone(),
        context,
    };
    gauge_family(
        &mut registry,
        "channel_members",
        "Live members besides this node",
        [(node_only.clone(), cs.members.len() as i64)],
    );
    counter_family(
        &mut registry,
        "channel_malformed_frames",
        "Connections closed for malformed input",
        [(node_only.clone(), cs.malformed_frames)],
    );
    counter_family(
        &mut registry,
        "channel_undeliverable",
        "Messages that found no listener",
        [(node_only.clone(), cs.undeliverable)],
    );
    gauge_family(
        &mut registry,
        "channel_uptime_seconds",
        "Time since the channel started",
        [(node_only.clone(), cs.uptime.as_secs() as i64)],
    );
    gauge_family(
        &mut registry,
        "channel_refused_peers",
        "Peers (by address) whose frames this node refused, e.g. sealed with another cluster key",
        [(node_only.clone(), i64::try_from(cs.refused.len()).unwrap_or(i64::MAX))],
    );
    counter_family(
        &mut registry,
        "channel_refused",
        "Connections or datagrams refused from those peers",
        [(node_only.clone(), cs.refused.values().map(|r| r.count).sum())],
    );
    counter_family(
        &mut registry,
        "channel_refusals",
        "Connections and heartbeats this node refused, by reason (other_cluster, unknown_key_id, replay, wrong_member, revoked, plain_text, version_mismatch, malformed)",
        cs.refusals.by_reason.iter().map(|(reason, n)| {
            let reason = serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            (
                RefusalLabels {
                    node: node.clone(),
                    context: node_only.context.clone(),
                    reason,
                },
                *n,
            )
        }),
    );

    // The session stores, for the contexts that have one.
    let stores: Vec<(NodeLabels, &tribes_sessions::StoreStats)> = all
        .iter()
        .filter_map(|(nl, ms, _)| ms.store.as_ref().map(|st| (nl.clone(), st)))
        .collect();
    if !stores.is_empty() {
        let healthy = Family::<NodeLabels, Gauge<f64, AtomicU64>>::default();
        for (nl, store) in &stores {
            healthy
                .get_or_create(nl)
                .set(store.healthy.map_or(f64::NAN, |h| f64::from(u8::from(h))));
        }
        registry.register(
            "store_healthy",
            "1 when the store's last health check passed, 0 when it failed (NaN before the first)",
            healthy,
        );
        gauge_family(
            &mut registry,
            "store_queue_depth",
            "Write-behind: sessions waiting to be saved",
            stores
                .iter()
                .map(|(nl, st)| (nl.clone(), i64::try_from(st.queue_depth).unwrap_or(i64::MAX))),
        );
        counter_family(
            &mut registry,
            "store_errors",
            "Failed store operations",
            stores.iter().map(|(nl, st)| (nl.clone(), st.errors)),
        );
        counter_family(
            &mut registry,
            "store_saves",
            "Records saved to the store",
            stores.iter().map(|(nl, st)| (nl.clone(), st.saves)),
        );
    }

    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

async fn metrics(State(s): State<MetricsState>) -> Response {
    match render(&s.contexts, &s.channel) {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed").into_response()
        }
    }
}
