//! The validated model: plain data, what the file says once every error is ruled out.
//!
//! Nothing here is built or opened: no file handles, no threads, no services. Every type is `Clone`
//! and `PartialEq`, so a reload can tell what changed, and `parapet check` can produce a model without
//! side effects. Building it into something that serves is the build stage (`crate::build`).
//!
//! A kind's settings (a handler's, a middleware's) are typed by the kind and carried here erased, as
//! [`Settings`]; values whose later errors need a place in the file (a path opened at build time)
//! carry their [`Location`].

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};

use super::reader::ConfigError;

/// A loaded, validated config.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// `[server]`: process-wide settings.
    pub server: ServerConfig,
    /// `[listeners.NAME]`, in name order.
    pub listeners: Vec<ListenerConfig>,
    /// `[[routes]]`, in file order.
    pub routes: Vec<RouteConfig>,
    /// `[apps.NAME]`.
    pub apps: BTreeMap<String, AppConfig>,
    /// `[upstreams.NAME]`.
    pub upstreams: BTreeMap<String, Arc<UpstreamConfig>>,
    /// Every middleware a chain names: the declared `[middlewares.NAME]` instances, and each kind
    /// named bare in a chain (under the kind's own name, with its default settings).
    pub middlewares: BTreeMap<String, MiddlewareConfig>,
    /// `[admin]`: the read-only admin listener, off when absent.
    pub admin: Option<AdminConfig>,
    /// `[acme]`: the ACME account every listener's `acme` names are obtained with; present whenever a
    /// listener names any.
    pub acme: Option<AcmeConfig>,
    /// A hash of the file's text, to tell an unchanged file from a changed one on reload.
    pub source_hash: u64,
}

/// `[admin]`: where the read-only admin endpoints (`/healthz`, `/readyz`, `/metrics`, `/config`,
/// `/upstreams`) listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    /// The address to bind (`bind`); keep it on loopback.
    pub bind: SocketAddr,
}

/// Where a value stands in a config file, for errors found after reading (at build time).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Location {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The dotted key, such as `middlewares.log.path`.
    pub key: String,
}

impl Location {
    /// An error at this place.
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: self.line,
            column: self.column,
            key: self.key.clone(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.key
        )
    }
}

/// A value and where it was written. Two `Located` values are equal when their values are: moving a
/// line in the file changes nothing a reload needs to redo.
#[derive(Clone, Debug)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub at: Location,
}

impl<T: PartialEq> PartialEq for Located<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T: Eq> Eq for Located<T> {}

/// The settings of a handler or middleware kind, typed by the kind and erased here: the model holds
/// them without knowing their type, the kind's build step downcasts them.
#[derive(Clone)]
pub struct Settings(Arc<dyn AnySettings>);

impl Settings {
    /// Wraps a kind's typed settings.
    pub fn new<T: fmt::Debug + PartialEq + Send + Sync + 'static>(settings: T) -> Self {
        Settings(Arc::new(settings))
    }

    /// The typed settings, if they are a `T`.
    pub fn downcast_ref<T: 'static>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref()
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl PartialEq for Settings {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_dyn(other.0.as_any())
    }
}

/// Object-safe equality and downcasting for [`Settings`].
trait AnySettings: fmt::Debug + Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn eq_dyn(&self, other: &dyn Any) -> bool;
}

impl<T: fmt::Debug + PartialEq + Send + Sync + 'static> AnySettings for T {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn eq_dyn(&self, other: &dyn Any) -> bool {
        other.downcast_ref::<T>().is_some_and(|o| o == self)
    }
}

/// A middleware as the config declares it: `[middlewares.NAME]`, or a kind named bare in a chain.
/// Equal to another when its kind and settings are, wherever it is written.
#[derive(Clone, Debug)]
pub struct MiddlewareConfig {
    /// Its kind (`kind`).
    pub kind: String,
    /// The kind's settings, as its parse step read them.
    pub settings: Settings,
    /// Whether it was named bare in a chain (a kind with its defaults) rather than declared.
    pub implicit: bool,
    /// Where it is declared (for a bare kind: where a chain first names it).
    pub at: Location,
}

impl PartialEq for MiddlewareConfig {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.implicit == other.implicit
            && self.settings == other.settings
    }
}

/// `[server]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// How long in-flight requests may run after SIGTERM or SIGINT (`shutdown_timeout`, default 30s).
    pub shutdown_timeout: Duration,
    /// Worker threads (`workers`); `None` means one per core.
    pub workers: Option<usize>,
    /// How long an idle HTTP/1.1 keep-alive connection may keep its buffers (`idle_release`,
    /// default 1s); see `server::http1`.
    pub idle_release: Duration,
    /// How long a client may take to send a request head, counted from its connection or its last
    /// response (`header_timeout`, default 30s): the keep-alive timeout too.
    pub header_timeout: Duration,
    /// Whether listeners are bound with `SO_REUSEPORT` (`reuse_port`, default false), so that several
    /// parapet processes can share a port and the kernel spreads connections between them.
    pub reuse_port: bool,
    /// The longest pause between reads of a request body (then 408) and between writes to a client
    /// that does not read (then the connection closes) (`body_timeout`, default 60s).
    pub body_timeout: Duration,
    /// Streams an HTTP/2 client may have open at once on one connection (`max_streams`, default
    /// 100): `SETTINGS_MAX_CONCURRENT_STREAMS` (RFC 9113 §6.5.2).
    pub max_streams: u32,
    /// Open client connections per process (`max_connections`, default 20000); beyond it, accepting
    /// pauses until one closes.
    pub max_connections: usize,
    /// The largest request head, request line and headers, in bytes (`max_header_size`, default
    /// 32 KiB); a larger one is answered 431 (RFC 6585 §5).
    pub max_header_size: usize,
    /// The most header lines in a request head (`max_headers`, default 100); more is answered 431.
    pub max_headers: usize,
    /// The longest request target, in bytes (`max_uri_length`, default 8 KiB); a longer one is
    /// answered 414 (RFC 9110 §15.5.15).
    pub max_uri_length: usize,
    /// Requests served on one HTTP/1.1 connection before it closes (`max_requests_per_connection`,
    /// default 10000); `None` for no limit (`0` in the file).
    pub max_requests_per_connection: Option<u64>,
    /// Peers whose forwarding headers (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`) are believed
    /// (`trusted_proxies`, default none); see `crate::router::admit`.
    pub trusted_proxies: Vec<IpRange>,
    /// How long an upgraded connection (a WebSocket tunnel) may pass no byte either way before it
    /// is closed (`tunnel_timeout`, default 1h).
    pub tunnel_timeout: Duration,
    /// Whether HTTP/1.1 requests without a body are served by parapet's own lean path rather than
    /// hyper's connection (`lean_http1`, default true); see `server::lean`.
    pub lean_http1: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            shutdown_timeout: Duration::from_secs(30),
            workers: None,
            idle_release: Duration::from_secs(1),
            header_timeout: Duration::from_secs(30),
            reuse_port: false,
            body_timeout: Duration::from_secs(60),
            max_streams: 100,
            max_connections: 20_000,
            max_header_size: 32 * 1024,
            max_headers: 100,
            max_uri_length: 8 * 1024,
            max_requests_per_connection: Some(10_000),
            trusted_proxies: Vec::new(),
            tunnel_timeout: Duration::from_secs(3600),
            lean_http1: true,
        }
    }
}

/// A block of IP addresses (CIDR): defined beside the middlewares that filter on it.
pub use parapet_middlewares::ip::IpRange;

/// `[listeners.NAME]`: a socket parapet accepts connections on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    /// The listener's name, which routes refer to.
    pub name: String,
    /// The address to bind (`bind`).
    pub bind: SocketAddr,
    /// The middlewares around the listener's router (`middlewares`), outermost first, by name (keys of
    /// [`Config::middlewares`]): they see every request of the listener, including those no route
    /// matches.
    pub middlewares: Vec<String>,
    /// `[listeners.NAME.tls]`: TLS termination; `None` for plain HTTP.
    pub tls: Option<ListenerTls>,
}

/// `[listeners.NAME.tls]`: the certificates a listener serves and the oldest TLS version it accepts.
/// The files are only named here; they are read by the build stage (and by `parapet check`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerTls {
    /// `certificates`, in file order: the first is the default. May be empty when `acme` is not.
    pub certificates: Vec<CertificateFiles>,
    /// `acme`: the DNS names to obtain and renew one certificate for (lowercase, no trailing dot,
    /// no duplicates, in file order), through the `[acme]` account.
    pub acme: Vec<String>,
    /// `min_version`.
    pub min_version: TlsVersion,
    /// Where the table is, for build errors that concern it as a whole.
    pub at: Location,
}

/// `[acme]`: the ACME account (RFC 8555) the listeners' `acme` names are obtained with, and where
/// what it obtains is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeConfig {
    /// `email`: the account's contact, if any.
    pub email: Option<String>,
    /// `directory`: the ACME server's directory URL (an `https://` URL); Let's Encrypt's
    /// production directory by default.
    pub directory: String,
    /// `storage`: the directory the account key, certificates and keys are kept in ("acme" by
    /// default, created 0700; files 0600).
    pub storage: Located<PathBuf>,
    /// `challenge`: how the names are proven.
    pub challenge: AcmeChallenge,
    /// `ca`: a PEM file of CA certificates to trust for the directory itself instead of the
    /// system's roots (a test directory such as Pebble's).
    pub ca: Option<Located<PathBuf>>,
    /// `retry`: the wait after a first failed order, doubled after each further failure up to an
    /// hour (default 1m).
    pub retry: Duration,
}

impl AcmeConfig {
    /// Let's Encrypt's production directory: the default `directory`.
    pub const LETS_ENCRYPT: &'static str = "https://acme-v02.api.letsencrypt.org/directory";
    /// Let's Encrypt's staging directory: untrusted certificates, generous rate limits.
    pub const LETS_ENCRYPT_STAGING: &'static str =
        "https://acme-staging-v02.api.letsencrypt.org/directory";
}

/// `challenge` of `[acme]`: how the ACME server checks that parapet answers for a name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// `tls-alpn-01` (RFC 8737), the default: answered in the TLS handshake by the TLS listeners
    /// (on port 443 in production).
    #[default]
    TlsAlpn01,
    /// `http-01` (RFC 8555 §8.3): answered on every plain-HTTP listener (on port 80 in
    /// production), before routing.
    Http01,
}

impl AcmeChallenge {
    /// The challenge's name in the config and in RFC 8555's registry.
    pub fn as_str(self) -> &'static str {
        match self {
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
            AcmeChallenge::Http01 => "http-01",
        }
    }
}

/// One `{ cert, key }` of `certificates`: PEM files, with where each is named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// Where `cert` is named.
    pub cert_at: Location,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Where `key` is named.
    pub key_at: Location,
}

/// A TLS protocol version (`min_version`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5246) and 1.3: the default.
    #[default]
    V1_2,
    /// TLS 1.3 only (RFC 8446).
    V1_3,
}

/// Which hosts a route serves.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostMatch {
    /// Any host (no `host` key, or `host = "*"`).
    Any,
    /// Exactly this host, lowercase.
    Exact(String),
    /// Any subdomain of this suffix: `*.example.com` is stored as `.example.com`.
    Wildcard(String),
}

/// `[[routes]]`: a listener, host and path prefix mapped to an app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConfig {
    /// The listeners it serves (`listener`); `None` means all.
    pub listeners: Option<Vec<String>>,
    /// The hosts it serves (`host`).
    pub host: HostMatch,
    /// The path prefix (`path`, default `/`), matched on segment boundaries.
    pub path: String,
    /// Whether the prefix is removed from the path before the app sees it (`strip_prefix`).
    pub strip_prefix: bool,
    /// The app it sends requests to (`app`).
    pub app: String,
}

/// `[apps.NAME]`: layers around one endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct AppConfig {
    /// The middlewares, outermost first (`middlewares`), by name (keys of [`Config::middlewares`]).
    pub middlewares: Vec<String>,
    /// Where requests end up.
    pub endpoint: EndpointConfig,
}

/// An app's endpoint: an upstream or an in-process handler.
#[derive(Clone, Debug, PartialEq)]
pub enum EndpointConfig {
    /// The name of an `[upstreams.NAME]` (`upstream`).
    Upstream(String),
    /// An in-process handler (`handler = { kind = ... }`).
    Handler(HandlerConfig),
}

/// `handler = { kind = ..., ... }`: an in-process handler as the config declares it. Equal to
/// another when its kind and settings are, wherever it is written.
#[derive(Clone, Debug)]
pub struct HandlerConfig {
    /// The handler kind, such as `respond` or `static`.
    pub kind: String,
    /// The kind's settings, as its parse step read them.
    pub settings: Settings,
    /// Where the handler table is.
    pub at: Location,
}

impl PartialEq for HandlerConfig {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.settings == other.settings
    }
}

/// One server of an upstream: where to connect, and the path prefix to put before request paths.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpstreamServer {
    /// `http`, or `https` for a server spoken to over TLS (the upstream's `tls` settings).
    pub scheme: Scheme,
    /// `host:port`.
    pub authority: Authority,
    /// A base path without a trailing slash, empty for none.
    pub base_path: String,
    /// `weight` of a `{ url, weight }` entry, default 1: its share of the traffic.
    pub weight: u32,
}

impl fmt::Display for UpstreamServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

/// `[upstreams.NAME]`: servers parapet proxies to, round robin.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpstreamConfig {
    /// The upstream's name.
    pub name: String,
    /// `servers`, at least one.
    pub servers: Vec<UpstreamServer>,
    /// `connect_timeout`, default 5s.
    pub connect_timeout: Duration,
    /// `timeout`: until the response head arrives, default 30s.
    pub timeout: Duration,
    /// `max_idle`: idle keep-alive connections kept per server, default 64 (like nginx's
    /// `keepalive`); connections beyond it close when their response ends.
    pub max_idle: usize,
    /// `balance`, default round robin.
    pub balance: Balance,
    /// `max_connections` per server, default unlimited (`None`).
    pub max_connections: Option<usize>,
    /// `queue_timeout`: the longest wait for a server's free connection, default 1s.
    pub queue_timeout: Duration,
    /// `retries`: other servers tried after a failure, default 2.
    pub retries: u32,
    /// `retry_on`: when an idempotent request is retried.
    pub retry_on: RetryOn,
    /// `read_timeout`: the longest pause between reads of the response body, default 60s.
    pub read_timeout: Duration,
    /// `health`: active health checks, off unless set.
    pub health: Option<HealthCheck>,
    /// `eject`: passive ejection, `None` when `failures = 0`.
    pub eject: Option<Eject>,
    /// `protocol`: the HTTP version spoken to the servers, default `auto`.
    pub protocol: UpstreamProtocol,
    /// `tls`: how `https://` servers are verified; the defaults when absent.
    pub tls: UpstreamTls,
}

/// `balance` (and `hash_key`): how an upstream spreads requests over its servers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum Balance {
    /// `"round_robin"`: smooth weighted round robin, as nginx's.
    #[default]
    RoundRobin,
    /// `"least_requests"`: the less loaded of two random servers (in-flight requests and latency).
    LeastRequests,
    /// `"random"`: weighted random.
    Random,
    /// `"hash"`: a consistent hash of the key.
    Hash(HashKey),
}

/// `hash_key`: what a request is hashed by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HashKey {
    /// `"client_ip"`.
    ClientIp,
    /// `"header:NAME"`.
    Header(http::HeaderName),
    /// `"cookie:NAME"`.
    Cookie(String),
}

/// `retry_on`: the failures after which an idempotent request whose body is still at hand is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RetryOn {
    /// `"timeout"`: no response head within `timeout`.
    pub timeout: bool,
    /// `"reset"`: the connection broke before the response head.
    pub reset: bool,
    /// `"502"`, `"503"`, `"504"`: the upstream answered this status.
    pub status_502: bool,
    /// `"503"`.
    pub status_503: bool,
    /// `"504"`.
    pub status_504: bool,
}

/// `health`: an active check of each server.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    /// `path`, default "/".
    pub path: String,
    /// `interval`, default 5s.
    pub interval: Duration,
    /// `timeout`, default 2s.
    pub timeout: Duration,
    /// `rise`: passed checks in a row that bring a down server up, default 2.
    pub rise: u32,
    /// `fall`: failed checks in a row that take a server down, default 3.
    pub fall: u32,
    /// `expect`: a status class (`"2xx"`, default) or one status (`"204"`, `200`).
    pub expect: Expect,
}

/// The status a health check expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Expect {
    /// `"Nxx"`: any status of that class.
    Class(u16),
    /// One status.
    Status(u16),
}

/// `eject`: passive ejection of a server failing requests in a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Eject {
    /// `failures` in a row (connect failures, timeouts, resets, 5xx), default 5.
    pub failures: u32,
    /// `duration` of the first ejection, default 30s; doubled for each ejection following soon after.
    pub duration: Duration,
}

/// `protocol` of an upstream: the HTTP version spoken to its servers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum UpstreamProtocol {
    /// `"http1"`: HTTP/1.1 only (over TLS, ALPN offers `http/1.1` alone).
    Http1,
    /// `"h2"`: HTTP/2 only: over TLS, ALPN offers `h2` alone; over plain TCP, prior knowledge (h2c,
    /// RFC 9113 §3.3), as gRPC backends speak it.
    H2,
    /// `"auto"` (default): over TLS, ALPN offers `h2` and `http/1.1` and the server chooses; over
    /// plain TCP, HTTP/1.1.
    #[default]
    Auto,
}

/// `tls = { ca, server_name, verify }` of an upstream: how its `https://` servers are verified.
#[derive(Clone, Debug)]
pub struct UpstreamTls {
    /// `ca`: a PEM file of the CA certificates trusted instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// `server_name`: the name sent as SNI and verified in the certificate; default each URL's host
    /// (an IP address is verified as an IP address).
    pub server_name: Option<String>,
    /// `verify` (default true): `false` accepts any certificate (warned about at load).
    pub verify: bool,
    /// Where `ca` is written (else where the `tls` table or the upstream is), for build errors.
    pub at: Location,
}

impl Default for UpstreamTls {
    fn default() -> Self {
        Self {
            ca: None,
            server_name: None,
            verify: true,
            at: Location::default(),
        }
    }
}

// Equal when the settings are, wherever they are written: a reload that only moves lines keeps the
// upstream and its pools.
impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        (&self.ca, &self.server_name, self.verify) == (&other.ca, &other.server_name, other.verify)
    }
}

impl Eq for UpstreamTls {}

impl std::hash::Hash for UpstreamTls {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (&self.ca, &self.server_name, self.verify).hash(state);
    }
}
