//! Upgraded connections: a client's HTTP/1.1 connection joined to an upstream's after a
//! `101 Switching Protocols` (WebSocket and any other `Upgrade` protocol).
//!
//! How a tunnel comes to be:
//!
//! 1. [`crate::router::admit`] marks an HTTP/1.1 request whose `Connection` names `upgrade` and which
//!    has an `Upgrade` header ([`UpgradeRequest`]), and keeps that header for it.
//! 2. The proxy forwards it with `Connection: upgrade` and its `Upgrade` over HTTP/1.1 (an upstream
//!    spoken to over HTTP/2 gets an ordinary request and gives an ordinary answer). A 101 from the
//!    upstream takes its connection out of the pool for good, and the response carries an
//!    `UpstreamTunnel` (the upstream's side, and the server's connection permit) and a [`Tunnel`]
//!    (what layers register with). Any other answer is an ordinary response.
//! 3. The 101 head passes through every layer like any other response.
//! 4. The client's connection sends it, and hands its socket, with whatever the client sent after
//!    its request head, to `run`: bytes go both ways until a side closes or fails, no byte
//!    moved either way for `server.tunnel_timeout`, or shutdown's `shutdown_timeout` ran out.
//!
//! A tunnel holds no config: it runs on the connection's task, on through any number of reloads,
//! and is counted among the connections that shutdown waits for. Idle, it holds no buffer: bytes are
//! read into a buffer on the task's stack and written on at once; only what a slow reader leaves
//! unwritten is kept, on the heap, until it is taken.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::time::Instant;

pub use parapet_middlewares::tunnel::{Tunnel, TunnelEnd, TunnelEndReason, UpgradeRequest};

use crate::server::Phase;

/// Tunnels open in this process.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// Tunnels open now, in every listener.
pub fn open() -> usize {
    OPEN.load(Ordering::Relaxed)
}

/// The read buffer of one direction, on the stack of the task's poll.
const CHUNK: usize = 16 * 1024;

/// How long the upstream's side of an upgrade may take to be handed over once its 101 came: it is
/// immediate unless the upstream connection's task is starved.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// In a 101 response's extensions, from the proxy to the client's connection: the upstream's side of
/// the upgrade. Taken once.
#[derive(Clone)]
pub(crate) struct UpstreamTunnel(Arc<Mutex<Option<UpstreamSide>>>);

/// The upstream's side: its connection once hyper hands it over, and the server's connection permit
/// (`max_connections`), held for the tunnel's life.
pub(crate) struct UpstreamSide {
    upgrade: hyper::upgrade::OnUpgrade,
    _permit: Option<OwnedSemaphorePermit>,
}

impl UpstreamTunnel {
    pub(crate) fn new(
        upgrade: hyper::upgrade::OnUpgrade,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        Self(Arc::new(Mutex::new(Some(UpstreamSide {
            upgrade,
            _permit: permit,
        }))))
    }

    pub(crate) fn take(&self) -> Option<UpstreamSide> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// A tunnel whose 101 is on its way to the client: what [`run`] joins the client to.
pub(crate) struct Pending {
    pub(crate) upstream: UpstreamSide,
    pub(crate) tunnel: Tunnel,
}

impl Pending {
    /// The tunnel of a 101 `response`, taken out of its extensions; `None` if it has none (then the
    /// response must not go out as a 101).
    pub(crate) fn take(response: &mut crate::Response) -> Option<Pending> {
        let upstream = response
            .extensions_mut()
            .remove::<UpstreamTunnel>()?
            .take()?;
        let tunnel = response.extensions().get::<Tunnel>()?.clone();
        Some(Pending { upstream, tunnel })
    }
}

/// Counts a tunnel open (process-wide and in the listener's `parapet_tunnels_open`) while it lives.
struct OpenGuard(prometheus_client::metrics::gauge::Gauge);

impl OpenGuard {
    fn new(listener: &str) -> Self {
        OPEN.fetch_add(1, Ordering::Relaxed);
        let gauge = crate::metrics::listener_tunnels(listener);
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
        self.0.dec();
    }
}

/// Carries a tunnel: `client` (with `client_prefix`, what it sent after its request head, first) to
/// the upstream's side of `pending`, until it ends (see the module docs); then runs the tunnel's end
/// hooks (the access log's line).
pub(crate) async fn run<C>(
    client: C,
    client_prefix: Bytes,
    pending: Pending,
    idle_timeout: Duration,
    phase: &mut watch::Receiver<Phase>,
    peer: SocketAddr,
    listener: &str,
) where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let Pending { upstream, tunnel } = pending;
    let UpstreamSide {
        upgrade,
        _permit: permit,
    } = upstream;
    let upgraded = match tokio::time::timeout(HANDOVER_TIMEOUT, upgrade).await {
        Ok(Ok(upgraded)) => upgraded,
        Ok(Err(err)) => {
            tracing::debug!(client = %peer, error = %parapet_middlewares::ErrorChain(&err), "upstream side of the upgrade failed");
            return;
        }
        Err(_) => {
            tracing::debug!(client = %peer, "upstream side of the upgrade never came");
            return;
        }
    };
    let _open = OpenGuard::new(listener);
    let start = Instant::now();
    // The upstream's own stream where it is one of parapet's (no boxed I/O in the way, and hyper's
    // read buffer let go); what the upstream sent after its 101 goes to the client first.
    let end = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => join_parts(client, client_prefix, parts, idle_timeout, phase).await,
        Err(upgraded) => {
            match upgraded.downcast::<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>() {
                Ok(parts) => join_parts(client, client_prefix, parts, idle_timeout, phase).await,
                Err(upgraded) => {
                    let upgraded = TokioIo::new(upgraded);
                    join(
                        client,
                        client_prefix,
                        upgraded,
                        Bytes::new(),
                        idle_timeout,
                        phase,
                    )
                    .await
                }
            }
        }
    };
    finish(&tunnel, end, start, peer, listener, permit);
}

/// [`join`] with the upstream's stream taken back from hyper: what hyper read past the 101 is copied
/// out (its 8 KiB buffer let go) and sent to the client first.
async fn join_parts<C, U>(
    client: C,
    client_prefix: Bytes,
    parts: hyper::upgrade::Parts<TokioIo<U>>,
    idle_timeout: Duration,
    phase: &mut watch::Receiver<Phase>,
) -> (u64, u64, TunnelEndReason)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let prefix = Bytes::copy_from_slice(&parts.read_buf);
    drop(parts.read_buf);
    let upstream = parts.io.into_inner();
    join(client, client_prefix, upstream, prefix, idle_timeout, phase).await
}

fn finish(
    tunnel: &Tunnel,
    (from_client, to_client, reason): (u64, u64, TunnelEndReason),
    start: Instant,
    peer: SocketAddr,
    listener: &str,
    permit: Option<OwnedSemaphorePermit>,
) {
    drop(permit);
    crate::metrics::tunnel_closed(listener, from_client, to_client);
    let end = TunnelEnd {
        from_client,
        to_client,
        duration: start.elapsed(),
        reason,
    };
    tracing::debug!(client = %peer, from_client, to_client, reason = reason.as_str(), "tunnel closed");
    tunnel.end(&end);
}

/// The idle timer's checks per `tunnel_timeout`: the tunnel ends at the check that finds no byte
/// moved either way over the last `IDLE_CHECKS` checks, each a `tunnel_timeout / IDLE_CHECKS` at
/// least after the one before: from `tunnel_timeout` to about `tunnel_timeout * (1 + 1 /
/// IDLE_CHECKS)` after the last byte. Traffic costs no timer update and
/// no clock read.
const IDLE_CHECKS: u32 = 8;

/// Bytes both ways between `a` and `b` (each side's `prefix` sent to the other first), until one
/// direction is done or fails, none moves for `idle_timeout` (see [`IDLE_CHECKS`]), or the phase
/// says close. Returns the bytes from `a`, the bytes from `b`, and why it ended.
///
/// The two directions and the alarms (the idle timer, the phase) are polled apart, each with a
/// waker of its own ([`Group`]): a message one way wakes the task for that direction alone, so
/// it does not poll the other socket, the timer or the phase as well.
async fn join<A, B>(
    mut a: A,
    a_prefix: Bytes,
    mut b: B,
    b_prefix: Bytes,
    idle_timeout: Duration,
    phase: &mut watch::Receiver<Phase>,
) -> (u64, u64, TunnelEndReason)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut a_to_b = Pipe::new(a_prefix);
    let mut b_to_a = Pipe::new(b_prefix);
    let period = idle_timeout / IDLE_CHECKS;
    let idle = tokio::time::sleep(period);
    tokio::pin!(idle);
    let closing = phase.wait_for(|p| *p >= Phase::Closing);
    tokio::pin!(closing);
    let task = Arc::new(Mutex::new(None::<Waker>));
    let [there, back, alarms] = [(); 3].map(|()| Group::new(&task));
    let (mut seen, mut quiet) = (0u64, 0u32);
    let reason = std::future::poll_fn(|cx| {
        {
            let mut current = task.lock().unwrap_or_else(|e| e.into_inner());
            if !current.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *current = Some(cx.waker().clone());
            }
        }
        // Done when either direction is (its reader ended, what it sent was written and the
        // other side's writing shut down), as nginx does: WebSocket peers close both ways
        // together, and a half-closed tunnel would hold its sockets until `tunnel_timeout`.
        let mut done = None;
        if let Some(mut cx) = there.rang() {
            if let Poll::Ready(end) = a_to_b.poll_pipe(&mut cx, Pin::new(&mut a), Pin::new(&mut b))
            {
                done = Some(end);
            }
        }
        if let Some(mut cx) = back.rang() {
            if let Poll::Ready(end) = b_to_a.poll_pipe(&mut cx, Pin::new(&mut b), Pin::new(&mut a))
            {
                done = done.or(Some(end));
            }
        }
        if let Some(end) = done {
            if let Err(err) = end {
                tracing::debug!(error = %err, "tunnel side failed");
            }
            return Poll::Ready(TunnelEndReason::Closed);
        }
        if let Some(mut cx) = alarms.rang() {
            if closing.as_mut().poll(&mut cx).is_ready() {
                return Poll::Ready(TunnelEndReason::Shutdown);
            }
            while idle.as_mut().poll(&mut cx).is_ready() {
                let moved = a_to_b.total + b_to_a.total;
                if moved != seen {
                    (seen, quiet) = (moved, 0);
                } else {
                    quiet += 1;
                    if quiet >= IDLE_CHECKS {
                        return Poll::Ready(TunnelEndReason::Idle);
                    }
                }
                // From now, not from the deadline: a task polled late must not catch up on
                // checks at once and count quiet periods that did not pass.
                idle.as_mut().reset(Instant::now() + period);
            }
        }
        Poll::Pending
    })
    .await;
    (a_to_b.total, b_to_a.total, reason)
}

/// Some of a tunnel's futures, polled only when something they wait for woke the task: their
/// waker notes that it rang, then wakes the task.
struct Group {
    flag: Arc<Flag>,
    waker: Waker,
}

impl Group {
    fn new(task: &Arc<Mutex<Option<Waker>>>) -> Self {
        let flag = Arc::new(Flag {
            // Rung at first: every group is polled once, to register its waker.
            rang: AtomicBool::new(true),
            task: Arc::clone(task),
        });
        let waker = Waker::from(Arc::clone(&flag));
        Self { flag, waker }
    }

    /// The context to poll the group's futures in, if their waker rang since they were last polled.
    fn rang(&self) -> Option<Context<'_>> {
        self.flag
            .rang
            .swap(false, Ordering::AcqRel)
            .then(|| Context::from_waker(&self.waker))
    }
}

/// A [`Group`]'s waker.
struct Flag {
    rang: AtomicBool,
    /// The task's own waker, from its latest poll.
    task: Arc<Mutex<Option<Waker>>>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.rang.store(true, Ordering::Release);
        if let Some(task) = &*self.task.lock().unwrap_or_else(|e| e.into_inner()) {
            task.wake_by_ref();
        }
    }
}

/// One direction of a tunnel.
struct Pipe {
    /// Bytes read and not yet written (a slow writer): kept only until written.
    spill: Vec<u8>,
    /// Where the unwritten part of `spill` starts.
    at: usize,
    /// Sent first: what the reader sent before the tunnel (bytes after its head).
    prefix: Bytes,
    /// Bytes carried so far.
    total: u64,
    /// The reader reached its end (and the writer was shut down after it).
    read_done: bool,
    shut: bool,
    /// Written since the last flush.
    unflushed: bool,
}

impl Pipe {
    fn new(prefix: Bytes) -> Self {
        Self {
            spill: Vec::new(),
            at: 0,
            total: 0,
            prefix,
            read_done: false,
            shut: false,
            unflushed: false,
        }
    }

    /// Moves bytes from `r` to `w` until `r` has none ready (`Pending`), or the direction is done
    /// (`Ready(Ok)`: `r` ended and `w` was shut down) or failed.
    fn poll_pipe<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut r: Pin<&mut R>,
        mut w: Pin<&mut W>,
    ) -> Poll<std::io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            // What is left to write first: the prefix, then a spill.
            if !self.prefix.is_empty() {
                let n = ready!(w.as_mut().poll_write(cx, &self.prefix))?;
                if n == 0 {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                self.count(n);
                let _ = self.prefix.split_to(n);
                continue;
            }
            if self.at < self.spill.len() {
                let n = ready!(w.as_mut().poll_write(cx, &self.spill[self.at..]))?;
                if n == 0 {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                self.count(n);
                self.at += n;
                if self.at == self.spill.len() {
                    // Written: the heap buffer goes with it.
                    self.spill = Vec::new();
                    self.at = 0;
                }
                continue;
            }
            if self.read_done {
                if self.unflushed {
                    ready!(w.as_mut().poll_flush(cx))?;
                    self.unflushed = false;
                }
                if !self.shut {
                    ready!(w.as_mut().poll_shutdown(cx))?;
                    self.shut = true;
                }
                return Poll::Ready(Ok(()));
            }
            // Not zeroed: a read fills what it reports, and only that is written on.
            let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); CHUNK];
            let mut buf = ReadBuf::uninit(&mut chunk);
            match r.as_mut().poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => {
                    // Nothing more to read now: push out what was written.
                    if self.unflushed {
                        ready!(w.as_mut().poll_flush(cx))?;
                        self.unflushed = false;
                    }
                    return Poll::Pending;
                }
            }
            let read = buf.filled();
            if read.is_empty() {
                self.read_done = true;
                continue;
            }
            // Written on from the stack; only what the writer does not take now is kept.
            let mut at = 0;
            while at < read.len() {
                match w.as_mut().poll_write(cx, &read[at..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                    }
                    Poll::Ready(Ok(n)) => {
                        self.count(n);
                        at += n;
                    }
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                    Poll::Pending => {
                        self.spill = read[at..].to_vec();
                        self.at = 0;
                        return Poll::Pending;
                    }
                }
            }
        }
    }

    fn count(&mut self, n: usize) {
        self.total += n as u64;
        self.unflushed = true;
    }
}
