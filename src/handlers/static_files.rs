//! `static`: serves files under `root` with tower-http's `ServeDir`.
//!
//! ```toml
//! [apps.site]
//! handler = { kind = "static", root = "public" }
//! ```
//!
//! Content types come from file extensions; Range and conditional requests (`If-Modified-Since`) are
//! answered; a directory serves its `index.html` unless `index = false`. A path can never leave `root`:
//! `ServeDir` refuses `..` segments and absolute components. `root` is resolved against the working
//! directory when the config loads and must be an existing directory.

use std::path::PathBuf;

use tower_http::services::ServeDir;

use crate::config::{ConfigError, Located, Location, Table};
use crate::registry::box_service;
use crate::AppService;

/// The settings of a `static` handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticFiles {
    /// `root`: the directory served.
    pub root: PathBuf,
    /// `index`: serve `index.html` for a directory (default true).
    pub index: bool,
}

impl StaticFiles {
    /// The service serving these files.
    pub fn service(&self) -> AppService {
        box_service(ServeDir::new(&self.root).append_index_html_on_directories(self.index))
    }
}

/// Reads a `static` handler's table; the root is checked by [`check`].
pub(crate) fn parse(t: &mut Table<'_>) -> Option<Located<StaticFiles>> {
    let root = t
        .required("root")
        .and_then(|v| Some((PathBuf::from(v.str()?), v.location())));
    let index = t.bool("index").unwrap_or(true);
    let (root, at) = root?;
    Some(Located {
        value: StaticFiles { root, index },
        at,
    })
}

/// The root must be an existing directory (checked again at every reload, so a root removed since
/// refuses the new config rather than serving 404s).
pub(crate) fn check(s: &Located<StaticFiles>, _: &Location) -> Vec<ConfigError> {
    let root = &s.value.root;
    match std::fs::metadata(root) {
        Ok(meta) if meta.is_dir() => Vec::new(),
        Ok(_) => vec![s
            .at
            .error(format!("static root {root:?} is not a directory"))],
        Err(e) => vec![s
            .at
            .error(format!("static root {root:?} cannot be read: {e}"))],
    }
}
