//! parapet: an edge reverse proxy whose apps are chains of tower middleware configured in one TOML file.
//!
//! The pieces, in the order a request meets them:
//!
//! 1. [`server`]: listeners accept connections and serve HTTP/1.1 and HTTP/2 (h2c) on each;
//! 2. [`routing`]: each request is matched by listener, host and path prefix to an app;
//! 3. an app is a chain of middlewares ([`chain`], the layers of
//!    [`parapet_middlewares`]) around one endpoint: an upstream ([`proxy`]) or an in-process handler
//!    ([`handlers`], or one registered through [`Registry`]). A listener may have a chain of its own,
//!    around its router, which sees every request of that listener, unrouted ones included.
//!
//! The config ([`config`]) is read into a validated model (plain data), then built ([`build`]) into
//! the [`build::Gateway`] the server runs on, with the kinds of a [`Registry`] ([`builtins`] registers
//! parapet's own).
//!
//! A program can embed parapet and register its own handler kinds:
//!
//! ```no_run
//! use parapet::{Config, Registry, Server};
//! use parapet_middlewares::Body;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut registry = Registry::new();
//! registry.register_service(
//!     "hello",
//!     tower::service_fn(|_req: http::Request<Body>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(Body::from("hello\n")))
//!     }),
//! );
//! // In the TOML: [apps.greet] handler = { kind = "hello" }
//! let config = Config::load("config/parapet.toml", &registry)?;
//! let server = Server::start(config, registry).await?;
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod acme;
pub mod admin;
pub mod build;
pub mod builtins;
pub mod chain;
pub mod config;
pub mod error;
mod fnv;
pub mod handlers;
pub mod metrics;
pub mod proxy;
pub mod registry;
pub mod reload;
pub mod router;
pub mod routing;
pub mod server;
pub mod service;
mod spare;
pub mod tls;
pub mod tunnel;

pub use config::Config;
pub use error::Error;
pub use parapet_middlewares::{Body, BoxError, ClientAddr};
pub use registry::Registry;
pub use server::Server;

/// A request as every app sees it.
pub type Request = http::Request<Body>;

/// A response as every app returns it.
pub type Response = http::Response<Body>;

pub use service::AppService;
