//! HTTP/1.1 connections that give their buffers back while idle.
//!
//! Requests without a body are served by parapet's lean path ([`super::lean`]) when
//! `server.lean_http1` is on; it hands the connection to hyper's, described here, at the first
//! request it does not take, and takes it back when hyper's connection is released idle. Both keep
//! to the same [`Quiet`] and [`Clock`].
//!
//! hyper's HTTP/1 connection keeps an 8 KiB read buffer and an 8 KiB write buffer for as long as the
//! connection lives, idle or not; with thousands of idle keep-alive clients that is most of the
//! gateway's memory. Like nginx, which frees a keep-alive connection's buffers when its response is
//! out, parapet releases hyper's connection as soon as the client has nothing more to say:
//!
//! 1. the service counts requests in flight: one is done when hyper drops its response's body;
//! 2. the connection's IO ([`ConnIo`]) sees hyper write a response and flush it, with no request in
//!    flight and nothing read since, then ask for the next request and find nothing there: the
//!    connection is idle;
//! 3. the driver then asks hyper to close the idle connection, which it does at once without touching
//!    the socket ([`hyper::server::conn::http1::Connection::poll_without_shutdown`]), and takes back
//!    the socket, the service and any bytes hyper had read ahead (a pipelined request's beginning);
//! 4. an idle connection is a socket waiting to be readable, for up to the keep-alive timeout; when
//!    the next request arrives, a new hyper connection serves it, bytes read ahead first.
//!
//! Building a hyper connection anew costs about 1 µs, too much to pay between every two requests of a
//! busy connection, so the release waits for `server.idle_release` (default 1 s), counted by the
//! connection's [`Clock`], which ticks once a second and also enforces `server.header_timeout`: one
//! timer per connection, never one per request. `idle_release = "0s"` releases a connection the
//! moment it is idle.
//!
//! The same clock bounds a request body and a response (`server.body_timeout`), on HTTP/2
//! connections too: it sits *outside* hyper, watching what the connection's IO ([`ConnIo`]) and its
//! request bodies ([`ClientBody`]) report, so no timer is set per request or per read. A tick where
//! a request body waits for the client's data and none came since the last tick, or a write waits
//! for the client to read and nothing went out since, is a stalled one (each direction judged on its
//! own, so HTTP/2's PINGs do not hide a stalled body); `body_timeout` worth of stalled ticks in a
//! row ends it (to the tick, so up to a second late, never early):
//!
//! - a request body the client stopped sending: on HTTP/1.1 the connection's next read fails, which
//!   hyper hands to the request's body; [`ClientBody`] turns that into a
//!   [`GatewayErrorKind::ClientTimeout`] error, which the handler answers with 408 (the proxy does)
//!   and hyper closes the connection after the answer; on HTTP/2 the connection closes (a stalled
//!   stream is noticed only while the whole connection stalls);
//! - a client that stopped reading its response: the connection closes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use parapet_middlewares::{Body, BoxError, GatewayError, GatewayErrorKind};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::connection::{drive, Builders, ConnectionService, Graceful};
use super::Phase;

/// What a connection's service and its IO tell each other about whether it is idle, and how many
/// requests it has served.
#[derive(Debug, Default)]
pub(crate) struct Quiet {
    /// Requests started on this connection.
    requests: AtomicU64,
    /// `server.max_requests_per_connection` when the connection was accepted (`u64::MAX`: none).
    max_requests: u64,
    /// Requests given to the service whose response bodies hyper has not dropped yet.
    in_flight: AtomicUsize,
    /// hyper wrote since the last request began and nothing was read since.
    responded: AtomicBool,
    /// hyper wrote since its last flush.
    unflushed: AtomicBool,
    /// hyper asked for the next request once the last response was out, and none was there.
    idle: AtomicBool,
    /// Requests started plus requests finished: progress, as the connection's clock sees it.
    activity: AtomicU64,
    /// Request bodies whose reader waits for the client's data ([`ClientBody`]).
    bodies_waiting: AtomicUsize,
    /// A write waits for the client to read.
    write_blocked: AtomicBool,
    /// A request body yielded data since the clock's last tick.
    read_moved: AtomicBool,
    /// A write went out since the clock's last tick. Kept apart from `read_moved`: HTTP/2's PINGs
    /// (and a response going out) must not hide a request body that stopped coming, nor a trickling
    /// body a client that stopped reading.
    write_moved: AtomicBool,
    /// Response bodies that gave hyper data and have not been asked for more since: hyper waits to
    /// send it, on the client (HTTP/2 flow control gives no write to block on).
    responses_held: AtomicUsize,
    /// A response body was asked for more since the clock's last tick.
    responses_polled: AtomicBool,
    /// The clock found a request body stalled: the next read fails, and so does the body.
    body_expired: AtomicBool,
    /// The connection speaks HTTP/2.
    http2: bool,
    /// A 101 the service is answering: the tunnel the connection becomes once it is sent.
    tunnel: TunnelSlot,
    /// The listener's body byte counters: each request and response body adds its bytes when it
    /// ends ([`ClientBody`], [`ServedBody`]).
    body: crate::metrics::BodyCounters,
}

/// The tunnel a connection becomes after its 101 (see [`crate::tunnel`]).
#[derive(Default)]
struct TunnelSlot(std::sync::Mutex<Option<crate::tunnel::Pending>>);

impl std::fmt::Debug for TunnelSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TunnelSlot")
    }
}

impl TunnelSlot {
    fn take(&self) -> Option<crate::tunnel::Pending> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Quiet {
    /// The state of a connection with no limit on its requests (HTTP/2: streams are limited by
    /// `max_streams` instead, and a response must not say `Connection: close`, RFC 9113 §8.2.2).
    pub(crate) fn unlimited(body: crate::metrics::BodyCounters) -> Quiet {
        Quiet {
            max_requests: u64::MAX,
            http2: true,
            body,
            ..Quiet::default()
        }
    }
}

impl Quiet {
    /// Counts a request in flight until the returned guard is dropped.
    pub(crate) fn start(self: &Arc<Self>) -> InFlight {
        // Only the connection's task counts: no read-modify-write needed.
        let requests = self.requests.load(Ordering::Relaxed);
        self.requests.store(requests + 1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.activity.fetch_add(1, Ordering::Relaxed);
        self.responded.store(false, Ordering::Relaxed);
        self.idle.store(false, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    fn reset(&self) {
        self.responded.store(false, Ordering::Relaxed);
        self.unflushed.store(false, Ordering::Relaxed);
        self.idle.store(false, Ordering::Relaxed);
    }

    fn wrote(&self) {
        self.responded.store(true, Ordering::Relaxed);
        self.unflushed.store(true, Ordering::Relaxed);
    }

    /// What a write to the client came to: blocked (the client does not read), or bytes out.
    fn written(&self, written: &Poll<io::Result<usize>>) {
        match written {
            Poll::Pending => self.write_blocked.store(true, Ordering::Relaxed),
            Poll::Ready(Ok(n)) => {
                self.write_blocked.store(false, Ordering::Relaxed);
                if *n > 0 {
                    self.write_moved.store(true, Ordering::Relaxed);
                }
            }
            Poll::Ready(Err(_)) => self.write_blocked.store(false, Ordering::Relaxed),
        }
    }

    /// Drops a tunnel a 101 left for a connection that cannot open it (the lean path, which serves
    /// no upgrade).
    pub(super) fn drop_tunnel(&self) {
        drop(self.tunnel.take());
    }

    /// hyper wants to read and nothing is there: idle if the last response is out.
    fn nothing_to_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.responded.load(Ordering::Relaxed)
            && !self.unflushed.load(Ordering::Relaxed)
        {
            self.idle.store(true, Ordering::Relaxed);
        }
    }
}

/// A request in flight, counted in its connection's [`Quiet`].
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Quiet>);

impl InFlight {
    /// Whether this is the last request the connection serves (`server.max_requests_per_connection`);
    /// HTTP/1.1 serves one request at a time, so the count is this request's number.
    pub(crate) fn is_last(&self) -> bool {
        self.0.requests.load(Ordering::Relaxed) >= self.0.max_requests
    }

    /// Hands the connection the tunnel its 101 opens, for once the response is out: HTTP/1.1
    /// only (`false`, and the tunnel back, on HTTP/2, which has no upgrade).
    pub(crate) fn open_tunnel(
        &self,
        pending: crate::tunnel::Pending,
    ) -> Result<(), crate::tunnel::Pending> {
        if self.0.http2 {
            return Err(pending);
        }
        *self.0.tunnel.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(pending);
        Ok(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.activity.fetch_add(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A response body as hyper sends it: the body, and the count of the response in flight. It tells
    /// the connection's clock when hyper holds data from it that the client has not taken, so that a
    /// client which never opens its HTTP/2 flow-control window is a stalled one. It counts the
    /// body's bytes, added to the listener's counter when it is dropped (or every
    /// `BodyCounters::FLUSH` bytes), not per frame.
    pub struct ServedBody {
        #[pin]
        body: Body,
        guard: Option<InFlight>,
        held: bool,
        sent: u64,
    }

    impl PinnedDrop for ServedBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(guard) = this.guard.as_ref() {
                if *this.held {
                    guard.0.responses_held.fetch_sub(1, Ordering::Relaxed);
                }
                if *this.sent > 0 {
                    guard.0.body.to_client.inc_by(*this.sent);
                }
            }
        }
    }
}

impl ServedBody {
    pub(crate) fn new(body: Body, guard: Option<InFlight>) -> Self {
        Self {
            body,
            guard,
            held: false,
            sent: 0,
        }
    }
}

impl http_body::Body for ServedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let Some(quiet) = this.guard.as_ref().map(|g| &g.0) else {
            return this.body.poll_frame(cx);
        };
        quiet.responses_polled.store(true, Ordering::Relaxed);
        if std::mem::take(this.held) {
            quiet.responses_held.fetch_sub(1, Ordering::Relaxed);
        }
        let polled = this.body.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                *this.held = true;
                quiet.responses_held.fetch_add(1, Ordering::Relaxed);
                *this.sent += data.len() as u64;
                if *this.sent >= crate::metrics::BodyCounters::FLUSH {
                    quiet.body.to_client.inc_by(std::mem::take(this.sent));
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body as the handler reads it, on a connection with a [`Quiet`]: it tells the connection's
/// clock when its reader waits for the client and when data came, and fails with a
/// [`GatewayErrorKind::ClientTimeout`] once the clock found it stalled. A body that is empty from the
/// start is not wrapped (no allocation for a GET).
pub(crate) fn client_body(body: Incoming, quiet: Option<&Arc<Quiet>>) -> Body {
    match quiet {
        Some(quiet) if !http_body::Body::is_end_stream(&body) => Body::new(ClientBody {
            inner: body,
            quiet: Arc::clone(quiet),
            waiting: false,
            received: 0,
        }),
        _ => Body::from(body),
    }
}

/// See [`client_body`].
struct ClientBody {
    inner: Incoming,
    quiet: Arc<Quiet>,
    /// Counted in `Quiet::bodies_waiting`.
    waiting: bool,
    /// Bytes read and not yet added to the listener's counter (at the drop, or every
    /// `BodyCounters::FLUSH` bytes).
    received: u64,
}

impl ClientBody {
    fn set_waiting(&mut self, waiting: bool) {
        if waiting != self.waiting {
            self.waiting = waiting;
            if waiting {
                self.quiet.bodies_waiting.fetch_add(1, Ordering::Relaxed);
            } else {
                self.quiet.bodies_waiting.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl http_body::Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Poll::Ready(polled) = Pin::new(&mut this.inner).poll_frame(cx) else {
            this.set_waiting(true);
            return Poll::Pending;
        };
        this.set_waiting(false);
        Poll::Ready(match polled {
            Some(Ok(frame)) => {
                this.quiet.read_moved.store(true, Ordering::Relaxed);
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    if this.received >= crate::metrics::BodyCounters::FLUSH {
                        this.quiet
                            .body
                            .from_client
                            .inc_by(std::mem::take(&mut this.received));
                    }
                }
                Some(Ok(frame))
            }
            Some(Err(err)) if this.quiet.body_expired.load(Ordering::Relaxed) => {
                Some(Err(GatewayError::new(GatewayErrorKind::ClientTimeout)
                    .with_detail(
                        "the client paused its request body longer than server.body_timeout",
                    )
                    .with_source(err)
                    .into()))
            }
            Some(Err(err)) => Some(Err(err.into())),
            None => None,
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        self.set_waiting(false);
        if self.received > 0 {
            self.quiet.body.from_client.inc_by(self.received);
        }
    }
}

/// A client connection's byte stream: the TCP socket, or TLS over it.
pub(crate) trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Waits, while the connection is released idle, for the client's next bytes: `None` if the
    /// client closed; else the bytes that had to be read to tell, to be read again first. Dropping
    /// the future loses nothing.
    fn next_bytes(&mut self) -> impl Future<Output = Option<Bytes>> + Send;

    /// Whether closing the connection after its last response takes a shutdown of the sending
    /// side first: TLS's does (it sends the `close_notify` alert, RFC 8446 §6.1). A TCP socket's
    /// close sends its FIN after whatever is still queued, as a shutdown would: a shutdown first
    /// is a system call for nothing. (Either way, bytes from the client left unread in the socket
    /// make the close a reset.)
    const SHUTDOWN_BEFORE_CLOSE: bool = true;
}

impl ClientStream for TcpStream {
    const SHUTDOWN_BEFORE_CLOSE: bool = false;

    async fn next_bytes(&mut self) -> Option<Bytes> {
        self.readable().await.ok()?;
        // A client that closed is done: no hyper connection (and buffers) just to read its EOF.
        match self.peek(&mut [0u8; 1]).await {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(Bytes::new()),
        }
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    async fn next_bytes(&mut self) -> Option<Bytes> {
        use tokio::io::AsyncReadExt;
        // TLS cannot be peeked: read the beginning of what the next record holds. A read returns at
        // once with what rustls already holds decrypted, and otherwise waits for the socket; the
        // bytes read go to the next hyper connection first, which reads the rest from rustls. A small
        // buffer: it is part of every idle TLS connection's state.
        let mut buf = [0u8; 64];
        match self.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(Bytes::copy_from_slice(&buf[..n])),
        }
    }
}

/// A client connection's stream as hyper's connection (HTTP/1.1 or HTTP/2) sees it.
pub(crate) struct ConnIo<S = TcpStream> {
    stream: S,
    /// Bytes read before hyper's connection parsed them (by a released hyper connection, or by the
    /// sniff of a preface that came in pieces, or by the lean path): read again first.
    pub(super) replay: Bytes,
    quiet: Arc<Quiet>,
}

impl<S> ConnIo<S> {
    pub(super) fn new(stream: S, replay: Bytes, quiet: Arc<Quiet>) -> Self {
        Self {
            stream,
            replay,
            quiet,
        }
    }
}

impl<S: AsyncRead + Unpin> ConnIo<S> {
    /// Reads what the client sends next into `buf` for the lean path (bytes to replay first); the
    /// number of bytes read, 0 at the end of the stream.
    pub(super) fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut bytes::BytesMut,
    ) -> Poll<io::Result<usize>> {
        if !self.replay.is_empty() {
            let n = self.replay.len();
            buf.extend_from_slice(&std::mem::take(&mut self.replay));
            return Poll::Ready(Ok(n));
        }
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(4096);
        }
        let mut read = tokio::io::ReadBuf::uninit(buf.spare_capacity_mut());
        ready!(Pin::new(&mut self.stream).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        // SAFETY: the read initialised the first `n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncRead + Unpin> hyper::rt::Read for ConnIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay[..n]);
            this.replay.advance(n);
            return Poll::Ready(Ok(()));
        }
        if this.quiet.body_expired.load(Ordering::Relaxed) {
            // hyper hands this to the request body it was reading (see `ClientBody`).
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request body stalled",
            )));
        }
        // SAFETY: tokio's ReadBuf never de-initialises bytes; `advance` counts only what it filled.
        let n = unsafe {
            let mut tbuf = tokio::io::ReadBuf::uninit(buf.as_mut());
            match Pin::new(&mut this.stream).poll_read(cx, &mut tbuf) {
                Poll::Ready(Ok(())) => tbuf.filled().len(),
                Poll::Pending => {
                    this.quiet.nothing_to_read();
                    return Poll::Pending;
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
            }
        };
        if n > 0 {
            // Perhaps the next request's beginning: not idle until it is answered.
            this.quiet.responded.store(false, Ordering::Relaxed);
            this.quiet.idle.store(false, Ordering::Relaxed);
        }
        unsafe { buf.advance(n) };
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> hyper::rt::Write for ConnIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.quiet.wrote();
        let written = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.quiet.written(&written);
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.quiet.wrote();
        let written = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.quiet.written(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.stream).poll_flush(cx);
        if matches!(flushed, Poll::Ready(Ok(()))) {
            this.quiet.unflushed.store(false, Ordering::Relaxed);
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

type Connection<S> = http1::Connection<ConnIo<S>, ConnectionService>;

/// How often a connection's clock ticks: its one timer, re-armed once a tick, never per request.
const TICK: Duration = Duration::from_secs(1);

/// A client connection's clock, kept across the hyper connections that serve it.
///
/// It times three things, to the tick. How long the client has been sending nothing that completes
/// a request head (no request in flight, nothing left to write, and none started or finished since
/// the last tick, or since the connection went idle), which closes the connection after
/// `server.header_timeout` (slow heads and idle keep-alive alike, as hyper's own head timer would,
/// without hyper's timer allocated and registered anew for every request; up to a second early).
/// How long the connection has been idle, which releases it after `server.idle_release`. And how
/// long it has been stalled (a request body waiting for the client, or a write waiting for the client
/// to read, and nothing moving), which ends it after `server.body_timeout` (up to a second late).
pub(super) struct Clock {
    timer: Pin<Box<tokio::time::Sleep>>,
    /// `Quiet::activity` at the last tick, or when the connection went idle.
    activity: u64,
    /// Whole ticks without a request in flight or any request started or finished.
    quiet_ticks: u32,
    /// Whole ticks in a row that a request body or a write waited on the client and nothing moved.
    stalled_ticks: u32,
}

/// What a connection's clock found at a tick.
pub(super) enum Alarm {
    /// No request head within `server.header_timeout`; on HTTP/2, no stream for that long.
    HeadTimeout,
    /// A request body waited on the client for `server.body_timeout`, its response not begun.
    BodyStalled,
    /// A write waited for the client to read for `server.body_timeout`, or a stalled body was
    /// failed a `body_timeout` ago and the connection is still stuck.
    Stalled,
}

impl Clock {
    pub(super) fn new() -> Self {
        Self {
            timer: Box::pin(tokio::time::sleep(TICK)),
            activity: 0,
            quiet_ticks: 0,
            stalled_ticks: 0,
        }
    }

    /// Waits for the next tick, counts it, and says what it found.
    pub(super) fn poll_tick(
        &mut self,
        cx: &mut Context<'_>,
        quiet: &Quiet,
        header_timeout: Duration,
        body_timeout: Duration,
    ) -> Poll<Option<Alarm>> {
        ready!(self.timer.as_mut().poll(cx));
        self.tick(quiet);
        if self.timed_out(header_timeout) {
            return Poll::Ready(Some(Alarm::HeadTimeout));
        }
        if Duration::from_secs(u64::from(self.stalled_ticks)) < body_timeout {
            return Poll::Ready(None);
        }
        self.stalled_ticks = 0;
        if quiet.bodies_waiting.load(Ordering::Relaxed) > 0
            && !quiet.write_blocked.load(Ordering::Relaxed)
            && !quiet.body_expired.swap(true, Ordering::Relaxed)
        {
            return Poll::Ready(Some(Alarm::BodyStalled));
        }
        Poll::Ready(Some(Alarm::Stalled))
    }

    /// Counts a tick that has passed, and arms the next.
    fn tick(&mut self, quiet: &Quiet) {
        let activity = quiet.activity.load(Ordering::Relaxed);
        // Quiet: nothing in flight, nothing started or finished, and nothing left to write (a body
        // hyper has taken whole may still be going out to a slow reader).
        if quiet.in_flight.load(Ordering::Relaxed) == 0
            && !quiet.unflushed.load(Ordering::Relaxed)
            && activity == self.activity
        {
            self.quiet_ticks = self.quiet_ticks.saturating_add(1);
        } else {
            self.quiet_ticks = 0;
            self.activity = activity;
        }
        let read_moved = quiet.read_moved.swap(false, Ordering::Relaxed);
        let write_moved = quiet.write_moved.swap(false, Ordering::Relaxed);
        // Each direction on its own: a body waiting on the client with no data since the last
        // tick, or a write waiting on the client with nothing written since.
        let read_stalled = quiet.bodies_waiting.load(Ordering::Relaxed) > 0 && !read_moved;
        let write_stalled = quiet.write_blocked.load(Ordering::Relaxed) && !write_moved;
        // Data handed to hyper that it has not sent on (the client's flow-control window stays
        // shut), with no response body asked for more since.
        let responses_polled = quiet.responses_polled.swap(false, Ordering::Relaxed);
        let held_stalled = quiet.responses_held.load(Ordering::Relaxed) > 0 && !responses_polled;
        if read_stalled || write_stalled || held_stalled {
            self.stalled_ticks = self.stalled_ticks.saturating_add(1);
        } else {
            self.stalled_ticks = 0;
        }
        self.timer
            .as_mut()
            .reset(tokio::time::Instant::now() + TICK);
    }

    /// Whole ticks without a request in flight or any request started or finished.
    pub(super) fn quiet_ticks(&self) -> u32 {
        self.quiet_ticks
    }

    fn timed_out(&self, limit: Duration) -> bool {
        Duration::from_secs(u64::from(self.quiet_ticks)) >= limit
    }
}

/// How a [`ReleasableConn`] ended.
// Moved out once per hyper connection and never stored: boxing the parts would allocate at every
// release to save a copy of some 200 bytes.
#[allow(clippy::large_enum_variant)]
enum Exit<S> {
    /// Released while idle: the socket, the service and any bytes read ahead, back from hyper.
    Released(http1::Parts<ConnIo<S>, ConnectionService>),
    /// A 101 went out: the socket, with any bytes read past the request head, for its tunnel.
    Upgraded(
        http1::Parts<ConnIo<S>, ConnectionService>,
        crate::tunnel::Pending,
    ),
    /// The connection closed or failed.
    Closed,
    /// No request head completed within `server.header_timeout`.
    TimedOut,
    /// The client stalled a request body or stopped reading for `server.body_timeout`.
    Stalled,
}

/// Polls a hyper connection; releases it when it has been idle for `release_after`.
struct ReleasableConn<'a, S: ClientStream> {
    conn: Option<Box<Connection<S>>>,
    quiet: &'a Quiet,
    clock: &'a mut Clock,
    /// `server.idle_release`, in ticks; 0 releases the moment the connection is idle.
    release_after: u32,
    /// `server.header_timeout`.
    header_timeout: Duration,
    /// `server.body_timeout`.
    body_timeout: Duration,
    releasing: bool,
}

impl<S: ClientStream> Future for ReleasableConn<'_, S> {
    type Output = Result<Exit<S>, hyper::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let conn = this.conn.as_mut().expect("polled after completion");
        loop {
            if this.releasing {
                // Everything was flushed before the connection went idle: take the socket back
                // without shutting it down.
                ready!(conn.poll_without_shutdown(cx))?;
                let conn = this.conn.take().expect("polled after completion");
                return Poll::Ready(Ok(Exit::Released(conn.into_parts())));
            }
            // As a future, the connection flushes what it holds and shuts the socket down when it
            // ends (a `Connection: close` answer, a drained connection).
            if let Poll::Ready(result) = Pin::new(&mut **conn).poll(cx) {
                // After a 101, hyper leaves the socket open and the connection to its tunnel.
                if let (Ok(()), Some(pending)) = (&result, this.quiet.tunnel.take()) {
                    let conn = this.conn.take().expect("polled after completion");
                    return Poll::Ready(Ok(Exit::Upgraded(conn.into_parts(), pending)));
                }
                return Poll::Ready(result.map(|()| Exit::Closed));
            }
            let idle = this.quiet.idle.load(Ordering::Relaxed);
            if idle {
                // Idle counts from now, not from the last tick: the next tick is a quiet one.
                this.clock.activity = this.quiet.activity.load(Ordering::Relaxed);
            }
            if idle && this.release_after == 0 {
                release(conn, &mut this.releasing);
                continue;
            }
            let alarm = ready!(this.clock.poll_tick(
                cx,
                this.quiet,
                this.header_timeout,
                this.body_timeout
            ));
            match alarm {
                Some(Alarm::HeadTimeout) => return Poll::Ready(Ok(Exit::TimedOut)),
                // hyper's next read fails the body (see `ConnIo`): poll it again so it reads now.
                Some(Alarm::BodyStalled) => continue,
                Some(Alarm::Stalled) => return Poll::Ready(Ok(Exit::Stalled)),
                None => {}
            }
            if idle && this.clock.quiet_ticks >= this.release_after {
                release(conn, &mut this.releasing);
            }
        }
    }
}

/// Idle: hyper closes an idle connection at once, leaving the socket to us.
fn release<S: ClientStream>(conn: &mut Connection<S>, releasing: &mut bool) {
    *releasing = true;
    Pin::new(conn).graceful_shutdown();
}

/// Serves an HTTP/1.1 connection until it closes, releasing hyper's connection (and its buffers)
/// whenever it is idle; `first` holds bytes already read from it, in the thread's read buffer
/// (`accept::sniff`), which the lean path takes as its own.
pub(crate) async fn serve<S: ClientStream>(
    builders: &Builders,
    stream: S,
    mut first: BytesMut,
    mut service: ConnectionService,
    mut phase: watch::Receiver<Phase>,
    peer: std::net::SocketAddr,
    body: crate::metrics::BodyCounters,
) {
    let quiet = Arc::new(Quiet {
        max_requests: builders.max_requests(),
        body,
        ..Quiet::default()
    });
    // The head limits this connection was accepted with, for every hyper connection serving it.
    let h1 = builders.h1.load_full();
    service.quiet = Some(Arc::clone(&quiet));
    let mut io = ConnIo::new(stream, Bytes::new(), Arc::clone(&quiet));
    let mut clock = Clock::new();
    loop {
        // The lean path's settings, read afresh for each of its sessions as the timeouts are for
        // each hyper connection below: a reload reaches a keep-alive connection.
        if let Some(limits) = &builders.lean() {
            // Boxed: its state is not part of an idle connection's task.
            let lean = Box::pin(super::lean::serve(
                &mut io,
                std::mem::take(&mut first),
                &service,
                &quiet,
                &mut clock,
                limits,
                &mut phase,
            ))
            .await;
            match lean {
                super::lean::Lean::Closed => return,
                super::lean::Lean::Idle => {
                    if !wait_idle(&mut io, &mut clock, builders, &mut phase).await {
                        return;
                    }
                    continue;
                }
                super::lean::Lean::HandOff => {}
            }
        }
        if !first.is_empty() {
            // The lean path is off: hyper reads the first bytes again.
            io.replay = std::mem::take(&mut first).freeze();
        }
        quiet.reset();
        let release_after = super::connection::release_ticks(builders.idle_release());
        let conn = ReleasableConn {
            conn: Some(Box::new(h1.serve_connection(io, service))),
            quiet: &quiet,
            clock: &mut clock,
            release_after,
            header_timeout: builders.header_timeout(),
            body_timeout: builders.body_timeout(),
            releasing: false,
        };
        let parts = match drive(conn, &mut phase, peer).await {
            Some(Exit::Released(parts)) => parts,
            Some(Exit::Upgraded(parts, pending)) => {
                // What the client sent after its request head is the tunnel's first bytes.
                let mut prefix = bytes::BytesMut::from(&parts.read_buf[..]);
                prefix.extend_from_slice(&parts.io.replay);
                drop(parts.read_buf);
                // A tunnel holds no config: the service (and the gateway it points to) goes now.
                let listener = Arc::clone(&parts.service.listener);
                drop(parts.service);
                // Boxed: inline, the tunnel's state would make every connection's task larger,
                // idle keep-alive connections included.
                Box::pin(crate::tunnel::run(
                    parts.io.stream,
                    prefix.freeze(),
                    pending,
                    builders.tunnel_timeout(),
                    &mut phase,
                    peer,
                    &listener,
                ))
                .await;
                return;
            }
            Some(Exit::TimedOut) => {
                tracing::debug!(client = %peer, "no request head within the timeout: closing");
                return;
            }
            Some(Exit::Stalled) => {
                tracing::debug!(client = %peer, "client stalled past the body timeout: closing");
                return;
            }
            Some(Exit::Closed) | None => return,
        };
        io = parts.io;
        service = parts.service;
        let read_ahead = parts.read_buf;
        if !read_ahead.is_empty() {
            // A copy: these bytes share hyper's whole 8 KiB read buffer.
            io.replay = Bytes::copy_from_slice(&read_ahead);
            // The next request has begun: serve it now.
            continue;
        }
        drop(read_ahead);
        if !wait_idle(&mut io, &mut clock, builders, &mut phase).await {
            return;
        }
    }
}

/// Idle, holding nothing but the socket: waits for the client's next bytes until the head timeout
/// (counted from the last request), and gives up when the listener drains. `false`: the connection
/// is done.
async fn wait_idle<S: ClientStream>(
    io: &mut ConnIo<S>,
    clock: &mut Clock,
    builders: &Builders,
    phase: &mut watch::Receiver<Phase>,
) -> bool {
    let waited = Duration::from_secs(u64::from(clock.quiet_ticks));
    let since = tokio::time::Instant::now();
    clock
        .timer
        .as_mut()
        .reset(since + builders.header_timeout().saturating_sub(waited));
    let next = tokio::select! {
        next = io.stream.next_bytes() => next,
        _ = clock.timer.as_mut() => None,
        _ = phase.wait_for(|p| *p >= Phase::Draining) => None,
    };
    match next {
        Some(bytes) => io.replay = bytes,
        None => return false,
    }
    // The wait counts toward the head timeout: the next head is due as if never released.
    let idle = u32::try_from(since.elapsed().as_secs()).unwrap_or(u32::MAX);
    clock.quiet_ticks = clock.quiet_ticks.saturating_add(idle);
    clock
        .timer
        .as_mut()
        .reset(tokio::time::Instant::now() + TICK);
    true
}

impl<S: ClientStream> Graceful for ReleasableConn<'_, S> {
    /// Finish the request in flight, then close; an idle connection closes now.
    fn graceful(self: Pin<&mut Self>) {
        if let Some(conn) = self.get_mut().conn.as_mut() {
            Pin::new(&mut **conn).graceful_shutdown();
        }
    }
}
