/*
 * instance.inc.h -- one (level, dtype) instance of the kernels.
 *
 * fl_kernels.c includes this file once per instruction-set level and dtype,
 * after defining
 *
 *     FL_ISA_HEADER   the level's descriptor ("isa_avx512.h", ...)
 *     FL_DOUBLE       0 for float, 1 for double
 *
 * It derives the element type T, vector type V, lanes L and panel width NR
 * from the descriptor, defines the vector helpers the bodies use, includes
 * the bodies (plain C over T and V), and the function filling this
 * instance's entries of the table; at the end it undefines all of it, so
 * the next instance starts clean.  Every function name carries the dtype
 * and level (FL_FN(dense_small) is fl_dense_small_f32_v4), which is how
 * tools/check_isa.py tells the AVX functions from the baseline ones.
 */
#include FL_ISA_HEADER

#if FL_DOUBLE
#define T double
#define FL_SFX f64
#else
#define T float
#define FL_SFX f32
#endif

typedef T FL_FN(vec) __attribute__((vector_size(FL_VBYTES)));
typedef int FL_FN(ivec) __attribute__((vector_size(FL_VBYTES)));
#define V FL_FN(vec)
#define VI FL_FN(ivec)                 /* 32-bit lanes (float sigmoid) */
#define L ((int)(FL_VBYTES / sizeof(T)))   /* lanes of V */
#define NR (2 * L)        /* panel width of the packed layout: 2 vectors */
#define MR FL_MR

/* A kernel: its own function (the table points at it), compiled for the
 * level.  A helper: inlined into the kernels, so its vectors and the
 * accumulator structs passed to it by address stay in registers. */
#define FL_KERNEL static __attribute__((noinline)) FL_ATTR
#define FL_HELPER static inline __attribute__((always_inline)) FL_ATTR

/* Loads and stores by memcpy: no alignment assumed, and no aliasing
 * questions between T and V. */
FL_HELPER V FL_FN(load)(const T *p)
{
    V v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* the first n (0..L) values of p, the other lanes 0; never reads past n */
FL_HELPER V FL_FN(load_part)(const T *p, fl_idx n)
{
    T b[L];
    V v;
    int i;
    for (i = 0; i < L; i++) b[i] = i < n ? p[i] : (T)0;
    memcpy(&v, b, sizeof v);
    return v;
}

FL_HELPER void FL_FN(store)(T *p, V v)
{
    memcpy(p, &v, sizeof v);
}

/* the first n (0..L) lanes of v; never writes past n */
FL_HELPER void FL_FN(store_part)(T *p, V v, fl_idx n)
{
    T b[L];
    fl_idx i;
    memcpy(b, &v, sizeof v);
    for (i = 0; i < n; i++) p[i] = b[i];
}

/* keep v unless v <= 0: NaN survives, as with numpy.maximum */
FL_HELPER V FL_FN(relu)(V v)
{
    __typeof__(v <= 0) m = v <= 0;
    return (V)((__typeof__(m))v & ~m);
}

#define LOAD(p) FL_FN(load)(p)
#define LOAD_PART(p, n) FL_FN(load_part)(p, n)
#define STORE(p, v) FL_FN(store)(p, v)
#define STORE_PART(p, v, n) FL_FN(store_part)(p, v, n)
#define RELU(v) FL_FN(relu)(v)

#include "act.inc.h"
#include "dense_small.inc.h"
#include "dense_dot.inc.h"
#include "gemm_packed.inc.h"
#include "depthwise.inc.h"
#include "dense_bf16.inc.h"
#if FL_ISA_LEVEL == 0
/* Im2col, the channel epilogue, pooling and the normalizations stream
 * memory and do a few operations per value: compiled once, at the
 * baseline, as they always were (same results at every level); their
 * activations go through the table, at the table's level. */
#include "conv.inc.h"
#endif

/* This instance's entries of the table; fl_kernels_init() fills the
 * baseline's first, then overwrites with the chosen level's. */
static void FL_FN(fill)(fl_kernel_table *t)
{
    t->FL_DT(dense) = FL_FN(dense_small);
    t->FL_DT(dense_dot) = FL_FN(dense_dot);
    t->FL_DT(pack_rows) = FL_FN(pack_rows);
    t->FL_DT(bias_act) = FL_FN(bias_act);
    t->FL_DT(gemm_packed) = FL_FN(gemm_packed);
    t->FL_DT(pack) = FL_FN(pack);
    t->FL_DT(gemm_ab) = FL_FN(gemm_ab);
    t->FL_DT(gemm_ab_buf) = FL_FN(gemm_ab_buf);
    t->FL_DT(act) = FL_FN(act);
    t->FL_DT(dwconv) = FL_FN(dwconv);
    t->FL_DT(dwconv_buf) = FL_FN(dwconv_buf);
#if FL_ISA_LEVEL == 0
    t->FL_DT(im2col) = FL_FN(im2col);
    t->FL_DT(chan_epilogue) = FL_FN(chan_epilogue);
    t->FL_DT(bn_coeffs) = FL_FN(bn_coeffs);
    t->FL_DT(chan_affine) = FL_FN(chan_affine);
    t->FL_DT(pool2d) = FL_FN(pool2d);
    t->FL_DT(layernorm) = FL_FN(layernorm);
#endif
    t->FL_DT(nr) = NR;
#if !FL_DOUBLE
    t->pack_bf16 = FL_FN(pack_bf16);
    t->gemm_bf16 = FL_FN(gemm_bf16_g);
    t->pack_bf16_rows = FL_FN(pack_bf16_rows);
    t->gemm_bf16_rows = FL_FN(gemm_bf16_rows);
    t->widen_bf16 = fl_widen_bf16;
    t->nr_bf16 = NR;
#if FL_ISA_LEVEL == 4 && FL_X86
    t->gemm_bf16_dot = fl_cpu_bf16 ? FL_FN(gemm_bf16_d) : NULL;
#else
    t->gemm_bf16_dot = NULL;
#endif
#if FL_ISA_LEVEL == 3
    t->gemm_bf16_emu = FL_FN(gemm_bf16_e);
#else
    t->gemm_bf16_emu = NULL;
#endif
#endif
    t->mr = MR;
    t->level = FL_ISA_LEVEL;
    t->isa = FL_ISA_NAME;
}

#undef LOAD
#undef LOAD_PART
#undef STORE
#undef STORE_PART
#undef RELU
#undef FL_KERNEL
#undef FL_HELPER
#undef MR
#undef NR
#undef L
#undef VI
#undef V
#undef FL_SFX
#undef T
#undef FL_DOUBLE
#undef FL_ISA_HEADER
/* the descriptor's names */
#undef FL_ISA
#undef FL_ISA_LEVEL
#undef FL_ISA_NAME
#undef FL_ATTR
#undef FL_VBYTES
#undef FL_MR
#undef FL_BF_MR
#undef FL_SMALL_W8
#undef FL_SMALL_W4
#undef FL_SMALL_W2
#undef FL_SMALL_W1
#undef FL_DW_VBYTES
#undef FL_DW_NV
