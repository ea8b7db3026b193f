//! Accepting connections: a listener's accept loop, and the sniff of a connection's first bytes that
//! tells HTTP/1.1 from HTTP/2 with prior knowledge (h2c).
//!
//! The loop runs until its listener drains, then hands its socket back (to a listener that takes it
//! over on reload). Each accepted connection gets its service and its own task
//! ([`super::connection::serve`]).

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
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

/// The protocol a connection speaks, told by its first bytes.
pub(super) enum Protocol {
    Http1,
    /// HTTP/2 with prior knowledge: the connection preface (RFC 9113 §3.4).
    Http2,
    /// The first bytes are a prefix of the preface and the rest has not arrived yet.
    Unsure,
}

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Peeks at the first bytes, without consuming them; `None` if the client closed first.
pub(super) async fn sniff(stream: &TcpStream) -> Option<Protocol> {
    let mut buf = [0u8; 24];
    let n = stream.peek(&mut buf).await.ok().filter(|n| *n > 0)?;
    Some(if buf[..n] != H2_PREFACE[..n] {
        Protocol::Http1
    } else if n == H2_PREFACE.len() {
        Protocol::Http2
    } else {
        Protocol::Unsure
    })
}
