//! The middleware catalogue over real sockets: `request_id`, `cors`, `ip_filter`, `rate_limit`, each
//! alone and composed.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use http::Request;
use parapet::Body;

/// `[middlewares.log]`: a json access log written to `path`.
fn json_log(path: &Path) -> String {
    format!(
        "[middlewares.log]\nkind = \"access_log\"\nformat = \"json\"\npath = \"{}\"\n",
        path.display()
    )
}

/// The log's lines once `n` are there (lines are written when responses end, by a writer thread).
async fn log_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        parapet_middlewares::host::flush_all();
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<_> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} log lines, have:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("unparseable line {line:?}: {e}"))
}

/// An upstream echoing the request headers it got as `x-got-NAME` response headers.
async fn echoing_upstream() -> std::net::SocketAddr {
    upstream(|req| async move {
        let mut res = text(200, "ok");
        for name in ["x-request-id", "traceparent", "authorization"] {
            if let Some(v) = req.headers().get(name) {
                res.headers_mut().insert(
                    format!("x-got-{name}").parse::<http::HeaderName>().unwrap(),
                    v.clone(),
                );
            }
        }
        res
    })
    .await
}

fn app_config(up: std::net::SocketAddr, chain: &str, extra: &str) -> String {
    format!(
        r#"
[listeners.main]
bind = "127.0.0.1:0"
[[routes]]
app = "app"
[apps.app]
middlewares = {chain}
upstream = "up"
[upstreams.up]
servers = ["http://{up}"]
{extra}
"#
    )
}

fn log_path() -> PathBuf {
    temp_dir().join("access.log")
}

#[tokio::test]
async fn request_id_keeps_a_valid_id_makes_one_otherwise_and_the_log_writes_it() {
    let up = echoing_upstream().await;
    let path = log_path();
    let server = start(&app_config(
        up,
        r#"["log", "rid"]"#,
        &format!(
            "{}\n[middlewares.rid]\nkind = \"request_id\"\n",
            json_log(&path)
        ),
    ))
    .await;
    let addr = server.local_addr("main").unwrap();
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (status, headers, _) = send(
        Request::get(format!("http://{addr}/a"))
            .header("x-request-id", "given-1")
            .header("traceparent", tp)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-request-id"], "given-1");
    assert_eq!(headers["x-got-x-request-id"], "given-1");
    assert_eq!(headers["x-got-traceparent"], tp);
    let (_, headers, _) = send(
        Request::get(format!("http://{addr}/b"))
            .header("x-request-id", "not valid")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let made = headers["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(made, "not valid");
    assert_eq!(headers["x-got-x-request-id"], &made[..]);
    let lines = log_lines(&path, 2).await;
    assert_eq!(json(&lines[0])["request_id"], "given-1");
    assert_eq!(json(&lines[1])["request_id"], &made[..]);
}

#[tokio::test]
async fn request_id_outside_a_combined_log_ends_its_lines_with_the_id() {
    let up = echoing_upstream().await;
    let path = log_path();
    let server = start(&app_config(
        up,
        r#"["rid", "log"]"#,
        &format!(
            "[middlewares.log]\nkind = \"access_log\"\npath = \"{}\"\n[middlewares.rid]\nkind = \"request_id\"\nheader = \"x-trace-id\"\n",
            path.display()
        ),
    ))
    .await;
    let addr = server.local_addr("main").unwrap();
    let (_, headers, _) = send(
        Request::get(format!("http://{addr}/c"))
            .header("x-trace-id", "t-42")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(headers["x-trace-id"], "t-42");
    let lines = log_lines(&path, 1).await;
    assert!(lines[0].ends_with(" \"t-42\""), "{}", lines[0]);
}

/// A `request_id` puts the id in the request's extensions only where something inside may read it:
/// here an access log in the app, inside the listener's `request_id` and a `cors` that reads
/// nothing, still logs it; the app beside it, an upstream alone, still gets the header. (That the
/// extension is left out where nothing reads it is `src/chain`'s unit test: it cannot be seen over a
/// socket.)
#[tokio::test]
async fn request_id_in_the_listener_reaches_a_log_in_an_app_through_layers_that_read_nothing() {
    let up = echoing_upstream().await;
    let path = log_path();
    let config = app_config(
        up,
        r#"["cors", "log"]"#,
        &format!(
            "[middlewares.log]\nkind = \"access_log\"\npath = \"{}\"\n\
             [middlewares.rid]\nkind = \"request_id\"\n\
             [middlewares.cors]\nkind = \"cors\"\norigins = [\"https://a.example\"]\n\
             [[routes]]\npath = \"/bare\"\napp = \"bare\"\n\
             [apps.bare]\nupstream = \"up\"\n",
            path.display()
        ),
    )
    .replace(
        "bind = \"127.0.0.1:0\"",
        "bind = \"127.0.0.1:0\"\nmiddlewares = [\"rid\"]",
    );
    let server = start(&config).await;
    let addr = server.local_addr("main").unwrap();
    let (_, headers, _) = send(
        Request::get(format!("http://{addr}/c"))
            .header("x-request-id", "t-7")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(headers["x-request-id"], "t-7");
    let lines = log_lines(&path, 1).await;
    assert!(lines[0].ends_with(" \"t-7\""), "{}", lines[0]);
    let (status, headers, _) = send(
        Request::get(format!("http://{addr}/bare/d"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let made = headers["x-request-id"].to_str().unwrap();
    assert_eq!(headers["x-got-x-request-id"], made);
}

#[tokio::test]
async fn request_id_refuses_an_invalid_header_name() {
    let err = parapet::Config::parse(
        "t.toml",
        "[middlewares.rid]\nkind = \"request_id\"\nheader = \"bad header\"\n",
        &parapet::Registry::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("middlewares.rid.header"), "{err}");
    assert!(err.contains("invalid header name"), "{err}");
}

const CORS: &str = r#"
[middlewares.browser]
kind = "cors"
origins = ["https://app.example.com"]
methods = ["GET", "POST"]
headers = ["content-type"]
credentials = true
max_age = "10m"
"#;

#[tokio::test]
async fn cors_answers_a_preflight_itself_and_decorates_actual_requests() {
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = hits.clone();
    let up = upstream(move |_req| {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { text(200, "ok") }
    })
    .await;
    let server = start(&app_config(up, r#"["browser"]"#, CORS)).await;
    let addr = server.local_addr("main").unwrap();
    let (status, headers, _) = send(
        Request::options(format!("http://{addr}/api"))
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert_eq!(headers["access-control-allow-methods"], "GET, POST");
    assert_eq!(headers["access-control-allow-headers"], "content-type");
    assert_eq!(headers["access-control-max-age"], "600");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);

    let (status, headers, body) = send(
        Request::get(format!("http://{addr}/api"))
            .header("origin", "https://app.example.com")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!((status, &body[..]), (200, "ok"));
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(headers["vary"], "origin");

    let (_, headers, _) = send(
        Request::get(format!("http://{addr}/api"))
            .header("origin", "https://evil.example")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(headers.get("access-control-allow-origin").is_none());
    assert_eq!(headers["vary"], "origin");
}

#[tokio::test]
async fn cors_refuses_an_origin_with_a_path_at_its_place() {
    let err = parapet::Config::parse(
        "t.toml",
        "[middlewares.c]\nkind = \"cors\"\norigins = [\"https://a.example/x\"]\n",
        &parapet::Registry::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("middlewares.c.origins[0]"), "{err}");
    assert!(err.contains("invalid origin"), "{err}");
}

async fn get_with(
    addr: std::net::SocketAddr,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, String) {
    let mut req = Request::get(format!("http://{addr}/x"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(req.body(Body::empty()).unwrap()).await
}

#[tokio::test]
async fn ip_filter_refuses_the_peer_outside_allow_or_inside_deny_with_403() {
    let up = upstream(|_req| async { text(200, "ok") }).await;
    for (lists, expected) in [
        ("allow = [\"10.0.0.0/8\"]", 403),
        ("allow = [\"127.0.0.1\"]", 200),
        ("allow = [\"127.0.0.0/8\"]\ndeny = [\"127.0.0.1\"]", 403),
        ("deny = [\"10.0.0.0/8\"]", 200),
    ] {
        let server = start(&app_config(
            up,
            r#"["office"]"#,
            &format!("[middlewares.office]\nkind = \"ip_filter\"\n{lists}\n"),
        ))
        .await;
        let addr = server.local_addr("main").unwrap();
        assert_eq!(get_with(addr, &[]).await.0, expected, "{lists}");
    }
}

#[tokio::test]
async fn ip_filter_judges_the_client_a_trusted_proxy_vouches_for() {
    let up = upstream(|_req| async { text(200, "ok") }).await;
    let config = app_config(
        up,
        r#"["office"]"#,
        "[middlewares.office]\nkind = \"ip_filter\"\nallow = [\"203.0.113.0/24\"]\n",
    )
    .replace(
        "[listeners.main]",
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n[listeners.main]",
    );
    let server = start(&config).await;
    let addr = server.local_addr("main").unwrap();
    assert_eq!(
        get_with(addr, &[("x-forwarded-for", "203.0.113.5")])
            .await
            .0,
        200
    );
    assert_eq!(
        get_with(addr, &[("x-forwarded-for", "10.0.0.1")]).await.0,
        403
    );
    assert_eq!(get_with(addr, &[]).await.0, 403);
}

#[tokio::test]
async fn ip_filter_refuses_a_block_with_host_bits_at_its_place() {
    let err = parapet::Config::parse(
        "t.toml",
        "[middlewares.f]\nkind = \"ip_filter\"\ndeny = [\"10.0.0.0/8\", \"10.0.0.1/8\"]\n",
        &parapet::Registry::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("middlewares.f.deny[1]"), "{err}");
}

fn limited(up: std::net::SocketAddr, rate: &str, generation: &str) -> String {
    app_config(
        up,
        r#"["tag", "quota"]"#,
        &format!(
            "[middlewares.quota]\nkind = \"rate_limit\"\nrate = \"{rate}\"\nburst = 2\nkey = \"header:x-api-key\"\n[middlewares.tag]\nkind = \"headers\"\nresponse.set = {{ \"x-generation\" = \"{generation}\" }}\n"
        ),
    )
}

#[tokio::test]
async fn rate_limit_answers_429_beyond_the_burst_and_keeps_its_counts_across_a_reload() {
    let up = upstream(|_req| async { text(200, "ok") }).await;
    // A key no other test uses: limiters are shared by instance and settings in the process.
    let key = [("x-api-key", "reload-test")];
    let registry = parapet::Registry::new();
    let config = parapet::Config::parse("test.toml", &limited(up, "1/h", "1"), &registry).unwrap();
    let server = std::sync::Arc::new(parapet::Server::start(config, registry).await.unwrap());
    let addr = server.local_addr("main").unwrap();
    let (status, headers, _) = get_with(addr, &key).await;
    assert_eq!(status, 200);
    assert_eq!(headers["ratelimit-limit"], "2");
    assert_eq!(headers["ratelimit-remaining"], "1");
    assert_eq!(get_with(addr, &key).await.0, 200);

    // A reload that keeps the instance's settings keeps its counts.
    server
        .reload(
            parapet::Config::parse(
                "test.toml",
                &limited(up, "1/h", "2"),
                &parapet::Registry::new(),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let (status, headers, _) = get_with(addr, &key).await;
    assert_eq!(headers["x-generation"], "2");
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "3600");
    assert_eq!(headers["ratelimit-remaining"], "0");
    // Another key is counted apart.
    assert_eq!(
        get_with(addr, &[("x-api-key", "reload-test-2")]).await.0,
        200
    );

    // One that changes them starts afresh.
    server
        .reload(
            parapet::Config::parse(
                "test.toml",
                &limited(up, "2/h", "3"),
                &parapet::Registry::new(),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(get_with(addr, &key).await.0, 200);
}

#[tokio::test]
async fn rate_limit_refuses_a_malformed_rate_at_its_place() {
    let err = parapet::Config::parse(
        "t.toml",
        "[middlewares.q]\nkind = \"rate_limit\"\nrate = \"100/d\"\nkey = \"cookie\"\n",
        &parapet::Registry::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("middlewares.q.rate"), "{err}");
    assert!(err.contains("middlewares.q.key"), "{err}");
}

#[tokio::test]
async fn an_inner_layers_403_429_401_and_301_pass_out_through_cors_request_id_and_the_access_log() {
    let up = upstream(|_req| async { text(200, "ok") }).await;
    let path = log_path();
    let users = temp_dir().join("htpasswd");
    std::fs::write(&users, HTPASSWD).unwrap();
    let server = start(&format!(
        r#"
[listeners.main]
bind = "127.0.0.1:0"
[[routes]]
path = "/denied"
app = "denied"
[[routes]]
path = "/locked"
app = "locked"
[[routes]]
app = "limited"
[apps.locked]
middlewares = ["browser", "rid", "log", "open", "quota", "users", "moved", "v1"]
upstream = "up"
[apps.denied]
middlewares = ["browser", "rid", "log", "office", "quota"]
upstream = "up"
[apps.limited]
middlewares = ["browser", "rid", "log", "open", "quota"]
upstream = "up"
[upstreams.up]
servers = ["http://{up}"]
[middlewares.rid]
kind = "request_id"
[middlewares.office]
kind = "ip_filter"
allow = ["10.0.0.0/8"]
[middlewares.open]
kind = "ip_filter"
deny = ["10.0.0.0/8"]
[middlewares.quota]
kind = "rate_limit"
rate = "1/h"
burst = 1
key = "header:x-composition-key"
[middlewares.users]
kind = "basic_auth"
users = "{users}"
[middlewares.moved]
kind = "redirect"
regex = "^/locked/old/(.*)$"
to = "https://new.example.com/$1"
status = 301
[middlewares.v1]
kind = "rewrite"
path = {{ regex = "^/locked/v1/(.*)$", to = "/api/$1" }}
{CORS}
{log}
"#,
        log = json_log(&path),
        users = users.display()
    ))
    .await;
    let addr = server.local_addr("main").unwrap();
    let send_from_page = |path: &'static str, key: &'static str, auth: Option<&'static str>| async move {
        let mut req = Request::get(format!("http://{addr}{path}"))
            .header("origin", "https://app.example.com")
            .header("x-composition-key", key);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        send(req.body(Body::empty()).unwrap()).await
    };
    // alice:s3cret
    let alice = Some("Basic YWxpY2U6czNjcmV0");
    let mut ids = Vec::new();
    let cases = [
        ("/denied", "composition", None, 403),
        ("/open", "composition", None, 200),
        ("/open", "composition", None, 429),
        // Every layer of the catalogue in one chain: basic_auth's 401, redirect's 301.
        ("/locked/v1/x", "locked-1", None, 401),
        ("/locked/old/x?y=1", "locked-2", alice, 301),
        ("/locked/v1/x", "locked-3", alice, 200),
    ];
    for (path, key, auth, status) in cases {
        let (got, headers, _) = send_from_page(path, key, auth).await;
        assert_eq!(got, status, "{path}");
        assert_eq!(
            headers["access-control-allow-origin"],
            "https://app.example.com"
        );
        assert_eq!(headers["access-control-allow-credentials"], "true");
        ids.push(headers["x-request-id"].to_str().unwrap().to_owned());
        match status {
            429 => assert!(headers.contains_key("retry-after")),
            401 => assert!(headers.contains_key("www-authenticate")),
            301 => assert_eq!(headers["location"], "https://new.example.com/x?y=1"),
            _ => {}
        }
        if path.starts_with("/locked") {
            // rate_limit's headers, set on the way out of an inner layer's answer too.
            assert_eq!(headers["ratelimit-remaining"], "0", "{path}");
        }
    }
    let lines = log_lines(&path, cases.len()).await;
    for (line, (status, error)) in lines.iter().zip([
        (403, serde_json::json!("forbidden")),
        (200, serde_json::Value::Null),
        (429, serde_json::json!("too_many_requests")),
        (401, serde_json::json!("unauthorized")),
        (301, serde_json::Value::Null),
        (200, serde_json::Value::Null),
    ]) {
        let line = json(line);
        assert_eq!(line["status"], status);
        assert_eq!(line["error"], error);
        assert!(ids.contains(&line["request_id"].as_str().unwrap().to_owned()));
    }
}

/// `alice:s3cret`, bcrypt at cost 4 (fast, for tests).
const HTPASSWD: &str =
    "# test users\nalice:$2b$04$5SIef7Yjo0IyerS1kAo2yuhY82HkhfSSR.AwhZHW/betGmDSPuY6m\n";

#[tokio::test]
async fn basic_auth_asks_for_credentials_does_not_forward_them_and_rereads_its_file_on_reload() {
    let up = echoing_upstream().await;
    let dir = temp_dir();
    let users = dir.join("htpasswd");
    std::fs::write(&users, HTPASSWD).unwrap();
    let toml = app_config(
        up,
        r#"["admin_auth"]"#,
        &format!(
            "[middlewares.admin_auth]\nkind = \"basic_auth\"\nrealm = \"admin\"\nusers = \"{}\"\n",
            users.display()
        ),
    );
    let server = std::sync::Arc::new(start(&toml).await);
    let addr = server.local_addr("main").unwrap();
    let (status, headers, _) = get_with(addr, &[]).await;
    assert_eq!(status, 401);
    assert_eq!(
        headers["www-authenticate"],
        "Basic realm=\"admin\", charset=\"UTF-8\""
    );
    // alice:wrong
    let (status, _, _) = get_with(addr, &[("authorization", "Basic YWxpY2U6d3Jvbmc=")]).await;
    assert_eq!(status, 401);
    // alice:s3cret, twice (the second from the cache).
    for _ in 0..2 {
        let (status, headers, body) =
            get_with(addr, &[("authorization", "Basic YWxpY2U6czNjcmV0")]).await;
        assert_eq!((status, &body[..]), (200, "ok"));
        assert!(headers.get("x-got-authorization").is_none());
    }

    // The file is read again with the config: alice removed (though her pair was remembered by the
    // old config's layer), bob added.
    let bob = bcrypt::hash("hunter2", 4).unwrap();
    std::fs::write(&users, format!("bob:{bob}\n")).unwrap();
    let config = parapet::Config::parse("test.toml", &toml, &parapet::Registry::new()).unwrap();
    server.reload(config).await.unwrap();
    let (status, _, _) = get_with(addr, &[("authorization", "Basic YWxpY2U6czNjcmV0")]).await;
    assert_eq!(status, 401, "alice is gone after the reload");
    // bob:hunter2
    let (status, _, body) = get_with(addr, &[("authorization", "Basic Ym9iOmh1bnRlcjI=")]).await;
    assert_eq!((status, &body[..]), (200, "ok"));
}

#[tokio::test]
async fn basic_auth_refuses_a_file_that_is_not_bcrypt_at_check() {
    let dir = temp_dir();
    let users = dir.join("htpasswd");
    std::fs::write(&users, "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n").unwrap();
    let registry = parapet::Registry::new();
    let config = parapet::Config::parse(
        "t.toml",
        &app_config(
            "127.0.0.1:9".parse().unwrap(),
            r#"["a"]"#,
            &format!(
                "[middlewares.a]\nkind = \"basic_auth\"\nusers = \"{}\"\n",
                users.display()
            ),
        ),
        &registry,
    );
    let err = match config {
        Err(e) => e.to_string(),
        Ok(c) => parapet::build::check(&c, &registry)
            .expect_err("a non-bcrypt file is refused")
            .to_string(),
    };
    assert!(err.contains("middlewares.a.users"), "{err}");
    assert!(err.contains("not bcrypt"), "{err}");
}

#[tokio::test]
async fn rewrite_changes_the_forwarded_path_and_refuses_a_result_with_dot_segments() {
    let up = upstream(|req| async move { text(200, req.uri().to_string()) }).await;
    let server = start(&app_config(
        up,
        r#"["v1", "escape"]"#,
        r#"
[middlewares.v1]
kind = "rewrite"
path = { regex = "^/v1/(.*)$", to = "/api/$1" }
[middlewares.escape]
kind = "rewrite"
path = { regex = "^/up/(.*)$", to = "/../$1" }
"#,
    ))
    .await;
    let addr = server.local_addr("main").unwrap();
    assert_eq!(
        get(addr, None, "/v1/users/7?page=2").await.2,
        "/api/users/7?page=2"
    );
    assert_eq!(get(addr, None, "/other").await.2, "/other");
    assert_eq!(get(addr, None, "/up/etc/passwd").await.0, 400);
}

#[tokio::test]
async fn rewrite_refuses_an_invalid_regex_at_its_place() {
    let err = parapet::Config::parse(
        "t.toml",
        "[middlewares.r]\nkind = \"rewrite\"\npath = { regex = \"^/(\", to = \"/\" }\n",
        &parapet::Registry::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("middlewares.r.path.regex"), "{err}");
}

#[tokio::test]
async fn redirect_sends_a_moved_site_with_its_groups_and_lets_the_rest_through() {
    let up = upstream(|req| async move { text(200, req.uri().to_string()) }).await;
    let server = start(&app_config(
        up,
        r#"["site", "old", "api"]"#,
        r#"
[middlewares.site]
kind = "redirect"
regex = "^http://old\\.example\\.com/(.*)$"
to = "https://new.example.com/$1"
permanent = true
[middlewares.old]
kind = "redirect"
regex = "^/old/(.*)$"
to = "https://new.example.com/$1"
status = 301
[middlewares.api]
kind = "rewrite"
redirect = { regex = "^/v0/(.*)$", to = "/v1/$1", status = 308 }
path = { regex = "^/v1/(.*)$", to = "/api/$1" }
"#,
    ))
    .await;
    let addr = server.local_addr("main").unwrap();
    // The full URL, host included, query carried by the group.
    let (status, headers, _) = get(addr, Some("old.example.com"), "/a/b?c=d").await;
    assert_eq!(status, 301);
    assert_eq!(headers["location"], "https://new.example.com/a/b?c=d");
    let (status, headers, _) = send(
        Request::post(format!("http://{addr}/form"))
            .header("host", "old.example.com")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, 308, "permanent keeps a POST a POST");
    assert_eq!(headers["location"], "https://new.example.com/form");
    // A path regex: the path matched, the query carried over.
    let (status, headers, _) = get(addr, Some("any.example.com"), "/old/x/y?q=1&r").await;
    assert_eq!(status, 301);
    assert_eq!(headers["location"], "https://new.example.com/x/y?q=1&r");
    // In a rewrite: the redirect is asked first, then the path rewritten.
    let (status, headers, _) = get(addr, None, "/v0/users?page=2").await;
    assert_eq!(status, 308);
    assert_eq!(headers["location"], "/v1/users?page=2");
    assert_eq!(
        get(addr, None, "/v1/users?page=2").await.2,
        "/api/users?page=2"
    );
    // What matches no rule reaches the app untouched.
    let (status, _, body) = get(addr, Some("other.example.com"), "/a/b?c=d").await;
    assert_eq!((status, &body[..]), (200, "/a/b?c=d"));
}

#[tokio::test]
async fn redirect_refuses_bad_settings_at_their_place() {
    let registry = parapet::Registry::new();
    let err = parapet::Config::parse(
        "t.toml",
        r#"
[middlewares.a]
kind = "redirect"
regex = "^/("
to = "/"
[middlewares.b]
kind = "redirect"
regex = "^/old"
to = "/new"
status = 200
[middlewares.c]
kind = "redirect"
regex = "^/old"
to = "/new"
status = 301
permanent = true
[middlewares.d]
kind = "rewrite"
redirect = { regex = "^/x", to = "" }
[middlewares.e]
kind = "rewrite"
"#,
        &registry,
    )
    .unwrap_err()
    .to_string();
    for place in [
        "middlewares.a.regex",
        "middlewares.b.status",
        "middlewares.c.permanent",
        "middlewares.d.redirect.to",
        "middlewares.e.path",
    ] {
        assert!(err.contains(place), "{place} in {err}");
    }
}

#[tokio::test]
async fn headers_response_replace_rewrites_an_upstreams_location() {
    let up = upstream(|_req| async {
        let mut res = text(302, "");
        res.headers_mut().insert(
            "location",
            "http://backend:8080/login?next=%2F".parse().unwrap(),
        );
        res
    })
    .await;
    let server = start(&app_config(
        up,
        r#"["fix"]"#,
        r#"
[middlewares.fix]
kind = "headers"
response.replace = { "location" = { regex = "^http://backend:8080/(.*)$", to = "https://example.com/$1" } }
"#,
    ))
    .await;
    let addr = server.local_addr("main").unwrap();
    let (status, headers, _) = get(addr, None, "/").await;
    assert_eq!(status, 302);
    assert_eq!(headers["location"], "https://example.com/login?next=%2F");
}

#[tokio::test]
async fn forward_auth_lets_a_2xx_through_with_copied_headers_and_returns_any_other_answer() {
    let auth = upstream(|req| async move {
        assert_eq!(req.headers()["x-forwarded-uri"], "/x");
        assert_eq!(req.headers()["x-forwarded-for"], "127.0.0.1");
        if req
            .headers()
            .get("cookie")
            .is_some_and(|c| c == "session=ok")
        {
            let mut res = text(200, "");
            res.headers_mut().insert("x-user", "alice".parse().unwrap());
            res
        } else {
            let mut res = text(302, "to the login page");
            res.headers_mut()
                .insert("location", "https://sso.example/login".parse().unwrap());
            res
        }
    })
    .await;
    let up = upstream(|req| async move {
        let user = req
            .headers()
            .get("x-user")
            .map(|v| v.to_str().unwrap().to_owned());
        text(200, format!("hello {}", user.unwrap_or_default()))
    })
    .await;
    let server = start(&app_config(
        up,
        r#"["sso"]"#,
        &format!(
            "[middlewares.sso]\nkind = \"forward_auth\"\nurl = \"http://{auth}/auth\"\ncopy_headers = [\"x-user\"]\n"
        ),
    ))
    .await;
    let addr = server.local_addr("main").unwrap();
    let (status, _, body) =
        get_with(addr, &[("cookie", "session=ok"), ("x-user", "mallory")]).await;
    assert_eq!((status, &body[..]), (200, "hello alice"));
    let (status, headers, body) = get_with(addr, &[("x-user", "mallory")]).await;
    assert_eq!((status, &body[..]), (302, "to the login page"));
    assert_eq!(headers["location"], "https://sso.example/login");
}

#[tokio::test]
async fn forward_auth_answers_502_when_the_service_is_down() {
    let up = upstream(|_req| async { text(200, "secret") }).await;
    let dead = dead_address().await;
    let server = start(&app_config(
        up,
        r#"["sso"]"#,
        &format!("[middlewares.sso]\nkind = \"forward_auth\"\nurl = \"http://{dead}/auth\"\n"),
    ))
    .await;
    let addr = server.local_addr("main").unwrap();
    let (status, _, body) = get_with(addr, &[]).await;
    assert_eq!(status, 502);
    assert!(!body.contains("secret"));
}
