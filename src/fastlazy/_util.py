"""Small helpers every layer of fastlazy shares (pure Python, no imports of
the rest of the package, so any module can use them)."""

import sys

import numpy as np

__all__ = ["FLOAT_DTYPES", "bfloat16", "is_bfloat16", "compute_dtype",
           "is_int", "prod"]

#: The dtypes fastlazy computes in.
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class BFloat16Type:
    """The dtype of parameters stored as bfloat16 (``fastlazy.bfloat16``).

    NumPy has no bfloat16, so this stands for it where a parameter reports
    its dtype: it has the ``name`` ('bfloat16'), ``itemsize`` (2) and
    ``str`` a dtype has, and compares equal to the string ``'bfloat16'``
    (and to ``ml_dtypes.bfloat16`` when that package is loaded; fastlazy
    never imports it).  The values are kept as the 16-bit patterns (the
    upper half of a float32); networks compute with them in float32.
    """

    __slots__ = ()
    name = "bfloat16"
    str = "bfloat16"
    itemsize = 2

    def __new__(cls):
        return bfloat16

    def __reduce__(self):
        return (_bfloat16, ())

    def __repr__(self):
        return "bfloat16"

    def __str__(self):
        return "bfloat16"

    def __hash__(self):
        return hash("bfloat16")

    def __eq__(self, other):
        return other is self or is_bfloat16(other)

    def __ne__(self, other):
        return not self.__eq__(other)


bfloat16 = object.__new__(BFloat16Type)


def _bfloat16():
    return bfloat16


def is_bfloat16(dtype):
    """Whether ``dtype`` names bfloat16: ``fastlazy.bfloat16``, the string
    ``'bfloat16'``, or ml_dtypes' bfloat16 type or dtype (recognised only
    when ml_dtypes is already imported)."""
    if dtype is bfloat16:
        return True
    if isinstance(dtype, str):
        return dtype == "bfloat16"
    if "ml_dtypes" in sys.modules:
        ml = sys.modules["ml_dtypes"]
        bf = getattr(ml, "bfloat16", None)
        if bf is not None and (dtype is bf or (isinstance(dtype, np.dtype)
                                               and dtype == np.dtype(bf))):
            return True
    return False


def compute_dtype(dtype):
    """The NumPy dtype arithmetic on values of ``dtype`` runs in: float32
    for bfloat16, else ``np.dtype(dtype)``."""
    return np.dtype(np.float32) if dtype is bfloat16 else np.dtype(dtype)


def is_int(value):
    """True for a Python or NumPy integer that is not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def prod(dims):
    """The product of ``dims`` as a Python int (1 for an empty shape)."""
    p = 1
    for d in dims:
        p *= int(d)
    return p
