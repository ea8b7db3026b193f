//! A Python WSGI app served in-process (cargo feature `wsgi`): PEP 3333 checked by wsgiref's own
//! validator around every test app, a Flask app as a user writes one, the GIL kept off the gateway.
//!
//! Run with `PYO3_PYTHON=/usr/bin/python3 cargo test --features wsgi --test wsgi` (Debian's
//! python3-dev and python3-flask installed: `.ci/run` installs them).
#![cfg(feature = "wsgi")]

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::Request;
use http_body_util::BodyExt;
use parapet::Body;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn apps_dir() -> String {
    format!("{}/tests/wsgi_apps", env!("CARGO_MANIFEST_DIR"))
}

/// A listener with the PEP test app mounted at `/py` (strip_prefix as given), Flask at `/flask`, and a
/// Rust route at `/rust`.
fn config(strip: bool, threads: usize) -> String {
    format!(
        r#"
[listeners.main]
bind = "127.0.0.1:0"
[[routes]]
path = "/py"
strip_prefix = {strip}
app = "pep"
[[routes]]
path = "/flask"
app = "flask"
[[routes]]
path = "/rust"
app = "rust"
[apps.pep]
handler = {{ kind = "wsgi", app = "pep:application", pythonpath = ["{dir}"], threads = {threads} }}
[apps.flask]
handler = {{ kind = "wsgi", app = "flask_app:app", pythonpath = ["{dir}"], threads = 4 }}
[apps.rust]
handler = {{ kind = "respond", body = "rust" }}
"#,
        dir = apps_dir()
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test]
async fn the_environ_is_pep_3333s_with_script_name_the_routes_prefix() {
    for strip in [false, true] {
        let server = start(&config(strip, 4)).await;
        let addr = server.local_addr("main").unwrap();
        let req = Request::get(format!("http://{addr}/py/env/caf%C3%A9%20x?q=1&r=%2F"))
            .header("host", "shop.example:8443")
            .header("x-multi", "a")
            .header("x-multi", "b")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("x_under_score", "spoof")
            .body(Body::empty())
            .unwrap();
        let (status, _, body) = send(req).await;
        assert_eq!(status, 200, "{body}");
        let env = json(&body);
        assert_eq!(env["REQUEST_METHOD"], "GET");
        assert_eq!(env["SCRIPT_NAME"], "/py", "strip_prefix = {strip}");
        // Decoded, as latin-1 text: é's two UTF-8 bytes are two code points.
        assert_eq!(env["PATH_INFO"], "/env/caf\u{c3}\u{a9} x");
        assert_eq!(env["QUERY_STRING"], "q=1&r=%2F");
        assert_eq!(env["SERVER_NAME"], "shop.example");
        assert_eq!(env["SERVER_PORT"], "8443");
        assert_eq!(env["SERVER_PROTOCOL"], "HTTP/1.1");
        assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
        assert_eq!(env["HTTP_X_MULTI"], "a,b");
        assert_eq!(env["HTTP_COOKIE"], "a=1; b=2");
        assert_eq!(env["HTTP_X_UNDER_SCORE"], serde_json::Value::Null);
        assert_eq!(env["wsgi.url_scheme"], "http");
        assert_eq!(env["wsgi.version"], serde_json::json!([1, 0]));
        assert_eq!(env["wsgi.multithread"], true);
        assert_eq!(env["wsgi.run_once"], false);
        server.shutdown_within(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn a_megabyte_body_streams_through_wsgi_input() {
    let server = start(&config(false, 4)).await;
    let addr = server.local_addr("main").unwrap();
    let chunks = 16;
    let req = Request::post(format!("http://{addr}/py/upload"))
        .header("content-type", "application/octet-stream")
        .body(pattern_body(chunks))
        .unwrap();
    let (status, _, body) = send(req).await;
    assert_eq!(status, 200, "{body}");
    let (n, digest) = body.split_once(' ').unwrap();
    let expected: Vec<u8> = (0..chunks)
        .flat_map(|i| pattern_chunk(i).to_vec())
        .collect();
    assert_eq!(n.parse::<usize>().unwrap(), expected.len());
    assert!(expected.len() >= 1 << 20);
    let sha = python_sha256(&expected);
    assert_eq!(digest, sha);
}

/// sha256 by Debian's Python, so the test needs no hashing crate.
fn python_sha256(data: &[u8]) -> String {
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn readline_head_and_write_follow_the_pep() {
    let server = start(&config(false, 4)).await;
    let addr = server.local_addr("main").unwrap();
    let req = Request::post(format!("http://{addr}/py/lines"))
        .header("content-type", "text/plain")
        .body(Body::from("one\ntwo\nthree"))
        .unwrap();
    let (status, _, body) = send(req).await;
    assert_eq!(
        (status, json(&body)),
        (200, serde_json::json!(["one\n", "two\n", "three"]))
    );

    let (status, _, body) = get(addr, None, "/py/write").await;
    assert_eq!((status, body.as_str()), (200, "written, then returned"));

    let req = Request::head(format!("http://{addr}/py/env"))
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = send(req).await;
    assert_eq!(status, 200);
    assert!(headers.contains_key("content-length"));
    assert_eq!(body, "");
}

#[tokio::test]
async fn exc_info_replaces_the_status_before_the_head_and_aborts_after_it() {
    let server = start(&config(false, 4)).await;
    let addr = server.local_addr("main").unwrap();
    let (status, _, body) = get(addr, None, "/py/replace-status").await;
    assert_eq!((status, body.as_str()), (503, "sorry"));

    // An exception before any head: parapet's 500.
    let (status, _, _) = get(addr, None, "/py/raise").await;
    assert_eq!(status, 500);

    // After the head: the status is out, so the connection is aborted mid-body (hyper may not
    // even have flushed the head by then): the client never sees a complete answer.
    let response = client()
        .request(
            Request::get(format!("http://{addr}/py/raise-after-head"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    if let Ok(response) = response {
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await;
        assert!(body.is_err(), "a body cut short must not look complete");
    }
    // The app and parapet go on serving.
    let (status, _, _) = get(addr, None, "/py/write").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn close_is_called_when_the_client_goes_away() {
    let server = start(&config(false, 4)).await;
    let addr = server.local_addr("main").unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /py/slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = vec![0; 4096];
    let n = stream.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    drop(stream);
    // The app's endpoint waits (up to 10 s) for its SlowBody's close().
    let (status, _, body) = get(addr, None, "/py/closed").await;
    assert_eq!((status, body.as_str()), (200, "closed"));
}

#[tokio::test]
async fn a_file_wrapper_sends_the_file() {
    let server = start(&config(false, 4)).await;
    let addr = server.local_addr("main").unwrap();
    let dir = temp_dir();
    let path = dir.join("data.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let response = client()
        .request(
            Request::get(format!("http://{addr}/py/file?{}", path.display()))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), data.len());
    assert!(body[..] == data[..]);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_flask_app_serves_cookies_redirects_streams_and_its_own_500() {
    let server = start(&config(false, 4)).await;
    let addr = server.local_addr("main").unwrap();
    let (status, _, body) = get(addr, None, "/flask/").await;
    assert_eq!((status, body.as_str()), (200, "hello from flask"));
    let (status, headers, _) = get(addr, None, "/flask/login").await;
    assert_eq!(status, 302);
    // Flask redirects to a path of its own, under SCRIPT_NAME.
    assert!(
        headers["location"]
            .to_str()
            .unwrap()
            .ends_with("/flask/whoami"),
        "{headers:?}"
    );
    let cookie = headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let req = Request::get(format!("http://{addr}/flask/whoami"))
        .header("cookie", cookie)
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(req).await;
    assert_eq!((status, body.as_str()), (200, "you are ada"));
    let (status, _, body) = get(addr, None, "/flask/stream").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        (0..5).map(|i| format!("piece {i}\n")).collect::<String>()
    );
    let (status, _, body) = get(addr, None, "/flask/boom").await;
    assert_eq!(status, 500);
    assert!(body.contains("Internal Server Error"), "{body}");
    let req = Request::post(format!("http://{addr}/flask/form"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("name=grace"))
        .unwrap();
    let (status, _, body) = send(req).await;
    assert_eq!((status, body.as_str()), (200, "name=grace"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_app_runs_on_its_threads_and_never_delays_rust_routes() {
    let server = start(&config(false, 8)).await;
    let addr = server.local_addr("main").unwrap();
    let started = Instant::now();
    let sleepers: Vec<_> = (0..32)
        .map(|_| tokio::spawn(async move { get(addr, None, "/py/sleep").await }))
        .collect();
    // While 8 threads sleep with 24 requests queued behind them, Rust still answers at once.
    let rust_started = Instant::now();
    let (status, _, body) = get(addr, None, "/rust").await;
    let rust = rust_started.elapsed();
    assert_eq!((status, body.as_str()), (200, "rust"));
    for s in sleepers {
        let (status, _, body) = s.await.unwrap();
        assert_eq!((status, body.as_str()), (200, "slept"));
    }
    let all = started.elapsed();
    eprintln!("32 x 200 ms on 8 threads: {all:?}; a Rust route meanwhile: {rust:?}");
    // One thread would take 6.4 s; 8 take about 0.8 s. The bound only proves they run at once.
    assert!(all < Duration::from_millis(3200), "{all:?}");
    assert!(rust < Duration::from_millis(1000), "{rust:?}");
}

#[tokio::test]
async fn a_reload_keeps_the_app_and_its_threads_unless_its_settings_change() {
    let dir = temp_dir();
    let path = dir.join("parapet.toml");
    std::fs::write(&path, config(false, 1)).unwrap();
    let registry = parapet::Registry::new();
    let server = std::sync::Arc::new(
        parapet::Server::start(
            parapet::Config::load(&path, &registry).unwrap(),
            registry.clone(),
        )
        .await
        .unwrap(),
    );
    let addr = server.local_addr("main").unwrap();
    let before = get(addr, None, "/py/thread").await.2;
    // The same settings, another route around them: the same app, on the same thread.
    let same = config(false, 1).replace("path = \"/rust\"", "path = \"/rust2\"");
    server
        .reload(parapet::Config::parse(&path, &same, &registry).unwrap())
        .await
        .unwrap();
    assert_eq!(get(addr, None, "/py/thread").await.2, before);
    // Other settings: a new pool (and the module, already imported, is not run again).
    let changed = config(false, 2);
    server
        .reload(parapet::Config::parse(&path, &changed, &registry).unwrap())
        .await
        .unwrap();
    assert_ne!(get(addr, None, "/py/thread").await.2, before);
    let _ = std::fs::remove_dir_all(dir);
}
