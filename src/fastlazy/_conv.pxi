# Plan steps for convolutional networks: 2-D convolution (im2col + GEMM,
# with bias, an optional fused inference BatchNorm and the activation applied
# in one epilogue pass), 2-D max/average pooling, BatchNorm and LayerNorm.
#
# Included into _core.pyx after the Step definitions, so these steps share
# the plan's Step struct, parameter pointers and structure epoch.  Every step
# function is ``noexcept nogil`` and touches only raw pointers; the numeric
# kernels are in fl_conv.h.  All checks happen in _fill_step_conv, at plan
# build time.
#
# Step descriptions (tuples built by conv_layers.py and _conv_steps.py):
#
#   ('conv2d', weight, bias|None, act, geom, bn|None)
#       geom = (C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, groups, OH, OW)
#       bn   = (gamma|None, beta|None, running_mean, running_var, eps)
#   ('pool2d', is_max, count_include_pad,
#              (C, H, W, kh, kw, sh, sw, ph, pw, OH, OW))
#   ('batchnorm', gamma|None, beta|None, running_mean, running_var, eps,
#                 outer, C, inner, act)
#   ('layernorm', gamma|None, beta|None, eps, outer, C, inner)
#
# A BatchNorm -- on its own or fused into a convolution -- reads its four
# parameters at every call (C square roots, negligible next to the
# convolution), so writes through ``Parameter.data()`` are seen at once, as
# for every other parameter; no folded copy of the weights is kept.

from cython cimport floating

cdef extern from "fl_conv.h" nogil:
    void fl_im2col_f32(const float *x, Py_ssize_t Cg, Py_ssize_t H,
                       Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw,
                       Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                       Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                       Py_ssize_t OW, Py_ssize_t oh0, Py_ssize_t oh1,
                       float *col, Py_ssize_t ldc) noexcept
    void fl_im2col_f64(const double *x, Py_ssize_t Cg, Py_ssize_t H,
                       Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw,
                       Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                       Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                       Py_ssize_t OW, Py_ssize_t oh0, Py_ssize_t oh1,
                       double *col, Py_ssize_t ldc) noexcept
    void fl_chan_epilogue_f32(Py_ssize_t O, Py_ssize_t N, const float *src,
                              Py_ssize_t lds, float *dst, Py_ssize_t ldd,
                              const float *scale, const float *shift,
                              int act) noexcept
    void fl_chan_epilogue_f64(Py_ssize_t O, Py_ssize_t N, const double *src,
                              Py_ssize_t lds, double *dst, Py_ssize_t ldd,
                              const double *scale, const double *shift,
                              int act) noexcept
    void fl_bn_coeffs_f32(Py_ssize_t C, const float *gamma,
                          const float *beta, const float *mean,
                          const float *var, const float *bias, double eps,
                          float *scale, float *shift) noexcept
    void fl_bn_coeffs_f64(Py_ssize_t C, const double *gamma,
                          const double *beta, const double *mean,
                          const double *var, const double *bias, double eps,
                          double *scale, double *shift) noexcept
    void fl_chan_affine_f32(Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner,
                            const float *x, float *y, const float *scale,
                            const float *shift, int act) noexcept
    void fl_chan_affine_f64(Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner,
                            const double *x, double *y, const double *scale,
                            const double *shift, int act) noexcept
    void fl_pool2d_f32(const float *x, float *y, Py_ssize_t C, Py_ssize_t H,
                       Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw,
                       Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                       Py_ssize_t pw, Py_ssize_t OH, Py_ssize_t OW,
                       int is_max, int count_include_pad) noexcept
    void fl_pool2d_f64(const double *x, double *y, Py_ssize_t C,
                       Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh,
                       Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t OH,
                       Py_ssize_t OW, int is_max,
                       int count_include_pad) noexcept
    int fl_conv_init(int level) noexcept
    void fl_conv_act_f32(float *y, Py_ssize_t n, int act) noexcept
    void fl_layernorm_f32(Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner,
                          const float *x, float *y, const float *gamma,
                          const float *beta, double eps,
                          double *acc) noexcept
    void fl_layernorm_f64(Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner,
                          const double *x, double *y, const double *gamma,
                          const double *beta, double eps,
                          double *acc) noexcept


# the vectorised sigmoid of the epilogue, at the dense kernels' level
fl_conv_init(_isa_level)


def conv_activation_f32(cnp.ndarray arr, int code):
    """Test twin of the convolution epilogue's float32 activation (the
    vectorised sigmoid): applies activation ``code`` in place to a
    C-contiguous float32 array and returns it."""
    if arr.dtype != np.float32 or not arr.flags.c_contiguous:
        raise TypeError("conv_activation_f32 needs a C-contiguous float32 "
                        "array")
    with nogil:
        fl_conv_act_f32(<float *>cnp.PyArray_DATA(arr), arr.size, code)
    return arr


# Target size of the im2col block of one convolution call: output rows are
# packed this many bytes at a time, so the packed block stays in L2 while
# the GEMM reads it.  At least one output row is packed per block.
cdef Py_ssize_t _CONV_COL_BYTES = 1 << 19
# Convolutions whose output has at most half this many positions per
# channel pack several whole samples side by side, so that one GEMM is about
# this wide (BLAS runs narrow products poorly); 0 turns batching off.
cdef Py_ssize_t _CONV_BATCH_COLS = 1024

# geom[] slots of a conv2d step
cdef enum:
    G_C = 0
    G_H = 1
    G_W = 2
    G_O = 3
    G_KH = 4
    G_KW = 5
    G_SH = 6
    G_SW = 7
    G_PH = 8
    G_PW = 9
    G_DH = 10
    G_DW = 11
    G_GROUPS = 12
    G_OH = 13
    G_OW = 14
    G_ROWS = 15       # schedule: > 0 output rows per packed block;
                      # 0 a plain 1x1 (no packing); < 0 -(samples per GEMM)


def set_conv_tuning(col_bytes=None, batch_cols=None):
    """Set the target size in bytes of one im2col block, and the GEMM width
    that batching samples aims at (0: never batch).  For benches and tests;
    returns the previous ``(col_bytes, batch_cols)``.  Plans are rebuilt on
    their next call."""
    global _CONV_COL_BYTES, _CONV_BATCH_COLS
    old = (_CONV_COL_BYTES, _CONV_BATCH_COLS)
    if col_bytes is not None:
        _CONV_COL_BYTES = max(1, int(col_bytes))
    if batch_cols is not None:
        _CONV_BATCH_COLS = max(0, int(batch_cols))
    _bump_epoch()
    return old


# ---------------------------------------------------------------------------
# Step functions

cdef inline void _gemm(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                       const floating *a, Py_ssize_t lda,
                       const floating *b, Py_ssize_t ldb,
                       floating *c, Py_ssize_t ldc) noexcept nogil:
    """c[M x N] = a[M x K] @ b[K x N], row-major with leading dimensions.

    fastlazy's batched kernel, each column panel of b packed once for all M
    rows (weights x im2col block); OpenBLAS for products under ~1M
    multiply-adds or with fewer than 8 output channels (measured: LeNet on
    one sample ties, LeNet on 64 samples 1.08x, a 64-channel 3x3 conv on
    56x56 1.23x faster than OpenBLAS), when BLAS is forced, or if the panel
    buffer cannot be allocated."""
    cdef floating *buf
    if _KERNEL_ROUTE != 2 and M >= 8 and N >= 16 and \
            M * N * K >= (1 << 20):
        # K rows of one panel: at most 2 vectors of 64 bytes each
        buf = <floating *>aligned_alloc(64, K * 128)
        if buf != NULL:
            if floating is float:
                fl_kt.gemm_ab_f32(M, N, K, a, lda, b, ldb, c, ldc, buf)
            else:
                fl_kt.gemm_ab_f64(M, N, K, a, lda, b, ldb, c, ldc, buf)
            free(buf)
            return
    if floating is float:
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, <blas_int>M,
                    <blas_int>N, <blas_int>K, 1.0, a, <blas_int>lda, b,
                    <blas_int>ldb, 0.0, c, <blas_int>ldc)
    else:
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, <blas_int>M,
                    <blas_int>N, <blas_int>K, 1.0, a, <blas_int>lda, b,
                    <blas_int>ldb, 0.0, c, <blas_int>ldc)


cdef inline void _im2col(const floating *x, Py_ssize_t Cg, Py_ssize_t H,
                         Py_ssize_t W, const Step *s, Py_ssize_t oh0,
                         Py_ssize_t oh1, floating *col,
                         Py_ssize_t ldc) noexcept nogil:
    if floating is float:
        fl_im2col_f32(x, Cg, H, W, s.geom[G_KH], s.geom[G_KW], s.geom[G_SH],
                      s.geom[G_SW], s.geom[G_PH], s.geom[G_PW], s.geom[G_DH],
                      s.geom[G_DW], s.geom[G_OW], oh0, oh1, col, ldc)
    else:
        fl_im2col_f64(x, Cg, H, W, s.geom[G_KH], s.geom[G_KW], s.geom[G_SH],
                      s.geom[G_SW], s.geom[G_PH], s.geom[G_PW], s.geom[G_DH],
                      s.geom[G_DW], s.geom[G_OW], oh0, oh1, col, ldc)


cdef inline void _epilogue(Py_ssize_t O, Py_ssize_t N, const floating *src,
                           Py_ssize_t lds, floating *dst, Py_ssize_t ldd,
                           const floating *scale, const floating *shift,
                           int act) noexcept nogil:
    if floating is float:
        fl_chan_epilogue_f32(O, N, src, lds, dst, ldd, scale, shift, act)
    else:
        fl_chan_epilogue_f64(O, N, src, lds, dst, ldd, scale, shift, act)


cdef inline void _conv2d_run(const Step *s, Py_ssize_t nb, const floating *x,
                             floating *y, floating *work) noexcept nogil:
    """Convolve ``nb`` samples.  ``work`` holds 2*O epilogue coefficients,
    then the packed block (and, batched, the GEMM output).

    geom[G_ROWS] picks the schedule (see _fill_step_conv):
    > 0  per sample, per block of that many output rows, per group: pack,
         one GEMM straight into the output, the epilogue over the block
         (_conv_block); a big convolution run on its own shares the blocks
         out to the pool's threads, each packing into its own slot of the
         workspace;
    0    a 1x1 convolution with stride 1 and no padding: the input already
         is the GEMM's right-hand matrix, no packing;
    < 0  small outputs: pack up to -geom[G_ROWS] whole samples side by
         side, one GEMM per group for all of them into the workspace, then
         the epilogue writes each sample's block to its place.
    """
    cdef Py_ssize_t C = s.geom[G_C], H = s.geom[G_H], W = s.geom[G_W]
    cdef Py_ssize_t O = s.geom[G_O], G = s.geom[G_GROUPS]
    cdef Py_ssize_t OH = s.geom[G_OH], OW = s.geom[G_OW]
    cdef Py_ssize_t rows = s.geom[G_ROWS]
    cdef Py_ssize_t P = OH * OW, Cg = C // G, Og = O // G, HW = H * W
    cdef Py_ssize_t Kg = Cg * s.geom[G_KH] * s.geom[G_KW]
    cdef const floating *w = <const floating *>s.p[0]
    cdef floating *scale = NULL
    cdef const floating *shift = <const floating *>s.p[1]
    cdef floating *col = work + 2 * O
    cdef floating *acc
    cdef Py_ssize_t n, n1, k, sb, grp, N, blocks, col_elems
    cdef const floating *xn
    cdef floating *yn
    cdef int nthreads
    cdef _ConvJob job
    if s.p[5] != NULL:
        # BatchNorm fused: y = act(conv * scale + shift), from the current
        # values of gamma, beta, running_mean, running_var and the bias
        scale = work
        if floating is float:
            fl_bn_coeffs_f32(O, <const float *>s.p[2], <const float *>s.p[3],
                             <const float *>s.p[4], <const float *>s.p[5],
                             <const float *>s.p[1], s.eps, scale, work + O)
        else:
            fl_bn_coeffs_f64(O, <const double *>s.p[2],
                             <const double *>s.p[3], <const double *>s.p[4],
                             <const double *>s.p[5], <const double *>s.p[1],
                             s.eps, scale, work + O)
        shift = work + O
    if rows < 0:
        sb = -rows
        n = 0
        while n < nb:
            n1 = n + sb if n + sb < nb else nb
            N = (n1 - n) * P
            acc = col + Kg * N
            for grp in range(G):
                for k in range(n, n1):
                    _im2col(x + k * C * HW + grp * Cg * HW, Cg, H, W, s, 0,
                            OH, col + (k - n) * P, N)
                _gemm(Og, N, Kg, w + grp * Og * Kg, Kg, col, N,
                      acc + grp * Og * N, N)
            for k in range(n, n1):
                _epilogue(O, P, acc + (k - n) * P, N, y + k * O * P, P,
                          scale, shift, s.act)
            n = n1
        return
    if rows == 0:
        # 1x1, stride 1, no padding: the input already is the GEMM's
        # right-hand matrix, no packing
        for n in range(nb):
            xn = x + n * C * HW
            yn = y + n * O * P
            for grp in range(G):
                _gemm(Og, P, Kg, w + grp * Og * Kg, Kg, xn + grp * Cg * HW,
                      HW, yn + grp * Og * P, P)
            _epilogue(O, P, yn, P, yn, P, scale, shift, s.act)
        return
    blocks = (OH + rows - 1) // rows
    col_elems = rows * Kg * OW
    nthreads = <int>((s.work - 2 * O) // col_elems)   # packing slots
    if nthreads > _num_threads:
        nthreads = _num_threads
    if nthreads > 1 and nb * blocks > 1 and nb * s.macs >= _PAR_MACS:
        # one big convolution on its own (a pool job already running
        # makes fl_pool_run run this on the calling thread alone)
        job.s = s
        job.x = <const char *>x
        job.y = <char *>y
        job.slots = <char *>col
        job.slot_bytes = col_elems * s.itemsize
        job.scale = <const char *>scale
        job.shift = <const char *>shift
        job.items = nb * blocks
        job.blocks = blocks
        job.next = 0
        fl_pool_run(_conv_job, &job, nthreads)
        return
    for n in range(nb):
        for k in range(blocks):
            _conv_block(s, x + n * C * HW, y + n * O * P, k * rows, col,
                        scale, shift)


cdef struct _ConvJob:
    const Step *s
    const char *x
    char *y
    char *slots              # packing slot t at slots + t * slot_bytes
    Py_ssize_t slot_bytes
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
    cdef char *col = j.slots + tid * j.slot_bytes
    while True:
        item = fl_next_item(&j.next)
        if item >= j.items:
            break
        n = item // j.blocks
        oh0 = (item % j.blocks) * s.geom[G_ROWS]
        if s.itemsize == 4:
            _conv_block(s, <const float *>(j.x + n * in_b),
                        <float *>(j.y + n * out_b), oh0, <float *>col,
                        <const float *>j.scale, <const float *>j.shift)
        else:
            _conv_block(s, <const double *>(j.x + n * in_b),
                        <double *>(j.y + n * out_b), oh0, <double *>col,
                        <const double *>j.scale, <const double *>j.shift)


cdef inline void _conv_block(const Step *s, const floating *xn,
                             floating *yn, Py_ssize_t oh0, floating *col,
                             const floating *scale,
                             const floating *shift) noexcept nogil:
    """One sample, output rows [oh0, oh0 + geom[G_ROWS]): per group, pack
    and one GEMM straight into the output; then the epilogue."""
    cdef Py_ssize_t H = s.geom[G_H], W = s.geom[G_W], O = s.geom[G_O]
    cdef Py_ssize_t G = s.geom[G_GROUPS], OH = s.geom[G_OH]
    cdef Py_ssize_t OW = s.geom[G_OW], P = OH * OW
    cdef Py_ssize_t Cg = s.geom[G_C] // G, Og = O // G
    cdef Py_ssize_t Kg = Cg * s.geom[G_KH] * s.geom[G_KW]
    cdef Py_ssize_t oh1 = oh0 + s.geom[G_ROWS]
    cdef Py_ssize_t N, grp
    cdef const floating *w = <const floating *>s.p[0]
    if oh1 > OH:
        oh1 = OH
    N = (oh1 - oh0) * OW
    for grp in range(G):
        _im2col(xn + grp * Cg * H * W, Cg, H, W, s, oh0, oh1, col, N)
        _gemm(Og, N, Kg, w + grp * Og * Kg, Kg, col, N,
              yn + grp * Og * P + oh0 * OW, P)
    _epilogue(O, N, yn + oh0 * OW, P, yn + oh0 * OW, P, scale, shift, s.act)


cdef void _step_conv2d(const Step *s, Py_ssize_t b, const char *x, char *y,
                       char *work) noexcept nogil:
    if s.itemsize == 4:
        _conv2d_run(s, b, <const float *>x, <float *>y, <float *>work)
    else:
        _conv2d_run(s, b, <const double *>x, <double *>y, <double *>work)


cdef void _step_pool2d(const Step *s, Py_ssize_t b, const char *x, char *y,
                       char *work) noexcept nogil:
    # geom: C, H, W, kh, kw, sh, sw, ph, pw, OH, OW, is_max, include_pad
    cdef Py_ssize_t n
    cdef Py_ssize_t C = s.geom[0], H = s.geom[1], W = s.geom[2]
    cdef Py_ssize_t kh = s.geom[3], kw = s.geom[4]
    cdef Py_ssize_t sh = s.geom[5], sw = s.geom[6]
    cdef Py_ssize_t ph = s.geom[7], pw = s.geom[8]
    cdef Py_ssize_t OH = s.geom[9], OW = s.geom[10]
    cdef int is_max = <int>s.geom[11], include_pad = <int>s.geom[12]
    for n in range(b):
        if s.itemsize == 4:
            fl_pool2d_f32(<const float *>x + n * s.in_size,
                          <float *>y + n * s.out_size, C, H, W, kh, kw, sh,
                          sw, ph, pw, OH, OW, is_max, include_pad)
        else:
            fl_pool2d_f64(<const double *>x + n * s.in_size,
                          <double *>y + n * s.out_size, C, H, W, kh, kw, sh,
                          sw, ph, pw, OH, OW, is_max, include_pad)


cdef void _step_batchnorm(const Step *s, Py_ssize_t b, const char *x,
                          char *y, char *work) noexcept nogil:
    # geom: outer, C, inner (per sample); work: scale[C], shift[C]
    cdef Py_ssize_t C = s.geom[1]
    if s.itemsize == 4:
        fl_bn_coeffs_f32(C, <const float *>s.p[0], <const float *>s.p[1],
                         <const float *>s.p[2], <const float *>s.p[3], NULL,
                         s.eps, <float *>work, <float *>work + C)
        fl_chan_affine_f32(b * s.geom[0], C, s.geom[2], <const float *>x,
                           <float *>y, <float *>work, <float *>work + C,
                           s.act)
    else:
        fl_bn_coeffs_f64(C, <const double *>s.p[0], <const double *>s.p[1],
                         <const double *>s.p[2], <const double *>s.p[3],
                         NULL, s.eps, <double *>work, <double *>work + C)
        fl_chan_affine_f64(b * s.geom[0], C, s.geom[2], <const double *>x,
                           <double *>y, <double *>work, <double *>work + C,
                           s.act)


cdef void _step_layernorm(const Step *s, Py_ssize_t b, const char *x,
                          char *y, char *work) noexcept nogil:
    # geom: outer, C, inner (per sample); work: 2*inner doubles
    if s.itemsize == 4:
        fl_layernorm_f32(b * s.geom[0], s.geom[1], s.geom[2],
                         <const float *>x, <float *>y, <const float *>s.p[0],
                         <const float *>s.p[1], s.eps, <double *>work)
    else:
        fl_layernorm_f64(b * s.geom[0], s.geom[1], s.geom[2],
                         <const double *>x, <double *>y,
                         <const double *>s.p[0], <const double *>s.p[1],
                         s.eps, <double *>work)


# ---------------------------------------------------------------------------
# Building the steps

cdef inline char *_opt_ptr(object p, object dtype, list keep) except? NULL:
    return NULL if p is None else _param_ptr(p, dtype, keep)


cdef int _check_blas_dims(str where, tuple dims) except -1:
    for d in dims:
        if d > 0x7FFFFFFF:
            raise ShapeError(f"{where}: a matrix dimension of {d} exceeds "
                             f"2**31-1, the limit of the 32-bit BLAS")
    return 0


cdef int _fill_step_conv(Step *s, tuple spec, object dtype,
                         list keep) except -1:
    """Translate a conv2d / pool2d / batchnorm / layernorm description into
    ``s`` (already zeroed, itemsize set); see the table at the top."""
    cdef str kind = spec[0]
    cdef Py_ssize_t i, C, O, G, Kg, P, rows, per_row, col_elems, batch
    s.kind = STEP_OTHER
    if kind == "conv2d":
        _, w, b, act, geom, bn = spec
        if len(geom) != 15:
            raise ValueError("conv2d step: geometry needs 15 values")
        for i in range(15):
            s.geom[i] = geom[i]
        C, O, G = geom[G_C], geom[G_O], geom[G_GROUPS]
        if G < 1 or C % G or O % G:
            raise ValueError(f"conv2d step: {C} input and {O} output "
                             f"channels do not split into {G} groups")
        Kg = (C // G) * geom[G_KH] * geom[G_KW]
        P = geom[G_OH] * geom[G_OW]
        _check_blas_dims("Conv2D", (O // G, Kg, P, geom[G_H] * geom[G_W]))
        s.run = _step_conv2d
        s.act = act
        s.in_size = C * geom[G_H] * geom[G_W]
        s.out_size = O * P
        s.p[0] = _param_ptr(w, dtype, keep)
        s.p[1] = _opt_ptr(b, dtype, keep)
        direct = (geom[G_KH] == 1 and geom[G_KW] == 1 and geom[G_SH] == 1
                  and geom[G_SW] == 1 and geom[G_PH] == 0
                  and geom[G_PW] == 0)
        per_row = Kg * geom[G_OW]
        rows = _CONV_COL_BYTES // (per_row * s.itemsize)
        if 2 * P <= _CONV_BATCH_COLS:
            # small outputs: several whole samples per GEMM; the
            # workspace holds their packed inputs and their GEMM output
            batch = (_CONV_BATCH_COLS + P - 1) // P
            _check_blas_dims("Conv2D", (batch * P,))
            s.geom[G_ROWS] = -batch
            col_elems = Kg * P + O * P      # per sample
        elif direct:
            s.geom[G_ROWS] = 0
            col_elems = 0
        else:
            rows = max(1, min(rows, geom[G_OH]))
            s.geom[G_ROWS] = rows
            col_elems = rows * per_row
            if O * P * Kg >= _PAR_MACS and rows < geom[G_OH]:
                # one packing slot per thread, for a sample on its own
                col_elems *= max(1, min(_num_threads, 16))
        s.work = 2 * O + col_elems
        s.macs = O * P * Kg
        if bn is not None:
            # BatchNorm fused into the epilogue; the step reads the
            # parameters at every call (see the note at the top)
            gamma, beta, mean, var, eps = bn
            s.p[2] = _opt_ptr(gamma, dtype, keep)
            s.p[3] = _opt_ptr(beta, dtype, keep)
            s.p[4] = _param_ptr(mean, dtype, keep)
            s.p[5] = _param_ptr(var, dtype, keep)
            s.eps = eps
    elif kind == "pool2d":
        _, is_max, count_include_pad, geom = spec
        if len(geom) != 11:
            raise ValueError("pool2d step: geometry needs 11 values")
        for i in range(11):
            s.geom[i] = geom[i]
        s.geom[11] = 1 if is_max else 0
        s.geom[12] = 1 if count_include_pad else 0
        s.run = _step_pool2d
        s.in_size = geom[0] * geom[1] * geom[2]
        s.out_size = geom[0] * geom[9] * geom[10]
    elif kind == "batchnorm":
        _, gamma, beta, mean, var, eps, outer, C, inner, act = spec
        s.run = _step_batchnorm
        s.inplace = 1
        s.act = act
        s.geom[0] = outer
        s.geom[1] = C
        s.geom[2] = inner
        s.in_size = s.out_size = outer * C * inner
        s.work = 2 * C
        s.p[0] = _opt_ptr(gamma, dtype, keep)
        s.p[1] = _opt_ptr(beta, dtype, keep)
        s.p[2] = _param_ptr(mean, dtype, keep)
        s.p[3] = _param_ptr(var, dtype, keep)
        s.eps = eps
    elif kind == "layernorm":
        _, gamma, beta, eps, outer, C, inner = spec
        s.run = _step_layernorm
        s.inplace = 1
        s.geom[0] = outer
        s.geom[1] = C
        s.geom[2] = inner
        s.in_size = s.out_size = outer * C * inner
        # 2*inner doubles of statistics, counted in elements of the dtype
        s.work = 0 if inner == 1 else \
            (2 * inner * 8 + s.itemsize - 1) // s.itemsize
        s.p[0] = _opt_ptr(gamma, dtype, keep)
        s.p[1] = _opt_ptr(beta, dtype, keep)
        s.eps = eps
    else:
        raise ValueError(f"unknown plan step {kind!r}")
    return 0
