//! The gateway a config builds: every app assembled, every listener's route table compiled.
//!
//! [`Gateway::build`] runs once per config, off the request path. Per request, [`Gateway::dispatch`]
//! routes by listener, host and path and hands the request to its app; the only work done per request
//! is the table look-up and the app's own.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use http::uri::{PathAndQuery, Uri};
use http::Method;
use parapet_middlewares::{GatewayError, GatewayErrorKind};

use crate::config::{Config, EndpointConfig};
use crate::proxy::Upstream;
use crate::routing::{has_dot_segment, normalize_host, RouteTable};
use crate::{AppService, Request, Response};

/// Where a matched route sends a request.
#[derive(Clone)]
pub struct Target {
    app: AppService,
    app_name: Arc<str>,
    strip_prefix: bool,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("app", &self.app_name)
            .field("strip_prefix", &self.strip_prefix)
            .finish()
    }
}

/// The name of the app a request was routed to, in the request's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppName(pub Arc<str>);

/// What [`Gateway::dispatch`] decided for a request.
pub enum Dispatch {
    /// Give this request to this app.
    App(AppService, Request),
    /// parapet answers itself: no route matched, or the request is refused.
    Answer(Response),
}

/// A built config: what the server runs on.
pub struct Gateway {
    tables: HashMap<Box<str>, RouteTable<Target>>,
    upstreams: BTreeMap<String, Arc<Upstream>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listeners", &self.tables.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Builds every upstream, app and route table of `config`.
    ///
    /// `reuse` offers upstreams of a previous gateway: one whose definition is unchanged is kept, with
    /// its connection pool, instead of being built anew.
    pub fn build(config: &Config, reuse: Option<&Gateway>) -> Gateway {
        let upstreams: BTreeMap<String, Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|(name, cfg)| {
                let kept = reuse
                    .and_then(|g| g.upstreams.get(name))
                    .filter(|u| **u.config() == **cfg);
                let upstream = match kept {
                    Some(u) => Arc::clone(u),
                    None => Upstream::new(Arc::clone(cfg)),
                };
                (name.clone(), upstream)
            })
            .collect();

        let apps: BTreeMap<&str, AppService> = config
            .apps
            .iter()
            .map(|(name, app)| {
                let endpoint = match &app.endpoint {
                    EndpointConfig::Upstream(u) => upstreams[u].service(),
                    EndpointConfig::Handler { service, .. } => service.clone(),
                };
                (name.as_str(), endpoint)
            })
            .collect();

        let mut tables: HashMap<Box<str>, RouteTable<Target>> = config
            .listeners
            .iter()
            .map(|l| (l.name.as_str().into(), RouteTable::default()))
            .collect();
        for route in &config.routes {
            let target = Target {
                app: apps[route.app.as_str()].clone(),
                app_name: route.app.as_str().into(),
                strip_prefix: route.strip_prefix,
            };
            for (listener, table) in tables.iter_mut() {
                let serves = route
                    .listeners
                    .as_ref()
                    .is_none_or(|names| names.iter().any(|n| **n == **listener));
                if serves {
                    table.insert(&route.host, &route.path, target.clone());
                }
            }
        }
        Gateway { tables, upstreams }
    }

    /// Routes `req`, received on `listener`, to its app: the app and the request to give it, or the
    /// response parapet answers itself (no route, a request it refuses).
    pub fn dispatch(&self, listener: &str, mut req: Request) -> Dispatch {
        if req.method() == Method::CONNECT {
            return Dispatch::Answer(
                GatewayError::new(GatewayErrorKind::MethodNotAllowed)
                    .with_detail("CONNECT is not supported")
                    .into_response(),
            );
        }
        let path = req.uri().path();
        if has_dot_segment(path) {
            return Dispatch::Answer(
                GatewayError::new(GatewayErrorKind::BadRequest)
                    .with_detail("dot segment in path")
                    .into_response(),
            );
        }
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .map(normalize_host);
        let found = self
            .tables
            .get(listener)
            .and_then(|t| t.find(host.as_deref(), path));
        let Some((prefix, target)) = found else {
            return Dispatch::Answer(GatewayError::new(GatewayErrorKind::NoRoute).into_response());
        };
        let app = target.app.clone();
        if target.strip_prefix && prefix != "/" {
            let stripped = strip_prefix(req.uri(), prefix);
            if let Some(uri) = stripped {
                *req.uri_mut() = uri;
            }
        }
        req.extensions_mut()
            .insert(AppName(Arc::clone(&target.app_name)));
        Dispatch::App(app, req)
    }
}

/// The URI with `prefix` removed from its path (`/static/a.css` with `/static` is `/a.css`).
fn strip_prefix(uri: &Uri, prefix: &str) -> Option<Uri> {
    let prefix = prefix.trim_end_matches('/');
    let rest = uri.path().strip_prefix(prefix)?;
    let path = if rest.is_empty() { "/" } else { rest };
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq).ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_prefix_keeps_query_and_leading_slash() {
        let uri: Uri = "/static/a.css?v=1".parse().unwrap();
        assert_eq!(strip_prefix(&uri, "/static").unwrap(), "/a.css?v=1");
        let uri: Uri = "/static".parse().unwrap();
        assert_eq!(strip_prefix(&uri, "/static").unwrap(), "/");
        let uri: Uri = "/static/".parse().unwrap();
        assert_eq!(strip_prefix(&uri, "/static/").unwrap(), "/");
    }
}
