"""Rebuild exported MXNet Gluon models as fastlazy networks, without MXNet.

Gluon's ``net.export('model')`` writes ``model-symbol.json`` (the graph) and
``model-0000.params`` (the weights, keys ``arg:NAME`` and ``aux:NAME``).
:func:`load_mxnet_export` turns a graph that is a chain of supported
operators into a :class:`~fastlazy.nn.Sequential` and loads the weights.

Which operators are supported is the table :data:`OPS`: MXNet operator name
-> :class:`OpRule`.  A new layer is one entry; Convolution, for example, is::

    OPS["Convolution"] = OpRule(
        _convolution,          # node attributes -> Conv2D(...)
        params={"weight": "weight", "bias": "bias"},
        takes_activation=True)

and BatchNorm maps its inputs ``moving_mean``/``moving_var`` to the layer's
``running_mean``/``running_var`` through ``params``.
"""

import os
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from .._util import FLOAT_DTYPES, is_int
from ..block import Sequential
from ..conv_layers import (AvgPool2D, BatchNorm, Conv2D, GlobalAvgPool2D,
                           GlobalMaxPool2D, LayerNorm, MaxPool2D)
from ..errors import (FastLazyError, ParameterFileError,
                      UnsupportedOperatorError)
from ..io import assign_arrays, key_hint, load_arrays
from ..layers import Activation, Dense, Dropout, Flatten
from .format import (parse_attr_bool, parse_attr_float, parse_attr_int,
                     parse_attr_tuple, read_symbol_graph)
from .names import bare_keys

__all__ = ["load_mxnet_export", "OPS", "OpRule", "Node"]

_REQUIRED = object()

#: ``act_type`` values of MXNet's Activation operator that fastlazy has.
_ACT_TYPES = ("relu", "sigmoid", "tanh", "softrelu", "softsign")


class Node:
    """One operator node of an exported graph, as an :class:`OpRule` sees it.

    Parameters
    ----------
    raw : dict
        The node as returned by
        :func:`fastlazy.mxnet.format.read_symbol_graph`.
    source : str
        The ``-symbol.json`` file, for error messages.

    Attributes
    ----------
    op : str
        Operator name, e.g. ``'FullyConnected'``.
    name : str
        Node name, e.g. ``'dense0_fwd'``.
    prefix : str
        The Gluon block prefix the node came from (``'dense0_'`` for
        ``'dense0_fwd'``; the name and ``'_'`` for names without ``_fwd``).
        Layers are built with it, so their parameters keep MXNet's names.
    attrs : dict of str to str
        The operator's attributes as stored; read them with the ``get_*``
        methods, which name the node and attribute in their errors.
    inputs : list of str
        Nodes feeding the operator's data.
    params : dict of str to str
        MXNet input role (``'weight'``) -> variable name (``'dense0_weight'``).
    where : str
        ``"FILE: node 'NAME' (OP)"``, the start of this node's error messages.
    """

    def __init__(self, raw, source):
        self.op = raw["op"]
        self.name = raw["name"]
        self.attrs = raw["attrs"]
        self.inputs = raw["inputs"]
        self.params = raw["params"]
        self.prefix = (self.name[:-3] if self.name.endswith("_fwd")
                       else self.name + "_")
        self.where = f"{source}: node '{self.name}' ({self.op})"

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

    def unsupported(self, what):
        """An :class:`UnsupportedOperatorError` for this node: its operator
        is supported, but not ``what`` (e.g. ``"act_type 'mish'"``)."""
        return UnsupportedOperatorError(f"{self.where}: {self.op} with {what} "
                                        f"is not supported by fastlazy")


@dataclass(frozen=True)
class OpRule:
    """How one MXNet operator becomes a fastlazy layer.

    Attributes
    ----------
    build : callable
        ``build(node, dtype, activation) -> Block``: the layer for a
        :class:`Node`, with parameters of ``dtype`` (a numpy float dtype)
        and prefix ``node.prefix``.  ``activation`` is the ``act_type`` of a
        folded Activation node (see ``takes_activation``), else None.  Raise
        ``node.unsupported(...)`` for attribute values fastlazy cannot
        reproduce.
    params : dict of str to str
        MXNet input role (``'weight'``, ``'moving_mean'``) -> name of the
        layer's parameter attribute that takes it (``'weight'``,
        ``'running_mean'``).  Every parameter of the built layer must get
        an input and every input a parameter.
    takes_activation : bool
        Fold an Activation node that follows this one into the layer, when
        it belongs to the same Gluon block (its name starts with the
        block's prefix, as ``dense0_relu_fwd`` after ``dense0_fwd``): Gluon
        exports ``Dense(..., activation='relu')`` as two nodes.
    """

    build: Callable
    params: Mapping[str, str] = field(default_factory=dict)
    takes_activation: bool = False


def _act_type(node):
    act = node.get_str("act_type")
    if act not in _ACT_TYPES:
        raise node.unsupported(f"act_type {act!r} (fastlazy has "
                               f"{', '.join(_ACT_TYPES)})")
    return act


def _dense(node, dtype, activation):
    return Dense(node.get_int("num_hidden"), activation=activation,
                 use_bias=not node.get_bool("no_bias", False),
                 flatten=node.get_bool("flatten", True), dtype=dtype,
                 prefix=node.prefix)


def _activation(node, dtype, activation):
    return Activation(_act_type(node), prefix=node.prefix)


def _elementwise(name):
    """Builder for an operator that is one activation (``relu``, ...)."""
    def build(node, dtype, activation):
        return Activation(name, prefix=node.prefix)
    return build


def _leaky_relu(node, dtype, activation):
    act = node.get_str("act_type", "leaky")
    if act != "gelu":
        raise node.unsupported(f"act_type {act!r} (fastlazy has 'gelu')")
    return Activation("gelu", prefix=node.prefix)


def _flatten(node, dtype, activation):
    return Flatten(prefix=node.prefix)


def _dropout(node, dtype, activation):
    mode = node.get_str("mode", "training")
    if mode != "training":
        raise node.unsupported(f"mode {mode!r} (it drops values at inference, "
                               f"which fastlazy does not do)")
    return Dropout(node.get_float("p", 0.5), axes=node.get_tuple("axes", ()),
                   prefix=node.prefix)


def _pair_attr(node, key, default):
    """A 2-D window attribute; other ranks are Conv1D/3D, not supported."""
    value = node.get_tuple(key, default)
    if len(value) != 2:
        raise node.unsupported(f"{key}={value} (fastlazy has 2-D "
                               f"convolution and pooling)")
    return value


def _layout(node):
    layout = node.get_str("layout", "NCHW")
    if layout not in ("NCHW", "None"):
        raise node.unsupported(f"layout {layout!r} (fastlazy has NCHW)")


def _convolution(node, dtype, activation):
    _layout(node)
    return Conv2D(node.get_int("num_filter"), _pair_attr(node, "kernel", None),
                  strides=_pair_attr(node, "stride", (1, 1)),
                  padding=_pair_attr(node, "pad", (0, 0)),
                  dilation=_pair_attr(node, "dilate", (1, 1)),
                  groups=node.get_int("num_group", 1),
                  use_bias=not node.get_bool("no_bias", False),
                  activation=activation, dtype=dtype, prefix=node.prefix)


def _pooling(node, dtype, activation):
    _layout(node)
    kind = node.get_str("pool_type", "max")
    if kind not in ("max", "avg"):
        raise node.unsupported(f"pool_type {kind!r} (fastlazy has 'max' and "
                               f"'avg')")
    if node.get_bool("global_pool", False):
        cls = GlobalMaxPool2D if kind == "max" else GlobalAvgPool2D
        return cls(prefix=node.prefix)
    convention = node.get_str("pooling_convention", "valid")
    if convention not in ("valid", "full"):
        raise node.unsupported(f"pooling_convention {convention!r} (fastlazy "
                               f"has 'valid' and 'full')")
    args = dict(pool_size=_pair_attr(node, "kernel", None),
                strides=_pair_attr(node, "stride", (1, 1)),
                padding=_pair_attr(node, "pad", (0, 0)),
                ceil_mode=convention == "full", prefix=node.prefix)
    if kind == "max":
        return MaxPool2D(**args)
    return AvgPool2D(count_include_pad=node.get_bool("count_include_pad",
                                                     True), **args)


def _batchnorm(node, dtype, activation):
    return BatchNorm(axis=node.get_int("axis", 1),
                     momentum=node.get_float("momentum", 0.9),
                     epsilon=node.get_float("eps", 1e-3),
                     scale=not node.get_bool("fix_gamma", True),
                     use_global_stats=node.get_bool("use_global_stats",
                                                    False),
                     dtype=dtype, prefix=node.prefix)


def _layernorm(node, dtype, activation):
    if node.get_bool("output_mean_var", False):
        raise node.unsupported("output_mean_var=True (three outputs)")
    return LayerNorm(axis=node.get_int("axis", -1),
                     epsilon=node.get_float("eps", 1e-5), dtype=dtype,
                     prefix=node.prefix)


#: MXNet operator name -> :class:`OpRule`: the operators
#: :func:`load_mxnet_export` can rebuild.
OPS = {
    "FullyConnected": OpRule(_dense, {"weight": "weight", "bias": "bias"},
                             takes_activation=True),
    "Activation": OpRule(_activation),
    "LeakyReLU": OpRule(_leaky_relu),
    "relu": OpRule(_elementwise("relu")),
    "sigmoid": OpRule(_elementwise("sigmoid")),
    "tanh": OpRule(_elementwise("tanh")),
    "softsign": OpRule(_elementwise("softsign")),
    "Flatten": OpRule(_flatten),
    "Dropout": OpRule(_dropout),
    "Convolution": OpRule(_convolution, {"weight": "weight", "bias": "bias"},
                          takes_activation=True),
    "Pooling": OpRule(_pooling),
    "BatchNorm": OpRule(_batchnorm, {"gamma": "gamma", "beta": "beta",
                                     "moving_mean": "running_mean",
                                     "moving_var": "running_var"}),
    "LayerNorm": OpRule(_layernorm, {"gamma": "gamma", "beta": "beta"}),
}


def _chain(graph, source):
    """The graph as ``[(node, folded Activation node or None)]``, in order.

    Raises UnsupportedOperatorError for the first operator missing from
    :data:`OPS`, then for a graph that is not a chain.
    """
    nodes = [Node(raw, source) for raw in graph.nodes]
    for node in nodes:
        if node.op not in OPS:
            raise UnsupportedOperatorError(
                f"{node.where}: fastlazy has no layer for operator "
                f"{node.op!r} (it rebuilds {', '.join(sorted(OPS))})")
    if not nodes:
        raise ParameterFileError(f"{source}: the graph has no operators")
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise UnsupportedOperatorError(
            f"{source}: the graph has inputs {graph.inputs} and outputs "
            f"{graph.outputs}; fastlazy rebuilds graphs with one input and "
            f"one output as a Sequential")
    current = graph.inputs[0]
    layers = []
    index = 0
    while index < len(nodes):
        node = nodes[index]
        if node.inputs != [current]:
            raise UnsupportedOperatorError(
                f"{node.where}: takes {node.inputs} as input, but in a "
                f"Sequential it would take the output of '{current}' alone; "
                f"fastlazy rebuilds chains of layers (no branches, no layers "
                f"with several inputs)")
        act = None
        after = nodes[index + 1] if index + 1 < len(nodes) else None
        if (OPS[node.op].takes_activation and after is not None
                and after.op == "Activation" and after.inputs == [node.name]
                and after.name.startswith(node.prefix)):
            act = after
            index += 1
        layers.append((node, act))
        current = (act or node).name
        index += 1
    if graph.outputs != [current]:
        raise UnsupportedOperatorError(
            f"{source}: the graph's output is '{graph.outputs[0]}', not the "
            f"end of its chain of layers ('{current}'); fastlazy rebuilds "
            f"graphs whose last operator is the output")
    return layers


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


def _build(rule, node, dtype, activation):
    try:
        return rule.build(node, dtype, activation)
    except FastLazyError:
        raise
    except (ValueError, TypeError) as exc:
        raise ParameterFileError(f"{node.where}: {exc}") from None


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
    Sequential
        One layer per operator node (a Dense with the Activation Gluon
        exported after it counts as one), flat even if the exported network
        was nested, every parameter initialized with the file's values and
        named as in MXNet (``dense0_weight``).  Input shape: what the
        exported network took, e.g. ``(N, in_units)``.

    Raises
    ------
    UnsupportedOperatorError
        For the first node (in graph order) whose operator is not in
        :data:`OPS` or whose attributes fastlazy cannot reproduce (e.g.
        ``act_type='mish'``), naming the node and operator; or if the graph
        is not a chain with one input and one output.
    ParameterFileError
        If a file is damaged, a node lacks a required attribute or its
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
    sym_name = os.fsdecode(symbol_file)
    par_name = os.fsdecode(param_file)
    layers = _chain(read_symbol_graph(symbol_file), sym_name)

    arrays = load_arrays(param_file)
    by_var = {var: key for key, var in bare_keys(arrays, par_name).items()}
    plan = []
    used = set()
    for node, act in layers:
        rule = OPS[node.op]
        inputs = []
        for role, var in node.params.items():
            attr = rule.params.get(role)
            if attr is None:
                raise node.unsupported(f"a {role!r} input")
            key = by_var.get(var)
            if key is None:
                raise ParameterFileError(
                    f"{par_name}: there is no array for '{var}', the {role} "
                    f"of node '{node.name}' ({node.op}) in {sym_name}; the "
                    f"file has {key_hint(arrays)}. Is it the parameter file "
                    f"that goes with this graph?")
            used.add(key)
            inputs.append((attr, role, key))
        plan.append((node, act, inputs))
    unused = [key for key in arrays if key not in used]
    if unused:
        raise ParameterFileError(
            f"{par_name}: array {unused[0]!r} is the input of no node of "
            f"{sym_name} ({len(unused)} such arrays). Is it the parameter "
            f"file that goes with this graph?")
    dtype = _net_dtype(dtype, [arrays[k] for k in used], par_name)

    net = Sequential()
    entries = []
    for index, (node, act, inputs) in enumerate(plan):
        rule = OPS[node.op]
        layer = _build(rule, node, dtype,
                       _act_type(act) if act is not None else None)
        net.add(layer)
        own = layer._collect_params_with_prefix()
        given = {attr for attr, _, _ in inputs}
        for attr in own:
            if attr not in given:
                raise ParameterFileError(
                    f"{node.where}: the layer has a parameter '{attr}', but "
                    f"the node has no input for it")
        for attr, role, key in inputs:
            if attr not in own:
                raise ParameterFileError(
                    f"{node.where}: the node has a {role!r} input that its "
                    f"attributes rule out (e.g. no_bias='True')")
            entries.append((f"{index}.{attr}", arrays[key],
                            f"{key!r} ({role} of node '{node.name}')"))
    assign_arrays(net, entries, par_name, cast_dtype=True)
    return net
