/*
 * fl_kernels.h -- the numeric kernels of fastlazy's forward plan.
 *
 * Plain C on raw pointers: no Python objects, no allocation, no global state
 * but one table of function pointers chosen once at import (fl_kernels_init).
 *
 * Every body is written once, as a macro over the element type T and the
 * vector type V (GCC/Clang vector extensions), and instantiated for float and
 * double at three instruction-set levels: x86-64-v4 (AVX-512), x86-64-v3
 * (AVX2 + FMA) and the baseline the wheel is compiled for.  The faster levels
 * are compiled with per-function target attributes, never with -march, so
 * the extension runs on any x86-64 CPU and picks its kernels at run time.
 *
 * Weights are stored transposed, wt[k * M + m] (in_units x units, C order):
 * an output row is then a sum of broadcast-scaled weight rows, which
 * vectorises along the units without horizontal reductions.
 */
#ifndef FL_KERNELS_H
#define FL_KERNELS_H

#include <math.h>
#include <stddef.h>
#include <string.h>

typedef ptrdiff_t fl_idx;

enum {
    FL_ACT_NONE = 0,
    FL_ACT_RELU = 1,
    FL_ACT_SIGMOID = 2,
    FL_ACT_TANH = 3,
    FL_ACT_SOFTRELU = 4,
    FL_ACT_SOFTSIGN = 5,
    FL_ACT_GELU = 6,
    FL_ACT_SILU = 7
};

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
#define FL_X86 1
#define FL_TARGET_V4 __attribute__((target("arch=x86-64-v4"), noinline))
#define FL_TARGET_V3 __attribute__((target("arch=x86-64-v3"), noinline))
#else
#define FL_X86 0
#endif

#define FL_INLINE static inline __attribute__((always_inline))
#define FL_UNROLL _Pragma("GCC unroll 16")

/* ------------------------------------------------------------------ */
/* Scalar activations: numerically stable, IEEE propagation of NaN/inf. */

#define FL_DEFINE_SCALAR_ACT(T, SFX, EXP, LOG1P, TANH, ERF)                  \
static T fl_act1_##SFX(T v, int act)                                          \
{                                                                             \
    switch (act) {                                                            \
    case FL_ACT_RELU:                                                         \
        return (v > 0 || v != v) ? v : (T)0;                                  \
    case FL_ACT_SIGMOID:                                                      \
        if (v >= 0) return (T)1 / ((T)1 + EXP(-v));                           \
        else { T e = EXP(v); return e / ((T)1 + e); }                         \
    case FL_ACT_TANH:                                                         \
        return TANH(v);                                                       \
    case FL_ACT_SOFTRELU:                                                     \
        /* log(1 + e^v) = max(v, 0) + log1p(e^-|v|) */                        \
        return (v > 0 ? v : (T)0) + LOG1P(EXP(-(v < 0 ? -v : v)));            \
    case FL_ACT_SOFTSIGN:                                                     \
        if (isinf(v)) return v > 0 ? (T)1 : (T)-1;                            \
        return v / ((T)1 + (v < 0 ? -v : v));                                 \
    case FL_ACT_GELU:                                                         \
        if (isinf(v)) return v > 0 ? v : (T)0;                                \
        return (T)0.5 * v * ((T)1 + ERF(v * (T)0.70710678118654752440));      \
    case FL_ACT_SILU:                                                         \
        if (v >= 0) return v / ((T)1 + EXP(-v));                              \
        if (isinf(v)) return (T)0;                                            \
        { T e = EXP(v); return v * e / ((T)1 + e); }                          \
    default:                                                                  \
        return v;                                                             \
    }                                                                         \
}                                                                             \
static void fl_act_##SFX(T *y, fl_idx count, int act)                         \
{                                                                             \
    fl_idx i;                                                                 \
    if (act == FL_ACT_NONE) return;                                           \
    if (act == FL_ACT_RELU) {                                                 \
        for (i = 0; i < count; i++) {                                         \
            T v = y[i];                                                       \
            y[i] = (v > 0 || v != v) ? v : (T)0;                              \
        }                                                                     \
        return;                                                               \
    }                                                                         \
    for (i = 0; i < count; i++) y[i] = fl_act1_##SFX(y[i], act);              \
}

FL_DEFINE_SCALAR_ACT(float, f32, expf, log1pf, tanhf, erff)
FL_DEFINE_SCALAR_ACT(double, f64, exp, log1p, tanh, erf)

/* ------------------------------------------------------------------ */
/* The small dense kernel.
 *
 * y[i, m] = act(b[m] + sum_k x[i, k] * wt[k, m]) for i < n, m < M.
 * x has row stride ldx, y row stride ldy.
 *
 * A register tile holds R rows x NV vectors of L lanes, with KU independent
 * partial sums along k to hide FMA latency when the tile is narrow.  The
 * column tail (fewer than NV*L columns) reads whole vectors while they stay
 * inside the weight matrix -- the surplus lanes belong to the next weight row,
 * are computed and dropped -- and copies the last rows' tails through a
 * zero-padded buffer, so nothing is read out of bounds.
 */

/* Register tiles are written out as named variables a<r><j>, r < 4, j < 8,
 * each statement guarded by compile-time constants (R, NV), so that the
 * accumulators live in registers: arrays indexed in loops were left in
 * memory by GCC.  Unused ones are removed as dead code. */
#define FL_FOR_R(OP) OP(0) OP(1) OP(2) OP(3) OP(4) OP(5) OP(6) OP(7)
#define FL_FOR_J(OP) OP(0) OP(1) OP(2) OP(3) OP(4) OP(5) OP(6) OP(7)
#define FL_FOR_RJ_ROW(OP, r) OP(r, 0) OP(r, 1) OP(r, 2) OP(r, 3) \
                             OP(r, 4) OP(r, 5) OP(r, 6) OP(r, 7)
#define FL_FOR_RJ(OP) FL_FOR_RJ_ROW(OP, 0) FL_FOR_RJ_ROW(OP, 1) \
                      FL_FOR_RJ_ROW(OP, 2) FL_FOR_RJ_ROW(OP, 3) \
                      FL_FOR_RJ_ROW(OP, 4) FL_FOR_RJ_ROW(OP, 5) \
                      FL_FOR_RJ_ROW(OP, 6) FL_FOR_RJ_ROW(OP, 7)
#define FL_DECL_ROW(V, r) V a##r##0 = {0}, a##r##1 = {0}, a##r##2 = {0}, \
    a##r##3 = {0}, a##r##4 = {0}, a##r##5 = {0}, a##r##6 = {0}, a##r##7 = {0};
#define FL_TILE_DECL(V) FL_DECL_ROW(V, 0) FL_DECL_ROW(V, 1) \
                        FL_DECL_ROW(V, 2) FL_DECL_ROW(V, 3) \
                        FL_DECL_ROW(V, 4) FL_DECL_ROW(V, 5) \
                        FL_DECL_ROW(V, 6) FL_DECL_ROW(V, 7)
/* wide: load vector j of the weight row; full or zero-padded */
#define FL_LD_J(j) if (j < NV) w##j = FL_LD(w + j * FL_L);
#define FL_LDP_J(j) if (j < NV) { fl_idx c = mrem - (fl_idx)j * FL_L; \
    w##j = FL_LDP(w + j * FL_L, c < 0 ? 0 : (c > FL_L ? FL_L : c)); }
#define FL_FMA_RJ(r, j) if (r < R && j < NV) a##r##j += xk[r * ldx] * w##j;
/* narrow: w##u is weight row k+u */
#define FL_LDK_J(u) if (u < NV) w##u = FL_LD(w + u * M);
#define FL_FMAK_RJ(r, u) if (r < R && u < NV) a##r##u += xk[r * ldx + u] * w##u;
#define FL_FMA1_R(r) if (r < R) a##r##0 += x[r * ldx + k] * w0;
#define FL_SUMK_R(r) if (r < R) a##r##0 = ((a##r##0 + a##r##1) + (a##r##2 + a##r##3)) \
    + ((a##r##4 + a##r##5) + (a##r##6 + a##r##7));
/* epilogue of accumulator (r, j): bias, relu, store (full or partial) */
#define FL_EPI_RJ(r, j) if (r < R && j < NV) { \
    fl_idx c = mrem - (fl_idx)j * FL_L; \
    if (c > 0) { \
        fl_elem_t *yp = y + r * ldy + m0 + j * FL_L; \
        if (b) a##r##j += c >= FL_L ? FL_LD(b + m0 + j * FL_L) \
                                 : FL_LDP(b + m0 + j * FL_L, c); \
        if (act == FL_ACT_RELU) a##r##j = FL_RELU(a##r##j); \
        if (c >= FL_L) FL_ST(yp, a##r##j); else FL_STP(yp, a##r##j, c); \
        if (act != FL_ACT_NONE && act != FL_ACT_RELU) \
            FL_ACTN(yp, c < FL_L ? c : FL_L, act); \
    } }

/* Generic vector helpers; each tile function declares fl_elem_t, fl_vec_t and
 * FL_L for its own element and vector type (FL_TYPES). */
#define FL_TYPES(T, V) typedef T fl_elem_t; typedef V fl_vec_t; \
    enum { FL_L = (int)(sizeof(V) / sizeof(T)) };
#define FL_LD(p) ({ fl_vec_t v_; memcpy(&v_, (p), sizeof(fl_vec_t)); v_; })
#define FL_LDP(p, cnt) ({ fl_elem_t b_[FL_L]; fl_vec_t v_; fl_idx i_; \
    const fl_elem_t *p_ = (p); fl_idx n_ = (cnt); \
    for (i_ = 0; i_ < FL_L; i_++) b_[i_] = i_ < n_ ? p_[i_] : (fl_elem_t)0; \
    memcpy(&v_, b_, sizeof(fl_vec_t)); v_; })
#define FL_ST(p, v) do { fl_vec_t v_ = (v); memcpy((p), &v_, sizeof(fl_vec_t)); } while (0)
#define FL_STP(p, v, cnt) do { fl_elem_t b_[FL_L]; fl_vec_t v_ = (v); fl_idx i_; \
    fl_elem_t *p_ = (p); fl_idx n_ = (cnt); memcpy(b_, &v_, sizeof(fl_vec_t)); \
    for (i_ = 0; i_ < n_; i_++) p_[i_] = b_[i_]; } while (0)
/* keep v unless v <= 0: NaN survives, as with numpy.maximum */
#define FL_RELU(v) ((fl_vec_t)((__typeof__((v) <= 0))(v) & ~((v) <= 0)))
#define FL_ACTN(p, n, act) _Generic((fl_elem_t)0, float: fl_act_f32, \
    double: fl_act_f64)((p), (n), (act))

/* Weights per column panel of the small kernel: half of a 2 MiB L2. */
#define FL_PANEL_BYTES ((fl_idx)1 << 20)

static inline fl_idx fl_ksafe(fl_idx K, fl_idx M, fl_idx m0, fl_idx mrem, fl_idx width)
{
    /* rows k < ksafe can be read as whole vectors [m0, m0 + width) */
    fl_idx last;
    if (mrem >= width) return K;
    last = K * M - m0 - width;
    if (last < 0) return 0;
    return last / M + 1 < K ? last / M + 1 : K;
}

#define FL_DEFINE_DENSE(T, SFX, ISA, V, L, NW8, NW4, NW2, NW1, KU8, KU4, KU2, KU1, ATTR)                        \
                                                                              \
/* Wide tile: R rows x NV vectors, one accumulator each (a##r##j). */       \
FL_INLINE void fl_wide_##SFX##_##ISA(const int R, const int NV,               \
    fl_idx K, fl_idx M, fl_idx m0, fl_idx mrem,                               \
    const T *x, fl_idx ldx, const T *wt, const T *b,                          \
    T *y, fl_idx ldy, int act)                                                \
{                                                                             \
    FL_TYPES(T, V)                                                            \
    FL_TILE_DECL(V)                                                           \
    fl_idx k, ksafe = fl_ksafe(K, M, m0, mrem, (fl_idx)NV * L);               \
    for (k = 0; k < K; k++) {                                                 \
        const T *w = wt + k * M + m0;                                         \
        const T *xk = x + k;                                                  \
        V w0, w1, w2, w3, w4, w5, w6, w7;                                     \
        if (k < ksafe) {                                                      \
            FL_FOR_J(FL_LD_J)                                                 \
        } else {                                                              \
            FL_FOR_J(FL_LDP_J)                                                \
        }                                                                     \
        FL_FOR_RJ(FL_FMA_RJ)                                                  \
    }                                                                         \
    FL_FOR_RJ(FL_EPI_RJ)                                                      \
}                                                                             \
                                                                              \
/* Narrow tile: R rows x one vector, KU partial sums along k (a##r##u). */    \
FL_INLINE void fl_narrow_##SFX##_##ISA(const int R, const int KU,             \
    fl_idx K, fl_idx M, fl_idx m0, fl_idx mrem,                               \
    const T *x, fl_idx ldx, const T *wt, const T *b,                          \
    T *y, fl_idx ldy, int act)                                                \
{                                                                             \
    FL_TYPES(T, V)                                                            \
    FL_TILE_DECL(V)                                                           \
    const int NV = KU;  /* the j index runs over the partial sums */          \
    fl_idx k = 0, ksafe = fl_ksafe(K, M, m0, mrem, (fl_idx)L);                \
    for (; k + KU <= ksafe; k += KU) {                                        \
        const T *w = wt + k * M + m0;                                         \
        const T *xk = x + k;                                                  \
        V w0, w1, w2, w3, w4, w5, w6, w7;                                     \
        FL_FOR_J(FL_LDK_J)                                                    \
        FL_FOR_RJ(FL_FMAK_RJ)                                                 \
    }                                                                         \
    for (; k < K; k++) {                                                      \
        const T *w = wt + k * M + m0;                                         \
        V w0 = k < ksafe ? FL_LD(w) : FL_LDP(w, mrem < L ? mrem : L);         \
        FL_FOR_R(FL_FMA1_R)                                                   \
    }                                                                         \
    FL_FOR_R(FL_SUMK_R)                                                       \
    {                                                                         \
        const int NV = 1;                                                     \
        FL_FOR_RJ(FL_EPI_RJ)                                                  \
    }                                                                         \
}                                                                             \
                                                                              \
/* R rows, output columns [mbeg, mend): wide blocks of NW vectors, then  */ \
/* one-vector blocks for the tail */                                         \
FL_INLINE void fl_rows_##SFX##_##ISA(const int R, const int NW, const int KU, \
    fl_idx K, fl_idx M, fl_idx mbeg, fl_idx mend,                             \
    const T *x, fl_idx ldx, const T *wt, const T *b, T *y, fl_idx ldy,        \
    int act)                                                                  \
{                                                                             \
    fl_idx m0 = mbeg;                                                         \
    const fl_idx width = (fl_idx)NW * L;                                      \
    for (; m0 + width <= mend; m0 += width)                                   \
        fl_wide_##SFX##_##ISA(R, NW, K, M, m0, width,                         \
                              x, ldx, wt, b, y, ldy, act);                    \
    for (; m0 < mend; m0 += L)                                                \
        fl_narrow_##SFX##_##ISA(R, KU, K, M, m0, mend - m0,                   \
                                x, ldx, wt, b, y, ldy, act);                  \
}                                                                             \
                                                                              \
/* Column panels outermost, each about FL_PANEL_BYTES of weights, so a      */ \
/* panel stays in L2 while every row block streams through it.             */ \
ATTR static void fl_dense_small_##SFX##_##ISA(fl_idx n, fl_idx K, fl_idx M,   \
    const T *x, fl_idx ldx, const T *wt, const T *b, T *y, fl_idx ldy,        \
    int act)                                                                  \
{                                                                             \
    const fl_idx unit = (fl_idx)NW8 * L * 4;                                  \
    fl_idx cw = FL_PANEL_BYTES / (K * (fl_idx)sizeof(T));                     \
    fl_idx c0, c1, i;                                                         \
    cw -= cw % unit;                                                          \
    if (cw < unit) cw = unit;                                                 \
    for (c0 = 0; c0 < M; c0 = c1) {                                           \
        c1 = M - c0 <= cw ? M : c0 + cw;                                      \
        i = 0;                                                                \
        for (; i + 8 <= n; i += 8)                                            \
            fl_rows_##SFX##_##ISA(8, NW8, KU8, K, M, c0, c1, x + i * ldx,     \
                                  ldx, wt, b, y + i * ldy, ldy, act);         \
        for (; i + 4 <= n; i += 4)                                            \
            fl_rows_##SFX##_##ISA(4, NW4, KU4, K, M, c0, c1, x + i * ldx,     \
                                  ldx, wt, b, y + i * ldy, ldy, act);         \
        switch (n - i) {                                                      \
        case 3: fl_rows_##SFX##_##ISA(3, NW4, KU4, K, M, c0, c1, x + i * ldx, \
                                      ldx, wt, b, y + i * ldy, ldy, act);     \
                break;                                                        \
        case 2: fl_rows_##SFX##_##ISA(2, NW2, KU2, K, M, c0, c1, x + i * ldx, \
                                      ldx, wt, b, y + i * ldy, ldy, act);     \
                break;                                                        \
        case 1: fl_rows_##SFX##_##ISA(1, NW1, KU1, K, M, c0, c1, x + i * ldx, \
                                      ldx, wt, b, y + i * ldy, ldy, act);     \
                break;                                                        \
        default: break;                                                       \
        }                                                                     \
    }                                                                         \
}                                                                             \
                                                                              \
/* y[i, :] = act(y[i, :] + b) in place, after a BLAS product */               \
ATTR static void fl_bias_act_##SFX##_##ISA(fl_idx n, fl_idx M, T *y,          \
    fl_idx ldy, const T *b, int act)                                          \
{                                                                             \
    fl_idx i, m;                                                              \
    for (i = 0; i < n; i++) {                                                 \
        T *yr = y + i * ldy;                                                  \
        if (b)                                                                \
            for (m = 0; m < M; m++) yr[m] += b[m];                            \
        if (act == FL_ACT_RELU) {                                             \
            for (m = 0; m < M; m++) {                                         \
                T v = yr[m];                                                  \
                yr[m] = (v > 0 || v != v) ? v : (T)0;                         \
            }                                                                 \
        } else if (act != FL_ACT_NONE) {                                      \
            fl_act_##SFX(yr, M, act);                                         \
        }                                                                     \
    }                                                                         \
}

typedef float fl_v4f __attribute__((vector_size(16)));
typedef double fl_v2d __attribute__((vector_size(16)));
FL_DEFINE_DENSE(float, f32, base, fl_v4f, 4, 1, 2, 4, 4, 1, 2, 4, 4, )
FL_DEFINE_DENSE(double, f64, base, fl_v2d, 2, 1, 2, 4, 4, 1, 2, 4, 4, )

#if FL_X86
typedef float fl_v8f __attribute__((vector_size(32)));
typedef double fl_v4d __attribute__((vector_size(32)));
typedef float fl_v16f __attribute__((vector_size(64)));
typedef double fl_v8d __attribute__((vector_size(64)));
FL_DEFINE_DENSE(float, f32, v3, fl_v8f, 8, 1, 2, 4, 4, 1, 2, 4, 4, FL_TARGET_V3)
FL_DEFINE_DENSE(double, f64, v3, fl_v4d, 4, 1, 2, 4, 4, 1, 2, 4, 4, FL_TARGET_V3)
FL_DEFINE_DENSE(float, f32, v4, fl_v16f, 16, 2, 4, 8, 8, 2, 4, 8, 8, FL_TARGET_V4)
FL_DEFINE_DENSE(double, f64, v4, fl_v8d, 8, 2, 4, 8, 8, 2, 4, 8, 8, FL_TARGET_V4)
#endif

/* ------------------------------------------------------------------ */
/* The batched kernel on packed weights.
 *
 * For a batch of rows the weights are copied once into panels of NR = 2
 * vectors of output columns (the layout a GEMM micro-kernel streams):
 *
 *     pk[(p * K + k) * NR + j] = wt[k, p * NR + j]   (0 for columns >= M)
 *
 * and y[i, m] = act(b[m] + sum_k x[i, k] * wt[k, m]) runs panel by panel:
 * each panel (K x NR, read sequentially and prefetched ahead) serves every
 * row of the batch in blocks of MR rows, MR x 2 accumulators in registers,
 * x read in place (one broadcast per row and k).  Copying the weights is
 * what every BLAS does on each call; here the caller keeps the copy and
 * repacks only when the weights change (see Parameter in _core.pyx).
 */

/* bytes ahead of the current weight row to prefetch: 8 rows of an AVX-512
 * float panel, measured best of 512/1024/2048 for 1024x1024 and 1024x4096 */
#define FL_PF_BYTES 1024

#define FL_FOR_P(OP) OP(0) OP(1) OP(2) OP(3) OP(4) OP(5) OP(6) OP(7) \
                     OP(8) OP(9) OP(10) OP(11)
#define FL_PACC(r) fl_vec_t c##r##0 = {0}, c##r##1 = {0};
#define FL_PFMA(r) if (r < R) { fl_elem_t a_ = xk[r * ldx]; \
    c##r##0 += a_ * b0; c##r##1 += a_ * b1; }
#define FL_PEPI(r) if (r < R) { \
    fl_elem_t *yp = y + r * ldy; \
    if (bq) { c##r##0 += FL_LD(bq); c##r##1 += FL_LD(bq + FL_L); } \
    if (act == FL_ACT_RELU) { c##r##0 = FL_RELU(c##r##0); \
                              c##r##1 = FL_RELU(c##r##1); } \
    if (nc == 2 * FL_L) { FL_ST(yp, c##r##0); FL_ST(yp + FL_L, c##r##1); } \
    else { fl_elem_t t_[2 * FL_L]; FL_ST(t_, c##r##0); \
           FL_ST(t_ + FL_L, c##r##1); \
           memcpy(yp, t_, (size_t)nc * sizeof(fl_elem_t)); } }

#define FL_DEFINE_PACKED(T, SFX, ISA, V, MR, TAILS, ATTR)                             \
                                                                              \
/* R (<= MR) rows x one panel: nc (<= NR) valid columns */                    \
FL_INLINE void fl_pk_##SFX##_##ISA(const int R, fl_idx K, const T *x,         \
    fl_idx ldx, const T *bp, const T *b, fl_idx nc, T *y, fl_idx ldy,         \
    int act)                                                                  \
{                                                                             \
    FL_TYPES(T, V)                                                            \
    FL_FOR_P(FL_PACC)                                                         \
    T bpad[2 * FL_L];                                                         \
    const T *bq = b;                                                          \
    fl_idx k;                                                                 \
    if (b && nc < 2 * FL_L) {       /* a partial panel: zero-padded bias */   \
        memset(bpad, 0, sizeof(bpad));                                        \
        memcpy(bpad, b, (size_t)nc * sizeof(T));                              \
        bq = bpad;                                                            \
    }                                                                         \
    for (k = 0; k < K; k++) {                                                 \
        const T *w = bp + k * 2 * FL_L;                                       \
        const T *xk = x + k;                                                  \
        fl_vec_t b0, b1;                                                      \
        __builtin_prefetch((const char *)w + FL_PF_BYTES, 0, 3);              \
        if (2 * sizeof(V) > 64)     /* a panel row spans two lines */         \
            __builtin_prefetch((const char *)w + FL_PF_BYTES + 64, 0, 3);     \
        b0 = FL_LD(w);                                                        \
        b1 = FL_LD(w + FL_L);                                                 \
        FL_FOR_P(FL_PFMA)                                                     \
    }                                                                         \
    FL_FOR_P(FL_PEPI)                                                         \
    /* other activations once every accumulator is stored: a call with */    \
    /* accumulators live made GCC keep them on the stack in the loop   */    \
    if (act != FL_ACT_NONE && act != FL_ACT_RELU)                             \
        for (k = 0; k < R; k++) FL_ACTN(y + k * ldy, nc, act);                \
}                                                                             \
                                                                              \
/* one function per row count R <= MR, each with its own register     */     \
/* allocation (inlined into one body, GCC kept accumulators on the     */     \
/* stack in some of them)                                              */     \
FL_PK_FNS_##MR(T, SFX, ISA, ATTR)                                             \
                                                                              \
/* n rows x one panel bp (K x NR, nc valid columns; bb, y at its first     */ \
/* column): full MR-row groups, then the rest in one or two groups -- a    */ \
/* remainder under MR/2 joins the last full group and the two split evenly */ \
/* (256 rows: 20 x 12 + 8 + 8, not 21 x 12 + 4)                            */ \
FL_INLINE void fl_panel_rows_##SFX##_##ISA(fl_idx n, fl_idx K, const T *x,    \
    fl_idx ldx, const T *bp, const T *bb, fl_idx nc, T *y, fl_idx ldy,        \
    int act)                                                                  \
{                                                                             \
    const fl_idx m0 = 0;                                                      \
    fl_idx full = n / MR, rest = n % MR, i, g, part;                          \
    if (full > 0 && rest > 0 && rest < MR / 2) {                              \
        full--;                                                               \
        rest += MR;                                                           \
    }                                                                         \
    for (i = 0, g = 0; g < full; g++, i += MR)                                \
        fl_pk##MR##_##SFX##_##ISA(K, x + i * ldx, ldx, bp, bb, nc,            \
                                  y + i * ldy, ldy, act);                     \
    for (part = rest > MR ? rest / 2 : rest; i < n;                           \
         i += part, part = n - i) {                                           \
        switch (part) {                                                       \
        TAILS(SFX, ISA)                                                       \
        default: break;                                                       \
        }                                                                     \
    }                                                                         \
}                                                                             \
                                                                              \
/* Output columns of panels [p0, p1) for n rows (b, y: whole-row pointers) */ \
ATTR static void fl_gemm_packed_##SFX##_##ISA(fl_idx n, fl_idx K, fl_idx M,   \
    const T *x, fl_idx ldx, const T *pk, fl_idx p0, fl_idx p1, const T *b,    \
    T *y, fl_idx ldy, int act)                                                \
{                                                                             \
    enum { NR = (int)(2 * sizeof(V) / sizeof(T)) };                           \
    fl_idx p;                                                                 \
    for (p = p0; p < p1; p++) {                                               \
        const fl_idx m0 = p * NR;                                             \
        fl_panel_rows_##SFX##_##ISA(n, K, x, ldx, pk + p * K * NR,            \
                                    b ? b + m0 : NULL,                        \
                                    M - m0 < NR ? M - m0 : NR, y + m0, ldy,   \
                                    act);                                     \
    }                                                                         \
}                                                                             \
                                                                              \
/* c[M x N] = a[M x K] @ b[K x N] (row-major, leading dimensions), both     */ \
/* operands changing per call (convolution: weights @ im2col block): each */  \
/* NR-column panel of b is packed into buf (K x NR values) and serves all */  \
/* M rows.  No bias, no activation.                                       */  \
ATTR static void fl_gemm_ab_##SFX##_##ISA(fl_idx M, fl_idx N, fl_idx K,       \
    const T *a, fl_idx lda, const T *b, fl_idx ldb, T *c, fl_idx ldc, T *buf) \
{                                                                             \
    enum { NR = (int)(2 * sizeof(V) / sizeof(T)) };                           \
    fl_idx n0, k;                                                             \
    for (n0 = 0; n0 < N; n0 += NR) {                                          \
        const fl_idx nc = N - n0 < NR ? N - n0 : NR;                          \
        for (k = 0; k < K; k++) {                                             \
            memcpy(buf + k * NR, b + k * ldb + n0, (size_t)nc * sizeof(T));   \
            if (nc < NR)                                                      \
                memset(buf + k * NR + nc, 0, (size_t)(NR - nc) * sizeof(T));  \
        }                                                                     \
        fl_panel_rows_##SFX##_##ISA(M, K, a, lda, buf, NULL, nc, c + n0, ldc, \
                                    FL_ACT_NONE);                             \
    }                                                                         \
}                                                                             \
                                                                              \
/* Copy wt (K x M, C order) into panels; pk holds ceil(M/NR)*K*NR values */   \
ATTR static void fl_pack_##SFX##_##ISA(fl_idx K, fl_idx M, const T *wt,       \
    T *pk)                                                                    \
{                                                                             \
    enum { NR = (int)(2 * sizeof(V) / sizeof(T)) };                           \
    const fl_idx np = (M + NR - 1) / NR;                                      \
    fl_idx k, p;                                                              \
    for (k = 0; k < K; k++) {                                                 \
        const T *src = wt + k * M;                                            \
        for (p = 0; p < np; p++) {                                            \
            T *dst = pk + (p * K + k) * NR;                                   \
            fl_idx nc = M - p * NR < NR ? M - p * NR : NR;                    \
            memcpy(dst, src + p * NR, (size_t)nc * sizeof(T));               \
            if (nc < NR) memset(dst + nc, 0, (size_t)(NR - nc) * sizeof(T));  \
        }                                                                     \
    }                                                                         \
}

#define FL_PK_FN(T, SFX, ISA, ATTR, R)                                        \
ATTR __attribute__((noinline)) static void fl_pk##R##_##SFX##_##ISA(          \
    fl_idx K, const T *x, fl_idx ldx, const T *bp, const T *b, fl_idx nc,     \
    T *y, fl_idx ldy, int act)                                                \
{                                                                             \
    fl_pk_##SFX##_##ISA(R, K, x, ldx, bp, b, nc, y, ldy, act);                \
}
#define FL_PK_FNS_6(T, SFX, ISA, ATTR)                                        \
    FL_PK_FN(T, SFX, ISA, ATTR, 1) FL_PK_FN(T, SFX, ISA, ATTR, 2)             \
    FL_PK_FN(T, SFX, ISA, ATTR, 3) FL_PK_FN(T, SFX, ISA, ATTR, 4)             \
    FL_PK_FN(T, SFX, ISA, ATTR, 5) FL_PK_FN(T, SFX, ISA, ATTR, 6)
#define FL_PK_FNS_12(T, SFX, ISA, ATTR)                                       \
    FL_PK_FNS_6(T, SFX, ISA, ATTR)                                            \
    FL_PK_FN(T, SFX, ISA, ATTR, 7) FL_PK_FN(T, SFX, ISA, ATTR, 8)             \
    FL_PK_FN(T, SFX, ISA, ATTR, 9) FL_PK_FN(T, SFX, ISA, ATTR, 10)            \
    FL_PK_FN(T, SFX, ISA, ATTR, 11) FL_PK_FN(T, SFX, ISA, ATTR, 12)
/* the rows left after the full MR-row blocks of a panel */
#define FL_PK_CASE(SFX, ISA, R) case R:                                       \
    fl_pk##R##_##SFX##_##ISA(K, x + i * ldx, ldx, bp, bb, nc,                 \
                             y + i * ldy + m0, ldy, act); break;
#define FL_PK_TAILS_6(SFX, ISA)                                               \
    FL_PK_CASE(SFX, ISA, 1) FL_PK_CASE(SFX, ISA, 2) FL_PK_CASE(SFX, ISA, 3)   \
    FL_PK_CASE(SFX, ISA, 4) FL_PK_CASE(SFX, ISA, 5)
#define FL_PK_TAILS_12(SFX, ISA) FL_PK_TAILS_6(SFX, ISA)                      \
    FL_PK_CASE(SFX, ISA, 6) FL_PK_CASE(SFX, ISA, 7) FL_PK_CASE(SFX, ISA, 8)   \
    FL_PK_CASE(SFX, ISA, 9) FL_PK_CASE(SFX, ISA, 10) FL_PK_CASE(SFX, ISA, 11)

/* Row blocks by register file: 16 registers (SSE, AVX2) hold 6 rows x 2
 * vectors of accumulators, 32 (AVX-512) hold 12. */
FL_DEFINE_PACKED(float, f32, base, fl_v4f, 6, FL_PK_TAILS_6, )
FL_DEFINE_PACKED(double, f64, base, fl_v2d, 6, FL_PK_TAILS_6, )
#if FL_X86
FL_DEFINE_PACKED(float, f32, v3, fl_v8f, 6, FL_PK_TAILS_6, FL_TARGET_V3)
FL_DEFINE_PACKED(double, f64, v3, fl_v4d, 6, FL_PK_TAILS_6, FL_TARGET_V3)
FL_DEFINE_PACKED(float, f32, v4, fl_v16f, 12, FL_PK_TAILS_12, FL_TARGET_V4)
FL_DEFINE_PACKED(double, f64, v4, fl_v8d, 12, FL_PK_TAILS_12, FL_TARGET_V4)
#endif

/* ------------------------------------------------------------------ */
/* The dispatch table, filled once by fl_kernels_init(). */

typedef void (*fl_dense_f32_fn)(fl_idx, fl_idx, fl_idx, const float *, fl_idx,
                                const float *, const float *, float *, fl_idx, int);
typedef void (*fl_dense_f64_fn)(fl_idx, fl_idx, fl_idx, const double *, fl_idx,
                                const double *, const double *, double *, fl_idx, int);
typedef void (*fl_bias_f32_fn)(fl_idx, fl_idx, float *, fl_idx, const float *, int);
typedef void (*fl_bias_f64_fn)(fl_idx, fl_idx, double *, fl_idx, const double *, int);
typedef void (*fl_gemm_f32_fn)(fl_idx, fl_idx, fl_idx, const float *, fl_idx,
                               const float *, fl_idx, fl_idx, const float *,
                               float *, fl_idx, int);
typedef void (*fl_gemm_f64_fn)(fl_idx, fl_idx, fl_idx, const double *, fl_idx,
                               const double *, fl_idx, fl_idx, const double *,
                               double *, fl_idx, int);
typedef void (*fl_pack_f32_fn)(fl_idx, fl_idx, const float *, float *);
typedef void (*fl_gemm_ab_f32_fn)(fl_idx, fl_idx, fl_idx, const float *, fl_idx,
                                  const float *, fl_idx, float *, fl_idx,
                                  float *);
typedef void (*fl_gemm_ab_f64_fn)(fl_idx, fl_idx, fl_idx, const double *,
                                  fl_idx, const double *, fl_idx, double *,
                                  fl_idx, double *);
typedef void (*fl_pack_f64_fn)(fl_idx, fl_idx, const double *, double *);

typedef struct {
    fl_dense_f32_fn dense_f32;
    fl_dense_f64_fn dense_f64;
    fl_bias_f32_fn bias_act_f32;
    fl_bias_f64_fn bias_act_f64;
    fl_gemm_f32_fn gemm_packed_f32;   /* batched kernel on packed weights */
    fl_gemm_f64_fn gemm_packed_f64;
    fl_pack_f32_fn pack_f32;
    fl_pack_f64_fn pack_f64;
    fl_gemm_ab_f32_fn gemm_ab_f32;    /* both operands per call (conv) */
    fl_gemm_ab_f64_fn gemm_ab_f64;
    int nr_f32;                       /* panel width of the packed layout */
    int nr_f64;
    int mr;                           /* rows per register tile, packed kernel */
    const char *isa;
} fl_kernel_table;

static fl_kernel_table fl_kt = {
    fl_dense_small_f32_base, fl_dense_small_f64_base,
    fl_bias_act_f32_base, fl_bias_act_f64_base,
    fl_gemm_packed_f32_base, fl_gemm_packed_f64_base,
    fl_pack_f32_base, fl_pack_f64_base, fl_gemm_ab_f32_base,
    fl_gemm_ab_f64_base, 8, 4, 6, "baseline"
};

/* Point the table at one instruction-set level's kernels; NR32/NR64: panel
 * width of the packed layout, MR: rows per register tile (see
 * FL_DEFINE_PACKED's instances). */
#define FL_SET_TABLE(ISA, NR32, NR64, MR, NAME) do {                          \
        fl_kt.dense_f32 = fl_dense_small_f32_##ISA;                           \
        fl_kt.dense_f64 = fl_dense_small_f64_##ISA;                           \
        fl_kt.bias_act_f32 = fl_bias_act_f32_##ISA;                           \
        fl_kt.bias_act_f64 = fl_bias_act_f64_##ISA;                           \
        fl_kt.gemm_packed_f32 = fl_gemm_packed_f32_##ISA;                     \
        fl_kt.gemm_packed_f64 = fl_gemm_packed_f64_##ISA;                     \
        fl_kt.pack_f32 = fl_pack_f32_##ISA;                                   \
        fl_kt.pack_f64 = fl_pack_f64_##ISA;                                   \
        fl_kt.gemm_ab_f32 = fl_gemm_ab_f32_##ISA;                             \
        fl_kt.gemm_ab_f64 = fl_gemm_ab_f64_##ISA;                             \
        fl_kt.nr_f32 = NR32;                                                  \
        fl_kt.nr_f64 = NR64;                                                  \
        fl_kt.mr = MR;                                                        \
        fl_kt.isa = NAME;                                                     \
    } while (0)

/* level: -1 = best the CPU supports, 0 = baseline, 3 = AVX2/FMA, 4 = AVX-512.
 * Returns the level in use. */
static int fl_kernels_init(int level)
{
#if FL_X86
    int best = 0;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        best = 3;
    if (best == 3 && __builtin_cpu_supports("avx512f")
        && __builtin_cpu_supports("avx512vl")
        && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512dq"))
        best = 4;
    if (level < 0 || level > best) level = best;
    if (level >= 4) {
        FL_SET_TABLE(v4, 32, 16, 12, "AVX-512 (x86-64-v4)");
        return 4;
    }
    if (level >= 3) {
        FL_SET_TABLE(v3, 16, 8, 6, "AVX2+FMA (x86-64-v3)");
        return 3;
    }
#else
    (void)level;
#endif
    FL_SET_TABLE(base, 8, 4, 6, "baseline");
    return 0;
}

static const char *fl_kernels_isa(void) { return fl_kt.isa; }

#endif /* FL_KERNELS_H */
