//! start_response interception: see the request, rewrite the response head before any body byte is sent.
//!
//! In WSGI a middleware wraps `start_response` to rewrite the status and headers an app passes it. Here
//! an [`Interceptor`] gets the request on the way in (and may rewrite it), keeps whatever state it needs,
//! and gets the response on the way out, before the server has written anything of it: it may change
//! the status, the headers and the extensions, or swap the body for a wrapped one.
//!
//! ```
//! use http::{HeaderValue, Request, Response};
//! use parapet_middlewares::intercept::{InterceptLayer, Interceptor};
//! use parapet_middlewares::Body;
//!
//! /// Tells the client which method it used, in a response header.
//! #[derive(Clone)]
//! struct EchoMethod;
//!
//! impl Interceptor for EchoMethod {
//!     type State = http::Method;
//!     fn request(&self, req: &mut Request<Body>) -> Self::State {
//!         req.method().clone()
//!     }
//!     fn response(&self, method: Self::State, res: &mut Response<Body>) {
//!         let value = HeaderValue::from_str(method.as_str()).unwrap();
//!         res.headers_mut().insert("x-method", value);
//!     }
//! }
//!
//! let layer = InterceptLayer::new(EchoMethod);
//! # let _ = layer;
//! ```
//!
//! Every response passes through the interceptor, the gateway's own 404, 502 and 504 included, because
//! parapet's services never fail: every failure is already a response. An `Err` from the inner service
//! passes through untouched.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::Body;

/// Sees each request on its way in and rewrites its response head on the way out.
pub trait Interceptor: Clone + Send + Sync + 'static {
    /// What `request` keeps for `response`: timings, request headers, a decision made early.
    type State: Send + 'static;

    /// Called before the inner service sees the request; may rewrite it.
    fn request(&self, req: &mut Request<Body>) -> Self::State;

    /// Called with the response before any of it is sent; may rewrite its status, headers and
    /// extensions, or replace the body (take it with `std::mem::take(res.body_mut())`).
    fn response(&self, state: Self::State, res: &mut Response<Body>);
}

/// Applies an [`Interceptor`] around a service.
#[derive(Clone, Debug)]
pub struct InterceptLayer<I> {
    interceptor: I,
}

impl<I> InterceptLayer<I> {
    /// A layer applying `interceptor`.
    pub fn new(interceptor: I) -> Self {
        Self { interceptor }
    }

    /// The interceptor this layer applies.
    pub fn interceptor(&self) -> &I {
        &self.interceptor
    }
}

impl<I: Clone, S> Layer<S> for InterceptLayer<I> {
    type Service = Intercept<I, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Intercept {
            interceptor: self.interceptor.clone(),
            inner,
        }
    }
}

/// The service built by [`InterceptLayer`].
#[derive(Clone, Debug)]
pub struct Intercept<I, S> {
    interceptor: I,
    inner: S,
}

impl<I, S> Service<Request<Body>> for Intercept<I, S>
where
    I: Interceptor,
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<I, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let state = self.interceptor.request(&mut req);
        ResponseFuture {
            inner: self.inner.call(req),
            interceptor: self.interceptor.clone(),
            state: Some(state),
        }
    }
}

pin_project! {
    /// The response future of [`Intercept`].
    pub struct ResponseFuture<I: Interceptor, F> {
        #[pin]
        inner: F,
        interceptor: I,
        state: Option<I::State>,
    }
}

impl<I, F, E> Future for ResponseFuture<I, F>
where
    I: Interceptor,
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        if let Some(state) = this.state.take() {
            this.interceptor.response(state, &mut response);
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::ServiceExt;

    #[derive(Clone)]
    struct Tag(&'static str);

    impl Interceptor for Tag {
        type State = String;
        fn request(&self, req: &mut Request<Body>) -> String {
            req.headers_mut()
                .append("x-seen-by", http::HeaderValue::from_static(self.0));
            req.uri().path().to_owned()
        }
        fn response(&self, path: String, res: &mut Response<Body>) {
            res.headers_mut()
                .insert("x-last", http::HeaderValue::from_static(self.0));
            res.headers_mut()
                .append("x-path", http::HeaderValue::from_str(&path).unwrap());
        }
    }

    #[tokio::test]
    async fn the_interceptor_sees_the_request_and_rewrites_the_response_head() {
        let inner = tower::service_fn(|req: Request<Body>| async move {
            let seen: Vec<_> = req.headers().get_all("x-seen-by").iter().cloned().collect();
            assert_eq!(seen, ["outer", "inner"]);
            Ok::<_, Infallible>(Response::new(Body::empty()))
        });
        let svc =
            InterceptLayer::new(Tag("outer")).layer(InterceptLayer::new(Tag("inner")).layer(inner));
        let req = Request::get("/p").body(Body::empty()).unwrap();
        let res = svc.oneshot(req).await.unwrap();
        // The outermost interceptor has the last word.
        assert_eq!(res.headers()["x-last"], "outer");
        assert_eq!(res.headers().get_all("x-path").iter().count(), 2);
    }
}
