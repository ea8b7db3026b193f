//! The middleware catalogue's kinds: `request_id`, `cors`, `ip_filter`, `rate_limit`, `basic_auth`,
//! `forward_auth`, `rewrite`, `redirect`.
//!
//! As the other built-in kinds: parse (pure, errors located at their key), check (no side effects),
//! build (the layer).

use http::{HeaderName, Method};
use parapet_middlewares::basic_auth::{htpasswd, BasicAuthLayer, Check};
use parapet_middlewares::cors::{CorsConfig, CorsLayer};
use parapet_middlewares::forward_auth::{ForwardAuthConfig, ForwardAuthLayer};
use parapet_middlewares::ip::IpRange;
use parapet_middlewares::ip_filter::IpFilterLayer;
use parapet_middlewares::rate_limit::{RateKey, RateLimitConfig, RateLimitLayer};
use parapet_middlewares::redirect::{RedirectLayer, RedirectRule, RedirectStatus};
use parapet_middlewares::request_id::RequestIdLayer;
use parapet_middlewares::rewrite::{Regex, RewriteLayer};

use crate::chain::Middleware;
use crate::config::{ConfigError, Located, Table, Value};
use crate::registry::Registry;
use crate::service::AppService;

use super::no_check;

/// Registers the catalogue's kinds.
pub(super) fn register(registry: &mut Registry) {
    registry
        .register_middleware_kind("request_id", request_id, no_check, |r: &RequestId, _| {
            Ok(Middleware::from_request_ids(
                RequestIdLayer::new(r.header.clone()).interceptor().clone(),
            ))
        })
        .register_middleware_kind("cors", cors, no_check, |c: &CorsConfig, _| {
            Ok(Middleware::from_guard(CorsLayer::new(c.clone()).guard().clone()).reads_no_tags())
        })
        .register_middleware_kind("ip_filter", ip_filter, no_check, |f: &IpFilter, _| {
            Ok(Middleware::from_guard(
                IpFilterLayer::new(f.allow.clone(), f.deny.clone())
                    .guard()
                    .clone(),
            )
            .reads_no_tags())
        })
        .register_middleware_kind(
            "rate_limit",
            rate_limit,
            no_check,
            |r: &RateLimitConfig, at| {
                // Keyed by the instance's place: a reload keeping it keeps its counts.
                Ok(Middleware::from_guard(
                    RateLimitLayer::shared(&at.key, r.clone()).guard().clone(),
                )
                .reads_no_tags())
            },
        )
        .register_middleware_kind(
            "basic_auth",
            basic_auth,
            |b: &BasicAuth, _| read_users(&b.users).err().into_iter().collect(),
            |b: &BasicAuth, _| {
                let users = read_users(&b.users).map_err(|e| vec![e])?;
                Ok(
                    basic_auth_middleware(BasicAuthLayer::new(&b.realm, users, b.forward))
                        .reads_no_tags(),
                )
            },
        )
        .register_middleware_kind(
            "forward_auth",
            forward_auth,
            no_check,
            |f: &ForwardAuthConfig, _| {
                Ok(Middleware::from_layer(ForwardAuthLayer::new(f.clone())).reads_no_tags())
            },
        )
        .register_middleware_kind("rewrite", rewrite, no_check, |r: &Rewrite, at| {
            // Compiled once already by the parse step: they cannot fail here.
            let compile = |s: &str| Regex::new(s).map_err(|e| vec![at.error(e.to_string())]);
            let path = match &r.path {
                Some((regex, to)) => Some(RewriteLayer::new(compile(regex)?, to.clone())),
                None => None,
            };
            let redirect = match &r.redirect {
                Some(rule) => Some(rule.layer(compile(&rule.regex)?)),
                None => None,
            };
            // The redirect is asked first: a request it answers is not rewritten.
            Ok(match (redirect, path) {
                (Some(redirect), Some(path)) => Middleware::from_guard(redirect.guard().clone())
                    .then(Middleware::from_guard(path.guard().clone())),
                (Some(redirect), None) => Middleware::from_guard(redirect.guard().clone()),
                (None, Some(path)) => Middleware::from_guard(path.guard().clone()),
                (None, None) => return Err(vec![at.error("a rewrite needs `path` or `redirect`")]),
            }
            .reads_no_tags())
        })
        .register_middleware_kind("redirect", redirect, no_check, |r: &Redirect, at| {
            let regex = Regex::new(&r.regex).map_err(|e| vec![at.error(e.to_string())])?;
            Ok(Middleware::from_guard(r.layer(regex).guard().clone()).reads_no_tags())
        });
}

/// `basic_auth` around an app: an admitted request goes straight to the app's own future (no
/// future, no box of this layer's); a refusal is answered at once; a password to verify waits for
/// bcrypt, off the workers, in a future of its own.
fn basic_auth_middleware(layer: BasicAuthLayer) -> Middleware {
    Middleware::from_wrap(move |inner: AppService| {
        let layer = layer.clone();
        AppService::from_fn(move |mut req| match layer.check(&mut req) {
            Check::Admitted => inner.handle(req),
            Check::Refused(answer) => Box::pin(std::future::ready(Ok(answer))),
            Check::Verify(verification) => {
                let inner = inner.clone();
                Box::pin(async move {
                    match verification.run(req).await {
                        Ok(req) => inner.handle(req).await,
                        Err(answer) => Ok(answer),
                    }
                })
            }
        })
    })
}

/// The settings of a `request_id` layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId {
    /// `header` (default `x-request-id`).
    pub header: HeaderName,
}

fn request_id(t: &mut Table<'_>) -> Option<RequestId> {
    let header = match t.get("header") {
        None => HeaderName::from_static("x-request-id"),
        Some(v) => header_name(&v)?,
    };
    Some(RequestId { header })
}

/// A header name, located if invalid.
fn header_name(v: &Value<'_>) -> Option<HeaderName> {
    let s = v.str()?;
    match HeaderName::from_bytes(s.as_bytes()) {
        Ok(name) => Some(name),
        Err(_) => {
            v.error(format!("invalid header name {s:?}"));
            None
        }
    }
}

/// A list of strings at `key` (`None` if absent), each checked by `valid` (an error message if
/// not); `None` outside if any is wrong, each reported at its place.
fn checked_list(
    t: &mut Table<'_>,
    key: &str,
    valid: impl Fn(&str) -> Result<(), String>,
) -> Option<Option<Vec<String>>> {
    let Some(v) = t.get(key) else {
        return Some(None);
    };
    let items = v.str_list()?;
    let mut ok = true;
    let mut out = Vec::with_capacity(items.len());
    for (s, item) in items {
        match valid(s) {
            Ok(()) => out.push(s.to_owned()),
            Err(msg) => {
                item.error(msg);
                ok = false;
            }
        }
    }
    ok.then_some(Some(out))
}

fn valid_header_name(s: &str) -> Result<(), String> {
    HeaderName::from_bytes(s.as_bytes())
        .map(drop)
        .map_err(|_| format!("invalid header name {s:?}"))
}

/// An origin as a browser sends it (Fetch §3.1, RFC 6454 §6.2): `scheme://host[:port]`, no path.
fn valid_origin(s: &str) -> Result<(), String> {
    let ok = s == "*"
        || s.split_once("://").is_some_and(|(scheme, rest)| {
            !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
                && !rest.is_empty()
                && !rest.contains(['/', '?', '#', ' ', ','])
                && http::HeaderValue::from_str(s).is_ok()
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid origin {s:?}: expected \"*\" or \"scheme://host[:port]\" without a path, like \"https://app.example.com\""
        ))
    }
}

fn cors(t: &mut Table<'_>) -> Option<CorsConfig> {
    let mut config = CorsConfig::default();
    // Every key is read before giving up, so that every error is reported.
    let origins = checked_list(t, "origins", valid_origin);
    let methods = checked_list(t, "methods", |s| {
        if s == "*" || Method::from_bytes(s.as_bytes()).is_ok() {
            Ok(())
        } else {
            Err(format!("invalid method {s:?}"))
        }
    });
    let headers = checked_list(t, "headers", |s| {
        if s == "*" {
            Ok(())
        } else {
            valid_header_name(s)
        }
    });
    let expose = checked_list(t, "expose", valid_header_name);
    let credentials = t.get("credentials").map(|v| v.bool());
    let max_age = t.get("max_age").map(|v| v.duration());
    if let Some(origins) = origins? {
        config.origins = origins;
    }
    if let Some(methods) = methods? {
        config.methods = methods;
    }
    if let Some(headers) = headers? {
        config.headers = headers;
    }
    if let Some(expose) = expose? {
        config.expose = expose;
    }
    if let Some(credentials) = credentials {
        config.credentials = credentials?;
    }
    if let Some(max_age) = max_age {
        config.max_age = Some(max_age?);
    }
    Some(config)
}

/// The settings of an `ip_filter` layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpFilter {
    /// `allow`: the blocks admitted (every address if empty).
    pub allow: Vec<IpRange>,
    /// `deny`: the blocks refused, whatever `allow` says.
    pub deny: Vec<IpRange>,
}

fn ip_filter(t: &mut Table<'_>) -> Option<IpFilter> {
    let mut ranges = |key: &str| -> Option<Vec<IpRange>> {
        let Some(v) = t.get(key) else {
            return Some(Vec::new());
        };
        let mut ok = true;
        let mut out = Vec::new();
        for (s, item) in v.str_list()? {
            match s.parse::<IpRange>() {
                Ok(range) => out.push(range),
                Err(msg) => {
                    item.error(msg);
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    };
    let allow = ranges("allow");
    let deny = ranges("deny");
    Some(IpFilter {
        allow: allow?,
        deny: deny?,
    })
}

fn rate_limit(t: &mut Table<'_>) -> Option<RateLimitConfig> {
    let rate = t.required("rate").and_then(|v| {
        let s = v.str()?;
        let parsed = s.split_once('/').and_then(|(n, unit)| {
            let n = n.trim().parse::<u64>().ok().filter(|n| *n > 0)?;
            let per = match unit.trim() {
                "s" => 1,
                "m" => 60,
                "h" => 3600,
                _ => return None,
            };
            Some((n, std::time::Duration::from_secs(per)))
        });
        if parsed.is_none() {
            v.error(format!(
                "invalid rate {s:?}: expected \"N/s\", \"N/m\" or \"N/h\" with N at least 1, like \"100/s\""
            ));
        }
        parsed
    });
    let burst = match t.get("burst") {
        None => Some(1),
        Some(v) => v.int_in(1..=1_000_000_000).map(|n| n as u64),
    };
    let key = match t.get("key") {
        None => Some(RateKey::ClientIp),
        Some(v) => v.str().and_then(|s| {
            let key = match s.strip_prefix("header:") {
                _ if s == "client_ip" => Some(RateKey::ClientIp),
                Some(name) => HeaderName::from_bytes(name.as_bytes())
                    .ok()
                    .map(RateKey::Header),
                None => None,
            };
            if key.is_none() {
                v.error(format!(
                    "invalid key {s:?}: expected \"client_ip\" or \"header:NAME\" with a header name"
                ));
            }
            key
        }),
    };
    let (count, per) = rate?;
    Some(RateLimitConfig {
        count,
        per,
        burst: burst?,
        key: key?,
    })
}

/// The settings of a `basic_auth` layer.
#[derive(Clone, Debug, PartialEq)]
pub struct BasicAuth {
    /// `realm` (default `"parapet"`).
    pub realm: String,
    /// `users`: the htpasswd file, read when the config is built.
    pub users: Located<std::path::PathBuf>,
    /// `forward`: whether `Authorization` goes on upstream (default false).
    pub forward: bool,
}

fn basic_auth(t: &mut Table<'_>) -> Option<BasicAuth> {
    let realm = match t.get("realm") {
        None => Some("parapet".to_owned()),
        Some(v) => v.str().map(str::to_owned),
    };
    let users = t.required("users").and_then(|v| {
        v.str().map(|s| Located {
            value: std::path::PathBuf::from(s),
            at: v.location(),
        })
    });
    let forward = match t.get("forward") {
        None => Some(false),
        Some(v) => v.bool(),
    };
    Some(BasicAuth {
        realm: realm?,
        users: users?,
        forward: forward?,
    })
}

/// Reads and parses an htpasswd file, the error at the `users` key.
fn read_users(path: &Located<std::path::PathBuf>) -> Result<Vec<(String, String)>, ConfigError> {
    let text = std::fs::read_to_string(&path.value).map_err(|e| {
        path.at
            .error(format!("cannot read htpasswd file {:?}: {e}", path.value))
    })?;
    htpasswd(&text).map_err(|e| {
        path.at
            .error(format!("htpasswd file {:?}: {e}", path.value))
    })
}

/// The settings of a `rewrite` layer: `path = { regex, to }`, `redirect = { regex, to, status }`,
/// either or both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewrite {
    /// `path.regex` (checked to compile) and `path.to`, with `$1`... for the groups.
    pub path: Option<(String, String)>,
    /// `redirect`: a redirect asked before the path is rewritten.
    pub redirect: Option<Redirect>,
}

fn rewrite(t: &mut Table<'_>) -> Option<Rewrite> {
    let path = t.get("path").map(|v| {
        let mut path = v.table()?;
        let rule = regex_rule(&mut path);
        path.finish();
        rule
    });
    let redirect = t.get("redirect").map(|v| {
        let mut table = v.table()?;
        let rule = redirect(&mut table);
        table.finish();
        rule
    });
    if path.is_none() && redirect.is_none() {
        // Reported as the missing key of the common case.
        t.required("path");
        return None;
    }
    Some(Rewrite {
        path: path.map_or(Some(None), |p| p.map(Some))?,
        redirect: redirect.map_or(Some(None), |r| r.map(Some))?,
    })
}

/// The settings of a `redirect` layer (or of a `rewrite`'s `redirect`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// `regex`, checked to compile.
    pub regex: String,
    /// `to`, with `$1`... for the groups.
    pub to: String,
    /// `status`, or `permanent` (Traefik's).
    pub status: RedirectStatus,
}

impl Redirect {
    fn layer(&self, regex: Regex) -> RedirectLayer {
        RedirectLayer::new(RedirectRule {
            regex,
            to: self.to.clone(),
            status: self.status,
        })
    }
}

fn redirect(t: &mut Table<'_>) -> Option<Redirect> {
    let rule = regex_rule(t);
    let to_valid = match &rule {
        Some((_, to)) if to.is_empty() || http::HeaderValue::from_str(to).is_err() => {
            Some(format!("invalid redirect target {to:?}"))
        }
        _ => None,
    };
    let status = t.get("status").map(|v| match v.int_in(300..=399) {
        Some(n @ (301 | 302 | 303 | 307 | 308)) => http::StatusCode::from_u16(n as u16).ok(),
        Some(_) => {
            v.error("a redirect status is one of 301, 302, 303, 307, 308");
            None
        }
        None => None,
    });
    let permanent = t.get("permanent").map(|v| {
        if status.is_some() {
            v.error("give either `status` or `permanent`, not both");
            return None;
        }
        v.bool()
    });
    let status = match (status, permanent) {
        (Some(status), _) => RedirectStatus::Fixed(status?),
        (None, Some(permanent)) => RedirectStatus::ByMethod {
            permanent: permanent?,
        },
        (None, None) => RedirectStatus::ByMethod { permanent: false },
    };
    if let Some(message) = to_valid {
        if let Some(v) = t.get("to") {
            v.error(message);
        }
        return None;
    }
    let (regex, to) = rule?;
    Some(Redirect { regex, to, status })
}

/// A `{ regex, to }` table: the regex compiled (its error at `regex`) and `to`.
pub(super) fn regex_rule(t: &mut Table<'_>) -> Option<(String, String)> {
    let regex = t.required("regex").and_then(|v| {
        let s = v.str()?;
        match Regex::new(s) {
            Ok(_) => Some(s.to_owned()),
            Err(e) => {
                v.error(format!("invalid regex {s:?}: {e}"));
                None
            }
        }
    });
    let to = t.required("to").and_then(|v| v.str().map(str::to_owned));
    Some((regex?, to?))
}

fn forward_auth(t: &mut Table<'_>) -> Option<ForwardAuthConfig> {
    let url = t.required("url").and_then(|v| {
        let s = v.str()?;
        match s.parse::<http::Uri>() {
            Ok(url) if url.scheme_str() == Some("http") && url.host().is_some_and(|h| !h.is_empty()) => {
                Some(url)
            }
            _ => {
                v.error(format!(
                    "invalid url {s:?}: expected \"http://host[:port]/path\" (the service is asked over plain HTTP)"
                ));
                None
            }
        }
    });
    let copy_headers = checked_list(t, "copy_headers", valid_header_name).map(|list| {
        list.unwrap_or_default()
            .iter()
            .filter_map(|s| HeaderName::from_bytes(s.as_bytes()).ok())
            .collect()
    });
    let timeout = match t.get("timeout") {
        None => Some(std::time::Duration::from_secs(5)),
        Some(v) => v.duration(),
    };
    Some(ForwardAuthConfig {
        url: url?,
        copy_headers: copy_headers?,
        timeout: timeout?,
    })
}
