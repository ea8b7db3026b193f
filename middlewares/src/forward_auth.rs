//! `forward_auth`: each request is first asked of an authentication service.
//!
//! ```toml
//! [middlewares.sso]
//! kind = "forward_auth"
//! url = "http://127.0.0.1:9000/auth"
//! copy_headers = ["x-user"]    # copied from the service's 2xx answer onto the request
//! timeout = "5s"               # the default
//! ```
//!
//! As Traefik's `forwardAuth` and nginx's `auth_request`: before the request goes on, parapet sends
//! the service a `GET url` with the request's headers (without its body, and without the headers
//! that describe a body or a connection) and `X-Forwarded-Method`, `X-Forwarded-Proto`,
//! `X-Forwarded-Host`, `X-Forwarded-Uri` and `X-Forwarded-For` (the client as `server.trusted_proxies`
//! resolves it). Then:
//!
//! - a **2xx** lets the request through, with the `copy_headers` of the answer set on it (replacing
//!   what the client sent under those names, so that a client cannot forge them);
//! - **any other answer** (a 302 to a login page, a 401 with its challenge, a 403) is the client's
//!   answer, status, headers and body as the service sent them;
//! - a service that cannot be reached or breaks the protocol is a `502` (gateway error
//!   `upstream_unreachable` or `upstream_protocol`); one that does not answer within `timeout`, a
//!   `504` (`upstream_timeout`): the request never goes on unauthenticated.
//!
//! Connections to the service are HTTP/1.1 keep-alive, up to [`MAX_IDLE`] kept idle for the next
//! requests. Only `http://` URLs: the service is expected beside parapet.
//!
//! ```
//! use std::time::Duration;
//!
//! use parapet_middlewares::forward_auth::{ForwardAuthConfig, ForwardAuthLayer};
//!
//! let layer = ForwardAuthLayer::new(ForwardAuthConfig {
//!     url: "http://127.0.0.1:9000/auth".parse().unwrap(),
//!     copy_headers: vec![http::HeaderName::from_static("x-user")],
//!     timeout: Duration::from_secs(5),
//! });
//! # let _ = layer;
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use tower::{Layer, Service};

use crate::{Body, ClientIp, GatewayError, GatewayErrorKind};

/// The most idle connections kept to the service.
pub const MAX_IDLE: usize = 32;

/// The settings of a `forward_auth` layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardAuthConfig {
    /// `url`: an `http://` URL.
    pub url: Uri,
    /// `copy_headers`: headers of a 2xx answer set on the request.
    pub copy_headers: Vec<HeaderName>,
    /// `timeout`: for the service's answer head, connecting included.
    pub timeout: Duration,
}

#[derive(Debug)]
struct Shared {
    config: ForwardAuthConfig,
    /// `host:port` to connect to.
    address: String,
    host: HeaderValue,
    idle: Mutex<Vec<SendRequest<Empty<Bytes>>>>,
}

/// Asks an authentication service about each request.
#[derive(Clone, Debug)]
pub struct ForwardAuthLayer {
    shared: Arc<Shared>,
}

impl ForwardAuthLayer {
    /// A layer asking `config.url`.
    pub fn new(config: ForwardAuthConfig) -> Self {
        let authority = config.url.authority().map_or("", |a| a.as_str()).to_owned();
        let address = match config.url.port_u16() {
            Some(_) => authority.clone(),
            None => format!("{}:80", config.url.host().unwrap_or("")),
        };
        let host =
            HeaderValue::from_str(&authority).unwrap_or_else(|_| HeaderValue::from_static(""));
        Self {
            shared: Arc::new(Shared {
                config,
                address,
                host,
                idle: Mutex::default(),
            }),
        }
    }
}

impl<S> Layer<S> for ForwardAuthLayer {
    type Service = ForwardAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ForwardAuth {
            shared: Arc::clone(&self.shared),
            inner,
        }
    }
}

/// The service built by [`ForwardAuthLayer`].
#[derive(Clone, Debug)]
pub struct ForwardAuth<S> {
    shared: Arc<Shared>,
    inner: S,
}

/// Headers not sent to the service: they describe the request's body or its connection
/// (RFC 9110 §7.6.1), which the service's request does not have.
const NOT_SENT: [HeaderName; 6] = [
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    header::TE,
    header::UPGRADE,
    header::HOST,
];

impl Shared {
    fn auth_request(&self, req: &Request<Body>) -> Request<Empty<Bytes>> {
        let path = self.config.url.path_and_query().map_or("/", |p| p.as_str());
        let mut auth = Request::get(path)
            .body(Empty::new())
            .unwrap_or_else(|_| Request::new(Empty::new()));
        let headers = auth.headers_mut();
        for (name, value) in req.headers() {
            if !NOT_SENT.contains(name) && !name.as_str().starts_with("x-forwarded-") {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.insert(header::HOST, self.host.clone());
        let forwarded = |v: &str| HeaderValue::from_str(v).ok();
        let pairs = [
            ("x-forwarded-method", forwarded(req.method().as_str())),
            (
                "x-forwarded-proto",
                Some(HeaderValue::from_static(
                    if req.uri().scheme_str() == Some("https") {
                        "https"
                    } else {
                        "http"
                    },
                )),
            ),
            (
                "x-forwarded-host",
                req.headers()
                    .get(header::HOST)
                    .cloned()
                    .or_else(|| req.uri().authority().and_then(|a| forwarded(a.as_str()))),
            ),
            (
                "x-forwarded-uri",
                req.uri()
                    .path_and_query()
                    .and_then(|p| forwarded(p.as_str())),
            ),
            (
                "x-forwarded-for",
                ClientIp::of(req.extensions()).and_then(|c| forwarded(&c.ip.to_string())),
            ),
        ];
        for (name, value) in pairs {
            if let Some(value) = value {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
        auth
    }

    async fn connection(&self) -> Result<SendRequest<Empty<Bytes>>, GatewayError> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match idle {
                Some(mut sender) => {
                    if sender.ready().await.is_ok() {
                        return Ok(sender);
                    }
                }
                None => break,
            }
        }
        let stream = tokio::net::TcpStream::connect(&self.address)
            .await
            .map_err(|e| {
                GatewayError::new(GatewayErrorKind::UpstreamUnreachable)
                    .with_detail(format!("forward_auth {}", self.config.url))
                    .with_source(e)
            })?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| {
                    GatewayError::new(GatewayErrorKind::UpstreamProtocol)
                        .with_detail(format!("forward_auth {}", self.config.url))
                        .with_source(e)
                })?;
        tokio::spawn(async move {
            // Ends when the connection closes; its errors show in the requests it carried.
            let _ = connection.await;
        });
        Ok(sender)
    }

    fn keep(&self, sender: SendRequest<Empty<Bytes>>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }

    /// Asks the service: `Ok(headers to copy)` to let the request through, `Err(answer)` otherwise.
    async fn ask(&self, auth: Request<Empty<Bytes>>) -> Result<http::HeaderMap, Response<Body>> {
        let asked = async {
            let mut sender = self.connection().await?;
            let response = sender.send_request(auth).await.map_err(|e| {
                GatewayError::new(GatewayErrorKind::UpstreamProtocol)
                    .with_detail(format!("forward_auth {}", self.config.url))
                    .with_source(e)
            })?;
            Ok::<_, GatewayError>((sender, response))
        };
        let (sender, response) = match tokio::time::timeout(self.config.timeout, asked).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(err)) => return Err(err.into_response()),
            Err(_) => {
                return Err(GatewayError::new(GatewayErrorKind::UpstreamTimeout)
                    .with_detail(format!("forward_auth {}", self.config.url))
                    .into_response())
            }
        };
        if !response.status().is_success() {
            // The service's answer is the client's, as it is.
            let (mut parts, body) = response.into_parts();
            for name in [
                header::CONNECTION,
                header::TRANSFER_ENCODING,
                header::UPGRADE,
            ] {
                parts.headers.remove(name);
            }
            return Err(Response::from_parts(parts, Body::new(body)));
        }
        let (parts, body) = response.into_parts();
        // Read the (small) body to its end so the connection can carry the next question.
        let drained = tokio::time::timeout(self.config.timeout, body.collect()).await;
        if matches!(drained, Ok(Ok(_))) {
            self.keep(sender);
        }
        Ok(parts.headers)
    }
}

impl<S> Service<Request<Body>> for ForwardAuth<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        // The ready service goes with this request; a clone stays for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let auth = shared.auth_request(&req);
            match shared.ask(auth).await {
                Ok(answer) => {
                    let headers = req.headers_mut();
                    for name in &shared.config.copy_headers {
                        // Never what the client sent under that name: only the service's.
                        headers.remove(name);
                        for value in answer.get_all(name) {
                            headers.append(name.clone(), value.clone());
                        }
                    }
                    inner.call(req).await
                }
                Err(answer) => Ok(answer),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::ServiceExt;

    /// A one-handler HTTP/1.1 server on 127.0.0.1:0.
    async fn service<F>(answer: F) -> std::net::SocketAddr
    where
        F: Fn(Request<hyper::body::Incoming>) -> Response<http_body_util::Full<Bytes>>
            + Clone
            + Send
            + Sync
            + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let res = answer(req);
                        async move { Ok::<_, Infallible>(res) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        addr
    }

    fn layer(addr: std::net::SocketAddr, timeout: Duration) -> ForwardAuthLayer {
        ForwardAuthLayer::new(ForwardAuthConfig {
            url: format!("http://{addr}/auth?x=1").parse().unwrap(),
            copy_headers: vec![HeaderName::from_static("x-user")],
            timeout,
        })
    }

    async fn call(layer: &ForwardAuthLayer, token: &str) -> Response<Body> {
        let app = tower::service_fn(|req: Request<Body>| async move {
            let mut res = Response::new(Body::from(Bytes::from_static(b"app")));
            if let Some(user) = req.headers().get("x-user") {
                res.headers_mut().insert("x-app-saw-user", user.clone());
            }
            Ok::<_, Infallible>(res)
        });
        let req = Request::post("/orders?id=3")
            .header("host", "shop.example")
            .header("authorization", token)
            .header("x-user", "forged")
            .body(Body::empty())
            .unwrap();
        layer.layer(app).oneshot(req).await.unwrap()
    }

    #[tokio::test]
    async fn a_2xx_lets_the_request_through_with_the_copied_headers_and_others_are_the_answer() {
        let addr = service(|req| {
            assert_eq!(req.method(), http::Method::GET);
            assert_eq!(req.uri(), "/auth?x=1");
            let h = req.headers();
            assert_eq!(h["x-forwarded-method"], "POST");
            assert_eq!(h["x-forwarded-uri"], "/orders?id=3");
            assert_eq!(h["x-forwarded-host"], "shop.example");
            assert_eq!(h["x-forwarded-proto"], "http");
            if h["authorization"] == "good" {
                let mut res = Response::new(Default::default());
                res.headers_mut()
                    .insert("x-user", HeaderValue::from_static("alice"));
                res
            } else {
                let mut res = Response::new(http_body_util::Full::from("login first"));
                *res.status_mut() = http::StatusCode::FOUND;
                res.headers_mut()
                    .insert("location", HeaderValue::from_static("/login"));
                res
            }
        })
        .await;
        let layer = layer(addr, Duration::from_secs(10));
        for _ in 0..2 {
            let res = call(&layer, "good").await;
            assert_eq!(res.status(), 200);
            assert_eq!(res.headers()["x-app-saw-user"], "alice");
        }
        // The connection was kept for the second question.
        assert_eq!(layer.shared.idle.lock().unwrap().len(), 1);
        let res = call(&layer, "bad").await;
        assert_eq!(res.status(), 302);
        assert_eq!(res.headers()["location"], "/login");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"login first");
    }

    #[tokio::test]
    async fn an_unreachable_service_is_a_502() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let res = call(&layer(addr, Duration::from_secs(10)), "good").await;
        assert_eq!(res.status(), 502);
        assert_eq!(
            res.extensions().get::<GatewayError>().unwrap().kind(),
            GatewayErrorKind::UpstreamUnreachable
        );
    }

    #[tokio::test]
    async fn a_silent_service_is_a_504_after_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts and never answers.
        let _held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let res = call(&layer(addr, Duration::from_millis(200)), "good").await;
        assert_eq!(res.status(), 504);
    }
}
