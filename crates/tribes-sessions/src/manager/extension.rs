//! What a layer above reaches through the manager: its channel, and a value per type
//! attached to it ([`SessionManager::extension`]), so that layer needs no global registry.

use std::any::{Any, TypeId};
use std::sync::Arc;

use super::{SessionManager, lock};

impl SessionManager {
    /// The channel this manager replicates over (the one it was started with).
    pub fn channel(&self) -> &tribes::Channel {
        &self.inner.channel
    }

    /// The value of type `T` attached to this manager: made with `T::default()` on the
    /// first call and shared by every clone of the manager. A layer above keeps its
    /// per-manager state here instead of in a process-wide registry (tribes-axum keeps
    /// its request counters, which its status and metrics routers read).
    ///
    /// # Examples
    /// ```no_run
    /// # async fn f(channel: tribes::Channel) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// #[derive(Default)]
    /// struct Hits(AtomicU64);
    ///
    /// let manager = tribes_sessions::SessionManager::builder("/app").start(channel).await?;
    /// manager.extension::<Hits>().0.fetch_add(1, Ordering::Relaxed);
    /// assert_eq!(manager.clone().extension::<Hits>().0.load(Ordering::Relaxed), 1);
    /// # Ok(()) }
    /// ```
    pub fn extension<T: Any + Send + Sync + Default>(&self) -> Arc<T> {
        let mut all = lock(&self.inner.extensions);
        let any = all
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()))
            .clone();
        drop(all);
        any.downcast::<T>()
            .unwrap_or_else(|_| unreachable!("the value stored under T's TypeId is a T"))
    }
}
