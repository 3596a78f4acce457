"""The exception hierarchy of fastlazy.

One root, :class:`FastLazyError`; every concrete class is also the matching
builtin, so ``except ValueError`` keeps working in code written for Gluon.
"""

__all__ = [
    "FastLazyError",
    "DeferredInitializationError",
    "ShapeError",
    "ParameterFileError",
    "ParameterShapeError",
    "UnsupportedOperatorError",
]


class FastLazyError(Exception):
    """Root of every error raised by fastlazy."""


class DeferredInitializationError(FastLazyError, RuntimeError):
    """A parameter was used before its shape was known and it was initialized."""


class ShapeError(FastLazyError, ValueError):
    """A shape does not match what a layer or parameter already knows."""


class ParameterFileError(FastLazyError, ValueError):
    """A parameter file is unreadable, corrupt, or does not fit the network."""


class ParameterShapeError(ParameterFileError, ShapeError):
    """An array in a parameter file contradicts a shape the network knows.

    Both a :class:`ParameterFileError` (the file does not fit the network)
    and a :class:`ShapeError` (a known dimension would have to change), so
    either ``except`` clause catches it.
    """


class UnsupportedOperatorError(FastLazyError, NotImplementedError):
    """An exported MXNet graph uses an operator fastlazy does not implement,
    or has a shape (branches, several inputs or outputs) that a
    :class:`~fastlazy.nn.Sequential` cannot express."""
