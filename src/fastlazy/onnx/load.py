"""``fl.onnx.load``: an ONNX model as a compiled fastlazy block.

The model is read and checked whole before anything is built
(:mod:`fastlazy.onnx._read` decodes the file), then walked once in
topological order with the shapes of its inputs:

* values that do not depend on the inputs -- initializers, ``Constant``
  nodes, and what torch computes from them and from ``Shape`` (the
  ``Shape -> Gather -> Unsqueeze -> Concat`` chains that build a reshape
  target) -- are *folded*: computed here, with NumPy; the batch size is a
  symbol in them (``N``), never a number;
* every other node becomes one call of an ``F`` operator
  (:mod:`fastlazy.ops`), or of a function of several
  (:mod:`fastlazy.onnx._block`), with its initializers as parameters;
  ``MatMul`` + ``Add`` becomes one Dense layer with a bias, GELU's erf
  form (``Div, Erf, Add, Mul, Mul``) one GELU, ``x * Sigmoid(x)`` one SiLU.

The calls make a :class:`~fastlazy.symbol_block.Program`, the block is an
:class:`~fastlazy.onnx.OnnxBlock` (a :class:`~fastlazy.SymbolBlock`), and
the tracer compiles it into one plan, fusing as for any network (an
activation into the Dense or Conv2D before it, a BatchNorm into the
convolution before it).

Every node fastlazy cannot run is collected, and one
:class:`~fastlazy.UnsupportedOperatorError` names them all; a malformed
model raises :class:`~fastlazy.ParameterFileError`, contradicting shapes
:class:`~fastlazy.ShapeError`.  Either way nothing is built.
"""

import heapq
import itertools
import math
import os
from collections import Counter

import numpy as np

from .._util import FLOAT_DTYPES, prod
from ..errors import (FastLazyError, ParameterFileError, ShapeError,
                      UnsupportedOperatorError)
from ..symbol_block import OpCall, ParamSpec, Program
from . import _block
from ._block import OnnxBlock
from ._read import (FLOAT_TYPES, TYPE_NAMES, Node, Tensors, read_model,
                    tensor_dims)

__all__ = ["load", "OnnxBlock", "MIN_OPSET", "supported_operators"]

#: the oldest opset of the default domain fastlazy reads
MIN_OPSET = 13
#: values per sample of any tensor computed from the inputs (1 GiB float32)
MAX_SAMPLE = 1 << 28
#: values of a constant computed at load time: at most this many, or as
#: many as the model's initializers hold together if that is more
MIN_FOLD = 1 << 20


# ---------------------------------------------------------------------------
# Values while the graph is walked


class _Batch:
    """The batch size inside shapes computed at load time."""

    __slots__ = ()

    def __repr__(self):
        return "N"


BATCH = _Batch()


class Const:
    """A value known at load time: ``array`` (an object array when it holds
    the batch size), ``name`` the initializer or value it comes from."""

    __slots__ = ("array", "name")

    def __init__(self, array, name=None):
        self.array = array
        self.name = name


class Dyn:
    """A value computed from the inputs: per-sample ``shape``, ``entry``
    (where the program finds it: an input, parameter or call), ``call``
    (the call making it, None for an input)."""

    __slots__ = ("shape", "entry", "call")

    def __init__(self, shape, entry, call):
        self.shape = tuple(shape)
        self.entry = entry
        self.call = call


class _Call:
    """One ``F`` call of the program, still open to fusion."""

    __slots__ = ("name", "op", "fn", "args", "params", "kwargs", "label")

    def __init__(self, name, op, fn, args, params, kwargs, label):
        self.name = name
        self.op = op
        self.fn = fn
        self.args = list(args)
        self.params = dict(params)
        self.kwargs = dict(kwargs)
        self.label = label


class _Refuse(Exception):
    """A node fastlazy cannot run (collected, then reported together)."""


def _has_batch(a):
    return a.dtype == object and any(v is BATCH for v in a.reshape(-1))


def _plain(a):
    """An object array without the batch symbol, as int64."""
    if a.dtype == object and not _has_batch(a):
        return a.astype(np.int64)
    return a


def _full(x):
    """The full shape of a value, the batch as BATCH."""
    if isinstance(x, Dyn):
        return [BATCH] + list(x.shape)
    return list(x.array.shape)


# ---------------------------------------------------------------------------
# Constant folding helpers


def _int_list(c, what, node):
    a = c.array
    if _has_batch(a):
        raise _Refuse(f"{what} depend(s) on the batch size")
    if a.dtype.kind not in "iu":
        raise ParameterFileError(f"{node.where}: {what} must be integers, "
                                 f"got {a.dtype}")
    return [int(v) for v in a.reshape(-1)]


def _axes_list(axes, rank, node):
    out = []
    for a in axes:
        if not -rank <= a < rank:
            raise ParameterFileError(f"{node.where}: axis {a} is out of "
                                     f"range for rank {rank}")
        out.append(a % rank)
    if len(set(out)) != len(out):
        raise ParameterFileError(f"{node.where}: axes {axes} repeat an axis")
    return out


def _fold_size(shape, node, limit):
    n = prod(shape)
    if n > limit:
        raise ParameterFileError(
            f"{node.where}: would compute a constant of shape "
            f"{tuple(shape)} ({n} values) at load time; fastlazy folds "
            f"constants of up to {limit} values here (as many as the "
            f"model's initializers hold, at least {MIN_FOLD})")


_NP_OPS = {"add": np.add, "sub": np.subtract, "mul": np.multiply,
           "div": np.divide, "pow": np.power, "max": np.maximum,
           "min": np.minimum}


def _fold_arith(op, a, b, node, limit):
    if _has_batch(a) or _has_batch(b):
        raise _Refuse(f"{node.op} computes with the batch size (fastlazy "
                      f"folds shape computations that only move it)")
    a, b = _plain(a), _plain(b)
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ShapeError(f"{node.where}: shapes {a.shape} and {b.shape} do "
                         f"not broadcast") from None
    _fold_size(shape, node, limit)
    kind = np.result_type(a, b)
    with np.errstate(all="ignore"):
        if op == "div" and kind.kind in "iub":
            if np.any(b == 0):
                raise ParameterFileError(f"{node.where}: integer division "
                                         f"by zero")
            return np.trunc(a / b).astype(kind)
        return _NP_OPS[op](a, b).astype(kind, copy=False)


def _shape_check(shape, node):
    if any(d < 1 for d in shape):
        raise ShapeError(f"{node.where}: computes an empty tensor of "
                         f"per-sample shape {tuple(shape)}")
    if prod(shape) > MAX_SAMPLE:
        raise ShapeError(f"{node.where}: computes {prod(shape)} values per "
                         f"sample {tuple(shape)}, more than fastlazy allows "
                         f"({MAX_SAMPLE})")
    return tuple(int(d) for d in shape)


def _float(a):
    """A constant as parameter values: float (integers as float64, made the
    network's dtype when assigned)."""
    a = _plain(np.asarray(a))
    return a if a.dtype.kind == "f" else a.astype(np.float64)


_ACT_NAMES = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh",
              "Softplus": "softrelu", "Softsign": "softsign"}
_ARITH = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}
_BROADCAST = {"add": "broadcast_add", "sub": "broadcast_sub",
              "mul": "broadcast_mul", "div": "broadcast_div",
              "max": "broadcast_maximum", "min": "broadcast_minimum"}
_REDUCE = {"ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "max"}
# ONNX's Selu defaults (float32 values of the spec)
_SELU = (1.67326319217681884765625, 1.05070102214813232421875)
_CASTS = {1: np.float32, 10: np.float16, 11: np.float64, 16: np.float32,
          6: np.int32, 7: np.int64, 9: np.bool_, 2: np.uint8, 3: np.int8,
          4: np.uint16, 5: np.int16, 12: np.uint32, 13: np.uint64}
_INT_TYPES = (2, 3, 4, 5, 6, 7, 12, 13)


# ---------------------------------------------------------------------------
# The walk


class _Walk:
    """One model walked once in topological order: its values, the calls
    it becomes, their parameters, and the nodes refused."""

    def __init__(self, where, opsets, tensors, inputs, shapes,
                 static_batch, initializers, readers):
        self.where = where
        self.opsets = opsets
        self.tensors = tensors
        self.initializers = initializers
        self.readers = readers          # value name -> nodes/outputs reading
        self.values = {}
        self.calls = []
        self.specs = []                 # ParamSpec, in order of use
        self.arrays = {}                # parameter key -> array
        self.transposed = {}            # parameter key -> stored transposed
        self.refused = []               # (node, why)
        self.folded = Counter()         # op -> nodes computed at load time
        self.patterns = Counter()       # "GELU from its erf form" -> count
        self.act_labels = {}            # F activation -> ONNX op label
        self.static_batch = static_batch
        self.fold_limit = max(MIN_FOLD, sum(prod(t.dims) for t in
                                            initializers.values()))
        # readers of each program entry, through aliases (Identity, ...)
        self.entry_readers = Counter()
        # inputs, parameters and calls share one namespace (entries);
        # initializer names are kept for their parameters
        self.names = set(inputs) | set(initializers)
        for name in inputs:
            self._bind(name, Dyn(shapes[name], (name, 0), None))

    # -- names and entries -------------------------------------------------

    def _fresh(self, base):
        name = base or "node"
        i = 1
        while name in self.names:
            name = f"{base}_{i}"
            i += 1
        self.names.add(name)
        return name

    def _bind(self, name, val):
        self.values[name] = val
        if isinstance(val, Dyn):
            self.entry_readers[val.entry] += self.readers[name]

    def sole_reader(self, x):
        """Whether the node being converted is the only reader of ``x``'s
        program entry (so its call may be changed)."""
        return self.entry_readers[x.entry] == 1

    def consume(self, x):
        """The node being converted no longer reads ``x`` (fused away)."""
        self.entry_readers[x.entry] -= 1

    # -- building calls and parameters -----------------------------------

    def call(self, n, fn, args, shape, params=(), kwargs=None, label=None):
        """A new call ``fn(*args, **params, **kwargs)``; returns its Dyn.
        ``args`` are Dyns or parameter keys."""
        shape = _shape_check(shape, n)
        c = _Call(self._fresh(n.name), n.op, fn,
                  [a.entry if isinstance(a, Dyn) else (a, 0) for a in args],
                  params, kwargs or {}, label or n.label)
        self.calls.append(c)
        return Dyn(shape, (c.name, 0), c)

    def param(self, const, array, n, role, transposed=False):
        """A parameter holding ``array`` (its logical shape), named after
        the initializer ``const`` comes from; returns its key."""
        array = _float(array)
        base = const.name or f"{n.name}_{role}"
        keys = itertools.chain([base], (
            f"{base}_{role}" + (str(i) if i > 1 else "")
            for i in range(1, 1000)))
        for key in keys:
            if key in self.arrays:
                old = self.arrays[key]
                if self.transposed[key] == transposed and \
                        old.shape == array.shape and \
                        old.dtype == array.dtype and \
                        np.array_equal(old, array):
                    return key
                continue
            own = key == base and key in self.initializers
            if key in self.names and not own:
                continue
            break
        else:       # pragma: no cover - a thousand variants of one name
            key = self._fresh(base)
        self.names.add(key)
        self.arrays[key] = array
        self.transposed[key] = transposed
        self.specs.append(ParamSpec(key, tuple(array.shape), transposed,
                                    f"{role} of node '{n.name}'"))
        return key

    # -- the walk ---------------------------------------------------------

    def run(self, nodes):
        for n in nodes:
            ins = []
            for v in n.inputs:
                if not v:
                    ins.append(None)
                    continue
                val = self.values.get(v)
                if val is None and v in self.initializers:
                    val = Const(self.tensors.decode(
                        self.initializers[v], f"initializer '{v}'"), v)
                    self.values[v] = val
                if val is None:
                    break           # made by a refused node
                ins.append(val)
            else:
                self._convert(n, ins)
                continue
            # after a refused node: judged only on its operator
            why = self._unknown(n)
            if why:
                self.refused.append((n, why))

    def _unknown(self, n):
        """Why fastlazy cannot run ``n`` whatever its inputs, or None."""
        if n.domain:
            return (f"operator domain {n.domain!r}; fastlazy runs the "
                    f"default ONNX domain")
        if getattr(self, "_op_" + n.op, None) is None:
            return "fastlazy has no such operator"
        return None

    def _convert(self, n, ins):
        try:
            outs = self._node(n, ins)
        except _Refuse as exc:
            self.refused.append((n, str(exc)))
            return
        except FastLazyError as exc:
            if str(exc).startswith(self.where):
                raise
            raise type(exc)(f"{n.where}: {exc}") from None
        except (ValueError, TypeError, IndexError, ArithmeticError) as exc:
            # NumPy refusing a folded computation on values of a damaged
            # file
            raise ParameterFileError(f"{n.where}: {type(exc).__name__}: "
                                     f"{exc}") from None
        for name, val in zip(n.outputs, outs):
            if name and val is not None:
                self._bind(name, val)

    def _node(self, n, ins):
        why = self._unknown(n)
        if why:
            raise _Refuse(why)
        outs = getattr(self, "_op_" + n.op)(n, ins)
        if not isinstance(outs, list):
            outs = [outs]
        for i, v in enumerate(n.outputs):
            if i and v and self.readers[v] and (i >= len(outs) or
                                                outs[i] is None):
                raise _Refuse(f"its output {i} ('{v}') is used, and fastlazy "
                              f"computes only the inference output of "
                              f"{n.op}")
        if isinstance(outs[0], Const) or n.op in ("Identity", "Dropout",
                                                  "Cast", "CastLike"):
            self.folded[n.op] += 1
        return outs

    # -- helpers for rules ------------------------------------------------

    def fold(self, n, array, name=None):
        a = np.asarray(array)
        _fold_size(a.shape, n, self.fold_limit)
        return Const(_plain(a), name)

    @staticmethod
    def dyn(v, n, what="its input"):
        if not isinstance(v, Dyn):
            raise _Refuse(f"{what} is a constant here; fastlazy folds "
                          f"{n.op} of constants only for shape computations")
        return v

    @staticmethod
    def const(v, n, what):
        if v is None:
            raise ParameterFileError(f"{n.where}: {what} is missing")
        if not isinstance(v, Const):
            raise _Refuse(f"{what} is computed from the inputs; fastlazy "
                          f"needs a constant (an initializer) there")
        return v

    @staticmethod
    def nins(n, ins, lo, hi=None):
        """``ins`` padded to ``hi`` with None, after checking that the
        first ``lo`` are given and no more than ``hi`` are."""
        hi = lo if hi is None else hi
        given = len(ins)
        while given and ins[given - 1] is None:
            given -= 1
        if given > hi or any(v is None for v in ins[:lo]) or len(ins) < lo:
            want = f"{lo}" if lo == hi else f"{lo} to {hi}"
            raise ParameterFileError(f"{n.where}: takes {want} inputs, has "
                                     f"{given}")
        return list(ins[:hi]) + [None] * (hi - len(ins[:hi]))

    def alias(self, x):
        """A node that passes its input on (Identity, Dropout, a float
        Cast)."""
        if isinstance(x, Dyn):
            self.consume(x)
        return x

    def act(self, n, x, name):
        self.act_labels.setdefault(name, n.label)
        return self.call(n, "Activation", [x], x.shape,
                         kwargs={"act_type": name})

    def scalar(self, n, x, op, value):
        return self.call(n, _block.scalar_op, [x], x.shape,
                         kwargs={"op": op, "value": float(value)})

    def reshape(self, n, x, sample):
        if tuple(sample) == x.shape:
            return self.alias(x)
        return self.call(n, "reshape", [x], sample,
                         kwargs={"shape": (0,) + tuple(sample)})

    # -- constants and shapes ---------------------------------------------

    def _op_Constant(self, n, ins):
        self.nins(n, ins, 0)
        if "sparse_value" in n.attrs:
            raise _Refuse("a sparse constant")
        if len(n.attrs) != 1:
            raise ParameterFileError(f"{n.where}: needs exactly one value "
                                     f"attribute, has {sorted(n.attrs)}")
        key = next(iter(n.attrs))
        if key == "value":
            a = self.tensors.decode(n.tensor("value"), f"node '{n.name}'")
        elif key == "value_float":
            a = np.array(n.float(key), np.float32)
        elif key == "value_floats":
            a = np.array(n.floats(key), np.float32)
        elif key == "value_int":
            a = np.array(n.int(key), np.int64)
        elif key == "value_ints":
            a = np.array(n.ints(key), np.int64)
        else:
            raise _Refuse(f"a constant given as {key!r}")
        return Const(a, n.outputs[0] if n.outputs else None)

    def _op_Identity(self, n, ins):
        (x,) = self.nins(n, ins, 1)
        return self.alias(x)

    def _op_Dropout(self, n, ins):
        x, _, training = self.nins(n, ins, 1, 3)
        if training is not None:
            t = self.const(training, n, "training_mode")
            if t.array.size != 1 or bool(_plain(t.array).reshape(-1)[0]):
                raise _Refuse("training_mode is true (fastlazy runs "
                              "inference)")
        return self.alias(x)

    def _cast(self, n, x, to):
        if isinstance(x, Dyn):
            if to not in FLOAT_TYPES:
                raise _Refuse(f"casts the input to {TYPE_NAMES.get(to, to)}; "
                              f"fastlazy computes in floating point")
            return self.alias(x)
        a = x.array
        if to in _INT_TYPES and a.dtype == object:
            return Const(a, x.name)     # the batch symbol stays an integer
        target = _CASTS.get(to)
        if target is None:
            raise _Refuse(f"casts to {TYPE_NAMES.get(to, to)}")
        with np.errstate(all="ignore"):
            return Const(_plain(a).astype(target), x.name)

    def _op_Cast(self, n, ins):
        (x,) = self.nins(n, ins, 1)
        return self._cast(n, x, n.int("to"))

    def _op_CastLike(self, n, ins):
        x, like = self.nins(n, ins, 2)
        if isinstance(like, Dyn):
            return self._cast(n, x, 1)
        code = {np.dtype(np.float32): 1, np.dtype(np.float16): 10,
                np.dtype(np.float64): 11, np.dtype(np.int32): 6,
                np.dtype(np.int64): 7}.get(_plain(like.array).dtype)
        if code is None:
            raise _Refuse(f"casts like a {like.array.dtype} tensor")
        return self._cast(n, x, code)

    def _op_Shape(self, n, ins):
        (x,) = self.nins(n, ins, 1)
        dims = np.array(_full(x), dtype=object)
        r = len(dims)
        start = n.int("start", 0)
        end = n.int("end", r)
        start = min(max(start + r if start < 0 else start, 0), r)
        end = min(max(end + r if end < 0 else end, 0), r)
        return self.fold(n, dims[start:end].astype(object))

    def _op_Size(self, n, ins):
        (x,) = self.nins(n, ins, 1)
        if isinstance(x, Dyn):
            raise _Refuse("the size of a computed tensor depends on the "
                          "batch size")
        return self.fold(n, np.array(x.array.size, np.int64))

    def _op_Gather(self, n, ins):
        data, idx = self.nins(n, ins, 2)
        idx = self.const(idx, n, "the indices")
        ind = _int_list(idx, "the indices", n)
        axis = n.int("axis", 0)
        full = _full(data)
        if not full:
            raise ParameterFileError(f"{n.where}: gathers from a scalar")
        (ax,) = _axes_list([axis], len(full), n)
        if isinstance(data, Dyn):
            return self._gather_dyn(n, data, idx, ind, ax)
        size = full[ax]
        if any(not -size <= i < size for i in ind):
            raise ParameterFileError(f"{n.where}: an index of {ind} is out "
                                     f"of range for axis {axis} of size "
                                     f"{size}")
        _fold_size(full[:ax] + list(idx.array.shape) + full[ax + 1:], n,
                   self.fold_limit)
        return self.fold(n, np.take(data.array,
                                    idx.array.astype(np.int64), axis=ax))

    def _gather_dyn(self, n, x, idx, ind, ax):
        if ax == 0:
            raise _Refuse("gathers along the batch axis")
        if len(ind) != 1 or idx.array.ndim > 1:
            raise _Refuse("gathers several indices from a computed tensor "
                          "(an embedding lookup)")
        size = x.shape[ax - 1]
        i = ind[0]
        if not -size <= i < size:
            raise ParameterFileError(f"{n.where}: index {i} is out of range "
                                     f"for axis {ax} of size {size}")
        i %= size
        sample = x.shape[:ax - 1] + (1,) + x.shape[ax:]
        y = self.call(n, "slice_axis", [x], sample,
                      kwargs={"axis": ax, "begin": i, "end": i + 1})
        if idx.array.ndim == 0:
            self.entry_readers[y.entry] += 1
            y = self.reshape(n, y, x.shape[:ax - 1] + x.shape[ax:])
        return y

    def _axes_arg(self, n, ins, pos):
        """Axes from an input (opset 13 and up; 18 for most reductions) or
        the ``axes`` attribute of older versions."""
        if len(ins) > pos and ins[pos] is not None:
            return _int_list(self.const(ins[pos], n, "axes"), "axes", n)
        if n.has("axes"):
            return n.ints("axes")
        return None

    def _op_Unsqueeze(self, n, ins):
        x = self.nins(n, ins, 1, 2)[0]
        axes = self._axes_arg(n, ins, 1)
        if axes is None:
            raise ParameterFileError(f"{n.where}: no axes")
        full = _full(x)
        axes = sorted(_axes_list(axes, len(full) + len(axes), n))
        for a in axes:
            full.insert(a, 1)
        if isinstance(x, Const):
            return self.fold(n, x.array.reshape(full), x.name)
        if full[0] is not BATCH:
            raise _Refuse("inserts an axis before the batch axis")
        return self.reshape(n, x, full[1:])

    def _op_Squeeze(self, n, ins):
        x = self.nins(n, ins, 1, 2)[0]
        axes = self._axes_arg(n, ins, 1)
        full = _full(x)
        if axes is None:
            if isinstance(x, Dyn):
                raise _Refuse("squeezes without axes, which drops the batch "
                              "axis when the batch is 1")
            axes = [i for i, d in enumerate(full) if d == 1]
        axes = _axes_list(axes, len(full), n)
        for a in axes:
            if full[a] is BATCH:
                raise _Refuse("squeezes the batch axis")
            if full[a] != 1:
                raise ShapeError(f"{n.where}: axis {a} has size {full[a]}, "
                                 f"not 1")
        out = [d for i, d in enumerate(full) if i not in axes]
        if isinstance(x, Const):
            return self.fold(n, x.array.reshape(out), x.name)
        return self.reshape(n, x, out[1:])

    def _op_Concat(self, n, ins):
        if not ins or any(v is None for v in ins):
            raise ParameterFileError(f"{n.where}: needs one or more inputs")
        axis = n.int("axis")
        if all(isinstance(v, Const) for v in ins):
            arrays = [v.array for v in ins]
            rank = arrays[0].ndim
            if rank == 0 or any(a.ndim != rank for a in arrays):
                raise ShapeError(f"{n.where}: inputs of ranks "
                                 f"{[a.ndim for a in arrays]}")
            (ax,) = _axes_list([axis], rank, n)
            _fold_size((sum(a.size for a in arrays),), n, self.fold_limit)
            if any(a.dtype == object for a in arrays):
                arrays = [a.astype(object) for a in arrays]
            try:
                return self.fold(n, np.concatenate(arrays, axis=ax))
            except ValueError as exc:
                raise ShapeError(f"{n.where}: {exc}") from None
        if not all(isinstance(v, Dyn) for v in ins):
            raise _Refuse("joins computed tensors with constants")
        rank = len(ins[0].shape) + 1
        (ax,) = _axes_list([axis], rank, n)
        if ax == 0:
            raise _Refuse("concatenates along the batch axis")
        shapes = [v.shape for v in ins]
        for s in shapes:
            if len(s) != rank - 1 or s[:ax - 1] != shapes[0][:ax - 1] or \
                    s[ax:] != shapes[0][ax:]:
                raise ShapeError(f"{n.where}: per-sample shapes {shapes} "
                                 f"differ on an axis other than {axis}")
        if len(ins) == 1:
            return self.alias(ins[0])
        out = list(shapes[0])
        out[ax - 1] = sum(s[ax - 1] for s in shapes)
        return self.call(n, "concat", ins, out, kwargs={"dim": ax})

    def _op_Slice(self, n, ins):
        x, starts, ends, axes, steps = self.nins(n, ins, 3, 5)
        starts = _int_list(self.const(starts, n, "starts"), "starts", n)
        ends = _int_list(self.const(ends, n, "ends"), "ends", n)
        full = _full(x)
        axes = list(range(len(starts))) if axes is None else \
            _int_list(self.const(axes, n, "axes"), "axes", n)
        steps = [1] * len(starts) if steps is None else \
            _int_list(self.const(steps, n, "steps"), "steps", n)
        if not len(starts) == len(ends) == len(axes) == len(steps):
            raise ParameterFileError(f"{n.where}: starts, ends, axes and "
                                     f"steps differ in length")
        axes = _axes_list(axes, len(full), n)
        if 0 in steps:
            raise ParameterFileError(f"{n.where}: a step of 0")
        if isinstance(x, Const):
            index = [slice(None)] * len(full)
            for a, b, e, s in zip(axes, starts, ends, steps):
                index[a] = slice(b, e, s)
            return self.fold(n, x.array[tuple(index)])
        y = x
        for a, b, e, s in zip(axes, starts, ends, steps):
            if a == 0:
                if b == 0 and e >= 2 ** 31 - 1 and s == 1:
                    continue
                raise _Refuse("slices the batch axis")
            if s != 1:
                raise _Refuse(f"slices with step {s} (fastlazy slices with "
                              f"step 1)")
            size = y.shape[a - 1]
            lo, hi, _ = slice(b, e).indices(size)
            if hi <= lo:
                raise ShapeError(f"{n.where}: an empty slice [{b}, {e}) of "
                                 f"axis {a} (size {size})")
            if (lo, hi) == (0, size):
                continue
            sample = list(y.shape)
            sample[a - 1] = hi - lo
            if y is not x:
                self.entry_readers[y.entry] += 1
            y = self.call(n, "slice_axis", [y], sample,
                          kwargs={"axis": a, "begin": lo, "end": hi})
        return self.alias(x) if y is x else y

    def _op_Reshape(self, n, ins):
        x, target = self.nins(n, ins, 2)
        t = self.const(target, n, "the target shape").array
        if t.ndim != 1 or (t.dtype.kind not in "iu" and t.dtype != object):
            raise ParameterFileError(f"{n.where}: the target shape must be "
                                     f"a 1-D integer tensor")
        allowzero = n.int("allowzero", 0)
        codes = list(t)
        full = _full(x)
        out = []
        for i, v in enumerate(codes):
            if v is BATCH:
                out.append(BATCH)
            elif int(v) == 0 and not allowzero:
                if i >= len(full):
                    raise ShapeError(f"{n.where}: code 0 at position {i} "
                                     f"copies a dimension the input "
                                     f"{tuple(full)} lacks")
                out.append(full[i])
            elif int(v) < -1:
                raise ParameterFileError(f"{n.where}: target {codes} has a "
                                         f"size below -1")
            else:
                out.append(int(v))
        if out.count(-1) > 1:
            raise ParameterFileError(f"{n.where}: target {codes} has more "
                                     f"than one -1")
        if isinstance(x, Const):
            if any(v is BATCH for v in out):
                raise _Refuse("reshapes a constant to the batch size")
            _fold_size(full, n, self.fold_limit)
            try:
                return self.fold(n, x.array.reshape(out), x.name)
            except ValueError:
                raise ShapeError(f"{n.where}: cannot reshape {tuple(full)} "
                                 f"into {tuple(codes)}") from None
        size = prod(x.shape)
        marks = [i for i, v in enumerate(out) if v is BATCH]
        if marks and marks != [0]:
            raise _Refuse(f"reshapes to {tuple(out)}, moving the batch axis")
        first, rest = out[0], out[1:]
        keeps = bool(marks) or (first != -1 and
                                first == self.static_batch)
        if -1 in rest and (keeps or first == -1):
            if first == -1:
                raise ParameterFileError(f"{n.where}: two -1 in {codes}")
            known = prod(d for d in rest if d != -1)
            if known == 0 or size % known:
                raise ShapeError(f"{n.where}: cannot reshape per-sample "
                                 f"{x.shape} into {tuple(out)}")
            rest[rest.index(-1)] = size // known
        if (keeps or first == -1) and -1 not in rest and \
                prod(rest) == size:
            return self.reshape(n, x, rest)
        if keeps:
            raise ShapeError(f"{n.where}: cannot reshape per-sample "
                             f"{x.shape} into {tuple(out)}")
        raise _Refuse(f"reshapes {('N',) + x.shape} to {tuple(out)}, which "
                      f"changes the batch axis (fastlazy keeps axis 0 as the "
                      f"batch; export with a dynamic batch axis)")

    def _op_Flatten(self, n, ins):
        (x,) = self.nins(n, ins, 1)
        full = _full(x)
        (ax,) = _axes_list([n.int("axis", 1)], len(full) + 1, n)
        if isinstance(x, Const):
            return self.fold(n, x.array.reshape(prod(full[:ax]), -1),
                             x.name)
        if ax != 1:
            raise _Refuse(f"flattens at axis {ax}, which changes the batch "
                          f"axis (fastlazy flattens at axis 1)")
        return self.reshape(n, x, (prod(x.shape),))

    def _op_Transpose(self, n, ins):
        (x,) = self.nins(n, ins, 1)
        full = _full(x)
        perm = n.ints("perm", None)
        if perm is None:
            perm = list(range(len(full)))[::-1]
        if sorted(perm) != list(range(len(full))):
            raise ParameterFileError(f"{n.where}: perm {perm} is not a "
                                     f"permutation of {len(full)} axes")
        if isinstance(x, Const):
            return self.fold(n, np.transpose(x.array, perm))
        if perm[0] != 0:
            raise _Refuse("moves the batch axis")
        moved = [a for a in perm if full[a] != 1]
        if moved != sorted(moved):
            raise _Refuse(f"transposes the data (perm {perm}); fastlazy has "
                          f"no transpose")
        return self.reshape(n, x, [full[a] for a in perm][1:])

    def _op_ConstantOfShape(self, n, ins):
        (shape,) = self.nins(n, ins, 1)
        dims = _int_list(self.const(shape, n, "the shape"), "the shape", n)
        if any(d < 0 for d in dims):
            raise ParameterFileError(f"{n.where}: negative size in {dims}")
        _fold_size(dims, n, self.fold_limit)
        value = np.zeros(1, np.float32)
        if n.has("value"):
            value = self.tensors.decode(n.tensor("value"),
                                        f"node '{n.name}' value")
            if value.size != 1:
                raise ParameterFileError(f"{n.where}: value must hold one "
                                         f"element")
        return self.fold(n, np.full(dims, value.reshape(-1)[0],
                                    dtype=value.dtype))

    def _op_Expand(self, n, ins):
        x, shape = self.nins(n, ins, 2)
        dims = _int_list(self.const(shape, n, "the shape"), "the shape", n)
        if isinstance(x, Dyn):
            raise _Refuse("expands a computed tensor")
        try:
            out = np.broadcast_shapes(x.array.shape, tuple(dims))
        except ValueError:
            raise ShapeError(f"{n.where}: {x.array.shape} does not expand "
                             f"to {dims}") from None
        _fold_size(out, n, self.fold_limit)
        return self.fold(n, np.broadcast_to(x.array, out).copy())

    def _op_Range(self, n, ins):
        vals = [self.const(v, n, "an input") for v in self.nins(n, ins, 3)]
        if any(_has_batch(v.array) or v.array.size != 1 for v in vals):
            raise _Refuse("a range over the batch size")
        start, limit, delta = (_plain(v.array).reshape(-1)[0] for v in vals)
        if delta == 0 or not all(map(math.isfinite, (start, limit, delta))):
            raise ParameterFileError(f"{n.where}: range({start}, {limit}, "
                                     f"{delta})")
        count = max(int(math.ceil((limit - start) / delta)), 0)
        _fold_size((count,), n, self.fold_limit)
        kind = _plain(vals[0].array).dtype
        return self.fold(n, (np.arange(count) * delta + start).astype(kind))

    # -- arithmetic -------------------------------------------------------

    def _binary(self, n, op, a, b):
        """``a op b`` for op in add sub mul div max min."""
        if isinstance(a, Const) and isinstance(b, Const):
            return self.fold(n, _fold_arith(op, a.array, b.array, n,
                                            self.fold_limit))
        if isinstance(a, Dyn) and isinstance(b, Dyn):
            if len(a.shape) != len(b.shape):
                raise _Refuse(f"broadcasts per-sample shapes {a.shape} and "
                              f"{b.shape} of different ranks across the "
                              f"batch axis")
            try:
                out = np.broadcast_shapes(a.shape, b.shape)
            except ValueError:
                raise ShapeError(f"{n.where}: per-sample shapes {a.shape} "
                                 f"and {b.shape} do not broadcast") from None
            return self.call(n, _BROADCAST[op], [a, b], out)
        x, c, x_first = (a, b, True) if isinstance(a, Dyn) else (b, a, False)
        arr = c.array
        if _has_batch(arr):
            raise _Refuse("computes with the batch size")
        arr = _plain(arr)
        rank = len(x.shape) + 1
        if arr.ndim > rank:
            raise _Refuse(f"a constant of shape {arr.shape} adds axes in "
                          f"front of the batch axis")
        if arr.size == 1:
            v = float(arr.reshape(-1)[0])
            if op in ("add", "mul", "max", "min"):
                return self.scalar(n, x, op, v)
            if op == "sub":
                return self.scalar(n, x, "add", -v) if x_first else \
                    self.scalar(n, x, "rsub", v)
            if not x_first:
                return self.scalar(n, x, "rdiv", v)
            if v != 0 and math.isfinite(1.0 / v):
                # a traced x / v is x * (1 / v), as ops does for numbers
                return self.scalar(n, x, "mul", 1.0 / v)
        sample = arr.shape[1:] if arr.ndim == rank else arr.shape
        if arr.ndim == rank and arr.shape[0] != 1:
            raise _Refuse(f"a constant of shape {arr.shape} varies along "
                          f"the batch axis")
        try:
            out = np.broadcast_shapes(x.shape, sample)
        except ValueError:
            raise ShapeError(f"{n.where}: per-sample shape {x.shape} and a "
                             f"constant of shape {arr.shape} do not "
                             f"broadcast") from None
        key = self.param(c, arr.reshape(arr.shape or (1,)), n, "operand")
        return self.call(n, _BROADCAST[op], [x, key] if x_first else
                         [key, x], out)

    def _arith(self, n, ins):
        a, b = self.nins(n, ins, 2)
        op = _ARITH[n.op]
        if op == "add":
            for x, c in ((a, b), (b, a)):
                fused = self._bias_into_dense(n, x, c)
                if fused is not None:
                    return fused
        if op == "mul":
            for x, s in ((a, b), (b, a)):
                fused = self._silu(n, x, s)
                if fused is not None:
                    return fused
        return self._binary(n, op, a, b)

    _op_Add = _op_Sub = _op_Mul = _op_Div = _arith

    def _bias_into_dense(self, n, x, c):
        """``MatMul`` (or a Gemm without C) then ``Add`` of a bias: one
        Dense layer with that bias."""
        if not (isinstance(x, Dyn) and isinstance(c, Const)) or \
                x.call is None or x.call.fn != "FullyConnected" or \
                "bias" in x.call.params or not self.sole_reader(x):
            return None
        m = x.shape[-1]
        arr = c.array
        if _has_batch(arr) or arr.ndim > len(x.shape) + 1:
            return None
        arr = _plain(arr)
        if arr.size == 1:
            bias = np.full(m, arr.reshape(-1)[0])
        elif arr.size == m and arr.shape[-1] == m:
            bias = arr.reshape(m)
        else:
            return None
        x.call.params["bias"] = self.param(c, bias, n, "bias")
        x.call.kwargs["no_bias"] = False
        x.call.label = f"{x.call.label}+{n.label}"
        self.consume(x)
        return Dyn(x.shape, x.entry, x.call)

    def _silu(self, n, x, s):
        """``x * Sigmoid(x)``: one SiLU activation."""
        if not (isinstance(x, Dyn) and isinstance(s, Dyn)) or \
                s.call is None or s.call.fn != "Activation" or \
                s.call.kwargs.get("act_type") != "sigmoid" or \
                s.call.args != [x.entry] or not self.sole_reader(s):
            return None
        s.call.kwargs["act_type"] = "silu"
        s.call.label = "Sigmoid+Mul"
        self.act_labels.setdefault("silu", "Sigmoid+Mul")
        self.patterns["SiLU from Sigmoid+Mul"] += 1
        self.consume(s)
        self.consume(x)
        return Dyn(s.shape, s.entry, s.call)

    def _op_Pow(self, n, ins):
        a, b = self.nins(n, ins, 2)
        if isinstance(a, Const) and isinstance(b, Const):
            return self.fold(n, _fold_arith("pow", a.array, b.array, n,
                                            self.fold_limit))
        x = self.dyn(a, n, "the base")
        e = self.const(b, n, "the exponent")
        if e.array.size != 1 or _has_batch(e.array) or \
                e.array.ndim > len(x.shape) + 1:
            raise _Refuse("raises to a tensor of exponents")
        return self.scalar(n, x, "pow", float(_plain(e.array).reshape(-1)[0]))

    def _unary_const(self, n, x, fn):
        if _has_batch(x.array):
            raise _Refuse("computes with the batch size")
        with np.errstate(all="ignore"):
            return self.fold(n, fn(_plain(x.array)))

    def _op_Sqrt(self, n, ins):
        (x,) = self.nins(n, ins, 1)
        if isinstance(x, Const):
            return self._unary_const(n, x, np.sqrt)
        return self.scalar(n, x, "pow", 0.5)

    def _op_Neg(self, n, ins):
        (x,) = self.nins(n, ins, 1)
        if isinstance(x, Const):
            return self._unary_const(n, x, np.negative)
        return self.scalar(n, x, "mul", -1.0)

    def _op_Abs(self, n, ins):
        (x,) = self.nins(n, ins, 1)
        if isinstance(x, Const):
            return self._unary_const(n, x, np.abs)
        return self.call(n, _block.abs_value, [x], x.shape)

    def _op_Reciprocal(self, n, ins):
        (x,) = self.nins(n, ins, 1)
        if isinstance(x, Const):
            return self._unary_const(n, x, np.reciprocal)
        return self.scalar(n, x, "rdiv", 1.0)

    def _n_ary(self, n, ins, op):
        if not ins or any(v is None for v in ins):
            raise ParameterFileError(f"{n.where}: needs one or more inputs")
        if all(isinstance(v, Const) for v in ins):
            out = ins[0].array
            for v in ins[1:]:
                out = _fold_arith("add" if op == "mean" else op, out,
                                  v.array, n, self.fold_limit)
            if op == "mean":
                out = _plain(out) / len(ins)
            return self.fold(n, out)
        if len(ins) == 1:
            return self.alias(ins[0])
        if len(ins) == 2 and op != "mean":
            return self._binary(n, op, ins[0], ins[1])
        if not all(isinstance(v, Dyn) for v in ins) or \
                len({len(v.shape) for v in ins}) != 1:
            raise _Refuse(f"{n.op} of several inputs mixing constants or "
                          f"ranks")
        try:
            out = np.broadcast_shapes(*[v.shape for v in ins])
        except ValueError:
            raise ShapeError(f"{n.where}: per-sample shapes do not "
                             f"broadcast") from None
        return self.call(n, _block.n_ary, ins, out, kwargs={"op": op})

    def _op_Sum(self, n, ins):
        return self._n_ary(n, ins, "add")

    def _op_Mean(self, n, ins):
        return self._n_ary(n, ins, "mean")

    def _op_Max(self, n, ins):
        return self._n_ary(n, ins, "max")

    def _op_Min(self, n, ins):
        return self._n_ary(n, ins, "min")

    # -- activations ------------------------------------------------------

    def _activation(self, n, ins):
        (x,) = self.nins(n, ins, 1)
        return self.act(n, self.dyn(x, n), _ACT_NAMES[n.op])

    _op_Relu = _op_Sigmoid = _op_Tanh = _op_Softplus = _op_Softsign = \
        _activation

    def _op_LeakyRelu(self, n, ins):
        (x,) = self.nins(n, ins, 1)
        x = self.dyn(x, n)
        return self.call(n, "LeakyReLU", [x], x.shape,
                         kwargs={"act_type": "leaky",
                                 "slope": n.float("alpha", 0.01)})

    def _op_Elu(self, n, ins):
        (x,) = self.nins(n, ins, 1)
        x = self.dyn(x, n)
        return self.call(n, "LeakyReLU", [x], x.shape,
                         kwargs={"act_type": "elu",
                                 "slope": n.float("alpha", 1.0)})

    def _op_Selu(self, n, ins):
        (x,) = self.nins(n, ins, 1)
        x = self.dyn(x, n)
        alpha = n.float("alpha", _SELU[0])
        gamma = n.float("gamma", _SELU[1])
        if np.float32(alpha) == np.float32(_SELU[0]) and \
                np.float32(gamma) == np.float32(_SELU[1]):
            return self.call(n, "LeakyReLU", [x], x.shape,
                             kwargs={"act_type": "selu"})
        return self.call(n, _block.selu, [x], x.shape,
                         kwargs={"alpha": alpha, "gamma": gamma})

    def _op_Gelu(self, n, ins):
        (x,) = self.nins(n, ins, 1)
        x = self.dyn(x, n)
        approx = n.str("approximate", "none")
        if approx == "none":
            return self.act(n, x, "gelu")
        if approx == "tanh":
            return self.call(n, _block.gelu_tanh, [x], x.shape)
        raise ParameterFileError(f"{n.where}: approximate={approx!r} (ONNX "
                                 f"has 'none' and 'tanh')")

    def _op_HardSigmoid(self, n, ins):
        (x,) = self.nins(n, ins, 1)
        x = self.dyn(x, n)
        return self.call(n, _block.hard_sigmoid, [x], x.shape,
                         kwargs={"alpha": n.float("alpha", 0.2),
                                 "beta": n.float("beta", 0.5)})

    def _op_HardSwish(self, n, ins):
        (x,) = self.nins(n, ins, 1)
        x = self.dyn(x, n)
        return self.call(n, _block.hard_swish, [x], x.shape)

    def _op_PRelu(self, n, ins):
        x, slope = self.nins(n, ins, 2)
        x = self.dyn(x, n)
        s = self.const(slope, n, "the slope")
        arr = _plain(s.array)
        if _has_batch(arr):
            raise _Refuse("a slope computed from the batch size")
        rank = len(x.shape) + 1
        if arr.ndim > rank or (arr.ndim == rank and arr.shape[0] != 1):
            raise _Refuse(f"a slope of shape {arr.shape} broadcasts over "
                          f"the batch axis")
        aligned = (1,) * (rank - arr.ndim) + tuple(arr.shape)
        try:
            out = np.broadcast_shapes(x.shape, aligned[1:])
        except ValueError:
            raise ShapeError(f"{n.where}: a slope of shape {arr.shape} does "
                             f"not broadcast against per-sample "
                             f"{x.shape}") from None
        if out != x.shape:
            raise _Refuse(f"a slope of shape {arr.shape} that widens the "
                          f"input")
        chans = x.shape[0]
        per_channel = aligned[1] == chans and prod(aligned[2:]) == 1
        if arr.size == 1 or per_channel:
            key = self.param(s, arr.reshape(-1), n, "slope")
            return self.call(n, "LeakyReLU", [x], x.shape,
                             params={"gamma": key},
                             kwargs={"act_type": "prelu"})
        key = self.param(s, arr.reshape(aligned[1:]), n, "slope")
        return self.call(n, _block.prelu_broadcast, [x], x.shape,
                         params={"slope": key})

    def _op_Clip(self, n, ins):
        x, lo, hi = self.nins(n, ins, 1, 3)
        bounds = []
        for v, what in ((lo, "min"), (hi, "max")):
            if v is None:
                bounds.append(None)
                continue
            c = self.const(v, n, what)
            if c.array.size != 1 or _has_batch(c.array):
                raise ParameterFileError(f"{n.where}: {what} must be a "
                                         f"scalar")
            bounds.append(float(_plain(c.array).reshape(-1)[0]))
        lo, hi = bounds
        if isinstance(x, Const):
            return self._unary_const(n, x, lambda a: np.clip(
                a, -np.inf if lo is None else lo,
                np.inf if hi is None else hi).astype(a.dtype))
        if lo is not None and hi is not None:
            if lo > hi:
                raise _Refuse(f"min {lo} above max {hi}")
            if (lo, hi) == (0.0, 6.0):
                self.act_labels.setdefault("relu6", n.label)
            return self.call(n, "clip", [x], x.shape,
                             kwargs={"a_min": lo, "a_max": hi})
        if lo is not None:
            if lo == 0.0:
                return self.act(n, x, "relu")
            return self.scalar(n, x, "max", lo)
        if hi is not None:
            return self.scalar(n, x, "min", hi)
        return self.alias(x)

    def _softmax(self, n, ins, log):
        (x,) = self.nins(n, ins, 1)
        x = self.dyn(x, n)
        (ax,) = _axes_list([n.int("axis", -1)], len(x.shape) + 1, n)
        if ax == 0:
            raise _Refuse("normalizes along the batch axis")
        return self.call(n, "log_softmax" if log else "softmax", [x],
                         x.shape, kwargs={"axis": ax})

    def _op_Softmax(self, n, ins):
        return self._softmax(n, ins, False)

    def _op_LogSoftmax(self, n, ins):
        return self._softmax(n, ins, True)

    # -- dense layers -------------------------------------------------------

    def _dense(self, n, x, w_const, weight, bias_key, label):
        """One FullyConnected call; ``weight`` is (units, K)."""
        m, k = weight.shape
        if x.shape[-1] != k:
            raise ShapeError(f"{n.where}: the input has {x.shape[-1]} "
                             f"features, the weight {tuple(weight.shape)} "
                             f"takes {k}")
        key = self.param(w_const, weight, n, "weight", transposed=True)
        params = {"weight": key}
        if bias_key is not None:
            params["bias"] = bias_key
        flat = len(x.shape) == 1
        out = (m,) if flat else x.shape[:-1] + (m,)
        return self.call(n, "FullyConnected", [x], out, params=params,
                         kwargs={"num_hidden": m,
                                 "no_bias": bias_key is None,
                                 "flatten": flat},
                         label=label)

    def _op_Gemm(self, n, ins):
        a, b, c = self.nins(n, ins, 2, 3)
        x = self.dyn(a, n, "A (the data)")
        w = self.const(b, n, "B (the weight)")
        if n.int("transA", 0):
            raise _Refuse("transA=1 transposes the data across the batch "
                          "axis")
        if len(x.shape) != 1 or w.array.ndim != 2:
            raise ShapeError(f"{n.where}: Gemm takes 2-D A and B, got "
                             f"per-sample {x.shape} and {w.array.shape}")
        weight = _float(w.array)
        if not n.int("transB", 0):
            weight = weight.T
        alpha, beta = n.float("alpha", 1.0), n.float("beta", 1.0)
        if alpha != 1.0:
            weight = weight * alpha
        bias_key = None
        if c is not None:
            cc = self.const(c, n, "C (the bias)")
            arr = _float(cc.array)
            m = weight.shape[0]
            if arr.ndim > 2 or (arr.ndim == 2 and arr.shape[0] != 1) or \
                    arr.size not in (1, m) or \
                    (arr.size == m and arr.shape[-1] != m):
                raise _Refuse(f"a bias C of shape {arr.shape} that varies "
                              f"along the batch axis")
            bias = np.broadcast_to(arr.reshape(-1), (m,))
            if beta != 1.0:
                bias = bias * beta
            if beta != 0.0:
                bias_key = self.param(cc, bias, n, "bias")
        return self._dense(n, x, w, weight, bias_key, "Gemm")

    def _op_MatMul(self, n, ins):
        a, b = self.nins(n, ins, 2)
        if isinstance(a, Const) and isinstance(b, Const):
            if _has_batch(a.array) or _has_batch(b.array):
                raise _Refuse("multiplies with the batch size")
            aa, bb = _float(a.array), _float(b.array)
            if aa.ndim == 0 or bb.ndim == 0:
                raise ShapeError(f"{n.where}: MatMul of a scalar")
            _fold_size(aa.shape[:-1] + bb.shape[-1:], n, self.fold_limit)
            try:
                return self.fold(n, np.matmul(aa, bb))
            except ValueError as exc:
                raise ShapeError(f"{n.where}: {exc}") from None
        if isinstance(b, Dyn):
            raise _Refuse("multiplies by a computed matrix (fastlazy runs "
                          "MatMul against a constant weight)")
        if b.array.ndim != 2:
            raise _Refuse(f"MatMul by a weight of shape {b.array.shape} "
                          f"(fastlazy runs a 2-D weight on the last axis)")
        return self._dense(n, a, b, _float(b.array).T, None, "MatMul")

    # -- convolution and pooling ------------------------------------------

    def _window(self, n, x, kernel):
        """(strides, dilations, begin pads, end pads) of a Conv or pooling
        node, from its attributes and auto_pad."""
        nd = len(kernel)
        strides = n.ints("strides", None) or [1] * nd
        dil = n.ints("dilations", None) or [1] * nd
        if len(strides) != nd or len(dil) != nd or \
                min(strides + dil + list(kernel)) < 1:
            raise ParameterFileError(
                f"{n.where}: kernel {kernel}, strides {strides} and "
                f"dilations {dil} must be {nd} positive sizes each")
        spatial = x.shape[1:]
        auto = n.str("auto_pad", "NOTSET")
        if auto in ("NOTSET", ""):
            pads = n.ints("pads", None) or [0] * (2 * nd)
            if len(pads) != 2 * nd or min(pads) < 0:
                raise ParameterFileError(f"{n.where}: pads {pads} must be "
                                         f"{2 * nd} sizes, none negative")
            head, tail = pads[:nd], pads[nd:]
        elif auto == "VALID":
            head, tail = [0] * nd, [0] * nd
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            head, tail = [], []
            for i in range(nd):
                out = -(-spatial[i] // strides[i])
                total = max(0, (out - 1) * strides[i] +
                            (kernel[i] - 1) * dil[i] + 1 - spatial[i])
                small, big = total // 2, total - total // 2
                head.append(small if auto == "SAME_UPPER" else big)
                tail.append(big if auto == "SAME_UPPER" else small)
        else:
            raise ParameterFileError(f"{n.where}: auto_pad {auto!r}")
        return strides, dil, head, tail

    @staticmethod
    def _onnx_out(n, size, k, s, d, head, tail, ceil):
        """ONNX's output size along one axis (with ceil_mode, the last
        window must start inside the input or its begin padding)."""
        span = size + head + tail - (k - 1) * d - 1
        if span < 0:
            raise ShapeError(f"{n.where}: an input of size {size} is "
                             f"smaller than the window {k} (dilation {d})")
        out = (-(-span // s) if ceil else span // s) + 1
        if ceil and (out - 1) * s >= size + head:
            out -= 1
        return out

    @staticmethod
    def _fl_out(size, k, s, d, p, ceil):
        """fastlazy's output size with padding ``p`` at both ends."""
        span = size + 2 * p - (k - 1) * d - 1
        if span < 0:
            return 0
        return (-(-span // s) if ceil else span // s) + 1

    def _pads(self, n, spatial, kernel, strides, dil, head, tail, outs,
              conventions):
        """The symmetric padding and pooling convention that give ONNX's
        windows: each axis padded ``head`` at both ends, where a larger
        end padding is never reached by a window; else refuse."""
        for ceil in conventions:
            if all(head[i] <= tail[i] and
                   self._fl_out(spatial[i], kernel[i], strides[i], dil[i],
                                head[i], ceil) == outs[i]
                   for i in range(len(kernel))):
                return list(head), ceil
        raise _Refuse(
            f"padding (begin {head}, end {tail}) that fastlazy cannot "
            f"reproduce (it pads both ends of an axis alike); export with "
            f"symmetric padding")

    def _op_Conv(self, n, ins):
        x, w, b = self.nins(n, ins, 2, 3)
        x = self.dyn(x, n, "X")
        wc = self.const(w, n, "the weight W")
        weight = _float(wc.array)
        rank = len(x.shape) + 1
        if rank > 4 and weight.ndim == rank:
            raise _Refuse(f"a {rank - 2}-D convolution (fastlazy has 1-D "
                          f"and 2-D)")
        if rank not in (3, 4) or weight.ndim != rank:
            raise ShapeError(f"{n.where}: input per-sample {x.shape} and "
                             f"weight {weight.shape} do not make a 1-D or "
                             f"2-D convolution")
        kernel = list(weight.shape[2:])
        given = n.ints("kernel_shape", None)
        if given is not None and list(given) != kernel:
            raise ShapeError(f"{n.where}: kernel_shape {given}, but the "
                             f"weight is {weight.shape}")
        groups = n.int("group", 1)
        o, c = weight.shape[0], x.shape[0]
        if groups < 1 or o % groups or weight.shape[1] * groups != c:
            raise ShapeError(f"{n.where}: {c} input channels, a weight of "
                             f"shape {weight.shape} and group={groups} do "
                             f"not fit")
        strides, dil, head, tail = self._window(n, x, kernel)
        spatial = x.shape[1:]
        outs = [self._onnx_out(n, spatial[i], kernel[i], strides[i], dil[i],
                               head[i], tail[i], False)
                for i in range(len(kernel))]
        pad, _ = self._pads(n, spatial, kernel, strides, dil, head, tail,
                            outs, (False,))
        bc = None
        if b is not None:
            bc = self.const(b, n, "the bias B")
            if bc.array.size != o:
                raise ShapeError(f"{n.where}: a bias of shape "
                                 f"{bc.array.shape} for {o} output channels")
        if rank == 3:
            weight = weight.reshape(o, weight.shape[1], 1, kernel[0])
            kernel, strides, dil, pad = [1] + kernel, [1] + strides, \
                [1] + dil, [0] + pad
        params = {"weight": self.param(wc, weight, n, "weight")}
        if bc is not None:
            params["bias"] = self.param(bc, _float(bc.array).reshape(o), n,
                                        "bias")
        kwargs = {"kernel": tuple(kernel), "stride": tuple(strides),
                  "dilate": tuple(dil), "pad": tuple(pad), "num_filter": o,
                  "num_group": groups, "no_bias": "bias" not in params}
        return self.call(n, "Convolution" if rank == 4 else _block.conv1d,
                         [x], (o,) + tuple(outs), params=params,
                         kwargs=kwargs, label="Conv")

    def _pool(self, n, ins, is_max):
        (x,) = self.nins(n, ins, 1)
        x = self.dyn(x, n, "X")
        rank = len(x.shape) + 1
        kernel = n.ints("kernel_shape")
        if rank not in (3, 4) or len(kernel) != rank - 2:
            raise _Refuse(f"{len(kernel)}-D pooling of per-sample {x.shape} "
                          f"(fastlazy has 1-D and 2-D)")
        ceil = bool(n.int("ceil_mode", 0))
        strides, dil, head, tail = self._window(n, x, kernel)
        if any(d != 1 for d in dil):
            raise _Refuse(f"dilations {dil} in pooling")
        if any(p >= k for p, k in zip(head + tail, kernel + kernel)):
            raise ParameterFileError(f"{n.where}: padding {head + tail} as "
                                     f"large as the window {kernel}")
        spatial = x.shape[1:]
        outs = [self._onnx_out(n, spatial[i], kernel[i], strides[i], 1,
                               head[i], tail[i], ceil)
                for i in range(len(kernel))]
        pad, full = self._pads(n, spatial, kernel, strides, dil, head, tail,
                               outs, (ceil, not ceil))
        kwargs = {"pool_type": "max" if is_max else "avg",
                  "pooling_convention": "full" if full else "valid",
                  "count_include_pad": bool(n.int("count_include_pad", 0)),
                  "kernel": tuple(kernel), "stride": tuple(strides),
                  "pad": tuple(pad)}
        if rank == 3:
            kwargs.update(kernel=(1,) + tuple(kernel),
                          stride=(1,) + tuple(strides), pad=(0,) + tuple(pad))
        return self.call(n, "Pooling" if rank == 4 else _block.pool1d, [x],
                         (x.shape[0],) + tuple(outs), kwargs=kwargs)

    def _op_MaxPool(self, n, ins):
        return self._pool(n, ins, True)

    def _op_AveragePool(self, n, ins):
        return self._pool(n, ins, False)

    def _global_pool(self, n, ins, is_max):
        (x,) = self.nins(n, ins, 1)
        x = self.dyn(x, n, "X")
        rank = len(x.shape) + 1
        if rank < 3:
            raise ShapeError(f"{n.where}: needs (N, C, spatial...), got "
                             f"per-sample {x.shape}")
        out = (x.shape[0],) + (1,) * (rank - 2)
        if rank == 4:
            return self.call(n, "Pooling", [x], out,
                             kwargs={"pool_type": "max" if is_max else "avg",
                                     "global_pool": True})
        return self.call(n, "max" if is_max else "mean", [x], out,
                         kwargs={"axis": tuple(range(2, rank)),
                                 "keepdims": True})

    def _op_GlobalAveragePool(self, n, ins):
        return self._global_pool(n, ins, False)

    def _op_GlobalMaxPool(self, n, ins):
        return self._global_pool(n, ins, True)

    # -- normalization ----------------------------------------------------

    def _op_BatchNormalization(self, n, ins):
        x, *stats = self.nins(n, ins, 5)
        x = self.dyn(x, n, "X")
        if n.int("training_mode", 0):
            raise _Refuse("training_mode=1 (fastlazy runs inference with "
                          "the running statistics)")
        c = x.shape[0]
        keys = {}
        for v, role in zip(stats, ("gamma", "beta", "moving_mean",
                                   "moving_var")):
            k = self.const(v, n, role)
            if k.array.size != c:
                raise ShapeError(f"{n.where}: {role} has shape "
                                 f"{k.array.shape}, the input {c} channels")
            keys[role] = self.param(k, _float(k.array).reshape(c), n, role)
        return self.call(n, "BatchNorm", [x], x.shape, params=keys,
                         kwargs={"eps": n.float("epsilon", 1e-5),
                                 "fix_gamma": False, "axis": 1},
                         label="BatchNormalization")

    def _op_LayerNormalization(self, n, ins):
        x, scale, bias = self.nins(n, ins, 2, 3)
        x = self.dyn(x, n, "X")
        (ax,) = _axes_list([n.int("axis", -1)], len(x.shape) + 1, n)
        if ax == 0:
            raise _Refuse("normalizes over the batch axis")
        norm = x.shape[ax - 1:]
        params = {}
        for v, role in ((scale, "gamma"), (bias, "beta")):
            if v is None:
                continue
            k = self.const(v, n, "Scale" if role == "gamma" else "B")
            arr = _float(k.array)
            try:
                full = np.broadcast_to(arr, norm)
            except ValueError:
                raise ShapeError(f"{n.where}: {role} of shape {arr.shape} "
                                 f"does not broadcast to the normalized "
                                 f"shape {norm}") from None
            params[role] = self.param(k, full.reshape(prod(norm)), n, role)
        return self.call(n, _block.layer_norm, [x], x.shape, params=params,
                         kwargs={"eps": n.float("epsilon", 1e-5),
                                 "axes": len(norm)},
                         label="LayerNormalization")

    def _reduce(self, n, ins):
        x = self.nins(n, ins, 1, 2)[0]
        op = _REDUCE[n.op]
        axes = self._axes_arg(n, ins, 1)
        keep = bool(n.int("keepdims", 1))
        full = _full(x)
        if not axes:
            if n.int("noop_with_empty_axes", 0):
                return self.alias(x)
            axes = list(range(len(full)))
        axes = sorted(_axes_list(axes, len(full), n))
        if isinstance(x, Const):
            fn = {"mean": np.mean, "sum": np.sum, "max": np.max}[op]
            if op == "max" and x.array.size == 0:
                raise ParameterFileError(f"{n.where}: the maximum of an "
                                         f"empty tensor")
            return self._unary_const(n, x, lambda a: fn(
                a, axis=tuple(axes), keepdims=keep))
        if 0 in axes:
            raise _Refuse("reduces over the batch axis")
        if axes != list(range(axes[0], axes[-1] + 1)):
            raise _Refuse(f"reduces over axes {axes} that are not "
                          f"consecutive")
        out = [1 if i in axes else d for i, d in enumerate(full)] if keep \
            else [d for i, d in enumerate(full) if i not in axes]
        if len(out) < 2:
            raise _Refuse("reduces each sample to a scalar (fastlazy keeps "
                          "a feature axis)")
        return self.call(n, op, [x], out[1:],
                         kwargs={"axis": tuple(axes), "keepdims": keep})

    _op_ReduceMean = _op_ReduceSum = _op_ReduceMax = _reduce


def supported_operators():
    """The ONNX operators (default domain) :func:`load` reads."""
    return sorted(k[4:] for k in dir(_Walk) if k.startswith("_op_"))


# ---------------------------------------------------------------------------
# The graph: checks, order, patterns


def _opsets(model, where):
    opsets = {}
    for entry in model.opset_import:
        domain = entry.domain if entry.domain != "ai.onnx" else ""
        opsets[domain] = int(entry.version)
    if "" not in opsets:
        raise ParameterFileError(f"{where}: the model imports no opset of "
                                 f"the default ONNX domain")
    return opsets


def _order(nodes, defined, wanted, where):
    """The nodes the ``wanted`` outputs need, each after the nodes making
    its inputs (file order among those ready); a value nothing makes, a
    value made twice, or a cycle is a ParameterFileError."""
    producer = {}
    for n in nodes:
        for v in n.outputs:
            if not v:
                continue
            if v in defined:
                raise ParameterFileError(f"{n.where}: its output '{v}' is "
                                         f"also a graph input or "
                                         f"initializer")
            if v in producer:
                raise ParameterFileError(
                    f"{n.where}: its output '{v}' is also made by node "
                    f"'{producer[v].name}' ({producer[v].op})")
            producer[v] = n
    needed = {}
    stack = list(wanted)
    while stack:
        v = stack.pop()
        n = producer.get(v)
        if n is None:
            if v not in defined:
                raise ParameterFileError(f"{where}: the output '{v}' is made "
                                         f"by no node, input or initializer")
            continue
        if n.index in needed:
            continue
        needed[n.index] = n
        for u in n.inputs:
            if not u:
                continue
            if u not in producer and u not in defined:
                raise ParameterFileError(f"{n.where}: reads '{u}', which no "
                                         f"node, input or initializer makes")
            stack.append(u)
    waiting, users, ready = {}, {}, []
    for i, n in needed.items():
        deps = {producer[u].index for u in n.inputs if u in producer}
        waiting[i] = len(deps)
        for d in deps:
            users.setdefault(d, []).append(i)
        if not deps:
            heapq.heappush(ready, i)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(needed[i])
        for u in users.get(i, ()):
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(needed):
        stuck = [needed[i] for i in sorted(needed) if waiting[i] > 0]
        names = ", ".join(f"'{n.name}' ({n.op})" for n in stuck[:5])
        raise ParameterFileError(
            f"{where}: the graph has a cycle through {len(stuck)} node(s): "
            f"{names}{' ...' if len(stuck) > 5 else ''}")
    return order


def _scalars(order, initializers, tensors):
    """Float scalars that patterns look for: one-value initializers and
    Constant nodes, by value name (unreadable ones are left out here and
    reported where they are used)."""
    found = {}
    for n in order:
        for v in n.inputs:
            t = initializers.get(v)
            if t is not None and v not in found and prod(t.dims) == 1:
                try:
                    found[v] = tensors.decode(t, v)
                except ParameterFileError:
                    pass
        if n.op == "Constant" and not n.domain and n.outputs and \
                list(n.attrs) == ["value"]:
            try:
                t = n.tensor("value")
                if prod(t.dims) == 1:
                    found[n.outputs[0]] = tensors.decode(t, n.name)
            except ParameterFileError:
                pass
    out = {}
    for k, a in found.items():
        if a.size == 1 and a.dtype.kind == "f":
            out[k] = float(a.reshape(-1)[0])
    return out


def _gelu_patterns(order, scalars, heads, where):
    """GELU's erf form, ``0.5 x (1 + erf(x / sqrt 2))`` as torch writes it
    (Div or Mul, Erf, Add, Mul, Mul in either arrangement), made one Gelu
    node; returns the new order and how many were made."""
    producer = {v: n for n in order for v in n.outputs if v}
    users = {}
    for n in order:
        for v in n.inputs:
            users.setdefault(v, []).append(n)

    def only(v):
        us = users.get(v, [])
        return us[0] if len(us) == 1 and v not in heads else None

    def other(n, v):
        ins = [u for u in n.inputs if u]
        if len(ins) != 2 or v not in ins or ins[0] == ins[1]:
            return None
        return ins[1] if ins[0] == v else ins[0]

    def near(name, target):
        value = scalars.get(name)
        return value is not None and abs(value - target) <= 1e-4 * target

    def plain(n, op):
        return n is not None and n.op == op and not n.domain

    removed, replace = set(), {}
    for e in order:
        if not plain(e, "Erf") or len(e.inputs) != 1 or not e.outputs:
            continue
        d = producer.get(e.inputs[0])
        if d is None or d.domain or only(e.inputs[0]) is not e or \
                len(d.inputs) != 2:
            continue
        if d.op == "Div" and near(d.inputs[1], math.sqrt(2)):
            x = d.inputs[0]
        elif d.op == "Mul" and near(d.inputs[1], 1 / math.sqrt(2)):
            x = d.inputs[0]
        elif d.op == "Mul" and near(d.inputs[0], 1 / math.sqrt(2)):
            x = d.inputs[1]
        else:
            continue
        a = only(e.outputs[0])
        if not plain(a, "Add") or not near(other(a, e.outputs[0]), 1.0):
            continue
        m1 = only(a.outputs[0])
        if not plain(m1, "Mul"):
            continue
        y = other(m1, a.outputs[0])
        if y == x:
            m2 = only(m1.outputs[0])
            if not plain(m2, "Mul") or not near(other(m2, m1.outputs[0]),
                                                0.5):
                continue
            group, last = [d, e, a, m1, m2], m2
        else:
            h = producer.get(y)
            if not plain(h, "Mul") or only(y) is not m1 or \
                    not near(other(h, x), 0.5):
                continue
            group, last = [h, d, e, a, m1], m1
        if any(g.index in removed for g in group):
            continue
        removed.update(g.index for g in group)
        replace[last.index] = Node(e.name, "Gelu", "", [x], last.outputs[:1],
                                   {}, e.opset, where, last.index)
    return _rewritten(order, replace, removed, heads), len(replace)


def _softplus_patterns(order, scalars, heads, where):
    """``Where(Greater(x, t), x, Softplus(x))`` -- torch's softplus with
    its threshold (t = 20) -- made one Softplus: for x above 15, float32
    softplus(x) is x already.  Returns the new order and the count."""
    producer = {v: n for n in order for v in n.outputs if v}
    readers = Counter(v for n in order for v in n.inputs)
    readers.update(heads)
    removed, replace = set(), {}
    for w in order:
        if w.op != "Where" or w.domain or len(w.inputs) != 3:
            continue
        cond, a, b = w.inputs
        g, sp = producer.get(cond), producer.get(b)
        if g is None or sp is None or g.op != "Greater" or g.domain or \
                sp.op != "Softplus" or sp.domain or readers[cond] != 1 or \
                len(g.inputs) != 2 or g.inputs[0] != a or \
                sp.inputs != [a] or scalars.get(g.inputs[1], 0) < 15:
            continue
        removed.update({g.index, w.index} |
                       ({sp.index} if readers[b] == 1 else set()))
        replace[w.index] = Node(sp.name, "Softplus", "", [a], w.outputs[:1],
                                {}, sp.opset, where, w.index)
    return _rewritten(order, replace, removed, heads), len(replace)


def _rewritten(order, replace, removed, heads):
    """``order`` with the patterns' nodes replaced, and the nodes no one
    reads any more (the patterns' constants) left out."""
    if not replace:
        return order
    out = []
    for n in order:
        if n.index in replace:
            out.append(replace[n.index])
        elif n.index not in removed:
            out.append(n)
    while True:
        read = {v for n in out for v in n.inputs} | set(heads)
        kept = [n for n in out if any(v in read for v in n.outputs)]
        if len(kept) == len(out):
            return out
        out = kept


# ---------------------------------------------------------------------------
# Inputs and their shapes


def _value_shape(vi):
    """(elem type, dims) of a ValueInfoProto: elem None when it is not a
    tensor, dims None without a shape, each dim an int or None where the
    file gives no size."""
    t = vi.type
    if t.WhichOneof("value") != "tensor_type":
        return None, None
    tt = t.tensor_type
    if not tt.HasField("shape"):
        return int(tt.elem_type), None
    dims = []
    for d in tt.shape.dim:
        if d.WhichOneof("value") == "dim_value" and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:
            dims.append(None)
    return int(tt.elem_type), dims


def _given_shapes(input_shape, names):
    if input_shape is None:
        return {}
    if isinstance(input_shape, dict):
        unknown = [k for k in input_shape if k not in names]
        if unknown:
            raise ValueError(f"fastlazy.onnx.load: input_shape names "
                             f"{unknown}; the model's inputs are {names}")
        return dict(input_shape)
    if isinstance(input_shape, (tuple, list)):
        if all(d is None or isinstance(d, (int, np.integer))
               for d in input_shape):
            if len(names) == 1:
                return {names[0]: input_shape}
        elif len(input_shape) == len(names):
            return dict(zip(names, input_shape))
    raise ValueError(f"fastlazy.onnx.load: input_shape must be a shape such "
                     f"as (None, 20), a list of one per input, or a dict by "
                     f"input name; the model's inputs are {names}")


def _input_shapes(graph_inputs, input_shape, where):
    """Per-sample shape of every input, from the file completed (or
    overridden) by ``input_shape``; and the batch size the file fixes, if
    every input fixes the same one."""
    names = [vi.name for vi in graph_inputs]
    given = _given_shapes(input_shape, names)
    shapes, batches = {}, set()
    for vi in graph_inputs:
        elem, dims = _value_shape(vi)
        if elem is None:
            raise UnsupportedOperatorError(
                f"{where}: input '{vi.name}' is not a tensor (a sequence or "
                f"map); fastlazy takes tensors")
        if elem not in FLOAT_TYPES:
            raise UnsupportedOperatorError(
                f"{where}: input '{vi.name}' is "
                f"{TYPE_NAMES.get(elem, elem)}; fastlazy takes floating-point "
                f"inputs")
        g = given.get(vi.name)
        if g is not None:
            if not isinstance(g, (tuple, list)) or len(g) < 2 or any(
                    d is not None and (not isinstance(d, (int, np.integer))
                                       or d < 1) for d in g):
                raise ValueError(f"fastlazy.onnx.load: input_shape for "
                                 f"'{vi.name}' must be like (None, 3, 32, "
                                 f"32), got {g!r}")
            if dims is not None and len(dims) != len(g):
                raise ShapeError(f"{where}: input '{vi.name}' has "
                                 f"{len(dims)} axes in the file, "
                                 f"input_shape gives {len(g)}")
            file_dims = dims or [None] * len(g)
            dims = [file_dims[0]] + [
                int(d) if d is not None else f
                for d, f in zip(g[1:], file_dims[1:])]
        if dims is None:
            raise ShapeError(f"{where}: the file gives no shape for input "
                             f"'{vi.name}'; pass input_shape=(None, ...)")
        if len(dims) < 2:
            raise ShapeError(
                f"{where}: input '{vi.name}' has {len(dims)} axis(es); "
                f"fastlazy needs a batch axis and the sample's axes")
        missing = [i for i, d in enumerate(dims) if i and d is None]
        if missing:
            raise ShapeError(
                f"{where}: input '{vi.name}' has no size on axis "
                f"{missing[0]} ({_dim_text(vi, missing[0])}); pass "
                f"input_shape=(None, ...) with every size but the batch")
        sample = tuple(dims[1:])
        if prod(sample) > MAX_SAMPLE:
            raise ShapeError(f"{where}: input '{vi.name}' declares "
                             f"{prod(sample)} values per sample {sample}, "
                             f"more than fastlazy allows ({MAX_SAMPLE})")
        shapes[vi.name] = sample
        batches.add(dims[0])
    static = batches.pop() if len(batches) == 1 else None
    return shapes, static


def _dim_text(vi, i):
    shape = vi.type.tensor_type.shape
    if i < len(shape.dim) and shape.dim[i].WhichOneof("value") == \
            "dim_param":
        return f"named '{shape.dim[i].dim_param}'"
    return "not given"


# ---------------------------------------------------------------------------
# load


def _refusal(where, refused, all_outputs):
    lines = [f"{where}: fastlazy cannot run {len(refused)} node(s) of this "
             f"model:"]
    for n, why in refused:
        lines.append(f"  {n.where[len(where) + 2:]}: {why}")
    lines.append(f"fastlazy reads these ONNX operators: "
                 f"{', '.join(supported_operators())}.")
    if len(all_outputs) > 1:
        lines.append(f"To load only some outputs, pass outputs=[...] (this "
                     f"model's: {', '.join(all_outputs)}).")
    return UnsupportedOperatorError("\n".join(lines))


class _Model:
    """What reading a model gives: the program, its parameter arrays and
    what the fusion report needs."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def _convert(model, where, base, input_shape, outputs):
    """Check the model and walk it into a Program; nothing is built."""
    opsets = _opsets(model, where)
    if not model.HasField("graph"):
        raise ParameterFileError(f"{where}: the model has no graph")
    graph = model.graph
    tensors = Tensors(where, base)
    initializers = {}
    for t in graph.initializer:
        if not t.name:
            raise ParameterFileError(f"{where}: an initializer has no name")
        if t.name in initializers:
            raise ParameterFileError(f"{where}: two initializers are named "
                                     f"'{t.name}'")
        tensor_dims(t, f"{where}: initializer '{t.name}'")
        initializers[t.name] = t
    sparse = {t.values.name for t in graph.sparse_initializer}
    graph_inputs = [vi for vi in graph.input if vi.name not in initializers]
    in_names = [vi.name for vi in graph_inputs]
    if len(set(in_names)) != len(in_names) or "" in in_names:
        raise ParameterFileError(f"{where}: graph inputs {in_names} repeat "
                                 f"a name or have none")
    all_outputs = [o.name for o in graph.output]
    if outputs is None:
        wanted = all_outputs
        if not wanted:
            raise ParameterFileError(f"{where}: the graph has no outputs")
    else:
        wanted = [outputs] if isinstance(outputs, str) else list(outputs)
        bad = [o for o in wanted if o not in all_outputs]
        if bad or not wanted or len(set(wanted)) != len(wanted):
            raise ValueError(f"fastlazy.onnx.load: outputs {wanted} must "
                             f"name outputs of the model, once each; it has "
                             f"{all_outputs}")
    if opsets[""] < MIN_OPSET:
        raise UnsupportedOperatorError(
            f"{where}: the model uses opset {opsets['']} of the default ONNX "
            f"domain; fastlazy reads opset {MIN_OPSET} and up (export again "
            f"with opset_version={MIN_OPSET} or later, or convert it with "
            f"onnx.version_converter)")
    nodes = [Node.from_proto(p, i, opsets, where)
             for i, p in enumerate(graph.node)]
    defined = set(in_names) | set(initializers) | sparse
    order = _order(nodes, defined, wanted, where)
    used = {v for n in order for v in n.inputs if v} | set(wanted)
    needed_sparse = sorted(v for v in used if v in sparse)
    if needed_sparse:
        raise ParameterFileError(f"{where}: sparse initializers "
                                 f"{needed_sparse} are not read by fastlazy")
    in_vis = [vi for vi in graph_inputs if vi.name in used]
    if not in_vis:
        raise UnsupportedOperatorError(
            f"{where}: the outputs {wanted} do not depend on any input")
    shapes, static = _input_shapes(in_vis, input_shape, where)
    n_nodes = len(order)
    scalars = _scalars(order, initializers, tensors)
    order, gelus = _gelu_patterns(order, scalars, set(wanted), where)
    order, softplus = _softplus_patterns(order, scalars, set(wanted), where)
    readers = Counter(v for n in order for v in n.inputs if v)
    readers.update(wanted)
    walk = _Walk(where, opsets, tensors, [vi.name for vi in in_vis], shapes,
                 static, initializers, readers)
    walk.run(order)
    if gelus:
        walk.patterns["GELU from its erf form"] += gelus
    if softplus:
        walk.patterns["Softplus from its thresholded form"] += softplus
    if walk.refused:
        raise _refusal(where, walk.refused, all_outputs)
    heads, head_shapes = [], []
    for name in wanted:
        v = walk.values[name]
        if not isinstance(v, Dyn):
            raise UnsupportedOperatorError(
                f"{where}: output '{name}' is a constant (it does not "
                f"depend on the inputs)")
        if v.call is None or v.entry in heads:
            # an input, or a value returned already: a copy of it
            c = _Call(walk._fresh(f"{name}_copy"), "Identity",
                      _block.scalar_op, [v.entry], {},
                      {"op": "mul", "value": 1.0}, "Identity")
            walk.calls.append(c)
            v = Dyn(v.shape, (c.name, 0), c)
        heads.append(v.entry)
        head_shapes.append(v.shape)
    ops = tuple(OpCall(c.name, c.op, c.fn, tuple(c.args),
                       tuple((role, (key, 0))
                             for role, key in c.params.items()),
                       dict(c.kwargs), 1) for c in walk.calls)
    program = Program(where, tuple(vi.name for vi in in_vis), ops,
                      tuple(heads), tuple(walk.specs))
    return _Model(program=program, walk=walk, shapes=shapes,
                  head_shapes=head_shapes, outputs=tuple(wanted),
                  n_nodes=n_nodes, opset=opsets[""])


_ONNX_ACT = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh",
             "softrelu": "Softplus", "softsign": "Softsign", "gelu": "Gelu",
             "silu": "Sigmoid+Mul", "relu6": "Clip"}


def _report(block, m):
    """Trace ``block`` for batch 1 and say what its plan fuses; returns
    (report, the outputs' per-sample shapes)."""
    from .. import _plan
    from .._compile import TraceFailed, _trace
    from .._steps import BatchNormStep, ConvStep, DenseStep, fuse
    walk = m.walk
    in_shapes = [(1,) + m.shapes[name] for name in block.input_names]
    try:
        builder, outs, out_shapes, _, _ = _trace(block, in_shapes,
                                                 compiling=True)
    except TraceFailed as exc:
        raise UnsupportedOperatorError(
            f"{walk.where}: the graph cannot be compiled: {exc.reason}") \
            from None
    steps, _ = fuse(builder.steps, outs)
    labels = {}         # (weight or mean, bias) parameter names -> label
    for c in walk.calls:
        if c.fn == "BatchNorm":
            labels[(c.params["moving_mean"], None)] = c.label
        elif "weight" in c.params:
            labels[(c.params["weight"], c.params.get("bias"))] = c.label
    codes = {v: k for k, v in _plan.ACTIVATIONS.items() if k}
    codes[_plan.RELU6] = "relu6"
    fused = Counter()
    for st in steps:
        if not isinstance(st, (DenseStep, ConvStep, BatchNormStep)):
            continue
        if isinstance(st, BatchNormStep):
            key = (st.mean.name, None)
        else:
            key = (st.weight.name, st.bias.name if st.bias else None)
        parts = [labels.get(key, type(st).__name__)]
        if getattr(st, "bn", None) is not None:
            parts.append("BatchNormalization")
        if st.act:
            act = codes.get(st.act, str(st.act))
            parts.append(walk.act_labels.get(act, _ONNX_ACT.get(act, act)))
        if len(parts) > 1 or "+" in parts[0]:
            fused["+".join(parts)] += 1
    text = "fused: " + (", ".join(
        f"{count} {label}" for label, count in fused.most_common())
        or "nothing")
    if walk.patterns:
        text += "; " + ", ".join(f"{count} {what}" for what, count
                                 in walk.patterns.items())
    folded = sum(walk.folded.values())
    if folded:
        text += (f"; folded at load: {folded} node(s) "
                 f"({', '.join(sorted(walk.folded))})")
    text += f"; {m.n_nodes} ONNX nodes -> {len(steps)} plan steps"
    return text, [tuple(s[1:]) for s in out_shapes]


def load(path_or_model, input_shape=None, *, outputs=None, dtype="float32",
         base_dir=None, verbose=False):
    """Read an ONNX model as a compiled fastlazy block.

    Parameters
    ----------
    path_or_model : str, os.PathLike, bytes or onnx.ModelProto
        The ``.onnx`` file (or its bytes, or the loaded model).
    input_shape : tuple, list or dict, optional
        Sizes the file leaves open, or that replace its own:
        ``(None, 3, 32, 32)`` for a model with one input (``None`` is the
        batch, which stays free), a list of shapes in input order, or a
        dict by input name.  Every size but the batch must be known from
        the file or from here.
    outputs : str or list of str, optional
        Compute only these graph outputs (e.g. ``['probabilities']`` of an
        skl2onnx classifier, whose ``label`` needs operators fastlazy does
        not have).  Default: all, in the graph's order.
    dtype : {'float32', 'float64'}
        The network's dtype; initializers of other float types (float16,
        bfloat16, float64) are converted to it.
    base_dir : str, optional
        Where external data files are, for a model given as bytes or a
        ModelProto (default: the model file's directory, else the current
        directory).  Only files inside it are read.
    verbose : bool
        Print the fusion report (:meth:`OnnxBlock.fusion_report`).

    Returns
    -------
    OnnxBlock
        The whole graph as one block, traced and checked for the input
        shapes above (any batch size).  ``net(x)`` (``net(x, y)`` for
        several inputs) returns the output, or a tuple of them.  Parameters
        are named after the initializers; a MatMul weight, or a Gemm weight
        with transB=0, is stored as Dense's (units, in_units), transposed
        from the file.

    Raises
    ------
    UnsupportedOperatorError
        Listing every node fastlazy cannot run (node name, operator,
        opset, and why), or a model whose opset is below 13.
    ParameterFileError
        A damaged or malformed file: unreadable protobuf, a tensor whose
        bytes disagree with its dimensions, external data outside the
        model's directory, a value no node makes, a cycle.
    ShapeError
        Sizes that contradict each other (a weight against its input), or
        an input size neither the file nor ``input_shape`` gives.
    """
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        dtype = None
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"fastlazy.onnx.load: dtype must be 'float32' or "
                        f"'float64', got {dtype!r}")
    model, where, base = read_model(path_or_model, base_dir)
    try:
        m = _convert(model, where, base, input_shape, outputs)
    except RecursionError:
        raise ParameterFileError(f"{where}: nested too deeply") from None
    name = "onnx"
    if isinstance(path_or_model, (str, os.PathLike)):
        name = os.path.splitext(os.path.basename(
            os.fsdecode(path_or_model)))[0] or "onnx"
    info = {"outputs": m.outputs, "opset": m.opset, "report": "",
            "shapes": tuple(m.shapes[i] for i in m.program.inputs)}
    net = OnnxBlock._from_onnx(m.program, dtype, name, info)
    from ..io import assign_arrays
    # in the network's dtype first: a weight stored transposed is then
    # filled by one blocked transposing copy (Parameter.set_data)
    assign_arrays(net, [(key, np.asarray(arr, dtype=dtype), f"'{key}'")
                        for key, arr in m.walk.arrays.items()],
                  where, cast_dtype=True)
    report, out_shapes = _report(net, m)
    if out_shapes != [tuple(s) for s in m.head_shapes]:
        raise ShapeError(f"{where}: the compiled graph's outputs have "
                         f"per-sample shapes {out_shapes}, the file's "
                         f"operators give {m.head_shapes}")
    net._onnx["report"] = report
    if verbose:
        print(f"{name}: {report}")
    return net
