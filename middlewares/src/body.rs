//! [`Body`]: the one response body type of every app.
//!
//! Endpoints produce many body types (an upstream's streaming body, a fixed page, a file). Layers
//! need one. `Body` keeps the common cases (empty, one fixed chunk, a body read from a connection)
//! without a heap allocation and boxes everything else. Requests and responses both use it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;

use crate::BoxError;

/// A request or response body: empty, one fixed chunk, a connection's body, or any boxed body.
///
/// Errors from a streaming body pass through unchanged: the server turns them into an aborted
/// connection, so a client never takes a truncated body for a complete one.
#[derive(Default)]
pub struct Body {
    inner: Inner,
}

#[derive(Default)]
enum Inner {
    #[default]
    Empty,
    Full(Option<Bytes>),
    Incoming(hyper::body::Incoming),
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl Body {
    /// A body with no bytes.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A body of exactly these bytes, sent as one frame.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Self::empty();
        }
        Self {
            inner: Inner::Full(Some(bytes)),
        }
    }

    /// Wraps any body whose chunks are [`Bytes`].
    pub fn new<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self {
            inner: Inner::Boxed(body.map_err(Into::into).boxed_unsync()),
        }
    }
}

impl From<hyper::body::Incoming> for Body {
    /// A body read from a connection (a client's request, an upstream's response), without boxing.
    fn from(body: hyper::body::Incoming) -> Self {
        Self {
            inner: Inner::Incoming(body),
        }
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Self::full(bytes)
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Self::full(s)
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Self::full(Bytes::from_static(s.as_bytes()))
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.inner {
            Inner::Empty => "empty",
            Inner::Full(_) => "full",
            Inner::Incoming(_) => "incoming",
            Inner::Boxed(_) => "streaming",
        };
        f.debug_struct("Body").field("kind", &kind).finish()
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().inner {
            Inner::Empty => Poll::Ready(None),
            Inner::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Inner::Incoming(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Inner::Boxed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Empty => true,
            Inner::Full(data) => data.is_none(),
            Inner::Incoming(body) => body.is_end_stream(),
            Inner::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Empty => SizeHint::with_exact(0),
            Inner::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Inner::Incoming(body) => body.size_hint(),
            Inner::Boxed(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;

    #[tokio::test]
    async fn full_body_reports_exact_size_and_yields_once() {
        let body = Body::from("hello");
        assert_eq!(body.size_hint().exact(), Some(5));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"hello");
    }

    #[tokio::test]
    async fn empty_full_body_is_end_stream() {
        let body = Body::full(Bytes::new());
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
    }

    #[tokio::test]
    async fn boxed_body_passes_frames_through() {
        let body = Body::new(http_body_util::Full::new(Bytes::from_static(b"abc")));
        assert_eq!(body.size_hint().exact(), Some(3));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"abc");
    }
}
