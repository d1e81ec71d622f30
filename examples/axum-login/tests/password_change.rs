//! A password change logs the user out on every device and every node: three real
//! `tribes-axum-login` processes; the user logs in from two browsers (on a and on b);
//! the first changes the password on a; the second browser's cookie is then logged out on
//! every node. b and c are asked first: their users still hold the old password hash (a
//! password change here is kept by the node that served it), so axum-login alone would
//! keep the second browser logged in there; only the store's principal and
//! `SessionManager::invalidate_principal` end that session.

mod common;

use common::*;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION};

const NEW_PASSWORD: &str = "a brand new password";

/// `POST /password` on `base` with the session `cookie`: the status and the redirect.
async fn change_password(base: &str, cookie: &str, current: &str) -> (StatusCode, String) {
    let client = no_redirects();
    let r = client
        .post(format!("{base}/password"))
        .header(COOKIE, format!("{COOKIE_NAME}={cookie}"))
        .form(&[("current", current), ("new", NEW_PASSWORD)])
        .send()
        .await
        .unwrap();
    let location = r
        .headers()
        .get(LOCATION)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (r.status(), location)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_logs_the_other_browser_out_on_every_node() {
    let (dir, nodes) = three_nodes("password").await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let first = log_in(&a.url(""), PASSWORD)
        .await
        .expect("the first browser logs in on a");
    let second = log_in(&b.url(""), PASSWORD)
        .await
        .expect("the second browser logs in on b");
    for n in &nodes {
        for cookie in [&first, &second] {
            assert!(
                home(&n.url(""), Some(cookie)).await.logged_in(),
                "logged in on {}",
                n.route
            );
        }
    }

    // A wrong current password changes nothing.
    let (status, _) = change_password(&b.url(""), &second, "not the password").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(home(&c.url(""), Some(&first)).await.logged_in());

    // The first browser changes the password on a: sent to the login form.
    let (status, location) = change_password(&a.url(""), &first, PASSWORD).await;
    assert_eq!((status, location.as_str()), (StatusCode::SEE_OTHER, "/login"));

    // Both browsers are logged out, on every node (b and c first: they still know the old hash).
    for n in [b, c, a] {
        for (name, cookie) in [("second", &second), ("first", &first)] {
            let page = home(&n.url(""), Some(cookie)).await;
            assert!(
                page.sent_to_login(),
                "the {name} browser on {} after the password change on a: {} {}",
                n.route,
                page.status,
                page.body
            );
        }
    }
    // On a, the new password logs in (the change is kept by the node that served it).
    let again = log_in(&a.url(""), NEW_PASSWORD)
        .await
        .expect("the new password works on a");
    assert!(home(&a.url(""), Some(&again)).await.logged_in());
    assert!(
        log_in(&a.url(""), PASSWORD).await.is_none(),
        "the old one does not, on a"
    );
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
