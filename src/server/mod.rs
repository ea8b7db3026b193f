//! Listeners and connections: accepting, serving HTTP/1.1 and HTTP/2 (h2c), reloading, shutting down.
//!
//! Every listener runs an accept loop. A connection's first bytes tell HTTP/1.1 from HTTP/2 with prior
//! knowledge (h2c) on the same port; HTTP/1.1 connections give back their buffers while idle
//! (`http1`). A connection looks up the current [`Gateway`] at each request, so a reload reaches
//! keep-alive connections at their next request while requests in flight finish on the gateway they
//! started with.
//!
//! A reload ([`Server::reload`]) binds what the new config adds or rebinds, builds the new gateway (every
//! route, chain, upstream client and error page), and only then swaps it in and starts and stops accept
//! loops: a config that fails anywhere leaves the running one untouched. A listener that is removed
//! stops accepting; its connections finish their requests and close.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use parapet_middlewares::host::report_final_status;
use parapet_middlewares::{Body, GatewayError, GatewayErrorKind};
use pin_project_lite::pin_project;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, ListenerConfig, ServerConfig};
use crate::gateway::Gateway;
use crate::service::AppFuture;
use crate::{AppService, ClientAddr, Request, Response};

mod http1;

use http1::ServedBody;

/// A running parapet: its listeners and the gateway they serve. Shared (`Arc<Server>`) between the
/// code that reloads it, the code that stops it, and anyone asking for its addresses.
pub struct Server {
    gateway: Arc<ArcSwap<Gateway>>,
    builders: Arc<Builders>,
    inner: tokio::sync::Mutex<Inner>,
    addrs: Mutex<HashMap<String, SocketAddr>>,
    status: Mutex<ReloadStatus>,
}

struct Inner {
    config: Config,
    listeners: Vec<RunningListener>,
    /// Listeners removed by a reload whose connections may still be finishing.
    retired: Vec<watch::Sender<Phase>>,
    /// Set by shutdown: no reload may start listeners again.
    shutting_down: bool,
}

struct RunningListener {
    name: String,
    /// The address the config asks for.
    bind: SocketAddr,
    /// The address bound (the system's port for `:0`).
    addr: SocketAddr,
    /// Watched by the accept loop and every connection of this listener; its receiver count is the
    /// number of them still running.
    phase: watch::Sender<Phase>,
    /// The accept loop; it hands its socket back when it stops.
    task: JoinHandle<TcpListener>,
    /// Set when the listener stops serving: its connections then keep the config they began with.
    retired: Arc<AtomicBool>,
}

impl RunningListener {
    /// Stops accepting and drains the connections, which finish on the config they began with.
    fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.phase.send_replace(Phase::Draining);
    }
}

/// Where a listener is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Serving,
    /// The accept loop stops; connections finish their requests and close.
    Draining,
    /// The shutdown timeout passed: connections close now.
    Closing,
}

/// What the server tells of its reloads: the config generation and the last attempt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    /// 1 for the config the server started with, one more for each reload applied.
    pub generation: u64,
    /// The last reload attempt, if any.
    pub last: Option<ReloadAttempt>,
}

/// One reload attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadAttempt {
    /// When it ended.
    pub at: SystemTime,
    /// What asked for it: `file` (a change seen on disk), `signal` (SIGHUP), `api`.
    pub trigger: &'static str,
    /// How long loading, building and swapping took.
    pub duration: Duration,
    /// `Ok` if applied (or the file was unchanged), else why the running config stayed.
    pub result: Result<ReloadOutcome, String>,
}

/// What a successful reload attempt did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new config serves, as this generation.
    Applied {
        /// The new generation.
        generation: u64,
    },
    /// The file's content had not changed: nothing was done.
    Unchanged,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener's address could not be bound.
    #[error("listener `{name}`: cannot bind {addr}: {source}")]
    Bind {
        /// The listener.
        name: String,
        /// Its address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Why a reload was refused; the running config stays in place.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read or is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::LoadError),
    /// A listener the new config adds or moves could not be bound.
    #[error("listener `{name}`: cannot bind {addr}: {source}")]
    Bind {
        /// The listener.
        name: String,
        /// Its address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The reload task itself failed (a panic while building); the running config stays.
    #[error("the reload failed unexpectedly; see the log")]
    Failed,
}

fn bind(listener: &ListenerConfig) -> std::io::Result<TcpListener> {
    let std = std::net::TcpListener::bind(listener.bind)?;
    std.set_nonblocking(true)?;
    TcpListener::from_std(std)
}

impl Server {
    /// Builds the gateway for `config`, binds every listener and starts serving.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let mut bound = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let listener = bind(l).map_err(|source| StartError::Bind {
                name: l.name.clone(),
                addr: l.bind,
                source,
            })?;
            bound.push((l, listener));
        }
        let server = Server {
            gateway: Arc::new(ArcSwap::from_pointee(Gateway::build(&config, None))),
            builders: Arc::new(Builders::new(&config.server)),
            inner: tokio::sync::Mutex::new(Inner {
                config: config.clone(),
                listeners: Vec::new(),
                retired: Vec::new(),
                shutting_down: false,
            }),
            addrs: Mutex::new(HashMap::new()),
            status: Mutex::new(ReloadStatus {
                generation: 1,
                last: None,
            }),
        };
        let listeners = bound
            .into_iter()
            .map(|(l, listener)| server.run_listener(l, listener))
            .collect();
        server.inner.lock().await.listeners = listeners;
        server.publish_addrs(&server.inner.lock().await.listeners);
        Ok(server)
    }

    fn run_listener(&self, config: &ListenerConfig, listener: TcpListener) -> RunningListener {
        let addr = listener.local_addr().unwrap_or(config.bind);
        tracing::info!(listener = %config.name, %addr, "listening");
        let (phase, _) = watch::channel(Phase::Serving);
        let retired = Arc::new(AtomicBool::new(false));
        let accept = AcceptLoop {
            retired: Arc::clone(&retired),
            listener,
            name: Arc::from(config.name.as_str()),
            gateway: Arc::clone(&self.gateway),
            builders: Arc::clone(&self.builders),
            phase: phase.subscribe(),
        };
        RunningListener {
            name: config.name.clone(),
            bind: config.bind,
            addr,
            phase,
            task: tokio::spawn(accept.run()),
            retired,
        }
    }

    fn publish_addrs(&self, listeners: &[RunningListener]) {
        let addrs = listeners.iter().map(|l| (l.name.clone(), l.addr)).collect();
        *self.addrs.lock().unwrap_or_else(|e| e.into_inner()) = addrs;
    }

    /// The address a listener is bound to (with the port the system chose for `:0`).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.addrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(listener)
            .copied()
    }

    /// Every listener's name and bound address.
    pub fn local_addrs(&self) -> HashMap<String, SocketAddr> {
        self.addrs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The config generation and the last reload attempt.
    pub fn reload_status(&self) -> ReloadStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The hash of the running config's file text ([`Config::source_hash`]).
    pub async fn config_hash(&self) -> u64 {
        self.inner.lock().await.config.source_hash
    }

    /// Reads and applies the config file at `path`. With `only_if_changed`, a file whose text is the
    /// running config's does nothing. Every attempt is logged with its outcome and duration, and
    /// recorded in [`Server::reload_status`].
    pub async fn reload_file(
        self: &Arc<Self>,
        path: &std::path::Path,
        registry: &crate::Registry,
        trigger: &'static str,
        only_if_changed: bool,
    ) -> Result<ReloadOutcome, ReloadError> {
        let started = Instant::now();
        let result = async {
            let text =
                std::fs::read_to_string(path).map_err(|source| crate::config::LoadError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
            if only_if_changed && crate::config::hash_text(&text) == self.config_hash().await {
                return Ok(ReloadOutcome::Unchanged);
            }
            let config =
                Config::parse(path, &text, registry).map_err(crate::config::LoadError::from)?;
            self.apply_in_task(config).await
        }
        .await;
        self.record(trigger, started, &result);
        result
    }

    /// Serves `config` from now on (see the module docs). Logged and recorded like
    /// [`Server::reload_file`], with the trigger `api`.
    pub async fn reload(self: &Arc<Self>, config: Config) -> Result<ReloadOutcome, ReloadError> {
        let started = Instant::now();
        let result = self.apply_in_task(config).await;
        self.record("api", started, &result);
        result
    }

    fn record(
        &self,
        trigger: &'static str,
        started: Instant,
        result: &Result<ReloadOutcome, ReloadError>,
    ) {
        let duration = started.elapsed();
        match result {
            Ok(ReloadOutcome::Applied { generation }) => {
                tracing::info!(trigger, generation, ?duration, "reload applied")
            }
            Ok(ReloadOutcome::Unchanged) => {
                tracing::debug!(
                    trigger,
                    ?duration,
                    "reload skipped: the config file is unchanged"
                )
            }
            Err(err) => tracing::error!(
                trigger,
                ?duration,
                "reload refused, the running config stays:\n{err}"
            ),
        }
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.last = Some(ReloadAttempt {
            at: SystemTime::now(),
            trigger,
            duration,
            result: result.as_ref().map(|o| *o).map_err(|e| e.to_string()),
        });
    }

    /// Applies `config` in a task of its own: a caller that stops waiting (a timeout, a dropped
    /// watch) cannot leave a reload half done.
    async fn apply_in_task(self: &Arc<Self>, config: Config) -> Result<ReloadOutcome, ReloadError> {
        let server = Arc::clone(self);
        tokio::spawn(async move { server.apply(config).await })
            .await
            .unwrap_or(Err(ReloadError::Failed))
    }

    async fn apply(&self, config: Config) -> Result<ReloadOutcome, ReloadError> {
        let mut inner = self.inner.lock().await;
        if inner.shutting_down {
            return Err(ReloadError::ShuttingDown);
        }
        // 1. Sockets. A listener whose name and address are unchanged keeps its socket; one taking
        // an address another listener had (renamed, or two swapped) takes that socket over; every
        // other one binds now. A failure here drops what was bound and changes nothing.
        enum Socket {
            Keep(usize),
            TakeOver(usize),
            Fresh(TcpListener),
        }
        let old = &inner.listeners;
        let unchanged = |r: &RunningListener| {
            config
                .listeners
                .iter()
                .any(|l| l.name == r.name && l.bind == r.bind)
        };
        let mut claimed = vec![false; old.len()];
        let mut plan = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let keep = old
                .iter()
                .position(|r| r.name == l.name && r.bind == l.bind);
            let take = || {
                old.iter().enumerate().position(|(i, r)| {
                    !claimed[i]
                        && (r.bind == l.bind || r.addr == l.bind)
                        && l.bind.port() != 0
                        && !unchanged(r)
                })
            };
            let socket = match keep.or_else(take) {
                Some(i) if keep.is_some() => Socket::Keep(i),
                Some(i) => Socket::TakeOver(i),
                None => Socket::Fresh(bind(l).map_err(|source| ReloadError::Bind {
                    name: l.name.clone(),
                    addr: l.bind,
                    source,
                })?),
            };
            if let Socket::Keep(i) | Socket::TakeOver(i) = socket {
                claimed[i] = true;
            }
            plan.push(socket);
        }
        // 2. Build the new gateway off the request path, keeping unchanged upstreams' pools.
        let gateway = Gateway::build(&config, Some(&self.gateway.load()));
        // 3. Listeners that go away or hand their socket over stop serving the new config first: their
        // connections finish on the config they began with, even where another listener takes
        // their name. Then the swap: new requests, and keep-alive connections at their next
        // request, see the new config.
        for (i, r) in inner.listeners.iter().enumerate() {
            let stays = plan.iter().any(|p| matches!(p, Socket::Keep(k) if *k == i));
            if !stays {
                r.retire();
            }
        }
        self.gateway.store(Arc::new(gateway));
        self.builders.set(&config.server);
        // 4. Start, keep, hand over and retire accept loops.
        let mut old: Vec<Option<RunningListener>> = std::mem::take(&mut inner.listeners)
            .into_iter()
            .map(Some)
            .collect();
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for (l, socket) in config.listeners.iter().zip(plan) {
            match socket {
                Socket::Keep(i) => listeners.extend(old[i].take()),
                Socket::TakeOver(i) => {
                    let Some(previous) = old[i].take() else {
                        continue;
                    };
                    tracing::info!(listener = %previous.name, addr = %previous.addr, now = %l.name, "listener renamed");
                    let phase = previous.phase.clone();
                    match previous.task.await {
                        Ok(socket) => listeners.push(self.run_listener(l, socket)),
                        // The accept loop died, and its socket with it: bind anew.
                        Err(err) => match bind(l) {
                            Ok(socket) => listeners.push(self.run_listener(l, socket)),
                            Err(e) => {
                                tracing::error!(listener = %l.name, addr = %l.bind, error = %e, join_error = %err, "listener lost: cannot bind again")
                            }
                        },
                    }
                    inner.retired.push(phase);
                }
                Socket::Fresh(socket) => listeners.push(self.run_listener(l, socket)),
            }
        }
        for running in old.into_iter().flatten() {
            tracing::info!(listener = %running.name, addr = %running.addr, "listener stops accepting");
            inner.retired.push(running.phase);
        }
        inner.retired.retain(|p| p.receiver_count() > 0);
        self.publish_addrs(&listeners);
        inner.listeners = listeners;
        inner.config = config;
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.generation += 1;
        Ok(ReloadOutcome::Applied {
            generation: status.generation,
        })
    }

    /// Stops accepting, lets in-flight requests finish for up to the config's
    /// `server.shutdown_timeout`, closes idle keep-alive connections, and forcibly closes what remains.
    /// Returns true if every connection finished in time.
    pub async fn shutdown(&self) -> bool {
        let timeout = self.inner.lock().await.config.server.shutdown_timeout;
        self.shutdown_within(timeout).await
    }

    /// [`Server::shutdown`] with an explicit timeout.
    pub async fn shutdown_within(&self, timeout: Duration) -> bool {
        let mut inner = self.inner.lock().await;
        inner.shutting_down = true;
        self.publish_addrs(&[]);
        let mut phases: Vec<watch::Sender<Phase>> = std::mem::take(&mut inner.retired);
        for l in std::mem::take(&mut inner.listeners) {
            l.retire();
            let _ = l.task.await;
            phases.push(l.phase);
        }
        // Every phase is draining now: `retire` set the listeners', and a reload set the retired
        // ones' when it retired them.
        let open: usize = phases.iter().map(|p| p.receiver_count()).sum();
        tracing::info!(
            connections = open,
            ?timeout,
            "shutting down: no longer accepting"
        );
        let all_closed = || async {
            for p in &phases {
                p.closed().await;
            }
        };
        let finished = match tokio::time::timeout(timeout, all_closed()).await {
            Ok(()) => {
                tracing::info!("shutdown complete: every connection finished");
                true
            }
            Err(_) => {
                let open: usize = phases.iter().map(|p| p.receiver_count()).sum();
                tracing::warn!(
                    ?timeout,
                    connections = open,
                    "shutdown timeout passed: closing the remaining connections"
                );
                for p in &phases {
                    p.send_replace(Phase::Closing);
                }
                // Let the closed connections' tasks run, so their requests are logged (as 499).
                let _ = tokio::time::timeout(Duration::from_secs(1), all_closed()).await;
                false
            }
        };
        // Every line of the requests that finished is on disk before parapet exits. Flushing
        // waits for the writer threads: off the runtime, which may have a single thread.
        let _ = tokio::task::spawn_blocking(parapet_middlewares::host::flush_all).await;
        finished
    }
}

struct AcceptLoop {
    listener: TcpListener,
    name: Arc<str>,
    gateway: Arc<ArcSwap<Gateway>>,
    builders: Arc<Builders>,
    phase: watch::Receiver<Phase>,
    retired: Arc<AtomicBool>,
}

impl AcceptLoop {
    async fn run(mut self) -> TcpListener {
        loop {
            let accepted = tokio::select! {
                biased;
                _ = self.phase.wait_for(|p| *p >= Phase::Draining) => return self.listener,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => self.serve(stream, peer),
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::error!(listener = %self.name, error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn serve(&self, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let service = ConnectionService {
            gateway: Arc::clone(&self.gateway),
            // If a reload removes this listener, this connection finishes on the config it began with.
            fallback: self.gateway.load().entry(&self.name).cloned(),
            retired: Arc::clone(&self.retired),
            listener: Arc::clone(&self.name),
            client: ClientAddr(peer),
            quiet: None,
        };
        let builders = Arc::clone(&self.builders);
        let mut phase = self.phase.clone();
        tokio::spawn(async move {
            // Dispatch on the first bytes instead of hyper-util's `auto`, which buffers the
            // preface and wraps every read of the connection to replay it. A client that sends
            // nothing is dropped after `server.header_timeout`, or as soon as its listener drains.
            let protocol = tokio::select! {
                p = tokio::time::timeout(builders.header_timeout(), sniff(&stream)) => p.ok().flatten(),
                _ = phase.wait_for(|p| *p >= Phase::Draining) => None,
            };
            match protocol {
                Some(Protocol::Http1) => {
                    Box::pin(http1::serve(&builders, stream, service, phase, peer)).await
                }
                Some(Protocol::Http2) => {
                    let conn = builders.h2.serve_connection(TokioIo::new(stream), service);
                    Box::pin(drive(conn, &mut phase, peer)).await;
                }
                Some(Protocol::Unsure) => {
                    let conn = builders
                        .auto
                        .serve_connection(TokioIo::new(stream), service);
                    Box::pin(drive(conn, &mut phase, peer)).await;
                }
                None => {}
            }
        });
    }
}

/// The protocol a connection speaks, told by its first bytes.
enum Protocol {
    Http1,
    /// HTTP/2 with prior knowledge: the connection preface (RFC 9113 §3.4).
    Http2,
    /// The first bytes are a prefix of the preface and the rest has not arrived yet.
    Unsure,
}

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Peeks at the first bytes, without consuming them; `None` if the client closed first.
async fn sniff(stream: &TcpStream) -> Option<Protocol> {
    let mut buf = [0u8; 24];
    let n = stream.peek(&mut buf).await.ok().filter(|n| *n > 0)?;
    Some(if buf[..n] != H2_PREFACE[..n] {
        Protocol::Http1
    } else if n == H2_PREFACE.len() {
        Protocol::Http2
    } else {
        Protocol::Unsure
    })
}

/// The connection builders every listener shares.
pub(crate) struct Builders {
    h1: hyper::server::conn::http1::Builder,
    /// `server.idle_release`, in milliseconds.
    idle_release: std::sync::atomic::AtomicU64,
    /// `server.header_timeout`, in milliseconds.
    header_timeout: std::sync::atomic::AtomicU64,
    h2: hyper::server::conn::http2::Builder<TokioExecutor>,
    auto: auto::Builder<TokioExecutor>,
}

impl Builders {
    /// Takes the `[server]` settings a reload may change.
    fn set(&self, server: &ServerConfig) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.idle_release
            .store(ms(server.idle_release), Ordering::Relaxed);
        self.header_timeout
            .store(ms(server.header_timeout), Ordering::Relaxed);
    }

    fn idle_release(&self) -> Duration {
        Duration::from_millis(self.idle_release.load(Ordering::Relaxed))
    }

    fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout.load(Ordering::Relaxed))
    }

    fn new(server: &ServerConfig) -> Self {
        // No timer for hyper's HTTP/1: a request head must arrive within the header timeout (slow-loris
        // protection), which the connection's own clock enforces (see http1::Clock) instead of a
        // timer hyper would allocate and register for every request.
        let mut h1 = hyper::server::conn::http1::Builder::new();
        h1.header_read_timeout(None);
        let mut auto = auto::Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            // The rare connection whose preface arrived in pieces: hyper's own head timer, set at
            // startup.
            .header_read_timeout(server.header_timeout);
        let builders = Self {
            h1,
            idle_release: Default::default(),
            header_timeout: Default::default(),
            h2: hyper::server::conn::http2::Builder::new(TokioExecutor::new()),
            auto,
        };
        builders.set(server);
        builders
    }
}

/// A connection that can be asked to finish its requests and close.
trait Graceful: Future {
    fn graceful(self: Pin<&mut Self>);
}

impl Graceful
    for hyper::server::conn::http2::Connection<TokioIo<TcpStream>, ConnectionService, TokioExecutor>
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown()
    }
}

impl Graceful for auto::Connection<'_, TokioIo<TcpStream>, ConnectionService, TokioExecutor> {
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown()
    }
}

/// Serves a connection until it ends, draining it when its listener drains and dropping it when
/// the shutdown timeout passes; `None` if it failed or was dropped.
async fn drive<C, T, E>(conn: C, phase: &mut watch::Receiver<Phase>, peer: SocketAddr) -> Option<T>
where
    C: Graceful<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let next = if draining {
            Phase::Closing
        } else {
            Phase::Draining
        };
        tokio::select! {
            result = conn.as_mut() => {
                return match result {
                    Ok(done) => Some(done),
                    Err(err) => {
                        tracing::debug!(client = %peer, error = %err, "connection ended with an error");
                        None
                    }
                };
            }
            _ = phase.wait_for(|p| *p >= next) => {
                if draining {
                    return None;
                }
                // Finish the request in flight, then close; an idle connection closes now.
                draining = true;
                conn.as_mut().graceful();
            }
        }
    }
}

/// The service of one connection: the outermost one, which never fails.
#[derive(Clone)]
pub(crate) struct ConnectionService {
    gateway: Arc<ArcSwap<Gateway>>,
    /// The listener's entry when the connection was accepted: used once the listener is retired.
    fallback: Option<AppService>,
    retired: Arc<AtomicBool>,
    listener: Arc<str>,
    client: ClientAddr,
    /// Requests in flight, for HTTP/1.1's idle release; `None` on other connections.
    quiet: Option<Arc<http1::Quiet>>,
}

impl hyper::service::Service<http::Request<Incoming>> for ConnectionService {
    type Response = http::Response<ServedBody>;
    type Error = std::convert::Infallible;
    type Future = DispatchFuture;

    fn call(&self, req: http::Request<Incoming>) -> DispatchFuture {
        let mut req: Request = req.map(Body::from);
        req.extensions_mut().insert(self.client);
        // The gateway current at this request: a reload in between reaches this connection now,
        // and this request keeps the one it started with.
        let gateway = self.gateway.load();
        let entry = if self.retired.load(Ordering::Acquire) {
            self.fallback.as_ref()
        } else {
            gateway.entry(&self.listener).or(self.fallback.as_ref())
        };
        match entry {
            Some(entry) => DispatchFuture::Serving {
                fut: entry.handle(req),
                guard: self.quiet.as_ref().map(http1::Quiet::start),
            },
            None => DispatchFuture::Gone {
                response: Some(GatewayError::new(GatewayErrorKind::NoRoute).into_response()),
                guard: self.quiet.as_ref().map(http1::Quiet::start),
            },
        }
    }
}

pin_project! {
    /// A request's response, reported to the access logs it passed through as it leaves.
    #[project = DispatchProj]
    pub(crate) enum DispatchFuture {
        Serving { #[pin] fut: AppFuture, guard: Option<http1::InFlight> },
        Gone { response: Option<Response>, guard: Option<http1::InFlight> },
    }
}

impl Future for DispatchFuture {
    type Output = Result<http::Response<ServedBody>, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (response, guard) = match self.project() {
            DispatchProj::Serving { fut, guard } => (ready!(fut.poll(cx)), guard.take()),
            DispatchProj::Gone { response, guard } => match response.take() {
                Some(r) => (Ok(r), guard.take()),
                None => return Poll::Pending,
            },
        };
        let Ok(response) = response;
        report_final_status(&response);
        // The request stays in flight until hyper is done with the body.
        Poll::Ready(Ok(response.map(|body| ServedBody::new(body, guard))))
    }
}
