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
//!   request and rewrite the response head before any body byte is sent;
//! - [`guard`]: interceptors that may answer a request themselves (a preflight, a 403, a 429);
//! - [`ip`]: blocks of IP addresses (CIDR), as `trusted_proxies` and `ip_filter` name them.
//!
//! And one module per layer: [`access_log`], [`body_limit`], [`compress`], [`errors`], [`headers`],
//! [`request_id`], [`cors`], [`ip_filter`], [`rate_limit`], [`basic_auth`], [`rewrite`],
//! [`redirect`], [`forward_auth`]; and [`tunnel`], what layers see of an upgraded connection
//! (WebSocket).
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
pub mod basic_auth;
pub mod body;
pub mod body_limit;
pub mod compress;
pub mod cors;
mod error;
pub mod errors;
pub mod forward_auth;
pub mod gateway;
pub mod guard;
pub mod headers;
pub mod host;
pub mod intercept;
pub mod ip;
pub mod ip_filter;
pub mod rate_limit;
pub mod redirect;
pub mod request_id;
pub mod rewrite;
pub mod tunnel;
mod values;

pub use body::Body;
pub use error::{Error, ErrorChain};
pub use gateway::{
    ErrorSource, GatewayError, GatewayErrorKind, UpstreamResponse, UpstreamResponseWanted,
};

/// The address of the client that sent a request, in the request's extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// What a request's connection negotiated over TLS, in the request's extensions: present only for
/// requests that came over TLS (`X-Forwarded-Proto: https`, WSGI's `wsgi.url_scheme`, the access
/// log's `tls_version` and `sni`).
///
/// The server makes it once per connection, after the handshake; each request gets a clone, one
/// reference count and the extension's own small allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo(pub std::sync::Arc<TlsDetails>);

/// The contents of a [`TlsInfo`].
#[derive(Debug, PartialEq, Eq)]
pub struct TlsDetails {
    /// The protocol version, as `"TLSv1.2"` or `"TLSv1.3"` (nginx's `$ssl_protocol`).
    pub version: &'static str,
    /// The server name the client asked for (SNI), if it sent one.
    pub sni: Option<Box<str>>,
}

/// The client a request is attributed to, as `server.trusted_proxies` resolves it: what an IP
/// filter, a rate limit or an app's `REMOTE_ADDR` should use. Read it with [`ClientIp::of`].
///
/// When the connection's peer is not a trusted proxy, the client is the peer ([`ClientAddr`]) and
/// the request's forwarding headers are not believed. When it is, the client is the right-most
/// address of `X-Forwarded-For` that is not itself a trusted proxy (as nginx's `real_ip_recursive
/// on`): the nearest hop no trusted proxy vouches for; the left-most address if every hop is
/// trusted; the last one read before an entry that is no address. An IPv4-mapped IPv6 address is
/// given as its IPv4 address.
///
/// parapet's server puts a `ClientIp` in the request's extensions, before any middleware runs, only
/// when the peer is a trusted proxy: the common request costs no allocation for it, and
/// [`ClientIp::of`] gives the peer's address otherwise.
///
/// ```
/// use parapet_middlewares::{ClientAddr, ClientIp};
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(ClientAddr("192.0.2.1:5000".parse().unwrap()));
/// let client = ClientIp::of(request.extensions()).unwrap();
/// assert_eq!(client.ip.to_string(), "192.0.2.1");
/// assert!(!client.peer_trusted);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp {
    /// The client's address.
    pub ip: std::net::IpAddr,
    /// Whether the connection's peer is a trusted proxy, whose `X-Forwarded-*`, `Forwarded` and
    /// `X-Real-IP` headers are kept.
    pub peer_trusted: bool,
}

impl ClientIp {
    /// The client of a request with these extensions: the `ClientIp` the server resolved through a
    /// trusted proxy, else the peer's address ([`ClientAddr`], not trusted); `None` if the server set
    /// neither (a request that did not come through a server).
    pub fn of(extensions: &http::Extensions) -> Option<ClientIp> {
        extensions.get::<ClientIp>().copied().or_else(|| {
            extensions.get::<ClientAddr>().map(|peer| ClientIp {
                ip: peer.0.ip().to_canonical(),
                peer_trusted: false,
            })
        })
    }
}

/// The error type at the tower boundary: anything that can fail inside a body or a service.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
