# Plan steps for convolutional networks: 2-D convolution (im2col + GEMM,
# with bias, an optional folded inference BatchNorm and the activation
# applied in one epilogue pass; a depthwise one by its direct kernel, the
# epilogue inside), 2-D max/average pooling, BatchNorm and LayerNorm.
#
# Included into _plan.pyx: these steps share the plan's Step struct (their
# arguments are ConvArgs, PoolArgs and NormArgs in _plan.pxd), its kernel
# table and its thread pool.  Every step function is ``noexcept nogil`` and
# touches only raw pointers; the numeric kernels are entries of the kernel
# table (kernels/conv.inc.h, gemm_ab in kernels/gemm_packed.inc.h, dwconv
# in kernels/depthwise.inc.h).  All
# checks happen in the _fill_* functions, when the plan is built.
#
# A BatchNorm -- on its own or folded into a convolution -- reads its four
# parameters at every call (C square roots, negligible next to the
# convolution), so writes through ``Parameter.data()`` are seen at once, as
# for every other parameter; no folded copy of the weights is kept.


def conv_activation_f32(cnp.ndarray arr, int code):
    """Test twin of the convolution epilogue's float32 activation (the
    vectorised sigmoid): applies activation ``code`` in place to a
    C-contiguous float32 array and returns it."""
    if arr.dtype != np.float32 or not arr.flags.c_contiguous:
        raise TypeError("conv_activation_f32 needs a C-contiguous float32 "
                        "array")
    cdef float *p = <float *>cnp.PyArray_DATA(arr)
    cdef Py_ssize_t n = arr.size
    with nogil:
        fl_kt.act_f32(p, n, code)
    return arr


# Target size of the im2col block of one convolution call: output rows are
# packed this many bytes at a time, so the packed block stays in L2 while
# the GEMM reads it.  At least one output row is packed per block.
cdef Py_ssize_t _CONV_COL_BYTES = 1 << 19
# Convolutions whose output has at most half this many positions per
# channel pack several whole samples side by side, so that one GEMM is about
# this wide (BLAS runs narrow products poorly); 0 turns batching off.
cdef Py_ssize_t _CONV_BATCH_COLS = 1024
# Depthwise convolutions (groups == channels) run the direct kernel
cdef bint _CONV_DEPTHWISE = True


def set_conv_tuning(col_bytes=None, batch_cols=None, depthwise=None):
    """Set the target size in bytes of one im2col block, the GEMM width
    that batching samples aims at (0: never batch), and whether depthwise
    convolutions run the direct kernel (else im2col + GEMM per group).
    For benches and tests; returns the previous ``(col_bytes, batch_cols,
    depthwise)``.  Plans are rebuilt on their next call."""
    global _CONV_COL_BYTES, _CONV_BATCH_COLS, _CONV_DEPTHWISE
    old = (_CONV_COL_BYTES, _CONV_BATCH_COLS, bool(_CONV_DEPTHWISE))
    if col_bytes is not None:
        _CONV_COL_BYTES = max(1, int(col_bytes))
    if batch_cols is not None:
        _CONV_BATCH_COLS = max(0, int(batch_cols))
    if depthwise is not None:
        _CONV_DEPTHWISE = bool(depthwise)
    invalidate_all()
    return old


cdef inline Py_ssize_t _align64(Py_ssize_t nbytes) noexcept nogil:
    return (nbytes + 63) & ~63


# The workspace of a conv step (bytes, per call): the epilogue's 2*O
# coefficients, then ``slots`` slots, each an im2col block followed by the
# panel buffer of the batched GEMM kernel (K rows of one column panel).

cdef inline Py_ssize_t _conv_coeff_bytes(const Step *s) noexcept nogil:
    return _align64(2 * s.a.conv.g.O * s.itemsize)


cdef inline Py_ssize_t _conv_panel_bytes(Py_ssize_t Kg,
                                        Py_ssize_t itemsize) noexcept nogil:
    return _align64(<Py_ssize_t>(fl_kt.gemm_ab_buf_f32(Kg) if itemsize == 4
                                 else fl_kt.gemm_ab_buf_f64(Kg)))


cdef inline Py_ssize_t _conv_slot_bytes(const Step *s) noexcept nogil:
    return (s.work - _conv_coeff_bytes(s)) // s.a.conv.slots


# ---------------------------------------------------------------------------
# Step functions

cdef inline void _gemm(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                       const floating *a, Py_ssize_t lda,
                       const floating *b, Py_ssize_t ldb,
                       floating *c, Py_ssize_t ldc,
                       floating *panel) noexcept nogil:
    """c[M x N] = a[M x K] @ b[K x N], row-major with leading dimensions.

    fastlazy's batched kernel, each column panel of b packed once (into
    ``panel``, K * 128 bytes of the step's workspace) for all M rows
    (weights x im2col block); OpenBLAS for products under ~1M multiply-adds
    or with fewer than 8 output channels (measured: LeNet on one sample
    ties, LeNet on 64 samples 1.08x, a 64-channel 3x3 conv on 56x56 1.23x
    faster than OpenBLAS), or when BLAS is forced."""
    if _KERNEL_ROUTE != 2 and M >= 8 and N >= 16 and \
            M * N * K >= (1 << 20):
        if floating is float:
            fl_kt.gemm_ab_f32(M, N, K, a, lda, b, ldb, c, ldc, panel)
        else:
            fl_kt.gemm_ab_f64(M, N, K, a, lda, b, ldb, c, ldc, panel)
        return
    if floating is float:
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, <blas_int>M,
                    <blas_int>N, <blas_int>K, 1.0, a, <blas_int>lda, b,
                    <blas_int>ldb, 0.0, c, <blas_int>ldc)
    else:
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, <blas_int>M,
                    <blas_int>N, <blas_int>K, 1.0, a, <blas_int>lda, b,
                    <blas_int>ldb, 0.0, c, <blas_int>ldc)


cdef inline void _im2col(const floating *x, Py_ssize_t Cg,
                         const ConvGeometry *g, Py_ssize_t oh0,
                         Py_ssize_t oh1, floating *col,
                         Py_ssize_t ldc) noexcept nogil:
    if floating is float:
        fl_kt.im2col_f32(x, Cg, g.H, g.W, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw,
                      g.dh, g.dw, g.OW, oh0, oh1, col, ldc)
    else:
        fl_kt.im2col_f64(x, Cg, g.H, g.W, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw,
                      g.dh, g.dw, g.OW, oh0, oh1, col, ldc)


cdef inline void _epilogue(Py_ssize_t O, Py_ssize_t N, const floating *src,
                           Py_ssize_t lds, floating *dst, Py_ssize_t ldd,
                           const floating *scale, const floating *shift,
                           int act) noexcept nogil:
    if floating is float:
        fl_kt.chan_epilogue_f32(O, N, src, lds, dst, ldd, scale, shift, act)
    else:
        fl_kt.chan_epilogue_f64(O, N, src, lds, dst, ldd, scale, shift, act)


cdef inline floating *_conv_panel(const Step *s, char *slot,
                                  floating *dummy) noexcept nogil:
    """The panel buffer at the end of an im2col slot."""
    return <floating *>(slot + _conv_slot_bytes(s)
                        - _conv_panel_bytes(s.a.conv.g.C // s.a.conv.g.groups
                                            * s.a.conv.g.kh * s.a.conv.g.kw,
                                            s.itemsize))


cdef inline void _dwconv(const ConvGeometry *g, const floating *xn,
                         const floating *w, floating *yn, Py_ssize_t c0,
                         Py_ssize_t c1, const floating *scale,
                         const floating *shift, int act,
                         char *buf) noexcept nogil:
    """Channels [c0, c1) of one sample of a depthwise convolution (groups
    == channels), its epilogue included: the table's direct kernel
    (kernels/depthwise.inc.h), ``buf`` its scratch (one per thread)."""
    cdef Py_ssize_t HW = g.H * g.W, P = g.OH * g.OW, K = g.kh * g.kw
    if scale != NULL:
        scale += c0
    if shift != NULL:
        shift += c0
    if floating is float:
        fl_kt.dwconv_f32(xn + c0 * HW, w + c0 * K, yn + c0 * P, c1 - c0,
                         g.H, g.W, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh,
                         g.dw, g.OH, g.OW, scale, shift, act, <float *>buf)
    else:
        fl_kt.dwconv_f64(xn + c0 * HW, w + c0 * K, yn + c0 * P, c1 - c0,
                         g.H, g.W, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh,
                         g.dw, g.OH, g.OW, scale, shift, act, <double *>buf)


cdef inline Py_ssize_t _dwconv_buf_bytes(const ConvGeometry *g,
                                         Py_ssize_t itemsize) noexcept nogil:
    if itemsize == 4:
        return <Py_ssize_t>fl_kt.dwconv_buf_f32(g.kh, g.kw, g.sh, g.sw, g.dh,
                                                g.dw, g.OH, g.OW)
    return <Py_ssize_t>fl_kt.dwconv_buf_f64(g.kh, g.kw, g.sh, g.sw, g.dh,
                                            g.dw, g.OH, g.OW)


cdef struct _DwJob:
    const Step *s
    const char *x
    char *y
    char *slots              # slot t at slots + t * _conv_slot_bytes(s)
    const char *scale
    const char *shift
    Py_ssize_t items         # samples x chunks of channels
    Py_ssize_t chunks
    Py_ssize_t per_chunk     # channels per chunk
    long next


cdef void _dw_job(void *ctx, int tid, int nthreads) noexcept nogil:
    """Pool job: threads take (sample, chunk of channels) items from a
    shared counter, each with its own scratch slot."""
    cdef _DwJob *j = <_DwJob *>ctx
    cdef const Step *s = j.s
    cdef const ConvGeometry *g = &s.a.conv.g
    cdef Py_ssize_t item, n, c0, c1
    cdef Py_ssize_t in_b = s.in_size * s.itemsize
    cdef Py_ssize_t out_b = s.out_size * s.itemsize
    cdef char *slot = j.slots + tid * _conv_slot_bytes(s)
    while True:
        item = fl_next_item(&j.next)
        if item >= j.items:
            break
        n = item // j.chunks
        c0 = (item % j.chunks) * j.per_chunk
        c1 = c0 + j.per_chunk if c0 + j.per_chunk < g.C else g.C
        if s.itemsize == 4:
            _dwconv(g, <const float *>(j.x + n * in_b),
                    <const float *>s.a.conv.w, <float *>(j.y + n * out_b),
                    c0, c1, <const float *>j.scale, <const float *>j.shift,
                    s.a.conv.act, slot)
        else:
            _dwconv(g, <const double *>(j.x + n * in_b),
                    <const double *>s.a.conv.w, <double *>(j.y + n * out_b),
                    c0, c1, <const double *>j.scale,
                    <const double *>j.shift, s.a.conv.act, slot)


cdef inline void _conv2d_run(const Step *s, Py_ssize_t nb, const floating *x,
                             floating *y, char *work) noexcept nogil:
    """Convolve ``nb`` samples.  ``work``: 2*O epilogue coefficients, then
    the im2col slots (see _fill_conv).

    A depthwise convolution (ConvArgs.depthwise) runs the table's dwconv
    per sample, its epilogue included; a big one on its own shares chunks
    of channels out to the pool's threads, each with its own scratch slot.
    Otherwise ConvArgs.block_rows picks the schedule:
    > 0  per sample, per block of that many output rows, per group: pack,
         one GEMM straight into the output, the epilogue over the block
         (_conv_block); a big convolution run on its own shares the blocks
         out to the pool's threads, each packing into its own slot;
    0    a 1x1 convolution with stride 1 and no padding: the input already
         is the GEMM's right-hand matrix, no packing;
    < 0  small outputs: pack up to -block_rows whole samples side by
         side, one GEMM per group for all of them into the workspace, then
         the epilogue writes each sample's block to its place.
    """
    cdef const ConvArgs *a = &s.a.conv
    cdef const ConvGeometry *g = &a.g
    cdef Py_ssize_t C = g.C, O = g.O, G = g.groups, rows = a.block_rows
    cdef Py_ssize_t P = g.OH * g.OW, Cg = C // G, Og = O // G
    cdef Py_ssize_t HW = g.H * g.W, Kg = Cg * g.kh * g.kw
    cdef const floating *w = <const floating *>a.w
    cdef floating *scale = NULL
    cdef const floating *shift = <const floating *>a.bias
    cdef floating *coeff = <floating *>work
    cdef char *slot0 = work + _conv_coeff_bytes(s)
    cdef floating *col = <floating *>slot0
    cdef floating *panel = _conv_panel(s, slot0, col)
    cdef floating *acc
    cdef Py_ssize_t n, n1, k, sb, grp, N, blocks
    cdef const floating *xn
    cdef floating *yn
    cdef int nthreads
    cdef _ConvJob job
    cdef _DwJob dw
    if a.bn_mean != NULL:
        # BatchNorm folded: y = act(conv * scale + shift), from the current
        # values of gamma, beta, running_mean, running_var and the bias
        scale = coeff
        if floating is float:
            fl_kt.bn_coeffs_f32(O, <const float *>a.bn_gamma,
                             <const float *>a.bn_beta,
                             <const float *>a.bn_mean,
                             <const float *>a.bn_var,
                             <const float *>a.bias, a.bn_eps, scale,
                             coeff + O)
        else:
            fl_kt.bn_coeffs_f64(O, <const double *>a.bn_gamma,
                             <const double *>a.bn_beta,
                             <const double *>a.bn_mean,
                             <const double *>a.bn_var,
                             <const double *>a.bias, a.bn_eps, scale,
                             coeff + O)
        shift = coeff + O
    if a.depthwise:
        nthreads = <int>a.slots
        if nthreads > _num_threads:
            nthreads = _num_threads
        if nthreads > 1 and nb * s.macs >= _PAR_MACS:
            # a big one on its own: chunks of channels to the pool's
            # threads, a few per thread so that they finish together
            dw.s = s
            dw.x = <const char *>x
            dw.y = <char *>y
            dw.slots = slot0
            dw.scale = <const char *>scale
            dw.shift = <const char *>shift
            dw.per_chunk = (C + 4 * nthreads - 1) // (4 * nthreads)
            dw.chunks = (C + dw.per_chunk - 1) // dw.per_chunk
            dw.items = nb * dw.chunks
            dw.next = 0
            fl_pool_run(_dw_job, &dw, nthreads)
            return
        for n in range(nb):
            _dwconv(g, x + n * C * HW, w, y + n * O * P, 0, C, scale, shift,
                    a.act, slot0)
        return
    if rows < 0:
        sb = -rows
        n = 0
        while n < nb:
            n1 = n + sb if n + sb < nb else nb
            N = (n1 - n) * P
            acc = col + Kg * N
            for grp in range(G):
                for k in range(n, n1):
                    _im2col(x + k * C * HW + grp * Cg * HW, Cg, g, 0, g.OH,
                            col + (k - n) * P, N)
                _gemm(Og, N, Kg, w + grp * Og * Kg, Kg, col, N,
                      acc + grp * Og * N, N, panel)
            for k in range(n, n1):
                _epilogue(O, P, acc + (k - n) * P, N, y + k * O * P, P,
                          scale, shift, a.act)
            n = n1
        return
    if rows == 0:
        for n in range(nb):
            xn = x + n * C * HW
            yn = y + n * O * P
            for grp in range(G):
                _gemm(Og, P, Kg, w + grp * Og * Kg, Kg, xn + grp * Cg * HW,
                      HW, yn + grp * Og * P, P, panel)
            _epilogue(O, P, yn, P, yn, P, scale, shift, a.act)
        return
    blocks = (g.OH + rows - 1) // rows
    nthreads = <int>a.slots
    if nthreads > _num_threads:
        nthreads = _num_threads
    if nthreads > 1 and nb * blocks > 1 and nb * s.macs >= _PAR_MACS:
        # one big convolution on its own (a pool job already running
        # makes fl_pool_run run this on the calling thread alone)
        job.s = s
        job.x = <const char *>x
        job.y = <char *>y
        job.slots = slot0
        job.scale = <const char *>scale
        job.shift = <const char *>shift
        job.items = nb * blocks
        job.blocks = blocks
        job.next = 0
        fl_pool_run(_conv_job, &job, nthreads)
        return
    for n in range(nb):
        for k in range(blocks):
            _conv_block(s, x + n * C * HW, y + n * O * P, k * rows, slot0,
                        scale, shift)


cdef struct _ConvJob:
    const Step *s
    const char *x
    char *y
    char *slots              # slot t at slots + t * _conv_slot_bytes(s)
    const char *scale
    const char *shift
    Py_ssize_t items         # samples x blocks of output rows
    Py_ssize_t blocks
    long next


cdef void _conv_job(void *ctx, int tid, int nthreads) noexcept nogil:
    """Pool job: threads take (sample, block of rows) items from a shared
    counter, each packing into its own slot."""
    cdef _ConvJob *j = <_ConvJob *>ctx
    cdef const Step *s = j.s
    cdef Py_ssize_t item, n, oh0
    cdef Py_ssize_t in_b = s.in_size * s.itemsize
    cdef Py_ssize_t out_b = s.out_size * s.itemsize
    cdef char *slot = j.slots + tid * _conv_slot_bytes(s)
    while True:
        item = fl_next_item(&j.next)
        if item >= j.items:
            break
        n = item // j.blocks
        oh0 = (item % j.blocks) * s.a.conv.block_rows
        if s.itemsize == 4:
            _conv_block(s, <const float *>(j.x + n * in_b),
                        <float *>(j.y + n * out_b), oh0, slot,
                        <const float *>j.scale, <const float *>j.shift)
        else:
            _conv_block(s, <const double *>(j.x + n * in_b),
                        <double *>(j.y + n * out_b), oh0, slot,
                        <const double *>j.scale, <const double *>j.shift)


cdef inline void _conv_block(const Step *s, const floating *xn,
                             floating *yn, Py_ssize_t oh0, char *slot,
                             const floating *scale,
                             const floating *shift) noexcept nogil:
    """One sample, output rows [oh0, oh0 + block_rows): per group, pack
    and one GEMM straight into the output; then the epilogue."""
    cdef const ConvGeometry *g = &s.a.conv.g
    cdef Py_ssize_t O = g.O, G = g.groups, P = g.OH * g.OW
    cdef Py_ssize_t Cg = g.C // G, Og = O // G, Kg = Cg * g.kh * g.kw
    cdef Py_ssize_t oh1 = oh0 + s.a.conv.block_rows
    cdef Py_ssize_t N, grp
    cdef const floating *w = <const floating *>s.a.conv.w
    cdef floating *col = <floating *>slot
    cdef floating *panel = _conv_panel(s, slot, col)
    if oh1 > g.OH:
        oh1 = g.OH
    N = (oh1 - oh0) * g.OW
    for grp in range(G):
        _im2col(xn + grp * Cg * g.H * g.W, Cg, g, oh0, oh1, col, N)
        _gemm(Og, N, Kg, w + grp * Og * Kg, Kg, col, N,
              yn + grp * Og * P + oh0 * g.OW, P, panel)
    _epilogue(O, N, yn + oh0 * g.OW, P, yn + oh0 * g.OW, P, scale, shift,
              s.a.conv.act)


cdef void _step_conv2d(const Step *s, Py_ssize_t b, char *const *bufs,
                       char *work) noexcept nogil:
    if s.itemsize == 4:
        _conv2d_run(s, b, <const float *>bufs[s.src[0]],
                    <float *>bufs[s.dst], work)
    else:
        _conv2d_run(s, b, <const double *>bufs[s.src[0]],
                    <double *>bufs[s.dst], work)


cdef void _step_pool2d(const Step *s, Py_ssize_t b, char *const *bufs,
                       char *work) noexcept nogil:
    cdef const PoolGeometry *g = &s.a.pool.g
    cdef const char *x = bufs[s.src[0]]
    cdef char *y = bufs[s.dst]
    cdef Py_ssize_t n
    for n in range(b):
        if s.itemsize == 4:
            fl_kt.pool2d_f32(<const float *>x + n * s.in_size,
                          <float *>y + n * s.out_size, g.C, g.H, g.W, g.kh,
                          g.kw, g.sh, g.sw, g.ph, g.pw, g.OH, g.OW,
                          s.a.pool.is_max, s.a.pool.count_include_pad)
        else:
            fl_kt.pool2d_f64(<const double *>x + n * s.in_size,
                          <double *>y + n * s.out_size, g.C, g.H, g.W, g.kh,
                          g.kw, g.sh, g.sw, g.ph, g.pw, g.OH, g.OW,
                          s.a.pool.is_max, s.a.pool.count_include_pad)


cdef void _step_batchnorm(const Step *s, Py_ssize_t b, char *const *bufs,
                          char *work) noexcept nogil:
    # work: scale[C], shift[C]
    cdef const NormArgs *a = &s.a.norm
    cdef Py_ssize_t C = a.C
    if s.itemsize == 4:
        fl_kt.bn_coeffs_f32(C, <const float *>a.gamma, <const float *>a.beta,
                         <const float *>a.mean, <const float *>a.var, NULL,
                         a.eps, <float *>work, <float *>work + C)
        fl_kt.chan_affine_f32(b * a.outer, C, a.inner,
                           <const float *>bufs[s.src[0]],
                           <float *>bufs[s.dst], <float *>work,
                           <float *>work + C, a.act)
    else:
        fl_kt.bn_coeffs_f64(C, <const double *>a.gamma, <const double *>a.beta,
                         <const double *>a.mean, <const double *>a.var,
                         NULL, a.eps, <double *>work, <double *>work + C)
        fl_kt.chan_affine_f64(b * a.outer, C, a.inner,
                           <const double *>bufs[s.src[0]],
                           <double *>bufs[s.dst], <double *>work,
                           <double *>work + C, a.act)


cdef void _step_layernorm(const Step *s, Py_ssize_t b, char *const *bufs,
                          char *work) noexcept nogil:
    # work: 2*inner doubles of statistics
    cdef const NormArgs *a = &s.a.norm
    if s.itemsize == 4:
        fl_kt.layernorm_f32(b * a.outer, a.C, a.inner,
                         <const float *>bufs[s.src[0]], <float *>bufs[s.dst],
                         <const float *>a.gamma, <const float *>a.beta,
                         a.eps, <double *>work)
    else:
        fl_kt.layernorm_f64(b * a.outer, a.C, a.inner,
                         <const double *>bufs[s.src[0]],
                         <double *>bufs[s.dst], <const double *>a.gamma,
                         <const double *>a.beta, a.eps, <double *>work)


# ---------------------------------------------------------------------------
# Building the steps

cdef int _fill_conv(Step *s, object st, object dtype, list keep) except -1:
    """A ConvStep: geometry, schedule and workspace (see _conv2d_run)."""
    cdef ConvArgs *a = &s.a.conv
    cdef ConvGeometry *g = &a.g
    cdef Py_ssize_t Kg, P, rows, per_row, col_bytes, batch, slots = 1
    if st.quant is not None:
        return _fill_qconv(s, st, dtype, keep)       # int8: _plan_quant.pxi
    geom = st.geom
    g.C, g.H, g.W, g.O = geom.C, geom.H, geom.W, geom.O
    g.kh, g.kw, g.sh, g.sw = geom.kh, geom.kw, geom.sh, geom.sw
    g.ph, g.pw, g.dh, g.dw = geom.ph, geom.pw, geom.dh, geom.dw
    g.groups, g.OH, g.OW = geom.groups, geom.OH, geom.OW
    if g.groups < 1 or g.C % g.groups or g.O % g.groups:
        raise ValueError(f"conv step: {g.C} input and {g.O} output channels "
                         f"do not split into {g.groups} groups")
    Kg = (g.C // g.groups) * g.kh * g.kw
    P = g.OH * g.OW
    _check_blas_dims("Conv2D", (g.O // g.groups, Kg, P, g.H * g.W))
    s.run = _step_conv2d
    s.kind = STEP_CONV2D
    a.act = st.act
    s.in_size = g.C * g.H * g.W
    s.out_size = g.O * P
    s.macs = g.O * P * Kg
    # (bfloat16 weights: a float32 copy of their values, _plan_bf16.pxi)
    a.w = _conv_weight(st.weight, dtype, keep)
    a.bias = _opt_ptr(st.bias, dtype, keep)
    direct = (g.kh == 1 and g.kw == 1 and g.sh == 1 and g.sw == 1
              and g.ph == 0 and g.pw == 0)
    per_row = Kg * g.OW
    rows = _CONV_COL_BYTES // (per_row * s.itemsize)
    a.depthwise = g.groups == g.C and g.O == g.C and g.groups > 1 and \
        _CONV_DEPTHWISE
    if a.depthwise:
        # direct: no im2col, no GEMM of one output channel per group; the
        # slot is the kernel's scratch, one per thread for a big one
        a.block_rows = 0
        col_bytes = _dwconv_buf_bytes(g, s.itemsize)
        if s.macs >= _PAR_MACS and g.C > 1:
            slots = max(1, min(_num_threads, 16))
    elif 2 * P <= _CONV_BATCH_COLS:
        # small outputs: several whole samples per GEMM; the slot holds
        # their packed inputs and their GEMM output
        batch = (_CONV_BATCH_COLS + P - 1) // P
        _check_blas_dims("Conv2D", (batch * P,))
        a.block_rows = -batch
        col_bytes = batch * (Kg * P + g.O * P) * s.itemsize
    elif direct:
        a.block_rows = 0
        col_bytes = 0
    else:
        rows = max(1, min(rows, g.OH))
        a.block_rows = rows
        col_bytes = rows * per_row * s.itemsize
        if s.macs >= _PAR_MACS and rows < g.OH:
            # one im2col slot per thread, for a sample on its own
            slots = max(1, min(_num_threads, 16))
    a.slots = slots
    s.work = 2 * g.O * s.itemsize
    s.work = _align64(s.work) + slots * (_align64(col_bytes)
                                         + _conv_panel_bytes(Kg,
                                                             s.itemsize))
    if st.bn is not None:
        # BatchNorm folded into the epilogue; the step reads the
        # parameters at every call (see the note at the top)
        a.bn_gamma = _opt_ptr(st.bn.gamma, dtype, keep)
        a.bn_beta = _opt_ptr(st.bn.beta, dtype, keep)
        a.bn_mean = _param_ptr(st.bn.mean, dtype, keep)
        a.bn_var = _param_ptr(st.bn.var, dtype, keep)
        a.bn_eps = st.bn.eps
    return 0


cdef int _fill_pool(Step *s, object st, object dtype, list keep) except -1:
    cdef PoolGeometry *g = &s.a.pool.g
    geom = st.geom
    g.C, g.H, g.W = geom.C, geom.H, geom.W
    g.kh, g.kw, g.sh, g.sw = geom.kh, geom.kw, geom.sh, geom.sw
    g.ph, g.pw, g.OH, g.OW = geom.ph, geom.pw, geom.OH, geom.OW
    s.a.pool.is_max = 1 if st.is_max else 0
    s.a.pool.count_include_pad = 1 if st.count_include_pad else 0
    s.run = _step_pool2d
    s.kind = STEP_POOL2D
    s.in_size = g.C * g.H * g.W
    s.out_size = g.C * g.OH * g.OW
    return 0


cdef int _fill_batchnorm(Step *s, object st, object dtype,
                         list keep) except -1:
    cdef NormArgs *a = &s.a.norm
    s.run = _step_batchnorm
    s.kind = STEP_BATCHNORM
    a.act = st.act
    a.outer, a.C, a.inner = st.outer, st.C, st.inner
    s.in_size = s.out_size = st.outer * st.C * st.inner
    s.work = 2 * st.C * s.itemsize
    a.gamma = _opt_ptr(st.gamma, dtype, keep)
    a.beta = _opt_ptr(st.beta, dtype, keep)
    a.mean = _param_ptr(st.mean, dtype, keep)
    a.var = _param_ptr(st.var, dtype, keep)
    a.eps = st.eps
    return 0


cdef int _fill_layernorm(Step *s, object st, object dtype,
                         list keep) except -1:
    cdef NormArgs *a = &s.a.norm
    s.run = _step_layernorm
    s.kind = STEP_LAYERNORM
    a.outer, a.C, a.inner = st.outer, st.C, st.inner
    s.in_size = s.out_size = st.outer * st.C * st.inner
    s.work = 0 if st.inner == 1 else 2 * st.inner * 8
    a.gamma = _opt_ptr(st.gamma, dtype, keep)
    a.beta = _opt_ptr(st.beta, dtype, keep)
    a.eps = st.eps
    return 0
