//! The built-in middleware kinds: each reads its table into the layer's typed settings.

use std::path::PathBuf;

use http::{HeaderName, HeaderValue};
use parapet_middlewares::access_log::{AccessLogConfig, AccessLogLayer, Format, Target};
use parapet_middlewares::compress::{CompressConfig, CompressLayer, Encoding};
use parapet_middlewares::errors::{ErrorsConfig, ErrorsLayer, Page, StatusMatch};
use parapet_middlewares::headers::{HeaderOps, HeadersLayer};

use super::Middleware;
use crate::config::{Table, Value};
use crate::registry::Registry;

/// Registers every built-in middleware kind.
pub(crate) fn register_builtins(registry: &mut Registry) {
    registry
        .register_middleware("access_log", access_log)
        .register_middleware("compress", compress)
        .register_middleware("errors", errors)
        .register_middleware("headers", headers);
}

fn access_log(t: &mut Table<'_>) -> Option<Middleware> {
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
    let target = match path.as_ref().map(|v| (v, v.str())) {
        None => Some(Target::Stdout),
        Some((_, None)) => None,
        Some((_, Some("-"))) => Some(Target::Stdout),
        Some((_, Some(p))) => Some(Target::File(PathBuf::from(p))),
    };
    let config = AccessLogConfig {
        format: format?,
        target: target?,
    };
    match AccessLogLayer::new(config.clone()) {
        Ok(layer) => Some(Middleware::from_layer(layer)),
        Err(e) => {
            let msg = format!("cannot open access log {:?}: {e}", config.target);
            match path {
                Some(v) => v.error(msg),
                None => t.error(msg),
            }
            None
        }
    }
}

fn compress(t: &mut Table<'_>) -> Option<Middleware> {
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
    ok.then(|| Middleware::from_layer(CompressLayer::new(config)))
}

fn errors(t: &mut Table<'_>) -> Option<Middleware> {
    let mut config = ErrorsConfig::default();
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
            match value.str().map(|p| read_page(&value, p)) {
                Some(Some(page)) => {
                    config.pages.insert(status, page);
                }
                _ => ok = false,
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
    ok.then(|| Middleware::from_layer(ErrorsLayer::new(config)))
}

fn read_page(value: &Value<'_>, path: &str) -> Option<Page> {
    match std::fs::read_to_string(path) {
        Ok(template) => {
            let content_type = match path
                .rsplit_once('.')
                .map(|(_, ext)| ext.to_ascii_lowercase())
            {
                Some(ext) if ext == "json" => "application/json",
                Some(ext) if ext == "txt" => "text/plain; charset=utf-8",
                _ => "text/html; charset=utf-8",
            };
            Some(Page {
                template,
                content_type: HeaderValue::from_static(content_type),
            })
        }
        Err(e) => {
            value.error(format!("cannot read error page {path:?}: {e}"));
            None
        }
    }
}

fn headers(t: &mut Table<'_>) -> Option<Middleware> {
    // Both sides are read before giving up, so that every error is reported.
    let request = t
        .get("request")
        .map_or(Some(HeaderOps::default()), |v| header_ops(&v));
    let response = t
        .get("response")
        .map_or(Some(HeaderOps::default()), |v| header_ops(&v));
    Some(Middleware::from_layer(HeadersLayer::new(
        request?, response?,
    )))
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
