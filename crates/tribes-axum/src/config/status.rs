//! `[status]`: the status router's options (the session browser).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Config, ConfigError};
use crate::{AdminToken, Contexts, StatusRouter};

/// `[status]`: the status router. Its session browser is off unless `admin_token_file`
/// names a file holding the admin token (a secret: keep it out of the configuration
/// file itself, which is often committed or widely readable).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct StatusConfig {
    /// The file whose first line is the admin token (at least 16 bytes); it turns the
    /// session browser on.
    pub admin_token_file: Option<PathBuf>,
    /// The attributes whose values the session browser may show (by exact name).
    pub shown_values: Vec<String>,
    /// How long the session browser waits for the other members' answers, ms (default 2000).
    pub lookup_timeout_ms: Option<u64>,
}

impl StatusConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.lookup_timeout_ms == Some(0) {
            return Err(ConfigError::Invalid {
                key: "status.lookup_timeout_ms (or TRIBES_STATUS_LOOKUP_TIMEOUT_MS)".into(),
                value: "0".into(),
                reason: "must be positive",
                fix: "the default is 2000".into(),
                cause: None,
            });
        }
        Ok(())
    }
}

impl Config {
    /// The status router of `contexts` (on their managers' channel) with the `[status]` keys: the session
    /// browser on when `status.admin_token_file` is set (the file is read now).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when the token file cannot be read or its token is too short.
    pub fn status_router(&self, contexts: impl Into<Contexts>) -> Result<StatusRouter, ConfigError> {
        let s = &self.status;
        let mut router = StatusRouter::new(contexts).with_shown_values(s.shown_values.iter().cloned());
        if let Some(ms) = s.lookup_timeout_ms {
            router = router.with_lookup_timeout(Duration::from_millis(ms));
        }
        if let Some(path) = &s.admin_token_file {
            let token = AdminToken::from_file(path).map_err(|e| ConfigError::Invalid {
                key: "status.admin_token_file (or TRIBES_STATUS_ADMIN_TOKEN_FILE)".into(),
                value: format!("{:?}", path.display().to_string()),
                reason: "not a usable admin token file",
                fix: "give a file readable by this process whose first line is a long random token (openssl rand -hex 24 > FILE)".into(),
                cause: Some(tribes_sessions::Cause::new(e)),
            })?;
            router = router.with_admin_token(token);
        }
        Ok(router)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = "[node]\nroute = \"a\"\nbind = \"127.0.0.1:4001\"\ninsecure_plaintext = true\n";

    #[test]
    fn the_status_section_and_its_variables() {
        let c = Config::from_toml(NODE, "n.toml").unwrap();
        assert!(c.status.admin_token_file.is_none() && c.status.shown_values.is_empty());
        let c = Config::from_toml_and_env(
            &format!("{NODE}[status]\nshown_values = [\"count\"]\n"),
            "n.toml",
            [
                (
                    "TRIBES_STATUS_ADMIN_TOKEN_FILE".to_owned(),
                    "/run/secrets/admin".to_owned(),
                ),
                ("TRIBES_STATUS_LOOKUP_TIMEOUT_MS".to_owned(), "500".to_owned()),
            ],
        )
        .unwrap();
        assert_eq!(c.status.admin_token_file, Some(PathBuf::from("/run/secrets/admin")));
        assert_eq!(c.status.shown_values, vec!["count".to_owned()]);
        assert_eq!(c.status.lookup_timeout_ms, Some(500));
        let e = Config::from_toml(&format!("{NODE}[status]\nadmin_token = \"x\"\n"), "n.toml").unwrap_err();
        assert!(
            e.to_string().contains("admin_token_file"),
            "a token inline is refused, the file named: {e}"
        );
        let e = Config::from_toml(&format!("{NODE}[status]\nlookup_timeout_ms = 0\n"), "n.toml").unwrap_err();
        assert!(e.to_string().contains("status.lookup_timeout_ms"), "{e}");
    }
}
