//! Guards: interceptors that may answer a request themselves instead of passing it on.
//!
//! An [`Interceptor`](crate::intercept::Interceptor) always calls the inner service. A [`Guard`]
//! decides on the way in: pass the request on (keeping a state for the way out, as an interceptor
//! does), or answer it now (a CORS preflight, a 403, a 429, a 401). The answer it gives goes out
//! through the layers outside it like any response, so an access log or a CORS layer outside still
//! sees it.
//!
//! ```
//! use http::{Request, Response, StatusCode};
//! use parapet_middlewares::guard::{Guard, GuardLayer};
//! use parapet_middlewares::Body;
//!
//! /// Refuses DELETE.
//! #[derive(Clone)]
//! struct NoDelete;
//!
//! impl Guard for NoDelete {
//!     type State = ();
//!     fn request(&self, req: &mut Request<Body>) -> Result<(), Response<Body>> {
//!         if req.method() == http::Method::DELETE {
//!             let mut res = Response::new(Body::empty());
//!             *res.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
//!             return Err(res);
//!         }
//!         Ok(())
//!     }
//!     fn response(&self, _: (), _: &mut Response<Body>) {}
//! }
//!
//! let layer = GuardLayer::new(NoDelete);
//! # let _ = layer;
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::Body;

/// Decides on each request whether to pass it on or to answer it, and sees the response of the
/// requests it passed on.
pub trait Guard: Clone + Send + Sync + 'static {
    /// What `request` keeps for `response` when it passes a request on.
    type State: Send + 'static;

    /// Called before the inner service sees the request: `Ok` passes it on (possibly rewritten),
    /// `Err` is the answer, sent without calling the inner service.
    // The answer is moved once into the future: boxing it would cost an allocation per refusal.
    #[allow(clippy::result_large_err)]
    fn request(&self, req: &mut Request<Body>) -> Result<Self::State, Response<Body>>;

    /// Called with the inner service's response before any of it is sent.
    fn response(&self, state: Self::State, res: &mut Response<Body>);
}

/// Applies a [`Guard`] around a service.
#[derive(Clone, Debug)]
pub struct GuardLayer<G> {
    guard: G,
}

impl<G> GuardLayer<G> {
    /// A layer applying `guard`.
    pub fn new(guard: G) -> Self {
        Self { guard }
    }

    /// The guard this layer applies.
    pub fn guard(&self) -> &G {
        &self.guard
    }
}

impl<G: Clone, S> Layer<S> for GuardLayer<G> {
    type Service = Guarded<G, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            guard: self.guard.clone(),
            inner,
        }
    }
}

/// The service built by [`GuardLayer`].
#[derive(Clone, Debug)]
pub struct Guarded<G, S> {
    guard: G,
    inner: S,
}

impl<G, S> Service<Request<Body>> for Guarded<G, S>
where
    G: Guard,
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = GuardFuture<G, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        match self.guard.request(&mut req) {
            Ok(state) => GuardFuture {
                inner: Some(self.inner.call(req)),
                guard: self.guard.clone(),
                state: Some(state),
                answer: None,
            },
            Err(answer) => GuardFuture {
                inner: None,
                guard: self.guard.clone(),
                state: None,
                answer: Some(answer),
            },
        }
    }
}

pin_project! {
    /// The response future of [`Guarded`].
    pub struct GuardFuture<G: Guard, F> {
        #[pin]
        inner: Option<F>,
        guard: G,
        state: Option<G::State>,
        answer: Option<Response<Body>>,
    }
}

impl<G, F, E> Future for GuardFuture<G, F>
where
    G: Guard,
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            // Answered by the guard; polled once.
            let answer = this.answer.take().unwrap_or_default();
            return Poll::Ready(Ok(answer));
        };
        let mut response = ready!(inner.poll(cx))?;
        if let Some(state) = this.state.take() {
            this.guard.response(state, &mut response);
        }
        Poll::Ready(Ok(response))
    }
}

/// A response with this status and no body, for a guard's answers.
pub fn answer(status: http::StatusCode) -> Response<Body> {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = status;
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::ServiceExt;

    #[derive(Clone)]
    struct OnlyGet;

    impl Guard for OnlyGet {
        type State = ();
        fn request(&self, req: &mut Request<Body>) -> Result<(), Response<Body>> {
            if req.method() == http::Method::GET {
                Ok(())
            } else {
                Err(answer(http::StatusCode::METHOD_NOT_ALLOWED))
            }
        }
        fn response(&self, _: (), res: &mut Response<Body>) {
            res.headers_mut()
                .insert("x-passed", http::HeaderValue::from_static("1"));
        }
    }

    #[tokio::test]
    async fn a_guard_answers_or_passes_on_and_sees_the_response() {
        let inner = tower::service_fn(|_: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::empty()))
        });
        let svc = GuardLayer::new(OnlyGet).layer(inner);
        let res = svc
            .clone()
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-passed"], "1");
        let res = svc
            .oneshot(Request::post("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 405);
        assert!(res.headers().get("x-passed").is_none());
    }
}
