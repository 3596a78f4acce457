"""Initializers, Gluon-compatible (``fl.init``).

Subclass :class:`Initializer` and override ``_init_weight(name, data)`` (and
optionally ``_init_bias``, ``_init_default``); ``data`` is the writable array
to fill in place.  Built-in initializers fill each parameter with one
vectorised NumPy call, from a random stream keyed by the seed and the
parameter's structural place in the network (see :mod:`fastlazy.random`).
"""

import math

import numpy as np

from . import random as _random
from ._util import FLOAT_DTYPES, prod

__all__ = ["Initializer", "InitDesc", "Uniform", "Normal", "Constant", "Zero",
           "One", "Xavier", "MSRAPrelu", "create"]


class InitDesc(str):
    """The name of the parameter being initialized (a ``str``), carrying the
    key of its random stream."""

    def __new__(cls, name, key=None, attrs=None):
        obj = super().__new__(cls, name)
        obj.key = key
        obj.attrs = attrs or {}
        return obj

    def rng(self):
        """The numpy Generator of this parameter's random stream."""
        key = self.key if self.key is not None else _random.make_key(str(self))
        return _random.generator(key)


def _fill_view(data):
    """A C-contiguous view of ``data`` that shares its memory, or None."""
    if data.flags.c_contiguous:
        return data
    if data.flags.f_contiguous:
        return data.T
    return None


class Initializer:
    """Base class of initializers.

    ``init(name, data)`` dispatches on the parameter name as Gluon does:
    ``*weight`` -> ``_init_weight``, ``*bias`` -> ``_init_bias`` (zeros),
    ``*gamma`` -> ones, ``*beta`` -> zeros, ``*running_mean`` /
    ``*moving_mean`` -> zeros, ``*running_var`` / ``*moving_var`` -> ones,
    anything else -> ``_init_default``.
    """

    def __call__(self, desc, data):
        if not isinstance(desc, InitDesc):
            desc = InitDesc(str(desc))
        if not isinstance(data, np.ndarray):
            raise TypeError(f"{type(self).__name__}: data must be a numpy "
                            f"array, got {type(data).__name__}")
        name = str(desc)
        if name.endswith("weight"):
            self._init_weight(desc, data)
        elif name.endswith("bias"):
            self._init_bias(desc, data)
        elif name.endswith("gamma"):
            self._init_gamma(desc, data)
        elif name.endswith("beta"):
            self._init_beta(desc, data)
        elif name.endswith(("running_mean", "moving_mean")):
            data[...] = 0
        elif name.endswith(("running_var", "moving_var")):
            data[...] = 1
        else:
            self._init_default(desc, data)

    def _init_weight(self, name, data):
        raise NotImplementedError(
            f"{type(self).__name__} must override _init_weight(name, data) "
            f"to initialize '{name}'")

    def _init_bias(self, name, data):
        data[...] = 0

    def _init_gamma(self, name, data):
        data[...] = 1

    def _init_beta(self, name, data):
        data[...] = 0

    def _init_default(self, name, data):
        raise ValueError(
            f"{type(self).__name__}: no default initialization for "
            f"'{name}': names ending in weight, bias, gamma, beta, "
            f"running_mean and running_var are recognised. Give the "
            f"parameter its own initializer (e.g. init=fl.init.Uniform()).")

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other):
        # by value, attribute by attribute: two Constant(np.array(...)) are
        # equal when their arrays are (comparing the attribute dicts
        # directly raised "truth value of an array is ambiguous")
        if type(self) is not type(other):
            return False
        mine, theirs = vars(self), vars(other)
        return mine.keys() == theirs.keys() and all(
            _comparable(mine[k]) == _comparable(theirs[k]) for k in mine)

    def __hash__(self):
        items = []
        for key, value in sorted(vars(self).items()):
            value = _comparable(value)
            try:
                hash(value)
            except TypeError:
                # an unhashable value (a list) hashes by its type only;
                # __eq__ still tells such initializers apart
                value = type(value)
            items.append((key, value))
        return hash((type(self), tuple(items)))


def _comparable(value):
    """``value``, or for an array a hashable tuple that is equal exactly
    when shape, dtype and every byte are: equality and hash must agree, so
    arrays compare by bytes (a NaN equals itself, 0.0 differs from -0.0)."""
    if isinstance(value, np.ndarray):
        return ("ndarray", value.shape, value.dtype.str, value.tobytes())
    return value


def _uniform(desc, data, low, high):
    rng = desc.rng() if isinstance(desc, InitDesc) else InitDesc(desc).rng()
    view = _fill_view(data)
    if view is not None and data.dtype in FLOAT_DTYPES:
        rng.random(out=view, dtype=view.dtype)
        view *= high - low
        view += low
    else:
        data[...] = rng.uniform(low, high, size=data.shape)


def _normal(desc, data, sigma):
    rng = desc.rng() if isinstance(desc, InitDesc) else InitDesc(desc).rng()
    view = _fill_view(data)
    if view is not None and data.dtype in FLOAT_DTYPES:
        rng.standard_normal(out=view, dtype=view.dtype)
        view *= sigma
    else:
        data[...] = rng.normal(0.0, sigma, size=data.shape)


class Uniform(Initializer):
    """Uniform on ``[-scale, scale]``.

    Biases given this initializer (``bias_initializer='uniform'``) are drawn
    from it too, as in Gluon; Dense biases default to ``'zeros'``.
    """

    def __init__(self, scale=0.07):
        self.scale = float(scale)

    def _init_weight(self, name, data):
        _uniform(name, data, -self.scale, self.scale)

    _init_default = _init_bias = _init_weight


class Normal(Initializer):
    """Normal with mean 0 and standard deviation ``sigma``.

    Biases given this initializer are drawn from it too, as in Gluon.
    """

    def __init__(self, sigma=0.01):
        self.sigma = float(sigma)

    def _init_weight(self, name, data):
        _normal(name, data, self.sigma)

    _init_default = _init_bias = _init_weight


class Constant(Initializer):
    """Every value set to ``value`` (a scalar or an array that broadcasts)."""

    def __init__(self, value):
        self.value = value

    def _init_weight(self, name, data):
        data[...] = self.value

    _init_default = _init_bias = _init_gamma = _init_beta = _init_weight


class Zero(Constant):
    """All zeros."""

    def __init__(self):
        super().__init__(0.0)


class One(Constant):
    """All ones."""

    def __init__(self):
        super().__init__(1.0)


def _fans(name, shape):
    if len(shape) < 2:
        raise ValueError(
            f"cannot compute fan-in/fan-out of '{name}' with shape {shape}: "
            f"Xavier and MSRAPrelu need a parameter with at least 2 "
            f"dimensions; give it another initializer")
    hw = prod(shape[2:])
    return shape[1] * hw, shape[0] * hw


def _factor(name, factor_type, fan_in, fan_out):
    if factor_type == "avg":
        return (fan_in + fan_out) / 2.0
    if factor_type == "in":
        return float(fan_in)
    if factor_type == "out":
        return float(fan_out)
    raise ValueError(f"initializing '{name}': factor_type must be 'avg', "
                     f"'in' or 'out', got {factor_type!r}")


class Xavier(Initializer):
    """Xavier/Glorot: scale = sqrt(magnitude / factor) with factor the
    average, input or output fan."""

    def __init__(self, rnd_type="uniform", factor_type="avg", magnitude=3):
        if rnd_type not in ("uniform", "gaussian"):
            raise ValueError(f"Xavier: rnd_type must be 'uniform' or "
                             f"'gaussian', got {rnd_type!r}")
        if factor_type not in ("avg", "in", "out"):
            raise ValueError(f"Xavier: factor_type must be 'avg', 'in' or "
                             f"'out', got {factor_type!r}")
        self.rnd_type = rnd_type
        self.factor_type = factor_type
        self.magnitude = float(magnitude)

    def _init_weight(self, name, data):
        fan_in, fan_out = _fans(name, data.shape)
        scale = math.sqrt(self.magnitude /
                          _factor(name, self.factor_type, fan_in, fan_out))
        if self.rnd_type == "uniform":
            _uniform(name, data, -scale, scale)
        else:
            _normal(name, data, scale)


class MSRAPrelu(Xavier):
    """He/MSRA initialization for PReLU/ReLU: Gaussian with
    magnitude 2 / (1 + slope**2)."""

    def __init__(self, factor_type="avg", slope=0.25):
        super().__init__("gaussian", factor_type, 2.0 / (1 + slope ** 2))
        self.slope = float(slope)


_BY_NAME = {
    "zeros": Zero, "zero": Zero, "ones": One, "one": One,
    "uniform": Uniform, "normal": Normal, "xavier": Xavier,
    "msraprelu": MSRAPrelu,
}


def create(init):
    """An Initializer from an Initializer, a name ('zeros', 'ones', ...) or a
    class."""
    if isinstance(init, Initializer):
        return init
    if isinstance(init, type) and issubclass(init, Initializer):
        return init()
    if isinstance(init, str):
        try:
            return _BY_NAME[init.lower()]()
        except KeyError:
            raise ValueError(f"unknown initializer {init!r}; known names: "
                             f"{', '.join(sorted(_BY_NAME))}") from None
    raise TypeError(f"expected an Initializer or its name, got "
                    f"{type(init).__name__}")
