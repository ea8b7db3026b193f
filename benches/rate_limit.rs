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
//! Under `cargo test` each scenario runs briefly, as a smoke test.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use parapet::{Body, ClientAddr};
use parapet_middlewares::rate_limit::{Decision, Limiter, RateKey, RateLimitConfig};

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
}
