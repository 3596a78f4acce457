"""Scoring on many machines with Dask: :func:`predict` maps a network over
a ``dask.array`` or ``dask.dataframe`` and returns a lazy result of the
same kind.

>>> import numpy as np, dask.array as da
>>> import fastlazy.dask
>>> from fastlazy import nn
>>> net = nn.Sequential()
>>> _ = net.add(nn.Dense(8, activation='relu'), nn.Dense(2))
>>> net.initialize()
>>> X = da.ones((10, 3), chunks=4)
>>> Y = fastlazy.dask.predict(net, X)   # lazy; completes net on the driver
>>> Y.shape, Y.chunks, Y.dtype
((10, 2), ((4, 4, 2), (2,)), dtype('float32'))

It works with every Dask scheduler: the default local one, and a
``distributed.Client`` connected to a ``LocalCluster`` or to ``dask
scheduler`` / ``dask worker`` processes on other machines.

What happens to the network
---------------------------
* ``predict`` runs the network on the driver on one row of zeros of X's
  sample shape.  That checks the feature count before any task exists and
  gives the output shape and dtype; a deferred network completes its
  initialization there (``net`` is initialized afterwards, as after
  ``net(x)``), so every worker scores with the same weights.
* It then takes a copy of the network: **the result uses the weights as
  they were when predict was called**; changing ``net`` before
  ``compute()`` does not change it (call predict again for new weights).
  A lazy result is a value: it must not depend on when, or on which
  scheduler, it is computed, and a task rerun after a lost worker must not
  mix old and new weights in one result.
* The copy is one key of the graph, a dependency of every task, so Dask
  ships it to each worker once (from the worker that first holds it,
  worker to worker after that), not inside every task; every task on a
  worker uses that one object, and the compiled plan it builds on the first
  task.  It pickles as its parameters plus a few hundred bytes.
* In a task on a ``distributed`` worker, fastlazy's thread count is set to
  the worker's ``nthreads`` (``fl.set_num_threads``), so a worker started
  with ``--nthreads 1`` never runs a multi-threaded forward pass.

Needs the ``dask`` extra: ``pip install fastlazy[dask]``.
"""

import copy
import pickle
import sys
import zlib

import numpy as np

try:
    import dask
    import dask.array as da
    from dask.base import tokenize
except ImportError as exc:  # pragma: no cover - tested in a subprocess
    raise ImportError(
        "fastlazy.dask needs Dask, which is not installed: pip install "
        "fastlazy[dask]  (dask[array,dataframe], distributed, pyarrow)"
    ) from exc

from . import get_num_threads, set_num_threads
from .errors import ShapeError
from .predict import _check_batch_size, _net_dtype
from .predict import predict as _predict_local

__all__ = ["predict"]

# Counters of this process, for tests and diagnosis: how many copies of a
# network it unpickled, and how many blocks it scored.
_stats = {"unpickled": 0, "tasks": 0}

_ALIGN = 64


class _ShippedNet:
    """The copy of a network that travels to the workers.

    Pickles as the network's parameters in one aligned byte block, plus the
    network's own pickle with the arrays taken out (protocol 5 out-of-band
    buffers) and compressed: a few hundred bytes of structure.  Plans and
    packed weight copies are never pickled (``Block.__getstate__`` drops
    them)."""

    __slots__ = ("net", "in_dtype")

    def __init__(self, net):
        self.net = net
        self.in_dtype = _net_dtype(net) or np.dtype(np.float32)

    def __reduce__(self):
        buffers = []
        structure = pickle.dumps(self.net, protocol=5,
                                 buffer_callback=buffers.append)
        views = [b.raw() for b in buffers]
        sizes, offsets, total = [], [], 0
        for v in views:
            offsets.append(total)
            sizes.append(v.nbytes)
            total += -(-v.nbytes // _ALIGN) * _ALIGN
        blob = np.empty(total, np.uint8)
        for v, o in zip(views, offsets):
            blob[o:o + v.nbytes] = np.frombuffer(v, np.uint8)
        return _unship, (zlib.compress(structure, 6), tuple(sizes), blob)


def _unship(structure, sizes, blob):
    """Rebuild a :class:`_ShippedNet` (the parameters become views of one
    writable, 64-byte aligned block)."""
    if not blob.flags.writeable or blob.ctypes.data % _ALIGN:
        fresh = np.empty(blob.nbytes + _ALIGN, np.uint8)
        start = -fresh.ctypes.data % _ALIGN
        fresh = fresh[start:start + blob.nbytes]
        fresh[:] = blob
        blob = fresh
    buffers, o = [], 0
    for n in sizes:
        buffers.append(blob[o:o + n])
        o += -(-n // _ALIGN) * _ALIGN
    net = pickle.loads(zlib.decompress(structure), buffers=buffers)
    _stats["unpickled"] += 1
    return _ShippedNet(net)


def _follow_worker_threads():
    """On a distributed worker, use as many fastlazy threads as the worker
    has threads.  Changing the count invalidates plans, so it is only set
    when it differs (once per worker)."""
    distributed = sys.modules.get("distributed")
    if distributed is None:          # not on a distributed worker
        return
    try:
        worker = distributed.get_worker()
    except ValueError:
        return
    state = getattr(worker, "state", worker)
    n = int(getattr(state, "nthreads", 0) or 0)
    if n >= 1 and get_num_threads() != n:
        set_num_threads(n)


def _score_block(x, shipped, batch_size):
    """One task: the network on one block of rows (shape (rows, *sample)).

    The sample axes are one chunk each, and blockwise hands their single
    block over in nested one-element lists (one level per sample axis)
    rather than concatenating it, which would copy the whole block."""
    while isinstance(x, list):
        x, = x
    _follow_worker_threads()
    _stats["tasks"] += 1
    return _predict_local(shipped.net, x, batch_size=batch_size)


def _score_frame(df, shipped, names, batch_size):
    """One task: the network on one partition's feature columns."""
    import pandas as pd
    _follow_worker_threads()
    _stats["tasks"] += 1
    x = df.to_numpy(dtype=shipped.in_dtype, na_value=np.nan)
    y = _predict_local(shipped.net, x, batch_size=batch_size)
    return pd.DataFrame(y, index=df.index, columns=names, copy=False)


def _probe(net, sample_shape, where):
    """Run ``net`` on one row of zeros: checks the feature count, completes
    a deferred network, and gives (output sample shape, output dtype)."""
    dtype = _net_dtype(net) or np.dtype(np.float32)
    try:
        y = net(np.zeros((1,) + tuple(sample_shape), dtype))
    except ShapeError as exc:
        raise ShapeError(f"{where}: the network does not take rows of shape "
                         f"{tuple(sample_shape)}: {exc}") from exc
    return tuple(y.shape[1:]), y.dtype


def _ship(net):
    """A copy of ``net`` as one graph key (a Delayed) named after its
    weights, so equal snapshots share a key and different ones never do."""
    snap = _ShippedNet(copy.deepcopy(net))
    params = list(snap.net.collect_params().values())
    token = tokenize(type(net).__name__, repr(net),
                     *[(str(p.dtype), p.data()) for p in params])
    return dask.delayed(snap, pure=True, name=f"fastlazy-net-{token}"), token


def predict(net, X, *, columns=None, names=None, batch_size=None):
    """Score a ``dask.array`` or ``dask.dataframe`` with ``net``, lazily.

    Parameters
    ----------
    net : Block
        The network (initialized, or deferred: it is completed here, on
        the driver, from X's feature count).  A copy is taken now: later
        changes to ``net`` do not affect the result.
    X : dask.array.Array or dask.dataframe.DataFrame
        An array of shape ``(n, *sample_shape)``, rows on axis 0 in any
        row chunking (also unknown chunk sizes); sample axes split into
        several chunks are joined first.  Or a DataFrame whose ``columns``
        are the features, in that order.
    columns : list of str, optional
        DataFrame only: the feature columns (default: all).
    names : list of str, optional
        DataFrame only: the output columns, one per network output
        (default ``y0 ... y{m-1}``).
    batch_size : int, optional
        Rows per forward call inside a task (default: see
        :func:`fastlazy.predict.predict`).

    Returns
    -------
    dask.array.Array or dask.dataframe.DataFrame
        An array of shape ``(n, *out_sample_shape)`` with X's row chunks
        and the network's dtype; or a DataFrame with X's index and
        divisions and ``m`` float columns (the network must give rows of
        shape ``(m,)``).

    Raises
    ------
    ShapeError
        The network does not take X's feature count; output not 1-D per
        row for a DataFrame; ``names`` of the wrong length.
    TypeError
        Non-numeric features; X neither a dask array nor a DataFrame.
    ValueError
        Sample axes of unknown size.

    All are raised here, before any task runs.
    """
    batch_size = _check_batch_size(batch_size)
    if isinstance(X, da.Array):
        if columns is not None or names is not None:
            raise TypeError("fastlazy.dask.predict: columns= and names= "
                            "apply to a dask DataFrame, not to a dask array")
        return _predict_array(net, X, batch_size)
    try:
        import dask.dataframe as dd
    except ImportError:  # pragma: no cover - the extra installs it
        dd = None
    if dd is not None and isinstance(X, dd.DataFrame):
        return _predict_frame(net, X, columns, names, batch_size)
    if dd is not None and isinstance(X, dd.Series):
        raise TypeError("fastlazy.dask.predict: got a dask Series; pass a "
                        "DataFrame (X.to_frame()) or an array")
    raise TypeError(f"fastlazy.dask.predict: expected a dask.array.Array or "
                    f"a dask.dataframe.DataFrame, got {type(X).__name__}; "
                    f"for NumPy arrays use net.predict(x)")


def _predict_array(net, X, batch_size):
    where = "fastlazy.dask.predict"
    if X.ndim < 2:
        raise ShapeError(f"{where}: expected rows on axis 0 and features on "
                         f"the others, got an array of shape {X.shape}; "
                         f"for one feature use X.reshape(-1, 1)")
    if X.dtype.kind not in "biuf":
        raise TypeError(f"{where}: expected numbers (bool, int or float), "
                        f"got dtype {X.dtype}; convert first, e.g. "
                        f"X.astype('float32')")
    sample = X.shape[1:]
    if any(np.isnan(d) for d in sample):
        raise ValueError(f"{where}: the sample axes have unknown sizes "
                         f"(shape {X.shape}); the network needs them before "
                         f"any task runs: call X.compute_chunk_sizes() or "
                         f"build X with known sizes")
    sample = tuple(int(d) for d in sample)
    if any(len(c) > 1 for c in X.chunks[1:]):
        X = X.rechunk({i: -1 for i in range(1, X.ndim)})
    out_sample, out_dtype = _probe(net, sample, where)
    shipped, token = _ship(net)
    in_ind = "i" + "jklmnopq"[:len(sample)]
    out_ind = "i" + "abcdefgh"[:len(out_sample)]
    return da.blockwise(
        _score_block, out_ind, X, in_ind, shipped, None, batch_size, None,
        new_axes=dict(zip(out_ind[1:], out_sample)), concatenate=False,
        dtype=out_dtype, meta=np.empty((0,) * len(out_ind), out_dtype),
        name="fastlazy-predict-" + tokenize(token, X.name, batch_size))


def _predict_frame(net, X, columns, names, batch_size):
    import pandas as pd
    where = "fastlazy.dask.predict"
    cols = list(X.columns) if columns is None else list(columns)
    missing = [c for c in cols if c not in X.columns]
    if missing or not cols:
        raise ValueError(f"{where}: columns {missing or cols!r} not in the "
                         f"DataFrame, whose columns are {list(X.columns)!r}")
    dtypes = X[cols].dtypes
    bad = [f"{c!r} ({dt})" for c, dt in dtypes.items()
           if not pd.api.types.is_numeric_dtype(dt)]
    if bad:
        raise TypeError(f"{where}: feature columns must be numeric; "
                        f"{', '.join(bad)} are not; select the numeric ones "
                        f"with columns=[...]")
    out_sample, out_dtype = _probe(net, (len(cols),), where)
    if len(out_sample) != 1:
        raise ShapeError(f"{where}: a DataFrame result needs one value "
                         f"vector per row, but the network gives rows of "
                         f"shape {out_sample}; score X.to_dask_array("
                         f"lengths=True) instead")
    m = out_sample[0]
    names = [f"y{i}" for i in range(m)] if names is None else list(names)
    if len(names) != m or len(set(names)) != m:
        raise ShapeError(f"{where}: names must be {m} distinct column "
                         f"names (the network gives {m} outputs per row), "
                         f"got {names!r}")
    shipped, _ = _ship(net)
    meta = pd.DataFrame({n: np.empty(0, out_dtype) for n in names},
                        index=X._meta.index[:0])
    return X[cols].map_partitions(_score_frame, shipped, names, batch_size,
                                  meta=meta, token="fastlazy-predict")
