"""net.predict: chunked bulk scoring in bounded memory.

The oracle is ``net(x)`` on the same input, in memory.  A row's value can
differ in the last bits between chunk sizes (a 1-row call takes another
kernel route than a 4,096-row call, with another summation order), so the
comparison allows float rounding; rows that are missing, duplicated or out
of place are off by far more."""

import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import fastlazy as fl
from fastlazy import nn
from fastlazy.errors import PredictInterrupted, ShapeError
from fastlazy.predict import default_batch_size, predict


def textbook(in_units=None, dtype="float32"):
    """20 -> 256 relu -> 10, initialized (deferred unless in_units)."""
    fl.random.seed(7)
    net = nn.Sequential()
    net.add(nn.Dense(256, activation="relu", in_units=in_units or 0),
            nn.Dense(10))
    net.initialize()
    if dtype != "float32":
        net.cast(dtype)
    return net


@pytest.fixture
def net():
    n = textbook()
    n(np.zeros((1, 20), np.float32))
    return n


def rows(n, features=20, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(
        (n, features)).astype(dtype)


def close(y, ref):
    """Same shape and dtype; values equal up to float rounding."""
    assert y.shape == ref.shape and y.dtype == ref.dtype
    scale = float(np.abs(ref).max()) if ref.size else 1.0
    tol = 1e-5 if ref.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, ref, rtol=tol, atol=tol * scale)


# ---------------------------------------------------------------------------
# Inputs


@pytest.mark.parametrize("batch_size", [None, 1, 7, 1000, 1001, 5000])
def test_ndarray_equals_one_call(net, batch_size):
    x = rows(1001)
    close(net.predict(x, batch_size=batch_size), net(x))


def test_one_chunk_returns_the_call_result_without_a_copy(net, monkeypatch):
    """All rows in one call: predict hands back that call's own new array
    (no second array and copy); several calls fill one new array."""
    x = rows(300)
    results = []
    call = type(net).__call__

    def spy(self, *a, **k):
        results.append(call(self, *a, **k))
        return results[-1]

    monkeypatch.setattr(type(net), "__call__", spy)
    y = net.predict(x)
    assert len(results) == 1 and y is results[0] and y.flags.owndata
    results.clear()
    y = net.predict(x, batch_size=128)
    assert len(results) == 3 and all(y is not r for r in results)
    monkeypatch.undo()
    close(y, net(x))


def test_default_batch_size_is_about_8mib():
    assert default_batch_size(20, 4) == (8 << 20) // 80
    assert default_batch_size(784, 4, 10) == (8 << 20) // (794 * 4)
    assert default_batch_size(10 ** 9, 8) == 256        # never below


def test_non_contiguous_and_int_input(net):
    x = rows(300, 40)[:, ::2]                 # strided view
    close(net.predict(x, batch_size=64), net(np.ascontiguousarray(x)))
    xi = np.arange(600 * 20).reshape(600, 20) % 7 - 3
    close(net.predict(xi, batch_size=100), net(xi.astype(np.float32)))
    xf = np.asfortranarray(rows(200))
    close(net.predict(xf, batch_size=64), net(xf))


def test_float64_memmap_into_float32_net_and_memmap_out(net, tmp_path):
    n = 10_000
    src = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+",
                                    dtype=np.float64, shape=(n, 20))
    src[:] = rows(n, dtype=np.float64)
    src.flush()
    dst = np.lib.format.open_memmap(tmp_path / "y.npy", mode="w+",
                                    dtype=np.float32, shape=(n, 10))
    got = net.predict(src, batch_size=999, out=dst)
    assert got is dst
    dst.flush()
    close(np.load(tmp_path / "y.npy"), net(np.asarray(src)))


def test_npy_path_is_memory_mapped(net, tmp_path):
    x = rows(3000)
    np.save(tmp_path / "x.npy", x)
    close(net.predict(tmp_path / "x.npy", batch_size=512), net(x))
    close(net.predict(str(tmp_path / "x.npy")), net(x))


def test_path_errors(net, tmp_path):
    with pytest.raises(ValueError, match=r"\.npy file"):
        net.predict(tmp_path / "x.csv")
    with pytest.raises(ValueError, match="cannot open"):
        net.predict(tmp_path / "missing.npy")


def test_iterable_of_chunks(net):
    x = rows(2500)
    parts = [x[:1], x[1:1], x[1:2000], x[2000:]]       # one empty chunk
    close(net.predict(iter(parts), batch_size=300), net(x))
    close(net.predict(parts), net(x))
    gen = (x[i:i + 128].astype(np.float64) for i in range(0, 2500, 128))
    out = np.zeros((2500, 10), np.float64)             # wider float is fine
    assert net.predict(gen, out=out) is out
    close(out, net(x).astype(np.float64))


def test_array_like_is_converted(net):
    class Table:
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return self.a

    x = rows(100)
    close(net.predict(Table(x)), net(x))


def test_empty_input(net):
    y = net.predict(np.zeros((0, 20)))
    assert y.shape == (0, 10) and y.dtype == np.float32
    y = net.predict([np.zeros((0, 20))])
    assert y.shape == (0, 10)


def test_deferred_network_completes_on_first_chunk():
    net = textbook()                       # no forward yet: deferred
    x = rows(700)
    y = net.predict(x, batch_size=100)
    assert net[0].weight.shape == (256, 20)
    close(y, net(x))


def test_float64_network(net):
    net64 = textbook(dtype="float64")
    x = rows(500, dtype=np.float64)
    x32 = x.astype(np.float32)              # converted up, chunk by chunk
    y = net64.predict(x32, batch_size=64)
    assert y.dtype == np.float64
    close(y, net64(x32.astype(np.float64)))


def test_module_function_and_method_agree(net):
    x = rows(333)
    close(predict(net, x, batch_size=50), net.predict(x, batch_size=50))


# ---------------------------------------------------------------------------
# Errors: clear, and before anything is written


def test_wrong_feature_count(net):
    out = np.full((50, 10), 7.0, np.float32)
    with pytest.raises(ShapeError, match="20"):
        net.predict(rows(50, 21), out=out)
    assert (out == 7).all()
    with pytest.raises(ShapeError, match=r"chunk 1 has shape \(5, 21\)"):
        net.predict([rows(5), rows(5, 21)])


@pytest.mark.parametrize("bad", [np.array([["a"] * 20]),
                                 np.zeros((2, 20), object),
                                 np.zeros((2, 20), "datetime64[s]")])
def test_non_numeric(net, bad):
    with pytest.raises(TypeError, match="expected numbers"):
        net.predict(bad)
    with pytest.raises(TypeError, match="chunk 0: expected numbers"):
        net.predict([bad])


def test_not_data(net):
    with pytest.raises(TypeError, match="iterable of arrays, got int"):
        net.predict(3)
    with pytest.raises(ValueError, match="no chunks"):
        net.predict([])
    with pytest.raises(ShapeError, match="0-d"):
        net.predict(np.float32(1.0))
    with pytest.raises(ValueError, match="batch_size"):
        net.predict(rows(5), batch_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        net.predict(rows(5), batch_size=2.0)


@pytest.mark.parametrize("shape,dtype,match", [
    ((99, 10), np.float32, "expected 100 rows"),
    ((100, 11), np.float32, r"expected out of shape \(100, 10\)"),
    ((100,), np.float32, r"expected out of shape \(100, 10\)"),
    ((100, 10), np.int32, "dtype int32"),
    ((100, 10), np.float16, "dtype float16"),
])
def test_out_wrong_shape_or_dtype(net, shape, dtype, match):
    out = np.full(shape, 3, dtype)
    with pytest.raises((ShapeError, TypeError), match=match):
        net.predict(rows(100), out=out, batch_size=30)
    assert (out == 3).all(), "nothing may be written on a bad out"


def test_out_not_writeable_or_not_array(net, tmp_path):
    with pytest.raises(TypeError, match="NumPy array"):
        net.predict(rows(4), out=[[0] * 10] * 4)
    np.save(tmp_path / "y.npy", np.zeros((4, 10), np.float32))
    ro = np.load(tmp_path / "y.npy", mmap_mode="r")
    with pytest.raises(ValueError, match="read-only"):
        net.predict(rows(4), out=ro)


def test_chunks_overflow_or_underfill_out(net):
    x = rows(30)
    out = np.zeros((20, 10), np.float32)
    with pytest.raises(ShapeError, match="more rows than out"):
        net.predict([x[:10], x[10:]], out=out)
    close(out[:10], net(x[:10]))
    assert (out[10:] == 0).all()
    out = np.zeros((40, 10), np.float32)
    with pytest.raises(ShapeError, match=r"held 30 rows but out has 40"):
        net.predict([x], out=out)


# ---------------------------------------------------------------------------
# Ctrl-C: out holds exactly the finished rows


def _interrupting(chunks, after):
    for i, c in enumerate(chunks):
        if i == after:
            raise KeyboardInterrupt
        yield c


def test_ctrl_c_in_chunk_iterator_keeps_finished_rows(net):
    x = rows(1000)
    out = np.full((1000, 10), np.nan, np.float32)
    parts = [x[i:i + 100] for i in range(0, 1000, 100)]
    with pytest.raises(PredictInterrupted, match="after 300 rows") as info:
        net.predict(_interrupting(parts, 3), out=out)
    exc = info.value
    assert isinstance(exc, KeyboardInterrupt)
    assert not isinstance(exc, Exception)     # `except Exception` lets it by
    assert exc.rows_done == 300 and exc.out is out
    close(out[:300], net(x[:300]))
    assert np.isnan(out[300:]).all()
    # without out: the finished rows come back on the exception
    with pytest.raises(PredictInterrupted) as info:
        net.predict(_interrupting(parts, 4))
    close(info.value.out, net(x[:400]))


class _InterruptingArray(np.ndarray):
    """An array whose k-th row slice raises KeyboardInterrupt, as if Ctrl-C
    arrived while predict was between two chunks."""

    def __getitem__(self, key):
        self.reads = getattr(self, "reads", 0) + 1
        if self.reads == self.k:
            raise KeyboardInterrupt
        return np.asarray(self).__getitem__(key)


def test_ctrl_c_on_array_keeps_finished_rows(net):
    x = rows(1000)
    src = x.view(_InterruptingArray)
    src.k = 4                                 # 3 chunks of 128 rows done
    out = np.full((1000, 10), np.nan, np.float32)
    with pytest.raises(PredictInterrupted,
                       match="after 384 of 1000 rows") as info:
        net.predict(src, batch_size=128, out=out)
    assert info.value.rows_done == 384 and info.value.rows_total == 1000
    close(out[:384], net(x[:384]))
    assert np.isnan(out[384:]).all()


# ---------------------------------------------------------------------------
# Progress bar (tqdm, optional)


def test_progress_bar_shows_rows(net, capsys):
    pytest.importorskip("tqdm", reason="tqdm (fastlazy[progress]) absent")
    x = rows(5000)
    close(net.predict(x, batch_size=1000, progress=True), net(x))
    err = capsys.readouterr().err
    assert "5.00k/5.00k" in err and "rows/s" in err
    net.predict([x[:10], x[10:]], progress=True)
    assert "5.00krows" in capsys.readouterr().err


def test_progress_without_tqdm_names_the_extra(net, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(ImportError, match=r"fastlazy\[progress\]"):
        net.predict(rows(10), progress=True)


# ---------------------------------------------------------------------------
# Memory: a few chunks, not the input


def test_peak_memory_is_a_few_chunks(net, tmp_path):
    n, batch = 400_000, 4096                  # 64 MB of float64 input
    src = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+",
                                    dtype=np.float64, shape=(n, 20))
    for i in range(0, n, 50_000):
        src[i:i + 50_000] = rows(min(50_000, n - i), dtype=np.float64, seed=i)
    src.flush()
    del src
    dst = np.lib.format.open_memmap(tmp_path / "y.npy", mode="w+",
                                    dtype=np.float32, shape=(n, 10))
    chunk_bytes = batch * (20 * 4 + 10 * 4)   # converted input + result
    tracemalloc.start()
    try:
        net.predict(tmp_path / "x.npy", batch_size=batch, out=dst)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * chunk_bytes + (256 << 10), (peak, chunk_bytes)
    x = np.load(tmp_path / "x.npy", mmap_mode="r")
    for i in (0, 123_456, n - 5000):
        close(np.asarray(dst[i:i + 5000]), net(np.asarray(x[i:i + 5000])))


# ---------------------------------------------------------------------------
# Packaging: the optional extras stay optional


def test_import_fastlazy_imports_no_optional_dependency():
    code = ("import sys, fastlazy, fastlazy.predict\n"
            "import numpy as np\n"
            "from fastlazy import nn\n"
            "net = nn.Sequential(); net.add(nn.Dense(3)); net.initialize()\n"
            "net.predict(np.ones((5, 2)))\n"
            "bad = [m for m in ('dask', 'distributed', 'tqdm', 'pandas', "
            "'pyarrow') if m in sys.modules]\n"
            "print(bad)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
