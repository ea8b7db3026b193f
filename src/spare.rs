//! Request extension maps, header maps and connection buffers kept for reuse, one small stock of
//! each per thread.
//!
//! Every request parapet serves carries its client's address in its extensions
//! ([`parapet_middlewares::ClientAddr`]), so every request allocates the extensions' map: the box,
//! the table, a rehash to make room. A proxied request's map is done with once its head is
//! written upstream; [`give`] keeps it, emptied (its table's room kept), and the server's lean path
//! takes it back with [`take`] for a later request on the same thread. parapet's workers are each
//! a single-threaded runtime, so maps come back to the thread they were taken on.
//!
//! A request's header map goes the same way, to be the map of an upstream response's head
//! ([`give_headers`], [`take_headers`]).
//!
//! Emptying a map drops its values as dropping the request would have; only the room is kept. One
//! value is kept with its allocation: a map that holds nothing but the request's
//! [`ClientAddr`] keeps it, for [`crate::router::admit_noted`] to overwrite with the next request's
//! client rather than box a new one. Every request taken from here is admitted before any layer or
//! endpoint sees it, so the kept address is never read as the next request's.

use std::cell::RefCell;
use std::thread::LocalKey;

use bytes::BytesMut;
use http::{Extensions, HeaderMap};
use parapet_middlewares::ClientAddr;

/// The most maps a thread keeps.
const MAX: usize = 64;

thread_local! {
    static SPARE: RefCell<Vec<Extensions>> = const { RefCell::new(Vec::new()) };
}

/// An extensions map for a request that [`crate::router::admit_noted`] admits next: one given back
/// earlier on this thread, with its room, if there is one, else a new one (which allocates nothing
/// until something is inserted). It is empty, or holds only an earlier request's [`ClientAddr`],
/// which admission overwrites.
pub(crate) fn take() -> Extensions {
    pop(&SPARE).unwrap_or_default()
}

/// Keeps `extensions`, emptied, for [`take`], unless the thread keeps enough already. A map that
/// never held anything has no room to keep and is not kept. A map that holds only a [`ClientAddr`]
/// keeps it, its box with it (see the module docs).
pub(crate) fn give(mut extensions: Extensions) {
    match extensions.len() {
        0 => return,
        1 if extensions.get::<ClientAddr>().is_some() => {}
        _ => extensions.clear(),
    }
    push(&SPARE, extensions);
}

/// The last of `stock`'s maps, if it has one (and the thread is not exiting).
fn pop<T>(stock: &'static LocalKey<RefCell<Vec<T>>>) -> Option<T> {
    stock.try_with(|s| s.borrow_mut().pop()).ok().flatten()
}

/// Keeps `map` in `stock`, unless that holds [`MAX`] already (or the thread is exiting).
fn push<T>(stock: &'static LocalKey<RefCell<Vec<T>>>, map: T) {
    push_at_most(stock, map, MAX);
}

/// Keeps `value` in `stock`, unless that holds `most` already (or the thread is exiting).
fn push_at_most<T>(stock: &'static LocalKey<RefCell<Vec<T>>>, value: T, most: usize) {
    let _ = stock.try_with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < most {
            s.push(value);
        }
    });
}

/// The most header fields a kept map may have room for: a map a large head grew is let go rather
/// than kept at that size.
const MAX_HEADER_ROOM: usize = 64;

thread_local! {
    static SPARE_HEADERS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty header map with room for at least `room` fields: one given back earlier on this thread
/// ([`give_headers`]), or a new one.
///
/// A proxied request's header map is done with once its head is written upstream, and the
/// upstream's response needs one just after: the proxy gives the one back and takes the other from
/// here, so that a response's head allocates no map (two allocations per request fewer).
pub(crate) fn take_headers(room: usize) -> HeaderMap {
    match pop(&SPARE_HEADERS) {
        Some(mut map) => {
            map.reserve(room);
            map
        }
        None => HeaderMap::with_capacity(room),
    }
}

/// Keeps `headers`, emptied, for [`take_headers`], unless the thread keeps enough already or the
/// map has room for more than [`MAX_HEADER_ROOM`] fields. A map with no room is not kept.
pub(crate) fn give_headers(mut headers: HeaderMap) {
    let room = headers.capacity();
    if room == 0 || room > MAX_HEADER_ROOM {
        return;
    }
    headers.clear();
    push(&SPARE_HEADERS, headers);
}

/// The most buffers a thread keeps, and the largest it keeps: a buffer a large head grew is let go.
const MAX_BUFFERS: usize = 16;
const MAX_BUFFER_ROOM: usize = 16 * 1024;

thread_local! {
    static SPARE_READ: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static SPARE_OUT: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty read buffer with room for `room` bytes at least: the one given back last on this thread
/// ([`give_read_buf`]), or a new one.
///
/// A connection's read buffer is the thread's between its requests, as nginx frees a keep-alive
/// connection's header buffer and allocates another for the next request: the next request on
/// any connection reads into the buffer the last one used, which is still in the processor's
/// caches, where a connection's own buffer has gone cold by its next request once a thread serves
/// many connections.
pub(crate) fn take_read_buf(room: usize) -> BytesMut {
    match pop(&SPARE_READ) {
        Some(mut buf) => {
            buf.reserve(room);
            buf
        }
        None => BytesMut::with_capacity(room),
    }
}

/// Keeps `buf` for [`take_read_buf`] if it is empty and not larger than [`MAX_BUFFER_ROOM`].
pub(crate) fn give_read_buf(buf: BytesMut) {
    let room = buf.capacity();
    if buf.is_empty() && room > 0 && room <= MAX_BUFFER_ROOM {
        push_at_most(&SPARE_READ, buf, MAX_BUFFERS);
    }
}

/// An empty buffer to write a response head into: the one given back last on this thread, or a
/// new one (see [`take_read_buf`] for why).
pub(crate) fn take_out() -> Vec<u8> {
    pop(&SPARE_OUT).unwrap_or_default()
}

/// Keeps `out`, emptied, for [`take_out`], unless it is larger than [`MAX_BUFFER_ROOM`].
pub(crate) fn give_out(mut out: Vec<u8>) {
    let room = out.capacity();
    if room > 0 && room <= MAX_BUFFER_ROOM {
        out.clear();
        push_at_most(&SPARE_OUT, out, MAX_BUFFERS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_header_map_comes_back_empty_with_room_and_a_huge_one_is_not_kept() {
        std::thread::spawn(|| {
            let mut map = HeaderMap::with_capacity(24);
            map.insert("x-a", http::HeaderValue::from_static("1"));
            map.append("x-a", http::HeaderValue::from_static("2"));
            let room = map.capacity();
            give_headers(map);
            let back = take_headers(4);
            assert!(back.is_empty());
            assert_eq!(back.capacity(), room);
            // Asked for more room than it has: it grows.
            give_headers(back);
            assert!(take_headers(room * 2).capacity() >= room * 2);
            // None kept: a new one.
            assert!(take_headers(3).capacity() >= 3);
            give_headers(HeaderMap::new());
            give_headers(HeaderMap::with_capacity(MAX_HEADER_ROOM * 2));
            assert!(SPARE_HEADERS.with(|s| s.borrow().is_empty()));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn only_an_empty_buffer_of_modest_room_is_kept_and_comes_back_empty() {
        std::thread::spawn(|| {
            // A buffer holding bytes (part of a head, a pipelined request) is its connection's.
            let mut held = BytesMut::with_capacity(4096);
            held.extend_from_slice(b"GET /a HTTP/1.1\r\nHo");
            give_read_buf(held);
            assert!(SPARE_READ.with(|s| s.borrow().is_empty()));
            // Too large, or no room at all: let go.
            give_read_buf(BytesMut::with_capacity(MAX_BUFFER_ROOM * 2));
            give_read_buf(BytesMut::new());
            assert!(SPARE_READ.with(|s| s.borrow().is_empty()));
            let mut used = BytesMut::with_capacity(4096);
            used.extend_from_slice(b"done");
            let _ = used.split();
            give_read_buf(used);
            let back = take_read_buf(4096);
            assert!(back.is_empty());
            assert!(back.capacity() >= 4096);
            // Response head buffers: emptied, kept unless too large.
            give_out(b"HTTP/1.1 200 OK\r\n".to_vec());
            give_out(Vec::with_capacity(MAX_BUFFER_ROOM * 2));
            let out = take_out();
            assert!(out.is_empty() && out.capacity() > 0);
            assert_eq!(take_out().capacity(), 0);
            for _ in 0..MAX_BUFFERS + 3 {
                give_out(vec![0; 10]);
            }
            assert_eq!(SPARE_OUT.with(|s| s.borrow().len()), MAX_BUFFERS);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_given_map_comes_back_empty_and_an_empty_one_is_not_kept() {
        /// A value whose drop is seen in its reference count.
        #[derive(Clone)]
        struct Mark(#[allow(dead_code)] std::sync::Arc<()>);
        let count = std::sync::Arc::new(());
        // A fresh thread: its own stock.
        std::thread::spawn(move || {
            give(Extensions::new());
            assert!(SPARE.with(|s| s.borrow().is_empty()));
            let mut ext = Extensions::new();
            ext.insert(Mark(count.clone()));
            give(ext);
            // The value was dropped when the map was emptied.
            assert_eq!(std::sync::Arc::strong_count(&count), 1);
            let back = take();
            assert!(back.is_empty());
            assert!(SPARE.with(|s| s.borrow().is_empty()));
            for _ in 0..MAX + 5 {
                let mut ext = Extensions::new();
                ext.insert(1u8);
                give(ext);
            }
            assert_eq!(SPARE.with(|s| s.borrow().len()), MAX);
            SPARE.with(|s| s.borrow_mut().clear());
            // A client's address alone is kept, for admission to overwrite; beside anything else
            // it goes with the rest.
            let peer = ClientAddr(([192, 0, 2, 1], 4000).into());
            let mut ext = Extensions::new();
            ext.insert(peer);
            give(ext);
            let back = take();
            assert_eq!((back.len(), back.get::<ClientAddr>()), (1, Some(&peer)));
            let mut ext = back;
            ext.insert(Mark(count.clone()));
            give(ext);
            assert!(take().is_empty());
            assert_eq!(std::sync::Arc::strong_count(&count), 1);
        })
        .join()
        .unwrap();
    }
}
