//! The built-in middleware kinds: `access_log`, `body_limit`, `compress`, `errors` and `headers`
//! (the catalogue's, `request_id` and the others, are in `catalogue.rs`).
//!
//! Each reads its table into typed settings (pure), checks what can be checked without side effects
//! (a directory exists, a page is readable), and builds its layer (the access log's file opened and
//! its writer started, the error pages read).

use std::path::{Path, PathBuf};

use http::{HeaderName, HeaderValue};
use parapet_middlewares::access_log::{AccessLogConfig, AccessLogLayer, Format, Target};
use parapet_middlewares::body_limit::BodyLimitLayer;
use parapet_middlewares::compress::{CompressConfig, CompressLayer, Encoding};
use parapet_middlewares::errors::{CatchPanic, ErrorsConfig, ErrorsLayer, Page, StatusMatch};
use parapet_middlewares::headers::{HeaderOps, HeadersLayer, Replace};
use parapet_middlewares::rewrite::Regex;

use crate::chain::Middleware;
use crate::config::{ConfigError, Located, Location, Table, Value};
use crate::registry::Registry;

use super::no_check;

/// Registers every built-in middleware kind.
pub(super) fn register(registry: &mut Registry) {
    registry
        .register_middleware_kind("access_log", access_log, check_access_log, build_access_log)
        .register_middleware_kind("body_limit", body_limit, no_check, |b: &BodyLimit, _| {
            Ok(Middleware::from_layer(BodyLimitLayer::new(b.max_size)).reads_no_tags())
        })
        .register_middleware_kind("compress", compress, no_check, |c: &CompressConfig, _| {
            Ok(
                Middleware::from_interceptor(CompressLayer::new(c.clone()).interceptor().clone())
                    .reads_no_tags(),
            )
        })
        .register_middleware_kind("errors", errors, check_errors, build_errors)
        .register_middleware_kind("headers", headers, no_check, |h: &Headers, _| {
            Ok(Middleware::from_interceptor(
                HeadersLayer::new(h.request.clone(), h.response.clone())
                    .interceptor()
                    .clone(),
            )
            .reads_no_tags())
        });
    super::catalogue::register(registry);
}

/// The settings of an `access_log`: the format, and where lines go (located, for errors opening it).
#[derive(Clone, Debug, PartialEq)]
pub struct AccessLog {
    /// `format`.
    pub format: Format,
    /// `path`: stdout or a file.
    pub target: Located<Target>,
}

fn check_access_log(log: &AccessLog, _: &Location) -> Vec<ConfigError> {
    let Target::File(path) = &log.target.value else {
        return Vec::new();
    };
    // The file may not exist yet (it is created when the config is built): its directory must.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Vec::new(),
        Ok(_) => vec![log.target.at.error(format!(
            "cannot open access log {path:?}: {dir:?} is not a directory"
        ))],
        Err(e) => vec![log
            .target
            .at
            .error(format!("cannot open access log {path:?}: {dir:?}: {e}"))],
    }
}

fn build_access_log(log: &AccessLog, _: &Location) -> Result<Middleware, Vec<ConfigError>> {
    let config = AccessLogConfig {
        format: log.format,
        target: log.target.value.clone(),
    };
    match AccessLogLayer::new(config) {
        Ok(layer) => Ok(Middleware::from_interceptor(layer.interceptor().clone())),
        Err(e) => Err(vec![log.target.at.error(format!(
            "cannot open access log {:?}: {e}",
            log.target.value
        ))]),
    }
}

fn access_log(t: &mut Table<'_>) -> Option<AccessLog> {
    let format = match t.get("format") {
        None => Some(Format::Combined),
        Some(v) => v.str().and_then(|s| {
            let f = Format::parse(s);
            if f.is_none() {
                v.error(format!(
                    "unknown format {s:?}: expected \"common\", \"combined\" or \"json\""
                ));
            }
            f
        }),
    };
    let path = t.get("path");
    let at = path.as_ref().map_or_else(|| t.location(), Value::location);
    let target = match path.as_ref().map(|v| (v, v.str())) {
        None => Some(Target::Stdout),
        Some((_, None)) => None,
        Some((_, Some("-"))) => Some(Target::Stdout),
        Some((_, Some(p))) => Some(Target::File(PathBuf::from(p))),
    };
    Some(AccessLog {
        format: format?,
        target: Located { value: target?, at },
    })
}

/// The settings of a `body_limit` layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLimit {
    /// `max_size`, in bytes (default 1 MiB, like nginx's `client_max_body_size`).
    pub max_size: u64,
}

fn body_limit(t: &mut Table<'_>) -> Option<BodyLimit> {
    let max_size = match t.get("max_size") {
        None => 1024 * 1024,
        Some(v) => v.size()?,
    };
    Some(BodyLimit { max_size })
}

fn compress(t: &mut Table<'_>) -> Option<CompressConfig> {
    let mut config = CompressConfig::default();
    let mut ok = true;
    if let Some(v) = t.get("encodings") {
        config.encodings.clear();
        for item in v.array().unwrap_or_default() {
            let Some(s) = item.str() else {
                ok = false;
                continue;
            };
            match Encoding::parse(s) {
                Some(e) if !config.encodings.contains(&e) => config.encodings.push(e),
                Some(_) => {}
                None => {
                    item.error(format!(
                        "unknown encoding {s:?}: expected \"gzip\", \"br\" or \"zstd\""
                    ));
                    ok = false;
                }
            }
        }
    }
    if let Some(v) = t.get("level") {
        match v.int_in(1..=9) {
            Some(n) => config.level = n as u32,
            None => ok = false,
        }
    }
    if let Some(v) = t.get("min_size") {
        match v.int_in(0..=i64::MAX) {
            Some(n) => config.min_size = n as u64,
            None => ok = false,
        }
    }
    if let Some(v) = t.get("types") {
        config.types.clear();
        for item in v.array().unwrap_or_default() {
            let Some(s) = item.str() else {
                ok = false;
                continue;
            };
            let s = s.to_ascii_lowercase();
            let valid = match s.split_once('/') {
                Some(("*", sub)) => sub.starts_with("*+") && sub.len() > 2,
                Some((kind, sub)) => {
                    !kind.is_empty()
                        && !sub.is_empty()
                        && !kind.contains('*')
                        && (sub == "*" || !sub.contains('*'))
                }
                None => false,
            };
            if valid {
                config.types.push(s);
            } else {
                item.error(format!("invalid content type {s:?}: expected \"type/subtype\", \"type/*\" or \"*/*+suffix\""));
                ok = false;
            }
        }
    }
    ok.then_some(config)
}

/// The settings of an `errors` layer: the pages by status (files, read when the config is built)
/// and the statuses of the app's own it intercepts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ErrorPages {
    /// `pages`: a status or class to a page file.
    pub pages: Vec<(StatusMatch, Located<PathBuf>)>,
    /// `intercept`.
    pub intercept: Vec<StatusMatch>,
}

fn check_errors(e: &ErrorPages, _: &Location) -> Vec<ConfigError> {
    e.pages
        .iter()
        .filter_map(|(_, path)| read_page(path).err())
        .collect()
}

fn build_errors(e: &ErrorPages, _: &Location) -> Result<Middleware, Vec<ConfigError>> {
    let mut config = ErrorsConfig::default();
    let mut errors = Vec::new();
    for (status, path) in &e.pages {
        match read_page(path) {
            Ok(page) => {
                config.pages.insert(*status, page);
            }
            Err(err) => errors.push(err),
        }
    }
    config.intercept = e.intercept.clone();
    if errors.is_empty() {
        // The pages' interceptor joins the run of steps it is in; the panic catcher is a layer.
        let layer = ErrorsLayer::new(config);
        Ok(
            Middleware::from_interceptor(layer.pages().clone()).then(Middleware::from_layer(
                tower::layer::layer_fn(CatchPanic::new),
            )),
        )
    } else {
        Err(errors)
    }
}

fn errors(t: &mut Table<'_>) -> Option<ErrorPages> {
    let mut config = ErrorPages::default();
    let mut ok = true;
    if let Some(mut pages) = t.get("pages").and_then(|v| {
        let table = v.table();
        ok &= table.is_some();
        table
    }) {
        for (key, value) in pages.entries() {
            let Some(status) = StatusMatch::parse(key) else {
                value.error(format!("invalid status {key:?}: expected a status from 400 to 599 or a class \"4xx\", \"5xx\""));
                ok = false;
                continue;
            };
            match value.str() {
                Some(p) => config.pages.push((
                    status,
                    Located {
                        value: PathBuf::from(p),
                        at: value.location(),
                    },
                )),
                None => ok = false,
            }
        }
        pages.finish();
    }
    if let Some(v) = t.get("intercept") {
        for item in v.array().unwrap_or_default() {
            let Some(s) = item.str() else {
                ok = false;
                continue;
            };
            match StatusMatch::parse(s) {
                Some(m) => config.intercept.push(m),
                None => {
                    item.error(format!("invalid status {s:?}: expected a status from 400 to 599 or a class \"4xx\", \"5xx\""));
                    ok = false;
                }
            }
        }
    }
    ok.then_some(config)
}

/// Reads an error page (its content type from its extension).
fn read_page(path: &Located<PathBuf>) -> Result<Page, ConfigError> {
    match std::fs::read_to_string(&path.value) {
        Ok(template) => {
            let content_type = match path
                .value
                .extension()
                .map(|ext| ext.to_string_lossy().to_ascii_lowercase())
            {
                Some(ext) if ext == "json" => "application/json",
                Some(ext) if ext == "txt" => "text/plain; charset=utf-8",
                _ => "text/html; charset=utf-8",
            };
            Ok(Page {
                template,
                content_type: HeaderValue::from_static(content_type),
            })
        }
        Err(e) => Err(path
            .at
            .error(format!("cannot read error page {:?}: {e}", path.value))),
    }
}

/// The settings of a `headers` layer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Headers {
    /// `request`: what is done to the request's headers.
    pub request: HeaderOps,
    /// `response`: what is done to the response's headers.
    pub response: HeaderOps,
}

fn headers(t: &mut Table<'_>) -> Option<Headers> {
    // Both sides are read before giving up, so that every error is reported.
    let request = t
        .get("request")
        .map_or(Some(HeaderOps::default()), |v| header_ops(&v));
    let response = t
        .get("response")
        .map_or(Some(HeaderOps::default()), |v| header_ops(&v));
    Some(Headers {
        request: request?,
        response: response?,
    })
}

fn header_ops(value: &Value<'_>) -> Option<HeaderOps> {
    let mut t = value.table()?;
    let mut ops = HeaderOps::default();
    let mut ok = true;
    for (key, list) in [("set", &mut ops.set), ("add", &mut ops.add)] {
        if let Some(v) = t.get(key) {
            match crate::handlers::read_header_map(&v) {
                Some(map) => {
                    let mut last: Option<HeaderName> = None;
                    for (name, value) in map {
                        if let Some(name) = name {
                            last = Some(name);
                        }
                        if let Some(name) = &last {
                            list.push((name.clone(), value));
                        }
                    }
                }
                None => ok = false,
            }
        }
    }
    if let Some(v) = t.get("replace") {
        ok &= header_replace(&v, &mut ops);
    }
    if let Some(v) = t.get("remove") {
        for item in v.array().unwrap_or_default() {
            let Some(s) = item.str() else {
                ok = false;
                continue;
            };
            match HeaderName::from_bytes(s.as_bytes()) {
                Ok(name) => ops.remove.push(name),
                Err(_) => {
                    item.error(format!("invalid header name {s:?}"));
                    ok = false;
                }
            }
        }
    }
    t.finish();
    ok.then_some(ops)
}

/// `replace = { "location" = { regex, to } }`: each header's values rewritten by a regex.
fn header_replace(value: &Value<'_>, ops: &mut HeaderOps) -> bool {
    let Some(mut table) = value.table() else {
        return false;
    };
    let mut ok = true;
    for (key, rule) in table.entries() {
        let Ok(name) = HeaderName::from_bytes(key.as_bytes()) else {
            rule.error(format!("invalid header name {key:?}"));
            ok = false;
            continue;
        };
        let Some(mut t) = rule.table() else {
            ok = false;
            continue;
        };
        let parsed = super::catalogue::regex_rule(&mut t);
        t.finish();
        match parsed.and_then(|(regex, to)| Some((Regex::new(&regex).ok()?, to))) {
            Some((regex, to)) => ops.replace.push((name, Replace { regex, to })),
            None => ok = false,
        }
    }
    table.finish();
    ok
}
