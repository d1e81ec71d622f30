//! [`now_ms`]: the wall clock of the dashboard's and the browser's shells (the views
//! they feed take `now` as an input). A leaf: it imports nothing from this crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix milliseconds now (the shell's clock).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
