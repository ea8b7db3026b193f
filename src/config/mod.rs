//! The config, in three stages: **read**, **model**, and (elsewhere) **build**.
//!
//! 1. *Read* (`reader.rs`): the TOML text becomes toml's spanned document, walked key by key by
//!    [`Table`] and [`Value`], which record every error at once with its file, line, column and key.
//!    Pure: no I/O beyond the text it is given.
//! 2. *Model* (`model.rs`, converted in `validate.rs`): plain validated data, [`Config`]. Unknown keys,
//!    unknown kinds, bad values and dangling names are found here, all together ([`ConfigErrors`]).
//!    Handler and middleware kinds read their own settings through [`Kinds`], into typed values the
//!    model carries as [`Settings`]. No file is opened, no thread spawned, no service built: the model
//!    is `Clone` and `PartialEq`, so a reload can compare the old and the new.
//! 3. *Build* (`crate::build`, outside this module): files opened, pages read, chains and services
//!    built. Its errors still point into the file, through the [`Location`]s the model keeps.
//!
//! This module is a leaf: it knows no runtime type (no registry, chain, handler or server).

mod model;
mod reader;
mod validate;

use std::path::Path;

use toml::de::DeTable;

use reader::Source;

pub use model::{
    AcmeChallenge, AcmeConfig, AdminConfig, AppConfig, CertificateFiles, Config, EndpointConfig,
    HandlerConfig, HostMatch, IpRange, ListenerConfig, ListenerTls, Located, Location,
    MiddlewareConfig, RouteConfig, ServerConfig, Settings, TlsVersion, UpstreamConfig,
    UpstreamProtocol, UpstreamServer, UpstreamTls,
};
pub use model::{Balance, Eject, Expect, HashKey, HealthCheck, RetryOn};
pub use reader::{
    parse_duration, parse_size, ConfigError, ConfigErrors, Diagnostics, Table, Value,
};

/// The default path `parapet run` and `parapet check` read.
pub const DEFAULT_PATH: &str = "config/parapet.toml";

/// A kind's parse step: reads its table (the `kind` key already read) into typed [`Settings`],
/// recording errors on the table; `None` when the table is invalid. Pure.
pub type ParseSettings = dyn Fn(&mut Table<'_>) -> Option<Settings> + Send + Sync;

/// The handler and middleware kinds a config may name, as the model stage needs them: each kind's
/// parse step. `crate::Registry` is the implementation the gateway uses.
pub trait Kinds {
    /// The parse step of the middleware kind `kind`, if there is one.
    fn middleware(&self, kind: &str) -> Option<&ParseSettings>;
    /// Every middleware kind, sorted (for "unknown kind" errors).
    fn middleware_kinds(&self) -> Vec<&str>;
    /// The parse step of the handler kind `kind`, if there is one.
    fn handler(&self, kind: &str) -> Option<&ParseSettings>;
    /// Every handler kind, sorted (for "unknown kind" errors).
    fn handler_kinds(&self) -> Vec<&str>;
}

impl Config {
    /// Reads and validates the config at `path`, with the kinds `kinds` knows.
    pub fn load(path: impl AsRef<Path>, kinds: &dyn Kinds) -> Result<Config, crate::Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| crate::Error::ReadConfig {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::parse(path, &text, kinds)?)
    }

    /// Validates `text` as if read from `path` (which only names the file in errors).
    pub fn parse(
        path: impl AsRef<Path>,
        text: &str,
        kinds: &dyn Kinds,
    ) -> Result<Config, ConfigErrors> {
        let path = path.as_ref();
        let diag = Diagnostics::new(Source::new(path, text));
        let (doc, syntax) = DeTable::parse_recoverable(text);
        if !syntax.is_empty() {
            for e in syntax {
                diag.error(e.span().unwrap_or(0..0), "(syntax)", e.message().trim());
            }
            return Err(diag.into_errors());
        }
        let span = doc.span();
        let root = Table::new(&diag, String::new(), span, doc.get_ref());
        let config = validate::read_root(root, path, kinds).map(|mut c| {
            c.source_hash = hash_text(text);
            c
        });
        match config {
            Some(config) if !diag.has_errors() => Ok(config),
            _ => Err(diag.into_errors()),
        }
    }
}

/// The hash [`Config::source_hash`] holds for a file's text.
pub fn hash_text(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}
