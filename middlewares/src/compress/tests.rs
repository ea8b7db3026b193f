use super::*;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use tower::{Layer, ServiceExt};

fn text_20k() -> String {
    (0..2000)
        .map(|i| format!("line {i:05}\n"))
        .collect::<String>()[..20_000]
        .to_owned()
}

/// Answers with `body` and the given headers.
async fn run(
    config: CompressConfig,
    req: Request<Body>,
    status: u16,
    headers: &[(&'static str, &'static str)],
    body: Body,
) -> Response<Body> {
    let headers: Vec<_> = headers.to_vec();
    let body = std::sync::Mutex::new(Some(body));
    let inner = tower::service_fn(move |_req: Request<Body>| {
        let mut res = Response::new(body.lock().unwrap().take().unwrap());
        *res.status_mut() = StatusCode::from_u16(status).unwrap();
        for (k, v) in &headers {
            res.headers_mut().append(*k, HeaderValue::from_static(v));
        }
        async move { Ok::<_, Infallible>(res) }
    });
    CompressLayer::new(config)
        .layer(inner)
        .oneshot(req)
        .await
        .unwrap()
}

fn get(accept: &'static str) -> Request<Body> {
    Request::get("/")
        .header("accept-encoding", accept)
        .body(Body::empty())
        .unwrap()
}

async fn bytes(res: Response<Body>) -> Bytes {
    res.into_body().collect().await.unwrap().to_bytes()
}

fn vary_count(res: &Response<Body>) -> usize {
    res.headers().get_all("vary").iter().count()
}

#[tokio::test]
async fn gzip_of_20_kb_text_decompresses_to_the_same_bytes_with_vary() {
    let text = text_20k();
    let res = run(
        CompressConfig::default(),
        get("gzip"),
        200,
        &[
            ("content-type", "text/plain"),
            ("content-length", "20000"),
            ("accept-ranges", "bytes"),
        ],
        Body::from(text.clone()),
    )
    .await;
    assert_eq!(res.headers()["content-encoding"], "gzip");
    assert_eq!(res.headers()["vary"], "accept-encoding");
    assert!(res.headers().get("content-length").is_none());
    assert!(res.headers().get("accept-ranges").is_none());
    let compressed = bytes(res).await;
    assert!(compressed.len() < 20_000 / 3, "{}", compressed.len());
    let mut out = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, text);
}

#[tokio::test]
async fn br_and_zstd_round_trip_when_listed() {
    let text = text_20k();
    let config = CompressConfig {
        encodings: vec![Encoding::Zstd, Encoding::Br, Encoding::Gzip],
        ..CompressConfig::default()
    };
    let res = run(
        config.clone(),
        get("br"),
        200,
        &[("content-type", "application/json")],
        Body::from(text.clone()),
    )
    .await;
    assert_eq!(res.headers()["content-encoding"], "br");
    let compressed = bytes(res).await;
    let mut out = String::new();
    brotli::Decompressor::new(&compressed[..], 4096)
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, text);

    let res = run(
        config,
        get("gzip, br, zstd"),
        200,
        &[("content-type", "text/html")],
        Body::from(text.clone()),
    )
    .await;
    assert_eq!(res.headers()["content-encoding"], "zstd");
    let compressed = bytes(res).await;
    assert_eq!(zstd::decode_all(&compressed[..]).unwrap(), text.as_bytes());
}

#[tokio::test]
async fn bodies_below_min_size_are_not_compressed() {
    let res = run(
        CompressConfig::default(),
        get("gzip"),
        200,
        &[("content-type", "text/plain")],
        Body::from("tiny"),
    )
    .await;
    assert!(res.headers().get("content-encoding").is_none());
    assert_eq!(vary_count(&res), 0);
    assert_eq!(&bytes(res).await[..], b"tiny");
}

#[tokio::test]
async fn already_encoded_bodies_are_left_alone() {
    let res = run(
        CompressConfig::default(),
        get("gzip"),
        200,
        &[("content-type", "text/plain"), ("content-encoding", "br")],
        Body::from(text_20k()),
    )
    .await;
    assert_eq!(res.headers()["content-encoding"], "br");
    assert_eq!(bytes(res).await.len(), 20_000);
}

#[tokio::test]
async fn head_requests_are_not_compressed_but_vary() {
    let req = Request::head("/")
        .header("accept-encoding", "gzip")
        .body(Body::empty())
        .unwrap();
    let res = run(
        CompressConfig::default(),
        req,
        200,
        &[("content-type", "text/plain"), ("content-length", "20000")],
        Body::from(text_20k()),
    )
    .await;
    assert!(res.headers().get("content-encoding").is_none());
    assert_eq!(res.headers()["content-length"], "20000");
    assert_eq!(res.headers()["vary"], "accept-encoding");
}

#[tokio::test]
async fn no_transform_range_and_partial_content_are_not_compressed() {
    let res = run(
        CompressConfig::default(),
        get("gzip"),
        200,
        &[
            ("content-type", "text/plain"),
            ("cache-control", "public, no-transform"),
        ],
        Body::from(text_20k()),
    )
    .await;
    assert!(res.headers().get("content-encoding").is_none());

    let req = Request::get("/")
        .header("accept-encoding", "gzip")
        .header("range", "bytes=0-99")
        .body(Body::empty())
        .unwrap();
    let res = run(
        CompressConfig::default(),
        req,
        206,
        &[("content-type", "text/plain")],
        Body::from(text_20k()),
    )
    .await;
    assert!(res.headers().get("content-encoding").is_none());
}

#[tokio::test]
async fn types_outside_the_allow_list_are_not_compressed() {
    let res = run(
        CompressConfig::default(),
        get("gzip"),
        200,
        &[("content-type", "image/png")],
        Body::from(text_20k()),
    )
    .await;
    assert!(res.headers().get("content-encoding").is_none());
    assert_eq!(vary_count(&res), 0);
    let res = run(
        CompressConfig::default(),
        get("gzip"),
        200,
        &[("content-type", "application/vnd.api+json")],
        Body::from(text_20k()),
    )
    .await;
    assert_eq!(res.headers()["content-encoding"], "gzip");
}

#[tokio::test]
async fn a_refusing_client_gets_identity_with_vary() {
    let res = run(
        CompressConfig::default(),
        get("gzip;q=0, identity"),
        200,
        &[("content-type", "text/plain")],
        Body::from(text_20k()),
    )
    .await;
    assert!(res.headers().get("content-encoding").is_none());
    assert_eq!(res.headers()["vary"], "accept-encoding");
}

#[tokio::test]
async fn vary_is_never_duplicated() {
    let res = run(
        CompressConfig::default(),
        get("gzip"),
        200,
        &[
            ("content-type", "text/plain"),
            ("vary", "Origin, Accept-Encoding"),
        ],
        Body::from(text_20k()),
    )
    .await;
    assert_eq!(vary_count(&res), 1);
    assert_eq!(res.headers()["vary"], "Origin, Accept-Encoding");
}

#[tokio::test]
async fn strong_etags_become_weak_and_304s_vary() {
    let res = run(
        CompressConfig::default(),
        get("gzip"),
        200,
        &[("content-type", "text/plain"), ("etag", "\"v1\"")],
        Body::from(text_20k()),
    )
    .await;
    assert_eq!(res.headers()["etag"], "W/\"v1\"");
    let res = run(
        CompressConfig::default(),
        get("gzip"),
        304,
        &[("etag", "\"v1\"")],
        Body::empty(),
    )
    .await;
    assert_eq!(res.headers()["vary"], "accept-encoding");
    assert_eq!(res.headers()["etag"], "W/\"v1\"");
    assert!(res.headers().get("content-encoding").is_none());
}

/// A body fed by the test, frame by frame; of known length if given one.
struct Fed(tokio::sync::mpsc::Receiver<Frame<Bytes>>, Option<u64>);

impl http_body::Body for Fed {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(Ok))
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.1
            .map(http_body::SizeHint::with_exact)
            .unwrap_or_default()
    }
}

#[tokio::test]
async fn a_stream_is_flushed_whenever_its_source_pauses() {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let res = run(
        CompressConfig::default(),
        get("gzip"),
        200,
        &[("content-type", "text/event-stream")],
        Body::new(Fed(rx, None)),
    )
    .await;
    assert_eq!(res.headers()["content-encoding"], "gzip");
    let mut body = res.into_body();
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    for event in ["data: one\n\n", "data: two\n\n"] {
        tx.send(Frame::data(Bytes::from_static(event.as_bytes())))
            .await
            .unwrap();
        // The source now pauses: the event must come out without waiting for the stream's end.
        let frame = body.frame().await.unwrap().unwrap();
        decoder.write_all(frame.data_ref().unwrap()).unwrap();
        decoder.flush().unwrap();
        let seen = String::from_utf8_lossy(decoder.get_ref()).into_owned();
        assert!(seen.ends_with(event), "{seen:?}");
    }
    drop(tx);
    while let Some(frame) = body.frame().await {
        decoder
            .write_all(frame.unwrap().data_ref().unwrap())
            .unwrap();
    }
    assert_eq!(decoder.finish().unwrap(), b"data: one\n\ndata: two\n\n");
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[tokio::test]
async fn a_known_length_body_in_pieces_is_gzipped_whole_with_its_trailers() {
    let text = text_20k();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let res = run(
        CompressConfig::default(),
        get("gzip"),
        200,
        &[("content-type", "text/plain")],
        Body::new(Fed(rx, Some(text.len() as u64))),
    )
    .await;
    assert_eq!(res.headers()["content-encoding"], "gzip");
    let mut body = res.into_body();
    for piece in text.as_bytes().chunks(7_000) {
        tx.send(Frame::data(Bytes::copy_from_slice(piece)))
            .await
            .unwrap();
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("abc"));
    tx.send(Frame::trailers(trailers.clone())).await.unwrap();
    drop(tx);
    // One data frame: the whole body, compressed in one pass; then the trailers.
    let frame = body.frame().await.unwrap().unwrap();
    let compressed = frame.into_data().unwrap();
    assert_eq!(gunzip(&compressed), text.as_bytes());
    assert!(compressed.len() < 20_000 / 3, "{}", compressed.len());
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_trailers().unwrap(), trailers);
    assert!(body.frame().await.is_none());
}

#[tokio::test]
async fn known_length_bodies_over_the_whole_limit_stream_and_round_trip() {
    let big: Vec<u8> = text_20k()
        .into_bytes()
        .into_iter()
        .cycle()
        .take(body::WHOLE_MAX as usize + 1)
        .collect();
    let res = run(
        CompressConfig::default(),
        get("gzip"),
        200,
        &[("content-type", "text/plain")],
        Body::from(Bytes::from(big.clone())),
    )
    .await;
    assert_eq!(res.headers()["content-encoding"], "gzip");
    assert_eq!(gunzip(&bytes(res).await), big);
}

#[test]
fn whole_gzip_of_nothing_and_of_every_level_decodes() {
    assert_eq!(gunzip(&body::gzip_whole(6, b"").unwrap()), b"");
    let text = text_20k();
    let mut sizes = Vec::new();
    for level in [0, 1, 6, 9, 12] {
        let out = body::gzip_whole(level, text.as_bytes()).unwrap();
        assert_eq!(gunzip(&out), text.as_bytes(), "level {level}");
        sizes.push(out.len());
    }
    // Out-of-range levels are clamped: 0 acts as 1, 12 as 9.
    assert_eq!(sizes[0], sizes[1]);
    assert_eq!(sizes[3], sizes[4]);
    assert!(sizes[3] <= sizes[1]);
}
