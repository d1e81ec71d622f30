//! Entry points for the `cargo fuzz` targets in `fuzz/` (built only with `--cfg fuzzing`,
//! which cargo-fuzz sets).

use std::sync::OnceLock;

use axum::http::header::{COOKIE, FORWARDED, HeaderValue};
use axum::http::{HeaderMap, Uri};
use tribes_sessions::SessionId;

use crate::cookie::{self, CookieId, RequestCookie};
use crate::settings::{DEFAULT_COOKIE_NAME, Settings as Config};

/// The largest request header the targets feed (nginx's default `large_client_header_buffers`).
pub const MAX_HEADER_LEN: usize = 8 * 1024;

/// A parsed cookie writes back to the same value, and that value is a valid `Set-Cookie`.
fn round_trip(found: &CookieId) {
    let value = cookie::value(&found.id, found.route.as_deref().unwrap_or(""));
    assert_eq!(
        cookie::parse_value(&value).as_ref(),
        Some(found),
        "{value:?} does not parse back"
    );
    static CONFIG: OnceLock<Config> = OnceLock::new();
    let set = cookie::set(CONFIG.get_or_init(Config::default), &value, true);
    assert!(!set.is_empty(), "no Set-Cookie for {value:?}");
}

/// `cookie_parse`: `data` as the request's `Cookie` headers (one per line) and as a
/// cookie value, read as the layer does; the same lines as `X-Forwarded-Proto` and
/// `Forwarded` headers for the HTTPS detection.
///
/// Promises checked: no panic; a cookie that parses writes back to the same id and
/// route; its route holds only cookie octets; an id has one text only.
pub fn cookie_parse(data: &[u8]) {
    if data.len() > MAX_HEADER_LEN {
        return;
    }
    let mut headers = HeaderMap::new();
    let mut proxies = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(COOKIE, v.clone());
            proxies.append(FORWARDED, v.clone());
            proxies.append("x-forwarded-proto", v);
        }
    }
    for name in [DEFAULT_COOKIE_NAME, "S", ""] {
        if let RequestCookie::Present(found) = cookie::read(&headers, name) {
            if let Some(route) = &found.route {
                assert!(!route.is_empty() && route.bytes().all(cookie::is_route_byte));
            }
            round_trip(&found);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(found) = cookie::parse_value(text) {
            round_trip(&found);
        }
        // Ids are canonical: one text per id.
        if let Ok((id, _)) = SessionId::parse_cookie(text) {
            assert_eq!(id.to_string(), text.split('.').next().unwrap_or(""));
        }
    }
    let uri = Uri::from_static("/");
    let _ = cookie::is_https(&proxies, &uri);
    proxies.remove("x-forwarded-proto");
    let _ = cookie::is_https(&proxies, &uri);
}

/// Cookie headers and values as browsers send them, and broken ones: seeds for `cookie_parse`.
pub fn seed_cookies() -> Vec<(String, Vec<u8>)> {
    let id = SessionId::from_bytes([0xc8; 16]);
    let other = SessionId::from_bytes([7; 16]);
    let n = DEFAULT_COOKIE_NAME;
    let seeds = [
        ("value", format!("{id}")),
        ("value_route", format!("{id}.node-a")),
        ("value_route_port", format!("{id}.n1:8080.x")),
        ("header", format!("{n}={id}.node-a")),
        (
            "header_many",
            format!("theme=dark; {n}={other}.b; lang=en; {n}={id}.node-a"),
        ),
        ("header_malformed_first", format!("{n}=garbage; {n}={id}.a")),
        ("two_headers", format!("a=1; {n}=bad\n{n}={id}.node-c")),
        ("quoted", format!("{n}=\"{id}.node-a\"")),
        ("empty_route", format!("{n}={id}.")),
        ("bad_route", format!("{n}={id}.a\\b")),
        ("short_id", format!("{n}=AAAA.node-a")),
        ("no_equals", format!("{n}; x")),
        ("forwarded", "for=1.2.3.4;proto=https, for=5.6.7.8".to_string()),
        ("proto", "https, http".to_string()),
        ("empty", String::new()),
    ];
    seeds
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_bytes()))
        .collect()
}
