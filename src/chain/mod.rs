//! Middleware chains: `middlewares = ["a", "b", "c"]` builds `a(b(c(endpoint)))`.
//!
//! `a` is the outermost: it sees the request first and has the last word on the response head. A
//! [`Middleware`] is a built layer, made once when the config is built (files opened, pages read) and
//! applied to every app and listener that names it. Kinds are registered in a [`crate::Registry`]
//! (the built-in ones by `crate::builtins`).
//!
//! A middleware is any tower layer ([`Middleware::from_layer`]), or a guard or an interceptor
//! ([`Middleware::from_guard`], [`Middleware::from_interceptor`]): adjacent ones of those are run by
//! one future, without a boxed future per layer (see [`crate::service`]).

use std::convert::Infallible;
use std::sync::Arc;

use parapet_middlewares::guard::Guard;
use parapet_middlewares::intercept::Interceptor;
use parapet_middlewares::request_id::RequestIds;
use tower::{Layer, Service};

use crate::service::{guard_step, interceptor_step, Step};
use crate::{AppService, Request, Response};

/// A built middleware: wraps a service in one layer, or in a few (outermost first).
#[derive(Clone)]
pub struct Middleware {
    parts: Arc<[Part]>,
}

/// A part of a middleware, with whether it may read the tags outer layers put in a request's
/// extensions for readers inside (see [`Middleware::reads_no_tags`]).
#[derive(Clone)]
enum Part {
    Wrap(Arc<dyn Fn(AppService) -> AppService + Send + Sync>, bool),
    Step(Arc<dyn Step>, bool),
    /// A `request_id` layer's step in its two forms: putting the id in the request's extensions,
    /// for the readers inside, and not, where nothing inside reads it.
    RequestId {
        tagging: Arc<dyn Step>,
        plain: Arc<dyn Step>,
    },
}

impl std::fmt::Debug for Middleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Middleware").finish_non_exhaustive()
    }
}

impl Middleware {
    /// A middleware from any tower layer whose service, like every parapet service, never fails
    /// (failures are responses). Wrap a fallible layer in the `errors` layer's service first.
    pub fn from_layer<L>(layer: L) -> Middleware
    where
        L: Layer<AppService> + Send + Sync + 'static,
        L::Service: Service<Request, Response = Response, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        Middleware {
            parts: Arc::new([Part::Wrap(
                Arc::new(move |inner| AppService::new(layer.layer(inner))),
                true,
            )]),
        }
    }

    /// A middleware that wraps the service inside it by a function of its own: for a layer that
    /// calls its inner service itself without a future of its own (`basic_auth` hands an admitted
    /// request straight to the app's future), so without the boxed future [`Middleware::from_layer`]
    /// costs per request. Like a layer, it is not part of a run of steps: the guards and
    /// interceptors outside it and inside it make two runs.
    pub fn from_wrap<F>(wrap: F) -> Middleware
    where
        F: Fn(AppService) -> AppService + Send + Sync + 'static,
    {
        Middleware {
            parts: Arc::new([Part::Wrap(Arc::new(wrap), true)]),
        }
    }

    /// A middleware from a [`Guard`]: it answers or passes on, in the run of steps it is part of.
    pub fn from_guard<G: Guard>(guard: G) -> Middleware {
        Middleware {
            parts: Arc::new([Part::Step(guard_step(guard), true)]),
        }
    }

    /// A middleware from an [`Interceptor`], in the run of steps it is part of.
    pub fn from_interceptor<I: Interceptor>(interceptor: I) -> Middleware {
        Middleware {
            parts: Arc::new([Part::Step(interceptor_step(interceptor), true)]),
        }
    }

    /// A `request_id` layer's interceptor: it puts the id in the request's extensions only where
    /// something inside it may read it there ([`AppService::reads_tags`]), which spares
    /// every other request a box and a map insert.
    pub fn from_request_ids(ids: RequestIds) -> Middleware {
        Middleware {
            parts: Arc::new([Part::RequestId {
                tagging: interceptor_step(ids.clone().tagging_requests(true)),
                plain: interceptor_step(ids.tagging_requests(false)),
            }]),
        }
    }

    /// This middleware, known not to read the tags layers outside it put in a request's extensions
    /// for readers inside ([`AppService::reads_tags`]: a `request_id`'s id, the router's panic
    /// signal). Any middleware not said to is taken to read them (an embedder's may): parapet's own
    /// say so, but for `access_log` and `errors`, which log them.
    pub fn reads_no_tags(self) -> Middleware {
        let parts: Vec<Part> = self
            .parts
            .iter()
            .map(|part| match part {
                Part::Wrap(wrap, _) => Part::Wrap(Arc::clone(wrap), false),
                Part::Step(step, _) => Part::Step(Arc::clone(step), false),
                other => other.clone(),
            })
            .collect();
        Middleware {
            parts: parts.into(),
        }
    }

    /// This middleware outside `inner`: one made of two parts, `self` first.
    pub fn then(self, inner: Middleware) -> Middleware {
        let parts: Vec<Part> = self
            .parts
            .iter()
            .chain(inner.parts.iter())
            .cloned()
            .collect();
        Middleware {
            parts: parts.into(),
        }
    }

    /// Wraps `inner` in this middleware.
    pub fn wrap(&self, inner: AppService) -> AppService {
        self.parts.iter().rev().fold(inner, |inner, part| {
            let inside = inner.reads_tags();
            match part {
                Part::Wrap(wrap, reads) => wrap(inner).with_tags_read(inside || *reads),
                Part::Step(step, reads) => inner
                    .with_step(Arc::clone(step))
                    .with_tags_read(inside || *reads),
                Part::RequestId { tagging, plain } => {
                    inner.with_step(Arc::clone(if inside { tagging } else { plain }))
                }
            }
        })
    }
}

/// Wraps `endpoint` in `chain`, the first middleware outermost.
pub fn build<'a>(
    chain: impl DoubleEndedIterator<Item = &'a Middleware>,
    endpoint: AppService,
) -> AppService {
    chain.rev().fold(endpoint, |inner, m| m.wrap(inner))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;
    use parapet_middlewares::request_id::{RequestId, RequestIdLayer};
    use parapet_middlewares::Body;

    /// An endpoint answering whether the request carried a `RequestId` extension.
    fn endpoint() -> AppService {
        AppService::from_fn(|req: Request| {
            let tagged = req.extensions().get::<RequestId>().is_some();
            Box::pin(async move {
                let mut res = Response::new(Body::empty());
                res.headers_mut().insert(
                    "x-tagged",
                    http::HeaderValue::from_static(if tagged { "yes" } else { "no" }),
                );
                Ok(res)
            })
        })
    }

    fn request_id() -> Middleware {
        Middleware::from_request_ids(
            RequestIdLayer::new(HeaderName::from_static("x-request-id"))
                .interceptor()
                .clone(),
        )
    }

    /// An interceptor that changes nothing.
    fn noop() -> parapet_middlewares::headers::Headers {
        use parapet_middlewares::headers::{HeaderOps, HeadersLayer};
        HeadersLayer::new(HeaderOps::default(), HeaderOps::default())
            .interceptor()
            .clone()
    }

    /// A step that reads nothing, said to.
    fn plain_step() -> Middleware {
        Middleware::from_interceptor(noop()).reads_no_tags()
    }

    async fn tagged(app: AppService) -> String {
        let res = app.handle(http::Request::new(Body::empty())).await.unwrap();
        assert!(res.headers().contains_key("x-request-id"));
        res.headers()["x-tagged"].to_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn a_request_id_tags_requests_only_where_something_inside_may_read_the_id() {
        // An endpoint of unknown make may read it.
        assert_eq!(
            tagged(build([&request_id()].into_iter(), endpoint())).await,
            "yes"
        );
        // One that says it does not is spared the extension, through layers that read nothing.
        let quiet = endpoint().reads_no_tags();
        assert_eq!(
            tagged(build([&request_id()].into_iter(), quiet.clone())).await,
            "no"
        );
        let chain = [request_id(), plain_step()];
        let app = build(chain.iter(), quiet.clone());
        assert!(!app.reads_tags());
        assert_eq!(tagged(app).await, "no");
        // A layer of unknown make inside counts as a reader.
        let unknown = Middleware::from_interceptor(noop());
        let chain = [request_id(), plain_step(), unknown];
        let app = build(chain.iter(), quiet);
        assert!(app.reads_tags());
        // (It reads nothing in fact, so the endpoint shows the extension passed through.)
        assert_eq!(tagged(app).await, "yes");
    }
}
