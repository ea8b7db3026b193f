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

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use socket2::{SockRef, TcpKeepalive};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

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
}

impl AcceptLoop {
    /// Accepts until the listener drains; returns the socket.
    pub(super) async fn run(mut self) -> TcpListener {
        // On Linux an accepted socket inherits the listener's keepalive settings: set once here,
        // not on every connection.
        #[cfg(target_os = "linux")]
        if let Err(err) = SockRef::from(&self.listener).set_tcp_keepalive(&tcp_keepalive()) {
            tracing::warn!(listener = %self.name, error = %err, "TCP keepalive not set");
        }
        loop {
            let accepted = tokio::select! {
                biased;
                _ = self.phase.wait_for(|p| *p >= Phase::Draining) => return self.listener,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => self.serve(stream, peer),
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::error!(listener = %self.name, error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn serve(&self, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        #[cfg(not(target_os = "linux"))]
        let _ = SockRef::from(&stream).set_tcp_keepalive(&tcp_keepalive());
        let service = ConnectionService {
            gateway: Arc::clone(&self.gateway),
            // If a reload removes this listener, this connection finishes on the config it began with.
            fallback: self.gateway.load().entry(&self.name).cloned(),
            retired: Arc::clone(&self.retired),
            listener: Arc::clone(&self.name),
            client: ClientAddr(peer),
            quiet: None,
        };
        tokio::spawn(connection::serve(
            Arc::clone(&self.builders),
            stream,
            service,
            self.phase.clone(),
            peer,
        ));
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

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Tells the protocol by the first bytes; `None` if the client closed first. Usually by peeking, so
/// hyper reads every byte itself; the bytes it had to read are returned, to be read again first.
pub(super) async fn sniff(stream: &mut TcpStream) -> Option<(Protocol, Bytes)> {
    let mut buf = [0u8; 24];
    let n = stream.peek(&mut buf).await.ok().filter(|n| *n > 0)?;
    if buf[..n] != H2_PREFACE[..n] {
        return Some((Protocol::Http1, Bytes::new()));
    }
    if n == H2_PREFACE.len() {
        return Some((Protocol::Http2, Bytes::new()));
    }
    // A prefix of the preface and nothing more yet (a client writing it in pieces, or one stalling
    // on purpose): peeking again would not wait for more, so read until the bytes tell. The caller
    // bounds the wait by `server.header_timeout`.
    let mut n = 0;
    loop {
        let read = stream.read(&mut buf[n..]).await.ok().filter(|r| *r > 0)?;
        n += read;
        let protocol = if buf[..n] != H2_PREFACE[..n] {
            Protocol::Http1
        } else if n == H2_PREFACE.len() {
            Protocol::Http2
        } else {
            continue;
        };
        return Some((protocol, Bytes::copy_from_slice(&buf[..n])));
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
        // Whatever was read (all of it, or the first piece then the rest) is handed on.
        assert!(H2_PREFACE.starts_with(&replay));
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
}
