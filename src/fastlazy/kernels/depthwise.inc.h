/*
 * depthwise.inc.h -- the depthwise 2-D convolution (groups == input
 * channels == output channels, MobileNet's), one sample, NCHW, with the
 * per-channel epilogue (bias, a folded BatchNorm, the activation) applied
 * to the accumulators before they are stored, for one (level, dtype)
 * instance.
 *
 * An output value is a sum of kh*kw products, and neighbouring outputs of
 * a row read neighbouring inputs: the kernel computes vectors of DL outputs
 * along a row, a tile of 2 rows x FL_DW_NV vectors at a time, every tap
 * accumulated in registers and the tile stored once.  Padding and the
 * vector tails are not tested per value: each channel plane is first
 * copied into buf, a zero-bordered plane wide enough for whole vectors, so
 * that every tap of every vector is one unaligned load of consecutive
 * values.  A stride sw > 1 would make those values strided; the copy
 * splits each row into its sw phases instead (columns p, p + sw, p + 2*sw,
 * ... for p < sw) and an output vector reads one phase row with unit
 * stride -- XNNPACK's stride-2 kernels split even and odd columns the same
 * way, in registers.  The common 3x3 (stride 1 and 2, no dilation) is
 * compiled with the geometry as constants (taps unrolled, weights in
 * registers); other geometries run the same code with it as variables.
 * The vector width and the tile are the level descriptor's FL_DW_VBYTES
 * and FL_DW_NV (measured, see isa_avx512.h).
 */

/* The kernel's vectors: FL_DW_VBYTES wide, from the level's descriptor
 * (narrower than the level's registers where that measured faster). */
typedef T FL_FN(dwvec) __attribute__((vector_size(FL_DW_VBYTES)));
#define DV FL_FN(dwvec)
#define DL ((int)(FL_DW_VBYTES / sizeof(T)))   /* lanes of DV */

FL_HELPER DV FL_FN(dw_load)(const T *p)
{
    DV v;
    memcpy(&v, p, sizeof v);
    return v;
}

FL_HELPER void FL_FN(dw_store)(T *p, DV v)
{
    memcpy(p, &v, sizeof v);
}

/* the first n (0..DL) lanes of v; never writes past n */
FL_HELPER void FL_FN(dw_store_part)(T *p, DV v, fl_idx n)
{
    T b[DL];
    fl_idx i;
    memcpy(b, &v, sizeof v);
    for (i = 0; i < n; i++) p[i] = b[i];
}

/* keep v unless v <= 0: NaN survives, as with numpy.maximum */
FL_HELPER DV FL_FN(dw_relu)(DV v)
{
    __typeof__(v <= 0) m = v <= 0;
    return (DV)((__typeof__(m))v & ~m);
}

#define DLOAD(p) FL_FN(dw_load)(p)
#define DSTORE(p, v) FL_FN(dw_store)(p, v)
#define DSTORE_PART(p, v, n) FL_FN(dw_store_part)(p, v, n)
#define DRELU(v) FL_FN(dw_relu)(v)

#ifndef FL_DW_SHARED
#define FL_DW_SHARED
/* The layout of the depthwise kernel's buf for vectors of `lanes` values:
 * hp padded rows (as many as the outputs read), each split into sw phase
 * rows of ws values; padded column c of padded row r (input column c - pw
 * of input row r - ph) is at buf[(r * sw + c % sw) * ws + c / sw]. */
static inline void fl_dw_layout(fl_idx kh, fl_idx kw, fl_idx sh, fl_idx sw,
                                fl_idx dh, fl_idx dw, fl_idx OH, fl_idx OW,
                                fl_idx lanes, fl_idx *hp, fl_idx *ws)
{
    fl_idx nb = (OW + lanes - 1) / lanes;   /* vectors per output row */
    *hp = (OH - 1) * sh + (kh - 1) * dh + 1;
    *ws = nb * lanes + (kw - 1) * dw / sw;
}
#endif

/* Bytes of the depthwise kernel's buf (0 for an empty output). */
FL_KERNEL size_t FL_FN(dwconv_buf)(fl_idx kh, fl_idx kw, fl_idx sh,
                                   fl_idx sw, fl_idx dh, fl_idx dw,
                                   fl_idx OH, fl_idx OW)
{
    fl_idx hp, ws;
    if (OH <= 0 || OW <= 0) return 0;
    fl_dw_layout(kh, kw, sh, sw, dh, dw, OH, OW, DL, &hp, &ws);
    return (size_t)(hp * sw * ws) * sizeof(T);
}

#if defined(__GNUC__) && !defined(__clang__)
/* the even (odd) lanes of the 2*DL values a, b: GCC folds the constant
 * index vector into one two-source permute */
FL_HELPER DV FL_FN(dw_even)(DV a, DV b, int odd)
{
    __typeof__((DV){0} < (DV){0}) m;
    int i;
    for (i = 0; i < DL; i++) m[i] = 2 * i + odd;
    return __builtin_shuffle(a, b, m);
}
#define FL_DW_SPLIT 1
#else
#define FL_DW_SPLIT 0
#endif

/* Copy channel plane xc (H x W) into the data cells of buf; the padding
 * cells were zeroed once per call and are never written. */
FL_HELPER void FL_FN(dw_fill)(const T *xc, T *buf, fl_idx H, fl_idx W,
                              fl_idx sw, fl_idx ph, fl_idx pw, fl_idx hp,
                              fl_idx ws)
{
    fl_idx r, p, k;
    fl_idx r0 = ph < hp ? ph : hp, r1 = ph + H < hp ? ph + H : hp;
    for (r = r0; r < r1; r++) {
        const T *xr = xc + (r - ph) * W;
        if (sw == 1) {
            /* columns [pw, pw + W) of the row, cut at ws; rows are short
             * (56 values): inline vectors, the last one overlapping, beat
             * a call of memcpy and a scalar tail */
            T *d = buf + r * ws + pw;
            fl_idx n = pw + W < ws ? W : ws - pw;
            if (n >= DL) {
                for (k = 0; k + DL <= n; k += DL)
                    DSTORE(d + k, DLOAD(xr + k));
                DSTORE(d + n - DL, DLOAD(xr + n - DL));
            } else {
                for (k = 0; k < n; k++) d[k] = xr[k];
            }
            continue;
        }
        if (sw == 2) {
            /* input column i is padded column i + pw: the even input
             * columns go to one phase row, the odd ones to the other */
            T *be = buf + (r * 2 + pw % 2) * ws + pw / 2;
            T *bo = buf + (r * 2 + (pw + 1) % 2) * ws + (pw + 1) / 2;
            fl_idx ne = ws - pw / 2, no = ws - (pw + 1) / 2, m = 0;
            if (ne > (W + 1) / 2) ne = (W + 1) / 2;
            if (no > W / 2) no = W / 2;
#if FL_DW_SPLIT
            for (;;) {
                DV a, b;
                if (2 * m + 2 * DL > W || m + DL > no) {
                    /* the last pair overlapping the one before (its
                     * values stored twice) rather than a scalar tail */
                    fl_idx e = (W - 2 * DL) / 2;
                    if (e > no - DL) e = no - DL;
                    if (m == 0 || e < 0 || e + DL <= m) break;
                    m = e;
                }
                a = DLOAD(xr + 2 * m);
                b = DLOAD(xr + 2 * m + DL);
                DSTORE(be + m, FL_FN(dw_even)(a, b, 0));
                DSTORE(bo + m, FL_FN(dw_even)(a, b, 1));
                m += DL;
            }
#endif
            for (k = m; k < ne; k++) be[k] = xr[2 * k];
            for (k = m; k < no; k++) bo[k] = xr[2 * k + 1];
            continue;
        }
        for (p = 0; p < sw; p++) {
            T *br = buf + (r * sw + p) * ws;
            /* phase columns k with pw <= p + k*sw < pw + W, k < ws */
            fl_idx lo = pw - p > 0 ? (pw - p + sw - 1) / sw : 0;
            fl_idx hi = pw + W - p > 0 ? (pw + W - p + sw - 1) / sw : 0;
            const T *s = xr + p - pw;
            if (hi > ws) hi = ws;
            for (k = lo; k < hi; k++) br[k] = s[k * sw];
        }
    }
}

/* Output rows [oh, oh + R) x vectors [ow0, ow0 + NV*DL) of one channel: all
 * kh*kw taps accumulated in R*NV registers, then y = acc * sc + sf (and
 * relu when asked) stored.  The last vector of a row is stored whole
 * unless that would pass yend, the end of this call's output: its excess
 * lands on outputs this call stores later (dw_plane's order; a partial
 * store costed a fifth of the time).  R, NV and (for the 3x3 paths) the
 * geometry are constants once inlined. */
FL_HELPER void FL_FN(dw_tile)(const T *buf, const T *wc, T *yc, fl_idx OW,
                              fl_idx oh, fl_idx ow0, const int R,
                              const int NV, fl_idx KH, fl_idx KW, fl_idx SH,
                              fl_idx SW, fl_idx DH, fl_idx DW, fl_idx ws,
                              const T *yend, T sc, T sf, int relu)
{
    DV acc[2][4];
    fl_idx i, j;
    int r, v;
#pragma GCC unroll 2
    for (r = 0; r < R; r++)
#pragma GCC unroll 4
        for (v = 0; v < NV; v++) acc[r][v] = (DV){0};
    /* unrolled when the geometry is constant (weights in registers, each
     * load an FMA operand; loading the vectors the two rows share once
     * measured no faster) */
#pragma GCC unroll 8
    for (i = 0; i < KH; i++) {
#pragma GCC unroll 8
        for (j = 0; j < KW; j++) {
            /* a - 0 is a for every a (a + 0 is not, at -0): a plain
             * broadcast */
            DV wv = wc[i * KW + j] - (DV){0};
            fl_idx p = (j * DW) % SW, q = (j * DW) / SW + ow0;
#pragma GCC unroll 2
            for (r = 0; r < R; r++) {
                const T *row = buf + (((oh + r) * SH + i * DH) * SW + p) * ws
                               + q;
#pragma GCC unroll 4
                for (v = 0; v < NV; v++)
                    acc[r][v] += wv * DLOAD(row + v * DL);
            }
        }
    }
#pragma GCC unroll 2
    for (r = 0; r < R; r++) {
#pragma GCC unroll 4
        for (v = 0; v < NV; v++) {
            DV o = acc[r][v] * sc + sf;
            T *dst = yc + (oh + r) * OW + ow0 + v * DL;
            fl_idx n = OW - (ow0 + v * DL);
            if (relu) o = DRELU(o);
            if (n >= DL || dst + DL <= yend)
                DSTORE(dst, o);
            else
                DSTORE_PART(dst, o, n);
        }
    }
}

/* One channel's output plane (OH x OW), by tiles of 2 rows x FL_DW_NV
 * vectors; the last odd row and the last vectors of a row by smaller
 * tiles.  The tiles of a pair of rows go from the right to the left, so
 * that whatever a row's last vector stores past the row's end (dw_tile)
 * is stored again later: the next row's first vectors, in this pair's
 * leftmost tile or the next pair's. */
FL_HELPER void FL_FN(dw_plane)(const T *buf, const T *wc, T *yc, fl_idx OH,
                               fl_idx OW, fl_idx KH, fl_idx KW, fl_idx SH,
                               fl_idx SW, fl_idx DH, fl_idx DW, fl_idx ws,
                               const T *yend, T sc, T sf, int relu)
{
    fl_idx nb = (OW + DL - 1) / DL, oh = 0, b;
#define FL_DW_ROW(R)                                                         \
    do {                                                                     \
        b = nb - nb % FL_DW_NV;                                              \
        if (nb - b == 1)                                                     \
            FL_FN(dw_tile)(buf, wc, yc, OW, oh, b * DL, R, 1, KH, KW, SH,    \
                           SW, DH, DW, ws, yend, sc, sf, relu);              \
        else if (FL_DW_NV > 2 && nb - b == 2)                                \
            FL_FN(dw_tile)(buf, wc, yc, OW, oh, b * DL, R, 2, KH, KW, SH,    \
                           SW, DH, DW, ws, yend, sc, sf, relu);              \
        else if (FL_DW_NV > 3 && nb - b == 3)                                \
            FL_FN(dw_tile)(buf, wc, yc, OW, oh, b * DL, R, 3, KH, KW, SH,    \
                           SW, DH, DW, ws, yend, sc, sf, relu);              \
        for (b -= FL_DW_NV; b >= 0; b -= FL_DW_NV)                           \
            FL_FN(dw_tile)(buf, wc, yc, OW, oh, b * DL, R, FL_DW_NV, KH, KW, \
                           SH, SW, DH, DW, ws, yend, sc, sf, relu);          \
    } while (0)
    for (; oh + 2 <= OH; oh += 2) FL_DW_ROW(2);
    if (oh < OH) FL_DW_ROW(1);
#undef FL_DW_ROW
}
#undef FL_DW_SPLIT

/* The depthwise convolution of one sample: x (C, H, W), w (C, 1, kh, kw),
 * y (C, OH, OW),
 *   y[c, oh, ow] = act(scale[c] * sum_{i,j} w[c, i, j]
 *                        * x[c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]
 *                      + shift[c])
 * (x is 0 outside the input; scale NULL means 1, shift NULL means 0).  buf
 * holds dwconv_buf(kh, kw, sh, sw, dh, dw, OH, OW) bytes; each thread
 * needs its own.  Channels are independent: a range of them is a call on
 * offset pointers. */
FL_KERNEL void FL_FN(dwconv)(const T *x, const T *w, T *y, fl_idx C,
                             fl_idx H, fl_idx W, fl_idx kh, fl_idx kw,
                             fl_idx sh, fl_idx sw, fl_idx ph, fl_idx pw,
                             fl_idx dh, fl_idx dw, fl_idx OH, fl_idx OW,
                             const T *scale, const T *shift, int act, T *buf)
{
    fl_idx hp, ws, c;
    const T *yend = y + C * OH * OW;
    int relu = act == FL_ACT_RELU;
    int k3s1 = kh == 3 && kw == 3 && dh == 1 && dw == 1 && sh == 1
               && sw == 1;
    int k3s2 = kh == 3 && kw == 3 && dh == 1 && dw == 1 && sh == 2
               && sw == 2;
    if (C <= 0 || OH <= 0 || OW <= 0) return;
    fl_dw_layout(kh, kw, sh, sw, dh, dw, OH, OW, DL, &hp, &ws);
    memset(buf, 0, (size_t)(hp * sw * ws) * sizeof(T));
    for (c = 0; c < C; c++) {
        const T *wc = w + c * kh * kw;
        T *yc = y + c * OH * OW;
        T sc = scale ? scale[c] : (T)1, sf = shift ? shift[c] : (T)0;
        FL_FN(dw_fill)(x + c * H * W, buf, H, W, sw, ph, pw, hp, ws);
        if (k3s1)
            FL_FN(dw_plane)(buf, wc, yc, OH, OW, 3, 3, 1, 1, 1, 1, ws, yend,
                            sc, sf, relu);
        else if (k3s2)
            FL_FN(dw_plane)(buf, wc, yc, OH, OW, 3, 3, 2, 2, 1, 1, ws, yend,
                            sc, sf, relu);
        else
            FL_FN(dw_plane)(buf, wc, yc, OH, OW, kh, kw, sh, sw, dh, dw, ws,
                            yend, sc, sf, relu);
        /* the other activations on the plane while it is in cache */
        if (act != FL_ACT_NONE && !relu) FL_FN(act)(yc, OH * OW, act);
    }
}

#undef DLOAD
#undef DSTORE
#undef DSTORE_PART
#undef DRELU
#undef DL
#undef DV
