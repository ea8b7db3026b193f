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
use tower::{Layer, Service};

use crate::service::{guard_step, interceptor_step, Step};
use crate::{AppService, Request, Response};

/// A built middleware: wraps a service in one layer, or in a few (outermost first).
#[derive(Clone)]
pub struct Middleware {
    parts: Arc<[Part]>,
}

#[derive(Clone)]
enum Part {
    Wrap(Arc<dyn Fn(AppService) -> AppService + Send + Sync>),
    Step(Arc<dyn Step>),
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
            parts: Arc::new([Part::Wrap(Arc::new(move |inner| {
                AppService::new(layer.layer(inner))
            }))]),
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
            parts: Arc::new([Part::Wrap(Arc::new(wrap))]),
        }
    }

    /// A middleware from a [`Guard`]: it answers or passes on, in the run of steps it is part of.
    pub fn from_guard<G: Guard>(guard: G) -> Middleware {
        Middleware {
            parts: Arc::new([Part::Step(guard_step(guard))]),
        }
    }

    /// A middleware from an [`Interceptor`], in the run of steps it is part of.
    pub fn from_interceptor<I: Interceptor>(interceptor: I) -> Middleware {
        Middleware {
            parts: Arc::new([Part::Step(interceptor_step(interceptor))]),
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
        self.parts
            .iter()
            .rev()
            .fold(inner, |inner, part| match part {
                Part::Wrap(wrap) => wrap(inner),
                Part::Step(step) => inner.with_step(Arc::clone(step)),
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
