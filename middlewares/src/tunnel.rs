//! Upgraded connections (WebSocket and other `Upgrade` protocols), as the layers see them.
//!
//! A request the client marked as an upgrade (HTTP/1.1 `Connection: upgrade` with an `Upgrade`
//! header) carries an [`UpgradeRequest`] extension; its `Upgrade` header is kept for it alone, so a
//! layer may read it (or remove it, and the upgrade with it). When the endpoint agrees (an upstream's
//! `101 Switching Protocols`), the response carries a [`Tunnel`]: the 101 head passes through every
//! layer like any other, and once it is sent the server joins the client's connection to the
//! upstream's and carries bytes both ways until either side closes, the tunnel stays silent for
//! `server.tunnel_timeout`, or shutdown ends it.
//!
//! A layer that wants to know how a tunnel ended (the access log writes its line then, with the
//! tunnel's duration and bytes) registers with [`Tunnel::on_end`]. Every hook runs exactly once:
//! when the tunnel closes, or, if it never opened (the client went away before the 101 was out, a
//! layer replaced the response), when the last handle is dropped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// In a request's extensions: the client asked to switch protocols (HTTP/1.1 `Connection: upgrade`
/// and `Upgrade`). Set by the server before the listener's layers run; never on HTTP/2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpgradeRequest;

/// Why a tunnel ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelEndReason {
    /// One side closed (both directions finished), or a side's connection failed.
    Closed,
    /// No byte either way for `server.tunnel_timeout`.
    Idle,
    /// Shutdown closed it after `server.shutdown_timeout`.
    Shutdown,
    /// The tunnel never opened: the response was not sent as a 101, or the upstream's side of
    /// the upgrade failed.
    NotOpened,
}

impl TunnelEndReason {
    /// A short name, as logs print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Idle => "idle_timeout",
            Self::Shutdown => "shutdown",
            Self::NotOpened => "not_opened",
        }
    }
}

/// How a tunnel ended: what each side sent through it, and for how long it was open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelEnd {
    /// Bytes the client sent through the tunnel (to the upstream).
    pub from_client: u64,
    /// Bytes the upstream sent through the tunnel (to the client).
    pub to_client: u64,
    /// From the 101 being sent to the tunnel's close.
    pub duration: Duration,
    /// Why it closed.
    pub reason: TunnelEndReason,
}

impl TunnelEnd {
    const NOT_OPENED: TunnelEnd = TunnelEnd {
        from_client: 0,
        to_client: 0,
        duration: Duration::ZERO,
        reason: TunnelEndReason::NotOpened,
    };
}

type Hook = Box<dyn FnOnce(&TunnelEnd) + Send>;

/// In a `101 Switching Protocols` response's extensions: the tunnel the connection becomes once the
/// head is sent. Cloning shares it.
#[derive(Clone)]
pub struct Tunnel(Arc<Hooks>);

impl Default for Tunnel {
    fn default() -> Self {
        Self::new()
    }
}

struct Hooks(Mutex<Option<Vec<Hook>>>);

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel").finish_non_exhaustive()
    }
}

impl Tunnel {
    /// A tunnel no layer has registered with yet.
    pub fn new() -> Self {
        Self(Arc::new(Hooks(Mutex::new(Some(Vec::new())))))
    }

    /// Runs `hook` once, when the tunnel ends (or, if it never opens, when its last handle goes).
    /// Hooks run on the connection's task: they should be quick (the access log hands its line to
    /// its writer thread).
    pub fn on_end(&self, hook: impl FnOnce(&TunnelEnd) + Send + 'static) {
        let mut hooks = self.0 .0.lock().unwrap_or_else(|e| e.into_inner());
        match hooks.as_mut() {
            Some(hooks) => hooks.push(Box::new(hook)),
            // Already ended: nothing more will come.
            None => {
                drop(hooks);
                hook(&TunnelEnd::NOT_OPENED);
            }
        }
    }

    /// Ends the tunnel: runs every hook with `end`. For the server that carried it; a second call
    /// does nothing.
    pub fn end(&self, end: &TunnelEnd) {
        self.0.run(end);
    }
}

impl Hooks {
    fn run(&self, end: &TunnelEnd) {
        let hooks = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        for hook in hooks.into_iter().flatten() {
            hook(end);
        }
    }
}

impl Drop for Hooks {
    fn drop(&mut self) {
        self.run(&TunnelEnd::NOT_OPENED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_hook_runs_once_with_the_end() {
        let ran = Arc::new(AtomicUsize::new(0));
        let tunnel = Tunnel::new();
        for _ in 0..2 {
            let ran = Arc::clone(&ran);
            tunnel.on_end(move |end| {
                assert_eq!(end.to_client, 7);
                ran.fetch_add(1, Ordering::SeqCst);
            });
        }
        let end = TunnelEnd {
            from_client: 3,
            to_client: 7,
            duration: Duration::from_secs(1),
            reason: TunnelEndReason::Closed,
        };
        tunnel.clone().end(&end);
        tunnel.end(&end);
        drop(tunnel);
        assert_eq!(ran.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_tunnel_that_never_opened_ends_when_dropped() {
        let seen = Arc::new(Mutex::new(None));
        let tunnel = Tunnel::new();
        let s = Arc::clone(&seen);
        tunnel.on_end(move |end| *s.lock().unwrap() = Some(end.reason));
        let clone = tunnel.clone();
        drop(tunnel);
        assert_eq!(*seen.lock().unwrap(), None);
        drop(clone);
        assert_eq!(*seen.lock().unwrap(), Some(TunnelEndReason::NotOpened));
    }
}
