//! `request_id`: every request gets an id, sent upstream, returned to the client and logged.
//!
//! ```toml
//! [middlewares.rid]
//! kind = "request_id"
//! header = "x-request-id"     # the default
//! ```
//!
//! A request that arrives with a valid id in the header keeps it (a client or a proxy in front
//! chose it: the id then follows the request across every hop). Valid is one header value of 1 to
//! 200 characters, each a token character (RFC 9110 §5.6.2: letters, digits and
//! ``!#$%&'*+-.^_`|~``). Otherwise, the layer makes one and puts it on the request in place of
//! whatever was there. Either way the id is
//!
//! - set on the request going in (the upstream sees it), and put in its extensions as a
//!   [`RequestId`], where the access log and the `errors` layer read it (a host that knows nothing
//!   inside the layer reads it leaves this out: [`RequestIds::tagging_requests`]);
//! - set on the response going out, whatever answered it (the upstream, or an inner layer's own 401,
//!   403 or 429); and put in its extensions too when a layer outside this one asked for it (it put
//!   [`RequestIdWanted`] in the request's extensions, as the access log and the `errors` layer do
//!   when they see no id yet), so a response whose only reader would be nobody pays for no map.
//!
//! A made id is a per-process random prefix (16 hexadecimal digits, drawn when the process starts)
//! and a counter, such as `5f0c3e9a1b2d4c68-1a3`: unique within the process and, with 64 random
//! bits, across restarts and replicas. Making one costs a counter increment and no allocation of its
//! own: the id is carved out of a per-thread 4 KiB chunk shared by about 200 ids (the chunk is freed
//! when the last of them is dropped).
//!
//! On the pass-through path the layer costs one allocation, the box `http::Extensions` puts the
//! request's [`RequestId`] in (each extension value is boxed), and one more for the response's when
//! an outer layer asked for it. parapet leaves the request's out where nothing inside the layer
//! reads it (an upstream, with none of `access_log` and `errors` inside): no allocation at all.
//!
//! W3C Trace Context's `traceparent` and `tracestate` are not touched: they pass through as they came.
//!
//! ```
//! use std::convert::Infallible;
//!
//! use http::{Request, Response};
//! use parapet_middlewares::request_id::{RequestId, RequestIdLayer};
//! use parapet_middlewares::Body;
//! use tower::{Layer, ServiceExt};
//!
//! let app = tower::service_fn(|req: Request<Body>| async move {
//!     assert!(req.extensions().get::<RequestId>().is_some());
//!     Ok::<_, Infallible>(Response::new(Body::empty()))
//! });
//! let service = RequestIdLayer::new(http::HeaderName::from_static("x-request-id")).layer(app);
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let request = Request::get("/").header("x-request-id", "abc-123").body(Body::empty()).unwrap();
//! let response = service.oneshot(request).await.unwrap();
//! assert_eq!(response.headers()["x-request-id"], "abc-123");
//! # });
//! ```

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::header::Entry;
use http::{HeaderName, HeaderValue, Request, Response};

use crate::intercept::{Intercept, InterceptLayer, Interceptor};
use crate::Body;

/// The longest id kept from a request.
pub const MAX_LEN: usize = 200;

/// A request's id, in the request's and the response's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub HeaderValue);

impl RequestId {
    /// The id as text (ids are token characters, always ASCII).
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("")
    }
}

/// Put in a request's extensions by a layer that reads the [`RequestId`] from the response (one
/// outside the `request_id` layer, which saw no id on the request): the `request_id` layer then puts
/// the id in the response's extensions too. A marker of no size: inserting it allocates nothing of
/// its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestIdWanted;

/// For a layer that reads the id: the request's id if a `request_id` layer outside gave it one;
/// otherwise `None`, and a [`RequestIdWanted`] left in the request asks a `request_id` layer inside,
/// if any, to put the id in the response's extensions.
pub fn read_or_ask(req: &mut Request<Body>) -> Option<HeaderValue> {
    match req.extensions().get::<RequestId>() {
        Some(id) => Some(id.0.clone()),
        None => {
            req.extensions_mut().insert(RequestIdWanted);
            None
        }
    }
}

/// Whether `value` is an id to keep: 1 to [`MAX_LEN`] token characters (RFC 9110 §5.6.2).
pub fn is_valid(value: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&value.len())
        && value.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// A new id: this process's random prefix, `-`, and the next value of a counter, in hexadecimal.
pub fn make() -> HeaderValue {
    // The prefix in hexadecimal and its `-`, written once per process.
    static PREFIX: OnceLock<[u8; 17]> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        // std's hasher keys are drawn from the OS's random source once per process; the time and
        // the pid are mixed in for good measure.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        let mut prefix = [b'-'; 17];
        hex(&mut prefix, h.finish(), true);
        prefix
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 33];
    buf[..17].copy_from_slice(prefix);
    let len = 17 + hex(&mut buf[17..], n, false);
    // SAFETY: hexadecimal digits and '-' are valid header value bytes; 33 bytes at most.
    unsafe { crate::values::carve(&buf[..len]) }
}

/// Writes `n` in lowercase hexadecimal (16 digits if `pad`), returning the length written.
fn hex(out: &mut [u8], n: u64, pad: bool) -> usize {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digits = if pad {
        16
    } else {
        (16 - n.leading_zeros() as usize / 4).max(1)
    };
    for (i, slot) in out[..digits].iter_mut().enumerate() {
        *slot = DIGITS[((n >> ((digits - 1 - i) * 4)) & 0xf) as usize];
    }
    digits
}

/// The interceptor behind [`RequestIdLayer`].
#[derive(Clone, Debug)]
pub struct RequestIds {
    header: HeaderName,
    /// Whether the id goes into the request's extensions too.
    tagging: bool,
}

impl RequestIds {
    /// Whether the id is put in the request's extensions as a [`RequestId`] (the default), for
    /// readers inside the layer (an access log, the `errors` layer, an app of the host's). A host
    /// that knows nothing inside reads it turns this off, and the request is spared the box and the
    /// map insert an extension costs.
    pub fn tagging_requests(mut self, tagging: bool) -> Self {
        self.tagging = tagging;
        self
    }
}

impl Interceptor for RequestIds {
    /// The id, and whether a layer outside asked for it in the response's extensions.
    type State = (HeaderValue, bool);

    fn request(&self, req: &mut Request<Body>) -> (HeaderValue, bool) {
        // One lookup of the header, kept or replaced in place.
        let id = match req.headers_mut().entry(&self.header) {
            Entry::Occupied(mut given) => {
                let mut values = given.iter();
                match (values.next(), values.next()) {
                    (Some(v), None) if is_valid(v.as_bytes()) => v.clone(),
                    _ => {
                        let id = make();
                        given.insert(id.clone());
                        id
                    }
                }
            }
            Entry::Vacant(slot) => slot.insert(make()).clone(),
        };
        let extensions = req.extensions_mut();
        let wanted = extensions.get::<RequestIdWanted>().is_some();
        if self.tagging {
            extensions.insert(RequestId(id.clone()));
        }
        (id, wanted)
    }

    fn response(&self, (id, wanted): (HeaderValue, bool), res: &mut Response<Body>) {
        if wanted {
            res.extensions_mut().insert(RequestId(id.clone()));
        }
        res.headers_mut().insert(self.header.clone(), id);
    }
}

/// Gives every request an id.
#[derive(Clone, Debug)]
pub struct RequestIdLayer {
    inner: InterceptLayer<RequestIds>,
}

impl RequestIdLayer {
    /// A layer keeping or making ids in `header`.
    pub fn new(header: HeaderName) -> Self {
        Self {
            inner: InterceptLayer::new(RequestIds {
                header,
                tagging: true,
            }),
        }
    }
}

impl RequestIdLayer {
    /// The interceptor this layer applies: what a host runs without a layer of its own (parapet runs
    /// adjacent guards and interceptors in one future).
    pub fn interceptor(&self) -> &RequestIds {
        self.inner.interceptor()
    }
}

impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = Intercept<RequestIds, S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.inner.layer(inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{Layer, ServiceExt};

    fn service() -> impl tower::Service<
        Request<Body>,
        Response = Response<Body>,
        Error = Infallible,
        Future = impl Send,
    > + Clone {
        let inner = tower::service_fn(|req: Request<Body>| async move {
            let id = req.extensions().get::<RequestId>().unwrap().clone();
            assert_eq!(req.headers()["x-request-id"], id.0);
            let mut res = Response::new(Body::empty());
            res.headers_mut().insert("x-seen", id.0.clone());
            if let Some(tp) = req.headers().get("traceparent") {
                res.headers_mut().insert("x-traceparent", tp.clone());
            }
            Ok::<_, Infallible>(res)
        });
        RequestIdLayer::new(HeaderName::from_static("x-request-id")).layer(inner)
    }

    async fn send(req: Request<Body>) -> Response<Body> {
        service().oneshot(req).await.unwrap()
    }

    #[tokio::test]
    async fn a_valid_incoming_id_is_kept_on_both_sides() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let req = Request::get("/")
            .header("x-request-id", "Abc.123_x~y")
            .header("traceparent", tp)
            .extension(RequestIdWanted)
            .body(Body::empty())
            .unwrap();
        let res = send(req).await;
        assert_eq!(res.headers()["x-request-id"], "Abc.123_x~y");
        assert_eq!(res.headers()["x-seen"], "Abc.123_x~y");
        assert_eq!(res.headers()["x-traceparent"], tp);
        assert_eq!(
            res.extensions().get::<RequestId>().unwrap().as_str(),
            "Abc.123_x~y"
        );
    }

    #[tokio::test]
    async fn an_invalid_or_missing_id_is_replaced_by_a_made_one() {
        let long = "a".repeat(MAX_LEN + 1);
        for bad in [
            None,
            Some("has space"),
            Some("quo\"te"),
            Some(""),
            Some(&long[..]),
        ] {
            let mut req = Request::get("/");
            if let Some(bad) = bad {
                req = req.header("x-request-id", bad);
            }
            let res = send(req.body(Body::empty()).unwrap()).await;
            let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
            assert_ne!(Some(&id[..]), bad);
            assert_eq!(res.headers()["x-seen"], &id[..]);
            let (prefix, n) = id.split_once('-').unwrap();
            assert_eq!(prefix.len(), 16);
            assert!(u64::from_str_radix(n, 16).is_ok());
        }
        let ok = "a".repeat(MAX_LEN);
        let req = Request::get("/")
            .header("x-request-id", &ok)
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(req).await.headers()["x-request-id"], &ok[..]);
    }

    #[tokio::test]
    async fn the_response_carries_the_id_in_its_extensions_only_when_asked() {
        let asked = Request::get("/").extension(RequestIdWanted);
        let res = send(asked.body(Body::empty()).unwrap()).await;
        let id = res.extensions().get::<RequestId>().unwrap();
        assert_eq!(res.headers()["x-request-id"], id.0);
        let res = send(Request::get("/").body(Body::empty()).unwrap()).await;
        assert!(res.extensions().get::<RequestId>().is_none());
        assert!(res.headers().contains_key("x-request-id"));
    }

    #[tokio::test]
    async fn two_ids_in_one_request_are_replaced_by_one_made_id() {
        let req = Request::get("/")
            .header("x-request-id", "one")
            .header("x-request-id", "two")
            .body(Body::empty())
            .unwrap();
        let res = send(req).await;
        assert_eq!(res.headers().get_all("x-request-id").iter().count(), 1);
        assert_ne!(res.headers()["x-request-id"], "one");
    }

    #[tokio::test]
    async fn an_untagging_layer_leaves_the_request_extensions_alone() {
        let ids = RequestIdLayer::new(HeaderName::from_static("x-request-id"))
            .interceptor()
            .clone()
            .tagging_requests(false);
        let inner = tower::service_fn(|req: Request<Body>| async move {
            assert!(req.extensions().get::<RequestId>().is_none());
            let id = req.headers()["x-request-id"].clone();
            let mut res = Response::new(Body::empty());
            res.headers_mut().insert("x-seen", id);
            Ok::<_, Infallible>(res)
        });
        let service = crate::intercept::InterceptLayer::new(ids).layer(inner);
        let req = Request::get("/").extension(RequestIdWanted);
        let res = service
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        // Still on both sides of the exchange, and for an outer reader that asked.
        assert_eq!(res.headers()["x-seen"], res.headers()["x-request-id"]);
        assert_eq!(
            res.extensions().get::<RequestId>().unwrap().0,
            res.headers()["x-request-id"]
        );
    }

    #[test]
    fn made_ids_are_unique_and_valid() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| make()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| is_valid(id.as_bytes())));
        let mut buf = [0u8; 16];
        assert_eq!(hex(&mut buf, 0, false), 1);
        assert_eq!(&buf[..1], b"0");
        assert_eq!(hex(&mut buf, 0x1a3, false), 3);
        assert_eq!(&buf[..3], b"1a3");
    }
}
