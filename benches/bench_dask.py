"""fastlazy on Dask against NumPy on Dask (map_blocks of the same network)
and ONNX Runtime on Dask, on one LocalCluster of 2 worker processes with 1
thread each (127.0.0.1).  Each peer ships its network to a worker once (one
graph key); the input is generated on the workers before timing, block i
on worker i mod 2, and a timed call is submit -> every output block in worker memory.
Goal: fastlazy >= 3x NumPy on Dask for the textbook network.  The scaling
sweep (1 vs 2 workers, chunk sizes) and the PNG are benches/scale_out.py."""

import time

import numpy as np
import pytest

from common import other_load, tag

dask = pytest.importorskip("dask", reason="needs fastlazy[dask]")
distributed = pytest.importorskip("distributed", reason="needs "
                                  "fastlazy[dask]")
import dask_peers as peers  # noqa: E402
import fastlazy.dask as fd  # noqa: E402

ROWS = {"textbook": 1_000_000, "C3": 20_000}
CHUNK = {"textbook": 64_000, "C3": 1_000}
ROUNDS = 5


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None)
    try:
        with distributed.Client(cluster) as c:
            yield c
    finally:
        cluster.close()


@pytest.fixture(scope="module", params=list(ROWS))
def data(request, client):
    name = request.param
    net, layers = peers.build(name)
    k = peers.in_units(name)
    X, futures = peers.placed_input(client, 0, ROWS[name], CHUNK[name], k,
                                    sorted(client.nthreads()))
    yield name, net, layers, X
    del futures


def _persist_and_release(client, Y):
    before = set(client.run_on_scheduler(
        lambda dask_scheduler: list(dask_scheduler.tasks)))
    P = client.persist(Y)
    distributed.wait(P)
    del P
    while not set(client.run_on_scheduler(
            lambda dask_scheduler: list(dask_scheduler.tasks))) <= before:
        time.sleep(0.01)


@pytest.mark.parametrize("peer", ["fastlazy", "numpy", "onnxruntime"])
def bench_dask_peers(benchmark, client, data, peer):
    name, net, layers, X = data
    tag(benchmark, "dask", f"dask-{name}-2w", peer, config=name,
        rows=ROWS[name], chunk=CHUNK[name], workers=2)
    Y = {"fastlazy": lambda: fd.predict(net, X),
         "numpy": lambda: peers.numpy_on_dask(layers, X),
         "onnxruntime": lambda: peers.ort_on_dask(layers, X)}[peer]()
    y0 = client.compute(Y.blocks[0]).result()
    x0 = client.compute(X.blocks[0]).result()
    ref = peers.reference(layers, x0)
    np.testing.assert_allclose(y0, ref, rtol=1e-4,
                               atol=1e-4 * np.abs(ref).max())
    with other_load(benchmark):
        benchmark.pedantic(_persist_and_release, args=(client, Y),
                           rounds=ROUNDS, warmup_rounds=1)
