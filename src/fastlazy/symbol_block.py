"""SymbolBlock: an exported MXNet graph as one compiled HybridBlock.

Gluon's ``gluon.SymbolBlock`` runs a symbol graph; fastlazy's runs the
graph of an exported ``-symbol.json`` file.  The graph is kept as data --
its operator nodes in topological order, each naming the
:mod:`fastlazy.ops` (``F``) operator it calls, with its attributes already
parsed -- and :meth:`SymbolBlock.hybrid_forward` walks it.  Traced, the
walk puts the whole graph (branches, residual additions, concatenations,
several inputs and outputs) into the network's one compiled plan; on NumPy
arrays it is the eager path.

Reading and checking the files is :mod:`fastlazy.mxnet.export`'s business
(imported only when a graph is read, so ``import fastlazy`` stays fast);
this module holds the block.
"""

from collections import Counter
from typing import NamedTuple

from ._parameter import Parameter
from .block import Block, HybridBlock
from .errors import FastLazyError, ShapeError

__all__ = ["SymbolBlock", "OpCall", "ParamSpec", "Program"]


class OpCall(NamedTuple):
    """One operator node of the graph, ready to run.

    Attributes
    ----------
    name, op : str
        The node's name (``'dense0_fwd'``) and MXNet operator
        (``'FullyConnected'``), for error messages.
    fn : str or callable
        The name of an operator of ``F`` (``'FullyConnected'``), or a
        module-level function ``fn(F, *data, **kwargs)`` for an MXNet
        operator that is several of ``F``'s (``_rminus_scalar``).
    args : tuple of (str, int)
        The data inputs, as (node name, output index).
    params : tuple of (str, (str, int))
        Keyword inputs: (``F``'s argument name, e.g. ``'weight'``, entry).
    kwargs : dict
        The node's attributes, parsed (``{'num_hidden': 10, ...}``).
    outputs : int
        How many outputs the node has (SliceChannel: several).
    """

    name: str
    op: str
    fn: object
    args: tuple
    params: tuple
    kwargs: dict
    outputs: int


class ParamSpec(NamedTuple):
    """A parameter of the graph: a variable that is not an input.

    ``shape`` has -1 where the file does not say; ``transposed`` for a
    FullyConnected weight (stored (in, out) for the compiled kernels);
    ``label`` says where it is used (``"weight of node 'dense0_fwd'"``).
    """

    name: str
    shape: tuple
    transposed: bool
    label: str


class Program(NamedTuple):
    """A checked graph: what a :class:`SymbolBlock` is built from."""

    source: str
    inputs: tuple           # input variable names, in call order
    ops: tuple              # OpCall, topological order
    heads: tuple            # (node name, output index) per output
    params: tuple           # ParamSpec, in graph order


def _run(F, call, args, params):
    fn = call.fn
    if isinstance(fn, str):
        return getattr(F, fn)(*args, **params, **call.kwargs)
    return fn(F, *args, **params, **call.kwargs)


class SymbolBlock(HybridBlock):
    """A network made from an exported MXNet graph, compiled as one plan.

    Usually made by :meth:`imports` or :func:`fastlazy.load_mxnet_export`.

    Parameters
    ----------
    outputs : str, os.PathLike, bytes or dict
        The graph: a ``-symbol.json`` path, its JSON text, or the parsed
        JSON (fastlazy has no ``Symbol`` type; this stands for Gluon's
        output symbols).
    inputs : str or list of str
        The variables that are the network's inputs, in call order
        (``'data'``); every other variable is a parameter.
    params : ParameterDict, optional
        Parameters to use, by name, instead of new ones.

    Notes
    -----
    The parameters keep the graph's names (``dense0_weight``), which are
    also their keys in :meth:`save_parameters` files.  They are created
    unset, with the shapes the graph states (``-1`` where it does not):
    call :meth:`initialize` or :meth:`load_parameters`, or use
    :meth:`imports` with a parameter file.  ``net(x)`` with several inputs
    is ``net(x, y)``; a graph with several outputs returns a tuple.
    """

    def __init__(self, outputs, inputs, params=None):
        from .mxnet.export import graph_program
        self._setup(graph_program(outputs, inputs), "float32", params)

    # -- construction --------------------------------------------------------

    @classmethod
    def _from_program(cls, program, dtype, params=None, name=None):
        block = cls.__new__(cls)
        block._setup(program, dtype, params, name)
        return block

    def _setup(self, program, dtype, shared=None, name=None):
        # stage every parameter first: nothing is built on error
        staged = []
        for spec in program.params:
            param = None
            if shared is not None and spec.name in shared.keys():
                param = shared[spec.name]
                if param.shape is not None and -1 not in spec.shape:
                    try:
                        param._merge_shape(spec.shape)
                    except ShapeError as exc:
                        raise ShapeError(f"SymbolBlock: the given parameter "
                                         f"{spec.name}, the {spec.label}: "
                                         f"{exc}") from None
            if param is None:
                param = Parameter(spec.name, shape=spec.shape, dtype=dtype,
                                  _storage_transposed=spec.transposed)
            staged.append((spec.name, param))
        # prefix '': the parameters keep the graph's names, as in Gluon
        Block.__init__(self, prefix="")
        object.__setattr__(self, "_name", name or "symbolblock")
        object.__setattr__(self, "_program", program)
        for key, param in staged:
            self._reg_params[key] = param
            self._params._add(param, key)

    @staticmethod
    def imports(symbol_file, input_names, param_file=None, ctx=None,
                allow_missing=False, ignore_extra=False, *, dtype=None):
        """Load an exported graph and its parameters (Gluon's signature).

        Parameters
        ----------
        symbol_file : str or os.PathLike
            The ``-symbol.json`` file.
        input_names : str or list of str
            The graph's input variables, in call order (``'data'``, or
            ``['data0', 'data1']`` for ``net(x, y)``).
        param_file : str or os.PathLike, optional
            The ``.params`` file; without it the parameters are unset
            (call :meth:`initialize`).
        ctx : ignored
            fastlazy computes on the CPU.
        allow_missing, ignore_extra : bool
            Leave parameters the file lacks unset; ignore arrays of the file
            that are no parameter of the graph.
        dtype : {None, 'float32', 'float64'}
            None: the file's (float32 if there is no file).

        Returns
        -------
        SymbolBlock

        Raises
        ------
        UnsupportedOperatorError, ParameterFileError, ParameterShapeError
            As :func:`fastlazy.load_mxnet_export`; nothing is built.
        """
        from .mxnet.export import import_graph
        return import_graph(symbol_file, input_names, param_file,
                            allow_missing=allow_missing,
                            ignore_extra=ignore_extra, dtype=dtype)

    # -- the forward pass ----------------------------------------------------

    def hybrid_forward(self, F, *inputs, **params):
        """Walk the graph: each node's ``F`` operator on its inputs'
        values; returns the head's value, or a tuple for several heads."""
        program = self._program
        if len(inputs) != len(program.inputs):
            raise TypeError(
                f"SymbolBlock '{self.name}' takes {len(program.inputs)} "
                f"input(s) {list(program.inputs)}, got {len(inputs)}")
        values = {(name, 0): x for name, x in zip(program.inputs, inputs)}
        for key, value in params.items():
            values[(key, 0)] = value
        for call in program.ops:
            args = [values[e] for e in call.args]
            kw = {role: values[e] for role, e in call.params}
            try:
                out = _run(F, call, args, kw)
            except FastLazyError as exc:
                raise _at_node(exc, call) from None
            except TypeError as exc:
                from .ops import TraceError
                if type(exc) is not TraceError:
                    raise
                # what the plan cannot express, named by its node
                raise _at_node(exc, call) from None
            if call.outputs == 1:
                values[(call.name, 0)] = out
            else:
                for i, value in enumerate(out):
                    values[(call.name, i)] = value
        outs = tuple(values[h] for h in program.heads)
        return outs[0] if len(outs) == 1 else outs

    # -- Block hooks ---------------------------------------------------------

    def _bf16_weights(self):
        # the weights of the graph's FullyConnected and Convolution nodes
        names = {entry[0] for call in self._program.ops
                 if call.op in ("FullyConnected", "Convolution")
                 for role, entry in call.params if role == "weight"}
        return tuple(p for key, p in self._reg_params.items()
                     if key in names)

    def _replace_param(self, path, old, new):
        # parameter names are not attribute names here (one could be
        # 'forward'): only the registry changes
        key = path[0]
        self._reg_params[key] = new
        self._params._params.pop(old.name, None)
        self._params._params[new.name] = new
        self._structure_changed()

    def __repr__(self):
        program = self._program
        ops = Counter(c.op for c in program.ops)
        kinds = ", ".join(f"{op} x{n}" if n > 1 else op
                          for op, n in ops.most_common())
        heads = [name if i == 0 else f"{name}[{i}]"
                 for name, i in program.heads]
        return (f"SymbolBlock(\n"
                f"  inputs: {', '.join(program.inputs)}\n"
                f"  outputs: {', '.join(heads)}\n"
                f"  {len(program.ops)} operators: {kinds}\n"
                f"  {len(program.params)} parameters\n)")


def _at_node(exc, call):
    """``exc`` with the node named first (same type when possible)."""
    message = f"node '{call.name}' ({call.op}): {exc}"
    try:
        new = type(exc)(message)
    except Exception:       # pragma: no cover - exotic constructor
        return exc
    return new
