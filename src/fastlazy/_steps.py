"""The typed steps layers describe and the forward plan runs, and every
fusion rule.

A layer's ``_emit`` turns its part of a network into steps of the kinds
below (one NamedTuple per kind, named fields); the compiler
(:mod:`fastlazy._compile`) collects them with a :class:`StepBuilder`,
:func:`fuse` merges neighbours, and :class:`fastlazy._plan.Plan` turns each
into a C struct of the same name's arguments.  Steps never talk about "the
previous step's output": each reads and writes *buffers* named by index
(buffer 0 is the network's input), so the plan can run any DAG of steps.

A new kind of layer adds, in this order: a step kind here (and its fusion
rules, if any), its C struct and step function in ``_plan.pxd`` /
``_plan.pyx`` (or ``_plan_conv.pxi``), its kernel in the C headers, and the
layer class with its shape rule (``_infer``) and ``_emit``.
"""

from typing import NamedTuple, Optional

from ._util import prod

__all__ = ["DenseStep", "Int8Spec", "ActStep", "ConvGeometry", "FoldedBatchNorm",
           "ConvStep", "PoolGeometry", "PoolStep", "BatchNormStep",
           "LayerNormStep", "BinaryStep", "ScalarStep", "ConcatStep",
           "SliceStep", "ReduceStep", "SoftmaxStep", "PReluStep", "CopyStep",
           "StepBuilder", "fuse", "set_batchnorm_fusion",
           "batchnorm_fusion"]

# Activation codes are the kernels' (fastlazy._plan.ACTIVATIONS); 0 is none.
NO_ACT = 0


class _Step:
    """What every step kind answers.  Each kind is its fields (a NamedTuple:
    immutable, ``_replace`` for fusion) plus this."""

    __slots__ = ()

    #: element-wise: may run in place (its output over its input)
    elementwise = False

    @property
    def inputs(self):
        """The buffers this step reads."""
        return (self.src,)

    def params(self):
        """The Parameters this step reads (the plan watches their storage)."""
        return tuple(p for p in self._param_fields() if p is not None)

    def _param_fields(self):
        return ()


class _DenseStepFields(NamedTuple):
    src: int
    dst: int
    weight: object          # Parameter, stored transposed (K, M)
    bias: Optional[object]  # Parameter (M,) or None
    act: int
    rows: int               # matrix rows per sample (flatten=False: many)
    K: int                  # input features
    M: int                  # output features
    bn: Optional["FoldedBatchNorm"] = None   # over the M output features
    quant: Optional["Int8Spec"] = None       # run in int8 (fl.quantize)


class DenseStep(_DenseStepFields, _Step):
    """``dst = act(src @ weight.T + bias)`` over ``rows`` rows per sample;
    in int8 when ``quant`` is set."""

    __slots__ = ()

    def _param_fields(self):
        bn = self.bn
        return (self.weight, self.bias) + (tuple(bn[:4]) if bn else ()) \
            + _quant_params(self.quant)


class Int8Spec:
    """How fl.quantize marked a Dense or Conv2D layer: its step runs on
    int8 weights (one scale per output channel) and uint8 activations --
    quantized per row at each call (``mode='dynamic'``; a convolution: per
    sample), or with the scale of the range ``calib`` (a Parameter holding
    (lo, hi), calibrated by ``calib_mode``; ``mode='static'``).

    The layer's float32 weight stays its parameter; the int8 copy the plan
    makes of it is cached here (``_cache``, never pickled or copied)."""

    __slots__ = ("mode", "calib_mode", "calib", "_cache")

    def __init__(self, mode, calib_mode=None, calib=None):
        self.mode = mode
        self.calib_mode = calib_mode
        self.calib = calib
        self._cache = None

    def __getstate__(self):
        return (self.mode, self.calib_mode, self.calib)

    def __setstate__(self, state):
        self.mode, self.calib_mode, self.calib = state
        self._cache = None

    def __deepcopy__(self, memo):
        import copy
        return Int8Spec(self.mode, self.calib_mode,
                        copy.deepcopy(self.calib, memo))

    def describe(self):
        """``'int8 dynamic'``, ``'int8 static (entropy)'``."""
        if self.mode == "static":
            return f"int8 static ({self.calib_mode})"
        return "int8 dynamic"

    def __repr__(self):
        return f"Int8Spec({self.describe()!r})"


def _quant_params(quant):
    return (quant.calib,) if quant is not None and quant.calib is not None \
        else ()


class _ActStepFields(NamedTuple):
    src: int
    dst: int
    act: int
    size: int
    alpha: float = 0.0      # leaky slope, elu alpha, clip low, swish beta
    beta: float = 0.0       # clip high


class ActStep(_ActStepFields, _Step):
    """An activation, element-wise over ``size`` values per sample."""

    __slots__ = ()

    elementwise = True


class ConvGeometry(NamedTuple):
    """A 2-D convolution's shapes: input (C, H, W), O output channels,
    kernel, strides, padding, dilation, groups, output (OH, OW)."""
    C: int
    H: int
    W: int
    O: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int
    groups: int
    OH: int
    OW: int


class FoldedBatchNorm(NamedTuple):
    """A BatchNorm applied in a convolution's output pass (from the live
    parameters at every call)."""
    gamma: Optional[object]
    beta: Optional[object]
    mean: object
    var: object
    eps: float


class _ConvStepFields(NamedTuple):
    src: int
    dst: int
    weight: object
    bias: Optional[object]
    act: int
    geom: ConvGeometry
    bn: Optional[FoldedBatchNorm] = None
    quant: Optional[Int8Spec] = None         # run in int8 (fl.quantize)


class ConvStep(_ConvStepFields, _Step):
    """``dst = act(bn(conv2d(src, weight) + bias))``, NCHW; in int8 when
    ``quant`` is set (one group only)."""

    __slots__ = ()

    def _param_fields(self):
        bn = self.bn
        return (self.weight, self.bias) + (tuple(bn[:4]) if bn else ()) \
            + _quant_params(self.quant)


class PoolGeometry(NamedTuple):
    """A 2-D pooling's shapes: input (C, H, W), window, strides, padding,
    output (OH, OW)."""
    C: int
    H: int
    W: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    OH: int
    OW: int


class _PoolStepFields(NamedTuple):
    src: int
    dst: int
    is_max: bool
    count_include_pad: bool
    geom: PoolGeometry


class PoolStep(_PoolStepFields, _Step):
    """Max or average pooling over height and width."""

    __slots__ = ()


class _BatchNormStepFields(NamedTuple):
    src: int
    dst: int
    gamma: Optional[object]
    beta: Optional[object]
    mean: object
    var: object
    eps: float
    outer: int
    C: int
    inner: int
    act: int = NO_ACT


class BatchNormStep(_BatchNormStepFields, _Step):
    """Inference BatchNorm per channel of ``outer x C x inner`` values per
    sample, then ``act``."""

    __slots__ = ()

    elementwise = True

    def _param_fields(self):
        return (self.gamma, self.beta, self.mean, self.var)


class _LayerNormStepFields(NamedTuple):
    src: int
    dst: int
    gamma: Optional[object]
    beta: Optional[object]
    eps: float
    outer: int
    C: int
    inner: int


class LayerNormStep(_LayerNormStepFields, _Step):
    """LayerNorm over C at each of ``outer x inner`` positions per sample."""

    __slots__ = ()

    elementwise = True

    def _param_fields(self):
        return (self.gamma, self.beta)


# ---------------------------------------------------------------------------
# Graph steps


class _BinaryStepFields(NamedTuple):
    src: int
    src2: int
    dst: int
    op: str                 # 'add', 'sub', 'mul', 'div', 'max', 'min'
    dims: tuple             # output per sample, 4 dimensions
    a_strides: tuple        # (batch, d0, d1, d2, d3) in elements, 0: broadcast
    b_strides: tuple
    a_size: int             # values per sample of the first operand


class BinaryStep(_BinaryStepFields, _Step):
    """``dst = src op src2`` with NumPy broadcasting, by strides (a
    parameter operand has batch stride 0)."""

    __slots__ = ()

    @property
    def elementwise(self):
        # in place over the first operand when it is read element by
        # element in output order (not broadcast)
        return self.a_size == prod(self.dims) and self.a_strides[0] != 0 \
            and all(s != 0 or d == 1
                    for s, d in zip(self.a_strides[1:], self.dims))

    @property
    def inputs(self):
        return (self.src, self.src2)


class _ScalarStepFields(NamedTuple):
    src: int
    dst: int
    op: str                 # also 'rsub', 'rdiv' (value op x) and 'pow'
    value: float
    size: int


class ScalarStep(_ScalarStepFields, _Step):
    """``dst = src op value``, element-wise."""

    __slots__ = ()
    elementwise = True


class _ConcatStepFields(NamedTuple):
    srcs: tuple
    dst: int
    outer: int              # chunks per sample (the axes before the axis)
    parts: tuple            # values of each input per chunk


class ConcatStep(_ConcatStepFields, _Step):
    """Concatenation along an axis: per chunk, each input's part in turn."""

    __slots__ = ()

    @property
    def inputs(self):
        return tuple(self.srcs)


class _SliceStepFields(NamedTuple):
    src: int
    dst: int
    outer: int
    in_chunk: int
    begin: int
    out_chunk: int


class SliceStep(_SliceStepFields, _Step):
    """Per chunk of ``in_chunk`` values keep ``[begin, begin + out_chunk)``."""

    __slots__ = ()


class _ReduceStepFields(NamedTuple):
    src: int
    dst: int
    op: str                 # 'sum', 'mean', 'max'
    outer: int
    mid: int
    inner: int


class ReduceStep(_ReduceStepFields, _Step):
    """``(outer, mid, inner) -> (outer, inner)`` per sample."""

    __slots__ = ()


class _SoftmaxStepFields(NamedTuple):
    src: int
    dst: int
    log: bool
    outer: int
    C: int
    inner: int


class SoftmaxStep(_SoftmaxStepFields, _Step):
    """(log-)softmax over C at each of ``outer x inner`` positions."""

    __slots__ = ()
    elementwise = True


class _PReluStepFields(NamedTuple):
    src: int
    dst: int
    alpha: object           # Parameter: one slope, or one per channel
    outer: int
    C: int
    inner: int


class PReluStep(_PReluStepFields, _Step):
    """``x if x > 0 else alpha[c] * x``."""

    __slots__ = ()
    elementwise = True

    def _param_fields(self):
        return (self.alpha,)


class _CopyStepFields(NamedTuple):
    src: int
    dst: int
    size: int


class CopyStep(_CopyStepFields, _Step):
    """``dst = src`` (a buffer passed on where a new one is needed)."""

    __slots__ = ()


class StepBuilder:
    """Collects the steps of one network.  ``input(shape)`` names an input
    buffer, ``param(p)`` a buffer that is parameter ``p``'s storage,
    ``buffer(size)`` a new intermediate of ``size`` values per sample;
    ``add(step)`` appends a step and returns the buffer it writes."""

    def __init__(self, in_sample_shape=None):
        self.sizes = []
        self.steps = []
        self.inputs = []
        self.in_shapes = []
        self.params = {}            # buffer -> Parameter
        self._param_bufs = {}       # id(Parameter) -> buffer
        if in_sample_shape is not None:
            self.input(in_sample_shape)

    def input(self, sample_shape):
        b = self.buffer(prod(sample_shape))
        self.inputs.append(b)
        self.in_shapes.append(tuple(sample_shape))
        return b

    def param(self, p):
        b = self._param_bufs.get(id(p))
        if b is None:
            b = self.buffer(prod(p.shape))
            self.params[b] = p
            self._param_bufs[id(p)] = b
        return b

    def buffer(self, size):
        self.sizes.append(int(size))
        return len(self.sizes) - 1

    def add(self, step):
        self.steps.append(step)
        return step.dst


# ---------------------------------------------------------------------------
# Fusion

_fuse_batchnorm = True


def set_batchnorm_fusion(enabled):
    """Turn folding a BatchNorm into the convolution before it on or off
    (default on; off exists to compare the two).  Returns the previous
    setting; every plan is rebuilt on its next call."""
    global _fuse_batchnorm
    from . import _plan
    old = _fuse_batchnorm
    _fuse_batchnorm = bool(enabled)
    _plan.invalidate_all()
    return old


def batchnorm_fusion():
    """Whether a BatchNorm is folded into the convolution before it."""
    return _fuse_batchnorm


def _merge(prev, step):
    """``prev`` with ``step`` folded into it, or None.  ``step`` reads only
    ``prev``'s output, which nothing else reads."""
    if isinstance(step, ActStep):
        # only the kernels' activations (codes below 16) run in epilogues
        if isinstance(prev, (DenseStep, ConvStep, BatchNormStep)) \
                and prev.act == NO_ACT and step.act < 16:
            return prev._replace(act=step.act, dst=step.dst)
        return None
    if isinstance(step, BatchNormStep) and _fuse_batchnorm and \
            isinstance(prev, (ConvStep, DenseStep)) and \
            prev.act == NO_ACT and prev.bn is None:
        if isinstance(prev, ConvStep):
            g = prev.geom
            fits = step.outer == 1 and step.C == g.O and \
                step.inner == g.OH * g.OW
        else:
            # per output feature: (rows, M) per sample, normalized over M
            fits = step.outer == prev.rows and step.C == prev.M and \
                step.inner == 1
        if fits:
            bn = FoldedBatchNorm(step.gamma, step.beta, step.mean, step.var,
                                 step.eps)
            return prev._replace(bn=bn, act=step.act, dst=step.dst)
    return None


def fuse(steps, outputs):
    """Return ``steps`` with every step that can be folded into its producer
    folded (the rules below), and ``outputs`` (buffers the caller reads)
    renamed where a fold removed them.

    * an activation into a Dense, Conv2D or BatchNorm step without one;
    * a BatchNorm over a convolution's output channels, or over a Dense
      layer's output features, into that step (``set_batchnorm_fusion``),
      with its activation -- wherever the BatchNorm alone reads the
      layer's output, in a chain or a graph;
    * an activation ``None`` disappears.

    A step is folded only when it alone reads its producer's output.
    """
    readers = {}
    for st in steps:
        for b in st.inputs:
            readers[b] = readers.get(b, 0) + 1
    for b in outputs:
        readers[b] = readers.get(b, 0) + 1
    rename = {}
    out = []
    producer = {}       # buffer -> index in out
    for st in steps:
        if rename:
            st = _renamed(st, rename)
        if isinstance(st, ActStep) and st.act == NO_ACT:
            rename[st.dst] = st.src
            readers[st.src] = readers.get(st.src, 0) - 1 \
                + readers.get(st.dst, 0)
            continue
        i = producer.get(st.inputs[0]) if len(st.inputs) == 1 else None
        if i is not None and readers.get(st.inputs[0]) == 1:
            merged = _merge(out[i], st)
            if merged is not None:
                out[i] = merged
                del producer[st.src]
                producer[merged.dst] = i
                continue
        producer[st.dst] = len(out)
        out.append(st)
    return out, [rename.get(b, b) for b in outputs]


def _renamed(st, rename):
    if isinstance(st, ConcatStep):
        srcs = tuple(rename.get(b, b) for b in st.srcs)
        return st if srcs == st.srcs else st._replace(srcs=srcs)
    changes = {}
    for field in ("src", "src2"):
        b = getattr(st, field, None)
        if b is not None and b in rename:
            changes[field] = rename[b]
    return st._replace(**changes) if changes else st
