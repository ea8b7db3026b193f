//! The registry of kinds: how `handler = { kind = "..." }` becomes a service and
//! `[middlewares.NAME] kind = "..."` a layer.
//!
//! A kind is two steps, matching the config's stages:
//!
//! 1. **parse** (model stage, pure): the kind's table becomes its typed settings, which the model
//!    carries as [`Settings`];
//! 2. **build** (build stage, I/O allowed): the settings become a [`Middleware`] or an
//!    [`AppService`]. A kind may also **check** its settings without side effects (a file is
//!    readable, a directory exists): `parapet check` runs that, never the build.
//!
//! A program embedding parapet registers its kinds with typed settings that serde reads
//! ([`Registry::register_middleware`], [`Registry::register_handler`]), or a fixed service that takes
//! no settings ([`Registry::register_service`], an axum `Router` say). parapet's own kinds are
//! registered by `crate::builtins` ([`Registry::new`]).
//!
//! ```
//! use parapet::{Config, Registry};
//!
//! #[derive(Debug, PartialEq, serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Stamp {
//!     value: String,
//! }
//!
//! let mut registry = Registry::new();
//! registry.register_middleware("stamp", |s: &Stamp| {
//!     let value = http::HeaderValue::from_str(&s.value)?;
//!     let mut ops = parapet_middlewares::headers::HeaderOps::default();
//!     ops.set.push((http::HeaderName::from_static("x-stamp"), value));
//!     Ok(parapet::chain::Middleware::from_layer(
//!         parapet_middlewares::headers::HeadersLayer::new(Default::default(), ops),
//!     ))
//! });
//! let toml = r#"
//! [listeners.main]
//! bind = "127.0.0.1:0"
//! [apps.hello]
//! middlewares = ["mine"]
//! handler = { kind = "echo" }
//! [middlewares.mine]
//! kind = "stamp"
//! value = "v1"
//! "#;
//! let config = Config::parse("example.toml", toml, &registry).unwrap();
//! assert_eq!(config.middlewares["mine"].kind, "stamp");
//! ```

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use parapet_middlewares::{Body, BoxError, ErrorChain, GatewayError, GatewayErrorKind};
use serde::de::DeserializeOwned;
use tower::{Service, ServiceExt};

use crate::chain::Middleware;
use crate::config::{ConfigError, Kinds, Location, ParseSettings, Settings, Table};
use crate::{AppService, Request, Response};

/// A kind's check step: errors found without side effects, located through the settings' own
/// [`Location`]s or the kind's table (`at`).
type CheckFn = dyn Fn(&Settings, &Location) -> Vec<ConfigError> + Send + Sync;

/// A kind's build step.
type BuildFn<T> = dyn Fn(&Settings, &Location) -> Result<T, Vec<ConfigError>> + Send + Sync;

/// One registered kind: its three steps.
struct Kind<T> {
    parse: Arc<ParseSettings>,
    check: Arc<CheckFn>,
    build: Arc<BuildFn<T>>,
}

impl<T> Clone for Kind<T> {
    fn clone(&self) -> Self {
        Self {
            parse: Arc::clone(&self.parse),
            check: Arc::clone(&self.check),
            build: Arc::clone(&self.build),
        }
    }
}

impl<T: 'static> Kind<T> {
    /// A kind from typed steps; the erased settings are downcast back to `S` (they always are an
    /// `S`, since this kind's parse step made them).
    fn typed<S, P, C, B>(parse: P, check: C, build: B) -> Self
    where
        S: Debug + PartialEq + Send + Sync + 'static,
        P: Fn(&mut Table<'_>) -> Option<S> + Send + Sync + 'static,
        C: Fn(&S, &Location) -> Vec<ConfigError> + Send + Sync + 'static,
        B: Fn(&S, &Location) -> Result<T, Vec<ConfigError>> + Send + Sync + 'static,
    {
        let mismatch =
            |at: &Location| vec![at.error("internal error: settings of another kind".to_owned())];
        let check = Arc::new(check);
        let checks = Arc::clone(&check);
        Kind {
            parse: Arc::new(move |t| parse(t).map(Settings::new)),
            check: Arc::new(move |s, at| match s.downcast_ref::<S>() {
                Some(s) => check(s, at),
                None => mismatch(at),
            }),
            // Building runs the checks first: what `parapet check` refuses, a reload refuses too.
            build: Arc::new(move |s, at| match s.downcast_ref::<S>() {
                Some(s) => match checks(s, at) {
                    errors if errors.is_empty() => build(s, at),
                    errors => Err(errors),
                },
                None => Err(mismatch(at)),
            }),
        }
    }
}

impl<T: 'static> Kind<T> {
    /// A kind whose settings serde reads from its table, with nothing to check, whose build errors
    /// refuse the config at the kind's place in the file.
    fn serde<S, F>(kind: &str, build: F) -> Self
    where
        S: DeserializeOwned + Debug + PartialEq + Send + Sync + 'static,
        F: Fn(&S) -> Result<T, BoxError> + Send + Sync + 'static,
    {
        let kind = kind.to_owned();
        Kind::typed(
            |t: &mut Table<'_>| t.deserialize_rest::<S>(),
            |_: &S, _: &Location| Vec::new(),
            move |s: &S, at: &Location| {
                build(s).map_err(|e| vec![at.error(format!("cannot build `{kind}`: {e}"))])
            },
        )
    }
}

/// The handler and middleware kinds a config may name.
#[derive(Clone)]
pub struct Registry {
    handlers: BTreeMap<String, Kind<AppService>>,
    middlewares: BTreeMap<String, Kind<Middleware>>,
}

impl Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .field("middlewares", &self.middlewares.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// A registry with no kinds at all; [`Registry::new`] has parapet's built-in ones.
    pub fn empty() -> Self {
        Self {
            handlers: BTreeMap::new(),
            middlewares: BTreeMap::new(),
        }
    }

    /// Registers a middleware kind whose settings serde reads from its table (every key but `kind`;
    /// a kind named bare in a chain reads an empty table, so give its fields defaults), and `build`
    /// turns into a layer when the config is built. An error from `build` refuses the config, at the
    /// middleware's place in the file. A later registration of the same name replaces the earlier.
    pub fn register_middleware<S, F>(&mut self, kind: impl Into<String>, build: F) -> &mut Self
    where
        S: DeserializeOwned + Debug + PartialEq + Send + Sync + 'static,
        F: Fn(&S) -> Result<Middleware, BoxError> + Send + Sync + 'static,
    {
        let kind = kind.into();
        let typed = Kind::serde(&kind, build);
        self.middlewares.insert(kind, typed);
        self
    }

    /// Registers a handler kind whose settings serde reads from its table (every key but `kind`),
    /// and `build` turns into a service when the config is built. An `Err` from the service itself
    /// becomes a 500 response (see [`box_service`]). A later registration of the same name replaces
    /// the earlier.
    pub fn register_handler<S, F>(&mut self, kind: impl Into<String>, build: F) -> &mut Self
    where
        S: DeserializeOwned + Debug + PartialEq + Send + Sync + 'static,
        F: Fn(&S) -> Result<AppService, BoxError> + Send + Sync + 'static,
    {
        let kind = kind.into();
        let typed = Kind::serde(&kind, build);
        self.handlers.insert(kind, typed);
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
        self.register_handler_kind(
            kind,
            |_| Some(()),
            |_, _| Vec::new(),
            move |_, _| Ok(app.clone()),
        )
    }

    /// Registers a handler kind by its three steps, reading its table itself, as the built-in kinds
    /// do: `parse` reads the settings (pure; errors recorded on the table), `check` finds what it can
    /// without side effects, `build` makes the service.
    pub fn register_handler_kind<S, P, C, B>(
        &mut self,
        kind: impl Into<String>,
        parse: P,
        check: C,
        build: B,
    ) -> &mut Self
    where
        S: Debug + PartialEq + Send + Sync + 'static,
        P: Fn(&mut Table<'_>) -> Option<S> + Send + Sync + 'static,
        C: Fn(&S, &Location) -> Vec<ConfigError> + Send + Sync + 'static,
        B: Fn(&S, &Location) -> Result<AppService, Vec<ConfigError>> + Send + Sync + 'static,
    {
        self.handlers
            .insert(kind.into(), Kind::typed(parse, check, build));
        self
    }

    /// Registers a middleware kind by its three steps, as [`Registry::register_handler_kind`].
    pub fn register_middleware_kind<S, P, C, B>(
        &mut self,
        kind: impl Into<String>,
        parse: P,
        check: C,
        build: B,
    ) -> &mut Self
    where
        S: Debug + PartialEq + Send + Sync + 'static,
        P: Fn(&mut Table<'_>) -> Option<S> + Send + Sync + 'static,
        C: Fn(&S, &Location) -> Vec<ConfigError> + Send + Sync + 'static,
        B: Fn(&S, &Location) -> Result<Middleware, Vec<ConfigError>> + Send + Sync + 'static,
    {
        self.middlewares
            .insert(kind.into(), Kind::typed(parse, check, build));
        self
    }

    /// Checks a middleware's settings without side effects.
    pub fn check_middleware(
        &self,
        kind: &str,
        settings: &Settings,
        at: &Location,
    ) -> Vec<ConfigError> {
        match lookup(&self.middlewares, "middleware", kind, at) {
            Ok(k) => (k.check)(settings, at),
            Err(errors) => errors,
        }
    }

    /// Builds a middleware from its settings.
    pub fn build_middleware(
        &self,
        kind: &str,
        settings: &Settings,
        at: &Location,
    ) -> Result<Middleware, Vec<ConfigError>> {
        (lookup(&self.middlewares, "middleware", kind, at)?.build)(settings, at)
    }

    /// Checks a handler's settings without side effects.
    pub fn check_handler(
        &self,
        kind: &str,
        settings: &Settings,
        at: &Location,
    ) -> Vec<ConfigError> {
        match lookup(&self.handlers, "handler", kind, at) {
            Ok(k) => (k.check)(settings, at),
            Err(errors) => errors,
        }
    }

    /// Builds a handler from its settings.
    pub fn build_handler(
        &self,
        kind: &str,
        settings: &Settings,
        at: &Location,
    ) -> Result<AppService, Vec<ConfigError>> {
        (lookup(&self.handlers, "handler", kind, at)?.build)(settings, at)
    }
}

/// The registered `kind` of a handler or middleware (`what`); an error at `at` if there is none (a
/// model read with another registry).
fn lookup<'k, T>(
    kinds: &'k BTreeMap<String, Kind<T>>,
    what: &str,
    kind: &str,
    at: &Location,
) -> Result<&'k Kind<T>, Vec<ConfigError>> {
    kinds
        .get(kind)
        .ok_or_else(|| vec![at.error(format!("no {what} kind `{kind}` in this registry"))])
}

impl Kinds for Registry {
    fn middleware(&self, kind: &str) -> Option<&ParseSettings> {
        self.middlewares.get(kind).map(|k| &*k.parse)
    }

    fn middleware_kinds(&self) -> Vec<&str> {
        self.middlewares.keys().map(String::as_str).collect()
    }

    fn handler(&self, kind: &str) -> Option<&ParseSettings> {
        self.handlers.get(kind).map(|k| &*k.parse)
    }

    fn handler_kinds(&self) -> Vec<&str> {
        self.handlers.keys().map(String::as_str).collect()
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
                    tracing::error!(error = %ErrorChain(&*err), "handler failed");
                    GatewayError::new(GatewayErrorKind::Internal)
                        .with_detail("the handler failed")
                        .with_source(err)
                        .into_response()
                }
            };
            Ok(result)
        })
    }
}
