/*
 * parapet's second build of libdeflate's compressor: the same code, with hash tables sized for
 * small inputs, under its own names so that it links beside libdeflate-sys's copy (see README.md).
 *
 * libdeflate's greedy and lazy matchers (levels 2 to 9) reset two hash tables of 2^15 and 2^16
 * entries (192 KiB) at the start of every call, whatever the input's size; level 1's matcher, a
 * table of 2^15 two-entry buckets (128 KiB). For a body of a few kilobytes that reset is a large
 * part of the work. Tables of 2^12 and 2^13 entries (24 KiB; level 1: 2^12 buckets, 16 KiB) give
 * the same output below 4 KiB for a quarter less CPU, and below 16 KiB about the same output
 * without the stock tables' 192 KiB of cold writes per call; parapet uses this build there.
 */
#define HC_MATCHFINDER_HASH3_ORDER 12
#define HC_MATCHFINDER_HASH4_ORDER 13
#define HT_MATCHFINDER_HASH_ORDER 12

#define libdeflate_alloc_compressor parapet_small_deflate_alloc_compressor
#define libdeflate_alloc_compressor_ex parapet_small_deflate_alloc_compressor_ex
#define libdeflate_deflate_compress parapet_small_deflate_compress
#define libdeflate_deflate_compress_bound parapet_small_deflate_compress_bound
#define libdeflate_free_compressor parapet_small_deflate_free_compressor
#define libdeflate_get_compression_level parapet_small_deflate_get_compression_level
#define libdeflate_aligned_malloc parapet_small_deflate_aligned_malloc
#define libdeflate_aligned_free parapet_small_deflate_aligned_free
#define libdeflate_default_malloc_func parapet_small_deflate_default_malloc_func
#define libdeflate_default_free_func parapet_small_deflate_default_free_func
#define libdeflate_set_memory_allocator parapet_small_deflate_set_memory_allocator
#define libdeflate_set_memory_allocator_ex parapet_small_deflate_set_memory_allocator_ex
#define libdeflate_assertion_failed parapet_small_deflate_assertion_failed

#include "lib/utils.c"
#include "lib/deflate_compress.c"
