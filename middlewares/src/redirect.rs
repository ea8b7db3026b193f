//! `redirect`: a request whose URL matches a regular expression is answered with a redirect built
//! from the regex's groups (a site that moved: `301`); any other passes on untouched.
//!
//! ```toml
//! [middlewares.moved]
//! kind = "redirect"
//! regex = "^https?://old\\.example\\.com/(.*)$"
//! to = "https://new.example.com/$1"
//! status = 301
//! ```
//!
//! As Traefik's `redirectRegex`: `regex` is matched against the request's full URL,
//! `scheme://host/path?query` (`http://old.example.com/a/b?c=d`), and the `Location` is that URL with
//! the first match replaced by `to`, where `$1`, `$2`... and `${name}` are the regex's groups (the
//! `regex` crate's syntax: linear time, no look-around; write `${1}x` for group 1 followed by `x`,
//! `$$` for a `$`). The query is part of what is matched, so `(.*)$` carries it over.
//!
//! A regex that begins with `^/` can only match a path: it is matched against the path alone, as
//! nginx's `rewrite ... permanent` does, and the query is carried over on its own: appended to the
//! result with `?` (with `&` if `to` already gives one), or dropped if `to` ends with `?`.
//! So `regex = "^/old/(.*)$"`, `to = "https://new.example.com/$1"` sends `/old/a?b=c` to
//! `https://new.example.com/a?b=c`.
//!
//! The URL's scheme is `https` for a request that came over TLS (or, from a trusted proxy, with
//! `X-Forwarded-Proto: https`), else `http`; its host is the request's `Host` (or the authority of
//! an HTTP/2 request).
//!
//! The status is `status` (301, 302, 303, 307 or 308) or, without it, as Traefik's `permanent`:
//! with `permanent = true`, `301` for GET and HEAD and `308` for the other methods (which must be
//! repeated as they were, body included), and by default `302` and `307`. A `Location` that the
//! replacement makes invalid (a control character cannot come from a valid URL and `to`, so in
//! practice never) is a `400` with the gateway error `bad_request`.
//!
//! ```
//! use parapet_middlewares::redirect::{RedirectLayer, RedirectRule, RedirectStatus, Regex};
//!
//! let layer = RedirectLayer::new(RedirectRule {
//!     regex: Regex::new("^/old/(.*)$").unwrap(),
//!     to: "https://new.example.com/$1".into(),
//!     status: RedirectStatus::Fixed(http::StatusCode::MOVED_PERMANENTLY),
//! });
//! # use tower::{Layer, ServiceExt};
//! # let app = tower::service_fn(|_| async {
//! #     Ok::<_, std::convert::Infallible>(http::Response::new(parapet_middlewares::Body::empty()))
//! # });
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let request = http::Request::get("/old/a?b=c").body(parapet_middlewares::Body::empty()).unwrap();
//! let response = layer.layer(app).oneshot(request).await.unwrap();
//! assert_eq!(response.status(), 301);
//! assert_eq!(response.headers()["location"], "https://new.example.com/a?b=c");
//! # });
//! ```
//!
//! A request that does not match costs no allocation (the URL is assembled in a buffer kept by the
//! thread). Most do not even cost the regex: when the regex is anchored at the start (`^...`), the
//! literal prefixes every match begins with are found once, when the layer is made (for
//! `^https?://old\.example\.com/`: `http://old.example.com/` and `https://old.example.com/`), and a
//! request whose URL (or path) begins with none of them passes on without its URL being assembled
//! or the regex run. A regex that is not anchored, or whose prefixes are unbounded or too many (a
//! `(?i-u)` host spells out every case), is run on every request.

use std::cell::RefCell;
use std::sync::Arc;

use bytes::Bytes;
use http::header::LOCATION;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
/// The regex type rules are written in (the `regex` crate's).
pub use regex::Regex;

use crate::guard::{answer, Guard, GuardLayer, Guarded};
use crate::{Body, ClientIp, GatewayError, GatewayErrorKind, TlsInfo};

/// The status of a redirect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectStatus {
    /// `status`: this one, whatever the method.
    Fixed(StatusCode),
    /// `permanent`: 301 (true) or 302 (false) for GET and HEAD; 308 or 307, which keep the method
    /// and the body, for the others.
    ByMethod {
        /// Whether the move is permanent.
        permanent: bool,
    },
}

impl RedirectStatus {
    fn for_method(self, method: &Method) -> StatusCode {
        let safe = method == Method::GET || method == Method::HEAD;
        match self {
            RedirectStatus::Fixed(status) => status,
            RedirectStatus::ByMethod { permanent: true } if safe => StatusCode::MOVED_PERMANENTLY,
            RedirectStatus::ByMethod { permanent: true } => StatusCode::PERMANENT_REDIRECT,
            RedirectStatus::ByMethod { permanent: false } if safe => StatusCode::FOUND,
            RedirectStatus::ByMethod { permanent: false } => StatusCode::TEMPORARY_REDIRECT,
        }
    }
}

/// A redirect rule: requests matching `regex` are sent to `to`.
#[derive(Clone, Debug)]
pub struct RedirectRule {
    /// Matched against the full URL, or against the path if it begins with `^/`. Read as
    /// `Regex::new` compiles it: the layer reads its pattern (`as_str`) for the literal prefixes of
    /// its matches, so flags are written in the pattern (`(?i-u)`), not set by a `RegexBuilder`.
    pub regex: Regex,
    /// The replacement of the match, with `$1`... for the groups.
    pub to: String,
    /// The status of the answer.
    pub status: RedirectStatus,
}

/// The guard behind [`RedirectLayer`].
#[derive(Clone, Debug)]
pub struct Redirect {
    rule: Arc<RedirectRule>,
    /// Whether the regex is matched against the path (it begins with `^/`).
    on_path: bool,
    /// What a URL (or path) the regex matches begins with.
    prefixes: Arc<Prefixes>,
}

/// More literal prefixes than this are not compared one by one: the regex is asked.
const MAX_PREFIXES: usize = 16;

/// The literal prefixes every match of a regex anchored at the start begins with, found once from
/// its pattern: a text that begins with none of them cannot match. `None`: no such set (a regex
/// not anchored, or prefixes unbounded or too many), every text may match.
#[derive(Clone, Debug, Default)]
pub(crate) struct Prefixes(Option<Box<[Box<[u8]>]>>);

impl Prefixes {
    /// The prefixes of `pattern`, as `Regex::new` reads it (the regex crate's own parser and
    /// literal extractor, with the same default flags).
    pub(crate) fn of(pattern: &str) -> Prefixes {
        use regex_syntax::hir::literal::{ExtractKind, Extractor};
        use regex_syntax::hir::Look;
        let Ok(hir) = regex_syntax::parse(pattern) else {
            return Prefixes(None);
        };
        // Anchored: every match begins at the start of the text (not `(?m)^`, which may also
        // match after a line break).
        if !hir.properties().look_set_prefix().contains(Look::Start) {
            return Prefixes(None);
        }
        // A finite set: every match begins with one of these (exact or not, a literal is a prefix
        // of the matches it stands for).
        let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
        match seq.literals() {
            Some(literals)
                if !literals.is_empty()
                    && literals.len() <= MAX_PREFIXES
                    && literals.iter().all(|l| !l.is_empty()) =>
            {
                Prefixes(Some(literals.iter().map(|l| l.as_bytes().into()).collect()))
            }
            _ => Prefixes(None),
        }
    }

    /// Whether the text made of `parts` end to end may match: `false` only if it begins with
    /// none of the prefixes.
    pub(crate) fn may_match(&self, parts: &[&[u8]]) -> bool {
        match &self.0 {
            None => true,
            Some(prefixes) => prefixes.iter().any(|p| starts_with(parts, p)),
        }
    }
}

/// Whether `parts`, end to end, begin with `prefix`.
fn starts_with(parts: &[&[u8]], mut prefix: &[u8]) -> bool {
    for part in parts {
        let n = part.len().min(prefix.len());
        // Byte by byte: a prefix that does not match mostly fails at its first bytes, sooner than
        // a call to `memcmp` returns.
        if !part[..n].iter().zip(&prefix[..n]).all(|(a, b)| a == b) {
            return false;
        }
        prefix = &prefix[n..];
        if prefix.is_empty() {
            return true;
        }
    }
    prefix.is_empty()
}

thread_local! {
    /// The request's URL, assembled here to be matched without an allocation per request.
    static URL: RefCell<String> = const { RefCell::new(String::new()) };
}

impl Redirect {
    /// The `Location` for this request, `None` if it does not match.
    pub fn location(&self, req: &Request<Body>) -> Option<String> {
        if self.on_path {
            return self.path_location(req.uri());
        }
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().as_bytes())
            .or_else(|| req.headers().get(http::header::HOST).map(|h| h.as_bytes()))
            .unwrap_or_default();
        // A Host parapet admitted is ASCII; anything else is not a host to match.
        let host = if host.is_ascii() {
            host
        } else {
            std::str::from_utf8(host).map_or(&b""[..], str::as_bytes)
        };
        let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        // Neither scheme begins a URL the regex may match: the request passes, without the scheme
        // being worked out, the URL assembled or the regex run.
        let may_match = |scheme: &str| {
            let parts = [scheme.as_bytes(), b"://", host, target.as_bytes()];
            self.prefixes.may_match(&parts)
        };
        if !may_match("http") && !may_match("https") {
            return None;
        }
        URL.with(|url| {
            let mut url = url.borrow_mut();
            url.clear();
            url.push_str(scheme(req));
            url.push_str("://");
            // UTF-8: ASCII, or checked above.
            url.push_str(std::str::from_utf8(host).unwrap_or_default());
            url.push_str(target);
            let rule = &*self.rule;
            if !rule.regex.is_match(&url) {
                return None;
            }
            Some(rule.regex.replace(&url, rule.to.as_str()).into_owned())
        })
    }

    /// nginx's way: the path is matched, the query carried over.
    fn path_location(&self, uri: &Uri) -> Option<String> {
        let rule = &*self.rule;
        let path = uri.path();
        if !self.prefixes.may_match(&[path.as_bytes()]) || !rule.regex.is_match(path) {
            return None;
        }
        let mut location = rule.regex.replace(path, rule.to.as_str()).into_owned();
        if location.ends_with('?') {
            // `to` ending with `?` drops the query.
            location.pop();
        } else if let Some(query) = uri.query() {
            location.push(if location.contains('?') { '&' } else { '?' });
            location.push_str(query);
        }
        Some(location)
    }
}

static X_FORWARDED_PROTO: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");

/// `https` for a request that came over TLS or, through a trusted proxy, says it did.
fn scheme(req: &Request<Body>) -> &'static str {
    if let Some(scheme) = req.uri().scheme_str() {
        return if scheme == "https" { "https" } else { "http" };
    }
    if req.extensions().get::<TlsInfo>().is_some() {
        return "https";
    }
    let trusted = ClientIp::of(req.extensions()).is_some_and(|c| c.peer_trusted);
    let forwarded_https = || {
        req.headers()
            .get(&X_FORWARDED_PROTO)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
    };
    if trusted && forwarded_https() {
        "https"
    } else {
        "http"
    }
}

impl Guard for Redirect {
    type State = ();

    fn request(&self, req: &mut Request<Body>) -> Result<(), Response<Body>> {
        let Some(location) = self.location(req) else {
            return Ok(());
        };
        match HeaderValue::from_maybe_shared(Bytes::from(location)) {
            Ok(location) => {
                let mut res = answer(self.rule.status.for_method(req.method()));
                res.headers_mut().insert(LOCATION, location);
                Err(res)
            }
            Err(_) => Err(GatewayError::new(GatewayErrorKind::BadRequest)
                .with_detail("redirect location is not a valid header value")
                .into_response()),
        }
    }

    fn response(&self, _: (), _: &mut Response<Body>) {}
}

/// Answers the requests that match a rule with a redirect.
#[derive(Clone, Debug)]
pub struct RedirectLayer {
    inner: GuardLayer<Redirect>,
}

impl RedirectLayer {
    /// A layer redirecting by `rule`.
    pub fn new(rule: RedirectRule) -> Self {
        let on_path = rule.regex.as_str().starts_with("^/");
        let prefixes = Arc::new(Prefixes::of(rule.regex.as_str()));
        Self {
            inner: GuardLayer::new(Redirect {
                rule: Arc::new(rule),
                on_path,
                prefixes,
            }),
        }
    }
}

impl RedirectLayer {
    /// The guard this layer applies: what a host runs without a layer of its own (parapet runs
    /// adjacent guards and interceptors in one future).
    pub fn guard(&self) -> &Redirect {
        self.inner.guard()
    }
}

impl<S> tower::Layer<S> for RedirectLayer {
    type Service = Guarded<Redirect, S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.inner.layer(inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{Layer, ServiceExt};

    fn layer(regex: &str, to: &str, status: RedirectStatus) -> RedirectLayer {
        RedirectLayer::new(RedirectRule {
            regex: Regex::new(regex).unwrap(),
            to: to.into(),
            status,
        })
    }

    const MOVED: RedirectStatus = RedirectStatus::Fixed(StatusCode::MOVED_PERMANENTLY);

    /// The status and Location of the answer, or 200 and the target the app saw.
    async fn call(layer: &RedirectLayer, req: Request<Body>) -> (u16, String) {
        let app = tower::service_fn(|req: Request<Body>| async move {
            let mut res = Response::new(Body::empty());
            res.headers_mut()
                .insert("x-target", req.uri().to_string().parse().unwrap());
            Ok::<_, Infallible>(res)
        });
        let res = layer.layer(app).oneshot(req).await.unwrap();
        let name = if res.status() == 200 {
            "x-target"
        } else {
            "location"
        };
        let value = res.headers()[name].to_str().unwrap().to_owned();
        (res.status().as_u16(), value)
    }

    fn get(target: &str, host: &str) -> Request<Body> {
        Request::get(target)
            .header("host", host)
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn the_full_url_is_matched_and_its_groups_fill_the_location() {
        let moved = layer(
            r"^https?://old\.example\.com/(.*)$",
            "https://new.example.com/$1",
            MOVED,
        );
        assert_eq!(
            call(&moved, get("/a/b?c=d&e", "old.example.com")).await,
            (301, "https://new.example.com/a/b?c=d&e".into())
        );
        // Another host, untouched.
        assert_eq!(
            call(&moved, get("/a/b?c=d", "other.example.com")).await,
            (200, "/a/b?c=d".into())
        );
        // http to https, with a named group.
        let https = layer(
            r"^http://(?P<rest>.*)$",
            "https://${rest}",
            RedirectStatus::ByMethod { permanent: true },
        );
        assert_eq!(
            call(&https, get("/x", "example.com:8080")).await,
            (301, "https://example.com:8080/x".into())
        );
        // Over TLS the URL is https: no match.
        let mut req = get("/x", "example.com");
        req.extensions_mut()
            .insert(TlsInfo(Arc::new(crate::TlsDetails {
                version: "TLSv1.3",
                sni: None,
            })));
        assert_eq!(call(&https, req).await, (200, "/x".into()));
        // An HTTP/2 request's authority is its host.
        let req = Request::get("http://h2.example.com/y")
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            call(&https, req).await,
            (301, "https://h2.example.com/y".into())
        );
    }

    #[tokio::test]
    async fn a_path_regex_matches_the_path_and_carries_the_query_over() {
        let moved = layer("^/old/(.*)$", "https://new.example.com/$1", MOVED);
        assert_eq!(
            call(&moved, get("/old/a/b?c=d", "x")).await,
            (301, "https://new.example.com/a/b?c=d".into())
        );
        assert_eq!(
            call(&moved, get("/old/a", "x")).await,
            (301, "https://new.example.com/a".into())
        );
        assert_eq!(
            call(&moved, get("/new/a?q", "x")).await,
            (200, "/new/a?q".into())
        );
        // `to` with its own query: the request's is appended with `&`; a final `?` drops it.
        let with_query = layer("^/old/(.*)$", "/new?page=$1", MOVED);
        assert_eq!(
            call(&with_query, get("/old/7?c=d", "x")).await,
            (301, "/new?page=7&c=d".into())
        );
        let no_query = layer("^/old/(.*)$", "/new/$1?", MOVED);
        assert_eq!(
            call(&no_query, get("/old/7?c=d", "x")).await,
            (301, "/new/7".into())
        );
    }

    #[tokio::test]
    async fn the_status_is_the_fixed_one_or_follows_the_method() {
        let permanent = layer(
            "^/old",
            "/new",
            RedirectStatus::ByMethod { permanent: true },
        );
        let temporary = layer(
            "^/old",
            "/new",
            RedirectStatus::ByMethod { permanent: false },
        );
        let fixed = layer(
            "^/old",
            "/new",
            RedirectStatus::Fixed(StatusCode::SEE_OTHER),
        );
        let post = || Request::post("/old").body(Body::empty()).unwrap();
        assert_eq!(call(&permanent, get("/old", "x")).await.0, 301);
        assert_eq!(call(&permanent, post()).await.0, 308);
        assert_eq!(call(&temporary, get("/old", "x")).await.0, 302);
        assert_eq!(call(&temporary, post()).await.0, 307);
        assert_eq!(call(&fixed, post()).await.0, 303);
    }

    /// The pre-filter never turns away a text the regex matches, however the text is cut in parts.
    #[test]
    fn the_prefix_filter_never_skips_a_text_the_regex_matches() {
        let texts = [
            "http://old.example.com/a?b",
            "https://old.example.com/",
            "https://OLD.Example.com/x",
            "http://other.example.com/a",
            "http://old.example.com",
            "/old/a",
            "/OLD/a",
            "/new/old/a",
            "x\n/old/a",
            "",
            "ab",
            "b",
            "bc",
            "ac",
            "\u{212A}ey",
            "éx",
            "ax",
            "key",
            "KEY",
            "http://www.old.example.com/",
        ];
        // (regex, whether the filter is active: it knows the prefixes)
        let cases = [
            (r"^https?://old\.example\.com/(.*)$", true),
            (r"^(http|https)://old\.example\.com/", true),
            (r"^https?://(www\.)?old\.example\.com/", true),
            (r"^(?:a|b)c", true),
            (r"^http://x|^https://old", true),
            (r"^http://x|https://old", false),
            (r"(?i-u)^https://old\.example\.com/", false),
            (r"(?i-u)^/old/", true),
            (r"(?i-u)^key", true),
            (r"^[éa]x|^\u{212A}", true),
            (r"(?m)^/old", false),
            (r"\A/old", true),
            (r"^/old/(.*)$", true),
            (r"old\.example", false),
            (r"^$", false),
            (r"^(|a)b", true),
            (r"^.*old", false),
            (r"^[a-c]c", true),
            (r"^\w+", false),
            (r"^http:/{2}old", true),
        ];
        for (pattern, active) in cases {
            let regex = Regex::new(pattern).unwrap();
            let prefixes = Prefixes::of(pattern);
            assert_eq!(prefixes.0.is_some(), active, "{pattern}: {prefixes:?}");
            for text in texts {
                let bytes = text.as_bytes();
                let whole = prefixes.may_match(&[bytes]);
                if regex.is_match(text) {
                    assert!(whole, "{pattern} matches {text:?}, the filter said no");
                }
                // Cut in parts anywhere, the answer is the same.
                for i in 0..=bytes.len() {
                    for j in i..=bytes.len() {
                        let parts = [&bytes[..i], &bytes[i..j], b"", &bytes[j..]];
                        assert_eq!(
                            prefixes.may_match(&parts),
                            whole,
                            "{pattern} {text:?} {i} {j}"
                        );
                    }
                }
            }
        }
        // An active filter does turn texts away.
        let prefixes = Prefixes::of(r"^https?://old\.example\.com/(.*)$");
        assert!(!prefixes.may_match(&[b"http", b"://", b"bench.local", b"/x?y=1"]));
        assert!(!prefixes.may_match(&[b"http", b"://", b"old.example.co"]));
        assert!(prefixes.may_match(&[b"https", b"://", b"old.example.com", b"/x"]));
    }

    #[tokio::test]
    async fn a_url_turned_away_by_the_prefixes_passes_and_one_they_admit_is_matched() {
        // Alternation at the start, optional parts: the prefixes are several.
        let moved = layer(
            r"^(http|https)://(www\.)?old\.example\.com/(?P<rest>.*)$",
            "https://new.example.com/${rest}",
            MOVED,
        );
        assert_eq!(
            call(&moved, get("/a", "www.old.example.com")).await,
            (301, "https://new.example.com/a".into())
        );
        assert_eq!(
            call(&moved, get("/a", "old.example.com")).await,
            (301, "https://new.example.com/a".into())
        );
        assert_eq!(
            call(&moved, get("/a", "new.example.com")).await,
            (200, "/a".into())
        );
        // A case-insensitive path regex: the filter knows every case.
        let path = layer(r"^/(?i-u:old)/(.*)$", "/new/$1", MOVED);
        assert_eq!(
            call(&path, get("/OlD/x?q", "h")).await,
            (301, "/new/x?q".into())
        );
        assert_eq!(
            call(&path, get("/older/x", "h")).await,
            (200, "/older/x".into())
        );
    }

    #[tokio::test]
    async fn the_scheme_of_a_trusted_proxy_is_believed_and_an_untrusted_ones_is_not() {
        let https_only = layer(r"^https://(.*)$", "https://elsewhere/$1", MOVED);
        let forwarded = |trusted: bool| {
            let mut req = Request::get("/p")
                .header("host", "h")
                .header("x-forwarded-proto", "https")
                .body(Body::empty())
                .unwrap();
            req.extensions_mut().insert(ClientIp {
                ip: "192.0.2.1".parse().unwrap(),
                peer_trusted: trusted,
            });
            req
        };
        assert_eq!(
            call(&https_only, forwarded(true)).await,
            (301, "https://elsewhere/h/p".into())
        );
        assert_eq!(call(&https_only, forwarded(false)).await.0, 200);
    }
}
