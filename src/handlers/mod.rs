//! parapet's built-in in-process handlers: `respond`, `static`, `redirect` and `echo`.
//!
//! Each module reads its keys from the handler's table into a typed settings struct (the model stage)
//! and builds a service from it (the build stage); `crate::builtins` registers them.

pub mod echo;
pub mod redirect;
pub mod respond;
pub mod static_files;
pub mod wsgi;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::config::{Table, Value};

/// Reads a table of header names to string values.
pub(crate) fn read_header_map(value: &Value<'_>) -> Option<HeaderMap> {
    let mut table = value.table()?;
    let mut headers = HeaderMap::new();
    let mut ok = true;
    for (name, v) in table.entries() {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            v.error(format!("invalid header name {name:?}"));
            ok = false;
            continue;
        };
        let Some(s) = v.str() else {
            ok = false;
            continue;
        };
        match HeaderValue::from_str(s) {
            Ok(value) => {
                headers.append(name, value);
            }
            Err(_) => {
                v.error(format!("invalid header value {s:?}"));
                ok = false;
            }
        }
    }
    table.finish();
    ok.then_some(headers)
}

/// Reads an HTTP status code from `key`, if present.
pub(crate) fn read_status(
    t: &mut Table<'_>,
    key: &str,
    allowed: std::ops::RangeInclusive<i64>,
) -> Option<Result<StatusCode, ()>> {
    let v = t.get(key)?;
    Some(
        v.int_in(allowed)
            .and_then(|n| StatusCode::from_u16(n as u16).ok())
            .ok_or(()),
    )
}
