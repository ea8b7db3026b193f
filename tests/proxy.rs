//! The upstream endpoint through the real server: forwarding, header rules, errors and streaming.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use http_body_util::BodyExt;
use parapet::Body;

fn proxy_config(servers: &[SocketAddr], extra: &str) -> String {
    let servers: Vec<String> = servers.iter().map(|a| format!("\"http://{a}\"")).collect();
    upstream_config(&servers, extra)
}

/// An upstream that answers with the request it received, as text.
async fn mirror() -> SocketAddr {
    upstream(|req: http::Request<hyper::body::Incoming>| async move {
        let mut seen = format!("{} {}\n", req.method(), req.uri());
        for (k, v) in req.headers() {
            seen.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
        }
        text(200, seen)
    })
    .await
}

/// A gateway with one worker in front of [`mirror`], and its listener's address: a test of what one
/// thread keeps from request to request.
async fn mirrored_on_one_worker() -> (parapet::Server, SocketAddr) {
    let up = mirror().await;
    let server = start(&proxy_config(&[up], "[server]\nworkers = 1")).await;
    let addr = server.local_addr("main").unwrap();
    (server, addr)
}

fn header_lines(body: &str, name: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn requests_reach_the_upstream_with_path_query_and_host() {
    let up = mirror().await;
    let server = start(&proxy_config(&[up], "")).await;
    let addr = server.local_addr("main").unwrap();
    let (status, _, body) = get(addr, Some("shop.example"), "/a/b?c=d&e").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("GET /a/b?c=d&e\n"), "{body}");
    assert_eq!(header_lines(&body, "host"), ["shop.example"]);
}

#[tokio::test]
async fn hop_by_hop_request_headers_and_connection_named_ones_are_not_forwarded() {
    let up = mirror().await;
    let server = start(&proxy_config(&[up], "")).await;
    let addr = server.local_addr("main").unwrap();
    let answer = raw_request(
        addr,
        b"GET / HTTP/1.1\r\nhost: a.test\r\nconnection: close, x-secret\r\nconnection: X-Other\r\n\
          x-secret: 1\r\nx-other: 2\r\nkeep-alive: timeout=5\r\nte: trailers\r\nupgrade: h2c\r\n\
          proxy-authorization: basic abc\r\nx-kept: yes\r\n\r\n",
    )
    .await;
    let body = answer.split("\r\n\r\n").nth(1).unwrap().to_lowercase();
    for gone in [
        "x-secret",
        "x-other",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
    ] {
        assert!(
            header_lines(&body, gone).is_empty(),
            "{gone} was forwarded:\n{body}"
        );
    }
    assert!(!body.contains("\nconnection:"), "{body}");
    assert_eq!(header_lines(&body, "x-kept"), ["yes"]);
}

#[tokio::test]
async fn hop_by_hop_response_headers_and_connection_named_ones_are_not_returned() {
    let up = raw_upstream(
        b"HTTP/1.1 200 OK\r\nconnection: x-internal\r\nconnection: keep-alive, X-Debug\r\n\
          x-internal: 1\r\nx-debug: 2\r\nkeep-alive: timeout=5\r\nproxy-authenticate: basic\r\n\
          x-kept: yes\r\ncontent-length: 2\r\n\r\nok",
    )
    .await;
    let server = start(&proxy_config(&[up], "")).await;
    let addr = server.local_addr("main").unwrap();
    let (status, headers, body) = get(addr, None, "/").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    for gone in [
        "x-internal",
        "x-debug",
        "keep-alive",
        "proxy-authenticate",
        "connection",
    ] {
        assert!(
            !headers.contains_key(gone),
            "{gone} was returned: {headers:?}"
        );
    }
    assert_eq!(headers["x-kept"], "yes");
}

#[tokio::test]
async fn x_forwarded_headers_from_an_untrusted_client_are_replaced() {
    let up = mirror().await;
    let server = start(&proxy_config(&[up], "")).await;
    let addr = server.local_addr("main").unwrap();
    let req = http::Request::get(format!("http://{addr}/"))
        .header("host", "site.example:8443")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .body(Body::empty())
        .unwrap();
    let (_, _, body) = send(req).await;
    assert_eq!(header_lines(&body, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(header_lines(&body, "x-forwarded-proto"), ["http"]);
    assert_eq!(
        header_lines(&body, "x-forwarded-host"),
        ["site.example:8443"]
    );
}

#[tokio::test]
async fn requests_are_spread_round_robin_over_servers() {
    let a = upstream(|_req| async { text(200, "a") }).await;
    let b = upstream(|_req| async { text(200, "b") }).await;
    let server = start(&proxy_config(&[a, b], "")).await;
    let addr = server.local_addr("main").unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(get(addr, None, "/").await.2);
    }
    seen.sort();
    assert_eq!(seen, ["a", "a", "b", "b"]);
}

#[tokio::test]
async fn an_upstream_that_refuses_connections_is_a_502() {
    let dead = dead_address().await;
    let server = start(&proxy_config(&[dead], "")).await;
    let addr = server.local_addr("main").unwrap();
    let (status, _, body) = get(addr, None, "/").await;
    assert_eq!(status, 502);
    assert_eq!(body, "502 Bad Gateway\n");
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_a_504_after_the_timeout() {
    let silent = silent_upstream().await;
    let server = start(&proxy_config(&[silent], "timeout = \"300ms\"")).await;
    let addr = server.local_addr("main").unwrap();
    let started = std::time::Instant::now();
    let (status, _, _) = get(addr, None, "/").await;
    assert_eq!(status, 504);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_pooled_connection_that_stops_answering_is_a_504_after_the_timeout() {
    // The second request goes on the first one's connection, whose timer is kept, not new.
    let up = upstream(|req: http::Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/stall" {
            std::future::pending::<()>().await;
        }
        text(200, "fast")
    })
    .await;
    let server = start(&proxy_config(&[up], "timeout = \"500ms\"")).await;
    let addr = server.local_addr("main").unwrap();
    assert_eq!(get(addr, None, "/fast").await.0, 200);
    // The timer stays armed for the first request's deadline, which now comes 300 ms into the
    // second one's wait: it must move on to the second one's own deadline then, not time it out.
    // (A pause in the scenario, not a wait for something to happen.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let (status, _, _) = get(addr, None, "/stall").await;
    assert_eq!(status, 504);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    // The stalled connection is gone; the next request gets a new one, in time.
    let started = std::time::Instant::now();
    assert_eq!(get(addr, None, "/fast").await.0, 200);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn no_field_of_one_exchange_shows_up_in_the_next() {
    // Header maps are reused from request to response to request (see `spare`): each must come
    // to its next use empty.
    let up = upstream(|req: http::Request<hyper::body::Incoming>| async move {
        let path = req.uri().path().to_owned();
        let saw_other = req.headers().keys().any(|k| {
            let k = k.as_str();
            (k.starts_with("x-req-") && k != format!("x-req{}", path.replace('/', "-")))
                || k.starts_with("x-res-")
        });
        let mut res = text(if saw_other { 500 } else { 200 }, "ok");
        let name = format!("x-res{}", path.replace('/', "-"));
        res.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_static("1"),
        );
        res
    })
    .await;
    let server = start(&proxy_config(&[up], "")).await;
    let addr = server.local_addr("main").unwrap();
    for round in 0..4 {
        for path in ["/a", "/b", "/c"] {
            let req = http::Request::get(format!("http://{addr}{path}"))
                .header(format!("x-req{}", path.replace('/', "-")), "1")
                .body(Body::empty())
                .unwrap();
            let (status, headers, _) = send(req).await;
            assert_eq!(
                status, 200,
                "round {round} {path}: the upstream saw another's field"
            );
            let theirs: Vec<_> = headers
                .keys()
                .filter(|k| k.as_str().starts_with("x-re"))
                .map(|k| k.as_str().to_owned())
                .collect();
            assert_eq!(
                theirs,
                [format!("x-res{}", path.replace('/', "-"))],
                "round {round}"
            );
        }
    }
}

#[tokio::test]
async fn each_request_is_forwarded_for_its_own_client() {
    // A request's extensions map is reused, its client's address slot with it (see `spare`): on one
    // worker, clients from three addresses in turn must each be named in their own request.
    let (_server, addr) = mirrored_on_one_worker().await;
    for round in 0..3 {
        for client in ["127.0.0.2", "127.0.0.3", "127.0.0.1"] {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(format!("{client}:0").parse().unwrap()).unwrap();
            let mut stream = socket.connect(addr).await.unwrap();
            let answer = exchange(
                &mut stream,
                b"GET /who HTTP/1.1\r\nhost: a.test\r\nconnection: close\r\n\r\n",
            )
            .await;
            let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
            assert_eq!(
                header_lines(body, "x-forwarded-for"),
                [client],
                "round {round}: {answer}"
            );
        }
    }
}

#[tokio::test]
async fn a_half_read_head_keeps_its_bytes_while_other_connections_are_served() {
    // Read buffers are the thread's between requests (see `spare`): one holding part of a head
    // stays its connection's until the head is whole, while the worker serves other connections.
    use tokio::io::AsyncWriteExt;
    let (_server, addr) = mirrored_on_one_worker().await;
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /slow HTTP/1.1\r\nhost: a.test\r\nx-pa")
        .await
        .unwrap();
    // Two requests on one keep-alive connection, then one on its own, each whole.
    let mut quick = tokio::net::TcpStream::connect(addr).await.unwrap();
    for i in 0..2 {
        quick
            .write_all(format!("GET /quick{i} HTTP/1.1\r\nhost: a.test\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains(&format!("GET /quick{i}\n")) {
            let mut chunk = [0u8; 4096];
            let n = tokio::io::AsyncReadExt::read(&mut quick, &mut chunk)
                .await
                .unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&chunk[..n]);
        }
    }
    let answer = raw_request(
        addr,
        b"GET /other HTTP/1.1\r\nhost: a.test\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.contains("GET /other\n"), "{answer}");
    let answer = exchange(&mut slow, b"rt: 1\r\nconnection: close\r\n\r\n").await;
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(body.starts_with("GET /slow\n"), "{answer}");
    assert_eq!(header_lines(body, "x-part"), ["1"]);
}

#[tokio::test]
async fn an_upstreams_own_5xx_passes_through_unchanged() {
    let up = upstream(|_req| async { text(503, "upstream is busy") }).await;
    let server = start(&proxy_config(&[up], "")).await;
    let addr = server.local_addr("main").unwrap();
    let (status, _, body) = get(addr, None, "/").await;
    assert_eq!((status, body.as_str()), (503, "upstream is busy"));
}

#[tokio::test]
async fn an_upstream_breaking_off_a_sized_body_is_an_error_for_the_client() {
    let up = raw_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\nonly a little").await;
    let server = start(&proxy_config(&[up], "")).await;
    let addr = server.local_addr("main").unwrap();
    let req = http::Request::get(format!("http://{addr}/"))
        .body(Body::empty())
        .unwrap();
    let response = client().request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.into_body().collect().await.is_err());
}

#[tokio::test]
async fn an_upstream_breaking_off_a_chunked_body_is_never_a_clean_end() {
    let up =
        raw_upstream(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n").await;
    let server = start(&proxy_config(&[up], "")).await;
    let addr = server.local_addr("main").unwrap();
    // Raw, to see exactly what parapet writes: never the terminating zero-size chunk.
    let answer = raw_request(addr, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.contains("hello"), "{answer}");
    assert!(
        !answer.ends_with("0\r\n\r\n"),
        "a truncated body ended cleanly:\n{answer}"
    );
}

#[tokio::test]
async fn h2c_clients_are_proxied_to_http1_upstreams() {
    let up = mirror().await;
    let server = start(&proxy_config(&[up], "")).await;
    let addr = server.local_addr("main").unwrap();
    let req = http::Request::post(format!("http://{addr}/h2?x=1"))
        .body(Body::from("over h2"))
        .unwrap();
    let response = h2c_client().request(req).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.starts_with("POST /h2?x=1\n"), "{body}");
    assert_eq!(header_lines(&body, "host"), [addr.to_string()]);
}

#[tokio::test]
async fn large_bodies_stream_both_ways_intact() {
    const CHUNKS: usize = 800; // 800 x 64 KiB = 50 MiB
    let up = upstream(|req: http::Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/upload" {
            let (hash, len) = hash_body(req.into_body()).await.unwrap();
            text(200, format!("{hash:x} {len}"))
        } else {
            http::Response::new(pattern_body(CHUNKS))
        }
    })
    .await;
    let server = start(&proxy_config(&[up], "")).await;
    let addr = server.local_addr("main").unwrap();
    let expected = pattern_hash(CHUNKS);

    let req = http::Request::post(format!("http://{addr}/upload"))
        .body(pattern_body(CHUNKS))
        .unwrap();
    let (status, _, body) = send(req).await;
    assert_eq!(status, 200);
    assert_eq!(body, format!("{expected:x} {}", CHUNKS * 64 * 1024));

    let req = http::Request::get(format!("http://{addr}/download"))
        .body(Body::empty())
        .unwrap();
    let response = client().request(req).await.unwrap();
    let (hash, len) = hash_body(response.into_body()).await.unwrap();
    assert_eq!((hash, len), (expected, CHUNKS * 64 * 1024));
}

#[tokio::test]
async fn the_upstream_is_told_the_host_the_request_was_routed_by() {
    let up = mirror().await;
    let server = start(&format!(
        r#"
[listeners.main]
bind = "127.0.0.1:0"
[[routes]]
host = "public.example"
app = "api"
[[routes]]
host = "admin.example"
app = "closed"
[apps.api]
upstream = "backend"
[apps.closed]
handler = {{ kind = "respond", status = 403 }}
[upstreams.backend]
servers = ["http://{up}"]
"#
    ))
    .await;
    let addr = server.local_addr("main").unwrap();
    // Absolute form: the URI's authority wins over Host (RFC 9112 §3.2.2), for routing and upstream.
    let answer = raw_request(
        addr,
        b"GET http://public.example/secret HTTP/1.1\r\nhost: admin.example\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(header_lines(body, "host"), ["public.example"]);
}

#[tokio::test]
async fn a_connection_still_uploading_is_not_reused_for_the_next_request() {
    // The upstream answers 401 at once, without reading the upload.
    let up = upstream(|req: http::Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/upload" {
            text(401, "")
        } else {
            text(200, "ok")
        }
    })
    .await;
    let server = start(&proxy_config(&[up], "timeout = \"5s\"")).await;
    let addr = server.local_addr("main").unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(1);
    tx.send(bytes::Bytes::from_static(b"the first part"))
        .await
        .unwrap();
    let req = http::Request::post(format!("http://{addr}/upload"))
        .body(channel_body(rx))
        .unwrap();
    let response = client().request(req).await.unwrap();
    assert_eq!(response.status(), 401);
    // The upload goes on; an unrelated request must not wait for that connection.
    let started = std::time::Instant::now();
    let (status, _, body) = get(addr, None, "/other").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "waited on a busy connection"
    );
    drop(tx);
}

#[tokio::test]
async fn a_client_that_sends_nothing_does_not_hold_up_shutdown() {
    let server = start(&proxy_config(&[dead_address().await], "")).await;
    let addr = server.local_addr("main").unwrap();
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = std::time::Instant::now();
    assert!(server.shutdown_within(Duration::from_secs(10)).await);
    assert!(started.elapsed() < Duration::from_secs(5));
}
