# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, embedsignature=True
"""The compiled core of fastlazy.

Two things live here, in one extension module so they share one C-level
*structure epoch* without a Python call:

* :class:`Parameter` -- the deferred-initialization state machine
  (unset -> deferred -> initialized), a shape that can be completed but never
  changed, and storage that is allocated once and then only written in place.
* :class:`Plan` -- the compiled forward plan of a network whose shapes are
  known: a C array of steps holding raw weight pointers, two scratch
  workspaces that grow only with the batch, and one ``nogil`` run that walks
  the batch in row tiles so every intermediate stays in cache.

Any change that moves a weight pointer or changes a network's structure
bumps the epoch; a plan built under an older epoch is rebuilt on its next
call.  Writing into ``Parameter.data()`` or calling ``set_data`` never moves
storage, so those writes are seen by the next call without a rebuild.
"""

import warnings

import numpy as np

cimport numpy as cnp
from cpython.object cimport PyObject
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from fastlazy._blas cimport (
    CblasNoTrans, CblasRowMajor, CblasTrans, blas_int, cblas_dgemm,
    cblas_dgemv, cblas_sgemm, cblas_sgemv, openblas_get_config,
    openblas_get_corename, openblas_get_num_threads, openblas_set_num_threads,
)
from fastlazy._kernels cimport (
    FL_ACT_GELU, FL_ACT_NONE, FL_ACT_RELU, FL_ACT_SIGMOID, FL_ACT_SILU,
    FL_ACT_SOFTRELU, FL_ACT_SOFTSIGN, FL_ACT_TANH, fl_act_f32, fl_act_f64,
    fl_kernels_init, fl_kernels_isa, fl_kt,
)

from . import initializers as _init
from . import random as _random
from .errors import DeferredInitializationError, ShapeError


cdef extern from "<stdlib.h>" nogil:
    void *aligned_alloc(size_t alignment, size_t size)

cnp.import_array()

# ---------------------------------------------------------------------------
# Structure epoch

cdef unsigned long long _epoch = 1


cdef inline void _bump_epoch() noexcept:
    global _epoch
    _epoch += 1


def bump_epoch():
    """Invalidate every compiled plan (a network's structure changed)."""
    _bump_epoch()


# ---------------------------------------------------------------------------
# Activations

ACTIVATIONS = {
    None: FL_ACT_NONE, 'relu': FL_ACT_RELU, 'sigmoid': FL_ACT_SIGMOID,
    'tanh': FL_ACT_TANH, 'softrelu': FL_ACT_SOFTRELU,
    'softsign': FL_ACT_SOFTSIGN, 'gelu': FL_ACT_GELU, 'silu': FL_ACT_SILU,
}


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


def apply_activation(cnp.ndarray arr, int code):
    """Apply activation ``code`` in place to a C-contiguous float array."""
    cdef Py_ssize_t n = arr.size
    if not arr.flags.c_contiguous or arr.dtype.kind != 'f':
        raise TypeError("apply_activation needs a C-contiguous float array")
    if arr.dtype.itemsize == 4:
        with nogil:
            fl_conv_act_f32(<float *>cnp.PyArray_DATA(arr), n, code)
    elif arr.dtype.itemsize == 8:
        with nogil:
            fl_act_f64(<double *>cnp.PyArray_DATA(arr), n, code)
    else:
        raise TypeError(f"activations run on float32 and float64, "
                        f"not {arr.dtype}")
    return arr


# ---------------------------------------------------------------------------
# Runtime configuration

cdef int _isa_level = fl_kernels_init(-1)


def set_isa(level=None):
    """Choose the kernel instruction set: None for the best the CPU has,
    0 baseline, 3 AVX2+FMA, 4 AVX-512.  Returns the level in use."""
    global _isa_level
    _isa_level = fl_kernels_init(-1 if level is None else int(level))
    fl_conv_init(_isa_level)
    _bump_epoch()
    return _isa_level


def kernel_isa():
    """Name of the instruction set the dense kernels use."""
    return fl_kernels_isa().decode()


def packed_tile():
    """Register tile of the batched kernel on packed weights:
    (rows, float32 columns, float64 columns)."""
    return (fl_kt.mr, fl_kt.nr_f32, fl_kt.nr_f64)


cdef extern from "fl_conv.h" nogil:
    # the vectorised float sigmoid, chosen for the CPU like the kernels
    void (*fl_vsigmoid_f32)(float *y, Py_ssize_t n) noexcept nogil


cdef extern from "fl_pool.h" nogil:
    ctypedef void (*fl_job_fn)(void *ctx, int tid, int nthreads) noexcept nogil
    int fl_pool_run(fl_job_fn fn, void *ctx, int nthreads)
    int fl_pool_cpu_count()
    long fl_next_item(long *counter)


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


def set_num_threads(int n):
    """Threads a large forward pass may use (at least 1; default: the cores
    this process may run on).  Small problems always run on the calling
    thread."""
    global _num_threads
    if n < 1:
        raise ValueError(f"set_num_threads: need at least 1 thread, got {n}")
    _num_threads = n
    _bump_epoch()     # convolution workspaces hold one slot per thread


def get_num_threads():
    """Threads a large forward pass may use."""
    return _num_threads


def blas_info():
    """OpenBLAS build configuration and the core type it runs for."""
    return {
        "config": openblas_get_config().decode(errors="replace"),
        "corename": openblas_get_corename().decode(errors="replace"),
        "blas_threads": openblas_get_num_threads(),
        "threads": _num_threads,
    }


# ---------------------------------------------------------------------------
# Parameter

cdef enum ParamState:
    UNSET = 0
    DEFERRED = 1
    INITIALIZED = 2

_STATE_NAMES = ("unset", "deferred", "initialized")


def normalize_shape(shape, where="shape"):
    """Return ``shape`` as a tuple of ints with -1 for unknown dimensions.

    ``None`` stays None (nothing known); an int is a 1-D shape; 0 and -1 both
    mean "not known yet", as in Gluon 1.x and its NumPy mode.
    """
    if shape is None:
        return None
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"{where} must be a tuple of ints, got "
                        f"{type(shape).__name__}") from None
    out = []
    for d in dims:
        if not isinstance(d, (int, np.integer)) or isinstance(d, bool):
            raise TypeError(f"{where} must contain ints, got {d!r} in {dims}")
        d = int(d)
        if d < -1:
            raise ShapeError(f"{where}: dimension {d} in {dims} is negative; "
                             f"use -1 (or 0) for a size that is not known yet")
        out.append(-1 if d <= 0 else d)
    return tuple(out)


def _shape_str(shape):
    return "None" if shape is None else repr(shape)


cdef class Parameter:
    """A parameter of a block, initialized when its shape becomes known.

    Parameters
    ----------
    name : str
        Full name, e.g. ``'dense0_weight'``.
    shape : tuple of int, int or None
        ``-1`` (or 0) marks a dimension that is not known yet.
    dtype : str or numpy dtype, default 'float32'
    init : Initializer, str or None
        This parameter's own initializer; it wins over the one given to
        :meth:`initialize`.
    allow_deferred_init : bool, default True
        Whether :meth:`initialize` may wait for an incomplete shape.

    Notes
    -----
    States: *unset* (``initialize`` not called), *deferred* (called, shape
    incomplete) and *initialized*.  Storage is allocated once, when the
    parameter is initialized, and is only written in place afterwards.
    """

    cdef readonly str name
    cdef tuple _shape
    cdef object _dtype
    cdef public object init
    cdef public object grad_req
    cdef public bint allow_deferred_init
    cdef int _state
    cdef cnp.ndarray _storage
    cdef bint _transposed
    cdef object _pending
    cdef object _key
    # Every write path and every data() hand-out bumps _version; _live_views
    # counts the data() arrays alive (see _ViewGuard).  The forward plan's
    # packed copy of a Dense weight is current while _packed_version ==
    # _version and no hand-out is alive.
    cdef unsigned long long _version
    cdef int _live_views
    cdef object _packed
    cdef unsigned long long _packed_version
    cdef int _packed_nr
    cdef Py_ssize_t _packed_off

    def __init__(self, name, shape=None, dtype="float32", init=None,
                 allow_deferred_init=True, grad_req="null",
                 _storage_transposed=False):
        if not isinstance(name, str) or not name:
            raise TypeError(f"Parameter name must be a non-empty string, "
                            f"got {name!r}")
        self.name = name
        self._shape = normalize_shape(shape, f"Parameter '{name}': shape")
        self._dtype = _float_dtype(dtype, f"Parameter '{name}'")
        self.init = init
        self.grad_req = grad_req
        self.allow_deferred_init = allow_deferred_init
        self._state = UNSET
        self._storage = None
        self._pending = None
        self._key = None
        if _storage_transposed and self._shape is not None \
                and len(self._shape) != 2:
            raise ValueError("only 2-D parameters can be stored transposed")
        self._transposed = _storage_transposed

    # -- introspection -----------------------------------------------------

    @property
    def shape(self):
        """The shape, with -1 for dimensions not known yet (None: unknown)."""
        return self._shape

    @shape.setter
    def shape(self, new_shape):
        new = normalize_shape(new_shape, f"Parameter '{self.name}': shape")
        if new is None:
            if self._shape is not None:
                raise ShapeError(f"Parameter '{self.name}' has shape "
                                 f"{self._shape}; a known shape cannot be "
                                 f"forgotten")
            return
        merged = self._merge_shape(new)
        if merged != self._shape:
            self._shape = merged
            _bump_epoch()

    @property
    def dtype(self):
        """The numpy dtype of the values."""
        return self._dtype

    @property
    def state(self):
        """'unset', 'deferred' or 'initialized'."""
        return _STATE_NAMES[self._state]

    @property
    def is_initialized(self):
        return self._state == INITIALIZED

    def shape_is_known(self):
        """True when every dimension of the shape is known."""
        return _complete(self._shape)

    def __repr__(self):
        return (f"Parameter {self.name} (shape={_shape_str(self._shape)}, "
                f"dtype={self._dtype.name})")

    # -- shape logic -------------------------------------------------------

    cpdef tuple _merge_shape(self, tuple new):
        """The shape completed by ``new``; ShapeError if it contradicts."""
        if self._shape is None:
            return new
        old = self._shape
        if len(new) != len(old):
            raise ShapeError(
                f"Parameter '{self.name}' has shape {old} ({len(old)} "
                f"dimensions); got shape {new} with {len(new)}. A known "
                f"shape can be completed, never changed.")
        merged = []
        for o, n in zip(old, new):
            if o == -1:
                merged.append(n)
            elif n == -1 or n == o:
                merged.append(o)
            else:
                raise ShapeError(
                    f"Parameter '{self.name}' has shape {old}; got {new}. "
                    f"A known dimension cannot change (only -1 entries can "
                    f"be filled in).")
        return tuple(merged)

    # -- storage -----------------------------------------------------------

    cdef tuple _new_storage(self, tuple shape):
        """A zeroed (storage, logical view) pair for ``shape``."""
        cdef cnp.ndarray st
        if self._transposed:
            st = np.zeros((shape[1], shape[0]), dtype=self._dtype)
            return st, st.T
        st = np.zeros(shape, dtype=self._dtype)
        return st, st

    cdef object _view(self):
        return self._storage.T if self._transposed else self._storage

    def data(self, ctx=None):
        """The values: a writable numpy view of the stored array.

        Raises
        ------
        DeferredInitializationError
            Before the parameter is initialized; the message says why and
            how to resolve it.
        """
        if self._state != INITIALIZED:
            raise DeferredInitializationError(self._not_ready_message())
        return self._handout()

    cdef object _handout(self):
        """A writable view of the storage whose base is a _ViewGuard: while
        it (or any view made from it) is alive, the parameter knows that its
        values may be written behind its back."""
        cdef cnp.ndarray st = self._storage
        cdef cnp.npy_intp dims[2]
        cdef cnp.npy_intp strides[2]
        cdef cnp.ndarray view
        cdef int flags = cnp.NPY_ARRAY_WRITEABLE | cnp.NPY_ARRAY_ALIGNED
        if self._transposed:
            dims[0] = cnp.PyArray_DIM(st, 1)
            dims[1] = cnp.PyArray_DIM(st, 0)
            strides[0] = cnp.PyArray_STRIDE(st, 1)
            strides[1] = cnp.PyArray_STRIDE(st, 0)
            view = cnp.PyArray_New(np.ndarray, 2, dims,
                                   cnp.PyArray_TYPE(st), strides,
                                   cnp.PyArray_DATA(st), 0, flags, None)
        else:
            view = cnp.PyArray_New(np.ndarray, cnp.PyArray_NDIM(st),
                                   cnp.PyArray_DIMS(st), cnp.PyArray_TYPE(st),
                                   cnp.PyArray_STRIDES(st),
                                   cnp.PyArray_DATA(st), 0, flags, None)
        cnp.set_array_base(view, _ViewGuard(self, st))
        self._version += 1
        return view

    cdef char *_packed_data(self) except NULL:
        """The weights (2-D, stored transposed) copied into the panel layout
        of the batched kernel; packed again when the values may have
        changed since the last packing.  Callers check _live_views first."""
        cdef cnp.ndarray st = self._storage
        cdef Py_ssize_t K = cnp.PyArray_DIM(st, 0), M = cnp.PyArray_DIM(st, 1)
        cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(st)
        cdef int nr = fl_kt.nr_f32 if isz == 4 else fl_kt.nr_f64
        cdef Py_ssize_t need = ((M + nr - 1) // nr) * nr * K
        cdef cnp.ndarray buf = self._packed
        cdef char *pk
        cdef unsigned long long version = self._version
        if buf is None or self._packed_nr != nr or \
                cnp.PyArray_TYPE(buf) != cnp.PyArray_TYPE(st) or \
                cnp.PyArray_DIM(buf, 0) != need + 64 // isz:
            buf = np.empty(need + 64 // isz, dtype=st.dtype)
            self._packed = buf
            self._packed_nr = nr
            self._packed_off = \
                ((-<size_t>cnp.PyArray_DATA(buf)) & 63) // <size_t>isz
            self._packed_version = version - 1
        pk = <char *>cnp.PyArray_DATA(buf) + self._packed_off * isz
        if self._packed_version != version:
            if isz == 4:
                fl_kt.pack_f32(K, M, <const float *>cnp.PyArray_DATA(st),
                               <float *>pk)
            else:
                fl_kt.pack_f64(K, M, <const double *>cnp.PyArray_DATA(st),
                               <double *>pk)
            self._packed_version = version
        return pk

    @property
    def _packed_state(self):
        """(live data() views, values packed since the last write) -- for
        tests of the packed-weights cache."""
        return (self._live_views, self._packed is not None
                and self._packed_version == self._version)

    def list_data(self):
        """``[data()]`` (Gluon keeps one copy per device; fastlazy one)."""
        return [self.data()]

    def _storage_array(self):
        """The underlying C-contiguous storage (transposed for Dense weights).
        Writable and unguarded: counts as a write (tests only)."""
        self._version += 1
        return self._storage

    @property
    def storage_transposed(self):
        """True when the storage holds the transpose of the logical array."""
        return self._transposed

    def _not_ready_message(self):
        if self._state == DEFERRED:
            return (
                f"Parameter '{self.name}' has not been initialized yet because "
                f"initialization was deferred: its shape {self._shape} is not "
                f"fully known. It will be initialized by the first forward "
                f"pass, which infers the missing sizes from the input. To use "
                f"it now, run a forward pass (net(x)) or net.build(input_shape)"
                f", or create the layer with its input size (e.g. in_units=...)"
                f" so that initialize() can finish at once.")
        if _complete(self._shape):
            return (f"Parameter '{self.name}' (shape {self._shape}) has not "
                    f"been initialized. Call initialize() on its block (or on "
                    f"the parameter) first.")
        return (f"Parameter '{self.name}' (shape {_shape_str(self._shape)}) "
                f"has not been initialized. Call net.initialize() first; its "
                f"shape is then completed and it is initialized at the first "
                f"forward pass (or at once if the layer is given its input "
                f"size, e.g. in_units=...).")

    def set_data(self, data):
        """Copy ``data`` into the parameter.

        The array must match every known dimension; a -1 dimension is filled
        from it.  An uninitialized parameter becomes initialized.  On error
        (ShapeError, TypeError) the parameter is left as it was.
        """
        arr = as_numeric_array(data, f"Parameter '{self.name}'.set_data")
        new = tuple(int(d) for d in arr.shape)
        if self._shape is not None and len(new) != len(self._shape):
            raise ShapeError(
                f"Parameter '{self.name}'.set_data: expected an array with "
                f"shape {self._shape}, got shape {new}")
        if any(d == 0 for d in new):
            raise ShapeError(f"Parameter '{self.name}'.set_data: got an "
                             f"empty array of shape {new}")
        try:
            merged = self._merge_shape(new)
        except ShapeError:
            raise ShapeError(
                f"Parameter '{self.name}'.set_data: expected an array with "
                f"shape {self._shape}, got shape {new}") from None
        if merged != new:  # pragma: no cover - merge of complete shapes
            raise ShapeError(f"Parameter '{self.name}'.set_data: shape {new} "
                             f"does not fit {self._shape}")
        if self._storage is None:
            st, view = self._new_storage(merged)
            np.copyto(view, arr, casting="unsafe")
            self._shape = merged
            self._storage = st
            self._pending = None
            self._state = INITIALIZED
            self._version += 1
            _bump_epoch()
        else:
            np.copyto(self._view(), arr, casting="unsafe")
            self._state = INITIALIZED
            self._version += 1

    # -- initialization ----------------------------------------------------

    def initialize(self, init=None, default_init=None, force_reinit=False,
                   ctx=None, _key=None):
        """Initialize now if the shape is known; otherwise wait for it.

        The initializer is the parameter's own ``init`` if it has one, else
        ``init``, else ``default_init``, else ``init.Uniform()``.  Calling it
        again on an initialized parameter warns and changes nothing unless
        ``force_reinit=True``.  The positional order is the contract's
        (API.md), ``(init, default_init, force_reinit)``; ``ctx`` (Gluon's
        second argument) is accepted by keyword and ignored: fastlazy runs
        on the CPU.
        """
        if self._state == INITIALIZED and not force_reinit:
            warnings.warn(
                f"Parameter '{self.name}' is already initialized; ignoring. "
                f"Pass force_reinit=True to initialize it again.",
                UserWarning, stacklevel=2)
            return
        if self.init is not None:
            chosen = self.init
        elif init is not None:
            chosen = init
        elif default_init is not None:
            chosen = default_init
        else:
            chosen = _init.Uniform()
        chosen = _init.create(chosen)
        key = _key if _key is not None else _random.make_key(self.name)
        if _complete(self._shape):
            self._run_init(chosen, key)
        else:
            if not self.allow_deferred_init:
                raise DeferredInitializationError(
                    f"Parameter '{self.name}' has an incomplete shape "
                    f"{_shape_str(self._shape)} and does not allow deferred "
                    f"initialization; give its full shape first.")
            self._pending = chosen
            self._key = key
            self._state = DEFERRED

    cdef _run_init(self, chosen, key):
        st, view = self._new_storage(self._shape)
        chosen(_init.InitDesc(self.name, key), view)
        if self._storage is None:
            self._storage = st
            _bump_epoch()
        else:
            np.copyto(self._storage, st)
        self._version += 1
        self._state = INITIALIZED
        self._pending = None
        self._key = key

    def _finish_deferred_init(self):
        """Run the waiting initializer once the shape is complete."""
        if self._state == DEFERRED:
            if not _complete(self._shape):
                raise DeferredInitializationError(self._not_ready_message())
            self._run_init(self._pending, self._key)
        elif self._state == UNSET:
            raise DeferredInitializationError(self._not_ready_message())

    def cast(self, dtype):
        """Change the dtype, converting stored values."""
        new = _float_dtype(dtype, f"Parameter '{self.name}'.cast")
        if new == self._dtype:
            return
        if self._storage is not None:
            self._storage = np.ascontiguousarray(self._storage, dtype=new)
        self._dtype = new
        self._packed = None
        self._version += 1
        _bump_epoch()

    # -- transactions (used by blocks so failures change nothing) ----------

    def _snapshot(self, copy_values=False):
        """Everything :meth:`_restore` needs to undo a failed transaction;
        ``copy_values`` also saves the values, for writes in place."""
        saved = None
        if copy_values and self._storage is not None:
            saved = self._storage.copy()
        return (self._shape, self._state, self._storage, self._pending,
                self._key, self._dtype, saved)

    def _restore(self, snap):
        (self._shape, self._state, self._storage, self._pending, self._key,
         self._dtype, saved) = snap
        if saved is not None:
            np.copyto(self._storage, saved)
        self._version += 1
        _bump_epoch()

    def _reset_key(self, key):
        """Give a deferred parameter the random key of its place in a net."""
        self._key = key

    # -- pickling ----------------------------------------------------------

    def __reduce__(self):
        return (_rebuild_parameter,
                (self.name, self._shape, self._dtype.str, self.init,
                 self.allow_deferred_init, self.grad_req, self._transposed,
                 self._state, self._storage, self._pending, self._key))


def _rebuild_parameter(name, shape, dtype, init, allow_deferred, grad_req,
                       transposed, state, storage, pending, key):
    cdef Parameter p = Parameter(name, shape, dtype, init, allow_deferred,
                                 grad_req, transposed)
    p._state = state
    p._storage = storage
    p._pending = pending
    p._key = key
    return p


cdef class _ViewGuard:
    """The base object of every array Parameter.data() returns.  Views made
    from such an array keep it alive (NumPy stops collapsing a view's base
    chain at a non-array base), so while any of them lives, the guard does
    and the parameter's _live_views count is non-zero: its values may be
    written at any moment, and the forward plan reads the weights where
    they are instead of from a packed copy."""

    cdef Parameter owner
    cdef object storage

    def __cinit__(self, Parameter owner, object storage):
        self.owner = owner
        self.storage = storage
        owner._live_views += 1

    def __dealloc__(self):
        if self.owner is not None:
            self.owner._live_views -= 1


cdef bint _complete(tuple shape):
    if shape is None:
        return False
    for d in shape:
        if d == -1:
            return False
    return True


def _float_dtype(dtype, where):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{where}: {dtype!r} is not a dtype") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"{where}: dtype must be float32 or float64, got "
                        f"{dt.name}")
    return dt


def as_numeric_array(data, where):
    """``np.asarray(data)`` with clear errors for non-numeric input."""
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: input is not a rectangular numeric array "
                         f"({exc})") from None
    kind = arr.dtype.kind
    if kind not in "biuf":
        raise TypeError(f"{where}: expected numbers, got an array of dtype "
                        f"{arr.dtype} ({type(data).__name__})")
    return arr


# ---------------------------------------------------------------------------
# The forward plan

cdef enum StepKind:
    STEP_DENSE = 0
    STEP_ACT = 1
    STEP_OTHER = 2

ctypedef void (*step_fn)(const Step *s, Py_ssize_t b, const char *x, char *y,
                         char *work) noexcept nogil

cdef struct Step:
    step_fn run          # computes b samples: x -> y (y == x if inplace)
    int kind
    int act
    int inplace          # element-wise: may run with y == x
    Py_ssize_t itemsize
    Py_ssize_t in_size   # elements per sample read
    Py_ssize_t out_size  # elements per sample written
    Py_ssize_t work      # workspace elements per sample
    Py_ssize_t macs      # multiply-adds per sample (decides threading)
    Py_ssize_t rows      # dense: matrix rows per sample
    Py_ssize_t K         # dense: input features
    Py_ssize_t M         # dense: output features
    Py_ssize_t geom[16]  # layer geometry (convolution, pooling, ...)
    double eps
    char *p[6]           # parameter storage (weight, bias, ...)
    void *wparam         # dense: the weight's Parameter (the plan keeps it)
    char *packed         # dense: packed weights current for this call, or NULL

# Which kernel runs a dense product: 0 = by shape (_dense_route), 1 = always
# the small kernel, 2 = always BLAS, 3 = the packed kernel whenever the
# packed weights are current (tests, benches).
cdef int _KERNEL_ROUTE = 0

cdef enum DenseRoute:
    ROUTE_SMALL = 0
    ROUTE_BLAS = 1
    ROUTE_PACKED = 2
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


def set_tuning(kernel_route=None, tile_bytes=None, parallel_macs=None,
               pack_max_bytes=None):
    """Adjust the kernel choice ('auto', 'own', 'blas' or 'packed'), the
    row-tile size, the size from which a forward pass uses several threads
    and the largest weight (bytes; -1: any) that is kept packed for the
    batched kernel -- the memory knob: a packed copy costs as much memory
    as its weight.  Returns the old values (for tests and benches)."""
    global _KERNEL_ROUTE, _TILE_BYTES, _PAR_MACS, _PACK_MAX_BYTES
    routes = ("auto", "own", "blas", "packed")
    old = (routes[_KERNEL_ROUTE], _TILE_BYTES, _PAR_MACS, _PACK_MAX_BYTES)
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
    _bump_epoch()
    return old


cdef inline bint _use_own_kernel(Py_ssize_t rows, Py_ssize_t K,
                                 Py_ssize_t M) noexcept nogil:
    """Own register-tiled kernel or BLAS, by shape.  Measured on the
    benchmark machine (AVX-512, OpenBLAS 0.3.34 SkylakeX): BLAS's packing
    costs more than it saves for up to 8 rows whatever the weights (a 2x1024
    by 1024x1024 product: 160 us own, 480 us BLAS); for one row, BLAS's GEMV
    streams big matrices better; from 16 rows on BLAS wins once the weights
    outgrow L2, and from 128 rows unless they are tiny."""
    cdef Py_ssize_t km = K * M
    if _KERNEL_ROUTE:
        return _KERNEL_ROUTE == 1
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
    (1.0-1.3x below).  One row stays a matrix-vector product."""
    if _KERNEL_ROUTE:
        return _KERNEL_ROUTE == 3
    if rows < 2 or M < 64:
        return False
    return K * M >= (1 << 15) or (rows >= 8 and K * M >= (1 << 12))


cdef inline int _dense_route(const Step *s, Py_ssize_t rows) noexcept nogil:
    if s.packed != NULL and _packed_wins(rows, s.K, s.M):
        return ROUTE_PACKED
    return ROUTE_SMALL if _use_own_kernel(rows, s.K, s.M) else ROUTE_BLAS


cdef inline void _dense_f32(const Step *s, Py_ssize_t rows, const char *x,
                            char *y) noexcept nogil:
    cdef Py_ssize_t K = s.K, M = s.M
    cdef const float *wt = <const float *>s.p[0]
    cdef const float *b = <const float *>s.p[1]
    # the float sigmoid runs vectorised over the whole output afterwards
    cdef int act = FL_ACT_NONE if s.act == FL_ACT_SIGMOID else s.act
    if _use_own_kernel(rows, K, M):
        fl_kt.dense_f32(rows, K, M, <const float *>x, K, wt, b, <float *>y, M,
                        act)
    else:
        if rows == 1:
            cblas_sgemv(CblasRowMajor, CblasTrans, <blas_int>K, <blas_int>M,
                        1.0, wt, <blas_int>M, <const float *>x, 1, 0.0,
                        <float *>y, 1)
        else:
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans,
                        <blas_int>rows, <blas_int>M, <blas_int>K, 1.0,
                        <const float *>x, <blas_int>K, wt, <blas_int>M, 0.0,
                        <float *>y, <blas_int>M)
        if b != NULL or act != FL_ACT_NONE:
            fl_kt.bias_act_f32(rows, M, <float *>y, M, b, act)
    if act != s.act:
        fl_vsigmoid_f32(<float *>y, rows * M)


cdef inline void _dense_f64(const Step *s, Py_ssize_t rows, const char *x,
                            char *y) noexcept nogil:
    cdef Py_ssize_t K = s.K, M = s.M
    cdef const double *wt = <const double *>s.p[0]
    cdef const double *b = <const double *>s.p[1]
    if _use_own_kernel(rows, K, M):
        fl_kt.dense_f64(rows, K, M, <const double *>x, K, wt, b,
                        <double *>y, M, s.act)
        return
    if rows == 1:
        cblas_dgemv(CblasRowMajor, CblasTrans, <blas_int>K, <blas_int>M, 1.0,
                    wt, <blas_int>M, <const double *>x, 1, 0.0,
                    <double *>y, 1)
    else:
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, <blas_int>rows,
                    <blas_int>M, <blas_int>K, 1.0, <const double *>x,
                    <blas_int>K, wt, <blas_int>M, 0.0, <double *>y,
                    <blas_int>M)
    if b != NULL or s.act != FL_ACT_NONE:
        fl_kt.bias_act_f64(rows, M, <double *>y, M, b, s.act)


cdef void _step_dense(const Step *s, Py_ssize_t b, const char *x, char *y,
                      char *work) noexcept nogil:
    cdef Py_ssize_t rows = b * s.rows
    cdef int nr = fl_kt.nr_f32 if s.itemsize == 4 else fl_kt.nr_f64
    if _dense_route(s, rows) == ROUTE_PACKED:
        _packed_slice(s, rows, x, y, 0, (s.M + nr - 1) // nr)
    elif s.itemsize == 4:
        _dense_f32(s, rows, x, y)
    else:
        _dense_f64(s, rows, x, y)


cdef void _step_act(const Step *s, Py_ssize_t b, const char *x, char *y,
                    char *work) noexcept nogil:
    cdef Py_ssize_t n = b * s.out_size
    if x != y:
        memcpy(y, x, n * s.itemsize)
    if s.itemsize == 4:
        fl_conv_act_f32(<float *>y, n, s.act)
    else:
        fl_act_f64(<double *>y, n, s.act)


cdef char *_param_ptr(Parameter p, object dtype, list keep,
                      bint transposed=False) except NULL:
    """Raw pointer to a parameter's storage (kept alive through ``keep``)."""
    cdef cnp.ndarray arr = p._storage
    if arr is None or p._state != INITIALIZED:
        raise DeferredInitializationError(p._not_ready_message())
    if arr.dtype != dtype:
        raise TypeError(f"parameter {p.name} is {arr.dtype}, the network "
                        f"runs in {dtype}; call net.cast(...)")
    if p._transposed != transposed:
        raise RuntimeError(f"parameter {p.name}: unexpected storage layout")
    keep.append(arr)
    return <char *>cnp.PyArray_DATA(arr)


include "_conv.pxi"


cdef int _fill_step(Step *s, tuple spec, object dtype, list keep) except -1:
    """Translate one step description from the block layer into a Step."""
    cdef str kind = spec[0]
    memset(s, 0, sizeof(Step))
    s.itemsize = dtype.itemsize
    if kind == "dense":
        _, w, b, act, rows, K, M = spec
        if K > 0x7FFFFFFF or M > 0x7FFFFFFF:
            raise ShapeError("a Dense layer wider than 2**31-1 is not "
                             "supported by the 32-bit BLAS")
        s.run = _step_dense
        s.kind = STEP_DENSE
        s.act = act
        s.rows = rows
        s.K = K
        s.M = M
        s.in_size = rows * K
        s.out_size = rows * M
        s.macs = rows * K * M
        s.p[0] = _param_ptr(w, dtype, keep, True)
        s.p[1] = NULL if b is None else _param_ptr(b, dtype, keep)
        keep.append(w)
        s.wparam = <void *>w
    elif kind == "act":
        _, act, elems = spec
        s.run = _step_act
        s.kind = STEP_ACT
        s.act = act
        s.inplace = 1
        s.in_size = elems
        s.out_size = elems
    elif kind in ("conv2d", "pool2d", "batchnorm", "layernorm"):
        _fill_step_conv(s, spec, dtype, keep)
    else:
        raise ValueError(f"unknown plan step {kind!r}")
    return 0


cdef struct PlanData:
    Step *steps
    int nsteps
    int last_producer
    Py_ssize_t itemsize
    Py_ssize_t in_size      # elements per sample
    Py_ssize_t out_size
    Py_ssize_t max_width    # widest per-sample intermediate
    Py_ssize_t max_work     # largest per-sample workspace
    Py_ssize_t macs         # multiply-adds per sample
    Py_ssize_t dense_macs   # of which in dense steps


cdef struct RunCtx:
    const PlanData *d
    const char *x
    char *out
    Py_ssize_t n
    Py_ssize_t tile
    char *scratch           # per thread: two buffers and a workspace
    Py_ssize_t buf_bytes
    Py_ssize_t thread_bytes
    long next_tile
    const Step *step        # column-parallel: the dense step
    const char *src
    char *dst


cdef void _run_tile(const PlanData *d, const char *x, char *out,
                    Py_ssize_t b, char *s0, char *s1,
                    char *work) noexcept nogil:
    """Run every step on ``b`` samples, ping-ponging between s0 and s1; the
    last step that produces a new array writes straight into ``out``."""
    cdef const char *cur = x
    cdef char *dst
    cdef char *bufs[2]
    cdef int which = 0, i
    cdef bint cur_is_input = True
    cdef const Step *s
    bufs[0] = s0
    bufs[1] = s1
    for i in range(d.nsteps):
        s = &d.steps[i]
        if s.inplace and not cur_is_input:
            s.run(s, b, cur, <char *>cur, work)
            continue
        if i == d.last_producer:
            dst = out
        else:
            dst = bufs[which]
            which ^= 1
        s.run(s, b, cur, dst, work)
        cur = dst
        cur_is_input = False
    if cur != out:
        memcpy(out, cur, b * d.out_size * d.itemsize)


cdef void _tiles_job(void *vctx, int tid, int nthreads) noexcept nogil:
    """Threads take row tiles from a shared counter until none are left."""
    cdef RunCtx *c = <RunCtx *>vctx
    cdef const PlanData *d = c.d
    cdef char *s0 = c.scratch + tid * c.thread_bytes
    cdef Py_ssize_t t0, b
    while True:
        t0 = fl_next_item(&c.next_tile) * c.tile
        if t0 >= c.n:
            break
        b = c.n - t0 if c.n - t0 < c.tile else c.tile
        _run_tile(d, c.x + t0 * d.in_size * d.itemsize,
                  c.out + t0 * d.out_size * d.itemsize, b,
                  s0, s0 + c.buf_bytes, s0 + 2 * c.buf_bytes)


cdef void _columns_slice(const Step *s, Py_ssize_t rows, const char *src,
                         char *dst, Py_ssize_t m0,
                         Py_ssize_t mc) noexcept nogil:
    """Output columns [m0, m0 + mc) of a dense step over ``rows`` rows."""
    cdef Py_ssize_t M = s.M, K = s.K, r
    if s.itemsize == 4:
        if rows == 1:
            cblas_sgemv(CblasRowMajor, CblasTrans, <blas_int>K, <blas_int>mc,
                        1.0, <const float *>s.p[0] + m0, <blas_int>M,
                        <const float *>src, 1, 0.0,
                        <float *>dst + m0, 1)
        else:
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans,
                        <blas_int>rows, <blas_int>mc, <blas_int>K, 1.0,
                        <const float *>src, <blas_int>K,
                        <const float *>s.p[0] + m0, <blas_int>M, 0.0,
                        <float *>dst + m0, <blas_int>M)
        if s.p[1] != NULL or s.act != FL_ACT_NONE:
            fl_kt.bias_act_f32(rows, mc, <float *>dst + m0, M,
                               NULL if s.p[1] == NULL
                               else <const float *>s.p[1] + m0,
                               FL_ACT_NONE if s.act == FL_ACT_SIGMOID
                               else s.act)
        if s.act == FL_ACT_SIGMOID:
            for r in range(rows):
                fl_vsigmoid_f32(<float *>dst + r * M + m0, mc)
    else:
        if rows == 1:
            cblas_dgemv(CblasRowMajor, CblasTrans, <blas_int>K, <blas_int>mc,
                        1.0, <const double *>s.p[0] + m0, <blas_int>M,
                        <const double *>src, 1, 0.0,
                        <double *>dst + m0, 1)
        else:
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans,
                        <blas_int>rows, <blas_int>mc, <blas_int>K, 1.0,
                        <const double *>src, <blas_int>K,
                        <const double *>s.p[0] + m0, <blas_int>M, 0.0,
                        <double *>dst + m0, <blas_int>M)
        if s.p[1] != NULL or s.act != FL_ACT_NONE:
            fl_kt.bias_act_f64(rows, mc, <double *>dst + m0, M,
                               NULL if s.p[1] == NULL
                               else <const double *>s.p[1] + m0, s.act)


cdef void _packed_slice(const Step *s, Py_ssize_t rows, const char *src,
                        char *dst, Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    """Panels [p0, p1) of a dense step on packed weights."""
    cdef Py_ssize_t M = s.M, m0, mc, r
    if s.itemsize == 4:
        fl_kt.gemm_packed_f32(rows, s.K, M, <const float *>src, s.K,
                              <const float *>s.packed, p0, p1,
                              <const float *>s.p[1], <float *>dst, M,
                              FL_ACT_NONE if s.act == FL_ACT_SIGMOID
                              else s.act)
        if s.act == FL_ACT_SIGMOID:
            m0 = p0 * fl_kt.nr_f32
            mc = (M if p1 * fl_kt.nr_f32 > M else p1 * fl_kt.nr_f32) - m0
            for r in range(rows):
                fl_vsigmoid_f32(<float *>dst + r * M + m0, mc)
    else:
        fl_kt.gemm_packed_f64(rows, s.K, M, <const double *>src, s.K,
                              <const double *>s.packed, p0, p1,
                              <const double *>s.p[1], <double *>dst, M,
                              s.act)


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
    cdef Py_ssize_t M = s.M, m0, rows = c.n * s.rows
    cdef Py_ssize_t chunk = ((M + nthreads - 1) // nthreads + 15) & ~15
    cdef Py_ssize_t nr, npan, p0
    if _dense_route(s, rows) == ROUTE_PACKED:
        nr = fl_kt.nr_f32 if s.itemsize == 4 else fl_kt.nr_f64
        npan = (M + nr - 1) // nr
        while True:
            p0 = fl_next_item(&c.next_tile)
            if p0 >= npan:
                break
            _packed_slice(s, rows, c.src, c.dst, p0, p0 + 1)
        return
    while True:
        m0 = fl_next_item(&c.next_tile) * chunk
        if m0 >= M:
            break
        _columns_slice(s, c.n * s.rows, c.src, c.dst, m0,
                       M - m0 if M - m0 < chunk else chunk)


cdef void _run_by_columns(RunCtx *c, int nthreads) noexcept nogil:
    """A small batch through large layers: one tile, each big dense step
    split across threads by output columns, everything else serial."""
    cdef const PlanData *d = c.d
    cdef const char *cur = c.x
    cdef char *dst
    cdef char *bufs[2]
    cdef int which = 0, i
    cdef bint cur_is_input = True
    cdef const Step *s
    cdef char *work = c.scratch + 2 * c.buf_bytes
    bufs[0] = c.scratch
    bufs[1] = c.scratch + c.buf_bytes
    for i in range(d.nsteps):
        s = &d.steps[i]
        if s.inplace and not cur_is_input:
            s.run(s, c.n, cur, <char *>cur, work)
            continue
        if i == d.last_producer:
            dst = c.out
        else:
            dst = bufs[which]
            which ^= 1
        if s.kind == STEP_DENSE and \
                _dense_route(s, c.n * s.rows) != ROUTE_SMALL:
            c.step = s
            c.src = cur
            c.dst = dst
            c.next_tile = 0
            fl_pool_run(_columns_job, c, nthreads)
        else:
            s.run(s, c.n, cur, dst, work)
        cur = dst
        cur_is_input = False
    if cur != c.out:
        memcpy(c.out, cur, c.n * d.out_size * d.itemsize)


cdef class Plan:
    """A compiled forward pass for one network, dtype and sample shape.

    Built from a list of step descriptions by the block layer; holds raw
    pointers into parameter storage (and references that keep it alive).
    """

    cdef PlanData d
    cdef int typenum
    cdef unsigned long long epoch
    cdef readonly tuple in_sample_shape
    cdef readonly tuple out_sample_shape
    cdef int in_ndim
    cdef Py_ssize_t in_dims[32]
    cdef cnp.npy_intp out_dims[32]
    cdef int out_ndim
    cdef list keep
    cdef list packed_keep   # per step: the packed weights it last used
    cdef object dtype
    cdef str where
    # one cached workspace; a concurrent call on the same plan gets its own
    cdef char *scratch
    cdef Py_ssize_t scratch_bytes
    cdef bint scratch_busy

    def __cinit__(self):
        self.d.steps = NULL
        self.scratch = NULL
        self.scratch_bytes = 0
        self.scratch_busy = False

    def __dealloc__(self):
        free(self.d.steps)
        free(self.scratch)

    def __init__(self, list steps, tuple in_sample_shape,
                 tuple out_sample_shape, dtype, str where="forward"):
        """``steps``: tuples from the block layer, e.g.
        ('dense', weight, bias_or_None, act, rows, K, M) or
        ('act', act, elems), in order; ``where`` names the network in
        error messages."""
        cdef Step *s
        cdef int i
        cdef Py_ssize_t width
        cdef PlanData *d = &self.d
        self.dtype = np.dtype(dtype)
        self.where = where
        self.typenum = self.dtype.num
        d.itemsize = self.dtype.itemsize
        self.in_sample_shape = in_sample_shape
        self.out_sample_shape = out_sample_shape
        self.in_ndim = len(in_sample_shape) + 1
        if len(out_sample_shape) + 1 > 32 or self.in_ndim > 32:
            raise ShapeError("fastlazy supports at most 32 dimensions")
        for i, dim in enumerate(in_sample_shape):
            self.in_dims[i + 1] = dim
        self.out_ndim = len(out_sample_shape) + 1
        for i, dim in enumerate(out_sample_shape):
            self.out_dims[i + 1] = dim
        d.in_size = _prod(in_sample_shape)
        d.out_size = _prod(out_sample_shape)
        self.keep = []
        self.packed_keep = [None] * len(steps)
        d.nsteps = len(steps)
        d.steps = <Step *>malloc(max(1, d.nsteps) * sizeof(Step))
        if d.steps == NULL:
            raise MemoryError()
        d.max_width = max(d.in_size, d.out_size, 1)
        d.max_work = 0
        d.macs = 0
        d.dense_macs = 0
        d.last_producer = -1
        width = d.in_size
        for i, spec in enumerate(steps):
            s = &d.steps[i]
            _fill_step(s, spec, self.dtype, self.keep)
            if s.in_size != width:
                raise RuntimeError(f"plan step {i} ({spec[0]}) reads "
                                   f"{s.in_size} values per sample, the step "
                                   f"before writes {width}")
            width = s.out_size
            d.max_width = max(d.max_width, s.out_size)
            d.max_work = max(d.max_work, s.work)
            d.macs += s.macs
            if s.kind == STEP_DENSE:
                d.dense_macs += s.macs
            if not s.inplace:
                d.last_producer = i
        if width != d.out_size:
            raise RuntimeError("plan output size does not match its shape")
        if d.last_producer < 0 and d.nsteps > 0:
            # only element-wise steps: the first one copies input to output
            d.last_producer = 0
        self.epoch = _epoch

    def is_current(self):
        """False once anything that matters to this plan has changed."""
        return self.epoch == _epoch

    cdef Step *_packed_steps(self, Py_ssize_t tile) except? NULL:
        """Before a call of up to ``tile`` rows per step: NULL when no dense
        step will run the packed kernel (the plan's own steps are used),
        else a malloc'ed copy of the steps -- this call's own, so concurrent
        calls never see each other's choices -- in which those steps point
        at their weights' packed copy, packed again first if the weights
        were written since (under the GIL: concurrent calls pack once).
        While a data() view of a weight is alive its values may change at
        any moment: that step reads the weights in place instead."""
        cdef int i
        cdef const Step *s
        cdef Step *steps = NULL
        cdef Parameter w
        for i in range(self.d.nsteps):
            s = &self.d.steps[i]
            if s.kind != STEP_DENSE or \
                    not _packed_wins(tile * s.rows, s.K, s.M):
                continue
            w = <Parameter>s.wparam
            if w._live_views or (_PACK_MAX_BYTES >= 0 and
                                 s.K * s.M * s.itemsize > _PACK_MAX_BYTES):
                continue
            if steps == NULL:
                steps = <Step *>malloc(self.d.nsteps * sizeof(Step))
                if steps == NULL:
                    raise MemoryError()
                memcpy(steps, self.d.steps, self.d.nsteps * sizeof(Step))
            try:
                steps[i].packed = w._packed_data()
            except MemoryError:
                # the copy is an optimisation: without memory for it, the
                # step reads the weights in place
                continue
            except BaseException:
                free(steps)
                raise
            self.packed_keep[i] = w._packed
        return steps

    cdef Py_ssize_t _tile_rows(self) noexcept:
        cdef Py_ssize_t t = _TILE_BYTES // (self.d.max_width * self.d.itemsize)
        if t < 64:
            t = 64
        elif t > 4096:
            t = 4096
        return t - t % 8

    cpdef object run(self, object x):
        """Run on ``x``; None when ``x`` does not fit this plan's shapes
        (the caller then takes the slow path, which re-infers or raises)."""
        cdef cnp.ndarray arr
        cdef cnp.ndarray out
        cdef Py_ssize_t n, i, need, isz = self.d.itemsize
        cdef RunCtx c
        cdef int nthreads = 1
        cdef bint by_columns = False
        cdef bint own_scratch = False
        cdef Step *steps = NULL
        cdef PlanData dcopy
        # the kernels and BLAS read the input through typed pointers: it
        # must be aligned too (a misaligned view is copied by coerce)
        if cnp.PyArray_CheckExact(x) and \
                cnp.PyArray_TYPE(<cnp.ndarray>x) == self.typenum and \
                cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>x) and \
                cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>x) and \
                cnp.PyArray_ISALIGNED(<cnp.ndarray>x):
            arr = <cnp.ndarray>x
        else:
            arr = self.coerce(x)
        if cnp.PyArray_NDIM(arr) != self.in_ndim:
            return None
        for i in range(1, self.in_ndim):
            if cnp.PyArray_DIM(arr, i) != self.in_dims[i]:
                return None
        n = cnp.PyArray_DIM(arr, 0)
        self.out_dims[0] = n
        out = cnp.PyArray_EMPTY(self.out_ndim, self.out_dims, self.typenum, 0)
        if n == 0 or self.d.nsteps == 0:
            if n:
                memcpy(cnp.PyArray_DATA(out), cnp.PyArray_DATA(arr),
                       n * self.d.out_size * isz)
            return out
        c.d = &self.d
        c.x = <const char *>cnp.PyArray_DATA(arr)
        c.out = <char *>cnp.PyArray_DATA(out)
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
        c.buf_bytes = (c.tile * self.d.max_width * isz + 63) & ~63
        c.thread_bytes = 2 * c.buf_bytes + \
            ((c.tile * self.d.max_work * isz + 63) & ~63)
        need = c.thread_bytes * (1 if by_columns else nthreads)
        if self.scratch_busy or need > self.scratch_bytes:
            c.scratch = <char *>malloc(need)
            if c.scratch == NULL:
                raise MemoryError(f"forward pass: cannot allocate a "
                                  f"{need}-byte workspace")
            if self.scratch_busy:
                own_scratch = True
            else:
                free(self.scratch)
                self.scratch = c.scratch
                self.scratch_bytes = need
        else:
            c.scratch = self.scratch
        if not own_scratch:
            self.scratch_busy = True
        try:
            steps = self._packed_steps(c.tile)
        except BaseException:
            if own_scratch:
                free(c.scratch)
            else:
                self.scratch_busy = False
            raise
        if steps != NULL:
            dcopy = self.d
            dcopy.steps = steps
            c.d = &dcopy
        with nogil:
            if by_columns:
                _run_by_columns(&c, nthreads)
            elif nthreads > 1:
                fl_pool_run(_tiles_job, &c, nthreads)
            else:
                _tiles_job(&c, 0, 1)
        free(steps)
        if own_scratch:
            free(c.scratch)
        else:
            self.scratch_busy = False
        return out

    cdef cnp.ndarray coerce(self, object x):
        arr = as_numeric_array(x, self.where)
        # C order, native byte order, aligned (ascontiguousarray would keep
        # a misaligned array as it is)
        return np.require(arr, dtype=self.dtype, requirements="CA")


cdef Py_ssize_t _prod(tuple shape):
    cdef Py_ssize_t p = 1
    for d in shape:
        p *= <Py_ssize_t>d
    return p


def block_call(self, x):
    """``Block.__call__``: one compiled call when the block has a current
    plan for this input; otherwise the block's slow path (shape inference,
    deferred initialization, plan building, or plain Python)."""
    cdef object plan = getattr(self, "_plan", None)
    cdef object out
    if plan is not None and (<Plan>plan).epoch == _epoch:
        out = (<Plan>plan).run(x)
        if out is not None:
            return out
    return self._call_slow(x)


def dense_kernel(x, wt, b, int act, route):
    """Test twin of the dense step: ``act(x @ wt + b)``, x (n, K), wt (K, M).

    Exists so tests can check the kernels against NumPy on their own.
    ``route``: 'own' (the small kernel; also False), 'blas' (also True) or
    'packed' (wt packed first).  Arrays must share a float dtype.
    """
    global _KERNEL_ROUTE
    cdef Step s
    cdef cnp.ndarray xa = np.ascontiguousarray(x)
    cdef cnp.ndarray wa
    cdef cnp.ndarray ba
    cdef cnp.ndarray pk
    cdef Py_ssize_t n, nr
    cdef int saved = _KERNEL_ROUTE
    cdef int want
    if route is False or route == "own":
        want = 1
    elif route is True or route == "blas":
        want = 2
    elif route == "packed":
        want = 3
    else:
        raise ValueError(f"dense_kernel: route must be 'own', 'blas' or "
                         f"'packed', got {route!r}")
    if xa.dtype not in (np.float32, np.float64) or xa.ndim != 2:
        raise ValueError("dense_kernel: need float x of shape (n, K)")
    wa = np.ascontiguousarray(wt, dtype=xa.dtype)
    if wa.ndim != 2 or wa.shape[0] != xa.shape[1]:
        raise ValueError("dense_kernel: wt must have shape (K, M)")
    n = xa.shape[0]
    out = np.empty((n, wa.shape[1]), dtype=xa.dtype)
    memset(&s, 0, sizeof(Step))
    s.itemsize = xa.dtype.itemsize
    s.act = act
    s.rows = 1
    s.K = wa.shape[0]
    s.M = wa.shape[1]
    s.p[0] = <char *>cnp.PyArray_DATA(wa)
    if b is not None:
        ba = np.ascontiguousarray(b, dtype=xa.dtype)
        if ba.ndim != 1 or ba.shape[0] != s.M:
            raise ValueError("dense_kernel: bias must have shape (M,)")
        s.p[1] = <char *>cnp.PyArray_DATA(ba)
    if want == 3:
        nr = fl_kt.nr_f32 if s.itemsize == 4 else fl_kt.nr_f64
        # one spare panel after the end: reads past it would show up as
        # wrong values in the tests rather than pass silently
        pk = np.full(((s.M + nr - 1) // nr + 1) * nr * s.K, np.nan,
                     dtype=xa.dtype)
        if s.itemsize == 4:
            fl_kt.pack_f32(s.K, s.M, <const float *>s.p[0],
                           <float *>cnp.PyArray_DATA(pk))
        else:
            fl_kt.pack_f64(s.K, s.M, <const double *>s.p[0],
                           <double *>cnp.PyArray_DATA(pk))
        s.packed = <char *>cnp.PyArray_DATA(pk)
    _KERNEL_ROUTE = want
    try:
        _step_dense(&s, n, <char *>cnp.PyArray_DATA(xa),
                    <char *>cnp.PyArray_DATA(out), NULL)
    finally:
        _KERNEL_ROUTE = saved
    return out


# ---------------------------------------------------------------------------
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
    elif op in ("dense", "packed", "gemm_ab"):
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
