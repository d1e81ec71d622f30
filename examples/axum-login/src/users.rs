//! The users and axum-login's backend: a users file of `name:hash` lines (Argon2 PHC
//! strings, as `tribes-axum-login hash-password` prints them), checked with `password-auth`.
//!
//! Every node must load the same file. axum-login keeps the user's password hash in the
//! session ([`AuthUser::session_auth_hash`]) and compares it on every request: a node that
//! hashed the same password itself (another salt) would log everybody out on failover.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use axum_login::{AuthUser, AuthnBackend, UserId};
use serde::Deserialize;

/// A user. `Debug` leaves the hash out, so it never reaches a log.
#[derive(Clone)]
pub(crate) struct User {
    pub(crate) name: String,
    hash: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User").field("name", &self.name).finish_non_exhaustive()
    }
}

impl AuthUser for User {
    type Id = String;

    fn id(&self) -> String {
        self.name.clone()
    }

    /// A password change ends the user's sessions on every node.
    fn session_auth_hash(&self) -> &[u8] {
        self.hash.as_bytes()
    }
}

/// The login form's fields.
#[derive(Clone, Deserialize)]
pub(crate) struct Credentials {
    pub(crate) username: String,
    pub(crate) password: String,
    /// Where to go after the login (a path of this app).
    pub(crate) next: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

/// The users, by name. A password change is kept in this node's memory only: a real app
/// keeps its users in a database every node reads (the sessions are what tribes shares).
#[derive(Clone, Debug)]
pub(crate) struct Backend {
    users: Arc<RwLock<HashMap<String, User>>>,
    /// A hash of a random password, checked for unknown names.
    dummy: Arc<str>,
}

/// Why a password check could not run (a wrong password is `Ok(None)`, not an error).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("the password check task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl Backend {
    /// The users of `text`: one `name:hash` a line; blank lines and `#` comments are skipped.
    pub(crate) fn parse(text: &str, file: &Path) -> Result<Backend, String> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("{}:{}", file.display(), n + 1);
            let (name, hash) = line.split_once(':').ok_or_else(|| {
                format!("{at}: expected `name:hash`; make the hash with `tribes-axum-login hash-password`")
            })?;
            if name.is_empty() || !hash.starts_with("$argon2") {
                return Err(format!(
                    "{at}: user {name:?} needs an Argon2 hash (`$argon2id$...`); make it with `tribes-axum-login hash-password`"
                ));
            }
            let user = User {
                name: name.to_owned(),
                hash: hash.to_owned(),
            };
            if users.insert(name.to_owned(), user).is_some() {
                return Err(format!("{at}: user {name:?} appears twice: keep one line"));
            }
        }
        if users.is_empty() {
            return Err(format!(
                "{}: no users: add `name:hash` lines (`tribes-axum-login hash-password` makes the hash)",
                file.display()
            ));
        }
        let random: [u8; 16] = rand::random();
        Ok(Backend {
            users: Arc::new(RwLock::new(users)),
            dummy: password_auth::generate_hash(random).into(),
        })
    }

    fn user(&self, name: &str) -> Option<User> {
        self.users.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// Gives `name` a new password (hashed off the async workers); the user with the new
    /// hash, `None` for an unknown name.
    pub(crate) async fn set_password(&self, name: &str, password: String) -> Result<Option<User>, Error> {
        let hash = tokio::task::spawn_blocking(move || password_auth::generate_hash(password)).await?;
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        Ok(users.get_mut(name).map(|u| {
            u.hash = hash;
            u.clone()
        }))
    }

    /// The users of the file at `path`.
    pub(crate) fn load(path: &Path) -> Result<Backend, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read the users file {}: {e}", path.display()))?;
        Backend::parse(&text, path)
    }
}

impl AuthnBackend for Backend {
    type User = User;
    type Credentials = Credentials;
    type Error = Error;

    async fn authenticate(&self, creds: Credentials) -> Result<Option<User>, Error> {
        let user = self.user(&creds.username);
        let dummy = self.dummy.clone();
        // Argon2 is slow on purpose: off the async workers. An unknown user costs the same
        // check against a dummy hash, so response times do not tell which names exist.
        tokio::task::spawn_blocking(move || {
            let hash = user.as_ref().map_or(&*dummy, |u| u.hash.as_str());
            let ok = password_auth::verify_password(&creds.password, hash).is_ok();
            Ok(user.filter(|_| ok))
        })
        .await?
    }

    async fn get_user(&self, id: &UserId<Self>) -> Result<Option<User>, Error> {
        Ok(self.user(id))
    }
}

/// The session's login state for handlers.
pub(crate) type AuthSession = axum_login::AuthSession<Backend>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_users_file_is_refused_with_the_line_and_the_fix() {
        let f = Path::new("users.txt");
        let e = Backend::parse("ferris\n", f).unwrap_err();
        assert!(e.starts_with("users.txt:1:") && e.contains("hash-password"), "{e}");
        let e = Backend::parse("# users\nferris:plain\n", f).unwrap_err();
        assert!(e.starts_with("users.txt:2:") && e.contains("Argon2"), "{e}");
        let e = Backend::parse("a:$argon2id$x\na:$argon2id$y\n", f).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        assert!(Backend::parse("# nobody\n", f).unwrap_err().contains("no users"));
    }

    #[tokio::test]
    async fn the_password_is_checked_against_the_hash() {
        let hash = password_auth::generate_hash("correct horse");
        let backend = Backend::parse(&format!("ferris:{hash}\n"), Path::new("users.txt")).unwrap();
        let creds = |user: &str, password: &str| Credentials {
            username: user.into(),
            password: password.into(),
            next: None,
        };
        let ok = backend.authenticate(creds("ferris", "correct horse")).await.unwrap();
        assert_eq!(ok.map(|u| u.name), Some("ferris".to_string()));
        assert!(backend.authenticate(creds("ferris", "wrong")).await.unwrap().is_none());
        assert!(
            backend
                .authenticate(creds("nobody", "correct horse"))
                .await
                .unwrap()
                .is_none()
        );
    }

    /// The README and main.rs say: user `ferris`, password `crab-rave`.
    #[tokio::test]
    async fn the_shipped_users_file_logs_ferris_in_with_the_documented_password() {
        let backend = Backend::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/users.txt"))).unwrap();
        let creds = Credentials {
            username: "ferris".into(),
            password: "crab-rave".into(),
            next: None,
        };
        assert!(backend.authenticate(creds).await.unwrap().is_some());
    }
}
