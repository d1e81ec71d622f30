//! The pages: a login form, a protected page, a password change, logout.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use tribes_sessions::SessionManager;

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
<form method="post" action="/password">
  <label>Current password <input name="current" type="password" autocomplete="current-password" required></label>
  <label>New password <input name="new" type="password" autocomplete="new-password" required></label>
  <button type="submit">Change the password (logs out every device)</button>
</form>
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

/// The password change form.
#[derive(Deserialize)]
pub(crate) struct PasswordChange {
    current: String,
    new: String,
}

/// `POST /password`: checks the current password, sets the new one, then logs the user
/// out everywhere: every session of the user ends on every node
/// ([`SessionManager::invalidate_principal`]; the store gives each session its user as
/// principal, see `main.rs`), this one included, so every device logs in again with the
/// new password. Without it, a node whose users still hold the old hash would keep the
/// other devices logged in (axum-login compares the session's hash with the user's only
/// where the user changed).
pub(crate) async fn change_password(
    State(manager): State<SessionManager>,
    mut auth: AuthSession,
    Form(change): Form<PasswordChange>,
) -> Response {
    let Some(user) = auth.user.clone() else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let check = Credentials {
        username: user.name.clone(),
        password: change.current,
        next: None,
    };
    match auth.authenticate(check).await {
        Ok(Some(_)) => {}
        Ok(None) => return (StatusCode::FORBIDDEN, "the current password is wrong\n").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "password check failed");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    }
    if change.new.len() < 8 {
        return (StatusCode::BAD_REQUEST, "the new password needs 8 characters or more\n").into_response();
    }
    if let Err(e) = auth.backend.set_password(&user.name, change.new).await {
        tracing::error!(error = %e, "password change failed");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    match manager.invalidate_principal(&user.name).await {
        Ok(report) => {
            tracing::info!(user = %user.name, ended_here = report.ended_here, members = report.members.len(), "password changed: logged out everywhere")
        }
        Err(e) => {
            tracing::error!(error = %e, user = %user.name, "log out everywhere failed after a password change");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    }
    // This session ended with the others: drop it here too (tower-sessions removes the cookie).
    let _ = auth.logout().await;
    Redirect::to("/login").into_response()
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
