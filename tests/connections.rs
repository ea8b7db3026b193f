//! HTTP/1.1 client connections: keep-alive, pipelining, and the release of an idle connection's
//! buffers (`server.idle_release`), which hands the socket from one hyper connection to the next.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The size of `/big`: more than loopback's socket buffers hold, so a reader that waits leaves most
/// of it in parapet.
const BIG: usize = 32 * 1024 * 1024;

/// parapet with the given `idle_release` and a 30 s head timeout, in front of the upstream of
/// [`gateway_with`].
async fn gateway(idle_release: &str) -> (parapet::Server, SocketAddr) {
    gateway_with(idle_release, "30s").await
}

/// Requests are proxied to an upstream answering `METHOD PATH BODY-LENGTH`, `/slow` after 3 s; `/big`
/// is an in-process handler answering [`BIG`] bytes in one piece, which hyper takes whole.
async fn gateway_with(idle_release: &str, header_timeout: &str) -> (parapet::Server, SocketAddr) {
    let up = upstream(|req: http::Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let line = format!("{} {}", req.method(), req.uri().path());
        let body = req.into_body().collect().await.unwrap().to_bytes();
        text(200, format!("{line} {}", body.len()))
    })
    .await;
    let mut registry = parapet::Registry::new();
    registry.register_service(
        "big",
        tower::service_fn(|_req: http::Request<parapet::Body>| async move {
            let body = parapet::Body::full(bytes::Bytes::from(vec![b'x'; BIG]));
            Ok::<_, std::convert::Infallible>(http::Response::new(body))
        }),
    );
    let toml = format!(
        r#"
[server]
header_timeout = "{header_timeout}"
idle_release = "{idle_release}"
[listeners.main]
bind = "127.0.0.1:0"
[[routes]]
path = "/big"
app = "big"
[apps.big]
handler = {{ kind = "big" }}
[[routes]]
app = "api"
[apps.api]
upstream = "backend"
[upstreams.backend]
servers = ["http://{up}"]
"#
    );
    let server = start_with(&toml, &registry).await;
    let addr = server.local_addr("main").unwrap();
    (server, addr)
}

/// Reads one response (its head and a Content-Length body) from `stream`, keeping what follows it in
/// `buf`; returns the head and the body.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> (String, String) {
    let read = async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().unwrap())
                    })
                    .expect("a content-length");
                if buf.len() >= end + 4 + length {
                    let body =
                        String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
                    buf.drain(..end + 4 + length);
                    return (head, body);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "closed early; read so far: {:?}",
                String::from_utf8_lossy(buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("a response within 20s")
}

fn keeps_alive(head: &str) {
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
}

#[tokio::test]
async fn one_connection_serves_request_after_request_across_releases() {
    for release in ["0s", "1s"] {
        let (_server, addr) = gateway(release).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        for i in 0..20 {
            let body = "x".repeat(i * 100);
            let request = format!(
                "POST /n{i} HTTP/1.1\r\nhost: a\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let (head, body) = read_response(&mut stream, &mut buf).await;
            keeps_alive(&head);
            assert_eq!(
                body,
                format!("POST /n{i} {}", i * 100),
                "idle_release {release}"
            );
        }
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (_server, addr) = gateway("0s").await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut pipeline = String::new();
    for i in 0..5 {
        pipeline.push_str(&format!("GET /p{i} HTTP/1.1\r\nhost: a\r\n\r\n"));
    }
    stream.write_all(pipeline.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    for i in 0..5 {
        let (head, body) = read_response(&mut stream, &mut buf).await;
        keeps_alive(&head);
        assert_eq!(body, format!("GET /p{i} 0"));
    }
}

#[tokio::test]
async fn a_request_begun_before_the_last_answer_survives_the_release() {
    let (_server, addr) = gateway("0s").await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The first request whole and the second's first half, in one write: the second's half is read
    // ahead by the connection that answers the first, and must be handed on when it is released.
    stream
        .write_all(
            b"GET /first HTTP/1.1\r\nhost: a\r\n\r\nPOST /second HTTP/1.1\r\nhost: a\r\ncontent-le",
        )
        .await
        .unwrap();
    let mut buf = Vec::new();
    let (head, body) = read_response(&mut stream, &mut buf).await;
    keeps_alive(&head);
    assert_eq!(body, "GET /first 0");
    stream.write_all(b"ngth: 3\r\n\r\nabc").await.unwrap();
    let (head, body) = read_response(&mut stream, &mut buf).await;
    keeps_alive(&head);
    assert_eq!(body, "POST /second 3");
}

#[tokio::test]
async fn a_head_sent_in_pieces_on_an_idle_connection_is_served() {
    let (_server, addr) = gateway("0s").await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    stream
        .write_all(b"GET /one HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let (_, body) = read_response(&mut stream, &mut buf).await;
    assert_eq!(body, "GET /one 0");
    for piece in [&b"GET /tw"[..], b"o HTTP/1.1\r\nho", b"st: a\r\n", b"\r\n"] {
        stream.write_all(piece).await.unwrap();
        stream.flush().await.unwrap();
        tokio::task::yield_now().await;
    }
    let (head, body) = read_response(&mut stream, &mut buf).await;
    keeps_alive(&head);
    assert_eq!(body, "GET /two 0");
}

#[tokio::test]
async fn released_idle_connections_close_at_shutdown_and_at_client_close() {
    let (server, addr) = gateway("0s").await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    idle.write_all(b"GET /a HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    read_response(&mut idle, &mut buf).await;
    // A client that leaves an idle connection: nothing to answer, nothing breaks.
    let mut gone = TcpStream::connect(addr).await.unwrap();
    gone.write_all(b"GET /b HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    read_response(&mut gone, &mut Vec::new()).await;
    drop(gone);
    assert!(
        server.shutdown_within(Duration::from_secs(10)).await,
        "every connection closed within the timeout"
    );
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut rest))
        .await
        .expect("the idle connection is closed")
        .unwrap_or(0);
    assert_eq!(
        n,
        0,
        "nothing more was sent: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[tokio::test]
async fn a_head_under_way_does_not_hold_up_shutdown() {
    // Not released while idle: the connection stays with the path that served its first request.
    let (server, addr) = gateway("10s").await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    // With the first request, the beginning of a next head that never ends (the header timeout is
    // 30 s): read by the time the first is answered.
    stream
        .write_all(b"GET /one HTTP/1.1\r\nhost: a\r\n\r\nGET /two HTTP/1.1\r\nho")
        .await
        .unwrap();
    let (_, body) = read_response(&mut stream, &mut buf).await;
    assert_eq!(body, "GET /one 0");
    let started = std::time::Instant::now();
    assert!(server.shutdown_within(Duration::from_secs(10)).await);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown waited {:?}",
        started.elapsed()
    );
    let (sent, _) = closed(&mut stream).await;
    assert_eq!(sent, "", "no answer to a head never finished");
}

#[tokio::test]
async fn http_1_0_and_connection_close_requests_are_answered_then_closed() {
    let (_server, addr) = gateway("0s").await;
    for request in [
        &b"GET /old HTTP/1.0\r\nhost: a\r\n\r\n"[..],
        b"GET /bye HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    ] {
        let answer = raw_request(addr, request).await;
        assert!(answer.starts_with("HTTP/1."), "{answer}");
        assert!(answer.ends_with(" 0"), "{answer}");
    }
}

/// Waits for the server to close `stream`; returns what it sent first and how long it took.
async fn closed(stream: &mut TcpStream) -> (String, Duration) {
    let t0 = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut rest))
        .await
        .expect("closed within 20s");
    (String::from_utf8_lossy(&rest).into_owned(), t0.elapsed())
}

#[tokio::test]
async fn a_head_that_never_completes_is_cut_off_at_the_header_timeout() {
    let (_server, addr) = gateway_with("1s", "2s").await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n")
        .await
        .unwrap();
    let (sent, took) = closed(&mut stream).await;
    assert_eq!(sent, "");
    assert!(took >= Duration::from_secs(1), "closed after {took:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_closes_at_the_header_timeout_released_or_not() {
    for release in ["0s", "10s"] {
        let (_server, addr) = gateway_with(release, "2s").await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = read_response(&mut stream, &mut buf).await;
        keeps_alive(&head);
        assert_eq!(body, "GET / 0");
        let (sent, took) = closed(&mut stream).await;
        assert_eq!(sent, "", "idle_release {release}");
        assert!(took >= Duration::from_secs(1), "closed after {took:?}");
    }
}

#[tokio::test]
async fn a_request_in_flight_is_not_cut_by_the_header_timeout() {
    let (_server, addr) = gateway_with("1s", "2s").await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut stream, &mut Vec::new()).await;
    keeps_alive(&head);
    assert_eq!(body, "GET /slow 0");
}

#[tokio::test]
async fn a_slow_reader_gets_the_whole_of_a_big_answer_past_the_header_timeout() {
    let (_server, addr) = gateway_with("1s", "2s").await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /big HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    // The reader stalls for longer than the head timeout: what parapet still has to write is not
    // idleness.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (head, body) = read_response(&mut stream, &mut Vec::new()).await;
    keeps_alive(&head);
    assert_eq!(body.len(), BIG);
}

#[tokio::test]
async fn with_reuse_port_two_servers_share_a_port() {
    let config = |addr: &str, reuse: bool| {
        format!(
            "[server]\nreuse_port = {reuse}\n[listeners.main]\nbind = \"{addr}\"\n[[routes]]\napp = \"a\"\n[apps.a]\nhandler = {{ kind = \"respond\", body = \"hi\" }}\n"
        )
    };
    let first = start(&config("127.0.0.1:0", true)).await;
    let addr = first.local_addr("main").unwrap();
    // Another process (here another server) binds the same port, as processes behind one port do.
    let second = start(&config(&addr.to_string(), true)).await;
    assert_eq!(second.local_addr("main"), Some(addr));
    let (status, _, body) = get(addr, None, "/").await;
    assert_eq!((status, body.as_str()), (200, "hi"));
    // Without it, the port is taken.
    let registry = parapet::Registry::new();
    let taken =
        parapet::Config::parse("t.toml", &config(&addr.to_string(), false), &registry).unwrap();
    assert!(parapet::Server::start(taken, registry).await.is_err());
}

#[tokio::test]
async fn an_http2_connection_finishes_its_stream_in_flight_and_closes_at_shutdown() {
    let (server, addr) = gateway("10s").await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    // A first exchange, so the connection is being served (not sniffed) when the drain begins.
    let get = |path: &str| {
        http::Request::get(format!("http://a{path}"))
            .body(())
            .unwrap()
    };
    let (response, _) = send.send_request(get("/fast"), true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    send = send.ready().await.unwrap();
    // A request the upstream answers after 3 s, in flight when the listener drains.
    let (slow, _) = send.send_request(get("/slow"), true).unwrap();
    let slow = tokio::spawn(async move {
        let response = slow.await.unwrap();
        let status = response.status();
        let mut stream = response.into_body();
        let mut body = Vec::new();
        while let Some(chunk) = stream.data().await {
            let chunk = chunk.unwrap();
            let _ = stream.flow_control().release_capacity(chunk.len());
            body.extend_from_slice(&chunk);
        }
        (status, body)
    });
    // Shutdown waits for the stream in flight, then the connection ends (a GOAWAY, then closed).
    assert!(server.shutdown_within(Duration::from_secs(20)).await);
    let (status, body) = slow.await.unwrap();
    assert_eq!((status.as_u16(), &body[..]), (200, &b"GET /slow 0"[..]));
    let ended = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the connection ends after the drain");
    assert!(
        ended.unwrap().is_ok(),
        "a graceful end, not a broken connection"
    );
}
