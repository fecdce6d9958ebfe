/* Moving the kernels' rows between memory and cache: copying a block of rows into a buffer with
 * a wider row stride, bypassing the caches when the block is large (fr_copy_rows), and
 * prefetching the next batch row of a step (fr_prefetch).
 *
 * Forward copies the inputs X (N*T rows of D values) into the cache XH, whose rows are D + H
 * values apart (see src/cells/_seq.pxd).  Plain stores of such a strided block cost twice a contiguous
 * copy of the same bytes: each destination line is first read in (a contiguous memcpy of this
 * size avoids that with non-temporal stores).  Measured in a C harness on the Xeon, 6400 rows of
 * 1 KiB into a 2 KiB stride: memcpy per row 1.08 ms, non-temporal stores 0.54 ms, one contiguous
 * memcpy 0.44 ms.  A small block is left to memcpy: it stays in cache for the projection. */
#ifndef FR_COPY_H
#define FR_COPY_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* blocks larger than this (in bytes) are copied with non-temporal stores */
#define FR_STREAM_MIN_BYTES (1 << 20)

/* dst row i = src row i, for rows rows of width bytes; rows src_ld and dst_ld bytes apart */
static inline void fr_copy_rows(Py_ssize_t rows, size_t width, const char *src, size_t src_ld,
                                char *dst, size_t dst_ld)
{
#if defined(__SSE2__)
    if ((size_t)rows * width > FR_STREAM_MIN_BYTES) {
        for (Py_ssize_t r = 0; r < rows; r++) {
            const char *s = src + r * src_ld;
            char *d = dst + r * dst_ld;
            size_t head = (16 - ((uintptr_t)d & 15)) & 15, j;
            if (head > width) head = width;
            memcpy(d, s, head);             /* up to 16-byte alignment of the destination */
            for (j = head; j + 16 <= width; j += 16)
                _mm_stream_si128((__m128i *)(d + j), _mm_loadu_si128((const __m128i *)(s + j)));
            memcpy(d + j, s + j, width - j);
        }
        _mm_sfence();                       /* order the streamed stores before later loads */
        return;
    }
#endif
    for (Py_ssize_t r = 0; r < rows; r++)
        memcpy(dst + r * dst_ld, src + r * src_ld, width);
}

/* Ask for the cache lines of bytes [p, p + bytes) (rw = 1: they are about to be written).
 *
 * The element-wise pass of a step visits each batch row's segment of the (N, T, X) buffers: a
 * few KiB per row, T * X values apart from the next row's.  Runs that short end before the
 * hardware prefetchers have ramped up, and the pass waits on memory at the start of every row.
 * Asking for row n + 1 while row n is computed hides that: in a C harness of the GRU
 * (reset_after) backward's pass over N64 T100 H256, 3.15 -> 1.99 ns per unit (time-major
 * buffers, which would change the layout of every product, gave 2.37). */
static inline void fr_prefetch(const void *p, size_t bytes, int rw)
{
    const char *c = (const char *)((uintptr_t)p & ~(uintptr_t)63);
    const char *end = (const char *)p + bytes;
    if (rw)
        for (; c < end; c += 64) __builtin_prefetch(c, 1, 3);
    else
        for (; c < end; c += 64) __builtin_prefetch(c, 0, 3);
}

#endif
