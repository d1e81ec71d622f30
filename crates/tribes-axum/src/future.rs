//! [`ResponseFuture`]: the future of [`ReplicatedSessionsService`](crate::ReplicatedSessionsService).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::Response;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The response future of [`ReplicatedSessionsService`](crate::ReplicatedSessionsService):
/// the inner service's response, after the session was committed and the cookie set.
pub struct ResponseFuture<B, E> {
    pub(crate) inner: BoxFuture<Result<Response<B>, E>>,
}

impl<B, E> ResponseFuture<B, E> {
    pub(crate) fn new(f: impl Future<Output = Result<Response<B>, E>> + Send + 'static) -> Self {
        ResponseFuture { inner: Box::pin(f) }
    }
}

impl<B, E> fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<B, E> Future for ResponseFuture<B, E> {
    type Output = Result<Response<B>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}
