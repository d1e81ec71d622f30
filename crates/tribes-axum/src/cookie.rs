//! The session cookie: reading `id.route` from a request and writing `Set-Cookie`.

use std::time::Duration;

use axum::http::header::{COOKIE, FORWARDED, HeaderValue};
use axum::http::{HeaderMap, Uri};
use tribes_sessions::SessionId;

use crate::settings::{SameSite, Secure, Settings as Config};

/// A well-formed session cookie found on a request: the base id and the route suffix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CookieId {
    pub(crate) id: SessionId,
    pub(crate) route: Option<String>,
}

/// What the request's cookies say about the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RequestCookie {
    /// No cookie of that name.
    Missing,
    /// A cookie of that name whose value is not `id` or `id.route`: treated as no session.
    Malformed,
    /// A well-formed cookie.
    Present(CookieId),
}

/// Finds the session cookie among the request's `Cookie` headers.
///
/// The first well-formed cookie of that name wins (browsers send the most specific path
/// first); a malformed one is only reported when no well-formed one exists.
pub(crate) fn read(headers: &HeaderMap, name: &str) -> RequestCookie {
    let mut found = RequestCookie::Missing;
    for value in headers.get_all(COOKIE) {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for cookie in ::cookie::Cookie::split_parse(text).flatten() {
            if cookie.name() != name {
                continue;
            }
            match parse_value(cookie.value()) {
                Some(id) => return RequestCookie::Present(id),
                None => found = RequestCookie::Malformed,
            }
        }
    }
    found
}

/// Parses a cookie value `id` or `id.route`.
pub(crate) fn parse_value(value: &str) -> Option<CookieId> {
    let (id, route) = SessionId::parse_cookie(value).ok()?;
    let route = match route {
        Some(r) if r.is_empty() || !r.bytes().all(is_route_byte) => return None,
        Some(r) => Some(r.to_owned()),
        None => None,
    };
    Some(CookieId { id, route })
}

/// A byte allowed in a cookie value (RFC 6265 `cookie-octet`).
pub(crate) fn is_route_byte(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

/// The cookie value for a session: `id.route`, or `id` if the route is empty.
pub(crate) fn value(id: &SessionId, route: &str) -> String {
    if route.is_empty() {
        id.to_string()
    } else {
        format!("{id}.{route}")
    }
}

/// Whether the request came over HTTPS: `X-Forwarded-Proto`, `Forwarded: proto=` or the URI scheme.
pub(crate) fn is_https(headers: &HeaderMap, uri: &Uri) -> bool {
    if let Some(proto) = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) {
        // A chain of proxies appends: the first is the client's.
        let first = proto.split(',').next().unwrap_or("").trim();
        return first.eq_ignore_ascii_case("https");
    }
    if let Some(fwd) = headers.get(FORWARDED).and_then(|v| v.to_str().ok()) {
        let first = fwd.split(',').next().unwrap_or("");
        for pair in first.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=')
                && k.trim().eq_ignore_ascii_case("proto")
            {
                return v.trim().trim_matches('"').eq_ignore_ascii_case("https");
            }
        }
    }
    uri.scheme_str() == Some("https")
}

/// The `Set-Cookie` value carrying a session.
pub(crate) fn set(config: &Config, value: &str, https: bool) -> HeaderValue {
    build(config, value.to_owned(), https, config.max_age)
}

/// The `Set-Cookie` value removing the session cookie (`Max-Age=0`).
pub(crate) fn remove(config: &Config, https: bool) -> HeaderValue {
    build(config, String::new(), https, Some(Duration::ZERO))
}

fn build(config: &Config, value: String, https: bool, max_age: Option<Duration>) -> HeaderValue {
    let mut c = ::cookie::Cookie::new(config.cookie_name.clone(), value);
    c.set_path(config.cookie_path.clone());
    if let Some(domain) = &config.cookie_domain {
        c.set_domain(domain.clone());
    }
    c.set_http_only(config.http_only);
    let secure = match config.secure {
        Secure::Always => true,
        Secure::Never => false,
        Secure::Auto => https,
    };
    c.set_secure(secure);
    c.set_same_site(match config.same_site {
        SameSite::Strict => ::cookie::SameSite::Strict,
        SameSite::Lax => ::cookie::SameSite::Lax,
        SameSite::None => ::cookie::SameSite::None,
    });
    if let Some(age) = max_age {
        let secs = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
        c.set_max_age(::cookie::time::Duration::seconds(secs));
        if age.is_zero() {
            c.set_expires(::cookie::time::OffsetDateTime::UNIX_EPOCH);
        }
    }
    // Names, paths and domains were checked when the layer was built; ids and routes
    // are URL-safe, so the encoded cookie is always a valid header value.
    HeaderValue::from_str(&c.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> SessionId {
        SessionId::from_bytes([7; 16])
    }

    #[test]
    fn parses_and_rejects() {
        let v = format!("{}.node-a", id());
        assert_eq!(
            parse_value(&v),
            Some(CookieId {
                id: id(),
                route: Some("node-a".into())
            })
        );
        assert_eq!(parse_value(&id().to_string()).unwrap().route, None);
        assert_eq!(parse_value("garbage"), None);
        assert_eq!(parse_value(&format!("{}.", id())), None);
        assert_eq!(parse_value(&format!("{}.a b", id())), None);
        assert_eq!(parse_value(&format!("{}.a;b", id())), None);
        assert_eq!(
            parse_value(&format!("{}.n1:8080.x", id())).unwrap().route.as_deref(),
            Some("n1:8080.x")
        );
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(&format!("x=1; S=bad; S={v}")).unwrap());
        assert!(matches!(read(&h, "S"), RequestCookie::Present(_)));
        assert_eq!(read(&h, "T"), RequestCookie::Missing);
        h.insert(COOKIE, HeaderValue::from_static("S=bad"));
        assert_eq!(read(&h, "S"), RequestCookie::Malformed);
    }

    #[test]
    fn https_detection() {
        let uri: Uri = "/x".parse().unwrap();
        let mut h = HeaderMap::new();
        assert!(!is_https(&h, &uri));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https, http"));
        assert!(is_https(&h, &uri));
        let mut h = HeaderMap::new();
        h.insert(FORWARDED, HeaderValue::from_static("for=1.2.3.4;proto=https"));
        assert!(is_https(&h, &uri));
        assert!(is_https(&HeaderMap::new(), &"https://a/x".parse().unwrap()));
    }
}
