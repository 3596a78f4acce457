# Plan steps of graphs: element-wise arithmetic between buffers (residual
# adds, broadcasts against a parameter), arithmetic with a scalar,
# concatenation, slicing, reductions, softmax, PReLU, copies, and the
# activations with arguments (leaky, elu, selu, clip, swish).
#
# Included into _plan.pyx.  These are memory-bound loops over raw pointers,
# written once over ``floating`` (float and double); the compiler
# vectorises the contiguous inner loops.  Arguments are the *Args structs of
# _plan.pxd; all checks happen in the _fill_* functions.

from libc.math cimport exp, expm1, log, tanh


# Activations beyond the kernels' table (codes of the kernels are < 16):
# element-wise loops here, never fused into a kernel's epilogue.
cdef enum ExtraActivation:
    ACT_LEAKY = 16
    ACT_ELU = 17
    ACT_SELU = 18
    ACT_CLIP = 19
    ACT_SWISH = 20

EXTRA_ACTIVATIONS = {"leaky": ACT_LEAKY, "elu": ACT_ELU, "selu": ACT_SELU,
                     "clip": ACT_CLIP, "swish": ACT_SWISH}

# Binary and scalar operators
cdef enum ArithOp:
    OP_ADD = 0
    OP_SUB = 1
    OP_MUL = 2
    OP_DIV = 3
    OP_MAX = 4
    OP_MIN = 5
    OP_RSUB = 6     # scalar only: value - x
    OP_RDIV = 7     # scalar only: value / x
    OP_POW = 8      # scalar only: x ** value
BINARY_OPS = {"add": OP_ADD, "sub": OP_SUB, "mul": OP_MUL, "div": OP_DIV,
              "max": OP_MAX, "min": OP_MIN, "rsub": OP_RSUB,
              "rdiv": OP_RDIV, "pow": OP_POW}

cdef enum ReduceOp:
    REDUCE_SUM = 0
    REDUCE_MEAN = 1
    REDUCE_MAX = 2
REDUCE_OPS = {"sum": REDUCE_SUM, "mean": REDUCE_MEAN, "max": REDUCE_MAX}

cdef double _SELU_ALPHA = 1.6732632423543772848170429916717
cdef double _SELU_SCALE = 1.0507009873554804934193349852946


cdef inline double _act_extra1(double v, int act, double alpha,
                               double beta) noexcept nogil:
    if act == ACT_LEAKY:
        return v if v > 0 or v != v else alpha * v
    if act == ACT_ELU:
        return v if v > 0 or v != v else alpha * expm1(v)
    if act == ACT_SELU:
        return _SELU_SCALE * (v if v > 0 or v != v
                              else _SELU_ALPHA * expm1(v))
    if act == ACT_CLIP:
        if v < alpha:
            return alpha
        if v > beta:
            return beta
        return v
    if act == ACT_SWISH:
        # x * sigmoid(beta * x), without overflow
        if alpha * v >= 0:
            return v / (1.0 + exp(-alpha * v))
        return v * exp(alpha * v) / (1.0 + exp(alpha * v))
    return v


cdef inline void _act_extra(floating *y, Py_ssize_t n, int act,
                            double alpha, double beta) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating lo, hi, v
    if act == ACT_CLIP:
        lo = <floating>alpha
        hi = <floating>beta
        for i in range(n):
            v = y[i]
            y[i] = lo if v < lo else (hi if v > hi else v)
        return
    if act == ACT_LEAKY:
        lo = <floating>alpha
        for i in range(n):
            v = y[i]
            y[i] = v if v > 0 or v != v else lo * v
        return
    for i in range(n):
        y[i] = <floating>_act_extra1(y[i], act, alpha, beta)


cdef void _step_act_extra(const Step *s, Py_ssize_t b, char *const *bufs,
                          char *work) noexcept nogil:
    cdef Py_ssize_t n = b * s.out_size
    cdef char *y = bufs[s.dst]
    if bufs[s.src[0]] != y:
        memcpy(y, bufs[s.src[0]], n * s.itemsize)
    if s.itemsize == 4:
        _act_extra(<float *>y, n, s.a.act.act, s.a.act.alpha, s.a.act.beta)
    else:
        _act_extra(<double *>y, n, s.a.act.act, s.a.act.alpha, s.a.act.beta)


# ---------------------------------------------------------------------------
# Binary: y = a op b, with broadcasting by strides

cdef inline floating _op(int op, floating a, floating b) noexcept nogil:
    if op == OP_ADD:
        return a + b
    if op == OP_SUB:
        return a - b
    if op == OP_MUL:
        return a * b
    if op == OP_DIV:
        return a / b
    if op == OP_MAX:
        return a if a > b or a != a else b
    return a if a < b or a != a else b


cdef inline void _binary_row(int op, Py_ssize_t n, const floating *a,
                             Py_ssize_t sa, const floating *b,
                             Py_ssize_t sb, floating *y) noexcept nogil:
    """One innermost run; the common stride patterns get their own loops
    (contiguous, or one operand broadcast), which the compiler
    vectorises."""
    cdef Py_ssize_t i
    if sa == 1 and sb == 1:
        if op == OP_ADD:
            for i in range(n):
                y[i] = a[i] + b[i]
        elif op == OP_MUL:
            for i in range(n):
                y[i] = a[i] * b[i]
        else:
            for i in range(n):
                y[i] = _op(op, a[i], b[i])
    elif sa == 1 and sb == 0:
        for i in range(n):
            y[i] = _op(op, a[i], b[0])
    elif sa == 0 and sb == 1:
        for i in range(n):
            y[i] = _op(op, a[0], b[i])
    else:
        for i in range(n):
            y[i] = _op(op, a[i * sa], b[i * sb])


cdef inline void _binary(const Step *s, Py_ssize_t nb, const floating *a,
                         const floating *b, floating *y) noexcept nogil:
    cdef const BinaryArgs *g = &s.a.binary
    cdef Py_ssize_t n, i0, i1, i2
    cdef const floating *an
    cdef const floating *bn
    cdef floating *yn
    for n in range(nb):
        yn = y + n * s.out_size
        for i0 in range(g.dims[0]):
            for i1 in range(g.dims[1]):
                for i2 in range(g.dims[2]):
                    an = a + n * g.sa[0] + i0 * g.sa[1] + i1 * g.sa[2] \
                        + i2 * g.sa[3]
                    bn = b + n * g.sb[0] + i0 * g.sb[1] + i1 * g.sb[2] \
                        + i2 * g.sb[3]
                    _binary_row(g.op, g.dims[3], an, g.sa[4], bn, g.sb[4],
                                yn)
                    yn += g.dims[3]


cdef void _step_binary(const Step *s, Py_ssize_t b, char *const *bufs,
                       char *work) noexcept nogil:
    if s.itemsize == 4:
        _binary(s, b, <const float *>bufs[s.src[0]],
                <const float *>bufs[s.src[1]], <float *>bufs[s.dst])
    else:
        _binary(s, b, <const double *>bufs[s.src[0]],
                <const double *>bufs[s.src[1]], <double *>bufs[s.dst])


# ---------------------------------------------------------------------------
# Scalar: y = x op value

cdef inline void _scalar(int op, double value, Py_ssize_t n,
                         const floating *x, floating *y) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v = <floating>value
    if op == OP_ADD:
        for i in range(n):
            y[i] = x[i] + v
    elif op == OP_MUL:
        for i in range(n):
            y[i] = x[i] * v
    elif op == OP_RSUB:
        for i in range(n):
            y[i] = v - x[i]
    elif op == OP_RDIV:
        for i in range(n):
            y[i] = v / x[i]
    elif op == OP_POW:
        for i in range(n):
            y[i] = <floating>(<double>x[i] ** value)
    else:
        for i in range(n):
            y[i] = _op(op, x[i], v)


cdef void _step_scalar(const Step *s, Py_ssize_t b, char *const *bufs,
                       char *work) noexcept nogil:
    cdef Py_ssize_t n = b * s.out_size
    if s.itemsize == 4:
        _scalar(s.a.scalar.op, s.a.scalar.value, n,
                <const float *>bufs[s.src[0]], <float *>bufs[s.dst])
    else:
        _scalar(s.a.scalar.op, s.a.scalar.value, n,
                <const double *>bufs[s.src[0]], <double *>bufs[s.dst])


# ---------------------------------------------------------------------------
# Concatenation, slicing, copies: memcpy of chunks

cdef void _step_concat(const Step *s, Py_ssize_t b, char *const *bufs,
                       char *work) noexcept nogil:
    cdef const ConcatArgs *g = &s.a.concat
    cdef Py_ssize_t isz = s.itemsize, chunks = b * g.outer, o, k
    cdef char *y = bufs[s.dst]
    for o in range(chunks):
        for k in range(s.nsrc):
            memcpy(y, bufs[s.src[k]] + o * g.part[k] * isz,
                   g.part[k] * isz)
            y += g.part[k] * isz


cdef void _step_slice(const Step *s, Py_ssize_t b, char *const *bufs,
                      char *work) noexcept nogil:
    cdef const SliceArgs *g = &s.a.slice
    cdef Py_ssize_t isz = s.itemsize, chunks = b * g.outer, o
    cdef const char *x = bufs[s.src[0]] + g.begin * isz
    cdef char *y = bufs[s.dst]
    for o in range(chunks):
        memcpy(y + o * g.out_chunk * isz, x + o * g.in_chunk * isz,
               g.out_chunk * isz)


cdef void _step_copy(const Step *s, Py_ssize_t b, char *const *bufs,
                     char *work) noexcept nogil:
    if bufs[s.src[0]] != bufs[s.dst]:
        memcpy(bufs[s.dst], bufs[s.src[0]], b * s.out_size * s.itemsize)


# ---------------------------------------------------------------------------
# Reductions over the middle of (outer, mid, inner)

cdef inline void _reduce(const ReduceArgs *g, Py_ssize_t nb,
                         const floating *x, floating *y) noexcept nogil:
    cdef Py_ssize_t o, m, i, outer = nb * g.outer
    cdef const floating *xo
    cdef floating *yo
    cdef floating v
    for o in range(outer):
        xo = x + o * g.mid * g.inner
        yo = y + o * g.inner
        for i in range(g.inner):
            yo[i] = xo[i]
        for m in range(1, g.mid):
            if g.op == REDUCE_MAX:
                for i in range(g.inner):
                    v = xo[m * g.inner + i]
                    if v > yo[i] or v != v:
                        yo[i] = v
            else:
                for i in range(g.inner):
                    yo[i] += xo[m * g.inner + i]
        if g.op == REDUCE_MEAN:
            for i in range(g.inner):
                yo[i] /= g.mid


cdef void _step_reduce(const Step *s, Py_ssize_t b, char *const *bufs,
                       char *work) noexcept nogil:
    if s.itemsize == 4:
        _reduce(&s.a.reduce, b, <const float *>bufs[s.src[0]],
                <float *>bufs[s.dst])
    else:
        _reduce(&s.a.reduce, b, <const double *>bufs[s.src[0]],
                <double *>bufs[s.dst])


# ---------------------------------------------------------------------------
# Softmax over the middle of (outer, C, inner), in double

cdef inline void _softmax(const SoftmaxArgs *g, Py_ssize_t nb,
                          const floating *x, floating *y) noexcept nogil:
    cdef Py_ssize_t o, c, i, outer = nb * g.outer, C = g.C, inner = g.inner
    cdef const floating *xo
    cdef floating *yo
    cdef double mx, total, v
    for o in range(outer):
        xo = x + o * C * inner
        yo = y + o * C * inner
        for i in range(inner):
            mx = xo[i]
            for c in range(1, C):
                v = xo[c * inner + i]
                if v > mx or v != v:
                    mx = v
            total = 0
            for c in range(C):
                total += exp(xo[c * inner + i] - mx)
            if g.log:
                total = log(total)
                for c in range(C):
                    yo[c * inner + i] = <floating>(xo[c * inner + i] - mx
                                                   - total)
            else:
                for c in range(C):
                    yo[c * inner + i] = <floating>(
                        exp(xo[c * inner + i] - mx) / total)


cdef void _step_softmax(const Step *s, Py_ssize_t b, char *const *bufs,
                        char *work) noexcept nogil:
    if s.itemsize == 4:
        _softmax(&s.a.softmax, b, <const float *>bufs[s.src[0]],
                 <float *>bufs[s.dst])
    else:
        _softmax(&s.a.softmax, b, <const double *>bufs[s.src[0]],
                 <double *>bufs[s.dst])


# ---------------------------------------------------------------------------
# PReLU: a slope per channel (or one for all)

cdef inline void _prelu(const PreluArgs *g, Py_ssize_t nb, const floating *x,
                        floating *y) noexcept nogil:
    cdef Py_ssize_t o, c, i, outer = nb * g.outer
    cdef const floating *alpha = <const floating *>g.alpha
    cdef floating a, v
    for o in range(outer):
        for c in range(g.C):
            a = alpha[c if g.alpha_n > 1 else 0]
            for i in range(g.inner):
                v = x[(o * g.C + c) * g.inner + i]
                y[(o * g.C + c) * g.inner + i] = v if v > 0 or v != v \
                    else a * v


cdef void _step_prelu(const Step *s, Py_ssize_t b, char *const *bufs,
                      char *work) noexcept nogil:
    if s.itemsize == 4:
        _prelu(&s.a.prelu, b, <const float *>bufs[s.src[0]],
               <float *>bufs[s.dst])
    else:
        _prelu(&s.a.prelu, b, <const double *>bufs[s.src[0]],
               <double *>bufs[s.dst])


# ---------------------------------------------------------------------------
# Building the steps

cdef int _fill_binary(Step *s, object st, object dtype, list keep) except -1:
    cdef BinaryArgs *g = &s.a.binary
    cdef int i
    if len(st.dims) != 4 or len(st.a_strides) != 5 or \
            len(st.b_strides) != 5:
        raise ValueError("binary step: need 4 dimensions and 5 strides")
    s.run = _step_binary
    s.kind = STEP_BINARY
    g.op = BINARY_OPS[st.op]
    for i in range(4):
        g.dims[i] = st.dims[i]
    for i in range(5):
        g.sa[i] = st.a_strides[i]
        g.sb[i] = st.b_strides[i]
    s.out_size = prod(st.dims)
    s.in_size = st.a_size
    return 0


cdef int _fill_scalar(Step *s, object st, object dtype, list keep) except -1:
    s.run = _step_scalar
    s.kind = STEP_SCALAR
    s.a.scalar.op = BINARY_OPS[st.op]
    s.a.scalar.value = st.value
    s.in_size = s.out_size = st.size
    return 0


cdef int _fill_concat(Step *s, object st, object dtype, list keep) except -1:
    cdef int k
    s.run = _step_concat
    s.kind = STEP_CONCAT
    s.a.concat.outer = st.outer
    for k in range(len(st.parts)):
        s.a.concat.part[k] = st.parts[k]
    s.in_size = st.outer * st.parts[0]
    s.out_size = st.outer * sum(st.parts)
    return 0


cdef int _fill_slice(Step *s, object st, object dtype, list keep) except -1:
    cdef SliceArgs *g = &s.a.slice
    s.run = _step_slice
    s.kind = STEP_SLICE
    g.outer, g.in_chunk, g.begin, g.out_chunk = \
        st.outer, st.in_chunk, st.begin, st.out_chunk
    if st.begin < 0 or st.begin + st.out_chunk > st.in_chunk:
        raise ValueError("slice step out of range")
    s.in_size = st.outer * st.in_chunk
    s.out_size = st.outer * st.out_chunk
    return 0


cdef int _fill_reduce(Step *s, object st, object dtype, list keep) except -1:
    cdef ReduceArgs *g = &s.a.reduce
    s.run = _step_reduce
    s.kind = STEP_REDUCE
    g.op = REDUCE_OPS[st.op]
    g.outer, g.mid, g.inner = st.outer, st.mid, st.inner
    s.in_size = st.outer * st.mid * st.inner
    s.out_size = st.outer * st.inner
    return 0


cdef int _fill_softmax(Step *s, object st, object dtype,
                       list keep) except -1:
    cdef SoftmaxArgs *g = &s.a.softmax
    s.run = _step_softmax
    s.kind = STEP_SOFTMAX
    g.log = 1 if st.log else 0
    g.outer, g.C, g.inner = st.outer, st.C, st.inner
    s.in_size = s.out_size = st.outer * st.C * st.inner
    return 0


cdef int _fill_prelu(Step *s, object st, object dtype, list keep) except -1:
    cdef PreluArgs *g = &s.a.prelu
    s.run = _step_prelu
    s.kind = STEP_PRELU
    g.outer, g.C, g.inner = st.outer, st.C, st.inner
    g.alpha = _param_ptr(st.alpha, dtype, keep)
    g.alpha_n = prod(st.alpha.shape)
    if g.alpha_n != 1 and g.alpha_n != g.C:
        raise ShapeError(f"PReLU: alpha {st.alpha.name} has "
                         f"{g.alpha_n} values for {g.C} channels")
    s.in_size = s.out_size = st.outer * st.C * st.inner
    return 0


cdef int _fill_copy(Step *s, object st, object dtype, list keep) except -1:
    s.run = _step_copy
    s.kind = STEP_COPY
    s.in_size = s.out_size = st.size
    return 0
