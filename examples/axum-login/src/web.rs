//! The pages: a login form, a protected page, logout.

use axum::Form;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::users::{AuthSession, Credentials};

/// The login page's query: where to go next.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

/// `GET /login`: the form.
pub(crate) async fn login_form(Query(q): Query<LoginQuery>) -> Html<String> {
    form(q.next.as_deref(), false)
}

fn form(next: Option<&str>, failed: bool) -> Html<String> {
    let next = next.filter(|n| is_local_path(n)).unwrap_or("/");
    let message = if failed {
        r#"<p class="error">Wrong user name or password.</p>"#
    } else {
        ""
    };
    Html(format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Log in</title></head>
<body>
<h1>Log in</h1>
{message}
<form method="post" action="/login">
  <label>User <input name="username" autocomplete="username" required></label>
  <label>Password <input name="password" type="password" autocomplete="current-password" required></label>
  <input type="hidden" name="next" value="{next}">
  <button type="submit">Log in</button>
</form>
</body></html>
"#,
        next = escape(next)
    ))
}

/// `POST /login`: checks the password; on success a new session id (axum-login cycles it,
/// against fixation) holding the user, replicated before the redirect is sent.
pub(crate) async fn login(mut auth: AuthSession, Form(creds): Form<Credentials>) -> Response {
    let next = creds
        .next
        .clone()
        .filter(|n| is_local_path(n))
        .unwrap_or_else(|| "/".into());
    let user = match auth.authenticate(creds).await {
        Ok(Some(user)) => user,
        Ok(None) => return (StatusCode::UNAUTHORIZED, form(Some(&next), true)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "login failed");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    if let Err(e) = auth.login(&user).await {
        tracing::error!(error = %e, user = %user.name, "the session could not be saved");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    Redirect::to(&next).into_response()
}

/// `GET /`: only for logged-in users (`login_required!` redirects the others to the form).
pub(crate) async fn protected(auth: AuthSession) -> Response {
    match auth.user {
        Some(user) => Html(format!(
            r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Protected</title></head>
<body>
<h1>Hello, <span id="user">{}</span></h1>
<form method="post" action="/logout"><button type="submit">Log out</button></form>
</body></html>
"#,
            escape(&user.name)
        ))
        .into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

/// `POST /logout`: the session is deleted on every node.
pub(crate) async fn logout(mut auth: AuthSession) -> Response {
    match auth.logout().await {
        Ok(_) => Redirect::to("/login").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "logout failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Only paths of this app: `next=https://elsewhere` would make the form an open redirect.
fn is_local_path(next: &str) -> bool {
    next.starts_with('/') && !next.starts_with("//") && !next.contains('\\')
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_a_local_path_only() {
        assert!(is_local_path("/"));
        assert!(is_local_path("/account?tab=1"));
        assert!(!is_local_path("https://evil.example/"));
        assert!(!is_local_path("//evil.example/"));
        assert!(!is_local_path("/\\evil.example"));
        assert_eq!(escape(r#""><script>"#), "&quot;&gt;&lt;script&gt;");
    }
}
