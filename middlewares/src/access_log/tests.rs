use super::*;
use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::task::Poll;

use bytes::Bytes;
use http_body_util::BodyExt;
use tower::{Layer, ServiceExt};

/// A fresh log file and its sink, held open by the test: a sink whose last layer is gone finishes
/// writing on its own thread, and the test must flush the very sink the layer wrote to.
fn log_file(name: &str) -> (TempLog, Arc<Sink>) {
    let dir =
        std::env::temp_dir().join(format!("parapet-access-log-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("access.log");
    let _ = std::fs::remove_file(&path);
    let sink = Sink::open(Target::File(path.clone())).unwrap();
    (TempLog(path), sink)
}

/// A test's log file, in a directory of its own that is removed when the test is done with it.
struct TempLog(PathBuf);

impl std::ops::Deref for TempLog {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempLog {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn layer(format: Format, path: &std::path::Path) -> AccessLogLayer {
    AccessLogLayer::new(AccessLogConfig {
        format,
        target: Target::File(path.to_path_buf()),
    })
    .unwrap()
}

fn lines(path: &std::path::Path) -> Vec<String> {
    Sink::open(Target::File(path.to_path_buf()))
        .unwrap()
        .flush();
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn ok_service() -> impl tower::Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(|req: Request<Body>| async move {
        // A proxy names the server only when asked: the log asks.
        assert!(req
            .extensions()
            .get::<crate::UpstreamResponseWanted>()
            .is_some());
        let mut r = Response::new(Body::from("hello"));
        r.extensions_mut().insert(UpstreamResponse {
            server: "http://127.0.0.1:9".into(),
            status: StatusCode::OK,
        });
        Ok::<_, Infallible>(r)
    })
}

fn request() -> Request<Body> {
    let mut req = Request::get("/a?b=c")
        .header("user-agent", "test \"agent\"")
        .header("referer", "http://ref.example/")
        .body(Body::empty())
        .unwrap();
    req.extensions_mut()
        .insert(ClientAddr("192.0.2.1:5000".parse().unwrap()));
    req
}

#[tokio::test]
async fn json_lines_carry_status_bytes_upstream_and_agent() {
    let (path, _sink) = log_file("json");
    let svc = layer(Format::Json, &path).layer(ok_service());
    let res = svc.oneshot(request()).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"hello");
    let lines = lines(&path);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert!(line.starts_with("{\"time\":\""), "{line}");
    for part in [
        "\"remote\":\"192.0.2.1\"",
        "\"method\":\"GET\"",
        "\"target\":\"/a?b=c\"",
        "\"protocol\":\"HTTP/1.1\"",
        "\"status\":200",
        "\"bytes\":5",
        "\"user_agent\":\"test \\\"agent\\\"\"",
        "\"referer\":\"http://ref.example/\"",
        "\"upstream\":\"http://127.0.0.1:9\"",
        "\"upstream_status\":200",
        "\"error_by\":null",
        "\"error\":null",
    ] {
        assert!(line.contains(part), "{part} missing from {line}");
    }
}

#[tokio::test]
async fn combined_lines_follow_the_ncsa_format() {
    let (path, _sink) = log_file("combined");
    let svc = layer(Format::Combined, &path).layer(ok_service());
    let res = svc.oneshot(request()).await.unwrap();
    res.into_body().collect().await.unwrap();
    let line = &lines(&path)[0];
    let (head, tail) = line.split_once(" [").unwrap();
    assert_eq!(head, "192.0.2.1 - -");
    let (_time, rest) = tail.split_once("] ").unwrap();
    assert_eq!(
        rest,
        "\"GET /a?b=c HTTP/1.1\" 200 5 \"http://ref.example/\" \"test \\\"agent\\\"\""
    );
}

#[tokio::test]
async fn a_client_that_goes_away_mid_body_is_logged_as_499() {
    let (path, _sink) = log_file("499-body");
    let svc = layer(Format::Json, &path).layer(ok_service());
    let res = svc.oneshot(request()).await.unwrap();
    drop(res);
    let line = &lines(&path)[0];
    assert!(line.contains("\"status\":499"), "{line}");
    assert!(line.contains("\"error\":\"client_closed\""), "{line}");
}

#[tokio::test]
async fn a_client_that_goes_away_before_the_head_is_logged_as_499() {
    let (path, _sink) = log_file("499-head");
    let inner = tower::service_fn(|_req: Request<Body>| async move {
        std::future::pending::<()>().await;
        Ok::<_, Infallible>(Response::new(Body::empty()))
    });
    let svc = layer(Format::Json, &path).layer(inner);
    let fut = svc.oneshot(request());
    // Poll once so the request reaches the inner service, then drop the future, as hyper does
    // when the client disconnects.
    let _ = tokio::time::timeout(std::time::Duration::from_millis(1), fut).await;
    let line = &lines(&path)[0];
    assert!(line.contains("\"status\":499"), "{line}");
}

#[tokio::test]
async fn the_final_status_reported_by_the_server_wins() {
    let (path, _sink) = log_file("final");
    let svc = layer(Format::Json, &path).layer(ok_service());
    let mut res = svc.oneshot(request()).await.unwrap();
    // A layer outside the log rewrote the status; the server reports what it sent.
    *res.status_mut() = StatusCode::IM_A_TEAPOT;
    crate::host::report_final_status(&res);
    res.into_body().collect().await.unwrap();
    let line = &lines(&path)[0];
    assert!(line.contains("\"status\":418"), "{line}");
}

#[tokio::test]
async fn gateway_errors_are_told_apart_from_upstream_statuses() {
    let (path, _sink) = log_file("gateway");
    let inner = tower::service_fn(|req: Request<Body>| async move {
        Ok::<_, Infallible>(if req.uri().path() == "/gw" {
            GatewayError::new(crate::GatewayErrorKind::UpstreamTimeout).into_response()
        } else {
            let mut r = Response::new(Body::from("busy"));
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r.extensions_mut().insert(UpstreamResponse {
                server: "http://u".into(),
                status: StatusCode::SERVICE_UNAVAILABLE,
            });
            r
        })
    });
    let svc = layer(Format::Json, &path).layer(inner);
    for path in ["/gw", "/up"] {
        let req = Request::get(path).body(Body::empty()).unwrap();
        let res = svc.clone().oneshot(req).await.unwrap();
        res.into_body().collect().await.unwrap();
    }
    let lines = lines(&path);
    assert!(lines[0].contains("\"status\":504"), "{}", lines[0]);
    assert!(
        lines[0].contains("\"error_by\":\"gateway\",\"error\":\"upstream_timeout\""),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("\"status\":503"), "{}", lines[1]);
    assert!(
        lines[1].contains("\"error_by\":\"upstream\""),
        "{}",
        lines[1]
    );
}

#[tokio::test]
async fn head_requests_are_complete_without_a_body() {
    let (path, _sink) = log_file("head");
    let svc = layer(Format::Common, &path).layer(ok_service());
    let mut req = request();
    *req.method_mut() = Method::HEAD;
    let res = svc.oneshot(req).await.unwrap();
    drop(res);
    let line = &lines(&path)[0];
    assert!(line.contains("\"HEAD /a?b=c HTTP/1.1\" 200 -"), "{line}");
}

/// A body of known length that never says it has ended: servers stop polling it after its last byte.
struct Sized(Option<Bytes>);

impl http_body::Body for Sized {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(5)
    }
}

#[tokio::test]
async fn a_sized_body_sent_to_its_last_byte_is_complete_without_its_end() {
    let (path, _sink) = log_file("sized");
    let inner = tower::service_fn(|_req: Request<Body>| async move {
        Ok::<_, Infallible>(Response::new(Body::new(Sized(Some(Bytes::from_static(
            b"12345",
        ))))))
    });
    let svc = layer(Format::Json, &path).layer(inner);
    let res = svc.oneshot(request()).await.unwrap();
    let mut body = res.into_body();
    // Read exactly the five bytes, then drop, as hyper does with a Content-Length body.
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.data_ref().unwrap().len(), 5);
    drop(body);
    let line = &lines(&path)[0];
    assert!(line.contains("\"status\":200"), "{line}");
    assert!(line.contains("\"bytes\":5"), "{line}");
}

#[tokio::test]
async fn a_request_dropped_after_its_catcher_signalled_a_panic_is_logged_as_500() {
    let (path, _sink) = log_file("signalled");
    let inner = tower::service_fn(|_req: Request<Body>| async move {
        std::future::pending::<()>().await;
        Ok::<_, Infallible>(Response::new(Body::empty()))
    });
    let svc = layer(Format::Json, &path).layer(inner);
    // A catcher outside the log: it attaches its signal, and sets it before dropping the future.
    let mut req = request();
    let signal = crate::host::PanicSignal::attach(&mut req);
    let mut fut = Box::pin(svc.oneshot(req));
    let pending = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx).is_pending())).await;
    assert!(pending, "the request reached the inner service");
    signal.set();
    drop(fut);
    let line = &lines(&path)[0];
    assert!(line.contains("\"status\":500"), "{line}");
    assert!(line.contains("\"error\":\"panic\""), "{line}");
}

#[tokio::test]
async fn a_panic_is_logged_as_500_by_a_log_inside_the_errors_layer() {
    let (path, _sink) = log_file("inside-errors");
    let inner = tower::service_fn(|_req: Request<Body>| async move {
        if true {
            panic!("boom");
        }
        Ok::<_, Infallible>(Response::new(Body::empty()))
    });
    let svc = crate::errors::ErrorsLayer::new(Default::default())
        .layer(layer(Format::Json, &path).layer(inner));
    let res = svc.oneshot(request()).await.unwrap();
    assert_eq!(res.status(), 500);
    let line = &lines(&path)[0];
    assert!(line.contains("\"status\":500"), "{line}");
    assert!(line.contains("\"error\":\"panic\""), "{line}");
}
