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
    assert!(m.contains_key("parapet_connections_open{listener=\"metered\"}"));
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
