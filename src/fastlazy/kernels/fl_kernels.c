/*
 * fl_kernels.c -- fastlazy's numeric kernels: one translation unit, linked
 * into the extension next to the Cython code (see fl_kernels.h for the
 * contract).
 *
 * Every kernel body is plain C over an element type T and a vector type V
 * (GCC/Clang vector extensions), in a *.inc.h file, and is compiled once
 * per instruction-set level and dtype by including it after that level's
 * descriptor (MNN's pattern):
 *
 *     isa_avx512.h  isa_avx2.h  isa_base.h     what differs between levels
 *     instance.inc.h                           T, V, lanes, helpers, table
 *     act.inc.h  dense_small.inc.h             the bodies
 *     gemm_packed.inc.h  conv.inc.h
 *
 * The faster levels are compiled with per-function target attributes,
 * never with -march, so the extension runs on any x86-64 CPU and picks its
 * kernels at run time: fl_kernels_init() fills the table fl_kt once.
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "fl_kernels.h"

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
#define FL_X86 1
#else
#define FL_X86 0
#endif

/* Names of one instance's functions and table fields: FL_FN(dense_small)
 * is fl_dense_small_f32_v4 in the float AVX-512 instance, FL_DT(act) is
 * act_f32. */
#define FL_PASTE3_(a, b, c) fl_##a##_##b##_##c
#define FL_PASTE3(a, b, c) FL_PASTE3_(a, b, c)
#define FL_PASTE2_(a, b) a##_##b
#define FL_PASTE2(a, b) FL_PASTE2_(a, b)
#define FL_FN(name) FL_PASTE3(name, FL_SFX, FL_ISA)
#define FL_DT(name) FL_PASTE2(name, FL_SFX)

FL_API fl_kernel_table fl_kt;

/* ------------------------------------------------------------------ */
/* Scalar activations, one per dtype, at the baseline. */

#define FL_DOUBLE 0
#define T float
#define FL_SFX f32
#include "act_scalar.inc.h"
#undef FL_SFX
#undef T
#undef FL_DOUBLE

#define FL_DOUBLE 1
#define T double
#define FL_SFX f64
#include "act_scalar.inc.h"
#undef FL_SFX
#undef T
#undef FL_DOUBLE

/* ------------------------------------------------------------------ */
/* The instances: (level, dtype). */

#define FL_ISA_HEADER "isa_base.h"
#define FL_DOUBLE 0
#include "instance.inc.h"
#define FL_ISA_HEADER "isa_base.h"
#define FL_DOUBLE 1
#include "instance.inc.h"

#if FL_X86
#define FL_ISA_HEADER "isa_avx2.h"
#define FL_DOUBLE 0
#include "instance.inc.h"
#define FL_ISA_HEADER "isa_avx2.h"
#define FL_DOUBLE 1
#include "instance.inc.h"

#define FL_ISA_HEADER "isa_avx512.h"
#define FL_DOUBLE 0
#include "instance.inc.h"
#define FL_ISA_HEADER "isa_avx512.h"
#define FL_DOUBLE 1
#include "instance.inc.h"
#endif

/* ------------------------------------------------------------------ */
/* The dispatch. */

/* the best level this CPU runs: 0, 3 or 4 */
static int fl_best_level(void)
{
    int best = 0;
#if FL_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        best = 3;
    if (best == 3 && __builtin_cpu_supports("avx512f")
        && __builtin_cpu_supports("avx512vl")
        && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512dq"))
        best = 4;
#endif
    return best;
}

FL_API int fl_kernels_init(int level)
{
    fl_kernel_table t;
    int best = fl_best_level();
    if (level < 0 || level > best) level = best;
    memset(&t, 0, sizeof t);
    fl_fill_f32_base(&t);
    fl_fill_f64_base(&t);
#if FL_X86
    if (level >= 4) {
        fl_fill_f32_v4(&t);
        fl_fill_f64_v4(&t);
    } else if (level >= 3) {
        fl_fill_f32_v3(&t);
        fl_fill_f64_v3(&t);
    }
#endif
    fl_kt = t;
    return t.level;
}

FL_API const char *fl_kernels_isa(void)
{
    return fl_kt.isa;
}

/* ------------------------------------------------------------------ */
/* Compatibility names, removed once the plan calls the table.
 * (Declared in the matching section of fl_kernels.h.) */

FL_API void fl_act_f32(float *y, fl_idx count, int act)
{
    fl_act_scalar_f32(y, count, act);
}

FL_API void fl_act_f64(double *y, fl_idx count, int act)
{
    fl_act_scalar_f64(y, count, act);
}

FL_API int fl_conv_init(int level)
{
    return level;           /* fl_kernels_init() filled everything */
}

FL_API void fl_conv_act_f32(float *y, fl_idx n, int act)
{
    fl_kt.act_f32(y, n, act);
}

FL_API void fl_conv_act_f64(double *y, fl_idx n, int act)
{
    fl_kt.act_f64(y, n, act);
}

static void fl_compat_vsigmoid_f32(float *y, fl_idx n)
{
    fl_kt.act_f32(y, n, FL_ACT_SIGMOID);
}

FL_API void (*fl_vsigmoid_f32)(float *y, fl_idx n) = fl_compat_vsigmoid_f32;

FL_API void fl_im2col_f32(const float *x, fl_idx Cg, fl_idx H, fl_idx W,
                          fl_idx kh, fl_idx kw, fl_idx sh, fl_idx sw,
                          fl_idx ph, fl_idx pw, fl_idx dh, fl_idx dw,
                          fl_idx OW, fl_idx oh0, fl_idx oh1, float *col,
                          fl_idx ldc)
{
    fl_kt.im2col_f32(x, Cg, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OW, oh0,
                     oh1, col, ldc);
}

FL_API void fl_im2col_f64(const double *x, fl_idx Cg, fl_idx H, fl_idx W,
                          fl_idx kh, fl_idx kw, fl_idx sh, fl_idx sw,
                          fl_idx ph, fl_idx pw, fl_idx dh, fl_idx dw,
                          fl_idx OW, fl_idx oh0, fl_idx oh1, double *col,
                          fl_idx ldc)
{
    fl_kt.im2col_f64(x, Cg, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OW, oh0,
                     oh1, col, ldc);
}

FL_API void fl_chan_epilogue_f32(fl_idx O, fl_idx N, const float *src,
                                 fl_idx lds, float *dst, fl_idx ldd,
                                 const float *scale, const float *shift,
                                 int act)
{
    fl_kt.chan_epilogue_f32(O, N, src, lds, dst, ldd, scale, shift, act);
}

FL_API void fl_chan_epilogue_f64(fl_idx O, fl_idx N, const double *src,
                                 fl_idx lds, double *dst, fl_idx ldd,
                                 const double *scale, const double *shift,
                                 int act)
{
    fl_kt.chan_epilogue_f64(O, N, src, lds, dst, ldd, scale, shift, act);
}

FL_API void fl_bn_coeffs_f32(fl_idx C, const float *gamma, const float *beta,
                             const float *mean, const float *var,
                             const float *bias, double eps, float *scale,
                             float *shift)
{
    fl_kt.bn_coeffs_f32(C, gamma, beta, mean, var, bias, eps, scale, shift);
}

FL_API void fl_bn_coeffs_f64(fl_idx C, const double *gamma,
                             const double *beta, const double *mean,
                             const double *var, const double *bias,
                             double eps, double *scale, double *shift)
{
    fl_kt.bn_coeffs_f64(C, gamma, beta, mean, var, bias, eps, scale, shift);
}

FL_API void fl_chan_affine_f32(fl_idx outer, fl_idx C, fl_idx inner,
                               const float *x, float *y, const float *scale,
                               const float *shift, int act)
{
    fl_kt.chan_affine_f32(outer, C, inner, x, y, scale, shift, act);
}

FL_API void fl_chan_affine_f64(fl_idx outer, fl_idx C, fl_idx inner,
                               const double *x, double *y,
                               const double *scale, const double *shift,
                               int act)
{
    fl_kt.chan_affine_f64(outer, C, inner, x, y, scale, shift, act);
}

FL_API void fl_pool2d_f32(const float *x, float *y, fl_idx C, fl_idx H,
                          fl_idx W, fl_idx kh, fl_idx kw, fl_idx sh,
                          fl_idx sw, fl_idx ph, fl_idx pw, fl_idx OH,
                          fl_idx OW, int is_max, int count_include_pad)
{
    fl_kt.pool2d_f32(x, y, C, H, W, kh, kw, sh, sw, ph, pw, OH, OW, is_max,
                     count_include_pad);
}

FL_API void fl_pool2d_f64(const double *x, double *y, fl_idx C, fl_idx H,
                          fl_idx W, fl_idx kh, fl_idx kw, fl_idx sh,
                          fl_idx sw, fl_idx ph, fl_idx pw, fl_idx OH,
                          fl_idx OW, int is_max, int count_include_pad)
{
    fl_kt.pool2d_f64(x, y, C, H, W, kh, kw, sh, sw, ph, pw, OH, OW, is_max,
                     count_include_pad);
}

FL_API void fl_layernorm_f32(fl_idx outer, fl_idx C, fl_idx inner,
                             const float *x, float *y, const float *gamma,
                             const float *beta, double eps, double *acc)
{
    fl_kt.layernorm_f32(outer, C, inner, x, y, gamma, beta, eps, acc);
}

FL_API void fl_layernorm_f64(fl_idx outer, fl_idx C, fl_idx inner,
                             const double *x, double *y, const double *gamma,
                             const double *beta, double eps, double *acc)
{
    fl_kt.layernorm_f64(outer, C, inner, x, y, gamma, beta, eps, acc);
}

/* end of the compatibility names */
