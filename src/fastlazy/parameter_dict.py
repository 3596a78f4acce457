"""ParameterDict: an ordered name -> Parameter mapping, Gluon-style."""

import re
from collections import OrderedDict

from ._parameter import Parameter
from .initializers import Uniform

__all__ = ["ParameterDict"]


class ParameterDict:
    """An ordered dictionary of :class:`Parameter`, keyed by full name.

    Parameters
    ----------
    prefix : str
        Prefix of the names of parameters made by :meth:`get`.
    shared : ParameterDict, optional
        Parameters looked up here first, so blocks can share them.
    """

    def __init__(self, prefix="", shared=None):
        self._prefix = prefix
        self._params = OrderedDict()
        self._shared = shared
        # structural key ('0.weight') of each entry, when known
        self._structural = {}

    @property
    def prefix(self):
        return self._prefix

    def get(self, name, **kwargs):
        """The parameter ``prefix + name``: an existing or shared one, or a
        new :class:`Parameter` made with ``kwargs``."""
        full = self._prefix + name
        param = self._params.get(full)
        if param is None and self._shared is not None and full in self._shared:
            param = self._shared[full]
            self._params[full] = param
        if param is None:
            param = Parameter(full, **kwargs)
            self._params[full] = param
        elif "shape" in kwargs and kwargs["shape"] is not None:
            # a shared parameter must fit the new block: complete or check
            param.shape = param._merge_shape(_shape_tuple(kwargs["shape"]))
        return param

    def _add(self, param, structural=None):
        self._params[param.name] = param
        if structural is not None:
            self._structural.setdefault(param.name, structural)

    def update(self, other):
        """Add the parameters of ``other`` (a ParameterDict or mapping)."""
        for name, param in other.items():
            existing = self._params.get(name)
            if existing is not None and existing is not param:
                raise ValueError(
                    f"cannot update ParameterDict '{self._prefix}': another "
                    f"parameter is already named '{name}'")
            self._params[name] = param
        if isinstance(other, ParameterDict):
            for name, key in other._structural.items():
                self._structural.setdefault(name, key)

    def structural_key(self, name):
        """The structural key ('0.weight') of parameter ``name``, if known."""
        return self._structural.get(name)

    def select(self, pattern):
        """A new ParameterDict of the entries whose name matches ``pattern``."""
        regex = re.compile(pattern)
        out = ParameterDict(self._prefix)
        for name, param in self._params.items():
            if regex.match(name):
                out._add(param, self._structural.get(name))
        return out

    def initialize(self, init=None, ctx=None, verbose=False,
                   force_reinit=False):
        """Initialize every parameter (``init`` is the default initializer;
        a parameter's own ``init`` wins).  See :meth:`Parameter.initialize`.

        One transaction: if an initializer fails (or is not one) part-way,
        every parameter is left as it was -- state, shape, values (also
        those ``force_reinit`` had already overwritten) and the initializer
        a deferred parameter waits with.

        This is one ``initialize()`` call for the random streams (see
        :mod:`fastlazy.random`): each parameter's values depend on the seed,
        on the number of this call since the seed, and on its structural
        key."""
        from . import random as _random
        default = init if init is not None else Uniform()
        call = _random.new_call()
        params = list(self._params.items())
        snaps = [(p, p._snapshot(copy_values=force_reinit))
                 for _, p in params]
        try:
            for name, param in params:
                key = (call, self._structural.get(name, name))
                param.initialize(None, default, force_reinit=force_reinit,
                                 ctx=ctx, _key=key)
        except BaseException:
            for param, snap in snaps:
                param._restore(snap)
            raise

    def setattr(self, name, value):
        """Set attribute ``name`` on every parameter (e.g. ``grad_req``)."""
        for param in self._params.values():
            setattr(param, name, value)

    def zero_grad(self):
        """No-op: fastlazy is inference-only and keeps no gradients."""

    # -- mapping protocol --------------------------------------------------

    def __getitem__(self, name):
        try:
            return self._params[name]
        except KeyError:
            known = ", ".join(list(self._params)[:8])
            raise KeyError(f"no parameter named {name!r} in ParameterDict "
                           f"'{self._prefix}' (has: {known}"
                           f"{', ...' if len(self._params) > 8 else ''})") \
                from None

    def __contains__(self, name):
        return name in self._params

    def __iter__(self):
        return iter(self._params)

    def __len__(self):
        return len(self._params)

    def keys(self):
        return self._params.keys()

    def values(self):
        return self._params.values()

    def items(self):
        return self._params.items()

    def __repr__(self):
        name = self._prefix + " " if self._prefix else ""
        body = "\n".join(f"  {p!r}" for p in self._params.values())
        return f"{name}(\n{body}\n)"


def _shape_tuple(shape):
    from ._parameter import normalize_shape
    return normalize_shape(shape)
