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

__all__ = ["DenseStep", "ActStep", "ConvGeometry", "FoldedBatchNorm",
           "ConvStep", "PoolGeometry", "PoolStep", "BatchNormStep",
           "LayerNormStep", "StepBuilder", "fuse", "set_batchnorm_fusion",
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


class DenseStep(_DenseStepFields, _Step):
    """``dst = act(src @ weight.T + bias)`` over ``rows`` rows per sample."""

    __slots__ = ()

    def _param_fields(self):
        return (self.weight, self.bias)


class _ActStepFields(NamedTuple):
    src: int
    dst: int
    act: int
    size: int


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


class ConvStep(_ConvStepFields, _Step):
    """``dst = act(bn(conv2d(src, weight) + bias))``, NCHW."""

    __slots__ = ()

    def _param_fields(self):
        bn = self.bn
        return (self.weight, self.bias) + (tuple(bn[:4]) if bn else ())


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


class StepBuilder:
    """Collects the steps of one network: ``buffer(size)`` names a new
    buffer of ``size`` values per sample; ``add(step)`` appends a step and
    returns the buffer it writes.  Buffer 0 is the input."""

    def __init__(self, in_sample_shape):
        self.sizes = [prod(in_sample_shape)]
        self.steps = []

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
        if isinstance(prev, (DenseStep, ConvStep, BatchNormStep)) \
                and prev.act == NO_ACT:
            return prev._replace(act=step.act, dst=step.dst)
        return None
    if isinstance(step, BatchNormStep) and isinstance(prev, ConvStep) \
            and _fuse_batchnorm and prev.act == NO_ACT and prev.bn is None:
        g = prev.geom
        if step.outer == 1 and step.C == g.O and step.inner == g.OH * g.OW:
            bn = FoldedBatchNorm(step.gamma, step.beta, step.mean, step.var,
                                 step.eps)
            return prev._replace(bn=bn, act=step.act, dst=step.dst)
    return None


def fuse(steps, outputs):
    """Return ``steps`` with every step that can be folded into its producer
    folded (the rules below), and ``outputs`` (buffers the caller reads)
    renamed where a fold removed them.

    * an activation into a Dense, Conv2D or BatchNorm step without one;
    * a BatchNorm over a convolution's output channels into the
      convolution (``set_batchnorm_fusion``), with its activation;
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
            continue
        i = producer.get(st.src) if len(st.inputs) == 1 else None
        if i is not None and readers.get(st.src) == 1:
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
    src = rename.get(st.src, st.src)
    return st if src == st.src else st._replace(src=src)
