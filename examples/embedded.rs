//! Embedding parapet: register your own tower Service as a handler kind, then name it in TOML.
//!
//! Run it with `cargo run --example embedded`, then `curl http://127.0.0.1:8090/hello/world`.
//!
//! Any tower `Service<http::Request<parapet::Body>>` that returns an `http::Response` with a bytes body
//! can be registered: a `service_fn` as here, an axum `Router`, a tonic server. parapet puts it behind
//! the routes and middlewares the config gives it, exactly like its built-in handlers.

use std::convert::Infallible;

use parapet::{Body, Config, Registry, Server};

/// The config this example serves: the kind `greeter` is the service registered below.
pub const CONFIG: &str = r#"
[listeners.main]
bind = "127.0.0.1:8090"

[[routes]]
path = "/hello"
app = "greet"

[[routes]]
app = "fallback"

[apps.greet]
handler = { kind = "greeter" }

[apps.fallback]
handler = { kind = "respond", status = 404, body = "try /hello/NAME\n" }
"#;

/// A registry with parapet's built-in kinds and this program's `greeter`.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register_service(
        "greeter",
        tower::service_fn(|req: http::Request<Body>| async move {
            let name = req
                .uri()
                .path()
                .strip_prefix("/hello/")
                .filter(|n| !n.is_empty())
                .unwrap_or("stranger")
                .to_owned();
            let response = http::Response::builder()
                .header("content-type", "text/plain; charset=utf-8")
                .body(Body::from(format!("hello, {name}, from inside parapet\n")))
                .expect("a valid response");
            Ok::<_, Infallible>(response)
        }),
    );
    registry
}

#[allow(dead_code)] // the integration test uses `registry` and `CONFIG`, not `main`
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::parse("embedded.toml", CONFIG, &registry())?;
    let server = Server::start(config).await?;
    println!("serving on http://{}", server.local_addr("main").unwrap());
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
