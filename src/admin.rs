//! The admin listener (`[admin] bind = "127.0.0.1:9901"`): read-only endpoints for operators.
//!
//! | path | answer |
//! | --- | --- |
//! | `GET /healthz` | 200 `ok` while the process lives |
//! | `GET /readyz` | 200 `ready` once the config is loaded and every listener bound; 503 while shutting down |
//! | `GET /metrics` | every metric, OpenMetrics text ([`crate::metrics`]) |
//! | `GET /config` | the running config as JSON, with its generation and load time: names, addresses, routes, kinds; no setting of a kind (secrets, file contents) |
//! | `GET /upstreams` | each upstream's servers, with their health and load now |
//!
//! Any other method is 405, any other path 404. The admin listener is off unless configured; keep it
//! on loopback (or behind a network policy): it tells how the gateway is laid out.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, Method, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::{Config, EndpointConfig, HostMatch};

/// What the admin endpoints read: the running config and whether the server is ready.
pub struct AdminState {
    config: ArcSwap<Loaded>,
    shutting_down: AtomicBool,
}

/// A config as it runs: its generation and when it was loaded.
struct Loaded {
    config: Config,
    generation: u64,
    loaded_at: u64,
}

impl AdminState {
    /// The state for the config a server starts with.
    pub fn new(config: &Config) -> Arc<Self> {
        Arc::new(Self {
            config: ArcSwap::from_pointee(Loaded {
                config: config.clone(),
                generation: 1,
                loaded_at: now(),
            }),
            shutting_down: AtomicBool::new(false),
        })
    }

    /// A reload applied `config` as `generation`.
    pub fn loaded(&self, config: &Config, generation: u64) {
        self.config.store(Arc::new(Loaded {
            config: config.clone(),
            generation,
            loaded_at: now(),
        }));
    }

    /// The server stops: not ready any more.
    pub fn shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A running admin listener.
pub struct Admin {
    /// The address it is bound to.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the admin listener on `listener`.
pub fn start(listener: TcpListener, state: Arc<AdminState>) -> Admin {
    let addr = listener
        .local_addr()
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    tracing::info!(%addr, "admin listening");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, Infallible>(answer(&state, &req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Admin { addr, task }
}

/// Keeps the admin listener of a server in step with its config across reloads.
#[derive(Default)]
pub struct AdminSlot(Mutex<Option<Admin>>);

impl AdminSlot {
    /// The bound address, if an admin listener runs.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|a| a.addr)
    }

    /// Replaces the running admin listener (if any) by `next`.
    pub fn set(&self, next: Option<Admin>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = next;
    }
}

fn answer(state: &AdminState, req: &http::Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "read-only: GET or HEAD\n");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if state.shutting_down.load(Ordering::Acquire) => {
            text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
        }
        "/readyz" => text(StatusCode::OK, "ready\n"),
        "/metrics" => {
            let mut response = text(StatusCode::OK, crate::metrics::global().encode());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        "/config" => json_response(&config_json(&state.config.load())),
        "/upstreams" => json_response(&upstreams_live_json(&state.config.load().config)),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json_response(value: &Value) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::OK, value.to_string());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// The running config as JSON: its layout, never a kind's settings (they may hold secrets).
fn config_json(loaded: &Loaded) -> Value {
    let c = &loaded.config;
    let host = |h: &HostMatch| match h {
        HostMatch::Any => Value::Null,
        HostMatch::Exact(name) => Value::from(name.as_str()),
        HostMatch::Wildcard(suffix) => Value::from(format!("*{suffix}")),
    };
    json!({
        "generation": loaded.generation,
        "loaded_at": loaded.loaded_at,
        "path": c.path.display().to_string(),
        "server": {
            "workers": c.server.workers,
            "shutdown_timeout_ms": c.server.shutdown_timeout.as_millis() as u64,
            "header_timeout_ms": c.server.header_timeout.as_millis() as u64,
            "body_timeout_ms": c.server.body_timeout.as_millis() as u64,
            "max_connections": c.server.max_connections,
        },
        "listeners": c.listeners.iter().map(|l| json!({
            "name": l.name,
            "bind": l.bind.to_string(),
            "middlewares": l.middlewares,
        })).collect::<Vec<_>>(),
        "routes": c.routes.iter().map(|r| json!({
            "listeners": r.listeners,
            "host": host(&r.host),
            "path": r.path,
            "strip_prefix": r.strip_prefix,
            "app": r.app,
        })).collect::<Vec<_>>(),
        "apps": c.apps.iter().map(|(name, a)| (name.clone(), json!({
            "middlewares": a.middlewares,
            "endpoint": match &a.endpoint {
                EndpointConfig::Upstream(u) => json!({ "upstream": u }),
                EndpointConfig::Handler(h) => json!({ "handler": h.kind }),
            },
        }))).collect::<serde_json::Map<_, _>>(),
        "middlewares": c.middlewares.iter().map(|(name, m)| (name.clone(), json!({
            "kind": m.kind,
            "implicit": m.implicit,
        }))).collect::<serde_json::Map<_, _>>(),
        "upstreams": upstreams_json(c),
    })
}

/// `/upstreams`: each upstream of the running config, and each of its servers with its health and load
/// now (see [`crate::metrics::live_servers`]).
fn upstreams_live_json(c: &Config) -> Value {
    let live = crate::metrics::live_servers();
    c.upstreams
        .iter()
        .map(|(name, u)| {
            let servers: Vec<Value> = u
                .servers
                .iter()
                .map(|s| {
                    let url = s.to_string();
                    let view = live.get(&(name.clone(), url.clone()));
                    json!({
                        "url": url,
                        "weight": s.weight,
                        "healthy": view.map(|v| v.healthy),
                        "ejected": view.map(|v| v.ejected),
                        "up": view.map(|v| v.healthy && !v.ejected),
                        "in_flight": view.map(|v| v.load.in_flight),
                        "latency_ms": view.map(|v| (v.load.latency_ms * 1000.0).round() / 1000.0),
                        "failures_in_a_row": view.map(|v| v.load.failures),
                    })
                })
                .collect();
            (
                name.clone(),
                json!({
                    "servers": servers,
                    "balance": match u.balance {
                        crate::config::Balance::RoundRobin => "round_robin",
                        crate::config::Balance::LeastRequests => "least_requests",
                        crate::config::Balance::Random => "random",
                        crate::config::Balance::Hash(_) => "hash",
                    },
                    "connect_timeout_ms": u.connect_timeout.as_millis() as u64,
                    "timeout_ms": u.timeout.as_millis() as u64,
                }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn upstreams_json(c: &Config) -> Value {
    c.upstreams
        .iter()
        .map(|(name, u)| {
            (
                name.clone(),
                json!({
                    "servers": u.servers.iter().map(|s| json!({ "url": s.to_string() })).collect::<Vec<_>>(),
                    "connect_timeout_ms": u.connect_timeout.as_millis() as u64,
                    "timeout_ms": u.timeout.as_millis() as u64,
                }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}
