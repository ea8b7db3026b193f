//! The crate's own error type, and a helper to log an error with its causes.
//!
//! Failures before a response head are responses, not errors: parapet's own 404, 502 or 500, each
//! carrying a [`GatewayError`](crate::GatewayError). Building a layer fails only with an
//! [`io::Error`] (an access log file that cannot be opened). What is left are the failures of a
//! body on the layers' side (a response body after its head went out, a request body over a limit):
//! those are an [`Error`].

use std::fmt;
use std::io;

/// A body failed on a layer's side: a response body, which makes the server abort the client's
/// connection, or a request body a layer refused, which makes the endpoint reading it fail (a body
/// error at the tower boundary, boxed as a [`BoxError`](crate::BoxError)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The body panicked while it was polled; the `errors` layer caught the panic.
    #[error("panic in response body: {0}")]
    BodyPanicked(String),
    /// A streaming encoder (gzip, Brotli, Zstandard) failed.
    #[error("compressing the response body")]
    Compress(#[source] io::Error),
    /// libdeflate failed to gzip a whole body (it should not: the level is clamped to 1 to 9 and the
    /// output buffer sized by its bound).
    #[error("gzip (libdeflate): {0}")]
    Gzip(String),
    /// A request body streamed past a `body_limit`'s `max_size`: the request body fails with it, so
    /// the endpoint reading it (an upstream's request) aborts; it is the client's fault, a 413.
    #[error("request body over the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
}

/// Displays an error followed by its causes, outermost first: `outer: cause: cause's cause`.
///
/// For log lines: an error's `Display` says only what failed at its level, its
/// [`source`](std::error::Error::source) says why.
///
/// ```
/// use parapet_middlewares::{ErrorChain, GatewayError, GatewayErrorKind};
///
/// let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
/// let err = GatewayError::new(GatewayErrorKind::UpstreamUnreachable)
///     .with_detail("http://127.0.0.1:9000")
///     .with_source(refused);
/// assert_eq!(
///     ErrorChain(&err).to_string(),
///     "upstream_unreachable: http://127.0.0.1:9000: connection refused"
/// );
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ErrorChain<'a>(pub &'a dyn std::error::Error);

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(err) = cause {
            write!(f, ": {err}")?;
            cause = err.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_chain_lists_every_cause_outermost_first() {
        let root = io::Error::other("disk full");
        let outer = Error::Compress(root);
        assert_eq!(outer.to_string(), "compressing the response body");
        assert_eq!(
            ErrorChain(&outer).to_string(),
            "compressing the response body: disk full"
        );
        let alone = Error::BodyPanicked("boom".into());
        assert_eq!(
            ErrorChain(&alone).to_string(),
            "panic in response body: boom"
        );
    }
}
