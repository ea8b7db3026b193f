//! Watching the config file and reloading it when it changes: the [`ReloadTrigger::File`] trigger;
//! and the TLS listeners' certificate and key files, reloading when one changes (a renewal written by
//! certbot or another ACME client, a Kubernetes Secret update): [`ReloadTrigger::Certificates`].
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
    _watcher: Arc<std::sync::Mutex<notify::RecommendedWatcher>>,
    task: JoinHandle<()>,
}

impl Drop for ConfigWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether an event may concern the file named `file_name` in a watched directory: one naming it, a
/// Kubernetes atomic-writer entry (`..data`, `..2026_11_23...`), or one that names no path.
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

/// Whether an event may concern one of the certificate and key files `watched` (by directory and
/// name, as absolute paths): one naming one of them, or an atomic-writer entry in one's directory.
fn concerns_certificates(event: &notify::Event, watched: &[PathBuf]) -> bool {
    if matches!(event.kind, notify::EventKind::Access(_)) || watched.is_empty() {
        return false;
    }
    event.paths.iter().any(|p| {
        watched.iter().any(|w| {
            p.parent() == w.parent()
                && (p.file_name() == w.file_name()
                    || p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("..")))
        })
    })
}

/// The directory of `path` (`.` for a bare file name), absolute.
fn directory_of(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::path::absolute(&dir).unwrap_or(dir)
}

/// Watches the config file at `path` and reloads `server` when it changes: [`watch_with`] a
/// [`Reloader`] of its own.
pub fn watch(server: Arc<Server>, path: &Path) -> notify::Result<ConfigWatch> {
    watch_with(Arc::new(Reloader::new(server, path)))
}

/// What a burst of events asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    Config,
    Certificates,
}

/// The certificate files watched, absolute, and the directories watched for them.
#[derive(Default)]
struct CertificateWatch {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

/// Watches `reloader`'s config file and reloads it ([`ReloadTrigger::File`]) when it changes, and
/// the running config's certificate and key files, reloading ([`ReloadTrigger::Certificates`]) when
/// one of them changes. The set of certificate files follows the running config after each reload.
pub fn watch_with(reloader: Arc<Reloader>) -> notify::Result<ConfigWatch> {
    let path = reloader.path();
    let dir = directory_of(path);
    let file_name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let config_dir = dir.clone();
    let certificates = Arc::new(std::sync::RwLock::new(CertificateWatch::default()));
    let certs = Arc::clone(&certificates);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) => {
                let in_config_dir = event.paths.is_empty()
                    || event.paths.iter().any(|p| p.parent() == Some(&config_dir));
                if in_config_dir && concerns(&event, &file_name) {
                    let _ = tx.send(Change::Config);
                }
                let certs = certs.read().unwrap_or_else(|e| e.into_inner());
                if concerns_certificates(&event, &certs.files) {
                    let _ = tx.send(Change::Certificates);
                }
            }
            Err(err) => tracing::warn!(error = %err, "config watch error"),
        })?;
    let watcher = Arc::new(std::sync::Mutex::new(watcher));
    watcher
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .watch(&dir, RecursiveMode::NonRecursive)?;
    tracing::info!(dir = %dir.display(), "watching the config's directory for changes");
    let w = Arc::clone(&watcher);
    let task = tokio::spawn(async move {
        follow_certificates(&reloader, &w, &certificates, &dir).await;
        while let Some(first) = rx.recv().await {
            let mut change = first;
            let deadline = tokio::time::Instant::now() + MAX_DELAY;
            loop {
                let quiet = tokio::time::sleep(QUIET);
                tokio::select! {
                    more = rx.recv() => match more {
                        None => return,
                        Some(Change::Certificates) => change = Change::Certificates,
                        Some(Change::Config) => {}
                    },
                    _ = quiet => break,
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            let trigger = match change {
                Change::Config => ReloadTrigger::File,
                Change::Certificates => ReloadTrigger::Certificates,
            };
            let _ = reloader.reload(trigger).await;
            follow_certificates(&reloader, &w, &certificates, &dir).await;
        }
    });
    Ok(ConfigWatch {
        _watcher: watcher,
        task,
    })
}

/// Makes the certificate watch the running config's: its files, and their directories watched
/// (the config's own directory is watched already).
async fn follow_certificates(
    reloader: &Reloader,
    watcher: &std::sync::Mutex<notify::RecommendedWatcher>,
    certificates: &std::sync::RwLock<CertificateWatch>,
    config_dir: &Path,
) {
    let files: Vec<PathBuf> = reloader
        .server()
        .certificate_files()
        .await
        .iter()
        .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone()))
        .collect();
    let mut dirs: Vec<PathBuf> = files.iter().map(|f| directory_of(f)).collect();
    dirs.sort();
    dirs.dedup();
    dirs.retain(|d| d != config_dir);
    let mut certs = certificates.write().unwrap_or_else(|e| e.into_inner());
    let mut watcher = watcher.lock().unwrap_or_else(|e| e.into_inner());
    for gone in certs.dirs.iter().filter(|d| !dirs.contains(d)) {
        let _ = watcher.unwatch(gone);
    }
    for new in dirs.iter().filter(|d| !certs.dirs.contains(d)) {
        match watcher.watch(new, RecursiveMode::NonRecursive) {
            Ok(()) => {
                tracing::info!(dir = %new.display(), "watching a certificate directory for changes")
            }
            Err(err) => {
                tracing::warn!(dir = %new.display(), error = %err, "cannot watch a certificate directory; reload with SIGHUP")
            }
        }
    }
    certs.files = files;
    certs.dirs = dirs;
}
