# The C-level contract of Parameter, for the modules that cimport it (the
# forward plan reads storage pointers, write versions and live-view counts
# straight from these fields, at C-call cost).

cimport numpy as cnp

cdef enum ParamState:
    UNSET = 0
    DEFERRED = 1
    INITIALIZED = 2


cdef class Parameter:
    cdef readonly str name
    cdef tuple _shape
    cdef object _dtype
    cdef public object init
    cdef public object grad_req
    cdef public bint allow_deferred_init
    cdef int _state
    # C-contiguous values (the transpose of the logical array for Dense
    # weights); allocated once, then only written in place
    cdef cnp.ndarray _storage
    cdef bint _transposed
    cdef object _pending          # the initializer a deferred parameter waits with
    cdef object _key              # its random key (see fastlazy.random)
    # Every write path and every data() hand-out bumps _version;
    # _live_views counts the data() arrays alive (see _ViewGuard).
    cdef unsigned long long _version
    cdef int _live_views
    # Owned by the forward plan (its packed copy of these values); the
    # parameter only drops it when its dtype changes.
    cdef public object _packed
    # Plans reading this storage: told when it moves (see _storage_moved)
    cdef object _watchers
    # Serialises initialization and packing of this one parameter
    cdef readonly object _lock
    cdef object __weakref__

    cpdef tuple _merge_shape(self, tuple new)
    cdef tuple _new_storage(self, tuple shape, object dtype=*)
    cdef object _view(self)
    cdef object _handout(self)
    cdef object _widened(self)
    cdef _run_init(self, chosen, key)
    cdef void _storage_moved(self)


cdef bint shape_complete(tuple shape)
