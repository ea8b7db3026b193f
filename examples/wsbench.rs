//! The WebSocket load tool of `benches/nginx.sh`'s `websocket` scenario: an echo origin, a fixed-rate
//! load of echo round trips over a number of tunnels, and a holder of idle tunnels.
//!
//! ```text
//! wsbench echo PORT                         # an echo server on 127.0.0.1:PORT (one thread)
//! wsbench load URL TUNNELS RATE SECONDS     # RATE messages/s in all, spread over TUNNELS tunnels;
//!                                           # prints "round_trips N late M"
//! wsbench idle URL TUNNELS                  # opens TUNNELS tunnels, one echo each, prints "ready",
//!                                           # and holds them until stdin closes
//! ```
//!
//! Built with `cargo build --release --example wsbench` (tokio-tungstenite is a dev-dependency).

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::Message;

/// A message the size of a chat line or a small JSON update.
const PAYLOAD: usize = 128;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = || -> ! {
        eprintln!("usage: wsbench echo PORT | load URL TUNNELS RATE SECONDS | idle URL TUNNELS");
        std::process::exit(2)
    };
    let arg = |i: usize| args.get(i).cloned().unwrap_or_else(|| usage());
    let num = |i: usize| arg(i).parse::<u64>().unwrap_or_else(|_| usage());
    match args.get(1).map(String::as_str) {
        Some("echo") => runtime(1).block_on(echo(num(2) as u16)),
        Some("load") => runtime(1).block_on(load(arg(2), num(3), num(4), num(5))),
        Some("idle") => runtime(1).block_on(idle(arg(2), num(3))),
        _ => usage(),
    }
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    let mut b = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    b.enable_all().build().expect("a runtime")
}

async fn echo(port: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(Ok(message)) = ws.next().await {
                if message.is_text() || message.is_binary() {
                    if ws.send(message).await.is_err() {
                        return;
                    }
                } else if message.is_close() {
                    return;
                }
            }
        });
    }
}

async fn connect(url: &str) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let addr = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .expect("ws://HOST:PORT/...")
        .to_owned();
    let stream = TcpStream::connect(&addr).await.expect("connect");
    let _ = stream.set_nodelay(true);
    let (ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("handshake");
    ws
}

/// Each tunnel sends a message every `tunnels / rate` seconds and waits for its echo; a message
/// whose echo has not come when the next is due is counted late (sent when the echo comes).
async fn load(url: String, tunnels: u64, rate: u64, seconds: u64) {
    let mut opened = Vec::new();
    for _ in 0..tunnels {
        opened.push(connect(&url).await);
    }
    let interval = Duration::from_secs_f64(tunnels as f64 / rate as f64);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = opened
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            tokio::spawn(async move {
                // Spread the tunnels' sends over the interval.
                let start =
                    tokio::time::Instant::now() + interval.mul_f64(i as f64 / tunnels as f64);
                let mut tick = tokio::time::interval_at(start, interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let payload = vec![b'x'; PAYLOAD];
                let (mut done, mut late) = (0u64, 0u64);
                while Instant::now() < deadline {
                    tick.tick().await;
                    let sent = Instant::now();
                    if ws.send(Message::binary(payload.clone())).await.is_err() {
                        break;
                    }
                    match ws.next().await {
                        Some(Ok(_)) => done += 1,
                        _ => break,
                    }
                    if sent.elapsed() > interval {
                        late += 1;
                    }
                }
                let _ = ws.close(None).await;
                (done, late)
            })
        })
        .collect();
    let (mut done, mut late) = (0, 0);
    for t in tasks {
        let (d, l) = t.await.expect("a load task");
        done += d;
        late += l;
    }
    println!("round_trips {done} late {late}");
}

async fn idle(url: String, tunnels: u64) {
    let mut held = Vec::new();
    for _ in 0..tunnels {
        let mut ws = connect(&url).await;
        ws.send(Message::text("hello")).await.expect("send");
        ws.next().await.expect("an echo").expect("an echo");
        held.push(ws);
    }
    println!("ready");
    // Held until whoever started this closes stdin.
    let mut sink = Vec::new();
    let _ = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        std::io::stdin().read_to_end(&mut sink)
    })
    .await;
    drop(held);
}
