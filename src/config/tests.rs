use super::*;

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse("test.toml", text, &Registry::new())
}

fn errors(text: &str) -> Vec<ConfigError> {
    match parse(text) {
        Ok(_) => panic!("config should be invalid"),
        Err(e) => e.0,
    }
}

const VALID: &str = r#"
[server]
shutdown_timeout = "5s"
workers = 2

[listeners.public]
bind = "127.0.0.1:0"

[[routes]]
host = "*.Example.com"
path = "/api"
app = "api"

[[routes]]
listener = ["public"]
app = "hello"

[apps.api]
upstream = "backend"

[apps.hello]
handler = { kind = "respond", status = 201, body = "hi", headers = { "x-a" = "b" } }

[upstreams.backend]
servers = ["http://127.0.0.1:9000", "http://127.0.0.1:9001/base/"]
connect_timeout = "250ms"
timeout = "1m30s"
"#;

#[test]
fn a_valid_config_becomes_the_model() {
    let c = parse(VALID).unwrap();
    assert_eq!(c.server.shutdown_timeout, Duration::from_secs(5));
    assert_eq!(c.server.workers, Some(2));
    assert_eq!(c.listeners[0].name, "public");
    assert_eq!(c.routes[0].host, HostMatch::Wildcard(".example.com".into()));
    assert_eq!(c.routes[1].listeners, Some(vec!["public".to_owned()]));
    assert_eq!(c.routes[1].path, "/");
    let up = &c.upstreams["backend"];
    assert_eq!(up.servers[1].base_path, "/base");
    assert_eq!(up.connect_timeout, Duration::from_millis(250));
    assert_eq!(up.timeout, Duration::from_secs(90));
}

#[test]
fn unknown_key_and_dangling_app_are_both_reported_with_line_and_column() {
    let errs = errors(
        r#"[listeners.public]
bind = "127.0.0.1:0"
colour = "blue"

[[routes]]
app = "nowhere"
"#,
    );
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!((errs[0].line, errs[0].column), (3, 1));
    assert_eq!(errs[0].key, "listeners.public.colour");
    assert!(errs[0].message.contains("unknown key"));
    assert_eq!((errs[1].line, errs[1].column), (6, 7));
    assert_eq!(errs[1].key, "routes[0].app");
    assert!(errs[1].message.contains("no app named `nowhere`"));
    assert_eq!(
        errs[0].to_string(),
        "test.toml:3:1: listeners.public.colour: unknown key `colour`"
    );
}

#[test]
fn every_bad_value_is_reported_in_one_run() {
    let errs = errors(
        r#"[server]
shutdown_timeout = "soon"
workers = 0

[listeners.a]
bind = "localhost"

[[routes]]
listener = "b"
host = "example.com:80"
path = "api"
app = "x"

[apps.x]
upstream = "up"
handler = { kind = "respond" }

[apps.y]
handler = { kind = "teleport" }

[apps.z]
upstream = "missing"

[upstreams.up]
servers = ["ftp://example.com"]
timeout = 5
"#,
    );
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "server.shutdown_timeout",
            "server.workers",
            "listeners.a.bind",
            "routes[0].listener",
            "routes[0].host",
            "routes[0].path",
            "apps.x.handler",
            "apps.y.handler.kind",
            "apps.z.upstream",
            "upstreams.up.servers[0]",
            "upstreams.up.timeout",
        ],
        "{errs:#?}"
    );
}

#[test]
fn a_route_to_a_declared_but_invalid_app_is_not_called_dangling() {
    let errs = errors(
        r#"[listeners.a]
bind = "127.0.0.1:0"
[[routes]]
app = "broken"
[apps.broken]
handler = { kind = "respond", status = 1000 }
"#,
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].key, "apps.broken.handler.status");
}

#[test]
fn duplicate_routes_and_binds_are_refused() {
    let errs = errors(
        r#"[listeners.a]
bind = "127.0.0.1:7000"
[listeners.b]
bind = "127.0.0.1:7000"
[[routes]]
path = "/x"
app = "h"
[[routes]]
path = "/x"
app = "h"
[apps.h]
handler = { kind = "echo" }
"#,
    );
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].message.contains("like listener `a`"));
    assert!(errs[1].message.contains("duplicate route"));
}

#[test]
fn a_toml_syntax_error_is_located() {
    let errs = errors("[listeners.a]\nbind = \n");
    assert_eq!(errs[0].line, 2);
    assert_eq!(errs[0].key, "(syntax)");
}

#[test]
fn a_config_without_listeners_is_refused() {
    let errs = errors("[apps.h]\nhandler = { kind = \"echo\" }\n");
    assert!(errs[0].message.contains("no listeners"), "{errs:?}");
}

#[test]
fn registered_handler_kinds_read_their_own_keys() {
    let mut registry = Registry::new();
    registry.register_handler("greeting", |t| {
        let _name = t.required("name")?.str()?;
        Some(crate::handlers::echo::service())
    });
    let text = r#"[listeners.a]
bind = "127.0.0.1:0"
[apps.g]
handler = { kind = "greeting", name = "x", extra = 1 }
"#;
    let errs = Config::parse("t.toml", text, &registry).unwrap_err().0;
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].key, "apps.g.handler.extra");
}

#[test]
fn middlewares_resolve_to_instances_or_bare_kinds() {
    let c = parse(
        r#"[listeners.a]
bind = "127.0.0.1:0"
middlewares = ["secure"]
[apps.h]
middlewares = ["secure", "compress", "errors"]
handler = { kind = "echo" }
[middlewares.secure]
kind = "headers"
response.set = { "x-frame-options" = "DENY" }
response.remove = ["server"]
request.add = { "x-edge" = "parapet" }
"#,
    )
    .unwrap();
    let names: Vec<&str> = c.apps["h"]
        .middlewares
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["secure", "compress", "errors"]);
    assert_eq!(c.listeners[0].middlewares[0].name, "secure");
    assert_eq!(c.middlewares["secure"].kind, "headers");
}

#[test]
fn bad_middleware_names_kinds_and_keys_are_all_reported() {
    let errs = errors(
        r#"[listeners.a]
bind = "127.0.0.1:0"
middlewares = ["nope"]
[apps.h]
middlewares = ["gzip", "log"]
handler = { kind = "echo" }
[middlewares.log]
kind = "access_log"
format = "xml"
[middlewares.gzip]
kind = "compress"
level = 12
encodings = ["gzip", "lzma"]
types = ["text"]
[middlewares.odd]
kind = "teleport"
[middlewares.pages]
kind = "errors"
pages = { "200" = "x.html", "5xx" = "/nonexistent/page.html" }
intercept = ["6xx"]
[middlewares.h]
kind = "headers"
response.sett = { "a" = "b" }
request.remove = ["bad header"]
"#,
    );
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "listeners.a.middlewares[0]",
            "middlewares.log.format",
            "middlewares.gzip.level",
            "middlewares.gzip.encodings[1]",
            "middlewares.gzip.types[0]",
            "middlewares.odd.kind",
            "middlewares.pages.pages.200",
            "middlewares.pages.pages.5xx",
            "middlewares.pages.intercept[0]",
            "middlewares.h.response.sett",
            "middlewares.h.request.remove[0]",
        ],
        "{errs:#?}"
    );
    // The app's chain names declared (if invalid) instances: not reported again as dangling.
    assert!(
        errs.iter().all(|e| !e.key.starts_with("apps.")),
        "{errs:#?}"
    );
}

#[test]
fn embedders_register_middleware_kinds() {
    let mut registry = Registry::new();
    registry.register_middleware("stamp", |t| {
        let value = t.str("value").unwrap_or("stamped").to_owned();
        let mut ops = parapet_middlewares::headers::HeaderOps::default();
        ops.set.push((
            http::HeaderName::from_static("x-stamp"),
            http::HeaderValue::from_str(&value).ok()?,
        ));
        Some(crate::chain::Middleware::from_layer(
            parapet_middlewares::headers::HeadersLayer::new(Default::default(), ops),
        ))
    });
    let text = r#"[listeners.a]
bind = "127.0.0.1:0"
[apps.h]
middlewares = ["stamp", "mine"]
handler = { kind = "echo" }
[middlewares.mine]
kind = "stamp"
value = "v2"
"#;
    let c = Config::parse("t.toml", text, &registry).unwrap();
    assert_eq!(c.apps["h"].middlewares.len(), 2);
}
