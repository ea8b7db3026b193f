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
//! - a gateway error (parapet's own 404, 502, 504, carrying a [`GatewayError`]): its body is replaced by
//!   the page for its status, if one is configured;
//! - an upstream's own error status: passed through untouched, unless its status is listed in
//!   `intercept`.
//!
//! A page is read when the config loads. It may contain `{status}`, `{reason}` and `{request_id}`,
//! replaced when it is sent; the request id is the request's `x-request-id` (if it is a plain token
//! of letters, digits, `.`, `_` and `-`), or one made up here and logged with the event.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::gateway::panic_message;
use crate::intercept::{Intercept, InterceptLayer, Interceptor};
use crate::{Body, BoxError, GatewayError, GatewayErrorKind};

/// A page sent in place of an error response's body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The page's text, with `{status}`, `{reason}` and `{request_id}` placeholders.
    pub template: String,
    /// Its content type.
    pub content_type: HeaderValue,
}

/// Which statuses a rule applies to: one status, or a class such as `5xx`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusMatch {
    /// Exactly this status.
    Exact(u16),
    /// Every status of this class: `5` is `5xx`.
    Class(u8),
}

impl StatusMatch {
    /// Parses `"502"` or `"5xx"` (4xx and 5xx classes, statuses 400 to 599).
    pub fn parse(s: &str) -> Option<StatusMatch> {
        let b = s.as_bytes();
        if b.len() == 3 && (b[1..] == *b"xx" || b[1..] == *b"XX") && matches!(b[0], b'4' | b'5') {
            return Some(StatusMatch::Class(b[0] - b'0'));
        }
        s.parse::<u16>()
            .ok()
            .filter(|n| (400..=599).contains(n))
            .map(StatusMatch::Exact)
    }

    fn matches(self, status: StatusCode) -> bool {
        match self {
            StatusMatch::Exact(n) => status.as_u16() == n,
            StatusMatch::Class(c) => status.as_u16() / 100 == c as u16,
        }
    }
}

/// The settings of an `errors` layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorsConfig {
    /// `pages`: status or class to page. An exact status beats its class.
    pub pages: HashMap<StatusMatch, Page>,
    /// `intercept`: upstream statuses whose bodies are replaced too.
    pub intercept: Vec<StatusMatch>,
}

impl ErrorsConfig {
    fn page(&self, status: StatusCode) -> Option<&Page> {
        self.pages
            .get(&StatusMatch::Exact(status.as_u16()))
            .or_else(|| {
                self.pages
                    .get(&StatusMatch::Class((status.as_u16() / 100) as u8))
            })
    }
}

/// Captures panics and errors, and serves error pages.
///
/// Two parts: [`CatchPanic`] next to the inner service turns a panic or an `Err` into a 500 carrying
/// a [`GatewayError`]; around it, the [`ErrorPages`] interceptor gives parapet's own errors (and the
/// intercepted statuses) their pages and guards the body against panics.
#[derive(Clone, Debug)]
pub struct ErrorsLayer {
    pages: InterceptLayer<ErrorPages>,
}

impl ErrorsLayer {
    /// A layer with these settings.
    pub fn new(config: ErrorsConfig) -> Self {
        Self {
            pages: InterceptLayer::new(ErrorPages {
                config: Arc::new(config),
            }),
        }
    }
}

/// The service built by [`ErrorsLayer`]. It never fails.
pub type Errors<S> = Intercept<ErrorPages, CatchPanic<S>>;

impl<S> Layer<S> for ErrorsLayer {
    type Service = Errors<S>;

    fn layer(&self, inner: S) -> Errors<S> {
        self.pages.layer(CatchPanic { inner })
    }
}

/// The interceptor that puts pages on error responses (see the module docs).
#[derive(Clone, Debug)]
pub struct ErrorPages {
    config: Arc<ErrorsConfig>,
}

impl Interceptor for ErrorPages {
    /// The request's `x-request-id`, for the page and the log.
    type State = Option<HeaderValue>;

    fn request(&self, req: &mut Request<Body>) -> Option<HeaderValue> {
        req.headers().get("x-request-id").cloned()
    }

    fn response(&self, request_id: Option<HeaderValue>, res: &mut Response<Body>) {
        let status = res.status();
        let gateway = res.extensions().get::<GatewayError>();
        if let Some(err) = gateway.filter(|e| e.kind() == GatewayErrorKind::Internal) {
            tracing::error!(request_id = %self::request_id(&request_id), "app failed before its response head: {}", err.detail());
        }
        if status.as_u16() >= 400
            && (gateway.is_some() || self.config.intercept.iter().any(|m| m.matches(status)))
        {
            if let Some(page) = self.config.page(status) {
                let original = std::mem::take(res);
                *res = with_page(original, page, &self::request_id(&request_id));
                return;
            }
        }
        let body = std::mem::take(res.body_mut());
        *res.body_mut() = Body::new(CatchPanicBody { inner: body });
    }
}

/// Turns a panic in the inner service's `call` or future, or an `Err` from it, into a 500 response
/// carrying a [`GatewayError`] of kind `internal`. It never fails.
#[derive(Clone, Debug)]
pub struct CatchPanic<S> {
    inner: S,
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

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        match catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(future) => CatchPanicFuture {
                state: State::Inner { future },
            },
            Err(panic) => CatchPanicFuture {
                state: State::Panicked {
                    message: panic_message(&*panic),
                },
            },
        }
    }
}

pin_project! {
    /// The response future of [`CatchPanic`].
    pub struct CatchPanicFuture<F> {
        #[pin]
        state: State<F>,
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
        let mut panicked = false;
        let outcome = match this.state.project() {
            StateProj::Inner { future } => {
                match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(Ok(response))) => Ok(response),
                    Ok(Poll::Ready(Err(err))) => Err(format!("error: {}", err.into())),
                    Err(panic) => {
                        panicked = true;
                        Err(format!("panic: {}", panic_message(&*panic)))
                    }
                }
            }
            StateProj::Panicked { message } => Err(format!("panic: {message}")),
            StateProj::Done => panic!("CatchPanicFuture polled after completion"),
        };
        let mut this = self.project();
        if panicked {
            // The inner future is dropped here, marked: what it holds knows a panic ended it.
            crate::gateway::after_panic(|| this.state.set(State::Done));
        } else {
            this.state.set(State::Done);
        }
        Poll::Ready(Ok(match outcome {
            Ok(response) => response,
            Err(what) => GatewayError::new(GatewayErrorKind::Internal)
                .with_detail(what)
                .into_response(),
        }))
    }
}

fn with_page(response: Response<Body>, page: &Page, request_id: &str) -> Response<Body> {
    let (mut parts, _discarded) = response.into_parts();
    let status = parts.status;
    let text = page
        .template
        .replace("{status}", status.as_str())
        .replace("{reason}", status.canonical_reason().unwrap_or(""))
        .replace("{request_id}", request_id);
    // The page replaces the representation: headers describing the old body go with it.
    for name in [
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::CONTENT_RANGE,
        header::TRANSFER_ENCODING,
        header::ETAG,
        header::LAST_MODIFIED,
        header::ACCEPT_RANGES,
    ] {
        parts.headers.remove(name);
    }
    parts
        .headers
        .insert(header::CONTENT_TYPE, page.content_type.clone());
    parts
        .headers
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Response::from_parts(parts, Body::from(Bytes::from(text)))
}

fn request_id(given: &Option<HeaderValue>) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // The id goes into an HTML page: only a plain token is taken from the client.
    let plain = |id: &&str| {
        (1..=128).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    match given.as_ref().and_then(|v| v.to_str().ok()).filter(plain) {
        Some(id) => id.to_owned(),
        None => {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            format!("{:08x}-{n:x}", std::process::id())
        }
    }
}

/// Turns a panic while polling the body into a body error: the connection is aborted, the process
/// goes on.
struct CatchPanicBody {
    inner: Body,
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
                Poll::Ready(Some(Err(
                    format!("panic in response body: {message}").into()
                )))
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn config() -> ErrorsConfig {
        let mut pages = HashMap::new();
        pages.insert(
            StatusMatch::Class(5),
            Page {
                template: "<h1>{status} {reason}</h1><p>id {request_id}</p>".into(),
                content_type: HeaderValue::from_static("text/html; charset=utf-8"),
            },
        );
        pages.insert(
            StatusMatch::Exact(404),
            Page {
                template: "not here".into(),
                content_type: HeaderValue::from_static("text/plain"),
            },
        );
        ErrorsConfig {
            pages,
            intercept: vec![],
        }
    }

    async fn body_text(res: Response<Body>) -> String {
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_panic_in_the_service_future_becomes_a_500_page() {
        let inner = tower::service_fn(|_req: Request<Body>| async move {
            if true {
                panic!("boom");
            }
            Ok::<_, Infallible>(Response::new(Body::empty()))
        });
        let req = Request::get("/")
            .header("x-request-id", "abc")
            .body(Body::empty())
            .unwrap();
        let res = ErrorsLayer::new(config())
            .layer(inner)
            .oneshot(req)
            .await
            .unwrap();
        assert_eq!(res.status(), 500);
        let err = res.extensions().get::<GatewayError>().unwrap();
        assert_eq!(err.kind(), GatewayErrorKind::Internal);
        assert!(err.detail().contains("boom"));
        assert_eq!(
            body_text(res).await,
            "<h1>500 Internal Server Error</h1><p>id abc</p>"
        );
    }

    #[derive(Clone)]
    struct PanicsInCall;
    impl Service<Request<Body>> for PanicsInCall {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response<Body>, Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Request<Body>) -> Self::Future {
            panic!("in call")
        }
    }

    #[tokio::test]
    async fn a_panic_in_call_becomes_a_500() {
        let svc = ErrorsLayer::new(ErrorsConfig::default()).layer(PanicsInCall);
        let res = svc.oneshot(Request::new(Body::empty())).await.unwrap();
        assert_eq!(res.status(), 500);
        assert_eq!(body_text(res).await, "500 Internal Server Error\n");
    }

    #[tokio::test]
    async fn an_error_from_the_service_becomes_a_500() {
        let inner = tower::service_fn(|_req: Request<Body>| async move {
            Err::<Response<Body>, BoxError>("broken".into())
        });
        let res = ErrorsLayer::new(ErrorsConfig::default())
            .layer(inner)
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap();
        assert_eq!(res.status(), 500);
    }

    #[tokio::test]
    async fn gateway_errors_get_their_page_and_upstream_errors_pass_through() {
        let inner = tower::service_fn(|req: Request<Body>| async move {
            Ok::<_, Infallible>(if req.uri().path() == "/gateway" {
                GatewayError::new(GatewayErrorKind::UpstreamUnreachable).into_response()
            } else {
                let mut r = Response::new(Body::from("upstream's own 502"));
                *r.status_mut() = StatusCode::BAD_GATEWAY;
                r
            })
        });
        let svc = ErrorsLayer::new(config()).layer(inner);
        let req = Request::get("/gateway").body(Body::empty()).unwrap();
        let res = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), 502);
        assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
        assert!(body_text(res).await.starts_with("<h1>502 Bad Gateway</h1>"));

        let req = Request::get("/upstream").body(Body::empty()).unwrap();
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(body_text(res).await, "upstream's own 502");
    }

    #[tokio::test]
    async fn intercept_replaces_listed_upstream_statuses() {
        let inner = tower::service_fn(|_req: Request<Body>| async move {
            let mut r = Response::new(Body::from("raw"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r.headers_mut()
                .insert("content-length", HeaderValue::from_static("3"));
            Ok::<_, Infallible>(r)
        });
        let mut cfg = config();
        cfg.intercept = vec![StatusMatch::parse("404").unwrap()];
        let res = ErrorsLayer::new(cfg)
            .layer(inner)
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
        assert!(res.headers().get("content-length").is_none());
        assert_eq!(body_text(res).await, "not here");
    }

    #[tokio::test]
    async fn a_panic_while_polling_the_body_is_a_body_error() {
        struct Panics;
        impl http_body::Body for Panics {
            type Data = Bytes;
            type Error = Infallible;
            fn poll_frame(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
                panic!("mid-body")
            }
        }
        let inner = tower::service_fn(|_req: Request<Body>| async move {
            Ok::<_, Infallible>(Response::new(Body::new(Panics)))
        });
        let res = ErrorsLayer::new(ErrorsConfig::default())
            .layer(inner)
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.into_body().collect().await.is_err());
    }

    #[test]
    fn only_plain_request_ids_reach_the_page() {
        let id = |v: &'static str| request_id(&Some(HeaderValue::from_static(v)));
        assert_eq!(id("abc-123_x.y"), "abc-123_x.y");
        let made_up = id("<script>alert(1)</script>");
        assert!(!made_up.contains('<'), "{made_up}");
    }

    #[test]
    fn status_matches_parse_statuses_and_classes() {
        assert_eq!(StatusMatch::parse("502"), Some(StatusMatch::Exact(502)));
        assert_eq!(StatusMatch::parse("5xx"), Some(StatusMatch::Class(5)));
        assert_eq!(StatusMatch::parse("4XX"), Some(StatusMatch::Class(4)));
        assert_eq!(StatusMatch::parse("200"), None);
        assert_eq!(StatusMatch::parse("3xx"), None);
        assert_eq!(StatusMatch::parse("abc"), None);
    }
}
