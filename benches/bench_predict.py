"""Bulk scoring in chunks: net.predict on the textbook network (20 -> 256
relu -> 10) over 1,000,000 rows, against one net(x) call on the whole
array (the bar: predict within 5% of it) and against NumPy in the same
chunks, every buffer preallocated.  predict also runs from a float64
memmap (converted chunk by chunk, the input never copied whole)."""

import numpy as np
import pytest

from bench_bulk import chunked_numpy_forward
from common import (RTOL, SEED, fastlazy_threads, get_case, numpy_threads,
                    other_load, tag)
from fastlazy._bench import reference_forward
from fastlazy.predict import default_batch_size

ROWS = 1_000_000
ROUNDS = 5


@pytest.fixture(scope="module")
def bulk(tmp_path_factory):
    """The C2 network, 1,000,000 float32 rows, the same rows as a float64
    .npy memmap, and the float64 reference output."""
    case = get_case("C2")
    x = np.random.default_rng(SEED).standard_normal((ROWS, 20),
                                                    dtype=np.float32)
    path = tmp_path_factory.mktemp("predict") / "x64.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64,
                                   shape=x.shape)
    mm[:] = x
    mm.flush()
    ref = np.concatenate([reference_forward(case.layers, x[i:i + 65536])
                          for i in range(0, ROWS, 65536)])
    return case, x, np.load(path, mmap_mode="r"), ref


def _check(y, ref):
    np.testing.assert_allclose(y, ref, rtol=RTOL,
                               atol=RTOL * float(np.abs(ref).max()))


def _run(benchmark, peer, threads, fn, x, ref):
    tag(benchmark, "predict", f"predict-{threads}t", peer, threads=threads)
    _check(fn(x), ref)
    with other_load(benchmark):
        benchmark.pedantic(fn, args=(x,), rounds=ROUNDS, warmup_rounds=1)


def bench_predict_net_one_call(benchmark, bulk, threads):
    case, x, _, ref = bulk
    with fastlazy_threads(threads):
        _run(benchmark, "net(x) one call", threads, case.net, x, ref)


def bench_predict_default_chunks(benchmark, bulk, threads):
    case, x, _, ref = bulk
    with fastlazy_threads(threads):
        _run(benchmark, "predict", threads, case.net.predict, x, ref)


def bench_predict_float64_memmap(benchmark, bulk, threads):
    case, _, mm, ref = bulk
    with fastlazy_threads(threads):
        _run(benchmark, "predict float64 memmap", threads, case.net.predict,
             mm, ref)


def bench_predict_numpy_same_chunks(benchmark, bulk, threads):
    case, x, _, ref = bulk
    chunk = default_batch_size(20, 4)
    with numpy_threads(threads):
        _run(benchmark, f"numpy-chunks-{chunk}", threads,
             chunked_numpy_forward(case.layers, ROWS, chunk), x, ref)
