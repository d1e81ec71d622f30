//! One conformance suite over every session store, against real servers.
//!
//! PostgreSQL and Redis come from `scripts/test-services.sh DIR` (then `. DIR/env`;
//! `cargo xtask test` does both). When a variable is missing the backend's tests fail and
//! say how to start the servers.

#![cfg_attr(
    not(any(feature = "file", feature = "postgres", feature = "redis")),
    allow(dead_code, unused_imports, unused_macros)
)]

use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tribes_sessions::{RecordError, SessionId, SessionStore, StoreError, StoredSession};

/// The store's own finding about a record, the source of a `Corrupt` error.
fn record_error(e: &StoreError) -> Option<&RecordError> {
    e.source()?.downcast_ref::<RecordError>()
}
use tribes_testkit::services::service_env;

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A backend under test: the store, and a way to put raw bytes where a record would be.
trait Backend: Send + Sync {
    fn store(&self) -> &dyn SessionStore;
    /// Writes `bytes` as the stored record of `id`, bypassing the store's encoder (where the
    /// backend keeps a version beside the record, it is 0).
    fn write_raw<'a>(&'a self, id: &'a SessionId, bytes: &'a [u8]) -> BoxFut<'a, ()>;
}

/// Ids unique to one test run, so tests may share a database (random: `_tag` only says
/// which test made it when reading the code).
fn unique(_tag: &str) -> SessionId {
    SessionId::generate(&mut rand::rng())
}

/// A fixed id for `tag` (the same on every call).
fn named(tag: &str) -> SessionId {
    let mut b = [0u8; 16];
    for (i, c) in tag.bytes().enumerate() {
        b[i % 16] ^= c;
    }
    SessionId::from_bytes(b)
}

fn record(id: &SessionId, version: u64, ttl: Duration, data: &[u8]) -> StoredSession {
    StoredSession::new(*id, version, SystemTime::now(), ttl, data.to_vec())
}

const HOUR: Duration = Duration::from_secs(3600);

mod suite {
    use super::*;

    pub(crate) async fn round_trip(b: &dyn Backend) {
        let s = b.store();
        let id = unique("rt");
        assert_eq!(s.load(&id).await.unwrap(), None);
        let mut r = record(&id, 1, HOUR, b"\x81\xa4user\xa5alice");
        r.created_ms -= 5000;
        s.save(&r, None).await.unwrap();
        assert_eq!(s.load(&id).await.unwrap(), Some(r.clone()));
        // Large data, and a replace.
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
        let r2 = StoredSession {
            version: 2,
            data: big,
            ..r.clone()
        };
        s.save(&r2, Some(1)).await.unwrap();
        assert_eq!(s.load(&id).await.unwrap(), Some(r2));
        // Empty data is data.
        let r3 = StoredSession {
            version: 3,
            data: Vec::new(),
            ..r
        };
        s.save(&r3, None).await.unwrap();
        assert_eq!(s.load(&id).await.unwrap(), Some(r3));
        s.health().await.unwrap();
    }

    pub(crate) async fn conflict(b: &dyn Backend) {
        let s = b.store();
        let id = unique("cf");
        s.save(&record(&id, 1, HOUR, b"one"), None).await.unwrap();
        s.save(&record(&id, 2, HOUR, b"two"), Some(1)).await.unwrap();
        let e = s.save(&record(&id, 2, HOUR, b"lost?"), Some(1)).await.unwrap_err();
        match &e {
            StoreError::Conflict {
                id: eid,
                expected,
                found,
                store,
            } => {
                assert_eq!((*eid, *expected, *found), (id, 1, Some(2)));
                assert_eq!(store, s.name());
            }
            other => panic!("expected a conflict, got {other}"),
        }
        // The session is named by its log hash, never by its id (OWASP: ids stay out of logs).
        let hash = tribes_sessions::LogId::of_text(&id.to_string()).to_string();
        assert!(
            e.to_string().contains(&hash) && !e.to_string().contains(&id.to_string()),
            "{e}"
        );
        assert!(e.to_string().contains("reload"), "{e}");
        assert_eq!(
            s.load(&id).await.unwrap().unwrap().data,
            b"two",
            "a conflicting save must write nothing"
        );
        // Expecting a version of a session that does not exist.
        let ghost = unique("ghost");
        let e = s.save(&record(&ghost, 6, HOUR, b""), Some(5)).await.unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::Conflict {
                    expected: 5,
                    found: None,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(s.load(&ghost).await.unwrap(), None);
    }

    /// Many writers increment one session with load / save(expected) / retry: every
    /// increment lands exactly once, conflicts are detected, none is silently lost.
    pub(crate) async fn concurrent_writers(b: Arc<dyn Backend>) {
        let id = unique("race");
        b.store().save(&record(&id, 1, HOUR, b""), None).await.unwrap();
        let writers = 12u8;
        let mut tasks = Vec::new();
        for w in 0..writers {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                let mut conflicts = 0u32;
                loop {
                    let cur = b.store().load(&id).await.unwrap().unwrap();
                    let mut next = cur.clone();
                    next.version += 1;
                    next.data.push(w);
                    match b.store().save(&next, Some(cur.version)).await {
                        Ok(()) => return conflicts,
                        Err(StoreError::Conflict { .. }) => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
            }));
        }
        let mut conflicts = 0;
        for t in tasks {
            conflicts += t.await.unwrap();
        }
        let end = b.store().load(&id).await.unwrap().unwrap();
        assert_eq!(end.version, 1 + u64::from(writers));
        let mut seen = end.data.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..writers).collect::<Vec<_>>(), "every write exactly once");
        eprintln!(
            "{}: {conflicts} conflicts detected among {writers} writers",
            b.store().name()
        );
    }

    pub(crate) async fn delete(b: &dyn Backend) {
        let s = b.store();
        let id = unique("del");
        s.save(&record(&id, 1, HOUR, b"x"), None).await.unwrap();
        assert!(s.delete(&id).await.unwrap());
        assert_eq!(s.load(&id).await.unwrap(), None);
        assert!(!s.delete(&id).await.unwrap());
        assert!(!s.list_ids().await.unwrap().contains(&id));
        // A deleted session can be created again.
        s.save(&record(&id, 1, HOUR, b"y"), None).await.unwrap();
        assert_eq!(s.load(&id).await.unwrap().unwrap().data, b"y");
    }

    pub(crate) async fn expiry(b: &dyn Backend) {
        let s = b.store();
        let (short, long, past) = (unique("exp-short"), unique("exp-long"), unique("exp-past"));
        let mut r = record(&short, 1, Duration::ZERO, b"s");
        r.expires_at_ms += 400;
        s.save(&r, None).await.unwrap();
        s.save(&record(&long, 1, HOUR, b"l"), None).await.unwrap();
        let mut p = record(&past, 1, HOUR, b"p");
        p.expires_at_ms = p.last_access_ms - 1000;
        s.save(&p, None).await.unwrap();
        // Already expired: never returned, whether or not it was deleted yet, and absent for
        // a version-checked save.
        assert_eq!(s.load(&past).await.unwrap(), None);
        let e = s.save(&record(&past, 2, HOUR, b"p2"), Some(1)).await.unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::Conflict {
                    expected: 1,
                    found: None,
                    ..
                }
            ),
            "{e}"
        );
        assert!(s.load(&short).await.unwrap().is_some(), "not expired yet");
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(s.load(&short).await.unwrap(), None, "expired by the system clock");
        let deleted = s.delete_expired(SystemTime::now()).await.unwrap();
        eprintln!("{}: delete_expired removed {deleted}", s.name());
        let ids = s.list_ids().await.unwrap();
        assert!(
            !ids.contains(&short) && !ids.contains(&past),
            "expired records are gone after delete_expired"
        );
        assert!(ids.contains(&long));
        assert!(
            s.load(&long).await.unwrap().is_some(),
            "a live session survives delete_expired"
        );
        // A renewed session is not deleted: save with a later expiry.
        let mut renewed = record(&short, 2, HOUR, b"again");
        renewed.expires_at_ms = u64::MAX; // never
        s.save(&renewed, None).await.unwrap();
        s.delete_expired(SystemTime::now() + Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(s.load(&short).await.unwrap(), Some(renewed));
        s.delete(&short).await.unwrap();
    }

    pub(crate) async fn list_ids(b: &dyn Backend) {
        let s = b.store();
        let ids: Vec<SessionId> = (0..40).map(|i| unique(&format!("list{i}"))).collect();
        for id in &ids {
            s.save(&record(id, 1, HOUR, id.as_bytes()), None).await.unwrap();
        }
        s.delete(&ids[0]).await.unwrap();
        let listed = s.list_ids().await.unwrap();
        assert!(!listed.contains(&ids[0]));
        for id in &ids[1..] {
            assert!(listed.contains(id), "{id} missing from list_ids");
        }
        let mut dedup = listed.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), listed.len(), "no duplicates");
    }

    pub(crate) async fn corrupt_isolated(b: &dyn Backend) {
        let s = b.store();
        let (good1, good2, garbage, newer) = (unique("ok1"), unique("ok2"), unique("garbage"), unique("newer"));
        s.save(&record(&good1, 1, HOUR, b"1"), None).await.unwrap();
        b.write_raw(&garbage, b"\x00\x01 this is not a session \xff").await;
        // A record from a future format: magic, then format 2, then anything.
        let mut future = b"TRIBSESS\x00\x02".to_vec();
        future.extend_from_slice(&[0u8; 80]);
        b.write_raw(&newer, &future).await;
        s.save(&record(&good2, 1, HOUR, b"2"), None).await.unwrap();

        let e = s.load(&garbage).await.unwrap_err();
        assert!(e.is_corrupt(), "{e}");
        let m = e.to_string();
        let hash = tribes_sessions::LogId::of_text(&garbage.to_string()).to_string();
        assert!(
            m.starts_with(s.name()) && m.contains(&hash) && !m.contains(&garbage.to_string()),
            "{m}"
        );
        assert!(record_error(&e).is_some(), "the record's problem is the source: {e:?}");
        let e = s.load(&newer).await.unwrap_err();
        assert!(e.is_corrupt() && e.to_string().contains("newer version"), "{e}");
        assert_eq!(
            record_error(&e),
            Some(&RecordError::NewerFormat {
                format: 2,
                supported: 1
            }),
            "{e:?}"
        );
        assert_eq!(e.id(), Some(newer));

        // Every other session still loads.
        assert_eq!(s.load(&good1).await.unwrap().unwrap().data, b"1");
        assert_eq!(s.load(&good2).await.unwrap().unwrap().data, b"2");
        // The bad ones are listed (an operator can find them), expiry sweeps do not fail.
        let ids = s.list_ids().await.unwrap();
        assert!(ids.contains(&garbage) && ids.contains(&newer) && ids.contains(&good1));
        s.delete_expired(SystemTime::now()).await.unwrap();
        // A version-checked save over an unreadable record is a conflict; an unconditional
        // one replaces it; delete removes it.
        let e = s.save(&record(&garbage, 2, HOUR, b"fix"), Some(1)).await.unwrap_err();
        assert!(e.is_conflict(), "{e}");
        s.save(&record(&garbage, 2, HOUR, b"fix"), None).await.unwrap();
        assert_eq!(s.load(&garbage).await.unwrap().unwrap().data, b"fix");
        assert!(s.delete(&newer).await.unwrap());
        assert_eq!(s.load(&newer).await.unwrap(), None);
    }

    /// Two contexts (two applications) sharing one store, and the store as opened (the
    /// context ""): the same id in each is three records; none loads, overwrites, lists,
    /// deletes or expires another's.
    pub(crate) async fn contexts_apart(b: &dyn Backend) {
        let base = b.store();
        let shop = base.for_context("shop");
        let cart = base.for_context("/cart");
        assert!(
            shop.name().starts_with(base.name()) && shop.name().contains("context 'shop'"),
            "{}",
            shop.name()
        );
        let id = unique("ctx");
        shop.save(&record(&id, 1, HOUR, b"shop"), None).await.unwrap();
        assert_eq!(cart.load(&id).await.unwrap(), None, "another context's record loaded");
        assert_eq!(
            base.load(&id).await.unwrap(),
            None,
            "a context's record loaded by the store as opened"
        );
        // A version check sees only the context's own record.
        let e = cart.save(&record(&id, 2, HOUR, b"x"), Some(1)).await.unwrap_err();
        assert!(matches!(e, StoreError::Conflict { found: None, .. }), "{e}");
        cart.save(&record(&id, 7, HOUR, b"cart"), None).await.unwrap();
        base.save(&record(&id, 3, HOUR, b"base"), None).await.unwrap();
        let loaded = |s: Arc<dyn SessionStore>| async move { s.load(&id).await.unwrap().map(|r| (r.version, r.data)) };
        assert_eq!(
            loaded(shop.clone()).await,
            Some((1, b"shop".to_vec())),
            "overwritten by another context"
        );
        assert_eq!(loaded(cart.clone()).await, Some((7, b"cart".to_vec())));
        assert_eq!(base.load(&id).await.unwrap().map(|r| r.data), Some(b"base".to_vec()));
        // Listings are per context.
        let only_cart = unique("only-cart");
        cart.save(&record(&only_cart, 1, HOUR, b""), None).await.unwrap();
        assert!(cart.list_ids().await.unwrap().contains(&only_cart));
        assert!(
            !shop.list_ids().await.unwrap().contains(&only_cart),
            "listed in another context"
        );
        assert!(
            !base.list_ids().await.unwrap().contains(&only_cart),
            "listed by the store as opened"
        );
        // Deletes are per context.
        assert!(cart.delete(&id).await.unwrap());
        assert!(!cart.delete(&id).await.unwrap());
        assert_eq!(
            loaded(shop.clone()).await,
            Some((1, b"shop".to_vec())),
            "deleted by another context"
        );
        assert!(base.load(&id).await.unwrap().is_some(), "deleted by another context");
        // Expiry sweeps are per context (Redis expires natively: its sweep does nothing).
        let old = unique("old");
        let mut expired = record(&old, 1, HOUR, b"");
        expired.expires_at_ms = expired.last_access_ms - 1;
        shop.save(&expired, None).await.unwrap();
        let kept = shop.list_ids().await.unwrap().contains(&old);
        assert_eq!(
            kept,
            !base.name().starts_with("redis"),
            "an expired record is kept until the sweep, except on Redis"
        );
        cart.delete_expired(SystemTime::now()).await.unwrap();
        base.delete_expired(SystemTime::now()).await.unwrap();
        assert_eq!(
            shop.list_ids().await.unwrap().contains(&old),
            kept,
            "swept by another context"
        );
        shop.delete_expired(SystemTime::now()).await.unwrap();
        assert!(
            !shop.list_ids().await.unwrap().contains(&old),
            "swept by its own context"
        );
        // Re-scoping replaces the context, it does not nest.
        let again = cart.for_context("shop");
        assert_eq!(again.load(&id).await.unwrap().map(|r| r.data), Some(b"shop".to_vec()));
        shop.health().await.unwrap();
    }
}

/// One test per suite function for a backend made by `$make` (an async expression giving
/// `Option<impl Backend + 'static>`; `None` skips).
macro_rules! conformance {
    ($make:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn round_trip() {
            let Some(b) = $make else { return };
            crate::suite::round_trip(&b).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conflict() {
            let Some(b) = $make else { return };
            crate::suite::conflict(&b).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_writers() {
            let Some(b) = $make else { return };
            crate::suite::concurrent_writers(std::sync::Arc::new(b)).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn delete() {
            let Some(b) = $make else { return };
            crate::suite::delete(&b).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn expiry() {
            let Some(b) = $make else { return };
            crate::suite::expiry(&b).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn list_ids() {
            let Some(b) = $make else { return };
            crate::suite::list_ids(&b).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn corrupt_isolated() {
            let Some(b) = $make else { return };
            crate::suite::corrupt_isolated(&b).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn contexts_apart() {
            let Some(b) = $make else { return };
            crate::suite::contexts_apart(&b).await;
        }
    };
}

#[cfg(feature = "file")]
mod store_file {
    use std::path::PathBuf;
    use std::time::{Duration, SystemTime};

    use tribes_sessions::{FileStore, SessionStore};

    use super::*;

    pub(crate) struct FileBackend {
        store: FileStore,
    }

    impl Drop for FileBackend {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.store.dir());
        }
    }

    impl Backend for FileBackend {
        fn store(&self) -> &dyn SessionStore {
            &self.store
        }
        fn write_raw<'a>(&'a self, id: &'a SessionId, bytes: &'a [u8]) -> BoxFut<'a, ()> {
            let id = id.to_string();
            Box::pin(async move { std::fs::write(self.store.dir().join(format!("{id}.session")), bytes).unwrap() })
        }
    }

    pub(crate) fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tribes-store-{tag}-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub(crate) async fn backend() -> Option<FileBackend> {
        Some(FileBackend {
            store: FileStore::open(temp_dir("conf")).await.unwrap(),
        })
    }

    conformance!(backend().await);

    /// A crash mid-save leaves a temp file and the old record: the old record loads, the temp
    /// file is not a session and is cleaned up; a torn write under the real name is corrupt,
    /// not misread.
    #[tokio::test]
    async fn crash_mid_write() {
        let dir = temp_dir("crash");
        let store = FileStore::open(&dir).await.unwrap();
        let id = unique("crash");
        store.save(&record(&id, 1, HOUR, b"old"), None).await.unwrap();
        // What a crash between write and rename leaves: a partial hidden temp file.
        let tmp = dir.join(format!(".{id}.00000000deadbeef.tmp"));
        std::fs::write(&tmp, b"TRIBSESS\x00\x01partial").unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(old)
            .unwrap();
        drop(store);

        let store = FileStore::open(&dir).await.unwrap();
        assert!(!tmp.exists(), "stale temp file removed on open");
        assert_eq!(store.load(&id).await.unwrap().unwrap().data, b"old");
        assert_eq!(store.list_ids().await.unwrap(), vec![id]);

        // A torn file under the real name (a filesystem without atomic rename, a disk error).
        let path = dir.join(format!("{id}.session"));
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 2]).unwrap();
        let e = store.load(&id).await.unwrap_err();
        assert!(e.is_corrupt() && e.to_string().contains("length mismatch"), "{e}");
        // A valid file copied under another name is caught too.
        let other = unique("copy");
        std::fs::write(dir.join(format!("{other}.session")), &full).unwrap();
        let e = store.load(&other).await.unwrap_err();
        assert!(e.to_string().contains("belongs to"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Files carry a version header: magic and format first.
    #[tokio::test]
    async fn file_has_version_header() {
        let dir = temp_dir("header");
        let store = FileStore::open(&dir).await.unwrap();
        store.save(&record(&named("abc"), 9, HOUR, b"d"), None).await.unwrap();
        let file = format!("{}.session", named("abc"));
        let bytes = std::fs::read(dir.join(&file)).unwrap();
        assert_eq!(&bytes[..10], b"TRIBSESS\x00\x01");
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers,
            vec![std::ffi::OsString::from(file)],
            "no temp file left behind"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A context's records live in the subdirectory named by `store_namespace`, made by its
    /// first save; the directory's own files (records written before stores were
    /// namespaced) stay the store-as-opened's; a context name cannot leave the directory.
    #[tokio::test]
    async fn contexts_in_subdirectories() {
        let dir = temp_dir("ctx");
        let store = FileStore::open(&dir).await.unwrap();
        store
            .save(&record(&named("legacy"), 1, HOUR, b"old"), None)
            .await
            .unwrap();
        let cart = store.clone().with_context("/cart");
        assert_eq!(cart.dir(), dir.join("%2Fcart"));
        assert!(cart.list_ids().await.unwrap().is_empty());
        assert_eq!(cart.delete_expired(SystemTime::now()).await.unwrap(), 0);
        assert!(!cart.dir().exists(), "made by the first save, not by reads");
        cart.save(&record(&named("abc"), 1, HOUR, b"c"), None).await.unwrap();
        assert!(dir.join("%2Fcart").join(format!("{}.session", named("abc"))).is_file());
        assert_eq!(store.list_ids().await.unwrap(), vec![named("legacy")]);
        assert_eq!(store.load(&named("legacy")).await.unwrap().unwrap().data, b"old");
        assert_eq!(cart.load(&named("legacy")).await.unwrap(), None);
        let evil = store.clone().with_context("../../etc");
        assert_eq!(evil.dir(), dir.join("%2E%2E%2F%2E%2E%2Fetc"));
        // The directory itself gone: an error, not a silently re-made subdirectory.
        std::fs::remove_dir_all(&dir).unwrap();
        let e = cart.save(&record(&named("abc"), 2, HOUR, b""), None).await.unwrap_err();
        assert!(e.to_string().contains("does the directory still exist"), "{e}");
        assert!(!dir.exists());
    }

    /// The directory vanishing is an error naming the store and the fix.
    #[tokio::test]
    async fn directory_gone() {
        let dir = temp_dir("gone");
        let store = FileStore::open(&dir).await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let e = store
            .save(&record(&named("an-id"), 1, HOUR, b""), None)
            .await
            .unwrap_err();
        let m = e.to_string();
        // The session is named by its log hash, never by its id (OWASP: ids stay out of logs).
        let id = named("an-id");
        let hash = id.log_id().to_string();
        assert!(
            m.starts_with(&format!("file store at {}", dir.display()))
                && m.contains(&hash)
                && !m.contains(&id.to_string()),
            "{m}"
        );
        assert!(m.contains("does the directory still exist"), "{m}");
        let io = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            io.map(std::io::Error::kind),
            Some(std::io::ErrorKind::NotFound),
            "the file system's error is the source: {e:?}"
        );
        assert!(store.health().await.is_err());
    }
}

#[cfg(feature = "postgres")]
mod store_postgres {
    use tribes_sessions::{PostgresStore, SessionStore};

    use super::*;

    pub(crate) struct PgBackend {
        store: PostgresStore,
    }

    impl Backend for PgBackend {
        fn store(&self) -> &dyn SessionStore {
            &self.store
        }
        fn write_raw<'a>(&'a self, id: &'a SessionId, bytes: &'a [u8]) -> BoxFut<'a, ()> {
            let id = id.to_string();
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO tribes_sessions (id, version, expires_at_ms, record) VALUES ($1, 0, 9000000000000000, $2) \
                     ON CONFLICT (context, id) DO UPDATE SET record = EXCLUDED.record, version = 0",
                )
                .bind(id)
                .bind(bytes)
                .execute(self.store.pool())
                .await
                .unwrap();
            })
        }
    }

    pub(crate) async fn backend() -> Option<PgBackend> {
        let url = service_env("TRIBES_TEST_POSTGRES_URL");
        Some(PgBackend {
            store: PostgresStore::connect(&url).await.unwrap(),
        })
    }

    conformance!(backend().await);

    /// The migration is idempotent and safe when many nodes start at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrate_concurrently() {
        let Some(b) = backend().await else { return };
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let s = b.store.clone();
            tasks.push(tokio::spawn(async move { s.migrate().await }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        b.store.health().await.unwrap();
    }

    /// A table made by the first migration (one context for all, primary key `id`) is
    /// migrated in place: its rows stay readable by the store as connected (context ""), the
    /// CHANGELOG's `UPDATE` hands them to a manager's context, and the same id may then live
    /// in two contexts.
    #[cfg(feature = "file")]
    #[tokio::test]
    async fn migrates_a_table_without_contexts() {
        use std::str::FromStr;
        let url = service_env("TRIBES_TEST_POSTGRES_URL");
        let schema = format!("tribes_mig_{:016x}", rand::random::<u64>());
        let admin = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await
            .unwrap();
        let options = sqlx::postgres::PgConnectOptions::from_str(&url)
            .unwrap()
            .options([("search_path", schema.as_str())]);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .unwrap();
        sqlx::raw_sql(include_str!("../migrations/20261122000000_tribes_sessions.sql"))
            .execute(&pool)
            .await
            .unwrap();
        // A record in the one layout every backend keeps, as the file store writes it.
        let dir = super::store_file::temp_dir("pg-mig");
        let id = unique("before");
        let files = tribes_sessions::FileStore::open(&dir).await.unwrap();
        files.save(&record(&id, 4, HOUR, b"kept"), None).await.unwrap();
        let bytes = std::fs::read(dir.join(format!("{id}.session"))).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        sqlx::query(
            "INSERT INTO tribes_sessions (id, version, expires_at_ms, record) VALUES ($1, 4, 9000000000000000, $2)",
        )
        .bind(id.to_string())
        .bind(&bytes)
        .execute(&pool)
        .await
        .unwrap();

        let store = PostgresStore::from_pool(pool.clone());
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
        assert_eq!(
            store.load(&id).await.unwrap().unwrap().data,
            b"kept",
            "existing rows stay readable"
        );
        let app = store.clone().with_context("app");
        assert_eq!(app.load(&id).await.unwrap(), None);
        sqlx::query("UPDATE tribes_sessions SET context = 'app' WHERE context = ''")
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(app.load(&id).await.unwrap().unwrap().version, 4);
        assert_eq!(store.load(&id).await.unwrap(), None);
        store.save(&record(&id, 1, HOUR, b"other"), None).await.unwrap();
        assert_eq!(app.load(&id).await.unwrap().unwrap().data, b"kept");
        pool.close().await;
        sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&admin)
            .await
            .unwrap();
    }

    /// An unreachable server: the error names the store and asks whether it is running.
    #[tokio::test]
    async fn unreachable() {
        let e = PostgresStore::connect("postgres://u:secret@127.0.0.1:1/db")
            .await
            .unwrap_err();
        let m = e.to_string();
        eprintln!("{m}");
        assert!(e.is_unavailable(), "{m}");
        assert!(
            m.starts_with("postgres store at postgres://u:***@127.0.0.1:1/db"),
            "{m}"
        );
        assert!(m.contains("is PostgreSQL running") && !m.contains("secret"), "{m}");
        assert!(
            e.source().is_some_and(|s| s.is::<sqlx::Error>()),
            "the client's error is the source: {e:?}"
        );
    }
}

#[cfg(feature = "redis")]
mod store_redis {
    use tribes_sessions::{RedisStore, SessionStore};

    use super::*;

    /// A Redis store and a raw connection to the same server or cluster (`C`), for
    /// writing what the store never would.
    pub(crate) struct RedisBackend<C> {
        pub(crate) store: RedisStore,
        pub(crate) raw: C,
    }

    impl<C: redis::aio::ConnectionLike + Clone + Send + Sync> Backend for RedisBackend<C> {
        fn store(&self) -> &dyn SessionStore {
            &self.store
        }
        fn write_raw<'a>(&'a self, id: &'a SessionId, bytes: &'a [u8]) -> BoxFut<'a, ()> {
            let id = id.to_string();
            Box::pin(async move {
                let key = format!("{}{id}", self.store.prefix());
                let _: () = redis::cmd("HSET")
                    .arg(&key)
                    .arg("v")
                    .arg("0")
                    .arg("r")
                    .arg(bytes)
                    .query_async(&mut self.raw.clone())
                    .await
                    .unwrap();
            })
        }
    }

    pub(crate) async fn backend() -> Option<RedisBackend<redis::aio::MultiplexedConnection>> {
        let url = service_env("TRIBES_TEST_REDIS_URL");
        let prefix = format!("test:{:016x}:", rand::random::<u64>());
        let store = RedisStore::connect(&url).await.unwrap().with_prefix(prefix);
        let raw = redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        Some(RedisBackend { store, raw })
    }

    conformance!(backend().await);

    /// A key of another type where a session should be: corrupt, isolated, replaceable.
    #[tokio::test]
    async fn wrong_type_key() {
        let Some(b) = backend().await else { return };
        let id = unique("str");
        let key = format!("{}{id}", b.store.prefix());
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg("garbage")
            .query_async(&mut b.raw.clone())
            .await
            .unwrap();
        let e = b.store.load(&id).await.unwrap_err();
        let hash = tribes_sessions::LogId::of_text(&id.to_string()).to_string();
        assert!(
            e.is_corrupt() && e.to_string().contains(&hash) && !e.to_string().contains(&id.to_string()),
            "{e}"
        );
        assert_eq!(record_error(&e), Some(&RecordError::NotAHash), "{e:?}");
        assert!(
            b.store
                .save(&record(&id, 2, HOUR, b""), Some(1))
                .await
                .unwrap_err()
                .is_conflict()
        );
        b.store.save(&record(&id, 2, HOUR, b"ok"), None).await.unwrap();
        assert_eq!(b.store.load(&id).await.unwrap().unwrap().data, b"ok");
    }

    /// The TTL is native: PEXPIRE to the record's expiry.
    #[tokio::test]
    async fn native_ttl() {
        let Some(b) = backend().await else { return };
        let id = unique("ttl");
        b.store
            .save(&record(&id, 1, Duration::from_secs(100), b""), None)
            .await
            .unwrap();
        let key = format!("{}{id}", b.store.prefix());
        let pttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut b.raw.clone())
            .await
            .unwrap();
        assert!((95_000..=100_000).contains(&pttl), "{pttl}");
    }

    /// Nothing listening: the error names the store and asks whether Redis runs.
    #[tokio::test]
    async fn unreachable() {
        let e = RedisStore::connect("redis://:secret@127.0.0.1:1").await.unwrap_err();
        let m = e.to_string();
        eprintln!("{m}");
        assert!(e.is_unavailable(), "{m}");
        assert!(m.starts_with("redis store at redis://:***@127.0.0.1:1: "), "{m}");
        assert!(m.contains("is Redis running") && !m.contains("secret"), "{m}");
        assert!(
            e.source().is_some_and(|s| s.is::<redis::RedisError>()),
            "the client's error is the source: {e:?}"
        );
    }
}

#[cfg(feature = "redis")]
mod store_redis_cluster {
    use tribes_sessions::{RedisStore, SessionStore};

    use super::*;

    type ClusterBackend = super::store_redis::RedisBackend<redis::cluster_async::ClusterConnection>;

    fn urls() -> Option<Vec<String>> {
        Some(
            service_env("TRIBES_TEST_REDIS_CLUSTER_URLS")
                .split(',')
                .map(str::to_owned)
                .collect(),
        )
    }

    pub(crate) async fn backend() -> Option<ClusterBackend> {
        let urls = urls()?;
        let prefix = format!("test:{:016x}:", rand::random::<u64>());
        let store = RedisStore::connect_cluster(&urls).await.unwrap().with_prefix(prefix);
        let raw = redis::cluster::ClusterClient::new(urls)
            .unwrap()
            .get_async_connection()
            .await
            .unwrap();
        Some(ClusterBackend { store, raw })
    }

    conformance!(backend().await);

    /// Keys land on every master, and list_ids finds them all.
    #[tokio::test]
    async fn spread_over_masters() {
        let Some(b) = backend().await else { return };
        let ids: Vec<SessionId> = (0..60).map(|i| unique(&format!("spread{i}"))).collect();
        for id in &ids {
            b.store.save(&record(id, 1, HOUR, b""), None).await.unwrap();
        }
        let mut masters = std::collections::HashSet::new();
        for id in &ids {
            let slot: u16 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(format!("{}{id}", b.store.prefix()))
                .query_async(&mut b.raw.clone())
                .await
                .unwrap();
            masters.insert(slot / 5462);
        }
        assert_eq!(
            masters.len(),
            3,
            "the ids should hash to all three masters' slot ranges"
        );
        let mut listed = b.store.list_ids().await.unwrap();
        listed.sort();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(listed, want);
        b.store.health().await.unwrap();
    }
}

/// A Redis that goes away mid-run (kill -9) and comes back: errors name the store, nothing is
/// corrupted, every acknowledged save survives, and the same store object works again.
#[cfg(feature = "redis")]
mod store_redis_outage {
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicU64, Ordering};

    use tribes_sessions::{RedisStore, SessionStore};

    use super::*;

    /// A private redis-server with an fsync-always append log, killed on drop.
    struct Server {
        child: Child,
    }

    impl Server {
        fn start(port: u16, dir: &Path) -> Server {
            let child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", ""])
                .args([
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--protected-mode",
                    "no",
                ])
                .arg("--dir")
                .arg(dir)
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server (scripts/test-services.sh installs it)");
            Server { child }
        }

        fn kill(&mut self) {
            let _ = self.child.kill(); // SIGKILL
            let _ = self.child.wait();
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.kill();
        }
    }

    async fn wait_until<F: Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
        for _ in 0..200 {
            if f().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_and_restarted() {
        // The shared Redis being configured means redis-server is installed.
        service_env("TRIBES_TEST_REDIS_URL");
        let dir: PathBuf = std::env::temp_dir().join(format!("tribes-redis-outage-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("redis://127.0.0.1:{port}");
        let mut server = Server::start(port, &dir);
        let store = Arc::new({
            let mut attempt = 0;
            loop {
                match RedisStore::connect(&url).await {
                    Ok(s) => break s,
                    Err(e) if attempt < 50 => {
                        attempt += 1;
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        });
        let (a, b) = (unique("a"), unique("b"));
        store.save(&record(&a, 1, HOUR, b"a1"), None).await.unwrap();
        store.save(&record(&b, 1, HOUR, b"b1"), None).await.unwrap();

        // A writer bumps `a` as fast as it can; we kill Redis under it.
        let acked = Arc::new(AtomicU64::new(1));
        let writer = {
            let (store, acked, a) = (store.clone(), acked.clone(), a);
            tokio::spawn(async move {
                let mut errors = Vec::new();
                let mut v = 1;
                while errors.len() < 3 {
                    let next = StoredSession {
                        data: format!("a{}", v + 1).into_bytes(),
                        ..record(&a, v + 1, HOUR, b"")
                    };
                    match store.save(&next, Some(v)).await {
                        Ok(()) => {
                            v += 1;
                            acked.store(v, Ordering::SeqCst);
                        }
                        Err(e) => errors.push(e),
                    }
                }
                errors
            })
        };
        wait_until("some saves", || {
            let acked = acked.clone();
            async move { acked.load(Ordering::SeqCst) > 20 }
        })
        .await;
        server.kill();
        let errors = writer.await.unwrap();
        let last_acked = acked.load(Ordering::SeqCst);
        for e in &errors {
            let m = e.to_string();
            assert!(e.is_unavailable(), "{m}");
            assert!(
                m.starts_with(&format!("redis store at {url}: ")) && m.contains("is Redis running"),
                "{m}"
            );
        }
        eprintln!("while down: {}", errors[0]);
        let e = store.load(&b).await.unwrap_err();
        assert!(e.is_unavailable() && e.to_string().starts_with(store.name()), "{e}");
        assert!(store.health().await.is_err());

        // Back on the same port and data directory: the same store object works again.
        let _server = Server::start(port, &dir);
        wait_until("the store to reconnect", || {
            let store = store.clone();
            async move { store.health().await.is_ok() }
        })
        .await;
        let got = store.load(&a).await.unwrap().expect("a survives");
        // Every acknowledged save is there; one in flight at the kill may or may not be.
        assert!(
            got.version == last_acked || got.version == last_acked + 1,
            "{} vs {last_acked}",
            got.version
        );
        assert_eq!(
            got.data,
            format!("a{}", got.version).into_bytes(),
            "record and version agree"
        );
        assert_eq!(store.load(&b).await.unwrap().unwrap().data, b"b1");
        let mut ids = store.list_ids().await.unwrap();
        ids.sort();
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(ids, want);
        store
            .save(&record(&a, got.version + 1, HOUR, b"after"), Some(got.version))
            .await
            .unwrap();
        drop(_server);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
