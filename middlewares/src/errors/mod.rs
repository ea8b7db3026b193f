//! `errors`: error capture. Panics and failures become a 500 or a configured page; the process serves on.
//!
//! ```toml
//! [middlewares.errors]
//! kind = "errors"
//! pages = { "502" = "config/errors/502.html", "5xx" = "config/errors/5xx.html" }
//! intercept = ["5xx"]     # also replace the bodies of these upstream statuses
//! ```
//!
//! What the layer catches, and what follows:
//!
//! - a panic in the inner service's `call`, in its future, or an `Err` from it, **before the response
//!   head is sent**: a 500, with the page configured for it;
//! - a panic while the body is polled, **after the head is sent**: the body ends with an error, which
//!   makes the server abort the client's connection (a client never takes a truncated body for a whole
//!   one), and the event is logged;
//! - a gateway error (parapet's own 404, 502, 504, carrying a
//!   [`GatewayError`](crate::GatewayError)): its body is replaced by the page for its status, if one
//!   is configured;
//! - an upstream's own error status: passed through untouched, unless its status is listed in
//!   `intercept`.
//!
//! A page is read when the config loads. It may contain `{status}`, `{reason}` and `{request_id}`,
//! replaced when it is sent; the request id is the one a [`request_id`](crate::request_id) layer
//! gave the request (on either side of this one), else the request's `x-request-id`, if it is a plain
//! token of letters, digits, `.`, `_` and `-` (the page is HTML: no other character of a client's
//! is put in it); else one made up here and logged with the event.
//!
//! ```
//! use std::convert::Infallible;
//!
//! use http::{HeaderValue, Request, Response};
//! use parapet_middlewares::errors::{ErrorsConfig, ErrorsLayer, Page, StatusMatch};
//! use parapet_middlewares::Body;
//! use tower::{Layer, ServiceExt};
//!
//! let mut config = ErrorsConfig::default();
//! config.pages.insert(
//!     StatusMatch::parse("5xx").unwrap(),
//!     Page {
//!         template: "<h1>{status} {reason}</h1>".into(),
//!         content_type: HeaderValue::from_static("text/html; charset=utf-8"),
//!     },
//! );
//! let app = tower::service_fn(|req: Request<Body>| async move {
//!     if req.uri().path() == "/broken" {
//!         panic!("the app is broken");
//!     }
//!     Ok::<_, Infallible>(Response::new(Body::empty()))
//! });
//! let service = ErrorsLayer::new(config).layer(app);
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let request = Request::get("/broken").body(Body::empty()).unwrap();
//! let response = service.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), 500);
//! assert_eq!(response.headers()["content-type"], "text/html; charset=utf-8");
//! # });
//! ```

mod catch_panic;
mod pages;

use std::sync::Arc;

use tower::Layer;

pub use catch_panic::{CatchPanic, CatchPanicFuture};
pub use pages::{ErrorPages, ErrorsConfig, Page, StatusMatch};

use crate::intercept::{Intercept, InterceptLayer};

/// Captures panics and errors, and serves error pages.
///
/// Two parts: [`CatchPanic`] next to the inner service turns a panic or an `Err` into a 500 carrying
/// a [`GatewayError`](crate::GatewayError); around it, the [`ErrorPages`] interceptor gives
/// parapet's own errors (and the intercepted statuses) their pages and guards the body against
/// panics.
#[derive(Clone, Debug)]
pub struct ErrorsLayer {
    pages: InterceptLayer<ErrorPages>,
}

impl ErrorsLayer {
    /// A layer with these settings.
    pub fn new(config: ErrorsConfig) -> Self {
        Self {
            pages: InterceptLayer::new(ErrorPages::new(Arc::new(config))),
        }
    }

    /// The outer part: the error pages' interceptor (the inner part is [`CatchPanic`]), for a host
    /// that runs interceptors without a layer of their own.
    pub fn pages(&self) -> &ErrorPages {
        self.pages.interceptor()
    }
}

/// The service built by [`ErrorsLayer`]. It never fails.
pub type Errors<S> = Intercept<ErrorPages, CatchPanic<S>>;

impl<S> Layer<S> for ErrorsLayer {
    type Service = Errors<S>;

    fn layer(&self, inner: S) -> Errors<S> {
        self.pages.layer(CatchPanic::new(inner))
    }
}

#[cfg(test)]
mod tests;
