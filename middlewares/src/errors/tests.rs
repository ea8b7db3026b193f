use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use tower::{Layer, Service, ServiceExt};

use super::pages::request_id;
use super::*;
use crate::{Body, BoxError, GatewayError, GatewayErrorKind};

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
    let err = res.extensions().get::<GatewayError>().unwrap();
    assert_eq!(
        crate::ErrorChain(err).to_string(),
        "internal: the service failed: broken"
    );
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
    let err = res.into_body().collect().await.err().unwrap();
    assert!(
        matches!(err.downcast_ref(), Some(crate::Error::BodyPanicked(m)) if m == "mid-body"),
        "{err}"
    );
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

#[tokio::test]
async fn the_page_carries_the_id_of_a_request_id_layer_on_either_side() {
    use crate::request_id::RequestIdLayer;
    let failing = || {
        tower::service_fn(|_req: Request<Body>| async move {
            let mut res = Response::new(Body::empty());
            *res.status_mut() = StatusCode::BAD_GATEWAY;
            res.extensions_mut()
                .insert(GatewayError::new(GatewayErrorKind::UpstreamUnreachable));
            Ok::<_, Infallible>(res)
        })
    };
    let rid = || RequestIdLayer::new(http::HeaderName::from_static("x-request-id"));
    // request_id outside errors: the page has the id the client gets.
    let outer = rid().layer(ErrorsLayer::new(config()).layer(failing()));
    // request_id inside errors: the same.
    let inner = ErrorsLayer::new(config()).layer(rid().layer(failing()));
    for svc in [
        outer
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await,
        inner
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await,
    ] {
        let res = svc.unwrap();
        assert_eq!(res.status(), 502);
        let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(body_text(res).await.contains(&format!("id {id}")));
    }
}
