"""Saving and loading parameters under structural keys.

The native format is NumPy ``.npz`` with keys such as ``'0.weight'`` and
``'1.bias'`` -- the block's place in the network, never a global name
counter -- so a file does not depend on how many blocks were created before.
MXNet Gluon ``.params`` files are read too (not written), without MXNet.
"""

import os
import tempfile
import zipfile
from collections import OrderedDict

import numpy as np

from .errors import ParameterFileError, ShapeError

__all__ = ["save_arrays", "load_arrays", "load_into"]

_ZIP_MAGIC = b"PK\x03\x04"
_MXNET_MAGIC = (0x112).to_bytes(8, "little")


def save_arrays(filename, arrays):
    """Write ``arrays`` (key -> ndarray) to ``filename`` as ``.npz``,
    through a temporary file and a rename: the file is whole or untouched.
    Unlike ``numpy.savez``, the name is used exactly as given."""
    filename = os.fspath(filename)
    folder = os.path.dirname(os.path.abspath(filename))
    fd, tmp = tempfile.mkstemp(prefix=".fastlazy-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **{k: np.ascontiguousarray(v)
                            for k, v in arrays.items()})
        os.replace(tmp, filename)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_arrays(filename):
    """Read a parameter file (fastlazy ``.npz`` or MXNet ``.params``) into
    an ordered dict key -> ndarray."""
    filename = os.fspath(filename)
    with open(filename, "rb") as fh:
        head = fh.read(8)
    if head[:4] == _ZIP_MAGIC:
        try:
            with np.load(filename, allow_pickle=False) as npz:
                return OrderedDict((k, npz[k]) for k in npz.files)
        except (zipfile.BadZipFile, ValueError, OSError, EOFError,
                KeyError) as exc:
            raise ParameterFileError(
                f"{filename}: not a readable .npz parameter file "
                f"({type(exc).__name__}: {exc})") from None
    if head == _MXNET_MAGIC:
        from . import _mxnet
        return OrderedDict(_mxnet.read_params(filename))
    raise ParameterFileError(
        f"{filename}: not a parameter file: it starts with {head!r}, "
        f"neither a NumPy .npz (PK\\x03\\x04) nor an MXNet .params file "
        f"(magic 0x112)")


def _keys_hint(keys):
    keys = list(keys)
    return ", ".join(keys[:8]) + (", ..." if len(keys) > 8 else "")


def load_into(block, filename, allow_missing=False, ignore_extra=False,
              cast_dtype=False, dtype_source="current"):
    """Load ``filename`` into ``block``: check everything, then copy; on any
    error no parameter changes."""
    if dtype_source not in ("current", "saved"):
        raise ValueError(f"dtype_source must be 'current' or 'saved', got "
                         f"{dtype_source!r}")
    arrays = load_arrays(filename)
    params = block._collect_params_with_prefix()
    name = os.fspath(filename)
    if not allow_missing:
        # a shared parameter has several keys; a file written with
        # deduplicate=True holds only the first, which is enough
        keys_of = {}
        for key, param in params.items():
            keys_of.setdefault(id(param), []).append(key)
        missing = [k for k, p in params.items()
                   if not any(s in arrays for s in keys_of[id(p)])]
        if missing:
            raise ParameterFileError(
                f"{name}: parameter '{missing[0]}' "
                f"({params[missing[0]].name}) of {block.name} is not in the "
                f"file ({len(missing)} missing; the file has: "
                f"{_keys_hint(arrays)}). Pass allow_missing=True to keep "
                f"those parameters as they are.")
    if not ignore_extra:
        extra = [k for k in arrays if k not in params]
        if extra:
            raise ParameterFileError(
                f"{name}: the file has parameter '{extra[0]}', which "
                f"{block.name} does not have ({len(extra)} such keys; the "
                f"network has: {_keys_hint(params)}). Pass "
                f"ignore_extra=True to skip them.")
    staged = []
    for key, param in params.items():
        if key not in arrays:
            continue
        arr = arrays[key]
        if arr.dtype.kind not in "biuf":
            raise ParameterFileError(f"{name}: '{key}' has dtype {arr.dtype}, "
                                     f"not numbers")
        if arr.dtype != param.dtype:
            if dtype_source == "saved":
                if arr.dtype not in (np.float32, np.float64):
                    raise ParameterFileError(
                        f"{name}: '{key}' is {arr.dtype}; a parameter can "
                        f"only take float32 or float64")
            elif not cast_dtype:
                raise ParameterFileError(
                    f"{name}: '{key}' ({param.name}) is {arr.dtype} in the "
                    f"file but {param.dtype} in the network. Pass "
                    f"cast_dtype=True to convert it, or build the network "
                    f"with dtype='{arr.dtype}'.")
        try:
            param._merge_shape(tuple(int(d) for d in arr.shape))
        except ShapeError:
            raise ParameterFileError(
                f"{name}: '{key}' has shape {arr.shape} in the file, but "
                f"parameter {param.name} of {block.name} has shape "
                f"{param.shape}") from None
        if any(d == 0 for d in arr.shape):
            raise ParameterFileError(f"{name}: '{key}' is empty (shape "
                                     f"{arr.shape})")
        staged.append((param, arr))
    snaps = [(p, p._snapshot(copy_values=True)) for p in params.values()]
    try:
        for param, arr in staged:
            if dtype_source == "saved" and arr.dtype != param.dtype:
                param.cast(arr.dtype)
            param.set_data(arr)
    except BaseException:
        for p, snap in snaps:
            p._restore(snap)
        raise
