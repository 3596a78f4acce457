/*
 * dense_bf16.inc.h -- the dense product on bfloat16 weights, for the
 * float32 instance of one level:
 *
 *     y[i, m] = act(b[m] + sum_k x[i, k] * wt[k, m])
 *
 * with x, b and y float32 and the weights bfloat16 (the activations between
 * layers stay float32), every product summed in float32.
 *
 * Packed layout.  The weights are copied once (pack_bf16) into panels of
 * NR columns (two vectors, as in the float32 packed layout), each panel a
 * run of KP = ceil(K / 2) rows of NR 32-bit words; word j of row q holds
 * the weights of rows 2q (low half) and 2q + 1 (high half) of column j:
 *
 *     pk[(p * KP + q) * NR + j] =
 *         bf16(wt[2q, p*NR + j]) | bf16(wt[2q + 1, p*NR + j]) << 16
 *
 * (0 past K and past M).  This is the pair layout of AVX512-BF16's
 * vdpbf16ps, and without that instruction a word splits into two float32
 * vectors with two integer operations and no shuffle: lo = word << 16 is
 * row 2q, hi = word & 0xffff0000 is row 2q + 1, exactly.  The float32 FMAs
 * then see the bfloat16 weights as they are, and the only roundings are
 * the weights' own and the float32 sums'.  A panel row is 2 * VBYTES
 * bytes: one cache line at AVX2, half the float32 panel's bytes.
 *
 * Tiles.  R <= MR rows x one panel, MR x 2 accumulators, as the float32
 * packed kernel (gemm_packed.inc.h: its pair, pk_fma and pk_store are
 * used here); one or two rows -- a matrix-vector product, bound by memory
 * bandwidth -- keep separate sums for the low and high rows of each pair
 * (and one row two pairs at a time) so that the FMA latency never limits
 * the stream.  The tile bodies for many rows are in bf16_tile.inc.h,
 * included below once with the conversion (every level) and, on AVX-512,
 * once more with vdpbf16ps (and at AVX2 with an emulation of it, so that
 * everything but that one instruction is tested on CPUs without it).
 */

#ifndef FL_BF16_SHARED
#define FL_BF16_SHARED
#include <stdint.h>
#include "bf16_convert.h"

/* Copy wt (K x M bfloat16 patterns, C order) into the pair panels of
 * width nr: ceil(M / nr) * ceil(K / 2) * nr words.  Plain C: no level
 * needs more for a copy done once per weight. */
static void fl_pack_bf16(fl_idx K, fl_idx M, fl_idx nr, const uint16_t *wt,
                         uint32_t *pk)
{
    const fl_idx np = (M + nr - 1) / nr, KP = (K + 1) / 2;
    fl_idx p, q, j;
    for (p = 0; p < np; p++) {
        const fl_idx m0 = p * nr, nc = M - m0 < nr ? M - m0 : nr;
        uint32_t *dst = pk + p * KP * nr;
        for (q = 0; q < KP; q++, dst += nr) {
            const uint16_t *r0 = wt + 2 * q * M + m0;
            const uint16_t *r1 = 2 * q + 1 < K ? r0 + M : NULL;
            for (j = 0; j < nc; j++)
                dst[j] = (uint32_t)r0[j]
                         | (r1 ? (uint32_t)r1[j] << 16 : 0u);
            for (; j < nr; j++) dst[j] = 0;
        }
    }
}

/* n bfloat16 patterns to float32 (the convolution's copy of its weights) */
static void fl_widen_bf16(fl_idx n, const uint16_t *src, float *dst)
{
    fl_bf16_widen_f32((size_t)n, src, dst);
}
#endif

#if !FL_DOUBLE

#define BPAIR FL_FN(pair)

/* 32-bit unsigned lanes: the pair words */
typedef uint32_t FL_FN(uvec) __attribute__((vector_size(FL_VBYTES)));
#define VU FL_FN(uvec)

FL_HELPER VU FL_FN(loadi)(const uint32_t *p)
{
    VU v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* the float32 weights of row 2q (lo) and row 2q + 1 (hi) in a pair word */
FL_HELPER V FL_FN(bf_lo)(VU w)
{
    return (V)(w << 16);
}

FL_HELPER V FL_FN(bf_hi)(VU w)
{
    return (V)(w & 0xffff0000u);
}

#define LOADI(p) FL_FN(loadi)(p)
#define BF_LO(w) FL_FN(bf_lo)(w)
#define BF_HI(w) FL_FN(bf_hi)(w)

#ifndef FL_BF_PF_BYTES
/* bytes of panel ahead of the current row to prefetch, as the float32
 * packed kernel does (FL_PF_BYTES) */
#define FL_BF_PF_BYTES 1024
#endif

FL_HELPER void FL_FN(bf_prefetch)(const uint32_t *w)
{
    __builtin_prefetch((const char *)w + FL_BF_PF_BYTES, 0, 3);
    if (NR * 4 > 64)            /* a panel row spans two lines */
        __builtin_prefetch((const char *)w + FL_BF_PF_BYTES + 64, 0, 3);
}

/* One or two rows x one panel bp, split sums (see the top).  bq: the
 * panel's NR bias values or NULL; all NR columns of y are written.  PF:
 * the panel streams from memory (prefetch ahead, one row reads the two
 * halves at once); 0: it is in cache (a small layer), where those cost
 * more instructions than they save -- one row then takes two pair rows a
 * step, into separate sums. */
FL_HELPER void FL_FN(bfs_tile)(const int R, const int PF, fl_idx K,
                               const float *x, fl_idx ldx,
                               const uint32_t *bp, const float *bq,
                               float *y, fl_idx ldy, int act)
{
    BPAIR c0 = {0}, d0 = {0}, e0 = {0}, f0 = {0}, c1 = {0}, d1 = {0};
    const fl_idx KF = K / 2;
    fl_idx q = 0;
    if (R == 1 && !PF) {
        for (; q + 2 <= KF; q += 2) {
            const uint32_t *w = bp + q * NR;
            const float *xk = x + 2 * q;
            VU a0 = LOADI(w), a1 = LOADI(w + L);
            VU a2 = LOADI(w + NR), a3 = LOADI(w + NR + L);
            FL_FN(pk_fma)(&c0, xk[0], BF_LO(a0), BF_LO(a1));
            FL_FN(pk_fma)(&d0, xk[1], BF_HI(a0), BF_HI(a1));
            FL_FN(pk_fma)(&e0, xk[2], BF_LO(a2), BF_LO(a3));
            FL_FN(pk_fma)(&f0, xk[3], BF_HI(a2), BF_HI(a3));
        }
    }
    if (R == 1 && PF) {
        /* the two halves of the panel at once: two sequential streams
         * (one stream read 19 GB/s from DRAM here, two 24) */
        const fl_idx h = KF / 2;
        for (; q < h; q++) {
            const uint32_t *w = bp + q * NR, *w2 = w + h * NR;
            const float *xk = x + 2 * q, *xk2 = xk + 2 * h;
            VU a0, a1, a2, a3;
            FL_FN(bf_prefetch)(w);
            FL_FN(bf_prefetch)(w2);
            a0 = LOADI(w);
            a1 = LOADI(w + L);
            a2 = LOADI(w2);
            a3 = LOADI(w2 + L);
            FL_FN(pk_fma)(&c0, xk[0], BF_LO(a0), BF_LO(a1));
            FL_FN(pk_fma)(&d0, xk[1], BF_HI(a0), BF_HI(a1));
            FL_FN(pk_fma)(&e0, xk2[0], BF_LO(a2), BF_LO(a3));
            FL_FN(pk_fma)(&f0, xk2[1], BF_HI(a2), BF_HI(a3));
        }
        q = 2 * h;
    }
    for (; q < KF; q++) {
        const uint32_t *w = bp + q * NR;
        const float *xk = x + 2 * q;
        VU a0, a1;
        V lo0, lo1, hi0, hi1;
        if (PF) FL_FN(bf_prefetch)(w);
        a0 = LOADI(w);
        a1 = LOADI(w + L);
        lo0 = BF_LO(a0);
        lo1 = BF_LO(a1);
        hi0 = BF_HI(a0);
        hi1 = BF_HI(a1);
        if (R > 0) {
            FL_FN(pk_fma)(&c0, xk[0], lo0, lo1);
            FL_FN(pk_fma)(&d0, xk[1], hi0, hi1);
        }
        if (R > 1) {
            FL_FN(pk_fma)(&c1, xk[ldx], lo0, lo1);
            FL_FN(pk_fma)(&d1, xk[ldx + 1], hi0, hi1);
        }
    }
    if (K & 1) {                /* the last row pairs with zeros */
        const uint32_t *w = bp + KF * NR;
        V lo0 = BF_LO(LOADI(w)), lo1 = BF_LO(LOADI(w + L));
        if (R > 0) FL_FN(pk_fma)(&c0, x[K - 1], lo0, lo1);
        if (R > 1) FL_FN(pk_fma)(&c1, x[ldx + K - 1], lo0, lo1);
    }
    c0.lo = (c0.lo + d0.lo) + (e0.lo + f0.lo);
    c0.hi = (c0.hi + d0.hi) + (e0.hi + f0.hi);
    c1.lo += d1.lo;
    c1.hi += d1.hi;
    if (R > 0) FL_FN(pk_store)(&c0, y, bq, act);
    if (R > 1) FL_FN(pk_store)(&c1, y + ldy, bq, act);
}

FL_KERNEL void FL_FN(bfs1)(fl_idx K, const float *x, fl_idx ldx,
                           const uint32_t *bp, const float *bq, float *y,
                           fl_idx ldy, int act)
{
    FL_FN(bfs_tile)(1, 1, K, x, ldx, bp, bq, y, ldy, act);
}

FL_KERNEL void FL_FN(bfs2)(fl_idx K, const float *x, fl_idx ldx,
                           const uint32_t *bp, const float *bq, float *y,
                           fl_idx ldy, int act)
{
    FL_FN(bfs_tile)(2, 1, K, x, ldx, bp, bq, y, ldy, act);
}

/* Panels [p0, p1) for one or two rows of a layer whose pair panels fit in
 * cache (at most FL_BF_CACHED bytes): the tiles without prefetch, every
 * panel in this one call (gemm_bf16 calls here for n <= 2). */
#ifndef FL_BF_CACHED
#define FL_BF_CACHED ((fl_idx)1 << 17)
#endif
FL_KERNEL void FL_FN(bfs_cached)(fl_idx n, fl_idx K, fl_idx M,
                                 const float *x, fl_idx ldx,
                                 const uint32_t *pk, fl_idx p0, fl_idx p1,
                                 const float *b, float *y, fl_idx ldy,
                                 int act)
{
    const fl_idx KP = (K + 1) / 2;
    float t[2 * NR], bpad[NR];
    fl_idx p, r;
    for (p = p0; p < p1; p++) {
        const uint32_t *bp = pk + p * KP * NR;
        const fl_idx m0 = p * NR, nc = M - m0 < NR ? M - m0 : NR;
        const float *bq = b ? b + m0 : NULL;
        float *yt = y + m0;
        fl_idx ldt = ldy;
        if (nc < NR) {
            if (bq) {
                memset(bpad, 0, sizeof bpad);
                memcpy(bpad, bq, (size_t)nc * sizeof(float));
                bq = bpad;
            }
            yt = t;
            ldt = NR;
        }
        if (n == 1)
            FL_FN(bfs_tile)(1, 0, K, x, ldx, bp, bq, yt, ldt, act);
        else
            FL_FN(bfs_tile)(2, 0, K, x, ldx, bp, bq, yt, ldt, act);
        if (yt == t)
            for (r = 0; r < n; r++)
                memcpy(y + r * ldy + m0, t + r * NR,
                       (size_t)nc * sizeof(float));
    }
}

/* Pairs of x for the dot-product tiles: xb[r * FL_BF_KB + q] = bf16(x[r,
 * 2q]) | bf16(x[r, 2q + 1]) << 16 for r < R, q < nq, with the values past
 * kvalid (x's row end) 0. */
#define FL_BF_KB 128
FL_HELPER void FL_FN(bf_pairs)(fl_idx R, const float *x, fl_idx ldx,
                               fl_idx kvalid, fl_idx nq, uint32_t *xb)
{
    fl_idx r, q;
    for (r = 0; r < R; r++) {
        const float *xr = x + r * ldx;
        uint32_t *dst = xb + r * FL_BF_KB;
        if (2 * nq <= kvalid) {
            for (q = 0; q < nq; q++)
                dst[q] = (uint32_t)fl_bf16_from_f32(xr[2 * q])
                         | (uint32_t)fl_bf16_from_f32(xr[2 * q + 1]) << 16;
        } else {
            for (q = 0; q < nq; q++)
                dst[q] = (2 * q < kvalid
                          ? (uint32_t)fl_bf16_from_f32(xr[2 * q]) : 0u)
                         | (2 * q + 1 < kvalid
                            ? (uint32_t)fl_bf16_from_f32(xr[2 * q + 1]) << 16
                            : 0u);
        }
    }
}

/* The tiles of many rows and the product's driver, by each way of
 * multiplying a pair word */
#define FL_BF_DOT 0
#include "bf16_tile.inc.h"
#undef FL_BF_DOT
#if FL_ISA_LEVEL == 4 && FL_X86
#define FL_BF_DOT 1
#include "bf16_tile.inc.h"
#undef FL_BF_DOT
#endif
#if FL_ISA_LEVEL == 3
#define FL_BF_DOT 2
#include "bf16_tile.inc.h"
#undef FL_BF_DOT
#endif

/* one or two rows through few outputs, on a row copy of the weights */
#include "dense_bf16_dot.inc.h"

/* the packing, at this level's panel width */
static void FL_FN(pack_bf16)(fl_idx K, fl_idx M, const uint16_t *wt,
                             uint32_t *pk)
{
    fl_pack_bf16(K, M, NR, wt, pk);
}

#undef LOADI
#undef BF_LO
#undef BF_HI
#undef BPAIR
#undef VU
#endif /* !FL_DOUBLE */
