//! `rewrite`: the request path rewritten by a regular expression, before what is below sees it.
//!
//! ```toml
//! [middlewares.v1]
//! kind = "rewrite"
//! path = { regex = "^/v1/(.*)$", to = "/api/$1" }
//! ```
//!
//! The first match of `regex` in the path (without the query, which is kept as it is) is replaced by
//! `to`, where `$1`, `$2`... and `${name}` are the regex's groups (the `regex` crate's syntax, which
//! has no look-around and runs in linear time: a hostile path cannot make it slow). A path the regex
//! does not match passes untouched. In a listener's chain the rewritten path is the one routed; in an
//! app's chain, the one forwarded.
//!
//! The result must still be a path as parapet admits them (`router::admit` normalised the original):
//! it must begin with `/` and have no `.` or `..` segment (RFC 3986 §3.3), literally or
//! percent-encoded, nor any character a request target may not carry. Otherwise the request is
//! answered `400` with the gateway error `bad_request`: a rule must not be a way around the
//! normalisation.
//!
//! In the config a `rewrite` may also carry a `redirect = { regex, to, status }`: a
//! [`RedirectLayer`](crate::redirect::RedirectLayer) put outside this one, so that a request it
//! answers is not rewritten.
//!
//! ```
//! use parapet_middlewares::rewrite::RewriteLayer;
//!
//! let layer = RewriteLayer::new(regex::Regex::new("^/v1/(.*)$").unwrap(), "/api/$1".into());
//! # let _ = layer;
//! ```

use std::borrow::Cow;
use std::sync::Arc;

use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
/// The regex type rules are written in (the `regex` crate's), for hosts that compile them.
pub use regex::Regex;

use crate::guard::{Guard, GuardLayer, Guarded};
use crate::{Body, GatewayError, GatewayErrorKind};

/// The guard behind [`RewriteLayer`].
#[derive(Clone, Debug)]
pub struct Rewrite {
    rule: Arc<(Regex, String)>,
}

/// Whether `path` is one parapet would have admitted: absolute, no dot segment.
pub fn is_normal(path: &str) -> bool {
    path.starts_with('/')
        && path.split('/').all(|segment| {
            let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
            decoded != "." && decoded != ".."
        })
}

impl Rewrite {
    /// The rewritten path and query, `None` if the path does not match, `Some(Err)` if the result
    /// is not a normal path.
    fn rewrite(&self, uri: &Uri) -> Option<Result<PathAndQuery, ()>> {
        let (regex, to) = &*self.rule;
        let path = uri.path();
        // `replace` allocates its captures even when nothing matches: the common case asks first.
        if !regex.is_match(path) {
            return None;
        }
        let Cow::Owned(mut rewritten) = regex.replace(path, to.as_str()) else {
            return None;
        };
        if !is_normal(&rewritten) || rewritten.contains(['?', '#']) {
            return Some(Err(()));
        }
        if let Some(query) = uri.query() {
            rewritten.push('?');
            rewritten.push_str(query);
        }
        Some(PathAndQuery::try_from(rewritten).map_err(drop))
    }
}

impl Guard for Rewrite {
    type State = ();

    fn request(&self, req: &mut Request<Body>) -> Result<(), Response<Body>> {
        let bad = || {
            GatewayError::new(GatewayErrorKind::BadRequest)
                .with_detail("rewritten path is not normal")
                .into_response()
        };
        match self.rewrite(req.uri()) {
            None => Ok(()),
            Some(Err(())) => Err(bad()),
            Some(Ok(path_and_query)) => {
                let mut parts = std::mem::take(req.uri_mut()).into_parts();
                parts.path_and_query = Some(path_and_query);
                match Uri::from_parts(parts) {
                    Ok(uri) => {
                        *req.uri_mut() = uri;
                        Ok(())
                    }
                    Err(_) => Err(bad()),
                }
            }
        }
    }

    fn response(&self, _: (), _: &mut Response<Body>) {}
}

/// Rewrites the request path by a regex.
#[derive(Clone, Debug)]
pub struct RewriteLayer {
    inner: GuardLayer<Rewrite>,
}

impl RewriteLayer {
    /// A layer replacing the first match of `regex` in the path by `to` (`$1` the first group).
    pub fn new(regex: Regex, to: String) -> Self {
        Self {
            inner: GuardLayer::new(Rewrite {
                rule: Arc::new((regex, to)),
            }),
        }
    }
}

impl RewriteLayer {
    /// The guard this layer applies: what a host runs without a layer of its own (parapet runs
    /// adjacent guards and interceptors in one future).
    pub fn guard(&self) -> &Rewrite {
        self.inner.guard()
    }
}

impl<S> tower::Layer<S> for RewriteLayer {
    type Service = Guarded<Rewrite, S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.inner.layer(inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{Layer, ServiceExt};

    async fn call(regex: &str, to: &str, target: &str) -> (u16, String) {
        let inner = tower::service_fn(|req: Request<Body>| async move {
            let mut res = Response::new(Body::empty());
            res.headers_mut()
                .insert("x-target", req.uri().to_string().parse().unwrap());
            Ok::<_, Infallible>(res)
        });
        let layer = RewriteLayer::new(Regex::new(regex).unwrap(), to.into());
        let res = layer
            .layer(inner)
            .oneshot(Request::get(target).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let target = res
            .headers()
            .get("x-target")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (res.status().as_u16(), target)
    }

    #[tokio::test]
    async fn the_path_is_rewritten_with_its_groups_and_the_query_kept() {
        assert_eq!(
            call("^/v1/(.*)$", "/api/$1", "/v1/users/7?x=1").await,
            (200, "/api/users/7?x=1".into())
        );
        assert_eq!(
            call("^/v1/(?P<rest>.*)$", "/api/${rest}", "/v1/a").await,
            (200, "/api/a".into())
        );
        // No match: untouched.
        assert_eq!(
            call("^/v1/(.*)$", "/api/$1", "/v2/a").await,
            (200, "/v2/a".into())
        );
    }

    #[tokio::test]
    async fn a_result_that_is_not_a_normal_path_is_a_400() {
        for (regex, to, target) in [
            ("^/v1/(.*)$", "/api/../$1", "/v1/a"),
            ("^/v1/(.*)$", "/api/%2E%2e/$1", "/v1/a"),
            ("^/v1/(.*)$", "api/$1", "/v1/a"),
            ("^/v1/(.*)$", "/api/$1?x", "/v1/a"),
        ] {
            assert_eq!(call(regex, to, target).await.0, 400, "{to}");
        }
    }

    #[test]
    fn normal_paths_have_no_dot_segments() {
        assert!(is_normal("/a/b.c/..d/"));
        assert!(!is_normal("/a/./b"));
        assert!(!is_normal("/a/.."));
        assert!(!is_normal("/%2e%2E/x"));
        assert!(!is_normal("a"));
    }
}
