//! `cors`: Cross-Origin Resource Sharing, as the Fetch standard's CORS protocol says (§3.2).
//!
//! ```toml
//! [middlewares.browser]
//! kind = "cors"
//! origins = ["https://app.example.com"]    # or ["*"]
//! methods = ["GET", "POST"]
//! headers = ["content-type"]               # request headers a page may send; ["*"] for any
//! expose = ["x-total"]                      # response headers a page may read
//! credentials = true
//! max_age = "10m"
//! ```
//!
//! - A **preflight** (an `OPTIONS` request with `Origin` and `Access-Control-Request-Method`) is
//!   answered by the layer, `204`, never passed on: with the `Access-Control-Allow-*` headers when
//!   its origin is allowed, without any when not (the browser then refuses the actual request).
//! - Any other request with an allowed `Origin` passes on, and its response gets
//!   `Access-Control-Allow-Origin` (and `-Allow-Credentials`, `-Expose-Headers`), replacing what the
//!   upstream may have set. A request from an origin not allowed passes on too but its response
//!   gets no CORS header: the browser keeps it from the page.
//! - `Vary: Origin` is added to every response whose CORS headers depend on the origin (all of them,
//!   unless the origins are `"*"` without credentials), so that a cache does not serve one origin's
//!   answer to another.
//! - Credentials and wildcards (Fetch §3.2.5): a response to a request with credentials may not say
//!   `*`. With `credentials = true`, `origins = ["*"]` answers with the request's own origin,
//!   `headers = ["*"]` with the headers the preflight asked for and `methods = ["*"]` with the
//!   method it asked for.
//!
//! ```
//! use parapet_middlewares::cors::{CorsConfig, CorsLayer};
//!
//! let mut config = CorsConfig::default();
//! config.origins = vec!["https://app.example.com".into()];
//! config.credentials = true;
//! let layer = CorsLayer::new(config);
//! # let _ = layer;
//! ```

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};

use crate::guard::{answer, Guard, GuardLayer, Guarded};
use crate::Body;

/// The settings of a `cors` layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorsConfig {
    /// `origins`: the allowed origins (`scheme://host[:port]`), or `"*"` for any.
    pub origins: Vec<String>,
    /// `methods`: the allowed methods, or `"*"` (default GET, HEAD, POST).
    pub methods: Vec<String>,
    /// `headers`: the request headers a page may send, or `"*"` (default none beyond the
    /// CORS-safelisted ones).
    pub headers: Vec<String>,
    /// `expose`: the response headers a page may read beyond the safelisted ones.
    pub expose: Vec<String>,
    /// `credentials`: whether a page may send cookies and read the answer.
    pub credentials: bool,
    /// `max_age`: how long a browser may cache a preflight's answer.
    pub max_age: Option<Duration>,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            origins: Vec::new(),
            methods: vec!["GET".into(), "HEAD".into(), "POST".into()],
            headers: Vec::new(),
            expose: Vec::new(),
            credentials: false,
            max_age: None,
        }
    }
}

/// What the layer precomputes from its settings.
#[derive(Debug)]
struct Rules {
    any_origin: bool,
    /// The allowed origins, each with its header value made once: an origin sent exactly as
    /// configured is echoed with a copy of that value (shared bytes, no allocation) rather than of
    /// the request's.
    origins: Vec<(String, Option<HeaderValue>)>,
    any_method: bool,
    methods: Option<HeaderValue>,
    any_header: bool,
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
}

fn joined(list: &[String]) -> Option<HeaderValue> {
    let items: Vec<&str> = list
        .iter()
        .map(String::as_str)
        .filter(|s| *s != "*")
        .collect();
    if items.is_empty() {
        return None;
    }
    HeaderValue::from_str(&items.join(", ")).ok()
}

/// `text` as a header value whose copies share its bytes: the first copy of a value made from a
/// `Vec` allocates the shared count, so it is made here, once, not on a request.
fn shared_value(text: &str) -> Option<HeaderValue> {
    let value = HeaderValue::from_str(text).ok()?;
    drop(value.clone());
    Some(value)
}

/// The interceptor behind [`CorsLayer`].
#[derive(Clone, Debug)]
pub struct Cors {
    rules: Arc<Rules>,
}

/// What a passed-on request keeps for its response.
#[doc(hidden)]
pub enum Seen {
    /// No `Origin`, or one not allowed: only `Vary`.
    NoCors,
    /// An allowed origin: the `Access-Control-Allow-Origin` value to send.
    Allowed(HeaderValue),
}

impl Cors {
    /// The `Access-Control-Allow-Origin` value for a request from `origin`, or `None` if that
    /// origin is not allowed. The value is the request's origin byte for byte (the Fetch standard
    /// compares it so), or `*` for any origin without credentials.
    fn allowed(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        let rules = &self.rules;
        if rules.any_origin && !rules.credentials {
            return Some(HeaderValue::from_static("*"));
        }
        let listed = rules
            .origins
            .iter()
            .find(|(o, _)| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()));
        match listed {
            Some((_, Some(value))) if value.as_bytes() == origin.as_bytes() => Some(value.clone()),
            Some(_) => Some(origin.clone()),
            None if rules.any_origin => Some(origin.clone()),
            None => None,
        }
    }

    /// Whether the answer depends on the origin (then `Vary: Origin`).
    fn varies(&self) -> bool {
        !self.rules.any_origin || self.rules.credentials
    }

    fn allow_origin(&self, value: HeaderValue, headers: &mut HeaderMap) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        if self.rules.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    fn preflight(&self, req: &Request<Body>, origin: &HeaderValue) -> Response<Body> {
        let mut res = answer(StatusCode::NO_CONTENT);
        let rules = &self.rules;
        let out = res.headers_mut();
        for name in [
            header::ORIGIN,
            header::ACCESS_CONTROL_REQUEST_METHOD,
            header::ACCESS_CONTROL_REQUEST_HEADERS,
        ] {
            add_vary(out, name);
        }
        let Some(allowed) = self.allowed(origin) else {
            return res;
        };
        self.allow_origin(allowed, out);
        let asked_method = req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD);
        let methods = match (rules.any_method, rules.credentials) {
            (true, false) => Some(HeaderValue::from_static("*")),
            (true, true) => asked_method.cloned(),
            (false, _) => rules.methods.clone(),
        };
        if let Some(methods) = methods {
            out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
        }
        let asked_headers = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS);
        let headers = match (rules.any_header, rules.credentials) {
            (true, false) => Some(HeaderValue::from_static("*")),
            (true, true) => asked_headers.cloned(),
            (false, _) => rules.headers.clone(),
        };
        if let Some(headers) = headers {
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, headers);
        }
        if let Some(max_age) = &rules.max_age {
            out.insert(header::ACCESS_CONTROL_MAX_AGE, max_age.clone());
        }
        res
    }
}

/// Adds `name` to `Vary` unless a `Vary` value lists it (or `*`) already.
fn add_vary(headers: &mut HeaderMap, name: HeaderName) {
    let listed = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.eq_ignore_ascii_case(name.as_str()))
        })
    });
    if !listed {
        headers.append(header::VARY, HeaderValue::from(name));
    }
}

impl Guard for Cors {
    type State = Seen;

    fn request(&self, req: &mut Request<Body>) -> Result<Seen, Response<Body>> {
        let Some(origin) = req.headers().get(header::ORIGIN) else {
            return Ok(Seen::NoCors);
        };
        if req.method() == Method::OPTIONS
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return Err(self.preflight(req, origin));
        }
        match self.allowed(origin) {
            Some(allowed) => Ok(Seen::Allowed(allowed)),
            None => Ok(Seen::NoCors),
        }
    }

    fn response(&self, seen: Seen, res: &mut Response<Body>) {
        let headers = res.headers_mut();
        if self.varies() {
            add_vary(headers, header::ORIGIN);
        }
        if let Seen::Allowed(origin) = seen {
            self.allow_origin(origin, headers);
            if let Some(expose) = &self.rules.expose {
                headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
            }
        }
    }
}

/// Answers CORS preflights and decorates the responses to cross-origin requests.
#[derive(Clone, Debug)]
pub struct CorsLayer {
    inner: GuardLayer<Cors>,
}

impl CorsLayer {
    /// A layer with these settings.
    pub fn new(config: CorsConfig) -> Self {
        let any = |list: &[String]| list.iter().any(|s| s == "*");
        let rules = Rules {
            any_origin: any(&config.origins),
            origins: config
                .origins
                .iter()
                .filter(|s| *s != "*")
                .map(|s| (s.clone(), shared_value(s)))
                .collect(),
            any_method: any(&config.methods),
            methods: joined(&config.methods),
            any_header: any(&config.headers),
            headers: joined(&config.headers),
            expose: joined(&config.expose),
            credentials: config.credentials,
            max_age: config.max_age.map(|d| HeaderValue::from(d.as_secs())),
        };
        Self {
            inner: GuardLayer::new(Cors {
                rules: Arc::new(rules),
            }),
        }
    }
}

impl CorsLayer {
    /// The guard this layer applies: what a host runs without a layer of its own (parapet runs
    /// adjacent guards and interceptors in one future).
    pub fn guard(&self) -> &Cors {
        self.inner.guard()
    }
}

impl<S> tower::Layer<S> for CorsLayer {
    type Service = Guarded<Cors, S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.inner.layer(inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{Layer, ServiceExt};

    async fn call(config: CorsConfig, req: Request<Body>) -> Response<Body> {
        let inner = tower::service_fn(|req: Request<Body>| async move {
            // A preflight never reaches the app.
            assert!(!req.headers().contains_key("access-control-request-method"));
            let mut res = Response::new(Body::empty());
            res.headers_mut()
                .insert("access-control-allow-origin", HeaderValue::from_static("*"));
            Ok::<_, Infallible>(res)
        });
        CorsLayer::new(config)
            .layer(inner)
            .oneshot(req)
            .await
            .unwrap()
    }

    fn config(origins: &[&str], credentials: bool) -> CorsConfig {
        CorsConfig {
            origins: origins.iter().map(|s| s.to_string()).collect(),
            methods: vec!["GET".into(), "POST".into()],
            headers: vec!["content-type".into(), "x-token".into()],
            expose: vec!["x-total".into()],
            credentials,
            max_age: Some(Duration::from_secs(600)),
        }
    }

    fn preflight(origin: &str) -> Request<Body> {
        Request::options("/api")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn a_preflight_from_an_allowed_origin_is_answered_204_with_the_allow_headers() {
        let res = call(
            config(&["https://app.example.com"], true),
            preflight("https://app.example.com"),
        )
        .await;
        assert_eq!(res.status(), 204);
        let h = res.headers();
        assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-allow-methods"], "GET, POST");
        assert_eq!(h["access-control-allow-headers"], "content-type, x-token");
        assert_eq!(h["access-control-max-age"], "600");
        assert!(h.get_all("vary").iter().any(|v| v == "origin"));
    }

    #[tokio::test]
    async fn a_preflight_from_another_origin_gets_no_cors_header() {
        let res = call(
            config(&["https://app.example.com"], false),
            preflight("https://evil.example"),
        )
        .await;
        assert_eq!(res.status(), 204);
        assert!(res
            .headers()
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-")));
    }

    #[tokio::test]
    async fn an_actual_request_is_decorated_and_its_origin_echoed_with_credentials() {
        let req = |origin: &str| {
            Request::get("/api")
                .header("origin", origin)
                .body(Body::empty())
                .unwrap()
        };
        let res = call(config(&["*"], true), req("https://a.example")).await;
        assert_eq!(res.status(), 200);
        let h = res.headers();
        // No `*` with credentials (Fetch §3.2.5): the origin, echoed, replacing the upstream's.
        assert_eq!(h["access-control-allow-origin"], "https://a.example");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-expose-headers"], "x-total");
        assert_eq!(h["vary"], "origin");

        let res = call(config(&["*"], false), req("https://a.example")).await;
        assert_eq!(res.headers()["access-control-allow-origin"], "*");
        assert!(res.headers().get("vary").is_none());

        let res = call(
            config(&["https://app.example.com"], false),
            req("https://b.example"),
        )
        .await;
        // The upstream's own header is left: the layer adds none for an origin it does not allow.
        assert!(res.headers().get("access-control-expose-headers").is_none());
        assert_eq!(res.headers()["vary"], "origin");
    }

    #[tokio::test]
    async fn an_origin_allowed_in_another_case_is_echoed_as_the_request_sent_it() {
        // Origins match without regard to case, but the browser compares the echoed value with its
        // own byte for byte: the request's spelling is sent, not the configured one.
        let c = config(&["https://App.example.com"], false);
        for sent in ["https://app.example.com", "https://App.example.com"] {
            let req = Request::get("/api")
                .header("origin", sent)
                .body(Body::empty())
                .unwrap();
            let res = call(c.clone(), req).await;
            assert_eq!(res.headers()["access-control-allow-origin"], sent);
            let res = call(c.clone(), preflight(sent)).await;
            assert_eq!(res.headers()["access-control-allow-origin"], sent);
        }
    }

    #[tokio::test]
    async fn wildcard_headers_and_methods_are_echoed_with_credentials() {
        let mut c = config(&["*"], true);
        c.headers = vec!["*".into()];
        c.methods = vec!["*".into()];
        let res = call(c.clone(), preflight("https://a.example")).await;
        assert_eq!(
            res.headers()["access-control-allow-headers"],
            "content-type"
        );
        assert_eq!(res.headers()["access-control-allow-methods"], "POST");
        c.credentials = false;
        let res = call(c, preflight("https://a.example")).await;
        assert_eq!(res.headers()["access-control-allow-headers"], "*");
        assert_eq!(res.headers()["access-control-allow-methods"], "*");
        assert_eq!(res.headers()["access-control-allow-origin"], "*");
    }
}
