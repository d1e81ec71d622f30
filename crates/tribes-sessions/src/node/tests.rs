//! Unit tests of the node's decisions: the startup, greetings, and both sides of a
//! state transfer, driven by hand with time as an argument.

use std::net::SocketAddr;

use super::*;
use crate::id::SessionId;
use crate::kind::ManagerKind;

fn member(i: u8, started_at_ms: u64) -> Member {
    let addr = SocketAddr::from(([127, 0, 0, i], 4000));
    Member::new(MemberId::from_bytes([i; 16]), format!("n{i}"), "d", addr, started_at_ms)
}

fn at(ms: u64) -> Now {
    Now {
        wall_ms: 1_000_000 + ms,
        mono_ms: ms,
    }
}

fn node(local: Member) -> SessionNode {
    let core = Arc::new(CoreConfig {
        max_inactive_ms: 60_000,
        ..CoreConfig::for_tests(ManagerKind::Delta)
    });
    let cfg = NodeConfig {
        local,
        shared: false,
        transfer: JoinTimeouts {
            attempt_ms: 1_000,
            total_ms: 10_000,
            retry_ms: 100,
        },
        discovery_wait_ms: 500,
        chunk_size: 2,
        tick_ms: 500,
        regreet_every_ms: 2_000,
        fetch_timeout_ms: 1_000,
    };
    SessionNode::new(cfg, core, at(0))
}

/// The acknowledged sends among `outputs`: (token, to, message).
fn acked(outputs: &[Output]) -> Vec<(u64, MemberId, Msg)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send(Transmit { to, msg, ack: Some(a) }) => Some((a.token, to[0], msg.clone())),
            _ => None,
        })
        .collect()
}

/// A serving node that received nothing (it is alone), with `others` as members.
fn serving_alone(others: &[Member]) -> SessionNode {
    let mut n = node(member(1, 100));
    n.handle_timeout(at(500));
    let out = n.drain_outputs();
    assert!(matches!(out.as_slice(), [Output::Transferred(Ok(()))]), "{out:?}");
    n.serve(at(500), false);
    for m in others {
        n.handle_member_up(at(600), m.clone(), false);
    }
    n
}

#[test]
fn a_starting_node_greets_every_member_then_receives_from_the_oldest_server_then_serves() {
    let mut n = node(member(1, 300));
    n.handle_member_up(at(10), member(2, 100), false);
    n.handle_member_up(at(10), member(3, 200), false);
    assert!(n.drain_outputs().is_empty(), "greeted before discovery settled");
    n.handle_discovery_settled();
    n.handle_timeout(at(20));
    let hellos = acked(&n.drain_outputs());
    assert_eq!(hellos.len(), 2, "{hellos:?}");
    assert!(hellos.iter().all(|(_, _, m)| matches!(m, Msg::Hello)));
    // One ack: still greeting (the joiner must know every server first).
    n.handle_send_result(at(30), hellos[0].0, Delivered::Acked);
    assert!(acked(&n.drain_outputs()).is_empty());
    n.handle_send_result(at(40), hellos[1].0, Delivered::Acked);
    let ask = acked(&n.drain_outputs());
    let [(token, to, Msg::GetAll { request })] = ask.as_slice() else {
        panic!("expected one GetAll, got {ask:?}")
    };
    assert_eq!(*to, member(2, 100).id(), "the oldest server is asked first");
    n.handle_send_result(at(50), *token, Delivered::Acked);
    n.handle_message(
        at(60),
        *to,
        Msg::Done {
            request: *request,
            sessions: 0,
        },
    );
    let out = n.drain_outputs();
    assert!(out.iter().any(|o| matches!(o, Output::Transferred(Ok(())))), "{out:?}");
    assert!(!n.is_serving(), "serves before the driver loaded its store");
    n.serve(at(70), false);
    assert!(n.is_serving());
    assert_eq!(n.transfer_stats().from, vec!["n2".to_string()]);
}

#[test]
fn a_get_all_before_serving_is_answered_not_ready() {
    let mut n = node(member(1, 100));
    n.handle_message(at(10), member(2, 50).id(), Msg::GetAll { request: 7 });
    let out = n.drain_outputs();
    assert!(
        matches!(
            out.as_slice(),
            [Output::Send(Transmit {
                msg: Msg::NotReady { request: 7 },
                ack: None,
                ..
            })]
        ),
        "{out:?}"
    );
}

#[test]
fn a_member_whose_hello_is_not_answered_is_still_asked_for_the_sessions() {
    let mut n = node(member(1, 300));
    n.handle_member_up(at(10), member(2, 100), false);
    n.handle_timeout(at(500));
    let hello = acked(&n.drain_outputs());
    n.handle_send_result(at(2_500), hello[0].0, Delivered::TimedOut(2_000));
    let ask = acked(&n.drain_outputs());
    assert!(
        matches!(ask.as_slice(), [(_, to, Msg::GetAll { .. })] if *to == member(2, 100).id()),
        "a blocked replication port made the node skip the member: {ask:?}"
    );
}

/// Seed 100 of the simulation with id rotation: a joiner's `Hello` to the only member was
/// lost, it received that member's sessions all the same, then served without counting
/// it as a server, so a sync-ack write there was acknowledged with no copy elsewhere and
/// a round-robin read on the other node went back.
#[test]
fn a_member_that_streamed_its_sessions_to_a_joiner_is_a_server_of_the_joiner() {
    let mut n = node(member(1, 300));
    let source = member(2, 100).id();
    n.handle_member_up(at(10), member(2, 100), false);
    n.handle_timeout(at(500));
    let hello = acked(&n.drain_outputs());
    n.handle_send_result(at(2_500), hello[0].0, Delivered::TimedOut(2_000));
    let ask = acked(&n.drain_outputs());
    let [(token, _, Msg::GetAll { request })] = ask.as_slice() else {
        panic!("expected one GetAll, got {ask:?}")
    };
    n.handle_send_result(at(2_550), *token, Delivered::Acked);
    n.handle_message(
        at(2_600),
        source,
        Msg::Done {
            request: *request,
            sessions: 0,
        },
    );
    n.drain_outputs();
    n.serve(at(2_600), false);
    assert!(
        n.core().servers().contains(&source),
        "served without replicating to the member it received its sessions from"
    );
}

#[test]
fn a_snapshot_streams_chunk_after_acked_chunk_then_done_and_stops_on_a_failure() {
    let joiner = member(2, 900);
    let mut n = serving_alone(std::slice::from_ref(&joiner));
    let hello = acked(&n.drain_outputs());
    n.handle_send_result(at(700), hello[0].0, Delivered::Acked);
    for i in 0..5u8 {
        let id = SessionId::from_bytes([i + 10; 16]);
        n.core_mut().create(1_000_800, id, "n1".into()).unwrap();
    }
    n.drain_outputs();
    n.handle_message(at(800), joiner.id(), Msg::GetAll { request: 1 });
    let mut chunks = 0;
    loop {
        let sent = acked(&n.drain_outputs());
        let [(token, _, msg)] = sent.as_slice() else {
            panic!("one message at a time, got {sent:?}")
        };
        match msg {
            Msg::Chunk { sessions, .. } => {
                chunks += 1;
                assert!(sessions.len() <= 2);
                n.handle_send_result(at(900), *token, Delivered::Acked);
            }
            Msg::Done { sessions, .. } => {
                assert_eq!(*sessions, 5);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(chunks, 3);
    // A failed chunk ends the stream: the joiner asks again or another member.
    n.handle_message(at(1_000), joiner.id(), Msg::GetAll { request: 2 });
    let first = acked(&n.drain_outputs());
    n.handle_send_result(at(1_100), first[0].0, Delivered::Failed("connection reset".into()));
    assert!(n.drain_outputs().is_empty());
}

#[test]
fn a_hello_from_a_member_the_membership_removed_does_not_make_it_a_server() {
    let other = member(2, 50);
    let mut n = serving_alone(std::slice::from_ref(&other));
    n.drain_outputs();
    n.handle_member_down(at(700), other.id());
    n.handle_message(at(800), other.id(), Msg::Hello);
    assert!(!n.core().servers().contains(&other.id()));
}

#[test]
fn members_not_known_to_serve_the_context_are_greeted_again_each_interval() {
    let other = member(2, 50);
    let mut n = serving_alone(std::slice::from_ref(&other));
    let hello = acked(&n.drain_outputs());
    n.handle_send_result(at(700), hello[0].0, Delivered::Refused("no listener".into()));
    assert!(!n.core().servers().contains(&other.id()));
    assert!(
        n.poll_timeout() <= 2_500,
        "no timer for the greeting: {}",
        n.poll_timeout()
    );
    n.handle_timeout(at(2_500));
    let again = acked(&n.drain_outputs());
    assert!(
        matches!(again.as_slice(), [(_, to, Msg::Hello)] if *to == other.id()),
        "{again:?}"
    );
    n.handle_send_result(at(2_600), again[0].0, Delivered::Acked);
    assert!(n.core().servers().contains(&other.id()));
}

#[test]
fn a_hello_from_a_process_the_membership_has_not_heard_yet_makes_it_a_server_until_proved_absent() {
    let mut n = serving_alone(&[]);
    let (early, never) = (member(2, 900), member(3, 950));
    // A node that just started greets before its heartbeats went round: it gets every
    // write from now on (else it would serve stale copies).
    n.handle_message(at(700), early.id(), Msg::Hello);
    n.handle_message(at(700), never.id(), Msg::Hello);
    assert!(n.core().servers().contains(&early.id()));
    assert!(n.core().servers().contains(&never.id()));
    n.handle_member_up(at(900), early.clone(), false);
    n.handle_timeout(at(700 + servers::PROVISIONAL_MS));
    assert!(n.core().servers().contains(&early.id()), "a member was dropped");
    assert!(
        !n.core().servers().contains(&never.id()),
        "a process the membership never listed stays a server"
    );
}

#[test]
fn a_process_that_greeted_but_never_joined_does_not_hold_back_expiry_events() {
    let mut n = serving_alone(&[member(2, 200)]);
    // Two restarts that greeted and crashed before the membership heard them: for a while
    // the cluster looked four strong.
    n.handle_message(at(700), member(3, 650).id(), Msg::Hello);
    n.handle_message(at(700), member(4, 660).id(), Msg::Hello);
    let id = SessionId::from_bytes([5; 16]);
    n.core_mut().create(at(1_000).wall_ms, id, "n1".into()).unwrap();
    n.handle_timeout(at(1_000));
    n.drain_outputs();
    // The session idles out after 60 s; the two never joined, so two of two members
    // are a majority and its event is delivered, not held for the tombstone ttl.
    let delivered = (2_000..200_000).step_by(500).any(|t| {
        n.handle_timeout(at(t));
        n.drain_outputs()
            .iter()
            .any(|o| matches!(o, Output::Expired { id: e, .. } if *e == id))
    });
    assert!(
        delivered,
        "the expiry event is held: processes that never joined still count in the cluster's size"
    );
}
