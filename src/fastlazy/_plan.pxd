# The C-level contract of the forward plan: one struct per step kind with
# named members, the step header every kind shares, and the Plan object.
#
# A step reads its inputs from, and writes its output to, *buffers* named by
# index: buffer 0 is the network's input, the rest are intermediates (or the
# network's output), each placed by the plan in a workspace slot that is
# reused once every reader of the buffer has run.  For one row tile, bufs[i]
# points at the tile's first sample in buffer i; a step processes b samples,
# each of its own per-sample size.

cimport numpy as cnp

cdef enum:
    FL_MAX_SRC = 8            # inputs of one step

cdef enum StepKind:
    STEP_DENSE = 0
    STEP_ACT = 1
    STEP_CONV2D = 2
    STEP_POOL2D = 3
    STEP_BATCHNORM = 4
    STEP_LAYERNORM = 5


cdef struct Step
ctypedef void (*step_fn)(const Step *s, Py_ssize_t b, char *const *bufs,
                         char *work) noexcept nogil


cdef struct DenseArgs:
    char *w             # weight, stored transposed: (K, M), C order
    char *bias          # (M,) or NULL
    char *packed        # panel layout of w, current for this call, or NULL
    void *wparam        # the weight's Parameter (kept alive by the plan)
    int act
    int route           # -1: by shape; else a DenseRoute (test twins)
    Py_ssize_t rows     # matrix rows per sample (flatten=False: several)
    Py_ssize_t K        # input features
    Py_ssize_t M        # output features


cdef struct ConvGeometry:
    Py_ssize_t C, H, W  # input channels, height, width
    Py_ssize_t O        # output channels
    Py_ssize_t kh, kw, sh, sw, ph, pw, dh, dw
    Py_ssize_t groups
    Py_ssize_t OH, OW


cdef struct ConvArgs:
    ConvGeometry g
    char *w             # (O, C / groups, kh, kw)
    char *bias          # (O,) or NULL
    # a BatchNorm folded into the output pass (all NULL when none)
    char *bn_gamma
    char *bn_beta
    char *bn_mean
    char *bn_var
    double bn_eps
    int act
    # schedule: > 0 output rows per im2col block; 0 a plain 1x1 (no
    # packing); < 0 -(samples packed side by side per GEMM)
    Py_ssize_t block_rows
    Py_ssize_t slots    # im2col slots in the workspace (threads of a big one)


cdef struct PoolGeometry:
    Py_ssize_t C, H, W
    Py_ssize_t kh, kw, sh, sw, ph, pw
    Py_ssize_t OH, OW


cdef struct PoolArgs:
    PoolGeometry g
    int is_max
    int count_include_pad


cdef struct NormArgs:
    # per sample: outer x C x inner values, normalized per channel (BatchNorm)
    # or over C at each (outer, inner) position (LayerNorm)
    char *gamma         # or NULL (ones)
    char *beta          # or NULL (zeros)
    char *mean          # BatchNorm's running statistics
    char *var
    double eps
    int act
    Py_ssize_t outer, C, inner


cdef struct ActArgs:
    int act


cdef union StepArgs:
    DenseArgs dense
    ConvArgs conv
    PoolArgs pool
    NormArgs norm
    ActArgs act


cdef struct Step:
    step_fn run
    int kind
    int nsrc
    int src[FL_MAX_SRC]     # buffers read
    int dst                 # buffer written (== src[0]: in place)
    Py_ssize_t itemsize
    Py_ssize_t in_size      # elements per sample read from src[0]
    Py_ssize_t out_size     # elements per sample written
    Py_ssize_t work         # workspace elements per sample
    Py_ssize_t work_fixed   # workspace elements per call
    Py_ssize_t macs         # multiply-adds per sample (decides threading)
    StepArgs a


cdef struct PlanData:
    Step *steps
    int nsteps
    int nbufs
    int nslots
    int *buf_slot           # per buffer: slot, or -1 input, -2 output
    Py_ssize_t *slot_size   # per slot: elements per sample
    Py_ssize_t itemsize
    Py_ssize_t in_size      # elements per sample
    Py_ssize_t out_size
    Py_ssize_t max_width    # widest per-sample buffer (row-tile size)
    Py_ssize_t max_work     # largest per-sample workspace of a step
    Py_ssize_t fixed_work   # largest per-call workspace of a step
    Py_ssize_t macs         # multiply-adds per sample
    Py_ssize_t dense_macs   # of which in dense steps
    bint copy_out           # the output is the input (no step writes it)


cdef class Plan:
    cdef PlanData d
    cdef int typenum
    cdef unsigned long long config_epoch
    cdef bint stale
    cdef readonly tuple in_sample_shape
    cdef readonly tuple out_sample_shape
    cdef int in_ndim
    cdef Py_ssize_t in_dims[32]
    cdef Py_ssize_t out_dims[32]
    cdef int out_ndim
    cdef list keep              # arrays and parameters the steps point into
    cdef list weights           # per step: the Dense weight Parameter or None
    cdef object dtype
    cdef str where
    # one cached workspace; a concurrent call on the same plan gets its own
    cdef char *scratch
    cdef Py_ssize_t scratch_bytes
    cdef bint scratch_busy
    cdef object __weakref__

    cpdef object run(self, object x)
    cdef Step *_packed_steps(self, Py_ssize_t tile) except? NULL
    cdef Py_ssize_t _tile_rows(self) noexcept
    cdef cnp.ndarray coerce(self, object x)
