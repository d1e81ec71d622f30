//! The `/cluster/` page: one HTML document, no external assets, every text escaped,
//! charts as inline SVG; a small inline script re-fetches the page every two seconds.

use std::fmt::Write as _;

use crate::dashboard::{ClusterView, Entry, MemberState};
use crate::history::{Metric, chart};
use crate::html::escape;

/// The charts' time span.
const WINDOW_MS: u64 = 5 * 60_000;
/// The shortest span a chart draws, for a member heard from only recently.
const MIN_WINDOW_MS: u64 = 10_000;
/// Events listed.
const EVENTS: usize = 60;

/// `HH:MM:SS` (UTC) of a Unix millisecond time.
pub(crate) fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

/// A duration for people: `45 s`, `3 min 5 s`, `2 h 10 min`.
pub(crate) fn ago(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s / 60) % 60),
    }
}

pub(crate) const STYLE: &str = "\
body{font-family:system-ui,sans-serif;margin:1em 1.5em;color:#1b1b1b;background:#fff}\
header nav{float:right}a:focus-visible{outline:3px solid #1a5fb4;outline-offset:2px}h1{font-size:1.4em;margin:.2em 0}h1 span{font-weight:normal;color:#444}h2{font-size:1.1em;margin:1em 0 .4em}\
#summary{margin:.2em 0;color:#333}#offline{background:#fde7e9;color:#8c1d18;padding:.4em .8em;border-radius:4px}\
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #d0d7de;padding:.3em .5em;text-align:left;vertical-align:top;font-size:.9em}\
thead th{background:#eef1f4;position:sticky;top:0}tbody tr:nth-child(even){background:#fafbfc}\
.route{font-weight:bold;font-size:1.05em}.id,.muted{color:#555;font-size:.85em}\
.badge{display:inline-block;padding:0 .45em;border-radius:3px;font-weight:600}\
.s-ready{background:#dafbe1;color:#116329}.s-not_ready,.s-no_report,.s-silent,.s-suspected{background:#fff1c2;color:#6b4400}.s-gone{background:#ffe1e1;color:#8c1d18}\
tr[data-state=gone] td{color:#555}\
ul.ctx{list-style:none;margin:0;padding:0}ul.ctx li{white-space:nowrap}.chart{display:block}.now{font-size:.8em;color:#333}\
ol#events{list-style:none;padding:0;margin:0}ol#events li{border-left:4px solid #8c959f;padding:.25em .6em;margin:.3em 0;background:#f6f8fa}\
ol#events li.bad{border-color:#b3261e;background:#fff5f5}ol#events li.warn{border-color:#9a6700;background:#fffbea}\
.fix{color:#333;font-size:.9em}.fix b{color:#1b1b1b}time{font-variant-numeric:tabular-nums;color:#444}";

const SCRIPT: &str = "\
(function(){var bad=0;function show(t){var o=document.getElementById('offline');o.hidden=!t;o.textContent=t||'';}\
async function refresh(){try{var r=await fetch(location.href,{cache:'no-store'});if(!r.ok)throw new Error('HTTP '+r.status);\
var d=new DOMParser().parseFromString(await r.text(),'text/html');\
['summary','live'].forEach(function(id){var n=d.getElementById(id);if(n)document.getElementById(id).replaceWith(n);});\
bad=0;show('');}catch(e){bad++;show('This node does not answer ('+e.message+'); the page shows its last update and keeps trying.');}}\
setInterval(refresh,2000);})();";

/// The whole page; `base` is the path the router is mounted at, ending in `/`;
/// `browser`: whether to link the session browser (on).
pub(crate) fn render(view: &ClusterView, now_ms: u64, base: &str, browser: bool) -> String {
    let members = view.ordered();
    let count = |name: &str| members.iter().filter(|e| e.state().name() == name).count();
    let mut h = String::with_capacity(64 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><base href=\"{base}\">\
         <title>tribes cluster, seen from {me}</title><style>{STYLE}</style></head><body>\
         <header><h1>Cluster <span>seen from {me}</span></h1>\
         <nav aria-label=\"Other views\"><a href=\"status\">JSON</a> · <a href=\"status.html\">this node</a>{sessions}</nav>\
         <p id=\"summary\">{n} members: {ready} ready, {not_ready} not ready, {suspected} suspected, \
         {silent} without report, {gone} gone. Updated {at} UTC.</p>\
         <p id=\"offline\" role=\"alert\" hidden></p></header><main id=\"live\">",
        me = escape(&view.local_route),
        base = escape(base),
        sessions = if browser {
            " · <a href=\"sessions\">sessions</a>"
        } else {
            ""
        },
        n = members.len(),
        ready = count("ready"),
        not_ready = count("not_ready"),
        suspected = count("suspected"),
        silent = count("silent") + count("no_report"),
        gone = count("gone"),
        at = clock(now_ms),
    );
    h.push_str(
        "<section aria-labelledby=\"members-h\"><h2 id=\"members-h\">Members</h2>\
         <table id=\"members\"><caption class=\"muted\" style=\"text-align:left\">Charts: up to the last 5 minutes, \
         sampled every second; the text under each chart is the latest value, its label gives the peak.</caption><thead><tr>\
         <th scope=\"col\">Member</th><th scope=\"col\">State</th><th scope=\"col\">Sessions per context</th>\
         <th scope=\"col\">Behind</th><th scope=\"col\">Requests/s</th><th scope=\"col\">Commits/s</th>\
         <th scope=\"col\">Messages/s</th><th scope=\"col\">Bytes/s</th><th scope=\"col\">Acks, failures, timeouts /s</th>\
         </tr></thead><tbody>",
    );
    for e in &members {
        row(&mut h, view, e, now_ms);
    }
    h.push_str("</tbody></table></section>");
    h.push_str("<section aria-labelledby=\"events-h\"><h2 id=\"events-h\">Events, newest first</h2><ol id=\"events\">");
    let events = view.all_events(EVENTS);
    if events.is_empty() {
        h.push_str("<li class=\"info\">Nothing happened yet.</li>");
    }
    for ev in events {
        let sev = ev.severity();
        let _ = write!(
            h,
            "<li class=\"{class}\" data-member=\"{member}\" data-severity=\"{class}\"><time>{at}</time> \
             <b>{member}</b>{context}: {words}{seen}",
            class = sev.class(),
            at = clock(ev.at_ms),
            member = escape(&ev.member),
            context = ev
                .context()
                .map(|c| format!(" <span class=\"muted\">[context {}]</span>", escape(c)))
                .unwrap_or_default(),
            words = escape(&ev.words()),
            seen = if ev.observer == ev.member {
                String::new()
            } else {
                format!(" <span class=\"muted\">(seen by {})</span>", escape(&ev.observer))
            },
        );
        if let Some(fix) = ev.fix() {
            let _ = write!(h, "<div class=\"fix\"><b>Fix:</b> {}</div>", escape(&fix));
        }
        h.push_str("</li>");
    }
    h.push_str("</ol></section></main>");
    let _ = write!(h, "<script>{SCRIPT}</script></body></html>");
    h
}

fn row(h: &mut String, view: &ClusterView, e: &Entry, now_ms: u64) {
    let state = e.state();
    let is_local = e.id == view.local_id;
    let _ = write!(
        h,
        "<tr id=\"member-{route}\" data-route=\"{route}\" data-state=\"{state}\">\
         <th scope=\"row\"><span class=\"route\">{route}</span>{local}<div class=\"muted\">{addr}</div>\
         <div class=\"id\">id {id}</div></th>",
        route = escape(&e.route),
        state = state.name(),
        local = if is_local {
            " <span class=\"muted\">(this node)</span>"
        } else {
            ""
        },
        addr = escape(&e.addr),
        id = escape(&e.id),
    );
    let since = format!(
        "since {} UTC ({} ago)",
        clock(state.since_ms()),
        ago(now_ms.saturating_sub(state.since_ms()))
    );
    let (badge, detail) = match state {
        MemberState::Ready { .. } => ("ready", since),
        MemberState::NotReady { .. } => ("not ready", format!("state transfer running, {since}")),
        MemberState::NoReport { .. } => (
            "no report",
            format!("listed by membership {since}; sends no status report (another build, or starting)"),
        ),
        MemberState::Silent { last_report_ms } => (
            "silent",
            format!(
                "last report {} ago: it may be overloaded or cut off",
                ago(now_ms.saturating_sub(last_report_ms))
            ),
        ),
        MemberState::Suspected { silent_ms, cause, .. } => {
            ("suspected", format!("{since}: {}", cause.words(silent_ms)))
        }
        MemberState::Gone { at_ms, reason } => ("gone", format!("at {} UTC: {}", clock(at_ms), reason.words())),
    };
    let _ = write!(
        h,
        "<td><span class=\"badge s-{}\">{badge}</span><div class=\"muted state-detail\">{}</div></td><td>",
        state.name(),
        escape(&detail)
    );
    match &e.report {
        Some((_, r)) if !matches!(state, MemberState::Gone { .. }) => {
            h.push_str("<ul class=\"ctx\">");
            for c in &r.contexts {
                let store = match &c.store {
                    Some(s) if s.healthy == Some(false) => " <span class=\"badge s-gone\">store down</span>",
                    _ => "",
                };
                let _ = write!(
                    h,
                    "<li data-context=\"{ctx}\"><b>{ctx}</b> {n}{nr} <span class=\"muted\">{kind}</span>{store}</li>",
                    ctx = escape(&c.context),
                    n = c.sessions,
                    nr = if c.ready { "" } else { " (not ready)" },
                    kind = escape(&c.manager),
                );
            }
            h.push_str("</ul>");
        }
        Some((_, r)) => {
            let total: u64 = r.contexts.iter().map(|c| c.sessions).sum();
            let _ = write!(h, "<span class=\"muted\">held {total} when last heard</span>");
        }
        None => h.push_str("<span class=\"muted\">unknown</span>"),
    }
    h.push_str("</td><td>");
    if is_local {
        h.push_str("<span class=\"muted\">this node</span>");
    } else if matches!(state, MemberState::Gone { .. }) {
        h.push_str("<span class=\"muted\">gone</span>");
    } else {
        let (queue, last_ack) = view.lag(&e.id);
        let queue = queue.map_or_else(|| "queue unknown".to_owned(), |q| format!("queue {q}"));
        let ack = last_ack.map_or_else(
            || "no ack yet (async sends are not acked)".to_owned(),
            |at| format!("last ack {} ago", ago(now_ms.saturating_sub(at))),
        );
        let _ = write!(h, "{}<div class=\"muted\">{}</div>", escape(&queue), escape(&ack));
    }
    h.push_str("</td>");
    let charts: [&[Metric]; 5] = [
        &[Metric::Requests],
        &[Metric::Commits],
        &[Metric::Messages],
        &[Metric::Bytes],
        &[Metric::Acks, Metric::Failures, Metric::Timeouts],
    ];
    // A gone member's charts end where its reports ended.
    let end = e.history.last_at().unwrap_or(now_ms).max(match state {
        MemberState::Gone { .. } => 0,
        _ => now_ms,
    });
    // Until five minutes are known, the charts span what is known (at least 10 s).
    let window = end
        .saturating_sub(e.history.first_at().unwrap_or(end))
        .clamp(MIN_WINDOW_MS, WINDOW_MS);
    for metrics in charts {
        let _ = write!(h, "<td>{}</td>", chart(&e.route, &e.history, metrics, end, window));
    }
    h.push_str("</tr>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_and_ago() {
        assert_eq!(clock(3_600_000 * 25 + 61_500), "01:01:01");
        assert_eq!(ago(59_999), "59 s");
        assert_eq!(ago(185_000), "3 min 5 s");
        assert_eq!(ago(7_800_000), "2 h 10 min");
    }
}
