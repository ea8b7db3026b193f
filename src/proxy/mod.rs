//! The upstream endpoint: parapet as a reverse proxy.
//!
//! A request's life through an upstream (`Upstream::forward`) is four phases, each a function
//! documented where it is defined:
//!
//! 1. `Upstream::choose_server`: which of the upstream's servers takes the request (round robin);
//! 2. `upstream_request`: the request as the server gets it: origin-form target with the server's
//!    base path, hop-by-hop headers removed, forwarding headers set (believed only from a trusted
//!    proxy), `Host` kept, HTTP/1.1 (`te: trailers` kept for a server that may speak HTTP/2);
//! 3. `Upstream::send`: over the server's pool of kept-alive connections (`pool`: HTTP/1.1, or one
//!    multiplexed HTTP/2 connection; over TLS for `https://` servers, `tls`), bounded by
//!    `connect_timeout`, and by `timeout` from the end of the request body until the response head
//!    arrives;
//! 4. `upstream_response` or `Upstream::gateway_error`: the answer, with hop-by-hop headers removed
//!    and the body streaming back untouched; or a failure as a typed [`GatewayError`]: unreachable 502,
//!    timeout 504, broken protocol 502 (an ambiguously framed response head included), and the
//!    client's own request body broken or cut short 400, blamed on the client.
//!
//! Bodies are never buffered: hyper moves frames between the two connections with backpressure, and an
//! upstream body that breaks off mid-way surfaces as a body error, which aborts the client's connection.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::Version;
use parapet_middlewares::{ClientIp, ErrorChain, GatewayError, GatewayErrorKind, UpstreamResponse};

mod pool;
mod tls;

use pool::{ServerPool, Transport, Upload};

use crate::config::{ConfigError, UpstreamConfig, UpstreamServer};
use crate::{AppService, ClientAddr, Error, Request, Response};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The hop-by-hop headers of RFC 9110 §7.6.1 (and the obsolete `Keep-Alive` and `Proxy-Connection`),
/// which describe one connection and are never forwarded. Every `Proxy-*` header is removed too.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
];

/// Removes hop-by-hop headers: the fixed list, every `Proxy-*` header, and every header named in any
/// `Connection` line (RFC 9110 §7.6.1: "a proxy or gateway MUST parse a received Connection header
/// field before a message is forwarded and, for each connection-option in this field, remove any
/// header or trailer field(s) from the message with the same name").
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if headers.keys().any(|k| k.as_str().starts_with("proxy-")) {
        let proxy: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for name in proxy {
            headers.remove(name);
        }
    }
}

/// An upstream built from its config: its servers, their connection pools and its round-robin cursor.
pub struct Upstream {
    config: Arc<UpstreamConfig>,
    /// Each server's display name, shared with every response it answers.
    names: Vec<Arc<str>>,
    pools: Vec<Arc<ServerPool>>,
    next: AtomicUsize,
    /// The `tls.ca` file's contents as built with, to tell on reload whether it was replaced.
    ca_file: Option<Vec<u8>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the upstream and its servers' (empty) connection pools, with its TLS client config if
    /// it has `https://` servers (`tls.ca` read now: an unusable one is an error at `ca`).
    pub fn new(config: Arc<UpstreamConfig>) -> Result<Arc<Self>, ConfigError> {
        let names = config
            .servers
            .iter()
            .map(|s| Arc::from(s.to_string()))
            .collect();
        let connector = tls::client_config(&config, false)?.map(tokio_rustls::TlsConnector::from);
        let mut pools = Vec::with_capacity(config.servers.len());
        for s in &config.servers {
            let https = s.scheme == http::uri::Scheme::HTTPS;
            let tls = match &connector {
                Some(connector) if https => {
                    Some((connector.clone(), tls::server_name(&config, s)?))
                }
                _ => None,
            };
            // Without a port in the URL, the scheme's (RFC 9110 §4.2).
            let port = s
                .authority
                .port_u16()
                .unwrap_or(if https { 443 } else { 80 });
            let transport = Transport {
                tls,
                protocol: config.protocol,
                scheme: s.scheme.clone(),
            };
            pools.push(ServerPool::new(
                format!("{}:{port}", s.authority.host()),
                config.connect_timeout,
                config.max_idle,
                transport,
            ));
        }
        let ca_file = config.tls.ca.as_ref().and_then(|p| std::fs::read(p).ok());
        Ok(Arc::new(Self {
            config,
            names,
            pools,
            next: AtomicUsize::new(0),
            ca_file,
        }))
    }

    /// Whether the `tls.ca` file (if any) still holds what this upstream was built with: a reload
    /// keeps an unchanged upstream only if so, so a replaced CA file is picked up by a reload.
    pub fn ca_file_unchanged(&self) -> bool {
        match &self.config.tls.ca {
            None => true,
            Some(path) => std::fs::read(path).ok() == self.ca_file,
        }
    }

    /// What building this upstream would refuse, without building it: a `tls.ca` that cannot be
    /// used, a server name TLS cannot verify. Reads files; opens, binds and starts nothing.
    pub fn check(config: &UpstreamConfig) -> Result<(), ConfigError> {
        tls::client_config(config, true)?;
        for s in &config.servers {
            if s.scheme == http::uri::Scheme::HTTPS {
                tls::server_name(config, s)?;
            }
        }
        Ok(())
    }

    /// The config this upstream was built from.
    pub fn config(&self) -> &Arc<UpstreamConfig> {
        &self.config
    }

    /// The endpoint service proxying to this upstream.
    pub fn service(self: &Arc<Self>) -> AppService {
        let upstream = Arc::clone(self);
        AppService::from_fn(move |req| {
            let upstream = Arc::clone(&upstream);
            Box::pin(async move { Ok(upstream.forward(req).await) })
        })
    }

    /// Proxies one request: the four phases of the module docs.
    async fn forward(self: Arc<Self>, req: Request) -> Response {
        let chosen = self.choose_server();
        let req = match upstream_request(chosen.server, req, chosen.pool.may_h2()) {
            Ok(req) => req,
            Err(err) => return err.into_response(),
        };
        let answer = self.send(&chosen, req).await;
        match answer.and_then(|response| upstream_response(chosen.name, response)) {
            Ok(response) => response,
            Err(failure) => self.gateway_error(&chosen, failure).into_response(),
        }
    }

    /// Phase 1: the server that takes the request. Round robin over every server today; this is
    /// where balancing, health and retries will go.
    fn choose_server(&self) -> Chosen<'_> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.config.servers.len();
        Chosen {
            server: &self.config.servers[index],
            pool: &self.pools[index],
            name: &self.names[index],
        }
    }

    /// Phase 3: sends the request over the chosen server's pool (the pool bounds connecting by
    /// `connect_timeout`), waiting at most the upstream's `timeout` for the response head, counted
    /// from the end of the request body: a long upload is not a timeout. While the body is going,
    /// `timeout` bounds each wait for the upstream to take more of it; a wait for the client to send
    /// more is the client's, bounded by `server.body_timeout`. A request body that failed by the
    /// client's fault (a `GatewayError` of the client's side among its causes) is answered with that
    /// error.
    ///
    /// Cost: a request without a body, one timer as before; with a body, the same timer re-armed as
    /// the body goes (once per `timeout`, and once at its end), and [`Upload`]'s one allocation.
    async fn send(&self, chosen: &Chosen<'_>, req: Request) -> Result<Response, Failure> {
        let timeout = self.config.timeout;
        let (req, upload) = Upload::track(req).await.map_err(Failure::RequestBody)?;
        let sending = chosen.pool.send(req, upload.clone());
        let Some(upload) = upload else {
            return match tokio::time::timeout(timeout, sending).await {
                Ok(result) => result,
                Err(_elapsed) => Err(Failure::TimedOut),
            };
        };
        tokio::pin!(sending);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut sent = upload.progress().0;
        let mut uploading = true;
        loop {
            tokio::select! {
                biased;
                result = &mut sending => return result,
                () = upload.finished(), if uploading => {
                    uploading = false;
                    deadline.as_mut().reset(tokio::time::Instant::now() + timeout);
                }
                () = &mut deadline => {
                    let (now_sent, waiting_on_client) = upload.progress();
                    if !uploading || (now_sent == sent && !waiting_on_client) {
                        return Err(Failure::TimedOut);
                    }
                    sent = now_sent;
                    deadline.as_mut().reset(tokio::time::Instant::now() + timeout);
                }
            }
        }
    }

    /// Phase 4, when no usable response came: logs the failure and types it. A connection that
    /// could not be opened is `UpstreamUnreachable` (502), one that broke before the response head
    /// or a head whose body framing is ambiguous `UpstreamProtocol` (502), no response head within
    /// `timeout` `UpstreamTimeout` (504); a request body that failed on the client's side keeps the
    /// kind it came with (`ClientBody` 400, `ClientClosed`, or a layer's own), logged as the client's.
    fn gateway_error(&self, chosen: &Chosen<'_>, failure: Failure) -> GatewayError {
        let name = chosen.name;
        match failure {
            Failure::RequestBody(err) => {
                tracing::info!(upstream = %self.config.name, server = %name, error = %ErrorChain(&err), "request body failed on the client's side");
                err
            }
            Failure::Framing(why) => {
                tracing::warn!(upstream = %self.config.name, server = %name, error = why, "upstream response refused");
                GatewayError::new(GatewayErrorKind::UpstreamProtocol)
                    .with_detail(format!("{name}: {why}"))
            }
            Failure::Send(err) => {
                let kind = match err {
                    Error::UpstreamConnect { .. } => GatewayErrorKind::UpstreamUnreachable,
                    _ => GatewayErrorKind::UpstreamProtocol,
                };
                tracing::warn!(upstream = %self.config.name, server = %name, error = %ErrorChain(&err), "upstream request failed");
                GatewayError::new(kind)
                    .with_detail(name.to_string())
                    .with_source(err)
            }
            Failure::TimedOut => {
                tracing::warn!(upstream = %self.config.name, server = %name, timeout = ?self.config.timeout, "upstream timed out");
                GatewayError::new(GatewayErrorKind::UpstreamTimeout).with_detail(format!(
                    "{name}: no response head within {:?} of the request's end, or its body not \
                     taken for as long",
                    self.config.timeout
                ))
            }
        }
    }
}

/// The server [`Upstream::choose_server`] chose for a request.
struct Chosen<'a> {
    server: &'a UpstreamServer,
    pool: &'a Arc<ServerPool>,
    /// Its display name, shared with every response it answers.
    name: &'a Arc<str>,
}

/// Why a request got no usable response head.
pub(crate) enum Failure {
    /// The pool could not connect, or the connection failed.
    Send(Error),
    /// The request's own body failed on the client's side: its framing broken, the client gone
    /// before its end, or a layer refusing it; the error it answers with.
    RequestBody(GatewayError),
    /// No response head within the upstream's `timeout`.
    TimedOut,
    /// The response head frames its body ambiguously (why, for the log).
    Framing(&'static str),
}

/// Phase 2: the request as `server` gets it.
///
/// - The target is in origin form, the path and query only, as HTTP/1.1 to an origin server takes it
///   (RFC 9112 §3.2.1), after the server's base path if it has one. A target that cannot be
///   forwarded is a `BadRequest`.
/// - Hop-by-hop headers are removed ([`remove_hop_by_hop`]; those the client's `Connection` named
///   are already gone, see [`crate::router::admit`]); the forwarding headers are set
///   ([`set_forwarded`]).
/// - `Host` is the host the request was routed by: the URI's authority if it has one (HTTP/2 clients
///   send no `Host`; RFC 9112 §3.2.2), else its `Host`, else the server's authority.
/// - The version is HTTP/1.1, whatever the client spoke (the pool makes the request HTTP/2 if the
///   connection is).
/// - `te: trailers` is kept when the server may speak HTTP/2 (`may_h2`): RFC 9113 §8.2.2 allows it
///   there, and gRPC servers require it to know the client reads trailers; every other `TE` value
///   is hop-by-hop (RFC 9110 §10.1.4).
fn upstream_request(
    server: &UpstreamServer,
    req: Request,
    may_h2: bool,
) -> Result<Request, GatewayError> {
    let (mut parts, body) = req.into_parts();
    // The host the request was routed by: a URI authority (HTTP/2, absolute form) wins over
    // `Host` (RFC 9112 §3.2.2), as in the router, so the upstream is told the same site.
    let original_host = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    };
    // HTTP/1.1 to an origin server takes the origin form: the path and query only (RFC 9112 §3.2.1).
    let uri = if server.base_path.is_empty() {
        match parts.uri.path_and_query() {
            Some(pq) => Uri::from(pq.clone()),
            None => Uri::from_static("/"),
        }
    } else {
        let pq = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
        match Uri::try_from(format!("{}{}", server.base_path, pq)) {
            Ok(uri) => uri,
            Err(_) => {
                return Err(GatewayError::new(GatewayErrorKind::BadRequest)
                    .with_detail("request target cannot be forwarded"))
            }
        }
    };

    let peer = parts.extensions.get::<ClientAddr>().map(|c| c.0.ip());
    // Nothing vouches for a request that did not come through parapet's server.
    let peer_trusted = ClientIp::of(&parts.extensions).is_some_and(|c| c.peer_trusted);
    let headers = &mut parts.headers;
    let te_trailers = may_h2
        && headers.get_all(header::TE).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',').any(|t| {
                    t.split(';')
                        .next()
                        .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
                })
            })
        });
    remove_hop_by_hop(headers);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    set_forwarded(headers, peer, peer_trusted, original_host.as_ref());
    let host = original_host.or_else(|| HeaderValue::from_str(server.authority.as_str()).ok());
    if let Some(host) = host {
        headers.insert(header::HOST, host);
    }
    parts.uri = uri;
    // The upstream connection is HTTP/1.1 whatever the client spoke.
    parts.version = Version::HTTP_11;
    Ok(http::Request::from_parts(parts, body))
}

/// Phase 4, when a response came: hop-by-hop headers removed, and an [`UpstreamResponse`] extension
/// naming the server (`name`) and its status, for the access log. The body streams back untouched.
///
/// A head with both `Transfer-Encoding` and `Content-Length` is refused (`Failure::Framing`, 502):
/// RFC 9112 §6.1 calls it a possible attempt at response splitting or smuggling, and hyper's client
/// reads such a body by its `Transfer-Encoding` and passes the `Content-Length` on, which would
/// frame the body sent to the client differently from the one read (a truncated 200). The
/// connection goes with the dropped response. Two different `Content-Length` values (§6.3) never
/// get here: hyper's client refuses that head itself.
fn upstream_response(name: &Arc<str>, response: Response) -> Result<Response, Failure> {
    if response.headers().contains_key(header::TRANSFER_ENCODING)
        && response.headers().contains_key(header::CONTENT_LENGTH)
    {
        return Err(Failure::Framing(
            "response has both Transfer-Encoding and Content-Length (RFC 9112 §6.1)",
        ));
    }
    let (mut parts, body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    parts.extensions.insert(UpstreamResponse {
        server: Arc::clone(name),
        status: parts.status,
    });
    Ok(Response::from_parts(parts, body))
}

/// The scheme the client spoke to parapet, as `X-Forwarded-Proto` tells it: the one place that
/// decides it (plain HTTP until listeners speak TLS).
fn client_scheme() -> HeaderValue {
    HeaderValue::from_static("http")
}

/// Sets the forwarding headers. What a client says about earlier hops is believed only from a peer
/// in `server.trusted_proxies` (`peer_trusted`):
///
/// - from a trusted proxy, `X-Forwarded-For` is appended to with the peer's address, and
///   `X-Forwarded-Proto`, `X-Forwarded-Host`, `Forwarded` and `X-Real-IP` are kept as it sent them
///   (the first two set as for any peer if it sent none);
/// - from any other peer they are replaced by what parapet saw itself: `X-Forwarded-For` is the
///   peer's address, `X-Forwarded-Proto` the scheme it spoke, `X-Forwarded-Host` the host the
///   request was routed by (`host`), and `Forwarded` and `X-Real-IP`, which parapet does not write,
///   are removed.
fn set_forwarded(
    headers: &mut HeaderMap,
    peer: Option<IpAddr>,
    peer_trusted: bool,
    host: Option<&HeaderValue>,
) {
    if let Some(peer) = peer {
        // The address is formatted on the stack: the header value is the only allocation.
        let mut buf = [0u8; 64];
        let len = {
            use std::io::Write;
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(cursor, "{}", peer.to_canonical());
            cursor.position() as usize
        };
        let ip = &buf[..len];
        let mut prior = headers.get_all(&X_FORWARDED_FOR).iter().peekable();
        let value = if !peer_trusted || prior.peek().is_none() {
            HeaderValue::from_bytes(ip).ok()
        } else {
            let mut joined = Vec::with_capacity(64);
            for v in prior {
                joined.extend_from_slice(v.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(ip);
            HeaderValue::from_bytes(&joined).ok()
        };
        match value {
            Some(value) => headers.insert(X_FORWARDED_FOR.clone(), value),
            None => headers.remove(&X_FORWARDED_FOR),
        };
    } else if !peer_trusted {
        headers.remove(&X_FORWARDED_FOR);
    }
    if !peer_trusted || !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO.clone(), client_scheme());
    }
    if !peer_trusted || !headers.contains_key(&X_FORWARDED_HOST) {
        match host {
            Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host.clone()),
            None => headers.remove(&X_FORWARDED_HOST),
        };
    }
    if !peer_trusted {
        headers.remove(header::FORWARDED);
        headers.remove(&X_REAL_IP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_connection_named_ones_are_removed() {
        let mut h = HeaderMap::new();
        h.append("connection", HeaderValue::from_static("close, x-one"));
        h.append("connection", HeaderValue::from_static("X-Two"));
        h.insert("x-one", HeaderValue::from_static("1"));
        h.insert("x-two", HeaderValue::from_static("2"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("trailer", HeaderValue::from_static("x-sum"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("proxy-authorization", HeaderValue::from_static("basic x"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn forwarded_for_appends_to_every_prior_line() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("2.2.2.2"));
        let host = HeaderValue::from_static("example.com");
        set_forwarded(&mut h, Some("10.0.0.9".parse().unwrap()), true, Some(&host));
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com");
    }

    #[test]
    fn forwarding_headers_from_an_untrusted_peer_are_replaced() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("2.2.2.2"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-forwarded-host", HeaderValue::from_static("bank.example"));
        h.insert("forwarded", HeaderValue::from_static("for=1.1.1.1"));
        h.insert("x-real-ip", HeaderValue::from_static("1.1.1.1"));
        let host = HeaderValue::from_static("example.com");
        set_forwarded(
            &mut h,
            Some("::ffff:10.0.0.9".parse().unwrap()),
            false,
            Some(&host),
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert!(h.get("forwarded").is_none());
        assert!(h.get("x-real-ip").is_none());
    }

    #[test]
    fn forwarding_headers_from_a_trusted_proxy_are_kept() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-forwarded-host", HeaderValue::from_static("www.example"));
        h.insert("forwarded", HeaderValue::from_static("for=1.1.1.1"));
        h.insert("x-real-ip", HeaderValue::from_static("1.1.1.1"));
        set_forwarded(&mut h, Some("10.0.0.9".parse().unwrap()), true, None);
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "www.example");
        assert_eq!(h["forwarded"], "for=1.1.1.1");
        assert_eq!(h["x-real-ip"], "1.1.1.1");
    }
}
