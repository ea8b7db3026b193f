//! WebSocket through parapet: a real client and a real echo server (tokio-tungstenite) on real
//! sockets, joined by parapet's tunnel after the upstream's 101.

// tungstenite's handshake callbacks return its `ErrorResponse` by value.
#![allow(clippy::result_large_err, clippy::collapsible_match)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use parapet::{Config, Registry};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::Message;
use tokio_tungstenite::WebSocketStream;

type Client = WebSocketStream<TcpStream>;

/// What the echo server saw of the upgrade requests it accepted.
#[derive(Default)]
struct Seen {
    accepted: AtomicUsize,
    headers: std::sync::Mutex<Vec<http::HeaderMap>>,
}

/// A WebSocket echo server: text and binary messages come back as they went; pings are answered
/// (by tungstenite) with pongs. Every upgrade is accepted, with `x-upstream: echo` on its 101.
async fn echo_server() -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = Arc::clone(&s);
            tokio::spawn(async move {
                let callback = |req: &Request, mut res: Response| {
                    seen.headers.lock().unwrap().push(req.headers().clone());
                    res.headers_mut()
                        .insert("x-upstream", http::HeaderValue::from_static("echo"));
                    Ok::<_, ErrorResponse>(res)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    return;
                };
                seen.accepted.fetch_add(1, Ordering::SeqCst);
                while let Some(Ok(message)) = ws.next().await {
                    match message {
                        Message::Text(_) | Message::Binary(_) => {
                            if ws.send(message).await.is_err() {
                                return;
                            }
                        }
                        // The pong tungstenite queued goes out with a flush.
                        Message::Ping(_) => {
                            if ws.flush().await.is_err() {
                                return;
                            }
                        }
                        Message::Close(_) => {
                            let _ = ws.close(None).await;
                            return;
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// An upstream that refuses every upgrade with a 403.
async fn refusing_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let callback = |_: &Request, _: Response| {
                    let mut refusal = ErrorResponse::new(Some("no sockets for you".into()));
                    *refusal.status_mut() = http::StatusCode::FORBIDDEN;
                    Err(refusal)
                };
                let _ = tokio_tungstenite::accept_hdr_async(stream, callback).await;
            });
        }
    });
    addr
}

/// A WebSocket client to `addr` (parapet) at `path`, with the 101 response head.
async fn connect(
    addr: SocketAddr,
    path: &str,
) -> (
    Client,
    tokio_tungstenite::tungstenite::handshake::client::Response,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let url = format!("ws://localhost{path}");
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(url, stream),
    )
    .await
    .expect("the handshake completes")
    .unwrap_or_else(|e| panic!("the handshake succeeds: {e}"))
}

/// Sends `message` and expects it back.
async fn echo(ws: &mut Client, message: Message) {
    ws.send(message.clone()).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("the echo comes back")
        .expect("the tunnel is open")
        .unwrap();
    assert_eq!(back, message);
}

/// Waits for the tunnel to close under the client: the stream ends, fails, or says Close.
async fn closed(ws: &mut Client, limit: Duration) {
    let wait = async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    };
    tokio::time::timeout(limit, wait)
        .await
        .expect("the tunnel closes");
}

fn config(upstream: SocketAddr, server: &str, log: &str) -> String {
    format!(
        r#"
[server]
{server}

[listeners.main]
bind = "127.0.0.1:0"

[[routes]]
path = "/plain"
app = "plain"

[[routes]]
app = "ws"

[apps.ws]
middlewares = [{log}"errors", "gzip", "mark"]
upstream = "echo"

[apps.plain]
handler = {{ kind = "respond", status = 200, body = "no upgrade here\n" }}

[middlewares.errors]
kind = "errors"

[middlewares.gzip]
kind = "compress"

[middlewares.mark]
kind = "headers"
response.set = {{ "x-edge" = "parapet" }}

[upstreams.echo]
servers = ["http://{upstream}"]
"#
    )
}

fn log_middleware(path: &std::path::Path) -> String {
    format!(
        "\n[middlewares.log]\nkind = \"access_log\"\nformat = \"json\"\npath = \"{}\"\n",
        path.display()
    )
}

fn bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test]
async fn text_binary_a_mebibyte_and_ping_pass_both_ways_and_the_tunnel_is_logged_once() {
    let (upstream, seen) = echo_server().await;
    let dir = common::temp_dir();
    let log = dir.join("access.log");
    let toml = config(upstream, "", "\"log\", ") + &log_middleware(&log);
    let server = common::start(&toml).await;
    let addr = server.local_addr("main").unwrap();

    let (mut ws, head) = connect(addr, "/chat?room=1").await;
    // The chain saw the 101 head: a layer set a header on it; the upstream's own came through;
    // compress left it alone.
    assert_eq!(head.status(), 101);
    assert_eq!(head.headers()["x-edge"], "parapet");
    assert_eq!(head.headers()["x-upstream"], "echo");
    assert!(head.headers().get("content-encoding").is_none());
    // The upstream got an upgrade request, with the forwarding headers.
    let got = seen.headers.lock().unwrap()[0].clone();
    assert_eq!(got["upgrade"], "websocket");
    assert!(got["connection"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase()
        .contains("upgrade"));
    assert_eq!(got["x-forwarded-for"], "127.0.0.1");

    echo(&mut ws, Message::text("hello, tunnel")).await;
    echo(&mut ws, Message::binary(bytes(100))).await;
    let mebibyte = bytes(1024 * 1024);
    echo(&mut ws, Message::binary(mebibyte)).await;
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pong, Message::Pong(b"are you there".to_vec().into()));
    ws.close(None).await.unwrap();
    closed(&mut ws, Duration::from_secs(10)).await;

    // One line, when the tunnel ended, with its bytes each way.
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("\"tunnel\"")) {
            assert_eq!(text.lines().count(), 1, "one line per tunnel: {text}");
            break line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no tunnel line in the access log"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["status"], 101);
    assert_eq!(v["target"], "/chat?room=1");
    assert_eq!(v["tunnel"]["end"], "closed");
    let from_client = v["tunnel"]["from_client"].as_u64().unwrap();
    let to_client = v["tunnel"]["to_client"].as_u64().unwrap();
    // Masked client frames are a little larger than the server's.
    assert!(from_client > 1024 * 1024 + 100, "{line}");
    assert!(to_client > 1024 * 1024 + 100, "{line}");
    assert_eq!(v["bytes"].as_u64(), Some(to_client));
    server.shutdown().await;
}

#[tokio::test]
async fn a_tunnel_lives_on_through_five_reloads() {
    let (upstream, seen) = echo_server().await;
    let registry = Registry::new();
    let server = Arc::new(common::start(&config(upstream, "", "")).await);
    let addr = server.local_addr("main").unwrap();
    let (mut ws, _) = connect(addr, "/").await;
    echo(&mut ws, Message::text("before")).await;
    for i in 0..5 {
        let toml = config(upstream, "", "").replace(
            r#""x-edge" = "parapet""#,
            &format!(r#""x-edge" = "parapet-{i}""#),
        );
        let config = Config::parse("test.toml", &toml, &registry).unwrap();
        server.reload(config).await.unwrap();
        echo(&mut ws, Message::text(format!("after reload {i}"))).await;
        // New tunnels get the new config's chain.
        let (mut fresh, head) = connect(addr, "/").await;
        assert_eq!(head.headers()["x-edge"], format!("parapet-{i}").as_str());
        echo(&mut fresh, Message::binary(bytes(1000))).await;
        fresh.close(None).await.unwrap();
    }
    echo(&mut ws, Message::binary(bytes(70_000))).await;
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 6);
    ws.close(None).await.unwrap();
    closed(&mut ws, Duration::from_secs(10)).await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_after_tunnel_timeout() {
    let (upstream, _) = echo_server().await;
    let dir = common::temp_dir();
    let log = dir.join("access.log");
    let toml = config(upstream, "tunnel_timeout = \"1s\"", "\"log\", ") + &log_middleware(&log);
    let server = common::start(&toml).await;
    let addr = server.local_addr("main").unwrap();
    let (mut ws, _) = connect(addr, "/").await;
    echo(&mut ws, Message::text("one")).await;
    let start = Instant::now();
    closed(&mut ws, Duration::from_secs(10)).await;
    let idle = start.elapsed();
    assert!(idle >= Duration::from_millis(900), "closed after {idle:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("\"end\":\"idle_timeout\"") {
            break;
        }
        assert!(Instant::now() < deadline, "no idle_timeout line: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn traffic_keeps_a_tunnel_open_past_tunnel_timeout() {
    let (upstream, _) = echo_server().await;
    let server = common::start(&config(upstream, "tunnel_timeout = \"1s\"", "")).await;
    let addr = server.local_addr("main").unwrap();
    let (mut ws, _) = connect(addr, "/").await;
    let start = Instant::now();
    // A message every 300 ms for 2.5 s: never a second without traffic.
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    while start.elapsed() < Duration::from_millis(2500) {
        tick.tick().await;
        echo(&mut ws, Message::text("still here")).await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_lets_a_tunnel_run_until_shutdown_timeout_then_closes_it() {
    let (upstream, _) = echo_server().await;
    let dir = common::temp_dir();
    let log = dir.join("access.log");
    let toml = config(upstream, "", "\"log\", ") + &log_middleware(&log);
    let server = Arc::new(common::start(&toml).await);
    let addr = server.local_addr("main").unwrap();
    let (mut ws, _) = connect(addr, "/").await;
    echo(&mut ws, Message::text("before shutdown")).await;
    let s = Arc::clone(&server);
    let shutdown = tokio::spawn(async move { s.shutdown_within(Duration::from_secs(2)).await });
    // Draining: no new connections, but the tunnel carries on until the timeout.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "the listener stays open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    echo(&mut ws, Message::text("while draining")).await;
    closed(&mut ws, Duration::from_secs(10)).await;
    // Not every connection finished on its own: the tunnel was closed.
    assert!(!shutdown.await.unwrap());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("\"end\":\"shutdown\""), "{text}");
}

#[tokio::test]
async fn an_upstream_refusing_the_upgrade_is_an_ordinary_response_and_the_connection_goes_on() {
    let upstream = refusing_server().await;
    let server = common::start(&config(upstream, "", "")).await;
    let addr = server.local_addr("main").unwrap();
    let stream = TcpStream::connect(addr).await.unwrap();
    match tokio_tungstenite::client_async("ws://localhost/", stream).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
            assert_eq!(response.headers()["x-edge"], "parapet");
        }
        other => panic!("expected a 403, got {:?}", other.map(|(_, r)| r.status())),
    }
    // The same kind of request, by hand, on one connection: the 403 and then a second request.
    let raw = common::raw_request(
        addr,
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n\
          GET /plain HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 403"), "{raw}");
    assert!(raw.contains("no upgrade here"), "{raw}");
    server.shutdown().await;
}

#[tokio::test]
async fn an_upgrade_to_an_in_process_handler_gets_its_ordinary_response() {
    let (upstream, _) = echo_server().await;
    let server = common::start(&config(upstream, "", "")).await;
    let addr = server.local_addr("main").unwrap();
    let raw = common::raw_request(
        addr,
        b"GET /plain HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n\
          GET /plain HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw.matches("HTTP/1.1 200").count(), 2, "{raw}");
    server.shutdown().await;
}

#[tokio::test]
async fn an_upgrade_header_without_connection_upgrade_is_not_forwarded() {
    let (upstream, seen) = echo_server().await;
    let server = common::start(&config(upstream, "", "")).await;
    let addr = server.local_addr("main").unwrap();
    // Not an upgrade: the echo server answers a plain request with a 400 of its own, and the
    // request it saw carried no `Upgrade`.
    let raw = common::raw_request(
        addr,
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(!raw.starts_with("HTTP/1.1 101"), "{raw}");
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn http2_does_not_offer_extended_connect_so_browsers_use_http1_for_websockets() {
    let (upstream, _) = echo_server().await;
    let server = common::start(&config(upstream, "", "")).await;
    let addr = server.local_addr("main").unwrap();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut client, conn) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(conn);
    // The server's SETTINGS arrive with the first exchange.
    let req = http::Request::get("http://localhost/plain")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(req, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(!client.is_extended_connect_protocol_enabled());
    server.shutdown().await;
}

#[tokio::test]
async fn a_thousand_concurrent_tunnels_echo_and_their_memory_is_measured() {
    raise_open_files_limit();
    let (upstream, seen) = echo_server().await;
    let toml = config(upstream, "", "");
    let process = common::Process::run(&toml, &["main"]);
    let addr = process.addr("main");
    let before = process.memory_kib("VmRSS");
    let mut clients = Vec::with_capacity(1000);
    for chunk in 0..10 {
        let opened = futures_util::future::join_all((0..100).map(|_| connect(addr, "/"))).await;
        for (mut ws, _) in opened {
            echo(&mut ws, Message::text(format!("hello from batch {chunk}"))).await;
            clients.push(ws);
        }
    }
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 1000);
    let after = process.memory_kib("VmRSS");
    let per_tunnel = (after.saturating_sub(before)) as f64 / 1000.0;
    eprintln!("RSS {before} KiB -> {after} KiB with 1000 idle tunnels: {per_tunnel:.1} KiB each");
    // Two sockets, the task, and no buffer while idle: less than two 8 KiB copy buffers (one per
    // direction) would take on their own. (The comparison with another proxy is the side-by-side
    // benchmark's in benches/, not this test's: no test starts another proxy.)
    assert!(per_tunnel < 24.0, "{per_tunnel:.1} KiB per idle tunnel");
    // Every one still echoes.
    for ws in clients.iter_mut().step_by(50) {
        echo(ws, Message::binary(bytes(2000))).await;
    }
}

/// The test process holds both ends of 1000 tunnels (2000 sockets, and the echo server's 1000).
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write one `rlimit` the call is given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

/// The binary as an operator runs it: a tunnel carries on through five reloads by SIGHUP, and
/// SIGTERM lets it run for `shutdown_timeout` before closing it and exiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_keeps_a_tunnel_through_sighup_reloads_and_closes_it_at_sigterm() {
    let (upstream, _) = echo_server().await;
    let toml = |i: usize| {
        config(upstream, "shutdown_timeout = \"1s\"", "").replace(
            r#""x-edge" = "parapet""#,
            &format!(r#""x-edge" = "generation-{i}""#),
        )
    };
    let mut process = common::Process::run(&toml(0), &["main"]);
    let addr = process.addr("main");
    let (mut ws, _) = connect(addr, "/").await;
    echo(&mut ws, Message::text("first")).await;
    let path = process.dir.join("parapet.toml");
    for i in 1..=5 {
        std::fs::write(&path, toml(i)).unwrap();
        process.signal("HUP");
        // The new config is in once a new connection's 101 carries its header.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (mut fresh, head) = connect(addr, "/").await;
            fresh.close(None).await.unwrap();
            if head.headers()["x-edge"] == format!("generation-{i}").as_str() {
                break;
            }
            assert!(Instant::now() < deadline, "reload {i} never applied");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        echo(&mut ws, Message::text(format!("after reload {i}"))).await;
    }
    process.signal("TERM");
    // Still carried while the process drains.
    echo(&mut ws, Message::binary(bytes(50_000))).await;
    closed(&mut ws, Duration::from_secs(10)).await;
    let status = tokio::task::block_in_place(|| process.wait_exit(Duration::from_secs(10)));
    assert!(status.success(), "{}", process.stderr());
    let stderr = process.stderr();
    assert!(stderr.contains("tunnels=1"), "{stderr}");
}
