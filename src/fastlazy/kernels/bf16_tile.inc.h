/*
 * bf16_tile.inc.h -- the many-row tiles and the driver of the dense
 * product on bfloat16 pair panels (dense_bf16.inc.h states the layout),
 * for one way of multiplying a pair word, FL_BF_DOT:
 *
 *   0  convert: each word becomes two float32 vectors (lo = word << 16,
 *      hi = word & 0xffff0000), multiplied by x in float32 -- exact
 *      weights, float32 x; every level;
 *   1  vdpbf16ps (AVX512-BF16): x is rounded to bfloat16 too, a block of
 *      FL_BF_KB pairs of each tile row at a time, and one instruction
 *      multiplies a pair of x with the pairs of 16 columns and adds both
 *      products; at AVX-512 only, called only where the CPU has it;
 *   2  an emulation of 1 in plain vector code, at AVX2: the same blocks,
 *      the same rounding of x, the products in vdpbf16ps's order -- so the
 *      tests cover all of 1 but the instruction on CPUs without it.
 *
 * The body is the same for all three: R <= MR rows x one panel, per pair
 * row q one load of the panel's two words vectors, then every tile row;
 * only what a row does with its pair of x differs (FL_BFN(step)).
 */

#if FL_BF_DOT == 0
#define FL_BF_SFX g
#define FL_BF_ATTR FL_ATTR
#elif FL_BF_DOT == 1
#define FL_BF_SFX d
#define FL_BF_ATTR __attribute__((target("arch=x86-64-v4,avx512bf16")))
#include <immintrin.h>
#else
#define FL_BF_SFX e
#define FL_BF_ATTR FL_ATTR
#endif

#define FL_BFN(name) FL_FN(FL_PASTE2(name, FL_BF_SFX))
/* rows per tile: the level's FL_BF_MR for the conversion (and its
 * emulation), MR for vdpbf16ps */
#define BMR (FL_BF_DOT == 1 ? MR : FL_BF_MR)
#define FL_BF_HELPER static inline __attribute__((always_inline)) FL_BF_ATTR
#define FL_BF_KERNEL static __attribute__((noinline)) FL_BF_ATTR

#if FL_BF_DOT == 1
/* c += the pair products of x's pair xp with the two words vectors */
FL_BF_HELPER void FL_BFN(dp)(BPAIR *c, uint32_t xp, VU w0, VU w1)
{
    __m512bh xv = (__m512bh)_mm512_set1_epi32((int)xp);
    c->lo = (V)_mm512_dpbf16_ps((__m512)c->lo, xv, (__m512bh)w0);
    c->hi = (V)_mm512_dpbf16_ps((__m512)c->hi, xv, (__m512bh)w1);
}
#elif FL_BF_DOT == 2
FL_BF_HELPER void FL_BFN(dp)(BPAIR *c, uint32_t xp, VU w0, VU w1)
{
    const float xl = fl_bf16_to_f32((uint16_t)xp);
    const float xh = fl_bf16_to_f32((uint16_t)(xp >> 16));
    /* vdpbf16ps adds the odd (high) product first, then the even one */
    c->lo += xh * BF_HI(w0);
    c->lo += xl * BF_LO(w0);
    c->hi += xh * BF_HI(w1);
    c->hi += xl * BF_LO(w1);
}
#endif

/* every tile row r < R does S(&c_r, r) (a macro of the row) */
#define FL_BF_ROWS(S)                                                    \
    do {                                                                 \
        if (R > 0) S(&c0, 0);                                            \
        if (R > 1) S(&c1, 1);                                            \
        if (R > 2) S(&c2, 2);                                            \
        if (R > 3) S(&c3, 3);                                            \
        if (R > 4) S(&c4, 4);                                            \
        if (R > 5) S(&c5, 5);                                            \
        if (R > 6) S(&c6, 6);                                            \
        if (R > 7) S(&c7, 7);                                            \
        if (R > 8) S(&c8, 8);                                            \
        if (R > 9) S(&c9, 9);                                            \
        if (R > 10) S(&c10, 10);                                         \
        if (R > 11) S(&c11, 11);                                         \
    } while (0)

/* R (<= MR) rows x one panel bp; bq: the panel's NR bias values or NULL;
 * all NR columns of y are written */
FL_BF_HELPER void FL_BFN(tile)(const int R, fl_idx K, const float *x,
                               fl_idx ldx, const uint32_t *bp,
                               const float *bq, float *y, fl_idx ldy,
                               int act)
{
    BPAIR c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0}, c4 = {0}, c5 = {0};
    BPAIR c6 = {0}, c7 = {0}, c8 = {0}, c9 = {0}, c10 = {0}, c11 = {0};
#if FL_BF_DOT == 0
    const fl_idx KF = K / 2;
    fl_idx q;
    for (q = 0; q < KF; q++) {
        const uint32_t *w = bp + q * NR;
        /* rows 6.. from a second base, as in gemm_packed.inc.h */
        const float *xk = x + 2 * q;
        const float *xk6 = xk + 6 * ldx;
        VU a0, a1;
        V p0, p1;
        FL_FN(bf_prefetch)(w);
        a0 = LOADI(w);
        a1 = LOADI(w + L);
        p0 = BF_LO(a0);
        p1 = BF_LO(a1);
#define FL_BF_S(c, r) FL_FN(pk_fma)(c, (r) < 6 ? xk[(r) * ldx]               \
                                    : xk6[((r) - 6) * ldx], p0, p1)
        FL_BF_ROWS(FL_BF_S);
#undef FL_BF_S
        p0 = BF_HI(a0);
        p1 = BF_HI(a1);
#define FL_BF_S(c, r) FL_FN(pk_fma)(c, (r) < 6 ? xk[(r) * ldx + 1]           \
                                    : xk6[((r) - 6) * ldx + 1], p0, p1)
        FL_BF_ROWS(FL_BF_S);
#undef FL_BF_S
    }
    if (K & 1) {                /* the last row pairs with zeros */
        const uint32_t *w = bp + KF * NR;
        const float *xk = x + K - 1;
        V p0 = BF_LO(LOADI(w)), p1 = BF_LO(LOADI(w + L));
#define FL_BF_S(c, r) FL_FN(pk_fma)(c, xk[(r) * ldx], p0, p1)
        FL_BF_ROWS(FL_BF_S);
#undef FL_BF_S
    }
#else
    /* x's pairs in bfloat16, FL_BF_KB pairs of each row at a time */
    uint32_t xb[MR * FL_BF_KB];
    const fl_idx KP = (K + 1) / 2;
    fl_idx q0, q, nq;
    for (q0 = 0; q0 < KP; q0 += FL_BF_KB) {
        nq = KP - q0 < FL_BF_KB ? KP - q0 : FL_BF_KB;
        FL_FN(bf_pairs)(R, x + 2 * q0, ldx, K - 2 * q0, nq, xb);
        for (q = 0; q < nq; q++) {
            const uint32_t *w = bp + (q0 + q) * NR;
            VU a0, a1;
            FL_FN(bf_prefetch)(w);
            a0 = LOADI(w);
            a1 = LOADI(w + L);
#define FL_BF_S(c, r) FL_BFN(dp)(c, xb[(r) * FL_BF_KB + q], a0, a1)
            FL_BF_ROWS(FL_BF_S);
#undef FL_BF_S
        }
    }
#endif
#define FL_BF_S(c, r) FL_FN(pk_store)(c, y + (r) * ldy, bq, act)
    FL_BF_ROWS(FL_BF_S);
#undef FL_BF_S
}

/* One function per row count (see gemm_packed.inc.h: each its own
 * register allocation) */
#define FL_BF_TILE_ROWS(R) FL_BF_KERNEL void FL_BFN(rows##R)(fl_idx K, const float *x, fl_idx ldx, const uint32_t *bp, const float *bq, float *y, fl_idx ldy, int act) { FL_BFN(tile)(R, K, x, ldx, bp, bq, y, ldy, act); }
#if FL_BF_DOT != 0
/* (the conversion's one and two rows: bfs1, bfs2 in dense_bf16.inc.h) */
FL_BF_TILE_ROWS(1)
FL_BF_TILE_ROWS(2)
#endif
FL_BF_TILE_ROWS(3)
FL_BF_TILE_ROWS(4)
FL_BF_TILE_ROWS(5)
FL_BF_TILE_ROWS(6)
#if FL_MR > 6
FL_BF_TILE_ROWS(7)
FL_BF_TILE_ROWS(8)
FL_BF_TILE_ROWS(9)
FL_BF_TILE_ROWS(10)
FL_BF_TILE_ROWS(11)
FL_BF_TILE_ROWS(12)
#endif
#undef FL_BF_TILE_ROWS

/* R (1..MR) rows x one panel into y; a partial panel (nc < NR) through a
 * full-width scratch tile, its bias zero-padded */
FL_BF_HELPER void FL_BFN(group)(fl_idx R, fl_idx K, const float *x,
                                fl_idx ldx, const uint32_t *bp,
                                const float *b, fl_idx nc, float *y,
                                fl_idx ldy, int act)
{
    float t[MR * NR];
    float bpad[NR];
    const float *bq = b;
    float *yt = y;
    fl_idx ldt = ldy, r;
    if (nc < NR) {
        if (b) {
            memset(bpad, 0, sizeof bpad);
            memcpy(bpad, b, (size_t)nc * sizeof(float));
            bq = bpad;
        }
        yt = t;
        ldt = NR;
    }
    switch (R) {
#if FL_BF_DOT == 0
    /* one or two rows: the split sums of the matrix-vector tile */
    case 1: FL_FN(bfs1)(K, x, ldx, bp, bq, yt, ldt, act); break;
    case 2: FL_FN(bfs2)(K, x, ldx, bp, bq, yt, ldt, act); break;
#else
    case 1: FL_BFN(rows1)(K, x, ldx, bp, bq, yt, ldt, act); break;
    case 2: FL_BFN(rows2)(K, x, ldx, bp, bq, yt, ldt, act); break;
#endif
    case 3: FL_BFN(rows3)(K, x, ldx, bp, bq, yt, ldt, act); break;
    case 4: FL_BFN(rows4)(K, x, ldx, bp, bq, yt, ldt, act); break;
    case 5: FL_BFN(rows5)(K, x, ldx, bp, bq, yt, ldt, act); break;
    case 6: FL_BFN(rows6)(K, x, ldx, bp, bq, yt, ldt, act); break;
#if FL_MR > 6
    case 7: FL_BFN(rows7)(K, x, ldx, bp, bq, yt, ldt, act); break;
    case 8: FL_BFN(rows8)(K, x, ldx, bp, bq, yt, ldt, act); break;
    case 9: FL_BFN(rows9)(K, x, ldx, bp, bq, yt, ldt, act); break;
    case 10: FL_BFN(rows10)(K, x, ldx, bp, bq, yt, ldt, act); break;
    case 11: FL_BFN(rows11)(K, x, ldx, bp, bq, yt, ldt, act); break;
    case 12: FL_BFN(rows12)(K, x, ldx, bp, bq, yt, ldt, act); break;
#endif
    default: break;
    }
    if (yt != y)
        for (r = 0; r < R; r++)
            memcpy(y + r * ldy, t + r * NR, (size_t)nc * sizeof(float));
}

/* Output columns of panels [p0, p1) for n rows (b, y: whole-row
 * pointers): each panel serves every row, in groups of MR rows (the
 * remainder split as in gemm_packed.inc.h's panel_rows).  Bias and relu
 * in registers, any other activation over the stored columns at the end. */
FL_BF_KERNEL void FL_BFN(gemm_bf16)(fl_idx n, fl_idx K, fl_idx M,
                                    const float *x, fl_idx ldx,
                                    const uint32_t *pk, fl_idx p0,
                                    fl_idx p1, const float *b, float *y,
                                    fl_idx ldy, int act)
{
    const int tile_act = act == FL_ACT_RELU ? act : FL_ACT_NONE;
    const fl_idx KP = (K + 1) / 2;
    fl_idx p, i, g, part, full, rest, m0, m1, nc;
#if FL_BF_DOT == 0
    if (n <= 2 && KP * 4 * ((M + NR - 1) / NR * NR) <= FL_BF_CACHED)
        FL_FN(bfs_cached)(n, K, M, x, ldx, pk, p0, p1, b, y, ldy, tile_act);
    else
#endif
    for (p = p0; p < p1; p++) {
        const uint32_t *bp = pk + p * KP * NR;
        m0 = p * NR;
        nc = M - m0 < NR ? M - m0 : NR;
        full = n / BMR;
        rest = n % BMR;
        if (full > 0 && rest > 0 && rest < BMR / 2) {
            full--;
            rest += BMR;
        }
        for (i = 0, g = 0; g < full; g++, i += BMR)
            FL_BFN(group)(BMR, K, x + i * ldx, ldx, bp, b ? b + m0 : NULL,
                          nc, y + i * ldy + m0, ldy, tile_act);
        for (part = rest > BMR ? rest / 2 : rest; i < n;
             i += part, part = n - i)
            FL_BFN(group)(part, K, x + i * ldx, ldx, bp,
                          b ? b + m0 : NULL, nc, y + i * ldy + m0, ldy,
                          tile_act);
    }
    if (act != FL_ACT_NONE && act != FL_ACT_RELU && p1 > p0) {
        m0 = p0 * NR;
        m1 = p1 * NR < M ? p1 * NR : M;
        for (i = 0; i < n; i++) FL_FN(act)(y + i * ldy + m0, m1 - m0, act);
    }
}

#undef FL_BF_ROWS
#undef FL_BF_KERNEL
#undef FL_BF_HELPER
#undef FL_BFN
#undef BMR
#undef FL_BF_ATTR
#undef FL_BF_SFX
