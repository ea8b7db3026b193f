//! The model stage: the read document converted, key by key, into [`Config`].
//!
//! Every error is recorded where it is found and the conversion carries on, so that one run reports
//! them all. A reference to an item that is declared but invalid is not reported again as dangling.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use http::Uri;
use toml::de::DeTable;

use super::model::*;
use super::reader::{Table, Value};
use super::Kinds;

pub(super) fn read_root(mut root: Table<'_>, path: &Path, kinds: &dyn Kinds) -> Option<Config> {
    let mut middlewares = BTreeMap::new();
    let mut middleware_names = Vec::new();
    if let Some(mut table) = root.get("middlewares").and_then(|v| v.table()) {
        for (name, value) in table.entries() {
            middleware_names.push(name);
            if let Some(m) = value.table().and_then(|t| read_middleware(t, kinds)) {
                middlewares.insert(name.to_owned(), m);
            }
        }
        table.finish();
    }
    let chains = Chains {
        instances: &middlewares,
        declared: &middleware_names,
        kinds,
        bare: Default::default(),
    };

    let server = root
        .get("server")
        .and_then(|v| v.table())
        .map(read_server)
        .unwrap_or_default();

    let has_acme = root.contains("acme");
    let mut listeners = Vec::new();
    let mut listener_names = Vec::new();
    if let Some(mut table) = root.get("listeners").and_then(|v| v.table()) {
        let mut binds: HashMap<SocketAddr, &str> = HashMap::new();
        for (name, value) in table.entries() {
            listener_names.push(name);
            let Some(listener) = value
                .table()
                .and_then(|t| read_listener(name, t, &chains, has_acme))
            else {
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
                .and_then(|t| read_app(t, &upstream_names, kinds, &chains))
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

    let admin = root.get("admin").and_then(|v| v.table()).and_then(|mut t| {
        let bind = t.required("bind").and_then(|v| {
            let s = v.str()?;
            match s.parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    v.error(format!(
                        "invalid address {s:?}: expected an IP and a port, like \"127.0.0.1:9901\""
                    ));
                    None
                }
            }
        });
        t.finish();
        Some(AdminConfig { bind: bind? })
    });

    let acme = root.get("acme").and_then(|v| {
        let plain_listeners = listeners.iter().filter(|l| l.tls.is_none()).count();
        read_acme(v.table()?, plain_listeners)
    });

    root.finish();
    let bare = chains.bare.into_inner();
    let mut middlewares = middlewares;
    for (name, m) in bare {
        if let Some(m) = m {
            middlewares.entry(name).or_insert(m);
        }
    }
    Some(Config {
        path: path.to_path_buf(),
        server,
        listeners,
        routes,
        apps,
        upstreams,
        middlewares,
        admin,
        acme,
        source_hash: 0,
    })
}

fn read_middleware(mut t: Table<'_>, kinds: &dyn Kinds) -> Option<MiddlewareConfig> {
    let kind_value = t.required("kind")?;
    let kind = kind_value.str()?;
    let Some(parse) = kinds.middleware(kind) else {
        kind_value.error(format!(
            "unknown middleware kind `{kind}`; known kinds: {}",
            kinds.middleware_kinds().join(", ")
        ));
        return None;
    };
    let at = t.location();
    let settings = parse(&mut t);
    t.finish();
    Some(MiddlewareConfig {
        kind: kind.to_owned(),
        settings: settings?,
        implicit: false,
        at,
    })
}

/// Resolves the names in a `middlewares` list: a declared instance, or a kind with its defaults
/// (read once per kind, and shared by every chain naming it).
struct Chains<'c> {
    instances: &'c BTreeMap<String, MiddlewareConfig>,
    declared: &'c [&'c str],
    kinds: &'c dyn Kinds,
    bare: std::cell::RefCell<HashMap<String, Option<MiddlewareConfig>>>,
}

impl Chains<'_> {
    /// The names a `middlewares` value lists; `None` if any name is wrong.
    fn resolve(&self, value: &Value<'_>) -> Option<Vec<String>> {
        let mut chain = Vec::new();
        let mut ok = true;
        for item in value.array()? {
            let Some(name) = item.str() else {
                ok = false;
                continue;
            };
            if self.lookup(name, &item) {
                chain.push(name.to_owned());
            } else {
                ok = false;
            }
        }
        ok.then_some(chain)
    }

    /// Whether `name` names a valid middleware.
    fn lookup(&self, name: &str, item: &Value<'_>) -> bool {
        if self.instances.contains_key(name) {
            return true;
        }
        if self.declared.contains(&name) {
            // Declared with errors, reported where it is declared.
            return false;
        }
        if let Some(read) = self.bare.borrow().get(name) {
            return read.is_some();
        }
        let Some(parse) = self.kinds.middleware(name) else {
            item.error(format!(
                "no middleware named `{name}`: declare [middlewares.{name}] or name a kind ({})",
                self.kinds.middleware_kinds().join(", ")
            ));
            return false;
        };
        let empty = DeTable::new();
        let mut defaults = Table::new(
            item.diagnostics(),
            item.path().to_owned(),
            item.span(),
            &empty,
        );
        let read = parse(&mut defaults).map(|settings| MiddlewareConfig {
            kind: name.to_owned(),
            settings,
            implicit: true,
            at: item.location(),
        });
        let ok = read.is_some();
        self.bare.borrow_mut().insert(name.to_owned(), read);
        ok
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
    if let Some(b) = t.bool("reuse_port") {
        server.reuse_port = b;
    }
    if let Some(b) = t.bool("lean_http1") {
        server.lean_http1 = b;
    }
    // Counted by the connection's one-second clock: less than a second would be no time at all.
    if let Some(d) = t.duration("body_timeout") {
        server.body_timeout = d.max(Duration::from_secs(1));
    }
    if let Some(d) = t.duration("tunnel_timeout") {
        server.tunnel_timeout = d.max(Duration::from_secs(1));
    }
    if let Some(n) = t.int_in("max_streams", 1..=i64::from(i32::MAX)) {
        server.max_streams = n as u32;
    }
    if let Some(n) = t.int_in("max_connections", 1..=100_000_000) {
        server.max_connections = n as usize;
    }
    // A head of at least 1 KiB, and at most what hyper's read buffer holds (about 400 KiB).
    if let Some(n) = size_in(&mut t, "max_header_size", 1024..=256 * 1024) {
        server.max_header_size = n as usize;
    }
    if let Some(n) = t.int_in("max_headers", 1..=10_000) {
        server.max_headers = n as usize;
    }
    // hyper refuses a target over 64 KiB itself (414).
    if let Some(n) = size_in(&mut t, "max_uri_length", 16..=65_534) {
        server.max_uri_length = n as usize;
    }
    if let Some(n) = t.int_in("max_requests_per_connection", 0..=i64::MAX) {
        server.max_requests_per_connection = (n > 0).then_some(n as u64);
    }
    if let Some(list) = t.get("trusted_proxies").and_then(|v| v.str_list()) {
        for (s, item) in list {
            match s.parse::<IpRange>() {
                Ok(range) => server.trusted_proxies.push(range),
                Err(msg) => item.error(msg),
            }
        }
    }
    t.finish();
    server
}

/// The size at `key` within `range` (bytes), if present and valid.
fn size_in(t: &mut Table<'_>, key: &str, range: std::ops::RangeInclusive<u64>) -> Option<u64> {
    let v = t.get(key)?;
    let n = v.size()?;
    if !range.contains(&n) {
        v.error(format!(
            "expected a size from {} to {} bytes",
            range.start(),
            range.end()
        ));
        return None;
    }
    Some(n)
}

fn read_listener(
    name: &str,
    mut t: Table<'_>,
    chains: &Chains<'_>,
    has_acme: bool,
) -> Option<ListenerConfig> {
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
    let tls = match t.get("tls") {
        Some(v) => Some(read_listener_tls(v.table()?, has_acme)?),
        None => None,
    };
    t.finish();
    Some(ListenerConfig {
        name: name.to_owned(),
        bind: bind?,
        middlewares: middlewares?,
        tls,
    })
}

/// `[listeners.NAME.tls]`. Only the shape: the files are read by the build stage. `has_acme`: whether
/// the file has an `[acme]` table, which `acme` names need.
fn read_listener_tls(mut t: Table<'_>, has_acme: bool) -> Option<ListenerTls> {
    let mut ok = true;
    let mut certificates = Vec::new();
    let at = t.location();
    let acme = match t.get("acme") {
        Some(v) => {
            let names = read_acme_names(&v);
            if !has_acme {
                v.error(
                    "`acme` names need an [acme] table (the account they are obtained with): \
                     add one, with at least `email = \"...\"` or nothing at all for the defaults",
                );
                ok = false;
            }
            names.unwrap_or_else(|| {
                ok = false;
                Vec::new()
            })
        }
        None => Vec::new(),
    };
    // Certificates are optional when ACME obtains them.
    let certificates_value = if t.contains("acme") {
        t.get("certificates")
    } else {
        t.required("certificates")
    };
    if let Some(v) = certificates_value {
        match v.array() {
            Some(items) if items.is_empty() && acme.is_empty() => {
                v.error("a TLS listener needs at least one certificate, or `acme` names");
                ok = false;
            }
            Some(items) => {
                for item in items {
                    let Some(mut pair) = item.table() else {
                        ok = false;
                        continue;
                    };
                    let cert = pair.required("cert");
                    let key = pair.required("key");
                    let (cert_at, key_at) = (
                        cert.as_ref().map(|v| v.location()),
                        key.as_ref().map(|v| v.location()),
                    );
                    match (
                        cert.and_then(|v| v.str()),
                        key.and_then(|v| v.str()),
                        cert_at,
                        key_at,
                    ) {
                        (Some(cert), Some(key), Some(cert_at), Some(key_at)) => {
                            certificates.push(CertificateFiles {
                                cert: cert.into(),
                                cert_at,
                                key: key.into(),
                                key_at,
                            })
                        }
                        _ => ok = false,
                    }
                    pair.finish();
                }
            }
            None => ok = false,
        }
    }
    let min_version = match t.get("min_version") {
        None => TlsVersion::default(),
        Some(v) => match v.str()? {
            "1.2" => TlsVersion::V1_2,
            "1.3" => TlsVersion::V1_3,
            other => {
                v.error(format!(
                    "unknown TLS version {other:?}: expected \"1.2\" or \"1.3\""
                ));
                return None;
            }
        },
    };
    t.finish();
    ok.then_some(ListenerTls {
        certificates,
        acme,
        min_version,
        at,
    })
}

/// `acme = ["example.com", ...]` of a listener's `tls`: DNS names a public ACME server can check
/// with `tls-alpn-01` or `http-01`, so neither wildcards (dns-01 only) nor IP addresses.
fn read_acme_names(v: &Value<'_>) -> Option<Vec<String>> {
    let items = v.array()?;
    if items.is_empty() {
        v.error("`acme` lists no name: name at least one, or remove the key");
        return None;
    }
    let mut names: Vec<String> = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        let Some(s) = item.str() else {
            ok = false;
            continue;
        };
        let name = s.trim_end_matches('.').to_ascii_lowercase();
        let problem = if name.starts_with("*.") {
            Some("a wildcard name is proven only by the dns-01 challenge, which parapet does not answer: name each host, or give a wildcard certificate in `certificates`".to_owned())
        } else if name.parse::<std::net::IpAddr>().is_ok() {
            Some("an IP address: `acme` takes DNS names".to_owned())
        } else if !name.contains('.') || rustls_pki_types::DnsName::try_from(name.as_str()).is_err()
        {
            Some(format!(
                "{s:?} is not a DNS name a public CA issues for (like \"example.com\")"
            ))
        } else if names.contains(&name) {
            Some(format!("{name:?} is listed twice"))
        } else {
            None
        };
        match problem {
            Some(message) => {
                item.error(message);
                ok = false;
            }
            None => names.push(name),
        }
    }
    ok.then_some(names)
}

/// `[acme]`. `plain_listeners`: how many listeners serve plain HTTP, where `http-01` is answered.
fn read_acme(mut t: Table<'_>, plain_listeners: usize) -> Option<AcmeConfig> {
    let mut ok = true;
    let email = t.get("email").and_then(|v| {
        let s = v.str()?;
        let valid = s.split_once('@').is_some_and(|(user, domain)| {
            !user.is_empty() && domain.contains('.') && !s.contains(char::is_whitespace)
        });
        if !valid {
            v.error(format!(
                "invalid email {s:?}: expected an address like \"ops@example.com\""
            ));
            ok = false;
            return None;
        }
        Some(s.to_owned())
    });
    let directory = match t.get("directory") {
        None => AcmeConfig::LETS_ENCRYPT.to_owned(),
        Some(v) => match v.str().map(|s| (s, s.parse::<Uri>())) {
            Some((s, Ok(uri)))
                if uri.scheme() == Some(&Scheme::HTTPS) && uri.authority().is_some() =>
            {
                s.to_owned()
            }
            Some((s, _)) => {
                v.error(format!(
                    "invalid directory {s:?}: expected an https:// URL, like \"{}\" (Let's Encrypt's staging directory)",
                    AcmeConfig::LETS_ENCRYPT_STAGING
                ));
                ok = false;
                String::new()
            }
            None => {
                ok = false;
                String::new()
            }
        },
    };
    let storage = match t.get("storage") {
        None => Some(Located {
            value: "acme".into(),
            at: t.location(),
        }),
        Some(v) => match v.str() {
            Some("") => {
                v.error("`storage` is empty: name a directory");
                None
            }
            Some(s) => Some(Located {
                value: s.into(),
                at: v.location(),
            }),
            None => None,
        },
    };
    let challenge = match t.get("challenge") {
        None => Some(AcmeChallenge::default()),
        Some(v) => match v.str() {
            Some("tls-alpn-01") => Some(AcmeChallenge::TlsAlpn01),
            Some("http-01") => {
                if plain_listeners == 0 {
                    v.error("http-01 is answered on plain-HTTP listeners, and there is none: add one (on port 80 in production), or use \"tls-alpn-01\"");
                    ok = false;
                }
                Some(AcmeChallenge::Http01)
            }
            Some(other) => {
                v.error(format!(
                    "unknown challenge {other:?}: expected \"tls-alpn-01\" or \"http-01\""
                ));
                None
            }
            None => None,
        },
    };
    let ca = t.get("ca").and_then(|v| {
        Some(Located {
            value: v.str()?.into(),
            at: v.location(),
        })
    });
    let retry = t
        .duration("retry")
        .unwrap_or(Duration::from_secs(60))
        .max(Duration::from_secs(1));
    t.finish();
    let (storage, challenge) = (storage?, challenge?);
    ok.then_some(AcmeConfig {
        email,
        directory,
        storage,
        challenge,
        ca,
        retry,
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
                    match read_upstream_server(&item) {
                        Some(server) => servers.push(server),
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
    let hash_key = t.get("hash_key").and_then(|v| {
        let s = v.str()?;
        let key = match s.split_once(':') {
            None if s == "client_ip" => Some(HashKey::ClientIp),
            Some(("header", h)) => http::HeaderName::from_bytes(h.as_bytes())
                .ok()
                .map(HashKey::Header),
            Some(("cookie", c)) if !c.is_empty() && !c.contains([';', '=', ' ']) => {
                Some(HashKey::Cookie(c.to_owned()))
            }
            _ => None,
        };
        if key.is_none() {
            v.error(format!(
                "invalid hash_key {s:?}: expected \"client_ip\", \"header:NAME\" or \"cookie:NAME\""
            ));
        }
        Some((key, v))
    });
    let balance = match t.get("balance") {
        None => Some(Balance::RoundRobin),
        Some(v) => match v.str() {
            Some("round_robin") => Some(Balance::RoundRobin),
            Some("least_requests") => Some(Balance::LeastRequests),
            Some("random") => Some(Balance::Random),
            Some("hash") => match &hash_key {
                Some((Some(key), _)) => Some(Balance::Hash(key.clone())),
                Some((None, _)) => None,
                None => {
                    v.error("balance = \"hash\" needs a `hash_key`");
                    None
                }
            },
            Some(other) => {
                v.error(format!(
                    "unknown balance {other:?}: expected \"round_robin\", \"least_requests\", \"random\" or \"hash\""
                ));
                None
            }
            None => None,
        },
    };
    if let (Some(Balance::RoundRobin | Balance::LeastRequests | Balance::Random), Some((_, v))) =
        (&balance, &hash_key)
    {
        v.error("`hash_key` is only for balance = \"hash\"");
    }
    let max_connections = t
        .int_in("max_connections", 1..=1_000_000)
        .map(|n| n as usize);
    let queue_timeout = t
        .duration("queue_timeout")
        .unwrap_or(Duration::from_secs(1));
    let retries = t.int_in("retries", 0..=10).unwrap_or(2) as u32;
    let retry_on = match t.get("retry_on") {
        None => RetryOn {
            reset: true,
            status_502: true,
            status_503: true,
            ..RetryOn::default()
        },
        Some(v) => {
            let mut on = RetryOn::default();
            for (s, item) in v.str_list().unwrap_or_default() {
                match s {
                    "timeout" => on.timeout = true,
                    "reset" => on.reset = true,
                    "502" => on.status_502 = true,
                    "503" => on.status_503 = true,
                    "504" => on.status_504 = true,
                    _ => item.error(format!(
                        "unknown retry_on {s:?}: expected \"timeout\", \"reset\", \"502\", \"503\" or \"504\""
                    )),
                }
            }
            on
        }
    };
    let read_timeout = t
        .duration("read_timeout")
        .unwrap_or(Duration::from_secs(60));
    let health = t.get("health").and_then(|v| v.table()).map(read_health);
    let eject = match t.get("eject").and_then(|v| v.table()) {
        None => Some(Eject {
            failures: 5,
            duration: Duration::from_secs(30),
        }),
        Some(mut e) => {
            let failures = e.int_in("failures", 0..=1_000_000).unwrap_or(5) as u32;
            let duration = e.duration("duration").unwrap_or(Duration::from_secs(30));
            e.finish();
            (failures > 0).then_some(Eject { failures, duration })
        }
    };
    let protocol = read_upstream_protocol(&mut t);
    let tls = read_upstream_tls(&mut t, &servers);
    t.finish();
    (ok && !servers.is_empty()).then(|| UpstreamConfig {
        name: name.to_owned(),
        servers,
        connect_timeout,
        timeout,
        max_idle,
        balance: balance.unwrap_or_default(),
        max_connections,
        queue_timeout,
        retries,
        retry_on,
        read_timeout,
        health,
        eject,
        protocol,
        tls,
    })
}

/// `health = { path, interval, timeout, rise, fall, expect }`.
fn read_health(mut h: Table<'_>) -> HealthCheck {
    let path = match h.get("path") {
        Some(v) => match v.str() {
            Some(p) if p.starts_with('/') && p.parse::<http::uri::PathAndQuery>().is_ok() => {
                p.to_owned()
            }
            Some(p) => {
                v.error(format!(
                    "invalid health path {p:?}: expected one like \"/healthz\""
                ));
                "/".to_owned()
            }
            None => "/".to_owned(),
        },
        None => "/".to_owned(),
    };
    let interval = h.duration("interval").unwrap_or(Duration::from_secs(5));
    let timeout = h.duration("timeout").unwrap_or(Duration::from_secs(2));
    let rise = h.int_in("rise", 1..=1000).unwrap_or(2) as u32;
    let fall = h.int_in("fall", 1..=1000).unwrap_or(3) as u32;
    let expect = match h.get("expect") {
        None => Expect::Class(2),
        Some(v) if v.is_int() => v
            .int_in(100..=599)
            .map_or(Expect::Class(2), |n| Expect::Status(n as u16)),
        Some(v) => {
            let s = v.str().unwrap_or("2xx");
            let b = s.as_bytes();
            match s.parse::<u16>() {
                Ok(n) if (100..=599).contains(&n) => Expect::Status(n),
                _ if b.len() == 3 && (b'1'..=b'5').contains(&b[0]) && &b[1..] == b"xx" => {
                    Expect::Class(u16::from(b[0] - b'0'))
                }
                _ => {
                    v.error(format!(
                        "invalid expect {s:?}: expected a status class like \"2xx\" or a status like \"204\""
                    ));
                    Expect::Class(2)
                }
            }
        }
    };
    h.finish();
    HealthCheck {
        path,
        interval: interval.max(Duration::from_millis(10)),
        timeout,
        rise,
        fall,
        expect,
    }
}

/// A `servers` entry: a URL, or a `{ url, weight }` table.
fn read_upstream_server(item: &Value<'_>) -> Option<UpstreamServer> {
    let (url, weight, at) = if item.is_table() {
        let mut t = item.table()?;
        let url = t.required("url").and_then(|v| v.str().map(|s| (s, v)));
        let weight = t.int_in("weight", 1..=1000).unwrap_or(1) as u32;
        t.finish();
        let (url, at) = url?;
        (url, weight, at)
    } else {
        (item.str()?, 1, item.clone())
    };
    match parse_upstream_server(url) {
        Ok(mut server) => {
            server.weight = weight;
            Some(server)
        }
        Err(msg) => {
            at.error(msg);
            None
        }
    }
}

/// `protocol = "http1" | "h2" | "auto"` of an upstream.
fn read_upstream_protocol(t: &mut Table<'_>) -> UpstreamProtocol {
    let Some(v) = t.get("protocol") else {
        return UpstreamProtocol::Auto;
    };
    match v.str() {
        Some("http1") => UpstreamProtocol::Http1,
        Some("h2") => UpstreamProtocol::H2,
        Some("auto") => UpstreamProtocol::Auto,
        Some(other) => {
            v.error(format!(
                "unknown protocol {other:?}: expected \"http1\", \"h2\" or \"auto\""
            ));
            UpstreamProtocol::Auto
        }
        None => UpstreamProtocol::Auto,
    }
}

/// `tls = { ca, server_name, verify }` of an upstream; the defaults when absent. The CA file is read
/// at build time, where its errors point at `ca`.
fn read_upstream_tls(t: &mut Table<'_>, servers: &[UpstreamServer]) -> UpstreamTls {
    let mut tls = UpstreamTls {
        at: t.location(),
        ..UpstreamTls::default()
    };
    let Some(v) = t.get("tls") else {
        return tls;
    };
    let Some(mut table) = v.table() else {
        return tls;
    };
    if !servers.is_empty() && !servers.iter().any(|s| s.scheme == Scheme::HTTPS) {
        v.error("`tls` applies to https:// servers, and this upstream has none");
    }
    tls.at = table.location();
    if let Some(ca) = table.get("ca") {
        if let Some(path) = ca.str() {
            tls.ca = Some(path.into());
            tls.at = ca.location();
        }
    }
    if let Some(name) = table.get("server_name") {
        if let Some(s) = name.str() {
            match rustls_pki_types::ServerName::try_from(s) {
                Ok(_) => tls.server_name = Some(s.to_owned()),
                Err(_) => name.error(format!(
                    "invalid server_name {s:?}: expected a DNS name or an IP address"
                )),
            }
        }
    }
    if let Some(verify) = table.bool("verify") {
        tls.verify = verify;
    }
    table.finish();
    tls
}

/// Parses `http://host:port[/base]` or `https://host:port[/base]`.
fn parse_upstream_server(s: &str) -> Result<UpstreamServer, String> {
    let uri: Uri = s
        .parse()
        .map_err(|_| format!("invalid URL {s:?}: expected one like \"http://127.0.0.1:9000\""))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        _ => {
            return Err(format!(
                "invalid URL {s:?}: expected one like \"http://127.0.0.1:9000\""
            ))
        }
    };
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
        scheme,
        authority,
        base_path,
        weight: 1,
    })
}

fn read_app(
    mut t: Table<'_>,
    upstreams: &[&str],
    kinds: &dyn Kinds,
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
        (None, Some(h)) => read_handler(h, kinds),
    };
    t.finish();
    Some(AppConfig {
        middlewares: middlewares?,
        endpoint: endpoint?,
    })
}

fn read_handler(value: Value<'_>, kinds: &dyn Kinds) -> Option<EndpointConfig> {
    let mut t = value.table()?;
    let kind_value = t.required("kind")?;
    let kind = kind_value.str()?;
    let Some(parse) = kinds.handler(kind) else {
        kind_value.error(format!(
            "unknown handler kind `{kind}`; known kinds: {}",
            kinds.handler_kinds().join(", ")
        ));
        // Keys of an unknown kind cannot be checked; do not report them as unknown too.
        return None;
    };
    let settings = parse(&mut t);
    t.finish();
    Some(EndpointConfig::Handler(HandlerConfig {
        kind: kind.to_owned(),
        settings: settings?,
        at: value.location(),
    }))
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
