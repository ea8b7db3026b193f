//! What a hostile client cannot do to parapet's view of a request: send a missing, doubled or bad
//! `Host`; dodge a route prefix with another spelling of its path; forge the forwarding headers
//! upstreams trust; name in `Connection` a header a middleware sets; pass a `Proxy` header along.
//!
//! Raw TCP clients write the exact bytes where they matter; recording upstreams say what they got.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use http::HeaderMap;
use hyper::body::Incoming;
use parapet::{Body, Config, Registry, Server};
use parapet_middlewares::ClientIp;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// A request as an upstream received it.
#[derive(Debug)]
struct Seen {
    target: String,
    headers: HeaderMap,
}

impl Seen {
    fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }
}

/// An upstream that answers `name` and records every request it receives.
async fn recorder(name: &'static str) -> (SocketAddr, UnboundedReceiver<Seen>) {
    let (tx, rx) = unbounded_channel();
    let addr = upstream(move |req: http::Request<Incoming>| {
        let tx = tx.clone();
        async move {
            // Recorded before answering: once parapet's answer is back, the record is there.
            let _ = tx.send(Seen {
                target: req.uri().to_string(),
                headers: req.headers().clone(),
            });
            text(200, name)
        }
    })
    .await;
    (addr, rx)
}

/// `peek`, a listener middleware recording the path it sees, and `whoami`, a handler answering the
/// request's [`ClientIp`].
fn registry(peeked: UnboundedSender<String>) -> Registry {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Peek {}
    let mut registry = Registry::new();
    let peeked = Arc::new(peeked);
    registry.register_middleware("peek", move |_: &Peek| {
        let peeked = Arc::clone(&peeked);
        Ok(parapet::chain::Middleware::from_layer(
            tower::layer::layer_fn(move |inner: parapet::AppService| {
                let peeked = Arc::clone(&peeked);
                tower::service_fn(move |req: parapet::Request| {
                    let _ = peeked.send(req.uri().path().to_owned());
                    inner.handle(req)
                })
            }),
        ))
    });
    registry.register_service(
        "whoami",
        tower::service_fn(|req: parapet::Request| async move {
            let answer = match ClientIp::of(req.extensions()) {
                Some(c) => format!("{} {}", c.ip, c.peer_trusted),
                None => "none".to_owned(),
            };
            Ok::<_, std::convert::Infallible>(http::Response::new(Body::from(answer)))
        }),
    );
    registry
}

/// parapet with a route on `/admin` to one app and everything else to another, each its own
/// recording upstream, and a listener chain that records the path it sees (`peek`), sets `x-edge`
/// on every request and `x-listener` on every answer (`edge`).
struct Edge {
    _server: Server,
    addr: SocketAddr,
    admin: UnboundedReceiver<Seen>,
    public: UnboundedReceiver<Seen>,
    peeked: UnboundedReceiver<String>,
}

impl Edge {
    async fn start(server_keys: &str) -> Edge {
        let (admin_addr, admin) = recorder("admin").await;
        let (public_addr, public) = recorder("public").await;
        let (tx, peeked) = unbounded_channel();
        let toml = format!(
            r#"
[server]
{server_keys}

[listeners.main]
bind = "127.0.0.1:0"
middlewares = ["peek", "edge"]

[middlewares.peek]
kind = "peek"

[middlewares.edge]
kind = "headers"
request.set = {{ "x-edge" = "parapet" }}
response.set = {{ "x-listener" = "yes" }}

[[routes]]
path = "/admin"
app = "admin"

[[routes]]
path = "/whoami"
app = "whoami"

[[routes]]
app = "public"

[apps.admin]
upstream = "admin"

[apps.public]
upstream = "public"

[apps.whoami]
handler = {{ kind = "whoami" }}

[upstreams.admin]
servers = ["http://{admin_addr}"]

[upstreams.public]
servers = ["http://{public_addr}"]
"#
        );
        let server = start_with(&toml, &registry(tx)).await;
        let addr = server.local_addr("main").unwrap();
        Edge {
            _server: server,
            addr,
            admin,
            public,
            peeked,
        }
    }

    /// Writes `request` on a new connection; the status and the whole answer.
    async fn raw(&self, request: &str) -> (u16, String) {
        let answer = raw_request(self.addr, request.as_bytes()).await;
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {answer:?}"));
        (status, answer)
    }

    /// `GET target` over HTTP/1.1 with `Host: a.test`, one connection, closed after.
    async fn get(&self, target: &str) -> (u16, String) {
        self.raw(&format!(
            "GET {target} HTTP/1.1\r\nhost: a.test\r\nconnection: close\r\n\r\n"
        ))
        .await
    }

    /// What the admin upstream received, if anything.
    fn admin_got(&mut self) -> Option<Seen> {
        self.admin.try_recv().ok()
    }

    /// What the public upstream received, if anything.
    fn public_got(&mut self) -> Option<Seen> {
        self.public.try_recv().ok()
    }

    /// Asserts that the answer was a 400 that passed out through the listener chain, and that no
    /// upstream was asked.
    fn assert_refused(&mut self, (status, answer): (u16, String), what: &str) {
        assert_eq!(status, 400, "{what}: {answer}");
        assert!(
            answer.to_lowercase().contains("\r\nx-listener: yes\r\n"),
            "{what}: the refusal did not leave through the listener chain: {answer}"
        );
        assert!(self.admin_got().is_none(), "{what} reached the admin app");
        assert!(self.public_got().is_none(), "{what} reached the public app");
    }
}

// Host (RFC 9112 §3.2)

#[tokio::test]
async fn http11_request_without_host_is_refused_with_400() {
    let mut edge = Edge::start("").await;
    let answer = edge
        .raw("GET /x HTTP/1.1\r\nconnection: close\r\n\r\n")
        .await;
    edge.assert_refused(answer, "no Host");
}

#[tokio::test]
async fn request_with_two_host_lines_is_refused_with_400() {
    let mut edge = Edge::start("").await;
    for request in [
        "GET /x HTTP/1.1\r\nhost: a.test\r\nhost: b.test\r\nconnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nhost: a.test\r\nHost: a.test\r\nconnection: close\r\n\r\n",
        "GET /x HTTP/1.0\r\nhost: a.test\r\nhost: b.test\r\n\r\n",
    ] {
        let answer = edge.raw(request).await;
        edge.assert_refused(answer, request);
    }
}

#[tokio::test]
async fn host_with_an_invalid_value_is_refused_with_400() {
    let mut edge = Edge::start("").await;
    for host in [
        "",
        "user@a.test",
        "a.test/admin",
        "a..test",
        "a.test:8o",
        "[::1",
        "a.test, b.test",
    ] {
        let answer = edge
            .raw(&format!(
                "GET /x HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
            ))
            .await;
        edge.assert_refused(answer, &format!("Host {host:?}"));
    }
}

#[tokio::test]
async fn absolute_form_target_with_user_info_is_refused_with_400() {
    let mut edge = Edge::start("").await;
    let answer = edge
        .raw("GET http://user@a.test/x HTTP/1.1\r\nhost: a.test\r\nconnection: close\r\n\r\n")
        .await;
    edge.assert_refused(answer, "user info in the target");
}

#[tokio::test]
async fn http10_request_without_host_is_served() {
    let mut edge = Edge::start("").await;
    let (status, answer) = edge.raw("GET /x HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200, "{answer}");
    let seen = edge.public_got().expect("the public app got it");
    assert_eq!(seen.target, "/x");
    // No host was seen, so none is claimed.
    assert!(seen.values("x-forwarded-host").is_empty(), "{seen:?}");
}

#[tokio::test]
async fn http2_request_is_routed_by_its_authority_without_host() {
    let mut edge = Edge::start("").await;
    let req = http::Request::get(format!("http://{}/admin/x", edge.addr))
        .body(Body::empty())
        .unwrap();
    let response = h2c_client().request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let seen = edge.admin_got().expect("the admin app got it");
    assert_eq!(seen.target, "/admin/x");
    assert_eq!(
        seen.values("x-forwarded-host"),
        [edge.addr.to_string().as_str()]
    );
}

// The path, normalised once

#[tokio::test]
async fn merged_slashes_cannot_dodge_a_route_prefix() {
    let mut edge = Edge::start("").await;
    for (target, normalised) in [
        ("//admin", "/admin"),
        ("//admin/users", "/admin/users"),
        ("/admin//users///x", "/admin/users/x"),
    ] {
        let (status, answer) = edge.get(target).await;
        assert_eq!(status, 200, "{target}: {answer}");
        assert!(
            answer.ends_with("admin"),
            "{target} went elsewhere: {answer}"
        );
        assert_eq!(edge.admin_got().unwrap().target, normalised);
    }
}

#[tokio::test]
async fn encoded_unreserved_characters_cannot_dodge_a_route_prefix() {
    let mut edge = Edge::start("").await;
    for (target, normalised) in [
        ("/%61dmin", "/admin"),
        ("/%61%64%6D%69%6e/x", "/admin/x"),
        ("//%61dmin//%7Euser", "/admin/~user"),
    ] {
        let (status, answer) = edge.get(target).await;
        assert_eq!(status, 200, "{target}: {answer}");
        assert!(
            answer.ends_with("admin"),
            "{target} went elsewhere: {answer}"
        );
        assert_eq!(edge.admin_got().unwrap().target, normalised);
    }
}

#[tokio::test]
async fn paths_are_case_sensitive() {
    let mut edge = Edge::start("").await;
    let (status, answer) = edge.get("/ADMIN").await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.ends_with("public"), "{answer}");
    assert_eq!(edge.public_got().unwrap().target, "/ADMIN");
    assert!(edge.admin_got().is_none());
}

#[tokio::test]
async fn other_encodings_and_the_query_are_kept() {
    let mut edge = Edge::start("").await;
    for (target, forwarded) in [
        ("/a%20b", "/a%20b"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/p?x=%61%2F..%2f&y=//z", "/p?x=%61%2F..%2f&y=//z"),
        ("//%70?q=%70", "/p?q=%70"),
    ] {
        let (status, answer) = edge.get(target).await;
        assert_eq!(status, 200, "{target}: {answer}");
        assert_eq!(edge.public_got().unwrap().target, forwarded, "{target}");
    }
}

#[tokio::test]
async fn encoded_slash_backslash_and_nul_are_refused_with_400() {
    let mut edge = Edge::start("").await;
    for target in [
        "/admin%2Fx",
        "/x%2fadmin",
        "/x%5Cadmin",
        "/x%5cadmin",
        "/x\\admin",
        "/x%00",
    ] {
        let answer = edge.get(target).await;
        edge.assert_refused(answer, target);
    }
}

#[tokio::test]
async fn dot_segments_are_refused_plain_and_encoded() {
    let mut edge = Edge::start("").await;
    for target in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/.%2E/admin",
        "/./admin",
        "/%2e/admin",
        "/admin/..",
        "//..//admin",
    ] {
        let answer = edge.get(target).await;
        edge.assert_refused(answer, target);
    }
}

#[tokio::test]
async fn malformed_targets_are_refused_with_400() {
    let mut edge = Edge::start("").await;
    for target in ["/a%zz", "/a%4", "/a%", "*"] {
        let answer = edge.get(target).await;
        edge.assert_refused(answer, target);
    }
}

#[tokio::test]
async fn listener_middlewares_see_the_normalised_path() {
    let mut edge = Edge::start("").await;
    let (status, _) = edge.get("//%61dmin//x?q=//").await;
    assert_eq!(status, 200);
    assert_eq!(edge.peeked.try_recv().unwrap(), "/admin/x");
    assert_eq!(edge.admin_got().unwrap().target, "/admin/x?q=//");
}

#[tokio::test]
async fn h2c_paths_are_normalised_like_http1_paths() {
    let mut edge = Edge::start("").await;
    let req = http::Request::get(format!("http://{}//%61dmin/x", edge.addr))
        .body(Body::empty())
        .unwrap();
    let response = h2c_client().request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(edge.admin_got().unwrap().target, "/admin/x");
}

// Forwarding headers

const FORGED: &str = "GET /p HTTP/1.1\r\nhost: site.example\r\n\
    x-forwarded-for: 203.0.113.7\r\nx-forwarded-proto: https\r\nx-forwarded-host: bank.example\r\n\
    forwarded: for=203.0.113.7;proto=https\r\nx-real-ip: 203.0.113.7\r\nconnection: close\r\n\r\n";

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_replaced() {
    // Trusting other peers changes nothing for this one.
    for keys in [
        "",
        r#"trusted_proxies = ["10.0.0.0/8", "::1", "127.0.0.2/32"]"#,
    ] {
        let mut edge = Edge::start(keys).await;
        let (status, _) = edge.raw(FORGED).await;
        assert_eq!(status, 200);
        let seen = edge.public_got().unwrap();
        assert_eq!(seen.values("x-forwarded-for"), ["127.0.0.1"], "{keys}");
        assert_eq!(seen.values("x-forwarded-proto"), ["http"], "{keys}");
        assert_eq!(seen.values("x-forwarded-host"), ["site.example"], "{keys}");
        assert!(seen.values("forwarded").is_empty(), "{keys}: {seen:?}");
        assert!(seen.values("x-real-ip").is_empty(), "{keys}: {seen:?}");
    }
}

#[tokio::test]
async fn forwarding_headers_from_a_trusted_proxy_are_kept_and_appended_to() {
    for keys in [
        r#"trusted_proxies = ["127.0.0.1"]"#,
        r#"trusted_proxies = ["::1", "127.0.0.0/8"]"#,
        r#"trusted_proxies = "127.0.0.1/32""#,
    ] {
        let mut edge = Edge::start(keys).await;
        let (status, _) = edge.raw(FORGED).await;
        assert_eq!(status, 200);
        let seen = edge.public_got().unwrap();
        assert_eq!(
            seen.values("x-forwarded-for"),
            ["203.0.113.7, 127.0.0.1"],
            "{keys}"
        );
        assert_eq!(seen.values("x-forwarded-proto"), ["https"], "{keys}");
        assert_eq!(seen.values("x-forwarded-host"), ["bank.example"], "{keys}");
        assert_eq!(
            seen.values("forwarded"),
            ["for=203.0.113.7;proto=https"],
            "{keys}"
        );
        assert_eq!(seen.values("x-real-ip"), ["203.0.113.7"], "{keys}");
    }
}

#[tokio::test]
async fn a_trusted_proxy_that_sends_no_forwarding_headers_gets_parapets_own() {
    let mut edge = Edge::start(r#"trusted_proxies = ["127.0.0.1"]"#).await;
    let (status, _) = edge.get("/p").await;
    assert_eq!(status, 200);
    let seen = edge.public_got().unwrap();
    assert_eq!(seen.values("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.values("x-forwarded-proto"), ["http"]);
    assert_eq!(seen.values("x-forwarded-host"), ["a.test"]);
}

/// `GET /whoami` with these extra header lines: what the request's `ClientIp` says.
async fn whoami(edge: &Edge, lines: &str) -> String {
    let (status, answer) = edge
        .raw(&format!(
            "GET /whoami HTTP/1.1\r\nhost: a.test\r\n{lines}connection: close\r\n\r\n"
        ))
        .await;
    assert_eq!(status, 200, "{answer}");
    answer.split("\r\n\r\n").nth(1).unwrap().to_owned()
}

#[tokio::test]
async fn the_client_ip_of_an_untrusted_peer_is_the_peer() {
    let edge = Edge::start("").await;
    let lines = "x-forwarded-for: 203.0.113.9\r\nx-real-ip: 203.0.113.9\r\n";
    assert_eq!(whoami(&edge, lines).await, "127.0.0.1 false");
}

#[tokio::test]
async fn the_client_ip_behind_trusted_proxies_is_the_rightmost_untrusted_hop() {
    let edge = Edge::start(r#"trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]"#).await;
    for (lines, client) in [
        ("", "127.0.0.1"),
        ("x-forwarded-for: 203.0.113.9\r\n", "203.0.113.9"),
        (
            "x-forwarded-for: 198.51.100.1, 203.0.113.9, 10.1.2.3\r\n",
            "203.0.113.9",
        ),
        (
            "x-forwarded-for: 198.51.100.1\r\nx-forwarded-for: 203.0.113.9,10.1.2.3\r\n",
            "203.0.113.9",
        ),
        ("x-forwarded-for: 10.0.0.1, 10.0.0.2\r\n", "10.0.0.1"),
        ("x-forwarded-for: not-an-ip, 10.1.2.3\r\n", "10.1.2.3"),
        ("x-forwarded-for: 203.0.113.9:4711\r\n", "203.0.113.9"),
        ("x-forwarded-for: [2001:db8::1]:4711\r\n", "2001:db8::1"),
        ("x-forwarded-for: ::ffff:203.0.113.9\r\n", "203.0.113.9"),
    ] {
        assert_eq!(
            whoami(&edge, lines).await,
            format!("{client} true"),
            "{lines}"
        );
    }
}

// Connection-named headers and Proxy

#[tokio::test]
async fn connection_cannot_remove_a_header_a_middleware_sets() {
    let mut edge = Edge::start("").await;
    let (status, _) = edge
        .raw(
            "GET /p HTTP/1.1\r\nhost: a.test\r\nconnection: close, x-edge\r\n\
             x-edge: client\r\n\r\n",
        )
        .await;
    assert_eq!(status, 200);
    let seen = edge.public_got().unwrap();
    assert_eq!(seen.values("x-edge"), ["parapet"], "{seen:?}");
}

#[tokio::test]
async fn headers_named_by_connection_never_reach_a_middleware_or_the_upstream() {
    let mut edge = Edge::start("").await;
    let (status, _) = edge
        .raw(
            "GET /p HTTP/1.1\r\nhost: a.test\r\nconnection: x-secret, close\r\n\
             connection: X-Other\r\nx-secret: 1\r\nx-other: 2\r\nx-kept: yes\r\n\r\n",
        )
        .await;
    assert_eq!(status, 200);
    let seen = edge.public_got().unwrap();
    assert!(seen.values("x-secret").is_empty(), "{seen:?}");
    assert!(seen.values("x-other").is_empty(), "{seen:?}");
    assert_eq!(seen.values("x-kept"), ["yes"]);
}

#[tokio::test]
async fn connection_cannot_remove_host() {
    let mut edge = Edge::start("").await;
    let (status, _) = edge
        .raw("GET /p HTTP/1.1\r\nhost: site.example\r\nconnection: close, host\r\n\r\n")
        .await;
    assert_eq!(status, 200);
    let seen = edge.public_got().unwrap();
    assert_eq!(seen.values("host"), ["site.example"]);
}

#[tokio::test]
async fn proxy_header_never_reaches_the_upstream() {
    let mut edge = Edge::start("").await;
    let (status, _) = edge
        .raw(
            "GET /p HTTP/1.1\r\nhost: a.test\r\nproxy: http://evil.example:3128\r\n\
             Proxy: http://evil.example:3129\r\nconnection: close\r\n\r\n",
        )
        .await;
    assert_eq!(status, 200);
    let seen = edge.public_got().unwrap();
    assert!(seen.values("proxy").is_empty(), "{seen:?}");
}

// The key

#[test]
fn trusted_proxies_errors_are_located() {
    let text = r#"[server]
trusted_proxies = [
  "10.0.0.0/8",
  "10.0.0.1/8",
  "300.1.1.1",
  "::1/129",
  "fe80::/10",
  "10.0.0.0/x",
  5,
]
[listeners.a]
bind = "127.0.0.1:0"
"#;
    let errors = Config::parse("t.toml", text, &Registry::new())
        .unwrap_err()
        .0;
    let found: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        found,
        [
            (4, "server.trusted_proxies[1]"),
            (5, "server.trusted_proxies[2]"),
            (6, "server.trusted_proxies[3]"),
            (8, "server.trusted_proxies[5]"),
            (9, "server.trusted_proxies[6]"),
        ],
        "{errors:#?}"
    );
    assert!(
        errors[0].message.contains("did you mean \"10.0.0.0/8\""),
        "{errors:#?}"
    );
}

#[test]
fn trusted_proxies_default_to_none() {
    let config = Config::parse(
        "t.toml",
        "[listeners.a]\nbind = \"127.0.0.1:0\"\n",
        &Registry::new(),
    )
    .unwrap();
    assert!(config.server.trusted_proxies.is_empty());
}

/// A listener with `/admin` and `/` answered by two handlers that say which one answered.
async fn two_routes() -> parapet::Server {
    start(
        r#"
[listeners.main]
bind = "127.0.0.1:0"
[[routes]]
path = "/admin"
app = "admin"
[[routes]]
app = "public"
[apps.admin]
handler = { kind = "respond", body = "admin" }
[apps.public]
handler = { kind = "respond", body = "public" }
"#,
    )
    .await
}

#[tokio::test]
async fn nothing_pipelined_after_a_refused_request_is_served() {
    let server = two_routes().await;
    let addr = server.local_addr("main").unwrap();
    for first in [
        "GET /a/../b HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        "GET /%2F HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        // No `Connection: close` anywhere: parapet closes after its own refusal.
        let answer = raw_request(
            addr,
            format!("{first}GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{first:?}: {answer}");
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "{first:?}: {answer}"
        );
        assert!(!answer.contains("public"), "{first:?}: {answer}");
    }
}

#[tokio::test]
async fn path_parameters_cannot_dodge_a_route_prefix() {
    let server = two_routes().await;
    let addr = server.local_addr("main").unwrap();
    // Tomcat and Spring strip `;params`: to them these are /admin/secret, so they are /admin here.
    for path in ["/admin;/secret", "/admin;x=1/secret"] {
        let (status, _, body) = get(addr, None, path).await;
        assert_eq!((status, body.as_str()), (200, "admin"), "{path}");
    }
    for path in ["/public/..;/admin/secret", "/public/.;x/admin", "/x/..;"] {
        assert_eq!(get(addr, None, path).await.0, 400, "{path}");
    }
    // A `;` inside a segment is no dot segment.
    assert_eq!(get(addr, None, "/a;b/..c").await.2, "public");
}
