//! The gateway a config builds: every app assembled, every listener's route table compiled.
//!
//! [`Gateway::build`] runs once per config, off the request path. Each listener gets an *entry*
//! service: its own middleware chain around a [`Router`], which matches listener, host and path and
//! hands the request to its app (the app's chain around its endpoint). The only work done per request
//! is the table look-up and the layers' own.
//!
//! ```text
//! listener chain ─▶ Router ─▶ app chain ─▶ endpoint (upstream or handler)
//!        ▲            │
//!        └── 404 ─────┘   parapet's own answers pass back out through the listener chain
//! ```

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::uri::{PathAndQuery, Uri};
use http::Method;
use parapet_middlewares::host::PanicSignal;
use parapet_middlewares::{GatewayError, GatewayErrorKind};
use pin_project_lite::pin_project;

use crate::chain;
use crate::config::{Config, EndpointConfig};
use crate::proxy::Upstream;
use crate::routing::{has_dot_segment, normalize_host, RouteTable};
use crate::service::AppFuture;
use crate::{AppService, Request, Response};

/// Where a matched route sends a request.
#[derive(Clone)]
pub struct Target {
    app: AppService,
    app_name: Arc<str>,
    strip_prefix: bool,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("app", &self.app_name)
            .field("strip_prefix", &self.strip_prefix)
            .finish()
    }
}

/// What [`Gateway::dispatch`] decided for a request.
pub enum Dispatch {
    /// Give this request to this app.
    App(AppService, Request),
    /// parapet answers itself: no route matched, or the request is refused.
    Answer(Response),
}

/// A built config: what the server runs on.
pub struct Gateway {
    entries: HashMap<Box<str>, AppService>,
    upstreams: BTreeMap<String, Arc<Upstream>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listeners", &self.entries.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Builds every upstream, app and route table of `config`.
    ///
    /// `reuse` offers upstreams of a previous gateway: one whose definition is unchanged is kept, with
    /// its connection pool, instead of being built anew.
    pub fn build(config: &Config, reuse: Option<&Gateway>) -> Gateway {
        let upstreams: BTreeMap<String, Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|(name, cfg)| {
                let kept = reuse
                    .and_then(|g| g.upstreams.get(name))
                    .filter(|u| **u.config() == **cfg);
                let upstream = match kept {
                    Some(u) => Arc::clone(u),
                    None => Upstream::new(Arc::clone(cfg)),
                };
                (name.clone(), upstream)
            })
            .collect();

        let apps: BTreeMap<&str, AppService> = config
            .apps
            .iter()
            .map(|(name, app)| {
                let endpoint = match &app.endpoint {
                    EndpointConfig::Upstream(u) => upstreams[u].service(),
                    EndpointConfig::Handler { service, .. } => service.clone(),
                };
                (name.as_str(), chain::build(&app.middlewares, endpoint))
            })
            .collect();

        let mut tables: HashMap<Box<str>, RouteTable<Target>> = config
            .listeners
            .iter()
            .map(|l| (l.name.as_str().into(), RouteTable::default()))
            .collect();
        for route in &config.routes {
            let target = Target {
                app: apps[route.app.as_str()].clone(),
                app_name: route.app.as_str().into(),
                strip_prefix: route.strip_prefix,
            };
            for (listener, table) in tables.iter_mut() {
                let serves = route
                    .listeners
                    .as_ref()
                    .is_none_or(|names| names.iter().any(|n| **n == **listener));
                if serves {
                    table.insert(&route.host, &route.path, target.clone());
                }
            }
        }
        let entries = config
            .listeners
            .iter()
            .map(|l| {
                let table = tables.remove(l.name.as_str()).unwrap_or_default();
                let router = AppService::new(Router {
                    table: Arc::new(table),
                });
                (l.name.as_str().into(), chain::build(&l.middlewares, router))
            })
            .collect();
        Gateway { entries, upstreams }
    }

    /// The service serving the requests of `listener`: its chain around its router.
    pub fn entry(&self, listener: &str) -> Option<&AppService> {
        self.entries.get(listener)
    }
}

/// Routes each request of one listener to its app, or answers it (404, 400, 405). A panic in the app
/// before its response head becomes a 500, so a listener's chain sees it as a response.
#[derive(Clone)]
pub struct Router {
    table: Arc<RouteTable<Target>>,
}

impl Router {
    /// The app for `req` and the request to give it, or the response parapet answers itself.
    pub fn dispatch(&self, mut req: Request) -> Dispatch {
        if req.method() == Method::CONNECT {
            return Dispatch::Answer(
                GatewayError::new(GatewayErrorKind::MethodNotAllowed)
                    .with_detail("CONNECT is not supported")
                    .into_response(),
            );
        }
        let path = req.uri().path();
        if has_dot_segment(path) {
            return Dispatch::Answer(
                GatewayError::new(GatewayErrorKind::BadRequest)
                    .with_detail("dot segment in path")
                    .into_response(),
            );
        }
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .map(normalize_host);
        let found = self.table.find(host.as_deref(), path);
        let Some((prefix, target)) = found else {
            return Dispatch::Answer(GatewayError::new(GatewayErrorKind::NoRoute).into_response());
        };
        let app = target.app.clone();
        if target.strip_prefix && prefix != "/" {
            let stripped = strip_prefix(req.uri(), prefix);
            if let Some(uri) = stripped {
                *req.uri_mut() = uri;
            }
        }
        Dispatch::App(app, req)
    }
}

impl tower::Service<Request> for Router {
    type Response = Response;
    type Error = Infallible;
    type Future = RouterFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> RouterFuture {
        match self.dispatch(req) {
            Dispatch::App(app, mut req) => {
                let signal = PanicSignal::attach(&mut req);
                RouterFuture::App {
                    fut: app.handle(req),
                    signal,
                }
            }
            Dispatch::Answer(response) => RouterFuture::Ready {
                response: Some(response),
            },
        }
    }
}

pin_project! {
    /// The response of [`Router`]: from the app, or parapet's own.
    #[project = RouterProj]
    pub enum RouterFuture {
        /// The app is answering; `signal` tells the access logs inside it that a panic ended it.
        App { #[pin] fut: AppFuture, signal: PanicSignal },
        /// parapet answered.
        Ready { response: Option<Response> },
    }
}

impl Future for RouterFuture {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.as_mut().project() {
            RouterProj::App { fut, signal } => {
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.poll(cx))) {
                    Ok(poll) => poll,
                    Err(panic) => {
                        let message = parapet_middlewares::gateway::panic_message(&*panic);
                        tracing::error!("app panicked before its response head: {message}");
                        // Signal, then drop the app's future: an access log inside it logs the 500.
                        signal.set();
                        self.set(RouterFuture::Ready { response: None });
                        Poll::Ready(Ok(GatewayError::new(GatewayErrorKind::Internal)
                            .with_detail(format!("panic: {message}"))
                            .into_response()))
                    }
                }
            }
            RouterProj::Ready { response } => match response.take() {
                Some(r) => Poll::Ready(Ok(r)),
                None => Poll::Pending,
            },
        }
    }
}

/// The URI with `prefix` removed from its path (`/static/a.css` with `/static` is `/a.css`).
fn strip_prefix(uri: &Uri, prefix: &str) -> Option<Uri> {
    let prefix = prefix.trim_end_matches('/');
    let rest = uri.path().strip_prefix(prefix)?;
    let path = if rest.is_empty() { "/" } else { rest };
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq).ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_prefix_keeps_query_and_leading_slash() {
        let uri: Uri = "/static/a.css?v=1".parse().unwrap();
        assert_eq!(strip_prefix(&uri, "/static").unwrap(), "/a.css?v=1");
        let uri: Uri = "/static".parse().unwrap();
        assert_eq!(strip_prefix(&uri, "/static").unwrap(), "/");
        let uri: Uri = "/static/".parse().unwrap();
        assert_eq!(strip_prefix(&uri, "/static/").unwrap(), "/");
    }
}
