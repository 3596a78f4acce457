"""Rebuild exported MXNet Gluon models as compiled graph blocks, without
MXNet.

Gluon's ``net.export('model')`` writes ``model-symbol.json`` (the graph) and
``model-0000.params`` (the weights, keys ``arg:NAME`` and ``aux:NAME``).
:func:`load_mxnet_export` and :meth:`fastlazy.SymbolBlock.imports` check the
graph, then turn it into a :class:`~fastlazy.SymbolBlock` -- branches,
residual additions, several inputs and outputs included -- and load the
weights.  The block's ``hybrid_forward`` walks the graph with the operators
of ``F`` (:mod:`fastlazy.ops`), so the whole graph is one compiled plan.

Which operators are supported is the table :data:`OPS`: MXNet operator name
-> :class:`OpRule`.  A new operator is one entry: its MXNet arguments (when
some are parameters) and a function from the :class:`Node` (attributes
parsed with the ``get_*`` methods) to a :class:`Call` of an ``F``
operator.  FullyConnected, for example, is::

    OPS["FullyConnected"] = OpRule(_fully_connected,
                                   roles=("data", "weight", "bias"))

where ``_fully_connected(node)`` returns ``Call("FullyConnected",
{"num_hidden": ..., "no_bias": ..., "flatten": ...}, params={"weight":
(num_hidden, -1), "bias": (num_hidden,)}, transposed=("weight",))``.

Everything is checked before anything is built: an operator missing from
:data:`OPS` (or an attribute value fastlazy cannot reproduce) raises
:class:`~fastlazy.UnsupportedOperatorError` naming the node and operator; a
malformed graph, a missing or extra array raises
:class:`~fastlazy.ParameterFileError`; an array contradicting its node
:class:`~fastlazy.ParameterShapeError`.
"""

import json
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from .._util import FLOAT_DTYPES, is_int
from ..errors import (FastLazyError, ParameterFileError, ParameterShapeError,
                      UnsupportedOperatorError)
from ..io import assign_arrays, key_hint, load_arrays
from ..symbol_block import OpCall, ParamSpec, Program, SymbolBlock
from .format import (parse_attr_bool, parse_attr_float, parse_attr_int,
                     parse_attr_tuple, read_symbol_dag)
from .names import bare_keys

__all__ = ["load_mxnet_export", "import_graph", "graph_program", "OPS",
           "OpRule", "Call", "Node"]

_REQUIRED = object()

#: ``act_type`` values of MXNet's Activation operator that fastlazy has.
_ACT_TYPES = ("relu", "sigmoid", "tanh", "softrelu", "softsign")
#: ``act_type`` values of MXNet's LeakyReLU operator that fastlazy has.
_LEAKY_TYPES = ("leaky", "prelu", "elu", "selu", "gelu", "rrelu")


class Node:
    """One operator node of an exported graph, as an :class:`OpRule` sees it.

    Parameters
    ----------
    raw : dict
        The node as in :class:`fastlazy.mxnet.format.SymbolDAG`.
    source : str
        The ``-symbol.json`` file, for error messages.
    roles : tuple of str or None
        The operator's MXNet arguments (``('data', 'weight', 'bias')``);
        None when every input is data.

    Attributes
    ----------
    op : str
        Operator name, e.g. ``'FullyConnected'``.
    name : str
        Node name, e.g. ``'dense0_fwd'``.
    attrs : dict of str to str
        The operator's attributes as stored; read them with the ``get_*``
        methods, which name the node and attribute in their errors.
    inputs : list of (str, int)
        The data inputs: (node name, output index).
    params : dict of str to str
        MXNet argument (``'weight'``) -> variable name (``'dense0_weight'``),
        for operators with ``roles``.
    where : str
        ``"FILE: node 'NAME' (OP)"``, the start of this node's error messages.
    """

    def __init__(self, raw, source, roles=None):
        self.op = raw["op"]
        self.name = raw["name"]
        self.attrs = raw["attrs"]
        self.where = f"{source}: node '{self.name}' ({self.op})"
        entries = list(raw["inputs"])
        if roles is None:
            self.inputs, self.params = entries, {}
            return
        if len(entries) > len(roles):
            raise ParameterFileError(
                f"{self.where}: takes at most {len(roles)} inputs "
                f"{list(roles)}, got {len(entries)}")
        self.inputs = entries[:1]
        self.params = {}
        for role, (var, index) in zip(roles[1:], entries[1:]):
            self.params[role] = var

    def _get(self, key, parse, default):
        text = self.attrs.get(key)
        if text is None:
            if default is _REQUIRED:
                raise ParameterFileError(f"{self.where}: the attribute "
                                         f"{key!r} is missing")
            return default
        try:
            return parse(text)
        except ParameterFileError as exc:
            raise ParameterFileError(f"{self.where}: attribute {key!r}: "
                                     f"{exc}") from None

    def get_str(self, key, default=_REQUIRED):
        """Attribute ``key`` as stored; ``default`` if absent (else an
        error)."""
        return self._get(key, str, default)

    def get_int(self, key, default=_REQUIRED):
        """Attribute ``key`` as an int (``num_hidden``)."""
        return self._get(key, parse_attr_int, default)

    def get_float(self, key, default=_REQUIRED):
        """Attribute ``key`` as a float (``p``, ``eps``)."""
        return self._get(key, parse_attr_float, default)

    def get_bool(self, key, default=_REQUIRED):
        """Attribute ``key`` as a bool (``no_bias``, ``flatten``)."""
        return self._get(key, parse_attr_bool, default)

    def get_tuple(self, key, default=_REQUIRED):
        """Attribute ``key`` as a tuple of ints (``kernel``, ``axes``)."""
        return self._get(key, parse_attr_tuple, default)

    def get_optional(self, key, parse, default=None):
        """Attribute ``key`` parsed with ``get_<parse>``, where MXNet's
        ``'None'`` (and absence) mean ``default``."""
        text = self.attrs.get(key)
        if text is None or text.strip() in ("None", ""):
            return default
        return getattr(self, "get_" + parse)(key)

    def unsupported(self, what):
        """An :class:`UnsupportedOperatorError` for this node: its operator
        is supported, but not ``what`` (e.g. ``"act_type 'mish'"``)."""
        return UnsupportedOperatorError(f"{self.where}: {self.op} with {what} "
                                        f"is not supported by fastlazy")


@dataclass(frozen=True)
class Call:
    """What one node computes: an ``F`` operator and its arguments.

    Attributes
    ----------
    fn : str or callable
        The name of an operator of :mod:`fastlazy.ops` (``'softmax'``), or
        a module-level function ``fn(F, *data, **kwargs)``.
    kwargs : dict
        Keyword arguments: the node's attributes, parsed.
    params : dict of str to tuple
        The parameter inputs the node must have: MXNet argument (also
        ``fn``'s keyword) -> the shape its attributes imply, -1 where they
        do not say (``{'weight': (10, -1), 'bias': (10,)}``).
    transposed : tuple of str
        Parameters stored transposed (FullyConnected's weight, which the
        compiled Dense kernel reads as (in, out)).
    inputs : int or None
        How many data inputs the node takes (None: one or more).
    outputs : int
        How many outputs the node has.
    """

    fn: object
    kwargs: Mapping = field(default_factory=dict)
    params: Mapping = field(default_factory=dict)
    transposed: tuple = ()
    inputs: object = 1
    outputs: int = 1


@dataclass(frozen=True)
class OpRule:
    """How one MXNet operator is computed.

    Attributes
    ----------
    bind : callable
        ``bind(node) -> Call``: parse the :class:`Node`'s attributes.  Raise
        ``node.unsupported(...)`` for values fastlazy cannot reproduce.
    roles : tuple of str or None
        The operator's MXNet arguments in order, when some are parameters
        (``('data', 'weight', 'bias')``): the first is the data, the others
        parameters.  None: every input is data (parameters may still be
        operands, as in ``broadcast_mul(x, scale)``).
    ignore : tuple of str
        Arguments unused at inference (SoftmaxOutput's ``label``).
    """

    bind: Callable
    roles: tuple = None
    ignore: tuple = ()


# ---------------------------------------------------------------------------
# Operators

def _act_type(node):
    act = node.get_str("act_type")
    if act not in _ACT_TYPES:
        raise node.unsupported(f"act_type {act!r} (fastlazy has "
                               f"{', '.join(_ACT_TYPES)})")
    return act


def _fully_connected(node):
    units = node.get_int("num_hidden")
    if units < 1:
        raise ValueError(f"num_hidden must be positive, got {units}")
    no_bias = node.get_bool("no_bias", False)
    shapes = {"weight": (units, -1)}
    if not no_bias:
        shapes["bias"] = (units,)
    return Call("FullyConnected",
                {"num_hidden": units, "no_bias": no_bias,
                 "flatten": node.get_bool("flatten", True)},
                shapes, transposed=("weight",))


def _activation(node):
    return Call("Activation", {"act_type": _act_type(node)})


def _elementwise(name):
    """Binder for an operator that is one activation (``relu``, ...)."""
    def bind(node):
        return Call("Activation", {"act_type": name})
    return bind


def _leaky_relu(node):
    act = node.get_str("act_type", "leaky")
    if act not in _LEAKY_TYPES:
        raise node.unsupported(f"act_type {act!r} (fastlazy has "
                               f"{', '.join(_LEAKY_TYPES)})")
    kwargs = {"act_type": act, "slope": node.get_float("slope", 0.25),
              "lower_bound": node.get_float("lower_bound", 0.125),
              "upper_bound": node.get_float("upper_bound", 0.334)}
    return Call("LeakyReLU", kwargs,
                {"gamma": (-1,)} if act == "prelu" else {})


def _identity(node):
    return Call("identity")


def _flatten(node):
    return Call("flatten")


def _dropout(node):
    mode = node.get_str("mode", "training")
    if mode != "training":
        raise node.unsupported(f"mode {mode!r} (it drops values at inference, "
                               f"which fastlazy does not do)")
    rate = node.get_float("p", 0.5)
    if not 0 <= rate < 1:
        raise ValueError(f"the dropout rate p={rate} is not in [0, 1)")
    return Call("Dropout", outputs=1)


def _pair_attr(node, key, default):
    """A 2-D window attribute; other ranks are Conv1D/3D, not supported."""
    value = node.get_tuple(key, default)
    if value == () and default is not None:
        value = default
    if value is None or len(value) != 2:
        raise node.unsupported(f"{key}={value} (fastlazy has 2-D "
                               f"convolution and pooling)")
    return value


def _layout(node):
    layout = node.get_str("layout", "NCHW")
    if layout not in ("NCHW", "None"):
        raise node.unsupported(f"layout {layout!r} (fastlazy has NCHW)")


def _convolution(node):
    _layout(node)
    kernel = _pair_attr(node, "kernel", None)
    filters = node.get_int("num_filter")
    groups = node.get_int("num_group", 1)
    if filters < 1 or groups < 1 or filters % groups:
        raise ValueError(f"num_filter={filters} does not split into "
                         f"num_group={groups} groups")
    no_bias = node.get_bool("no_bias", False)
    shapes = {"weight": (filters, -1) + tuple(kernel)}
    if not no_bias:
        shapes["bias"] = (filters,)
    return Call("Convolution",
                {"kernel": kernel,
                 "stride": _pair_attr(node, "stride", (1, 1)),
                 "dilate": _pair_attr(node, "dilate", (1, 1)),
                 "pad": _pair_attr(node, "pad", (0, 0)),
                 "num_filter": filters, "num_group": groups,
                 "no_bias": no_bias}, shapes)


def _pooling(node):
    _layout(node)
    kind = node.get_str("pool_type", "max")
    if kind not in ("max", "avg"):
        raise node.unsupported(f"pool_type {kind!r} (fastlazy has 'max' and "
                               f"'avg')")
    convention = node.get_str("pooling_convention", "valid")
    if convention not in ("valid", "full"):
        raise node.unsupported(f"pooling_convention {convention!r} (fastlazy "
                               f"has 'valid' and 'full')")
    kwargs = {"pool_type": kind,
              "global_pool": node.get_bool("global_pool", False),
              "pooling_convention": convention,
              "count_include_pad": node.get_bool("count_include_pad", True)}
    if not kwargs["global_pool"]:
        kwargs.update(kernel=_pair_attr(node, "kernel", None),
                      stride=_pair_attr(node, "stride", (1, 1)),
                      pad=_pair_attr(node, "pad", (0, 0)))
    return Call("Pooling", kwargs)


def _batchnorm(node):
    if node.get_bool("output_mean_var", False):
        raise node.unsupported("output_mean_var=True (three outputs)")
    axis = node.get_int("axis", 1)
    return Call("BatchNorm",
                {"eps": node.get_float("eps", 1e-3),
                 "fix_gamma": node.get_bool("fix_gamma", True),
                 "axis": axis},
                {role: (-1,) for role in ("gamma", "beta", "moving_mean",
                                          "moving_var")})


def _layernorm(node):
    if node.get_bool("output_mean_var", False):
        raise node.unsupported("output_mean_var=True (three outputs)")
    return Call("LayerNorm", {"axis": node.get_int("axis", -1),
                              "eps": node.get_float("eps", 1e-5)},
                {"gamma": (-1,), "beta": (-1,)})


def _softmax_op(name):
    def bind(node):
        if node.get_bool("use_length", False):
            raise node.unsupported("use_length=True (a second input of "
                                   "lengths)")
        return Call(name, {"axis": node.get_int("axis", -1),
                           "temperature": node.get_optional("temperature",
                                                            "float")})
    return bind


def _softmax_instance(F, x):
    """Softmax over every axis but the batch (MXNet's 'instance' mode)."""
    shape = tuple(x.shape)
    flat = F.softmax(F.reshape(x, (0, -1)), axis=-1)
    return F.reshape(flat, (0,) + shape[1:])


def _softmax_activation(node):
    mode = node.get_str("mode", "instance")
    if mode == "channel":
        return Call("softmax", {"axis": 1})
    if mode != "instance":
        raise node.unsupported(f"mode {mode!r} (MXNet has 'instance' and "
                               f"'channel')")
    return Call(_softmax_instance)


def _softmax_output(node):
    """At inference SoftmaxOutput is a softmax; its label is unused."""
    if node.get_bool("preserve_shape", False):
        return Call("softmax", {"axis": -1})
    if node.get_bool("multi_output", False):
        return Call("softmax", {"axis": 1})
    return Call(_softmax_instance)


def _reshape(node):
    target = node.get_tuple("target_shape", ())
    if target and any(target):
        raise node.unsupported("the deprecated target_shape attribute")
    if node.get_bool("keep_highest", False):
        raise node.unsupported("keep_highest=True")
    return Call("reshape", {"shape": node.get_tuple("shape"),
                            "reverse": node.get_bool("reverse", False)})


def _concat(node):
    count = node.get_int("num_args", len(node.inputs))
    if count != len(node.inputs):
        raise ValueError(f"num_args={count}, but the node has "
                         f"{len(node.inputs)} inputs")
    return Call("concat", {"dim": node.get_int("dim", 1)}, inputs=count)


def _binary(name):
    def bind(node):
        return Call(name, inputs=2)
    return bind


def _add_n(node):
    count = node.get_int("num_args", len(node.inputs))
    if count != len(node.inputs):
        raise ValueError(f"num_args={count}, but the node has "
                         f"{len(node.inputs)} inputs")
    return Call("add_n", inputs=count)


def _plus_scalar(F, x, scalar):
    return x + scalar


def _minus_scalar(F, x, scalar):
    return x - scalar


def _rminus_scalar(F, x, scalar):
    return scalar - x


def _mul_scalar(F, x, scalar):
    return x * scalar


def _div_scalar(F, x, scalar):
    return x / scalar


def _rdiv_scalar(F, x, scalar):
    return scalar / x


def _power_scalar(F, x, scalar):
    return x ** scalar


def _maximum_scalar(F, x, scalar):
    return F.broadcast_maximum(x, scalar)


def _minimum_scalar(F, x, scalar):
    return F.broadcast_minimum(x, scalar)


def _scalar(fn):
    def bind(node):
        return Call(fn, {"scalar": node.get_float("scalar")})
    return bind


def _clip(node):
    low, high = node.get_float("a_min"), node.get_float("a_max")
    if low > high:
        raise ValueError(f"a_min={low} is greater than a_max={high}")
    return Call("clip", {"a_min": low, "a_max": high})


def _slice_axis(node):
    return Call("slice_axis", {"axis": node.get_int("axis"),
                               "begin": node.get_int("begin"),
                               "end": node.get_optional("end", "int")})


def _reduce(name):
    def bind(node):
        axis = node.get_optional("axis", "tuple")
        return Call(name, {"axis": axis or None,
                           "keepdims": node.get_bool("keepdims", False),
                           "exclude": node.get_bool("exclude", False)})
    return bind


def _split(F, x, num_outputs, axis, squeeze_axis):
    """MXNet's SliceChannel: ``num_outputs`` equal parts along ``axis``."""
    shape = tuple(x.shape)
    a = axis % len(shape)
    size = shape[a]
    if size % num_outputs:
        raise ValueError(f"axis {axis} of size {size} does not split into "
                         f"{num_outputs} equal parts")
    step = size // num_outputs
    parts = []
    for i in range(num_outputs):
        part = F.slice_axis(x, axis=a, begin=i * step, end=(i + 1) * step)
        if squeeze_axis:
            if step != 1:
                raise ValueError(f"squeeze_axis=True needs parts of size 1 "
                                 f"on axis {axis}, they have {step}")
            part = F.reshape(part, (0,) + shape[1:a] + shape[a + 1:])
        parts.append(part)
    return tuple(parts)


def _slice_channel(node):
    count = node.get_int("num_outputs")
    if count < 1:
        raise ValueError(f"num_outputs must be positive, got {count}")
    return Call(_split, {"num_outputs": count,
                         "axis": node.get_int("axis", 1),
                         "squeeze_axis": node.get_bool("squeeze_axis",
                                                       False)},
                outputs=count)


_WEIGHT_BIAS = ("data", "weight", "bias")
_NORM = ("data", "gamma", "beta")

#: MXNet operator name -> :class:`OpRule`: the operators
#: :func:`load_mxnet_export` and :class:`~fastlazy.SymbolBlock` run.
OPS = {
    "FullyConnected": OpRule(_fully_connected, _WEIGHT_BIAS),
    "Convolution": OpRule(_convolution, _WEIGHT_BIAS),
    "Pooling": OpRule(_pooling),
    "BatchNorm": OpRule(_batchnorm, ("data", "gamma", "beta", "moving_mean",
                                     "moving_var")),
    "LayerNorm": OpRule(_layernorm, _NORM),
    "Activation": OpRule(_activation),
    "LeakyReLU": OpRule(_leaky_relu, ("data", "gamma")),
    "relu": OpRule(_elementwise("relu")),
    "sigmoid": OpRule(_elementwise("sigmoid")),
    "tanh": OpRule(_elementwise("tanh")),
    "softsign": OpRule(_elementwise("softsign")),
    "softmax": OpRule(_softmax_op("softmax")),
    "log_softmax": OpRule(_softmax_op("log_softmax")),
    "SoftmaxActivation": OpRule(_softmax_activation),
    "SoftmaxOutput": OpRule(_softmax_output, ("data", "label"),
                            ignore=("label",)),
    "clip": OpRule(_clip),
    "Flatten": OpRule(_flatten),
    "flatten": OpRule(_flatten),
    "Reshape": OpRule(_reshape),
    "reshape": OpRule(_reshape),
    "Concat": OpRule(_concat),
    "concat": OpRule(_concat),
    "SliceChannel": OpRule(_slice_channel),
    "split": OpRule(_slice_channel),
    "slice_axis": OpRule(_slice_axis),
    "mean": OpRule(_reduce("mean")),
    "sum": OpRule(_reduce("sum")),
    "max": OpRule(_reduce("max")),
    "Dropout": OpRule(_dropout),
    "identity": OpRule(_identity),
    "_copy": OpRule(_identity),
    "BlockGrad": OpRule(_identity),
    "stop_gradient": OpRule(_identity),
    "add_n": OpRule(_add_n),
    "ElementWiseSum": OpRule(_add_n),
    "_plus_scalar": OpRule(_scalar(_plus_scalar)),
    "_minus_scalar": OpRule(_scalar(_minus_scalar)),
    "_rminus_scalar": OpRule(_scalar(_rminus_scalar)),
    "_mul_scalar": OpRule(_scalar(_mul_scalar)),
    "_div_scalar": OpRule(_scalar(_div_scalar)),
    "_rdiv_scalar": OpRule(_scalar(_rdiv_scalar)),
    "_power_scalar": OpRule(_scalar(_power_scalar)),
    "_maximum_scalar": OpRule(_scalar(_maximum_scalar)),
    "_minimum_scalar": OpRule(_scalar(_minimum_scalar)),
}
for _names, _fn in [
        (("elemwise_add", "_plus", "_Plus", "_add", "broadcast_add",
          "broadcast_plus"), "broadcast_add"),
        (("elemwise_sub", "_minus", "_Minus", "_sub", "broadcast_sub",
          "broadcast_minus"), "broadcast_sub"),
        (("elemwise_mul", "_mul", "_Mul", "broadcast_mul"), "broadcast_mul"),
        (("elemwise_div", "_div", "_Div", "broadcast_div"), "broadcast_div"),
        (("_maximum", "broadcast_maximum"), "broadcast_maximum"),
        (("_minimum", "broadcast_minimum"), "broadcast_minimum")]:
    for _name in _names:
        OPS[_name] = OpRule(_binary(_fn))
del _names, _fn, _name


# ---------------------------------------------------------------------------
# Checking a graph

def _bind(rule, node):
    try:
        return rule.bind(node)
    except FastLazyError:
        raise
    except (ValueError, TypeError) as exc:
        raise ParameterFileError(f"{node.where}: {exc}") from None


def _merge(shape, other):
    """``shape`` and ``other`` (-1: unknown) as one, or None if they
    contradict each other."""
    if shape is None:
        return tuple(other)
    if len(shape) != len(other):
        return None
    out = []
    for a, b in zip(shape, other):
        if a != -1 and b != -1 and a != b:
            return None
        out.append(a if a != -1 else b)
    return tuple(out)


def _shape_hint(raw, source):
    """A variable's ``__shape__`` attribute (0, or -1 in NumPy mode, is
    unknown)."""
    text = raw["attrs"].get("__shape__")
    if text is None:
        return None
    try:
        dims = parse_attr_tuple(text)
    except ParameterFileError as exc:
        raise ParameterFileError(f"{source}: variable '{raw['name']}': "
                                 f"attribute '__shape__': {exc}") from None
    if not dims:
        return None
    if any(d < -1 for d in dims):
        raise ParameterFileError(f"{source}: variable '{raw['name']}': "
                                 f"attribute '__shape__' {text!r} has a "
                                 f"negative size")
    return tuple(-1 if d in (0, -1) else d for d in dims)


def _input_order(names):
    """Gluon exports several inputs as data0, data1, ...: call order."""
    if len(names) > 1 and all(re.fullmatch(r"data\d+", n) for n in names):
        return sorted(names, key=lambda n: int(n[4:]))
    return list(names)


def _nodes(dag):
    """``[(Node, OpRule, Call)]`` for the operator nodes, in graph order.

    Raises UnsupportedOperatorError for the first operator missing from
    :data:`OPS`, before anything else is looked at; then for attribute
    values fastlazy cannot reproduce.
    """
    source = dag.source
    ops = [raw for raw in dag.nodes if raw["op"] != "null"]
    for raw in ops:
        if raw["op"] not in OPS:
            raise UnsupportedOperatorError(
                f"{source}: node '{raw['name']}' ({raw['op']}): fastlazy has "
                f"no operator {raw['op']!r} (it runs "
                f"{', '.join(sorted(OPS, key=str.lower))})")
    if not ops:
        raise ParameterFileError(f"{source}: the graph has no operators")
    nodes = []
    for raw in ops:
        rule = OPS[raw["op"]]
        node = Node(raw, source, rule.roles)
        nodes.append((node, rule, _bind(rule, node)))
    return nodes


def _check(dag, nodes, input_names=None, arrays=None):
    """Everything about the graph, checked before anything is built.

    Parameters
    ----------
    dag : SymbolDAG
    nodes : list
        ``_nodes(dag)``.
    input_names : list of str, optional
        The inputs (every other variable is a parameter).  None: the
        variables that feed data positions and have no array in
        ``arrays`` (the names of the parameter file).

    Returns
    -------
    program : Program
    first : dict of str to (str, Node)
        Parameter -> (its MXNet argument, the first node using it), for
        messages.
    """
    source = dag.source
    raws = {raw["name"]: raw for raw in dag.nodes}
    outputs = {raw["name"]: 1 for raw in dag.nodes if raw["op"] == "null"}
    role_vars = {}          # parameter variable -> (role, node)
    data_vars = []          # variables in data positions, in graph order
    ignored = set()
    for node, rule, call in nodes:
        wanted = set(call.params)
        given = {r for r in node.params if r not in rule.ignore}
        for role in sorted(wanted - given):
            raise ParameterFileError(
                f"{node.where}: the node has no input for its {role!r}")
        for role in sorted(given - wanted):
            raise ParameterFileError(
                f"{node.where}: the node has a {role!r} input that its "
                f"attributes rule out (e.g. no_bias='True')")
        count = len(node.inputs)
        if count == 0 or (call.inputs is not None and count != call.inputs):
            raise ParameterFileError(
                f"{node.where}: takes {call.inputs or 'one or more'} data "
                f"input(s), the node has {count}")
        for role, var in node.params.items():
            if raws[var]["op"] != "null":
                raise node.unsupported(
                    f"its {role!r} computed by node '{var}' (fastlazy "
                    f"takes parameters from the parameter file)")
            if role in rule.ignore:
                ignored.add(var)
            else:
                role_vars.setdefault(var, (role, node))
        for entry in node.inputs:
            _check_entry(entry, outputs, raws, node.where)
            if raws[entry[0]]["op"] == "null" and entry[0] not in data_vars:
                data_vars.append(entry[0])
        outputs[node.name] = call.outputs
    for entry in dag.heads:
        _check_entry(entry, outputs, raws, f"{source}: the graph's output")

    if input_names is None:
        have = arrays or ()
        inputs = _input_order([v for v in data_vars
                               if v not in role_vars and v not in have])
        if not inputs:
            raise ParameterFileError(
                f"{source}: every variable of the graph has an array in the "
                f"parameter file, so the graph has no input; use "
                f"SymbolBlock.imports(symbol_file, input_names, param_file) "
                f"to say which variables are inputs")
    else:
        inputs = list(input_names)
        variables = [raw["name"] for raw in dag.nodes if raw["op"] == "null"]
        for name in inputs:
            if not isinstance(name, str):
                raise TypeError(f"input names must be strings, got "
                                f"{name!r}")
            if name not in outputs or raws[name]["op"] != "null":
                raise ValueError(
                    f"{source}: input {name!r} is not a variable of the "
                    f"graph; its variables are {key_hint(variables)}")
            if name in role_vars:
                role, node = role_vars[name]
                raise ValueError(
                    f"{source}: input {name!r} is the {role} of node "
                    f"'{node.name}' ({node.op}), a parameter")
        if len(set(inputs)) != len(inputs):
            raise ValueError(f"{source}: input names {inputs} repeat a name")

    # parameters: every other variable an operator uses
    uses = {}
    for node, rule, call in nodes:
        for role, var in node.params.items():
            if role not in rule.ignore:
                uses.setdefault(var, []).append((role, node, call))
        for var, _ in node.inputs:
            if raws[var]["op"] == "null" and var not in inputs:
                uses.setdefault(var, []).append(("operand", node, call))
    specs = []
    first = {}
    for raw in dag.nodes:
        var = raw["name"]
        if var not in uses:
            continue
        shape = _shape_hint(raw, source)
        transposed = False
        for role, node, call in uses[var]:
            if role == "operand":
                continue
            merged = _merge(shape, call.params[role])
            if merged is None:
                raise ParameterShapeError(
                    f"{node.where}: its {role} '{var}' has shape {shape} "
                    f"elsewhere in the graph, but this node needs "
                    f"{tuple(call.params[role])}")
            shape = merged
            transposed = transposed or role in call.transposed
        role, node, _ = uses[var][0]
        first[var] = (role, node)
        specs.append(ParamSpec(var, shape, transposed,
                               f"{role} of node '{node.name}'"))

    calls = []
    for node, rule, call in nodes:
        params = tuple((role, (var, 0)) for role, var in node.params.items()
                       if role not in rule.ignore)
        calls.append(OpCall(node.name, node.op, call.fn, tuple(node.inputs),
                            params, dict(call.kwargs), call.outputs))
    program = Program(source, tuple(inputs), tuple(calls), tuple(dag.heads),
                      tuple(specs))
    return program, first


def _check_entry(entry, outputs, raws, where):
    name, index = entry
    count = outputs[name]
    if index >= count:
        raise ParameterFileError(
            f"{where}: takes output {index} of node '{name}' "
            f"({raws[name]['op']}), which has {count} output(s)")


def _read(graph):
    if isinstance(graph, dict):
        graph = json.dumps(graph)
    return read_symbol_dag(graph)


def graph_program(graph, input_names):
    """The checked :class:`~fastlazy.symbol_block.Program` of ``graph`` (a
    ``-symbol.json`` path, its text or parsed JSON) with inputs
    ``input_names`` (a name or a list)."""
    if isinstance(input_names, str):
        input_names = [input_names]
    dag = _read(graph)
    return _check(dag, _nodes(dag), list(input_names))[0]


def _net_dtype(dtype, arrays, source):
    if dtype is not None:
        chosen = np.dtype(dtype)
        if chosen not in FLOAT_DTYPES:
            raise TypeError(f"load_mxnet_export: dtype must be 'float32' or "
                            f"'float64', got {chosen.name}")
        return chosen
    found = {arr.dtype for arr in arrays}
    if not found:
        return FLOAT_DTYPES[0]
    if len(found) == 1 and found <= set(FLOAT_DTYPES):
        return found.pop()
    raise ParameterFileError(
        f"{source}: the parameters are "
        f"{', '.join(sorted(d.name for d in found))}, but a fastlazy network "
        f"is float32 or float64 throughout: pass dtype='float32' (or "
        f"'float64') to convert them")


def _build(symbol_file, input_names, param_file, dtype, allow_missing,
           ignore_extra):
    """Check the graph and the file, then build the SymbolBlock and load
    the arrays; on any error nothing is returned and nothing changed."""
    dag = _read(symbol_file)
    sym_name = dag.source
    nodes = _nodes(dag)
    arrays = by_var = None
    if param_file is not None:
        arrays = load_arrays(param_file)
        par_name = os.fsdecode(param_file)
        by_var = {var: key for key, var in bare_keys(arrays,
                                                      par_name).items()}
    program, first = _check(dag, nodes, input_names, by_var)
    entries = []
    if arrays is not None:
        params = {spec.name for spec in program.params}
        for spec in program.params:
            key = by_var.get(spec.name)
            role, node = first[spec.name]
            if key is None:
                if allow_missing:
                    continue
                raise ParameterFileError(
                    f"{par_name}: there is no array for '{spec.name}', the "
                    f"{role} of node '{node.name}' ({node.op}) in "
                    f"{sym_name}; the file has {key_hint(arrays)}. Is it the "
                    f"parameter file that goes with this graph? (Pass "
                    f"allow_missing=True to SymbolBlock.imports to leave it "
                    f"unset.)")
            entries.append((spec.name, arrays[key],
                            f"{key!r} ({spec.label})"))
        unused = [key for var, key in by_var.items() if var not in params]
        if unused and not ignore_extra:
            var = next(v for v, k in by_var.items() if k == unused[0])
            what = (f"names the graph's input '{var}'"
                    if var in program.inputs else
                    f"is the input of no node of {sym_name}")
            raise ParameterFileError(
                f"{par_name}: array {unused[0]!r} {what} ({len(unused)} "
                f"such arrays). Is it the parameter file that goes with "
                f"this graph? (SymbolBlock.imports takes "
                f"ignore_extra=True.)")
    dtype = _net_dtype(dtype, [arr for _, arr, _ in entries],
                       par_name if arrays is not None else sym_name)
    stem = os.path.basename(sym_name)
    if stem.endswith("-symbol.json"):
        stem = stem[:-len("-symbol.json")]
    net = SymbolBlock._from_program(program, dtype, name=stem)
    if entries:
        assign_arrays(net, entries, par_name, cast_dtype=True)
    return net


def import_graph(symbol_file, input_names, param_file=None, *,
                 allow_missing=False, ignore_extra=False, dtype=None):
    """:meth:`fastlazy.SymbolBlock.imports` (see there)."""
    if isinstance(input_names, str):
        input_names = [input_names]
    elif not isinstance(input_names, (list, tuple)) or not input_names:
        raise TypeError(f"SymbolBlock.imports: input_names must be a name "
                        f"or a non-empty list of names, got "
                        f"{input_names!r}")
    return _build(symbol_file, list(input_names), param_file, dtype,
                  allow_missing, ignore_extra)


def load_mxnet_export(prefix, epoch=0, *, dtype=None, symbol_file=None,
                      param_file=None):
    """Rebuild a model saved by Gluon's ``export()`` and load its weights.

    Parameters
    ----------
    prefix : str or os.PathLike
        What was passed to ``net.export(prefix, epoch)``: the files are
        ``{prefix}-symbol.json`` and ``{prefix}-{epoch:04d}.params``.
    epoch : int, default 0
        The epoch number in the parameter file's name.
    dtype : {None, 'float32', 'float64'}
        The network's dtype.  None takes the file's (which must then be
        float32 or float64 throughout); otherwise the values are converted.
    symbol_file, param_file : str or os.PathLike, optional
        Paths to use instead of the ones made from ``prefix`` and ``epoch``
        (``prefix`` may then be None).

    Returns
    -------
    SymbolBlock
        The whole graph as one block, compiled into one plan at its first
        call; every parameter initialized with the file's values and named
        as in MXNet (``dense0_weight``).  Its inputs are the graph's
        variables that have no array in the file (Gluon's ``data``, or
        ``data0``, ``data1``, ... in that order: ``net(x0, x1)``); input
        shapes are what the exported network took, e.g. ``(N, in_units)``.
        Several outputs come back as a tuple.

    Raises
    ------
    UnsupportedOperatorError
        For the first node (in graph order) whose operator is not in
        :data:`OPS` or whose attributes fastlazy cannot reproduce (e.g.
        ``act_type='mish'``), naming the node and operator.
    ParameterFileError
        If a file is damaged, the graph is malformed (a cycle, an input
        that does not exist), a node lacks a required attribute or its
        parameter array, or the parameter file has an array that no node
        uses.
    ParameterShapeError
        If an array contradicts its node (``num_hidden`` vs. the weight's
        rows).

    Examples
    --------
    In Gluon (MXNet 1.x), ``net.hybridize(); net(x); net.export('mlp')``;
    then, without MXNet:

    >>> net = fl.load_mxnet_export('mlp')          # doctest: +SKIP
    >>> y = net(x)                                 # doctest: +SKIP
    """
    if symbol_file is None or param_file is None:
        if prefix is None:
            raise TypeError("load_mxnet_export: give a prefix, or both "
                            "symbol_file and param_file")
        if not is_int(epoch) or epoch < 0:
            raise TypeError(f"load_mxnet_export: epoch must be a "
                            f"non-negative int, got {epoch!r}")
        stem = os.fsdecode(prefix)
        symbol_file = symbol_file or f"{stem}-symbol.json"
        param_file = param_file or f"{stem}-{int(epoch):04d}.params"
    return _build(os.fspath(symbol_file), None, param_file, dtype, False,
                  False)
