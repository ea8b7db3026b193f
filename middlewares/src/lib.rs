//! The tower layers that parapet chains into apps, and the few types they share.
//!
//! An *app* in parapet is an onion of layers around one endpoint. This crate holds the pieces every
//! layer needs and knows nothing of listeners, routes or reloads:
//!
//! - [`Body`]: the response body type every app speaks, cheap for small fixed bodies and able to carry
//!   any streaming body;
//! - [`GatewayError`]: the typed error the gateway attaches to the responses it produces itself (no
//!   route, unreachable upstream, upstream timeout...), so that later layers and the access log can tell
//!   them apart from an upstream's own statuses; it keeps its cause, which [`ErrorChain`] prints;
//! - [`Error`]: the errors the layers end a response body with (a panic caught in a body, a failing
//!   compressor);
//! - [`intercept`]: start_response interception, the small abstraction the layers share to see the
//!   request and rewrite the response head before any body byte is sent.
//!
//! And one module per layer: [`access_log`], [`compress`], [`errors`], [`headers`].
//!
//! What the layers need from the server that runs them (reporting the final status, flushing and
//! reopening the access logs, the client's address, signalling the panics it catches) is one
//! documented contract: [`host`].
//!
//! ```
//! use parapet_middlewares::{Body, GatewayError, GatewayErrorKind};
//!
//! let response = GatewayError::new(GatewayErrorKind::UpstreamTimeout).into_response();
//! assert_eq!(response.status(), 504);
//! assert!(response.extensions().get::<GatewayError>().is_some());
//! let _empty = Body::empty();
//! ```

#![warn(missing_docs)]

pub mod access_log;
pub mod body;
pub mod compress;
mod error;
pub mod errors;
pub mod gateway;
pub mod headers;
pub mod host;
pub mod intercept;

pub use body::Body;
pub use error::{Error, ErrorChain};
pub use gateway::{ErrorSource, GatewayError, GatewayErrorKind, UpstreamResponse};

/// The address of the client that sent a request, in the request's extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// The client a request is attributed to, in the request's extensions next to [`ClientAddr`]: what
/// an IP filter, a rate limit or an app's `REMOTE_ADDR` should use.
///
/// parapet's server sets it on every request before any middleware runs. When the connection's
/// peer is not one of `server.trusted_proxies`, `ip` is the peer's address and the request's
/// forwarding headers are not believed. When it is, `ip` is the right-most address of
/// `X-Forwarded-For` that is not itself a trusted proxy (as nginx's `real_ip_recursive on`): the
/// first hop no trusted proxy can vouch for; the left-most address if every hop is trusted, and the
/// last hop read before an unparsable entry. An IPv4-mapped IPv6 address is given as its IPv4
/// address.
///
/// ```
/// use parapet_middlewares::ClientIp;
///
/// # let request = http::Request::new(());
/// let ip = request.extensions().get::<ClientIp>().map(|c| c.ip);
/// # assert!(ip.is_none());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp {
    /// The client's address, resolved through trusted proxies.
    pub ip: std::net::IpAddr,
    /// Whether the connection's peer is a trusted proxy, whose `X-Forwarded-*`, `Forwarded` and
    /// `X-Real-IP` headers are kept.
    pub peer_trusted: bool,
}

/// The error type at the tower boundary: anything that can fail inside a body or a service.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
