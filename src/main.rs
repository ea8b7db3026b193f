//! The `parapet` command: `run` serves a config, `check` validates one.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use parapet::config::DEFAULT_PATH;
use parapet::server::{ReloadTrigger, Reloader};
use parapet::Error;
use parapet::{Config, Registry, Server};
use parapet_middlewares::ErrorChain;

#[derive(Parser)]
#[command(
    name = "parapet",
    version,
    about = "An edge reverse proxy whose apps are chains of tower middleware"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the config until SIGTERM or SIGINT.
    Run {
        /// The config file.
        #[arg(short, long, default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Validate the config and exit: 0 valid, 1 invalid (errors on stderr).
    Check {
        /// The config file.
        #[arg(short, long, default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
}

/// mimalloc: a request allocates and frees many small objects across threads, which glibc's malloc
/// serves at a noticeably higher cost per request (measured in benches/nginx.sh).
#[global_allocator]
static ALLOCATOR: Mimalloc = Mimalloc;

/// mimalloc, asked for alignment only where it is more than mimalloc always gives (8 bytes).
///
/// The `mimalloc` crate's allocator calls `mi_malloc_aligned` for every allocation, and mimalloc 3
/// serves an aligned request of more than 1 KiB (a boxed request future, hyper's 8 KiB read buffer)
/// by its generic path: counted with callgrind, about 240 instructions each, against `mi_malloc`'s
/// few dozen. Rust's own `System` allocator makes the same choice for `malloc`.
struct Mimalloc;

/// What every mimalloc allocation is aligned to (`MI_INTPTR_SIZE`).
const MI_MIN_ALIGN: usize = std::mem::size_of::<usize>();

// SAFETY: every block comes from mimalloc and goes back to it (`mi_free` takes aligned blocks too);
// a layout whose alignment mimalloc does not always give is asked for with it.
unsafe impl std::alloc::GlobalAlloc for Mimalloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.align() <= MI_MIN_ALIGN {
            libmimalloc_sys::mi_malloc(layout.size()).cast()
        } else {
            libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.align() <= MI_MIN_ALIGN {
            libmimalloc_sys::mi_zalloc(layout.size()).cast()
        } else {
            libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        libmimalloc_sys::mi_free(ptr.cast());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= MI_MIN_ALIGN {
            libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast()
        } else {
            libmimalloc_sys::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
        }
    }
}

/// Gives the memory a worker freed back to the OS when it goes idle.
///
/// mimalloc keeps a page it emptied for 10 ms (its purge delay) before it tells the OS it can have
/// it, so a page emptied and soon filled again costs neither an `madvise` nor the page faults of
/// touching it again. Telling the OS at once (a purge delay of 0, which parapet used before) costs
/// `bare` 0.45 page faults and about 2 µs of kernel time per request under load. But mimalloc purges
/// only when the thread that owns the pages calls it again, and a worker that goes quiet after a burst
/// (its keep-alive connections idle, their buffers released) would keep that memory for as long as it
/// stays quiet. So a worker about to park collects (`mi_collect`, forced) when it slept 50 ms or more
/// before this wake-up (it was idle: whatever woke it, such as the idle-release timer freeing
/// connections' buffers, is followed by a collect), and otherwise at most once a second.
/// `MIMALLOC_PURGE_DELAY` in the environment still sets the delay.
mod idle_collect {
    use std::cell::Cell;
    use std::time::{Duration, Instant};

    thread_local! {
        static LAST_COLLECT: Cell<Option<Instant>> = const { Cell::new(None) };
        static PARKED_AT: Cell<Option<Instant>> = const { Cell::new(None) };
        static WOKE_FROM_IDLE: Cell<bool> = const { Cell::new(false) };
    }

    /// How long a sleep makes the next park collect.
    const IDLE: Duration = Duration::from_millis(50);
    /// The longest a busy worker goes without collecting.
    const BUSY: Duration = Duration::from_secs(1);

    /// `on_thread_unpark`: was the sleep that just ended an idle one?
    pub(crate) fn unparked() {
        let idle = PARKED_AT.get().is_some_and(|at| at.elapsed() >= IDLE);
        WOKE_FROM_IDLE.set(idle);
    }

    /// `on_thread_park`: collects after an idle sleep, or when the last collect is a second old.
    pub(crate) fn parking() {
        let now = Instant::now();
        PARKED_AT.set(Some(now));
        let idle = WOKE_FROM_IDLE.replace(false);
        let due = idle
            || LAST_COLLECT
                .get()
                .is_none_or(|t| now.duration_since(t) >= BUSY);
        if due {
            LAST_COLLECT.set(Some(now));
            // After an idle sleep everything free goes back (forced); a busy worker gives back only
            // the pages whose purge delay ran out, not those it is about to use again.
            // SAFETY: collects the calling thread's heap; no pointer is handed over.
            unsafe { libmimalloc_sys::mi_collect(idle) };
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let registry = Registry::new();
    let (Command::Check { config: path } | Command::Run { config: path }) = &cli.command;
    let config = match Config::load(path, &registry) {
        Ok(c) => c,
        Err(err) => return report(&err),
    };
    match &cli.command {
        // Read, validate and check without side effects: no file is opened for writing, nothing is
        // bound or started.
        Command::Check { .. } => {
            if let Err(errors) = parapet::build::check(&config, &registry) {
                return report(&Error::Config(errors));
            }
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Command::Run { .. } => {
            // One worker is one thread that does everything, like an nginx worker: no work-stealing
            // scheduler, no cross-thread wake-ups between the I/O driver and the tasks.
            let mut runtime = match config.server.workers {
                Some(1) => tokio::runtime::Builder::new_current_thread(),
                Some(workers) => {
                    let mut b = tokio::runtime::Builder::new_multi_thread();
                    b.worker_threads(workers);
                    b
                }
                None => tokio::runtime::Builder::new_multi_thread(),
            };
            runtime
                .enable_all()
                .on_thread_park(idle_collect::parking)
                .on_thread_unpark(idle_collect::unparked);
            let runtime = match runtime.build() {
                Ok(rt) => rt,
                Err(err) => {
                    eprintln!("parapet: cannot start the runtime: {err}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(run(config, registry))
        }
    }
}

async fn run(config: Config, registry: Registry) -> ExitCode {
    use std::sync::Arc;
    use tokio::signal::unix::{signal, SignalKind};

    let path = config.path.clone();
    // Signal handlers first: a signal sent as soon as the listeners are up must not find the
    // default action (termination) still in place.
    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr1)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined1()),
    ) else {
        eprintln!("parapet: cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    let server = match Server::start(config, registry).await {
        Ok(s) => Arc::new(s),
        Err(err) => return report(&err),
    };
    let reloader = Arc::new(Reloader::new(Arc::clone(&server), path));
    // Without a watch (inotify exhausted, say), SIGHUP still reloads.
    let _watch = match parapet::reload::watch_with(Arc::clone(&reloader)) {
        Ok(w) => Some(w),
        Err(err) => {
            tracing::warn!(error = %err, "cannot watch the config file; reload with SIGHUP");
            None
        }
    };
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM received"); break }
            _ = int.recv() => { tracing::info!("SIGINT received"); break }
            _ = usr1.recv() => {
                tracing::info!("SIGUSR1 received: reopening access log files");
                parapet_middlewares::host::reopen_all();
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP received: reloading {}", reloader.path().display());
                // Always reloads (see `ReloadTrigger::Signal`).
                let _ = reloader.reload(ReloadTrigger::Signal).await;
            }
        }
    }
    server.shutdown().await;
    ExitCode::SUCCESS
}

/// Prints why parapet cannot go on, every config error on a line of its own, any other error with
/// its causes.
fn report(err: &Error) -> ExitCode {
    match err {
        Error::Config(errors) => {
            for e in errors.errors() {
                eprintln!("error: {e}");
            }
            eprintln!("{} error(s); the config is invalid", errors.errors().len());
        }
        _ => eprintln!("error: {}", ErrorChain(err)),
    }
    ExitCode::FAILURE
}

/// Diagnostics go to stderr; `PARAPET_LOG` sets the level (error, warn, info, debug, trace).
fn init_tracing() {
    let level = std::env::var("PARAPET_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing_subscriber::filter::LevelFilter>().ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(false)
        .init();
}
