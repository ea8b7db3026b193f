//! Embedding parapet: register your own handler and middleware kinds, then name them in TOML.
//!
//! Run it with `cargo run --example embedded`, then `curl -i http://127.0.0.1:8090/hello/world`.
//!
//! Any tower `Service<http::Request<parapet::Body>>` that returns an `http::Response` with a bytes body
//! can be a handler: a `service_fn` as here, an axum `Router`, a tonic server. A kind's settings are a
//! struct of yours that serde reads from the kind's table, with every error located in the file like
//! parapet's own; the program never sees a TOML reader type. parapet puts the handler behind the
//! routes and middlewares the config gives it, exactly like its built-in ones.

use std::convert::Infallible;
use std::sync::Arc;

use parapet::chain::Middleware;
use parapet::{Body, Config, Registry, Server};
use parapet_middlewares::headers::{HeaderOps, HeadersLayer};

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
middlewares = ["signed"]
handler = { kind = "greeter", greeting = "hello" }

[middlewares.signed]
kind = "signature"
name = "x-served-by"
value = "parapet, embedded"

[apps.fallback]
handler = { kind = "respond", status = 404, body = "try /hello/NAME\n" }
"#;

/// The settings of the `greeter` handler kind.
#[derive(Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Greeter {
    /// The word before the name.
    pub greeting: String,
}

/// The settings of the `signature` middleware kind: one response header it sets.
#[derive(Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// The header's name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// A registry with parapet's built-in kinds and this program's `greeter` and `signature`.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register_handler("greeter", |settings: &Greeter| {
        let greeting: Arc<str> = settings.greeting.as_str().into();
        Ok(parapet::registry::box_service(tower::service_fn(
            move |req: http::Request<Body>| {
                let greeting = Arc::clone(&greeting);
                async move {
                    let name = req
                        .uri()
                        .path()
                        .strip_prefix("/hello/")
                        .filter(|n| !n.is_empty())
                        .unwrap_or("stranger")
                        .to_owned();
                    let response = http::Response::builder()
                        .header("content-type", "text/plain; charset=utf-8")
                        .body(Body::from(format!(
                            "{greeting}, {name}, from inside parapet\n"
                        )))
                        .expect("a valid response");
                    Ok::<_, Infallible>(response)
                }
            },
        )))
    });
    registry.register_middleware("signature", |settings: &Signature| {
        let mut ops = HeaderOps::default();
        ops.set.push((
            http::HeaderName::from_bytes(settings.name.as_bytes())?,
            http::HeaderValue::from_str(&settings.value)?,
        ));
        Ok(Middleware::from_layer(HeadersLayer::new(
            HeaderOps::default(),
            ops,
        )))
    });
    registry
}

#[allow(dead_code)] // the integration test uses `registry` and `CONFIG`, not `main`
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = registry();
    let config = Config::parse("embedded.toml", CONFIG, &registry)?;
    let server = Server::start(config, registry).await?;
    println!("serving on http://{}", server.local_addr("main").unwrap());
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
