//! The admin listener: health, readiness, the running config without secrets, and metrics whose
//! counts match exactly what was sent, read with a strict parser of the text format.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use http::Request;
use parapet::Body;

/// A strict reader of the Prometheus / OpenMetrics text format: every line is a `# HELP`, `# TYPE`,
/// `# UNIT` or `# EOF` comment, or a sample `name{label="value",...} number`; anything else fails.
/// Samples are keyed `name{labels sorted}`.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    let mut saw_eof = false;
    for line in text.lines() {
        assert!(!saw_eof, "a line after # EOF: {line:?}");
        if line == "# EOF" {
            saw_eof = true;
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let kind = comment.split(' ').next().unwrap();
            assert!(
                matches!(kind, "HELP" | "TYPE" | "UNIT"),
                "bad comment {line:?}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let labels = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels {line:?}"));
                let mut pairs: Vec<&str> = if labels.is_empty() {
                    Vec::new()
                } else {
                    labels.split(',').collect()
                };
                for pair in &pairs {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label {pair:?}"));
                    assert!(
                        k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "{line:?}"
                    );
                    assert!(
                        v.starts_with('"') && v.ends_with('"') && v.len() >= 2,
                        "{line:?}"
                    );
                }
                pairs.sort();
                (name, pairs.join(","))
            }
            None => (series, String::new()),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        samples.insert(format!("{name}{{{labels}}}"), value);
    }
    assert!(saw_eof, "no # EOF");
    samples
}

fn config(listener: &str, dead: std::net::SocketAddr, path: &str) -> String {
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"
[listeners.{listener}]
bind = "127.0.0.1:0"
[[routes]]
path = "/{path}"
app = "hello"
[[routes]]
path = "/dead"
app = "dead"
[apps.hello]
handler = {{ kind = "respond", body = "the secret body" }}
[apps.dead]
upstream = "gone"
[upstreams.gone]
servers = ["http://{dead}"]
connect_timeout = "1s"
"#
    )
}

#[tokio::test]
async fn metrics_count_exactly_what_was_sent_including_404_502_and_reloads() {
    let dead = dead_address().await;
    let dir = temp_dir();
    let path = dir.join("parapet.toml");
    std::fs::write(&path, config("metered", dead, "hello")).unwrap();
    let registry = parapet::Registry::new();
    let server = Arc::new(
        parapet::Server::start(
            parapet::Config::load(&path, &registry).unwrap(),
            registry.clone(),
        )
        .await
        .unwrap(),
    );
    let addr = server.local_addr("metered").unwrap();
    let admin = server.admin_addr().expect("the admin listener runs");
    for _ in 0..3 {
        assert_eq!(get(addr, None, "/hello").await.0, 200);
    }
    assert_eq!(get(addr, None, "/nowhere").await.0, 404);
    assert_eq!(get(addr, None, "/dead").await.0, 502);
    // A reload that keeps the route keeps its series counting; a refused one is counted too.
    server
        .reload(
            parapet::Config::parse(&path, &config("metered", dead, "hello"), &registry).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(get(addr, None, "/hello").await.0, 200);

    let (status, headers, body) = get(admin, None, "/metrics").await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let m = parse_metrics(&body);
    let requests = |route: &str, app: &str, class: &str| {
        m.get(&format!(
            "parapet_requests_total{{app=\"{app}\",class=\"{class}\",listener=\"metered\",route=\"{route}\"}}"
        ))
        .copied()
        .unwrap_or(0.0)
    };
    assert_eq!(requests("/hello", "hello", "2xx"), 4.0, "{body}");
    assert_eq!(requests("", "", "4xx"), 1.0, "{body}");
    assert_eq!(requests("/dead", "dead", "5xx"), 1.0, "{body}");
    assert_eq!(
        m.get("parapet_request_duration_seconds_count{app=\"hello\",listener=\"metered\"}")
            .copied()
            .unwrap_or_else(|| panic!("{body}")),
        4.0
    );
    assert!(m["parapet_reloads_total{outcome=\"applied\"}"] >= 1.0);
    assert!(m["parapet_config_generation{}"] >= 1.0, "{body}");
    assert!(m.contains_key(
        "parapet_connections_open{listener=\"metered\",protocol=\"http1\",tls=\"false\"}"
    ));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn admin_endpoints_answer_read_only_and_the_config_leaks_no_setting() {
    let dead = dead_address().await;
    let server = start(&config("shown", dead, "hello")).await;
    let admin = server.admin_addr().unwrap();
    assert_eq!(
        get(admin, None, "/healthz").await,
        (200, get(admin, None, "/healthz").await.1, "ok\n".to_owned())
    );
    assert_eq!(get(admin, None, "/readyz").await.0, 200);
    assert_eq!(get(admin, None, "/nothing").await.0, 404);
    let req = Request::post(format!("http://{admin}/config"))
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = send(req).await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "GET, HEAD");

    let (status, _, body) = get(admin, None, "/config").await;
    assert_eq!(status, 200);
    let config: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(config["generation"], 1);
    assert_eq!(config["listeners"][0]["name"], "shown");
    assert_eq!(config["apps"]["hello"]["endpoint"]["handler"], "respond");
    assert_eq!(config["apps"]["dead"]["endpoint"]["upstream"], "gone");
    assert!(
        !body.contains("the secret body"),
        "a kind's settings leaked: {body}"
    );

    let (status, _, body) = get(admin, None, "/upstreams").await;
    assert_eq!(status, 200);
    let upstreams: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        upstreams["gone"]["servers"][0]["url"],
        format!("http://{dead}")
    );

    server
        .shutdown_within(std::time::Duration::from_secs(2))
        .await;
}

/// Scrapes `/metrics` until `done` holds of the samples (what a connection's end or a failed
/// handshake counts can land just after the client saw it), at most 10 s; the last samples, for
/// the caller's exact assertions.
async fn scrape_until(
    admin: std::net::SocketAddr,
    done: impl Fn(&HashMap<String, f64>) -> bool,
) -> (HashMap<String, f64>, String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, _, body) = get(admin, None, "/metrics").await;
        assert_eq!(status, 200);
        let m = parse_metrics(&body);
        if done(&m) || std::time::Instant::now() > deadline {
            return (m, body);
        }
        tokio::task::yield_now().await;
    }
}

/// A sample's value, 0 when absent; `labels` as the parser keys them (sorted, comma-separated).
fn sample(m: &HashMap<String, f64>, name: &str, labels: &str) -> f64 {
    m.get(&format!("{name}{{{labels}}}"))
        .copied()
        .unwrap_or(0.0)
}

#[tokio::test]
async fn upstream_metrics_count_tries_failures_retries_and_health_per_server() {
    let dead = dead_address().await;
    let lonely = dead_address().await;
    let live = upstream(|_| async { text(200, "up") }).await;
    let five = upstream(|_| async { text(503, "busy") }).await;
    let toml = |pair_extra: &str, lonely: &str| {
        format!(
            r#"
[admin]
bind = "127.0.0.1:0"
[listeners.upm]
bind = "127.0.0.1:0"
[[routes]]
path = "/pair"
app = "pair"
[[routes]]
path = "/flaky"
app = "flaky"
[[routes]]
path = "/lonely"
app = "lonely"
[apps.pair]
upstream = "pair"
[apps.flaky]
upstream = "flaky"
[apps.lonely]
upstream = "lonely"
[upstreams.pair]
servers = ["http://{dead}", "http://{live}"]
{pair_extra}
[upstreams.flaky]
servers = ["http://{five}", "http://{live}"]
retry_on = ["503"]
{lonely}
"#
        )
    };
    let lonely_upstream = format!(
        "[upstreams.lonely]\nservers = [\"http://{lonely}\"]\neject = {{ failures = 1, duration = \"10m\" }}"
    );
    let server = Arc::new(start(&toml("", &lonely_upstream)).await);
    let addr = server.local_addr("upm").unwrap();
    let admin = server.admin_addr().unwrap();
    // Round robin starts at the first server: the dead one fails to connect, and the request is
    // retried on the live one; the retry's pick took a turn too, so the second request begins at
    // the dead server again.
    assert_eq!(get(addr, None, "/pair").await.0, 200);
    assert_eq!(get(addr, None, "/pair").await.0, 200);
    // The 503 is retried on the live server.
    assert_eq!(get(addr, None, "/flaky").await.0, 200);
    // One connect failure ejects the lonely server; a request that never reached a server is tried
    // again (`retries = 2`), on the only server there is.
    assert_eq!(get(addr, None, "/lonely").await.0, 502);

    let (m, body) = scrape_until(admin, |_| true).await;
    let s = |upstream: &str, server: std::net::SocketAddr| {
        format!("server=\"http://{server}\",upstream=\"{upstream}\"")
    };
    let requests = |u, a| sample(&m, "parapet_upstream_requests_total", &s(u, a));
    let retries = |u, a| sample(&m, "parapet_upstream_retries_total", &s(u, a));
    let failures = |u, a, kind: &str| {
        sample(
            &m,
            "parapet_upstream_failures_total",
            &format!("kind=\"{kind}\",{}", s(u, a)),
        )
    };
    assert_eq!(requests("pair", dead), 2.0, "{body}");
    assert_eq!(requests("pair", live), 2.0, "{body}");
    assert_eq!(failures("pair", dead, "connect"), 2.0, "{body}");
    assert_eq!(retries("pair", dead), 2.0, "{body}");
    assert_eq!(retries("pair", live), 0.0, "{body}");
    for kind in [
        "connect",
        "timeout",
        "reset",
        "protocol",
        "status_5xx",
        "saturated",
    ] {
        assert_eq!(failures("pair", live, kind), 0.0, "{kind}: {body}");
        // Every kind has its series from the start, at 0.
        assert!(
            m.contains_key(&format!(
                "parapet_upstream_failures_total{{kind=\"{kind}\",{}}}",
                s("pair", live)
            )),
            "{body}"
        );
    }
    assert_eq!(requests("flaky", five), 1.0, "{body}");
    assert_eq!(requests("flaky", live), 1.0, "{body}");
    assert_eq!(failures("flaky", five, "status_5xx"), 1.0, "{body}");
    assert_eq!(retries("flaky", five), 1.0, "{body}");
    assert_eq!(requests("lonely", lonely), 3.0, "{body}");
    assert_eq!(failures("lonely", lonely, "connect"), 3.0, "{body}");
    assert_eq!(retries("lonely", lonely), 2.0, "{body}");

    let healthy = |u, a| sample(&m, "parapet_upstream_healthy", &s(u, a));
    let ejected = |u, a| sample(&m, "parapet_upstream_ejected", &s(u, a));
    // No active checks: healthy. Ejected only where `eject` allowed one failure.
    assert_eq!(healthy("pair", dead), 1.0, "{body}");
    assert_eq!(ejected("pair", dead), 0.0, "{body}");
    assert_eq!(healthy("lonely", lonely), 1.0, "{body}");
    assert_eq!(ejected("lonely", lonely), 1.0, "{body}");
    assert_eq!(
        sample(&m, "parapet_access_log_dropped_lines_total", ""),
        0.0,
        "{body}"
    );
    assert!(m.contains_key("parapet_access_log_dropped_lines_total{}"));

    // `/upstreams` shows the same health, and each server's load.
    let (status, _, body) = get(admin, None, "/upstreams").await;
    assert_eq!(status, 200);
    let ups: serde_json::Value = serde_json::from_str(&body).unwrap();
    let lonely_view = &ups["lonely"]["servers"][0];
    assert_eq!(lonely_view["url"], format!("http://{lonely}"), "{body}");
    assert_eq!(lonely_view["healthy"], true, "{body}");
    assert_eq!(lonely_view["ejected"], true, "{body}");
    assert_eq!(lonely_view["up"], false, "{body}");
    assert_eq!(lonely_view["failures_in_a_row"], 3, "{body}");
    assert_eq!(lonely_view["in_flight"], 0, "{body}");
    assert_eq!(ups["lonely"]["balance"], "round_robin", "{body}");
    let pair = ups["pair"]["servers"].as_array().unwrap();
    assert_eq!(pair.len(), 2, "{body}");
    for view in pair {
        assert_eq!(view["ejected"], false, "{body}");
        assert_eq!(view["up"], true, "{body}");
        assert!(view["latency_ms"].is_number(), "{body}");
    }

    // A reload that rebuilds `pair` keeps its servers' states and series: the new balancer starts
    // at the dead server again. The `lonely` upstream goes, and its health with it (once no
    // connection holds the config it came with).
    let reloaded = toml(
        "timeout = \"20s\"",
        "[apps.lonely]\nhandler = { kind = \"echo\" }",
    )
    .replace("[apps.lonely]\nupstream = \"lonely\"\n", "");
    let registry = parapet::Registry::new();
    server
        .reload(parapet::Config::parse("test.toml", &reloaded, &registry).unwrap())
        .await
        .unwrap();
    assert_eq!(get(addr, None, "/pair").await.0, 200);
    let lonely_healthy = format!("parapet_upstream_healthy{{{}}}", s("lonely", lonely));
    let (m, body) = scrape_until(admin, |m| !m.contains_key(&lonely_healthy)).await;
    assert!(!m.contains_key(&lonely_healthy), "{body}");
    let requests = |u, a| sample(&m, "parapet_upstream_requests_total", &s(u, a));
    assert_eq!(requests("pair", dead), 3.0, "{body}");
    assert_eq!(requests("pair", live), 3.0, "{body}");
    assert_eq!(
        sample(&m, "parapet_upstream_retries_total", &s("pair", dead)),
        3.0,
        "{body}"
    );
    assert_eq!(
        sample(&m, "parapet_upstream_healthy", &s("pair", live)),
        1.0,
        "{body}"
    );
    server
        .shutdown_within(std::time::Duration::from_secs(2))
        .await;
}

/// Sends `req` on a held connection; the status and the body's length.
async fn send_on<B>(
    sender: &mut hyper::client::conn::http1::SendRequest<B>,
    req: Request<B>,
) -> (u16, usize)
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    let res = sender.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    (
        status,
        res.into_body().collect().await.unwrap().to_bytes().len(),
    )
}

/// The same on an HTTP/2 connection.
async fn send_on_h2<B>(
    sender: &mut hyper::client::conn::http2::SendRequest<B>,
    req: Request<B>,
) -> (u16, usize)
where
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    let res = sender.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    (
        status,
        res.into_body().collect().await.unwrap().to_bytes().len(),
    )
}

fn bytes_config(listener: &str, tls: &str) -> String {
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"
[listeners.{listener}]
bind = "127.0.0.1:0"
{tls}
[[routes]]
path = "/echo"
app = "echo"
[[routes]]
app = "hello"
[apps.echo]
handler = {{ kind = "echo" }}
[apps.hello]
handler = {{ kind = "respond", body = "0123456789" }}
"#
    )
}

#[tokio::test]
async fn body_bytes_and_connections_by_protocol_are_counted_per_listener() {
    use http_body_util::Full;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let server = start(&bytes_config("bytes", "")).await;
    let addr = server.local_addr("bytes").unwrap();
    let admin = server.admin_addr().unwrap();
    // Accepted first, it says nothing: its protocol is not told yet. The connections after it are
    // accepted after it.
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);

    let post = |path: &str, len: usize| {
        Request::post(path)
            .header("host", "bytes.test")
            .body(Full::new(bytes::Bytes::from(vec![b'x'; len])))
            .unwrap()
    };
    let mut to_client = 0;
    for (status, len) in [
        send_on(&mut h1, post("/echo", 1000)).await,
        send_on(&mut h1, post("/", 0)).await,
        send_on_h2(&mut h2, post(&format!("http://{addr}/echo"), 500)).await,
        send_on_h2(&mut h2, post(&format!("http://{addr}/"), 0)).await,
    ] {
        assert_eq!(status, 200);
        to_client += len;
    }
    let bytes = |m: &HashMap<String, f64>, direction: &str| {
        sample(
            m,
            "parapet_body_bytes_total",
            &format!("direction=\"{direction}\",listener=\"bytes\""),
        )
    };
    let open = |m: &HashMap<String, f64>, protocol: &str| {
        sample(
            m,
            "parapet_connections_open",
            &format!("listener=\"bytes\",protocol=\"{protocol}\",tls=\"false\""),
        )
    };
    let (m, body) = scrape_until(admin, |m| bytes(m, "to_client") == to_client as f64).await;
    assert_eq!(bytes(&m, "from_client"), 1500.0, "{body}");
    assert_eq!(bytes(&m, "to_client"), to_client as f64, "{body}");
    assert_eq!(open(&m, "pending"), 1.0, "{body}");
    assert_eq!(open(&m, "http1"), 1.0, "{body}");
    assert_eq!(open(&m, "h2"), 1.0, "{body}");
    // A plain listener has no TLS series.
    assert!(!body.contains("listener=\"bytes\",protocol=\"http1\",tls=\"true\""));
    assert!(!body.contains("parapet_tls_handshakes_total{listener=\"bytes\"}"));

    // Closed, the connections leave the gauge.
    drop((h1, h2, _silent));
    let (m, body) = scrape_until(admin, |m| {
        open(m, "pending") + open(m, "http1") + open(m, "h2") == 0.0
    })
    .await;
    assert_eq!(
        open(&m, "pending") + open(&m, "http1") + open(&m, "h2"),
        0.0,
        "{body}"
    );
    server
        .shutdown_within(std::time::Duration::from_secs(2))
        .await;
}

#[tokio::test]
async fn tls_handshakes_and_their_failures_are_counted_and_connections_by_alpn() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // A CA of the test's own, and a certificate for localhost signed by it.
    let dir = temp_dir();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("l.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("l.key"), key.serialize_pem()).unwrap();
    let tls = format!(
        "[listeners.secure.tls]\ncertificates = [{{ cert = {:?}, key = {:?} }}]",
        dir.join("l.crt"),
        dir.join("l.key")
    );
    let server = start(&bytes_config("secure", &tls)).await;
    let addr = server.local_addr("secure").unwrap();
    let admin = server.admin_addr().unwrap();

    let client = |alpn: &[u8]| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(config))
    };
    let connect = |alpn: &'static [u8]| {
        let connector = client(alpn);
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            connector.connect(name, tcp).await.unwrap()
        }
    };
    let (mut h1, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(connect(b"http/1.1").await))
            .await
            .unwrap();
    tokio::spawn(conn);
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        TokioIo::new(connect(b"h2").await),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let get = |uri: &str| {
        Request::get(uri)
            .header("host", "localhost")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    assert_eq!(send_on(&mut h1, get("/")).await, (200, 10));
    assert_eq!(
        send_on_h2(&mut h2, get("https://localhost/")).await,
        (200, 10)
    );

    // Plain HTTP to the TLS port: a failed handshake, closed by the server.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = plain.read_to_end(&mut out).await;

    let failed = |m: &HashMap<String, f64>, reason: &str| {
        sample(
            m,
            "parapet_tls_handshake_failures_total",
            &format!("listener=\"secure\",reason=\"{reason}\""),
        )
    };
    let (m, body) = scrape_until(admin, |m| failed(m, "protocol") == 1.0).await;
    assert_eq!(failed(&m, "protocol"), 1.0, "{body}");
    for reason in [
        "timeout",
        "closed",
        "incompatible",
        "alert",
        "certificate",
        "other",
    ] {
        assert_eq!(failed(&m, reason), 0.0, "{reason}: {body}");
    }
    assert_eq!(
        sample(&m, "parapet_tls_handshakes_total", "listener=\"secure\""),
        2.0,
        "{body}"
    );
    let open = |protocol: &str| {
        sample(
            &m,
            "parapet_connections_open",
            &format!("listener=\"secure\",protocol=\"{protocol}\",tls=\"true\""),
        )
    };
    assert_eq!(open("http1"), 1.0, "{body}");
    assert_eq!(open("h2"), 1.0, "{body}");
    assert_eq!(open("pending"), 0.0, "{body}");
    server
        .shutdown_within(std::time::Duration::from_secs(2))
        .await;
    let _ = std::fs::remove_dir_all(dir);
}
