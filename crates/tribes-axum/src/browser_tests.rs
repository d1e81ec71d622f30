//! Tests of the session browser's plain parts: which copy is shown, the page's text.

use super::*;
use crate::browser_net::{AttributeView, SessionView};
use tribes_sessions::ValueKind;

fn view(version: u64, primary: bool) -> SessionView {
    SessionView {
        log_id: "#0badcafe".into(),
        version,
        created_ms: 1_000,
        last_access_ms: 2_000,
        max_inactive_s: 1800,
        route: "a".into(),
        primary,
        attributes: vec![
            AttributeView {
                name: "count".into(),
                len: 1,
                kind: ValueKind::Integer,
                value: Some("7".into()),
            },
            AttributeView {
                name: "<user>".into(),
                len: 12,
                kind: ValueKind::Map,
                value: None,
            },
        ],
    }
}

fn row(route: &str, local: bool, answer: MemberAnswer) -> MemberRow {
    MemberRow {
        route: route.into(),
        local,
        answer,
    }
}

fn lookup_of(members: Vec<MemberRow>) -> Lookup {
    Lookup {
        schema_version: SCHEMA_VERSION,
        node: "b".into(),
        context: "demo".into(),
        log_id: "#0badcafe".into(),
        holders: members
            .iter()
            .filter(|m| matches!(&m.answer, MemberAnswer::Holds { sessions } if !sessions.is_empty()))
            .map(|m| m.route.clone())
            .collect(),
        members,
    }
}

#[test]
fn the_local_copy_is_shown_else_the_newest() {
    let l = lookup_of(vec![
        row(
            "b",
            true,
            MemberAnswer::Holds {
                sessions: vec![view(3, true)],
            },
        ),
        row(
            "a",
            false,
            MemberAnswer::Holds {
                sessions: vec![view(5, true)],
            },
        ),
    ]);
    assert_eq!(l.session().map(|(r, s)| (r, s.version)), Some(("b", 3)));
    let l = lookup_of(vec![
        row("b", true, MemberAnswer::Holds { sessions: vec![] }),
        row(
            "a",
            false,
            MemberAnswer::Holds {
                sessions: vec![view(4, false)],
            },
        ),
        row(
            "c",
            false,
            MemberAnswer::Holds {
                sessions: vec![view(5, true)],
            },
        ),
        row("d", false, MemberAnswer::NoAnswer),
    ]);
    assert_eq!(l.session().map(|(r, s)| (r, s.version)), Some(("c", 5)));
    assert_eq!(l.most_per_member(), 1);
    let none = lookup_of(vec![row("b", true, MemberAnswer::Holds { sessions: vec![] })]);
    assert!(none.session().is_none());
}

#[test]
fn the_page_names_holders_escapes_and_hides_values_not_opted_in() {
    let l = lookup_of(vec![
        row(
            "b",
            true,
            MemberAnswer::Holds {
                sessions: vec![view(3, true)],
            },
        ),
        row(
            "a",
            false,
            MemberAnswer::Holds {
                sessions: vec![view(3, false)],
            },
        ),
        row("c", false, MemberAnswer::NoAnswer),
        row("d", false, MemberAnswer::NoContext),
    ]);
    let h = browser_html::lookup(&l, &["count".to_owned()]);
    assert!(h.contains("Held by b, a."), "{h}");
    assert!(
        h.contains("<tr data-name=\"count\"><td>count</td><td>integer</td><td>1 B</td><td><code>7</code>"),
        "{h}"
    );
    assert!(h.contains("&lt;user&gt;") && !h.contains("<user>"), "escaped: {h}");
    assert!(
        h.contains("hidden (the application does not let this page show it)"),
        "{h}"
    );
    assert!(h.contains("data-route=\"c\" data-answer=\"no_answer\""), "{h}");
    assert!(h.contains("not answering"), "{h}");
    assert!(h.contains("data-route=\"d\" data-answer=\"no_context\""), "{h}");
    assert!(h.contains("(a backup copy)"), "{h}");
    assert!(h.contains("action=\"sessions/invalidate\""), "{h}");
    let page = browser_html::page("b", "/cluster/", &["demo".into(), "cart".into()], &Find::default(), &h);
    assert!(page.contains("<base href=\"/cluster/\">"), "{page}");
    assert!(page.contains("<label for=\"hash\">") && page.contains("<label for=\"context\">"));
    assert!(!page.contains("<script"), "no script on the browser page");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "nothing from elsewhere"
    );
}

#[test]
fn results_of_an_invalidation_in_words() {
    let r = InvalidateResult {
        schema_version: SCHEMA_VERSION,
        node: "b".into(),
        context: "a b".into(),
        log_id: "#0badcafe".into(),
        outcome: Invalidation::Invalidated { by: "a".into() },
    };
    let h = browser_html::invalidated(&r);
    assert!(h.contains("data-outcome=\"invalidated\""), "{h}");
    assert!(h.contains("invalidated on a"), "{h}");
    assert!(
        h.contains("href=\"sessions?context=a%20b&amp;hash=%230badcafe\""),
        "{h}"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["outcome"], "invalidated");
    assert_eq!(json["by"], "a");
}

#[test]
fn the_base_is_the_mount_point() {
    assert_eq!(base_of("/cluster/sessions"), "/cluster/");
    assert_eq!(base_of("/cluster/sessions/invalidate"), "/cluster/");
    assert_eq!(base_of("/sessions"), "/");
}
