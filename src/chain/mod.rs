//! Middleware chains: `middlewares = ["a", "b", "c"]` builds `a(b(c(endpoint)))`.
//!
//! `a` is the outermost: it sees the request first and has the last word on the response head. A
//! [`Middleware`] is a built layer, made once when the config loads (files opened, pages read) and
//! applied to every app and listener that names it. Built-in kinds (`access_log`, `compress`, `errors`,
//! `headers`) read their tables in [`kinds`]; a program embedding parapet registers its own with
//! [`crate::Registry::register_middleware`].

pub mod kinds;

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

/// A middleware as an app or listener names it.
#[derive(Clone, Debug)]
pub struct ChainEntry {
    /// The name in the config (an instance, or a kind used with its defaults).
    pub name: String,
    /// The built middleware.
    pub middleware: Middleware,
}

/// Wraps `endpoint` in `chain`, the first entry outermost.
pub fn build(chain: &[ChainEntry], endpoint: AppService) -> AppService {
    chain
        .iter()
        .rev()
        .fold(endpoint, |inner, entry| entry.middleware.wrap(inner))
}
