/*
 * act_scalar.inc.h -- the scalar activations of one dtype: numerically
 * stable, IEEE propagation of NaN and infinities.  Compiled once per dtype
 * at the baseline (fl_kernels.c); every level's act() calls them for the
 * activations it does not vectorise, so those give the same results at
 * every level.  Expects T and FL_SFX.
 */
#if FL_DOUBLE
#define EXP exp
#define LOG1P log1p
#define TANH tanh
#define ERF erf
#else
#define EXP expf
#define LOG1P log1pf
#define TANH tanhf
#define ERF erff
#endif

static T FL_DT(fl_act1)(T v, int act)
{
    switch (act) {
    case FL_ACT_RELU:
        return (v > 0 || v != v) ? v : (T)0;
    case FL_ACT_SIGMOID:
        if (v >= 0) return (T)1 / ((T)1 + EXP(-v));
        else { T e = EXP(v); return e / ((T)1 + e); }
    case FL_ACT_TANH:
        return TANH(v);
    case FL_ACT_SOFTRELU:
        /* log(1 + e^v) = max(v, 0) + log1p(e^-|v|) */
        return (v > 0 ? v : (T)0) + LOG1P(EXP(-(v < 0 ? -v : v)));
    case FL_ACT_SOFTSIGN:
        if (isinf(v)) return v > 0 ? (T)1 : (T)-1;
        return v / ((T)1 + (v < 0 ? -v : v));
    case FL_ACT_GELU:
        if (isinf(v)) return v > 0 ? v : (T)0;
        return (T)0.5 * v * ((T)1 + ERF(v * (T)0.70710678118654752440));
    case FL_ACT_SILU:
        if (v >= 0) return v / ((T)1 + EXP(-v));
        if (isinf(v)) return (T)0;
        { T e = EXP(v); return v * e / ((T)1 + e); }
    case FL_ACT_RELU6:
        return v != v ? v : (v < 0 ? (T)0 : (v > 6 ? (T)6 : v));
    default:
        return v;
    }
}

static void FL_DT(fl_act_scalar)(T *y, fl_idx count, int act)
{
    fl_idx i;
    if (act == FL_ACT_NONE) return;
    if (act == FL_ACT_RELU) {
        for (i = 0; i < count; i++) {
            T v = y[i];
            y[i] = (v > 0 || v != v) ? v : (T)0;
        }
        return;
    }
    for (i = 0; i < count; i++) y[i] = FL_DT(fl_act1)(y[i], act);
}

#undef EXP
#undef LOG1P
#undef TANH
#undef ERF
