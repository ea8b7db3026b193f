//! Listeners and connections: accepting, serving HTTP/1.1 and HTTP/2 (h2c), and shutting down.
//!
//! Every listener runs an accept loop; every connection is served by hyper-util's `auto` builder, which
//! speaks HTTP/1.1 with keep-alive and HTTP/2 with prior knowledge on the same port. A connection looks
//! up the current [`Gateway`] at each request, so a reload reaches keep-alive connections at their next
//! request while requests in flight finish on the gateway they started with.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use parapet_middlewares::access_log::report_final_status;
use parapet_middlewares::{Body, GatewayError, GatewayErrorKind};
use pin_project_lite::pin_project;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::util::Oneshot;
use tower::ServiceExt;

use crate::config::Config;
use crate::gateway::Gateway;
use crate::{AppService, ClientAddr, Request, Response};

/// A running parapet: its listeners and the gateway they serve.
pub struct Server {
    gateway: Arc<ArcSwap<Gateway>>,
    config: Config,
    listeners: Vec<RunningListener>,
    /// The phase every accept loop and connection watches. Its receiver count is the number of open
    /// connections once the accept loops have ended.
    phase: watch::Sender<Phase>,
}

/// Where the server is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Serving,
    /// Accept loops stop; connections finish their requests and close.
    Draining,
    /// The shutdown timeout passed: connections close now.
    Closing,
}

struct RunningListener {
    name: String,
    addr: SocketAddr,
    task: JoinHandle<()>,
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
    /// The new config adds, removes or rebinds listeners.
    #[error("listeners cannot be added, removed or rebound by a reload yet; restart parapet to change them")]
    ListenersChanged,
}

impl Server {
    /// Builds the gateway for `config`, binds every listener and starts serving.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let gateway = Arc::new(ArcSwap::from_pointee(Gateway::build(&config, None)));
        let (phase, _) = watch::channel(Phase::Serving);
        let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));

        let mut bound = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let listener = TcpListener::bind(l.bind)
                .await
                .map_err(|source| StartError::Bind {
                    name: l.name.clone(),
                    addr: l.bind,
                    source,
                })?;
            bound.push((l.name.clone(), listener));
        }
        let mut listeners = Vec::with_capacity(bound.len());
        for (name, listener) in bound {
            // A listener bound a moment ago has its address; ":0" is resolved here.
            let addr = listener.local_addr().map_err(|source| StartError::Bind {
                name: name.clone(),
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })?;
            tracing::info!(listener = %name, %addr, "listening");
            let accept = AcceptLoop {
                listener,
                name: Arc::from(name.as_str()),
                gateway: Arc::clone(&gateway),
                builder: Arc::clone(&builder),
                phase: phase.subscribe(),
            };
            listeners.push(RunningListener {
                name,
                addr,
                task: tokio::spawn(accept.run()),
            });
        }
        Ok(Server {
            gateway,
            config,
            listeners,
            phase,
        })
    }

    /// The address a listener is bound to (with the port the system chose for `:0`).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| l.name == listener)
            .map(|l| l.addr)
    }

    /// Every listener's name and bound address.
    pub fn local_addrs(&self) -> HashMap<String, SocketAddr> {
        self.listeners
            .iter()
            .map(|l| (l.name.clone(), l.addr))
            .collect()
    }

    /// The config being served.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Serves `config` from now on: new requests, and keep-alive connections at their next request,
    /// see it; requests in flight finish on the config they started with. Upstreams whose definition
    /// is unchanged keep their connection pools.
    ///
    /// The listeners must be the same as the running config's (name and address); changing them on
    /// reload comes with listener management, and such a config is refused as a whole.
    pub fn reload(&mut self, config: Config) -> Result<(), ReloadError> {
        let same_listeners = config.listeners.len() == self.config.listeners.len()
            && config
                .listeners
                .iter()
                .zip(&self.config.listeners)
                .all(|(a, b)| a.name == b.name && a.bind == b.bind);
        if !same_listeners {
            return Err(ReloadError::ListenersChanged);
        }
        let gateway = Gateway::build(&config, Some(&self.gateway.load()));
        self.gateway.store(Arc::new(gateway));
        self.config = config;
        Ok(())
    }

    /// Stops accepting, lets in-flight requests finish for up to the config's
    /// `server.shutdown_timeout`, closes idle keep-alive connections, and forcibly closes what remains.
    /// Returns true if every connection finished in time.
    pub async fn shutdown(self) -> bool {
        let timeout = self.config.server.shutdown_timeout;
        self.shutdown_within(timeout).await
    }

    /// [`Server::shutdown`] with an explicit timeout.
    pub async fn shutdown_within(self, timeout: Duration) -> bool {
        self.phase.send_replace(Phase::Draining);
        for l in self.listeners {
            let _ = l.task.await;
        }
        let open = self.phase.receiver_count();
        tracing::info!(
            connections = open,
            ?timeout,
            "shutting down: no longer accepting"
        );
        let finished = match tokio::time::timeout(timeout, self.phase.closed()).await {
            Ok(()) => {
                tracing::info!("shutdown complete: every connection finished");
                true
            }
            Err(_) => {
                let open = self.phase.receiver_count();
                tracing::warn!(
                    ?timeout,
                    connections = open,
                    "shutdown timeout passed: closing the remaining connections"
                );
                self.phase.send_replace(Phase::Closing);
                false
            }
        };
        // Every line of the requests that finished is on disk before parapet exits.
        parapet_middlewares::access_log::flush_all();
        finished
    }
}

struct AcceptLoop {
    listener: TcpListener,
    name: Arc<str>,
    gateway: Arc<ArcSwap<Gateway>>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    phase: watch::Receiver<Phase>,
}

impl AcceptLoop {
    async fn run(mut self) {
        loop {
            let accepted = tokio::select! {
                biased;
                _ = self.phase.wait_for(|p| *p >= Phase::Draining) => return,
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
            listener: Arc::clone(&self.name),
            client: ClientAddr(peer),
        };
        let builder = Arc::clone(&self.builder);
        let mut phase = self.phase.clone();
        tokio::spawn(async move {
            let conn = builder.serve_connection(TokioIo::new(stream), service);
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
                        if let Err(err) = result {
                            tracing::debug!(client = %peer, error = %err, "connection ended with an error");
                        }
                        return;
                    }
                    _ = phase.wait_for(|p| *p >= next) => {
                        if draining {
                            return;
                        }
                        // Finish the request in flight, then close; an idle connection closes now.
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
}

/// The service of one connection: the outermost one, which never fails.
#[derive(Clone)]
struct ConnectionService {
    gateway: Arc<ArcSwap<Gateway>>,
    listener: Arc<str>,
    client: ClientAddr,
}

impl hyper::service::Service<http::Request<Incoming>> for ConnectionService {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = DispatchFuture;

    fn call(&self, req: http::Request<Incoming>) -> DispatchFuture {
        let mut req: Request = req.map(Body::from);
        req.extensions_mut().insert(self.client);
        // The gateway current at this request: a reload in between reaches this connection now,
        // and this request keeps the one it started with.
        let entry = self.gateway.load().entry(&self.listener).cloned();
        match entry {
            Some(entry) => DispatchFuture::Serving {
                fut: entry.oneshot(req),
            },
            // The listener left the config and this connection outlived it.
            None => DispatchFuture::Gone {
                response: Some(GatewayError::new(GatewayErrorKind::NoRoute).into_response()),
            },
        }
    }
}

pin_project! {
    /// A request's response, reported to the access logs it passed through as it leaves.
    #[project = DispatchProj]
    enum DispatchFuture {
        Serving { #[pin] fut: Oneshot<AppService, Request> },
        Gone { response: Option<Response> },
    }
}

impl Future for DispatchFuture {
    type Output = Result<Response, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = match self.project() {
            DispatchProj::Serving { fut } => ready!(fut.poll(cx)),
            DispatchProj::Gone { response } => match response.take() {
                Some(r) => Ok(r),
                None => return Poll::Pending,
            },
        };
        if let Ok(response) = &response {
            report_final_status(response);
        }
        Poll::Ready(response)
    }
}
