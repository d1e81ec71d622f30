//! Per-member retries of farm transfers, with no IO: time is an argument.
//!
//! A transfer of one file to one member that failed (the member did not ack a chunk, or
//! it answered that it could not write the file) is retried for that member alone, after
//! 0.5 s, 1 s, 2 s … at most [`MAX_DELAY`] apart, [`MAX_ATTEMPTS`] times; the other
//! members are never held up. A delivery, a newer version or the member leaving ends it
//! (a member that comes back exchanges manifests and asks for what it lacks).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::member::MemberId;

/// The delay before the first retry; each further one doubles it.
pub(crate) const FIRST_DELAY: Duration = Duration::from_millis(500);
/// The longest delay between two attempts.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(30);
/// Failed attempts after which a member is given up on for that file.
pub(crate) const MAX_ATTEMPTS: u32 = 10;

#[derive(Debug)]
struct Pending {
    /// Failed attempts so far.
    failures: u32,
    /// When to try again; `None` while an attempt is under way.
    due: Option<Instant>,
}

/// What became of a failure.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Try again after this long (this was failure number `failures`).
    RetryIn { failures: u32, delay: Duration },
    /// Too many failures: given up until the member rejoins or the file changes.
    GaveUp { failures: u32 },
}

/// The retries waiting, per (member, file).
#[derive(Debug, Default)]
pub(crate) struct Retries {
    pending: HashMap<(MemberId, String), Pending>,
}

impl Retries {
    /// The transfer of `file` to `member` failed at `now`.
    pub(crate) fn failed(&mut self, member: MemberId, file: &str, now: Instant) -> Next {
        let p = self
            .pending
            .entry((member, file.to_string()))
            .or_insert(Pending { failures: 0, due: None });
        p.failures += 1;
        let failures = p.failures;
        if failures >= MAX_ATTEMPTS {
            self.pending.remove(&(member, file.to_string()));
            return Next::GaveUp { failures };
        }
        let delay = FIRST_DELAY.saturating_mul(1 << (failures - 1).min(16)).min(MAX_DELAY);
        p.due = Some(now + delay);
        Next::RetryIn { failures, delay }
    }

    /// The transfer of `file` to `member` was delivered: no more retries.
    pub(crate) fn delivered(&mut self, member: MemberId, file: &str) {
        self.pending.remove(&(member, file.to_string()));
    }

    /// A new version of `file` goes to everyone: earlier failures no longer count.
    pub(crate) fn superseded(&mut self, file: &str) {
        self.pending.retain(|(_, f), _| f != file);
    }

    /// `member` left: its retries end (rejoining exchanges manifests).
    pub(crate) fn forget_member(&mut self, member: MemberId) {
        self.pending.retain(|(m, _), _| *m != member);
    }

    /// The retries due at `now`, marked as under way.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<(MemberId, String)> {
        let mut due = Vec::new();
        for ((member, file), p) in &mut self.pending {
            if p.due.is_some_and(|at| at <= now) {
                p.due = None;
                due.push((*member, file.clone()));
            }
        }
        due.sort();
        due
    }

    /// When the next retry is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.pending.values().filter_map(|p| p.due).min()
    }

    /// Files waiting for a retry (or retrying) to `member`.
    pub(crate) fn pending_for(&self, member: MemberId) -> usize {
        self.pending.keys().filter(|(m, _)| *m == member).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> MemberId {
        MemberId([n; 16])
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_then_gives_up() {
        let mut r = Retries::default();
        let t0 = Instant::now();
        let mut delays = Vec::new();
        let mut now = t0;
        loop {
            match r.failed(id(2), "app.war", now) {
                Next::RetryIn { delay, .. } => {
                    assert_eq!(r.next_due(), Some(now + delay));
                    assert!(
                        r.take_due(now + delay - Duration::from_millis(1)).is_empty(),
                        "not before its time"
                    );
                    now += delay;
                    assert_eq!(r.take_due(now), vec![(id(2), "app.war".to_string())]);
                    assert_eq!(r.next_due(), None, "under way: not due again until it fails");
                    delays.push(delay.as_millis());
                }
                Next::GaveUp { failures } => {
                    assert_eq!(failures, MAX_ATTEMPTS);
                    break;
                }
            }
        }
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        assert_eq!(r.pending_for(id(2)), 0);
    }

    #[test]
    fn one_member_failing_does_not_touch_the_others() {
        let mut r = Retries::default();
        let now = Instant::now();
        r.failed(id(2), "a", now);
        r.failed(id(3), "a", now);
        r.failed(id(3), "b", now);
        assert_eq!((r.pending_for(id(2)), r.pending_for(id(3))), (1, 2));
        r.delivered(id(3), "a");
        r.forget_member(id(2));
        assert_eq!((r.pending_for(id(2)), r.pending_for(id(3))), (0, 1));
        r.superseded("b");
        assert_eq!(r.pending_for(id(3)), 0);
        assert_eq!(r.next_due(), None);
    }
}
