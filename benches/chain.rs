//! What the middleware chain costs per request over the bare proxy, measured in-process.
//!
//! `cargo bench --bench chain` sends the same requests through one listener's service stack (router,
//! app, upstream proxy over loopback to an upstream in this process) twice: once bare, once through
//! `["access_log" (json, to a file), "headers", "compress", "errors"]`. A counting allocator gives
//! heap allocations and bytes per request (deterministic), in all and without the in-process
//! upstream's (its hyper parsing a header a layer adds is the upstream's cost, not parapet's: the
//! `parapet` column); wall time per request is reported as the
//! median of several rounds, alternated A B A B. The upstream's response is 5 bytes of text/plain, below
//! `min_size`, so `compress` negotiates but does not compress (the CPU of compression is the `gzip`
//! scenario of the nginx benchmark, benches/nginx.sh).
//!
//! Then each layer of the middleware catalogue alone, on its pass-through path (the request goes on),
//! against the bare proxy: `request_id` (an id made per request), `cors` (an allowed `Origin`),
//! `ip_filter` (the client in `allow`), `rate_limit` (a limit never reached), `basic_auth` (a user
//! and password already verified: the cache, not bcrypt), `rewrite` and `redirect` (a rule that does
//! not match: the full URL is assembled and matched),
//! `headers` with `response.replace` (no `Location` to rewrite), and `forward_auth` (asked of the
//! bench's own upstream, which answers 200: a loopback round trip per request).
//!
//! Arguments that are not flags select the catalogue layers measured by name
//! (`cargo bench --bench chain -- request_id rate_limit`).

mod support;

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http_body_util::BodyExt;
use parapet::build::Gateway;
use parapet::{Body, ClientAddr, Config, Registry};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// The allocations made outside the in-process upstream.
static OWN_ALLOCS: AtomicU64 = AtomicU64::new(0);

fn count(size: usize) {
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(size as u64, Ordering::Relaxed);
    if !support::IN_UPSTREAM.try_with(|c| c.get()).unwrap_or(false) {
        OWN_ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// Over mimalloc, as the parapet binary's own allocator (src/main.rs): what an allocation costs here
// is what it costs in production.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()).cast() }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { libmimalloc_sys::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast() }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// `cargo bench` passes `--bench`: the full measurement. `cargo test` runs this once as a quick smoke
/// test of every chain (a debug build would take minutes over the full counts).
static FULL: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::args().any(|a| a == "--bench"));

/// A count from the environment: `CHAIN_REQUESTS`, `CHAIN_LOCAL_REQUESTS` and `CHAIN_ROUNDS` make a
/// run short enough for valgrind (`valgrind --tool=callgrind target/release/deps/chain-* --bench`).
fn env_count(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

/// `name` from the environment, else `full` in a `cargo bench` run and `quick` under `cargo test`.
fn setting(name: &str, full: u64, quick: u64) -> u64 {
    env_count(name).unwrap_or(if *FULL { full } else { quick })
}

fn requests() -> u64 {
    setting("CHAIN_REQUESTS", 20_000, 200)
}

/// Requests per round in-process (no socket): each costs about a microsecond.
fn local_requests() -> u64 {
    setting("CHAIN_LOCAL_REQUESTS", 200_000, 200)
}

fn rounds() -> usize {
    setting("CHAIN_ROUNDS", 5, 1) as usize
}

/// `alice:s3cret`, bcrypt at cost 4.
const HTPASSWD: &str = "alice:$2b$04$5SIef7Yjo0IyerS1kAo2yuhY82HkhfSSR.AwhZHW/betGmDSPuY6m\n";

/// The catalogue's layers, each measured alone: (name in the report, the chain).
const CATALOGUE: [(&str, &str); 9] = [
    ("request_id", r#"["rid"]"#),
    ("cors", r#"["browser"]"#),
    ("ip_filter", r#"["office"]"#),
    ("rate_limit", r#"["quota"]"#),
    ("basic_auth", r#"["users"]"#),
    ("rewrite", r#"["v1"]"#),
    ("redirect", r#"["moved"]"#),
    ("headers.replace", r#"["fix"]"#),
    ("forward_auth", r#"["sso"]"#),
];

fn config(up: std::net::SocketAddr, chain: &str, log: &std::path::Path) -> String {
    catalogue_config(up, chain, log, r#"upstream = "up""#)
}

/// The catalogue's config around an in-process endpoint answering `hello` at once: what a layer
/// costs with no socket in the measure.
fn local_config(up: std::net::SocketAddr, chain: &str, log: &std::path::Path) -> String {
    catalogue_config(
        up,
        chain,
        log,
        r#"handler = { kind = "respond", status = 200, body = "hello" }"#,
    )
}

fn catalogue_config(
    up: std::net::SocketAddr,
    chain: &str,
    log: &std::path::Path,
    endpoint: &str,
) -> String {
    let htpasswd = log.with_file_name("htpasswd");
    format!(
        r#"{}
[middlewares.rid]
kind = "request_id"
[middlewares.browser]
kind = "cors"
origins = ["https://app.example.com"]
credentials = true
[middlewares.office]
kind = "ip_filter"
allow = ["127.0.0.0/8"]
[middlewares.quota]
kind = "rate_limit"
rate = "1000000000/s"
burst = 1000000000
[middlewares.users]
kind = "basic_auth"
users = "{}"
[middlewares.v1]
kind = "rewrite"
path = {{ regex = "^/v1/(.*)$", to = "/api/$1" }}
[middlewares.moved]
kind = "redirect"
regex = "^https?://old\\.example\\.com/(.*)$"
to = "https://new.example.com/$1"
status = 301
[middlewares.fix]
kind = "headers"
response.replace = {{ "location" = {{ regex = "^http://backend/(.*)$", to = "https://example.com/$1" }} }}
[middlewares.sso]
kind = "forward_auth"
url = "http://{up}/auth"
"#,
        base_config(up, chain, log).replace(r#"upstream = "up""#, endpoint),
        htpasswd.display()
    )
}

fn base_config(up: std::net::SocketAddr, chain: &str, log: &std::path::Path) -> String {
    format!(
        r#"
[listeners.main]
bind = "127.0.0.1:0"
[[routes]]
app = "app"
[apps.app]
middlewares = {chain}
upstream = "up"
[upstreams.up]
servers = ["http://{up}"]
[middlewares.log]
kind = "access_log"
format = "json"
path = "{}"
[middlewares.secure]
kind = "headers"
response.set = {{ "x-frame-options" = "DENY" }}
request.set = {{ "x-edge" = "parapet" }}
"#,
        log.display()
    )
}

struct Sample {
    allocs: f64,
    /// Without the in-process upstream's.
    own: f64,
    bytes: f64,
    micros: f64,
}

async fn run(gateway: &Gateway) -> Sample {
    run_n(gateway, requests()).await
}

async fn run_n(gateway: &Gateway, n: u64) -> Sample {
    let entry = gateway.entry("main").unwrap().clone();
    let client = ClientAddr("127.0.0.1:40000".parse().unwrap());
    let a0 = ALLOCS.load(Ordering::Relaxed);
    let o0 = OWN_ALLOCS.load(Ordering::Relaxed);
    let b0 = BYTES.load(Ordering::Relaxed);
    let t0 = Instant::now();
    for _ in 0..n {
        let mut req = http::Request::get("/x?y=1")
            .header("host", "bench.local")
            .header("accept-encoding", "gzip")
            .header("user-agent", "bench")
            .header("origin", "https://app.example.com")
            .header("authorization", "Basic YWxpY2U6czNjcmV0")
            .body(Body::empty())
            .unwrap();
        req.extensions_mut().insert(client);
        let res = entry.handle(req).await;
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello");
    }
    let elapsed = t0.elapsed();
    Sample {
        allocs: (ALLOCS.load(Ordering::Relaxed) - a0) as f64 / n as f64,
        own: (OWN_ALLOCS.load(Ordering::Relaxed) - o0) as f64 / n as f64,
        bytes: (BYTES.load(Ordering::Relaxed) - b0) as f64 / n as f64,
        micros: elapsed.as_secs_f64() * 1e6 / n as f64,
    }
}

/// Median allocations (all, parapet's), bytes and µs per request of a series.
fn summary(s: &[Sample]) -> (f64, f64, f64, f64) {
    (
        median(s.iter().map(|x| x.allocs).collect()),
        median(s.iter().map(|x| x.own).collect()),
        median(s.iter().map(|x| x.bytes).collect()),
        median(s.iter().map(|x| x.micros).collect()),
    )
}

/// The spread of the µs of a series: (min, max).
fn range(s: &[Sample]) -> (f64, f64) {
    s.iter().fold((f64::MAX, f64::MIN), |(lo, hi), x| {
        (lo.min(x.micros), hi.max(x.micros))
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// `CHAIN_COUNT=NAME`: only `CHAIN_LOCAL_REQUESTS` requests through the in-process app of one
/// catalogue layer (`bare` for none), nothing else: for counting its instructions under callgrind,
/// where two runs of different lengths give the cost per request by their difference
/// (benches/layer-counts.sh). With `CHAIN_COUNT_PROXIED=1`, the proxied app instead.
async fn count_one(
    up: std::net::SocketAddr,
    log: &std::path::Path,
    registry: &Registry,
    name: &str,
) {
    let chain = match name {
        "bare" => "[]",
        _ => match CATALOGUE.iter().find(|(n, _)| *n == name) {
            Some((_, chain)) => chain,
            None => panic!("CHAIN_COUNT: no layer {name:?}"),
        },
    };
    // `CHAIN_COUNT_PROXIED=1`: through the upstream over loopback instead.
    let text = match std::env::var_os("CHAIN_COUNT_PROXIED") {
        Some(_) => config(up, chain, log),
        None => local_config(up, chain, log),
    };
    let config = Config::parse("count.toml", &text, registry).unwrap();
    let gateway = Gateway::build(&config, registry, None).unwrap();
    let sample = run_n(&gateway, local_requests()).await;
    println!(
        "{name}: {} requests, {:.2} allocations/request",
        local_requests(),
        sample.allocs
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let up = support::hello_upstream().await;
        let dir = std::env::temp_dir().join(format!("parapet-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("access.log");
        std::fs::write(dir.join("htpasswd"), HTPASSWD).unwrap();
        let registry = Registry::new();
        if let Ok(name) = std::env::var("CHAIN_COUNT") {
            count_one(up, &log, &registry, &name).await;
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        let bare = Config::parse("bare.toml", &config(up, "[]", &log), &registry).unwrap();
        let chain = Config::parse(
            "chain.toml",
            &config(up, r#"["log", "secure", "compress", "errors"]"#, &log),
            &registry,
        )
        .unwrap();
        let bare = Gateway::build(&bare, &registry, None).unwrap();
        let chain = Gateway::build(&chain, &registry, None).unwrap();
        // Warm the connection pools and the log writer.
        run(&bare).await;
        run(&chain).await;

        let (mut b, mut c) = (Vec::new(), Vec::new());
        for _ in 0..rounds() {
            b.push(run(&bare).await);
            c.push(run(&chain).await);
        }
        parapet_middlewares::host::flush_all();
        let report = |name: &str, s: &[Sample]| {
            let (allocs, own, bytes, micros) = summary(s);
            println!("{name:<6} allocations/request {allocs:7.2} ({own:.2} parapet's)   bytes/request {bytes:8.0}   µs/request {micros:7.2} (median of {} x {})", rounds(), requests());
            (allocs, bytes, micros)
        };
        let (ba, bb, bt) = report("bare", &b);
        let (ca, cb, ct) = report("chain", &c);
        println!(
            "chain - bare: {:+.2} allocations, {:+.0} bytes, {:+.2} µs per request; time ratio {:.2}",
            ca - ba,
            cb - bb,
            ct - bt,
            ct / bt
        );

        // Each catalogue layer alone against the bare proxy, alternated the same way.
        let only: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with('-'))
            .collect();
        for (name, chain) in CATALOGUE {
            if !only.is_empty() && !only.iter().any(|o| name.contains(o.as_str())) {
                continue;
            }
            let layer = Config::parse("layer.toml", &config(up, chain, &log), &registry).unwrap();
            let layer = Gateway::build(&layer, &registry, None).unwrap();
            run(&layer).await;
            let (mut b, mut l) = (Vec::new(), Vec::new());
            for _ in 0..rounds() {
                b.push(run(&bare).await);
                l.push(run(&layer).await);
            }
            let (ba, bo, bb, bt) = summary(&b);
            let (la, lo, lb, lt) = summary(&l);
            let (lmin, lmax) = range(&l);
            println!(
                "{name:<16} {:+6.2} allocations ({:+6.2} parapet's), {:+6.0} bytes ({lb:.0} in all), {:+6.2} µs per request (layer {lmin:.2}..{lmax:.2}, bare {bt:.2})",
                la - ba,
                lo - bo,
                lb - bb,
                lt - bt
            );
            // The same layer around an in-process endpoint: the µs it adds, without the loopback
            // round trip's noise. Each round's difference against the bare round next to it.
            let local = |chain: &str| {
                let config = Config::parse("local.toml", &local_config(up, chain, &log), &registry);
                Gateway::build(&config.unwrap(), &registry, None).unwrap()
            };
            let (bare_local, layer_local) = (local("[]"), local(chain));
            run_n(&bare_local, local_requests()).await;
            run_n(&layer_local, local_requests()).await;
            let (mut b, mut l, mut d) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..rounds() {
                let x = run_n(&bare_local, local_requests()).await;
                let y = run_n(&layer_local, local_requests()).await;
                d.push(y.micros - x.micros);
                b.push(x);
                l.push(y);
            }
            let (ba, bo, _, bt) = summary(&b);
            let (la, lo, _, lt) = summary(&l);
            let (dmin, dmax) = d.iter().fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
            println!(
                "{:<16} {:+6.2} allocations ({:+6.2} parapet's) in-process,        {:+6.3} µs per request (median of the rounds' differences {:+.3}, {dmin:+.3}..{dmax:+.3}; layer {lt:.3}, bare {bt:.3})",
                "",
                la - ba,
                lo - bo,
                lt - bt,
                median(d.clone()),
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    });
}
