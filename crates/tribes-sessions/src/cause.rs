//! [`Cause`]: the underlying error of an error of this crate, typed but opaque.

use std::error::Error;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// The underlying error of an error of this crate: the encoder's, the file system's, the
/// database client's, the Redis client's, or one this crate found itself (such as a
/// damaged store record, [`RecordError`](crate::RecordError)).
///
/// It keeps the concrete error, so code can reach it, without making it part of this
/// crate's API: a major release of a dependency does not change this type. The field that
/// holds it is the `#[source]` of its error, and that error's
/// [`source()`](std::error::Error::source) is the concrete error itself, not this wrapper:
///
/// ```
/// use std::error::Error;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// # use tribes_sessions::{FileStore, StoreError};
/// # let file = std::env::temp_dir().join(format!("tribes-doc-cause-{}", std::process::id()));
/// # std::fs::write(&file, b"not a directory").unwrap();
/// // A directory that cannot be created: the file system's error is the source.
/// let e: StoreError = FileStore::open(file.join("sessions")).await.unwrap_err();
/// let io = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
/// assert!(io.is_some(), "{e}");
/// // The same through the field.
/// if let StoreError::Backend { cause, .. } = &e {
///     assert!(cause.downcast_ref::<std::io::Error>().is_some());
/// }
/// # std::fs::remove_file(&file).unwrap();
/// # });
/// ```
///
/// `Display` and `Debug` are the inner error's. It dereferences to the inner error
/// (`&(dyn Error + Send + Sync)`), and it is deliberately no `Error` itself: an error chain
/// goes straight from this crate's error to the concrete one, without a line printed twice.
/// Two causes are equal when their messages are (the errors of dependencies rarely
/// implement `PartialEq`), which keeps `PartialEq` on the errors that hold one.
#[derive(Clone)]
pub struct Cause {
    inner: Arc<dyn Error + Send + Sync + 'static>,
}

impl Cause {
    /// Wraps `error`.
    pub fn new(error: impl Error + Send + Sync + 'static) -> Cause {
        Cause { inner: Arc::new(error) }
    }

    /// The concrete error, if it is a `T`.
    pub fn downcast_ref<T: Error + 'static>(&self) -> Option<&T> {
        self.inner.downcast_ref::<T>()
    }

    /// Whether the concrete error is a `T`.
    pub fn is<T: Error + 'static>(&self) -> bool {
        self.inner.is::<T>()
    }

    /// The concrete error as a trait object.
    pub fn as_error(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.inner
    }
}

impl Deref for Cause {
    type Target = dyn Error + Send + Sync + 'static;

    fn deref(&self) -> &Self::Target {
        &*self.inner
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

/// By message: the concrete errors seldom compare.
impl PartialEq for Cause {
    fn eq(&self, other: &Cause) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) || self.inner.to_string() == other.inner.to_string()
    }
}

impl Eq for Cause {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_reaches_its_concrete_error_and_compares_by_message() {
        let io = || std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let c = Cause::new(io());
        assert!(c.is::<std::io::Error>());
        assert_eq!(
            c.downcast_ref::<std::io::Error>().map(std::io::Error::kind),
            Some(std::io::ErrorKind::PermissionDenied)
        );
        assert!(c.downcast_ref::<std::fmt::Error>().is_none());
        assert_eq!(c.to_string(), "denied");
        assert_eq!(c, Cause::new(io()));
        assert_ne!(c, Cause::new(std::fmt::Error));
        assert_eq!(format!("{c:?}"), format!("{:?}", io()));
    }
}
