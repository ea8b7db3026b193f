//! A connection's life: dispatch on the protocol its first bytes tell, serve it (HTTP/1.1 with idle
//! release in [`super::http1`], HTTP/2 and the rare undecided connection through hyper), drain it when
//! its listener drains, and hand each request to the gateway current at that request.
//!
//! [`ConnectionService`] is the outermost service of every connection: it looks the listener's entry
//! up in the current [`Gateway`] per request, so a reload reaches keep-alive connections at their next
//! request while requests in flight finish on the gateway they started with; a retired listener's
//! connections keep the entry they were accepted with.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use parapet_middlewares::host::report_final_status;
use parapet_middlewares::ErrorChain;
use parapet_middlewares::{Body, GatewayError, GatewayErrorKind};
use pin_project_lite::pin_project;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::accept::{sniff, Protocol};
use super::http1::{self, ServedBody};
use super::Phase;
use crate::build::Gateway;
use crate::config::ServerConfig;
use crate::service::AppFuture;
use crate::{AppService, ClientAddr, Request, Response};

/// Serves an accepted connection in the protocol its first bytes tell, until it ends.
pub(super) async fn serve(
    builders: Arc<Builders>,
    stream: TcpStream,
    service: ConnectionService,
    mut phase: watch::Receiver<Phase>,
    peer: SocketAddr,
) {
    // Dispatch on the first bytes instead of hyper-util's `auto`, which buffers the preface and
    // wraps every read of the connection to replay it. A client that sends nothing is dropped after
    // `server.header_timeout`, or as soon as its listener drains.
    let protocol = tokio::select! {
        p = tokio::time::timeout(builders.header_timeout(), sniff(&stream)) => p.ok().flatten(),
        _ = phase.wait_for(|p| *p >= Phase::Draining) => None,
    };
    match protocol {
        Some(Protocol::Http1) => {
            Box::pin(http1::serve(&builders, stream, service, phase, peer)).await
        }
        Some(Protocol::Http2) => {
            let conn = builders.h2.serve_connection(TokioIo::new(stream), service);
            Box::pin(drive(conn, &mut phase, peer)).await;
        }
        Some(Protocol::Unsure) => {
            let conn = builders
                .auto
                .serve_connection(TokioIo::new(stream), service);
            Box::pin(drive(conn, &mut phase, peer)).await;
        }
        None => {}
    }
}

/// The connection builders every listener shares.
pub(crate) struct Builders {
    pub(super) h1: hyper::server::conn::http1::Builder,
    /// `server.idle_release`, in milliseconds.
    idle_release: AtomicU64,
    /// `server.header_timeout`, in milliseconds.
    header_timeout: AtomicU64,
    h2: hyper::server::conn::http2::Builder<TokioExecutor>,
    auto: auto::Builder<TokioExecutor>,
}

impl Builders {
    pub(super) fn new(server: &ServerConfig) -> Self {
        // No timer for hyper's HTTP/1: a request head must arrive within the header timeout (slow-loris
        // protection), which the connection's own clock enforces (see http1::Clock) instead of a
        // timer hyper would allocate and register for every request.
        let mut h1 = hyper::server::conn::http1::Builder::new();
        h1.header_read_timeout(None);
        let mut auto = auto::Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            // The rare connection whose preface arrived in pieces: hyper's own head timer, set at
            // startup.
            .header_read_timeout(server.header_timeout);
        let builders = Self {
            h1,
            idle_release: Default::default(),
            header_timeout: Default::default(),
            h2: hyper::server::conn::http2::Builder::new(TokioExecutor::new()),
            auto,
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
    }

    pub(super) fn idle_release(&self) -> Duration {
        Duration::from_millis(self.idle_release.load(Ordering::Relaxed))
    }

    pub(super) fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout.load(Ordering::Relaxed))
    }
}

/// A connection that can be asked to finish its requests and close.
pub(super) trait Graceful: Future {
    fn graceful(self: Pin<&mut Self>);
}

impl Graceful
    for hyper::server::conn::http2::Connection<TokioIo<TcpStream>, ConnectionService, TokioExecutor>
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown()
    }
}

impl Graceful for auto::Connection<'_, TokioIo<TcpStream>, ConnectionService, TokioExecutor> {
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown()
    }
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
    loop {
        let next = if draining {
            Phase::Closing
        } else {
            Phase::Draining
        };
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
            _ = phase.wait_for(|p| *p >= next) => {
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
    pub(super) fallback: Option<AppService>,
    /// Set when the listener stops serving (see `RunningListener::retired`).
    pub(super) retired: Arc<AtomicBool>,
    pub(super) listener: Arc<str>,
    pub(super) client: ClientAddr,
    /// Requests in flight, for HTTP/1.1's idle release; `None` on other connections.
    pub(super) quiet: Option<Arc<http1::Quiet>>,
}

impl hyper::service::Service<http::Request<Incoming>> for ConnectionService {
    type Response = http::Response<ServedBody>;
    type Error = std::convert::Infallible;
    type Future = DispatchFuture;

    fn call(&self, req: http::Request<Incoming>) -> DispatchFuture {
        let mut req: Request = req.map(Body::from);
        // The gateway current at this request: a reload in between reaches this connection now,
        // and this request keeps the one it started with.
        let gateway = self.gateway.load();
        // Here, before the listener's chain, so that every layer sees the same request: its path
        // normalised, its connection-named headers gone, its client resolved.
        crate::router::admit(&mut req, self.client, gateway.trusted_proxies());
        let entry = if self.retired.load(Ordering::Acquire) {
            self.fallback.as_ref()
        } else {
            gateway.entry(&self.listener).or(self.fallback.as_ref())
        };
        match entry {
            Some(entry) => DispatchFuture::Handling {
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
        /// The listener's entry is handling the request.
        Handling { #[pin] fut: AppFuture, guard: Option<http1::InFlight> },
        /// The listener has no entry (gone in a reload, none kept): a `NoRoute` answer.
        Gone { response: Option<Response>, guard: Option<http1::InFlight> },
    }
}

impl Future for DispatchFuture {
    type Output = Result<http::Response<ServedBody>, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (response, guard) = match self.project() {
            DispatchProj::Handling { fut, guard } => (ready!(fut.poll(cx)), guard.take()),
            DispatchProj::Gone { response, guard } => match response.take() {
                Some(r) => (Ok(r), guard.take()),
                None => return Poll::Pending,
            },
        };
        let Ok(response) = response;
        report_final_status(&response);
        // The request stays in flight until hyper is done with the body.
        Poll::Ready(Ok(response.map(|body| ServedBody::new(body, guard))))
    }
}
