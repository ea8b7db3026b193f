//! The upstream endpoint: parapet as a reverse proxy.
//!
//! A request's life through an upstream (`Upstream::forward`) is four phases, each a function
//! documented where it is defined:
//!
//! 1. `Upstream::choose_server`: which of the upstream's servers takes the request (`balance.rs`,
//!    among the servers up by `health.rs`; again on another server when a retry is allowed);
//! 2. `upstream_request`: the request as the server gets it: origin-form target with the server's
//!    base path, hop-by-hop headers removed, forwarding headers set (believed only from a trusted
//!    proxy), `Host` kept, HTTP/1.1 (`te: trailers` kept for a server that may speak HTTP/2);
//! 3. `Upstream::send`: over the server's pool of kept-alive connections (`pool`: HTTP/1.1, or one
//!    multiplexed HTTP/2 connection; over TLS for `https://` servers, `tls`), bounded by
//!    `connect_timeout`, and by `timeout` from the end of the request body until the response head
//!    arrives;
//! 4. `upstream_response` or `Upstream::gateway_error`: the answer, with hop-by-hop headers removed
//!    and the body streaming back untouched; or a failure as a typed [`GatewayError`]: unreachable 502,
//!    timeout 504, broken protocol 502 (an ambiguously framed response head included), and the
//!    client's own request body broken or cut short 400, blamed on the client.
//!
//! Bodies are never buffered: frames move between the two connections with backpressure, and an
//! upstream body that breaks off mid-way surfaces as a body error, which aborts the client's connection.
//! A request without a body to a plain-TCP HTTP/1.1 server is sent by parapet's own client (`h1`),
//! in the request's own task; every other one by hyper's (`pool`).

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::Version;
use parapet_middlewares::{
    Body, ClientIp, ErrorChain, GatewayError, GatewayErrorKind, TlsInfo, UpstreamResponse,
    UpstreamResponseWanted,
};

mod balance;
pub(crate) mod h1;
mod health;
mod pool;
pub(crate) mod tls;

use balance::Balancer;
use health::ServerState;
use pool::{Lease, SendError, ServerPool, Transport, Upload};
use tokio::sync::Semaphore;

use crate::config::{ConfigError, UpstreamConfig, UpstreamServer};
use crate::metrics::UpstreamFailure;
use crate::service::NeverFails;
use crate::tunnel::UpgradeRequest;
use crate::{AppService, ClientAddr, Error, Request, Response};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The hop-by-hop headers of RFC 9110 §7.6.1 (and the obsolete `Keep-Alive` and `Proxy-Connection`),
/// which describe one connection and are never forwarded. Every `Proxy-*` header is removed too.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
];

/// Removes hop-by-hop headers: the fixed list, every `Proxy-*` header, and every header named in any
/// `Connection` line (RFC 9110 §7.6.1: "a proxy or gateway MUST parse a received Connection header
/// field before a message is forwarded and, for each connection-option in this field, remove any
/// header or trailer field(s) from the message with the same name").
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    remove_hop_by_hop_noting(headers);
}

/// Which of the forwarding headers a message may have ([`remove_hop_by_hop_noting`]): a bit unset is
/// a header surely absent, which then costs no lookup.
#[derive(Clone, Copy, Debug, Default)]
struct Forwarding(u8);

impl Forwarding {
    const FOR: u8 = 1;
    const PROTO: u8 = 1 << 1;
    const HOST: u8 = 1 << 2;
    const FORWARDED: u8 = 1 << 3;
    const REAL_IP: u8 = 1 << 4;

    fn may_have(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// [`remove_hop_by_hop`], noting on the way which forwarding headers the message had.
fn remove_hop_by_hop_noting(headers: &mut HeaderMap) -> Forwarding {
    // One pass over the names first: most messages have none of these, and then cost no lookup.
    let mut connection = false;
    let mut forwarding = 0u8;
    // Bit i: `HOP_BY_HOP[i]` is present (only those are looked up again to be removed).
    let mut hop = 0u8;
    let mut proxy = false;
    for name in headers.keys() {
        // By the name's text: one length test rules out most names (comparing `HeaderName`s one
        // by one costs several times as much).
        match name.as_str() {
            "connection" => connection = true,
            "te" => hop |= 1 << 1,
            "trailer" => hop |= 1 << 2,
            "transfer-encoding" => hop |= 1 << 3,
            "upgrade" => hop |= 1 << 4,
            "keep-alive" => hop |= 1 << 5,
            "x-forwarded-for" => forwarding |= Forwarding::FOR,
            "x-forwarded-proto" => forwarding |= Forwarding::PROTO,
            "x-forwarded-host" => forwarding |= Forwarding::HOST,
            "forwarded" => forwarding |= Forwarding::FORWARDED,
            "x-real-ip" => forwarding |= Forwarding::REAL_IP,
            other => proxy |= other.starts_with("proxy-"),
        }
    }
    if connection {
        crate::router::remove_connection_options(headers, &[]);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if hop & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if proxy {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for name in names {
            headers.remove(name);
        }
    }
    // A header the `Connection` line named is gone now: its bit, still set, costs only a lookup.
    Forwarding(forwarding)
}

/// An upstream built from its config: its servers (each with its state and connection pool), its
/// balancer and its retry budget.
pub struct Upstream {
    config: Arc<UpstreamConfig>,
    servers: Vec<Server>,
    balancer: Balancer,
    /// Retries still allowed, in thousandths: each request adds [`BUDGET_PER_REQUEST`], each retry
    /// takes 1000, at most [`BUDGET_RESERVE`] kept.
    budget: AtomicI64,
    /// The `tls.ca` file's contents as built with, to tell on reload whether it was replaced.
    ca_file: Option<Vec<u8>>,
}

/// One server of an upstream as built.
struct Server {
    /// Its display name, shared with every response it answers.
    name: Arc<str>,
    /// Health and load, kept across reloads while its address is unchanged.
    state: Arc<ServerState>,
    pool: Arc<ServerPool>,
    /// `max_connections`: a permit per request until its response body ends.
    limit: Option<Arc<Semaphore>>,
}

/// Retries may be at most a fifth of requests (linkerd's default `retry_budget` ratio)...
const BUDGET_PER_REQUEST: i64 = 200;
/// ...plus a reserve of 10, so that a quiet upstream still retries (Envoy's and linkerd's minimum).
const BUDGET_RESERVE: i64 = 10_000;
/// An idempotent request's body at most this large (its length known) is kept, so that a retry
/// can send it again (Envoy buffers up to its `per_connection_buffer_limit_bytes`, 1 MiB; a small
/// bound keeps the memory a burst of retried uploads can hold small).
const REPLAY_BODY_LIMIT: u64 = 64 * 1024;
/// The `Retry-After` of a 503 for a saturated server (RFC 9110 §10.2.3): a second, about as long
/// as a request waited for a connection by default.
const RETRY_AFTER_SECONDS: &str = "1";

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the upstream, with its TLS client config if it has `https://` servers (`tls.ca` read
    /// now: an unusable one is an error at `ca`); a server of `previous` (the same upstream in the
    /// config before a reload) with the same address keeps its state, and its pool if the pool's
    /// settings are the same, and its connection limit if `max_connections` is. Starts the health
    /// checks, if any.
    pub fn new(
        config: Arc<UpstreamConfig>,
        previous: Option<&Upstream>,
    ) -> Result<Arc<Self>, ConfigError> {
        let connector = tls::client_config(&config, false)?.map(tokio_rustls::TlsConnector::from);
        // A pool is kept only if its connections would be made the same way: the TLS settings
        // and the CA file's contents (`ca_file_unchanged`) as well as the pool's own.
        let same_pool = |p: &Upstream| {
            p.config.connect_timeout == config.connect_timeout
                && p.config.max_idle == config.max_idle
                && p.config.protocol == config.protocol
                && p.config.tls == config.tls
                && p.ca_file_unchanged()
        };
        let mut servers = Vec::with_capacity(config.servers.len());
        for s in &config.servers {
            let kept = previous.and_then(|p| {
                p.config
                    .servers
                    .iter()
                    .position(|o| o.scheme == s.scheme && o.authority == s.authority)
                    .map(|i| (p, &p.servers[i]))
            });
            let name: Arc<str> = Arc::from(s.to_string());
            let state = kept.map_or_else(
                || ServerState::new(&config.name, Arc::clone(&name)),
                |(_, k)| Arc::clone(&k.state),
            );
            let pool = match kept {
                Some((p, k)) if same_pool(p) => Arc::clone(&k.pool),
                _ => {
                    let https = s.scheme == http::uri::Scheme::HTTPS;
                    let tls = match &connector {
                        Some(connector) if https => {
                            Some((connector.clone(), tls::server_name(&config, s)?))
                        }
                        _ => None,
                    };
                    // Without a port in the URL, the scheme's (RFC 9110 §4.2).
                    let port = s
                        .authority
                        .port_u16()
                        .unwrap_or(if https { 443 } else { 80 });
                    let transport = Transport {
                        tls,
                        protocol: config.protocol,
                        scheme: s.scheme.clone(),
                    };
                    ServerPool::new(
                        format!("{}:{port}", s.authority.host()),
                        config.connect_timeout,
                        config.max_idle,
                        transport,
                    )
                }
            };
            let limit = match kept {
                Some((p, k)) if p.config.max_connections == config.max_connections => {
                    k.limit.clone()
                }
                _ => config.max_connections.map(|n| Arc::new(Semaphore::new(n))),
            };
            servers.push(Server {
                name,
                state,
                pool,
                limit,
            });
        }
        let ca_file = config.tls.ca.as_ref().and_then(|p| std::fs::read(p).ok());
        let upstream = Arc::new(Self {
            balancer: Balancer::new(&config.balance, &config.servers),
            config,
            servers,
            budget: AtomicI64::new(BUDGET_RESERVE),
            ca_file,
        });
        health::spawn_checks(&upstream);
        Ok(upstream)
    }

    /// Whether the `tls.ca` file (if any) still holds what this upstream was built with: a reload
    /// keeps an unchanged upstream only if so, so a replaced CA file is picked up by a reload.
    pub fn ca_file_unchanged(&self) -> bool {
        match &self.config.tls.ca {
            None => true,
            Some(path) => std::fs::read(path).ok() == self.ca_file,
        }
    }

    /// What building this upstream would refuse, without building it: a `tls.ca` that cannot be
    /// used, a server name TLS cannot verify. Reads files; opens, binds and starts nothing.
    pub fn check(config: &UpstreamConfig) -> Result<(), ConfigError> {
        tls::client_config(config, true)?;
        for s in &config.servers {
            if s.scheme == http::uri::Scheme::HTTPS {
                tls::server_name(config, s)?;
            }
        }
        Ok(())
    }

    /// The config this upstream was built from.
    pub fn config(&self) -> &Arc<UpstreamConfig> {
        &self.config
    }

    /// The endpoint service proxying to this upstream.
    pub fn service(self: &Arc<Self>) -> AppService {
        let upstream = Arc::clone(self);
        AppService::from_fn(move |req| {
            let upstream = Arc::clone(&upstream);
            NeverFails::boxed(move || upstream.forward(req))
        })
        .reads_no_tags()
    }

    /// Proxies one request: the four phases of the module docs, the first three again on another
    /// server when a retry is allowed (docs/config.md, "Retries").
    ///
    /// Not an `async fn`, which moves its arguments into slots of their own when first polled: for
    /// the request, a copy of its 264 bytes within the future's box. The block below uses them
    /// where the call left them.
    #[allow(clippy::manual_async_fn)]
    fn forward(self: Arc<Self>, mut req: Request) -> impl Future<Output = Response> + Send {
        async move {
            let mut tried = 0u64;
            let mut retries = 0u32;
            // The request, kept only when a retry may send it again: an idempotent one whose body is
            // none or small ([`REPLAY_BODY_LIMIT`]).
            let mut replay: Option<Replay> = None;
            // Whether a layer outside (the access log) will read which server answered.
            let wanted = req.extensions().get::<UpstreamResponseWanted>().is_some();
            let mut from: Option<usize> = None;
            self.deposit();
            // `req` is rewritten in place and moved only into the send: a request is large, and each
            // move of it a copy. A retry puts the request to send next back in it.
            loop {
                let index = self.choose_server(&req, tried);
                tried |= 1u64 << (index % 64);
                let chosen = self.chosen(index);
                match from {
                    // The request was made for another server: rebased on this one's path.
                    Some(prev) => rebase(&mut req, &self.config.servers[prev], chosen.server),
                    None => {
                        if let Err(err) =
                            upstream_request(chosen.server, &mut req, chosen.pool.may_h2())
                        {
                            return err.into_response();
                        }
                    }
                }
                // Kept only where a retry can go to another server: the copy is the one cost retries add
                // to a request that needs none.
                if replay.is_none() && self.config.retries > 0 && self.servers.len() > 1 {
                    match self.replayable(&req) {
                        Replayable::No => {}
                        Replayable::Bodiless => {
                            replay = Some(Replay {
                                head: head_of(&req),
                                body: None,
                                made_for: index,
                            });
                        }
                        Replayable::Buffered => {
                            // Read whole (at most `REPLAY_BODY_LIMIT`, its length said so), under the
                            // client's `server.body_timeout` as when streamed.
                            let body = std::mem::take(req.body_mut());
                            // Boxed: rare, and large (see `ServerPool::connect`).
                            let bytes = match Box::pin(http_body_util::BodyExt::collect(body)).await
                            {
                                Ok(collected) => collected.to_bytes(),
                                Err(err) => {
                                    let failure =
                                        Failure::RequestBody(pool::request_body_error(err));
                                    return self.gateway_error(&chosen, failure).into_response();
                                }
                            };
                            *req.body_mut() = Body::from(bytes.clone());
                            replay = Some(Replay {
                                head: head_of(&req),
                                body: Some(bytes),
                                made_for: index,
                            });
                        }
                    }
                }
                // Counted until the head arrives, or the request is dropped (the client gone).
                let in_flight = self
                    .balancer
                    .measures_load()
                    .then(|| InFlight::start(chosen.state));
                chosen.state.stats.sent();
                let answer = self.send(&chosen, &mut req).await;
                if let Some(in_flight) = in_flight {
                    if answer.is_ok() {
                        in_flight.answered();
                    }
                }
                let more = retries < self.config.retries;
                // The request to send next and the server it was made for, or the answer.
                let (next, made_for) = match answer {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        if status >= 500 {
                            chosen.state.stats.failed(UpstreamFailure::Status5xx);
                            chosen
                                .state
                                .failed(self.config.eject.as_ref(), "status 5xx");
                        } else {
                            chosen.state.succeeded();
                        }
                        let on = &self.config.retry_on;
                        let retry_status = matches!(
                            (status, on.status_502, on.status_503, on.status_504),
                            (502, true, _, _) | (503, _, true, _) | (504, _, _, true)
                        );
                        let next = if more && retry_status {
                            self.again(&replay).inspect(|_| {
                                tracing::info!(upstream = %self.config.name, server = %chosen.name, status, "retrying on another server");
                            })
                        } else {
                            None
                        };
                        let Some(next) = next else {
                            return match upstream_response(chosen.name, response, wanted) {
                                Ok(response) => response,
                                Err(failure) => {
                                    chosen.state.stats.failed(UpstreamFailure::Protocol);
                                    self.gateway_error(&chosen, failure).into_response()
                                }
                            };
                        };
                        next
                    }
                    Err(SendError { failure, unsent }) => {
                        let kind = match &failure {
                            Failure::Send(Error::UpstreamConnect { .. }) => {
                                Some(UpstreamFailure::Connect)
                            }
                            Failure::Send(err) if is_reset(err) => Some(UpstreamFailure::Reset),
                            Failure::Send(_) | Failure::Framing(_) => {
                                Some(UpstreamFailure::Protocol)
                            }
                            Failure::TimedOut => Some(UpstreamFailure::Timeout),
                            Failure::Saturated => Some(UpstreamFailure::Saturated),
                            // The client's own fault, not the server's.
                            Failure::RequestBody(_) => None,
                        };
                        if let Some(kind) = kind {
                            chosen.state.stats.failed(kind);
                        }
                        let why = match &failure {
                            Failure::Send(Error::UpstreamConnect { .. }) => Some("connect failed"),
                            Failure::Send(_) => Some("connection broke"),
                            Failure::TimedOut => Some("timed out"),
                            _ => None,
                        };
                        if let Some(why) = why {
                            chosen.state.failed(self.config.eject.as_ref(), why);
                        }
                        let on = &self.config.retry_on;
                        let retry_on = match &failure {
                            Failure::Send(err) => on.reset && is_reset(err),
                            Failure::TimedOut => on.timeout,
                            _ => false,
                        };
                        let next = match (more, unsent, why) {
                            // Never reached a server: always safe to send elsewhere, and no
                            // server's load, so outside the budget.
                            (true, Some(unsent), Some(_)) => {
                                tracing::info!(upstream = %self.config.name, server = %chosen.name, why, "request never reached the server: trying another");
                                Some((*unsent, index))
                            }
                            _ if more && retry_on => self.again(&replay).inspect(|_| {
                                tracing::info!(upstream = %self.config.name, server = %chosen.name, why, "retrying on another server");
                            }),
                            _ => None,
                        };
                        let Some(next) = next else {
                            let saturated = matches!(failure, Failure::Saturated);
                            let mut response = self.gateway_error(&chosen, failure).into_response();
                            if saturated {
                                response.headers_mut().insert(
                                    header::RETRY_AFTER,
                                    HeaderValue::from_static(RETRY_AFTER_SECONDS),
                                );
                            }
                            return response;
                        };
                        next
                    }
                };
                // Again, on another server: `next` was made for server `made_for`.
                req = next;
                from = Some(made_for);
                retries += 1;
                chosen.state.stats.retried();
            }
        }
    }

    /// The kept request, rebuilt for a retry, and the server it was made for, if one was kept and
    /// the retry budget allows one more.
    fn again(&self, replay: &Option<Replay>) -> Option<(Request, usize)> {
        let replay = replay.as_ref()?;
        self.withdraw().then(|| (replay.rebuild(), replay.made_for))
    }

    /// Whether a retry may send `req` again: an idempotent method (RFC 9110 §9.2.2: GET, HEAD,
    /// OPTIONS, TRACE, PUT, DELETE), some `retry_on` condition, and a body that is none, or small
    /// enough to keep (its length known and at most [`REPLAY_BODY_LIMIT`]).
    fn replayable(&self, req: &Request) -> Replayable {
        let on = &self.config.retry_on;
        let any = on.timeout || on.reset || on.status_502 || on.status_503 || on.status_504;
        let idempotent = is_idempotent(req.method());
        // An upgrade is never sent twice: its upstream connection becomes the tunnel.
        if !(any && idempotent) || req.extensions().get::<UpgradeRequest>().is_some() {
            return Replayable::No;
        }
        let hint = http_body::Body::size_hint(req.body());
        if http_body::Body::is_end_stream(req.body()) || hint.exact() == Some(0) {
            Replayable::Bodiless
        } else if hint.upper().is_some_and(|n| n <= REPLAY_BODY_LIMIT) {
            Replayable::Buffered
        } else {
            Replayable::No
        }
    }

    /// Adds a request's share to the retry budget.
    fn deposit(&self) {
        if self.config.retries == 0 {
            return;
        }
        // A full budget is not written to: no contended cache line while all is well.
        if self.budget.load(Ordering::Relaxed) < BUDGET_RESERVE {
            let _ = self
                .budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some((b + BUDGET_PER_REQUEST).min(BUDGET_RESERVE))
                });
        }
    }

    /// Takes one retry from the budget, if it has one.
    fn withdraw(&self) -> bool {
        let ok = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= 1000).then_some(b - 1000)
            })
            .is_ok();
        if !ok {
            tracing::warn!(upstream = %self.config.name, "retry budget spent: not retrying");
        }
        ok
    }

    /// Phase 1: the server that takes the request, by the upstream's `balance`, among the servers
    /// that are up and not yet tried by this request (`tried`, a bit per server index modulo 64);
    /// if none is, among those not tried (panic mode: when every server is down, parapet still
    /// tries them rather than answer 503); if every one was tried, among all.
    fn choose_server(&self, req: &Request, tried: u64) -> usize {
        let fresh = |i: usize| tried & (1u64 << (i % 64)) == 0;
        let state = |i: usize| &*self.servers[i].state;
        self.balancer
            .pick(req, |i| fresh(i) && self.servers[i].state.is_up(), state)
            .or_else(|| self.balancer.pick(req, fresh, state))
            .or_else(|| self.balancer.pick(req, |_| true, state))
            .unwrap_or(0)
    }

    fn chosen(&self, index: usize) -> Chosen<'_> {
        let server = &self.servers[index];
        Chosen {
            server: &self.config.servers[index],
            pool: &server.pool,
            name: &server.name,
            state: &server.state,
            limit: server.limit.as_ref(),
        }
    }

    /// Phase 3: sends the request over the chosen server's pool (the pool bounds connecting by
    /// `connect_timeout`), waiting at most the upstream's `timeout` for the response head, counted
    /// from the end of the request body: a long upload is not a timeout. While the body is going,
    /// `timeout` bounds each wait for the upstream to take more of it; a wait for the client to send
    /// more is the client's, bounded by `server.body_timeout`. A request body that failed by the
    /// client's fault (a `GatewayError` of the client's side among its causes) is answered with that
    /// error. With `max_connections`, a permit of the server's is waited for first, at most
    /// `queue_timeout`, and held by the response body.
    ///
    /// Cost: a request parapet's own client sends, no timer of its own (its pooled connection's,
    /// re-armed); another without a body, one timer; with a body, that timer re-armed as the body
    /// goes (once per `timeout`, and once at its end), and [`Upload`]'s one allocation.
    ///
    /// `req` is borrowed, not moved: parapet's own client writes it from where it is, and each move
    /// of a request is a copy into the state of the future it moves into. Other clients take it out
    /// of `req`, leaving an empty request.
    async fn send(&self, chosen: &Chosen<'_>, req: &mut Request) -> Result<Response, SendError> {
        let permit = match chosen.limit {
            None => None,
            Some(limit) => match Arc::clone(limit).try_acquire_owned() {
                Ok(permit) => Some(permit),
                // Waiting is the rare case: its future is boxed, so that it does not add to the
                // size of every request's future (see `ServerPool::connect`).
                Err(_) => Some(Box::pin(self.wait_for_permit(limit)).await?),
            },
        };
        let lease = Lease {
            permit,
            read_timeout: Some(self.config.read_timeout),
        };
        if chosen.pool.takes_lean(req) {
            // The pool's own client times the exchange on the connection's own timer.
            let deadline = tokio::time::Instant::now() + self.config.timeout;
            return chosen.pool.send_lean(req, lease, Some(deadline)).await;
        }
        let req = std::mem::take(req);
        if !Upload::tracks(&req) {
            return match self.send_timed(chosen, req, lease).await {
                Ok(result) => result,
                Err(_elapsed) => Err(SendError {
                    failure: Failure::TimedOut,
                    unsent: None,
                }),
            };
        }
        Box::pin(self.send_uploading(chosen, req, lease)).await
    }

    /// `req` sent on `chosen`'s pool within `timeout`. Not `async`: the pool's future, built here and
    /// moved into the timeout, would otherwise take a slot of its own in the caller's state beside
    /// the timeout that holds it (rust-lang/rust#62958), and every request's future would carry it.
    fn send_timed<'a>(
        &self,
        chosen: &Chosen<'a>,
        req: Request,
        lease: Lease,
    ) -> tokio::time::Timeout<impl Future<Output = Result<Response, SendError>> + 'a> {
        tokio::time::timeout(self.config.timeout, chosen.pool.send(req, None, lease))
    }

    /// Waits up to `queue_timeout` for a connection permit of the server's (`max_connections`).
    async fn wait_for_permit(
        &self,
        limit: &Arc<Semaphore>,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, SendError> {
        match tokio::time::timeout(self.config.queue_timeout, Arc::clone(limit).acquire_owned())
            .await
        {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(SendError {
                failure: Failure::Saturated,
                unsent: None,
            }),
        }
    }

    /// [`Upstream::send`] for a request with a body: `timeout` counts from the end of the upload,
    /// and while it goes on, from its last progress. Boxed by its caller: an upload costs an
    /// allocation already ([`Upload`]), and bodiless requests do not carry its state.
    async fn send_uploading(
        &self,
        chosen: &Chosen<'_>,
        req: Request,
        lease: Lease,
    ) -> Result<Response, SendError> {
        let timeout = self.config.timeout;
        let (req, upload) = Upload::track(req).await.map_err(|e| SendError {
            failure: Failure::RequestBody(e),
            unsent: None,
        })?;
        let timed_out = || SendError {
            failure: Failure::TimedOut,
            unsent: None,
        };
        let Some(upload) = upload else {
            return match self.send_timed(chosen, req, lease).await {
                Ok(result) => result,
                Err(_elapsed) => Err(timed_out()),
            };
        };
        let sending = chosen.pool.send(req, Some(Arc::clone(&upload)), lease);
        tokio::pin!(sending);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut sent = upload.progress().0;
        let mut uploading = true;
        loop {
            tokio::select! {
                biased;
                result = &mut sending => return result,
                () = upload.finished(), if uploading => {
                    uploading = false;
                    deadline.as_mut().reset(tokio::time::Instant::now() + timeout);
                }
                () = &mut deadline => {
                    let (now_sent, waiting_on_client) = upload.progress();
                    if !uploading || (now_sent == sent && !waiting_on_client) {
                        return Err(timed_out());
                    }
                    sent = now_sent;
                    deadline.as_mut().reset(tokio::time::Instant::now() + timeout);
                }
            }
        }
    }

    /// Phase 4, when no usable response came: logs the failure and types it. A connection that
    /// could not be opened is `UpstreamUnreachable` (502), one that broke before the response head
    /// or a head whose body framing is ambiguous `UpstreamProtocol` (502), no response head within
    /// `timeout` `UpstreamTimeout` (504), no free connection within `queue_timeout`
    /// `UpstreamSaturated` (503); a request body that failed on the client's side keeps the
    /// kind it came with (`ClientBody` 400, `ClientClosed`, or a layer's own), logged as the client's.
    fn gateway_error(&self, chosen: &Chosen<'_>, failure: Failure) -> GatewayError {
        let name = chosen.name;
        match failure {
            Failure::RequestBody(err) => {
                tracing::info!(upstream = %self.config.name, server = %name, error = %ErrorChain(&err), "request body failed on the client's side");
                err
            }
            Failure::Framing(why) => {
                tracing::warn!(upstream = %self.config.name, server = %name, error = why, "upstream response refused");
                GatewayError::new(GatewayErrorKind::UpstreamProtocol)
                    .with_detail(format!("{name}: {why}"))
            }
            Failure::Send(err) => {
                let kind = match err {
                    Error::UpstreamConnect { .. } => GatewayErrorKind::UpstreamUnreachable,
                    _ => GatewayErrorKind::UpstreamProtocol,
                };
                tracing::warn!(upstream = %self.config.name, server = %name, error = %ErrorChain(&err), "upstream request failed");
                GatewayError::new(kind)
                    .with_detail(name.to_string())
                    .with_source(err)
            }
            Failure::TimedOut => {
                tracing::warn!(upstream = %self.config.name, server = %name, timeout = ?self.config.timeout, "upstream timed out");
                GatewayError::new(GatewayErrorKind::UpstreamTimeout).with_detail(format!(
                    "{name}: no response head within {:?} of the request's end, or its body not \
                     taken for as long",
                    self.config.timeout
                ))
            }
            Failure::Saturated => {
                tracing::warn!(upstream = %self.config.name, server = %name, queue_timeout = ?self.config.queue_timeout, "upstream saturated");
                GatewayError::new(GatewayErrorKind::UpstreamSaturated).with_detail(format!(
                    "{name}: no free connection (max_connections) within {:?}",
                    self.config.queue_timeout
                ))
            }
        }
    }
}

/// Whether a method is idempotent (RFC 9110 §9.2.2): a request that may be sent twice.
fn is_idempotent(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::TRACE
            | http::Method::PUT
            | http::Method::DELETE
    )
}

/// Whether a failed send was the connection closing or breaking (`retry_on = ["reset"]`), not the
/// upstream breaking HTTP: a malformed response is not retried (the next server would see the same
/// request, and it is nothing a retry cures).
fn is_reset(err: &Error) -> bool {
    match err {
        Error::UpstreamConnect { .. } | Error::UpstreamIo(_) => true,
        Error::UpstreamProtocol(e) => {
            e.is_incomplete_message()
                || e.is_closed()
                || e.is_canceled()
                || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
        }
        _ => false,
    }
}

/// The head of a request as made for a server, kept to send it again. Its extensions are not:
/// [`upstream_request`] has used them, and only `hash_key = "client_ip"` would read them again (a
/// retry without them is spread by weighted random among the servers not tried).
fn head_of(req: &Request) -> http::Request<()> {
    let mut head = http::Request::new(());
    *head.method_mut() = req.method().clone();
    *head.uri_mut() = req.uri().clone();
    *head.version_mut() = req.version();
    *head.headers_mut() = req.headers().clone();
    if req.extensions().get::<HostIsServers>().is_some() {
        head.extensions_mut().insert(HostIsServers);
    }
    head
}

/// Whether and how a request can be kept for a retry ([`Upstream::replayable`]).
enum Replayable {
    No,
    Bodiless,
    Buffered,
}

/// A request kept to be sent again: its head as made for server `made_for`, and its body.
struct Replay {
    head: http::Request<()>,
    body: Option<bytes::Bytes>,
    made_for: usize,
}

impl Replay {
    /// The request again.
    fn rebuild(&self) -> Request {
        let body = self.body.clone().map_or_else(Body::empty, Body::from);
        let head = &self.head;
        let mut req = http::Request::new(body);
        *req.method_mut() = head.method().clone();
        *req.uri_mut() = head.uri().clone();
        *req.version_mut() = head.version();
        *req.headers_mut() = head.headers().clone();
        if head.extensions().get::<HostIsServers>().is_some() {
            req.extensions_mut().insert(HostIsServers);
        }
        req
    }
}

/// In a forwarded request's extensions: its `Host` is the server's authority, the client having
/// named none.
#[derive(Clone, Copy, Debug)]
struct HostIsServers;

/// A request made for server `from` ([`upstream_request`]) made for server `to`: the same unless
/// their base paths differ, or its `Host` was `from`'s own ([`HostIsServers`]).
fn rebase(req: &mut Request, from: &UpstreamServer, to: &UpstreamServer) {
    if req.extensions().get::<HostIsServers>().is_some() {
        if let Ok(host) = HeaderValue::from_str(to.authority.as_str()) {
            req.headers_mut().insert(header::HOST, host);
        }
    }
    if from.base_path != to.base_path {
        let pq = req.uri().path_and_query().map_or("/", PathAndQuery::as_str);
        let rest = pq.strip_prefix(from.base_path.as_str()).unwrap_or(pq);
        if let Ok(uri) = Uri::try_from(format!("{}{}", to.base_path, rest)) {
            *req.uri_mut() = uri;
        }
    }
}

/// A request in flight to a server (`least_requests`), until its response head or its drop.
struct InFlight<'a> {
    state: &'a ServerState,
    started: u64,
}

impl<'a> InFlight<'a> {
    fn start(state: &'a ServerState) -> Self {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        Self {
            state,
            started: health::now_ns(),
        }
    }

    /// The response head came: its latency goes into the server's peak-EWMA.
    fn answered(self) {
        self.state
            .observe(health::now_ns().saturating_sub(self.started));
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The server [`Upstream::choose_server`] chose for a request.
struct Chosen<'a> {
    server: &'a UpstreamServer,
    pool: &'a Arc<ServerPool>,
    /// Its display name, shared with every response it answers.
    name: &'a Arc<str>,
    state: &'a Arc<ServerState>,
    limit: Option<&'a Arc<Semaphore>>,
}

/// Why a request got no usable response head.
pub(crate) enum Failure {
    /// The pool could not connect, or the connection failed.
    Send(Error),
    /// The request's own body failed on the client's side: its framing broken, the client gone
    /// before its end, or a layer refusing it; the error it answers with.
    RequestBody(GatewayError),
    /// No response head within the upstream's `timeout`.
    TimedOut,
    /// The response head frames its body ambiguously (why, for the log).
    Framing(&'static str),
    /// No free connection (`max_connections`) within `queue_timeout`.
    Saturated,
}

impl SendError {
    /// A one-line reason, for a health check's log.
    pub(crate) fn describe(&self) -> String {
        match &self.failure {
            Failure::Send(err) => ErrorChain(err).to_string(),
            Failure::RequestBody(err) => err.to_string(),
            Failure::TimedOut => "timed out".to_owned(),
            Failure::Framing(why) => (*why).to_owned(),
            Failure::Saturated => "saturated".to_owned(),
        }
    }
}

/// Phase 2: the request as `server` gets it.
///
/// - The target is in origin form, the path and query only, as HTTP/1.1 to an origin server takes it
///   (RFC 9112 §3.2.1), after the server's base path if it has one. A target that cannot be
///   forwarded is a `BadRequest`.
/// - Hop-by-hop headers are removed ([`remove_hop_by_hop`]; those the client's `Connection` named
///   are already gone, see [`crate::router::admit`]); the forwarding headers are set
///   ([`set_forwarded`]).
/// - `Host` is the host the request was routed by: the URI's authority if it has one (HTTP/2 clients
///   send no `Host`; RFC 9112 §3.2.2), else its `Host`, else the server's authority.
/// - The version is HTTP/1.1, whatever the client spoke (the pool makes the request HTTP/2 if the
///   connection is).
/// - `te: trailers` is kept when the server may speak HTTP/2 (`may_h2`): RFC 9113 §8.2.2 allows it
///   there, and gRPC servers require it to know the client reads trailers; every other `TE` value
///   is hop-by-hop (RFC 9110 §10.1.4).
fn upstream_request(
    server: &UpstreamServer,
    req: &mut Request,
    may_h2: bool,
) -> Result<(), GatewayError> {
    // The host the request was routed by: a URI authority (HTTP/2, absolute form) wins over
    // `Host` (RFC 9112 §3.2.2), as in the router, so the upstream is told the same site.
    let original_host = match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers().get(header::HOST).cloned(),
    };
    // HTTP/1.1 to an origin server takes the origin form: the path and query only (RFC 9112 §3.2.1).
    let uri = if server.base_path.is_empty() {
        // The request's own path and query, moved rather than copied: the request's URI is
        // replaced below anyway, and the first copy of a path a rewrite made allocates.
        match std::mem::take(req.uri_mut()).into_parts().path_and_query {
            Some(pq) => Uri::from(pq),
            None => Uri::from_static("/"),
        }
    } else {
        let pq = req.uri().path_and_query().map_or("/", PathAndQuery::as_str);
        match Uri::try_from(format!("{}{}", server.base_path, pq)) {
            Ok(uri) => uri,
            Err(_) => {
                return Err(GatewayError::new(GatewayErrorKind::BadRequest)
                    .with_detail("request target cannot be forwarded"))
            }
        }
    };

    let extensions = req.extensions();
    let peer = extensions.get::<ClientAddr>().map(|c| c.0.ip());
    // Nothing vouches for a request that did not come through parapet's server.
    let peer_trusted = ClientIp::of(extensions).is_some_and(|c| c.peer_trusted);
    let upgrading = extensions.get::<UpgradeRequest>().is_some();
    // The connection's fact, set once per TLS connection (`TlsInfo`): no URI is rebuilt for it.
    let tls = extensions.get::<TlsInfo>().is_some();
    let headers = req.headers_mut();
    let te_trailers = may_h2
        && headers.get_all(header::TE).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',').any(|t| {
                    t.split(';')
                        .next()
                        .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
                })
            })
        });
    // A WebSocket (or other upgrade) keeps its `Upgrade`, and says so again (RFC 9110 §7.8).
    let upgrade = if upgrading {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    let forwarding = remove_hop_by_hop_noting(headers);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(upgrade) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade);
    }
    set_forwarded(
        headers,
        peer,
        peer_trusted,
        original_host.as_ref(),
        tls,
        forwarding,
    );
    match original_host {
        Some(host) => {
            headers.insert(header::HOST, host);
        }
        // A request that named no host (HTTP/1.0) is told the server's own: marked, so that a
        // retry on another server tells that one its own (see `rebase`).
        None => {
            if let Ok(host) = HeaderValue::from_str(server.authority.as_str()) {
                headers.insert(header::HOST, host);
                req.extensions_mut().insert(HostIsServers);
            }
        }
    }
    *req.uri_mut() = uri;
    // The upstream connection is HTTP/1.1 whatever the client spoke.
    *req.version_mut() = Version::HTTP_11;
    Ok(())
}

/// Phase 4, when a response came: hop-by-hop headers removed, and an [`UpstreamResponse`] extension
/// naming the server (`name`) and its status, for the access log. The body streams back untouched.
///
/// A head with both `Transfer-Encoding` and `Content-Length` is refused (`Failure::Framing`, 502):
/// RFC 9112 §6.1 calls it a possible attempt at response splitting or smuggling, and hyper's client
/// reads such a body by its `Transfer-Encoding` and passes the `Content-Length` on, which would
/// frame the body sent to the client differently from the one read (a truncated 200). The
/// connection goes with the dropped response. Two different `Content-Length` values (§6.3) never
/// get here: hyper's client refuses that head itself.
fn upstream_response(
    name: &Arc<str>,
    response: Response,
    wanted: bool,
) -> Result<Response, Failure> {
    if response.headers().contains_key(header::TRANSFER_ENCODING)
        && response.headers().contains_key(header::CONTENT_LENGTH)
    {
        return Err(Failure::Framing(
            "response has both Transfer-Encoding and Content-Length (RFC 9112 §6.1)",
        ));
    }
    let (mut parts, body) = response.into_parts();
    // A 101 comes only with the upstream's side of its tunnel (the pool took it), and keeps the
    // protocol it switches to.
    let upgrade = if parts.status == http::StatusCode::SWITCHING_PROTOCOLS {
        if parts
            .extensions
            .get::<crate::tunnel::UpstreamTunnel>()
            .is_none()
        {
            return Err(Failure::Framing(
                "101 Switching Protocols to a request that asked for no upgrade",
            ));
        }
        parts.extensions.insert(crate::tunnel::Tunnel::new());
        parts.headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    remove_hop_by_hop(&mut parts.headers);
    if let Some(upgrade) = upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, upgrade);
    }
    if wanted {
        parts.extensions.insert(UpstreamResponse {
            server: Arc::clone(name),
            status: parts.status,
        });
    }
    Ok(Response::from_parts(parts, body))
}

/// The scheme the client spoke to parapet, as `X-Forwarded-Proto` tells it: the one place that
/// decides it: `https` for a request that came over TLS (the connection set its [`TlsInfo`]).
fn client_scheme(tls: bool) -> HeaderValue {
    HeaderValue::from_static(if tls { "https" } else { "http" })
}

/// How many peers' `X-Forwarded-For` values [`peer_value`] keeps per thread.
const PEER_VALUES: usize = 8;

thread_local! {
    /// The last [`PEER_VALUES`] peers' `X-Forwarded-For` values on this thread, and the slot the
    /// next new one takes.
    static PEER_VALUE: std::cell::RefCell<PeerValues> =
        const { std::cell::RefCell::new(([const { None }; PEER_VALUES], 0)) };
}

/// [`PEER_VALUE`]'s slots, and the one the next new peer takes.
type PeerValues = ([Option<(IpAddr, HeaderValue)>; PEER_VALUES], usize);

/// `peer` as an `X-Forwarded-For` value. The requests of a keep-alive connection, and of the few
/// clients a worker is serving at a time, come from a few addresses: each thread keeps the values
/// of the last [`PEER_VALUES`] it formatted, and a request from one of them gets a clone of its
/// value (a reference count) instead of an address formatted, checked and copied into a new
/// allocation.
fn peer_value(peer: IpAddr) -> Option<HeaderValue> {
    let make = |peer: IpAddr| {
        let mut buf = [0u8; 64];
        HeaderValue::from_bytes(parapet_middlewares::ip::format(peer, &mut buf).as_bytes()).ok()
    };
    PEER_VALUE
        .try_with(|memo| {
            let mut memo = memo.borrow_mut();
            let (values, next) = &mut *memo;
            if let Some((_, value)) = values.iter().flatten().find(|(ip, _)| *ip == peer) {
                return Some(value.clone());
            }
            let value = make(peer)?;
            values[*next] = Some((peer, value.clone()));
            *next = (*next + 1) % PEER_VALUES;
            Some(value)
        })
        .unwrap_or_else(|_| make(peer))
}

/// Sets the forwarding headers. What a client says about earlier hops is believed only from a peer
/// in `server.trusted_proxies` (`peer_trusted`):
///
/// - from a trusted proxy, `X-Forwarded-For` is appended to with the peer's address, and
///   `X-Forwarded-Proto`, `X-Forwarded-Host`, `Forwarded` and `X-Real-IP` are kept as it sent them
///   (the first two set as for any peer if it sent none);
/// - from any other peer they are replaced by what parapet saw itself: `X-Forwarded-For` is the
///   peer's address, `X-Forwarded-Proto` the scheme it spoke, `X-Forwarded-Host` the host the
///   request was routed by (`host`), and `Forwarded` and `X-Real-IP`, which parapet does not write,
///   are removed.
fn set_forwarded(
    headers: &mut HeaderMap,
    peer: Option<IpAddr>,
    peer_trusted: bool,
    host: Option<&HeaderValue>,
    tls: bool,
    had: Forwarding,
) {
    if let Some(peer) = peer {
        let peer = peer.to_canonical();
        let value = if !peer_trusted
            || !had.may_have(Forwarding::FOR)
            || !headers.contains_key(&X_FORWARDED_FOR)
        {
            peer_value(peer)
        } else {
            // The address is formatted on the stack: the header value is the only allocation.
            let mut buf = [0u8; 64];
            let ip = parapet_middlewares::ip::format(peer, &mut buf).as_bytes();
            let prior = headers.get_all(&X_FORWARDED_FOR).iter();
            let mut joined = Vec::with_capacity(64);
            for v in prior {
                joined.extend_from_slice(v.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(ip);
            HeaderValue::from_bytes(&joined).ok()
        };
        match value {
            Some(value) => headers.insert(X_FORWARDED_FOR.clone(), value),
            None => headers.remove(&X_FORWARDED_FOR),
        };
    } else if !peer_trusted && had.may_have(Forwarding::FOR) {
        headers.remove(&X_FORWARDED_FOR);
    }
    // A trusted proxy's value is kept, if it sent one.
    let keep = |headers: &HeaderMap, bit, name: &HeaderName| {
        peer_trusted && had.may_have(bit) && headers.contains_key(name)
    };
    if !keep(headers, Forwarding::PROTO, &X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO.clone(), client_scheme(tls));
    }
    if !keep(headers, Forwarding::HOST, &X_FORWARDED_HOST) {
        match host {
            Some(host) => {
                headers.insert(X_FORWARDED_HOST.clone(), host.clone());
            }
            None if had.may_have(Forwarding::HOST) => {
                headers.remove(&X_FORWARDED_HOST);
            }
            None => {}
        }
    }
    if !peer_trusted {
        if had.may_have(Forwarding::FORWARDED) {
            headers.remove(header::FORWARDED);
        }
        if had.may_have(Forwarding::REAL_IP) {
            headers.remove(&X_REAL_IP);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`set_forwarded`] after the hop-by-hop pass that notes which forwarding headers there are,
    /// as [`upstream_request`] calls it.
    fn noted_forwarded(
        headers: &mut HeaderMap,
        peer: Option<IpAddr>,
        peer_trusted: bool,
        host: Option<&HeaderValue>,
        tls: bool,
    ) {
        let had = remove_hop_by_hop_noting(headers);
        set_forwarded(headers, peer, peer_trusted, host, tls, had);
    }

    #[test]
    fn hop_by_hop_headers_and_connection_named_ones_are_removed() {
        let mut h = HeaderMap::new();
        h.append("connection", HeaderValue::from_static("close, x-one"));
        h.append("connection", HeaderValue::from_static("X-Two"));
        h.insert("x-one", HeaderValue::from_static("1"));
        h.insert("x-two", HeaderValue::from_static("2"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("trailer", HeaderValue::from_static("x-sum"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("proxy-authorization", HeaderValue::from_static("basic x"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn every_peer_gets_its_own_forwarded_for_value_however_many_a_thread_serves() {
        std::thread::spawn(|| {
            // More peers than the memo keeps, v4, v6 and v4-mapped, interleaved, twice over.
            let peers: Vec<IpAddr> = (0..PEER_VALUES as u8 + 3)
                .map(|i| IpAddr::from([10, 0, 0, i]))
                .chain(["::1", "2001:db8::7", "::ffff:192.0.2.1"].map(|p| p.parse().unwrap()))
                .collect();
            for round in 0..3 {
                for (i, peer) in peers.iter().enumerate() {
                    // Every other one again right away: a hit after a miss.
                    for _ in 0..1 + (i + round) % 2 {
                        let mut h = HeaderMap::new();
                        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
                        noted_forwarded(&mut h, Some(*peer), false, None, false);
                        let want = peer.to_canonical().to_string();
                        assert_eq!(h["x-forwarded-for"], want.as_str(), "round {round}");
                    }
                }
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn forwarded_for_appends_to_every_prior_line() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("2.2.2.2"));
        let host = HeaderValue::from_static("example.com");
        noted_forwarded(
            &mut h,
            Some("10.0.0.9".parse().unwrap()),
            true,
            Some(&host),
            false,
        );
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com");
    }

    #[test]
    fn a_forwarding_header_the_connection_line_named_is_gone_before_it_is_added_to() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("x-forwarded-for, x-forwarded-proto"),
        );
        h.insert("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-forwarded-host", HeaderValue::from_static("kept.example"));
        noted_forwarded(&mut h, Some("10.0.0.9".parse().unwrap()), true, None, false);
        // From a trusted proxy: what it sent is kept, but for what it named as hop-by-hop.
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "kept.example");
    }

    #[test]
    fn forwarding_headers_from_an_untrusted_peer_are_replaced() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("2.2.2.2"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-forwarded-host", HeaderValue::from_static("bank.example"));
        h.insert("forwarded", HeaderValue::from_static("for=1.1.1.1"));
        h.insert("x-real-ip", HeaderValue::from_static("1.1.1.1"));
        let host = HeaderValue::from_static("example.com");
        noted_forwarded(
            &mut h,
            Some("::ffff:10.0.0.9".parse().unwrap()),
            false,
            Some(&host),
            false,
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert!(h.get("forwarded").is_none());
        assert!(h.get("x-real-ip").is_none());
    }

    #[test]
    fn forwarding_headers_from_a_trusted_proxy_are_kept() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-forwarded-host", HeaderValue::from_static("www.example"));
        h.insert("forwarded", HeaderValue::from_static("for=1.1.1.1"));
        h.insert("x-real-ip", HeaderValue::from_static("1.1.1.1"));
        noted_forwarded(&mut h, Some("10.0.0.9".parse().unwrap()), true, None, false);
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "www.example");
        assert_eq!(h["forwarded"], "for=1.1.1.1");
        assert_eq!(h["x-real-ip"], "1.1.1.1");
    }
}
