"""Saving and loading parameters under structural keys.

The native format is NumPy ``.npz`` with keys such as ``'0.weight'`` and
``'1.bias'`` -- the block's place in the network, never a global name
counter -- so a file does not depend on how many blocks were created before.
MXNet Gluon ``.params`` files are read too (not written), without MXNet:
:func:`load_arrays` tells the formats apart by their first bytes and hands
MXNet's to :mod:`fastlazy.mxnet.format`.

How :func:`load_into` matches the keys of a file to a network's parameters:
keys that are structural keys (``'0.weight'``, ``'0.1.running_mean'``: what
``save_parameters`` writes in fastlazy and in Gluon) are used as they are.
A file is read this way when every key is a structural key of the network
or any key contains a ``'.'``.  Any other file is keyed the Gluon 1.x way,
by parameter name (``'dense0_weight'``), and :mod:`fastlazy.mxnet.names`
matches it.  Either way, an ``arg:``/``aux:`` prefix (of a file written by
MXNet's ``export``) is dropped first.

The MXNet modules are imported only when a file needs them, so neither
``import fastlazy`` nor loading a file of structural keys pays for them.
"""

import os
import struct
import tempfile
import zipfile
import zlib
from collections import OrderedDict

import numpy as np

from ._util import FLOAT_DTYPES, is_bfloat16, prod
from .errors import ParameterFileError, ParameterShapeError, ShapeError

__all__ = ["save_arrays", "load_arrays", "load_into", "assign_arrays"]

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
    """Read a parameter file, fastlazy ``.npz`` or MXNet ``.params``.

    Parameters
    ----------
    filename : str or os.PathLike
        The format is recognised by the first bytes, not by the name.

    Returns
    -------
    OrderedDict of str to numpy.ndarray
        Arrays by key, in file order, keys exactly as stored.

    Raises
    ------
    ParameterFileError
        If the file is neither format, or is damaged (truncated, absurd
        sizes, bad magic numbers); the message names the file and, for
        MXNet files, the record or key and the byte offset.
    OSError
        If the file cannot be read.
    """
    filename = os.fspath(filename)
    with open(filename, "rb") as fh:
        head = fh.read(8)
    if head[:4] == _ZIP_MAGIC:
        try:
            return _read_npz(filename)
        except ParameterFileError:
            raise
        except (zipfile.BadZipFile, ValueError, OSError, EOFError,
                KeyError, NotImplementedError, RuntimeError, struct.error,
                zlib.error, OverflowError) as exc:
            # zipfile raises NotImplementedError for an unknown compression
            # method or version, RuntimeError for an encrypted member
            raise ParameterFileError(
                f"{filename}: not a readable .npz parameter file "
                f"({type(exc).__name__}: {exc})") from None
    if head == _MXNET_MAGIC:
        from .mxnet.format import read_params
        return OrderedDict(read_params(filename))
    raise ParameterFileError(
        f"{filename}: not a parameter file: it starts with {head!r}, "
        f"neither a NumPy .npz (PK\\x03\\x04) nor an MXNet .params file "
        f"(magic 0x112)")


# Most bytes one byte of a deflate stream can expand to (the format's limit
# is 1032:1): bounds what a compressed .npz member can honestly hold.
_DEFLATE_RATIO = 1032


def _read_npz(filename):
    """The arrays of an .npz file, checked before anything is allocated:
    each member must be an ``.npy`` array of numbers whose header claims no
    more bytes than the member (and the file) can hold, so a damaged or
    hostile header cannot make us allocate what it says."""
    out = OrderedDict()
    total = os.path.getsize(filename)
    with zipfile.ZipFile(filename) as zf:
        for info in zf.infolist():
            name = info.filename
            if not name.endswith(".npy"):
                raise ParameterFileError(
                    f"{filename}: member {name!r} is not a .npy array")
            key = name[:-4]
            if key in out:
                raise ParameterFileError(
                    f"{filename}: key {key!r} appears twice")
            room = min(info.compress_size, total)
            if info.compress_type != zipfile.ZIP_STORED:
                room *= _DEFLATE_RATIO
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
                else:
                    raise ParameterFileError(
                        f"{filename}: member {name!r} has .npy format "
                        f"version {version}; 1.0 and 2.0 are read")
                if dtype.hasobject or dtype.kind not in "biuf":
                    raise ParameterFileError(
                        f"{filename}: {key!r} has dtype {dtype}; "
                        f"parameters hold numbers")
                claim = prod(shape) * dtype.itemsize
                if claim > min(info.file_size, room):
                    raise ParameterFileError(
                        f"{filename}: {key!r} claims shape {shape} "
                        f"({claim} bytes of {dtype}), more than its "
                        f"{min(info.file_size, room)}-byte member holds")
            with zf.open(info) as fh:
                out[key] = np.lib.format.read_array(fh, allow_pickle=False)
    return out


def key_hint(keys):
    """The first six of ``keys`` for an error message (``'a', 'b', ...``)."""
    keys = list(keys)
    return ", ".join(repr(k) for k in keys[:6]) + \
        (", ..." if len(keys) > 6 else "")


def unique_params(params):
    """``[(Parameter, [structural keys])]``: a shared parameter once, with
    every key it is reachable under, in network order."""
    out = OrderedDict()
    for key, param in params.items():
        out.setdefault(id(param), (param, []))[1].append(key)
    return list(out.values())


def _match_structural(block, params, bare, source, allow_missing,
                      ignore_extra):
    found = {name: key for key, name in bare.items() if name in params}
    if not ignore_extra and len(found) < len(bare):
        extra = [key for key, name in bare.items() if name not in params]
        raise ParameterFileError(
            f"{source}: the file has parameter {extra[0]!r}, which "
            f"{block.name} does not have ({len(extra)} such keys; the "
            f"network has {key_hint(params)}). The file was saved from a "
            f"network of another structure: build the same layers with the "
            f"same nesting, or pass ignore_extra=True to skip such keys.")
    if not allow_missing:
        missing = [keys for _, keys in unique_params(params)
                   if not any(k in found for k in keys)]
        if missing:
            key = missing[0][0]
            raise ParameterFileError(
                f"{source}: parameter {key!r} ({params[key].name}) of "
                f"{block.name} is not in the file ({len(missing)} missing; "
                f"the file has {key_hint(bare)}). Pass allow_missing=True to "
                f"keep those parameters as they are.")
    return [(name, key) for key, name in bare.items() if name in params]


def _match_keys(block, keys, source, allow_missing, ignore_extra):
    """``[(structural key, file key)]`` for the keys of a file; see the
    module docstring for the rules."""
    params = block._collect_params_with_prefix()
    if any(":" in key for key in keys):
        # a key without a colon has no arg:/aux: prefix to drop, so
        # fastlazy's own files never need the MXNet code
        from .mxnet.names import bare_keys
        bare = bare_keys(keys, source)
    else:
        bare = OrderedDict((key, key) for key in keys)
    names = bare.values()
    if all(n in params for n in names) or any("." in n for n in names):
        return _match_structural(block, params, bare, source, allow_missing,
                                 ignore_extra)
    from .mxnet.names import match_names
    return match_names(block, params, bare, source, allow_missing,
                       ignore_extra)


def _float_name(dtype):
    return f"'{dtype.name}'" if dtype in FLOAT_DTYPES else None


def assign_arrays(block, entries, source, cast_dtype=False,
                  dtype_source="current"):
    """Check every array against its parameter, then copy them all in.

    Parameters
    ----------
    block : Block
        The network; arrays fill its deferred shapes.
    entries : list of (str, numpy.ndarray, str)
        ``(structural key, array, label)``; ``label`` names the array in
        error messages (e.g. the file's key, ``"'arg:dense0_weight'"``).
    source : str
        The file, for error messages.
    cast_dtype : bool
        Convert an array whose dtype differs from its parameter's;
        otherwise that is an error (as in Gluon) -- except for a bfloat16
        parameter, which takes any float array, rounded.
    dtype_source : {'current', 'saved'}
        With ``cast_dtype``: convert the values to the parameter's dtype
        ('current') or the parameter to the file's dtype ('saved', float32
        and float64 only).

    Raises
    ------
    ParameterShapeError
        If an array's shape contradicts a known dimension of its parameter.
    ParameterFileError
        If an array is empty, not numeric, or of another dtype without
        ``cast_dtype``.

    Notes
    -----
    Everything is checked before anything changes, and a failure while
    copying restores every parameter: on any error the network is as it
    was, shapes, states, dtypes and values.
    """
    if dtype_source not in ("current", "saved"):
        raise ValueError(f"dtype_source must be 'current' or 'saved', got "
                         f"{dtype_source!r}")
    params = block._collect_params_with_prefix()
    staged = []
    shapes = {}
    for key, arr, label in entries:
        param = params[key]
        where = f"{source}: {label} (parameter {param.name} of {block.name})"
        if arr.dtype.kind not in "iuf":
            raise ParameterFileError(f"{where} has dtype {arr.dtype}; "
                                     f"parameters hold integers or floats")
        target = param.dtype
        if is_bfloat16(param.dtype) and arr.dtype.kind == "f" and not (
                cast_dtype and dtype_source == "saved"):
            # files hold no bfloat16: a float array is rounded to it (the
            # float32 a bfloat16 network saves comes back exactly)
            pass
        elif arr.dtype != param.dtype:
            if not cast_dtype:
                fixes = [f"pass cast_dtype=True to convert the values to "
                         f"{param.dtype.name}"]
                if _float_name(arr.dtype):
                    fixes.append(f"build the network with "
                                 f"dtype={_float_name(arr.dtype)}")
                raise ParameterFileError(
                    f"{where} is {arr.dtype.name} in the file but "
                    f"{param.dtype.name} in the network: "
                    f"{', or '.join(fixes)}.")
            if dtype_source == "saved":
                if not _float_name(arr.dtype):
                    raise ParameterFileError(
                        f"{where} is {arr.dtype.name}; dtype_source='saved' "
                        f"would make the parameter {arr.dtype.name}, but "
                        f"parameters are float32 or float64. Use "
                        f"dtype_source='current' to convert the values to "
                        f"{param.dtype.name}.")
                target = arr.dtype
        shape = tuple(int(d) for d in arr.shape)
        if 0 in shape:
            raise ParameterFileError(f"{where} is empty (shape {shape})")
        if id(param) in shapes:
            if shapes[id(param)] != shape:
                raise ParameterShapeError(
                    f"{where} has shape {shape}, but the same (shared) "
                    f"parameter has shape {shapes[id(param)]} under another "
                    f"key of the file")
        else:
            try:
                param._merge_shape(shape)
            except ShapeError:
                unknown = " (-1: not known yet)" if -1 in (
                    param.shape or ()) else ""
                raise ParameterShapeError(
                    f"{where} has shape {shape} in the file, but the "
                    f"network's parameter has shape {param.shape}{unknown}. "
                    f"The file was saved from a network with other layer "
                    f"sizes: build this layer with the sizes of the "
                    f"file's.") from None
            shapes[id(param)] = shape
        staged.append((param, arr, target))
    touched = OrderedDict((id(p), p) for p, _, _ in staged)
    snaps = [(p, p._snapshot(copy_values=True)) for p in touched.values()]
    try:
        for param, arr, target in staged:
            if target != param.dtype:
                param.cast(target)
            param.set_data(arr)
    except BaseException:
        for param, snap in snaps:
            param._restore(snap)
        raise


def load_into(block, filename, allow_missing=False, ignore_extra=False,
              cast_dtype=False, dtype_source="current"):
    """Load a parameter file into ``block`` (``Block.load_parameters``).

    Parameters
    ----------
    block : Block
        The network.  Deferred shapes are completed from the file, so no
        forward pass is needed before or after.
    filename : str or os.PathLike
        A fastlazy ``.npz`` or an MXNet ``.params`` file (any layout MXNet
        1.x writes: NumPy-mode or classic records; structural keys, Gluon
        parameter names or ``arg:``/``aux:`` keys, matched as the module
        docstring describes).
    allow_missing, ignore_extra : bool
        Keep parameters that the file lacks as they are; skip keys that
        name no parameter.  (Ignored when keys are matched by layer order,
        which needs a one-to-one match.)
    cast_dtype, dtype_source
        See :func:`assign_arrays`.

    Raises
    ------
    ParameterFileError
        If the file is unreadable or damaged, a key matches no parameter, a
        parameter is missing, or a dtype differs; the message names the key.
    ParameterShapeError
        If an array's shape contradicts a known shape (also a ShapeError).

    On any error no parameter changes.
    """
    if dtype_source not in ("current", "saved"):
        raise ValueError(f"dtype_source must be 'current' or 'saved', got "
                         f"{dtype_source!r}")
    arrays = load_arrays(filename)
    source = os.fsdecode(filename)
    pairs = _match_keys(block, list(arrays), source, allow_missing,
                        ignore_extra)
    entries = [(skey, arrays[fkey],
                repr(skey) if fkey == skey
                else f"{fkey!r} (matched to {skey!r})")
               for skey, fkey in pairs]
    assign_arrays(block, entries, source, cast_dtype, dtype_source)
