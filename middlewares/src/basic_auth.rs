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
//! bcrypt is slow on purpose (tens of milliseconds at cost 10), so it never runs on an async worker:
//! a verification is handed to tokio's blocking threads (`spawn_blocking`) and the request waits for
//! it without holding its worker, which goes on serving other requests. So that its cost is paid
//! once per user and password rather than per request, a verified pair is remembered for
//! [`CACHE_TTL`] as a keyed 128-bit hash (SipHash, two random keys per layer) of the credentials as
//! sent, the pair in base64 (never the password itself), at most [`CACHE_MAX`] pairs per layer.
//! Standard base64 spells a pair one way only (canonical padding, no stray bits), so the text sent
//! stands for the pair. A remembered pair is admitted on the worker at once, by that hash alone:
//! no decoding, no allocation, one lookup in a map that takes the hash as it is. Credentials not
//! remembered are decoded (on the stack) and their user looked up. A changed file (a reload) starts
//! with an empty cache. A wrong password is not remembered: each attempt costs a verification.
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
use std::future::Future;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::{DecodeSliceError, Engine as _};
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tokio::task::JoinHandle;
use tower::Service;

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
    verified: Mutex<HashMap<u128, Instant, BuildHasherDefault<Fingerprinted>>>,
}

/// The verified pairs' hasher: a fingerprint is already a keyed hash, uniform and out of a
/// client's reach, so its low 64 bits are taken as they are.
#[derive(Default)]
struct Fingerprinted(u64);

impl Hasher for Fingerprinted {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is called (a `u128` key); this keeps any other use well defined.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// What the `Authorization` header of a request says.
enum Verdict {
    /// A user and password verified not long ago.
    Admitted,
    /// No credentials, malformed ones, or an unknown user.
    Refused,
    /// A known user with a password not verified lately: bcrypt must say.
    Verify(Pending),
}

/// A verification to run off the async workers.
struct Pending {
    fingerprint: u128,
    password: Vec<u8>,
    hash: String,
}

/// Credentials longer than this (in base64) are decoded onto the heap rather than the stack.
const STACK_DECODE: usize = 256;

impl Users {
    /// The keyed 128-bit hash of credentials as sent (their base64 text).
    fn fingerprint(&self, encoded: &[u8]) -> u128 {
        let half = |state: &RandomState| {
            let mut h = state.build_hasher();
            h.write(encoded);
            h.finish()
        };
        (u128::from(half(&self.keys.0)) << 64) | u128::from(half(&self.keys.1))
    }

    /// Judges `Authorization: Basic ...` as far as can be done without bcrypt.
    fn check(&self, authorization: Option<&HeaderValue>) -> Verdict {
        let Some(value) = authorization.map(HeaderValue::as_bytes) else {
            return Verdict::Refused;
        };
        // The scheme is case-insensitive (RFC 9110 §11.1).
        if value.len() < 6 || !value[..6].eq_ignore_ascii_case(b"basic ") {
            return Verdict::Refused;
        }
        let encoded = value[6..].trim_ascii();
        let fingerprint = self.fingerprint(encoded);
        if self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fingerprint)
            .is_some_and(|until| *until > Instant::now())
        {
            return Verdict::Admitted;
        }
        // Not remembered: decoded on the stack in the common case, no allocation.
        let mut stack = [0u8; STACK_DECODE];
        let heap;
        let decoded = match STANDARD.decode_slice(encoded, &mut stack) {
            Ok(n) => &stack[..n],
            Err(DecodeSliceError::OutputSliceTooSmall) => match STANDARD.decode(encoded) {
                Ok(v) => {
                    heap = v;
                    &heap[..]
                }
                Err(_) => return Verdict::Refused,
            },
            Err(DecodeSliceError::DecodeError(_)) => return Verdict::Refused,
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return Verdict::Refused;
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let Ok(user) = std::str::from_utf8(user) else {
            return Verdict::Refused;
        };
        let Some(hash) = self.hashes.get(user) else {
            return Verdict::Refused;
        };
        Verdict::Verify(Pending {
            fingerprint,
            password: password.to_vec(),
            hash: hash.clone(),
        })
    }

    /// Remembers a verified pair for [`CACHE_TTL`].
    fn remember(&self, fingerprint: u128) {
        let now = Instant::now();
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= CACHE_MAX {
            verified.retain(|_, until| *until > now);
            if verified.len() >= CACHE_MAX {
                verified.clear();
            }
        }
        verified.insert(fingerprint, now + CACHE_TTL);
    }

    /// The `401` with the challenge.
    fn refusal(&self) -> Response<Body> {
        let mut res = GatewayError::new(GatewayErrorKind::Unauthorized).into_response();
        res.headers_mut()
            .insert(WWW_AUTHENTICATE, self.challenge.clone());
        res
    }

    /// The request as it goes on once admitted.
    fn admitted(&self, mut req: Request<Body>) -> Request<Body> {
        if !self.forward {
            req.headers_mut().remove(AUTHORIZATION);
        }
        req
    }
}

/// Asks for a user and password of an htpasswd file, `401` without them.
#[derive(Clone, Debug)]
pub struct BasicAuthLayer {
    users: Arc<Users>,
}

/// What [`BasicAuthLayer::check`] says of a request, for a host that calls the inner service
/// itself (parapet hands an admitted request straight to the app's own future: no future of this
/// layer's, no box).
#[derive(Debug)]
pub enum Check {
    /// Credentials verified not long ago: the request goes on as it now is (its `Authorization`
    /// removed unless forwarded).
    Admitted,
    /// The answer: `401` with the challenge.
    Refused(Response<Body>),
    /// A known user with a password not verified lately: [`Verification::run`] says.
    Verify(Verification),
}

/// A password to verify with bcrypt, on tokio's blocking threads (never on an async worker).
pub struct Verification {
    pending: Pending,
    users: Arc<Users>,
}

impl std::fmt::Debug for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the password.
        f.debug_struct("Verification").finish_non_exhaustive()
    }
}

impl Verification {
    /// Runs bcrypt off the async workers: `Ok`, `req` as it goes on (the pair is remembered);
    /// `Err`, the answer: `401`, or `500` if the verification did not finish.
    pub async fn run(self, req: Request<Body>) -> Result<Request<Body>, Response<Body>> {
        let Verification { pending, users } = self;
        let fingerprint = pending.fingerprint;
        let verify = tokio::task::spawn_blocking(move || {
            bcrypt::verify(&pending.password, &pending.hash).unwrap_or(false)
        });
        match verify.await {
            Ok(true) => {
                users.remember(fingerprint);
                Ok(users.admitted(req))
            }
            Ok(false) => Err(users.refusal()),
            Err(_) => Err(unfinished()),
        }
    }
}

/// The `500` of a verification that did not finish (its blocking task panicked, or the runtime is
/// shutting down).
fn unfinished() -> Response<Body> {
    GatewayError::new(GatewayErrorKind::Internal)
        .with_detail("the password verification did not finish")
        .into_response()
}

impl BasicAuthLayer {
    /// Judges `req` as the layer's service does, without calling anything: admitted (and
    /// rewritten as it goes on), refused, or to be verified.
    pub fn check(&self, req: &mut Request<Body>) -> Check {
        match self.users.check(req.headers().get(AUTHORIZATION)) {
            Verdict::Admitted => {
                if !self.users.forward {
                    req.headers_mut().remove(AUTHORIZATION);
                }
                Check::Admitted
            }
            Verdict::Refused => Check::Refused(self.users.refusal()),
            Verdict::Verify(pending) => Check::Verify(Verification {
                pending,
                users: Arc::clone(&self.users),
            }),
        }
    }
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
            users: Arc::new(Users {
                hashes: users.into_iter().collect(),
                challenge,
                forward,
                keys: (RandomState::new(), RandomState::new()),
                verified: Mutex::default(),
            }),
        }
    }
}

impl<S> tower::Layer<S> for BasicAuthLayer {
    type Service = BasicAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BasicAuth {
            users: Arc::clone(&self.users),
            inner,
        }
    }
}

/// The service built by [`BasicAuthLayer`].
#[derive(Clone, Debug)]
pub struct BasicAuth<S> {
    users: Arc<Users>,
    inner: S,
}

impl<S> Service<Request<Body>> for BasicAuth<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BasicAuthFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let state = match self.users.check(req.headers().get(AUTHORIZATION)) {
            Verdict::Admitted => State::Inner {
                future: self.inner.call(self.users.admitted(req)),
            },
            Verdict::Refused => State::Answer {
                response: Some(self.users.refusal()),
            },
            Verdict::Verify(pending) => {
                // The instance made ready is the one called once bcrypt has answered.
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                let fingerprint = pending.fingerprint;
                let verify = tokio::task::spawn_blocking(move || {
                    bcrypt::verify(&pending.password, &pending.hash).unwrap_or(false)
                });
                State::Verifying {
                    verify,
                    fingerprint,
                    request: Some(req),
                    service: Some(ready),
                    users: Arc::clone(&self.users),
                }
            }
        };
        BasicAuthFuture { state }
    }
}

pin_project! {
    /// The response future of [`BasicAuth`].
    pub struct BasicAuthFuture<S: Service<Request<Body>>> {
        #[pin]
        state: State<S>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S: Service<Request<Body>>> {
        // Admitted: the inner service's answer.
        Inner { #[pin] future: S::Future },
        // Refused: the 401 (or a 500 if a verification failed to run), polled once.
        Answer { response: Option<Response<Body>> },
        // bcrypt runs on tokio's blocking threads, never on an async worker.
        Verifying {
            verify: JoinHandle<bool>,
            fingerprint: u128,
            request: Option<Request<Body>>,
            service: Option<S>,
            users: Arc<Users>,
        },
    }
}

impl<S> Future for BasicAuthFuture<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Output = Result<Response<Body>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            let next = match state.as_mut().project() {
                StateProj::Inner { future } => return future.poll(cx),
                StateProj::Answer { response } => {
                    return Poll::Ready(Ok(response.take().unwrap_or_default()))
                }
                StateProj::Verifying {
                    verify,
                    fingerprint,
                    request,
                    service,
                    users,
                } => {
                    let verified = ready!(Pin::new(verify).poll(cx));
                    match (verified, request.take(), service.take()) {
                        (Ok(true), Some(req), Some(mut service)) => {
                            users.remember(*fingerprint);
                            State::Inner {
                                future: service.call(users.admitted(req)),
                            }
                        }
                        (Ok(_), _, _) => State::Answer {
                            response: Some(users.refusal()),
                        },
                        // The blocking task panicked or the runtime is shutting down.
                        (Err(_), _, _) => State::Answer {
                            response: Some(unfinished()),
                        },
                    }
                }
            };
            state.set(next);
        }
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
        let users = &layer.users;
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

    #[tokio::test]
    async fn the_cache_knows_a_pair_by_its_one_spelling_in_base64() {
        // 11 bytes: the base64 text ends with padding, where another spelling could hide.
        let hash = bcrypt::hash("s3cre", 4).unwrap();
        let layer = BasicAuthLayer::new("r", htpasswd(&format!("alice:{hash}\n")).unwrap(), false);
        assert_eq!(STANDARD.encode("alice:s3cre"), "YWxpY2U6czNjcmU=");
        assert_eq!(
            call(&layer, Some("Basic YWxpY2U6czNjcmU=")).await.status(),
            200
        );
        // The same text, the scheme in another case and spaces around: remembered, one entry.
        let res = call(&layer, Some("basic   YWxpY2U6czNjcmU=  ")).await;
        assert_eq!(res.status(), 200);
        assert_eq!(layer.users.verified.lock().unwrap().len(), 1);
        // Stray bits in the last character, or no padding: not the pair's spelling, refused.
        for other in ["Basic YWxpY2U6czNjcmV=", "Basic YWxpY2U6czNjcmU"] {
            assert_eq!(call(&layer, Some(other)).await.status(), 401, "{other}");
        }
        // Remembered by the whole text: another password of the same user is still verified.
        assert_eq!(
            call(&layer, Some(&basic("alice", "s3crf"))).await.status(),
            401
        );
        assert_eq!(layer.users.verified.lock().unwrap().len(), 1);
    }

    /// The host's way: `check`, then the inner service called by the caller.
    async fn host_call(layer: &BasicAuthLayer, auth: Option<&str>) -> (u16, bool) {
        let mut req = Request::get("/");
        if let Some(auth) = auth {
            req = req.header(AUTHORIZATION, auth);
        }
        let mut req = req.body(Body::empty()).unwrap();
        let req = match layer.check(&mut req) {
            Check::Admitted => req,
            Check::Refused(res) => return (res.status().as_u16(), false),
            Check::Verify(verification) => match verification.run(req).await {
                Ok(req) => req,
                Err(res) => return (res.status().as_u16(), false),
            },
        };
        (200, req.headers().contains_key(AUTHORIZATION))
    }

    #[tokio::test]
    async fn check_and_run_judge_as_the_service_does() {
        let kept = layer(true);
        let good = basic("alice", "s3cret");
        assert_eq!(host_call(&kept, Some(&good)).await, (200, true));
        assert_eq!(host_call(&kept, Some(&good)).await, (200, true));
        assert_eq!(kept.users.verified.lock().unwrap().len(), 1);
        let removed = layer(false);
        for _ in 0..2 {
            // Verified, then remembered: the header removed either way.
            assert_eq!(host_call(&removed, Some(&good)).await, (200, false));
        }
        for bad in [
            None,
            Some(basic("alice", "wrong")),
            Some(basic("bob", "s3cret")),
        ] {
            assert_eq!(host_call(&removed, bad.as_deref()).await, (401, false));
        }
        assert_eq!(removed.users.verified.lock().unwrap().len(), 1);
    }

    /// Polls `future` once: whether it is still pending.
    async fn pending<F: Future>(mut future: Pin<&mut F>) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx).is_pending())).await
    }

    #[test]
    fn a_slow_verification_does_not_hold_the_worker_from_other_requests() {
        // One worker thread: were bcrypt run on it, nothing else could be served until it ended.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let slow = bcrypt::hash("slow-password", 11).unwrap();
        let fast = bcrypt::hash("s3cret", 4).unwrap();
        let users = htpasswd(&format!("carol:{slow}\nalice:{fast}\n")).unwrap();
        let layer = BasicAuthLayer::new("r", users, false);
        runtime.block_on(async {
            let alice = basic("alice", "s3cret");
            assert_eq!(call(&layer, Some(&alice)).await.status(), 200);
            let carol = basic("carol", "slow-password");
            let mut slow = std::pin::pin!(call(&layer, Some(&carol)));
            // The first poll hands bcrypt over and returns: a verification run on the worker
            // would have answered it.
            assert!(pending(slow.as_mut()).await, "bcrypt ran on the worker");
            // Meanwhile the same worker serves others: refused, and remembered.
            for _ in 0..20 {
                assert_eq!(call(&layer, None).await.status(), 401);
                assert_eq!(call(&layer, Some(&alice)).await.status(), 200);
            }
            assert!(
                pending(slow.as_mut()).await,
                "the slow verification is still running"
            );
            // And the slow request is admitted when bcrypt has answered.
            let res = slow.await;
            assert_eq!(res.status(), 200);
            assert_eq!(layer.users.verified.lock().unwrap().len(), 2);
        });
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
