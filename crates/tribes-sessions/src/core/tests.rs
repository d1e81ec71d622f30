//! Unit tests of the core's decisions, one per rule (and per defect it once had).

use super::*;

fn core(max_lifetime_ms: Option<u64>) -> Core {
    let cfg = Arc::new(CoreConfig {
        max_inactive_ms: 10_000,
        max_lifetime_ms,
        ..CoreConfig::for_tests(ManagerKind::Delta)
    });
    let mut c = Core::new(cfg, MemberId::from_bytes([1; 16]));
    c.handle_servers_changed(vec![MemberId::from_bytes([2; 16])], &mut Vec::new());
    c
}

#[test]
fn an_active_session_ends_at_its_max_lifetime_everywhere() {
    let mut c = core(Some(30_000));
    let id = SessionId::from_bytes([7; 16]);
    c.create(0, id, "a".into()).unwrap();
    let mut out = Vec::new();
    // Used every 5 s: never idle, but created 30 s ago at the end.
    for t in (5_000..=30_000).step_by(5_000) {
        assert!(c.get(t, &id).is_some(), "gone at {t} ms, before its lifetime");
        c.touch(t, &id);
        c.handle_tick(t, &mut out);
    }
    out.clear();
    assert!(c.get(30_001, &id).is_none(), "served past its lifetime");
    c.handle_tick(30_001, &mut out);
    assert!(!c.contains(&id));
    assert!(
        out.iter()
            .any(|e| matches!(e, Effect::Send(_, Msg::Expired(ids)) if ids == &vec![id])),
        "the other members are not told: {out:?}"
    );
    // Without a max lifetime the same session lives on.
    let mut c = core(None);
    c.create(0, id, "a".into()).unwrap();
    c.touch(30_000, &id);
    c.handle_tick(30_001, &mut Vec::new());
    assert!(c.get(30_001, &id).is_some());
}

#[test]
fn a_request_past_the_max_lifetime_ends_the_session_at_once_and_tells_the_members() {
    let mut c = core(Some(30_000));
    let id = SessionId::from_bytes([7; 16]);
    c.create(0, id, "a".into()).unwrap();
    let mut out = Vec::new();
    assert!(
        c.end_if_too_old(30_000, id, &mut out).is_none(),
        "ended at its lifetime, not after"
    );
    assert!(c.contains(&id) && out.is_empty());
    let (to, msg) = c.end_if_too_old(30_001, id, &mut out).expect("ended past its lifetime");
    assert_eq!(to, vec![MemberId::from_bytes([2; 16])], "the other server is told");
    assert!(matches!(&msg, Msg::Expired(ids) if ids == &vec![id]), "{msg:?}");
    assert!(!c.contains(&id));
    assert_eq!((c.counters.absolute_timeouts, c.counters.expired), (1, 1));
    assert!(
        out.iter().any(|e| matches!(
            e,
            Effect::Event(SessionEvent::Destroyed { id: i, reason: DestroyReason::Expired, origin: Origin::Local }) if *i == id
        )),
        "listeners and the store hear of it: {out:?}"
    );
    assert!(c.end_if_too_old(30_002, id, &mut out).is_none(), "ended once");
    assert_eq!(c.counters.absolute_timeouts, 1);
    // Without a max lifetime, never.
    let mut c = core(None);
    c.create(0, id, "a".into()).unwrap();
    assert!(c.end_if_too_old(u64::MAX / 2, id, &mut out).is_none());
}

// ----- three BackupManager cores and a message pump that delivers in order -----

fn backup_cluster(n: u8, filter: Option<Filter>) -> (Vec<Core>, Vec<MemberId>) {
    let cfg = CoreConfig {
        filter,
        ..CoreConfig::for_tests(ManagerKind::Backup { backup_count: 1 })
    };
    cluster(cfg, n)
}

/// `n` cores that serve together, their state transfers done.
fn cluster(cfg: CoreConfig, n: u8) -> (Vec<Core>, Vec<MemberId>) {
    let cfg = Arc::new(cfg);
    let ids: Vec<MemberId> = (1..=n).map(|i| MemberId::from_bytes([i; 16])).collect();
    let cores = ids
        .iter()
        .map(|me| {
            let mut c = Core::new(cfg.clone(), *me);
            let others = ids.iter().copied().filter(|m| m != me).collect();
            c.handle_servers_changed(others, &mut Vec::new());
            c.finish_transfer(0, &mut Vec::new());
            c
        })
        .collect();
    (cores, ids)
}

/// Delivers `sends` from `from` and everything they cause, in order, at `now`.
fn pump(cores: &mut [Core], ids: &[MemberId], from: usize, sends: Vec<(Vec<MemberId>, Msg)>, now: u64) {
    let mut queue: std::collections::VecDeque<(MemberId, MemberId, Msg)> = sends
        .into_iter()
        .flat_map(|(to, msg)| to.into_iter().map(move |t| (ids[from], t, msg.clone())))
        .collect();
    while let Some((src, dst, msg)) = queue.pop_front() {
        let at = ids.iter().position(|m| *m == dst).expect("a member");
        let mut out = Vec::new();
        cores[at].handle_msg(now, src, msg, &mut out);
        for e in out {
            if let Effect::Send(to, m) = e {
                queue.extend(to.into_iter().map(|t| (dst, t, m.clone())));
            }
        }
    }
}

fn effects_to_sends(out: Vec<Effect>) -> Vec<(Vec<MemberId>, Msg)> {
    out.into_iter()
        .filter_map(|e| match e {
            Effect::Send(to, m) => Some((to, m)),
            Effect::Event(_) | Effect::Expired { .. } | Effect::Evicted { .. } => None,
        })
        .collect()
}

fn blob(v: u8) -> crate::data::Blob {
    crate::data::Blob(vec![v].into())
}

/// Commits `ops` on node `at` as the manager does (base = the copy's version) and
/// delivers what it sends.
fn commit_at(cores: &mut [Core], ids: &[MemberId], at: usize, id: SessionId, ops: Vec<Op>, now: u64) {
    let base = cores[at].get(now, &id).map_or(0, |d| d.version);
    let mut out = Vec::new();
    let c = cores[at].commit(now, id, base, ops, false, &mut out).unwrap();
    pump(cores, ids, at, c.sends, now);
    pump(cores, ids, at, effects_to_sends(out), now);
}

#[test]
fn touches_accumulate_until_the_batch_is_due() {
    // Defect: the core drained the accesses at every tick while the driver sent only
    // one batch per touch interval, so three batches out of four were lost.
    let mut c = core(None);
    let (x, y) = (SessionId::from_bytes([7; 16]), SessionId::from_bytes([8; 16]));
    c.create(0, x, "a".into()).unwrap();
    c.create(0, y, "a".into()).unwrap();
    let touches = |out: &[Effect]| -> Vec<SessionId> {
        out.iter()
            .filter_map(|e| match e {
                Effect::Send(_, Msg::Touches(list)) => Some(list.iter().map(|(id, _)| *id).collect::<Vec<_>>()),
                _ => None,
            })
            .flatten()
            .collect()
    };
    c.touch(100, &x);
    let mut out = Vec::new();
    c.handle_tick(100, &mut out);
    assert_eq!(touches(&out), vec![x], "the first batch leaves at once");
    c.touch(200, &y);
    let mut out = Vec::new();
    c.handle_tick(600, &mut out);
    assert!(touches(&out).is_empty(), "a batch before the interval: {out:?}");
    let mut out = Vec::new();
    c.handle_tick(1_100, &mut out);
    assert_eq!(touches(&out), vec![y], "the access between batches was lost");
}

#[test]
fn a_new_id_under_the_backup_manager_reaches_its_backups_whole_and_the_old_id_is_gone_everywhere() {
    // Defect: the id-change delta went only to the new id's backups; a backup that
    // never held the session built a copy without its attributes, and the old id's
    // backup kept the session alive under the old id.
    let (mut cores, ids) = backup_cluster(3, None);
    let all = ids.clone();
    // A session and a new id whose backups (placement, primary node 0) differ.
    let id_of = |i: u32| {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&i.to_le_bytes());
        SessionId::from_bytes(b)
    };
    let old = id_of(0);
    let backup_of = |id: SessionId| placement::top(&all, id, 1, Some(all[0]));
    let new = (1..1_000)
        .map(id_of)
        .find(|n| backup_of(*n) != backup_of(old))
        .expect("two ids placed apart");
    cores[0].create(0, old, "a".into()).unwrap();
    commit_at(&mut cores, &ids, 0, old, vec![Op::Set("user".into(), blob(1))], 1);
    commit_at(&mut cores, &ids, 0, old, vec![Op::ChangeId(new)], 2);
    for (i, c) in cores.iter().enumerate() {
        assert!(!c.contains(&old), "node {i} still holds the old id");
        if let Some(d) = c.export(&new) {
            assert!(
                d.attr("user").is_some(),
                "node {i} holds the new id without its attributes"
            );
        }
    }
    let backup = placement::top(&all, new, 1, Some(all[0]))[0];
    let at = ids.iter().position(|m| *m == backup).unwrap();
    assert!(cores[at].contains(&new), "the new id's backup has no copy");
}

#[test]
fn round_robin_writes_under_the_backup_manager_never_read_a_stale_copy() {
    // The sync guarantee behind a balancer without affinity: each request goes to the
    // next node, reads (checking its copy with the holders unless it is the primary, as
    // `SessionManager::get` does) and writes n + 1.
    let (mut cores, ids) = backup_cluster(3, None);
    let id = SessionId::from_bytes([42; 16]);
    cores[0].create(0, id, "a".into()).unwrap();
    let now = 60_000; // long after the servers changed
    let value = |d: &SessionData| d.attr("n").map_or(0, |a| a.value.as_ref().map_or(0, |v| v.0[0]));
    for round in 0..30u8 {
        let at = usize::from(round) % 3;
        if !cores[at].is_current_here(&id, now) {
            let ask = cores[at].fetch_targets(&id);
            pump(&mut cores, &ids, at, vec![(ask, Msg::Fetch(id))], now);
        }
        let seen = cores[at].get(now, &id).map_or(0, |d| value(&d));
        assert_eq!(seen, round, "node {at} read {seen} at round {round}");
        commit_at(
            &mut cores,
            &ids,
            at,
            id,
            vec![Op::Set("n".into(), blob(round + 1))],
            now,
        );
    }
}

#[test]
fn a_fetch_is_answered_without_local_only_attributes_and_a_destroyed_session_says_gone() {
    let (mut cores, ids) = backup_cluster(2, Some(Arc::new(|name: &str| name != "local")));
    let id = SessionId::from_bytes([5; 16]);
    cores[0].create(0, id, "a".into()).unwrap();
    commit_at(
        &mut cores,
        &ids,
        0,
        id,
        vec![Op::Set("user".into(), blob(1)), Op::Set("local".into(), blob(2))],
        1,
    );
    let mut out = Vec::new();
    cores[0].handle_msg(2, ids[1], Msg::Fetch(id), &mut out);
    match &out[..] {
        [Effect::Send(to, Msg::FetchReply(d))] => {
            assert_eq!(to, &vec![ids[1]]);
            assert!(d.attr("user").is_some());
            assert!(d.attr("local").is_none(), "a local-only attribute left the node");
        }
        other => panic!("expected one FetchReply, got {other:?}"),
    }
    commit_at(&mut cores, &ids, 0, id, vec![Op::Invalidate], 3);
    let mut out = Vec::new();
    cores[0].handle_msg(4, ids[1], Msg::Fetch(id), &mut out);
    assert!(
        matches!(&out[..], [Effect::Send(_, Msg::FetchMiss { gone: true, .. })]),
        "{out:?}"
    );
}

#[test]
fn a_late_drop_does_not_take_a_copy_fetched_for_a_request() {
    let (mut cores, ids) = backup_cluster(2, None);
    let id = SessionId::from_bytes([6; 16]);
    cores[0].create(0, id, "a".into()).unwrap();
    commit_at(&mut cores, &ids, 0, id, vec![Op::Set("user".into(), blob(1))], 1);
    let data = cores[0].export(&id).unwrap();
    let version = data.version;
    let mut out = Vec::new();
    cores[1].handle_msg(2, ids[0], Msg::FetchReply(data), &mut out);
    // A drop sent before the fetch was answered arrives after it.
    cores[1].handle_msg(3, ids[0], Msg::Drop { id, version }, &mut out);
    assert!(cores[1].contains(&id), "the copy a request is using was dropped");
    // Once no request can be using it, a drop applies.
    cores[1].handle_msg(60_000, ids[0], Msg::Drop { id, version }, &mut out);
    assert!(!cores[1].contains(&id));
}

/// Three BackupManager cores (one backup each) and a session core 0 is primary of, written
/// once; returns the cores, their ids, the session and the core that holds no copy.
fn backup_trio_with_a_session() -> (Vec<Core>, Vec<MemberId>, SessionId, usize) {
    let (mut cores, ids) = backup_cluster(3, None);
    let id = SessionId::from_bytes([6; 16]);
    cores[0].create(0, id, "a".into()).unwrap();
    commit_at(&mut cores, &ids, 0, id, vec![Op::Set("user".into(), blob(1))], 1);
    let outside = (1..3)
        .find(|i| !cores[*i].contains(&id))
        .expect("one core is no backup");
    (cores, ids, id, outside)
}

#[test]
fn a_copy_outside_the_placement_is_dropped_by_a_round_its_holder_starts() {
    let (mut cores, ids, id, stray) = backup_trio_with_a_session();
    // A request on the third node fetched a copy; long after, that node starts the round.
    let data = cores[0].export(&id).unwrap();
    cores[stray].handle_msg(2, ids[0], Msg::FetchReply(data), &mut Vec::new());
    let mut out = Vec::new();
    cores[stray].sync_with(ids[0], &mut out);
    pump(&mut cores, &ids, stray, effects_to_sends(out), 60_000);
    assert!(
        !cores[stray].contains(&id),
        "the copy outside the placement survived the round (the primary's Drop was followed by its copy)"
    );
    assert!(cores[0].contains(&id), "the primary lost its copy");
}

#[test]
fn an_adopt_for_a_session_already_taken_over_drops_the_senders_stray_copy() {
    let (mut cores, ids, id, stray) = backup_trio_with_a_session();
    // The stray node holds an old copy whose primary it believes gone (it missed the
    // take-over), and hands it to the heir, which is primary already.
    let mut old = cores[0].export(&id).unwrap();
    cores[stray].handle_msg(2, ids[0], Msg::FetchReply(old.clone()), &mut Vec::new());
    old.primary = Some(MemberId::from_bytes([9; 16]));
    pump(&mut cores, &ids, stray, vec![(vec![ids[0]], Msg::Adopt(old))], 60_000);
    assert!(
        !cores[stray].contains(&id),
        "the sender of the Adopt keeps its copy (and would send it again every round)"
    );
    assert_eq!(cores[0].export(&id).unwrap().primary, Some(ids[0]));
}

#[test]
fn a_dropped_copy_with_a_write_the_primary_lacks_reaches_the_primary_first() {
    let (mut cores, ids, id, other) = backup_trio_with_a_session();
    // Another node wrote version 3 too (two claims at once, one side's write acknowledged
    // there only): same version number, different writer and attribute.
    let mut theirs = cores[0].export(&id).unwrap();
    theirs.version += 1;
    let stamp = crate::data::Stamp {
        version: theirs.version,
        writer: 99,
    };
    theirs.attrs.push(crate::data::Attr {
        name: "cart".into(),
        value: Some(blob(7)),
        stamp,
    });
    cores[other].handle_msg(2, ids[1], Msg::Full(theirs.clone()), &mut Vec::new());
    commit_at(&mut cores, &ids, 0, id, vec![Op::Set("user".into(), blob(2))], 3);
    // The primary, at the same version number, drops the other copy.
    let version = cores[0].export(&id).unwrap().version;
    assert_eq!(version, theirs.version, "the test needs equal versions");
    pump(
        &mut cores,
        &ids,
        0,
        vec![(vec![ids[other]], Msg::Drop { id, version })],
        60_000,
    );
    assert!(!cores[other].contains(&id));
    let kept = cores[0].export(&id).unwrap();
    assert!(
        kept.attr("cart").is_some_and(|a| a.value == Some(blob(7))),
        "the write only the dropped copy held is lost: {kept:?}"
    );
}

/// A core alone from its start, with or without a store behind it.
fn lone_core(store_backed: bool) -> Core {
    let cfg = Arc::new(CoreConfig {
        max_inactive_ms: 10_000,
        store_backed,
        ..CoreConfig::for_tests(ManagerKind::Delta)
    });
    Core::new(cfg, MemberId::from_bytes([1; 16]))
}

fn expired_events(out: &[Effect]) -> usize {
    out.iter().filter(|e| matches!(e, Effect::Expired { .. })).count()
}

/// Seed 154 of the simulation: after a whole-cluster restart two nodes started on either
/// side of a partition, each loaded the same session from the store, each was a
/// "majority of one", and both delivered its `Expired`.
#[test]
fn a_store_backed_node_that_started_alone_holds_expiry_events_until_it_meets_the_cluster() {
    let id = SessionId::from_bytes([7; 16]);
    // Without a store, a lone node's sessions are its own: it delivers at once.
    let mut c = lone_core(false);
    c.create(0, id, "a".into()).unwrap();
    let mut out = Vec::new();
    c.handle_tick(0, &mut out);
    c.handle_tick(12_000, &mut out);
    assert_eq!(expired_events(&out), 1, "{out:?}");

    // With a store, alone since its start: held through the tombstone time to live.
    let mut c = lone_core(true);
    c.create(0, id, "a".into()).unwrap();
    let mut out = Vec::new();
    c.handle_tick(0, &mut out);
    for t in (12_000..600_000).step_by(50_000) {
        c.handle_tick(t, &mut out);
    }
    assert!(!c.contains(&id), "the session itself expires on time");
    assert_eq!(
        expired_events(&out),
        0,
        "delivered while possibly one half of two: {out:?}"
    );
    assert_eq!(c.pending_expiries(), 1, "the event is held, not lost");
    c.handle_tick(600_000, &mut out);
    assert_eq!(expired_events(&out), 1, "delivered once the wait is over: {out:?}");

    // Meeting a member ends the wait: then the coordinator rule decides (here: this node).
    let mut c = lone_core(true);
    c.create(0, id, "a".into()).unwrap();
    let mut out = Vec::new();
    c.handle_tick(0, &mut out);
    c.handle_tick(12_000, &mut out);
    assert_eq!(expired_events(&out), 0, "{out:?}");
    c.handle_servers_changed(vec![MemberId::from_bytes([2; 16])], &mut out);
    c.handle_tick(20_000, &mut out);
    assert_eq!(expired_events(&out), 1, "{out:?}");
}

/// Two DeltaManager cores that repair each other every second.
fn delta_pair() -> (Vec<Core>, Vec<MemberId>) {
    let cfg = CoreConfig {
        sync_interval_ms: 1_000,
        ..CoreConfig::for_tests(ManagerKind::Delta)
    };
    cluster(cfg, 2)
}

/// Seed 68 of the simulation with id rotation: one side of a partition changed a
/// session's id while the other side wrote to it under the old id; at the heal the
/// repair destroyed the old id's copy, and the acknowledged write with it.
#[test]
fn a_copy_that_missed_a_rotation_merges_into_the_new_id_at_the_repair() {
    let (mut cores, ids) = delta_pair();
    let old = SessionId::from_bytes([1; 16]);
    let new = SessionId::from_bytes([2; 16]);
    cores[0].create(0, old, "a".into()).unwrap();
    commit_at(&mut cores, &ids, 0, old, vec![Op::Set("n".into(), blob(1))], 1);
    assert!(cores[1].contains(&old));
    // Partitioned: node 0 changes the id, node 1 writes; neither send arrives.
    let base = cores[0].get(2, &old).unwrap().version;
    cores[0]
        .commit(2, old, base, vec![Op::ChangeId(new)], false, &mut Vec::new())
        .unwrap();
    let base = cores[1].get(3, &old).unwrap().version;
    cores[1]
        .commit(
            3,
            old,
            base,
            vec![Op::Set("cart".into(), blob(7))],
            false,
            &mut Vec::new(),
        )
        .unwrap();
    // The heal: repair rounds started by either side.
    for (i, t) in [(0, 2_000), (1, 4_000), (0, 6_000), (1, 8_000)] {
        let mut out = Vec::new();
        cores[i].handle_tick(t, &mut out);
        pump(&mut cores, &ids, i, effects_to_sends(out), t);
    }
    for (i, c) in cores.iter().enumerate() {
        assert!(!c.contains(&old), "node {i} still holds the old id");
        let d = c.export(&new).unwrap_or_else(|| panic!("node {i} lacks the new id"));
        assert!(d.attr("n").is_some(), "node {i} lost the write before the rotation");
        assert!(
            d.attr("cart").is_some(),
            "node {i} lost the write made under the old id"
        );
    }
}

/// Seed 930 of the simulation with id rotation: a write made just before a rotation
/// reached a node after a repair had renamed its copy already, and was dropped as a
/// late delta for a destroyed session.
#[test]
fn a_delta_for_an_id_renamed_here_already_applies_to_the_new_id() {
    let (mut cores, ids) = delta_pair();
    let old = SessionId::from_bytes([1; 16]);
    let new = SessionId::from_bytes([2; 16]);
    cores[0].create(0, old, "a".into()).unwrap();
    commit_at(&mut cores, &ids, 0, old, vec![Op::Set("n".into(), blob(1))], 1);
    // Node 0 writes and changes the id in one commit; its delta is late on the wire.
    let base = cores[0].get(2, &old).unwrap().version;
    let late = cores[0]
        .commit(
            2,
            old,
            base,
            vec![Op::Set("n".into(), blob(2)), Op::ChangeId(new)],
            false,
            &mut Vec::new(),
        )
        .unwrap();
    // A repair overtakes it: node 1 renames its copy first.
    let mut out = Vec::new();
    cores[0].send_rename(ids[1], old, new, &mut out);
    pump(&mut cores, &ids, 0, effects_to_sends(out), 3);
    assert!(cores[1].contains(&new) && !cores[1].contains(&old));
    pump(&mut cores, &ids, 0, late.sends, 4);
    let n = cores[1].export(&new).and_then(|d| d.value("n").map(|b| b.to_vec()));
    assert_eq!(n, Some(vec![2]), "the write made with the rotation was dropped");
}
