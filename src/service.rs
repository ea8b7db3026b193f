//! [`AppService`]: a built app, endpoint or chain, erased to one type.
//!
//! Apps are assembled from the config at run time, so their types are erased at one deliberate
//! boundary: here. Unlike tower's `BoxCloneSyncService`, whose every clone allocates a new box,
//! an `AppService` is shared behind an `Arc`: the gateway hands one out per request for the price of
//! a reference count.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Service, ServiceExt};

use crate::{Request, Response};

/// The future of an [`AppService`].
pub type AppFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

trait Erased: Send + Sync {
    fn call(&self, req: Request) -> AppFuture;
}

struct Shared<S>(S);

impl<S> Erased for Shared<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    fn call(&self, req: Request) -> AppFuture {
        // tower services are called through `&mut self`: each call gets its own clone, cheap for
        // every parapet service (they hold `Arc`s).
        Box::pin(self.0.clone().oneshot(req))
    }
}

struct FnService<F>(F);

impl<F> Erased for FnService<F>
where
    F: Fn(Request) -> AppFuture + Send + Sync + 'static,
{
    fn call(&self, req: Request) -> AppFuture {
        (self.0)(req)
    }
}

/// A built app or endpoint: a cloneable service that never fails (every failure is a response).
#[derive(Clone)]
pub struct AppService {
    inner: Arc<dyn Erased>,
}

impl AppService {
    /// Erases `service`.
    pub fn new<S>(service: S) -> Self
    where
        S: Service<Request, Response = Response, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Self {
            inner: Arc::new(Shared(service)),
        }
    }

    /// An app from a function returning the response future directly: one allocation per request
    /// (the future's box) and no tower readiness protocol, for endpoints that are always ready.
    pub fn from_fn<F>(f: F) -> Self
    where
        F: Fn(Request) -> AppFuture + Send + Sync + 'static,
    {
        Self {
            inner: Arc::new(FnService(f)),
        }
    }

    /// Handles one request.
    pub fn handle(&self, req: Request) -> AppFuture {
        self.inner.call(req)
    }
}

impl std::fmt::Debug for AppService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppService").finish_non_exhaustive()
    }
}

impl Service<Request> for AppService {
    type Response = Response;
    type Error = Infallible;
    type Future = AppFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness is awaited inside `handle`, on the call's own clone.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> AppFuture {
        self.handle(req)
    }
}
