//! Accepting connections: a listener's accept loop, and the sniff of a connection's first bytes that
//! tells HTTP/1.1 from HTTP/2 with prior knowledge (h2c).
//!
//! The loop runs until its listener drains, then hands its socket back (to a listener that takes it
//! over on reload). Each accepted connection gets its service and its own task
//! ([`super::connection::serve`]).
//!
//! Client connections have TCP keepalive on ([`tcp_keepalive`]), so a client that vanished without a
//! FIN or RST (a pulled cable, a NAT that forgot it) is noticed even while parapet waits on it with no
//! timer of its own running (an upload to a slow upstream, a long answer being prepared).
//!
//! Every loop takes a permit of the process's [`ConnectionLimit`] (`server.max_connections`) before
//! it accepts, and the connection's task holds it until the connection closes: at the limit, the
//! loops stop accepting and new connections wait in the kernel's backlog, as nginx's
//! `worker_connections` and Envoy's `max_downstream_connections` do, instead of being accepted into
//! a process out of file descriptors or memory.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::BytesMut;
use socket2::{SockRef, TcpKeepalive};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use super::connection::{self, Builders, ConnectionService};
use super::Phase;
use crate::build::Gateway;
use crate::ClientAddr;

/// One listener's accept loop.
pub(super) struct AcceptLoop {
    pub(super) listener: TcpListener,
    pub(super) name: Arc<str>,
    pub(super) gateway: Arc<ArcSwap<Gateway>>,
    pub(super) builders: Arc<Builders>,
    pub(super) phase: watch::Receiver<Phase>,
    /// Set when the listener stops serving (see `RunningListener::retired`).
    pub(super) retired: Arc<AtomicBool>,
    /// The listener's metrics: open connections, body bytes, TLS handshakes.
    pub(super) stats: Arc<crate::metrics::ListenerStats>,
}

/// How often a listener at `max_connections` says so, at most.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(60);

impl AcceptLoop {
    /// Accepts until the listener drains; returns the socket.
    pub(super) async fn run(mut self) -> TcpListener {
        // On Linux an accepted socket inherits the listener's keepalive settings: set once here,
        // not on every connection.
        #[cfg(target_os = "linux")]
        if let Err(err) = SockRef::from(&self.listener).set_tcp_keepalive(&tcp_keepalive()) {
            tracing::warn!(listener = %self.name, error = %err, "TCP keepalive not set");
        }
        let mut warned_full: Option<Instant> = None;
        loop {
            let permit = match self.builders.connections.try_acquire() {
                Some(permit) => permit,
                None => {
                    if warned_full.is_none_or(|at| at.elapsed() >= FULL_WARNING_EVERY) {
                        warned_full = Some(Instant::now());
                        tracing::warn!(
                            listener = %self.name,
                            max_connections = self.builders.connections.max(),
                            "server.max_connections reached: accepting paused until a connection closes"
                        );
                    }
                    tokio::select! {
                        biased;
                        _ = self.phase.wait_for(|p| *p >= Phase::Draining) => return self.listener,
                        permit = self.builders.connections.acquire() => permit,
                    }
                }
            };
            let accepted = tokio::select! {
                biased;
                _ = self.phase.wait_for(|p| *p >= Phase::Draining) => return self.listener,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => self.serve(stream, peer, permit),
                Err(err) => {
                    drop(permit);
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::error!(listener = %self.name, error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn serve(&self, stream: TcpStream, peer: SocketAddr, permit: ConnectionPermit) {
        let _ = stream.set_nodelay(true);
        #[cfg(not(target_os = "linux"))]
        let _ = SockRef::from(&stream).set_tcp_keepalive(&tcp_keepalive());
        let gateway = self.gateway.load();
        // The TLS config current at the accept: a reload's new certificates reach new handshakes.
        let tls = gateway
            .tls(&self.name)
            .map(|tls| Arc::clone(tls.server_config()));
        let service = ConnectionService {
            gateway: Arc::clone(&self.gateway),
            // If a reload removes this listener, this connection finishes on the config it began with.
            fallback: gateway.entry(&self.name).cloned(),
            retired: Arc::clone(&self.retired),
            listener: Arc::clone(&self.name),
            client: ClientAddr(peer),
            max_uri_length: self.builders.max_uri_length(),
            quiet: None,
            tls: None,
        };
        drop(gateway);
        let open = crate::metrics::OpenConnection::new(&self.stats, tls.is_some());
        // The connection's own future is the task, the permit in it: wrapped in another
        // (`async move { conn.await; drop(permit) }`) the task held it twice, as the block's
        // capture and as the future it awaits (1,936 bytes rather than 960), for as long as the
        // connection was open.
        tokio::spawn(connection::serve(
            Arc::clone(&self.builders),
            stream,
            service,
            self.phase.clone(),
            peer,
            tls,
            open,
            permit,
        ));
    }
}

/// The process's limit on open client connections (`server.max_connections`), shared by every
/// listener; a reload may raise or lower it.
pub(crate) struct ConnectionLimit(Arc<LimitState>);

struct LimitState {
    /// One permit per connection that may still be accepted.
    free: Semaphore,
    /// The configured limit; locked only to change it.
    max: Mutex<usize>,
    /// Permits a lowered limit still has to take back: connections closing while it is above zero
    /// retire their permit instead of returning it.
    owed: AtomicUsize,
}

impl ConnectionLimit {
    /// A limit of no connections at all, until [`ConnectionLimit::set`].
    pub(super) fn new() -> Self {
        Self(Arc::new(LimitState {
            free: Semaphore::new(0),
            max: Mutex::new(0),
            owed: AtomicUsize::new(0),
        }))
    }

    /// The configured limit.
    pub(super) fn max(&self) -> usize {
        *self.0.max.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the limit. Connections open beyond a lowered limit stay open; none is accepted until
    /// enough of them have closed.
    pub(super) fn set(&self, max: usize) {
        let mut current = self.0.max.lock().unwrap_or_else(|e| e.into_inner());
        if max > *current {
            let more = max - *current;
            // Forgive what a lowered limit still owes before adding permits.
            let owed = self
                .0
                .owed
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    Some(n.saturating_sub(more))
                })
                .unwrap_or(0);
            self.0.free.add_permits(more - owed.min(more));
        } else if max < *current {
            let less = *current - max;
            let taken = self.0.free.forget_permits(less);
            self.0.owed.fetch_add(less - taken, Ordering::AcqRel);
        }
        *current = max;
        drop(current);
        if let Some(open_files) = super::open_files_limit() {
            if max as u64 > open_files {
                tracing::warn!(
                    max_connections = max,
                    open_files,
                    "server.max_connections is above the open files limit: accepting will fail \
                     (too many open files) before it is reached"
                );
            }
        }
    }

    /// A permit if a connection may be accepted now.
    fn try_acquire(&self) -> Option<ConnectionPermit> {
        let permit = self.0.free.try_acquire().ok()?;
        permit.forget();
        Some(ConnectionPermit(Arc::clone(&self.0)))
    }

    /// Waits until a connection may be accepted.
    async fn acquire(&self) -> ConnectionPermit {
        match self.0.free.acquire().await {
            Ok(permit) => permit.forget(),
            // The semaphore is never closed.
            Err(_) => std::future::pending().await,
        }
        ConnectionPermit(Arc::clone(&self.0))
    }
}

/// One open client connection, counted in the [`ConnectionLimit`] until it is dropped.
pub(super) struct ConnectionPermit(Arc<LimitState>);

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let retired = self
            .0
            .owed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if !retired {
            self.0.free.add_permits(1);
        }
    }
}

/// TCP keepalive for client and upstream sockets: the first probe after 60 s without traffic, then
/// every 10 s, and the connection is dropped after 6 unanswered (a vanished peer is noticed within
/// about two minutes, where the system default is over two hours). Like nginx's
/// `listen ... so_keepalive=60s:10s:6` and Envoy's `upstream_connection_options.tcp_keepalive`.
pub(crate) fn tcp_keepalive() -> TcpKeepalive {
    let keepalive = TcpKeepalive::new().with_time(Duration::from_secs(60));
    #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
    let keepalive = keepalive
        .with_interval(Duration::from_secs(10))
        .with_retries(6);
    keepalive
}

/// The protocol a connection speaks, told by its first bytes.
pub(super) enum Protocol {
    Http1,
    /// HTTP/2 with prior knowledge: the connection preface (RFC 9113 §3.4).
    Http2,
}

impl Protocol {
    /// The protocol as `parapet_connections_open` labels it.
    pub(super) fn speaks(&self) -> crate::metrics::Speaks {
        match self {
            Protocol::Http1 => crate::metrics::Speaks::Http1,
            Protocol::Http2 => crate::metrics::Speaks::H2,
        }
    }
}

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Tells the protocol by the first bytes; `None` if the client closed first. The bytes read to
/// tell it (a whole request head, usually) are returned, for the protocol's server to start from.
///
/// One read, not a peek then a read: peeking the first bytes left every byte to be read again by
/// the protocol's server, a system call more per connection. The read goes into the thread's read
/// buffer ([`crate::spare`]); on HTTP/1.1 that buffer, handed on, becomes the lean path's, which
/// parses the first head from it with no read of its own.
pub(super) async fn sniff(stream: &mut TcpStream) -> Option<(Protocol, BytesMut)> {
    let mut buf = crate::spare::take_read_buf(super::lean::READ_BUF);
    loop {
        let read = stream.read_buf(&mut buf).await.ok().filter(|r| *r > 0);
        if read.is_none() {
            crate::spare::give_read_buf(buf);
            return None;
        }
        let n = buf.len().min(H2_PREFACE.len());
        let protocol = if buf[..n] != H2_PREFACE[..n] {
            Protocol::Http1
        } else if n == H2_PREFACE.len() {
            Protocol::Http2
        } else {
            // A prefix of the preface and nothing more yet (a client writing it in pieces, or one
            // stalling on purpose): read until the bytes tell. The caller bounds the wait by
            // `server.header_timeout`.
            continue;
        };
        return Some((protocol, buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        (listener.accept().await.unwrap().0, client)
    }

    #[tokio::test]
    async fn a_preface_sent_in_pieces_is_told_and_handed_on() {
        let (mut server, mut client) = pair().await;
        client.write_all(&H2_PREFACE[..5]).await.unwrap();
        let sniffing = tokio::spawn(async move { sniff(&mut server).await });
        tokio::task::yield_now().await;
        client.write_all(&H2_PREFACE[5..]).await.unwrap();
        let (protocol, replay) = sniffing.await.unwrap().unwrap();
        assert!(matches!(protocol, Protocol::Http2));
        // Everything read is handed on: the whole preface, read in one piece or two.
        assert_eq!(&replay[..], &H2_PREFACE[..]);
    }

    #[tokio::test]
    async fn a_request_beginning_like_the_preface_is_http1() {
        let (mut server, mut client) = pair().await;
        client.write_all(b"P").await.unwrap();
        let sniffing = tokio::spawn(async move { sniff(&mut server).await });
        tokio::task::yield_now().await;
        client.write_all(b"UT / HTTP/1.1\r\n").await.unwrap();
        let (protocol, replay) = sniffing.await.unwrap().unwrap();
        assert!(matches!(protocol, Protocol::Http1));
        assert!(b"PUT / HTTP/1.1\r\n".starts_with(&replay));
        assert!(replay.len() >= 2, "read until the bytes told: {replay:?}");
    }

    #[tokio::test]
    async fn the_first_bytes_are_read_once_and_handed_on_whole() {
        let (mut server, mut client) = pair().await;
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        client.write_all(head).await.unwrap();
        let (protocol, replay) = sniff(&mut server).await.unwrap();
        assert!(matches!(protocol, Protocol::Http1));
        // Read, not peeked: the socket holds nothing more, and the whole head is handed on.
        assert_eq!(&replay[..], &head[..]);
        let mut more = [0u8; 1];
        assert!(server.try_read(&mut more).is_err(), "nothing left to read");
    }

    #[tokio::test]
    async fn a_client_that_closes_before_a_byte_is_none() {
        let (mut server, client) = pair().await;
        drop(client);
        assert!(sniff(&mut server).await.is_none());
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_sockets_inherit_the_listeners_tcp_keepalive() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        SockRef::from(&listener)
            .set_tcp_keepalive(&tcp_keepalive())
            .unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let socket = SockRef::from(&accepted);
        assert!(socket.keepalive().unwrap());
        assert_eq!(
            socket.tcp_keepalive_time().unwrap(),
            Duration::from_secs(60)
        );
        assert_eq!(
            socket.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(10)
        );
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), 6);
    }

    #[test]
    fn at_the_limit_no_permit_is_given_until_a_connection_closes() {
        let limit = ConnectionLimit::new();
        limit.set(2);
        let a = limit.try_acquire().expect("a first permit");
        let _b = limit.try_acquire().expect("a second permit");
        assert!(limit.try_acquire().is_none());
        drop(a);
        assert!(limit.try_acquire().is_some());
    }

    #[test]
    fn a_lowered_limit_takes_permits_back_as_connections_close() {
        let limit = ConnectionLimit::new();
        limit.set(3);
        let open: Vec<_> = (0..3).filter_map(|_| limit.try_acquire()).collect();
        assert_eq!(open.len(), 3);
        limit.set(1);
        let mut open = open.into_iter();
        // Three open against a limit of one: the first two to close are taken back.
        drop(open.next());
        assert!(limit.try_acquire().is_none());
        drop(open.next());
        assert!(limit.try_acquire().is_none());
        drop(open.next());
        let _d = limit
            .try_acquire()
            .expect("one connection under the new limit");
        assert!(limit.try_acquire().is_none());
    }

    #[test]
    fn a_raised_limit_forgives_what_a_lowered_one_still_owes() {
        let limit = ConnectionLimit::new();
        limit.set(2);
        let _a = limit.try_acquire().unwrap();
        let b = limit.try_acquire().unwrap();
        limit.set(1);
        limit.set(3);
        let _c = limit.try_acquire().expect("a third permit");
        assert!(limit.try_acquire().is_none());
        drop(b);
        assert!(limit.try_acquire().is_some());
        assert_eq!(limit.max(), 3);
    }
}
