//! The session browser's questions to the other members, over the channel (topic
//! [`TOPIC`]): "which of you holds the session with this log hash, and what is in it?"
//! and "invalidate it" (for a node that holds no copy itself). Every node that runs a
//! status router answers, whether or not its own browser is on: the question comes
//! from a member, authenticated by the channel's handshake, and members are trusted with
//! every session already. A member that does not answer within the timeout is shown as
//! such.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tribes::{Channel, MemberId, SendMode, SendOptions};
use tribes_sessions::{LogId, SessionInfo, SessionManager, ValueKind};

use crate::backend::{self, Invalidation};
use crate::clock::now_ms;

/// The channel topic of the browser's questions and answers.
pub(crate) const TOPIC: &str = "tribes.admin";
/// The version of [`Envelope`]; another version is ignored (the asker sees no answer).
const VERSION: u32 = 1;
/// Messages longer than this are dropped before decoding.
const MAX_LEN: usize = 4 * 1024 * 1024;

/// One session as a member holds it (the browser's JSON shows this too).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionView {
    pub(crate) log_id: String,
    pub(crate) version: u64,
    pub(crate) created_ms: u64,
    pub(crate) last_access_ms: u64,
    pub(crate) max_inactive_s: u64,
    pub(crate) route: String,
    /// Whether the answering member is its primary (Delta: every holder).
    pub(crate) primary: bool,
    pub(crate) attributes: Vec<AttributeView>,
}

/// One attribute of a [`SessionView`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AttributeView {
    pub(crate) name: String,
    /// Encoded size in bytes.
    pub(crate) len: u64,
    pub(crate) kind: ValueKind,
    /// Only for the attributes the app lets the browser show.
    pub(crate) value: Option<String>,
}

fn ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl From<&SessionInfo> for SessionView {
    fn from(s: &SessionInfo) -> Self {
        SessionView {
            log_id: s.log_id.to_string(),
            version: s.version,
            created_ms: ms(s.created),
            last_access_ms: ms(s.last_accessed),
            max_inactive_s: s.max_inactive.as_secs(),
            route: s.route.clone(),
            primary: s.primary_here,
            attributes: s
                .attributes
                .iter()
                .map(|a| AttributeView {
                    name: a.name.clone(),
                    len: a.len as u64,
                    kind: a.kind,
                    value: a.value.clone(),
                })
                .collect(),
        }
    }
}

/// The sessions `manager` holds with `log_id`, values of `shown` attributes only.
pub(crate) fn held(manager: &SessionManager, log_id: LogId, shown: &[String]) -> Vec<SessionView> {
    manager
        .browse(log_id, |name| shown.iter().any(|s| s == name))
        .iter()
        .map(SessionView::from)
        .collect()
}

/// A question or an answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Envelope {
    v: u32,
    /// The asker's number for the question; answers carry it back.
    qid: u64,
    body: Body,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Body {
    /// Which sessions with this log hash do you hold? Values of `values` only.
    Lookup {
        context: String,
        log_id: String,
        values: Vec<String>,
    },
    /// The answer: `None` when the member does not serve the context.
    Found { held: Option<Vec<SessionView>> },
    /// Invalidate the session with this log hash (the asker holds no copy).
    Invalidate { context: String, log_id: String },
    /// The answer to [`Body::Invalidate`].
    Invalidated { outcome: Invalidation },
}

/// The questions of this node waiting for answers, by number.
#[derive(Debug)]
pub(crate) struct Pending {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, mpsc::UnboundedSender<(MemberId, Body)>>>,
}

impl Default for Pending {
    fn default() -> Self {
        // Numbers start from the clock, so a restarted node does not take a late answer
        // to its previous life's question for one of its own.
        Pending {
            next: AtomicU64::new(now_ms() << 16),
            waiting: Mutex::default(),
        }
    }
}

impl Pending {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::UnboundedSender<(MemberId, Body)>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What one member said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub(crate) enum MemberAnswer {
    /// It holds these sessions with the hash (an empty list: none).
    Holds { sessions: Vec<SessionView> },
    /// It does not serve the context.
    NoContext,
    /// No answer within the timeout (busy, cut off, or without a status router).
    NoAnswer,
    /// The question did not reach it.
    NotDelivered { cause: String },
}

fn encode(qid: u64, body: Body) -> Option<Bytes> {
    match serde_json::to_vec(&Envelope { v: VERSION, qid, body }) {
        Ok(b) => Some(Bytes::from(b)),
        Err(e) => {
            tracing::warn!(error = %e, "session browser message did not encode");
            None
        }
    }
}

/// Asks `to` one question and collects their answers until each answered or `timeout`
/// passed. Answers from members not asked are ignored.
pub(crate) async fn ask(
    channel: &Channel,
    pending: &Pending,
    to: &[MemberId],
    body: Body,
    timeout: Duration,
) -> HashMap<MemberId, Result<Body, MemberAnswer>> {
    let mut out: HashMap<MemberId, Result<Body, MemberAnswer>> =
        to.iter().map(|m| (*m, Err(MemberAnswer::NoAnswer))).collect();
    if to.is_empty() {
        return out;
    }
    let qid = pending.next.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::unbounded_channel();
    pending.waiting().insert(qid, tx);
    let Some(bytes) = encode(qid, body) else {
        pending.waiting().remove(&qid);
        return out;
    };
    let report = channel.send(to, TOPIC, bytes, SendOptions::mode(SendMode::Async)).await;
    let mut open = to.len();
    for (member, delivery) in report.outcomes {
        if let tribes::Delivery::Failed(e) = delivery {
            out.insert(member, Err(MemberAnswer::NotDelivered { cause: e.to_string() }));
            open -= 1;
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    while open > 0 {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((from, body))) => {
                if let Some(slot) = out.get_mut(&from)
                    && matches!(slot, Err(MemberAnswer::NoAnswer))
                {
                    *slot = Ok(body);
                    open -= 1;
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    pending.waiting().remove(&qid);
    out
}

/// What [`serve`] needs of the node it answers for: the dashboard of `reporter.rs`
/// (passed in, so this module does not depend on the dashboard's shell).
pub(crate) trait Answering: Send + Sync + 'static {
    /// The manager of `context` on this node, if it serves it.
    fn manager(&self, context: &str) -> Option<SessionManager>;
    /// This node's questions waiting for answers.
    fn pending(&self) -> &Pending;
}

/// Answers the other members' questions and hands this node's answers to [`ask`],
/// until `dashboard` (every status router of the node) is dropped.
pub(crate) async fn serve<N: Answering>(dashboard: Weak<N>, channel: Channel) {
    let mut inbox = match channel.listen(TOPIC) {
        Ok(inbox) => inbox,
        Err(error) => {
            tracing::warn!(%error, "the session browser cannot ask the other members");
            return;
        }
    };
    let mut check = tokio::time::interval(Duration::from_secs(5));
    loop {
        let msg = tokio::select! {
            msg = inbox.recv() => match msg {
                Some(msg) => msg,
                None => break,
            },
            _ = check.tick() => {
                if dashboard.strong_count() == 0 {
                    break;
                }
                continue;
            }
        };
        let Some(d) = dashboard.upgrade() else { break };
        let from = msg.from().clone();
        if msg.payload().len() > MAX_LEN {
            tracing::debug!(member = %from.name(), len = msg.payload().len(), "session browser message too long; dropped");
            continue;
        }
        let env: Envelope = match serde_json::from_slice(msg.payload()) {
            Ok(env) => env,
            Err(e) => {
                tracing::debug!(member = %from.name(), error = %e, "session browser message ignored");
                continue;
            }
        };
        if env.v != VERSION {
            tracing::debug!(member = %from.name(), version = env.v, "session browser message of another version ignored");
            continue;
        }
        let qid = env.qid;
        match env.body {
            body @ (Body::Found { .. } | Body::Invalidated { .. }) => {
                if let Some(tx) = d.pending().waiting().get(&qid) {
                    let _ = tx.send((from.id(), body));
                }
            }
            Body::Lookup {
                context,
                log_id,
                values,
            } => {
                let held = d.manager(&context).map(|m| match log_id.parse::<LogId>() {
                    Ok(id) => held(&m, id, &values),
                    Err(_) => Vec::new(),
                });
                tracing::info!(target: "tribes::admin", action = "lookup", asked_by = %from.name(), %context, session = %log_id,
                    held = held.as_ref().map_or(0, Vec::len), "session browser: lookup for another member");
                reply(&channel, from.id(), qid, Body::Found { held });
            }
            Body::Invalidate { context, log_id } => {
                let (channel, manager) = (channel.clone(), d.manager(&context));
                tokio::spawn(async move {
                    let outcome = match (manager, log_id.parse::<LogId>()) {
                        (Some(m), Ok(id)) => backend::invalidate_by_log_id(&m, id).await,
                        _ => Invalidation::NotFound,
                    };
                    tracing::info!(target: "tribes::admin", action = "invalidate", asked_by = %from.name(), %context,
                        session = %log_id, outcome = ?outcome, "session browser: invalidation for another member");
                    reply(&channel, from.id(), qid, Body::Invalidated { outcome });
                });
            }
        }
    }
}

fn reply(channel: &Channel, to: MemberId, qid: u64, body: Body) {
    let Some(bytes) = encode(qid, body) else { return };
    let channel = channel.clone();
    tokio::spawn(async move {
        let report = channel
            .send(&[to], TOPIC, bytes, SendOptions::mode(SendMode::Async))
            .await;
        if !report.all_ok() {
            tracing::debug!(?report, "session browser answer not sent");
        }
    });
}
