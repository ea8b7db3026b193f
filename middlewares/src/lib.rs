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
//! And one module per layer: [`access_log`], [`body_limit`], [`compress`], [`errors`], [`headers`].
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
pub mod body_limit;
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

/// The error type at the tower boundary: anything that can fail inside a body or a service.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
