//! Every phase of a client connection is bounded in time, HTTP/2 included, and HTTP/2's limits hold
//! against hostile clients: a stalled request body (408), a client that stops reading, a partial or
//! lone HTTP/2 preface, an idle or silent HTTP/2 peer, rapid reset and CONTINUATION floods; and
//! `upstream.timeout` counts from the end of the request body. Durations are configured short (1-2 s)
//! and every wait for one has a generous margin.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `/big`'s size: more than loopback's socket buffers hold.
const BIG_CHUNKS: usize = 1024;
const BIG: usize = BIG_CHUNKS * 64 * 1024;

/// An upstream that answers `/big` with [`BIG`] bytes, `/silent` never (after reading the whole
/// request body), and anything else with the length of the request body it read.
async fn test_upstream() -> SocketAddr {
    upstream(|req: http::Request<hyper::body::Incoming>| async move {
        let path = req.uri().path().to_owned();
        if path == "/big" {
            return http::Response::new(pattern_body(BIG_CHUNKS));
        }
        let body = req.into_body().collect().await;
        if path == "/silent" {
            std::future::pending::<()>().await;
        }
        match body {
            Ok(body) => text(200, body.to_bytes().len().to_string()),
            Err(_) => text(400, "body broke"),
        }
    })
    .await
}

/// parapet with these `[server]` lines and this upstream `timeout`, proxying everything to
/// [`test_upstream`].
async fn gateway(server: &str, upstream_timeout: &str) -> (parapet::Server, SocketAddr) {
    let up = test_upstream().await;
    let toml = format!(
        r#"
[server]
{server}
[listeners.main]
bind = "127.0.0.1:0"
[[routes]]
app = "api"
[apps.api]
upstream = "backend"
[upstreams.backend]
servers = ["http://{up}"]
timeout = "{upstream_timeout}"
"#
    );
    let server = start(&toml).await;
    let addr = server.local_addr("main").unwrap();
    (server, addr)
}

/// Reads until the server closes `stream` (or resets it); returns what it sent and how long it took.
async fn until_closed(stream: &mut TcpStream) -> (Vec<u8>, Duration) {
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("closed within 20s");
    (got, t0.elapsed())
}

// HTTP/1.1: request bodies and slow readers.

#[tokio::test]
async fn a_request_body_that_stalls_is_answered_408_within_the_body_timeout() {
    let (_server, addr) = gateway(r#"body_timeout = "2s""#, "30s").await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\nhello")
        .await
        .unwrap();
    let (got, took) = until_closed(&mut stream).await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408 "), "{got}");
    // Counted to the second, never early.
    assert!(
        took >= Duration::from_millis(1900),
        "answered after {took:?}"
    );
    assert!(took < Duration::from_secs(6), "answered after {took:?}");
}

#[tokio::test]
async fn a_chunked_request_body_that_stalls_is_answered_408() {
    let (_server, addr) = gateway(r#"body_timeout = "1s""#, "30s").await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        .await
        .unwrap();
    let (got, took) = until_closed(&mut stream).await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408 "), "{got}");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
}

#[tokio::test]
async fn a_body_that_keeps_coming_slower_than_the_timeout_in_total_is_not_cut() {
    let (_server, addr) = gateway(r#"body_timeout = "1s""#, "30s").await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 8\r\n\r\n")
        .await
        .unwrap();
    // 8 bytes over about 3 s: every pause is shorter than the body timeout, the whole is not.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        stream.write_all(b"x").await.unwrap();
    }
    let mut got = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut got))
        .await
        .expect("answer within 10s")
        .unwrap();
    let got = String::from_utf8_lossy(&got[..n]);
    assert!(got.starts_with("HTTP/1.1 200 "), "{got}");
    assert!(got.ends_with("\r\n\r\n8"), "{got}");
}

#[tokio::test]
async fn a_client_that_stops_reading_a_large_answer_is_disconnected() {
    let (_server, addr) = gateway(r#"body_timeout = "1s""#, "30s").await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /big HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    // Not reading for longer than the body timeout (waiting for the timeout configured above):
    // parapet's writes wait on this client, and it gives up.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (got, _) = until_closed(&mut stream).await;
    assert!(
        got.starts_with(b"HTTP/1.1 200 "),
        "{:?}",
        String::from_utf8_lossy(&got[..got.len().min(200)])
    );
    assert!(
        got.len() < BIG,
        "the whole answer came: {} bytes",
        got.len()
    );
}

// HTTP/2 with prior knowledge (h2c): prefaces and idle connections.

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[tokio::test]
async fn a_partial_h2_preface_is_closed_within_the_header_timeout() {
    let (_server, addr) = gateway(r#"header_timeout = "1s""#, "30s").await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&PREFACE[..16]).await.unwrap();
    let (got, took) = until_closed(&mut stream).await;
    assert!(got.is_empty(), "{got:?}");
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
}

#[tokio::test]
async fn an_h2_preface_and_nothing_more_is_closed_within_the_header_timeout() {
    let (_server, addr) = gateway(r#"header_timeout = "1s""#, "30s").await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    let (_, took) = until_closed(&mut stream).await;
    assert!(took < Duration::from_secs(4), "closed after {took:?}");
}

/// An HTTP/2 client handshaken on a new connection; its connection task's result says how it ended.
async fn h2_client(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    (send, tokio::spawn(conn))
}

fn h2_get(path: &str) -> http::Request<()> {
    http::Request::get(format!("http://a{path}"))
        .body(())
        .unwrap()
}

#[tokio::test]
async fn an_h2_connection_that_opens_no_stream_is_closed_within_the_header_timeout() {
    let (_server, addr) = gateway(r#"header_timeout = "1s""#, "30s").await;
    let t0 = Instant::now();
    let (_send, conn) = h2_client(addr).await;
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("closed within 5s")
        .unwrap()
        .ok();
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn an_idle_h2_connection_is_closed_after_its_last_stream() {
    let (_server, addr) = gateway(r#"header_timeout = "1s""#, "30s").await;
    let (mut send, conn) = h2_client(addr).await;
    let (response, _) = send.send_request(h2_get("/"), true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        chunk.unwrap();
    }
    let t0 = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("closed within 5s")
        .unwrap()
        .ok();
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
}

// HTTP/2 frames written by hand, for what the `h2` client will not send.

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const SETTINGS: u8 = 0x4;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const RST_STREAM: u8 = 0x3;
const CANCEL: u32 = 0x8;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// HPACK for `GET http://a{path}` from the static table and literals (RFC 7541 appendix C).
fn request_block(path: &str) -> Vec<u8> {
    // :method GET, :scheme http, :authority "a" (literal, indexed name 1), :path (indexed name 4).
    let mut block = vec![0x82, 0x86, 0x41, 0x01, b'a', 0x44, path.len() as u8];
    block.extend_from_slice(path.as_bytes());
    block
}

/// The frames the server sends until it closes the connection: (type, flags, payload).
async fn frames_until_closed(stream: &mut TcpStream) -> (Vec<(u8, u8, Vec<u8>)>, Duration) {
    let (bytes, took) = until_closed(stream).await;
    let mut frames = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 9 {
        let len = (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
        if rest.len() < 9 + len {
            break;
        }
        frames.push((rest[3], rest[4], rest[9..9 + len].to_vec()));
        rest = &rest[9 + len..];
    }
    (frames, took)
}

fn goaway_error(frames: &[(u8, u8, Vec<u8>)]) -> Option<u32> {
    frames
        .iter()
        .find(|(kind, _, payload)| *kind == GOAWAY && payload.len() >= 8)
        .map(|(_, _, p)| u32::from_be_bytes([p[4], p[5], p[6], p[7]]))
}

#[tokio::test]
async fn a_continuation_flood_gets_goaway_enhance_your_calm() {
    let (_server, addr) = gateway("", "30s").await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    // A header block that never ends: HEADERS without END_HEADERS, then CONTINUATION after
    // CONTINUATION, each adding a little to the same literal.
    out.extend(frame(HEADERS, END_STREAM, 1, &request_block("/")));
    for _ in 0..50 {
        out.extend(frame(CONTINUATION, 0, 1, &[0x40, 0x01, b'x', 0x01, b'y']));
    }
    stream.write_all(&out).await.unwrap();
    let (frames, _) = frames_until_closed(&mut stream).await;
    assert_eq!(goaway_error(&frames), Some(ENHANCE_YOUR_CALM), "{frames:?}");
}

#[tokio::test]
async fn a_silent_h2_peer_with_a_stream_open_is_pinged_then_closed() {
    // The stream waits on a silent upstream for up to 30 s: only the PINGs can end it sooner.
    let (_server, addr) = gateway(r#"header_timeout = "1s""#, "30s").await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out.extend(frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &request_block("/silent"),
    ));
    stream.write_all(&out).await.unwrap();
    // This client acknowledges nothing, PINGs included.
    let (frames, took) = frames_until_closed(&mut stream).await;
    assert!(
        frames
            .iter()
            .any(|(kind, flags, _)| *kind == PING && flags & 1 == 0),
        "no PING: {frames:?}"
    );
    assert!(took < Duration::from_secs(8), "closed after {took:?}");
}

#[tokio::test]
async fn a_rapid_reset_burst_gets_goaway_and_others_are_still_served() {
    let (_server, addr) = gateway("", "30s").await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // Stream after stream opened and at once reset by the client (CVE-2023-44487), in one write so
    // parapet reads them together, as an attacker sends them.
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    for i in 0..200u32 {
        let id = 2 * i + 1;
        out.extend(frame(HEADERS, END_HEADERS, id, &request_block("/")));
        out.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
    }
    stream.write_all(&out).await.unwrap();
    let (frames, took) = frames_until_closed(&mut stream).await;
    assert_eq!(goaway_error(&frames), Some(ENHANCE_YOUR_CALM), "{frames:?}");
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    // Another client is served as usual, on HTTP/2 and HTTP/1.1.
    let (mut send, _conn) = h2_client(addr).await;
    let (response, _) = send.send_request(h2_get("/"), true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    let (status, _, body) = get(addr, Some("a"), "/").await;
    assert_eq!((status, body.as_str()), (200, "0"));
}

// The upstream timeout counts from the end of the request body.

/// A request body of `pieces` chunks of 1 KiB, one every `every`.
fn paced_body(pieces: usize, every: Duration) -> parapet::Body {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        for _ in 0..pieces {
            tokio::time::sleep(every).await;
            if tx.send(Bytes::from(vec![b'u'; 1024])).await.is_err() {
                return;
            }
        }
    });
    channel_body(rx)
}

#[tokio::test]
async fn a_long_upload_to_an_upstream_with_a_short_timeout_succeeds() {
    let (_server, addr) = gateway("", "1s").await;
    // 3 s of body, a piece every 250 ms, to an upstream whose timeout is 1 s.
    let req = http::Request::post(format!("http://{addr}/"))
        .header("host", "a")
        .body(paced_body(12, Duration::from_millis(250)))
        .unwrap();
    let (status, _, body) = send(req).await;
    assert_eq!((status, body.as_str()), (200, "12288"));
}

#[tokio::test]
async fn the_upstream_timeout_still_runs_from_the_end_of_the_upload() {
    let (_server, addr) = gateway("", "1s").await;
    let t0 = Instant::now();
    let req = http::Request::post(format!("http://{addr}/silent"))
        .header("host", "a")
        .body(paced_body(8, Duration::from_millis(250)))
        .unwrap();
    let (status, _, _) = send(req).await;
    let took = t0.elapsed();
    assert_eq!(status, 504);
    // 2 s of upload, then the 1 s timeout.
    assert!(
        took >= Duration::from_millis(2900),
        "answered after {took:?}"
    );
    assert!(took < Duration::from_secs(6), "answered after {took:?}");
}

#[tokio::test]
async fn an_h2_body_that_stalls_is_cut_even_while_the_peer_answers_pings() {
    // PINGs every second (header_timeout), answered by the client: they must not hide the stall.
    let (_server, addr) = gateway("header_timeout = \"1s\"\nbody_timeout = \"3s\"", "30s").await;
    let (mut send, conn) = h2_client(addr).await;
    let request = http::Request::post("http://a/upload").body(()).unwrap();
    let (response, mut body) = send.send_request(request, false).unwrap();
    body.send_data(Bytes::from_static(b"the start of a body"), false)
        .unwrap();
    let t0 = Instant::now();
    // Then nothing more: the stream (and with it the connection) is ended by body_timeout.
    let ended = tokio::time::timeout(Duration::from_secs(12), async {
        let _ = response.await;
        let _ = conn.await;
    })
    .await;
    assert!(ended.is_ok(), "still open after 12 s");
    let took = t0.elapsed();
    assert!(took >= Duration::from_secs(2), "cut early: {took:?}");
}

#[tokio::test]
async fn an_h2_client_that_never_opens_its_window_is_closed_by_the_body_timeout() {
    let (_server, addr) = gateway("header_timeout = \"1s\"\nbody_timeout = \"3s\"", "30s").await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    // A window of 0: parapet may not send a byte of any body, and the client answers PINGs.
    let (mut send, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let (response, _) = send.send_request(h2_get("/big"), true).unwrap();
    let t0 = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(12), async {
        if let Ok(response) = response.await {
            let mut body = response.into_body();
            while let Some(Ok(_)) = body.data().await {}
        }
        let _ = conn.await;
    })
    .await;
    assert!(ended.is_ok(), "still open after 12 s");
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "cut early: {:?}",
        t0.elapsed()
    );
}
