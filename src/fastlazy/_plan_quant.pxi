# Plan steps for int8 inference: a Dense or Conv2D layer that fl.quantize
# marked (its DenseStep / ConvStep carries an Int8Spec) runs on int8
# weights and uint8 activations, int32 sums, and a float epilogue (scale,
# bias or folded BatchNorm, activation) in the kernel.  The arithmetic is
# stated once, in kernels/qgemm.inc.h.
#
# Included into _plan.pyx: these steps share the plan's Step struct (their
# arguments are QuantArgs in _plan.pxd), its kernel table and its pool.
#
# The float32 weight stays the layer's parameter (what is saved, loaded and
# pickled); its int8 copy -- per-column scales, column sums, packed for the
# level's kernel -- is made once per write version of the weight, without
# the GIL, and kept on the layer's Int8Spec (one copy for every plan of the
# layer).  A step compares the weight's write version with the copy's at
# every call and quantizes again when they differ; while a data() view of
# the weight is alive (its values may change at any moment) every call
# quantizes it again, as the float steps read such a weight in place.

from libc.math cimport NAN, rintf


cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_mutex_init(pthread_mutex_t *m, const void *attr)
    int pthread_mutex_destroy(pthread_mutex_t *m)
    int pthread_mutex_lock(pthread_mutex_t *m)
    int pthread_mutex_unlock(pthread_mutex_t *m)


cdef struct QWState:
    unsigned long long version    # the weight's version the copy holds
    pthread_mutex_t mu            # one refresh at a time


def int8_kernels():
    """The int8 kernels in use: {'level', 'isa', 'panel', 'k_group',
    'act_bytes', 'rows', 'weight_max', 'best_level'} (level 0 baseline, 3
    AVX2, 4 AVX2 with 7-bit weights, 5 AVX-VNNI, 6 AVX-512 VNNI;
    best_level: what the CPU could run by default)."""
    return {"level": fl_kt.q_level, "isa": fl_kt.q_isa.decode(),
            "panel": fl_kt.q_nr, "k_group": fl_kt.q_ks,
            "act_bytes": fl_kt.q_esize, "rows": fl_kt.q_mr,
            "weight_max": fl_kt.q_wmax, "best_level": fl_kernels_qbest()}


def set_int8_avx2(str mode):
    """On a CPU without VNNI, which AVX2 int8 kernel runs: '7bit' (the
    default: vpmaddubsw on bytes, weights limited to 7 bits so that its
    saturating int16 sums stay exact) or 'exact' (8-bit weights, int16
    pairs through vpmaddwd: 1.6x the instructions per product, half the
    weight rounding error; docs/benchmarks.md has both measured).  CPUs
    with VNNI ignore it.  Quantized layers re-quantize
    their weights for the new kernel at their next call.  Returns the
    previous mode."""
    global _int8_avx2
    if mode not in ("exact", "7bit"):
        raise ValueError(f"set_int8_avx2: mode must be 'exact' or '7bit', "
                         f"got {mode!r}")
    old = _int8_avx2
    _int8_avx2 = mode
    fl_kernels_q7(mode == "7bit")
    set_isa(_isa_level)
    return old


_int8_avx2 = "7bit"


cdef class QWeights:
    """The int8 copy of one float32 weight, for the current kernel level:
    packed int8 values, per-column scales and column sums in one 64-byte
    aligned buffer (and, for a layer with few outputs, the values again as
    rows for the dot kernel)."""
    cdef cnp.ndarray buf
    cdef signed char *pk
    cdef signed char *rw
    cdef float *ws
    cdef int *wsum
    cdef Py_ssize_t K, M, sk, sm, npan
    cdef int level
    cdef object weight            # the Parameter
    cdef QWState state

    def __cinit__(self):
        pthread_mutex_init(&self.state.mu, NULL)

    def __dealloc__(self):
        pthread_mutex_destroy(&self.state.mu)


cdef inline Py_ssize_t _q_pk_bytes(Py_ssize_t K, Py_ssize_t M) noexcept nogil:
    cdef Py_ssize_t nr = fl_kt.q_nr, ks = fl_kt.q_ks
    return _align64(((M + nr - 1) // nr) * nr * ((K + ks - 1) // ks) * ks)


cdef inline bint _qdot_layer(Py_ssize_t M) noexcept nogil:
    """Whether a Dense layer of M outputs keeps its int8 weights as rows
    too, for the dot kernel at 1-2 rows: fewer outputs than a panel.  The
    panel kernel then runs a mostly empty panel, one 4-value group of k
    per step; the dot kernel a whole vector of k per step for each of
    ceil(M / 4) * 4 outputs (AVX2, 256 -> 10: 1,000 -> 430 instructions a
    row)."""
    return M < fl_kt.q_nr


cdef inline Py_ssize_t _q_rw_bytes(Py_ssize_t K, Py_ssize_t M) noexcept nogil:
    cdef Py_ssize_t dk = fl_kt.q_dotk
    return _align64((M + 3) // 4 * 4 * ((K + dk - 1) // dk) * dk)


# 0: the dot kernel never runs (tests and benchmarks compare the routes)
cdef bint _int8_dot = True


def set_int8_dot(bint on):
    """Whether int8 Dense layers with fewer outputs than a panel run 1-2
    rows on the dot kernel (the default) or on the panel kernel; for tests
    and benchmarks comparing the two, whose outputs are equal.  Returns
    the previous setting."""
    global _int8_dot
    old = _int8_dot
    _int8_dot = on
    return old


cdef inline bint _qdot_wins(const QuantArgs *a, Py_ssize_t rows) noexcept nogil:
    """The int8 Dense route: the dot kernel for 1-2 rows of a layer with a
    row copy (_qdot_layer); from 3 rows on the panel kernel's rows share
    its weight loads."""
    return a.rw != NULL and rows <= 2 and _int8_dot


cdef QWeights _qweights(object spec, Parameter w, Py_ssize_t K, Py_ssize_t M,
                        Py_ssize_t sk, Py_ssize_t sm):
    """``spec``'s int8 copy of ``w`` (K x M through strides sk, sm), made
    now when it is missing, of another level or shape, or out of date."""
    cdef QWeights qw = spec._cache
    cdef Py_ssize_t nr = fl_kt.q_nr, npan = (M + nr - 1) // nr
    cdef Py_ssize_t pkb, off, rwb
    cdef const float *src
    cdef unsigned long long version
    cdef char *base
    with w._lock:
        if qw is None or qw.weight is not w or qw.level != fl_kt.q_level \
                or qw.K != K or qw.M != M or qw.sk != sk or qw.sm != sm:
            qw = QWeights()
            pkb = _q_pk_bytes(K, M)
            # the row copy for Dense layers only (sm == 1: a Dense weight)
            rwb = _q_rw_bytes(K, M) if sm == 1 and _qdot_layer(M) else 0
            qw.buf = np.empty(pkb + 2 * _align64(npan * nr * 4) + rwb + 64,
                              dtype=np.uint8)
            base = <char *>cnp.PyArray_DATA(qw.buf)
            off = (-<size_t>base) & 63
            qw.pk = <signed char *>(base + off)
            qw.ws = <float *>(base + off + pkb)
            qw.wsum = <int *>(base + off + pkb + _align64(npan * nr * 4))
            qw.rw = NULL if rwb == 0 else <signed char *>(
                base + off + pkb + 2 * _align64(npan * nr * 4))
            qw.K, qw.M, qw.sk, qw.sm, qw.npan = K, M, sk, sm, npan
            qw.level = fl_kt.q_level
            qw.weight = w
            qw.state.version = w._version - 1
            spec._cache = qw
        if qw.state.version != w._version or w._live_views:
            src = <const float *>cnp.PyArray_DATA(w._storage)
            version = w._version
            with nogil:
                fl_kt.qpack(K, M, src, sk, sm, qw.pk, qw.ws, qw.wsum)
                if qw.rw != NULL:
                    fl_kt.qdotpack(K, M, qw.pk, qw.rw)
            qw.state.version = version
    return qw


cdef inline void _q_refresh(const QuantArgs *a) noexcept nogil:
    """Quantize the weight again if it was written since its copy was made
    (or may be written at any time: a data() view is alive)."""
    cdef QWState *st = <QWState *>a.qstate
    cdef unsigned long long v = a.wversion[0]
    if st.version == v and a.wviews[0] == 0:
        return
    pthread_mutex_lock(&st.mu)
    v = a.wversion[0]
    if st.version != v or a.wviews[0] != 0:
        fl_kt.qpack(a.K, a.M, a.w, a.sk, a.sm, a.pk, a.ws, a.wsum)
        if a.rw != NULL:
            fl_kt.qdotpack(a.K, a.M, a.pk, a.rw)
        st.version = v
    pthread_mutex_unlock(&st.mu)


cdef inline float _q_static(const QuantArgs *a, int *zp) noexcept nogil:
    """The static scale and zero point from the calibrated range (0: the
    layer is dynamic), by the dynamic rule applied to (lo, hi); NaN for a
    range that is not finite (its outputs are NaN)."""
    cdef float lo, hi, scale
    cdef int z
    if a.calib == NULL:
        zp[0] = 0
        return 0.0
    lo = a.calib[0] if a.calib[0] < 0 else 0.0
    hi = a.calib[1] if a.calib[1] > 0 else 0.0
    scale = (hi - lo) / <float>255.0
    if scale == 0:
        scale = 1.0
    if not (scale <= <float>3.4e38 and a.calib[0] == a.calib[0]
            and a.calib[1] == a.calib[1]):
        # a range written with NaN or infinity: NaN outputs (qrows)
        zp[0] = 0
        return <float>NAN
    z = <int>rintf(-lo / scale)
    zp[0] = 0 if z < 0 else (255 if z > 255 else z)
    return scale


cdef inline Py_ssize_t _q_coeff_bytes(const QuantArgs *a) noexcept nogil:
    return 0 if a.bn_mean == NULL else \
        3 * _align64(a.npan * fl_kt.q_nr * 4)


cdef inline void _q_coeffs(const QuantArgs *a, char *work, const float **ws,
                           const float **sh) noexcept nogil:
    """The epilogue's per-column scale and shift: the weight scales and the
    bias, or with a folded BatchNorm (from its current parameters) the
    weight scales times its scale and its shift (bias included)."""
    cdef Py_ssize_t Mp = a.npan * fl_kt.q_nr, m, stride
    cdef float *scale
    cdef float *shift
    cdef float *eff
    if a.bn_mean == NULL:
        ws[0] = a.ws
        sh[0] = <const float *>a.bias
        return
    stride = _align64(Mp * 4) // 4
    scale = <float *>work
    shift = scale + stride
    eff = shift + stride
    fl_kt.bn_coeffs_f32(a.M, <const float *>a.bn_gamma,
                        <const float *>a.bn_beta,
                        <const float *>a.bn_mean, <const float *>a.bn_var,
                        <const float *>a.bias, a.bn_eps, scale, shift)
    for m in range(a.M):
        eff[m] = a.ws[m] * scale[m]
    for m in range(a.M, Mp):
        eff[m] = 0
        shift[m] = 0
    ws[0] = eff
    sh[0] = shift


# ---------------------------------------------------------------------------
# Dense

cdef struct _QJob:
    const QuantArgs *a
    Py_ssize_t n
    const unsigned char *xq
    const float *xs
    const int *xz
    const float *ws
    const float *sh
    float *y
    Py_ssize_t per          # panels per item
    long next


cdef void _q_job(void *ctx, int tid, int nthreads) noexcept nogil:
    """Pool job: threads take groups of output panels from a counter."""
    cdef _QJob *j = <_QJob *>ctx
    cdef const QuantArgs *a = j.a
    cdef Py_ssize_t p0, p1
    while True:
        p0 = fl_next_item(&j.next) * j.per
        if p0 >= a.npan:
            break
        p1 = p0 + j.per if p0 + j.per < a.npan else a.npan
        fl_kt.qgemm(j.n, a.K, a.M, j.xq, a.ldq, j.xs, j.xz, a.pk, p0, p1,
                    j.ws, a.wsum, j.sh, j.y, a.M, a.act)


cdef void _step_qdense(const Step *s, Py_ssize_t b, char *const *bufs,
                       char *work) noexcept nogil:
    cdef const QuantArgs *a = &s.a.quant
    cdef Py_ssize_t rows = b * a.rows, r0, nr, K = a.K, M = a.M
    cdef const float *x = <const float *>bufs[s.src[0]]
    cdef float *y = <float *>bufs[s.dst]
    cdef const float *ws
    cdef const float *sh
    cdef char *w2 = work + _q_coeff_bytes(a)
    cdef unsigned char *xq = <unsigned char *>w2
    cdef float *xs = <float *>(w2 + _align64(a.chunk * a.ldq))
    cdef int *xz = <int *>(<char *>xs + _align64(a.chunk * 4))
    cdef int zp
    cdef float fscale = _q_static(a, &zp)
    cdef int nthreads = _num_threads
    cdef _QJob job
    _q_refresh(a)
    _q_coeffs(a, work, &ws, &sh)
    r0 = 0
    while r0 < rows:
        nr = rows - r0 if rows - r0 < a.chunk else a.chunk
        fl_kt.qrows(nr, K, x + r0 * K, K, xq, a.ldq, xs, xz, fscale, zp)
        if _qdot_wins(a, nr):
            fl_kt.qdot(nr, K, M, xq, a.ldq, xs, xz, a.rw, ws, a.wsum, sh,
                       y + r0 * M, M, a.act)
        elif nthreads > 1 and nr * K * M >= _PAR_MACS and a.npan > 1:
            # a big product on its own (one sample, or the plan runs a
            # single tile): groups of panels to the pool's threads; inside
            # a parallel tile the pool is busy and this runs alone
            job.a = a
            job.n = nr
            job.xq = xq
            job.xs = xs
            job.xz = xz
            job.ws = ws
            job.sh = sh
            job.y = y + r0 * M
            job.per = (a.npan + 4 * nthreads - 1) // (4 * nthreads)
            job.next = 0
            fl_pool_run(_q_job, &job, nthreads)
        else:
            fl_kt.qgemm(nr, K, M, xq, a.ldq, xs, xz, a.pk, 0, a.npan, ws,
                        a.wsum, sh, y + r0 * M, M, a.act)
        r0 += nr


cdef int _fill_quant_common(Step *s, object st, object dtype, list keep,
                            Py_ssize_t K, Py_ssize_t M, Py_ssize_t sk,
                            Py_ssize_t sm, str where) except -1:
    cdef QuantArgs *a = &s.a.quant
    cdef Parameter w = st.weight
    cdef QWeights qw
    cdef Py_ssize_t ks = fl_kt.q_ks
    spec = st.quant
    if dtype != np.float32:
        raise TypeError(f"{where} is quantized to int8, which runs on "
                        f"float32 inputs and parameters; the network is "
                        f"{dtype} (cast it to float32 before quantizing)")
    a.w = <const float *>_param_ptr(w, dtype, keep, w._transposed)
    qw = _qweights(spec, w, K, M, sk, sm)
    keep.append(qw)
    keep.append(w)
    a.sk, a.sm = sk, sm
    a.pk, a.ws, a.wsum, a.rw = qw.pk, qw.ws, qw.wsum, qw.rw
    a.qstate = <void *>&qw.state
    a.wversion = &w._version
    a.wviews = &w._live_views
    a.bias = _opt_ptr(st.bias, dtype, keep)
    a.calib = NULL if spec.calib is None else \
        <const float *>_param_ptr(spec.calib, dtype, keep)
    if st.bn is not None:
        a.bn_gamma = _opt_ptr(st.bn.gamma, dtype, keep)
        a.bn_beta = _opt_ptr(st.bn.beta, dtype, keep)
        a.bn_mean = _param_ptr(st.bn.mean, dtype, keep)
        a.bn_var = _param_ptr(st.bn.var, dtype, keep)
        a.bn_eps = st.bn.eps
    a.act = st.act
    a.K, a.M = K, M
    a.npan = qw.npan
    a.ldq = _align64((K + ks - 1) // ks * ks * fl_kt.q_esize)
    return 0


cdef int _fill_qdense(Step *s, object st, object dtype, list keep) except -1:
    cdef QuantArgs *a = &s.a.quant
    _check_blas_dims("Dense", (st.K, st.M))
    _fill_quant_common(s, st, dtype, keep, st.K, st.M, st.M, 1,
                       "a Dense layer")
    s.run = _step_qdense
    s.kind = STEP_QDENSE
    a.rows = st.rows
    s.in_size = st.rows * st.K
    s.out_size = st.rows * st.M
    s.macs = st.rows * st.K * st.M
    # rows quantized at a time: up to 256 KiB of them, whole register tiles
    a.chunk = max(fl_kt.q_mr, min(256, (1 << 18) // a.ldq))
    a.chunk -= a.chunk % fl_kt.q_mr
    s.work = _q_coeff_bytes(a) + _align64(a.chunk * a.ldq) \
        + 2 * _align64(a.chunk * 4)
    return 0


# ---------------------------------------------------------------------------
# Conv2D (groups == 1): per sample, quantize the input once, then per chunk
# of output pixels the quantized rows under the window (qim2col), the int8
# product into a pixel-major tile and its transpose into the NCHW output.
# The activation scale is the sample's own (dynamic) or the calibrated one.

cdef void _step_qconv(const Step *s, Py_ssize_t b, char *const *bufs,
                      char *work) noexcept nogil:
    cdef const QuantArgs *a = &s.a.quant
    cdef const ConvGeometry *g = &a.g
    cdef Py_ssize_t CHW = g.C * g.H * g.W, P = g.OH * g.OW, O = g.O
    cdef Py_ssize_t n, p0, p1, np_, r, o
    cdef const float *x = <const float *>bufs[s.src[0]]
    cdef float *y = <float *>bufs[s.dst]
    cdef const float *ws
    cdef const float *sh
    cdef char *w2 = work + _q_coeff_bytes(a)
    cdef unsigned char *img = <unsigned char *>w2
    cdef unsigned char *col = img + _align64((CHW + 4) * fl_kt.q_esize)
    cdef float *tile = <float *>(<char *>col + _align64(a.chunk * a.ldq))
    cdef float *xs = <float *>(<char *>tile + _align64(a.chunk * O * 4))
    cdef int *xz = <int *>(<char *>xs + _align64(a.chunk * 4))
    cdef float xs0
    cdef int xz0, zp
    cdef float fscale = _q_static(a, &zp)
    cdef float *yn
    _q_refresh(a)
    _q_coeffs(a, work, &ws, &sh)
    for n in range(b):
        fl_kt.qrows(1, CHW, x + n * CHW, CHW, img, 0, &xs0, &xz0, fscale, zp)
        yn = y + n * O * P
        p0 = 0
        while p0 < P:
            p1 = p0 + a.chunk if p0 + a.chunk < P else P
            np_ = p1 - p0
            fl_kt.qim2col(img, g.C, g.H, g.W, g.kh, g.kw, g.sh, g.sw, g.ph,
                          g.pw, g.dh, g.dw, g.OW, p0, p1, col, a.ldq, xz0)
            for r in range(np_):
                xs[r] = xs0
                xz[r] = xz0
            fl_kt.qgemm(np_, a.K, O, col, a.ldq, xs, xz, a.pk, 0, a.npan,
                        ws, a.wsum, sh, tile, O, a.act)
            for o in range(O):
                for r in range(np_):
                    yn[o * P + p0 + r] = tile[r * O + o]
            p0 = p1


cdef int _fill_qconv(Step *s, object st, object dtype, list keep) except -1:
    cdef QuantArgs *a = &s.a.quant
    cdef ConvGeometry *g = &a.g
    cdef Py_ssize_t K, P, CHW
    geom = st.geom
    g.C, g.H, g.W, g.O = geom.C, geom.H, geom.W, geom.O
    g.kh, g.kw, g.sh, g.sw = geom.kh, geom.kw, geom.sh, geom.sw
    g.ph, g.pw, g.dh, g.dw = geom.ph, geom.pw, geom.dh, geom.dw
    g.groups, g.OH, g.OW = geom.groups, geom.OH, geom.OW
    if g.groups != 1:
        raise ValueError(f"conv step: int8 runs convolutions of one group, "
                         f"not {g.groups}")
    K = g.C * g.kh * g.kw
    P = g.OH * g.OW
    CHW = g.C * g.H * g.W
    _fill_quant_common(s, st, dtype, keep, K, g.O, 1, K, "a Conv2D layer")
    s.run = _step_qconv
    s.kind = STEP_QCONV
    a.rows = 1
    s.in_size = CHW
    s.out_size = g.O * P
    s.macs = g.O * P * K
    # output pixels per product: their rows and outputs within 256 KiB
    a.chunk = (1 << 18) // (a.ldq + 4 * g.O)
    a.chunk = max(fl_kt.q_mr, min(a.chunk, P))
    s.work = _q_coeff_bytes(a) + _align64((CHW + 4) * fl_kt.q_esize) \
        + _align64(a.chunk * a.ldq) + _align64(a.chunk * g.O * 4) \
        + 2 * _align64(a.chunk * 4)
    return 0


# ---------------------------------------------------------------------------
# Test twins: the kernels on their own, at the level set_isa chose

def qpack_kernel(cnp.ndarray w, bint transposed=True):
    """Quantize and pack a float32 weight: ``w`` (K, M) as a Dense weight
    is stored (transposed=True), or (M, K) as a convolution's.  Returns
    (packed bytes as int8, scales, column sums), the latter two padded to
    whole panels."""
    cdef Py_ssize_t K, M, sk, sm, nr = fl_kt.q_nr
    if w.dtype != np.float32 or w.ndim != 2 or not w.flags.c_contiguous:
        raise ValueError("qpack_kernel: need a C-contiguous 2-D float32 w")
    if transposed:
        K, M, sk, sm = w.shape[0], w.shape[1], w.shape[1], 1
    else:
        M, K, sk, sm = w.shape[0], w.shape[1], 1, w.shape[1]
    npan = (M + nr - 1) // nr
    pk = np.empty(_q_pk_bytes(K, M), dtype=np.int8)
    ws = np.empty(npan * nr, dtype=np.float32)
    wsum = np.empty(npan * nr, dtype=np.int32)
    fl_kt.qpack(K, M, <const float *>cnp.PyArray_DATA(w), sk, sm,
                <signed char *>cnp.PyArray_DATA(pk),
                <float *>cnp.PyArray_DATA(ws), <int *>cnp.PyArray_DATA(wsum))
    return pk, ws, wsum


def qrows_kernel(cnp.ndarray x, calib=None):
    """Quantize the rows of float32 ``x`` (n, K): returns (levels (n, K) as
    int16 -- the u8 levels, or the int16 ``u - zp`` at the AVX2 level --,
    scales, zero points the kernel subtracts).  ``calib``: a static (lo,
    hi) range instead of each row's own."""
    cdef Py_ssize_t n, K, ks = fl_kt.q_ks, ldq, i
    cdef QuantArgs a
    cdef cnp.ndarray cal
    cdef int zp = 0
    cdef float fscale = 0
    if x.dtype != np.float32 or x.ndim != 2 or not x.flags.c_contiguous:
        raise ValueError("qrows_kernel: need a C-contiguous 2-D float32 x")
    n, K = x.shape[0], x.shape[1]
    if calib is not None:
        cal = np.ascontiguousarray(calib, dtype=np.float32)
        memset(&a, 0, sizeof(QuantArgs))
        a.calib = <const float *>cnp.PyArray_DATA(cal)
        fscale = _q_static(&a, &zp)
    ldq = _align64((K + ks - 1) // ks * ks * fl_kt.q_esize)
    xq = np.zeros((n, ldq), dtype=np.uint8)
    xs = np.empty(n, dtype=np.float32)
    xz = np.empty(n, dtype=np.int32)
    if n:
        fl_kt.qrows(n, K, <const float *>cnp.PyArray_DATA(x), K,
                    <unsigned char *>cnp.PyArray_DATA(xq), ldq,
                    <float *>cnp.PyArray_DATA(xs), <int *>cnp.PyArray_DATA(xz),
                    fscale, zp)
    if fl_kt.q_esize == 1:
        levels = xq[:, :K].astype(np.int16)
    else:
        levels = xq.view(np.int16)[:, :K].copy()
    return levels, xs, xz


def qdense_kernel(cnp.ndarray x, cnp.ndarray wt, b=None, int act=0,
                  calib=None, Py_ssize_t p0=0, p1=None, bint dot=False):
    """Test twin of an int8 Dense step: ``x`` (n, K) float32, ``wt`` (K, M)
    float32 (a Dense weight as stored), bias (M,) or None, a kernel
    activation code, a static (lo, hi) range or None (dynamic).  Computes
    output panels [p0, p1) (default all) through qpack, qrows and qgemm at
    the current level; the other columns are left NaN.  dot=True: all
    columns through qdotpack and the dot kernel instead (any M)."""
    cdef Py_ssize_t n, K, M, nr = fl_kt.q_nr, npan, ldq, dk
    cdef const float *bp = NULL
    cdef cnp.ndarray ba, y, cal, bm
    cdef int zp = 0
    cdef float fscale = 0
    cdef QuantArgs a
    if wt.dtype != np.float32 or wt.ndim != 2 or x.ndim != 2 or \
            x.dtype != np.float32 or x.shape[1] != wt.shape[0]:
        raise ValueError("qdense_kernel: need float32 x (n, K), wt (K, M)")
    x = np.ascontiguousarray(x)
    wt = np.ascontiguousarray(wt)
    n, K, M = x.shape[0], wt.shape[0], wt.shape[1]
    npan = (M + nr - 1) // nr
    pk, ws, wsum = qpack_kernel(wt)
    ldq = _align64((K + fl_kt.q_ks - 1) // fl_kt.q_ks * fl_kt.q_ks
                   * fl_kt.q_esize)
    xq = np.zeros((n, ldq), dtype=np.uint8)
    xs = np.empty(n, dtype=np.float32)
    xz = np.empty(n, dtype=np.int32)
    if calib is not None:
        cal = np.ascontiguousarray(calib, dtype=np.float32)
        memset(&a, 0, sizeof(QuantArgs))
        a.calib = <const float *>cnp.PyArray_DATA(cal)
        fscale = _q_static(&a, &zp)
    if n:
        fl_kt.qrows(n, K, <const float *>cnp.PyArray_DATA(x), K,
                    <unsigned char *>cnp.PyArray_DATA(xq), ldq,
                    <float *>cnp.PyArray_DATA(xs), <int *>cnp.PyArray_DATA(xz),
                    fscale, zp)
    if b is not None:
        ba = np.zeros(npan * nr, dtype=np.float32)
        ba[:M] = b
        bp = <const float *>cnp.PyArray_DATA(ba)
    y = np.full((n, M), np.nan, dtype=np.float32)
    if p1 is None:
        p1 = npan
    if not 0 <= p0 <= p1 <= npan:
        raise ValueError(f"qdense_kernel: panels [{p0}, {p1}) outside "
                         f"[0, {npan}]")
    if dot and n:
        if b is not None:       # (M,) as a layer's bias: not padded
            bm = np.ascontiguousarray(ba[:M])
        dk = fl_kt.q_dotk
        rw = np.empty((M + 3) // 4 * 4 * ((K + dk - 1) // dk) * dk,
                      dtype=np.int8)
        fl_kt.qdotpack(K, M, <const signed char *>cnp.PyArray_DATA(pk),
                       <signed char *>cnp.PyArray_DATA(rw))
        fl_kt.qdot(n, K, M, <const unsigned char *>cnp.PyArray_DATA(xq),
                   ldq, <const float *>cnp.PyArray_DATA(xs),
                   <const int *>cnp.PyArray_DATA(xz),
                   <const signed char *>cnp.PyArray_DATA(rw),
                   <const float *>cnp.PyArray_DATA(ws),
                   <const int *>cnp.PyArray_DATA(wsum),
                   <const float *>cnp.PyArray_DATA(bm) if b is not None
                   else NULL, <float *>cnp.PyArray_DATA(y), M, act)
    elif n:
        fl_kt.qgemm(n, K, M, <const unsigned char *>cnp.PyArray_DATA(xq),
                    ldq, <const float *>cnp.PyArray_DATA(xs),
                    <const int *>cnp.PyArray_DATA(xz),
                    <const signed char *>cnp.PyArray_DATA(pk), p0, p1,
                    <const float *>cnp.PyArray_DATA(ws),
                    <const int *>cnp.PyArray_DATA(wsum), bp,
                    <float *>cnp.PyArray_DATA(y), M, act)
    return y
