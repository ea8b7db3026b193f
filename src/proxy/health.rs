//! A server's state: its load (for `least_requests`), its passive ejection and its active health,
//! all atomics read on the request path without a lock, and kept across reloads for a server whose
//! address did not change. The active checks run in one task per upstream ([`spawn_checks`]).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use http::header;
use http_body::Body as _;
use parapet_middlewares::Body;

use super::Upstream;
use crate::config::{Eject, Expect, HealthCheck};

/// Ejections following each other at most this many times double the duration (32x at most).
const MAX_DOUBLINGS: u32 = 5;

/// Nanoseconds since a process-wide epoch: what the atomics store as time.
pub(crate) fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    // 1 ns is never 0: 0 means "not set" in the atomics below.
    (epoch.elapsed().as_nanos() as u64).max(1)
}

/// What parapet knows of one server, shared by every upstream built for the same address.
pub(crate) struct ServerState {
    /// `scheme://host:port`, for the logs.
    pub(crate) name: Arc<str>,
    /// Requests sent whose response head has not arrived (`least_requests` only).
    pub(crate) in_flight: AtomicU32,
    /// Peak-EWMA of the time to the response head, in ns, as `f64` bits (`least_requests` only).
    ewma_ns: AtomicU64,
    /// When `ewma_ns` was last updated ([`now_ns`]).
    ewma_at: AtomicU64,
    /// Taken down by active health checks.
    check_down: AtomicBool,
    /// Active checks passed (while down) or failed (while up) in a row.
    check_streak: AtomicU32,
    /// Passive: requests failed in a row.
    failures: AtomicU32,
    /// Passive: ejected until this time ([`now_ns`]); 0 when not ejected.
    ejected_until: AtomicU64,
    /// Passive: when the last ejection ended, and how many times in a row the duration doubled.
    ejection_end: AtomicU64,
    doublings: AtomicU32,
    /// Its metrics, resolved once and kept with the state across reloads.
    pub(crate) stats: crate::metrics::ServerStats,
}

/// How long the peak-EWMA remembers a slow response (linkerd's default decay).
const EWMA_DECAY_NS: f64 = 10e9;
/// The latency assumed of a server not yet measured (tower's `default_rtt` is 30 ms; loopback
/// backends answer faster, and an unmeasured server should be tried).
const DEFAULT_RTT_NS: f64 = 1e6;

impl ServerState {
    /// The state of server `name` of upstream `upstream`, its health in every scrape while it lives.
    pub(crate) fn new(upstream: &str, name: Arc<str>) -> Arc<Self> {
        let state = Arc::new(Self {
            stats: crate::metrics::ServerStats::new(upstream, &name),
            name,
            in_flight: AtomicU32::new(0),
            ewma_ns: AtomicU64::new(0f64.to_bits()),
            ewma_at: AtomicU64::new(0),
            check_down: AtomicBool::new(false),
            check_streak: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejection_end: AtomicU64::new(0),
            doublings: AtomicU32::new(0),
        });
        let weak: Weak<dyn crate::metrics::ServerHealth> = Arc::downgrade(&state) as _;
        crate::metrics::watch_server(weak);
        state
    }

    /// Whether the server takes traffic: not down by active checks, not ejected.
    pub(crate) fn is_up(&self) -> bool {
        if self.check_down.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        let now = now_ns();
        if now < until {
            return false;
        }
        // The ejection is over: the first to notice says so.
        if self
            .ejected_until
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.ejection_end.store(now, Ordering::Relaxed);
            self.failures.store(0, Ordering::Relaxed);
            tracing::info!(server = %self.name, "upstream server back after its ejection");
        }
        true
    }

    /// The `least_requests` cost: requests in flight (plus this one) times the peak-EWMA latency,
    /// decayed for the time since it was measured.
    pub(crate) fn cost(&self, weight: u32) -> f64 {
        let pending = f64::from(self.in_flight.load(Ordering::Relaxed)) + 1.0;
        let ewma = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        let rtt = if ewma == 0.0 { DEFAULT_RTT_NS } else { ewma };
        pending * rtt / f64::from(weight.max(1))
    }

    /// Records a response head that took `rtt_ns`: the peak-EWMA jumps to a slower one at once and
    /// decays towards faster ones (tower's `load/peak_ewma.rs`). A lost update under a race costs
    /// one sample, never correctness.
    pub(crate) fn observe(&self, rtt_ns: u64) {
        let now = now_ns();
        let then = self.ewma_at.swap(now, Ordering::Relaxed);
        let prev = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        let rtt = rtt_ns as f64;
        let next = if prev == 0.0 || rtt > prev {
            rtt
        } else {
            let elapsed = now.saturating_sub(then) as f64;
            let w = (-elapsed / EWMA_DECAY_NS).exp();
            prev * w + rtt * (1.0 - w)
        };
        self.ewma_ns.store(next.to_bits(), Ordering::Relaxed);
    }

    /// A request the server answered (a status below 500): its failures in a row start again.
    pub(crate) fn succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// A request that failed on the server (connect failure, timeout, reset, 5xx): with `eject`,
    /// the `failures`-th in a row ejects it for `duration`, doubled for each ejection that follows
    /// the end of the previous one within that previous one's duration.
    pub(crate) fn failed(&self, eject: Option<&Eject>, why: &str) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let Some(eject) = eject else { return };
        if failures < eject.failures || self.ejected_until.load(Ordering::Relaxed) != 0 {
            return;
        }
        let now = now_ns();
        let ended = self.ejection_end.load(Ordering::Relaxed);
        let mut doublings = self.doublings.load(Ordering::Relaxed);
        let last = eject.duration.as_nanos() as u64 * (1u64 << doublings);
        doublings = if ended != 0 && now.saturating_sub(ended) < last {
            (doublings + 1).min(MAX_DOUBLINGS)
        } else {
            0
        };
        let duration = eject.duration * (1u32 << doublings);
        let until = now.saturating_add(duration.as_nanos() as u64);
        if self
            .ejected_until
            .compare_exchange(0, until, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.doublings.store(doublings, Ordering::Relaxed);
            tracing::warn!(server = %self.name, failures, why, ejected_for = ?duration, "upstream server down: ejected");
        }
    }

    /// One active check's result, with the upstream's `rise` and `fall`.
    fn checked(&self, check: &HealthCheck, passed: bool, why: &str) {
        let down = self.check_down.load(Ordering::Relaxed);
        if passed != down {
            // Up and passing, or down and failing: nothing changes.
            self.check_streak.store(0, Ordering::Relaxed);
            return;
        }
        let streak = self.check_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = if down { check.rise } else { check.fall };
        if streak >= needed {
            self.check_streak.store(0, Ordering::Relaxed);
            self.check_down.store(!down, Ordering::Relaxed);
            if down {
                tracing::info!(server = %self.name, checks = streak, "upstream server up: health checks pass");
            } else {
                tracing::warn!(server = %self.name, checks = streak, why, "upstream server down: health checks fail");
            }
        }
    }
}

impl crate::metrics::ServerHealth for ServerState {
    fn stats(&self) -> &crate::metrics::ServerStats {
        &self.stats
    }

    fn load(&self) -> crate::metrics::ServerLoad {
        crate::metrics::ServerLoad {
            in_flight: self.in_flight.load(Ordering::Relaxed),
            latency_ms: f64::from_bits(self.ewma_ns.load(Ordering::Relaxed)) / 1e6,
            failures: self.failures.load(Ordering::Relaxed),
        }
    }

    fn healthy(&self) -> bool {
        !self.check_down.load(Ordering::Relaxed)
    }

    /// Without [`ServerState::is_up`]'s side effect: an ejection whose time is over is over here
    /// even if no request noticed yet.
    fn ejected(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now_ns() < until
    }
}

/// Starts the active health checks of `upstream` in one task, which ends when the upstream is
/// dropped (a reload that removed or rebuilt it). Outside a runtime (nothing to run it), nothing.
pub(crate) fn spawn_checks(upstream: &Arc<Upstream>) {
    let Some(check) = upstream.config.health.clone() else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak: Weak<Upstream> = Arc::downgrade(upstream);
    runtime.spawn(async move {
        let mut ticks = tokio::time::interval(check.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(upstream) = weak.upgrade() else {
                return;
            };
            let mut checks = tokio::task::JoinSet::new();
            for (i, server) in upstream.servers.iter().enumerate() {
                let state = Arc::clone(&server.state);
                let pool = Arc::clone(&server.pool);
                let host = upstream.config.servers[i].authority.to_string();
                let path = format!("{}{}", upstream.config.servers[i].base_path, check.path);
                let check = check.clone();
                checks.spawn(async move {
                    let (passed, why) = probe(&pool, &host, &path, &check).await;
                    state.checked(&check, passed, &why);
                });
            }
            // The upstream is not kept alive while its checks run.
            drop(upstream);
            while checks.join_next().await.is_some() {}
        }
    });
}

/// One check: a GET of the path through the server's pool, its status as expected within the
/// timeout; the body read (up to 64 KiB) so the connection goes back to the pool.
async fn probe(
    pool: &Arc<super::pool::ServerPool>,
    host: &str,
    path: &str,
    check: &HealthCheck,
) -> (bool, String) {
    let req = http::Request::get(path)
        .header(header::HOST, host)
        .header(header::USER_AGENT, "parapet-health-check")
        .body(Body::empty());
    let Ok(req) = req else {
        return (
            false,
            format!("health check path {path:?} is not a request target"),
        );
    };
    let sent = tokio::time::timeout(check.timeout, async {
        let response = pool
            .send(req, None, super::pool::Lease::default())
            .await
            .map_err(|e| e.describe())?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut read = 0usize;
        while read < 64 * 1024 {
            match std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
        Ok::<u16, String>(status)
    })
    .await;
    match sent {
        Err(_) => (false, format!("no answer within {:?}", check.timeout)),
        Ok(Err(why)) => (false, why),
        Ok(Ok(status)) => {
            let passed = match check.expect {
                Expect::Class(class) => status / 100 == class,
                Expect::Status(s) => status == s,
            };
            (passed, format!("status {status}"))
        }
    }
}
