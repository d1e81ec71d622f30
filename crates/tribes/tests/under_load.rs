//! No member is removed falsely while the machine is under full CPU load.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{init_tracing, static_cluster};
use tribes::MembershipEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_false_removal_under_full_cpu_load() {
    init_tracing();
    let [a, b, c] = static_cluster().await;
    let mut events: Vec<_> = [&a, &b, &c].iter().map(|ch| ch.subscribe()).collect();

    // Burn every core (plus one) for 6 s, twice the drop time; the loops stop themselves.
    let stop = Arc::new(AtomicBool::new(false));
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) + 1;
    let burners: Vec<_> = (0..cores)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(6) {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    std::hint::black_box(x);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Ordering::Relaxed);
    for t in burners {
        t.join().unwrap();
    }
    for (rx, ch) in events.iter_mut().zip([&a, &b, &c]) {
        while let Ok(event) = rx.try_recv() {
            assert!(
                !matches!(event, MembershipEvent::Disappeared { .. }),
                "{} removed a live member under load: {event:?}",
                ch.local().name()
            );
        }
        assert_eq!(ch.members().len(), 2);
    }
}
