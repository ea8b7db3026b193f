//! The config: the TOML file format, read into the validated model the server runs on.
//!
//! The file is parsed into toml's spanned document and converted, key by key, into [`Config`]. That
//! conversion is where every error is found: unknown keys, unknown kinds, bad values and dangling names
//! are all collected and reported together, each with its file, line, column and key
//! ([`ConfigErrors`]). A `Config` that exists is valid: the server never re-checks it.

mod reader;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::Uri;
use toml::de::DeTable;

use reader::Source;
pub use reader::{parse_duration, ConfigError, ConfigErrors, Diagnostics, Table, Value};

use crate::chain::{ChainEntry, Middleware};
use crate::registry::Registry;
use crate::AppService;

/// The default path `parapet run` and `parapet check` read.
pub const DEFAULT_PATH: &str = "config/parapet.toml";

/// A loaded, validated config.
#[derive(Clone, Debug)]
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
    /// `[middlewares.NAME]`: the declared middleware instances, built.
    pub middlewares: BTreeMap<String, MiddlewareConfig>,
    /// A hash of the file's text, to tell an unchanged file from a changed one on reload.
    pub source_hash: u64,
}

/// `[middlewares.NAME]`: a named, configured middleware instance.
#[derive(Clone, Debug)]
pub struct MiddlewareConfig {
    /// Its kind (`kind`).
    pub kind: String,
    /// The built middleware.
    pub middleware: Middleware,
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            shutdown_timeout: Duration::from_secs(30),
            workers: None,
            idle_release: Duration::from_secs(1),
            header_timeout: Duration::from_secs(30),
        }
    }
}

/// `[listeners.NAME]`: a socket parapet accepts connections on.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// The listener's name, which routes refer to.
    pub name: String,
    /// The address to bind (`bind`).
    pub bind: SocketAddr,
    /// Middlewares around the listener's router (`middlewares`), outermost first: they see every
    /// request of the listener, including those no route matches.
    pub middlewares: Vec<ChainEntry>,
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
#[derive(Clone, Debug)]
pub struct AppConfig {
    /// The middlewares, outermost first (`middlewares`).
    pub middlewares: Vec<ChainEntry>,
    /// Where requests end up.
    pub endpoint: EndpointConfig,
}

/// An app's endpoint: an upstream or an in-process handler.
#[derive(Clone)]
pub enum EndpointConfig {
    /// The name of an `[upstreams.NAME]` (`upstream`).
    Upstream(String),
    /// An in-process handler (`handler = { kind = ... }`), already built by its kind's factory.
    Handler {
        /// The handler kind, such as `respond` or `static`.
        kind: String,
        /// The built handler.
        service: AppService,
    },
}

impl std::fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointConfig::Upstream(name) => f.debug_tuple("Upstream").field(name).finish(),
            EndpointConfig::Handler { kind, .. } => {
                f.debug_struct("Handler").field("kind", kind).finish()
            }
        }
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

impl std::fmt::Display for UpstreamServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

/// A config that could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{}: cannot read config: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file was read and has errors.
    #[error("{0}")]
    Invalid(#[from] ConfigErrors),
}

impl Config {
    /// Reads and validates the config at `path`, with the kinds `registry` knows.
    pub fn load(path: impl AsRef<Path>, registry: &Registry) -> Result<Config, LoadError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::parse(path, &text, registry)?)
    }

    /// Validates `text` as if read from `path` (which only names the file in errors).
    pub fn parse(
        path: impl AsRef<Path>,
        text: &str,
        registry: &Registry,
    ) -> Result<Config, ConfigErrors> {
        let path = path.as_ref();
        let diag = Diagnostics::new(Source::new(path, text));
        let (doc, syntax) = DeTable::parse_recoverable(text);
        if !syntax.is_empty() {
            for e in syntax {
                diag.error(e.span().unwrap_or(0..0), "(syntax)", e.message().trim());
            }
            return Err(diag.into_errors());
        }
        let span = doc.span();
        let root = Table::new(&diag, String::new(), span, doc.get_ref());
        let config = read_root(root, path, registry).map(|mut c| {
            c.source_hash = hash_text(text);
            c
        });
        match config {
            Some(config) if !diag.has_errors() => Ok(config),
            _ => Err(diag.into_errors()),
        }
    }
}

fn read_root(mut root: Table<'_>, path: &Path, registry: &Registry) -> Option<Config> {
    let mut middlewares = BTreeMap::new();
    let mut middleware_names = Vec::new();
    if let Some(mut table) = root.get("middlewares").and_then(|v| v.table()) {
        for (name, value) in table.entries() {
            middleware_names.push(name);
            if let Some(m) = value.table().and_then(|t| read_middleware(t, registry)) {
                middlewares.insert(name.to_owned(), m);
            }
        }
        table.finish();
    }
    let chains = Chains {
        instances: &middlewares,
        declared: &middleware_names,
        registry,
        bare: Default::default(),
    };

    let server = root
        .get("server")
        .and_then(|v| v.table())
        .map(read_server)
        .unwrap_or_default();

    let mut listeners = Vec::new();
    let mut listener_names = Vec::new();
    if let Some(mut table) = root.get("listeners").and_then(|v| v.table()) {
        let mut binds: HashMap<SocketAddr, &str> = HashMap::new();
        for (name, value) in table.entries() {
            listener_names.push(name);
            let Some(listener) = value.table().and_then(|t| read_listener(name, t, &chains)) else {
                continue;
            };
            if listener.bind.port() != 0 {
                if let Some(other) = binds.insert(listener.bind, name) {
                    value.error(format!(
                        "listener `{name}` binds {} like listener `{other}`",
                        listener.bind
                    ));
                }
            }
            listeners.push(listener);
        }
        table.finish();
    }
    if listeners.is_empty() && !root.contains("listeners") {
        root.error("no listeners: define at least one [listeners.NAME] with a `bind` address");
    }

    let mut upstreams = BTreeMap::new();
    // Names declared, valid or not: a reference to a declared but invalid item is not dangling.
    let mut upstream_names = Vec::new();
    if let Some(mut table) = root.get("upstreams").and_then(|v| v.table()) {
        for (name, value) in table.entries() {
            upstream_names.push(name);
            if let Some(upstream) = value.table().and_then(|t| read_upstream(name, t)) {
                upstreams.insert(name.to_owned(), Arc::new(upstream));
            }
        }
        table.finish();
    }

    let mut apps = BTreeMap::new();
    let mut app_names = Vec::new();
    if let Some(mut table) = root.get("apps").and_then(|v| v.table()) {
        for (name, value) in table.entries() {
            app_names.push(name);
            if let Some(app) = value
                .table()
                .and_then(|t| read_app(t, &upstream_names, registry, &chains))
            {
                apps.insert(name.to_owned(), app);
            }
        }
        table.finish();
    }

    let mut routes = Vec::new();
    if let Some(value) = root.get("routes") {
        let mut seen: HashMap<(Option<Vec<String>>, HostMatch, String), usize> = HashMap::new();
        for (i, item) in value.array().unwrap_or_default().into_iter().enumerate() {
            let Some(route) = item
                .table()
                .and_then(|t| read_route(t, &listener_names, &app_names))
            else {
                continue;
            };
            let key = (
                route.listeners.clone(),
                route.host.clone(),
                route.path.clone(),
            );
            if let Some(first) = seen.insert(key, i) {
                item.error(format!(
                    "duplicate route: routes[{first}] has the same listener, host and path"
                ));
            }
            routes.push(route);
        }
    }

    root.finish();
    drop(chains);
    Some(Config {
        path: path.to_path_buf(),
        server,
        listeners,
        routes,
        apps,
        upstreams,
        middlewares,
        source_hash: 0,
    })
}

/// The hash [`Config::source_hash`] holds for a file's text.
pub fn hash_text(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

fn read_middleware(mut t: Table<'_>, registry: &Registry) -> Option<MiddlewareConfig> {
    let kind_value = t.required("kind")?;
    let kind = kind_value.str()?;
    let Some(factory) = registry.middleware_factory(kind) else {
        kind_value.error(format!(
            "unknown middleware kind `{kind}`; known kinds: {}",
            registry.middleware_kinds().collect::<Vec<_>>().join(", ")
        ));
        return None;
    };
    let middleware = factory(&mut t);
    t.finish();
    Some(MiddlewareConfig {
        kind: kind.to_owned(),
        middleware: middleware?,
    })
}

/// Resolves the names in a `middlewares` list: a declared instance, or a kind with its defaults
/// (built once per kind and shared).
struct Chains<'c> {
    instances: &'c BTreeMap<String, MiddlewareConfig>,
    declared: &'c [&'c str],
    registry: &'c Registry,
    bare: std::cell::RefCell<HashMap<String, Option<Middleware>>>,
}

impl Chains<'_> {
    /// The chain a `middlewares` value names; `None` if any name is wrong.
    fn resolve(&self, value: &Value<'_>) -> Option<Vec<ChainEntry>> {
        let mut chain = Vec::new();
        let mut ok = true;
        for item in value.array()? {
            let Some(name) = item.str() else {
                ok = false;
                continue;
            };
            match self.lookup(name, &item) {
                Some(middleware) => chain.push(ChainEntry {
                    name: name.to_owned(),
                    middleware,
                }),
                None => ok = false,
            }
        }
        ok.then_some(chain)
    }

    fn lookup(&self, name: &str, item: &Value<'_>) -> Option<Middleware> {
        if let Some(instance) = self.instances.get(name) {
            return Some(instance.middleware.clone());
        }
        if self.declared.contains(&name) {
            // Declared with errors, reported where it is declared.
            return None;
        }
        if let Some(built) = self.bare.borrow().get(name) {
            return built.clone();
        }
        let Some(factory) = self.registry.middleware_factory(name) else {
            item.error(format!(
                "no middleware named `{name}`: declare [middlewares.{name}] or name a kind ({})",
                self.registry
                    .middleware_kinds()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            return None;
        };
        let empty = DeTable::new();
        let mut defaults = Table::new(
            item.diagnostics(),
            item.path().to_owned(),
            item.span(),
            &empty,
        );
        let built = factory(&mut defaults);
        self.bare
            .borrow_mut()
            .insert(name.to_owned(), built.clone());
        built
    }
}

fn read_server(mut t: Table<'_>) -> ServerConfig {
    let mut server = ServerConfig::default();
    if let Some(d) = t.duration("shutdown_timeout") {
        server.shutdown_timeout = d;
    }
    server.workers = t.int_in("workers", 1..=1024).map(|n| n as usize);
    if let Some(d) = t.duration("idle_release") {
        server.idle_release = d;
    }
    if let Some(d) = t.duration("header_timeout") {
        server.header_timeout = d.max(Duration::from_secs(1));
    }
    t.finish();
    server
}

fn read_listener(name: &str, mut t: Table<'_>, chains: &Chains<'_>) -> Option<ListenerConfig> {
    let bind = t.required("bind").and_then(|v| {
        let s = v.str()?;
        match s.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                v.error(format!(
                    "invalid address {s:?}: expected an IP and a port, like \"127.0.0.1:8080\" or \"[::]:443\""
                ));
                None
            }
        }
    });
    let middlewares = match t.get("middlewares") {
        Some(v) => chains.resolve(&v),
        None => Some(Vec::new()),
    };
    t.finish();
    Some(ListenerConfig {
        name: name.to_owned(),
        bind: bind?,
        middlewares: middlewares?,
    })
}

fn read_upstream(name: &str, mut t: Table<'_>) -> Option<UpstreamConfig> {
    let mut servers = Vec::new();
    let mut ok = true;
    if let Some(v) = t.required("servers") {
        match v.array() {
            Some(items) if items.is_empty() => {
                v.error("an upstream needs at least one server");
                ok = false;
            }
            Some(items) => {
                for item in items {
                    match item.str().map(parse_upstream_server) {
                        Some(Ok(server)) => servers.push(server),
                        Some(Err(msg)) => {
                            item.error(msg);
                            ok = false;
                        }
                        None => ok = false,
                    }
                }
            }
            None => ok = false,
        }
    }
    let connect_timeout = t
        .duration("connect_timeout")
        .unwrap_or(Duration::from_secs(5));
    let timeout = t.duration("timeout").unwrap_or(Duration::from_secs(30));
    let max_idle = t.int_in("max_idle", 0..=65_536).unwrap_or(64) as usize;
    t.finish();
    (ok && !servers.is_empty()).then(|| UpstreamConfig {
        name: name.to_owned(),
        servers,
        connect_timeout,
        timeout,
        max_idle,
    })
}

/// Parses `http://host:port[/base]`.
fn parse_upstream_server(s: &str) -> Result<UpstreamServer, String> {
    let uri: Uri = s
        .parse()
        .map_err(|_| format!("invalid URL {s:?}: expected one like \"http://127.0.0.1:9000\""))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{s:?}: https upstreams are not supported yet; use http://"
            ))
        }
        _ => {
            return Err(format!(
                "invalid URL {s:?}: expected one like \"http://127.0.0.1:9000\""
            ))
        }
    }
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .cloned()
        .ok_or_else(|| format!("invalid URL {s:?}: no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "{s:?}: credentials in upstream URLs are not supported"
        ));
    }
    if uri.query().is_some() {
        return Err(format!("{s:?}: an upstream URL cannot have a query"));
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    Ok(UpstreamServer {
        scheme: Scheme::HTTP,
        authority,
        base_path,
    })
}

fn read_app(
    mut t: Table<'_>,
    upstreams: &[&str],
    registry: &Registry,
    chains: &Chains<'_>,
) -> Option<AppConfig> {
    let middlewares = match t.get("middlewares") {
        Some(v) => chains.resolve(&v),
        None => Some(Vec::new()),
    };
    let upstream = t.get("upstream");
    let handler = t.get("handler");
    let endpoint = match (upstream, handler) {
        (Some(_), Some(h)) => {
            h.error("an app has exactly one of `upstream` and `handler`, not both");
            None
        }
        (None, None) => {
            t.error("an app needs an endpoint: set `upstream` or `handler`");
            None
        }
        (Some(u), None) => {
            let name = u.str()?;
            if upstreams.contains(&name) {
                Some(EndpointConfig::Upstream(name.to_owned()))
            } else {
                u.error(format!("no upstream named `{name}`"));
                None
            }
        }
        (None, Some(h)) => read_handler(h, registry),
    };
    t.finish();
    Some(AppConfig {
        middlewares: middlewares?,
        endpoint: endpoint?,
    })
}

fn read_handler(value: Value<'_>, registry: &Registry) -> Option<EndpointConfig> {
    let mut t = value.table()?;
    let kind_value = t.required("kind")?;
    let kind = kind_value.str()?;
    let Some(factory) = registry.handler_factory(kind) else {
        kind_value.error(format!(
            "unknown handler kind `{kind}`; known kinds: {}",
            registry.handler_kinds().collect::<Vec<_>>().join(", ")
        ));
        // Keys of an unknown kind cannot be checked; do not report them as unknown too.
        return None;
    };
    let service = factory(&mut t);
    t.finish();
    Some(EndpointConfig::Handler {
        kind: kind.to_owned(),
        service: service?,
    })
}

fn read_route(mut t: Table<'_>, listener_names: &[&str], apps: &[&str]) -> Option<RouteConfig> {
    let mut ok = true;
    let listeners = t.get("listener").and_then(|v| {
        let names = v.str_list()?;
        let mut out = Vec::with_capacity(names.len());
        for (name, item) in names {
            if !listener_names.contains(&name) {
                item.error(format!("no listener named `{name}`"));
                ok = false;
            }
            out.push(name.to_owned());
        }
        Some(out)
    });
    let host = match t.get("host") {
        None => Some(HostMatch::Any),
        Some(v) => v.str().and_then(|s| match parse_host(s) {
            Ok(h) => Some(h),
            Err(msg) => {
                v.error(msg);
                None
            }
        }),
    };
    let path = match t.get("path") {
        None => Some("/".to_owned()),
        Some(v) => v.str().and_then(|s| match check_route_path(s) {
            Ok(()) => Some(s.to_owned()),
            Err(msg) => {
                v.error(msg);
                None
            }
        }),
    };
    let strip_prefix = t.bool("strip_prefix").unwrap_or(false);
    let app = t.required("app").and_then(|v| {
        let name = v.str()?;
        // An app declared with errors has its own messages; only an undeclared name dangles.
        if !apps.contains(&name) {
            v.error(format!("no app named `{name}`"));
            return None;
        }
        Some(name.to_owned())
    });
    t.finish();
    if !ok {
        return None;
    }
    Some(RouteConfig {
        listeners,
        host: host?,
        path: path?,
        strip_prefix,
        app: app?,
    })
}

/// Parses a route's `host`: exact, `*.suffix`, or `*` for any.
fn parse_host(s: &str) -> Result<HostMatch, String> {
    if s == "*" {
        return Ok(HostMatch::Any);
    }
    let lower = s.to_ascii_lowercase();
    let (wildcard, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let is_ipv6 = name.starts_with('[') && name.ends_with(']');
    let valid = !name.is_empty()
        && (is_ipv6
            || name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }));
    if !valid || (wildcard && is_ipv6) {
        if name.contains(':') && !is_ipv6 {
            return Err(format!(
                "invalid host {s:?}: a route's host has no port (ports are ignored when matching)"
            ));
        }
        return Err(format!(
            "invalid host {s:?}: expected a name like \"example.com\", a wildcard like \"*.example.com\", or \"*\""
        ));
    }
    Ok(if wildcard {
        HostMatch::Wildcard(format!(".{name}"))
    } else {
        HostMatch::Exact(name.to_owned())
    })
}

fn check_route_path(s: &str) -> Result<(), String> {
    if !s.starts_with('/') {
        return Err(format!("invalid path {s:?}: a route path starts with '/'"));
    }
    if s.contains(['?', '#']) {
        return Err(format!(
            "invalid path {s:?}: a route path has no query or fragment"
        ));
    }
    if s.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(format!(
            "invalid path {s:?}: a route path has no '.' or '..' segments"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
