"""Parameter: the deferred-initialization state machine of one array.

States *unset* -> *deferred* (initialize() called, shape incomplete) ->
*initialized*; a shape that can be completed but never changed; storage that
is allocated once and then only written in place.  Every write path bumps a
version and ``data()`` hands out views whose base object counts how many
are alive (:class:`_ViewGuard`), which is how the forward plan knows when its
packed copy of a weight may be stale.  A plan that reads this storage
registers itself (:meth:`Parameter._watch`) and is told when the storage
moves, so only the networks that use a parameter ever rebuild for it.

This module knows nothing of plans, blocks or kernels; ``_parameter.pxd`` is
its C-level contract.

A parameter of dtype ``bfloat16`` keeps its values as 16-bit patterns
(``uint16`` storage; NumPy has no bfloat16).  Every way in rounds to
nearest even (``set_data``, initializers, ``cast``, loading); ``data()``
hands out a read-only float32 copy, exact, so nothing is written behind
the parameter's back, and each write tells the plans reading it (they
keep a copy of the values in their kernel's layout) to rebuild.
"""

import pickle
import threading
import warnings
import weakref

import numpy as np

cimport numpy as cnp
from libc.stdint cimport uint16_t

from fastlazy._blas cimport (
    CblasRowMajor, CblasTrans, blas_int, cblas_domatcopy, cblas_somatcopy,
)

from . import initializers as _init
from . import random as _random
from ._util import FLOAT_DTYPES, bfloat16, is_bfloat16, is_int
from .errors import DeferredInitializationError, ShapeError


cdef extern from "kernels/bf16_convert.h" nogil:
    void fl_bf16_round_f32(size_t n, const float *src, uint16_t *dst)
    void fl_bf16_round_f64(size_t n, const double *src, uint16_t *dst)
    void fl_bf16_widen_f32(size_t n, const uint16_t *src, float *dst)

cnp.import_array()

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
        if not is_int(d):
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
        self._watchers = None
        self._lock = threading.RLock()
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
        # only -1 entries change, and a parameter with -1 entries has no
        # storage that a plan could read: nothing to invalidate
        self._shape = self._merge_shape(new)

    @property
    def dtype(self):
        """The dtype of the values: a numpy dtype (float32, float64), or
        :data:`fastlazy.bfloat16`."""
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
        return shape_complete(self._shape)

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

    cdef tuple _new_storage(self, tuple shape, object dtype=None):
        """A zeroed (storage, logical view) pair for ``shape``, of the
        parameter's storage dtype (uint16 for bfloat16) or ``dtype``."""
        cdef cnp.ndarray st
        if dtype is None:
            dtype = np.uint16 if self._dtype is bfloat16 else self._dtype
        try:
            if self._transposed:
                st = np.zeros((shape[1], shape[0]), dtype=dtype)
                return st, st.T
            st = np.zeros(shape, dtype=dtype)
        except (MemoryError, ValueError) as exc:
            # NumPy says only "array is too big" or "Unable to allocate"
            nbytes = self._dtype.itemsize
            for d in shape:
                nbytes *= d
            kind = MemoryError if isinstance(exc, MemoryError) else ValueError
            raise kind(
                f"Parameter '{self.name}': cannot allocate its values, shape "
                f"{shape} of {self._dtype.name} ({_human_bytes(nbytes)}). "
                f"Use a smaller layer, or check the units/channels given "
                f"to it.") from None
        return st, st

    # -- plans reading this storage ----------------------------------------

    def _watch(self, plan):
        """Remember ``plan`` (weakly): it reads this storage and is told by
        ``plan._invalidate()`` when the storage moves."""
        if self._watchers is None:
            self._watchers = weakref.WeakSet()
        self._watchers.add(plan)

    cdef void _storage_moved(self):
        """The storage array was replaced (first allocation, cast, restore):
        every plan holding its old address must be rebuilt.  Writes in place
        never come here: plans read the values where they are."""
        if self._watchers is not None:
            for plan in list(self._watchers):
                plan._invalidate()
            self._watchers.clear()

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
        if self._dtype is bfloat16:
            return self._widened()
        return self._handout()

    cdef object _widened(self):
        """A bfloat16 parameter's values as a new read-only float32 array
        (exact): writes go through set_data, which rounds."""
        cdef cnp.ndarray st = self._storage
        cdef cnp.ndarray out = np.empty((<object>st).shape, np.float32)
        cdef size_t n = st.size
        cdef const uint16_t *src = <const uint16_t *>cnp.PyArray_DATA(st)
        cdef float *dst = <float *>cnp.PyArray_DATA(out)
        with nogil:
            fl_bf16_widen_f32(n, src, dst)
        view = out.T if self._transposed else out
        view.flags.writeable = False
        return view

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

    def list_data(self):
        """``[data()]`` (Gluon keeps one copy per device; fastlazy one)."""
        return [self.data()]

    def _storage_array(self):
        """The underlying C-contiguous storage (transposed for Dense weights;
        the uint16 patterns of a bfloat16 parameter).  Writable and
        unguarded: counts as a write (tests only)."""
        self._version += 1
        if self._dtype is bfloat16:
            self._storage_moved()
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
        if shape_complete(self._shape):
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
        arr = _as_values(data, f"Parameter '{self.name}'.set_data")
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
            _copy_values(st, view, arr, self._transposed)
            self._shape = merged
            self._storage = st
            self._pending = None
            self._state = INITIALIZED
            self._version += 1
            self._storage_moved()
        else:
            _copy_values(self._storage, self._view(), arr, self._transposed)
            self._state = INITIALIZED
            self._version += 1
            if self._dtype is bfloat16:
                # plans keep the values in their kernel's layout
                self._storage_moved()

    # -- initialization ----------------------------------------------------

    def initialize(self, init=None, default_init=None, force_reinit=False,
                   ctx=None, _key=None):
        """Initialize now if the shape is known; otherwise wait for it.

        The initializer is the parameter's own ``init`` if it has one, else
        ``init``, else ``default_init``, else ``init.Uniform()``.  Calling it
        again on an initialized parameter warns and changes nothing unless
        ``force_reinit=True``.  The positional order is
        ``(init, default_init, force_reinit)``; ``ctx`` (Gluon's second
        argument) is accepted by keyword and ignored: fastlazy runs on the
        CPU.

        Called on its own, this is one ``initialize()`` call for the random
        streams (see :mod:`fastlazy.random`): after a seed, the 1st, 2nd, ...
        call each draw different, reproducible values.
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
        # on its own, the parameter is the whole of its call: its key must
        # not depend on its name, which depends on how many blocks were
        # made before
        key = _key if _key is not None else _random.make_key("")
        if shape_complete(self._shape):
            with self._lock:
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
        cdef bint bf16 = self._dtype is bfloat16
        # a bfloat16 parameter's initializer fills float32 values laid out
        # as a float32 parameter's are (so it draws the same numbers), which
        # are then rounded
        st, view = self._new_storage(self._shape,
                                     np.float32 if bf16 else None)
        chosen(_init.InitDesc(self.name, key), view)
        if bf16:
            st = _round_bf16(st)
        if self._storage is None:
            self._storage = st
            self._storage_moved()
        else:
            np.copyto(self._storage, st)
            if bf16:
                self._storage_moved()
        self._version += 1
        self._state = INITIALIZED
        self._pending = None
        self._key = key

    def _finish_deferred_init(self):
        """Run the waiting initializer once the shape is complete.  Several
        networks may share this parameter and finish it from several
        threads: it is initialized once, the others wait for that."""
        if self._state == DEFERRED:
            with self._lock:
                if self._state != DEFERRED:
                    return
                if not shape_complete(self._shape):
                    raise DeferredInitializationError(
                        self._not_ready_message())
                self._run_init(self._pending, self._key)
        elif self._state == UNSET:
            raise DeferredInitializationError(self._not_ready_message())

    def cast(self, dtype):
        """Change the dtype, converting stored values: float32, float64 or
        'bfloat16' (rounded to nearest even; back to a float is exact).  An
        uninitialized parameter keeps the dtype for when it is created."""
        new = _float_dtype(dtype, f"Parameter '{self.name}'.cast")
        if new is self._dtype or (new is not bfloat16 and
                                  self._dtype is not bfloat16 and
                                  new == self._dtype):
            return
        if self._storage is not None:
            if new is bfloat16:
                self._storage = _round_bf16(self._storage)
            elif self._dtype is bfloat16:
                self._storage = np.ascontiguousarray(
                    _widen_bf16(self._storage), dtype=new)
            else:
                self._storage = np.ascontiguousarray(self._storage,
                                                     dtype=new)
        self._dtype = new
        self._packed = None
        self._version += 1
        self._storage_moved()

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
        cdef object before = self._storage
        (self._shape, self._state, self._storage, self._pending, self._key,
         self._dtype, saved) = snap
        if saved is not None:
            np.copyto(self._storage, saved)
        self._version += 1
        if self._storage is not before or (saved is not None and
                                           self._dtype is bfloat16):
            self._packed = None
            self._storage_moved()

    def _reset_key(self, key):
        """Give a deferred parameter the random key of its place in a net."""
        self._key = key

    # -- pickling ----------------------------------------------------------

    def __reduce_ex__(self, protocol):
        # the values as raw bytes (an out-of-band buffer with protocol 5):
        # a pickled network is its parameters plus a few hundred bytes
        cdef object values = None
        if self._storage is not None:
            values = pickle.PickleBuffer(self._storage) if protocol >= 5 \
                else self._storage.tobytes()
        return (_rebuild_parameter,
                (self.name, self._shape, self._dtype.str, self.init,
                 self.allow_deferred_init, self.grad_req, self._transposed,
                 self._state, values, self._pending, self._key))


def _rebuild_parameter(name, shape, dtype, init, allow_deferred, grad_req,
                       transposed, state, values, pending, key):
    cdef Parameter p = Parameter(name, shape, dtype, init, allow_deferred,
                                 grad_req, transposed)
    p._state = state
    if values is not None:
        stored = tuple(shape[::-1]) if transposed else tuple(shape)
        arr = np.frombuffer(values, dtype=np.uint16 if p._dtype is bfloat16
                            else dtype).reshape(stored)
        # a writable buffer (out of band, or a bytearray) becomes the storage
        # as it is; read-only bytes are copied
        if not arr.flags.writeable or not arr.flags.aligned:
            arr = arr.copy()
        p._storage = arr
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


cdef int _copy_into(object view, object arr) except -1:
    """``np.copyto(view, arr, casting="unsafe")``; into the transposed view
    of a Dense weight's storage, a C-contiguous array of its dtype is
    copied by OpenBLAS's cache-blocked transposing copy without the GIL
    (NumPy's strided copy of a 4096 x 1024 float32 weight took 70 ms on a
    Zen 3 core, this 3 ms)."""
    cdef cnp.ndarray v, a
    cdef blas_int rows, cols
    if isinstance(arr, np.ndarray) and isinstance(view, np.ndarray):
        v = view
        a = arr
        if v.ndim == 2 and a.ndim == 2 and a.dtype == v.dtype and \
                a.dtype in FLOAT_DTYPES and a.flags.c_contiguous and \
                v.flags.f_contiguous and not v.flags.c_contiguous and \
                a.shape[0] == v.shape[0] and a.shape[1] == v.shape[1] and \
                a.shape[0] < 2 ** 31 and a.shape[1] < 2 ** 31 and \
                a.dtype.isnative and not np.may_share_memory(a, v):
            rows = a.shape[0]
            cols = a.shape[1]
            if a.dtype.itemsize == 4:
                with nogil:
                    cblas_somatcopy(CblasRowMajor, CblasTrans, rows, cols,
                                    1.0, <const float *>a.data, cols,
                                    <float *>v.data, rows)
            else:
                with nogil:
                    cblas_domatcopy(CblasRowMajor, CblasTrans, rows, cols,
                                    1.0, <const double *>a.data, cols,
                                    <double *>v.data, rows)
            return 0
    np.copyto(view, arr, casting="unsafe")
    return 0


cdef bint shape_complete(tuple shape):
    if shape is None:
        return False
    for d in shape:
        if d == -1:
            return False
    return True


def _human_bytes(n):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"


def _float_dtype(dtype, where):
    """The dtype a parameter can have: a float32/float64 numpy dtype, or
    :data:`fastlazy.bfloat16` (for 'bfloat16', fastlazy.bfloat16 and
    ml_dtypes.bfloat16)."""
    if is_bfloat16(dtype):
        return bfloat16
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{where}: {dtype!r} is not a dtype") from None
    if is_bfloat16(dt):
        return bfloat16
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{where}: dtype must be float32, float64 or "
                        f"bfloat16, got {dt.name}")
    return dt


def _round_bf16(object values):
    """A new uint16 array of ``values`` (any float or integer array, or
    ml_dtypes bfloat16) rounded to bfloat16, to nearest even; C order, the
    shape of ``values``.  Runs without the GIL."""
    cdef cnp.ndarray src
    cdef cnp.ndarray out
    cdef size_t n
    cdef void *sp
    cdef uint16_t *dp
    cdef bint f32
    if is_bfloat16(values.dtype):
        return np.array(values, order="C").view(np.uint16)
    f32 = values.dtype == np.float32
    src = np.ascontiguousarray(values, dtype=np.float32 if f32
                               else np.float64)
    out = np.empty((<object>src).shape, np.uint16)
    n = src.size
    sp = cnp.PyArray_DATA(src)
    dp = <uint16_t *>cnp.PyArray_DATA(out)
    with nogil:
        if f32:
            fl_bf16_round_f32(n, <const float *>sp, dp)
        else:
            fl_bf16_round_f64(n, <const double *>sp, dp)
    return out


def _widen_bf16(object patterns):
    """The float32 values of a uint16 array of bfloat16 patterns (exact);
    a new C-ordered array of the same shape."""
    cdef cnp.ndarray src = np.ascontiguousarray(patterns, dtype=np.uint16)
    cdef cnp.ndarray out = np.empty((<object>src).shape, np.float32)
    cdef size_t n = src.size
    cdef const uint16_t *sp = <const uint16_t *>cnp.PyArray_DATA(src)
    cdef float *dp = <float *>cnp.PyArray_DATA(out)
    with nogil:
        fl_bf16_widen_f32(n, sp, dp)
    return out


cdef void _copy_values(cnp.ndarray storage, object view, object arr,
                       bint transposed) except *:
    """Write ``arr`` (the logical shape) into a parameter's storage: cast
    (NumPy's unsafe casting) into a float storage through its logical
    ``view``, rounded to bfloat16 into a uint16 one."""
    if storage.dtype == np.uint16:
        # the source in storage order (a copy), then rounded in place
        np.copyto(storage, _round_bf16(arr.T if transposed else arr))
    elif is_bfloat16(arr.dtype):
        np.copyto(view, _widen_bf16(arr.view(np.uint16)))
    else:
        _copy_into(view, arr)


def _as_values(data, where):
    """``data`` as an array of numbers for a parameter: as_numeric_array,
    and ml_dtypes bfloat16 arrays as they are."""
    arr = np.asarray(data) if isinstance(data, np.ndarray) else None
    if arr is not None and is_bfloat16(arr.dtype):
        return arr
    return as_numeric_array(data, where)


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


