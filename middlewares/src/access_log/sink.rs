//! Where access log lines go: a file appended to, or stdout, written by a thread of its own.
//!
//! A request never waits on disk I/O, nor wakes a thread: it appends its line to the sink's buffer
//! under a short lock and moves on. The sink's writer thread writes the buffer out every
//! [`FLUSH_INTERVAL`], or as soon as it holds [`FLUSH_SIZE`] bytes (nginx's `buffer=` and `flush=`),
//! so a busy log costs one write per batch, not one per request. If the disk falls so far behind that
//! the buffer reaches [`MAX_BUFFERED`], lines are dropped and counted on stderr rather than stalling
//! requests, and in [`dropped_lines`] (parapet's `parapet_access_log_dropped_lines_total`). Sinks are shared by target, so every layer and every reload writing to one file uses one
//! writer; [`host::reopen_all`](crate::host::reopen_all) (on SIGUSR1) reopens every file, so
//! logrotate can move them away, and [`host::flush_all`](crate::host::flush_all) writes out
//! everything buffered (at shutdown).

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

/// The longest a line waits in the buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// A buffer this full is written out at once.
pub const FLUSH_SIZE: usize = 64 * 1024;
/// A buffer this full takes no more lines until the writer catches up.
pub const MAX_BUFFERED: usize = 8 * 1024 * 1024;

/// Lines dropped by every sink of the process, for [`dropped_lines`].
static DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many access log lines every sink of the process has dropped since it started, because its
/// writer fell behind (its buffer at [`MAX_BUFFERED`]): what a host publishes as a metric.
pub fn dropped_lines() -> u64 {
    DROPPED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Where log lines are written.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// Standard output (`path = "-"`).
    Stdout,
    /// A file, appended to and created if missing.
    File(PathBuf),
}

/// A log destination with its writer thread.
pub struct Sink {
    target: Target,
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves a valid buffer behind: carry on with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct State {
    buffer: Vec<u8>,
    dropped: u64,
    reopen: bool,
    /// Flush requests: each is answered once everything buffered before it is written.
    flushes: Vec<mpsc::Sender<()>>,
    closed: bool,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("target", &self.target)
            .finish()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        // The writer writes what is left, then ends.
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

fn registry() -> &'static Mutex<HashMap<Target, Weak<Sink>>> {
    static SINKS: OnceLock<Mutex<HashMap<Target, Weak<Sink>>>> = OnceLock::new();
    SINKS.get_or_init(Default::default)
}

fn open_sinks() -> Vec<Arc<Sink>> {
    let sinks = registry().lock().unwrap_or_else(|e| e.into_inner());
    sinks.values().filter_map(Weak::upgrade).collect()
}

impl Sink {
    /// The sink for `target`: the one already open, or a new one (opening the file now, so that an
    /// unwritable path is an error when the config loads, not when the first request ends).
    pub fn open(target: Target) -> io::Result<Arc<Sink>> {
        let mut sinks = registry().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sink) = sinks.get(&target).and_then(Weak::upgrade) {
            return Ok(sink);
        }
        let writer = Writer::open(&target)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let sink = Arc::new(Sink {
            target: target.clone(),
            shared: Arc::clone(&shared),
        });
        std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || writer.run(&shared))?;
        sinks.retain(|_, weak| weak.strong_count() > 0);
        sinks.insert(target, Arc::downgrade(&sink));
        Ok(sink)
    }

    /// Buffers one line (with its newline). Never blocks on I/O.
    pub fn write(&self, line: &str) {
        let mut state = self.shared.lock();
        if state.buffer.len() + line.len() > MAX_BUFFERED {
            state.dropped += 1;
            DROPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if state.dropped.is_power_of_two() {
                eprintln!(
                    "parapet: access log {:?} is falling behind: {} line(s) dropped",
                    self.target, state.dropped
                );
            }
            return;
        }
        let was_below = state.buffer.len() < FLUSH_SIZE;
        state.buffer.extend_from_slice(line.as_bytes());
        if was_below && state.buffer.len() >= FLUSH_SIZE {
            self.shared.wake.notify_one();
        }
    }

    /// Waits until every line buffered so far is written and flushed.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        self.shared.lock().flushes.push(tx);
        self.shared.wake.notify_one();
        let _ = rx.recv();
    }

    /// How many lines were dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.shared.lock().dropped
    }
}

/// Waits until every open sink has written and flushed what is buffered: at shutdown, so that no
/// line is lost. Hosts call it as [`crate::host::flush_all`].
pub(crate) fn flush_all() {
    for sink in open_sinks() {
        sink.flush();
    }
}

/// Reopens every open log file: after logrotate moved one away, writing goes on in a new file.
/// Hosts call it as [`crate::host::reopen_all`].
pub(crate) fn reopen_all() {
    for sink in open_sinks() {
        sink.shared.lock().reopen = true;
        sink.shared.wake.notify_one();
    }
}

struct Writer {
    target: Target,
    out: BufWriter<Box<dyn Write + Send>>,
}

impl Writer {
    fn open(target: &Target) -> io::Result<Writer> {
        Ok(Writer {
            target: target.clone(),
            out: BufWriter::with_capacity(FLUSH_SIZE, Self::open_raw(target)?),
        })
    }

    fn open_raw(target: &Target) -> io::Result<Box<dyn Write + Send>> {
        Ok(match target {
            Target::Stdout => Box::new(io::stdout()),
            Target::File(path) => {
                Box::new(OpenOptions::new().create(true).append(true).open(path)?)
            }
        })
    }

    fn run(mut self, shared: &Shared) {
        let mut batch = Vec::new();
        loop {
            let (reopen, flushes, closed) = {
                let mut state = shared.lock();
                if state.buffer.len() < FLUSH_SIZE
                    && !state.reopen
                    && state.flushes.is_empty()
                    && !state.closed
                {
                    state = shared
                        .wake
                        .wait_timeout(state, FLUSH_INTERVAL)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                // Swap buffers: requests go on filling the other one while this one is written.
                std::mem::swap(&mut state.buffer, &mut batch);
                (
                    std::mem::take(&mut state.reopen),
                    std::mem::take(&mut state.flushes),
                    state.closed,
                )
            };
            // Reopen first: what is buffered now goes to the new file, as after nginx's USR1.
            if reopen {
                let _ = self.out.flush();
                match Self::open_raw(&self.target) {
                    Ok(raw) => self.out = BufWriter::with_capacity(FLUSH_SIZE, raw),
                    Err(e) => eprintln!("parapet: cannot reopen access log {:?}: {e}", self.target),
                }
            }
            if !batch.is_empty() {
                if let Err(e) = self.out.write_all(&batch) {
                    eprintln!("parapet: access log {:?}: {e}", self.target);
                }
                batch.clear();
            }
            if let Err(e) = self.out.flush() {
                eprintln!("parapet: access log {:?}: {e}", self.target);
            }
            for done in flushes {
                let _ = done.send(());
            }
            if closed {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_file_on_flush_and_after_a_reopen() {
        let dir = std::env::temp_dir().join(format!("parapet-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.log");
        let rotated = dir.join("a.log.1");
        let _ = std::fs::remove_file(&path);
        let sink = Sink::open(Target::File(path.clone())).unwrap();
        sink.write("one\n");
        sink.flush();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\n");
        // logrotate moves the file away, then signals.
        std::fs::rename(&path, &rotated).unwrap();
        reopen_all();
        sink.write("two\n");
        sink.flush();
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "one\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sinks_are_shared_by_target() {
        let path =
            std::env::temp_dir().join(format!("parapet-sink-shared-{}.log", std::process::id()));
        let a = Sink::open(Target::File(path.clone())).unwrap();
        let b = Sink::open(Target::File(path.clone())).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let _ = std::fs::remove_file(&path);
    }
}
