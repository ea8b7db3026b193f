//! The embedding example: a program's own handler and middleware kinds, with typed settings, named in
//! TOML, answer through parapet.

mod common;

#[path = "../examples/embedded.rs"]
mod embedded;

use common::*;

#[tokio::test]
async fn the_embedded_examples_custom_handler_answers() {
    let toml = embedded::CONFIG.replace("127.0.0.1:8090", "127.0.0.1:0");
    let server = start_with(&toml, &embedded::registry()).await;
    let addr = server.local_addr("main").unwrap();
    let (status, headers, body) = get(addr, None, "/hello/ada").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(headers["x-served-by"], "parapet, embedded");
    assert_eq!(body, "hello, ada, from inside parapet\n");
    let (status, _, body) = get(addr, None, "/elsewhere").await;
    assert_eq!((status, body.as_str()), (404, "try /hello/NAME\n"));
}

#[tokio::test]
async fn an_unregistered_kind_is_a_config_error_naming_the_known_ones() {
    let err = parapet::Config::parse("x.toml", embedded::CONFIG, &parapet::Registry::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown handler kind `greeter`"), "{err}");
    assert!(err.contains("echo, redirect, respond, static"), "{err}");
}

#[test]
fn an_embedded_kinds_bad_setting_is_located_and_a_bad_build_refuses_the_config() {
    let registry = embedded::registry();
    let bad = embedded::CONFIG.replace("greeting = \"hello\"", "greeting = 7");
    let err = parapet::Config::parse("x.toml", &bad, &registry)
        .unwrap_err()
        .to_string();
    assert!(err.contains("apps.greet.handler.greeting"), "{err}");
    assert!(err.contains("expected a string"), "{err}");
    // Valid to serde, refused by the kind's build step: located at the middleware's table.
    let bad = embedded::CONFIG.replace("name = \"x-served-by\"", "name = \"bad header\"");
    let config = parapet::Config::parse("x.toml", &bad, &registry).unwrap();
    let err = parapet::build::Gateway::build(&config, &registry, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("middlewares.signed: cannot build `signature`"),
        "{err}"
    );
}
