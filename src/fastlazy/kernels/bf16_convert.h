/*
 * bf16_convert.h -- bfloat16 <-> float conversions, plain scalar C (the
 * compiler vectorises the loops at the baseline).  Included by the
 * Parameter module (rounding on set_data, initialize, cast, load) and by
 * the kernels' translation unit.
 *
 * A bfloat16 is the upper 16 bits of a float32: sign, the 8 exponent bits,
 * 7 fraction bits.  Widening is exact (the pattern shifted up 16 bits).
 * Narrowing rounds to nearest, ties to even, as the AVX512-BF16
 * instructions do; infinities stay infinities, NaN stays NaN (quiet, its
 * sign and top fraction bits kept), finite values beyond the largest
 * bfloat16 (3.39e38) round to infinity, subnormals are kept.
 *
 * From float64 a value is first rounded to float32 *to odd* (truncate,
 * then set the last bit if anything was cut off), then to bfloat16 to
 * nearest even: with 16 bits to spare that equals rounding the float64
 * straight to bfloat16 (no double rounding).
 */
#ifndef FL_BF16_CONVERT_H
#define FL_BF16_CONVERT_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint16_t fl_bf16_from_f32(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)            /* NaN: quiet, kept */
        return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);                  /* ties to even */
    return (uint16_t)(u >> 16);
}

static inline float fl_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t fl_bf16_from_f64(double d)
{
    float f = (float)d;                              /* to nearest */
    if (f == f && (double)f != d && !isinf(f)) {
        /* inexact: the same magnitude truncated, its last bit set */
        uint32_t u;
        memcpy(&u, &f, sizeof u);
        if (fabs((double)f) > fabs(d))
            u -= 1;
        u |= 1u;
        memcpy(&f, &u, sizeof f);
    }
    return fl_bf16_from_f32(f);
}

static inline void fl_bf16_round_f32(size_t n, const float *src,
                                     uint16_t *dst)
{
    size_t i;
    for (i = 0; i < n; i++) dst[i] = fl_bf16_from_f32(src[i]);
}

static inline void fl_bf16_round_f64(size_t n, const double *src,
                                     uint16_t *dst)
{
    size_t i;
    for (i = 0; i < n; i++) dst[i] = fl_bf16_from_f64(src[i]);
}

static inline void fl_bf16_widen_f32(size_t n, const uint16_t *src,
                                     float *dst)
{
    size_t i;
    for (i = 0; i < n; i++) dst[i] = fl_bf16_to_f32(src[i]);
}

static inline void fl_bf16_widen_f64(size_t n, const uint16_t *src,
                                     double *dst)
{
    size_t i;
    for (i = 0; i < n; i++) dst[i] = (double)fl_bf16_to_f32(src[i]);
}

#endif /* FL_BF16_CONVERT_H */
