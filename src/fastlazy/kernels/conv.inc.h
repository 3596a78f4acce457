/*
 * conv.inc.h -- what goes around the convolution's GEMM (the im2col
 * packing of a block of output rows, and the per-channel epilogue that
 * applies bias, a fused BatchNorm and the activation in one pass), and the
 * pooling and normalization kernels, for one dtype.
 *
 * Layout is NCHW, one sample at a time: a sample is C planes of H x W
 * values, C order.  The GEMM itself is gemm_ab (gemm_packed.inc.h) or
 * BLAS, chosen by the caller.  Included by instance.inc.h for the
 * baseline level only (see there); activations run through the table.
 */

#ifndef FL_CONV_SHARED
#define FL_CONV_SHARED
/* First ow in [0, OW) whose input column ow*s + off is >= 0, and the first
 * one whose column is >= W (clamped to [lo, OW]). */
static inline void fl_valid_range(fl_idx off, fl_idx s, fl_idx W, fl_idx OW,
                                  fl_idx *lo, fl_idx *hi)
{
    fl_idx a = off >= 0 ? 0 : (-off + s - 1) / s;
    fl_idx b = W - off > 0 ? (W - off + s - 1) / s : 0;
    if (a > OW) a = OW;
    if (b > OW) b = OW;
    if (b < a) b = a;
    *lo = a;
    *hi = b;
}
#endif

/* Pack output rows [oh0, oh1) of one group into col, a (Cg*kh*kw) x N
 * block with N = (oh1 - oh0) * OW, row stride ldc >= N:
 *   col[(c*kh + i)*kw + j][(oh - oh0)*OW + ow]
 *     = x[c][oh*sh - ph + i*dh][ow*sw - pw + j*dw]  (0 outside the input).
 * x points at the group's first input channel. */
static void FL_FN(im2col)(const T *x, fl_idx Cg, fl_idx H, fl_idx W, fl_idx kh,
                          fl_idx kw, fl_idx sh, fl_idx sw, fl_idx ph,
                          fl_idx pw, fl_idx dh, fl_idx dw, fl_idx OW,
                          fl_idx oh0, fl_idx oh1, T *col, fl_idx ldc)
{
    fl_idx c, i, j, oh, ow;
    for (c = 0; c < Cg; c++) {
        const T *xc = x + c * H * W;
        for (i = 0; i < kh; i++) {
            for (j = 0; j < kw; j++) {
                T *row = col + ((c * kh + i) * kw + j) * ldc;
                fl_idx off = j * dw - pw, lo, hi;
                fl_valid_range(off, sw, W, OW, &lo, &hi);
                for (oh = oh0; oh < oh1; oh++) {
                    T *r = row + (oh - oh0) * OW;
                    fl_idx ih = oh * sh - ph + i * dh;
                    const T *xr;
                    /* short rows are the rule (OW is often < 64): plain
                     * loops, which the compiler vectorises, beat calls */
                    if (ih < 0 || ih >= H) {
                        for (ow = 0; ow < OW; ow++) r[ow] = 0;
                        continue;
                    }
                    xr = xc + ih * W + off;
                    for (ow = 0; ow < lo; ow++) r[ow] = 0;
                    if (sw == 1) {
                        for (ow = lo; ow < hi; ow++) r[ow] = xr[ow];
                    } else {
                        for (ow = lo; ow < hi; ow++) r[ow] = xr[ow * sw];
                    }
                    for (ow = hi; ow < OW; ow++) r[ow] = 0;
                }
            }
        }
    }
}

/* For channels o < O, columns [0, N) of row o:
 *   dst[o*ldd + k] = act(src[o*lds + k] * scale[o] + shift[o]);
 * scale NULL means 1, shift NULL means 0; dst may equal src. */
static void FL_FN(chan_epilogue)(fl_idx O, fl_idx N, const T *src, fl_idx lds,
                                 T *dst, fl_idx ldd, const T *scale,
                                 const T *shift, int act)
{
    fl_idx o, k;
    for (o = 0; o < O; o++) {
        const T *a = src + o * lds;
        T *r = dst + o * ldd;
        if (scale) {
            T m = scale[o], b = shift ? shift[o] : (T)0;
            for (k = 0; k < N; k++) r[k] = a[k] * m + b;
        } else if (shift) {
            T b = shift[o];
            for (k = 0; k < N; k++) r[k] = a[k] + b;
        } else if (r != a) {
            memcpy(r, a, N * sizeof(T));
        }
        if (act == FL_ACT_RELU) {
            for (k = 0; k < N; k++) {
                T v = r[k];
                r[k] = (v > 0 || v != v) ? v : (T)0;
            }
        } else if (act != FL_ACT_NONE) {
            fl_kt.FL_DT(act)(r, N, act);
        }
    }
}

/* Inference BatchNorm as a per-channel affine map, from the parameters:
 *   scale[c] = gamma[c] / sqrt(var[c] + eps)
 *   shift[c] = (bias[c] - mean[c]) * scale[c] + beta[c]
 * gamma NULL means 1 (Gluon's scale=False); bias and beta NULL mean 0.
 * Computed in double, stored in T. */
static void FL_FN(bn_coeffs)(fl_idx C, const T *gamma, const T *beta,
                             const T *mean, const T *var, const T *bias,
                             double eps, T *scale, T *shift)
{
    fl_idx c;
    for (c = 0; c < C; c++) {
        double g = gamma ? (double)gamma[c] : 1.0;
        double s = g / sqrt((double)var[c] + eps);
        double b = bias ? (double)bias[c] : 0.0;
        double t = (b - (double)mean[c]) * s + (beta ? (double)beta[c] : 0.0);
        scale[c] = (T)s;
        shift[c] = (T)t;
    }
}

/* y = act(x * scale[c] + shift[c]) over samples laid out (outer, C, inner);
 * y may equal x. */
static void FL_FN(chan_affine)(fl_idx outer, fl_idx C, fl_idx inner,
                               const T *x, T *y, const T *scale,
                               const T *shift, int act)
{
    fl_idx o, c, k;
    if (inner == 1) {
        for (o = 0; o < outer; o++) {
            const T *xr = x + o * C;
            T *yr = y + o * C;
            for (c = 0; c < C; c++) yr[c] = xr[c] * scale[c] + shift[c];
        }
        FL_FN(chan_epilogue)(1, outer * C, y, 0, y, 0, NULL, NULL, act);
        return;
    }
    for (o = 0; o < outer; o++) {
        for (c = 0; c < C; c++) {
            const T *xr = x + (o * C + c) * inner;
            T *yr = y + (o * C + c) * inner;
            T a = scale[c], b = shift[c];
            for (k = 0; k < inner; k++) yr[k] = xr[k] * a + b;
        }
    }
    FL_FN(chan_epilogue)(1, outer * C * inner, y, 0, y, 0, NULL, NULL,
                           act);
}

/* 2-D max or average pooling of one sample, C planes H x W -> OH x OW.
 * Window (oh, ow) covers rows [oh*sh - ph, +kh) and columns [ow*sw - pw,
 * +kw), clipped to the input; padding never wins a max.  The average
 * divides by the window clipped to the padded input (count_include_pad,
 * as MXNet and PyTorch) or by the values inside the input.  A window with no
 * input value in it (possible with ceil_mode and strides wider than the
 * pool) gives 0. */
#ifndef FL_POOL_ROW
/* widest input row the separable max pool buffers on the stack */
#define FL_POOL_ROW 4096
#endif

static void FL_FN(pool2d)(const T *x, T *y, fl_idx C, fl_idx H, fl_idx W,
                          fl_idx kh, fl_idx kw, fl_idx sh, fl_idx sw,
                          fl_idx ph, fl_idx pw, fl_idx OH, fl_idx OW,
                          int is_max, int count_include_pad)
{
    fl_idx c, oh, ow, i, j;
    if (OH == 1 && OW == 1 && kh == H && kw == W && ph == 0 && pw == 0) {
        fl_idx n = H * W;
        for (c = 0; c < C; c++) {
            const T *xc = x + c * n;
            if (is_max) {
                T m = xc[0];
                for (i = 1; i < n; i++) {
                    T v = xc[i];
                    m = (v > m || v != v) ? v : m;
                }
                y[c] = m;
            } else {
                T s = 0;
                for (i = 0; i < n; i++) s += xc[i];
                y[c] = s / (T)n;
            }
        }
        return;
    }
    if (kh == 2 && kw == 2 && sh == 2 && sw == 2 && ph == 0 && pw == 0
        && 2 * OH <= H && 2 * OW <= W) {
        /* the common 2x2/2 pool: whole windows, no clipping */
        for (c = 0; c < C; c++) {
            for (oh = 0; oh < OH; oh++) {
                const T *r0 = x + (c * H + 2 * oh) * W, *r1 = r0 + W;
                T *yr = y + (c * OH + oh) * OW;
                if (is_max) {
                    for (ow = 0; ow < OW; ow++) {
                        T a = r0[2 * ow], b = r0[2 * ow + 1];
                        T d = r1[2 * ow], e = r1[2 * ow + 1];
                        a = (b > a || b != b) ? b : a;
                        a = (d > a || d != d) ? d : a;
                        yr[ow] = (e > a || e != e) ? e : a;
                    }
                } else {
                    for (ow = 0; ow < OW; ow++)
                        yr[ow] = (r0[2 * ow] + r0[2 * ow + 1] + r1[2 * ow]
                                  + r1[2 * ow + 1]) * (T)0.25;
                }
            }
        }
        return;
    }
    if (is_max && W <= FL_POOL_ROW) {
        /* any other max pool, separably: per output row, the maximum over
         * the window's input rows column by column (a contiguous pass),
         * then over each window's columns.  Only input values are compared
         * (padding never wins); a window with none gives 0. */
        T colmax[FL_POOL_ROW];
        for (c = 0; c < C; c++) {
            const T *xc = x + c * H * W;
            T *yc = y + c * OH * OW;
            for (oh = 0; oh < OH; oh++) {
                fl_idx hs = oh * sh - ph, he = hs + kh;
                fl_idx h0 = hs < 0 ? 0 : hs, h1 = he > H ? H : he;
                if (h1 <= h0) {
                    for (ow = 0; ow < OW; ow++) yc[oh * OW + ow] = 0;
                    continue;
                }
                memcpy(colmax, xc + h0 * W, (size_t)W * sizeof(T));
                for (i = h0 + 1; i < h1; i++) {
                    const T *xr = xc + i * W;
                    for (j = 0; j < W; j++) {
                        T v = xr[j], m = colmax[j];
                        colmax[j] = (v > m || v != v) ? v : m;
                    }
                }
                for (ow = 0; ow < OW; ow++) {
                    fl_idx ws = ow * sw - pw, we = ws + kw;
                    fl_idx w0 = ws < 0 ? 0 : ws, w1 = we > W ? W : we;
                    T m;
                    if (w1 <= w0) {
                        yc[oh * OW + ow] = 0;
                        continue;
                    }
                    m = colmax[w0];
                    for (j = w0 + 1; j < w1; j++) {
                        T v = colmax[j];
                        m = (v > m || v != v) ? v : m;
                    }
                    yc[oh * OW + ow] = m;
                }
            }
        }
        return;
    }
    for (c = 0; c < C; c++) {
        const T *xc = x + c * H * W;
        T *yc = y + c * OH * OW;
        for (oh = 0; oh < OH; oh++) {
            fl_idx hs = oh * sh - ph, he = hs + kh;
            fl_idx hp, h0, h1;
            if (he > H + ph) he = H + ph;
            hp = he - hs;
            h0 = hs < 0 ? 0 : hs;
            h1 = he > H ? H : he;
            for (ow = 0; ow < OW; ow++) {
                fl_idx ws = ow * sw - pw, we = ws + kw;
                fl_idx wp, w0, w1;
                T acc;
                if (we > W + pw) we = W + pw;
                wp = we - ws;
                w0 = ws < 0 ? 0 : ws;
                w1 = we > W ? W : we;
                if (h1 <= h0 || w1 <= w0) {
                    yc[oh * OW + ow] = 0;
                    continue;
                }
                if (is_max) {
                    acc = xc[h0 * W + w0];
                    for (i = h0; i < h1; i++)
                        for (j = w0; j < w1; j++) {
                            T v = xc[i * W + j];
                            acc = (v > acc || v != v) ? v : acc;
                        }
                } else {
                    fl_idx cnt = count_include_pad ? hp * wp
                                                   : (h1 - h0) * (w1 - w0);
                    acc = 0;
                    for (i = h0; i < h1; i++)
                        for (j = w0; j < w1; j++) acc += xc[i * W + j];
                    acc /= (T)cnt;
                }
                yc[oh * OW + ow] = acc;
            }
        }
    }
}

/* Layer normalization over the C axis of samples laid out (outer, C,
 * inner): for each (o, k), mean and (biased) variance over c, then
 *   y = (x - mean) / sqrt(var + eps) * gamma[c] + beta[c].
 * Statistics in double, two passes.  acc holds 2*inner doubles (unused when
 * inner == 1); y may equal x; gamma and beta NULL mean 1 and 0. */
static void FL_FN(layernorm)(fl_idx outer, fl_idx C, fl_idx inner, const T *x,
                             T *y, const T *gamma, const T *beta, double eps,
                             double *acc)
{
    fl_idx o, c, k;
    for (o = 0; o < outer; o++) {
        const T *xs = x + o * C * inner;
        T *ys = y + o * C * inner;
        if (inner == 1) {
            double m = 0, v = 0, r;
            for (c = 0; c < C; c++) m += (double)xs[c];
            m /= (double)C;
            for (c = 0; c < C; c++) {
                double d = (double)xs[c] - m;
                v += d * d;
            }
            r = 1.0 / sqrt(v / (double)C + eps);
            for (c = 0; c < C; c++) {
                double z = ((double)xs[c] - m) * r;
                if (gamma) z *= (double)gamma[c];
                if (beta) z += (double)beta[c];
                ys[c] = (T)z;
            }
        } else {
            double *mean = acc, *rstd = acc + inner;
            for (k = 0; k < inner; k++) mean[k] = rstd[k] = 0;
            for (c = 0; c < C; c++)
                for (k = 0; k < inner; k++)
                    mean[k] += (double)xs[c * inner + k];
            for (k = 0; k < inner; k++) mean[k] /= (double)C;
            for (c = 0; c < C; c++)
                for (k = 0; k < inner; k++) {
                    double d = (double)xs[c * inner + k] - mean[k];
                    rstd[k] += d * d;
                }
            for (k = 0; k < inner; k++)
                rstd[k] = 1.0 / sqrt(rstd[k] / (double)C + eps);
            for (c = 0; c < C; c++) {
                double g = gamma ? (double)gamma[c] : 1.0;
                double b = beta ? (double)beta[c] : 0.0;
                for (k = 0; k < inner; k++) {
                    double z = (double)xs[c * inner + k] - mean[k];
                    ys[c * inner + k] = (T)(z * rstd[k] * g + b);
                }
            }
        }
    }
}
