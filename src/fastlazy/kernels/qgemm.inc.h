/*
 * qgemm.inc.h -- the int8 kernels of one level (see qgemm_instance.inc.h
 * for the descriptor this body is compiled against).
 *
 * The arithmetic, exactly (the NumPy reference in tests/test_quantize.py
 * computes the same):
 *
 * Weights, per output column m (symmetric, one scale per column):
 *     ws[m] = max_k |w[k, m]| / WMAX     (0 for a column of zeros)
 *     q[k, m] = rint(w[k, m] / ws[m])    in [-WMAX, WMAX] (0 when ws is 0)
 * with WMAX = 127 (63 at the AVX2 level of 7-bit weights)
 *     wsum[m] = sum_k q[k, m]
 * packed once into panels of NR = 2 vectors of columns and groups of KS
 * values of k (zeros past K and past M):
 *     pk[((p * KG + g) * NR + j) * KS + t] = q[g * KS + t, p * NR + j]
 *
 * Activations, per row (asymmetric uint8; 'dynamic') -- or with a fixed
 * scale and zero point ('static'):
 *     lo = min(0, min_k x[k]), hi = max(0, max_k x[k])
 *     xs = (hi - lo) / 255  (1 when hi == lo), inv = 1 / xs
 *     zp = rint(-lo / xs)   clamped to [0, 255]
 *     u[k] = clamp(rint(clamp(x[k] * inv, -512, 512)) + zp, 0, 255)
 * stored as u (1-byte levels, zp kept beside the row) or as the int16
 * u - zp (2-byte levels, zp reported 0).  A row holding NaN or +-inf (or
 * values so far apart that hi - lo overflows float32), or a static scale
 * that is not a positive finite number, gets xs = NaN: its outputs are
 * NaN, never a number made of clamped garbage.
 *
 * Output (int32 sums, exact for K below 2^31 / (255 * 127) = 66,000):
 *     acc[i, m] = sum_k u[i, k] q[k, m] - zp[i] * wsum[m]
 *     y[i, m] = act(float(acc) * (xs[i] * ws[m]) + shift[m])
 * with ws and shift per column (the caller folds a BatchNorm into them).
 * relu and relu6 are applied in registers, other activations over the
 * stored row.
 */

typedef int FLQ_FN(vi) __attribute__((vector_size(FLQ_VBYTES)));
typedef float FLQ_FN(vf) __attribute__((vector_size(FLQ_VBYTES)));
typedef unsigned char FLQ_FN(vb) __attribute__((vector_size(FLQ_VBYTES / 4)));
typedef short FLQ_FN(vs) __attribute__((vector_size(FLQ_VBYTES / 2)));
#define QVI FLQ_FN(vi)                /* int32 lanes */
#define QVF FLQ_FN(vf)                /* float lanes */
#define QVB FLQ_FN(vb)                /* as many u8 lanes */
#define QVS FLQ_FN(vs)                /* as many int16 lanes */
#define QL (FLQ_VBYTES / 4)          /* int32 / float lanes */
#define QNR (2 * QL)                 /* panel width */
#define QKS FLQ_KS
#define QMR FLQ_MR

#ifndef FLQ_WV
/* The generic dot product: lanes of 4 int8 weights, each byte pulled out
 * by two shifts, times the 4 activation bytes. */
#define FLQ_WV QVI
#define FLQ_WPREP(p) FLQ_FN(ldi)(p)
#define FLQ_DOT(acc, xg, wv) FLQ_FN(dot_generic)(acc, xg, wv)
#endif

FLQ_HELPER QVI FLQ_FN(ldi)(const void *p)
{
    QVI v;
    memcpy(&v, p, sizeof v);
    return v;
}

FLQ_HELPER QVF FLQ_FN(ldf)(const float *p)
{
    QVF v;
    memcpy(&v, p, sizeof v);
    return v;
}

FLQ_HELPER void FLQ_FN(stf)(float *p, QVF v)
{
    memcpy(p, &v, sizeof v);
}

/* m ? a : b, lane by lane (m: all ones or zeros); C has no vector ?: */
FLQ_HELPER QVF FLQ_FN(self)(QVI m, QVF a, QVF b)
{
    return (QVF)(((QVI)a & m) | ((QVI)b & ~m));
}

FLQ_HELPER QVI FLQ_FN(seli)(QVI m, QVI a, QVI b)
{
    return (a & m) | (b & ~m);
}

/* the low byte (low int16) of each int32 lane, in lane order: a byte
 * shuffle (a plain conversion became one extract per lane) */
typedef unsigned char FLQ_FN(vbb) __attribute__((vector_size(FLQ_VBYTES)));
typedef short FLQ_FN(vss) __attribute__((vector_size(FLQ_VBYTES)));
#if FLQ_VBYTES == 16
#define FLQ_LOW8(b) __builtin_shufflevector(b, b, 0, 4, 8, 12)
#define FLQ_LOW16(h) __builtin_shufflevector(h, h, 0, 2, 4, 6)
#elif FLQ_VBYTES == 32
#define FLQ_LOW8(b) __builtin_shufflevector(b, b, 0, 4, 8, 12, 16, 20, 24, 28)
#define FLQ_LOW16(h) __builtin_shufflevector(h, h, 0, 2, 4, 6, 8, 10, 12, 14)
#else
#define FLQ_LOW8(b) __builtin_shufflevector(b, b, 0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60)
#define FLQ_LOW16(h) __builtin_shufflevector(h, h, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)
#endif

FLQ_HELPER QVB FLQ_FN(low8)(QVI v)
{
    FLQ_FN(vbb) b = (FLQ_FN(vbb))v;
    return FLQ_LOW8(b);
}

FLQ_HELPER QVS FLQ_FN(low16)(QVI v)
{
    FLQ_FN(vss) h = (FLQ_FN(vss))v;
    return FLQ_LOW16(h);
}

FLQ_HELPER unsigned FLQ_FN(ld32)(const unsigned char *p)
{
    unsigned v;
    memcpy(&v, p, 4);
    return v;
}

FLQ_HELPER QVI FLQ_FN(dot_generic)(QVI acc, unsigned xg, QVI w)
{
    int t;
    for (t = 0; t < 4; t++) {
        QVI wt = (w << (24 - 8 * t)) >> 24;
        acc += (int)((xg >> (8 * t)) & 255u) * wt;
    }
    return acc;
}

/* ------------------------------------------------------------------ */
/* Weights: quantize per column and pack (once per weight version). */

/* w[k * sk + m * sm] for k < K, m < M (a Dense weight stored transposed:
 * sk = M, sm = 1; a convolution's (O, C, kh, kw): sk = 1, sm = C*kh*kw).
 * pk holds ceil(M / NR) * ceil(K / KS) * NR * KS bytes; ws and wsum
 * ceil(M / NR) * NR values (0 past M). */
FLQ_KERNEL void FLQ_FN(qpack)(fl_idx K, fl_idx M, const float *w, fl_idx sk,
                              fl_idx sm, signed char *pk, float *ws,
                              int *wsum)
{
    const fl_idx np = (M + QNR - 1) / QNR, KG = (K + QKS - 1) / QKS;
    fl_idx k, m, p, g, j, t;
    for (m = 0; m < np * QNR; m++) {
        ws[m] = 0.0f;
        wsum[m] = 0;
    }
    /* the largest magnitude per column; a NaN or an infinity marks the
     * column with +inf (fl.quantize refuses such weights; written later,
     * they make that column's outputs NaN) */
    if (sm == 1) {                      /* rows of k contiguous in m */
        for (k = 0; k < K; k++)
            for (m = 0; m < M; m++) {
                float a = fabsf(w[k * sk + m]);
                if (!(a <= FLT_MAX)) a = INFINITY;
                if (a > ws[m]) ws[m] = a;
            }
    } else {
        for (m = 0; m < M; m++)
            for (k = 0; k < K; k++) {
                float a = fabsf(w[k * sk + m * sm]);
                if (!(a <= FLT_MAX)) a = INFINITY;
                if (a > ws[m]) ws[m] = a;
            }
    }
    for (m = 0; m < M; m++)
        ws[m] = ws[m] == INFINITY ? NAN : ws[m] / (float)FLQ_WMAX;
    for (p = 0; p < np; p++)
        for (g = 0; g < KG; g++) {
            signed char *dst = pk + (p * KG + g) * QNR * QKS;
            for (j = 0; j < QNR; j++) {
                m = p * QNR + j;
                for (t = 0; t < QKS; t++) {
                    int q = 0;
                    k = g * QKS + t;
                    if (m < M && k < K && ws[m] > 0.0f) {
                        float v = rintf(w[k * sk + m * sm] / ws[m]);
                        q = v > FLQ_WMAX ? FLQ_WMAX
                            : (v < -FLQ_WMAX ? -FLQ_WMAX : (int)v);
                        wsum[m] += q;
                    }
                    dst[j * QKS + t] = (signed char)q;
                }
            }
        }
}

/* ------------------------------------------------------------------ */
/* Activations: n rows of K floats into quantized rows of ldq bytes (K
 * levels, then padding to a whole group).  fscale != 0: the static scale
 * and zero point fzp for every row; else each row's own range.  xs[i] and
 * xz[i] receive the row's scale and the zero point the kernel subtracts. */

#define QMAGIC 12582912.0f             /* 1.5 * 2^23: adding and taking it
                                        * away rounds to nearest even */

/* The float lane operations of the activation pass, by default in
 * portable vector C; a level may map them to single instructions of the
 * same result (qgemm_instance.inc.h):
 *   FLQ_FMIN(a, b)  a < b ? a : b, lane by lane (b where a is NaN)
 *   FLQ_FMAX(a, b)  a > b ? a : b, lane by lane (b where a is NaN)
 *   FLQ_CVTR(v)     the int32 nearest to v, ties to even (|v| <= 2^22)
 *   FLQ_PACKU8(q0, q1, q2, q3, dst)  4 * QL bytes at dst: the int32 lanes
 *                   of q0, then q1, q2, q3, each clamped to [0, 255] */
#ifndef FLQ_FMIN
#define FLQ_FMIN(a, b) FLQ_FN(self)((a) < (b), a, b)
#define FLQ_FMAX(a, b) FLQ_FN(self)((a) > (b), a, b)
#define FLQ_CVTR(v) __builtin_convertvector(((v) + QMAGIC) - QMAGIC, QVI)
#endif

FLQ_HELPER QVI FLQ_FN(clamp255)(QVI q)
{
    q = FLQ_FN(seli)(q < 0, (QVI){0}, q);
    return FLQ_FN(seli)(q > 255, (QVI){0} + 255, q);
}

#ifndef FLQ_PACKU8
FLQ_HELPER void FLQ_FN(packu8)(QVI q0, QVI q1, QVI q2, QVI q3,
                               unsigned char *dst)
{
    QVB b0 = FLQ_FN(low8)(FLQ_FN(clamp255)(q0));
    QVB b1 = FLQ_FN(low8)(FLQ_FN(clamp255)(q1));
    QVB b2 = FLQ_FN(low8)(FLQ_FN(clamp255)(q2));
    QVB b3 = FLQ_FN(low8)(FLQ_FN(clamp255)(q3));
    memcpy(dst, &b0, sizeof b0);
    memcpy(dst + QL, &b1, sizeof b1);
    memcpy(dst + 2 * QL, &b2, sizeof b2);
    memcpy(dst + 3 * QL, &b3, sizeof b3);
}
#define FLQ_PACKU8(q0, q1, q2, q3, dst) FLQ_FN(packu8)(q0, q1, q2, q3, dst)
#endif

/* rint(clamp(v * inv, -512, 512)) + zp, not yet clamped to [0, 255] (NaN
 * becomes -512: never converted to int; its row is NaN anyway) */
FLQ_HELPER QVI FLQ_FN(levels)(QVF v, QVF inv, QVI zp)
{
    v = FLQ_FMAX(v * inv, (QVF){0} - 512.0f);
    v = FLQ_FMIN(v, (QVF){0} + 512.0f);
    return FLQ_CVTR(v) + zp;
}

/* The range of one row of K floats: lo = min(0, x), hi = max(0, x), and
 * whether it holds NaN or an infinity.  NaN is tracked apart (min and max
 * skip it), an infinity shows in lo or hi.  The last partial vector goes
 * through a copy padded with zeros, which change neither. */
FLQ_HELPER int FLQ_FN(qrange)(const float *xr, fl_idx K, float *plo,
                              float *phi)
{
    QVF vlo = {0}, vhi = {0};
    QVI vnan = {0};
    float lo = 0.0f, hi = 0.0f;
    int bad = 0;
    fl_idx k;
    for (k = 0; k + QL <= K; k += QL) {
        QVF v = FLQ_FN(ldf)(xr + k);
        vnan |= (QVI)(v != v);
        vlo = FLQ_FMIN(v, vlo);
        vhi = FLQ_FMAX(v, vhi);
    }
    if (k < K) {
        float t[QL] = {0};
        QVF v;
        memcpy(t, xr + k, (size_t)(K - k) * sizeof(float));
        v = FLQ_FN(ldf)(t);
        vnan |= (QVI)(v != v);
        vlo = FLQ_FMIN(v, vlo);
        vhi = FLQ_FMAX(v, vhi);
    }
    for (int l = 0; l < QL; l++) {
        bad |= vnan[l];
        lo = vlo[l] < lo ? vlo[l] : lo;
        hi = vhi[l] > hi ? vhi[l] : hi;
    }
    *plo = lo;
    *phi = hi;
    return bad != 0 || !(hi <= FLT_MAX && lo >= -FLT_MAX);
}

FLQ_KERNEL void FLQ_FN(qrows)(fl_idx n, fl_idx K, const float *x, fl_idx ldx,
                              unsigned char *xq, fl_idx ldq, float *xs,
                              int *xz, float fscale, int fzp)
{
    const fl_idx KP = (K + QKS - 1) / QKS * QKS;
    fl_idx i, k;
    for (i = 0; i < n; i++) {
        const float *xr = x + i * ldx;
        unsigned char *qr = xq + i * ldq;
        float scale, inv, lo, hi;
        int zp, bad = FLQ_FN(qrange)(xr, K, &lo, &hi);
        QVF vinv;
        QVI vzp;
        if (fscale != 0.0f) {               /* static (NaN: a broken range) */
            scale = fscale;
            zp = fzp;
            bad |= !(fscale > 0.0f && fscale <= FLT_MAX);
        } else {
            scale = (hi - lo) / 255.0f;
            if (scale == 0.0f) scale = 1.0f;          /* a row of zeros */
            bad |= !(scale <= FLT_MAX);   /* NaN, or hi - lo overflowed */
            zp = 0;
            if (!bad) {
                zp = (int)rintf(-lo / scale);
                zp = zp < 0 ? 0 : (zp > 255 ? 255 : zp);
            }
        }
        /* a bad row: levels of zp, its scale NaN (outputs NaN) */
        inv = bad ? 0.0f : 1.0f / scale;
        xs[i] = bad ? NAN : scale;
        vinv = (QVF){0} + inv;
        vzp = (QVI){0} + zp;
        /* the last partial vector from a copy padded with zeros: their
         * level, zp (0 after subtracting it), is the padding of the row to
         * whole groups (K..KP) */
        if (FLQ_ESIZE == 1) {
            for (k = 0; k + 4 * QL <= K; k += 4 * QL)
                FLQ_PACKU8(FLQ_FN(levels)(FLQ_FN(ldf)(xr + k), vinv, vzp),
                           FLQ_FN(levels)(FLQ_FN(ldf)(xr + k + QL), vinv, vzp),
                           FLQ_FN(levels)(FLQ_FN(ldf)(xr + k + 2 * QL), vinv,
                                          vzp),
                           FLQ_FN(levels)(FLQ_FN(ldf)(xr + k + 3 * QL), vinv,
                                          vzp), qr + k);
            for (; k + QL <= K; k += QL) {
                QVB b = FLQ_FN(low8)(FLQ_FN(clamp255)(
                    FLQ_FN(levels)(FLQ_FN(ldf)(xr + k), vinv, vzp)));
                memcpy(qr + k, &b, sizeof b);
            }
            if (k < KP) {
                float t[QL] = {0};
                QVB b;
                memcpy(t, xr + k, (size_t)(K - k) * sizeof(float));
                b = FLQ_FN(low8)(FLQ_FN(clamp255)(
                    FLQ_FN(levels)(FLQ_FN(ldf)(t), vinv, vzp)));
                memcpy(qr + k, &b, (size_t)(KP - k));
            }
            xz[i] = zp;
        } else {
            short *sr = (short *)(void *)qr;
            for (k = 0; k + QL <= K; k += QL) {
                QVS s = FLQ_FN(low16)(FLQ_FN(clamp255)(
                    FLQ_FN(levels)(FLQ_FN(ldf)(xr + k), vinv, vzp)) - vzp);
                memcpy(sr + k, &s, sizeof s);
            }
            if (k < KP) {
                float t[QL] = {0};
                QVS s;
                memcpy(t, xr + k, (size_t)(K - k) * sizeof(float));
                s = FLQ_FN(low16)(FLQ_FN(clamp255)(
                    FLQ_FN(levels)(FLQ_FN(ldf)(t), vinv, vzp)) - vzp);
                memcpy(sr + k, &s, (size_t)(KP - k) * sizeof(short));
            }
            xz[i] = 0;
        }
    }
}

/* Rows of a convolution's product, one per output pixel p in [p0, p1):
 * row (p - p0) of col (ldq bytes per row) holds the quantized sample xq
 * (C x H x W levels, FLQ_ESIZE bytes each) under the kernel window at p,
 * k = (c * kh + i) * kw + j as in the weight (O, C, kh, kw); positions
 * in the padding take the level of 0.0, pad (the zero point of 1-byte
 * levels, 0 for int16 levels); the row is padded to whole groups with it
 * too. */
FLQ_KERNEL void FLQ_FN(qim2col)(const unsigned char *xq, fl_idx C, fl_idx H,
                                fl_idx W, fl_idx kh, fl_idx kw, fl_idx sh,
                                fl_idx sw, fl_idx ph, fl_idx pw, fl_idx dh,
                                fl_idx dw, fl_idx OW, fl_idx p0, fl_idx p1,
                                unsigned char *col, fl_idx ldq, int pad)
{
    const fl_idx K = C * kh * kw, KP = (K + QKS - 1) / QKS * QKS;
    fl_idx p, c, i, j, k;
    for (p = p0; p < p1; p++) {
        const fl_idx oh = p / OW, ow = p % OW;
        unsigned char *row = col + (p - p0) * ldq;
        k = 0;
        for (c = 0; c < C; c++)
            for (i = 0; i < kh; i++) {
                const fl_idx ih = oh * sh - ph + i * dh;
                for (j = 0; j < kw; j++, k++) {
                    const fl_idx iw = ow * sw - pw + j * dw;
                    if (ih < 0 || ih >= H || iw < 0 || iw >= W) {
                        if (FLQ_ESIZE == 1) row[k] = (unsigned char)pad;
                        else ((short *)(void *)row)[k] = (short)pad;
                    } else if (FLQ_ESIZE == 1) {
                        row[k] = xq[(c * H + ih) * W + iw];
                    } else {
                        ((short *)(void *)row)[k] =
                            ((const short *)(const void *)xq)[(c * H + ih) * W
                                                              + iw];
                    }
                }
            }
        for (; k < KP; k++) {
            if (FLQ_ESIZE == 1) row[k] = (unsigned char)pad;
            else ((short *)(void *)row)[k] = (short)pad;
        }
    }
}

/* ------------------------------------------------------------------ */
/* The product: R (<= MR) rows x one panel. */

typedef struct { QVI lo, hi; } FLQ_FN(acc);
#define QACC FLQ_FN(acc)

FLQ_HELPER void FLQ_FN(qdot2)(QACC *c, unsigned xg, FLQ_WV w0, FLQ_WV w1)
{
    c->lo = FLQ_DOT(c->lo, xg, w0);
    c->hi = FLQ_DOT(c->hi, xg, w1);
}

FLQ_HELPER QVF FLQ_FN(qact)(QVF v, int act)
{
    if (act == FL_ACT_RELU || act == FL_ACT_RELU6) {
        QVI m = v <= 0;                 /* NaN compares false: kept */
        v = (QVF)((QVI)v & ~m);
    }
    if (act == FL_ACT_RELU6)
        v = FLQ_FN(self)(v > 6.0f, (QVF){0} + 6.0f, v);
    return v;
}

/* dequantize, shift, activation in registers, store NR columns */
FLQ_HELPER void FLQ_FN(qstore)(const QACC *c, float *yp, float xs, int xz,
                               const float *ws, const int *wsum,
                               const float *sh, int act)
{
    QVI a0 = c->lo - xz * FLQ_FN(ldi)(wsum);
    QVI a1 = c->hi - xz * FLQ_FN(ldi)(wsum + QL);
    QVF f0 = __builtin_convertvector(a0, QVF) * (xs * FLQ_FN(ldf)(ws));
    QVF f1 = __builtin_convertvector(a1, QVF) * (xs * FLQ_FN(ldf)(ws + QL));
    if (sh) {
        f0 += FLQ_FN(ldf)(sh);
        f1 += FLQ_FN(ldf)(sh + QL);
    }
    FLQ_FN(stf)(yp, FLQ_FN(qact)(f0, act));
    FLQ_FN(stf)(yp + QL, FLQ_FN(qact)(f1, act));
}

FLQ_HELPER void FLQ_FN(qtile)(const int R, fl_idx KG,
                              const unsigned char *xq, fl_idx ldq,
                              const float *xs, const int *xz,
                              const signed char *bp, const float *ws,
                              const int *wsum, const float *sh, float *y,
                              fl_idx ldy, int act)
{
    QACC c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0}, c4 = {0}, c5 = {0};
    QACC c6 = {0}, c7 = {0}, c8 = {0}, c9 = {0}, c10 = {0}, c11 = {0};
    fl_idx g;
    for (g = 0; g < KG; g++) {
        const signed char *w = bp + g * (QNR * QKS);
        const unsigned char *xg = xq + 4 * g;
        FLQ_WV w0, w1;
        __builtin_prefetch((const char *)w + 1024, 0, 3);
        w0 = FLQ_WPREP(w);
        w1 = FLQ_WPREP(w + QL * QKS);
        if (R > 0) FLQ_FN(qdot2)(&c0, FLQ_FN(ld32)(xg + 0 * ldq), w0, w1);
        if (R > 1) FLQ_FN(qdot2)(&c1, FLQ_FN(ld32)(xg + 1 * ldq), w0, w1);
        if (R > 2) FLQ_FN(qdot2)(&c2, FLQ_FN(ld32)(xg + 2 * ldq), w0, w1);
        if (R > 3) FLQ_FN(qdot2)(&c3, FLQ_FN(ld32)(xg + 3 * ldq), w0, w1);
        if (R > 4) FLQ_FN(qdot2)(&c4, FLQ_FN(ld32)(xg + 4 * ldq), w0, w1);
        if (R > 5) FLQ_FN(qdot2)(&c5, FLQ_FN(ld32)(xg + 5 * ldq), w0, w1);
        if (R > 6) FLQ_FN(qdot2)(&c6, FLQ_FN(ld32)(xg + 6 * ldq), w0, w1);
        if (R > 7) FLQ_FN(qdot2)(&c7, FLQ_FN(ld32)(xg + 7 * ldq), w0, w1);
        if (R > 8) FLQ_FN(qdot2)(&c8, FLQ_FN(ld32)(xg + 8 * ldq), w0, w1);
        if (R > 9) FLQ_FN(qdot2)(&c9, FLQ_FN(ld32)(xg + 9 * ldq), w0, w1);
        if (R > 10) FLQ_FN(qdot2)(&c10, FLQ_FN(ld32)(xg + 10 * ldq), w0, w1);
        if (R > 11) FLQ_FN(qdot2)(&c11, FLQ_FN(ld32)(xg + 11 * ldq), w0, w1);
    }
#define QST(r, c) if (R > r) FLQ_FN(qstore)(&c, y + r * ldy, xs[r], xz[r], ws, wsum, sh, act)
    QST(0, c0); QST(1, c1); QST(2, c2); QST(3, c3); QST(4, c4); QST(5, c5);
    QST(6, c6); QST(7, c7); QST(8, c8); QST(9, c9); QST(10, c10);
    QST(11, c11);
#undef QST
}

/* one function per row count: each gets its own register allocation */
#define FLQ_ROWS(R) FLQ_KERNEL void FLQ_FN(qt##R)(fl_idx KG, const unsigned char *xq, fl_idx ldq, const float *xs, const int *xz, const signed char *bp, const float *ws, const int *wsum, const float *sh, float *y, fl_idx ldy, int act) { FLQ_FN(qtile)(R, KG, xq, ldq, xs, xz, bp, ws, wsum, sh, y, ldy, act); }
FLQ_ROWS(1)
FLQ_ROWS(2)
FLQ_ROWS(3)
FLQ_ROWS(4)
#if FLQ_MR > 4
FLQ_ROWS(5)
FLQ_ROWS(6)
#endif
#if FLQ_MR > 6
FLQ_ROWS(7)
FLQ_ROWS(8)
FLQ_ROWS(9)
FLQ_ROWS(10)
FLQ_ROWS(11)
FLQ_ROWS(12)
#endif
#undef FLQ_ROWS

FLQ_HELPER void FLQ_FN(qrows_panel)(fl_idx R, fl_idx KG,
                                    const unsigned char *xq, fl_idx ldq,
                                    const float *xs, const int *xz,
                                    const signed char *bp, const float *ws,
                                    const int *wsum, const float *sh,
                                    float *y, fl_idx ldy, int act)
{
#define QCASE(r) case r: FLQ_FN(qt##r)(KG, xq, ldq, xs, xz, bp, ws, wsum, sh, y, ldy, act); break;
    switch (R) {
    QCASE(1) QCASE(2) QCASE(3) QCASE(4)
#if FLQ_MR > 4
    QCASE(5) QCASE(6)
#endif
#if FLQ_MR > 6
    QCASE(7) QCASE(8) QCASE(9) QCASE(10) QCASE(11) QCASE(12)
#endif
    default: break;
    }
#undef QCASE
}

/* One row through whole panels [p0, p1) in one call: a matrix-vector
 * product calls no function per panel (at batch 1 the panel calls were a
 * fifth of a small layer's instructions). */
FLQ_KERNEL void FLQ_FN(qgemv)(fl_idx KG, const unsigned char *xq,
                              const float *xs, const int *xz,
                              const signed char *pk, fl_idx p0, fl_idx p1,
                              const float *ws, const int *wsum,
                              const float *sh, float *y, int act)
{
    fl_idx p;
    for (p = p0; p < p1; p++)
        FLQ_FN(qtile)(1, KG, xq, 0, xs, xz, pk + p * KG * QNR * QKS,
                      ws + p * QNR, wsum + p * QNR, sh ? sh + p * QNR : NULL,
                      y + p * QNR, 0, act);
}

/* Two rows through whole panels [p0, p1) in one call, as qgemv (per
 * panel, the call and the row-tile dispatch below were a third of the
 * instructions of 2 rows through 20 -> 256) */
FLQ_KERNEL void FLQ_FN(qgemv2)(fl_idx KG, const unsigned char *xq,
                               fl_idx ldq, const float *xs, const int *xz,
                               const signed char *pk, fl_idx p0, fl_idx p1,
                               const float *ws, const int *wsum,
                               const float *sh, float *y, fl_idx ldy, int act)
{
    fl_idx p;
    for (p = p0; p < p1; p++)
        FLQ_FN(qtile)(2, KG, xq, ldq, xs, xz, pk + p * KG * QNR * QKS,
                      ws + p * QNR, wsum + p * QNR, sh ? sh + p * QNR : NULL,
                      y + p * QNR, ldy, act);
}

/* Output columns of panels [p0, p1) for n quantized rows (xq: ldq bytes
 * per row; xs, xz per row); ws, wsum, sh (sh may be NULL) and y at column
 * 0, y with ldy floats per row. */
FLQ_KERNEL void FLQ_FN(qgemm)(fl_idx n, fl_idx K, fl_idx M,
                              const unsigned char *xq, fl_idx ldq,
                              const float *xs, const int *xz,
                              const signed char *pk, fl_idx p0, fl_idx p1,
                              const float *ws, const int *wsum,
                              const float *sh, float *y, fl_idx ldy, int act)
{
    const fl_idx KG = (K + QKS - 1) / QKS;
    const int tile_act = act == FL_ACT_RELU || act == FL_ACT_RELU6
        ? act : FL_ACT_NONE;
    float shpad[QNR], t[QMR * QNR];
    const fl_idx pa = p0;              /* the first panel, for act below */
    fl_idx p, i, r, R, m0, nc;
    if (n <= 2 && p0 < p1) {
        /* whole panels in one call; a partial last one below */
        fl_idx pf = M / QNR < p1 ? M / QNR : p1;
        if (pf > p0 && n == 1)
            FLQ_FN(qgemv)(KG, xq, xs, xz, pk, p0, pf, ws, wsum, sh, y,
                          tile_act);
        else if (pf > p0)
            FLQ_FN(qgemv2)(KG, xq, ldq, xs, xz, pk, p0, pf, ws, wsum, sh, y,
                           ldy, tile_act);
        p0 = pf > p0 ? pf : p0;
    }
    for (p = p0; p < p1; p++) {
        const signed char *bp = pk + p * KG * QNR * QKS;
        const float *shp = sh ? sh + p * QNR : NULL;
        m0 = p * QNR;
        nc = M - m0 < QNR ? M - m0 : QNR;
        if (shp && nc < QNR) {           /* the last panel: padded shift */
            memset(shpad, 0, sizeof shpad);
            memcpy(shpad, shp, (size_t)nc * sizeof(float));
            shp = shpad;
        }
        for (i = 0; i < n; i += R) {
            R = n - i < QMR ? n - i : QMR;
            if (nc == QNR) {
                FLQ_FN(qrows_panel)(R, KG, xq + i * ldq, ldq, xs + i, xz + i,
                                    bp, ws + m0, wsum + m0, shp,
                                    y + i * ldy + m0, ldy, tile_act);
            } else {
                FLQ_FN(qrows_panel)(R, KG, xq + i * ldq, ldq, xs + i, xz + i,
                                    bp, ws + m0, wsum + m0, shp, t, QNR,
                                    tile_act);
                for (r = 0; r < R; r++)
                    memcpy(y + (i + r) * ldy + m0, t + r * QNR,
                           (size_t)nc * sizeof(float));
            }
        }
    }
    if (act != tile_act && p1 > pa) {
        fl_idx a0 = pa * QNR, a1 = p1 * QNR < M ? p1 * QNR : M;
        for (i = 0; i < n; i++) FLQ_ACT_F32(y + i * ldy + a0, a1 - a0, act);
    }
}

/* the dot kernel for layers with few outputs, on these types */
#include "qdot.inc.h"

#undef FLQ_LOW8
#undef FLQ_LOW16
#undef QACC
#undef QVI
#undef QVF
#undef QVB
#undef QVS
#undef QL
#undef QNR
#undef QKS
#undef QMR
