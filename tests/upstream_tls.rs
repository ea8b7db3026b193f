//! TLS to upstreams and the upstream protocol: `https://` servers verified against a private CA
//! made by the test (rcgen), `tls.server_name`, `tls.verify = false`, HTTP/2 chosen by ALPN or by
//! prior knowledge (h2c), trailers both ways, and one multiplexed connection per server.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parapet::{Body, Registry};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

/// A private CA, and certificates it issues.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "parapet test CA");
        let cert = params.self_signed(&key).unwrap();
        Ca {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    /// A certificate and key for `names` (DNS names or IP addresses).
    fn issue(&self, names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert.der().clone(), key)
    }

    /// Writes the CA's certificate in a new directory; its path.
    fn write(&self) -> String {
        let path = temp_dir().join("ca.pem");
        std::fs::write(&path, &self.pem).unwrap();
        path.display().to_string()
    }
}

/// A test upstream: its address, the connections it accepted and the SNI each one sent.
struct TestUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    sni: Arc<Mutex<Vec<Option<String>>>>,
}

/// Answers with what it saw: `VERSION URI te=TE body=BODY trailer=X-REQ-TRAILER`, and the trailer
/// `grpc-status: 0` (a gRPC-like exchange).
async fn echo(req: Request<Incoming>) -> Response<Body> {
    let version = req.version();
    let uri = req.uri().clone();
    let te = req
        .headers()
        .get("te")
        .map(|v| v.to_str().unwrap_or("?").to_owned())
        .unwrap_or_default();
    let collected = req.into_body().collect().await.unwrap();
    let trailer = collected
        .trailers()
        .and_then(|t| t.get("x-req-trailer"))
        .map(|v| v.to_str().unwrap_or("?").to_owned())
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
    let text = format!("{version:?} {uri} te={te} body={body} trailer={trailer}");
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let body = Full::new(Bytes::from(text)).with_trailers(async move { Some(Ok(trailers)) });
    Response::new(Body::new(body))
}

fn service() -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(
        |req| async move { Ok::<_, std::convert::Infallible>(echo(req).await) },
    )
}

/// An https upstream with `cert`, offering `alpn`; HTTP/2 only if `h2_only`, else either.
async fn tls_upstream(
    cert: (CertificateDer<'static>, PrivateKeyDer<'static>),
    alpn: &[&[u8]],
    h2_only: bool,
) -> TestUpstream {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.0], cert.1)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = TestUpstream {
        addr: listener.local_addr().unwrap(),
        connections: Arc::default(),
        sni: Arc::default(),
    };
    let (connections, sni) = (up.connections.clone(), up.sni.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            connections.fetch_add(1, Ordering::SeqCst);
            let (acceptor, sni) = (acceptor.clone(), sni.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                sni.lock()
                    .unwrap()
                    .push(tls.get_ref().1.server_name().map(str::to_owned));
                let io = TokioIo::new(tls);
                if h2_only {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service())
                        .await;
                } else {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service())
                        .await;
                }
            });
        }
    });
    up
}

/// A plain-TCP upstream speaking HTTP/2 only (h2c with prior knowledge, as gRPC servers do).
async fn h2c_upstream() -> TestUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = TestUpstream {
        addr: listener.local_addr().unwrap(),
        connections: Arc::default(),
        sni: Arc::default(),
    };
    let connections = up.connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service())
                    .await;
            });
        }
    });
    up
}

fn config(server: &str, extra: &str) -> String {
    format!(
        r#"
[listeners.main]
bind = "127.0.0.1:0"
[[routes]]
app = "api"
[apps.api]
upstream = "backend"
[upstreams.backend]
servers = ["{server}"]
connect_timeout = "5s"
{extra}
"#
    )
}

#[tokio::test]
async fn an_https_upstream_with_a_private_ca_is_refused_without_tls_ca_and_served_with_it() {
    let ca = Ca::new();
    let up = tls_upstream(ca.issue(&["127.0.0.1"]), &[b"http/1.1"], false).await;
    let url = format!("https://{}", up.addr);

    // The system's roots do not know the test's CA: the handshake fails, 502.
    let server = start(&config(&url, "")).await;
    let (status, _, _) = get(server.local_addr("main").unwrap(), None, "/a?b").await;
    assert_eq!(status, 502);

    let ca_path = ca.write();
    let server = start(&config(&url, &format!("tls = {{ ca = \"{ca_path}\" }}"))).await;
    let (status, _, body) = get(server.local_addr("main").unwrap(), None, "/a?b").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("HTTP/1.1 /a?b "), "{body}");
    // An IP host is verified as an IP, and sent as no SNI (RFC 6066 §3 names hosts only).
    let sni = up.sni.lock().unwrap().clone();
    assert!(
        !sni.is_empty() && sni.iter().all(Option::is_none),
        "{sni:?}"
    );
}

#[tokio::test]
async fn server_name_is_sent_as_sni_and_verified_in_the_certificate() {
    let ca = Ca::new();
    let up = tls_upstream(ca.issue(&["api.internal"]), &[], false).await;
    let url = format!("https://{}", up.addr);
    let ca_path = ca.write();

    // The certificate is not for 127.0.0.1.
    let server = start(&config(&url, &format!("tls = {{ ca = \"{ca_path}\" }}"))).await;
    let (status, _, _) = get(server.local_addr("main").unwrap(), None, "/").await;
    assert_eq!(status, 502);

    let tls = format!("tls = {{ ca = \"{ca_path}\", server_name = \"api.internal\" }}");
    let server = start(&config(&url, &tls)).await;
    let (status, _, body) = get(
        server.local_addr("main").unwrap(),
        Some("shop.example"),
        "/",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        up.sni.lock().unwrap().last().cloned().flatten().as_deref(),
        Some("api.internal")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_false_accepts_any_certificate_and_warns_at_load() {
    let ca = Ca::new();
    let up = tls_upstream(ca.issue(&["elsewhere.example"]), &[], false).await;
    let toml = config(&format!("https://{}", up.addr), "tls = { verify = false }");
    let process = tokio::task::block_in_place(|| Process::run(&toml, &["main"]));
    let (status, _, body) = get(process.addr("main"), None, "/").await;
    assert_eq!(status, 200, "{body}");
    let stderr = process.stderr();
    assert!(
        stderr.contains("WARN") && stderr.contains("tls.verify = false"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_h2_only_tls_upstream_is_spoken_to_in_http2_chosen_by_alpn() {
    let ca = Ca::new();
    let up = tls_upstream(ca.issue(&["127.0.0.1"]), &[b"h2"], true).await;
    let tls = format!("tls = {{ ca = \"{}\" }}", ca.write());
    let server = start(&config(&format!("https://{}", up.addr), &tls)).await;
    let (status, _, body) = get(
        server.local_addr("main").unwrap(),
        Some("shop.example"),
        "/x",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The target is absolute over HTTP/2, its authority the request's host (RFC 9113 §8.3.1).
    assert!(
        body.starts_with("HTTP/2.0 https://shop.example/x "),
        "{body}"
    );
}

#[tokio::test]
async fn protocol_chooses_what_alpn_offers_over_tls() {
    let ca = Ca::new();
    let up = tls_upstream(ca.issue(&["127.0.0.1"]), &[b"h2", b"http/1.1"], false).await;
    let url = format!("https://{}", up.addr);
    let ca_path = ca.write();
    for (protocol, expect) in [
        ("h2", "HTTP/2.0 "),
        ("auto", "HTTP/2.0 "),
        ("http1", "HTTP/1.1 "),
    ] {
        let extra = format!("protocol = \"{protocol}\"\ntls = {{ ca = \"{ca_path}\" }}");
        let server = start(&config(&url, &extra)).await;
        let (status, _, body) = get(server.local_addr("main").unwrap(), None, "/").await;
        assert_eq!(status, 200, "{protocol}: {body}");
        assert!(body.starts_with(expect), "{protocol}: {body}");
    }
}

#[tokio::test]
async fn protocol_h2_over_tls_without_alpn_speaks_http2_anyway() {
    let ca = Ca::new();
    let up = tls_upstream(ca.issue(&["127.0.0.1"]), &[], true).await;
    let extra = format!("protocol = \"h2\"\ntls = {{ ca = \"{}\" }}", ca.write());
    let server = start(&config(&format!("https://{}", up.addr), &extra)).await;
    let (status, _, body) = get(server.local_addr("main").unwrap(), None, "/").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("HTTP/2.0 "), "{body}");
}

#[tokio::test]
async fn h2c_prior_knowledge_carries_a_grpc_like_exchange_with_trailers_both_ways() {
    let up = h2c_upstream().await;
    let server = start(&config(&format!("http://{}", up.addr), "protocol = \"h2\"")).await;
    let addr = server.local_addr("main").unwrap();

    let mut req_trailers = HeaderMap::new();
    req_trailers.insert("x-req-trailer", HeaderValue::from_static("sent"));
    let body = Full::new(Bytes::from_static(b"\0\0\0\0\x05hello"))
        .with_trailers(async move { Some(Ok(req_trailers)) });
    let req = Request::post(format!("http://{addr}/pkg.Service/Method"))
        .header("te", "trailers")
        .header("content-type", "application/grpc")
        .body(Body::new(body))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(20), h2c_client().request(req))
        .await
        .expect("an answer within 20s")
        .expect("the request succeeds");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("response trailers");
    assert_eq!(trailers["grpc-status"], "0");
    let text = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
    assert!(text.starts_with("HTTP/2.0 http://"), "{text}");
    assert!(text.contains(" te=trailers "), "{text}");
    assert!(text.contains("body=\0\0\0\0\x05hello "), "{text}");
    assert!(text.ends_with("trailer=sent"), "{text}");
}

#[tokio::test]
async fn te_other_than_trailers_is_not_forwarded_to_an_h2_upstream() {
    let up = h2c_upstream().await;
    let server = start(&config(&format!("http://{}", up.addr), "protocol = \"h2\"")).await;
    let addr = server.local_addr("main").unwrap();
    let req = Request::get(format!("http://{addr}/"))
        .header("te", "gzip")
        .body(Body::empty())
        .unwrap();
    let response = h2c_client().request(req).await.unwrap();
    let text = String::from_utf8_lossy(&response.into_body().collect().await.unwrap().to_bytes())
        .into_owned();
    assert!(text.contains(" te= "), "{text}");
}

#[tokio::test]
async fn concurrent_requests_to_an_h2_upstream_share_one_connection() {
    let up = h2c_upstream().await;
    let server = start(&config(&format!("http://{}", up.addr), "protocol = \"h2\"")).await;
    let addr = server.local_addr("main").unwrap();
    let requests: Vec<_> = (0..64)
        .map(|i| tokio::spawn(async move { get(addr, None, &format!("/{i}")).await }))
        .collect();
    for (i, request) in requests.into_iter().enumerate() {
        let (status, _, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&format!("/{i} ")), "{body}");
    }
    assert_eq!(up.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_https_upstream_and_h2_over_tls_also_serve_many_requests_on_one_connection() {
    let ca = Ca::new();
    let up = tls_upstream(ca.issue(&["127.0.0.1"]), &[b"h2"], true).await;
    let tls = format!("tls = {{ ca = \"{}\" }}", ca.write());
    let server = start(&config(&format!("https://{}", up.addr), &tls)).await;
    let addr = server.local_addr("main").unwrap();
    let requests: Vec<_> = (0..32)
        .map(|_| tokio::spawn(async move { get(addr, None, "/").await }))
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap().0, 200);
    }
    assert_eq!(up.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn a_bad_ca_file_is_refused_with_its_line() {
    let dir = temp_dir();
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let text = format!(
        r#"[listeners.a]
bind = "127.0.0.1:0"
[upstreams.missing]
servers = ["https://127.0.0.1:1"]
tls = {{ ca = "{}" }}
[upstreams.garbage]
servers = ["https://127.0.0.1:1"]
tls = {{ server_name = "api.internal", ca = "{}" }}
"#,
        dir.join("missing.pem").display(),
        garbage.display()
    );
    let registry = Registry::new();
    let config = parapet::Config::parse("t.toml", &text, &registry).unwrap();
    for errs in [
        parapet::build::check(&config, &registry).unwrap_err().0,
        parapet::build::Gateway::build(&config, &registry, None)
            .unwrap_err()
            .0,
    ] {
        let found: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            found,
            [
                (5, "upstreams.missing.tls.ca"),
                (8, "upstreams.garbage.tls.ca")
            ],
            "{errs:#?}"
        );
        assert!(errs[0].message.contains("cannot use CA file"), "{errs:#?}");
        assert!(errs[1].message.contains("no certificate"), "{errs:#?}");
    }
}

#[test]
fn protocol_and_tls_keys_are_validated() {
    let text = r#"[listeners.a]
bind = "127.0.0.1:0"
[upstreams.plain]
servers = ["http://127.0.0.1:1"]
protocol = "h3"
tls = { verify = false }
[upstreams.secure]
servers = ["https://127.0.0.1:1"]
tls = { server_name = "not a name", verify = "no", extra = 1 }
"#;
    let errs = parapet::Config::parse("t.toml", text, &Registry::new())
        .unwrap_err()
        .0;
    let found: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        found,
        [
            (5, "upstreams.plain.protocol"),
            (6, "upstreams.plain.tls"),
            (9, "upstreams.secure.tls.server_name"),
            (9, "upstreams.secure.tls.verify"),
            (9, "upstreams.secure.tls.extra"),
        ],
        "{errs:#?}"
    );
}

#[tokio::test]
async fn a_replaced_ca_file_is_read_again_by_a_reload() {
    let (right, wrong) = (Ca::new(), Ca::new());
    let up = tls_upstream(right.issue(&["127.0.0.1"]), &[], false).await;
    let ca_path = wrong.write();
    let toml = config(
        &format!("https://{}", up.addr),
        &format!("tls = {{ ca = \"{ca_path}\" }}"),
    );
    let registry = Registry::new();
    let parsed = parapet::Config::parse("t.toml", &toml, &registry).unwrap();
    let server = Arc::new(
        parapet::Server::start(parsed, registry.clone())
            .await
            .unwrap(),
    );
    let addr = server.local_addr("main").unwrap();
    assert_eq!(get(addr, None, "/").await.0, 502);

    // The same config text, the CA file replaced (as a certificate rotation does).
    std::fs::write(&ca_path, &right.pem).unwrap();
    let same = parapet::Config::parse("t.toml", &toml, &registry).unwrap();
    server.reload(same).await.unwrap();
    let (status, _, body) = get(addr, None, "/").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn auto_over_tls_falls_back_to_pooled_http1_when_alpn_chooses_it() {
    let ca = Ca::new();
    let up = tls_upstream(ca.issue(&["127.0.0.1"]), &[b"http/1.1"], false).await;
    let tls = format!("tls = {{ ca = \"{}\" }}", ca.write());
    let server = start(&config(&format!("https://{}", up.addr), &tls)).await;
    let addr = server.local_addr("main").unwrap();
    let requests: Vec<_> = (0..16)
        .map(|_| tokio::spawn(async move { get(addr, None, "/").await }))
        .collect();
    for request in requests {
        let (status, _, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("HTTP/1.1 / "), "{body}");
    }
    // `te: trailers` is for HTTP/2 only: over HTTP/1.1 it would need `Connection: TE`.
    let req = Request::get(format!("http://{addr}/"))
        .header("te", "trailers")
        .body(Body::empty())
        .unwrap();
    let response = h2c_client().request(req).await.unwrap();
    let text = String::from_utf8_lossy(&response.into_body().collect().await.unwrap().to_bytes())
        .into_owned();
    assert!(text.starts_with("HTTP/1.1 / te= "), "{text}");
    // Sequential requests then reuse the pooled connections: no new handshake.
    let opened = up.connections.load(Ordering::SeqCst);
    for _ in 0..8 {
        assert_eq!(get(addr, None, "/").await.0, 200);
    }
    assert_eq!(up.connections.load(Ordering::SeqCst), opened);
}

#[tokio::test]
async fn a_closed_h2_connection_is_replaced_by_a_new_one() {
    // An h2c upstream that closes each connection once it has answered one request.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
    let counted = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let (answered_tx, answered_rx) = tokio::sync::oneshot::channel::<()>();
                let answered_tx = Arc::new(Mutex::new(Some(answered_tx)));
                let service = hyper::service::service_fn(move |req| {
                    let answered_tx = answered_tx.clone();
                    async move {
                        let response = echo(req).await;
                        if let Some(tx) = answered_tx.lock().unwrap().take() {
                            let _ = tx.send(());
                        }
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = answered_rx => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
                let _ = closed_tx.send(());
            });
        }
    });
    let server = start(&config(&format!("http://{addr}"), "protocol = \"h2\"")).await;
    let parapet = server.local_addr("main").unwrap();
    for round in 1..=3 {
        let (status, _, body) = get(parapet, None, "/").await;
        assert_eq!(status, 200, "round {round}: {body}");
        closed_rx.recv().await.unwrap();
    }
    assert_eq!(connections.load(Ordering::SeqCst), 3);
}

/// An h2c upstream: `/stall` answers a head and `hello`, then nothing more (its stream held open
/// until parapet resets it); anything else is [`echo`]ed.
async fn h2c_stalling_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                if req.uri().path() != "/stall" {
                    return Ok::<_, std::convert::Infallible>(echo(req).await);
                }
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                let _ = tx.send(Bytes::from_static(b"hello")).await;
                // Held until the body is dropped (the stream reset).
                tokio::spawn(async move { tx.closed().await });
                Ok(Response::new(channel_body(rx)))
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_h2_response_holds_its_servers_max_connections_permit_until_its_body_ends() {
    let up = h2c_stalling_upstream().await;
    let extra = "protocol = \"h2\"\nmax_connections = 1\nqueue_timeout = \"200ms\"";
    let server = start(&config(&format!("http://{up}"), extra)).await;
    let parapet = server.local_addr("main").unwrap();
    let stalled = client()
        .request(
            Request::get(format!("http://{parapet}/stall"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(stalled.status(), 200);
    // One stream in flight on the shared connection: the server is at its limit.
    let (status, headers, body) = get(parapet, None, "/").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers["retry-after"], "1");
    drop(stalled);
}

#[tokio::test]
async fn read_timeout_resets_a_stalled_h2_response_and_frees_its_permit() {
    let up = h2c_stalling_upstream().await;
    // A long queue_timeout: the next request waits for the permit rather than racing its release.
    let extra =
        "protocol = \"h2\"\nread_timeout = \"300ms\"\nmax_connections = 1\nqueue_timeout = \"10s\"";
    let server = start(&config(&format!("http://{up}"), extra)).await;
    let parapet = server.local_addr("main").unwrap();
    let response = client()
        .request(
            Request::get(format!("http://{parapet}/stall"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .expect("the body ends well before 10 s");
    assert!(body.is_err(), "a stalled body is aborted, not ended");
    let (status, _, body) = get(parapet, None, "/").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("HTTP/2.0"), "{body}");
}

#[tokio::test]
async fn an_h2_request_that_could_not_reach_a_server_is_sent_to_the_next() {
    let up = h2c_upstream().await;
    let dead = dead_address().await;
    let toml = config(&format!("http://{dead}"), "protocol = \"h2\"").replace(
        &format!("servers = [\"http://{dead}\"]"),
        &format!("servers = [\"http://{dead}\", \"http://{}\"]", up.addr),
    );
    let server = start(&toml).await;
    let parapet = server.local_addr("main").unwrap();
    // Round robin: one of the two requests is tried on the dead server first.
    for round in 1..=2 {
        let (status, _, body) = get(parapet, None, "/x").await;
        assert_eq!(status, 200, "round {round}: {body}");
        assert!(
            body.starts_with(&format!("HTTP/2.0 http://{parapet}/x ")),
            "round {round}: {body}"
        );
    }
    assert_eq!(up.connections.load(Ordering::SeqCst), 1);
}
