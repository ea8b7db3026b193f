//! The `errors` layer's settings, and the pages it puts on error responses.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};

use super::catch_panic::CatchPanicBody;
use crate::intercept::Interceptor;
use crate::request_id::RequestId;
use crate::{Body, ErrorChain, GatewayError, GatewayErrorKind};

/// A page sent in place of an error response's body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The page's text, with `{status}`, `{reason}` and `{request_id}` placeholders.
    pub template: String,
    /// Its content type.
    pub content_type: HeaderValue,
}

/// Which statuses a rule applies to: one status, or a class such as `5xx`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusMatch {
    /// Exactly this status.
    Exact(u16),
    /// Every status of this class: `5` is `5xx`.
    Class(u8),
}

impl StatusMatch {
    /// Parses `"502"` or `"5xx"` (4xx and 5xx classes, statuses 400 to 599).
    pub fn parse(s: &str) -> Option<StatusMatch> {
        let b = s.as_bytes();
        if b.len() == 3 && (b[1..] == *b"xx" || b[1..] == *b"XX") && matches!(b[0], b'4' | b'5') {
            return Some(StatusMatch::Class(b[0] - b'0'));
        }
        s.parse::<u16>()
            .ok()
            .filter(|n| (400..=599).contains(n))
            .map(StatusMatch::Exact)
    }

    pub(super) fn matches(self, status: StatusCode) -> bool {
        match self {
            StatusMatch::Exact(n) => status.as_u16() == n,
            StatusMatch::Class(c) => status.as_u16() / 100 == c as u16,
        }
    }
}

/// The settings of an `errors` layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorsConfig {
    /// `pages`: status or class to page. An exact status beats its class.
    pub pages: HashMap<StatusMatch, Page>,
    /// `intercept`: upstream statuses whose bodies are replaced too.
    pub intercept: Vec<StatusMatch>,
}

impl ErrorsConfig {
    fn page(&self, status: StatusCode) -> Option<&Page> {
        self.pages
            .get(&StatusMatch::Exact(status.as_u16()))
            .or_else(|| {
                self.pages
                    .get(&StatusMatch::Class((status.as_u16() / 100) as u8))
            })
    }
}

/// The interceptor that puts pages on error responses (see the [module docs](super)).
#[derive(Clone, Debug)]
pub struct ErrorPages {
    config: Arc<ErrorsConfig>,
}

impl ErrorPages {
    pub(super) fn new(config: Arc<ErrorsConfig>) -> Self {
        Self { config }
    }
}

impl Interceptor for ErrorPages {
    /// The request's `x-request-id`, for the page and the log.
    type State = Option<HeaderValue>;

    fn request(&self, req: &mut Request<Body>) -> Option<HeaderValue> {
        crate::request_id::read_or_ask(req).or_else(|| req.headers().get("x-request-id").cloned())
    }

    fn response(&self, request_id: Option<HeaderValue>, res: &mut Response<Body>) {
        // A `request_id` layer inside this one gave the request its id on the way out.
        let request_id = res
            .extensions()
            .get::<RequestId>()
            .map(|id| id.0.clone())
            .or(request_id);
        let status = res.status();
        let gateway = res.extensions().get::<GatewayError>();
        if let Some(err) = gateway.filter(|e| e.kind() == GatewayErrorKind::Internal) {
            let request_id = self::request_id(&request_id);
            tracing::error!(%request_id, error = %ErrorChain(err), "app failed before its response head");
        }
        if status.as_u16() >= 400
            && (gateway.is_some() || self.config.intercept.iter().any(|m| m.matches(status)))
        {
            if let Some(page) = self.config.page(status) {
                let original = std::mem::take(res);
                *res = with_page(original, page, &self::request_id(&request_id));
                return;
            }
        }
        let body = std::mem::take(res.body_mut());
        *res.body_mut() = Body::new(CatchPanicBody::new(body));
    }
}

fn with_page(response: Response<Body>, page: &Page, request_id: &str) -> Response<Body> {
    let (mut parts, _discarded) = response.into_parts();
    let status = parts.status;
    let text = page
        .template
        .replace("{status}", status.as_str())
        .replace("{reason}", status.canonical_reason().unwrap_or(""))
        .replace("{request_id}", request_id);
    // The page replaces the representation: headers describing the old body go with it.
    for name in [
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::CONTENT_RANGE,
        header::TRANSFER_ENCODING,
        header::ETAG,
        header::LAST_MODIFIED,
        header::ACCEPT_RANGES,
    ] {
        parts.headers.remove(name);
    }
    parts
        .headers
        .insert(header::CONTENT_TYPE, page.content_type.clone());
    parts
        .headers
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Response::from_parts(parts, Body::from(Bytes::from(text)))
}

pub(super) fn request_id(given: &Option<HeaderValue>) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // The id goes into an HTML page: only a plain token is taken from the client.
    let plain = |id: &&str| {
        (1..=128).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    match given.as_ref().and_then(|v| v.to_str().ok()).filter(plain) {
        Some(id) => id.to_owned(),
        None => {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            format!("{:08x}-{n:x}", std::process::id())
        }
    }
}
