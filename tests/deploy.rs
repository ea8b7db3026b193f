//! The deployment files are honest: the configs they carry are valid, the Kubernetes probes point at
//! the admin endpoints on the admin port, and the dashboard only queries metrics parapet exports.

use parapet::{Config, Registry};

/// Every YAML document of the Kubernetes manifests as JSON, read by Debian's Python (python3-yaml,
/// which `.ci/run` installs): Rust needs no YAML crate for a test.
fn manifests() -> Vec<serde_json::Value> {
    let out = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
            "deploy/kubernetes/parapet.yaml",
        ])
        .output()
        .expect("/usr/bin/python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn of_kind<'m>(docs: &'m [serde_json::Value], kind: &str) -> &'m serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn the_probes_point_at_the_admin_endpoints_of_the_config_the_pods_run() {
    let docs = manifests();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for kind in ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget"] {
        assert!(kinds.contains(&kind), "{kinds:?}");
    }
    let text = of_kind(&docs, "ConfigMap")["data"]["parapet.toml"]
        .as_str()
        .unwrap();
    let config = Config::parse("configmap/parapet.toml", text, &Registry::new())
        .unwrap_or_else(|e| panic!("the ConfigMap's config is invalid:\n{e}"));
    let admin = config
        .admin
        .expect("the pods' config has an admin listener");

    let container = &of_kind(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    let admin_port = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "admin")
        .expect("an admin port")["containerPort"]
        .as_u64()
        .unwrap();
    assert_eq!(admin_port, u64::from(admin.bind.port()));
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "admin");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "admin");
    // Only a directory mount follows ConfigMap updates (the `..data` swap parapet reloads on).
    let mount = &container["volumeMounts"][0];
    assert!(mount.get("subPath").is_none(), "{mount}");
    let arg = container["args"].as_array().unwrap().last().unwrap();
    assert!(
        arg.as_str()
            .unwrap()
            .starts_with(mount["mountPath"].as_str().unwrap()),
        "{arg} not under the mounted ConfigMap"
    );
}

#[test]
fn the_container_config_is_valid_and_has_the_admin_listener() {
    let config = Config::load("deploy/parapet.container.toml", &Registry::new())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.admin.unwrap().bind.port(), 9901);
    assert!(config
        .listeners
        .iter()
        .all(|l| l.bind.ip().is_unspecified()));
}

#[test]
fn the_dashboard_queries_only_metrics_parapet_exports() {
    let text = std::fs::read_to_string("deploy/grafana/parapet-dashboard.json").unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let exported = [
        "parapet_requests_total",
        "parapet_request_duration_seconds_bucket",
        "parapet_connections_open",
        "parapet_reloads_total",
        "parapet_config_generation",
    ];
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            queries += 1;
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("parapet_") {
                    assert!(exported.contains(&word), "{word} is not a parapet metric");
                }
            }
        }
    }
    assert!(queries >= 6);
}
