//! Reloads under load: zero failed requests, and the time from a file write to the new config serving.
//!
//! `cargo bench --bench reload` starts parapet in-process with its config watch, an upstream on
//! loopback, and 8 clients sending requests back to back through keep-alive connections for the whole
//! run. Meanwhile the config file is rewritten `RELOADS` times (by rename, as editors and ConfigMaps
//! do), each version setting a new `x-generation` response header, and a probe measures how long
//! after the write the new generation is served. Every response is checked: any status but 200, or any
//! transport error, is a failure. Bounded: loopback only, a fixed number of reloads.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parapet::{Body, Config, Registry, Server};

const RELOADS: usize = 25;
const CLIENTS: usize = 8;
const BETWEEN: Duration = Duration::from_millis(150);

fn config(up: std::net::SocketAddr, generation: usize) -> String {
    format!(
        r#"
[listeners.main]
bind = "127.0.0.1:0"
[[routes]]
app = "api"
[apps.api]
middlewares = ["tag"]
upstream = "up"
[upstreams.up]
servers = ["http://{up}"]
[middlewares.tag]
kind = "headers"
response.set = {{ "x-generation" = "{generation}" }}
"#
    )
}

async fn fetch(
    client: &Client<HttpConnector, Body>,
    addr: std::net::SocketAddr,
) -> Result<Option<usize>, String> {
    let req = http::Request::get(format!("http://{addr}/"))
        .body(Body::empty())
        .unwrap();
    let res = client.request(req).await.map_err(|e| e.to_string())?;
    if res.status() != 200 {
        return Err(format!("status {}", res.status()));
    }
    let generation = res
        .headers()
        .get("x-generation")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if &body[..] != b"hello" {
        return Err("wrong body".into());
    }
    Ok(generation)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let up = support::hello_upstream().await;
        let dir = std::env::temp_dir().join(format!("parapet-reload-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("parapet.toml");
        std::fs::write(&path, config(up, 0)).unwrap();
        let registry = Registry::new();
        let server = Arc::new(Server::start(Config::load(&path, &registry).unwrap(), registry).await.unwrap());
        let _watch = parapet::reload::watch(Arc::clone(&server), &path).unwrap();
        let addr = server.local_addr("main").unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            clients.push(tokio::spawn(async move {
                let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
                while !stop.load(Ordering::Relaxed) {
                    match fetch(&client, addr).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("failed request: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            }));
        }

        let probe = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let started = Instant::now();
        let mut latencies = Vec::new();
        for generation in 1..=RELOADS {
            tokio::time::sleep(BETWEEN).await;
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, config(up, generation)).unwrap();
            let written = Instant::now();
            std::fs::rename(&tmp, &path).unwrap();
            loop {
                if let Ok(Some(g)) = fetch(&probe, addr).await {
                    if g == generation {
                        break;
                    }
                }
                assert!(written.elapsed() < Duration::from_secs(5), "generation {generation} never served");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            latencies.push(written.elapsed());
        }
        let elapsed = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.await.unwrap();
        }
        server.shutdown().await;

        latencies.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let status = server.reload_status();
        println!("{} reloads applied (generation {}) in {:.1} s under load from {CLIENTS} clients", RELOADS, status.generation, elapsed.as_secs_f64());
        println!(
            "requests: {} ok, {} failed",
            ok.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed)
        );
        println!(
            "file write to new config serving: median {:.1} ms, p90 {:.1} ms, max {:.1} ms (debounce {} ms included)",
            ms(latencies[latencies.len() / 2]),
            ms(latencies[latencies.len() * 9 / 10]),
            ms(*latencies.last().unwrap()),
            parapet::reload::QUIET.as_millis()
        );
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(failed.load(Ordering::Relaxed), 0, "requests failed during reloads");
    });
}
