//! A connection pool for one upstream server: HTTP/1.1 connections kept alive and reused, or one
//! HTTP/2 connection shared by every request.
//!
//! Leaner than hyper-util's general-purpose client, for the proxy's one job: a checkout pops an idle
//! connection (or opens one), the request is sent on it, and the connection goes back to the pool
//! when the response body has been read to its end. No task is spawned per request and no map is
//! searched: each server has its own pool. A connection that dies while idle is noticed at checkout;
//! a request that a stale connection could not take (it was never written) is retried once on a new
//! connection, which is what makes reuse safe for every method.
//!
//! A request without a body to a plain-TCP HTTP/1.1 server skips hyper's client altogether: it goes
//! through parapet's own ([`super::h1`]), whose connections have an idle list of their own here,
//! swept every few seconds for connections the server closed (they have no task to notice it).
//!
//! An HTTP/2 connection (`protocol = "h2"`, or `auto` over TLS when the server's ALPN chose `h2`) is
//! multiplexed: the pool keeps one, whose `SendRequest` is cloned for each request, and opens a new
//! one when it closes or fails. Connections are opened one at a time, so a burst of requests to a
//! server without a connection yet shares the one being opened rather than opening one each. Over
//! TLS (`https://`), the handshake is part of connecting, bounded by `connect_timeout` with it.
//!
//! A request body is sent through an [`Upload`], which tells the pool when the body has gone (a
//! connection takes its next request only then) and tells the proxy's send phase the same, for
//! `upstream.timeout` counts from the end of the request body, not its start.
//!
//! A request body's own failure (broken chunked framing, a client gone mid-body, a layer's limit or
//! timeout) is the client's, not the upstream's: [`TrackedBody`] turns it into the [`GatewayError`] it
//! answers with, which hyper hands back as the cause of the failed send, so the proxy can tell it from
//! an upstream that broke. The request head goes out only once the body's first frame (or its end) is
//! in ([`Upload::track`]), so a body broken from its first byte never reaches the upstream at all.

use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parapet_middlewares::{Body, BoxError, GatewayError, GatewayErrorKind};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use crate::config::UpstreamProtocol;

use super::{h1, Failure};
use crate::Error;

/// An idle connection unused this long is closed rather than reused (upstreams commonly close idle
/// keep-alive connections after 60 to 75 s; reusing one just as it closes would fail the request).
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);

struct Idle {
    sender: http1::SendRequest<Body>,
    since: Instant,
}

/// An idle connection of parapet's own client ([`super::h1`]).
struct LeanIdle {
    conn: h1::Conn,
    since: Instant,
}

/// How often idle connections of parapet's own client are checked: those the server closed, or
/// idle longer than [`IDLE_TIMEOUT`], are closed (they have no task of their own to notice).
const LEAN_SWEEP: Duration = Duration::from_secs(5);

/// How a pool's connections are made: over TLS or not, and which HTTP version they speak.
pub(crate) struct Transport {
    /// For an `https://` server: the upstream's TLS config and the name verified and sent as SNI.
    pub(crate) tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    /// The upstream's `protocol`.
    pub(crate) protocol: UpstreamProtocol,
    /// The server's scheme, for the `:scheme` of HTTP/2 requests.
    pub(crate) scheme: http::uri::Scheme,
}

impl Transport {
    /// Whether the server may speak HTTP/2: prior knowledge, or ALPN over TLS.
    pub(crate) fn may_h2(&self) -> bool {
        match self.protocol {
            UpstreamProtocol::H2 => true,
            UpstreamProtocol::Auto => self.tls.is_some(),
            UpstreamProtocol::Http1 => false,
        }
    }
}

/// A new connection, as its protocol turned out.
enum Conn {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

/// The pool of one server.
pub(crate) struct ServerPool {
    /// `host:port`, as connected to.
    authority: String,
    connect_timeout: Duration,
    /// At most this many idle connections are kept; more are closed when their response ends.
    max_idle: usize,
    idle: Mutex<Vec<Idle>>,
    transport: Transport,
    /// The server speaks HTTP/2 (so far as the last connection told): requests go to `h2`. Set from
    /// the start for `protocol = "h2"`, and for `auto` over TLS until ALPN says otherwise.
    speaks_h2: AtomicBool,
    /// The shared HTTP/2 connection, if open.
    h2: Mutex<Option<http2::SendRequest<Body>>>,
    /// Held while an HTTP/2 connection is being opened: one at a time.
    h2_connecting: tokio::sync::Mutex<()>,
    /// Requests without a body go through parapet's own client ([`super::h1`]): a plain-TCP server
    /// spoken to in HTTP/1.1.
    lean: bool,
    /// Its idle connections, at most `max_idle`.
    lean_idle: Mutex<Vec<LeanIdle>>,
    /// Set once the task sweeping `lean_idle` runs.
    sweeping: AtomicBool,
}

impl ServerPool {
    pub(crate) fn new(
        authority: String,
        connect_timeout: Duration,
        max_idle: usize,
        transport: Transport,
    ) -> Arc<Self> {
        Arc::new(Self {
            authority,
            connect_timeout,
            max_idle,
            idle: Mutex::new(Vec::new()),
            speaks_h2: AtomicBool::new(transport.may_h2()),
            lean: transport.tls.is_none() && transport.protocol != UpstreamProtocol::H2,
            lean_idle: Mutex::new(Vec::new()),
            sweeping: AtomicBool::new(false),
            transport,
            h2: Mutex::new(None),
            h2_connecting: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether the server may speak HTTP/2 (see [`Transport::may_h2`]).
    pub(crate) fn may_h2(&self) -> bool {
        self.transport.may_h2()
    }

    fn pop_idle(&self) -> Option<http1::SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(conn) = idle.pop() {
            if !conn.sender.is_closed() && conn.since.elapsed() < IDLE_TIMEOUT {
                return Some(conn.sender);
            }
        }
        None
    }

    fn put_idle(&self, sender: http1::SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    fn pop_lean(&self) -> Option<h1::Conn> {
        let mut idle = self.lean_idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(mut conn) = idle.pop() {
            if conn.since.elapsed() < IDLE_TIMEOUT && conn.conn.is_usable() {
                return Some(conn.conn);
            }
        }
        None
    }

    fn put_lean(self: &Arc<Self>, conn: h1::Conn) {
        let mut idle = self.lean_idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(LeanIdle {
                conn,
                since: Instant::now(),
            });
        }
        drop(idle);
        if !self.sweeping.load(Ordering::Relaxed) && !self.sweeping.swap(true, Ordering::Relaxed) {
            tokio::spawn(sweep(Arc::downgrade(self)));
        }
    }

    /// The shared HTTP/2 connection, if open.
    fn shared_h2(&self) -> Option<http2::SendRequest<Body>> {
        let mut h2 = self.h2.lock().unwrap_or_else(|e| e.into_inner());
        match h2.as_ref() {
            Some(sender) if !sender.is_closed() => Some(sender.clone()),
            Some(_) => {
                *h2 = None;
                None
            }
            None => None,
        }
    }

    /// The shared HTTP/2 connection, opened if there is none (one opening at a time). `None` if the
    /// server turned out (or was learnt meanwhile) to speak HTTP/1.1 only: the connection opened,
    /// if any, is then in the idle pool.
    async fn h2_sender(&self) -> Result<Option<http2::SendRequest<Body>>, Error> {
        if let Some(sender) = self.shared_h2() {
            return Ok(Some(sender));
        }
        let _opening = self.h2_connecting.lock().await;
        if let Some(sender) = self.shared_h2() {
            return Ok(Some(sender));
        }
        if !self.speaks_h2.load(Ordering::Relaxed) {
            return Ok(None);
        }
        match self.connect().await? {
            Conn::H2(sender) => Ok(Some(sender)),
            Conn::H1(sender) => {
                self.put_idle(sender);
                Ok(None)
            }
        }
    }

    /// Opens a connection: TCP (and TLS over `https://`) within `connect_timeout`, then HTTP/2 if
    /// ALPN chose `h2` or `protocol = "h2"` says so over plain TCP, else HTTP/1.1. What it turned
    /// out to speak is learnt for the next requests; an HTTP/2 connection becomes the shared one.
    ///
    /// Boxed: connecting (a TLS handshake, an HTTP/2 handshake) is the largest state of a request's
    /// future, and rare; unboxed it would make every request's future that much larger, and moved
    /// (copied) that much more at each request.
    fn connect(&self) -> Pin<Box<dyn Future<Output = Result<Conn, Error>> + Send + '_>> {
        Box::pin(self.connect_now())
    }

    async fn connect_now(&self) -> Result<Conn, Error> {
        let connecting = async {
            let stream = self.connect_tcp().await?;
            let Some((connector, name)) = &self.transport.tls else {
                let h2 = self.transport.protocol == UpstreamProtocol::H2;
                return Ok::<_, Error>((Io::Plain(stream), h2));
            };
            let tls = connector
                .connect(name.clone(), stream)
                .await
                .map_err(|source| Error::UpstreamTls {
                    server: self.authority.clone(),
                    source,
                })?;
            // A server that takes part in no ALPN gets what `protocol` says: `h2` is then spoken
            // as prior knowledge, as over plain TCP.
            let h2 = match tls.get_ref().1.alpn_protocol() {
                Some(chosen) => chosen == b"h2",
                None => self.transport.protocol == UpstreamProtocol::H2,
            };
            Ok((Io::Tls(Box::new(tls)), h2))
        };
        let (io, h2) = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| self.connect_timed_out())??;
        self.speaks_h2.store(h2, Ordering::Relaxed);
        let conn = match io {
            Io::Plain(stream) => self.handshake(stream, h2).await?,
            Io::Tls(stream) => self.handshake(*stream, h2).await?,
        };
        if let Conn::H2(sender) = &conn {
            *self.h2.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender.clone());
        }
        Ok(conn)
    }

    /// The HTTP handshake on a new connection; its connection task spawned.
    async fn handshake<T>(&self, io: T, h2: bool) -> Result<Conn, Error>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let authority = self.authority.clone();
        let ended = move |err: hyper::Error| {
            tracing::debug!(upstream = %authority, error = %parapet_middlewares::ErrorChain(&err), "upstream connection ended with an error");
        };
        if h2 {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                // A server gone silent is noticed even while no request waits on it.
                .keep_alive_interval(H2_PING_INTERVAL)
                .keep_alive_timeout(H2_PING_TIMEOUT)
                .keep_alive_while_idle(true)
                .handshake(TokioIo::new(io))
                .await
                .map_err(Error::UpstreamProtocol)?;
            tokio::spawn(async move {
                if let Err(err) = conn.await {
                    ended(err);
                }
            });
            return Ok(Conn::H2(sender));
        }
        let (sender, conn) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(Error::UpstreamProtocol)?;
        tokio::spawn(async move {
            // A 101 hands the connection over to its tunnel (`crate::tunnel`); else it ends here.
            if let Err(err) = conn.with_upgrades().await {
                ended(err);
            }
        });
        Ok(Conn::H1(sender))
    }

    fn connect_timed_out(&self) -> Error {
        Error::UpstreamConnect {
            server: self.authority.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {:?}", self.connect_timeout),
            ),
        }
    }

    /// Opens a connection for parapet's own client, within `connect_timeout`. Boxed, as
    /// [`Self::connect`] is.
    fn connect_lean(&self) -> Pin<Box<dyn Future<Output = Result<h1::Conn, Error>> + Send + '_>> {
        Box::pin(async move {
            let stream = tokio::time::timeout(self.connect_timeout, self.connect_tcp())
                .await
                .map_err(|_| self.connect_timed_out())??;
            Ok(h1::Conn::new(stream))
        })
    }

    /// Sends `req`, which has no body, with parapet's own client ([`super::h1`]) on an idle or new
    /// connection. A pooled connection that closed without answering (stale) is replaced by a new
    /// one and the request sent again, if it is idempotent or was not written whole.
    ///
    /// With a `deadline`, the response head must come by then (the connection's own timer, see
    /// [`h1::Conn::exchange_by`]), else [`Failure::TimedOut`]; without, the caller times it.
    pub(crate) async fn send_lean(
        self: &Arc<Self>,
        req: &mut http::Request<Body>,
        lease: Lease,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<http::Response<Body>, SendError> {
        let idempotent = super::is_idempotent(req.method());
        let mut reused = true;
        loop {
            let idle = if reused { self.pop_lean() } else { None };
            let mut conn = match idle {
                Some(conn) => conn,
                None => {
                    reused = false;
                    let connected = match deadline {
                        Some(deadline) => {
                            match tokio::time::timeout_at(deadline, self.connect_lean()).await {
                                Ok(connected) => connected,
                                // As when the whole send was under one timeout: no retry
                                // after the deadline.
                                Err(_) => {
                                    return Err(SendError {
                                        failure: Failure::TimedOut,
                                        unsent: None,
                                    })
                                }
                            }
                        }
                        None => self.connect_lean().await,
                    };
                    match connected {
                        Ok(conn) => conn,
                        Err(err) => {
                            return Err(SendError::unsent(Failure::Send(err), mem::take(req)))
                        }
                    }
                }
            };
            let answer = match deadline {
                Some(deadline) => conn.exchange_by(req, deadline).await,
                None => Some(conn.exchange(req).await),
            };
            let Some(answer) = answer else {
                return Err(SendError {
                    failure: Failure::TimedOut,
                    unsent: None,
                });
            };
            let head = match answer {
                Ok(head) => head,
                Err(h1::Failed::Closed { written, source }) => {
                    if reused && (idempotent || !written) {
                        reused = false;
                        continue;
                    }
                    let failure = Failure::Send(Error::UpstreamIo(source));
                    if written {
                        return Err(SendError {
                            failure,
                            unsent: None,
                        });
                    }
                    return Err(SendError::unsent(failure, mem::take(req)));
                }
                Err(h1::Failed::Broken(source)) => {
                    return Err(SendError {
                        failure: Failure::Send(Error::UpstreamIo(source)),
                        unsent: None,
                    })
                }
                Err(h1::Failed::Malformed(why)) => {
                    return Err(SendError {
                        failure: Failure::Framing(why),
                        unsent: None,
                    })
                }
            };
            let body = match head.answer(&mut conn) {
                h1::Answer::Whole { body, reusable } => {
                    if reusable {
                        self.put_lean(conn);
                    }
                    body
                }
                h1::Answer::Streaming(rest) => Body::new(h1::Streamed::new(
                    conn,
                    rest,
                    Arc::clone(self),
                    lease.read_timeout,
                    lease.permit,
                )),
            };
            // The request is done with: its extensions' map is kept for another request's, and
            // its header map for another response's.
            crate::spare::give(std::mem::take(req.extensions_mut()));
            crate::spare::give_headers(std::mem::take(req.headers_mut()));
            return Ok(head.response.map(|()| body));
        }
    }

    async fn connect_tcp(&self) -> Result<TcpStream, Error> {
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|source| Error::UpstreamConnect {
                server: self.authority.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        // A server that vanished while its response is awaited or read is noticed (see
        // `server::accept::tcp_keepalive`); set per connection, and connections are reused.
        let _ = socket2::SockRef::from(&stream)
            .set_tcp_keepalive(&crate::server::accept::tcp_keepalive());
        Ok(stream)
    }

    /// Sends `req` on the shared HTTP/2 connection `sender`; a request the connection could not
    /// take (it closed meanwhile: never sent) goes once on a new connection. The target becomes
    /// absolute and `Host` becomes `:authority` (RFC 9113 §8.3.1).
    async fn send_h2(
        self: &Arc<Self>,
        mut sender: http2::SendRequest<Body>,
        req: http::Request<Body>,
        lease: Lease,
    ) -> Result<http::Response<Body>, SendError> {
        let mut req = self.h2_request(req).map_err(|failure| SendError {
            failure,
            unsent: None,
        })?;
        let mut fresh = false;
        loop {
            match sender.try_send_request(req).await {
                Ok(response) => return Ok(self.track(None, response, None, lease)),
                Err(mut err) => match err.take_message() {
                    Some(back) if !fresh => {
                        req = back;
                        fresh = true;
                        self.forget_h2(&sender);
                        sender = match self.h2_sender().await {
                            Ok(Some(sender)) => sender,
                            Ok(None) => {
                                let failure =
                                    Failure::Send(Error::UpstreamProtocol(err.into_error()));
                                return Err(SendError::unsent(failure, origin_request(req)));
                            }
                            Err(err) => {
                                let failure = Failure::Send(err);
                                return Err(SendError::unsent(failure, origin_request(req)));
                            }
                        };
                    }
                    // Never sent, twice: handed back for another server.
                    Some(back) => {
                        let failure = send_failure(err.into_error());
                        return Err(SendError::unsent(failure, origin_request(back)));
                    }
                    None => {
                        return Err(SendError {
                            failure: send_failure(err.into_error()),
                            unsent: None,
                        })
                    }
                },
            }
        }
    }

    /// Drops the shared HTTP/2 connection if it is `failed` (closed), so the next request opens one.
    fn forget_h2(&self, failed: &http2::SendRequest<Body>) {
        let mut h2 = self.h2.lock().unwrap_or_else(|e| e.into_inner());
        if failed.is_closed() && h2.as_ref().is_some_and(|s| s.is_closed()) {
            *h2 = None;
        }
    }

    /// `req` (origin form, with `Host`) as an HTTP/2 request: the absolute target whose authority
    /// is the `Host` it carried (else the server's), since `:authority` replaces `Host` in HTTP/2
    /// (RFC 9113 §8.3.1).
    fn h2_request(&self, req: http::Request<Body>) -> Result<http::Request<Body>, Failure> {
        let (mut parts, body) = req.into_parts();
        // No upgrade over HTTP/2 (RFC 9113 §8.6): the request goes as an ordinary one.
        parts.headers.remove(http::header::CONNECTION);
        parts.headers.remove(http::header::UPGRADE);
        let host = parts.headers.remove(http::header::HOST);
        let authority = host
            .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
            .or_else(|| http::uri::Authority::try_from(self.authority.as_str()).ok());
        let pq = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(self.transport.scheme.clone());
        uri.authority = authority;
        uri.path_and_query = Some(pq);
        parts.uri = http::Uri::from_parts(uri)
            .map_err(|_| Failure::Framing("request target cannot be sent over HTTP/2"))?;
        parts.version = http::Version::HTTP_2;
        Ok(http::Request::from_parts(parts, body))
    }

    /// Sends `req` on a pooled or new connection; the response's body returns the connection to the
    /// pool when read to its end. `upload` is what [`Upload::track`] gave for `req`; `lease` what
    /// the response body holds ([`Lease`]). A request that never went out (no connection could be
    /// opened, or a fresh one broke before taking a byte) comes back in the error, to be retried.
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut req: http::Request<Body>,
        upload: Option<Arc<Upload>>,
        lease: Lease,
    ) -> Result<http::Response<Body>, SendError> {
        if upload.is_none() && self.takes_lean(&req) {
            // Boxed: requests parapet's client takes come here only after an upload that turned
            // out to have no body (most go straight to `send_lean`), so this future need not
            // carry its state.
            return Box::pin(self.send_lean(&mut req, lease, None)).await;
        }
        // Boxed: hyper's client path is some kilobytes of state, which every request's future would
        // otherwise carry and copy (into the box the app's future lives in) even when the request
        // goes by parapet's own client, in a few hundred bytes.
        Box::pin(self.send_hyper(req, upload, lease)).await
    }

    /// Whether parapet's own client sends `req` ([`Self::send_lean`]): a request with no body
    /// tracked for upload, no upgrade and no CONNECT, to a plain HTTP/1.1 server.
    pub(crate) fn takes_lean(&self, req: &http::Request<Body>) -> bool {
        self.lean
            && !Upload::tracks(req)
            && *req.method() != http::Method::CONNECT
            && req
                .extensions()
                .get::<crate::tunnel::UpgradeRequest>()
                .is_none()
    }

    /// [`Self::send`] by hyper's client: requests with a body, upgrades, CONNECT, HTTP/2 and TLS.
    async fn send_hyper(
        self: &Arc<Self>,
        mut req: http::Request<Body>,
        upload: Option<Arc<Upload>>,
        lease: Lease,
    ) -> Result<http::Response<Body>, SendError> {
        // One pooled connection at most gets a chance: a second stale one is unlikely, and a fresh
        // connection is the sure way to get the request through.
        let mut reused = true;
        // A connection takes its next request only once this one's body is sent, whatever the
        // response did: an upstream may answer (a 401, a 413) before reading the whole upload.
        let request_done = upload;
        if self.speaks_h2.load(Ordering::Relaxed) {
            match self.h2_sender().await {
                Ok(Some(sender)) => return self.send_h2(sender, req, lease).await,
                // Learnt to speak HTTP/1.1 only: on below.
                Ok(None) => {}
                Err(err) => return Err(SendError::unsent(Failure::Send(err), req)),
            }
        }
        // Kept for HTTP/2 only (see `upstream_request`): over HTTP/1.1 `TE` would need a
        // `Connection: TE` too (RFC 9110 §10.1.4). Removed whatever this server's protocol: a
        // request retried from a server that may speak HTTP/2 can carry it.
        req.headers_mut().remove(http::header::TE);
        loop {
            let idle = if reused { self.pop_idle() } else { None };
            let mut sender = match idle {
                Some(s) => s,
                None => {
                    reused = false;
                    match self.connect().await {
                        Ok(Conn::H1(sender)) => sender,
                        // ALPN chose HTTP/2 where HTTP/1.1 was expected (the server changed).
                        Ok(Conn::H2(sender)) => return self.send_h2(sender, req, lease).await,
                        Err(err) => return Err(SendError::unsent(Failure::Send(err), req)),
                    }
                }
            };
            if let Err(err) = sender.ready().await {
                // A pooled connection that died: try the next. A fresh one that died: give up.
                if reused {
                    continue;
                }
                let failure = Failure::Send(Error::UpstreamProtocol(err));
                return Err(SendError::unsent(failure, req));
            }
            let upgrade = req
                .extensions()
                .get::<crate::tunnel::UpgradeRequest>()
                .is_some();
            match sender.try_send_request(req).await {
                Ok(mut response) if response.status() == http::StatusCode::SWITCHING_PROTOCOLS => {
                    // The connection is the tunnel's now (or, for a 101 nobody asked for, closed):
                    // never pooled again.
                    drop(sender);
                    if upgrade {
                        let tunnel = crate::tunnel::UpstreamTunnel::new(
                            hyper::upgrade::on(&mut response),
                            lease.permit,
                        );
                        response.extensions_mut().insert(tunnel);
                    }
                    return Ok(response.map(|_| Body::empty()));
                }
                Ok(response) => return Ok(self.track(Some(sender), response, request_done, lease)),
                Err(mut err) => match err.take_message() {
                    // Never written: safe to send again on a new connection.
                    Some(back) if reused => {
                        req = back;
                        reused = false;
                    }
                    Some(back) => {
                        let failure = send_failure(err.into_error());
                        return Err(SendError::unsent(failure, back));
                    }
                    None => {
                        return Err(SendError {
                            failure: send_failure(err.into_error()),
                            unsent: None,
                        })
                    }
                },
            }
        }
    }

    /// The response as the client gets it: its body holds the `lease` (and, for HTTP/1.1, the
    /// connection `sender`, pooled again at the body's end) until it ends. An HTTP/2 response
    /// (`sender` `None`) holds no connection: its stream ends with the body.
    fn track(
        self: &Arc<Self>,
        sender: Option<http1::SendRequest<Body>>,
        response: http::Response<Incoming>,
        request_done: Option<Arc<Upload>>,
        lease: Lease,
    ) -> http::Response<Body> {
        if response.body().is_end_stream() {
            if let Some(sender) = sender {
                if request_done.as_ref().is_none_or(|d| d.is_done()) {
                    self.put_idle(sender);
                }
            }
            return response.map(Body::from);
        }
        let pool = Arc::clone(self);
        response.map(|inner| {
            Body::new(PooledBody {
                inner,
                sender,
                pool,
                request_done,
                read_timeout: h1::ReadTimeout::new(lease.read_timeout),
                _permit: lease.permit,
            })
        })
    }
}

impl h1::Release for Arc<ServerPool> {
    fn release(&self, conn: h1::Conn) {
        self.put_lean(conn);
    }
}

/// Closes, every [`LEAN_SWEEP`], the idle connections of parapet's own client that the server
/// closed or that were idle longer than [`IDLE_TIMEOUT`]; ends with the pool.
async fn sweep(pool: std::sync::Weak<ServerPool>) {
    loop {
        tokio::time::sleep(LEAN_SWEEP).await;
        let Some(pool) = pool.upgrade() else { return };
        let mut idle = pool.lean_idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain_mut(|c| c.since.elapsed() < IDLE_TIMEOUT && c.conn.is_usable());
    }
}

/// A request made HTTP/2 by [`ServerPool::h2_request`] back as `send` was given it (origin form, with
/// `Host`): one handed back unsent may go to another server, over either protocol.
fn origin_request(req: http::Request<Body>) -> http::Request<Body> {
    let (mut parts, body) = req.into_parts();
    if let Some(host) = parts
        .uri
        .authority()
        .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(http::header::HOST, host);
    }
    if let Some(pq) = parts.uri.path_and_query().cloned() {
        parts.uri = http::Uri::from(pq);
    }
    parts.version = http::Version::HTTP_11;
    http::Request::from_parts(parts, body)
}

/// How often an idle HTTP/2 upstream connection is pinged, and how long its answer may take before
/// the connection is closed (RFC 9113 §6.7).
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// A connection's stream before the HTTP handshake.
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// What a response body holds besides its connection: the server's connection permit
/// (`max_connections`), released with the body, and `read_timeout`.
#[derive(Default)]
pub(crate) struct Lease {
    pub(crate) permit: Option<tokio::sync::OwnedSemaphorePermit>,
    pub(crate) read_timeout: Option<Duration>,
}

/// A send that failed, with the request if it never went out (safe to send elsewhere). Boxed: a
/// send's result is moved from future to future on every request, and a request inline would make
/// every one of those copies some 260 bytes larger for the rare failure that carries it.
pub(crate) struct SendError {
    pub(crate) failure: Failure,
    pub(crate) unsent: Option<Box<http::Request<Body>>>,
}

impl SendError {
    fn unsent(failure: Failure, req: http::Request<Body>) -> Self {
        Self {
            failure,
            unsent: Some(Box::new(req)),
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that gives its connection back to the pool once read to its end. Dropped
    /// before its end, it takes the connection with it (hyper closes a connection whose body was
    /// abandoned). With `read_timeout`, a pause between two frames longer than it fails the body,
    /// and the connection goes with it: the timer is re-armed only when it fires (from the time of
    /// the last frame), not at every frame. An HTTP/2 response's body holds no connection
    /// (`sender` is `None`; dropped early, its stream is reset), only its lease.
    struct PooledBody {
        inner: Incoming,
        sender: Option<http1::SendRequest<Body>>,
        pool: Arc<ServerPool>,
        // Set once the request body was sent to its end; `None` for a request without a body.
        request_done: Option<Arc<Upload>>,
        #[pin]
        read_timeout: h1::ReadTimeout,
        _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    }
}

/// Gives `sender` back to `pool` once the request body is over (still uploading, the connection is
/// busy and will close when the upload ends).
fn release(
    sender: &mut Option<http1::SendRequest<Body>>,
    request_done: Option<&Arc<Upload>>,
    pool: &ServerPool,
) {
    if let Some(sender) = sender.take() {
        if request_done.is_none_or(|d| d.is_done()) {
            pool.put_idle(sender);
        }
    }
}

/// How far a request body has gone upstream, shared by the body as hyper sends it, the response body
/// (which returns its connection to the pool only once the upload is over) and the proxy's send
/// phase. One allocation per request with a body, none for one without.
pub(crate) struct Upload {
    /// The body was sent to its end.
    done: AtomicBool,
    /// Frames taken by the upstream connection so far.
    sent: AtomicU64,
    /// The last time hyper asked for more, the body had none yet: it waits on its own source (the
    /// client), not on the upstream.
    waiting: AtomicBool,
    /// Notified once, when `done` is set.
    finished: tokio::sync::Notify,
}

impl Upload {
    /// Whether [`Upload::track`] would track `req`: whether it has a body.
    pub(crate) fn tracks(req: &http::Request<Body>) -> bool {
        !http_body::Body::is_end_stream(req.body())
            && http_body::Body::size_hint(req.body()).exact() != Some(0)
    }

    /// Wraps `req`'s body to report how far it has gone, once its first frame (or its end) is in:
    /// a body broken from its first byte fails here, before anything was sent upstream. `None`
    /// (and the request unchanged) for a request without a body.
    pub(crate) async fn track(
        req: http::Request<Body>,
    ) -> Result<(http::Request<Body>, Option<Arc<Upload>>), GatewayError> {
        if !Upload::tracks(&req) {
            return Ok((req, None));
        }
        let exact = http_body::Body::size_hint(req.body()).exact();
        let upload = Arc::new(Upload {
            done: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            finished: tokio::sync::Notify::new(),
        });
        let (parts, inner) = req.into_parts();
        let mut body = TrackedBody {
            inner,
            first: None,
            remaining: exact,
            upload: Arc::clone(&upload),
        };
        body.first_frame().await?;
        Ok((
            http::Request::from_parts(parts, Body::new(body)),
            Some(upload),
        ))
    }

    /// Whether the body was sent to its end.
    pub(crate) fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Resolves once the body was sent to its end.
    pub(crate) async fn finished(&self) {
        if !self.is_done() {
            // `notify_one` leaves a permit if no one waits yet: a body that ends in between is seen.
            self.finished.notified().await;
        }
    }

    /// Frames sent so far, and whether the body waits on its own source: what tells an upstream
    /// that stopped taking the body from a client that stopped sending it.
    pub(crate) fn progress(&self) -> (u64, bool) {
        (
            self.sent.load(Ordering::Relaxed),
            self.waiting.load(Ordering::Relaxed),
        )
    }
}

/// Why a send failed: the request body's own failure if that is what broke it (the body's error is
/// the cause hyper gives, see [`TrackedBody`]), else the upstream connection.
fn send_failure(err: hyper::Error) -> Failure {
    match GatewayError::find_in(&err) {
        Some(client) => Failure::RequestBody(client.clone()),
        None => Failure::Send(Error::UpstreamProtocol(err)),
    }
}

/// What a request body's error answers: a layer's own [`GatewayError`] as it is (a size limit, a
/// timeout: found anywhere in the error's causes), `ClientClosed` for a client gone before the body's
/// end, `ClientBody` for anything else (a chunked body whose framing is broken: RFC 9112 §7.1).
pub(crate) fn request_body_error(err: BoxError) -> GatewayError {
    if let Some(own) = GatewayError::find_in(&*err) {
        return own.clone();
    }
    let mut closed = false;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*err);
    while let Some(e) = cause {
        // hyper's decoders say a body cut short by the peer's close with `UnexpectedEof`.
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
        {
            closed = true;
            break;
        }
        cause = e.source();
    }
    let kind = if closed {
        GatewayErrorKind::ClientClosed
    } else {
        GatewayErrorKind::ClientBody
    };
    GatewayError::new(kind).with_source(err)
}

/// A request body that says how far it has been sent, and whose errors are the [`GatewayError`]s
/// they answer with ([`request_body_error`]).
struct TrackedBody {
    inner: Body,
    /// The first frame, read before the request head is sent ([`TrackedBody::first_frame`]).
    first: Option<Frame<Bytes>>,
    /// Bytes still to come, for a body of known length: hyper stops polling it after the last one.
    remaining: Option<u64>,
    upload: Arc<Upload>,
}

impl TrackedBody {
    /// Waits for the body's first frame (or its end) and keeps it, so that a body broken from its
    /// first byte fails here, before anything was sent upstream.
    async fn first_frame(&mut self) -> Result<(), GatewayError> {
        let polled = std::future::poll_fn(|cx| Pin::new(&mut self.inner).poll_frame(cx)).await;
        match polled {
            Some(Ok(frame)) => self.first = Some(frame),
            Some(Err(err)) => return Err(request_body_error(err)),
            // Already over (`0\r\n\r\n` at once): hyper will not poll it again, so it is done
            // now, or its connection would never go back to the pool.
            None => {
                if !self.upload.done.swap(true, Ordering::Release) {
                    self.upload.finished.notify_one();
                }
            }
        }
        Ok(())
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = match this.first.take() {
            Some(frame) => Poll::Ready(Some(Ok(frame))),
            None => Pin::new(&mut this.inner)
                .poll_frame(cx)
                .map_err(|err| Box::new(request_body_error(err)) as BoxError),
        };
        let upload = &this.upload;
        upload.waiting.store(polled.is_pending(), Ordering::Relaxed);
        let finished = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(frame))) => {
                upload.sent.fetch_add(1, Ordering::Relaxed);
                if let (Some(remaining), Some(data)) = (this.remaining.as_mut(), frame.data_ref()) {
                    *remaining = remaining.saturating_sub(data.len() as u64);
                }
                this.remaining == Some(0) || this.inner.is_end_stream()
            }
            _ => false,
        };
        if finished && !upload.done.swap(true, Ordering::Release) {
            upload.finished.notify_one();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let hint = self.inner.size_hint();
        let Some(first) = self.first.as_ref().and_then(Frame::data_ref) else {
            return hint;
        };
        let len = first.len() as u64;
        let mut with_first = SizeHint::new();
        with_first.set_lower(hint.lower().saturating_add(len));
        if let Some(upper) = hint.upper() {
            with_first.set_upper(upper.saturating_add(len));
        }
        with_first
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = Pin::new(&mut *this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => release(this.sender, this.request_done.as_ref(), this.pool),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => {
                release(this.sender, this.request_done.as_ref(), this.pool);
            }
            Poll::Ready(Some(Err(_))) => *this.sender = None,
            Poll::Ready(Some(Ok(_))) => this.read_timeout.as_mut().read(),
            Poll::Pending => {
                if let Some(err) = this.read_timeout.as_mut().poll_expired(cx) {
                    // Never pooled: the connection goes with this body.
                    *this.sender = None;
                    return Poll::Ready(Some(Err(err)));
                }
            }
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A send's result is moved from future to future on every request: the request a failure may
    /// hand back stays out of it (boxed), so that it is not a request's size larger for the rare
    /// failure that carries one.
    #[test]
    fn a_send_result_holds_no_request_inline() {
        let request = size_of::<http::Request<Body>>();
        let error = size_of::<SendError>();
        assert!(
            error < request / 2,
            "SendError: {error} bytes, a request {request}"
        );
        let result = size_of::<Result<http::Response<Body>, SendError>>();
        let response = size_of::<http::Response<Body>>();
        assert!(
            result <= response + 8,
            "a send's result: {result} bytes, a response {response}"
        );
    }

    #[test]
    fn a_request_body_error_is_blamed_on_the_client() {
        let broken = std::io::Error::new(std::io::ErrorKind::InvalidData, "invalid chunk size");
        let err = request_body_error(Box::new(broken));
        assert_eq!(err.kind(), GatewayErrorKind::ClientBody);
        assert_eq!(err.status(), 400);

        let cut = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "incomplete body");
        let err = request_body_error(Box::new(cut));
        assert_eq!(err.kind(), GatewayErrorKind::ClientClosed);

        // A layer's own error (a size limit, a timeout) keeps its kind.
        let own = GatewayError::new(GatewayErrorKind::UpstreamTimeout);
        let err = request_body_error(Box::new(own));
        assert_eq!(err.kind(), GatewayErrorKind::UpstreamTimeout);
    }
}
