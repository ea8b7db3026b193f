//! parapet's own kinds, registered into a [`Registry`] like any program's.
//!
//! Handlers: `respond`, `static`, `redirect`, `echo` ([`crate::handlers`]). Middlewares:
//! `access_log`, `compress`, `errors`, `headers` ([`middlewares`]); `request_id`, `cors`,
//! `ip_filter`, `rate_limit`, `basic_auth`, `forward_auth`, `rewrite`, `redirect` ([`catalogue`]).
//! Each is registered by its three steps: parse (the table into typed settings), check (without side
//! effects) and build.

pub mod catalogue;
pub mod middlewares;

use crate::config::{ConfigError, Location};
use crate::handlers::{echo, redirect, respond, static_files, wsgi};
use crate::registry::Registry;

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// A registry with parapet's built-in handler and middleware kinds.
    pub fn new() -> Self {
        let mut registry = Registry::empty();
        register(&mut registry);
        registry
    }
}

/// Registers every built-in kind.
pub fn register(registry: &mut Registry) {
    registry
        .register_handler_kind("respond", respond::parse, no_check, |r, _| {
            Ok(r.service().reads_no_tags())
        })
        .register_handler_kind(
            "static",
            static_files::parse,
            static_files::check,
            |s, _| Ok(s.value.service().reads_no_tags()),
        )
        .register_handler_kind("redirect", redirect::parse, no_check, |r, _| {
            Ok(r.service().reads_no_tags())
        })
        .register_handler_kind(
            "echo",
            |_| Some(()),
            no_check,
            |_, _| Ok(echo::service().reads_no_tags()),
        );
    wsgi::register(registry);
    middlewares::register(registry);
}

/// The check of a kind with nothing to check beyond its parse step.
fn no_check<S>(_: &S, _: &Location) -> Vec<ConfigError> {
    Vec::new()
}
