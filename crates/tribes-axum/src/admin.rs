//! The session browser's credential: [`AdminToken`], and the check of each request.
//!
//! Requests authenticate with HTTP Basic (any user name, the token as the password) or
//! `Authorization: Bearer TOKEN`. The challenge is Basic: it is the scheme a browser
//! answers with its own login dialog, so the page needs no script and no secret ever
//! appears in a URL or in the page; scripts send Bearer. Both compare SHA-256 digests
//! of the given and configured tokens in constant time (`subtle`), so neither the
//! token's content nor its length leaks through timing.

use std::fmt;
use std::path::{Path, PathBuf};

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The shortest admin token accepted, in bytes.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// The secret that turns the session browser on (see
/// [`StatusRouter::with_admin_token`](crate::StatusRouter::with_admin_token)).
///
/// Only its SHA-256 digest is kept; `Debug` shows nothing of it. Give it to the status
/// router from a file or a secret store, never on a command line or in a URL.
///
/// # Examples
/// ```
/// use tribes_axum::AdminToken;
/// let token = AdminToken::new("correct horse battery staple").unwrap();
/// assert_eq!(format!("{token:?}"), "AdminToken(..)");
/// assert!(AdminToken::new("short").is_err());
/// ```
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// An admin token that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminTokenError {
    /// Too short to resist guessing.
    #[error(
        "the admin token has {len} bytes, fewer than {min}: use a long random one (such as `openssl rand -hex 24`)"
    )]
    TooShort {
        /// Its length.
        len: usize,
        /// The minimum, [`MIN_ADMIN_TOKEN_LEN`].
        min: usize,
    },
    /// The token file cannot be read.
    #[error("cannot read the admin token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl AdminToken {
    /// A token from its text.
    ///
    /// # Errors
    /// [`AdminTokenError::TooShort`] under [`MIN_ADMIN_TOKEN_LEN`] bytes.
    pub fn new(secret: impl AsRef<str>) -> Result<AdminToken, AdminTokenError> {
        let secret = secret.as_ref();
        if secret.len() < MIN_ADMIN_TOKEN_LEN {
            return Err(AdminTokenError::TooShort {
                len: secret.len(),
                min: MIN_ADMIN_TOKEN_LEN,
            });
        }
        Ok(AdminToken {
            digest: Sha256::digest(secret.as_bytes()).into(),
        })
    }

    /// A token from the first line of a file (surrounding white space removed).
    ///
    /// # Errors
    /// [`AdminTokenError::Read`], or [`AdminTokenError::TooShort`].
    pub fn from_file(path: &Path) -> Result<AdminToken, AdminTokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| AdminTokenError::Read {
            path: path.to_owned(),
            source,
        })?;
        AdminToken::new(text.lines().next().unwrap_or_default().trim())
    }

    /// Whether a request's headers carry this token: the HTTP Basic password (any user
    /// name) or `Authorization: Bearer TOKEN`, compared as SHA-256 digests in constant
    /// time, as the session browser does. For an app's own admin routes, such as a list
    /// of who is logged in where ([`Session::sessions_of`](crate::Session::sessions_of)).
    ///
    /// It checks the credential only: a route that changes something should also refuse
    /// requests from other sites (the session browser checks `Sec-Fetch-Site`/`Origin`).
    ///
    /// # Examples
    /// ```
    /// use axum::http::{HeaderMap, HeaderValue, header};
    /// use tribes_axum::AdminToken;
    /// let token = AdminToken::new("correct horse battery staple").unwrap();
    /// let mut headers = HeaderMap::new();
    /// assert!(!token.authorizes(&headers));
    /// headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer correct horse battery staple"));
    /// assert!(token.authorizes(&headers));
    /// ```
    pub fn authorizes(&self, headers: &HeaderMap) -> bool {
        credential(headers).is_some_and(|given| self.matches(&given))
    }

    fn matches(&self, given: &[u8]) -> bool {
        let d: [u8; 32] = Sha256::digest(given).into();
        d.ct_eq(&self.digest).into()
    }
}

/// Why a request to the session browser is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No token configured: the browser is off (404).
    Off,
    /// No credential in the request (401).
    Missing,
    /// A credential that is not the token (401).
    Wrong,
    /// A state-changing request from another site (403): a page elsewhere cannot make a
    /// logged-in browser invalidate sessions.
    CrossSite,
}

impl Denied {
    pub(crate) fn words(self) -> &'static str {
        match self {
            Denied::Off => "the session browser is off",
            Denied::Missing => "no credential",
            Denied::Wrong => "wrong credential",
            Denied::CrossSite => "cross-site request",
        }
    }
}

/// The credential a request carries, if any: the Basic password or the Bearer token.
fn credential(headers: &HeaderMap) -> Option<Vec<u8>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.as_bytes().to_vec());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest).ok()?;
        let colon = decoded.iter().position(|b| *b == b':')?;
        return Some(decoded[colon + 1..].to_vec());
    }
    None
}

/// Whether a request that changes something comes from a page of this origin: the
/// browser's `Sec-Fetch-Site`, else `Origin` against `Host`. A client that sends neither
/// (a script) is not a browser that could be tricked.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.to_str(), Ok("same-origin" | "none"));
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let authority = origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, a)| a);
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

/// Checks a request against the configured token.
pub(crate) fn check(token: Option<&AdminToken>, method: &Method, headers: &HeaderMap) -> Result<(), Denied> {
    let token = token.ok_or(Denied::Off)?;
    let given = credential(headers).ok_or(Denied::Missing)?;
    if !token.matches(&given) {
        return Err(Denied::Wrong);
    }
    if *method != Method::GET && *method != Method::HEAD && !same_origin(headers) {
        return Err(Denied::CrossSite);
    }
    Ok(())
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        let (status, text) = match self {
            Denied::Off => (
                StatusCode::NOT_FOUND,
                "Not found: the session browser is off on this node. It turns on with an admin token: \
                 StatusRouter::with_admin_token in code, status.admin_token_file in the configuration file \
                 (or TRIBES_STATUS_ADMIN_TOKEN_FILE), --admin-token-file for tribes-demo. See docs/session-browser.md.\n",
            ),
            Denied::Missing | Denied::Wrong => (
                StatusCode::UNAUTHORIZED,
                "Unauthorized: the session browser needs the admin token. In a browser, log in with any user name \
                 and the token as the password; from a script, send Authorization: Bearer TOKEN.\n",
            ),
            Denied::CrossSite => (
                StatusCode::FORBIDDEN,
                "Forbidden: a session browser action must come from the session browser's own page \
                 (this request came from another site).\n",
            ),
        };
        let mut r = (status, text).into_response();
        let h = r.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if matches!(self, Denied::Missing | Denied::Wrong) {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tribes session browser\", charset=\"UTF-8\""),
            );
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef-secret";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    #[test]
    fn off_missing_wrong_and_right() {
        let token = AdminToken::new(SECRET).unwrap();
        let get = Method::GET;
        assert_eq!(check(None, &get, &headers(&[])), Err(Denied::Off));
        assert_eq!(
            check(None, &get, &headers(&[("authorization", &format!("Bearer {SECRET}"))])),
            Err(Denied::Off),
            "no token configured: off, whatever the request says"
        );
        assert_eq!(check(Some(&token), &get, &headers(&[])), Err(Denied::Missing));
        assert_eq!(
            check(Some(&token), &get, &headers(&[("authorization", "Digest abc")])),
            Err(Denied::Missing)
        );
        for wrong in [
            "Bearer 0123456789abcdef-secreT".to_owned(),
            "Bearer ".to_owned() + &SECRET[..10],
            basic("admin", "nope"),
            basic(SECRET, ""),
        ] {
            assert_eq!(
                check(Some(&token), &get, &headers(&[("authorization", &wrong)])),
                Err(Denied::Wrong),
                "{wrong}"
            );
        }
        for right in [
            format!("Bearer {SECRET}"),
            format!("bearer  {SECRET}"),
            basic("admin", SECRET),
            basic("", SECRET),
        ] {
            assert_eq!(
                check(Some(&token), &get, &headers(&[("authorization", &right)])),
                Ok(()),
                "{right}"
            );
        }
    }

    #[test]
    fn changes_from_another_site_are_refused() {
        let token = AdminToken::new(SECRET).unwrap();
        let auth = basic("admin", SECRET);
        let post = Method::POST;
        type Case = (&'static [(&'static str, &'static str)], Result<(), Denied>);
        let cases: [Case; 6] = [
            (&[], Ok(())),
            (&[("sec-fetch-site", "same-origin")], Ok(())),
            (&[("sec-fetch-site", "cross-site")], Err(Denied::CrossSite)),
            (
                &[("origin", "http://127.0.0.1:8081"), ("host", "127.0.0.1:8081")],
                Ok(()),
            ),
            (
                &[("origin", "http://evil.example"), ("host", "127.0.0.1:8081")],
                Err(Denied::CrossSite),
            ),
            (
                &[("origin", "null"), ("host", "127.0.0.1:8081")],
                Err(Denied::CrossSite),
            ),
        ];
        for (extra, expected) in cases {
            let mut h = headers(extra);
            h.insert("authorization", HeaderValue::from_str(&auth).unwrap());
            assert_eq!(check(Some(&token), &post, &h), expected, "{extra:?}");
        }
        let mut h = headers(&[("sec-fetch-site", "cross-site")]);
        h.insert("authorization", HeaderValue::from_str(&auth).unwrap());
        assert_eq!(check(Some(&token), &Method::GET, &h), Ok(()), "reading changes nothing");
    }

    #[test]
    fn responses_say_what_to_do() {
        let r = Denied::Off.into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
        let r = Denied::Wrong.into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(
            r.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Basic realm=")
        );
        assert_eq!(Denied::CrossSite.into_response().status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn tokens_from_files() {
        let dir = std::env::temp_dir().join(format!("tribes-admin-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, format!("{SECRET}\n")).unwrap();
        let token = AdminToken::from_file(&path).unwrap();
        assert!(token.matches(SECRET.as_bytes()), "the newline is not part of it");
        std::fs::write(&path, "short\n").unwrap();
        assert!(matches!(
            AdminToken::from_file(&path),
            Err(AdminTokenError::TooShort { len: 5, .. })
        ));
        let e = AdminToken::from_file(&dir.join("missing")).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
