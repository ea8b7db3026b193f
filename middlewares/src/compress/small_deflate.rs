//! libdeflate's compressor built a second time with hash tables for small inputs
//! (`middlewares/libdeflate/README.md`), and gzip framing around it.
//!
//! libdeflate's matchers reset their hash tables (192 KiB at levels 2 to 9) at the start of every
//! call; this build's are 24 KiB, which suits inputs below
//! [`SMALL_TABLES_BELOW`](super::body::SMALL_TABLES_BELOW). A larger input is compressed as well,
//! only with more hash collisions than by the stock build.

use std::ffi::{c_int, c_void};
use std::ptr::NonNull;

/// libdeflate's `struct libdeflate_compressor`, as the small build names it.
#[repr(C)]
struct RawCompressor {
    _opaque: [u8; 0],
}

extern "C" {
    fn parapet_small_deflate_alloc_compressor(level: c_int) -> *mut RawCompressor;
    fn parapet_small_deflate_compress(
        compressor: *mut RawCompressor,
        input: *const c_void,
        in_nbytes: usize,
        out: *mut c_void,
        out_nbytes_avail: usize,
    ) -> usize;
    fn parapet_small_deflate_compress_bound(
        compressor: *mut RawCompressor,
        in_nbytes: usize,
    ) -> usize;
    fn parapet_small_deflate_free_compressor(compressor: *mut RawCompressor);
}

/// The gzip header's and trailer's bytes (RFC 1952: a 10-byte header without optional fields, and
/// the CRC-32 and length of the input).
const GZIP_OVERHEAD: usize = 18;

/// One compressor of the small build at one level (its tables and buffers, about 100 KiB).
pub(super) struct SmallCompressor {
    raw: NonNull<RawCompressor>,
    level: u32,
}

// SAFETY: a libdeflate compressor holds no thread-bound state; it is used by one thread at a time
// (`&mut self`), which may differ from the one that made it.
unsafe impl Send for SmallCompressor {}

impl SmallCompressor {
    /// A compressor at `level` (clamped to libdeflate's 0 to 12), or `None` if its memory could not
    /// be allocated.
    pub(super) fn new(level: u32) -> Option<Self> {
        let level = level.min(12);
        // SAFETY: any level from 0 to 12 is valid; a null return is handled.
        let raw = unsafe { parapet_small_deflate_alloc_compressor(level as c_int) };
        NonNull::new(raw).map(|raw| Self { raw, level })
    }

    /// The most bytes [`Self::gzip`] may write for `len` bytes of input.
    pub(super) fn gzip_bound(&self, len: usize) -> usize {
        // SAFETY: `raw` is a live compressor.
        GZIP_OVERHEAD + unsafe { parapet_small_deflate_compress_bound(self.raw.as_ptr(), len) }
    }

    /// `input` as one gzip member in `out`, which must have [`Self::gzip_bound`] bytes of room;
    /// returns the member's length, as libdeflate's `libdeflate_gzip_compress` frames it (no
    /// modification time, the OS unknown), or `None` if `out` was too small.
    pub(super) fn gzip(&mut self, input: &[u8], out: &mut [u8]) -> Option<usize> {
        if out.len() <= GZIP_OVERHEAD {
            return None;
        }
        let xfl = match self.level {
            0 | 1 => 4,
            2..=7 => 0,
            _ => 2,
        };
        out[..10].copy_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]);
        let room = out.len() - GZIP_OVERHEAD;
        let body = &mut out[10..10 + room];
        // SAFETY: `raw` is a live compressor; `input` and `body` are valid for their lengths and
        // do not overlap. libdeflate writes at most `room` bytes.
        let n = unsafe {
            parapet_small_deflate_compress(
                self.raw.as_ptr(),
                input.as_ptr().cast(),
                input.len(),
                body.as_mut_ptr().cast(),
                room,
            )
        };
        if n == 0 {
            return None;
        }
        let end = 10 + n;
        out[end..end + 4].copy_from_slice(&libdeflater::crc32(input).to_le_bytes());
        out[end + 4..end + 8].copy_from_slice(&(input.len() as u32).to_le_bytes());
        Some(end + 8)
    }
}

impl Drop for SmallCompressor {
    fn drop(&mut self) {
        // SAFETY: `raw` came from the allocator of the same build and is freed once.
        unsafe { parapet_small_deflate_free_compressor(self.raw.as_ptr()) }
    }
}
