//! `compress`: gzip, and Brotli and Zstandard where listed, negotiated per request.
//!
//! ```toml
//! [middlewares.gzip]
//! kind = "compress"
//! encodings = ["zstd", "br", "gzip"]   # preference on equal q-values; gzip is always offered
//! level = 6                            # 1 (fast) to 9 (small)
//! min_size = 256                       # bytes; smaller bodies of known size go out as they are
//! types = ["text/*", "application/json"]
//! ```
//!
//! The rules users expect:
//!
//! - the client's `Accept-Encoding` q-values decide; `q=0` refuses a coding; ties go to `encodings`' order;
//! - never compressed: a response that already has a `Content-Encoding`, one with
//!   `Cache-Control: no-transform`, a type outside `types`, a body of known size under `min_size`, the
//!   bodiless ones (HEAD, 1xx, 204, 304), and partial content (206, or any request with `Range`);
//! - streams (SSE, chunked responses) are compressed and **flushed whenever the source pauses**, so an
//!   event is never held back; bulk bodies go out in 32 KiB compressed chunks;
//! - a body of known length up to 1 MiB (a file, a rendered page, an API answer: not a live stream) is
//!   gzipped in one pass once its last byte is in (see below);
//! - when compressing: `Content-Length` and `Accept-Ranges` are dropped, `Content-Encoding` set, and a
//!   strong `ETag` made weak (the bytes differ, the meaning does not);
//! - `Vary: Accept-Encoding` is added once (never twice) to every response the negotiation could have
//!   changed, whether or not this client got it compressed, 304s included.
//!
//! ## gzip levels
//!
//! `level` means nginx's `gzip_comp_level`: the output is about as small as nginx's at that level,
//! for less CPU. Which library does the work, at which of its own levels, is [`gzip_backend`]'s
//! choice, made from measurement on a corpus of real files against nginx's gzip (the system's zlib,
//! `benches/gzip-corpus`):
//!
//! | body | level 6 | other levels |
//! | --- | --- | --- |
//! | known length up to 1 MiB, JSON from 4 KiB (`application/json`, `*/*+json`, `x-ndjson`) | zlib-rs 5, whole | libdeflate, same number |
//! | known length up to 1 MiB, anything else | libdeflate 6, whole (4 below 4 KiB) | libdeflate, same number |
//! | a stream, or unknown length, or over 1 MiB | zlib-rs 6, streaming | zlib-rs, same number |
//!
//! libdeflate at 6 costs 0.3 to 0.55 of nginx's CPU for output within 1 % of nginx's (HTML, CSS,
//! JS, SVG, text, varied JSON; 4 KiB to 1 MiB; small bodies below). Repetitive JSON (API answers,
//! records of one shape) is the exception: libdeflate's lazy matcher walks its hash chains deep for
//! the many medium-length matches such data has, where zlib's `good_length`/`max_lazy` cut the
//! search short, and its time came to 0.6 to 0.9 of nginx's (for output 5 to 15 % smaller). zlib-rs
//! at its level 5 (nginx's window for the body's length, a compressor reused per thread) costs 0.45
//! to 0.65 there with output no larger than nginx's; below 4 KiB its fixed start-up makes it lose,
//! and libdeflate stays. libdeflate's level 5 is as cheap but 2 to 6 % larger than nginx on that
//! JSON and on large HTML. Below 4 KiB, where libdeflate's fixed work per call (tables for a 32 KiB
//! window; nginx shrinks zlib's to the body) weighs most, its level 4 costs 4 to 9 points less than
//! its 6 (0.71 to 0.82 of nginx's CPU), for output 0.5 to 1 % larger than nginx's. Most of that
//! fixed work is resetting the matcher's 192 KiB of hash tables: below 16 KiB, bodies go to a
//! second build of libdeflate's compressor with 24 KiB of tables (`middlewares/libdeflate`): below
//! 4 KiB the same output for a quarter less CPU (0.53 to 0.68 of nginx's); from 4 to 16 KiB the
//! same output to a few bytes without the stock tables' 192 KiB of writes into memory gone cold
//! between requests, and there its level 5, about a tenth cheaper than 6 for output 0.2 to 0.7 %
//! larger (see [`gzip_backend`]).
//!
//! Whole bodies are gzipped by libdeflate (`libdeflater`, built from its C sources, and its small
//! build) or zlib-rs (flate2's `Compress`); streams are deflated by flate2's `zlib-rs`, a Rust port
//! of zlib-ng's optimised deflate. Each thread keeps its compressors, one per backend and level
//! used.

mod body;
mod negotiate;
mod small_deflate;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};

pub use body::{
    encode_stream, gzip_backend, gzip_whole, GzipBackend, GZIP_LD4_BELOW, GZIP_LD5_BELOW,
    JSON_ZLIB_MIN, SMALL_TABLES_BELOW,
};
pub use negotiate::{choose, Encoding};

use crate::intercept::{Intercept, InterceptLayer, Interceptor};
use crate::Body;

/// The content types compressed when `types` is not given.
pub const DEFAULT_TYPES: &[&str] = &[
    "text/*",
    "application/json",
    "application/javascript",
    "application/x-javascript",
    "application/ecmascript",
    "application/xml",
    "application/x-ndjson",
    "application/wasm",
    "application/vnd.ms-fontobject",
    "image/svg+xml",
    "image/x-icon",
    "font/ttf",
    "font/otf",
    "*/*+json",
    "*/*+xml",
];

/// The settings of a `compress` layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompressConfig {
    /// The encodings offered, in the server's order of preference; gzip is always among them.
    pub encodings: Vec<Encoding>,
    /// Compression level, 1 to 9 (Brotli and Zstandard use it as their quality).
    pub level: u32,
    /// Bodies of known size under this many bytes are sent as they are.
    pub min_size: u64,
    /// Content types compressed: `type/subtype`, `type/*`, or `*/*+suffix`.
    pub types: Vec<String>,
}

impl Default for CompressConfig {
    fn default() -> Self {
        Self {
            encodings: vec![Encoding::Gzip],
            level: 6,
            min_size: 256,
            types: DEFAULT_TYPES.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

impl CompressConfig {
    fn compressible(&self, headers: &HeaderMap) -> Option<bool> {
        let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let (kind, sub) = essence.split_once('/')?;
        Some(self.types.iter().any(|t| {
            if let Some(suffix) = t.strip_prefix("*/*") {
                sub.ends_with(suffix)
            } else if let Some(prefix) = t.strip_suffix("/*") {
                kind == prefix
            } else {
                *t == essence
            }
        }))
    }
}

/// Compresses response bodies.
#[derive(Clone, Debug)]
pub struct CompressLayer {
    inner: InterceptLayer<Compress>,
}

impl CompressLayer {
    /// A layer with these settings.
    pub fn new(mut config: CompressConfig) -> Self {
        if !config.encodings.contains(&Encoding::Gzip) {
            config.encodings.push(Encoding::Gzip);
        }
        Self {
            inner: InterceptLayer::new(Compress {
                config: std::sync::Arc::new(config),
            }),
        }
    }
}

impl CompressLayer {
    /// The interceptor this layer applies: what a host runs without a layer of its own (parapet runs
    /// adjacent guards and interceptors in one future).
    pub fn interceptor(&self) -> &Compress {
        self.inner.interceptor()
    }
}

impl<S> tower::Layer<S> for CompressLayer {
    type Service = Intercept<Compress, S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.inner.layer(inner)
    }
}

/// The interceptor behind [`CompressLayer`].
#[derive(Clone, Debug)]
pub struct Compress {
    config: std::sync::Arc<CompressConfig>,
}

/// What the request tells about compressing its response.
#[derive(Debug)]
pub struct Decision {
    encoding: Option<Encoding>,
    head: bool,
    range: bool,
}

impl Interceptor for Compress {
    type State = Decision;

    fn request(&self, req: &mut Request<Body>) -> Decision {
        Decision {
            encoding: choose(req.headers(), &self.config.encodings),
            head: req.method() == Method::HEAD,
            range: req.headers().contains_key(header::RANGE),
        }
    }

    fn response(&self, decision: Decision, res: &mut Response<Body>) {
        let status = res.status();
        let headers = res.headers();
        let compressible = self.config.compressible(headers);
        // A 304 usually has no Content-Type: it stands for the 200 it revalidates.
        let negotiable = match compressible {
            Some(c) => c,
            None => status == StatusCode::NOT_MODIFIED,
        };
        if !negotiable
            || headers
                .get(header::CONTENT_ENCODING)
                .is_some_and(|v| v != "identity")
            || no_transform(headers)
        {
            return;
        }
        let size = http_body::Body::size_hint(res.body()).exact();
        if size.is_some_and(|n| n < self.config.min_size) && status != StatusCode::NOT_MODIFIED {
            return;
        }
        add_vary(res.headers_mut());

        let Some(encoding) = decision.encoding else {
            return;
        };
        if status == StatusCode::NOT_MODIFIED {
            // The 200 this revalidates would carry the weakened tag.
            weaken_etag(res.headers_mut());
            return;
        }
        if decision.head
            || decision.range
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::PARTIAL_CONTENT
        {
            return;
        }
        let inner = std::mem::take(res.body_mut());
        let compressed = match size {
            Some(n) if encoding == Encoding::Gzip && n <= body::WHOLE_MAX => Ok(Body::new(
                body::WholeGzipBody::new(inner, self.config.level, is_json(res.headers()), n),
            )),
            _ => body::CompressBody::new(inner, encoding, self.config.level).map(Body::new),
        };
        match compressed {
            Ok(compressed) => {
                let headers = res.headers_mut();
                headers.remove(header::CONTENT_LENGTH);
                headers.remove(header::ACCEPT_RANGES);
                headers.insert(
                    header::CONTENT_ENCODING,
                    HeaderValue::from_static(encoding.as_str()),
                );
                weaken_etag(headers);
                *res.body_mut() = compressed;
            }
            Err(err) => {
                // The encoder could not start (out of memory): the response goes out as it is.
                tracing::warn!(error = %err, "compressor failed to start");
            }
        }
    }
}

/// Whether the content type is JSON (`application/json`, `application/x-ndjson`, `*/*+json`): such
/// bodies are often very repetitive, which decides the gzip backend (see [`gzip_backend`]).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    let ends_with = |suffix: &str| {
        sub.len() >= suffix.len() && sub[sub.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    };
    (kind.eq_ignore_ascii_case("application") && ends_with("json")) || ends_with("+json")
}

fn no_transform(headers: &HeaderMap) -> bool {
    headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
        })
    })
}

/// Adds `Vary: Accept-Encoding` unless some `Vary` line already names it (or `*`).
fn add_vary(headers: &mut HeaderMap) {
    let present = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|t| {
                let t = t.trim();
                t == "*" || t.eq_ignore_ascii_case("accept-encoding")
            })
        })
    });
    if !present {
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
}

fn weaken_etag(headers: &mut HeaderMap) {
    if let Some(etag) = headers.get(header::ETAG) {
        if etag.as_bytes().starts_with(b"\"") {
            let mut weak = Vec::with_capacity(etag.len() + 2);
            weak.extend_from_slice(b"W/");
            weak.extend_from_slice(etag.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&weak) {
                headers.insert(header::ETAG, v);
            }
        }
    }
}

#[cfg(test)]
mod tests;
