"""Containers of branching networks and small wrappers, Gluon-compatible:
``HybridConcurrent``/``Concurrent`` (run every child on the input and
concatenate), ``Identity``, ``HybridLambda``/``Lambda``.  MXNet 1.x keeps
the first three in ``gluon.contrib.nn``; fastlazy has them in ``fl.nn`` and
``fl.contrib.nn``."""

from .block import Block, HybridBlock, Sequential

__all__ = ["HybridConcurrent", "Concurrent", "Identity", "HybridLambda",
           "Lambda"]


class HybridConcurrent(Sequential, HybridBlock):
    """Runs every child on the same input and concatenates their outputs
    along ``axis`` (Gluon's default -1; Inception-style blocks use 1).
    ``add(*blocks)`` as for Sequential."""

    def __init__(self, axis=-1, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        self.axis = axis

    def hybrid_forward(self, F, x):
        return F.concat(*[block(x) for block in self._children.values()],
                        dim=self.axis)

    def forward(self, x):
        return HybridBlock.forward(self, x)

    def _is_plannable(self):
        return HybridBlock._is_plannable(self)

    def _trace_sym(self, x, *more):
        return HybridBlock._trace_sym(self, x, *more)

    def _infer(self, shape, pending):
        return HybridBlock._infer(self, shape, pending)

    def __repr__(self):
        body = "\n".join(f"  ({k}): " + repr(b).replace("\n", "\n  ")
                         for k, b in self._children.items())
        return f"{type(self).__name__}(\n{body}\n)"


class Concurrent(HybridConcurrent):
    """:class:`HybridConcurrent` (every fastlazy network is compiled)."""


class Identity(HybridBlock):
    """Returns its input (a branch that passes the input on)."""

    def hybrid_forward(self, F, x):
        return x

    def __repr__(self):
        return "Identity"


class HybridLambda(HybridBlock):
    """Wraps an operator: ``function`` is the name of one in ``F``
    (``'tanh'``) or a callable ``function(F, x, *args)``."""

    def __init__(self, function, prefix=None):
        super().__init__(prefix=prefix)
        from . import ops
        if isinstance(function, str):
            if not hasattr(ops, function):
                raise ValueError(f"HybridLambda: F has no operator "
                                 f"{function!r}")
            self._func = lambda F, *args: getattr(F, function)(*args)
            self._func_name = function
        elif callable(function):
            self._func = function
            self._func_name = getattr(function, "__name__", "function")
        else:
            raise ValueError(f"HybridLambda: function must be an operator "
                             f"name or a callable, got {function!r}")

    def hybrid_forward(self, F, x, *args):
        return self._func(F, x, *args)

    def __repr__(self):
        return f"{type(self).__name__}({self._func_name})"

    def __getstate__(self):
        state = super().__getstate__()
        if self._func_name != getattr(self._func, "__name__", None):
            state["_func"] = None           # rebuilt from the name
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if self._func is None:
            name = self._func_name
            self._func = lambda F, *args: getattr(F, name)(*args)


class Lambda(Block):
    """Wraps a function of NumPy arrays, run eagerly: ``function`` is the
    name of an operator of ``fl.ops`` or a callable ``function(x, *args)``."""

    def __init__(self, function, prefix=None):
        super().__init__(prefix=prefix)
        from . import ops
        if isinstance(function, str):
            if not hasattr(ops, function):
                raise ValueError(f"Lambda: no operator {function!r}")
            self._func_name = function
            self._func = None
        elif callable(function):
            self._func = function
            self._func_name = getattr(function, "__name__", "function")
        else:
            raise ValueError(f"Lambda: function must be an operator name or "
                             f"a callable, got {function!r}")

    def forward(self, x, *args):
        if self._func is None:
            from . import ops
            return getattr(ops, self._func_name)(x, *args)
        return self._func(x, *args)

    def __repr__(self):
        return f"{type(self).__name__}({self._func_name})"
