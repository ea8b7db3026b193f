//! Upstreams that fail gracefully, with several real upstream servers started by each test (some
//! slow, some failing, some killed mid-run): balancing, health, ejection, retries, capacity,
//! read_timeout and state across reloads.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use http_body_util::BodyExt;
use parapet::{Body, Config, Registry, Server};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// A server answering every request with its `label`, after `delay`, counting what it served; it
/// stops (listener and every connection closed) when `kill` is called.
struct Labeled {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Labeled {
    async fn start(label: &'static str, status: u16, delay: Duration) -> Labeled {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&hits);
        let task = tokio::spawn(async move {
            // Dropped with this task: every connection ends with it.
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let hits = Arc::clone(&counted);
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        let hits = Arc::clone(&hits);
                        async move {
                            hits.fetch_add(1, Ordering::SeqCst);
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            Ok::<_, std::convert::Infallible>(text(status, label))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Labeled { addr, hits, task }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops the server and waits until it has: the listener task is cancelled, and the connections
    /// it held are aborted with it, so no request already queued on one is still counted after.
    async fn kill(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

fn url(addr: SocketAddr) -> String {
    format!("\"http://{addr}\"")
}

fn weighted(addr: SocketAddr, weight: u32) -> String {
    format!("{{ url = \"http://{addr}\", weight = {weight} }}")
}

async fn labels(
    addr: SocketAddr,
    n: usize,
    header: Option<(&str, String)>,
) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let mut req = http::Request::get(format!("http://{addr}/"));
        if let Some((name, value)) = &header {
            req = req.header(*name, value);
        }
        let (status, _, body) = send(req.body(Body::empty()).unwrap()).await;
        assert_eq!(status, 200, "{body}");
        *counts.entry(body).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn round_robin_respects_weights_exactly() {
    let a = Labeled::start("a", 200, Duration::ZERO).await;
    let b = Labeled::start("b", 200, Duration::ZERO).await;
    let c = Labeled::start("c", 200, Duration::ZERO).await;
    let servers = [url(a.addr), weighted(b.addr, 2), weighted(c.addr, 3)];
    let server = start(&upstream_config(&servers, "")).await;
    let addr = server.local_addr("main").unwrap();
    let counts = labels(addr, 120, None).await;
    assert_eq!(counts["a"], 20, "{counts:?}");
    assert_eq!(counts["b"], 40, "{counts:?}");
    assert_eq!(counts["c"], 60, "{counts:?}");
}

#[tokio::test]
async fn random_spreads_requests_by_weight() {
    let a = Labeled::start("a", 200, Duration::ZERO).await;
    let b = Labeled::start("b", 200, Duration::ZERO).await;
    let servers = [url(a.addr), weighted(b.addr, 3)];
    let server = start(&upstream_config(&servers, "balance = \"random\"")).await;
    let addr = server.local_addr("main").unwrap();
    let counts = labels(addr, 400, None).await;
    // Expected 100 and 300; these bounds are many standard deviations (about 8.7) away.
    assert!((50..=150).contains(&counts["a"]), "{counts:?}");
    assert!((250..=350).contains(&counts["b"]), "{counts:?}");
}

#[tokio::test]
async fn least_requests_sends_most_requests_to_the_fast_server() {
    let fast = Labeled::start("fast", 200, Duration::ZERO).await;
    let slow = Labeled::start("slow", 200, Duration::from_millis(200)).await;
    let servers = [url(fast.addr), url(slow.addr)];
    let server = start(&upstream_config(&servers, "balance = \"least_requests\"")).await;
    let addr = server.local_addr("main").unwrap();
    let mut clients = JoinSet::new();
    for _ in 0..4 {
        clients.spawn(async move { labels(addr, 25, None).await });
    }
    let mut total: HashMap<String, usize> = HashMap::new();
    while let Some(counts) = clients.join_next().await {
        for (k, v) in counts.unwrap() {
            *total.entry(k).or_default() += v;
        }
    }
    let slow_count = total.get("slow").copied().unwrap_or(0);
    assert!(total["fast"] > 3 * slow_count, "{total:?}");
}

#[tokio::test]
async fn hash_keeps_a_key_on_its_server_and_a_new_server_moves_about_a_quarter_of_keys() {
    let a = Labeled::start("a", 200, Duration::ZERO).await;
    let b = Labeled::start("b", 200, Duration::ZERO).await;
    let c = Labeled::start("c", 200, Duration::ZERO).await;
    let d = Labeled::start("d", 200, Duration::ZERO).await;
    let extra = "balance = \"hash\"\nhash_key = \"header:x-user\"";
    let three = start(&upstream_config(
        &[url(a.addr), url(b.addr), url(c.addr)],
        extra,
    ))
    .await;
    let four = start(&upstream_config(
        &[url(a.addr), url(b.addr), url(c.addr), url(d.addr)],
        extra,
    ))
    .await;
    let (three, four) = (
        three.local_addr("main").unwrap(),
        four.local_addr("main").unwrap(),
    );
    let keys = 400;
    let mut moved = 0;
    let mut per_server: HashMap<String, usize> = HashMap::new();
    for k in 0..keys {
        let user = Some(("x-user", format!("user-{k}")));
        let before = labels(three, 2, user.clone()).await;
        assert_eq!(before.len(), 1, "a key stays on one server: {before:?}");
        let before = before.into_keys().next().unwrap();
        let after = labels(four, 1, user).await.into_keys().next().unwrap();
        if before != after {
            assert_eq!(after, "d", "a key moves only to the new server");
            moved += 1;
        }
        *per_server.entry(before).or_default() += 1;
    }
    // About 1/4 of the keys move; fewer than 2/4.
    assert!(
        moved > keys / 8 && moved < keys / 2,
        "moved {moved} of {keys}"
    );
    for (server, n) in &per_server {
        assert!(
            *n > keys / 6,
            "{server} got {n} of {keys} keys: {per_server:?}"
        );
    }
}

#[tokio::test]
async fn no_get_fails_when_a_server_dies_under_load() {
    let a = Labeled::start("a", 200, Duration::ZERO).await;
    let mut b = Labeled::start("b", 200, Duration::ZERO).await;
    let c = Labeled::start("c", 200, Duration::ZERO).await;
    let servers = [url(a.addr), url(b.addr), url(c.addr)];
    let server = start(&upstream_config(&servers, "")).await;
    let addr = server.local_addr("main").unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let mut clients = JoinSet::new();
    for _ in 0..4 {
        let done = Arc::clone(&done);
        clients.spawn(async move {
            let client = client();
            let mut failed = Vec::new();
            for _ in 0..200 {
                let req = http::Request::get(format!("http://{addr}/"))
                    .body(Body::empty())
                    .unwrap();
                match client.request(req).await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.into_body().collect().await;
                    }
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            failed
        });
    }
    // Kill b a quarter of the way through.
    let deadline = Instant::now() + Duration::from_secs(30);
    while done.load(Ordering::SeqCst) < 200 {
        assert!(Instant::now() < deadline, "clients stalled");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    b.kill().await;
    let at_kill = b.hits();
    let mut failed = Vec::new();
    while let Some(f) = clients.join_next().await {
        failed.extend(f.unwrap());
    }
    assert!(failed.is_empty(), "failed GETs: {failed:?}");
    assert_eq!(b.hits(), at_kill, "nothing reaches a dead server");
    assert!(a.hits() + c.hits() + at_kill >= 800);
}

#[tokio::test]
async fn a_server_failing_its_health_checks_gets_no_traffic_until_it_recovers() {
    let sick = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let (s, c) = (Arc::clone(&sick), Arc::clone(&served));
    let a = upstream(move |req: http::Request<hyper::body::Incoming>| {
        let (sick, served) = (Arc::clone(&s), Arc::clone(&c));
        async move {
            if req.uri().path() == "/healthz" {
                let status = if sick.load(Ordering::SeqCst) {
                    500
                } else {
                    200
                };
                return text(status, "health");
            }
            served.fetch_add(1, Ordering::SeqCst);
            text(200, "a")
        }
    })
    .await;
    let b = Labeled::start("b", 200, Duration::ZERO).await;
    let extra =
        r#"health = { path = "/healthz", interval = "50ms", timeout = "1s", rise = 2, fall = 2 }"#;
    let server = start(&upstream_config(&[url(a), url(b.addr)], extra)).await;
    let addr = server.local_addr("main").unwrap();
    assert!(labels(addr, 10, None).await.contains_key("a"));

    sick.store(true, Ordering::SeqCst);
    // Down after two failed checks (about 100 ms); then a's share stays zero.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = served.load(Ordering::SeqCst);
        let counts = labels(addr, 10, None).await;
        if served.load(Ordering::SeqCst) == before && counts["b"] == 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a still served after its checks failed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sick.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !labels(addr, 10, None).await.contains_key("a") {
        assert!(
            Instant::now() < deadline,
            "a not back after its checks passed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_failing_server_is_ejected_and_again_for_twice_as_long() {
    // a always answers 503: the GETs are retried on b and succeed; a is ejected after 2 failures.
    let hits: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let seen = Arc::clone(&hits);
    let a = upstream(move |_req| {
        let seen = Arc::clone(&seen);
        async move {
            seen.lock().unwrap().push(Instant::now());
            text(503, "a")
        }
    })
    .await;
    let b = Labeled::start("b", 200, Duration::ZERO).await;
    let extra = r#"eject = { failures = 2, duration = "300ms" }"#;
    let server = start(&upstream_config(&[url(a), url(b.addr)], extra)).await;
    let addr = server.local_addr("main").unwrap();
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let counts = labels(addr, 1, None).await;
        assert_eq!(counts["b"], 1, "{counts:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let hits = hits.lock().unwrap().clone();
    let gaps: Vec<Duration> = hits.windows(2).map(|w| w[1] - w[0]).collect();
    let long: Vec<Duration> = gaps
        .iter()
        .copied()
        .filter(|g| *g >= Duration::from_millis(250))
        .collect();
    assert!(long.len() >= 2, "ejections: {gaps:?}");
    assert!(long[0] >= Duration::from_millis(300), "{gaps:?}");
    assert!(long[1] >= Duration::from_millis(600), "doubled: {gaps:?}");
    // Ejected, a is not asked at all: it got at most a few requests between ejections.
    assert!(hits.len() <= 2 * (long.len() + 1) + 2, "{gaps:?}");
}

#[tokio::test]
async fn a_post_whose_body_went_out_is_not_retried_and_a_get_is() {
    let a = Labeled::start("a", 502, Duration::ZERO).await;
    let b = Labeled::start("b", 502, Duration::ZERO).await;
    let server = start(&upstream_config(
        &[url(a.addr), url(b.addr)],
        "retry_on = [\"502\"]",
    ))
    .await;
    let addr = server.local_addr("main").unwrap();
    let req = http::Request::post(format!("http://{addr}/"))
        .body(Body::from("order=1"))
        .unwrap();
    let (status, _, _) = send(req).await;
    assert_eq!(status, 502);
    assert_eq!(a.hits() + b.hits(), 1, "the POST reached an upstream once");

    let (status, _, _) = get(addr, None, "/").await;
    assert_eq!(status, 502);
    assert_eq!(
        a.hits() + b.hits(),
        1 + 3,
        "the GET was tried 1 + retries (2) times"
    );
}

#[tokio::test]
async fn a_post_is_retried_when_it_never_reached_a_server() {
    let dead = dead_address().await;
    let b = Labeled::start("b", 200, Duration::ZERO).await;
    let server = start(&upstream_config(&[url(dead), url(b.addr)], "")).await;
    let addr = server.local_addr("main").unwrap();
    for _ in 0..4 {
        let req = http::Request::post(format!("http://{addr}/"))
            .body(Body::from("order=1"))
            .unwrap();
        let (status, _, body) = send(req).await;
        assert_eq!((status, body.as_str()), (200, "b"));
    }
    assert_eq!(b.hits(), 4);
}

#[tokio::test]
async fn a_saturated_server_answers_503_with_retry_after() {
    let slow = Labeled::start("slow", 200, Duration::from_secs(3)).await;
    let extra = "max_connections = 1\nqueue_timeout = \"200ms\"";
    let server = start(&upstream_config(&[url(slow.addr)], extra)).await;
    let addr = server.local_addr("main").unwrap();
    let first = tokio::spawn(async move { get(addr, None, "/").await.0 });
    let deadline = Instant::now() + Duration::from_secs(10);
    while slow.hits() == 0 {
        assert!(Instant::now() < deadline, "first request never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let (status, headers, _) = get(addr, None, "/").await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "1");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(
        slow.hits(),
        1,
        "the waiting request never reached the server"
    );
    assert_eq!(first.await.unwrap(), 200);
}

#[tokio::test]
async fn read_timeout_aborts_a_stalled_response_body() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stalled = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello")
                    .await;
                // Then nothing, holding the connection open.
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    let server = start(&upstream_config(
        &[url(stalled)],
        "read_timeout = \"300ms\"",
    ))
    .await;
    let addr = server.local_addr("main").unwrap();
    let response = client()
        .request(
            http::Request::get(format!("http://{addr}/"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let started = Instant::now();
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .expect("the body ends well before 10 s");
    assert!(body.is_err(), "a stalled body is aborted, not ended");
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn server_state_survives_a_reload_that_changes_other_keys() {
    let a = Labeled::start("a", 503, Duration::ZERO).await;
    let b = Labeled::start("b", 200, Duration::ZERO).await;
    let servers = [url(a.addr), url(b.addr)];
    let eject = r#"eject = { failures = 1, duration = "60s" }"#;
    let registry = Registry::new();
    let first = Config::parse("test.toml", &upstream_config(&servers, eject), &registry).unwrap();
    let server = Arc::new(Server::start(first, registry.clone()).await.unwrap());
    let addr = server.local_addr("main").unwrap();
    // a fails once (retried on b) and is ejected for a minute.
    labels(addr, 4, None).await;
    assert_eq!(a.hits(), 1);
    let changed = format!("{eject}\ntimeout = \"20s\"\nmax_idle = 8");
    let second =
        Config::parse("test.toml", &upstream_config(&servers, &changed), &registry).unwrap();
    server.reload(second).await.unwrap();
    let counts = labels(addr, 10, None).await;
    assert_eq!(counts["b"], 10);
    assert_eq!(a.hits(), 1, "a is still ejected after the reload");
}

#[tokio::test]
async fn a_removed_upstreams_health_checks_stop() {
    let checks = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&checks);
    let a = upstream(move |_req| {
        let c = Arc::clone(&c);
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            text(200, "a")
        }
    })
    .await;
    let health = r#"health = { path = "/healthz", interval = "20ms" }"#;
    let registry = Registry::new();
    let first = Config::parse("test.toml", &upstream_config(&[url(a)], health), &registry).unwrap();
    let server = Arc::new(Server::start(first, registry.clone()).await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while checks.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "no health checks");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let without = r#"
[listeners.main]
bind = "127.0.0.1:0"
[[routes]]
app = "hello"
[apps.hello]
handler = { kind = "respond", body = "hi" }
"#;
    server
        .reload(Config::parse("test.toml", without, &registry).unwrap())
        .await
        .unwrap();
    // A check in flight at the reload may still land.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = checks.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(checks.load(Ordering::SeqCst), after, "checks go on");
}

/// The bodies upstreams received, with the status each answered.
type Received = Arc<Mutex<Vec<(u16, Vec<u8>)>>>;

#[tokio::test]
async fn a_small_put_is_retried_with_its_whole_body() {
    let bodies: Received = Arc::default();
    let answer = |status: u16, bodies: Received| {
        move |req: http::Request<hyper::body::Incoming>| {
            let bodies = Arc::clone(&bodies);
            async move {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                bodies.lock().unwrap().push((status, body.to_vec()));
                text(status, status.to_string())
            }
        }
    };
    let failing = upstream(answer(503, Arc::clone(&bodies))).await;
    let fine = upstream(answer(200, Arc::clone(&bodies))).await;
    let server = start(&upstream_config(&[url(failing), url(fine)], "")).await;
    let addr = server.local_addr("main").unwrap();
    let payload = "x".repeat(10_000);
    for _ in 0..2 {
        let req = http::Request::put(format!("http://{addr}/doc"))
            .body(Body::from(payload.clone()))
            .unwrap();
        let (status, _, body) = send(req).await;
        assert_eq!((status, body.as_str()), (200, "200"));
    }
    let bodies = bodies.lock().unwrap();
    assert!(bodies.iter().all(|(_, b)| b == payload.as_bytes()));
    assert_eq!(bodies.iter().filter(|(s, _)| *s == 200).count(), 2);
}

#[tokio::test]
async fn a_reload_changing_other_keys_keeps_the_servers_pooled_connections() {
    let accepted = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = listener.local_addr().unwrap();
    let counted = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(text(200, "a"))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let registry = Registry::new();
    let first = Config::parse("test.toml", &upstream_config(&[url(a)], ""), &registry).unwrap();
    let server = Arc::new(Server::start(first, registry.clone()).await.unwrap());
    let addr = server.local_addr("main").unwrap();
    labels(addr, 3, None).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    let changed = "retries = 1\nread_timeout = \"30s\"\nbalance = \"random\"";
    let second =
        Config::parse("test.toml", &upstream_config(&[url(a)], changed), &registry).unwrap();
    server.reload(second).await.unwrap();
    labels(addr, 3, None).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the pooled connection served on"
    );
}

#[tokio::test]
async fn when_every_server_is_down_parapet_still_tries_them() {
    // Both servers fail their health checks but would answer requests: panic mode sends to them.
    let checked = Arc::new(AtomicUsize::new(0));
    let sick = |checked: Arc<AtomicUsize>| {
        move |req: http::Request<hyper::body::Incoming>| {
            let checked = Arc::clone(&checked);
            async move {
                if req.uri().path() == "/healthz" {
                    checked.fetch_add(1, Ordering::SeqCst);
                    return text(500, "sick");
                }
                text(200, "served")
            }
        }
    };
    let a = upstream(sick(Arc::clone(&checked))).await;
    let b = upstream(sick(Arc::clone(&checked))).await;
    let extra = r#"health = { path = "/healthz", interval = "20ms", fall = 1 }"#;
    let server = start(&upstream_config(&[url(a), url(b)], extra)).await;
    let addr = server.local_addr("main").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    // Each server failed at least two checks (fall = 1): both are down.
    while checked.load(Ordering::SeqCst) < 4 {
        assert!(Instant::now() < deadline, "no health checks");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let counts = labels(addr, 6, None).await;
    assert_eq!(counts["served"], 6, "{counts:?}");
}

/// A request that named no host (HTTP/1.0) is told each server's own authority, the retried one's
/// too: after a dead server, and after a 503.
#[tokio::test]
async fn a_retry_of_a_request_without_host_names_the_server_it_goes_to() {
    let host_echo = common::upstream(|req: http::Request<hyper::body::Incoming>| async move {
        let host = req
            .headers()
            .get("host")
            .map(|h| h.to_str().unwrap().to_owned())
            .unwrap_or_default();
        common::text(200, format!("host={host}"))
    })
    .await;
    let busy = common::upstream(|_req: http::Request<hyper::body::Incoming>| async move {
        common::text(503, "busy")
    })
    .await;
    for first in [common::dead_address().await, busy] {
        let servers = [
            format!("\"http://{first}\""),
            format!("\"http://{host_echo}\""),
        ];
        let server = common::start(&common::upstream_config(
            &servers,
            "balance = \"round_robin\"\nretries = 1\nretry_on = [\"503\"]",
        ))
        .await;
        let addr = server.local_addr("main").unwrap();
        // Round robin: of two requests, one goes first to `first` and is retried.
        for _ in 0..2 {
            let raw = common::raw_request(addr, b"GET / HTTP/1.0\r\n\r\n").await;
            assert!(raw.starts_with("HTTP/1.0 200"), "{raw}");
            assert!(raw.ends_with(&format!("host={host_echo}")), "{raw}");
        }
        server.shutdown().await;
    }
}
