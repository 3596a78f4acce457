/*
 * qdot.inc.h -- the int8 dot kernel of one level: one or two rows through
 * a layer with few outputs (fewer than a panel), over a copy of the int8
 * weights as rows of k, made once per weight version beside the panels.
 *
 * Included by qgemm.inc.h (it uses that file's vector types, helpers and
 * epilogue); the arithmetic is the one qgemm.inc.h states: the same int8
 * weights q[k, m], the same quantized rows, the same exact int32 sums
 * (added in another order: integers, so the same values) and the same
 * epilogue code (qstore), so the outputs equal the panel kernel's bit for
 * bit.
 *
 * Layout: QDK = QL * KS values of k per vector step;
 *     rw[m * KR + k] = q[k, m]  for m < ceil(M / 4) * 4, k < KR
 * with KR = ceil(K / QDK) * QDK and zeros past K and past M.  A quantized
 * row is read for KR * ESIZE bytes: its ldq (whole 64 bytes) always holds
 * them; the levels past its groups meet zero weights.
 *
 * A level gives the lane-wise dot product of its vectors of activations
 * and weights (qgemm_instance.inc.h):
 *   FLQ_DOTV(acc, xp, wp)  acc + per-lane dot of the KS activations at xp
 *                          (VBYTES bytes) with the KS int8 weights at wp
 *                          (QL * KS bytes)
 */

#define QDK (QL * QKS)

#ifndef FLQ_DOTV
/* portable: lanes of 4 u8 activations times 4 int8 weights */
FLQ_HELPER QVI FLQ_FN(dotv_generic)(QVI acc, const unsigned char *xp,
                                    const signed char *wp)
{
    QVI x = FLQ_FN(ldi)(xp), w = FLQ_FN(ldi)(wp);
    int t;
    for (t = 0; t < 4; t++)
        acc += ((x >> (8 * t)) & 255) * ((w << (24 - 8 * t)) >> 24);
    return acc;
}
#define FLQ_DOTV(acc, xp, wp) FLQ_FN(dotv_generic)(acc, xp, wp)
#endif

typedef int FLQ_FN(v4i) __attribute__((vector_size(16)));

/* the 4 lanes of a's sum after folding halves (QL / 4 lanes each) */
FLQ_HELPER FLQ_FN(v4i) FLQ_FN(fold4)(QVI a)
{
#if FLQ_VBYTES == 16
    return a;
#elif FLQ_VBYTES == 32
    return __builtin_shufflevector(a, a, 0, 1, 2, 3)
        + __builtin_shufflevector(a, a, 4, 5, 6, 7);
#else
    FLQ_FN(v4i) lo = __builtin_shufflevector(a, a, 0, 1, 2, 3)
        + __builtin_shufflevector(a, a, 4, 5, 6, 7);
    FLQ_FN(v4i) hi = __builtin_shufflevector(a, a, 8, 9, 10, 11)
        + __builtin_shufflevector(a, a, 12, 13, 14, 15);
    return lo + hi;
#endif
}

/* (sum a, sum b, sum c, sum d) */
FLQ_HELPER FLQ_FN(v4i) FLQ_FN(hsum4)(QVI a, QVI b, QVI c, QVI d)
{
    FLQ_FN(v4i) A = FLQ_FN(fold4)(a), B = FLQ_FN(fold4)(b);
    FLQ_FN(v4i) C = FLQ_FN(fold4)(c), D = FLQ_FN(fold4)(d);
    FLQ_FN(v4i) u = __builtin_shufflevector(A, B, 0, 4, 1, 5)
        + __builtin_shufflevector(A, B, 2, 6, 3, 7);
    FLQ_FN(v4i) w = __builtin_shufflevector(C, D, 0, 4, 1, 5)
        + __builtin_shufflevector(C, D, 2, 6, 3, 7);
    /* u = (a0 + a2, b0 + b2, a1 + a3, b1 + b3), w the same of c, d */
    return __builtin_shufflevector(u, w, 0, 1, 4, 5)
        + __builtin_shufflevector(u, w, 2, 3, 6, 7);
}

/* Row copy of the packed weights (pk as qpack leaves it). */
FLQ_KERNEL void FLQ_FN(qdotpack)(fl_idx K, fl_idx M, const signed char *pk,
                                 signed char *rw)
{
    const fl_idx KG = (K + QKS - 1) / QKS, KR = (K + QDK - 1) / QDK * QDK;
    const fl_idx M4 = (M + 3) / 4 * 4;
    fl_idx m, k;
    memset(rw, 0, (size_t)(M4 * KR));
    for (m = 0; m < M; m++) {
        const fl_idx p = m / QNR, j = m % QNR;
        for (k = 0; k < K; k++)
            rw[m * KR + k] =
                pk[((p * KG + k / QKS) * QNR + j) * QKS + k % QKS];
    }
}

/* R (1 or 2) rows x columns [m0, m0 + 4): the four int32 sums per row */
FLQ_HELPER void FLQ_FN(qdot4)(const int R, fl_idx KR,
                              const unsigned char *x0,
                              const unsigned char *x1,
                              const signed char *w, int *s0, int *s1)
{
    QVI a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    QVI b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};
    fl_idx k;
    for (k = 0; k < KR; k += QDK) {
        const unsigned char *xp0 = x0 + k * FLQ_ESIZE;
        const unsigned char *xp1 = x1 + k * FLQ_ESIZE;
        const signed char *wp = w + k;
        a0 = FLQ_DOTV(a0, xp0, wp);
        a1 = FLQ_DOTV(a1, xp0, wp + KR);
        a2 = FLQ_DOTV(a2, xp0, wp + 2 * KR);
        a3 = FLQ_DOTV(a3, xp0, wp + 3 * KR);
        if (R > 1) {
            b0 = FLQ_DOTV(b0, xp1, wp);
            b1 = FLQ_DOTV(b1, xp1, wp + KR);
            b2 = FLQ_DOTV(b2, xp1, wp + 2 * KR);
            b3 = FLQ_DOTV(b3, xp1, wp + 3 * KR);
        }
    }
    {
        FLQ_FN(v4i) s = FLQ_FN(hsum4)(a0, a1, a2, a3);
        memcpy(s0, &s, sizeof s);
    }
    if (R > 1) {
        FLQ_FN(v4i) s = FLQ_FN(hsum4)(b0, b1, b2, b3);
        memcpy(s1, &s, sizeof s);
    }
}

/* R rows through all M columns, one block of a panel's width at a time;
 * the epilogue is the panel kernel's (qstore) */
FLQ_HELPER void FLQ_FN(qdot_rows)(const int R, fl_idx K, fl_idx M,
                                  const unsigned char *xq, fl_idx ldq,
                                  const float *xs, const int *xz,
                                  const signed char *rw, const float *ws,
                                  const int *wsum, const float *sh, float *y,
                                  fl_idx ldy, int act)
{
    const fl_idx KR = (K + QDK - 1) / QDK * QDK, M4 = (M + 3) / 4 * 4;
    int s[2][QNR];
    float shpad[QNR], t[QNR];
    fl_idx m0, m, r;
    for (m0 = 0; m0 < M; m0 += QNR) {
        const fl_idx nc = M - m0 < QNR ? M - m0 : QNR;
        const fl_idx me = m0 + QNR < M4 ? m0 + QNR : M4;
        const float *shp = sh ? sh + m0 : NULL;
        for (m = m0; m < me; m += 4)
            FLQ_FN(qdot4)(R, KR, xq, xq + ldq, rw + m * KR, &s[0][m - m0],
                          &s[1][m - m0]);
        if (shp && nc < QNR) {
            memset(shpad, 0, sizeof shpad);
            memcpy(shpad, shp, (size_t)nc * sizeof(float));
            shp = shpad;
        }
        for (r = 0; r < R; r++) {
            QACC c;
            memset(s[r] + (me - m0), 0, (size_t)(QNR - (me - m0)) * sizeof(int));
            c.lo = FLQ_FN(ldi)(s[r]);
            c.hi = FLQ_FN(ldi)(s[r] + QL);
            if (nc == QNR) {
                FLQ_FN(qstore)(&c, y + r * ldy + m0, xs[r], xz[r], ws + m0,
                               wsum + m0, shp, act);
            } else {
                FLQ_FN(qstore)(&c, t, xs[r], xz[r], ws + m0, wsum + m0, shp,
                               act);
                memcpy(y + r * ldy + m0, t, (size_t)nc * sizeof(float));
            }
        }
    }
}

FLQ_KERNEL void FLQ_FN(qdotr1)(fl_idx K, fl_idx M, const unsigned char *xq,
                              fl_idx ldq, const float *xs, const int *xz,
                              const signed char *rw, const float *ws,
                              const int *wsum, const float *sh, float *y,
                              fl_idx ldy, int act)
{
    FLQ_FN(qdot_rows)(1, K, M, xq, ldq, xs, xz, rw, ws, wsum, sh, y, ldy,
                      act);
}

FLQ_KERNEL void FLQ_FN(qdotr2)(fl_idx K, fl_idx M, const unsigned char *xq,
                              fl_idx ldq, const float *xs, const int *xz,
                              const signed char *rw, const float *ws,
                              const int *wsum, const float *sh, float *y,
                              fl_idx ldy, int act)
{
    FLQ_FN(qdot_rows)(2, K, M, xq, ldq, xs, xz, rw, ws, wsum, sh, y, ldy,
                      act);
}

/* n quantized rows (ldq bytes apart) through all M output columns on the
 * row copy rw (qdotpack); ws and wsum padded to whole panels, sh (M,) or
 * NULL, y with ldy floats per row.  Meant for 1-2 rows; more run in
 * pairs. */
FLQ_KERNEL void FLQ_FN(qdot)(fl_idx n, fl_idx K, fl_idx M,
                             const unsigned char *xq, fl_idx ldq,
                             const float *xs, const int *xz,
                             const signed char *rw, const float *ws,
                             const int *wsum, const float *sh, float *y,
                             fl_idx ldy, int act)
{
    const int tile_act = act == FL_ACT_RELU || act == FL_ACT_RELU6
        ? act : FL_ACT_NONE;
    fl_idx i;
    for (i = 0; i + 2 <= n; i += 2)
        FLQ_FN(qdotr2)(K, M, xq + i * ldq, ldq, xs + i, xz + i, rw, ws, wsum,
                      sh, y + i * ldy, ldy, tile_act);
    if (i < n)
        FLQ_FN(qdotr1)(K, M, xq + i * ldq, ldq, xs + i, xz + i, rw, ws, wsum,
                      sh, y + i * ldy, ldy, tile_act);
    if (act != tile_act)
        for (i = 0; i < n; i++) FLQ_ACT_F32(y + i * ldy, M, act);
}

#undef QDK
