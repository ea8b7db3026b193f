//! `rate_limit` under contention: 64 threads checking one limiter at once.
//!
//! `cargo bench --bench rate_limit` runs each scenario with 1 and with 64 threads, every thread
//! calling [`Limiter::check_request`] (what the layer does per request: the key read from the
//! request, the clock read, the shard found, the GCRA compare-and-swap) in a loop, all started
//! together by a barrier. It reports the wall time per check over all threads (the throughput of the
//! limiter, as the machine's cores allow) and the time per check each thread saw. The scenarios:
//!
//! - `same key, allowed`: every thread the same client, under a limit never reached: every check
//!   moves the one atomic TAT, the worst case for its compare-and-swap;
//! - `same key, limited`: the same, over the limit: every check reads the TAT and refuses;
//! - `distinct keys`: each thread its own 1024 clients (65536 keys in all), under the limit: the
//!   shards' read locks and the keys' own atomics;
//! - `a new key each check`: a flood of clients never seen, beyond the limiter's maximum of keys:
//!   each check takes a shard's write lock to add its key, and shards are pruned as they fill.
//!
//! Then the limiter's memory under a flood: one thread checks twice [`MAX_KEYS`] clients never seen,
//! whose buckets stay partly spent (so none is forgotten as full again: the worst case), and the heap
//! the limiter holds afterwards is reported (counted by this bench's allocator, which
//! counts only during that pass so as not to slow the timed ones), with the keys it kept: the bound
//! the docs give, at most `MAX_KEYS` keys and about 8 MB.
//!
//! Under `cargo test` each scenario runs briefly, as a smoke test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use parapet::{Body, ClientAddr};
use parapet_middlewares::rate_limit::{Decision, Limiter, RateKey, RateLimitConfig, MAX_KEYS};

/// Whether the allocator counts (only during the memory pass).
static COUNTING: AtomicBool = AtomicBool::new(false);
/// Bytes allocated and not freed while counting.
static LIVE: AtomicI64 = AtomicI64::new(0);

/// The system allocator, counting the bytes live while [`COUNTING`] is set.
struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        }
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The heap a limiter holds after a flood of `2 * MAX_KEYS` clients never seen, one thread:
/// (bytes, keys kept). Everything the flood allocates and frees is counted; only the limiter's
/// (made inside the counted pass) is still live at its end.
fn flood_memory(config: &RateLimitConfig) -> (i64, usize) {
    let mut req = request(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    LIVE.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::SeqCst);
    let limiter = Limiter::new(config.clone());
    for i in 0..(2 * MAX_KEYS as u32) {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i)), 40000);
        *req.extensions_mut().get_mut::<ClientAddr>().unwrap() = ClientAddr(addr);
        limiter.check_request(&req);
    }
    COUNTING.store(false, Ordering::SeqCst);
    let bytes = LIVE.load(Ordering::Relaxed);
    let keys = limiter.keys();
    // Dropped uncounted: its frees would not change the figure read above.
    drop(limiter);
    (bytes, keys)
}

/// Checks per thread.
fn checks() -> u64 {
    if std::env::args().any(|a| a == "--bench") {
        200_000
    } else {
        2_000
    }
}

#[derive(Clone, Copy)]
enum Keys {
    Same,
    PerThread,
    New,
}

fn request(ip: IpAddr) -> http::Request<Body> {
    let mut req = http::Request::get("/").body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(ClientAddr(SocketAddr::new(ip, 40000)));
    req
}

/// Runs `threads` threads of `checks()` each: (wall time, checks allowed).
fn run(limiter: &Arc<Limiter>, threads: usize, keys: Keys) -> (Duration, u64) {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let limiter = Arc::clone(limiter);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut requests: Vec<_> = match keys {
                    Keys::Same => vec![request(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))],
                    Keys::PerThread | Keys::New => (0..1024u32)
                        .map(|i| request(IpAddr::V4(Ipv4Addr::from((t as u32) << 16 | i))))
                        .collect(),
                };
                let n = checks();
                let mut fresh = (t as u32) << 24;
                barrier.wait();
                let mut allowed = 0;
                let count = requests.len();
                for i in 0..n {
                    let req = &mut requests[i as usize % count];
                    if let Keys::New = keys {
                        // A client never seen, changed in place (no allocation).
                        fresh += 1;
                        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(fresh)), 40000);
                        *req.extensions_mut().get_mut::<ClientAddr>().unwrap() = ClientAddr(addr);
                    }
                    if let Decision::Allowed { .. } = limiter.check_request(req) {
                        allowed += 1;
                    }
                }
                barrier.wait();
                allowed
            })
        })
        .collect();
    barrier.wait();
    let t0 = Instant::now();
    barrier.wait();
    let elapsed = t0.elapsed();
    let allowed = handles.into_iter().map(|h| h.join().unwrap()).sum();
    (elapsed, allowed)
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{cores} cores; {} checks per thread", checks());
    let open = RateLimitConfig {
        count: 1_000_000_000,
        per: Duration::from_secs(1),
        burst: 1_000_000_000,
        key: RateKey::ClientIp,
    };
    let tight = RateLimitConfig {
        count: 1,
        per: Duration::from_secs(1),
        burst: 1,
        ..open.clone()
    };
    let scenarios = [
        ("same key, allowed", &open, Keys::Same),
        ("same key, limited", &tight, Keys::Same),
        ("distinct keys", &open, Keys::PerThread),
        ("a new key each check", &open, Keys::New),
    ];
    for (name, config, keys) in scenarios {
        for threads in [1, 64] {
            // A fresh limiter per run; the keys of `distinct keys` are made by a first pass.
            let limiter = Arc::new(Limiter::new(config.clone()));
            if let Keys::PerThread = keys {
                run(&limiter, threads, keys);
            }
            let (elapsed, allowed) = run(&limiter, threads, keys);
            let total = checks() * threads as u64;
            let wall = elapsed.as_nanos() as f64 / total as f64;
            // Each thread's own view: its time per check, with the cores shared among the threads.
            let per_thread = elapsed.as_nanos() as f64 / checks() as f64;
            println!(
                "{name:<22} {threads:>2} threads: {wall:7.1} ns per check (wall, all threads), {per_thread:8.1} ns per check per thread; {:.1}% allowed, {} keys kept",
                100.0 * allowed as f64 / total as f64,
                limiter.keys()
            );
        }
    }
    // Buckets that stay partly spent (one request of a burst of 2, an hour to refill): no key can
    // be forgotten as full again, so the shards fill and drop an eighth, the worst case for memory.
    let spent = RateLimitConfig {
        count: 1,
        per: Duration::from_secs(3600),
        burst: 2,
        ..open.clone()
    };
    let (bytes, keys) = flood_memory(&spent);
    println!(
        "a flood of {} clients never seen, one thread: {keys} keys kept (at most {MAX_KEYS}), {:.1} MB held by the limiter, {:.0} bytes per key kept",
        2 * MAX_KEYS,
        bytes as f64 / 1e6,
        bytes as f64 / keys.max(1) as f64
    );
    assert!(keys <= MAX_KEYS, "the limiter keeps at most MAX_KEYS keys");
}
