/*
 * qgemm_instance.inc.h -- one instruction-set level of the int8 kernels.
 *
 * fl_kernels.c includes this file once per int8 level after defining
 * FLQ_LEVEL; the descriptor below (a few lines per level) says what
 * differs between levels, and the body (qgemm.inc.h, plain C over GCC
 * vector extensions) is written once for all of them:
 *
 *   FLQ_ISA      function-name suffix (tools/check_isa.py allows AVX only
 *                in functions ending in _v3 / _v4)
 *   FLQ_ATTR     the per-function target (never -march)
 *   FLQ_VBYTES   bytes per vector register; lanes are int32 output columns
 *   FLQ_MR       rows of the register tile (2 accumulators per row)
 *   FLQ_KS       k values per dot-product group: 4 for u8 x s8 (vpdpbusd),
 *                2 for int16 x int16 (vpmaddwd)
 *   FLQ_ESIZE    bytes per quantized activation: 1 (u8 q, zero point
 *                kept apart) or 2 (int16 q - zero point, zero point 0)
 *   FLQ_WMAX     largest weight magnitude (127; 63 where 7-bit weights
 *                keep a saturating int16 sum exact)
 *   FLQ_WPREP(p) a panel row's weights (lanes x FLQ_KS int8 at p) made
 *                ready for the dot product, type FLQ_WV
 *   FLQ_DOT(acc, xg, wv)  acc + per-lane dot of the 4 activation bytes xg
 *                (broadcast) with wv
 *   FLQ_DOTV(acc, xp, wp)  acc + per-lane dot of a vector of activations
 *                at xp with the lanes x FLQ_KS int8 weights at wp (the dot
 *                kernel, qdot.inc.h)
 *
 * One group of activations is always 4 bytes (4 u8 or 2 int16), so the
 * row layout, the packing and the tile loop are the same at every level.
 *
 * The two AVX2 levels (CPUs without VNNI).  vpmaddubsw adds two u8 x s8
 * products into a saturating int16 (255 * 127 * 2 = 64770 > 32767), so it
 * is exact only with 7-bit weights (|q| <= 63: level 4, the default) or
 * 7-bit activations.  Level 3 is exact with full 8-bit weights: int16
 * activation pairs times sign-extended weights (vpmovsxbw + vpmaddwd,
 * the weights extended once per panel row for all FLQ_MR rows).  Both
 * issue two multiplies per 32 products, but level 3 needs 36 instructions
 * per 192 products against level 4's 44 per 384: on Zen 3, which issues
 * at most 6 a cycle, level 3 ran C4 at 53-70 GMAC/s and level 4 at 80
 * (float32 FMA: 44), with weight rounding error twice level 3's
 * (docs/benchmarks.md has both measured).
 */
#if FLQ_LEVEL == 0
/* the baseline: 16-byte vectors of the compiler's flags, the generic dot
 * product (bytes pulled out of each lane by shifts) */
#define FLQ_ISA base
#define FLQ_ATTR
#define FLQ_NAME "baseline (portable C)"
#define FLQ_VBYTES 16
#define FLQ_MR 4
#define FLQ_KS 4
#define FLQ_ESIZE 1
#define FLQ_ACT_F32 fl_act_f32_base

#elif FLQ_LEVEL == 3
#include <immintrin.h>
#define FLQ_ISA avx2_v3
#define FLQ_ATTR __attribute__((target("arch=x86-64-v3")))
#define FLQ_NAME "AVX2 (vpmaddwd on int16 pairs, exact)"
#define FLQ_VBYTES 32
#define FLQ_MR 6
#define FLQ_KS 2
#define FLQ_ESIZE 2
#define FLQ_ACT_F32 fl_act_f32_v3
#define FLQ_WV __m256i
#define FLQ_WPREP(p) _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p)))
#define FLQ_DOT(acc, xg, wv) ((acc) + (QVI)_mm256_madd_epi16(_mm256_set1_epi32((int)(xg)), (wv)))
#define FLQ_DOTV(acc, xp, wp) ((acc) + (QVI)_mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(const void *)(xp)), _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(wp)))))

#elif FLQ_LEVEL == 4
/* AVX2 on u8 x s8 bytes (vpmaddubsw + vpmaddwd by ones): 7-bit weights
 * (|q| <= 63), so that two products never saturate the int16 sum; twice
 * the weight rounding error of the exact level, 1.6x fewer instructions
 * per product (see the note above) */
#include <immintrin.h>
#define FLQ_ISA avx2w7_v3
#define FLQ_ATTR __attribute__((target("arch=x86-64-v3")))
#define FLQ_NAME "AVX2 (vpmaddubsw, 7-bit weights)"
#define FLQ_VBYTES 32
#define FLQ_MR 6
#define FLQ_KS 4
#define FLQ_ESIZE 1
#define FLQ_WMAX 63
#define FLQ_ACT_F32 fl_act_f32_v3
#define FLQ_WV __m256i
#define FLQ_WPREP(p) _mm256_loadu_si256((const __m256i *)(p))
#define FLQ_DOT(acc, xg, wv) ((acc) + (QVI)_mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi32((int)(xg)), (wv)), _mm256_set1_epi16(1)))
#define FLQ_DOTV(acc, xp, wp) ((acc) + (QVI)_mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(const void *)(xp)), _mm256_loadu_si256((const __m256i *)(const void *)(wp))), _mm256_set1_epi16(1)))

#elif FLQ_LEVEL == 5
#include <immintrin.h>
#define FLQ_ISA avxvnni_v3
#define FLQ_ATTR __attribute__((target("arch=x86-64-v3,avxvnni")))
#define FLQ_NAME "AVX-VNNI (vpdpbusd, ymm)"
#define FLQ_VBYTES 32
#define FLQ_MR 6
#define FLQ_KS 4
#define FLQ_ESIZE 1
#define FLQ_ACT_F32 fl_act_f32_v3
#define FLQ_WV __m256i
#define FLQ_WPREP(p) _mm256_loadu_si256((const __m256i *)(p))
#define FLQ_DOT(acc, xg, wv) ((QVI)_mm256_dpbusd_avx_epi32((__m256i)(acc), _mm256_set1_epi32((int)(xg)), (wv)))
#define FLQ_DOTV(acc, xp, wp) ((QVI)_mm256_dpbusd_avx_epi32((__m256i)(acc), _mm256_loadu_si256((const __m256i *)(const void *)(xp)), _mm256_loadu_si256((const __m256i *)(const void *)(wp))))

#elif FLQ_LEVEL == 6
#include <immintrin.h>
#define FLQ_ISA vnni_v4
#define FLQ_ATTR __attribute__((target("arch=x86-64-v4,avx512vnni")))
#define FLQ_NAME "AVX-512 VNNI (vpdpbusd, zmm)"
#define FLQ_VBYTES 64
#define FLQ_MR 12
#define FLQ_KS 4
#define FLQ_ESIZE 1
#define FLQ_ACT_F32 fl_act_f32_v4
#define FLQ_WV __m512i
#define FLQ_WPREP(p) _mm512_loadu_si512((const void *)(p))
#define FLQ_DOT(acc, xg, wv) ((QVI)_mm512_dpbusd_epi32((__m512i)(acc), _mm512_set1_epi32((int)(xg)), (wv)))
#define FLQ_DOTV(acc, xp, wp) ((QVI)_mm512_dpbusd_epi32((__m512i)(acc), _mm512_loadu_si512((const void *)(xp)), _mm512_loadu_si512((const void *)(wp))))
#endif

/* The activation pass in single instructions (qgemm.inc.h states what
 * each computes): min / max of the x86 operand order (the second operand
 * where the first is NaN), conversion by the current rounding mode
 * (nearest even, as rintf), and the saturating packs int32 -> int16 ->
 * uint8 (clamping to [0, 255]), then the 4-byte groups back in order. */
#if FLQ_VBYTES == 32 && FLQ_LEVEL != 0
#define FLQ_FMIN(a, b) ((QVF)_mm256_min_ps((__m256)(a), (__m256)(b)))
#define FLQ_FMAX(a, b) ((QVF)_mm256_max_ps((__m256)(a), (__m256)(b)))
#define FLQ_CVTR(v) ((QVI)_mm256_cvtps_epi32((__m256)(v)))
#define FLQ_PACKU8(q0, q1, q2, q3, dst) _mm256_storeu_si256( \
    (__m256i *)(void *)(dst), _mm256_permutevar8x32_epi32( \
        _mm256_packus_epi16( \
            _mm256_packs_epi32((__m256i)(q0), (__m256i)(q1)), \
            _mm256_packs_epi32((__m256i)(q2), (__m256i)(q3))), \
        _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)))
#elif FLQ_VBYTES == 64
#define FLQ_FMIN(a, b) ((QVF)_mm512_min_ps((__m512)(a), (__m512)(b)))
#define FLQ_FMAX(a, b) ((QVF)_mm512_max_ps((__m512)(a), (__m512)(b)))
#define FLQ_CVTR(v) ((QVI)_mm512_cvtps_epi32((__m512)(v)))
#endif

#ifndef FLQ_WMAX
#define FLQ_WMAX 127              /* largest int8 weight magnitude */
#endif

#define FLQ_FN(name) FL_PASTE2(fl_##name, FLQ_ISA)
#define FLQ_KERNEL static __attribute__((noinline)) FLQ_ATTR
#define FLQ_HELPER static inline __attribute__((always_inline)) FLQ_ATTR

#include "qgemm.inc.h"

static void FLQ_FN(qfill)(fl_kernel_table *t)
{
    t->qpack = FLQ_FN(qpack);
    t->qrows = FLQ_FN(qrows);
    t->qgemm = FLQ_FN(qgemm);
    t->qim2col = FLQ_FN(qim2col);
    t->qdotpack = FLQ_FN(qdotpack);
    t->qdot = FLQ_FN(qdot);
    t->q_dotk = (FLQ_VBYTES / 4) * FLQ_KS;
    t->q_nr = 2 * (FLQ_VBYTES / 4);
    t->q_ks = FLQ_KS;
    t->q_esize = FLQ_ESIZE;
    t->q_mr = FLQ_MR;
    t->q_level = FLQ_LEVEL;
    t->q_wmax = FLQ_WMAX;
    t->q_isa = FLQ_NAME;
}

#undef FLQ_FN
#undef FLQ_KERNEL
#undef FLQ_HELPER
#undef FLQ_ISA
#undef FLQ_ATTR
#undef FLQ_NAME
#undef FLQ_VBYTES
#undef FLQ_MR
#undef FLQ_KS
#undef FLQ_ESIZE
#undef FLQ_WMAX
#undef FLQ_ACT_F32
#undef FLQ_WV
#undef FLQ_WPREP
#undef FLQ_DOT
#undef FLQ_DOTV
#undef FLQ_FMIN
#undef FLQ_FMAX
#undef FLQ_CVTR
#undef FLQ_PACKU8
#undef FLQ_LEVEL
