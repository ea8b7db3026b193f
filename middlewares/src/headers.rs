//! `headers`: set, add and remove request and response headers.
//!
//! ```toml
//! [middlewares.secure]
//! kind = "headers"
//! response.set = { "x-frame-options" = "DENY" }
//! response.remove = ["server"]
//! request.set = { "x-edge" = "parapet" }
//! ```
//!
//! On each side the operations run in the order remove, set, add, replace: `set` replaces every
//! value of a header, `add` appends one more, `replace` rewrites each value of a header by a regex
//! (`response.replace = { "location" = { regex = "^http://backend:8080/(.*)$", to = "https://example.com/$1" } }`:
//! Traefik's most asked-for rewrite, an upstream's `Location` pointing at itself). Response operations apply to every response, parapet's own 404 and
//! 502 included.
//!
//! ```
//! use parapet_middlewares::headers::{HeaderOps, HeadersLayer};
//!
//! let mut ops = HeaderOps::default();
//! ops.set.push(("x-frame-options".parse().unwrap(), "DENY".parse().unwrap()));
//! let layer = HeadersLayer::new(HeaderOps::default(), ops);
//! # let _ = layer;
//! ```

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};

use crate::intercept::{Intercept, InterceptLayer, Interceptor};
use crate::Body;

/// The operations on one side (request or response).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderOps {
    /// Headers removed.
    pub remove: Vec<HeaderName>,
    /// Headers set, replacing any value.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Headers added beside any value.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Headers whose values are rewritten by a regex.
    pub replace: Vec<(HeaderName, Replace)>,
}

/// A value rewrite: the first match of `regex` replaced by `to` (`$1` the first group).
#[derive(Clone, Debug)]
pub struct Replace {
    /// What is matched in the value.
    pub regex: regex::Regex,
    /// What replaces it.
    pub to: String,
}

impl PartialEq for Replace {
    fn eq(&self, other: &Self) -> bool {
        self.regex.as_str() == other.regex.as_str() && self.to == other.to
    }
}

impl Eq for Replace {}

impl HeaderOps {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.set.is_empty()
            && self.add.is_empty()
            && self.replace.is_empty()
    }

    /// Applies the operations: remove, then set, then add, then replace.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
        for (name, rule) in &self.replace {
            if let http::header::Entry::Occupied(mut entry) = headers.entry(name) {
                for value in entry.iter_mut() {
                    // A value that is not text, or one the rule would make invalid, is left as it is.
                    let Ok(text) = value.to_str() else { continue };
                    if let std::borrow::Cow::Owned(new) = rule.regex.replace(text, rule.to.as_str())
                    {
                        if let Ok(new) = HeaderValue::from_str(&new) {
                            *value = new;
                        }
                    }
                }
            }
        }
    }
}

/// The interceptor behind [`HeadersLayer`].
#[derive(Clone, Debug)]
pub struct Headers {
    ops: Arc<(HeaderOps, HeaderOps)>,
}

impl Interceptor for Headers {
    type State = ();

    fn request(&self, req: &mut Request<Body>) {
        self.ops.0.apply(req.headers_mut());
    }

    fn response(&self, _: (), res: &mut Response<Body>) {
        self.ops.1.apply(res.headers_mut());
    }
}

/// Rewrites request and response headers.
#[derive(Clone, Debug)]
pub struct HeadersLayer {
    inner: InterceptLayer<Headers>,
}

impl HeadersLayer {
    /// A layer applying `request` operations on the way in and `response` operations on the way out.
    pub fn new(request: HeaderOps, response: HeaderOps) -> Self {
        Self {
            inner: InterceptLayer::new(Headers {
                ops: Arc::new((request, response)),
            }),
        }
    }
}

impl HeadersLayer {
    /// The interceptor this layer applies: what a host runs without a layer of its own (parapet runs
    /// adjacent guards and interceptors in one future).
    pub fn interceptor(&self) -> &Headers {
        self.inner.interceptor()
    }
}

impl<S> tower::Layer<S> for HeadersLayer {
    type Service = Intercept<Headers, S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.inner.layer(inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{Layer, ServiceExt};

    fn ops(remove: &[&str], set: &[(&str, &str)], add: &[(&str, &str)]) -> HeaderOps {
        let pair = |(n, v): &(&str, &str)| (n.parse().unwrap(), v.parse().unwrap());
        HeaderOps {
            remove: remove.iter().map(|n| n.parse().unwrap()).collect(),
            set: set.iter().map(pair).collect(),
            add: add.iter().map(pair).collect(),
            replace: Vec::new(),
        }
    }

    #[tokio::test]
    async fn replace_rewrites_each_value_by_regex_and_leaves_the_others() {
        let inner = tower::service_fn(|_: Request<Body>| async move {
            let mut res = Response::new(Body::empty());
            res.headers_mut().insert(
                "location",
                HeaderValue::from_static("http://backend:8080/login?next=/a"),
            );
            res.headers_mut()
                .insert("link", HeaderValue::from_static("<http://elsewhere/>"));
            Ok::<_, Infallible>(res)
        });
        let mut response = HeaderOps::default();
        let regex = regex::Regex::new("^http://backend:8080/(.*)$").unwrap();
        for name in ["location", "link"] {
            response.replace.push((
                name.parse().unwrap(),
                Replace {
                    regex: regex.clone(),
                    to: "https://example.com/$1".into(),
                },
            ));
        }
        let layer = HeadersLayer::new(HeaderOps::default(), response);
        let res = layer
            .layer(inner)
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(
            res.headers()["location"],
            "https://example.com/login?next=/a"
        );
        assert_eq!(res.headers()["link"], "<http://elsewhere/>");
    }

    #[tokio::test]
    async fn headers_are_removed_set_and_added_on_both_sides() {
        let inner = tower::service_fn(|req: Request<Body>| async move {
            assert!(req.headers().get("cookie").is_none());
            assert_eq!(req.headers()["x-edge"], "parapet");
            let mut res = Response::new(Body::empty());
            res.headers_mut()
                .insert("server", HeaderValue::from_static("upstream/1.0"));
            res.headers_mut()
                .insert("x-frame-options", HeaderValue::from_static("SAMEORIGIN"));
            Ok::<_, Infallible>(res)
        });
        let layer = HeadersLayer::new(
            ops(&["cookie"], &[("x-edge", "parapet")], &[]),
            ops(
                &["server"],
                &[("x-frame-options", "DENY")],
                &[("vary", "origin")],
            ),
        );
        let req = Request::get("/")
            .header("cookie", "a=b")
            .body(Body::empty())
            .unwrap();
        let res = layer.layer(inner).oneshot(req).await.unwrap();
        assert!(res.headers().get("server").is_none());
        assert_eq!(res.headers()["x-frame-options"], "DENY");
        assert_eq!(res.headers()["vary"], "origin");
    }
}
