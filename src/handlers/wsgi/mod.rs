//! `wsgi`: a Python WSGI app (PEP 3333) served in-process, behind the app's middlewares.
//!
//! ```toml
//! [apps.shop]
//! middlewares = ["log", "compress"]
//! handler = { kind = "wsgi", app = "shop.wsgi:application", pythonpath = ["apps/shop"], threads = 8 }
//! ```
//!
//! Built with the cargo feature `wsgi` (`cargo build --release --features wsgi`, with Python 3's
//! development files installed and `PYO3_PYTHON` naming the interpreter). Without it, `kind = "wsgi"`
//! is a config error that says how to get it.
//!
//! How a request runs:
//!
//! - The app runs on a pool of `threads` OS threads of its own, never on the gateway's async workers,
//!   so a slow or blocked Python app never delays a route served by Rust. A thread holds Python's GIL
//!   while the app runs and lets go of it whenever it waits: for a piece of the request body
//!   (`wsgi.input`), or for a slow client to take a piece of the response (a bounded channel, so a
//!   slow client holds back the app, not memory).
//! - Python runs on as few of those threads as keep up: a thread that finishes a request takes the
//!   next queued one while it holds the GIL, and another thread joins only when the busy ones are
//!   blocked (they finished nothing for 2 ms). Moving the GIL to another thread for every request
//!   costs a context switch and moves Python's data between cores' caches.
//! - The head and a body that is whole when the head leaves (its `Content-Length` reached, or a list
//!   or tuple of bytes) go to the gateway in one message, without letting go of the GIL.
//! - The environ is PEP 3333's: SCRIPT_NAME is the route's prefix, PATH_INFO the rest (percent-decoded,
//!   as latin-1 text), HTTP_* the headers (repeated ones joined with `,`, cookies with `;`; a header
//!   whose name holds `_` is dropped, as nginx and gunicorn do, since it would pose as another once
//!   its `-` became `_`), `wsgi.input` streams the body, `wsgi.errors` writes to parapet's log.
//! - `start_response` follows the headers-sent rule: the head leaves with the first non-empty piece
//!   of the body (or at the end), so a second call with `exc_info` can still replace it; the app's
//!   middlewares see and may rewrite that head like any endpoint's.
//! - An exception before the head: 500 (which an `errors` middleware may turn into its page), with the
//!   traceback in the log. After it: the client's connection is aborted, so a truncated body is never
//!   taken for a whole one. The iterable's `close()` is always called, when the client goes away too.
//! - `wsgi.file_wrapper` sends a file that has a `fileno()` from Rust, without copying it through
//!   Python.
//!
//! One interpreter serves the whole process, and Python runs one thread at a time (the GIL): one core
//! of Python per process. To use more cores, run more processes (`server.reuse_port` lets them share
//! a port), or a free-threaded Python build. A reload keeps the interpreter and the imported app when
//! the handler's settings did not change; a changed `app` (or `pythonpath`, `threads`) imports the app
//! anew, but a module already imported is not re-executed (Python caches modules): new code in the
//! same module needs a restart.

#[cfg(feature = "wsgi")]
mod python;

use std::path::PathBuf;

use crate::config::{ConfigError, Located, Location, Table};
use crate::registry::Registry;

/// The settings of a `wsgi` handler.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Wsgi {
    /// `app`: `module:callable`, the callable a dotted path inside the module (`shop.wsgi:application`).
    pub app: String,
    /// `pythonpath`: directories put first on `sys.path` before the module is imported.
    pub pythonpath: Vec<PathBuf>,
    /// `threads`: how many requests the app serves at once (default 8).
    pub threads: usize,
}

/// Registers the `wsgi` handler kind: the real one with the `wsgi` feature, otherwise one whose every
/// use is an error saying how to get it.
pub(crate) fn register(registry: &mut Registry) {
    registry.register_handler_kind("wsgi", parse, check, build);
}

/// Reads a `wsgi` handler's table.
fn parse(t: &mut Table<'_>) -> Option<Located<Wsgi>> {
    if cfg!(not(feature = "wsgi")) {
        t.error(
            "this parapet was built without WSGI support: rebuild it with `cargo build --release \
             --features wsgi` (needs Python 3's development files, Debian's python3-dev)",
        );
        return None;
    }
    let at = t.location();
    let app = t.required("app").and_then(|v| {
        let s = v.str()?;
        let valid = s.split_once(':').is_some_and(|(module, callable)| {
            let ident = |part: &str| {
                !part.is_empty()
                    && !part.starts_with(|c: char| c.is_ascii_digit())
                    && part.chars().all(|c| c.is_alphanumeric() || c == '_')
            };
            module.split('.').all(ident) && callable.split('.').all(ident)
        });
        if !valid {
            v.error(format!(
                "invalid app {s:?}: expected \"module:callable\", like \"shop.wsgi:application\""
            ));
            return None;
        }
        Some(s.to_owned())
    });
    let pythonpath = match t.get("pythonpath") {
        None => Some(Vec::new()),
        Some(v) => v.str_list().map(|items| {
            items
                .into_iter()
                .map(|(s, _)| PathBuf::from(s))
                .collect::<Vec<_>>()
        }),
    };
    let threads = t.int_in("threads", 1..=1024).unwrap_or(8) as usize;
    Some(Located {
        value: Wsgi {
            app: app?,
            pythonpath: pythonpath?,
            threads,
        },
        at,
    })
}

/// Every `pythonpath` entry must be a directory. The app itself is not imported: importing runs the
/// module's code, which `parapet check` must not do.
fn check(w: &Located<Wsgi>, _: &Location) -> Vec<ConfigError> {
    w.value
        .pythonpath
        .iter()
        .filter(|dir| !dir.is_dir())
        .map(|dir| {
            w.at.error(format!(
                "pythonpath entry {dir:?} is not a directory this process can read"
            ))
        })
        .collect()
}

#[cfg(feature = "wsgi")]
fn build(w: &Located<Wsgi>, _: &Location) -> Result<crate::AppService, Vec<ConfigError>> {
    python::app(&w.value)
        .map(|app| app.service().reads_no_tags())
        .map_err(|e| vec![w.at.error(e)])
}

#[cfg(not(feature = "wsgi"))]
fn build(w: &Located<Wsgi>, _: &Location) -> Result<crate::AppService, Vec<ConfigError>> {
    // `parse` refuses every wsgi handler without the feature, so there is never one to build.
    Err(vec![w
        .at
        .error("this parapet was built without WSGI support")])
}
