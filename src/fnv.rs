//! FNV-1a, 64 bits: the one fast, unkeyed hash parapet uses where no client chooses what is hashed
//! into a map, or where the hash must stay the same across runs and releases (a consistent-hash
//! ring's points, certificate file names).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// FNV-1a's starting value (its "offset basis").
pub(crate) const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// `h` (a hash so far, [`OFFSET`] to begin) with `bytes` hashed into it.
pub(crate) fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// FNV-1a as a [`Hasher`], for maps keyed by names from the config (listeners, route hosts) and
/// looked up per request: SipHash, std's default, costs some 160 instructions for a short name, FNV
/// a few per byte. Only the config inserts keys, so a client cannot choose keys that collide in the
/// map; a lookup with a name of its choosing costs a hash and a probe like any other.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(OFFSET)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = fnv1a(self.0, bytes);
    }
}

/// A map from names the config gives to `V`, hashed with [`Fnv`].
pub(crate) type NameMap<V> = HashMap<Box<str>, V, BuildHasherDefault<Fnv>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_test_vectors() {
        // From the FNV reference (Fowler, Noll, Vo): FNV-1a 64 of "", "a" and "foobar".
        assert_eq!(fnv1a(OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
        // Hashed in pieces, the same as whole.
        assert_eq!(
            fnv1a(fnv1a(OFFSET, b"foo"), b"bar"),
            fnv1a(OFFSET, b"foobar")
        );
    }
}
