/*
 * fl_kernels.h -- the contract of fastlazy's numeric kernels.
 *
 * Plain C on raw pointers: no Python objects, no allocation.  The only
 * global state is one table of function pointers, fl_kt, filled by
 * fl_kernels_init() for one instruction-set level (AVX-512, AVX2+FMA or the
 * x86-64 baseline); callers go through the table and never name a level.
 * The kernels themselves live in kernels/fl_kernels.c (one translation unit;
 * see there for how the bodies are instantiated per level and dtype).
 *
 * Weights of the dense kernels are stored transposed, wt[k * M + m]
 * (in_units x units, C order): an output row is then a sum of
 * broadcast-scaled weight rows, which vectorises along the units without
 * horizontal reductions.  Convolution layout is NCHW, one sample at a time.
 *
 * Every kernel that takes an activation code applies it itself (float32
 * sigmoid vectorised), so a caller never special-cases an activation.
 */
#ifndef FL_KERNELS_PUBLIC_H
#define FL_KERNELS_PUBLIC_H

#include <stddef.h>
#include <stdint.h>

typedef ptrdiff_t fl_idx;

/* Symbols shared between the kernels' translation unit and the extension
 * that links it, but not exported from the shared object: two extensions
 * may each link their own copy. */
#if defined(__GNUC__) && !defined(_WIN32)
#define FL_API __attribute__((visibility("hidden")))
#else
#define FL_API
#endif

enum {
    FL_ACT_NONE = 0,
    FL_ACT_RELU = 1,
    FL_ACT_SIGMOID = 2,
    FL_ACT_TANH = 3,
    FL_ACT_SOFTRELU = 4,
    FL_ACT_SOFTSIGN = 5,
    FL_ACT_GELU = 6,
    FL_ACT_SILU = 7,
    /* min(max(v, 0), 6) (MobileNet's relu6, F.clip(x, 0, 6)); NaN kept */
    FL_ACT_RELU6 = 8
};

/* The kernels of one instruction-set level.  What each computes:
 *
 * dense(n, K, M, x, ldx, wt, b, y, ldy, act)
 *     y[i, m] = act(b[m] + sum_k x[i, k] * wt[k, m]), i < n, m < M, with
 *     register tiles for a few rows (b NULL means no bias).
 * dense_dot(n, K, M, x, ldx, wm, b, y, ldy, act)
 *     the same product from the weight as (M, K) rows, wm[m * K + k] (a
 *     copy, made by pack_rows): dot products along k, for few outputs.
 * pack_rows(K, M, wt, wm)
 *     wm[m * K + k] = wt[k * M + m].
 * bias_act(n, M, y, ldy, b, act)
 *     y[i, :] = act(y[i, :] + b) in place, after a BLAS product.
 * pack(K, M, wt, pk)
 *     copies wt into panels of nr columns:
 *     pk[(p * K + k) * nr + j] = wt[k, p * nr + j] (0 for columns >= M);
 *     pk holds ceil(M / nr) * K * nr values.
 * gemm_packed(n, K, M, x, ldx, pk, p0, p1, b, y, ldy, act)
 *     the dense product on packed weights, output panels [p0, p1) only
 *     (b and y point at whole rows).
 * gemm_ab(M, N, K, a, lda, b, ldb, c, ldc, buf)
 *     c[M x N] = a[M x K] @ b[K x N], both operands changing per call
 *     (convolution: weights @ im2col block); buf holds gemm_ab_buf(K) bytes.
 * act(y, n, act)
 *     an activation in place; relu and float32 sigmoid vectorised.
 * dwconv(x, w, y, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW,
 *        scale, shift, act, buf)
 *     a depthwise convolution of one sample (groups == channels), its
 *     epilogue act(conv * scale[c] + shift[c]) included; buf holds
 *     dwconv_buf(kh, kw, sh, sw, dh, dw, OH, OW) bytes
 *     (depthwise.inc.h states the contract).
 * im2col, chan_epilogue, bn_coeffs, chan_affine, pool2d, layernorm
 *     the convolution's helpers (conv.inc.h states each one's contract).
 *
 * The int8 kernels (qgemm.inc.h states the arithmetic exactly) have a
 * level of their own (q_level: 0 baseline, 3 AVX2, 4 AVX2 with 7-bit
 * weights, 5 AVX-VNNI, 6 AVX-512 VNNI), the best the CPU has at or below
 * the float level (3 or 4 as fl_kernels_q7 chose; 4 by default):
 * qpack(K, M, w, sk, sm, pk, ws, wsum)
 *     per-column int8 weights of w[k * sk + m * sm], packed into panels of
 *     q_nr columns and groups of q_ks values of k, with their scales and
 *     column sums (ceil(M / q_nr) * q_nr each).
 * qrows(n, K, x, ldx, xq, ldq, xs, xz, fscale, fzp)
 *     n float rows to quantized rows of ldq bytes (q_esize bytes a value,
 *     K rounded up to q_ks), each row's scale and zero point; fscale != 0:
 *     that scale and zero point fzp for every row (static).
 * qgemm(n, K, M, xq, ldq, xs, xz, pk, p0, p1, ws, wsum, sh, y, ldy, act)
 *     y[i, m] = act(float(sum_k xq q - xz[i] wsum[m]) * (xs[i] ws[m])
 *     + sh[m]) for the columns of panels [p0, p1).
 * qim2col(xq, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OW, p0, p1, col,
 *         ldq, pad)
 *     a convolution's quantized rows, one per output pixel in [p0, p1).
 * qdotpack(K, M, pk, rw), qdot(n, K, M, xq, ldq, xs, xz, rw, ws, wsum, sh,
 *      y, ldy, act)
 *     qgemm's outputs, all M columns, for 1-2 rows of a layer with few
 *     outputs, on a row copy rw of the packed weights (qdot.inc.h states
 *     the layout: ceil(M / 4) * 4 rows of K rounded up to q_dotk bytes).
 * pack_bf16(K, M, wt, pk), gemm_bf16(n, K, M, x, ldx, pk, p0, p1, b, y,
 *           ldy, act)
 *     bfloat16 weights (dense_bf16.inc.h states the layout): wt holds the
 *     16-bit patterns (K x M); pk its pair panels of nr_bf16 columns,
 *     ceil(M / nr_bf16) * ceil(K / 2) * nr_bf16 words; gemm_bf16 is
 *     gemm_packed's product on them, float32 x, b and y, sums in float32.
 *     gemm_bf16_dot: the same with AVX512-BF16's vdpbf16ps (x rounded to
 *     bfloat16 too), NULL unless the level is AVX-512 and the CPU has it;
 *     gemm_bf16_emu: an emulation of it at AVX2 (tests), NULL elsewhere.
 * pack_bf16_rows(K, M, wt, rw), gemm_bf16_rows(n, K, M, x, ldx, rw, b, y,
 *                ldy, act)
 *     gemm_bf16's product for 1-2 rows of a layer with few outputs, as dot
 *     products along k on a row copy rw of the bfloat16 weights
 *     (dense_bf16_dot.inc.h states the layout: ceil(K / nr_bf16) blocks
 *     of M * nr_bf16 / 2 words).
 * widen_bf16(n, src, dst)
 *     n bfloat16 patterns to float32 (exact).
 */
typedef struct {
    /* dense layers */
    void (*dense_f32)(fl_idx n, fl_idx K, fl_idx M, const float *x,
                      fl_idx ldx, const float *wt, const float *b, float *y,
                      fl_idx ldy, int act);
    void (*dense_f64)(fl_idx n, fl_idx K, fl_idx M, const double *x,
                      fl_idx ldx, const double *wt, const double *b,
                      double *y, fl_idx ldy, int act);
    void (*dense_dot_f32)(fl_idx n, fl_idx K, fl_idx M, const float *x,
                          fl_idx ldx, const float *wm, const float *b,
                          float *y, fl_idx ldy, int act);
    void (*dense_dot_f64)(fl_idx n, fl_idx K, fl_idx M, const double *x,
                          fl_idx ldx, const double *wm, const double *b,
                          double *y, fl_idx ldy, int act);
    void (*pack_rows_f32)(fl_idx K, fl_idx M, const float *wt, float *wm);
    void (*pack_rows_f64)(fl_idx K, fl_idx M, const double *wt, double *wm);
    void (*bias_act_f32)(fl_idx n, fl_idx M, float *y, fl_idx ldy,
                         const float *b, int act);
    void (*bias_act_f64)(fl_idx n, fl_idx M, double *y, fl_idx ldy,
                         const double *b, int act);
    void (*gemm_packed_f32)(fl_idx n, fl_idx K, fl_idx M, const float *x,
                            fl_idx ldx, const float *pk, fl_idx p0,
                            fl_idx p1, const float *b, float *y, fl_idx ldy,
                            int act);
    void (*gemm_packed_f64)(fl_idx n, fl_idx K, fl_idx M, const double *x,
                            fl_idx ldx, const double *pk, fl_idx p0,
                            fl_idx p1, const double *b, double *y,
                            fl_idx ldy, int act);
    void (*pack_f32)(fl_idx K, fl_idx M, const float *wt, float *pk);
    void (*pack_f64)(fl_idx K, fl_idx M, const double *wt, double *pk);
    /* activations */
    void (*act_f32)(float *y, fl_idx n, int act);
    void (*act_f64)(double *y, fl_idx n, int act);
    /* convolution */
    void (*gemm_ab_f32)(fl_idx M, fl_idx N, fl_idx K, const float *a,
                        fl_idx lda, const float *b, fl_idx ldb, float *c,
                        fl_idx ldc, float *buf);
    void (*gemm_ab_f64)(fl_idx M, fl_idx N, fl_idx K, const double *a,
                        fl_idx lda, const double *b, fl_idx ldb, double *c,
                        fl_idx ldc, double *buf);
    size_t (*gemm_ab_buf_f32)(fl_idx K);     /* bytes of gemm_ab's buf */
    size_t (*gemm_ab_buf_f64)(fl_idx K);
    void (*im2col_f32)(const float *x, fl_idx Cg, fl_idx H, fl_idx W,
                       fl_idx kh, fl_idx kw, fl_idx sh, fl_idx sw, fl_idx ph,
                       fl_idx pw, fl_idx dh, fl_idx dw, fl_idx OW,
                       fl_idx oh0, fl_idx oh1, float *col, fl_idx ldc);
    void (*im2col_f64)(const double *x, fl_idx Cg, fl_idx H, fl_idx W,
                       fl_idx kh, fl_idx kw, fl_idx sh, fl_idx sw, fl_idx ph,
                       fl_idx pw, fl_idx dh, fl_idx dw, fl_idx OW,
                       fl_idx oh0, fl_idx oh1, double *col, fl_idx ldc);
    void (*dwconv_f32)(const float *x, const float *w, float *y, fl_idx C,
                       fl_idx H, fl_idx W, fl_idx kh, fl_idx kw, fl_idx sh,
                       fl_idx sw, fl_idx ph, fl_idx pw, fl_idx dh, fl_idx dw,
                       fl_idx OH, fl_idx OW, const float *scale,
                       const float *shift, int act, float *buf);
    void (*dwconv_f64)(const double *x, const double *w, double *y,
                       fl_idx C, fl_idx H, fl_idx W, fl_idx kh, fl_idx kw,
                       fl_idx sh, fl_idx sw, fl_idx ph, fl_idx pw, fl_idx dh,
                       fl_idx dw, fl_idx OH, fl_idx OW, const double *scale,
                       const double *shift, int act, double *buf);
    size_t (*dwconv_buf_f32)(fl_idx kh, fl_idx kw, fl_idx sh, fl_idx sw,
                             fl_idx dh, fl_idx dw, fl_idx OH, fl_idx OW);
    size_t (*dwconv_buf_f64)(fl_idx kh, fl_idx kw, fl_idx sh, fl_idx sw,
                             fl_idx dh, fl_idx dw, fl_idx OH, fl_idx OW);
    void (*chan_epilogue_f32)(fl_idx O, fl_idx N, const float *src,
                              fl_idx lds, float *dst, fl_idx ldd,
                              const float *scale, const float *shift,
                              int act);
    void (*chan_epilogue_f64)(fl_idx O, fl_idx N, const double *src,
                              fl_idx lds, double *dst, fl_idx ldd,
                              const double *scale, const double *shift,
                              int act);
    /* normalization and pooling */
    void (*bn_coeffs_f32)(fl_idx C, const float *gamma, const float *beta,
                          const float *mean, const float *var,
                          const float *bias, double eps, float *scale,
                          float *shift);
    void (*bn_coeffs_f64)(fl_idx C, const double *gamma, const double *beta,
                          const double *mean, const double *var,
                          const double *bias, double eps, double *scale,
                          double *shift);
    void (*chan_affine_f32)(fl_idx outer, fl_idx C, fl_idx inner,
                            const float *x, float *y, const float *scale,
                            const float *shift, int act);
    void (*chan_affine_f64)(fl_idx outer, fl_idx C, fl_idx inner,
                            const double *x, double *y, const double *scale,
                            const double *shift, int act);
    void (*pool2d_f32)(const float *x, float *y, fl_idx C, fl_idx H,
                       fl_idx W, fl_idx kh, fl_idx kw, fl_idx sh, fl_idx sw,
                       fl_idx ph, fl_idx pw, fl_idx OH, fl_idx OW,
                       int is_max, int count_include_pad);
    void (*pool2d_f64)(const double *x, double *y, fl_idx C, fl_idx H,
                       fl_idx W, fl_idx kh, fl_idx kw, fl_idx sh, fl_idx sw,
                       fl_idx ph, fl_idx pw, fl_idx OH, fl_idx OW,
                       int is_max, int count_include_pad);
    void (*layernorm_f32)(fl_idx outer, fl_idx C, fl_idx inner,
                          const float *x, float *y, const float *gamma,
                          const float *beta, double eps, double *acc);
    void (*layernorm_f64)(fl_idx outer, fl_idx C, fl_idx inner,
                          const double *x, double *y, const double *gamma,
                          const double *beta, double eps, double *acc);
    /* int8 (kernels/qgemm.inc.h) */
    void (*qpack)(fl_idx K, fl_idx M, const float *w, fl_idx sk, fl_idx sm,
                  signed char *pk, float *ws, int *wsum);
    void (*qrows)(fl_idx n, fl_idx K, const float *x, fl_idx ldx,
                  unsigned char *xq, fl_idx ldq, float *xs, int *xz,
                  float fscale, int fzp);
    void (*qgemm)(fl_idx n, fl_idx K, fl_idx M, const unsigned char *xq,
                  fl_idx ldq, const float *xs, const int *xz,
                  const signed char *pk, fl_idx p0, fl_idx p1,
                  const float *ws, const int *wsum, const float *sh,
                  float *y, fl_idx ldy, int act);
    void (*qim2col)(const unsigned char *xq, fl_idx C, fl_idx H, fl_idx W,
                    fl_idx kh, fl_idx kw, fl_idx sh, fl_idx sw, fl_idx ph,
                    fl_idx pw, fl_idx dh, fl_idx dw, fl_idx OW, fl_idx p0,
                    fl_idx p1, unsigned char *col, fl_idx ldq, int pad);
    void (*qdotpack)(fl_idx K, fl_idx M, const signed char *pk,
                     signed char *rw);
    void (*qdot)(fl_idx n, fl_idx K, fl_idx M, const unsigned char *xq,
                 fl_idx ldq, const float *xs, const int *xz,
                 const signed char *rw, const float *ws, const int *wsum,
                 const float *sh, float *y, fl_idx ldy, int act);
    int q_dotk;          /* k values per vector of the dot kernel */
    int q_nr;            /* int8 panel width (output columns) */
    int q_ks;            /* k values per dot-product group */
    int q_esize;         /* bytes per quantized activation */
    int q_mr;            /* rows per register tile */
    int q_level;         /* 0, 3 AVX2, 4 AVX2 7-bit weights, 5 AVX-VNNI,
                            6 AVX-512 VNNI */
    int q_wmax;          /* largest int8 weight magnitude: 127 or 63 */
    const char *q_isa;   /* its name */
    /* bfloat16 weights */
    void (*pack_bf16)(fl_idx K, fl_idx M, const uint16_t *wt, uint32_t *pk);
    void (*gemm_bf16)(fl_idx n, fl_idx K, fl_idx M, const float *x,
                      fl_idx ldx, const uint32_t *pk, fl_idx p0, fl_idx p1,
                      const float *b, float *y, fl_idx ldy, int act);
    void (*gemm_bf16_dot)(fl_idx n, fl_idx K, fl_idx M, const float *x,
                          fl_idx ldx, const uint32_t *pk, fl_idx p0,
                          fl_idx p1, const float *b, float *y, fl_idx ldy,
                          int act);
    void (*gemm_bf16_emu)(fl_idx n, fl_idx K, fl_idx M, const float *x,
                          fl_idx ldx, const uint32_t *pk, fl_idx p0,
                          fl_idx p1, const float *b, float *y, fl_idx ldy,
                          int act);
    void (*pack_bf16_rows)(fl_idx K, fl_idx M, const uint16_t *wt,
                           uint32_t *rw);
    void (*gemm_bf16_rows)(fl_idx n, fl_idx K, fl_idx M, const float *x,
                           fl_idx ldx, const uint32_t *rw, const float *b,
                           float *y, fl_idx ldy, int act);
    void (*widen_bf16)(fl_idx n, const uint16_t *src, float *dst);
    int nr_bf16;         /* panel width of the bfloat16 pair panels */
    /* the level's tile, from its descriptor (kernels/isa_*.h) */
    int nr_f32;          /* panel width of the packed layout, float32 */
    int nr_f64;
    int mr;              /* rows per register tile of the packed kernel */
    int level;           /* 0 baseline, 3 AVX2+FMA, 4 AVX-512 */
    const char *isa;     /* its name */
} fl_kernel_table;

FL_API extern fl_kernel_table fl_kt;

/* Fill fl_kt for a level: -1 the best the CPU supports, 0 baseline, 3
 * AVX2+FMA, 4 AVX-512 (a level the CPU lacks falls back to the best it
 * has).  Returns the level in use.  Call once before any kernel, and never
 * while a kernel runs. */
FL_API int fl_kernels_init(int level);
FL_API const char *fl_kernels_isa(void);
/* The int8 level the CPU could run at best (what set_isa(None) picks). */
FL_API int fl_kernels_qbest(void);
/* On a CPU without VNNI: 1 for the AVX2 level of 7-bit weights (the
 * default), 0 for the exact one; then call fl_kernels_init again. */
FL_API void fl_kernels_q7(int on);

/* ------------------------------------------------------------------ */
#endif /* FL_KERNELS_PUBLIC_H */
