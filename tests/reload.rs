//! Hot reload and graceful shutdown, through the real server and real files.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use parapet::server::{ReloadOutcome, ReloadTrigger, Reloader};
use parapet::{Config, Registry, Server};

/// A config whose one app answers `body`, plus `extra` TOML.
fn config(body: &str, extra: &str) -> String {
    format!(
        r#"
[listeners.main]
bind = "127.0.0.1:0"
[[routes]]
listener = "main"
app = "hello"
[apps.hello]
handler = {{ kind = "respond", body = "{body}" }}
{extra}
"#
    )
}

struct Fixture {
    server: Arc<Server>,
    path: PathBuf,
    _watch: parapet::reload::ConfigWatch,
}

async fn serve(toml: &str) -> Fixture {
    let dir = temp_dir();
    let path = dir.join("parapet.toml");
    std::fs::write(&path, toml).unwrap();
    let registry = Registry::new();
    let config = Config::load(&path, &registry).unwrap();
    let server = Arc::new(Server::start(config, registry).await.unwrap());
    let watch = parapet::reload::watch(Arc::clone(&server), &path).unwrap();
    Fixture {
        server,
        path,
        _watch: watch,
    }
}

/// Replaces the file the way editors do: write a temporary file, rename it over.
fn write_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Polls `main` until it answers `expected`; returns how long that took.
async fn until_serving(server: &Server, expected: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let addr = server.local_addr("main").unwrap();
        let (_, _, body) = get(addr, None, "/").await;
        if body == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "still serving {body:?} instead of {expected:?} after {limit:?}; last reload: {:?}",
            server.reload_status().last
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_route_change_written_by_rename_is_served_within_a_second() {
    let f = serve(&config("one", "")).await;
    assert_eq!(
        get(f.server.local_addr("main").unwrap(), None, "/").await.2,
        "one"
    );
    write_by_rename(&f.path, &config("two", ""));
    let took = until_serving(&f.server, "two", Duration::from_secs(1)).await;
    eprintln!("rename: served after {took:?}");
    assert_eq!(f.server.reload_status().generation, 2);
}

#[tokio::test]
async fn a_route_change_written_in_place_is_served_within_a_second() {
    let f = serve(&config("one", "")).await;
    std::fs::write(&f.path, config("two", "")).unwrap();
    let took = until_serving(&f.server, "two", Duration::from_secs(1)).await;
    eprintln!("in place: served after {took:?}");
}

#[tokio::test]
async fn a_configmap_style_symlink_swap_is_picked_up() {
    // Kubernetes' layout: parapet.toml -> ..data/parapet.toml, ..data -> ..v1
    let dir = temp_dir();
    std::fs::create_dir(dir.join("..v1")).unwrap();
    std::fs::write(dir.join("..v1/parapet.toml"), config("one", "")).unwrap();
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/parapet.toml", dir.join("parapet.toml")).unwrap();
    let path = dir.join("parapet.toml");
    let registry = Registry::new();
    let server = Arc::new(
        Server::start(Config::load(&path, &registry).unwrap(), registry)
            .await
            .unwrap(),
    );
    let _watch = parapet::reload::watch(Arc::clone(&server), &path).unwrap();
    assert_eq!(
        get(server.local_addr("main").unwrap(), None, "/").await.2,
        "one"
    );

    // The update: a new directory, a new symlink to it, renamed over ..data in one step.
    std::fs::create_dir(dir.join("..v2")).unwrap();
    std::fs::write(dir.join("..v2/parapet.toml"), config("two", "")).unwrap();
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    until_serving(&server, "two", Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_broken_config_is_refused_and_the_old_one_keeps_serving() {
    let f = serve(&config("one", "")).await;
    write_by_rename(
        &f.path,
        &config("two", "[apps.bad]\nupstream = \"nowhere\"\n"),
    );
    // Wait for the attempt, then check it failed and changed nothing.
    let started = Instant::now();
    while f.server.reload_status().last.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no reload attempt seen"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = f.server.reload_status();
    let err = status.last.unwrap().result.unwrap_err();
    assert!(
        err.contains("parapet.toml:10:12: apps.bad.upstream: no upstream named `nowhere`"),
        "{err}"
    );
    assert_eq!(status.generation, 1);
    assert_eq!(
        get(f.server.local_addr("main").unwrap(), None, "/").await.2,
        "one"
    );
}

#[tokio::test]
async fn an_unchanged_file_is_not_reloaded() {
    let f = serve(&config("one", "")).await;
    let outcome = Reloader::new(Arc::clone(&f.server), &f.path)
        .reload(ReloadTrigger::File)
        .await
        .unwrap();
    assert_eq!(outcome, ReloadOutcome::Unchanged);
    assert_eq!(f.server.reload_status().generation, 1);
}

#[tokio::test]
async fn a_request_in_flight_across_a_reload_completes_with_the_old_chain() {
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let (arrived_tx, mut arrived_rx) = tokio::sync::mpsc::unbounded_channel();
    let up = upstream(move |req: http::Request<hyper::body::Incoming>| {
        let mut release = release_rx.clone();
        let arrived = arrived_tx.clone();
        async move {
            if req.uri().path() == "/slow" {
                let _ = arrived.send(());
                let _ = release.wait_for(|r| *r).await;
            }
            text(200, "done")
        }
    })
    .await;
    let chain = |generation: &str| {
        format!(
            r#"
[listeners.main]
bind = "127.0.0.1:0"
[[routes]]
app = "api"
[apps.api]
middlewares = ["tag"]
upstream = "up"
[upstreams.up]
servers = ["http://{up}"]
[middlewares.tag]
kind = "headers"
response.set = {{ "x-generation" = "{generation}" }}
"#
        )
    };
    let f = serve(&chain("1")).await;
    let addr = f.server.local_addr("main").unwrap();
    let slow = tokio::spawn(async move { get(addr, None, "/slow").await });
    arrived_rx.recv().await.unwrap();

    f.server
        .reload(Config::parse(&f.path, &chain("2"), &Registry::new()).unwrap())
        .await
        .unwrap();
    let (_, headers, _) = get(addr, None, "/fast").await;
    assert_eq!(headers["x-generation"], "2");

    release_tx.send(true).unwrap();
    let (status, headers, body) = slow.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "done"));
    assert_eq!(headers["x-generation"], "1");
}

#[tokio::test]
async fn a_keep_alive_connection_picks_up_the_new_config_at_its_next_request() {
    let f = serve(&config("one", "")).await;
    let addr = f.server.local_addr("main").unwrap();
    let client = client();
    let ask = |client: &hyper_util::client::legacy::Client<_, parapet::Body>| {
        let req = http::Request::get(format!("http://{addr}/"))
            .body(parapet::Body::empty())
            .unwrap();
        let fut = client.request(req);
        async move {
            use http_body_util::BodyExt;
            let body = fut
                .await
                .unwrap()
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes();
            String::from_utf8(body.to_vec()).unwrap()
        }
    };
    assert_eq!(ask(&client).await, "one");
    f.server
        .reload(Config::parse(&f.path, &config("two", ""), &Registry::new()).unwrap())
        .await
        .unwrap();
    // The same pooled connection, now on the new config.
    assert_eq!(ask(&client).await, "two");
}

#[tokio::test]
async fn a_listener_added_on_reload_serves_and_a_removed_one_stops() {
    let extra = r#"
[listeners.extra]
bind = "127.0.0.1:0"
[[routes]]
listener = "extra"
app = "side"
[apps.side]
handler = { kind = "respond", body = "extra" }
"#;
    let f = serve(&config("one", "")).await;
    f.server
        .reload(Config::parse(&f.path, &config("one", extra), &Registry::new()).unwrap())
        .await
        .unwrap();
    let added = f
        .server
        .local_addr("extra")
        .expect("the new listener is bound");
    assert_eq!(get(added, None, "/").await.2, "extra");

    f.server
        .reload(Config::parse(&f.path, &config("one", ""), &Registry::new()).unwrap())
        .await
        .unwrap();
    assert!(f.server.local_addr("extra").is_none());
    let started = Instant::now();
    while tokio::net::TcpStream::connect(added).await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the removed listener still accepts"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        get(f.server.local_addr("main").unwrap(), None, "/").await.2,
        "one"
    );
}

#[tokio::test]
async fn a_bind_failure_fails_the_whole_reload_and_the_old_config_serves() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap();
    let f = serve(&config("one", "")).await;
    let next = config("two", &format!("[listeners.clash]\nbind = \"{port}\"\n"));
    let err = f
        .server
        .reload(Config::parse(&f.path, &next, &Registry::new()).unwrap())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("listener `clash`: cannot bind"),
        "{err}"
    );
    assert_eq!(
        get(f.server.local_addr("main").unwrap(), None, "/").await.2,
        "one"
    );
    assert_eq!(f.server.reload_status().generation, 1);
}

#[tokio::test]
async fn a_changed_bind_rebinds_the_listener() {
    let f = serve(&config("one", "")).await;
    let before = f.server.local_addr("main").unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let moved = config("one", "").replace("127.0.0.1:0", &free.to_string());
    f.server
        .reload(Config::parse(&f.path, &moved, &Registry::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(f.server.local_addr("main"), Some(free));
    assert_eq!(get(free, None, "/").await.2, "one");
    let started = Instant::now();
    while tokio::net::TcpStream::connect(before).await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the old address still accepts"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn sigterm_lets_a_one_second_request_finish_and_exits_0() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (arrived_tx, arrived_rx) = std::sync::mpsc::channel();
    let up = runtime.block_on(upstream(move |_req| {
        let arrived = arrived_tx.clone();
        async move {
            let _ = arrived.send(());
            tokio::time::sleep(Duration::from_secs(1)).await;
            text(200, "finished")
        }
    }));
    let mut process = Process::run(
        &format!(
            "[server]\nshutdown_timeout = \"10s\"\n[listeners.main]\nbind = \"127.0.0.1:0\"\n[[routes]]\napp = \"slow\"\n\
             [apps.slow]\nupstream = \"slow\"\n[upstreams.slow]\nservers = [\"http://{up}\"]\n"
        ),
        &["main"],
    );
    let addr = process.addr("main");
    let request = runtime.spawn(async move { get(addr, None, "/").await });
    arrived_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    process.signal("TERM");
    let (status, _, body) = runtime.block_on(request).unwrap();
    assert_eq!((status, body.as_str()), (200, "finished"));
    let exit = process.wait_exit(Duration::from_secs(10));
    assert_eq!(exit.code(), Some(0), "{}", process.stderr());
    assert!(
        process.stderr().contains("shutdown complete"),
        "{}",
        process.stderr()
    );
}

#[test]
fn sighup_reloads_even_what_the_watch_does_not_see() {
    // Only the error page changes, not the config file: the watch ignores it, SIGHUP re-reads it.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dead = runtime.block_on(dead_address());
    let dir = temp_dir();
    let page = dir.join("page.html");
    std::fs::write(&page, "old page").unwrap();
    let process = Process::run(
        &format!(
            "[listeners.main]\nbind = \"127.0.0.1:0\"\nmiddlewares = [\"errors\"]\n[[routes]]\napp = \"down\"\n\
             [apps.down]\nupstream = \"down\"\n[upstreams.down]\nservers = [\"http://{dead}\"]\n\
             [middlewares.errors]\nkind = \"errors\"\npages = {{ \"502\" = \"{}\" }}\n",
            page.display()
        ),
        &["main"],
    );
    let addr = process.addr("main");
    assert_eq!(runtime.block_on(get(addr, None, "/")).2, "old page");
    std::fs::write(&page, "new page").unwrap();
    process.signal("HUP");
    let started = Instant::now();
    while runtime.block_on(get(addr, None, "/")).2 != "new page" {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}",
            process.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The log line is written once the reload is applied, so it may trail the first new answer.
    let started = Instant::now();
    while !process.stderr().contains("trigger=\"signal\"") {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no reload logged with trigger=\"signal\":\n{}",
            process.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_listener_renamed_on_its_address_keeps_serving_there() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let named = |name: &str| {
        format!(
            "[listeners.{name}]\nbind = \"{port}\"\n[[routes]]\napp = \"hello\"\n\
             [apps.hello]\nhandler = {{ kind = \"respond\", body = \"{name}\" }}\n"
        )
    };
    let f = serve(&named("front")).await;
    assert_eq!(get(port, None, "/").await.2, "front");
    f.server
        .reload(Config::parse(&f.path, &named("edge"), &Registry::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(f.server.local_addr("edge"), Some(port));
    assert!(f.server.local_addr("front").is_none());
    assert_eq!(get(port, None, "/").await.2, "edge");
}

#[tokio::test]
async fn no_reload_starts_listeners_again_after_shutdown() {
    let f = serve(&config("one", "")).await;
    assert!(f.server.shutdown_within(Duration::from_secs(5)).await);
    let err = f
        .server
        .reload(Config::parse(&f.path, &config("two", ""), &Registry::new()).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, parapet::Error::ShuttingDown), "{err}");
    assert!(f.server.local_addrs().is_empty());
}

#[tokio::test]
async fn two_listeners_swapping_addresses_serve_their_new_routes() {
    let a = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let layout = |first: std::net::SocketAddr, second: std::net::SocketAddr| {
        format!(
            "[listeners.one]\nbind = \"{first}\"\n[listeners.two]\nbind = \"{second}\"\n\
             [[routes]]\nlistener = \"one\"\napp = \"one\"\n[[routes]]\nlistener = \"two\"\napp = \"two\"\n\
             [apps.one]\nhandler = {{ kind = \"respond\", body = \"one\" }}\n\
             [apps.two]\nhandler = {{ kind = \"respond\", body = \"two\" }}\n"
        )
    };
    let f = serve(&layout(a, b)).await;
    assert_eq!(get(a, None, "/").await.2, "one");
    f.server
        .reload(Config::parse(&f.path, &layout(b, a), &Registry::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(get(a, None, "/").await.2, "two");
    assert_eq!(get(b, None, "/").await.2, "one");
}

#[tokio::test]
async fn a_port_0_listener_can_be_pinned_to_the_port_it_got() {
    let f = serve(&config("one", "")).await;
    let got = f.server.local_addr("main").unwrap();
    let pinned = config("two", "").replace("127.0.0.1:0", &got.to_string());
    f.server
        .reload(Config::parse(&f.path, &pinned, &Registry::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(f.server.local_addr("main"), Some(got));
    assert_eq!(get(got, None, "/").await.2, "two");
}
