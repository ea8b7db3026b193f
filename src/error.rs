//! parapet's one error type, for everything that fails outside a request.
//!
//! On the request path nothing fails: a failure becomes a response (a [`GatewayError`] in its
//! extensions, which keeps the cause as its `source()`) or an aborted connection. Everywhere else
//! (reading a config, starting, reloading, reaching an upstream) a failure is an [`Error`], whose
//! `source()` is the cause it came from: log it with [`ErrorChain`] to see the whole chain.
//!
//! [`GatewayError`]: parapet_middlewares::GatewayError
//! [`ErrorChain`]: parapet_middlewares::ErrorChain

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::ConfigErrors;

/// What can go wrong in parapet outside the request path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The config file could not be read.
    #[error("{}: cannot read config", path.display())]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config is invalid, or could not be built: every error, each located in the file.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// A listener's address could not be bound.
    #[error("listener `{name}`: cannot bind {addr}")]
    Bind {
        /// The listener.
        name: String,
        /// Its address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A reload was asked for while the server shuts down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The reload task itself failed (a panic while building); the running config stays.
    #[error("the reload failed unexpectedly; see the log")]
    ReloadFailed,
    /// No connection to an upstream server could be opened: refused, unreachable, or its
    /// `connect_timeout` passed.
    #[error("cannot connect to {server}")]
    UpstreamConnect {
        /// The server, as `host:port`.
        server: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS handshake with an `https://` upstream server failed: its certificate not trusted or
    /// not for the name verified, no protocol in common, or the connection broken mid-handshake.
    #[error("TLS handshake with {server} failed")]
    UpstreamTls {
        /// The server, as `host:port`.
        server: String,
        /// Why (a `rustls::Error` inside, for a refused certificate).
        source: std::io::Error,
    },
    /// The upstream connection failed before the response head arrived.
    #[error("the connection to the upstream failed before its response head")]
    UpstreamProtocol(#[source] hyper::Error),
    /// The upstream connection closed or broke before the response head arrived (parapet's own
    /// HTTP/1.1 client, for requests without a body).
    #[error("the connection to the upstream failed before its response head")]
    UpstreamIo(#[source] std::io::Error),
}
