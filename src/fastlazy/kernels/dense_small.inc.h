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

/* Accumulator i of a row (i a compile-time constant once the loops are
 * unrolled): read, and add to.  Members by name, never through a pointer
 * to one, so the struct still splits into registers. */
FL_HELPER V FL_FN(acc_get)(const ROW *r, const int i)
{
    return i == 0 ? r->v0 : i == 1 ? r->v1 : i == 2 ? r->v2 :
           i == 3 ? r->v3 : i == 4 ? r->v4 : i == 5 ? r->v5 :
           i == 6 ? r->v6 : r->v7;
}

FL_HELPER void FL_FN(acc_add)(ROW *r, const int i, V v)
{
    if (i == 0) r->v0 += v;
    else if (i == 1) r->v1 += v;
    else if (i == 2) r->v2 += v;
    else if (i == 3) r->v3 += v;
    else if (i == 4) r->v4 += v;
    else if (i == 5) r->v5 += v;
    else if (i == 6) r->v6 += v;
    else r->v7 += v;
}

/* partial sum u of a row's NV vectors: accumulators u*NV .. u*NV+NV-1
 * += xv * (vectors j < NV of weight row w).  Written out, not looped: the
 * accumulator indices must be constants when GCC splits the struct. */
FL_HELPER void FL_FN(row_fma_u)(const int NV, const int u, ROW *a, T xv,
                                const T *w)
{
    if (NV > 0) FL_FN(acc_add)(a, u * NV + 0, xv * LOAD(w + 0 * L));
    if (NV > 1) FL_FN(acc_add)(a, u * NV + 1, xv * LOAD(w + 1 * L));
    if (NV > 2) FL_FN(acc_add)(a, u * NV + 2, xv * LOAD(w + 2 * L));
    if (NV > 3) FL_FN(acc_add)(a, u * NV + 3, xv * LOAD(w + 3 * L));
    if (NV > 4) FL_FN(acc_add)(a, u * NV + 4, xv * LOAD(w + 4 * L));
    if (NV > 5) FL_FN(acc_add)(a, u * NV + 5, xv * LOAD(w + 5 * L));
    if (NV > 6) FL_FN(acc_add)(a, u * NV + 6, xv * LOAD(w + 6 * L));
    if (NV > 7) FL_FN(acc_add)(a, u * NV + 7, xv * LOAD(w + 7 * L));
}

/* partial sums u and u + h (u < h) of the NV vectors: the first += the
 * second */
FL_HELPER void FL_FN(row_fold)(const int NV, const int h, ROW *a)
{
#define FL_FOLD(u, j)                                                      \
    if (u < h && NV > j)                                                   \
        FL_FN(acc_add)(a, u * NV + j, FL_FN(acc_get)(a, (u + h) * NV + j));
#define FL_FOLD_U(u) FL_FOLD(u, 0) FL_FOLD(u, 1) FL_FOLD(u, 2) FL_FOLD(u, 3) \
    FL_FOLD(u, 4) FL_FOLD(u, 5) FL_FOLD(u, 6) FL_FOLD(u, 7)
    FL_FOLD_U(0) FL_FOLD_U(1) FL_FOLD_U(2) FL_FOLD_U(3)
#undef FL_FOLD_U
#undef FL_FOLD
}

/* the KU (1, 2, 4 or 8) partial sums of each of the NV vectors into
 * accumulators 0..NV-1, pairwise */
FL_HELPER void FL_FN(row_sum_u)(const int NV, const int KU, ROW *a)
{
    if (KU >= 8) FL_FN(row_fold)(NV, 4, a);
    if (KU >= 4) FL_FN(row_fold)(NV, 2, a);
    if (KU >= 2) FL_FN(row_fold)(NV, 1, a);
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

/* The end of a tile with fewer valid columns than vectors: its sums over
 * weight rows [0, k0) are in acc (R rows of w values), rows [k0, K) --
 * those whose whole vectors would read past the end of the weights --
 * are added here, then the bias and relu, and the mrem valid columns go
 * to y.  Plain C in a function of its own: partial loads and stores next
 * to the tile's loop made GCC keep its accumulators on the stack. */
static __attribute__((noinline)) FL_ATTR void FL_FN(tile_finish)(
    int R, int w, T *acc, fl_idx k0, fl_idx K, fl_idx M, fl_idx m0,
    fl_idx mrem, const T *x, fl_idx ldx, const T *wt, const T *b, T *y,
    fl_idx ldy, int act)
{
    int r;
    fl_idx k, m;
    for (r = 0; r < R; r++) {
        T *ar = acc + r * w;
        T *yr = y + r * ldy + m0;
        for (k = k0; k < K; k++) {
            const T xv = x[r * ldx + k];
            const T *wk = wt + k * M + m0;
            for (m = 0; m < mrem; m++)
                ar[m] += xv * wk[m];
        }
        for (m = 0; m < mrem; m++) {
            T v = b ? ar[m] + b[m0 + m] : ar[m];
            /* relu keeps NaN, as RELU does */
            yr[m] = act == FL_ACT_RELU && v <= 0 ? (T)0 : v;
        }
    }
}

/* row a's NV vectors to acc (whole vectors) */
FL_HELPER void FL_FN(row_spill)(const int NV, const ROW *a, T *acc)
{
    if (NV > 0) STORE(acc + 0 * L, a->v0);
    if (NV > 1) STORE(acc + 1 * L, a->v1);
    if (NV > 2) STORE(acc + 2 * L, a->v2);
    if (NV > 3) STORE(acc + 3 * L, a->v3);
    if (NV > 4) STORE(acc + 4 * L, a->v4);
    if (NV > 5) STORE(acc + 5 * L, a->v5);
    if (NV > 6) STORE(acc + 6 * L, a->v6);
    if (NV > 7) STORE(acc + 7 * L, a->v7);
}

/* A tile: R rows x NV vectors at columns [m0, m0 + NV*L), with KU
 * partial sums along k (R*NV*KU accumulators, at most 8 per row).  KU > 1
 * keeps enough independent FMA chains going when the tile is narrow (few
 * rows, few vectors): an FMA's result is needed again KU weight rows later
 * instead of at the next one.  FULL: all NV*L columns are valid (mrem is
 * NV*L); else mrem < NV*L of them, and tile_finish writes them. */
FL_HELPER void FL_FN(tile)(const int R, const int NV, const int KU,
                           const int FULL, fl_idx K, fl_idx M, fl_idx m0,
                           fl_idx mrem, const T *x, fl_idx ldx, const T *wt,
                           const T *b, T *y, fl_idx ldy, int act)
{
    ROW a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    ROW a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
    fl_idx k = 0;
    const fl_idx ksafe = FULL ? K : fl_ksafe(K, M, m0, mrem, (fl_idx)NV * L);
    for (; k + KU <= ksafe; k += KU) {
        /* weight row k + u into partial sum u, for every tile row */
#define FL_STEP(u)                                                         \
        if (KU > u) {                                                      \
            const T *w = wt + (k + u) * M + m0;                            \
            const T *xk = x + k + u;                                       \
            if (R > 0) FL_FN(row_fma_u)(NV, u, &a0, xk[0 * ldx], w);       \
            if (R > 1) FL_FN(row_fma_u)(NV, u, &a1, xk[1 * ldx], w);       \
            if (R > 2) FL_FN(row_fma_u)(NV, u, &a2, xk[2 * ldx], w);       \
            if (R > 3) FL_FN(row_fma_u)(NV, u, &a3, xk[3 * ldx], w);       \
            if (R > 4) FL_FN(row_fma_u)(NV, u, &a4, xk[4 * ldx], w);       \
            if (R > 5) FL_FN(row_fma_u)(NV, u, &a5, xk[5 * ldx], w);       \
            if (R > 6) FL_FN(row_fma_u)(NV, u, &a6, xk[6 * ldx], w);       \
            if (R > 7) FL_FN(row_fma_u)(NV, u, &a7, xk[7 * ldx], w);       \
        }
        FL_STEP(0) FL_STEP(1) FL_STEP(2) FL_STEP(3)
        FL_STEP(4) FL_STEP(5) FL_STEP(6) FL_STEP(7)
#undef FL_STEP
    }
    for (; k < ksafe; k++) {
        const T *w = wt + k * M + m0;
        const T *xk = x + k;
        if (R > 0) FL_FN(row_fma_u)(NV, 0, &a0, xk[0 * ldx], w);
        if (R > 1) FL_FN(row_fma_u)(NV, 0, &a1, xk[1 * ldx], w);
        if (R > 2) FL_FN(row_fma_u)(NV, 0, &a2, xk[2 * ldx], w);
        if (R > 3) FL_FN(row_fma_u)(NV, 0, &a3, xk[3 * ldx], w);
        if (R > 4) FL_FN(row_fma_u)(NV, 0, &a4, xk[4 * ldx], w);
        if (R > 5) FL_FN(row_fma_u)(NV, 0, &a5, xk[5 * ldx], w);
        if (R > 6) FL_FN(row_fma_u)(NV, 0, &a6, xk[6 * ldx], w);
        if (R > 7) FL_FN(row_fma_u)(NV, 0, &a7, xk[7 * ldx], w);
    }
    if (KU > 1) {
        if (R > 0) FL_FN(row_sum_u)(NV, KU, &a0);
        if (R > 1) FL_FN(row_sum_u)(NV, KU, &a1);
        if (R > 2) FL_FN(row_sum_u)(NV, KU, &a2);
        if (R > 3) FL_FN(row_sum_u)(NV, KU, &a3);
        if (R > 4) FL_FN(row_sum_u)(NV, KU, &a4);
        if (R > 5) FL_FN(row_sum_u)(NV, KU, &a5);
        if (R > 6) FL_FN(row_sum_u)(NV, KU, &a6);
        if (R > 7) FL_FN(row_sum_u)(NV, KU, &a7);
    }
    if (!FULL) {
        T acc[16 * L];      /* R * NV <= 16: R rows of NV vectors */
        if (R > 0) FL_FN(row_spill)(NV, &a0, acc + 0 * NV * L);
        if (R > 1) FL_FN(row_spill)(NV, &a1, acc + 1 * NV * L);
        if (R > 2) FL_FN(row_spill)(NV, &a2, acc + 2 * NV * L);
        if (R > 3) FL_FN(row_spill)(NV, &a3, acc + 3 * NV * L);
        if (R > 4) FL_FN(row_spill)(NV, &a4, acc + 4 * NV * L);
        if (R > 5) FL_FN(row_spill)(NV, &a5, acc + 5 * NV * L);
        if (R > 6) FL_FN(row_spill)(NV, &a6, acc + 6 * NV * L);
        if (R > 7) FL_FN(row_spill)(NV, &a7, acc + 7 * NV * L);
        FL_FN(tile_finish)(R, NV * L, acc, k, K, M, m0, mrem, x, ldx, wt, b,
                           y, ldy, act);
        return;
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

/* Each tile shape is its own function: in one function with all the
 * others, GCC kept an accumulator of some on the stack (a store and a load
 * on every FMA chain: 1x100x100 ran 1.7x slower).  tile_R_nv: R rows, nv
 * vectors; nv == NW is the wide tile, a smaller nv the tail of a row
 * block (fewer valid columns than NW*L), which spends the same
 * accumulators on partial sums instead of on columns that do not exist. */
#define FL_TILE_FN(R, NW, nv)                                              \
    static __attribute__((noinline, unused)) FL_ATTR void                 \
    FL_FN(tile_##R##_##nv)(fl_idx K, fl_idx M, fl_idx m0, fl_idx mrem,    \
                           const T *x, fl_idx ldx, const T *wt,           \
                           const T *b, T *y, fl_idx ldy, int act)         \
    {                                                                      \
        if (nv <= NW)                                                      \
            FL_FN(tile)(R, nv, NW / nv > 1 ? NW / nv : 1, 0, K, M, m0,     \
                        mrem, x, ldx, wt, b, y, ldy, act);                 \
    }
#define FL_TILE_CASE(R, nv)                                                \
    case nv:                                                               \
        FL_FN(tile_##R##_##nv)(K, M, m0, mrem, x, ldx, wt, b, y, ldy, act); \
        break;
#define FL_WIDE_FN(R, NW)                                                  \
    static __attribute__((noinline)) FL_ATTR void                         \
    FL_FN(wide_##R)(fl_idx K, fl_idx M, fl_idx m0, const T *x, fl_idx ldx, \
                    const T *wt, const T *b, T *y, fl_idx ldy, int act)   \
    {                                                                      \
        FL_FN(tile)(R, NW, 1, 1, K, M, m0, NW * L, x, ldx, wt, b, y, ldy,  \
                    act);                                                  \
    }
/* rows_R: R rows, output columns [mbeg, mend): wide tiles of NW vectors,
 * then one tile for the rest */
#define FL_ROWS_FN(R, NW)                                                  \
    FL_TILE_FN(R, NW, 1) FL_TILE_FN(R, NW, 2) FL_TILE_FN(R, NW, 3)         \
    FL_TILE_FN(R, NW, 4) FL_TILE_FN(R, NW, 5) FL_TILE_FN(R, NW, 6)         \
    FL_TILE_FN(R, NW, 7) FL_TILE_FN(R, NW, 8) FL_WIDE_FN(R, NW)            \
    FL_HELPER void FL_FN(rows_##R)(fl_idx K, fl_idx M, fl_idx mbeg,        \
                                   fl_idx mend, const T *x, fl_idx ldx,    \
                                   const T *wt, const T *b, T *y,          \
                                   fl_idx ldy, int act)                    \
    {                                                                      \
        fl_idx m0 = mbeg, mrem;                                            \
        for (; m0 + NW * L <= mend; m0 += NW * L)                          \
            FL_FN(wide_##R)(K, M, m0, x, ldx, wt, b, y, ldy, act);         \
        mrem = mend - m0;                                                  \
        if (mrem <= 0)                                                     \
            return;                                                        \
        switch ((mrem + L - 1) / L) {                                      \
        FL_TILE_CASE(R, 1) FL_TILE_CASE(R, 2) FL_TILE_CASE(R, 3)           \
        FL_TILE_CASE(R, 4) FL_TILE_CASE(R, 5) FL_TILE_CASE(R, 6)           \
        FL_TILE_CASE(R, 7) FL_TILE_CASE(R, 8)                              \
        default: break;                                                    \
        }                                                                  \
    }
/* expands the descriptor's widths before pasting */
#define FL_ROWS_FN_(R, NW) FL_ROWS_FN(R, NW)
FL_ROWS_FN_(8, FL_SMALL_W8)
FL_ROWS_FN_(4, FL_SMALL_W4)
FL_ROWS_FN_(3, FL_SMALL_W4)
FL_ROWS_FN_(2, FL_SMALL_W2)
FL_ROWS_FN_(1, FL_SMALL_W1)
#undef FL_ROWS_FN_
#undef FL_ROWS_FN
#undef FL_TILE_CASE
#undef FL_WIDE_FN
#undef FL_TILE_FN

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
    fl_idx cw = M, c0, c1, i;
    if (K * M * (fl_idx)sizeof(T) > FL_PANEL_BYTES) {
        /* (the divisions only for weights bigger than a panel) */
        cw = FL_PANEL_BYTES / (K * (fl_idx)sizeof(T));
        cw -= cw % unit;
        if (cw < unit) cw = unit;
    }
    for (c0 = 0; c0 < M; c0 = c1) {
        c1 = M - c0 <= cw ? M : c0 + cw;
        i = 0;
        for (; i + 8 <= n; i += 8)
            FL_FN(rows_8)(K, M, c0, c1,
                        x + i * ldx, ldx, wt, b, y + i * ldy, ldy, tile_act);
        for (; i + 4 <= n; i += 4)
            FL_FN(rows_4)(K, M, c0, c1,
                        x + i * ldx, ldx, wt, b, y + i * ldy, ldy, tile_act);
        switch (n - i) {
        case 3:
            FL_FN(rows_3)(K, M, c0, c1,
                        x + i * ldx, ldx, wt, b, y + i * ldy, ldy, tile_act);
            break;
        case 2:
            FL_FN(rows_2)(K, M, c0, c1,
                        x + i * ldx, ldx, wt, b, y + i * ldy, ldy, tile_act);
            break;
        case 1:
            FL_FN(rows_1)(K, M, c0, c1,
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
