# Plan steps on bfloat16 weights (``net.cast('bfloat16')``): the weights
# of Dense and Conv2D layers are stored as bfloat16, everything the plan
# moves between layers stays float32.
#
# Included into _plan.pyx.  A Dense step on bfloat16 weights
# (STEP_DENSE_BF16, its arguments a DenseArgs) reads only its weights'
# *pair panels* (kernels/dense_bf16.inc.h states the layout), made from the
# parameter when the plan is built -- one copy per version of the values,
# kept in the parameter's ``_packed`` slot and shared by every plan that
# reads it -- and runs the table's gemm_bf16 on them for any batch: one or
# two rows as a matrix-vector product over the panels (bandwidth-bound:
# half the bytes of float32), more rows in register tiles like the float32
# packed kernel.  A layer with few outputs (float32's rule for its dot
# kernel, _dot_wins, at the panels' vector width: 256 -> 10) keeps a second
# copy beside the panels, its weights as (M, K) rows of bfloat16 pairs
# (kernels/dense_bf16_dot.inc.h), and runs one or two rows on it as dot
# products along k (gemm_bf16_rows): the panel would compute 16 columns to
# keep 10.  Where the CPU has AVX512-BF16, batches of at least
# _BF16_DOT_ROWS rows use vdpbf16ps (which rounds the activations to
# bfloat16 too); smaller ones keep the exact conversion, which is as fast
# there (memory-bound) and more accurate.
#
# A convolution on bfloat16 weights runs on a float32 copy of them made
# with the plan (the same per-version copy): the stored parameters are
# bfloat16 (half the bytes on disk and in the parameter), the convolution
# computes exactly as with float32 weights of those values.
#
# A bfloat16 parameter hands out only copies of its values (``data()`` is
# read-only), so every write goes through it (set_data, initialize, cast,
# load) and tells the plans reading it to rebuild: the copies here are
# never stale, and no call checks a version.


cdef class PackedBF16:
    """The values of a bfloat16 weight in a kernel's layout: pair panels of
    ``nr`` columns (a Dense weight), or float32 (``nr`` 0: a convolution's
    weight).  Immutable once made: new values get a new object, so a plan
    still running on the old one is never written under."""
    cdef cnp.ndarray buf
    cdef Py_ssize_t off               # bytes from buf's start to 64 bytes
    cdef Py_ssize_t roff              # bytes from data() to the row copy,
                                      # -1 without one (_bf16_rows_layer)
    cdef int nr
    cdef unsigned long long version   # the weight's _version when made

    cdef inline char *data(self):
        return <char *>cnp.PyArray_DATA(self.buf) + self.off

    cdef inline char *rows(self):
        return NULL if self.roff < 0 else self.data() + self.roff


cdef inline bint _bf16_rows_layer(Py_ssize_t K, Py_ssize_t M) noexcept nogil:
    """Whether a Dense layer on bfloat16 weights keeps the row copy: the
    float32 dot kernel's shapes (_dot_wins) at the pair panels' vector
    width (AVX2, 1 row of 256 -> 10: 3.5k -> 0.8k instructions)."""
    return _dot_wins(1, K, M, fl_kt.nr_bf16 // 2)


cdef inline Py_ssize_t _bf16_rows_words(Py_ssize_t K,
                                        Py_ssize_t M) noexcept nogil:
    """32-bit words of the row copy (dense_bf16_dot.inc.h)."""
    cdef Py_ssize_t nr = fl_kt.nr_bf16
    return M * ((K + nr - 1) // nr) * (nr // 2)


cdef PackedBF16 _bf16_prepared(Parameter w, bint dense):
    """``w``'s values (bfloat16, initialized) in the kernels' layout, made
    without the GIL under the parameter's lock, or the copy made before if
    the values have not changed since."""
    cdef PackedBF16 pk
    cdef cnp.ndarray st
    cdef Py_ssize_t K = 0, M = 0, n, words, rwords = 0
    cdef int nr = fl_kt.nr_bf16 if dense else 0
    cdef const uint16_t *src
    cdef char *dst
    cdef object cur = w._packed
    if isinstance(cur, PackedBF16) and (<PackedBF16>cur).version == \
            w._version and (<PackedBF16>cur).nr == nr:
        return <PackedBF16>cur
    with w._lock:
        cur = w._packed
        if isinstance(cur, PackedBF16) and (<PackedBF16>cur).version == \
                w._version and (<PackedBF16>cur).nr == nr:
            return <PackedBF16>cur
        st = w._storage
        n = st.size
        if dense:
            K = cnp.PyArray_DIM(st, 0)
            M = cnp.PyArray_DIM(st, 1)
            words = ((M + nr - 1) // nr) * ((K + 1) // 2) * nr
            if _bf16_rows_layer(K, M):
                rwords = _bf16_rows_words(K, M)
                words = (words + 15) // 16 * 16     # the rows 64-aligned
        else:
            words = n
        pk = PackedBF16()
        try:
            pk.buf = np.empty((words + rwords) * 4 + 64, np.uint8)
        except MemoryError:
            raise MemoryError(
                f"parameter {w.name}: cannot allocate "
                f"{(words + rwords) * 4} bytes "
                f"for its bfloat16 values in the kernels' layout") from None
        pk.off = (-<size_t>cnp.PyArray_DATA(pk.buf)) & 63
        pk.nr = nr
        pk.roff = words * 4 if rwords else -1
        pk.version = w._version
        src = <const uint16_t *>cnp.PyArray_DATA(st)
        dst = pk.data()
        with nogil:
            if dense:
                fl_kt.pack_bf16(K, M, src, <uint32_t *>dst)
                if rwords:
                    fl_kt.pack_bf16_rows(K, M, src,
                                         <uint32_t *>(dst + words * 4))
            else:
                fl_kt.widen_bf16(n, src, <float *>dst)
        w._packed = pk
    return pk


cdef int _check_bf16_net(Parameter w, object dtype) except -1:
    if dtype != np.float32:
        raise TypeError(
            f"parameter {w.name} is bfloat16, which fastlazy computes in "
            f"float32, but the network's other parameters are {dtype}: "
            f"cast the network with net.cast('bfloat16') (bfloat16 "
            f"weights, float32 rest) or net.cast('{dtype}')")
    if w._storage is None or w._state != INITIALIZED:
        raise DeferredInitializationError(w._not_ready_message())
    return 0


cdef char *_conv_weight(Parameter w, object dtype, list keep) except NULL:
    """A convolution's weight for the kernels: its storage, or for a
    bfloat16 weight a float32 copy of its values."""
    cdef PackedBF16 pk
    if w._dtype is not bfloat16:
        return _param_ptr(w, dtype, keep)
    _check_bf16_net(w, dtype)
    pk = _bf16_prepared(w, False)
    keep.append(pk)
    keep.append(w)
    return pk.data()


# Batches of at least this many rows use vdpbf16ps where the CPU has it
# (-1: never); see set_bf16_tuning.
cdef Py_ssize_t _BF16_DOT_ROWS = 8

cdef enum Bf16Route:
    BF16_CONVERT = 0        # the table's gemm_bf16
    BF16_DOT = 1            # gemm_bf16_dot (vdpbf16ps)
    BF16_EMULATED = 2       # gemm_bf16_emu (tests, AVX2)
    BF16_ROWS = 3           # gemm_bf16_rows on the row copy

# 0: the row copy is never run (tests and benchmarks compare the routes)
cdef bint _bf16_rows_on = True


def set_bf16_rows(bint on):
    """Whether Dense layers on bfloat16 weights with a row copy run 1-2
    rows on it (the default) or on the pair panels, for tests and
    benchmarks comparing the two.  Returns the previous setting."""
    global _bf16_rows_on
    old = _bf16_rows_on
    _bf16_rows_on = on
    return old


def set_bf16_tuning(dot_rows=None):
    """Set the batch (rows through a layer) from which Dense layers on
    bfloat16 weights use AVX512-BF16's vdpbf16ps where the CPU has it
    (-1: never).  Returns the old value; plans are rebuilt on their next
    call."""
    global _BF16_DOT_ROWS
    old = _BF16_DOT_ROWS
    if dot_rows is not None:
        _BF16_DOT_ROWS = max(-1, int(dot_rows))
    invalidate_all()
    return old


def bf16_kernel():
    """How Dense layers on bfloat16 weights compute at the current
    instruction-set level (for show_config)."""
    conv = (f"{kernel_isa()}: bfloat16 pair panels of {fl_kt.nr_bf16} "
            f"columns widened to float32 in registers (shift/and), float32 "
            f"FMA")
    if fl_kt.gemm_bf16_dot != NULL and _BF16_DOT_ROWS >= 0:
        return (f"AVX512-BF16 vdpbf16ps from {_BF16_DOT_ROWS} rows; "
                f"fewer rows: {conv}")
    return conv


cdef inline int _bf16_route(const DenseArgs *a,
                            Py_ssize_t rows) noexcept nogil:
    """The kernel a Dense step on bfloat16 weights runs ``rows`` rows on
    (Bf16Route): the row copy (a.w, when the layer has one) for 1-2 rows,
    vdpbf16ps from _BF16_DOT_ROWS rows where the CPU has it, else the
    conversion on the pair panels."""
    if a.route >= 0:
        return a.route
    if a.w != NULL and _bf16_rows_on and \
            _dot_wins(rows, a.K, a.M, fl_kt.nr_bf16 // 2):
        return BF16_ROWS
    if fl_kt.gemm_bf16_dot != NULL and _BF16_DOT_ROWS >= 0 and \
            rows >= _BF16_DOT_ROWS:
        return BF16_DOT
    return BF16_CONVERT


cdef void _bf16_panels(const Step *s, Py_ssize_t rows, const char *x,
                       char *y, Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    """Panels [p0, p1) of a Dense step on bfloat16 weights."""
    cdef const DenseArgs *a = &s.a.dense
    cdef Py_ssize_t M = a.M, m0, mc, nr = fl_kt.nr_bf16
    cdef bint bn = a.bn_mean != NULL
    cdef const float *bias = NULL if bn else <const float *>a.bias
    cdef int act = FL_ACT_NONE if bn else a.act
    cdef int route = _bf16_route(a, rows)
    if route == BF16_DOT:
        fl_kt.gemm_bf16_dot(rows, a.K, M, <const float *>x, a.K,
                            <const uint32_t *>a.packed, p0, p1, bias,
                            <float *>y, M, act)
    elif route == BF16_EMULATED:
        fl_kt.gemm_bf16_emu(rows, a.K, M, <const float *>x, a.K,
                            <const uint32_t *>a.packed, p0, p1, bias,
                            <float *>y, M, act)
    else:
        fl_kt.gemm_bf16(rows, a.K, M, <const float *>x, a.K,
                        <const uint32_t *>a.packed, p0, p1, bias,
                        <float *>y, M, act)
    if bn:
        m0 = p0 * nr
        mc = (M if p1 * nr > M else p1 * nr) - m0
        _dense_bn(s, rows, y, m0, mc)


cdef inline Py_ssize_t _bf16_npanels(const Step *s) noexcept nogil:
    return (s.a.dense.M + fl_kt.nr_bf16 - 1) // fl_kt.nr_bf16


cdef void _bf16_rows(const Step *s, Py_ssize_t rows, const char *x,
                     char *y) noexcept nogil:
    """A Dense step on bfloat16 weights through its row copy (a.w)."""
    cdef const DenseArgs *a = &s.a.dense
    cdef bint bn = a.bn_mean != NULL
    fl_kt.gemm_bf16_rows(rows, a.K, a.M, <const float *>x, a.K,
                         <const uint32_t *>a.w,
                         NULL if bn else <const float *>a.bias,
                         <float *>y, a.M, FL_ACT_NONE if bn else a.act)
    if bn:
        _dense_bn(s, rows, y, 0, a.M)


cdef void _step_dense_bf16(const Step *s, Py_ssize_t b, char *const *bufs,
                           char *work) noexcept nogil:
    cdef Py_ssize_t rows = b * s.a.dense.rows
    if _bf16_route(&s.a.dense, rows) == BF16_ROWS:
        _bf16_rows(s, rows, bufs[s.src[0]], bufs[s.dst])
    else:
        _bf16_panels(s, rows, bufs[s.src[0]], bufs[s.dst], 0,
                     _bf16_npanels(s))


cdef inline bint _bf16_splits(const Step *s, Py_ssize_t n,
                              int nthreads) noexcept nogil:
    """Whether a small batch splits this step across threads by panels:
    when each thread gets a few panels of enough work."""
    return _bf16_npanels(s) >= 2 * nthreads and \
        n * s.macs >= (_PAR_MACS >> 2) and \
        _bf16_route(&s.a.dense, n * s.a.dense.rows) != BF16_ROWS


cdef void _bf16_columns_job(void *vctx, int tid, int nthreads) noexcept nogil:
    """A Dense step on bfloat16 weights split by panels, claimed a few at a
    time from a shared counter (see _columns_job)."""
    cdef RunCtx *c = <RunCtx *>vctx
    cdef const Step *s = c.step
    cdef Py_ssize_t npan = _bf16_npanels(s), p0
    cdef Py_ssize_t rows = c.n * s.a.dense.rows
    # about 8 claims per thread: a late thread finds little left to do
    cdef Py_ssize_t chunk = npan // (8 * nthreads)
    if chunk < 1:
        chunk = 1
    while True:
        p0 = fl_next_item(&c.next_tile) * chunk
        if p0 >= npan:
            break
        _bf16_panels(s, rows, c.src, c.dst, p0,
                     npan if p0 + chunk > npan else p0 + chunk)


cdef int _fill_dense_bf16(Step *s, object st, object dtype,
                          list keep) except -1:
    """A DenseStep whose weight is bfloat16 (see the top)."""
    cdef DenseArgs *a = &s.a.dense
    cdef Parameter w = st.weight
    cdef PackedBF16 pk
    _check_bf16_net(w, dtype)
    s.run = _step_dense_bf16
    s.kind = STEP_DENSE_BF16
    a.act = st.act
    a.route = -1
    a.rows = st.rows
    a.K = st.K
    a.M = st.M
    s.in_size = st.rows * st.K
    s.out_size = st.rows * st.M
    s.macs = st.rows * st.K * st.M
    pk = _bf16_prepared(w, True)
    keep.append(pk)
    a.w = pk.rows()
    a.packed = pk.data()
    a.bias = _opt_ptr(st.bias, dtype, keep)
    if st.bn is not None:
        a.bn_gamma = _opt_ptr(st.bn.gamma, dtype, keep)
        a.bn_beta = _opt_ptr(st.bn.beta, dtype, keep)
        a.bn_mean = _param_ptr(st.bn.mean, dtype, keep)
        a.bn_var = _param_ptr(st.bn.var, dtype, keep)
        a.bn_eps = st.bn.eps
    keep.append(w)
    a.wparam = <void *>w
    return 0


# ---------------------------------------------------------------------------
# Test twins

def round_bf16(values):
    """``values`` (float or integer array) rounded to bfloat16: the uint16
    patterns, to nearest even (Parameter's rounding)."""
    from ._parameter import _round_bf16
    return _round_bf16(np.asarray(values))


def bf16_dense_kernel(x, wt_bits, b=None, int act=0, route="convert"):
    """Test twin of a Dense step on bfloat16 weights: ``act(x @ W + b)``
    with x (n, K) float32, ``wt_bits`` (K, M) uint16 bfloat16 patterns of
    W, b (M,) float32 or None.

    ``route``: 'convert' (gemm_bf16 at the level set_isa chose), 'dot'
    (vdpbf16ps; ValueError when the CPU or level lacks it), 'emulated'
    (its emulation, at the AVX2 level only) or 'rows' (gemm_bf16_rows on
    the row copy, for any shape).  The pair panels and the row copy are
    each followed by a panel or a row of NaN: a read past them shows in the
    result.
    """
    cdef Step s
    cdef cnp.ndarray xa = np.ascontiguousarray(x, dtype=np.float32)
    cdef cnp.ndarray wa = np.ascontiguousarray(wt_bits, dtype=np.uint16)
    cdef cnp.ndarray ba
    cdef cnp.ndarray pk
    cdef cnp.ndarray rw
    cdef cnp.ndarray out
    cdef Py_ssize_t n, K, M, nr = fl_kt.nr_bf16, words
    cdef char *bufs[2]
    routes = {"convert": BF16_CONVERT, "dot": BF16_DOT,
              "emulated": BF16_EMULATED, "rows": BF16_ROWS}
    if route not in routes:
        raise ValueError(f"bf16_dense_kernel: route must be one of "
                         f"{list(routes)}, got {route!r}")
    if route == "dot" and fl_kt.gemm_bf16_dot == NULL:
        raise ValueError("bf16_dense_kernel: no vdpbf16ps at this level "
                         "or on this CPU")
    if route == "emulated" and fl_kt.gemm_bf16_emu == NULL:
        raise ValueError("bf16_dense_kernel: the emulation exists at the "
                         "AVX2 level only")
    if xa.ndim != 2 or wa.ndim != 2 or wa.shape[0] != xa.shape[1]:
        raise ValueError("bf16_dense_kernel: need x (n, K) and wt (K, M)")
    n, K, M = xa.shape[0], wa.shape[0], wa.shape[1]
    words = ((M + nr - 1) // nr) * ((K + 1) // 2) * nr
    # a spare panel of NaN pairs (0x7fc0 in both halves) after the end
    pk = np.full(words + ((K + 1) // 2) * nr, 0x7fc07fc0, dtype=np.uint32)
    fl_kt.pack_bf16(K, M, <const uint16_t *>cnp.PyArray_DATA(wa),
                    <uint32_t *>cnp.PyArray_DATA(pk))
    out = np.empty((n, M), dtype=np.float32)
    memset(&s, 0, sizeof(Step))
    s.itemsize = 4
    s.src[0] = 0
    s.dst = 1
    s.a.dense.act = act
    s.a.dense.route = routes[route]
    s.a.dense.rows = 1
    s.a.dense.K = K
    s.a.dense.M = M
    s.a.dense.packed = <char *>cnp.PyArray_DATA(pk)
    if route == "rows":
        words = _bf16_rows_words(K, M)
        rw = np.full(words + _bf16_rows_words(K, 1), 0x7fc07fc0,
                     dtype=np.uint32)
        fl_kt.pack_bf16_rows(K, M, <const uint16_t *>cnp.PyArray_DATA(wa),
                             <uint32_t *>cnp.PyArray_DATA(rw))
        s.a.dense.w = <char *>cnp.PyArray_DATA(rw)
    if b is not None:
        ba = np.ascontiguousarray(b, dtype=np.float32)
        if ba.ndim != 1 or ba.shape[0] != M:
            raise ValueError("bf16_dense_kernel: bias must have shape (M,)")
        s.a.dense.bias = <char *>cnp.PyArray_DATA(ba)
    bufs[0] = <char *>cnp.PyArray_DATA(xa)
    bufs[1] = <char *>cnp.PyArray_DATA(out)
    with nogil:
        _step_dense_bf16(&s, n, bufs, NULL)
    return out


def bf16_pack(wt_bits):
    """The pair panels the kernels read for ``wt_bits`` (K, M) uint16, as a
    uint32 array (tests of the layout)."""
    cdef cnp.ndarray wa = np.ascontiguousarray(wt_bits, dtype=np.uint16)
    cdef Py_ssize_t K = wa.shape[0], M = wa.shape[1], nr = fl_kt.nr_bf16
    cdef cnp.ndarray pk = np.empty(((M + nr - 1) // nr) * ((K + 1) // 2)
                                   * nr, dtype=np.uint32)
    fl_kt.pack_bf16(K, M, <const uint16_t *>cnp.PyArray_DATA(wa),
                    <uint32_t *>cnp.PyArray_DATA(pk))
    return pk, nr


def bf16_pack_rows(wt_bits):
    """The row copy gemm_bf16_rows reads for ``wt_bits`` (K, M) uint16, as
    a (blocks of k, M, nr_bf16 // 2) uint32 array (tests of the layout)."""
    cdef cnp.ndarray wa = np.ascontiguousarray(wt_bits, dtype=np.uint16)
    cdef Py_ssize_t K = wa.shape[0], M = wa.shape[1]
    cdef cnp.ndarray rw = np.empty(_bf16_rows_words(K, M), dtype=np.uint32)
    fl_kt.pack_bf16_rows(K, M, <const uint16_t *>cnp.PyArray_DATA(wa),
                         <uint32_t *>cnp.PyArray_DATA(rw))
    return rw.reshape(-1, M, fl_kt.nr_bf16 // 2)


def bf16_copies(Parameter w):
    """The copies the kernels read of a bfloat16 Dense weight, as last
    made by a plan: (pair panels, row copy or None) as uint32 arrays (the
    layouts of bf16_pack and bf16_pack_rows), with
    whether they are of the weight's current values; None before any plan
    made them (tests of their refresh)."""
    cdef object cur = w._packed
    cdef PackedBF16 pk
    cdef Py_ssize_t K, M, npw
    if not isinstance(cur, PackedBF16) or (<PackedBF16>cur).nr == 0:
        return None
    pk = <PackedBF16>cur
    K, M = (<object>w._storage).shape
    npw = ((M + pk.nr - 1) // pk.nr) * ((K + 1) // 2) * pk.nr
    raw = pk.buf[pk.off:].view(np.uint32)
    rows = None
    if pk.roff >= 0:
        rows = raw[pk.roff // 4:pk.roff // 4 + _bf16_rows_words(K, M)] \
            .reshape(-1, M, pk.nr // 2).copy()
    return raw[:npw].copy(), rows, pk.version == w._version
