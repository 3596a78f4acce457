"""``fl.onnx.export``: a network fastlazy compiles, written as an ONNX model.

The network is traced exactly as for its compiled plan (``_compile._trace``)
and the typed steps it produces, *before* fusion, become standard ONNX
operators: a DenseStep is a ``Gemm`` (``MatMul`` + ``Add`` when it runs
over several rows per sample), a ConvStep a ``Conv``, a BatchNormStep a
``BatchNormalization`` that keeps Gluon's four parameters, an activation
its operator (or the few nodes that compute it), and so on.  The file
states what the network computes, not how fastlazy runs it: fused
epilogues and folded BatchNorms are a runtime's business.

Steps read and write flat buffers (so many values per sample); the ONNX
graph needs shaped tensors.  Each buffer's tensor is kept with the
per-sample shape it has in the graph, and a step that needs another view
of the same values gets one ``Reshape`` (``Flatten`` before a ``Gemm``).
Steps that broadcast, concatenate, slice or reduce carry their exact
layout (strides, chunks); they act on the tensor's own axes when those
provably describe the same layout, and on an explicit view otherwise, so
the graph is right whatever reshapes the network's code did.

Every tensor has a dynamic batch axis ``N``; parameters are initializers
named as in Gluon (``dense0_weight``); the model is checked with
``onnx.checker.check_model(full_check=True)`` before it is written, and
it is written to a temporary file renamed over ``path``.

The ``onnx`` package (``pip install fastlazy[onnx]``) is imported when
:func:`export` runs, never before.
"""

import math
import os
import tempfile

import numpy as np

from .. import _plan
from .._compile import TraceFailed, _finish, _trace, _used_params, _where, \
    net_dtype
from .._steps import (NO_ACT, ActStep, BatchNormStep, BinaryStep, ConcatStep,
                      ConvStep, CopyStep, DenseStep, LayerNormStep, PoolStep,
                      PReluStep, ReduceStep, ScalarStep, SliceStep,
                      SoftmaxStep, StepBuilder)
from .._util import is_int, prod
from ..errors import (DeferredInitializationError, FastLazyError, ShapeError,
                      UnsupportedOperatorError)

__all__ = ["export", "MIN_OPSET", "MAX_OPSET", "DEFAULT_OPSET"]

#: the opsets export writes (the default, 17, is the first with
#: LayerNormalization; Gelu is used from 20 on)
MIN_OPSET, MAX_OPSET, DEFAULT_OPSET = 13, 21, 17

# ONNX's protobuf cannot hold more than this in one message: beyond it the
# parameters go to an external data file
_PROTOBUF_LIMIT = 2 ** 31 - 1

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946

_BINARY_OPS = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div",
               "max": "Max", "min": "Min"}


def _import_onnx():
    try:
        import onnx
        import onnx.checker  # noqa: F401
        import onnx.numpy_helper  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "fl.onnx.export needs the onnx package: pip install "
            "'fastlazy[onnx]' (or pip install onnx)") from exc
    return onnx


def _activation_names():
    """Kernel activation code -> name, for every code a step can carry."""
    names = {code: name for name, code in _plan.ACTIVATIONS.items()
             if name is not None}
    names.update({code: name for name, code in
                  _plan.EXTRA_ACTIVATIONS.items()})
    names[_plan.RELU6] = "relu6"
    return names


def _param_values(p):
    """Parameter ``p``'s values as an array of its logical shape: a view of
    its storage (a Dense weight's is stored transposed), read without
    handing out a ``data()`` view, which would count as a write and make
    every plan reading ``p`` repack it.  Copied once, when written out."""
    storage = p._snapshot()[2]
    if storage is None:         # pragma: no cover - initialized before
        raise DeferredInitializationError(p._not_ready_message())
    return storage.T if p.storage_transposed else storage


class _Value:
    """A tensor of the graph: its name and its per-sample shape (the batch
    axis ``N`` comes first and is not listed)."""

    __slots__ = ("name", "shape")

    def __init__(self, name, shape):
        self.name = name
        self.shape = tuple(int(d) for d in shape)


class _GraphWriter:
    """Typed steps -> ONNX nodes and initializers."""

    def __init__(self, onnx, dtype, opset, where):
        self.onnx = onnx
        self.helper = onnx.helper
        self.dtype = np.dtype(dtype)
        self.elem = onnx.helper.np_dtype_to_tensor_dtype(self.dtype)
        self.opset = opset
        self.where = where
        self.nodes = []
        self.initializers = []
        self.param_bytes = 0
        self.taken = set()          # tensor names in use
        self._counters = {}
        self.node_names = set()     # node names (a namespace of their own)
        self._node_counters = {}
        self._kinds = {}            # kind -> nodes named so far (concat0..)
        self.param_names = {}       # id(Parameter) -> initializer name
        self.bufs = {}              # buffer -> _Value, or Parameter
        self._views = {}            # (tensor, shape) -> tensor of that view
        self._consts = {}           # (dtype, shape, bytes) -> initializer
        self._act_names = _activation_names()

    # -- names, constants, parameters -------------------------------------

    @staticmethod
    def _unique(base, taken, counters):
        if base not in taken:
            taken.add(base)
            return base
        n = counters.get(base, 0)
        while True:
            n += 1
            name = f"{base}_{n}"
            if name not in taken:
                counters[base] = n
                taken.add(name)
                return name

    def fresh(self, base):
        """A new tensor name from ``base`` (``base``, ``base_1``, ...)."""
        return self._unique(base, self.taken, self._counters)

    def prefix(self, kind):
        """A new name for a node without parameters: ``concat0``, ..."""
        n = self._kinds.get(kind, 0)
        self._kinds[kind] = n + 1
        return f"{kind}{n}"

    def _initializer(self, array, name):
        # kept as arrays: written straight into the model at the end (an
        # onnx TensorProto made now would be copied twice more)
        self.initializers.append((name, array))
        self.param_bytes += array.nbytes

    def param(self, p):
        """The initializer holding parameter ``p``, named as in Gluon."""
        name = self.param_names.get(id(p))
        if name is None:
            name = self.fresh(p.name)
            self.param_names[id(p)] = name
            self._initializer(_param_values(p), name)
        return name

    def const(self, values, base, dtype=None):
        """An initializer holding ``values`` (of the network's dtype unless
        ``dtype``); equal constants are shared."""
        arr = np.asarray(values, dtype=self.dtype if dtype is None else dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        name = self._consts.get(key)
        if name is None:
            name = self.fresh(base)
            self._consts[key] = name
            self._initializer(arr, name)
        return name

    def scalar(self, v):
        return self.const(np.array(v), "const")

    def shape_const(self, dims):
        return self.const(np.array(dims, np.int64), "shape", np.int64)

    def axes_const(self, axes):
        return self.const(np.array(axes, np.int64), "axes", np.int64)

    # -- nodes ----------------------------------------------------------

    def node(self, op, inputs, base, **attrs):
        """Append node ``op`` reading ``inputs``, named ``base`` (made
        unique); returns the name of its output, also ``base`` if free."""
        name = self._unique(base, self.node_names, self._node_counters)
        out = self.fresh(base)
        self.nodes.append(self.helper.make_node(op, list(inputs), [out],
                                                name=name, **attrs))
        return out

    def reshape(self, name, dims, base):
        return self.node("Reshape", [name, self.shape_const(dims)],
                         f"{base}_reshape")

    def view(self, v, shape, base="view"):
        """Tensor ``v`` (a _Value) as per-sample ``shape`` (same values in
        the same order): ``v`` itself, a ``Flatten`` or a ``Reshape``."""
        shape = tuple(int(d) for d in shape)
        if v.shape == shape:
            return v.name
        if prod(v.shape) != prod(shape):    # pragma: no cover - a bug
            raise FastLazyError(
                f"{self.where}: the exporter views {v.shape} as {shape}, "
                f"which hold different numbers of values")
        key = (v.name, shape)
        name = self._views.get(key)
        if name is None:
            if len(shape) == 1 and len(v.shape) > 1:
                name = self.node("Flatten", [v.name], f"{base}_flatten",
                                 axis=1)
            else:
                # 0 keeps the batch axis, so ``N`` stays symbolic
                name = self.reshape(v.name, [0] + list(shape), base)
            self._views[key] = name
        return name

    def param_view(self, p, shape, base):
        """Parameter ``p`` as an array of ``shape`` (no batch axis)."""
        name = self.param(p)
        shape = tuple(int(d) for d in shape)
        if tuple(p.shape) == shape:
            return name
        key = (name, shape)
        out = self._views.get(key)
        if out is None:
            out = self.reshape(name, list(shape), base)
            self._views[key] = out
        return out

    def value(self, buf):
        v = self.bufs.get(buf)
        if isinstance(v, _Value):
            return v
        if v is None:       # pragma: no cover - steps are in order
            raise FastLazyError(f"{self.where}: buffer {buf} is read "
                                f"before it is written")
        raise UnsupportedOperatorError(
            f"{self.where}: parameter {v.name} is used as the data of an "
            f"operator; ONNX export takes parameters as operands of "
            f"arithmetic only")

    # -- activations ------------------------------------------------------

    def activation(self, x, code, alpha=0.0, beta=0.0, base="act",
                   node=None):
        """Tensor ``x`` through activation ``code``; returns its name.  The
        last node is named ``node`` (default ``base`` + the activation)."""
        if code == NO_ACT:
            return x
        name = self._act_names.get(code)
        last = node or f"{base}_{name}"
        simple = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh",
                  "softrelu": "Softplus", "softsign": "Softsign"}
        if name in simple:
            return self.node(simple[name], [x], last)
        if name == "gelu":
            if self.opset >= 20:
                return self.node("Gelu", [x], last)
            # the exact (erf) form: x * 0.5 * (1 + erf(x / sqrt(2)))
            t = self.node("Mul", [x, self.scalar(1.0 / math.sqrt(2.0))],
                          f"{base}_gelu_scale")
            t = self.node("Erf", [t], f"{base}_gelu_erf")
            t = self.node("Add", [t, self.scalar(1.0)], f"{base}_gelu_add")
            t = self.node("Mul", [x, t], f"{base}_gelu_mul")
            return self.node("Mul", [t, self.scalar(0.5)], last)
        if name in ("silu", "swish"):
            s = x
            if name == "swish" and alpha != 1.0:
                s = self.node("Mul", [x, self.scalar(alpha)],
                              f"{base}_swish_beta")
            s = self.node("Sigmoid", [s], f"{base}_{name}_sigmoid")
            return self.node("Mul", [x, s], last)
        if name == "relu6":
            return self.node("Clip", [x, self.scalar(0.0), self.scalar(6.0)],
                             last)
        if name == "clip":
            return self.node("Clip", [x, self.scalar(alpha),
                                      self.scalar(beta)], last)
        if name == "leaky":
            return self.node("LeakyRelu", [x], last,
                             alpha=float(alpha))
        if name == "elu":
            return self.node("Elu", [x], last, alpha=float(alpha))
        if name == "selu":
            return self.node("Selu", [x], last, alpha=_SELU_ALPHA,
                             gamma=_SELU_SCALE)
        raise UnsupportedOperatorError(
            f"{self.where}: activation code {code} has no ONNX form in "
            f"fastlazy's exporter")

    # -- steps ----------------------------------------------------------

    def emit(self, st):
        """Write step ``st``'s nodes; its output buffer becomes a tensor."""
        method = _EMITTERS.get(type(st))
        if method is None:
            raise UnsupportedOperatorError(
                f"{self.where}: the step {type(st).__name__} has no ONNX "
                f"form in fastlazy's exporter")
        self.bufs[st.dst] = method(self, st)

    def _base(self, p, kind):
        """A node name from a parameter's (``dense0_weight`` -> ``dense0``),
        or a new one of ``kind``."""
        if p is None:
            return self.prefix(kind)
        name = p.name
        for suffix in ("_weight", "_running_mean", "_gamma", "_alpha"):
            if name.endswith(suffix) and len(name) > len(suffix):
                return name[:-len(suffix)]
        return name

    def _DenseStep(self, st):
        x = self.value(st.src)
        base = self._base(st.weight, "dense")
        w = self.param(st.weight)
        b = [self.param(st.bias)] if st.bias is not None else []
        if st.rows == 1:
            a = self.view(x, (st.K,), base)
            y = self.node("Gemm", [a, w] + b, f"{base}_fwd", transB=1)
            shape = (st.M,)
        else:
            s = x.shape
            lead = s[:-1] if len(s) >= 2 and s[-1] == st.K and \
                prod(s[:-1]) == st.rows else (st.rows,)
            a = self.view(x, lead + (st.K,), base)
            wt = self._views.get((w, "T"))
            if wt is None:
                wt = self.node("Transpose", [w], f"{base}_weight_t",
                               perm=[1, 0])
                self._views[(w, "T")] = wt
            y = self.node("MatMul", [a, wt], f"{base}_fwd")
            if b:
                y = self.node("Add", [y] + b, f"{base}_add_bias")
            shape = lead + (st.M,)
        if st.bn is not None:
            bn = st.bn
            y, shape = self._batchnorm(_Value(y, shape), bn.gamma, bn.beta,
                                       bn.mean, bn.var, bn.eps, st.rows,
                                       st.M, 1)
        return _Value(self.activation(y, st.act, base=base), shape)

    def _ConvStep(self, st):
        g = st.geom
        base = self._base(st.weight, "conv")
        a = self.view(self.value(st.src), (g.C, g.H, g.W), base)
        ins = [a, self.param(st.weight)]
        if st.bias is not None:
            ins.append(self.param(st.bias))
        y = self.node("Conv", ins, f"{base}_fwd", kernel_shape=[g.kh, g.kw],
                      strides=[g.sh, g.sw], pads=[g.ph, g.pw, g.ph, g.pw],
                      dilations=[g.dh, g.dw], group=g.groups)
        shape = (g.O, g.OH, g.OW)
        if st.bn is not None:
            bn = st.bn
            y, shape = self._batchnorm(_Value(y, shape), bn.gamma, bn.beta,
                                       bn.mean, bn.var, bn.eps, 1, g.O,
                                       g.OH * g.OW)
        return _Value(self.activation(y, st.act, base=base), shape)

    def _PoolStep(self, st):
        g = st.geom
        kind = "max" if st.is_max else "avg"
        base = self.prefix(f"{kind}pool")
        a = self.view(self.value(st.src), (g.C, g.H, g.W), base)
        shape = (g.C, g.OH, g.OW)
        if (g.kh, g.kw) == (g.H, g.W) and (g.ph, g.pw) == (0, 0) and \
                (g.OH, g.OW) == (1, 1):
            op = "GlobalMaxPool" if st.is_max else "GlobalAveragePool"
            return _Value(self.node(op, [a], base), shape)
        # fastlazy's ceil mode adds windows past the padded input: explicit
        # extra padding at the end (which never wins a maximum and is not
        # counted in an average) gives the same windows in any opset
        for size, k, s, p, n in ((g.H, g.kh, g.sh, g.ph, g.OH),
                                 (g.W, g.kw, g.sw, g.pw, g.OW)):
            if k <= p or (n - 1) * s - p >= size:
                raise UnsupportedOperatorError(
                    f"{self.where}: a {'max' if st.is_max else 'average'} "
                    f"pooling of window ({g.kh}, {g.kw}), strides "
                    f"({g.sh}, {g.sw}), padding ({g.ph}, {g.pw}) over "
                    f"{g.H}x{g.W} has windows with no input value, which "
                    f"fastlazy sets to 0 and ONNX's pooling operators do "
                    f"not; use a window larger than the padding (and, in "
                    f"ceil mode, strides no larger than the window)")
        eh = max(0, (g.OH - 1) * g.sh + g.kh - (g.H + 2 * g.ph))
        ew = max(0, (g.OW - 1) * g.sw + g.kw - (g.W + 2 * g.pw))
        window = dict(kernel_shape=[g.kh, g.kw], strides=[g.sh, g.sw])
        pads = [g.ph, g.pw, g.ph + eh, g.pw + ew]
        if st.is_max:
            y = self.node("MaxPool", [a], base, pads=pads, **window)
        elif not st.count_include_pad or (eh, ew) == (0, 0):
            y = self.node("AveragePool", [a], base, pads=pads,
                          count_include_pad=int(st.count_include_pad),
                          **window)
        else:
            # the average counts the symmetric padding but not the ceil
            # mode's extra windows: the average over the input values only
            # (count_include_pad=0, which every reader takes alike),
            # rescaled by a constant per output position from that count
            # to fastlazy's (the window clipped to the padded input)
            y = self.node("AveragePool", [a], f"{base}_inside", pads=pads,
                          count_include_pad=0, **window)

            def counts(n, size, k, s, p):
                start = np.arange(n) * s - p
                inside = np.minimum(start + k, size) - np.maximum(start, 0)
                padded = np.minimum(start + k, size + p) - start
                return inside, padded
            ih, ph = counts(g.OH, g.H, g.kh, g.sh, g.ph)
            iw, pw = counts(g.OW, g.W, g.kw, g.sw, g.pw)
            scale = np.outer(ih, iw) / np.outer(ph, pw)
            y = self.node("Mul", [y, self.const(scale,
                                                f"{base}_count_scale")],
                          base)
        return _Value(y, shape)

    def _ones_or(self, p, c, fill, base):
        if p is not None:
            return self.param(p)
        return self.const(np.full((c,), fill), base)

    def _batchnorm(self, x, gamma, beta, mean, var, eps, outer, c, inner):
        """BatchNormalization of tensor ``x`` (``outer x c x inner`` values
        per sample) over its ``c`` channels; returns (name, shape)."""
        base = self._base(mean, "batchnorm")
        if base.endswith("_running"):
            base = base[:-len("_running")]
        scale = self._ones_or(gamma, c, 1.0, f"{base}_fixed_gamma")
        shift = self._ones_or(beta, c, 0.0, f"{base}_zero_beta")
        ins = [scale, shift, self.param(mean), self.param(var)]
        s = x.shape
        if outer == 1:
            # channels right after the batch axis: ONNX's layout
            shape = s if s and s[0] == c and prod(s[1:]) == inner else \
                ((c, inner) if inner > 1 else (c,))
            y = self.node("BatchNormalization", [self.view(x, shape, base)]
                          + ins, f"{base}_fwd", epsilon=float(eps))
            return y, shape
        # channels after other axes: BatchNormalization wants them on axis
        # 1, so the same arithmetic over the same four parameters,
        # (x - mean) * (gamma / sqrt(var + eps)) + beta, per channel
        if inner == 1:
            shape = s if s and s[-1] == c and prod(s[:-1]) == outer else \
                (outer, c)
            pshape = (c,)
        else:
            shape, pshape = (outer, c, inner), (c, 1)
        a = self.view(x, shape, base)
        std = self.node("Sqrt", [self.node("Add", [ins[3], self.scalar(eps)],
                                           f"{base}_var_eps")],
                        f"{base}_std")
        factor = self.node("Div", [ins[0], std], f"{base}_factor")

        def per_channel(t, what):
            return self.reshape(t, list(pshape), f"{base}_{what}") \
                if pshape != (c,) else t
        y = self.node("Sub", [a, per_channel(ins[2], "mean")],
                      f"{base}_centre")
        y = self.node("Mul", [y, per_channel(factor, "factor")],
                      f"{base}_scale")
        y = self.node("Add", [y, per_channel(ins[1], "beta")],
                      f"{base}_fwd")
        return y, shape

    def _BatchNormStep(self, st):
        y, shape = self._batchnorm(self.value(st.src), st.gamma, st.beta,
                                   st.mean, st.var, st.eps, st.outer, st.C,
                                   st.inner)
        base = self._base(st.mean, "batchnorm")
        return _Value(self.activation(y, st.act, base=base), shape)

    def _LayerNormStep(self, st):
        x = self.value(st.src)
        base = self._base(st.gamma, "layernorm")
        c, s = st.C, x.shape
        gamma = self._ones_or(st.gamma, c, 1.0, f"{base}_unit_gamma")
        beta = self._ones_or(st.beta, c, 0.0, f"{base}_zero_beta")
        if st.inner == 1:
            last = s if s and s[-1] == c and prod(s[:-1]) == st.outer \
                else ((st.outer, c) if st.outer > 1 else (c,))
            a = self.view(x, last, base)
            if self.opset >= 17:
                y = self.node("LayerNormalization", [a, gamma, beta],
                              f"{base}_fwd", axis=-1, epsilon=float(st.eps))
            else:
                y = self._layernorm_nodes(a, gamma, beta, len(last), (c,),
                                          st.eps, base)
            return _Value(y, last)
        # normalized over an axis that is not the last: LayerNormalization
        # covers every axis from its own, so the arithmetic over that one
        # (no transposes: a runtime or reader needs none)
        shape = (st.outer, c, st.inner)
        a = self.view(x, shape, base)
        y = self._layernorm_nodes(a, gamma, beta, 2, (c, 1), st.eps, base)
        return _Value(y, shape)

    def _layernorm_nodes(self, a, gamma, beta, axis, pshape, eps, base):
        """LayerNorm over ``axis`` of ``a`` without LayerNormalization
        (opsets before 17, or an axis that is not the last): mean,
        variance, scale and shift."""
        def reduce_mean(t, name):
            return self.reduce("ReduceMean", t, [axis], True, name)
        mean = reduce_mean(a, f"{base}_mean")
        d = self.node("Sub", [a, mean], f"{base}_centre")
        var = reduce_mean(self.node("Mul", [d, d], f"{base}_square"),
                          f"{base}_var")
        std = self.node("Sqrt", [self.node("Add", [var, self.scalar(eps)],
                                           f"{base}_eps")], f"{base}_std")
        y = self.node("Div", [d, std], f"{base}_norm")
        if pshape != (pshape[0],):
            gamma = self.reshape(gamma, list(pshape), f"{base}_gamma")
            beta = self.reshape(beta, list(pshape), f"{base}_beta")
        y = self.node("Mul", [y, gamma], f"{base}_scale")
        return self.node("Add", [y, beta], f"{base}_fwd")

    def _ActStep(self, st):
        x = self.value(st.src)
        base = self.prefix(self._act_names.get(st.act, "act"))
        y = self.activation(x.name, st.act, st.alpha, st.beta, base=base,
                            node=base)
        if y == x.name:
            return x
        return _Value(y, x.shape)

    def _operand(self, buf):
        """(tensor or Parameter) read by a BinaryStep."""
        v = self.bufs.get(buf)
        if v is None:       # pragma: no cover
            raise FastLazyError(f"{self.where}: buffer {buf} is read "
                                f"before it is written")
        return v

    def _direct_binary(self, st, a, b):
        """The per-sample output shape when ``a op b`` with the tensors'
        own shapes (NumPy broadcasting) is exactly ``st``, else None.
        Decided by the tracer's own rule: the step it would make for
        these shapes must be ``st``."""
        from ..ops import Sym, TraceContext, _binary

        ctx = TraceContext(StepBuilder(), {})

        def sym(v):
            if isinstance(v, _Value):
                return Sym(ctx, ctx.builder.input(v.shape), (1,) + v.shape)
            return Sym(ctx, None, None, param=v)
        try:
            y = _binary(st.op, sym(a), sym(b))
        except Exception:
            return None
        got = ctx.builder.steps[-1]
        if (got.dims, got.a_strides, got.b_strides, got.a_size) == \
                (st.dims, st.a_strides, st.b_strides, st.a_size):
            return tuple(y.shape[1:])
        return None

    def _BinaryStep(self, st):
        op = _BINARY_OPS.get(st.op)
        if op is None:
            raise UnsupportedOperatorError(
                f"{self.where}: the element-wise operator {st.op!r} has no "
                f"ONNX form in fastlazy's exporter")
        a, b = self._operand(st.src), self._operand(st.src2)
        for v in (a, b):
            if not isinstance(v, _Value) and v.storage_transposed:
                raise UnsupportedOperatorError(
                    f"{self.where}: parameter {v.name} is stored transposed "
                    f"(a Dense weight) and cannot be an array operand")
        base = self.prefix(st.op)
        shape = self._direct_binary(st, a, b)
        if shape is not None:
            # per-sample shapes align on the right, after the batch axis:
            # the operand with fewer axes gets leading ones (ONNX would
            # align its batch axis with a sample axis)
            rank = max(len(v.shape) for v in (a, b) if isinstance(v, _Value))
            names = [self.view(v, (1,) * (rank - len(v.shape)) + v.shape,
                               base) if isinstance(v, _Value)
                     else self.param(v) for v in (a, b)]
            return _Value(self.node(op, names, base), shape)
        # the step's own layout: its (up to 4) per-sample dimensions, each
        # operand's broadcast ones as 1
        keep = [i for i, d in enumerate(st.dims) if d != 1] or [3]
        shape = tuple(st.dims[i] for i in keep)
        names = []
        for v, strides in ((a, st.a_strides), (b, st.b_strides)):
            view = tuple(st.dims[i] if strides[1 + i] else 1 for i in keep)
            if isinstance(v, _Value):
                names.append(self.view(v, view, base))
            else:
                names.append(self.param_view(v, view, base))
        return _Value(self.node(op, names, base), shape)

    def _ScalarStep(self, st):
        x = self.value(st.src)
        c = self.scalar(st.value)
        base = self.prefix(f"scalar_{st.op}")
        ops = {"add": ("Add", False), "sub": ("Sub", False),
               "mul": ("Mul", False), "div": ("Div", False),
               "max": ("Max", False), "min": ("Min", False),
               "pow": ("Pow", False), "rsub": ("Sub", True),
               "rdiv": ("Div", True)}
        if st.op not in ops:
            raise UnsupportedOperatorError(
                f"{self.where}: the scalar operator {st.op!r} has no ONNX "
                f"form in fastlazy's exporter")
        op, reverse = ops[st.op]
        ins = [c, x.name] if reverse else [x.name, c]
        return _Value(self.node(op, ins, base), x.shape)

    @staticmethod
    def _split_axis(s, outer, chunk):
        """The axis ``a`` of per-sample shape ``s`` with the axes before it
        holding ``outer`` and the axes from it ``chunk`` values, or None."""
        if prod(s) != outer * chunk:
            return None
        for a in range(len(s)):
            if prod(s[:a]) == outer and prod(s[a:]) == chunk and s[a] > 0:
                return a
        return None

    def _ConcatStep(self, st):
        xs = [self.value(b) for b in st.srcs]
        base = self.prefix("concat")
        axes = {self._split_axis(x.shape, st.outer, p)
                for x, p in zip(xs, st.parts)}
        if len(axes) == 1 and None not in axes:
            a = axes.pop()
            rests = {x.shape[a + 1:] for x in xs}
            ranks = {len(x.shape) for x in xs}
            if len(rests) == 1 and len(ranks) == 1:
                shape = list(xs[0].shape)
                shape[a] = sum(x.shape[a] for x in xs)
                y = self.node("Concat", [x.name for x in xs], base,
                              axis=a + 1)
                return _Value(y, shape)
        lead = (st.outer,) if st.outer > 1 else ()
        names = [self.view(x, lead + (p,), base)
                 for x, p in zip(xs, st.parts)]
        y = self.node("Concat", names, base, axis=len(lead) + 1)
        return _Value(y, lead + (sum(st.parts),))

    def _SliceStep(self, st):
        x = self.value(st.src)
        base = self.prefix("slice")
        s = x.shape
        a = self._split_axis(s, st.outer, st.in_chunk)
        if a is not None:
            inner = prod(s[a + 1:])
            if st.begin % inner == 0 and st.out_chunk % inner == 0:
                begin, n = st.begin // inner, st.out_chunk // inner
                shape = s[:a] + (n,) + s[a + 1:]
                return _Value(self._slice(x.name, a + 1, begin, begin + n,
                                          base), shape)
        lead = (st.outer,) if st.outer > 1 else ()
        a = self.view(x, lead + (st.in_chunk,), base)
        y = self._slice(a, len(lead) + 1, st.begin, st.begin + st.out_chunk,
                        base)
        return _Value(y, lead + (st.out_chunk,))

    def _slice(self, x, axis, begin, end, base):
        i64 = np.int64
        return self.node("Slice", [
            x, self.const(np.array([begin], i64), "starts", i64),
            self.const(np.array([end], i64), "ends", i64),
            self.axes_const([axis])], base)

    def _ReduceStep(self, st):
        x = self.value(st.src)
        base = self.prefix(f"reduce_{st.op}")
        s = x.shape
        found = None
        if prod(s) == st.outer * st.mid * st.inner:
            for first in range(len(s)):
                for last in range(first, len(s)):
                    if prod(s[:first]) == st.outer and \
                            prod(s[first:last + 1]) == st.mid and \
                            prod(s[last + 1:]) == st.inner:
                        found = (first, last)
                        break
                if found:
                    break
        if found:
            first, last = found
            name = x.name
            axes = list(range(first + 1, last + 2))
            shape = s[:first] + s[last + 1:]
        else:
            name = self.view(x, (st.outer, st.mid, st.inner), base)
            axes = [2]
            first, last = 1, 1
            s = (st.outer, st.mid, st.inner)
            shape = (st.outer, st.inner)
        # a sample reduced to one value keeps an axis: (N, 1), not (N,)
        keep = not shape
        if keep:
            shape = s[:first] + (1,) * (last - first + 1) + s[last + 1:]
        op = {"sum": "ReduceSum", "mean": "ReduceMean",
              "max": "ReduceMax"}.get(st.op)
        if op is None:
            raise UnsupportedOperatorError(
                f"{self.where}: the reduction {st.op!r} has no ONNX form "
                f"in fastlazy's exporter")
        return _Value(self.reduce(op, name, axes, keep, base), shape)

    def reduce(self, op, x, axes, keepdims, base):
        """``op`` (ReduceSum, ReduceMean, ReduceMax) of ``x`` over
        ``axes``: ReduceSum takes its axes as an input from opset 13, the
        others from opset 18."""
        if op == "ReduceSum" or self.opset >= 18:
            return self.node(op, [x, self.axes_const(axes)], base,
                             keepdims=int(keepdims))
        return self.node(op, [x], base, axes=list(axes),
                         keepdims=int(keepdims))

    def _SoftmaxStep(self, st):
        x = self.value(st.src)
        op = "LogSoftmax" if st.log else "Softmax"
        base = self.prefix(op.lower())
        s = x.shape
        for a in range(len(s)):
            if prod(s[:a]) == st.outer and s[a] == st.C and \
                    prod(s[a + 1:]) == st.inner:
                return _Value(self.node(op, [x.name], base, axis=a + 1), s)
        shape = (st.outer, st.C, st.inner)
        a = self.view(x, shape, base)
        return _Value(self.node(op, [a], base, axis=2), shape)

    def _PReluStep(self, st):
        x = self.value(st.src)
        base = self._base(st.alpha, "prelu")
        s = x.shape
        if st.outer == 1 and s and s[0] == st.C and \
                prod(s[1:]) == st.inner:
            shape = s
            channel_axis = 0
        else:
            shape = (st.outer, st.C, st.inner)
            channel_axis = 1
        a = self.view(x, shape, base)
        n = prod(st.alpha.shape)
        slope_shape = (1,) if n == 1 else \
            (st.C,) + (1,) * (len(shape) - channel_axis - 1)
        slope = self.param_view(st.alpha, slope_shape, base)
        return _Value(self.node("PRelu", [a, slope], f"{base}_fwd"), shape)

    def _CopyStep(self, st):
        x = self.value(st.src)
        return _Value(self.node("Identity", [x.name], self.prefix("copy")),
                      x.shape)

    # -- the graph ------------------------------------------------------

    def finish_outputs(self, outs, out_shapes, names):
        """Give each output its name and its exact per-sample shape."""
        tensors = [self.view(self.value(buf), shape, name)
                   for buf, shape, name in zip(outs, out_shapes, names)]
        consumed = {i for n in self.nodes for i in n.input}
        producers = {o: n for n in self.nodes for o in n.output}
        claimed = set()
        for t, name in zip(tensors, names):
            node = producers.get(t)
            if node is not None and t not in consumed and t not in claimed:
                # the node computing the output writes it under its name
                node.output[list(node.output).index(t)] = name
            else:
                # an input, a value used further, or one output twice
                self.nodes.append(self.helper.make_node(
                    "Identity", [t], [name], name=self._unique(
                        f"{name}_identity", self.node_names,
                        self._node_counters)))
            claimed.add(t)


#: the method writing each step kind
_EMITTERS = {
    DenseStep: _GraphWriter._DenseStep, ConvStep: _GraphWriter._ConvStep,
    PoolStep: _GraphWriter._PoolStep,
    BatchNormStep: _GraphWriter._BatchNormStep,
    LayerNormStep: _GraphWriter._LayerNormStep,
    ActStep: _GraphWriter._ActStep, BinaryStep: _GraphWriter._BinaryStep,
    ScalarStep: _GraphWriter._ScalarStep,
    ConcatStep: _GraphWriter._ConcatStep,
    SliceStep: _GraphWriter._SliceStep,
    ReduceStep: _GraphWriter._ReduceStep,
    SoftmaxStep: _GraphWriter._SoftmaxStep,
    PReluStep: _GraphWriter._PReluStep, CopyStep: _GraphWriter._CopyStep,
}

_EXPORTS_WHAT = ("Export writes networks fastlazy compiles as one plan "
                 "(fl.explain(net, input_shape) shows how a network runs)")


def _refuse_eager(net, where):
    """A network that runs eagerly cannot be exported: say which block's
    code is the reason (the tracer's own words)."""
    if net._eager_reason is not None:
        block, reason = net._eager_reason
        raise UnsupportedOperatorError(
            f"fl.onnx.export: {where} cannot be exported: it runs eagerly "
            f"because the code of '{block}' cannot be compiled ({reason}). "
            f"{_EXPORTS_WHAT}")
    if not net._is_plannable():
        raise UnsupportedOperatorError(
            f"fl.onnx.export: {where} cannot be exported: its forward() is "
            f"Python code; derive from HybridBlock and write "
            f"hybrid_forward(F, x) to compile it. {_EXPORTS_WHAT}")


def _parse_input_shapes(net, input_shape, where):
    """The traced input shapes (batch 1) and whether they were given."""
    if input_shape is None:
        plan = net._plan if net._plan is not None else net._hook_plan
        if plan is not None:
            return [(1,) + tuple(s) for s in plan.in_shapes]
        params = list(net.collect_params().values())
        waiting = [p for p in params if not p.is_initialized]
        if waiting:
            listed = ", ".join(f"{p.name} {p.shape}" for p in waiting[:3])
            more = f" and {len(waiting) - 3} more" if len(waiting) > 3 \
                else ""
            raise DeferredInitializationError(
                f"fl.onnx.export: {where} has parameters whose shapes wait "
                f"for its first input ({listed}{more}); pass "
                f"input_shape=(None, ...), the shape of one input with None "
                f"for the batch size (a list of shapes for several inputs): "
                f"export then infers the shapes and initializes the network "
                f"as net.build(input_shape) would. Nothing was changed.")
        raise ShapeError(
            f"fl.onnx.export: {where} has not been run, so its input shape "
            f"is unknown; pass input_shape=(None, ...), the shape of one "
            f"input with None for the batch size (a list of shapes for "
            f"several inputs)")
    if isinstance(input_shape, (tuple, list)) and input_shape and \
            all(isinstance(s, (tuple, list)) for s in input_shape):
        shapes = list(input_shape)
    else:
        shapes = [input_shape]
    out = []
    for s in shapes:
        if not isinstance(s, (tuple, list)) or len(s) < 2 or not all(
                d is None or (is_int(d) and d > 0) for d in s):
            raise TypeError(
                f"fl.onnx.export: input_shape must be a shape such as "
                f"(None, 20) (the batch size first, None or a number, then "
                f"at least one positive dimension), or a list of such "
                f"shapes for several inputs; got {input_shape!r}")
        if not all(is_int(d) and d > 0 for d in s[1:]):
            raise TypeError(
                f"fl.onnx.export: only the batch axis (the first) may be "
                f"None; got input_shape {input_shape!r}")
        out.append((1,) + tuple(int(d) for d in s[1:]))
    return out


def _check_opset(onnx, opset):
    if isinstance(opset, bool) or not is_int(opset):
        raise TypeError(f"fl.onnx.export: opset must be an int from "
                        f"{MIN_OPSET} to {MAX_OPSET}, got {opset!r}")
    opset = int(opset)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(
            f"fl.onnx.export: opset {opset} is not supported; fastlazy "
            f"writes ONNX opsets {MIN_OPSET} to {MAX_OPSET} (default "
            f"{DEFAULT_OPSET}, the first with LayerNormalization)")
    known = onnx.defs.onnx_opset_version()
    if opset > known:
        raise ValueError(
            f"fl.onnx.export: opset {opset} is newer than the installed "
            f"onnx {onnx.__version__} knows (up to {known}); upgrade onnx "
            f"or pass opset={known}")
    return opset


def _names(given, n, default, what):
    if given is None:
        return [default] if n == 1 else [f"{default}{i}" for i in range(n)]
    if isinstance(given, str):
        given = [given]
    given = list(given)
    if len(given) != n or not all(isinstance(s, str) and s for s in given):
        raise ValueError(f"fl.onnx.export: {what} must be {n} non-empty "
                         f"string(s), one per {what[:-6]}, got {given!r}")
    return given


def _trace_network(net, shapes, where):
    """Trace ``net`` for ``shapes`` and finish its deferred initialization
    (as ``build`` does); returns (steps, output buffers, output shapes,
    input buffers, the parameters the trace completed, their snapshots).
    On any error nothing has changed."""
    try:
        builder, outs, out_shapes, pending, _ = _trace(net, shapes,
                                                       compiling=True)
    except TraceFailed as failed:
        raise UnsupportedOperatorError(
            f"fl.onnx.export: {where} cannot be exported: the code of "
            f"{_where(failed.block)} cannot be compiled ({failed.reason}). "
            f"{_EXPORTS_WHAT}") from None
    used = _used_params(builder)
    changing = [p for p in list(net.collect_params().values())
                + list(used.values()) if not p.is_initialized]
    snaps = [(p, p._snapshot()) for p in changing]
    try:
        _finish(net, pending, used)
    except DeferredInitializationError as exc:
        raise DeferredInitializationError(
            f"fl.onnx.export: {where}: {exc}") from None
    return builder, outs, out_shapes, snaps


def _build_model(onnx, net, builder, outs, out_shapes, dtype, opset,
                 input_names, output_names, where):
    w = _GraphWriter(onnx, dtype, opset, where)
    # parameter names first: they are Gluon's, the rest is named around them
    for st in builder.steps:
        for p in st.params():
            w.param(p)
    for b, p in builder.params.items():
        w.param(p)
        w.bufs[b] = p
    clash = [n for n in input_names + output_names if n in w.taken]
    if clash or len(set(input_names + output_names)) < \
            len(input_names) + len(output_names):
        raise ValueError(
            f"fl.onnx.export: input and output names must differ from each "
            f"other and from the parameters' names; {clash or input_names + output_names} "
            f"collide (pass input_names= / output_names=)")
    w.taken.update(input_names + output_names)
    vi = onnx.helper.make_tensor_value_info
    inputs = []
    for buf, shape, name in zip(builder.inputs, builder.in_shapes,
                                input_names):
        w.bufs[buf] = _Value(name, shape)
        inputs.append(vi(name, w.elem, ["N"] + list(shape)))
    for st in builder.steps:
        w.emit(st)
    per_sample = [tuple(s[1:]) for s in out_shapes]
    w.finish_outputs(outs, per_sample, output_names)
    outputs = [vi(name, w.elem, ["N"] + list(shape))
               for name, shape in zip(output_names, per_sample)]
    graph = onnx.helper.make_graph(w.nodes, net.name, inputs, outputs)
    opsets = [onnx.helper.make_opsetid("", opset)]
    from .. import __version__
    model = onnx.helper.make_model(
        graph, opset_imports=opsets, producer_name="fastlazy",
        producer_version=__version__,
        ir_version=onnx.helper.find_min_ir_version_for(opsets))
    model.doc_string = f"{type(net).__name__} '{net.name}', exported by " \
        f"fastlazy {__version__}"
    for name, arr in w.initializers:
        # the values copied once, into the model's own message, as
        # little-endian raw data (ONNX's byte order)
        t = model.graph.initializer.add()
        t.name = name
        t.data_type = onnx.helper.np_dtype_to_tensor_dtype(arr.dtype)
        t.dims.extend(arr.shape)
        t.raw_data = np.asarray(arr, arr.dtype.newbyteorder("<")) \
            .tobytes(order="C")
    return model, w.param_bytes


def _os_error(exc, path):
    """``exc`` saying which file export could not write."""
    if exc.errno is None:
        return exc
    return type(exc)(exc.errno, f"fl.onnx.export: cannot write {path!r}: "
                     f"{exc.strerror}")


def _write_atomic(onnx, model, path, external, where):
    """Write ``model`` to ``path`` through a temporary folder beside it:
    written, checked with onnx.checker, then renamed, so ``path`` is whole
    or untouched.  With ``external``, the parameters go to
    ``path + '.data'`` beside it (moved into place just before the
    model)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    if not base or os.path.isdir(path):
        raise IsADirectoryError(
            f"fl.onnx.export: {path!r} is a folder; give a file name such "
            f"as model.onnx")
    try:
        tmpdir = tempfile.mkdtemp(prefix=f".{base}.", suffix=".tmp",
                                  dir=folder)
    except OSError as exc:
        raise _os_error(exc, path) from None
    try:
        tmp = os.path.join(tmpdir, base)
        data_name = base + ".data"
        if external:
            onnx.save_model(model, tmp, save_as_external_data=True,
                            all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
        else:
            with open(tmp, "wb") as fh:
                fh.write(model.SerializeToString())
                fh.flush()
                os.fsync(fh.fileno())
        try:
            onnx.checker.check_model(tmp, full_check=True)
        except onnx.checker.ValidationError as exc:
            raise FastLazyError(
                f"fl.onnx.export: the model written for {where} fails "
                f"onnx.checker ({exc}); this is a fastlazy bug: please "
                f"report it with the network") from None
        if external:
            os.replace(os.path.join(tmpdir, data_name),
                       os.path.join(folder, data_name))
        os.replace(tmp, path)
    except OSError as exc:
        raise _os_error(exc, path) from None
    finally:
        for name in os.listdir(tmpdir):
            try:
                os.unlink(os.path.join(tmpdir, name))
            except OSError:
                pass
        try:
            os.rmdir(tmpdir)
        except OSError:
            pass
    return path


def export(net, path=None, input_shape=None, opset=DEFAULT_OPSET, *,
           input_names=None, output_names=None, external_data=None):
    """Write ``net`` as an ONNX model.

    Parameters
    ----------
    net : Block
        A network fastlazy compiles as one plan: Sequential chains, a
        HybridBlock's ``hybrid_forward`` graph (branches, residual adds,
        concatenation, several inputs or outputs), convolutional nets, the
        model zoo's.  A block whose code cannot be compiled raises
        :class:`~fastlazy.UnsupportedOperatorError` naming it and why.
    path : str or os.PathLike, optional
        Where to write the ``.onnx`` file (through a temporary file and a
        rename: the file is whole or untouched).  None: return the
        ``onnx.ModelProto`` instead of writing it.
    input_shape : tuple, or list of tuples, optional
        The shape of one input with None (or any number) for the batch
        size, e.g. ``(None, 20)`` or ``(None, 3, 32, 32)``; a list of
        shapes for a network with several inputs.  Needed when the network
        has not been run (a deferred network is then initialized as
        ``net.build(input_shape)`` would); else the shapes of its last call
        are used.  The batch axis is dynamic (``N``) in the file whatever
        is given here.
    opset : int, default 17
        The ONNX opset, 13 to 21.  Before 17 LayerNorm is written as its
        arithmetic; from 20 GELU is the ``Gelu`` operator (before, its erf
        form).
    input_names, output_names : list of str, optional
        Default ``data`` and ``output`` (``data0``, ``data1``, ... for
        several).
    external_data : bool, optional
        Write the parameters to ``path + '.data'`` beside the model (ONNX's
        external data).  Default: only when they do not fit in the 2 GB a
        single ONNX file can hold.

    Returns
    -------
    str or onnx.ModelProto
        ``path``, or the model when ``path`` is None.  The model passes
        ``onnx.checker.check_model(full_check=True)``.

    Parameters keep Gluon's names (``dense0_weight``, ...) as the
    initializers' names; BatchNorm is a ``BatchNormalization`` with its
    four parameters, never folded.  ``onnx`` (``pip install
    'fastlazy[onnx]'``) is imported only here.
    """
    from ..block import Block
    onnx = _import_onnx()
    opset = _check_opset(onnx, opset)
    if not isinstance(net, Block):
        raise TypeError(f"fl.onnx.export: net must be a fastlazy Block, "
                        f"got {type(net).__name__}")
    if external_data not in (None, True, False):
        raise TypeError(f"fl.onnx.export: external_data must be None, True "
                        f"or False, got {external_data!r}")
    if external_data and path is None:
        raise ValueError("fl.onnx.export: external_data needs a path to "
                         "write the data file beside")
    where = _where(net)
    _refuse_eager(net, where)
    shapes = _parse_input_shapes(net, input_shape, where)
    in_names = _names(input_names, len(shapes), "data", "input_names")
    with net._lock:
        builder, outs, out_shapes, snaps = _trace_network(net, shapes, where)
        try:
            dtype = net_dtype(net)
            out_names = _names(output_names, len(outs), "output",
                               "output_names")
            model, nbytes = _build_model(onnx, net, builder, outs,
                                         out_shapes, dtype, opset, in_names,
                                         out_names, where)
            external = external_data if external_data is not None \
                else nbytes > _PROTOBUF_LIMIT - (64 << 20)
            if path is None:
                if external is True and external_data is None:
                    raise ValueError(
                        f"fl.onnx.export: {where} has {nbytes} bytes of "
                        f"parameters, more than one ONNX message holds; "
                        f"give a path (the parameters are written beside "
                        f"it)")
                try:
                    onnx.checker.check_model(model, full_check=True)
                except onnx.checker.ValidationError as exc:
                    raise FastLazyError(
                        f"fl.onnx.export: the model built for {where} "
                        f"fails onnx.checker ({exc}); this is a fastlazy "
                        f"bug: please report it with the network") from None
                return model
            return _write_atomic(onnx, model, path, external, where)
        except BaseException:
            # a failed export changes nothing, not even the deferred
            # initialization its trace finished
            for p, snap in snaps:
                p._restore(snap)
            raise
