//! Prometheus metrics (`GET /metrics` on the admin listener), with the official OpenMetrics crate.
//!
//! One registry per process ([`global`]): a series whose labels a reload keeps (the same listener,
//! route and app) goes on counting across it. Label handles are resolved when the config is built
//! ([`RouteStats::new`], and per listener when it starts), never looked up per request: counting a request
//! costs two atomic increments and a histogram observation.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The labels of a request count: where it came in and where it went.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: String,
    route: String,
    app: String,
    class: &'static str,
}

/// The labels of a request duration: the app.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabels {
    listener: String,
    app: String,
}

/// The labels of an open tunnel count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

/// The labels of an open connection count: the listener, the protocol spoken (`pending` until the
/// first bytes or ALPN tell) and whether it came over TLS.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    listener: String,
    protocol: &'static str,
    tls: &'static str,
}

/// The labels of tunnel bytes: the listener, and which way they went.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    listener: String,
    direction: &'static str,
}

/// The labels of a reload count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The labels of a TLS certificate's expiry: the listener serving it, one of its names, and where it
/// comes from (`file` or `acme`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    listener: String,
    name: String,
    source: &'static str,
}

/// The labels of an ACME order count: the names ordered (comma-separated) and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AcmeOrderLabels {
    names: String,
    outcome: &'static str,
}

/// A certificate a listener serves for a name, for the expiry gauge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateExpiry {
    /// The listener.
    pub listener: String,
    /// A DNS name the certificate is served for.
    pub name: String,
    /// When it expires.
    pub not_after: SystemTime,
}

/// Every metric parapet keeps.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// The certificates served, by source and publisher: their expiry gauges are computed when
    /// scraped.
    certificates: Mutex<HashMap<(&'static str, usize), Vec<CertificateExpiry>>>,
    expiry: Family<CertificateLabels, Gauge>,
    acme_orders: Family<AcmeOrderLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    durations: Family<AppLabels, Histogram, fn() -> Histogram>,
    connections: Family<ConnectionLabels, Gauge>,
    tunnels: Family<ListenerLabels, Gauge>,
    tunnel_bytes: Family<DirectionLabels, Counter>,
    reloads: Family<OutcomeLabels, Counter>,
    generation: Gauge,
    last_reload: Gauge,
}

/// Buckets for a proxy's latencies: 1 ms to 30 s.
fn duration_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("parapet");
    let requests = Family::<RequestLabels, Counter>::default();
    registry.register(
        "requests",
        "Requests answered, by listener, route, app and status class",
        requests.clone(),
    );
    let durations =
        Family::<AppLabels, Histogram, fn() -> Histogram>::new_with_constructor(duration_histogram);
    registry.register(
        "request_duration_seconds",
        "Time from a request's head to its response head, by listener and app",
        durations.clone(),
    );
    let connections = Family::<ConnectionLabels, Gauge>::default();
    registry.register(
        "connections_open",
        "Client connections open, by listener, protocol (pending, http1, h2) and tls (true, false)",
        connections.clone(),
    );
    let tunnels = Family::<ListenerLabels, Gauge>::default();
    registry.register(
        "tunnels_open",
        "Upgraded connections (WebSocket tunnels) open, by listener",
        tunnels.clone(),
    );
    let tunnel_bytes = Family::<DirectionLabels, Counter>::default();
    registry.register(
        "tunnel_bytes",
        "Bytes carried by closed tunnels, by listener and direction (from_client, to_client)",
        tunnel_bytes.clone(),
    );
    let reloads = Family::<OutcomeLabels, Counter>::default();
    registry.register(
        "reloads",
        "Config reload attempts, by outcome (applied, refused, unchanged)",
        reloads.clone(),
    );
    let generation = Gauge::default();
    registry.register(
        "config_generation",
        "The running config's generation: 1 at start, one more per reload applied",
        generation.clone(),
    );
    let last_reload = Gauge::default();
    registry.register(
        "config_last_reload_timestamp_seconds",
        "When the running config was loaded, in seconds since the Unix epoch",
        last_reload.clone(),
    );
    let expiry = Family::<CertificateLabels, Gauge>::default();
    registry.register(
        "tls_certificate_expiry_seconds",
        "Seconds until each TLS certificate served expires (negative once expired), by listener, name and source (file or acme)",
        expiry.clone(),
    );
    let acme_orders = Family::<AcmeOrderLabels, Counter>::default();
    registry.register(
        "acme_orders",
        "ACME orders finished, by the names ordered and outcome (issued, failed)",
        acme_orders.clone(),
    );
    Metrics {
        registry: Mutex::new(registry),
        certificates: Mutex::default(),
        expiry,
        acme_orders,
        requests,
        durations,
        connections,
        tunnels,
        tunnel_bytes,
        reloads,
        generation,
        last_reload,
    }
});

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    /// The text exposition (OpenMetrics) of every metric.
    pub fn encode(&self) -> String {
        self.update_expiry();
        // The families registered on first use, registered now if nothing used them yet.
        LazyLock::force(&MORE);
        let mut out = String::with_capacity(4096);
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    /// Counts a reload attempt: `applied`, `refused` or `unchanged`; an applied one sets the
    /// generation and the load time.
    pub fn reload(&self, outcome: &'static str, generation: Option<u64>) {
        self.reloads.get_or_create(&OutcomeLabels { outcome }).inc();
        if let Some(generation) = generation {
            self.config_loaded(generation);
        }
    }

    /// Sets the certificates served from `source` (`file`, `acme`) by `publisher` (one id per
    /// publisher in the process, such as a manager's address), replacing those it set before; an
    /// empty list removes them.
    pub fn set_certificates(
        &self,
        source: &'static str,
        publisher: usize,
        certificates: Vec<CertificateExpiry>,
    ) {
        let mut table = self.certificates.lock().unwrap_or_else(|e| e.into_inner());
        if certificates.is_empty() {
            table.remove(&(source, publisher));
        } else {
            table.insert((source, publisher), certificates);
        }
    }

    /// Counts a finished ACME order for `names`: `issued` or `failed`.
    pub fn acme_order(&self, names: &str, outcome: &'static str) {
        self.acme_orders
            .get_or_create(&AcmeOrderLabels {
                names: names.to_owned(),
                outcome,
            })
            .inc();
    }

    /// The expiry gauges as of now, for the certificates served now.
    fn update_expiry(&self) {
        let now = SystemTime::now();
        let table = self.certificates.lock().unwrap_or_else(|e| e.into_inner());
        self.expiry.clear();
        for ((source, _), certificates) in table.iter() {
            for c in certificates {
                let seconds = match c.not_after.duration_since(now) {
                    Ok(left) => i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
                    Err(past) => -i64::try_from(past.duration().as_secs()).unwrap_or(i64::MAX),
                };
                self.expiry
                    .get_or_create(&CertificateLabels {
                        listener: c.listener.clone(),
                        name: c.name.clone(),
                        source,
                    })
                    .set(seconds);
            }
        }
    }

    /// Sets the running config's generation and load time (now).
    pub fn config_loaded(&self, generation: u64) {
        self.generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_reload.set(i64::try_from(now).unwrap_or(i64::MAX));
    }
}

/// The open-tunnels gauge of a listener, resolved when a tunnel opens.
pub fn listener_tunnels(listener: &str) -> Gauge {
    global().tunnels.get_or_create_owned(&ListenerLabels {
        listener: listener.to_owned(),
    })
}

/// Counts the bytes a closed tunnel of `listener` carried each way.
pub fn tunnel_closed(listener: &str, from_client: u64, to_client: u64) {
    for (direction, bytes) in [("from_client", from_client), ("to_client", to_client)] {
        global()
            .tunnel_bytes
            .get_or_create(&DirectionLabels {
                listener: listener.to_owned(),
                direction,
            })
            .inc_by(bytes);
    }
}

/// The counters of one route (or of a listener's own answers, with empty route and app), resolved
/// when the config is built.
pub struct RouteStats {
    /// Requests by status class, 1xx to 5xx.
    classes: [Counter; 5],
    duration: Histogram,
}

impl RouteStats {
    /// The handles for these labels.
    pub fn new(listener: &str, route: &str, app: &str) -> Arc<RouteStats> {
        let metrics = global();
        let class = |class: &'static str| {
            metrics.requests.get_or_create_owned(&RequestLabels {
                listener: listener.to_owned(),
                route: route.to_owned(),
                app: app.to_owned(),
                class,
            })
        };
        Arc::new(RouteStats {
            classes: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            duration: metrics.durations.get_or_create_owned(&AppLabels {
                listener: listener.to_owned(),
                app: app.to_owned(),
            }),
        })
    }

    /// Counts a response with this status, given after `elapsed`.
    pub fn record(&self, status: http::StatusCode, elapsed: Duration) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.classes[class].inc();
        self.duration.observe(elapsed.as_secs_f64());
    }
}

// Listener traffic (connections by protocol, body bytes, TLS handshakes), upstream servers and
// the access log: families registered on first use ([`MORE`]) into the same registry, their
// series resolved when a listener starts or an upstream server's state is made.

/// The labels of a failed TLS handshake: the listener, and why (coarsely).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    listener: String,
    reason: &'static str,
}

/// The labels of an upstream server.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    upstream: String,
    server: String,
}

/// The labels of an upstream server's failures: the server, and the kind of failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    upstream: String,
    server: String,
    kind: &'static str,
}

/// The metrics registered on first use.
struct More {
    body_bytes: Family<DirectionLabels, Counter>,
    handshakes: Family<ListenerLabels, Counter>,
    handshake_failures: Family<ReasonLabels, Counter>,
    upstream_requests: Family<ServerLabels, Counter>,
    upstream_failures: Family<FailureLabels, Counter>,
    upstream_retries: Family<ServerLabels, Counter>,
    scraped: Arc<Scraped>,
}

static MORE: LazyLock<More> = LazyLock::new(|| {
    let more = More {
        body_bytes: Family::default(),
        handshakes: Family::default(),
        handshake_failures: Family::default(),
        upstream_requests: Family::default(),
        upstream_failures: Family::default(),
        upstream_retries: Family::default(),
        scraped: Arc::default(),
    };
    let mut registry = global().registry.lock().unwrap_or_else(|e| e.into_inner());
    registry.register(
        "body_bytes",
        "Request and response body bytes of HTTP requests, by listener and direction (from_client, \
         to_client); tunnels are parapet_tunnel_bytes",
        more.body_bytes.clone(),
    );
    registry.register(
        "tls_handshakes",
        "TLS handshakes completed, by listener",
        more.handshakes.clone(),
    );
    registry.register(
        "tls_handshake_failures",
        "TLS handshakes failed, by listener and reason (timeout, closed, protocol, incompatible, \
         alert, certificate, other)",
        more.handshake_failures.clone(),
    );
    registry.register(
        "upstream_requests",
        "Requests sent to an upstream server (each try, retries included), by upstream and server",
        more.upstream_requests.clone(),
    );
    registry.register(
        "upstream_failures",
        "Tries that failed on an upstream server, by upstream, server and kind (connect, timeout, \
         reset, protocol, status_5xx, saturated)",
        more.upstream_failures.clone(),
    );
    registry.register(
        "upstream_retries",
        "Requests sent again to another server after this server failed them, by upstream and server",
        more.upstream_retries.clone(),
    );
    registry.register_collector(Box::new(Arc::clone(&more.scraped)));
    drop(registry);
    more
});

fn more() -> &'static More {
    &MORE
}

/// What a connection speaks, for `parapet_connections_open`'s `protocol` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Speaks {
    /// Accepted, its protocol not yet told (the first bytes, or the TLS handshake and ALPN).
    Pending,
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 (prior knowledge, or ALPN `h2`).
    H2,
}

impl Speaks {
    const ALL: [Speaks; 3] = [Speaks::Pending, Speaks::Http1, Speaks::H2];

    fn label(self) -> &'static str {
        match self {
            Speaks::Pending => "pending",
            Speaks::Http1 => "http1",
            Speaks::H2 => "h2",
        }
    }
}

/// Why a TLS handshake failed, coarsely: the `reason` of `parapet_tls_handshake_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HandshakeFailure {
    /// Not done within `server.header_timeout`.
    Timeout,
    /// The client closed or reset the connection.
    Closed,
    /// Not TLS, or broken TLS (plain HTTP on a TLS port, garbage, a bad record).
    Protocol,
    /// Nothing in common: versions, cipher suites, ALPN protocols.
    Incompatible,
    /// The client refused with an alert (often: it does not trust the certificate).
    Alert,
    /// No certificate for the name the client asked for, or a client certificate refused.
    Certificate,
    /// Anything else.
    Other,
}

impl HandshakeFailure {
    const ALL: [HandshakeFailure; 7] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::Closed,
        HandshakeFailure::Protocol,
        HandshakeFailure::Incompatible,
        HandshakeFailure::Alert,
        HandshakeFailure::Certificate,
        HandshakeFailure::Other,
    ];

    fn label(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::Incompatible => "incompatible",
            HandshakeFailure::Alert => "alert",
            HandshakeFailure::Certificate => "certificate",
            HandshakeFailure::Other => "other",
        }
    }

    /// The reason of the error a TLS accept failed with (rustls's error inside tokio-rustls's
    /// `io::Error`, or the socket's own).
    pub(crate) fn of(err: &std::io::Error) -> Self {
        use rustls::Error as E;
        match err.get_ref().and_then(|e| e.downcast_ref::<E>()) {
            Some(E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. })
            | Some(E::InvalidMessage(_) | E::DecryptError | E::PeerSentOversizedRecord)
            | Some(E::PeerMisbehaved(_)) => HandshakeFailure::Protocol,
            Some(E::PeerIncompatible(_) | E::NoApplicationProtocol) => {
                HandshakeFailure::Incompatible
            }
            Some(E::AlertReceived(_)) => HandshakeFailure::Alert,
            Some(E::NoCertificatesPresented | E::InvalidCertificate(_)) => {
                HandshakeFailure::Certificate
            }
            // What rustls says when the listener's resolver has no certificate for the client.
            Some(E::General(why)) if why.contains("certificate") => HandshakeFailure::Certificate,
            Some(_) => HandshakeFailure::Other,
            None => match err.kind() {
                std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe => HandshakeFailure::Closed,
                _ => HandshakeFailure::Other,
            },
        }
    }
}

/// A listener's body byte counters, a clone held by each of its connections: a request body adds
/// its bytes once it ends (or every [`BodyCounters::FLUSH`] bytes), never per frame.
#[derive(Clone, Debug, Default)]
pub(crate) struct BodyCounters {
    /// Request body bytes read from clients.
    pub(crate) from_client: Counter,
    /// Response body bytes handed to clients' connections.
    pub(crate) to_client: Counter,
}

impl BodyCounters {
    /// A long body adds what it has counted every this many bytes, so a stream lasting hours shows.
    pub(crate) const FLUSH: u64 = 1 << 20;
}

/// The series of one listener, resolved when its accept loop starts; those of TLS at its first
/// TLS connection, so that a plain listener shows no TLS series.
pub(crate) struct ListenerStats {
    name: String,
    /// `connections_open{tls="false"}` by [`Speaks`].
    plain: std::sync::OnceLock<[Gauge; 3]>,
    tls: std::sync::OnceLock<TlsStats>,
    body: BodyCounters,
}

/// A listener's TLS series.
struct TlsStats {
    /// `connections_open{tls="true"}` by [`Speaks`].
    open: [Gauge; 3],
    handshakes: Counter,
    /// By [`HandshakeFailure`].
    failures: [Counter; 7],
}

impl ListenerStats {
    /// The handles of listener `name`.
    pub(crate) fn new(name: &str) -> Arc<Self> {
        let more = more();
        let body = |direction| {
            more.body_bytes.get_or_create_owned(&DirectionLabels {
                listener: name.to_owned(),
                direction,
            })
        };
        Arc::new(Self {
            name: name.to_owned(),
            plain: std::sync::OnceLock::new(),
            tls: std::sync::OnceLock::new(),
            body: BodyCounters {
                from_client: body("from_client"),
                to_client: body("to_client"),
            },
        })
    }

    fn gauges(&self, tls: &'static str) -> [Gauge; 3] {
        Speaks::ALL.map(|speaks| {
            global().connections.get_or_create_owned(&ConnectionLabels {
                listener: self.name.clone(),
                protocol: speaks.label(),
                tls,
            })
        })
    }

    fn tls(&self) -> &TlsStats {
        self.tls.get_or_init(|| {
            let more = more();
            TlsStats {
                open: self.gauges("true"),
                handshakes: more.handshakes.get_or_create_owned(&ListenerLabels {
                    listener: self.name.clone(),
                }),
                failures: HandshakeFailure::ALL.map(|reason| {
                    more.handshake_failures.get_or_create_owned(&ReasonLabels {
                        listener: self.name.clone(),
                        reason: reason.label(),
                    })
                }),
            }
        })
    }

    fn open(&self, tls: bool, speaks: Speaks) -> &Gauge {
        let gauges = if tls {
            &self.tls().open
        } else {
            self.plain.get_or_init(|| self.gauges("false"))
        };
        &gauges[speaks as usize]
    }

    /// The listener's body byte counters, for a connection to hold.
    pub(crate) fn body(&self) -> &BodyCounters {
        &self.body
    }

    /// Counts a TLS handshake completed.
    pub(crate) fn handshake_done(&self) {
        self.tls().handshakes.inc();
    }

    /// Counts a TLS handshake failed.
    pub(crate) fn handshake_failed(&self, why: HandshakeFailure) {
        self.tls().failures[why as usize].inc();
    }
}

/// One open client connection, counted in `parapet_connections_open` under the protocol it speaks
/// until it is dropped.
pub(crate) struct OpenConnection {
    stats: Arc<ListenerStats>,
    tls: bool,
    speaks: Speaks,
}

impl OpenConnection {
    /// A connection just accepted, its protocol not told yet.
    pub(crate) fn new(stats: &Arc<ListenerStats>, tls: bool) -> Self {
        stats.open(tls, Speaks::Pending).inc();
        Self {
            stats: Arc::clone(stats),
            tls,
            speaks: Speaks::Pending,
        }
    }

    /// The connection's protocol is told: it moves to that series.
    pub(crate) fn speaks(&mut self, speaks: Speaks) {
        if speaks != self.speaks {
            self.stats.open(self.tls, self.speaks).dec();
            self.stats.open(self.tls, speaks).inc();
            self.speaks = speaks;
        }
    }

    /// The listener's series.
    pub(crate) fn stats(&self) -> &ListenerStats {
        &self.stats
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.stats.open(self.tls, self.speaks).dec();
    }
}

/// What kind of failure a try on an upstream server was: the `kind` of
/// `parapet_upstream_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UpstreamFailure {
    /// No connection could be opened (refused, unreachable, `connect_timeout`, TLS to it failed).
    Connect,
    /// No response head within the upstream's `timeout`.
    Timeout,
    /// The connection closed or broke before the response head.
    Reset,
    /// The server broke HTTP: a malformed or ambiguously framed response.
    Protocol,
    /// The server answered with a 5xx status.
    Status5xx,
    /// No free connection (`max_connections`) within `queue_timeout`: never sent.
    Saturated,
}

impl UpstreamFailure {
    const ALL: [UpstreamFailure; 6] = [
        UpstreamFailure::Connect,
        UpstreamFailure::Timeout,
        UpstreamFailure::Reset,
        UpstreamFailure::Protocol,
        UpstreamFailure::Status5xx,
        UpstreamFailure::Saturated,
    ];

    fn label(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Reset => "reset",
            UpstreamFailure::Protocol => "protocol",
            UpstreamFailure::Status5xx => "status_5xx",
            UpstreamFailure::Saturated => "saturated",
        }
    }
}

/// The series of one upstream server, resolved when its state is made: a server whose state a
/// reload keeps keeps them (and one rebuilt with the same labels finds the same series).
pub(crate) struct ServerStats {
    labels: ServerLabels,
    requests: Counter,
    retries: Counter,
    /// By [`UpstreamFailure`].
    failures: [Counter; 6],
}

impl ServerStats {
    /// The handles of server `server` (its URL) of upstream `upstream`.
    pub(crate) fn new(upstream: &str, server: &str) -> Self {
        let more = more();
        let labels = ServerLabels {
            upstream: upstream.to_owned(),
            server: server.to_owned(),
        };
        Self {
            requests: more.upstream_requests.get_or_create_owned(&labels),
            retries: more.upstream_retries.get_or_create_owned(&labels),
            failures: UpstreamFailure::ALL.map(|kind| {
                more.upstream_failures.get_or_create_owned(&FailureLabels {
                    upstream: upstream.to_owned(),
                    server: server.to_owned(),
                    kind: kind.label(),
                })
            }),
            labels,
        }
    }

    /// Counts a try sent to the server.
    pub(crate) fn sent(&self) {
        self.requests.inc();
    }

    /// Counts a try that failed on the server.
    pub(crate) fn failed(&self, kind: UpstreamFailure) {
        self.failures[kind as usize].inc();
    }

    /// Counts a request sent again to another server after this one failed it.
    pub(crate) fn retried(&self) {
        self.retries.inc();
    }
}

/// What a scrape reads of an upstream server's health, at the scrape.
pub(crate) trait ServerHealth: Send + Sync + 'static {
    /// Its series (and labels).
    fn stats(&self) -> &ServerStats;
    /// Not taken down by active health checks.
    fn healthy(&self) -> bool;
    /// Ejected by passive health checks (failures in a row), now.
    fn ejected(&self) -> bool;
    /// Its load, for the admin listener's `/upstreams`.
    fn load(&self) -> ServerLoad;
}

/// An upstream server's load as `/upstreams` shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct ServerLoad {
    /// Requests sent whose response head has not come (counted with `least_requests` only).
    pub(crate) in_flight: u32,
    /// Peak-EWMA latency to the response head, in ms (`least_requests` only; 0 before a sample).
    pub(crate) latency_ms: f64,
    /// Requests failed in a row (passive health).
    pub(crate) failures: u32,
}

/// One live upstream server, as the admin listener shows it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ServerView {
    pub(crate) healthy: bool,
    pub(crate) ejected: bool,
    pub(crate) load: ServerLoad,
}

/// Every live upstream server by `(upstream, server)`: the newest state where a reload left two.
pub(crate) fn live_servers() -> HashMap<(String, String), ServerView> {
    let live: Vec<Arc<dyn ServerHealth>> = {
        let mut servers = more()
            .scraped
            .servers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        servers.retain(|s| s.strong_count() > 0);
        servers
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect()
    };
    let mut views = HashMap::new();
    // Oldest first: a newer state with the same labels replaces an older one.
    for s in live {
        let labels = &s.stats().labels;
        views.insert(
            (labels.upstream.clone(), labels.server.clone()),
            ServerView {
                healthy: s.healthy(),
                ejected: s.ejected(),
                load: s.load(),
            },
        );
    }
    views
}

/// Puts a server's health in every scrape for as long as it lives: `parapet_upstream_healthy` and
/// `parapet_upstream_ejected`. A server removed by a reload leaves the scrape with its state.
pub(crate) fn watch_server(server: std::sync::Weak<dyn ServerHealth>) {
    let mut servers = more()
        .scraped
        .servers
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    servers.retain(|s| s.strong_count() > 0);
    servers.push(server);
}

/// What is read at each scrape rather than counted as it happens: the health of every live upstream
/// server, and the access log lines dropped.
#[derive(Default)]
struct Scraped {
    /// Oldest first.
    servers: Mutex<Vec<std::sync::Weak<dyn ServerHealth>>>,
}

impl std::fmt::Debug for Scraped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scraped")
    }
}

impl prometheus_client::collector::Collector for Scraped {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::MetricType;

        let dropped = ConstCounter::new(parapet_middlewares::access_log::dropped_lines());
        let metric = encoder.encode_descriptor(
            "access_log_dropped_lines",
            "Access log lines dropped because the log's writer fell behind (its buffer full)",
            None,
            MetricType::Counter,
        )?;
        dropped.encode(metric)?;

        let live: Vec<Arc<dyn ServerHealth>> = {
            let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
            servers.retain(|s| s.strong_count() > 0);
            servers
                .iter()
                .filter_map(std::sync::Weak::upgrade)
                .collect()
        };
        // Two live states with the same labels (a reload that rebuilt one while requests finish
        // on the other): the newest is the one taking new requests.
        let mut seen = std::collections::HashSet::new();
        let live: Vec<(&ServerLabels, bool, bool)> = live
            .iter()
            .rev()
            .filter(|s| seen.insert(&s.stats().labels))
            .map(|s| (&s.stats().labels, s.healthy(), s.ejected()))
            .collect();
        if live.is_empty() {
            return Ok(());
        }
        // (name, help, whether it reads the ejection rather than the health)
        let families = [
            (
                "upstream_healthy",
                "1 while an upstream server passes its active health checks (always, without \
                 checks), by upstream and server",
                false,
            ),
            (
                "upstream_ejected",
                "1 while an upstream server is ejected by passive health checks (failures in a \
                 row), by upstream and server",
                true,
            ),
        ];
        for (name, help, reads_ejection) in families {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (labels, healthy, ejected) in &live {
                let value = if reads_ejection { *ejected } else { *healthy };
                ConstGauge::new(i64::from(value)).encode(metric.encode_family(*labels)?)?;
            }
        }
        Ok(())
    }
}
