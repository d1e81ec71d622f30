//! Tests of the dashboard's plain-data view: reports, silence, departures, events, rendering.

use super::*;

fn report(route: &str, at_ms: u64, requests: u64, contexts: usize) -> Vec<u8> {
    let r = Report {
        v: REPORT_VERSION,
        route: route.into(),
        addr: format!("127.0.0.1:{}", 4000 + route.len()),
        at_ms,
        ready: true,
        ready_since_ms: 1_000,
        contexts: (0..contexts)
            .map(|i| ContextReport {
                context: format!("/app{i}"),
                manager: "delta".into(),
                ready: true,
                sessions: 10 + i as u64,
                store: None,
            })
            .collect(),
        counters: Counters {
            requests,
            ..Counters::default()
        },
        peers: vec![PeerLag {
            id: "A-ID".into(),
            route: "a".into(),
            queue_depth: 3,
            last_ack_ms: Some(at_ms - 500),
        }],
        events: vec![Event {
            at_ms: 1_500,
            member: route.into(),
            observer: route.into(),
            kind: EventKind::Ready {
                context: "/app0".into(),
                transfer_ms: Some(80),
                sessions: 10,
                from: vec!["a".into()],
                attempts: vec![],
            },
        }],
    };
    serde_json::to_vec(&r).unwrap()
}

fn local(ready: bool) -> LocalSample {
    LocalSample {
        contexts: vec![(
            ContextReport {
                context: "/app0".into(),
                manager: "delta".into(),
                ready,
                sessions: 1,
                store: None,
            },
            tribes_sessions::TransferStats::default(),
        )],
        ..LocalSample::default()
    }
}

#[test]
fn reports_make_members_ready_with_history_lag_and_their_events() {
    let mut v = ClusterView::new("A-ID".into(), "a".into(), "127.0.0.1:1".into(), 0);
    v.observe_local(1_000, local(true));
    v.handle_live(1_000, "B-ID".into(), "b", "127.0.0.1:2".into(), true);
    assert_eq!(v.members["B-ID"].state(), MemberState::NoReport { since_ms: 1_000 });
    for i in 0..5 {
        v.handle_report(2_000 + i * 1_000, "B-ID", &report("b", 2_000 + i * 1_000, i * 7, 1))
            .unwrap();
    }
    assert_eq!(v.members["B-ID"].state(), MemberState::Ready { since_ms: 1_000 });
    assert_eq!(
        v.members["B-ID"].history.rates(crate::history::Metric::Requests).last(),
        Some(&(6_000, 7.0))
    );
    // b's view of a: queue 3, acked half a second before its report.
    assert_eq!(v.lag("A-ID"), (Some(3), Some(5_500)));
    let words: Vec<String> = v.all_events(10).iter().map(|e| e.words()).collect();
    assert!(
        words
            .iter()
            .any(|w| w.contains("state transfer of 10 sessions from a in 80 ms")),
        "{words:?}"
    );
    assert!(
        words.iter().any(|w| w == "b joined the cluster from 127.0.0.1:2"),
        "{words:?}"
    );
    assert_eq!(
        v.ordered().iter().map(|e| e.route.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
}

#[test]
fn silence_gone_and_back_are_states_and_events() {
    let mut v = ClusterView::new("A-ID".into(), "a".into(), "127.0.0.1:1".into(), 0);
    v.handle_report(1_000, "C-ID", &report("c", 1_000, 0, 1)).unwrap();
    v.tick(1_000 + SILENT_AFTER_MS);
    assert!(matches!(v.members["C-ID"].state(), MemberState::Ready { .. }));
    v.tick(1_001 + SILENT_AFTER_MS);
    assert_eq!(v.members["C-ID"].state(), MemberState::Silent { last_report_ms: 1_000 });
    v.handle_report(5_000, "C-ID", &report("c", 5_000, 0, 1)).unwrap();
    assert!(matches!(v.members["C-ID"].state(), MemberState::Ready { .. }));
    v.handle_gone(6_000, "C-ID", "c", GoneReason::ConnectionLost);
    assert_eq!(
        v.members["C-ID"].state(),
        MemberState::Gone {
            at_ms: 6_000,
            reason: GoneReason::ConnectionLost
        }
    );
    // A gone member's queue no longer counts, and it is forgotten after a while.
    assert_eq!(v.lag("A-ID"), (None, None));
    let kinds: Vec<&EventKind> = v.events.iter().map(|e| &e.kind).collect();
    assert!(
        matches!(
            kinds[..],
            [EventKind::Silent { .. }, EventKind::Reporting, EventKind::Gone { .. }]
        ),
        "{kinds:?}"
    );
    v.tick(6_000 + KEEP_GONE_MS);
    assert!(!v.members.contains_key("C-ID"));
    v.handle_live(7_000, "C-ID".into(), "c", "x".into(), true);
    v.handle_gone(7_500, "C-ID", "c", GoneReason::Silent);
    v.handle_live(8_000, "C-ID".into(), "c", "x".into(), true);
    assert!(matches!(v.events.iter().last().unwrap().kind, EventKind::Back { .. }));
}

#[test]
fn bad_reports_are_refused_and_change_nothing() {
    let mut v = ClusterView::new("A-ID".into(), "a".into(), "127.0.0.1:1".into(), 0);
    assert!(matches!(
        v.handle_report(1, "X", b"garbage"),
        Err(ReportError::Decode(_))
    ));
    let big = vec![b' '; MAX_REPORT_LEN + 1];
    assert_eq!(
        v.handle_report(1, "X", &big),
        Err(ReportError::TooLong {
            len: MAX_REPORT_LEN + 1
        })
    );
    let mut r: serde_json::Value = serde_json::from_slice(&report("x", 1_000, 0, 1)).unwrap();
    r["v"] = serde_json::json!(99);
    assert_eq!(
        v.handle_report(1, "X", r.to_string().as_bytes()),
        Err(ReportError::Version(99))
    );
    assert_eq!(v.members.len(), 1);
}

#[test]
fn local_transitions_become_events_and_ready_since() {
    let mut v = ClusterView::new("A-ID".into(), "a".into(), "127.0.0.1:1".into(), 0);
    let r = v.observe_local(1_000, local(false));
    assert_eq!((r.ready, r.ready_since_ms), (false, 0));
    let r = v.observe_local(2_000, local(true));
    assert_eq!((r.ready, r.ready_since_ms), (true, 2_000));
    let mut s = local(true);
    s.refused = vec![("127.0.0.1:9".into(), 1, "sealed with another cluster key".into())];
    v.observe_local(3_000, s.clone());
    let r = v.observe_local(4_000, s);
    let kinds: Vec<&str> = r
        .events
        .iter()
        .map(|e| match e.kind {
            EventKind::NotReady { .. } => "not ready",
            EventKind::Ready { .. } => "ready",
            EventKind::Refused { .. } => "refused",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        ["not ready", "ready", "refused"],
        "a refusal is reported once per new count"
    );
    assert_eq!(v.members["A-ID"].state(), MemberState::Ready { since_ms: 2_000 });
}

#[test]
fn twenty_members_of_five_contexts_render_every_row() {
    let mut v = ClusterView::new("A-ID".into(), "a".into(), "127.0.0.1:1".into(), 0);
    v.observe_local(1_000, local(true));
    for m in 0..19 {
        let route = format!("node-{m:02}");
        for i in 0..60u64 {
            v.handle_report(
                i * 1_000,
                &format!("ID{m}"),
                &report(&route, 1_000 + i * 1_000, i * i, 5),
            )
            .unwrap();
        }
    }
    let html = crate::dashboard_html::render(&v, 61_000, "/cluster/", false);
    assert_eq!(html.matches("<tr id=\"member-").count(), 20);
    assert_eq!(html.matches("data-state=\"ready\"").count(), 20);
    assert_eq!(html.matches("<li data-context=").count(), 19 * 5 + 1);
    assert_eq!(html.matches("<svg class=\"chart\"").count(), 20 * 5);
    assert!(html.len() < 600 * 1024, "{} bytes", html.len());
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing loaded from elsewhere"
    );
}

#[test]
fn a_suspected_member_shows_since_when_and_why_until_cleared_or_gone() {
    let mut v = ClusterView::new("A-ID".into(), "a".into(), "127.0.0.1:1".into(), 0);
    v.observe_local(1_000, local(true));
    v.handle_report(1_000, "C-ID", &report("c", 1_000, 0, 1)).unwrap();
    v.handle_suspected(3_000, "C-ID", "c", 2_100, SuspectCause::Silent);
    let suspected = MemberState::Suspected {
        since_ms: 3_000,
        silent_ms: 2_100,
        cause: SuspectCause::Silent,
    };
    assert_eq!(v.members["C-ID"].state(), suspected);
    // Its status reports do not clear it: only membership does.
    v.handle_report(3_500, "C-ID", &report("c", 3_500, 0, 1)).unwrap();
    assert_eq!(v.members["C-ID"].state(), suspected);
    let html = crate::dashboard_html::render(&v, 5_000, "/cluster/", false);
    assert!(html.contains("2 members: 1 ready, 0 not ready, 1 suspected,"), "{html}");
    let row = &html[html.find("<tr id=\"member-c\"").unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains("data-state=\"suspected\""), "{row}");
    assert!(
        row.contains("<span class=\"badge s-suspected\">suspected</span>"),
        "{row}"
    );
    assert!(
        row.contains("since 00:00:03 UTC (2 s ago): no heartbeat for 2.1 s; verifying over TCP"),
        "{row}"
    );
    assert!(html.contains("c is suspected: no heartbeat for 2.1 s; verifying over TCP"));

    v.handle_cleared(6_000, "C-ID", "c");
    assert!(matches!(v.members["C-ID"].state(), MemberState::Ready { .. }));
    // Killed: its connection closes, the check finds nothing, within one millisecond.
    v.handle_suspected(7_000, "C-ID", "c", 400, SuspectCause::ConnectionLost);
    v.handle_gone(7_000, "C-ID", "c", GoneReason::ConnectionLost);
    assert!(matches!(v.members["C-ID"].state(), MemberState::Gone { .. }));
    let newest: Vec<String> = v.all_events(4).iter().map(|e| e.words()).collect();
    assert!(newest[0].starts_with("c is gone: its connection closed"), "{newest:?}");
    assert_eq!(newest[1], "c is suspected: its connection closed; verifying over TCP");
    assert!(newest[2].ends_with("no longer suspected"), "{newest:?}");
    assert!(newest[3].starts_with("c is suspected: no heartbeat"), "{newest:?}");
    // Back: no longer suspected.
    v.handle_live(8_000, "C-ID".into(), "c", "x".into(), true);
    assert!(matches!(v.members["C-ID"].state(), MemberState::Ready { .. }));
}

#[test]
fn a_suspicion_whose_clearing_was_missed_ends_with_the_next_sample() {
    let mut v = ClusterView::new("A-ID".into(), "a".into(), "127.0.0.1:1".into(), 0);
    v.handle_report(1_000, "C-ID", &report("c", 1_000, 0, 1)).unwrap();
    v.handle_suspected(2_000, "C-ID", "c", 2_000, SuspectCause::Silent);
    let mut still = local(true);
    still.suspected = vec!["C-ID".into()];
    v.observe_local(2_500, still);
    assert!(matches!(v.members["C-ID"].state(), MemberState::Suspected { .. }));
    v.observe_local(3_000, local(true));
    assert!(matches!(v.members["C-ID"].state(), MemberState::Ready { .. }));
}
