//! The socket plan of a reload: which listening sockets the new config keeps, takes over or binds,
//! and which running listeners stop serving.
//!
//! A pure function of names and addresses ([`plan`]), so that every rule is a unit test; the reload
//! ([`super::Server`]'s `apply`) binds, retires and hands sockets over as the plan says.
//!
//! The rules, for each listener of the new config, in config order:
//!
//! 1. a running listener with the same name and the same configured address keeps its socket
//!    ([`Socket::Keep`]);
//! 2. otherwise it takes over the socket of a running listener that is bound where it asks to bind
//!    (configured there, or bound there by the system for a `:0` address), unless that listener stays
//!    unchanged in the new config or another new listener took its socket first: a renamed listener,
//!    or two listeners swapping addresses ([`Socket::TakeOver`]). A new listener asking for port 0
//!    never takes a socket over: it wants whatever port the system gives;
//! 3. otherwise it binds a fresh socket ([`Socket::Bind`]).
//!
//! Every running listener whose socket is not kept retires: it stops serving the new config, and its
//! connections finish on the config they began with.

use std::net::SocketAddr;

/// A running listener, as the plan sees it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Running<'a> {
    pub(super) name: &'a str,
    /// The address its config asked for.
    pub(super) bind: SocketAddr,
    /// The address bound (the system's port for `:0`).
    pub(super) addr: SocketAddr,
}

/// A listener of the new config, as the plan sees it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Wanted<'a> {
    pub(super) name: &'a str,
    /// The address its config asks for.
    pub(super) bind: SocketAddr,
}

/// Where a new listener's socket comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Socket {
    /// The running listener at this index goes on serving, socket and all.
    Keep(usize),
    /// The socket of the running listener at this index, which retires and hands it over.
    TakeOver(usize),
    /// A socket bound now.
    Bind,
}

/// What a reload does with sockets.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SocketPlan {
    /// Per listener of the new config, in its order.
    pub(super) sockets: Vec<Socket>,
    /// Per running listener, in its order: true if it stops serving (handing its socket over, or
    /// closing it).
    pub(super) retires: Vec<bool>,
}

/// Plans the sockets of `wanted` given the `running` listeners (see the module docs).
pub(super) fn plan(running: &[Running<'_>], wanted: &[Wanted<'_>]) -> SocketPlan {
    // A running listener the new config has as it is (same name, same address) keeps its socket:
    // no other listener may take it.
    let unchanged = |r: &Running<'_>| wanted.iter().any(|l| l.name == r.name && l.bind == r.bind);
    let mut claimed = vec![false; running.len()];
    let mut sockets = Vec::with_capacity(wanted.len());
    for l in wanted {
        let keep = running
            .iter()
            .position(|r| r.name == l.name && r.bind == l.bind);
        let take = || {
            running.iter().enumerate().position(|(i, r)| {
                !claimed[i]
                    && (r.bind == l.bind || r.addr == l.bind)
                    && l.bind.port() != 0
                    && !unchanged(r)
            })
        };
        let socket = match keep.or_else(take) {
            Some(i) if keep.is_some() => Socket::Keep(i),
            Some(i) => Socket::TakeOver(i),
            None => Socket::Bind,
        };
        if let Socket::Keep(i) | Socket::TakeOver(i) = socket {
            claimed[i] = true;
        }
        sockets.push(socket);
    }
    let retires = (0..running.len())
        .map(|i| !sockets.contains(&Socket::Keep(i)))
        .collect();
    SocketPlan { sockets, retires }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "127.0.0.1:8001";
    const B: &str = "127.0.0.1:8002";
    const C: &str = "127.0.0.1:8003";
    const ANY: &str = "127.0.0.1:0";

    fn running<'a>(name: &'a str, bind: &str, addr: &str) -> Running<'a> {
        Running {
            name,
            bind: bind.parse().unwrap(),
            addr: addr.parse().unwrap(),
        }
    }

    fn wanted<'a>(name: &'a str, bind: &str) -> Wanted<'a> {
        Wanted {
            name,
            bind: bind.parse().unwrap(),
        }
    }

    #[test]
    fn unchanged_listener_keeps_its_socket() {
        let p = plan(&[running("main", A, A)], &[wanted("main", A)]);
        assert_eq!(p.sockets, [Socket::Keep(0)]);
        assert_eq!(p.retires, [false]);
    }

    #[test]
    fn unchanged_port_zero_listener_keeps_its_socket() {
        let p = plan(
            &[running("main", ANY, "127.0.0.1:40000")],
            &[wanted("main", ANY)],
        );
        assert_eq!(p.sockets, [Socket::Keep(0)]);
        assert_eq!(p.retires, [false]);
    }

    #[test]
    fn renamed_listener_takes_over_its_socket() {
        let p = plan(&[running("front", A, A)], &[wanted("edge", A)]);
        assert_eq!(p.sockets, [Socket::TakeOver(0)]);
        assert_eq!(p.retires, [true]);
    }

    #[test]
    fn swapped_addresses_trade_sockets() {
        let p = plan(
            &[running("one", A, A), running("two", B, B)],
            &[wanted("one", B), wanted("two", A)],
        );
        assert_eq!(p.sockets, [Socket::TakeOver(1), Socket::TakeOver(0)]);
        assert_eq!(p.retires, [true, true]);
    }

    #[test]
    fn port_zero_listener_pinned_to_its_port_takes_over() {
        // Started on `:0`, the system gave it 40000; the new config asks for 40000 by number.
        let p = plan(
            &[running("main", ANY, "127.0.0.1:40000")],
            &[wanted("main", "127.0.0.1:40000")],
        );
        assert_eq!(p.sockets, [Socket::TakeOver(0)]);
        assert_eq!(p.retires, [true]);
    }

    #[test]
    fn renamed_port_zero_listener_binds_fresh() {
        // A new listener on `:0` wants any port, not the one another listener happened to get.
        let p = plan(
            &[running("front", ANY, "127.0.0.1:40000")],
            &[wanted("edge", ANY)],
        );
        assert_eq!(p.sockets, [Socket::Bind]);
        assert_eq!(p.retires, [true]);
    }

    #[test]
    fn removed_listener_retires() {
        let p = plan(
            &[running("main", A, A), running("admin", B, B)],
            &[wanted("main", A)],
        );
        assert_eq!(p.sockets, [Socket::Keep(0)]);
        assert_eq!(p.retires, [false, true]);
    }

    #[test]
    fn every_listener_removed_retires_them_all() {
        let p = plan(&[running("main", A, A), running("admin", B, B)], &[]);
        assert!(p.sockets.is_empty());
        assert_eq!(p.retires, [true, true]);
    }

    #[test]
    fn new_address_binds_fresh() {
        let p = plan(
            &[running("main", A, A)],
            &[wanted("main", A), wanted("admin", C)],
        );
        assert_eq!(p.sockets, [Socket::Keep(0), Socket::Bind]);
        assert_eq!(p.retires, [false]);
    }

    #[test]
    fn moved_listener_binds_fresh_and_its_old_socket_retires() {
        let p = plan(&[running("main", A, A)], &[wanted("main", C)]);
        assert_eq!(p.sockets, [Socket::Bind]);
        assert_eq!(p.retires, [true]);
    }

    #[test]
    fn a_socket_its_listener_keeps_is_not_taken_over() {
        // `main` stays as it is; `admin`, earlier in the new config, asks for the same address.
        let p = plan(
            &[running("main", A, A)],
            &[wanted("admin", A), wanted("main", A)],
        );
        assert_eq!(p.sockets, [Socket::Bind, Socket::Keep(0)]);
        assert_eq!(p.retires, [false]);
    }

    #[test]
    fn a_socket_is_taken_over_once() {
        let p = plan(
            &[running("front", A, A)],
            &[wanted("edge", A), wanted("other", A)],
        );
        assert_eq!(p.sockets, [Socket::TakeOver(0), Socket::Bind]);
        assert_eq!(p.retires, [true]);
    }

    #[test]
    fn a_fresh_server_binds_everything() {
        let p = plan(&[], &[wanted("main", A), wanted("admin", ANY)]);
        assert_eq!(p.sockets, [Socket::Bind, Socket::Bind]);
        assert!(p.retires.is_empty());
    }
}
