//! `body_limit`: refuse request bodies larger than a size, with 413 (RFC 9110 §15.5.14).
//!
//! ```toml
//! [middlewares.uploads]
//! kind = "body_limit"
//! max_size = "10MiB"      # default "1MiB", like nginx's client_max_body_size
//! ```
//!
//! The limit is checked twice, like nginx's `client_max_body_size` and Envoy's buffer filter:
//!
//! - **on the declared length**: a body whose length is known (`Content-Length`) and over the limit is
//!   answered 413 at once; the inner service is never called and not a byte of the body is read;
//! - **while streaming**: a body of unknown length (chunked) is counted as it is read. The chunk that
//!   would take it past the limit is not passed on: the body fails with
//!   [`Error::BodyTooLarge`] instead, so the endpoint reading it (an
//!   upstream request) aborts having received less than the limit. If the response head has not gone
//!   out yet, whatever the inner service answers is replaced by a 413 carrying a
//!   [`GatewayErrorKind::PayloadTooLarge`]; after it, the client's connection is aborted.
//!
//! A body within the limit, or of a known length within it, passes untouched (hyper holds a body to its
//! `Content-Length`, so only bodies of unknown length are wrapped and counted).
//!
//! ```
//! use parapet_middlewares::body_limit::BodyLimitLayer;
//!
//! let layer = BodyLimitLayer::new(10 * 1024 * 1024);
//! # let _ = layer;
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::{Body, BoxError, Error, GatewayError, GatewayErrorKind};

/// Refuses request bodies over `max_size` bytes.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimitLayer {
    max_size: u64,
}

impl BodyLimitLayer {
    /// A layer refusing request bodies over `max_size` bytes.
    pub fn new(max_size: u64) -> Self {
        Self { max_size }
    }
}

impl<S> Layer<S> for BodyLimitLayer {
    type Service = BodyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyLimit {
            inner,
            max_size: self.max_size,
        }
    }
}

/// The service built by [`BodyLimitLayer`].
#[derive(Clone, Debug)]
pub struct BodyLimit<S> {
    inner: S,
    max_size: u64,
}

impl<S> Service<Request<Body>> for BodyLimit<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let max = self.max_size;
        let hint = req.body().size_hint();
        if hint.lower() > max {
            // The declared length is over the limit: refuse before anything reads the body.
            return ResponseFuture {
                state: State::Refused {
                    response: Some(too_large(max)),
                },
            };
        }
        if hint.upper().is_some_and(|upper| upper <= max) {
            // A known length within the limit (or no body): nothing to count.
            return ResponseFuture {
                state: State::Inner {
                    fut: self.inner.call(req),
                    tripped: None,
                    max,
                },
            };
        }
        let tripped = Arc::new(AtomicBool::new(false));
        let req = req.map(|body| {
            Body::new(LimitedBody {
                body,
                remaining: max,
                limit: max,
                tripped: Arc::clone(&tripped),
            })
        });
        ResponseFuture {
            state: State::Inner {
                fut: self.inner.call(req),
                tripped: Some(tripped),
                max,
            },
        }
    }
}

/// parapet's 413: the client sent more than `max` bytes.
fn too_large(max: u64) -> Response<Body> {
    GatewayError::new(GatewayErrorKind::PayloadTooLarge)
        .with_detail(format!("request body over body_limit's {max} bytes"))
        .into_response()
}

pin_project! {
    /// The response future of [`BodyLimit`].
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // The declared length is over the limit: a 413, the inner service not called.
        Refused { response: Option<Response<Body>> },
        // The inner service's answer, replaced by a 413 if the body went past the limit first.
        Inner {
            #[pin]
            fut: F,
            // Set by the counted body when it goes past the limit; `None` if it is not counted.
            tripped: Option<Arc<AtomicBool>>,
            max: u64,
        },
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
            StateProj::Inner { fut, tripped, max } => {
                let response = ready!(fut.poll(cx))?;
                // Whatever the endpoint made of its failed body (a 502 from an aborted upstream
                // request, a handler's error), the client sent too much: say so.
                if tripped.as_ref().is_some_and(|t| t.load(Ordering::Acquire)) {
                    return Poll::Ready(Ok(too_large(*max)));
                }
                Poll::Ready(Ok(response))
            }
        }
    }
}

pin_project! {
    /// A request body of unknown length, counted as it is read; it fails at the chunk that would take
    /// it past the limit.
    struct LimitedBody {
        #[pin]
        body: Body,
        remaining: u64,
        limit: u64,
        tripped: Arc<AtomicBool>,
    }
}

impl http_body::Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = match ready!(this.body.poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => return Poll::Ready(other),
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            if len > *this.remaining {
                this.tripped.store(true, Ordering::Release);
                return Poll::Ready(Some(Err(Error::BodyTooLarge { limit: *this.limit }.into())));
            }
            *this.remaining -= len;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::sync::atomic::AtomicUsize;

    use http::StatusCode;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// A body of unknown length (like a chunked one): these chunks, one frame each.
    struct Chunks(VecDeque<&'static [u8]>);

    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            let chunk = self.get_mut().0.pop_front();
            Poll::Ready(chunk.map(|c| Ok(Frame::data(Bytes::from_static(c)))))
        }
    }

    fn chunked(chunks: &[&'static [u8]]) -> Body {
        Body::new(Chunks(chunks.iter().copied().collect()))
    }

    /// An endpoint that reads the whole body, as a proxy does, and answers 200 with what it read, or
    /// 502 if the body failed (as an aborted upstream request does); counts its calls.
    fn reader(
        calls: Arc<AtomicUsize>,
        failure: Arc<std::sync::Mutex<Option<String>>>,
    ) -> impl Service<
        Request<Body>,
        Response = Response<Body>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<Body>, Infallible>>,
    > + Clone {
        tower::service_fn(move |req: Request<Body>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let failure = Arc::clone(&failure);
            async move {
                match req.into_body().collect().await {
                    Ok(body) => Ok(Response::new(Body::from(body.to_bytes()))),
                    Err(err) => {
                        let typed = err
                            .downcast_ref::<Error>()
                            .is_some_and(|e| matches!(e, Error::BodyTooLarge { limit: 8 }));
                        *failure.lock().unwrap() = Some(format!("{typed} {err}"));
                        let mut res = Response::new(Body::empty());
                        *res.status_mut() = StatusCode::BAD_GATEWAY;
                        Ok(res)
                    }
                }
            }
        })
    }

    async fn send(body: Body) -> (Response<Body>, usize, Option<String>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let failure = Arc::new(std::sync::Mutex::new(None));
        let svc = BodyLimitLayer::new(8).layer(reader(Arc::clone(&calls), Arc::clone(&failure)));
        let req = Request::post("/").body(body).unwrap();
        let res = svc.oneshot(req).await.unwrap();
        let failure = failure.lock().unwrap().take();
        (res, calls.load(Ordering::SeqCst), failure)
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_413_without_calling_the_inner_service() {
        let (res, calls, _) = send(Body::from("123456789")).await;
        assert_eq!(res.status(), 413);
        assert_eq!(calls, 0);
        let err = res.extensions().get::<GatewayError>().unwrap();
        assert_eq!(err.kind(), GatewayErrorKind::PayloadTooLarge);
    }

    #[tokio::test]
    async fn a_declared_length_at_the_limit_passes() {
        let (res, calls, _) = send(Body::from("12345678")).await;
        assert_eq!(res.status(), 200);
        assert_eq!(calls, 1);
        assert_eq!(
            &res.into_body().collect().await.unwrap().to_bytes()[..],
            b"12345678"
        );
    }

    #[tokio::test]
    async fn a_streamed_body_past_the_limit_fails_typed_and_is_answered_413() {
        let (res, calls, failure) = send(chunked(&[b"1234", b"5678", b"9"])).await;
        assert_eq!(calls, 1);
        assert_eq!(res.status(), 413, "the inner 502 is replaced");
        let err = res.extensions().get::<GatewayError>().unwrap();
        assert_eq!(err.kind(), GatewayErrorKind::PayloadTooLarge);
        assert_eq!(
            failure.as_deref(),
            Some("true request body over the limit of 8 bytes"),
            "the body fails with Error::BodyTooLarge"
        );
    }

    #[tokio::test]
    async fn a_streamed_body_at_the_limit_passes() {
        let (res, calls, failure) = send(chunked(&[b"1234", b"5678"])).await;
        assert_eq!((res.status(), calls, failure), (StatusCode::OK, 1, None));
        assert_eq!(
            &res.into_body().collect().await.unwrap().to_bytes()[..],
            b"12345678"
        );
    }

    #[tokio::test]
    async fn the_chunk_crossing_the_limit_is_not_passed_on() {
        let mut body = LimitedBody {
            body: chunked(&[b"12345", b"6789"]),
            remaining: 8,
            limit: 8,
            tripped: Arc::new(AtomicBool::new(false)),
        };
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "12345");
        assert!(body.frame().await.unwrap().is_err());
        assert!(body.tripped.load(Ordering::Acquire));
    }
}
