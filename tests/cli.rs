//! The `parapet` command as a user runs it: `check`, `run`, signals, and memory while streaming.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use parapet::Body;

fn parapet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_parapet"))
}

#[test]
fn check_accepts_the_default_config() {
    let out = parapet()
        .args(["check", "-c", "config/parapet.toml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_reports_an_unknown_key_and_a_dangling_app_with_lines_and_columns() {
    let dir = temp_dir();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[listeners.public]\nbind = \"127.0.0.1:8080\"\ncolour = \"blue\"\n\n[[routes]]\napp = \"nowhere\"\n",
    )
    .unwrap();
    let out = parapet()
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = path.display();
    assert!(
        stderr.contains(&format!(
            "{file}:3:1: listeners.public.colour: unknown key `colour`"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}:6:7: routes[0].app: no app named `nowhere`"
        )),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_touches_nothing_no_log_file_created_and_a_taken_port_is_no_error() {
    let dir = temp_dir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let log = dir.join("access.log");
    let path = dir.join("parapet.toml");
    std::fs::write(
        &path,
        format!(
            r#"[listeners.public]
bind = "{}"
[[routes]]
app = "hello"
[apps.hello]
middlewares = ["log"]
handler = {{ kind = "respond", body = "hi" }}
[middlewares.log]
kind = "access_log"
format = "json"
path = "{}"
"#,
            taken.local_addr().unwrap(),
            log.display()
        ),
    )
    .unwrap();
    let out = parapet()
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!log.exists(), "check created the access log file");
    let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(
        entries.len(),
        1,
        "check wrote into the directory: {entries:?}"
    );
    // `run` on the same file does open the log, and fails on the taken port.
    let out = parapet().arg("run").arg("-c").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot bind"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(taken);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_on_a_missing_file_fails_and_says_so() {
    let out = parapet()
        .args(["check", "-c", "/nonexistent/parapet.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config"));
}

#[test]
fn version_and_help_answer() {
    let out = parapet().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("parapet "));
    let out = parapet().arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("check"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_while_50_mb_stream_each_way() {
    const CHUNKS: usize = 800; // 50 MiB
    let up = upstream(|req: http::Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/upload" {
            let (hash, len) = hash_body(req.into_body()).await.unwrap();
            text(200, format!("{hash:x} {len}"))
        } else {
            http::Response::new(pattern_body(CHUNKS))
        }
    })
    .await;
    let process = Process::run(
        &format!(
            "[server]\nworkers = 1\n[listeners.main]\nbind = \"127.0.0.1:0\"\n[[routes]]\napp = \"p\"\n\
             [apps.p]\nupstream = \"u\"\n[upstreams.u]\nservers = [\"http://{up}\"]\n"
        ),
        &["main"],
    );
    let addr = process.addr("main");
    // Warm up: the first request allocates the pools and buffers a steady state keeps.
    let _ = get(addr, None, "/upload").await;
    let baseline = process.memory_kib("VmRSS");

    let expected = pattern_hash(CHUNKS);
    let req = http::Request::post(format!("http://{addr}/upload"))
        .body(pattern_body(CHUNKS))
        .unwrap();
    let (_, _, body) = send(req).await;
    assert_eq!(body, format!("{expected:x} {}", CHUNKS * 64 * 1024));
    let req = http::Request::get(format!("http://{addr}/download"))
        .body(Body::empty())
        .unwrap();
    let response = client().request(req).await.unwrap();
    let (hash, _) = hash_body(response.into_body()).await.unwrap();
    assert_eq!(hash, expected);

    let peak = process.memory_kib("VmHWM");
    let growth = peak.saturating_sub(baseline);
    eprintln!("parapet RSS: {baseline} KiB after warm-up, peak {peak} KiB while streaming");
    assert!(
        growth < 16 * 1024,
        "parapet's peak RSS grew by {growth} KiB over {baseline} KiB while streaming 2 x 50 MiB"
    );
}

#[test]
fn sigterm_stops_parapet_with_exit_code_0() {
    let mut process = Process::run(
        "[listeners.main]\nbind = \"127.0.0.1:0\"\n[[routes]]\napp = \"e\"\n[apps.e]\nhandler = { kind = \"echo\" }\n",
        &["main"],
    );
    process.signal("TERM");
    let status = process.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", process.stderr());
}
