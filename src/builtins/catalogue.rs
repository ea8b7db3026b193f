//! The middleware catalogue's kinds: `request_id`, `cors`, `ip_filter`, `rate_limit`.
//!
//! As the other built-in kinds: parse (pure, errors located at their key), check (no side effects),
//! build (the layer).

use http::HeaderName;
use parapet_middlewares::request_id::RequestIdLayer;

use crate::chain::Middleware;
use crate::config::{Table, Value};
use crate::registry::Registry;

use super::no_check;

/// Registers the catalogue's kinds.
pub(super) fn register(registry: &mut Registry) {
    registry.register_middleware_kind("request_id", request_id, no_check, |r: &RequestId, _| {
        Ok(Middleware::from_layer(RequestIdLayer::new(
            r.header.clone(),
        )))
    });
}

/// The settings of a `request_id` layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId {
    /// `header` (default `x-request-id`).
    pub header: HeaderName,
}

fn request_id(t: &mut Table<'_>) -> Option<RequestId> {
    let header = match t.get("header") {
        None => HeaderName::from_static("x-request-id"),
        Some(v) => header_name(&v)?,
    };
    Some(RequestId { header })
}

/// A header name, located if invalid.
fn header_name(v: &Value<'_>) -> Option<HeaderName> {
    let s = v.str()?;
    match HeaderName::from_bytes(s.as_bytes()) {
        Ok(name) => Some(name),
        Err(_) => {
            v.error(format!("invalid header name {s:?}"));
            None
        }
    }
}
