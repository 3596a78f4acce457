/*
 * dense_dot.inc.h -- a few rows through a dense layer with few outputs
 * (a classifier's last layer: 256 -> 10), for one (level, dtype) instance.
 *
 * y[i, m] = act(b[m] + sum_k x[i, k] * wm[m * K + k]) for i < n, m < M,
 * with wm the weight as (M, K) rows -- Gluon's own orientation, a copy of
 * the transposed storage made by pack_rows -- so each output is a dot
 * product along k: vectors of x and of a weight row, multiplied into one
 * accumulator per (row, output), summed across lanes at the end.
 *
 * Why: in the transposed layout an output row of M = 10 columns is one
 * and a quarter vectors, read with loads that straddle cache lines, and
 * the kernel computes 16 columns to keep 10 (1x256->10: 182 ns with
 * AVX2).  Along k nothing is wasted and every load is a plain one.
 *
 * A tile is R rows x G outputs, R*G accumulators (at most 16: two
 * fl_row structs, see dense_small.inc.h for why structs of named vectors);
 * R = 1 takes G = DOT_G1 outputs at a time, R = 2 DOT_G2.  The lanes of
 * each accumulator and the last K % L values of k are summed in plain C
 * (dot_finish), outside the loop, where they cannot cost the loop its
 * registers.
 */

#ifndef FL_DOT_SHARED
#define FL_DOT_SHARED
/* outputs per tile: one row (12 accumulators, its x vector, a spare), two
 * rows (12 accumulators, two x vectors, a weight vector) */
#define DOT_G1 12
#define DOT_G2 6
#endif

/* fl_row and its accessors come from dense_small.inc.h */
#define ROW FL_FN(row)

/* accumulator j (< 16, a compile-time constant) of the tile's two rows of
 * named vectors */
FL_HELPER void FL_FN(dot_add)(ROW *lo, ROW *hi, const int j, V v)
{
    if (j < 8) FL_FN(acc_add)(lo, j, v);
    else FL_FN(acc_add)(hi, j - 8, v);
}

FL_HELPER V FL_FN(dot_get)(const ROW *lo, const ROW *hi, const int j)
{
    return j < 8 ? FL_FN(acc_get)(lo, j) : FL_FN(acc_get)(hi, j - 8);
}

/* The end of a tile: acc holds R*G vectors (row r, output g at
 * (r * G + g) * L) summed over k < k0; their lanes, the products of
 * k0 <= k < K, the bias and the relu give y[r, m0 + g] for g < mc. */
static __attribute__((noinline)) FL_ATTR void FL_FN(dot_finish)(
    int R, int G, int mc, const T *acc, fl_idx k0, fl_idx K, const T *x,
    fl_idx ldx, const T *wm, const T *b, T *y, fl_idx ldy, int act)
{
    int r, g, l;
    fl_idx k;
    for (r = 0; r < R; r++) {
        const T *xr = x + r * ldx;
        for (g = 0; g < mc; g++) {
            const T *a = acc + (r * G + g) * L;
            const T *w = wm + g * K;
            T s = 0;
            for (l = 0; l < L; l++)
                s += a[l];
            for (k = k0; k < K; k++)
                s += xr[k] * w[k];
            if (b)
                s += b[g];
            /* relu keeps NaN, as RELU does */
            y[r * ldy + g] = act == FL_ACT_RELU && s <= 0 ? (T)0 : s;
        }
    }
}

/* R rows x G outputs */
FL_HELPER void FL_FN(dot_tile)(const int R, const int G, fl_idx K,
                               const T *x, fl_idx ldx, const T *wm,
                               const T *b, T *y, fl_idx ldy, int act)
{
    ROW lo = {0}, hi = {0};
    T acc[16 * L];
    fl_idx k = 0;
    for (; k + L <= K; k += L) {
        const T *w = wm + k;
        const V x0 = LOAD(x + k);
        const V x1 = R > 1 ? LOAD(x + ldx + k) : x0;
#define DOT_STEP(g)                                                        \
        if (G > g) {                                                       \
            const V wg = LOAD(w + (g) * K);                                \
            FL_FN(dot_add)(&lo, &hi, g, x0 * wg);                          \
            if (R > 1) FL_FN(dot_add)(&lo, &hi, G + g, x1 * wg);           \
        }
        DOT_STEP(0) DOT_STEP(1) DOT_STEP(2) DOT_STEP(3)
        DOT_STEP(4) DOT_STEP(5) DOT_STEP(6) DOT_STEP(7)
        DOT_STEP(8) DOT_STEP(9) DOT_STEP(10) DOT_STEP(11)
        DOT_STEP(12) DOT_STEP(13) DOT_STEP(14) DOT_STEP(15)
#undef DOT_STEP
    }
#define DOT_SPILL(j)                                                       \
    if (R * G > j) STORE(acc + (j) * L, FL_FN(dot_get)(&lo, &hi, j));
    DOT_SPILL(0) DOT_SPILL(1) DOT_SPILL(2) DOT_SPILL(3)
    DOT_SPILL(4) DOT_SPILL(5) DOT_SPILL(6) DOT_SPILL(7)
    DOT_SPILL(8) DOT_SPILL(9) DOT_SPILL(10) DOT_SPILL(11)
    DOT_SPILL(12) DOT_SPILL(13) DOT_SPILL(14) DOT_SPILL(15)
#undef DOT_SPILL
    FL_FN(dot_finish)(R, G, G, acc, k, K, x, ldx, wm, b, y, ldy, act);
}

/* one function per tile shape (see dense_small.inc.h: tile_R_nv):
 * dot_R_G */
#define DOT_FN(R, G)                                                       \
    static __attribute__((noinline)) FL_ATTR void FL_FN(dot_##R##_##G)(   \
        fl_idx K, const T *x, fl_idx ldx, const T *wm, const T *b, T *y,   \
        fl_idx ldy, int act)                                               \
    {                                                                      \
        FL_FN(dot_tile)(R, G, K, x, ldx, wm, b, y, ldy, act);              \
    }
DOT_FN(1, 1) DOT_FN(1, 2) DOT_FN(1, 3) DOT_FN(1, 4) DOT_FN(1, 5)
DOT_FN(1, 6) DOT_FN(1, 7) DOT_FN(1, 8) DOT_FN(1, 9) DOT_FN(1, 10)
DOT_FN(1, 11) DOT_FN(1, 12)
DOT_FN(2, 1) DOT_FN(2, 2) DOT_FN(2, 3) DOT_FN(2, 4) DOT_FN(2, 5)
DOT_FN(2, 6)
#undef DOT_FN

/* rows [i, i + R) x outputs [m, m + g) */
#define DOT_CASE(R, G)                                                     \
    case G:                                                                \
        FL_FN(dot_##R##_##G)(K, x + i * ldx, ldx, wm + m * K,              \
                             b ? b + m : NULL, y + i * ldy + m, ldy,       \
                             tile_act);                                    \
        break;

FL_KERNEL void FL_FN(dense_dot)(fl_idx n, fl_idx K, fl_idx M, const T *x,
                                fl_idx ldx, const T *wm, const T *b, T *y,
                                fl_idx ldy, int act)
{
    const int tile_act = act == FL_ACT_RELU ? act : FL_ACT_NONE;
    fl_idx i = 0, m;
    for (; i + 2 <= n; i += 2)
        for (m = 0; m < M; m += DOT_G2)
            switch (M - m < DOT_G2 ? M - m : DOT_G2) {
            DOT_CASE(2, 1) DOT_CASE(2, 2) DOT_CASE(2, 3) DOT_CASE(2, 4)
            DOT_CASE(2, 5) DOT_CASE(2, 6)
            default: break;
            }
    if (i < n)
        for (m = 0; m < M; m += DOT_G1)
            switch (M - m < DOT_G1 ? M - m : DOT_G1) {
            DOT_CASE(1, 1) DOT_CASE(1, 2) DOT_CASE(1, 3) DOT_CASE(1, 4)
            DOT_CASE(1, 5) DOT_CASE(1, 6) DOT_CASE(1, 7) DOT_CASE(1, 8)
            DOT_CASE(1, 9) DOT_CASE(1, 10) DOT_CASE(1, 11) DOT_CASE(1, 12)
            default: break;
            }
    if (act != FL_ACT_NONE && act != FL_ACT_RELU)
        for (i = 0; i < n; i++) FL_FN(act)(y + i * ldy, M, act);
}
#undef DOT_CASE

/* wm[m * K + k] = wt[k * M + m]: the transposed storage back to rows */
FL_KERNEL void FL_FN(pack_rows)(fl_idx K, fl_idx M, const T *wt, T *wm)
{
    fl_idx k, m;
    for (m = 0; m < M; m++)
        for (k = 0; k < K; k++)
            wm[m * K + k] = wt[k * M + m];
}

#undef ROW
