"""Bulk scoring on one machine: :func:`predict` runs a network over data
larger than memory, chunk by chunk.

>>> import numpy as np
>>> from fastlazy import nn
>>> net = nn.Sequential()
>>> _ = net.add(nn.Dense(8, activation='relu'), nn.Dense(2))
>>> net.initialize()
>>> x = np.ones((10, 3))
>>> y = net.predict(x, batch_size=4)      # three chunks: 4 + 4 + 2 rows
>>> y.shape, bool(np.allclose(y, net(x)))
((10, 2), True)

Only NumPy is needed; ``progress=True`` uses tqdm (``pip install
fastlazy[progress]``), imported only then.
"""

import os

import numpy as np

from ._util import FLOAT_DTYPES, compute_dtype, is_int
from .errors import PredictInterrupted, ShapeError

__all__ = ["predict", "default_batch_size", "PredictInterrupted"]

#: Input plus output bytes per chunk that the default batch size aims at.
#: 8 MiB (about 100,000 rows of 20 float32 features) makes one call long
#: enough (~10 ms for the textbook network) that the per-call costs -- a new
#: result array, its copy into ``out``, waking the thread pool -- stay
#: within a few percent of one call on the whole input (benches/
#: bench_predict.py measures it).
CHUNK_BYTES = 8 << 20
#: The default batch size never goes below this many rows.
MIN_BATCH = 256


def default_batch_size(sample_elems, itemsize, out_elems=0):
    """Rows per chunk when ``batch_size`` is not given: about
    :data:`CHUNK_BYTES` of input plus output, and at least
    :data:`MIN_BATCH` rows.

    Parameters
    ----------
    sample_elems : int
        Elements per input row (20 for inputs of shape (n, 20)).
    itemsize : int
        Bytes per element after conversion to the network's dtype.
    out_elems : int
        Elements per output row, when known.
    """
    row = max(1, (int(sample_elems) + int(out_elems)) * int(itemsize))
    return max(MIN_BATCH, CHUNK_BYTES // row)


def _net_dtype(block):
    """The one dtype of the block's parameters, or None (no parameters, or
    mixed dtypes: the forward pass then decides, and explains)."""
    # bfloat16 weights compute in float32
    dtypes = {compute_dtype(p.dtype)
              for p in block.collect_params().values()}
    if len(dtypes) == 1:
        dt = dtypes.pop()
        return dt if dt in FLOAT_DTYPES else None
    return None


def _check_numeric(dtype, where):
    if np.dtype(dtype).kind not in "biuf":
        raise TypeError(f"{where}: expected numbers (bool, int or float), "
                        f"got dtype {np.dtype(dtype)}; convert the data "
                        f"first, e.g. x.astype('float32')")


def _open(data):
    """(array or None, iterable or None) for ``data``."""
    if isinstance(data, np.ndarray):
        return data, None
    if isinstance(data, (str, bytes, os.PathLike)):
        path = os.fsdecode(data)
        if not path.endswith(".npy"):
            raise ValueError(f"predict: a path must name a .npy file (it is "
                             f"opened memory-mapped), got {path!r}; for "
                             f"other formats load chunks yourself and pass "
                             f"an iterable of arrays")
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False), None
        except (OSError, ValueError) as exc:
            raise ValueError(f"predict: cannot open {path!r} as a "
                             f"memory-mapped .npy file ({exc})") from exc
    if hasattr(data, "__array__"):
        # an in-memory array-like (pandas, xarray, ...): it is whole anyway
        return np.asarray(data), None
    try:
        return None, iter(data)
    except TypeError:
        raise TypeError(f"predict: data must be an array, an np.memmap, a "
                        f".npy path or an iterable of arrays, got "
                        f"{type(data).__name__}") from None


def _check_batch_size(batch_size):
    if batch_size is None:
        return None
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"predict: batch_size must be a positive int or "
                         f"None (automatic), got {batch_size!r}")
    return int(batch_size)


def _progress_bar(total):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise ImportError("predict(progress=True) needs tqdm, which is not "
                          "installed: pip install fastlazy[progress] (or "
                          "pip install tqdm), or pass progress=False"
                          ) from None
    return tqdm(total=total, unit="rows", unit_scale=True,
                desc="predict", smoothing=0.1)


def _check_out_rows(out, rows):
    if not isinstance(out, np.ndarray):
        raise TypeError(f"predict: out must be a NumPy array (or np.memmap) "
                        f"of {rows} rows, got {type(out).__name__}")
    if out.ndim == 0 or (rows is not None and out.shape[0] != rows):
        raise ShapeError(f"predict: out must have one row per input row: "
                         f"expected {rows} rows, got out of shape "
                         f"{out.shape}; pass out=None for a new array")
    if not out.flags.writeable:
        raise ValueError("predict: out is read-only (a memmap opened with "
                         "mode 'r'?); open it with mode 'r+' or 'w+'")


def _check_out_sample(out, y, rows):
    want = (rows if rows is not None else out.shape[0],) + y.shape[1:]
    if out.shape[1:] != y.shape[1:]:
        raise ShapeError(f"predict: out has shape {out.shape}, but the "
                         f"network gives rows of shape {y.shape[1:]}: "
                         f"expected out of shape {want}")
    if not np.can_cast(y.dtype, out.dtype, casting="safe"):
        raise TypeError(f"predict: out has dtype {out.dtype}, which cannot "
                        f"hold the network's {y.dtype} results exactly; "
                        f"expected out of dtype {y.dtype} (or a wider "
                        f"float), e.g. np.empty({want}, '{y.dtype}')")


class _Converter:
    """Converts a chunk to what the network computes in, reusing one
    buffer: a float64 memmap into a float32 network costs one chunk of
    memory, not a copy of the input."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.buf = None

    def __call__(self, chunk):
        if self.dtype is None:
            return chunk
        if chunk.dtype == self.dtype and chunk.flags.c_contiguous \
                and chunk.flags.aligned and chunk.dtype.isnative:
            return chunk          # read in place (e.g. straight from a memmap)
        if self.buf is None or self.buf.shape[0] < chunk.shape[0] or \
                self.buf.shape[1:] != chunk.shape[1:]:
            self.buf = np.empty(chunk.shape, self.dtype)
        view = self.buf[:chunk.shape[0]]
        np.copyto(view, chunk, casting="unsafe")
        return view


def predict(block, data, batch_size=None, out=None, progress=False):
    """Score ``data`` with ``block`` chunk by chunk, in bounded memory.

    Each chunk of rows is read, converted to the network's dtype in a
    reused buffer, run through one compiled forward call, and its result
    written to ``out``.  The input is never copied whole: a 50 GB float64
    memmap is scored with a few chunks of extra memory.  A deferred network
    completes its initialization on the first chunk, as ``net(x)`` would.

    Parameters
    ----------
    block : Block
        The network; ``block(x)`` must accept arrays of shape
        ``(rows, *sample_shape)``.
    data : ndarray, np.memmap, str or os.PathLike, or iterable of arrays
        The input, rows on axis 0: an array of shape
        ``(n, *sample_shape)`` (any numeric dtype, any memory layout), a
        path to a ``.npy`` file (opened with ``mmap_mode='r'``), an object
        with ``__array__`` (converted whole), or an iterable of arrays of
        shape ``(rows_i, *sample_shape)`` (chunks, e.g. read from a file
        piece by piece).
    batch_size : int, optional
        Rows per forward call.  Default: about 8 MiB of input plus output
        per chunk (:func:`default_batch_size`), at least 256 rows.  Chunks
        from an iterable are cut to at most this many rows.
    out : ndarray or np.memmap, optional
        Where to write the results, shape ``(n, *out_sample_shape)`` and a
        dtype that holds the network's results exactly (float32 results
        fit float32 or float64).  Without it a new array is returned.
    progress : bool
        Show a progress bar with rows/s and the time left (needs tqdm:
        ``pip install fastlazy[progress]``).

    Returns
    -------
    ndarray
        ``out`` (or a new array) of shape ``(n, *out_sample_shape)``, row
        ``i`` the network's output for input row ``i``.

    Raises
    ------
    PredictInterrupted
        On Ctrl-C (a :class:`KeyboardInterrupt`): ``out[:exc.rows_done]``
        holds the finished rows; ``exc.out`` is the output array.
    ShapeError, TypeError, ValueError
        Wrong feature count (from the network), non-numeric input, or an
        ``out`` of the wrong shape or dtype -- all raised before any row of
        ``out`` is written.
    """
    batch_size = _check_batch_size(batch_size)
    array, chunks = _open(data)
    if out is not None:
        _check_out_rows(out, None if array is None else array.shape[0])
    bar = None
    if progress:
        bar = _progress_bar(None if array is None else array.shape[0])
    try:
        if array is not None:
            return _predict_array(block, array, batch_size, out, bar)
        return _predict_chunks(block, chunks, batch_size, out, bar)
    finally:
        if bar is not None:
            bar.close()


def _predict_array(block, x, batch_size, out, bar):
    _check_numeric(x.dtype, "predict")
    if x.ndim == 0:
        raise ShapeError("predict: expected an array with rows on axis 0, "
                         "got a 0-d value")
    dtype = _net_dtype(block)
    convert = _Converter(dtype)
    n = x.shape[0]
    if batch_size is None:
        itemsize = (dtype or x.dtype).itemsize
        batch_size = default_batch_size(np.prod(x.shape[1:], dtype=np.int64),
                                        itemsize)
    done = 0
    try:
        # the first chunk (possibly empty) fixes and checks the output
        first = min(batch_size, n)
        y = block(convert(x[:first]))
        if out is None and first == n:
            return y        # one call did it all: its result is ours
        if out is None:
            out = np.empty((n,) + y.shape[1:], y.dtype)
        else:
            _check_out_sample(out, y, n)
        out[:first] = y
        done = first
        if bar is not None:
            bar.update(first)
        while done < n:
            stop = min(done + batch_size, n)
            y = None        # the last result goes before the next exists
            y = block(convert(x[done:stop]))
            out[done:stop] = y
            done = stop
            if bar is not None:
                bar.update(y.shape[0])
    except KeyboardInterrupt as exc:
        raise PredictInterrupted(done, n, out) from exc
    return out


def _predict_chunks(block, chunks, batch_size, out, bar):
    convert = _Converter(_net_dtype(block))
    cap = None if out is None else out.shape[0]
    parts = []              # results when there is no ``out``
    done = 0
    index = -1
    sample = None
    try:
        for index, chunk in enumerate(chunks):
            chunk = np.asarray(chunk)
            _check_numeric(chunk.dtype, f"predict: chunk {index}")
            if chunk.ndim == 0 or (sample is not None
                                   and chunk.shape[1:] != sample):
                raise ShapeError(
                    f"predict: chunk {index} has shape {chunk.shape}; "
                    f"expected (rows, *{sample or 'sample_shape'}) like the "
                    f"chunks before it (rows 0..{done - 1} are done)")
            sample = chunk.shape[1:]
            if cap is not None and done + chunk.shape[0] > cap:
                raise ShapeError(
                    f"predict: the chunks hold more rows than out: chunk "
                    f"{index} would end at row {done + chunk.shape[0]}, out "
                    f"has {cap} rows (rows 0..{done - 1} are done)")
            step = batch_size or default_batch_size(
                np.prod(sample, dtype=np.int64),
                (convert.dtype or chunk.dtype).itemsize)
            for lo in range(0, max(chunk.shape[0], 1), step):
                y = block(convert(chunk[lo:lo + step]))
                if out is None:
                    parts.append(y.copy() if y.base is not None else y)
                else:
                    if done == 0:
                        _check_out_sample(out, y, cap)
                    out[done:done + y.shape[0]] = y
                done += y.shape[0]
                if bar is not None:
                    bar.update(y.shape[0])
    except KeyboardInterrupt as exc:
        if out is None:
            out = _join(parts, None)
        raise PredictInterrupted(done, None, out) from exc
    if index < 0:
        raise ValueError("predict: the iterable gave no chunks, so the "
                         "output shape is unknown; pass at least one array "
                         "(it may have 0 rows)")
    if out is None:
        return _join(parts, None)
    if done != cap:
        raise ShapeError(f"predict: the chunks held {done} rows but out has "
                         f"{cap}; out[:{done}] holds their results")
    return out


def _join(parts, fallback):
    if not parts:
        return fallback
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
