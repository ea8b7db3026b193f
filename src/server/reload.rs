//! Reloading: the one place a new config comes in, whatever asked for it, and where every attempt is
//! logged and recorded.
//!
//! What may ask is a [`ReloadTrigger`]: a change seen on disk (the watch, [`crate::reload`]), SIGHUP
//! (`parapet run`), or a program embedding parapet. A config file is reloaded through a [`Reloader`],
//! which knows the file and the handler kinds; a config built by the program is applied with
//! [`Server::reload`]. Either way the attempt ends in [`Server::reload_status`].
//!
//! Applying a config (see the [module docs](super)): plan the sockets ([`super::plan`]), bind what
//! the plan binds, build the new gateway, and only then retire, swap and start accept loops. It runs
//! in a task of its own, so that a caller that stops waiting cannot leave it half done.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::TcpListener;

use super::plan::{self, Socket};
use super::{bind, build_gateway, RunningListener, Server};
use crate::config::Config;
use crate::Error;
use parapet_middlewares::ErrorChain;

/// What asked for a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReloadTrigger {
    /// A change to the config file seen on disk. A file whose text did not change is not reloaded.
    File,
    /// SIGHUP. Always reloads: error pages and static roots may have changed even if the config
    /// file did not.
    Signal,
    /// A program embedding parapet. Always reloads.
    Api,
    /// A change seen on disk to a listener's certificate or key file (a renewal by certbot, a
    /// Kubernetes Secret update). Always reloads: the config's text is the same, its files are not.
    Certificates,
}

impl ReloadTrigger {
    /// The trigger as logs and status name it: `file`, `signal`, `api`, `certificates`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadTrigger::File => "file",
            ReloadTrigger::Signal => "signal",
            ReloadTrigger::Api => "api",
            ReloadTrigger::Certificates => "certificates",
        }
    }

    /// Whether a config file whose text is the running config's is left alone.
    fn skips_unchanged_file(self) -> bool {
        self == ReloadTrigger::File
    }
}

impl std::fmt::Display for ReloadTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
    /// What asked for it.
    pub trigger: ReloadTrigger,
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

/// Reloads a running server from its config file: what the file watch and SIGHUP call.
pub struct Reloader {
    server: Arc<Server>,
    path: PathBuf,
}

impl Reloader {
    /// Reloads `server` from the file at `path`, with the server's kinds.
    pub fn new(server: Arc<Server>, path: impl Into<PathBuf>) -> Self {
        Self {
            server,
            path: path.into(),
        }
    }

    /// The server it reloads.
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// The config file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and applies the config file. A [`ReloadTrigger::File`] reload of a file whose text is
    /// the running config's does nothing. Every attempt is logged with its outcome and duration, and
    /// recorded in [`Server::reload_status`].
    pub async fn reload(&self, trigger: ReloadTrigger) -> Result<ReloadOutcome, Error> {
        let started = Instant::now();
        let result = async {
            let text = std::fs::read_to_string(&self.path).map_err(|source| Error::ReadConfig {
                path: self.path.clone(),
                source,
            })?;
            if trigger.skips_unchanged_file()
                && crate::config::hash_text(&text) == self.server.config_hash().await
            {
                return Ok(ReloadOutcome::Unchanged);
            }
            let config =
                Config::parse(&self.path, &text, self.server.registry()).map_err(Error::from)?;
            self.server.apply_in_task(config).await
        }
        .await;
        self.server.record(trigger, started, &result);
        result
    }
}

impl Server {
    /// Serves `config` from now on (see the module docs). Logged and recorded like
    /// [`Reloader::reload`], with the trigger [`ReloadTrigger::Api`].
    pub async fn reload(self: &Arc<Self>, config: Config) -> Result<ReloadOutcome, Error> {
        let started = Instant::now();
        let result = self.apply_in_task(config).await;
        self.record(ReloadTrigger::Api, started, &result);
        result
    }

    fn record(
        &self,
        trigger: ReloadTrigger,
        started: Instant,
        result: &Result<ReloadOutcome, Error>,
    ) {
        let duration = started.elapsed();
        let name = trigger.as_str();
        let metrics = crate::metrics::global();
        match result {
            Ok(ReloadOutcome::Applied { generation }) => {
                metrics.reload("applied", Some(*generation))
            }
            Ok(ReloadOutcome::Unchanged) => metrics.reload("unchanged", None),
            Err(_) => metrics.reload("refused", None),
        }
        match result {
            Ok(ReloadOutcome::Applied { generation }) => {
                tracing::info!(trigger = name, generation, ?duration, "reload applied")
            }
            Ok(ReloadOutcome::Unchanged) => {
                tracing::debug!(
                    trigger = name,
                    ?duration,
                    "reload skipped: the config file is unchanged"
                )
            }
            Err(err) => tracing::error!(
                trigger = name,
                ?duration,
                "reload refused, the running config stays:\n{}",
                ErrorChain(err)
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
    async fn apply_in_task(self: &Arc<Self>, config: Config) -> Result<ReloadOutcome, Error> {
        let server = Arc::clone(self);
        tokio::spawn(async move { server.apply(config).await })
            .await
            .unwrap_or(Err(Error::ReloadFailed))
    }

    async fn apply(&self, config: Config) -> Result<ReloadOutcome, Error> {
        let mut inner = self.inner.lock().await;
        if inner.shutting_down {
            return Err(Error::ShuttingDown);
        }
        // 1. Sockets: kept, taken over, or bound now. A failure here drops what was bound and
        // changes nothing.
        let plan = {
            let running: Vec<plan::Running<'_>> = inner
                .listeners
                .iter()
                .map(|r| plan::Running {
                    name: &r.name,
                    bind: r.bind,
                    addr: r.addr,
                })
                .collect();
            let wanted: Vec<plan::Wanted<'_>> = config
                .listeners
                .iter()
                .map(|l| plan::Wanted {
                    name: &l.name,
                    bind: l.bind,
                })
                .collect();
            plan::plan(&running, &wanted)
        };
        /// A new listener's socket, bound.
        enum Bound {
            Keep(usize),
            TakeOver(usize),
            Fresh(TcpListener),
        }
        let sockets = plan
            .sockets
            .iter()
            .zip(&config.listeners)
            .map(|(socket, l)| match *socket {
                Socket::Keep(i) => Ok(Bound::Keep(i)),
                Socket::TakeOver(i) => Ok(Bound::TakeOver(i)),
                Socket::Bind => bind(l.bind, config.server.reuse_port)
                    .map(Bound::Fresh)
                    .map_err(|source| Error::Bind {
                        name: l.name.clone(),
                        addr: l.bind,
                        source,
                    }),
            })
            .collect::<Result<Vec<Bound>, Error>>()?;
        // The admin listener moves like any listener: bound before anything changes.
        let admin = if config.admin != inner.config.admin {
            match &config.admin {
                Some(admin) => Some(Some(bind(admin.bind, false).map_err(|source| {
                    Error::Bind {
                        name: "admin".to_owned(),
                        addr: admin.bind,
                        source,
                    }
                })?)),
                None => Some(None),
            }
        } else {
            None
        };
        // 2. Build the new gateway off the request path, keeping unchanged upstreams' pools.
        let gateway = build_gateway(&config, &self.registry, Some(&self.gateway.load()))
            .map_err(Error::from)?;
        // 3. Listeners that go away or hand their socket over stop serving the new config first: their
        // connections finish on the config they began with, even where another listener takes
        // their name. Then the swap: new requests, and keep-alive connections at their next
        // request, see the new config.
        for (r, retires) in inner.listeners.iter().zip(&plan.retires) {
            if *retires {
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
        for (l, socket) in config.listeners.iter().zip(sockets) {
            match socket {
                Bound::Keep(i) => listeners.extend(old[i].take()),
                Bound::TakeOver(i) => {
                    let Some(previous) = old[i].take() else {
                        continue;
                    };
                    tracing::info!(listener = %previous.name, addr = %previous.addr, now = %l.name, "listener renamed");
                    let phase = previous.phase.clone();
                    match previous.task.await {
                        Ok(socket) => listeners.push(self.run_listener(&l.name, l.bind, socket)),
                        // The accept loop died, and its socket with it: bind anew.
                        Err(err) => match bind(l.bind, config.server.reuse_port) {
                            Ok(socket) => {
                                listeners.push(self.run_listener(&l.name, l.bind, socket))
                            }
                            Err(e) => {
                                tracing::error!(listener = %l.name, addr = %l.bind, error = %e, join_error = %err, "listener lost: cannot bind again")
                            }
                        },
                    }
                    inner.draining.push(phase);
                }
                Bound::Fresh(socket) => listeners.push(self.run_listener(&l.name, l.bind, socket)),
            }
        }
        for running in old.into_iter().flatten() {
            tracing::info!(listener = %running.name, addr = %running.addr, "listener stops accepting");
            inner.draining.push(running.phase);
        }
        inner.draining.retain(|p| p.receiver_count() > 0);
        self.publish_addrs(&listeners);
        inner.listeners = listeners;
        if let Some(admin) = admin {
            self.admin.set(
                admin.map(|listener| crate::admin::start(listener, Arc::clone(&self.admin_state))),
            );
        }
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.generation += 1;
        self.admin_state.loaded(&config, status.generation);
        inner.config = config;
        Ok(ReloadOutcome::Applied {
            generation: status.generation,
        })
    }
}
