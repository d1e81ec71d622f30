//! [`Config`]: a node's channel, manager and layer from a TOML file and `TRIBES_*`
//! environment variables (feature `config`). The keys, and the Tomcat `server.xml`
//! attributes they replace, are in `docs/configuration.md`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tribes_sessions::Cause;

use crate::ReplicatedSessions;

mod status;
pub use status::StatusConfig;

/// A node's configuration: `[node]` (the channel), `[manager]` (the session manager),
/// `[layer]` (the HTTP layer) and `[status]` (the status router's session browser). Every key is optional except `node.route` and
/// `node.bind`; unknown keys are errors, so a typo never passes silently.
///
/// Read it with [`Config::load`] (a file, then the environment) or [`Config::from_toml`];
/// build the parts with [`Config::channel`], [`Config::manager`] and [`Config::layer`].
///
/// # Examples
/// ```
/// let config = tribes_axum::Config::from_toml(r#"
///     [node]
///     route = "a"
///     bind = "127.0.0.1:4001"
///     members = ["127.0.0.1:4002"]
///     insecure_plaintext = true
///     [manager]
///     context = "shop"
///     send_mode = "sync-ack"
/// "#, "example.toml").unwrap();
/// assert_eq!(config.manager.context, "shop");
/// let err = tribes_axum::Config::from_toml("[manager]\nsend_mod = 'async'", "bad.toml").unwrap_err();
/// assert!(err.to_string().contains("send_mod"));
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// The channel: who this node is and how it finds the others.
    pub node: NodeConfig,
    /// The session manager of the application.
    #[serde(default)]
    pub manager: ManagerConfig,
    /// The HTTP layer.
    #[serde(default)]
    pub layer: LayerConfig,
    /// The status router (its session browser).
    #[serde(default)]
    pub status: StatusConfig,
}

/// `[node]`: the channel.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct NodeConfig {
    /// This node's route, the suffix of its session ids (Tomcat's `jvmRoute`).
    pub route: String,
    /// The address the cluster receiver listens on and advertises (Tomcat's `Receiver`
    /// `address` and `port`).
    pub bind: SocketAddr,
    /// The other members' cluster addresses (Tomcat's `StaticMember`s).
    #[serde(default)]
    pub members: Vec<SocketAddr>,
    /// The cluster key file (`tribes-demo keygen PATH` writes one).
    pub cluster_key_file: Option<PathBuf>,
    /// Send in plain text (only on a network you trust entirely); excludes `cluster_key_file`.
    #[serde(default)]
    pub insecure_plaintext: bool,
    /// How long a silent member stays in the membership, ms (Tomcat's `dropTime`).
    pub drop_time_ms: Option<u64>,
    /// The membership domain: members of other domains are ignored (Tomcat's `domain`).
    pub domain: Option<String>,
}

/// Which manager replicates the sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ManagerKindConfig {
    /// Every node holds every session (Tomcat's `DeltaManager`).
    #[default]
    Delta,
    /// One primary and `backups` copies (Tomcat's `BackupManager`).
    Backup,
}

/// When a commit returns (Tomcat's `channelSendOptions`: async 8, use-ack 2, sync-ack 4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SendModeConfig {
    /// At once; replicated in the background.
    #[default]
    Async,
    /// When every member has received it.
    UseAck,
    /// When every member has applied it.
    SyncAck,
}

/// What a login beyond `manager.max_sessions_per_principal` does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum MaxSessionsPolicyConfig {
    /// The new login wins: the user's oldest logins end on every node.
    #[default]
    EvictOldest,
    /// The new login is refused (`403`, [`SessionError::LoggedInElsewhere`](crate::SessionError::LoggedInElsewhere)).
    Refuse,
}

/// `[manager]`: the session manager.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ManagerConfig {
    /// The context (the application) whose sessions these are (Tomcat's Context path).
    pub context: String,
    /// `delta` or `backup`.
    pub kind: ManagerKindConfig,
    /// BackupManager: copies of each session besides the primary.
    pub backups: usize,
    /// `async`, `use-ack` or `sync-ack`.
    pub send_mode: SendModeConfig,
    /// How long a sync-ack or use-ack commit waits, ms.
    pub ack_timeout_ms: u64,
    /// Idle seconds before a session expires (Tomcat's `sessionTimeout`, in minutes there).
    pub max_inactive_secs: u64,
    /// The most sessions this node holds; creating more is refused (`maxActiveSessions`).
    pub max_active_sessions: Option<usize>,
    /// Listeners hear replicated changes too (`notifyListenersOnReplication`).
    pub notify_listeners_on_replication: bool,
    /// A clean shutdown expires this node's sessions everywhere, the store included
    /// (`expireSessionsOnShutdown`).
    pub expire_sessions_on_shutdown: bool,
    /// Replicate only the attributes whose name matches this regular expression
    /// (`sessionAttributeNameFilter`).
    pub replicate_attributes: Option<String>,
    /// How long a joining node may take to receive the sessions, seconds
    /// (`stateTransferTimeout`).
    pub state_transfer_timeout_secs: u64,
    /// At most this many live sessions per principal across the cluster (Spring
    /// Security's `maximumSessions`); unlimited when absent.
    pub max_sessions_per_principal: Option<usize>,
    /// `evict-oldest` (default) or `refuse`: what a login beyond the limit does.
    pub max_sessions_policy: MaxSessionsPolicyConfig,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            context: "app".into(),
            kind: ManagerKindConfig::Delta,
            backups: 1,
            send_mode: SendModeConfig::Async,
            ack_timeout_ms: 5000,
            max_inactive_secs: 1800,
            max_active_sessions: None,
            notify_listeners_on_replication: false,
            expire_sessions_on_shutdown: false,
            replicate_attributes: None,
            state_transfer_timeout_secs: 60,
            max_sessions_per_principal: None,
            max_sessions_policy: MaxSessionsPolicyConfig::EvictOldest,
        }
    }
}

/// `[layer]`: the HTTP layer.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct LayerConfig {
    /// The session cookie's name (default `TRIBESSESSIONID`).
    pub cookie_name: Option<String>,
    /// Requests whose path matches this regular expression never touch the session
    /// (Tomcat's `ReplicationValve` `filter`; the layer's default covers static files).
    pub filter: Option<String>,
    /// Run the requests of one session one at a time on this node.
    pub serialize_requests: bool,
}

/// A configuration that cannot be used: which key, what is wrong, how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file (or an environment variable) is not valid TOML for [`Config`]: an unknown
    /// key, a value of the wrong type, a missing key. The message names the key, its
    /// line and what is expected.
    #[error("{origin}: {}", .source.to_string().trim_end())]
    Parse {
        /// The file name, or the environment.
        origin: String,
        /// What toml and serde said, with the key and the expected values (a
        /// `toml::de::Error` of the `toml` version this build uses;
        /// [`Cause::downcast_ref`] reaches it).
        source: Cause,
    },
    /// A value of the right type that cannot work.
    #[error("{key} = {value}: {reason}{}; {fix}", cause_part(.cause))]
    Invalid {
        /// The key, as `section.key` (and its environment variable).
        key: String,
        /// The value given.
        value: String,
        /// What is wrong.
        reason: &'static str,
        /// What to do.
        fix: String,
        /// The underlying error, when a file or a pattern could not be used (the key file's,
        /// the admin token file's, the regular expression parser's).
        #[source]
        cause: Option<Cause>,
    },
}

fn cause_part(cause: &Option<Cause>) -> String {
    cause.as_ref().map(|c| format!(" ({c})")).unwrap_or_default()
}

/// The sections whose keys `TRIBES_<SECTION>_<KEY>` variables override.
const SECTIONS: [&str; 4] = ["node", "manager", "layer", "status"];

impl Config {
    /// Reads `path` (TOML), applies the `TRIBES_<SECTION>_<KEY>` variables of the process
    /// environment over it (see [`Config::from_toml_and_env`]) and checks the result.
    ///
    /// # Errors
    /// [`ConfigError`], naming the file or variable, the key and the fix.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml_and_env(&text, &path.display().to_string(), std::env::vars())
    }

    /// Parses `text` (TOML; `origin` names it in errors) and checks it.
    ///
    /// # Errors
    /// [`ConfigError`], naming the key and the fix.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::from_toml_and_env(text, origin, std::iter::empty())
    }

    /// Parses `text`, then applies the variables of `env` named `TRIBES_<SECTION>_<KEY>`
    /// (`TRIBES_MANAGER_SEND_MODE=sync-ack` sets `manager.send_mode`; a list is written as
    /// TOML, `TRIBES_NODE_MEMBERS='["10.0.0.2:4000"]'`; text needs no quotes). Variables
    /// of other names are left alone; an unknown key of a known section is an error.
    ///
    /// # Errors
    /// [`ConfigError`], naming the file or variable, the key and the fix.
    pub fn from_toml_and_env(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let parse = |origin: &str, source: toml::de::Error| ConfigError::Parse {
            origin: origin.to_owned(),
            source: Cause::new(source),
        };
        let mut table: toml::Table = text.parse().map_err(|e| parse(origin, e))?;
        let overrides: BTreeMap<String, String> = env.into_iter().collect();
        for (var, raw) in &overrides {
            let Some(rest) = var.strip_prefix("TRIBES_") else {
                continue;
            };
            let Some((section, key)) = SECTIONS.iter().find_map(|s| {
                rest.strip_prefix(&s.to_ascii_uppercase())
                    .and_then(|k| k.strip_prefix('_'))
                    .map(|k| (*s, k.to_ascii_lowercase()))
            }) else {
                continue;
            };
            // A TOML value when it is one (numbers, booleans, lists), else the text itself.
            let value = format!("v = {raw}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(raw.clone()));
            let entry = table
                .entry(section)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(section_table) = entry.as_table_mut() else {
                return Err(ConfigError::Invalid {
                    key: section.to_owned(),
                    value: entry.to_string(),
                    reason: "is not a section",
                    fix: format!("write it as [{section}] in {origin}"),
                    cause: None,
                });
            };
            section_table.insert(key, value);
        }
        let from = if overrides.keys().any(|k| k.starts_with("TRIBES_")) {
            format!("{origin} with the TRIBES_* environment")
        } else {
            origin.to_owned()
        };
        let config = Config::deserialize(toml::Value::Table(table)).map_err(|e| parse(&from, e))?;
        config.check()?;
        Ok(config)
    }

    /// The checks a type cannot make.
    fn check(&self) -> Result<(), ConfigError> {
        let invalid_because = |key: &str, value: String, reason: &'static str, fix: &str, cause: Option<Cause>| {
            let env = format!("TRIBES_{}", key.replace('.', "_").to_ascii_uppercase());
            Err(ConfigError::Invalid {
                key: format!("{key} (or {env})"),
                value,
                reason,
                fix: fix.into(),
                cause,
            })
        };
        let invalid =
            |key: &str, value: String, reason: &'static str, fix: &str| invalid_because(key, value, reason, fix, None);
        let route_ok = |r: &str| {
            !r.is_empty() && r.len() <= 64 && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !route_ok(&self.node.route) {
            return invalid(
                "node.route",
                format!("{:?}", self.node.route),
                "a route is 1 to 64 letters, digits, - or _ (it ends every session id)",
                "choose a short name per node, such as \"a\" or \"web-1\"",
            );
        }
        match (&self.node.cluster_key_file, self.node.insecure_plaintext) {
            (None, false) => {
                return invalid(
                    "node.cluster_key_file",
                    "(missing)".into(),
                    "cluster traffic is sealed with a shared key",
                    "give every member the same key file (tribes-demo keygen PATH), or set node.insecure_plaintext = true on a network you trust entirely",
                );
            }
            (Some(path), true) => {
                return invalid(
                    "node.insecure_plaintext",
                    "true".into(),
                    "conflicts with node.cluster_key_file",
                    &format!(
                        "keep one of the two (node.cluster_key_file = {:?})",
                        path.display().to_string()
                    ),
                );
            }
            _ => {}
        }
        if self.node.drop_time_ms == Some(0) {
            return invalid(
                "node.drop_time_ms",
                "0".into(),
                "must be positive",
                "the default is 3000",
            );
        }
        let m = &self.manager;
        if m.context.is_empty() {
            return invalid(
                "manager.context",
                "\"\"".into(),
                "must not be empty",
                "name the application, such as \"shop\"",
            );
        }
        if m.kind == ManagerKindConfig::Backup && m.backups == 0 {
            return invalid(
                "manager.backups",
                "0".into(),
                "the backup manager keeps at least one copy",
                "set 1 or more, or kind = \"delta\"",
            );
        }
        if m.ack_timeout_ms == 0 {
            return invalid(
                "manager.ack_timeout_ms",
                "0".into(),
                "must be positive",
                "the default is 5000",
            );
        }
        if m.max_sessions_per_principal == Some(0) {
            return invalid(
                "manager.max_sessions_per_principal",
                "0".into(),
                "no user could ever log in",
                "set 1 or more, or leave it out for no limit",
            );
        }
        if m.max_inactive_secs == 0 {
            return invalid(
                "manager.max_inactive_secs",
                "0".into(),
                "must be positive",
                "the default is 1800 (30 minutes)",
            );
        }
        for (key, pattern) in [
            ("manager.replicate_attributes", &m.replicate_attributes),
            ("layer.filter", &self.layer.filter),
        ] {
            if let Some(p) = pattern
                && let Err(e) = regex::Regex::new(p)
            {
                return invalid_because(
                    key,
                    format!("{p:?}"),
                    "not a regular expression",
                    "fix the pattern (Rust regex syntax)",
                    Some(Cause::new(e)),
                );
            }
        }
        self.status.check()
    }

    /// The channel builder: route, bind address, static members, key (read from the file
    /// now), drop time and domain. Add an interceptor or another discovery before `start`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when the key file cannot be read.
    pub fn channel(&self) -> Result<tribes::ChannelBuilder, ConfigError> {
        let n = &self.node;
        let mut b = tribes::Channel::builder(&n.route)
            .with_bind(n.bind)
            .with_discovery(tribes::StaticDiscovery::new(n.members.clone()));
        b = match &n.cluster_key_file {
            Some(path) => b.with_cluster_key(tribes::Keyring::from_file(path).map_err(|e| ConfigError::Invalid {
                key: "node.cluster_key_file (or TRIBES_NODE_CLUSTER_KEY_FILE)".into(),
                value: format!("{:?}", path.display().to_string()),
                reason: "not a usable cluster key file",
                fix: "give the path of the key file every member shares (tribes-demo keygen PATH writes one)".into(),
                cause: Some(Cause::new(e)),
            })?),
            None => b.insecure_plaintext(),
        };
        if let Some(ms) = n.drop_time_ms {
            b = b.with_drop_time(Duration::from_millis(ms));
        }
        if let Some(d) = &n.domain {
            b = b.with_domain(d.clone());
        }
        Ok(b)
    }

    /// The session manager builder of `manager.context`. Add a store or listeners before
    /// `start`.
    pub fn manager(&self) -> tribes_sessions::SessionManagerBuilder {
        let m = &self.manager;
        let kind = match m.kind {
            ManagerKindConfig::Delta => tribes_sessions::ManagerKind::Delta,
            ManagerKindConfig::Backup => tribes_sessions::ManagerKind::Backup {
                backup_count: m.backups,
            },
        };
        let send_mode = match m.send_mode {
            SendModeConfig::Async => tribes::SendMode::Async,
            SendModeConfig::UseAck => tribes::SendMode::UseAck,
            SendModeConfig::SyncAck => tribes::SendMode::SyncAck,
        };
        let mut b = tribes_sessions::SessionManager::builder(&m.context)
            .with_kind(kind)
            .with_send_mode(send_mode)
            .with_ack_timeout(Duration::from_millis(m.ack_timeout_ms))
            .with_max_inactive(Duration::from_secs(m.max_inactive_secs))
            .with_notify_listeners_on_replication(m.notify_listeners_on_replication)
            .with_expire_sessions_on_shutdown(m.expire_sessions_on_shutdown)
            .with_state_transfer_timeout(Duration::from_secs(m.state_transfer_timeout_secs));
        if let Some(max) = m.max_active_sessions {
            b = b.with_max_active(max);
        }
        if let Some(max) = m.max_sessions_per_principal {
            let policy = match m.max_sessions_policy {
                MaxSessionsPolicyConfig::EvictOldest => tribes_sessions::MaxSessionsPolicy::EvictOldest,
                MaxSessionsPolicyConfig::Refuse => tribes_sessions::MaxSessionsPolicy::Refuse,
            };
            b = b.with_max_sessions_per_principal(max, policy);
        }
        if let Some(p) = &m.replicate_attributes {
            // Checked when the configuration was read.
            if let Ok(re) = regex::Regex::new(p) {
                b = b.with_attribute_filter(move |name| re.is_match(name));
            }
        }
        b
    }

    /// The layer for `manager`, with the `[layer]` keys.
    pub fn layer(&self, manager: tribes_sessions::SessionManager) -> ReplicatedSessions {
        let l = &self.layer;
        let mut layer = ReplicatedSessions::new(manager).with_serialize_requests(l.serialize_requests);
        if let Some(name) = &l.cookie_name {
            layer = layer.with_cookie_name(name);
        }
        if let Some(filter) = &l.filter {
            layer = layer.with_filter(filter);
        }
        layer
    }
}

#[cfg(test)]
mod tests;
