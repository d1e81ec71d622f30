//! [`RedisStore`]: one hash per session with a native TTL, on Redis or Redis Cluster.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{ErrorKind, FromRedisValue, RedisError, Script, Value};

use super::error::redact_url;
use super::record::RecordError;
use super::record::{self, StoredSession};
use super::{SessionStore, StoreError, StoreFuture, UnexpectedReply, check_record, scoped_name, store_namespace};
use crate::cause::Cause;
use crate::id::SessionId;

const DEFAULT_PREFIX: &str = "tribes:session:";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const HINT_DOWN: &str = "is Redis running and reachable?";
const HINT_CLUSTER_DOWN: &str =
    "is every Redis Cluster master running and are all slots covered? (redis-cli --cluster check HOST:PORT)";

/// The save: version check, replace, expiry, all atomic on the key's node.
///
/// KEYS[1] the key; ARGV[1] expected version ('' for none), ARGV[2] new version, ARGV[3] the
/// record, ARGV[4] TTL in ms ('0' for none, '-1' for already expired: the key is deleted). Returns {1, ''} when saved, {0, found} on a
/// version mismatch (found is '' when there is no readable record).
const SAVE_SCRIPT: &str = r"
local t = redis.call('TYPE', KEYS[1])['ok']
if ARGV[1] ~= '' then
  local found = ''
  if t == 'hash' then found = redis.call('HGET', KEYS[1], 'v') or '' end
  if found ~= ARGV[1] then return {0, found} end
end
redis.call('DEL', KEYS[1])
if ARGV[4] == '-1' then return {1, ''} end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'r', ARGV[3])
if ARGV[4] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return {1, ''}
";

/// Sessions as Redis hashes `<prefix><id>` with the fields `v` (version, for the check in
/// the save script) and `r` (the checksummed record), expiring natively (`PEXPIRE` to the
/// record's `expires_at_ms` on every save; saving a record that has already expired deletes
/// the key).
///
/// [`save`](SessionStore::save) is one Lua script, so the version check and the write are
/// atomic on the key's node; every operation touches one key, so it works the same on Redis
/// Cluster ([`RedisStore::connect_cluster`]). [`list_ids`](SessionStore::list_ids) `SCAN`s
/// every master. [`delete_expired`](SessionStore::delete_expired) has nothing to do.
///
/// Connections reconnect by themselves: while Redis is down, operations fail with
/// [`StoreError::Unavailable`] naming the store, and work again once it is back. Nothing is
/// half-written meanwhile: a save either ran whole on the server or not at all.
///
/// # Examples
/// ```no_run
/// # async fn demo() -> Result<(), tribes_sessions::StoreError> {
/// use tribes_sessions::{RedisStore, SessionStore};
/// let store = RedisStore::connect("redis://127.0.0.1:6379").await?.with_prefix("shop:session:");
/// let cluster = RedisStore::connect_cluster(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"]).await?;
/// store.health().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    /// The name without the context.
    base: Arc<str>,
    name: Arc<str>,
    /// The prefix of [`RedisStore::with_prefix`].
    base_prefix: Arc<str>,
    /// The context of [`RedisStore::with_context`].
    context: Arc<str>,
    /// `base_prefix`, then `<store_namespace(context)>:` unless the context is `""`.
    prefix: Arc<str>,
    script: Arc<Script>,
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("name", &self.name)
            .field("prefix", &self.prefix)
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to one Redis server (`redis://[:password@]host:port[/db]`; TLS is not built
    /// in). Keys are `tribes:session:<id>` unless [`RedisStore::with_prefix`] says otherwise.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis does not answer, [`StoreError::Backend`] for a
    /// bad URL or failed authentication.
    pub async fn connect(url: &str) -> Result<RedisStore, StoreError> {
        let name = format!("redis store at {}", redact_url(url));
        let client = redis::Client::open(url).map_err(|e| redis_error(&name, false, "connect", None, e))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT)
            .set_number_of_retries(2)
            .set_max_delay(500);
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| redis_error(&name, false, "connect", None, e))?;
        Ok(RedisStore::new(Conn::Single(conn), name))
    }

    /// Connects to a Redis Cluster through any of its nodes (`redis://host:port` each); the
    /// client learns the slot map and follows `MOVED`/`ASK` redirections.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when no node answers or the cluster is down,
    /// [`StoreError::Backend`] for bad URLs.
    pub async fn connect_cluster<I, S>(urls: I) -> Result<RedisStore, StoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let urls: Vec<String> = urls.into_iter().map(|u| u.as_ref().to_owned()).collect();
        let shown: Vec<String> = urls.iter().map(|u| redact_url(u)).collect();
        let name = format!("redis cluster store at {}", shown.join(","));
        let client = ClusterClient::builder(urls)
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(2)
            .build()
            .map_err(|e| redis_error(&name, true, "connect", None, e))?;
        let conn = client
            .get_async_connection()
            .await
            .map_err(|e| redis_error(&name, true, "connect", None, e))?;
        Ok(RedisStore::new(Conn::Cluster(conn), name))
    }

    fn new(conn: Conn, name: String) -> RedisStore {
        RedisStore {
            conn,
            base: name.clone().into(),
            name: name.into(),
            base_prefix: DEFAULT_PREFIX.into(),
            context: "".into(),
            prefix: DEFAULT_PREFIX.into(),
            script: Arc::new(Script::new(SAVE_SCRIPT)),
        }
    }

    /// Uses `prefix` before every key name (default `tribes:session:`), to keep
    /// several deployments, or tests, apart in one Redis. Applications sharing one prefix are
    /// kept apart by their context ([`RedisStore::with_context`]).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> RedisStore {
        self.base_prefix = prefix.into().into();
        self.rekey();
        self
    }

    /// This store for the records of `context` only, under the keys
    /// `<prefix><store_namespace(context)>:<id>`; `""` is the context of the store as
    /// connected (keys `<prefix><id>`). See [`SessionStore::for_context`].
    pub fn with_context(mut self, context: &str) -> RedisStore {
        self.context = context.into();
        self.name = scoped_name(&self.base, context).into();
        self.rekey();
        self
    }

    fn rekey(&mut self) {
        self.prefix = if self.context.is_empty() {
            self.base_prefix.clone()
        } else {
            format!("{}{}:", self.base_prefix, store_namespace(&self.context)).into()
        };
    }

    /// The prefix of every key of this store: the one of [`RedisStore::with_prefix`], then
    /// the context's namespace and `:` unless the context is `""`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    fn err(&self, operation: &'static str, id: Option<SessionId>) -> impl Fn(RedisError) -> StoreError + '_ {
        move |e| redis_error(&self.name, self.is_cluster(), operation, id, e)
    }

    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match &self.conn {
            Conn::Single(c) => cmd.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
    }

    /// `SCAN` of one node (`None`: the standalone server) for keys matching `pattern`.
    async fn scan_node(
        &self,
        node: Option<(&str, u16)>,
        pattern: &str,
        out: &mut HashSet<SessionId>,
    ) -> redis::RedisResult<()> {
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1000);
            let value = match (&self.conn, node) {
                (Conn::Cluster(c), Some((host, port))) => {
                    let route = SingleNodeRoutingInfo::ByAddress {
                        host: host.to_owned(),
                        port,
                    };
                    c.clone().route_command(&cmd, RoutingInfo::SingleNode(route)).await?
                }
                _ => self.query::<Value>(&cmd).await?,
            };
            let (next, keys): (u64, Vec<String>) = FromRedisValue::from_redis_value(&value)?;
            // `<prefix><namespace>:<id>` of another context matches the pattern of the context
            // "" too: the `:` makes it no id.
            out.extend(
                keys.into_iter()
                    .filter_map(|k| k.strip_prefix(&*self.prefix)?.parse::<SessionId>().ok()),
            );
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// The masters of the cluster, from `CLUSTER NODES`.
    async fn masters(&self, c: &ClusterConnection) -> redis::RedisResult<Vec<(String, u16)>> {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("NODES");
        let value = c
            .clone()
            .route_command(&cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random))
            .await?;
        let text: String = FromRedisValue::from_redis_value(&value)?;
        Ok(parse_masters(&text))
    }
}

/// Masters serving slots, from `CLUSTER NODES` text (`id host:port@bus flags master …`).
fn parse_masters(text: &str) -> Vec<(String, u16)> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let flags = *f.get(2)?;
            let is_master = flags.split(',').any(|x| x == "master") && !flags.contains("fail") && f.len() > 8;
            if !is_master {
                return None;
            }
            let addr = f[1].split(['@', ',']).next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some((host.trim_matches(['[', ']']).to_owned(), port.parse().ok()?))
        })
        .collect()
}

/// Escapes glob characters for `SCAN MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Maps a Redis error: connection and cluster trouble is `Unavailable`, the rest `Backend`.
fn redis_error(
    store: &str,
    cluster: bool,
    operation: &'static str,
    id: Option<SessionId>,
    e: RedisError,
) -> StoreError {
    let down = e.is_io_error()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_connection_dropped()
        || matches!(
            e.kind(),
            ErrorKind::ClusterDown
                | ErrorKind::MasterDown
                | ErrorKind::TryAgain
                | ErrorKind::BusyLoadingError
                | ErrorKind::ClusterConnectionNotFound
        )
        || (cluster && e.kind() == ErrorKind::ClientError);
    if down {
        return StoreError::Unavailable {
            store: store.to_owned(),
            operation,
            cause: Cause::new(e),
            hint: if cluster { HINT_CLUSTER_DOWN } else { HINT_DOWN },
        };
    }
    let hint = match e.kind() {
        ErrorKind::AuthenticationFailed => Some("check the password in the URL"),
        ErrorKind::InvalidClientConfig => Some("check the URL: redis://[:password@]host:port[/db]"),
        ErrorKind::ReadOnly => Some("the node is a replica: connect to a master"),
        _ => None,
    };
    StoreError::Backend {
        store: store.to_owned(),
        operation,
        id,
        cause: Cause::new(e),
        hint,
    }
}

impl SessionStore for RedisStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn load<'a>(&'a self, sid: &'a SessionId) -> StoreFuture<'a, Option<StoredSession>> {
        Box::pin(async move {
            let text = sid.to_string();
            let id = text.as_str();
            let corrupt = |cause| StoreError::Corrupt {
                store: self.name.to_string(),
                id: *sid,
                cause: Cause::new(cause),
                location: Some(format!("the key {}<id>", self.prefix)),
            };
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(self.key(id)).arg("v").arg("r");
            let (version, bytes): (Option<String>, Option<Vec<u8>>) = match self.query(&cmd).await {
                Ok(v) => v,
                Err(e) if e.code() == Some("WRONGTYPE") => return Err(corrupt(RecordError::NotAHash)),
                Err(e) => return Err(self.err("load", Some(*sid))(e)),
            };
            let (version, bytes) = match (version, bytes) {
                (None, None) => return Ok(None),
                (Some(v), Some(b)) => (v, b),
                _ => return Err(corrupt(RecordError::MissingField)),
            };
            let record = record::decode(&bytes, sid).map_err(corrupt)?;
            if version != record.version.to_string() {
                return Err(corrupt(RecordError::VersionMismatch {
                    index: "field v",
                    indexed: version,
                    record: record.version,
                }));
            }
            Ok((!record.is_expired(SystemTime::now())).then_some(record))
        })
    }

    fn save<'a>(&'a self, record: &'a StoredSession, expected_version: Option<u64>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            check_record(&self.name, record)?;
            let bytes = record::encode(record);
            let id = record.id.to_string();
            let now_ms = record::unix_ms(SystemTime::now());
            let ttl_ms: i64 = if record.expires_at_ms == u64::MAX {
                0
            } else if record.expires_at_ms <= now_ms {
                -1
            } else {
                i64::try_from(record.expires_at_ms - now_ms).unwrap_or(i64::MAX)
            };
            let mut invocation = self.script.key(self.key(&id));
            invocation
                .arg(expected_version.map(|v| v.to_string()).unwrap_or_default())
                .arg(record.version.to_string())
                .arg(bytes)
                .arg(ttl_ms.to_string());
            let result = match &self.conn {
                Conn::Single(c) => invocation.invoke_async::<(i64, String)>(&mut c.clone()).await,
                Conn::Cluster(c) => invocation.invoke_async::<(i64, String)>(&mut c.clone()).await,
            };
            let (saved, found) = result.map_err(self.err("save", Some(record.id)))?;
            match (saved, expected_version) {
                (1, _) => Ok(()),
                (_, Some(expected)) => Err(StoreError::Conflict {
                    store: self.name.to_string(),
                    id: record.id,
                    expected,
                    found: found.parse().ok(),
                }),
                (_, None) => Err(StoreError::Backend {
                    store: self.name.to_string(),
                    operation: "save",
                    id: Some(record.id),
                    cause: Cause::new(UnexpectedReply::SaveRefused),
                    hint: None,
                }),
            }
        })
    }

    fn delete<'a>(&'a self, sid: &'a SessionId) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let text = sid.to_string();
            let id = text.as_str();
            let mut cmd = redis::cmd("DEL");
            cmd.arg(self.key(id));
            let n: u64 = self.query(&cmd).await.map_err(self.err("delete", Some(*sid)))?;
            Ok(n > 0)
        })
    }

    fn delete_expired(&self, _now: SystemTime) -> StoreFuture<'_, u64> {
        // Redis expires keys itself (PEXPIRE on every save).
        Box::pin(async { Ok(0) })
    }

    fn list_ids(&self) -> StoreFuture<'_, Vec<SessionId>> {
        Box::pin(async move {
            let err = self.err("list_ids", None);
            let pattern = format!("{}*", glob_escape(&self.prefix));
            let mut ids = HashSet::new();
            match &self.conn {
                Conn::Single(_) => self.scan_node(None, &pattern, &mut ids).await.map_err(&err)?,
                Conn::Cluster(c) => {
                    for (host, port) in self.masters(c).await.map_err(&err)? {
                        self.scan_node(Some((&host, port)), &pattern, &mut ids)
                            .await
                            .map_err(&err)?;
                    }
                }
            }
            Ok(ids.into_iter().collect())
        })
    }

    fn for_context(&self, context: &str) -> Arc<dyn SessionStore> {
        Arc::new(self.clone().with_context(context))
    }

    fn health(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let err = self.err("health", None);
            let pong: String = self.query(&redis::cmd("PING")).await.map_err(&err)?;
            if pong != "PONG" {
                return Err(StoreError::Backend {
                    store: self.name.to_string(),
                    operation: "health",
                    id: None,
                    cause: Cause::new(UnexpectedReply::Ping { reply: pong }),
                    hint: None,
                });
            }
            if let Conn::Cluster(c) = &self.conn {
                let mut cmd = redis::cmd("CLUSTER");
                cmd.arg("INFO");
                let value = c
                    .clone()
                    .route_command(&cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random))
                    .await
                    .map_err(&err)?;
                let info: String = FromRedisValue::from_redis_value(&value).map_err(&err)?;
                if !info.lines().any(|l| l.trim() == "cluster_state:ok") {
                    let state = info
                        .lines()
                        .find(|l| l.starts_with("cluster_state:"))
                        .unwrap_or("cluster_state:?");
                    return Err(StoreError::Unavailable {
                        store: self.name.to_string(),
                        operation: "health",
                        cause: Cause::new(UnexpectedReply::ClusterState {
                            state: state.trim().to_owned(),
                        }),
                        hint: HINT_CLUSTER_DOWN,
                    });
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_redis_parse_masters_and_glob() {
        let text = "a1 127.0.0.1:57001@47001 myself,master - 0 0 1 connected 0-5460\n\
                    b2 127.0.0.1:57002@47002,host.example master - 0 1 2 connected 5461-10922\n\
                    c3 127.0.0.1:57003@47003 slave b2 0 1 3 connected\n\
                    d4 127.0.0.1:57004@47004 master,fail - 0 1 4 connected 10923-16383\n\
                    e5 127.0.0.1:57005@47005 master - 0 1 5 connected\n";
        assert_eq!(
            parse_masters(text),
            vec![("127.0.0.1".to_owned(), 57001), ("127.0.0.1".to_owned(), 57002)]
        );
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
