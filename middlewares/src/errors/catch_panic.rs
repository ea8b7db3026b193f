//! Panic capture: a panic or an `Err` before the response head becomes a 500, a panic in the body a
//! body error.

use std::convert::Infallible;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use pin_project_lite::pin_project;
use tower::Service;

use crate::gateway::panic_message;
use crate::host::PanicSignal;
use crate::{Body, BoxError, Error, GatewayError, GatewayErrorKind};

/// Turns a panic in the inner service's `call` or future, or an `Err` from it, into a 500 response
/// carrying a [`GatewayError`] of kind `internal`. It never fails.
///
/// Each request gets a [`PanicSignal`], set when a panic is caught, before the inner future is
/// dropped: an access log inside logs that request as the 500 it became, not as a 499.
#[derive(Clone, Debug)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S> CatchPanic<S> {
    /// `inner`, its panics and errors turned into 500s.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S> Service<Request<Body>> for CatchPanic<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = CatchPanicFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // A service that fails to become ready is answered with a 500 at `call`.
        match catch_unwind(AssertUnwindSafe(|| self.inner.poll_ready(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            _ => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        // What the inner service holds (an access log's record) learns from this signal that a
        // panic, not the client, dropped it.
        let signal = PanicSignal::attach(&mut req);
        match catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(future) => CatchPanicFuture {
                state: State::Inner { future },
                signal,
            },
            Err(panic) => {
                signal.set();
                CatchPanicFuture {
                    state: State::Panicked {
                        message: panic_message(&*panic),
                    },
                    signal,
                }
            }
        }
    }
}

pin_project! {
    /// The response future of [`CatchPanic`].
    pub struct CatchPanicFuture<F> {
        #[pin]
        state: State<F>,
        signal: PanicSignal,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Inner { #[pin] future: F },
        Panicked { message: String },
        Done,
    }
}

impl<F, E> Future for CatchPanicFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.as_mut().project();
        let outcome = match this.state.project() {
            StateProj::Inner { future } => {
                match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(Ok(response))) => Ok(response),
                    Ok(Poll::Ready(Err(err))) => Err(GatewayError::new(GatewayErrorKind::Internal)
                        .with_detail("the service failed")
                        .with_source(err)),
                    Err(panic) => {
                        // Signalled before the inner future is dropped (below): what it holds
                        // knows a panic ended it.
                        this.signal.set();
                        Err(panicked_error(&panic_message(&*panic)))
                    }
                }
            }
            StateProj::Panicked { message } => Err(panicked_error(message)),
            StateProj::Done => panic!("CatchPanicFuture polled after completion"),
        };
        self.project().state.set(State::Done);
        Poll::Ready(Ok(outcome.unwrap_or_else(GatewayError::into_response)))
    }
}

fn panicked_error(message: &str) -> GatewayError {
    GatewayError::new(GatewayErrorKind::Internal).with_detail(format!("panic: {message}"))
}

/// Turns a panic while polling the body into a body error: the connection is aborted, the process
/// goes on.
pub(super) struct CatchPanicBody {
    inner: Body,
}

impl CatchPanicBody {
    pub(super) fn new(inner: Body) -> Self {
        Self { inner }
    }
}

impl http_body::Body for CatchPanicBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let inner = &mut self.get_mut().inner;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *inner).poll_frame(cx))) {
            Ok(poll) => poll,
            Err(panic) => {
                let message = panic_message(&*panic);
                tracing::error!(
                    "app panicked while sending its body, aborting the connection: {message}"
                );
                // The inner body may be broken now: never poll it again.
                *inner = Body::empty();
                Poll::Ready(Some(Err(Error::BodyPanicked(message).into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
