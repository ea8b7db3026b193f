//! `basic_auth`: HTTP Basic authentication (RFC 7617) against an htpasswd file of bcrypt entries.
//!
//! ```toml
//! [middlewares.admin_auth]
//! kind = "basic_auth"
//! realm = "admin"
//! users = "config/htpasswd"    # `htpasswd -B` lines: user:$2y$...
//! forward = false              # the default: Authorization is not sent upstream
//! ```
//!
//! The file is read when the config is built (so with every reload) and must hold only bcrypt
//! entries (`$2a$`, `$2b$`, `$2y$`: what `htpasswd -B` and Caddy's `hash-password` write); blank
//! lines and `#` comments are skipped. A request without valid credentials is answered `401` with
//! `WWW-Authenticate: Basic realm="...", charset="UTF-8"` and the gateway error `unauthorized`, and
//! never reaches the app. A request with them passes on, its `Authorization` header removed (the
//! upstream has no use for the password) unless `forward = true`.
//!
//! bcrypt is slow on purpose (tens of milliseconds at cost 10), and runs on the request's thread. So
//! that it is paid once per user and password rather than per request, a verified pair is
//! remembered for [`CACHE_TTL`] as a keyed 128-bit hash of the pair (never the password itself), at
//! most [`CACHE_MAX`] pairs per layer. A changed file (a reload) starts with an empty cache.
//!
//! ```
//! use parapet_middlewares::basic_auth::{htpasswd, BasicAuthLayer};
//!
//! let users = htpasswd("# admins\nalice:$2y$04$abcdefghijklmnopqrstuuJ0J0mHdbQlRDiRF2rM8CQ3lScf4BQ1G\n").unwrap();
//! let layer = BasicAuthLayer::new("admin", users, false);
//! # let _ = layer;
//! ```

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderValue, Request, Response};

use crate::guard::{Guard, GuardLayer, Guarded};
use crate::{Body, GatewayError, GatewayErrorKind};

/// How long a verified user and password are remembered.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// The most pairs remembered per layer.
pub const CACHE_MAX: usize = 10_000;

/// Reads htpasswd text: `user:hash` lines with bcrypt hashes; blank lines and `#` comments skipped.
/// The error names the first bad line (1-based).
pub fn htpasswd(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut users = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            return Err(format!("line {}: expected \"user:hash\"", i + 1));
        };
        if user.is_empty() {
            return Err(format!("line {}: empty user name", i + 1));
        }
        let bcrypt = ["$2a$", "$2b$", "$2y$", "$2x$"]
            .iter()
            .any(|p| hash.starts_with(p));
        if !bcrypt || hash.parse::<bcrypt::HashParts>().is_err() {
            return Err(format!(
                "line {}: the hash of {user:?} is not bcrypt (make it with `htpasswd -B`)",
                i + 1
            ));
        }
        users.push((user.to_owned(), hash.to_owned()));
    }
    Ok(users)
}

#[derive(Debug)]
struct Users {
    hashes: HashMap<String, String>,
    challenge: HeaderValue,
    forward: bool,
    keys: (RandomState, RandomState),
    verified: Mutex<HashMap<u128, Instant>>,
}

impl Users {
    fn fingerprint(&self, user: &str, password: &[u8]) -> u128 {
        let half = |state: &RandomState| {
            let mut h = state.build_hasher();
            user.hash(&mut h);
            password.hash(&mut h);
            h.finish()
        };
        (u128::from(half(&self.keys.0)) << 64) | u128::from(half(&self.keys.1))
    }

    /// Whether `Authorization: Basic ...` carries a known user and its password.
    fn admits(&self, authorization: &HeaderValue) -> bool {
        let value = authorization.as_bytes();
        // The scheme is case-insensitive (RFC 9110 §11.1).
        if value.len() < 6 || !value[..6].eq_ignore_ascii_case(b"basic ") {
            return false;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(value[6..].trim_ascii())
        else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return false;
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let Ok(user) = std::str::from_utf8(user) else {
            return false;
        };
        let Some(hash) = self.hashes.get(user) else {
            return false;
        };
        let fingerprint = self.fingerprint(user, password);
        let now = Instant::now();
        {
            let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if verified.get(&fingerprint).is_some_and(|until| *until > now) {
                return true;
            }
        }
        if !bcrypt::verify(password, hash).unwrap_or(false) {
            return false;
        }
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= CACHE_MAX {
            verified.retain(|_, until| *until > now);
            if verified.len() >= CACHE_MAX {
                verified.clear();
            }
        }
        verified.insert(fingerprint, now + CACHE_TTL);
        true
    }
}

/// The guard behind [`BasicAuthLayer`].
#[derive(Clone, Debug)]
pub struct BasicAuth {
    users: Arc<Users>,
}

impl Guard for BasicAuth {
    type State = ();

    fn request(&self, req: &mut Request<Body>) -> Result<(), Response<Body>> {
        let admitted = req
            .headers()
            .get(AUTHORIZATION)
            .is_some_and(|v| self.users.admits(v));
        if admitted {
            if !self.users.forward {
                req.headers_mut().remove(AUTHORIZATION);
            }
            return Ok(());
        }
        let mut res = GatewayError::new(GatewayErrorKind::Unauthorized).into_response();
        res.headers_mut()
            .insert(WWW_AUTHENTICATE, self.users.challenge.clone());
        Err(res)
    }

    fn response(&self, _: (), _: &mut Response<Body>) {}
}

/// Asks for a user and password of an htpasswd file, `401` without them.
#[derive(Clone, Debug)]
pub struct BasicAuthLayer {
    inner: GuardLayer<BasicAuth>,
}

impl BasicAuthLayer {
    /// A layer admitting `users` (name and bcrypt hash), asking for `realm`; `forward` keeps the
    /// `Authorization` header on the request going on.
    pub fn new(realm: &str, users: Vec<(String, String)>, forward: bool) -> Self {
        // A quoted-string (RFC 9110 §5.6.4): `"` and `\` escaped, control characters dropped.
        let mut quoted = String::with_capacity(realm.len() + 32);
        quoted.push_str("Basic realm=\"");
        for c in realm.chars().filter(|c| !c.is_control()) {
            if c == '"' || c == '\\' {
                quoted.push('\\');
            }
            quoted.push(c);
        }
        quoted.push_str("\", charset=\"UTF-8\"");
        let challenge = HeaderValue::from_str(&quoted)
            .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"parapet\""));
        Self {
            inner: GuardLayer::new(BasicAuth {
                users: Arc::new(Users {
                    hashes: users.into_iter().collect(),
                    challenge,
                    forward,
                    keys: (RandomState::new(), RandomState::new()),
                    verified: Mutex::default(),
                }),
            }),
        }
    }
}

impl<S> tower::Layer<S> for BasicAuthLayer {
    type Service = Guarded<BasicAuth, S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.inner.layer(inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{Layer, ServiceExt};

    fn basic(user: &str, password: &str) -> String {
        let pair = format!("{user}:{password}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    fn layer(forward: bool) -> BasicAuthLayer {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let users = htpasswd(&format!("# admins\n\nalice:{hash}\n")).unwrap();
        BasicAuthLayer::new("admin \"zone\"", users, forward)
    }

    async fn call(layer: &BasicAuthLayer, auth: Option<&str>) -> Response<Body> {
        let inner = tower::service_fn(|req: Request<Body>| async move {
            let mut res = Response::new(Body::empty());
            if let Some(v) = req.headers().get(AUTHORIZATION) {
                res.headers_mut().insert("x-got-authorization", v.clone());
            }
            Ok::<_, Infallible>(res)
        });
        let mut req = Request::get("/");
        if let Some(auth) = auth {
            req = req.header(AUTHORIZATION, auth);
        }
        layer
            .layer(inner)
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn without_valid_credentials_the_answer_is_401_with_the_challenge() {
        let layer = layer(false);
        for auth in [
            None,
            Some(basic("alice", "wrong")),
            Some(basic("bob", "s3cret")),
            Some("Bearer x".to_owned()),
            Some("Basic !!!".to_owned()),
        ] {
            let res = call(&layer, auth.as_deref()).await;
            assert_eq!(res.status(), 401, "{auth:?}");
            assert_eq!(
                res.headers()["www-authenticate"],
                "Basic realm=\"admin \\\"zone\\\"\", charset=\"UTF-8\""
            );
            assert_eq!(
                res.extensions().get::<GatewayError>().unwrap().kind(),
                GatewayErrorKind::Unauthorized
            );
        }
    }

    #[tokio::test]
    async fn valid_credentials_pass_without_the_authorization_header_unless_forwarded() {
        let res = call(&layer(false), Some(&basic("alice", "s3cret"))).await;
        assert_eq!(res.status(), 200);
        assert!(res.headers().get("x-got-authorization").is_none());
        let res = call(&layer(true), Some(&basic("alice", "s3cret"))).await;
        assert_eq!(res.status(), 200);
        assert!(res.headers().get("x-got-authorization").is_some());
    }

    #[tokio::test]
    async fn a_verified_pair_is_remembered_and_a_wrong_one_is_not() {
        let layer = layer(false);
        let good = basic("alice", "s3cret");
        assert_eq!(call(&layer, Some(&good)).await.status(), 200);
        assert_eq!(
            call(&layer, Some(&basic("alice", "nope"))).await.status(),
            401
        );
        let users = &layer.inner.guard().users;
        assert_eq!(users.verified.lock().unwrap().len(), 1);
        // Remembered: a second request does not run bcrypt (timed against one verification).
        let t = Instant::now();
        for _ in 0..100 {
            assert_eq!(call(&layer, Some(&good)).await.status(), 200);
        }
        let cached = t.elapsed();
        let t = Instant::now();
        assert!(!bcrypt::verify("x", users.hashes.get("alice").unwrap()).unwrap());
        assert!(cached < t.elapsed() * 100, "{cached:?}");
    }

    #[test]
    fn htpasswd_refuses_what_is_not_bcrypt_naming_the_line() {
        assert!(htpasswd("alice:$apr1$abc$def\n")
            .unwrap_err()
            .starts_with("line 1:"));
        assert!(htpasswd("\nbob\n").unwrap_err().starts_with("line 2:"));
        assert!(htpasswd(":$2y$04$x").is_err());
    }
}
