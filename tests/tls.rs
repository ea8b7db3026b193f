//! TLS termination on listeners, with certificates made at run time (a CA of the test's own) and a
//! real TLS client (tokio-rustls, hyper's client over it).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parapet::server::{ReloadTrigger, Reloader};
use parapet::{Config, Registry, Server};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A CA of the test's own, and the files it writes.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki {
            ca,
            dir: temp_dir(),
        }
    }

    /// A certificate for `names` signed by the CA, written as `NAME.crt` and `NAME.key`; its DER.
    fn leaf(&self, file: &str, names: &[&str]) -> CertificateDer<'static> {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        std::fs::write(self.dir.join(format!("{file}.crt")), cert.pem()).unwrap();
        std::fs::write(self.dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
        cert.der().clone()
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// A client trusting the CA, offering `alpn`, TLS versions `versions`.
    fn client(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
        sni: bool,
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.enable_sni = sni;
        Arc::new(config)
    }
}

/// A client that sends SNI and accepts any certificate: to see which one is served to a name the
/// certificate does not list.
fn trusting_anything() -> Arc<rustls::ClientConfig> {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    #[derive(Debug)]
    struct Anything(Arc<rustls::crypto::CryptoProvider>);
    impl ServerCertVerifier for Anything {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Anything(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

const ALL: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A TLS listener serving `certificates` (file stems in the PKI's directory) with `tls_extra` in its
/// `[listeners.secure.tls]`, one app answering "hello", and `extra` TOML.
fn config(pki: &Pki, certificates: &[&str], tls_extra: &str, extra: &str) -> String {
    let pairs: Vec<String> = certificates
        .iter()
        .map(|c| {
            format!(
                "{{ cert = {:?}, key = {:?} }}",
                pki.path(&format!("{c}.crt")),
                pki.path(&format!("{c}.key"))
            )
        })
        .collect();
    format!(
        r#"
[listeners.secure]
bind = "127.0.0.1:0"
[listeners.secure.tls]
certificates = [{}]
{tls_extra}
[listeners.plain]
bind = "127.0.0.1:0"
[[routes]]
app = "hello"
[apps.hello]
handler = {{ kind = "respond", body = "hello" }}
{extra}
"#,
        pairs.join(", ")
    )
}

async fn start_tls(toml: &str) -> Server {
    start(toml).await
}

/// A TLS connection to `addr` asking for `name` (sent as SNI when `sni` is set on the client).
async fn connect(
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    tokio_rustls::TlsConnector::from(client)
        .connect(name, tcp)
        .await
}

fn peer_leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// Sends GET `path` over HTTP/1.1 on `stream`; the status, headers and body.
async fn h1_get(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: &str,
    path: &str,
) -> (u16, http::HeaderMap, String) {
    let req = http::Request::get(path)
        .header("host", host)
        .body(Empty::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

async fn h1(stream: TlsStream<TcpStream>) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

#[tokio::test]
async fn sni_picks_the_exact_then_the_wildcard_certificate_and_the_first_otherwise() {
    let pki = Pki::new();
    let default = pki.leaf("default", &["default.test"]);
    let exact = pki.leaf("exact", &["api.example.test"]);
    let wildcard = pki.leaf("wildcard", &["*.example.test"]);
    let server = start_tls(&config(&pki, &["default", "wildcard", "exact"], "", "")).await;
    let addr = server.local_addr("secure").unwrap();
    let client = pki.client(ALL, &[], true);

    let s = connect(addr, Arc::clone(&client), "api.example.test")
        .await
        .unwrap();
    assert_eq!(peer_leaf(&s), exact, "an exact name wins over a wildcard");
    let s = connect(addr, Arc::clone(&client), "www.example.test")
        .await
        .unwrap();
    assert_eq!(peer_leaf(&s), wildcard);
    let s = connect(addr, Arc::clone(&client), "default.test")
        .await
        .unwrap();
    assert_eq!(peer_leaf(&s), default);
    // A name no certificate lists gets the default (which a verifying client then refuses), and so
    // does one a wildcard would cover only across two labels.
    assert!(connect(addr, Arc::clone(&client), "a.b.example.test")
        .await
        .is_err());
    for name in ["a.b.example.test", "nomatch.test"] {
        let s = connect(addr, trusting_anything(), name).await.unwrap();
        assert_eq!(peer_leaf(&s), default, "{name}");
    }

    // No SNI at all: the first certificate.
    let no_sni = pki.client(ALL, &[], false);
    let s = connect(addr, no_sni, "default.test").await.unwrap();
    assert_eq!(peer_leaf(&s), default);
}

#[tokio::test]
async fn alpn_h2_and_http1_are_both_served_and_x_forwarded_proto_is_https() {
    let pki = Pki::new();
    pki.leaf("site", &["site.test"]);
    let upstream = upstream(|req: http::Request<hyper::body::Incoming>| async move {
        let proto = req
            .headers()
            .get("x-forwarded-proto")
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .unwrap_or_default();
        text(200, format!("{:?} {proto}", req.version()))
    })
    .await;
    let extra = format!(
        r#"
[apps.proxied]
upstream = "backend"
[upstreams.backend]
servers = ["http://{upstream}"]
[[routes]]
path = "/up"
app = "proxied"
"#
    );
    let server = start_tls(&config(&pki, &["site"], "", &extra)).await;
    let addr = server.local_addr("secure").unwrap();

    // HTTP/1.1 by ALPN.
    let s = connect(addr, pki.client(ALL, &[b"http/1.1"], true), "site.test")
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut sender = h1(s).await;
    let (status, _, body) = h1_get(&mut sender, "site.test", "/up").await;
    assert_eq!((status, body.as_str()), (200, "HTTP/1.1 https"));
    // The same connection serves on.
    let (status, _, body) = h1_get(&mut sender, "site.test", "/").await;
    assert_eq!((status, body.as_str()), (200, "hello"));

    // HTTP/2 by ALPN.
    let s = connect(
        addr,
        pki.client(ALL, &[b"h2", b"http/1.1"], true),
        "site.test",
    )
    .await
    .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("https://site.test/up")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    // The upstream is spoken to in HTTP/1.1 whatever the client spoke.
    assert_eq!(body, "HTTP/1.1 https");

    // No ALPN at all: HTTP/1.1.
    let s = connect(addr, pki.client(ALL, &[], true), "site.test")
        .await
        .unwrap();
    let mut sender = h1(s).await;
    assert_eq!(h1_get(&mut sender, "site.test", "/").await.2, "hello");

    // The plain listener of the same gateway still says http.
    let plain = server.local_addr("plain").unwrap();
    assert_eq!(get(plain, None, "/up").await.2, "HTTP/1.1 http");
}

#[tokio::test]
async fn min_version_1_3_refuses_a_client_that_speaks_only_1_2() {
    let pki = Pki::new();
    pki.leaf("site", &["site.test"]);
    let server = start_tls(&config(&pki, &["site"], r#"min_version = "1.3""#, "")).await;
    let addr = server.local_addr("secure").unwrap();
    let only_12 = pki.client(&[&rustls::version::TLS12], &[], true);
    assert!(connect(addr, only_12, "site.test").await.is_err());
    let s = connect(addr, pki.client(ALL, &[], true), "site.test")
        .await
        .unwrap();
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );

    // By default TLS 1.2 is accepted.
    let default = start_tls(&config(&pki, &["site"], "", "")).await;
    let only_12 = pki.client(&[&rustls::version::TLS12], &[], true);
    let s = connect(default.local_addr("secure").unwrap(), only_12, "site.test")
        .await
        .unwrap();
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
}

#[tokio::test]
async fn certificates_replaced_on_disk_are_served_after_a_reload_and_open_connections_go_on() {
    let pki = Pki::new();
    let old = pki.leaf("site", &["site.test"]);
    let path = pki.dir.join("parapet.toml");
    std::fs::write(&path, config(&pki, &["site"], "", "")).unwrap();
    let registry = Registry::new();
    let server = Arc::new(
        Server::start(Config::load(&path, &registry).unwrap(), registry)
            .await
            .unwrap(),
    );
    let addr = server.local_addr("secure").unwrap();
    let client = pki.client(ALL, &[], true);
    let open = connect(addr, Arc::clone(&client), "site.test")
        .await
        .unwrap();
    assert_eq!(peer_leaf(&open), old);
    let mut open = h1(open).await;
    assert_eq!(h1_get(&mut open, "site.test", "/").await.2, "hello");

    // certbot's way: new files over the old ones, then SIGHUP (the same config text).
    let new = pki.leaf("site", &["site.test"]);
    assert_ne!(old, new);
    let reloader = Reloader::new(Arc::clone(&server), &path);
    reloader.reload(ReloadTrigger::Signal).await.unwrap();

    // A new client (no session to resume) is shown the new certificate.
    let fresh = pki.client(ALL, &[], true);
    let s = connect(addr, fresh, "site.test").await.unwrap();
    assert_eq!(peer_leaf(&s), new);
    assert_eq!(h1_get(&mut h1(s).await, "site.test", "/").await.2, "hello");
    // The first client resumes its session across the reload: the ticket keys were kept.
    let s = connect(addr, Arc::clone(&client), "site.test")
        .await
        .unwrap();
    assert_eq!(
        s.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    // The connection opened before goes on, on its own session.
    assert_eq!(h1_get(&mut open, "site.test", "/").await.2, "hello");
}

#[tokio::test]
async fn plain_http_or_garbage_on_a_tls_port_is_closed_and_others_are_served() {
    let pki = Pki::new();
    pki.leaf("site", &["site.test"]);
    let server = start_tls(&config(&pki, &["site"], "", "")).await;
    let addr = server.local_addr("secure").unwrap();
    for bytes in [
        &b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n"[..],
        &b"\x16\x03\x01\x00\x05garbage-after-a-record-header"[..],
    ] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(bytes).await.unwrap();
        let mut answer = Vec::new();
        // The server ends the connection (with an alert at most): the read ends.
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
            .await
            .expect("the connection is closed");
        assert!(read.is_err() || !answer.starts_with(b"HTTP/"), "{answer:?}");
    }
    let s = connect(addr, pki.client(ALL, &[], true), "site.test")
        .await
        .unwrap();
    assert_eq!(h1_get(&mut h1(s).await, "site.test", "/").await.2, "hello");
}

#[tokio::test]
async fn a_stalled_handshake_is_closed_by_the_header_timeout() {
    let pki = Pki::new();
    pki.leaf("site", &["site.test"]);
    let server = start_tls(&config(
        &pki,
        &["site"],
        "",
        "[server]\nheader_timeout = \"1s\"",
    ))
    .await;
    let addr = server.local_addr("secure").unwrap();
    let started = Instant::now();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // The beginning of a record header, then nothing.
    tcp.write_all(b"\x16\x03").await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut rest))
        .await
        .expect("the stalled handshake is closed");
    assert!(read.is_err() || rest.len() < 64);
    assert!(started.elapsed() >= Duration::from_millis(900));
}

/// Starts nothing: the config's build error, as text.
fn build_error(toml: &str) -> String {
    let registry = Registry::new();
    let config = Config::parse("bad.toml", toml, &registry).unwrap();
    parapet::build::check(&config, &registry)
        .unwrap_err()
        .to_string()
}

fn line_of(toml: &str, needle: &str) -> usize {
    toml.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[tokio::test]
async fn bad_pairs_are_refused_with_their_line() {
    let pki = Pki::new();
    pki.leaf("one", &["one.test"]);
    pki.leaf("two", &["two.test"]);
    std::fs::write(
        pki.path("garbage.crt"),
        "-----BEGIN CERTIFICATE-----\n!!!\n",
    )
    .unwrap();
    let path = |p: &str| pki.path(p).display().to_string();
    let toml = format!(
        r#"
[listeners.secure]
bind = "127.0.0.1:0"
[listeners.secure.tls]
certificates = [
  {{ cert = "{}", key = "{}" }},
  {{ cert = "{}", key = "{}" }},
  {{ cert = "{}", key = "{}" }},
]
[[routes]]
app = "hello"
[apps.hello]
handler = {{ kind = "respond", body = "hello" }}
"#,
        path("one.crt"),
        path("two.key"),
        path("garbage.crt"),
        path("one.key"),
        path("one.crt"),
        path("missing.key"),
    );
    let errors = build_error(&toml);
    let mismatched = line_of(&toml, "two.key");
    let garbage = line_of(&toml, "garbage.crt");
    let missing = line_of(&toml, "missing.key");
    assert!(
        errors.contains(&format!("bad.toml:{mismatched}:")) && errors.contains("does not match"),
        "{errors}"
    );
    assert!(
        errors.contains(&format!("bad.toml:{garbage}:")) && errors.contains("garbage.crt"),
        "{errors}"
    );
    assert!(
        errors.contains(&format!("bad.toml:{missing}:")) && errors.contains("missing.key"),
        "{errors}"
    );
    // The server refuses to start on it too.
    let registry = Registry::new();
    let config = Config::parse("bad.toml", &toml, &registry).unwrap();
    assert!(Server::start(config, registry).await.is_err());
}

#[tokio::test]
async fn a_tls_connection_released_while_idle_serves_its_next_requests_and_they_are_logged() {
    let pki = Pki::new();
    pki.leaf("site", &["site.test"]);
    let log = pki.path("access.log");
    let extra = format!(
        r#"
[server]
idle_release = "0s"
[middlewares.log]
kind = "access_log"
format = "json"
path = {log:?}
"#
    );
    // The log around the TLS listener: `middlewares` is the listener's, before its `.tls` table.
    let toml = config(&pki, &["site"], "", &extra).replacen(
        "[listeners.secure.tls]",
        "middlewares = [\"log\"]\n[listeners.secure.tls]",
        1,
    );
    let server = start_tls(&toml).await;
    let addr = server.local_addr("secure").unwrap();
    let s = connect(addr, pki.client(ALL, &[], true), "site.test")
        .await
        .unwrap();
    let mut sender = h1(s).await;
    // Released the moment it is idle: each next request is read by a new hyper connection, first
    // from what rustls decrypted while it waited.
    for _ in 0..5 {
        assert_eq!(h1_get(&mut sender, "site.test", "/").await.2, "hello");
    }
    // Lines are written by a thread: wait for all five.
    let started = Instant::now();
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= 5 || started.elapsed() > Duration::from_secs(10) {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let line = lines.lines().next().expect("a log line");
    let json: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(json["sni"], "site.test", "{line}");
    assert_eq!(json["tls_version"], "TLSv1.3", "{line}");
}

#[tokio::test]
async fn a_listener_gains_and_loses_tls_on_reload() {
    let pki = Pki::new();
    pki.leaf("site", &["site.test"]);
    let tls = config(&pki, &["site"], "", "");
    let plain = tls.replace("[listeners.secure.tls]", "").replace(
        &tls[tls.find("certificates = ").unwrap()..tls.find("\n[listeners.plain]").unwrap()],
        "",
    );
    let registry = Registry::new();
    let server = Arc::new(
        Server::start(
            Config::parse("t.toml", &plain, &registry).unwrap(),
            registry.clone(),
        )
        .await
        .unwrap(),
    );
    let addr = server.local_addr("secure").unwrap();
    assert_eq!(get(addr, None, "/").await.2, "hello");

    server
        .reload(Config::parse("t.toml", &tls, &registry).unwrap())
        .await
        .unwrap();
    let addr = server.local_addr("secure").unwrap();
    let s = connect(addr, pki.client(ALL, &[], true), "site.test")
        .await
        .unwrap();
    assert_eq!(h1_get(&mut h1(s).await, "site.test", "/").await.2, "hello");

    server
        .reload(Config::parse("t.toml", &plain, &registry).unwrap())
        .await
        .unwrap();
    let addr = server.local_addr("secure").unwrap();
    assert_eq!(get(addr, None, "/").await.2, "hello");
}

#[cfg(feature = "wsgi")]
#[tokio::test]
async fn a_wsgi_app_sees_https_as_its_url_scheme_over_tls() {
    let pki = Pki::new();
    pki.leaf("site", &["site.test"]);
    let extra = format!(
        r#"
[[routes]]
path = "/py"
app = "pep"
[apps.pep]
handler = {{ kind = "wsgi", app = "pep:application", pythonpath = ["{}/tests/wsgi_apps"], threads = 1 }}
"#,
        env!("CARGO_MANIFEST_DIR")
    );
    let server = start_tls(&config(&pki, &["site"], "", &extra)).await;
    let s = connect(
        server.local_addr("secure").unwrap(),
        pki.client(ALL, &[], true),
        "site.test",
    )
    .await
    .unwrap();
    let (status, _, body) = h1_get(&mut h1(s).await, "site.test", "/py/env").await;
    assert_eq!(status, 200, "{body}");
    let env: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(env["wsgi.url_scheme"], "https");
    assert_eq!(env["SERVER_PORT"], "443");
    // The plain listener of the same gateway: http.
    let plain = server.local_addr("plain").unwrap();
    let env: serde_json::Value =
        serde_json::from_str(&get(plain, None, "/py/env").await.2).unwrap();
    assert_eq!(env["wsgi.url_scheme"], "http");
}

#[tokio::test]
async fn certificates_replaced_on_disk_are_picked_up_by_the_watch_without_a_signal() {
    let pki = Pki::new();
    let old = pki.leaf("site", &["site.test"]);
    // The config in a directory of its own: the certificates' directory is watched for them.
    let conf_dir = pki.dir.join("conf");
    std::fs::create_dir(&conf_dir).unwrap();
    let path = conf_dir.join("parapet.toml");
    std::fs::write(&path, config(&pki, &["site"], "", "")).unwrap();
    let registry = Registry::new();
    let server = Arc::new(
        Server::start(Config::load(&path, &registry).unwrap(), registry)
            .await
            .unwrap(),
    );
    let _watch = parapet::reload::watch(Arc::clone(&server), &path).unwrap();
    let addr = server.local_addr("secure").unwrap();
    let s = connect(addr, pki.client(ALL, &[], true), "site.test")
        .await
        .unwrap();
    assert_eq!(peer_leaf(&s), old);

    // A renewal writes new files; the config's text is the same.
    let new = pki.leaf("site", &["site.test"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = connect(addr, pki.client(ALL, &[], true), "site.test")
            .await
            .unwrap();
        if peer_leaf(&s) == new {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        server.reload_status().last.map(|a| a.trigger),
        Some(ReloadTrigger::Certificates)
    );
}

/// A response that ends its connection (`Connection: close`) ends it cleanly: over TLS with the
/// `close_notify` alert before the TCP close (a client that reads to the end gets no
/// "unexpected EOF", which rustls reports for a close without it), in plain HTTP with the close
/// alone, the whole response read first either way.
#[tokio::test]
async fn a_last_response_closes_with_close_notify_over_tls_and_a_fin_in_plain_http() {
    let pki = Pki::new();
    pki.leaf("site", &["site.test"]);
    let server = start_tls(&config(&pki, &["site"], "", "")).await;
    let tls = connect(
        server.local_addr("secure").unwrap(),
        pki.client(ALL, &[], true),
        "site.test",
    )
    .await
    .unwrap();
    let tcp = TcpStream::connect(server.local_addr("plain").unwrap())
        .await
        .unwrap();
    for answer in [last_answer(tls).await, last_answer(tcp).await] {
        let answer = answer.expect("closed cleanly (over TLS: with close_notify)");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("hello"), "{answer}");
    }
}

/// Sends a `Connection: close` GET on `stream` and reads to the end: the answer, or the read's
/// error.
async fn last_answer<S>(mut stream: S) -> std::io::Result<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the connection is closed")?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}
