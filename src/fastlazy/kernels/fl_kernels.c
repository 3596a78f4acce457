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
 *     gemm_packed.inc.h  conv.inc.h  depthwise.inc.h
 *     qgemm_instance.inc.h  qgemm.inc.h        int8: descriptor + body
 *     dense_bf16.inc.h  bf16_tile.inc.h        bfloat16 weights (float32
 *                                              instances only)
 *
 * The faster levels are compiled with per-function target attributes,
 * never with -march, so the extension runs on any x86-64 CPU and picks its
 * kernels at run time: fl_kernels_init() fills the table fl_kt once.
 */
#include <float.h>
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

#if FL_X86
/* Whether the CPU has AVX512-BF16 (vdpbf16ps); set by fl_kernels_init
 * before the instances fill the table. */
static int fl_cpu_bf16 = 0;
#endif

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
/* The int8 instances: one per level (qgemm_instance.inc.h); they call the
 * float activation of their level for the activations not fused in
 * registers. */

#define FLQ_LEVEL 0
#include "qgemm_instance.inc.h"
#if FL_X86
#define FLQ_LEVEL 3
#include "qgemm_instance.inc.h"
#define FLQ_LEVEL 4
#include "qgemm_instance.inc.h"
#define FLQ_LEVEL 5
#include "qgemm_instance.inc.h"
#define FLQ_LEVEL 6
#include "qgemm_instance.inc.h"
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

/* AVX2 without VNNI: 7-bit weights by default (measured on Zen 3: C4 1.5x
 * the exact level's speed, error 7.6e-3 against 5.5e-3; ONNX Runtime's
 * 4.0e-2 with its defaults, 8.8e-3 with reduce_range) */
static int fl_q7 = 1;

FL_API void fl_kernels_q7(int on)
{
    fl_q7 = on != 0;
}

/* the best int8 level at or below float level `level` */
static int fl_qlevel(int level)
{
#if FL_X86
    __builtin_cpu_init();
    if (level >= 4 && __builtin_cpu_supports("avx512vnni")) return 6;
    if (level >= 3 && __builtin_cpu_supports("avxvnni")) return 5;
    if (level >= 3) return fl_q7 ? 4 : 3;
#else
    (void)level;
#endif
    return 0;
}

FL_API int fl_kernels_qbest(void)
{
    return fl_qlevel(fl_best_level());
}

FL_API int fl_kernels_init(int level)
{
    fl_kernel_table t;
    int best = fl_best_level();
    if (level < 0 || level > best) level = best;
#if FL_X86
    fl_cpu_bf16 = best >= 4 && __builtin_cpu_supports("avx512bf16");
#endif
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
    switch (fl_qlevel(level)) {
#if FL_X86
    case 6: fl_qfill_vnni_v4(&t); break;
    case 5: fl_qfill_avxvnni_v3(&t); break;
    case 4: fl_qfill_avx2w7_v3(&t); break;
    case 3: fl_qfill_avx2_v3(&t); break;
#endif
    default: fl_qfill_base(&t); break;
    }
    fl_kt = t;
    return t.level;
}

FL_API const char *fl_kernels_isa(void)
{
    return fl_kt.isa;
}

/* ------------------------------------------------------------------ */
