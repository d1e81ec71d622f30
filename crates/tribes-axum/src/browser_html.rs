//! The session browser's page: the look of `/cluster/` (its style sheet), no script,
//! nothing loaded from elsewhere, every text escaped, every control labelled.

use std::fmt::Write as _;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::backend::Invalidation;
use crate::browser_net::{MemberAnswer, SessionView};
use crate::clock::now_ms;
use crate::dashboard_html::{STYLE, ago, clock};
use crate::html::escape;

const EXTRA_STYLE: &str = "\
:focus-visible{outline:3px solid #1a5fb4;outline-offset:2px}\
form.find{display:flex;flex-wrap:wrap;gap:.5em 1em;align-items:center}\
input,select{font:inherit;padding:.25em .4em;border:1px solid #57606a;border-radius:4px;color:#1b1b1b;background:#fff}\
button{font:inherit;padding:.3em .9em;border:1px solid #1a5fb4;background:#1a5fb4;color:#fff;border-radius:4px;cursor:pointer}\
button.danger{background:#a4161a;border-color:#a4161a}form.act{margin:1em 0}\
.problem{background:#fde7e9;color:#8c1d18;padding:.4em .8em;border-radius:4px}\
.done{background:#dafbe1;color:#116329;padding:.4em .8em;border-radius:4px}\
code{font-family:ui-monospace,monospace;white-space:pre-wrap;word-break:break-all}\
table.kv{width:auto}h3{font-size:1em;margin:1em 0 .3em}";

/// The query of a lookup (and the fields of the invalidation form).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Find {
    pub(crate) context: Option<String>,
    pub(crate) hash: Option<String>,
}

/// One member's part of a lookup.
#[derive(Debug, Serialize)]
pub(crate) struct MemberRow {
    pub(crate) route: String,
    pub(crate) local: bool,
    #[serde(flatten)]
    pub(crate) answer: MemberAnswer,
}

/// A lookup: every member's answer, this node first.
#[derive(Debug, Serialize)]
pub(crate) struct Lookup {
    pub(crate) schema_version: u32,
    pub(crate) node: String,
    pub(crate) context: String,
    pub(crate) log_id: String,
    /// The routes of the members holding it.
    pub(crate) holders: Vec<String>,
    pub(crate) members: Vec<MemberRow>,
}

impl Lookup {
    /// The copy to show: this node's if it holds one, else the newest, with the route
    /// of the member it comes from.
    pub(crate) fn session(&self) -> Option<(&str, &SessionView)> {
        fn first(m: &MemberRow) -> Option<(&str, &SessionView)> {
            match &m.answer {
                MemberAnswer::Holds { sessions } => sessions.first().map(|s| (m.route.as_str(), s)),
                _ => None,
            }
        }
        self.members
            .iter()
            .filter(|m| m.local)
            .find_map(first)
            .or_else(|| self.members.iter().filter_map(first).max_by_key(|(_, s)| s.version))
    }

    /// The most sessions one member holds with this hash (more than one: a collision).
    pub(crate) fn most_per_member(&self) -> usize {
        self.members
            .iter()
            .map(|m| match &m.answer {
                MemberAnswer::Holds { sessions } => sessions.len(),
                _ => 0,
            })
            .max()
            .unwrap_or(0)
    }
}

/// The result of the invalidation form.
#[derive(Debug, Serialize)]
pub(crate) struct InvalidateResult {
    pub(crate) schema_version: u32,
    pub(crate) node: String,
    pub(crate) context: String,
    pub(crate) log_id: String,
    #[serde(flatten)]
    pub(crate) outcome: Invalidation,
}

/// A request the browser cannot serve: what was wrong, as a status and words.
#[derive(Debug)]
pub(crate) struct Problem {
    pub(crate) status: StatusCode,
    pub(crate) words: String,
}

/// Percent-encodes a query component.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// `HH:MM:SS UTC (… ago)`.
fn when(ms: u64) -> String {
    format!("{} UTC ({} ago)", clock(ms), ago(now_ms().saturating_sub(ms)))
}

/// The whole page: the search form, then `section` (a result, or nothing).
pub(crate) fn page(route: &str, base: &str, contexts: &[String], find: &Find, section: &str) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><base href=\"{base}\">\
         <title>tribes session browser on {route}</title><style>{STYLE}{EXTRA_STYLE}</style></head><body>\
         <header><h1>Session browser <span>on {route}</span></h1>\
         <nav aria-label=\"Other views\"><a href=\"./\">cluster</a> · <a href=\"status.html\">this node</a></nav>\
         <p id=\"summary\">Find a session by its log hash, the short form logs and pages show \
         (such as #1a2b3c4d); its id stays secret.</p></header><main>\
         <section aria-labelledby=\"find-h\"><h2 id=\"find-h\">Find a session</h2>\
         <form class=\"find\" method=\"get\" action=\"sessions\">\
         <label for=\"hash\">Log hash</label>\
         <input id=\"hash\" name=\"hash\" value=\"{hash}\" required autocomplete=\"off\" spellcheck=\"false\" \
         size=\"12\" pattern=\"#?[0-9a-fA-F]{{8}}\" aria-describedby=\"hash-help\">\
         <label for=\"context\">Context</label><select id=\"context\" name=\"context\">",
        base = escape(base),
        route = escape(route),
        hash = escape(find.hash.as_deref().unwrap_or_default()),
    );
    let chosen = find.context.as_deref();
    for (i, c) in contexts.iter().enumerate() {
        let selected = chosen.map_or(i == 0, |x| x == c);
        let _ = write!(
            h,
            "<option value=\"{c}\"{sel}>{c}</option>",
            c = escape(c),
            sel = if selected { " selected" } else { "" }
        );
    }
    h.push_str(
        "</select><button type=\"submit\">Look up</button></form>\
         <p id=\"hash-help\" class=\"muted\"># and 8 hex digits. Every member is asked which copies it \
         holds; values are shown only for the attributes the application lets this page show.</p></section>",
    );
    h.push_str(section);
    h.push_str("</main></body></html>");
    h
}

/// A request that could not be served.
pub(crate) fn problem(p: &Problem) -> String {
    format!(
        "<section aria-labelledby=\"result-h\"><h2 id=\"result-h\">Nothing looked up</h2>\
         <p role=\"alert\" class=\"problem\">{}</p></section>",
        escape(&p.words)
    )
}

fn answer_cells(a: &MemberAnswer) -> (&'static str, String, String, String) {
    match a {
        MemberAnswer::Holds { sessions } if sessions.is_empty() => {
            ("none", "does not hold it".into(), "-".into(), "-".into())
        }
        MemberAnswer::Holds { sessions } => {
            let s = &sessions[0];
            let extra = if sessions.len() > 1 {
                format!(" ({} sessions share this hash)", sessions.len())
            } else if s.primary {
                String::new()
            } else {
                " (a backup copy)".into()
            };
            (
                "holds",
                format!("holds it{extra}"),
                s.version.to_string(),
                when(s.last_access_ms),
            )
        }
        MemberAnswer::NoContext => (
            "no_context",
            "does not serve this context".into(),
            "-".into(),
            "-".into(),
        ),
        MemberAnswer::NoAnswer => (
            "no_answer",
            "not answering (no answer in time: busy, cut off, or without a status router)".into(),
            "-".into(),
            "-".into(),
        ),
        MemberAnswer::NotDelivered { cause } => {
            ("not_delivered", format!("not reached: {cause}"), "-".into(), "-".into())
        }
    }
}

/// A lookup's result: the session, its attributes, who holds it, and the button.
pub(crate) fn lookup(l: &Lookup, shown: &[String]) -> String {
    let mut h = String::with_capacity(8 * 1024);
    let _ = write!(
        h,
        "<section aria-labelledby=\"result-h\"><h2 id=\"result-h\">Session {hash} <span class=\"muted\">in context {ctx}</span></h2>",
        hash = escape(&l.log_id),
        ctx = escape(&l.context),
    );
    match l.session() {
        None => {
            let _ = write!(
                h,
                "<p role=\"status\" id=\"outcome\" data-found=\"false\">No member that answered holds a session with log hash {} \
                 in context {}: it expired or was invalidated, or the hash is mistyped.</p>",
                escape(&l.log_id),
                escape(&l.context)
            );
        }
        Some((from, s)) => {
            let _ = write!(
                h,
                "<p role=\"status\" id=\"outcome\" data-found=\"true\">Held by {}.</p>\
                 <table class=\"kv\" id=\"session\" aria-label=\"The session, as {} holds it\"><tbody>\
                 <tr><th scope=\"row\">Version</th><td>{}</td></tr>\
                 <tr><th scope=\"row\">Created</th><td>{}</td></tr>\
                 <tr><th scope=\"row\">Last access</th><td>{} <span class=\"muted\">(as known on {}; accesses travel in batches)</span></td></tr>\
                 <tr><th scope=\"row\">Idle timeout</th><td>{}</td></tr>\
                 <tr><th scope=\"row\">Bound to route</th><td>{}</td></tr></tbody></table>",
                escape(&l.holders.join(", ")),
                escape(from),
                s.version,
                when(s.created_ms),
                when(s.last_access_ms),
                escape(from),
                ago(s.max_inactive_s * 1000),
                escape(&s.route),
            );
            let _ = write!(
                h,
                "<h3 id=\"attrs-h\">Attributes ({})</h3><table id=\"attributes\" aria-labelledby=\"attrs-h\"><thead><tr>\
                 <th scope=\"col\">Name</th><th scope=\"col\">Kind</th><th scope=\"col\">Size</th><th scope=\"col\">Value</th>\
                 </tr></thead><tbody>",
                s.attributes.len()
            );
            if s.attributes.is_empty() {
                h.push_str("<tr><td colspan=\"4\">none</td></tr>");
            }
            for a in &s.attributes {
                let value = match &a.value {
                    Some(v) => format!("<code>{}</code>", escape(v)),
                    None if shown.iter().any(|n| n == &a.name) => "<span class=\"muted\">not sent</span>".into(),
                    None => {
                        "<span class=\"muted\">hidden (the application does not let this page show it)</span>".into()
                    }
                };
                let _ = write!(
                    h,
                    "<tr data-name=\"{n}\"><td>{n}</td><td>{k}</td><td>{len} B</td><td>{value}</td></tr>",
                    n = escape(&a.name),
                    k = a.kind,
                    len = a.len,
                );
            }
            h.push_str("</tbody></table>");
            let _ = write!(
                h,
                "<form class=\"act\" method=\"post\" action=\"sessions/invalidate\">\
                 <input type=\"hidden\" name=\"context\" value=\"{ctx}\"><input type=\"hidden\" name=\"hash\" value=\"{hash}\">\
                 <button type=\"submit\" class=\"danger\" id=\"invalidate\">Invalidate on every node</button> \
                 <span class=\"muted\">The user is logged out at their next request, on whichever node.</span></form>",
                ctx = escape(&l.context),
                hash = escape(&l.log_id),
            );
        }
    }
    h.push_str(
        "<h3 id=\"members-h\">Members</h3><table id=\"members\" aria-labelledby=\"members-h\"><thead><tr>\
         <th scope=\"col\">Member</th><th scope=\"col\">Answer</th><th scope=\"col\">Version</th><th scope=\"col\">Last access</th>\
         </tr></thead><tbody>",
    );
    for m in &l.members {
        let (code, words, version, access) = answer_cells(&m.answer);
        let _ = write!(
            h,
            "<tr data-route=\"{r}\" data-answer=\"{code}\"><th scope=\"row\">{r}{local}</th><td>{words}</td><td>{version}</td><td>{access}</td></tr>",
            r = escape(&m.route),
            local = if m.local {
                " <span class=\"muted\">(this node)</span>"
            } else {
                ""
            },
            words = escape(&words),
            access = escape(&access),
        );
    }
    h.push_str("</tbody></table></section>");
    h
}

/// The invalidation's result.
pub(crate) fn invalidated(r: &InvalidateResult) -> String {
    let (class, code, words) = match &r.outcome {
        Invalidation::Invalidated { by } => (
            "done",
            "invalidated",
            format!(
                "Session {} invalidated on {by} and replicated like any invalidation: it is gone on every node.",
                r.log_id
            ),
        ),
        Invalidation::NotConfirmed { by, cause } => (
            "problem",
            "not_confirmed",
            format!(
                "Session {} invalidated on {by}, but not every member confirmed it ({cause}); they learn it with the next messages.",
                r.log_id
            ),
        ),
        Invalidation::NotFound => (
            "problem",
            "not_found",
            format!(
                "No member holds a session with log hash {} in context {}: nothing to invalidate.",
                r.log_id, r.context
            ),
        ),
        Invalidation::Ambiguous { sessions } => (
            "problem",
            "ambiguous",
            format!(
                "{sessions} sessions share the log hash {}: nothing was invalidated (a hash collision; \
                 the sessions end at their idle timeout).",
                r.log_id
            ),
        ),
    };
    format!(
        "<section aria-labelledby=\"result-h\"><h2 id=\"result-h\">Invalidate session {hash}</h2>\
         <p role=\"status\" id=\"outcome\" class=\"{class}\" data-outcome=\"{code}\">{words}</p>\
         <p><a href=\"sessions?context={qctx}&amp;hash={qhash}\">Look it up again</a></p></section>",
        hash = escape(&r.log_id),
        words = escape(&words),
        qctx = query_escape(&r.context),
        qhash = query_escape(&r.log_id),
    )
}
