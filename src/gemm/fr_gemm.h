/* fastrnn's own matrix products (the per-step recurrent products and the direct products of a
 * single step), instantiated for float32 (_f) and float64 (_d) and, on x86-64 with GCC, for two
 * instruction sets:
 *   - avx2: fr_gemm_impl.h with 32-byte vectors, compiled as FR_KERNEL clones (AVX2+FMA where
 *     the CPU has it, else the x86-64 baseline);
 *   - avx512: the same template with 64-byte vectors and 12-row register blocks, compiled for
 *     x86-64-v4 (AVX-512 F/BW/CD/DQ/VL).  Where the CPU has AVX-512, BLAS's sgemm runs its
 *     AVX-512 kernels too, and the AVX2 micro-kernel reached only 0.6-1.0x of it per step
 *     (benches/packed_ab.py, BENCHMARKS.md).
 * Both read the same packed layout (fr_gemm_pack.h), so the instruction set is chosen per call:
 * the best the CPU runs, AVX2 if FASTRNN_KERNELS=avx2 is in the environment, or the one set
 * with fr_set_isa (fastrnn._isa; the tests run both).
 */
#ifndef FR_GEMM_H
#define FR_GEMM_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <immintrin.h>
#include "fr_math.h"

/* GCC 11 introduced the x86-64-v2/v3/v4 names */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && defined(__x86_64__) \
    && defined(__linux__) && !defined(FR_NO_CLONES)
#define FR_HAVE_AVX512 1
#else
#define FR_HAVE_AVX512 0
#endif

enum { FR_ISA_AVX2 = 0, FR_ISA_AVX512 = 1 };

/* Can this CPU (and OS: libgcc checks that the OS saves the AVX-512 registers) run isa? */
static int fr_isa_supported(int isa)
{
    if (isa == FR_ISA_AVX2)
        return 1;                       /* the avx2 instantiation has a baseline clone */
#if FR_HAVE_AVX512
    if (isa == FR_ISA_AVX512) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
               && __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq")
               && __builtin_cpu_supports("avx512vl");
    }
#endif
    return 0;
}

/* The instruction set in use: set on first use (benign race: every thread computes the same). */
static int fr_isa_now = -1;

static int fr_isa_default(void)
{
    const char *env = getenv("FASTRNN_KERNELS");
    if (env && strcmp(env, "avx2") == 0)
        return FR_ISA_AVX2;
    return fr_isa_supported(FR_ISA_AVX512) ? FR_ISA_AVX512 : FR_ISA_AVX2;
}

static inline int fr_isa(void)
{
    int isa = fr_isa_now;
    if (isa < 0)
        fr_isa_now = isa = fr_isa_default();
    return isa;
}

/* Use isa from now on (-1: back to the default).  Returns -1, changing nothing, if the CPU
 * cannot run it. */
static int fr_set_isa(int isa)
{
    if (isa < 0) {
        fr_isa_now = fr_isa_default();
        return 0;
    }
    if (!fr_isa_supported(isa))
        return -1;
    fr_isa_now = isa;
    return 0;
}

/* Who makes the whole-sequence weight gradients (gemm_tn_packed or BLAS; _packed.pxd,
 * worth_tn_packed): -1 by the measured rule, 0 always BLAS, 1 always gemm_tn_packed (the tests
 * run both).  Like fr_isa_now, one copy per extension module (fastrnn._isa sets them all). */
static int fr_tn_mode = -1;

static int fr_set_tn_mode(int mode)
{
    int before = fr_tn_mode;
    fr_tn_mode = mode;
    return before;
}

static inline int fr_get_tn_mode(void)
{
    return fr_tn_mode;
}

/* Rows of the next of `blocks` register blocks over `rest` remaining rows: an even split
 * (20 rows in 4 blocks: 5+5+5+5, not 6+6+6+2; a thin last block costs as many loads of B as a
 * full one). */
static inline int fr_block_rows(int rest, int blocks)
{
    return (rest + blocks - 1) / blocks;
}

#define FR_NR ((int)(64 / sizeof(FR_T)))   /* packed panel width: 64 bytes */

#define FR_T float
#define FR_FN(name) name##_f
#include "fr_gemm_dtype.h"
#undef FR_T
#undef FR_FN

#define FR_T double
#define FR_FN(name) name##_d
#include "fr_gemm_dtype.h"
#undef FR_T
#undef FR_FN

#undef FR_NR

#endif
