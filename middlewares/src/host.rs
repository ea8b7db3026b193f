//! The host contract: what the server running these layers must do for them.
//!
//! The layers are plain tower services, but a few things only the server that runs them can do. A
//! host (parapet's server, or any other that embeds these layers) must:
//!
//! 1. **Report the final status.** Call [`report_final_status`] on every response, just before
//!    sending its head. Layers outside an access log (or the server itself) may rewrite the status
//!    after the log saw it; this tells every access log the response passed through the status that
//!    actually went out. Without it, a log writes the status it saw.
//! 2. **Flush at shutdown.** Call [`flush_all`] before the process exits. Access log lines go to a
//!    writer thread and wait in a buffer for up to
//!    [`FLUSH_INTERVAL`](crate::access_log::sink::FLUSH_INTERVAL); without it, the last lines are
//!    lost. It blocks until they are written: call it off an async runtime's worker threads
//!    (`spawn_blocking`).
//! 3. **Reopen on SIGUSR1.** Call [`reopen_all`] when asked to (nginx's signal is SIGUSR1), so that
//!    logrotate can move the log files away and the logs go on in new ones.
//! 4. **Say who the client is.** Insert a [`ClientAddr`](crate::ClientAddr) into each request's
//!    extensions; the access log writes its IP (`-`, or `null`, without it).
//! 5. **Signal the panics it catches.** A host that catches panics of the services it calls (parapet's
//!    router does, so an app without an `errors` layer still answers a 500) must attach a
//!    [`PanicSignal`] to each request before calling the service ([`PanicSignal::attach`]), and, when
//!    it catches a panic, [`set`](PanicSignal::set) it *before* dropping the future that panicked.
//!    An access log inside that service sees its request dropped without a response: the signal tells
//!    it the client got the catcher's 500, not a 499 for a client that went away. The `errors`
//!    layer's panic capture does the same for what it wraps.
//! 6. **Abort on a body error.** When a response body fails (an upstream breaking off, a panic the
//!    `errors` layer caught, a compressor failing), end the client's connection without ending the
//!    body cleanly (hyper does), so a client never takes a truncated body for a whole one.
//!
//! ```
//! use http::{Request, Response};
//! use parapet_middlewares::host::{self, PanicSignal};
//! use parapet_middlewares::{Body, ClientAddr};
//!
//! // For each request:
//! let mut request = Request::new(Body::empty());
//! request.extensions_mut().insert(ClientAddr("192.0.2.1:5000".parse().unwrap()));
//! let signal = PanicSignal::attach(&mut request);
//! // ... call the service; if it panics: `signal.set()`, then drop its future ...
//! # let _ = signal;
//! let response = Response::new(Body::empty());
//! host::report_final_status(&response);
//! // ... send the response ...
//!
//! // At shutdown:
//! host::flush_all();
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{Request, Response};

/// Tells every access log the response passed through the status actually sent (duty 1 of the
/// [host contract](self)). Call it on every response just before sending its head; it costs nothing
/// when no access log is present.
pub fn report_final_status<B>(response: &Response<B>) {
    crate::access_log::report_final_status(response);
}

/// Waits until every access log has written and flushed what it buffered (duty 2): at shutdown, so
/// that no line is lost. Blocks on the writer threads.
pub fn flush_all() {
    crate::access_log::sink::flush_all();
}

/// Reopens every access log file (duty 3): after logrotate moved one away, writing goes on in a new
/// file. Returns at once; the writer threads reopen before their next write.
pub fn reopen_all() {
    crate::access_log::sink::reopen_all();
}

/// Tells what a panic-catcher wraps that a panic, not the client, ended its request (duty 5).
///
/// Whoever catches panics of an inner service (the `errors` layer, parapet's router) attaches a new
/// signal to each request before calling the service, keeps a handle, and sets it when it catches a
/// panic, before dropping the future that panicked. An access log takes the signal it finds in the
/// request's extensions; when its request is dropped without a response, it logs a 500 if the
/// signal is set (or the thread is unwinding), else a 499. An inner catcher replaces an outer one's
/// signal in the extensions, so each log holds the signal of the nearest catcher outside it: the one
/// that catches a panic from inside it.
///
/// Attaching one costs a catcher two small allocations per request (the shared flag, and its box in
/// the request's extensions); an access log clones it (an atomic increment).
#[derive(Clone, Debug, Default)]
pub struct PanicSignal(Arc<AtomicBool>);

impl PanicSignal {
    /// A new signal, not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new signal, put into the request's extensions in place of any outer catcher's, and
    /// returned for the catcher to keep.
    pub fn attach<B>(request: &mut Request<B>) -> Self {
        let signal = Self::new();
        request.extensions_mut().insert(signal.clone());
        signal
    }

    /// Records that a panic was caught: call it before dropping the future that panicked.
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether a panic was caught.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_attached_to_a_request_is_the_one_the_catcher_sets() {
        let mut request = Request::new(());
        let outer = PanicSignal::attach(&mut request);
        let inner = PanicSignal::attach(&mut request);
        let seen = request.extensions().get::<PanicSignal>().unwrap().clone();
        inner.set();
        assert!(seen.is_set());
        assert!(!outer.is_set());
    }
}
