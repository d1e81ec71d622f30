//! BackupManager: failover of a primary keeps every session and restores the copies.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use tribes_sessions::ManagerKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_primary_keeps_every_session_and_restores_the_backups() {
    init_tracing();
    let kind = ManagerKind::Backup { backup_count: 1 };
    let a = node("A", &[], kind).await;
    let b = node("B", &[a.0.local().addr()], kind).await;
    let c = node("C", &[a.0.local().addr(), b.0.local().addr()], kind).await;
    let d = node("D", &[a.0.local().addr(), b.0.local().addr(), c.0.local().addr()], kind).await;
    wait_mesh(&[&a.1, &b.1, &c.1, &d.1]).await;
    let mut ids = Vec::new();
    for i in 0..300u32 {
        let s = a.1.create(SystemTime::now()).unwrap();
        s.insert("v", &i).unwrap();
        a.1.commit(&s).await.unwrap();
        s.insert("v", &(i + 1000)).unwrap();
        let r = a.1.commit(&s).await.unwrap();
        assert!(r.all_ok() && r.members.len() == 1, "one backup acked: {r:?}");
        ids.push(s.id());
    }
    // O(backups): A sent to one member per write, and B, C, D hold about a third each.
    let held: usize = [&b.1, &c.1, &d.1].iter().map(|m| m.session_count()).sum();
    assert_eq!(held, 300);
    crash(a);
    let survivors = [&b.1, &c.1, &d.1];
    wait_until(
        "every session has one primary and one backup again",
        Duration::from_secs(10),
        || {
            ids.iter().all(|id| {
                survivors.iter().filter(|m| m.contains(id)).count() == 2
                    && survivors.iter().filter(|m| m.is_primary(id)).count() == 1
            })
        },
    )
    .await;
    for (i, id) in ids.iter().enumerate() {
        let primary = survivors.iter().find(|m| m.is_primary(id)).unwrap();
        let s = primary.get(id).await.unwrap();
        assert_eq!(
            s.get::<u32>("v").unwrap(),
            Some(i as u32 + 1000),
            "latest acknowledged write"
        );
    }
    // A session asked for on a node that does not hold it is fetched, and that node becomes primary.
    let id = ids[0];
    let outsider = survivors.iter().find(|m| !m.contains(&id)).unwrap();
    let s = outsider.get(&id).await.expect("fetched from its holders");
    s.insert("w", &1u8).unwrap();
    outsider.commit(&s).await.unwrap();
    assert!(outsider.is_primary(&id));
    wait_until("two copies after the move", Duration::from_secs(5), || {
        survivors.iter().filter(|m| m.contains(&id)).count() == 2
            && survivors.iter().filter(|m| m.is_primary(&id)).count() == 1
    })
    .await;
}
