//! `static`: serves files under `root` with tower-http's `ServeDir`.
//!
//! ```toml
//! [apps.site]
//! handler = { kind = "static", root = "public" }
//! ```
//!
//! Content types come from file extensions; Range and conditional requests (`If-Modified-Since`) are
//! answered; a directory serves its `index.html` unless `index = false`. A path can never leave `root`:
//! `ServeDir` refuses `..` segments and absolute components, and a wrapper, in front of it, answers
//! 404 for a file that is really elsewhere (a symbolic link out of `root`: one that stays inside is
//! followed) and, unless `hidden = true`, for a dotfile or anything under a dot directory (`.env`,
//! `.git/config`). `root` is resolved against the working directory when the config loads and must be
//! an existing directory.

use std::convert::Infallible;
use std::future::Future;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Empty};
use tower::{Service, ServiceExt};
use tower_http::services::fs::ServeFileSystemResponseBody;
use tower_http::services::ServeDir;

use crate::config::{ConfigError, Located, Location, Table};
use crate::registry::box_service;
use crate::{AppService, Request};

/// The settings of a `static` handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticFiles {
    /// `root`: the directory served.
    pub root: PathBuf,
    /// `index`: serve `index.html` for a directory (default true).
    pub index: bool,
    /// `hidden`: serve dotfiles and what is under dot directories (default false).
    pub hidden: bool,
}

impl StaticFiles {
    /// The service serving these files.
    pub fn service(&self) -> AppService {
        box_service(Confined {
            root: Arc::from(self.root.as_path()),
            index: self.index,
            hidden: self.hidden,
            serve: ServeDir::new(&self.root).append_index_html_on_directories(self.index),
        })
    }
}

/// `ServeDir`, answering 404 first for what it must not serve: a hidden path (unless `hidden`), or a
/// file whose real location, symbolic links resolved, is not under the real location of `root`.
///
/// Both are resolved on every request (one blocking-pool hop, like each of `ServeDir`'s file
/// operations), so a root that is itself a symbolic link switched by a deploy keeps working. A link
/// swapped between this check and `ServeDir`'s open is not caught: that takes write access to the
/// root, which is already the power to serve anything.
#[derive(Clone)]
struct Confined {
    root: Arc<Path>,
    index: bool,
    hidden: bool,
    serve: ServeDir,
}

type StaticBody = Either<ServeFileSystemResponseBody, Empty<Bytes>>;

impl Service<Request> for Confined {
    type Response = http::Response<StaticBody>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<http::Response<StaticBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // `ServeDir` is always ready; it is called by `oneshot` below.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let target = requested_file(&self.root, req.uri().path(), self.index, self.hidden);
        let root = Arc::clone(&self.root);
        let hidden = self.hidden;
        let serve = self.serve.clone();
        Box::pin(async move {
            let Some(target) = target else {
                return Ok(not_found());
            };
            let inside = tokio::task::spawn_blocking(move || really_inside(&root, &target, hidden))
                .await
                .unwrap_or(false);
            if !inside {
                return Ok(not_found());
            }
            let response = serve.oneshot(req).await?;
            Ok(response.map(Either::Left))
        })
    }
}

/// The 404 `ServeDir` answers for a missing file: no body.
fn not_found() -> http::Response<StaticBody> {
    let mut response = http::Response::new(Either::Right(Empty::new()));
    *response.status_mut() = http::StatusCode::NOT_FOUND;
    response
}

/// The file a request path names under `root`, read as `ServeDir` reads it (percent-decoded, one
/// component per segment, `.` skipped); `None` for a path it refuses too (`..`, an absolute
/// component, invalid UTF-8) and, unless `hidden`, for one with a segment starting with a dot. A
/// directory's path ending in `/` names its `index.html` when `index` is on.
fn requested_file(root: &Path, path: &str, index: bool, hidden: bool) -> Option<PathBuf> {
    let relative = path.trim_start_matches('/');
    let decoded = percent_decode(relative)?;
    let mut file = root.to_path_buf();
    for component in Path::new(&*decoded).components() {
        match component {
            Component::Normal(segment) => {
                if !hidden && segment.as_encoded_bytes().first() == Some(&b'.') {
                    return None;
                }
                file.push(segment);
            }
            Component::CurDir => {}
            Component::Prefix(_) | Component::RootDir | Component::ParentDir => return None,
        }
    }
    if index && (relative.is_empty() || relative.ends_with('/')) {
        file.push("index.html");
    }
    Some(file)
}

/// Whether `file`, every symbolic link resolved, is under `root`, every symbolic link resolved, and
/// (unless `hidden`) is not itself a hidden file there (a link named `a.txt` to `.env`). A file that
/// cannot be resolved is not served: it does not exist, or cannot be read.
fn really_inside(root: &Path, file: &Path, hidden: bool) -> bool {
    let (Ok(root), Ok(file)) = (std::fs::canonicalize(root), std::fs::canonicalize(file)) else {
        return false;
    };
    match file.strip_prefix(&root) {
        Ok(relative) => {
            hidden
                || !relative
                    .components()
                    .any(|c| c.as_os_str().as_encoded_bytes().first() == Some(&b'.'))
        }
        Err(_) => false,
    }
}

/// Decodes `%XX` escapes; `None` if the result is not UTF-8 (as `ServeDir` refuses it). A `%` not
/// followed by two hex digits stays as it is, as in the `percent-encoding` crate `ServeDir` uses.
fn percent_decode(s: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !s.contains('%') {
        return Some(std::borrow::Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(std::borrow::Cow::Owned)
}

/// Reads a `static` handler's table; the root is checked by [`check`].
pub(crate) fn parse(t: &mut Table<'_>) -> Option<Located<StaticFiles>> {
    let root = t
        .required("root")
        .and_then(|v| Some((PathBuf::from(v.str()?), v.location())));
    let index = t.bool("index").unwrap_or(true);
    let hidden = t.bool("hidden").unwrap_or(false);
    let (root, at) = root?;
    Some(Located {
        value: StaticFiles {
            root,
            index,
            hidden,
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_files_are_read_as_serve_dir_reads_them() {
        let root = Path::new("/srv");
        let file = |p, hidden| requested_file(root, p, true, hidden);
        assert_eq!(file("/a/b.css", false), Some(PathBuf::from("/srv/a/b.css")));
        assert_eq!(
            file("/a/%62.css", false),
            Some(PathBuf::from("/srv/a/b.css"))
        );
        assert_eq!(file("/a/", false), Some(PathBuf::from("/srv/a/index.html")));
        assert_eq!(file("/", false), Some(PathBuf::from("/srv/index.html")));
        assert_eq!(file("/a/../b", false), None);
        assert_eq!(file("/a/%2e%2e/b", false), None);
        assert_eq!(file("/%ff", false), None);
    }

    #[test]
    fn hidden_paths_are_refused_unless_allowed() {
        let root = Path::new("/srv");
        for path in ["/.env", "/.git/config", "/a/.htpasswd", "/%2egit/config"] {
            assert_eq!(requested_file(root, path, true, false), None, "{path}");
            assert!(requested_file(root, path, true, true).is_some(), "{path}");
        }
        assert!(requested_file(root, "/a.b/c", true, false).is_some());
    }
}
