/*
 * gemm_packed.inc.h -- the batched dense kernel on packed weights, and the
 * convolution's GEMM on the same tile, for one (level, dtype) instance.
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

#ifndef FL_PF_BYTES
/* bytes ahead of the current weight row to prefetch: 8 rows of an AVX-512
 * float panel, measured best of 512/1024/2048 for 1024x1024 and 1024x4096 */
#define FL_PF_BYTES 1024
#endif

/* The accumulators of one tile row: the panel's two vectors.  Each row is
 * its own local variable, touched only by always-inline helpers, so GCC
 * keeps all MR x 2 in registers (see dense_small.inc.h). */
typedef struct { V lo, hi; } FL_FN(pair);
#define PAIR FL_FN(pair)

FL_HELPER void FL_FN(pk_fma)(PAIR *c, T a, V b0, V b1)
{
    c->lo += a * b0;
    c->hi += a * b1;
}

/* bias (bq: NR values), relu, store the row's NR columns */
FL_HELPER void FL_FN(pk_store)(const PAIR *c, T *yp, const T *bq, int act)
{
    V lo = c->lo, hi = c->hi;
    if (bq) {
        lo += LOAD(bq);
        hi += LOAD(bq + L);
    }
    if (act == FL_ACT_RELU) {
        lo = RELU(lo);
        hi = RELU(hi);
    }
    STORE(yp, lo);
    STORE(yp + L, hi);
}

/* R (<= MR) rows x one panel bp (K x NR); all NR columns of y are written
 * (the caller gives a scratch tile for a partial panel: a partial store
 * here, through a buffer or a call, cost the AVX loops their register
 * allocation).  b: the panel's bias (nc valid values) or NULL; act: none
 * or relu (applied in registers). */
FL_HELPER void FL_FN(pk_tile)(const int R, fl_idx K, const T *x, fl_idx ldx,
                              const T *bp, const T *b, fl_idx nc, T *y,
                              fl_idx ldy, int act)
{
    PAIR c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0}, c4 = {0}, c5 = {0};
    PAIR c6 = {0}, c7 = {0}, c8 = {0}, c9 = {0}, c10 = {0}, c11 = {0};
    T bpad[NR];
    const T *bq = b;
    fl_idx k;
    if (b && nc < NR) {             /* a partial panel: zero-padded bias */
        memset(bpad, 0, sizeof(bpad));
        memcpy(bpad, b, (size_t)nc * sizeof(T));
        bq = bpad;
    }
    for (k = 0; k < K; k++) {
        const T *w = bp + k * NR;
        /* rows 6.. from a second base, sharing the row offsets: twelve
         * offsets and the loop's own registers were more than the 15
         * general registers, and GCC spilled one inside the loop (the
         * AVX-512 conv GEMM ran 3-5% slower for it) */
        const T *xk = x + k;
        const T *xk6 = xk + 6 * ldx;
        V b0, b1;
        __builtin_prefetch((const char *)w + FL_PF_BYTES, 0, 3);
        if (NR * sizeof(T) > 64)    /* a panel row spans two lines */
            __builtin_prefetch((const char *)w + FL_PF_BYTES + 64, 0, 3);
        b0 = LOAD(w);
        b1 = LOAD(w + L);
        if (R > 0) FL_FN(pk_fma)(&c0, xk[0 * ldx], b0, b1);
        if (R > 1) FL_FN(pk_fma)(&c1, xk[1 * ldx], b0, b1);
        if (R > 2) FL_FN(pk_fma)(&c2, xk[2 * ldx], b0, b1);
        if (R > 3) FL_FN(pk_fma)(&c3, xk[3 * ldx], b0, b1);
        if (R > 4) FL_FN(pk_fma)(&c4, xk[4 * ldx], b0, b1);
        if (R > 5) FL_FN(pk_fma)(&c5, xk[5 * ldx], b0, b1);
        if (R > 6) FL_FN(pk_fma)(&c6, xk6[0 * ldx], b0, b1);
        if (R > 7) FL_FN(pk_fma)(&c7, xk6[1 * ldx], b0, b1);
        if (R > 8) FL_FN(pk_fma)(&c8, xk6[2 * ldx], b0, b1);
        if (R > 9) FL_FN(pk_fma)(&c9, xk6[3 * ldx], b0, b1);
        if (R > 10) FL_FN(pk_fma)(&c10, xk6[4 * ldx], b0, b1);
        if (R > 11) FL_FN(pk_fma)(&c11, xk6[5 * ldx], b0, b1);
    }
    if (R > 0) FL_FN(pk_store)(&c0, y + 0 * ldy, bq, act);
    if (R > 1) FL_FN(pk_store)(&c1, y + 1 * ldy, bq, act);
    if (R > 2) FL_FN(pk_store)(&c2, y + 2 * ldy, bq, act);
    if (R > 3) FL_FN(pk_store)(&c3, y + 3 * ldy, bq, act);
    if (R > 4) FL_FN(pk_store)(&c4, y + 4 * ldy, bq, act);
    if (R > 5) FL_FN(pk_store)(&c5, y + 5 * ldy, bq, act);
    if (R > 6) FL_FN(pk_store)(&c6, y + 6 * ldy, bq, act);
    if (R > 7) FL_FN(pk_store)(&c7, y + 7 * ldy, bq, act);
    if (R > 8) FL_FN(pk_store)(&c8, y + 8 * ldy, bq, act);
    if (R > 9) FL_FN(pk_store)(&c9, y + 9 * ldy, bq, act);
    if (R > 10) FL_FN(pk_store)(&c10, y + 10 * ldy, bq, act);
    if (R > 11) FL_FN(pk_store)(&c11, y + 11 * ldy, bq, act);
}

/* One function per row count R <= MR, each with its own register
 * allocation: with every row count inlined into one body, GCC kept the
 * accumulators of some of them on the stack. */
#define FL_PK_ROWS(R) FL_KERNEL void FL_FN(pk##R)(fl_idx K, const T *x, fl_idx ldx, const T *bp, const T *b, fl_idx nc, T *y, fl_idx ldy, int act) { FL_FN(pk_tile)(R, K, x, ldx, bp, b, nc, y, ldy, act); }
FL_PK_ROWS(1)
FL_PK_ROWS(2)
FL_PK_ROWS(3)
FL_PK_ROWS(4)
FL_PK_ROWS(5)
FL_PK_ROWS(6)
#if FL_MR > 6
FL_PK_ROWS(7)
FL_PK_ROWS(8)
FL_PK_ROWS(9)
FL_PK_ROWS(10)
FL_PK_ROWS(11)
FL_PK_ROWS(12)
#endif
#undef FL_PK_ROWS

/* R (1..MR) rows x one panel, by the function for that row count */
FL_HELPER void FL_FN(pk_rows)(fl_idx R, fl_idx K, const T *x, fl_idx ldx,
                              const T *bp, const T *b, fl_idx nc, T *y,
                              fl_idx ldy, int act)
{
    switch (R) {
    case 1: FL_FN(pk1)(K, x, ldx, bp, b, nc, y, ldy, act); break;
    case 2: FL_FN(pk2)(K, x, ldx, bp, b, nc, y, ldy, act); break;
    case 3: FL_FN(pk3)(K, x, ldx, bp, b, nc, y, ldy, act); break;
    case 4: FL_FN(pk4)(K, x, ldx, bp, b, nc, y, ldy, act); break;
    case 5: FL_FN(pk5)(K, x, ldx, bp, b, nc, y, ldy, act); break;
    case 6: FL_FN(pk6)(K, x, ldx, bp, b, nc, y, ldy, act); break;
#if FL_MR > 6
    case 7: FL_FN(pk7)(K, x, ldx, bp, b, nc, y, ldy, act); break;
    case 8: FL_FN(pk8)(K, x, ldx, bp, b, nc, y, ldy, act); break;
    case 9: FL_FN(pk9)(K, x, ldx, bp, b, nc, y, ldy, act); break;
    case 10: FL_FN(pk10)(K, x, ldx, bp, b, nc, y, ldy, act); break;
    case 11: FL_FN(pk11)(K, x, ldx, bp, b, nc, y, ldy, act); break;
    case 12: FL_FN(pk12)(K, x, ldx, bp, b, nc, y, ldy, act); break;
#endif
    default: break;
    }
}

/* R rows x one panel into y; a partial panel (nc < NR) goes through a
 * full-width scratch tile, of which the nc valid columns are copied */
FL_HELPER void FL_FN(pk_group)(fl_idx R, fl_idx K, const T *x, fl_idx ldx,
                               const T *bp, const T *b, fl_idx nc, T *y,
                               fl_idx ldy, int act)
{
    T t[MR * NR];
    fl_idx r;
    if (nc == NR) {
        FL_FN(pk_rows)(R, K, x, ldx, bp, b, nc, y, ldy, act);
        return;
    }
    FL_FN(pk_rows)(R, K, x, ldx, bp, b, nc, t, NR, act);
    for (r = 0; r < R; r++)
        memcpy(y + r * ldy, t + r * NR, (size_t)nc * sizeof(T));
}

/* n rows x one panel bp (K x NR, nc valid columns; bb, y at its first
 * column): full MR-row groups, then the rest in one or two groups -- a
 * remainder under MR/2 joins the last full group and the two split evenly
 * (256 rows at MR = 12: 20 x 12 + 8 + 8, not 21 x 12 + 4). */
FL_HELPER void FL_FN(panel_rows)(fl_idx n, fl_idx K, const T *x, fl_idx ldx,
                                 const T *bp, const T *bb, fl_idx nc, T *y,
                                 fl_idx ldy, int act)
{
    fl_idx full = n / MR, rest = n % MR, i, g, part;
    if (full > 0 && rest > 0 && rest < MR / 2) {
        full--;
        rest += MR;
    }
    for (i = 0, g = 0; g < full; g++, i += MR)
        FL_FN(pk_group)(MR, K, x + i * ldx, ldx, bp, bb, nc, y + i * ldy,
                        ldy, act);
    for (part = rest > MR ? rest / 2 : rest; i < n; i += part, part = n - i)
        FL_FN(pk_group)(part, K, x + i * ldx, ldx, bp, bb, nc, y + i * ldy,
                        ldy, act);
}

/* Output columns of panels [p0, p1) for n rows (b, y: whole-row pointers).
 * Bias and relu in registers; any other activation over the stored
 * columns at the end. */
FL_KERNEL void FL_FN(gemm_packed)(fl_idx n, fl_idx K, fl_idx M, const T *x,
                                  fl_idx ldx, const T *pk, fl_idx p0,
                                  fl_idx p1, const T *b, T *y, fl_idx ldy,
                                  int act)
{
    const int tile_act = act == FL_ACT_RELU ? act : FL_ACT_NONE;
    fl_idx p, i, m0, m1;
    for (p = p0; p < p1; p++) {
        m0 = p * NR;
        FL_FN(panel_rows)(n, K, x, ldx, pk + p * K * NR, b ? b + m0 : NULL,
                          M - m0 < NR ? M - m0 : NR, y + m0, ldy, tile_act);
    }
    if (act != FL_ACT_NONE && act != FL_ACT_RELU && p1 > p0) {
        m0 = p0 * NR;
        m1 = p1 * NR < M ? p1 * NR : M;
        for (i = 0; i < n; i++) FL_FN(act)(y + i * ldy + m0, m1 - m0, act);
    }
}

/* c[M x N] = a[M x K] @ b[K x N] (row-major, leading dimensions), both
 * operands changing per call (convolution: weights @ im2col block): each
 * NR-column panel of b is packed into buf (gemm_ab_buf(K) bytes) and serves
 * all M rows.  No bias, no activation. */
FL_KERNEL void FL_FN(gemm_ab)(fl_idx M, fl_idx N, fl_idx K, const T *a,
                              fl_idx lda, const T *b, fl_idx ldb, T *c,
                              fl_idx ldc, T *buf)
{
    fl_idx n0, k;
    for (n0 = 0; n0 < N; n0 += NR) {
        const fl_idx nc = N - n0 < NR ? N - n0 : NR;
        for (k = 0; k < K; k++) {
            memcpy(buf + k * NR, b + k * ldb + n0, (size_t)nc * sizeof(T));
            if (nc < NR)
                memset(buf + k * NR + nc, 0, (size_t)(NR - nc) * sizeof(T));
        }
        FL_FN(panel_rows)(M, K, a, lda, buf, NULL, nc, c + n0, ldc,
                          FL_ACT_NONE);
    }
}

/* bytes of gemm_ab's panel buffer: K rows of NR values */
static size_t FL_FN(gemm_ab_buf)(fl_idx K)
{
    return (size_t)K * NR * sizeof(T);
}

/* Copy wt (K x M, C order) into panels; pk holds ceil(M/NR)*K*NR values */
FL_KERNEL void FL_FN(pack)(fl_idx K, fl_idx M, const T *wt, T *pk)
{
    const fl_idx np = (M + NR - 1) / NR;
    fl_idx k, p;
    for (k = 0; k < K; k++) {
        const T *src = wt + k * M;
        for (p = 0; p < np; p++) {
            T *dst = pk + (p * K + k) * NR;
            fl_idx nc = M - p * NR < NR ? M - p * NR : NR;
            memcpy(dst, src + p * NR, (size_t)nc * sizeof(T));
            if (nc < NR) memset(dst + nc, 0, (size_t)(NR - nc) * sizeof(T));
        }
    }
}

#undef PAIR
