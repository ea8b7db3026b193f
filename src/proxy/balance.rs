//! Balancing: which server takes a request, over per-server atomics, with no lock and no allocation
//! on the request path. Everything that depends only on the config (the round-robin schedule, the
//! cumulative weights, the hash ring) is computed once when the upstream is built.
//!
//! Every policy picks among the servers a `usable` test accepts (up, and not tried yet by this
//! request); the caller falls back to all servers when none is (panic mode, as Envoy's).

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::header;
use parapet_middlewares::ClientIp;

use super::health::ServerState;
use crate::config::{Balance, HashKey, UpstreamServer};
use crate::fnv::{fnv1a, OFFSET};
use crate::Request;

/// Virtual nodes per unit of weight on the hash ring: enough that each server's share is within a
/// few percent of its weight, and that adding a server moves about 1/N of the keys.
const VNODES: u32 = 160;

/// The longest round-robin period: building it costs servers x period steps, once per build.
const MAX_PERIOD: i64 = 4096;

pub(crate) struct Balancer {
    policy: Policy,
    /// Each server's weight.
    weights: Box<[u32]>,
}

enum Policy {
    /// nginx's smooth weighted round robin, unrolled once into its schedule (one period: the sum of
    /// the weights, divided by their gcd), walked by one atomic counter.
    RoundRobin {
        schedule: Box<[u32]>,
        next: AtomicUsize,
    },
    LeastRequests,
    Random {
        /// Cumulative weights.
        cumulative: Box<[u64]>,
    },
    Hash {
        key: HashKey,
        /// (point, server), sorted by point.
        ring: Box<[(u64, u32)]>,
        /// Requests without the key are spread by weighted random.
        cumulative: Box<[u64]>,
    },
}

impl Balancer {
    pub(crate) fn new(balance: &Balance, servers: &[UpstreamServer]) -> Self {
        let weights: Box<[u32]> = servers.iter().map(|s| s.weight.max(1)).collect();
        let cumulative = || {
            let mut sum = 0u64;
            weights
                .iter()
                .map(|w| {
                    sum += u64::from(*w);
                    sum
                })
                .collect::<Box<[u64]>>()
        };
        let policy = match balance {
            Balance::RoundRobin => Policy::RoundRobin {
                schedule: smooth_schedule(&weights),
                next: AtomicUsize::new(0),
            },
            Balance::LeastRequests => Policy::LeastRequests,
            Balance::Random => Policy::Random {
                cumulative: cumulative(),
            },
            Balance::Hash(key) => Policy::Hash {
                key: key.clone(),
                ring: ring(servers, &weights),
                cumulative: cumulative(),
            },
        };
        Self { policy, weights }
    }

    /// Whether the policy measures load (in-flight requests and latency).
    pub(crate) fn measures_load(&self) -> bool {
        matches!(self.policy, Policy::LeastRequests)
    }

    /// The server for `req` among those `usable` accepts, if any.
    pub(crate) fn pick<'s>(
        &self,
        req: &Request,
        usable: impl Fn(usize) -> bool,
        state: impl Fn(usize) -> &'s ServerState,
    ) -> Option<usize> {
        let n = self.weights.len();
        match &self.policy {
            Policy::RoundRobin { schedule, next } => {
                let start = next.fetch_add(1, Ordering::Relaxed);
                (0..schedule.len())
                    .map(|k| schedule[(start + k) % schedule.len()] as usize)
                    .find(|&i| usable(i))
            }
            Policy::Random { cumulative } => weighted_random(cumulative, &usable),
            Policy::LeastRequests => {
                let a = random_usable(n, &usable)?;
                let Some(b) = (0..4)
                    .map(|_| (random() % n as u64) as usize)
                    .find(|&b| b != a && usable(b))
                else {
                    return Some(a);
                };
                let cost_a = state(a).cost(self.weights[a]);
                let cost_b = state(b).cost(self.weights[b]);
                Some(if cost_b < cost_a { b } else { a })
            }
            Policy::Hash {
                key,
                ring,
                cumulative,
            } => match hash_of(key, req) {
                Some(h) => {
                    let start = ring.partition_point(|&(p, _)| p < h);
                    (0..ring.len())
                        .map(|k| ring[(start + k) % ring.len()].1 as usize)
                        .find(|&i| usable(i))
                }
                None => weighted_random(cumulative, &usable),
            },
        }
    }
}

/// nginx's smooth weighted round robin (each turn: every server's current weight grows by its
/// weight, the largest is chosen and loses the total), run for one period.
///
/// A period longer than [`MAX_PERIOD`] (many servers of large, coprime weights) is made from the
/// weights scaled down to it, each at least 1: the shares stay within a fraction of a percent.
fn smooth_schedule(weights: &[u32]) -> Box<[u32]> {
    let gcd = weights.iter().fold(0, |g, &w| gcd(g, w)).max(1);
    let mut weights: Vec<i64> = weights.iter().map(|&w| i64::from(w / gcd)).collect();
    let sum: i64 = weights.iter().sum();
    if sum > MAX_PERIOD {
        for w in &mut weights {
            *w = (*w * MAX_PERIOD / sum).max(1);
        }
    }
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    (0..total)
        .map(|_| {
            let mut best = 0;
            for i in 0..weights.len() {
                current[i] += weights[i];
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            best as u32
        })
        .collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The hash ring: each server's points are placed by hashing its address (not its position), so a
/// server added or removed moves only the keys of its own points.
fn ring(servers: &[UpstreamServer], weights: &[u32]) -> Box<[(u64, u32)]> {
    let mut ring = Vec::new();
    for (i, (server, w)) in servers.iter().zip(weights).enumerate() {
        let name = server.authority.as_str().as_bytes();
        for v in 0..VNODES * w {
            let mut h = fnv1a(OFFSET, name);
            h = fnv1a(h, &v.to_le_bytes());
            ring.push((mix(h), i as u32));
        }
    }
    ring.sort_unstable();
    ring.into_boxed_slice()
}

/// The hash of the request's key; `None` when the request has none.
fn hash_of(key: &HashKey, req: &Request) -> Option<u64> {
    let h = match key {
        HashKey::ClientIp => match ClientIp::of(req.extensions())?.ip.to_canonical() {
            std::net::IpAddr::V4(ip) => fnv1a(OFFSET, &ip.octets()),
            std::net::IpAddr::V6(ip) => fnv1a(OFFSET, &ip.octets()),
        },
        HashKey::Header(name) => fnv1a(OFFSET, req.headers().get(name)?.as_bytes()),
        HashKey::Cookie(name) => fnv1a(OFFSET, cookie(req, name)?),
    };
    Some(mix(h))
}

/// The value of cookie `name` (RFC 6265 §5.4: `name=value` pairs separated by `; `).
fn cookie<'r>(req: &'r Request, name: &str) -> Option<&'r [u8]> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|line| line.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let (n, v) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
            (n == name.as_bytes()).then(|| &v[1..])
        })
}

/// splitmix64's finaliser: FNV's low bits are weak, the ring needs every bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A fast per-thread pseudo-random number (xorshift64*), seeded from the process's random hasher
/// keys: balancing needs spread, not secrecy.
fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(&h as *const _ as usize);
            h.finish() | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// A random usable server, uniformly: a few draws, then the first usable after the last draw.
fn random_usable(n: usize, usable: &impl Fn(usize) -> bool) -> Option<usize> {
    let start = (random() % n as u64) as usize;
    if usable(start) {
        return Some(start);
    }
    (1..n).map(|k| (start + k) % n).find(|&i| usable(i))
}

/// A server drawn by weight among the usable ones.
fn weighted_random(cumulative: &[u64], usable: &impl Fn(usize) -> bool) -> Option<usize> {
    let total = *cumulative.last()?;
    let n = cumulative.len();
    for _ in 0..4 {
        let r = random() % total;
        let i = cumulative.partition_point(|&c| c <= r);
        if i < n && usable(i) {
            return Some(i);
        }
    }
    random_usable(n, usable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smooth_schedule_interleaves_by_weight() {
        // nginx's example: weights 5, 1, 1 give a a b a c a a, not a a a a a b c.
        assert_eq!(&*smooth_schedule(&[5, 1, 1]), &[0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(&*smooth_schedule(&[2, 2]), &[0, 1]);
        // Too long a period is scaled down, every server kept.
        let big: Vec<u32> = (0..500).map(|i| 997 - (i % 2)).collect();
        let schedule = smooth_schedule(&big);
        assert!(schedule.len() <= 4096 + 500);
        assert!((0..500u32).all(|i| schedule.contains(&i)));
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let req = http::Request::get("/")
            .header("cookie", "a=1; session=xyz; sessionx=no")
            .body(parapet_middlewares::Body::empty())
            .unwrap();
        assert_eq!(cookie(&req, "session"), Some(&b"xyz"[..]));
        assert_eq!(cookie(&req, "sess"), None);
    }
}
