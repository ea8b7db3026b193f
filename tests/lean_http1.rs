//! The lean HTTP/1.1 server path (`server.lean_http1`, src/server/lean.rs) answers as hyper's
//! connection does: the same requests, pipelined on one connection, get the same answers from a
//! gateway with it on and one with it off (hyper's connection for every request), `date` aside.
//! The requests mix what the lean path serves (GET, HEAD) with what it hands to hyper mid-connection
//! (a POST with a body), and the answers cover its framing: a length, chunked with trailers asked for
//! or not, HEAD, 204, 304, the upstream's reason phrase, a `Connection: close`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that answers each request by its path with canned bytes, keeping connections open.
async fn scripted_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = read_until_head_end(&mut stream, &mut buf).await else {
                        return;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let mut body_len = 0;
                    for line in head.lines() {
                        if let Some((name, value)) = line.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                body_len = value.trim().parse().unwrap();
                            }
                        }
                    }
                    while buf.len() < end + body_len {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + body_len);
                    let head_request = head.starts_with("HEAD ");
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    let answer: Vec<u8> = match path.as_str() {
                        "/fixed" if head_request => b"HTTP/1.1 200 Fine\r\ncontent-length: 5\r\nx-kind: fixed\r\n\r\n".to_vec(),
                        "/fixed" => b"HTTP/1.1 200 Fine\r\ncontent-length: 5\r\nx-kind: fixed\r\n\r\nhello".to_vec(),
                        "/chunked" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nx-sum: 5\r\nx-other: 1\r\n\r\n".to_vec(),
                        "/nothing" => b"HTTP/1.1 204 No Content\r\nx-kind: none\r\n\r\n".to_vec(),
                        "/same" => b"HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\n\r\n".to_vec(),
                        "/old" => b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 3\r\n\r\nold".to_vec(),
                        "/echo" => format!("HTTP/1.1 201 Created\r\ncontent-length: {body_len}\r\n\r\n{}", "x".repeat(body_len)).into_bytes(),
                        _ => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_vec(),
                    };
                    if stream.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Reads into `buf` until it holds a whole head; the head's length, `None` if the peer closed.
async fn read_until_head_end(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(at + 4);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A response as the client reads it: its status line, its header lines in order (`date` left
/// out: it differs by the second), its decoded body and its trailer lines.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status_line: String,
    headers: Vec<String>,
    body: String,
    trailers: Vec<String>,
}

/// Reads the answers to requests whose methods are `methods`, in order, from raw bytes.
fn answers(mut raw: &[u8], methods: &[&str]) -> Vec<Answer> {
    let mut out = Vec::new();
    for method in methods {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| {
                panic!("no head for {method} in {:?}", String::from_utf8_lossy(raw))
            })
            + 4;
        let head = String::from_utf8(raw[..end - 4].to_vec()).unwrap();
        raw = &raw[end..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap().to_owned();
        let status: u16 = status_line[9..12].parse().unwrap();
        let headers: Vec<String> = lines
            .filter(|l| !l.to_ascii_lowercase().starts_with("date:"))
            .map(str::to_owned)
            .collect();
        let header = |name: &str| {
            headers.iter().find_map(|h| {
                let (n, v) = h.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        let mut body = Vec::new();
        let mut trailers = Vec::new();
        if *method == "HEAD" || status == 204 || status == 304 {
        } else if let Some(len) = header("content-length") {
            let len: usize = len.parse().unwrap();
            body.extend_from_slice(&raw[..len]);
            raw = &raw[len..];
        } else if header("transfer-encoding").is_some_and(|te| te.ends_with("chunked")) {
            loop {
                let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
                let size = usize::from_str_radix(
                    std::str::from_utf8(&raw[..line_end]).unwrap().trim(),
                    16,
                )
                .unwrap();
                raw = &raw[line_end + 2..];
                if size == 0 {
                    loop {
                        let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
                        let line = std::str::from_utf8(&raw[..line_end]).unwrap().to_owned();
                        raw = &raw[line_end + 2..];
                        if line.is_empty() {
                            break;
                        }
                        trailers.push(line);
                    }
                    break;
                }
                body.extend_from_slice(&raw[..size]);
                assert_eq!(&raw[size..size + 2], b"\r\n");
                raw = &raw[size + 2..];
            }
        } else {
            panic!("an answer with no framing: {head}");
        }
        out.push(Answer {
            status_line,
            headers,
            body: String::from_utf8(body).unwrap(),
            trailers,
        });
    }
    assert!(
        raw.is_empty(),
        "bytes after the last answer: {:?}",
        String::from_utf8_lossy(raw)
    );
    out
}

/// A gateway with the lean path on or off: `/here` answered in process, the rest by `upstream`.
async fn gateway(lean: bool, upstream: SocketAddr) -> parapet::Server {
    common::start(&format!(
        r#"
[server]
lean_http1 = {lean}
[listeners.main]
bind = "127.0.0.1:0"
[[routes]]
path = "/here"
app = "here"
[[routes]]
app = "up"
[apps.here]
handler = {{ kind = "respond", status = 200, body = "in process" }}
[apps.up]
upstream = "up"
[upstreams.up]
servers = ["http://{upstream}"]
"#
    ))
    .await
}

/// Starts a gateway with the lean path on or off in front of `upstream`, sends `requests` on one
/// connection (the last asks to close), and reads until the gateway closes.
async fn exchange(lean: bool, upstream: SocketAddr, requests: &[u8]) -> Vec<u8> {
    let server = gateway(lean, upstream).await;
    let mut stream = TcpStream::connect(server.local_addr("main").unwrap())
        .await
        .unwrap();
    stream.write_all(requests).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut raw))
        .await
        .expect("the gateway closes after the last answer")
        .unwrap();
    server.shutdown().await;
    raw
}

fn requests(list: &[(&str, &str, &str)]) -> (Vec<u8>, Vec<&'static str>) {
    let mut bytes = Vec::new();
    let mut methods = Vec::new();
    for (i, (method, path, extra)) in list.iter().enumerate() {
        let close = if i + 1 == list.len() {
            "connection: close\r\n"
        } else {
            ""
        };
        bytes.extend_from_slice(
            format!("{method} {path} HTTP/1.1\r\nhost: test\r\n{extra}{close}\r\n").as_bytes(),
        );
        if *method == "POST" {
            bytes.extend_from_slice(b"abc");
        }
        methods.push(match *method {
            "HEAD" => "HEAD",
            "POST" => "POST",
            _ => "GET",
        });
    }
    (bytes, methods)
}

#[tokio::test]
async fn the_lean_path_answers_pipelined_requests_as_hyper_does() {
    let upstream = scripted_upstream().await;
    let (bytes, methods) = requests(&[
        ("GET", "/fixed", ""),
        ("HEAD", "/fixed", ""),
        ("GET", "/chunked", "te: trailers\r\n"),
        ("GET", "/chunked", ""),
        ("GET", "/nothing", ""),
        ("GET", "/same", "if-none-match: \"v1\"\r\n"),
        ("GET", "/old", ""),
        ("GET", "/here", ""),
        // A body: hyper's connection takes over mid-connection, and the lean path comes back once
        // it is released.
        ("POST", "/echo", "content-length: 3\r\n"),
        ("GET", "/fixed", ""),
        ("GET", "/missing", ""),
    ]);
    let lean = answers(&exchange(true, upstream, &bytes).await, &methods);
    let hyper = answers(&exchange(false, upstream, &bytes).await, &methods);
    assert_eq!(lean, hyper);

    // And what both answered is right.
    let status: Vec<&str> = lean.iter().map(|a| a.status_line.as_str()).collect();
    assert_eq!(
        status,
        [
            "HTTP/1.1 200 Fine",
            "HTTP/1.1 200 Fine",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 204 No Content",
            "HTTP/1.1 304 Not Modified",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 201 Created",
            "HTTP/1.1 200 Fine",
            "HTTP/1.1 404 Not Found",
        ]
    );
    assert_eq!(lean[0].body, "hello");
    assert!(lean[1].headers.contains(&"content-length: 5".to_owned()));
    assert_eq!(lean[1].body, "");
    assert_eq!(lean[2].body, "abcde");
    assert!(lean[2]
        .headers
        .contains(&"transfer-encoding: chunked".to_owned()));
    // The proxy drops `Trailer` as hop-by-hop (RFC 9110 §7.6.1), so neither path sends the
    // upstream's trailers on, even to a client that asked for them.
    assert!(!lean[2].headers.iter().any(|h| h.starts_with("trailer")));
    assert!(lean[2].trailers.is_empty());
    assert!(lean[3].trailers.is_empty());
    assert_eq!(lean[3].body, "abcde");
    assert!(lean[4].headers.contains(&"x-kind: none".to_owned()));
    assert!(lean[5].headers.contains(&"etag: \"v1\"".to_owned()));
    // An HTTP/1.0 upstream's answer goes out as HTTP/1.1, the connection kept.
    assert_eq!(lean[6].body, "old");
    assert_eq!(lean[7].body, "in process");
    assert_eq!(lean[8].body, "xxx");
    assert_eq!(lean[9].body, "hello");
    assert!(lean[10].headers.contains(&"connection: close".to_owned()));
}

#[tokio::test]
async fn a_lean_connection_is_kept_between_requests_and_closed_when_asked() {
    let upstream = scripted_upstream().await;
    let server = gateway(true, upstream).await;
    let mut stream = TcpStream::connect(server.local_addr("main").unwrap())
        .await
        .unwrap();
    // One request at a time, each answer read whole before the next is sent.
    for _ in 0..3 {
        stream
            .write_all(b"GET /fixed HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let end = read_until_head_end(&mut stream, &mut buf).await.unwrap();
        while buf.len() < end + 5 {
            let mut chunk = [0u8; 64];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(buf.len(), end + 5, "nothing after the body");
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("HTTP/1.1 200 Fine\r\n"), "{text}");
        assert!(!text.contains("connection:"), "{text}");
        assert!(text.ends_with("\r\n\r\nhello"), "{text}");
    }
    stream
        .write_all(b"GET /fixed HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut rest))
        .await
        .expect("closed after the answer to a close")
        .unwrap();
    let text = String::from_utf8_lossy(&rest);
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nhello"), "{text}");
    server.shutdown().await;
}
