//! `basic_auth`: bcrypt's cost is paid once per user and password, not per request.
//!
//! `cargo bench --bench basic_auth` makes an htpasswd entry at bcrypt's usual cost (10, what
//! `htpasswd -B` writes), then sends requests with that user's credentials through
//! [`BasicAuthLayer::check`], what the layer does per request:
//!
//! - the first request is not remembered: its check hands a verification to a blocking thread
//!   (bcrypt), which it waits for;
//! - every later one within [`CACHE_TTL`] is admitted by the cache, on the spot;
//! - a wrong password is never remembered: each attempt costs a verification.
//!
//! It reports the time of each kind and how many of the requests needed bcrypt. Under `cargo test`
//! it runs with bcrypt's least cost and a few requests, as a smoke test.

use std::time::{Duration, Instant};

use parapet::Body;
use parapet_middlewares::basic_auth::{htpasswd, BasicAuthLayer, Check, CACHE_TTL};

/// `alice:s3cret` in base64.
const RIGHT: &str = "Basic YWxpY2U6czNjcmV0";
/// `alice:guess` in base64.
const WRONG: &str = "Basic YWxpY2U6Z3Vlc3M=";

fn request(authorization: &str) -> http::Request<Body> {
    http::Request::get("/admin")
        .header("authorization", authorization)
        .body(Body::empty())
        .unwrap()
}

/// Checks one request: whether bcrypt ran, whether it was admitted, and how long it took.
async fn check(layer: &BasicAuthLayer, mut req: http::Request<Body>) -> (bool, bool, Duration) {
    let t0 = Instant::now();
    let (verified, admitted) = match layer.check(&mut req) {
        Check::Admitted => (false, true),
        Check::Refused(_) => (false, false),
        Check::Verify(verification) => (true, verification.run(req).await.is_ok()),
    };
    (verified, admitted, t0.elapsed())
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (cost, cached) = if bench { (10, 1_000_000) } else { (4, 1_000) };
    let hash = bcrypt::hash("s3cret", cost).unwrap();
    let layer = BasicAuthLayer::new(
        "admin",
        htpasswd(&format!("alice:{hash}\n")).unwrap(),
        false,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (verified, admitted, first) = check(&layer, request(RIGHT)).await;
        assert!(verified && admitted, "the first request is verified by bcrypt");
        println!(
            "bcrypt cost {cost}: the first request (bcrypt on a blocking thread) took {:.1} ms",
            first.as_secs_f64() * 1e3
        );

        // The next ones: all from the cache. The request is made outside the timed part.
        let mut verifications = 0;
        let mut spent = Duration::ZERO;
        for _ in 0..cached {
            let (verified, admitted, took) = check(&layer, request(RIGHT)).await;
            assert!(admitted);
            verifications += u32::from(verified);
            spent += took;
        }
        println!(
            "the next {cached} requests within {}s: {verifications} verified by bcrypt, {:.3} µs per check",
            CACHE_TTL.as_secs(),
            spent.as_secs_f64() * 1e6 / f64::from(cached)
        );
        assert_eq!(verifications, 0, "a remembered pair needs no bcrypt");

        // A wrong password: bcrypt each time, never remembered.
        let attempts = 3;
        let mut spent = Duration::ZERO;
        for _ in 0..attempts {
            let (verified, admitted, took) = check(&layer, request(WRONG)).await;
            assert!(verified && !admitted);
            spent += took;
        }
        println!(
            "a wrong password, {attempts} attempts: each verified by bcrypt, {:.1} ms per attempt",
            spent.as_secs_f64() * 1e3 / f64::from(attempts)
        );
    });
}
