//! Automatic HTTPS against a real ACME server: Debian's `pebble` (the ACME test server Let's Encrypt
//! publishes) and `pebble-challtestsrv` as its DNS, answering 127.0.0.1 for every name. Each test
//! runs its own on free loopback ports, with `PEBBLE_VA_NOSLEEP=1` so validations happen at once.
//! Pebble validates `http-01` and `tls-alpn-01` against the ports its config names (`httpPort`,
//! `tlsPort`): parapet's listeners' ports.
//!
//! Pebble's directory is served over TLS with a certificate of the test's own CA (the `ca` of
//! `[acme]`); the certificates it issues chain to a root made at its start, fetched from its
//! management API (`/roots/0`) and the only root the test clients trust.
//!
//! Without the `pebble` package (`apt-get install pebble`), these tests fail, saying so.

mod common;

use std::future::Future;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

/// Where Debian installs pebble's binaries.
const BIN: &str = "/usr/bin";

/// A binary of the pebble package, or a failure saying how to get it.
fn tool(name: &str) -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    candidates
        .into_iter()
        .chain([PathBuf::from(BIN)])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` not found on PATH or in {BIN}: the ACME tests run Debian's pebble \
                 package (apt-get install pebble), an ACME server for tests"
            )
        })
}

/// A loopback TCP port free now, for a server (parapet, pebble) that binds it a moment later.
///
/// Picked below the system's ephemeral range, not by binding port 0: a port from that range, once
/// released, can be taken at once as the source port of any outgoing connection (the tests' own
/// clients, pebble's), and the server's bind then fails with "address in use". Below the range no
/// connection is given one, and each is handed out once per test process.
fn free_port() -> u16 {
    free_below_ephemeral(|port| TcpListener::bind(("127.0.0.1", port)).is_ok())
}

/// A loopback port free for both UDP and TCP now: the DNS server binds both.
fn free_dns_port() -> u16 {
    free_below_ephemeral(|port| {
        UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
    })
}

/// A port from 20000 up to the ephemeral range's start (`ip_local_port_range`), not handed out
/// before in this process, for which `free` holds.
fn free_below_ephemeral(free: impl Fn(u16) -> bool) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    const LOW: u16 = 20_000;
    let high = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|&start| start > LOW + 1_000)
        .unwrap_or(32_768);
    let mut given = GIVEN.lock().unwrap();
    loop {
        // A random port: each `RandomState` hashes with keys of its own.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_usize(given.len());
        let port = LOW + (hasher.finish() % u64::from(high - LOW)) as u16;
        if !given.contains(&port) && free(port) {
            given.push(port);
            return port;
        }
    }
}

/// Polls `check` every 50 ms until it gives a value, failing after `limit`.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running pebble and pebble-challtestsrv.
struct Pebble {
    pebble: Child,
    dns: Child,
    dir: PathBuf,
    /// The directory URL.
    directory: String,
    management: SocketAddr,
    /// The CA that signed pebble's own TLS certificate: `[acme] ca`.
    ca: PathBuf,
    ca_der: CertificateDer<'static>,
}

impl Pebble {
    /// Starts pebble validating `http-01` on `http_port` and `tls-alpn-01` on `tls_port`, issuing
    /// certificates valid for `validity` seconds (pebble's default, 5 years, if `None`).
    async fn start(http_port: u16, tls_port: u16, validity: Option<u64>) -> Pebble {
        let (pebble_bin, dns_bin) = (tool("pebble"), tool("pebble-challtestsrv"));
        let dir = temp_dir();

        // Pebble's own TLS: a CA of the test's, and a certificate for 127.0.0.1 and localhost.
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("pebble.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("pebble.key"), key.serialize_pem()).unwrap();

        let (listen, management, dns, dns_management) =
            (free_port(), free_port(), free_dns_port(), free_port());
        let mut config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{listen}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": dir.join("pebble.pem"),
                "privateKey": dir.join("pebble.key"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }
        });
        if let Some(seconds) = validity {
            config["pebble"]["certificateValidityPeriod"] = seconds.into();
        }
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();

        let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let dns_server = Command::new(dns_bin)
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-management", &format!("127.0.0.1:{dns_management}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdin(Stdio::null())
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .expect("pebble-challtestsrv starts");
        let pebble = Command::new(pebble_bin)
            .arg("-config")
            .arg(dir.join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            // Validate at once; never reuse an authorization, so that each order is validated;
            // reject no nonce at random, so that a test does not depend on the client's retry.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_AUTHZREUSE", "0")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdin(Stdio::null())
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("pebble starts");
        let mut running = Pebble {
            pebble,
            dns: dns_server,
            directory: format!("https://127.0.0.1:{listen}/dir"),
            management: SocketAddr::from(([127, 0, 0, 1], management)),
            ca: dir.join("ca.pem"),
            ca_der: ca.der().clone(),
            dir,
        };
        for port in [listen, management, dns_management] {
            let up = eventually(Duration::from_secs(20), "pebble listening", || {
                let exited = running.pebble.try_wait().unwrap().is_some()
                    || running.dns.try_wait().unwrap().is_some();
                async move {
                    if exited {
                        return Some(false);
                    }
                    TcpStream::connect(("127.0.0.1", port))
                        .await
                        .ok()
                        .map(|_| true)
                }
            })
            .await;
            assert!(up, "pebble exited:\n{}", running.logs());
        }
        running
    }

    /// What pebble and its DNS server logged.
    fn logs(&self) -> String {
        [
            "pebble.log",
            "pebble.err",
            "challtestsrv.log",
            "challtestsrv.err",
        ]
        .iter()
        .map(|f| {
            format!(
                "--- {f}\n{}",
                std::fs::read_to_string(self.dir.join(f)).unwrap_or_default()
            )
        })
        .collect()
    }

    /// The root the certificates pebble issues chain to, from its management API.
    async fn root(&self) -> CertificateDer<'static> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let tls = tls_client(roots);
        let tcp = TcpStream::connect(self.management).await.unwrap();
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get("/roots/0")
            .header("host", self.management.to_string())
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.send_request(req).await.unwrap();
        assert_eq!(response.status(), 200);
        let pem = response.into_body().collect().await.unwrap().to_bytes();
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(&pem).expect("a PEM root from /roots/0")
    }

    /// Stops pebble: no order can be placed any more.
    fn stop(&mut self) {
        let _ = self.pebble.kill();
        let _ = self.pebble.wait();
        let _ = self.dns.kill();
        let _ = self.dns.wait();
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TLS client trusting `roots` only, offering HTTP/1.1.
fn tls_client(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The chain `addr` serves to a client asking for `name` and trusting only `root`: the handshake
/// verifies it (chain, name, validity), or fails.
async fn verified_chain(
    addr: SocketAddr,
    name: &str,
    root: &CertificateDer<'static>,
) -> Result<Vec<CertificateDer<'static>>, std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let tcp = TcpStream::connect(addr).await?;
    let stream = tokio_rustls::TlsConnector::from(tls_client(roots))
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await?;
    Ok(stream
        .get_ref()
        .1
        .peer_certificates()
        .unwrap_or_default()
        .to_vec())
}

/// A GET of `/` for `name` over a verified TLS connection: the status.
async fn https_get(addr: SocketAddr, name: &str, root: &CertificateDer<'static>) -> u16 {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls_client(roots))
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", name)
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    sender.send_request(req).await.unwrap().status().as_u16()
}

/// The `[acme]` table for `pebble`, storing under `storage`.
fn acme_table(pebble: &Pebble, storage: &Path, challenge: &str) -> String {
    format!(
        r#"
[acme]
email = "ops@example.com"
directory = "{}"
ca = "{}"
storage = "{}"
challenge = "{challenge}"
retry = "1s"
"#,
        pebble.directory,
        pebble.ca.display(),
        storage.display()
    )
}

/// A TLS listener `https` at `bind` obtaining a certificate for `names`, answering "hello".
fn https_config(bind: &str, names: &[&str], acme: &str, extra: &str) -> String {
    let names: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    format!(
        r#"
[listeners.https]
bind = "{bind}"
[listeners.https.tls]
acme = [{}]
{extra}
[[routes]]
app = "hello"

[apps.hello]
handler = {{ kind = "respond", status = 200, body = "hello\n" }}
{acme}"#,
        names.join(", ")
    )
}

/// A metric's value in parapet's exposition, if the series exists.
fn metric(series: &str) -> Option<f64> {
    let text = parapet::metrics::global().encode();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn tls_alpn_01_obtains_a_certificate_that_verifies_against_pebbles_root() {
    let port = free_port();
    let mut pebble = Pebble::start(free_port(), port, None).await;
    let storage = temp_dir().join("acme");
    let toml = https_config(
        &format!("127.0.0.1:{port}"),
        &["alpn.example.com", "www.alpn.example.com"],
        &acme_table(&pebble, &storage, "tls-alpn-01"),
        "",
    );
    let server = start(&toml).await;
    let addr = server.local_addr("https").unwrap();
    let root = pebble.root().await;

    let chain = eventually(Duration::from_secs(60), "a certificate from pebble", || {
        let root = root.clone();
        async move { verified_chain(addr, "alpn.example.com", &root).await.ok() }
    })
    .await;
    // One certificate for the listener's names: the other name is served the same.
    let other = verified_chain(addr, "www.alpn.example.com", &root)
        .await
        .expect("the second name verifies too");
    assert_eq!(chain[0], other[0]);
    assert!(chain.len() >= 2, "the chain holds pebble's intermediate");
    assert_eq!(https_get(addr, "alpn.example.com", &root).await, 200);

    // Stored, the owner's alone.
    let stored: Vec<PathBuf> = walk(&storage);
    let cert = stored
        .iter()
        .find(|p| p.ends_with("alpn.example.com+www.alpn.example.com/cert.pem"))
        .unwrap_or_else(|| panic!("no stored certificate in {stored:?}"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&storage), 0o700);
        assert_eq!(mode(cert), 0o600);
        assert_eq!(mode(&cert.with_file_name("key.pem")), 0o600);
        let account = stored
            .iter()
            .find(|p| p.ends_with("account.json"))
            .expect("the account is stored");
        assert_eq!(mode(account), 0o600);
    }
    // The expiry gauge, for each name.
    let left = metric(
        r#"parapet_tls_certificate_expiry_seconds{listener="https",name="www.alpn.example.com",source="acme"}"#,
    )
    .expect("an expiry gauge for the ACME certificate");
    assert!(left > 86_400.0, "{left}");
    assert_eq!(
        metric(
            r#"parapet_acme_orders_total{names="alpn.example.com,www.alpn.example.com",outcome="issued"}"#
        ),
        Some(1.0)
    );
    server.shutdown_within(Duration::from_secs(1)).await;
    pebble.stop();
}

#[tokio::test]
async fn http_01_is_answered_before_routing_even_where_every_request_is_redirected() {
    let http_port = free_port();
    let mut pebble = Pebble::start(http_port, free_port(), None).await;
    let storage = temp_dir().join("acme");
    // The plain listener redirects everything to https: the challenge must not be.
    let plain = format!(
        r#"
[listeners.http]
bind = "127.0.0.1:{http_port}"

[[routes]]
listener = "http"
app = "to_https"

[apps.to_https]
handler = {{ kind = "redirect", to = "https://http01.example.com/", status = 308 }}
"#
    );
    let toml = format!(
        "{plain}\n{}",
        https_config(
            "127.0.0.1:0",
            &["http01.example.com"],
            &acme_table(&pebble, &storage, "http-01"),
            "",
        )
        .replace(
            "[[routes]]\napp = \"hello\"",
            "[[routes]]\nlistener = \"https\"\napp = \"hello\""
        )
    );
    let server = start(&toml).await;
    let addr = server.local_addr("https").unwrap();
    let root = pebble.root().await;

    eventually(
        Duration::from_secs(60),
        "a certificate through http-01",
        || {
            let root = root.clone();
            async move { verified_chain(addr, "http01.example.com", &root).await.ok() }
        },
    )
    .await;
    assert_eq!(https_get(addr, "http01.example.com", &root).await, 200);
    // Everything else on the plain listener is still redirected, challenge paths included.
    let (status, _, _) = get(
        SocketAddr::from(([127, 0, 0, 1], http_port)),
        Some("http01.example.com"),
        "/.well-known/acme-challenge/unknown",
    )
    .await;
    assert_eq!(status, 308);
    server.shutdown_within(Duration::from_secs(1)).await;
    pebble.stop();
}

#[tokio::test]
async fn a_restarted_parapet_serves_its_stored_certificate_at_once_without_an_order() {
    let port = free_port();
    let mut pebble = Pebble::start(free_port(), port, None).await;
    let storage = temp_dir().join("acme");
    let acme = acme_table(&pebble, &storage, "tls-alpn-01");
    let server = start(&https_config(
        &format!("127.0.0.1:{port}"),
        &["restart.example.com"],
        &acme,
        "",
    ))
    .await;
    let addr = server.local_addr("https").unwrap();
    let root = pebble.root().await;
    let first = eventually(Duration::from_secs(60), "a certificate from pebble", || {
        let root = root.clone();
        async move {
            verified_chain(addr, "restart.example.com", &root)
                .await
                .ok()
        }
    })
    .await;
    server.shutdown_within(Duration::from_secs(1)).await;
    drop(server);
    // No ACME server any more: whatever is served next comes from storage.
    pebble.stop();

    let started = Instant::now();
    let process = Process::run(
        &https_config("127.0.0.1:0", &["restart.example.com"], &acme, ""),
        &["https"],
    );
    let addr = process.addr("https");
    let served = eventually(
        Duration::from_secs(2),
        "the stored certificate served by the restarted parapet",
        || {
            let root = root.clone();
            async move {
                verified_chain(addr, "restart.example.com", &root)
                    .await
                    .ok()
            }
        },
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(served[0], first[0], "the same certificate, from storage");
    let log = process.stderr();
    assert!(
        log.contains("ACME certificate loaded from storage"),
        "{log}"
    );
    assert!(!log.contains("ACME order starting"), "no new order:\n{log}");
}

#[tokio::test]
async fn a_certificate_is_renewed_when_a_third_of_its_life_remains_without_a_restart() {
    let port = free_port();
    // Certificates valid for 9 seconds: due for renewal 6 seconds after issuance.
    let mut pebble = Pebble::start(free_port(), port, Some(9)).await;
    let storage = temp_dir().join("acme");
    let server = start(&https_config(
        &format!("127.0.0.1:{port}"),
        &["renew.example.com"],
        &acme_table(&pebble, &storage, "tls-alpn-01"),
        "",
    ))
    .await;
    let addr = server.local_addr("https").unwrap();
    let root = pebble.root().await;
    let first = eventually(Duration::from_secs(60), "a first certificate", || {
        let root = root.clone();
        async move { verified_chain(addr, "renew.example.com", &root).await.ok() }
    })
    .await;
    let renewed = eventually(Duration::from_secs(60), "a renewed certificate", || {
        let (root, first) = (root.clone(), first[0].clone());
        async move {
            verified_chain(addr, "renew.example.com", &root)
                .await
                .ok()
                .filter(|chain| chain[0] != first)
        }
    })
    .await;
    assert_ne!(renewed[0], first[0]);
    // And stored: what a restart would serve.
    let stored = walk(&storage)
        .into_iter()
        .find(|p| p.ends_with("renew.example.com/cert.pem"))
        .unwrap();
    let pem = std::fs::read(stored).unwrap();
    use rustls::pki_types::pem::PemObject;
    let on_disk: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_ne!(on_disk[0], first[0]);
    server.shutdown_within(Duration::from_secs(1)).await;
    pebble.stop();
}

#[tokio::test]
async fn an_unreachable_directory_leaves_the_server_serving_and_the_order_retried() {
    let dead = dead_address().await;
    let storage = temp_dir().join("acme");
    let toml = format!(
        r#"
[listeners.http]
bind = "127.0.0.1:0"
{}"#,
        https_config(
            "127.0.0.1:0",
            &["down.example.com"],
            &format!(
                r#"
[acme]
directory = "https://{dead}/dir"
storage = "{}"
retry = "1s"
"#,
                storage.display()
            ),
            "",
        )
    );
    let server = start(&toml).await;
    // Serving at once, over plain HTTP, while the order fails.
    let http = server.local_addr("http").unwrap();
    let (status, _, body) = get(http, None, "/").await;
    assert_eq!((status, body.as_str()), (200, "hello\n"));
    // Retried, with backoff: 1 s, then 2 s.
    eventually(Duration::from_secs(15), "a second failed order", || async {
        metric(r#"parapet_acme_orders_total{names="down.example.com",outcome="failed"}"#)
            .filter(|n| *n >= 2.0)
    })
    .await;
    // No certificate for the name: the handshake is refused, the server stays up.
    let https = server.local_addr("https").unwrap();
    let key = KeyPair::generate().unwrap();
    let some_root = CertificateParams::new(vec!["root.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    assert!(verified_chain(https, "down.example.com", some_root.der())
        .await
        .is_err());
    let (status, _, _) = get(http, None, "/").await;
    assert_eq!(status, 200);
    server.shutdown_within(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_failed_validation_is_logged_with_the_names_and_the_acme_problem_document() {
    // Pebble validates tls-alpn-01 on a port where nothing listens.
    let dead = dead_address().await;
    let pebble = Pebble::start(free_port(), dead.port(), None).await;
    let storage = temp_dir().join("acme");
    let process = Process::run(
        &https_config(
            "127.0.0.1:0",
            &["refused.example.com"],
            &acme_table(&pebble, &storage, "tls-alpn-01"),
            "",
        ),
        &["https"],
    );
    let log = eventually(Duration::from_secs(30), "a failed order logged", || {
        let log = process.stderr();
        async move { log.contains("ACME order failed").then_some(log) }
    })
    .await;
    let line = log
        .lines()
        .find(|l| l.contains("ACME order failed"))
        .unwrap();
    assert!(line.contains("names=refused.example.com"), "{line}");
    assert!(line.contains(r#"step="validation""#), "{line}");
    assert!(
        line.contains(r#"problem.type="urn:ietf:params:acme:error:"#),
        "{line}"
    );
    assert!(line.contains("retry_in=1s"), "{line}");
}

#[test]
fn check_creates_no_storage_and_contacts_no_server_but_reads_the_ca() {
    let dir = temp_dir();
    let storage = dir.join("acme");
    let config = |ca: &str| {
        https_config(
            "127.0.0.1:0",
            &["check.example.com"],
            &format!(
                "[acme]\ndirectory = \"https://192.0.2.1/dir\"\nstorage = \"{}\"\n{ca}",
                storage.display()
            ),
            "",
        )
    };
    let check = |toml: String| {
        let path = dir.join("parapet.toml");
        std::fs::write(&path, toml).unwrap();
        Command::new(env!("CARGO_BIN_EXE_parapet"))
            .arg("check")
            .arg("-c")
            .arg(&path)
            .output()
            .unwrap()
    };
    let out = check(config(""));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!storage.exists(), "check created the ACME storage");

    let missing = dir.join("missing-ca.pem");
    let out = check(config(&format!("ca = \"{}\"\n", missing.display())));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("acme.ca") && stderr.contains("missing-ca.pem"),
        "{stderr}"
    );
    assert!(!storage.exists());
    let _ = std::fs::remove_dir_all(dir);
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}
