//! `rate_limit`: at most a rate of requests per client (or per header value), `429` beyond it.
//!
//! ```toml
//! [middlewares.api_limit]
//! kind = "rate_limit"
//! rate = "100/s"          # "N/s" | "N/m" | "N/h"
//! burst = 200             # requests allowed at once (default 1, as Traefik's)
//! key = "client_ip"       # or "header:NAME", such as "header:x-api-key"
//! ```
//!
//! **The algorithm** is GCRA (the generic cell rate algorithm, a token bucket kept as one number):
//! each key has a *theoretical arrival time* (TAT) in one atomic `u64`. With `T` the interval between
//! requests at the rate (1 s / 100 here) and `τ = burst × T`, a request at `now` is allowed when
//! `max(TAT, now) + T - now ≤ τ`, and the TAT moves to `max(TAT, now) + T` by a compare-and-swap: no
//! lock is held while deciding, and `burst` requests pass at once, then one per `T`.
//!
//! **The answers.** Every response to a limited key carries the IETF draft's headers
//! (draft-ietf-httpapi-ratelimit-headers): `RateLimit-Limit` (the burst), `RateLimit-Remaining`
//! (requests that could pass right now) and `RateLimit-Reset` (seconds until the bucket is full
//! again). A request over the limit is answered `429 Too Many Requests` (RFC 6585 §4) with
//! `Retry-After` (RFC 9110 §10.2.3: seconds until it would pass), carrying the gateway error
//! `too_many_requests`; it never reaches the app.
//!
//! **The key.** `client_ip` is the client as `server.trusted_proxies` resolves it
//! ([`ClientIp`]). `header:NAME` is the value of that request header; a request
//! without it is keyed by its client address.
//!
//! **Memory** is bounded: the keys live in [`SHARDS`] shards (a read-write lock each, taken for
//! writing only to add a key), at most [`MAX_KEYS`] keys in all. A key is hashed once per request
//! (SipHash, keyed at random per limiter: a client choosing its keys cannot aim them at one bucket
//! of a map), and that one hash both picks the shard and places the key in the shard's map. A shard that is full forgets first
//! the keys whose bucket is full again (their TAT is past: forgetting them changes nothing), then, if
//! a flood of distinct keys still fills it, an eighth of its keys, which start again with a full
//! bucket. A full limiter holds about 8 MB (80 bytes per key with the maps' free slots; `cargo bench
//! --bench rate_limit` measures it after a flood of twice `MAX_KEYS` clients never seen: 7.5 MB).
//! A shard's map is kept at the size a full shard needs, not let grow by the tombstones pruning
//! leaves.
//!
//! **Reloads** keep the state: the layers built for an instance name and settings share one limiter
//! while any of them lives ([`RateLimitLayer::shared`]); a reload that keeps the instance keeps its
//! counts, one that changes its settings starts afresh.
//!
//! **Per process**: each parapet process counts alone. N replicas behind a load balancer let a client
//! through at up to N times the rate (less if the balancer keeps a client on one replica).
//!
//! ```
//! use std::time::Duration;
//!
//! use parapet_middlewares::rate_limit::{RateKey, RateLimitConfig, RateLimitLayer};
//!
//! let config = RateLimitConfig {
//!     count: 100,
//!     per: Duration::from_secs(1),
//!     burst: 200,
//!     key: RateKey::ClientIp,
//! };
//! let layer = RateLimitLayer::new(config);
//! # let _ = layer;
//! ```

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{Request, Response};

use crate::guard::{Guard, GuardLayer, Guarded};
use crate::{Body, ClientIp, GatewayError, GatewayErrorKind};

/// The most keys a limiter remembers.
pub const MAX_KEYS: usize = 100_000;
/// The shards the keys are spread over.
pub const SHARDS: usize = 64;

/// What a limit counts by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// The client's address, as `server.trusted_proxies` resolves it.
    ClientIp,
    /// The value of this request header (the client's address without it).
    Header(HeaderName),
}

/// The settings of a `rate_limit` layer: `count` requests per `per`, `burst` at once.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RateLimitConfig {
    /// The `N` of `rate = "N/s"`.
    pub count: u64,
    /// The period of `rate`: a second, a minute or an hour.
    pub per: Duration,
    /// `burst`: requests allowed at once (at least 1).
    pub burst: u64,
    /// `key`.
    pub key: RateKey,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Key {
    Ip(IpAddr),
    Value(HeaderValue),
}

/// A key and its hash, made once per request by the limiter's keyed hasher: the shard is picked by
/// bits 32 to 37 of the hash, and the shard's map takes the whole hash as it is ([`Prehashed`]);
/// the map places a key by its low bits and tells keys apart by its top 7, none of which pick the
/// shard. Two keys are the same only if they are equal: a shared hash never merges them.
#[derive(Debug)]
struct Hashed {
    hash: u64,
    key: Key,
}

impl Hashed {
    fn shard(&self) -> usize {
        (self.hash >> 32) as usize % SHARDS
    }
}

impl PartialEq for Hashed {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.key == other.key
    }
}

impl Eq for Hashed {}

impl Hash for Hashed {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// The shards' hasher: a [`Hashed`] key's hash, taken as it is.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is called (by `Hashed`); this keeps any other use well defined.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Shard = RwLock<HashMap<Hashed, AtomicU64, BuildHasherDefault<Prehashed>>>;

/// A header value made once for the number a limiter sends most: `remaining` and `reset` when the
/// bucket was full (a client below the rate), cloned rather than made per response.
#[derive(Debug)]
struct Usual {
    n: u64,
    value: HeaderValue,
}

impl Usual {
    fn new(n: u64) -> Self {
        Self {
            n,
            value: lasting(n),
        }
    }

    fn value(&self, n: u64) -> HeaderValue {
        if n == self.n {
            self.value.clone()
        } else {
            number(n)
        }
    }
}

/// One limit's state: a TAT per key.
#[derive(Debug)]
pub struct Limiter {
    config: RateLimitConfig,
    /// `T`, in nanoseconds.
    interval: u64,
    /// `τ = burst × T`, in nanoseconds.
    tolerance: u64,
    base: Instant,
    hasher: RandomState,
    shards: Box<[Shard]>,
    limit: HeaderValue,
    /// `RateLimit-Remaining` after a request that found its bucket full.
    full_remaining: Usual,
    /// `RateLimit-Reset` after a request that found its bucket full.
    full_reset: Usual,
}

/// A limiter's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Let through; `remaining` more could pass now; the bucket is full again in `reset`.
    Allowed {
        /// Requests that could pass right after this one.
        remaining: u64,
        /// Until the bucket is full again.
        reset: Duration,
    },
    /// Refused; it would pass in `retry_after`.
    Limited {
        /// Until this request would pass.
        retry_after: Duration,
        /// Until the bucket is full again.
        reset: Duration,
    },
}

impl Limiter {
    /// A limiter with these settings and no key yet.
    pub fn new(config: RateLimitConfig) -> Limiter {
        let per = u64::try_from(config.per.as_nanos()).unwrap_or(u64::MAX);
        let interval = (per / config.count.max(1)).max(1);
        let burst = config.burst.max(1);
        let tolerance = interval.saturating_mul(burst);
        Limiter {
            interval,
            tolerance,
            base: Instant::now(),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            limit: lasting(burst),
            // As `gcra` counts them for a request at or after its key's TAT.
            full_remaining: Usual::new((tolerance - interval) / interval),
            full_reset: Usual::new(seconds_up(Duration::from_nanos(interval))),
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// The keys remembered now.
    pub fn keys(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().map_or(0, |m| m.len()))
            .sum()
    }

    /// Counts one request now, keyed as the layer keys it: the layer's decision for it.
    pub fn check_request(&self, req: &Request<Body>) -> Decision {
        self.check(self.key_of(req), self.now())
    }

    fn now(&self) -> u64 {
        // Offset by τ so that a new key's TAT (0) is always in the past.
        u64::try_from(self.base.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(self.tolerance)
    }

    /// `key` with its hash.
    fn hashed(&self, key: Key) -> Hashed {
        let mut h = self.hasher.build_hasher();
        match &key {
            // Each kind of key written its own way (lengths differ): they stay apart.
            Key::Ip(IpAddr::V4(ip)) => h.write_u32(ip.to_bits()),
            Key::Ip(IpAddr::V6(ip)) => h.write_u128(ip.to_bits()),
            Key::Value(value) => {
                h.write(value.as_bytes());
                h.write_u8(0xff);
            }
        }
        Hashed {
            hash: h.finish(),
            key,
        }
    }

    /// Counts one request of `key` at `now` (nanoseconds on the limiter's clock).
    fn check(&self, key: Key, now: u64) -> Decision {
        self.check_hashed(self.hashed(key), now)
    }

    fn check_hashed(&self, key: Hashed, now: u64) -> Decision {
        let shard = &self.shards[key.shard()];
        if let Ok(map) = shard.read() {
            if let Some(tat) = map.get(&key) {
                return self.gcra(tat, now);
            }
        }
        // A poisoned lock only means a panic elsewhere while it was held: the map is still whole.
        let mut map = shard.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_KEYS / SHARDS && !map.contains_key(&key) {
            // Keys whose bucket is full again carry nothing: forget them first.
            map.retain(|_, tat| *tat.get_mut() > now);
            if map.len() >= MAX_KEYS / SHARDS {
                // The first eighth in the map's order, as good as any.
                let mut drop = map.len() / 8 + 1;
                map.retain(|_, _| {
                    if drop == 0 {
                        return true;
                    }
                    drop -= 1;
                    false
                });
            }
            // Removing leaves tombstones, which can make the next insert grow the table (to
            // twice the slots a full shard needs) rather than reuse them: a shard bigger than that
            // is brought back to it here. (Nothing happens when it is that size already.)
            map.shrink_to(MAX_KEYS / SHARDS);
        }
        let tat = map.entry(key).or_insert_with(|| AtomicU64::new(0));
        self.gcra(tat, now)
    }

    fn gcra(&self, tat: &AtomicU64, now: u64) -> Decision {
        let mut current = tat.load(Ordering::Acquire);
        loop {
            let next = current.max(now).saturating_add(self.interval);
            let ahead = next - now;
            if ahead > self.tolerance {
                return Decision::Limited {
                    retry_after: Duration::from_nanos(ahead - self.tolerance),
                    reset: Duration::from_nanos(current.saturating_sub(now)),
                };
            }
            match tat.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    return Decision::Allowed {
                        remaining: (self.tolerance - ahead) / self.interval,
                        reset: Duration::from_nanos(ahead),
                    }
                }
                Err(seen) => current = seen,
            }
        }
    }

    fn key_of(&self, req: &Request<Body>) -> Key {
        if let RateKey::Header(name) = &self.config.key {
            if let Some(value) = req.headers().get(name) {
                return Key::Value(value.clone());
            }
        }
        Key::Ip(ClientIp::of(req.extensions()).map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.ip))
    }
}

/// Whole seconds, rounded up (a client told 0 would retry at once).
fn seconds_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A header value for `n`: the small numbers these headers mostly carry are made once, the others
/// carved out of a shared chunk ([`crate::values`]), neither costing an allocation per request.
fn number(n: u64) -> HeaderValue {
    static SMALL: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    let small = SMALL.get_or_init(|| {
        (0..1024u64)
            .map(|i| HeaderValue::from_static(Box::leak(i.to_string().into_boxed_str())))
            .collect()
    });
    match small.get(n as usize) {
        Some(v) => v.clone(),
        None => crate::values::decimal(n),
    }
}

/// A header value for `n` that lives as long as the process, for the numbers a limiter sends on
/// every response (its `burst`, the remaining count and reset of a full bucket): cloned and dropped
/// without a reference count to update. Made once per number and kept, so they are as many as the
/// distinct numbers of the limits configured, never more.
fn lasting(n: u64) -> HeaderValue {
    static MADE: OnceLock<Mutex<HashMap<u64, HeaderValue>>> = OnceLock::new();
    if n < 1024 {
        return number(n);
    }
    let mut made = MADE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    made.entry(n)
        .or_insert_with(|| HeaderValue::from_static(Box::leak(n.to_string().into_boxed_str())))
        .clone()
}

/// The guard behind [`RateLimitLayer`].
#[derive(Clone, Debug)]
pub struct RateLimit {
    limiter: Arc<Limiter>,
}

const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

impl Guard for RateLimit {
    /// `RateLimit-Remaining` and `RateLimit-Reset`.
    type State = (u64, u64);

    fn request(&self, req: &mut Request<Body>) -> Result<(u64, u64), Response<Body>> {
        let limiter = &self.limiter;
        match limiter.check_request(req) {
            Decision::Allowed { remaining, reset } => Ok((remaining, seconds_up(reset))),
            Decision::Limited { retry_after, reset } => {
                let mut res = GatewayError::new(GatewayErrorKind::TooManyRequests).into_response();
                let headers = res.headers_mut();
                headers.insert(RETRY_AFTER, number(seconds_up(retry_after).max(1)));
                headers.insert(LIMIT, limiter.limit.clone());
                headers.insert(REMAINING, number(0));
                headers.insert(RESET, number(seconds_up(reset)));
                Err(res)
            }
        }
    }

    fn response(&self, (remaining, reset): (u64, u64), res: &mut Response<Body>) {
        let limiter = &self.limiter;
        let headers = res.headers_mut();
        headers.insert(LIMIT, limiter.limit.clone());
        headers.insert(REMAINING, limiter.full_remaining.value(remaining));
        headers.insert(RESET, limiter.full_reset.value(reset));
    }
}

/// Limits the rate of requests per key, `429` beyond it.
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    inner: GuardLayer<RateLimit>,
}

type Registry = Mutex<HashMap<(String, RateLimitConfig), Weak<Limiter>>>;

impl RateLimitLayer {
    /// A layer with its own limiter.
    pub fn new(config: RateLimitConfig) -> Self {
        Self::with(Arc::new(Limiter::new(config)))
    }

    /// A layer sharing the limiter of any live layer made for the same `name` and settings (an
    /// instance kept by a reload keeps its counts), else with a new one.
    pub fn shared(name: &str, config: RateLimitConfig) -> Self {
        static LIMITERS: OnceLock<Registry> = OnceLock::new();
        let mut limiters = LIMITERS
            .get_or_init(Registry::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        limiters.retain(|_, weak| weak.strong_count() > 0);
        let key = (name.to_owned(), config);
        if let Some(limiter) = limiters.get(&key).and_then(Weak::upgrade) {
            return Self::with(limiter);
        }
        let limiter = Arc::new(Limiter::new(key.1.clone()));
        limiters.insert(key, Arc::downgrade(&limiter));
        Self::with(limiter)
    }

    fn with(limiter: Arc<Limiter>) -> Self {
        Self {
            inner: GuardLayer::new(RateLimit { limiter }),
        }
    }

    /// The limiter this layer counts with.
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.inner_guard().limiter
    }

    fn inner_guard(&self) -> &RateLimit {
        self.inner.guard()
    }
}

impl RateLimitLayer {
    /// The guard this layer applies: what a host runs without a layer of its own (parapet runs
    /// adjacent guards and interceptors in one future).
    pub fn guard(&self) -> &RateLimit {
        self.inner.guard()
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = Guarded<RateLimit, S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.inner.layer(inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientAddr;
    use std::convert::Infallible;
    use tower::{Layer, ServiceExt};

    fn config(count: u64, burst: u64) -> RateLimitConfig {
        RateLimitConfig {
            count,
            per: Duration::from_secs(1),
            burst,
            key: RateKey::ClientIp,
        }
    }

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn gcra_lets_a_burst_through_then_one_per_interval() {
        let limiter = Limiter::new(config(10, 3));
        let t0 = limiter.tolerance;
        let key = || Key::Ip("192.0.2.1".parse().unwrap());
        for remaining in [2, 1, 0] {
            match limiter.check(key(), t0) {
                Decision::Allowed { remaining: r, .. } => assert_eq!(r, remaining),
                d => panic!("{d:?}"),
            }
        }
        match limiter.check(key(), t0) {
            Decision::Limited { retry_after, .. } => {
                assert_eq!(retry_after, Duration::from_millis(100))
            }
            d => panic!("{d:?}"),
        }
        // A tenth of a second later, one more.
        assert!(matches!(
            limiter.check(key(), t0 + SECOND / 10),
            Decision::Allowed { remaining: 0, .. }
        ));
        assert!(matches!(
            limiter.check(key(), t0 + SECOND / 10),
            Decision::Limited { .. }
        ));
        // Another key has its own bucket.
        assert!(matches!(
            limiter.check(Key::Ip("192.0.2.2".parse().unwrap()), t0),
            Decision::Allowed { remaining: 2, .. }
        ));
        // A second later the bucket is full again.
        assert!(matches!(
            limiter.check(key(), t0 + 2 * SECOND),
            Decision::Allowed { remaining: 2, .. }
        ));
    }

    #[test]
    fn a_flood_of_distinct_keys_stays_within_the_maximum() {
        let limiter = Limiter::new(config(1, 1));
        let now = limiter.tolerance;
        for i in 0..(MAX_KEYS as u32 * 2) {
            let ip = IpAddr::V4(Ipv4Addr::from(i));
            limiter.check(Key::Ip(ip), now);
        }
        assert!(limiter.keys() <= MAX_KEYS, "{}", limiter.keys());
        // Keys whose bucket is full again are forgotten first, without losing anything.
        let later = now + 10 * SECOND;
        limiter.check(Key::Ip("10.0.0.1".parse().unwrap()), later);
        assert!(limiter.keys() <= MAX_KEYS);
    }

    #[test]
    fn one_hash_spreads_keys_over_the_shards_and_never_merges_two_keys() {
        let limiter = Limiter::new(config(1, 1));
        let now = limiter.tolerance;
        for i in 0..2000u32 {
            limiter.check(Key::Ip(IpAddr::V4(Ipv4Addr::from(i))), now);
        }
        assert_eq!(limiter.keys(), 2000);
        // Every shard has some, and no shard holds a large share.
        for shard in limiter.shards.iter() {
            let n = shard.read().unwrap().len();
            assert!((5..=100).contains(&n), "{n}");
        }
        // The same IPv4 address as IPv4 and as an IPv6-mapped address, and as a header value: three
        // keys, three hashes.
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let v6: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let value = Key::Value(HeaderValue::from_static("192.0.2.1"));
        let hashes = [
            limiter.hashed(Key::Ip(v4)).hash,
            limiter.hashed(Key::Ip(v6)).hash,
            limiter.hashed(value).hash,
        ];
        assert!(hashes[0] != hashes[1] && hashes[1] != hashes[2] && hashes[0] != hashes[2]);
        // The same key hashes the same; another limiter (another random key) hashes differently.
        assert_eq!(limiter.hashed(Key::Ip(v4)).hash, hashes[0]);
        assert_ne!(
            Limiter::new(config(1, 1)).hashed(Key::Ip(v4)).hash,
            hashes[0]
        );
        // Two keys with the same hash (made so here) keep buckets of their own.
        let limiter = Limiter::new(config(10, 1));
        let t0 = limiter.tolerance;
        let same = |ip: &str| Hashed {
            hash: 42,
            key: Key::Ip(ip.parse().unwrap()),
        };
        assert!(matches!(
            limiter.check_hashed(same("192.0.2.1"), t0),
            Decision::Allowed { .. }
        ));
        assert!(matches!(
            limiter.check_hashed(same("192.0.2.1"), t0),
            Decision::Limited { .. }
        ));
        assert!(matches!(
            limiter.check_hashed(same("192.0.2.2"), t0),
            Decision::Allowed { .. }
        ));
        assert_eq!(limiter.keys(), 2);
    }

    #[test]
    fn the_usual_values_are_the_numbers_a_full_bucket_gives() {
        for (count, per, burst) in [
            (10, 1, 3),
            (1_000_000_000, 1, 1_000_000_000),
            (1, 3600, 1),
            (7, 60, 2000),
        ] {
            let limiter = Limiter::new(RateLimitConfig {
                count,
                per: Duration::from_secs(per),
                burst,
                key: RateKey::ClientIp,
            });
            let now = limiter.tolerance;
            let Decision::Allowed { remaining, reset } =
                limiter.check(Key::Ip("192.0.2.1".parse().unwrap()), now)
            else {
                panic!()
            };
            assert_eq!(remaining, limiter.full_remaining.n);
            assert_eq!(seconds_up(reset), limiter.full_reset.n);
            assert_eq!(
                limiter.full_remaining.value(remaining),
                remaining.to_string().as_str()
            );
            assert_eq!(limiter.limit, burst.to_string().as_str());
            assert_eq!(
                limiter.full_reset.value(seconds_up(reset)),
                seconds_up(reset).to_string().as_str()
            );
            assert_eq!(
                limiter.full_remaining.value(remaining + 1),
                (remaining + 1).to_string().as_str()
            );
        }
    }

    #[test]
    fn layers_of_the_same_instance_and_settings_share_their_counts() {
        let a = RateLimitLayer::shared("middlewares.api", config(5, 5));
        let b = RateLimitLayer::shared("middlewares.api", config(5, 5));
        let c = RateLimitLayer::shared("middlewares.api", config(6, 5));
        let d = RateLimitLayer::shared("middlewares.other", config(5, 5));
        assert!(Arc::ptr_eq(a.limiter(), b.limiter()));
        assert!(!Arc::ptr_eq(a.limiter(), c.limiter()));
        assert!(!Arc::ptr_eq(a.limiter(), d.limiter()));
    }

    async fn call(layer: &RateLimitLayer, key: Option<&str>) -> Response<Body> {
        let inner = tower::service_fn(|_: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::empty()))
        });
        let mut req = Request::get("/");
        if let Some(key) = key {
            req = req.header("x-api-key", key);
        }
        let mut req = req.body(Body::empty()).unwrap();
        req.extensions_mut()
            .insert(ClientAddr("192.0.2.1:1000".parse().unwrap()));
        layer.layer(inner).oneshot(req).await.unwrap()
    }

    #[tokio::test]
    async fn over_the_limit_is_a_429_with_retry_after_and_every_answer_has_ratelimit_headers() {
        let layer = RateLimitLayer::new(RateLimitConfig {
            count: 1,
            per: Duration::from_secs(60),
            burst: 2,
            key: RateKey::Header(HeaderName::from_static("x-api-key")),
        });
        let res = call(&layer, Some("k1")).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["ratelimit-limit"], "2");
        assert_eq!(res.headers()["ratelimit-remaining"], "1");
        assert_eq!(res.headers()["ratelimit-reset"], "60");
        assert_eq!(call(&layer, Some("k1")).await.status(), 200);
        let res = call(&layer, Some("k1")).await;
        assert_eq!(res.status(), 429);
        assert_eq!(res.headers()["retry-after"], "60");
        assert_eq!(res.headers()["ratelimit-remaining"], "0");
        assert_eq!(
            res.extensions().get::<GatewayError>().unwrap().kind(),
            GatewayErrorKind::TooManyRequests
        );
        // Another key, and no key (the client's address), count apart.
        assert_eq!(call(&layer, Some("k2")).await.status(), 200);
        assert_eq!(call(&layer, None).await.status(), 200);
    }
}
