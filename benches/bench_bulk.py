"""Bulk scoring: the textbook network (20 -> 256 relu -> 10) on 1,000,000
rows: fastlazy in one call, NumPy in one pass, NumPy in 4,096-row chunks
(both NumPy versions with every buffer preallocated)."""

import numpy as np
import pytest

from common import (RTOL, SEED, fastlazy_threads, get_case, numpy_threads,
                    other_load, tag)
from fastlazy._bench import numpy_forward, reference_forward

ROWS = 1_000_000
CHUNK = 4096
ROUNDS = 5


@pytest.fixture(scope="module")
def bulk():
    """The C2 network and weights, 1,000,000 input rows and the float64
    reference output (computed in slices to bound memory)."""
    case = get_case("C2")
    x = np.random.default_rng(SEED).standard_normal((ROWS, 20),
                                                    dtype=np.float32)
    ref = np.concatenate([reference_forward(case.layers, x[i:i + 65536])
                          for i in range(0, ROWS, 65536)])
    return case, x, ref


def _check(y, ref):
    np.testing.assert_allclose(y, ref, rtol=RTOL,
                               atol=RTOL * float(np.abs(ref).max()))


def chunked_numpy_forward(layers, rows, chunk):
    """NumPy in ``chunk``-row slices through preallocated chunk buffers,
    the last layer writing straight into the preallocated full output."""
    steps = [(np.ascontiguousarray(w.T), b, act == "relu",
              np.empty((chunk, w.shape[0]), np.float32))
             for w, b, act in layers]
    out = np.empty((rows, layers[-1][0].shape[0]), np.float32)
    last = len(steps) - 1

    def run(x):
        for i in range(0, rows, chunk):
            h = x[i:i + chunk]
            n = h.shape[0]
            for j, (wt, b, relu, buf) in enumerate(steps):
                dst = out[i:i + n] if j == last else buf[:n]
                np.matmul(h, wt, out=dst)
                np.add(dst, b, out=dst)
                if relu:
                    np.maximum(dst, np.float32(0), out=dst)
                h = dst
        return out

    return run


def _run(benchmark, peer, threads, fn, x, ref):
    tag(benchmark, "bulk", f"bulk-{threads}t", peer, threads=threads)
    _check(fn(x), ref)
    with other_load(benchmark):
        benchmark.pedantic(fn, args=(x,), rounds=ROUNDS, warmup_rounds=1)


def bench_bulk_fastlazy(benchmark, bulk, threads):
    case, x, ref = bulk
    with fastlazy_threads(threads):
        _run(benchmark, "fastlazy", threads, case.net, x, ref)


def bench_bulk_numpy_one_pass(benchmark, bulk, threads):
    case, x, ref = bulk
    with numpy_threads(threads):
        _run(benchmark, "numpy-one-pass", threads,
             numpy_forward(case.layers, ROWS), x, ref)


def bench_bulk_numpy_chunked(benchmark, bulk, threads):
    case, x, ref = bulk
    with numpy_threads(threads):
        _run(benchmark, f"numpy-chunks-{CHUNK}", threads,
             chunked_numpy_forward(case.layers, ROWS, CHUNK), x, ref)
