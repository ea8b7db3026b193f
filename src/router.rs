//! The router at the heart of each listener: a request is matched by host and path to its app.
//!
//! ```text
//! listener chain ─▶ Router ─▶ app chain ─▶ endpoint (upstream or handler)
//!        ▲            │
//!        └── 404 ─────┘   parapet's own answers pass back out through the listener chain
//! ```
//!
//! The route table ([`crate::routing::RouteTable`]) is compiled once per config by `crate::build`;
//! per request the router only looks it up, refuses what cannot be routed safely (CONNECT, dot
//! segments), strips a route's prefix if asked, and turns a panic of the app before its response head
//! into a 500.

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

use crate::routing::{has_dot_segment, normalize_host, RouteTable};
use crate::service::AppFuture;
use crate::{AppService, Request, Response};

/// Where a matched route sends a request: the app, and whether the route's prefix is removed first.
#[derive(Clone)]
pub struct RouteTarget {
    /// The app, built.
    pub app: AppService,
    /// Its name in the config.
    pub app_name: Arc<str>,
    /// The route's `strip_prefix`.
    pub strip_prefix: bool,
    /// Set for apps that want to know where they are mounted (in-process handlers such as WSGI's,
    /// whose SCRIPT_NAME is the route's prefix): the router then puts a [`MountPoint`] on each
    /// request. `None` for upstreams, which pay nothing for it.
    pub mount: Option<Arc<str>>,
}

/// Where the route that matched a request is mounted, in the request's extensions for the apps that
/// ask for it ([`RouteTarget::mount`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountPoint {
    /// The route's path prefix, without a trailing slash: `/shop`, or empty for `/`.
    pub prefix: Arc<str>,
    /// Whether the prefix was removed from the request's path (`strip_prefix`): if not, the path
    /// still starts with it.
    pub stripped: bool,
}

impl std::fmt::Debug for RouteTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteTarget")
            .field("app", &self.app_name)
            .field("strip_prefix", &self.strip_prefix)
            .finish()
    }
}

/// What [`Router::dispatch`] decided for a request.
pub enum Dispatch {
    /// Give this request to this app.
    App(AppService, Request),
    /// parapet answers itself: no route matched, or the request is refused.
    Answer(Response),
}

/// Routes each request of one listener to its app, or answers it (404, 400, 405). A panic in the app
/// before its response head becomes a 500, so a listener's chain sees it as a response.
#[derive(Clone)]
pub struct Router {
    table: Arc<RouteTable<RouteTarget>>,
}

impl Router {
    /// A router over a compiled table.
    pub fn new(table: RouteTable<RouteTarget>) -> Self {
        Self {
            table: Arc::new(table),
        }
    }

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
        if let Some(mount) = &target.mount {
            req.extensions_mut().insert(MountPoint {
                prefix: Arc::clone(mount),
                stripped: target.strip_prefix && prefix != "/",
            });
        }
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
    // pin-project-lite takes no doc comments on variant fields: `fut` is the app's response future,
    // `response` parapet's answer until it is taken.
    #[allow(missing_docs)]
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
