//! The server: a running parapet's listeners, the gateway they serve, and its public API (start,
//! reload, shut down, addresses, reload status).
//!
//! Every listener runs an accept loop (`accept`). A connection's first bytes tell HTTP/1.1 from
//! HTTP/2 with prior knowledge (h2c) on the same port, and the connection is served in that protocol
//! (`connection`); HTTP/1.1 connections give back their buffers while idle (`http1`). A
//! connection looks up the current [`Gateway`] at each request, so a reload reaches keep-alive
//! connections at their next request while requests in flight finish on the gateway they started
//! with.
//!
//! A reload ([`Server::reload`], [`Reloader`]; see `reload`) binds what the new config adds or
//! rebinds (`plan`), builds the new gateway (every route, chain, upstream client and error page),
//! and only then swaps it in and starts and stops accept loops: a config that fails anywhere leaves
//! the running one untouched. A listener that is removed stops accepting; its connections finish
//! their requests and close.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::build::Gateway;
use crate::config::{Config, ConfigErrors};
use crate::{Error, Registry};

pub(crate) mod accept;
mod connection;
mod http1;
mod lean;
mod plan;
mod reload;

use accept::AcceptLoop;
use connection::Builders;
pub use reload::{ReloadAttempt, ReloadOutcome, ReloadStatus, ReloadTrigger, Reloader};

/// A running parapet: its listeners and the gateway they serve. Shared (`Arc<Server>`) between the
/// code that reloads it, the code that stops it, and anyone asking for its addresses.
pub struct Server {
    gateway: Arc<ArcSwap<Gateway>>,
    /// The kinds every config of this server is read and built with.
    registry: Registry,
    builders: Arc<Builders>,
    inner: tokio::sync::Mutex<Inner>,
    addrs: Mutex<HashMap<String, SocketAddr>>,
    status: Mutex<ReloadStatus>,
    /// What the admin endpoints read, and the admin listener itself when configured.
    admin_state: Arc<crate::admin::AdminState>,
    admin: crate::admin::AdminSlot,
}

struct Inner {
    config: Config,
    listeners: Vec<RunningListener>,
    /// The phases of listeners a reload retired whose connections may still be finishing.
    draining: Vec<watch::Sender<Phase>>,
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
pub(crate) enum Phase {
    Serving,
    /// The accept loop stops; connections finish their requests and close.
    Draining,
    /// The shutdown timeout passed: connections close now.
    Closing,
}

/// The soft limit on open files the process runs with, raised to the hard limit the first time it is
/// asked for (at the first server's start): every client connection is a descriptor, and every
/// request it proxies another, so the usual soft limit of 1024 would stop a gateway long before
/// `server.max_connections`. `None` where it cannot be read.
fn open_files_limit() -> Option<u64> {
    static LIMIT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(raise_open_files_limit)
}

#[cfg(unix)]
fn raise_open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the struct it is given, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        let err = std::io::Error::last_os_error();
        tracing::warn!(error = %err, "cannot read the open files limit");
        return None;
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given, which outlives the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            // macOS refuses an unlimited hard limit for open files: keep the soft one.
            let err = std::io::Error::last_os_error();
            tracing::warn!(error = %err, soft = before, hard = limit.rlim_max, "cannot raise the open files limit");
        }
    }
    // `rlim_t` is a u64 on Linux, not on every unix.
    #[allow(clippy::unnecessary_cast)]
    let open_files = if limit.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        limit.rlim_cur as u64
    };
    tracing::info!(
        open_files,
        soft_was = before,
        "open files limit (RLIMIT_NOFILE): the soft limit raised to the hard one"
    );
    Some(open_files)
}

#[cfg(not(unix))]
fn raise_open_files_limit() -> Option<u64> {
    None
}

/// Binds a listening socket at `addr`.
///
/// With `reuse_port` (`server.reuse_port`), `SO_REUSEPORT` lets other processes bind the same address:
/// the kernel then spreads new connections over them (Linux's load balancing of accepts), the way to
/// use more cores for what one process cannot spread (an in-process Python app holds one core).
fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // As std does: a restarted parapet binds at once, without waiting for TIME_WAIT to pass.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    // The kernel caps the backlog at net.core.somaxconn.
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

impl Server {
    /// Builds the gateway for `config` with the kinds of `registry`, binds every listener and starts
    /// serving.
    pub async fn start(config: Config, registry: Registry) -> Result<Server, Error> {
        let gateway = build_gateway(&config, &registry, None)?;
        let mut bound = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let listener =
                bind(l.bind, config.server.reuse_port).map_err(|source| Error::Bind {
                    name: l.name.clone(),
                    addr: l.bind,
                    source,
                })?;
            bound.push((l, listener));
        }
        let server = Server {
            gateway: Arc::new(ArcSwap::from_pointee(gateway)),
            registry,
            builders: Arc::new(Builders::new(&config.server)),
            inner: tokio::sync::Mutex::new(Inner {
                config: config.clone(),
                listeners: Vec::new(),
                draining: Vec::new(),
                shutting_down: false,
            }),
            addrs: Mutex::new(HashMap::new()),
            status: Mutex::new(ReloadStatus {
                generation: 1,
                last: None,
            }),
            admin_state: crate::admin::AdminState::new(&config),
            admin: crate::admin::AdminSlot::default(),
        };
        if let Some(admin) = &config.admin {
            let listener = bind(admin.bind, false).map_err(|source| Error::Bind {
                name: "admin".to_owned(),
                addr: admin.bind,
                source,
            })?;
            server.admin.set(Some(crate::admin::start(
                listener,
                Arc::clone(&server.admin_state),
            )));
        }
        crate::metrics::global().config_loaded(1);
        let listeners = bound
            .into_iter()
            .map(|(l, listener)| server.run_listener(&l.name, l.bind, listener))
            .collect();
        server.inner.lock().await.listeners = listeners;
        server.publish_addrs(&server.inner.lock().await.listeners);
        Ok(server)
    }

    /// Starts the accept loop of the listener `name`, configured at `bind`, on `listener`.
    fn run_listener(&self, name: &str, bind: SocketAddr, listener: TcpListener) -> RunningListener {
        let addr = listener.local_addr().unwrap_or(bind);
        tracing::info!(listener = %name, %addr, "listening");
        let (phase, _) = watch::channel(Phase::Serving);
        let retired = Arc::new(AtomicBool::new(false));
        let accept = AcceptLoop {
            retired: Arc::clone(&retired),
            listener,
            name: Arc::from(name),
            gateway: Arc::clone(&self.gateway),
            builders: Arc::clone(&self.builders),
            phase: phase.subscribe(),
            stats: crate::metrics::ListenerStats::new(name),
        };
        RunningListener {
            name: name.to_owned(),
            bind,
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

    /// The address the admin listener is bound to, if one runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.addr()
    }

    /// The kinds this server reads and builds its configs with.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The certificate and key files of the running config's TLS listeners, as the config names
    /// them: what [`crate::reload`] watches besides the config file.
    pub async fn certificate_files(&self) -> Vec<std::path::PathBuf> {
        let inner = self.inner.lock().await;
        inner
            .config
            .listeners
            .iter()
            .filter_map(|l| l.tls.as_ref())
            .flat_map(|tls| &tls.certificates)
            .flat_map(|c| [c.cert.clone(), c.key.clone()])
            .collect()
    }

    /// The hash of the running config's file text ([`Config::source_hash`]).
    pub async fn config_hash(&self) -> u64 {
        self.inner.lock().await.config.source_hash
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
        self.admin_state.shutting_down();
        self.publish_addrs(&[]);
        let mut phases: Vec<watch::Sender<Phase>> = std::mem::take(&mut inner.draining);
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
            tunnels = crate::tunnel::open(),
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
                    tunnels = crate::tunnel::open(),
                    "shutdown timeout passed: closing the remaining connections and tunnels"
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

/// Builds the gateway `config` describes, keeping `previous`'s unchanged upstreams' pools.
fn build_gateway(
    config: &Config,
    registry: &Registry,
    previous: Option<&Gateway>,
) -> Result<Gateway, ConfigErrors> {
    Gateway::build(config, registry, previous)
}

/// A wait for one of the listener's phases (a `wait_for` on its `watch`), polled again only once
/// the phase has changed since its first poll. Polling tokio's `watch` future takes its waiters'
/// lock each time (about 250 instructions), and a connection's task polls its phase waits at every
/// wake-up (the lean path's two, `connection::drive`'s one), while the phase changes at most twice
/// in the listener's life. The first poll registers the task as a waiter; a change of phase wakes
/// it, and `watcher`, a receiver of the same channel that has marked no change seen, then tells the
/// wait to be polled (an atomic load when nothing changed).
pub(super) struct PhaseWait<'a, D> {
    wait: Pin<&'a mut D>,
    watcher: &'a watch::Receiver<Phase>,
    polled: bool,
}

impl<'a, D: Future> PhaseWait<'a, D> {
    pub(super) fn new(wait: Pin<&'a mut D>, watcher: &'a watch::Receiver<Phase>) -> Self {
        Self {
            wait,
            watcher,
            polled: false,
        }
    }
}

impl<D: Future> Future for PhaseWait<'_, D> {
    type Output = D::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<D::Output> {
        // A closed channel (`Err`) is polled too: the wait then ends as the watch has it.
        if self.polled && !self.watcher.has_changed().unwrap_or(true) {
            return Poll::Pending;
        }
        self.polled = true;
        self.wait.as_mut().poll(cx)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn the_open_files_soft_limit_is_raised_to_the_hard_limit() {
        let got = super::open_files_limit().expect("the limit is readable");
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one `rlimit` into the struct it is given, which outlives the call.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(limit.rlim_cur, limit.rlim_max);
        assert_eq!(got, limit.rlim_cur);
    }
}
