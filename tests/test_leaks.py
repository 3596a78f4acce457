"""No leaks: resident memory (/proc/self/statm) and tracemalloc stay flat.

* 100,000 forward calls on a mix of networks, batch sizes, input layouts and
  dtypes (every conversion path and both scratch-memory paths), 1 in 10 of
  them a call that fails (wrong size, wrong type): the exception path must
  free what it took too.
* 1,000 networks built, initialized, run, pickled and unpickled, deep-copied,
  saved and loaded, and dropped.

Growth is measured after a warm-up (allocator pools, caches and hypothesis-
free code paths reach their steady state first) and must stay under 1 MB.
Both are slow tests: ``python -m pytest -m slow``; the figures are printed
in the summary.
"""

import copy
import gc
import os
import pickle
import sys
import tracemalloc

import numpy as np
import pytest

import fastlazy as fl
from fastlazy import nn

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"),
                       reason="reads /proc/self/statm"),
]

BUDGET = 1 << 20          # bytes of growth allowed after warm-up
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def settle():
    for _ in range(3):
        gc.collect()
    return rss(), tracemalloc.get_traced_memory()[0]


def forward_mix():
    """(callables) each doing one forward call, good or failing."""
    rng = np.random.default_rng(0)
    dense = nn.Sequential()
    dense.add(nn.Dense(64, activation="relu"), nn.Dense(10))
    conv = nn.Sequential()
    conv.add(nn.Conv2D(4, 3, padding=1, activation="sigmoid"), nn.BatchNorm(),
             nn.MaxPool2D(), nn.Flatten(), nn.Dense(5))
    norm = nn.Sequential()
    norm.add(nn.LayerNorm(dtype="float64"),
             nn.Dense(8, flatten=False, dtype="float64"),
             nn.Activation("gelu"))
    for net in (dense, conv, norm):
        net.initialize()
    xs = {
        "dense": [rng.standard_normal((n, 20)).astype(np.float32)
                  for n in (1, 7, 64)],
        "conv": [rng.standard_normal((n, 3, 8, 8)).astype(np.float32)
                 for n in (1, 5)],
        "norm": [rng.standard_normal((n, 3, 6)) for n in (1, 4)],
    }
    f64 = rng.standard_normal((9, 20))               # converted every call
    fortran = np.asfortranarray(xs["dense"][1])
    strided = rng.standard_normal((16, 40)).astype(np.float32)[::2, ::2]
    as_list = xs["dense"][0].tolist()
    bad_width = np.zeros((2, 21), np.float32)
    bad_type = np.array([["a"] * 20])
    calls = []
    for x in xs["dense"] + [f64, fortran, strided, as_list]:
        calls.append(lambda x=x: dense(x))
    for x in xs["conv"]:
        calls.append(lambda x=x: conv(x))
    for x in xs["norm"]:
        calls.append(lambda x=x: norm(x))

    def failing(x):
        try:
            dense(x)
        except (fl.ShapeError, TypeError):
            return
        raise AssertionError("expected an error")

    calls.append(lambda: failing(bad_width))
    calls.append(lambda: failing(bad_type))
    return calls


def test_forward_calls_do_not_leak(reliability_report):
    calls = forward_mix()
    n = len(calls)
    for i in range(5_000):                     # warm-up
        calls[i % n]()
    tracemalloc.start()
    try:
        for i in range(2_000):
            calls[i % n]()
        rss0, py0 = settle()
        total = 100_000
        for i in range(total):
            calls[i % n]()
        rss1, py1 = settle()
    finally:
        tracemalloc.stop()
    reliability_report(
        f"leaks: {total:,} forward calls ({2 * total // n:,} of them "
        f"failing): "
        f"RSS {rss1 - rss0:+,} bytes, tracemalloc {py1 - py0:+,} bytes")
    assert rss1 - rss0 < BUDGET
    assert py1 - py0 < BUDGET


def network_life(i, tmp_path, rng):
    """Build, initialize, run, pickle, copy, save, load and drop a network."""
    net = nn.Sequential()
    if i % 3 == 0:
        net.add(nn.Dense(32, activation="tanh"), nn.Dense(4))
        x = rng.standard_normal((3, 11))
    elif i % 3 == 1:
        net.add(nn.Conv2D(3, 3), nn.BatchNorm(), nn.GlobalAvgPool2D(),
                nn.Flatten(), nn.Dense(2))
        x = rng.standard_normal((2, 2, 7, 7))
    else:
        net.add(nn.LayerNorm(), nn.Dense(6, flatten=False), nn.Flatten())
        x = rng.standard_normal((2, 3, 5))
    deferred = pickle.loads(pickle.dumps(net))      # unset state
    net.initialize()
    deferred_copy = copy.deepcopy(net)              # deferred state
    y = net(x)
    back = pickle.loads(pickle.dumps(net))
    np.testing.assert_array_equal(back(x), y)
    twin = copy.deepcopy(net)
    path = tmp_path / "p.npz"
    net.save_parameters(path)
    deferred_copy.load_parameters(path)
    np.testing.assert_array_equal(deferred_copy(x), y)
    np.testing.assert_array_equal(twin(x), y)
    del deferred, deferred_copy, back, twin, net


def test_networks_built_and_dropped_do_not_leak(tmp_path, reliability_report):
    rng = np.random.default_rng(1)
    for i in range(1_000):                          # warm-up
        network_life(i, tmp_path, rng)
    tracemalloc.start()
    try:
        for i in range(30):
            network_life(i, tmp_path, rng)
        rss0, py0 = settle()
        total = 1_000
        for i in range(total):
            network_life(i, tmp_path, rng)
        rss1, py1 = settle()
    finally:
        tracemalloc.stop()
    reliability_report(
        f"leaks: {total:,} networks built, initialized, run, pickled, "
        f"copied, saved, loaded, dropped: RSS {rss1 - rss0:+,} bytes, "
        f"tracemalloc {py1 - py0:+,} bytes")
    assert rss1 - rss0 < BUDGET
    assert py1 - py0 < BUDGET
