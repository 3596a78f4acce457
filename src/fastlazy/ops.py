"""``F``: Gluon's operators, eager on NumPy arrays and traceable into the
compiled plan.

A ``HybridBlock``'s ``hybrid_forward(self, F, x, ...)`` receives this module
as ``F`` (also ``fastlazy.F``).  Called with NumPy arrays, every operator
computes at once (the eager path).  Called while a network is compiled, the
arguments are :class:`Sym` values -- a buffer of the plan and its shape --
and each operator states its shape rule and adds typed steps
(:mod:`fastlazy._steps`) instead: the whole network then runs as one
compiled call.  Arithmetic (``+ - * /``) works on both.

Operators and arguments are Gluon 1.x's (``mx.nd`` / ``mx.sym``), for what
fastlazy computes: ``FullyConnected``, ``Convolution``, ``Pooling``,
``BatchNorm``, ``LayerNorm``, ``Activation``, ``LeakyReLU`` (leaky, prelu,
elu, selu, gelu), ``relu``, ``sigmoid``, ``tanh``, ``softmax``,
``log_softmax``, ``clip``, ``flatten``, ``reshape`` (with Gluon's 0 and -1
codes), ``concat``, ``elemwise_add``/``_sub``/``_mul``, ``broadcast_add``/
``_sub``/``_mul``/``_div``/``_maximum``/``_minimum``, ``add_n``,
``slice_axis``, ``mean``, ``sum``, ``max``, ``identity``, ``Dropout``.

The batch axis (0) is the plan's: an operator that mixes samples (concat or
slice along axis 0, a mean over everything) cannot be compiled, and the
block that calls it runs on the eager path instead (``fl.explain`` says
which and why).
"""

import builtins
import math

import numpy as np

from . import _plan
from ._steps import (ActStep, BatchNormStep, BinaryStep, ConcatStep,
                     ConvGeometry, ConvStep, DenseStep, LayerNormStep,
                     PoolGeometry, PoolStep, PReluStep, ReduceStep,
                     ScalarStep, SliceStep, SoftmaxStep)
from ._util import is_int, prod
from .errors import DeferredInitializationError, ShapeError

__all__ = [
    "Sym", "TraceError", "FullyConnected", "Convolution", "Pooling",
    "BatchNorm", "LayerNorm", "Activation", "LeakyReLU", "relu", "sigmoid",
    "tanh", "swish", "softmax", "log_softmax", "clip", "flatten", "Flatten",
    "reshape", "Reshape", "concat", "Concat", "elemwise_add", "elemwise_sub",
    "elemwise_mul", "broadcast_add", "broadcast_sub", "broadcast_mul",
    "broadcast_div", "broadcast_maximum", "broadcast_minimum", "add_n",
    "ElementWiseSum", "slice_axis", "mean", "sum", "max", "identity",
    "Dropout", "zeros_like", "ones_like",
]


class TraceError(TypeError):
    """A value being compiled was used in a way the plan cannot express
    (Python control flow on it, a NumPy function, an unsupported
    argument).  The block runs on the eager path instead."""


# ---------------------------------------------------------------------------
# Traced values


class TraceContext:
    """One compilation: the step builder and the parameter shapes completed
    so far (Parameter -> shape)."""

    def __init__(self, builder, pending):
        self.builder = builder
        self.pending = pending

    def shape_of(self, p):
        return self.pending.get(p, p.shape)


class Sym:
    """A value inside a network being compiled: buffer ``buf`` of the plan,
    ``shape`` including the batch axis.  A parameter handed to
    ``hybrid_forward`` is a Sym too (``param`` set, no batch axis); its
    buffer is the parameter's storage."""

    __slots__ = ("ctx", "_buf", "_shape", "param")
    # NumPy must not treat a Sym as an array: np.exp(sym) is a TypeError,
    # which makes the block eager (with the reason)
    __array_ufunc__ = None

    def __init__(self, ctx, buf, shape, param=None):
        self.ctx = ctx
        self._buf = buf
        self._shape = tuple(shape) if shape is not None else None
        self.param = param

    @property
    def shape(self):
        if self.param is not None:
            return self.ctx.shape_of(self.param)
        return self._shape

    @property
    def buf(self):
        if self._buf is None:           # a parameter used as an operand
            shape = self.shape
            if shape is None or -1 in shape:
                raise DeferredInitializationError(
                    f"Parameter '{self.param.name}' is used as an array "
                    f"operand before its shape {shape} is known; give its "
                    f"full shape when creating it")
            self._buf = self.ctx.builder.param(self.param)
        return self._buf

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return prod(self.shape)

    def __repr__(self):
        what = f"parameter {self.param.name}" if self.param is not None \
            else f"buffer {self._buf}"
        return f"<traced value: {what}, shape {self.shape}>"

    # -- what a trace cannot do -------------------------------------------

    def _refuse(self, what):
        raise TraceError(f"{what} of a traced value: the compiled plan has "
                         f"no values while it is built (Python control "
                         f"flow and NumPy functions need the eager path)")

    def __bool__(self):
        self._refuse("the truth value")

    def __array__(self, *args, **kwargs):
        self._refuse("a NumPy array")

    def __float__(self):
        self._refuse("float()")

    def __int__(self):
        self._refuse("int()")

    def __index__(self):
        self._refuse("an index")

    def __len__(self):
        self._refuse("len()")

    def __iter__(self):
        self._refuse("iteration")

    def __getitem__(self, key):
        self._refuse("indexing")

    # -- arithmetic -----------------------------------------------------------

    def __add__(self, other):
        return _arith("add", self, other)

    def __radd__(self, other):
        return _arith("add", other, self)

    def __sub__(self, other):
        return _arith("sub", self, other)

    def __rsub__(self, other):
        return _arith("sub", other, self)

    def __mul__(self, other):
        return _arith("mul", self, other)

    def __rmul__(self, other):
        return _arith("mul", other, self)

    def __truediv__(self, other):
        return _arith("div", self, other)

    def __rtruediv__(self, other):
        return _arith("div", other, self)

    def __neg__(self):
        return _arith("mul", self, -1.0)

    def __pos__(self):
        return self

    def __pow__(self, other):
        if not isinstance(other, (int, float)) or isinstance(other, bool):
            raise TraceError("x ** y is compiled for a number y only")
        return _scalar("pow", self, float(other))

    # -- methods of Gluon's arrays ------------------------------------------

    def reshape(self, *shape, **kwargs):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return reshape(self, shape, **kwargs)

    def flatten(self):
        return flatten(self)

    def relu(self):
        return relu(self)

    def sigmoid(self):
        return sigmoid(self)

    def tanh(self):
        return tanh(self)

    def softmax(self, axis=-1):
        return softmax(self, axis=axis)

    def mean(self, axis=None, keepdims=False, exclude=False):
        return mean(self, axis=axis, keepdims=keepdims, exclude=exclude)

    def sum(self, axis=None, keepdims=False, exclude=False):
        return sum(self, axis=axis, keepdims=keepdims, exclude=exclude)

    def clip(self, a_min, a_max):
        return clip(self, a_min, a_max)

    def slice_axis(self, axis, begin, end):
        return slice_axis(self, axis, begin, end)


_plan.set_traced_type(Sym)


def _any_sym(*args):
    return any(isinstance(a, Sym) for a in args)


def _data(x):
    """The operand of a traced operator: a Sym with a batch axis."""
    if not isinstance(x, Sym):
        raise TraceError(f"a traced operator got {type(x).__name__} where a "
                         f"traced array was expected (constants are "
                         f"compiled only as Python numbers in + - * /)")
    if x.param is not None:
        raise TraceError(f"parameter {x.param.name} used as the data of an "
                         f"operator; only arithmetic takes parameters as "
                         f"operands")
    return x


def _new(x, size, shape):
    """A new Sym of ``shape`` in a new buffer of ``size`` per sample."""
    return Sym(x.ctx, x.ctx.builder.buffer(size), shape)


def _emit(x, step_cls, out_shape, *fields, **kw):
    """Add ``step_cls(x.buf, new buffer, *fields)``; return its Sym."""
    y = _new(x, prod(out_shape[1:]), out_shape)
    x.ctx.builder.add(step_cls(x.buf, y.buf, *fields, **kw))
    return y


def _axis(axis, ndim, op):
    a = int(axis)
    a = a + ndim if a < 0 else a
    if not 0 <= a < ndim:
        raise ShapeError(f"{op}: axis {axis} is out of range for "
                         f"{ndim} dimensions")
    return a


def _per_sample_axis(axis, shape, op):
    a = _axis(axis, len(shape), op)
    if a == 0:
        raise TraceError(f"{op} along the batch axis mixes samples; "
                         f"compiled plans treat each sample on its own")
    return a


def _complete_param(ctx, p, shape, where):
    """Record ``shape`` for parameter ``p`` (filling -1 entries), or raise
    ShapeError naming ``where`` when a known entry differs."""
    cur = ctx.shape_of(p)
    if cur is None:
        ctx.pending[p] = tuple(shape)
        return
    if len(cur) != len(shape):
        raise ShapeError(f"{where}: parameter {p.name} has shape {cur}, the "
                         f"input needs {tuple(shape)}")
    merged = []
    for c, s in zip(cur, shape):
        if c == -1:
            merged.append(s)
        elif c != s:
            raise ShapeError(
                f"{where}: parameter {p.name} has shape {cur}, but the "
                f"input needs {tuple(shape)}. Feed inputs of the size it "
                f"was made for, or use a new layer for this size.")
        else:
            merged.append(c)
    if tuple(merged) != tuple(cur):
        ctx.pending[p] = tuple(merged)


def _param(v, what):
    if v is None:
        return None
    if not isinstance(v, Sym) or v.param is None:
        raise TraceError(f"{what} must be a block's parameter when the "
                         f"network is compiled")
    return v.param


def _pair(v, default):
    if v is None or v == ():
        return default
    if is_int(v):
        return (int(v), int(v))
    v = tuple(int(a) for a in v)
    return v if len(v) == 2 else (v[0], v[0])


# ---------------------------------------------------------------------------
# Eager helpers (NumPy)

def _np(x):
    return np.asarray(x)


def _np_float(x):
    a = np.asarray(x)
    return a if a.dtype.kind == "f" else a.astype(np.float32)


def _np_act(z, name):
    """Activation ``name`` in float64 NumPy, then back to z's dtype."""
    z = _np_float(z)
    dt = z.dtype
    v = z.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if name == "relu":
            out = np.where((v > 0) | np.isnan(v), v, 0.0)
        elif name == "sigmoid":
            e = np.exp(-np.abs(v))
            out = np.where(v >= 0, 1 / (1 + e), e / (1 + e))
        elif name == "tanh":
            out = np.tanh(v)
        elif name == "softrelu":
            out = np.maximum(v, 0) + np.log1p(np.exp(-np.abs(v)))
        elif name == "softsign":
            out = np.where(np.isinf(v), np.sign(v), v / (1 + np.abs(v)))
        elif name == "gelu":
            erf = np.vectorize(math.erf, otypes=[np.float64])
            out = np.where(v == -np.inf, 0.0,
                           0.5 * v * (1 + erf(v / math.sqrt(2))))
        elif name == "silu":
            e = np.exp(-np.abs(v))
            s = np.where(v >= 0, 1 / (1 + e), e / (1 + e))
            out = np.where(v == -np.inf, 0.0, v * s)
        else:
            raise ValueError(f"unknown activation {name!r}")
    return out.astype(dt)


# ---------------------------------------------------------------------------
# Element-wise activations

def _act_step(x, code, alpha=0.0, beta=0.0):
    x = _data(x)
    return _emit(x, ActStep, x.shape, code, prod(x.shape[1:]), alpha, beta)


def Activation(data, act_type, **kwargs):
    """``act_type``: 'relu', 'sigmoid', 'tanh', 'softrelu', 'softsign' (and
    fastlazy's 'gelu', 'silu')."""
    if isinstance(data, Sym):
        return _act_step(data, _plan.activation_code(act_type, "Activation"))
    _plan.activation_code(act_type, "Activation")
    return _np_act(data, act_type)


def relu(data, **kwargs):
    return Activation(data, "relu")


def sigmoid(data, **kwargs):
    return Activation(data, "sigmoid")


def tanh(data, **kwargs):
    return Activation(data, "tanh")


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def LeakyReLU(data, gamma=None, act_type="leaky", slope=0.25,
              lower_bound=0.125, upper_bound=0.334, **kwargs):
    """Gluon's LeakyReLU operator: 'leaky' (``slope``), 'prelu' (``gamma``,
    one slope or one per channel of axis 1), 'elu' (alpha = ``slope``),
    'selu', 'gelu', and 'rrelu' (at inference the mean slope)."""
    if act_type == "rrelu":
        act_type, slope = "leaky", (lower_bound + upper_bound) / 2
    if act_type not in ("leaky", "prelu", "elu", "selu", "gelu"):
        raise ValueError(f"LeakyReLU: unknown act_type {act_type!r}; choose "
                         f"leaky, prelu, elu, selu, gelu or rrelu")
    if isinstance(data, Sym):
        x = _data(data)
        if act_type == "gelu":
            return _act_step(x, _plan.ACTIVATIONS["gelu"])
        if act_type == "leaky":
            return _act_step(x, _plan.EXTRA_ACTIVATIONS["leaky"], float(slope))
        if act_type == "elu":
            return _act_step(x, _plan.EXTRA_ACTIVATIONS["elu"], float(slope))
        if act_type == "selu":
            return _act_step(x, _plan.EXTRA_ACTIVATIONS["selu"])
        alpha = _param(gamma, "LeakyReLU(prelu): gamma")
        shape = x.shape
        c = shape[1] if len(shape) > 1 else 1
        n = x.ctx.shape_of(alpha)
        if n is None or -1 in n:
            _complete_param(x.ctx, alpha, (c,), "PReLU")
            n = (c,)
        if prod(n) not in (1, c):
            raise ShapeError(f"PReLU: alpha {alpha.name} has {prod(n)} "
                             f"values, the input has {c} channels on axis 1")
        return _emit(x, PReluStep, shape, alpha, 1, c, prod(shape[2:]))
    z = _np_float(data)
    v = z.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if act_type == "gelu":
            return _np_act(z, "gelu")
        if act_type == "leaky":
            out = np.where((v > 0) | np.isnan(v), v, slope * v)
        elif act_type == "elu":
            out = np.where((v > 0) | np.isnan(v), v, slope * np.expm1(v))
        elif act_type == "selu":
            out = _SELU_SCALE * np.where((v > 0) | np.isnan(v), v,
                                         _SELU_ALPHA * np.expm1(v))
        else:
            a = np.asarray(gamma, dtype=np.float64).reshape(-1)
            if a.size > 1 and v.ndim > 1:
                a = a.reshape((1, -1) + (1,) * (v.ndim - 2))
            out = np.where((v > 0) | np.isnan(v), v, a * v)
    return out.astype(z.dtype)


def swish(data, beta=1.0, **kwargs):
    """``x * sigmoid(beta * x)`` (one step when compiled)."""
    if isinstance(data, Sym):
        return _act_step(data, _plan.EXTRA_ACTIVATIONS["swish"], float(beta))
    z = _np_float(data)
    v = z.astype(np.float64)
    return (v * _np_act(beta * v, "sigmoid")).astype(z.dtype)


def clip(data, a_min, a_max, **kwargs):
    """Values clipped to [a_min, a_max] (relu6 is ``clip(x, 0, 6)``)."""
    lo, hi = float(a_min), float(a_max)
    if isinstance(data, Sym):
        if (lo, hi) == (0.0, 6.0):
            # relu6: a kernel activation, fused into the layer before it
            return _act_step(data, _plan.RELU6)
        return _act_step(data, _plan.EXTRA_ACTIVATIONS["clip"], lo, hi)
    z = _np_float(data)
    return np.clip(z, lo, hi).astype(z.dtype)


def _softmax(data, axis, log, temperature, op):
    if temperature not in (None, 1, 1.0):
        data = data * (1.0 / float(temperature))
    if isinstance(data, Sym):
        x = _data(data)
        shape = x.shape
        a = _per_sample_axis(axis, shape, op)
        return _emit(x, SoftmaxStep, shape, bool(log), prod(shape[1:a]),
                     shape[a], prod(shape[a + 1:]))
    z = _np_float(data)
    v = z.astype(np.float64)
    m = np.max(v, axis=axis, keepdims=True)
    e = np.exp(v - m)
    t = np.sum(e, axis=axis, keepdims=True)
    out = (v - m - np.log(t)) if log else e / t
    return out.astype(z.dtype)


def softmax(data, axis=-1, temperature=None, **kwargs):
    return _softmax(data, axis, False, temperature, "softmax")


def log_softmax(data, axis=-1, temperature=None, **kwargs):
    return _softmax(data, axis, True, temperature, "log_softmax")


def identity(data, **kwargs):
    return data


def Dropout(data, p=0.5, **kwargs):
    """The identity: fastlazy runs inference only."""
    return data


# ---------------------------------------------------------------------------
# Shapes

def flatten(data, **kwargs):
    """``(N, d1, d2, ...) -> (N, d1*d2*...)``."""
    if isinstance(data, Sym):
        x = _data(data)
        return Sym(x.ctx, x.buf, (x.shape[0], prod(x.shape[1:])))
    z = np.asarray(data)
    return z.reshape(z.shape[0], -1)


Flatten = flatten


def _reshape_target(in_shape, shape, reverse):
    """Gluon's reshape codes: 0 copies the input dimension, -1 is inferred,
    -2 copies all remaining, -3 merges two, -4 splits one."""
    if reverse:
        out = _reshape_target(in_shape[::-1], tuple(shape)[::-1], False)
        return out[::-1]
    out = []
    i = 0
    codes = list(shape)
    j = 0
    while j < len(codes):
        c = int(codes[j])
        if c == 0:
            out.append(in_shape[i])
            i += 1
        elif c == -1:
            out.append(-1)
            i += 1
        elif c == -2:
            out.extend(in_shape[i:])
            i = len(in_shape)
        elif c == -3:
            out.append(in_shape[i] * in_shape[i + 1])
            i += 2
        elif c == -4:
            a, b = int(codes[j + 1]), int(codes[j + 2])
            d = in_shape[i]
            if a == -1:
                a = d // b
            if b == -1:
                b = d // a
            out.extend([a, b])
            i += 1
            j += 2
        else:
            out.append(c)
            i += 1
        j += 1
    total = prod(in_shape)
    if out.count(-1) > 1:
        raise ShapeError(f"reshape: more than one -1 in {tuple(shape)}")
    if -1 in out:
        rest = prod(d for d in out if d != -1)
        if rest == 0 or total % rest:
            raise ShapeError(f"reshape: cannot reshape {tuple(in_shape)} "
                             f"into {tuple(shape)}")
        out[out.index(-1)] = total // rest
    if prod(out) != total:
        raise ShapeError(f"reshape: cannot reshape {tuple(in_shape)} "
                         f"({total} values) into {tuple(out)}")
    return tuple(out)


def reshape(data, shape=None, reverse=False, **kwargs):
    """Gluon's reshape, with its 0, -1, -2, -3 and -4 codes."""
    if shape is None:
        shape = kwargs.get("newshape")
    if isinstance(data, Sym):
        x = _data(data)
        out = _reshape_target(x.shape, shape, reverse)
        if out[0] != x.shape[0]:
            raise TraceError(f"reshape {x.shape} -> {out} moves values "
                             f"across the batch axis; compiled plans keep "
                             f"axis 0 as the batch (use 0 for it)")
        return Sym(x.ctx, x.buf, out)
    z = np.asarray(data)
    return z.reshape(_reshape_target(z.shape, shape, reverse))


Reshape = reshape


def concat(*data, dim=1, **kwargs):
    """Join arrays along axis ``dim`` (Gluon's default 1: channels)."""
    if "num_args" in kwargs:
        kwargs.pop("num_args")
    if len(data) == 1 and isinstance(data[0], (list, tuple)):
        data = tuple(data[0])
    if not data:
        raise ValueError("concat: needs at least one array")
    if _any_sym(*data):
        xs = [_data(x) for x in data]
        shape0 = xs[0].shape
        a = _per_sample_axis(dim, shape0, "concat")
        for x in xs[1:]:
            s = x.shape
            if len(s) != len(shape0) or s[:a] != shape0[:a] or \
                    s[a + 1:] != shape0[a + 1:]:
                raise ShapeError(
                    f"concat along axis {dim}: shapes {shape0} and {s} "
                    f"differ on another axis")
        if len(xs) == 1:
            return xs[0]
        out = list(shape0)
        out[a] = builtins.sum(x.shape[a] for x in xs)
        out = tuple(out)
        outer = prod(shape0[1:a])
        parts = tuple(prod(x.shape[a:]) for x in xs)
        ctx = xs[0].ctx
        # at most 16 inputs per step: longer lists are joined in groups
        while len(xs) > 16:
            head = concat(*xs[:16], dim=dim)
            xs = [head] + xs[16:]
            parts = tuple(prod(x.shape[a:]) for x in xs)
        y = Sym(ctx, ctx.builder.buffer(prod(out[1:])), out)
        ctx.builder.add(ConcatStep(tuple(x.buf for x in xs), y.buf, outer,
                                   parts))
        return y
    return np.concatenate([np.asarray(x) for x in data], axis=dim)


Concat = concat


def slice_axis(data, axis, begin, end, **kwargs):
    """``data`` with indices [begin, end) along ``axis`` (end None: to the
    end; negative counts from the end)."""
    if isinstance(data, Sym):
        x = _data(data)
        shape = x.shape
        a = _per_sample_axis(axis, shape, "slice_axis")
        n = shape[a]
        b = 0 if begin is None else int(begin)
        e = n if end is None else int(end)
        b = b + n if b < 0 else b
        e = e + n if e < 0 else e
        if not 0 <= b < e <= n:
            raise ShapeError(f"slice_axis: [{begin}, {end}) is empty or out "
                             f"of range for axis {axis} of size {n}")
        inner = prod(shape[a + 1:])
        out = shape[:a] + (e - b,) + shape[a + 1:]
        return _emit(x, SliceStep, out, prod(shape[1:a]), n * inner,
                     b * inner, (e - b) * inner)
    z = np.asarray(data)
    idx = [slice(None)] * z.ndim
    idx[axis] = slice(begin, end)
    return z[tuple(idx)]


def _reduce(data, axis, keepdims, exclude, op):
    if isinstance(data, Sym):
        x = _data(data)
        shape = x.shape
        nd = len(shape)
        if axis is None:
            axes = list(range(nd))
        elif is_int(axis):
            axes = [_axis(axis, nd, op)]
        else:
            axes = sorted(_axis(a, nd, op) for a in axis)
        if exclude:
            axes = [a for a in range(nd) if a not in axes]
        if 0 in axes or not axes:
            raise TraceError(f"{op} over the batch axis mixes samples; "
                             f"give the per-sample axes (e.g. axis=(2, 3))")
        if axes != list(range(axes[0], axes[-1] + 1)):
            raise TraceError(f"{op} over axes {axes}: compiled reductions "
                             f"take consecutive axes")
        first, last = axes[0], axes[-1]
        if keepdims:
            out = tuple(1 if i in axes else d for i, d in enumerate(shape))
        else:
            out = tuple(d for i, d in enumerate(shape) if i not in axes)
        return _emit(x, ReduceStep, out, op, prod(shape[1:first]),
                     prod(shape[first:last + 1]), prod(shape[last + 1:]))
    z = _np_float(data)
    nd = z.ndim
    if axis is not None and exclude:
        ax = (axis,) if is_int(axis) else tuple(axis)
        ax = tuple(a % nd for a in ax)
        axis = tuple(a for a in range(nd) if a not in ax)
    elif axis is not None and not is_int(axis):
        axis = tuple(axis)
    fn = {"mean": np.mean, "sum": np.sum, "max": np.max}[op]
    return fn(z, axis=axis, keepdims=keepdims).astype(z.dtype)


def mean(data, axis=None, keepdims=False, exclude=False, **kwargs):
    return _reduce(data, axis, keepdims, exclude, "mean")


def sum(data, axis=None, keepdims=False, exclude=False, **kwargs):
    return _reduce(data, axis, keepdims, exclude, "sum")


def max(data, axis=None, keepdims=False, exclude=False, **kwargs):
    return _reduce(data, axis, keepdims, exclude, "max")


# ---------------------------------------------------------------------------
# Arithmetic

_NP_OPS = {"add": np.add, "sub": np.subtract, "mul": np.multiply,
           "div": np.divide, "max": np.maximum, "min": np.minimum}


def _scalar(op, x, value):
    x = _data(x)
    return _emit(x, ScalarStep, x.shape, op, float(value),
                 prod(x.shape[1:]))


def _number(v):
    return isinstance(v, (int, float, np.number)) and \
        not isinstance(v, (bool, np.bool_))


def _arith(op, a, b):
    """``a op b`` for Syms, arrays and Python numbers."""
    if not _any_sym(a, b):
        za, zb = np.asarray(a), np.asarray(b)
        out = _NP_OPS[op](za, zb)
        return out
    if _number(b):
        if op == "sub":
            return _scalar("add", a, -float(b))
        if op == "div":
            return _scalar("mul", a, 1.0 / float(b))
        return _scalar(op, a, b)
    if _number(a):
        if op in ("add", "mul", "max", "min"):
            return _scalar(op, b, a)
        return _scalar("r" + op, b, a)
    if not (isinstance(a, Sym) and isinstance(b, Sym)):
        raise TraceError(f"{op} of a traced value and a "
                         f"{type(b if isinstance(a, Sym) else a).__name__}: "
                         f"only traced values, parameters and numbers")
    return _binary(op, a, b)


def _operand_shape(x, ndim):
    """(per-sample shape, batch stride is zero) of an operand against data
    of ``ndim`` dimensions (the batch axis included): a parameter with as
    many dimensions as the data, (1, C, 1, 1) against (N, C, H, W), has a
    leading 1 for the batch axis."""
    if x.param is None:
        return tuple(x.shape[1:]), False
    s = tuple(x.shape)
    if len(s) >= ndim:
        if s[0] != 1:
            raise TraceError(f"parameter {x.param.name} of shape {s} would "
                             f"broadcast over the batch axis")
        s = s[1:]
    return s, True


def _binary(op, a, b):
    ctx = a.ctx
    if a.param is not None and b.param is not None:
        raise TraceError(f"{op} of two parameters is not a function of the "
                         f"input")
    full = a.shape if a.param is None else b.shape
    nd = len(full) - 1           # per-sample dimensions of the output
    sa, a_is_param = _operand_shape(a, nd + 1)
    sb, b_is_param = _operand_shape(b, nd + 1)
    try:
        out = np.broadcast_shapes(tuple(full[1:]), sa, sb)
    except ValueError:
        raise ShapeError(f"{op}: shapes {a.shape} and {b.shape} do not "
                         f"broadcast") from None
    if len(out) != nd:
        raise TraceError(f"{op}: a parameter of shape {a.shape if a_is_param else b.shape} "
                         f"has more dimensions than the data")
    if a.param is None and b.param is None and a.shape[0] != b.shape[0]:
        raise ShapeError(f"{op}: batch sizes {a.shape[0]} and {b.shape[0]} "
                         f"differ")

    def aligned(s):
        return (1,) * (len(out) - len(s)) + tuple(s)

    pa, pb = aligned(sa), aligned(sb)
    # dimensions with their broadcast flags; size-1 output dims dropped,
    # neighbours with the same flags merged
    dims = []
    for d, x, y in zip(out, pa, pb):
        if d == 1:
            continue
        fa, fb = x == 1, y == 1
        if dims and dims[-1][1] == fa and dims[-1][2] == fb:
            dims[-1][0] *= d
        else:
            dims.append([d, fa, fb])
    if len(dims) > 4:
        raise TraceError(f"{op}: broadcasting {a.shape} with {b.shape} "
                         f"needs more than 4 dimensions")
    dims = [[1, True, True]] * (4 - len(dims)) + dims

    def strides(flag_index, batch):
        st = [0] * 4
        run = 1
        for i in range(3, -1, -1):
            size, *flags = dims[i]
            if flags[flag_index] or size == 1:
                st[i] = 0
            else:
                st[i] = run
                run *= size
        return (batch,) + tuple(st)

    a_size = prod(sa)
    b_size = prod(sb)
    st = BinaryStep(a.buf, b.buf, -1, op, tuple(d[0] for d in dims),
                    strides(0, 0 if a_is_param else a_size),
                    strides(1, 0 if b_is_param else b_size), a_size)
    y = Sym(ctx, ctx.builder.buffer(prod(out)), (full[0],) + tuple(out))
    ctx.builder.add(st._replace(dst=y.buf))
    return y


def elemwise_add(lhs, rhs, **kwargs):
    return _arith("add", lhs, rhs)


def elemwise_sub(lhs, rhs, **kwargs):
    return _arith("sub", lhs, rhs)


def elemwise_mul(lhs, rhs, **kwargs):
    return _arith("mul", lhs, rhs)


broadcast_add = broadcast_plus = elemwise_add
broadcast_sub = broadcast_minus = elemwise_sub
broadcast_mul = elemwise_mul


def broadcast_div(lhs, rhs, **kwargs):
    return _arith("div", lhs, rhs)


def broadcast_maximum(lhs, rhs, **kwargs):
    return _arith("max", lhs, rhs)


def broadcast_minimum(lhs, rhs, **kwargs):
    return _arith("min", lhs, rhs)


maximum = broadcast_maximum
minimum = broadcast_minimum


def add_n(*args, **kwargs):
    """The sum of the arrays."""
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        args = tuple(args[0])
    out = args[0]
    for a in args[1:]:
        out = _arith("add", out, a)
    return out


ElementWiseSum = add_n


def zeros_like(data, **kwargs):
    if isinstance(data, Sym):
        return _scalar("mul", data, 0.0)
    return np.zeros_like(data)


def ones_like(data, **kwargs):
    if isinstance(data, Sym):
        return _scalar("add", _scalar("mul", data, 0.0), 1.0)
    return np.ones_like(data)


# ---------------------------------------------------------------------------
# Layers' operators

def FullyConnected(data, weight, bias=None, num_hidden=None, no_bias=False,
                   flatten=True, **kwargs):
    """``data @ weight.T + bias``; ``flatten=True`` first turns
    ``(N, d1, ...)`` into ``(N, d1*...)``."""
    if no_bias:
        bias = None
    if isinstance(data, Sym):
        x = _data(data)
        w = _param(weight, "FullyConnected: weight")
        b = _param(bias, "FullyConnected: bias")
        if not w.storage_transposed:
            raise TraceError(
                f"FullyConnected: weight {w.name} is stored (units, in_units)"
                f"; the compiled kernels read Dense weights, stored "
                f"transposed (use nn.Dense as a child block)")
        shape = x.shape
        k = prod(shape[1:]) if flatten else shape[-1]
        m = x.ctx.shape_of(w)[0] if num_hidden is None else int(num_hidden)
        _complete_param(x.ctx, w, (m, k), "FullyConnected")
        if b is not None:
            _complete_param(x.ctx, b, (m,), "FullyConnected")
        rows = 1 if flatten else prod(shape[1:-1])
        out = (shape[0], m) if flatten else tuple(shape[:-1]) + (m,)
        return _emit(x, DenseStep, out, w, b, _plan.NO_ACT, rows, k, m)
    z = _np_float(data)
    w = np.asarray(weight)
    if flatten:
        z = z.reshape(z.shape[0], -1)
    y = z @ w.T.astype(z.dtype)
    if bias is not None:
        y = y + np.asarray(bias, dtype=z.dtype)
    return y.astype(z.dtype)


def Convolution(data, weight, bias=None, kernel=None, stride=(1, 1),
                dilate=(1, 1), pad=(0, 0), num_filter=None, num_group=1,
                no_bias=False, layout="NCHW", **kwargs):
    """2-D convolution, NCHW."""
    if layout not in (None, "NCHW"):
        raise TraceError(f"Convolution: layout {layout!r}; only NCHW")
    if no_bias:
        bias = None
    if isinstance(data, Sym):
        x = _data(data)
        w = _param(weight, "Convolution: weight")
        b = _param(bias, "Convolution: bias")
        shape = x.shape
        if len(shape) != 4:
            raise TraceError(f"Convolution: 2-D (NCHW) only, got input "
                             f"{shape}")
        wshape = x.ctx.shape_of(w)
        kh, kw = _pair(kernel, tuple(wshape[2:]))
        sh, sw = _pair(stride, (1, 1))
        dh, dw = _pair(dilate, (1, 1))
        ph, pw = _pair(pad, (0, 0))
        g = int(num_group)
        o = int(num_filter) if num_filter is not None else wshape[0]
        c = shape[1]
        if c % g or o % g:
            raise ShapeError(f"Convolution: {c} input and {o} output "
                             f"channels do not split into {g} groups")
        _complete_param(x.ctx, w, (o, c // g, kh, kw), "Convolution")
        if b is not None:
            _complete_param(x.ctx, b, (o,), "Convolution")
        oh = (shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        ow = (shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        if oh < 1 or ow < 1:
            raise ShapeError(f"Convolution: input {shape} is smaller than "
                             f"the kernel ({kh}, {kw})")
        geom = ConvGeometry(c, shape[2], shape[3], o, kh, kw, sh, sw, ph, pw,
                            dh, dw, g, oh, ow)
        return _emit(x, ConvStep, (shape[0], o, oh, ow), w, b, _plan.NO_ACT,
                     geom)
    from ._eager import conv2d
    z = _np_float(data)
    w = np.asarray(weight)
    kh, kw = w.shape[2:]
    y = conv2d(z, w, None if bias is None else np.asarray(bias),
               _pair(stride, (1, 1)), _pair(pad, (0, 0)),
               _pair(dilate, (1, 1)), int(num_group))
    return y.astype(z.dtype)


def Pooling(data, kernel=(1, 1), pool_type="max", global_pool=False,
            stride=None, pad=(0, 0), pooling_convention="valid",
            count_include_pad=True, layout="NCHW", cudnn_off=False,
            **kwargs):
    """2-D max or average pooling (MXNet's default stride is 1)."""
    if pool_type not in ("max", "avg"):
        raise TraceError(f"Pooling: pool_type {pool_type!r}; max or avg")
    ceil = pooling_convention == "full"
    if isinstance(data, Sym):
        x = _data(data)
        shape = x.shape
        if len(shape) != 4:
            raise TraceError(f"Pooling: 2-D (NCHW) only, got input {shape}")
        if global_pool:
            k, s, p = (shape[2], shape[3]), (1, 1), (0, 0)
            oh = ow = 1
        else:
            k, s, p = _pair(kernel, (1, 1)), _pair(stride, (1, 1)), \
                _pair(pad, (0, 0))
            outs = []
            for i in range(2):
                span = shape[2 + i] + 2 * p[i] - k[i]
                if span < 0:
                    raise ShapeError(f"Pooling: input {shape} is smaller "
                                     f"than the window {k}")
                outs.append((-(-span // s[i]) if ceil else span // s[i]) + 1)
            oh, ow = outs
        geom = PoolGeometry(shape[1], shape[2], shape[3], *k, *s, *p, oh, ow)
        return _emit(x, PoolStep, (shape[0], shape[1], oh, ow),
                     pool_type == "max", bool(count_include_pad), geom)
    from ._eager import pool2d
    z = _np_float(data)
    if global_pool:
        k, s, p = z.shape[2:], (1, 1), (0, 0)
    else:
        k, s, p = _pair(kernel, (1, 1)), _pair(stride, (1, 1)), \
            _pair(pad, (0, 0))
    return pool2d(z, k, s, p, pool_type == "max", ceil,
                  bool(count_include_pad)).astype(z.dtype)


def BatchNorm(data, gamma=None, beta=None, moving_mean=None, moving_var=None,
              eps=1e-3, momentum=0.9, fix_gamma=True, use_global_stats=False,
              axis=1, **kwargs):
    """Inference BatchNorm with the running statistics along ``axis``
    (``fix_gamma`` ignores gamma, as MXNet does)."""
    if isinstance(data, Sym):
        x = _data(data)
        shape = x.shape
        a = _per_sample_axis(axis, shape, "BatchNorm")
        c = shape[a]
        ps = [_param(v, f"BatchNorm: {n}") for v, n in
              ((gamma, "gamma"), (beta, "beta"), (moving_mean, "moving_mean"),
               (moving_var, "moving_var"))]
        for p in ps:
            if p is not None:
                _complete_param(x.ctx, p, (c,), "BatchNorm")
        g, b, m, v = ps
        if m is None or v is None:
            raise TraceError("BatchNorm: moving_mean and moving_var are "
                             "needed at inference")
        return _emit(x, BatchNormStep, shape, None if fix_gamma else g, b,
                     m, v, float(eps), prod(shape[1:a]), c,
                     prod(shape[a + 1:]))
    z = _np_float(data)
    a = axis % z.ndim
    bshape = [1] * z.ndim
    bshape[a] = z.shape[a]

    def vec(v, fill):
        if v is None:
            return np.full(bshape, fill)
        return np.asarray(v, np.float64).reshape(bshape)

    g = vec(None if fix_gamma else gamma, 1.0)
    y = (z.astype(np.float64) - vec(moving_mean, 0.0)) / np.sqrt(
        vec(moving_var, 1.0) + eps) * g + vec(beta, 0.0)
    return y.astype(z.dtype)


def LayerNorm(data, gamma=None, beta=None, axis=-1, eps=1e-5, **kwargs):
    """Normalize over ``axis`` with each sample's own statistics."""
    if isinstance(data, Sym):
        x = _data(data)
        shape = x.shape
        a = _per_sample_axis(axis, shape, "LayerNorm")
        c = shape[a]
        g = _param(gamma, "LayerNorm: gamma")
        b = _param(beta, "LayerNorm: beta")
        for p in (g, b):
            if p is not None:
                _complete_param(x.ctx, p, (c,), "LayerNorm")
        return _emit(x, LayerNormStep, shape, g, b, float(eps),
                     prod(shape[1:a]), c, prod(shape[a + 1:]))
    z = _np_float(data)
    v = z.astype(np.float64)
    a = axis % z.ndim
    bshape = [1] * z.ndim
    bshape[a] = z.shape[a]
    mu = v.mean(axis=a, keepdims=True)
    var = v.var(axis=a, keepdims=True)
    y = (v - mu) / np.sqrt(var + eps)
    if gamma is not None:
        y = y * np.asarray(gamma, np.float64).reshape(bshape)
    if beta is not None:
        y = y + np.asarray(beta, np.float64).reshape(bshape)
    return y.astype(z.dtype)
