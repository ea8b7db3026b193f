//! The config's model stage: what a file becomes, and every error it reports at once, located.
//! And the build stage's checks, which find what reading cannot (a missing page file).

use std::time::Duration;

use parapet::config::{Config, ConfigError, ConfigErrors, HostMatch};
use parapet::Registry;

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

#[derive(Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Greeting {
    #[allow(dead_code)] // read by serde, its presence is the point
    name: String,
}

#[test]
fn registered_handler_kinds_read_their_own_keys() {
    let mut registry = Registry::new();
    registry.register_handler("greeting", |_: &Greeting| {
        Ok(parapet::handlers::echo::service())
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
    assert_eq!(c.apps["h"].middlewares, ["secure", "compress", "errors"]);
    assert_eq!(c.listeners[0].middlewares, ["secure"]);
    assert_eq!(c.middlewares["secure"].kind, "headers");
    assert!(!c.middlewares["secure"].implicit);
    // A kind named bare is in the model too, with its defaults, once.
    assert_eq!(c.middlewares["compress"].kind, "compress");
    assert!(c.middlewares["compress"].implicit);
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
fn files_the_build_needs_are_checked_with_their_line_and_column() {
    let text = r#"[listeners.a]
bind = "127.0.0.1:0"
[apps.h]
middlewares = ["pages", "log"]
handler = { kind = "static", root = "/nonexistent/root" }
[middlewares.pages]
kind = "errors"
pages = { "5xx" = "/nonexistent/page.html", "404" = "config/errors/404.html" }
[middlewares.log]
kind = "access_log"
path = "/nonexistent/dir/access.log"
"#;
    let registry = Registry::new();
    // Reading finds nothing wrong: the files are the build's business.
    let config = Config::parse("t.toml", text, &registry).unwrap();
    let errs = parapet::build::check(&config, &registry).unwrap_err().0;
    let found: Vec<(usize, usize, &str)> = errs
        .iter()
        .map(|e| (e.line, e.column, e.key.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (5, 37, "apps.h.handler.root"),
            (8, 19, "middlewares.pages.pages.5xx"),
            (11, 8, "middlewares.log.path"),
        ],
        "{errs:#?}"
    );
    assert!(errs[0].message.contains("static root"), "{errs:#?}");
    assert!(
        errs[1].message.contains("cannot read error page"),
        "{errs:#?}"
    );
    assert!(
        errs[2].message.contains("cannot open access log"),
        "{errs:#?}"
    );
    // Building reports the same, and builds nothing.
    let built = parapet::build::Gateway::build(&config, &registry, None).unwrap_err();
    assert_eq!(built.0.len(), 3, "{built}");
}

#[test]
fn the_model_tells_a_changed_setting_from_an_unchanged_one() {
    let text = |level: u32| {
        format!(
            "[listeners.a]\nbind = \"127.0.0.1:0\"\n[apps.h]\nmiddlewares = [\"gz\"]\nhandler = {{ kind = \"echo\" }}\n[middlewares.gz]\nkind = \"compress\"\nlevel = {level}\n"
        )
    };
    let a = parse(&text(5)).unwrap();
    let b = parse(&("\n".to_owned() + &text(5))).unwrap();
    let c = parse(&text(6)).unwrap();
    // A setting moved to another line is the same setting; another level is not.
    assert_eq!(a.middlewares, b.middlewares);
    assert_ne!(a.middlewares, c.middlewares);
    assert_eq!(a.apps, c.apps);
}

#[derive(Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Stamp {
    #[serde(default = "stamped")]
    value: String,
    #[serde(default)]
    times: u8,
}

fn stamped() -> String {
    "stamped".to_owned()
}

fn stamp_registry() -> Registry {
    let mut registry = Registry::new();
    registry.register_middleware("stamp", |s: &Stamp| {
        let mut ops = parapet_middlewares::headers::HeaderOps::default();
        ops.set.push((
            http::HeaderName::from_static("x-stamp"),
            http::HeaderValue::from_str(&s.value)?,
        ));
        Ok(parapet::chain::Middleware::from_layer(
            parapet_middlewares::headers::HeadersLayer::new(Default::default(), ops),
        ))
    });
    registry
}

#[test]
fn typed_settings_errors_are_located_like_any_other() {
    let text = r#"[listeners.a]
bind = "127.0.0.1:0"
[apps.h]
middlewares = ["mine", "other"]
handler = { kind = "echo" }
[middlewares.mine]
kind = "stamp"
times = "twice"
[middlewares.other]
kind = "stamp"
colour = "red"
"#;
    let errs = Config::parse("t.toml", text, &stamp_registry())
        .unwrap_err()
        .0;
    let found: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        found,
        [
            (8, "middlewares.mine.times"),
            (11, "middlewares.other.colour")
        ],
        "{errs:#?}"
    );
    assert!(errs[1].message.contains("colour"), "{errs:#?}");
}

#[test]
fn embedders_register_middleware_kinds() {
    let registry = stamp_registry();
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

#[test]
fn the_config_module_is_a_leaf_that_knows_no_runtime_type() {
    // Read and model are pure: nothing in src/config may reach for what builds or serves.
    for entry in std::fs::read_dir("src/config").unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for runtime in [
            "crate::registry",
            "crate::chain",
            "crate::handlers",
            "crate::server",
            "crate::build",
            "crate::builtins",
            "crate::proxy",
            "crate::router",
        ] {
            let imports = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .any(|l| l.contains(runtime));
            assert!(!imports, "{} uses {runtime}", path.display());
        }
    }
}

const UPSTREAM: &str = r#"
[listeners.main]
bind = "127.0.0.1:0"
[[routes]]
app = "api"
[apps.api]
upstream = "backend"
[upstreams.backend]
"#;

#[test]
fn the_contracts_upstream_keys_parse_with_their_values() {
    let text = format!(
        "{UPSTREAM}{}",
        r#"
servers = ["http://10.0.0.1:9000", { url = "http://10.0.0.2:9000", weight = 3 }]
balance = "least_requests"
max_connections = 1024
queue_timeout = "1s"
retries = 2
retry_on = ["timeout", "502", "503", "504"]
read_timeout = "60s"
health = { path = "/healthz", interval = "5s", timeout = "2s", rise = 2, fall = 3, expect = "2xx" }
eject = { failures = 5, duration = "30s" }
"#
    );
    let c = parse(&text).unwrap();
    let up = &c.upstreams["backend"];
    assert_eq!(up.servers[1].weight, 3);
    assert_eq!(up.servers[0].weight, 1);
    assert_eq!(up.balance, parapet::config::Balance::LeastRequests);
    assert_eq!(up.max_connections, Some(1024));
    assert!(up.retry_on.timeout && up.retry_on.status_504 && !up.retry_on.reset);
    let health = up.health.as_ref().unwrap();
    assert_eq!(
        (health.path.as_str(), health.rise, health.fall),
        ("/healthz", 2, 3)
    );
    assert_eq!(health.expect, parapet::config::Expect::Class(2));
    assert_eq!(up.eject.unwrap().duration, Duration::from_secs(30));

    let hashed = format!(
        "{UPSTREAM}servers = [\"http://10.0.0.1:9000\"]\nbalance = \"hash\"\nhash_key = \"cookie:sid\"\n"
    );
    let c = parse(&hashed).unwrap();
    assert_eq!(
        c.upstreams["backend"].balance,
        parapet::config::Balance::Hash(parapet::config::HashKey::Cookie("sid".into()))
    );
}

#[test]
fn bad_upstream_keys_are_each_reported() {
    let text = format!(
        "{UPSTREAM}{}",
        r#"
servers = [{ url = "http://10.0.0.1:9000", weight = 0 }]
balance = "hash"
hash_key = "body"
retry_on = ["500"]
health = { expect = "2x" }
"#
    );
    let keys: Vec<String> = errors(&text).into_iter().map(|e| e.key).collect();
    for key in [
        "upstreams.backend.servers[0].weight",
        "upstreams.backend.hash_key",
        "upstreams.backend.retry_on[0]",
        "upstreams.backend.health.expect",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} not in {keys:?}");
    }
    let no_key = format!("{UPSTREAM}servers = [\"http://10.0.0.1:9000\"]\nbalance = \"hash\"\n");
    let keys: Vec<String> = errors(&no_key).into_iter().map(|e| e.key).collect();
    assert_eq!(keys, ["upstreams.backend.balance"]);
}

#[test]
fn the_contracts_acme_keys_parse_with_their_defaults() {
    use parapet::config::{AcmeChallenge, AcmeConfig};
    let c = parse(
        r#"
[listeners.https]
bind = "127.0.0.1:0"
[listeners.https.tls]
acme = ["Example.com.", "www.example.com"]

[acme]
email = "ops@example.com"
"#,
    )
    .unwrap();
    let tls = c.listeners[0].tls.as_ref().unwrap();
    assert!(
        tls.certificates.is_empty(),
        "certificates are optional with acme"
    );
    assert_eq!(tls.acme, ["example.com", "www.example.com"]);
    let acme = c.acme.unwrap();
    assert_eq!(acme.email.as_deref(), Some("ops@example.com"));
    assert_eq!(acme.directory, AcmeConfig::LETS_ENCRYPT);
    assert_eq!(acme.storage.value, std::path::Path::new("acme"));
    assert_eq!(acme.challenge, AcmeChallenge::TlsAlpn01);
    assert_eq!(acme.ca, None);

    let c = parse(
        r#"
[listeners.http]
bind = "127.0.0.1:0"
[listeners.https]
bind = "127.0.0.1:0"
[listeners.https.tls]
acme = ["example.com"]

[acme]
directory = "https://acme-staging-v02.api.letsencrypt.org/directory"
storage = "/var/lib/parapet/acme"
challenge = "http-01"
ca = "pebble.minica.pem"
retry = "5s"
"#,
    )
    .unwrap();
    let acme = c.acme.unwrap();
    assert_eq!(acme.directory, AcmeConfig::LETS_ENCRYPT_STAGING);
    assert_eq!(acme.challenge, AcmeChallenge::Http01);
    assert_eq!(
        acme.ca.map(|ca| ca.value),
        Some(std::path::PathBuf::from("pebble.minica.pem"))
    );
    assert_eq!(acme.retry, Duration::from_secs(5));
}

#[test]
fn acme_names_and_settings_are_checked_and_each_error_located() {
    let errs = errors(
        r#"
[listeners.https]
bind = "127.0.0.1:0"
[listeners.https.tls]
acme = ["*.example.com", "10.0.0.1", "localhost", "a.test", "A.test"]
"#,
    );
    let keys: Vec<(&str, &str)> = errs
        .iter()
        .map(|e| (e.key.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(errs.len(), 5, "{errs:#?}");
    // No [acme] table for the names: reported at the key, before its items.
    assert!(keys[0].0 == "listeners.https.tls.acme" && keys[0].1.contains("[acme]"));
    assert!(keys[1].0 == "listeners.https.tls.acme[0]" && keys[1].1.contains("dns-01"));
    assert!(keys[2].0 == "listeners.https.tls.acme[1]" && keys[2].1.contains("IP address"));
    assert!(keys[3].0 == "listeners.https.tls.acme[2]");
    assert!(keys[4].0 == "listeners.https.tls.acme[4]" && keys[4].1.contains("twice"));

    let errs = errors(
        r#"
[listeners.https]
bind = "127.0.0.1:0"
[listeners.https.tls]
acme = ["example.com"]

[acme]
email = "nobody"
directory = "http://insecure.example/directory"
challenge = "http-01"
contact = "x"
"#,
    );
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "acme.email",
            "acme.directory",
            "acme.challenge",
            "acme.contact"
        ],
        "{errs:#?}"
    );
    assert!(errs[2].message.contains("plain-HTTP listeners"));
    assert!(errs.iter().all(|e| e.line > 0 && e.column > 0));
}
