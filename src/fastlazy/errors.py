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
    "OutputError",
    "PredictInterrupted",
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
    """A model file -- an exported MXNet graph, an ONNX model -- uses an
    operator fastlazy does not implement, or uses one in a way fastlazy
    cannot reproduce (an attribute value, a computation across the batch
    axis).  A :class:`NotImplementedError`: the file is valid, fastlazy
    lacks something.  ``fastlazy.onnx.load`` names every such node of a
    model in one message (node name, operator, opset, and why)."""


class OutputError(FastLazyError, ValueError):
    """``net(x, out=...)`` cannot write the result into ``out``: not an
    array (or, for a network with several outputs, not a tuple of them), of
    another dtype or shape than the result, not C-contiguous, read-only, or
    sharing memory with an input, another output or a parameter."""


class PredictInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped :func:`fastlazy.predict.predict` between two chunks.

    A :class:`KeyboardInterrupt` (not a :class:`FastLazyError`), so that
    ``except Exception`` does not swallow the user's Ctrl-C.

    Attributes
    ----------
    rows_done : int
        Rows finished: ``out[:rows_done]`` holds their results, rows after
        it are untouched (or, in a new array, unset).
    rows_total : int or None
        Rows in the input (None for an iterable of chunks).
    out : ndarray or None
        The output array (the caller's ``out``, or the new one; for an
        iterable without ``out``, the finished rows only).
    """

    def __init__(self, rows_done, rows_total, out):
        of = "" if rows_total is None else f" of {rows_total}"
        super().__init__(
            f"predict interrupted after {rows_done}{of} rows: "
            f"out[:{rows_done}] holds their results (the exception's .out "
            f"and .rows_done give them)")
        self.rows_done = rows_done
        self.rows_total = rows_total
        self.out = out

    def __reduce__(self):
        return type(self), (self.rows_done, self.rows_total, self.out)
