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
    assert_eq!(
        gunzip(&body::gzip_whole(gzip_backend(6, 0, false), b"").unwrap()),
        b""
    );
    let text = text_20k();
    let mut sizes = Vec::new();
    for level in [0, 1, 6, 9, 12] {
        let backend = gzip_backend(level, text.len(), false);
        let out = body::gzip_whole(backend, text.as_bytes()).unwrap();
        assert_eq!(gunzip(&out), text.as_bytes(), "level {level}");
        sizes.push(out.len());
    }
    // Out-of-range levels are clamped: 0 acts as 1, 12 as 9.
    assert_eq!(sizes[0], sizes[1]);
    assert_eq!(sizes[3], sizes[4]);
    assert!(sizes[3] <= sizes[1]);
}

/// Inputs of the sizes the mapping's thresholds and nginx's window steps fall between.
fn json_of(len: usize) -> Vec<u8> {
    (0..)
        .flat_map(|i| {
            format!("{{\"id\":{i},\"status\":\"active\",\"tags\":[\"a\",\"b\"]}},").into_bytes()
        })
        .take(len)
        .collect()
}

#[test]
fn the_level_mapping_gives_valid_gzip_for_every_backend_and_size() {
    let sizes = [
        0,
        1,
        100,
        250,
        251,
        1_000,
        JSON_ZLIB_MIN - 1,
        JSON_ZLIB_MIN,
        GZIP_LD4_BELOW - 1,
        GZIP_LD4_BELOW,
        SMALL_TABLES_BELOW - 1,
        SMALL_TABLES_BELOW,
        16_123,
        16_384,
        33_000,
        100_000,
        body::WHOLE_MAX as usize,
    ];
    let mut seen = std::collections::HashSet::new();
    for len in sizes {
        let input = json_of(len);
        for level in 1..=9 {
            for json in [false, true] {
                let backend = gzip_backend(level, len, json);
                seen.insert(backend);
                let out = body::gzip_whole(backend, &input).unwrap();
                assert_eq!(gunzip(&out), input, "{backend:?}, {len} bytes");
                // Every backend's gzip member, twice in a row: a reused compressor starts clean.
                let again = body::gzip_whole(backend, &input).unwrap();
                assert_eq!(out, again, "{backend:?}, {len} bytes");
            }
        }
    }
    // Each backend itself, at each of its levels, on a body that needs more than one output buffer's
    // worth of bound (incompressible bytes).
    let noise: Vec<u8> = (0u32..300_000)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for level in 1..=9 {
        for backend in [
            GzipBackend::Libdeflate(level),
            GzipBackend::LibdeflateSmall(level),
            GzipBackend::ZlibRs(level),
        ] {
            seen.insert(backend);
            let out = body::gzip_whole(backend, &noise).unwrap();
            assert_eq!(gunzip(&out), noise, "{backend:?}");
        }
    }
    assert!(seen.contains(&GzipBackend::ZlibRs(5)));
    assert!(seen.contains(&GzipBackend::Libdeflate(6)));
    assert!(seen.contains(&GzipBackend::LibdeflateSmall(4)));
    assert!(seen.contains(&GzipBackend::LibdeflateSmall(6)));
}

#[test]
fn the_small_tables_build_frames_gzip_as_libdeflate_does() {
    // The header (its XFL byte follows the level) and the trailer (CRC-32 and length) are those of
    // libdeflate's own gzip wrapper, at every level; only the deflate stream between may differ.
    let input = json_of(3_000);
    for level in 0..=12 {
        let small = body::gzip_whole(GzipBackend::LibdeflateSmall(level), &input).unwrap();
        let stock = body::gzip_whole(GzipBackend::Libdeflate(level), &input).unwrap();
        assert_eq!(gunzip(&small), input, "level {level}");
        assert_eq!(small[..10], stock[..10], "level {level}");
        assert_eq!(
            small[small.len() - 8..],
            stock[stock.len() - 8..],
            "level {level}"
        );
    }
    assert_eq!(
        gunzip(&body::gzip_whole(GzipBackend::LibdeflateSmall(6), b"").unwrap()),
        b""
    );
}

#[test]
fn the_small_tables_build_compresses_small_bodies_as_well_as_the_stock_build() {
    // Its tables are an eighth of the stock build's: below 16 KiB (where it is used) that must not
    // cost ratio (a few bytes where a collision changes a match, not a per cent). Real text
    // (this crate's Rust and vendored C sources, prose in their comments) and JSON, up to the
    // threshold.
    let texts: [&[u8]; 3] = [
        include_bytes!("mod.rs"),
        include_bytes!("../../libdeflate/lib/deflate_compress.c"),
        include_bytes!("body.rs"),
    ];
    let mut inputs: Vec<Vec<u8>> = vec![json_of(SMALL_TABLES_BELOW - 1)];
    for text in texts {
        for len in [1_000, 2_500, 6_000, SMALL_TABLES_BELOW - 1] {
            inputs.push(text[..len.min(text.len())].to_vec());
        }
    }
    for input in &inputs {
        for level in [4, 6] {
            let small = body::gzip_whole(GzipBackend::LibdeflateSmall(level), input).unwrap();
            let stock = body::gzip_whole(GzipBackend::Libdeflate(level), input).unwrap();
            assert!(
                small.len() <= stock.len() + stock.len() / 100 + 4,
                "level {level}, {} bytes: {} against {}",
                input.len(),
                small.len(),
                stock.len()
            );
        }
    }
}

#[test]
fn level_6_picks_its_backend_by_length_and_json() {
    use GzipBackend::{Libdeflate, LibdeflateSmall, ZlibRs};
    assert_eq!(gzip_backend(6, 100_000, true), ZlibRs(5));
    assert_eq!(gzip_backend(6, JSON_ZLIB_MIN, true), ZlibRs(5));
    assert_eq!(gzip_backend(6, JSON_ZLIB_MIN - 1, true), LibdeflateSmall(6));
    assert_eq!(gzip_backend(6, 100_000, false), Libdeflate(6));
    assert_eq!(gzip_backend(6, GZIP_LD4_BELOW, false), LibdeflateSmall(5));
    assert_eq!(
        gzip_backend(6, GZIP_LD5_BELOW - 1, false),
        LibdeflateSmall(5)
    );
    assert_eq!(GZIP_LD5_BELOW, SMALL_TABLES_BELOW);
    // JSON in the level-5 range is zlib-rs's, not libdeflate 5's.
    assert_eq!(gzip_backend(6, GZIP_LD5_BELOW - 1, true), ZlibRs(5));
    assert_eq!(gzip_backend(6, SMALL_TABLES_BELOW, false), Libdeflate(6));
    assert_eq!(
        gzip_backend(6, GZIP_LD4_BELOW - 1, false),
        LibdeflateSmall(4)
    );
    assert_eq!(gzip_backend(6, 0, false), LibdeflateSmall(4));
    assert_eq!(gzip_backend(7, 1_000, false), LibdeflateSmall(7));
    assert_eq!(
        gzip_backend(7, SMALL_TABLES_BELOW - 1, false),
        LibdeflateSmall(7)
    );
    assert_eq!(gzip_backend(7, SMALL_TABLES_BELOW, false), Libdeflate(7));
    assert_eq!(gzip_backend(5, 100_000, true), Libdeflate(5));
    assert_eq!(gzip_backend(0, 10, false), LibdeflateSmall(1));
    assert_eq!(gzip_backend(12, 100_000, false), Libdeflate(9));
}

#[test]
fn json_content_types_are_recognised() {
    let json = |ct: &'static str| {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        is_json(&h)
    };
    assert!(json("application/json"));
    assert!(json("application/json; charset=utf-8"));
    assert!(json("Application/JSON"));
    assert!(json("application/problem+json"));
    assert!(json("application/x-ndjson"));
    assert!(json("application/vnd.api+json"));
    assert!(!json("text/html"));
    assert!(!json("application/javascript"));
    assert!(!json("image/svg+xml"));
    assert!(!json("json"));
    assert!(!is_json(&HeaderMap::new()));
}

#[tokio::test]
async fn a_json_body_of_known_length_is_gzipped_whole_and_round_trips() {
    let input = json_of(50_000);
    let res = run(
        CompressConfig::default(),
        get("gzip"),
        200,
        &[("content-type", "application/json")],
        Body::from(Bytes::from(input.clone())),
    )
    .await;
    assert_eq!(res.headers()["content-encoding"], "gzip");
    let out = bytes(res).await;
    assert_eq!(gunzip(&out), input);
    let direct = body::gzip_whole(GzipBackend::ZlibRs(5), &input).unwrap();
    assert_eq!(out, direct);
}

#[test]
fn zlib_windows_shrink_with_the_body_as_nginx_sizes_them() {
    // nginx: while (length < (1 << (wbits - 1)) - 262) wbits--;
    assert_eq!(body::window_bits(0), 9);
    assert_eq!(body::window_bits(1_000), 11);
    assert_eq!(body::window_bits(4_096), 13);
    assert_eq!(body::window_bits(8_192 - 263), 13);
    assert_eq!(body::window_bits(8_192 - 262), 14);
    assert_eq!(body::window_bits(16_384 - 262), 15);
    assert_eq!(body::window_bits(1 << 20), 15);
}
