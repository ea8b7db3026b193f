//! The built-in in-process handlers through the real server.

mod common;

use common::*;
use parapet::Body;

fn site_config(root: &std::path::Path) -> String {
    format!(
        r#"
[listeners.main]
bind = "127.0.0.1:0"
[[routes]]
path = "/site"
strip_prefix = true
app = "site"
[[routes]]
path = "/old"
app = "old"
[[routes]]
path = "/moved"
app = "moved"
[[routes]]
app = "hello"
[apps.site]
handler = {{ kind = "static", root = "{}" }}
[apps.old]
handler = {{ kind = "redirect", to = "https://example.com/", status = 308 }}
[apps.moved]
handler = {{ kind = "redirect", to = "https://new.example.com", keep_path = true, status = 301 }}
[apps.hello]
handler = {{ kind = "respond", status = 200, body = "hello\n", headers = {{ "content-type" = "text/plain" }} }}
"#,
        root.display()
    )
}

fn site() -> std::path::PathBuf {
    let dir = temp_dir();
    std::fs::create_dir_all(dir.join("public/docs")).unwrap();
    std::fs::write(dir.join("public/index.html"), "<h1>home</h1>").unwrap();
    std::fs::write(dir.join("public/docs/a.css"), "body { color: red }").unwrap();
    std::fs::write(dir.join("secret.txt"), "outside the root").unwrap();
    dir
}

#[tokio::test]
async fn respond_answers_with_its_status_headers_and_body() {
    let dir = site();
    let server = start(&site_config(&dir.join("public"))).await;
    let (status, headers, body) = get(server.local_addr("main").unwrap(), None, "/anything").await;
    assert_eq!((status, body.as_str()), (200, "hello\n"));
    assert_eq!(headers["content-type"], "text/plain");
    assert_eq!(headers["content-length"], "6");
}

#[tokio::test]
async fn static_serves_files_with_content_types_and_index() {
    let dir = site();
    let server = start(&site_config(&dir.join("public"))).await;
    let addr = server.local_addr("main").unwrap();
    let (status, headers, body) = get(addr, None, "/site/docs/a.css").await;
    assert_eq!((status, body.as_str()), (200, "body { color: red }"));
    assert_eq!(headers["content-type"], "text/css");
    let (status, _, body) = get(addr, None, "/site/").await;
    assert_eq!((status, body.as_str()), (200, "<h1>home</h1>"));
    assert_eq!(get(addr, None, "/site/missing.txt").await.0, 404);
}

#[tokio::test]
async fn static_answers_range_and_conditional_requests() {
    let dir = site();
    let server = start(&site_config(&dir.join("public"))).await;
    let addr = server.local_addr("main").unwrap();
    let req = http::Request::get(format!("http://{addr}/site/docs/a.css"))
        .header("range", "bytes=0-3")
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = send(req).await;
    assert_eq!((status, body.as_str()), (206, "body"));
    assert_eq!(headers["content-range"], "bytes 0-3/19");

    let (_, headers, _) = get(addr, None, "/site/docs/a.css").await;
    let modified = headers["last-modified"].clone();
    let req = http::Request::get(format!("http://{addr}/site/docs/a.css"))
        .header("if-modified-since", modified)
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(req).await.0, 304);
}

#[tokio::test]
async fn static_never_serves_a_path_outside_its_root() {
    let dir = site();
    let server = start(&site_config(&dir.join("public"))).await;
    let addr = server.local_addr("main").unwrap();
    for path in [
        "/site/../secret.txt",
        "/site/%2e%2e/secret.txt",
        "/site/docs/..%2f..%2fsecret.txt",
        "/site//etc/passwd",
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        let answer = raw_request(addr, request.as_bytes()).await;
        assert!(
            !answer.contains("outside the root"),
            "{path} escaped:\n{answer}"
        );
        assert!(!answer.contains("root:"), "{path} escaped:\n{answer}");
        assert!(
            answer.starts_with("HTTP/1.1 400") || answer.starts_with("HTTP/1.1 404"),
            "{path}: {answer}"
        );
    }
}

#[tokio::test]
async fn redirect_answers_with_its_location_and_status() {
    let dir = site();
    let server = start(&site_config(&dir.join("public"))).await;
    let addr = server.local_addr("main").unwrap();
    let (status, headers, _) = get(addr, None, "/old/page").await;
    assert_eq!(status, 308);
    assert_eq!(headers["location"], "https://example.com/");
    let (status, headers, _) = get(addr, None, "/moved/a?b=c").await;
    assert_eq!(status, 301);
    assert_eq!(headers["location"], "https://new.example.com/moved/a?b=c");
}

#[tokio::test]
async fn a_static_root_that_does_not_exist_is_a_config_error() {
    let toml = site_config(std::path::Path::new("/nonexistent/root"));
    let registry = parapet::Registry::new();
    let config = parapet::Config::parse("x.toml", &toml, &registry).unwrap();
    let err = parapet::build::check(&config, &registry)
        .unwrap_err()
        .to_string();
    assert!(err.contains("apps.site.handler.root"), "{err}");
    assert!(err.contains("cannot be read"), "{err}");
}

#[cfg(not(feature = "wsgi"))]
#[test]
fn a_wsgi_handler_without_the_feature_is_a_config_error_saying_how_to_get_it() {
    let toml = r#"[listeners.main]
bind = "127.0.0.1:0"
[apps.shop]
handler = { kind = "wsgi", app = "shop.wsgi:application" }
"#;
    let err = parapet::Config::parse("x.toml", toml, &parapet::Registry::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("x.toml:4:11: apps.shop.handler"), "{err}");
    assert!(err.contains("--features wsgi"), "{err}");
}

/// A root with dotfiles and symbolic links in and out of it, served at `/site` with `hidden` as given.
fn linked_site(hidden: bool) -> (std::path::PathBuf, String) {
    let dir = site();
    let public = dir.join("public");
    std::fs::write(public.join(".env"), "SECRET=1").unwrap();
    std::fs::create_dir_all(public.join(".git")).unwrap();
    std::fs::write(public.join(".git/config"), "[core]").unwrap();
    std::os::unix::fs::symlink(dir.join("secret.txt"), public.join("out.txt")).unwrap();
    std::os::unix::fs::symlink(&dir, public.join("up")).unwrap();
    std::os::unix::fs::symlink(public.join("docs/a.css"), public.join("in.css")).unwrap();
    std::os::unix::fs::symlink(public.join(".env"), public.join("env.txt")).unwrap();
    let toml = format!(
        r#"
[listeners.main]
bind = "127.0.0.1:0"
[[routes]]
path = "/site"
strip_prefix = true
app = "site"
[apps.site]
handler = {{ kind = "static", root = "{}", hidden = {hidden} }}
"#,
        public.display()
    );
    (dir, toml)
}

#[tokio::test]
async fn static_does_not_follow_a_symlink_out_of_its_root() {
    let (_dir, toml) = linked_site(false);
    let server = start(&toml).await;
    let addr = server.local_addr("main").unwrap();
    for path in ["/site/out.txt", "/site/up/secret.txt"] {
        let (status, _, body) = get(addr, None, path).await;
        assert_eq!(status, 404, "{path}");
        assert!(!body.contains("outside the root"), "{path}: {body}");
    }
    // What a link resolves to inside the root is served, Range included.
    let (status, _, body) = get(addr, None, "/site/up/public/index.html").await;
    assert_eq!((status, body.as_str()), (200, "<h1>home</h1>"));
    let (status, _, body) = get(addr, None, "/site/in.css").await;
    assert_eq!((status, body.as_str()), (200, "body { color: red }"));
    let req = http::Request::get(format!("http://{addr}/site/in.css"))
        .header("range", "bytes=5-5")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(req).await.0, 206);
}

#[tokio::test]
async fn static_hides_dotfiles_and_dot_directories_unless_told() {
    let (_dir, toml) = linked_site(false);
    let server = start(&toml).await;
    let addr = server.local_addr("main").unwrap();
    for path in [
        "/site/.env",
        "/site/.git/config",
        "/site/%2egit/config",
        "/site/env.txt",
    ] {
        let (status, _, body) = get(addr, None, path).await;
        assert_eq!(status, 404, "{path}");
        assert!(
            !body.contains("SECRET") && !body.contains("[core]"),
            "{path}"
        );
    }
    assert_eq!(get(addr, None, "/site/docs/a.css").await.0, 200);

    let (_dir, toml) = linked_site(true);
    let server = start(&toml).await;
    let addr = server.local_addr("main").unwrap();
    let (status, _, body) = get(addr, None, "/site/.env").await;
    assert_eq!((status, body.as_str()), (200, "SECRET=1"));
    assert_eq!(get(addr, None, "/site/.git/config").await.0, 200);
    // `hidden` does not lift the root's bounds.
    assert_eq!(get(addr, None, "/site/out.txt").await.0, 404);
}
