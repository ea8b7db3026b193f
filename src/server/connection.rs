//! A connection's life: dispatch on the protocol its first bytes tell, serve it (HTTP/1.1 with idle
//! release in [`super::http1`], HTTP/2 through hyper), drain it when its listener drains, and hand
//! each request to the gateway current at that request.
//!
//! Every phase of a connection is bounded in time (see `docs/config.md`): the first bytes and a
//! preface by `server.header_timeout`; on HTTP/1.1, a request head and an idle keep-alive connection
//! by the same (`super::http1`); on HTTP/2, a connection with no stream open by the same, and a
//! silent peer by keep-alive PINGs (RFC 9113 §6.7) sent after `header_timeout` without a frame and
//! answered within `header_timeout`; on both, a stalled request body and a client that does not read
//! by `server.body_timeout`. Both protocols are timed by the connection's one clock
//! (`http1::Clock`), never by a timer per request.
//!
//! [`ConnectionService`] is the outermost service of every connection: it looks the listener's entry
//! up in the current [`Gateway`] per request, so a reload reaches keep-alive connections at their next
//! request while requests in flight finish on the gateway they started with; a retired listener's
//! connections keep the entry they were accepted with.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::BytesMut;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use parapet_middlewares::host::report_final_status;
use parapet_middlewares::ErrorChain;
use parapet_middlewares::{GatewayError, GatewayErrorKind, TlsDetails, TlsInfo};
use pin_project_lite::pin_project;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::accept::{sniff, ConnectionLimit, ConnectionPermit, Protocol};
use super::http1::{self, Alarm, ClientStream, Clock, ConnIo, Quiet, ServedBody};
use super::Phase;
use crate::build::{Entry, Gateway};
use crate::config::ServerConfig;
use crate::metrics::{BodyCounters, HandshakeFailure, OpenConnection};
use crate::router::RouterFuture;
use crate::service::AppFuture;
use crate::{ClientAddr, Request, Response};

/// Serves an accepted connection until it ends: over TLS if its listener terminates TLS (`tls`),
/// then in the protocol ALPN chose; in plain HTTP, in the protocol its first bytes tell. It is
/// counted open (`open`) until then, under the protocol it speaks once that is told, and holds its
/// place under `server.max_connections` (`_permit`) as long.
///
/// This future is the connection's task, spawned as it is, and an open connection holds it whole
/// however long it idles. Each protocol's state (TLS, HTTP/1.1, HTTP/2) is boxed, so that a
/// connection holds only the one it speaks and the task stays under a kibibyte.
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve(
    builders: Arc<Builders>,
    mut stream: TcpStream,
    service: ConnectionService,
    mut phase: watch::Receiver<Phase>,
    peer: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut open: OpenConnection,
    _permit: ConnectionPermit,
) {
    if let Some(tls) = tls {
        // Boxed: a plain connection's task does not carry the TLS states in its own.
        return Box::pin(serve_tls(builders, stream, service, phase, peer, tls, open)).await;
    }
    // Dispatch on the first bytes instead of hyper-util's `auto`, which buffers the preface and
    // wraps every read of the connection to replay it. A client that sends nothing, or a part of the
    // HTTP/2 preface and no more, is dropped after `server.header_timeout`, or as soon as its
    // listener drains.
    let protocol = tokio::select! {
        p = tokio::time::timeout(builders.header_timeout(), sniff(&mut stream)) => p.ok().flatten(),
        _ = phase.wait_for(|p| *p >= Phase::Draining) => None,
    };
    if let Some((protocol, first)) = protocol {
        open.speaks(protocol.speaks());
        let body = open.stats().body().clone();
        serve_protocol(
            &builders, stream, protocol, first, service, phase, peer, body,
        )
        .await;
    }
}

/// Serves a connection of a TLS listener: the handshake, then the protocol ALPN chose.
async fn serve_tls(
    builders: Arc<Builders>,
    stream: TcpStream,
    mut service: ConnectionService,
    mut phase: watch::Receiver<Phase>,
    peer: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    mut open: OpenConnection,
) {
    // The handshake is bounded like a request head: a client that stalls it, sends garbage or
    // plain HTTP is dropped, with a debug line only (scanners do this all day).
    let handshake = tokio::time::timeout(
        builders.header_timeout(),
        tokio_rustls::TlsAcceptor::from(tls).accept(stream),
    );
    let stream = tokio::select! {
        accepted = handshake => match accepted {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                tracing::debug!(client = %peer, error = %ErrorChain(&err), "TLS handshake failed");
                open.stats().handshake_failed(HandshakeFailure::of(&err));
                return;
            }
            Err(_) => {
                tracing::debug!(client = %peer, "TLS handshake not done within server.header_timeout");
                open.stats().handshake_failed(HandshakeFailure::Timeout);
                return;
            }
        },
        _ = phase.wait_for(|p| *p >= Phase::Draining) => return,
    };
    let (_, session) = stream.get_ref();
    // A tls-alpn-01 validation (RFC 8737 §3) ends with the handshake: the challenge certificate was
    // the answer.
    if session.alpn_protocol() == Some(crate::acme::ACME_TLS_ALPN) {
        return;
    }
    let protocol = match session.alpn_protocol() {
        Some(b"h2") => Protocol::Http2,
        _ => Protocol::Http1,
    };
    open.stats().handshake_done();
    open.speaks(protocol.speaks());
    let version = match session.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "TLS",
    };
    service.tls = Some(TlsInfo(Arc::new(TlsDetails {
        version,
        sni: session.server_name().map(Box::from),
    })));
    let body = open.stats().body().clone();
    serve_protocol(
        &builders,
        stream,
        protocol,
        BytesMut::new(),
        service,
        phase,
        peer,
        body,
    )
    .await;
}

/// Serves a connection in `protocol`, `first` holding bytes already read from it (in the thread's
/// read buffer, see `accept::sniff`); its request and response bodies count their bytes in `body`.
#[allow(clippy::too_many_arguments)]
async fn serve_protocol<S: ClientStream>(
    builders: &Builders,
    stream: S,
    protocol: Protocol,
    first: BytesMut,
    mut service: ConnectionService,
    mut phase: watch::Receiver<Phase>,
    peer: SocketAddr,
    body: BodyCounters,
) {
    match protocol {
        Protocol::Http1 => {
            Box::pin(http1::serve(
                builders, stream, first, service, phase, peer, body,
            ))
            .await
        }
        Protocol::Http2 => {
            let quiet = Arc::new(Quiet::unlimited(body));
            service.quiet = Some(Arc::clone(&quiet));
            let io = ConnIo::new(stream, first.freeze(), Arc::clone(&quiet));
            let conn = H2Conn {
                conn: builders.h2.load().serve_connection(io, service),
                quiet,
                clock: Clock::new(),
                header_timeout: builders.header_timeout(),
                body_timeout: builders.body_timeout(),
                closing: false,
            };
            Box::pin(drive(conn, &mut phase, peer)).await;
        }
    }
}

/// Streams a client may reset before parapet accepted them, before GOAWAY `ENHANCE_YOUR_CALM`: the
/// HTTP/2 rapid-reset attack (CVE-2023-44487). The `h2` crate's default, made explicit.
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;

/// Streams parapet may reset because of a client's errors, before GOAWAY: the reset flood of
/// CVE-2025-8671 ("MadeYouReset"). hyper's default, made explicit.
const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// The connection builders every listener shares.
pub(crate) struct Builders {
    /// HTTP/1.1's, with the `[server]` head limits: replaced by a reload, taken by each connection
    /// when it is accepted.
    pub(super) h1: ArcSwap<hyper::server::conn::http1::Builder>,
    /// `server.idle_release`, in milliseconds.
    idle_release: AtomicU64,
    /// `server.header_timeout`, in milliseconds.
    header_timeout: AtomicU64,
    /// `server.body_timeout`, in milliseconds.
    body_timeout: AtomicU64,
    /// `server.tunnel_timeout`, in milliseconds.
    tunnel_timeout: AtomicU64,
    /// Rebuilt when a reload changes `[server]`; each connection takes the one current when it
    /// starts.
    h2: ArcSwap<hyper::server::conn::http2::Builder<TokioExecutor>>,
    /// `server.max_uri_length`.
    max_uri_length: AtomicU16,
    /// `server.max_requests_per_connection`, `u64::MAX` for none.
    max_requests: AtomicU64,
    /// `server.max_header_size`, for the lean HTTP/1.1 path (hyper's builder holds its own).
    max_header_size: AtomicUsize,
    /// `server.max_headers`, likewise.
    max_headers: AtomicUsize,
    /// `server.lean_http1`.
    lean_http1: AtomicBool,
    /// `server.max_connections`, shared by every listener.
    pub(super) connections: ConnectionLimit,
}

impl Builders {
    pub(super) fn new(server: &ServerConfig) -> Self {
        let builders = Self {
            h1: ArcSwap::from_pointee(h1_builder(server)),
            idle_release: Default::default(),
            header_timeout: Default::default(),
            body_timeout: Default::default(),
            tunnel_timeout: Default::default(),
            h2: ArcSwap::from_pointee(h2_builder(server)),
            max_uri_length: Default::default(),
            max_requests: Default::default(),
            max_header_size: Default::default(),
            max_headers: Default::default(),
            lean_http1: Default::default(),
            connections: ConnectionLimit::new(),
        };
        builders.set(server);
        builders
    }

    /// Takes the `[server]` settings a reload may change.
    pub(super) fn set(&self, server: &ServerConfig) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.idle_release
            .store(ms(server.idle_release), Ordering::Relaxed);
        self.header_timeout
            .store(ms(server.header_timeout), Ordering::Relaxed);
        self.body_timeout
            .store(ms(server.body_timeout), Ordering::Relaxed);
        self.tunnel_timeout
            .store(ms(server.tunnel_timeout), Ordering::Relaxed);
        self.h2.store(Arc::new(h2_builder(server)));
        // The model holds it to hyper's own limit, 65534.
        let max_uri_length = u16::try_from(server.max_uri_length).unwrap_or(u16::MAX);
        self.max_uri_length.store(max_uri_length, Ordering::Relaxed);
        self.max_requests.store(
            server.max_requests_per_connection.unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.max_header_size
            .store(server.max_header_size, Ordering::Relaxed);
        self.max_headers
            .store(server.max_headers, Ordering::Relaxed);
        self.lean_http1.store(server.lean_http1, Ordering::Relaxed);
        self.h1.store(Arc::new(h1_builder(server)));
        self.connections.set(server.max_connections);
    }

    pub(super) fn max_uri_length(&self) -> u16 {
        self.max_uri_length.load(Ordering::Relaxed)
    }

    pub(super) fn max_requests(&self) -> u64 {
        self.max_requests.load(Ordering::Relaxed)
    }

    /// What the lean HTTP/1.1 path of a connection accepted now works with; `None` if
    /// `server.lean_http1` is off.
    pub(super) fn lean(&self) -> Option<super::lean::Limits> {
        if !self.lean_http1.load(Ordering::Relaxed) {
            return None;
        }
        let idle_release = self.idle_release();
        Some(super::lean::Limits {
            max_header_size: self.max_header_size.load(Ordering::Relaxed),
            max_headers: self.max_headers.load(Ordering::Relaxed),
            header_timeout: self.header_timeout(),
            body_timeout: self.body_timeout(),
            release_after: release_ticks(idle_release),
        })
    }

    pub(super) fn idle_release(&self) -> Duration {
        Duration::from_millis(self.idle_release.load(Ordering::Relaxed))
    }

    pub(super) fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout.load(Ordering::Relaxed))
    }

    pub(super) fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout.load(Ordering::Relaxed))
    }

    /// `server.tunnel_timeout`, read when a tunnel opens.
    pub(super) fn tunnel_timeout(&self) -> Duration {
        Duration::from_millis(self.tunnel_timeout.load(Ordering::Relaxed))
    }
}

/// `server.idle_release` in clock ticks (whole seconds, at least one); 0 releases at once.
pub(super) fn release_ticks(idle_release: Duration) -> u32 {
    if idle_release.is_zero() {
        0
    } else {
        u32::try_from(idle_release.as_secs().max(1)).unwrap_or(u32::MAX)
    }
}

/// hyper's HTTP/2 server with parapet's limits made explicit.
fn h2_builder(server: &ServerConfig) -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.max_concurrent_streams(server.max_streams)
        // The longest header list a client may send (`SETTINGS_MAX_HEADER_LIST_SIZE`, RFC 9113
        // §6.5.2) is `max_header_size`, as for an HTTP/1.1 head: a larger block is answered 431
        // (RFC 6585 §5). The `h2` crate enforces it while decoding, and from it bounds the
        // CONTINUATION frames of one header block (a flood is answered GOAWAY ENHANCE_YOUR_CALM).
        .max_header_list_size(u32::try_from(server.max_header_size).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
        // A PING after `header_timeout` without a frame from the peer, which must answer within
        // `header_timeout`: a peer that vanished with streams open is noticed (one timer per
        // connection, hyper's, reset by reads rather than re-armed).
        .timer(TokioTimer::new())
        .keep_alive_interval(server.header_timeout)
        .keep_alive_timeout(server.header_timeout);
    h2
}

type H2Connection<S> =
    hyper::server::conn::http2::Connection<ConnIo<S>, ConnectionService, TokioExecutor>;

pin_project! {
    /// An HTTP/2 connection and its clock: closed when it has had no stream open for
    /// `server.header_timeout` (a preface that never completes, a connection that opens no stream,
    /// an idle one alike), or stalled for `server.body_timeout`.
    struct H2Conn<S: ClientStream> {
        #[pin]
        conn: H2Connection<S>,
        quiet: Arc<Quiet>,
        clock: Clock,
        header_timeout: Duration,
        body_timeout: Duration,
        // GOAWAY was sent for idleness a tick ago.
        closing: bool,
    }
}

impl<S: ClientStream> Future for H2Conn<S> {
    type Output = Result<(), hyper::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            if let Poll::Ready(result) = this.conn.as_mut().poll(cx) {
                return Poll::Ready(result);
            }
            let alarm = ready!(this.clock.poll_tick(
                cx,
                this.quiet,
                *this.header_timeout,
                *this.body_timeout
            ));
            if *this.closing {
                // The GOAWAY did not end it within a tick (a peer that does not read): drop it.
                return Poll::Ready(Ok(()));
            }
            match alarm {
                Some(Alarm::HeadTimeout) => {
                    // GOAWAY (RFC 9113 §6.8), then close; during the handshake, close at once.
                    *this.closing = true;
                    this.conn.as_mut().graceful_shutdown();
                }
                // One stalled stream cannot be failed alone without a timer per stream: the
                // connection stalled as a whole, so it closes.
                Some(Alarm::BodyStalled | Alarm::Stalled) => return Poll::Ready(Ok(())),
                None => {}
            }
        }
    }
}

impl<S: ClientStream> Graceful for H2Conn<S> {
    fn graceful(self: Pin<&mut Self>) {
        self.project().conn.graceful_shutdown()
    }
}

/// HTTP/1.1's connection builder for the `[server]` settings.
fn h1_builder(server: &ServerConfig) -> hyper::server::conn::http1::Builder {
    let mut h1 = hyper::server::conn::http1::Builder::new();
    // No timer for hyper's HTTP/1: a request head must arrive within the header timeout (slow-loris
    // protection), which the connection's own clock enforces (see http1::Clock) instead of a
    // timer hyper would allocate and register for every request.
    h1.header_read_timeout(None);
    // A head over `max_header_size`, or with more header lines than `max_headers`: hyper answers
    // 431 (RFC 6585 §5) and closes. hyper's default of 100 header lines keeps its header array on
    // the stack; any other count allocates it for every request, so it is set only when changed.
    h1.max_header_size(server.max_header_size);
    if server.max_headers != 100 {
        h1.max_headers(server.max_headers);
    }
    h1
}

/// A connection that can be asked to finish its requests and close.
pub(super) trait Graceful: Future {
    fn graceful(self: Pin<&mut Self>);
}

/// Serves a connection until it ends, draining it when its listener drains and dropping it when
/// the shutdown timeout passes; `None` if it failed or was dropped.
pub(super) async fn drive<C, T, E>(
    conn: C,
    phase: &mut watch::Receiver<Phase>,
    peer: SocketAddr,
) -> Option<T>
where
    C: Graceful<Output = Result<T, E>>,
    E: Into<parapet_middlewares::BoxError>,
{
    tokio::pin!(conn);
    let mut draining = false;
    // Tells the phase wait below to be polled only once the phase changed (see `PhaseWait`).
    let watcher = phase.clone();
    loop {
        let next = if draining {
            Phase::Closing
        } else {
            Phase::Draining
        };
        let wait = std::pin::pin!(phase.wait_for(|p| *p >= next));
        let mut wait = super::PhaseWait::new(wait, &watcher);
        tokio::select! {
            result = conn.as_mut() => {
                return match result {
                    Ok(done) => Some(done),
                    Err(err) => {
                        let err = err.into();
                        tracing::debug!(client = %peer, error = %ErrorChain(&*err), "connection ended with an error");
                        None
                    }
                };
            }
            _ = &mut wait => {
                if draining {
                    return None;
                }
                // Finish the request in flight, then close; an idle connection closes now.
                draining = true;
                conn.as_mut().graceful();
            }
        }
    }
}

/// The service of one connection: the outermost one, which never fails.
#[derive(Clone)]
pub(crate) struct ConnectionService {
    pub(super) gateway: Arc<ArcSwap<Gateway>>,
    /// The listener's entry when the connection was accepted: used once the listener is retired.
    pub(super) fallback: Option<Entry>,
    /// Set when the listener stops serving (see `RunningListener::retired`).
    pub(super) retired: Arc<AtomicBool>,
    pub(super) listener: Arc<str>,
    pub(super) client: ClientAddr,
    /// `server.max_uri_length` when the connection was accepted (at most 65534, hyper's own limit).
    pub(super) max_uri_length: u16,
    /// Requests in flight and request bodies, for the connection's clock (and HTTP/1.1's idle
    /// release).
    pub(super) quiet: Option<Arc<http1::Quiet>>,
    /// What the connection negotiated, over TLS: a clone goes with each request.
    pub(super) tls: Option<TlsInfo>,
}

impl hyper::service::Service<http::Request<Incoming>> for ConnectionService {
    type Response = http::Response<ServedBody>;
    type Error = std::convert::Infallible;
    type Future = DispatchFuture;

    fn call(&self, req: http::Request<Incoming>) -> DispatchFuture {
        self.dispatch(req.map(|body| http1::client_body(body, self.quiet.as_ref())))
    }
}

impl ConnectionService {
    /// Hands a request to the listener's entry in the current gateway; hyper's connections call it
    /// through [`hyper::service::Service`], the lean HTTP/1.1 path directly.
    pub(super) fn dispatch(&self, req: Request) -> DispatchFuture {
        self.dispatch_noted(req, crate::router::HeadFacts::UNKNOWN)
    }

    /// [`Self::dispatch`] of a request whose head's parser noted `facts` (the lean path's).
    pub(super) fn dispatch_noted(
        &self,
        mut req: Request,
        facts: crate::router::HeadFacts,
    ) -> DispatchFuture {
        // RFC 9110 §15.5.15: a target longer than the server will interpret is answered 414.
        if target_len(req.uri()) > usize::from(self.max_uri_length) {
            tracing::debug!(client = %self.client.0, "request target over server.max_uri_length: 414");
            return DispatchFuture::Gone {
                response: Some(GatewayError::new(GatewayErrorKind::UriTooLong).into_response()),
                guard: self.quiet.as_ref().map(http1::Quiet::start),
            };
        }
        // `admit`, below, puts the client's address in the extensions.
        if let Some(tls) = &self.tls {
            // One reference count and the extension's own small allocation, TLS requests only.
            req.extensions_mut().insert(tls.clone());
        }
        // The gateway current at this request: a reload in between reaches this connection now,
        // and this request keeps the one it started with.
        let gateway = self.gateway.load();
        // Here, before the listener's chain, so that every layer sees the same request: its path
        // normalised, its connection-named headers gone, its client resolved.
        crate::router::admit_noted(&mut req, self.client, gateway.trusted_proxies(), facts);
        let entry = if self.retired.load(Ordering::Acquire) {
            self.fallback.as_ref()
        } else {
            gateway.entry(&self.listener).or(self.fallback.as_ref())
        };
        match entry {
            Some(Entry::Router(router)) => DispatchFuture::Routed {
                fut: router.route(req),
                guard: self.quiet.as_ref().map(http1::Quiet::start),
            },
            Some(Entry::Chain(entry)) => DispatchFuture::Handling {
                fut: entry.handle(req),
                guard: self.quiet.as_ref().map(http1::Quiet::start),
            },
            None => DispatchFuture::Gone {
                response: Some(GatewayError::new(GatewayErrorKind::NoRoute).into_response()),
                guard: self.quiet.as_ref().map(http1::Quiet::start),
            },
        }
    }
}

pin_project! {
    /// A request's response, reported to the access logs it passed through as it leaves.
    #[project = DispatchProj]
    pub(crate) enum DispatchFuture {
        /// The listener's router is handling the request (a listener without middlewares).
        Routed { #[pin] fut: RouterFuture, guard: Option<http1::InFlight> },
        /// The listener's chain is handling the request.
        Handling { #[pin] fut: AppFuture, guard: Option<http1::InFlight> },
        /// Answered before the listener's entry: a target over `max_uri_length` (414), or a
        /// listener with no entry (gone in a reload, none kept; 404).
        Gone { response: Option<Response>, guard: Option<http1::InFlight> },
    }
}

impl Future for DispatchFuture {
    type Output = Result<http::Response<ServedBody>, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (response, guard) = match self.project() {
            DispatchProj::Routed { fut, guard } => (ready!(fut.poll(cx)), guard.take()),
            DispatchProj::Handling { fut, guard } => (ready!(fut.poll(cx)), guard.take()),
            DispatchProj::Gone { response, guard } => match response.take() {
                Some(r) => (Ok(r), guard.take()),
                None => return Poll::Pending,
            },
        };
        let Ok(mut response) = response;
        if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            response = switch_protocols(response, guard.as_ref());
        }
        report_final_status(&response);
        // parapet speaks HTTP/1.1 to the client whatever version the upstream answered in (RFC 9110
        // §6.2): an HTTP/1.0 upstream's answer must not tell a 1.1 client to drop the connection.
        // hyper answers an HTTP/1.0 request in 1.0 itself; HTTP/2 ignores the field.
        *response.version_mut() = http::Version::HTTP_11;
        // The last request `max_requests_per_connection` allows: the response says the connection
        // closes, and hyper closes it once the response is out (RFC 9112 §9.6). So does parapet's
        // refusal of a malformed or oversized request: what follows it on the connection (a
        // pipelined request, the rest of a body) cannot be trusted to be framed as the client meant
        // (nginx closes after these too).
        if guard.as_ref().is_some_and(http1::InFlight::is_last) || refuses_connection(&response) {
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        // The request stays in flight until hyper is done with the body.
        Poll::Ready(Ok(response.map(|body| ServedBody::new(body, guard))))
    }
}

/// A 101 as it leaves: its tunnel handed to the connection, which opens it once the head is out.
/// A 101 with no tunnel (an in-process handler's own, or one on HTTP/2, which has no upgrade) would
/// leave the client on a connection nobody serves: it becomes a 502.
fn switch_protocols(mut response: Response, guard: Option<&http1::InFlight>) -> Response {
    let refused = match (crate::tunnel::Pending::take(&mut response), guard) {
        (Some(pending), Some(guard)) => match guard.open_tunnel(pending) {
            Ok(()) => return response,
            Err(_) => "101 Switching Protocols on HTTP/2, which has no upgrade",
        },
        _ => "101 Switching Protocols with no connection to switch to",
    };
    tracing::warn!("{refused}: answered 502");
    GatewayError::new(GatewayErrorKind::UpstreamProtocol)
        .with_detail(refused)
        .into_response()
}

/// Whether `response` is parapet's own refusal of the client's request (400, 408, 413, 414, 431
/// with a downstream gateway error), after which the connection closes.
fn refuses_connection(response: &Response) -> bool {
    matches!(response.status().as_u16(), 400 | 408 | 413 | 414 | 431)
        && response
            .extensions()
            .get::<GatewayError>()
            .is_some_and(|e| e.kind().source() == parapet_middlewares::ErrorSource::Downstream)
}

/// The length of a request target as the client sent it: the path and query, and the authority of an
/// absolute-form target (HTTP/2's `:authority` included).
fn target_len(uri: &http::Uri) -> usize {
    uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `serve` returns, from its type alone.
    #[allow(clippy::too_many_arguments)]
    fn size_8<A, B, C, D, E, F, G, H, R>(_: impl FnOnce(A, B, C, D, E, F, G, H) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// The same for `http1::serve`.
    fn size_7<A, B, C, D, E, F, G, R>(_: impl FnOnce(A, B, C, D, E, F, G) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// Every open connection holds its task's future, and an HTTP/1.1 one between requests
    /// HTTP/1.1's too (boxed in the task). What is boxed in them keeps them small: 960 and 1,672
    /// bytes when this was written. The bounds leave room to grow, and catch a large state that
    /// lands inline (hyper's HTTP/2 connection, a lean session, a tunnel: kibibytes each).
    #[test]
    fn an_open_connection_holds_small_futures() {
        let task = size_8(serve);
        assert!(task <= 1536, "a connection's task: {task} bytes");
        let http1 = size_7(http1::serve::<TcpStream>);
        assert!(http1 <= 2560, "HTTP/1.1's connection future: {http1} bytes");
    }
}
