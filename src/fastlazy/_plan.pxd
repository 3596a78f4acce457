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
    FL_MAX_SRC = 16           # inputs of one step
    FL_MAX_IO = 16            # inputs, and outputs, of one plan

cdef enum StepKind:
    STEP_DENSE = 0
    STEP_ACT = 1
    STEP_CONV2D = 2
    STEP_POOL2D = 3
    STEP_BATCHNORM = 4
    STEP_LAYERNORM = 5
    STEP_BINARY = 6
    STEP_SCALAR = 7
    STEP_CONCAT = 8
    STEP_SLICE = 9
    STEP_REDUCE = 10
    STEP_SOFTMAX = 11
    STEP_PRELU = 12
    STEP_COPY = 13
    STEP_QDENSE = 14          # a Dense layer in int8 (_plan_quant.pxi)
    STEP_QCONV = 15           # a Conv2D layer in int8
    STEP_DENSE_BF16 = 16      # a Dense step on bfloat16 weights


cdef struct Step
ctypedef void (*step_fn)(const Step *s, Py_ssize_t b, char *const *bufs,
                         char *work) noexcept nogil


cdef struct DenseArgs:
    char *w             # weight, stored transposed: (K, M), C order
                        # (bfloat16 weights: their row copy for 1-2 rows,
                        # or NULL; _plan_bf16.pxi)
    char *bias          # (M,) or NULL
    char *packed        # a copy of w current for this call, or NULL
                        # (bfloat16: its pair panels, made with the plan)
    int packed_layout   # its layout (_plan's PackLayout: panels or rows)
    void *wparam        # the weight's Parameter (kept alive by the plan)
    int act
    int route           # -1: by shape; else a DenseRoute (test twins)
    # a BatchNorm over the output features folded into the output pass
    # (bn_mean NULL when none): y = act((x @ w) * scale + shift), scale and
    # shift from gamma, beta, the running statistics and the bias
    char *bn_gamma
    char *bn_beta
    char *bn_mean
    char *bn_var
    double bn_eps
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
    bint depthwise      # groups == channels: the table's dwconv, no im2col;
                        # its slots hold the kernel's scratch


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
    int act             # a kernel code, or one of the coded ACT_* in _plan
    double alpha        # slope (leaky), alpha (elu), low bound (clip), beta (swish)
    double beta         # high bound (clip)


cdef struct BinaryArgs:
    # y = a op b over a per-sample shape of at most 4 dimensions, each
    # operand read with its own strides (0 along a broadcast dimension);
    # stride index 0 is the batch (0 for a parameter operand)
    int op
    Py_ssize_t dims[4]
    Py_ssize_t sa[5]
    Py_ssize_t sb[5]


cdef struct ScalarArgs:
    int op              # y = x op value, or value op x for the reversed ops
    double value


cdef struct ConcatArgs:
    # per sample: outer chunks; input k gives part[k] values to each chunk
    Py_ssize_t outer
    Py_ssize_t part[FL_MAX_SRC]


cdef struct SliceArgs:
    # per sample: outer chunks of in_chunk values; keep [begin, begin + out_chunk)
    Py_ssize_t outer, in_chunk, begin, out_chunk


cdef struct ReduceArgs:
    # per sample: (outer, mid, inner) -> (outer, inner) over mid
    int op
    Py_ssize_t outer, mid, inner


cdef struct SoftmaxArgs:
    # per sample: softmax over C at each (outer, inner) position
    int log
    Py_ssize_t outer, C, inner


cdef struct PreluArgs:
    # y = x > 0 ? x : alpha[c] * x, c the channel of (outer, C, inner)
    char *alpha
    Py_ssize_t alpha_n  # 1 (one slope) or C
    Py_ssize_t outer, C, inner


cdef struct QuantArgs:
    # A Dense (K inputs, M outputs, rows per sample) or a Conv2D (geometry
    # g, K = C*kh*kw per output pixel, M = O) run in int8; see
    # _plan_quant.pxi and kernels/qgemm.inc.h.
    const float *w          # the float32 weight, re-quantized when it changes
    Py_ssize_t sk, sm       # w[k * sk + m * sm]
    signed char *pk         # packed int8 weights (the QWeights' buffers)
    float *ws               # per-column scales, padded to whole panels
    int *wsum               # per-column sums of the int8 weights
    signed char *rw         # their row copy for the dot kernel (qdot.inc.h;
                            # NULL: the layer has too many outputs)
    void *qstate            # its QWeights' refresh state (QWState; the plan
                            # keeps the QWeights alive)
    const unsigned long long *wversion    # the weight's write version
    const int *wviews                     # its live data() views
    const char *bias        # (M,) float32 or NULL
    const float *calib      # static: (lo, hi) the input was calibrated to;
                            # NULL: dynamic (each row's own range)
    char *bn_gamma          # a folded BatchNorm (bn_mean NULL when none)
    char *bn_beta
    char *bn_mean
    char *bn_var
    double bn_eps
    int act
    Py_ssize_t rows, K, M   # per sample: rows of K inputs -> M outputs
    Py_ssize_t npan         # panels of output columns
    Py_ssize_t ldq          # bytes per quantized row
    Py_ssize_t chunk        # rows quantized at a time (pixels for a conv)
    ConvGeometry g          # STEP_QCONV only


cdef union StepArgs:
    DenseArgs dense
    ConvArgs conv
    PoolArgs pool
    NormArgs norm
    ActArgs act
    BinaryArgs binary
    ScalarArgs scalar
    ConcatArgs concat
    SliceArgs slice
    ReduceArgs reduce
    SoftmaxArgs softmax
    PreluArgs prelu
    QuantArgs quant


cdef struct Step:
    step_fn run
    int kind
    int nsrc
    int src[FL_MAX_SRC]     # buffers read
    int dst                 # buffer written (== src[0]: in place)
    Py_ssize_t itemsize
    Py_ssize_t in_size      # elements per sample read from src[0]
    Py_ssize_t out_size     # elements per sample written
    Py_ssize_t work         # workspace bytes per call (64-byte aligned)
    Py_ssize_t macs         # multiply-adds per sample (decides threading)
    StepArgs a


cdef enum BufKind:
    BUF_SCRATCH = 0         # a workspace slot (buf_index: the slot)
    BUF_INPUT = 1           # the plan's input buf_index
    BUF_OUTPUT = 2          # the plan's output buf_index
    BUF_PARAM = 3           # a parameter's storage, the same for every sample
    BUF_UNUSED = 4          # named by the trace, read and written by no step


cdef struct PlanData:
    Step *steps
    int nsteps
    int nbufs
    int nslots
    int *buf_kind           # per buffer: a BufKind
    int *buf_index          # per buffer: slot, input or output number
    char **buf_param        # per buffer: a BUF_PARAM's storage, else NULL
    Py_ssize_t *slot_size   # per slot: elements per sample
    Py_ssize_t itemsize
    int nin
    int nout
    Py_ssize_t in_sizes[FL_MAX_IO]    # elements per sample of each input
    Py_ssize_t out_sizes[FL_MAX_IO]
    # outputs no step writes (an input, a parameter or another output's
    # buffer passed straight through): copied from that buffer after a tile
    int ncopies
    int copy_out[FL_MAX_IO]           # output number
    int copy_from[FL_MAX_IO]          # buffer
    Py_ssize_t max_width    # widest per-sample buffer (row-tile size)
    Py_ssize_t max_work     # largest workspace of a step, bytes per call
    Py_ssize_t macs         # multiply-adds per sample
    Py_ssize_t dense_macs   # of which in dense steps


cdef struct RunCtx:
    const PlanData *d
    const char *xs[FL_MAX_IO]
    char *outs[FL_MAX_IO]
    Py_ssize_t n
    Py_ssize_t tile
    char *scratch           # per thread: the slots, then the step workspace
    Py_ssize_t *slot_off    # byte offset of each slot in a thread's scratch
    Py_ssize_t work_off
    Py_ssize_t thread_bytes
    char **bufs             # per thread: nbufs buffer pointers
    long next_tile
    const Step *step        # column-parallel: the dense step
    const char *src
    char *dst
    # one row through a big dense step on BLAS: its weight rows in nchunks
    # chunks of kchunk, each chunk's partial output (M values) in partial
    char *partial
    Py_ssize_t nchunks
    Py_ssize_t kchunk


cdef class _StepCopy:
    cdef PlanData d
    cdef Step *steps            # malloc'ed, d.steps
    cdef int nsteps
    cdef list copies            # per step: the PackedWeights it reads, or None
    cdef Py_ssize_t tile        # the rows per step it was made for
    cdef bint complete          # every step that wanted a copy got one


cdef class Plan:
    cdef PlanData d
    cdef int typenum
    cdef unsigned long long config_epoch
    cdef bint stale
    cdef readonly tuple in_sample_shape     # of the first input
    cdef readonly tuple out_sample_shape    # of the first output
    cdef readonly tuple in_shapes           # per-sample shape of each input
    cdef readonly tuple out_shapes
    cdef readonly bint multi_output         # returns a tuple
    cdef bint follows_input_dtype           # rebuilt for another float input
    cdef int in_ndim
    cdef Py_ssize_t in_dims[32]
    cdef Py_ssize_t out_dims[32]
    cdef int out_ndim
    cdef list keep              # arrays and parameters the steps point into
    cdef object dtype
    cdef readonly str where     # names the network in errors
    # one cached workspace; a concurrent call on the same plan gets its own
    cdef char *scratch
    cdef Py_ssize_t scratch_bytes
    cdef bint scratch_busy
    # the smallest batch at which a dense step runs on packed weights
    # (PY_SSIZE_T_MAX: none does); below it a call skips _step_copy_for
    cdef Py_ssize_t pack_min_n
    cdef _StepCopy step_copy    # the last steps on weight copies
    # byte ranges [lo, hi) of the parameter storage the steps read, for the
    # overlap check of net(x, out=...)
    cdef char **param_lo
    cdef char **param_hi
    cdef int nparam_ranges
    cdef object __weakref__

    cpdef object run(self, object x, object out=*)
    cdef object _run(self, tuple arrs, object out=*, tuple given=*)
    cdef void _note_packing(self)
    cdef int _note_param_ranges(self) except -1
    cdef int _check_out(self, object out, int k, Py_ssize_t n,
                        cnp.ndarray arr, tuple inputs) except -1
    cdef int _execute(self, RunCtx *c, Py_ssize_t n) except -1
    cdef _StepCopy _step_copy_for(self, Py_ssize_t tile)
    cdef Py_ssize_t _tile_rows(self) noexcept
    cdef cnp.ndarray coerce(self, object x)
