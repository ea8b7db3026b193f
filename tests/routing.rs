//! Routing through the real server: hosts, wildcards, prefixes, listeners and 404.

mod common;

use common::*;

/// Each app answers with its own name, so a response tells which route matched.
fn config() -> String {
    let mut s = String::from(
        r#"
[listeners.main]
bind = "127.0.0.1:0"
[listeners.other]
bind = "127.0.0.1:0"

[[routes]]
listener = "main"
host = "example.com"
path = "/api"
app = "exact-api"

[[routes]]
listener = "main"
host = "*.example.com"
app = "wild-root"

[[routes]]
listener = "main"
path = "/api"
app = "any-api"

[[routes]]
listener = "main"
path = "/api/v2"
app = "any-api-v2"

[[routes]]
listener = "other"
app = "other-root"

[[routes]]
listener = "main"
path = "/static"
strip_prefix = true
app = "echo"
"#,
    );
    for app in [
        "exact-api",
        "wild-root",
        "any-api",
        "any-api-v2",
        "other-root",
    ] {
        s.push_str(&format!(
            "[apps.{app}]\nhandler = {{ kind = \"respond\", body = \"{app}\" }}\n"
        ));
    }
    s.push_str("[apps.echo]\nhandler = { kind = \"echo\" }\n");
    s
}

#[tokio::test]
async fn exact_host_beats_wildcard_beats_any_host() {
    let server = start(&config()).await;
    let addr = server.local_addr("main").unwrap();
    assert_eq!(
        get(addr, Some("example.com"), "/api/x").await.2,
        "exact-api"
    );
    assert_eq!(
        get(addr, Some("EXAMPLE.com:8080"), "/api").await.2,
        "exact-api"
    );
    assert_eq!(
        get(addr, Some("a.example.com"), "/api/x").await.2,
        "wild-root"
    );
    assert_eq!(get(addr, Some("a.b.example.com"), "/").await.2, "wild-root");
    assert_eq!(get(addr, Some("elsewhere.org"), "/api").await.2, "any-api");
}

#[tokio::test]
async fn a_more_specific_host_without_the_path_falls_back_to_any_host() {
    let server = start(&config()).await;
    let addr = server.local_addr("main").unwrap();
    // example.com has only /api; /static is an any-host route.
    let (status, _, body) = get(addr, Some("example.com"), "/static/a").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("GET /a "), "{body}");
}

#[tokio::test]
async fn longest_prefix_wins_on_segment_boundaries_only() {
    let server = start(&config()).await;
    let addr = server.local_addr("main").unwrap();
    assert_eq!(
        get(addr, Some("x.org"), "/api/v2/users").await.2,
        "any-api-v2"
    );
    assert_eq!(get(addr, Some("x.org"), "/api/v2").await.2, "any-api-v2");
    assert_eq!(get(addr, Some("x.org"), "/api/v20").await.2, "any-api");
    assert_eq!(get(addr, Some("x.org"), "/api").await.2, "any-api");
    // "/apix" is not under "/api", and main has no "/" route for this host.
    assert_eq!(get(addr, Some("x.org"), "/apix").await.0, 404);
}

#[tokio::test]
async fn no_matching_route_is_a_404_from_parapet() {
    let server = start(&config()).await;
    let addr = server.local_addr("main").unwrap();
    let (status, headers, body) = get(addr, Some("x.org"), "/nothing/here").await;
    assert_eq!(status, 404);
    assert_eq!(body, "404 Not Found\n");
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
}

#[tokio::test]
async fn routes_serve_only_their_listeners() {
    let server = start(&config()).await;
    let other = server.local_addr("other").unwrap();
    assert_eq!(
        get(other, Some("example.com"), "/api").await.2,
        "other-root"
    );
}

#[tokio::test]
async fn strip_prefix_hands_the_app_the_rest_of_the_path() {
    let server = start(&config()).await;
    let addr = server.local_addr("main").unwrap();
    let body = get(addr, Some("x.org"), "/static/css/a.css?v=2").await.2;
    assert!(body.starts_with("GET /css/a.css?v=2 "), "{body}");
}

#[tokio::test]
async fn dot_segments_are_refused_with_400() {
    let server = start(&config()).await;
    let addr = server.local_addr("main").unwrap();
    let answer = raw_request(
        addr,
        b"GET /static/../api HTTP/1.1\r\nhost: x.org\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    let answer = raw_request(
        addr,
        b"GET /static/%2E%2e/api HTTP/1.1\r\nhost: x.org\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
}

#[tokio::test]
async fn h2c_requests_are_routed_by_their_authority() {
    let server = start(&config()).await;
    let addr = server.local_addr("main").unwrap();
    let req = http::Request::get(format!("http://{addr}/api/v2"))
        .body(parapet::Body::empty())
        .unwrap();
    let response = h2c_client().request(req).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    use http_body_util::BodyExt;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"any-api-v2");
}
