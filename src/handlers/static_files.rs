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

use crate::config::Table;
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
    pub fn into_service(self) -> AppService {
        box_service(ServeDir::new(self.root).append_index_html_on_directories(self.index))
    }
}

pub(crate) fn from_table(t: &mut Table<'_>) -> Option<AppService> {
    let root = t.required("root").and_then(|v| {
        let s = v.str()?;
        let path = PathBuf::from(s);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => Some(path),
            Ok(_) => {
                v.error(format!("static root {s:?} is not a directory"));
                None
            }
            Err(e) => {
                v.error(format!("static root {s:?} cannot be read: {e}"));
                None
            }
        }
    });
    let index = t.bool("index").unwrap_or(true);
    Some(StaticFiles { root: root?, index }.into_service())
}
