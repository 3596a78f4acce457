"""The compiled forward plan, and the runtime configuration it runs under.

A :class:`Plan` is built from typed step descriptions (:mod:`fastlazy._steps`)
once a network's shapes are known.  It holds a C array of :c:type:`Step`
structs -- one struct of named members per step kind, raw pointers into
parameter storage -- and runs them in one ``nogil`` block per call, walking
the batch in row tiles so every intermediate stays in cache.  Steps read and
write *named buffers*; the plan places each intermediate buffer in a
workspace slot that is reused once its last reader has run.

This module owns every C header: the kernel table (``kernels/fl_kernels.h``,
every numeric kernel, chosen at import for the CPU) and the thread pool
(``fl_pool.h``), so there is one kernel table and one pool per process.  Everything on the hot
path is ``noexcept nogil`` on raw pointers.

A plan is rebuilt only when something it depends on changes: the storage
of one of its parameters moves (each :class:`~fastlazy._parameter.Parameter`
tells the plans that read it), a block of its network changes (the block
tells its plans), or the process-wide configuration changes (threads,
instruction set, tuning: :func:`invalidate_all`).
"""

import numpy as np

cimport cython
cimport numpy as cnp
from cython cimport floating
from libc.stdint cimport uint16_t, uint32_t
from cpython.pyport cimport PY_SSIZE_T_MAX
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from fastlazy._blas cimport (
    CblasNoTrans, CblasRowMajor, CblasTrans, blas_int, cblas_dgemm,
    cblas_dgemv, cblas_sgemm, cblas_sgemv, openblas_get_config,
    openblas_get_corename, openblas_get_num_threads, openblas_set_num_threads,
)
from fastlazy._kernels cimport (
    FL_ACT_GELU, FL_ACT_NONE, FL_ACT_RELU, FL_ACT_RELU6, FL_ACT_SIGMOID,
    FL_ACT_SILU,
    FL_ACT_SOFTRELU, FL_ACT_SOFTSIGN, FL_ACT_TANH, fl_kernels_init,
    fl_kernels_isa, fl_kernels_q7, fl_kernels_qbest, fl_kt,
)
from fastlazy._parameter cimport INITIALIZED, Parameter

from ._parameter import as_numeric_array
from ._util import bfloat16, prod
from .errors import DeferredInitializationError, OutputError, ShapeError


cdef extern from "<stdlib.h>" nogil:
    void *aligned_alloc(size_t alignment, size_t size)

cnp.import_array()


# ---------------------------------------------------------------------------
# Activations

ACTIVATIONS = {
    None: FL_ACT_NONE, 'relu': FL_ACT_RELU, 'sigmoid': FL_ACT_SIGMOID,
    'tanh': FL_ACT_TANH, 'softrelu': FL_ACT_SOFTRELU,
    'softsign': FL_ACT_SOFTSIGN, 'gelu': FL_ACT_GELU, 'silu': FL_ACT_SILU,
}
NO_ACT = FL_ACT_NONE
# clip(x, 0, 6) as a kernel activation (fused into the layer before it);
# not one of Gluon's Activation names
RELU6 = FL_ACT_RELU6


def activation_code(name, where):
    """Return the kernel code of activation ``name``; ``where`` names the layer."""
    if name is not None and not isinstance(name, str):
        raise TypeError(f"{where}: activation must be a string or None, "
                        f"got {type(name).__name__}")
    try:
        return ACTIVATIONS[name]
    except KeyError:
        known = ", ".join(repr(k) for k in ACTIVATIONS if k is not None)
        raise ValueError(f"{where}: unknown activation {name!r}; "
                         f"choose one of {known}, or None") from None


cdef inline void _act(Py_ssize_t itemsize, char *y, Py_ssize_t n,
                      int act) noexcept nogil:
    """Activation ``act`` in place over n values (the kernel table's)."""
    if itemsize == 4:
        fl_kt.act_f32(<float *>y, n, act)
    else:
        fl_kt.act_f64(<double *>y, n, act)


def apply_activation(cnp.ndarray arr, int code):
    """Apply activation ``code`` in place to a C-contiguous float array."""
    if not arr.flags.c_contiguous or arr.dtype.kind != 'f':
        raise TypeError("apply_activation needs a C-contiguous float array")
    if arr.dtype.itemsize not in (4, 8):
        raise TypeError(f"activations run on float32 and float64, "
                        f"not {arr.dtype}")
    cdef Py_ssize_t n = arr.size, isz = arr.dtype.itemsize
    cdef char *p = <char *>cnp.PyArray_DATA(arr)
    with nogil:
        _act(isz, p, n, code)
    return arr


# ---------------------------------------------------------------------------
# Runtime configuration.  Changing any of it changes every plan (workspace
# sizes, kernels, routes): one process-wide epoch, compared at each call.

cdef unsigned long long _config_epoch = 1


def invalidate_all():
    """Rebuild every plan at its next call: the process-wide configuration
    (threads, instruction set, tuning, fusion rules) changed."""
    global _config_epoch
    _config_epoch += 1


cdef int _isa_level = fl_kernels_init(-1)


def set_isa(level=None):
    """Choose the kernel instruction set: None for the best the CPU has,
    0 baseline, 3 AVX2+FMA, 4 AVX-512.  Returns the level in use, which is
    lower than asked for when the CPU lacks the instructions."""
    global _isa_level
    _isa_level = fl_kernels_init(-1 if level is None else int(level))
    invalidate_all()
    return _isa_level


def kernel_isa():
    """Name of the instruction set the kernels use."""
    return fl_kernels_isa().decode()


def packed_tile():
    """Register tile of the batched kernel on packed weights:
    (rows, float32 columns, float64 columns)."""
    return (fl_kt.mr, fl_kt.nr_f32, fl_kt.nr_f64)


cdef extern from "fl_pool.h" nogil:
    ctypedef void (*fl_job_fn)(void *ctx, int tid, int nthreads) noexcept nogil
    int fl_pool_run(fl_job_fn fn, void *ctx, int nthreads)
    int fl_pool_cpu_count()
    long fl_next_item(long *counter)
    enum:
        FL_POOL_MAX


def _default_threads():
    import os
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, fl_pool_cpu_count()))


# fastlazy's own pool does the threading; OpenBLAS always runs on the
# calling thread, so no second pool spins against NumPy's.
openblas_set_num_threads(1)
cdef int _num_threads = _default_threads()


def set_num_threads(n):
    """Threads a large forward pass may use: 1 to 64 (the pool's size;
    default: the cores this process may run on).  Small problems always
    run on the calling thread."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"set_num_threads: need an int, got "
                        f"{type(n).__name__}")
    if not 1 <= n <= FL_POOL_MAX:
        raise ValueError(
            f"set_num_threads: need 1 to {FL_POOL_MAX} threads (fastlazy's "
            f"pool holds at most {FL_POOL_MAX}; this machine has "
            f"{_default_threads()} usable cores), got {n}")
    if n != _num_threads:
        _num_threads = int(n)
        invalidate_all()     # convolution workspaces hold a slot per thread


def get_num_threads():
    """Threads a large forward pass may use."""
    return _num_threads


def blas_info():
    """OpenBLAS's build configuration, the core type it runs for and its own
    thread count (fastlazy keeps it at 1: its own pool does the threading)."""
    return {
        "config": openblas_get_config().decode(errors="replace"),
        "corename": openblas_get_corename().decode(errors="replace"),
        "blas_threads": openblas_get_num_threads(),
    }


# Which kernel runs a dense product: 0 = by shape (_dense_route), 1 = always
# the small kernel, 2 = always BLAS, 3 = the packed kernel whenever the
# packed weights are current, 4 = the dot kernel whenever its copy of the
# weights is current (benches; tests use DenseArgs.route instead).
cdef int _KERNEL_ROUTE = 0

cdef enum DenseRoute:
    ROUTE_SMALL = 0
    ROUTE_BLAS = 1
    ROUTE_PACKED = 2
    ROUTE_DOT = 3

# The copies of a weight a dense step can run on (PackedWeights.nr: the
# panel width, or 0 for rows)
cdef enum PackLayout:
    PACK_NONE = 0
    PACK_PANELS = 1     # the packed kernel's panels (pack)
    PACK_ROWS = 2       # (M, K) rows for the dot kernel (pack_rows)

# Target size of one scratch buffer: a row tile of the widest intermediate
# fits in it, so a tile's activations stay in L2.  512 KiB (128 rows of a
# 1024-wide layer) measured best with the packed kernel: C4 at 1 thread
# 8.47 ms against 8.78 ms with 1 MiB tiles, at 2 threads 4.32 against 4.57
# (two tiles, one per thread, instead of splitting each layer by columns);
# bulk scoring of 1M rows unchanged.
cdef Py_ssize_t _TILE_BYTES = 1 << 19
# A forward pass with fewer multiply-adds than this runs on one thread:
# waking a worker costs more than it saves.
cdef Py_ssize_t _PAR_MACS = 1 << 22
# Weights larger than this (bytes) are never packed; -1: no limit.
cdef Py_ssize_t _PACK_MAX_BYTES = -1
# A forward pass with fewer multiply-adds than this keeps the GIL: it
# computes for less time (~0.5 us) than releasing and retaking the GIL
# costs (~360 instructions, and a thread switch when another thread waits
# for it).  C1 (7.7k multiply-adds) measured 0.xx us -> 0.xx us.
cdef Py_ssize_t _NOGIL_MACS = 1 << 14


def set_tuning(kernel_route=None, tile_bytes=None, parallel_macs=None,
               pack_max_bytes=None, nogil_macs=None):
    """Adjust the kernel choice ('auto', 'own', 'blas', 'packed' or 'dot'),
    the
    row-tile size, the size from which a forward pass uses several threads,
    the largest weight (bytes; -1: any) that is kept packed for the
    batched kernel -- the memory knob: a packed copy costs as much memory
    as its weight -- and the size (multiply-adds) from which a forward
    pass releases the GIL.  Returns the old values (for tests and
    benches)."""
    global _KERNEL_ROUTE, _TILE_BYTES, _PAR_MACS, _PACK_MAX_BYTES, \
        _NOGIL_MACS
    routes = ("auto", "own", "blas", "packed", "dot")
    old = (routes[_KERNEL_ROUTE], _TILE_BYTES, _PAR_MACS, _PACK_MAX_BYTES,
           _NOGIL_MACS)
    if kernel_route is not None:
        if kernel_route not in routes:
            raise ValueError(f"kernel_route must be one of {routes}, got "
                             f"{kernel_route!r}")
        _KERNEL_ROUTE = routes.index(kernel_route)
    if tile_bytes is not None:
        _TILE_BYTES = max(1, int(tile_bytes))
    if parallel_macs is not None:
        _PAR_MACS = max(0, int(parallel_macs))
    if pack_max_bytes is not None:
        _PACK_MAX_BYTES = max(-1, int(pack_max_bytes))
    if nogil_macs is not None:
        _NOGIL_MACS = max(0, int(nogil_macs))
    invalidate_all()
    return old


# ---------------------------------------------------------------------------
# Dense steps

cdef inline bint _use_own_kernel(Py_ssize_t rows, Py_ssize_t K,
                                 Py_ssize_t M) noexcept nogil:
    """Own register-tiled kernel or BLAS, by shape.  Measured on the
    benchmark machine (AVX-512, OpenBLAS 0.3.34 SkylakeX): BLAS's packing
    costs more than it saves for up to 8 rows whatever the weights (a 2x1024
    by 1024x1024 product: 160 us own, 480 us BLAS); for one row, BLAS's GEMV
    streams big matrices better; from 16 rows on BLAS wins once the weights
    outgrow L2, and from 128 rows unless they are tiny."""
    cdef Py_ssize_t km = K * M
    if rows == 1:
        return km <= (1 << 18)
    if rows <= 8:
        return True
    if rows <= 16:
        return km <= (1 << 19)
    if rows <= 64:
        return km <= (1 << 18)
    return km <= (1 << 16)


cdef inline bint _packed_wins(Py_ssize_t rows, Py_ssize_t K,
                              Py_ssize_t M) noexcept nogil:
    """Whether the packed kernel runs ``rows`` rows through a K x M layer
    (then the weights are kept packed).  Measured (benches/sweep_routes.py,
    1 thread): with AVX-512, from 2 rows on it takes 0.3-0.85x the time of
    the better of the small kernel and OpenBLAS once the layer has 32k
    weights and 64 outputs; narrower layers waste most of a 32-column panel
    (10 outputs: 1.3-1.5x slower); layers of 4k-32k weights (20 x 256,
    64 x 64, 100 x 100) take 0.63-0.88x from 8 rows and tie below.  With
    AVX2 (against OpenBLAS's Haswell kernels, OPENBLAS_CORETYPE=Haswell):
    0.46-0.94x on the big layers, 0.87-0.95x on the 4k-32k ones from 8 rows
    (1.0-1.3x below).  One row stays a matrix-vector product.

    Layers narrower than 64 outputs go packed from 32 rows when their last
    panel is more than half used (AVX2's 16-column panels: 10, 16, 32, 48
    outputs; AVX-512's 32-column ones: 32 but not 10): measured with AVX2
    (Zen 3, benches/sweep_routes.py and the textbook network), K=256/512 x
    M=10 took 0.6-0.9x the better other route from 8-32 rows (the textbook
    network: 1.2x slower at 8 rows, equal at 64), and the textbook
    network on 64,000 rows 0.85x; with 24 or 40 outputs (a half-used panel)
    the small kernel stayed ahead."""
    cdef Py_ssize_t tail
    if rows < 2:
        return False
    if M < 64:
        tail = M % fl_kt.nr_f32
        return rows >= 32 and K * M >= (1 << 11) and \
            (tail == 0 or 2 * tail > fl_kt.nr_f32)
    return K * M >= (1 << 15) or (rows >= 8 and K * M >= (1 << 12))


cdef inline bint _dot_wins(Py_ssize_t rows, Py_ssize_t K, Py_ssize_t M,
                           Py_ssize_t lanes) noexcept nogil:
    """Whether the dot kernel runs ``rows`` rows through a K x M layer
    (then the weights are kept as (M, K) rows).  Measured with AVX2
    (kernels alone, 1-2 rows, K 32-1024): fewer outputs than a vector take
    1.3-5x less time than the small kernel, whose vectors then hold mostly
    absent columns; between one and two vectors, up to half a vector over
    one (10 and 12 outputs of 8 lanes) 1.1-2.2x less from K = 64 on
    (256 -> 10: 182 -> 94 ns), more than that or a whole vector (8, 14, 16)
    as fast or slower; from 3 rows on the small kernel's rows share its
    weight loads and it ties or wins."""
    if rows > 2:
        return False
    if M < lanes:
        return True
    return M < 2 * lanes and M % lanes <= lanes // 2 and K >= 64


cdef inline int _pack_layout(const Step *s, Py_ssize_t rows) noexcept nogil:
    """The copy of its weights a dense step should run ``rows`` rows on
    (PackLayout), if it is current."""
    cdef const DenseArgs *a = &s.a.dense
    cdef Py_ssize_t lanes
    if a.route >= 0:
        return PACK_PANELS if a.route == ROUTE_PACKED else \
            PACK_ROWS if a.route == ROUTE_DOT else PACK_NONE
    if _KERNEL_ROUTE:
        return PACK_PANELS if _KERNEL_ROUTE == 3 else \
            PACK_ROWS if _KERNEL_ROUTE == 4 else PACK_NONE
    if _packed_wins(rows, a.K, a.M):
        return PACK_PANELS
    lanes = (fl_kt.nr_f32 if s.itemsize == 4 else fl_kt.nr_f64) // 2
    return PACK_ROWS if _dot_wins(rows, a.K, a.M, lanes) else PACK_NONE


cdef inline int _dense_route(const Step *s, Py_ssize_t rows) noexcept nogil:
    cdef const DenseArgs *a = &s.a.dense
    cdef int layout
    if a.packed != NULL:
        # (a call's last row tile may be smaller than the one its copy
        # was chosen for: then the layout may not fit)
        layout = _pack_layout(s, rows)
        if layout == a.packed_layout:
            return ROUTE_PACKED if layout == PACK_PANELS else ROUTE_DOT
    if a.route == ROUTE_SMALL or a.route == ROUTE_BLAS:
        return a.route
    if _KERNEL_ROUTE == 1 or _KERNEL_ROUTE == 2:
        return ROUTE_SMALL if _KERNEL_ROUTE == 1 else ROUTE_BLAS
    return ROUTE_SMALL if _use_own_kernel(rows, a.K, a.M) else ROUTE_BLAS


cdef inline void _gemv_gemm(Py_ssize_t itemsize, Py_ssize_t rows,
                            Py_ssize_t K, Py_ssize_t mc, const char *x,
                            const char *w, Py_ssize_t ldw,
                            char *y, Py_ssize_t ldy) noexcept nogil:
    """y[rows, mc] = x[rows, K] @ w[K, mc] through OpenBLAS (GEMV for one
    row), row-major with leading dimensions ldw and ldy."""
    if itemsize == 4:
        if rows == 1:
            cblas_sgemv(CblasRowMajor, CblasTrans, <blas_int>K, <blas_int>mc,
                        1.0, <const float *>w, <blas_int>ldw,
                        <const float *>x, 1, 0.0, <float *>y, 1)
        else:
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans,
                        <blas_int>rows, <blas_int>mc, <blas_int>K, 1.0,
                        <const float *>x, <blas_int>K, <const float *>w,
                        <blas_int>ldw, 0.0, <float *>y, <blas_int>ldy)
    else:
        if rows == 1:
            cblas_dgemv(CblasRowMajor, CblasTrans, <blas_int>K, <blas_int>mc,
                        1.0, <const double *>w, <blas_int>ldw,
                        <const double *>x, 1, 0.0, <double *>y, 1)
        else:
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans,
                        <blas_int>rows, <blas_int>mc, <blas_int>K, 1.0,
                        <const double *>x, <blas_int>K, <const double *>w,
                        <blas_int>ldw, 0.0, <double *>y, <blas_int>ldy)


cdef inline void _bias_act(Py_ssize_t itemsize, Py_ssize_t rows,
                           Py_ssize_t mc, char *y, Py_ssize_t ldy,
                           const char *b, int act) noexcept nogil:
    """Bias and activation over ``rows`` rows of ``mc`` outputs, in place."""
    if b == NULL and act == FL_ACT_NONE:
        return
    if itemsize == 4:
        fl_kt.bias_act_f32(rows, mc, <float *>y, ldy, <const float *>b, act)
    else:
        fl_kt.bias_act_f64(rows, mc, <double *>y, ldy, <const double *>b,
                           act)


cdef inline void _dense_bn_typed(const DenseArgs *a, Py_ssize_t rows,
                                 floating *y, Py_ssize_t m0,
                                 Py_ssize_t mc) noexcept nogil:
    """Columns [m0, m0 + mc) of y (rows x M): the folded BatchNorm (with
    the bias) and the activation, 64 columns of coefficients at a time."""
    cdef floating scale[64]
    cdef floating shift[64]
    cdef Py_ssize_t c0, cn, r, j, M = a.M
    cdef const floating *bias = <const floating *>a.bias
    cdef floating *row
    c0 = 0
    while c0 < mc:
        cn = mc - c0 if mc - c0 < 64 else 64
        if floating is float:
            fl_kt.bn_coeffs_f32(cn, NULL if a.bn_gamma == NULL
                             else <const float *>a.bn_gamma + m0 + c0,
                             NULL if a.bn_beta == NULL
                             else <const float *>a.bn_beta + m0 + c0,
                             <const float *>a.bn_mean + m0 + c0,
                             <const float *>a.bn_var + m0 + c0,
                             NULL if bias == NULL else bias + m0 + c0,
                             a.bn_eps, scale, shift)
        else:
            fl_kt.bn_coeffs_f64(cn, NULL if a.bn_gamma == NULL
                             else <const double *>a.bn_gamma + m0 + c0,
                             NULL if a.bn_beta == NULL
                             else <const double *>a.bn_beta + m0 + c0,
                             <const double *>a.bn_mean + m0 + c0,
                             <const double *>a.bn_var + m0 + c0,
                             NULL if bias == NULL else bias + m0 + c0,
                             a.bn_eps, scale, shift)
        for r in range(rows):
            row = y + r * M + m0 + c0
            for j in range(cn):
                row[j] = row[j] * scale[j] + shift[j]
            if a.act != FL_ACT_NONE:
                _act(sizeof(floating), <char *>row, cn, a.act)
        c0 += cn


cdef inline void _dense_bn(const Step *s, Py_ssize_t rows, char *y,
                           Py_ssize_t m0, Py_ssize_t mc) noexcept nogil:
    if s.itemsize == 4:
        _dense_bn_typed(&s.a.dense, rows, <float *>y, m0, mc)
    else:
        _dense_bn_typed(&s.a.dense, rows, <double *>y, m0, mc)


cdef void _dense_columns(const Step *s, Py_ssize_t rows, const char *x,
                         char *y, Py_ssize_t m0, Py_ssize_t mc) noexcept nogil:
    """Output columns [m0, m0 + mc) of a dense step over ``rows`` rows,
    through the small kernel, the dot kernel or BLAS (whichever _dense_route
    picks for the whole step)."""
    cdef const DenseArgs *a = &s.a.dense
    cdef Py_ssize_t isz = s.itemsize, M = a.M
    cdef const char *b = NULL if a.bias == NULL else a.bias + m0 * isz
    cdef int act = a.act
    cdef bint bn = a.bn_mean != NULL
    if bn:
        # bias and activation come after the BatchNorm
        b = NULL
        act = FL_ACT_NONE
    cdef int route = _dense_route(s, rows)
    if route == ROUTE_DOT:
        if isz == 4:
            fl_kt.dense_dot_f32(rows, a.K, mc, <const float *>x, a.K,
                                <const float *>a.packed + m0 * a.K,
                                <const float *>b, <float *>y + m0, M, act)
        else:
            fl_kt.dense_dot_f64(rows, a.K, mc, <const double *>x, a.K,
                                <const double *>a.packed + m0 * a.K,
                                <const double *>b, <double *>y + m0, M, act)
    elif route == ROUTE_SMALL and m0 == 0 and mc == M:
        if isz == 4:
            fl_kt.dense_f32(rows, a.K, M, <const float *>x, a.K,
                            <const float *>a.w, <const float *>b,
                            <float *>y, M, act)
        else:
            fl_kt.dense_f64(rows, a.K, M, <const double *>x, a.K,
                            <const double *>a.w, <const double *>b,
                            <double *>y, M, act)
    else:
        _gemv_gemm(isz, rows, a.K, mc, x, a.w + m0 * isz, M, y + m0 * isz,
                   M)
        _bias_act(isz, rows, mc, y + m0 * isz, M, b, act)
    if bn:
        _dense_bn(s, rows, y, m0, mc)


cdef void _dense_panels(const Step *s, Py_ssize_t rows, const char *x,
                        char *y, Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    """Panels [p0, p1) of a dense step on its packed weights."""
    cdef const DenseArgs *a = &s.a.dense
    cdef Py_ssize_t M = a.M, m0, mc, r
    cdef int nr = fl_kt.nr_f32 if s.itemsize == 4 else fl_kt.nr_f64
    cdef bint bn = a.bn_mean != NULL
    cdef const char *bias = NULL if bn else a.bias
    cdef int act = FL_ACT_NONE if bn else a.act
    m0 = p0 * nr
    mc = (M if p1 * nr > M else p1 * nr) - m0
    if s.itemsize == 4:
        fl_kt.gemm_packed_f32(rows, a.K, M, <const float *>x, a.K,
                              <const float *>a.packed, p0, p1,
                              <const float *>bias, <float *>y, M, act)
    else:
        fl_kt.gemm_packed_f64(rows, a.K, M, <const double *>x, a.K,
                              <const double *>a.packed, p0, p1,
                              <const double *>bias, <double *>y, M, act)
    if bn:
        _dense_bn(s, rows, y, m0, mc)


cdef inline Py_ssize_t _npanels(const Step *s) noexcept nogil:
    cdef Py_ssize_t nr = fl_kt.nr_f32 if s.itemsize == 4 else fl_kt.nr_f64
    return (s.a.dense.M + nr - 1) // nr


cdef void _step_dense(const Step *s, Py_ssize_t b, char *const *bufs,
                      char *work) noexcept nogil:
    cdef Py_ssize_t rows = b * s.a.dense.rows
    cdef const char *x = bufs[s.src[0]]
    cdef char *y = bufs[s.dst]
    if _dense_route(s, rows) == ROUTE_PACKED:
        _dense_panels(s, rows, x, y, 0, _npanels(s))
    else:
        _dense_columns(s, rows, x, y, 0, s.a.dense.M)


cdef void _step_act(const Step *s, Py_ssize_t b, char *const *bufs,
                    char *work) noexcept nogil:
    cdef Py_ssize_t n = b * s.out_size
    cdef char *y = bufs[s.dst]
    if bufs[s.src[0]] != y:
        memcpy(y, bufs[s.src[0]], n * s.itemsize)
    _act(s.itemsize, y, n, s.a.act.act)


# ---------------------------------------------------------------------------
# Packed weights: the panel layout of the batched kernel, one copy per Dense
# weight, kept in the Parameter's ``_packed`` slot (owned by this module)

cdef class PackedWeights:
    cdef cnp.ndarray buf
    cdef int nr
    cdef Py_ssize_t off               # elements from buf's start to 64 bytes
    cdef unsigned long long version   # the weight's _version when packed


cdef void _pack_into(int layout, Py_ssize_t K, Py_ssize_t M,
                     Py_ssize_t itemsize, const char *src,
                     char *dst) noexcept nogil:
    """The stored (K, M) weight ``src`` copied into ``dst`` in ``layout``:
    the batched kernel's panels (PACK_PANELS) or (M, K) rows for the dot
    kernel (PACK_ROWS)."""
    if layout == PACK_ROWS and itemsize == 4:
        fl_kt.pack_rows_f32(K, M, <const float *>src, <float *>dst)
    elif layout == PACK_ROWS:
        fl_kt.pack_rows_f64(K, M, <const double *>src, <double *>dst)
    elif itemsize == 4:
        fl_kt.pack_f32(K, M, <const float *>src, <float *>dst)
    else:
        fl_kt.pack_f64(K, M, <const double *>src, <double *>dst)


cdef char *_packed_data(Parameter w, int layout) except NULL:
    """``w``'s values (2-D, stored transposed) in ``layout``: the panels of
    the batched kernel (PACK_PANELS) or (M, K) rows for the dot kernel
    (PACK_ROWS), made again when they may have changed since the last
    time.  One copy per weight (a layer runs on one of the two: panels
    need 64 outputs, rows at most two vectors' worth).  Callers check
    ``w._live_views`` first.  Copying runs without the GIL, under the
    parameter's own lock (concurrent calls copy once)."""
    cdef cnp.ndarray st = w._storage
    cdef Py_ssize_t K = cnp.PyArray_DIM(st, 0), M = cnp.PyArray_DIM(st, 1)
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(st)
    cdef int nr = 0 if layout == PACK_ROWS else \
        (fl_kt.nr_f32 if isz == 4 else fl_kt.nr_f64)
    cdef Py_ssize_t need = K * M if nr == 0 else ((M + nr - 1) // nr) * nr * K
    cdef PackedWeights pw = w._packed
    cdef char *pk
    cdef const char *src
    cdef unsigned long long version
    if pw is not None and pw.nr == nr and pw.version == w._version and \
            cnp.PyArray_TYPE(pw.buf) == cnp.PyArray_TYPE(st):
        return <char *>cnp.PyArray_DATA(pw.buf) + pw.off * isz
    with w._lock:
        pw = w._packed
        if pw is None or pw.nr != nr or \
                cnp.PyArray_TYPE(pw.buf) != cnp.PyArray_TYPE(st) or \
                cnp.PyArray_DIM(pw.buf, 0) != need + 64 // isz:
            pw = PackedWeights()
            pw.buf = np.empty(need + 64 // isz, dtype=st.dtype)
            pw.nr = nr
            pw.off = ((-<size_t>cnp.PyArray_DATA(pw.buf)) & 63) // <size_t>isz
            pw.version = w._version - 1
            w._packed = pw
        pk = <char *>cnp.PyArray_DATA(pw.buf) + pw.off * isz
        if pw.version != w._version:
            src = <const char *>cnp.PyArray_DATA(st)
            version = w._version
            with nogil:
                _pack_into(layout, K, M, isz, src, pk)
            pw.version = version
    return pk


def packed_state(Parameter w):
    """(live data() views, values packed since the last write) of a Dense
    weight -- for tests of the packed-weights cache."""
    cdef PackedWeights pw = w._packed
    return (w._live_views, pw is not None and pw.version == w._version)


include "_plan_conv.pxi"
include "_plan_graph.pxi"
include "_plan_quant.pxi"
include "_plan_bf16.pxi"


# ---------------------------------------------------------------------------
# From typed steps to C structs

cdef char *_param_ptr(Parameter p, object dtype, list keep,
                      bint transposed=False) except NULL:
    """Raw pointer to a parameter's storage (kept alive through ``keep``)."""
    cdef cnp.ndarray arr = p._storage
    if arr is None or p._state != INITIALIZED:
        raise DeferredInitializationError(p._not_ready_message())
    if p._dtype is bfloat16:
        raise TypeError(
            f"parameter {p.name} is bfloat16; only the weights of Dense "
            f"and Conv2D layers (FullyConnected, Convolution) compute from "
            f"bfloat16 values (net.cast('bfloat16') keeps the others "
            f"float32): cast it back with .cast('float32')")
    if arr.dtype != dtype:
        raise TypeError(f"parameter {p.name} is {arr.dtype}, the network "
                        f"runs in {dtype}; call net.cast(...)")
    if p._transposed != transposed:
        raise RuntimeError(f"parameter {p.name}: unexpected storage layout")
    keep.append(arr)
    return <char *>cnp.PyArray_DATA(arr)


cdef inline char *_opt_ptr(object p, object dtype, list keep) except? NULL:
    return NULL if p is None else _param_ptr(<Parameter>p, dtype, keep)


cdef int _check_blas_dims(str where, tuple dims) except -1:
    for d in dims:
        if d > 0x7FFFFFFF:
            raise ShapeError(f"{where}: a matrix dimension of {d} exceeds "
                             f"2**31-1, the limit of the 32-bit BLAS")
    return 0


cdef int _fill_dense(Step *s, object st, object dtype, list keep) except -1:
    cdef DenseArgs *a = &s.a.dense
    if st.quant is not None:
        return _fill_qdense(s, st, dtype, keep)      # int8: _plan_quant.pxi
    _check_blas_dims("Dense", (st.K, st.M))
    s.run = _step_dense
    s.kind = STEP_DENSE
    a.act = st.act
    a.route = -1
    a.rows = st.rows
    a.K = st.K
    a.M = st.M
    s.in_size = st.rows * st.K
    s.out_size = st.rows * st.M
    s.macs = st.rows * st.K * st.M
    a.w = _param_ptr(st.weight, dtype, keep, True)
    a.bias = _opt_ptr(st.bias, dtype, keep)
    if st.bn is not None:
        a.bn_gamma = _opt_ptr(st.bn.gamma, dtype, keep)
        a.bn_beta = _opt_ptr(st.bn.beta, dtype, keep)
        a.bn_mean = _param_ptr(st.bn.mean, dtype, keep)
        a.bn_var = _param_ptr(st.bn.var, dtype, keep)
        a.bn_eps = st.bn.eps
    keep.append(st.weight)
    a.wparam = <void *>st.weight
    return 0


cdef int _fill_act(Step *s, object st, object dtype, list keep) except -1:
    s.run = _step_act_extra if st.act >= ACT_LEAKY else _step_act
    s.kind = STEP_ACT
    s.a.act.act = st.act
    s.a.act.alpha = st.alpha
    s.a.act.beta = st.beta
    s.in_size = s.out_size = st.size
    return 0


cdef int _fill_step(Step *s, object st, object dtype, list keep) except -1:
    """Translate one typed step (fastlazy._steps) into ``s``."""
    cdef int i
    memset(s, 0, sizeof(Step))
    s.itemsize = dtype.itemsize
    srcs = st.inputs
    if len(srcs) > FL_MAX_SRC:
        raise ValueError(f"plan step {type(st).__name__} reads {len(srcs)} "
                         f"buffers; at most {FL_MAX_SRC}")
    s.nsrc = len(srcs)
    for i in range(s.nsrc):
        s.src[i] = srcs[i]
    s.dst = st.dst
    kind = type(st)
    from . import _steps
    if kind is _steps.DenseStep:
        if (<Parameter>st.weight)._dtype is bfloat16:
            _fill_dense_bf16(s, st, dtype, keep)
        else:
            _fill_dense(s, st, dtype, keep)
    elif kind is _steps.ActStep:
        _fill_act(s, st, dtype, keep)
    elif kind is _steps.ConvStep:
        _fill_conv(s, st, dtype, keep)
    elif kind is _steps.PoolStep:
        _fill_pool(s, st, dtype, keep)
    elif kind is _steps.BatchNormStep:
        _fill_batchnorm(s, st, dtype, keep)
    elif kind is _steps.LayerNormStep:
        _fill_layernorm(s, st, dtype, keep)
    elif kind is _steps.BinaryStep:
        _fill_binary(s, st, dtype, keep)
    elif kind is _steps.ScalarStep:
        _fill_scalar(s, st, dtype, keep)
    elif kind is _steps.ConcatStep:
        _fill_concat(s, st, dtype, keep)
    elif kind is _steps.SliceStep:
        _fill_slice(s, st, dtype, keep)
    elif kind is _steps.ReduceStep:
        _fill_reduce(s, st, dtype, keep)
    elif kind is _steps.SoftmaxStep:
        _fill_softmax(s, st, dtype, keep)
    elif kind is _steps.PReluStep:
        _fill_prelu(s, st, dtype, keep)
    elif kind is _steps.CopyStep:
        _fill_copy(s, st, dtype, keep)
    else:
        raise TypeError(f"the plan has no step kind {kind.__name__}")
    return 0


def _layout(steps, sizes, inputs, outputs, params):
    """Place the buffers.  Returns (kind and index of each buffer, per-sample
    size of each slot, in-place flag per step, copies as (output, buffer)).

    ``inputs`` and ``outputs`` are the plan's buffers in order, ``params``
    the buffers that are a parameter's storage.  An element-wise step runs
    in place when its input is an intermediate read by no later step: its
    output then shares the input's memory (the same *class*).  The class
    of an output is that output's array; an output whose class is an input,
    a parameter or an earlier output is copied from it after each tile.
    Every other class gets the first slot whose occupant's last reader ran
    before the class is first written (first fit), so a chain ping-pongs
    between two slots and a DAG reuses a buffer once it is dead."""
    n = len(sizes)
    last = [-1] * n
    first = [-1] * n
    for i, st in enumerate(steps):
        for b in st.inputs:
            last[b] = i
        if first[st.dst] < 0:
            first[st.dst] = i
    for b in outputs:
        last[b] = len(steps)
    alias = list(range(n))

    def root(b):
        while alias[b] != b:
            b = alias[b]
        return b

    fixed = set(inputs) | set(params)     # never written, never aliased
    inplace = []
    for i, st in enumerate(steps):
        src = st.inputs[0] if st.inputs else -1
        ok = (st.elementwise and src >= 0 and root(src) not in fixed
              and last[src] == i and sizes[src] == sizes[st.dst]
              and first[st.dst] == i)
        if ok:
            alias[st.dst] = root(src)
        inplace.append(ok)
    kind = [BUF_SCRATCH] * n
    index = [-1] * n
    by_root = {}
    for k, b in enumerate(inputs):
        by_root[b] = (BUF_INPUT, k)
    for b in params:
        by_root[b] = (BUF_PARAM, -1)
    copies = []
    for k, b in enumerate(outputs):
        r = root(b)
        if r in by_root:
            copies.append((k, b))
        else:
            by_root[r] = (BUF_OUTPUT, k)
    # liveness of each scratch class
    start = {}
    end = {}
    for b in range(n):
        r = root(b)
        if r in by_root or first[b] < 0:
            continue
        start[r] = min(start.get(r, first[b]), first[b])
        end[r] = max(end.get(r, last[b]), last[b])
    slot_size = []
    slot_free_after = []
    for r in sorted(start, key=lambda r: (start[r], r)):
        size = max(sizes[b] for b in range(n) if root(b) == r)
        chosen = -1
        for k in range(len(slot_size)):
            if slot_free_after[k] < start[r]:
                chosen = k
                break
        if chosen < 0:
            chosen = len(slot_size)
            slot_size.append(0)
            slot_free_after.append(-1)
        slot_size[chosen] = max(slot_size[chosen], size)
        slot_free_after[chosen] = end[r]
        by_root[r] = (BUF_SCRATCH, chosen)
    for b in range(n):
        # buffers a fusion left without writer or reader point nowhere
        kind[b], index[b] = by_root.get(root(b), (BUF_UNUSED, -1))
    for i, st in enumerate(steps):
        for b in st.inputs:
            if kind[b] == BUF_UNUSED:
                raise RuntimeError(f"plan step {i} ({type(st).__name__}) "
                                   f"reads buffer {b}, which nothing writes")
    return kind, index, slot_size, inplace, copies


# ---------------------------------------------------------------------------
# Running

cdef inline void _point_bufs(const PlanData *d, const RunCtx *c,
                             Py_ssize_t t0, char *scratch,
                             char **bufs) noexcept nogil:
    """bufs[i]: where buffer i's samples of the tile starting at t0 are."""
    cdef int i, k
    for i in range(d.nbufs):
        k = d.buf_index[i]
        if d.buf_kind[i] == BUF_SCRATCH:
            bufs[i] = scratch + c.slot_off[k]
        elif d.buf_kind[i] == BUF_INPUT:
            bufs[i] = <char *>c.xs[k] + t0 * d.in_sizes[k] * d.itemsize
        elif d.buf_kind[i] == BUF_OUTPUT:
            bufs[i] = c.outs[k] + t0 * d.out_sizes[k] * d.itemsize
        else:
            bufs[i] = d.buf_param[i]        # NULL for an unused buffer


cdef inline void _copies(const PlanData *d, const RunCtx *c, Py_ssize_t t0,
                         Py_ssize_t b, char **bufs) noexcept nogil:
    """Outputs that pass another buffer straight through."""
    cdef int j, k
    for j in range(d.ncopies):
        k = d.copy_out[j]
        memcpy(c.outs[k] + t0 * d.out_sizes[k] * d.itemsize,
               bufs[d.copy_from[j]], b * d.out_sizes[k] * d.itemsize)


cdef void _run_tile(const PlanData *d, const RunCtx *c, Py_ssize_t t0,
                    Py_ssize_t b, char *scratch, char **bufs) noexcept nogil:
    cdef int i
    cdef const Step *s
    _point_bufs(d, c, t0, scratch, bufs)
    for i in range(d.nsteps):
        s = &d.steps[i]
        s.run(s, b, bufs, scratch + c.work_off)
    _copies(d, c, t0, b, bufs)


cdef void _tiles_job(void *vctx, int tid, int nthreads) noexcept nogil:
    """Threads take row tiles from a shared counter until none are left."""
    cdef RunCtx *c = <RunCtx *>vctx
    cdef const PlanData *d = c.d
    cdef char *scratch = c.scratch + tid * c.thread_bytes
    cdef char **bufs = c.bufs + tid * d.nbufs
    cdef Py_ssize_t t0, b
    while True:
        t0 = fl_next_item(&c.next_tile) * c.tile
        if t0 >= c.n:
            break
        b = c.n - t0 if c.n - t0 < c.tile else c.tile
        _run_tile(d, c, t0, b, scratch, bufs)


cdef void _run_serial(RunCtx *c) noexcept nogil:
    """_tiles_job on the calling thread alone: the tiles in order, no
    shared counter."""
    cdef Py_ssize_t t0 = 0
    while t0 < c.n:
        _run_tile(c.d, c, t0, c.n - t0 if c.n - t0 < c.tile else c.tile,
                  c.scratch, c.bufs)
        t0 += c.tile


cdef void _columns_job(void *vctx, int tid, int nthreads) noexcept nogil:
    """One dense step split by output columns, claimed from a shared
    counter: a thread that starts late (slow wake-up, or less CPU because
    another library's pool is spinning) finds its share taken by one that is
    already running.  On packed weights a slice is one panel: starting one
    costs nothing, and a thread that runs slowly (sharing its core with
    another process's spinning BLAS thread) holds up the end of the step by
    at most one panel; through BLAS each slice repacks its weights, so
    there is one per thread, 16-aligned."""
    cdef RunCtx *c = <RunCtx *>vctx
    cdef const Step *s = c.step
    cdef Py_ssize_t M = s.a.dense.M, m0, rows = c.n * s.a.dense.rows
    cdef Py_ssize_t chunk = ((M + nthreads - 1) // nthreads + 15) & ~15
    cdef Py_ssize_t npan, p0
    if _dense_route(s, rows) == ROUTE_PACKED:
        npan = _npanels(s)
        while True:
            p0 = fl_next_item(&c.next_tile)
            if p0 >= npan:
                break
            _dense_panels(s, rows, c.src, c.dst, p0, p0 + 1)
        return
    while True:
        m0 = fl_next_item(&c.next_tile) * chunk
        if m0 >= M:
            break
        _dense_columns(s, rows, c.src, c.dst, m0,
                       M - m0 if M - m0 < chunk else chunk)


cdef void _gemv_chunks_job(void *vctx, int tid, int nthreads) noexcept nogil:
    """One row through a big dense step on BLAS, split along k: chunks of
    kchunk weight rows taken from a shared counter, each chunk's product
    into its own partial output.  Each thread streams whole weight rows,
    contiguous memory: split by output columns instead, two threads each
    read half of every row, and the second core added 1.13x (one 16 MB
    layer, 2 threads, OpenBLAS sgemv per slice; 2.17x split along k)."""
    cdef RunCtx *c = <RunCtx *>vctx
    cdef const Step *s = c.step
    cdef Py_ssize_t K = s.a.dense.K, M = s.a.dense.M, isz = s.itemsize
    cdef Py_ssize_t j, k0
    while True:
        j = fl_next_item(&c.next_tile)
        k0 = j * c.kchunk
        if k0 >= K:
            break
        _gemv_gemm(isz, 1, K - k0 if K - k0 < c.kchunk else c.kchunk, M,
                   c.src + k0 * isz, s.a.dense.w + k0 * M * isz, M,
                   c.partial + j * M * isz, M)


cdef void _gemv_by_chunks(RunCtx *c, const Step *s,
                          int nthreads) noexcept nogil:
    """_gemv_chunks_job on the pool, then the partial outputs summed in
    chunk order (so the result does not depend on which thread took which
    chunk), the bias, the folded BatchNorm and the activation."""
    cdef const DenseArgs *a = &s.a.dense
    cdef Py_ssize_t K = a.K, M = a.M, isz = s.itemsize, j, m, nch
    cdef bint bn = a.bn_mean != NULL
    cdef float *yf
    cdef const float *pf
    cdef double *yd
    cdef const double *pd
    c.kchunk = (K + c.nchunks - 1) // c.nchunks
    nch = (K + c.kchunk - 1) // c.kchunk
    c.next_tile = 0
    fl_pool_run(_gemv_chunks_job, c, nthreads)
    if isz == 4:
        yf = <float *>c.dst
        pf = <const float *>c.partial
        memcpy(yf, pf, M * isz)
        for j in range(1, nch):
            for m in range(M):
                yf[m] += pf[j * M + m]
    else:
        yd = <double *>c.dst
        pd = <const double *>c.partial
        memcpy(yd, pd, M * isz)
        for j in range(1, nch):
            for m in range(M):
                yd[m] += pd[j * M + m]
    _bias_act(isz, 1, M, c.dst, M, NULL if bn else a.bias,
              FL_ACT_NONE if bn else a.act)
    if bn:
        _dense_bn(s, 1, c.dst, 0, M)


cdef void _run_by_columns(RunCtx *c, int nthreads) noexcept nogil:
    """A small batch through large layers: one tile, each big dense step
    split across threads -- by output columns, or for one row on BLAS by
    chunks of weight rows (_gemv_by_chunks) -- everything else serial."""
    cdef const PlanData *d = c.d
    cdef int i, route
    cdef Py_ssize_t rows
    cdef const Step *s
    cdef char *work = c.scratch + c.work_off
    cdef char **bufs = c.bufs
    _point_bufs(d, c, 0, c.scratch, bufs)
    for i in range(d.nsteps):
        s = &d.steps[i]
        rows = c.n * s.a.dense.rows
        route = _dense_route(s, rows) if s.kind == STEP_DENSE else -1
        if route == ROUTE_BLAS and rows == 1:
            c.step = s
            c.src = bufs[s.src[0]]
            c.dst = bufs[s.dst]
            _gemv_by_chunks(c, s, nthreads)
        elif route == ROUTE_BLAS or route == ROUTE_PACKED:
            c.step = s
            c.src = bufs[s.src[0]]
            c.dst = bufs[s.dst]
            c.next_tile = 0
            fl_pool_run(_columns_job, c, nthreads)
        elif s.kind == STEP_DENSE_BF16 and _bf16_splits(s, c.n, nthreads):
            c.step = s
            c.src = bufs[s.src[0]]
            c.dst = bufs[s.dst]
            c.next_tile = 0
            fl_pool_run(_bf16_columns_job, c, nthreads)
        else:
            s.run(s, c.n, bufs, work)
    _copies(d, c, 0, c.n, bufs)


cdef class _StepCopy:
    """A plan's steps with some dense steps pointing at copies of their
    weights (Plan._step_copy_for); ``d`` is the plan's data over them."""

    def __dealloc__(self):
        free(self.steps)


cdef class Plan:
    """A compiled forward pass for one network, dtype and sample shapes.

    Built by the compiler (:mod:`fastlazy._compile`) from typed steps; holds
    raw pointers into parameter storage (and references that keep it
    alive).  Each parameter it reads is told about it, and invalidates it
    when its storage moves.
    """

    def __cinit__(self):
        self.d.steps = NULL
        self.d.buf_kind = NULL
        self.d.buf_index = NULL
        self.d.buf_param = NULL
        self.d.slot_size = NULL
        self.scratch = NULL
        self.scratch_bytes = 0
        self.scratch_busy = False
        self.stale = False
        self.follows_input_dtype = False
        self.pack_min_n = PY_SSIZE_T_MAX
        self.step_copy = None
        self.param_lo = NULL
        self.param_hi = NULL
        self.nparam_ranges = 0

    def __dealloc__(self):
        free(self.param_lo)
        free(self.param_hi)
        free(self.d.steps)
        free(self.d.buf_kind)
        free(self.d.buf_index)
        free(self.d.buf_param)
        free(self.d.slot_size)
        free(self.scratch)

    def __init__(self, list steps, list sizes, list inputs, list outputs,
                 list in_shapes, list out_shapes, dtype, dict params=None,
                 str where="forward", bint as_tuple=False):
        """``steps``: typed steps (fastlazy._steps) in execution order,
        already fused; ``sizes``: elements per sample of each buffer;
        ``inputs``/``outputs``: the buffers of the network's inputs and
        outputs, with their per-sample shapes in ``in_shapes`` and
        ``out_shapes``; ``params``: buffer -> Parameter for buffers that
        are a parameter's storage; ``where`` names the network in error
        messages."""
        cdef Step *s
        cdef int i
        cdef PlanData *d = &self.d
        cdef Parameter p
        params = params or {}
        self.dtype = np.dtype(dtype)
        self.where = where
        self.typenum = self.dtype.num
        d.itemsize = self.dtype.itemsize
        if not 1 <= len(inputs) <= FL_MAX_IO or \
                not 1 <= len(outputs) <= FL_MAX_IO:
            raise ShapeError(f"{where}: a compiled network takes 1 to "
                             f"{FL_MAX_IO} inputs and outputs, got "
                             f"{len(inputs)} and {len(outputs)}")
        self.in_shapes = tuple(tuple(int(v) for v in t) for t in in_shapes)
        self.out_shapes = tuple(tuple(int(v) for v in t) for t in out_shapes)
        # a tuple back for several outputs, or for one returned as a tuple
        self.multi_output = len(outputs) > 1 or as_tuple
        self.in_sample_shape = self.in_shapes[0]
        self.out_sample_shape = self.out_shapes[0]
        self.in_ndim = len(self.in_sample_shape) + 1
        if max(len(t) for t in self.in_shapes + self.out_shapes) + 1 > 32:
            raise ShapeError("fastlazy supports at most 32 dimensions")
        for i, dim in enumerate(self.in_sample_shape):
            self.in_dims[i + 1] = dim
        self.out_ndim = len(self.out_sample_shape) + 1
        for i, dim in enumerate(self.out_sample_shape):
            self.out_dims[i + 1] = dim
        d.nin = len(inputs)
        d.nout = len(outputs)
        for i in range(d.nin):
            d.in_sizes[i] = prod(self.in_shapes[i])
            if sizes[inputs[i]] != d.in_sizes[i]:
                raise RuntimeError(f"{where}: input {i} does not match its "
                                   f"buffer")
        for i in range(d.nout):
            d.out_sizes[i] = prod(self.out_shapes[i])
            if sizes[outputs[i]] != d.out_sizes[i]:
                raise RuntimeError(f"{where}: output {i} does not match its "
                                   f"buffer")
        kind, index, slot_size, inplace, copies = _layout(
            steps, sizes, inputs, outputs, params)
        self.keep = []
        d.nsteps = len(steps)
        d.nbufs = len(sizes)
        d.nslots = len(slot_size)
        d.ncopies = len(copies)
        for i, (k, b) in enumerate(copies):
            if b in params:
                raise ShapeError(f"{where}: output {k} is a parameter, not "
                                 f"a function of the input")
            d.copy_out[i] = k
            d.copy_from[i] = b
        d.steps = <Step *>malloc(max(1, d.nsteps) * sizeof(Step))
        d.buf_kind = <int *>malloc(max(1, d.nbufs) * sizeof(int))
        d.buf_index = <int *>malloc(max(1, d.nbufs) * sizeof(int))
        d.buf_param = <char **>malloc(max(1, d.nbufs) * sizeof(char *))
        d.slot_size = <Py_ssize_t *>malloc(max(1, d.nslots)
                                           * sizeof(Py_ssize_t))
        if d.steps == NULL or d.buf_kind == NULL or d.buf_index == NULL or \
                d.buf_param == NULL or d.slot_size == NULL:
            raise MemoryError()
        for i in range(d.nbufs):
            d.buf_kind[i] = kind[i]
            d.buf_index[i] = index[i]
            d.buf_param[i] = NULL
        for b, param in params.items():
            p = param
            if p._transposed:
                raise ShapeError(f"{where}: parameter {p.name} is stored "
                                 f"transposed (a Dense weight) and cannot be "
                                 f"read as an array operand")
            d.buf_param[b] = _param_ptr(p, self.dtype, self.keep)
        for i in range(d.nslots):
            d.slot_size[i] = slot_size[i]
        d.max_width = max([1] + list(slot_size)
                          + [d.in_sizes[i] for i in range(d.nin)]
                          + [d.out_sizes[i] for i in range(d.nout)])
        d.max_work = 0
        d.macs = 0
        d.dense_macs = 0
        for i, st in enumerate(steps):
            s = &d.steps[i]
            _fill_step(s, st, self.dtype, self.keep)
            if inplace[i]:
                s.dst = s.src[0]
            if s.in_size != sizes[st.inputs[0]] or \
                    s.out_size != sizes[st.dst]:
                raise RuntimeError(
                    f"{where}: plan step {i} ({type(st).__name__}) reads "
                    f"{s.in_size} and writes {s.out_size} values per sample; "
                    f"its buffers hold {sizes[st.inputs[0]]} and "
                    f"{sizes[st.dst]}")
            d.max_work = max(d.max_work, s.work)
            d.macs += s.macs
            # (layers a small batch runs split across the threads, each
            # product at once: float32, bfloat16 and int8 Dense)
            if s.kind == STEP_DENSE or s.kind == STEP_DENSE_BF16 or \
                    s.kind == STEP_QDENSE:
                d.dense_macs += s.macs
        for st in steps:
            for param in st.params():
                (<Parameter>param)._watch(self)
        for param in params.values():
            (<Parameter>param)._watch(self)
        self._note_packing()
        self._note_param_ranges()
        self.config_epoch = _config_epoch

    cdef void _note_packing(self):
        """pack_min_n: the smallest batch at which some dense step wants its
        packed weights (the route rules, fixed until the configuration
        epoch changes, are monotone in the rows: false below a threshold,
        true from it on); smaller calls skip _step_copy_for."""
        cdef int i
        cdef Py_ssize_t n
        cdef const Step *s
        for i in range(self.d.nsteps):
            s = &self.d.steps[i]
            if s.kind != STEP_DENSE:
                continue
            n = 1
            while n <= 4096 and n < self.pack_min_n:
                if _pack_layout(s, n * s.a.dense.rows) != PACK_NONE:
                    self.pack_min_n = n
                    break
                n = n + 1 if n < 8 else n * 2

    cdef int _note_param_ranges(self) except -1:
        """The byte ranges of the parameter storage the steps read."""
        cdef cnp.ndarray a
        arrs = [v for v in self.keep if isinstance(v, np.ndarray)
                and v.size > 0]
        self.param_lo = <char **>malloc(max(1, len(arrs)) * sizeof(char *))
        self.param_hi = <char **>malloc(max(1, len(arrs)) * sizeof(char *))
        if self.param_lo == NULL or self.param_hi == NULL:
            raise MemoryError()
        for a in arrs:
            _byte_bounds(a, &self.param_lo[self.nparam_ranges],
                         &self.param_hi[self.nparam_ranges])
            self.nparam_ranges += 1
        return 0

    def _invalidate(self):
        """Something this plan depends on changed: rebuild at the next call."""
        self.stale = True

    def follow_input_dtype(self):
        """A network without parameters: an input of the other float dtype
        does not fit this plan (the network is compiled for it anew)."""
        self.follows_input_dtype = True

    def is_current(self):
        """False once anything that matters to this plan has changed."""
        return not self.stale and self.config_epoch == _config_epoch

    @property
    def n_inputs(self):
        return self.d.nin

    @property
    def buffer_slots(self):
        """(slot of each scratch buffer, -1 for inputs, outputs and
        parameters; per-sample size of each slot) -- how the plan placed
        its intermediates."""
        return ([self.d.buf_index[i] if self.d.buf_kind[i] == BUF_SCRATCH
                 else -1 for i in range(self.d.nbufs)],
                [self.d.slot_size[i] for i in range(self.d.nslots)])

    cdef _StepCopy _step_copy_for(self, Py_ssize_t tile):
        """The steps of a call of up to ``tile`` rows per step, when some
        dense step runs on a copy of its weights (packed panels or (M, K)
        rows), else None (the plan's own steps are used): a _StepCopy whose
        steps point at the copies, made again first where the weights were
        written since.  The last one is kept and serves every later call
        of the same tile while its copies are current: a call takes a
        reference, so a newer one replacing it never frees steps that a
        running call reads."""
        cdef int i, layout
        cdef const Step *s
        cdef _StepCopy sc = self.step_copy
        cdef Parameter w
        cdef PackedWeights pw
        cdef bint any_copy = False
        if sc is not None and sc.tile == tile and sc.complete:
            # the same layouts as when it was made: are the copies current?
            for i in range(sc.nsteps):
                if sc.copies[i] is None:
                    continue
                w = <Parameter>sc.steps[i].a.dense.wparam
                pw = <PackedWeights>sc.copies[i]
                if w._live_views or pw is not w._packed or \
                        pw.version != w._version:
                    break
            else:
                return sc
        sc = _StepCopy.__new__(_StepCopy)
        sc.d = self.d
        sc.nsteps = self.d.nsteps
        sc.tile = tile
        sc.complete = True
        sc.steps = <Step *>malloc(self.d.nsteps * sizeof(Step))
        if sc.steps == NULL:
            raise MemoryError()
        memcpy(sc.steps, self.d.steps, self.d.nsteps * sizeof(Step))
        sc.d.steps = sc.steps
        sc.copies = [None] * self.d.nsteps
        for i in range(self.d.nsteps):
            s = &self.d.steps[i]
            if s.kind != STEP_DENSE:
                continue
            layout = _pack_layout(s, tile * s.a.dense.rows)
            if layout == PACK_NONE:
                continue
            w = <Parameter>s.a.dense.wparam
            if _PACK_MAX_BYTES >= 0 and \
                    s.a.dense.K * s.a.dense.M * s.itemsize > _PACK_MAX_BYTES:
                continue
            # while a data() view of a weight is alive its values may
            # change at any moment: that step reads the weights in place
            # (and the next call looks again)
            if w._live_views:
                sc.complete = False
                continue
            try:
                sc.steps[i].a.dense.packed = _packed_data(w, layout)
            except MemoryError:
                # the copy is an optimisation: without memory for it, the
                # step reads the weights in place
                sc.complete = False
                continue
            sc.steps[i].a.dense.packed_layout = layout
            sc.copies[i] = w._packed
            any_copy = True
        if not any_copy:
            return None
        self.step_copy = sc
        return sc

    cdef Py_ssize_t _tile_rows(self) noexcept:
        cdef Py_ssize_t t = _TILE_BYTES // (self.d.max_width * self.d.itemsize)
        if t < 64:
            t = 64
        elif t > 4096:
            t = 4096
        return t - t % 8

    cpdef object run(self, object x, object out=None):
        """Run on one input ``x``; None when ``x`` does not fit this plan
        (the caller then takes the slow path, which re-infers or raises).
        With ``out`` (checked by _check_out), the result is written there
        and ``out`` is returned."""
        cdef cnp.ndarray arr
        cdef cnp.ndarray res
        cdef Py_ssize_t n, i
        cdef RunCtx c
        if self.d.nin != 1:
            return None
        # the kernels and BLAS read the input through typed pointers: it
        # must be aligned too (a misaligned view is copied by coerce)
        if cnp.PyArray_CheckExact(x) and \
                cnp.PyArray_TYPE(<cnp.ndarray>x) == self.typenum and \
                cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>x) and \
                cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>x) and \
                cnp.PyArray_ISALIGNED(<cnp.ndarray>x):
            arr = <cnp.ndarray>x
        else:
            if self.follows_input_dtype and \
                    _input_float_dtype(x) != self.dtype:
                return None
            arr = self.coerce(x)
            if arr is None:
                return None
        if cnp.PyArray_NDIM(arr) != self.in_ndim:
            return None
        for i in range(1, self.in_ndim):
            if cnp.PyArray_DIM(arr, i) != self.in_dims[i]:
                return None
        if self.multi_output:
            return self._run((arr,), out) if arr is x else \
                self._run((arr,), out, (x,))
        n = cnp.PyArray_DIM(arr, 0)
        if out is None:
            self.out_dims[0] = n
            res = cnp.PyArray_EMPTY(self.out_ndim,
                                    <cnp.npy_intp *>self.out_dims,
                                    self.typenum, 0)
        else:
            self._check_out(out, -1, n, arr, None if arr is x else (x,))
            res = <cnp.ndarray>out
        if n == 0:
            return res
        c.xs[0] = <const char *>cnp.PyArray_DATA(arr)
        c.outs[0] = <char *>cnp.PyArray_DATA(res)
        self._execute(&c, n)
        return res

    cdef object _run(self, tuple args, object out=None, tuple given=None):
        """Run on one array per input; None when they do not fit.  ``out``:
        as for run (a tuple of arrays when the plan returns a tuple);
        ``given``: the caller's inputs when ``args`` are conversions of
        them (out= must not overlap either)."""
        cdef RunCtx c
        cdef Py_ssize_t n = -1, i
        cdef cnp.ndarray arr
        cdef tuple inputs
        if len(args) != self.d.nin:
            return None
        arrs = []
        for k, x in enumerate(args):
            arr = self.coerce(x)
            if arr is None or arr.ndim != len(self.in_shapes[k]) + 1 or \
                    tuple((<object>arr).shape[1:]) != self.in_shapes[k]:
                return None
            if n < 0:
                n = cnp.PyArray_DIM(arr, 0)
            elif cnp.PyArray_DIM(arr, 0) != n:
                raise ShapeError(
                    f"{self.where}: the inputs must share their batch size; "
                    f"input 0 has {n} rows, input {k} has "
                    f"{cnp.PyArray_DIM(arr, 0)}")
            arrs.append(arr)
            c.xs[k] = <const char *>cnp.PyArray_DATA(arr)
        if out is None:
            outs = [np.empty((n,) + shape, dtype=self.dtype)
                    for shape in self.out_shapes]
        else:
            inputs = args + (given or ())
            if not self.multi_output:
                self._check_out(out, -1, n, None, inputs)
                outs = [out]
            else:
                if not isinstance(out, (tuple, list)) or \
                        len(out) != self.d.nout:
                    check_out_shapes(out, [(n,) + sh for sh in
                                           self.out_shapes], True,
                                     self.dtype, self.where)
                outs = list(out)
                for i in range(self.d.nout):
                    self._check_out(outs[i], i, n, None, inputs)
                for i in range(self.d.nout):
                    for k in range(i):
                        if _arrays_overlap(<cnp.ndarray>outs[i],
                                           <cnp.ndarray>outs[k]):
                            raise OutputError(
                                f"{self.where}: out[{k}] and out[{i}] share "
                                f"memory; each output needs its own array")
        for i in range(self.d.nout):
            c.outs[i] = <char *>cnp.PyArray_DATA(<cnp.ndarray>outs[i])
        if n > 0:
            self._execute(&c, n)
        if out is not None and self.multi_output:
            return out if isinstance(out, tuple) else tuple(out)
        return tuple(outs) if self.multi_output else outs[0]

    def run_many(self, *args, out=None):
        """Run on one array per input (``net(x, y)``); a tuple when the
        network has several outputs.  None when the inputs do not fit."""
        return self._run(args, out)

    cdef int _check_out(self, object out, int k, Py_ssize_t n,
                        cnp.ndarray arr, tuple inputs) except -1:
        """Raise OutputError unless ``out`` can take output ``k`` (-1: the
        only one) of a call on ``n`` samples: an ndarray of the plan's
        dtype and shape, C-contiguous, aligned, writable, sharing no
        memory with the input ``arr`` (C-contiguous, or None), with
        ``inputs`` (the caller's own, when ``arr`` converts them, or the
        arrays of a call with several) or with the parameters the plan
        reads."""
        cdef cnp.ndarray a
        cdef char *lo
        cdef char *hi
        cdef int i, j = 0 if k < 0 else k
        cdef bint ok = cnp.PyArray_Check(out)
        if ok:
            a = <cnp.ndarray>out
            ok = cnp.PyArray_TYPE(a) == self.typenum and \
                cnp.PyArray_ISNOTSWAPPED(a) and \
                cnp.PyArray_IS_C_CONTIGUOUS(a) and \
                cnp.PyArray_ISALIGNED(a) and cnp.PyArray_ISWRITEABLE(a) and \
                cnp.PyArray_NDIM(a) == len(self.out_shapes[j]) + 1 and \
                cnp.PyArray_DIM(a, 0) == n
            if ok and j == 0:
                for i in range(1, self.out_ndim):
                    if cnp.PyArray_DIM(a, i) != self.out_dims[i]:
                        ok = False
            elif ok:
                ok = tuple((<object>a).shape[1:]) == self.out_shapes[j]
        if not ok:
            # says what is wrong
            if k < 0:
                check_out_shapes(out, [(n,) + self.out_shapes[0]], False,
                                 self.dtype, self.where)
            else:
                _check_out_array(out, (n,) + self.out_shapes[j], self.dtype,
                                 self.where, f"out[{k}]")
            raise OutputError(f"{self.where}: out cannot take the result")
        if cnp.PyArray_SIZE(a) == 0:
            return 0
        # both C-contiguous: their byte ranges meet only if they share memory
        lo = cnp.PyArray_BYTES(a)
        hi = lo + cnp.PyArray_NBYTES(a)
        if arr is not None and cnp.PyArray_SIZE(arr) > 0 and \
                lo < cnp.PyArray_BYTES(arr) + cnp.PyArray_NBYTES(arr) and \
                cnp.PyArray_BYTES(arr) < hi:
            inputs = (arr,)
        if inputs is not None:
            for x in inputs:
                if cnp.PyArray_Check(x) and \
                        _arrays_overlap(a, <cnp.ndarray>x):
                    raise OutputError(
                        f"{self.where}: {'out' if k < 0 else f'out[{k}]'} "
                        f"shares memory with the input; the network reads "
                        f"its input while it writes the output, so they "
                        f"must be separate arrays")
        for i in range(self.nparam_ranges):
            if lo < self.param_hi[i] and self.param_lo[i] < hi:
                raise OutputError(
                    f"{self.where}: {'out' if k < 0 else f'out[{k}]'} shares "
                    f"memory with a parameter of the network")
        return 0

    cdef int _execute(self, RunCtx *c, Py_ssize_t n) except -1:
        """Run every step on ``n`` samples of c.xs into c.outs."""
        cdef Py_ssize_t i, need, off, isz = self.d.itemsize
        cdef int nthreads = 1
        cdef bint by_columns = False
        cdef bint own_scratch = False
        cdef Py_ssize_t off_local[16]
        cdef char *bufs_local[64]
        cdef _StepCopy sc = None     # steps on copies of the weights
        c.d = &self.d
        c.n = n
        c.next_tile = 0
        c.tile = self._tile_rows()
        if _num_threads > 1 and n * self.d.macs >= _PAR_MACS:
            nthreads = _num_threads
            if n < 2 * c.tile and 2 * self.d.dense_macs >= self.d.macs:
                by_columns = True
                c.tile = n
            elif n < 2 * c.tile:
                # mostly convolutions, which do not split by columns:
                # share the samples out instead (one alone runs serially)
                c.tile = (n + nthreads - 1) // nthreads
                if n < nthreads:
                    nthreads = <int>n
        if c.tile > n:
            c.tile = n
        # small tables on the stack; a large graph's on the heap
        c.slot_off = off_local
        c.bufs = bufs_local
        if self.d.nslots > 16:
            c.slot_off = <Py_ssize_t *>malloc(self.d.nslots
                                              * sizeof(Py_ssize_t))
        if nthreads * self.d.nbufs > 64:
            c.bufs = <char **>malloc(nthreads * self.d.nbufs
                                     * sizeof(char *))
        if c.slot_off == NULL or c.bufs == NULL:
            _free_tables(c, off_local, bufs_local)
            raise MemoryError()
        off = 0
        for i in range(self.d.nslots):
            c.slot_off[i] = off
            off += (c.tile * self.d.slot_size[i] * isz + 63) & ~63
        c.work_off = off
        c.thread_bytes = off + ((self.d.max_work + 63) & ~63)
        need = c.thread_bytes * (1 if by_columns else nthreads)
        c.partial = NULL
        c.nchunks = 0
        if by_columns:
            # the partial outputs of a one-row layer split along k: a few
            # chunks a thread, so a thread that wakes late finds work left
            # and one that runs slowly holds up the end by one chunk
            c.nchunks = 4 * nthreads
            need += (c.nchunks * self.d.max_width * isz + 63) & ~63
        if self.scratch_busy or need > self.scratch_bytes:
            c.scratch = <char *>aligned_alloc(64, max(64, need))
            if c.scratch == NULL:
                _free_tables(c, off_local, bufs_local)
                raise MemoryError(f"{self.where}: cannot allocate a "
                                  f"{need}-byte workspace for a batch of "
                                  f"{n}; score it in smaller chunks")
            if self.scratch_busy:
                own_scratch = True
            else:
                free(self.scratch)
                self.scratch = c.scratch
                self.scratch_bytes = need
        else:
            c.scratch = self.scratch
        if by_columns:
            c.partial = c.scratch + c.thread_bytes
        if not own_scratch:
            self.scratch_busy = True
        try:
            if c.tile >= self.pack_min_n:
                sc = self._step_copy_for(c.tile)
        except BaseException:
            if own_scratch:
                free(c.scratch)
            else:
                self.scratch_busy = False
            _free_tables(c, off_local, bufs_local)
            raise
        if sc is not None:
            c.d = &sc.d
        if nthreads == 1 and n * self.d.macs < _NOGIL_MACS:
            _run_serial(c)      # see _NOGIL_MACS
        else:
            with nogil:
                if by_columns:
                    _run_by_columns(c, nthreads)
                elif nthreads > 1:
                    fl_pool_run(_tiles_job, c, nthreads)
                else:
                    _run_serial(c)
        if own_scratch:
            free(c.scratch)
        else:
            self.scratch_busy = False
        _free_tables(c, off_local, bufs_local)
        return 0

    cdef cnp.ndarray coerce(self, object x):
        """``x`` as a C-ordered, aligned, native array of the plan's dtype,
        or None for what the plan cannot take (a traced value)."""
        if isinstance(x, _Traced):
            return None
        arr = as_numeric_array(x, self.where)
        # C order, native byte order, aligned (ascontiguousarray would keep
        # a misaligned array as it is)
        return np.require(arr, dtype=self.dtype, requirements="CA")


cdef object _input_float_dtype(object x):
    """The dtype a network without parameters computes ``x`` in: its own
    float32/float64 (native order), float32 for other arrays, None for
    what is not an array yet (the slow path converts it first)."""
    if not cnp.PyArray_Check(x):
        return None
    dt = (<cnp.ndarray>x).dtype
    if dt.kind == "f" and dt.itemsize in (4, 8):
        return np.dtype(np.float32) if dt.itemsize == 4 \
            else np.dtype(np.float64)
    return np.dtype(np.float32)


cdef inline void _free_tables(RunCtx *c, Py_ssize_t *off_local,
                              char **bufs_local) noexcept:
    if c.slot_off != off_local:
        free(c.slot_off)
    if c.bufs != bufs_local:
        free(c.bufs)


# Values being traced through a network (fastlazy.ops.Sym) are not arrays:
# a plan never runs on them, the slow path traces the block instead.
_Traced = ()


def set_traced_type(cls):
    """Register the class of traced values (called by fastlazy.ops)."""
    global _Traced
    _Traced = cls


@cython.auto_pickle(False)
cdef class CompiledCall:
    """The base of :class:`fastlazy.block.Block`: ``block(x)``.

    ``__call__`` is this type's C call slot, so ``block(x)`` reaches the
    block's current plan without a Python frame or an attribute lookup by
    name (``_plan`` is a C member): when the plan is current and ``x``
    fits it (a C-contiguous array of the plan's dtype and sample shape, or
    anything it converts), it is one compiled call; otherwise the block's
    ``_call_slow`` (shape inference, deferred initialization, plan
    building, tracing, hooks, or plain Python).

    ``out``: an array (a tuple of arrays for a network that returns a
    tuple) to write the result into instead of a new one; it is checked
    first (dtype, shape, C order, writable, no memory shared with the
    inputs or parameters: :class:`~fastlazy.errors.OutputError`) and
    returned.
    """

    # the compiled plan of block(x); None until the first call (see
    # fastlazy._compile.call_slow)
    cdef public Plan _plan

    def __call__(self, *args, out=None):
        # *args: the call's own tuple, not a slice of it
        cdef Plan plan = self._plan
        cdef object res
        cdef Py_ssize_t nargs = len(args)
        if plan is not None and not plan.stale and \
                plan.config_epoch == _config_epoch:
            if nargs == 1:
                res = plan.run(<object>args[0], out)
            elif nargs:
                res = plan._run(args, out)
            else:
                res = None
            if res is not None:
                return res
        if not nargs:
            raise TypeError(f"{type(self).__name__}.__call__() needs an "
                            f"input: block(x)")
        if out is None:
            return self._call_slow(*args)
        return self._call_slow(*args, out=out)


def deliver(result, out, inputs, where):
    """Write ``result`` (an array, or a tuple of them), computed without
    ``out`` by the eager path, into ``out`` after the checks a plan makes
    (OutputError), and return ``out``.  ``inputs``: the call's inputs,
    which ``out`` must not overlap."""
    if isinstance(result, tuple):
        res = [np.asarray(r) for r in result]
        check_out_shapes(out, [r.shape for r in res], True,
                         [r.dtype for r in res], where)
    else:
        res = [np.asarray(result)]
        check_out_shapes(out, [res[0].shape], False, res[0].dtype, where)
    check_apart(out, inputs, where)
    outs = list(out) if isinstance(result, tuple) else [out]
    for o, r in zip(outs, res):
        np.copyto(o, r)
    if isinstance(result, tuple):
        return out if isinstance(out, tuple) else tuple(out)
    return out


def check_out_shapes(out, shapes, multi, dtype, where):
    """Raise OutputError unless ``out`` can take outputs of ``shapes``
    (with the batch axis) and ``dtype`` (one, or one per output): one
    array, or for a network returning a tuple (``multi``) a tuple of
    them, each C-contiguous, aligned and writable, and none sharing
    memory with another."""
    cdef Py_ssize_t i, k
    dtypes = dtype if isinstance(dtype, list) else [dtype] * len(shapes)
    if not multi:
        if isinstance(out, (tuple, list)):
            raise OutputError(
                f"{where}: the network returns one array, so out must be a "
                f"NumPy array of shape {tuple(shapes[0])}, got "
                f"{_describe(out)}")
        _check_out_array(out, tuple(shapes[0]), dtypes[0], where, "out")
        return
    if not isinstance(out, (tuple, list)) or len(out) != len(shapes):
        raise OutputError(
            f"{where}: the network returns a tuple of {len(shapes)} arrays, "
            f"so out must be a tuple of {len(shapes)} arrays of shapes "
            f"{[tuple(s) for s in shapes]}, got {_describe(out)}")
    for i in range(len(shapes)):
        _check_out_array(out[i], tuple(shapes[i]), dtypes[i], where,
                         f"out[{i}]")
    for i in range(len(shapes)):
        for k in range(i):
            if _arrays_overlap(<cnp.ndarray>out[i], <cnp.ndarray>out[k]):
                raise OutputError(f"{where}: out[{k}] and out[{i}] share "
                                  f"memory; each output needs its own array")


def check_apart(out, inputs, where):
    """Raise OutputError if an array of ``out`` (one, or a tuple) shares
    memory with one of ``inputs``."""
    outs = out if isinstance(out, (tuple, list)) else (out,)
    for i, o in enumerate(outs):
        if not isinstance(o, np.ndarray):
            continue
        for x in inputs:
            if isinstance(x, np.ndarray) and \
                    _arrays_overlap(<cnp.ndarray>o, <cnp.ndarray>x):
                name = "out" if o is out else f"out[{i}]"
                raise OutputError(
                    f"{where}: {name} shares memory with the input; the "
                    f"network reads its input while it writes the output, "
                    f"so they must be separate arrays")


cdef int _check_out_array(object out, tuple shape, object dtype, str where,
                          str name) except -1:
    """Raise OutputError unless ``out`` is an ndarray of ``shape`` and
    ``dtype``, C-contiguous, aligned and writable."""
    cdef cnp.ndarray a
    dtype = np.dtype(dtype)
    if not cnp.PyArray_Check(out):
        raise OutputError(f"{where}: {name} must be a NumPy array of shape "
                          f"{shape} and dtype {dtype}, got {_describe(out)}")
    a = <cnp.ndarray>out
    if a.dtype != dtype or not cnp.PyArray_ISNOTSWAPPED(a):
        raise OutputError(f"{where}: {name} must have the result's dtype "
                          f"{dtype}, got {a.dtype}; allocate it with "
                          f"np.empty({shape}, dtype={dtype.name!r})")
    if (<object>a).shape != shape:
        raise OutputError(f"{where}: {name} must have shape {shape} (the "
                          f"result's, for an input of {shape[0]} rows), got "
                          f"{(<object>a).shape}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise OutputError(f"{where}: {name} must be C-contiguous, got a "
                          f"strided view; pass an array from np.empty, or a "
                          f"contiguous slice of one")
    if not cnp.PyArray_ISALIGNED(a):
        raise OutputError(f"{where}: {name} is not aligned to its dtype")
    if not cnp.PyArray_ISWRITEABLE(a):
        raise OutputError(f"{where}: {name} is read-only")
    return 0


_TooHardError = np.exceptions.TooHardError if hasattr(np, "exceptions") \
    else np.TooHardError


cdef str _describe(object v):
    if isinstance(v, np.ndarray):
        return f"an array of shape {v.shape} and dtype {v.dtype}"
    if isinstance(v, (tuple, list)):
        return f"a {type(v).__name__} of {len(v)}"
    return type(v).__name__


cdef void _byte_bounds(cnp.ndarray a, char **lo, char **hi) noexcept:
    """The bytes [lo, hi) that ``a`` spans (lo == hi when it is empty)."""
    cdef char *l = cnp.PyArray_BYTES(a)
    cdef char *h = l
    cdef Py_ssize_t ext
    cdef int i
    for i in range(cnp.PyArray_NDIM(a)):
        if cnp.PyArray_DIM(a, i) == 0:
            lo[0] = hi[0] = l
            return
        ext = (cnp.PyArray_DIM(a, i) - 1) * cnp.PyArray_STRIDE(a, i)
        if ext < 0:
            l += ext
        else:
            h += ext
    lo[0] = l
    hi[0] = h + cnp.PyArray_ITEMSIZE(a)


cdef bint _arrays_overlap(cnp.ndarray a, cnp.ndarray b) except -1:
    """Whether ``a`` and ``b`` share an element's memory: their byte
    ranges, then (for strided arrays whose ranges meet) NumPy's exact
    test; a problem too hard for it counts as overlapping."""
    cdef char *alo
    cdef char *ahi
    cdef char *blo
    cdef char *bhi
    _byte_bounds(a, &alo, &ahi)
    _byte_bounds(b, &blo, &bhi)
    if alo == ahi or blo == bhi or not (alo < bhi and blo < ahi):
        return False
    if (cnp.PyArray_IS_C_CONTIGUOUS(a) or cnp.PyArray_IS_F_CONTIGUOUS(a)) \
            and (cnp.PyArray_IS_C_CONTIGUOUS(b)
                 or cnp.PyArray_IS_F_CONTIGUOUS(b)):
        return True
    try:
        return bool(np.shares_memory(a, b, max_work=1 << 20))
    except _TooHardError:
        return True


# ---------------------------------------------------------------------------
# Test twins: each kernel route on its own, checked against NumPy by tests

def dense_kernel(x, wt, b, int act, route):
    """Test twin of the dense step: ``act(x @ wt + b)``, x (n, K), wt (K, M).

    ``route``: 'own' (the small kernel; also False), 'blas' (also True),
    'packed' (wt packed first) or 'dot' (wt copied to (M, K) rows first).  Arrays must share a float dtype.  The
    route is this call's own (a field of its step), never a global.
    """
    cdef Step s
    cdef cnp.ndarray xa = np.ascontiguousarray(x)
    cdef cnp.ndarray wa
    cdef cnp.ndarray ba
    cdef cnp.ndarray pk
    cdef cnp.ndarray out
    cdef Py_ssize_t n, nr
    cdef char *bufs[2]
    cdef int want
    if route is False or route == "own":
        want = ROUTE_SMALL
    elif route is True or route == "blas":
        want = ROUTE_BLAS
    elif route == "packed":
        want = ROUTE_PACKED
    elif route == "dot":
        want = ROUTE_DOT
    else:
        raise ValueError(f"dense_kernel: route must be 'own', 'blas', "
                         f"'packed' or 'dot', got {route!r}")
    if xa.dtype not in (np.float32, np.float64) or xa.ndim != 2:
        raise ValueError("dense_kernel: need float x of shape (n, K)")
    wa = np.ascontiguousarray(wt, dtype=xa.dtype)
    if wa.ndim != 2 or wa.shape[0] != xa.shape[1]:
        raise ValueError("dense_kernel: wt must have shape (K, M)")
    n = xa.shape[0]
    out = np.empty((n, wa.shape[1]), dtype=xa.dtype)
    memset(&s, 0, sizeof(Step))
    s.itemsize = xa.dtype.itemsize
    s.nsrc = 1
    s.src[0] = 0
    s.dst = 1
    s.a.dense.act = act
    s.a.dense.route = want
    s.a.dense.rows = 1
    s.a.dense.K = wa.shape[0]
    s.a.dense.M = wa.shape[1]
    s.a.dense.w = <char *>cnp.PyArray_DATA(wa)
    if b is not None:
        ba = np.ascontiguousarray(b, dtype=xa.dtype)
        if ba.ndim != 1 or ba.shape[0] != s.a.dense.M:
            raise ValueError("dense_kernel: bias must have shape (M,)")
        s.a.dense.bias = <char *>cnp.PyArray_DATA(ba)
    if want == ROUTE_PACKED:
        nr = fl_kt.nr_f32 if s.itemsize == 4 else fl_kt.nr_f64
        # one spare panel after the end: reads past it would show up as
        # wrong values in the tests rather than pass silently
        pk = np.full(((s.a.dense.M + nr - 1) // nr + 1) * nr * s.a.dense.K,
                     np.nan, dtype=xa.dtype)
        s.a.dense.packed_layout = PACK_PANELS
    elif want == ROUTE_DOT:
        # one spare row after the end, NaN: reads past it would show
        pk = np.full((s.a.dense.M + 1) * s.a.dense.K, np.nan, dtype=xa.dtype)
        s.a.dense.packed_layout = PACK_ROWS
    if want == ROUTE_PACKED or want == ROUTE_DOT:
        _pack_into(s.a.dense.packed_layout, s.a.dense.K, s.a.dense.M,
                   s.itemsize, s.a.dense.w, <char *>cnp.PyArray_DATA(pk))
        s.a.dense.packed = <char *>cnp.PyArray_DATA(pk)
    bufs[0] = <char *>cnp.PyArray_DATA(xa)
    bufs[1] = <char *>cnp.PyArray_DATA(out)
    with nogil:
        _step_dense(&s, n, bufs, NULL)
    return out


# Test twin of the kernel table (tests/test_kernel_table.py).  It exists
# only so the tests can call every fl_kt entry that takes an activation at
# the level set_isa chose; it moves with the table's callers.

cdef void *_twin_ptr(a, dtype, Py_ssize_t size, str what) except NULL:
    if not isinstance(a, np.ndarray) or a.dtype != dtype \
            or not a.flags.c_contiguous or a.size != size:
        raise ValueError(f"kernel_table: {what} must be a C-contiguous "
                         f"{dtype} array of {size} values")
    return cnp.PyArray_DATA(<cnp.ndarray>a)


def kernel_table(str op, cnp.ndarray y, int act, a=None, b=None, c=None):
    """Run ``fl_kt.<op>_f32/f64`` (by ``y``'s dtype) in place on ``y``.

    ``op`` and its arrays (C-contiguous, ``y``'s dtype; None = NULL where
    the kernel allows it):

    * ``'act'``: y = act(y)
    * ``'bias_act'``: y (n, M) = act(y + a), a bias (M,)
    * ``'chan_epilogue'``: y (O, N) = act(y * a[o] + b[o]), a, b (O,)
    * ``'chan_affine'``: y (outer, C, inner) = act(y * a[c] + b[c])
    * ``'dense'``: y (n, M) = act(a @ b + c), a (n, K), b (K, M), c (M,)
    * ``'packed'``: the same product, through pack + gemm_packed
    * ``'dot'``: the same product, through pack_rows + dense_dot
    * ``'gemm_ab'``: y (M, N) = a (M, K) @ b (K, N), buffer of gemm_ab_buf

    Returns ``y``.
    """
    cdef bint f32 = y.dtype == np.float32
    cdef object dt = y.dtype
    cdef Py_ssize_t n, M, K, nr
    cdef void *yp
    cdef void *ap = NULL
    cdef void *bp = NULL
    cdef void *cp = NULL
    cdef cnp.ndarray tmp
    if dt not in (np.float32, np.float64) or not y.flags.c_contiguous:
        raise ValueError("kernel_table: y must be C-contiguous float32/64")
    yp = cnp.PyArray_DATA(y)
    if op == "act":
        if f32:
            fl_kt.act_f32(<float *>yp, y.size, act)
        else:
            fl_kt.act_f64(<double *>yp, y.size, act)
    elif op in ("bias_act", "chan_epilogue", "chan_affine"):
        n = y.shape[0]
        M = y.size // n if n else 0
        if op == "chan_affine":
            M = y.shape[1]
        if a is not None:
            ap = _twin_ptr(a, dt, n if op == "chan_epilogue" else M, "a")
        if b is not None:
            bp = _twin_ptr(b, dt, n if op == "chan_epilogue" else M, "b")
        if op == "bias_act":
            if f32:
                fl_kt.bias_act_f32(n, M, <float *>yp, M, <float *>ap, act)
            else:
                fl_kt.bias_act_f64(n, M, <double *>yp, M, <double *>ap, act)
        elif op == "chan_epilogue":
            if f32:
                fl_kt.chan_epilogue_f32(n, M, <float *>yp, M, <float *>yp, M,
                                        <float *>ap, <float *>bp, act)
            else:
                fl_kt.chan_epilogue_f64(n, M, <double *>yp, M, <double *>yp,
                                        M, <double *>ap, <double *>bp, act)
        else:
            if ap == NULL or bp == NULL:
                raise ValueError("kernel_table: chan_affine needs a and b")
            if f32:
                fl_kt.chan_affine_f32(n, M, y.shape[2], <float *>yp,
                                      <float *>yp, <float *>ap, <float *>bp,
                                      act)
            else:
                fl_kt.chan_affine_f64(n, M, y.shape[2], <double *>yp,
                                      <double *>yp, <double *>ap,
                                      <double *>bp, act)
    elif op in ("dense", "packed", "dot", "gemm_ab"):
        n, M = y.shape[0], y.shape[1]
        K = a.shape[1]
        ap = _twin_ptr(a, dt, n * K, "a")
        bp = _twin_ptr(b, dt, K * M, "b")
        if c is not None:
            cp = _twin_ptr(c, dt, M, "c")
        if op == "dense":
            if f32:
                fl_kt.dense_f32(n, K, M, <float *>ap, K, <float *>bp,
                                <float *>cp, <float *>yp, M, act)
            else:
                fl_kt.dense_f64(n, K, M, <double *>ap, K, <double *>bp,
                                <double *>cp, <double *>yp, M, act)
        elif op == "packed":
            nr = fl_kt.nr_f32 if f32 else fl_kt.nr_f64
            tmp = np.empty((M + nr - 1) // nr * nr * K, dtype=dt)
            if f32:
                fl_kt.pack_f32(K, M, <float *>bp, <float *>cnp.PyArray_DATA(tmp))
                fl_kt.gemm_packed_f32(n, K, M, <float *>ap, K,
                                      <float *>cnp.PyArray_DATA(tmp), 0,
                                      (M + nr - 1) // nr, <float *>cp,
                                      <float *>yp, M, act)
            else:
                fl_kt.pack_f64(K, M, <double *>bp, <double *>cnp.PyArray_DATA(tmp))
                fl_kt.gemm_packed_f64(n, K, M, <double *>ap, K,
                                      <double *>cnp.PyArray_DATA(tmp), 0,
                                      (M + nr - 1) // nr, <double *>cp,
                                      <double *>yp, M, act)
        elif op == "dot":
            tmp = np.empty(M * K, dtype=dt)
            if f32:
                fl_kt.pack_rows_f32(K, M, <float *>bp,
                                    <float *>cnp.PyArray_DATA(tmp))
                fl_kt.dense_dot_f32(n, K, M, <float *>ap, K,
                                    <float *>cnp.PyArray_DATA(tmp),
                                    <float *>cp, <float *>yp, M, act)
            else:
                fl_kt.pack_rows_f64(K, M, <double *>bp,
                                    <double *>cnp.PyArray_DATA(tmp))
                fl_kt.dense_dot_f64(n, K, M, <double *>ap, K,
                                    <double *>cnp.PyArray_DATA(tmp),
                                    <double *>cp, <double *>yp, M, act)
        else:
            tmp = np.empty(fl_kt.gemm_ab_buf_f32(K) if f32
                           else fl_kt.gemm_ab_buf_f64(K), dtype=np.uint8)
            if f32:
                fl_kt.gemm_ab_f32(n, M, K, <float *>ap, K, <float *>bp, M,
                                  <float *>yp, M, <float *>cnp.PyArray_DATA(tmp))
            else:
                fl_kt.gemm_ab_f64(n, M, K, <double *>ap, K, <double *>bp, M,
                                  <double *>yp, M, <double *>cnp.PyArray_DATA(tmp))
    else:
        raise ValueError(f"kernel_table: unknown op {op!r}")
    return y


def dwconv_kernel(cnp.ndarray x, cnp.ndarray w, stride, padding, dilation,
                  scale=None, shift=None, int act=0, Py_ssize_t guard=0):
    """Test twin of ``fl_kt.dwconv_f32/f64`` (by ``x``'s dtype): the
    depthwise convolution of one sample.

    ``x`` (C, H, W) and ``w`` (C, kh, kw) C-contiguous, ``scale`` and
    ``shift`` (C,) or None; ``stride``, ``padding``, ``dilation`` pairs.
    Returns ``guard`` + C*OH*OW values, the output (C, OH, OW) flattened
    then ``guard`` NaN the kernel must leave alone.  The kernel's scratch
    is exactly ``dwconv_buf`` bytes followed by a guard band; a write past
    it raises RuntimeError.
    """
    cdef object dt = x.dtype
    cdef bint f32 = dt == np.float32
    cdef Py_ssize_t C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW, nbuf
    cdef void *sp = NULL
    cdef void *tp = NULL
    cdef cnp.ndarray y, buf
    if dt not in (np.float32, np.float64) or x.ndim != 3 or w.ndim != 3 \
            or not x.flags.c_contiguous:
        raise ValueError("dwconv_kernel: x must be a C-contiguous (C, H, W) "
                         "float32/64 array and w (C, kh, kw)")
    C, H, W = x.shape[0], x.shape[1], x.shape[2]
    kh, kw = w.shape[1], w.shape[2]
    _twin_ptr(w, dt, C * kh * kw, "w")
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    OH = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    OW = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if OH < 1 or OW < 1:
        raise ValueError("dwconv_kernel: empty output")
    if scale is not None:
        sp = _twin_ptr(scale, dt, C, "scale")
    if shift is not None:
        tp = _twin_ptr(shift, dt, C, "shift")
    y = np.full(C * OH * OW + guard, np.nan, dtype=dt)
    nbuf = <Py_ssize_t>(fl_kt.dwconv_buf_f32(kh, kw, sh, sw, dh, dw, OH, OW)
                        if f32 else
                        fl_kt.dwconv_buf_f64(kh, kw, sh, sw, dh, dw, OH, OW))
    buf = np.full(nbuf + 256, 0xA5, dtype=np.uint8)
    if f32:
        fl_kt.dwconv_f32(<float *>cnp.PyArray_DATA(x),
                         <float *>cnp.PyArray_DATA(w),
                         <float *>cnp.PyArray_DATA(y), C, H, W, kh, kw, sh,
                         sw, ph, pw, dh, dw, OH, OW, <float *>sp,
                         <float *>tp, act, <float *>cnp.PyArray_DATA(buf))
    else:
        fl_kt.dwconv_f64(<double *>cnp.PyArray_DATA(x),
                         <double *>cnp.PyArray_DATA(w),
                         <double *>cnp.PyArray_DATA(y), C, H, W, kh, kw, sh,
                         sw, ph, pw, dh, dw, OH, OW, <double *>sp,
                         <double *>tp, act, <double *>cnp.PyArray_DATA(buf))
    if np.any(buf[nbuf:] != 0xA5):
        raise RuntimeError(f"dwconv_kernel: the kernel wrote past its "
                           f"{nbuf}-byte scratch")
    return y
