/*
 * dense_small.inc.h -- the small dense kernel of one (level, dtype)
 * instance: a few rows, weights read in place (no packing).
 *
 * y[i, m] = act(b[m] + sum_k x[i, k] * wt[k, m]) for i < n, m < M;
 * x has row stride ldx, y row stride ldy, b NULL means no bias.
 *
 * A register tile is R rows x NV vectors of L lanes ("wide"), or R rows x
 * one vector with KU independent partial sums along k, which hide the FMA
 * latency when the output is narrow ("narrow").  The column tail (fewer
 * than NV*L columns) reads whole vectors while they stay inside the weight
 * matrix -- the surplus lanes belong to the next weight row, are computed
 * and dropped -- and reads the last rows' tails zero-padded, so nothing is
 * read out of bounds.
 *
 * Accumulators: each tile row is a struct of eight named vectors (fl_row)
 * held in its own local variable a0..a7 and touched only by always-inline
 * helpers whose R, NV and KU are compile-time constants: GCC splits such
 * structs into registers and drops the unused ones.  Arrays indexed in
 * loops were left in memory.
 */

#ifndef FL_DENSE_SMALL_SHARED
#define FL_DENSE_SMALL_SHARED

/* Weights per column panel: half of a 2 MiB L2. */
#define FL_PANEL_BYTES ((fl_idx)1 << 20)

/* Rows k < fl_ksafe(...) of the weights can be read as whole vectors
 * [m0, m0 + width) without passing the end of the matrix. */
static inline fl_idx fl_ksafe(fl_idx K, fl_idx M, fl_idx m0, fl_idx mrem,
                              fl_idx width)
{
    fl_idx last;
    if (mrem >= width) return K;
    last = K * M - m0 - width;
    if (last < 0) return 0;
    return last / M + 1 < K ? last / M + 1 : K;
}
#endif

typedef struct { V v0, v1, v2, v3, v4, v5, v6, v7; } FL_FN(row);
#define ROW FL_FN(row)

/* r.vj = vector j (j < NV) of weight row w */
FL_HELPER void FL_FN(row_load)(const int NV, ROW *r, const T *w)
{
    if (NV > 0) r->v0 = LOAD(w + 0 * L);
    if (NV > 1) r->v1 = LOAD(w + 1 * L);
    if (NV > 2) r->v2 = LOAD(w + 2 * L);
    if (NV > 3) r->v3 = LOAD(w + 3 * L);
    if (NV > 4) r->v4 = LOAD(w + 4 * L);
    if (NV > 5) r->v5 = LOAD(w + 5 * L);
    if (NV > 6) r->v6 = LOAD(w + 6 * L);
    if (NV > 7) r->v7 = LOAD(w + 7 * L);
}

/* the c valid values of p (clamped to 0..L), zero-padded */
FL_HELPER V FL_FN(load_upto)(const T *p, fl_idx c)
{
    return LOAD_PART(p, c < 0 ? 0 : (c > L ? L : c));
}

/* row_load for the last weight rows: only the mrem valid columns */
FL_HELPER void FL_FN(row_load_part)(const int NV, ROW *r, const T *w,
                                    fl_idx mrem)
{
    if (NV > 0) r->v0 = FL_FN(load_upto)(w + 0 * L, mrem - 0 * L);
    if (NV > 1) r->v1 = FL_FN(load_upto)(w + 1 * L, mrem - 1 * L);
    if (NV > 2) r->v2 = FL_FN(load_upto)(w + 2 * L, mrem - 2 * L);
    if (NV > 3) r->v3 = FL_FN(load_upto)(w + 3 * L, mrem - 3 * L);
    if (NV > 4) r->v4 = FL_FN(load_upto)(w + 4 * L, mrem - 4 * L);
    if (NV > 5) r->v5 = FL_FN(load_upto)(w + 5 * L, mrem - 5 * L);
    if (NV > 6) r->v6 = FL_FN(load_upto)(w + 6 * L, mrem - 6 * L);
    if (NV > 7) r->v7 = FL_FN(load_upto)(w + 7 * L, mrem - 7 * L);
}

/* wide: a.vj += xv * w.vj */
FL_HELPER void FL_FN(row_fma)(const int NV, ROW *a, T xv, const ROW *w)
{
    if (NV > 0) a->v0 += xv * w->v0;
    if (NV > 1) a->v1 += xv * w->v1;
    if (NV > 2) a->v2 += xv * w->v2;
    if (NV > 3) a->v3 += xv * w->v3;
    if (NV > 4) a->v4 += xv * w->v4;
    if (NV > 5) a->v5 += xv * w->v5;
    if (NV > 6) a->v6 += xv * w->v6;
    if (NV > 7) a->v7 += xv * w->v7;
}

/* narrow: r.vu = the vector at m0 of weight row k + u (u < KU) */
FL_HELPER void FL_FN(row_load_k)(const int KU, ROW *r, const T *w, fl_idx M)
{
    if (KU > 0) r->v0 = LOAD(w + 0 * M);
    if (KU > 1) r->v1 = LOAD(w + 1 * M);
    if (KU > 2) r->v2 = LOAD(w + 2 * M);
    if (KU > 3) r->v3 = LOAD(w + 3 * M);
    if (KU > 4) r->v4 = LOAD(w + 4 * M);
    if (KU > 5) r->v5 = LOAD(w + 5 * M);
    if (KU > 6) r->v6 = LOAD(w + 6 * M);
    if (KU > 7) r->v7 = LOAD(w + 7 * M);
}

/* narrow: partial sum u gets x[k + u] * (weight row k + u) */
FL_HELPER void FL_FN(row_fma_k)(const int KU, ROW *a, const T *xk,
                                const ROW *w)
{
    if (KU > 0) a->v0 += xk[0] * w->v0;
    if (KU > 1) a->v1 += xk[1] * w->v1;
    if (KU > 2) a->v2 += xk[2] * w->v2;
    if (KU > 3) a->v3 += xk[3] * w->v3;
    if (KU > 4) a->v4 += xk[4] * w->v4;
    if (KU > 5) a->v5 += xk[5] * w->v5;
    if (KU > 6) a->v6 += xk[6] * w->v6;
    if (KU > 7) a->v7 += xk[7] * w->v7;
}

/* narrow: the partial sums into v0 (the unused ones are 0) */
FL_HELPER void FL_FN(row_sum_k)(ROW *a)
{
    a->v0 = ((a->v0 + a->v1) + (a->v2 + a->v3))
            + ((a->v4 + a->v5) + (a->v6 + a->v7));
}

/* One accumulator to y[off ..]: bias, relu, store c valid lanes (none if
 * c <= 0, a partial vector if c < L). */
FL_HELPER void FL_FN(store_acc)(V a, T *y, const T *b, fl_idx off, fl_idx c,
                                int act)
{
    if (c <= 0) return;
    if (b) a += c >= L ? LOAD(b + off) : LOAD_PART(b + off, c);
    if (act == FL_ACT_RELU) a = RELU(a);
    if (c >= L) STORE(y + off, a);
    else STORE_PART(y + off, a, c);
}

/* tile row a to output row y, columns [m0, m0 + mrem) */
FL_HELPER void FL_FN(row_store)(const int NV, const ROW *a, T *y, const T *b,
                                fl_idx m0, fl_idx mrem, int act)
{
    if (NV > 0) FL_FN(store_acc)(a->v0, y, b, m0 + 0 * L, mrem - 0 * L, act);
    if (NV > 1) FL_FN(store_acc)(a->v1, y, b, m0 + 1 * L, mrem - 1 * L, act);
    if (NV > 2) FL_FN(store_acc)(a->v2, y, b, m0 + 2 * L, mrem - 2 * L, act);
    if (NV > 3) FL_FN(store_acc)(a->v3, y, b, m0 + 3 * L, mrem - 3 * L, act);
    if (NV > 4) FL_FN(store_acc)(a->v4, y, b, m0 + 4 * L, mrem - 4 * L, act);
    if (NV > 5) FL_FN(store_acc)(a->v5, y, b, m0 + 5 * L, mrem - 5 * L, act);
    if (NV > 6) FL_FN(store_acc)(a->v6, y, b, m0 + 6 * L, mrem - 6 * L, act);
    if (NV > 7) FL_FN(store_acc)(a->v7, y, b, m0 + 7 * L, mrem - 7 * L, act);
}

/* Wide tile: R rows x NV vectors at columns [m0, m0 + NV*L); mrem columns
 * from m0 are valid. */
FL_HELPER void FL_FN(wide)(const int R, const int NV, fl_idx K, fl_idx M,
                           fl_idx m0, fl_idx mrem, const T *x, fl_idx ldx,
                           const T *wt, const T *b, T *y, fl_idx ldy, int act)
{
    ROW a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    ROW a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
    fl_idx k, ksafe = fl_ksafe(K, M, m0, mrem, (fl_idx)NV * L);
    for (k = 0; k < K; k++) {
        const T *w = wt + k * M + m0;
        const T *xk = x + k;
        ROW wk;
        if (k < ksafe) FL_FN(row_load)(NV, &wk, w);
        else FL_FN(row_load_part)(NV, &wk, w, mrem);
        if (R > 0) FL_FN(row_fma)(NV, &a0, xk[0 * ldx], &wk);
        if (R > 1) FL_FN(row_fma)(NV, &a1, xk[1 * ldx], &wk);
        if (R > 2) FL_FN(row_fma)(NV, &a2, xk[2 * ldx], &wk);
        if (R > 3) FL_FN(row_fma)(NV, &a3, xk[3 * ldx], &wk);
        if (R > 4) FL_FN(row_fma)(NV, &a4, xk[4 * ldx], &wk);
        if (R > 5) FL_FN(row_fma)(NV, &a5, xk[5 * ldx], &wk);
        if (R > 6) FL_FN(row_fma)(NV, &a6, xk[6 * ldx], &wk);
        if (R > 7) FL_FN(row_fma)(NV, &a7, xk[7 * ldx], &wk);
    }
    if (R > 0) FL_FN(row_store)(NV, &a0, y + 0 * ldy, b, m0, mrem, act);
    if (R > 1) FL_FN(row_store)(NV, &a1, y + 1 * ldy, b, m0, mrem, act);
    if (R > 2) FL_FN(row_store)(NV, &a2, y + 2 * ldy, b, m0, mrem, act);
    if (R > 3) FL_FN(row_store)(NV, &a3, y + 3 * ldy, b, m0, mrem, act);
    if (R > 4) FL_FN(row_store)(NV, &a4, y + 4 * ldy, b, m0, mrem, act);
    if (R > 5) FL_FN(row_store)(NV, &a5, y + 5 * ldy, b, m0, mrem, act);
    if (R > 6) FL_FN(row_store)(NV, &a6, y + 6 * ldy, b, m0, mrem, act);
    if (R > 7) FL_FN(row_store)(NV, &a7, y + 7 * ldy, b, m0, mrem, act);
}

/* Narrow tile: R rows x one vector at column m0, KU partial sums along k;
 * mrem columns from m0 are valid. */
FL_HELPER void FL_FN(narrow)(const int R, const int KU, fl_idx K, fl_idx M,
                             fl_idx m0, fl_idx mrem, const T *x, fl_idx ldx,
                             const T *wt, const T *b, T *y, fl_idx ldy,
                             int act)
{
    ROW a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    ROW a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
    fl_idx k = 0, ksafe = fl_ksafe(K, M, m0, mrem, (fl_idx)L);
    for (; k + KU <= ksafe; k += KU) {
        const T *w = wt + k * M + m0;
        const T *xk = x + k;
        ROW wk;
        FL_FN(row_load_k)(KU, &wk, w, M);
        if (R > 0) FL_FN(row_fma_k)(KU, &a0, xk + 0 * ldx, &wk);
        if (R > 1) FL_FN(row_fma_k)(KU, &a1, xk + 1 * ldx, &wk);
        if (R > 2) FL_FN(row_fma_k)(KU, &a2, xk + 2 * ldx, &wk);
        if (R > 3) FL_FN(row_fma_k)(KU, &a3, xk + 3 * ldx, &wk);
        if (R > 4) FL_FN(row_fma_k)(KU, &a4, xk + 4 * ldx, &wk);
        if (R > 5) FL_FN(row_fma_k)(KU, &a5, xk + 5 * ldx, &wk);
        if (R > 6) FL_FN(row_fma_k)(KU, &a6, xk + 6 * ldx, &wk);
        if (R > 7) FL_FN(row_fma_k)(KU, &a7, xk + 7 * ldx, &wk);
    }
    for (; k < K; k++) {
        const T *w = wt + k * M + m0;
        V w0 = k < ksafe ? LOAD(w) : LOAD_PART(w, mrem < L ? mrem : L);
        if (R > 0) a0.v0 += x[0 * ldx + k] * w0;
        if (R > 1) a1.v0 += x[1 * ldx + k] * w0;
        if (R > 2) a2.v0 += x[2 * ldx + k] * w0;
        if (R > 3) a3.v0 += x[3 * ldx + k] * w0;
        if (R > 4) a4.v0 += x[4 * ldx + k] * w0;
        if (R > 5) a5.v0 += x[5 * ldx + k] * w0;
        if (R > 6) a6.v0 += x[6 * ldx + k] * w0;
        if (R > 7) a7.v0 += x[7 * ldx + k] * w0;
    }
    if (R > 0) FL_FN(row_sum_k)(&a0);
    if (R > 1) FL_FN(row_sum_k)(&a1);
    if (R > 2) FL_FN(row_sum_k)(&a2);
    if (R > 3) FL_FN(row_sum_k)(&a3);
    if (R > 4) FL_FN(row_sum_k)(&a4);
    if (R > 5) FL_FN(row_sum_k)(&a5);
    if (R > 6) FL_FN(row_sum_k)(&a6);
    if (R > 7) FL_FN(row_sum_k)(&a7);
    if (R > 0) FL_FN(row_store)(1, &a0, y + 0 * ldy, b, m0, mrem, act);
    if (R > 1) FL_FN(row_store)(1, &a1, y + 1 * ldy, b, m0, mrem, act);
    if (R > 2) FL_FN(row_store)(1, &a2, y + 2 * ldy, b, m0, mrem, act);
    if (R > 3) FL_FN(row_store)(1, &a3, y + 3 * ldy, b, m0, mrem, act);
    if (R > 4) FL_FN(row_store)(1, &a4, y + 4 * ldy, b, m0, mrem, act);
    if (R > 5) FL_FN(row_store)(1, &a5, y + 5 * ldy, b, m0, mrem, act);
    if (R > 6) FL_FN(row_store)(1, &a6, y + 6 * ldy, b, m0, mrem, act);
    if (R > 7) FL_FN(row_store)(1, &a7, y + 7 * ldy, b, m0, mrem, act);
}

/* R rows, output columns [mbeg, mend): wide blocks of NW vectors, then
 * one-vector blocks with KU partial sums for the tail */
FL_HELPER void FL_FN(rows)(const int R, const int NW, const int KU, fl_idx K,
                           fl_idx M, fl_idx mbeg, fl_idx mend, const T *x,
                           fl_idx ldx, const T *wt, const T *b, T *y,
                           fl_idx ldy, int act)
{
    fl_idx m0 = mbeg;
    const fl_idx width = (fl_idx)NW * L;
    for (; m0 + width <= mend; m0 += width)
        FL_FN(wide)(R, NW, K, M, m0, width, x, ldx, wt, b, y, ldy, act);
    for (; m0 < mend; m0 += L)
        FL_FN(narrow)(R, KU, K, M, m0, mend - m0, x, ldx, wt, b, y, ldy,
                      act);
}

/* Column panels outermost, each about FL_PANEL_BYTES of weights, so a
 * panel stays in L2 while every row block streams through it.  The tiles
 * apply the bias and relu in registers; any other activation runs over
 * the stored output at the end (a call with accumulators live would make
 * GCC keep them on the stack). */
FL_KERNEL void FL_FN(dense_small)(fl_idx n, fl_idx K, fl_idx M, const T *x,
                                  fl_idx ldx, const T *wt, const T *b, T *y,
                                  fl_idx ldy, int act)
{
    const int tile_act = act == FL_ACT_RELU ? act : FL_ACT_NONE;
    const fl_idx unit = (fl_idx)FL_SMALL_W8 * L * 4;
    fl_idx cw = FL_PANEL_BYTES / (K * (fl_idx)sizeof(T));
    fl_idx c0, c1, i;
    cw -= cw % unit;
    if (cw < unit) cw = unit;
    for (c0 = 0; c0 < M; c0 = c1) {
        c1 = M - c0 <= cw ? M : c0 + cw;
        i = 0;
        for (; i + 8 <= n; i += 8)
            FL_FN(rows)(8, FL_SMALL_W8, FL_SMALL_W8, K, M, c0, c1,
                        x + i * ldx, ldx, wt, b, y + i * ldy, ldy, tile_act);
        for (; i + 4 <= n; i += 4)
            FL_FN(rows)(4, FL_SMALL_W4, FL_SMALL_W4, K, M, c0, c1,
                        x + i * ldx, ldx, wt, b, y + i * ldy, ldy, tile_act);
        switch (n - i) {
        case 3:
            FL_FN(rows)(3, FL_SMALL_W4, FL_SMALL_W4, K, M, c0, c1,
                        x + i * ldx, ldx, wt, b, y + i * ldy, ldy, tile_act);
            break;
        case 2:
            FL_FN(rows)(2, FL_SMALL_W2, FL_SMALL_W2, K, M, c0, c1,
                        x + i * ldx, ldx, wt, b, y + i * ldy, ldy, tile_act);
            break;
        case 1:
            FL_FN(rows)(1, FL_SMALL_W1, FL_SMALL_W1, K, M, c0, c1,
                        x + i * ldx, ldx, wt, b, y + i * ldy, ldy, tile_act);
            break;
        default:
            break;
        }
    }
    /* one call over a contiguous output: the vector sigmoid then runs
     * across row ends, as the callers' pass over the output did */
    if (act != FL_ACT_NONE && act != FL_ACT_RELU) {
        if (ldy == M)
            FL_FN(act)(y, n * M, act);
        else
            for (i = 0; i < n; i++) FL_FN(act)(y + i * ldy, M, act);
    }
}

#undef ROW
