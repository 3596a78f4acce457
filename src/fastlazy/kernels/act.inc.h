/*
 * act.inc.h -- activations in place, and the bias + activation epilogue
 * after a BLAS product, for one (level, dtype) instance.
 *
 * Relu and the float32 sigmoid run on vectors at the level; the other
 * activations (and the float64 sigmoid) call the scalar ones
 * (act_scalar.inc.h), which give the same results at every level.
 */

#if !FL_DOUBLE
/* lanes of a where the mask m is set (all ones), of b elsewhere.  A macro,
 * not an inline function: with a constant operand it folds as the
 * expression is parsed, while through a function GCC rewrote it into xors
 * and computed the division twice (a third slower sigmoid). */
#define BLEND(m, a, b) ((V)(((VI)(a) & (m)) | ((VI)(b) & ~(m))))

/* sigmoid(v) = 1 / (1 + exp(-v)) on vectors.  One scalar expf per value was
 * half of LeNet's time on a batch; here exp is Cephes' expf polynomial
 * (relative error about 1 ulp).  -v is clamped to [-88, 88] so that exp
 * stays finite; below v = -88 (and at -inf) the result is 0 (the true
 * value is under 6e-39, subnormal in float32), so sigmoid(-1000) == 0 as in
 * the scalar kernel; NaN propagates. */
FL_KERNEL void FL_FN(vsigmoid)(float *y, fl_idx n)
{
    const V hi = (V){0} + 88.0f, lo = (V){0} - 88.0f, one = (V){0} + 1.0f;
    fl_idx i = 0;
    for (; i + L <= n; i += L) {
        V v, x, fx, t, z, p, e;
        VI m, k;
        memcpy(&v, y + i, sizeof v);
        x = -v;
        m = x != x;                   /* NaN: computed as 0, restored below */
        x = BLEND(m, (V){0}, x);
        m = x > hi;
        x = BLEND(m, hi, x);
        m = x < lo;
        x = BLEND(m, lo, x);
        /* exp(x) = 2^k * exp(r), k = round(x / ln 2) */
        fx = x * 1.44269504088896341f + 0.5f;
        t = __builtin_convertvector(__builtin_convertvector(fx, VI), V);
        m = t > fx;
        fx = t - BLEND(m, one, (V){0});
        x = x - fx * 0.693359375f + fx * 2.12194440e-4f;
        z = x * x;
        p = x * 1.9875691500e-4f + 1.3981999507e-3f;
        p = p * x + 8.3334519073e-3f;
        p = p * x + 4.1665795894e-2f;
        p = p * x + 1.6666665459e-1f;
        p = p * x + 5.0000001201e-1f;
        p = p * z + x + 1.0f;
        k = (__builtin_convertvector(fx, VI) + 127) << 23;
        memcpy(&e, &k, sizeof e);
        e = one / (one + p * e);
        m = v < lo;                   /* sigmoid(-1000) == 0 */
        e = BLEND(m, (V){0}, e);
        m = v != v;
        e = BLEND(m, v, e);
        memcpy(y + i, &e, sizeof e);
    }
    for (; i < n; i++) y[i] = fl_act1_f32(y[i], FL_ACT_SIGMOID);
}
#undef BLEND
#endif

FL_KERNEL void FL_FN(act)(T *y, fl_idx n, int act)
{
    fl_idx i = 0;
    if (act == FL_ACT_NONE) return;
    if (act == FL_ACT_RELU) {
        for (; i + L <= n; i += L) STORE(y + i, RELU(LOAD(y + i)));
        for (; i < n; i++) {
            T v = y[i];
            y[i] = (v > 0 || v != v) ? v : (T)0;
        }
        return;
    }
    if (act == FL_ACT_RELU6) {
        /* a plain loop: compiled for the level, the compiler vectorises it */
        for (; i < n; i++) {
            T v = y[i];
            y[i] = v != v ? v : (v < 0 ? (T)0 : (v > 6 ? (T)6 : v));
        }
        return;
    }
#if !FL_DOUBLE
    if (act == FL_ACT_SIGMOID) {
        FL_FN(vsigmoid)(y, n);
        return;
    }
#endif
    FL_DT(fl_act_scalar)(y, n, act);
}

/* y[i, :] = act(y[i, :] + b) in place, after a BLAS product; b NULL: no
 * bias.  Plain loops: the compiler vectorises them for the level.  Other
 * activations than relu run once the bias is in, in one call over a
 * contiguous output (across row ends, as the callers' pass did). */
FL_KERNEL void FL_FN(bias_act)(fl_idx n, fl_idx M, T *y, fl_idx ldy,
                               const T *b, int act)
{
    fl_idx i, m;
    for (i = 0; i < n; i++) {
        T *yr = y + i * ldy;
        if (b)
            for (m = 0; m < M; m++) yr[m] += b[m];
        if (act == FL_ACT_RELU) {
            for (m = 0; m < M; m++) {
                T v = yr[m];
                yr[m] = (v > 0 || v != v) ? v : (T)0;
            }
        } else if (act != FL_ACT_NONE && ldy != M) {
            FL_FN(act)(yr, M, act);
        }
    }
    if (act != FL_ACT_NONE && act != FL_ACT_RELU && ldy == M)
        FL_FN(act)(y, n * M, act);
}
