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
    /// A hash of the file's text, to tell an unchanged file from a changed one on reload.
    pub source_hash: u64,
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            shutdown_timeout: Duration::from_secs(30),
            workers: None,
            idle_release: Duration::from_secs(1),
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            max_streams: 100,
            max_connections: 20_000,
            max_header_size: 32 * 1024,
            max_headers: 100,
            max_uri_length: 8 * 1024,
            max_requests_per_connection: Some(10_000),
            trusted_proxies: Vec::new(),
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
    /// `http` (TLS to upstreams comes later).
    pub scheme: Scheme,
    /// `host:port`.
    pub authority: Authority,
    /// A base path without a trailing slash, empty for none.
    pub base_path: String,
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
}
