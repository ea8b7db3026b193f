//! Middleware chains: `middlewares = ["a", "b", "c"]` builds `a(b(c(endpoint)))`.
//!
//! `a` is the outermost: it sees the request first and has the last word on the response head. A
//! [`Middleware`] is a built layer, made once when the config is built (files opened, pages read) and
//! applied to every app and listener that names it. Kinds are registered in a [`crate::Registry`]
//! (the built-in ones by `crate::builtins`).

use std::convert::Infallible;
use std::sync::Arc;

use tower::{Layer, Service};

use crate::{AppService, Request, Response};

/// A built middleware: wraps a service in one layer.
#[derive(Clone)]
pub struct Middleware {
    wrap: Arc<dyn Fn(AppService) -> AppService + Send + Sync>,
}

impl std::fmt::Debug for Middleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Middleware").finish_non_exhaustive()
    }
}

impl Middleware {
    /// A middleware from any tower layer whose service, like every parapet service, never fails
    /// (failures are responses). Wrap a fallible layer in the `errors` layer's service first.
    pub fn from_layer<L>(layer: L) -> Middleware
    where
        L: Layer<AppService> + Send + Sync + 'static,
        L::Service: Service<Request, Response = Response, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        Middleware {
            wrap: Arc::new(move |inner| AppService::new(layer.layer(inner))),
        }
    }

    /// Wraps `inner` in this middleware.
    pub fn wrap(&self, inner: AppService) -> AppService {
        (self.wrap)(inner)
    }
}

/// Wraps `endpoint` in `chain`, the first middleware outermost.
pub fn build<'a>(
    chain: impl DoubleEndedIterator<Item = &'a Middleware>,
    endpoint: AppService,
) -> AppService {
    chain.rev().fold(endpoint, |inner, m| m.wrap(inner))
}
