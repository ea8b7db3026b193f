//! Request extension maps kept for reuse, one small stock per thread.
//!
//! Every request parapet serves carries its client's address in its extensions
//! ([`parapet_middlewares::ClientAddr`]), so every request allocates the extensions' map: the box,
//! the table, a rehash to make room. A proxied request's map is done with once its head is
//! written upstream; [`give`] keeps it, emptied (its table's room kept), and the server's lean path
//! takes it back with [`take`] for a later request on the same thread. parapet's workers are each
//! a single-threaded runtime, so maps come back to the thread they were taken on.
//!
//! Emptying a map drops its values as dropping the request would have; only the room is kept.

use std::cell::RefCell;

use http::Extensions;

/// The most maps a thread keeps.
const MAX: usize = 64;

thread_local! {
    static SPARE: RefCell<Vec<Extensions>> = const { RefCell::new(Vec::new()) };
}

/// An empty extensions map: one given back earlier on this thread, with its room, if there is
/// one, else a new one (which allocates nothing until something is inserted).
pub(crate) fn take() -> Extensions {
    SPARE
        .try_with(|spare| spare.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Keeps `extensions`, emptied, for [`take`], unless the thread keeps enough already. A map that
/// never held anything has no room to keep and is not kept.
pub(crate) fn give(mut extensions: Extensions) {
    if extensions.is_empty() {
        return;
    }
    extensions.clear();
    let _ = SPARE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < MAX {
            spare.push(extensions);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

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
        })
        .join()
        .unwrap();
    }
}
