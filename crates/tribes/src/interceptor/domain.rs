//! Drop messages from members of other domains (Tomcat's `DomainFilterInterceptor`).

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Interceptor, InterceptorError, Message};
use crate::member::Member;

/// Accepts messages only from members of one cluster domain, counting the rest.
///
/// Membership already ignores heartbeats of other domains; this filter also stops a
/// process of another domain that connects to the replication port directly.
#[derive(Debug)]
pub struct DomainFilterInterceptor {
    domain: String,
    dropped: AtomicU64,
}

impl DomainFilterInterceptor {
    /// A filter that accepts only `domain`.
    pub fn new(domain: impl Into<String>) -> Self {
        DomainFilterInterceptor {
            domain: domain.into(),
            dropped: AtomicU64::new(0),
        }
    }

    /// Messages dropped because they came from another domain.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Interceptor for DomainFilterInterceptor {
    fn name(&self) -> &'static str {
        "domain-filter"
    }

    fn on_receive(&self, from: &Member, message: Message, out: &mut Vec<Message>) -> Result<(), InterceptorError> {
        if from.domain == self.domain {
            out.push(message);
            Ok(())
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            Err(InterceptorError {
                interceptor: "domain-filter",
                reason: format!(
                    "member {from} is in domain '{}', this node accepts only '{}': give both the same domain or keep them apart",
                    from.domain, self.domain
                ),
            })
        }
    }
}
