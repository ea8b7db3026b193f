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
//! On each side the operations run in the order remove, set, add: `set` replaces every value of a
//! header, `add` appends one more. Response operations apply to every response, parapet's own 404 and
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
}

impl HeaderOps {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Applies the operations: remove, then set, then add.
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
        }
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
