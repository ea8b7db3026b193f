//! Where access log lines go: a file appended to, or stdout, written by a thread of its own.
//!
//! A request never waits on disk I/O: it hands its line to a bounded queue and moves on. If the
//! writer falls so far behind that the queue is full, lines are dropped and counted, and the count is
//! reported on stderr, rather than stalling requests. Sinks are shared by path, so every layer and
//! every reload writing to one file uses one writer; [`reopen_all`] (on SIGUSR1) reopens every file,
//! so logrotate can move them away.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// How many lines may wait for the writer.
const QUEUE: usize = 64 * 1024;

enum Message {
    Line(String),
    Reopen,
    /// Write and flush everything queued before this, then answer.
    Flush(mpsc::Sender<()>),
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
    tx: SyncSender<Message>,
    dropped: AtomicU64,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("target", &self.target)
            .finish()
    }
}

fn registry() -> &'static Mutex<HashMap<Target, Weak<Sink>>> {
    static SINKS: OnceLock<Mutex<HashMap<Target, Weak<Sink>>>> = OnceLock::new();
    SINKS.get_or_init(Default::default)
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
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let sink = Arc::new(Sink {
            target: target.clone(),
            tx,
            dropped: AtomicU64::new(0),
        });
        let name = match &target {
            Target::Stdout => "access-log-stdout".to_owned(),
            Target::File(_) => "access-log-file".to_owned(),
        };
        std::thread::Builder::new()
            .name(name)
            .spawn(move || writer.run(rx))?;
        sinks.retain(|_, weak| weak.strong_count() > 0);
        sinks.insert(target, Arc::downgrade(&sink));
        Ok(sink)
    }

    /// Queues one line (with its newline). Never blocks.
    pub fn write(&self, line: String) {
        match self.tx.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() {
                    eprintln!(
                        "parapet: access log {:?} is falling behind: {} line(s) dropped",
                        self.target,
                        n + 1
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Waits until every line queued so far is written and flushed.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Message::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// How many lines were dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Waits until every open sink has written and flushed what is queued: at shutdown, so that no line
/// is lost.
pub fn flush_all() {
    let sinks: Vec<Arc<Sink>> = {
        let sinks = registry().lock().unwrap_or_else(|e| e.into_inner());
        sinks.values().filter_map(Weak::upgrade).collect()
    };
    for sink in sinks {
        sink.flush();
    }
}

/// Reopens every open log file: after logrotate moved one away, writing goes on in a new file.
pub fn reopen_all() {
    let sinks = registry().lock().unwrap_or_else(|e| e.into_inner());
    for sink in sinks.values().filter_map(Weak::upgrade) {
        let _ = sink.tx.try_send(Message::Reopen);
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
            out: BufWriter::with_capacity(64 * 1024, Self::open_raw(target)?),
        })
    }

    fn open_raw(target: &Target) -> io::Result<Box<dyn Write + Send>> {
        Ok(match target {
            Target::Stdout => Box::new(io::stdout()),
            Target::File(path) => Box::new(open_append(path)?),
        })
    }

    fn run(mut self, rx: Receiver<Message>) {
        // Block for one message, then take whatever else is queued, then flush: one write per burst.
        while let Ok(first) = rx.recv() {
            self.handle(first);
            while let Ok(next) = rx.try_recv() {
                self.handle(next);
            }
            if let Err(e) = self.out.flush() {
                eprintln!("parapet: access log {:?}: {e}", self.target);
            }
        }
        let _ = self.out.flush();
    }

    fn handle(&mut self, message: Message) {
        match message {
            Message::Line(line) => {
                if let Err(e) = self.out.write_all(line.as_bytes()) {
                    eprintln!("parapet: access log {:?}: {e}", self.target);
                }
            }
            Message::Reopen => {
                let _ = self.out.flush();
                match Self::open_raw(&self.target) {
                    Ok(raw) => self.out = BufWriter::with_capacity(64 * 1024, raw),
                    Err(e) => eprintln!("parapet: cannot reopen access log {:?}: {e}", self.target),
                }
            }
            Message::Flush(done) => {
                let _ = self.out.flush();
                let _ = done.send(());
            }
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}
