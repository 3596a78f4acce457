"""Small helpers every layer of fastlazy shares (pure Python, no imports of
the rest of the package, so any module can use them)."""

import numpy as np

__all__ = ["FLOAT_DTYPES", "is_int", "prod"]

#: The dtypes fastlazy computes in.
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def is_int(value):
    """True for a Python or NumPy integer that is not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def prod(dims):
    """The product of ``dims`` as a Python int (1 for an empty shape)."""
    p = 1
    for d in dims:
        p *= int(d)
    return p
