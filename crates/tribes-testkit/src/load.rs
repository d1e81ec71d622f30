//! Bounded load loops: clients that keep a session each and check every answer while
//! nodes fail and come back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::RwLock;

/// What the clients saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Requests answered with a count.
    pub answered: u64,
    /// Requests that got no count (an error, a refused connection, another status).
    pub unanswered: u64,
    /// Every answer out of sequence, described.
    pub wrong: Vec<String>,
}

/// `clients` users, each with its own cookie jar, sending `GET /counter` to the nodes
/// in turn (the next node after every request, whether it answered or not) until
/// `stop` or `max_requests` each. `up[i]` says whether node i runs (a real balancer
/// takes a dead node out of its list). Every count must be the client's previous one
/// plus one, or more by at most the requests left unanswered in between.
pub fn run_clients(
    urls: Arc<Vec<String>>,
    up: Arc<RwLock<Vec<bool>>>,
    clients: usize,
    max_requests: u64,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Tally>> {
    (0..clients)
        .map(|c| {
            let (urls, up, stop) = (urls.clone(), up.clone(), stop.clone());
            tokio::spawn(async move {
                let user = reqwest::Client::builder()
                    .cookie_store(true)
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut tally = Tally::default();
                let mut last: Option<u64> = None;
                let mut skipped_since_last = 0u64;
                let mut node = c;
                for _ in 0..max_requests {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // Round robin over the nodes that run.
                    let target = loop {
                        node = (node + 1) % urls.len();
                        if up.read().await[node] {
                            break node;
                        }
                    };
                    let answer = user.get(format!("{}/counter", urls[target])).send().await;
                    let count = match answer {
                        Ok(r) if r.status() == 200 => r
                            .json::<serde_json::Value>()
                            .await
                            .ok()
                            .and_then(|v| v["count"].as_u64()),
                        _ => None,
                    };
                    let Some(count) = count else {
                        tally.unanswered += 1;
                        skipped_since_last += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    tally.answered += 1;
                    let expected_low = last.map_or(1, |l| l + 1);
                    let expected_high = expected_low + skipped_since_last;
                    if count < expected_low || count > expected_high {
                        tally.wrong.push(format!(
                            "client {c}: node {target} answered {count} after {last:?} ({skipped_since_last} unanswered in between)"
                        ));
                    }
                    last = Some(count);
                    skipped_since_last = 0;
                }
                tally
            })
        })
        .collect()
}

/// Waits for every client of [`run_clients`] and adds up what they saw.
///
/// # Panics
///
/// When a client task panicked.
pub async fn total(clients: Vec<tokio::task::JoinHandle<Tally>>) -> Tally {
    let mut total = Tally::default();
    for c in clients {
        let t = c.await.unwrap();
        total.answered += t.answered;
        total.unanswered += t.unanswered;
        total.wrong.extend(t.wrong);
    }
    total
}
