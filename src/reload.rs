//! Watching the config file and reloading it when it changes: the [`ReloadTrigger::File`] trigger.
//!
//! The watch is on the file's **directory**, not the file, so that every way a file gets replaced is
//! seen: an in-place write, an editor's write-to-temp-and-rename, and a Kubernetes ConfigMap update
//! (the `..data` symlink swapped atomically for one to a new directory). Events come in bursts (an
//! editor's save is several), so they are debounced: a reload starts once [`QUIET`] has passed without
//! a new event (or [`MAX_DELAY`] after the first one). A file whose text did not change is not
//! reloaded. The reload itself is [`Reloader::reload`]: validate and build everything, then swap.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::server::{ReloadTrigger, Reloader, Server};

/// A burst of file events is over once none came for this long.
pub const QUIET: Duration = Duration::from_millis(50);
/// A reload starts at most this long after the first event of a burst, however long it lasts.
pub const MAX_DELAY: Duration = Duration::from_millis(500);

/// A running watch; dropping it stops watching.
pub struct ConfigWatch {
    _watcher: notify::RecommendedWatcher,
    task: JoinHandle<()>,
}

impl Drop for ConfigWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether an event may concern the config file: one naming the file, a Kubernetes atomic-writer
/// entry (`..data`, `..2026_11_23...`), or one that names no path.
fn concerns(event: &notify::Event, file_name: &std::ffi::OsStr) -> bool {
    if matches!(event.kind, notify::EventKind::Access(_)) {
        return false;
    }
    event.paths.is_empty()
        || event.paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| n == file_name || n.to_string_lossy().starts_with(".."))
        })
}

/// Watches the config file at `path` and reloads `server` when it changes: [`watch_with`] a
/// [`Reloader`] of its own.
pub fn watch(server: Arc<Server>, path: &Path) -> notify::Result<ConfigWatch> {
    watch_with(Arc::new(Reloader::new(server, path)))
}

/// Watches `reloader`'s config file and reloads it ([`ReloadTrigger::File`]) when it changes.
pub fn watch_with(reloader: Arc<Reloader>) -> notify::Result<ConfigWatch> {
    let path = reloader.path();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if concerns(&event, &file_name) => {
                let _ = tx.send(());
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "config watch error"),
        })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    tracing::info!(dir = %dir.display(), "watching the config's directory for changes");
    let task = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            let deadline = tokio::time::Instant::now() + MAX_DELAY;
            loop {
                let quiet = tokio::time::sleep(QUIET);
                tokio::select! {
                    more = rx.recv() => if more.is_none() { return },
                    _ = quiet => break,
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            let _ = reloader.reload(ReloadTrigger::File).await;
        }
    });
    Ok(ConfigWatch {
        _watcher: watcher,
        task,
    })
}
