//! Small header values made at run time without one heap allocation each.
//!
//! A `HeaderValue` that is not `&'static` lives in a `Bytes`, and a `Bytes` made from a slice is an
//! allocation of its own (and a second one the first time it is cloned, when its buffer is promoted to
//! a shared one). The request ids and the `RateLimit-*` numbers are short (at most a few dozen bytes)
//! and made on every request, so they are carved out of a per-thread chunk instead, the way hyper
//! carves the header values it parses out of its read buffer: each value is a reference-counted view
//! of the chunk (cloning it is a count increment), and a full chunk is left to the values still using
//! it and replaced by a new one. Two allocations (the chunk and its shared header) serve
//! [`CHUNK`] bytes of values: about 200 request ids.
//!
//! The cost is memory held: a chunk is freed when the last value carved from it is dropped, so one
//! long-lived value keeps its whole chunk (at most [`CHUNK`] bytes) alive.

use std::cell::RefCell;

use bytes::BytesMut;
use http::HeaderValue;

/// The size of a chunk values are carved from.
pub(crate) const CHUNK: usize = 4096;

thread_local! {
    static SPARE: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// A header value holding a copy of `bytes`; `None` if they are not valid header value bytes.
/// Values longer than a quarter of a chunk get a buffer of their own.
pub(crate) fn header_value(bytes: &[u8]) -> Option<HeaderValue> {
    if bytes.len() > CHUNK / 4 {
        return HeaderValue::from_bytes(bytes).ok();
    }
    // `HeaderValue`'s own rule (RFC 9110 §5.5), checked before anything is carved.
    if !bytes.iter().all(|&b| (b >= 32 && b != 127) || b == b'\t') {
        return None;
    }
    // SAFETY: checked just above.
    Some(unsafe { carve(bytes) })
}

/// A header value holding a copy of `bytes`, carved without a check: for values made of bytes
/// known to be valid (a request id's hexadecimal digits and `-`).
///
/// # Safety
/// Every byte is valid in a header value: visible ASCII, space, tab, or `0x80..=0xff` (RFC 9110
/// §5.5, `HeaderValue`'s own rule); and `bytes` is at most a quarter of a [`CHUNK`].
pub(crate) unsafe fn carve(bytes: &[u8]) -> HeaderValue {
    debug_assert!(bytes.len() <= CHUNK / 4);
    debug_assert!(bytes.iter().all(|&b| (b >= 32 && b != 127) || b == b'\t'));
    let shared = SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.capacity() < bytes.len() {
            // The old chunk stays alive as long as the values carved from it.
            *spare = BytesMut::with_capacity(CHUNK);
        }
        spare.extend_from_slice(bytes);
        spare.split().freeze()
    });
    // A `Bytes` is taken as it is, without a copy, and without checking its bytes a second time.
    // SAFETY: the caller's promise: every byte is valid by `HeaderValue`'s own rule.
    unsafe { HeaderValue::from_maybe_shared_unchecked(shared) }
}

/// `n` in decimal, as [`header_value`] makes it.
pub(crate) fn decimal(n: u64) -> HeaderValue {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Digits are valid header value bytes.
    header_value(&buf[i..]).unwrap_or_else(|| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_copies_and_survive_their_chunk_being_replaced() {
        let mut kept = Vec::new();
        for i in 0..3 * CHUNK as u64 / 5 {
            kept.push((i, decimal(i * 1_000_003)));
        }
        for (i, v) in &kept {
            assert_eq!(v.to_str().unwrap(), (i * 1_000_003).to_string());
        }
        assert_eq!(decimal(0), "0");
        assert_eq!(decimal(u64::MAX), u64::MAX.to_string().as_str());
        let long = "x".repeat(CHUNK);
        assert_eq!(header_value(long.as_bytes()).unwrap(), long.as_str());
        assert!(header_value(b"bad\nvalue").is_none());
        assert_eq!(header_value(b"after").unwrap(), "after");
    }
}
