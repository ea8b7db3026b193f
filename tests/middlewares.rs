//! Middleware chains through the real server: onion order, parapet's own responses, compression,
//! error capture and the access log.

mod common;

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use parapet::{Body, Registry};

/// A registry with test handlers: `panics` (panics before its head on /boom), `breaks` (a body that
/// fails after its first chunk) and `text20k` (20 kB of text).
fn registry() -> Registry {
    let mut r = Registry::new();
    r.register_service(
        "panics",
        tower::service_fn(|req: http::Request<Body>| async move {
            if req.uri().path() == "/boom" {
                panic!("handler exploded");
            }
            Ok::<_, Infallible>(http::Response::new(Body::from("fine")))
        }),
    );
    r.register_service(
        "breaks",
        tower::service_fn(|_req: http::Request<Body>| async move {
            let chunks: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = vec![
                Ok(http_body::Frame::data(Bytes::from_static(b"first part "))),
                Err(std::io::Error::other("source failed")),
            ];
            let body = http_body_util::StreamBody::new(Iter(chunks.into_iter()));
            Ok::<_, Infallible>(http::Response::new(Body::new(body)))
        }),
    );
    r.register_service(
        "text20k",
        tower::service_fn(|_req: http::Request<Body>| async move {
            let mut r = http::Response::new(Body::from(text_20k()));
            r.headers_mut()
                .insert("content-type", http::HeaderValue::from_static("text/plain"));
            Ok::<_, Infallible>(r)
        }),
    );
    r
}

struct Iter<I>(I);

impl<I: Iterator + Unpin> futures_core::Stream for Iter<I> {
    type Item = I::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<I::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}

fn text_20k() -> String {
    (0..2000)
        .map(|i| format!("line {i:05}\n"))
        .collect::<String>()[..20_000]
        .to_owned()
}

fn gunzip(bytes: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut out)
        .unwrap();
    out
}

#[tokio::test]
async fn the_outermost_layer_has_the_last_word_on_the_response_head() {
    let server = start(
        r#"
[listeners.main]
bind = "127.0.0.1:0"
[[routes]]
app = "a"
[apps.a]
middlewares = ["outer", "inner"]
handler = { kind = "echo" }
[middlewares.outer]
kind = "headers"
response.set = { "x-layer" = "outer" }
request.add = { "x-trail" = "outer" }
[middlewares.inner]
kind = "headers"
response.set = { "x-layer" = "inner" }
request.add = { "x-trail" = "inner" }
"#,
    )
    .await;
    let (status, headers, body) = get(server.local_addr("main").unwrap(), None, "/").await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-layer"], "outer");
    // And the outermost sees the request first.
    let trail: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("x-trail: "))
        .collect();
    assert_eq!(trail, ["outer", "inner"]);
}

#[tokio::test]
async fn headers_reach_parapets_own_404_and_502() {
    let dead = dead_address().await;
    let server = start(&format!(
        r#"
[listeners.main]
bind = "127.0.0.1:0"
middlewares = ["secure"]
[[routes]]
path = "/api"
app = "api"
[apps.api]
middlewares = ["tag"]
upstream = "down"
[upstreams.down]
servers = ["http://{dead}"]
[middlewares.secure]
kind = "headers"
response.set = {{ "x-frame-options" = "DENY" }}
[middlewares.tag]
kind = "headers"
response.add = {{ "x-app" = "api" }}
"#
    ))
    .await;
    let addr = server.local_addr("main").unwrap();
    let (status, headers, _) = get(addr, None, "/nothing").await;
    assert_eq!(status, 404);
    assert_eq!(headers["x-frame-options"], "DENY");
    let (status, headers, _) = get(addr, None, "/api/x").await;
    assert_eq!(status, 502);
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-app"], "api");
}

fn compress_config(extra: &str) -> String {
    format!(
        r#"
[listeners.main]
bind = "127.0.0.1:0"
[[routes]]
path = "/text"
app = "text"
[[routes]]
path = "/small"
app = "small"
[[routes]]
path = "/encoded"
app = "encoded"
[apps.text]
middlewares = ["compress"]
handler = {{ kind = "text20k" }}
[apps.small]
middlewares = ["compress"]
handler = {{ kind = "respond", body = "tiny", headers = {{ "content-type" = "text/plain" }} }}
[apps.encoded]
middlewares = ["compress"]
handler = {{ kind = "respond", body = "{body}", headers = {{ "content-type" = "text/plain", "content-encoding" = "br" }} }}
{extra}
"#,
        body = "x".repeat(1000)
    )
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    accept: &str,
) -> (u16, http::HeaderMap, Bytes) {
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("accept-encoding", accept)
        .body(Body::empty())
        .unwrap();
    let response = client().request(req).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn gzip_of_20_kb_text_decompresses_to_the_same_bytes_with_vary() {
    let server = start_with(&compress_config(""), &registry()).await;
    let addr = server.local_addr("main").unwrap();
    let (status, headers, body) = request(addr, "GET", "/text", "gzip, deflate").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-encoding"], "gzip");
    assert_eq!(headers["vary"], "accept-encoding");
    assert!(headers.get("content-length").is_none());
    assert!(body.len() < 10_000, "{}", body.len());
    assert_eq!(gunzip(&body), text_20k());
}

#[tokio::test]
async fn small_encoded_and_head_responses_are_not_compressed() {
    let server = start_with(&compress_config(""), &registry()).await;
    let addr = server.local_addr("main").unwrap();
    let (_, headers, body) = request(addr, "GET", "/small", "gzip").await;
    assert!(headers.get("content-encoding").is_none());
    assert_eq!(&body[..], b"tiny");
    let (_, headers, body) = request(addr, "GET", "/encoded", "gzip").await;
    assert_eq!(headers["content-encoding"], "br");
    assert_eq!(body.len(), 1000);
    let (status, headers, body) = request(addr, "HEAD", "/text", "gzip").await;
    assert_eq!(status, 200);
    assert!(headers.get("content-encoding").is_none());
    assert_eq!(headers["content-length"], "20000");
    assert!(body.is_empty());
}

#[tokio::test]
async fn an_sse_stream_through_compress_delivers_its_first_event_before_the_stream_ends() {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(Some(rx)));
    let up = upstream(move |_req| {
        let rx = rx.clone();
        async move {
            let rx = rx.lock().await.take().expect("one SSE request");
            let mut r = http::Response::new(channel_body(rx));
            r.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("text/event-stream"),
            );
            r
        }
    })
    .await;
    let server = start(&format!(
        r#"
[listeners.main]
bind = "127.0.0.1:0"
[[routes]]
app = "events"
[apps.events]
middlewares = ["compress"]
upstream = "events"
[upstreams.events]
servers = ["http://{up}"]
"#
    ))
    .await;
    let addr = server.local_addr("main").unwrap();
    let req = http::Request::get(format!("http://{addr}/events"))
        .header("accept-encoding", "gzip")
        .body(Body::empty())
        .unwrap();
    tx.send(Bytes::from_static(b"data: first\n\n"))
        .await
        .unwrap();
    let response = client().request(req).await.unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let mut body = response.into_body();
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    // The stream is still open (tx is alive): the first event must arrive anyway.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let frame = tokio::time::timeout_at(deadline.into(), body.frame())
            .await
            .expect("the first event arrives while the stream is open")
            .unwrap()
            .unwrap();
        use std::io::Write;
        decoder.write_all(frame.data_ref().unwrap()).unwrap();
        decoder.flush().unwrap();
        if decoder.get_ref().ends_with(b"data: first\n\n") {
            break;
        }
    }
    tx.send(Bytes::from_static(b"data: second\n\n"))
        .await
        .unwrap();
    drop(tx);
    while let Some(frame) = body.frame().await {
        use std::io::Write;
        decoder
            .write_all(frame.unwrap().data_ref().unwrap())
            .unwrap();
    }
    assert_eq!(
        decoder.finish().unwrap(),
        b"data: first\n\ndata: second\n\n"
    );
}

fn panic_config(chain: &str) -> String {
    format!(
        r#"
[listeners.main]
bind = "127.0.0.1:0"
[[routes]]
app = "p"
[apps.p]
middlewares = {chain}
handler = {{ kind = "panics" }}
"#
    )
}

#[tokio::test]
async fn a_panicking_handler_gives_a_500_and_the_next_request_succeeds() {
    for chain in [r#"["errors"]"#, "[]"] {
        let server = start_with(&panic_config(chain), &registry()).await;
        let addr = server.local_addr("main").unwrap();
        let (status, _, _) = get(addr, None, "/boom").await;
        assert_eq!(status, 500, "with middlewares = {chain}");
        let (status, _, body) = get(addr, None, "/fine").await;
        assert_eq!(
            (status, body.as_str()),
            (200, "fine"),
            "with middlewares = {chain}"
        );
    }
}

#[tokio::test]
async fn a_body_that_fails_mid_way_aborts_the_client_connection() {
    let server = start_with(
        r#"
[listeners.main]
bind = "127.0.0.1:0"
[[routes]]
app = "b"
[[routes]]
path = "/ok"
app = "ok"
[apps.b]
middlewares = ["errors", "compress"]
handler = { kind = "breaks" }
[apps.ok]
handler = { kind = "respond", body = "ok" }
"#,
        &registry(),
    )
    .await;
    let addr = server.local_addr("main").unwrap();
    let req = http::Request::get(format!("http://{addr}/"))
        .body(Body::empty())
        .unwrap();
    // The head may or may not have left before the abort; either way the client sees an error,
    // never a clean end.
    match client().request(req).await {
        Ok(response) => {
            assert_eq!(response.status(), 200);
            assert!(
                response.into_body().collect().await.is_err(),
                "a broken body ended cleanly"
            );
        }
        Err(err) => assert!(!err.is_connect(), "{err}"),
    }
    // The process serves on.
    assert_eq!(get(addr, None, "/ok").await.2, "ok");
}

fn log_path() -> PathBuf {
    temp_dir().join("access.log")
}

/// `[middlewares.log]`: a json access log written to `path`.
fn json_log(path: &std::path::Path) -> String {
    format!(
        "[middlewares.log]\nkind = \"access_log\"\nformat = \"json\"\npath = \"{}\"\n",
        path.display()
    )
}

/// The log's lines once `n` are there (lines are written when responses end, by a writer thread).
async fn log_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        parapet_middlewares::host::flush_all();
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<_> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines
                .iter()
                .map(|l| {
                    serde_json::from_str(l)
                        .unwrap_or_else(|e| panic!("unparseable line {l:?}: {e}"))
                })
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} log lines, have:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_json_access_log_has_one_parseable_line_per_request_with_the_final_status() {
    let path = log_path();
    let up = upstream(|_req| async { text(503, "busy") }).await;
    let server = start_with(
        &format!(
            r#"
[listeners.main]
bind = "127.0.0.1:0"
middlewares = ["log"]
[[routes]]
path = "/up"
app = "up"
[[routes]]
path = "/boom"
app = "p"
[apps.up]
upstream = "up"
[apps.p]
middlewares = ["errors"]
handler = {{ kind = "panics" }}
[upstreams.up]
servers = ["http://{up}"]
{log}
"#,
            log = json_log(&path)
        ),
        &registry(),
    )
    .await;
    let addr = server.local_addr("main").unwrap();
    assert_eq!(get(addr, None, "/up/x").await.0, 503);
    assert_eq!(get(addr, None, "/nowhere").await.0, 404);
    assert_eq!(get(addr, None, "/boom").await.0, 500);
    let lines = log_lines(&path, 3).await;
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["status"], 503);
    assert_eq!(lines[0]["upstream_status"], 503);
    assert_eq!(lines[0]["upstream"], format!("http://{up}"));
    assert_eq!(lines[0]["error_by"], "upstream");
    assert_eq!(lines[0]["bytes"], 4);
    assert_eq!(lines[0]["target"], "/up/x");
    assert_eq!(lines[0]["remote"], "127.0.0.1");
    assert_eq!(lines[1]["status"], 404);
    assert_eq!(lines[1]["error_by"], "gateway");
    assert_eq!(lines[1]["error"], "no_route");
    assert_eq!(lines[2]["status"], 500);
    assert_eq!(lines[2]["error"], "internal");
}

#[tokio::test]
async fn a_client_that_goes_away_is_logged_as_499() {
    let path = log_path();
    let (silent, mut arrived) = silent_upstream_reporting().await;
    let server = start(&format!(
        r#"
[listeners.main]
bind = "127.0.0.1:0"
[[routes]]
app = "slow"
[apps.slow]
middlewares = ["log"]
upstream = "slow"
[upstreams.slow]
servers = ["http://{silent}"]
{log}
"#,
        log = json_log(&path)
    ))
    .await;
    let addr = server.local_addr("main").unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /waiting HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        // The request reaches the silent upstream, then the client hangs up.
        tokio::time::timeout(Duration::from_secs(10), arrived.recv())
            .await
            .expect("the request reaches the upstream");
    }
    let lines = log_lines(&path, 1).await;
    assert_eq!(lines[0]["status"], 499);
    assert_eq!(lines[0]["target"], "/waiting");
}

#[tokio::test]
async fn an_access_log_inside_the_panic_capture_logs_the_500() {
    for chain in [r#"["errors", "log"]"#, r#"["log"]"#] {
        let path = log_path();
        let server = start_with(
            &format!(
                r#"
[listeners.main]
bind = "127.0.0.1:0"
[[routes]]
app = "p"
[apps.p]
middlewares = {chain}
handler = {{ kind = "panics" }}
{log}
"#,
                log = json_log(&path)
            ),
            &registry(),
        )
        .await;
        assert_eq!(
            get(server.local_addr("main").unwrap(), None, "/boom")
                .await
                .0,
            500
        );
        let lines = log_lines(&path, 1).await;
        assert_eq!(lines[0]["status"], 500, "with middlewares = {chain}");
    }
}

#[tokio::test]
async fn a_static_file_sent_whole_is_logged_with_its_status_not_499() {
    let path = log_path();
    let root = temp_dir();
    std::fs::write(root.join("page.html"), "<p>whole</p>").unwrap();
    let server = start(&format!(
        r#"
[listeners.main]
bind = "127.0.0.1:0"
middlewares = ["log"]
[[routes]]
app = "site"
[apps.site]
handler = {{ kind = "static", root = "{}" }}
{log}
"#,
        root.display(),
        log = json_log(&path)
    ))
    .await;
    let (status, _, body) = get(server.local_addr("main").unwrap(), None, "/page.html").await;
    assert_eq!((status, body.as_str()), (200, "<p>whole</p>"));
    let lines = log_lines(&path, 1).await;
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["bytes"], 12);
}
