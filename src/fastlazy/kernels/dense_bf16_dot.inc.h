/*
 * dense_bf16_dot.inc.h -- one or two rows through a layer with few outputs
 * on bfloat16 weights (a classifier's last layer: 256 -> 10), for the
 * float32 instance of one level.  Included by dense_bf16.inc.h (its pair
 * words, LOADI, BF_LO and BF_HI) after dense_dot.inc.h (its accumulator
 * rows, dot_add and dot_get).
 *
 *     y[i, m] = act(b[m] + sum_k x[i, k] * w[m, k])
 *
 * as gemm_bf16, on a copy of the weights as (M, K) rows: each output is a
 * dot product along k, as the float32 dot kernel (dense_dot.inc.h says
 * why: the pair panels would compute NR columns to keep M).
 *
 * Row layout.  Row m is cut into blocks of NR = 2L values of k, L words
 * each, and block q of every row comes before block q + 1 of any (so a
 * tile finds its outputs' words of one block at fixed offsets, and the
 * blocks of k follow each other in memory); word j of block q pairs
 * k = q*NR + j (low half) with k = q*NR + L + j (high half):
 *
 *     rw[(q * M + m) * L + j] =
 *         bf16(wt[q*NR + j, m]) | bf16(wt[q*NR + L + j, m]) << 16
 *
 * (0 past K), ceil(K / NR) * M * L words.  So a block's word vector
 * splits, as a pair panel's does,
 * with one shift and one and, into the float32 weights of two plain
 * vectors of x: x[q*NR, q*NR + L) and x[q*NR + L, q*NR + 2L).  Products
 * and sums are float32, as in gemm_bf16 (in another order).
 *
 * A tile is R rows x G outputs, one accumulator each (R = 1: up to 10
 * outputs, R = 2: up to 4; with the two or four x vectors, the and-mask
 * and two widened weights, 15 of AVX2's 16 registers), reduced four
 * outputs at a time across lanes at the end.
 */

#define BFD_G1 10
#define BFD_G2 4

typedef float FL_FN(v4f) __attribute__((vector_size(16)));
#define V4 FL_FN(v4f)

/* the 4 lanes of a's sum after folding its quarters */
FL_HELPER V4 FL_FN(bfd_fold4)(V a)
{
#if FL_VBYTES == 16
    return (V4)a;
#elif FL_VBYTES == 32
    return __builtin_shufflevector(a, a, 0, 1, 2, 3)
        + __builtin_shufflevector(a, a, 4, 5, 6, 7);
#else
    V4 lo = __builtin_shufflevector(a, a, 0, 1, 2, 3)
        + __builtin_shufflevector(a, a, 4, 5, 6, 7);
    V4 hi = __builtin_shufflevector(a, a, 8, 9, 10, 11)
        + __builtin_shufflevector(a, a, 12, 13, 14, 15);
    return lo + hi;
#endif
}

/* (sum of a's lanes, of b's, of c's, of d's) */
FL_HELPER V4 FL_FN(bfd_hsum4)(V a, V b, V c, V d)
{
    V4 A = FL_FN(bfd_fold4)(a), B = FL_FN(bfd_fold4)(b);
    V4 C = FL_FN(bfd_fold4)(c), D = FL_FN(bfd_fold4)(d);
    V4 u = __builtin_shufflevector(A, B, 0, 4, 1, 5)
        + __builtin_shufflevector(A, B, 2, 6, 3, 7);
    V4 w = __builtin_shufflevector(C, D, 0, 4, 1, 5)
        + __builtin_shufflevector(C, D, 2, 6, 3, 7);
    return __builtin_shufflevector(u, w, 0, 1, 4, 5)
        + __builtin_shufflevector(u, w, 2, 3, 6, 7);
}

/* one block of k: the products of x vectors x0, x0h (row 0) and x1, x1h
 * (row 1) with the block's words w of outputs [0, G) */
FL_HELPER void FL_FN(bfd_block)(const int R, const int G, FL_FN(row) *lo,
                                FL_FN(row) *hi, const uint32_t *w,
                                V x0, V x0h, V x1, V x1h)
{
#define BFD_STEP(g)                                                        \
    if (G > g) {                                                           \
        const VU wv = LOADI(w + (g) * L);                                  \
        const V wl = BF_LO(wv), wh = BF_HI(wv);                            \
        FL_FN(dot_add)(lo, hi, g, x0 * wl);                                \
        FL_FN(dot_add)(lo, hi, g, x0h * wh);                               \
        if (R > 1) {                                                       \
            FL_FN(dot_add)(lo, hi, G + g, x1 * wl);                        \
            FL_FN(dot_add)(lo, hi, G + g, x1h * wh);                       \
        }                                                                  \
    }
    BFD_STEP(0) BFD_STEP(1) BFD_STEP(2) BFD_STEP(3) BFD_STEP(4)
    BFD_STEP(5) BFD_STEP(6) BFD_STEP(7) BFD_STEP(8) BFD_STEP(9)
#undef BFD_STEP
}

/* R rows x outputs [0, G) into y: rw the first output's words of block
 * 0, sb words from a block to the next; bias b (G values from the tile's
 * first) or NULL; act: none or relu */
FL_HELPER void FL_FN(bfd_tile)(const int R, const int G, fl_idx K,
                               const float *x, fl_idx ldx,
                               const uint32_t *rw, fl_idx sb,
                               const float *b, float *y, fl_idx ldy,
                               int act)
{
    FL_FN(row) lo = {0}, hi = {0};
    const fl_idx KF = K / NR * NR;
    const float *x1 = R > 1 ? x + ldx : x;
    const uint32_t *w = rw;
    fl_idx k = 0;
    int r, q, j;
    for (; k < KF; k += NR, w += sb)
        FL_FN(bfd_block)(R, G, &lo, &hi, w, LOAD(x + k), LOAD(x + k + L),
                         LOAD(x1 + k), LOAD(x1 + k + L));
    if (k < K) {
        /* the last block: x past K is 0, as the weights there */
        const fl_idx n0 = K - k < L ? K - k : L, n1 = K - k - n0;
        FL_FN(bfd_block)(R, G, &lo, &hi, w,
                         LOAD_PART(x + k, n0), LOAD_PART(x + k + L, n1),
                         LOAD_PART(x1 + k, n0), LOAD_PART(x1 + k + L, n1));
    }
    for (r = 0; r < R; r++) {
        float *yr = y + r * ldy;
        for (q = 0; q * 4 < G; q++) {
            const int j0 = r * G + q * 4;
            const V z = {0};
            V4 s = FL_FN(bfd_hsum4)(
                FL_FN(dot_get)(&lo, &hi, j0),
                q * 4 + 1 < G ? FL_FN(dot_get)(&lo, &hi, j0 + 1) : z,
                q * 4 + 2 < G ? FL_FN(dot_get)(&lo, &hi, j0 + 2) : z,
                q * 4 + 3 < G ? FL_FN(dot_get)(&lo, &hi, j0 + 3) : z);
            float t[4];
            memcpy(t, &s, sizeof t);
            for (j = 0; j < 4 && q * 4 + j < G; j++) {
                float v = t[j];
                if (b)
                    v += b[q * 4 + j];
                /* relu keeps NaN, as RELU does */
                yr[q * 4 + j] = act == FL_ACT_RELU && v <= 0 ? 0.0f : v;
            }
        }
    }
}

/* one function per tile shape: bfd_R_G */
#define BFD_FN(R, G)                                                       \
    static __attribute__((noinline)) FL_ATTR void FL_FN(bfd_##R##_##G)(   \
        fl_idx K, const float *x, fl_idx ldx, const uint32_t *rw,          \
        fl_idx sb, const float *b, float *y, fl_idx ldy, int act)          \
    {                                                                      \
        FL_FN(bfd_tile)(R, G, K, x, ldx, rw, sb, b, y, ldy, act);          \
    }
BFD_FN(1, 1) BFD_FN(1, 2) BFD_FN(1, 3) BFD_FN(1, 4) BFD_FN(1, 5)
BFD_FN(1, 6) BFD_FN(1, 7) BFD_FN(1, 8) BFD_FN(1, 9) BFD_FN(1, 10)
BFD_FN(2, 1) BFD_FN(2, 2) BFD_FN(2, 3) BFD_FN(2, 4)
#undef BFD_FN

/* rows [i, i + R) x outputs [m, m + G) */
#define BFD_CASE(R, G)                                                     \
    case G:                                                                \
        FL_FN(bfd_##R##_##G)(K, x + i * ldx, ldx, rw + m * L, M * L,       \
                             b ? b + m : NULL, y + i * ldy + m, ldy,       \
                             tile_act);                                    \
        break;

/* n rows (meant for 1-2; more run in pairs) through all M outputs on the
 * row copy rw (pack_bf16_rows) */
FL_KERNEL void FL_FN(gemm_bf16_rows)(fl_idx n, fl_idx K, fl_idx M,
                                     const float *x, fl_idx ldx,
                                     const uint32_t *rw, const float *b,
                                     float *y, fl_idx ldy, int act)
{
    const int tile_act = act == FL_ACT_RELU ? act : FL_ACT_NONE;
    fl_idx i = 0, m;
    for (; i + 2 <= n; i += 2)
        for (m = 0; m < M; m += BFD_G2)
            switch (M - m < BFD_G2 ? M - m : BFD_G2) {
            BFD_CASE(2, 1) BFD_CASE(2, 2) BFD_CASE(2, 3) BFD_CASE(2, 4)
            default: break;
            }
    if (i < n)
        for (m = 0; m < M; m += BFD_G1)
            switch (M - m < BFD_G1 ? M - m : BFD_G1) {
            BFD_CASE(1, 1) BFD_CASE(1, 2) BFD_CASE(1, 3) BFD_CASE(1, 4)
            BFD_CASE(1, 5) BFD_CASE(1, 6) BFD_CASE(1, 7) BFD_CASE(1, 8)
            BFD_CASE(1, 9) BFD_CASE(1, 10)
            default: break;
            }
    if (act != tile_act)
        for (i = 0; i < n; i++) FL_FN(act)(y + i * ldy, M, act);
}
#undef BFD_CASE

/* The row copy of wt (K x M bfloat16 patterns, C order) */
static void FL_FN(pack_bf16_rows)(fl_idx K, fl_idx M, const uint16_t *wt,
                                  uint32_t *rw)
{
    const fl_idx nb = (K + NR - 1) / NR;
    fl_idx m, q, j;
    for (q = 0; q < nb; q++)
        for (m = 0; m < M; m++) {
            uint32_t *dst = rw + (q * M + m) * L;
            for (j = 0; j < L; j++) {
                const fl_idx k0 = q * NR + j, k1 = k0 + L;
                dst[j] = (k0 < K ? (uint32_t)wt[k0 * M + m] : 0u)
                    | (k1 < K ? (uint32_t)wt[k1 * M + m] << 16 : 0u);
            }
        }
}

#undef V4
#undef BFD_G1
#undef BFD_G2
