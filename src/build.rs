//! The build stage: a validated [`Config`] becomes the [`Gateway`] the server runs on.
//!
//! Building is where I/O happens: access log files are opened and their writers started, error pages
//! read, every middleware, handler and upstream client built, and each listener's route table
//! compiled. Its errors are [`ConfigErrors`] like the model's, located through the places the model
//! keeps. [`check`] runs, for `parapet check`, the build's checks that have no side effect (a
//! directory exists, a page is readable) and nothing else.
//!
//! [`Gateway::build`] runs once per config, off the request path. Each listener gets an *entry*
//! service: its own middleware chain around a [`Router`], which hands each request to its app (the
//! app's chain around its endpoint). The only work done per request is the table look-up and the
//! layers' own.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::acme::Acme;
use crate::chain::{self, Middleware};
use crate::config::{
    AcmeChallenge, Config, ConfigError, ConfigErrors, EndpointConfig, HostMatch, IpRange,
};
use crate::metrics::RouteStats;
use crate::proxy::Upstream;
use crate::registry::Registry;
use crate::router::{RouteTarget, Router};
use crate::routing::RouteTable;
use crate::tls::ListenerTlsConfig;
use crate::AppService;

/// The service serving a listener's requests: its router, or its middleware chain around the router.
#[derive(Clone)]
pub enum Entry {
    /// A listener without middlewares: its router itself, whose future the connection drives in
    /// its own ([`Router::route`]) rather than boxed as an [`AppService`]'s.
    Router(Router),
    /// The listener's chain around its router (and, with ACME's HTTP-01, the challenge answers
    /// around that).
    Chain(AppService),
}

impl Entry {
    /// Handles one request as the listener's connections do, but for their own part (admission,
    /// timeouts, the response's framing): its response.
    pub async fn handle(&self, req: crate::Request) -> crate::Response {
        let Ok(response) = match self {
            Entry::Router(router) => router.route(req).await,
            Entry::Chain(app) => app.handle(req).await,
        };
        response
    }
}

/// A built config: what the server runs on.
pub struct Gateway {
    entries: crate::fnv::NameMap<Entry>,
    upstreams: BTreeMap<String, Arc<Upstream>>,
    trusted_proxies: Vec<IpRange>,
    /// The TLS of each listener that terminates it.
    tls: HashMap<Box<str>, Arc<ListenerTlsConfig>>,
    /// The server's ACME manager, when the config has an `[acme]` table: handed from gateway to
    /// gateway across reloads, like the TLS session state.
    acme: Option<Arc<Acme>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listeners", &self.entries.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Runs every check of `config`'s kinds that has no side effect: no file is created, nothing is
/// bound or started. What `parapet check` adds to reading and validating the file.
pub fn check(config: &Config, registry: &Registry) -> Result<(), ConfigErrors> {
    let mut errors = Vec::new();
    for tls in config.listeners.iter().filter_map(|l| l.tls.as_ref()) {
        errors.extend(ListenerTlsConfig::check(tls));
    }
    if let Some(acme) = &config.acme {
        errors.extend(Acme::check(acme));
    }
    for m in config.middlewares.values() {
        errors.extend(registry.check_middleware(&m.kind, &m.settings, &m.at));
    }
    for u in config.upstreams.values() {
        errors.extend(Upstream::check(u).err());
    }
    for app in config.apps.values() {
        if let EndpointConfig::Handler(h) = &app.endpoint {
            errors.extend(registry.check_handler(&h.kind, &h.settings, &h.at));
        }
    }
    into_result(errors)
}

fn into_result(mut errors: Vec<ConfigError>) -> Result<(), ConfigErrors> {
    if errors.is_empty() {
        return Ok(());
    }
    errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    errors.dedup();
    Err(ConfigErrors(errors))
}

impl Gateway {
    /// Builds every middleware, handler, upstream, app and route table of `config`, with the kinds
    /// of `registry`. Every error is collected; on any, nothing built is kept.
    ///
    /// `reuse` offers upstreams of a previous gateway: one whose definition is unchanged is kept, with
    /// its connection pools, instead of being built anew; one that changed keeps the state (health,
    /// ejection, load) and pools of its servers whose address did not change.
    pub fn build(
        config: &Config,
        registry: &Registry,
        reuse: Option<&Gateway>,
    ) -> Result<Gateway, ConfigErrors> {
        let mut errors = Vec::new();

        // ACME: the storage directory made, `ca` read; the manager is the previous gateway's, so
        // that its orders and certificates carry on.
        let acme = config
            .acme
            .as_ref()
            .and_then(|acme_config| match Acme::prepare(acme_config) {
                Ok(settings) => {
                    let manager = reuse.and_then(|g| g.acme.clone()).unwrap_or_else(Acme::new);
                    Some((manager, settings))
                }
                Err(e) => {
                    errors.push(e);
                    None
                }
            });
        let acme_manager = acme.as_ref().map(|(manager, _)| &**manager);

        // Certificates and keys are read anew at every build: a reload picks up renewed files.
        let mut tls: HashMap<Box<str>, Arc<ListenerTlsConfig>> = HashMap::new();
        for l in &config.listeners {
            let Some(listener_tls) = &l.tls else { continue };
            let previous = reuse.and_then(|g| g.tls.get(l.name.as_str()));
            match ListenerTlsConfig::build(listener_tls, previous.map(|p| &**p), acme_manager) {
                Ok(built) => {
                    tls.insert(l.name.as_str().into(), Arc::new(built));
                }
                Err(e) => errors.extend(e),
            }
        }

        // Each middleware once, shared by every chain naming it.
        let mut middlewares: HashMap<&str, Middleware> = HashMap::new();
        for (name, m) in &config.middlewares {
            match registry.build_middleware(&m.kind, &m.settings, &m.at) {
                Ok(built) => {
                    middlewares.insert(name.as_str(), built);
                }
                Err(e) => errors.extend(e),
            }
        }

        let mut upstreams: BTreeMap<String, Arc<Upstream>> = BTreeMap::new();
        for (name, cfg) in &config.upstreams {
            let previous = reuse.and_then(|g| g.upstreams.get(name));
            let built = match previous {
                // Unchanged, and so is its CA file: kept whole.
                Some(u) if **u.config() == **cfg && u.ca_file_unchanged() => Ok(Arc::clone(u)),
                // Servers whose address is unchanged keep their state (and pools, if made the
                // same way).
                _ => Upstream::new(Arc::clone(cfg), previous.map(|u| &**u)),
            };
            match built {
                Ok(u) => {
                    upstreams.insert(name.clone(), u);
                }
                Err(e) => errors.push(e),
            }
        }

        let mut apps: BTreeMap<&str, AppService> = BTreeMap::new();
        // Handlers learn where they are mounted (a WSGI app's SCRIPT_NAME); upstreams need not.
        let wants_mount = |app: &str| {
            config
                .apps
                .get(app)
                .is_some_and(|a| matches!(a.endpoint, EndpointConfig::Handler(_)))
        };
        for (name, app) in &config.apps {
            let endpoint = match &app.endpoint {
                EndpointConfig::Upstream(u) => match upstreams.get(u) {
                    Some(upstream) => upstream.service(),
                    // Failed to build: reported there.
                    None => continue,
                },
                EndpointConfig::Handler(h) => {
                    match registry.build_handler(&h.kind, &h.settings, &h.at) {
                        Ok(service) => service,
                        Err(e) => {
                            errors.extend(e);
                            continue;
                        }
                    }
                }
            };
            // A chain naming a middleware that failed to build is reported there, once.
            let Some(chain) = resolve(&app.middlewares, &middlewares) else {
                continue;
            };
            apps.insert(name.as_str(), chain::build(chain.into_iter(), endpoint));
        }
        if !errors.is_empty() {
            into_result(errors)?;
        }

        let mut tables: HashMap<&str, RouteTable<RouteTarget>> = config
            .listeners
            .iter()
            .map(|l| (l.name.as_str(), RouteTable::default()))
            .collect();
        for route in &config.routes {
            let Some(app) = apps.get(route.app.as_str()) else {
                continue;
            };
            // A route at `/` is mounted nowhere: no extension, which a reader takes as the empty
            // prefix it would be (and a request spared the insert).
            let prefix = route.path.trim_end_matches('/');
            let mount: Option<Arc<str>> =
                (wants_mount(&route.app) && !prefix.is_empty()).then(|| prefix.into());
            // Only an access log reads the router's panic signal, but any layer or handler of an
            // embedder's may: the app's own answer.
            let panic_signal = app.reads_tags();
            // The route as the metrics name it: its host, if it has one, and its path.
            let label = match &route.host {
                HostMatch::Any => route.path.clone(),
                HostMatch::Exact(host) => format!("{host}{}", route.path),
                HostMatch::Wildcard(suffix) => format!("*{suffix}{}", route.path),
            };
            for (listener, table) in tables.iter_mut() {
                let serves = route
                    .listeners
                    .as_ref()
                    .is_none_or(|names| names.iter().any(|n| n == listener));
                if serves {
                    let target = RouteTarget {
                        app: app.clone(),
                        app_name: route.app.as_str().into(),
                        strip_prefix: route.strip_prefix,
                        mount: mount.clone(),
                        stats: RouteStats::new(listener, &label, &route.app),
                        panic_signal,
                    };
                    table.insert(&route.host, &route.path, target);
                }
            }
        }
        // http-01 challenges are answered on every plain-HTTP listener, before its chain and
        // routes: no middleware (an IP filter, an auth) or route (a redirect to https) can stand
        // in the way of the ACME server.
        let http01 = acme
            .as_ref()
            .filter(|_| {
                config
                    .acme
                    .as_ref()
                    .is_some_and(|a| a.challenge == AcmeChallenge::Http01)
            })
            .map(|(manager, _)| manager.challenges());
        let mut entries = crate::fnv::NameMap::default();
        // A `request_id` in a listener's chain tags requests if any app may read the id.
        let apps_read_tags = apps.values().any(AppService::reads_tags);
        for l in &config.listeners {
            let table = tables.remove(l.name.as_str()).unwrap_or_default();
            let router = Router::new(table, &l.name);
            if let Some(chain) = resolve(&l.middlewares, &middlewares) {
                let challenges = http01.filter(|_| l.tls.is_none());
                let entry = if chain.is_empty() && challenges.is_none() {
                    Entry::Router(router)
                } else {
                    let service = router.into_service().with_tags_read(apps_read_tags);
                    let mut entry = chain::build(chain.into_iter(), service);
                    if let Some(challenges) = challenges {
                        entry = crate::acme::answer_http01(Arc::clone(challenges), entry);
                    }
                    Entry::Chain(entry)
                };
                entries.insert(l.name.as_str().into(), entry);
            }
        }

        // Built: from here on nothing fails. The ACME tasks follow the new config (those of
        // unchanged name sets run on), and a config without `[acme]` stops the previous ones.
        match &acme {
            Some((manager, settings)) => manager.sync(Arc::clone(settings), &config.listeners),
            None => {
                if let Some(previous) = reuse.and_then(|g| g.acme.as_ref()) {
                    previous.stop();
                }
            }
        }
        // One publisher for the files: the process's last config built.
        crate::metrics::global().set_certificates(
            "file",
            0,
            tls.iter()
                .flat_map(|(listener, t)| t.file_certificates(listener))
                .collect(),
        );
        Ok(Gateway {
            entries,
            upstreams,
            trusted_proxies: config.server.trusted_proxies.clone(),
            tls,
            acme: acme.map(|(manager, _)| manager),
        })
    }

    /// The service serving the requests of `listener`: its chain around its router.
    pub fn entry(&self, listener: &str) -> Option<&Entry> {
        self.entries.get(listener)
    }

    /// The TLS `listener` terminates, if it does.
    pub fn tls(&self, listener: &str) -> Option<&Arc<ListenerTlsConfig>> {
        // Most gateways terminate no TLS: no hashing then.
        if self.tls.is_empty() {
            return None;
        }
        self.tls.get(listener)
    }

    /// `server.trusted_proxies`: the peers whose forwarding headers are believed.
    pub fn trusted_proxies(&self) -> &[IpRange] {
        &self.trusted_proxies
    }
}

/// The built middlewares a chain names, outermost first; `None` if one of them failed to build.
fn resolve<'m>(
    names: &[String],
    built: &'m HashMap<&str, Middleware>,
) -> Option<Vec<&'m Middleware>> {
    names.iter().map(|n| built.get(n.as_str())).collect()
}
