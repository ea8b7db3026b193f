//! The router at the heart of each listener: a request is matched by host and path to its app.
//!
//! ```text
//! listener chain ─▶ Router ─▶ app chain ─▶ endpoint (upstream or handler)
//!        ▲            │
//!        └── 404 ─────┘   parapet's own answers pass back out through the listener chain
//! ```
//!
//! Before any of this, where the request enters parapet (the connection's service), [`admit`] makes
//! it what every layer will see: headers its `Connection` header names removed, `Host` checked, the
//! path normalised once, the client resolved. What it refuses, the router answers with a 400, so the
//! refusal still leaves through the listener's chain like any answer of parapet's own.
//!
//! The route table ([`crate::routing::RouteTable`]) is compiled once per config by `crate::build`;
//! per request the router only looks it up, answers what [`admit`] refused and what cannot be routed
//! (CONNECT), strips a route's prefix if asked, and turns a panic of the app before its response head
//! into a 500.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Version};
use parapet_middlewares::host::PanicSignal;
use parapet_middlewares::{ClientIp, GatewayError, GatewayErrorKind};
use pin_project_lite::pin_project;

use crate::config::IpRange;
use crate::metrics::RouteStats;
use crate::routing::{normalize_host, normalize_path, valid_host_memo, RouteTable};
use crate::service::Started;
use crate::{AppService, ClientAddr, Request, Response};

/// Where a matched route sends a request: the app, and whether the route's prefix is removed first.
#[derive(Clone)]
pub struct RouteTarget {
    /// The app, built.
    pub app: AppService,
    /// Its name in the config.
    pub app_name: Arc<str>,
    /// The route's `strip_prefix`.
    pub strip_prefix: bool,
    /// Its counters, resolved when the config is built.
    pub stats: Arc<RouteStats>,
    /// Set for apps that want to know where they are mounted (in-process handlers such as WSGI's,
    /// whose SCRIPT_NAME is the route's prefix): the router then puts a [`MountPoint`] on each
    /// request. `None` for upstreams, which pay nothing for it, and for a route at `/`.
    pub mount: Option<Arc<str>>,
    /// Whether something in the app may read a [`PanicSignal`] (an access log in its chain, a
    /// layer or handler of the embedder's: [`AppService::reads_tags`](crate::AppService::reads_tags)):
    /// the router then attaches one to each request, two allocations. An app of parapet's own
    /// layers and endpoints but for `access_log` and `errors` has no reader: its requests go without.
    pub panic_signal: bool,
}

/// Where the route that matched a request is mounted, in the request's extensions for the apps that
/// ask for it ([`RouteTarget::mount`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountPoint {
    /// The route's path prefix, without a trailing slash: `/shop`. A route at `/` puts no
    /// `MountPoint` in the request: read its absence as an empty prefix.
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
    /// Give the request (as `dispatch` left it) to this app, counted in these stats; with a
    /// [`PanicSignal`] if `true` (see [`RouteTarget::panic_signal`]).
    App(AppService, Arc<RouteStats>, bool),
    /// parapet answers itself: no route matched, or the request is refused.
    Answer(Response),
}

/// Routes each request of one listener to its app, or answers it (404, 400, 405). A panic in the app
/// before its response head becomes a 500, so a listener's chain sees it as a response.
#[derive(Clone)]
pub struct Router {
    table: Arc<RouteTable<RouteTarget>>,
    /// The counters of the listener's own answers (no route, refused requests).
    own: Arc<RouteStats>,
}

impl Router {
    /// A router over a compiled table, for `listener`.
    pub fn new(table: RouteTable<RouteTarget>, listener: &str) -> Self {
        Self {
            table: Arc::new(table),
            own: RouteStats::new(listener, "", ""),
        }
    }

    /// This router as a listener's service: called without a clone of the router or tower's
    /// readiness round per request (a router is always ready).
    pub fn into_service(self) -> AppService {
        AppService::from_fn(move |req| crate::service::boxed_in_place(|| self.route(req)))
    }

    /// The app for `req`, which is made ready for it in place (its prefix stripped, its mount
    /// point noted), or the response parapet answers itself. In place: a request is large, and
    /// each move of it a copy.
    pub fn dispatch(&self, req: &mut Request) -> Dispatch {
        if req.method() == Method::CONNECT {
            return Dispatch::Answer(
                GatewayError::new(GatewayErrorKind::MethodNotAllowed)
                    .with_detail("CONNECT is not supported")
                    .into_response(),
            );
        }
        if let Some(Refused(detail)) = req.extensions().get::<Refused>() {
            return Dispatch::Answer(
                GatewayError::new(GatewayErrorKind::BadRequest)
                    .with_detail(*detail)
                    .into_response(),
            );
        }
        let path = req.uri().path();
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
        Dispatch::App(app, Arc::clone(&target.stats), target.panic_signal)
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
        self.route(req)
    }
}

impl Router {
    /// Routes `req`: the app's response, or parapet's own.
    pub fn route(&self, mut req: Request) -> RouterFuture {
        let started = Instant::now();
        match self.dispatch(&mut req) {
            Dispatch::App(app, stats, panic_signal) => {
                let signal = panic_signal.then(|| PanicSignal::attach(&mut req));
                RouterFuture::App {
                    fut: app.start(req),
                    signal,
                    stats,
                    started,
                }
            }
            Dispatch::Answer(response) => {
                self.own.record(response.status(), started.elapsed());
                RouterFuture::Ready {
                    response: Some(response),
                }
            }
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
        App { #[pin] fut: Started, signal: Option<PanicSignal>, stats: Arc<RouteStats>, started: Instant },
        /// parapet answered.
        Ready { response: Option<Response> },
    }
}

impl Future for RouterFuture {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.as_mut().project() {
            RouterProj::App {
                fut,
                signal,
                stats,
                started,
            } => {
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.poll(cx))) {
                    Ok(Poll::Ready(Ok(response))) => {
                        stats.record(response.status(), started.elapsed());
                        Poll::Ready(Ok(response))
                    }
                    Ok(poll) => poll,
                    Err(panic) => {
                        let message = parapet_middlewares::gateway::panic_message(&*panic);
                        tracing::error!("app panicked before its response head: {message}");
                        // Signal, then drop the app's future: an access log inside it logs the 500.
                        if let Some(signal) = signal {
                            signal.set();
                        }
                        stats.record(http::StatusCode::INTERNAL_SERVER_ERROR, started.elapsed());
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

/// Why [`admit`] refused a request: the detail of the 400 the router answers it with.
#[derive(Clone, Copy, Debug)]
struct Refused(&'static str);

pub(crate) static PROXY: HeaderName = HeaderName::from_static("proxy");

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// What a server's parser noted of a request's head as it read it, for [`admit_noted`] to skip the
/// lookups for fields it knows are absent. [`HeadFacts::UNKNOWN`] (a head hyper parsed) makes every
/// lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadFacts {
    /// The head may have a `Connection` line.
    pub connection: bool,
    /// The head may have a `Proxy` line.
    pub proxy: bool,
}

impl HeadFacts {
    /// Nothing known: every field may be there.
    pub const UNKNOWN: Self = Self {
        connection: true,
        proxy: true,
    };
}

/// Makes a request what every layer of the listener sees, where it enters parapet and before any
/// middleware runs:
///
/// 1. The headers its `Connection` header names are removed, and `Connection` itself (RFC 9110
///    §7.6.1: "a proxy or gateway MUST parse a received Connection header field before a message is
///    forwarded and, for each connection-option in this field, remove any header or trailer
///    field(s) from the message with the same name"). Because it is done here and not when
///    forwarding, a client cannot name a header a middleware sets (`Connection: x-edge`) to have it
///    removed on the way out. `Host` is never removed this way: it is what the request is routed by. hyper has
///    already read `Connection` for the connection's own keep-alive. An HTTP/1.1 request whose
///    `Connection` names `upgrade` and that has an `Upgrade` header keeps that header and is marked
///    with [`UpgradeRequest`](parapet_middlewares::tunnel::UpgradeRequest): a WebSocket, which the
///    proxy forwards as one (see [`crate::tunnel`]).
/// 2. A `Proxy` header is removed: HTTP defines no such request header, and CGI-like apps would
///    read it as their `HTTP_PROXY` setting (httpoxy, CVE-2016-5385).
/// 3. The client is resolved with `trusted`, the config's `server.trusted_proxies`: [`ClientAddr`]
///    is set, and [`ClientIp`] when the peer is a trusted proxy (read both with [`ClientIp::of`]).
/// 4. `Host` is checked (RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code
///    to any HTTP/1.1 request message that lacks a Host header field and to any request message that
///    contains more than one Host header field line or a Host header field with an invalid field
///    value"); HTTP/1.0 may go without; an HTTP/2 request names its host in `:authority` (RFC 9113
///    §8.3.1), checked the same way, as is an absolute-form target's authority.
/// 5. The path is normalised ([`normalize_path`]); the query is left as it came.
///
/// A request refused in 4 or 5 is marked, and the [`Router`] answers it 400: the listener's
/// middlewares see it pass and its answer leave (an access log logs it), and no app gets it.
///
/// Costs a clean request one scan of its path and of its `Host` and a few map lookups, and no
/// allocation beyond the `ClientAddr` extension there always was; it allocates to rewrite a path that
/// changed, for the `ClientIp` of a trusted proxy's request, and for a refusal.
pub fn admit(req: &mut Request, peer: ClientAddr, trusted: &[IpRange]) {
    admit_noted(req, peer, trusted, HeadFacts::UNKNOWN);
}

/// [`admit`], skipping the lookups for the fields `facts` says the head has not.
pub fn admit_noted(req: &mut Request, peer: ClientAddr, trusted: &[IpRange], facts: HeadFacts) {
    let http11 = req.version() == http::Version::HTTP_11;
    let headers = req.headers_mut();
    // An HTTP/1.1 upgrade (a WebSocket) keeps its `Upgrade` header, for it alone.
    let named_upgrade = facts.connection && remove_connection_named(headers);
    let upgrade = named_upgrade && http11 && headers.contains_key(header::UPGRADE);
    if named_upgrade && !upgrade {
        headers.remove(header::UPGRADE);
    }
    if facts.proxy {
        headers.remove(&PROXY);
    }
    let client = resolve_client(peer.0.ip(), trusted, headers);
    let extensions = req.extensions_mut();
    // A map kept for reuse may hold an earlier request's address, boxed: overwritten, not boxed
    // anew (`crate::spare`).
    match extensions.get_mut::<ClientAddr>() {
        Some(kept) => *kept = peer,
        None => {
            extensions.insert(peer);
        }
    }
    // Only from a trusted proxy: otherwise `ClientIp::of` derives it from `peer`, and the request
    // pays no allocation for it.
    if let Some(client) = client {
        extensions.insert(client);
    }
    if upgrade {
        extensions.insert(parapet_middlewares::tunnel::UpgradeRequest);
    }
    if let Err(detail) = check_host(req).and_then(|()| normalize_target(req)) {
        req.extensions_mut().insert(Refused(detail));
    }
}

/// Removes `Connection` and the headers it names, `Host` and `Upgrade` excepted (see [`admit`]);
/// true if it named `upgrade`.
fn remove_connection_named(headers: &mut HeaderMap) -> bool {
    remove_connection_options(headers, &["host", "upgrade"])
}

/// Removes `Connection` and the headers its options name, but those in `keep` (lowercase); true if
/// an option was `upgrade`. Shared by [`admit`] and the proxy's hop-by-hop removal
/// ([`crate::proxy::remove_hop_by_hop`]).
pub(crate) fn remove_connection_options(headers: &mut HeaderMap, keep: &[&str]) -> bool {
    let mut lines = headers.get_all(header::CONNECTION).iter();
    let Some(first) = lines.next() else {
        return false;
    };
    // The usual line, one `keep-alive` or `close` naming no header present: nothing to look for.
    let only = |option: &str| {
        first.as_bytes().eq_ignore_ascii_case(option.as_bytes()) && !headers.contains_key(option)
    };
    if lines.next().is_none() && (only("keep-alive") || only("close")) {
        headers.remove(header::CONNECTION);
        return false;
    }
    let mut lines = headers.get_all(header::CONNECTION).iter();
    let Some(first) = lines.next() else {
        return false;
    };
    let mut upgrade = false;
    // Values are reference-counted: keeping them costs no copy, and an empty `more`, the rule, no
    // allocation.
    let first = first.clone();
    let more: Vec<HeaderValue> = lines.cloned().collect();
    headers.remove(header::CONNECTION);
    let options = || {
        std::iter::once(&first)
            .chain(&more)
            .filter_map(|line| line.to_str().ok())
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .filter(|option| !option.is_empty())
    };
    let mut named = false;
    for option in options() {
        upgrade |= option.eq_ignore_ascii_case("upgrade");
        // Most options (`keep-alive`, `close`) name no header present: one pass over the names
        // (lowercase in the map) tells, without a lookup per option.
        named |= !keep.iter().any(|k| option.eq_ignore_ascii_case(k))
            && headers
                .keys()
                .any(|name| option.eq_ignore_ascii_case(name.as_str()));
    }
    if named {
        for option in options() {
            if !keep.iter().any(|k| option.eq_ignore_ascii_case(k)) {
                // By name as written (a `&str` name is looked up without allocating): an option
                // that is no header name removes nothing.
                headers.remove(option);
            }
        }
    }
    upgrade
}

/// The client of a request from `peer` when the peer is in `trusted` (see [`ClientIp`]): the
/// right-most `X-Forwarded-For` hop that is not trusted, read right to left over every line. `None`
/// when the peer is not trusted: the client is the peer.
fn resolve_client(peer: IpAddr, trusted: &[IpRange], headers: &HeaderMap) -> Option<ClientIp> {
    let peer = peer.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|range| range.contains(ip));
    if trusted.is_empty() || !is_trusted(peer) {
        return None;
    }
    let mut ip = peer;
    'lines: for line in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        let Ok(line) = line.to_str() else { break };
        for hop in line.rsplit(',') {
            // An entry that is no address ends the walk: what lies left of it cannot be read.
            let Some(hop) = parse_hop(hop.trim()) else {
                break 'lines;
            };
            ip = hop;
            if !is_trusted(hop) {
                break 'lines;
            }
        }
    }
    Some(ClientIp {
        ip,
        peer_trusted: true,
    })
}

/// An `X-Forwarded-For` entry: an address, or an address and port as some proxies write it.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let ip = hop
        .parse::<IpAddr>()
        .or_else(|_| hop.parse::<std::net::SocketAddr>().map(|a| a.ip()))
        .ok()?;
    Some(ip.to_canonical())
}

/// Step 4 of [`admit`]: one valid `Host` (none for HTTP/1.0 and HTTP/2), and a valid authority in
/// the target if it has one.
fn check_host(req: &Request) -> Result<(), &'static str> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err("more than one Host header"),
        (Some(host), None) if !valid_host_memo(host.as_bytes()) => {
            return Err("invalid Host header")
        }
        (None, _) if req.version() == Version::HTTP_11 => {
            return Err("HTTP/1.1 request without a Host header")
        }
        _ => {}
    }
    match req.uri().authority() {
        // CONNECT's authority form is refused by the router with a 405 of its own.
        Some(authority)
            if req.method() != Method::CONNECT
                && !valid_host_memo(authority.as_str().as_bytes()) =>
        {
            Err("invalid authority in the request target")
        }
        _ => Ok(()),
    }
}

/// Step 5 of [`admit`]: the path normalised in place, the rest of the target as it came.
fn normalize_target(req: &mut Request) -> Result<(), &'static str> {
    let uri = req.uri();
    let path = uri.path();
    if !path.starts_with('/') {
        // The asterisk form is OPTIONS's alone (RFC 9112 §3.2.4), the authority form CONNECT's
        // (§3.2.3, refused by the router).
        return match (req.method(), path) {
            (&Method::OPTIONS, "*") => Ok(()),
            (&Method::CONNECT, _) => Ok(()),
            _ => Err("request target is not a path"),
        };
    }
    let path = match normalize_path(path) {
        Ok(std::borrow::Cow::Borrowed(_)) => return Ok(()),
        Ok(std::borrow::Cow::Owned(path)) => path,
        Err(err) => return Err(err.detail()),
    };
    let mut target = path.into_bytes();
    if let Some(query) = uri.query() {
        target.push(b'?');
        target.extend_from_slice(query.as_bytes());
    }
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.path_and_query = Some(
        PathAndQuery::from_maybe_shared(bytes::Bytes::from(target))
            .map_err(|_| "request target cannot be normalised")?,
    );
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| "request target cannot be normalised")?;
    Ok(())
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
