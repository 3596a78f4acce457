"""ParameterDict: an ordered name -> Parameter mapping, Gluon-style; and
Constant, a parameter with fixed values."""

import os
import re
from collections import OrderedDict

import numpy as np

from ._parameter import Parameter, _rebuild_parameter
from .errors import DeferredInitializationError, ParameterFileError
from .initializers import Initializer, Uniform

__all__ = ["ParameterDict", "Constant"]


class _ValueInit(Initializer):
    """Writes one fixed array (a :class:`Constant`'s value), whatever the
    parameter's name and random stream."""

    def __init__(self, value):
        self.value = value

    def __call__(self, desc, data):
        data[...] = self.value


class Constant(Parameter):
    """A parameter whose values are fixed (Gluon's ``Constant``): its shape
    and dtype are the value's, ``grad_req`` is ``'null'``, and its own
    initializer writes the value, so ``initialize()`` (also with
    ``force_reinit=True``) sets exactly that value.  ``set_data`` can still
    change it, as in Gluon.  ``summary`` counts it as non-trainable.

    Parameters
    ----------
    name : str
        Full name.
    value : array_like
        The values, stored as float32 as Gluon's ``nd.array`` does (also
        for a float64 NumPy array); ``block.cast('float64')`` converts a
        constant with the rest of the network.
    """

    def __init__(self, name, value):
        arr = np.array(value)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"Constant '{name}': value must be numbers, got "
                            f"{arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        arr.flags.writeable = False
        if arr.ndim == 0 or 0 in arr.shape:
            raise ValueError(f"Constant '{name}': value must be a non-empty "
                             f"array of at least one axis, got shape "
                             f"{arr.shape}")
        super().__init__(name, shape=arr.shape, dtype=arr.dtype,
                         init=_ValueInit(arr), allow_deferred_init=False,
                         grad_req="null")
        self.value = arr

    def __repr__(self):
        return (f"Constant {self.name} (shape={self.shape}, "
                f"dtype={self.dtype.name})")

    def __reduce_ex__(self, protocol):
        # Parameter's reduce rebuilds a Parameter: rebuild a Constant and
        # give it that one's state
        return (_rebuild_constant,
                (self.value, Parameter.__reduce_ex__(self, protocol)[1]))


def _rebuild_constant(value, args):
    plain = _rebuild_parameter(*args)
    const = Constant(plain.name, value)
    const.init = plain.init
    const._restore(plain._snapshot())
    return const


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

    def get_constant(self, name, value=None):
        """The :class:`Constant` ``prefix + name``: an existing or shared
        one, or a new one holding ``value`` (registered like :meth:`get`).

        Raises
        ------
        KeyError
            If there is no such constant and ``value`` is None.
        TypeError
            If ``prefix + name`` is a parameter that is not a Constant.
        ValueError
            If the existing constant holds another value than ``value``.
        """
        full = self._prefix + name
        param = self._params.get(full)
        if param is None and self._shared is not None and full in self._shared:
            param = self._shared[full]
        if param is None:
            if value is None:
                raise KeyError(f"No constant named '{full}'. Please specify "
                               f"value if you want to create a new "
                               f"constant.")
            param = Constant(full, value)
        elif value is not None:
            if not isinstance(param, Constant):
                raise TypeError(f"Parameter '{full}' already exists but it "
                                f"is not a constant; choose another name.")
            new = np.asarray(value, dtype=np.float32)   # as it is stored
            if new.shape != param.value.shape or \
                    not np.array_equal(new, param.value):
                raise ValueError(
                    f"Constant '{full}' already exists but its value "
                    f"doesn't match the new value (shape {param.value.shape}"
                    f" vs {new.shape}); use another name for another "
                    f"value, or omit value to get the existing one.")
        self._params[full] = param
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

    def save(self, filename, strip_prefix=""):
        """Save every parameter to ``filename`` (fastlazy's ``.npz``) under
        its name, with ``strip_prefix`` removed from the front (as Gluon's
        ``ParameterDict.save``).  The file is written whole or not at all.

        Raises
        ------
        ValueError
            If a name does not start with ``strip_prefix``.
        DeferredInitializationError
            If a parameter has no values yet.
        """
        from .io import save_arrays
        arrays = OrderedDict()
        for param in self._params.values():
            if not param.name.startswith(strip_prefix):
                raise ValueError(
                    f"ParameterDict.save: prefix '{strip_prefix}' is to be "
                    f"stripped before saving, but parameter name "
                    f"'{param.name}' does not start with it. The blocks may "
                    f"share parameters from other blocks, or children were "
                    f"created outside 'with name_scope()'; pass the prefix "
                    f"all names share (or '').")
            if not param.is_initialized:
                raise DeferredInitializationError(
                    f"ParameterDict.save: {param._not_ready_message()}")
            arrays[param.name[len(strip_prefix):]] = param.data()
        save_arrays(filename, arrays)

    def load(self, filename, ctx=None, allow_missing=False,
             ignore_extra=False, restore_prefix="", cast_dtype=False,
             dtype_source="current"):
        """Load parameters by name from a file written by :meth:`save`, by
        Gluon's ``ParameterDict.save`` / ``export`` (MXNet ``.params``:
        ``arg:``/``aux:`` prefixes are dropped) or by ``np.savez``.

        Parameters
        ----------
        filename : str or os.PathLike
        ctx : ignored (fastlazy runs on the CPU)
        allow_missing : bool
            Leave parameters the file lacks as they are.
        ignore_extra : bool
            Skip keys of the file that name no parameter here.
        restore_prefix : str
            Prepended to every key of the file before matching; every
            parameter name here must start with it.
        cast_dtype, dtype_source
            As in :meth:`fastlazy.block.Block.load_parameters`.

        Raises
        ------
        ParameterFileError
            If the file is unreadable, a parameter is missing, a key is
            extra, or a dtype differs without ``cast_dtype``.
        ParameterShapeError
            If an array contradicts a known shape.

        A deferred parameter takes its shape from the file.  On any error
        no parameter changes.
        """
        from .io import assign_arrays, key_hint, load_arrays
        if dtype_source not in ("current", "saved"):
            raise ValueError(f"dtype_source must be 'current' or 'saved', "
                             f"got {dtype_source!r}")
        for name in self._params:
            if not name.startswith(restore_prefix):
                raise ValueError(
                    f"ParameterDict.load: restore_prefix is "
                    f"'{restore_prefix}' but parameter name '{name}' does "
                    f"not start with it; pass the prefix every name here "
                    f"shares (or '').")
        arrays = load_arrays(filename)
        source = os.fsdecode(filename)
        keys = list(arrays)
        if any(":" in key for key in keys):
            from .mxnet.names import bare_keys
            bare = bare_keys(keys, source)
        else:
            bare = OrderedDict((key, key) for key in keys)
        by_name = OrderedDict()
        for key, name in bare.items():
            by_name[restore_prefix + name] = key
        n = len(restore_prefix)
        if not allow_missing:
            missing = [name for name in self._params if name not in by_name]
            if missing:
                raise ParameterFileError(
                    f"{source}: parameter '{missing[0][n:]}' is missing in "
                    f"the file ({len(missing)} missing), which contains "
                    f"{key_hint(bare.values())}. Make sure the source and "
                    f"target networks have the same prefix (or pass "
                    f"restore_prefix), or pass allow_missing=True.")
        if not ignore_extra:
            extra = [name for name in by_name if name not in self._params]
            if extra:
                raise ParameterFileError(
                    f"{source}: parameter '{extra[0][n:]}' of the file is "
                    f"not in this ParameterDict ({len(extra)} such keys; it "
                    f"has {key_hint(self._params)}). Pass ignore_extra=True "
                    f"to skip them, or restore_prefix to match the names.")
        entries = [(name, arrays[key], repr(key))
                   for name, key in by_name.items() if name in self._params]
        assign_arrays(_NamedParams(self), entries, source, cast_dtype,
                      dtype_source)

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


class _NamedParams:
    """A ParameterDict seen as :func:`fastlazy.io.assign_arrays` sees a
    block: parameters keyed by their names."""

    def __init__(self, pdict):
        self._pdict = pdict
        self.name = f"ParameterDict '{pdict.prefix}'"

    def _collect_params_with_prefix(self):
        return OrderedDict(self._pdict.items())


def _shape_tuple(shape):
    from ._parameter import normalize_shape
    return normalize_shape(shape)
