//! The registry of kinds: how `handler = { kind = "..." }` becomes a service and
//! `[middlewares.NAME] kind = "..."` a layer.
//!
//! parapet's own kinds are registered by [`Registry::new`]: the handlers `respond`, `static`,
//! `redirect`, `echo` and the middlewares `access_log`, `compress`, `errors`, `headers`. A program
//! embedding parapet registers its own handlers, either as a fixed service
//! ([`Registry::register_service`], an axum `Router` say) or as a factory that reads its own keys from
//! the handler's table ([`Registry::register_handler`]), and its own middlewares
//! ([`Registry::register_middleware`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use parapet_middlewares::{Body, BoxError, GatewayError, GatewayErrorKind};
use tower::{Service, ServiceExt};

use crate::chain::Middleware;
use crate::config::Table;
use crate::{AppService, Request, Response};

/// Builds a handler from its table (the `kind` key already read). Records errors on the table and
/// returns `None` when the table is invalid.
pub type HandlerFactory = dyn Fn(&mut Table<'_>) -> Option<AppService> + Send + Sync;

/// Builds a middleware from its table (the `kind` key already read; empty when the kind is named
/// bare in a chain). Records errors on the table and returns `None` when the table is invalid.
pub type MiddlewareFactory = dyn Fn(&mut Table<'_>) -> Option<Middleware> + Send + Sync;

/// The handler and middleware kinds a config may name.
#[derive(Clone)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<HandlerFactory>>,
    middlewares: BTreeMap<String, Arc<MiddlewareFactory>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .field("middlewares", &self.middlewares.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// A registry with parapet's built-in handler kinds.
    pub fn new() -> Self {
        let mut registry = Self {
            handlers: BTreeMap::new(),
            middlewares: BTreeMap::new(),
        };
        crate::handlers::register_builtins(&mut registry);
        crate::chain::kinds::register_builtins(&mut registry);
        registry
    }

    /// Registers a handler kind built from its table by `factory`. A later registration of the same
    /// name replaces the earlier one.
    pub fn register_handler<F>(&mut self, kind: impl Into<String>, factory: F) -> &mut Self
    where
        F: Fn(&mut Table<'_>) -> Option<AppService> + Send + Sync + 'static,
    {
        self.handlers.insert(kind.into(), Arc::new(factory));
        self
    }

    /// Registers a fixed tower service (an axum `Router`, a `service_fn`...) as a handler kind that
    /// takes no keys besides `kind`. An `Err` from the service becomes a 500 response.
    pub fn register_service<S, B>(&mut self, kind: impl Into<String>, service: S) -> &mut Self
    where
        S: Service<Request, Response = http::Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let app = box_service(service);
        self.register_handler(kind, move |_| Some(app.clone()))
    }

    /// Registers a middleware kind built from its table by `factory`. A later registration of the
    /// same name replaces the earlier one.
    pub fn register_middleware<F>(&mut self, kind: impl Into<String>, factory: F) -> &mut Self
    where
        F: Fn(&mut Table<'_>) -> Option<Middleware> + Send + Sync + 'static,
    {
        self.middlewares.insert(kind.into(), Arc::new(factory));
        self
    }

    /// The middleware factory registered for `kind`.
    pub fn middleware_factory(&self, kind: &str) -> Option<&MiddlewareFactory> {
        self.middlewares.get(kind).map(|f| &**f)
    }

    /// The names of every registered middleware kind, sorted.
    pub fn middleware_kinds(&self) -> impl Iterator<Item = &str> {
        self.middlewares.keys().map(String::as_str)
    }

    /// The factory registered for `kind`.
    pub fn handler_factory(&self, kind: &str) -> Option<&HandlerFactory> {
        self.handlers.get(kind).map(|f| &**f)
    }

    /// The names of every registered handler kind, sorted.
    pub fn handler_kinds(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }
}

/// Erases a handler service into an [`AppService`]: its body is wrapped in [`Body`] and its errors
/// become 500 responses, so the service never fails.
pub fn box_service<S, B>(service: S) -> AppService
where
    S: Service<Request, Response = http::Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    AppService::new(Infallibly(service))
}

/// Turns a service's errors, from `poll_ready` or `call`, into 500 responses.
#[derive(Clone)]
struct Infallibly<S>(S);

impl<S, B> Service<Request> for Infallibly<S>
where
    S: Service<Request, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness is awaited on a clone in `call`, where an error can still become a response.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move {
            let result = match inner.oneshot(req).await {
                Ok(response) => response.map(Body::new),
                Err(err) => {
                    let err: BoxError = err.into();
                    tracing::error!(error = %err, "handler failed");
                    GatewayError::new(GatewayErrorKind::Internal)
                        .with_detail(err.to_string())
                        .into_response()
                }
            };
            Ok(result)
        })
    }
}
