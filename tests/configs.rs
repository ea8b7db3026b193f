//! Every config shipped in the repo is valid: the default one and every example.

use std::path::Path;

use parapet::{Config, Registry};

fn toml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

#[test]
fn every_config_in_the_repo_is_valid() {
    let mut files = Vec::new();
    toml_files(Path::new("config"), &mut files);
    assert!(
        files.len() >= 3,
        "expected the default config and the examples: {files:?}"
    );
    let registry = Registry::new();
    let mut failures = Vec::new();
    for file in &files {
        if let Err(e) = Config::load(file, &registry) {
            failures.push(e.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "invalid configs:\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_docs_config_examples_are_valid() {
    // Every ```toml block in docs/config.md marked as a full config parses.
    let text = std::fs::read_to_string("docs/config.md").unwrap();
    let registry = Registry::new();
    let mut checked = 0;
    for block in text.split("```toml\n").skip(1) {
        let block = block.split("```").next().unwrap();
        if !block.starts_with("# full config") {
            continue;
        }
        if let Err(e) = Config::parse("docs/config.md", block, &registry) {
            panic!("a full config in docs/config.md is invalid:\n{e}\n---\n{block}");
        }
        checked += 1;
    }
    assert!(checked >= 1, "docs/config.md has no full config example");
}
