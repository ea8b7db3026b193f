//! Heap held per idle keep-alive connection, measured in-process.
//!
//! `cargo bench --bench idle` starts parapet on a `respond` app, opens connections that each send one
//! request and read its answer, waits past `server.idle_release`, then counts the heap bytes still live
//! per open connection, by size (a counting allocator over the system one: exact and repeatable, unlike
//! RSS, which also holds the allocator's slack; benches/nginx.sh measures RSS).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};

use parapet::{Config, Registry, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);
static BLOCKS: AtomicI64 = AtomicI64::new(0);
static SIZES: [AtomicI64; 1024] = [const { AtomicI64::new(0) }; 1024];
fn bucket(n: usize) -> usize {
    (n / 16).min(1023)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        BLOCKS.fetch_add(1, Ordering::Relaxed);
        SIZES[bucket(layout.size())].fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        BLOCKS.fetch_sub(1, Ordering::Relaxed);
        SIZES[bucket(layout.size())].fetch_sub(1, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        SIZES[bucket(layout.size())].fetch_sub(1, Ordering::Relaxed);
        SIZES[bucket(new_size)].fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CONNECTIONS: usize = 2_000;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let toml = r#"
[listeners.main]
bind = "127.0.0.1:0"
[[routes]]
app = "app"
[apps.app]
handler = { kind = "respond", body = "hello" }
"#;
        let config = Config::parse("idle.toml", toml, &Registry::new()).unwrap();
        let server = Server::start(config, Registry::new()).await.unwrap();
        let addr = server.local_addr("main").unwrap();
        for round in 0..2 {
            let mut conns = Vec::with_capacity(CONNECTIONS);
            let (live0, blocks0) = (LIVE.load(Ordering::Relaxed), BLOCKS.load(Ordering::Relaxed));
            let sizes0: Vec<i64> = SIZES.iter().map(|a| a.load(Ordering::Relaxed)).collect();
            for _ in 0..CONNECTIONS {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.write_all(b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n").await.unwrap();
                let mut buf = [0u8; 1024];
                let mut got = Vec::new();
                while !got.ends_with(b"hello") {
                    let n = s.read(&mut buf).await.unwrap();
                    assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
                    got.extend_from_slice(&buf[..n]);
                }
                conns.push(s);
            }
            // Every connection is idle: past `server.idle_release` (1 s), each holds only its socket.
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
            let live = LIVE.load(Ordering::Relaxed) - live0;
            let blocks = BLOCKS.load(Ordering::Relaxed) - blocks0;
            // The client side's sockets and buffers are counted too: subtract them by measuring a
            // bare client connection's share (a TcpStream and its registration) separately below.
            println!(
                "round {round}: {} bytes, {:.1} allocations live per idle connection (client side included)",
                live / CONNECTIONS as i64,
                blocks as f64 / CONNECTIONS as f64
            );
            for (i, a) in SIZES.iter().enumerate() {
                let d = a.load(Ordering::Relaxed) - sizes0[i];
                if d.abs() >= CONNECTIONS as i64 / 2 {
                    println!("   size {}..{}: {:+.2} per connection", i * 16, i * 16 + 15, d as f64 / CONNECTIONS as f64);
                }
            }
            drop(conns);
            for _ in 0..100 {
                tokio::task::yield_now().await;
            }
        }
        // The client's own share: connections to a listener that accepts and holds.
        let holder = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let haddr = holder.local_addr().unwrap();
        let (live0, blocks0) = (LIVE.load(Ordering::Relaxed), BLOCKS.load(Ordering::Relaxed));
        let mut pairs = Vec::new();
        for _ in 0..CONNECTIONS {
            let c = tokio::net::TcpStream::connect(haddr).await.unwrap();
            let (s, _) = holder.accept().await.unwrap();
            pairs.push((c, s));
        }
        println!(
            "a bare client + accepted TcpStream pair: {} bytes, {:.1} allocations",
            (LIVE.load(Ordering::Relaxed) - live0) / CONNECTIONS as i64,
            (BLOCKS.load(Ordering::Relaxed) - blocks0) as f64 / CONNECTIONS as f64
        );
    });
}
