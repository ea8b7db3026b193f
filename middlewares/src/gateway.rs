//! Errors the gateway answers itself, told apart from an upstream's own statuses.
//!
//! When parapet produces a response on its own (no route matched, the upstream could not be reached,
//! the upstream did not answer in time, an in-process handler failed), it attaches a [`GatewayError`]
//! to the response's extensions. A layer that sees the response on its way out (the `errors` layer, the
//! access log) can then tell a 502 that parapet made from a 502 an upstream sent.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::{Body, BoxError};

/// Where a failure came from, in Pingora's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client's request was at fault (no route, malformed target).
    Downstream,
    /// The upstream failed (refused, timed out, broke the protocol).
    Upstream,
    /// Something inside parapet or an in-process handler failed.
    Internal,
}

impl ErrorSource {
    /// The lowercase name used in logs: `downstream`, `upstream` or `internal`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorSource::Downstream => "downstream",
            ErrorSource::Upstream => "upstream",
            ErrorSource::Internal => "internal",
        }
    }
}

/// What went wrong, each kind with its own status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GatewayErrorKind {
    /// No route matches the request's listener, host and path: 404.
    NoRoute,
    /// The request cannot be routed safely (a dot segment in the path, say): 400.
    BadRequest,
    /// The method is not one parapet serves (CONNECT): 405.
    MethodNotAllowed,
    /// The client paused sending its request body longer than `server.body_timeout`: 408 (RFC 9110
    /// §15.5.9), or a closed connection once the response has begun.
    ClientTimeout,
    /// The request body is larger than a `body_limit` allows: 413 (RFC 9110 §15.5.14).
    PayloadTooLarge,
    /// The request target is longer than `server.max_uri_length`: 414 (RFC 9110 §15.5.15).
    UriTooLong,
    /// The client's request body is malformed in its own framing (a bad chunk size, chunk data
    /// longer than its size, a broken chunk extension: RFC 9112 §7.1): 400. The client's fault,
    /// never the upstream's, even when it shows while the body streams to the upstream.
    ClientBody,
    /// The client closed its connection before the end of its request body: 400 if it still reads;
    /// usually no answer can reach it, and the access log says 499 `client_closed`.
    ClientClosed,
    /// The request carries no valid credentials for a `basic_auth`: 401 (RFC 9110 §15.5.2).
    Unauthorized,
    /// The client's address is not admitted by an `ip_filter`: 403 (RFC 9110 §15.5.4).
    Forbidden,
    /// The client went over a `rate_limit`: 429 (RFC 6585 §4).
    TooManyRequests,
    /// The upstream refused the connection or could not be reached: 502.
    UpstreamUnreachable,
    /// The upstream broke the HTTP protocol or closed before its response head: 502.
    UpstreamProtocol,
    /// The upstream's response head did not arrive within the timeout: 504.
    UpstreamTimeout,
    /// Every connection a server may have (`max_connections`) stayed busy for `queue_timeout`: 503,
    /// with `Retry-After`.
    UpstreamSaturated,
    /// An in-process handler or a layer failed or panicked: 500.
    Internal,
}

impl GatewayErrorKind {
    /// The status the gateway answers with.
    pub fn status(self) -> StatusCode {
        match self {
            GatewayErrorKind::NoRoute => StatusCode::NOT_FOUND,
            GatewayErrorKind::BadRequest
            | GatewayErrorKind::ClientBody
            | GatewayErrorKind::ClientClosed => StatusCode::BAD_REQUEST,
            GatewayErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            GatewayErrorKind::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            GatewayErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayErrorKind::UriTooLong => StatusCode::URI_TOO_LONG,
            GatewayErrorKind::UpstreamUnreachable | GatewayErrorKind::UpstreamProtocol => {
                StatusCode::BAD_GATEWAY
            }
            GatewayErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayErrorKind::UpstreamSaturated => StatusCode::SERVICE_UNAVAILABLE,
            GatewayErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            GatewayErrorKind::Forbidden => StatusCode::FORBIDDEN,
            GatewayErrorKind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            GatewayErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Where this kind of failure comes from.
    pub fn source(self) -> ErrorSource {
        match self {
            GatewayErrorKind::NoRoute
            | GatewayErrorKind::BadRequest
            | GatewayErrorKind::MethodNotAllowed
            | GatewayErrorKind::ClientTimeout
            | GatewayErrorKind::PayloadTooLarge
            | GatewayErrorKind::UriTooLong
            | GatewayErrorKind::ClientBody
            | GatewayErrorKind::ClientClosed
            | GatewayErrorKind::Unauthorized
            | GatewayErrorKind::Forbidden
            | GatewayErrorKind::TooManyRequests => ErrorSource::Downstream,
            GatewayErrorKind::UpstreamUnreachable
            | GatewayErrorKind::UpstreamProtocol
            | GatewayErrorKind::UpstreamTimeout
            | GatewayErrorKind::UpstreamSaturated => ErrorSource::Upstream,
            GatewayErrorKind::Internal => ErrorSource::Internal,
        }
    }

    /// A short snake_case name for logs: `no_route`, `upstream_timeout`...
    pub fn as_str(self) -> &'static str {
        match self {
            GatewayErrorKind::NoRoute => "no_route",
            GatewayErrorKind::BadRequest => "bad_request",
            GatewayErrorKind::MethodNotAllowed => "method_not_allowed",
            GatewayErrorKind::ClientTimeout => "client_timeout",
            GatewayErrorKind::PayloadTooLarge => "payload_too_large",
            GatewayErrorKind::UriTooLong => "uri_too_long",
            GatewayErrorKind::ClientBody => "client_body",
            GatewayErrorKind::ClientClosed => "client_closed",
            GatewayErrorKind::Unauthorized => "unauthorized",
            GatewayErrorKind::Forbidden => "forbidden",
            GatewayErrorKind::TooManyRequests => "too_many_requests",
            GatewayErrorKind::UpstreamUnreachable => "upstream_unreachable",
            GatewayErrorKind::UpstreamProtocol => "upstream_protocol",
            GatewayErrorKind::UpstreamTimeout => "upstream_timeout",
            GatewayErrorKind::UpstreamSaturated => "upstream_saturated",
            GatewayErrorKind::Internal => "internal",
        }
    }
}

/// A response parapet produced itself, attached to that response's extensions.
///
/// It says what went wrong ([`kind`](Self::kind)), with context for logs ([`detail`](Self::detail))
/// and the error that caused it, if any ([`source`](std::error::Error::source)). Its `Display` is
/// `kind: detail`; [`ErrorChain`](crate::ErrorChain) adds the causes. Cloning it shares the cause.
#[derive(Clone, Debug)]
pub struct GatewayError {
    kind: GatewayErrorKind,
    detail: Cow<'static, str>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl GatewayError {
    /// An error of this kind with no further detail.
    pub fn new(kind: GatewayErrorKind) -> Self {
        Self {
            kind,
            detail: Cow::Borrowed(""),
            source: None,
        }
    }

    /// Adds a detail for logs (never sent to the client): context, such as which server or what
    /// limit, not the cause (that is [`with_source`](Self::with_source)).
    pub fn with_detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.detail = detail.into();
        self
    }

    /// Adds the error that caused this one, returned by [`source`](std::error::Error::source) (never
    /// sent to the client).
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(Arc::from(source.into()));
        self
    }

    /// The first `GatewayError` in `err`'s chain of causes, `err` included, looking inside
    /// `io::Error`s too (whose `source` skips the error they wrap).
    ///
    /// A request body fails with a `GatewayError` when its client is at fault (a body timeout, say):
    /// whoever forwarded the body and saw the failure answers with that error, not with one blaming
    /// where the body was going.
    pub fn find_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a GatewayError> {
        let mut next = Some(err);
        while let Some(err) = next {
            if let Some(found) = err.downcast_ref::<GatewayError>() {
                return Some(found);
            }
            if let Some(found) = err
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .and_then(|inner| inner.downcast_ref::<GatewayError>())
            {
                return Some(found);
            }
            next = err.source();
        }
        None
    }

    /// What went wrong.
    pub fn kind(&self) -> GatewayErrorKind {
        self.kind
    }

    /// The detail given for logs, empty if none.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// The response parapet sends for this error: the status, a one-line plain-text body, and the
    /// error itself in the extensions.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let text = format!(
            "{} {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        let mut response = Response::new(Body::from(Bytes::from(text)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response.extensions_mut().insert(self);
        response
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.detail.is_empty() {
            write!(f, "{}", self.kind.as_str())
        } else {
            write!(f, "{}: {}", self.kind.as_str(), self.detail)
        }
    }
}

impl std::error::Error for GatewayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let source: &(dyn std::error::Error + 'static) = self.source.as_deref()?;
        Some(source)
    }
}

/// The message a caught panic carries, as `panic!` formats it; `(no message)` for other payloads.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// Which upstream server answered, attached to the responses that come from an upstream whose
/// request asked for it ([`UpstreamResponseWanted`]).
///
/// The access log reads it to log the upstream's address and its own status, which a layer may since
/// have rewritten.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamResponse {
    /// The server, as written in the config (`http://127.0.0.1:9000`).
    pub server: Arc<str>,
    /// The status the upstream sent.
    pub status: StatusCode,
}

/// Put in a request's extensions by a layer that will read the [`UpstreamResponse`] of its response
/// (the access log does): a proxy attaches one only then, so that a response no layer reads it from
/// pays for no extension map (a box, a table and the value's box). A marker of no size: inserting it
/// allocates nothing of its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpstreamResponseWanted;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_errors_map_to_their_statuses_and_sources() {
        assert_eq!(GatewayErrorKind::NoRoute.status(), 404);
        assert_eq!(GatewayErrorKind::UpstreamUnreachable.status(), 502);
        assert_eq!(GatewayErrorKind::UpstreamTimeout.status(), 504);
        assert_eq!(
            GatewayErrorKind::UpstreamTimeout.source(),
            ErrorSource::Upstream
        );
        assert_eq!(GatewayErrorKind::NoRoute.source(), ErrorSource::Downstream);
        for client in [GatewayErrorKind::ClientBody, GatewayErrorKind::ClientClosed] {
            assert_eq!(client.status(), 400);
            assert_eq!(client.source(), ErrorSource::Downstream);
        }
        assert_eq!(GatewayErrorKind::PayloadTooLarge.status(), 413);
        assert_eq!(
            GatewayErrorKind::PayloadTooLarge.source(),
            ErrorSource::Downstream
        );
        assert_eq!(GatewayErrorKind::UriTooLong.status(), 414);
        assert_eq!(GatewayErrorKind::ClientTimeout.status(), 408);
        assert_eq!(
            GatewayErrorKind::ClientTimeout.source(),
            ErrorSource::Downstream
        );
    }

    #[test]
    fn a_gateway_error_is_found_among_the_causes_and_inside_io_errors() {
        #[derive(Debug)]
        struct Wrapper(Box<dyn std::error::Error + Send + Sync>);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("wrapper")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&*self.0)
            }
        }
        let timeout = GatewayError::new(GatewayErrorKind::ClientTimeout);
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, timeout);
        let chain = Wrapper(Box::new(Wrapper(Box::new(io))));
        let found = GatewayError::find_in(&chain).unwrap();
        assert_eq!(found.kind(), GatewayErrorKind::ClientTimeout);
        assert!(GatewayError::find_in(&std::io::Error::other("plain")).is_none());
    }

    #[test]
    fn gateway_error_response_carries_the_error() {
        let response = GatewayError::new(GatewayErrorKind::UpstreamUnreachable)
            .with_detail("connection refused")
            .into_response();
        assert_eq!(response.status(), 502);
        let err = response.extensions().get::<GatewayError>().unwrap();
        assert_eq!(err.kind(), GatewayErrorKind::UpstreamUnreachable);
        assert_eq!(err.detail(), "connection refused");
    }

    #[test]
    fn a_gateway_error_keeps_its_cause_through_clones() {
        use std::error::Error as _;
        let err = GatewayError::new(GatewayErrorKind::UpstreamProtocol)
            .with_detail("http://u")
            .with_source(std::io::Error::other("header too long"));
        let copy = err.clone();
        assert_eq!(copy.to_string(), "upstream_protocol: http://u");
        assert_eq!(copy.source().unwrap().to_string(), "header too long");
        assert_eq!(
            crate::ErrorChain(&copy).to_string(),
            "upstream_protocol: http://u: header too long"
        );
        assert!(GatewayError::new(GatewayErrorKind::NoRoute)
            .source()
            .is_none());
    }
}
