//! The limits a hostile or broken client meets, over raw sockets: the size of a request head
//! (`server.max_header_size`, 431), its header count (`server.max_headers`, 431), the length of its
//! target (`server.max_uri_length`, 414), open connections (`server.max_connections`, accepting
//! pauses), requests per HTTP/1.1 connection (`server.max_requests_per_connection`), and request bodies
//! (`body_limit`, 413).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use http_body_util::BodyExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// parapet answering `ok` to everything, with these `[server]` lines.
async fn responder(server: &str) -> (parapet::Server, SocketAddr) {
    let toml = format!(
        r#"
[server]
{server}

[listeners.main]
bind = "127.0.0.1:0"

[[routes]]
app = "ok"

[apps.ok]
handler = {{ kind = "respond", status = 200, body = "ok" }}
"#
    );
    let server = start(&toml).await;
    let addr = server.local_addr("main").unwrap();
    (server, addr)
}

/// The status line of a raw exchange's first response.
fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

/// A GET of `target` with `extra` header lines (each ending in CRLF), closing the connection.
fn get_with(target: &str, extra: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n").into_bytes()
}

/// Reads one response (head, and a body of its Content-Length) off a keep-alive connection; `None`
/// if the server closed first.
async fn read_response(reader: &mut BufReader<TcpStream>) -> Option<(String, String)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(20), reader.read_line(&mut line))
            .await
            .expect("a response within 20s")
            .ok()?;
        if n == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.ok()?;
    Some((head, String::from_utf8_lossy(&body).into_owned()))
}

/// Connects, sends a keep-alive GET, and reads its answer: the connection is then open and served.
async fn open_served(addr: SocketAddr) -> BufReader<TcpStream> {
    let mut conn = BufReader::new(TcpStream::connect(addr).await.unwrap());
    conn.get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut conn).await.expect("an answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "ok");
    conn
}

#[tokio::test]
async fn a_request_head_over_max_header_size_is_answered_431() {
    let (_server, addr) = responder("").await;
    // 40 KiB of headers against the default 32 KiB.
    let big = format!("X-Big: {}\r\n", "a".repeat(40 * 1024));
    let response = raw_request(addr, &get_with("/", &big)).await;
    assert_eq!(
        status_line(&response),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    // Just under the limit is served.
    let fits = format!("X-Big: {}\r\n", "a".repeat(30 * 1024));
    let response = raw_request(addr, &get_with("/", &fits)).await;
    assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn a_head_over_max_header_size_sent_in_pieces_is_answered_431() {
    let (_server, addr) = responder("").await;
    // A first byte alone could begin HTTP/2's preface ("PRI * HTTP/2.0"): when parapet sees only
    // that, it serves the connection through hyper-util's protocol detection, whose limits must be
    // the same.
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.set_nodelay(true).unwrap();
    conn.write_all(b"P").await.unwrap();
    conn.flush().await.unwrap();
    // A whole exchange on a connection accepted after this one: by then parapet has looked at this
    // one's first byte.
    drop(open_served(addr).await);
    let rest = format!(
        "OST / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    let _ = conn.write_all(rest.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut out))
        .await
        .expect("closed within 20s");
    let response = String::from_utf8_lossy(&out);
    assert_eq!(
        status_line(&response),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
}

#[tokio::test]
async fn max_header_size_is_configurable() {
    let (_server, addr) = responder(r#"max_header_size = "4KiB""#).await;
    let big = format!("X-Big: {}\r\n", "a".repeat(5 * 1024));
    let response = raw_request(addr, &get_with("/", &big)).await;
    assert_eq!(
        status_line(&response),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    let fits = format!("X-Big: {}\r\n", "a".repeat(3 * 1024));
    assert_eq!(
        status_line(&raw_request(addr, &get_with("/", &fits)).await),
        "HTTP/1.1 200 OK"
    );
}

/// `n` header lines in all: Host, Connection, and `n - 2` others.
fn headers(n: usize) -> String {
    (0..n - 2).map(|i| format!("X-H{i}: v\r\n")).collect()
}

#[tokio::test]
async fn more_header_lines_than_max_headers_is_answered_431() {
    let (_server, addr) = responder("").await;
    let response = raw_request(addr, &get_with("/", &headers(101))).await;
    assert_eq!(
        status_line(&response),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    let response = raw_request(addr, &get_with("/", &headers(100))).await;
    assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn max_headers_is_configurable() {
    let (_server, addr) = responder("max_headers = 10").await;
    let response = raw_request(addr, &get_with("/", &headers(11))).await;
    assert_eq!(
        status_line(&response),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    let response = raw_request(addr, &get_with("/", &headers(10))).await;
    assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn an_http2_header_block_over_max_header_size_is_answered_431() {
    let (_server, addr) = responder(r#"max_header_size = "4KiB""#).await;
    let req = http::Request::get(format!("http://{addr}/"))
        .header("x-big", "a".repeat(5 * 1024))
        .body(parapet::Body::empty())
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(20), h2c_client().request(req))
        .await
        .expect("an answer within 20s")
        .expect("a response");
    assert_eq!(response.status(), 431);
}

#[tokio::test]
async fn a_target_over_max_uri_length_is_answered_414() {
    let (_server, addr) = responder("").await;
    // 9 KiB against the default 8 KiB.
    let long = format!("/{}", "a".repeat(9 * 1024));
    let response = raw_request(addr, &get_with(&long, "")).await;
    assert_eq!(status_line(&response), "HTTP/1.1 414 URI Too Long");
    let fits = format!("/?q={}", "a".repeat(8 * 1024 - 4));
    let response = raw_request(addr, &get_with(&fits, "")).await;
    assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn max_uri_length_is_configurable() {
    let (_server, addr) = responder(r#"max_uri_length = "1KiB""#).await;
    let long = format!("/{}", "a".repeat(1024));
    let response = raw_request(addr, &get_with(&long, "")).await;
    assert_eq!(status_line(&response), "HTTP/1.1 414 URI Too Long");
    let fits = format!("/{}", "a".repeat(1023));
    assert_eq!(
        status_line(&raw_request(addr, &get_with(&fits, "")).await),
        "HTTP/1.1 200 OK"
    );
}

#[tokio::test]
async fn beyond_max_connections_accepting_pauses_until_a_connection_closes() {
    let (_server, addr) = responder("max_connections = 2").await;
    let first = open_served(addr).await;
    let mut second = open_served(addr).await;
    // The third connects (the kernel's backlog takes it) and asks, but is not accepted.
    let mut third = BufReader::new(TcpStream::connect(addr).await.unwrap());
    third
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // parapet is serving meanwhile: the second connection's next request, sent after the third's,
    // is answered.
    second
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut second).await.expect("an answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), third.read(&mut byte))
            .await
            .is_err(),
        "the third connection is not served while two are open"
    );
    // The first closes: the third is accepted and answered.
    drop(first);
    let (head, body) = read_response(&mut third).await.expect("an answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "ok");
}

#[tokio::test]
async fn the_last_request_of_max_requests_per_connection_closes_the_connection() {
    let (_server, addr) = responder("max_requests_per_connection = 3").await;
    let mut conn = BufReader::new(TcpStream::connect(addr).await.unwrap());
    for i in 1..=3 {
        conn.get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = read_response(&mut conn).await.expect("an answer");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, "ok");
        let closes = head.to_ascii_lowercase().contains("connection: close");
        assert_eq!(closes, i == 3, "request {i}: {head}");
    }
    // The server closes after the third response.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut rest))
        .await
        .expect("closed within 20s")
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn pipelined_requests_past_max_requests_per_connection_are_not_served() {
    let (_server, addr) = responder("max_requests_per_connection = 2").await;
    let three = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(3);
    let response = raw_request(addr, &three).await;
    assert_eq!(response.matches("HTTP/1.1 200 OK").count(), 2, "{response}");
}

/// What the upstream behind a `body_limit` of 1 KiB saw: requests, and for each, the body bytes that
/// arrived (reported as they arrive, and when the body ends or fails).
struct Recorder {
    calls: Arc<AtomicUsize>,
    progress: tokio::sync::mpsc::UnboundedReceiver<Progress>,
}

#[derive(Debug, PartialEq)]
enum Progress {
    /// So many bytes of the body so far.
    Received(usize),
    /// The body ended (true) or failed (false) after so many bytes.
    Ended(bool, usize),
}

/// parapet with a `body_limit` of 1 KiB in front of a recording upstream.
async fn limited() -> (parapet::Server, SocketAddr, Recorder) {
    let calls = Arc::new(AtomicUsize::new(0));
    let (tx, progress) = tokio::sync::mpsc::unbounded_channel();
    let counted = Arc::clone(&calls);
    let up = upstream(move |req: http::Request<hyper::body::Incoming>| {
        counted.fetch_add(1, Ordering::SeqCst);
        let tx = tx.clone();
        async move {
            let mut body = req.into_body();
            let mut received = 0;
            loop {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            received += data.len();
                            let _ = tx.send(Progress::Received(received));
                        }
                    }
                    Some(Err(_)) => {
                        let _ = tx.send(Progress::Ended(false, received));
                        break;
                    }
                    None => {
                        let _ = tx.send(Progress::Ended(true, received));
                        break;
                    }
                }
            }
            text(200, format!("received {received}"))
        }
    })
    .await;
    let toml = format!(
        r#"
[listeners.main]
bind = "127.0.0.1:0"

[[routes]]
app = "uploads"

[apps.uploads]
middlewares = ["limit"]
upstream = "backend"

[upstreams.backend]
servers = ["http://{up}"]

[middlewares.limit]
kind = "body_limit"
max_size = "1KiB"
"#
    );
    let server = start(&toml).await;
    let addr = server.local_addr("main").unwrap();
    (server, addr, Recorder { calls, progress })
}

#[tokio::test]
async fn body_limit_answers_413_to_a_content_length_over_it_without_calling_the_upstream() {
    let (_server, addr, recorder) = limited().await;
    // The head alone: parapet must answer without waiting for the body.
    let response = raw_request(
        addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n",
    )
    .await;
    assert_eq!(status_line(&response), "HTTP/1.1 413 Payload Too Large");
    assert_eq!(recorder.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn body_limit_passes_a_body_exactly_at_it() {
    let (_server, addr, mut recorder) = limited().await;
    let body = "x".repeat(1024);
    let request = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\nConnection: close\r\n\r\n{body}"
    );
    let response = raw_request(addr, request.as_bytes()).await;
    assert_eq!(status_line(&response), "HTTP/1.1 200 OK", "{response}");
    assert!(response.ends_with("received 1024"), "{response}");

    // The same, chunked.
    let request = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n200\r\n{}\r\n200\r\n{}\r\n0\r\n\r\n",
        &body[..512],
        &body[..512]
    );
    let response = raw_request(addr, request.as_bytes()).await;
    assert_eq!(status_line(&response), "HTTP/1.1 200 OK", "{response}");
    assert!(response.ends_with("received 1024"), "{response}");
    while let Ok(p) = recorder.progress.try_recv() {
        if let Progress::Ended(ok, n) = p {
            assert!(ok && n == 1024, "{p:?}");
        }
    }
}

#[tokio::test]
async fn body_limit_stops_a_chunked_body_streaming_past_it() {
    let (_server, addr, mut recorder) = limited().await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let chunk = "x".repeat(600);
    conn.write_all(
        format!(
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n{chunk}\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // The first 600 bytes, within the limit, reach the upstream.
    let first = tokio::time::timeout(Duration::from_secs(20), recorder.progress.recv())
        .await
        .expect("the upstream hears within 20s");
    assert_eq!(first, Some(Progress::Received(600)));
    // 600 more would make 1200: the body fails before they are passed on.
    conn.write_all(format!("258\r\n{chunk}\r\n0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let last = tokio::time::timeout(Duration::from_secs(20), recorder.progress.recv())
        .await
        .expect("the upstream hears within 20s");
    assert_eq!(last, Some(Progress::Ended(false, 600)));
    // The client is told 413, or its connection is closed (if an unread rest resets it first).
    let mut conn = BufReader::new(conn);
    if let Some((head, _)) = read_response(&mut conn).await {
        assert!(head.starts_with("HTTP/1.1 413 Payload Too Large"), "{head}");
    }
}

#[tokio::test]
async fn limits_are_sizes_in_bytes_or_binary_units_and_bad_ones_are_refused() {
    let registry = parapet::Registry::new();
    let config = |server: &str| {
        parapet::Config::parse(
            "limits.toml",
            &format!(
                "[server]\n{server}\n[listeners.main]\nbind = \"127.0.0.1:0\"\n[[routes]]\napp = \"ok\"\n[apps.ok]\nhandler = {{ kind = \"echo\" }}\n"
            ),
            &registry,
        )
    };
    let ok = config("max_header_size = 40000\nmax_uri_length = \"2KiB\"\nmax_connections = 10\nmax_requests_per_connection = 0")
        .unwrap();
    assert_eq!(ok.server.max_header_size, 40000);
    assert_eq!(ok.server.max_uri_length, 2048);
    assert_eq!(ok.server.max_connections, 10);
    assert_eq!(ok.server.max_requests_per_connection, None);
    let defaults = config("").unwrap();
    assert_eq!(defaults.server.max_header_size, 32 * 1024);
    assert_eq!(defaults.server.max_headers, 100);
    assert_eq!(defaults.server.max_uri_length, 8 * 1024);
    assert_eq!(defaults.server.max_connections, 20_000);
    assert_eq!(defaults.server.max_requests_per_connection, Some(10_000));

    let errors =
        config("max_header_size = \"32KB\"\nmax_uri_length = \"1MiB\"\nmax_connections = 0")
            .unwrap_err()
            .to_string();
    assert!(
        errors.contains("server.max_header_size: invalid size \"32KB\""),
        "{errors}"
    );
    assert!(
        errors.contains("server.max_uri_length: expected a size from"),
        "{errors}"
    );
    assert!(errors.contains("server.max_connections"), "{errors}");
}

#[tokio::test]
async fn a_body_limit_named_bare_refuses_bodies_over_one_mebibyte() {
    let toml = r#"
[listeners.main]
bind = "127.0.0.1:0"

[[routes]]
app = "echo"

[apps.echo]
middlewares = ["body_limit"]
handler = { kind = "echo" }
"#;
    let server = start(toml).await;
    let addr = server.local_addr("main").unwrap();
    let response = raw_request(
        addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1048577\r\n\r\n",
    )
    .await;
    assert_eq!(status_line(&response), "HTTP/1.1 413 Payload Too Large");
    let req = http::Request::post(format!("http://{addr}/"))
        .body(parapet::Body::from(bytes::Bytes::from(vec![
            b'x';
            1024 * 1024
        ])))
        .unwrap();
    let response = client().request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    let _ = response.into_body().collect().await;
}
