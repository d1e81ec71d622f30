//! Replicated sessions for tribes clusters (docs in progress).

mod core;
mod data;
mod error;
mod id;
mod listener;
mod manager;
mod placement;
mod session;
mod stats;
mod transfer;
mod wire;

pub use error::{AttributeError, CreateError, ReplicationError, StartError, StateTransferError};
pub use id::{ParseIdError, SessionId};
pub use listener::{Clock, DestroyReason, Origin, SessionEvent, SessionListener, SystemClock};
pub use manager::{
    AckOutcome, CommitReport, ManagerKind, MemberAck, Readiness, ReplicationMode, SessionManager, SessionManagerBuilder,
};
pub use session::Session;
pub use stats::{ManagerStats, MemberReplication, TransferStats};
