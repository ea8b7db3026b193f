//! parapet's own HTTP/1.1 upstream client (`src/proxy/h1.rs`, for requests without a body) against
//! raw upstreams that write exact bytes: body framing, interim responses, keep-alive and its limits,
//! stale connections, and response heads it must refuse.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use http_body_util::BodyExt;
use parapet::Body;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What a scripted upstream does with a request: bytes to write, then whether to close.
struct Reply {
    bytes: Vec<u8>,
    close: bool,
}

fn reply(bytes: &[u8]) -> Reply {
    Reply {
        bytes: bytes.to_vec(),
        close: false,
    }
}

fn reply_and_close(bytes: &[u8]) -> Reply {
    Reply {
        bytes: bytes.to_vec(),
        close: true,
    }
}

/// An upstream answering the `n`th request head of its `c`th connection with `script(c, n)`
/// (requests here have no body: a head ends at the empty line). Returns its address and the number
/// of connections it accepted.
async fn scripted<F>(script: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(usize, usize) -> Reply + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let script = Arc::new(script);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let c = count.fetch_add(1, Ordering::SeqCst);
            let script = Arc::clone(&script);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                let mut n = 0;
                loop {
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let reply = script(c, n);
                        n += 1;
                        if stream.write_all(&reply.bytes).await.is_err() || reply.close {
                            return;
                        }
                    }
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => seen.extend_from_slice(&buf[..k]),
                    }
                }
            });
        }
    });
    (addr, accepted)
}

async fn proxy_to(up: SocketAddr) -> parapet::Server {
    start(&upstream_config(&[format!("\"http://{up}\"")], "")).await
}

/// A request through parapet: status, headers and the whole body (or the body's error).
async fn fetch(
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> (u16, http::HeaderMap, Result<Vec<u8>, String>) {
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Body::empty())
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(20), client().request(req))
        .await
        .expect("an answer within 20 s")
        .expect("a response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = tokio::time::timeout(Duration::from_secs(20), response.into_body().collect())
        .await
        .expect("the body ends within 20 s")
        .map(|b| b.to_bytes().to_vec())
        .map_err(|e| e.to_string());
    (status, headers, body)
}

#[tokio::test]
async fn sized_bodies_keep_one_connection_for_many_requests() {
    let (up, accepted) = scripted(|_, n| {
        let body = format!("answer {n}");
        reply(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    })
    .await;
    let server = proxy_to(up).await;
    let addr = server.local_addr("main").unwrap();
    for n in 0..20 {
        let (status, headers, body) = fetch(addr, "GET", "/").await;
        assert_eq!(status, 200);
        assert_eq!(body.unwrap(), format!("answer {n}").as_bytes());
        assert_eq!(
            headers["content-length"],
            format!("answer {n}").len().to_string()
        );
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one kept-alive connection"
    );
}

#[tokio::test]
async fn a_large_sized_body_streams_intact_and_its_connection_is_reused() {
    static BIG: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
        let mut r = b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n".to_vec();
        r.extend((0..1_048_576u32).map(|i| (i % 251) as u8));
        r
    });
    let (up, accepted) = scripted(|_, _| reply(&BIG)).await;
    let server = proxy_to(up).await;
    let addr = server.local_addr("main").unwrap();
    for _ in 0..3 {
        let (status, _, body) = fetch(addr, "GET", "/").await;
        assert_eq!(status, 200);
        let body = body.unwrap();
        assert_eq!(body.len(), 1_048_576);
        assert!(body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_chunked_body_with_extensions_and_trailers_is_decoded_and_the_connection_kept() {
    let (up, accepted) = scripted(|_, _| {
        reply(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
              5;name=value\r\nhello\r\n7 ; x\r\n, world\r\n0\r\nx-checksum: 42\r\n\r\n",
        )
    })
    .await;
    let server = proxy_to(up).await;
    let addr = server.local_addr("main").unwrap();
    for _ in 0..3 {
        let (status, _, body) = fetch(addr, "GET", "/").await;
        assert_eq!(status, 200);
        assert_eq!(body.unwrap(), b"hello, world");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_without_length_is_read_until_the_close_and_the_connection_not_reused() {
    let (up, accepted) = scripted(|_, _| {
        reply_and_close(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end")
    })
    .await;
    let server = proxy_to(up).await;
    let addr = server.local_addr("main").unwrap();
    for _ in 0..2 {
        let (status, _, body) = fetch(addr, "GET", "/").await;
        assert_eq!(status, 200);
        assert_eq!(body.unwrap(), b"until the end");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn head_204_and_304_answers_have_no_body_whatever_their_length_says() {
    let (up, accepted) = scripted(|_, n| match n % 3 {
        0 => reply(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"),
        1 => reply(b"HTTP/1.1 204 No Content\r\n\r\n"),
        _ => reply(b"HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n"),
    })
    .await;
    let server = proxy_to(up).await;
    let addr = server.local_addr("main").unwrap();
    let (status, headers, body) = fetch(addr, "HEAD", "/").await;
    assert_eq!((status, body.unwrap().len()), (200, 0));
    assert_eq!(headers["content-length"], "100");
    let (status, _, body) = fetch(addr, "GET", "/").await;
    assert_eq!((status, body.unwrap().len()), (204, 0));
    let (status, headers, body) = fetch(addr, "GET", "/").await;
    assert_eq!((status, body.unwrap().len()), (304, 0));
    assert_eq!(headers["etag"], "\"x\"");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "each left the connection clean"
    );
}

#[tokio::test]
async fn interim_responses_are_skipped_even_in_the_same_packet() {
    let (up, _) = scripted(|_, _| {
        reply(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n\
              HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        )
    })
    .await;
    let server = proxy_to(up).await;
    let addr = server.local_addr("main").unwrap();
    let (status, headers, body) = fetch(addr, "GET", "/").await;
    assert_eq!((status, body.unwrap()), (200, b"ok".to_vec()));
    assert!(
        headers.get("link").is_none(),
        "the 103's fields stay its own"
    );
}

#[tokio::test]
async fn connection_close_and_http_1_0_decide_reuse() {
    let (up, accepted) = scripted(|c, _| match c {
        // The first connection says close.
        0 => reply(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"),
        // HTTP/1.0 without keep-alive: closes by default.
        1 => reply(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"),
        // HTTP/1.0 asking for keep-alive: kept.
        _ => reply(b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok"),
    })
    .await;
    let server = proxy_to(up).await;
    let addr = server.local_addr("main").unwrap();
    for _ in 0..5 {
        let (status, headers, body) = fetch(addr, "GET", "/").await;
        assert_eq!((status, body.unwrap()), (200, b"ok".to_vec()));
        assert!(
            headers.get("connection").is_none(),
            "hop-by-hop, not returned"
        );
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn headers_a_connection_line_names_are_not_returned_to_the_client() {
    let (up, _) = scripted(|c, _| match c {
        // The usual `close` line, with a header named `Close` it also names.
        0 => reply_and_close(
            b"HTTP/1.1 200 OK\r\nclose: 1\r\nconnection: close\r\nx-kept: yes\r\ncontent-length: 2\r\n\r\nok",
        ),
        // A line naming a header of its own, with keep-alive.
        _ => reply(
            b"HTTP/1.1 200 OK\r\nx-secret: 1\r\nconnection: keep-alive, X-Secret\r\nkeep-alive: timeout=5\r\nx-kept: yes\r\ncontent-length: 2\r\n\r\nok",
        ),
    })
    .await;
    let server = proxy_to(up).await;
    let addr = server.local_addr("main").unwrap();
    for _ in 0..3 {
        let (status, headers, body) = fetch(addr, "GET", "/").await;
        assert_eq!((status, body.unwrap()), (200, b"ok".to_vec()));
        assert_eq!(headers["x-kept"], "yes");
        for hop in ["connection", "close", "x-secret", "keep-alive"] {
            assert!(headers.get(hop).is_none(), "{hop} returned: {headers:?}");
        }
    }
}

#[tokio::test]
async fn a_connection_with_bytes_after_its_response_is_not_reused() {
    let (up, accepted) =
        scripted(|_, _| reply(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA")).await;
    let server = proxy_to(up).await;
    let addr = server.local_addr("main").unwrap();
    for _ in 0..3 {
        let (status, _, body) = fetch(addr, "GET", "/").await;
        assert_eq!((status, body.unwrap()), (200, b"ok".to_vec()));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_idempotent_request_on_a_connection_closed_unanswered_goes_again_on_a_new_one() {
    // Every connection answers its first request and closes, unanswered, at the second: the
    // close races the request, as with a server's keep-alive timeout.
    let (up, accepted) = scripted(|_, n| {
        if n == 0 {
            reply(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        } else {
            reply_and_close(b"")
        }
    })
    .await;
    let server = proxy_to(up).await;
    let addr = server.local_addr("main").unwrap();
    for _ in 0..4 {
        let (status, _, body) = fetch(addr, "GET", "/").await;
        assert_eq!((status, body.unwrap()), (200, b"ok".to_vec()));
    }
    assert!(accepted.load(Ordering::SeqCst) >= 4);
}

#[tokio::test]
async fn a_post_on_a_connection_closed_unanswered_is_not_sent_twice() {
    let (up, _) = scripted(|_, n| {
        if n == 0 {
            reply(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        } else {
            reply_and_close(b"")
        }
    })
    .await;
    let server = proxy_to(up).await;
    let addr = server.local_addr("main").unwrap();
    let (status, _, _) = fetch(addr, "GET", "/").await;
    assert_eq!(status, 200);
    // The pooled connection looks alive; the POST is written and the server closes: it may have
    // acted on it, so it is not sent again.
    let (status, _, _) = fetch(addr, "POST", "/").await;
    assert_eq!(status, 502);
}

#[tokio::test]
async fn a_reason_phrase_of_the_upstreams_own_reaches_the_client() {
    let (up, _) =
        scripted(|_, _| reply(b"HTTP/1.1 200 Very Fine\r\ncontent-length: 2\r\n\r\nok")).await;
    let server = proxy_to(up).await;
    let addr = server.local_addr("main").unwrap();
    let answer = raw_request(
        addr,
        b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 Very Fine\r\n"), "{answer}");
}

#[tokio::test]
async fn response_heads_framed_ambiguously_or_malformed_are_a_502() {
    let many_fields: &'static [u8] = Box::leak(
        {
            let mut r = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..101 {
                r.extend_from_slice(format!("x-field-{i}: v\r\n").as_bytes());
            }
            r.extend_from_slice(b"content-length: 0\r\n\r\n");
            r
        }
        .into_boxed_slice(),
    );
    let huge_head: &'static [u8] = Box::leak(
        {
            let mut r = b"HTTP/1.1 200 OK\r\n".to_vec();
            for _ in 0..20 {
                r.extend_from_slice(b"x-big: ");
                r.extend(std::iter::repeat_n(b'a', 4000));
                r.extend_from_slice(b"\r\n");
            }
            r.extend_from_slice(b"content-length: 0\r\n\r\n");
            r
        }
        .into_boxed_slice(),
    );
    let cases: [(&str, &'static [u8]); 11] = [
        ("differing lengths", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok"),
        ("differing lengths in one line", b"HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\nok"),
        ("a valid length, then an invalid one", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: x\r\n\r\nok"),
        ("invalid length", b"HTTP/1.1 200 OK\r\ncontent-length: 2x\r\n\r\nok"),
        (
            "both framings",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ),
        ("chunked in HTTP/1.0", b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("not HTTP", b"SSH-2.0-OpenSSH_9.2\r\n\r\n"),
        ("bad status", b"HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n"),
        ("unasked 101", b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n"),
        ("101 fields", many_fields),
        ("80 KB head", huge_head),
    ];
    for (what, bytes) in cases {
        let (up, _) = scripted(move |_, _| reply(bytes)).await;
        let server = proxy_to(up).await;
        let addr = server.local_addr("main").unwrap();
        let (status, _, _) = fetch(addr, "GET", "/").await;
        assert_eq!(status, 502, "{what}");
        // And the proxy still serves.
        let (status, _, _) = fetch(addr, "GET", "/").await;
        assert_eq!(status, 502, "{what}, again");
    }
}

#[tokio::test]
async fn a_chunked_body_broken_mid_way_aborts_the_clients_response() {
    let (up, _) = scripted(|_, _| {
        reply_and_close(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX\r\n")
    })
    .await;
    let server = proxy_to(up).await;
    let addr = server.local_addr("main").unwrap();
    // The data before the break reaches the client (the break is reported at the poll after the
    // one that found it), then the connection is aborted: never a clean end.
    let (status, _, body) = fetch(addr, "GET", "/").await;
    assert_eq!(status, 200);
    assert!(body.is_err(), "broken framing is never a clean end");
    let answer = raw_request(addr, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(answer.contains("hello"), "{answer}");
    assert!(!answer.ends_with("0\r\n\r\n"), "ended cleanly:\n{answer}");
}
