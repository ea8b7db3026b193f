//! Prometheus metrics (`GET /metrics` on the admin listener), with the official OpenMetrics crate.
//!
//! One registry per process ([`global`]): a series whose labels a reload keeps (the same listener,
//! route and app) goes on counting across it. Label handles are resolved when the config is built
//! ([`RouteStats::new`], [`listener_connections`]), never looked up per request: counting a request
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

/// The labels of an open connection count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
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
    connections: Family<ListenerLabels, Gauge>,
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
    let connections = Family::<ListenerLabels, Gauge>::default();
    registry.register(
        "connections_open",
        "Client connections open, by listener",
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

/// The open-connections gauge of a listener, resolved once per accept loop.
pub fn listener_connections(listener: &str) -> Gauge {
    global().connections.get_or_create_owned(&ListenerLabels {
        listener: listener.to_owned(),
    })
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
